//! The crate's timeline: "now" as nanoseconds since a base, read from a [`Clock`].
//!
//! Implementation notes. Cores that keep time in atomics (the rate limiter's GCRA
//! state, the circuit breaker's open deadline and time-window buckets) want "now" as a
//! `u64` of nanoseconds since a fixed base. For any clock that is `clock.now() - base`,
//! which keeps [`ManualClock`](crate::clock::ManualClock) semantics exact. Reading
//! [`Instant::now`](std::time::Instant::now) is most of the cost of a `check()` or of
//! a breaker's closed-state call, so when the clock is exactly [`SystemClock`]
//! (decided by type when the [`Timeline`](crate::timeline::Timeline) is built) the
//! timeline reads the CPU's time-stamp counter through `quanta` instead, which is
//! cheaper (BENCHMARKS.md has the figures): nanoseconds since one process-wide TSC
//! reading. The [`Clock`] trait is unchanged; `quanta` falls back to the OS clock
//! where the TSC is unusable.
//!
//! Decisions (is a cell free, is the breaker still open, which window bucket is
//! current) compare offsets alone, and durations reported from them (a `retry_after`)
//! are differences of offsets; conversions to a std [`Instant`](std::time::Instant)
//! are made live by [`Anchor`](crate::timeline::Anchor). A second, cheaper time
//! source, [`Coarse`](crate::timeline::Coarse), serves the breaker's time-window
//! buckets and holds the module's only `unsafe`.

use std::any::TypeId;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::clock::{Clock, SystemClock};

/// The process-wide TSC clock and the raw reading offsets count from.
pub(crate) struct Tsc {
    clock: quanta::Clock,
    raw0: u64,
}

impl Tsc {
    #[inline]
    fn now(&self) -> u64 {
        // The reading first, so `raw0` is loaded after the call rather than held across it.
        let end = self.clock.raw();
        self.clock.delta_as_nanos(self.raw0, end)
    }
}

static TSC: OnceLock<Tsc> = OnceLock::new();

fn tsc() -> &'static Tsc {
    TSC.get_or_init(|| {
        let clock = quanta::Clock::new(); // calibrates once per process
        let raw0 = clock.raw();
        Tsc { clock, raw0 }
    })
}

/// Nanoseconds since the process-wide TSC base (the OS clock where the TSC is
/// unusable): a cheap clock for timing short intervals, such as the pipeline's
/// per-packet pulls. Differences only; never mixed with std instants.
#[inline]
pub(crate) fn tsc_nanos() -> u64 {
    tsc().now()
}

/// How offsets map onto std instants.
///
/// The TSC and the OS clock tick at rates that differ by quanta's calibration error
/// (parts per million, more when calibrated under load), so a fixed mapping between
/// the two would drift apart by milliseconds per hour. Every conversion between an
/// offset and a std [`Instant`] (a sleeper's deadline, a rate limiter's
/// `NotUntil::earliest`, a caller's deadline) is therefore made *live*: it reads both
/// clocks now and converts the difference, so the error is parts per million of the
/// interval converted, never of the process's age.
#[derive(Clone, Copy)]
pub(crate) enum Anchor {
    /// Offset `n` is `base + n` exactly (the clock itself yields the offsets).
    Fixed(Instant),
    /// Offsets are TSC nanoseconds; converted live against `Instant::now()`.
    Tsc(&'static Tsc),
}

impl Anchor {
    /// The instant at offset `at`.
    pub(crate) fn instant(&self, at: u64) -> Instant {
        match *self {
            Anchor::Fixed(base) => add(base, Duration::from_nanos(at)),
            Anchor::Tsc(tsc) => {
                let (std_now, now) = (Instant::now(), tsc.now());
                if at >= now {
                    add(std_now, Duration::from_nanos(at - now))
                } else {
                    let back = Duration::from_nanos(now - at);
                    std_now.checked_sub(back).unwrap_or(std_now)
                }
            }
        }
    }

    /// The instant at a wide offset: [`instant`](Anchor::instant) for offsets that fit
    /// in a `u64`, and the latest instant that can be represented ("never") past that
    /// (a slot beyond the timeline's horizon).
    pub(crate) fn instant_wide(&self, at: u128) -> Instant {
        match u64::try_from(at) {
            Ok(at) => self.instant(at),
            Err(_) => {
                let from = match *self {
                    Anchor::Fixed(base) => base,
                    Anchor::Tsc(_) => Instant::now(),
                };
                add(from, Duration::MAX)
            }
        }
    }

    /// The offset of `t` (0 for instants before the base).
    pub(crate) fn offset(&self, t: Instant) -> u64 {
        match *self {
            Anchor::Fixed(base) => nanos(t.saturating_duration_since(base)),
            Anchor::Tsc(tsc) => {
                let (std_now, now) = (Instant::now(), tsc.now());
                match t.checked_duration_since(std_now) {
                    Some(ahead) => now.saturating_add(nanos(ahead)),
                    None => now.saturating_sub(nanos(std_now - t)),
                }
            }
        }
    }
}

impl PartialEq for Anchor {
    fn eq(&self, other: &Anchor) -> bool {
        match (self, other) {
            (Anchor::Fixed(a), Anchor::Fixed(b)) => a == b,
            (Anchor::Tsc(a), Anchor::Tsc(b)) => std::ptr::eq(*a, *b),
            _ => false,
        }
    }
}

impl Eq for Anchor {}

impl std::fmt::Debug for Anchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Anchor::Fixed(base) => f.debug_tuple("Fixed").field(base).finish(),
            Anchor::Tsc(_) => f.write_str("Tsc"),
        }
    }
}

fn add(t: Instant, d: Duration) -> Instant {
    crate::sync::time::deadline_after(t, d)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A duration of `n` nanoseconds, saturating at [`Duration::MAX`] (for the difference
/// of two wide offsets).
pub(crate) fn duration_from_nanos(n: u128) -> Duration {
    const PER_SEC: u128 = 1_000_000_000;
    match u64::try_from(n / PER_SEC) {
        // The remainder is below 10^9, so it fits a u32.
        Ok(secs) => Duration::new(secs, u32::try_from(n % PER_SEC).unwrap_or(0)),
        Err(_) => Duration::MAX,
    }
}

/// A clock plus the anchor that state offsets count from. The clock comes last so
/// that it may be unsized (`Timeline<dyn Clock>`): `Box<Timeline<C>>` coerces to
/// `Box<Timeline<dyn Clock>>`, which keeps the fast path of a `SystemClock` chosen by
/// type even where the clock is stored as a trait object (the breaker's builder).
pub(crate) struct Timeline<C: ?Sized> {
    anchor: Anchor,
    clock: C,
}

impl<C: Clock> Timeline<C> {
    /// A timeline on `clock`: the TSC when `C` is [`SystemClock`], otherwise offsets
    /// from `clock.now()` at this call.
    pub(crate) fn new(clock: C) -> Self {
        let anchor = if TypeId::of::<C>() == TypeId::of::<SystemClock>() {
            Anchor::Tsc(tsc())
        } else {
            Anchor::Fixed(clock.now())
        };
        Timeline { anchor, clock }
    }
}

impl<C: Clock + ?Sized> Timeline<C> {
    /// Nanoseconds since the base, now.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        match self.anchor {
            Anchor::Tsc(tsc) => tsc.now(),
            Anchor::Fixed(base) => self.fixed_now(base),
        }
    }

    /// [`now`](Timeline::now) on a user clock, out of line: inlined, its call and
    /// arithmetic take registers from the TSC path of every caller.
    #[inline(never)]
    fn fixed_now(&self, base: Instant) -> u64 {
        nanos(self.clock.now().saturating_duration_since(base))
    }

    /// How this timeline's offsets map onto std instants.
    pub(crate) fn anchor(&self) -> Anchor {
        self.anchor
    }

    /// The clock the timeline reads (and blocking waits sleep on).
    pub(crate) fn clock(&self) -> &C {
        &self.clock
    }
}

impl<C: Clock + ?Sized> Timeline<C> {
    /// Whether offsets come from the TSC, that is, the clock is [`SystemClock`].
    pub(crate) fn is_system(&self) -> bool {
        matches!(self.anchor, Anchor::Tsc(_))
    }
}

/// The coarse monotonic clock. A value proves the clock is there; readings are the
/// OS's nanoseconds since its own base (boot on Linux).
///
/// It serves one use: the breaker's time-window buckets, which only need time to a
/// small fraction of a bucket's width. On Linux it reads `CLOCK_MONOTONIC_COARSE` (the
/// kernel's time as of its last tick, served from the vDSO without a system call,
/// cheaper than the TSC read of [`Tsc`]; BENCHMARKS.md has the figures), which is at
/// most about one tick (its `clock_getres`) behind. Its readings live on their own
/// base (the OS's monotonic clock, used as it is) and are never compared with or
/// converted to [`Timeline`] offsets, so the two sources cannot drift apart in any
/// decision. It is this module's only `unsafe` (two `libc` calls, each with its
/// `// SAFETY:` note); elsewhere, and under loom, [`Coarse::tick`] is `None`
/// and callers keep the timeline.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Coarse(());

impl Coarse {
    /// The coarse clock's resolution in nanoseconds (how far behind a reading may
    /// be), or `None` where there is no coarse clock. Asked of the OS once.
    pub(crate) fn tick() -> Option<u64> {
        static TICK: OnceLock<Option<u64>> = OnceLock::new();
        *TICK.get_or_init(coarse::resolution)
    }

    /// The coarse clock, or `None` where there is none.
    pub(crate) fn get() -> Option<Coarse> {
        Coarse::tick().map(|_| Coarse(()))
    }

    /// Nanoseconds on the coarse clock's own base, as of the OS's last tick.
    #[inline]
    pub(crate) fn now(self) -> u64 {
        coarse::read()
    }
}

#[cfg(all(target_os = "linux", not(loom)))]
#[allow(unsafe_code)]
mod coarse {
    fn nanos(ts: &libc::timespec) -> u64 {
        // Both fields are non-negative for a monotonic clock; saturate rather than wrap.
        let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
        let subsec = u64::try_from(ts.tv_nsec).unwrap_or(0);
        secs.saturating_mul(1_000_000_000).saturating_add(subsec)
    }

    /// `CLOCK_MONOTONIC_COARSE` now, in nanoseconds.
    #[inline]
    pub(super) fn read() -> u64 {
        // SAFETY: `timespec` is plain integers (and padding on some targets), for which
        // all-zero bytes are a valid value; `clock_gettime` writes only through the
        // pointer it is given, which points at that local for the whole call. It
        // cannot fail here: `Coarse` values exist only after `clock_getres` accepted
        // this clock id, and a failure would leave the zeroes (time 0), never UB.
        let ts = unsafe {
            let mut ts: libc::timespec = std::mem::zeroed();
            libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts);
            ts
        };
        nanos(&ts)
    }

    /// `clock_getres(CLOCK_MONOTONIC_COARSE)` in nanoseconds, when the kernel has the
    /// clock and reports a non-zero resolution.
    pub(super) fn resolution() -> Option<u64> {
        // SAFETY: as in `read`: a zeroed local `timespec`, written only through the
        // pointer for the duration of the call.
        let (rc, ts) = unsafe {
            let mut ts: libc::timespec = std::mem::zeroed();
            let rc = libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut ts);
            (rc, ts)
        };
        let tick = nanos(&ts);
        (rc == 0 && tick > 0).then_some(tick)
    }
}

#[cfg(not(all(target_os = "linux", not(loom))))]
mod coarse {
    pub(super) fn read() -> u64 {
        0
    }

    pub(super) fn resolution() -> Option<u64> {
        None
    }
}

impl<C: Clock + ?Sized> std::fmt::Debug for Timeline<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timeline")
            .field("clock", &&self.clock)
            .field("anchor", &self.anchor)
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn manual_clock_offsets_are_exact_and_fixed_anchored() {
        let clock = ManualClock::new();
        let start = clock.now();
        let timeline: Box<Timeline<dyn Clock>> = Box::new(Timeline::new(clock.clone()));
        assert_eq!(timeline.anchor(), Anchor::Fixed(start));
        assert_eq!(timeline.now(), 0);
        clock.advance(Duration::from_nanos(1_234_567));
        assert_eq!(timeline.now(), 1_234_567);
        assert_eq!(timeline.anchor().instant(1_234_567), clock.now());
        assert_eq!(timeline.anchor().offset(clock.now()), 1_234_567);
    }

    #[test]
    fn the_coarse_clock_moves_forward() {
        let found = Coarse::get();
        assert_eq!(found.is_some(), cfg!(target_os = "linux"));
        let Some(coarse) = found else { return };
        let tick = Coarse::tick().expect("a coarse clock has a tick");
        let before = Instant::now();
        let a = coarse.now();
        // Never back.
        let b = coarse.now();
        assert!(b >= a);
        // It does advance: spin (no sleep) until three ticks have passed on std's
        // clock; the kernel has updated the coarse time since.
        while before.elapsed() < Duration::from_nanos(tick * 3) {
            std::hint::spin_loop();
        }
        assert!(coarse.now() > a, "the coarse clock stood still for 3 ticks");
    }

    #[test]
    fn system_clock_uses_the_tsc_even_behind_a_trait_object() {
        let timeline: Box<Timeline<dyn Clock>> = Box::new(Timeline::new(SystemClock));
        assert!(matches!(timeline.anchor(), Anchor::Tsc(_)));
        // Live conversions round-trip up to the time between their clock reads
        // (generous bound: the build machine is heavily loaded).
        let later = crate::sync::time::deadline_after(Instant::now(), Duration::from_secs(3600));
        let back = timeline.anchor().instant(timeline.anchor().offset(later));
        let error = back.max(later) - back.min(later);
        assert!(
            error < Duration::from_millis(500),
            "round trip off by {error:?}"
        );
        let a = timeline.now();
        let b = timeline.now();
        assert!(
            b + 1_000_000 >= a,
            "the TSC timeline went back by {} ns",
            a - b
        );
    }
}
