//! The failure/slow-call window: which recent outcomes count, and their totals.
//!
//! Implementation notes. Successes are counted in the stripes (`stripes.rs`); this
//! module keeps what is recorded under the breaker's lock (failures and slow calls)
//! and combines both. All of it runs with the lock held.
//!
//! - **Count window, without a shared index** ([`CountWindow`]), and **time window in
//!   buckets** ([`TimeWindow`]).
//! - **Window time.** Every time here is the engine's window time (engine time, or the
//!   coarse clock for wide `SystemClock` buckets: see `engine.rs`); bucket ids and
//!   `eval_after` are never compared with anything else.
//! - **When must a success look?** [`WindowState::totals`] also returns the window time
//!   from which a plain success could trip the breaker (see there); before it,
//!   successes take no lock at all.

use std::collections::VecDeque;

use super::stripes::{Stripes, BUCKETS};

/// The window rates are computed over, in engine units (window time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WindowKind {
    /// No rate configured: nothing is recorded per call beyond stats.
    None,
    /// The last `n` calls.
    Count(u64),
    /// Buckets of `width` nanoseconds, the last `BUCKETS` of them.
    Time { width: u64 },
}

/// Window totals at one moment.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Totals {
    pub(super) calls: u64,
    pub(super) failures: u64,
    pub(super) slow: u64,
}

/// The window "the last N calls". The index of a call is (successes summed over
/// stripes) + (calls recorded under the lock); failures and slow calls store their
/// index in a ring, and a look at the window drops the indices that fell out of the
/// last N. Clearing stores the current index as the base instead of zeroing stripes.
#[derive(Debug)]
pub(super) struct CountWindow {
    size: u64,
    base: u64,
    locked_calls: u64,
    failures: VecDeque<u64>,
    slow: VecDeque<u64>,
}

#[derive(Debug, Clone, Copy, Default)]
struct LockedBucket {
    id: u64,
    calls: u64,
    failures: u64,
    slow: u64,
}

/// The window split into `BUCKETS` buckets of `window / BUCKETS`; an outcome counts
/// while its bucket is one of the last `BUCKETS`, so outcomes a full window old never
/// count. Successes live in striped buckets, locked outcomes in `buckets` here.
/// Clearing records what the stripes hold per bucket as an offset to subtract.
#[derive(Debug)]
pub(super) struct TimeWindow {
    width: u64,
    buckets: [LockedBucket; BUCKETS],
    /// Stripe successes per bucket id (by age) at the last clear, subtracted from
    /// later sums.
    offsets: [(u64, u64); BUCKETS],
}

/// The lock-held part of a window.
#[derive(Debug)]
pub(super) enum WindowState {
    None,
    Count(CountWindow),
    Time(Box<TimeWindow>),
}

impl WindowState {
    pub(super) fn new(kind: WindowKind) -> Self {
        match kind {
            WindowKind::None => WindowState::None,
            WindowKind::Count(size) => WindowState::Count(CountWindow {
                size,
                base: 0,
                locked_calls: 0,
                failures: VecDeque::new(),
                slow: VecDeque::new(),
            }),
            WindowKind::Time { width } => WindowState::Time(Box::new(TimeWindow {
                width,
                buckets: [LockedBucket::default(); BUCKETS],
                offsets: [(u64::MAX, 0); BUCKETS],
            })),
        }
    }

    /// Records a failure and/or slow call at window time `now`.
    pub(super) fn record(&mut self, stripes: &Stripes, now: u64, failure: bool, slow: bool) {
        match self {
            WindowState::None => {}
            WindowState::Count(window) => {
                window.locked_calls += 1;
                let index = stripes.successes() + window.locked_calls;
                if failure {
                    window.failures.push_back(index);
                }
                if slow {
                    window.slow.push_back(index);
                }
            }
            WindowState::Time(window) => {
                let id = now / window.width;
                let bucket = &mut window.buckets[(id % BUCKETS as u64) as usize];
                if bucket.id != id {
                    *bucket = LockedBucket {
                        id,
                        ..LockedBucket::default()
                    };
                }
                bucket.calls += 1;
                bucket.failures += u64::from(failure);
                bucket.slow += u64::from(slow);
            }
        }
    }

    /// Forgets every outcome recorded so far.
    pub(super) fn clear(&mut self, stripes: &Stripes, now: u64) {
        match self {
            WindowState::None => {}
            WindowState::Count(window) => {
                window.base = stripes.successes() + window.locked_calls;
                window.failures.clear();
                window.slow.clear();
            }
            WindowState::Time(window) => {
                let current = now / window.width;
                let per_age = stripes.bucket_successes(current);
                for (age, successes) in per_age.into_iter().enumerate() {
                    window.offsets[age] = (current.wrapping_sub(age as u64), successes);
                }
                window.buckets = [LockedBucket::default(); BUCKETS];
            }
        }
    }

    /// Totals at `now`, and the window time from which a plain success could trip the
    /// breaker: `could_trip(t)` says whether a window with totals `t` plus the fewest
    /// successes that reach `minimum_calls` (at least one) is over a threshold.
    pub(super) fn totals(
        &mut self,
        stripes: &Stripes,
        now: u64,
        minimum: u64,
        could_trip: impl Fn(Totals) -> bool,
    ) -> (Totals, u64) {
        match self {
            WindowState::None => (Totals::default(), u64::MAX),
            WindowState::Count(window) => {
                let index = stripes.successes() + window.locked_calls;
                let calls = (index - window.base.min(index)).min(window.size);
                let cutoff = index.saturating_sub(window.size);
                while window.failures.front().is_some_and(|&i| i <= cutoff) {
                    window.failures.pop_front();
                }
                while window.slow.front().is_some_and(|&i| i <= cutoff) {
                    window.slow.pop_front();
                }
                let totals = Totals {
                    calls,
                    failures: window.failures.len() as u64,
                    slow: window.slow.len() as u64,
                };
                // Once the window holds `minimum_calls`, a success can only lower the
                // rates (it replaces the oldest call or adds to the count).
                let armed = calls < minimum && could_trip(totals);
                (totals, if armed { 0 } else { u64::MAX })
            }
            WindowState::Time(window) => {
                let current = now / window.width;
                let mut per_age = stripes.bucket_successes(current);
                for &(id, successes) in &window.offsets {
                    let age = current.wrapping_sub(id);
                    if age < BUCKETS as u64 {
                        per_age[age as usize] = per_age[age as usize].saturating_sub(successes);
                    }
                }
                let mut failures = [0u64; BUCKETS];
                let mut slow = [0u64; BUCKETS];
                for bucket in &window.buckets {
                    let age = current.wrapping_sub(bucket.id);
                    if bucket.calls > 0 && age < BUCKETS as u64 {
                        per_age[age as usize] += bucket.calls;
                        failures[age as usize] += bucket.failures;
                        slow[age as usize] += bucket.slow;
                    }
                }
                let totals = Totals {
                    calls: per_age.iter().sum(),
                    failures: failures.iter().sum(),
                    slow: slow.iter().sum(),
                };
                // A success can trip the breaker only when the outcomes still in the
                // window then, plus the fewest successes that reach the minimum, are
                // over a threshold: expiring successes raise the rates, and a success
                // may be the call that reaches `minimum_calls`. Find the first bucket
                // (from now) where that is possible; successes before its start need
                // no lock.
                let mut eval_after = u64::MAX;
                let mut remaining = totals;
                for shift in 0..=BUCKETS {
                    if shift > 0 {
                        let age = BUCKETS - shift;
                        remaining.calls -= per_age[age];
                        remaining.failures -= failures[age];
                        remaining.slow -= slow[age];
                    }
                    if remaining.failures == 0 && remaining.slow == 0 {
                        break;
                    }
                    if could_trip(remaining) {
                        eval_after = if shift == 0 {
                            0
                        } else {
                            current
                                .saturating_add(shift as u64)
                                .saturating_mul(window.width)
                        };
                        break;
                    }
                }
                (totals, eval_after)
            }
        }
    }
}
