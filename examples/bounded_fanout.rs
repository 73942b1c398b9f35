//! Bounded fan-out: many jobs, at most N running at once, each waiting for its turn
//! with a timeout. The Go idiom `sem := make(chan struct{}, N)` done right: the permit
//! is taken *before* the job's thread starts (never more than N job threads alive), the
//! wait for it is bounded (a job that cannot start in time is reported as skipped), the
//! permit is an RAII guard that comes back when the job ends (also if it panics), and
//! one `CancelToken` stops the whole fan-out at a global deadline.
//!
//! Run it with `cargo run --release --example bounded_fanout`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use corral::{leak::LeakCheck, CancelToken, Semaphore};

const MAX_IN_FLIGHT: usize = 4;
const JOBS: u64 = 40;

fn main() {
    let check = LeakCheck::new(); // fails below if a job thread outlives the scope
    let limit = Semaphore::new(MAX_IN_FLIGHT);
    let stop = CancelToken::with_timeout(Duration::from_secs(5)); // the global deadline
    let meter = InFlight::default(); // helper below: how many jobs run at once

    let (done, skipped) = corral::scope(|s| {
        let mut handles = Vec::new();
        let mut skipped = Vec::new();
        for job in 0..JOBS {
            // Wait at most 1 s for a slot, and never past the global deadline. (Without a
            // global stop, `limit.acquire_timeout(Duration::from_secs(1))` does the same.)
            let wait = stop.child_with_timeout(Duration::from_secs(1));
            match limit.acquire_cancellable(&wait) {
                Ok(permit) => {
                    let (stop, meter) = (&stop, &meter);
                    handles.push(s.spawn(move || {
                        let _permit = permit; // released when this job ends, even by a panic
                        let _running = meter.enter();
                        fetch(job, stop)
                    }));
                }
                Err(why) => skipped.push((job, why)),
            }
        }
        let mut done = Vec::new();
        for handle in handles {
            // Joins the job's thread (the scope would join any left before returning).
            if let Ok(Ok(value)) = handle.join() {
                done.push(value); // the others stopped at the deadline or panicked
            }
        }
        (done, skipped)
    });

    print_summary(&done, &skipped, meter.peak());
    assert!(meter.peak() <= MAX_IN_FLIGHT);
    assert_eq!(limit.available(), MAX_IN_FLIGHT); // every permit came back
    check.verify().expect("every job thread was joined");
    println!("no thread left behind");
}

// --- helpers below: the simulated job, a meter of jobs in flight, printing ---

/// Stand-in for real work (a download, an RPC): takes a few milliseconds, and stops
/// early if the fan-out is stopped.
fn fetch(job: u64, stop: &CancelToken) -> Result<u64, &'static str> {
    let work = Duration::from_millis(2 + job % 5);
    if stop.wait_timeout(work).is_some() {
        return Err("stopped");
    }
    Ok(job * job)
}

/// Counts the jobs running now and the most that ever ran at once.
#[derive(Default)]
struct InFlight {
    now: AtomicUsize,
    peak: AtomicUsize,
}

/// One running job: dropping it takes the job off the count.
struct Running<'a>(&'a InFlight);

impl InFlight {
    fn enter(&self) -> Running<'_> {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        Running(self)
    }

    fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

fn print_summary(done: &[u64], skipped: &[(u64, corral::semaphore::AcquireError)], peak: usize) {
    println!(
        "{} jobs done, {} skipped, at most {peak} at once (limit {MAX_IN_FLIGHT})",
        done.len(),
        skipped.len(),
    );
    for (job, why) in skipped {
        println!("  job {job} skipped: {why}");
    }
    println!("checksum {}", done.iter().sum::<u64>());
}
