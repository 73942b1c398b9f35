//! [`TaskGroup`]: Go's errgroup on scoped OS threads, with a concurrency limit, the
//! first error cancelling the rest, every result keyed by [`TaskId`], and panics kept.
//!
//! Each task is one thread of the enclosing [`corral::scope`](crate::scope()), named
//! `corral-group-N` and seen by leak checks. Tasks receive the group's token, a child
//! of the scope's: the first failure cancels it, so the other tasks can stop early, and
//! [`GroupError`] names the task that failed first. A panic stays with the group and is
//! re-raised by [`wait`](TaskGroup::wait) (or returned by
//! [`wait_all`](TaskGroup::wait_all)) once every task has joined. The
//! [`limit`](TaskGroup::limit) is a [`Semaphore`]: a permit
//! is taken before a task's thread starts and given back when its closure returns.

use std::cell::Cell;
use std::fmt;
use std::time::{Duration, Instant};

use crate::cancel::CancelToken;
use crate::config::ConfigError;
use crate::panic::drop_quietly;
use crate::panic::Panic;
use crate::pool::SubmitError;
use crate::scope::{Scope, ScopedHandle};
use crate::semaphore::{AcquireError, OwnedPermit, Semaphore};
use crate::spawn::{SpawnError, ThreadSpec};
use crate::sync::{Arc, AtomicU64, Mutex, Ordering};
use crate::wait::Until;

/// Identifies a task of a [`TaskGroup`]: ids count up from 0 in spawn order.
///
/// # Example
///
/// ```
/// let ids = corral::scope(|s| {
///     let group = corral::TaskGroup::<(), ()>::new(s);
///     let a = group.spawn(|_| Ok(()));
///     let b = group.spawn(|_| Ok(()));
///     group.wait().unwrap();
///     (a.index(), b.index())
/// });
/// assert_eq!(ids, (0, 1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId(u64);

impl TaskId {
    /// The task's position in spawn order, from 0.
    pub fn index(self) -> u64 {
        self.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task {}", self.0)
    }
}

/// How a group task failed.
///
/// # Example
///
/// ```
/// use corral::{group::GroupError, TaskGroup};
///
/// let results = corral::scope(|s| {
///     let group = TaskGroup::<u32, String>::new(s);
///     group.spawn(|_| Err("bad row".to_string()));
///     group.wait_all()
/// });
/// assert!(matches!(&results[0].1, Err(GroupError::Failed(e)) if e == "bad row"));
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum GroupError<E> {
    /// The task returned `Err`.
    Failed(E),
    /// The task panicked; the payload is kept.
    Panicked(Panic),
    /// The task's thread did not start (the OS refused it); the task never ran.
    Spawn(SpawnError),
}

impl<E> GroupError<E> {
    /// The task's own error, if it returned one.
    pub fn into_failed(self) -> Option<E> {
        match self {
            GroupError::Failed(e) => Some(e),
            GroupError::Panicked(_) | GroupError::Spawn(_) => None,
        }
    }

    /// The panic `wait` re-raises for this failure (a thread that did not start is
    /// re-raised with its [`SpawnError`] as the payload), or the task's own error.
    fn into_panic(self) -> Result<Panic, E> {
        match self {
            GroupError::Failed(e) => Err(e),
            GroupError::Panicked(panic) => Ok(panic),
            GroupError::Spawn(e) => Ok(Panic::new(Box::new(e))),
        }
    }

    /// Whether the task panicked.
    pub fn is_panicked(&self) -> bool {
        matches!(self, GroupError::Panicked(_))
    }
}

/// Describes this error only: the task's error, or its [`Panic`], is the
/// [`source`](std::error::Error::source) (when `E` is not an
/// [`Error`](std::error::Error), reach it with [`into_failed`](GroupError::into_failed)
/// or by matching; `Debug` shows it).
impl<E> fmt::Display for GroupError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupError::Failed(_) => f.write_str("task failed"),
            GroupError::Panicked(_) => f.write_str("task panicked"),
            GroupError::Spawn(_) => f.write_str("task not started"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for GroupError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            GroupError::Failed(e) => Some(e),
            GroupError::Panicked(panic) => Some(panic),
            GroupError::Spawn(e) => Some(e),
        }
    }
}

/// The first failures, by id (set once each).
#[derive(Default)]
struct Failures {
    first_error: Option<TaskId>,
    first_panic: Option<TaskId>,
}

type Outcome<T, E> = Result<T, GroupError<E>>;

/// A task's thread, or why it did not start.
enum Entry<'scope, T, E> {
    Running(ScopedHandle<'scope, Outcome<T, E>>),
    NotStarted(SpawnError),
    /// Run on the spawning thread (one of the group's own tasks, at the limit).
    Finished(Outcome<T, E>),
}

impl<T, E> Entry<'_, T, E> {
    /// Whether this is the calling thread's own task (the group waited on or dropped
    /// inside one of its tasks), which cannot be joined from here.
    fn is_current(&self) -> bool {
        match self {
            Entry::Running(handle) => handle.thread().id() == std::thread::current().id(),
            Entry::NotStarted(_) | Entry::Finished(_) => false,
        }
    }

    fn join(self) -> Outcome<T, E> {
        match self {
            Entry::Running(handle) => match handle.join() {
                Ok(outcome) => outcome,
                Err(panic) => Err(GroupError::Panicked(panic)),
            },
            Entry::NotStarted(e) => Err(GroupError::Spawn(e)),
            Entry::Finished(outcome) => outcome,
        }
    }
}

type Joined<T, E> = (Vec<(TaskId, Outcome<T, E>)>, Failures);

/// A set of fallible tasks on the threads of a [`corral::scope`](crate::scope()), in the
/// manner of Go's errgroup.
///
/// * [`spawn`](TaskGroup::spawn) starts `f(&token) -> Result<T, E>` on its own scoped
///   thread (so it may borrow); with a [`limit`](TaskGroup::limit) it first waits for a
///   free slot, and `try_spawn` / `spawn_timeout` / `spawn_deadline` /
///   `spawn_cancellable` bound that wait and hand the closure back on refusal.
/// * The first task to return `Err` or panic cancels the group [`token`](TaskGroup::token),
///   which every task receives; the others can stop early.
/// * [`wait`](TaskGroup::wait) joins every task and returns the first error (by time),
///   or every value in spawn order. [`wait_all`](TaskGroup::wait_all) returns every
///   outcome keyed by [`TaskId`], so the caller knows which task failed.
/// * A panic is captured with its payload: `wait` re-raises it after every task has
///   joined, `wait_all` returns it as [`GroupError::Panicked`]. Never lost.
/// * Dropping the group without waiting cancels its token, joins every task and
///   re-raises a panic if there was one (errors are then dropped).
/// * Whatever the group discards (the values and errors `wait` does not return, every
///   outcome when the group is dropped) is dropped inside the panic boundary: a
///   destructor that panics does not cut the others short; its panic is re-raised like
///   a task's, after everything else is dropped, when no task panic is.
/// * Waited on or dropped inside one of its own tasks (the group moved into it), the
///   group joins every other task; that task is still running, so its own outcome is
///   left out (`wait` and `wait_all` return the others'), and the scope joins its
///   thread when it ends (re-raising its panic, if it has one). A thread cannot join
///   itself: this is the one case where the group does not join all of its tasks.
///
/// # Example
///
/// ```
/// use corral::{leak::LeakCheck, TaskGroup};
///
/// let _check = LeakCheck::new();
/// let pages = ["a", "bb", "", "dddd"];
/// let outcome = corral::scope(|s| {
///     let group = TaskGroup::new(s).limit(2).unwrap(); // at most 2 at once
///     for page in &pages {
///         group.spawn(move |token| {
///             if token.is_cancelled() {
///                 return Err("stopped".to_string());
///             }
///             if page.is_empty() { Err("empty page".to_string()) } else { Ok(page.len()) }
///         });
///     }
///     group.wait()
/// });
/// assert!(outcome.is_err());
/// ```
pub struct TaskGroup<'scope, 'env, T, E> {
    scope: Scope<'scope, 'env>,
    token: CancelToken,
    /// `limit(n)`: one permit per running task.
    limit: Option<std::sync::Arc<Semaphore>>,
    next_id: AtomicU64,
    tasks: Mutex<Vec<(TaskId, Entry<'scope, T, E>)>>,
    failures: Arc<Mutex<Failures>>,
}

impl<'scope, 'env, T, E> TaskGroup<'scope, 'env, T, E>
where
    T: Send + 'scope,
    E: Send + 'scope,
{
    /// An empty group without a limit. Its token is a child of the scope's token.
    pub fn new(scope: &Scope<'scope, 'env>) -> Self {
        TaskGroup {
            scope: scope.clone(),
            token: scope.token().child(),
            limit: None,
            next_id: AtomicU64::new(0),
            tasks: Mutex::new(Vec::new()),
            failures: Arc::new(Mutex::new(Failures::default())),
        }
    }

    /// Lets at most `n` tasks run at once: `spawn` waits for a free slot and
    /// `try_spawn` refuses. Set it before spawning.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `limit` when `n` is 0.
    pub fn limit(mut self, n: usize) -> Result<Self, ConfigError> {
        if n == 0 {
            return Err(ConfigError::new("limit", n, "must be at least 1"));
        }
        self.limit = Some(std::sync::Arc::new(Semaphore::try_new(n).map_err(
            |_| ConfigError::new("limit", n, "must not exceed Semaphore::MAX_PERMITS"),
        )?));
        Ok(self)
    }

    /// The group token: cancelled by the first failure, by the scope's token, or by
    /// anyone holding a clone. Every task receives it.
    pub fn token(&self) -> &CancelToken {
        &self.token
    }

    fn spawn_until<F>(&self, f: F, until: Option<&Until<'_>>) -> Result<TaskId, SubmitError<F>>
    where
        F: FnOnce(&CancelToken) -> Result<T, E> + Send + 'scope,
    {
        let permit = match (&self.limit, until) {
            (None, _) => None,
            // From inside one of the group's own tasks, an unbounded wait for a slot
            // may never end (this task holds one, and every other holder may be
            // waiting the same way): with no slot free, the task runs right here, in
            // the slot of the task that spawns it.
            (Some(limit), Some(until))
                if until.token().is_none()
                    && until.caller_deadline().is_none()
                    && self.is_own_task() =>
            {
                match limit.try_acquire_owned() {
                    Ok(permit) => Some(permit),
                    Err(_) => return Ok(self.run_here(f)),
                }
            }
            (Some(limit), None) => match limit.try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => return Err(SubmitError::Full(f)),
            },
            (Some(limit), Some(until)) => match limit.acquire_owned_until(1, until) {
                Ok(permit) => Some(permit),
                Err(AcquireError::Timeout) => return Err(SubmitError::Timeout(f)),
                Err(AcquireError::Cancelled(reason)) => {
                    return Err(SubmitError::Cancelled(f, reason))
                }
                // The group never closes its semaphore and asks for 1 of n >= 1.
                Err(_) => return Err(SubmitError::Full(f)),
            },
        };
        Ok(self.start(f, permit))
    }

    /// Whether the calling thread is one of this group's tasks.
    fn is_own_task(&self) -> bool {
        CURRENT_GROUP.with(Cell::get) == Arc::as_ptr(&self.failures) as usize
    }

    /// Runs a task on the calling thread (one of the group's own, at the limit) and
    /// records its outcome like any other task's.
    fn run_here<F>(&self, f: F) -> TaskId
    where
        F: FnOnce(&CancelToken) -> Result<T, E> + Send + 'scope,
    {
        let id = TaskId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let outcome = match Panic::catch_any(|| f(&self.token)) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                fail(&self.failures, &self.token, id, false);
                Err(GroupError::Failed(e))
            }
            Err(panic) => {
                fail(&self.failures, &self.token, id, true);
                Err(GroupError::Panicked(panic))
            }
        };
        self.tasks.lock().push((id, Entry::Finished(outcome)));
        id
    }

    /// Starts a task; `permit` (its limit slot, if any) is released when the task's
    /// closure is done, or at once if its thread never starts.
    fn start<F>(&self, f: F, permit: Option<OwnedPermit>) -> TaskId
    where
        F: FnOnce(&CancelToken) -> Result<T, E> + Send + 'scope,
    {
        let id = TaskId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let slot = permit;
        let token = self.token.clone();
        let failures = Arc::clone(&self.failures);
        let spec = ThreadSpec::new("TaskGroup", format!("group-{}", id.0));
        let group = Arc::as_ptr(&failures) as usize;
        let started = self.scope.start_as(spec, move || {
            CURRENT_GROUP.with(|g| g.set(group));
            let outcome = Panic::catch_any(|| f(&token));
            drop(slot);
            match outcome {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(e)) => {
                    fail(&failures, &token, id, false);
                    Err(GroupError::Failed(e))
                }
                Err(panic) => {
                    fail(&failures, &token, id, true);
                    Err(GroupError::Panicked(panic))
                }
            }
        });
        match started {
            Ok(handle) => self.tasks.lock().push((id, Entry::Running(handle))),
            Err(e) => {
                // The closure (and its slot) were dropped unstarted. Counted like a
                // panic: `wait` re-raises it (the `SpawnError` is the payload).
                fail(&self.failures, &self.token, id, true);
                self.tasks.lock().push((id, Entry::NotStarted(e)));
            }
        }
        id
    }

    /// Starts `f` on a new scoped thread, first waiting for a free slot if the group
    /// has a [`limit`](TaskGroup::limit). Returns the task's id.
    ///
    /// If the OS refuses to start the thread, that is recorded as the task's
    /// [`GroupError::Spawn`] and counted like a panic
    /// (and cancels the group), surfacing from `wait` like any task panic.
    ///
    /// Called from inside one of the group's own tasks when no slot is free, it runs
    /// `f` right there, on the calling task's thread and in its slot, instead of
    /// waiting (a task waiting for a slot while holding one could wait for ever); its
    /// outcome is recorded under its own id like any task's.
    pub fn spawn<F>(&self, f: F) -> TaskId
    where
        F: FnOnce(&CancelToken) -> Result<T, E> + Send + 'scope,
    {
        let mut f = f;
        loop {
            match self.spawn_until(f, Some(&Until::FOREVER)) {
                Ok(id) => return id,
                Err(refused) => f = refused.into_inner(),
            }
        }
    }

    /// Starts `f` only if a slot is free now.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Full`] with the closure when the group is at its limit.
    ///
    /// # Example
    ///
    /// ```
    /// corral::scope(|s| {
    ///     let group = corral::TaskGroup::<(), ()>::new(s).limit(1).unwrap();
    ///     let (tx, rx) = std::sync::mpsc::channel::<()>();
    ///     group.spawn(move |_| { rx.recv().ok(); Ok(()) });
    ///     let refused = group.try_spawn(|_| Ok(())).unwrap_err();
    ///     assert!(refused.is_full());
    ///     tx.send(()).unwrap();
    ///     group.wait().unwrap();
    /// });
    /// ```
    pub fn try_spawn<F>(&self, f: F) -> Result<TaskId, SubmitError<F>>
    where
        F: FnOnce(&CancelToken) -> Result<T, E> + Send + 'scope,
    {
        self.spawn_until(f, None)
    }

    /// As [`spawn`](TaskGroup::spawn), waiting at most `timeout` for a slot.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Timeout`] with the closure.
    pub fn spawn_timeout<F>(&self, f: F, timeout: Duration) -> Result<TaskId, SubmitError<F>>
    where
        F: FnOnce(&CancelToken) -> Result<T, E> + Send + 'scope,
    {
        self.spawn_until(f, Some(&Until::timeout(timeout)))
    }

    /// As [`spawn`](TaskGroup::spawn), waiting until `deadline` at most for a slot.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Timeout`] with the closure.
    pub fn spawn_deadline<F>(&self, f: F, deadline: Instant) -> Result<TaskId, SubmitError<F>>
    where
        F: FnOnce(&CancelToken) -> Result<T, E> + Send + 'scope,
    {
        self.spawn_until(f, Some(&Until::deadline(deadline)))
    }

    /// As [`spawn`](TaskGroup::spawn), waiting for a slot until `token` is cancelled.
    /// Pass the group's own [`token`](TaskGroup::token) to stop spawning once a task
    /// has failed.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Cancelled`] with the closure and the token's reason.
    pub fn spawn_cancellable<F>(&self, f: F, token: &CancelToken) -> Result<TaskId, SubmitError<F>>
    where
        F: FnOnce(&CancelToken) -> Result<T, E> + Send + 'scope,
    {
        self.spawn_until(f, Some(&Until::cancellable(token)))
    }

    /// Joins every task; outcomes in spawn order, and the first failure by time. On
    /// one of the group's own tasks, that task is left out: it is still running (its
    /// thread is joined by the scope, which re-raises its panic if it has one).
    fn join_all(&self) -> Joined<T, E> {
        let mut tasks = std::mem::take(&mut *self.tasks.lock());
        // Spawns from several threads (or from inside a task) may record out of order.
        tasks.sort_by_key(|(id, _)| *id);
        let outcomes = tasks
            .into_iter()
            .filter(|(_, entry)| !entry.is_current())
            .map(|(id, entry)| (id, entry.join()))
            .collect();
        let failures = std::mem::take(&mut *self.failures.lock());
        (outcomes, failures)
    }

    /// Joins every task. Returns every value in spawn order, or the first error (the
    /// first to happen, not the first spawned).
    ///
    /// # Errors
    ///
    /// The first task error.
    ///
    /// # Panics
    ///
    /// Re-raises, with its original payload, the first task panic (or thread that did
    /// not start: its [`SpawnError`] is the payload), once every task has joined. Use [`wait_all`](TaskGroup::wait_all) to get panics as values. Without a
    /// task panic, re-raises the first panic of a destructor of a value or error that
    /// `wait` discards (the values when it returns an error, the errors after the
    /// first), once everything else is dropped.
    pub fn wait(self) -> Result<Vec<T>, E> {
        let (outcomes, failures) = self.join_all();
        let mut first_error = None;
        let mut values = Vec::with_capacity(outcomes.len());
        let mut first_panic = None;
        // The first panic of a destructor of something `wait` discards.
        let mut drop_panic = None;
        for (id, outcome) in outcomes {
            match outcome {
                Ok(value) => values.push(value),
                Err(err) => match err.into_panic() {
                    Err(e) => {
                        if first_error.is_none() || failures.first_error == Some(id) {
                            if let Some(older) = first_error.replace(e) {
                                discard(older, &mut drop_panic);
                            }
                        } else {
                            discard(e, &mut drop_panic);
                        }
                    }
                    Ok(panic) => {
                        if first_panic.is_none() || failures.first_panic == Some(id) {
                            if let Some(older) = first_panic.replace(panic) {
                                drop_quietly(older);
                            }
                        } else {
                            drop_quietly(panic);
                        }
                    }
                },
            }
        }
        if first_panic.is_some() || first_error.is_some() {
            for value in values.drain(..) {
                discard(value, &mut drop_panic);
            }
        }
        if first_panic.is_some() {
            if let Some(e) = first_error.take() {
                discard(e, &mut drop_panic);
            }
        }
        if let Some(panic) = first_panic {
            if let Some(other) = drop_panic {
                drop_quietly(other);
            }
            panic.resume();
        }
        if let Some(panic) = drop_panic {
            if let Some(e) = first_error.take() {
                drop_quietly(e);
            }
            panic.resume();
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(values),
        }
    }

    /// Joins every task and returns every outcome keyed by task id, in spawn order.
    /// Panics come back as [`GroupError::Panicked`] and threads that did not start as
    /// [`GroupError::Spawn`]; nothing is re-raised.
    ///
    /// # Example
    ///
    /// ```
    /// use corral::TaskGroup;
    ///
    /// let results = corral::scope(|s| {
    ///     let group = TaskGroup::<u8, &str>::new(s);
    ///     group.spawn(|_| Ok(1));
    ///     group.spawn(|_| -> Result<u8, &str> { panic!("corrupt input") });
    ///     group.wait_all()
    /// });
    /// assert_eq!(results.len(), 2);
    /// assert!(results[0].1.is_ok());
    /// assert!(results[1].1.as_ref().unwrap_err().is_panicked());
    /// ```
    pub fn wait_all(self) -> Vec<(TaskId, Result<T, GroupError<E>>)> {
        self.join_all().0
    }

    /// Tasks spawned so far.
    pub fn len(&self) -> usize {
        self.next_id.load(Ordering::Relaxed) as usize
    }

    /// Whether no task was spawned yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

thread_local! {
    /// The group whose task this thread runs (the address of its `failures`), or 0.
    static CURRENT_GROUP: Cell<usize> = const { Cell::new(0) };
}

fn fail(failures: &Mutex<Failures>, token: &CancelToken, id: TaskId, panicked: bool) {
    {
        let mut failures = failures.lock();
        let first = if panicked {
            &mut failures.first_panic
        } else {
            &mut failures.first_error
        };
        first.get_or_insert(id);
    }
    token.cancel();
}

/// Drops something `wait` or the group's `Drop` discards (a value or error nobody will
/// read) inside the panic boundary: the first destructor panic is kept in `first`,
/// later ones are dropped quietly.
fn discard<V>(value: V, first: &mut Option<Panic>) {
    if let Err(panic) = Panic::catch_any(move || drop(value)) {
        match first {
            None => *first = Some(panic),
            Some(_) => drop_quietly(panic),
        }
    }
}

impl<T, E> Drop for TaskGroup<'_, '_, T, E> {
    fn drop(&mut self) {
        let tasks = std::mem::take(&mut *self.tasks.lock());
        if tasks.is_empty() {
            return;
        }
        self.token.cancel();
        let mut first_panic = None;
        let mut drop_panic = None;
        for (_, entry) in tasks {
            if entry.is_current() {
                // Dropped inside one of its own tasks: the scope joins this thread.
                continue;
            }
            match entry.join() {
                Err(GroupError::Panicked(panic)) if first_panic.is_none() => {
                    first_panic = Some(panic);
                }
                Err(GroupError::Panicked(panic)) => drop_quietly(panic),
                outcome => discard(outcome, &mut drop_panic),
            }
        }
        let raise = match (first_panic, drop_panic) {
            (Some(panic), other) => {
                if let Some(other) = other {
                    drop_quietly(other);
                }
                Some(panic)
            }
            (None, other) => other,
        };
        if let Some(panic) = raise {
            if std::thread::panicking() {
                drop_quietly(panic);
            } else {
                panic.resume();
            }
        }
    }
}

impl<T, E> fmt::Debug for TaskGroup<'_, '_, T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskGroup")
            .field("spawned", &self.next_id.load(Ordering::Relaxed))
            .field("cancelled", &self.token.is_cancelled())
            .field("limited", &self.limit.is_some())
            .finish()
    }
}
