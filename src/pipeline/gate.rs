//! The reorder window of an ordered pipeline: the source may emit packet `seq` only
//! while `seq < released + window`, where `released` is the first sequence number the
//! sink has not yet delivered (or learned was dropped). So the sink's reorder buffer
//! never holds more than `window` packets.
//!
//! Implementation notes: one producer (the source thread) waits, one consumer (the
//! sink) releases. The waiter publishes itself with a `waiting` flag before its final
//! re-check and the releaser stores `released` before reading the flag, both
//! `SeqCst`, so one of them always sees the other (no lost wake-up). Cancellation
//! wakes the waiter through [`Until::unpark_on_cancel`]. Everything comes from
//! `crate::sync`, so the loom model in `tests/loom_pipeline.rs` checks this file.

use crate::sync::{thread, AtomicBool, AtomicU64, Mutex, Ordering};
use crate::wait::{Interrupted, Until};

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
            .load(Ordering::SeqCst)
            .saturating_add(self.window)
    }

    /// Waits (within `until`) until packet `seq` may be emitted.
    pub(crate) fn wait_for(&self, seq: u64, until: &Until<'_>) -> Result<(), Interrupted> {
        if self.open_for(seq) {
            return Ok(());
        }
        let _wake = until.unpark_on_cancel();
        *self.waiter.lock() = Some(thread::current());
        let result = loop {
            self.waiting.store(true, Ordering::SeqCst);
            if self.open_for(seq) {
                break Ok(());
            }
            if let Err(stop) = until.park() {
                break Err(stop);
            }
        };
        self.waiting.store(false, Ordering::SeqCst);
        result
    }

    /// Records that every packet below `next` has left the reorder buffer, waking the
    /// source if it waits.
    pub(crate) fn release(&self, next: u64) {
        self.released.store(next, Ordering::SeqCst);
        if self.waiting.swap(false, Ordering::SeqCst) {
            if let Some(waiter) = self.waiter.lock().as_ref() {
                waiter.unpark();
            }
        }
    }

    /// The first sequence number not yet released.
    #[cfg_attr(not(loom), allow(dead_code))] // read by the loom model
    pub(crate) fn released(&self) -> u64 {
        self.released.load(Ordering::SeqCst)
    }
}
