//! Loom models of the cancel token: every interleaving of cancel, child creation,
//! callback registration and waiting, on 2–3 threads.
#![cfg(loom)]

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

use corral::{cancel::CancelReason, CancelToken};

#[test]
fn cancel_racing_child_creation_always_reaches_the_child() {
    loom::model(|| {
        let root = CancelToken::new();
        let r = root.clone();
        let maker = thread::spawn(move || r.child());
        root.cancel();
        let child = maker.join().unwrap();
        assert_eq!(child.reason(), Some(CancelReason::Cancelled));
    });
}

#[test]
fn a_callback_runs_exactly_once_or_not_at_all_if_unregistered_first() {
    loom::model(|| {
        let token = CancelToken::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let t = token.clone();
        let r = runs.clone();
        let registrar = thread::spawn(move || {
            let guard = t.on_cancel(move || {
                r.fetch_add(1, Ordering::SeqCst);
            });
            drop(guard);
        });
        let t2 = token.clone();
        let canceller = thread::spawn(move || t2.cancel());
        registrar.join().unwrap();
        canceller.join().unwrap();
        assert!(runs.load(Ordering::SeqCst) <= 1);
        assert!(token.is_cancelled());
    });
}

#[test]
fn a_kept_callback_always_runs() {
    loom::model(|| {
        let token = CancelToken::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        let guard = token.on_cancel(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        let t = token.clone();
        let a = thread::spawn(move || t.cancel());
        token.cancel();
        a.join().unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        drop(guard);
    });
}

#[test]
fn wait_returns_when_another_thread_cancels() {
    loom::model(|| {
        let token = CancelToken::new();
        let child = token.child();
        let waiter = thread::spawn(move || child.wait());
        token.cancel();
        assert_eq!(waiter.join().unwrap(), CancelReason::Cancelled);
    });
}

#[test]
fn dropping_a_child_while_the_parent_cancels_is_safe() {
    loom::model(|| {
        let root = CancelToken::new();
        let child = root.child();
        let dropper = thread::spawn(move || drop(child));
        root.cancel();
        dropper.join().unwrap();
        assert_eq!(root.registered(), 0);
    });
}

#[test]
fn concurrent_drops_of_a_chain_racing_cancel_unregister_every_link_once() {
    loom::model(|| {
        let root = CancelToken::new();
        let leaf = root.child().child();
        let other = leaf.clone();
        let dropper = thread::spawn(move || drop(other));
        let r = root.clone();
        let canceller = thread::spawn(move || r.cancel());
        drop(leaf);
        dropper.join().unwrap();
        canceller.join().unwrap();
        assert_eq!(root.registered(), 0);
        assert_eq!(root.reason(), Some(CancelReason::Cancelled));
    });
}

/// The cause a token holds, as text.
fn cause_of(token: &CancelToken) -> Option<String> {
    token.cause().map(|cause| cause.to_string())
}

#[test]
fn racing_causes_the_first_cancel_of_each_token_wins_and_is_seen_with_its_flag() {
    loom::model(|| {
        let root = CancelToken::new();
        let child = root.child();
        let (r, c) = (root.clone(), child.clone());
        let parent_side = thread::spawn(move || r.cancel_with("parent"));
        let child_side = thread::spawn(move || {
            c.cancel_with("child");
            // Whoever flagged the child, its cause is there with the flag.
            cause_of(&c)
        });
        parent_side.join().unwrap();
        let seen = child_side.join().unwrap();
        assert_eq!(cause_of(&root).as_deref(), Some("parent"));
        let kept = cause_of(&child);
        assert!(
            matches!(kept.as_deref(), Some("parent" | "child")),
            "{kept:?}"
        );
        assert_eq!(seen, kept);
    });
}

#[test]
fn a_child_made_while_its_parent_is_cancelled_with_a_cause_gets_the_cause() {
    loom::model(|| {
        let root = CancelToken::new();
        let r = root.clone();
        let maker = thread::spawn(move || r.child());
        root.cancel_with("gone");
        let child = maker.join().unwrap();
        assert!(matches!(
            child.reason(),
            Some(CancelReason::CancelledWith(_))
        ));
        assert_eq!(cause_of(&child).as_deref(), Some("gone"));
    });
}
