//! CancelToken behaviour through the public API.

use std::time::{Duration, Instant};

use corral::leak::LeakCheck;
use corral::{cancel::CancelReason, CancelToken};
use crossbeam_channel::{bounded, select};

/// Generous bound for "should happen promptly" under heavy machine load.
const PROMPT: Duration = Duration::from_secs(10);

#[test]
fn parent_cancel_reaches_every_descendant_across_three_levels() {
    let root = CancelToken::new();
    let level1: Vec<_> = (0..10).map(|_| root.child()).collect();
    let level2: Vec<_> = level1
        .iter()
        .flat_map(|t| (0..10).map(move |_| t.child()))
        .collect();
    let level3: Vec<_> = level2
        .iter()
        .flat_map(|t| (0..10).map(move |_| t.child()))
        .collect();
    assert_eq!(level1.len() + level2.len() + level3.len(), 1110);
    assert!(level3.iter().all(|t| !t.is_cancelled()));
    root.cancel();
    for t in level1.iter().chain(&level2).chain(&level3) {
        assert_eq!(t.reason(), Some(CancelReason::Cancelled));
    }
}

#[test]
fn child_cancel_never_reaches_parent_or_siblings() {
    let root = CancelToken::new();
    let a = root.child();
    let b = root.child();
    let a1 = a.child();
    a.cancel();
    assert!(a1.is_cancelled());
    assert!(!root.is_cancelled());
    assert!(!b.is_cancelled());
}

#[test]
fn child_of_cancelled_token_starts_cancelled() {
    let root = CancelToken::new();
    root.cancel();
    assert!(root.child().is_cancelled());
    assert_eq!(root.registered(), 0);
}

#[test]
fn cancel_is_idempotent_and_the_first_reason_sticks() {
    let token = CancelToken::new();
    token.cancel();
    token.cancel();
    assert_eq!(token.reason(), Some(CancelReason::Cancelled));
}

#[test]
fn passed_deadline_reports_deadline_exceeded_without_any_thread() {
    let _check = LeakCheck::new();
    let token = CancelToken::with_deadline(Instant::now());
    assert_eq!(token.reason(), Some(CancelReason::DeadlineExceeded));
    assert_eq!(token.remaining(), Some(Duration::ZERO));
    assert_eq!(
        corral::leak::live_threads().len(),
        corral::leak::live_count()
    );
}

#[test]
fn future_deadline_is_not_cancelled_until_it_passes() {
    let token = CancelToken::with_timeout(Duration::from_millis(20));
    let start = Instant::now();
    // The deadline alone ends the wait: nobody calls cancel().
    assert_eq!(token.wait(), CancelReason::DeadlineExceeded);
    assert!(start.elapsed() >= Duration::from_millis(20));
    assert!(token.is_cancelled());
}

#[test]
fn children_inherit_the_earlier_deadline() {
    let soon = Instant::now() + Duration::from_secs(60);
    let parent = CancelToken::with_deadline(soon);
    let child = parent.child_with_timeout(Duration::from_secs(3600));
    assert_eq!(child.deadline(), Some(soon));
    let sooner = soon - Duration::from_secs(30);
    assert_eq!(parent.child_with_deadline(sooner).deadline(), Some(sooner));
    assert_eq!(CancelToken::new().child().deadline(), None);
}

#[test]
fn parent_deadline_cancels_children_with_deadline_exceeded() {
    let parent = CancelToken::with_deadline(Instant::now());
    let child = parent.child();
    assert_eq!(child.reason(), Some(CancelReason::DeadlineExceeded));
}

#[test]
fn wait_returns_promptly_when_another_thread_cancels() {
    let _check = LeakCheck::new();
    let token = CancelToken::new();
    let (ready_tx, ready_rx) = bounded(0);
    corral::scope(|s| {
        let waiter = s.spawn(|| {
            ready_tx.send(()).unwrap();
            token.wait_timeout(PROMPT)
        });
        ready_rx.recv().unwrap();
        token.cancel();
        assert_eq!(waiter.join().unwrap(), Some(CancelReason::Cancelled));
    });
}

#[test]
fn wait_timeout_returns_none_when_nothing_happens() {
    let token = CancelToken::new();
    assert_eq!(token.wait_timeout(Duration::from_millis(5)), None);
    assert_eq!(
        token.wait_deadline(Instant::now() + Duration::from_millis(5)),
        None
    );
    assert!(!token.is_cancelled());
}

#[test]
fn a_grandchild_waiter_wakes_when_the_root_is_cancelled() {
    let _check = LeakCheck::new();
    let root = CancelToken::new();
    let grandchild = root.child().child();
    corral::scope(|s| {
        let waiter = s.spawn(|| grandchild.wait_timeout(PROMPT));
        root.cancel();
        assert_eq!(waiter.join().unwrap(), Some(CancelReason::Cancelled));
    });
}

#[test]
fn done_receiver_fires_inside_select_next_to_other_channels() {
    let _check = LeakCheck::new();
    let token = CancelToken::new();
    let (_jobs_tx, jobs) = bounded::<u32>(4);
    corral::scope(|s| {
        let waiter = s.spawn(|| {
            select! {
                recv(jobs) -> job => panic!("no job was sent, got {job:?}"),
                recv(token.done()) -> _ => token.reason(),
                default(PROMPT) => None,
            }
        });
        token.cancel();
        assert_eq!(waiter.join().unwrap(), Some(CancelReason::Cancelled));
    });
    // After the cancel, a fresh receiver is ready at once.
    assert!(token.done().recv().is_err());
}

#[test]
fn expired_receiver_delivers_at_the_deadline() {
    let token = CancelToken::with_timeout(Duration::from_millis(10));
    select! {
        recv(token.done()) -> _ => panic!("nobody cancelled"),
        recv(token.expired()) -> at => assert!(at.is_ok()),
        default(PROMPT) => panic!("deadline never delivered"),
    }
    assert_eq!(token.reason(), Some(CancelReason::DeadlineExceeded));
    assert!(CancelToken::new()
        .expired()
        .recv_timeout(Duration::from_millis(1))
        .is_err());
}

#[test]
fn a_million_dropped_children_leave_no_registration_behind() {
    let parent = CancelToken::new();
    let kept: Vec<_> = (0..10).map(|_| parent.child()).collect();
    for _ in 0..1_000_000 {
        let child = parent.child();
        drop(child.child());
    }
    assert_eq!(parent.registered(), 10);
    drop(kept);
    assert_eq!(parent.registered(), 0);
}

#[test]
fn dropping_an_intermediate_token_keeps_descendants_connected() {
    let root = CancelToken::new();
    let grandchild = root.child().child();
    assert_eq!(
        root.registered(),
        1,
        "the middle stays registered for its child"
    );
    root.cancel();
    assert!(grandchild.is_cancelled());
}

#[test]
fn on_cancel_runs_once_and_unregisters_on_drop() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let token = CancelToken::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let kept = token.on_cancel(move || {
        r.fetch_add(1, Ordering::SeqCst);
    });
    let r = runs.clone();
    drop(token.on_cancel(move || {
        r.fetch_add(100, Ordering::SeqCst);
    }));
    assert_eq!(token.registered(), 1);
    token.cancel();
    token.cancel();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    drop(kept);
    // Registering on a cancelled token runs the callback at once.
    let r = runs.clone();
    let _late = token.on_cancel(move || {
        r.fetch_add(10, Ordering::SeqCst);
    });
    assert_eq!(runs.load(Ordering::SeqCst), 11);
}

#[test]
fn cancel_on_drop_cancels_on_early_return_unless_disarmed() {
    fn work(token: &CancelToken, fail: bool) -> Result<(), &'static str> {
        let _guard = token.cancel_on_drop();
        if fail {
            return Err("early");
        }
        _guard.disarm();
        Ok(())
    }
    let a = CancelToken::new();
    assert!(work(&a, true).is_err());
    assert!(a.is_cancelled());
    let b = CancelToken::new();
    assert!(work(&b, false).is_ok());
    assert!(!b.is_cancelled());
}

#[test]
fn concurrent_cancel_and_child_creation_never_leaves_a_child_uncancelled() {
    let _check = LeakCheck::new();
    for _ in 0..200 {
        let root = CancelToken::new();
        let children = corral::scope(|s| {
            let makers: Vec<_> = (0..2)
                .map(|_| s.spawn(|| (0..50).map(|_| root.child()).collect::<Vec<_>>()))
                .collect();
            root.cancel();
            makers
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        });
        assert!(children.iter().all(CancelToken::is_cancelled));
    }
}

#[test]
fn tokens_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CancelToken>();
    assert_send_sync::<corral::cancel::OnCancel>();
}

/// Runs `f` on a thread with a small, known stack, so a drop that recursed once per
/// level would overflow it (and abort the test binary) long before the chain ends.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

#[test]
fn dropping_a_million_deep_chain_of_children_does_not_overflow_the_stack() {
    on_small_stack(|| {
        let root = CancelToken::new();
        let mut leaf = root.child();
        for _ in 0..1_000_000 {
            leaf = leaf.child();
        }
        drop(leaf);
        assert_eq!(root.registered(), 0);
    });
}

#[test]
fn dropping_a_deep_chain_whose_root_is_gone_too_does_not_overflow_the_stack() {
    on_small_stack(|| {
        let mut leaf = CancelToken::new();
        for _ in 0..1_000_000 {
            leaf = leaf.child();
        }
        let deep = leaf.clone();
        drop(leaf);
        assert!(!deep.is_cancelled());
        drop(deep);
    });
}

#[test]
fn cancelling_a_deep_chain_reaches_the_leaf_on_a_small_stack() {
    on_small_stack(|| {
        let root = CancelToken::new();
        let mut leaf = root.child();
        for _ in 0..100_000 {
            leaf = leaf.child();
        }
        root.cancel();
        assert_eq!(leaf.reason(), Some(CancelReason::Cancelled));
    });
}

#[test]
fn a_panicking_callback_does_not_stop_the_others_and_is_re_raised_by_cancel() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let token = CancelToken::new();
    let child = token.child();
    let ran = Arc::new(AtomicUsize::new(0));
    let r1 = ran.clone();
    let r2 = ran.clone();
    let _a = token.on_cancel(move || {
        r1.fetch_add(1, Ordering::SeqCst);
    });
    let _b = token.on_cancel(|| panic!("callback failed"));
    let _c = child.on_cancel(move || {
        r2.fetch_add(1, Ordering::SeqCst);
    });
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| token.cancel()));
    let payload = caught.expect_err("the callback's panic is re-raised");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"callback failed"));
    assert_eq!(ran.load(Ordering::SeqCst), 2);
    assert!(child.is_cancelled());
}

#[test]
fn a_callback_may_cancel_register_on_and_drop_its_own_token() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::sync::Mutex;
    let token = CancelToken::new();
    let ran = Arc::new(AtomicUsize::new(0));
    let own = Arc::new(Mutex::new(Some(token.clone())));
    let (t, r, o) = (token.clone(), ran.clone(), own.clone());
    let _guard = token.on_cancel(move || {
        t.cancel();
        let r2 = r.clone();
        let again = t.on_cancel(move || {
            r2.fetch_add(1, Ordering::SeqCst);
        });
        drop(again);
        let _child = t.child();
        drop(o.lock().unwrap().take());
        drop(t);
        r.fetch_add(1, Ordering::SeqCst);
    });
    token.cancel();
    assert_eq!(ran.load(Ordering::SeqCst), 2);
    assert!(own.lock().unwrap().is_none());
}

#[test]
fn dropping_a_registration_whose_callback_re_enters_the_token_on_drop_does_not_deadlock() {
    struct Reenter(CancelToken);
    impl Drop for Reenter {
        fn drop(&mut self) {
            // Takes the token's lock: must not be called with it held.
            let _ = self.0.registered();
            let _ = self.0.child();
        }
    }
    let token = CancelToken::new();
    let probe = Reenter(token.clone());
    let guard = token.on_cancel(move || drop(probe));
    drop(guard);
    assert_eq!(token.registered(), 0);
}

#[test]
fn a_registration_whose_callback_panics_on_drop_unregisters_and_reports_the_panic() {
    struct Bomb;
    impl Drop for Bomb {
        fn drop(&mut self) {
            panic!("callback drop");
        }
    }
    let token = CancelToken::new();
    let bomb = Bomb;
    let guard = token.on_cancel(move || drop(bomb));
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(guard)));
    assert!(caught.is_err());
    assert_eq!(token.registered(), 0);
    // The token still works.
    token.cancel();
    assert!(token.is_cancelled());
}

#[test]
fn cancel_on_drop_while_unwinding_with_a_panicking_callback_does_not_abort() {
    let token = CancelToken::new();
    let _cb = token.on_cancel(|| panic!("callback failed"));
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _guard = token.cancel_on_drop();
        panic!("the work failed");
    }));
    let payload = caught.expect_err("the work's panic comes through");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"the work failed"));
    assert!(token.is_cancelled());
}

#[test]
fn cancel_racing_child_creation_and_drop_leaves_no_child_uncancelled_or_registered() {
    let _check = LeakCheck::new();
    for _ in 0..200 {
        let root = CancelToken::new();
        let barrier = std::sync::Barrier::new(3);
        corral::scope(|s| {
            let makers: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        let mut kept = Vec::new();
                        for i in 0..50 {
                            let child = root.child();
                            if i % 2 == 0 {
                                kept.push(child);
                            }
                        }
                        kept
                    })
                })
                .collect();
            barrier.wait();
            root.cancel();
            for maker in makers {
                for child in maker.join().unwrap() {
                    assert!(child.is_cancelled());
                }
            }
        });
        assert_eq!(root.registered(), 0);
    }
}

/// `cancel()` returned while a descendant still read as not cancelled when another
/// thread was cancelling an ancestor at the same moment: it skipped a node the other
/// thread had flagged but whose subtree it had not reached yet.
#[test]
fn cancel_racing_an_ancestor_cancel_returns_only_once_every_descendant_is_cancelled() {
    let _check = LeakCheck::new();
    for round in 0..2_000 {
        let parent = CancelToken::new();
        let root = parent.child();
        let mut tip = root.clone();
        let mut chain = Vec::new();
        for _ in 0..50 {
            tip = tip.child();
            chain.push(tip.clone());
        }
        let both = std::sync::Barrier::new(2);
        corral::scope(|s| {
            s.spawn(|| {
                both.wait();
                parent.cancel();
            });
            both.wait();
            root.cancel();
            let missed = chain.iter().filter(|t| !t.is_cancelled()).count();
            assert_eq!(
                missed, 0,
                "round {round}: cancel() returned before its subtree"
            );
        });
    }
}

// ---------------------------------------------------------------------------------
// Causes
// ---------------------------------------------------------------------------------

/// The text of a token's cause, if it has one.
fn cause_text(token: &CancelToken) -> Option<String> {
    token.cause().map(|cause| cause.to_string())
}

#[test]
fn a_cause_reaches_every_descendant_and_children_made_afterwards() {
    let root = CancelToken::new();
    let child = root.child();
    let grandchild = child.child();
    let other_root = CancelToken::new();
    assert_eq!(cause_text(&root), None);
    root.cancel_with("maintenance window");
    for token in [
        &root,
        &child,
        &grandchild,
        &root.child(),
        &grandchild.child(),
    ] {
        let reason = token.reason().expect("cancelled");
        assert!(
            matches!(reason, CancelReason::CancelledWith(_)),
            "{reason:?}"
        );
        assert_eq!(reason.to_string(), "cancelled: maintenance window");
        assert_eq!(cause_text(token).as_deref(), Some("maintenance window"));
    }
    assert_eq!(other_root.reason(), None);
    assert_eq!(cause_text(&other_root), None);
}

#[test]
fn the_first_cancel_wins_reason_and_cause_alike() {
    let root = CancelToken::new();
    let early = root.child();
    let late = root.child();
    early.cancel_with("the child gave up first");
    root.cancel_with("then the parent");
    root.cancel_with("a third time");
    root.cancel();
    assert_eq!(cause_text(&root).as_deref(), Some("then the parent"));
    assert_eq!(cause_text(&late).as_deref(), Some("then the parent"));
    assert_eq!(
        cause_text(&early).as_deref(),
        Some("the child gave up first")
    );

    let plain = CancelToken::new();
    plain.cancel();
    plain.cancel_with("too late");
    assert_eq!(plain.reason(), Some(CancelReason::Cancelled));
    assert_eq!(cause_text(&plain), None);
}

#[test]
fn a_passed_deadline_came_first_so_a_later_cause_is_not_kept() {
    let token = CancelToken::with_deadline(Instant::now());
    assert_eq!(token.reason(), Some(CancelReason::DeadlineExceeded));
    assert_eq!(cause_text(&token), None);
    token.cancel_with("gave up at the deadline");
    assert_eq!(token.reason(), Some(CancelReason::DeadlineExceeded));
    assert_eq!(cause_text(&token), None);
}

#[test]
fn a_cause_keeps_its_error_type_and_is_shared_not_copied() {
    #[derive(Debug)]
    struct Overloaded {
        queue: usize,
    }
    impl std::fmt::Display for Overloaded {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "overloaded: {} queued", self.queue)
        }
    }
    impl std::error::Error for Overloaded {}

    let root = CancelToken::new();
    let child = root.child();
    root.cancel_with(Overloaded { queue: 512 });
    let cause = child.cause().unwrap();
    assert_eq!(cause.downcast_ref::<Overloaded>().unwrap().queue, 512);
    assert!(std::sync::Arc::ptr_eq(&cause, &root.cause().unwrap()));
}

#[test]
fn a_waiter_woken_by_cancel_with_sees_the_cause() {
    let _check = LeakCheck::new();
    let root = CancelToken::new();
    let child = root.child();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| (child.wait(), cause_text(&child)));
        root.cancel_with("stop");
        let (reason, cause) = waiter.join().unwrap();
        assert_eq!(reason.to_string(), "cancelled: stop");
        assert_eq!(cause.as_deref(), Some("stop"));
    });
}

#[test]
fn a_refusal_the_token_caused_carries_its_cause() {
    let _check = LeakCheck::new();
    let pool = corral::WorkerPool::builder().workers(1).build().unwrap();
    let token = CancelToken::new();
    token.cancel_with(std::io::Error::other("client disconnected"));
    let err = pool.submit_cancellable(|| 1, &token).unwrap_err();
    let corral::pool::SubmitError::Cancelled(_, reason) = &err else {
        panic!("{err}");
    };
    let cause = reason.cause().expect("the refusal carries the cause");
    assert_eq!(cause.to_string(), "client disconnected");
    assert!(cause.downcast_ref::<std::io::Error>().is_some());
    assert!(std::sync::Arc::ptr_eq(cause, &token.cause().unwrap()));
    assert!(err.to_string().contains("client disconnected"), "{err}");

    // The same for a semaphore's wait and a rate limiter's.
    let semaphore = corral::Semaphore::new(1);
    let _held = semaphore.acquire().unwrap();
    let refused = semaphore.acquire_cancellable(&token).unwrap_err();
    assert!(
        refused.to_string().contains("client disconnected"),
        "{refused}"
    );
    let limiter = corral::RateLimiter::per_second(1).build().unwrap();
    assert!(limiter.check().is_ok());
    let refused = limiter.wait_cancellable(&token).unwrap_err();
    assert!(
        refused.to_string().contains("client disconnected"),
        "{refused}"
    );
    assert_eq!(pool.shutdown().rejected, 1);
}
