//! The GCRA engine behind [`RateLimiter`](super::RateLimiter): one atomic word of state.
//!
//! Implementation notes. The generic cell rate algorithm keeps a single number, the
//! theoretical arrival time (TAT): the instant at which the limiter would be back to
//! "one cell used" if nothing else arrived. With emission interval `T` (the time one
//! cell is worth) and burst `b`, a request for `n` cells at time `now` moves the TAT to
//! `max(TAT, now) + n·T` and conforms when that new TAT is at most `now + b·T`; the
//! earliest instant at which it would conform is `new TAT - b·T`. A TAT at or before
//! `now` is indistinguishable from a fresh limiter (the whole burst is available).
//!
//! The TAT is stored as nanoseconds since the timeline's base in one `AtomicU64`; a
//! decision is a load, a little arithmetic and one compare-and-swap, retried only when
//! another caller moved the TAT in between. So `check` is lock-free (except against a
//! reconfiguration in progress, see [`Gcra`]) and every admitted cell is counted
//! exactly once: the CAS totally orders the updates, and each update conforms against
//! the TAT it replaces.
//!
//! Reconfiguring while callers run is described on [`Gcra`], giving capacity back on
//! [`returned`], and the time horizon (a clock advanced by `Duration::MAX` still
//! limits) on [`horizon`].

use crate::sync::{AtomicU64, Mutex, Ordering};

/// The largest `burst × interval` accepted: 2^62 ns, about 146 years, far from overflow.
pub(crate) const MAX_SPAN_NANOS: u64 = 1 << 62;

/// The last offset a TAT may hold: one short of the `u64` range, whose last value is
/// [`RECONFIGURING`].
const END: u64 = u64::MAX - 1;

/// The TAT while `set_interval` or `set_burst` swaps the parameters. No TAT is ever
/// stored there (the timeline ends one short of it), and a fast-path step from it
/// overflows, so the fast path needs no test of its own for it: the general path
/// waits on the writer's lock and reads again.
const RECONFIGURING: u64 = u64::MAX;

/// The offset standing for "never": past every offset a `u64` holds. A refusal at
/// `NEVER` can never pass; a grant ready at `NEVER` claimed nothing.
pub(crate) const NEVER: u128 = 1 << 64;

/// The last offset the limiter's time reaches for burst `burst` and interval
/// `interval`: a TAT up to `b·T` ahead of it still fits in a `u64`.
///
/// The horizon: offsets are `u64` nanoseconds since the timeline's base, so a TAT can
/// hold at most about 584 years ([`END`]). All arithmetic is exact: a TAT that would not
/// fit is never stored (no saturation, which would make every later request look
/// conforming). A step is taken at `now` clamped to `END - b·T`, where a full burst
/// still fits; a request still conforms only when its slot (`TAT - b·T`) is at most the
/// real now, so past the clamp the limiter keeps admitting exactly at its rate as the
/// clock moves on, until its TAT reaches `END`. From then on, and for any claim whose
/// TAT would land past `END`, the request is refused at [`NEVER`] (a reservation or
/// unbounded wait claims nothing and is never ready). So a clock advanced by
/// `Duration::MAX` sees a limiter that keeps limiting: never more than the limit, and
/// at most `b` cells short of it in the last `b·T` of the timeline.
#[inline]
pub(crate) fn horizon(interval: u64, burst: u64) -> u64 {
    END.saturating_sub(burst.saturating_mul(interval))
}

/// Why a request was not admitted now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `n` exceeds the burst: it can never pass.
    TooMany { burst: u64 },
    /// It would conform at offset `at` ([`NEVER`] past the horizon); `now` is the
    /// (clamped) offset it was judged at.
    NotUntil { at: u128, now: u64 },
}

/// What [`Gcra::check_one`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OneCell {
    Admitted,
    /// Refused: the cell would conform at this offset (`u64::MAX`: never).
    NotUntil(u64),
    /// Not for the fast path to decide (near the horizon, or during a
    /// reconfiguration): ask [`Gcra::check`].
    Undecided,
}

/// A successful claim on capacity, as needed to give it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Grant {
    pub(crate) before: u64,
    pub(crate) after: u64,
    /// The offset at which the cells may be used (may be in the past); [`NEVER`] for a
    /// claim past the horizon, which claimed nothing.
    pub(crate) ready: u128,
    /// `n × T` at grant time (0 for a claim on nothing).
    pub(crate) span: u64,
    /// The configuration epoch (direct limiter) or the key's generation (keyed).
    pub(crate) epoch: u64,
}

impl Grant {
    /// A claim on nothing, usable at `now`.
    pub(crate) fn empty(now: u64) -> Grant {
        Grant {
            before: now,
            after: now,
            ready: u128::from(now),
            span: 0,
            epoch: 0,
        }
    }

    /// A claim on nothing that is never ready: its TAT would not fit the timeline.
    pub(crate) fn never(tat: u64, epoch: u64) -> Grant {
        Grant {
            before: tat,
            after: tat,
            ready: NEVER,
            span: 0,
            epoch,
        }
    }
}

/// One exact GCRA step for `n` cells at `now`: the new TAT (`None` when it would not
/// fit the timeline, past [`END`]) and the offset at which the request conforms (exact, wide).
#[inline]
pub(crate) fn step(tat: u64, now: u64, n: u64, interval: u64, burst: u64) -> (Option<u64>, u128) {
    let base = tat.max(now);
    let cost = n.saturating_mul(interval);
    let tolerance = burst.saturating_mul(interval);
    match base.checked_add(cost).filter(|&tat| tat <= END) {
        Some(new_tat) => (Some(new_tat), u128::from(new_tat.saturating_sub(tolerance))),
        None => {
            let wide = u128::from(base) + u128::from(cost);
            (None, wide.saturating_sub(u128::from(tolerance)))
        }
    }
}

/// A claim of `n` cells against `tat` at `now`, refused when it would conform only
/// after `latest`: the new TAT to store and the offset the cells are ready at, or why
/// not. The step is taken at `now` clamped to the horizon, so a full burst still fits
/// there; a claim whose TAT would not fit is refused at [`NEVER`].
#[inline]
pub(crate) fn decide(
    tat: u64,
    now: u64,
    n: u64,
    interval: u64,
    burst: u64,
    latest: Option<u64>,
) -> Result<(u64, u128), Refusal> {
    if n > burst {
        return Err(Refusal::TooMany { burst });
    }
    let judged = now.min(horizon(interval, burst));
    let (new_tat, ready) = step(tat, judged, n, interval, burst);
    match new_tat {
        None => Err(Refusal::NotUntil { at: NEVER, now }),
        Some(_) if latest.is_some_and(|latest| ready > u128::from(latest)) => {
            Err(Refusal::NotUntil { at: ready, now })
        }
        Some(new_tat) => Ok((new_tat, ready.max(u128::from(now)))),
    }
}

/// The TAT after giving `grant` back from `tat` at `now`, or `None` if nothing can
/// come back: nothing once the grant's slot has passed (`ready < now`) or while any
/// claim stands after it (`tat != after`); otherwise the exact undo (`before`).
///
/// Giving capacity back (a cancelled wait or reservation): nothing once the grant's
/// slot has passed, as in x/time/rate's `CancelAt`, since its holder may have used the
/// cells and later callers were judged against a window that included them. Before
/// that, the grant is undone exactly (the TAT put back to what it was before the
/// claim) when no claim stands after it (the TAT still equals what the grant set), and
/// nothing comes back otherwise: every later claim's slot was placed after this
/// grant's cells, so they cannot be freed without moving it. (x/time/rate returns the
/// cells minus those reserved after; with the TAT as the only state that rule
/// over-admits once two reservations are cancelled in turn, since the first partial
/// return hides how much was reserved after the second: the property tests found such
/// a sequence.) A reconfiguration in between (tracked by an epoch counter) returns
/// nothing.
pub(crate) fn returned(tat: u64, grant: &Grant, now: u64) -> Option<u64> {
    let passed = grant.ready < u128::from(now);
    (grant.span > 0 && !passed && tat == grant.after).then_some(grant.before)
}

/// The state and parameters of one direct limiter.
///
/// `T` and `b` live in more atomics so that `set_interval`/`set_burst` can change
/// them while callers run; `reach` (`b·T + 1`) is kept beside them so that the
/// one-cell fast path, [`check_one`](Gcra::check_one), needs no multiplication.
/// Writers are serialised by a lock and convert the TAT so that the capacity in use
/// is kept (x/time/rate's `SetLimit`/`SetBurst` semantics).
///
/// A caller decides from the TAT and parameters it read, and its compare-and-swap
/// on the TAT is what makes an admission count; a refusal, which commits nothing,
/// reads the TAT again and decides again if it moved. A writer therefore swaps the
/// TAT for [`RECONFIGURING`] first, bumps the epoch, publishes the parameters, and
/// stores the converted TAT last. A caller that read the TAT before the swap fails
/// its compare-and-swap (or its second read) and decides again on the new state; one
/// that reads [`RECONFIGURING`] waits for the writer's lock. So a call racing with a
/// reconfiguration is judged by the old parameters on the old TAT or by the new ones
/// on the converted TAT, never by a mix (the loom models in tests/loom_rate.rs).
///
/// The gap is the one every compare-and-swap on a bare value has: a caller that read
/// the TAT before the swap and is delayed past the change still succeeds if the TAT
/// is back at exactly the value it read by then. The writer never puts that value
/// back itself (a TAT at or before its instant goes one nanosecond earlier, which
/// reads the same, full capacity, from that instant on; one past it goes one
/// nanosecond later, stricter by that much), but calls under the new limit can bring
/// the TAT back to it when the converted debt plus whole intervals land on it to the
/// nanosecond. Then that one delayed decision is the old limit's: at most its own
/// cells more than the new limit allows at that instant, once per delayed call. With
/// the TSC clock a writer's instant is an arbitrary nanosecond, so that landing is a
/// coincidence to the nanosecond; on a frozen manual clock it can be arranged (as can
/// offset 0 itself, where no earlier value exists). Closing it would take a
/// generation tag in the compared word, which 64 bits of nanoseconds leave no room
/// for.
#[derive(Debug)]
pub(crate) struct Gcra {
    tat: AtomicU64,
    interval: AtomicU64,
    burst: AtomicU64,
    reach: AtomicU64,
    epoch: AtomicU64,
    reconfigure: Mutex<()>,
}

/// `b·T + 1`: a cell conforms when the new TAT is below `now + reach`.
fn reach(interval: u64, burst: u64) -> u64 {
    burst.saturating_mul(interval).saturating_add(1)
}

impl Gcra {
    pub(crate) fn new(interval: u64, burst: u64) -> Self {
        Gcra {
            tat: AtomicU64::new(0),
            interval: AtomicU64::new(interval),
            burst: AtomicU64::new(burst),
            reach: AtomicU64::new(reach(interval, burst)),
            epoch: AtomicU64::new(0),
            reconfigure: Mutex::new(()),
        }
    }

    pub(crate) fn interval(&self) -> u64 {
        self.interval.load(Ordering::Acquire)
    }

    pub(crate) fn burst(&self) -> u64 {
        self.burst.load(Ordering::Acquire)
    }

    /// The TAT, once no writer is converting it.
    #[inline]
    fn settled(&self, tat: u64) -> u64 {
        if tat == RECONFIGURING {
            self.after_reconfiguring()
        } else {
            tat
        }
    }

    /// Whether the TAT still reads `tat`, so that a decision not committed by a
    /// compare-and-swap (a refusal) was made on parameters of its configuration;
    /// otherwise the TAT now.
    #[inline]
    fn unchanged(&self, tat: u64) -> Result<(), u64> {
        match self.tat.load(Ordering::Acquire) {
            again if again == tat => Ok(()),
            again => Err(again),
        }
    }

    /// Waits for the writer holding the lock, then reads the TAT it stored.
    #[cold]
    #[inline(never)]
    fn after_reconfiguring(&self) -> u64 {
        let _writer = self.reconfigure.lock();
        self.tat.load(Ordering::Acquire)
    }

    /// Admits one cell at `now` if it conforms: the hot path of `check`, the same
    /// decision as [`check`](Gcra::check) with `n = 1` in fewer steps (no burst test,
    /// since the burst is at least 1, and no multiplication). It leaves undecided
    /// what is out of the ordinary: a `now` past the horizon and [`RECONFIGURING`]
    /// (from which every step overflows).
    #[inline(always)]
    pub(crate) fn check_one(&self, now: u64) -> OneCell {
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let interval = self.interval.load(Ordering::Acquire);
            let reach = self.reach.load(Ordering::Acquire);
            let (Some(new_tat), Some(limit)) =
                (tat.max(now).checked_add(interval), now.checked_add(reach))
            else {
                return OneCell::Undecided;
            };
            if new_tat >= limit {
                // A refusal commits nothing, so it is checked here instead.
                if let Err(again) = self.unchanged(tat) {
                    tat = again;
                    continue;
                }
                // `new_tat - b·T`, past `now`; never when the TAT would pass `END`.
                let at = if new_tat > END {
                    u64::MAX
                } else {
                    new_tat - reach + 1
                };
                return OneCell::NotUntil(at);
            }
            match self
                .tat
                .compare_exchange_weak(tat, new_tat, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return OneCell::Admitted,
                Err(actual) => tat = actual,
            }
        }
    }

    /// Admits `n` cells at `now` if they conform.
    ///
    /// Deliberately its own loop rather than `reserve(n, now, Some(now))`: folding the
    /// two into one helper costs the hot path a little.
    #[inline]
    pub(crate) fn check(&self, n: u64, now: u64) -> Result<(), Refusal> {
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            tat = self.settled(tat);
            let interval = self.interval.load(Ordering::Acquire);
            let burst = self.burst.load(Ordering::Acquire);
            let new_tat = match decide(tat, now, n, interval, burst, Some(now)) {
                Ok((new_tat, _)) => new_tat,
                Err(refusal) => match self.unchanged(tat) {
                    Ok(()) => return Err(refusal),
                    Err(again) => {
                        tat = again;
                        continue;
                    }
                },
            };
            match self
                .tat
                .compare_exchange_weak(tat, new_tat, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(()),
                Err(actual) => tat = actual,
            }
        }
    }

    /// Claims `n` cells at `now` whatever their instant, unless that instant lies past
    /// `latest` (then nothing is claimed and the instant is returned). Without a bound,
    /// a claim whose TAT would not fit the timeline claims nothing and is ready
    /// [`NEVER`].
    pub(crate) fn reserve(&self, n: u64, now: u64, latest: Option<u64>) -> Result<Grant, Refusal> {
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            tat = self.settled(tat);
            // Read after a settled TAT: the compare-and-swap below then proves that no
            // reconfiguration came in between.
            let epoch = self.epoch.load(Ordering::Acquire);
            let interval = self.interval.load(Ordering::Acquire);
            let burst = self.burst.load(Ordering::Acquire);
            let (new_tat, ready) = match decide(tat, now, n, interval, burst, latest) {
                Ok(claim) => claim,
                Err(Refusal::NotUntil { at: NEVER, .. }) if latest.is_none() => {
                    return Ok(Grant::never(tat, epoch))
                }
                Err(refusal) => match self.unchanged(tat) {
                    Ok(()) => return Err(refusal),
                    Err(again) => {
                        tat = again;
                        continue;
                    }
                },
            };
            match self
                .tat
                .compare_exchange_weak(tat, new_tat, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    return Ok(Grant {
                        before: tat,
                        after: new_tat,
                        ready,
                        span: n.saturating_mul(interval),
                        epoch,
                    })
                }
                Err(actual) => tat = actual,
            }
        }
    }

    /// Gives back what it can of `grant` at `now`; returns whether anything came back.
    ///
    /// Under the writers' lock, so that no reconfiguration comes between the epoch
    /// test and the compare-and-swap: otherwise a conversion followed by calls under
    /// the new limit could bring the TAT back to the grant's end to the nanosecond,
    /// and the give-back would erase those calls' cells. Giving back is rare (a
    /// cancelled reservation or wait), so the lock costs the hot paths nothing.
    pub(crate) fn give_back(&self, grant: &Grant, now: u64) -> bool {
        let _no_writer = self.reconfigure.lock();
        if self.epoch.load(Ordering::Acquire) != grant.epoch {
            return false;
        }
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let Some(new_tat) = returned(tat, grant, now) else {
                return false;
            };
            match self
                .tat
                .compare_exchange_weak(tat, new_tat, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(actual) => tat = actual,
            }
        }
    }

    /// Cells that would be admitted right now.
    pub(crate) fn available(&self, now: u64) -> u64 {
        loop {
            // The parameters are of the TAT's configuration unless the epoch moved
            // meanwhile (a writer bumps it between taking the TAT out and putting
            // the new one back); calls that move the TAT do not make this retry.
            let epoch = self.epoch.load(Ordering::Acquire);
            let tat = self.settled(self.tat.load(Ordering::Acquire));
            let interval = self.interval.load(Ordering::Acquire);
            let burst = self.burst.load(Ordering::Acquire);
            if self.epoch.load(Ordering::Acquire) != epoch {
                continue;
            }
            let now = now.min(horizon(interval, burst));
            let debt = tat.saturating_sub(now);
            // The cells still owed, rounded up: a partly refilled cell is not available.
            let owed = debt.div_ceil(interval.max(1));
            return burst.saturating_sub(owed);
        }
    }

    /// Changes the emission interval at `now`, keeping the capacity in use (in cells).
    pub(crate) fn set_interval(&self, interval: u64, now: u64) {
        let _writer = self.reconfigure.lock();
        let old = self.interval.load(Ordering::Acquire);
        if old == interval {
            return;
        }
        let burst = self.burst.load(Ordering::Acquire);
        self.reconfigure_with(now, |tat| {
            self.interval.store(interval, Ordering::Release);
            self.reach.store(reach(interval, burst), Ordering::Release);
            let debt = u128::from(tat.saturating_sub(now));
            let scaled = debt * u128::from(interval) / u128::from(old.max(1));
            now.saturating_add(u64::try_from(scaled).unwrap_or(u64::MAX))
        });
    }

    /// Changes the burst at `now`, keeping the capacity available now (in cells).
    pub(crate) fn set_burst(&self, burst: u64, now: u64) {
        let _writer = self.reconfigure.lock();
        let old = self.burst.load(Ordering::Acquire);
        if old == burst {
            return;
        }
        let interval = self.interval.load(Ordering::Acquire);
        self.reconfigure_with(now, |tat| {
            self.burst.store(burst, Ordering::Release);
            self.reach.store(reach(interval, burst), Ordering::Release);
            let base = tat.max(now);
            if burst > old {
                base.saturating_add((burst - old).saturating_mul(interval))
            } else {
                base.saturating_sub((old - burst).saturating_mul(interval))
                    .max(now)
            }
        });
    }

    /// The writer's side (under the lock): takes the TAT out, lets `publish` store the
    /// new parameters and convert the TAT, and puts the converted TAT back.
    fn reconfigure_with(&self, now: u64, publish: impl FnOnce(u64) -> u64) {
        let old = self.tat.swap(RECONFIGURING, Ordering::AcqRel);
        // After the swap: a grant stamped with the new epoch was claimed on a TAT
        // read after it, so it cannot be one claimed under the old configuration.
        self.epoch.fetch_add(1, Ordering::AcqRel);
        let mut new = publish(old).min(END);
        if new == old {
            // A different value fails the compare-and-swap of a caller that read the
            // TAT before the swap. At or before `now` any value reads as full
            // capacity; past it (a debt too small to change when scaled), one
            // nanosecond more is stricter by that much. (At `END` nothing conforms.)
            new = if new <= now {
                new.saturating_sub(1)
            } else {
                new.saturating_add(1).min(END)
            };
        }
        self.tat.store(new, Ordering::Release);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    const T: u64 = 1_000; // one cell per microsecond, in nanoseconds
    const W: u128 = T as u128;

    #[test]
    fn burst_then_one_per_interval() {
        let g = Gcra::new(T, 3);
        for _ in 0..3 {
            assert_eq!(g.check(1, 0), Ok(()));
        }
        assert_eq!(g.check(1, 0), Err(Refusal::NotUntil { at: W, now: 0 }));
        assert_eq!(g.check(1, T), Ok(()));
        assert_eq!(g.check(1, T), Err(Refusal::NotUntil { at: 2 * W, now: T }));
        assert_eq!(g.check(4, 10 * T), Err(Refusal::TooMany { burst: 3 }));
        assert_eq!(g.check(3, 10 * T), Ok(()));
    }

    #[test]
    fn exact_undo_when_nobody_built_on_the_grant() {
        let g = Gcra::new(T, 2);
        let grant = g.reserve(2, 0, None).unwrap();
        assert_eq!(g.available(0), 0);
        assert!(g.give_back(&grant, 0));
        assert_eq!(g.available(0), 2);
    }

    #[test]
    fn later_reservations_keep_their_cells() {
        let g = Gcra::new(T, 2);
        g.check(2, 0).unwrap();
        let a = g.reserve(2, 0, None).unwrap(); // ready at 2T
        let b = g.reserve(1, 0, None).unwrap(); // ready at 3T
        assert_eq!((a.ready, b.ready), (2 * W, 3 * W));
        assert!(!g.give_back(&a, 0)); // b's slot was placed after a's cells
        assert!(g.give_back(&b, 0)); // b is the last claim: undone exactly
        assert!(g.give_back(&a, 0)); // and now a is the last one
        assert_eq!(g.reserve(1, 0, None).unwrap().ready, W);
    }

    #[test]
    fn passed_grants_are_not_returned_once_built_on() {
        let g = Gcra::new(T, 1);
        let a = g.reserve(1, 0, None).unwrap();
        g.reserve(1, 0, None).unwrap();
        assert!(!g.give_back(&a, 5 * T));
    }

    #[test]
    fn set_burst_keeps_available_capacity() {
        let g = Gcra::new(T, 5);
        g.check(2, 0).unwrap();
        assert_eq!(g.available(0), 3);
        g.set_burst(10, 0);
        assert_eq!(g.available(0), 3);
        assert_eq!(g.available(7 * T), 10);
        g.set_burst(2, 7 * T);
        assert_eq!(g.available(7 * T), 2);
    }

    #[test]
    fn set_interval_keeps_cells_in_use() {
        let g = Gcra::new(T, 4);
        g.check(2, 0).unwrap();
        g.set_interval(2 * T, 0);
        assert_eq!(g.available(0), 2);
        assert_eq!(g.available(2 * T), 3);
        assert_eq!(g.available(4 * T), 4);
    }
}
