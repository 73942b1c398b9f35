//! A chunk's input, taken at most once: by the worker that runs the chunk's job, or
//! by `map`'s caller when the chunk is due before any worker started it.
//!
//! Implementation notes. The input sits in an `Option` under a mutex shared by the
//! caller's [`Claim`] and the job's [`ClaimGuard`]; whoever takes it first runs it,
//! the other finds `None`. The guard empties the slot when the job is dropped unrun
//! (evicted, discarded, cancelled), so the caller never runs a chunk the pool has
//! reported as dropped or never run. Only `crate::sync` is used: the race between the
//! two takers is model-checked under loom (tests/loom_pool.rs).

use crate::sync::{Arc, Mutex};

/// The caller's side of a chunk's input.
pub(crate) struct Claim<T>(Arc<Mutex<Option<T>>>);

/// The job's side: takes the input to run it, and empties the slot when dropped.
pub(crate) struct ClaimGuard<T>(Arc<Mutex<Option<T>>>);

/// A new input slot, shared by the caller's claim and the job's guard.
pub(crate) fn claim<T>(input: T) -> (Claim<T>, ClaimGuard<T>) {
    let slot = Arc::new(Mutex::new(Some(input)));
    (Claim(Arc::clone(&slot)), ClaimGuard(slot))
}

impl<T> Claim<T> {
    /// The input, unless the job took it or was dropped unrun.
    pub(crate) fn take(&self) -> Option<T> {
        self.0.lock().take()
    }
}

impl<T> ClaimGuard<T> {
    /// The input, unless the caller took it first.
    pub(crate) fn take(&self) -> Option<T> {
        self.0.lock().take()
    }
}

impl<T> Drop for ClaimGuard<T> {
    fn drop(&mut self) {
        drop(self.0.lock().take());
    }
}
