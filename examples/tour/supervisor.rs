//! Supervisor: two long-lived services, one crashing now and then, restarted within an
//! intensity limit (with jittered backoff), watched through live stats, events and the
//! thread dump, and stopped cleanly in reverse start order.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use corral::{
    supervisor::{EventKind, Exit, Restart},
    Supervisor,
};

pub fn run() {
    println!("\n[supervisor] an ingest service that crashes on every 3rd batch, and a cache warmer that fails twice");
    let batches = Arc::new(AtomicUsize::new(0));
    let warm_attempts = Arc::new(AtomicUsize::new(0));
    let backoffs = Arc::new(AtomicUsize::new(0));
    let (b, w, n) = (batches.clone(), warm_attempts.clone(), backoffs.clone());
    let supervisor = Supervisor::builder()
        .name("tour")
        .intensity(10, Duration::from_secs(1))
        .backoff(Duration::from_millis(1), Duration::from_millis(20))
        .jitter(0.5)
        .on_event(move |event| {
            if let EventKind::BackingOff { .. } = event.kind {
                n.fetch_add(1, Ordering::Relaxed);
            }
        })
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
    // Let it run briefly, look at it, then stop it: every child is cancelled and
    // joined, one at a time, the last started first.
    supervisor.token().wait_timeout(Duration::from_millis(60));
    // What every corral thread is doing right now (here: the monitor and the live
    // children), with the line that started them.
    for line in corral::leak::dump().to_string().lines() {
        println!("  {line}");
    }
    for child in supervisor.stats().children {
        println!(
            "  live: {:<7} {:?} for {:?}, {} starts, last exit {:?}",
            child.name, child.state, child.in_state, child.starts, child.last_exit
        );
    }
    let report = supervisor.stop();
    let panics = report
        .exits
        .iter()
        .filter(|(_, e)| matches!(e, Exit::Panicked(_)))
        .count();
    println!(
        "  stopped ({}): restarts {:?}, {} panics caught, {} jittered backoffs, {} batches, warmer tried {} times",
        report.reason,
        report.restarts,
        panics,
        backoffs.load(Ordering::Relaxed),
        batches.load(Ordering::Relaxed),
        warm_attempts.load(Ordering::Relaxed)
    );
}
