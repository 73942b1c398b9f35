//! The worker pool in the live thread dump and under its watchdog, through the public
//! API: workers shown running a task with the line of this file that submitted it,
//! idle workers shown idle, a submitter blocked on the full queue, the watchdog's
//! once-only report past its threshold (on a ManualClock), the pool's name.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use corral::clock::ManualClock;
use corral::leak::{self, LeakCheck};
use corral::observe::{Activity, Blocked, Role, Stuck, ThreadInfo};
use corral::WorkerPool;

mod common;

use common::dump::{wait_for_thread, PATIENCE};

/// `leak::dump` runs every live watchdog: the watchdog tests, which check who found
/// the stuck task, take this lock against the tests that dump.
static DUMPS: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    DUMPS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Polls until `cond` holds.
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::yield_now();
    }
}

/// A stuck task and the thread whose check found it.
type Report = (Stuck, Option<String>);

fn running(t: &ThreadInfo) -> bool {
    matches!(t.activity, Activity::Running { .. })
}

#[test]
fn a_worker_runs_a_task_from_this_line_and_the_other_is_idle() {
    let _serial = serial();
    let _check = LeakCheck::new();
    let builder = WorkerPool::builder().workers(2).name("obs-render");
    let built_at = line!() + 1;
    let pool = builder.build().unwrap();
    let (release, hang) = mpsc::channel::<()>();
    let submitted_at = line!() + 1;
    let task = pool.submit(move || hang.recv()).unwrap();
    // Either worker may take it: wait until one runs it and the other has gone idle.
    wait_until("one worker running, one idle", || {
        let dump = leak::dump();
        let mine = || {
            dump.threads
                .iter()
                .filter(|t| t.owner_name.as_deref() == Some("obs-render"))
        };
        let submitted = |t: &&ThreadInfo| matches!(t.activity, Activity::Running { site: Some(site) } if site.line() == submitted_at);
        mine().filter(submitted).count() == 1
            && mine().filter(|t| t.activity == Activity::Idle).count() == 1
    });
    let dump = leak::dump();
    let mine: Vec<&ThreadInfo> = dump
        .threads
        .iter()
        .filter(|t| t.owner_name.as_deref() == Some("obs-render"))
        .collect();
    assert_eq!(mine.len(), 2, "{dump}");
    let runner = mine.iter().find(|t| running(t));
    let runner = runner.unwrap_or_else(|| panic!("no worker running:\n{dump}"));
    let other = mine.iter().find(|t| !running(t)).unwrap();
    assert_eq!(other.activity, Activity::Idle, "{dump}");
    let Activity::Running { site: Some(site) } = runner.activity else {
        panic!("{runner:?}")
    };
    assert_eq!((site.file(), site.line()), (file!(), submitted_at));
    assert_eq!(
        (runner.owner, runner.role),
        ("WorkerPool", Role::PoolWorker)
    );
    assert_eq!(
        (runner.spawned_at.file(), runner.spawned_at.line()),
        (file!(), built_at)
    );
    let text = dump.to_string();
    assert!(text.contains("WorkerPool \"obs-render\""), "{text}");
    assert!(
        text.contains(&format!("(from {}:{submitted_at}:", file!())),
        "{text}"
    );
    release.send(()).unwrap();
    task.join().unwrap().unwrap();
    pool.shutdown();
}

#[test]
fn idle_workers_show_idle_and_a_stopping_pool_leaves_the_dump() {
    let _serial = serial();
    let _check = LeakCheck::new();
    let pool = WorkerPool::builder()
        .workers(2)
        .name("obs-idle")
        .build()
        .unwrap();
    pool.submit(|| ()).unwrap().join().unwrap();
    for name in ["corral-obs-idle-0", "corral-obs-idle-1"] {
        let t = wait_for_thread(name, |t| t.activity == Activity::Idle);
        assert_eq!(t.role, Role::PoolWorker);
        assert!(t.blocked.is_none());
    }
    assert!(leak::dump().to_string().contains("idle for"));
    pool.shutdown();
    assert!(!leak::dump()
        .threads
        .iter()
        .any(|t| t.owner_name.as_deref() == Some("obs-idle")));
}

#[test]
fn a_submitter_waiting_for_room_shows_blocked_sending_to_the_pool() {
    let _serial = serial();
    let _check = LeakCheck::new();
    let pool = WorkerPool::builder()
        .workers(1)
        .queue_capacity(1)
        .name("obs-full")
        .build()
        .unwrap();
    let (release, hang) = mpsc::channel::<()>();
    let blocker = pool.submit(move || hang.recv()).unwrap();
    wait_until("the worker to take the blocker", || pool.stats().busy == 1);
    let queued = pool.submit(|| 1).unwrap(); // the one queue slot
    let line = Arc::new(Mutex::new(0));
    corral::scope(|s| {
        let (pool, at) = (&pool, line.clone());
        // A corral thread: its own slot says it is blocked.
        let corral_submitter = s.spawn_named("obs-pool-submitter", move || {
            *at.lock().unwrap() = line!() + 1;
            pool.submit(|| 2).map_err(|e| e.without_task())
        });
        let t = wait_for_thread("corral-obs-pool-submitter", |t| t.blocked.is_some());
        assert_eq!(
            t.blocked.map(|b| b.0),
            Some(Blocked::Sending {
                queue: "obs-full".into()
            })
        );
        // A bounded wait shows the same way, at its own line.
        let timed = s.spawn_named("obs-pool-timed", move || {
            pool.submit_timeout(|| 4, PATIENCE)
                .map_err(|e| e.without_task())
        });
        let t = wait_for_thread("corral-obs-pool-timed", |t| t.blocked.is_some());
        assert!(matches!(t.blocked, Some((Blocked::Sending { .. }, _))));
        // A thread corral did not start: shown as a waiter at the submit line.
        thread::scope(|std_scope| {
            let at = line.clone();
            let foreign = thread::Builder::new()
                .name("obs-pool-foreign".into())
                .spawn_scoped(std_scope, move || {
                    let submit = || {
                        *at.lock().unwrap() = line!() + 1;
                        pool.submit(|| 3).map_err(|e| e.without_task())
                    };
                    submit()
                })
                .unwrap();
            let t = wait_for_thread("obs-pool-foreign", |t| t.blocked.is_some());
            assert_eq!(t.role, Role::Waiter);
            assert_eq!(
                (t.spawned_at.file(), t.spawned_at.line()),
                (file!(), *line.lock().unwrap())
            );
            let text = leak::dump().to_string();
            assert!(
                text.contains("blocked sending to queue \"obs-full\""),
                "{text}"
            );
            release.send(()).unwrap();
            let handle = foreign.join().unwrap().unwrap();
            assert_eq!(handle.join().unwrap(), 3);
        });
        let handle = corral_submitter.join().unwrap().unwrap();
        assert_eq!(handle.join().unwrap(), 2);
        assert_eq!(timed.join().unwrap().unwrap().join().unwrap(), 4);
        // No longer blocked once the task went in.
        assert!(!leak::dump()
            .threads
            .iter()
            .any(|t| t.name == "obs-pool-foreign"));
    });
    assert_eq!(queued.join().unwrap(), 1);
    blocker.join().unwrap().unwrap();
    assert_eq!(pool.shutdown().completed, 5);
}

#[test]
fn the_watchdog_reports_a_hung_task_once_and_only_past_its_threshold() {
    let _serial = serial();
    let _check = LeakCheck::new();
    let clock = ManualClock::new();
    let reports: Arc<Mutex<Vec<Report>>> = Arc::default();
    let seen = reports.clone();
    let pool = WorkerPool::builder()
        .workers(2)
        .name("obs-watched")
        .watchdog(Duration::from_secs(10), move |s| {
            let by = thread::current().name().map(str::to_owned);
            seen.lock().unwrap().push((s.clone(), by))
        })
        .clock(clock.clone())
        .build()
        .unwrap();
    let (release, hang) = mpsc::channel::<()>();
    let submitted_at = line!() + 1;
    let hung = pool.submit(move || hang.recv()).unwrap();
    wait_until("the worker to take the task", || pool.stats().busy == 1);
    assert!(pool.check_stuck().is_empty(), "first seen now");
    clock.advance(Duration::from_secs(9));
    assert!(pool.check_stuck().is_empty(), "not yet past the threshold");
    // Quick tasks on the other worker: it checks before it goes idle, still too
    // early.
    for _ in 0..3 {
        pool.submit(|| ()).unwrap().join().unwrap();
    }
    assert!(reports.lock().unwrap().is_empty());
    clock.advance(Duration::from_secs(1));
    // The other worker finds it on its way to idle (no timer thread, no call of ours).
    pool.submit(|| ()).unwrap().join().unwrap();
    wait_until("the idle worker's check", || {
        !reports.lock().unwrap().is_empty()
    });
    let (stuck, found_by) = reports.lock().unwrap()[0].clone();
    let found_by = found_by.unwrap_or_default();
    assert!(
        found_by.starts_with("corral-obs-watched-") && found_by != stuck.thread,
        "found by {found_by}, stuck on {}",
        stuck.thread
    );
    assert_eq!(
        (stuck.owner, stuck.owner_name.as_deref()),
        ("WorkerPool", Some("obs-watched"))
    );
    let site = stuck.site.expect("the submit line");
    assert_eq!((site.file(), site.line()), (file!(), submitted_at));
    assert!(stuck.running_for >= Duration::from_secs(10));
    assert!(stuck
        .to_string()
        .contains(&format!("{}:{submitted_at}", file!())));
    // Once only: neither on demand, nor from the dump, nor from another idle worker.
    assert!(pool.check_stuck().is_empty());
    clock.advance(Duration::from_secs(60));
    assert!(pool.check_stuck().is_empty());
    let dump = leak::dump();
    let marked = dump
        .threads
        .iter()
        .find(|t| t.name == stuck.thread)
        .unwrap();
    assert!(marked.stuck, "{dump}");
    assert!(dump.to_string().contains("[STUCK]"));
    pool.submit(|| ()).unwrap().join().unwrap();
    assert_eq!(reports.lock().unwrap().len(), 1);
    release.send(()).unwrap();
    hung.join().unwrap().unwrap();
    pool.shutdown();
    assert_eq!(reports.lock().unwrap().len(), 1);
}

#[test]
fn a_blocked_submit_runs_the_watchdog_before_it_waits() {
    let _serial = serial();
    let _check = LeakCheck::new();
    let clock = ManualClock::new();
    let found = Arc::new(AtomicUsize::new(0));
    let counter = found.clone();
    let found_by = Arc::new(Mutex::new(None));
    let by = found_by.clone();
    let pool = WorkerPool::builder()
        .workers(1)
        .queue_capacity(1)
        .watchdog(Duration::from_secs(1), move |_| {
            *by.lock().unwrap() = thread::current().name().map(str::to_owned);
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .clock(clock.clone())
        .build()
        .unwrap();
    let (release, hang) = mpsc::channel::<()>();
    let hung = pool.submit(move || hang.recv()).unwrap();
    wait_until("the worker to take the task", || pool.stats().busy == 1);
    assert!(pool.check_stuck().is_empty());
    clock.advance(Duration::from_secs(1));
    let queued = pool.submit(|| ()).unwrap();
    corral::scope(|s| {
        let pool = &pool;
        let waiter = s.spawn_named("obs-blocked-checker", move || {
            pool.submit(|| ()).map_err(|e| e.without_task())
        });
        wait_until("the blocked submit's check", || {
            found.load(Ordering::SeqCst) == 1
        });
        release.send(()).unwrap();
        waiter.join().unwrap().unwrap().join().unwrap();
    });
    queued.join().unwrap();
    hung.join().unwrap().unwrap();
    assert_eq!(found.load(Ordering::SeqCst), 1);
    assert_eq!(
        found_by.lock().unwrap().as_deref(),
        Some("corral-obs-blocked-checker")
    );
}

#[test]
fn the_name_is_in_threads_debug_and_checked_like_a_thread_name() {
    let _serial = serial();
    let _check = LeakCheck::new();
    let pool = WorkerPool::builder()
        .workers(1)
        .name("obs-named")
        .build()
        .unwrap();
    assert_eq!(pool.name(), Some("obs-named"));
    assert!(format!("{pool:?}").contains("\"obs-named\""));
    let name = pool.submit(|| thread::current().name().map(str::to_owned));
    assert_eq!(
        name.unwrap().join().unwrap().as_deref(),
        Some("corral-obs-named-0")
    );
    pool.shutdown();

    // An explicit thread name wins for threads; the pool keeps its name.
    let pool = WorkerPool::builder()
        .workers(1)
        .name("obs-api")
        .thread_name("obs-api-worker")
        .build()
        .unwrap();
    let name = pool.submit(|| thread::current().name().map(str::to_owned));
    assert_eq!(
        name.unwrap().join().unwrap().as_deref(),
        Some("corral-obs-api-worker-0")
    );
    assert_eq!(pool.name(), Some("obs-api"));
    pool.shutdown();

    let err = WorkerPool::builder().name("bad\0name").build().unwrap_err();
    assert_eq!(err.config().map(|c| c.field()), Some("name"));
    // Unnamed: no name, threads `corral-pool-N`, and no watchdog to run.
    let pool = WorkerPool::builder().workers(1).build().unwrap();
    assert_eq!(pool.name(), None);
    assert!(pool.check_stuck().is_empty());
    pool.shutdown();
}

#[test]
fn a_scoped_pool_shows_as_its_own_kind_with_the_submit_line() {
    let _serial = serial();
    let _check = LeakCheck::new();
    let (release, hang) = mpsc::channel::<()>();
    let hang = Mutex::new(hang);
    corral::scope(|s| {
        let builder = WorkerPool::builder().workers(1).name("obs-scoped");
        let pool = builder.build_scoped(s).unwrap();
        let submitted_at = line!() + 1;
        let task = pool.submit(|| hang.lock().unwrap().recv()).unwrap();
        let t = wait_for_thread(
            "corral-obs-scoped-0",
            |t| matches!(t.activity, Activity::Running { site: Some(site) } if site.line() == submitted_at),
        );
        assert_eq!((t.owner, t.role), ("ScopedPool", Role::PoolWorker));
        assert_eq!(t.owner_name.as_deref(), Some("obs-scoped"));
        release.send(()).unwrap();
        task.join().unwrap().unwrap();
    });
}
