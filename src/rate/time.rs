//! The limiter's timeline: nanoseconds since a base instant, read from its [`Clock`].
//!
//! Implementation notes. GCRA state is one `u64` of nanoseconds, so the limiter needs
//! "now" as nanoseconds since a fixed base. For any clock that is `clock.now() - base`.
//! Reading [`Instant::now`] costs about 28 ns on the VMs this crate is benchmarked on,
//! which is most of the cost of a `check()`, so when the clock is exactly
//! [`SystemClock`] the timeline reads the CPU's time-stamp counter through `quanta`
//! instead (a fraction of the cost): nanoseconds since one process-wide TSC reading.
//! The [`Clock`] trait and [`ManualClock`](crate::ManualClock) are unchanged.
//!
//! The TSC and the OS clock tick at rates that differ by quanta's calibration error
//! (parts per million, more when calibrated under load), so a fixed mapping between
//! the two would drift apart by milliseconds per hour. Every conversion between an
//! offset and a std [`Instant`] (a sleeper's deadline, [`NotUntil::earliest`], a
//! caller's deadline) is therefore made *live*: it reads both clocks now and converts
//! the difference, so the error is parts per million of the interval converted, never
//! of the process's age. Admission decisions use the TSC alone.
//!
//! [`NotUntil::earliest`]: super::NotUntil::earliest

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
        self.clock.delta_as_nanos(self.raw0, self.clock.raw())
    }
}

static TSC: OnceLock<Tsc> = OnceLock::new();

fn tsc() -> &'static Tsc {
    TSC.get_or_init(|| {
        let clock = quanta::Clock::new(); // calibrates once per process (~0.6 ms here)
        let raw0 = clock.raw();
        Tsc { clock, raw0 }
    })
}

/// How offsets map onto std instants.
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
    t.checked_add(d)
        .unwrap_or_else(|| t + Duration::from_secs(1 << 32))
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A clock plus the anchor that state offsets count from.
pub(crate) struct Timeline<C> {
    clock: C,
    anchor: Anchor,
}

impl<C: Clock> Timeline<C> {
    pub(crate) fn new(clock: C) -> Self {
        let anchor = if TypeId::of::<C>() == TypeId::of::<SystemClock>() {
            Anchor::Tsc(tsc())
        } else {
            Anchor::Fixed(clock.now())
        };
        Timeline { clock, anchor }
    }

    /// Nanoseconds since the base, now.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        match self.anchor {
            Anchor::Tsc(tsc) => tsc.now(),
            Anchor::Fixed(base) => nanos(self.clock.now().saturating_duration_since(base)),
        }
    }

    pub(crate) fn anchor(&self) -> Anchor {
        self.anchor
    }

    pub(crate) fn clock(&self) -> &C {
        &self.clock
    }
}

impl<C: Clock> std::fmt::Debug for Timeline<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timeline")
            .field("clock", &self.clock)
            .field("anchor", &self.anchor)
            .finish()
    }
}
