//! A circuit breaker: stop calling a failing dependency, probe it carefully, resume.
//!
//! A [`CircuitBreaker`] is closed while calls succeed. It opens on consecutive
//! failures or on a failure (or slow-call) rate over a count or time [`Window`]; while
//! open it refuses every call at once with [`BreakerError::Open`], which says how
//! long until the next probe. After that it is half-open: at most `half_open_calls`
//! trial calls go through, and their outcome closes or re-opens it. [`State`] is the
//! state it reports, [`BreakerStats`] the counters.
//!
//! # How it works
//!
//! The breaker never blocks and never starts a thread: a refused call returns at once,
//! and time-based transitions are computed when the breaker is next asked, from its
//! [`Clock`](crate::clock::Clock), so a [`ManualClock`](crate::clock::ManualClock) drives
//! it in tests. Admitting a call in the closed state costs one atomic load; a success
//! writes only a per-thread counter.
//
// Layout: this file is the public surface over the engine in `engine.rs` (state
// machine, transitions); `window.rs` keeps the count and time windows, `stripes.rs`
// the per-thread success counters, `builder.rs` the validated configuration.

mod builder;
mod engine;
mod stripes;
mod window;

use std::convert::Infallible;
use std::fmt;
use std::mem::ManuallyDrop;
use std::time::Duration;

use crate::panic::Panic;

pub use builder::BreakerBuilder;
pub use engine::State;
use engine::{Engine, Kind, Outcome, Permit, Refusal};

/// The window failure and slow-call rates are computed over.
///
/// ```
/// use corral::breaker::Window;
/// use std::time::Duration;
///
/// let last_100_calls = Window::Count(100);
/// let last_30_seconds = Window::Time(Duration::from_secs(30));
/// # let _ = (last_100_calls, last_30_seconds);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Window {
    /// The last `n` calls.
    Count(u32),
    /// The calls of the last `d`, expiring in ten steps of `d / 10`.
    Time(Duration),
}

/// Why a call did not return a value.
///
/// The default type parameter (`Infallible`) is what
/// [`try_acquire`](CircuitBreaker::try_acquire) returns: a refusal, never an inner
/// error. [`map_inner`](BreakerError::map_inner) converts between the two.
///
/// ```
/// use corral::{breaker::BreakerError, CircuitBreaker};
///
/// let breaker = CircuitBreaker::new();
/// breaker.trip();
/// match breaker.call(|| Ok::<_, std::io::Error>(42)) {
///     Err(BreakerError::Open { retry_after }) => assert!(retry_after.as_secs() <= 30),
///     other => panic!("expected a refusal, got {other:?}"),
/// }
/// ```
#[non_exhaustive]
pub enum BreakerError<E = Infallible> {
    /// The breaker is open; it will admit a trial call in `retry_after`.
    Open {
        /// Time left in the open period.
        retry_after: Duration,
    },
    /// The breaker is half-open and all its trial slots are taken.
    HalfOpenFull,
    /// The breaker was opened by hand ([`CircuitBreaker::force_open`]).
    ForcedOpen,
    /// The call ran and returned this error.
    Inner(E),
}

impl<E> BreakerError<E> {
    /// `true` when the breaker refused the call (it never ran).
    pub fn is_refused(&self) -> bool {
        !matches!(self, BreakerError::Inner(_))
    }

    /// The call's own error, if it ran.
    pub fn into_inner(self) -> Option<E> {
        match self {
            BreakerError::Inner(e) => Some(e),
            _ => None,
        }
    }

    /// How long until the breaker admits a trial, when it refused because it is open.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            BreakerError::Open { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// Converts the inner error, keeping refusals as they are.
    ///
    /// ```
    /// use corral::{breaker::BreakerError, CircuitBreaker};
    ///
    /// let breaker = CircuitBreaker::new();
    /// breaker.force_open();
    /// let refused: BreakerError = breaker.try_acquire().unwrap_err();
    /// let as_io: BreakerError<std::io::Error> = refused.map_inner(|never| match never {});
    /// assert!(as_io.is_refused());
    /// ```
    pub fn map_inner<F>(self, f: impl FnOnce(E) -> F) -> BreakerError<F> {
        match self {
            BreakerError::Open { retry_after } => BreakerError::Open { retry_after },
            BreakerError::HalfOpenFull => BreakerError::HalfOpenFull,
            BreakerError::ForcedOpen => BreakerError::ForcedOpen,
            BreakerError::Inner(e) => BreakerError::Inner(f(e)),
        }
    }

    fn refusal(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Open(retry_after) => BreakerError::Open { retry_after },
            Refusal::HalfOpenFull => BreakerError::HalfOpenFull,
            Refusal::ForcedOpen => BreakerError::ForcedOpen,
        }
    }
}

/// Shows the call's own error too (unlike `Display`, which leaves it to
/// [`source`](std::error::Error::source)).
impl<E: fmt::Debug> fmt::Debug for BreakerError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BreakerError::Open { retry_after } => f
                .debug_struct("Open")
                .field("retry_after", retry_after)
                .finish(),
            BreakerError::HalfOpenFull => f.write_str("HalfOpenFull"),
            BreakerError::ForcedOpen => f.write_str("ForcedOpen"),
            BreakerError::Inner(e) => f.debug_tuple("Inner").field(e).finish(),
        }
    }
}

/// Describes this error only: the inner error of [`BreakerError::Inner`] is its
/// [`source`](std::error::Error::source) (reach it with
/// [`into_inner`](BreakerError::into_inner) or by matching when `E` is not an
/// [`Error`](std::error::Error)), so the breaker never formats a user value.
impl<E> fmt::Display for BreakerError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BreakerError::Open { retry_after } => {
                write!(f, "circuit breaker is open (retry after {retry_after:?})")
            }
            BreakerError::HalfOpenFull => {
                f.write_str("circuit breaker is half-open and its trial calls are taken")
            }
            BreakerError::ForcedOpen => f.write_str("circuit breaker is forced open"),
            BreakerError::Inner(_) => f.write_str("the guarded call failed"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for BreakerError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BreakerError::Inner(e) => Some(e),
            _ => None,
        }
    }
}

impl<E: PartialEq> PartialEq for BreakerError<E> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (BreakerError::Open { retry_after: a }, BreakerError::Open { retry_after: b }) => {
                a == b
            }
            (BreakerError::HalfOpenFull, BreakerError::HalfOpenFull) => true,
            (BreakerError::ForcedOpen, BreakerError::ForcedOpen) => true,
            (BreakerError::Inner(a), BreakerError::Inner(b)) => a == b,
            _ => false,
        }
    }
}

/// A snapshot of a breaker's counters (see [`CircuitBreaker::stats`]).
///
/// Counters are totals since the breaker was built; the `window_*` fields describe
/// the current closed-state window (zero in other states).
///
/// ```
/// let breaker = corral::CircuitBreaker::new();
/// let _ = breaker.call(|| Ok::<_, ()>(1));
/// let _ = breaker.call(|| Err::<(), _>(()));
/// let stats = breaker.stats();
/// assert_eq!((stats.successes, stats.failures, stats.consecutive_failures), (1, 1, 1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct BreakerStats {
    /// The state now.
    pub state: State,
    /// Calls that succeeded (including errors `is_failure` did not count).
    pub successes: u64,
    /// Calls that failed (including guards dropped without an outcome).
    pub failures: u64,
    /// Calls slower than the `slow_call` duration, successful or not.
    pub slow_calls: u64,
    /// Calls refused without running.
    pub rejected: u64,
    /// Times the breaker opened (automatically or by `trip`).
    pub trips: u64,
    /// Current run of consecutive failures (when that policy is on).
    pub consecutive_failures: u64,
    /// Half-open trial calls running now.
    pub half_open_in_flight: u32,
    /// Calls in the current window.
    pub window_calls: u64,
    /// Failures in the current window.
    pub window_failures: u64,
    /// Slow calls in the current window.
    pub window_slow_calls: u64,
    /// The open period the next (or current) opening uses, backoff included.
    pub open_for: Duration,
    /// Panics caught in user code the breaker runs for itself: `on_state_change`
    /// callbacks, `is_failure` predicates, and the drop of a closure the breaker
    /// refused. (A panic in the guarded call itself is the caller's: see
    /// [`CircuitBreaker::call`].)
    pub user_panics: u64,
}

impl BreakerStats {
    /// Failures over calls in the current window, if it holds any call.
    pub fn failure_rate(&self) -> Option<f64> {
        (self.window_calls > 0).then(|| self.window_failures as f64 / self.window_calls as f64)
    }
}

/// A circuit breaker guarding calls to one dependency.
///
/// Share it by reference or in an `Arc`: every method takes `&self`. Nothing blocks:
/// a refused call returns [`BreakerError`] at once, so pair it with a deadline on
/// the call itself (a slow call without a timeout keeps its thread whatever the
/// breaker does) and with a fallback.
///
/// # Example
///
/// ```
/// use corral::{breaker::{BreakerError, State}, CircuitBreaker, clock::ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let breaker = CircuitBreaker::builder()
///     .consecutive_failures(2)
///     .open_for(Duration::from_secs(10))
///     .clock(clock.clone())
///     .build()?;
///
/// let fetch = |up: bool| breaker.call(|| if up { Ok("data") } else { Err("timeout") });
/// assert_eq!(fetch(false), Err(BreakerError::Inner("timeout")));
/// assert_eq!(fetch(false), Err(BreakerError::Inner("timeout")));
/// assert_eq!(breaker.state(), State::Open);
/// assert_eq!(fetch(true), Err(BreakerError::Open { retry_after: Duration::from_secs(10) }));
///
/// clock.advance(Duration::from_secs(10));
/// assert_eq!(fetch(true), Ok("data")); // the half-open trial succeeds
/// assert_eq!(breaker.state(), State::Closed);
/// # Ok::<(), corral::ConfigError>(())
/// ```
pub struct CircuitBreaker {
    engine: Engine,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.engine.name())
            .field("state", &self.engine.current_state())
            .finish_non_exhaustive()
    }
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self::new()
    }
}

impl CircuitBreaker {
    /// The name given by [`BreakerBuilder::name`], if any.
    pub fn name(&self) -> Option<&str> {
        self.engine.name()
    }

    /// A breaker with the [`BreakerBuilder`] defaults: opens after 5 consecutive
    /// failures, for 30 s, then admits one trial call.
    pub fn new() -> Self {
        match BreakerBuilder::new().build() {
            Ok(breaker) => breaker,
            Err(_) => unreachable!("the default configuration is valid"),
        }
    }

    /// A builder to configure a breaker.
    pub fn builder() -> BreakerBuilder {
        BreakerBuilder::new()
    }

    /// Runs `f` if the breaker admits a call and records its outcome: `Ok` is a
    /// success, `Err` a failure unless the [`is_failure`](BreakerBuilder::is_failure)
    /// predicate says otherwise, a panic a failure (the panic continues to unwind).
    ///
    /// # Errors
    ///
    /// [`BreakerError::Open`] (with the time left), [`BreakerError::HalfOpenFull`] or
    /// [`BreakerError::ForcedOpen`] when the call was refused and `f` did not run (it
    /// is dropped; to keep what it captures, ask first with
    /// [`try_acquire`](CircuitBreaker::try_acquire) and call only once admitted);
    /// [`BreakerError::Inner`] with `f`'s error.
    ///
    /// A panic in the [`is_failure`](BreakerBuilder::is_failure) predicate counts the
    /// error as a failure (and the panic in [`BreakerStats::user_panics`]); the error
    /// is still returned. So is a panic while dropping a refused `f`.
    ///
    /// # Panics
    ///
    /// When `f` panics: `f` runs on the calling thread, so its panic stays the
    /// caller's. It is recorded as a failure (the guard's drop, while unwinding) and
    /// continues to unwind unchanged. A `on_state_change` callback that this failure
    /// fires runs inside the panic boundary, so a panicking callback cannot turn the
    /// unwind into an abort.
    ///
    /// ```
    /// let breaker = corral::CircuitBreaker::new();
    /// assert_eq!(breaker.call(|| "42".parse::<u32>()), Ok(42));
    /// assert!(breaker.call(|| "x".parse::<u32>()).unwrap_err().into_inner().is_some());
    /// ```
    #[inline]
    pub fn call<T, E: 'static>(
        &self,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, BreakerError<E>> {
        // The closed state is its own branch, so its permit never merges with the
        // slow path's (that merge costs a store-forwarding stall per call).
        match self.engine.closed_permit() {
            Some(permit) => self.run(permit, |e| self.engine.is_failure(e), f),
            None => self.call_slow(|e| self.engine.is_failure(e), f),
        }
    }

    #[inline(never)]
    fn call_slow<T, E>(
        &self,
        is_failure: impl FnOnce(&E) -> bool,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, BreakerError<E>> {
        match self.engine.acquire() {
            Ok(permit) => self.run(permit, is_failure, f),
            Err(refusal) => {
                // The refused closure never runs; what it captured is dropped here,
                // inside the panic boundary.
                self.discard((is_failure, f));
                Err(BreakerError::refusal(refusal))
            }
        }
    }

    /// Drops a user value inside the panic boundary; a panicking drop is counted in
    /// `user_panics`.
    #[inline(always)]
    fn discard<V>(&self, value: V) {
        if std::mem::needs_drop::<V>() && Panic::catch_any(move || drop(value)).is_err() {
            self.engine.user_panic();
        }
    }

    #[inline(always)]
    fn run<T, E>(
        &self,
        permit: Permit,
        is_failure: impl FnOnce(&E) -> bool,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, BreakerError<E>> {
        let guard = BreakerGuard {
            engine: &self.engine,
            permit,
        };
        // Dropped inside the panic boundary even while `f`'s panic unwinds.
        let is_failure = Contained::new(is_failure, &self.engine);
        match f() {
            Ok(value) => {
                guard.success();
                drop(is_failure);
                Ok(value)
            }
            Err(error) => {
                // The predicate is user code: a panicking one counts the error as a
                // failure (and the panic in `user_panics`); the error is returned.
                let ok = match is_failure.into_inner() {
                    Some(is_failure) => match Panic::catch_any(|| !is_failure(&error)) {
                        Ok(ok) => ok,
                        Err(_) => {
                            self.engine.user_panic();
                            false
                        }
                    },
                    None => false,
                };
                guard.record(ok);
                Err(BreakerError::Inner(error))
            }
        }
    }

    /// Like [`call`](Self::call), with this call's own failure predicate instead of
    /// the configured one (and no `'static` bound on `E`).
    ///
    /// # Errors
    ///
    /// As [`call`](Self::call).
    ///
    /// ```
    /// let breaker = corral::CircuitBreaker::builder().consecutive_failures(1).build()?;
    /// let status = 404;
    /// let _ = breaker.call_with(|code: &u16| *code >= 500, || Err::<(), u16>(status));
    /// assert_eq!(breaker.state(), corral::breaker::State::Closed);
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn call_with<T, E>(
        &self,
        is_failure: impl FnOnce(&E) -> bool,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, BreakerError<E>> {
        match self.engine.closed_permit() {
            Some(permit) => self.run(permit, is_failure, f),
            None => self.call_slow(is_failure, f),
        }
    }

    /// Whether `error` counts against this breaker, as [`call`](Self::call) judges it:
    /// by the [`is_failure`](BreakerBuilder::is_failure) predicate, inside the panic
    /// boundary (a panicking predicate makes it a failure, counted in `user_panics`).
    pub(crate) fn counts_as_failure<E: 'static>(&self, error: &E) -> bool {
        Panic::catch_any(|| self.engine.is_failure(error)).unwrap_or_else(|_| {
            self.engine.user_panic();
            true
        })
    }

    /// Asks for one call, for code that is not a single closure: the guard records
    /// the outcome with [`success`](BreakerGuard::success) or
    /// [`failure`](BreakerGuard::failure); dropped without either it counts as a
    /// failure.
    ///
    /// # Errors
    ///
    /// [`BreakerError::Open`], [`BreakerError::HalfOpenFull`] or
    /// [`BreakerError::ForcedOpen`] when the call is refused.
    ///
    /// ```
    /// let breaker = corral::CircuitBreaker::new();
    /// let guard = breaker.try_acquire()?;
    /// let reply = "pong"; // talk to the dependency here
    /// if reply == "pong" { guard.success() } else { guard.failure() }
    /// # Ok::<(), corral::breaker::BreakerError>(())
    /// ```
    #[inline]
    pub fn try_acquire(&self) -> Result<BreakerGuard<'_>, BreakerError> {
        if let Some(permit) = self.engine.closed_permit() {
            return Ok(BreakerGuard {
                engine: &self.engine,
                permit,
            });
        }
        match self.engine.acquire() {
            Ok(permit) => Ok(BreakerGuard {
                engine: &self.engine,
                permit,
            }),
            Err(refusal) => Err(BreakerError::refusal(refusal)),
        }
    }

    /// The state now. An open breaker whose open period has ended reports (and
    /// becomes) `HalfOpen`; a half-open one past its `half_open_timeout` opens again.
    ///
    /// ```
    /// let breaker = corral::CircuitBreaker::new();
    /// assert_eq!(breaker.state(), corral::breaker::State::Closed);
    /// ```
    pub fn state(&self) -> State {
        self.engine.state()
    }

    /// A snapshot of the counters.
    ///
    /// ```
    /// let breaker = corral::CircuitBreaker::new();
    /// breaker.trip();
    /// let _ = breaker.call(|| Ok::<_, ()>(()));
    /// assert_eq!(breaker.stats().rejected, 1);
    /// ```
    pub fn stats(&self) -> BreakerStats {
        let s = self.engine.snapshot();
        BreakerStats {
            state: s.state,
            successes: s.successes,
            failures: s.failures,
            slow_calls: s.slow,
            rejected: s.rejected,
            trips: s.trips,
            consecutive_failures: s.consecutive,
            half_open_in_flight: s.in_flight,
            window_calls: s.window.calls,
            window_failures: s.window.failures,
            window_slow_calls: s.window.slow,
            open_for: s.open_for,
            user_panics: s.user_panics,
        }
    }

    /// Opens the breaker now, for its current open period (restarting it if already
    /// open); trials are admitted when it ends, as after an automatic trip.
    ///
    /// ```
    /// let breaker = corral::CircuitBreaker::new();
    /// breaker.trip();
    /// assert_eq!(breaker.state(), corral::breaker::State::Open);
    /// ```
    pub fn trip(&self) {
        self.engine.force(State::Open);
    }

    /// Closes the breaker and clears its window, its failure run and its backoff.
    /// Also leaves the manual modes.
    ///
    /// ```
    /// let breaker = corral::CircuitBreaker::new();
    /// breaker.force_open();
    /// breaker.reset();
    /// assert_eq!(breaker.state(), corral::breaker::State::Closed);
    /// ```
    pub fn reset(&self) {
        self.engine.force(State::Closed);
    }

    /// Refuses every call ([`BreakerError::ForcedOpen`]) until [`reset`](Self::reset)
    /// or [`disable`](Self::disable).
    ///
    /// ```
    /// let breaker = corral::CircuitBreaker::new();
    /// breaker.force_open();
    /// assert_eq!(breaker.call(|| Ok::<_, ()>(())), Err(corral::breaker::BreakerError::ForcedOpen));
    /// ```
    pub fn force_open(&self) {
        self.engine.force(State::ForcedOpen);
    }

    /// Admits every call and keeps counting them in the stats, but never changes
    /// state, until [`reset`](Self::reset) or [`force_open`](Self::force_open).
    ///
    /// ```
    /// let breaker = corral::CircuitBreaker::builder().consecutive_failures(1).build()?;
    /// breaker.disable();
    /// let _ = breaker.call(|| Err::<(), _>("down"));
    /// assert_eq!(breaker.state(), corral::breaker::State::Disabled);
    /// assert_eq!(breaker.stats().failures, 1);
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn disable(&self) {
        self.engine.force(State::Disabled);
    }
}

/// A user value the breaker holds while a call runs: dropped inside the panic
/// boundary (a panicking drop is counted in `user_panics`), also while unwinding, so
/// it can never turn an unwind into an abort.
struct Contained<'a, V> {
    /// `Some` until taken out by [`into_inner`](Contained::into_inner).
    value: Option<V>,
    engine: &'a Engine,
}

impl<'a, V> Contained<'a, V> {
    #[inline(always)]
    fn new(value: V, engine: &'a Engine) -> Self {
        Contained {
            value: Some(value),
            engine,
        }
    }

    /// The value, no longer contained (`Some` always: it is taken only here).
    #[inline(always)]
    fn into_inner(mut self) -> Option<V> {
        self.value.take()
    }
}

impl<V> Drop for Contained<'_, V> {
    #[inline(always)]
    fn drop(&mut self) {
        if std::mem::needs_drop::<V>() {
            if let Some(value) = self.value.take() {
                if Panic::catch_any(move || drop(value)).is_err() {
                    self.engine.user_panic();
                }
            }
        }
    }
}

/// One admitted call; records its outcome when consumed, a failure when dropped
/// unrecorded (also while unwinding from a panic).
///
/// A guard taken in the half-open state is a trial: it holds one of the
/// `half_open_calls` slots until it is consumed or dropped.
///
/// ```
/// let breaker = corral::CircuitBreaker::builder().consecutive_failures(1).build()?;
/// drop(breaker.try_acquire()?); // forgotten outcome: a failure
/// assert_eq!(breaker.state(), corral::breaker::State::Open);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "a guard dropped without an outcome counts as a failure"]
pub struct BreakerGuard<'a> {
    engine: &'a Engine,
    permit: Permit,
}

impl fmt::Debug for BreakerGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerGuard")
            .field("trial", &self.is_trial())
            .finish()
    }
}

impl BreakerGuard<'_> {
    /// Records a success.
    #[inline(always)]
    pub fn success(self) {
        self.finish(Outcome::Success);
    }

    /// Records a failure.
    pub fn failure(self) {
        self.finish(Outcome::Failure);
    }

    /// Records a success when `ok`, a failure otherwise.
    #[inline(always)]
    pub fn record(self, ok: bool) {
        self.finish(if ok {
            Outcome::Success
        } else {
            Outcome::Failure
        });
    }

    /// Releases the call without recording an outcome (for a call that was abandoned
    /// for reasons that say nothing about the dependency); a half-open slot is freed.
    ///
    /// ```
    /// let breaker = corral::CircuitBreaker::builder().consecutive_failures(1).build()?;
    /// let guard = breaker.try_acquire()?;
    /// let user_cancelled = true;
    /// if user_cancelled {
    ///     guard.ignore(); // says nothing about the dependency
    /// }
    /// assert_eq!(breaker.stats().failures, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn ignore(self) {
        self.finish(Outcome::Ignore);
    }

    /// `true` when this call is a half-open trial.
    pub fn is_trial(&self) -> bool {
        self.permit.kind == Kind::Trial
    }

    /// Records `outcome` instead of the drop's failure.
    #[inline(always)]
    fn finish(self, outcome: Outcome) {
        let this = ManuallyDrop::new(self);
        this.engine.record(&this.permit, outcome);
    }
}

impl Drop for BreakerGuard<'_> {
    fn drop(&mut self) {
        self.engine.record(&self.permit, Outcome::Failure);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// With `SystemClock` (the TSC timeline) the open period still counts from the
    /// trip and `retry_after` is the time left of it.
    #[test]
    fn system_clock_retry_after_is_the_time_left() {
        let open_for = Duration::from_secs(60);
        let breaker = CircuitBreaker::builder()
            .consecutive_failures(1)
            .open_for(open_for)
            .build()
            .unwrap();
        assert!(breaker.call(|| Err::<(), _>("boom")).is_err());
        assert_eq!(breaker.state(), State::Open);
        match breaker.call(|| Ok::<_, ()>(())) {
            Err(BreakerError::Open { retry_after }) => {
                // (A TSC read on another core may lag by a few cycles: allow 1 ms.)
                assert!(
                    retry_after <= open_for + Duration::from_millis(1),
                    "{retry_after:?}"
                );
                // Generous: the machine may be heavily loaded between the two calls.
                assert!(
                    retry_after > open_for - Duration::from_secs(10),
                    "{retry_after:?}"
                );
            }
            other => panic!("expected Open, got {other:?}"),
        }
    }

    /// The coarse clock serves exactly the `SystemClock` time windows whose buckets are
    /// wide (64 ticks) and that have no slow-call policy; everything else keeps the
    /// precise timeline.
    #[test]
    fn coarse_window_clock_only_where_it_is_safe_and_cheaper() {
        let time = |window: Duration| {
            CircuitBreaker::builder()
                .failure_rate(0.5)
                .window(Window::Time(window))
        };
        let coarse = |b: BreakerBuilder| b.build().unwrap().engine.window_on_coarse_clock();
        let available = crate::timeline::Coarse::tick().is_some();
        assert_eq!(cfg!(target_os = "linux"), available);
        if let Some(tick) = crate::timeline::Coarse::tick() {
            // Linux ticks are 1-10 ms (HZ 100 to 1000).
            assert!((1_000_000..=10_000_000).contains(&tick), "{tick}");
            // Buckets a tenth of the window: exactly 64 ticks qualifies, one ns less not.
            let edge = Duration::from_nanos(tick * 64 * 10);
            assert!(coarse(time(edge)));
            assert!(!coarse(time(edge - Duration::from_nanos(10))));
        }
        assert_eq!(coarse(time(Duration::from_secs(60))), available);
        assert!(!coarse(time(Duration::from_millis(100))));
        assert!(!coarse(
            time(Duration::from_secs(60)).slow_call(Duration::from_secs(1), 0.5)
        ));
        assert!(!coarse(
            time(Duration::from_secs(60)).clock(crate::clock::ManualClock::new())
        ));
        assert!(!coarse(CircuitBreaker::builder().failure_rate(0.5)));
        assert!(!coarse(CircuitBreaker::builder().consecutive_failures(3)));
    }
}
