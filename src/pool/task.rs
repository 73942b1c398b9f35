//! One pool task from submit to join: the user's closure, the slot its result goes
//! to, the handle that waits on that slot, and the job the queue carries.
//!
//! Implementation notes. A fire-and-forget task is its closure alone, boxed. A task
//! with a handle is a [`Cell`]: the closure plus its result slot ([`Packet`]), shared
//! through an `Arc` by the job ([`Shared`]) and the handle; an owned pool's `'static`
//! tasks keep the slot inline (one allocation), others point to a slot of its own.
//! The queue carries either shape as a [`Job`]: a thin pointer and a hand-written
//! table of the two things a queue does with a task (run it, drop it unrun), so a
//! slot needs no enum tag (the table also names the job's `wait_idle` epoch); the
//! job also carries the line that submitted it, for the thread dump. No lock guards the closure (a job has one owner at a time, and
//! only its `Shared` reaches the closure) nor the result (a state byte hands each
//! field over, see [`Packet`]). Every task resolves exactly once: run, or dropped
//! unrun (its handle then says `Cancelled`), or refused and handed back to its
//! submitter as the very closure it gave ([`Job::into_task`]). A handle may cancel its
//! task first: a claim byte in the slot decides, once, whether the pool (about to run
//! or drop the task) or the handle resolves it; the closure stays the job's, and the
//! run that finds the slot cancelled drops it unrun.
//!
//! All of the pool's `unsafe` is here, each block with its SAFETY note; the one
//! caller of [`Job::into_task`] is the engine's push path, which relies on the queue
//! handing back the job it was given. This module uses only the crate's core
//! (`crate::sync`, `wait`, `cancel`, `panic`), so loom models the result slot as it is
//! (tests/loom_pool.rs) and Miri runs its tests.
#![allow(unsafe_code)]

use std::fmt;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::panic::Location;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use crate::cancel::CancelToken;
use crate::panic::{drop_quietly, Panic};
use crate::sync::cell::UnsafeCell;
use crate::sync::{thread, AtomicU64, AtomicU8, Ordering};
use crate::wait::{Backoff, Until};

// A std `Arc` for the task's cell, also under loom: the handle shares the cell as a
// trait object (`Arc<dyn AsPacket<T>>`), which loom's `Arc` cannot coerce to, and the
// job carries it as a thin pointer. The cell's contents synchronise through
// `crate::sync`; a slot of its own is a `crate::sync::Arc`.
use std::sync::Arc;

// ---------------------------------------------------------------------------------
// The user's closure, and how a run ends.
// ---------------------------------------------------------------------------------

/// A user closure, with or without the pool token.
pub(crate) trait Call: Send {
    type Out;
    type Closure;
    /// Whether the closure takes a token: a task with a handle then gets one of its
    /// own, which [`TaskHandle::cancel`] cancels.
    const TAKES_TOKEN: bool;
    fn call(self, token: &CancelToken) -> Self::Out;
    fn into_closure(self) -> Self::Closure;
}

/// `FnOnce() -> T`.
pub(crate) struct Plain<F>(pub(crate) F);

impl<F: FnOnce() -> T + Send, T> Call for Plain<F> {
    type Out = T;
    type Closure = F;
    const TAKES_TOKEN: bool = false;
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
    const TAKES_TOKEN: bool = true;
    fn call(self, token: &CancelToken) -> T {
        (self.0)(token)
    }
    fn into_closure(self) -> F {
        self.0
    }
}

/// How a job ended, for the worker's counters.
pub(crate) enum Outcome {
    Done,
    /// The payload is here only when no handle took it (fire-and-forget tasks).
    Panicked(Option<Panic>),
    /// Its handle cancelled it before it started: the closure was dropped unrun (the
    /// payload is that drop's panic, if any).
    Cancelled(Option<Panic>),
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

// ---------------------------------------------------------------------------------
// The result slot.
// ---------------------------------------------------------------------------------

/// No result yet, and nobody waiting: the handle owns `waiter`.
const EMPTY: u8 = 0;
/// No result yet; the handle parked, and the setter takes `waiter` to wake it.
const WAITING: u8 = 1;
/// The result is in: the handle owns `result`.
const DONE: u8 = 2;

/// `claim`: nobody has decided the task's fate yet.
const QUEUED: u8 = 0;
/// `claim`: the pool runs (or drops) the task and resolves the slot.
const CLAIMED: u8 = 1;
/// `claim`: the handle cancelled the task and resolved the slot; the pool drops the
/// closure unrun.
const CANCELLED: u8 = 2;

/// One task's result, handed from the thread that resolves it to the one that joins.
/// `state` says who owns which field, so neither needs a lock (a finished join is one
/// load). A panic is boxed inside [`TaskError`], so the slot stays a few words.
/// `claim` decides who resolves it, once: the pool (which runs or drops the task) or
/// the handle (which cancels it first); only the winner calls `set`.
pub(crate) struct Packet<T> {
    state: AtomicU8,
    claim: AtomicU8,
    /// The task's own token, for a closure that takes one: cancelled by the handle.
    token: Option<CancelToken>,
    /// Written once by the setter before `DONE`, read by the handle after it.
    result: UnsafeCell<Option<Result<T, TaskError>>>,
    /// Written by the handle while `EMPTY`, taken by the setter when it ends `WAITING`.
    waiter: UnsafeCell<Option<thread::Thread>>,
}

// SAFETY: the `UnsafeCell` fields are only reached as `state` hands them over (see
// the consts): `result` by the one setter (whoever won `claim`, a compare-exchange
// from `QUEUED` that only one side can win) before it publishes `DONE` (release) and
// by the handle after it sees `DONE` (acquire); `waiter` by the handle while the
// state is `EMPTY` or `DONE` (it may leave a `Thread` there, dropped with the
// packet), and by the setter only after its swap returned `WAITING`. A handle that
// cancels is the setter itself and is not registered meanwhile (`cancel` borrows
// the handle, every join consumes it), so that swap never returns `WAITING` to it.
// `claim` and `state` are atomics; `token` is never written after `new` and is
// `Sync`. The values crossing threads are `Send`.
unsafe impl<T: Send> Sync for Packet<T> {}

impl<T> Packet<T> {
    /// An empty slot, for a task with its own token or none.
    pub(crate) fn new(token: Option<CancelToken>) -> Self {
        Packet {
            state: AtomicU8::new(EMPTY),
            claim: AtomicU8::new(QUEUED),
            token,
            result: UnsafeCell::new(None),
            waiter: UnsafeCell::new(None),
        }
    }

    /// The pool's claim on resolving the slot, made before it runs or drops the task.
    /// `false` when the handle cancelled the task first (and resolved the slot).
    pub(crate) fn claim(&self) -> bool {
        self.claim
            .compare_exchange(QUEUED, CLAIMED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The handle's claim: resolves the slot to `Cancelled` if the pool has not
    /// claimed it. `true` if it did.
    fn cancel(&self) -> bool {
        let won = self
            .claim
            .compare_exchange(QUEUED, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if won {
            self.set(Err(TaskError::Cancelled));
        }
        won
    }

    /// Resolves the slot. Called once per packet, by whoever won `claim`: the pool
    /// (its task's `Shared` hands out the closure once, to a run or an abandonment,
    /// and only that delivers) or the handle's `cancel`. A second call would race the
    /// handle's read of the result (asserted in debug builds).
    pub(crate) fn set(&self, result: Result<T, TaskError>) {
        debug_assert_ne!(
            self.state.load(Ordering::Relaxed),
            DONE,
            "a packet set twice"
        );
        // SAFETY: before `DONE` only the setter touches `result`, and there is one
        // setter per packet: whoever won `claim` (above).
        self.result.with_mut(|slot| unsafe { *slot = Some(result) });
        if self.state.swap(DONE, Ordering::AcqRel) == WAITING {
            // SAFETY: ending `WAITING` hands `waiter` to the setter; the acquire saw
            // the handle's write of it.
            let waiter = self.waiter.with_mut(|w| unsafe { (*w).take() });
            if let Some(waiter) = waiter {
                waiter.unpark();
            }
        }
    }

    fn is_done(&self) -> bool {
        self.state.load(Ordering::Acquire) == DONE
    }

    /// The result, if it is in; only the handle calls this.
    fn take(&self) -> Option<Result<T, TaskError>> {
        if !self.is_done() {
            return None;
        }
        // SAFETY: after `DONE` only the handle touches `result`, and the acquire saw
        // the setter's write.
        self.result.with_mut(|slot| unsafe { (*slot).take() })
    }

    /// Registers the calling (handle's) thread to be woken by `set`. `false` when the
    /// result is already in.
    fn register(&self) -> bool {
        // SAFETY: the state is `EMPTY` or `DONE` (only the handle sets `WAITING`, and
        // it never comes here while registered); in neither does the setter touch
        // `waiter`, so the handle owns it.
        self.waiter
            .with_mut(|w| unsafe { *w = Some(thread::current()) });
        self.state
            .compare_exchange(EMPTY, WAITING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Takes a registration back after a wait that gave up. `false` when `set` ended
    /// it first (the result is in, and the setter owns `waiter`).
    fn unregister(&self) -> bool {
        let taken_back = self
            .state
            .compare_exchange(WAITING, EMPTY, Ordering::Acquire, Ordering::Acquire)
            .is_ok();
        if taken_back {
            // SAFETY: back to `EMPTY`, the handle owns `waiter` again.
            drop(self.waiter.with_mut(|w| unsafe { (*w).take() }));
        }
        taken_back
    }
}

/// A new result slot of its own: the first half resolves it (once), the handle waits.
pub(crate) fn packet<T>(
    token: Option<CancelToken>,
) -> (crate::sync::Arc<Packet<T>>, TaskHandle<T>) {
    let packet = crate::sync::Arc::new(Packet::new(token));
    (
        crate::sync::Arc::clone(&packet),
        TaskHandle {
            packet: PacketRef::Alone(packet),
        },
    )
}

/// Where a handle finds its task's result slot inside the task's own cell.
pub(crate) trait AsPacket<T>: Send + Sync {
    fn packet(&self) -> &Packet<T>;
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

    /// The pool's claim on resolving the result (see [`Packet::claim`]); `false`
    /// when the handle cancelled the task first.
    fn claim(&self) -> bool {
        true
    }

    /// The task's own token, if it has one (else it runs under the pool's).
    fn own_token(&self) -> Option<&CancelToken> {
        None
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

    fn claim(&self) -> bool {
        Packet::claim(self)
    }

    fn own_token(&self) -> Option<&CancelToken> {
        self.token.as_ref()
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

    fn claim(&self) -> bool {
        Packet::claim(self)
    }

    fn own_token(&self) -> Option<&CancelToken> {
        self.token.as_ref()
    }
}

#[cfg(not(loom))]
std::thread_local! {
    /// The address of the result slot of the task the current thread is running (0
    /// when none), so that a task joining its own handle is told so instead of
    /// waiting for itself for ever.
    static RUNNING: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Marks the current thread as running the task whose result slot is at `slot` until
/// dropped (also on unwind), restoring the outer mark (a task run inline inside
/// another). Loom models never join from inside a task, so it is a no-op there.
struct Running(#[cfg_attr(loom, allow(dead_code))] usize);

impl Running {
    #[inline]
    fn enter(slot: usize) -> Running {
        #[cfg(not(loom))]
        return Running(RUNNING.with(|running| running.replace(slot)));
        #[cfg(loom)]
        Running(slot)
    }
}

impl Drop for Running {
    #[inline]
    fn drop(&mut self) {
        #[cfg(not(loom))]
        RUNNING.with(|running| running.set(self.0));
    }
}

/// Whether the current thread is running the task whose result slot is `slot`.
fn running_here(slot: usize) -> bool {
    #[cfg(not(loom))]
    return slot != 0 && RUNNING.with(std::cell::Cell::get) == slot;
    #[cfg(loom)]
    {
        let _ = slot;
        false
    }
}

// ---------------------------------------------------------------------------------
// Why a task gave no value.
// ---------------------------------------------------------------------------------

/// Why a pool task produced no value.
///
/// # Example
///
/// ```
/// use corral::{pool::TaskError, WorkerPool};
///
/// let pool = WorkerPool::builder().workers(1).build()?;
/// let handle = pool.submit(|| -> u32 { panic!("bad input") }).unwrap();
/// match handle.join() {
///     Err(TaskError::Panicked(panic)) => assert_eq!(panic.message(), Some("bad input")),
///     other => unreachable!("{other:?}"),
/// }
/// # Ok::<(), corral::StartError>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum TaskError {
    /// The task panicked; the payload is kept and can be re-raised with
    /// [`Panic::resume`].
    Panicked(Panic),
    /// The task never ran: the pool was shut down with `shutdown_now`, its token was
    /// cancelled, an overflow policy discarded it, or its handle cancelled it
    /// ([`TaskHandle::cancel`]).
    Cancelled,
    /// The handle was joined from inside the very task it waits for, which cannot
    /// finish while it waits: the join gives up at once instead of waiting for ever.
    /// The task itself runs on; its result is dropped when it finishes.
    JoinedFromItself,
}

impl TaskError {
    /// Whether the task panicked.
    pub fn is_panicked(&self) -> bool {
        matches!(self, TaskError::Panicked(_))
    }

    /// Whether the task never ran.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, TaskError::Cancelled)
    }

    /// The panic, if the task panicked.
    pub fn into_panic(self) -> Option<Panic> {
        match self {
            TaskError::Panicked(panic) => Some(panic),
            TaskError::Cancelled | TaskError::JoinedFromItself => None,
        }
    }
}

/// Describes this error only: the [`Panic`] of [`TaskError::Panicked`] is its
/// [`source`](std::error::Error::source).
impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::Panicked(_) => f.write_str("task panicked"),
            TaskError::Cancelled => f.write_str("task was cancelled before it ran"),
            TaskError::JoinedFromItself => {
                f.write_str("task joined its own handle, which cannot finish while it waits")
            }
        }
    }
}

impl std::error::Error for TaskError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TaskError::Panicked(panic) => Some(panic),
            TaskError::Cancelled | TaskError::JoinedFromItself => None,
        }
    }
}

// ---------------------------------------------------------------------------------
// The handle.
// ---------------------------------------------------------------------------------

/// Polls `packet` under the crate's spin-then-park policy before a join parks: tasks
/// are often about to finish, and a park/unpark round trip costs more than a few
/// yields.
fn spin_for<T>(packet: &Packet<T>) -> Option<Result<T, TaskError>> {
    let mut backoff = Backoff::new();
    loop {
        if let Some(result) = packet.take() {
            return Some(result);
        }
        if !backoff.snooze() {
            return None;
        }
    }
}

enum PacketRef<T> {
    /// A slot of its own (scoped pools, big closures, `map` chunks).
    Alone(crate::sync::Arc<Packet<T>>),
    /// The slot inside an owned task's cell (a std `Arc`, also under loom: the cell is
    /// a trait object, and only the packet's own synchronisation is modelled).
    InCell(Arc<dyn AsPacket<T>>),
}

/// The pending result of a task submitted to a [`WorkerPool`](crate::WorkerPool).
///
/// Dropping a handle drops the result when it arrives; it never detaches or stops
/// anything (the pool owns and joins its threads). Every handle resolves: with the
/// value, with [`TaskError::Panicked`], or with [`TaskError::Cancelled`] when the task
/// is dropped unrun, so [`join`](TaskHandle::join) cannot hang on a task that is gone.
///
/// The bounded forms (`try_join`, `join_timeout`, `join_deadline`,
/// `join_cancellable`) hand the handle back in `Err` when the wait ends first, so the
/// result is never lost.
///
/// # Example
///
/// ```
/// use corral::WorkerPool;
/// use std::time::Duration;
///
/// let pool = WorkerPool::builder().workers(2).build()?;
/// let handle = pool.submit(|| 6 * 7).unwrap();
/// let answer = match handle.join_timeout(Duration::from_secs(10)) {
///     Ok(result) => result.unwrap(),
///     Err(still_running) => still_running.join().unwrap(), // nothing is lost
/// };
/// assert_eq!(answer, 42);
/// # Ok::<(), corral::StartError>(())
/// ```
#[must_use = "dropping a TaskHandle discards the task's result (and its panic)"]
pub struct TaskHandle<T> {
    packet: PacketRef<T>,
}

impl<T> TaskHandle<T> {
    /// The handle of a slot inside a task's cell.
    pub(crate) fn in_cell(cell: Arc<dyn AsPacket<T>>) -> Self {
        TaskHandle {
            packet: PacketRef::InCell(cell),
        }
    }

    #[inline]
    fn slot(&self) -> &Packet<T> {
        match &self.packet {
            PacketRef::Alone(packet) => packet,
            PacketRef::InCell(cell) => cell.packet(),
        }
    }

    /// Waits for the task and returns its value.
    ///
    /// # Errors
    ///
    /// [`TaskError::Panicked`] with the payload if the task panicked;
    /// [`TaskError::Cancelled`] if it was dropped without running.
    pub fn join(self) -> Result<T, TaskError> {
        let mut handle = self;
        loop {
            match handle.join_until(&Until::FOREVER) {
                Ok(result) => return result,
                Err(back) => handle = back,
            }
        }
    }

    /// Returns the result if the task has finished, or the handle back if not.
    ///
    /// # Errors
    ///
    /// The outer `Err` is this handle, when the task has not finished yet.
    pub fn try_join(self) -> Result<Result<T, TaskError>, TaskHandle<T>> {
        match self.slot().take() {
            Some(result) => Ok(result),
            None => Err(self),
        }
    }

    /// Waits at most `timeout` for the result.
    ///
    /// # Errors
    ///
    /// The outer `Err` is this handle, when the timeout passed first.
    pub fn join_timeout(self, timeout: Duration) -> Result<Result<T, TaskError>, TaskHandle<T>> {
        self.join_until(&Until::timeout(timeout))
    }

    /// Waits until `deadline` at most for the result.
    ///
    /// # Errors
    ///
    /// The outer `Err` is this handle, when the deadline passed first.
    pub fn join_deadline(self, deadline: Instant) -> Result<Result<T, TaskError>, TaskHandle<T>> {
        self.join_until(&Until::deadline(deadline))
    }

    /// Waits for the result until `token` is cancelled (or its deadline passes).
    ///
    /// # Errors
    ///
    /// The outer `Err` is this handle, when the token was cancelled first.
    pub fn join_cancellable(
        self,
        token: &CancelToken,
    ) -> Result<Result<T, TaskError>, TaskHandle<T>> {
        self.join_until(&Until::cancellable(token))
    }

    /// Whether the result is ready (the task ran, panicked or was cancelled).
    pub fn is_finished(&self) -> bool {
        self.slot().is_done()
    }

    /// Cancels the task. If it has not started, it never will: the handle resolves to
    /// [`TaskError::Cancelled`] at once (a join returns it without waiting), and the
    /// pool drops the closure unrun when it reaches it in the queue (inside the panic
    /// boundary; counted in [`PoolStats::cancelled`](crate::pool::PoolStats::cancelled)
    /// and `never_ran`). A task submitted with a token
    /// ([`submit_with_token`](crate::pool::Pool::submit_with_token)) has a token of
    /// its own, a child of the pool's: it is cancelled too, so a task already running
    /// sees [`is_cancelled`](CancelToken::is_cancelled) and may stop early. A running
    /// task that ignores its token runs to its end, and a join waits for it.
    ///
    /// Returns `true` if this call stopped the task from starting; `false` if it had
    /// already started (or ended, or was cancelled before).
    ///
    /// # Panics
    ///
    /// As [`CancelToken::cancel`]: if a callback registered on the task's token panics,
    /// that panic is re-raised here.
    ///
    /// # Example
    ///
    /// ```
    /// use corral::{pool::TaskError, WorkerPool};
    ///
    /// let pool = WorkerPool::builder().workers(1).build()?;
    /// let (started_tx, started) = std::sync::mpsc::channel();
    /// let running = pool
    ///     .submit_with_token(move |token| {
    ///         started_tx.send(()).unwrap();
    ///         token.wait(); // stands for work that checks its token
    ///         "stopped early"
    ///     })
    ///     .unwrap();
    /// let queued = pool.submit(|| "never runs").unwrap();
    /// assert!(queued.cancel()); // still queued: it will never start
    /// assert!(matches!(queued.join(), Err(TaskError::Cancelled)));
    /// started.recv().unwrap();
    /// assert!(!running.cancel()); // running: its token is cancelled
    /// assert_eq!(running.join().unwrap(), "stopped early");
    /// assert_eq!(pool.shutdown().never_ran, 1);
    /// # Ok::<(), corral::StartError>(())
    /// ```
    pub fn cancel(&self) -> bool {
        let packet = self.slot();
        let stopped = packet.cancel();
        if let Some(token) = &packet.token {
            token.cancel();
        }
        stopped
    }

    pub(crate) fn join_until(self, until: &Until<'_>) -> Result<Result<T, TaskError>, Self> {
        let packet = self.slot();
        if let Some(result) = spin_for(packet) {
            return Ok(result);
        }
        if running_here(packet as *const Packet<T> as usize) {
            return Ok(Err(TaskError::JoinedFromItself));
        }
        let _wake = until.unpark_on_cancel();
        if packet.register() {
            // Parks may end early (a spurious wake-up, a cancel's unpark): re-check.
            while !packet.is_done() {
                if until.park().is_err() {
                    if packet.unregister() {
                        return Err(self);
                    }
                    break; // `set` won the race: the result is in
                }
            }
        }
        match packet.take() {
            Some(result) => Ok(result),
            None => unreachable!("corral: a resolved packet holds its result until joined"),
        }
    }
}

impl<T> fmt::Debug for TaskHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

// ---------------------------------------------------------------------------------
// The closure slot: a task with a handle.
// ---------------------------------------------------------------------------------

/// A task with a handle, as shared by its job and its [`TaskHandle`]: the closure and
/// where its result goes. An owned pool's task keeps its result slot inline
/// ([`in_cell`]), so it is one allocation; the submitter usually drops the last
/// reference when it joins, which returns the memory to the submitting thread's
/// allocator cache, where the next submit asks for it.
pub(crate) struct Cell<C, D> {
    /// Reached only through the task's one [`Shared`], which takes it out once (to
    /// run it, to drop it unrun, or to give it back to its submitter): no lock.
    call: UnsafeCell<Option<C>>,
    done: D,
}

// SAFETY: `call` is reached only through the task's one `Shared` (not `Clone`, made
// only by `Shared::new` and by `from_raw` of its own pointer, and it needs `&mut` to
// take the closure), so by one thread at a time, and the closure is `Send`. Every
// other reference to the cell (the handle's) reads only `done`, which is `Sync`
// itself; the handle may hold the last reference and drop the cell, `call` included,
// on its own thread, which `C: Send` allows (and `call` is `None` by then on every
// path but a `Shared` dropped outside a job, which the pool never does).
unsafe impl<C: Send, D: Sync> Sync for Cell<C, D> {}

/// An owned task's result slot as its handle sees it: inside the shared cell.
impl<C: Send, T: Send> AsPacket<T> for Cell<C, Packet<T>> {
    fn packet(&self) -> &Packet<T> {
        &self.done
    }
}

/// The job's reference to a [`Cell`], and the sole right to its closure.
pub(crate) struct Shared<C, D>(Arc<Cell<C, D>>);

impl<C, D> Shared<C, D> {
    fn new(call: C, done: D) -> Self {
        Shared(Arc::new(Cell {
            call: UnsafeCell::new(Some(call)),
            done,
        }))
    }

    /// The closure, unless it was already taken.
    fn take(&mut self) -> Option<C> {
        // SAFETY: only a `Shared` reaches `call`, there is one per cell, and `&mut
        // self` excludes any other use of it meanwhile (see `Sync for Cell`).
        self.0.call.with_mut(|call| unsafe { (*call).take() })
    }
}

/// A task with its result slot inline.
pub(crate) type InCell<C> = Shared<C, Packet<<C as Call>::Out>>;

/// A task with a result slot of its own.
pub(crate) type OwnSlot<C> = Shared<C, crate::sync::Arc<Packet<<C as Call>::Out>>>;

/// A task whose result slot sits inside its own cell, shared with the handle: one
/// allocation. Only a `'static` task can do this (a handle is `'static`).
pub(crate) fn in_cell<C>(call: C, token: Option<CancelToken>) -> (InCell<C>, TaskHandle<C::Out>)
where
    C: Call + 'static,
    C::Out: Send + 'static,
{
    let task = Shared::new(call, Packet::new(token));
    let handle = TaskHandle::in_cell(Arc::clone(&task.0) as Arc<dyn AsPacket<C::Out>>);
    (task, handle)
}

/// A task whose result goes to a slot of its own, for tasks that may borrow and for
/// big closures (a handle nobody joins yet then pins no closure bytes).
pub(crate) fn with_own_slot<C>(
    call: C,
    token: Option<CancelToken>,
) -> (OwnSlot<C>, TaskHandle<C::Out>)
where
    C: Call,
    C::Out: Send,
{
    let (slot, handle) = packet(token);
    (Shared::new(call, slot), handle)
}

// ---------------------------------------------------------------------------------
// The job: a task behind one thin pointer and a table.
// ---------------------------------------------------------------------------------

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

// SAFETY: the round trip of the `Arc` inside: `Arc::into_raw` and `Arc::from_raw`
// are inverses (one strong reference).
unsafe impl<C, D> Thin for Shared<C, D> {
    fn into_raw(self) -> NonNull<()> {
        // SAFETY: `Arc::into_raw` never returns null (it points into a live allocation).
        unsafe { NonNull::new_unchecked(Arc::into_raw(self.0).cast_mut().cast()) }
    }

    unsafe fn from_raw(raw: NonNull<()>) -> Self {
        // SAFETY: `raw` came from `Shared::into_raw` (caller's contract), that is from
        // `Arc::<Cell<C, D>>::into_raw`, and the reference it stands for is reclaimed
        // exactly once.
        Shared(unsafe { Arc::from_raw(raw.cast::<Cell<C, D>>().as_ptr().cast_const()) })
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

/// A task with a handle: the cell the handle shares.
impl<C, D> Runnable for Shared<C, D>
where
    C: Call,
    D: Deliver<C::Out>,
{
    type Closure = C::Closure;

    fn run(mut self, token: &CancelToken, tally: Tally<'_>) -> Outcome {
        let outcome = match self.take() {
            Some(call) if self.0.done.claim() => {
                let _running = Running::enter(self.0.done.slot());
                let token = self.0.done.own_token().unwrap_or(token);
                call_and_deliver(call, &self.0.done, token, tally)
            }
            // Its handle cancelled it (and resolved itself): dropped unrun, here.
            Some(call) => Outcome::Cancelled(Panic::catch_any(move || drop(call)).err()),
            None => Outcome::Done,
        };
        // This may be the last reference (the handle is gone), dropping a result
        // nobody will join, whose destructor may panic: that must not cost the worker.
        // The panic has no handle to go to: it goes to the report, uncounted (the
        // task itself completed).
        match (Panic::catch_any(move || drop(self)), outcome) {
            (Err(panic), Outcome::Done | Outcome::Panicked(None)) => Outcome::Panicked(Some(panic)),
            (Err(panic), Outcome::Cancelled(None)) => Outcome::Cancelled(Some(panic)),
            (Err(panic), outcome) => {
                drop_quietly(panic);
                outcome
            }
            (Ok(()), outcome) => outcome,
        }
    }

    /// Drops the closure and resolves the handle to `Cancelled` (unless the handle
    /// cancelled it first and did so itself), even if a capture panics on drop; the
    /// panic then goes on to whoever dropped the job.
    fn abandon(mut self) {
        if let Some(call) = self.take() {
            let dropped = Panic::catch_any(move || drop(call));
            if self.0.done.claim() {
                self.0.done.deliver(Err(TaskError::Cancelled));
            }
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

/// What a job can do with the task behind its pointer, and the number the pool
/// counts it under (its `wait_idle` epoch: 0, 1, or 2 for none).
struct Ops {
    run: unsafe fn(NonNull<()>, &CancelToken, Tally<'_>) -> Outcome,
    abandon: unsafe fn(NonNull<()>),
    epoch: usize,
}

/// The tables for one task type, one per epoch (constants, so each job refers to one
/// for free and the epoch costs the job no space).
struct OpsOf<R>(PhantomData<R>);

impl<R: Runnable> OpsOf<R> {
    const OPS: &'static [Ops; 3] = &[Self::ops(0), Self::ops(1), Self::ops(2)];

    const fn ops(epoch: usize) -> Ops {
        Ops {
            run: run_raw::<R>,
            abandon: abandon_raw::<R>,
            epoch,
        }
    }
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
    /// Where the task was submitted, in the user's code (for the thread dump).
    site: &'static Location<'static>,
    /// When the task was made, for the time-in-queue histogram.
    #[cfg(feature = "metrics")]
    made_at: Instant,
    /// The task may borrow for `'a`, and the job owns it.
    _task: PhantomData<Box<dyn Send + 'a>>,
}

// SAFETY: a job is only made from a `Runnable`, which is `Send`, and it owns that task
// (or its reference to it) outright: moving the job moves the task.
unsafe impl Send for Job<'_> {}

impl<'a> Job<'a> {
    /// A job that carries no epoch (2), submitted at the caller's line.
    #[cfg(test)]
    #[track_caller]
    pub(crate) fn new<R: Runnable + 'a>(task: R) -> Self {
        Self::in_epoch(task, 2, Location::caller())
    }

    /// A job counted under `epoch` (0 or 1; anything else is 2, none), submitted at
    /// `site`.
    #[inline]
    pub(crate) fn in_epoch<R: Runnable + 'a>(
        task: R,
        epoch: usize,
        site: &'static Location<'static>,
    ) -> Self {
        Job {
            raw: task.into_raw(),
            ops: &OpsOf::<R>::OPS[epoch.min(2)],
            site,
            #[cfg(feature = "metrics")]
            made_at: Instant::now(),
            _task: PhantomData,
        }
    }

    /// Where the task was submitted.
    #[inline]
    pub(crate) fn site(&self) -> &'static Location<'static> {
        self.site
    }

    /// When the task was made (submitted).
    #[cfg(feature = "metrics")]
    pub(crate) fn made_at(&self) -> Instant {
        self.made_at
    }

    /// The epoch the job was made with.
    #[inline]
    pub(crate) fn epoch(&self) -> usize {
        self.ops.epoch
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

    /// The task this job was made from, without running or abandoning it: how a
    /// refused task goes back to its submitter.
    ///
    /// Only the code that built the job can name `R`, and the queue hands back the job
    /// it was given, never another: that is the contract the one caller (the engine's
    /// push path) relies on.
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
/// # Ok::<(), corral::StartError>(())
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
    //! Every shape of task down every path, with closures that count their runs and
    //! the drops of their captures: the pool's `unsafe` is here, so `scripts/test`
    //! also runs these under Miri.
    use super::*;
    use crate::leak::LeakCheck;
    use std::sync::atomic::AtomicUsize;

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
        in_cell(Plain(f), None)
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

    struct Bomb;

    impl Drop for Bomb {
        fn drop(&mut self) {
            panic!("a capture that panics when dropped");
        }
    }

    #[test]
    fn a_job_dropped_unrun_resolves_its_handle_even_if_a_capture_panics_on_drop() {
        let bomb = Bomb;
        let (task, handle) = with_own_slot(
            Plain(move || {
                let _keep = &bomb;
                1u32
            }),
            None,
        );
        let job = Job::new(task);
        let dropped = Panic::catch_any(move || drop(job));
        assert_eq!(
            dropped.unwrap_err().message(),
            Some("a capture that panics when dropped")
        );
        assert!(handle.join().unwrap_err().is_cancelled());
    }

    #[test]
    fn a_job_dropped_unrun_resolves_its_inline_handle() {
        let (task, handle) = in_cell(Plain(|| 7u32), None);
        drop(Job::new(task));
        assert!(handle.join().unwrap_err().is_cancelled());
    }

    #[test]
    fn a_task_cancelled_before_it_runs_is_dropped_unrun_by_the_run_of_either_shape() {
        let (f, probe) = probed(3u32);
        let (task, handle) = with_handle(f);
        assert!(handle.cancel());
        assert!(!handle.cancel());
        let counts = Counts::default();
        let outcome = run_elsewhere(Job::new(task), &counts);
        assert!(matches!(outcome, Outcome::Cancelled(None)));
        assert_eq!((probe.runs(), probe.drops()), (0, 1));
        assert_eq!(counts.get(), (0, 0));
        assert!(handle.join().unwrap_err().is_cancelled());

        let (f, probe) = probed(4u32);
        let (task, handle) = with_own_slot(Plain(f), None);
        assert!(handle.cancel());
        drop(Job::new(task)); // a drain: the handle is already resolved, once
        assert_eq!((probe.runs(), probe.drops()), (0, 1));
        assert!(handle.join().unwrap_err().is_cancelled());
    }

    #[test]
    fn a_cancel_after_the_run_keeps_the_value_and_cancels_the_tasks_own_token() {
        let own = CancelToken::new();
        let (task, handle) = in_cell(
            Tokened(|token: &CancelToken| token.is_cancelled()),
            Some(own.clone()),
        );
        let pool_token = CancelToken::new();
        let outcome = Job::new(task).run(&pool_token, Tally::NONE);
        assert!(matches!(outcome, Outcome::Done));
        assert!(!handle.cancel());
        assert!(own.is_cancelled() && !pool_token.is_cancelled());
        assert!(!handle.join().unwrap(), "it ran before the cancel");
    }

    #[test]
    fn a_cancelled_task_whose_capture_panics_on_drop_hands_the_panic_to_the_run() {
        let bomb = Bomb;
        let (task, handle) = in_cell(
            Plain(move || {
                let _keep = &bomb;
            }),
            None,
        );
        assert!(handle.cancel());
        match Job::new(task).run(&CancelToken::new(), Tally::NONE) {
            Outcome::Cancelled(Some(panic)) => {
                assert_eq!(panic.message(), Some("a capture that panics when dropped"))
            }
            _ => panic!("the drop's panic was lost"),
        }
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
        let (task, handle) = in_cell(Plain(|| LoudResult), None);
        drop(handle); // nobody will join: the job holds the last reference
        let outcome = Job::new(task).run(&CancelToken::new(), Tally::NONE);
        // The destructor's panic goes to the report, as no handle takes it.
        match outcome {
            Outcome::Panicked(Some(panic)) => assert_eq!(panic.message(), Some("result dropped")),
            _ => panic!("the destructor's panic was lost"),
        }
    }
}
