//! A supervision tree: a service whose parts are supervised, three levels deep, printing
//! what the supervisors do, until Ctrl-C.
//!
//! ```text
//! app (one-for-one)
//! ├── metrics                      a ticker
//! └── ingest (rest-for-one)        a supervisor run as a child of `app`
//!     ├── reader                   crashes now and then
//!     ├── parser                   depends on the reader: restarted with it
//!     └── db (one-for-all)         a connection pool, one level further down
//!         ├── conn-1
//!         └── conn-2
//! ```
//!
//! Run it with `cargo run --example supervision_tree -- --until-ctrl-c` and press
//! Ctrl-C; without the flag it stops by itself after a short demo (as CI runs it).
//! Stopping goes from the leaves up: every supervisor stops its children one at a time
//! in reverse start order, so `db` closes its connections before `ingest` stops the
//! parser, and so on. The run ends with the root's report and a leak check.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use corral::leak::LeakCheck;
use corral::supervisor::{ChildSpec, EventKind, Restart, Strategy, SupervisorBuilder};
use corral::{CancelToken, Supervisor};

/// How long the demo runs without `--until-ctrl-c`.
const DEMO: Duration = Duration::from_millis(1500);

fn main() {
    // Child panics are caught and reported by the supervisors; keep the default panic
    // output for everything else.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_corral = std::thread::current()
            .name()
            .is_some_and(|n| n.starts_with("corral-"));
        if !in_corral {
            default_hook(info);
        }
    }));
    let check = LeakCheck::new();
    let until_ctrl_c = std::env::args().any(|a| a == "--until-ctrl-c");
    let shutdown = if until_ctrl_c {
        CancelToken::new()
    } else {
        CancelToken::with_timeout(DEMO)
    };
    let on_signal = shutdown.clone();
    if let Err(e) = ctrlc::set_handler(move || on_signal.cancel()) {
        eprintln!("no Ctrl-C handler ({e}); the demo still stops after {DEMO:?}");
    }
    println!(
        "supervision tree: running {}",
        if until_ctrl_c {
            "until Ctrl-C".to_owned()
        } else {
            format!("for {DEMO:?} (or until Ctrl-C)")
        }
    );

    let app = supervisor("app")
        .child("metrics", Restart::Permanent, |token| {
            while token.wait_timeout(Duration::from_millis(200)).is_none() {}
            Ok::<(), String>(())
        })
        .add_child(ChildSpec::supervisor("ingest", Restart::Permanent, ingest))
        .start()
        .expect("a valid tree");
    shutdown.wait();
    println!("stopping...");
    let report = app.stop();

    println!("\nfinal report of {:?}: {}", report.name, report.reason);
    for child in &report.children {
        println!(
            "  {:<8} starts {:>2}, restarts {:>2}, last exit {:?}",
            child.name, child.starts, child.restarts, child.last_exit
        );
    }
    println!(
        "  {} exits kept, {} omitted, {} stray panics, overdue: {:?}",
        report.exits.len(),
        report.exits_omitted,
        report.panics.len(),
        report.overdue
    );
    match check.verify() {
        Ok(()) => println!("leak check: every corral thread joined"),
        Err(leaked) => panic!("{leaked}"),
    }
}

/// A named supervisor that prints its events, with a short backoff and jitter.
fn supervisor(name: &str) -> SupervisorBuilder {
    Supervisor::builder()
        .name(name)
        .backoff(Duration::from_millis(20), Duration::from_millis(200))
        .jitter(0.5)
        .intensity(20, Duration::from_secs(10))
        .shutdown_timeout(Duration::from_secs(2))
        .on_event(|event| {
            let who = event.supervisor.unwrap_or("?");
            match &event.kind {
                EventKind::Started { child } => println!("  [{who}] {child} started"),
                EventKind::Exited { child, exit } => println!("  [{who}] {child} exited: {exit:?}"),
                EventKind::Panicked { child, panic } => {
                    println!(
                        "  [{who}] {child} panicked: {}",
                        panic.message().unwrap_or("?")
                    )
                }
                EventKind::BackingOff { child, delay } => {
                    println!("  [{who}] {child}: restart in {delay:?}")
                }
                EventKind::Restarted { child, restarts } => {
                    println!("  [{who}] {child} restarted ({restarts})")
                }
                EventKind::Stopped { reason } => println!("  [{who}] stopped: {reason}"),
                other => println!("  [{who}] {other:?}"),
            }
        })
}

/// The middle level: a reader that crashes every fifth record, a parser restarted
/// with it, and the `db` pool.
fn ingest() -> SupervisorBuilder {
    let records = Arc::new(AtomicU64::new(0));
    supervisor("ingest")
        .strategy(Strategy::RestForOne)
        .child("reader", Restart::Permanent, move |token| {
            while token.wait_timeout(Duration::from_millis(60)).is_none() {
                if records.fetch_add(1, Ordering::Relaxed) % 5 == 4 {
                    panic!("corrupt record");
                }
            }
            Ok::<(), String>(())
        })
        .child("parser", Restart::Permanent, |token| {
            token.wait();
            Ok::<(), String>(())
        })
        .add_child(ChildSpec::supervisor("db", Restart::Permanent, db))
}

/// The leaves: two connections that close when cancelled.
fn db() -> SupervisorBuilder {
    let mut pool = supervisor("db").strategy(Strategy::OneForAll);
    for name in ["conn-1", "conn-2"] {
        pool = pool.child(name, Restart::Permanent, |token| {
            token.wait();
            Ok::<(), String>(())
        });
    }
    pool
}
