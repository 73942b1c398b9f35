//! Loom models of the pool's and the group's own synchronisation: the task result
//! slot, resolved on another thread (with a value or, as an abandoned task's cell
//! does, with `Cancelled`) while the handle joins, also with a bounded join that gives
//! up. The abandonment itself (a job dropped unrun resolving its handle, even when a
//! capture panics on drop) is unit-tested in src/pool/task.rs. The group's limit is the
//! crate's `Semaphore`, modelled in tests/loom_semaphore.rs.
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
#[path = "../src/sync.rs"]
mod sync;
#[path = "../src/wait.rs"]
mod wait;

use std::time::Duration;

use handle::{packet, TaskError};

#[test]
fn join_sees_the_result_completed_on_another_thread() {
    loom::model(|| {
        let (slot, handle) = packet::<u32>();
        let worker = loom::thread::spawn(move || slot.set(Ok(7)));
        assert_eq!(handle.join().unwrap(), 7);
        worker.join().unwrap();
    });
}

#[test]
fn a_cancelled_resolution_reaches_the_joiner() {
    loom::model(|| {
        let (slot, handle) = packet::<u32>();
        let worker = loom::thread::spawn(move || slot.set(Err(TaskError::Cancelled)));
        assert!(handle.join().unwrap_err().is_cancelled());
        worker.join().unwrap();
    });
}

#[test]
fn a_bounded_join_that_gives_up_keeps_the_result() {
    loom::model(|| {
        let (slot, handle) = packet::<u32>();
        let worker = loom::thread::spawn(move || slot.set(Ok(3)));
        let value = match handle.join_timeout(Duration::from_millis(1)) {
            Ok(result) => result.unwrap(),
            Err(handle) => handle.join().unwrap(),
        };
        assert_eq!(value, 3);
        worker.join().unwrap();
    });
}
