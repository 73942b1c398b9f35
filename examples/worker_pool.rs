//! Worker pool: CPU work on a fixed set of threads fed by a bounded queue. `submit`
//! waits while the queue is full (backpressure instead of unbounded memory), a task
//! that panics costs only its own result, and `shutdown` joins every worker and says
//! how every task ended.
//!
//! Run it with `cargo run --release --example worker_pool`. Block 313 panics on
//! purpose; the pool turns the panic into that block's error.

use corral::{leak::LeakCheck, pool::TaskError, WorkerPool};

const BLOCKS: u64 = 1_000;
const QUEUE: usize = 16;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let check = LeakCheck::new(); // fails below if a worker outlives the pool
    quiet_planned_panic(); // helper below: keeps block 313's planned panic off stderr

    let pool = WorkerPool::builder()
        .workers(4)
        .queue_capacity(QUEUE) // at most 16 blocks wait in memory
        .thread_name("checksum")
        .build()?;

    let mut handles = Vec::new();
    let mut most_queued = 0;
    for block in 0..BLOCKS {
        // Waits while the queue is full: the producer slows down, memory stays bounded.
        let handle = pool.submit(move || checksum(block)).expect("pool is open");
        handles.push((block, handle));
        most_queued = most_queued.max(pool.stats().queued);
    }

    let mut digest = 0;
    for (block, handle) in handles {
        match handle.join() {
            Ok(sum) => digest ^= sum,
            Err(TaskError::Panicked(panic)) => println!("block {block} failed: {panic}"),
            Err(other) => println!("block {block}: {other}"),
        }
    }

    // Stops accepting, runs what is queued, joins every worker.
    let report = pool.shutdown();
    print_summary(digest, most_queued, &report);
    assert!(most_queued <= QUEUE);
    assert_eq!(report.completed + report.panicked, BLOCKS);
    check.verify().expect("every worker was joined");
    println!("no thread left behind");
    Ok(())
}

// --- helpers below: the simulated work, the planned panic, printing ---

/// Stand-in for real CPU work (checksumming a block of a file, resizing a tile...).
/// Block 313 is corrupt: the task panics, as a bug in user code would.
fn checksum(block: u64) -> u64 {
    let mut acc = block;
    for i in 0..20_000u64 {
        acc = acc.rotate_left(5) ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    if block == 313 {
        panic!("{PLANNED}: block {block}");
    }
    acc
}

/// Starts the message of the one panic this example provokes.
const PLANNED: &str = "planned panic";

/// Std's panic hook runs before the pool catches a panic, so by default the planned
/// panic would print its message (and, with `RUST_BACKTRACE=1`, a backtrace) on stderr,
/// which looks like a crash. This hook skips that one panic; every other panic still
/// goes to the default hook. The pool reports the planned panic as the block's error.
fn quiet_planned_panic() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied());
        if !message.is_some_and(|m| m.starts_with(PLANNED)) {
            default_hook(info);
        }
    }));
}

fn print_summary(digest: u64, most_queued: usize, report: &corral::pool::ShutdownReport) {
    println!("{BLOCKS} blocks, digest {digest:016x}, queue never above {most_queued}/{QUEUE}");
    println!(
        "shutdown: {} completed, {} panicked (the worker survived), {} never ran",
        report.completed, report.panicked, report.never_ran
    );
}
