//! Bounded fan-out: many jobs, at most N running at once, each waiting for its turn
//! with a timeout. The Go idiom `sem := make(chan struct{}, N)` done right:
//!
//! * the permit is taken *before* a thread is started, so there are never more than
//!   N job threads alive (no unbounded spawning while jobs wait);
//! * the wait is bounded: a job that cannot start within its timeout is reported as
//!   skipped, not left blocked forever;
//! * the permit is an RAII guard moved into the job, so it comes back when the job
//!   ends, also if the job panics;
//! * one `CancelToken` stops the whole fan-out early (here: a global deadline), and
//!   the scope joins every thread before `main` goes on.
//!
//! Run it with `cargo run --example bounded_fanout`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use corral::{semaphore::AcquireError, CancelToken, Semaphore};

const MAX_IN_FLIGHT: usize = 4;
const JOBS: u64 = 40;

/// Stand-in for real work (a download, an RPC): takes a few milliseconds.
fn fetch(job: u64, stop: &CancelToken) -> Result<u64, &'static str> {
    let work = Duration::from_millis(2 + job % 5);
    if stop.wait_timeout(work).is_some() {
        return Err("stopped");
    }
    Ok(job * job)
}

fn main() {
    let limit = Semaphore::new(MAX_IN_FLIGHT);
    // Everything stops after 5 s at the latest, whatever happens.
    let stop = CancelToken::with_timeout(Duration::from_secs(5));
    let running = AtomicUsize::new(0);
    let peak = AtomicUsize::new(0);
    let started = Instant::now();

    let (done, skipped) = corral::scope(|s| {
        let mut handles = Vec::new();
        let mut skipped = Vec::new();
        for job in 0..JOBS {
            // Wait at most 1 s for a free slot, and not past the global deadline. (Without
            // a global stop signal, `limit.acquire_timeout(Duration::from_secs(1))` is
            // the one-line form of the same bounded wait.)
            let token = stop.child_with_timeout(Duration::from_secs(1));
            let permit = match limit.acquire_cancellable(&token) {
                Ok(permit) => permit,
                Err(AcquireError::Cancelled(reason)) => {
                    skipped.push((job, reason.to_string()));
                    continue;
                }
                Err(other) => {
                    skipped.push((job, other.to_string()));
                    continue;
                }
            };
            let (stop, running, peak) = (&stop, &running, &peak);
            handles.push(s.spawn(move || {
                let _permit = permit; // released when this thread's work ends
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                let result = fetch(job, stop);
                running.fetch_sub(1, Ordering::SeqCst);
                result
            }));
        }
        let done: Vec<u64> = handles
            .into_iter()
            .filter_map(|h| h.join().ok().and_then(Result::ok))
            .collect();
        (done, skipped)
    });

    println!(
        "{} jobs done, {} skipped, at most {} at once (limit {MAX_IN_FLIGHT}), in {:.0?}",
        done.len(),
        skipped.len(),
        peak.load(Ordering::SeqCst),
        started.elapsed()
    );
    for (job, why) in &skipped {
        println!("  job {job} skipped: {why}");
    }
    println!("checksum {}", done.iter().sum::<u64>());
    assert!(peak.load(Ordering::SeqCst) <= MAX_IN_FLIGHT);
    assert_eq!(limit.available(), MAX_IN_FLIGHT);
}
