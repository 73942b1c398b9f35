//! Loom models of the pool's and the group's own synchronisation: the task result
//! slot, resolved on another thread (with a value or, as an abandoned task's cell
//! does, with `Cancelled`) while the handle joins, also with a bounded join that gives
//! up. The abandonment itself (a job dropped unrun resolving its handle, even when a
//! capture panics on drop) is unit-tested in src/pool/task.rs. Also `map`'s chunk
//! claim: the worker and the caller race to take a chunk's input; it runs exactly
//! once, and a job dropped unrun takes the input with it. And `Shared`, the count of
//! the allocation a task lives in: whoever frees it (the last drop, or the holder that
//! finds itself alone and takes the value) sees every other holder's writes, and the
//! value is dropped exactly once. The group's limit is the crate's `Semaphore`,
//! modelled in tests/loom_semaphore.rs.
//! The queue itself is crossbeam-channel, which does not run under loom; the stress
//! tests in tests/pool.rs cover it.
//!
//! Run: `LOOM_MAX_PREEMPTIONS=3 RUSTFLAGS="--cfg loom" cargo test --release
//! --target-dir target/loom --test loom_pool`
#![cfg(loom)]
#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    unused_macros,
    unused_imports
)]

// The engine files are compiled into this test crate with the loom facade, so the
// models exercise the real code without making it public.
#[path = "../src/cancel.rs"]
mod cancel;
#[path = "../src/pool/claim.rs"]
mod claim;
#[path = "../src/pool/handle.rs"]
mod handle;
#[path = "../src/panic.rs"]
mod panic;
#[path = "../src/pool/shared.rs"]
mod shared;
#[path = "../src/sync.rs"]
mod sync;
#[path = "../src/wait.rs"]
mod wait;
/// The lib's module path, for the code that names `crate::pool::shared`.
mod pool {
    pub(crate) use super::shared;
}

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

#[test]
fn a_chunk_runs_exactly_once_whether_the_worker_or_the_caller_takes_it() {
    use loom::sync::atomic::{AtomicUsize, Ordering};
    use loom::sync::Arc;
    loom::model(|| {
        let runs = Arc::new(AtomicUsize::new(0));
        let (input, guard) = claim::claim(21u32);
        let (slot, handle) = packet::<Option<u32>>();
        let worker_runs = Arc::clone(&runs);
        let worker = loom::thread::spawn(move || {
            let out = guard.take().map(|x| {
                worker_runs.fetch_add(1, Ordering::SeqCst);
                x * 2
            });
            drop(guard);
            slot.set(Ok(out));
        });
        // The caller: run it here if no worker took it, else wait for the worker's.
        let result = match input.take() {
            Some(x) => {
                runs.fetch_add(1, Ordering::SeqCst);
                x * 2
            }
            None => handle
                .join()
                .unwrap()
                .expect("the worker took it, so it ran it"),
        };
        worker.join().unwrap();
        assert_eq!(result, 42);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn a_chunk_whose_job_is_dropped_unrun_never_runs_on_the_caller_after() {
    loom::model(|| {
        let (input, guard) = claim::claim(5u32);
        let (slot, handle) = packet::<Option<u32>>();
        // The pool drops the job unrun (an eviction): the guard goes, then the
        // handle resolves to Cancelled, as the job's cell does.
        let evictor = loom::thread::spawn(move || {
            drop(guard);
            slot.set(Err(TaskError::Cancelled));
        });
        match input.take() {
            Some(x) => assert_eq!(x, 5), // taken before the eviction: the caller runs it
            None => assert!(handle.join().unwrap_err().is_cancelled()),
        }
        evictor.join().unwrap();
        assert_eq!(input.take(), None, "the input is gone either way");
    });
}

/// A value two holders write to (each its own field) and both read (a third field),
/// as a task's cell is written by its worker and read by its handle; its drop reads
/// the two writes and overwrites the field the holders read. Loom reports a read that
/// does not see a holder's write, or a holder's read not ordered before the drop's
/// write (a missing happens-before either way).
struct Scribble {
    first: loom::cell::UnsafeCell<u32>,
    second: loom::cell::UnsafeCell<u32>,
    read_by_both: loom::cell::UnsafeCell<u32>,
    drops: loom::sync::Arc<loom::sync::atomic::AtomicUsize>,
}

impl Scribble {
    fn new(drops: &loom::sync::Arc<loom::sync::atomic::AtomicUsize>) -> Self {
        Scribble {
            first: loom::cell::UnsafeCell::new(0),
            second: loom::cell::UnsafeCell::new(0),
            read_by_both: loom::cell::UnsafeCell::new(7),
            drops: loom::sync::Arc::clone(drops),
        }
    }
}

impl Drop for Scribble {
    fn drop(&mut self) {
        // SAFETY (test): a read of plain cells, checked for races by loom.
        let seen = unsafe { (self.first.with(|v| *v), self.second.with(|v| *v)) };
        assert_eq!(seen, (1, 2));
        write(&self.read_by_both, 0);
        self.drops
            .fetch_add(1, loom::sync::atomic::Ordering::SeqCst);
    }
}

fn write(cell: &loom::cell::UnsafeCell<u32>, value: u32) {
    // SAFETY (test): each holder writes only its own field; loom checks the rest.
    cell.with_mut(|v| unsafe { *v = value });
}

/// What a holder does with the value before it lets go: writes its own field and
/// reads the one both read.
fn use_it(scribble: &Scribble, mine: &loom::cell::UnsafeCell<u32>, value: u32) {
    write(mine, value);
    // SAFETY (test): a read, checked for races by loom.
    assert_eq!(scribble.read_by_both.with(|v| unsafe { *v }), 7);
}

#[test]
fn the_last_of_two_references_sees_both_holders_writes_and_drops_once() {
    loom::model(|| {
        let drops = loom::sync::Arc::new(loom::sync::atomic::AtomicUsize::new(0));
        let first = pool::shared::Shared::new(Scribble::new(&drops));
        let second = first.clone();
        let other = loom::thread::spawn(move || {
            use_it(&second, &second.second, 2);
            drop(second);
        });
        use_it(&first, &first.first, 1);
        drop(first);
        other.join().unwrap();
        assert_eq!(drops.load(loom::sync::atomic::Ordering::SeqCst), 1);
    });
}

#[test]
fn a_holder_left_alone_owns_the_value_and_sees_the_other_holders_writes() {
    loom::model(|| {
        let drops = loom::sync::Arc::new(loom::sync::atomic::AtomicUsize::new(0));
        let mut mine = pool::shared::Shared::new(Scribble::new(&drops));
        let theirs = mine.clone();
        let other = loom::thread::spawn(move || {
            use_it(&theirs, &theirs.second, 2);
            drop(theirs);
        });
        use_it(&mine, &mine.first, 1);
        // As a worker does: take the value if this is the only reference left.
        let unique = loop {
            match mine.into_unique() {
                Ok(unique) => break unique,
                Err(back) => {
                    mine = back;
                    loom::thread::yield_now();
                }
            }
        };
        assert_eq!(drops.load(loom::sync::atomic::Ordering::SeqCst), 0);
        drop(unique);
        other.join().unwrap();
        assert_eq!(drops.load(loom::sync::atomic::Ordering::SeqCst), 1);
    });
}
