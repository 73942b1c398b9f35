//! Striped success counters: the part of the breaker a closed-state success writes.
//!
//! Implementation notes. A success in the closed state must not write a cache line
//! another thread writes, or two threads sharing one breaker pay a cache-line transfer
//! per call. So every counter a success touches lives in a [`Stripe`]: a
//! 128-byte-aligned block per thread.
//!
//! - Each live thread counts into its own stripe (plain relaxed loads and stores), or
//!   shares one with atomic read-modify-writes (`crate::striped`).
//! - `successes` is cumulative since the breaker was built. The count window reads
//!   the sum over all stripes as "calls so far" and never resets it; a reset records
//!   the sum as a base instead.
//! - `buckets` serve the time window, one compare-and-swap (or one plain store by an
//!   owning thread) per success ([`Stripe::add_at`]).
//! - Failures and slow calls are rare and take the breaker's lock; they are not here.

use crate::striped;
use crate::sync::{AtomicU64, Ordering};

/// Number of buckets a time window is split into: outcomes expire a tenth of the
/// window at a time.
pub(super) const BUCKETS: usize = 10;

/// How many buckets behind the newest one a success may still be reported (a thread
/// descheduled between reading the clock and counting): 2^16 windows.
const LATE_LIMIT: u32 = (BUCKETS as u32) << 16;

/// Counters written by the threads mapped to one stripe.
#[repr(align(128))]
#[derive(Debug)]
pub(super) struct Stripe {
    /// Closed-state successes counted in the window (cumulative).
    pub(super) successes: AtomicU64,
    /// Successes counted in stats only (disabled mode, or reported after the state
    /// they were admitted in had already changed).
    pub(super) plain: AtomicU64,
    /// Calls refused by this stripe's threads.
    pub(super) rejected: AtomicU64,
    /// Time-window buckets: `(bucket id as u32) << 32 | successes`. Slot
    /// `k % BUCKETS` holds bucket id `k` (low 32 bits) in its high half and that
    /// bucket's success count in its low half, updated with one compare-and-swap (one
    /// plain store by an owning thread), so a slot is recycled exactly when its bucket
    /// leaves the window. A count saturates only past 2^32 successes per thread slot
    /// per bucket.
    buckets: [AtomicU64; BUCKETS],
    /// The owning thread's last bucket: its slot index and the window time it ends,
    /// so that a success within it needs no division (written by the owner only).
    /// A success inside that bucket also skips the id check: since that count, only
    /// the owner has written the slot, so it still holds that bucket (or a newer one
    /// that took the slot, which a late report counts into anyway), and a plain
    /// increment is what `add_to_bucket` would do.
    hint_slot: AtomicU64,
    hint_end: AtomicU64,
}

impl Stripe {
    fn new() -> Self {
        Stripe {
            successes: AtomicU64::new(0),
            plain: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            hint_slot: AtomicU64::new(0),
            hint_end: AtomicU64::new(0),
        }
    }

    /// Counts one success at window time `now` into its bucket of `width` units.
    #[inline]
    pub(super) fn add_at(&self, now: u64, width: u64, owned: bool) {
        if !owned {
            return self.add_to_bucket(now / width, false);
        }
        let end = self.hint_end.load(Ordering::Relaxed);
        if now < end && now >= end - width {
            // Within the bucket this owner counted into last: its slot holds that
            // bucket or a newer one (see `hint_slot`), so count into it as is.
            let hinted = self.hint_slot.load(Ordering::Relaxed) as usize;
            if let Some(slot) = self.buckets.get(hinted) {
                let current = slot.load(Ordering::Relaxed);
                if current & 0xFFFF_FFFF != 0xFFFF_FFFF {
                    slot.store(current + 1, Ordering::Relaxed);
                }
                return;
            }
        }
        let id = now / width;
        self.hint_slot.store(id % BUCKETS as u64, Ordering::Relaxed);
        let end = (id + 1).saturating_mul(width);
        self.hint_end.store(end, Ordering::Relaxed);
        self.add_to_bucket(id, true);
    }

    /// Counts one success into time bucket `bucket`.
    #[inline]
    fn add_to_bucket(&self, bucket: u64, owned: bool) {
        let id = bucket as u32;
        let slot = &self.buckets[(bucket % BUCKETS as u64) as usize];
        let mut current = slot.load(Ordering::Relaxed);
        loop {
            let slot_id = (current >> 32) as u32;
            // A slot somewhat ahead of `id` holds a newer bucket (we are a late
            // report). Ids are u32 and wrap, so "ahead" is bounded by how late a
            // report can plausibly be (LATE_LIMIT buckets); any other slot is stale,
            // however long it sat idle, and is reset. (Comparing the wrapped
            // difference as i32 instead took slots idle for 2^31..2^32 buckets for
            // newer ones, and the new successes were never counted.)
            let newer = slot_id.wrapping_sub(id) <= LATE_LIMIT;
            let next = if newer {
                // Same bucket, or a newer one already took the slot (a late report
                // from a thread that read the clock just before the rotation).
                if current & 0xFFFF_FFFF == 0xFFFF_FFFF {
                    return;
                }
                current + 1
            } else {
                u64::from(id) << 32 | 1
            };
            if owned {
                slot.store(next, Ordering::Relaxed);
                return;
            }
            match slot.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(seen) => current = seen,
            }
        }
    }
}

/// The stripes of one breaker.
#[derive(Debug)]
pub(super) struct Stripes {
    stripes: Box<[Stripe]>,
}

impl Stripes {
    pub(super) fn new() -> Self {
        Stripes {
            stripes: (0..striped::STRIPES).map(|_| Stripe::new()).collect(),
        }
    }

    /// The calling thread's stripe, and whether the thread owns it.
    #[inline]
    pub(super) fn mine(&self) -> (&Stripe, bool) {
        let (index, owned) = striped::stripe_index(self.stripes.len());
        (&self.stripes[index], owned)
    }

    /// Sum of the window successes over all stripes.
    pub(super) fn successes(&self) -> u64 {
        self.stripes
            .iter()
            .map(|s| s.successes.load(Ordering::Relaxed))
            .sum()
    }

    /// Sum of the stats-only successes over all stripes.
    pub(super) fn plain(&self) -> u64 {
        self.stripes
            .iter()
            .map(|s| s.plain.load(Ordering::Relaxed))
            .sum()
    }

    /// Sum of the refusals over all stripes.
    pub(super) fn rejected(&self) -> u64 {
        self.stripes
            .iter()
            .map(|s| s.rejected.load(Ordering::Relaxed))
            .sum()
    }

    /// Successes per bucket of the time window ending at bucket `now`:
    /// `out[d]` is the count of bucket `now - d`.
    pub(super) fn bucket_successes(&self, now: u64) -> [u64; BUCKETS] {
        let mut out = [0u64; BUCKETS];
        let id = now as u32;
        for stripe in self.stripes.iter() {
            for slot in &stripe.buckets {
                let v = slot.load(Ordering::Relaxed);
                let age = id.wrapping_sub((v >> 32) as u32) as usize;
                if age < BUCKETS {
                    out[age] += v & 0xFFFF_FFFF;
                }
            }
        }
        out
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_slot_idle_for_half_the_id_space_is_reset_not_taken_for_a_newer_one() {
        // Regression: with u32 bucket ids, a slot idle for 2^31 buckets or more was
        // taken for a newer bucket, and the new successes were never counted.
        let stripes = Stripes::new();
        let stripe = &stripes.stripes[0];
        stripe.add_to_bucket(5, true);
        let later = 5 + (1u64 << 31) + 7;
        stripe.add_to_bucket(later, true);
        stripe.add_to_bucket(later, false);
        assert_eq!(stripes.bucket_successes(later)[0], 2);
        // A late report (a window behind the slot's bucket) still lands in the newer
        // slot's count rather than resetting it.
        let next_round = later + BUCKETS as u64;
        stripe.add_to_bucket(next_round, true);
        stripe.add_to_bucket(later, true);
        assert_eq!(stripes.bucket_successes(next_round)[0], 2);
    }
}
