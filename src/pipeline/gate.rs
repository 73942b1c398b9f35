//! The reorder window of an ordered pipeline: the source may emit packet `seq` only
//! while `seq < released + window`, where `released` is the first sequence number the
//! sink has not yet delivered (or learned was dropped). So the sink's reorder buffer
//! never holds more than `window` packets.
//!
//! Implementation notes: one producer (whoever pulls the source: the source thread,
//! or the first-stage worker holding the source's lock) waits, one consumer (the
//! sink) releases, and the waiter re-checks under the crate's spin-then-park policy
//! before it parks. The waiting thread may change between waits, never during one.
//! The waiter sets a `waiting` flag, then re-reads `released`; the
//! releaser writes `released`, then takes the flag. All four are read-modify-writes
//! (`AcqRel`), which always see the latest value of their location, so one side
//! always sees the other: no lost wake-up. (A plain `SeqCst` store/load pair would
//! also do on hardware, but loom models `SeqCst` as `AcqRel` and reports the
//! store-buffering outcome; RMWs are correct under both.) Cancellation
//! wakes the waiter through [`Until::unpark_on_cancel`]. Everything comes from
//! `crate::sync`, so the loom model in `tests/loom_pipeline.rs` checks this file.

use crate::sync::{thread, AtomicBool, AtomicU64, Mutex, Ordering};
use crate::wait::{Backoff, Interrupted, Until};

/// Bounds how far the source may run ahead of the sink in ordered mode.
#[derive(Debug)]
pub(crate) struct ReorderGate {
    window: u64,
    released: AtomicU64,
    waiting: AtomicBool,
    waiter: Mutex<Option<thread::Thread>>,
}

impl ReorderGate {
    /// A gate that lets `window` (at least 1) packets be outstanding.
    pub(crate) fn new(window: u64) -> Self {
        ReorderGate {
            window: window.max(1),
            released: AtomicU64::new(0),
            waiting: AtomicBool::new(false),
            waiter: Mutex::new(None),
        }
    }

    fn open_for(&self, seq: u64) -> bool {
        seq < self
            .released
            .load(Ordering::Acquire)
            .saturating_add(self.window)
    }

    /// As `open_for`, as a read-modify-write: sees the latest release.
    fn open_for_latest(&self, seq: u64) -> bool {
        seq < self
            .released
            .fetch_add(0, Ordering::AcqRel)
            .saturating_add(self.window)
    }

    /// Waits (within `until`) until packet `seq` may be emitted.
    pub(crate) fn wait_for(&self, seq: u64, until: &Until<'_>) -> Result<(), Interrupted> {
        let mut backoff = Backoff::new();
        while !self.open_for(seq) {
            if !backoff.snooze() {
                return self.park_for(seq, until);
            }
        }
        Ok(())
    }

    /// The slow path of [`wait_for`](ReorderGate::wait_for): parks until `seq` may go.
    fn park_for(&self, seq: u64, until: &Until<'_>) -> Result<(), Interrupted> {
        let _wake = until.unpark_on_cancel();
        *self.waiter.lock() = Some(thread::current());
        let result = loop {
            self.waiting.swap(true, Ordering::AcqRel);
            if self.open_for_latest(seq) {
                break Ok(());
            }
            if let Err(stop) = until.park() {
                break Err(stop);
            }
        };
        self.waiting.store(false, Ordering::Release);
        result
    }

    /// Records that every packet below `next` has left the reorder buffer, waking the
    /// source if it waits.
    pub(crate) fn release(&self, next: u64) {
        self.released.swap(next, Ordering::AcqRel);
        if self.waiting.swap(false, Ordering::AcqRel) {
            if let Some(waiter) = self.waiter.lock().as_ref() {
                waiter.unpark();
            }
        }
    }

    /// The first sequence number not yet released.
    #[cfg_attr(not(loom), allow(dead_code))] // read by the loom model
    pub(crate) fn released(&self) -> u64 {
        self.released.load(Ordering::Acquire)
    }
}

/// The gate with its own token, public only in loom builds so that
/// `tests/loom_pipeline.rs` can model-check it. Not part of the API.
#[cfg(loom)]
#[doc(hidden)]
#[derive(Debug)]
pub struct LoomGate {
    gate: ReorderGate,
    token: crate::cancel::CancelToken,
}

#[cfg(loom)]
#[allow(missing_docs)]
impl LoomGate {
    pub fn new(window: u64) -> Self {
        LoomGate {
            gate: ReorderGate::new(window),
            token: crate::cancel::CancelToken::new(),
        }
    }

    /// `true` once `seq` may go, `false` if cancelled first.
    pub fn wait_for(&self, seq: u64) -> bool {
        self.gate
            .wait_for(seq, &Until::cancellable(&self.token))
            .is_ok()
    }

    /// A gate whose run stops after `timeout` (a token with a deadline, as
    /// `run_timeout` makes). Under loom the deadline passes only when a model thread
    /// calls `corral::__loom_pass_every_deadline`: no wall clock is read.
    pub fn with_timeout(window: u64, timeout: std::time::Duration) -> Self {
        LoomGate {
            gate: ReorderGate::new(window),
            token: crate::cancel::CancelToken::with_timeout(timeout),
        }
    }

    pub fn release(&self, next: u64) {
        self.gate.release(next);
    }

    pub fn released(&self) -> u64 {
        self.gate.released()
    }

    pub fn cancel(&self) {
        self.token.cancel();
    }
}
