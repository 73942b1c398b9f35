//! Supervisor behaviour through the public API.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral::leak::LeakCheck;
use corral::{Exit, Restart, StopReason, Strategy, Supervisor};
use crossbeam_channel::unbounded;

const PROMPT: Duration = Duration::from_secs(10);

fn no_backoff() -> corral::SupervisorBuilder {
    Supervisor::builder()
        .backoff(Duration::ZERO, Duration::ZERO)
        .intensity(100, Duration::from_secs(60))
}

#[test]
fn a_transient_child_is_restarted_after_errors_until_it_succeeds() {
    let _check = LeakCheck::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let report = no_backoff()
        .child("flaky", Restart::Transient, move |_| {
            if r.fetch_add(1, Ordering::SeqCst) < 2 {
                Err("not yet")
            } else {
                Ok(())
            }
        })
        .start()
        .unwrap()
        .join();
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    assert_eq!(report.reason, StopReason::AllExited);
    assert_eq!(report.restarts, vec![("flaky".to_string(), 2)]);
    let kinds: Vec<_> = report
        .exits
        .iter()
        .map(|(_, e)| match e {
            Exit::Failed(m) => format!("failed: {m}"),
            Exit::Finished => "finished".into(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(kinds, ["failed: not yet", "failed: not yet", "finished"]);
}

#[test]
fn restart_intensity_stops_everything_and_reports_the_panics() {
    let _check = LeakCheck::new();
    let report = Supervisor::builder()
        .backoff(Duration::ZERO, Duration::ZERO)
        .intensity(3, Duration::from_secs(3600))
        .child("crasher", Restart::Permanent, |_| -> Result<(), String> {
            panic!("bad state")
        })
        .child(
            "steady",
            Restart::Permanent,
            |token| -> Result<(), String> {
                token.wait();
                Ok(())
            },
        )
        .start()
        .unwrap()
        .join();
    assert_eq!(report.reason, StopReason::IntensityExceeded);
    assert_eq!(report.restarts[0], ("crasher".to_string(), 3));
    let panics = report
        .exits
        .iter()
        .filter(|(name, e)| {
            name == "crasher" && matches!(e, Exit::Panicked(p) if p.message() == Some("bad state"))
        })
        .count();
    assert_eq!(
        panics, 4,
        "three restarts plus the one that broke the limit"
    );
    // The steady child was cancelled and joined, and its exit recorded.
    assert!(report.exits.iter().any(|(name, _)| name == "steady"));
}

#[test]
fn a_temporary_child_is_never_restarted() {
    let _check = LeakCheck::new();
    let report = no_backoff()
        .child("once", Restart::Temporary, |_| Err("gone"))
        .start()
        .unwrap()
        .join();
    assert_eq!(report.reason, StopReason::AllExited);
    assert_eq!(report.total_restarts(), 0);
}

#[test]
fn stop_cancels_and_joins_every_child() {
    // A tiny grace: stop() must have joined everything by the time it returns.
    let check = LeakCheck::builder().grace(Duration::from_millis(1)).build();
    let (started_tx, started_rx) = unbounded();
    let mut builder = no_backoff();
    for i in 0..3 {
        let started = started_tx.clone();
        builder = builder.child(&format!("svc{i}"), Restart::Permanent, move |token| {
            started.send(()).unwrap();
            token.wait();
            Ok::<(), String>(())
        });
    }
    let supervisor = builder.start().unwrap();
    for _ in 0..3 {
        started_rx.recv_timeout(PROMPT).unwrap();
    }
    assert!(!supervisor.is_finished());
    let report = supervisor.stop();
    assert_eq!(report.reason, StopReason::Stopped);
    assert_eq!(report.total_restarts(), 0);
    if let Err(leaked) = check.verify() {
        panic!("{leaked}");
    }
}

#[test]
fn one_for_all_restarts_the_siblings_too() {
    let _check = LeakCheck::new();
    let (starts_tx, starts_rx) = unbounded::<&'static str>();
    let fails = Arc::new(AtomicUsize::new(0));
    let (a_tx, b_tx) = (starts_tx.clone(), starts_tx);
    let f = fails.clone();
    let supervisor = no_backoff()
        .strategy(Strategy::OneForAll)
        .child("a", Restart::Permanent, move |token| {
            a_tx.send("a").unwrap();
            if f.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err("first run fails");
            }
            token.wait();
            Ok(())
        })
        .child("b", Restart::Permanent, move |token| {
            b_tx.send("b").unwrap();
            token.wait();
            Ok::<(), &str>(())
        })
        .start()
        .unwrap();
    let mut b_starts = 0;
    let deadline = Instant::now() + PROMPT;
    while b_starts < 2 {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if starts_rx.recv_timeout(remaining).expect("b restarted") == "b" {
            b_starts += 1;
        }
    }
    let report = supervisor.stop();
    assert_eq!(report.restarts, vec![("a".into(), 1), ("b".into(), 1)]);
}

#[test]
fn rest_for_one_restarts_the_child_and_those_added_after_it() {
    let _check = LeakCheck::new();
    let (starts_tx, starts_rx) = unbounded::<&'static str>();
    let fails = Arc::new(AtomicUsize::new(0));
    let (a_tx, b_tx, c_tx) = (starts_tx.clone(), starts_tx.clone(), starts_tx);
    let f = fails.clone();
    let supervisor = no_backoff()
        .strategy(Strategy::RestForOne)
        .child("a", Restart::Permanent, move |token| {
            a_tx.send("a").unwrap();
            token.wait();
            Ok::<(), &str>(())
        })
        .child("b", Restart::Permanent, move |token| {
            b_tx.send("b").unwrap();
            if f.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err("first run fails");
            }
            token.wait();
            Ok(())
        })
        .child("c", Restart::Permanent, move |token| {
            c_tx.send("c").unwrap();
            token.wait();
            Ok::<(), &str>(())
        })
        .start()
        .unwrap();
    // Six starts would mean "a" was restarted too; five is a, b, c, then b and c.
    let mut starts = Vec::new();
    let deadline = Instant::now() + PROMPT;
    while starts.iter().filter(|&&s| s == "c").count() < 2 {
        let remaining = deadline.saturating_duration_since(Instant::now());
        starts.push(starts_rx.recv_timeout(remaining).expect("c restarted"));
    }
    let report = supervisor.stop();
    assert_eq!(
        report.restarts,
        vec![("a".into(), 0), ("b".into(), 1), ("c".into(), 1)]
    );
    assert_eq!(
        starts.iter().filter(|&&s| s == "a").count(),
        1,
        "{starts:?}"
    );
}

#[test]
fn stop_interrupts_a_long_backoff() {
    let _check = LeakCheck::new();
    let (failed_tx, failed_rx) = unbounded();
    let supervisor = Supervisor::builder()
        .backoff(Duration::from_secs(3600), Duration::from_secs(3600))
        .child("slow-retry", Restart::Permanent, move |_| {
            failed_tx.send(()).unwrap();
            Err("down")
        })
        .start()
        .unwrap();
    failed_rx.recv_timeout(PROMPT).unwrap();
    let started = Instant::now();
    let report = supervisor.stop();
    assert!(started.elapsed() < PROMPT);
    assert_eq!(report.reason, StopReason::Stopped);
}

#[test]
fn dropping_a_supervisor_joins_its_threads() {
    let check = LeakCheck::builder().grace(Duration::from_millis(1)).build();
    let supervisor = no_backoff()
        .child("svc", Restart::Permanent, |token| {
            token.wait();
            Ok::<(), String>(())
        })
        .start()
        .unwrap();
    drop(supervisor);
    assert!(check.verify().is_ok());
}

#[test]
fn bad_configuration_names_the_field() {
    let err = Supervisor::builder().start().unwrap_err();
    assert_eq!(err.field(), "children");
    let err = Supervisor::builder()
        .intensity(1, Duration::ZERO)
        .child("x", Restart::Temporary, |_| Ok::<(), String>(()))
        .start()
        .unwrap_err();
    assert_eq!(err.field(), "period");
    let err = Supervisor::builder()
        .backoff(Duration::from_secs(2), Duration::from_secs(1))
        .child("x", Restart::Temporary, |_| Ok::<(), String>(()))
        .start()
        .unwrap_err();
    assert_eq!(err.field(), "backoff max");
    assert!(err.to_string().contains("1s"), "{err}");
}

#[test]
fn restart_intensity_is_measured_on_the_injected_clock() {
    let _check = LeakCheck::new();
    let clock = corral::ManualClock::new();
    let (fail_tx, fail_rx) = crossbeam_channel::bounded::<()>(0);
    let (ran_tx, ran_rx) = unbounded::<()>();
    // At most 1 restart within 10 s (of the manual clock); each run fails on command.
    let supervisor = Supervisor::builder()
        .clock(clock.clone())
        .backoff(Duration::ZERO, Duration::ZERO)
        .intensity(1, Duration::from_secs(10))
        .child("worker", Restart::Permanent, move |_| {
            ran_tx.send(()).unwrap();
            let _ = fail_rx.recv();
            Err("boom")
        })
        .start()
        .unwrap();
    ran_rx.recv_timeout(PROMPT).unwrap();
    fail_tx.send(()).unwrap(); // restart 1 at t = 0: allowed
    ran_rx.recv_timeout(PROMPT).unwrap();
    clock.advance(Duration::from_secs(11));
    fail_tx.send(()).unwrap(); // restart 2 at t = 11 s: the first has left the period
    ran_rx.recv_timeout(PROMPT).unwrap();
    fail_tx.send(()).unwrap(); // restart 3 at t = 11 s: two within 10 s, too many
    let report = supervisor.join();
    assert_eq!(report.reason, StopReason::IntensityExceeded);
    assert_eq!(report.restarts, vec![("worker".to_string(), 2)]);
}

#[test]
fn stop_timeout_hands_the_supervisor_back_while_a_child_ignores_its_token() {
    let _check = LeakCheck::new();
    let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(0);
    let (started_tx, started_rx) = unbounded::<()>();
    let supervisor = no_backoff()
        .child("stubborn", Restart::Permanent, move |_| {
            started_tx.send(()).unwrap();
            let _ = release_rx.recv(); // ignores its token
            Ok::<(), String>(())
        })
        .start()
        .unwrap();
    started_rx.recv_timeout(PROMPT).unwrap();
    let supervisor = supervisor
        .stop_timeout(Duration::from_millis(20))
        .expect_err("the child is still running");
    assert!(supervisor.token().is_cancelled());
    release_tx.send(()).unwrap();
    let report = supervisor
        .stop_deadline(Instant::now() + PROMPT)
        .expect("the child returned");
    assert_eq!(report.reason, StopReason::Stopped);
}

#[test]
fn bounded_joins_return_the_running_supervisor() {
    let _check = LeakCheck::new();
    let supervisor = no_backoff()
        .child("svc", Restart::Permanent, |token| {
            token.wait();
            Ok::<(), String>(())
        })
        .start()
        .unwrap();
    let supervisor = supervisor
        .join_timeout(Duration::from_millis(5))
        .expect_err("still running");
    let stop_waiting = corral::CancelToken::new();
    stop_waiting.cancel();
    let supervisor = supervisor
        .join_cancellable(&stop_waiting)
        .expect_err("the caller's token was cancelled");
    assert!(!supervisor.token().is_cancelled());
    assert_eq!(supervisor.stop().reason, StopReason::Stopped);
}
