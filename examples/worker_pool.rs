//! CPU work on a bounded worker pool: backpressure instead of an unbounded queue, a
//! panicking job that costs nothing but its own result, and a graceful shutdown that
//! reports how every job ended.
//!
//! Run it with `cargo run --release --example worker_pool`.

use std::time::Instant;

use corral::{leak::LeakCheck, pool::TaskError, WorkerPool};

/// Stand-in for real CPU work (checksumming a block of a file, resizing a tile...).
fn checksum(block: u64) -> u64 {
    let mut acc = block;
    for i in 0..20_000u64 {
        acc = acc.rotate_left(5) ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    if block == 313 {
        // The default panic hook prints this on stderr; the pool catches it.
        panic!("corrupt block {block}");
    }
    acc
}

fn main() -> Result<(), corral::ConfigError> {
    let check = LeakCheck::new();
    let pool = WorkerPool::builder()
        .workers(4)
        .queue_capacity(16) // at most 16 blocks wait in memory: the producer slows down
        .thread_name("checksum")
        .build()?;

    let started = Instant::now();
    let mut max_queued = 0;
    let mut handles = Vec::new();
    for block in 0..1_000u64 {
        // `submit` waits while 16 blocks are queued: backpressure, not an OOM.
        let handle = pool
            .submit(move || checksum(block))
            .unwrap_or_else(|refused| panic!("pool closed: {refused}"));
        handles.push((block, handle));
        max_queued = max_queued.max(pool.stats().queued);
    }

    let mut digest = 0u64;
    for (block, handle) in handles {
        match handle.join() {
            Ok(sum) => digest ^= sum,
            Err(TaskError::Panicked(panic)) => println!("block {block} failed: {panic}"),
            Err(other) => println!("block {block}: {other}"),
        }
    }

    // Stops accepting, runs what is queued, joins every worker.
    let report = pool.shutdown();
    println!(
        "1000 blocks in {:.2?}, digest {digest:016x}, queue never above {max_queued}/16",
        started.elapsed()
    );
    println!(
        "shutdown: {} completed, {} panicked (the worker survived), {} never ran",
        report.completed, report.panicked, report.never_ran
    );
    assert_eq!(report.completed + report.panicked, 1000);
    check.verify().expect("every worker was joined");
    println!("no thread left behind");
    Ok(())
}
