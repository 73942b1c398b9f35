//! A supervisor for long-lived worker threads: restart on failure, within limits.
//!
//! A [`Supervisor`] runs each child on a thread of its own with a [`CancelToken`]
//! (a child of the supervisor's). When a child returns or panics, its [`Restart`] type
//! and the supervisor's [`Strategy`] decide what is restarted, after a backoff, as long
//! as the restarts stay within the intensity limit (at most `max_restarts` within
//! `period`); past it the supervisor stops every child and reports why
//! ([`StopReason`]). Each ending is an [`Exit`]; [`SupervisorReport`] has them all.
//!
//! # What a child must do
//!
//! Honour its token: [`Supervisor::stop`] cancels every child and joins it, so a child
//! that never looks at its token keeps `stop` waiting. Every piece of user code (the
//! child's function, the `Display` and `Drop` of its error, the function's own drop,
//! `on_cancel` callbacks, an injected clock) runs inside the panic boundary: whatever
//! panics becomes an [`Exit::Panicked`] or an entry of [`SupervisorReport::panics`].
//! A supervisor stopped or dropped from one of its own children's threads cannot join
//! that thread (a thread cannot join itself): the others are joined, the report is
//! produced, and that thread finishes on its own.
//
// Layout: one monitor thread applies the strategy and the intensity limit, waits out
// backoffs on the supervisor's token, and joins every child before restarting it.

use std::cell::Cell;
use std::collections::VecDeque;
use std::error::Error;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;

use crate::cancel::CancelToken;
use crate::clock::{Clock, SystemClock};
use crate::config::{check_name, ConfigError};
use crate::panic::{drop_caught, Panic};
use crate::spawn::{start, SpawnError, StartError, ThreadSpec};
use crate::sync::time;

/// The largest `max_restarts` [`SupervisorBuilder::intensity`] accepts (1,000,000):
/// the monitor remembers one instant per restart within the period, so the limit
/// bounds that memory.
const MAX_RESTARTS: usize = 1_000_000;

/// How many exits a [`SupervisorReport`] keeps (10,000): the most recent ones, with a
/// count of the older ones left out ([`SupervisorReport::exits_omitted`]), so a
/// long-lived supervisor's record stays bounded.
const MAX_EXITS_KEPT: usize = 10_000;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The id of the supervisor whose child runs on this thread (0 elsewhere), so that
    /// a supervisor stopped from one of its own children knows not to wait for it.
    static CHILD_OF: Cell<u64> = const { Cell::new(0) };
}

/// When a child is restarted after it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Restart {
    /// Always restarted, whether it returned `Ok`, `Err` or panicked.
    Permanent,
    /// Restarted only after an `Err` or a panic; an `Ok` return ends it for good.
    Transient,
    /// Never restarted.
    Temporary,
}

/// Which children are restarted when one of them must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Strategy {
    /// Only the child that exited (the default).
    #[default]
    OneForOne,
    /// Every child: the others are cancelled and joined first, then all restart.
    OneForAll,
    /// The child and every child added after it (which may depend on it): those are
    /// cancelled and joined first, then all of them restart in the order they were
    /// added. Children added before it keep running.
    RestForOne,
}

/// The function a child runs. It should return when its token is cancelled.
type ChildFn = Arc<dyn Fn(&CancelToken) -> Result<(), BoxError> + Send + Sync>;

type BoxError = Box<dyn Error + Send + Sync>;

struct ChildSpec {
    name: String,
    restart: Restart,
    run: ChildFn,
}

/// Configures and starts a [`Supervisor`].
#[must_use = "a builder does nothing until `start` is called"]
pub struct SupervisorBuilder {
    /// The first bad child name, reported by `start`.
    bad_name: Option<ConfigError>,
    strategy: Strategy,
    max_restarts: usize,
    period: Duration,
    backoff: Duration,
    max_backoff: Duration,
    clock: Arc<dyn Clock>,
    children: Vec<ChildSpec>,
}

/// How one child exited.
#[derive(Debug)]
#[non_exhaustive]
pub enum Exit {
    /// The function returned `Ok(())`.
    Finished,
    /// The function returned an error (its `Display` text).
    Failed(String),
    /// The function panicked, or the error it returned panicked while being formatted
    /// or dropped (restarted like a failure).
    Panicked(Panic),
}

/// Why the supervisor stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// [`Supervisor::stop`] (or drop) was called.
    Stopped,
    /// More than `max_restarts` restarts happened within `period`.
    IntensityExceeded,
    /// Every child exited and none was to be restarted.
    AllExited,
    /// The supervisor's own machinery hit a panic in user code it runs (the injected
    /// [`Clock`]), or the OS refused to restart a child: every child was stopped and
    /// joined; the panic is in [`SupervisorReport::panics`], the refused thread in
    /// [`SupervisorReport::spawn_error`].
    Failed,
}

/// What a supervisor did, returned by [`Supervisor::stop`] and [`Supervisor::join`].
#[derive(Debug)]
#[non_exhaustive]
pub struct SupervisorReport {
    /// Why it stopped.
    pub reason: StopReason,
    /// Restarts per child, in the order the children were added.
    pub restarts: Vec<(String, usize)>,
    /// Every exit seen, in order: child name and how it exited (the most recent
    /// 10,000 of them).
    pub exits: Vec<(String, Exit)>,
    /// Exits left out of `exits` because there were more than 10,000.
    pub exits_omitted: usize,
    /// Panics in user code that were not a child's exit: an
    /// [`on_cancel`](CancelToken::on_cancel) callback run when the supervisor cancelled
    /// a token, the drop of a child's function, the injected clock.
    pub panics: Vec<Panic>,
    /// The child thread that did not start when a child was restarted (the reason is
    /// then [`StopReason::Failed`]).
    pub spawn_error: Option<SpawnError>,
}

impl SupervisorReport {
    /// The report of a supervisor stopped from its own monitor thread, which is the
    /// thread producing the real one: nothing is known there.
    fn unknown() -> Self {
        SupervisorReport {
            reason: StopReason::Stopped,
            restarts: Vec::new(),
            exits: Vec::new(),
            exits_omitted: 0,
            panics: Vec::new(),
            spawn_error: None,
        }
    }

    /// Total restarts across all children.
    pub fn total_restarts(&self) -> usize {
        self.restarts.iter().map(|(_, n)| n).sum()
    }
}

/// A running supervisor: long-lived named children, restarted on failure within an
/// intensity limit, all joined by [`stop`](Supervisor::stop) or on drop.
///
/// # Example
///
/// ```
/// use corral::{supervisor::Restart, Supervisor};
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// let attempts = Arc::new(AtomicUsize::new(0));
/// let seen = attempts.clone();
/// let supervisor = Supervisor::builder()
///     .intensity(5, Duration::from_secs(10))
///     .child("flaky", Restart::Transient, move |_token| {
///         // Fails twice, then succeeds and is not restarted again.
///         match seen.fetch_add(1, Ordering::SeqCst) {
///             0 | 1 => Err("connection refused"),
///             _ => Ok(()),
///         }
///     })
///     .start()
///     .unwrap();
/// let report = supervisor.join();
/// assert_eq!(attempts.load(Ordering::SeqCst), 3);
/// assert_eq!(report.total_restarts(), 2);
/// ```
/// # Stopping from inside
///
/// A supervisor may be stopped or dropped from one of its own children (or from user
/// code its monitor runs, such as the drop of a child's function). It never joins the
/// thread it is called on: every other thread is cancelled and joined, the report is
/// produced (without that child's last exit, which has not happened yet), and the
/// calling thread finishes on its own when it returns. Called on the monitor thread,
/// the report is empty ([`StopReason::Stopped`], no exits): that thread is the one
/// building the real report.
#[must_use = "dropping a Supervisor stops its children at once; keep it, then `join` or `stop` it"]
pub struct Supervisor {
    token: CancelToken,
    monitor: Option<JoinHandle<Option<SupervisorReport>>>,
    /// Disconnected when the monitor thread is about to return (every child joined):
    /// what the bounded `stop`/`join` forms wait on, since `JoinHandle` has no timeout.
    finished: Receiver<()>,
    /// Unique per supervisor: what its children's threads are marked with.
    id: u64,
    /// Tells the monitor that the given child thread is stopping the supervisor and
    /// must not be waited for.
    detach: Sender<ThreadId>,
    /// Which children have a thread the monitor has not joined yet.
    running: Arc<Mutex<Vec<(String, bool)>>>,
}

impl Supervisor {
    /// A builder with strategy [`Strategy::OneForOne`], intensity 3 restarts in 5 s, and
    /// a backoff from 10 ms doubling up to 1 s.
    pub fn builder() -> SupervisorBuilder {
        SupervisorBuilder {
            strategy: Strategy::OneForOne,
            max_restarts: 3,
            period: Duration::from_secs(5),
            backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(1),
            clock: Arc::new(SystemClock),
            children: Vec::new(),
            bad_name: None,
        }
    }

    /// The names of the children whose threads have not been joined yet: after a
    /// bounded [`stop_timeout`](Supervisor::stop_timeout) fails, the ones that ignore
    /// their token.
    pub fn running_children(&self) -> Vec<String> {
        self.running
            .lock()
            .iter()
            .filter(|(_, running)| *running)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The supervisor's token; every child token is a child of it.
    pub fn token(&self) -> &CancelToken {
        &self.token
    }

    /// Whether the supervisor has stopped by itself (intensity exceeded, or every child
    /// exited for good). Its threads are joined by [`join`](Supervisor::join).
    pub fn is_finished(&self) -> bool {
        self.monitor.as_ref().map_or(true, JoinHandle::is_finished)
    }

    /// Cancels every child, joins every thread, and reports.
    ///
    /// A panic in an [`on_cancel`](CancelToken::on_cancel) callback registered on the
    /// supervisor's token is caught and added to [`SupervisorReport::panics`]. Called
    /// from one of the supervisor's own threads, see [Stopping from
    /// inside](Supervisor#stopping-from-inside).
    pub fn stop(mut self) -> SupervisorReport {
        let panic = self.cancel();
        let mut report = self.join_monitor();
        report.panics.extend(panic);
        report
    }

    /// Cancels the supervisor's token, catching a panicking callback.
    fn cancel(&self) -> Option<Panic> {
        Panic::catch_any(|| self.token.cancel()).err()
    }

    /// On one of this supervisor's child threads: tells the monitor not to wait for
    /// it (it cannot finish while it waits for the monitor).
    fn detach_current_child(&self) {
        if CHILD_OF.with(Cell::get) == self.id {
            let _ = self.detach.try_send(std::thread::current().id());
        }
    }

    /// Waits until the supervisor stops by itself (intensity exceeded, or every child
    /// exited for good), then reports. Use [`stop`](Supervisor::stop) to end it.
    pub fn join(mut self) -> SupervisorReport {
        self.join_monitor()
    }

    /// As [`stop`](Supervisor::stop), waiting at most `timeout` for the children to
    /// return. If one still runs (it ignores its token), the supervisor is handed back,
    /// already cancelled, rather than leaving a thread behind: call `stop` again, or
    /// another bounded form, to keep waiting.
    ///
    /// # Errors
    ///
    /// The supervisor itself, when the children were not all joined in time.
    ///
    /// A `timeout` too large to represent waits as long as [`stop`](Supervisor::stop).
    pub fn stop_timeout(self, timeout: Duration) -> Result<SupervisorReport, Supervisor> {
        self.stop_deadline(time::deadline_after(time::now(), timeout))
    }

    /// As [`stop_timeout`](Supervisor::stop_timeout), with a deadline.
    ///
    /// # Errors
    ///
    /// The supervisor itself, when the children were not all joined by `deadline`.
    ///
    /// A deadline already past still cancels, then reports only if every thread has
    /// already been joined.
    pub fn stop_deadline(self, deadline: Instant) -> Result<SupervisorReport, Supervisor> {
        let panic = self.cancel();
        self.join_deadline(deadline).map(|mut report| {
            report.panics.extend(panic);
            report
        })
    }

    /// As [`join`](Supervisor::join), waiting at most `timeout`; on timeout the
    /// supervisor is handed back, still running.
    ///
    /// # Errors
    ///
    /// The supervisor itself, when it had not stopped in time.
    ///
    /// A `timeout` too large to represent waits as long as [`join`](Supervisor::join).
    pub fn join_timeout(self, timeout: Duration) -> Result<SupervisorReport, Supervisor> {
        self.join_deadline(time::deadline_after(time::now(), timeout))
    }

    /// As [`join`](Supervisor::join), waiting until `deadline` at most; then the
    /// supervisor is handed back, still running.
    ///
    /// # Errors
    ///
    /// The supervisor itself, when it had not stopped by `deadline`.
    pub fn join_deadline(mut self, deadline: Instant) -> Result<SupervisorReport, Supervisor> {
        if self.on_monitor_thread() {
            return Ok(self.join_monitor());
        }
        self.detach_current_child();
        match self.finished.recv_deadline(deadline) {
            Err(RecvTimeoutError::Timeout) => Err(self),
            // Disconnected: the monitor has joined every child and is returning.
            _ => Ok(self.join_monitor()),
        }
    }

    /// As [`join`](Supervisor::join), returning when `token` is cancelled (the
    /// supervisor is then handed back, still running).
    ///
    /// # Errors
    ///
    /// The supervisor itself, when `token` was cancelled first.
    pub fn join_cancellable(mut self, token: &CancelToken) -> Result<SupervisorReport, Supervisor> {
        if self.on_monitor_thread() {
            return Ok(self.join_monitor());
        }
        self.detach_current_child();
        select! {
            recv(self.finished) -> _ => Ok(self.join_monitor()),
            recv(token.done()) -> _ => Err(self),
            recv(token.expired()) -> _ => Err(self),
        }
    }

    fn on_monitor_thread(&self) -> bool {
        self.monitor
            .as_ref()
            .is_some_and(|m| m.thread().id() == std::thread::current().id())
    }

    /// Joins the monitor, which has joined every child but the calling one. On the
    /// monitor thread itself, nothing is joined: it finishes on its own.
    fn join_monitor(&mut self) -> SupervisorReport {
        if self.on_monitor_thread() {
            let _ = self.cancel();
            drop(self.monitor.take());
            return SupervisorReport::unknown();
        }
        self.detach_current_child();
        let monitor = self.monitor.take().expect("monitor joined once");
        match monitor.join() {
            Ok(report) => report.expect("the monitor was handed its state"),
            // The monitor runs no user code outside catch_unwind.
            Err(payload) => std::panic::resume_unwind(payload),
        }
    }
}

impl Drop for Supervisor {
    /// As [`stop`](Supervisor::stop), discarding the report: it waits for every child
    /// to return, like `stop` (use [`stop_timeout`](Supervisor::stop_timeout) to bound
    /// the wait for children that ignore their token). A panic in an `on_cancel`
    /// callback of the supervisor's token is not re-raised here (the panic hook has
    /// reported it).
    fn drop(&mut self) {
        if self.monitor.is_some() {
            let _ = self.cancel();
            let _ = self.join_monitor();
        }
    }
}

impl fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervisor")
            .field("stopping", &self.token.is_cancelled())
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl SupervisorBuilder {
    /// Which children restart when one must (default [`Strategy::OneForOne`]).
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// At most `max_restarts` restarts within any `period`; one more stops the
    /// supervisor with [`StopReason::IntensityExceeded`].
    ///
    /// `max_restarts` 0 means no restart at all: the first exit that calls for one
    /// stops the supervisor. It must be at most 1,000,000, and `period` above
    /// zero ([`start`](SupervisorBuilder::start) says which is wrong); a `period` of
    /// `Duration::MAX` counts every restart ever made.
    pub fn intensity(mut self, max_restarts: usize, period: Duration) -> Self {
        self.max_restarts = max_restarts;
        self.period = period;
        self
    }

    /// Delay before a child's restart: `base`, doubled for each consecutive restart
    /// of that child, capped at `max`. Zero disables it. Both may be as large as
    /// `Duration::MAX` (the delay saturates; a stop interrupts it); `max` below `base`
    /// is refused by [`start`](SupervisorBuilder::start).
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff = base;
        self.max_backoff = max;
        self
    }

    /// The clock that restart intensity and backoff are measured on (default
    /// [`SystemClock`]); a [`ManualClock`](crate::clock::ManualClock) makes them testable
    /// without sleeping.
    pub fn clock<C: Clock>(mut self, clock: C) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Adds a child. It runs `run(&token)` on its own thread named `corral-sup-<name>`
    /// and should return when the token is cancelled.
    ///
    /// A name with a NUL byte is refused by [`start`](SupervisorBuilder::start) with a
    /// [`ConfigError`] for field `child name`; an empty name is allowed (the thread is
    /// then `corral-sup-`), and names need not be unique.
    pub fn child<F, E>(mut self, name: &str, restart: Restart, run: F) -> Self
    where
        F: Fn(&CancelToken) -> Result<(), E> + Send + Sync + 'static,
        E: Into<Box<dyn Error + Send + Sync>>,
    {
        if let Err(e) = check_name("child name", name) {
            self.bad_name.get_or_insert(e);
        }
        self.children.push(ChildSpec {
            name: name.to_owned(),
            restart,
            run: Arc::new(move |token| run(token).map_err(Into::into)),
        });
        self
    }

    /// Starts every child, in order, and the monitor.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for no children (`children`), a NUL byte in a child's name
    /// (`child name`), `max_restarts` above 1,000,000, a zero `period`, or a
    /// `max` backoff below its `base`, as [`StartError::Config`]; a thread the OS
    /// refused as [`StartError::Spawn`], after every thread already started was
    /// stopped and joined. The children's functions are dropped (inside the panic
    /// boundary) when the supervisor is not started.
    pub fn start(mut self) -> Result<Supervisor, StartError> {
        let refusal = self.refusal();
        if let Some(e) = refusal {
            drop_quietly(std::mem::take(&mut self.children));
            return Err(StartError::Config(e));
        }
        self.start_checked()
    }

    fn refusal(&mut self) -> Option<ConfigError> {
        if let Some(e) = self.bad_name.take() {
            return Some(e);
        }
        if self.max_restarts > MAX_RESTARTS {
            return Some(ConfigError::new(
                "max_restarts",
                self.max_restarts,
                "must be at most 1000000",
            ));
        }
        None
    }

    fn start_checked(mut self) -> Result<Supervisor, StartError> {
        if self.children.is_empty() {
            return Err(StartError::Config(ConfigError::new(
                "children",
                0,
                "a supervisor needs at least one child",
            )));
        }
        if self.period.is_zero() {
            drop_quietly(std::mem::take(&mut self.children));
            return Err(StartError::Config(ConfigError::new(
                "period",
                self.period,
                "must be greater than zero",
            )));
        }
        if self.max_backoff < self.backoff {
            drop_quietly(std::mem::take(&mut self.children));
            return Err(StartError::Config(ConfigError::new(
                "backoff max",
                self.max_backoff,
                "must not be below the base delay",
            )));
        }
        let token = CancelToken::new();
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let (detach, detached) = crossbeam_channel::bounded(1);
        let running = Arc::new(Mutex::new(
            self.children
                .iter()
                .map(|c| (c.name.clone(), false))
                .collect::<Vec<_>>(),
        ));
        let (exits_tx, exits_rx) = crossbeam_channel::unbounded();
        let mut monitor = Monitor {
            token: token.clone(),
            strategy: self.strategy,
            max_restarts: self.max_restarts,
            period: self.period,
            backoff: self.backoff,
            max_backoff: self.max_backoff,
            clock: self.clock,
            children: self
                .children
                .into_iter()
                .map(|spec| Child {
                    spec,
                    running: None,
                    generation: 0,
                    restarts: 0,
                    streak: 0,
                    done: false,
                })
                .collect(),
            exits_tx,
            exits_rx,
            recent: VecDeque::new(),
            exits: VecDeque::new(),
            exits_omitted: 0,
            panics: Vec::new(),
            id,
            detached,
            detached_thread: None,
            spawn_error: None,
            running: Arc::clone(&running),
        };
        // The monitor thread starts first and waits for its state, so that whatever
        // fails below, every thread already started is joined here.
        let (hand_over, receive) = crossbeam_channel::bounded::<Monitor>(1);
        let spec = ThreadSpec::new("Supervisor", "sup-monitor");
        let (finishing, finished) = crossbeam_channel::bounded::<()>(0);
        let started = start(&spec, move || {
            let _finishing = finishing;
            receive.recv().ok().map(Monitor::run)
        });
        let handle = match started {
            Ok(handle) => handle,
            Err(e) => {
                drop_quietly(monitor.children.drain(..).map(|c| c.spec).collect());
                return Err(StartError::Spawn(e));
            }
        };
        for index in 0..monitor.children.len() {
            if let Err(e) = monitor.start_child(index) {
                monitor.stop_all();
                drop(hand_over);
                let _ = handle.join();
                drop_quietly(monitor.children.drain(..).map(|c| c.spec).collect());
                return Err(StartError::Spawn(e));
            }
        }
        hand_over
            .send(monitor)
            .expect("the monitor thread waits for its state");
        Ok(Supervisor {
            token,
            monitor: Some(handle),
            finished,
            id,
            detach,
            running,
        })
    }
}

/// Drops the children's functions inside the panic boundary; returns the panics.
fn drop_quietly(specs: Vec<ChildSpec>) -> Vec<Panic> {
    specs.into_iter().filter_map(drop_caught).collect()
}

/// How a child's function ended, formatting and dropping its error inside the panic
/// boundary: a panicking `Display` or `Drop` of the error is the exit.
fn describe(outcome: Result<Result<(), BoxError>, Panic>) -> Exit {
    match outcome {
        Ok(Ok(())) => Exit::Finished,
        Ok(Err(error)) => {
            // Formatted by reference, so a panicking `Display` does not drop the error
            // while unwinding (a panicking `Drop` on top would abort the process).
            let text = Panic::catch_any(|| error.to_string());
            let dropped = Panic::catch_any(move || drop(error));
            match (text, dropped) {
                (Ok(text), Ok(())) => Exit::Failed(text),
                (Err(panic), _) | (_, Err(panic)) => Exit::Panicked(panic),
            }
        }
        Err(panic) => Exit::Panicked(panic),
    }
}

impl fmt::Debug for SupervisorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupervisorBuilder")
            .field("strategy", &self.strategy)
            .field("max_restarts", &self.max_restarts)
            .field("period", &self.period)
            .field("children", &self.children.len())
            .finish()
    }
}

/// A child's thread while the monitor has not joined it.
struct Running {
    token: CancelToken,
    handle: JoinHandle<()>,
    /// Disconnected when the thread's function has returned.
    done: Receiver<()>,
}

struct Child {
    spec: ChildSpec,
    running: Option<Running>,
    /// Bumped at every start; exits of an older generation were caused by the
    /// supervisor itself (a one-for-all restart) and are recorded, not acted on.
    generation: u64,
    restarts: usize,
    /// Consecutive restarts, for the backoff; reset when the child exits `Ok`.
    streak: u32,
    /// Exited and not to be restarted.
    done: bool,
}

/// Child index, its generation, and how it exited.
type ExitMsg = (usize, u64, Exit);

struct Monitor {
    token: CancelToken,
    strategy: Strategy,
    max_restarts: usize,
    period: Duration,
    backoff: Duration,
    max_backoff: Duration,
    clock: Arc<dyn Clock>,
    children: Vec<Child>,
    exits_tx: Sender<ExitMsg>,
    exits_rx: Receiver<ExitMsg>,
    recent: VecDeque<Instant>,
    exits: VecDeque<(String, Exit)>,
    exits_omitted: usize,
    panics: Vec<Panic>,
    /// The supervisor's id, marked on its children's threads.
    id: u64,
    detached: Receiver<ThreadId>,
    /// A child thread that is stopping the supervisor: never waited for.
    detached_thread: Option<ThreadId>,
    running: Arc<Mutex<Vec<(String, bool)>>>,
    /// The thread that did not start when a child was restarted.
    spawn_error: Option<SpawnError>,
}

impl Monitor {
    fn start_child(&mut self, index: usize) -> Result<(), SpawnError> {
        let child = &mut self.children[index];
        child.generation += 1;
        let generation = child.generation;
        let token = self.token.child();
        let run = Arc::clone(&child.spec.run);
        let exits = self.exits_tx.clone();
        let child_token = token.clone();
        let spec = ThreadSpec::new("Supervisor", format!("sup-{}", child.spec.name));
        let (finishing, done) = crossbeam_channel::bounded::<()>(0);
        let id = self.id;
        let handle = start(&spec, move || {
            let _finishing = finishing;
            CHILD_OF.with(|c| c.set(id));
            let exit = describe(Panic::catch_any(|| run(&child_token)));
            let _ = exits.send((index, generation, exit));
            // Usually not the last reference (the monitor keeps the spec); it is when
            // this thread was left to finish on its own, with nobody to report to.
            let _ = Panic::catch_any(move || drop(run));
        })?;
        child.running = Some(Running {
            token,
            handle,
            done,
        });
        self.running.lock()[index].1 = true;
        Ok(())
    }

    /// Cancels a token, keeping a panicking callback's panic for the report.
    fn cancel(&mut self, token: &CancelToken) {
        if let Err(panic) = Panic::catch_any(|| token.cancel()) {
            self.panics.push(panic);
        }
    }

    fn record(&mut self, index: usize, exit: Exit) {
        if self.exits.len() == MAX_EXITS_KEPT {
            let evicted = self.exits.pop_front();
            self.exits_omitted += 1;
            // A panic's payload is a user value: its `Drop` may panic too.
            if let Err(panic) = Panic::catch_any(move || drop(evicted)) {
                self.panics.push(panic);
            }
        }
        let name = self.children[index].spec.name.clone();
        self.exits.push_back((name, exit));
    }

    /// Cancels a child and waits for its thread, unless that thread is the one
    /// stopping the supervisor (then it is left to finish on its own).
    fn join_child(&mut self, index: usize) {
        let Some(running) = self.children[index].running.take() else {
            return;
        };
        self.cancel(&running.token);
        loop {
            if self.detached_thread == Some(running.handle.thread().id()) {
                break;
            }
            select! {
                recv(running.done) -> _ => {
                    let _ = running.handle.join();
                    self.running.lock()[index].1 = false;
                    break;
                }
                recv(self.detached) -> thread => match thread {
                    Ok(thread) => self.detached_thread = Some(thread),
                    // The supervisor value is gone: no child can be stopping it.
                    Err(_) => self.detached = crossbeam_channel::never(),
                },
            }
        }
    }

    fn stop_all(&mut self) {
        let token = self.token.clone();
        self.cancel(&token);
        for index in 0..self.children.len() {
            self.join_child(index);
        }
        // Exits reported while stopping are part of the record.
        while let Ok((index, _, exit)) = self.exits_rx.try_recv() {
            self.record(index, exit);
        }
    }

    fn run(mut self) -> SupervisorReport {
        let reason = match Panic::catch_any(|| self.supervise()) {
            Ok(reason) => reason,
            Err(panic) => {
                self.panics.push(panic);
                StopReason::Failed
            }
        };
        self.stop_all();
        let restarts = self
            .children
            .iter()
            .map(|c| (c.spec.name.clone(), c.restarts))
            .collect();
        let specs = self.children.drain(..).map(|c| c.spec).collect();
        self.panics.extend(drop_quietly(specs));
        SupervisorReport {
            reason,
            restarts,
            exits: self.exits.into(),
            exits_omitted: self.exits_omitted,
            panics: self.panics,
            spawn_error: self.spawn_error,
        }
    }

    fn supervise(&mut self) -> StopReason {
        let stop = self.token.done();
        loop {
            if self.children.iter().all(|c| c.done) {
                return StopReason::AllExited;
            }
            let (index, generation, exit) = select! {
                recv(self.exits_rx) -> msg => msg.expect("the monitor holds a sender"),
                recv(stop) -> _ => return StopReason::Stopped,
            };
            if generation != self.children[index].generation {
                self.record(index, exit);
                continue;
            }
            self.join_child(index);
            let restart = !matches!(
                (self.children[index].spec.restart, &exit),
                (Restart::Temporary, _) | (Restart::Transient, Exit::Finished)
            );
            if matches!(exit, Exit::Finished) {
                self.children[index].streak = 0;
            }
            self.record(index, exit);
            if !restart {
                self.children[index].done = true;
                continue;
            }
            if !self.admit_restart() {
                return StopReason::IntensityExceeded;
            }
            let group: Vec<usize> = match self.strategy {
                Strategy::OneForOne => vec![index],
                Strategy::OneForAll | Strategy::RestForOne => {
                    let first = match self.strategy {
                        Strategy::RestForOne => index,
                        _ => 0,
                    };
                    for other in first..self.children.len() {
                        self.join_child(other);
                    }
                    (first..self.children.len())
                        .filter(|&i| i == index || !self.children[i].done)
                        .collect()
                }
            };
            let delay = self.delay_for(index);
            if !delay.is_zero() {
                let resume_at = time::deadline_after(self.clock.now(), delay);
                if !self.clock.sleep_until(resume_at, Some(&self.token)) {
                    return StopReason::Stopped;
                }
            }
            if self.token.is_cancelled() {
                return StopReason::Stopped;
            }
            for i in group {
                let child = &mut self.children[i];
                child.restarts += 1;
                child.streak = child.streak.saturating_add(1);
                if let Err(e) = self.start_child(i) {
                    self.spawn_error = Some(e);
                    return StopReason::Failed;
                }
            }
        }
    }

    /// Records one restart; `false` once more than `max_restarts` fall in `period`.
    fn admit_restart(&mut self) -> bool {
        let now = self.clock.now();
        while self
            .recent
            .front()
            .is_some_and(|&t| now.duration_since(t) >= self.period)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        self.recent.len() <= self.max_restarts
    }

    /// `backoff * 2^streak`, capped at `max_backoff`; the shift stays below 32 and
    /// the product saturates, so no setting overflows.
    fn delay_for(&self, index: usize) -> Duration {
        let streak = self.children[index].streak.min(20);
        self.backoff
            .saturating_mul(1u32 << streak)
            .min(self.max_backoff)
    }
}
