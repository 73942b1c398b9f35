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
