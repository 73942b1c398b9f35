//! [`Reservation`]: cells claimed now, usable later, that can be given back.
//!
//! Implementation notes. A reservation is the engine's `Grant` (the TAT before and
//! after the claim, the slot's offset, the span and the configuration epoch) plus a
//! borrow of its limiter. `cancel` hands the grant to `Gcra::give_back`, which undoes
//! it exactly when no claim stands after it and its slot has not passed, and returns
//! nothing otherwise.

use std::fmt;
use std::time::{Duration, Instant};

use super::gcra::{Grant, NEVER};
use super::{RateLimiter, WaitError};
use crate::cancel::CancelToken;
use crate::clock::{Clock, SystemClock};
use crate::sync::Ordering;
use crate::timeline::duration_from_nanos;

/// Cells claimed by [`RateLimiter::reserve_n`], usable from [`ready_at`](Reservation::ready_at).
///
/// The claim stands until [`cancel`](Reservation::cancel) gives it back; dropping a
/// reservation keeps it (the cells count as used), as in x/time/rate. Cancelling
/// returns nothing once the slot has passed (`ready_at` before now: the cells may
/// have been used, as in x/time/rate's `CancelAt`), nothing while a later claim
/// stands after this one (its slot was placed after these cells), and otherwise
/// undoes the claim exactly. A reservation is cancelled at most once: `cancel` and
/// the waits take it by value.
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
    /// use corral::{clock::{Clock, ManualClock}, RateLimiter};
    /// let clock = ManualClock::new();
    /// let limiter = RateLimiter::per_second(1).clock(clock.clone()).build()?;
    /// assert_eq!(limiter.reserve().ready_at(), clock.now());
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn ready_at(&self) -> Instant {
        self.limiter.time.anchor().instant_wide(self.grant.ready)
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
        if self.is_never() {
            return Duration::MAX;
        }
        duration_from_nanos(
            self.grant
                .ready
                .saturating_sub(u128::from(self.limiter.now())),
        )
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
        self.grant.ready <= u128::from(self.limiter.now())
    }

    /// Whether the reservation can never be used: its slot would lie past the
    /// limiter's time horizon (about 584 years after the limiter was built), so it
    /// claimed nothing. Its [`delay`](Reservation::delay) is [`Duration::MAX`],
    /// [`wait`](Reservation::wait) never returns, [`wait_cancellable`](Reservation::wait_cancellable)
    /// returns only when the token is cancelled, and [`cancel`](Reservation::cancel)
    /// gives nothing back.
    ///
    /// # Example
    ///
    /// ```
    /// use corral::{clock::ManualClock, RateLimiter};
    /// use std::time::Duration;
    ///
    /// let clock = ManualClock::new();
    /// let limiter = RateLimiter::per_second(1).clock(clock.clone()).build()?;
    /// assert!(!limiter.reserve().is_never());
    /// clock.advance(Duration::MAX); // the clock's end of time
    /// limiter.check().unwrap(); // the last cell whose TAT fits the timeline
    /// let never = limiter.reserve(); // a slot after that cannot be represented
    /// assert!(never.is_never());
    /// assert_eq!(never.delay(), Duration::MAX);
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn is_never(&self) -> bool {
        self.grant.ready >= NEVER
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

    /// Gives the cells back: all of them when no claim stands after this one and
    /// its slot has not passed; nothing once the slot has passed (the cells may have
    /// been used) or while a later claim stands (it was placed after these cells;
    /// cancel the later claims first, last one first, to undo them all). Returns
    /// whether the cells came back.
    ///
    /// # Example
    ///
    /// ```
    /// use corral::{clock::ManualClock, RateLimiter};
    /// use std::time::Duration;
    ///
    /// let clock = ManualClock::new();
    /// let limiter = RateLimiter::per_second(1).clock(clock.clone()).build()?;
    /// let r = limiter.reserve();
    /// assert_eq!(limiter.available(), 0);
    /// assert!(r.cancel()); // still at its instant: the cell comes back
    /// assert_eq!(limiter.available(), 1);
    ///
    /// let late = limiter.reserve();
    /// clock.advance(Duration::from_millis(1)); // its slot has passed
    /// assert!(!late.cancel()); // the cell may have been used: nothing comes back
    /// assert_eq!(limiter.available(), 0);
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
