//! Slow dependency: the story every resilience stack exists for. A dependency stops
//! answering; a thread-per-request server that calls it without a deadline keeps
//! one blocked thread per request until the process runs out of threads.
//!
//! The same dependency is called twice by the same server (one thread per request,
//! 200 requests, one every 2 ms). First naively: every request thread blocks, and
//! the live thread count climbs with the requests. Then through a `Resilience` stack
//! that owns a pool of 4 workers and gives up after 50 ms: each request is answered
//! on time (given up on, or refused at once while the pool is full), the request
//! threads come and go, the abandoned calls (at most 4) stay under the pool's
//! ownership and are accounted for once the dependency answers. Both halves end
//! with a leak check.
//!
//! Run it with `cargo run --release --example slow_dependency`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use corral::leak::{live_count, LeakCheck};
use corral::{resilience::ResilienceError, Resilience};

const REQUESTS: usize = 200;
const EVERY: Duration = Duration::from_millis(2);
const DEADLINE: Duration = Duration::from_millis(50);
const WORKERS: usize = 4;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    naive()?;
    resilient()?;
    Ok(())
}

/// Every request thread calls the dependency and waits as long as it takes.
fn naive() -> Result<(), Box<dyn std::error::Error>> {
    let check = LeakCheck::new();
    let dependency = SlowDependency::down(); // helper below
    let peak = AtomicUsize::new(0);
    corral::scope(|s| {
        for request in 0..REQUESTS {
            let dependency = &dependency;
            s.spawn_named(&format!("request-{request}"), move || dependency.fetch());
            peak.fetch_max(live_count(), Ordering::Relaxed);
            std::thread::sleep(EVERY); // the next request arrives
        }
        println!(
            "naive: {REQUESTS} requests, {} threads alive and blocked on the dependency",
            peak.load(Ordering::Relaxed)
        );
        dependency.recover(); // the scope can end only once every request returned
    });
    check.verify()?;
    println!("naive: every request thread returned once the dependency came back");
    Ok(())
}

/// Every request thread calls through a stack that owns 4 workers and gives up at 50 ms.
fn resilient() -> Result<(), Box<dyn std::error::Error>> {
    let check = LeakCheck::new();
    let stack = Resilience::builder()
        .name("inventory")
        .isolate(WORKERS) // the calls run here; at most 4 at a time, even given up on
        .timeout(DEADLINE)
        .build()?;
    println!("\n{stack}");
    let dependency = SlowDependency::down();
    let (peak, slowest_answer) = (AtomicUsize::new(0), AtomicU64::new(0));
    corral::scope(|s| {
        for request in 0..REQUESTS {
            let (stack, dependency, slowest) = (&stack, &dependency, &slowest_answer);
            s.spawn_named(&format!("request-{request}"), move || {
                let asked = Instant::now();
                let call = dependency.call(); // an owned closure: it may outlive the request
                match stack.call_isolated(call) {
                    Ok(_) => unreachable!("the dependency is down"),
                    // Given up on at the deadline, or refused at once: the pool is
                    // busy with calls given up on. Answer from a cache, say "later"...
                    Err(ResilienceError::DeadlineExceeded | ResilienceError::BulkheadFull) => {}
                    Err(other) => panic!("unexpected {other}"),
                }
                let waited = u64::try_from(asked.elapsed().as_micros()).unwrap_or(u64::MAX);
                slowest.fetch_max(waited, Ordering::Relaxed);
            });
            peak.fetch_max(live_count(), Ordering::Relaxed);
            std::thread::sleep(EVERY);
        }
    });
    let stats = stack.stats();
    println!(
        "resilient: {REQUESTS} requests, at most {} threads alive (the pool's {WORKERS} included); \
         slowest answer {:?} (deadline {DEADLINE:?})",
        peak.load(Ordering::Relaxed),
        Duration::from_micros(slowest_answer.load(Ordering::Relaxed)),
    );
    println!(
        "resilient: given up on {} (abandoned {}, never started {}), refused at once {}",
        stats.deadline_exceeded, stats.abandoned, stats.never_started, stats.bulkhead_refused
    );
    assert_eq!(stats.calls, REQUESTS as u64);
    assert!(stats.abandoned <= WORKERS as u64, "at most the pool's size");
    dependency.recover();
    let limit = Instant::now() + Duration::from_secs(30);
    while stack.stats().abandoned_finished < stats.abandoned && Instant::now() < limit {
        std::thread::sleep(Duration::from_millis(1));
    }
    let stats = stack.stats();
    println!(
        "resilient: the dependency came back; abandoned calls finished {} of {}",
        stats.abandoned_finished, stats.abandoned
    );
    assert_eq!(stats.abandoned_finished, stats.abandoned);
    drop(stack); // joins the pool
    check.verify()?;
    println!("resilient: no thread left behind");
    Ok(())
}

// --- helper below: the dependency ---

/// A dependency that hangs (ignoring any token) until it recovers.
struct SlowDependency {
    recovered: crossbeam_channel::Receiver<()>,
    recover: std::sync::Mutex<Option<crossbeam_channel::Sender<()>>>,
}

impl SlowDependency {
    fn down() -> Self {
        let (recover, recovered) = crossbeam_channel::bounded(0);
        SlowDependency {
            recovered,
            recover: std::sync::Mutex::new(Some(recover)),
        }
    }

    /// A blocking call that answers once the dependency recovers.
    fn fetch(&self) -> Result<u32, ()> {
        let _ = self.recovered.recv(); // ends when the sender is dropped
        Ok(42)
    }

    /// The same call as an owned closure, for a stack's pool.
    fn call(&self) -> impl FnMut(&corral::CancelToken) -> Result<u32, ()> + Send + 'static {
        let recovered = self.recovered.clone();
        move |_token| {
            let _ = recovered.recv();
            Ok(42)
        }
    }

    fn recover(&self) {
        drop(self.recover.lock().unwrap().take());
    }
}
