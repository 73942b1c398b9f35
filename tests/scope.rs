//! corral::scope behaviour through the public API.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use corral::cancel::CancelReason;
use corral::leak::LeakCheck;

const PROMPT: Duration = Duration::from_secs(10);

#[test]
fn threads_borrow_locals_and_the_value_of_f_is_returned() {
    let _check = LeakCheck::new();
    let mut totals = [0u64; 4];
    let data: Vec<u64> = (1..=100).collect();
    let returned = corral::scope(|s| {
        for (i, slot) in totals.iter_mut().enumerate() {
            let data = &data;
            s.spawn(move || *slot = data.iter().skip(i).step_by(4).sum());
        }
        "done"
    });
    assert_eq!(returned, "done");
    assert_eq!(totals.iter().sum::<u64>(), 5050);
}

#[test]
fn threads_are_named_with_the_corral_prefix() {
    let _check = LeakCheck::new();
    let (anon, named) = corral::scope(|s| {
        let a = s.spawn(|| std::thread::current().name().map(str::to_owned));
        let b = s.spawn_named("indexer", || {
            std::thread::current().name().map(str::to_owned)
        });
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(anon.unwrap().starts_with("corral-scope-"));
    assert_eq!(named.as_deref(), Some("corral-indexer"));
}

#[test]
fn a_panic_cancels_the_scope_token_and_is_reraised_with_its_payload() {
    let _check = LeakCheck::new();
    let sibling_saw = AtomicUsize::new(0);
    let caught = catch_unwind(AssertUnwindSafe(|| {
        corral::scope(|s| {
            let token = s.token().clone();
            let saw = &sibling_saw;
            s.spawn(move || {
                if token.wait_timeout(PROMPT) == Some(CancelReason::Cancelled) {
                    saw.fetch_add(1, Ordering::SeqCst);
                }
            });
            s.spawn(|| panic!("payload kept"));
        })
    }));
    let payload = caught.expect_err("scope re-raises the uncollected panic");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"payload kept"));
    // The sibling ran to its end before the re-raise: every thread was joined.
    assert_eq!(sibling_saw.load(Ordering::SeqCst), 1);
}

#[test]
fn try_scope_returns_the_first_uncollected_panic() {
    let _check = LeakCheck::new();
    let result = corral::try_scope(|s| {
        s.spawn(|| panic!("{}", String::from("formatted")));
        7
    });
    let panic = result.unwrap_err();
    assert_eq!(panic.message(), Some("formatted"));
    assert!(panic.thread_name().unwrap().starts_with("corral-scope-"));
    assert!(panic.to_string().contains("formatted"));
}

#[test]
fn a_panic_collected_by_join_is_not_reraised() {
    let _check = LeakCheck::new();
    let value = corral::scope(|s| {
        let handle = s.spawn(|| -> u32 { panic!("handled") });
        let panic = handle.join().unwrap_err();
        assert_eq!(panic.message(), Some("handled"));
        1
    });
    assert_eq!(value, 1);
}

#[test]
fn the_closures_own_panic_is_reraised_after_threads_join() {
    let _check = LeakCheck::new();
    let finished = AtomicUsize::new(0);
    let caught = catch_unwind(AssertUnwindSafe(|| {
        corral::scope(|s| {
            s.spawn(|| finished.fetch_add(1, Ordering::SeqCst));
            panic!("outer");
        })
    }));
    assert_eq!(caught.unwrap_err().downcast_ref::<&str>(), Some(&"outer"));
    assert_eq!(finished.load(Ordering::SeqCst), 1);
}

#[test]
fn nested_spawns_through_a_cloned_scope() {
    let _check = LeakCheck::new();
    let count = AtomicUsize::new(0);
    corral::scope(|s| {
        let inner = s.clone();
        let count = &count;
        s.spawn(move || {
            for _ in 0..3 {
                inner.spawn(move || count.fetch_add(1, Ordering::SeqCst));
            }
        });
    });
    assert_eq!(count.load(Ordering::SeqCst), 3);
}

#[test]
fn handles_report_finished_and_carry_the_thread() {
    let _check = LeakCheck::new();
    let (tx, rx) = crossbeam_channel::bounded::<()>(0);
    corral::scope(|s| {
        let handle = s.spawn(move || rx.recv().is_ok());
        assert!(!handle.is_finished());
        assert!(handle.thread().name().unwrap().starts_with("corral-"));
        tx.send(()).unwrap();
        assert!(handle.join().unwrap());
    });
}

#[test]
fn scope_types_are_send_and_sync_where_promised() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<corral::Scope<'static, 'static>>();
    assert_send_sync::<corral::Panic>();
}

/// A panic payload whose own `Drop` panics, dropped by whoever lets go of the caught
/// `Panic`, used to escape as a second panic (or abort) there.
#[test]
fn a_panic_payload_whose_drop_panics_is_dropped_inside_the_boundary() {
    struct Bomb;
    impl Drop for Bomb {
        fn drop(&mut self) {
            panic!("the payload's drop");
        }
    }
    let _check = corral::leak::LeakCheck::new();
    let caught = corral::try_scope(|s| {
        s.spawn(|| std::panic::panic_any(Bomb));
    })
    .unwrap_err();
    assert_eq!(caught.message(), None);
    drop(caught); // must not panic
    let result = corral::scope(|s| s.spawn(|| std::panic::panic_any(Bomb)).join());
    assert!(result.is_err());
}

/// A value whose `Drop` panics.
struct DropBomb;

impl Drop for DropBomb {
    fn drop(&mut self) {
        panic!("drop of the thread's value");
    }
}

#[test]
fn a_thread_value_whose_drop_panics_with_no_one_joining_is_a_panic_value_not_an_abort() {
    let _check = LeakCheck::new();
    let outcome = corral::try_scope(|s| {
        let handle = s.spawn(|| DropBomb);
        drop(handle);
    });
    let panic = outcome.expect_err("the drop's panic is reported");
    assert_eq!(panic.message(), Some("drop of the thread's value"));
}

#[test]
fn a_thread_value_whose_drop_panics_is_handed_to_the_joiner() {
    let _check = LeakCheck::new();
    let outcome = corral::try_scope(|s| {
        let value = s.spawn(|| DropBomb).join();
        let bomb = value.expect("the value itself is fine");
        std::mem::forget(bomb);
    });
    assert!(outcome.is_ok());
}

#[test]
fn a_nul_byte_in_a_thread_name_is_an_error_from_try_spawn_named() {
    let _check = LeakCheck::new();
    corral::scope(|s| {
        let err = s
            .try_spawn_named("bad\0name", || 1)
            .map(|_| ())
            .unwrap_err();
        assert_eq!(err.io_error().kind(), std::io::ErrorKind::InvalidInput);
        assert_eq!(err.thread_name(), "corral-bad\0name");
        assert_eq!(s.try_spawn_named("good", || 2).unwrap().join().unwrap(), 2);
    });
}

#[test]
fn a_nul_byte_in_spawn_named_is_escaped_not_a_std_panic() {
    let _check = LeakCheck::new();
    let name = corral::scope(|s| {
        s.spawn_named("bad\0name", || {
            std::thread::current().name().map(str::to_owned)
        })
        .join()
        .unwrap()
    });
    assert_eq!(name.as_deref(), Some("corral-bad\\0name"));
}

#[test]
fn a_panicking_on_cancel_callback_of_the_scope_token_is_a_panic_value() {
    let _check = LeakCheck::new();
    let outcome = corral::try_scope(|s| {
        let _guard = s
            .token()
            .on_cancel(|| panic!("callback on the scope token"));
        s.spawn(|| panic!("the thread failed"));
        // Keep the callback registered until the panicking thread has cancelled.
        s.token().wait();
    });
    // The thread's own panic comes first; the callback's is not an unrelated abort.
    assert_eq!(outcome.unwrap_err().message(), Some("the thread failed"));
}

/// Hands a thread its own handle (behind a boxed closure, so its type can name it).
fn spawn_self_joiner<'scope>(
    s: &corral::Scope<'scope, '_>,
    out: crossbeam_channel::Sender<Option<String>>,
) {
    let (tx, rx) = crossbeam_channel::bounded::<Box<dyn FnOnce() + Send + 'scope>>(1);
    let handle = s.spawn(move || (rx.recv().unwrap())());
    tx.send(Box::new(move || {
        let joined = handle.join();
        out.send(joined.err().and_then(|p| p.message().map(str::to_owned)))
            .unwrap();
    }))
    .unwrap();
}

#[test]
fn a_handle_joined_from_its_own_thread_is_an_error_not_a_deadlock_panic() {
    let _check = LeakCheck::new();
    let (out_tx, out_rx) = crossbeam_channel::bounded(1);
    let outcome = corral::try_scope(|s| spawn_self_joiner(s, out_tx));
    assert!(outcome.is_ok(), "{outcome:?}");
    let message = out_rx.recv_timeout(PROMPT).unwrap();
    assert_eq!(
        message.as_deref(),
        Some("corral: a scoped thread cannot join its own handle")
    );
}

#[test]
fn a_scope_value_whose_drop_panics_does_not_replace_the_reported_panic() {
    let _check = LeakCheck::new();
    let outcome = corral::try_scope(|s| {
        s.spawn(|| panic!("the thread failed"));
        DropBomb
    });
    let panic = outcome.map(std::mem::forget).unwrap_err();
    assert_eq!(panic.message(), Some("the thread failed"));
}
