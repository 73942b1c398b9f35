//! Loom models of the pool's and the group's own synchronisation: the task result
//! slot, resolved on another thread (with a value or, as an abandoned task's cell
//! does, with `Cancelled`) while the handle joins, also with a bounded join that gives
//! up (its registration taken back in a race with the setter), is re-joined on
//! another thread, or is woken by a cancelled token; polling without parking; and the
//! slot inside a cell either side may free. Loom also checks every access of the
//! slot's `UnsafeCell`s for races. The abandonment itself (a job dropped unrun resolving its handle, even when a
//! capture panics on drop) is unit-tested in src/pool/task.rs. Also `map`'s chunk
//! claim: the worker and the caller race to take a chunk's input; it runs exactly
//! once, and a job dropped unrun takes the input with it. The group's limit is the
//! crate's `Semaphore`, modelled in tests/loom_semaphore.rs.
//! Also the wait of `shutdown_timeout` for the workers to exit (src/pool/exits.rs),
//! and `TaskHandle::cancel` racing the start, the completion and the abandonment of
//! its task (the claim byte in the result slot).
//! The queue itself is crossbeam-channel, which does not run under loom; the stress
//! tests in tests/pool.rs cover it.
//!
//! No model reads the wall clock: under loom, `crate::sync::time::now()` stands still
//! until a model thread calls `pass_every_deadline()`, so loom itself explores the
//! deadline passing before, between and after every check a waiter makes, and every
//! execution replays exactly.
//!
//! Run: `LOOM_MAX_PREEMPTIONS=5 RUSTFLAGS="--cfg loom" cargo test --release
//! --target-dir target/loom --test loom_pool`
#![cfg(loom)]
#![allow(dead_code, unreachable_pub, missing_docs)]

// The engine files are compiled into this test crate with the loom facade, so the
// models exercise the real code without making it public.
#[path = "../src/cancel.rs"]
mod cancel;
#[path = "../src/pool/map/claim.rs"]
mod claim;
#[path = "../src/pool/exits.rs"]
mod exits;
#[path = "../src/pool/idle.rs"]
mod idle;
#[path = "../src/panic.rs"]
mod panic;
#[path = "../src/sync.rs"]
mod sync;
#[path = "../src/pool/task.rs"]
mod task;
#[path = "../src/wait.rs"]
mod wait;

use std::time::Duration;

use task::{packet, TaskError};

#[test]
fn join_sees_the_result_completed_on_another_thread() {
    loom::model(|| {
        let (slot, handle) = packet::<u32>(None);
        let worker = loom::thread::spawn(move || slot.set(Ok(7)));
        assert_eq!(handle.join().unwrap(), 7);
        worker.join().unwrap();
    });
}

#[test]
fn a_cancelled_resolution_reaches_the_joiner() {
    loom::model(|| {
        let (slot, handle) = packet::<u32>(None);
        let worker = loom::thread::spawn(move || slot.set(Err(TaskError::Cancelled)));
        assert!(handle.join().unwrap_err().is_cancelled());
        worker.join().unwrap();
    });
}

/// A join that gives up at once (a zero timeout) registers, parks, and takes its
/// registration back in every order against the setter: either the setter wakes it
/// or it gets the handle back, and the next join finds the result.
#[test]
fn a_join_that_gives_up_at_once_races_the_setter_and_loses_nothing() {
    loom::model(|| {
        let (slot, handle) = packet::<u32>(None);
        let worker = loom::thread::spawn(move || slot.set(Ok(5)));
        let value = match handle.join_timeout(Duration::ZERO) {
            Ok(result) => result.unwrap(),
            Err(handle) => handle.join().unwrap(),
        };
        assert_eq!(value, 5);
        worker.join().unwrap();
    });
}

/// A bounded join whose deadline passes at a point loom chooses (a model thread makes
/// every deadline pass, before, between or after the joiner's checks; no model reads
/// the wall clock): it gives up only once the deadline has passed, and the result is
/// never lost.
#[test]
fn a_bounded_join_that_gives_up_keeps_the_result() {
    use loom::sync::atomic::{AtomicBool, Ordering};
    use loom::sync::Arc;
    loom::model(|| {
        let (slot, handle) = packet::<u32>(None);
        let passed = Arc::new(AtomicBool::new(false));
        let worker = loom::thread::spawn(move || slot.set(Ok(3)));
        let clock = {
            let passed = Arc::clone(&passed);
            loom::thread::spawn(move || {
                passed.store(true, Ordering::SeqCst);
                sync::time::pass_every_deadline();
            })
        };
        let value = match handle.join_timeout(Duration::from_secs(1)) {
            Ok(result) => result.unwrap(),
            Err(handle) => {
                assert!(passed.load(Ordering::SeqCst), "gave up before the deadline");
                handle.join().unwrap()
            }
        };
        assert_eq!(value, 3);
        worker.join().unwrap();
        clock.join().unwrap();
    });
}

/// With no result coming, a bounded join ends exactly when the model makes its
/// deadline pass, and hands the handle back.
#[test]
fn a_bounded_join_with_no_result_gives_up_when_its_deadline_passes() {
    loom::model(|| {
        let (slot, handle) = packet::<u32>(None);
        let clock = loom::thread::spawn(sync::time::pass_every_deadline);
        let handle = handle
            .join_timeout(Duration::from_secs(1))
            .expect_err("no result was ever set");
        clock.join().unwrap();
        slot.set(Ok(4));
        assert_eq!(handle.join().unwrap(), 4);
    });
}

/// Polling (`try_join`, `is_finished`) never parks: its acquire load alone must see
/// the setter's write of the result.
#[test]
fn polling_the_slot_sees_the_whole_result() {
    loom::model(|| {
        let (slot, handle) = packet::<Box<u32>>(None);
        let worker = loom::thread::spawn(move || slot.set(Ok(Box::new(6))));
        let finished = handle.is_finished();
        let value = match handle.try_join() {
            Ok(result) => result.unwrap(),
            Err(handle) => {
                assert!(!finished);
                loom::thread::yield_now();
                match handle.try_join() {
                    Ok(result) => result.unwrap(),
                    Err(handle) => handle.join().unwrap(),
                }
            }
        };
        assert_eq!(*value, 6);
        worker.join().unwrap();
    });
}

/// A join that gave up hands its handle to another thread, which joins for good: the
/// waiter it registers is the new thread.
#[test]
fn a_handle_given_up_on_one_thread_is_joined_on_another() {
    loom::model(|| {
        let (slot, handle) = packet::<Box<u32>>(None);
        let worker = loom::thread::spawn(move || slot.set(Ok(Box::new(9))));
        let value = match handle.join_timeout(Duration::ZERO) {
            Ok(result) => *result.unwrap(),
            Err(handle) => loom::thread::spawn(move || *handle.join().unwrap())
                .join()
                .unwrap(),
        };
        assert_eq!(value, 9);
        worker.join().unwrap();
    });
}

/// Where an owned pool keeps it: the slot inside a cell both sides hold, either of
/// which may let go last, and a handle that gives up and is dropped.
#[test]
fn a_slot_inside_a_shared_cell_is_freed_by_whichever_side_goes_last() {
    struct InCell(task::Packet<Box<u32>>);
    impl task::AsPacket<Box<u32>> for InCell {
        fn packet(&self) -> &task::Packet<Box<u32>> {
            &self.0
        }
    }
    loom::model(|| {
        let cell = std::sync::Arc::new(InCell(task::Packet::new(None)));
        let shared = std::sync::Arc::clone(&cell) as std::sync::Arc<dyn task::AsPacket<Box<u32>>>;
        let handle = task::TaskHandle::in_cell(shared);
        let worker = loom::thread::spawn(move || {
            cell.0.set(Ok(Box::new(4)));
            drop(cell);
        });
        if let Ok(result) = handle.join_timeout(Duration::ZERO) {
            assert_eq!(*result.unwrap(), 4);
        }
        worker.join().unwrap();
    });
}

/// A cancelled token unparks the joiner (its `on_cancel`) while the setter races: the
/// join either has the value or hands the handle back, and a later join finds it.
#[test]
fn a_cancel_racing_the_setter_loses_nothing() {
    loom::model(|| {
        let token = cancel::CancelToken::new();
        let (slot, handle) = packet::<Box<u32>>(None);
        let worker = loom::thread::spawn(move || slot.set(Ok(Box::new(8))));
        let canceller = {
            let token = token.clone();
            loom::thread::spawn(move || token.cancel())
        };
        let value = match handle.join_cancellable(&token) {
            Ok(result) => result.unwrap(),
            Err(handle) => handle.join().unwrap(),
        };
        assert_eq!(*value, 8);
        worker.join().unwrap();
        canceller.join().unwrap();
    });
}

/// Cancelled with no result coming: the join hands the handle back instead of
/// parking for ever, and the handle still resolves later.
#[test]
fn a_cancelled_join_with_no_result_hands_the_handle_back() {
    loom::model(|| {
        let token = cancel::CancelToken::new();
        let (slot, handle) = packet::<Box<u32>>(None);
        let canceller = {
            let token = token.clone();
            loom::thread::spawn(move || token.cancel())
        };
        let handle = handle.join_cancellable(&token).unwrap_err();
        canceller.join().unwrap();
        slot.set(Ok(Box::new(3)));
        assert_eq!(*handle.join().unwrap(), 3);
    });
}

#[test]
fn a_chunk_runs_exactly_once_whether_the_worker_or_the_caller_takes_it() {
    use loom::sync::atomic::{AtomicUsize, Ordering};
    use loom::sync::Arc;
    loom::model(|| {
        let runs = Arc::new(AtomicUsize::new(0));
        let (input, guard) = claim::claim(21u32);
        let (slot, handle) = packet::<Option<u32>>(None);
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
        let (slot, handle) = packet::<Option<u32>>(None);
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

/// `shutdown_timeout`'s wait for the workers to exit (src/pool/exits.rs), with the
/// deadline passing wherever loom puts it: `true` only once every worker has exited,
/// `false` only once the deadline has passed, and never a wait that outlives both.
#[test]
fn a_shutdown_waiting_for_exits_ends_when_they_exit_or_its_deadline_passes() {
    use loom::sync::atomic::{AtomicBool, Ordering};
    use loom::sync::Arc;
    loom::model(|| {
        let alive = Arc::new((sync::Mutex::new(2usize), sync::Condvar::new()));
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let alive = Arc::clone(&alive);
                loom::thread::spawn(move || exits::exit(&alive.0, &alive.1))
            })
            .collect();
        let passed = Arc::new(AtomicBool::new(false));
        let clock = {
            let passed = Arc::clone(&passed);
            loom::thread::spawn(move || {
                passed.store(true, Ordering::SeqCst);
                sync::time::pass_every_deadline();
            })
        };
        let deadline = sync::time::deadline_after(sync::time::now(), Duration::from_secs(1));
        if exits::wait_exit(&alive.0, &alive.1, deadline, 0) {
            assert_eq!(*alive.0.lock(), 0);
        } else {
            assert!(passed.load(Ordering::SeqCst), "gave up before the deadline");
        }
        for worker in workers {
            worker.join().unwrap();
        }
        clock.join().unwrap();
    });
}

/// Waiting on one of the pool's own workers (a shutdown from inside a task): the
/// waiter's own count stays, and the wait ends once the others have exited.
#[test]
fn a_shutdown_on_a_worker_waits_only_for_the_others() {
    use loom::sync::Arc;
    loom::model(|| {
        let alive = Arc::new((sync::Mutex::new(2usize), sync::Condvar::new()));
        let other = {
            let alive = Arc::clone(&alive);
            loom::thread::spawn(move || exits::exit(&alive.0, &alive.1))
        };
        let never = sync::time::deadline_after(sync::time::now(), Duration::MAX);
        assert!(exits::wait_exit(&alive.0, &alive.1, never, 1));
        assert_eq!(*alive.0.lock(), 1);
        other.join().unwrap();
    });
}

/// Counts the drops of a closure's capture.
struct Capture(loom::sync::Arc<loom::sync::atomic::AtomicUsize>);

impl Drop for Capture {
    fn drop(&mut self) {
        self.0.fetch_add(1, loom::sync::atomic::Ordering::SeqCst);
    }
}

/// `TaskHandle::cancel` racing a worker that takes the job (the claim in the task's
/// result slot): the task either runs, and the handle gets its value, or never runs,
/// and the handle says `Cancelled`; never both, never neither. The closure is dropped
/// once, on the worker's side, either way; the task's own token is cancelled.
#[test]
fn a_cancel_racing_the_start_runs_the_task_or_drops_it_never_both() {
    use loom::sync::atomic::{AtomicUsize, Ordering};
    use loom::sync::Arc;
    loom::model(|| {
        let (runs, drops) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (r, capture) = (Arc::clone(&runs), Capture(Arc::clone(&drops)));
        let own = cancel::CancelToken::new();
        let (cell, handle) = task::in_cell(
            task::Tokened(move |token: &cancel::CancelToken| {
                let _keep = &capture;
                r.fetch_add(1, Ordering::SeqCst);
                token.is_cancelled()
            }),
            Some(own.clone()),
        );
        let job = task::Job::new(cell);
        let pool_token = cancel::CancelToken::new();
        let worker = loom::thread::spawn(move || {
            let outcome = job.run(&pool_token, task::Tally::NONE);
            matches!(outcome, task::Outcome::Cancelled(None))
        });
        let stopped = handle.cancel();
        let result = handle.join();
        let dropped_unrun = worker.join().unwrap();
        assert!(own.is_cancelled());
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        match result {
            Ok(_) => assert!(!stopped && !dropped_unrun && runs.load(Ordering::SeqCst) == 1),
            Err(TaskError::Cancelled) => {
                assert!(stopped && dropped_unrun && runs.load(Ordering::SeqCst) == 0)
            }
            Err(other) => panic!("{other:?}"),
        }
    });
}

/// `cancel` racing the pool dropping the job unrun (a drain or `shutdown_now`), with a
/// slot of its own (a scoped pool's task): exactly one side resolves the handle to
/// `Cancelled`, and the closure is dropped once.
#[test]
fn a_cancel_racing_an_abandonment_resolves_the_handle_once() {
    use loom::sync::atomic::{AtomicUsize, Ordering};
    use loom::sync::Arc;
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let capture = Capture(Arc::clone(&drops));
        let (cell, handle) = task::with_own_slot(
            task::Plain(move || {
                let _keep = &capture;
                1u32
            }),
            None,
        );
        let job = task::Job::new(cell);
        let dropper = loom::thread::spawn(move || drop(job));
        let _ = handle.cancel();
        assert!(handle.join().unwrap_err().is_cancelled());
        dropper.join().unwrap();
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    });
}

/// `cancel` after the task may have completed, while the handle waits with a bounded
/// join that gives up at once: a completed task keeps its value, a cancelled one
/// says `Cancelled`, and the next join finds whichever it is.
#[test]
fn a_cancel_racing_the_completion_keeps_the_value_or_cancels_never_loses_it() {
    loom::model(|| {
        let (cell, handle) = task::in_cell(task::Plain(|| 9u32), None);
        let job = task::Job::new(cell);
        let pool_token = cancel::CancelToken::new();
        let worker = loom::thread::spawn(move || {
            drop(job.run(&pool_token, task::Tally::NONE));
        });
        let handle = match handle.join_timeout(Duration::ZERO) {
            Ok(result) => {
                assert_eq!(result.unwrap(), 9);
                worker.join().unwrap();
                return;
            }
            Err(handle) => handle,
        };
        let stopped = handle.cancel();
        match handle.join() {
            Ok(value) => assert!(!stopped && value == 9),
            Err(error) => assert!(stopped && error.is_cancelled()),
        }
        worker.join().unwrap();
    });
}

/// `wait_idle`'s counting (src/pool/idle.rs): a task accepted before the wait is
/// finished when the wait returns, while another submit races the epoch flip and
/// ends on its own (as a task run by its submitter does); the wait never hangs.
#[test]
fn a_wait_for_idle_returns_after_every_earlier_task_and_never_hangs() {
    use loom::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use loom::sync::Arc;
    loom::model(|| {
        let idle = Arc::new(idle::Idle::new());
        // The workers' per-epoch finished counts.
        let finished = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let earlier_done = Arc::new(AtomicBool::new(false));
        let epoch = idle.enter(); // accepted before the wait
        let worker = {
            let (idle, finished, done) = (idle.clone(), finished.clone(), earlier_done.clone());
            loom::thread::spawn(move || {
                done.store(true, Ordering::Relaxed);
                finished[epoch].fetch_add(1, Ordering::Release);
                idle.wake();
            })
        };
        let submitter = {
            let idle = idle.clone();
            loom::thread::spawn(move || {
                let epoch = idle.enter();
                idle.leave(epoch);
            })
        };
        let counts = |epoch: usize| finished[epoch].load(Ordering::Acquire);
        idle.wait(&wait::Until::FOREVER, &counts).unwrap();
        assert!(earlier_done.load(Ordering::Relaxed));
        worker.join().unwrap();
        submitter.join().unwrap();
    });
}
