//! The limiter's timeline: nanoseconds since a base instant, read from its [`Clock`].
//!
//! Implementation notes. GCRA state is one `u64` of nanoseconds, so the limiter needs
//! "now" as nanoseconds since a fixed base. For any clock that is
//! `clock.now() - base`. Reading [`Instant::now`] costs about 28 ns on the VMs this crate
//! is benchmarked on, which is most of the cost of a `check()`, so when the clock is
//! exactly [`SystemClock`] the timeline reads the CPU's time-stamp counter through
//! `quanta` instead (about a third of the cost) and maps its readings onto std time:
//! one process-wide anchor pairs a `quanta` raw reading with an `Instant` taken at the
//! same moment, and a reading `r` stands for `anchor + delta_as_nanos(raw0, r)`. So the
//! [`Clock`] trait and [`ManualClock`](crate::ManualClock) are unchanged, instants handed
//! to users are plain `Instant`s, and sleeping still goes through
//! [`Clock::sleep_until`]. The two sources may drift apart by quanta's calibration
//! error (parts per million); the admission arithmetic uses one source only, so drift
//! can make a sleeper wake a hair early or late but never changes how many calls pass.
//! Where the CPU has no invariant TSC, quanta itself falls back to the OS clock.

use std::any::TypeId;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::clock::{Clock, SystemClock};

/// The process-wide pairing of a TSC reading with a std instant.
struct Tsc {
    clock: quanta::Clock,
    raw0: u64,
    base: Instant,
}

static TSC: OnceLock<Tsc> = OnceLock::new();

fn tsc() -> &'static Tsc {
    TSC.get_or_init(|| {
        let clock = quanta::Clock::new(); // calibrates once per process
        let base = Instant::now();
        let raw0 = clock.raw();
        Tsc { clock, raw0, base }
    })
}

/// A clock plus the base instant that state offsets count from.
pub(crate) struct Timeline<C> {
    clock: C,
    base: Instant,
    fast: Option<&'static Tsc>,
}

impl<C: Clock> Timeline<C> {
    pub(crate) fn new(clock: C) -> Self {
        if TypeId::of::<C>() == TypeId::of::<SystemClock>() {
            let fast = tsc();
            Timeline {
                clock,
                base: fast.base,
                fast: Some(fast),
            }
        } else {
            let base = clock.now();
            Timeline {
                clock,
                base,
                fast: None,
            }
        }
    }

    /// Nanoseconds since the base, now.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        match self.fast {
            Some(tsc) => tsc.clock.delta_as_nanos(tsc.raw0, tsc.clock.raw()),
            None => self.nanos_of(self.clock.now()),
        }
    }

    /// The offset of `t` from the base (0 for instants before it).
    pub(crate) fn nanos_of(&self, t: Instant) -> u64 {
        let since = t.saturating_duration_since(self.base);
        u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
    }

    /// The instant at offset `nanos`.
    pub(crate) fn instant(&self, nanos: u64) -> Instant {
        let offset = Duration::from_nanos(nanos);
        self.base
            .checked_add(offset)
            .unwrap_or_else(|| self.base + Duration::from_secs(1 << 32))
    }

    /// The instant offsets count from.
    pub(crate) fn base(&self) -> Instant {
        self.base
    }

    pub(crate) fn clock(&self) -> &C {
        &self.clock
    }
}

impl<C: Clock> std::fmt::Debug for Timeline<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timeline")
            .field("clock", &self.clock)
            .field("tsc", &self.fast.is_some())
            .finish()
    }
}
