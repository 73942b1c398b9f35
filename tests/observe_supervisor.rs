//! The supervisor in the thread dump and under its watchdog, and (features `tracing`
//! and `metrics`) its events and metrics; the resilience stack's events and counters.
//! Time is a ManualClock everywhere it decides; threads are awaited by polling the
//! dump or by channels, never by sleeping.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{unbounded, Receiver};

use corral::clock::ManualClock;
use corral::leak::{self, LeakCheck};
use corral::observe::{Activity, Role};
use corral::supervisor::{ChildSpec, ChildState, EventKind, Restart};
use corral::{CancelToken, Supervisor};

mod common;

use common::dump::{wait_for_thread, PATIENCE};

fn idle(token: &CancelToken) -> Result<(), String> {
    token.wait();
    Ok(())
}

#[test]
fn the_dump_shows_the_monitor_and_children_with_their_roles_and_the_start_line() {
    let _check = LeakCheck::new();
    let line = line!() + 5;
    let supervisor = Supervisor::builder()
        .name("dump-sup")
        .child("reader", Restart::Permanent, idle)
        .child("writer", Restart::Permanent, idle)
        .start()
        .unwrap();
    for (thread, role) in [
        ("corral-sup-dump-sup", Role::Monitor),
        ("corral-sup-dump-sup/reader", Role::SupervisorChild),
        ("corral-sup-dump-sup/writer", Role::SupervisorChild),
    ] {
        let t = wait_for_thread(thread, |_| true);
        assert_eq!(t.role, role, "{thread}");
        assert_eq!(t.owner, "Supervisor");
        assert_eq!(t.owner_name.as_deref(), Some("dump-sup"));
        assert_eq!(
            (t.spawned_at.file(), t.spawned_at.line()),
            (file!(), line),
            "{thread}"
        );
    }
    let child = wait_for_thread("corral-sup-dump-sup/reader", |_| true);
    assert!(
        matches!(child.activity, Activity::Running { site: Some(site) } if site.line() == line),
        "{child:?}"
    );
    // The monitor waits for its children's exits: idle.
    let monitor = wait_for_thread("corral-sup-dump-sup", |t| t.activity == Activity::Idle);
    assert!(!monitor.stuck);
    let text = leak::dump().to_string();
    assert!(text.contains("Supervisor \"dump-sup\""), "{text}");
    assert!(text.contains("supervisor child"), "{text}");
    assert!(supervisor.stop().reason.is_stopped());
    assert!(!leak::dump()
        .threads
        .iter()
        .any(|t| t.owner_name.as_deref() == Some("dump-sup")));
}

#[test]
fn a_child_in_backoff_shows_as_its_monitor_parked_until_the_restart() {
    let _check = LeakCheck::new();
    let clock = ManualClock::new();
    let attempts = Arc::new(AtomicUsize::new(0));
    let seen = attempts.clone();
    let (backoffs_tx, backoffs) = unbounded();
    let (runs_tx, runs) = unbounded();
    let supervisor = Supervisor::builder()
        .name("backoff-sup")
        .clock(clock.clone())
        .backoff(Duration::from_secs(60), Duration::from_secs(60))
        .on_event(move |event| {
            if let EventKind::BackingOff { child, delay } = event.kind {
                backoffs_tx.send((child.to_owned(), delay)).unwrap();
            }
        })
        .child("flaky", Restart::Permanent, move |token| {
            let run = seen.fetch_add(1, Ordering::SeqCst) + 1;
            runs_tx.send(run).unwrap();
            if run == 1 {
                return Err("connection refused".to_owned());
            }
            token.wait();
            Ok(())
        })
        .start()
        .unwrap();
    assert_eq!(runs.recv_timeout(PATIENCE).unwrap(), 1);
    let backoff = backoffs.recv_timeout(PATIENCE).unwrap();
    assert_eq!(backoff, ("flaky".to_owned(), Duration::from_secs(60)));
    let monitor = wait_for_thread("corral-sup-backoff-sup", |t| {
        matches!(t.activity, Activity::Backoff { .. })
    });
    let Activity::Backoff { until } = monitor.activity else {
        unreachable!()
    };
    assert_eq!(
        until,
        corral::clock::Clock::now(&clock) + Duration::from_secs(60)
    );
    assert_eq!(monitor.role, Role::Monitor);
    let text = leak::dump().to_string();
    assert!(text.contains("parked in backoff"), "{text}");
    assert!(text.contains("Supervisor \"backoff-sup\""), "{text}");
    let flaky = &supervisor.stats().children[0];
    assert_eq!(flaky.state, ChildState::BackingOff);
    // The child's thread is gone while it backs off; it is back once time has passed.
    assert!(!leak::dump()
        .threads
        .iter()
        .any(|t| t.name == "corral-sup-backoff-sup/flaky"));
    clock.advance(Duration::from_secs(60));
    assert_eq!(runs.recv_timeout(PATIENCE).unwrap(), 2, "restarted");
    wait_for_thread("corral-sup-backoff-sup", |t| t.activity == Activity::Idle);
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    let report = supervisor.stop();
    assert_eq!(report.total_restarts(), 1);
}

#[test]
fn a_subtree_shows_the_line_that_declared_it() {
    let _check = LeakCheck::new();
    let line = line!() + 1;
    let subtree = ChildSpec::supervisor("tree-mid", Restart::Permanent, || {
        Supervisor::builder()
            .name("tree-mid")
            .child("leaf", Restart::Permanent, idle)
    });
    let root = Supervisor::builder().name("tree-root").add_child(subtree);
    let start_line = line!() + 1;
    let root = root.start().unwrap();
    let leaf = wait_for_thread("corral-sup-tree-mid/leaf", |_| true);
    assert_eq!(leaf.owner_name.as_deref(), Some("tree-mid"));
    assert_eq!(
        (leaf.spawned_at.file(), leaf.spawned_at.line()),
        (file!(), line)
    );
    let mid = wait_for_thread("corral-sup-tree-root/tree-mid", |_| true);
    assert_eq!(mid.role, Role::SupervisorChild);
    assert_eq!(
        mid.spawned_at.line(),
        start_line,
        "the root's children: its start line"
    );
    assert!(root.stop().reason.is_stopped());
}

/// The stuck-child events the hook received.
fn stuck_events(rx: &Receiver<(String, Duration)>) -> Vec<(String, Duration)> {
    rx.try_iter().collect()
}

#[test]
fn the_watchdog_reports_a_child_once_and_only_past_its_threshold() {
    let _check = LeakCheck::new();
    let clock = ManualClock::new();
    let threshold = Duration::from_secs(3600);
    let (stuck_tx, stuck) = unbounded();
    let supervisor = Supervisor::builder()
        .name("watch-sup")
        .clock(clock.clone())
        .watchdog(threshold)
        .on_event(move |event| {
            if let EventKind::Stuck { child, running_for } = event.kind {
                stuck_tx.send((child.to_owned(), running_for)).unwrap();
            }
        })
        .child("hung", Restart::Permanent, idle)
        .start()
        .unwrap();
    // The monitor waits for its children (idle: never stuck).
    wait_for_thread("corral-sup-watch-sup", |t| t.activity == Activity::Idle);
    // First seen now; not stuck until a whole threshold has passed on the clock.
    assert!(supervisor.check_stuck().is_empty());
    clock.advance(threshold - Duration::from_secs(1));
    assert!(supervisor.check_stuck().is_empty());
    let hung = wait_for_thread("corral-sup-watch-sup/hung", |_| true);
    assert!(!hung.stuck, "not past the threshold yet");
    assert!(stuck_events(&stuck).is_empty());

    clock.advance(Duration::from_secs(1));
    // The report goes to whichever check runs first (this one, or the dump's).
    let found = supervisor.check_stuck();
    let hung = wait_for_thread("corral-sup-watch-sup/hung", |t| t.stuck);
    assert!(found.len() <= 1, "{found:?}");
    assert!(leak::dump().to_string().contains("[STUCK]"));
    let event = stuck.recv_timeout(PATIENCE).unwrap();
    assert_eq!(event, ("hung".to_owned(), threshold));
    assert!(hung.role == Role::SupervisorChild);

    // Once only: more checks later find nothing new.
    clock.advance(threshold);
    assert!(supervisor.check_stuck().is_empty());
    assert!(supervisor.stop().reason.is_stopped());
    assert!(stuck_events(&stuck).is_empty(), "reported twice");
}

#[test]
fn a_zero_watchdog_threshold_is_refused() {
    let err = Supervisor::builder()
        .watchdog(Duration::ZERO)
        .child("c", Restart::Permanent, idle)
        .start()
        .unwrap_err();
    assert_eq!(err.config().map(|c| c.field()), Some("watchdog"));
}

#[test]
fn without_a_watchdog_nothing_is_checked() {
    let _check = LeakCheck::new();
    let supervisor = Supervisor::builder()
        .child("c", Restart::Permanent, idle)
        .start()
        .unwrap();
    assert!(supervisor.check_stuck().is_empty());
    supervisor.stop();
}

/// Events (feature `tracing`, through a global subscriber: the supervisor emits them on
/// its monitor thread) and metrics (feature `metrics`, registered when built).
#[cfg(all(feature = "tracing", feature = "metrics"))]
mod telemetry {
    use std::sync::Arc;
    use std::time::Duration;

    use super::common::telemetry::{Events, Recorder};

    use corral::clock::ManualClock;
    use corral::leak::LeakCheck;
    use corral::resilience::ResilienceError;
    use corral::supervisor::{EventKind, Restart};
    use corral::{CircuitBreaker, Resilience, Supervisor};

    use super::{idle, PATIENCE};

    /// The process's subscriber (the monitor emits on its own thread).
    fn events() -> &'static Events {
        Events::global()
    }

    /// Polls until `count` events match.
    fn wait_for(events: &Events, needles: &[&str], count: usize) -> Vec<String> {
        events.wait_for(needles, count, PATIENCE)
    }

    #[test]
    fn exits_restarts_backoffs_and_the_stop_are_events_and_restarts_are_counted() {
        let _check = LeakCheck::new();
        let events = events();
        let recorder = Recorder::default();
        let clock = ManualClock::new();
        let advance = clock.clone();
        // Each run waits for the test to take it, so runs never race ahead.
        let (runs_tx, runs) = crossbeam_channel::bounded(0);
        let supervisor = metrics::with_local_recorder(&recorder, || {
            Supervisor::builder()
                .name("evt-sup")
                .clock(clock.clone())
                .backoff(Duration::from_secs(1), Duration::from_secs(8))
                .intensity(10, Duration::from_secs(3600))
                // Time passes past each backoff as soon as it is announced.
                .on_event(move |event| {
                    if let EventKind::BackingOff { delay, .. } = event.kind {
                        advance.advance(delay);
                    }
                })
                .child("flaky", Restart::Transient, move |_| {
                    match runs_tx.send(()) {
                        Ok(()) => Err("connection refused".to_owned()),
                        Err(_) => Ok(()), // the test is done with it
                    }
                })
                .child("steady", Restart::Permanent, idle)
                .start()
                .unwrap()
        });
        // Three failed runs, three restarts; the fourth run waits to be taken.
        for _ in 0..3 {
            runs.recv_timeout(PATIENCE).unwrap();
        }
        let who = "name=evt-sup";
        let restarts = wait_for(events, &[who, "supervisor restarted a child"], 3);
        assert!(restarts[0].starts_with("INFO corral"), "{}", restarts[0]);
        assert!(restarts[0].contains("child=flaky"), "{}", restarts[0]);
        assert!(restarts[0].contains("attempt=1"), "{}", restarts[0]);
        assert!(restarts[1].contains("attempt=2"), "{}", restarts[1]);
        assert!(restarts[0].contains("kind=Supervisor"), "{}", restarts[0]);
        let failed = wait_for(events, &[who, "supervised child exited", "exit=failed"], 3);
        assert!(failed[0].starts_with("WARN corral"), "{}", failed[0]);
        assert!(
            failed[0].contains("error=connection refused"),
            "{}",
            failed[0]
        );
        let backoff = events.matching(&[who, "supervisor backing off"]);
        assert_eq!(backoff.len(), 3, "{backoff:?}");
        assert!(backoff[0].starts_with("DEBUG corral"), "{}", backoff[0]);
        assert!(backoff[0].contains("delay_s=1"), "{}", backoff[0]);
        assert_eq!(
            recorder.gauge("corral_supervisor_children_running{kind=Supervisor,name=evt-sup}"),
            2.0
        );
        drop(runs); // the fourth run returns Ok: not restarted
        let finished = wait_for(events, &[who, "child=flaky", "exit=finished"], 1);
        assert!(finished[0].starts_with("INFO corral"), "{}", finished[0]);
        let report = supervisor.stop();
        assert_eq!(report.total_restarts(), 3);
        assert!(report.reason.is_stopped());
        let stopped = wait_for(events, &[who, "supervisor stopped"], 1);
        assert!(stopped[0].starts_with("INFO corral"), "{}", stopped[0]);
        assert!(stopped[0].contains("reason=stopped"), "{}", stopped[0]);
        let finished = events.matching(&[who, "child=steady", "exit=finished"]);
        assert_eq!(finished.len(), 1, "{finished:?}");
        assert!(finished[0].starts_with("INFO corral"), "{}", finished[0]);
        let labels = "{kind=Supervisor,name=evt-sup}";
        assert_eq!(
            recorder.counter(&format!("corral_supervisor_restarts_total{labels}")) as usize,
            report.total_restarts()
        );
        assert_eq!(
            recorder.counter(&format!("corral_supervisor_exits_total{labels}")),
            report.exits.len() as u64
        );
        assert_eq!(
            recorder.gauge(&format!("corral_supervisor_children_running{labels}")),
            0.0
        );
    }

    #[test]
    fn an_intensity_stop_is_an_error_event_naming_the_child() {
        let _check = LeakCheck::new();
        let events = events();
        let report = Supervisor::builder()
            .name("evt-intensity")
            .backoff(Duration::ZERO, Duration::ZERO)
            .intensity(1, Duration::from_secs(3600))
            .child("crashy", Restart::Permanent, |_| -> Result<(), String> {
                panic!("boom")
            })
            .start()
            .unwrap()
            .join();
        assert!(report.reason.is_intensity_exceeded());
        let stop = events.matching(&[
            "name=evt-intensity",
            "message=supervisor restart intensity exceeded",
        ]);
        assert_eq!(stop.len(), 1, "{stop:?}");
        assert!(stop[0].starts_with("ERROR corral"), "{}", stop[0]);
        assert!(stop[0].contains("child=crashy"), "{}", stop[0]);
        assert!(stop[0].contains("exit=panicked"), "{}", stop[0]);
        assert!(stop[0].contains("boom"), "{}", stop[0]);
        let panics = events.matching(&["name=evt-intensity", "exit=panicked"]);
        assert!(panics
            .iter()
            .all(|e| e.starts_with("WARN") || e.starts_with("ERROR")));
    }

    #[test]
    fn resilience_retries_are_debug_events_and_every_outcome_is_counted() {
        let events = events();
        let recorder = Recorder::default();
        let (stack, breaker) = metrics::with_local_recorder(&recorder, || {
            let breaker = Arc::new(
                CircuitBreaker::builder()
                    .consecutive_failures(3)
                    .open_for(Duration::from_secs(3600))
                    .clock(ManualClock::new())
                    .build()
                    .unwrap(),
            );
            let stack = Resilience::builder()
                .name("evt-stack")
                .breaker(breaker.clone())
                .retries(2)
                .backoff(Duration::ZERO, Duration::ZERO)
                .build()
                .unwrap();
            (stack, breaker)
        });
        let mut calls = 0;
        let first = stack.call(|_| {
            calls += 1;
            Err::<u32, _>("down")
        });
        assert_eq!(
            first,
            Err(ResilienceError::Inner {
                error: "down",
                attempts: 3
            })
        );
        // The breaker is open now: refused without running.
        let second = stack.call(|_| Ok::<u32, &str>(1));
        assert!(
            matches!(second, Err(ResilienceError::BreakerOpen { .. })),
            "{second:?}"
        );
        assert!(breaker.state() != corral::breaker::State::Closed);
        let retries = events.matching(&["name=evt-stack", "resilience retrying a call"]);
        assert_eq!(retries.len(), 2, "{retries:?}");
        assert!(retries[0].starts_with("DEBUG corral"), "{}", retries[0]);
        assert!(retries[0].contains("kind=Resilience"), "{}", retries[0]);
        assert!(retries[0].contains("attempt=2"), "{}", retries[0]);
        assert!(retries[1].contains("attempt=3"), "{}", retries[1]);
        let labels = "{kind=Resilience,name=evt-stack}";
        for (metric, value) in [
            ("retries", 2),
            ("failed", 1),
            ("breaker_open", 1),
            ("succeeded", 0),
            ("rate_limited", 0),
        ] {
            assert_eq!(
                recorder.counter(&format!("corral_resilience_{metric}_total{labels}")),
                value,
                "{metric}"
            );
        }
        let stats = stack.stats();
        assert_eq!((stats.retries, stats.failed, stats.breaker_open), (2, 1, 1));
    }
}
