//! Type-erased queued tasks.
//!
//! Implementation notes. The queue carries `Job<'a> = Box<dyn Task + 'a>`: one
//! allocation per task, the same as a hand-rolled `Box<dyn FnOnce()>` pool. A refused
//! task must go back to its submitter as the original closure, so the erasure has to be
//! reversible. Owned pools (`'static` tasks) box an [`Owned`] cell, which can turn
//! itself into `Box<dyn Any>` and be downcast back: the hot path pays nothing for that.
//! Scoped pools cannot use `Any` (their tasks borrow), so they box a [`Shared`] cell
//! whose closure sits in an `Arc<Mutex<Option<_>>>` that the submitter also holds until
//! the send succeeds.

use std::any::Any;
use std::fmt;

use crate::cancel::CancelToken;
use crate::panic::Panic;
use crate::pool::handle::{Completer, TaskError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

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

pub(crate) trait Task: Send {
    fn run(self: Box<Self>, token: &CancelToken, tally: Tally<'_>) -> Outcome;

    /// `Some` for cells of `'static` tasks, so a refused task can be downcast back.
    fn into_any(self: Box<Self>) -> Option<Box<dyn Any + Send>> {
        None
    }
}

pub(crate) type Job<'a> = Box<dyn Task + 'a>;

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

fn finish<T>(result: Result<T, Panic>, done: Option<Completer<T>>, tally: Tally<'_>) -> Outcome {
    match &result {
        Ok(_) => tally.bump(tally.completed),
        Err(_) => tally.bump(tally.panicked),
    }
    match (result, done) {
        (Ok(value), Some(done)) => {
            done.complete(Ok(value));
            Outcome::Done
        }
        (Ok(_), None) => Outcome::Done,
        (Err(panic), Some(done)) => {
            done.complete(Err(TaskError::Panicked(panic)));
            Outcome::Panicked(None)
        }
        (Err(panic), None) => Outcome::Panicked(Some(panic)),
    }
}

/// A task and where its result goes (nowhere for fire-and-forget tasks).
pub(crate) struct Cell<C: Call> {
    pub(crate) call: C,
    pub(crate) done: Option<Completer<C::Out>>,
}

impl<C: Call> Task for Cell<C>
where
    C::Out: Send,
{
    fn run(self: Box<Self>, token: &CancelToken, tally: Tally<'_>) -> Outcome {
        let Cell { call, done } = *self;
        finish(Panic::catch_any(|| call.call(token)), done, tally)
    }
}

/// A `'static` cell that can be downcast back after a refusal.
pub(crate) struct Owned<C: Call>(pub(crate) Cell<C>);

impl<C: Call + 'static> Task for Owned<C>
where
    C::Out: Send + 'static,
{
    fn run(self: Box<Self>, token: &CancelToken, tally: Tally<'_>) -> Outcome {
        let Owned(Cell { call, done }) = *self;
        finish(Panic::catch_any(|| call.call(token)), done, tally)
    }

    fn into_any(self: Box<Self>) -> Option<Box<dyn Any + Send>> {
        Some(self)
    }
}

impl<C: Call + 'static> Owned<C>
where
    C::Out: Send + 'static,
{
    /// The closure of a job built by `Owned::job` for this `C`.
    pub(crate) fn reclaim(job: Job<'static>) -> Option<C::Closure> {
        let owned = job.into_any()?.downcast::<Owned<C>>().ok()?;
        let Owned(Cell { call, done }) = *owned;
        drop(done);
        Some(call.into_closure())
    }
}

/// A borrowing cell whose closure the submitter can take back (scoped pools).
pub(crate) struct Shared<C: Call> {
    pub(crate) call: Arc<Mutex<Option<C>>>,
    pub(crate) done: Option<Completer<C::Out>>,
}

impl<C: Call> Task for Shared<C>
where
    C::Out: Send,
{
    fn run(self: Box<Self>, token: &CancelToken, tally: Tally<'_>) -> Outcome {
        let Shared { call, done } = *self;
        let taken = call.lock().take();
        match taken {
            Some(call) => finish(Panic::catch_any(|| call.call(token)), done, tally),
            None => Outcome::Done,
        }
    }
}

/// A task an overflow policy took out of the queue (or never let in), handed to the
/// pool's `on_drop` callback.
///
/// Run it with [`run`](DroppedTask::run) (on the current thread, its result goes to
/// its [`TaskHandle`](crate::TaskHandle) as usual) or drop it, which resolves its handle
/// to [`TaskError::Cancelled`]. Either way it is already counted in
/// [`PoolStats::dropped`](crate::PoolStats::dropped).
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
