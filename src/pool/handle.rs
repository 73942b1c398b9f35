//! The result slot of one pool task, and the handle that waits on it.
//!
//! Implementation notes. A [`Packet`] is a mutex-protected result (a panic boxed, so
//! the slot stays a few words) plus the waiting thread, shared by the [`TaskHandle`]
//! and the [`Completer`] that travels with the queued task. The completer resolves
//! the packet exactly once: with the task's value or panic when it runs, or with
//! [`TaskError::Cancelled`] when it is dropped unrun (shutdown_now, an evicted or
//! discarded task). So a handle can never wait for a task that no longer exists.
//! Only `crate::sync` is used: the packet is model-checked under loom
//! (tests/loom_pool.rs).

use std::fmt;
use std::time::{Duration, Instant};

use crate::cancel::CancelToken;
use crate::panic::Panic;
use crate::sync::{thread, Arc, AtomicBool, Mutex, Ordering};
use crate::wait::Until;

/// Why a pool task produced no value.
///
/// # Example
///
/// ```
/// use corral::{TaskError, WorkerPool};
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
            TaskError::Cancelled => None,
        }
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::Panicked(panic) => write!(f, "task panicked: {panic}"),
            TaskError::Cancelled => f.write_str("task was cancelled before it ran"),
        }
    }
}

impl std::error::Error for TaskError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TaskError::Panicked(panic) => Some(panic),
            TaskError::Cancelled => None,
        }
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

pub(crate) struct Packet<T> {
    done: AtomicBool,
    slot: Mutex<Slot<T>>,
}

struct Slot<T> {
    result: Option<Stored<T>>,
    waiter: Option<thread::Thread>,
}

/// A result as the slot keeps it: a panic is boxed, so a slot stays small (a `Panic`
/// is several words; most results are a word or two). Less memory per in-flight task
/// means fewer fresh cache lines written on submit and read on join, and smaller
/// allocator size classes. Panics are rare; the box is paid only then.
enum Stored<T> {
    Value(T),
    Panicked(Box<Panic>),
    Cancelled,
}

impl<T> Stored<T> {
    fn new(result: Result<T, TaskError>) -> Self {
        match result {
            Ok(value) => Stored::Value(value),
            Err(TaskError::Panicked(panic)) => Stored::Panicked(Box::new(panic)),
            Err(TaskError::Cancelled) => Stored::Cancelled,
        }
    }

    fn into_result(self) -> Result<T, TaskError> {
        match self {
            Stored::Value(value) => Ok(value),
            Stored::Panicked(panic) => Err(TaskError::Panicked(*panic)),
            Stored::Cancelled => Err(TaskError::Cancelled),
        }
    }
}

impl<T> Packet<T> {
    fn set(&self, result: Result<T, TaskError>) {
        let result = Stored::new(result);
        let waiter = {
            let mut slot = self.slot.lock();
            slot.result = Some(result);
            self.done.store(true, Ordering::Release);
            slot.waiter.take()
        };
        if let Some(waiter) = waiter {
            waiter.unpark();
        }
    }
}

/// The sending half of a task's result: resolves the packet exactly once, with
/// `Cancelled` if it is dropped without a result.
pub(crate) struct Completer<T> {
    packet: Option<Arc<Packet<T>>>,
}

impl<T> Completer<T> {
    pub(crate) fn complete(mut self, result: Result<T, TaskError>) {
        if let Some(packet) = self.packet.take() {
            packet.set(result);
        }
    }
}

impl<T> Drop for Completer<T> {
    fn drop(&mut self) {
        if let Some(packet) = self.packet.take() {
            packet.set(Err(TaskError::Cancelled));
        }
    }
}

/// A new result slot: the completer goes with the task, the handle to the submitter.
pub(crate) fn packet<T>() -> (Completer<T>, TaskHandle<T>) {
    let packet = Arc::new(Packet {
        done: AtomicBool::new(false),
        slot: Mutex::new(Slot {
            result: None,
            waiter: None,
        }),
    });
    (
        Completer {
            packet: Some(Arc::clone(&packet)),
        },
        TaskHandle { packet },
    )
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
    packet: Arc<Packet<T>>,
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
        self.packet.done.load(Ordering::Acquire)
    }

    fn take(&self) -> Option<Result<T, TaskError>> {
        if !self.is_finished() {
            return None;
        }
        self.packet
            .slot
            .lock()
            .result
            .take()
            .map(Stored::into_result)
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
        let _wake = until.unpark_on_cancel();
        loop {
            {
                let mut slot = self.packet.slot.lock();
                if let Some(result) = slot.result.take() {
                    return Ok(result.into_result());
                }
                slot.waiter = Some(thread::current());
            }
            if until.park().is_err() {
                let mut slot = self.packet.slot.lock();
                slot.waiter = None;
                return match slot.result.take() {
                    Some(result) => Ok(result.into_result()),
                    None => {
                        drop(slot);
                        Err(self)
                    }
                };
            }
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
