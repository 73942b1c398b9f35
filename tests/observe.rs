//! The live thread dump and the stuck-task watchdog, through the public API: the state
//! each thread reports, the spawn site in this file, the watchdog's once-only report
//! past its threshold (on a ManualClock), names in `Debug`.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use corral::clock::ManualClock;
use corral::leak::{self, LeakCheck};
use corral::observe::{Activity, Blocked, Role, Stuck, Watchdog};
use corral::{CircuitBreaker, KeyedRateLimiter, RateLimiter, Semaphore};

mod common;

use common::dump::wait_for_thread;

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

#[test]
fn rate_limiters_count_admitted_and_refused_calls_and_show_their_names() {
    let clock = ManualClock::new();
    let limiter = RateLimiter::per_second(1)
        .burst(2)
        .name("upstream")
        .clock(clock.clone())
        .build()
        .unwrap();
    let admitted = (0..5).filter(|_| limiter.check().is_ok()).count();
    assert_eq!(admitted, 2);
    assert!(limiter.check_n(3).is_err()); // above the burst: refused too
    assert!(limiter.wait_timeout(Duration::ZERO).is_err()); // refused at once
    let stats = limiter.stats();
    assert_eq!((stats.admitted, stats.refused), (2, 5));
    assert!(format!("{limiter:?}").contains("\"upstream\""));

    let keyed = KeyedRateLimiter::per_second(1)
        .burst(1)
        .name("per-user")
        .clock(clock.clone())
        .build()
        .unwrap();
    assert!(keyed.check_key(&"alice").is_ok());
    assert!(keyed.check_key(&"alice").is_err());
    assert!(keyed.check_key(&"bob").is_ok());
    let stats = keyed.stats();
    assert_eq!((stats.admitted, stats.refused), (2, 1));
    assert_eq!(keyed.name(), Some("per-user"));
    assert!(format!("{keyed:?}").contains("\"per-user\""));
}

#[test]
fn counts_from_many_threads_add_up() {
    let _check = LeakCheck::new();
    let limiter = RateLimiter::per_second(1).burst(1_000).build().unwrap();
    corral::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..500 {
                    let _ = limiter.check();
                }
            });
        }
    });
    let stats = limiter.stats();
    assert_eq!(stats.admitted + stats.refused, 2_000);
    assert!(stats.admitted >= 1_000, "{stats:?}"); // the burst, at least
}

#[test]
fn counts_stay_exact_with_more_threads_than_stripes_of_their_own() {
    // More threads at once than there are per-thread stripes: the later ones count
    // into the shared stripes, beside the owners' plain increments.
    const THREADS: usize = 48;
    let _check = LeakCheck::new();
    let clock = ManualClock::new();
    let limiter = RateLimiter::per_second(1)
        .burst(1_000)
        .clock(clock.clone())
        .build()
        .unwrap();
    let all_started = std::sync::Barrier::new(THREADS);
    corral::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                all_started.wait();
                for _ in 0..50 {
                    let _ = limiter.check();
                }
            });
        }
    });
    let stats = limiter.stats();
    assert_eq!((stats.admitted, stats.refused), (1_000, 1_400), "{stats:?}");
}

#[test]
fn a_rate_limiter_waiter_shows_waiting_for_a_slot() {
    let _check = LeakCheck::new();
    let clock = ManualClock::new();
    let limiter = RateLimiter::per_second(1)
        .name("slow-api")
        .clock(clock.clone())
        .build()
        .unwrap();
    limiter.check().unwrap(); // the burst is spent: the next wait sleeps
    corral::scope(|s| {
        let waiter = s.spawn_named("obs-rate-waiter", || limiter.wait());
        let t = wait_for_thread("corral-obs-rate-waiter", |t| t.blocked.is_some());
        assert_eq!(
            t.blocked.map(|b| b.0),
            Some(Blocked::RateLimit {
                limiter: "slow-api".into()
            })
        );
        clock.advance(Duration::from_secs(1));
        waiter.join().unwrap();
    });
}

#[test]
fn names_show_in_debug() {
    let sem = Semaphore::builder(2).name("db").build().unwrap();
    assert_eq!(sem.name(), Some("db"));
    assert!(format!("{sem:?}").contains("name: Some(\"db\")"), "{sem:?}");
    assert_eq!(Semaphore::new(1).name(), None);
    let breaker = CircuitBreaker::builder().name("payments").build().unwrap();
    assert_eq!(breaker.name(), Some("payments"));
    assert!(
        format!("{breaker:?}").contains("\"payments\""),
        "{breaker:?}"
    );
    assert!(Semaphore::builder(usize::MAX).name("x").build().is_err());
}

#[test]
fn a_thread_corral_did_not_start_shows_while_it_waits_at_its_line() {
    let sem = Semaphore::builder(1).name("foreign-db").build().unwrap();
    let held = sem.acquire().unwrap();
    let line = Arc::new(Mutex::new(0));
    let sem = &sem;
    thread::scope(|s| {
        let at = line.clone();
        let waiter = thread::Builder::new()
            .name("obs-foreign".into())
            .spawn_scoped(s, move || {
                let sem = &sem;
                let acquire = || {
                    *at.lock().unwrap() = line!() + 1;
                    sem.acquire().map(drop)
                };
                acquire()
            })
            .unwrap();
        let t = wait_for_thread("obs-foreign", |t| t.blocked.is_some());
        assert_eq!(t.role, Role::Waiter);
        assert_eq!(
            t.blocked.map(|b| b.0),
            Some(Blocked::Permit {
                semaphore: "foreign-db".into()
            })
        );
        assert_eq!(t.spawned_at.file(), file!());
        assert_eq!(t.spawned_at.line(), *line.lock().unwrap());
        drop(held);
        waiter.join().unwrap().unwrap();
    });
    // Gone from the dump once its wait is over.
    assert!(!leak::dump().threads.iter().any(|t| t.name == "obs-foreign"));
}
