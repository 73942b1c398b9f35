//! The count of live workers a shutdown waits on, with a deadline.
//!
//! Implementation notes. A worker's last act decrements the count under its mutex and
//! wakes every waiter; `shutdown_timeout` waits on the condvar until the count is low
//! enough or its deadline passes. Only `crate::sync` is used (locks and time), so the
//! race between exiting workers and a waiter whose deadline passes is model-checked
//! under loom (tests/loom_pool.rs), with the model deciding when the deadline passes.

use std::time::Instant;

use crate::sync::{time, Condvar, Mutex};

/// A worker's last act: one fewer alive, and whoever waits for that is woken.
pub(crate) fn exit(alive: &Mutex<usize>, exited: &Condvar) {
    *alive.lock() -= 1;
    exited.notify_all();
}

/// Waits until at most `own` of the `alive` count remain, or `deadline` passes (read
/// through `crate::sync::time`, so a loom model decides when). `true` if they have.
pub(crate) fn wait_exit(
    alive: &Mutex<usize>,
    exited: &Condvar,
    deadline: Instant,
    own: usize,
) -> bool {
    let mut alive = alive.lock();
    while *alive > own {
        if time::now() >= deadline {
            return false;
        }
        exited.wait_until(&mut alive, deadline);
    }
    true
}
