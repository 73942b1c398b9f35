//! What a supervisor tells: its children's specs and exits, events, live stats and the
//! final report. Plain data, shared by the front and the engine.

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::cancel::CancelToken;
use crate::config::ConfigError;
use crate::panic::Panic;
use crate::spawn::SpawnError;

/// A child's error, kept as the object it returned.
pub(crate) type BoxError = Box<dyn Error + Send + Sync>;

/// The function a child runs. It should return when its token is cancelled.
pub(crate) type ChildFn = Arc<dyn Fn(&CancelToken) -> Result<(), BoxError> + Send + Sync>;

/// The event hook's type.
pub(crate) type Hook = dyn Fn(&SupervisorEvent<'_>) + Send + Sync;

/// When a child is restarted after it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Restart {
    /// Always restarted, whether it returned `Ok`, `Err` or panicked.
    Permanent,
    /// Restarted only after an `Err` or a panic; an `Ok` return ends it for good.
    Transient,
    /// Never restarted, by any strategy: not after its own exit, and not when a
    /// sibling's failure restarts a group it belongs to (it is stopped with the group
    /// and stays stopped).
    Temporary,
}

/// Which children are restarted when one of them must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Strategy {
    /// Only the child that exited (the default).
    #[default]
    OneForOne,
    /// Every child: the others are stopped first (one at a time, in reverse start
    /// order), then all but the temporary ones restart in start order.
    OneForAll,
    /// The child and every child added after it (which may depend on it): those are
    /// stopped first (in reverse start order), then all but the temporary ones restart
    /// in start order. Children added before it keep running.
    RestForOne,
}

/// How one child exited.
#[derive(Debug)]
#[non_exhaustive]
pub enum Exit {
    /// The function returned `Ok(())`.
    Finished,
    /// The function returned an error: the error object itself.
    Failed(Box<dyn Error + Send + Sync>),
    /// The function panicked.
    Panicked(Panic),
}

impl Exit {
    /// The kind of exit, without its payload.
    pub fn kind(&self) -> ExitKind {
        match self {
            Exit::Finished => ExitKind::Finished,
            Exit::Failed(_) => ExitKind::Failed,
            Exit::Panicked(_) => ExitKind::Panicked,
        }
    }
}

/// The kind of an [`Exit`], as live stats show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExitKind {
    /// Returned `Ok(())`.
    Finished,
    /// Returned an error.
    Failed,
    /// Panicked.
    Panicked,
}

/// Why the supervisor stopped.
#[derive(Debug)]
#[non_exhaustive]
pub enum StopReason {
    /// [`Supervisor::stop`](crate::Supervisor::stop) (or drop) was called, or its
    /// token was cancelled.
    Stopped,
    /// More than `max_restarts` restarts were due within `period`.
    IntensityExceeded {
        /// The child whose exit called for the restart that broke the limit.
        child: String,
        /// That exit (it is here, not in [`SupervisorReport::exits`]).
        last_error: Exit,
    },
    /// Every child exited and none was to be restarted (or the last one was removed).
    AllExited,
    /// The supervisor's own machinery hit a panic in user code it runs (the injected
    /// [`Clock`](crate::clock::Clock)), or the OS refused to restart a child: every
    /// child was stopped and joined; the panic is in [`SupervisorReport::panics`], the
    /// refused thread in [`SupervisorReport::spawn_error`].
    Failed,
}

impl StopReason {
    /// Whether this is [`StopReason::Stopped`].
    pub fn is_stopped(&self) -> bool {
        matches!(self, StopReason::Stopped)
    }

    /// Whether this is [`StopReason::IntensityExceeded`].
    pub fn is_intensity_exceeded(&self) -> bool {
        matches!(self, StopReason::IntensityExceeded { .. })
    }

    /// Whether this is [`StopReason::AllExited`].
    pub fn is_all_exited(&self) -> bool {
        matches!(self, StopReason::AllExited)
    }

    /// Whether this is [`StopReason::Failed`].
    pub fn is_failed(&self) -> bool {
        matches!(self, StopReason::Failed)
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::Stopped => f.write_str("stopped"),
            StopReason::IntensityExceeded { child, .. } => {
                write!(f, "restart intensity exceeded by child {child:?}")
            }
            StopReason::AllExited => f.write_str("every child exited"),
            StopReason::Failed => f.write_str("failed"),
        }
    }
}

/// Where a child is in its life, as [`Supervisor::stats`](crate::Supervisor::stats)
/// shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChildState {
    /// Its thread runs its function.
    Running,
    /// Cancelled; the supervisor waits for its thread to return.
    Stopping,
    /// Exited or stopped for a restart; waiting out the backoff.
    BackingOff,
    /// Exited and not to be restarted.
    Exited,
    /// Stopped with the supervisor, or left stopped by a group restart (a temporary
    /// child).
    Stopped,
}

/// One child's live numbers.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ChildStats {
    /// The child's name.
    pub name: String,
    /// Its restart type.
    pub restart: Restart,
    /// Where it is now.
    pub state: ChildState,
    /// How long it has been in `state`, on the supervisor's clock.
    pub in_state: Duration,
    /// Times its thread was started (the first start included).
    pub starts: u64,
    /// Times it was restarted.
    pub restarts: usize,
    /// How it last exited.
    pub last_exit: Option<ExitKind>,
    /// Times it outlived its shutdown timeout when stopped.
    pub overdue: usize,
}

/// A snapshot of a running supervisor, from
/// [`Supervisor::stats`](crate::Supervisor::stats).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SupervisorStats {
    /// The supervisor's name, if it was given one.
    pub name: Option<String>,
    /// Every child, in start order.
    pub children: Vec<ChildStats>,
    /// Exits seen so far, over the whole life of the supervisor.
    pub exits: u64,
}

/// Something a supervisor did, handed to the hook set with
/// [`on_event`](crate::supervisor::SupervisorBuilder::on_event).
#[derive(Debug)]
#[non_exhaustive]
pub struct SupervisorEvent<'a> {
    /// The supervisor's name, if it was given one.
    pub supervisor: Option<&'a str>,
    /// What happened.
    pub kind: EventKind<'a>,
}

/// What a [`SupervisorEvent`] is about.
#[derive(Debug)]
#[non_exhaustive]
pub enum EventKind<'a> {
    /// A child's thread started for the first time (at start, or added at run time).
    Started {
        /// The child.
        child: &'a str,
    },
    /// A child returned (`Ok` or an error).
    Exited {
        /// The child.
        child: &'a str,
        /// [`Exit::Finished`] or [`Exit::Failed`].
        exit: &'a Exit,
    },
    /// A child panicked.
    Panicked {
        /// The child.
        child: &'a str,
        /// The caught panic.
        panic: &'a Panic,
    },
    /// The supervisor waits before restarting the group of this child.
    BackingOff {
        /// The child whose exit calls for the restart.
        child: &'a str,
        /// The delay, jitter applied.
        delay: Duration,
    },
    /// A child's thread was started again.
    Restarted {
        /// The child.
        child: &'a str,
        /// Its restarts so far, this one included.
        restarts: usize,
    },
    /// A child did not return within its shutdown timeout after it was cancelled. The
    /// supervisor goes on stopping the others, then waits for it: it is still joined.
    ShutdownOverdue {
        /// The child.
        child: &'a str,
        /// Its shutdown timeout.
        timeout: Duration,
    },
    /// A child was removed at run time (after it was stopped and joined).
    Removed {
        /// The child.
        child: &'a str,
    },
    /// The restart intensity was exceeded: the supervisor stops everything.
    IntensityExceeded {
        /// The child whose exit broke the limit.
        child: &'a str,
        /// That exit.
        exit: &'a Exit,
    },
    /// The watchdog ([`SupervisorBuilder::watchdog`](crate::supervisor::SupervisorBuilder::watchdog))
    /// found this child running for its threshold or longer: reported once per run of
    /// the child, and marked `[STUCK]` in [`leak::dump`](crate::leak::dump).
    Stuck {
        /// The child.
        child: &'a str,
        /// How long it had been running, at least, when found.
        running_for: Duration,
    },
    /// Every child has been stopped and joined; the report follows.
    Stopped {
        /// Why.
        reason: &'a StopReason,
    },
}

/// What a supervisor did, returned by [`Supervisor::stop`](crate::Supervisor::stop)
/// and [`Supervisor::join`](crate::Supervisor::join).
///
/// Its record is bounded: `exits` and `panics` keep the most recent entries (see
/// [`history`](crate::supervisor::SupervisorBuilder::history)), the older ones are
/// counted in `exits_omitted` and `panics_omitted`.
#[derive(Debug)]
#[non_exhaustive]
pub struct SupervisorReport {
    /// The supervisor's name, if it was given one.
    pub name: Option<String>,
    /// Why it stopped.
    pub reason: StopReason,
    /// Restarts per child, in start order (children removed at run time are left out).
    pub restarts: Vec<(String, usize)>,
    /// The most recent exits, in order: child name and how it exited.
    pub exits: Vec<(String, Exit)>,
    /// Exits left out of `exits` by the history bound.
    pub exits_omitted: usize,
    /// Panics in user code that were not a child's exit: an
    /// [`on_cancel`](CancelToken::on_cancel) callback run when the supervisor cancelled
    /// a token, the drop of a child's function, the event hook, the injected clock.
    pub panics: Vec<Panic>,
    /// Panics left out of `panics` by the history bound.
    pub panics_omitted: usize,
    /// Children that outlived their shutdown timeout at least once (each was still
    /// waited for and joined).
    pub overdue: Vec<String>,
    /// Every child's final numbers, in start order.
    pub children: Vec<ChildStats>,
    /// The child thread that did not start when a child was restarted (the reason is
    /// then [`StopReason::Failed`]).
    pub spawn_error: Option<SpawnError>,
}

impl SupervisorReport {
    /// The report of a supervisor stopped from its own monitor thread, which is the
    /// thread producing the real one: nothing is known there.
    pub(crate) fn unknown(name: Option<String>) -> Self {
        SupervisorReport {
            name,
            reason: StopReason::Stopped,
            restarts: Vec::new(),
            exits: Vec::new(),
            exits_omitted: 0,
            panics: Vec::new(),
            panics_omitted: 0,
            overdue: Vec::new(),
            children: Vec::new(),
            spawn_error: None,
        }
    }

    /// Total restarts across all children.
    pub fn total_restarts(&self) -> usize {
        self.restarts.iter().map(|(_, n)| n).sum()
    }
}

/// The error a supervisor run as a child (see
/// [`ChildSpec::supervisor`](crate::supervisor::ChildSpec::supervisor)) returns when it
/// stopped by itself for any reason but "every child exited": its parent sees it as
/// [`Exit::Failed`] (downcast the error to read the report) and restarts it according to
/// its restart type, as OTP escalates a failure up the tree.
#[derive(Debug)]
pub struct Escalation(pub SupervisorReport);

impl fmt::Display for Escalation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0.name {
            Some(name) => write!(f, "supervisor {name:?} stopped: {}", self.0.reason),
            None => write!(f, "supervisor stopped: {}", self.0.reason),
        }
    }
}

impl Error for Escalation {}

/// A bounded record: the most recent `cap` entries and a count of the older ones.
pub(crate) struct History<T> {
    items: std::collections::VecDeque<T>,
    cap: usize,
    omitted: usize,
}

impl<T> History<T> {
    pub(crate) fn new(cap: usize) -> Self {
        History {
            items: std::collections::VecDeque::new(),
            cap,
            omitted: 0,
        }
    }

    /// Adds `item`; returns the entry it pushed out (the caller drops it inside the
    /// panic boundary: it holds user values).
    pub(crate) fn push(&mut self, item: T) -> Option<T> {
        self.items.push_back(item);
        if self.items.len() > self.cap {
            self.omitted += 1;
            return self.items.pop_front();
        }
        None
    }

    pub(crate) fn into_parts(self) -> (Vec<T>, usize) {
        (self.items.into(), self.omitted)
    }
}

/// One child: its name, restart type, shutdown timeout and function. Given to
/// [`SupervisorBuilder::add`](crate::supervisor::SupervisorBuilder::add_child) or, at run
/// time, to [`Supervisor::add_child`](crate::Supervisor::add_child).
#[must_use = "a child spec does nothing until it is added to a supervisor"]
pub struct ChildSpec {
    pub(crate) name: String,
    pub(crate) restart: Restart,
    /// Its own shutdown timeout; the supervisor's when `None`.
    pub(crate) shutdown: Option<Duration>,
    pub(crate) run: ChildFn,
}

impl ChildSpec {
    /// A child that runs `run(&token)` on its own thread and should return when the
    /// token is cancelled.
    pub fn new<F, E>(name: &str, restart: Restart, run: F) -> Self
    where
        F: Fn(&CancelToken) -> Result<(), E> + Send + Sync + 'static,
        E: Into<Box<dyn Error + Send + Sync>>,
    {
        ChildSpec {
            name: name.to_owned(),
            restart,
            shutdown: None,
            run: Arc::new(move |token| run(token).map_err(Into::into)),
        }
    }

    /// How long the supervisor waits for this child to return once it has cancelled
    /// its token, before it reports it ([`EventKind::ShutdownOverdue`],
    /// [`SupervisorReport::overdue`]) and goes on stopping the others; it then still
    /// waits for it, so its thread is joined all the same. Overrides the supervisor's
    /// [`shutdown_timeout`](crate::supervisor::SupervisorBuilder::shutdown_timeout);
    /// `Duration::MAX` waits without a report.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown = Some(timeout);
        self
    }

    /// The child's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("name", &self.name)
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown)
            .finish_non_exhaustive()
    }
}

/// Why [`Supervisor::add_child`](crate::Supervisor::add_child) refused a child; the
/// spec comes back in every case.
#[derive(Debug)]
#[non_exhaustive]
pub enum AddChildError {
    /// A child of that name is already supervised.
    Duplicate(ChildSpec),
    /// The name is not a valid thread name (the cause is the `source`).
    InvalidName(ConfigError, ChildSpec),
    /// The supervisor has stopped, or is stopping.
    Stopped(ChildSpec),
    /// The OS refused the child's thread (the cause is the `source`).
    Spawn(SpawnError, ChildSpec),
}

impl AddChildError {
    /// The refused child.
    pub fn into_spec(self) -> ChildSpec {
        match self {
            AddChildError::Duplicate(spec)
            | AddChildError::InvalidName(_, spec)
            | AddChildError::Stopped(spec)
            | AddChildError::Spawn(_, spec) => spec,
        }
    }
}

impl fmt::Display for AddChildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddChildError::Duplicate(spec) => write!(f, "a child named {:?} exists", spec.name),
            AddChildError::InvalidName(..) => f.write_str("invalid child name"),
            AddChildError::Stopped(_) => f.write_str("the supervisor has stopped"),
            AddChildError::Spawn(..) => f.write_str("the child's thread did not start"),
        }
    }
}

impl Error for AddChildError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            AddChildError::InvalidName(e, _) => Some(e),
            AddChildError::Spawn(e, _) => Some(e),
            _ => None,
        }
    }
}

/// Why [`Supervisor::remove_child`](crate::Supervisor::remove_child) did nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RemoveChildError {
    /// No child of that name is supervised.
    Unknown(String),
    /// The supervisor has stopped, or is stopping (it stops every child itself).
    Stopped(String),
}

impl fmt::Display for RemoveChildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoveChildError::Unknown(name) => write!(f, "no child named {name:?}"),
            RemoveChildError::Stopped(name) => {
                write!(f, "the supervisor has stopped (child {name:?})")
            }
        }
    }
}

impl Error for RemoveChildError {}
