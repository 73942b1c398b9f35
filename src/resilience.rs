//! One call through a bulkhead, a rate limiter, a circuit breaker and a deadline, with
//! retries, all under one cancellation token.
//!
//! A [`Resilience`] stack starts no thread and owns no state beyond counters
//! ([`ResilienceStats`]): it orders the crate's primitives around the caller's
//! closure, on the caller's thread. [`ResilienceError`] says which layer refused a
//! call, or carries the last attempt's error.
//!
//! # Order of the layers
//!
//! Per attempt: a bulkhead permit ([`Semaphore`]), then a rate-limiter slot
//! ([`RateLimiter`]), then a breaker guard ([`CircuitBreaker`]), then the call. The
//! permit is held only for the attempt, never across a backoff. Every wait (permit,
//! slot, backoff) is bounded by one [`CancelToken`] that carries the call's deadline
//! and the caller's cancellation, and the closure receives that token, so a
//! cooperative call stops at the deadline too; a call that ignores it cannot be
//! pre-empted and is reported when it ends. The breaker is asked last, so its
//! slow-call timing covers the call alone (a call it then refuses may have used a
//! rate-limiter slot). Once an attempt has failed, a later refusal ends the call with
//! that failure, so the caller always sees the error of the last attempt that ran.

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::breaker::{BreakerGuard, CircuitBreaker};
use crate::cancel::{CancelReason, CancelToken};
use crate::clock::{Clock, SystemClock};
use crate::config::ConfigError;
use crate::rate::{RateLimiter, WaitError};
use crate::semaphore::{AcquireError, Permit, Semaphore};
use crate::sync::time;

/// Why a call through a [`Resilience`] stack produced no value.
///
/// # Example
///
/// ```
/// use corral::{Resilience, resilience::ResilienceError};
///
/// let stack = Resilience::builder().retries(2).build()?;
/// let outcome: Result<u32, _> = stack.call(|_token| Err::<u32, _>("upstream down"));
/// match outcome {
///     Err(ResilienceError::Failed { error, attempts }) => {
///         assert_eq!((error, attempts), ("upstream down", 3));
///     }
///     other => unreachable!("{other:?}"),
/// }
/// # Ok::<(), corral::ConfigError>(())
/// ```
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResilienceError<E> {
    /// The call ran and failed: the error of the last attempt, and how many ran.
    Failed {
        /// The last attempt's error.
        error: E,
        /// Attempts that ran (1 plus the retries that happened).
        attempts: u32,
    },
    /// The circuit breaker refused the first attempt.
    BreakerOpen {
        /// When the breaker expects to admit a trial call, if it is open.
        retry_after: Option<Duration>,
    },
    /// The bulkhead admits no call: it is closed (or shrunk to zero permits).
    BulkheadClosed,
    /// The deadline passed, or the caller's token was cancelled, before the first
    /// attempt could start (waiting for the bulkhead or the rate limiter).
    Cancelled(CancelReason),
    /// A [`Limit`] could not decide (a fleet-wide limit whose backend is down) and
    /// its policy refuses.
    LimitUnavailable,
}

impl<E> ResilienceError<E> {
    /// The call's own error, if an attempt ran and failed.
    pub fn into_inner(self) -> Option<E> {
        match self {
            ResilienceError::Failed { error, .. } => Some(error),
            _ => None,
        }
    }

    /// Whether no attempt ran (a layer of the stack refused the call).
    pub fn is_refused(&self) -> bool {
        !matches!(self, ResilienceError::Failed { .. })
    }
}

/// Describes this error only: the last attempt's error is the
/// [`source`](std::error::Error::source) of [`ResilienceError::Failed`] (when `E` is not
/// an [`Error`](std::error::Error), reach it with
/// [`into_inner`](ResilienceError::into_inner) or by matching; `Debug` shows it).
impl<E> fmt::Display for ResilienceError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResilienceError::Failed { attempts, .. } => {
                write!(f, "call failed after {attempts} attempt(s)")
            }
            ResilienceError::BreakerOpen {
                retry_after: Some(d),
            } => write!(f, "circuit breaker is open (retry after {d:?})"),
            ResilienceError::BreakerOpen { retry_after: None } => {
                f.write_str("circuit breaker refused the call")
            }
            ResilienceError::BulkheadClosed => f.write_str("bulkhead admits no call"),
            ResilienceError::Cancelled(reason) => write!(f, "call not started: {reason}"),
            ResilienceError::LimitUnavailable => f.write_str("a limit could not decide"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for ResilienceError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ResilienceError::Failed { error, .. } => Some(error),
            _ => None,
        }
    }
}

thread_local! {
    /// A token a finished call left untouched, for the next call on this thread.
    static IDLE_TOKEN: Cell<Option<CancelToken>> = const { Cell::new(None) };
}

/// A layer of a [`Resilience`] stack that admits each attempt: a rate limiter (one
/// slot per attempt), a concurrency limit (a permit held for the attempt), or any
/// limit of your own, in-process or shared by a fleet. Waits must end when `token`
/// is cancelled (it carries the call's deadline).
///
/// # Example
///
/// ```
/// use corral::{CancelToken, resilience::{Limit, LimitHold, LimitRefused}, Resilience};
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicBool, Ordering};
///
/// /// Admits nothing while maintenance is on.
/// struct Maintenance(AtomicBool);
///
/// impl Limit for Maintenance {
///     fn admit(&self, _token: &CancelToken) -> Result<LimitHold<'_>, LimitRefused> {
///         if self.0.load(Ordering::Relaxed) {
///             Err(LimitRefused::Unavailable)
///         } else {
///             Ok(LimitHold::nothing())
///         }
///     }
/// }
///
/// let switch = Arc::new(Maintenance(AtomicBool::new(true)));
/// let stack = Resilience::builder().limit(switch.clone()).build()?;
/// assert!(stack.call(|_| Ok::<_, ()>(1)).is_err());
/// switch.0.store(false, Ordering::Relaxed);
/// assert_eq!(stack.call(|_| Ok::<_, ()>(1)), Ok(1));
/// # Ok::<(), corral::ConfigError>(())
/// ```
pub trait Limit: Send + Sync {
    /// Admits one attempt, waiting at most until `token` is cancelled; what it
    /// returns is held until the attempt ends, then dropped.
    ///
    /// # Errors
    ///
    /// [`LimitRefused`]: why the attempt may not start.
    fn admit(&self, token: &CancelToken) -> Result<LimitHold<'_>, LimitRefused>;
}

/// What a [`Limit`] holds for one attempt (a permit), released when dropped.
pub struct LimitHold<'a>(Option<Box<dyn Send + 'a>>);

impl<'a> LimitHold<'a> {
    /// Nothing to hold (a rate limiter's slot is used up once taken).
    pub fn nothing() -> Self {
        LimitHold(None)
    }

    /// Holds `held` (a permit) until the attempt ends.
    pub fn holding(held: impl Send + 'a) -> Self {
        LimitHold(Some(Box::new(held)))
    }
}

impl fmt::Debug for LimitHold<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("LimitHold").field(&self.0.is_some()).finish()
    }
}

/// Why a [`Limit`] did not admit an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimitRefused {
    /// The token was cancelled (or its deadline passed) while waiting.
    Cancelled(CancelReason),
    /// The limit could not decide (its backend is down) and its policy refuses;
    /// the call ends in [`ResilienceError::LimitUnavailable`].
    Unavailable,
}

impl<C: Clock> Limit for RateLimiter<C> {
    fn admit(&self, token: &CancelToken) -> Result<LimitHold<'_>, LimitRefused> {
        // A free slot needs no look at the token (whose deadline costs two clock
        // reads in a wait); a refused check records nothing, so the wait is exact.
        match self.check() {
            Ok(()) => Ok(LimitHold::nothing()),
            Err(_) => match self.wait_cancellable(token) {
                Ok(()) => Ok(LimitHold::nothing()),
                Err(WaitError::Cancelled(reason)) => Err(LimitRefused::Cancelled(reason)),
                Err(_) => Err(LimitRefused::Cancelled(CancelReason::DeadlineExceeded)),
            },
        }
    }
}

/// Counters of a [`Resilience`] stack (relaxed snapshots).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResilienceStats {
    /// Calls that have ended (`succeeded + failed + refused`; a call that panicked is
    /// not counted).
    pub calls: u64,
    /// Calls that returned a value.
    pub succeeded: u64,
    /// Calls that returned [`ResilienceError::Failed`].
    pub failed: u64,
    /// Calls refused before any attempt (breaker, bulkhead, deadline or cancel).
    pub refused: u64,
    /// Attempts made after a failed one.
    pub retries: u64,
}

#[derive(Default)]
struct Counters {
    succeeded: AtomicU64,
    failed: AtomicU64,
    refused: AtomicU64,
    retries: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A composed resilience stack around one dependency: bulkhead → rate limiter →
/// circuit breaker → the call, under a deadline, with retries and exponential backoff.
///
/// Every layer is optional and shared (`Arc`), so the same semaphore, limiter or
/// breaker can also guard other code. All waits are bounded by the per-call
/// [`timeout`](ResilienceBuilder::timeout) and by the caller's token
/// ([`call_cancellable`](Resilience::call_cancellable)); the closure gets that token.
///
/// # Example
///
/// ```
/// use corral::{CircuitBreaker, RateLimiter, Resilience, Semaphore};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// let stack = Resilience::builder()
///     .bulkhead(Arc::new(Semaphore::new(8))) // at most 8 calls in flight
///     .rate_limiter(Arc::new(RateLimiter::per_second(1000).burst(100).build()?))
///     .breaker(Arc::new(CircuitBreaker::builder().consecutive_failures(5).build()?))
///     .timeout(Duration::from_secs(2))
///     .retries(2)
///     .backoff(Duration::from_millis(1), Duration::from_millis(50))
///     .build()?;
/// let mut flaky = 0;
/// let answer = stack.call(|token| {
///     assert!(!token.is_cancelled()); // a real call would pass the token down
///     flaky += 1;
///     if flaky < 2 { Err("timeout from upstream") } else { Ok(42) }
/// });
/// assert_eq!(answer, Ok(42));
/// assert_eq!(stack.stats().retries, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Resilience {
    /// The validated settings: the layers, the deadline, the retry policy.
    config: ResilienceBuilder,
    counters: Counters,
}

impl Resilience {
    /// A builder with no layers, no timeout and no retries.
    pub fn builder() -> ResilienceBuilder {
        ResilienceBuilder::default()
    }

    /// Calls `f` through the stack; every error counts as a failure (for the breaker
    /// and for retries). `f` runs on the calling thread, once per attempt; a panic in
    /// it propagates (the breaker records it as a failure, the permit is released).
    /// So does a panic in `is_failure` ([`call_with`](Resilience::call_with)) or in
    /// the `Drop` of an earlier attempt's error: all user code runs on the caller's
    /// own thread, where its panic is the caller's, and the stack is left consistent.
    ///
    /// Calling the same stack again from inside `f` is allowed; with a bulkhead, each
    /// level holds a permit while it waits for the next, so nest at most `permits - 1`
    /// levels deep or set a [`timeout`](ResilienceBuilder::timeout), which bounds the
    /// wait (it then ends in [`ResilienceError::Cancelled`]).
    ///
    /// # Errors
    ///
    /// [`ResilienceError::Failed`] with the last attempt's error, or the refusal of
    /// the layer that stopped the first attempt.
    pub fn call<T, E>(
        &self,
        f: impl FnMut(&CancelToken) -> Result<T, E>,
    ) -> Result<T, ResilienceError<E>> {
        let Some(timeout) = self.config.timeout else {
            // No deadline: the token only has to exist. A pristine one left by an
            // earlier call on this thread is as good as new and saves two allocations.
            let token = IDLE_TOKEN.with(Cell::take).unwrap_or_default();
            let result = self.run(&token, &|_: &E| true, f);
            if token.is_pristine() {
                IDLE_TOKEN.with(|idle| idle.set(Some(token)));
            }
            return result;
        };
        self.run(&CancelToken::with_timeout(timeout), &|_: &E| true, f)
    }

    /// As [`call`](Resilience::call), also stopping when `token` is cancelled; the
    /// closure gets `token` itself, or a child of it carrying the stack's timeout.
    ///
    /// # Errors
    ///
    /// As [`call`](Resilience::call).
    pub fn call_cancellable<T, E>(
        &self,
        token: &CancelToken,
        f: impl FnMut(&CancelToken) -> Result<T, E>,
    ) -> Result<T, ResilienceError<E>> {
        self.call_with(token, |_| true, f)
    }

    /// The general form: `is_failure` says which errors are failures. Other errors
    /// (a "not found", a validation error) say nothing about the dependency's health:
    /// they are recorded as successes by the breaker and returned without a retry.
    ///
    /// # Errors
    ///
    /// As [`call`](Resilience::call).
    ///
    /// # Example
    ///
    /// ```
    /// use corral::{CancelToken, Resilience, resilience::ResilienceError};
    ///
    /// let stack = Resilience::builder().retries(3).build()?;
    /// let mut attempts = 0;
    /// let lookup = stack.call_with(&CancelToken::new(), |e: &&str| *e != "not found", |_| {
    ///     attempts += 1;
    ///     Err::<u32, _>("not found")
    /// });
    /// assert_eq!(lookup, Err(ResilienceError::Failed { error: "not found", attempts: 1 }));
    /// assert_eq!(attempts, 1); // not retried
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn call_with<T, E>(
        &self,
        token: &CancelToken,
        is_failure: impl Fn(&E) -> bool,
        f: impl FnMut(&CancelToken) -> Result<T, E>,
    ) -> Result<T, ResilienceError<E>> {
        match self.config.timeout {
            Some(timeout) => self.run(&token.child_with_timeout(timeout), &is_failure, f),
            None => self.run(token, &is_failure, f),
        }
    }

    /// The attempts of one call, under `token` (the call's deadline already in it).
    fn run<T, E>(
        &self,
        token: &CancelToken,
        is_failure: &dyn Fn(&E) -> bool,
        mut f: impl FnMut(&CancelToken) -> Result<T, E>,
    ) -> Result<T, ResilienceError<E>> {
        let mut last: Option<(E, u32)> = None;
        let mut attempt: u32 = 0;
        loop {
            let admitted = match self.admit(token) {
                Ok(admitted) => admitted,
                Err(refusal) => return self.end(last, Err(refusal)),
            };
            attempt += 1;
            if attempt > 1 {
                bump(&self.counters.retries);
            }
            let outcome = f(token);
            let failure = matches!(&outcome, Err(e) if is_failure(e));
            admitted.finish(!failure);
            match outcome {
                Ok(value) => {
                    bump(&self.counters.succeeded);
                    return Ok(value);
                }
                Err(error) if !failure || attempt > self.config.retries => {
                    return self.end(Some((error, attempt)), Ok(()));
                }
                Err(error) => last = Some((error, attempt)),
            }
            if !self.back_off(attempt, token) {
                return self.end(last, Ok(()));
            }
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ResilienceStats {
        let c = &self.counters;
        // Every call ends in exactly one of these, so `calls` needs no counter of
        // its own (one shared write per call, not two). A call still in progress is
        // not counted yet.
        let succeeded = c.succeeded.load(Ordering::Relaxed);
        let failed = c.failed.load(Ordering::Relaxed);
        let refused = c.refused.load(Ordering::Relaxed);
        ResilienceStats {
            calls: succeeded + failed + refused,
            succeeded,
            failed,
            refused,
            retries: c.retries.load(Ordering::Relaxed),
        }
    }

    /// The call's result once no attempt follows: the last failure if one ran, else
    /// the refusal.
    fn end<T, E>(
        &self,
        last: Option<(E, u32)>,
        refusal: Result<(), ResilienceError<E>>,
    ) -> Result<T, ResilienceError<E>> {
        match (last, refusal) {
            (Some((error, attempts)), _) => {
                bump(&self.counters.failed);
                Err(ResilienceError::Failed { error, attempts })
            }
            (None, Err(refusal)) => {
                bump(&self.counters.refused);
                Err(refusal)
            }
            (None, Ok(())) => unreachable!("corral: a call ends with a failure or a refusal"),
        }
    }

    /// Passes the layers in order; what they grant is held for one attempt.
    fn admit<E>(&self, token: &CancelToken) -> Result<Admitted<'_>, ResilienceError<E>> {
        // One look at the token up front (with a deadline it reads the clock); the
        // waits below look again only if they have to wait.
        if let Some(reason) = token.reason() {
            return Err(ResilienceError::Cancelled(reason));
        }
        let permit = match &self.config.bulkhead {
            Some(bulkhead) => Some(match bulkhead.try_acquire() {
                Ok(permit) => permit,
                Err(_) => bulkhead.acquire_cancellable(token).map_err(|e| match e {
                    AcquireError::Cancelled(reason) => ResilienceError::Cancelled(reason),
                    AcquireError::Timeout => {
                        ResilienceError::Cancelled(CancelReason::DeadlineExceeded)
                    }
                    _ => ResilienceError::BulkheadClosed,
                })?,
            }),
            None => None,
        };
        let refused = |e| match e {
            LimitRefused::Cancelled(reason) => ResilienceError::Cancelled(reason),
            LimitRefused::Unavailable => ResilienceError::LimitUnavailable,
        };
        let mut held = Vec::new();
        for limit in &self.config.limits {
            held.push(limit.admit(token).map_err(refused)?);
        }
        if let Some(limiter) = &self.config.limiter {
            limiter.admit(token).map_err(refused)?;
        }
        let guard = match &self.config.breaker {
            Some(breaker) => {
                Some(
                    breaker
                        .try_acquire()
                        .map_err(|e| ResilienceError::BreakerOpen {
                            retry_after: e.retry_after(),
                        })?,
                )
            }
            None => None,
        };
        Ok(Admitted {
            _permit: permit,
            _held: held,
            guard,
        })
    }

    /// Sleeps before attempt `attempt + 1`; `false` if the deadline or the token
    /// ends the call first (a backoff that would outlast the deadline is not slept).
    fn back_off(&self, attempt: u32, token: &CancelToken) -> bool {
        let (initial, max) = self.config.backoff;
        let mut delay = initial
            .checked_mul(1u32 << (attempt - 1).min(31))
            .unwrap_or(max)
            .min(max);
        if self.config.jitter {
            delay = full_jitter(delay);
        }
        if let Some(left) = token.remaining() {
            if delay >= left {
                return false;
            }
        }
        if delay.is_zero() {
            return !token.is_cancelled();
        }
        let until = time::deadline_after(self.config.clock.now(), delay);
        self.config.clock.sleep_until(until, Some(token))
    }
}

/// A wait drawn uniformly from `0..=delay`. std's `RandomState` is randomly keyed per
/// thread and per instance, which is all the randomness spreading retries needs.
fn full_jitter(delay: Duration) -> Duration {
    use std::hash::BuildHasher;
    let roll = std::collections::hash_map::RandomState::new().hash_one(0u8);
    let nanos = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(roll % nanos.saturating_add(1))
}

impl fmt::Debug for Resilience {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resilience")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish()
    }
}

/// What one attempt holds: the bulkhead permit, what the limits hold, and the
/// breaker guard.
struct Admitted<'a> {
    _permit: Option<Permit<'a>>,
    _held: Vec<LimitHold<'a>>,
    guard: Option<BreakerGuard<'a>>,
}

impl Admitted<'_> {
    fn finish(self, ok: bool) {
        if let Some(guard) = self.guard {
            guard.record(ok);
        }
    }
}

/// Configures a [`Resilience`] stack. Every layer is optional.
#[derive(Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct ResilienceBuilder {
    bulkhead: Option<Arc<Semaphore>>,
    limits: Vec<Arc<dyn Limit>>,
    limiter: Option<Arc<dyn Limit>>,
    breaker: Option<Arc<CircuitBreaker>>,
    timeout: Option<Duration>,
    retries: u32,
    backoff: (Duration, Duration),
    jitter: bool,
    clock: Arc<dyn Clock>,
}

impl Default for ResilienceBuilder {
    fn default() -> Self {
        ResilienceBuilder {
            bulkhead: None,
            limits: Vec::new(),
            limiter: None,
            breaker: None,
            timeout: None,
            retries: 0,
            backoff: (Duration::from_millis(10), Duration::from_secs(1)),
            jitter: false,
            clock: Arc::new(SystemClock),
        }
    }
}

impl ResilienceBuilder {
    /// Limits concurrent attempts to the semaphore's permits (one per attempt, held
    /// during the call only). Waiting for a permit is bounded by the call's deadline.
    pub fn bulkhead(mut self, semaphore: Arc<Semaphore>) -> Self {
        self.bulkhead = Some(semaphore);
        self
    }

    /// Takes one slot per attempt, waiting within the call's deadline (a slot that
    /// lies past it refuses at once, without sleeping).
    pub fn rate_limiter<C: Clock>(mut self, limiter: Arc<RateLimiter<C>>) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// Adds a [`Limit`] every attempt must pass, after the bulkhead and before the
    /// rate limiter, in the order added: e.g. a fleet-wide `RedisSemaphore` or a
    /// `RedisRateLimiter` key (feature `redis`). What it holds is released when the
    /// attempt ends; its waits are bounded by the call's deadline.
    pub fn limit<L: Limit + 'static>(mut self, limit: Arc<L>) -> Self {
        self.limits.push(limit);
        self
    }

    /// Records every attempt's outcome; an open breaker refuses without calling.
    pub fn breaker(mut self, breaker: Arc<CircuitBreaker>) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// The whole call's deadline, retries and backoffs included; the closure's token
    /// carries it. Zero is refused by [`build`](ResilienceBuilder::build); a timeout
    /// too large to represent (`Duration::MAX`) saturates to "never".
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Attempts after the first failure (default 0, a single attempt). Stops early at
    /// the deadline. At most 1,000,000 ([`build`](ResilienceBuilder::build) refuses
    /// more).
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// The wait before retry `n` is `initial * 2^(n-1)`, capped at `max` (default
    /// 10 ms, capped at 1 s). A wait that would outlast the deadline is not taken.
    /// Both may be zero (retry at once) or as large as `Duration::MAX` (the wait
    /// saturates; the call's token still ends it); `initial` above `max` is refused by
    /// [`build`](ResilienceBuilder::build).
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff = (initial, max);
        self
    }

    /// Full jitter: each backoff is drawn uniformly between zero and its computed
    /// length, so many callers that failed together do not retry together (a fleet
    /// retrying in lockstep keeps a recovering dependency down). Off by default, so
    /// waits are exact and tests deterministic.
    pub fn jitter(mut self, jitter: bool) -> Self {
        self.jitter = jitter;
        self
    }

    /// The clock backoffs sleep on (`ManualClock` in tests).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Builds the stack.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field: `timeout` of zero, `retries` above
    /// 1,000,000, `backoff` whose initial wait exceeds its cap.
    pub fn build(self) -> Result<Resilience, ConfigError> {
        if self.timeout == Some(Duration::ZERO) {
            return Err(ConfigError::new(
                "timeout",
                Duration::ZERO,
                "must be above zero",
            ));
        }
        if self.retries > 1_000_000 {
            return Err(ConfigError::new(
                "retries",
                self.retries,
                "must be at most 1000000",
            ));
        }
        let (initial, max) = self.backoff;
        if initial > max {
            return Err(ConfigError::new(
                "backoff",
                (initial, max),
                "the initial wait must not exceed the cap",
            ));
        }
        Ok(Resilience {
            config: self,
            counters: Counters::default(),
        })
    }
}

impl fmt::Debug for ResilienceBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResilienceBuilder")
            .field("bulkhead", &self.bulkhead.is_some())
            .field("limits", &self.limits.len())
            .field("rate_limiter", &self.limiter.is_some())
            .field("breaker", &self.breaker.is_some())
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("backoff", &self.backoff)
            .field("jitter", &self.jitter)
            .finish()
    }
}
