//! The monitor: one thread per supervisor that applies the strategy and the intensity
//! limit, waits out backoffs, takes run-time commands, and joins every child.
//
// Implementation notes. Children are kept in start order (the builder's order, then
// run-time additions); stopping walks that order backwards, one child at a time: cancel
// its token, wait for its thread up to its shutdown timeout (wall clock: a thread's end
// cannot be awaited on an injected clock), report it if it is late, go on with the next,
// and at the end wait for the late ones, so every thread is joined. A child's token is a
// root of its own, not a child of the supervisor's, so that cancelling the supervisor
// does not stop every child at once. Each start bumps the child's generation and so does
// each stop the monitor makes; an exit of an older generation was caused by the monitor
// and is recorded, never acted on. A backoff sleeps on the injected clock with a token
// that a run-time command cancels, so `add_child`/`remove_child` never wait for it.
// In the thread dump the monitor is idle while it waits, in backoff until the restart,
// stopping at the end; its watchdog (if any) runs each time it wakes.

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};
use parking_lot::Mutex;

use crate::cancel::CancelToken;
use crate::clock::Clock;
use crate::observe::{self, Owner, Role, Stuck, Watchdog};
use crate::panic::{drop_caught, Panic};
use crate::spawn::{start, SpawnError, ThreadSpec};
use crate::supervisor::report::{
    AddChildError, ChildFn, ChildSpec, ChildState, ChildStats, EventKind, Exit, History, Hook,
    RemoveChildError, Restart, StopReason, Strategy, SupervisorEvent, SupervisorReport,
    SupervisorStats,
};
use crate::supervisor::telemetry::Telemetry;
use crate::sync::time;

thread_local! {
    /// The id of the supervisor whose child runs on this thread (0 elsewhere), so that
    /// a supervisor stopped from one of its own children knows not to wait for it.
    pub(crate) static CHILD_OF: Cell<u64> = const { Cell::new(0) };
}

/// What the builder settled.
pub(crate) struct Settings {
    pub(crate) name: Option<String>,
    pub(crate) strategy: Strategy,
    pub(crate) max_restarts: usize,
    pub(crate) period: Duration,
    pub(crate) backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) jitter: f64,
    pub(crate) seed: u64,
    pub(crate) shutdown: Duration,
    pub(crate) history: usize,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) hook: Option<Arc<Hook>>,
    /// Who the supervisor's threads belong to in the thread dump.
    pub(crate) owner: Arc<Owner>,
    /// The opt-in stuck-child watchdog, and where it reports what it finds.
    pub(crate) watchdog: Option<StuckWatch>,
}

/// The supervisor's watchdog over its children.
pub(crate) struct StuckWatch {
    pub(crate) watchdog: Arc<Watchdog>,
    pub(crate) threshold: Duration,
    /// What the watchdog found, for the event hook on the monitor thread.
    pub(crate) found: Receiver<Stuck>,
}

/// A run-time request from the handle; the monitor always answers it.
pub(crate) enum Command {
    Add(ChildSpec, Sender<Result<(), AddChildError>>),
    Remove(String, Sender<Result<(), RemoveChildError>>),
}

/// One child's live numbers, as the handle reads them.
pub(crate) struct Slot {
    stats: ChildStats,
    since: Instant,
    /// Its thread has not been joined yet.
    alive: bool,
}

/// What the monitor shares with the handle: live stats, and the way in for commands.
pub(crate) struct Shared {
    /// In the same order as the monitor's children.
    children: Vec<Slot>,
    exits: u64,
    /// Cancelled by the handle after it sends a command, to wake a backoff.
    wake: Option<CancelToken>,
    /// `None` once the monitor stops taking commands. Unbounded, but each command's
    /// sender waits for its answer, so at most one per calling thread is queued.
    commands: Option<Sender<Command>>,
    /// The watchdog, for on-demand checks from the handle.
    watchdog: Option<Arc<Watchdog>>,
}

impl Shared {
    pub(crate) fn new(commands: Sender<Command>, watchdog: Option<Arc<Watchdog>>) -> Self {
        Shared {
            children: Vec::new(),
            exits: 0,
            wake: None,
            commands: Some(commands),
            watchdog,
        }
    }

    pub(crate) fn watchdog(&self) -> Option<Arc<Watchdog>> {
        self.watchdog.clone()
    }

    /// Sends a command; returns the token to cancel (outside the lock) to wake a
    /// backoff, and hands the command back once commands are closed.
    pub(crate) fn send(&self, command: Command) -> Result<Option<CancelToken>, Command> {
        let Some(commands) = &self.commands else {
            return Err(command);
        };
        commands.send(command).map_err(|e| e.into_inner())?;
        Ok(self.wake.clone())
    }

    pub(crate) fn len(&self) -> usize {
        self.children.len()
    }

    fn running_count(&self) -> usize {
        self.children.iter().filter(|s| s.alive).count()
    }

    pub(crate) fn running_children(&self) -> Vec<String> {
        self.children
            .iter()
            .filter(|s| s.alive)
            .map(|s| s.stats.name.clone())
            .collect()
    }

    pub(crate) fn snapshot(&self, name: Option<String>, now: Instant) -> SupervisorStats {
        SupervisorStats {
            name,
            children: self.children(now),
            exits: self.exits,
        }
    }

    fn children(&self, now: Instant) -> Vec<ChildStats> {
        self.children
            .iter()
            .map(|s| ChildStats {
                in_state: now.saturating_duration_since(s.since),
                ..s.stats.clone()
            })
            .collect()
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
    id: u64,
    name: Arc<str>,
    restart: Restart,
    shutdown: Option<Duration>,
    run: ChildFn,
    running: Option<Running>,
    generation: u64,
    restarts: usize,
    /// Consecutive restarts, for the backoff; reset when the child exits `Ok`.
    streak: u32,
    /// Exited or stopped, and not to be restarted.
    done: bool,
}

/// Child id, its generation, its name, and how it exited.
type ExitMsg = (u64, u64, Arc<str>, Exit);

pub(crate) struct Monitor {
    settings: Settings,
    token: CancelToken,
    children: Vec<Child>,
    next_child: u64,
    exits_tx: Sender<ExitMsg>,
    exits_rx: Receiver<ExitMsg>,
    /// Exits taken from the channel while stopping children, still to be acted on.
    backlog: VecDeque<ExitMsg>,
    commands: Receiver<Command>,
    recent: VecDeque<Instant>,
    exits: History<(String, Exit)>,
    panics: History<Panic>,
    overdue: Vec<String>,
    /// The supervisor's id, marked on its children's threads.
    id: u64,
    detached: Receiver<ThreadId>,
    /// A child thread that is stopping the supervisor: never waited for.
    detached_thread: Option<ThreadId>,
    shared: Arc<Mutex<Shared>>,
    rng: u64,
    /// The thread that did not start when a child was restarted.
    spawn_error: Option<SpawnError>,
    telemetry: Telemetry,
    /// The monitor thread's own slot in the thread dump (once it runs).
    me: Option<Arc<observe::Slot>>,
}

impl Monitor {
    pub(crate) fn new(
        settings: Settings,
        token: CancelToken,
        id: u64,
        detached: Receiver<ThreadId>,
        commands: Receiver<Command>,
        shared: Arc<Mutex<Shared>>,
    ) -> Self {
        let (exits_tx, exits_rx) = crossbeam_channel::unbounded();
        // Metric handles are registered here, on the thread that starts the supervisor.
        let telemetry = Telemetry::new(settings.name.as_deref());
        Monitor {
            exits: History::new(settings.history),
            panics: History::new(settings.history),
            rng: settings.seed,
            settings,
            token,
            children: Vec::new(),
            next_child: 0,
            exits_tx,
            exits_rx,
            backlog: VecDeque::new(),
            commands,
            recent: VecDeque::new(),
            overdue: Vec::new(),
            id,
            detached,
            detached_thread: None,
            shared,
            spawn_error: None,
            telemetry,
            me: None,
        }
    }

    /// Appends a child (not started); hands the spec back if its name is taken.
    pub(crate) fn push(&mut self, spec: ChildSpec) -> Result<usize, ChildSpec> {
        if self.children.iter().any(|c| *c.name == *spec.name) {
            return Err(spec);
        }
        let now = self.stamp();
        self.shared.lock().children.push(Slot {
            stats: ChildStats {
                name: spec.name.clone(),
                restart: spec.restart,
                state: ChildState::Stopped,
                in_state: Duration::ZERO,
                starts: 0,
                restarts: 0,
                last_exit: None,
                overdue: 0,
            },
            since: now,
            alive: false,
        });
        self.next_child += 1;
        self.children.push(Child {
            id: self.next_child,
            name: spec.name.into(),
            restart: spec.restart,
            shutdown: spec.shutdown,
            run: spec.run,
            running: None,
            generation: 0,
            restarts: 0,
            streak: 0,
            done: false,
        });
        Ok(self.children.len() - 1)
    }

    /// Takes a child out, handing its spec back.
    fn take(&mut self, index: usize) -> ChildSpec {
        self.shared.lock().children.remove(index);
        let child = self.children.remove(index);
        ChildSpec {
            name: child.name.to_string(),
            restart: child.restart,
            shutdown: child.shutdown,
            run: child.run,
        }
    }

    /// Drops every child's function inside the panic boundary (all threads joined).
    pub(crate) fn drop_children(&mut self) -> Vec<Panic> {
        self.children
            .drain(..)
            .filter_map(|c| drop_caught(c.run))
            .collect()
    }

    /// Stops every child started so far and drops every function (the start failed).
    pub(crate) fn abandon(mut self) -> Vec<Panic> {
        self.stop_all();
        self.drop_children()
    }

    /// A child's thread name, after the `corral-` prefix.
    fn thread_name(&self, index: usize) -> String {
        match &self.settings.name {
            Some(name) => format!("sup-{name}/{}", self.children[index].name),
            None => format!("sup-{}", self.children[index].name),
        }
    }

    /// Starts a child's thread (a first start or a restart).
    pub(crate) fn start_child(&mut self, index: usize) -> Result<(), SpawnError> {
        let spec = ThreadSpec::new("Supervisor", self.thread_name(index))
            .role(Role::SupervisorChild)
            .owned_by(&self.settings.owner);
        let child = &mut self.children[index];
        child.generation += 1;
        let (id, generation, name) = (child.id, child.generation, Arc::clone(&child.name));
        let token = CancelToken::new();
        let run = Arc::clone(&child.run);
        let exits = self.exits_tx.clone();
        let child_token = token.clone();
        let (finishing, done) = crossbeam_channel::bounded::<()>(0);
        let supervisor = self.id;
        let handle = start(&spec, move || {
            let _finishing = finishing;
            CHILD_OF.with(|c| c.set(supervisor));
            let exit = match Panic::catch_any(|| run(&child_token)) {
                Ok(Ok(())) => Exit::Finished,
                Ok(Err(error)) => Exit::Failed(error),
                Err(panic) => Exit::Panicked(panic),
            };
            if let Err(unsent) = exits.send((id, generation, name, exit)) {
                // The monitor is gone (this thread was left to finish on its own).
                let _ = drop_caught(unsent);
            }
            // Usually not the last reference (the monitor keeps the function); it is
            // when this thread was left to finish on its own.
            let _ = drop_caught(run);
        })?;
        child.running = Some(Running {
            token,
            handle,
            done,
        });
        let now = self.stamp();
        let mut shared = self.shared.lock();
        let slot = &mut shared.children[index];
        slot.alive = true;
        slot.stats.starts += 1;
        slot.stats.restarts = self.children[index].restarts;
        slot.stats.state = ChildState::Running;
        slot.since = now;
        self.telemetry.running(shared.running_count());
        Ok(())
    }

    /// The injected clock's time; a panicking clock is recorded and the system time
    /// used instead (the supervision logic itself reads the clock unguarded, so such a
    /// clock still stops the supervisor with `StopReason::Failed`).
    fn stamp(&mut self) -> Instant {
        match Panic::catch_any(|| self.settings.clock.now()) {
            Ok(now) => now,
            Err(panic) => {
                self.push_panic(panic);
                time::now()
            }
        }
    }

    fn set_state(&mut self, index: usize, state: ChildState) {
        let now = self.stamp();
        let slot = &mut self.shared.lock().children[index];
        if slot.stats.state != state {
            slot.stats.state = state;
            slot.since = now;
        }
    }

    fn push_panic(&mut self, panic: Panic) {
        // A caught panic drops its payload inside the boundary itself.
        drop(self.panics.push(panic));
    }

    /// Counts the event and emits it (features `metrics`, `tracing`), then calls the
    /// event hook; both inside the panic boundary (they format user errors).
    fn emit(&mut self, kind: EventKind<'_>) {
        let event = SupervisorEvent {
            supervisor: self.settings.name.as_deref(),
            kind,
        };
        let telemetry = &self.telemetry;
        let observed = Panic::catch_any(|| telemetry.observe(&event)).err();
        let hooked = match &self.settings.hook {
            Some(hook) => Panic::catch_any(|| hook(&event)).err(),
            None => None,
        };
        for panic in observed.into_iter().chain(hooked) {
            self.push_panic(panic);
        }
    }

    /// Emits the exit's event and keeps it in the bounded record.
    fn record(&mut self, name: &str, exit: Exit) {
        match &exit {
            Exit::Panicked(panic) => self.emit(EventKind::Panicked { child: name, panic }),
            exit => self.emit(EventKind::Exited { child: name, exit }),
        }
        if let Some(index) = self.children.iter().position(|c| *c.name == *name) {
            self.shared.lock().children[index].stats.last_exit = Some(exit.kind());
        }
        self.shared.lock().exits += 1;
        if let Some(evicted) = self.exits.push((name.to_owned(), exit)) {
            // A child's error or panic payload is a user value: its `Drop` may panic.
            if let Some(panic) = drop_caught(evicted) {
                self.push_panic(panic);
            }
        }
    }

    /// Cancels a token, keeping a panicking callback's panic for the report.
    fn cancel(&mut self, token: &CancelToken) {
        if let Err(panic) = Panic::catch_any(|| token.cancel()) {
            self.push_panic(panic);
        }
    }

    /// Waits for a child's thread and joins it, until `deadline` at most; `false` if
    /// it still runs then. A thread that is stopping the supervisor is left to finish
    /// on its own (a thread cannot join itself).
    fn wait_child(&mut self, index: usize, deadline: Option<Instant>) -> bool {
        let Some(running) = &self.children[index].running else {
            return true;
        };
        let (done, thread) = (running.done.clone(), running.handle.thread().id());
        let timeout = deadline.map_or_else(crossbeam_channel::never, crossbeam_channel::at);
        loop {
            if self.detached_thread == Some(thread) {
                self.children[index].running = None;
                return true;
            }
            select! {
                recv(done) -> _ => break,
                recv(self.detached) -> thread => match thread {
                    Ok(thread) => self.detached_thread = Some(thread),
                    // The supervisor value is gone: no child can be stopping it.
                    Err(_) => self.detached = crossbeam_channel::never(),
                },
                recv(timeout) -> _ => return false,
            }
        }
        if let Some(running) = self.children[index].running.take() {
            let _ = running.handle.join();
        }
        let mut shared = self.shared.lock();
        shared.children[index].alive = false;
        self.telemetry.running(shared.running_count());
        true
    }

    /// Stops the given children (indices in start order) one at a time in reverse
    /// order, each given its shutdown timeout; the late ones are reported, then waited
    /// for after the others.
    fn stop_children(&mut self, indices: &[usize]) {
        let mut late = Vec::new();
        for &index in indices.iter().rev() {
            let Some(token) = self.children[index]
                .running
                .as_ref()
                .map(|r| r.token.clone())
            else {
                continue;
            };
            // Its coming exit was caused here: recorded, not acted on.
            self.children[index].generation += 1;
            self.set_state(index, ChildState::Stopping);
            self.cancel(&token);
            let timeout = self.children[index]
                .shutdown
                .unwrap_or(self.settings.shutdown);
            let deadline =
                (timeout != Duration::MAX).then(|| time::deadline_after(time::now(), timeout));
            if self.wait_child(index, deadline) {
                self.collect_exits();
            } else {
                let name = Arc::clone(&self.children[index].name);
                self.shared.lock().children[index].stats.overdue += 1;
                if !self.overdue.iter().any(|n| **n == *name) {
                    self.overdue.push(name.to_string());
                }
                self.emit(EventKind::ShutdownOverdue {
                    child: &name,
                    timeout,
                });
                late.push(index);
            }
        }
        for index in late {
            self.wait_child(index, None);
            self.collect_exits();
        }
    }

    /// Records the exits the monitor caused (a joined child's is in the channel
    /// already), so that they are reported in the order the children stopped; keeps
    /// the others for the main loop.
    fn collect_exits(&mut self) {
        while let Ok(msg) = self.exits_rx.try_recv() {
            let (id, generation) = (msg.0, msg.1);
            let current = self
                .children
                .iter()
                .any(|c| c.id == id && c.generation == generation);
            if current {
                self.backlog.push_back(msg);
            } else {
                self.record(&msg.2, msg.3);
            }
        }
    }

    /// Closes the command channel, refuses what is queued, then stops every child.
    fn stop_all(&mut self) {
        if let Some(me) = &self.me {
            me.stopping();
        }
        let closed = self.shared.lock().commands.take();
        drop(closed);
        while let Ok(command) = self.commands.try_recv() {
            self.refuse(command);
        }
        let all: Vec<usize> = (0..self.children.len()).collect();
        self.stop_children(&all);
        for index in all {
            self.set_state(index, ChildState::Stopped);
        }
        // Exits reported while stopping are part of the record.
        let mut pending = std::mem::take(&mut self.backlog);
        pending.extend(self.exits_rx.try_iter());
        for (_, _, name, exit) in pending {
            self.record(&name, exit);
        }
    }

    fn refuse(&mut self, command: Command) {
        let unsent = match command {
            Command::Add(spec, reply) => reply
                .send(Err(AddChildError::Stopped(spec)))
                .err()
                .map(|e| drop_caught(e.into_inner())),
            Command::Remove(name, reply) => {
                let _ = reply.send(Err(RemoveChildError::Stopped(name)));
                None
            }
        };
        if let Some(Some(panic)) = unsent {
            self.push_panic(panic);
        }
    }

    pub(crate) fn run(mut self) -> SupervisorReport {
        self.me = observe::current();
        if let Some(me) = &self.me {
            me.idle();
        }
        self.announce();
        let reason = match Panic::catch_any(|| self.supervise()) {
            Ok(reason) => reason,
            Err(panic) => {
                self.push_panic(panic);
                StopReason::Failed
            }
        };
        self.stop_all();
        self.emit(EventKind::Stopped { reason: &reason });
        let now = self.stamp();
        let children = self.shared.lock().children(now);
        let restarts = self
            .children
            .iter()
            .map(|c| (c.name.to_string(), c.restarts))
            .collect();
        for panic in self.drop_children() {
            self.push_panic(panic);
        }
        let (exits, exits_omitted) = self.exits.into_parts();
        let (panics, panics_omitted) = self.panics.into_parts();
        SupervisorReport {
            name: self.settings.name,
            reason,
            restarts,
            exits,
            exits_omitted,
            panics,
            panics_omitted,
            overdue: self.overdue,
            children,
            spawn_error: self.spawn_error,
        }
    }

    /// Emits the start events of the children started by the builder (on the monitor
    /// thread, like every other event).
    fn announce(&mut self) {
        for index in 0..self.children.len() {
            let name = Arc::clone(&self.children[index].name);
            self.emit(EventKind::Started { child: &name });
        }
    }

    fn supervise(&mut self) -> StopReason {
        let stop = self.token.done();
        let (stuck, every) = match &self.settings.watchdog {
            Some(watch) => (watch.found.clone(), Some(watch.threshold)),
            None => (crossbeam_channel::never(), None),
        };
        loop {
            self.check_stuck();
            if let Some(me) = &self.me {
                me.idle();
            }
            if self.children.iter().all(|c| c.done) {
                return StopReason::AllExited;
            }
            if let Some(msg) = self.backlog.pop_front() {
                if let Some(reason) = self.on_exit(msg) {
                    return reason;
                }
                continue;
            }
            // Without a timer thread: the watchdog looks whenever the monitor wakes, and
            // the monitor wakes at least once per threshold.
            let tick = every.map_or_else(crossbeam_channel::never, |every| {
                crossbeam_channel::at(time::deadline_after(time::now(), every))
            });
            select! {
                recv(stuck) -> found => {
                    if let Ok(found) = found {
                        self.on_stuck(&found);
                    }
                }
                recv(tick) -> _ => {}
                recv(self.exits_rx) -> msg => {
                    let msg = msg.expect("the monitor holds a sender");
                    if let Some(reason) = self.on_exit(msg) {
                        return reason;
                    }
                }
                recv(self.commands) -> command => {
                    if let Ok(command) = command {
                        self.on_command(command);
                    }
                }
                recv(stop) -> _ => return StopReason::Stopped,
            }
        }
    }

    /// Runs the watchdog, if there is one.
    fn check_stuck(&self) {
        if let Some(watch) = &self.settings.watchdog {
            watch.watchdog.check();
        }
    }

    /// Hands a stuck child to the event hook.
    fn on_stuck(&mut self, found: &Stuck) {
        let Some(index) = (0..self.children.len())
            .find(|&i| format!("corral-{}", self.thread_name(i)) == found.thread)
        else {
            return;
        };
        let name = Arc::clone(&self.children[index].name);
        self.emit(EventKind::Stuck {
            child: &name,
            running_for: found.running_for,
        });
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Add(spec, reply) => {
                let answer = self.add_child(spec);
                if let Err(unsent) = reply.send(answer) {
                    if let Some(panic) = drop_caught(unsent.into_inner()) {
                        self.push_panic(panic);
                    }
                }
            }
            Command::Remove(name, reply) => {
                let answer = self.remove_child(&name);
                let _ = reply.send(answer);
            }
        }
    }

    fn add_child(&mut self, spec: ChildSpec) -> Result<(), AddChildError> {
        let index = self.push(spec).map_err(AddChildError::Duplicate)?;
        if let Err(e) = self.start_child(index) {
            return Err(AddChildError::Spawn(e, self.take(index)));
        }
        let name = Arc::clone(&self.children[index].name);
        self.emit(EventKind::Started { child: &name });
        Ok(())
    }

    fn remove_child(&mut self, name: &str) -> Result<(), RemoveChildError> {
        let Some(index) = self.children.iter().position(|c| *c.name == *name) else {
            return Err(RemoveChildError::Unknown(name.to_owned()));
        };
        self.stop_children(&[index]);
        let spec = self.take(index);
        if let Some(panic) = drop_caught(spec) {
            self.push_panic(panic);
        }
        self.emit(EventKind::Removed { child: name });
        Ok(())
    }

    /// Acts on one exit; `Some` when the supervisor must stop.
    fn on_exit(&mut self, (id, generation, name, exit): ExitMsg) -> Option<StopReason> {
        let index = self.children.iter().position(|c| c.id == id);
        let Some(index) = index.filter(|&i| self.children[i].generation == generation) else {
            self.record(&name, exit);
            return None;
        };
        self.wait_child(index, None);
        let child = &mut self.children[index];
        let restart = !matches!(
            (child.restart, &exit),
            (Restart::Temporary, _) | (Restart::Transient, Exit::Finished)
        );
        if matches!(exit, Exit::Finished) {
            child.streak = 0;
        }
        if !restart {
            child.done = true;
            self.set_state(index, ChildState::Exited);
            self.record(&name, exit);
            return None;
        }
        if !self.admit_restart() {
            match &exit {
                Exit::Panicked(panic) => self.emit(EventKind::Panicked {
                    child: &name,
                    panic,
                }),
                exit => self.emit(EventKind::Exited { child: &name, exit }),
            }
            self.shared.lock().children[index].stats.last_exit = Some(exit.kind());
            self.shared.lock().exits += 1;
            self.emit(EventKind::IntensityExceeded {
                child: &name,
                exit: &exit,
            });
            return Some(StopReason::IntensityExceeded {
                child: name.to_string(),
                last_error: exit,
            });
        }
        self.record(&name, exit);
        self.restart_group(index)
    }

    /// Stops the rest of `index`'s group, waits out the backoff, restarts the group.
    fn restart_group(&mut self, index: usize) -> Option<StopReason> {
        let (first, end) = match self.settings.strategy {
            Strategy::OneForOne => (index, index + 1),
            Strategy::OneForAll => (0, self.children.len()),
            Strategy::RestForOne => (index, self.children.len()),
        };
        let others: Vec<usize> = (first..end)
            .filter(|&i| i != index && !self.children[i].done)
            .collect();
        self.stop_children(&others);
        let mut group = Vec::new();
        for i in first..end {
            if self.children[i].done {
                continue;
            }
            if self.children[i].restart == Restart::Temporary {
                self.children[i].done = true;
                self.set_state(i, ChildState::Stopped);
            } else {
                self.set_state(i, ChildState::BackingOff);
                group.push(self.children[i].id);
            }
        }
        let delay = self.delay_for(index);
        if !delay.is_zero() {
            // Read before the event, so that a test advancing a manual clock on the
            // event moves time past the end of this backoff.
            let resume_at = time::deadline_after(self.settings.clock.now(), delay);
            let name = Arc::clone(&self.children[index].name);
            if let Some(me) = &self.me {
                me.backoff_until(resume_at);
            }
            self.emit(EventKind::BackingOff {
                child: &name,
                delay,
            });
            let resumed = self.pause(resume_at);
            if let Some(me) = &self.me {
                me.idle();
            }
            if !resumed {
                return Some(StopReason::Stopped);
            }
        }
        if self.token.is_cancelled() {
            return Some(StopReason::Stopped);
        }
        for id in group {
            // Removed during the backoff: nothing to restart.
            let Some(i) = self.children.iter().position(|c| c.id == id) else {
                continue;
            };
            let child = &mut self.children[i];
            child.restarts += 1;
            child.streak = child.streak.saturating_add(1);
            let (restarts, name) = (child.restarts, Arc::clone(&child.name));
            if let Err(e) = self.start_child(i) {
                self.spawn_error = Some(e);
                return Some(StopReason::Failed);
            }
            self.emit(EventKind::Restarted {
                child: &name,
                restarts,
            });
        }
        None
    }

    /// Sleeps until `resume_at` on the injected clock, answering commands meanwhile;
    /// `false` when the supervisor is stopped first.
    fn pause(&mut self, resume_at: Instant) -> bool {
        loop {
            let wake = self.token.child();
            self.shared.lock().wake = Some(wake.clone());
            // A command sent before `wake` was installed did not cancel it.
            let slept =
                self.commands.is_empty() && self.settings.clock.sleep_until(resume_at, Some(&wake));
            self.shared.lock().wake = None;
            if slept {
                return true;
            }
            if self.token.is_cancelled() {
                return false;
            }
            while let Ok(command) = self.commands.try_recv() {
                self.on_command(command);
            }
        }
    }

    /// Records one restart; `false` once more than `max_restarts` fall in `period`.
    fn admit_restart(&mut self) -> bool {
        let now = self.settings.clock.now();
        while self
            .recent
            .front()
            .is_some_and(|&t| now.duration_since(t) >= self.settings.period)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        self.recent.len() <= self.settings.max_restarts
    }

    /// `backoff * 2^streak`, capped at `max_backoff`, then shortened by up to the
    /// jitter fraction; the shift stays below 32 and the product saturates.
    fn delay_for(&mut self, index: usize) -> Duration {
        let streak = self.children[index].streak.min(20);
        let delay = self
            .settings
            .backoff
            .saturating_mul(1u32 << streak)
            .min(self.settings.max_backoff);
        if self.settings.jitter == 0.0 || delay.is_zero() {
            return delay;
        }
        let roll = (self.next_random() >> 11) as f64 / (1u64 << 53) as f64;
        let factor = 1.0 - self.settings.jitter * roll;
        Duration::try_from_secs_f64(delay.as_secs_f64() * factor).map_or(delay, |d| d.min(delay))
    }

    /// SplitMix64: a seeded, reproducible sequence.
    fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}
