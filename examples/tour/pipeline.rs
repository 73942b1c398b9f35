//! Pipeline: backpressure through typed stages, a lossy queue that accounts for every
//! item, a first error that stops the run, and a running service fed by pushing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use corral::{Overflow, Pipeline};

fn spin_for(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

pub fn run() {
    println!(
        "\n[pipeline] 20,000 records: decode (2 workers) -> score (1, slow) -> sink, queues of 32"
    );
    let weights = [3u64, 1, 4, 1, 5, 9, 2, 6]; // borrowed by the stage below
    let mut total = 0u64;
    let report = Pipeline::from_iter(0..20_000u64)
        .stage("decode", 2, |x| x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40)
        .stage("score", 1, |x: u64| {
            spin_for(Duration::from_micros(20));
            x * weights[(x % 8) as usize]
        })
        .capacity(32)
        .run(|x| total = total.wrapping_add(x))
        .expect("no stage fails");
    for line in report.to_string().lines() {
        println!("  {line}");
    }

    println!("\n[pipeline] a 5 us source, a 50 us sink, drop-oldest queues of 8: every item is delivered or handed to on_drop");
    let evicted = AtomicU64::new(0);
    let count = |_: u64| {
        evicted.fetch_add(1, Ordering::Relaxed);
    };
    let source = (0..5_000u64).inspect(|_| spin_for(Duration::from_micros(5)));
    let report = Pipeline::from_iter(source)
        .on_drop(count)
        .stage("sample", 2, |x| x)
        .on_drop(count)
        .capacity(8)
        .overflow(Overflow::DropOldest)
        .run(|_| spin_for(Duration::from_micros(50)))
        .expect("no stage fails");
    println!(
        "  delivered {} + dropped {} (on_drop saw {}) = {} pulled; the sink queue dropped {}",
        report.delivered(),
        report.dropped(),
        evicted.load(Ordering::Relaxed),
        report.stage("source").map_or(0, |s| s.items_out),
        report.stage("sink").map_or(0, |s| s.dropped)
    );

    println!("\n[pipeline] an endless source and a stage that fails on item 1,000");
    let started = Instant::now();
    let err = Pipeline::from_iter(0u64..)
        .try_stage("validate", 2, |x| {
            if x == 1_000 {
                Err(format!("record {x} is corrupt"))
            } else {
                Ok(x)
            }
        })
        .capacity(64)
        .run(drop)
        .unwrap_err();
    let report = err.report().expect("the run happened");
    let cause = std::error::Error::source(&err).map(|e| e.to_string());
    println!(
        "  {err} ({}) after {:.1?}: source pulled {}, {} queued items not processed, all threads joined",
        cause.unwrap_or_default(),
        started.elapsed(),
        report.stage("source").map_or(0, |s| s.items_out),
        report.not_processed()
    );

    println!("\n[pipeline] a service: 3 request threads push into a running pipeline (per-worker connection, batched writes), then stop");
    let (input, service) = Pipeline::with_input();
    let connections = std::sync::Arc::new(AtomicU64::new(0)); // shared with the running pipeline
    let opened = std::sync::Arc::clone(&connections);
    let service = service
        .name("tour-ingest") // in its thread names, the thread dump, events and metrics
        .stage_with_state(
            "enrich",
            2,
            move || opened.fetch_add(1, Ordering::Relaxed), // "open a connection"
            |conn: &mut u64, x: u64| (*conn, x),
        )
        .batch_stage(
            "write",
            1,
            100,
            Duration::from_millis(20),
            |rows: Vec<(u64, u64)>| rows.len(),
        )
        .capacity(64)
        .spawn(|_| {})
        .expect("valid pipeline");
    std::thread::scope(|s| {
        for t in 0..3u64 {
            let input = input.clone();
            s.spawn(move || (0..10_000).for_each(|i| input.send(t * 10_000 + i).expect("open")));
        }
    });
    let live = service.stats();
    service.stop(); // drain: the input ends, what is inside goes through
    let report = service.join().expect("no stage fails");
    println!(
        "  live: {} accepted while running; final: {} written in {} batches by {} connections, senders waited {:.1?}",
        live.stage("source").map_or(0, |s| s.items_in),
        report.stage("write").map_or(0, |s| s.items_out),
        report.delivered(),
        connections.load(Ordering::Relaxed),
        report.stage("source").map_or(Duration::ZERO, |s| s.blocked_send),
    );
}
