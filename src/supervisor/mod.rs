//! A supervisor for long-lived worker threads: restart on failure, within limits, in
//! the order Erlang/OTP uses.
//!
//! A [`Supervisor`] runs each child on a thread of its own with a [`CancelToken`]. When a
//! child returns or panics, its [`Restart`] type and the supervisor's [`Strategy`] decide
//! what is restarted (a [`Restart::Temporary`] child never is), after a backoff with
//! optional seeded jitter, as long as the restarts stay within the intensity limit (at
//! most `max_restarts` within `period`); past it the supervisor stops every child and
//! says which child broke the limit and how ([`StopReason::IntensityExceeded`]).
//! Stopping — on [`Supervisor::stop`], for a group restart, on intensity — cancels and
//! joins children one at a time in reverse start order, each within its shutdown
//! timeout; a child still running past it is reported ([`EventKind::ShutdownOverdue`],
//! [`SupervisorReport::overdue`]) and joined after the others: no thread is left behind.
//! Children can be added and removed while it runs, live [`stats`](Supervisor::stats),
//! an event hook (and `tracing` events and metrics, features of those names), the
//! thread dump ([`leak::dump`](crate::leak::dump)) and an opt-in stuck-child watchdog
//! show what it does, and a supervisor can be a child of another
//! ([`ChildSpec::supervisor`]). Every piece of user code (child functions, their errors'
//! drop when the bounded record evicts them, the hook, `on_cancel` callbacks, the
//! clock) runs inside the panic boundary.

mod engine;
mod report;
mod telemetry;

use std::cell::Cell;
use std::error::Error;
use std::fmt;
use std::panic::Location;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;

use self::engine::{Command, Monitor, Settings, Shared, StuckWatch, CHILD_OF};
use crate::cancel::CancelToken;
use crate::clock::{Clock, SystemClock};
use crate::config::{check_name, ConfigError};
use crate::observe::{Owner, Role, Stuck, Watchdog};
use crate::panic::{drop_caught, drop_quietly, Panic};
use crate::spawn::{start, StartError, ThreadSpec};
use crate::sync::time;

pub use self::report::{
    AddChildError, ChildSpec, ChildState, ChildStats, Escalation, EventKind, Exit, ExitKind,
    RemoveChildError, Restart, StopReason, Strategy, SupervisorEvent, SupervisorReport,
    SupervisorStats,
};

/// The largest `max_restarts` [`SupervisorBuilder::intensity`] accepts (1,000,000):
/// the monitor remembers one instant per restart within the period, so the limit
/// bounds that memory.
const MAX_RESTARTS: usize = 1_000_000;

/// How many exits (and panics) a [`SupervisorReport`] keeps by default: the most
/// recent ones, with a count of the older ones.
pub const DEFAULT_HISTORY: usize = 10_000;

/// The largest [`SupervisorBuilder::history`] accepted.
const MAX_HISTORY: usize = 1_000_000;

/// The default shutdown timeout of a child (as OTP's default for a worker).
pub const DEFAULT_SHUTDOWN: Duration = Duration::from_secs(5);

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Configures and starts a [`Supervisor`].
#[must_use = "a builder does nothing until `start` is called"]
pub struct SupervisorBuilder {
    /// The first bad setting found while building, reported by `start`.
    refused: Option<ConfigError>,
    name: Option<String>,
    strategy: Strategy,
    max_restarts: usize,
    period: Duration,
    backoff: Duration,
    max_backoff: Duration,
    jitter: f64,
    seed: Option<u64>,
    shutdown: Duration,
    history: usize,
    clock: Arc<dyn Clock>,
    hook: Option<Arc<report::Hook>>,
    watchdog: Option<Duration>,
    /// Where a subtree was declared ([`ChildSpec::supervisor`]): its spawn site in the
    /// thread dump instead of the line calling `start`.
    site: Option<&'static Location<'static>>,
    children: Vec<ChildSpec>,
}

/// How many stuck children the watchdog hands to the monitor before it answers (more
/// are still warned about and marked in the dump, but not given to the event hook).
const STUCK_QUEUE: usize = 64;

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
/// building the real report. This is the one case where a thread is not joined before
/// the supervisor is gone, because it is the caller's own thread.
///
/// # A child that ignores its token
///
/// It cannot be pre-empted. Once its shutdown timeout has passed the supervisor
/// reports it ([`EventKind::ShutdownOverdue`], [`SupervisorReport::overdue`],
/// [`ChildStats::overdue`]), stops the remaining children, and then keeps waiting for
/// it: `stop` and drop return only once it has returned. Use
/// [`stop_timeout`](Supervisor::stop_timeout) to get the supervisor back meanwhile
/// ([`running_children`](Supervisor::running_children) names it).
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
    shared: Arc<Mutex<Shared>>,
    clock: Arc<dyn Clock>,
    name: Option<String>,
}

impl Supervisor {
    /// A builder with strategy [`Strategy::OneForOne`], intensity 3 restarts in 5 s, a
    /// backoff from 10 ms doubling up to 1 s without jitter, a shutdown timeout of 5 s
    /// per child ([`DEFAULT_SHUTDOWN`]) and a record of the last 10,000 exits
    /// ([`DEFAULT_HISTORY`]).
    pub fn builder() -> SupervisorBuilder {
        SupervisorBuilder {
            refused: None,
            name: None,
            strategy: Strategy::OneForOne,
            max_restarts: 3,
            period: Duration::from_secs(5),
            backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(1),
            jitter: 0.0,
            seed: None,
            shutdown: DEFAULT_SHUTDOWN,
            history: DEFAULT_HISTORY,
            clock: Arc::new(SystemClock),
            hook: None,
            watchdog: None,
            site: None,
            children: Vec::new(),
        }
    }

    /// The names of the children whose threads have not been joined yet: after a
    /// bounded [`stop_timeout`](Supervisor::stop_timeout) fails, the ones that ignore
    /// their token.
    pub fn running_children(&self) -> Vec<String> {
        self.shared.lock().running_children()
    }

    /// Live numbers: every child's state and how long it has been in it (on the
    /// supervisor's clock), its starts, restarts and last exit.
    ///
    /// # Example
    ///
    /// ```
    /// use corral::supervisor::{ChildState, Restart};
    /// use corral::Supervisor;
    ///
    /// let supervisor = Supervisor::builder()
    ///     .name("api")
    ///     .child("listener", Restart::Permanent, |token| {
    ///         token.wait();
    ///         Ok::<(), String>(())
    ///     })
    ///     .start()?;
    /// let stats = supervisor.stats();
    /// assert_eq!(stats.name.as_deref(), Some("api"));
    /// let listener = &stats.children[0];
    /// assert_eq!((listener.state, listener.starts, listener.last_exit), (ChildState::Running, 1, None));
    /// supervisor.stop();
    /// # Ok::<(), corral::StartError>(())
    /// ```
    pub fn stats(&self) -> SupervisorStats {
        // The clock is user code: read it inside the boundary, outside the lock.
        let now = Panic::catch_any(|| self.clock.now()).unwrap_or_else(|_| time::now());
        self.shared.lock().snapshot(self.name.clone(), now)
    }

    /// Runs the watchdog ([`SupervisorBuilder::watchdog`]) now and returns the children
    /// newly found running past its threshold (each run of a child is reported once;
    /// they also reach the event hook as [`EventKind::Stuck`]). Empty without a
    /// watchdog. [`leak::dump`](crate::leak::dump) runs it too.
    pub fn check_stuck(&self) -> Vec<Stuck> {
        let watchdog = self.shared.lock().watchdog();
        watchdog.map_or_else(Vec::new, |w| w.check())
    }

    /// The name given with [`SupervisorBuilder::name`].
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The supervisor's token: cancelling it stops the supervisor (as
    /// [`stop`](Supervisor::stop) does, without waiting). The children's tokens are not
    /// its children: the supervisor cancels them itself, one at a time.
    pub fn token(&self) -> &CancelToken {
        &self.token
    }

    /// Whether the supervisor has stopped by itself (intensity exceeded, or every child
    /// exited for good). Its threads are joined by [`join`](Supervisor::join).
    pub fn is_finished(&self) -> bool {
        self.monitor.as_ref().map_or(true, JoinHandle::is_finished)
    }

    /// Starts one more child, after the others (it is stopped before them).
    ///
    /// Not to be called from the supervisor's event hook (the monitor would wait for
    /// itself).
    ///
    /// # Errors
    ///
    /// The spec comes back inside each: [`AddChildError::Duplicate`] when a child of
    /// that name exists, [`AddChildError::InvalidName`] for a NUL byte in it,
    /// [`AddChildError::Stopped`] once the supervisor is stopping,
    /// [`AddChildError::Spawn`] when the OS refused the thread.
    ///
    /// # Example
    ///
    /// ```
    /// use corral::supervisor::{ChildSpec, Restart};
    /// use corral::Supervisor;
    ///
    /// let idle = |token: &corral::CancelToken| {
    ///     token.wait();
    ///     Ok::<(), String>(())
    /// };
    /// let supervisor = Supervisor::builder().child("a", Restart::Permanent, idle).start()?;
    /// supervisor.add_child(ChildSpec::new("b", Restart::Permanent, idle)).unwrap();
    /// let again = supervisor.add_child(ChildSpec::new("b", Restart::Permanent, idle));
    /// assert!(matches!(again, Err(corral::supervisor::AddChildError::Duplicate(_))));
    /// supervisor.remove_child("a").unwrap();
    /// assert_eq!(supervisor.running_children(), ["b"]);
    /// supervisor.stop();
    /// # Ok::<(), corral::StartError>(())
    /// ```
    pub fn add_child(&self, spec: ChildSpec) -> Result<(), AddChildError> {
        if let Err(e) = check_name("child name", &spec.name) {
            return Err(AddChildError::InvalidName(e, spec));
        }
        let (reply, answer) = crossbeam_channel::bounded(1);
        let sent = self.shared.lock().send(Command::Add(spec, reply));
        match sent {
            Ok(wake) => {
                wake_monitor(wake);
                answer.recv().expect("the monitor answers every command")
            }
            Err(Command::Add(spec, _)) => Err(AddChildError::Stopped(spec)),
            Err(Command::Remove(..)) => unreachable!("an add was sent"),
        }
    }

    /// Stops one child (cancels it and joins its thread, within its shutdown timeout as
    /// when the supervisor stops) and forgets it; its exit stays in the record. Removing
    /// the last child ends the supervisor with [`StopReason::AllExited`].
    ///
    /// Not to be called from the child being removed, nor from the event hook (the
    /// monitor would wait for the caller, who waits for it).
    ///
    /// # Errors
    ///
    /// [`RemoveChildError::Unknown`] when no child has that name,
    /// [`RemoveChildError::Stopped`] once the supervisor is stopping.
    pub fn remove_child(&self, name: &str) -> Result<(), RemoveChildError> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        let sent = self
            .shared
            .lock()
            .send(Command::Remove(name.to_owned(), reply));
        match sent {
            Ok(wake) => {
                wake_monitor(wake);
                answer.recv().expect("the monitor answers every command")
            }
            Err(_) => Err(RemoveChildError::Stopped(name.to_owned())),
        }
    }

    /// Stops every child (one at a time, in reverse start order), joins every thread,
    /// and reports.
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
            return SupervisorReport::unknown(self.name.clone());
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
            // The report holds the children's errors: user values, dropped inside the
            // panic boundary.
            drop_quietly(self.join_monitor());
        }
    }
}

impl fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervisor")
            .field("name", &self.name)
            .field("stopping", &self.token.is_cancelled())
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl SupervisorBuilder {
    /// A name for the supervisor, shown in its threads' names (`corral-sup-<name>` for
    /// the monitor, `corral-sup-<name>/<child>` for a child), its `Debug`, its events,
    /// stats and report. A NUL byte in it is refused by
    /// [`start`](SupervisorBuilder::start) (`ConfigError` for field `name`).
    pub fn name(mut self, name: &str) -> Self {
        if let Err(e) = check_name("name", name) {
            self.refused.get_or_insert(e);
        }
        self.name = Some(name.to_owned());
        self
    }

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

    /// Shortens each backoff by a random part of up to `fraction` of it (0.0, the
    /// default, keeps it exact; 1.0 draws it anywhere in `(0, delay]`), so that children
    /// failing together do not all restart at the same instant. A fraction outside
    /// `0.0..=1.0` (or NaN) is refused by [`start`](SupervisorBuilder::start)
    /// (`ConfigError` for field `jitter`).
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction;
        self
    }

    /// The seed of the jitter's random sequence: the same seed gives the same delays.
    /// Without one, each supervisor draws its own.
    ///
    /// # Example
    ///
    /// ```
    /// use corral::{supervisor::Restart, Supervisor};
    /// use std::time::Duration;
    ///
    /// // Restarts after 50 to 100 ms, the same sequence on every run.
    /// let supervisor = Supervisor::builder()
    ///     .backoff(Duration::from_millis(100), Duration::from_secs(5))
    ///     .jitter(0.5)
    ///     .seed(7)
    ///     .child("poller", Restart::Permanent, |token| {
    ///         token.wait();
    ///         Ok::<(), String>(())
    ///     })
    ///     .start()?;
    /// supervisor.stop();
    /// # Ok::<(), corral::StartError>(())
    /// ```
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// How long the supervisor waits for each child to return once it has cancelled it
    /// (default 5 s), before it reports the child and moves on to the next one; the
    /// child is then still waited for and joined. A [`ChildSpec`] may set its own.
    /// `Duration::MAX` waits without a report. Measured on the system clock.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown = timeout;
        self
    }

    /// How many exits (and panics) the report keeps: the most recent `entries`, the
    /// older ones counted in [`SupervisorReport::exits_omitted`] and
    /// [`SupervisorReport::panics_omitted`] (default 10,000, [`DEFAULT_HISTORY`]; at most
    /// 1,000,000, else `start` refuses it with a `ConfigError` for field `history`; 0
    /// keeps none and counts them all).
    pub fn history(mut self, entries: usize) -> Self {
        self.history = entries;
        self
    }

    /// The clock that restart intensity, backoff and the stats' time in state are
    /// measured on (default [`SystemClock`]); a [`ManualClock`](crate::clock::ManualClock)
    /// makes them testable without sleeping.
    pub fn clock<C: Clock>(mut self, clock: C) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Watches the children for runs of `threshold` or longer (on the supervisor's
    /// clock): each such run is reported once — a `tracing` warning (feature
    /// `tracing`), an [`EventKind::Stuck`] to the event hook, a `[STUCK]` mark in
    /// [`leak::dump`](crate::leak::dump). No thread of its own: the monitor looks
    /// whenever it wakes, at least once per `threshold` of wall time, and
    /// [`Supervisor::check_stuck`] and `leak::dump` look on demand. Meant for children
    /// expected to finish (a long-lived child is reported once per run too). A zero
    /// `threshold` is refused by [`start`](SupervisorBuilder::start) (`ConfigError`
    /// for field `watchdog`).
    pub fn watchdog(mut self, threshold: Duration) -> Self {
        self.watchdog = Some(threshold);
        self
    }

    /// Calls `hook` on the monitor thread for everything the supervisor does (see
    /// [`EventKind`]); a panic in it is caught and kept in
    /// [`SupervisorReport::panics`]. It should return quickly: the monitor waits for it.
    ///
    /// # Example
    ///
    /// ```
    /// use corral::supervisor::{EventKind, Restart};
    /// use corral::Supervisor;
    ///
    /// let (tx, rx) = crossbeam_channel::unbounded();
    /// let report = Supervisor::builder()
    ///     .name("jobs")
    ///     .on_event(move |event| {
    ///         if let EventKind::Exited { child, .. } = event.kind {
    ///             tx.send(format!("{}: {child} exited", event.supervisor.unwrap())).unwrap();
    ///         }
    ///     })
    ///     .child("once", Restart::Temporary, |_| Ok::<(), String>(()))
    ///     .start()?
    ///     .join();
    /// assert!(report.reason.is_all_exited());
    /// assert_eq!(rx.try_recv().unwrap(), "jobs: once exited");
    /// # Ok::<(), corral::StartError>(())
    /// ```
    pub fn on_event<F>(mut self, hook: F) -> Self
    where
        F: Fn(&SupervisorEvent<'_>) + Send + Sync + 'static,
    {
        self.hook = Some(Arc::new(hook));
        self
    }

    /// Adds a child. It runs `run(&token)` on its own thread named `corral-sup-<name>`
    /// (`corral-sup-<supervisor>/<name>` when the supervisor is named) and should return
    /// when the token is cancelled. Shorthand for [`add_child`](SupervisorBuilder::add_child) with
    /// [`ChildSpec::new`].
    ///
    /// A name with a NUL byte, or one already given to another child, is refused by
    /// [`start`](SupervisorBuilder::start) with a [`ConfigError`] for field
    /// `child name`; an empty name is allowed.
    pub fn child<F, E>(self, name: &str, restart: Restart, run: F) -> Self
    where
        F: Fn(&CancelToken) -> Result<(), E> + Send + Sync + 'static,
        E: Into<Box<dyn Error + Send + Sync>>,
    {
        self.add_child(ChildSpec::new(name, restart, run))
    }

    /// Adds a child from its spec (its own shutdown timeout, or a supervisor as a
    /// child: [`ChildSpec::supervisor`]).
    pub fn add_child(mut self, spec: ChildSpec) -> Self {
        if let Err(e) = check_name("child name", &spec.name) {
            self.refused.get_or_insert(e);
        }
        if self.children.iter().any(|c| c.name == spec.name) {
            self.refused.get_or_insert(ConfigError::new(
                "child name",
                &spec.name,
                "must be unique within a supervisor",
            ));
        }
        self.children.push(spec);
        self
    }

    /// Starts every child, in order, and the monitor.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for no children (`children`), a NUL byte in a child's name or a
    /// name used twice (`child name`), a NUL byte in the supervisor's `name`,
    /// `max_restarts` above 1,000,000, a zero `period`, a `max` backoff below its
    /// `base` (`backoff max`), a `jitter` outside `0.0..=1.0`, a `history` above
    /// 1,000,000, as [`StartError::Config`]; a thread the OS refused as
    /// [`StartError::Spawn`], after every thread already started was stopped and
    /// joined. The children's functions are dropped (inside the panic boundary) when
    /// the supervisor is not started.
    ///
    /// The line calling `start` is the supervisor's spawn site in
    /// [`leak::dump`](crate::leak::dump), for the monitor and every child.
    #[track_caller]
    pub fn start(mut self) -> Result<Supervisor, StartError> {
        if let Some(e) = self.refusal() {
            drop_specs(std::mem::take(&mut self.children));
            return Err(StartError::Config(e));
        }
        self.start_checked()
    }

    fn refusal(&mut self) -> Option<ConfigError> {
        if let Some(e) = self.refused.take() {
            return Some(e);
        }
        if self.children.is_empty() {
            return Some(ConfigError::new(
                "children",
                0,
                "a supervisor needs at least one child",
            ));
        }
        if self.max_restarts > MAX_RESTARTS {
            return Some(ConfigError::new(
                "max_restarts",
                self.max_restarts,
                "must be at most 1000000",
            ));
        }
        if self.period.is_zero() {
            return Some(ConfigError::new(
                "period",
                self.period,
                "must be greater than zero",
            ));
        }
        if self.max_backoff < self.backoff {
            return Some(ConfigError::new(
                "backoff max",
                self.max_backoff,
                "must not be below the base delay",
            ));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Some(ConfigError::new(
                "jitter",
                self.jitter,
                "must be between 0.0 and 1.0",
            ));
        }
        if self.history > MAX_HISTORY {
            return Some(ConfigError::new(
                "history",
                self.history,
                "must be at most 1000000",
            ));
        }
        if self.watchdog.is_some_and(|t| t.is_zero()) {
            return Some(ConfigError::new(
                "watchdog",
                Duration::ZERO,
                "must be greater than zero",
            ));
        }
        None
    }

    #[track_caller]
    fn start_checked(self) -> Result<Supervisor, StartError> {
        let name = self.name.as_deref().map(Arc::from);
        let owner = match self.site {
            Some(site) => Owner::new_at("Supervisor", name, site),
            None => Owner::new("Supervisor", name),
        };
        let (watchdog, watch) = match self.watchdog {
            Some(threshold) => {
                let (found_tx, found) = crossbeam_channel::bounded(STUCK_QUEUE);
                let watchdog = Watchdog::builder(threshold)
                    .shared_clock(Arc::clone(&self.clock))
                    .on_stuck(move |stuck| {
                        let _ = found_tx.try_send(stuck.clone());
                    })
                    .build_for(&owner);
                let watchdog = Arc::new(watchdog);
                let watch = StuckWatch {
                    watchdog: Arc::clone(&watchdog),
                    threshold,
                    found,
                };
                (Some(watchdog), Some(watch))
            }
            None => (None, None),
        };
        let token = CancelToken::new();
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let (detach, detached) = crossbeam_channel::bounded(1);
        let (commands_tx, commands_rx) = crossbeam_channel::unbounded();
        let shared = Arc::new(Mutex::new(Shared::new(commands_tx, watchdog)));
        let seed = self.seed.unwrap_or_else(random_seed);
        let settings = Settings {
            name: self.name.clone(),
            strategy: self.strategy,
            max_restarts: self.max_restarts,
            period: self.period,
            backoff: self.backoff,
            max_backoff: self.max_backoff,
            jitter: self.jitter,
            seed,
            shutdown: self.shutdown,
            history: self.history,
            clock: Arc::clone(&self.clock),
            hook: self.hook,
            owner: Arc::clone(&owner),
            watchdog: watch,
        };
        let mut monitor = Monitor::new(
            settings,
            token.clone(),
            id,
            detached,
            commands_rx,
            Arc::clone(&shared),
        );
        for spec in self.children {
            if let Err(spec) = monitor.push(spec) {
                // Names were checked unique above.
                drop_specs(vec![spec]);
            }
        }
        // The monitor thread starts first and waits for its state, so that whatever
        // fails below, every thread already started is joined here.
        let (hand_over, receive) = crossbeam_channel::bounded::<Monitor>(1);
        let thread = match &self.name {
            Some(name) => format!("sup-{name}"),
            None => "sup-monitor".to_owned(),
        };
        let (finishing, finished) = crossbeam_channel::bounded::<()>(0);
        let spec = ThreadSpec::new("Supervisor", thread)
            .role(Role::Monitor)
            .owned_by(&owner);
        let started = start(&spec, move || {
            let _finishing = finishing;
            receive.recv().ok().map(Monitor::run)
        });
        let handle = match started {
            Ok(handle) => handle,
            Err(e) => {
                drop(monitor.drop_children());
                return Err(StartError::Spawn(e));
            }
        };
        let count = shared.lock().len();
        for index in 0..count {
            if let Err(e) = monitor.start_child(index) {
                drop(hand_over);
                let _ = handle.join();
                drop(monitor.abandon());
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
            shared,
            clock: self.clock,
            name: self.name,
        })
    }
}

/// Wakes a monitor waiting out a backoff, so that it answers a command at once. The
/// token's callbacks are the injected clock's (user code): inside the boundary, and a
/// panic there only costs the early wake-up.
fn wake_monitor(wake: Option<CancelToken>) {
    if let Some(wake) = wake {
        drop(Panic::catch_any(|| wake.cancel()));
    }
}

/// A seed for the jitter when none was given: std's `RandomState` is randomly keyed
/// per instance.
fn random_seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0u8)
}

/// Drops children's specs (their functions) inside the panic boundary.
fn drop_specs(specs: Vec<ChildSpec>) {
    for spec in specs {
        drop(drop_caught(spec));
    }
}

impl ChildSpec {
    /// A child that runs a whole supervisor, built by `make` at each (re)start: a
    /// supervision tree. When the child's token is cancelled the inner supervisor is
    /// stopped (its children in reverse start order) before the child returns, so a
    /// tree stops from the leaves up. An inner supervisor that stops by itself — the
    /// restart intensity exceeded, a failure — makes the child fail with an
    /// [`Escalation`] carrying its report (the parent then restarts it per `restart`);
    /// one whose children all exited makes it return `Ok`. A builder that `start`
    /// refuses makes the child fail with that [`StartError`].
    ///
    /// # Example
    ///
    /// ```
    /// use corral::supervisor::{ChildSpec, Restart};
    /// use corral::Supervisor;
    ///
    /// let leaf = |token: &corral::CancelToken| {
    ///     token.wait();
    ///     Ok::<(), String>(())
    /// };
    /// let root = Supervisor::builder()
    ///     .name("root")
    ///     .add_child(ChildSpec::supervisor("workers", Restart::Permanent, move || {
    ///         Supervisor::builder()
    ///             .name("workers")
    ///             .child("w1", Restart::Permanent, leaf)
    ///             .child("w2", Restart::Permanent, leaf)
    ///     }))
    ///     .start()?;
    /// assert!(root.stop().reason.is_stopped());
    /// # Ok::<(), corral::StartError>(())
    /// ```
    ///
    /// The line calling `supervisor` is the inner supervisor's spawn site in
    /// [`leak::dump`](crate::leak::dump).
    #[track_caller]
    pub fn supervisor<F>(name: &str, restart: Restart, make: F) -> ChildSpec
    where
        F: Fn() -> SupervisorBuilder + Send + Sync + 'static,
    {
        let site = Location::caller();
        ChildSpec::new(name, restart, move |token: &CancelToken| {
            let mut builder = make();
            builder.site.get_or_insert(site);
            let inner = builder.start()?;
            match inner.join_cancellable(token) {
                Ok(report) if report.reason.is_all_exited() => Ok(()),
                Ok(report) => Err(Escalation(report).into()),
                Err(running) => {
                    drop_quietly(running.stop());
                    Ok::<(), Box<dyn Error + Send + Sync>>(())
                }
            }
        })
    }
}

impl fmt::Debug for SupervisorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupervisorBuilder")
            .field("name", &self.name)
            .field("strategy", &self.strategy)
            .field("max_restarts", &self.max_restarts)
            .field("period", &self.period)
            .field("jitter", &self.jitter)
            .field("shutdown", &self.shutdown)
            .field("history", &self.history)
            .field("watchdog", &self.watchdog)
            .field("children", &self.children.len())
            .finish()
    }
}
