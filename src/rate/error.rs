//! What the rate limiters return when a request does not pass.

use std::fmt;
use std::time::{Duration, Instant};

use super::gcra::NEVER;
use crate::cancel::CancelReason;
use crate::timeline::duration_from_nanos;
use crate::timeline::Anchor;

/// A request was refused now; it would conform at [`earliest`](NotUntil::earliest).
///
/// Returned by [`RateLimiter::check`](crate::RateLimiter::check) and inside
/// [`CheckError`] and [`WaitError::Timeout`].
///
/// # Example
///
/// ```
/// use corral::{clock::{Clock, ManualClock}, RateLimiter};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let limiter = RateLimiter::per_second(2).burst(1).clock(clock.clone()).build()?;
/// limiter.check().unwrap();
/// let refused = limiter.check().unwrap_err();
/// assert_eq!(refused.wait_time(), Duration::from_millis(500));
/// assert_eq!(refused.earliest(), clock.now() + Duration::from_millis(500));
/// # Ok::<(), corral::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotUntil {
    // Kept raw so that a refusal costs no instant arithmetic until someone asks.
    anchor: Anchor,
    /// The offset the request conforms at, with `u64::MAX` for "never" (a slot past
    /// the horizon). No slot that can be reached lies there: a slot is at most the
    /// timeline's end less one tolerance (at least a nanosecond), and a clock already
    /// at the end no longer moves. Narrow, so a refusal is four words, not six.
    at: u64,
    now: u64,
}

impl NotUntil {
    /// Refused at offset `now` on `anchor`'s timeline; conforms at offset `at`
    /// ([`NEVER`] or beyond: never).
    pub(crate) fn new(anchor: Anchor, at: u128, now: u64) -> Self {
        NotUntil {
            anchor,
            at: u64::try_from(at).unwrap_or(u64::MAX),
            now,
        }
    }

    /// Refused at offset `now`; conforms at offset `at` (`u64::MAX`: never).
    #[inline]
    pub(crate) fn at_slot(anchor: Anchor, at: u64, now: u64) -> Self {
        NotUntil { anchor, at, now }
    }

    /// The slot as a wide offset ([`NEVER`] for never).
    fn at(&self) -> u128 {
        match self.at {
            u64::MAX => NEVER,
            at => u128::from(at),
        }
    }

    /// The earliest instant (on the limiter's clock) at which the request would pass.
    ///
    /// A request that can never pass (its slot would lie past the limiter's time
    /// horizon, about 584 years after the limiter was built; see
    /// [`RateLimiter`](crate::RateLimiter)) gets the latest instant that can be
    /// represented, and [`wait_time`](NotUntil::wait_time) is then [`Duration::MAX`].
    pub fn earliest(&self) -> Instant {
        self.anchor.instant_wide(self.at())
    }

    /// How long the caller would have to wait, measured when the request was refused
    /// ([`Duration::MAX`] when it can never pass).
    pub fn wait_time(&self) -> Duration {
        if self.at() >= NEVER {
            return Duration::MAX;
        }
        duration_from_nanos(self.at().saturating_sub(u128::from(self.now)))
    }

    /// Whether the request can never pass on this limiter: its slot would lie past
    /// the limiter's time horizon (short of reservations ahead of it being cancelled,
    /// the only way capacity already claimed comes back).
    ///
    /// # Example
    ///
    /// ```
    /// use corral::{clock::ManualClock, RateLimiter};
    /// use std::time::Duration;
    ///
    /// let clock = ManualClock::new();
    /// let limiter = RateLimiter::per_second(1).clock(clock.clone()).build()?;
    /// limiter.check().unwrap();
    /// assert!(!limiter.check().unwrap_err().is_never()); // one second away
    /// clock.advance(Duration::MAX); // the clock's end of time
    /// assert!(limiter.check().is_ok()); // the refilled burst is there
    /// assert!(limiter.check().unwrap_err().is_never()); // and time no longer moves
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn is_never(&self) -> bool {
        self.at() >= NEVER
    }

    /// How long from `now` until [`earliest`](NotUntil::earliest) (zero once it passed).
    pub fn wait_time_from(&self, now: Instant) -> Duration {
        self.earliest().saturating_duration_since(now)
    }
}

impl fmt::Display for NotUntil {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rate limit reached: next slot in {:?}", self.wait_time())
    }
}

impl std::error::Error for NotUntil {}

/// More cells were requested at once than the burst allows: the request can never pass.
///
/// # Example
///
/// ```
/// use corral::RateLimiter;
///
/// let limiter = RateLimiter::per_second(10).burst(4).build()?;
/// let err = limiter.reserve_n(5).unwrap_err();
/// assert_eq!((err.requested(), err.burst()), (5, 4));
/// # Ok::<(), corral::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InsufficientCapacity {
    requested: u32,
    burst: u32,
}

impl InsufficientCapacity {
    pub(crate) fn new(requested: u32, burst: u64) -> Self {
        InsufficientCapacity {
            requested,
            burst: u32::try_from(burst).unwrap_or(u32::MAX),
        }
    }

    /// The number of cells requested.
    pub fn requested(&self) -> u32 {
        self.requested
    }

    /// The limiter's burst when the request was made.
    pub fn burst(&self) -> u32 {
        self.burst
    }
}

impl fmt::Display for InsufficientCapacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "requested {} cells but the burst is {}, so the request can never pass",
            self.requested, self.burst
        )
    }
}

impl std::error::Error for InsufficientCapacity {}

/// Why [`check_n`](crate::RateLimiter::check_n) refused a request.
///
/// # Example
///
/// ```
/// use corral::{rate::CheckError, RateLimiter};
///
/// let limiter = RateLimiter::per_second(10).burst(4).build()?;
/// assert!(limiter.check_n(4).is_ok());
/// assert!(matches!(limiter.check_n(4), Err(CheckError::NotUntil(_))));
/// assert!(matches!(limiter.check_n(5), Err(CheckError::InsufficientCapacity(_))));
/// # Ok::<(), corral::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckError {
    /// Not now; the request would pass at the instant given.
    NotUntil(NotUntil),
    /// More cells than the burst: the request can never pass.
    InsufficientCapacity(InsufficientCapacity),
}

/// Describes this error only: the [`NotUntil`] or [`InsufficientCapacity`] inside is
/// its [`source`](std::error::Error::source).
impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CheckError::NotUntil(_) => "request refused for now",
            CheckError::InsufficientCapacity(_) => "request refused for good",
        })
    }
}

impl std::error::Error for CheckError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CheckError::NotUntil(e) => Some(e),
            CheckError::InsufficientCapacity(e) => Some(e),
        }
    }
}

impl From<NotUntil> for CheckError {
    fn from(e: NotUntil) -> Self {
        CheckError::NotUntil(e)
    }
}

impl From<InsufficientCapacity> for CheckError {
    fn from(e: InsufficientCapacity) -> Self {
        CheckError::InsufficientCapacity(e)
    }
}

/// Why a blocking [`wait`](crate::RateLimiter::wait_timeout) did not get its cells.
///
/// A failed wait either failed before claiming a slot (using no capacity), or was
/// cancelled while asleep and gave its slot back, unless a later caller's slot was
/// placed after it (then the slot stays used: it is never handed out twice).
///
/// # Example
///
/// ```
/// use corral::{clock::ManualClock, RateLimiter, rate::WaitError};
/// use std::time::Duration;
///
/// let limiter = RateLimiter::per_second(1).burst(1).clock(ManualClock::new()).build()?;
/// limiter.wait_timeout(Duration::ZERO)?; // the burst is free
/// // The next slot is a second away: a 10 ms budget fails at once, without sleeping.
/// match limiter.wait_timeout(Duration::from_millis(10)) {
///     Err(WaitError::Timeout(at)) => assert_eq!(at.wait_time(), Duration::from_secs(1)),
///     other => panic!("unexpected {other:?}"),
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaitError {
    /// The slot lies past the caller's deadline; it would pass at the instant given.
    /// Returned at once, without sleeping.
    Timeout(NotUntil),
    /// The caller's token was cancelled (before or while sleeping).
    Cancelled(CancelReason),
    /// More cells than the burst: the request can never pass.
    InsufficientCapacity(InsufficientCapacity),
}

/// Describes this error only: the [`NotUntil`] of [`WaitError::Timeout`] and the
/// [`InsufficientCapacity`] are its [`source`](std::error::Error::source).
impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitError::Timeout(_) => f.write_str("wait timed out"),
            WaitError::Cancelled(reason) => write!(f, "wait {reason}"),
            WaitError::InsufficientCapacity(_) => f.write_str("wait refused for good"),
        }
    }
}

impl std::error::Error for WaitError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WaitError::Timeout(e) => Some(e),
            WaitError::InsufficientCapacity(e) => Some(e),
            WaitError::Cancelled(_) => None,
        }
    }
}

impl From<InsufficientCapacity> for WaitError {
    fn from(e: InsufficientCapacity) -> Self {
        WaitError::InsufficientCapacity(e)
    }
}
