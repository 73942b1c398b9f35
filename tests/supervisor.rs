//! Supervisor behaviour through the public API.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral::leak::LeakCheck;
use corral::{
    supervisor::{EventKind, Exit, Restart, StopReason, Strategy},
    Supervisor,
};
use crossbeam_channel::unbounded;

const PROMPT: Duration = Duration::from_secs(10);

fn no_backoff() -> corral::supervisor::SupervisorBuilder {
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
    assert!(report.reason.is_all_exited(), "{:?}", report.reason);
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
    assert_eq!(report.restarts[0], ("crasher".to_string(), 3));
    match &report.reason {
        StopReason::IntensityExceeded { child, last_error } => {
            assert_eq!(child, "crasher");
            assert!(matches!(last_error, Exit::Panicked(p) if p.message() == Some("bad state")));
        }
        other => panic!("{other:?}"),
    }
    let panics = report
        .exits
        .iter()
        .filter(|(name, e)| {
            name == "crasher" && matches!(e, Exit::Panicked(p) if p.message() == Some("bad state"))
        })
        .count();
    assert_eq!(
        panics, 3,
        "one per restart; the exit that broke the limit is in the reason"
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
    assert!(report.reason.is_all_exited(), "{:?}", report.reason);
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
    assert!(report.reason.is_stopped(), "{:?}", report.reason);
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
    // Every child has been joined: a start not yet received (say "a", slower to begin
    // than b's failure and both restarts) is in the channel now.
    starts.extend(starts_rx.try_iter());
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
    assert!(report.reason.is_stopped(), "{:?}", report.reason);
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
    assert_eq!(err.config().unwrap().field(), "children");
    let err = Supervisor::builder()
        .intensity(1, Duration::ZERO)
        .child("x", Restart::Temporary, |_| Ok::<(), String>(()))
        .start()
        .unwrap_err();
    assert_eq!(err.config().unwrap().field(), "period");
    let err = Supervisor::builder()
        .backoff(Duration::from_secs(2), Duration::from_secs(1))
        .child("x", Restart::Temporary, |_| Ok::<(), String>(()))
        .start()
        .unwrap_err();
    assert_eq!(err.config().unwrap().field(), "backoff max");
    assert!(err.config().unwrap().to_string().contains("1s"), "{err:?}");
}

#[test]
fn restart_intensity_is_measured_on_the_injected_clock() {
    let _check = LeakCheck::new();
    let clock = corral::clock::ManualClock::new();
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
    assert!(report.reason.is_intensity_exceeded(), "{:?}", report.reason);
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
    assert!(report.reason.is_stopped(), "{:?}", report.reason);
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
    assert!(supervisor.stop().reason.is_stopped());
}

/// An error whose `Display` and/or `Drop` panic, as a hostile child returns.
#[derive(Debug)]
struct Hostile {
    display_panics: bool,
    drop_panics: bool,
}

impl std::fmt::Display for Hostile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.display_panics {
            panic!("display of the error");
        }
        f.write_str("hostile error")
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        if self.drop_panics {
            panic!("drop of the error");
        }
    }
}

impl std::error::Error for Hostile {}

/// A transient child that fails once with a `Hostile` error, then finishes.
fn fails_once_with(
    builder: corral::supervisor::SupervisorBuilder,
    display_panics: bool,
    drop_panics: bool,
) -> corral::supervisor::SupervisorReport {
    let runs = Arc::new(AtomicUsize::new(0));
    builder
        .child("hostile", Restart::Transient, move |_| {
            if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                Err(Hostile {
                    display_panics,
                    drop_panics,
                })
            } else {
                Ok(())
            }
        })
        .start()
        .unwrap()
        .join_timeout(PROMPT)
        .expect("the supervisor finishes")
}

#[derive(Debug)]
struct Code(u32);

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "code {}", self.0)
    }
}

impl std::error::Error for Code {}

#[test]
fn a_child_error_comes_back_as_the_object_it_returned() {
    let _check = LeakCheck::new();
    let report = no_backoff()
        .child("coded", Restart::Temporary, |_| Err(Code(7)))
        .start()
        .unwrap()
        .join();
    match &report.exits[..] {
        [(name, Exit::Failed(error))] => {
            assert_eq!(name, "coded");
            assert_eq!(error.downcast_ref::<Code>().map(|c| c.0), Some(7));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_child_error_whose_display_panics_is_never_formatted_by_the_supervisor() {
    let _check = LeakCheck::new();
    let report = fails_once_with(no_backoff(), true, false);
    assert!(report.reason.is_all_exited(), "{:?}", report.reason);
    assert_eq!(report.restarts, vec![("hostile".to_string(), 1)]);
    assert!(matches!(&report.exits[0].1, Exit::Failed(_)));
    assert!(matches!(report.exits[1].1, Exit::Finished));
    assert!(report.panics.is_empty(), "{:?}", report.panics);
}

#[test]
fn an_evicted_error_whose_drop_panics_is_reported_not_fatal() {
    let _check = LeakCheck::new();
    // A history of one: the hostile error is pushed out by the next exit, and the
    // supervisor drops it inside the panic boundary.
    let report = fails_once_with(no_backoff().history(1), false, true);
    assert!(report.reason.is_all_exited(), "{:?}", report.reason);
    assert_eq!(report.exits_omitted, 1);
    assert!(matches!(report.exits[..], [(_, Exit::Finished)]));
    assert_eq!(report.panics.len(), 1);
    assert_eq!(report.panics[0].message(), Some("drop of the error"));
}

#[test]
fn an_event_hook_that_formats_a_hostile_error_has_its_panic_caught() {
    let _check = LeakCheck::new();
    let hook = no_backoff().on_event(|event| {
        if let EventKind::Exited {
            exit: Exit::Failed(error),
            ..
        } = &event.kind
        {
            let _ = error.to_string();
        }
    });
    let report = fails_once_with(hook, true, false);
    assert!(report.reason.is_all_exited(), "{:?}", report.reason);
    assert_eq!(report.total_restarts(), 1);
    assert_eq!(report.panics.len(), 1);
    assert_eq!(report.panics[0].message(), Some("display of the error"));
}

struct DropBomb;

impl Drop for DropBomb {
    fn drop(&mut self) {
        panic!("drop of the child's function");
    }
}

#[test]
fn a_child_function_whose_drop_panics_is_reported_and_the_supervisor_finishes() {
    let _check = LeakCheck::new();
    let bomb = DropBomb;
    let report = no_backoff()
        .child("bomb", Restart::Temporary, move |_| {
            let _keep = &bomb;
            Ok::<(), String>(())
        })
        .start()
        .unwrap()
        .join_timeout(PROMPT)
        .expect("the supervisor finishes");
    assert!(report.reason.is_all_exited(), "{:?}", report.reason);
    assert_eq!(report.panics.len(), 1);
    assert_eq!(
        report.panics[0].message(),
        Some("drop of the child's function")
    );
}

#[test]
fn a_child_function_whose_drop_panics_is_dropped_quietly_when_start_refuses() {
    let bomb = DropBomb;
    let err = Supervisor::builder()
        .intensity(1, Duration::ZERO)
        .child("bomb", Restart::Temporary, move |_| {
            let _keep = &bomb;
            Ok::<(), String>(())
        })
        .start()
        .unwrap_err();
    assert_eq!(err.config().unwrap().field(), "period");
}

#[test]
fn a_nul_byte_in_a_child_name_is_a_config_error_not_a_std_panic() {
    let _check = LeakCheck::new();
    let err = no_backoff()
        .child("ok", Restart::Temporary, |_| Ok::<(), String>(()))
        .child("bad\0name", Restart::Temporary, |_| Ok::<(), String>(()))
        .start()
        .unwrap_err();
    assert_eq!(err.config().unwrap().field(), "child name");
    assert_eq!(err.config().unwrap().value(), "\"bad\\0name\"");
}

type Slot = Arc<std::sync::Mutex<Option<Supervisor>>>;

/// A supervisor whose child "stopper" takes the supervisor out of a slot and hands it
/// to `finish` on its own thread; a sibling "sibling" waits on its token.
fn stopped_from_inside(finish: fn(Supervisor) -> Option<corral::supervisor::SupervisorReport>) {
    let _check = LeakCheck::builder().grace(PROMPT).build();
    let slot: Slot = Arc::new(std::sync::Mutex::new(None));
    let (go_tx, go_rx) = crossbeam_channel::bounded::<()>(1);
    let (report_tx, report_rx) = crossbeam_channel::bounded(1);
    let (sibling_done_tx, sibling_done_rx) = unbounded::<()>();
    let s = slot.clone();
    let supervisor = no_backoff()
        .child("sibling", Restart::Temporary, move |token| {
            token.wait();
            sibling_done_tx.send(()).unwrap();
            Ok::<(), String>(())
        })
        .child("stopper", Restart::Temporary, move |_| {
            go_rx.recv().unwrap();
            let supervisor = s.lock().unwrap().take().unwrap();
            report_tx.send(finish(supervisor)).unwrap();
            Ok::<(), String>(())
        })
        .start()
        .unwrap();
    *slot.lock().unwrap() = Some(supervisor);
    go_tx.send(()).unwrap();
    let report = report_rx.recv_timeout(PROMPT).expect("stop returned");
    sibling_done_rx
        .recv_timeout(PROMPT)
        .expect("the sibling ran to its end");
    if let Some(report) = report {
        assert!(report.reason.is_stopped(), "{:?}", report.reason);
        // The sibling was cancelled and joined before stop returned.
        assert!(report.exits.iter().any(|(name, _)| name == "sibling"));
        assert!(report.exits.iter().all(|(name, _)| name != "stopper"));
    }
}

#[test]
fn a_supervisor_stopped_from_its_own_child_joins_the_others_and_reports() {
    stopped_from_inside(|supervisor| Some(supervisor.stop()));
}

#[test]
fn a_supervisor_dropped_from_its_own_child_does_not_join_that_thread() {
    stopped_from_inside(|supervisor| {
        drop(supervisor);
        None
    });
}

#[test]
fn a_supervisor_stop_timeout_from_its_own_child_returns_the_report() {
    stopped_from_inside(|supervisor| Some(supervisor.stop_timeout(PROMPT).ok().unwrap()));
}

#[test]
fn a_supervisor_stopped_on_its_own_monitor_thread_does_not_join_itself() {
    struct StopOnDrop(Slot, crossbeam_channel::Sender<StopReason>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            if let Some(supervisor) = self.0.lock().unwrap().take() {
                let _ = self.1.send(supervisor.stop().reason);
            }
        }
    }
    let _check = LeakCheck::builder().grace(PROMPT).build();
    let slot: Slot = Arc::new(std::sync::Mutex::new(None));
    let (reason_tx, reason_rx) = crossbeam_channel::bounded(1);
    let on_drop = StopOnDrop(slot.clone(), reason_tx);
    let supervisor = no_backoff()
        .child("svc", Restart::Temporary, move |token| {
            let _keep = &on_drop;
            token.wait();
            Ok::<(), String>(())
        })
        .start()
        .unwrap();
    let token = supervisor.token().clone();
    *slot.lock().unwrap() = Some(supervisor);
    drop(slot);
    // The monitor stops, drops the child's function, which stops the supervisor
    // on the monitor thread itself.
    token.cancel();
    assert!(reason_rx.recv_timeout(PROMPT).unwrap().is_stopped());
}

#[test]
fn a_child_that_ignores_its_token_is_named_while_stop_timeout_gives_up() {
    let _check = LeakCheck::new();
    let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(0);
    let (started_tx, started_rx) = unbounded::<()>();
    let supervisor = no_backoff()
        .child("polite", Restart::Permanent, |token| {
            token.wait();
            Ok::<(), String>(())
        })
        .child("deaf", Restart::Permanent, move |_| {
            started_tx.send(()).unwrap();
            let _ = release_rx.recv();
            Ok::<(), String>(())
        })
        .start()
        .unwrap();
    started_rx.recv_timeout(PROMPT).unwrap();
    let supervisor = supervisor
        .stop_timeout(Duration::from_millis(10))
        .expect_err("the deaf child still runs");
    // "deaf" (started last) is stopped first; "polite" waits behind its shutdown timeout.
    assert!(supervisor.running_children().contains(&"deaf".to_string()));
    release_tx.send(()).unwrap();
    let report = supervisor.stop_timeout(PROMPT).expect("joined now");
    assert!(report.reason.is_stopped(), "{:?}", report.reason);
}

#[test]
fn children_that_all_panic_in_a_tight_loop_end_in_intensity_exceeded() {
    let _check = LeakCheck::new();
    let mut builder = Supervisor::builder()
        .backoff(Duration::ZERO, Duration::ZERO)
        .intensity(20, Duration::MAX);
    for i in 0..4 {
        builder = builder.child(
            &format!("crash{i}"),
            Restart::Permanent,
            |_| -> Result<(), String> { panic!("always") },
        );
    }
    let report = builder
        .start()
        .unwrap()
        .join_timeout(PROMPT)
        .expect("intensity ends it");
    assert!(report.reason.is_intensity_exceeded(), "{:?}", report.reason);
    assert_eq!(report.total_restarts(), 20);
}

#[test]
fn a_panicking_on_cancel_callback_on_a_child_token_is_reported_and_every_thread_joined() {
    let check = LeakCheck::builder().grace(Duration::from_millis(1)).build();
    let (registered_tx, registered_rx) = unbounded::<()>();
    let supervisor = no_backoff()
        .child("trap", Restart::Permanent, move |token| {
            let _guard = token.on_cancel(|| panic!("callback on the child token"));
            registered_tx.send(()).unwrap();
            token.wait();
            Ok::<(), String>(())
        })
        .start()
        .unwrap();
    registered_rx.recv_timeout(PROMPT).unwrap();
    let report = supervisor.stop();
    assert!(report.reason.is_stopped(), "{:?}", report.reason);
    assert!(report
        .panics
        .iter()
        .any(|p| p.message() == Some("callback on the child token")));
    assert!(check.verify().is_ok());
}

#[test]
fn a_panicking_on_cancel_callback_on_the_supervisor_token_is_in_the_report() {
    let _check = LeakCheck::new();
    let supervisor = no_backoff()
        .child("svc", Restart::Permanent, |token| {
            token.wait();
            Ok::<(), String>(())
        })
        .start()
        .unwrap();
    let _guard = supervisor
        .token()
        .on_cancel(|| panic!("callback on the supervisor token"));
    let report = supervisor.stop();
    assert!(report.reason.is_stopped(), "{:?}", report.reason);
    assert_eq!(report.panics.len(), 1);
}

#[derive(Debug)]
struct PanickingClock;

impl corral::clock::Clock for PanickingClock {
    fn now(&self) -> Instant {
        panic!("clock broke")
    }
    fn sleep_until(&self, _: Instant, _: Option<&corral::CancelToken>) -> bool {
        panic!("clock broke")
    }
}

#[test]
fn a_panicking_clock_stops_the_supervisor_with_a_report_not_a_dead_monitor() {
    let _check = LeakCheck::new();
    let report = no_backoff()
        .clock(PanickingClock)
        .child("fails", Restart::Permanent, |_| Err("down"))
        .child("steady", Restart::Permanent, |token| {
            token.wait();
            Ok::<(), String>(())
        })
        .start()
        .unwrap()
        .join_timeout(PROMPT)
        .expect("the monitor stops");
    assert!(report.reason.is_failed(), "{:?}", report.reason);
    assert_eq!(report.panics[0].message(), Some("clock broke"));
    assert!(report.exits.iter().any(|(name, _)| name == "steady"));
}

#[test]
fn the_exit_record_keeps_the_most_recent_exits_and_counts_the_rest() {
    let _check = LeakCheck::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let report = Supervisor::builder()
        .backoff(Duration::ZERO, Duration::ZERO)
        .intensity(1_000_000, Duration::MAX)
        .child("churn", Restart::Transient, move |_| {
            if r.fetch_add(1, Ordering::SeqCst) < 10_005 {
                Err("again")
            } else {
                Ok(())
            }
        })
        .start()
        .unwrap()
        .join();
    assert_eq!(runs.load(Ordering::SeqCst), 10_006);
    assert_eq!(report.exits.len(), 10_000);
    assert_eq!(report.exits_omitted, 6);
    assert!(matches!(report.exits.last().unwrap().1, Exit::Finished));
}

/// A panic payload whose `Drop` panics.
struct PayloadBomb;

impl Drop for PayloadBomb {
    fn drop(&mut self) {
        panic!("drop of a panic payload");
    }
}

#[test]
fn an_evicted_exit_whose_panic_payload_panics_on_drop_is_reported_not_fatal() {
    let _check = LeakCheck::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let report = Supervisor::builder()
        .backoff(Duration::ZERO, Duration::ZERO)
        .intensity(1_000_000, Duration::MAX)
        .child("churn", Restart::Transient, move |_| {
            match r.fetch_add(1, Ordering::SeqCst) {
                0 => std::panic::panic_any(PayloadBomb),
                1..=10_000 => Err("again"),
                _ => Ok(()),
            }
        })
        .start()
        .unwrap()
        .join_timeout(Duration::from_secs(120))
        .expect("the supervisor finishes");
    assert!(report.reason.is_all_exited(), "{:?}", report.reason);
    assert_eq!(report.exits_omitted, 2);
    // A caught panic drops its payload inside the boundary itself (`Panic`'s own
    // drop), so the payload's panic never reaches the monitor.
    assert!(report.panics.is_empty(), "{:?}", report.panics);
}

// ---- OTP semantics, events, stats, run-time children, trees ------------------------------

use corral::clock::ManualClock;
use corral::supervisor::{
    AddChildError, ChildSpec, ChildState, Escalation, ExitKind, RemoveChildError, SupervisorEvent,
};
use corral::CancelToken;
use crossbeam_channel::{Receiver, Sender};

/// A child that says when it is up, and when its token is cancelled says so and waits
/// for `release` before returning.
fn held(name: &'static str, log: Sender<String>, release: Receiver<()>) -> ChildSpec {
    ChildSpec::new(name, Restart::Permanent, move |token: &CancelToken| {
        log.send(format!("{name} up")).unwrap();
        token.wait();
        log.send(format!("{name} cancelled")).unwrap();
        let _ = release.recv();
        Ok::<(), String>(())
    })
}

fn state_of(supervisor: &Supervisor, name: &str) -> ChildState {
    let stats = supervisor.stats();
    stats
        .children
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no child {name}: {stats:?}"))
        .state
}

fn recv(rx: &Receiver<String>) -> String {
    rx.recv_timeout(PROMPT).expect("within the deadline")
}

#[test]
fn stop_cancels_children_one_at_a_time_in_reverse_start_order() {
    let _check = LeakCheck::new();
    let (log_tx, log) = unbounded();
    let (releases, holds): (Vec<_>, Vec<_>) =
        (0..3).map(|_| crossbeam_channel::bounded::<()>(1)).unzip();
    let mut builder = no_backoff();
    for (name, hold) in ["a", "b", "c"].into_iter().zip(holds) {
        builder = builder.add_child(held(name, log_tx.clone(), hold));
    }
    let supervisor = builder.start().unwrap();
    for _ in 0..3 {
        assert!(recv(&log).ends_with(" up"));
    }
    supervisor.token().cancel();
    // While "c" (started last) is held in its shutdown, "b" and "a" are not cancelled.
    assert_eq!(recv(&log), "c cancelled");
    assert_eq!(state_of(&supervisor, "c"), ChildState::Stopping);
    assert_eq!(state_of(&supervisor, "b"), ChildState::Running);
    assert_eq!(state_of(&supervisor, "a"), ChildState::Running);
    releases[2].send(()).unwrap();
    assert_eq!(recv(&log), "b cancelled");
    assert_eq!(state_of(&supervisor, "a"), ChildState::Running);
    releases[1].send(()).unwrap();
    assert_eq!(recv(&log), "a cancelled");
    releases[0].send(()).unwrap();
    let report = supervisor.stop();
    assert!(report.reason.is_stopped(), "{:?}", report.reason);
    let order: Vec<_> = report.exits.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(order, ["c", "b", "a"]);
    assert!(report.overdue.is_empty());
}

#[test]
fn a_child_past_its_shutdown_timeout_is_reported_the_others_stop_then_it_is_joined() {
    let _check = LeakCheck::new();
    let (events_tx, events) = unbounded::<String>();
    let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(0);
    let (up_tx, up) = unbounded::<()>();
    let up2 = up_tx.clone();
    let supervisor = no_backoff()
        .on_event(move |event: &SupervisorEvent<'_>| match event.kind {
            EventKind::ShutdownOverdue { child, timeout } => events_tx
                .send(format!("{child} overdue after {timeout:?}"))
                .unwrap(),
            EventKind::Exited { child, .. } => events_tx.send(format!("{child} exited")).unwrap(),
            _ => {}
        })
        .child("polite", Restart::Permanent, move |token| {
            up_tx.send(()).unwrap();
            token.wait();
            Ok::<(), String>(())
        })
        .add_child(
            ChildSpec::new("deaf", Restart::Permanent, move |_| {
                up2.send(()).unwrap();
                let _ = release_rx.recv(); // ignores its token
                Ok::<(), String>(())
            })
            .shutdown_timeout(Duration::from_millis(10)),
        )
        .start()
        .unwrap();
    up.recv_timeout(PROMPT).unwrap();
    up.recv_timeout(PROMPT).unwrap();
    supervisor.token().cancel();
    // "deaf" started last, so it is stopped first; past its 10 ms it is reported and
    // the supervisor goes on to stop "polite" while "deaf" still runs.
    assert_eq!(recv(&events), "deaf overdue after 10ms");
    assert_eq!(recv(&events), "polite exited");
    assert_eq!(supervisor.running_children(), ["deaf"]);
    release_tx.send(()).unwrap();
    let report = supervisor.stop();
    assert_eq!(recv(&events), "deaf exited");
    assert_eq!(report.overdue, ["deaf"]);
    assert!(report.exits.iter().any(|(n, _)| n == "deaf"));
    let deaf = report.children.iter().find(|c| c.name == "deaf").unwrap();
    assert_eq!((deaf.overdue, deaf.state), (1, ChildState::Stopped));
}

/// A supervisor with `strategy` over a temporary child and a permanent child "p" that
/// fails on its first run; returns the report and how often each child started.
fn temporary_beside_a_failing_sibling(
    strategy: Strategy,
    temporary_first: bool,
) -> (corral::supervisor::SupervisorReport, Vec<String>) {
    let (starts_tx, starts) = unbounded::<String>();
    let s1 = starts_tx.clone();
    let temporary = ChildSpec::new("t", Restart::Temporary, move |token: &CancelToken| {
        s1.send("t".into()).unwrap();
        token.wait();
        Ok::<(), String>(())
    });
    let fails = Arc::new(AtomicUsize::new(0));
    let permanent = ChildSpec::new("p", Restart::Permanent, move |token: &CancelToken| {
        starts_tx.send("p".into()).unwrap();
        if fails.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err("first run fails");
        }
        token.wait();
        Ok(())
    });
    let builder = no_backoff().strategy(strategy);
    let builder = if temporary_first {
        builder.add_child(temporary).add_child(permanent)
    } else {
        builder.add_child(permanent).add_child(temporary)
    };
    let supervisor = builder.start().unwrap();
    let mut seen = Vec::new();
    while seen.iter().filter(|s| *s == "p").count() < 2 {
        seen.push(recv(&starts));
    }
    let report = supervisor.stop();
    seen.extend(starts.try_iter());
    (report, seen)
}

#[test]
fn one_for_all_never_restarts_a_temporary_sibling() {
    let _check = LeakCheck::new();
    let (report, starts) = temporary_beside_a_failing_sibling(Strategy::OneForAll, true);
    assert_eq!(starts.iter().filter(|s| *s == "t").count(), 1, "{starts:?}");
    assert_eq!(report.restarts, vec![("t".into(), 0), ("p".into(), 1)]);
    let t = &report.children[0];
    assert_eq!((t.starts, t.state), (1, ChildState::Stopped));
}

#[test]
fn rest_for_one_never_restarts_a_temporary_child_after_the_failing_one() {
    let _check = LeakCheck::new();
    let (report, starts) = temporary_beside_a_failing_sibling(Strategy::RestForOne, false);
    assert_eq!(starts.iter().filter(|s| *s == "t").count(), 1, "{starts:?}");
    assert_eq!(report.restarts, vec![("p".into(), 1), ("t".into(), 0)]);
}

#[test]
fn a_group_restart_stops_the_siblings_in_reverse_start_order() {
    let _check = LeakCheck::new();
    let (log_tx, log) = unbounded::<String>();
    let fails = Arc::new(AtomicUsize::new(0));
    let mut builder =
        no_backoff()
            .strategy(Strategy::OneForAll)
            .child("a", Restart::Permanent, move |token| {
                if fails.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Err("first run fails");
                }
                token.wait();
                Ok(())
            });
    for name in ["b", "c", "d"] {
        let log = log_tx.clone();
        builder = builder.child(name, Restart::Permanent, move |token| {
            log.send(format!("{name} up")).unwrap();
            token.wait();
            log.send(format!("{name} stopped")).unwrap();
            Ok::<(), String>(())
        });
    }
    let supervisor = builder.start().unwrap();
    let mut seen = Vec::new();
    while seen.iter().filter(|s: &&String| s.ends_with(" up")).count() < 6 {
        seen.push(recv(&log));
    }
    let report = supervisor.stop();
    let stops: Vec<_> = seen.iter().filter(|s| s.ends_with(" stopped")).collect();
    assert_eq!(stops, ["d stopped", "c stopped", "b stopped"], "{seen:?}");
    assert_eq!(report.total_restarts(), 4);
}

#[test]
fn intensity_exceeded_names_the_child_and_keeps_its_error() {
    let _check = LeakCheck::new();
    let (events_tx, events) = unbounded::<String>();
    let report = no_backoff()
        .intensity(1, Duration::from_secs(3600))
        .on_event(move |event| {
            if let EventKind::IntensityExceeded { child, exit } = event.kind {
                events_tx.send(format!("{child}: {exit:?}")).unwrap();
            }
        })
        .child("db", Restart::Transient, |_| Err(Code(3)))
        .start()
        .unwrap()
        .join_timeout(PROMPT)
        .expect("intensity ends it");
    match &report.reason {
        StopReason::IntensityExceeded {
            child,
            last_error: Exit::Failed(error),
        } => {
            assert_eq!(child, "db");
            assert_eq!(error.downcast_ref::<Code>().map(|c| c.0), Some(3));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(recv(&events), "db: Failed(Code(3))");
    assert_eq!(
        report.exits.len(),
        1,
        "the first failure; the second is in the reason"
    );
}

/// The backoff delays of a child that always fails, on a manual clock advanced past
/// each one, with the given jitter and seed.
fn backoff_delays(jitter: f64, seed: u64, rounds: usize) -> Vec<Duration> {
    let clock = ManualClock::new();
    let (delays_tx, delays) = unbounded::<Duration>();
    let supervisor = Supervisor::builder()
        .clock(clock.clone())
        .intensity(1_000, Duration::from_secs(3600))
        .backoff(Duration::from_millis(100), Duration::from_millis(100))
        .jitter(jitter)
        .seed(seed)
        .on_event(move |event| {
            if let EventKind::BackingOff { delay, .. } = event.kind {
                delays_tx.send(delay).unwrap();
            }
        })
        .child("down", Restart::Permanent, |_| Err("down"))
        .start()
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..rounds {
        seen.push(delays.recv_timeout(PROMPT).expect("a backoff"));
        clock.advance(Duration::from_millis(100));
    }
    assert!(supervisor.stop().reason.is_stopped());
    seen
}

#[test]
fn jittered_backoff_is_shortened_within_the_fraction_and_repeats_with_its_seed() {
    let _check = LeakCheck::new();
    let first = backoff_delays(0.5, 42, 6);
    assert_eq!(first, backoff_delays(0.5, 42, 6));
    assert!(first
        .iter()
        .all(|d| (Duration::from_millis(50)..=Duration::from_millis(100)).contains(d)));
    assert!(
        first.iter().any(|d| *d < Duration::from_millis(100)),
        "{first:?}"
    );
    assert_ne!(first, backoff_delays(0.5, 43, 6));
    assert!(backoff_delays(0.0, 42, 3)
        .iter()
        .all(|d| *d == Duration::from_millis(100)));
}

#[test]
fn a_jitter_outside_zero_to_one_is_a_config_error() {
    for bad in [-0.1, 1.5, f64::NAN] {
        let err = no_backoff()
            .jitter(bad)
            .child("x", Restart::Temporary, |_| Ok::<(), String>(()))
            .start()
            .unwrap_err();
        assert_eq!(err.config().unwrap().field(), "jitter");
    }
}

#[test]
fn stats_show_each_childs_state_time_in_state_and_counts() {
    let _check = LeakCheck::new();
    let clock = ManualClock::new();
    let (backing_off_tx, backing_off) = unbounded::<()>();
    let supervisor = Supervisor::builder()
        .name("svc")
        .clock(clock.clone())
        .backoff(Duration::from_secs(60), Duration::from_secs(60))
        .on_event(move |event| {
            if let EventKind::BackingOff { .. } = event.kind {
                backing_off_tx.send(()).unwrap();
            }
        })
        .child("steady", Restart::Permanent, |token| {
            token.wait();
            Ok::<(), String>(())
        })
        .child("flaky", Restart::Permanent, |_| Err("down"))
        .start()
        .unwrap();
    backing_off.recv_timeout(PROMPT).unwrap();
    clock.advance(Duration::from_secs(5));
    let stats = supervisor.stats();
    assert_eq!(stats.name.as_deref(), Some("svc"));
    assert_eq!(stats.exits, 1);
    let (steady, flaky) = (&stats.children[0], &stats.children[1]);
    assert_eq!(
        (
            steady.state,
            steady.starts,
            steady.restarts,
            steady.last_exit
        ),
        (ChildState::Running, 1, 0, None)
    );
    assert_eq!(steady.in_state, Duration::from_secs(5));
    assert_eq!(
        (flaky.state, flaky.starts, flaky.last_exit),
        (ChildState::BackingOff, 1, Some(ExitKind::Failed))
    );
    assert_eq!(flaky.in_state, Duration::from_secs(5));
    clock.advance(Duration::from_secs(55)); // the backoff ends: "flaky" restarts
    backing_off.recv_timeout(PROMPT).unwrap();
    let flaky = supervisor.stats().children[1].clone();
    assert_eq!((flaky.starts, flaky.restarts), (2, 1));
    assert!(supervisor.stop().reason.is_stopped());
}

#[test]
fn the_name_is_in_thread_names_debug_and_events() {
    let _check = LeakCheck::new();
    let (names_tx, names) = unbounded::<String>();
    let events_tx = names_tx.clone();
    let supervisor = no_backoff()
        .name("api")
        .on_event(move |event| {
            if let EventKind::Started { child } = event.kind {
                events_tx
                    .send(format!("{}: {child} started", event.supervisor.unwrap()))
                    .unwrap();
            }
        })
        .child("worker", Restart::Permanent, move |token| {
            names_tx
                .send(std::thread::current().name().unwrap().to_owned())
                .unwrap();
            token.wait();
            Ok::<(), String>(())
        })
        .start()
        .unwrap();
    let mut seen = vec![recv(&names), recv(&names)];
    seen.sort();
    assert_eq!(seen, ["api: worker started", "corral-sup-api/worker"]);
    assert!(format!("{supervisor:?}").contains("\"api\""));
    assert!(corral::leak::live_threads()
        .iter()
        .any(|t| t.name == "corral-sup-api"));
    assert_eq!(supervisor.stop().name.as_deref(), Some("api"));
}

#[test]
fn the_history_keeps_the_last_n_exits_and_counts_the_rest() {
    let _check = LeakCheck::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let report = no_backoff()
        .history(3)
        .child("churn", Restart::Transient, move |_| {
            if r.fetch_add(1, Ordering::SeqCst) < 5 {
                Err("again")
            } else {
                Ok(())
            }
        })
        .start()
        .unwrap()
        .join();
    assert_eq!(report.exits.len(), 3);
    assert_eq!(report.exits_omitted, 3);
    assert!(matches!(report.exits.last().unwrap().1, Exit::Finished));
    assert_eq!(report.children[0].starts, 6);
    let err = no_backoff()
        .history(1_000_001)
        .child("x", Restart::Temporary, |_| Ok::<(), String>(()))
        .start()
        .unwrap_err();
    assert_eq!(err.config().unwrap().field(), "history");
}

#[test]
fn a_panicking_event_hook_is_caught_and_reported() {
    let _check = LeakCheck::new();
    let report = no_backoff()
        .on_event(|event| {
            if let EventKind::Started { .. } = event.kind {
                panic!("hook broke");
            }
        })
        .child("once", Restart::Temporary, |_| Ok::<(), String>(()))
        .start()
        .unwrap()
        .join_timeout(PROMPT)
        .expect("finishes");
    assert!(report.reason.is_all_exited(), "{:?}", report.reason);
    assert_eq!(report.panics.len(), 1);
    assert_eq!(report.panics[0].message(), Some("hook broke"));
}

fn idle(token: &CancelToken) -> Result<(), String> {
    token.wait();
    Ok(())
}

#[test]
fn children_are_added_and_removed_at_run_time_with_named_errors() {
    let _check = LeakCheck::new();
    let supervisor = no_backoff()
        .child("a", Restart::Permanent, idle)
        .start()
        .unwrap();
    supervisor
        .add_child(ChildSpec::new("b", Restart::Permanent, idle))
        .unwrap();
    match supervisor.add_child(ChildSpec::new("b", Restart::Permanent, idle)) {
        Err(AddChildError::Duplicate(spec)) => assert_eq!(spec.name(), "b"),
        other => panic!("{other:?}"),
    }
    match supervisor.add_child(ChildSpec::new("c\0", Restart::Permanent, idle)) {
        Err(AddChildError::InvalidName(e, _)) => assert_eq!(e.field(), "child name"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        supervisor.remove_child("zzz"),
        Err(RemoveChildError::Unknown("zzz".into()))
    );
    supervisor.remove_child("a").unwrap();
    assert_eq!(supervisor.running_children(), ["b"]);
    let token = supervisor.token().clone();
    token.cancel();
    let supervisor = match supervisor.join_timeout(PROMPT) {
        Ok(report) => {
            // Removed children leave the list; their exits stay in the record.
            assert_eq!(report.restarts, vec![("b".into(), 0)]);
            let exited: Vec<_> = report.exits.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(exited, ["a", "b"]);
            return;
        }
        Err(running) => running,
    };
    panic!("the supervisor did not stop: {supervisor:?}");
}

#[test]
fn add_and_remove_after_the_supervisor_stopped_are_refused_with_the_spec() {
    let _check = LeakCheck::new();
    let supervisor = no_backoff()
        .child("once", Restart::Temporary, |_| Ok::<(), String>(()))
        .start()
        .unwrap();
    let deadline = Instant::now() + PROMPT;
    while !supervisor.is_finished() {
        assert!(Instant::now() < deadline, "never finished");
        std::thread::yield_now();
    }
    match supervisor.add_child(ChildSpec::new("late", Restart::Permanent, idle)) {
        Err(AddChildError::Stopped(spec)) => assert_eq!(spec.name(), "late"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        supervisor.remove_child("once"),
        Err(RemoveChildError::Stopped("once".into()))
    );
    assert!(supervisor.join().reason.is_all_exited());
}

#[test]
fn adding_a_child_does_not_wait_for_a_backoff_in_progress() {
    let _check = LeakCheck::new();
    let clock = ManualClock::new();
    let (backing_off_tx, backing_off) = unbounded::<()>();
    let (up_tx, up) = unbounded::<()>();
    let supervisor = Supervisor::builder()
        .clock(clock)
        .backoff(Duration::from_secs(3600), Duration::from_secs(3600))
        .on_event(move |event| {
            if let EventKind::BackingOff { .. } = event.kind {
                backing_off_tx.send(()).unwrap();
            }
        })
        .child("down", Restart::Permanent, |_| Err("down"))
        .start()
        .unwrap();
    backing_off.recv_timeout(PROMPT).unwrap();
    // The manual clock never moves: only the command's wake-up lets this return.
    supervisor
        .add_child(ChildSpec::new("fresh", Restart::Permanent, move |token| {
            up_tx.send(()).unwrap();
            idle(token)
        }))
        .unwrap();
    up.recv_timeout(PROMPT).unwrap();
    assert_eq!(state_of(&supervisor, "down"), ChildState::BackingOff);
    supervisor.remove_child("down").unwrap();
    let report = supervisor.stop();
    assert_eq!(report.restarts, vec![("fresh".into(), 0)]);
}

#[test]
fn removing_the_last_child_ends_the_supervisor() {
    let _check = LeakCheck::new();
    let supervisor = no_backoff()
        .child("only", Restart::Permanent, idle)
        .start()
        .unwrap();
    supervisor.remove_child("only").unwrap();
    let report = supervisor.join_timeout(PROMPT).expect("ends by itself");
    assert!(report.reason.is_all_exited(), "{:?}", report.reason);
}

/// A supervisor named `name` whose children are `leaves` (each logs its name when its
/// token is cancelled) followed by `inner` children; it logs "<name> stopped".
fn level(
    name: &'static str,
    leaves: &'static [&'static str],
    inner: Vec<ChildSpec>,
    log: &Sender<String>,
    up: &Sender<()>,
) -> corral::supervisor::SupervisorBuilder {
    let stopped = log.clone();
    let mut builder = no_backoff().name(name).on_event(move |event| {
        if let EventKind::Stopped { .. } = event.kind {
            stopped.send(format!("{name} stopped")).unwrap();
        }
    });
    for &leaf in leaves {
        let (log, up) = (log.clone(), up.clone());
        builder = builder.child(leaf, Restart::Permanent, move |token| {
            up.send(()).unwrap();
            token.wait();
            log.send(leaf.to_owned()).unwrap();
            Ok::<(), String>(())
        });
    }
    inner.into_iter().fold(builder, |b, spec| b.add_child(spec))
}

#[test]
fn a_three_level_tree_stops_children_before_parents_in_reverse_start_order() {
    let _check = LeakCheck::new();
    let (log_tx, log) = unbounded::<String>();
    let (up_tx, up) = unbounded::<()>();
    // root: [A: {a1, a2}, B: {b1, C: {c1, c2}}]
    let (l, u) = (log_tx.clone(), up_tx.clone());
    let sub_a = ChildSpec::supervisor("A", Restart::Permanent, move || {
        level("A", &["a1", "a2"], Vec::new(), &l, &u)
    });
    let (l, u) = (log_tx.clone(), up_tx.clone());
    let sub_b = ChildSpec::supervisor("B", Restart::Permanent, move || {
        let (l2, u2) = (l.clone(), u.clone());
        let sub_c = ChildSpec::supervisor("C", Restart::Permanent, move || {
            level("C", &["c1", "c2"], Vec::new(), &l2, &u2)
        });
        level("B", &["b1"], vec![sub_c], &l, &u)
    });
    let root = level("root", &[], vec![sub_a, sub_b], &log_tx, &up_tx)
        .start()
        .unwrap();
    for _ in 0..5 {
        up.recv_timeout(PROMPT).expect("every leaf is up");
    }
    let report = root.stop();
    assert!(report.reason.is_stopped(), "{:?}", report.reason);
    let order: Vec<String> = log.try_iter().collect();
    assert_eq!(
        order,
        [
            "c2",
            "c1",
            "C stopped",
            "b1",
            "B stopped",
            "a2",
            "a1",
            "A stopped",
            "root stopped"
        ]
    );
}

#[test]
fn an_inner_supervisor_that_gives_up_escalates_to_its_parent() {
    let _check = LeakCheck::new();
    let report = no_backoff()
        .name("outer")
        .intensity(0, Duration::from_secs(60))
        .add_child(ChildSpec::supervisor("inner", Restart::Permanent, || {
            no_backoff()
                .name("inner")
                .intensity(0, Duration::from_secs(60))
                .child("broken", Restart::Permanent, |_| Err(Code(9)))
        }))
        .start()
        .unwrap()
        .join_timeout(PROMPT)
        .expect("both give up");
    let StopReason::IntensityExceeded {
        child,
        last_error: Exit::Failed(error),
    } = &report.reason
    else {
        panic!("{:?}", report.reason);
    };
    assert_eq!(child, "inner");
    let inner = &error.downcast_ref::<Escalation>().expect("an escalation").0;
    assert_eq!(inner.name.as_deref(), Some("inner"));
    assert!(matches!(
        &inner.reason,
        StopReason::IntensityExceeded { child, .. } if child == "broken"
    ));
    assert_eq!(
        error.to_string(),
        "supervisor \"inner\" stopped: restart intensity exceeded by child \"broken\""
    );
}

#[test]
fn duplicate_child_names_are_a_config_error() {
    let err = no_backoff()
        .child("x", Restart::Temporary, |_| Ok::<(), String>(()))
        .child("x", Restart::Temporary, |_| Ok::<(), String>(()))
        .start()
        .unwrap_err();
    assert_eq!(err.config().unwrap().field(), "child name");
}

#[test]
fn public_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Supervisor>();
    assert_send_sync::<corral::supervisor::SupervisorReport>();
    assert_send_sync::<corral::supervisor::SupervisorStats>();
    assert_send_sync::<ChildSpec>();
    assert_send_sync::<AddChildError>();
    assert_send_sync::<RemoveChildError>();
    assert_send_sync::<Escalation>();
    assert_send_sync::<Exit>();
    assert_send_sync::<StopReason>();
}

#[test]
fn intensity_exceeded_stops_the_others_in_reverse_start_order() {
    let _check = LeakCheck::new();
    let (log_tx, log) = unbounded::<String>();
    let (up_tx, up) = unbounded::<()>();
    let (fail_tx, fail_rx) = crossbeam_channel::bounded::<()>(0);
    let mut builder = no_backoff().intensity(0, Duration::from_secs(60)).child(
        "fails",
        Restart::Permanent,
        move |_| {
            let _ = fail_rx.recv();
            Err("gone")
        },
    );
    for name in ["x", "y", "z"] {
        let (log, up) = (log_tx.clone(), up_tx.clone());
        builder = builder.child(name, Restart::Permanent, move |token| {
            up.send(()).unwrap();
            token.wait();
            log.send(name.to_owned()).unwrap();
            Ok::<(), String>(())
        });
    }
    let supervisor = builder.start().unwrap();
    for _ in 0..3 {
        up.recv_timeout(PROMPT).unwrap();
    }
    fail_tx.send(()).unwrap();
    let report = supervisor.join_timeout(PROMPT).expect("intensity ends it");
    assert!(report.reason.is_intensity_exceeded(), "{:?}", report.reason);
    assert_eq!(log.try_iter().collect::<Vec<_>>(), ["z", "y", "x"]);
}
