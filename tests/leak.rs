//! leak::live_threads and LeakCheck (corral-thread mode) through the public API.
//! The OS-thread mode has its own test binary (tests/leak_os.rs) so that no parallel
//! test's threads are in view.

use std::time::Duration;

use corral::leak::{self, LeakCheck};
use crossbeam_channel::bounded;

#[test]
fn live_threads_lists_running_corral_threads_with_owner_and_name() {
    let _check = LeakCheck::new();
    let (release_tx, release_rx) = bounded::<()>(0);
    let (started_tx, started_rx) = bounded::<()>(0);
    corral::scope(|s| {
        s.spawn_named("leak-probe", move || {
            started_tx.send(()).unwrap();
            let _ = release_rx.recv();
        });
        started_rx.recv().unwrap();
        let live = leak::live_threads();
        let probe = live
            .iter()
            .find(|t| t.name == "corral-leak-probe")
            .expect("the running thread is listed");
        assert_eq!(probe.owner, "Scope");
        assert!(probe.to_string().contains("corral-leak-probe"));
        release_tx.send(()).unwrap();
    });
    assert!(leak::live_threads()
        .iter()
        .all(|t| t.name != "corral-leak-probe"));
}

#[test]
fn a_check_catches_a_thread_that_outlives_it_and_names_it() {
    let (release_tx, release_rx) = bounded::<()>(0);
    let (started_tx, started_rx) = bounded::<()>(0);
    corral::scope(|s| {
        let check = LeakCheck::builder()
            .grace(Duration::from_millis(50))
            .build();
        s.spawn_named("leaker", move || {
            started_tx.send(()).unwrap();
            let _ = release_rx.recv();
        });
        started_rx.recv().unwrap();
        let report = check.verify().expect_err("the thread is still running");
        assert_eq!(report.corral.len(), 1);
        assert_eq!(report.corral[0].name, "corral-leaker");
        assert!(report.to_string().contains("corral-leaker (owner Scope"));
        release_tx.send(()).unwrap();
    });
}

#[test]
fn the_drop_of_a_failing_check_panics_with_the_thread_names() {
    let (release_tx, release_rx) = bounded::<()>(0);
    let (started_tx, started_rx) = bounded::<()>(0);
    corral::scope(|s| {
        let check = LeakCheck::builder()
            .grace(Duration::from_millis(20))
            .build();
        s.spawn_named("dropcheck", move || {
            started_tx.send(()).unwrap();
            let _ = release_rx.recv();
        });
        started_rx.recv().unwrap();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(check)));
        let payload = caught.expect_err("drop panics");
        let message = payload.downcast_ref::<String>().unwrap();
        assert!(message.contains("corral-dropcheck"), "{message}");
        release_tx.send(()).unwrap();
    });
}

#[test]
fn a_check_passes_when_every_thread_is_joined_including_panicked_ones() {
    let check = LeakCheck::new();
    let _ = corral::try_scope(|s| {
        s.spawn(|| panic!("counted down even when it panics"));
        s.spawn(|| 1);
    });
    assert!(check.verify().is_ok());
}

#[test]
fn a_check_waits_within_its_grace_for_threads_that_are_ending() {
    let (release_tx, release_rx) = bounded::<()>(0);
    let outcome = corral::scope(|s| {
        let check = LeakCheck::builder().grace(Duration::from_secs(10)).build();
        s.spawn(move || {
            let _ = release_rx.recv();
        });
        // Released from another thread while the check is waiting.
        let releaser = std::thread::spawn(move || release_tx.send(()).unwrap());
        let outcome = check.verify();
        releaser.join().unwrap();
        outcome
    });
    assert!(outcome.is_ok());
}

#[test]
fn a_check_ignores_threads_started_by_other_tests_in_parallel() {
    // Another "test" (a plain thread with no LeakCheck) keeps a corral thread running
    // for the whole life of our check; our check must not see it.
    let (release_tx, release_rx) = bounded::<()>(0);
    let (started_tx, started_rx) = bounded::<()>(0);
    let other_test = std::thread::spawn(move || {
        corral::scope(|s| {
            s.spawn_named("other-test", move || {
                started_tx.send(()).unwrap();
                let _ = release_rx.recv();
            });
        })
    });
    started_rx.recv().unwrap();
    let check = LeakCheck::builder()
        .grace(Duration::from_millis(20))
        .build();
    corral::scope(|s| {
        s.spawn(|| ());
    });
    assert!(check.verify().is_ok());
    release_tx.send(()).unwrap();
    other_test.join().unwrap();
}

#[test]
fn threads_spawned_by_corral_threads_inherit_the_attribution() {
    let (release_tx, release_rx) = bounded::<()>(0);
    let (started_tx, started_rx) = bounded::<()>(0);
    corral::scope(|outer| {
        let check = LeakCheck::builder()
            .grace(Duration::from_millis(20))
            .build();
        let spawner = outer.clone();
        outer
            .spawn(move || {
                spawner.spawn_named("grandchild", move || {
                    started_tx.send(()).unwrap();
                    let _ = release_rx.recv();
                });
            })
            .join()
            .unwrap();
        started_rx.recv().unwrap();
        let report = check.verify().unwrap_err();
        assert_eq!(report.corral[0].name, "corral-grandchild");
        release_tx.send(()).unwrap();
    });
}

#[test]
fn a_grace_of_duration_max_does_not_overflow_and_passes_when_nothing_leaked() {
    let check = LeakCheck::builder().grace(Duration::MAX).build();
    corral::scope(|s| {
        s.spawn(|| ());
    });
    assert!(check.verify().is_ok());
}

#[test]
fn a_grace_of_duration_max_in_os_mode_does_not_overflow() {
    // Other tests' threads may come and go in this binary: only the arithmetic is
    // checked here (the OS mode has its own binary for leak detection).
    let check = LeakCheck::builder()
        .grace(Duration::MAX)
        .os_threads()
        .ignore_name_prefix("")
        .build();
    assert!(check.verify().is_ok());
}

#[test]
fn a_grace_of_zero_checks_once_without_waiting() {
    let (release_tx, release_rx) = bounded::<()>(0);
    let (started_tx, started_rx) = bounded::<()>(0);
    corral::scope(|s| {
        let check = LeakCheck::builder().grace(Duration::ZERO).build();
        s.spawn_named("zero-grace", move || {
            started_tx.send(()).unwrap();
            let _ = release_rx.recv();
        });
        started_rx.recv().unwrap();
        let report = check.verify().expect_err("still running, no grace");
        assert_eq!(report.corral[0].name, "corral-zero-grace");
        release_tx.send(()).unwrap();
    });
    let check = LeakCheck::builder().grace(Duration::ZERO).build();
    assert!(check.verify().is_ok());
}

#[test]
fn threads_started_during_the_grace_period_are_covered_and_waited_for() {
    use corral::{supervisor::Restart, Supervisor};
    let check = LeakCheck::builder().grace(Duration::from_secs(30)).build();
    let (release_tx, release_rx) = bounded::<()>(0);
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let r = runs.clone();
    // A transient child that fails once: the restart (a new corral thread, spawned by
    // the monitor, which the check covers) happens while the check may be waiting.
    let supervisor = Supervisor::builder()
        .backoff(Duration::ZERO, Duration::ZERO)
        .child("restarted", Restart::Transient, move |_| {
            let _ = release_rx.recv();
            if r.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                Err("first run fails")
            } else {
                Ok(())
            }
        })
        .start()
        .unwrap();
    let driver = std::thread::spawn(move || {
        release_tx.send(()).unwrap();
        release_tx.send(()).unwrap();
        supervisor.join()
    });
    assert!(check.verify().is_ok(), "the restarted child was waited for");
    let report = driver.join().unwrap();
    assert!(report.reason.is_all_exited(), "{:?}", report.reason);
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 2);
}
