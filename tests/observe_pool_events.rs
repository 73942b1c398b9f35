//! The worker pool's events (feature `tracing`) and metrics (feature `metrics`),
//! recorded with a collecting subscriber and a collecting recorder. A task panics on
//! a worker thread, so the subscriber is the process's global one (this file's only
//! test installs it).
#![cfg(all(feature = "tracing", feature = "metrics"))]

use std::sync::mpsc;

use corral::leak::LeakCheck;
use corral::{Overflow, WorkerPool};

mod common;

use common::telemetry::{Events, Recorder};

#[test]
fn pool_panics_drops_and_shutdown_are_events_and_its_tasks_are_measured() {
    let _check = LeakCheck::new();
    let events = Events::global();
    let recorder = Recorder::default();
    // Handles are registered at build: the workers record through them.
    let pool = metrics::with_local_recorder(&recorder, || {
        WorkerPool::builder()
            .workers(1)
            .queue_capacity(1)
            .overflow(Overflow::DropNewest)
            .name("evt-pool")
            .build()
            .unwrap()
    });
    let labels = "{kind=WorkerPool,name=evt-pool}";
    let metric = |name: &str| format!("{name}{labels}");

    let panicked_at = line!() + 1;
    let panicker = pool.submit(|| panic!("task failure")).unwrap();
    assert!(panicker.join().unwrap_err().is_panicked());

    let (release, hang) = mpsc::channel::<()>();
    let (started, running) = mpsc::channel::<()>();
    let blocker = pool
        .submit(move || {
            started.send(()).unwrap();
            hang.recv()
        })
        .unwrap();
    running.recv().unwrap();
    assert_eq!(recorder.gauge(&metric("corral_pool_busy")), 1.0);
    let queued = pool.submit(|| 1).unwrap();
    assert_eq!(recorder.gauge(&metric("corral_pool_queued")), 1.0);
    let dropped_at = line!() + 1;
    let shed = pool.submit(|| 2).unwrap(); // queue full: shed by DropNewest
    assert!(shed.join().unwrap_err().is_cancelled());
    release.send(()).unwrap();
    blocker.join().unwrap().unwrap();
    assert_eq!(queued.join().unwrap(), 1);
    let report = pool.shutdown();
    assert_eq!(
        (report.completed, report.panicked, report.dropped),
        (2, 1, 1)
    );

    assert_eq!(recorder.counter(&metric("corral_pool_completed_total")), 2);
    assert_eq!(recorder.counter(&metric("corral_pool_panicked_total")), 1);
    assert_eq!(recorder.counter(&metric("corral_pool_dropped_total")), 1);
    assert_eq!(recorder.gauge(&metric("corral_pool_busy")), 0.0);
    assert_eq!(recorder.gauge(&metric("corral_pool_queued")), 0.0);
    for histogram in ["corral_pool_queue_seconds", "corral_pool_run_seconds"] {
        let samples = recorder.samples(&metric(histogram));
        assert_eq!(samples.len(), 3, "{histogram}: {samples:?}");
        assert!(samples.iter().all(|s| *s >= 0.0), "{samples:?}");
    }

    let panics = events.matching(&["pool task panicked"]);
    assert_eq!(panics.len(), 1, "{panics:?}");
    assert!(panics[0].starts_with("WARN corral"), "{}", panics[0]);
    for field in [
        "kind=WorkerPool".to_owned(),
        "name=evt-pool".to_owned(),
        format!("site={}:{panicked_at}:", file!()),
    ] {
        assert!(panics[0].contains(&field), "{} lacks {field}", panics[0]);
    }
    let drops = events.matching(&["pool dropped a task"]);
    assert_eq!(drops.len(), 1, "{drops:?}");
    assert!(drops[0].starts_with("DEBUG corral"), "{}", drops[0]);
    assert!(
        drops[0].contains(&format!("site={}:{dropped_at}:", file!())),
        "{}",
        drops[0]
    );
    let shutdowns = events.matching(&["pool shut down"]);
    assert_eq!(shutdowns.len(), 1, "{shutdowns:?}");
    let shutdown = &shutdowns[0];
    assert!(shutdown.starts_with("INFO corral"), "{shutdown}");
    for field in [
        "name=evt-pool",
        "completed=2",
        "panicked=1",
        "never_ran=0",
        "dropped=1",
    ] {
        assert!(shutdown.contains(field), "{shutdown} lacks {field}");
    }
}
