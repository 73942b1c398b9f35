//! Loom models of the pool's and the group's own synchronisation: the task result
//! slot (complete / drop-unrun / bounded join racing) and the group's slot limiter.
//! The queue itself is crossbeam-channel, which does not run under loom; the stress
//! tests in tests/pool.rs cover it.
//!
//! Run: `LOOM_MAX_PREEMPTIONS=3 RUSTFLAGS="--cfg loom" cargo test --release
//! --target-dir target/loom --test loom_pool`
#![cfg(loom)]
#![allow(dead_code, unreachable_pub, missing_docs)]

// The engine files are compiled into this test crate with the loom facade, so the
// models exercise the real code without making it public.
#[path = "../src/cancel.rs"]
mod cancel;
#[path = "../src/pool/handle.rs"]
mod handle;
#[path = "../src/panic.rs"]
mod panic;
#[path = "../src/group/slots.rs"]
mod slots;
#[path = "../src/sync.rs"]
mod sync;
#[path = "../src/wait.rs"]
mod wait;

use std::time::Duration;

use handle::packet;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use slots::Slots;
use wait::Until;

#[test]
fn join_sees_the_result_completed_on_another_thread() {
    loom::model(|| {
        let (done, handle) = packet::<u32>();
        let worker = loom::thread::spawn(move || done.complete(Ok(7)));
        assert_eq!(handle.join().unwrap(), 7);
        worker.join().unwrap();
    });
}

#[test]
fn a_completer_dropped_unrun_resolves_the_handle() {
    loom::model(|| {
        let (done, handle) = packet::<u32>();
        let worker = loom::thread::spawn(move || drop(done));
        assert!(handle.join().unwrap_err().is_cancelled());
        worker.join().unwrap();
    });
}

#[test]
fn a_bounded_join_that_gives_up_keeps_the_result() {
    loom::model(|| {
        let (done, handle) = packet::<u32>();
        let worker = loom::thread::spawn(move || done.complete(Ok(3)));
        let value = match handle.join_timeout(Duration::from_millis(1)) {
            Ok(result) => result.unwrap(),
            Err(handle) => handle.join().unwrap(),
        };
        assert_eq!(value, 3);
        worker.join().unwrap();
    });
}

#[test]
fn slots_never_exceed_the_limit_and_wake_waiters() {
    loom::model(|| {
        let slots = Arc::new(Slots::new(1));
        let inside = Arc::new(AtomicUsize::new(0));
        let run = |slots: Arc<Slots>, inside: Arc<AtomicUsize>| {
            slots.acquire(&Until::FOREVER).unwrap();
            assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "limit exceeded");
            inside.fetch_sub(1, Ordering::SeqCst);
            slots.release();
        };
        let others: Vec<_> = (0..2)
            .map(|_| {
                let (slots, inside) = (slots.clone(), inside.clone());
                loom::thread::spawn(move || run(slots, inside))
            })
            .collect();
        run(slots.clone(), inside);
        for t in others {
            t.join().unwrap();
        }
        assert_eq!(slots.used(), 0);
    });
}

#[test]
fn try_acquire_refuses_at_the_limit() {
    loom::model(|| {
        let slots = Arc::new(Slots::new(1));
        let other = {
            let slots = slots.clone();
            loom::thread::spawn(move || {
                if slots.try_acquire() {
                    slots.release();
                }
            })
        };
        if slots.try_acquire() {
            slots.release();
        }
        other.join().unwrap();
        assert_eq!(slots.used(), 0);
    });
}
