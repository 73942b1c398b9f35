//! An ingest service: request threads push events into a running pipeline
//! (parse -> enrich with a per-worker cached connection -> batched write), live
//! numbers every second, a burst whose backpressure reaches the request threads, and
//! a stop that drains and accounts for every event.
//!
//! Run it with `cargo run --release --example ingest_service` (about three seconds).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral::leak::LeakCheck;
use corral::pipeline::{Input, PipelineReport};
use corral::Pipeline;

/// A parsed request event.
struct Event {
    user: u32,
    action: String,
}

/// An event with what the enrich stage looked up about its user.
struct Row {
    user: u32,
    action: String,
    plan: &'static str,
}

/// Stands in for a database connection: expensive to open, so each enrich worker
/// opens one and keeps it (with a small cache of what it looked up).
struct Connection {
    cache: HashMap<u32, &'static str>,
}

impl Connection {
    fn open(opened: &AtomicU64) -> Self {
        opened.fetch_add(1, Ordering::Relaxed);
        spin_for(Duration::from_millis(5)); // the handshake
        Connection {
            cache: HashMap::new(),
        }
    }

    fn plan_of(&mut self, user: u32) -> &'static str {
        self.cache.entry(user).or_insert_with(|| {
            spin_for(Duration::from_micros(20)); // a query, once per user per worker
            ["free", "pro", "team"][user as usize % 3]
        })
    }
}

fn parse(line: String) -> Result<Event, String> {
    let mut user = None;
    let mut action = None;
    for field in line.split_whitespace() {
        match field.split_once('=') {
            Some(("user", v)) => user = v.parse().ok(),
            Some(("action", v)) => action = Some(v.to_owned()),
            _ => {}
        }
    }
    match (user, action) {
        (Some(user), Some(action)) => Ok(Event { user, action }),
        _ => Err(format!("bad event: {line}")),
    }
}

/// Writes one batch of rows in a single round trip: a fixed cost plus a little per row.
fn write_batch(rows: Vec<Row>) -> usize {
    spin_for(Duration::from_micros(800) + Duration::from_micros(4) * rows.len() as u32);
    let bytes: usize = rows
        .iter()
        .map(|r| r.user.to_string().len() + r.action.len() + r.plan.len())
        .sum();
    std::hint::black_box(bytes);
    rows.len()
}

fn spin_for(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// One request thread: sends an event every `pause` (or flat out with no pause) until
/// `running` clears; returns how many were accepted and the longest `send` wait.
fn request_thread(
    input: Input<String>,
    id: u32,
    running: &AtomicBool,
    burst: &AtomicBool,
) -> (u64, Duration) {
    let (mut sent, mut longest) = (0u64, Duration::ZERO);
    while running.load(Ordering::Relaxed) {
        let line = format!(
            "user={} action=view id={id}-{sent}",
            (sent * 7 + u64::from(id)) % 500
        );
        let asked = Instant::now();
        if input.send(line).is_err() {
            break; // the input has ended
        }
        longest = longest.max(asked.elapsed());
        sent += 1;
        if !burst.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_micros(500));
        }
    }
    (sent, longest)
}

fn live_line(at: Duration, stats: &PipelineReport) {
    let get = |name: &str| stats.stage(name).cloned();
    let (source, write) = (get("source").unwrap(), get("write").unwrap());
    println!(
        "{:>5.1} s  accepted {:>7}  written {:>7} rows in {:>5} batches  senders waited {:>7.1?} in all",
        at.as_secs_f64(),
        source.items_in,
        write.items_out,
        stats.delivered(),
        source.blocked_send,
    );
}

fn main() {
    let check = LeakCheck::new(); // fails below if a pipeline thread outlives main
    let opened = Arc::new(AtomicU64::new(0));
    let written = Arc::new(AtomicU64::new(0));

    let (input, pipeline) = Pipeline::with_input();
    let open = Arc::clone(&opened);
    let rows = Arc::clone(&written);
    let service = pipeline
        .name("ingest") // in thread names, the thread dump, events and metrics
        .try_stage("parse", 2, parse)
        .stage_with_state(
            "enrich",
            2,
            move || Connection::open(&open), // once per worker, on its own thread
            |conn: &mut Connection, e: Event| Row {
                plan: conn.plan_of(e.user),
                user: e.user,
                action: e.action,
            },
        )
        .batch_stage("write", 1, 64, Duration::from_millis(50), write_batch)
        .capacity(256)
        // An item running over 2 s in any stage is reported once, with no timer thread.
        .watchdog(Duration::from_secs(2), |stuck| {
            eprintln!("watchdog: {stuck}")
        })
        .spawn(move |n| {
            rows.fetch_add(n as u64, Ordering::Relaxed);
        })
        .expect("valid pipeline");

    let running = AtomicBool::new(true);
    let burst = AtomicBool::new(false);
    let started = Instant::now();
    let results = std::thread::scope(|s| {
        let requests: Vec<_> = (0..4)
            .map(|id| {
                let (input, running, burst) = (input.clone(), &running, &burst);
                s.spawn(move || request_thread(input, id, running, burst))
            })
            .collect();
        // Live numbers every second; a burst (no pause between requests) in the middle.
        for second in 1..=3 {
            if second == 2 {
                println!("        -- burst: the request threads send flat out --");
                burst.store(true, Ordering::Relaxed);
            }
            let tick = Duration::from_secs(second);
            std::thread::sleep(tick.saturating_sub(started.elapsed()));
            live_line(started.elapsed(), &service.stats());
            if second == 2 {
                // What every thread is doing under the burst: request threads blocked
                // sending to the full first queue, stage workers busy or blocked.
                println!("{}", corral::leak::dump());
            }
        }
        running.store(false, Ordering::Relaxed);
        requests
            .into_iter()
            .map(|r| r.join().expect("request thread"))
            .collect::<Vec<_>>()
    });
    drop(input);

    // Stop: the input ends, what is inside drains through every stage.
    service.stop();
    let report = service.join().expect("no stage failed");
    let accepted: u64 = results.iter().map(|(n, _)| n).sum();
    let longest = results.iter().map(|(_, w)| *w).max().unwrap_or_default();
    println!("\n{report}");
    println!(
        "{accepted} events accepted, {} rows written, {} connections opened (one per enrich worker)",
        written.load(Ordering::Relaxed),
        opened.load(Ordering::Relaxed)
    );
    println!("longest single send under backpressure: {longest:.1?}");
    assert_eq!(
        written.load(Ordering::Relaxed),
        accepted,
        "every accepted event was written"
    );
    assert!(report.stages.iter().all(|s| s.balanced()));
    check.verify().expect("every pipeline thread was joined");
}
