//! What `wait_idle` waits for: every task accepted before the call, finished.
//!
//! Implementation notes. Tasks are counted in two epochs, as read-copy-update counts
//! readers. A submit reads the current epoch, counts the task `entered` in it (one
//! relaxed add on a line only submitters write) and tags its job with it; whoever
//! ends the task (a worker, a refusal, an eviction, a drain, a run on the caller)
//! counts it finished in that same epoch: a worker in its own slot (a store), the
//! cold paths in `left`. A waiter needs one *grace period* that began after its call:
//! wait until the other epoch has drained (stragglers that read the epoch before an
//! earlier flip), flip the epoch, wait until the old one has drained. Every submit
//! that returned before the call counted its task in one of the two, and new tasks go
//! to the new epoch, so the wait ends however busy the submitters keep the pool.
//! One waiter at a time drives a grace period; waiters that arrive meanwhile need the
//! next one (the running one may have flipped before they came). An epoch has
//! drained when its finished count, read first, reaches its entered count, read
//! second: each finish is of a task whose entry happened before it, so equal counts
//! mean the same tasks. Finishing threads wake waiters (a relaxed load of `waiters`
//! when nobody waits); a wake lost to that race is made good by a re-check tick.
//! Loom models the waiter against a finish and a racing submit (tests/loom_pool.rs).

use std::time::Duration;

use crate::sync::{time, AtomicU64, AtomicUsize, Condvar, Mutex, Ordering};
use crate::wait::{Interrupted, Until};

/// How soon a waiter re-checks counts a finishing thread may have failed to wake it
/// for; doubled on each re-check up to [`MAX_TICK`]. A wake is lost only to a finish
/// racing the waiter's arrival (later finishes see it waiting), so early re-checks
/// matter and late ones hardly.
const TICK: Duration = Duration::from_millis(1);
const MAX_TICK: Duration = Duration::from_millis(64);

/// Written by every submit: kept off the lines workers write.
#[derive(Default)]
#[repr(align(128))]
struct Entered {
    epoch: AtomicUsize,
    count: [AtomicU64; 2],
}

#[derive(Default)]
struct Gate {
    /// A waiter is running a grace period.
    driving: bool,
    /// Grace periods completed.
    periods: u64,
}

pub(crate) struct Idle {
    entered: Entered,
    /// Tasks of each epoch that ended off the workers (refused, evicted, shed,
    /// drained, run by their submitter).
    left: [AtomicU64; 2],
    /// Threads inside `wait`: finishing threads wake them only then.
    waiters: AtomicUsize,
    gate: Mutex<Gate>,
    changed: Condvar,
}

/// Counts a waiter while it waits.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Idle {
    pub(crate) fn new() -> Self {
        Idle {
            entered: Entered::default(),
            left: Default::default(),
            waiters: AtomicUsize::new(0),
            gate: Mutex::new(Gate::default()),
            changed: Condvar::new(),
        }
    }

    /// Counts a task about to be queued; returns its epoch (tag its job with it).
    #[inline(always)]
    pub(crate) fn enter(&self) -> usize {
        // Always 0 or 1; the mask spares a bounds check.
        let epoch = self.entered.epoch.load(Ordering::Relaxed) & 1;
        self.entered.count[epoch].fetch_add(1, Ordering::Relaxed);
        epoch
    }

    /// Counts a task of `epoch` that ended anywhere but on a worker.
    pub(crate) fn leave(&self, epoch: usize) {
        if let Some(left) = self.left.get(epoch) {
            left.fetch_add(1, Ordering::Release);
            self.wake();
        }
    }

    /// After a task ended: wakes the waiters, if any.
    #[inline(always)]
    pub(crate) fn wake(&self) {
        if self.waiters.load(Ordering::Relaxed) != 0 {
            self.wake_now();
        }
    }

    /// Wakes every waiter (also from a token's `on_cancel`). Under the gate's lock, so
    /// a waiter between its check and its wait cannot miss it.
    #[cold]
    pub(crate) fn wake_now(&self) {
        let _gate = self.gate.lock();
        self.changed.notify_all();
    }

    /// Whether every task counted in `epoch` has ended. `finished(epoch)` sums the
    /// workers' counts (acquire).
    fn drained(&self, epoch: usize, finished: &dyn Fn(usize) -> u64) -> bool {
        let done = finished(epoch) + self.left[epoch].load(Ordering::Acquire);
        done >= self.entered.count[epoch].load(Ordering::Acquire)
    }

    /// Whether no accepted task is unfinished right now.
    pub(crate) fn is_idle(&self, finished: &dyn Fn(usize) -> u64) -> bool {
        self.drained(0, finished) && self.drained(1, finished)
    }

    /// Waits until every task counted before this call has ended, or `until` stops
    /// the wait. Keep a registration that calls [`wake_now`](Idle::wake_now) on the
    /// token's cancel while this runs.
    pub(crate) fn wait(
        &self,
        until: &Until<'_>,
        finished: &dyn Fn(usize) -> u64,
    ) -> Result<(), Interrupted> {
        // Nothing unfinished at all: no grace period needed, whatever the bound.
        if self.is_idle(finished) {
            return Ok(());
        }
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiters);
        let mut gate = self.gate.lock();
        let target = gate.periods + if gate.driving { 2 } else { 1 };
        loop {
            if gate.periods >= target {
                return Ok(());
            }
            until.check()?;
            if gate.driving {
                match until.limit() {
                    Some(limit) => {
                        self.changed.wait_until(&mut gate, limit);
                    }
                    None => self.changed.wait(&mut gate),
                }
                continue;
            }
            gate.driving = true;
            drop(gate);
            let period = self.grace_period(until, finished);
            gate = self.gate.lock();
            gate.driving = false;
            if period.is_ok() {
                gate.periods += 1;
            }
            // Done, or given up: either way another waiter may go on.
            self.changed.notify_all();
            period?;
        }
    }

    /// One grace period, run by the one driving waiter.
    fn grace_period(
        &self,
        until: &Until<'_>,
        finished: &dyn Fn(usize) -> u64,
    ) -> Result<(), Interrupted> {
        // Only the driver writes the epoch.
        let old = self.entered.epoch.load(Ordering::Relaxed);
        self.until_drained(old ^ 1, until, finished)?;
        self.entered.epoch.store(old ^ 1, Ordering::Relaxed);
        self.until_drained(old, until, finished)
    }

    fn until_drained(
        &self,
        epoch: usize,
        until: &Until<'_>,
        finished: &dyn Fn(usize) -> u64,
    ) -> Result<(), Interrupted> {
        let mut tick = TICK;
        loop {
            if self.drained(epoch, finished) {
                return Ok(());
            }
            until.check()?;
            let mut gate = self.gate.lock();
            if self.drained(epoch, finished) {
                return Ok(());
            }
            let recheck = time::deadline_after(time::now(), tick);
            let wake = until.limit().map_or(recheck, |limit| limit.min(recheck));
            self.changed.wait_until(&mut gate, wake);
            tick = (tick * 2).min(MAX_TICK);
        }
    }
}
