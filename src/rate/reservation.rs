//! [`Reservation`]: cells claimed now, usable later, that can be given back.
//!
//! Implementation notes. A reservation is the engine's `Grant` (the TAT before and
//! after the claim, the slot's offset, the span and the configuration epoch) plus a
//! borrow of its limiter. `cancel` hands the grant to `Gcra::give_back`, which undoes
//! it exactly when the TAT still equals what the claim set, and otherwise returns the
//! cells not built on by later claims (x/time/rate's `CancelAt`), only while the slot
//! lies ahead.

use std::fmt;
use std::time::{Duration, Instant};

use super::gcra::Grant;
use super::{RateLimiter, WaitError};
use crate::cancel::CancelToken;
use crate::clock::{Clock, SystemClock};
use crate::sync::Ordering;

/// Cells claimed by [`RateLimiter::reserve_n`], usable from [`ready_at`](Reservation::ready_at).
///
/// The claim stands until [`cancel`](Reservation::cancel) gives it back; dropping a
/// reservation keeps it (the cells count as used), as in x/time/rate. Cancelling
/// returns every cell when no later caller has claimed cells after this one, and
/// otherwise the cells minus those claimed since, while the slot still lies ahead.
///
/// # Example
///
/// ```
/// use corral::{ManualClock, RateLimiter};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let limiter = RateLimiter::per_second(1).clock(clock.clone()).build()?;
/// limiter.check().unwrap();
/// let r = limiter.reserve();
/// assert_eq!(r.delay(), Duration::from_secs(1));
/// assert!(r.cancel()); // nobody claimed after it: the cell is back
/// clock.advance(Duration::from_secs(1));
/// assert!(limiter.check().is_ok());
/// # Ok::<(), corral::ConfigError>(())
/// ```
#[must_use = "a reservation holds cells; wait for it, or cancel it to give them back"]
pub struct Reservation<'a, C: Clock = SystemClock> {
    pub(super) limiter: &'a RateLimiter<C>,
    pub(super) grant: Grant,
    pub(super) cells: u32,
}

impl<C: Clock> Reservation<'_, C> {
    /// The instant (on the limiter's clock) from which the cells may be used.
    ///
    /// # Example
    ///
    /// ```
    /// use corral::{Clock, ManualClock, RateLimiter};
    /// let clock = ManualClock::new();
    /// let limiter = RateLimiter::per_second(1).clock(clock.clone()).build()?;
    /// assert_eq!(limiter.reserve().ready_at(), clock.now());
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn ready_at(&self) -> Instant {
        self.limiter.time.anchor().instant(self.grant.ready)
    }

    /// How long from now until the cells may be used (zero when they may be used now).
    ///
    /// # Example
    ///
    /// ```
    /// let limiter = corral::RateLimiter::per_second(1).build()?;
    /// assert_eq!(limiter.reserve().delay(), std::time::Duration::ZERO);
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn delay(&self) -> Duration {
        Duration::from_nanos(self.grant.ready.saturating_sub(self.limiter.now()))
    }

    /// Whether the cells may be used now.
    ///
    /// # Example
    ///
    /// ```
    /// let limiter = corral::RateLimiter::per_second(1).build()?;
    /// assert!(limiter.reserve().is_ready());
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn is_ready(&self) -> bool {
        self.grant.ready <= self.limiter.now()
    }

    /// The number of cells claimed.
    ///
    /// # Example
    ///
    /// ```
    /// let limiter = corral::RateLimiter::per_second(5).build()?;
    /// assert_eq!(limiter.reserve_n(3).unwrap().cells(), 3);
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn cells(&self) -> u32 {
        self.cells
    }

    /// Sleeps on the limiter's clock until the cells may be used.
    ///
    /// # Example
    ///
    /// ```
    /// let limiter = corral::RateLimiter::per_second(1000).burst(1).build()?;
    /// limiter.reserve().wait();
    /// limiter.reserve().wait(); // about a millisecond later
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn wait(self) {
        let _ = self
            .limiter
            .sleep_for(&self.grant, self.limiter.now(), None);
    }

    /// Sleeps until the cells may be used or `token` is cancelled; a cancelled wait
    /// gives the cells back as [`cancel`](Reservation::cancel) does.
    ///
    /// # Errors
    ///
    /// [`WaitError::Cancelled`] when the token is (or becomes) cancelled.
    ///
    /// # Example
    ///
    /// ```
    /// let limiter = corral::RateLimiter::per_second(1).build()?;
    /// let token = corral::CancelToken::new();
    /// assert!(limiter.reserve().wait_cancellable(&token).is_ok());
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn wait_cancellable(self, token: &CancelToken) -> Result<(), WaitError> {
        if let Some(reason) = token.reason() {
            self.cancel();
            return Err(WaitError::Cancelled(reason));
        }
        self.limiter
            .sleep_for(&self.grant, self.limiter.now(), Some(token))
    }

    /// Gives the cells back (those no later caller has built on, while the slot still
    /// lies ahead, or all of them when nobody claimed cells after this reservation).
    /// Returns whether any capacity came back.
    ///
    /// # Example
    ///
    /// ```
    /// let limiter = corral::RateLimiter::per_second(1).build()?;
    /// let r = limiter.reserve();
    /// assert_eq!(limiter.available(), 0);
    /// assert!(r.cancel());
    /// assert_eq!(limiter.available(), 1);
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn cancel(self) -> bool {
        let returned = self.limiter.gcra.give_back(&self.grant, self.limiter.now());
        if returned {
            self.limiter.gave_back.fetch_add(1, Ordering::Relaxed);
        }
        returned
    }
}

impl<C: Clock> fmt::Debug for Reservation<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("cells", &self.cells)
            .field("ready_at", &self.ready_at())
            .finish()
    }
}
