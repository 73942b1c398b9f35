//! Striped success counters: the part of the breaker a closed-state success writes.
//!
//! Implementation notes. A success in the closed state must not write a cache line
//! another thread writes, or two threads sharing one breaker pay a cache-line transfer
//! per call. So every counter a success touches lives in a [`Stripe`]: one
//! 128-byte-aligned block per thread slot, chosen once per thread (round robin over a
//! power-of-two number of stripes sized from the CPU count). Threads that land on the
//! same stripe still count exactly (the counters are atomic read-modify-writes); they
//! only share a line.
//!
//! - `successes` is cumulative since the breaker was built. The count window reads
//!   the sum over all stripes as "calls so far" and never resets it; a reset records
//!   the sum as a base instead.
//! - `buckets` serve the time window: slot `k % BUCKETS` holds bucket id `k` (low 32
//!   bits) in its high half and that bucket's success count in its low half, updated
//!   with one compare-and-swap, so a slot is recycled exactly when its bucket leaves
//!   the window. A count saturates only past 2^32 successes per thread slot per bucket.
//! - Failures and slow calls are rare and take the breaker's lock; they are not here.

use crate::sync::{AtomicU64, Ordering};

/// Number of buckets a time window is split into: outcomes expire a tenth of the
/// window at a time.
pub(super) const BUCKETS: usize = 10;

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
    /// Time-window buckets: `(bucket id as u32) << 32 | successes`.
    buckets: [AtomicU64; BUCKETS],
}

impl Stripe {
    fn new() -> Self {
        Stripe {
            successes: AtomicU64::new(0),
            plain: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Counts one success into time bucket `bucket`.
    #[inline]
    pub(super) fn add_to_bucket(&self, bucket: u64) {
        let id = bucket as u32;
        let slot = &self.buckets[(bucket % BUCKETS as u64) as usize];
        let mut current = slot.load(Ordering::Relaxed);
        loop {
            let slot_id = (current >> 32) as u32;
            let next = if slot_id == id || (id.wrapping_sub(slot_id) as i32) < 0 {
                // Same bucket, or a newer one already took the slot (a late report
                // from a thread that read the clock just before the rotation).
                if current & 0xFFFF_FFFF == 0xFFFF_FFFF {
                    return;
                }
                current + 1
            } else {
                u64::from(id) << 32 | 1
            };
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
    mask: usize,
}

/// Hands out stripe slots round robin, one per thread, on first use.
static NEXT_SLOT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

std::thread_local! {
    // Only picks which stripe a thread writes; correctness never depends on it, so the
    // std thread-local is fine under loom too.
    static SLOT: usize = NEXT_SLOT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

impl Stripes {
    pub(super) fn new() -> Self {
        let count = if cfg!(loom) {
            2
        } else {
            (num_cpus::get() * 4).next_power_of_two().clamp(4, 64)
        };
        Stripes {
            stripes: (0..count).map(|_| Stripe::new()).collect(),
            mask: count - 1,
        }
    }

    /// The calling thread's stripe.
    #[inline]
    pub(super) fn mine(&self) -> &Stripe {
        let slot = SLOT.try_with(|s| *s).unwrap_or(0);
        &self.stripes[slot & self.mask]
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
