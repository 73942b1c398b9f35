//! A queued task behind one thin pointer.
//!
//! Implementation notes. The queue's slots carry [`Job`]s: a pointer to the task and a
//! `&'static` table of the two things a queue ever does with one (run it, or drop it
//! unrun), one table per concrete task type. A job is two words, the size of a boxed
//! trait object, but unlike `Box<dyn ..>` or `Arc<dyn ..>` it can point at either.
//! So a fire-and-forget task is just its boxed closure (one allocation of the
//! closure's own size, no result slot, no reference count, no lock: the cost of a
//! hand-rolled pool's `Box<dyn FnOnce()>`), while a task with a handle is the
//! reference-counted cell its handle shares (`task.rs`). A one-variant-per-shape enum
//! of fat pointers would carry a tag and grow every channel slot, which measured
//! slower on `submit` than the single shape it replaced (BENCHMARKS.md).
//!
//! A refused task goes back to its submitter as the very value it was queued as
//! ([`Job::into_task`]). Only the code that built the job can name that type, and the
//! queue hands back the job it was given, never another: that is the contract the one
//! `unsafe` call site (`Core::push`) relies on.
//!
//! This module, that call site and the closure slot of `task::Cell` are the pool's only
//! `unsafe` code. Every pool test runs through it, and `scripts/test` runs this
//! module's tests (every shape of job down every path) under Miri when a nightly
//! toolchain with Miri is installed.
#![allow(unsafe_code)]

use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ptr::NonNull;
use std::sync::Arc;

use crate::cancel::CancelToken;
use crate::pool::task::{Outcome, Tally};

/// An owning pointer that can travel as a thin pointer and come back.
pub(crate) trait Thin: Sized {
    fn into_raw(self) -> NonNull<()>;

    /// # Safety
    ///
    /// `raw` came from `Self::into_raw` (the same type) and is not used again.
    unsafe fn from_raw(raw: NonNull<()>) -> Self;
}

impl<T> Thin for Box<T> {
    fn into_raw(self) -> NonNull<()> {
        NonNull::from(Box::leak(self)).cast()
    }

    unsafe fn from_raw(raw: NonNull<()>) -> Self {
        // SAFETY: `raw` is the pointer `Box::leak` gave for a `Box<T>` (caller's
        // contract), and ownership comes back exactly once.
        unsafe { Box::from_raw(raw.cast::<T>().as_ptr()) }
    }
}

impl<T> Thin for Arc<T> {
    fn into_raw(self) -> NonNull<()> {
        // SAFETY: `Arc::into_raw` never returns null (it points into a live allocation).
        unsafe { NonNull::new_unchecked(Arc::into_raw(self).cast_mut().cast()) }
    }

    unsafe fn from_raw(raw: NonNull<()>) -> Self {
        // SAFETY: `raw` came from `Arc::<T>::into_raw` (caller's contract), and the
        // reference it stands for is reclaimed exactly once.
        unsafe { Arc::from_raw(raw.cast::<T>().as_ptr().cast_const()) }
    }
}

/// A task as the queue carries it: a thin owning pointer to something that can run
/// once, or be dropped unrun, on any thread.
pub(crate) trait Runnable: Thin + Send {
    /// What the submitter gets back if the queue refuses the task.
    type Closure;

    /// Runs the task, counting the run where `tally` says.
    fn run(self, token: &CancelToken, tally: Tally<'_>) -> Outcome;

    /// The task will never run: drops it (a handle, if any, resolves to `Cancelled`).
    fn abandon(self);

    /// The closure of a task that never ran, for its submitter.
    fn into_closure(self) -> Option<Self::Closure>;
}

/// What a job can do with the task behind its pointer.
pub(crate) struct Ops {
    run: unsafe fn(NonNull<()>, &CancelToken, Tally<'_>) -> Outcome,
    abandon: unsafe fn(NonNull<()>),
}

/// The table for one task type (a constant, so each job refers to it for free).
struct OpsOf<R>(PhantomData<R>);

impl<R: Runnable> OpsOf<R> {
    const OPS: Ops = Ops {
        run: run_raw::<R>,
        abandon: abandon_raw::<R>,
    };
}

/// # Safety
///
/// `raw` came from `R::into_raw` and is not used again.
unsafe fn run_raw<R: Runnable>(raw: NonNull<()>, token: &CancelToken, tally: Tally<'_>) -> Outcome {
    // SAFETY: forwarded from this function's contract.
    unsafe { R::from_raw(raw) }.run(token, tally)
}

/// # Safety
///
/// `raw` came from `R::into_raw` and is not used again.
unsafe fn abandon_raw<R: Runnable>(raw: NonNull<()>) {
    // SAFETY: forwarded from this function's contract.
    unsafe { R::from_raw(raw) }.abandon()
}

/// A queued task. Dropping a job that has not run abandons it (its handle resolves to
/// `Cancelled`), wherever that happens: a cancelled pool, an eviction, a shutdown.
pub(crate) struct Job<'a> {
    raw: NonNull<()>,
    ops: &'static Ops,
    /// The task may borrow for `'a`, and the job owns it.
    _task: PhantomData<Box<dyn Send + 'a>>,
}

// SAFETY: a job is only made from a `Runnable`, which is `Send`, and it owns that task
// (or its reference to it) outright: moving the job moves the task.
unsafe impl Send for Job<'_> {}

impl<'a> Job<'a> {
    #[inline]
    pub(crate) fn new<R: Runnable + 'a>(task: R) -> Self {
        Job {
            raw: task.into_raw(),
            ops: &OpsOf::<R>::OPS,
            _task: PhantomData,
        }
    }

    /// Runs the task once, on this thread.
    #[inline]
    pub(crate) fn run(self, token: &CancelToken, tally: Tally<'_>) -> Outcome {
        let job = ManuallyDrop::new(self);
        // SAFETY: `raw` and `ops` were made together from one task type in `new`, and
        // `ManuallyDrop` keeps `Drop` from using `raw` after this.
        unsafe { (job.ops.run)(job.raw, token, tally) }
    }

    /// The task this job was made from, without running or abandoning it.
    ///
    /// # Safety
    ///
    /// The job was made by `Job::new::<R>` with this very `R`.
    #[inline]
    pub(crate) unsafe fn into_task<R: Runnable + 'a>(self) -> R {
        let job = ManuallyDrop::new(self);
        // SAFETY: `raw` came from `R::into_raw` (caller's contract), and
        // `ManuallyDrop` keeps `Drop` from using it again.
        unsafe { R::from_raw(job.raw) }
    }
}

impl Drop for Job<'_> {
    fn drop(&mut self) {
        // SAFETY: `raw` and `ops` were made together in `new`; `run` and `into_task`
        // forget the job, so this is the only use of `raw` on this path.
        unsafe { (self.ops.abandon)(self.raw) }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    //! Every shape of job down every path, with a capture that counts its drops: the
    //! pool's `unsafe` is here, so `scripts/test` also runs these under Miri.
    use super::*;
    use crate::pool::handle::{AsPacket, Packet, TaskHandle};
    use crate::pool::task::{Plain, Shared};
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    /// Counts its own drops.
    struct Capture(Arc<AtomicUsize>);

    impl Drop for Capture {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn capture() -> (Capture, Arc<AtomicUsize>) {
        let drops = Arc::new(AtomicUsize::new(0));
        (Capture(Arc::clone(&drops)), drops)
    }

    fn counted<'t>(completed: &'t AtomicU64, panicked: &'t AtomicU64) -> Tally<'t> {
        Tally {
            completed: Some(completed),
            panicked: Some(panicked),
            exclusive: false,
        }
    }

    /// Runs `job` on another thread, as a worker would.
    fn run_elsewhere(job: Job<'static>, completed: &AtomicU64, panicked: &AtomicU64) -> Outcome {
        std::thread::scope(|s| {
            s.spawn(move || job.run(&CancelToken::new(), counted(completed, panicked)))
                .join()
                .unwrap()
        })
    }

    /// A task made into a job and taken back, as `Core::push` does on a refusal.
    fn queued_and_refused<R: Runnable + 'static>(task: R) -> R {
        let job = Job::new(task);
        // SAFETY: made from this very `R` just above.
        unsafe { job.into_task::<R>() }
    }

    #[test]
    fn a_boxed_closure_runs_once_on_another_thread_and_is_dropped_once() {
        let (capture, drops) = capture();
        let ran = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&ran);
        let job = Job::new(Box::new(Plain(move || {
            let _keep = &capture;
            counter.fetch_add(1, Ordering::SeqCst);
        })));
        let (completed, panicked) = (AtomicU64::new(0), AtomicU64::new(0));
        assert!(matches!(
            run_elsewhere(job, &completed, &panicked),
            Outcome::Done
        ));
        assert_eq!(ran.load(Ordering::SeqCst), 1);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert_eq!(completed.load(Ordering::SeqCst), 1);
        assert_eq!(panicked.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_boxed_closure_dropped_unrun_drops_its_captures_once_and_never_runs() {
        let (capture, drops) = capture();
        let ran = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&ran);
        let job = Job::new(Box::new(Plain(move || {
            let _keep = &capture;
            counter.fetch_add(1, Ordering::SeqCst);
        })));
        drop(job);
        assert_eq!(ran.load(Ordering::SeqCst), 0);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_boxed_panic_comes_back_to_the_worker_with_its_payload() {
        let job = Job::new(Box::new(Plain(|| panic!("boxed"))));
        let (completed, panicked) = (AtomicU64::new(0), AtomicU64::new(0));
        match run_elsewhere(job, &completed, &panicked) {
            Outcome::Panicked(Some(panic)) => assert_eq!(panic.message(), Some("boxed")),
            _ => panic!("the panic was lost"),
        }
        assert_eq!((completed.into_inner(), panicked.into_inner()), (0, 1));
    }

    #[test]
    fn a_refused_box_gives_its_closure_back_whole_even_a_zero_sized_one() {
        let (capture, drops) = capture();
        let task = queued_and_refused(Box::new(Plain(move || {
            let _keep = &capture;
            7
        })));
        let closure = task.into_closure().unwrap();
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        assert_eq!(closure(), 7);
        drop(closure);
        assert_eq!(drops.load(Ordering::SeqCst), 1);

        fn zero_sized() -> u8 {
            3
        }
        let task = queued_and_refused(Box::new(Plain(zero_sized)));
        assert_eq!(task.into_closure().unwrap()(), 3);
        let zst = || 5u8;
        assert_eq!(std::mem::size_of_val(&zst), 0);
        let job = Job::new(Box::new(Plain(zst)));
        assert!(matches!(
            job.run(&CancelToken::new(), Tally::NONE),
            Outcome::Done
        ));
    }

    #[test]
    fn a_shared_cell_delivers_to_its_handle_and_is_freed_with_the_last_reference() {
        let (capture, drops) = capture();
        let task = Shared::new(Plain(move || capture), Packet::new());
        let handle = TaskHandle::in_cell(task.cell() as Arc<dyn AsPacket<Capture>>);
        let (completed, panicked) = (AtomicU64::new(0), AtomicU64::new(0));
        assert!(matches!(
            run_elsewhere(Job::new(task), &completed, &panicked),
            Outcome::Done
        ));
        assert_eq!(completed.load(Ordering::SeqCst), 1);
        let result = handle.join().unwrap();
        assert_eq!(drops.load(Ordering::SeqCst), 0); // moved out whole, not dropped
        drop(result);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_shared_cell_whose_handle_is_gone_runs_and_drops_its_result_on_the_worker() {
        let (capture, drops) = capture();
        let task = Shared::new(Plain(move || capture), Packet::new());
        drop(TaskHandle::in_cell(
            task.cell() as Arc<dyn AsPacket<Capture>>
        ));
        let (completed, panicked) = (AtomicU64::new(0), AtomicU64::new(0));
        run_elsewhere(Job::new(task), &completed, &panicked);
        assert_eq!(completed.load(Ordering::SeqCst), 1);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_refused_shared_cell_gives_its_closure_back_and_the_handle_never_resolves() {
        let (capture, drops) = capture();
        let task = Shared::new(
            Plain(move || {
                let _keep = &capture;
                9u32
            }),
            Packet::new(),
        );
        let handle = TaskHandle::in_cell(task.cell() as Arc<dyn AsPacket<u32>>);
        let closure = queued_and_refused(task).into_closure().unwrap();
        assert!(!handle.is_finished());
        drop(handle);
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        assert_eq!(closure(), 9);
        drop(closure);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_shared_cell_dropped_unrun_cancels_its_handle_and_drops_its_captures_once() {
        let (capture, drops) = capture();
        let task = Shared::new(
            Plain(move || {
                let _keep = &capture;
            }),
            Packet::new(),
        );
        let handle = TaskHandle::in_cell(task.cell() as Arc<dyn AsPacket<()>>);
        std::thread::scope(|s| {
            let job = Job::new(task);
            s.spawn(move || drop(job));
        });
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert!(handle.join().unwrap_err().is_cancelled());
    }
}
