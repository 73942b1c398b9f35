//! Worker pool and task group: backpressure, overflow policies that lose nothing,
//! ordered bounded `map`, and an errgroup whose first error cancels the rest.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral::{pool::TaskHandle, Overflow, TaskGroup, WorkerPool};

pub fn run() {
    println!("\n[pool] 4 workers, queue of 8: 2,000 CPU jobs submitted with backpressure");
    let pool = WorkerPool::builder()
        .workers(4)
        .queue_capacity(8)
        .build()
        .expect("valid config");
    let started = Instant::now();
    let mut max_queued = 0;
    let handles: Vec<_> = (0..2_000u64)
        .map(|n| {
            let h = pool
                .submit(move || {
                    if n == 1_234 {
                        panic!("job {n} hit a bug");
                    }
                    (0..2_000u64).fold(n, |a, x| a.rotate_left(3) ^ x)
                })
                .expect("pool open");
            max_queued = max_queued.max(pool.stats().queued);
            h
        })
        .collect();
    let failed = handles
        .into_iter()
        .map(TaskHandle::join)
        .filter(Result::is_err)
        .count();
    let jobs = pool.stats();
    let sum: u64 = pool
        .map(0..100_000u64, |n| n % 7)
        .map(|r| r.expect("no panics in map"))
        .sum();
    let report = pool.shutdown();
    assert_eq!(report.never_ran, 0);
    println!(
        "  {:.2?}: {} completed, {} panicked ({failed} handle saw it; the worker survived), queue peak {max_queued}/8",
        started.elapsed(),
        jobs.completed,
        jobs.panicked
    );
    println!("  ordered map over 100k items in bounded memory: sum of n % 7 = {sum}");

    println!("\n[pool] overflow policies on a stalled 1-worker pool with a queue of 2");
    for policy in [Overflow::Reject, Overflow::DropOldest, Overflow::CallerRuns] {
        let shed = Arc::new(AtomicUsize::new(0));
        let counter = shed.clone();
        let pool = WorkerPool::builder()
            .workers(1)
            .queue_capacity(2)
            .overflow(policy)
            .on_drop(move |task| {
                counter.fetch_add(1, Ordering::Relaxed);
                drop(task);
            })
            .build()
            .expect("valid config");
        let (open, gate) = std::sync::mpsc::channel::<()>();
        pool.execute(move || {
            let _ = gate.recv();
        })
        .expect("pool open");
        while pool.stats().busy == 0 {
            std::thread::yield_now();
        }
        let mut handed_back = 0;
        for n in 0..10u64 {
            if pool.try_submit(move || n).is_err() {
                handed_back += 1;
            }
        }
        drop(open);
        let report = pool.shutdown();
        println!(
            "  {policy:?}: handed back {handed_back}, dropped {} (to on_drop: {}), ran on caller {}, completed {}",
            report.dropped,
            shed.load(Ordering::Relaxed),
            report.caller_ran,
            report.completed
        );
    }

    println!("\n[pool] fire and forget, then wait until idle; cancel a queued task");
    let pool = WorkerPool::builder()
        .workers(1)
        .name("tour")
        .build()
        .expect("valid config");
    let done = Arc::new(AtomicUsize::new(0));
    for _ in 0..500 {
        let done = Arc::clone(&done);
        pool.execute(move || {
            done.fetch_add(1, Ordering::Relaxed);
        })
        .expect("pool open");
    }
    pool.wait_idle().expect("not called from one of its tasks");
    let ran = done.load(Ordering::Relaxed);
    assert_eq!(ran, 500);
    let (open, gate) = std::sync::mpsc::channel::<()>();
    pool.execute(move || {
        let _ = gate.recv();
    })
    .expect("pool open");
    let queued = pool.submit(|| "never runs").expect("pool open");
    while pool.stats().busy == 0 {
        std::thread::yield_now();
    }
    // What the thread dump says about this pool's worker, held by the gate task.
    let dump = corral::leak::dump().to_string();
    for line in dump.lines().filter(|l| l.contains("corral-tour-")) {
        println!("  dump: {}", line.trim());
    }
    let stopped = queued.cancel();
    let joined = queued.join(); // at once: the one worker is still held
    drop(open);
    let report = pool.shutdown();
    println!(
        "  wait_idle returned after all {ran} ran, pool still open; cancel() -> {stopped}, join -> {joined:?}, never_ran {}",
        report.never_ran
    );

    println!("\n[group] 8 shard checks, at most 3 at once; shard 5 fails and cancels the rest");
    let started = Instant::now();
    let finished = AtomicUsize::new(0);
    let outcome = corral::scope(|s| {
        let group = TaskGroup::<u32, String>::new(s)
            .limit(3)
            .expect("limit > 0");
        for shard in 0..8u32 {
            let finished = &finished;
            group.spawn(move |token| {
                if shard == 5 {
                    return Err(format!("shard {shard}: checksum mismatch"));
                }
                match token.wait_timeout(Duration::from_millis(20 * u64::from(shard))) {
                    Some(_) => Err(format!("shard {shard}: stopped early")),
                    None => {
                        finished.fetch_add(1, Ordering::Relaxed);
                        Ok(shard)
                    }
                }
            });
        }
        group.wait() // every task joined; the first error by time
    });
    println!(
        "  {:.0?}: {}/8 finished before the failure; wait() -> {:?}",
        started.elapsed(),
        finished.load(Ordering::Relaxed),
        outcome
    );
}
