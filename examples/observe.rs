//! Seeing what a service's threads do: a small service (a worker pool serving
//! requests through a rate limiter and a circuit breaker, and a supervised poller)
//! where one request hangs. The pool's watchdog names the stuck task and the line
//! that submitted it, and `corral::leak::dump()` prints every corral thread: its
//! owner, its role, what it is doing and since when. Then the request is released
//! and the service stops, ending with a leak check. Runs in about a second.
//!
//! With `--features tracing,metrics` the same run also emits `tracing` events and
//! `metrics` (names in `docs/metrics.md`) to whatever subscriber and recorder the
//! program installs; this one installs none, so nothing changes on screen.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use corral::leak::LeakCheck;
use corral::observe::Stuck;
use corral::supervisor::Restart;
use corral::{CircuitBreaker, RateLimiter, Supervisor, WorkerPool};

/// How long a request may run before the watchdog reports it.
const STUCK_AFTER: Duration = Duration::from_millis(300);

fn main() {
    let check = LeakCheck::new();
    let limiter = Arc::new(
        RateLimiter::per_second(1000)
            .burst(100)
            .name("upstream")
            .build()
            .expect("a valid limiter"),
    );
    let breaker = Arc::new(
        CircuitBreaker::builder()
            .name("payments")
            .build()
            .expect("a valid breaker"),
    );
    let stuck: Arc<Mutex<Vec<Stuck>>> = Arc::default();
    let found = Arc::clone(&stuck);
    let pool = WorkerPool::builder()
        .name("api")
        .workers(3)
        .queue_capacity(16)
        .watchdog(STUCK_AFTER, move |s| {
            println!("watchdog: {s}");
            found.lock().unwrap().push(s.clone());
        })
        .build()
        .expect("a valid pool");

    // A supervised background poller, calling the dependency through the breaker.
    let polls = Arc::new(AtomicU64::new(0));
    let (poll_breaker, poll_count) = (Arc::clone(&breaker), Arc::clone(&polls));
    let supervisor = Supervisor::builder()
        .name("service")
        .child("poller", Restart::Permanent, move |token| {
            while token.wait_timeout(Duration::from_millis(20)).is_none() {
                let _ = poll_breaker.call(|| Ok::<(), String>(()));
                poll_count.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), String>(())
        })
        .start()
        .expect("a valid supervisor");

    // Requests: admitted by the limiter, run through the breaker on the pool.
    let handles: Vec<_> = (0..20u64)
        .map(|n| {
            let (limiter, breaker) = (Arc::clone(&limiter), Arc::clone(&breaker));
            pool.submit(move || {
                limiter.check().map_err(|_| "rate limited")?;
                breaker
                    .call(|| Ok::<u64, &str>(n * 2))
                    .map_err(|_| "breaker refused")
            })
            .expect("the pool is open")
        })
        .collect();
    let served = handles
        .into_iter()
        .map(|h| h.join_timeout(Duration::from_secs(5)))
        .filter(|r| matches!(r, Ok(Ok(Ok(_)))))
        .count();
    println!("served {served} of 20 requests");

    // One request hangs on a dependency that never answers (until released below).
    let (release, hang) = mpsc::channel::<()>();
    let hung = pool
        .submit(move || hang.recv().map_err(|_| "dependency gone"))
        .expect("the pool is open");

    // No timer thread: the watchdog checks when a worker goes idle, when a submit
    // waits for room, when asked (`pool.check_stuck()`), and whenever `leak::dump`
    // runs, as here (a task's start is not time-stamped: each looks from its first
    // sighting, so a monitor that dumps regularly sees the true age).
    let deadline = Instant::now() + Duration::from_secs(10);
    while stuck.lock().unwrap().is_empty() && Instant::now() < deadline {
        drop(corral::leak::dump());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(pool.check_stuck().is_empty(), "reported once only");
    let report = stuck.lock().unwrap().first().cloned();
    match report.and_then(|s| s.site) {
        Some(site) => println!("the stuck request was submitted at {site}"),
        None => println!("the watchdog found nothing (a very slow machine?)"),
    }

    println!("\n{}\n", corral::leak::dump());

    release.send(()).expect("the request is still waiting");
    let _ = hung.join();
    let report = pool.shutdown();
    println!(
        "pool: {} completed, {} panicked, {} never ran",
        report.completed, report.panicked, report.never_ran
    );
    let report = supervisor.stop();
    println!(
        "supervisor {:?}: {}; poller ran {} polls; limiter admitted {}",
        report.name,
        report.reason,
        polls.load(Ordering::Relaxed),
        limiter.stats().admitted,
    );
    match check.verify() {
        Ok(()) => println!("no corral thread left"),
        Err(leaks) => panic!("{leaks}"),
    }
}
