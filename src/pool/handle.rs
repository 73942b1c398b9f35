//! The result slot of one pool task, and the handle that waits on it.
//!
//! Implementation notes. A [`Packet`] is a result (a panic boxed, so the slot stays a
//! few words) plus the waiting thread, handed over without a lock: one state byte
//! says whether the result is in and whether the handle is parked, and so which side
//! may touch which field (`unsafe`, each access with its SAFETY note; a finished join
//! is one load, cheaper than a lock and an unlock). It is resolved exactly once,
//! by the task's cell (`task.rs`): with the value or panic when the task runs, or with
//! [`TaskError::Cancelled`] when the job is dropped unrun (shutdown_now, an evicted or
//! discarded task), so a handle can never wait for a task that no longer exists. An
//! owned pool's packet lives inside the task's cell ([`AsPacket`]); others stand
//! alone ([`packet`]). The packet's own synchronisation uses only `crate::sync`
//! (atomics, parking and `UnsafeCell`), so it is model-checked under loom
//! (tests/loom_pool.rs), which also checks every access of its cells for races.

use std::fmt;
use std::time::{Duration, Instant};

use crate::cancel::CancelToken;
use crate::panic::Panic;
use crate::sync::cell::UnsafeCell;
use crate::sync::{thread, Arc, AtomicU8, Ordering};
use crate::wait::Until;

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
/// # Ok::<(), corral::ConfigError>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum TaskError {
    /// The task panicked; the payload is kept and can be re-raised with
    /// [`Panic::resume`].
    Panicked(Panic),
    /// The task never ran: the pool was shut down with `shutdown_now`, its token was
    /// cancelled, or an overflow policy discarded it.
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
pub(crate) struct Running(#[cfg_attr(loom, allow(dead_code))] usize);

impl Running {
    #[inline]
    pub(crate) fn enter(slot: usize) -> Running {
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

/// Checks before parking in a join: half spin, half `yield_now`. None under loom,
/// where spinning only multiplies the interleavings to explore.
#[cfg(not(loom))]
const SPIN_STEPS: u32 = 40;
/// The first steps spin (1, 2, 4, ... hints); the rest yield the CPU.
const SPIN_ONLY: u32 = 6;
#[cfg(loom)]
const SPIN_STEPS: u32 = 0;

/// No result yet, and nobody waiting: the handle owns `waiter`.
const EMPTY: u8 = 0;
/// No result yet; the handle parked, and the setter takes `waiter` to wake it.
const WAITING: u8 = 1;
/// The result is in: the handle owns `result`.
const DONE: u8 = 2;

/// One task's result, handed from the thread that resolves it to the one that joins.
/// `state` says who owns which field, so neither needs a lock.
pub(crate) struct Packet<T> {
    state: AtomicU8,
    /// Written once by the setter before `DONE`, read by the handle after it.
    result: UnsafeCell<Option<Result<T, TaskError>>>,
    /// Written by the handle while `EMPTY`, taken by the setter when it ends `WAITING`.
    waiter: UnsafeCell<Option<thread::Thread>>,
}

// SAFETY: the fields are only reached as `state` hands them over (see the consts):
// `result` by the one setter before it publishes `DONE` (release) and by the handle
// after it sees `DONE` (acquire); `waiter` by the handle while the state is `EMPTY`
// or `DONE` (it may leave a `Thread` there, dropped with the packet), and by the
// setter only after its swap returned `WAITING`. The values crossing threads are
// `Send`.
#[allow(unsafe_code)]
unsafe impl<T: Send> Sync for Packet<T> {}

impl<T> Packet<T> {
    /// Resolves the slot. Called once per packet: its task's `Shared` (task.rs) hands
    /// out the closure once, to a run or an abandonment, and only that delivers. A
    /// second call would race the handle's read of the result (asserted in debug
    /// builds).
    #[allow(unsafe_code)]
    pub(crate) fn set(&self, result: Result<T, TaskError>) {
        debug_assert_ne!(
            self.state.load(Ordering::Relaxed),
            DONE,
            "a packet set twice"
        );
        // SAFETY: before `DONE` only the setter touches `result`, and there is one
        // setter per packet (above).
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

    /// The result, if it is in; only the handle calls this.
    #[allow(unsafe_code)]
    fn take(&self) -> Option<Result<T, TaskError>> {
        if self.state.load(Ordering::Acquire) != DONE {
            return None;
        }
        // SAFETY: after `DONE` only the handle touches `result`, and the acquire saw
        // the setter's write.
        self.result.with_mut(|slot| unsafe { (*slot).take() })
    }

    /// Registers the calling (handle's) thread to be woken by `set`. `false` when the
    /// result is already in.
    #[allow(unsafe_code)]
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
    #[allow(unsafe_code)]
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

/// Where a handle finds its task's result slot: inside the task's own cell (owned
/// pools: one allocation for job and handle), or in a slot of its own.
pub(crate) trait AsPacket<T>: Send + Sync {
    fn packet(&self) -> &Packet<T>;
}

enum PacketRef<T> {
    /// A slot of its own (scoped pools, `map` chunks, tests).
    Alone(Arc<Packet<T>>),
    /// The slot inside an owned task's cell (a std `Arc`, also under loom: the cell is
    /// a trait object, and only the packet's own synchronisation is modelled).
    InCell(std::sync::Arc<dyn AsPacket<T>>),
}

impl<T> Packet<T> {
    /// An empty slot.
    pub(crate) fn new() -> Self {
        Packet {
            state: AtomicU8::new(EMPTY),
            result: UnsafeCell::new(None),
            waiter: UnsafeCell::new(None),
        }
    }
}

/// A new result slot of its own: the first half resolves it (once), the handle waits.
pub(crate) fn packet<T>() -> (Arc<Packet<T>>, TaskHandle<T>) {
    let packet = Arc::new(Packet::new());
    (
        Arc::clone(&packet),
        TaskHandle {
            packet: PacketRef::Alone(packet),
        },
    )
}

impl<T> TaskHandle<T> {
    /// The handle of a slot inside a task's cell.
    pub(crate) fn in_cell(cell: std::sync::Arc<dyn AsPacket<T>>) -> Self {
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
/// # Ok::<(), corral::ConfigError>(())
/// ```
#[must_use = "dropping a TaskHandle discards the task's result (and its panic)"]
pub struct TaskHandle<T> {
    packet: PacketRef<T>,
}

impl<T> TaskHandle<T> {
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
        match self.take() {
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
        self.slot().state.load(Ordering::Acquire) == DONE
    }

    fn take(&self) -> Option<Result<T, TaskError>> {
        self.slot().take()
    }

    pub(crate) fn join_until(self, until: &Until<'_>) -> Result<Result<T, TaskError>, Self> {
        // A short spin first: tasks are often about to finish, and a park/unpark
        // round trip costs microseconds.
        for step in 0..SPIN_STEPS {
            if let Some(result) = self.take() {
                return Ok(result);
            }
            if step < SPIN_ONLY {
                for _ in 0..1 << step {
                    std::hint::spin_loop();
                }
            } else {
                thread::yield_now();
            }
        }
        let packet = self.slot();
        if running_here(packet as *const Packet<T> as usize) {
            return Ok(Err(TaskError::JoinedFromItself));
        }
        let _wake = until.unpark_on_cancel();
        if packet.register() {
            // Parks may end early (a spurious wake-up, a cancel's unpark): re-check.
            while packet.state.load(Ordering::Acquire) != DONE {
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
