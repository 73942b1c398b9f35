//! A supervisor for long-lived worker threads: restart on failure, within limits.
//!
//! Implementation notes. Each child runs on its own owned thread, started through
//! `crate::spawn` (so leak checks see it) with a child token of the supervisor's
//! token. When a child's function returns or panics, its thread reports the exit on a
//! channel to the monitor thread, which decides what happens next from the child's
//! [`Restart`] type and the supervisor's [`Strategy`], counts restarts against the
//! intensity limit (at most `max_restarts` within `period`; past it the supervisor
//! stops everything and reports), and waits out the backoff on the supervisor's token
//! so that [`Supervisor::stop`] interrupts it. Every child thread is joined by the
//! monitor before it restarts that child and before it exits; the monitor is joined by
//! `stop` and by `Drop`. Children must honour their token for `stop` to return.

use std::collections::VecDeque;
use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, RecvTimeoutError, Sender};

use crate::cancel::CancelToken;
use crate::clock::{Clock, SystemClock};
use crate::config::ConfigError;
use crate::panic::Panic;
use crate::spawn::{spawn, ThreadSpec};

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
type ChildFn = Arc<dyn Fn(&CancelToken) -> Result<(), Box<dyn Error + Send + Sync>> + Send + Sync>;

struct ChildSpec {
    name: String,
    restart: Restart,
    run: ChildFn,
}

/// Configures and starts a [`Supervisor`].
pub struct SupervisorBuilder {
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
    /// The function panicked.
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
}

/// What a supervisor did, returned by [`Supervisor::stop`] and [`Supervisor::join`].
#[derive(Debug)]
#[non_exhaustive]
pub struct SupervisorReport {
    /// Why it stopped.
    pub reason: StopReason,
    /// Restarts per child, in the order the children were added.
    pub restarts: Vec<(String, usize)>,
    /// Every exit seen, in order: child name and how it exited.
    pub exits: Vec<(String, Exit)>,
}

impl SupervisorReport {
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
/// use corral::{Restart, Supervisor};
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
pub struct Supervisor {
    token: CancelToken,
    monitor: Option<JoinHandle<Option<SupervisorReport>>>,
    /// Disconnected when the monitor thread is about to return (every child joined):
    /// what the bounded `stop`/`join` forms wait on, since `JoinHandle` has no timeout.
    finished: Receiver<()>,
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
        }
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
    pub fn stop(mut self) -> SupervisorReport {
        self.token.cancel();
        self.join_monitor()
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
    pub fn stop_timeout(self, timeout: Duration) -> Result<SupervisorReport, Supervisor> {
        self.token.cancel();
        self.join_deadline(Instant::now() + timeout)
    }

    /// As [`stop_timeout`](Supervisor::stop_timeout), with a deadline.
    ///
    /// # Errors
    ///
    /// The supervisor itself, when the children were not all joined by `deadline`.
    pub fn stop_deadline(self, deadline: Instant) -> Result<SupervisorReport, Supervisor> {
        self.token.cancel();
        self.join_deadline(deadline)
    }

    /// As [`join`](Supervisor::join), waiting at most `timeout`; on timeout the
    /// supervisor is handed back, still running.
    ///
    /// # Errors
    ///
    /// The supervisor itself, when it had not stopped in time.
    pub fn join_timeout(self, timeout: Duration) -> Result<SupervisorReport, Supervisor> {
        self.join_deadline(Instant::now() + timeout)
    }

    /// As [`join`](Supervisor::join), waiting until `deadline` at most; then the
    /// supervisor is handed back, still running.
    ///
    /// # Errors
    ///
    /// The supervisor itself, when it had not stopped by `deadline`.
    pub fn join_deadline(mut self, deadline: Instant) -> Result<SupervisorReport, Supervisor> {
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
        select! {
            recv(self.finished) -> _ => Ok(self.join_monitor()),
            recv(token.done()) -> _ => Err(self),
            recv(token.expired()) -> _ => Err(self),
        }
    }

    fn join_monitor(&mut self) -> SupervisorReport {
        let monitor = self.monitor.take().expect("monitor joined once");
        match monitor.join() {
            Ok(report) => report.expect("the monitor was handed its state"),
            // The monitor runs no user code outside catch_unwind.
            Err(payload) => std::panic::resume_unwind(payload),
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if self.monitor.is_some() {
            self.token.cancel();
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
    pub fn intensity(mut self, max_restarts: usize, period: Duration) -> Self {
        self.max_restarts = max_restarts;
        self.period = period;
        self
    }

    /// Delay before a child's restart: `base`, doubled for each consecutive restart
    /// of that child, capped at `max`. Zero disables it.
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff = base;
        self.max_backoff = max;
        self
    }

    /// The clock that restart intensity and backoff are measured on (default
    /// [`SystemClock`]); a [`ManualClock`](crate::ManualClock) makes them testable
    /// without sleeping.
    pub fn clock<C: Clock>(mut self, clock: C) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Adds a child. It runs `run(&token)` on its own thread named `corral-sup-<name>`
    /// and should return when the token is cancelled.
    pub fn child<F, E>(mut self, name: &str, restart: Restart, run: F) -> Self
    where
        F: Fn(&CancelToken) -> Result<(), E> + Send + Sync + 'static,
        E: Into<Box<dyn Error + Send + Sync>>,
    {
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
    /// [`ConfigError`] for no children (`children`), a zero `period`, or a `max` backoff
    /// below its `base`; an OS refusal to start a thread is reported as field `thread`.
    pub fn start(self) -> Result<Supervisor, ConfigError> {
        if self.children.is_empty() {
            return Err(ConfigError::new(
                "children",
                0,
                "a supervisor needs at least one child",
            ));
        }
        if self.period.is_zero() {
            return Err(ConfigError::new(
                "period",
                self.period,
                "must be greater than zero",
            ));
        }
        if self.max_backoff < self.backoff {
            return Err(ConfigError::new(
                "backoff max",
                self.max_backoff,
                "must not be below the base delay",
            ));
        }
        let token = CancelToken::new();
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
            exits: Vec::new(),
        };
        // The monitor thread starts first and waits for its state, so that whatever
        // fails below, every thread already started is joined here.
        let (hand_over, receive) = crossbeam_channel::bounded::<Monitor>(1);
        let spec = ThreadSpec::new("Supervisor", "sup-monitor");
        let (finishing, finished) = crossbeam_channel::bounded::<()>(0);
        let handle = spawn(&spec, move || {
            let _finishing = finishing;
            receive.recv().ok().map(Monitor::run)
        })
        .map_err(|e| {
            ConfigError::new("thread", e.to_string(), "the OS refused to start a thread")
        })?;
        for index in 0..monitor.children.len() {
            if let Err(e) = monitor.start_child(index) {
                monitor.stop_all();
                drop(hand_over);
                let _ = handle.join();
                return Err(ConfigError::new(
                    "thread",
                    e.to_string(),
                    "the OS refused to start a thread",
                ));
            }
        }
        hand_over
            .send(monitor)
            .expect("the monitor thread waits for its state");
        Ok(Supervisor {
            token,
            monitor: Some(handle),
            finished,
        })
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

struct Child {
    spec: ChildSpec,
    running: Option<(CancelToken, JoinHandle<()>)>,
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
    exits: Vec<(String, Exit)>,
}

impl Monitor {
    fn start_child(&mut self, index: usize) -> std::io::Result<()> {
        let child = &mut self.children[index];
        child.generation += 1;
        let generation = child.generation;
        let token = self.token.child();
        let run = Arc::clone(&child.spec.run);
        let exits = self.exits_tx.clone();
        let child_token = token.clone();
        let spec = ThreadSpec::new("Supervisor", format!("sup-{}", child.spec.name));
        let handle = spawn(&spec, move || {
            let exit = match Panic::catch_any(|| run(&child_token)) {
                Ok(Ok(())) => Exit::Finished,
                Ok(Err(e)) => Exit::Failed(e.to_string()),
                Err(panic) => Exit::Panicked(panic),
            };
            let _ = exits.send((index, generation, exit));
        })?;
        child.running = Some((token, handle));
        Ok(())
    }

    fn join_child(&mut self, index: usize) {
        if let Some((token, handle)) = self.children[index].running.take() {
            token.cancel();
            let _ = handle.join();
        }
    }

    fn stop_all(&mut self) {
        self.token.cancel();
        for index in 0..self.children.len() {
            self.join_child(index);
        }
        // Exits reported while stopping are part of the record.
        while let Ok((index, _, exit)) = self.exits_rx.try_recv() {
            let name = self.children[index].spec.name.clone();
            self.exits.push((name, exit));
        }
    }

    fn run(mut self) -> SupervisorReport {
        let reason = self.supervise();
        self.stop_all();
        SupervisorReport {
            reason,
            restarts: self
                .children
                .iter()
                .map(|c| (c.spec.name.clone(), c.restarts))
                .collect(),
            exits: self.exits,
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
                let name = self.children[index].spec.name.clone();
                self.exits.push((name, exit));
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
            let name = self.children[index].spec.name.clone();
            self.exits.push((name, exit));
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
            let resume_at = self.clock.now() + delay;
            if !self.clock.sleep_until(resume_at, Some(&self.token)) {
                return StopReason::Stopped;
            }
            for i in group {
                let child = &mut self.children[i];
                child.restarts += 1;
                child.streak = child.streak.saturating_add(1);
                if self.start_child(i).is_err() {
                    return StopReason::Stopped;
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

    fn delay_for(&self, index: usize) -> Duration {
        let streak = self.children[index].streak.min(20);
        self.backoff
            .saturating_mul(1u32 << streak)
            .min(self.max_backoff)
    }
}
