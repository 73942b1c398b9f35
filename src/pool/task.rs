//! What a queued task is: the user's closure, where its result goes, and how a run is
//! counted.
//!
//! Implementation notes. A fire-and-forget task is its closure alone, boxed (`execute`).
//! A task with a handle is a [`Cell`]: the closure and where its result goes, shared
//! through an `Arc` by the job ([`Shared`]) and the handle. The closure needs no lock:
//! a job has one owner at a time (the queue, a worker, an `on_drop` callback, or the
//! submitter after a refusal), only the job's `Shared` can reach the closure, and the
//! handle reads only the result slot, whose own synchronisation is model-checked. Both
//! shapes travel the queue as a [`Job`](crate::pool::job::Job) (`job.rs`).
//!
//! A task dropped without running is abandoned (the closure is dropped and the
//! handle resolves to `Cancelled`, even if a capture panics on drop), so no handle
//! waits for a task that is gone. After a run, the worker drops its reference under
//! `catch_unwind`: when the handle is gone it is the last one, and a result nobody
//! joined may panic on drop without costing the worker. A refused task goes back to
//! its submitter as the original closure.

use std::fmt;

use crate::cancel::CancelToken;
use crate::panic::drop_quietly;
use crate::panic::Panic;
use crate::pool::handle::{AsPacket, Packet, Running, TaskError, TaskHandle};
use crate::pool::job::{Job, Runnable, Thin};
use crate::sync::cell::UnsafeCell;
use crate::sync::{AtomicU64, Ordering};
use std::ptr::NonNull;
// A std `Arc`, also under loom: the handle shares the cell as a trait object
// (`Arc<dyn AsPacket<T>>`), which loom's `Arc` cannot coerce to, and the job carries
// it as a thin pointer (`Thin`). Its contents synchronise through `crate::sync`.
use std::sync::Arc;

/// How a job ended, for the worker's counters.
pub(crate) enum Outcome {
    Done,
    /// The payload is here only when no handle took it (fire-and-forget tasks).
    Panicked(Option<Panic>),
}

/// Where a run is counted. Counted before the handle resolves, so a caller who has
/// joined a handle sees the task in `stats()`.
#[derive(Clone, Copy)]
pub(crate) struct Tally<'t> {
    pub(crate) completed: Option<&'t AtomicU64>,
    pub(crate) panicked: Option<&'t AtomicU64>,
    /// Only this thread writes the counters (a worker's own slot): a plain
    /// load-and-store suffices, no locked read-modify-write on the hot path.
    pub(crate) exclusive: bool,
}

impl Tally<'_> {
    /// Counts nothing (a task run by an `on_drop` callback is already counted).
    pub(crate) const NONE: Tally<'static> = Tally {
        completed: None,
        panicked: None,
        exclusive: false,
    };

    fn bump(&self, counter: Option<&AtomicU64>) {
        if let Some(counter) = counter {
            if self.exclusive {
                counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
            } else {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A user closure, with or without the pool token.
pub(crate) trait Call: Send {
    type Out;
    type Closure;
    fn call(self, token: &CancelToken) -> Self::Out;
    fn into_closure(self) -> Self::Closure;
}

/// `FnOnce() -> T`.
pub(crate) struct Plain<F>(pub(crate) F);

impl<F: FnOnce() -> T + Send, T> Call for Plain<F> {
    type Out = T;
    type Closure = F;
    fn call(self, _token: &CancelToken) -> T {
        (self.0)()
    }
    fn into_closure(self) -> F {
        self.0
    }
}

/// `FnOnce(&CancelToken) -> T`.
pub(crate) struct Tokened<F>(pub(crate) F);

impl<F: FnOnce(&CancelToken) -> T + Send, T> Call for Tokened<F> {
    type Out = T;
    type Closure = F;
    fn call(self, token: &CancelToken) -> T {
        (self.0)(token)
    }
    fn into_closure(self) -> F {
        self.0
    }
}

/// Where a task's result goes.
pub(crate) trait Deliver<T>: Send + Sync {
    /// Hands the result on; a panic nobody receives comes back.
    fn deliver(&self, result: Result<T, TaskError>) -> Option<Panic>;

    /// The address of the result slot a handle joins (0 when there is none), marked
    /// while the task runs so that joining it from inside is an error, not a hang.
    fn slot(&self) -> usize {
        0
    }
}

/// Fire-and-forget: the value is dropped, a panic goes back to the worker.
pub(crate) struct Nowhere;

impl<T> Deliver<T> for Nowhere {
    fn deliver(&self, result: Result<T, TaskError>) -> Option<Panic> {
        result.err().and_then(TaskError::into_panic)
    }
}

impl<T: Send> Deliver<T> for Packet<T> {
    fn deliver(&self, result: Result<T, TaskError>) -> Option<Panic> {
        self.set(result);
        None
    }

    fn slot(&self) -> usize {
        self as *const Packet<T> as usize
    }
}

impl<T: Send> Deliver<T> for crate::sync::Arc<Packet<T>> {
    fn deliver(&self, result: Result<T, TaskError>) -> Option<Panic> {
        self.set(result);
        None
    }

    fn slot(&self) -> usize {
        &**self as *const Packet<T> as usize
    }
}

/// A task with a handle, as shared by its job and its [`TaskHandle`](crate::pool::TaskHandle):
/// the closure and where its result goes. Owned pools put the result slot inline, so
/// such a task is one allocation.
///
/// The [`TaskHandle`](crate::pool::TaskHandle) holds the cell too. The submitter usually
/// drops the last reference when it joins, so the memory goes back to the submitting
/// thread's allocator cache, which is where the next submit asks for it. A closure
/// larger than `INLINE_CLOSURE_MAX` (pool/mod.rs) gets a separate slot instead, so a
/// handle nobody joins yet never pins a big closure's bytes.
pub(crate) struct Cell<C, D> {
    /// Reached only through the task's one [`Shared`], which takes it out once (to
    /// run it, to drop it unrun, or to give it back to its submitter): no lock.
    call: UnsafeCell<Option<C>>,
    pub(crate) done: D,
}

// SAFETY: `call` is reached only through the task's one `Shared` (not `Clone`, made
// only by `Shared::new` and by `from_raw` of its own pointer, and it needs `&mut` to
// take the closure), so by one thread at a time, and the closure is `Send`. Every
// other reference to the cell (the handle's) reads only `done`, which is `Sync`
// itself; the handle may hold the last reference and drop the cell, `call` included,
// on its own thread, which `C: Send` allows (and `call` is `None` by then on every
// path but a `Shared` dropped outside a job, which the pool never does).
#[allow(unsafe_code)]
unsafe impl<C: Send, D: Sync> Sync for Cell<C, D> {}

/// The job's reference to a [`Cell`], and the sole right to its closure.
pub(crate) struct Shared<C, D>(Arc<Cell<C, D>>);

impl<C, D> Shared<C, D> {
    pub(crate) fn new(call: C, done: D) -> Self {
        Shared(Arc::new(Cell {
            call: UnsafeCell::new(Some(call)),
            done,
        }))
    }

    /// The closure, unless it was already taken.
    #[allow(unsafe_code)]
    fn take(&mut self) -> Option<C> {
        // SAFETY: only a `Shared` reaches `call`, there is one per cell, and `&mut
        // self` excludes any other use of it meanwhile (see `Sync for Cell`).
        self.0.call.with_mut(|call| unsafe { (*call).take() })
    }
}

// SAFETY: the round trip of the `Arc` inside, which is `Thin`.
#[allow(unsafe_code)]
unsafe impl<C, D> Thin for Shared<C, D> {
    fn into_raw(self) -> NonNull<()> {
        self.0.into_raw()
    }

    unsafe fn from_raw(raw: NonNull<()>) -> Self {
        // SAFETY: `raw` came from `Shared::into_raw`, that is from the `Arc` inside
        // (this function's contract), and is used once.
        Shared(unsafe { <Arc<Cell<C, D>> as Thin>::from_raw(raw) })
    }
}

impl<C, T> Shared<C, Packet<T>>
where
    C: Send + 'static,
    T: Send + 'static,
{
    /// The task's handle, reading the result slot inside the cell (and nothing else).
    pub(crate) fn handle(&self) -> TaskHandle<T> {
        TaskHandle::in_cell(Arc::clone(&self.0) as Arc<dyn AsPacket<T>>)
    }
}

/// A task with a handle: the cell the handle shares.
impl<C, D> Runnable for Shared<C, D>
where
    C: Call,
    D: Deliver<C::Out>,
{
    type Closure = C::Closure;

    fn run(mut self, token: &CancelToken, tally: Tally<'_>) -> Outcome {
        let outcome = match self.take() {
            Some(call) => {
                let _running = Running::enter(self.0.done.slot());
                call_and_deliver(call, &self.0.done, token, tally)
            }
            None => Outcome::Done,
        };
        // This may be the last reference (the handle is gone), dropping a result
        // nobody will join, whose destructor may panic: that must not cost the worker.
        // The panic has no handle to go to: it goes to the report, uncounted (the
        // task itself completed).
        match (Panic::catch_any(move || drop(self)), outcome) {
            (Err(panic), Outcome::Done | Outcome::Panicked(None)) => Outcome::Panicked(Some(panic)),
            (Err(panic), outcome) => {
                drop_quietly(panic);
                outcome
            }
            (Ok(()), outcome) => outcome,
        }
    }

    /// Drops the closure and resolves the handle to `Cancelled`, even if a capture
    /// panics on drop; the panic then goes on to whoever dropped the job.
    fn abandon(mut self) {
        if let Some(call) = self.take() {
            let dropped = Panic::catch_any(move || drop(call));
            self.0.done.deliver(Err(TaskError::Cancelled));
            if let Err(panic) = dropped {
                panic.resume();
            }
        }
    }

    fn into_closure(mut self) -> Option<C::Closure> {
        self.take().map(Call::into_closure)
    }
}

/// A fire-and-forget task: its closure alone, boxed. A panic goes back to the worker.
impl<C: Call> Runnable for Box<C> {
    type Closure = C::Closure;

    fn run(self, token: &CancelToken, tally: Tally<'_>) -> Outcome {
        call_and_deliver(*self, &Nowhere, token, tally)
    }

    fn abandon(self) {
        drop(self);
    }

    fn into_closure(self) -> Option<C::Closure> {
        Some(Call::into_closure(*self))
    }
}

/// Calls the closure and hands its result on, counting the run.
fn call_and_deliver<C: Call, D: Deliver<C::Out>>(
    call: C,
    done: &D,
    token: &CancelToken,
    tally: Tally<'_>,
) -> Outcome {
    let result = Panic::catch_any(|| call.call(token));
    match &result {
        Ok(_) => tally.bump(tally.completed),
        Err(_) => tally.bump(tally.panicked),
    }
    match result {
        Ok(value) => {
            done.deliver(Ok(value));
            Outcome::Done
        }
        Err(panic) => Outcome::Panicked(done.deliver(Err(TaskError::Panicked(panic)))),
    }
}

/// An owned task's result slot as its handle sees it: inside the shared cell.
impl<C, T> AsPacket<T> for Cell<C, Packet<T>>
where
    C: Send,
    T: Send,
{
    fn packet(&self) -> &Packet<T> {
        &self.done
    }
}

/// A task an overflow policy took out of the queue (or never let in), handed to the
/// pool's `on_drop` callback.
///
/// Run it with [`run`](DroppedTask::run) (on the current thread, its result goes to
/// its [`TaskHandle`](crate::pool::TaskHandle) as usual) or drop it, which resolves its handle
/// to [`TaskError::Cancelled`]. Either way it is already counted in
/// [`PoolStats::dropped`](crate::pool::PoolStats::dropped).
///
/// # Example
///
/// ```
/// use corral::{Overflow, WorkerPool};
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
///
/// let shed = Arc::new(AtomicUsize::new(0));
/// let counter = shed.clone();
/// let pool = WorkerPool::builder()
///     .workers(1)
///     .queue_capacity(1)
///     .overflow(Overflow::DropNewest)
///     .on_drop(move |task| {
///         counter.fetch_add(1, Ordering::SeqCst);
///         drop(task); // its handle resolves to `Cancelled`
///     })
///     .build()?;
/// let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
/// let blocker = pool.submit(move || gate_rx.recv().ok()).unwrap();
/// while pool.stats().busy == 0 {
///     std::thread::yield_now(); // until the worker holds the blocker
/// }
/// let queued = pool.submit(|| 1).unwrap(); // takes the one queue slot
/// let newest = pool.submit(|| 2).unwrap(); // queue full: shed to `on_drop`
/// assert!(newest.join().unwrap_err().is_cancelled());
/// gate_tx.send(()).unwrap();
/// assert_eq!(queued.join().unwrap(), 1);
/// # blocker.join().unwrap();
/// assert_eq!(shed.load(Ordering::SeqCst), 1);
/// assert_eq!(pool.shutdown().dropped, 1);
/// # Ok::<(), corral::ConfigError>(())
/// ```
pub struct DroppedTask<'a> {
    job: Job<'a>,
}

impl<'a> DroppedTask<'a> {
    pub(crate) fn new(job: Job<'a>) -> Self {
        DroppedTask { job }
    }

    /// Runs the task on the current thread; its result (or panic) goes to its handle.
    /// A panic of a fire-and-forget task is caught and discarded.
    pub fn run(self) {
        let token = CancelToken::new();
        drop(self.job.run(&token, Tally::NONE));
    }
}

impl fmt::Debug for DroppedTask<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DroppedTask { .. }")
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::pool::handle::packet;

    struct Bomb;

    impl Drop for Bomb {
        fn drop(&mut self) {
            panic!("a capture that panics when dropped");
        }
    }

    #[test]
    fn a_job_dropped_unrun_resolves_its_handle_even_if_a_capture_panics_on_drop() {
        let (slot, handle) = packet::<u32>();
        let bomb = Bomb;
        let job = Job::new(Shared::new(
            Plain(move || {
                let _keep = &bomb;
                1
            }),
            slot,
        ));
        let dropped = Panic::catch_any(move || drop(job));
        assert_eq!(
            dropped.unwrap_err().message(),
            Some("a capture that panics when dropped")
        );
        assert!(handle.join().unwrap_err().is_cancelled());
    }

    #[test]
    fn a_job_dropped_unrun_resolves_its_inline_handle() {
        let task = Shared::new(Plain(|| 7u32), Packet::new());
        let handle = task.handle();
        drop(Job::new(task));
        assert!(handle.join().unwrap_err().is_cancelled());
    }

    #[test]
    fn a_result_that_panics_on_drop_does_not_escape_the_run() {
        struct LoudResult;
        impl Drop for LoudResult {
            fn drop(&mut self) {
                panic!("result dropped");
            }
        }
        let task = Shared::new(Plain(|| LoudResult), Packet::new());
        let handle = task.handle();
        drop(handle); // nobody will join: the job holds the last reference
        let outcome = Job::new(task).run(&CancelToken::new(), Tally::NONE);
        // The destructor's panic goes to the report, as no handle takes it.
        match outcome {
            Outcome::Panicked(Some(panic)) => assert_eq!(panic.message(), Some("result dropped")),
            _ => panic!("the destructor's panic was lost"),
        }
    }
}
