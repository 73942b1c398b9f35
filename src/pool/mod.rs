//! A fixed pool of worker threads with a bounded queue: backpressure, overflow
//! policies that hand every losing task back, panics as data, and a shutdown that
//! joins every thread and reports what ran.
//!
//! [`WorkerPool`] owns its threads; [`ScopedPool`] runs them in a
//! [`corral::scope`](crate::scope()), so its tasks may borrow. Both are the one type
//! [`Pool`] and share every method. `submit` returns a [`TaskHandle`] to join;
//! `execute` is fire and forget; each comes in the five bounded forms, and a refusal
//! hands the closure back inside a [`SubmitError`]. An [`Overflow`]
//! policy decides what a full queue does; every task it displaces goes to the
//! `on_drop` callback as a [`DroppedTask`] and is counted. `map` ([`PoolMap`]) gives
//! ordered results with bounded work in flight. `shutdown` and its forms end in a
//! [`ShutdownReport`]; [`PoolStats`] is a live snapshot.
//!
//! # What a task must do
//!
//! Return. A running task is never interrupted: `shutdown_now` cancels the token of
//! tasks submitted `with_token`, and a task that ignores it runs to its end. A task
//! that waits without a bound for another task of its own pool can wait for ever
//! when every worker does the same; the pool runs a blocking submit from one of its
//! own workers on that worker instead of deadlocking on the full queue.
//
// Layout: this front (one generic `Pool` over the sealed `PoolThreads`) > `core.rs`
// the engine > `task.rs` one task from submit to join, with the pool's `unsafe`;
// `map.rs` is the ordered map. `task.rs` imports nothing of the pool.

mod core;
mod exits;
mod idle;
mod map;
mod task;

use std::fmt;
use std::panic::Location;
use std::sync::Arc;
use std::time::{Duration, Instant};

use self::core::{work, Core, OnDropFn, Seen};
use self::task::{Call, Plain, Runnable, Tokened};
use crate::cancel::{CancelReason, CancelToken};
use crate::clock::Clock;
use crate::config::{check_name, ConfigError};
use crate::observe::{Owner, Role, Stuck, Watchdog};
use crate::overflow::Overflow;
use crate::queue::Refused;
use crate::scope::Scope;
use crate::spawn::{start, SpawnError, StartError, ThreadSpec};
use crate::sync::time;
use crate::wait::{Interrupted, Until};

pub use self::core::{PoolStats, ShutdownReport};
pub use self::map::PoolMap;
pub use self::task::{DroppedTask, TaskError, TaskHandle};

/// Why a task was not accepted. The task travels back inside, untouched.
///
/// Carrying the task makes this error as `Send`/`Sync` as the task and gives it a type
/// parameter; [`without_task`](SubmitError::without_task) (or `?` into a
/// [`SubmitErrorKind`]) drops the task and keeps only why, for error enums and
/// `Box<dyn Error + Send + Sync>`.
///
/// # Example
///
/// ```
/// use corral::{pool::SubmitError, WorkerPool};
///
/// let pool = WorkerPool::builder().workers(1).queue_capacity(1).build()?;
/// let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
/// let busy = pool.submit(move || gate_rx.recv().ok()).unwrap();
/// # while pool.stats().busy == 0 { std::thread::yield_now(); }
/// let queued = pool.submit(|| 1).unwrap(); // fills the one queue slot
/// match pool.try_submit(|| 2) {
///     Err(SubmitError::Full(task)) => assert_eq!(task(), 2), // handed back, runnable
///     other => panic!("expected Full, got {other:?}"),
/// }
/// gate_tx.send(()).unwrap();
/// # busy.join().unwrap(); queued.join().unwrap();
/// # Ok::<(), corral::StartError>(())
/// ```
#[non_exhaustive]
pub enum SubmitError<F> {
    /// No room (the queue is full, or a group is at its limit) and the call does not
    /// wait.
    Full(F),
    /// The pool is closed or shut down (or its token is cancelled).
    Closed(F),
    /// The timeout or deadline passed while waiting for room.
    Timeout(F),
    /// The caller's token was cancelled while waiting for room.
    Cancelled(F, CancelReason),
}

impl<F> SubmitError<F> {
    /// The task that was not accepted.
    pub fn into_inner(self) -> F {
        match self {
            SubmitError::Full(f)
            | SubmitError::Closed(f)
            | SubmitError::Timeout(f)
            | SubmitError::Cancelled(f, _) => f,
        }
    }

    /// Whether there was no room.
    pub fn is_full(&self) -> bool {
        matches!(self, SubmitError::Full(_))
    }

    /// Whether the pool was closed.
    pub fn is_closed(&self) -> bool {
        matches!(self, SubmitError::Closed(_))
    }

    /// Whether the wait timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, SubmitError::Timeout(_))
    }

    /// Whether the caller's token stopped the wait.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, SubmitError::Cancelled(..))
    }

    /// Why the task was not accepted, keeping the task in `self`.
    ///
    /// ```
    /// use corral::pool::{SubmitError, SubmitErrorKind};
    ///
    /// let err = SubmitError::Full(|| 7);
    /// assert_eq!(err.kind(), SubmitErrorKind::Full);
    /// assert_eq!(err.into_inner()(), 7); // the task is still there
    /// ```
    pub fn kind(&self) -> SubmitErrorKind {
        match self {
            SubmitError::Full(_) => SubmitErrorKind::Full,
            SubmitError::Closed(_) => SubmitErrorKind::Closed,
            SubmitError::Timeout(_) => SubmitErrorKind::Timeout,
            SubmitError::Cancelled(_, reason) => SubmitErrorKind::Cancelled(reason.clone()),
        }
    }

    /// Drops the task and keeps only why it was refused: an error without the closure's
    /// type, for `?` into `Box<dyn Error + Send + Sync>` or an error enum of your own.
    ///
    /// The closure (and whatever it captured) is dropped here, on the calling thread,
    /// like any value of the caller's: should a captured value's `Drop` panic, the
    /// panic reaches the caller. Use [`into_inner`](SubmitError::into_inner) first to
    /// keep or retry the task.
    ///
    /// ```
    /// use corral::{pool::SubmitErrorKind, WorkerPool};
    ///
    /// #[derive(Debug)]
    /// enum AppError {
    ///     Busy(SubmitErrorKind),
    /// }
    ///
    /// let pool = WorkerPool::builder().workers(1).build()?;
    /// pool.close();
    /// let err = pool
    ///     .try_submit(|| 1)
    ///     .map_err(|e| AppError::Busy(e.without_task()))
    ///     .unwrap_err();
    /// assert!(matches!(err, AppError::Busy(SubmitErrorKind::Closed)));
    /// # Ok::<(), corral::StartError>(())
    /// ```
    pub fn without_task(self) -> SubmitErrorKind {
        let kind = self.kind();
        drop(self);
        kind
    }

    pub(crate) fn from_refused(refused: Refused<F>) -> Self {
        match refused {
            Refused::Full(task) => SubmitError::Full(task),
            Refused::Closed(task) => SubmitError::Closed(task),
            Refused::TimedOut(task) => SubmitError::Timeout(task),
            Refused::Cancelled(task, reason) => SubmitError::Cancelled(task, reason),
        }
    }
}

impl<F> fmt::Debug for SubmitError<F> {
    /// Shows the variant and the cancel reason, never the task (`F` need not be
    /// `Debug`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::Full(_) => f.write_str("Full(..)"),
            SubmitError::Closed(_) => f.write_str("Closed(..)"),
            SubmitError::Timeout(_) => f.write_str("Timeout(..)"),
            SubmitError::Cancelled(_, reason) => write!(f, "Cancelled(.., {reason:?})"),
        }
    }
}

impl<F> fmt::Display for SubmitError<F> {
    /// The same text as its [`SubmitErrorKind`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.kind(), f)
    }
}

impl<F> std::error::Error for SubmitError<F> {}

/// Why a task was not accepted, without the task: a [`SubmitError`] whose closure was
/// dropped ([`SubmitError::without_task`]), or described ([`SubmitError::kind`]).
///
/// `SubmitError<F>` carries the closure so that nothing handed to the pool is lost;
/// that also makes it only as `Send`/`Sync` as the closure, and gives it a type
/// parameter that an error enum or `Box<dyn Error + Send + Sync>` cannot name. This
/// kind is `Copy`, `'static`, `Send + Sync`, and goes through `?` into any of them.
///
/// # Example
///
/// ```
/// use corral::{pool::SubmitErrorKind, WorkerPool};
///
/// fn start(pool: &WorkerPool) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
///     let tally = std::cell::Cell::new(1); // `Send` but not `Sync`, and so is the task
///     // `SubmitError<F>` is not `Sync` here; its kind is.
///     let _handle = pool.try_submit(move || tally.get()).map_err(|e| e.without_task())?;
///     Ok(())
/// }
///
/// let pool = WorkerPool::builder().workers(1).build()?;
/// pool.close();
/// let err = start(&pool).unwrap_err();
/// assert_eq!(err.downcast_ref(), Some(&SubmitErrorKind::Closed));
/// assert_eq!(err.to_string(), "not accepting tasks: closed");
/// # Ok::<(), corral::StartError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SubmitErrorKind {
    /// No room, and the call does not wait ([`SubmitError::Full`]).
    Full,
    /// The pool is closed or shut down ([`SubmitError::Closed`]).
    Closed,
    /// The timeout or deadline passed while waiting for room ([`SubmitError::Timeout`]).
    Timeout,
    /// The caller's token was cancelled while waiting for room
    /// ([`SubmitError::Cancelled`]).
    Cancelled(CancelReason),
}

impl fmt::Display for SubmitErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitErrorKind::Full => f.write_str("no room for the task"),
            SubmitErrorKind::Closed => f.write_str("not accepting tasks: closed"),
            SubmitErrorKind::Timeout => f.write_str("timed out waiting for room for the task"),
            SubmitErrorKind::Cancelled(reason) => {
                write!(f, "stopped waiting for room for the task: {reason}")
            }
        }
    }
}

impl std::error::Error for SubmitErrorKind {}

/// Drops the task, as [`SubmitError::without_task`].
impl<F> From<SubmitError<F>> for SubmitErrorKind {
    fn from(error: SubmitError<F>) -> Self {
        error.without_task()
    }
}

impl<F: PartialEq> PartialEq for SubmitError<F> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (SubmitError::Full(a), SubmitError::Full(b))
            | (SubmitError::Closed(a), SubmitError::Closed(b))
            | (SubmitError::Timeout(a), SubmitError::Timeout(b)) => a == b,
            (SubmitError::Cancelled(a, x), SubmitError::Cancelled(b, y)) => a == b && x == y,
            _ => false,
        }
    }
}

/// Why [`wait_idle`](Pool::wait_idle) (or one of its bounded forms) returned before
/// every task accepted before the call had finished.
///
/// # Example
///
/// ```
/// use corral::{pool::IdleError, WorkerPool};
/// use std::time::Duration;
///
/// let pool = WorkerPool::builder().workers(1).build()?;
/// let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
/// pool.execute(move || { let _ = gate_rx.recv(); }).unwrap();
/// assert_eq!(pool.try_wait_idle(), Err(IdleError::Busy));
/// assert_eq!(pool.wait_idle_timeout(Duration::from_millis(5)), Err(IdleError::Timeout));
/// gate_tx.send(()).unwrap();
/// pool.wait_idle().unwrap();
/// assert_eq!(pool.stats().completed, 1);
/// # Ok::<(), corral::StartError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IdleError {
    /// [`try_wait_idle`](Pool::try_wait_idle) found a task not finished yet.
    Busy,
    /// The timeout or deadline passed first.
    Timeout,
    /// The caller's token was cancelled first.
    Cancelled(CancelReason),
    /// Called from inside one of the pool's own tasks, which cannot finish while it
    /// waits: refused at once instead of waiting for ever.
    InsideOwnTask,
}

impl fmt::Display for IdleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdleError::Busy => f.write_str("the pool has unfinished tasks"),
            IdleError::Timeout => f.write_str("timed out waiting for the pool's tasks"),
            IdleError::Cancelled(reason) => {
                write!(f, "stopped waiting for the pool's tasks: {reason}")
            }
            IdleError::InsideOwnTask => {
                f.write_str("waited for the pool's tasks from inside one of them")
            }
        }
    }
}

impl std::error::Error for IdleError {}

impl From<Interrupted> for IdleError {
    fn from(why: Interrupted) -> Self {
        match why {
            Interrupted::TimedOut => IdleError::Timeout,
            Interrupted::Cancelled(reason) => IdleError::Cancelled(reason),
        }
    }
}

/// Configures a [`WorkerPool`] or a [`ScopedPool`].
///
/// Defaults: `workers = num_cpus::get()`, `queue_capacity = 1024`,
/// [`Overflow::Block`], no name and threads named `corral-pool-N`, the platform's
/// stack size, no `on_drop` callback, no watchdog.
///
/// # Example
///
/// ```
/// use corral::{Overflow, WorkerPool};
///
/// let pool = WorkerPool::builder()
///     .workers(4)
///     .queue_capacity(64)
///     .overflow(Overflow::CallerRuns)
///     .thread_name("resize")
///     .stack_size(256 * 1024)
///     .build()?;
/// assert_eq!(pool.stats().workers, 4);
///
/// let err = WorkerPool::builder().workers(0).build().unwrap_err();
/// let config = err.config().unwrap(); // or a thread the OS refused: err.spawn_error()
/// assert_eq!((config.field(), config.value()), ("workers", "0"));
/// # Ok::<(), corral::StartError>(())
/// ```
#[derive(Clone)]
#[must_use = "a builder does nothing until `build` or `build_scoped` is called"]
pub struct PoolBuilder {
    workers: usize,
    queue_capacity: usize,
    overflow: Overflow,
    name: Option<Arc<str>>,
    thread_name: Option<String>,
    stack_size: Option<usize>,
    on_drop: Option<Arc<OnDropFn>>,
    watchdog: Option<(Duration, Arc<OnStuckFn>)>,
    clock: Option<Arc<dyn Clock>>,
    #[cfg(test)]
    fail_spawn_at: Option<usize>,
}

type OnStuckFn = dyn Fn(&Stuck) + Send + Sync;

const MAX_WORKERS: usize = WorkerPool::MAX_WORKERS;
const MAX_CAPACITY: usize = WorkerPool::MAX_QUEUE_CAPACITY;
const MIN_STACK: usize = 16 * 1024;
const MAX_STACK: usize = 1 << 30;

impl Default for PoolBuilder {
    fn default() -> Self {
        PoolBuilder {
            workers: num_cpus::get().max(1),
            queue_capacity: 1024,
            overflow: Overflow::Block,
            name: None,
            thread_name: None,
            stack_size: None,
            on_drop: None,
            watchdog: None,
            clock: None,
            #[cfg(test)]
            fail_spawn_at: None,
        }
    }
}

impl PoolBuilder {
    /// Number of worker threads, 1 to 4096.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// Capacity of the task queue, 1 to 2^24.
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity;
        self
    }

    /// What `submit` does when the queue is full (default [`Overflow::Block`]).
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// Threads are named `corral-{name}-{index}` (an empty name gives
    /// `corral--{index}`); without it, the pool's [`name`](PoolBuilder::name), or
    /// `pool`. A name with a NUL byte is refused by `build` with a [`ConfigError`]
    /// naming `thread_name`.
    pub fn thread_name(mut self, name: impl Into<String>) -> Self {
        self.thread_name = Some(name.into());
        self
    }

    /// A name for the pool, shown in its `Debug`, in the thread dump (its workers'
    /// owner, and the queue a blocked submitter waits on), in watchdog reports, events
    /// and metrics. Unless [`thread_name`](PoolBuilder::thread_name) says otherwise,
    /// workers are named `corral-{name}-{index}`. A name with a NUL byte is refused
    /// by `build` with a [`ConfigError`] naming `name`.
    ///
    /// ```
    /// let pool = corral::WorkerPool::builder().workers(1).name("resize").build()?;
    /// assert_eq!(pool.name(), Some("resize"));
    /// assert!(format!("{pool:?}").contains("\"resize\""));
    /// # Ok::<(), corral::StartError>(())
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(Arc::from(name.into()));
        self
    }

    /// Watches the pool's tasks: a task running for `threshold` or longer is
    /// reported once, to `on_stuck` (inside the panic boundary), as a `tracing`
    /// warning (feature `tracing`), and as `[STUCK]` in the thread dump, with the
    /// line that submitted it. No thread of its own: a worker checks just before it
    /// goes idle, a submitter before it waits for room, and
    /// [`leak::dump`](crate::leak::dump) and [`check_stuck`](Pool::check_stuck) check
    /// on demand. A task's start is not time-stamped: it counts from the first check
    /// that sees it running, so a report comes late, never early.
    ///
    /// ```
    /// use corral::clock::ManualClock;
    /// use std::time::Duration;
    ///
    /// let clock = ManualClock::new();
    /// let pool = corral::WorkerPool::builder()
    ///     .workers(1)
    ///     .watchdog(Duration::from_secs(5), |stuck| eprintln!("{stuck}"))
    ///     .clock(clock.clone())
    ///     .build()?;
    /// let (release, hang) = std::sync::mpsc::channel::<()>();
    /// pool.execute(move || { let _ = hang.recv(); })?;
    /// # while pool.stats().busy == 0 { std::thread::yield_now(); }
    /// assert!(pool.check_stuck().is_empty()); // first seen now
    /// clock.advance(Duration::from_secs(5));
    /// assert_eq!(pool.check_stuck().len(), 1); // reported once
    /// assert!(pool.check_stuck().is_empty());
    /// release.send(()).unwrap();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn watchdog(
        mut self,
        threshold: Duration,
        on_stuck: impl Fn(&Stuck) + Send + Sync + 'static,
    ) -> Self {
        self.watchdog = Some((threshold, Arc::new(on_stuck)));
        self
    }

    /// The clock the pool's [`watchdog`](PoolBuilder::watchdog) measures with
    /// (default: [`SystemClock`](crate::clock::SystemClock)).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Stack size of each worker, 16 KiB to 1 GiB.
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    /// Receives every task that [`Overflow::DropOldest`] or [`Overflow::DropNewest`]
    /// displaces. It runs on the submitting thread; it may run the task, keep a count,
    /// or drop it (its handle then resolves to [`TaskError::Cancelled`]). Without it
    /// displaced tasks are dropped that way and only counted. A panic in the callback
    /// (or in the destructor of a displaced task's captures) does not reach the
    /// submitter, whose own task is queued as usual: it is kept in
    /// [`ShutdownReport::first_panic`]. A callback that submits to the pool again
    /// (a retry) nests on the submitting thread: past 64 nested calls, displaced tasks
    /// are dropped without the callback (still counted in `dropped`).
    pub fn on_drop(mut self, f: impl Fn(DroppedTask<'_>) + Send + Sync + 'static) -> Self {
        self.on_drop = Some(Arc::new(f));
        self
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.workers == 0 {
            return Err(ConfigError::new(
                "workers",
                self.workers,
                "must be at least 1",
            ));
        }
        if self.workers > MAX_WORKERS {
            return Err(ConfigError::new(
                "workers",
                self.workers,
                "must be at most 4096",
            ));
        }
        if self.queue_capacity == 0 {
            return Err(ConfigError::new(
                "queue_capacity",
                self.queue_capacity,
                "must be at least 1",
            ));
        }
        if self.queue_capacity > MAX_CAPACITY {
            return Err(ConfigError::new(
                "queue_capacity",
                self.queue_capacity,
                "must be at most 16777216",
            ));
        }
        if let Some(size) = self.stack_size {
            if !(MIN_STACK..=MAX_STACK).contains(&size) {
                return Err(ConfigError::new(
                    "stack_size",
                    size,
                    "must be between 16 KiB and 1 GiB",
                ));
            }
        }
        if let Some(name) = &self.name {
            check_name("name", name)?;
        }
        match &self.thread_name {
            Some(name) => check_name("thread_name", name),
            None => Ok(()),
        }
    }

    /// What worker threads are called after `corral-`, before `-{index}`.
    fn thread_prefix(&self) -> &str {
        match (&self.thread_name, &self.name) {
            (Some(name), _) => name,
            (None, Some(name)) => name,
            (None, None) => "pool",
        }
    }

    fn spec(&self, index: usize, owner: &Arc<Owner>, kind: &'static str) -> ThreadSpec {
        let mut spec = ThreadSpec::new(kind, format!("{}-{index}", self.thread_prefix()))
            .role(Role::PoolWorker)
            .owned_by(owner);
        spec.stack_size = self.stack_size;
        spec
    }

    /// The engine, its owner record built at the caller's line.
    #[track_caller]
    fn core<'a>(&self, kind: &'static str) -> Core<'a> {
        let owner = Owner::new(kind, self.name.clone());
        let watchdog = self.watchdog.as_ref().map(|(threshold, on_stuck)| {
            let on_stuck = Arc::clone(on_stuck);
            let mut builder = Watchdog::builder(*threshold).on_stuck(move |s| on_stuck(s));
            if let Some(clock) = &self.clock {
                builder = builder.shared_clock(Arc::clone(clock));
            }
            builder.build_for(&owner)
        });
        Core::new(
            self.workers,
            self.queue_capacity,
            self.overflow,
            self.on_drop.clone(),
            Seen::new(kind, owner, watchdog),
        )
    }

    fn injected_failure(&self, _index: usize) -> Option<SpawnError> {
        #[cfg(test)]
        if self.fail_spawn_at == Some(_index) {
            let error = std::io::Error::other("injected spawn failure");
            return Some(SpawnError::new(
                format!("corral-{}-{_index}", self.thread_prefix()),
                error,
            ));
        }
        None
    }

    /// Starts the workers.
    ///
    /// # Errors
    ///
    /// [`StartError::Config`] with a [`ConfigError`] naming the field for zero or
    /// absurd values (`workers` outside 1..=4096, `queue_capacity` outside 1..=2^24,
    /// `stack_size` outside 16 KiB..=1 GiB, a `name` or `thread_name` with a NUL), or
    /// [`StartError::Spawn`] if the OS refuses to start a thread; the workers already
    /// started are then stopped and joined first.
    #[track_caller]
    pub fn build(self) -> Result<WorkerPool, StartError> {
        self.validate()?;
        let mut core = self.core("WorkerPool");
        let owner = core.owner();
        let handles = self.start_workers(
            &mut core,
            |index, work| start(&self.spec(index, &owner, "WorkerPool"), work),
            |handle| drop(handle.join()),
        )?;
        Ok(WorkerPool { core, handles })
    }

    /// Starts the workers as threads of `scope`: tasks may borrow anything that
    /// outlives the scope, and the workers are joined when the pool is dropped (at the
    /// latest when the scope ends).
    ///
    /// # Errors
    ///
    /// As [`build`](PoolBuilder::build).
    ///
    /// # Example
    ///
    /// ```
    /// let words = vec!["alpha".to_string(), "beta".to_string()];
    /// let total = corral::scope(|s| {
    ///     let pool = corral::WorkerPool::builder().workers(2).build_scoped(s).unwrap();
    ///     let handles: Vec<_> = words
    ///         .iter()
    ///         .map(|w| pool.submit(move || w.len()).unwrap()) // borrows `words`
    ///         .collect();
    ///     handles.into_iter().map(|h| h.join().unwrap()).sum::<usize>()
    /// });
    /// assert_eq!(total, 9);
    /// ```
    #[track_caller]
    pub fn build_scoped<'scope>(
        self,
        scope: &Scope<'scope, '_>,
    ) -> Result<ScopedPool<'scope>, StartError> {
        self.validate()?;
        let mut core = self.core("ScopedPool");
        let owner = core.owner();
        let handles = self.start_workers(
            &mut core,
            |index, work| scope.start_as(self.spec(index, &owner, "ScopedPool"), work),
            |handle| drop(handle.join()),
        )?;
        Ok(ScopedPool { core, handles })
    }

    /// Starts one thread per worker with `start`. If the OS refuses one, the queue is
    /// disconnected so the workers already started exit, and they are joined (with
    /// `join`) before the error is returned: a failed build leaves no thread behind.
    fn start_workers<'a, H>(
        &self,
        core: &mut Core<'a>,
        mut start: impl FnMut(usize, Box<dyn FnOnce() + Send + 'a>) -> Result<H, SpawnError>,
        join: impl Fn(H),
    ) -> Result<Vec<H>, SpawnError> {
        let mut handles = Vec::with_capacity(self.workers);
        for index in 0..self.workers {
            let (rx, guard) = core.worker_parts();
            let started = match self.injected_failure(index) {
                Some(e) => Err(e),
                None => start(index, Box::new(move || work(rx, guard, index))),
            };
            match started {
                Ok(handle) => handles.push(handle),
                Err(e) => {
                    core.disconnect();
                    handles.into_iter().for_each(join);
                    return Err(e);
                }
            }
        }
        Ok(handles)
    }
}

impl fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("workers", &self.workers)
            .field("queue_capacity", &self.queue_capacity)
            .field("overflow", &self.overflow)
            .field("name", &self.name)
            .field("thread_name", &self.thread_prefix())
            .field("stack_size", &self.stack_size)
            .field("on_drop", &self.on_drop.is_some())
            .field("watchdog", &self.watchdog.as_ref().map(|w| w.0))
            .finish()
    }
}

/// The one implementation behind [`WorkerPool`] and [`ScopedPool`]; write those
/// names. `'env` is what every task must outlive (`'static` for a `WorkerPool`, the
/// scope for a `ScopedPool`) and `W` says how the workers are started and joined
/// ([`OwnedThreads`] or [`ScopedThreads`]). [`WorkerPool`] describes the behaviour;
/// both behave alike.
pub struct Pool<'env, W: PoolThreads<'env>> {
    core: Core<'env>,
    handles: Vec<W::Thread>,
}

impl<'env, W: PoolThreads<'env>> Pool<'env, W> {
    /// Queues `f` and returns a handle to its result, waiting while the queue is full
    /// (under [`Overflow::Block`]; other policies never wait). In a [`ScopedPool`], `f`
    /// may borrow anything that outlives the scope.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Closed`] once the pool is closed or shut down;
    /// [`SubmitError::Full`] when a `Reject` pool's queue is full, or when tasks
    /// run on this thread (see [`WorkerPool`]'s re-entrancy) are already nested
    /// 64 deep. The closure is handed back.
    ///
    /// Called from inside one of the pool's own tasks while the queue is full, it
    /// runs `f` on the current thread instead of waiting (counted in
    /// [`PoolStats::caller_ran`]).
    ///
    /// # Example
    ///
    /// ```
    /// let pool = corral::WorkerPool::builder().workers(1).build()?;
    /// assert_eq!(pool.submit(|| "done").unwrap().join().unwrap(), "done");
    /// # Ok::<(), corral::StartError>(())
    /// ```
    #[track_caller]
    pub fn submit<F, T>(&self, f: F) -> Result<TaskHandle<T>, SubmitError<F>>
    where
        F: FnOnce() -> T + Send + 'env,
        T: Send + 'env,
    {
        W::submit(
            &self.core,
            Plain(f),
            Some(&Until::FOREVER),
            Location::caller(),
        )
    }

    /// Queues `f` only if that needs no waiting.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Full`] when the queue is full (under `Block` or `Reject`),
    /// [`SubmitError::Closed`] after close or shutdown; the closure is handed back.
    #[track_caller]
    pub fn try_submit<F, T>(&self, f: F) -> Result<TaskHandle<T>, SubmitError<F>>
    where
        F: FnOnce() -> T + Send + 'env,
        T: Send + 'env,
    {
        W::submit(&self.core, Plain(f), None, Location::caller())
    }

    /// As [`submit`](Self::submit), waiting at most `timeout` for room.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Timeout`] when no room appeared in time, plus those of `submit`.
    #[track_caller]
    pub fn submit_timeout<F, T>(
        &self,
        f: F,
        timeout: Duration,
    ) -> Result<TaskHandle<T>, SubmitError<F>>
    where
        F: FnOnce() -> T + Send + 'env,
        T: Send + 'env,
    {
        let _waiting = self.core.waiting_if_full(Location::caller());
        W::submit(
            &self.core,
            Plain(f),
            Some(&Until::timeout(timeout)),
            Location::caller(),
        )
    }

    /// As [`submit`](Self::submit), waiting until `deadline` at most for room.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Timeout`] when the deadline passed, plus those of `submit`.
    #[track_caller]
    pub fn submit_deadline<F, T>(
        &self,
        f: F,
        deadline: Instant,
    ) -> Result<TaskHandle<T>, SubmitError<F>>
    where
        F: FnOnce() -> T + Send + 'env,
        T: Send + 'env,
    {
        let _waiting = self.core.waiting_if_full(Location::caller());
        W::submit(
            &self.core,
            Plain(f),
            Some(&Until::deadline(deadline)),
            Location::caller(),
        )
    }

    /// As [`submit`](Self::submit), waiting for room until `token` is cancelled.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Cancelled`] with the token's reason, plus those of `submit`.
    #[track_caller]
    pub fn submit_cancellable<F, T>(
        &self,
        f: F,
        token: &CancelToken,
    ) -> Result<TaskHandle<T>, SubmitError<F>>
    where
        F: FnOnce() -> T + Send + 'env,
        T: Send + 'env,
    {
        let _waiting = self.core.waiting_if_full(Location::caller());
        W::submit(
            &self.core,
            Plain(f),
            Some(&Until::cancellable(token)),
            Location::caller(),
        )
    }

    /// As [`submit`](Self::submit), for a task that receives a token of its own, a
    /// child of the pool's: cancelled by [`TaskHandle::cancel`], and with the pool's
    /// by [`shutdown_now`](Self::shutdown_now) and by a
    /// [`shutdown_timeout`](Self::shutdown_timeout) that ran out, so a long task can
    /// stop early. Each form below does the same.
    ///
    /// # Errors
    ///
    /// As [`submit`](Self::submit).
    ///
    /// # Example
    ///
    /// ```
    /// let pool = corral::WorkerPool::builder().workers(1).build()?;
    /// let spinner = pool.submit_with_token(|token| {
    ///     let mut rounds = 0u64;
    ///     while !token.is_cancelled() {
    ///         rounds += 1;
    ///         std::thread::yield_now();
    ///     }
    ///     rounds
    /// }).unwrap();
    /// # while pool.stats().busy == 0 { std::thread::yield_now(); }
    /// let report = pool.shutdown_now(); // cancels the token: the spinner stops
    /// assert!(spinner.join().is_ok());
    /// assert_eq!(report.completed, 1);
    /// # Ok::<(), corral::StartError>(())
    /// ```
    #[track_caller]
    pub fn submit_with_token<F, T>(&self, f: F) -> Result<TaskHandle<T>, SubmitError<F>>
    where
        F: FnOnce(&CancelToken) -> T + Send + 'env,
        T: Send + 'env,
    {
        W::submit(
            &self.core,
            Tokened(f),
            Some(&Until::FOREVER),
            Location::caller(),
        )
    }

    /// As [`submit_with_token`](Self::submit_with_token), only if that needs
    /// no waiting.
    ///
    /// # Errors
    ///
    /// As [`try_submit`](Self::try_submit).
    #[track_caller]
    pub fn try_submit_with_token<F, T>(&self, f: F) -> Result<TaskHandle<T>, SubmitError<F>>
    where
        F: FnOnce(&CancelToken) -> T + Send + 'env,
        T: Send + 'env,
    {
        W::submit(&self.core, Tokened(f), None, Location::caller())
    }

    /// As [`submit_with_token`](Self::submit_with_token), waiting at most
    /// `timeout` for room.
    ///
    /// # Errors
    ///
    /// As [`submit_timeout`](Self::submit_timeout).
    #[track_caller]
    pub fn submit_with_token_timeout<F, T>(
        &self,
        f: F,
        timeout: Duration,
    ) -> Result<TaskHandle<T>, SubmitError<F>>
    where
        F: FnOnce(&CancelToken) -> T + Send + 'env,
        T: Send + 'env,
    {
        let _waiting = self.core.waiting_if_full(Location::caller());
        W::submit(
            &self.core,
            Tokened(f),
            Some(&Until::timeout(timeout)),
            Location::caller(),
        )
    }

    /// As [`submit_with_token`](Self::submit_with_token), waiting until
    /// `deadline` at most for room.
    ///
    /// # Errors
    ///
    /// As [`submit_deadline`](Self::submit_deadline).
    #[track_caller]
    pub fn submit_with_token_deadline<F, T>(
        &self,
        f: F,
        deadline: Instant,
    ) -> Result<TaskHandle<T>, SubmitError<F>>
    where
        F: FnOnce(&CancelToken) -> T + Send + 'env,
        T: Send + 'env,
    {
        let _waiting = self.core.waiting_if_full(Location::caller());
        W::submit(
            &self.core,
            Tokened(f),
            Some(&Until::deadline(deadline)),
            Location::caller(),
        )
    }

    /// As [`submit_with_token`](Self::submit_with_token), waiting for room until
    /// `token` is cancelled (the task still receives the pool's token).
    ///
    /// # Errors
    ///
    /// As [`submit_cancellable`](Self::submit_cancellable).
    #[track_caller]
    pub fn submit_with_token_cancellable<F, T>(
        &self,
        f: F,
        token: &CancelToken,
    ) -> Result<TaskHandle<T>, SubmitError<F>>
    where
        F: FnOnce(&CancelToken) -> T + Send + 'env,
        T: Send + 'env,
    {
        let _waiting = self.core.waiting_if_full(Location::caller());
        W::submit(
            &self.core,
            Tokened(f),
            Some(&Until::cancellable(token)),
            Location::caller(),
        )
    }

    /// Queues a fire-and-forget task: no handle, the cheapest form. A panic is counted
    /// and the first one is kept in [`ShutdownReport::first_panic`].
    ///
    /// # Errors
    ///
    /// As [`submit`](Self::submit).
    ///
    /// # Example
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    ///
    /// let pool = corral::WorkerPool::builder().workers(2).build()?;
    /// let hits = Arc::new(AtomicUsize::new(0));
    /// for _ in 0..100 {
    ///     let hits = hits.clone();
    ///     pool.execute(move || { hits.fetch_add(1, Ordering::Relaxed); }).unwrap();
    /// }
    /// pool.shutdown();
    /// assert_eq!(hits.load(Ordering::Relaxed), 100);
    /// # Ok::<(), corral::StartError>(())
    /// ```
    #[track_caller]
    pub fn execute<F>(&self, f: F) -> Result<(), SubmitError<F>>
    where
        F: FnOnce() + Send + 'env,
    {
        self.execute_call(f, Some(&Until::FOREVER), Location::caller())
    }

    /// As [`execute`](Self::execute), without waiting.
    ///
    /// # Errors
    ///
    /// As [`try_submit`](Self::try_submit).
    #[track_caller]
    pub fn try_execute<F>(&self, f: F) -> Result<(), SubmitError<F>>
    where
        F: FnOnce() + Send + 'env,
    {
        self.execute_call(f, None, Location::caller())
    }

    /// As [`execute`](Self::execute), waiting at most `timeout` for room.
    ///
    /// # Errors
    ///
    /// As [`submit_timeout`](Self::submit_timeout).
    #[track_caller]
    pub fn execute_timeout<F>(&self, f: F, timeout: Duration) -> Result<(), SubmitError<F>>
    where
        F: FnOnce() + Send + 'env,
    {
        let _waiting = self.core.waiting_if_full(Location::caller());
        self.execute_call(f, Some(&Until::timeout(timeout)), Location::caller())
    }

    /// As [`execute`](Self::execute), waiting until `deadline` at most.
    ///
    /// # Errors
    ///
    /// As [`submit_deadline`](Self::submit_deadline).
    #[track_caller]
    pub fn execute_deadline<F>(&self, f: F, deadline: Instant) -> Result<(), SubmitError<F>>
    where
        F: FnOnce() + Send + 'env,
    {
        let _waiting = self.core.waiting_if_full(Location::caller());
        self.execute_call(f, Some(&Until::deadline(deadline)), Location::caller())
    }

    /// As [`execute`](Self::execute), waiting until `token` is cancelled at most.
    ///
    /// # Errors
    ///
    /// As [`submit_cancellable`](Self::submit_cancellable).
    #[track_caller]
    pub fn execute_cancellable<F>(&self, f: F, token: &CancelToken) -> Result<(), SubmitError<F>>
    where
        F: FnOnce() + Send + 'env,
    {
        let _waiting = self.core.waiting_if_full(Location::caller());
        self.execute_call(f, Some(&Until::cancellable(token)), Location::caller())
    }

    /// Applies `f` to every item on the pool and yields the results in input order,
    /// with at most `queue_capacity + workers` items in flight, so an endless input
    /// runs in bounded memory.
    ///
    /// Items are batched into chunks behind the scenes, so tiny items cost little.
    /// When a chunk's work takes less than handing it to a worker would (a few
    /// microseconds), the following items run on the calling thread, one by one as
    /// they are asked for, and go back to the workers as soon as a run of them
    /// takes longer. Consuming the map by internal iteration (`for_each`, `sum`,
    /// `count`, `fold`) is the cheapest way to run tiny items: the calling thread
    /// then loops over the input as tightly as a plain loop would.
    ///
    /// The calling thread never idles while there is work it may do: a chunk that
    /// is due and that no worker has started, it runs itself; while a worker runs
    /// the chunk it needs, it runs the next ones nobody has started and keeps
    /// their results until they are due. `map` never waits for room in the queue
    /// either: a chunk that finds it full stays with the calling thread.
    ///
    /// A panicking item yields `Err(TaskError::Panicked)` in its place. Items of a
    /// closed pool yield `Err(TaskError::Cancelled)` (those already under way when
    /// it closes, at most `queue_capacity + workers`, may still run), and so do the
    /// items of a chunk the pool dropped unrun (an overflow eviction,
    /// `shutdown_now`).
    ///
    /// # Example
    ///
    /// ```
    /// let pool = corral::WorkerPool::builder().workers(2).queue_capacity(16).build()?;
    /// let squares: Vec<u64> = pool
    ///     .map(1..=1000u64, |n| n * n)
    ///     .collect::<Result<_, _>>()
    ///     .unwrap();
    /// assert_eq!(squares[999], 1_000_000);
    /// # Ok::<(), corral::StartError>(())
    /// ```
    #[track_caller]
    pub fn map<I, F, R>(&self, items: I, f: F) -> PoolMap<'_, 'env, I::IntoIter, F, R>
    where
        I: IntoIterator,
        I::Item: Send + 'env,
        F: Fn(I::Item) -> R + Send + Sync + 'env,
        R: Send + 'env,
    {
        PoolMap::new(&self.core, items.into_iter(), f, Location::caller())
    }

    /// The pool's token, handed to [`submit_with_token`](Self::submit_with_token)
    /// tasks. Cancelling it makes the pool refuse new tasks and drop queued ones (their
    /// handles resolve to [`TaskError::Cancelled`]), as `shutdown_now` does.
    pub fn token(&self) -> &CancelToken {
        self.core.token()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> PoolStats {
        self.core.stats()
    }

    /// The name given by [`PoolBuilder::name`], if any.
    pub fn name(&self) -> Option<&str> {
        self.core.name()
    }

    /// Runs the pool's [`watchdog`](PoolBuilder::watchdog) now: the tasks newly found
    /// running past its threshold (each reported once, also to its callback). Empty
    /// for a pool without a watchdog.
    pub fn check_stuck(&self) -> Vec<Stuck> {
        self.core.state.seen.check_stuck()
    }

    /// Waits until every task accepted before this call has finished, without
    /// closing the pool: other threads may keep submitting meanwhile, and what they
    /// submit after the call is not waited for (so the wait ends however busy they
    /// keep the pool).
    ///
    /// *Accepted before the call*: a `submit` or `execute` (any form) that returned
    /// `Ok` before this call began (on this thread, or on another that this one
    /// heard from since). A submit running at the same time may or may not be waited
    /// for. *Finished*: the task completed or panicked, or never ran and is on record:
    /// dropped by `shutdown_now` or a cancelled pool token (its handle says
    /// `Cancelled`, counted in `cancelled`), displaced by the overflow policy (once
    /// `on_drop` returned, counted in `dropped`), run by its submitter (`CallerRuns`).
    /// A task that never returns is waited for without end: use a bounded form.
    /// `map` chunks are not counted (the `map` call itself waits for them).
    ///
    /// # Errors
    ///
    /// [`IdleError::InsideOwnTask`] at once when called from inside one of the
    /// pool's own tasks (which cannot finish while it waits).
    ///
    /// # Example
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    ///
    /// let pool = corral::WorkerPool::builder().workers(2).build()?;
    /// let done = Arc::new(AtomicUsize::new(0));
    /// for _ in 0..100 {
    ///     let done = Arc::clone(&done);
    ///     pool.execute(move || { done.fetch_add(1, Ordering::Relaxed); }).unwrap();
    /// }
    /// pool.wait_idle().unwrap(); // no handles kept, no latch of our own
    /// assert_eq!(done.load(Ordering::Relaxed), 100);
    /// pool.execute(|| ()).unwrap(); // still open
    /// # Ok::<(), corral::StartError>(())
    /// ```
    pub fn wait_idle(&self) -> Result<(), IdleError> {
        self.wait_idle_until(&Until::FOREVER)
    }

    /// Returns `Ok` only if no task accepted by the pool is unfinished right now; never
    /// waits. Stricter than [`wait_idle`](Pool::wait_idle): a task submitted at
    /// the same time also makes it [`IdleError::Busy`].
    ///
    /// # Errors
    ///
    /// [`IdleError::Busy`] when a task has not finished; [`IdleError::InsideOwnTask`]
    /// from inside one of the pool's own tasks.
    pub fn try_wait_idle(&self) -> Result<(), IdleError> {
        if self.core.inside_own_task() {
            return Err(IdleError::InsideOwnTask);
        }
        if self.core.is_idle() {
            Ok(())
        } else {
            Err(IdleError::Busy)
        }
    }

    /// [`wait_idle`](Pool::wait_idle) for at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`IdleError::Timeout`] when the timeout passed first;
    /// [`IdleError::InsideOwnTask`] from inside one of the pool's own tasks.
    pub fn wait_idle_timeout(&self, timeout: Duration) -> Result<(), IdleError> {
        self.wait_idle_until(&Until::timeout(timeout))
    }

    /// [`wait_idle`](Pool::wait_idle) until `deadline` at most.
    ///
    /// # Errors
    ///
    /// [`IdleError::Timeout`] when the deadline passed first;
    /// [`IdleError::InsideOwnTask`] from inside one of the pool's own tasks.
    pub fn wait_idle_deadline(&self, deadline: Instant) -> Result<(), IdleError> {
        self.wait_idle_until(&Until::deadline(deadline))
    }

    /// [`wait_idle`](Pool::wait_idle) until `token` is cancelled (or its deadline
    /// passes).
    ///
    /// # Errors
    ///
    /// [`IdleError::Cancelled`] when the token stopped the wait first;
    /// [`IdleError::InsideOwnTask`] from inside one of the pool's own tasks.
    pub fn wait_idle_cancellable(&self, token: &CancelToken) -> Result<(), IdleError> {
        self.wait_idle_until(&Until::cancellable(token))
    }

    fn wait_idle_until(&self, until: &Until<'_>) -> Result<(), IdleError> {
        if self.core.inside_own_task() {
            return Err(IdleError::InsideOwnTask);
        }
        Ok(self.core.wait_idle(until)?)
    }

    /// Stops accepting tasks (later submits get [`SubmitError::Closed`]); queued tasks
    /// still run. A submitter already waiting for room may still get its task in.
    pub fn close(&self) {
        self.core.close();
    }

    /// Whether the pool refuses new tasks.
    pub fn is_closed(&self) -> bool {
        self.core.is_closed() || self.core.token().is_cancelled()
    }

    /// Disconnects the queue, joins every worker and reports. Called on one of
    /// the pool's own workers (the pool dropped or shut down inside one of its
    /// tasks), it joins every other worker, runs what is still queued there,
    /// and leaves that worker to finish its task and exit by itself: a thread
    /// cannot join itself.
    fn stop(&mut self) -> ShutdownReport {
        self.core.disconnect();
        let own = self.core.own_worker();
        for (index, handle) in self.handles.drain(..).enumerate() {
            if own == Some(index) {
                continue; // the current thread: it exits once its task returns
            }
            W::join(handle);
        }
        if let Some(index) = own {
            self.core.finish_here(index);
        }
        self.core.drain();
        self.core.report()
    }

    /// Stops accepting tasks, runs everything already queued, joins every worker and
    /// reports how the pool's tasks ended.
    ///
    /// Called inside one of the pool's own tasks, it joins every other worker, runs
    /// what is still queued on the current thread, and reports; the current worker
    /// exits by itself once its task returns (a thread cannot join itself), and
    /// that task is not counted in the report.
    pub fn shutdown(mut self) -> ShutdownReport {
        self.stop()
    }

    /// Cancels the pool token, runs nothing more from the queue (those handles resolve
    /// to [`TaskError::Cancelled`], counted in [`ShutdownReport::never_ran`]), waits for
    /// the tasks already running and joins every worker.
    ///
    /// # Example
    ///
    /// ```
    /// let pool = corral::WorkerPool::builder().workers(1).build()?;
    /// let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
    /// let running = pool.submit(move || gate_rx.recv().ok()).unwrap();
    /// let queued: Vec<_> = (0..5).map(|i| pool.submit(move || i).unwrap()).collect();
    /// # while pool.stats().busy == 0 { std::thread::yield_now(); }
    /// let stopper = std::thread::spawn(move || pool.shutdown_now());
    /// # while !queued.iter().all(|h| h.is_finished()) { std::thread::yield_now(); }
    /// gate_tx.send(()).unwrap(); // let the running task finish
    /// let report = stopper.join().unwrap();
    /// assert_eq!(report.never_ran, 5);
    /// assert!(queued.into_iter().all(|h| h.join().unwrap_err().is_cancelled()));
    /// assert!(running.join().is_ok());
    /// # Ok::<(), corral::StartError>(())
    /// ```
    pub fn shutdown_now(mut self) -> ShutdownReport {
        self.core.cancel();
        self.stop()
    }

    /// Shuts down gracefully if that finishes within `timeout`. Otherwise it cancels
    /// the pool token (queued tasks will not run) and, if a task is still running once
    /// the idle workers have exited, hands the pool back instead of detaching the
    /// thread: call `shutdown` on it to wait, or drop it.
    ///
    /// `Duration::ZERO` cancels at once unless every worker has already exited;
    /// `Duration::MAX` (or any timeout past what an `Instant` holds) waits as long
    /// as `shutdown` does. Called inside one of the pool's own tasks, it does not
    /// wait for the current worker (see [`shutdown`](Self::shutdown)).
    ///
    /// # Errors
    ///
    /// The pool itself (closed, token cancelled) when a task was still running.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let pool = corral::WorkerPool::builder().workers(1).build()?;
    /// let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
    /// pool.execute(move || { gate_rx.recv().ok(); }).unwrap();
    /// # while pool.stats().busy == 0 { std::thread::yield_now(); }
    /// let pool = match pool.shutdown_timeout(Duration::from_millis(10)) {
    ///     Ok(_) => unreachable!("the task is blocked"),
    ///     Err(pool) => pool, // no thread was detached
    /// };
    /// gate_tx.send(()).unwrap();
    /// assert_eq!(pool.shutdown().completed, 1);
    /// # Ok::<(), corral::StartError>(())
    /// ```
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Result<ShutdownReport, Self> {
        let deadline = time::deadline_after(time::now(), timeout);
        // Called from inside one of the pool's tasks, that worker cannot exit
        // while it waits here: wait for the others.
        let own = usize::from(self.core.own_worker().is_some());
        self.core.disconnect();
        if !self.core.wait_exit(deadline, own) {
            self.core.cancel();
            if !self.core.settle(own) {
                return Err(self);
            }
        }
        Ok(self.stop())
    }

    fn execute_call<F>(
        &self,
        f: F,
        until: Option<&Until<'_>>,
        site: &'static Location<'static>,
    ) -> Result<(), SubmitError<F>>
    where
        F: FnOnce() + Send + 'env,
    {
        // The closure alone: nothing will read a result.
        self.core
            .push(Box::new(Plain(f)), until, site)
            .map_err(refused)
    }
}

/// Dropping the pool is `shutdown()`, or `shutdown_now()` while the thread is
/// already panicking, so a failing test does not wait on queued work.
impl<'env, W: PoolThreads<'env>> Drop for Pool<'env, W> {
    fn drop(&mut self) {
        if self.core.is_running() {
            if std::thread::panicking() {
                self.core.cancel();
            }
            let _ = self.stop();
        }
    }
}

impl<'env, W: PoolThreads<'env>> fmt::Debug for Pool<'env, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(W::NAME)
            .field("name", &self.name())
            .field("stats", &self.stats())
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// A fixed set of worker threads fed by a bounded queue.
///
/// * **Backpressure.** [`submit`](WorkerPool::submit) waits while the queue is full;
///   `try_submit`, `submit_timeout`, `submit_deadline` and `submit_cancellable` bound
///   the wait, and every refusal hands the closure back in [`SubmitError`]. The
///   [`Overflow`] policy chosen on the builder decides what a full queue does instead:
///   refuse (`Reject`), evict the oldest task (`DropOldest`), shed the new one
///   (`DropNewest`), or run it on the submitting thread (`CallerRuns`); displaced
///   tasks go to the `on_drop` callback and are counted.
/// * **Panics are data.** A panicking task never costs a worker: its payload goes to
///   its [`TaskHandle`] (or to [`ShutdownReport::first_panic`] for
///   [`execute`](WorkerPool::execute)d tasks) and [`stats`](WorkerPool::stats) counts it.
/// * **Shutdown.** [`shutdown`](WorkerPool::shutdown) stops accepting, runs what is
///   queued and joins every worker; [`shutdown_now`](WorkerPool::shutdown_now) cancels
///   the pool token and runs nothing more; [`shutdown_timeout`](WorkerPool::shutdown_timeout)
///   hands the pool back rather than detach a thread that is still running.
///   Dropping the pool is `shutdown()` (or `shutdown_now()` while the thread is
///   already panicking, so a failing test does not wait on queued work).
/// * **Stopped from inside.** A pool shut down (or its last `Arc` dropped) inside one
///   of its own tasks joins every other worker, runs what is still queued on the
///   current worker and reports; the current worker, which cannot join itself, exits
///   by itself once its task returns. That task is not in the report (it is still
///   running). This is the one case where the pool returns before every one of its
///   threads has ended.
/// * **Re-entrancy.** A task that submits to its own pool while the queue is full
///   runs the new task itself instead of waiting (under [`Overflow::Block`] waiting
///   could deadlock: every worker might be waiting for room only workers make).
///   Tasks run on the submitting thread (that, [`Overflow::CallerRuns`], and
///   `on_drop` callbacks that submit again) nest at most 64 deep; deeper, a submit is
///   refused with [`SubmitError::Full`] and a displaced task is dropped without the
///   callback, so no user recursion through the pool can overflow the stack.
///
/// For tasks that borrow from the stack, build a [`ScopedPool`] inside a
/// [`corral::scope`](crate::scope()) with [`PoolBuilder::build_scoped`].
///
/// # Example
///
/// ```
/// use corral::{leak::LeakCheck, WorkerPool};
///
/// let _check = LeakCheck::new();
/// let pool = WorkerPool::builder().workers(2).queue_capacity(8).build()?;
/// let handles: Vec<_> = (0..20u64)
///     .map(|n| pool.submit(move || n * n).unwrap()) // waits when 8 are queued
///     .collect();
/// let sum: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
/// assert_eq!(sum, 2470);
/// let report = pool.shutdown();
/// assert_eq!(report.completed, 20);
/// # Ok::<(), corral::StartError>(())
/// ```
pub type WorkerPool = Pool<'static, OwnedThreads>;

impl WorkerPool {
    /// The most workers a pool may have; more is a [`ConfigError`] (`workers`).
    pub const MAX_WORKERS: usize = 4096;

    /// The largest queue a pool may have, in tasks; more is a [`ConfigError`]
    /// (`queue_capacity`).
    pub const MAX_QUEUE_CAPACITY: usize = 1 << 24;

    /// A builder with the defaults (one worker per CPU, a queue of 1024).
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }
}

/// A worker pool whose threads belong to a [`corral::scope`](crate::scope()), so its
/// tasks may borrow anything that outlives the scope. Built with
/// [`PoolBuilder::build_scoped`].
///
/// It behaves like [`WorkerPool`] (same queue, overflow policies, panics as data and
/// stats); dropping it runs what is queued and joins its workers, and the scope joins
/// them at the latest.
///
/// # Example
///
/// ```
/// let mut rows = vec![vec![1u32; 100]; 8];
/// let totals: Vec<u32> = corral::scope(|s| {
///     let pool = corral::WorkerPool::builder().workers(2).build_scoped(s).unwrap();
///     let handles: Vec<_> = rows
///         .iter_mut()
///         .map(|row| pool.submit(move || { row[0] = 0; row.iter().sum::<u32>() }).unwrap())
///         .collect();
///     handles.into_iter().map(|h| h.join().unwrap()).collect()
/// });
/// assert_eq!(totals, vec![99; 8]);
/// assert!(rows.iter().all(|row| row[0] == 0));
/// ```
///
/// A task cannot borrow something that dies before the scope ends:
///
/// ```compile_fail
/// corral::scope(|s| {
///     let pool = corral::WorkerPool::builder().workers(1).build_scoped(s).unwrap();
///     let local = String::from("dropped before the workers are joined");
///     pool.submit(|| local.len()).unwrap(); // error: `local` does not live long enough
/// });
/// ```
pub type ScopedPool<'scope> = Pool<'scope, ScopedThreads>;

/// How a [`Pool`]'s workers are started and joined, and what its tasks may borrow:
/// [`OwnedThreads`] for a [`WorkerPool`], [`ScopedThreads`] for a [`ScopedPool`].
/// Sealed: these two are the only kinds.
pub trait PoolThreads<'env>: threads::Sealed<'env> {}

/// The workers of a [`WorkerPool`]: threads of its own, joined by the pool. Its tasks
/// are `'static`.
#[derive(Debug)]
pub enum OwnedThreads {}

/// The workers of a [`ScopedPool`]: threads of a [`corral::scope`](crate::scope()),
/// joined by the pool (at the latest by the scope). Its tasks may borrow anything
/// that outlives the scope.
#[derive(Debug)]
pub enum ScopedThreads {}

impl PoolThreads<'static> for OwnedThreads {}

impl<'env> PoolThreads<'env> for ScopedThreads {}

/// The largest closure an owned pool keeps inline with its task's result slot. A
/// handle keeps that cell alive until it is joined or dropped, so a bigger closure
/// gets a separate slot instead (two allocations, but no pinned bytes).
const INLINE_CLOSURE_MAX: usize = 256;

mod threads {
    //! The two pools' real differences, behind a trait no user can name (so its
    //! crate-private types never reach a user, whatever the visibility lints infer
    //! from the public trait above it).
    #![allow(private_interfaces, private_bounds)]

    use super::task::{in_cell, with_own_slot, Call, TaskHandle};
    use super::{
        own_token, refused, Core, OwnedThreads, ScopedThreads, SubmitError, INLINE_CLOSURE_MAX,
    };
    use crate::scope::ScopedHandle;
    use crate::wait::Until;
    use std::panic::Location;
    use std::thread::JoinHandle;

    pub trait Sealed<'env> {
        /// A started worker, as the pool joins it.
        type Thread;

        /// The pool's name in `Debug`.
        const NAME: &'static str;

        /// Queues a task with a handle.
        fn submit<C>(
            core: &Core<'env>,
            call: C,
            until: Option<&Until<'_>>,
            site: &'static Location<'static>,
        ) -> Result<TaskHandle<C::Out>, SubmitError<C::Closure>>
        where
            C: Call + 'env,
            C::Out: Send + 'env;

        /// Waits for a worker to end. Workers catch every task panic, so a join error
        /// cannot carry one.
        fn join(thread: Self::Thread);
    }

    impl Sealed<'static> for OwnedThreads {
        type Thread = JoinHandle<()>;

        const NAME: &'static str = "WorkerPool";

        #[inline(always)]
        fn submit<C>(
            core: &Core<'static>,
            call: C,
            until: Option<&Until<'_>>,
            site: &'static Location<'static>,
        ) -> Result<TaskHandle<C::Out>, SubmitError<C::Closure>>
        where
            C: Call + 'static,
            C::Out: Send + 'static,
        {
            if std::mem::size_of::<C>() > INLINE_CLOSURE_MAX {
                return ScopedThreads::submit(core, call, until, site);
            }
            // One allocation: the handle reads its result from the queued task's cell.
            let (task, handle) = in_cell(call, own_token::<C>(core));
            core.push(task, until, site)
                .map(|()| handle)
                .map_err(refused)
        }

        fn join(thread: JoinHandle<()>) {
            let _ = thread.join();
        }
    }

    impl<'env> Sealed<'env> for ScopedThreads {
        type Thread = ScopedHandle<'env, ()>;

        const NAME: &'static str = "ScopedPool";

        /// The result goes to a slot of its own: a task that may borrow cannot share
        /// its cell with a handle, which is `'static`.
        #[inline(always)]
        fn submit<C>(
            core: &Core<'env>,
            call: C,
            until: Option<&Until<'_>>,
            site: &'static Location<'static>,
        ) -> Result<TaskHandle<C::Out>, SubmitError<C::Closure>>
        where
            C: Call + 'env,
            C::Out: Send + 'env,
        {
            let (task, handle) = with_own_slot(call, own_token::<C>(core));
            core.push(task, until, site)
                .map(|()| handle)
                .map_err(refused)
        }

        fn join(thread: ScopedHandle<'env, ()>) {
            let _ = thread.join();
        }
    }
}

/// A token of its own for a task whose closure takes one (a child of the pool's, so
/// `shutdown_now` still reaches it), which its handle can cancel; `None` otherwise.
#[inline(always)]
fn own_token<C: Call>(core: &Core<'_>) -> Option<CancelToken> {
    C::TAKES_TOKEN.then(|| core.token().child())
}

/// The error for a task the queue refused, with its closure handed back.
#[cold]
#[inline(never)]
fn refused<R: Runnable>(refused: Refused<R>) -> SubmitError<R::Closure> {
    SubmitError::from_refused(refused.map(|task| match task.into_closure() {
        Some(closure) => closure,
        None => unreachable!("corral: a refused task never ran"),
    }))
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::leak::LeakCheck;

    #[test]
    fn a_failed_spawn_stops_and_joins_the_workers_already_started() {
        let _check = LeakCheck::new();
        for fail_at in [0, 1, 3] {
            let mut builder = WorkerPool::builder().workers(4);
            builder.fail_spawn_at = Some(fail_at);
            let err = builder.clone().build().unwrap_err();
            let spawn = err.spawn_error().expect("a spawn failure");
            assert_eq!(spawn.thread_name(), format!("corral-pool-{fail_at}"));
            assert_eq!(spawn.io_error().to_string(), "injected spawn failure");
            crate::scope(|s| {
                let err = builder.clone().build_scoped(s).unwrap_err();
                assert!(matches!(err, StartError::Spawn(_)), "{err:?}");
            });
        }
        // LeakCheck (on drop) proves every started worker was joined.
    }

    /// One worker and one queue slot.
    fn one_by_one() -> PoolBuilder {
        WorkerPool::builder().workers(1).queue_capacity(1)
    }

    /// A task that holds its worker until the sender is used or dropped.
    fn gate() -> (std::sync::mpsc::Sender<()>, impl FnOnce() + Send + 'static) {
        let (open, gate) = std::sync::mpsc::channel::<()>();
        (open, move || {
            let _ = gate.recv();
        })
    }

    /// Waits (bounded) until the pool's one worker is busy.
    fn until_busy(stats: impl Fn() -> PoolStats) {
        let deadline = time::deadline_after(Instant::now(), Duration::from_secs(60));
        while stats().busy == 0 {
            assert!(
                Instant::now() < deadline,
                "the worker never took the blocker"
            );
            std::thread::yield_now();
        }
    }

    /// Every kind of task refused through `Core::push` comes back whole, and every
    /// accepted one runs: the path where the pool's `unsafe` recovers a refused job's
    /// type, exercised under Miri by `scripts/test`.
    #[test]
    fn refused_tasks_of_every_shape_come_back_through_a_real_queue() {
        let _check = LeakCheck::new();
        let big = [7u8; INLINE_CLOSURE_MAX + 1];
        let pool = one_by_one().build().unwrap();
        let (open, blocker) = gate();
        pool.execute(blocker).unwrap();
        until_busy(|| pool.stats());
        let queued = pool.try_submit(|| 1u8).unwrap();
        let inline = pool.try_submit(|| 2u8).unwrap_err().into_inner();
        let separate = pool.try_submit(move || big[0]).unwrap_err().into_inner();
        let boxed = pool.try_execute(|| ()).unwrap_err().into_inner();
        let tokened = pool
            .try_submit_with_token(|t: &CancelToken| t.is_cancelled())
            .unwrap_err()
            .into_inner();
        assert_eq!((inline(), separate(), boxed()), (2, 7, ()));
        assert!(!tokened(&CancelToken::new()));
        open.send(()).unwrap();
        assert_eq!(queued.join().unwrap(), 1);
        pool.close();
        assert_eq!(pool.submit(|| 3u8).unwrap_err().into_inner()(), 3);
        assert_eq!(pool.shutdown().rejected, 5);

        let local = String::from("borrowed");
        crate::scope(|s| {
            let pool = one_by_one().build_scoped(s).unwrap();
            let (open, blocker) = gate();
            pool.execute(blocker).unwrap();
            until_busy(|| pool.stats());
            let queued = pool.try_submit(|| local.len()).unwrap();
            let refused = pool.try_submit(|| local.as_str()).unwrap_err().into_inner();
            let boxed = pool.try_execute(|| assert_eq!(local.len(), 8)).unwrap_err();
            assert_eq!(refused(), "borrowed");
            boxed.into_inner()();
            open.send(()).unwrap();
            assert_eq!(queued.join().unwrap(), 8);
        });
    }
}
