//! The supervisor in the thread dump and under its watchdog, and (features `tracing`
//! and `metrics`) its events and metrics; the resilience stack's events and counters.
//! Time is a ManualClock everywhere it decides; threads are awaited by polling the
//! dump or by channels, never by sleeping.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver};

use corral::clock::ManualClock;
use corral::leak::{self, LeakCheck};
use corral::observe::{Activity, Role, ThreadInfo};
use corral::supervisor::{ChildState, EventKind, Restart};
use corral::{CancelToken, Supervisor};

/// "Should happen" bound: generous, the machine is loaded.
const PATIENCE: Duration = Duration::from_secs(30);

/// Polls the dump until the thread called `name` satisfies `cond`; returns it.
fn wait_for_thread(name: &str, cond: impl Fn(&ThreadInfo) -> bool) -> ThreadInfo {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let dump = leak::dump();
        if let Some(t) = dump.threads.iter().find(|t| t.name == name && cond(t)) {
            return t.clone();
        }
        assert!(Instant::now() < deadline, "timed out; last dump:\n{dump}");
        thread::yield_now();
    }
}

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
