//! Rate limiting by GCRA: [`RateLimiter`] for one shared limit, [`KeyedRateLimiter`]
//! for one limit per key. (For a limit shared by processes, the `redis` feature adds
//! `RedisRateLimiter`, in `corral::fleet`.)
//!
//! A limit is a rate and a burst: `burst` cells at once, then one more every interval.
//! [`check`](RateLimiter::check) decides at once and, when it refuses, says when the
//! cell would pass ([`NotUntil`]); [`wait`](RateLimiter::wait) and its bounded forms
//! sleep until then; [`reserve_n`](RateLimiter::reserve_n) claims cells that can be
//! given back ([`Reservation`], as in Go's x/time/rate).
//!
//! # How it works
//!
//! A decision is one compare-and-swap on one atomic word (the GCRA's theoretical
//! arrival time), so checks never block each other. Waits never spin: a waiter claims
//! its slot first (failing at once, claiming nothing, when the slot lies past its
//! deadline), then sleeps on the limiter's clock until the slot comes, so a
//! [`ManualClock`](crate::clock::ManualClock) test wakes it by advancing time. A waiter
//! cancelled while sleeping gives its slot back when no later claim stands after it.
//! The keyed limiter remembers at most `max_keys` keys, forgets first the keys whose
//! state is indistinguishable from a fresh key's, and never refuses a key for lack of
//! room.
//
// Layout: the GCRA engine is `gcra.rs`, the keyed maps `keyed.rs`, what both fronts
// share (a rate as the builders take it, the bound of a wait) `quota.rs`, and time
// comes from the crate's timeline (`src/timeline.rs`).

mod error;
mod gcra;
mod keyed;
mod quota;
mod reservation;
mod tally;

use std::fmt;
use std::time::{Duration, Instant};

use crate::cancel::{CancelReason, CancelToken};
use crate::clock::{Clock, SystemClock};
use crate::config::ConfigError;
use crate::sync::{AtomicU64, Ordering};
use crate::wait::Until;
use std::sync::Arc;

pub use error::{CheckError, InsufficientCapacity, NotUntil, WaitError};
pub use keyed::{KeyedRateLimiter, KeyedRateLimiterBuilder, KeyedStats};
pub use reservation::Reservation;

use crate::timeline::Timeline;
use gcra::{Gcra, Grant, OneCell, Refusal, MAX_SPAN_NANOS};
use quota::{check_burst, sleep_until_ready, Bound, Quota, NANOS_PER_SEC};
use tally::Tally;

/// A lock-free GCRA rate limiter: `rate` cells per period, with bursts of up to `burst`.
///
/// Built by [`per_second`](RateLimiter::per_second), [`per_minute`](RateLimiter::per_minute)
/// or [`with_period`](RateLimiter::with_period) (one cell per period). The burst defaults
/// to the number of cells per period (1 for `with_period`), and a fresh limiter starts
/// with the whole burst available.
///
/// - [`check`](RateLimiter::check) / [`check_n`](RateLimiter::check_n) decide at once,
///   lock-free, and say when a refused request would pass ([`NotUntil`]). (A call
///   that meets a `set_rate` or `set_burst` in progress waits for it: a few loads and
///   stores under the writer's lock.)
/// - [`wait`](RateLimiter::wait) and its bounded forms sleep on the limiter's [`Clock`]
///   until the caller's slot. A slot past the deadline fails at once without using
///   capacity; a wait cancelled while sleeping gives its slot back unless a later
///   claim stands after it.
/// - [`reserve_n`](RateLimiter::reserve_n) claims cells and says when they may be used;
///   [`Reservation::cancel`] gives them back (all-or-nothing across several limiters).
/// - [`set_rate`](RateLimiter::set_rate) / [`set_burst`](RateLimiter::set_burst) change
///   the limit at run time, keeping the capacity already used. A call racing with
///   the change is judged wholly by the old limit or wholly by the new one (one
///   exception, a delayed call meeting its exact state again, is described under
///   Limits).
///
/// Waiters are served in the order they claim slots (each claim is one CAS), which is
/// first come, first served up to the instant of the claim.
///
/// # Limits
///
/// - Rates: at most one cell per nanosecond; `burst × interval` at most 2^62 ns (about
///   146 years); burst at most `u32::MAX` within that.
/// - **Time horizon.** The limiter keeps time as `u64` nanoseconds since it was built
///   (about 584 years) and its arithmetic is exact: nothing saturates into an
///   admission. It limits exactly at its rate up to that end, with a clock of any
///   kind (a [`ManualClock`](crate::clock::ManualClock) advanced by `Duration::MAX` included),
///   except that a cell whose slot would land past the end is refused for good
///   ([`NotUntil::is_never`]): never more than the limit, at most one burst short of
///   it in the last `burst × interval` of the timeline. A reservation or unbounded
///   wait whose slot would lie past the end claims nothing and is never ready
///   ([`Reservation::is_never`]).
/// - Reconfiguring under load: a call that read the state before a `set_rate` or
///   `set_burst` and is delayed past it is still judged by the old limit if, by
///   then, calls under the new one have brought the state back to the exact
///   nanosecond it read (a compare-and-swap cannot tell the two apart). It is then
///   admitted at most its own cells beyond the new limit, once. With the system
///   clock that takes a coincidence to the nanosecond; on a frozen
///   [`ManualClock`](crate::clock::ManualClock) it can be arranged.
/// - Giving back: a cancelled reservation or wait returns nothing once its slot has
///   passed (as x/time/rate's `CancelAt`: the cells may have been used), nothing while
///   a later claim stands after it (that claim's slot was placed after these cells),
///   and nothing after a reconfiguration; otherwise it is undone exactly. So a give-back
///   never lets more than the limit through.
///
/// # Example
///
/// ```
/// use corral::{clock::ManualClock, RateLimiter};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let limiter = RateLimiter::per_second(1).burst(5).clock(clock.clone()).build()?;
/// let admitted = (0..15).filter(|_| limiter.check().is_ok()).count();
/// assert_eq!(admitted, 5); // the burst
/// clock.advance(Duration::from_secs(1));
/// assert!(limiter.check().is_ok()); // one more per second
/// assert!(limiter.check().is_err());
/// # Ok::<(), corral::ConfigError>(())
/// ```
pub struct RateLimiter<C: Clock = SystemClock> {
    gcra: Gcra,
    time: Timeline<C>,
    tally: Tally,
    slept: AtomicU64,
    gave_back: AtomicU64,
    refused_at_once: AtomicU64,
}

/// Configures a [`RateLimiter`]; made by [`RateLimiter::per_second`] and friends.
///
/// # Example
///
/// ```
/// use corral::RateLimiter;
/// use std::time::Duration;
///
/// let limiter = RateLimiter::with_period(Duration::from_millis(100)).burst(3).build()?;
/// assert_eq!(limiter.burst(), 3);
/// assert_eq!(limiter.interval(), Duration::from_millis(100));
/// # Ok::<(), corral::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct RateLimiterBuilder<C = SystemClock> {
    quota: Quota,
    burst: Option<u32>,
    clock: C,
    name: Option<Arc<str>>,
}

impl RateLimiter {
    /// A limiter admitting `cells` per second, with a burst of `cells` unless
    /// [`burst`](RateLimiterBuilder::burst) says otherwise.
    ///
    /// `0` (or more than 10⁹) is reported by [`build`](RateLimiterBuilder::build) as a
    /// [`ConfigError`] naming `per_second`.
    ///
    /// # Example
    ///
    /// ```
    /// let limiter = corral::RateLimiter::per_second(100).build()?;
    /// assert!(limiter.check_n(100).is_ok());
    /// assert!(corral::RateLimiter::per_second(0).build().is_err());
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn per_second(cells: u32) -> RateLimiterBuilder {
        RateLimiterBuilder::new(Quota::per(cells, NANOS_PER_SEC, "per_second"))
    }

    /// A limiter admitting `cells` per minute, with a burst of `cells` by default.
    ///
    /// # Example
    ///
    /// ```
    /// let limiter = corral::RateLimiter::per_minute(60).burst(1).build()?;
    /// assert_eq!(limiter.interval(), std::time::Duration::from_secs(1));
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn per_minute(cells: u32) -> RateLimiterBuilder {
        RateLimiterBuilder::new(Quota::per(cells, 60 * NANOS_PER_SEC, "per_minute"))
    }

    /// A limiter admitting one cell per `period`, with a burst of 1 by default.
    ///
    /// A zero period is reported by `build` as a [`ConfigError`] naming `with_period`.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// let err = corral::RateLimiter::with_period(Duration::ZERO).build().unwrap_err();
    /// assert_eq!(err.field(), "with_period");
    /// ```
    pub fn with_period(period: Duration) -> RateLimiterBuilder {
        RateLimiterBuilder::new(Quota::with_period(period))
    }
}

impl RateLimiterBuilder {
    fn new(quota: Quota) -> Self {
        RateLimiterBuilder {
            quota,
            burst: None,
            clock: SystemClock,
            name: None,
        }
    }
}

impl<C: Clock> RateLimiterBuilder<C> {
    /// The most cells admitted at one instant (and the most one request may ask for).
    /// `0` is reported by `build` as a [`ConfigError`] naming `burst`.
    ///
    /// # Example
    ///
    /// ```
    /// let limiter = corral::RateLimiter::per_second(10).burst(2).build()?;
    /// assert_eq!(limiter.available(), 2);
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }

    /// The clock the limiter reads and sleeps on ([`SystemClock`] by default).
    ///
    /// # Example
    ///
    /// ```
    /// use corral::{clock::ManualClock, RateLimiter};
    /// let limiter = RateLimiter::per_second(1).clock(ManualClock::new()).build()?;
    /// # let _ = limiter;
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn clock<C2: Clock>(self, clock: C2) -> RateLimiterBuilder<C2> {
        RateLimiterBuilder {
            quota: self.quota,
            burst: self.burst,
            clock,
            name: self.name,
        }
    }

    /// A name for the limiter, shown in its `Debug`, in the thread dump (as "waiting
    /// for a slot of "name""), and in events and metrics.
    ///
    /// ```
    /// let limiter = corral::RateLimiter::per_second(5).name("upstream").build()?;
    /// assert_eq!(limiter.name(), Some("upstream"));
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(Arc::from(name.into()));
        self
    }

    /// Builds the limiter, with its whole burst available.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field: `per_second`/`per_minute` for a zero rate
    /// (or more than one cell per nanosecond), `with_period` for a zero period, `burst`
    /// for a zero burst or a burst worth more than 2^62 ns (about 146 years).
    ///
    /// # Example
    ///
    /// ```
    /// let err = corral::RateLimiter::per_second(5).burst(0).build().unwrap_err();
    /// assert_eq!(err.to_string(), "invalid burst = 0: burst must be at least 1");
    /// ```
    pub fn build(self) -> Result<RateLimiter<C>, ConfigError> {
        let (interval, burst) = self.quota.resolve(self.burst)?;
        Ok(RateLimiter {
            gcra: Gcra::new(interval, burst),
            time: Timeline::new(self.clock),
            tally: Tally::new("RateLimiter", self.name),
            slept: AtomicU64::new(0),
            gave_back: AtomicU64::new(0),
            refused_at_once: AtomicU64::new(0),
        })
    }
}

/// A snapshot of a [`RateLimiter`]: its configuration, the capacity available now, the
/// calls admitted and refused, and counters of the blocking paths. The admitted and
/// refused counts are per-thread stripes, so counting costs `check` no shared write.
///
/// # Example
///
/// ```
/// let limiter = corral::RateLimiter::per_second(10).build()?;
/// limiter.check_n(3).unwrap();
/// assert_eq!(limiter.stats().available, 7);
/// # Ok::<(), corral::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateStats {
    /// The time one cell is worth (the period divided by the rate).
    pub interval: Duration,
    /// The burst.
    pub burst: u32,
    /// Cells that would be admitted right now.
    pub available: u32,
    /// Waits (and reservation waits) that had to sleep for their slot.
    pub slept: u64,
    /// Cancelled waits and reservations that gave capacity back.
    pub gave_back: u64,
    /// Bounded waits refused at once because their slot lay past the deadline.
    pub refused_at_once: u64,
    /// Calls admitted: `check`, `check_n` and waits that got their cells (a
    /// `check_n(0)` or zero-cell wait is not counted).
    pub admitted: u64,
    /// Calls refused: `check` and `check_n` that returned an error, and waits that
    /// failed (timed out, refused at once, cancelled or above the burst).
    pub refused: u64,
}

impl<C: Clock> RateLimiter<C> {
    #[inline]
    fn now(&self) -> u64 {
        self.time.now()
    }

    fn not_until(&self, at: u128, now: u64) -> NotUntil {
        NotUntil::new(self.time.anchor(), at, now)
    }

    /// Admits one cell now, or says when it would pass. Lock-free: one atomic
    /// compare-and-swap on the limiter's state (a call meeting a `set_rate` or
    /// `set_burst` in progress waits for it). This is the `try_` form of
    /// [`wait`](RateLimiter::wait) (named `check`, as in governor).
    ///
    /// # Errors
    ///
    /// [`NotUntil`] with the earliest instant at which a cell would be admitted.
    ///
    /// # Example
    ///
    /// ```
    /// let limiter = corral::RateLimiter::per_second(1).build()?;
    /// assert!(limiter.check().is_ok());
    /// let later = limiter.check().unwrap_err();
    /// assert!(later.wait_time() <= std::time::Duration::from_secs(1));
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    // Always inlined: left to itself the compiler calls it out of line, and the call
    // with its register saves is a visible share of a call this short.
    #[inline(always)]
    #[doc(alias = "try_wait")]
    pub fn check(&self) -> Result<(), NotUntil> {
        let now = self.now();
        let checked = match self.gcra.check_one(now) {
            OneCell::Admitted => Ok(()),
            OneCell::NotUntil(at) => Err(at),
            OneCell::Undecided => self.check_undecided(now),
        };
        self.tally.count(checked.is_ok());
        checked.map_err(|at| NotUntil::at_slot(self.time.anchor(), at, now))
    }

    /// `check`'s decision where the fast path left it to the general one: the slot
    /// of a refusal, as [`NotUntil`] keeps it (`u64::MAX` for never).
    #[cold]
    #[inline(never)]
    fn check_undecided(&self, now: u64) -> Result<(), u64> {
        self.gcra.check(1, now).map_err(|refusal| match refusal {
            Refusal::NotUntil { at, .. } => u64::try_from(at).unwrap_or(u64::MAX),
            // The burst is at least 1, so one cell always fits eventually.
            Refusal::TooMany { .. } => now,
        })
    }

    /// Admits `cells` at once (all or none), or says why not. `check_n(0)` always passes.
    ///
    /// # Errors
    ///
    /// - [`CheckError::NotUntil`]: not now; the instant at which they would pass.
    /// - [`CheckError::InsufficientCapacity`]: `cells` exceeds the burst, so the
    ///   request can never pass (returned at once, whatever the state).
    ///
    /// # Example
    ///
    /// ```
    /// use corral::{rate::CheckError, RateLimiter};
    /// let limiter = RateLimiter::per_second(10).build()?;
    /// assert!(limiter.check_n(6).is_ok());
    /// assert!(matches!(limiter.check_n(6), Err(CheckError::NotUntil(_))));
    /// assert!(matches!(limiter.check_n(11), Err(CheckError::InsufficientCapacity(_))));
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    #[inline]
    #[doc(alias = "try_wait_n")]
    pub fn check_n(&self, cells: u32) -> Result<(), CheckError> {
        if cells == 0 {
            return Ok(());
        }
        let now = self.now();
        let checked = self.gcra.check(u64::from(cells), now);
        self.tally.count(checked.is_ok());
        checked.map_err(|refusal| match refusal {
            Refusal::TooMany { burst } => InsufficientCapacity::new(cells, burst).into(),
            Refusal::NotUntil { at, now } => self.not_until(at, now).into(),
        })
    }

    /// The name given by [`RateLimiterBuilder::name`], if any.
    pub fn name(&self) -> Option<&str> {
        self.tally.name().map(|n| &**n)
    }

    /// Waits (sleeping on the clock, never spinning) until one cell is admitted.
    ///
    /// Unbounded by design: a slot past the limiter's time horizon (see
    /// [`RateLimiter`]'s limits) is never reached, so such a wait never returns; use a
    /// bounded form to be told instead.
    ///
    /// # Example
    ///
    /// ```
    /// let limiter = corral::RateLimiter::per_second(1000).burst(1).build()?;
    /// limiter.wait();
    /// limiter.wait(); // about a millisecond later
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn wait(&self) {
        // One cell always fits the burst and nothing bounds the wait.
        let _ = self.wait_until(1, Until::FOREVER);
    }

    /// Waits until `cells` are admitted at once. `wait_n(0)` returns at once.
    ///
    /// # Errors
    ///
    /// [`InsufficientCapacity`] at once if `cells` exceeds the burst.
    ///
    /// # Example
    ///
    /// ```
    /// let limiter = corral::RateLimiter::per_second(1000).burst(10).build()?;
    /// limiter.wait_n(10)?;
    /// assert!(limiter.wait_n(11).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_n(&self, cells: u32) -> Result<(), InsufficientCapacity> {
        match self.wait_until(cells, Until::FOREVER) {
            Ok(()) => Ok(()),
            Err(WaitError::InsufficientCapacity(e)) => Err(e),
            // Unbounded and without a token, nothing else can stop the wait.
            Err(_) => Ok(()),
        }
    }

    /// Waits at most `timeout` (on the limiter's clock) for one cell.
    ///
    /// # Errors
    ///
    /// [`WaitError::Timeout`] at once, without sleeping or using capacity, when the
    /// next slot lies further away than `timeout`.
    ///
    /// # Example
    ///
    /// ```
    /// use corral::{clock::ManualClock, RateLimiter, rate::WaitError};
    /// use std::time::Duration;
    ///
    /// let limiter = RateLimiter::per_second(1).clock(ManualClock::new()).build()?;
    /// assert!(limiter.wait_timeout(Duration::from_millis(10)).is_ok());
    /// let err = limiter.wait_timeout(Duration::from_millis(10)).unwrap_err();
    /// assert!(matches!(err, WaitError::Timeout(_)));
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<(), WaitError> {
        self.wait_n_timeout(1, timeout)
    }

    /// Waits until `deadline` (an instant on the limiter's clock) at most for one cell.
    ///
    /// # Errors
    ///
    /// [`WaitError::Timeout`] at once when the next slot lies past `deadline`.
    ///
    /// # Example
    ///
    /// ```
    /// use corral::{clock::{Clock, ManualClock}, RateLimiter};
    /// use std::time::Duration;
    ///
    /// let clock = ManualClock::new();
    /// let limiter = RateLimiter::per_second(1).clock(clock.clone()).build()?;
    /// assert!(limiter.wait_deadline(clock.now()).is_ok());
    /// assert!(limiter.wait_deadline(clock.now() + Duration::from_millis(999)).is_err());
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn wait_deadline(&self, deadline: Instant) -> Result<(), WaitError> {
        self.wait_n_deadline(1, deadline)
    }

    /// Waits for one cell until it is admitted or `token` is cancelled. A token
    /// cancelled while the caller sleeps gives the caller's slot back (unless a later
    /// caller's slot was placed after it).
    ///
    /// # Errors
    ///
    /// [`WaitError::Cancelled`] when the token is (or becomes) cancelled; if the token
    /// has a deadline before the slot, [`WaitError::Cancelled`] with
    /// [`CancelReason::DeadlineExceeded`] at once.
    ///
    /// # Example
    ///
    /// ```
    /// use corral::{CancelToken, RateLimiter, rate::WaitError};
    ///
    /// let limiter = RateLimiter::per_second(10).build()?;
    /// let token = CancelToken::new();
    /// assert!(limiter.wait_cancellable(&token).is_ok());
    /// token.cancel();
    /// assert!(matches!(limiter.wait_cancellable(&token), Err(WaitError::Cancelled(_))));
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn wait_cancellable(&self, token: &CancelToken) -> Result<(), WaitError> {
        self.wait_n_cancellable(1, token)
    }

    /// [`wait_timeout`](RateLimiter::wait_timeout) for `cells` at once. Zero cells
    /// pass at once whatever the bound; a `timeout` too large for an instant
    /// (`Duration::MAX`) saturates to "no deadline".
    ///
    /// # Errors
    ///
    /// [`WaitError::Timeout`] (slot past the deadline) or
    /// [`WaitError::InsufficientCapacity`] (more than the burst), both at once.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// let limiter = corral::RateLimiter::per_second(4).build()?;
    /// assert!(limiter.wait_n_timeout(4, Duration::from_secs(1)).is_ok());
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn wait_n_timeout(&self, cells: u32, timeout: Duration) -> Result<(), WaitError> {
        let deadline = crate::sync::time::deadline_after(self.time.clock().now(), timeout);
        self.wait_until(cells, Until::deadline(deadline))
    }

    /// [`wait_deadline`](RateLimiter::wait_deadline) for `cells` at once. A deadline
    /// already past still admits cells that are free now (no sleep is needed).
    ///
    /// # Errors
    ///
    /// [`WaitError::Timeout`] or [`WaitError::InsufficientCapacity`], both at once.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// let limiter = corral::RateLimiter::per_second(4).build()?;
    /// let soon = Instant::now() + Duration::from_secs(1);
    /// assert!(limiter.wait_n_deadline(2, soon).is_ok());
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn wait_n_deadline(&self, cells: u32, deadline: Instant) -> Result<(), WaitError> {
        self.wait_until(cells, Until::deadline(deadline))
    }

    /// [`wait_cancellable`](RateLimiter::wait_cancellable) for `cells` at once. Zero
    /// cells pass at once, even with a cancelled token.
    ///
    /// # Errors
    ///
    /// [`WaitError::Cancelled`] or [`WaitError::InsufficientCapacity`].
    ///
    /// # Example
    ///
    /// ```
    /// let limiter = corral::RateLimiter::per_second(4).build()?;
    /// let token = corral::CancelToken::new();
    /// assert!(limiter.wait_n_cancellable(4, &token).is_ok());
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn wait_n_cancellable(&self, cells: u32, token: &CancelToken) -> Result<(), WaitError> {
        self.wait_until(cells, Until::cancellable(token))
    }

    /// The one waiting path behind every `wait*` form.
    fn wait_until(&self, cells: u32, until: Until<'_>) -> Result<(), WaitError> {
        if cells == 0 {
            return Ok(());
        }
        let waited = self.wait_cells(cells, until);
        self.tally.count(waited.is_ok());
        waited
    }

    fn wait_cells(&self, cells: u32, until: Until<'_>) -> Result<(), WaitError> {
        if let Some(reason) = until.token().and_then(CancelToken::reason) {
            return Err(WaitError::Cancelled(reason));
        }
        let now = self.now();
        let bound = Bound::new(self.time.anchor(), &until, now);
        let grant = match self.gcra.reserve(u64::from(cells), now, bound.latest) {
            Ok(grant) => grant,
            Err(Refusal::TooMany { burst }) => {
                return Err(InsufficientCapacity::new(cells, burst).into())
            }
            Err(Refusal::NotUntil { at, now }) => {
                self.refused_at_once.fetch_add(1, Ordering::Relaxed);
                return Err(bound.refusal(self.not_until(at, now)));
            }
        };
        self.sleep_for(&grant, now, until.token())
    }

    /// Sleeps until `grant` is ready; gives it back if `token` stops the sleep.
    fn sleep_for(
        &self,
        grant: &Grant,
        now: u64,
        token: Option<&CancelToken>,
    ) -> Result<(), WaitError> {
        if grant.ready <= u128::from(now) {
            return Ok(());
        }
        self.slept.fetch_add(1, Ordering::Relaxed);
        let _dump = crate::observe::waiting_for_rate(self.tally.name());
        if sleep_until_ready(&self.time, grant.ready, token) {
            return Ok(());
        }
        if self.gcra.give_back(grant, self.now()) {
            self.gave_back.fetch_add(1, Ordering::Relaxed);
        }
        let reason = token
            .and_then(CancelToken::reason)
            .unwrap_or(CancelReason::Cancelled);
        Err(WaitError::Cancelled(reason))
    }

    /// Claims one cell now, whenever it may be used: the returned [`Reservation`] says
    /// how long to wait and can be cancelled to give the cell back.
    ///
    /// # Example
    ///
    /// ```
    /// use corral::{clock::ManualClock, RateLimiter};
    /// use std::time::Duration;
    ///
    /// let limiter = RateLimiter::per_second(2).burst(1).clock(ManualClock::new()).build()?;
    /// let first = limiter.reserve();
    /// let second = limiter.reserve();
    /// assert_eq!(first.delay(), Duration::ZERO);
    /// assert_eq!(second.delay(), Duration::from_millis(500));
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn reserve(&self) -> Reservation<'_, C> {
        let now = self.now();
        // The burst is at least 1 and nothing bounds the claim, so it cannot fail; the
        // fallback (an empty claim, ready now) keeps this free of panics regardless.
        let grant = self.gcra.reserve(1, now, None).unwrap_or(Grant::empty(now));
        Reservation {
            limiter: self,
            grant,
            cells: 1,
        }
    }

    /// Claims `cells` now (the x/time/rate `ReserveN` model). The [`Reservation`] says
    /// when they may be used; [`cancel`](Reservation::cancel) gives them back (when no
    /// later claim stands after them and their slot has not passed), so a caller can
    /// take cells from several limiters all-or-nothing.
    ///
    /// # Errors
    ///
    /// [`InsufficientCapacity`] if `cells` exceeds the burst (nothing is claimed).
    ///
    /// # Example
    ///
    /// Take one cell from each of two limiters, or none:
    ///
    /// ```
    /// use corral::{clock::ManualClock, RateLimiter};
    /// use std::time::Duration;
    ///
    /// let clock = ManualClock::new();
    /// let per_user = RateLimiter::per_second(1).clock(clock.clone()).build()?;
    /// let global = RateLimiter::per_second(1).clock(clock.clone()).build()?;
    /// global.check().unwrap(); // the global limit is used up for a second
    ///
    /// let user = per_user.reserve_n(1).unwrap();
    /// let all = global.reserve_n(1).unwrap();
    /// if all.delay() > Duration::from_millis(100) {
    ///     all.cancel();
    ///     user.cancel(); // the user's cell comes back too
    /// }
    /// assert!(per_user.check().is_ok());
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn reserve_n(&self, cells: u32) -> Result<Reservation<'_, C>, InsufficientCapacity> {
        let now = self.now();
        match self.gcra.reserve(u64::from(cells), now, None) {
            Ok(grant) => Ok(Reservation {
                limiter: self,
                grant,
                cells,
            }),
            Err(Refusal::TooMany { burst }) => Err(InsufficientCapacity::new(cells, burst)),
            Err(Refusal::NotUntil { .. }) => {
                // Unreachable without a bound; report it as the burst it could not fit.
                Err(InsufficientCapacity::new(cells, self.gcra.burst()))
            }
        }
    }

    /// Changes the rate to `cells` per `period` at run time. Capacity already used stays
    /// used (counted in cells): a limiter that was empty stays empty and refills at the
    /// new rate, a full one stays full.
    ///
    /// A call racing with `set_rate` is judged wholly by the old rate or wholly by the
    /// new one (with the capacity in use converted), never by a mix of the two, with
    /// the one exception given under [`RateLimiter`]'s limits.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming `set_rate` for zero cells, a zero period, more than one
    /// cell per nanosecond, or one cell worth more than 2^62 ns (about 146 years, so
    /// `Duration::MAX` is refused); naming `burst` when the burst would be worth more
    /// than 2^62 ns. The limiter is unchanged on error.
    ///
    /// # Example
    ///
    /// ```
    /// use corral::{clock::ManualClock, RateLimiter};
    /// use std::time::Duration;
    ///
    /// let clock = ManualClock::new();
    /// let limiter = RateLimiter::per_second(1).burst(2).clock(clock.clone()).build()?;
    /// limiter.check_n(2).unwrap();
    /// limiter.set_rate(10, Duration::from_secs(1))?;
    /// assert!(limiter.check().is_err()); // still empty
    /// clock.advance(Duration::from_millis(100));
    /// assert!(limiter.check().is_ok()); // refilling ten times as fast
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn set_rate(&self, cells: u32, period: Duration) -> Result<(), ConfigError> {
        if period.is_zero() {
            return Err(ConfigError::new(
                "set_rate",
                period,
                "period must be positive",
            ));
        }
        if cells == 0 {
            return Err(ConfigError::new(
                "set_rate",
                cells,
                "rate must be at least 1",
            ));
        }
        // Exact in u128: a period too long for a u64 of nanoseconds is not cut short.
        let interval = period.as_nanos() / u128::from(cells);
        if interval == 0 {
            return Err(ConfigError::new(
                "set_rate",
                cells,
                "more than one cell per nanosecond is not supported",
            ));
        }
        let interval = match u64::try_from(interval) {
            Ok(interval) if interval <= MAX_SPAN_NANOS => interval,
            _ => {
                return Err(ConfigError::new(
                    "set_rate",
                    period,
                    "one cell must not be worth more than 2^62 ns (about 146 years)",
                ))
            }
        };
        let burst = u32::try_from(self.gcra.burst()).unwrap_or(u32::MAX);
        check_burst(burst, interval)?;
        self.gcra.set_interval(interval, self.now());
        Ok(())
    }

    /// Changes the burst at run time, keeping the cells available now (capped at the
    /// new burst): a larger burst fills up at the configured rate.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming `burst` for 0 or a burst worth more than 2^62 ns (about 146 years).
    ///
    /// # Example
    ///
    /// ```
    /// let limiter = corral::RateLimiter::per_second(10).burst(10).build()?;
    /// limiter.set_burst(3)?;
    /// assert_eq!(limiter.available(), 3);
    /// assert!(limiter.set_burst(0).is_err());
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn set_burst(&self, burst: u32) -> Result<(), ConfigError> {
        check_burst(burst, self.gcra.interval())?;
        self.gcra.set_burst(u64::from(burst), self.now());
        Ok(())
    }

    /// The burst: the most cells admitted at one instant.
    ///
    /// # Example
    ///
    /// ```
    /// assert_eq!(corral::RateLimiter::per_minute(30).build()?.burst(), 30);
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn burst(&self) -> u32 {
        u32::try_from(self.gcra.burst()).unwrap_or(u32::MAX)
    }

    /// The time one cell is worth (the period divided by the rate).
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// let limiter = corral::RateLimiter::per_second(4).build()?;
    /// assert_eq!(limiter.interval(), Duration::from_millis(250));
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.gcra.interval())
    }

    /// The cells that would be admitted right now.
    ///
    /// # Example
    ///
    /// ```
    /// let limiter = corral::RateLimiter::per_second(4).build()?;
    /// limiter.check().unwrap();
    /// assert_eq!(limiter.available(), 3);
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn available(&self) -> u32 {
        u32::try_from(self.gcra.available(self.now())).unwrap_or(u32::MAX)
    }

    /// The limiter's clock.
    ///
    /// # Example
    ///
    /// ```
    /// use corral::{clock::{Clock, ManualClock}, RateLimiter};
    /// let limiter = RateLimiter::per_second(1).clock(ManualClock::new()).build()?;
    /// let _now = limiter.clock().now();
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn clock(&self) -> &C {
        self.time.clock()
    }

    /// A snapshot of the configuration, the capacity available now and the counters.
    ///
    /// # Example
    ///
    /// ```
    /// let limiter = corral::RateLimiter::per_second(2).build()?;
    /// let stats = limiter.stats();
    /// assert_eq!((stats.burst, stats.available), (2, 2));
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn stats(&self) -> RateStats {
        RateStats {
            interval: self.interval(),
            burst: self.burst(),
            available: self.available(),
            slept: self.slept.load(Ordering::Relaxed),
            gave_back: self.gave_back.load(Ordering::Relaxed),
            refused_at_once: self.refused_at_once.load(Ordering::Relaxed),
            admitted: self.tally.admitted(),
            refused: self.tally.refused(),
        }
    }
}

impl<C: Clock> fmt::Debug for RateLimiter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("name", &self.name())
            .field("interval", &self.interval())
            .field("burst", &self.burst())
            .field("available", &self.available())
            .field("clock", self.time.clock())
            .finish()
    }
}
