//! A queued task behind one thin pointer.
//!
//! Implementation notes. The queue's slots carry [`Job`]s: a pointer to the task and a
//! `&'static` table of the two things a queue ever does with one (run it, or drop it
//! unrun), one table per concrete task type. A job is two words, the size of a boxed
//! trait object, but unlike `Box<dyn ..>` or `Arc<dyn ..>` it can point at either.
//! So a fire-and-forget task is just its boxed closure (one allocation of the
//! closure's own size, no result slot, no reference count, no lock: the cost of a
//! hand-rolled pool's `Box<dyn FnOnce()>`), while a task with a handle is the
//! reference-counted cell its handle shares (`task.rs`). An enum of the two shapes
//! would carry a tag and grow every channel slot, and a bigger slot costs the hot path
//! more than it saves (BENCHMARKS.md).
//!
//! A refused task goes back to its submitter as the very value it was queued as
//! ([`Job::into_task`]). This module, its one call site (`Core::push`), the closure
//! slot in `task.rs` and the result slot in `handle.rs` are the pool's only `unsafe`
//! code; `scripts/test` runs this module's tests and `pool::tests` (which refuse tasks
//! through a real pool's `Core::push`) under Miri when a nightly toolchain with Miri is
//! installed.
#![allow(unsafe_code)]

use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ptr::NonNull;
use std::sync::Arc;

use crate::cancel::CancelToken;
use crate::pool::task::{Outcome, Tally};

/// An owning pointer that can travel as a thin pointer and come back.
///
/// # Safety
///
/// `from_raw(into_raw(x))` must give back `x`, ownership and all: a [`Job`] made from
/// an implementor runs or drops it through that round trip.
pub(crate) unsafe trait Thin: Sized {
    fn into_raw(self) -> NonNull<()>;

    /// # Safety
    ///
    /// `raw` came from `Self::into_raw` (the same type) and is not used again.
    unsafe fn from_raw(raw: NonNull<()>) -> Self;
}

// SAFETY: `Box::leak` and `Box::from_raw` are inverses.
unsafe impl<T> Thin for Box<T> {
    fn into_raw(self) -> NonNull<()> {
        NonNull::from(Box::leak(self)).cast()
    }

    unsafe fn from_raw(raw: NonNull<()>) -> Self {
        // SAFETY: `raw` is the pointer `Box::leak` gave for a `Box<T>` (caller's
        // contract), and ownership comes back exactly once.
        unsafe { Box::from_raw(raw.cast::<T>().as_ptr()) }
    }
}

// SAFETY: `Arc::into_raw` and `Arc::from_raw` are inverses (one strong reference).
unsafe impl<T> Thin for Arc<T> {
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

    /// Where the task is, to tell one job from another in debug assertions (not
    /// unique: zero-sized tasks share an address).
    pub(crate) fn addr(&self) -> *const () {
        self.raw.as_ptr()
    }

    /// The task this job was made from, without running or abandoning it.
    ///
    /// Only the code that built the job can name `R`, and the queue hands back the job
    /// it was given, never another: that is the contract the one call site
    /// (`Core::push`) relies on.
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
    //! Every shape of job down every path, with a closure that counts its runs and the
    //! drops of its captures: the pool's `unsafe` is here, so `scripts/test` also runs
    //! these under Miri.
    use super::*;
    use crate::leak::LeakCheck;
    use crate::pool::handle::{Packet, TaskHandle};
    use crate::pool::task::{Plain, Shared};
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    /// Counts its own drops.
    struct Capture(Arc<AtomicUsize>);

    impl Drop for Capture {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// How often a probed closure ran, and how often its captures were dropped.
    struct Probe {
        runs: Arc<AtomicUsize>,
        drops: Arc<AtomicUsize>,
    }

    impl Probe {
        fn runs(&self) -> usize {
            self.runs.load(Ordering::SeqCst)
        }

        fn drops(&self) -> usize {
            self.drops.load(Ordering::SeqCst)
        }
    }

    /// A closure returning `value`, counted by the `Probe`.
    fn probed<T: Copy + Send + 'static>(value: T) -> (impl Fn() -> T + Send + 'static, Probe) {
        let probe = Probe {
            runs: Arc::new(AtomicUsize::new(0)),
            drops: Arc::new(AtomicUsize::new(0)),
        };
        let capture = Capture(Arc::clone(&probe.drops));
        let runs = Arc::clone(&probe.runs);
        let f = move || {
            let _keep = &capture;
            runs.fetch_add(1, Ordering::SeqCst);
            value
        };
        (f, probe)
    }

    /// A task with a handle whose result slot is inside its cell, as an owned pool's.
    fn with_handle<F, T>(f: F) -> (Shared<Plain<F>, Packet<T>>, TaskHandle<T>)
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let task = Shared::new(Plain(f), Packet::new());
        let handle = task.handle();
        (task, handle)
    }

    /// Where runs are counted, as a worker's slot.
    #[derive(Default)]
    struct Counts {
        completed: AtomicU64,
        panicked: AtomicU64,
    }

    impl Counts {
        fn tally(&self) -> Tally<'_> {
            Tally {
                completed: Some(&self.completed),
                panicked: Some(&self.panicked),
                exclusive: false,
            }
        }

        fn get(&self) -> (u64, u64) {
            (
                self.completed.load(Ordering::SeqCst),
                self.panicked.load(Ordering::SeqCst),
            )
        }
    }

    /// Runs `job` on another thread, as a worker would.
    fn run_elsewhere(job: Job<'static>, counts: &Counts) -> Outcome {
        let _check = LeakCheck::new();
        std::thread::scope(|s| {
            s.spawn(move || job.run(&CancelToken::new(), counts.tally()))
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
        let (f, probe) = probed(());
        let counts = Counts::default();
        let outcome = run_elsewhere(Job::new(Box::new(Plain(f))), &counts);
        assert!(matches!(outcome, Outcome::Done));
        assert_eq!((probe.runs(), probe.drops()), (1, 1));
        assert_eq!(counts.get(), (1, 0));
    }

    #[test]
    fn a_boxed_closure_dropped_unrun_drops_its_captures_once_and_never_runs() {
        let (f, probe) = probed(());
        drop(Job::new(Box::new(Plain(f))));
        assert_eq!((probe.runs(), probe.drops()), (0, 1));
    }

    #[test]
    fn a_boxed_panic_comes_back_to_the_worker_with_its_payload() {
        let counts = Counts::default();
        match run_elsewhere(Job::new(Box::new(Plain(|| panic!("boxed")))), &counts) {
            Outcome::Panicked(Some(panic)) => assert_eq!(panic.message(), Some("boxed")),
            _ => panic!("the panic was lost"),
        }
        assert_eq!(counts.get(), (0, 1));
    }

    #[test]
    fn a_refused_box_gives_its_closure_back_whole_even_a_zero_sized_one() {
        let (f, probe) = probed(7);
        let closure = queued_and_refused(Box::new(Plain(f)))
            .into_closure()
            .unwrap();
        assert_eq!((probe.runs(), probe.drops()), (0, 0));
        assert_eq!(closure(), 7);
        drop(closure);
        assert_eq!((probe.runs(), probe.drops()), (1, 1));

        let zero_sized = || 5u8;
        assert_eq!(std::mem::size_of_val(&zero_sized), 0);
        let closure = queued_and_refused(Box::new(Plain(zero_sized)))
            .into_closure()
            .unwrap();
        assert_eq!(closure(), 5);
        let job = Job::new(Box::new(Plain(zero_sized)));
        let outcome = job.run(&CancelToken::new(), Tally::NONE);
        assert!(matches!(outcome, Outcome::Done));
    }

    #[test]
    fn a_shared_cell_delivers_to_its_handle_and_is_freed_with_the_last_reference() {
        let (keeper, probe) = probed(());
        let (task, handle) = with_handle(move || keeper); // the result holds the capture
        let counts = Counts::default();
        assert!(matches!(
            run_elsewhere(Job::new(task), &counts),
            Outcome::Done
        ));
        assert_eq!(counts.get(), (1, 0));
        let result = handle.join().unwrap();
        assert_eq!(probe.drops(), 0); // moved out whole, not dropped
        drop(result);
        assert_eq!(probe.drops(), 1);
    }

    #[test]
    fn a_shared_cell_whose_handle_is_gone_runs_and_drops_its_result_on_the_worker() {
        let (keeper, probe) = probed(());
        let (task, handle) = with_handle(move || keeper); // the result holds the capture
        drop(handle);
        let counts = Counts::default();
        run_elsewhere(Job::new(task), &counts);
        assert_eq!(counts.get(), (1, 0));
        assert_eq!(probe.drops(), 1);
    }

    #[test]
    fn a_refused_shared_cell_gives_its_closure_back_and_the_handle_never_resolves() {
        let (f, probe) = probed(9u32);
        let (task, handle) = with_handle(f);
        let closure = queued_and_refused(task).into_closure().unwrap();
        assert!(!handle.is_finished());
        drop(handle);
        assert_eq!((probe.runs(), probe.drops()), (0, 0));
        assert_eq!(closure(), 9);
        drop(closure);
        assert_eq!((probe.runs(), probe.drops()), (1, 1));
    }

    #[test]
    fn a_shared_cell_dropped_unrun_cancels_its_handle_and_drops_its_captures_once() {
        let (f, probe) = probed(());
        let (task, handle) = with_handle(f);
        let _check = LeakCheck::new();
        std::thread::scope(|s| {
            let job = Job::new(task);
            s.spawn(move || drop(job));
        });
        assert_eq!((probe.runs(), probe.drops()), (0, 1));
        assert!(handle.join().unwrap_err().is_cancelled());
    }
}
