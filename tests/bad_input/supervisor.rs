//! Bad-input rows for `supervisor`.

use std::time::{Duration, Instant};

use corral::leak::LeakCheck;
use corral::{
    supervisor::{Restart, SupervisorBuilder},
    Supervisor,
};

const PROMPT: Duration = Duration::from_secs(10);

fn waits(builder: SupervisorBuilder) -> SupervisorBuilder {
    builder.child("svc", Restart::Permanent, |token| {
        token.wait();
        Ok::<(), String>(())
    })
}

fn fails_once(builder: SupervisorBuilder) -> SupervisorBuilder {
    let failed = std::sync::atomic::AtomicBool::new(false);
    builder.child("flaky", Restart::Transient, move |_| {
        if failed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            Ok(())
        } else {
            Err("first run fails")
        }
    })
}

#[test]
fn supervisor_no_children_is_a_config_error() {
    let err = Supervisor::builder().start().unwrap_err();
    assert_eq!(
        (err.config().unwrap().field(), err.config().unwrap().value()),
        ("children", "0")
    );
}

#[test]
fn supervisor_child_name_with_nul_is_a_config_error() {
    let err = waits(Supervisor::builder())
        .child("a\0b", Restart::Temporary, |_| Ok::<(), String>(()))
        .start()
        .unwrap_err();
    assert_eq!(err.config().unwrap().field(), "child name");
}

#[test]
fn supervisor_child_name_empty_is_allowed() {
    let _check = LeakCheck::new();
    let report = Supervisor::builder()
        .child("", Restart::Temporary, |_| Ok::<(), String>(()))
        .start()
        .unwrap()
        .join();
    assert_eq!(report.restarts, vec![(String::new(), 0)]);
}

#[test]
fn supervisor_max_restarts_zero_stops_at_the_first_restart() {
    let _check = LeakCheck::new();
    let report = fails_once(Supervisor::builder().intensity(0, Duration::from_secs(60)))
        .start()
        .unwrap()
        .join();
    assert!(report.reason.is_intensity_exceeded(), "{:?}", report.reason);
    assert_eq!(report.total_restarts(), 0);
}

#[test]
fn supervisor_max_restarts_usize_max_is_a_config_error() {
    let err = waits(Supervisor::builder().intensity(usize::MAX, Duration::from_secs(1)))
        .start()
        .unwrap_err();
    assert_eq!(err.config().unwrap().field(), "max_restarts");
    assert_eq!(err.config().unwrap().value(), usize::MAX.to_string());
}

#[test]
fn supervisor_max_restarts_u32_max_is_a_config_error() {
    let err = waits(Supervisor::builder().intensity(u32::MAX as usize, Duration::from_secs(1)))
        .start()
        .unwrap_err();
    assert_eq!(err.config().unwrap().field(), "max_restarts");
}

#[test]
fn supervisor_max_restarts_one_million_is_accepted() {
    let _check = LeakCheck::new();
    let supervisor = waits(Supervisor::builder().intensity(1_000_000, Duration::from_secs(1)))
        .start()
        .unwrap();
    assert!(supervisor.stop().reason.is_stopped());
}

#[test]
fn supervisor_period_zero_is_a_config_error() {
    let err = waits(Supervisor::builder().intensity(3, Duration::ZERO))
        .start()
        .unwrap_err();
    assert_eq!(err.config().unwrap().field(), "period");
}

#[test]
fn supervisor_period_duration_max_counts_every_restart() {
    let _check = LeakCheck::new();
    let report = fails_once(
        Supervisor::builder()
            .backoff(Duration::ZERO, Duration::ZERO)
            .intensity(1, Duration::MAX),
    )
    .start()
    .unwrap()
    .join();
    assert!(report.reason.is_all_exited(), "{:?}", report.reason);
    assert_eq!(report.total_restarts(), 1);
}

#[test]
fn supervisor_backoff_zero_restarts_at_once() {
    let _check = LeakCheck::new();
    let report = fails_once(Supervisor::builder().backoff(Duration::ZERO, Duration::ZERO))
        .start()
        .unwrap()
        .join_timeout(PROMPT)
        .expect("no delay");
    assert_eq!(report.total_restarts(), 1);
}

#[test]
fn supervisor_backoff_duration_max_saturates_and_stop_interrupts_it() {
    let _check = LeakCheck::new();
    let (failed_tx, failed_rx) = crossbeam_channel::unbounded();
    let supervisor = Supervisor::builder()
        .backoff(Duration::MAX, Duration::MAX)
        .child("down", Restart::Permanent, move |_| {
            failed_tx.send(()).unwrap();
            Err("down")
        })
        .start()
        .unwrap();
    failed_rx.recv_timeout(PROMPT).unwrap();
    let report = supervisor
        .stop_timeout(PROMPT)
        .expect("stop interrupts the wait");
    assert!(report.reason.is_stopped(), "{:?}", report.reason);
    assert_eq!(report.total_restarts(), 0);
}

#[test]
fn supervisor_backoff_duration_max_on_a_manual_clock_saturates() {
    let _check = LeakCheck::new();
    let clock = corral::clock::ManualClock::new();
    clock.advance(Duration::MAX);
    let (failed_tx, failed_rx) = crossbeam_channel::unbounded();
    let supervisor = Supervisor::builder()
        .clock(clock)
        .backoff(Duration::MAX, Duration::MAX)
        .child("down", Restart::Permanent, move |_| {
            failed_tx.send(()).unwrap();
            Err("down")
        })
        .start()
        .unwrap();
    failed_rx.recv_timeout(PROMPT).unwrap();
    let report = supervisor
        .stop_timeout(PROMPT)
        .expect("stop interrupts the wait");
    assert!(report.reason.is_stopped(), "{:?}", report.reason);
}

#[test]
fn supervisor_backoff_base_above_max_is_a_config_error() {
    let err = waits(Supervisor::builder().backoff(Duration::MAX, Duration::ZERO))
        .start()
        .unwrap_err();
    assert_eq!(err.config().unwrap().field(), "backoff max");
}

#[test]
fn supervisor_stop_timeout_duration_max_waits_like_stop() {
    let _check = LeakCheck::new();
    let supervisor = waits(Supervisor::builder()).start().unwrap();
    let report = supervisor.stop_timeout(Duration::MAX).expect("joined");
    assert!(report.reason.is_stopped(), "{:?}", report.reason);
}

#[test]
fn supervisor_stop_timeout_zero_cancels_and_reports_once_joined() {
    let _check = LeakCheck::new();
    let mut supervisor = waits(Supervisor::builder()).start().unwrap();
    // Zero waits for nothing: the report comes once the threads happen to be joined.
    let deadline = Instant::now() + PROMPT;
    let report = loop {
        match supervisor.stop_timeout(Duration::ZERO) {
            Ok(report) => break report,
            Err(back) => supervisor = back,
        }
        assert!(Instant::now() < deadline, "never joined");
        std::thread::yield_now();
    };
    assert!(report.reason.is_stopped(), "{:?}", report.reason);
}

#[test]
fn supervisor_stop_deadline_in_the_past_cancels_and_hands_back_or_reports() {
    let _check = LeakCheck::new();
    let supervisor = waits(Supervisor::builder()).start().unwrap();
    let past = Instant::now() - Duration::from_millis(1);
    match supervisor.stop_deadline(past) {
        Ok(report) => assert!(report.reason.is_stopped(), "{:?}", report.reason),
        Err(back) => {
            assert!(back.token().is_cancelled());
            assert!(back.stop().reason.is_stopped());
        }
    }
}

#[test]
fn supervisor_join_timeout_duration_max_waits_like_join() {
    let _check = LeakCheck::new();
    let report = Supervisor::builder()
        .child("once", Restart::Temporary, |_| Ok::<(), String>(()))
        .start()
        .unwrap()
        .join_timeout(Duration::MAX)
        .expect("finishes by itself");
    assert!(report.reason.is_all_exited(), "{:?}", report.reason);
}

#[test]
fn supervisor_join_timeout_zero_hands_a_running_supervisor_back() {
    let _check = LeakCheck::new();
    let supervisor = waits(Supervisor::builder()).start().unwrap();
    let supervisor = supervisor
        .join_timeout(Duration::ZERO)
        .expect_err("running");
    assert!(!supervisor.token().is_cancelled());
    supervisor.stop();
}

#[test]
fn supervisor_join_deadline_in_the_past_hands_a_running_supervisor_back() {
    let _check = LeakCheck::new();
    let supervisor = waits(Supervisor::builder()).start().unwrap();
    let past = Instant::now() - Duration::from_millis(1);
    let supervisor = supervisor.join_deadline(past).expect_err("running");
    supervisor.stop();
}

#[test]
fn supervisor_join_cancellable_with_an_expired_token_hands_it_back() {
    let _check = LeakCheck::new();
    let supervisor = waits(Supervisor::builder()).start().unwrap();
    let expired = corral::CancelToken::with_deadline(Instant::now() - Duration::from_millis(1));
    let supervisor = supervisor.join_cancellable(&expired).expect_err("running");
    supervisor.stop();
}

#[test]
fn supervisor_child_name_used_twice_is_a_config_error() {
    let err = waits(waits(Supervisor::builder())).start().unwrap_err();
    assert_eq!(err.config().unwrap().field(), "child name");
}

#[test]
fn supervisor_jitter_nan_is_a_config_error() {
    let err = waits(Supervisor::builder().jitter(f64::NAN))
        .start()
        .unwrap_err();
    assert_eq!(err.config().unwrap().field(), "jitter");
}

#[test]
fn supervisor_history_above_its_maximum_is_a_config_error() {
    let err = waits(Supervisor::builder().history(1_000_001))
        .start()
        .unwrap_err();
    assert_eq!(err.config().unwrap().field(), "history");
}

#[test]
fn supervisor_history_zero_keeps_no_exit_and_counts_them_all() {
    let _check = LeakCheck::new();
    let sup = fails_once(Supervisor::builder().history(0))
        .start()
        .unwrap();
    let report = sup.join_timeout(PROMPT).unwrap();
    assert!(report.exits.is_empty(), "{:?}", report.exits);
    assert_eq!(report.exits_omitted, 2);
}

#[test]
fn supervisor_watchdog_zero_is_a_config_error() {
    let err = waits(Supervisor::builder().watchdog(Duration::ZERO))
        .start()
        .unwrap_err();
    assert_eq!(err.config().unwrap().field(), "watchdog");
}
