//! Events (feature `tracing`) and metrics (feature `metrics`) of the breaker, the rate
//! limiter, the semaphore and the watchdog, recorded with a collecting subscriber and
//! a collecting recorder.
#![cfg(all(feature = "tracing", feature = "metrics"))]

use std::time::Duration;

use corral::breaker::State;
use corral::clock::ManualClock;
use corral::leak::LeakCheck;
use corral::{CircuitBreaker, RateLimiter, Semaphore};

mod common;

use common::telemetry::{Events, Recorder};

#[test]
fn breaker_transitions_are_events_and_its_calls_are_counted() {
    let events = Events::default();
    let recorder = Recorder::default();
    tracing::subscriber::with_default(events.clone(), || {
        metrics::with_local_recorder(&recorder, || {
            let breaker = CircuitBreaker::builder()
                .name("payments")
                .consecutive_failures(2)
                .open_for(Duration::from_secs(30))
                .clock(ManualClock::new())
                .build()
                .unwrap();
            assert_eq!(breaker.call(|| Ok::<_, &str>(1)), Ok(1));
            let _ = breaker.call(|| Err::<u32, _>("down"));
            let _ = breaker.call(|| Err::<u32, _>("down"));
            assert_eq!(breaker.state(), State::Open);
            assert!(breaker.call(|| Ok::<_, &str>(1)).is_err()); // rejected
        });
    });
    let labels = "{kind=CircuitBreaker,name=payments}";
    assert_eq!(
        recorder.counter(&format!("corral_breaker_calls_total{labels}")),
        3
    );
    assert_eq!(
        recorder.counter(&format!("corral_breaker_failures_total{labels}")),
        2
    );
    assert_eq!(
        recorder.counter(&format!("corral_breaker_rejected_total{labels}")),
        1
    );
    assert_eq!(
        recorder.counter(&format!("corral_breaker_slow_calls_total{labels}")),
        0
    );
    assert_eq!(
        recorder.gauge(&format!("corral_breaker_state{labels}")),
        2.0
    );
    let changes = events.matching(&["circuit breaker changed state"]);
    assert_eq!(changes.len(), 1, "{changes:?}");
    let change = &changes[0];
    assert!(change.starts_with("INFO corral"), "{change}");
    for field in [
        "kind=CircuitBreaker",
        "name=payments",
        "from=closed",
        "to=open",
    ] {
        assert!(change.contains(field), "{change} lacks {field}");
    }
}

#[test]
fn rate_refusals_are_debug_events_and_both_outcomes_are_counted() {
    let events = Events::default();
    let recorder = Recorder::default();
    tracing::subscriber::with_default(events.clone(), || {
        metrics::with_local_recorder(&recorder, || {
            let limiter = RateLimiter::per_second(1)
                .burst(2)
                .name("upstream")
                .clock(ManualClock::new())
                .build()
                .unwrap();
            let admitted = (0..5).filter(|_| limiter.check().is_ok()).count();
            assert_eq!(admitted, 2);
            let stats = limiter.stats();
            assert_eq!((stats.admitted, stats.refused), (2, 3));
        });
    });
    let labels = "{kind=RateLimiter,name=upstream}";
    assert_eq!(
        recorder.counter(&format!("corral_rate_admitted_total{labels}")),
        2
    );
    assert_eq!(
        recorder.counter(&format!("corral_rate_refused_total{labels}")),
        3
    );
    let refusals = events.matching(&["rate limit refused a call"]);
    assert_eq!(refusals.len(), 3, "{refusals:?}");
    assert!(refusals[0].starts_with("DEBUG corral"), "{}", refusals[0]);
    assert!(refusals[0].contains("name=upstream"), "{}", refusals[0]);
}

#[test]
fn semaphore_gauges_follow_acquires_and_releases() {
    let recorder = Recorder::default();
    metrics::with_local_recorder(&recorder, || {
        let sem = Semaphore::builder(3).name("db").build().unwrap();
        let labels = "{kind=Semaphore,name=db}";
        let available = format!("corral_semaphore_available{labels}");
        assert_eq!(recorder.gauge(&available), 3.0);
        let permit = sem.acquire_many(2).unwrap();
        assert_eq!(recorder.gauge(&available), 1.0);
        let one = sem.try_acquire().unwrap();
        assert_eq!(recorder.gauge(&available), 0.0);
        drop((permit, one));
        assert_eq!(recorder.gauge(&available), 3.0);
        assert_eq!(
            recorder.gauge(&format!("corral_semaphore_waiters{labels}")),
            0.0
        );
        // Registered once, under the name: no unnamed series left behind by the build.
        assert_eq!(
            recorder.registered(),
            [
                available.clone(),
                format!("corral_semaphore_waiters{labels}")
            ]
        );
    });
}

#[test]
fn a_stuck_task_is_a_warning_naming_its_thread_and_site() {
    let _check = LeakCheck::new();
    let events = Events::default();
    let clock = ManualClock::new();
    let watchdog = corral::observe::Watchdog::builder(Duration::from_secs(1))
        .clock(clock.clone())
        .build();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    corral::scope(|s| {
        let tx = tx; // dropped if an assertion fails, so the thread ends
        let line = line!() + 1;
        let hung = s.spawn_named("obs-evt-hung", move || rx.recv());
        tracing::subscriber::with_default(events.clone(), || {
            // Polls until the thread is registered and first seen, then past the threshold.
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while events.matching(&["thread=corral-obs-evt-hung"]).is_empty() {
                assert!(std::time::Instant::now() < deadline, "never reported");
                watchdog.check();
                clock.advance(Duration::from_secs(1));
            }
        });
        let warning = events.matching(&["thread=corral-obs-evt-hung"]).remove(0);
        assert!(warning.starts_with("WARN corral"), "{warning}");
        assert!(
            warning.contains(&format!("{}:{line}", file!())),
            "{warning}"
        );
        tx.send(()).unwrap();
        hung.join().unwrap().unwrap();
    });
}
