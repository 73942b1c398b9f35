//! What a supervisor tells `tracing` and `metrics` (features of those names): the
//! moments its event hook sees, emitted on the monitor thread right before the hook.
//! Without the features every handle is a no-op and no event is compiled.

use crate::observe::event::{self, emit};
use crate::supervisor::report::{EventKind, Exit, SupervisorEvent};

const KIND: &str = "Supervisor";

/// The supervisor's metric handles, registered when it is started.
pub(crate) struct Telemetry {
    restarts: event::Counter,
    exits: event::Counter,
    running: event::Gauge,
}

impl Telemetry {
    pub(crate) fn new(name: Option<&str>) -> Self {
        Telemetry {
            restarts: event::Counter::new("corral_supervisor_restarts_total", KIND, name),
            exits: event::Counter::new("corral_supervisor_exits_total", KIND, name),
            running: event::Gauge::new("corral_supervisor_children_running", KIND, name),
        }
    }

    /// Children whose threads are alive (started and not yet joined).
    pub(crate) fn running(&self, children: usize) {
        self.running.set(children as f64);
    }

    /// Counts and emits one event. Formats the child's error or panic: call it inside
    /// the panic boundary.
    pub(crate) fn observe(&self, event: &SupervisorEvent<'_>) {
        let name = event.supervisor;
        match &event.kind {
            EventKind::Started { child } => {
                emit!(
                    debug,
                    KIND,
                    name,
                    "supervisor started a child",
                    child = *child
                );
            }
            EventKind::Exited { child, exit } => {
                self.exits.add(1);
                exited(name, child, exit);
            }
            EventKind::Panicked { child, panic } => {
                self.exits.add(1);
                emit!(
                    warn,
                    KIND,
                    name,
                    "supervised child exited",
                    child = *child,
                    exit = "panicked",
                    error = panic.to_string().as_str(),
                );
            }
            EventKind::BackingOff { child, delay } => emit!(
                debug,
                KIND,
                name,
                "supervisor backing off before a restart",
                child = *child,
                delay_s = delay.as_secs_f64(),
            ),
            EventKind::Restarted { child, restarts } => {
                self.restarts.add(1);
                emit!(
                    info,
                    KIND,
                    name,
                    "supervisor restarted a child",
                    child = *child,
                    attempt = *restarts as u64,
                );
            }
            EventKind::ShutdownOverdue { child, timeout } => emit!(
                warn,
                KIND,
                name,
                "supervised child outlived its shutdown timeout",
                child = *child,
                timeout_s = timeout.as_secs_f64(),
            ),
            EventKind::Removed { child } => {
                emit!(
                    info,
                    KIND,
                    name,
                    "supervisor removed a child",
                    child = *child
                );
            }
            EventKind::IntensityExceeded { child, exit } => emit!(
                error,
                KIND,
                name,
                "supervisor restart intensity exceeded",
                child = *child,
                exit = exit_kind(exit),
                error = error_text(exit).as_str(),
            ),
            EventKind::Stopped { reason } => emit!(
                info,
                KIND,
                name,
                "supervisor stopped",
                reason = reason.to_string().as_str(),
            ),
            // The watchdog emits its own warning.
            EventKind::Stuck { .. } => {}
        }
    }
}

/// A returned child: info on `Ok`, warn on an error.
fn exited(name: Option<&str>, child: &str, exit: &Exit) {
    match exit {
        Exit::Finished => emit!(
            info,
            KIND,
            name,
            "supervised child exited",
            child = child,
            exit = "finished",
        ),
        exit => emit!(
            warn,
            KIND,
            name,
            "supervised child exited",
            child = child,
            exit = exit_kind(exit),
            error = error_text(exit).as_str(),
        ),
    }
}

#[cfg_attr(not(feature = "tracing"), allow(dead_code))]
fn exit_kind(exit: &Exit) -> &'static str {
    match exit {
        Exit::Finished => "finished",
        Exit::Failed(_) => "failed",
        Exit::Panicked(_) => "panicked",
    }
}

/// The error's or the panic's text (user `Display` code).
#[cfg_attr(not(feature = "tracing"), allow(dead_code))]
fn error_text(exit: &Exit) -> String {
    match exit {
        Exit::Finished => String::new(),
        Exit::Failed(error) => error.to_string(),
        Exit::Panicked(panic) => panic.to_string(),
    }
}
