//! Supervisor: two long-lived services, one crashing now and then, restarted within an
//! intensity limit and stopped cleanly.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use corral::{
    supervisor::{Exit, Restart},
    Supervisor,
};

pub fn run() {
    println!("\n[supervisor] an ingest service that crashes on every 3rd batch, and a cache warmer that fails twice");
    let batches = Arc::new(AtomicUsize::new(0));
    let warm_attempts = Arc::new(AtomicUsize::new(0));
    let (b, w) = (batches.clone(), warm_attempts.clone());
    let supervisor = Supervisor::builder()
        .intensity(10, Duration::from_secs(1))
        .backoff(Duration::from_millis(1), Duration::from_millis(20))
        .child("ingest", Restart::Permanent, move |token| {
            while !token.is_cancelled() {
                if b.fetch_add(1, Ordering::Relaxed) % 3 == 2 {
                    panic!("corrupt batch");
                }
                token.wait_timeout(Duration::from_millis(2));
            }
            Ok::<(), String>(())
        })
        .child("warmer", Restart::Transient, move |_| {
            match w.fetch_add(1, Ordering::Relaxed) {
                0 | 1 => Err("backend not ready"),
                _ => Ok(()),
            }
        })
        .start()
        .expect("valid configuration");
    // Let it run briefly, then stop it: every child is cancelled and joined.
    supervisor.token().wait_timeout(Duration::from_millis(60));
    let report = supervisor.stop();
    let panics = report
        .exits
        .iter()
        .filter(|(_, e)| matches!(e, Exit::Panicked(_)))
        .count();
    println!(
        "  stopped ({:?}): restarts {:?}, {} panics caught, {} batches, warmer tried {} times",
        report.reason,
        report.restarts,
        panics,
        batches.load(Ordering::Relaxed),
        warm_attempts.load(Ordering::Relaxed)
    );
}
