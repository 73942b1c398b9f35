//! The live thread dump and the stuck-task watchdog, through the public API: the state
//! each thread reports, the spawn site in this file, the watchdog's once-only report
//! past its threshold (on a ManualClock), names in `Debug`.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use corral::clock::ManualClock;
use corral::leak::{self, LeakCheck};
use corral::observe::{Activity, Blocked, Role, Stuck, ThreadInfo, Watchdog};
use corral::Semaphore;

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

#[test]
fn a_semaphore_waiter_shows_waiting_for_a_permit_with_its_spawn_site() {
    let _check = LeakCheck::new();
    let sem = Semaphore::builder(1).name("db-conns").build().unwrap();
    let held = sem.acquire().unwrap();
    corral::scope(|s| {
        let line = line!() + 1;
        let waiter = s.spawn_named("obs-permit-waiter", || sem.acquire().map(drop));
        let t = wait_for_thread("corral-obs-permit-waiter", |t| t.blocked.is_some());
        assert_eq!(
            t.blocked.as_ref().map(|b| &b.0),
            Some(&Blocked::Permit {
                semaphore: "db-conns".into()
            })
        );
        assert_eq!(t.role, Role::ScopeThread);
        assert_eq!(t.owner, "Scope");
        assert_eq!(t.spawned_at.file(), file!());
        assert_eq!(t.spawned_at.line(), line);
        assert!(matches!(t.activity, Activity::Running { .. }));
        let text = leak::dump().to_string();
        assert!(
            text.contains("waiting for a permit of \"db-conns\""),
            "{text}"
        );
        drop(held);
        waiter.join().unwrap().unwrap();
        // Once it has the permit it is no longer shown as blocked (it has exited).
        assert!(!leak::dump()
            .threads
            .iter()
            .any(|t| t.name == "corral-obs-permit-waiter"));
    });
}

#[test]
fn an_unnamed_semaphore_is_called_semaphore_and_the_wait_ends_with_the_permit() {
    let _check = LeakCheck::new();
    let sem = Semaphore::new(1);
    let held = sem.acquire().unwrap();
    let (tx, rx) = mpsc::channel::<()>();
    corral::scope(|s| {
        let tx = tx; // dropped if an assertion fails, so the thread ends
        let sem = &sem;
        let waiter = s.spawn_named("obs-anon-waiter", move || {
            let permit = sem.acquire().unwrap();
            rx.recv().unwrap(); // hold the permit, running
            drop(permit);
        });
        let t = wait_for_thread("corral-obs-anon-waiter", |t| t.blocked.is_some());
        assert_eq!(
            t.blocked.map(|b| b.0),
            Some(Blocked::Permit {
                semaphore: "semaphore".into()
            })
        );
        drop(held);
        let t = wait_for_thread("corral-obs-anon-waiter", |t| t.blocked.is_none());
        assert!(matches!(t.activity, Activity::Running { .. }));
        tx.send(()).unwrap();
        waiter.join().unwrap();
    });
}

#[test]
fn a_scope_thread_shows_running_since_its_spawn_at_this_line() {
    let _check = LeakCheck::new();
    let (tx, rx) = mpsc::channel::<()>();
    corral::scope(|s| {
        let tx = tx; // dropped if an assertion fails, so the thread ends
        let before = Instant::now();
        let line = line!() + 1;
        let worker = s.spawn_named("obs-runner", move || rx.recv());
        let t = wait_for_thread("corral-obs-runner", |_| true);
        let Activity::Running { site: Some(site) } = t.activity else {
            panic!("{t:?}")
        };
        assert_eq!((site.file(), site.line()), (file!(), line));
        assert!(t.since >= before, "since the spawn");
        assert!(t.blocked.is_none() && !t.stuck);
        let text = leak::dump().to_string();
        assert!(text.contains("corral-obs-runner"), "{text}");
        assert!(text.contains(&format!("{}:{line}", file!())), "{text}");
        tx.send(()).unwrap();
        worker.join().unwrap().unwrap();
    });
}

#[test]
fn the_watchdog_reports_once_and_only_past_its_threshold() {
    let _check = LeakCheck::new();
    let clock = ManualClock::new();
    let reported: Arc<Mutex<Vec<Stuck>>> = Arc::default();
    let sink = reported.clone();
    let watchdog = Watchdog::builder(Duration::from_secs(10))
        .clock(clock.clone())
        .on_stuck(move |s| sink.lock().unwrap().push(s.clone()))
        .build();
    // Any dump (another test's, too) runs the watchdog: count what the callback got.
    let mine = |_: Vec<Stuck>| -> Vec<Stuck> {
        let all = reported.lock().unwrap();
        all.iter()
            .filter(|s| s.thread == "corral-obs-hung")
            .cloned()
            .collect()
    };
    let (tx, rx) = mpsc::channel::<()>();
    corral::scope(|s| {
        let tx = tx; // dropped if an assertion fails, so the thread ends
        let line = line!() + 1;
        let hung = s.spawn_named("obs-hung", move || rx.recv());
        wait_for_thread("corral-obs-hung", |_| true);
        assert!(mine(watchdog.check()).is_empty(), "first seen now");
        clock.advance(Duration::from_millis(9_999));
        assert!(
            mine(watchdog.check()).is_empty(),
            "just under the threshold"
        );
        clock.advance(Duration::from_millis(1));
        let found = mine(watchdog.check());
        assert_eq!(found.len(), 1, "at the threshold");
        assert_eq!(found[0].running_for, Duration::from_secs(10));
        let site = found[0].site.expect("a site");
        assert_eq!((site.file(), site.line()), (file!(), line));
        assert!(found[0].to_string().contains("corral-obs-hung"));
        // Marked in the dump, and never reported again.
        let t = wait_for_thread("corral-obs-hung", |t| t.stuck);
        assert!(leak::dump().to_string().contains("[STUCK]"));
        clock.advance(Duration::from_secs(60));
        assert_eq!(mine(watchdog.check()).len(), 1, "reported once");
        assert!(t.stuck);
        tx.send(()).unwrap();
        hung.join().unwrap().unwrap();
    });
    let calls = reported.lock().unwrap();
    assert_eq!(
        calls
            .iter()
            .filter(|s| s.thread == "corral-obs-hung")
            .count(),
        1
    );
}

#[test]
fn a_panicking_watchdog_callback_is_contained() {
    let _check = LeakCheck::new();
    let clock = ManualClock::new();
    let watchdog = Watchdog::builder(Duration::from_secs(1))
        .clock(clock.clone())
        .on_stuck(|s| {
            if s.thread == "corral-obs-hung-panicky" {
                panic!("callback bug")
            }
        })
        .build();
    let (tx, rx) = mpsc::channel::<()>();
    corral::scope(|s| {
        let tx = tx; // dropped if an assertion fails, so the thread ends
        let hung = s.spawn_named("obs-hung-panicky", move || rx.recv());
        wait_for_thread("corral-obs-hung-panicky", |_| true);
        watchdog.check();
        clock.advance(Duration::from_secs(1));
        watchdog.check(); // the callback's panic stays inside
        wait_for_thread("corral-obs-hung-panicky", |t| t.stuck);
        tx.send(()).unwrap();
        hung.join().unwrap().unwrap();
    });
}

#[test]
fn the_dump_groups_threads_by_owner() {
    let _check = LeakCheck::new();
    let sem = Semaphore::builder(1).name("grouped").build().unwrap();
    let held = sem.acquire_many(1).unwrap();
    corral::scope(|s| {
        let a = s.spawn_named("obs-group-a", || sem.acquire().map(drop));
        let b = s.spawn_named("obs-group-b", || sem.acquire().map(drop));
        wait_for_thread("corral-obs-group-a", |t| t.blocked.is_some());
        wait_for_thread("corral-obs-group-b", |t| t.blocked.is_some());
        let text = leak::dump().to_string();
        assert!(text.starts_with("corral thread dump:"), "{text}");
        assert!(text.contains("scope thread"), "{text}");
        drop(held);
        a.join().unwrap().unwrap();
        b.join().unwrap().unwrap();
    });
}
