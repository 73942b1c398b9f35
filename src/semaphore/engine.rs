//! The semaphore engine: a permit counter in one atomic word, plus a FIFO wait queue
//! under a lock. [`Semaphore`](crate::Semaphore) is a thin wrapper over it that hands
//! out RAII permits.
//!
//! Implementation notes.
//!
//! * **One word for the fast path.** `state` holds the available permits shifted left
//!   by [`SHIFT`] and four flag bits. An uncontended `try_acquire` is one load and one
//!   compare-and-swap; an uncontended release is the same. The flags say when a side
//!   must take the slow path instead: `QUEUED` and `DEBT` stop the release fast path,
//!   `FAIR` and `CLOSED` the acquire fast path. Flags change only under the lock;
//!   permits move by CAS, so a fast-path thread never misses a flag that was set
//!   before its CAS.
//! * **Capacity and debt** ([`Engine::set_capacity`]): a held permit is never revoked.
//! * **Fairness** ([`FAIR_AFTER`]): waiters are served in arrival order; newcomers may
//!   barge until the head has waited too long. **Waking** ([`Engine::serve`]): a
//!   release wakes the head once its request fits. **Spinning**: the crate's one
//!   spin-then-park policy, [`Backoff`].
//! * Everything imports from `crate::sync`, so `--cfg loom` model-checks this file.
//!   Under loom there is no time: the fairness bound counts failed wake-ups instead.

use std::collections::VecDeque;
use std::time::Instant;

#[cfg(not(loom))]
use std::time::Duration;

use crate::cancel::CancelReason;
use crate::observe::event;
use crate::sync::thread::{self, Thread};
use crate::sync::{Arc, AtomicUsize, Mutex, MutexGuard, Ordering};
use crate::wait::{Backoff, Interrupted, Until};

/// Somebody is queued: releases take the slow path to wake them.
const QUEUED: usize = 1;
/// A shrink is not yet paid off: releases take the slow path to pay it.
const DEBT: usize = 1 << 1;
/// Hand-off mode: acquires take the slow path and queue behind the head.
const FAIR: usize = 1 << 2;
/// Closed: acquires take the slow path and fail.
const CLOSED: usize = 1 << 3;
const FLAGS: usize = QUEUED | DEBT | FAIR | CLOSED;
const SHIFT: u32 = 4;

/// The most permits a semaphore can manage (one spare bit above the counter keeps the
/// arithmetic clear of overflow).
pub(crate) const MAX_PERMITS: usize = usize::MAX >> (SHIFT + 1);

/// How long the head of the queue may be overtaken by newcomers before the semaphore
/// switches to hand-off mode for it.
///
/// Queued waiters are served strictly in arrival order: only the head of the queue may
/// take permits, so a large request at the head blocks smaller ones behind it. A
/// *newcomer* (an acquire that finds enough permits free) may take them ahead of the
/// queue ("barging"), which is what keeps a busy semaphore from paying a sleep and a
/// wake-up per release. Barging ends once the head has been the head for this long
/// without being served: it then sets `FAIR`, which sends every newcomer into the
/// queue and makes releasers hand permits directly to the head, in order, until that
/// head is served. The next head starts its own clock.
#[cfg(not(loom))]
pub(crate) const FAIR_AFTER: Duration = Duration::from_millis(1);

/// Under loom, the head counts as starved after this many failed wake-ups.
#[cfg(loom)]
const AGE_FAILS: u32 = 2;

const PENDING: usize = 0;
const GRANTED: usize = 1;
const REFUSED_CLOSED: usize = 2;
const REFUSED_TOO_MANY: usize = 3;

/// Why an acquire failed, before the wrapper turns it into a public error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    Closed,
    TooMany { requested: usize, capacity: usize },
    NoPermits,
    TimedOut,
    Cancelled(CancelReason),
}

impl From<Interrupted> for Refusal {
    fn from(stop: Interrupted) -> Self {
        match stop {
            Interrupted::TimedOut => Refusal::TimedOut,
            Interrupted::Cancelled(reason) => Refusal::Cancelled(reason),
        }
    }
}

/// A parked acquire. Shared between the queue and the waiting thread.
#[derive(Debug)]
struct Waiter {
    need: usize,
    thread: Thread,
    /// `PENDING` while queued; set (under the lock) when the waiter is removed by
    /// someone else: granted by hand-off, closed, or shrunk out.
    outcome: AtomicUsize,
    /// The capacity that refused it, for `REFUSED_TOO_MANY`.
    capacity: AtomicUsize,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    waiter: Arc<Waiter>,
    /// Unparked and not yet parked again: releases need not unpark it.
    notified: bool,
    /// Whether the waiter has run as the head yet (and so started its fairness
    /// clock). A new head that has not is woken once, so its clock starts even when
    /// its request does not fit yet.
    seen_as_head: bool,
    /// When this entry was first seen at the head of the queue.
    head_since: Option<Instant>,
    /// Failed attempts as head (the loom stand-in for time).
    #[cfg_attr(not(loom), allow(dead_code))]
    fails: u32,
}

#[derive(Debug)]
struct Inner {
    capacity: usize,
    debt: usize,
    closed: bool,
    fair: bool,
    queue: VecDeque<Entry>,
    next_id: u64,
}

/// Plain counters, updated with relaxed atomics.
#[derive(Debug, Default)]
struct Counters {
    waited: AtomicUsize,
    timed_out: AtomicUsize,
    cancelled: AtomicUsize,
    too_many: AtomicUsize,
    handoffs: AtomicUsize,
}

/// A point-in-time view for `Semaphore::stats`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Snapshot {
    pub(crate) capacity: usize,
    pub(crate) available: usize,
    pub(crate) debt: usize,
    pub(crate) waiting: usize,
    pub(crate) closed: bool,
    pub(crate) waited: usize,
    pub(crate) timed_out: usize,
    pub(crate) cancelled: usize,
    pub(crate) too_many: usize,
    pub(crate) handoffs: usize,
}

/// The semaphore's state machine, described at the top of this file.
#[derive(Debug)]
pub(crate) struct Engine {
    state: AtomicUsize,
    inner: Mutex<Inner>,
    /// Mirrors of `Inner` fields for lock-free reads (written under the lock).
    capacity: AtomicUsize,
    debt: AtomicUsize,
    waiting: AtomicUsize,
    counters: Counters,
    /// The semaphore's name, shown to the thread dump by its waiters.
    name: Option<std::sync::Arc<str>>,
    /// Gauges of the available permits and of the waiters (feature `metrics`).
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))] // read by `publish`
    gauges: [event::Gauge; 2],
}

fn available_in(state: usize) -> usize {
    state >> SHIFT
}

impl Engine {
    /// A semaphore engine managing `permits` (at most [`MAX_PERMITS`], checked by the
    /// caller).
    /// `name` is for the thread dump, events and metrics; the gauges are registered
    /// here, once, under it.
    pub(crate) fn new(permits: usize, name: Option<std::sync::Arc<str>>) -> Self {
        debug_assert!(permits <= MAX_PERMITS);
        let engine = Engine {
            state: AtomicUsize::new(permits << SHIFT),
            inner: Mutex::new(Inner {
                capacity: permits,
                debt: 0,
                closed: false,
                fair: false,
                queue: VecDeque::new(),
                next_id: 0,
            }),
            capacity: AtomicUsize::new(permits),
            debt: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            counters: Counters::default(),
            gauges: Self::gauges(name.as_deref()),
            name,
        };
        engine.publish();
        engine
    }

    fn gauges(name: Option<&str>) -> [event::Gauge; 2] {
        [
            event::Gauge::new("corral_semaphore_available", "Semaphore", name),
            event::Gauge::new("corral_semaphore_waiters", "Semaphore", name),
        ]
    }

    /// Sets the gauges (feature `metrics`; nothing otherwise): after every acquire
    /// and release.
    #[inline]
    fn publish(&self) {
        #[cfg(feature = "metrics")]
        {
            let available = available_in(self.state.load(Ordering::Relaxed));
            self.gauges[0].set(available as f64);
            self.gauges[1].set(self.waiting.load(Ordering::Relaxed) as f64);
        }
    }

    /// The semaphore's name, if it has one.
    pub(crate) fn name(&self) -> Option<&std::sync::Arc<str>> {
        self.name.as_ref()
    }

    /// Permits free right now.
    #[inline]
    pub(crate) fn available(&self) -> usize {
        available_in(self.state.load(Ordering::Acquire))
    }

    /// The total the semaphore manages right now.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity.load(Ordering::Relaxed)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state.load(Ordering::Acquire) & CLOSED != 0
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let c = &self.counters;
        let state = self.state.load(Ordering::Acquire);
        Snapshot {
            capacity: self.capacity.load(Ordering::Relaxed),
            available: available_in(state),
            debt: self.debt.load(Ordering::Relaxed),
            waiting: self.waiting.load(Ordering::Relaxed),
            closed: state & CLOSED != 0,
            waited: c.waited.load(Ordering::Relaxed),
            timed_out: c.timed_out.load(Ordering::Relaxed),
            cancelled: c.cancelled.load(Ordering::Relaxed),
            too_many: c.too_many.load(Ordering::Relaxed),
            handoffs: c.handoffs.load(Ordering::Relaxed),
        }
    }

    /// A newcomer's fast path: takes `n` free permits unless hand-off mode or a close
    /// sends it to the slow path.
    #[inline]
    fn try_fast(&self, n: usize) -> bool {
        self.take_unless(n, FAIR | CLOSED)
    }

    /// Takes `n` permits if they are free, ignoring the flags: for the queue head and
    /// for hand-offs, which have the right to them.
    #[inline]
    fn grab(&self, n: usize) -> bool {
        self.take_unless(n, 0)
    }

    /// Takes `n` free permits by compare-and-swap, unless a flag in `blocked_by` is set.
    #[inline]
    fn take_unless(&self, n: usize, blocked_by: usize) -> bool {
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            if state & blocked_by != 0 || available_in(state) < n {
                return false;
            }
            match self.state.compare_exchange_weak(
                state,
                state - (n << SHIFT),
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => state = actual,
            }
        }
    }

    /// Never blocks. `NoPermits` when they are not free now (or the queue has priority).
    #[inline]
    pub(crate) fn try_acquire(&self, n: usize) -> Result<(), Refusal> {
        let taken = self.try_acquire_inner(n);
        self.publish();
        taken
    }

    #[inline]
    fn try_acquire_inner(&self, n: usize) -> Result<(), Refusal> {
        if n == 0 {
            return if self.is_closed() {
                Err(Refusal::Closed)
            } else {
                Ok(())
            };
        }
        if self.try_fast(n) {
            return Ok(());
        }
        if self.is_closed() {
            return Err(Refusal::Closed);
        }
        let capacity = self.capacity();
        if n > capacity {
            self.counters.too_many.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::TooMany {
                requested: n,
                capacity,
            });
        }
        Err(Refusal::NoPermits)
    }

    /// Blocks (within `until`) until `n` permits are taken.
    #[inline]
    #[track_caller]
    pub(crate) fn acquire(&self, n: usize, until: &Until<'_>) -> Result<(), Refusal> {
        let acquired = self.acquire_inner(n, until);
        self.publish();
        acquired
    }

    #[inline]
    #[track_caller]
    fn acquire_inner(&self, n: usize, until: &Until<'_>) -> Result<(), Refusal> {
        match self.try_acquire_inner(n) {
            Ok(()) => return Ok(()),
            Err(Refusal::NoPermits) => {}
            Err(refusal) => return Err(refusal),
        }
        // A short spin while nobody is queued: a holder is likely to release soon, and
        // a park plus a wake-up costs microseconds.
        let mut backoff = Backoff::new();
        while backoff.snooze() {
            let state = self.state.load(Ordering::Relaxed);
            if state & (QUEUED | FAIR | CLOSED) != 0 {
                break;
            }
            if self.try_fast(n) {
                return Ok(());
            }
        }
        self.acquire_slow(n, until)
    }

    #[track_caller]
    fn acquire_slow(&self, n: usize, until: &Until<'_>) -> Result<(), Refusal> {
        let _wake = until.unpark_on_cancel();
        let mut inner = self.inner.lock();
        if inner.closed {
            return Err(Refusal::Closed);
        }
        if n > inner.capacity {
            self.counters.too_many.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::TooMany {
                requested: n,
                capacity: inner.capacity,
            });
        }
        if !inner.fair && self.grab(n) {
            return Ok(());
        }
        if let Err(stop) = until.check() {
            return Err(self.count_stop(stop));
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let waiter = Arc::new(Waiter {
            need: n,
            thread: thread::current(),
            outcome: AtomicUsize::new(PENDING),
            capacity: AtomicUsize::new(0),
        });
        inner.queue.push_back(Entry {
            id,
            waiter: Arc::clone(&waiter),
            notified: false,
            seen_as_head: false,
            head_since: None,
            fails: 0,
        });
        self.counters.waited.fetch_add(1, Ordering::Relaxed);
        // Sets QUEUED; a release that slipped in before it is seen by `serve`.
        self.serve(&mut inner);
        let _dump = crate::observe::waiting_for_permit(self.name.as_ref());

        loop {
            if let Some(done) = self.outcome(&waiter) {
                return done;
            }
            let mut limit = until.limit();
            let mut head = false;
            if let Some(pos) = inner.queue.iter().position(|e| e.id == id) {
                if pos == 0 && !inner.fair {
                    head = true;
                    inner.queue[0].seen_as_head = true;
                    if self.grab(n) {
                        self.pop_head(&mut inner);
                        return Ok(());
                    }
                    match self.starved(&mut inner.queue[0]) {
                        None => {
                            inner.fair = true;
                            self.sync_flags(&inner);
                            head = false;
                        }
                        Some(fair_at) => limit = earliest(limit, fair_at),
                    }
                }
                inner.queue[pos].notified = false;
            }
            drop(inner);

            let mut stop = until.check().err();
            if stop.is_none() {
                thread::park_until(limit);
                stop = until.check().err();
            }
            // Woken as the head: try the counter for a moment before taking the lock,
            // so that a busy release/acquire loop does not turn into a hand-off.
            let mut got = false;
            if head && stop.is_none() {
                let mut backoff = Backoff::new();
                while backoff.snooze() {
                    let state = self.state.load(Ordering::Relaxed);
                    if state & (FAIR | CLOSED) != 0 {
                        break;
                    }
                    if available_in(state) >= n && self.grab(n) {
                        got = true;
                        break;
                    }
                }
            }

            inner = self.inner.lock();
            if got {
                if waiter.outcome.load(Ordering::Acquire) == PENDING {
                    self.pop_head(&mut inner);
                    return Ok(());
                }
                // Closed or shrunk out while we spun: give the permits back.
                self.release_locked(&mut inner, n);
                return self.outcome(&waiter).unwrap_or(Err(Refusal::Closed));
            }
            if let Some(stop) = stop {
                if let Some(done) = self.outcome(&waiter) {
                    return done;
                }
                if let Some(pos) = inner.queue.iter().position(|e| e.id == id) {
                    inner.queue.remove(pos);
                    if pos == 0 {
                        inner.fair = false;
                    }
                }
                // The waiters behind us may fit now.
                self.serve(&mut inner);
                return Err(self.count_stop(stop));
            }
        }
    }

    /// The head's fairness clock: `None` once it has waited past the bound, else when
    /// it will have.
    fn starved(&self, entry: &mut Entry) -> Option<Option<Instant>> {
        #[cfg(not(loom))]
        {
            let now = crate::sync::time::now();
            let since = *entry.head_since.get_or_insert(now);
            let fair_at = crate::sync::time::deadline_after(since, FAIR_AFTER);
            if now >= fair_at {
                None
            } else {
                Some(Some(fair_at))
            }
        }
        #[cfg(loom)]
        {
            let _ = entry.head_since;
            entry.fails += 1;
            if entry.fails >= AGE_FAILS {
                None
            } else {
                Some(None)
            }
        }
    }

    fn count_stop(&self, stop: Interrupted) -> Refusal {
        let counter = match stop {
            Interrupted::TimedOut => &self.counters.timed_out,
            Interrupted::Cancelled(_) => &self.counters.cancelled,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        stop.into()
    }

    /// The result decided for a waiter by someone else, if any.
    fn outcome(&self, waiter: &Waiter) -> Option<Result<(), Refusal>> {
        match waiter.outcome.load(Ordering::Acquire) {
            PENDING => None,
            GRANTED => Some(Ok(())),
            REFUSED_CLOSED => Some(Err(Refusal::Closed)),
            _ => Some(Err(Refusal::TooMany {
                requested: waiter.need,
                capacity: waiter.capacity.load(Ordering::Relaxed),
            })),
        }
    }

    /// The head took its permits itself: remove it and serve the next one.
    fn pop_head(&self, inner: &mut MutexGuard<'_, Inner>) {
        inner.queue.pop_front();
        inner.fair = false;
        self.serve(inner);
    }

    /// Gives the queue what it can have now, then brings the flags up to date. Called
    /// under the lock after anything that adds permits or changes the queue's head.
    ///
    /// A release that finds `QUEUED` takes the lock and comes here, which wakes the
    /// head if its request now fits (once: `notified` suppresses repeated unparks while
    /// it is awake). A waiter that has just become the head is woken once even if it
    /// does not fit, so that it starts its fairness clock (and parks with that clock's
    /// deadline); otherwise a large head behind a departed one could sleep while
    /// newcomers barge forever. A woken head spins briefly on the counter before
    /// parking again. A waiter that leaves the queue (timeout, cancel) runs this too,
    /// so when a head gives up, the waiters behind it that now fit are woken at once.
    fn serve(&self, guard: &mut MutexGuard<'_, Inner>) {
        let inner: &mut Inner = guard;
        while let Some(head) = inner.queue.front_mut() {
            let need = head.waiter.need;
            if inner.fair {
                if !self.grab(need) {
                    break;
                }
                inner.fair = false;
                let Some(entry) = inner.queue.pop_front() else {
                    break;
                };
                entry.waiter.outcome.store(GRANTED, Ordering::Release);
                entry.waiter.thread.unpark();
                self.counters.handoffs.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if !head.notified && (!head.seen_as_head || self.available() >= need) {
                head.notified = true;
                head.waiter.thread.unpark();
            }
            break;
        }
        self.sync_flags(inner);
    }

    /// Makes the flag bits and the lock-free mirrors match `inner`.
    fn sync_flags(&self, inner: &Inner) {
        let mut want = 0;
        if !inner.queue.is_empty() {
            want |= QUEUED;
        }
        if inner.debt > 0 {
            want |= DEBT;
        }
        if inner.fair {
            want |= FAIR;
        }
        if inner.closed {
            want |= CLOSED;
        }
        let have = self.state.load(Ordering::Relaxed) & FLAGS;
        if want & !have != 0 {
            self.state.fetch_or(want & !have, Ordering::AcqRel);
        }
        if have & !want != 0 {
            self.state.fetch_and(!(have & !want), Ordering::AcqRel);
        }
        self.capacity.store(inner.capacity, Ordering::Relaxed);
        self.debt.store(inner.debt, Ordering::Relaxed);
        self.waiting.store(inner.queue.len(), Ordering::Relaxed);
    }

    /// Returns `n` held permits.
    #[inline]
    pub(crate) fn release(&self, n: usize) {
        self.release_inner(n);
        self.publish();
    }

    #[inline]
    fn release_inner(&self, n: usize) {
        if n == 0 {
            return;
        }
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            if state & (QUEUED | DEBT) != 0 {
                let mut inner = self.inner.lock();
                self.release_locked(&mut inner, n);
                return;
            }
            match self.state.compare_exchange_weak(
                state,
                state + (n << SHIFT),
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => state = actual,
            }
        }
    }

    fn release_locked(&self, inner: &mut MutexGuard<'_, Inner>, n: usize) {
        let paid = n.min(inner.debt);
        inner.debt -= paid;
        self.make_available(n - paid);
        self.serve(inner);
    }

    fn make_available(&self, n: usize) {
        if n > 0 {
            self.state.fetch_add(n << SHIFT, Ordering::Release);
        }
    }

    /// `n` held permits leave the semaphore for good: the capacity shrinks by `n`.
    pub(crate) fn forget(&self, n: usize) {
        if n == 0 {
            return;
        }
        let mut inner = self.inner.lock();
        let from_capacity = n.min(inner.capacity);
        inner.capacity -= from_capacity;
        // If the capacity was already below the permits in use, the rest pays debt.
        inner.debt = inner.debt.saturating_sub(n - from_capacity);
        self.refuse_oversized(&mut inner);
        self.serve(&mut inner);
    }

    /// Adds `n` permits to the capacity (paying any shrink debt first).
    /// `Err(max)` if the capacity would pass [`MAX_PERMITS`].
    pub(crate) fn add_permits(&self, n: usize) -> Result<(), usize> {
        let mut inner = self.inner.lock();
        let capacity = inner.capacity.checked_add(n).filter(|&c| c <= MAX_PERMITS);
        let Some(capacity) = capacity else {
            return Err(inner.capacity);
        };
        inner.capacity = capacity;
        let paid = n.min(inner.debt);
        inner.debt -= paid;
        self.make_available(n - paid);
        self.serve(&mut inner);
        Ok(())
    }

    /// Sets the capacity to `capacity` (at most [`MAX_PERMITS`], checked by the caller).
    /// Returns the previous capacity.
    ///
    /// `capacity` is the total the semaphore manages. With `held` the permits out in
    /// guards, `available + held == capacity + debt`, and `debt > 0` implies
    /// `available == 0`. Shrinking takes what it can from the available permits and
    /// records the rest as debt, which releases pay off before they make permits
    /// available again; a held permit is never revoked.
    pub(crate) fn set_capacity(&self, capacity: usize) -> usize {
        let mut inner = self.inner.lock();
        let old = inner.capacity;
        if capacity >= old {
            let grow = capacity - old;
            let paid = grow.min(inner.debt);
            inner.debt -= paid;
            self.make_available(grow - paid);
        } else {
            let shrink = old - capacity;
            // Take what is free now; the rest becomes debt. DEBT goes up first so no
            // release can slip permits past us on its fast path.
            self.state.fetch_or(DEBT, Ordering::AcqRel);
            let mut state = self.state.load(Ordering::Relaxed);
            let taken = loop {
                let take = available_in(state).min(shrink);
                match self.state.compare_exchange_weak(
                    state,
                    state - (take << SHIFT),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => break take,
                    Err(actual) => state = actual,
                }
            };
            inner.debt += shrink - taken;
        }
        inner.capacity = capacity;
        self.refuse_oversized(&mut inner);
        self.serve(&mut inner);
        old
    }

    /// Wakes, with `TooMany`, every waiter whose request exceeds the capacity.
    fn refuse_oversized(&self, inner: &mut MutexGuard<'_, Inner>) {
        let capacity = inner.capacity;
        if !inner.queue.iter().any(|e| e.waiter.need > capacity) {
            return;
        }
        if inner
            .queue
            .front()
            .is_some_and(|e| e.waiter.need > capacity)
        {
            inner.fair = false;
        }
        let mut refused = 0;
        inner.queue.retain(|e| {
            if e.waiter.need <= capacity {
                return true;
            }
            e.waiter.capacity.store(capacity, Ordering::Relaxed);
            e.waiter.outcome.store(REFUSED_TOO_MANY, Ordering::Release);
            e.waiter.thread.unpark();
            refused += 1;
            false
        });
        self.counters.too_many.fetch_add(refused, Ordering::Relaxed);
    }

    /// Closes: every queued and later acquire fails with `Closed`. Held permits are
    /// still returned normally. Returns whether this call closed it.
    pub(crate) fn close(&self) -> bool {
        let mut inner = self.inner.lock();
        if inner.closed {
            return false;
        }
        inner.closed = true;
        inner.fair = false;
        for entry in inner.queue.drain(..) {
            entry
                .waiter
                .outcome
                .store(REFUSED_CLOSED, Ordering::Release);
            entry.waiter.thread.unpark();
        }
        self.sync_flags(&inner);
        true
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn flags(engine: &Engine) -> usize {
        engine.state.load(Ordering::SeqCst) & FLAGS
    }

    #[test]
    fn uncontended_use_touches_no_flag() {
        let engine = Engine::new(3, None);
        engine.try_acquire(2).unwrap();
        engine.release(2);
        assert_eq!(flags(&engine), 0);
        assert_eq!(engine.available(), 3);
    }

    #[test]
    fn a_shrink_below_the_permits_in_use_is_debt_paid_by_releases() {
        let engine = Engine::new(4, None);
        engine.try_acquire(3).unwrap();
        assert_eq!(engine.set_capacity(2), 4);
        // One free permit was taken at once; one more is owed.
        assert_eq!(engine.inner.lock().debt, 1);
        assert_eq!(flags(&engine), DEBT);
        assert_eq!(engine.try_acquire(1), Err(Refusal::NoPermits));
        engine.release(1);
        assert_eq!((engine.available(), flags(&engine)), (0, 0));
        engine.release(2);
        assert_eq!(engine.available(), 2);
    }

    #[test]
    fn forgetting_more_than_the_capacity_pays_debt() {
        let engine = Engine::new(3, None);
        engine.try_acquire(3).unwrap();
        engine.set_capacity(0);
        assert_eq!(engine.inner.lock().debt, 3);
        engine.forget(2);
        let inner = engine.inner.lock();
        assert_eq!((inner.capacity, inner.debt), (0, 1));
    }

    #[test]
    fn fair_mode_blocks_the_fast_path_and_hands_off_on_release() {
        let engine = Engine::new(2, None);
        engine.try_acquire(1).unwrap();
        let me = Arc::new(Waiter {
            need: 2,
            thread: thread::current(),
            outcome: AtomicUsize::new(PENDING),
            capacity: AtomicUsize::new(0),
        });
        {
            let mut inner = engine.inner.lock();
            inner.queue.push_back(Entry {
                id: 0,
                waiter: Arc::clone(&me),
                notified: true,
                seen_as_head: true,
                head_since: None,
                fails: 0,
            });
            inner.fair = true;
            engine.sync_flags(&inner);
        }
        assert_eq!(flags(&engine), QUEUED | FAIR);
        // A permit is free, but a newcomer may not take it in hand-off mode.
        assert_eq!(engine.available(), 1);
        assert_eq!(engine.try_acquire(1), Err(Refusal::NoPermits));
        engine.release(1);
        // Both permits went straight to the queued waiter, not back to the counter.
        assert_eq!(me.outcome.load(Ordering::SeqCst), GRANTED);
        assert_eq!((engine.available(), flags(&engine)), (0, 0));
        assert_eq!(engine.snapshot().handoffs, 1);
    }
}
