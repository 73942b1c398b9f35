//! Per-thread striped counters, for counts on paths too hot for one shared atomic.
//!
//! Each live thread holds a small process-wide slot number ([`thread_slot`]); the
//! first [`EXCLUSIVE`] slots own a stripe of each counter set outright and count with
//! a plain relaxed load and store (no locked instruction, no shared cache line),
//! every other thread shares one of [`SHARED`] stripes with atomic increments: still
//! exact, just dearer. Reading sums the stripes.

use crate::sync::{AtomicU64, Ordering};

/// Stripes owned by one thread each (slots `0..EXCLUSIVE`). A slot's previous owner
/// has exited before the slot is reused, and the free list's lock orders the two.
pub(crate) const EXCLUSIVE: usize = 32;
/// Stripes shared, with atomic increments, by every other thread: threads with higher
/// slot numbers, threads whose slot is already torn down, and every thread under loom
/// (where model threads share one OS thread's thread-locals).
pub(crate) const SHARED: usize = 4;

/// Slot numbers of live threads: the next never-used one, and those returned, handed
/// out lowest-free-first. A process-wide registry outside the loom-modelled cores
/// (under loom no thread uses its slot as an exclusive stripe), hence the std lock.
static SLOTS: std::sync::Mutex<(usize, Vec<usize>)> = std::sync::Mutex::new((0, Vec::new()));

/// The calling thread's slot number; returned to [`SLOTS`] when the thread exits.
struct Slot(usize);

impl Slot {
    fn take() -> Slot {
        let mut slots = SLOTS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match slots.1.pop() {
            Some(free) => Slot(free),
            None => {
                slots.0 += 1;
                Slot(slots.0 - 1)
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // From now on this thread counts into a shared stripe: its number may go to
        // a new thread before this one's last count.
        let _ = FAST.try_with(|f| f.set(usize::MAX));
        let mut slots = SLOTS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        slots.1.push(self.0);
        // Lowest first, so a few long-lived threads keep owning stripes.
        slots.1.sort_unstable_by(|a, b| b.cmp(a));
    }
}

/// "No slot number yet" in [`FAST`].
const UNSET: usize = usize::MAX - 1;

std::thread_local! {
    /// The slot number, read on every count: a `const` thread-local without `Drop`
    /// is one load, with no lazy-initialisation check.
    static FAST: std::cell::Cell<usize> = const { std::cell::Cell::new(UNSET) };
    /// Owns the number and gives it back when the thread exits.
    static SLOT: Slot = Slot::take();
}

/// The calling thread's slot number (`usize::MAX` while its thread-locals are torn
/// down).
#[inline]
pub(crate) fn thread_slot() -> usize {
    match FAST.try_with(std::cell::Cell::get) {
        Ok(UNSET) => first_slot(),
        Ok(slot) => slot,
        Err(_) => usize::MAX,
    }
}

#[cold]
fn first_slot() -> usize {
    let slot = SLOT.try_with(|s| s.0).unwrap_or(usize::MAX);
    let _ = FAST.try_with(|f| f.set(slot));
    slot
}

/// The calling thread's slot number when it owns a stripe (below [`EXCLUSIVE`]),
/// without the first call's set-up: `None` for a thread that has not asked for its
/// slot yet (then [`thread_slot`] gives it one), owns none, or runs under loom.
#[inline]
fn owned_slot() -> Option<usize> {
    let slot = FAST.try_with(std::cell::Cell::get).ok()?;
    (!cfg!(loom) && slot < EXCLUSIVE).then_some(slot)
}

/// Which of `len` stripes (`EXCLUSIVE` owned ones, then `SHARED` shared ones, or
/// fewer under loom) the calling thread counts into, and whether it owns it.
#[inline]
pub(crate) fn stripe_index(len: usize) -> (usize, bool) {
    let slot = thread_slot();
    if !cfg!(loom) && slot < EXCLUSIVE && slot < len {
        return (slot, true);
    }
    let shared = len.min(SHARED);
    (len - shared + slot % shared, false)
}

/// How many stripes a striped structure needs.
pub(crate) const STRIPES: usize = if cfg!(loom) { 2 } else { EXCLUSIVE + SHARED };

/// Adds one to a stripe counter: a plain load and store when this thread owns the
/// stripe, an atomic increment otherwise.
#[inline]
pub(crate) fn bump(counter: &AtomicU64, owned: bool) {
    if owned {
        counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    } else {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// `K` counters, striped per thread.
#[derive(Debug)]
pub(crate) struct Counters<const K: usize> {
    stripes: Box<[Stripe<K>; STRIPES]>,
}

#[repr(align(128))]
#[derive(Debug)]
struct Stripe<const K: usize>([AtomicU64; K]);

impl<const K: usize> Counters<K> {
    pub(crate) fn new() -> Self {
        Counters {
            stripes: Box::new(std::array::from_fn(|_| {
                Stripe(std::array::from_fn(|_| AtomicU64::new(0)))
            })),
        }
    }

    /// Adds one to counter `i` (`i < K`). The owned stripe's path is kept to a
    /// thread-local read, one compare and one increment: it runs on every rate-limiter
    /// `check`.
    #[inline]
    pub(crate) fn add(&self, i: usize) {
        match owned_slot().and_then(|slot| self.stripes.get(slot)) {
            Some(stripe) => bump(&stripe.0[i], true),
            None => self.add_shared(i),
        }
    }

    /// [`add`](Counters::add) for a thread that owns no stripe (or has no slot yet).
    #[cold]
    #[inline(never)]
    fn add_shared(&self, i: usize) {
        let (stripe, owned) = stripe_index(STRIPES);
        if let Some(stripe) = self.stripes.get(stripe) {
            bump(&stripe.0[i], owned);
        }
    }

    /// The sum of counter `i` over every stripe.
    pub(crate) fn sum(&self, i: usize) -> u64 {
        self.stripes
            .iter()
            .map(|s| s.0[i].load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}
