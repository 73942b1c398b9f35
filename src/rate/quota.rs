//! What both rate limiter fronts share: a rate as the builders take it ([`Quota`]),
//! the check that a burst fits the timeline, the latest slot a bounded wait accepts
//! ([`Bound`]), and the sleep until a claimed slot.

use std::time::Duration;

use super::error::{NotUntil, WaitError};
use super::gcra::{MAX_SPAN_NANOS, NEVER};
use crate::cancel::{CancelReason, CancelToken};
use crate::clock::Clock;
use crate::config::ConfigError;
use crate::timeline::{Anchor, Timeline};
use crate::wait::Until;

pub(super) const NANOS_PER_SEC: u64 = 1_000_000_000;

/// A rate as the builders take it: the emission interval in nanoseconds, or why not.
#[derive(Clone, Debug)]
pub(super) struct Quota {
    pub(super) interval: Result<u64, ConfigError>,
    default_burst: u32,
}

impl Quota {
    pub(super) fn per(cells: u32, period_nanos: u64, field: &'static str) -> Quota {
        let interval = if cells == 0 {
            Err(ConfigError::new(field, cells, "rate must be at least 1"))
        } else {
            match period_nanos / u64::from(cells) {
                0 => Err(ConfigError::new(
                    field,
                    cells,
                    "more than one cell per nanosecond is not supported",
                )),
                interval => Ok(interval),
            }
        };
        Quota {
            interval,
            default_burst: cells.max(1),
        }
    }

    pub(super) fn with_period(period: Duration) -> Quota {
        let nanos = period.as_nanos();
        let interval = if nanos == 0 {
            Err(ConfigError::new(
                "with_period",
                period,
                "period must be positive",
            ))
        } else if nanos > u128::from(MAX_SPAN_NANOS) {
            Err(ConfigError::new(
                "with_period",
                period,
                "period must not exceed 2^62 ns (about 146 years)",
            ))
        } else {
            // At most MAX_SPAN_NANOS, checked above.
            Ok(u64::try_from(nanos).unwrap_or(MAX_SPAN_NANOS))
        };
        Quota {
            interval,
            default_burst: 1,
        }
    }

    /// The validated `(interval, burst)` pair.
    pub(super) fn resolve(&self, burst: Option<u32>) -> Result<(u64, u64), ConfigError> {
        let interval = self.interval.clone()?;
        let burst = burst.unwrap_or(self.default_burst);
        check_burst(burst, interval)?;
        Ok((interval, u64::from(burst)))
    }
}

pub(super) fn check_burst(burst: u32, interval: u64) -> Result<(), ConfigError> {
    if burst == 0 {
        return Err(ConfigError::new("burst", burst, "burst must be at least 1"));
    }
    if u64::from(burst).saturating_mul(interval) > MAX_SPAN_NANOS {
        return Err(ConfigError::new(
            "burst",
            burst,
            "burst times period must not exceed 2^62 ns (about 146 years)",
        ));
    }
    Ok(())
}

/// Sleeps on `time`'s clock until offset `ready`; `false` when `token` stopped it. A
/// slot at [`NEVER`] (a claim past the horizon, which claimed nothing) is never
/// reached: the sleep ends only by the token.
pub(super) fn sleep_until_ready<C: Clock + ?Sized>(
    time: &Timeline<C>,
    ready: u128,
    token: Option<&CancelToken>,
) -> bool {
    let wake = time.anchor().instant_wide(ready);
    loop {
        if !time.clock().sleep_until(wake, token) {
            return false;
        }
        if ready < NEVER {
            return true;
        }
    }
}

/// The latest slot a bounded wait accepts, as an offset on the limiter's timeline.
pub(super) struct Bound {
    pub(super) latest: Option<u64>,
    /// Whether the token's deadline, not the caller's, is the tighter bound.
    pub(super) token_binds: bool,
}

impl Bound {
    pub(super) fn new(anchor: Anchor, until: &Until<'_>, now: u64) -> Bound {
        let caller = until.caller_deadline().map(|d| anchor.offset(d));
        let token = until
            .token()
            .and_then(CancelToken::deadline)
            .map(|d| anchor.offset(d));
        let token_binds = match (caller, token) {
            (Some(c), Some(t)) => t < c,
            (None, Some(_)) => true,
            _ => false,
        };
        // A cell free now always passes: the call fails only if it would have to sleep
        // past its bound (this also absorbs the skew between a deadline read from the
        // clock and the timeline's own reading of now).
        let latest = match (caller, token) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
        .map(|latest| latest.max(now));
        Bound {
            latest,
            token_binds,
        }
    }

    /// The error for a slot past the bound: a timeout, or the token's deadline.
    pub(super) fn refusal(&self, slot: NotUntil) -> WaitError {
        if self.token_binds {
            WaitError::Cancelled(CancelReason::DeadlineExceeded)
        } else {
            WaitError::Timeout(slot)
        }
    }
}
