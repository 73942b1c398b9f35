//! One call through a bulkhead, rate limits, a circuit breaker and a deadline, with
//! retries, a retry budget and a fallback, all under one cancellation token.
//!
//! A [`Resilience`] stack orders the crate's primitives around the caller's closure.
//! Per attempt: the bulkhead ([`Semaphore`](crate::semaphore::Semaphore)), a worker
//! of the stack's own pool (only for [`call_isolated`](Resilience::call_isolated)),
//! each [`Limit`] in the order added, the rate limiter, then the breaker
//! ([`CircuitBreaker`]), asked last so its slow-call timing covers the call alone.
//! What they grant is held for the attempt only, never across a backoff. Every wait
//! is bounded by one [`CancelToken`] that carries the call's deadline and the
//! caller's cancellation; the closure gets it.
//!
//! [`call`](Resilience::call) runs the closure on the caller's thread: a callee that
//! ignores its token makes its caller wait. [`call_isolated`](Resilience::call_isolated)
//! runs it on a bounded pool the stack owns ([`isolate`](ResilienceBuilder::isolate)),
//! so the caller gives up at the deadline; the abandoned call keeps its worker until
//! it returns and is counted ([`ResilienceStats`]), and a full pool refuses at once.
//! The breaker judges errors with its own predicate; the stack's retry predicate
//! decides what is retried. [`ResilienceError`] names the layer that refused.

mod budget;
mod builder;
mod error;
mod isolate;
mod limit;

pub use budget::{RetryBudget, RetryBudgetBuilder, RetryBudgetStats};
pub use builder::ResilienceBuilder;
pub use error::ResilienceError;
pub use limit::{KeyedLimit, Limit, LimitHold, LimitRefused};

use std::cell::Cell;
use std::fmt;
use std::time::Duration;

use crate::breaker::{BreakerGuard, CircuitBreaker};
use crate::cancel::{CancelReason, CancelToken};
use crate::observe::event;
use crate::semaphore::{AcquireError, OwnedPermit, Permit};
use crate::sync::{time, AtomicU64, Ordering};

use isolate::{Isolation, Ran};

thread_local! {
    /// A token a finished call left untouched, for the next call on this thread.
    static IDLE_TOKEN: Cell<Option<CancelToken>> = const { Cell::new(None) };
}

/// Counters of a [`Resilience`] stack, per layer (relaxed snapshots).
///
/// Every call that has ended is counted once in `succeeded`, `failed` or one of the
/// refusals, whose sum is `refused`; a call still in progress (or one that
/// panicked) is not counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResilienceStats {
    /// Calls that have ended (`succeeded + failed + refused`).
    pub calls: u64,
    /// Calls that returned a value.
    pub succeeded: u64,
    /// Calls that returned [`ResilienceError::Inner`].
    pub failed: u64,
    /// Calls the stack ended itself: the sum of the refusals below.
    pub refused: u64,
    /// Refused by the bulkhead or a full pool ([`ResilienceError::BulkheadFull`],
    /// [`ResilienceError::BulkheadClosed`]).
    pub bulkhead_refused: u64,
    /// Refused by a rate limit ([`ResilienceError::RateLimited`]).
    pub rate_limited: u64,
    /// Refused by a limit that could not decide ([`ResilienceError::LimitUnavailable`]).
    pub limit_unavailable: u64,
    /// Refused by the breaker ([`ResilienceError::BreakerOpen`]).
    pub breaker_open: u64,
    /// Ended by the deadline ([`ResilienceError::DeadlineExceeded`]).
    pub deadline_exceeded: u64,
    /// Ended by the caller's token ([`ResilienceError::Cancelled`]).
    pub cancelled: u64,
    /// Attempts made after a failed one.
    pub retries: u64,
    /// Retries the [`RetryBudget`] refused (the call ended with its last error).
    pub retries_denied: u64,
    /// Values produced by a fallback ([`Resilience::or_fallback`]).
    pub fallbacks: u64,
    /// Calls on the stack's pool given up on while running: each keeps its worker
    /// until it returns.
    pub abandoned: u64,
    /// Of the `abandoned`, those that have returned since (`abandoned -
    /// abandoned_finished` still hold a worker).
    pub abandoned_finished: u64,
    /// Calls on the stack's pool given up on while queued: they never started.
    pub never_started: u64,
}

/// One count: the stack's own, for [`Resilience::stats`], and its metric (feature
/// `metrics`; a no-op without it).
struct Count {
    local: AtomicU64,
    metric: event::Counter,
}

impl Count {
    fn new(metric: &'static str, name: Option<&str>) -> Self {
        Count {
            local: AtomicU64::new(0),
            metric: event::Counter::new(metric, KIND, name),
        }
    }

    fn bump(&self) {
        self.local.fetch_add(1, Ordering::Relaxed);
        self.metric.add(1);
    }

    fn get(&self) -> u64 {
        self.local.load(Ordering::Relaxed)
    }
}

/// The kind label of the stack's metrics and events.
const KIND: &str = "Resilience";

struct Counters {
    succeeded: Count,
    failed: Count,
    bulkhead_refused: Count,
    rate_limited: Count,
    limit_unavailable: Count,
    breaker_open: Count,
    deadline_exceeded: Count,
    cancelled: Count,
    retries: Count,
    retries_denied: Count,
    fallbacks: Count,
}

impl Counters {
    /// Registers the metrics (on the thread that builds the stack).
    fn new(name: Option<&str>) -> Self {
        let count = |metric| Count::new(metric, name);
        Counters {
            succeeded: count("corral_resilience_succeeded_total"),
            failed: count("corral_resilience_failed_total"),
            bulkhead_refused: count("corral_resilience_bulkhead_refused_total"),
            rate_limited: count("corral_resilience_rate_limited_total"),
            limit_unavailable: count("corral_resilience_limit_unavailable_total"),
            breaker_open: count("corral_resilience_breaker_open_total"),
            deadline_exceeded: count("corral_resilience_deadline_exceeded_total"),
            cancelled: count("corral_resilience_cancelled_total"),
            retries: count("corral_resilience_retries_total"),
            retries_denied: count("corral_resilience_retries_denied_total"),
            fallbacks: count("corral_resilience_fallbacks_total"),
        }
    }
}

/// A composed resilience stack around one dependency: bulkhead → pool → limits →
/// rate limiter → circuit breaker → the call, under a deadline, with retries,
/// exponential backoff and an optional shared retry budget.
///
/// Every layer is optional and shared (`Arc`), so the same semaphore, limiter or
/// breaker can also guard other code. All waits are bounded by the per-call
/// [`timeout`](ResilienceBuilder::timeout) and by the caller's token
/// ([`call_cancellable`](Resilience::call_cancellable)); the closure gets that token.
/// `Display` lists the layers in order.
///
/// # Dropping
///
/// A stack built with [`isolate`](ResilienceBuilder::isolate) owns its pool's
/// threads. Dropping it joins them: it waits for every call given up on to return
/// (their tokens are already cancelled, by the deadline or by their caller); no
/// thread is detached. To bound that wait, call
/// [`shutdown_timeout`](Resilience::shutdown_timeout), which hands the stack back
/// while a call still runs.
///
/// # Example
///
/// ```
/// use corral::{CircuitBreaker, RateLimiter, Resilience, Semaphore};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// let stack = Resilience::builder()
///     .name("prices")
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
/// assert_eq!(
///     stack.to_string(),
///     "resilience \"prices\": bulkhead -> rate limiter -> breaker -> call; \
///      timeout 2s, retries 2",
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Resilience {
    /// The validated settings: the layers, the deadline, the retry policy.
    config: ResilienceBuilder,
    counters: Counters,
    /// The pool of [`call_isolated`](Resilience::call_isolated), when configured.
    isolation: Option<Isolation>,
}

impl Resilience {
    /// A builder with no layers, no timeout and no retries.
    pub fn builder() -> ResilienceBuilder {
        ResilienceBuilder::default()
    }

    /// The stack of validated settings, with its pool when it has one.
    fn new(config: ResilienceBuilder, isolation: Option<Isolation>) -> Self {
        Resilience {
            counters: Counters::new(config.name.as_deref()),
            config,
            isolation,
        }
    }

    /// Calls `f` through the stack on the calling thread, once per attempt; every
    /// error is retried (up to [`retries`](ResilienceBuilder::retries)), and the
    /// breaker counts the errors its own
    /// [`is_failure`](crate::breaker::BreakerBuilder::is_failure) predicate counts.
    /// The caller waits for `f` however long it takes (a stack's pool is used only
    /// by [`call_isolated`](Resilience::call_isolated)): `f` should honour its token.
    ///
    /// A panic in `f` propagates (the breaker records it as a failure, the permit is
    /// released); so does a panic in the retry predicate
    /// ([`call_with`](Resilience::call_with)) or in the `Drop` of an earlier
    /// attempt's error: all user code runs on the caller's own thread, where its
    /// panic is the caller's, and the stack is left consistent.
    ///
    /// Calling the same stack again from inside `f` is allowed; with a bulkhead, each
    /// level holds a permit while it waits for the next, so nest at most `permits - 1`
    /// levels deep or set a [`timeout`](ResilienceBuilder::timeout), which bounds the
    /// wait (it then ends in [`ResilienceError::DeadlineExceeded`]).
    ///
    /// # Errors
    ///
    /// [`ResilienceError::Inner`] with the last attempt's error, or the refusal of
    /// the layer that stopped the call.
    pub fn call<T, E: 'static>(
        &self,
        mut f: impl FnMut(&CancelToken) -> Result<T, E>,
    ) -> Result<T, ResilienceError<E>> {
        let Some(timeout) = self.config.timeout else {
            // No deadline: the token only has to exist. A pristine one left by an
            // earlier call on this thread is as good as new and saves two allocations.
            let token = IDLE_TOKEN.with(Cell::take).unwrap_or_default();
            let result = self.run(&token, &|_: &E| true, false, |token, _| {
                Ran::Returned(f(token))
            });
            if token.is_pristine() {
                IDLE_TOKEN.with(|idle| idle.set(Some(token)));
            }
            return result;
        };
        let token = CancelToken::with_timeout(timeout);
        self.run(&token, &|_: &E| true, false, |token, _| {
            Ran::Returned(f(token))
        })
    }

    /// As [`call`](Resilience::call), also stopping when `token` is cancelled; the
    /// closure gets `token` itself, or a child of it carrying the stack's timeout.
    ///
    /// # Errors
    ///
    /// As [`call`](Resilience::call).
    pub fn call_cancellable<T, E: 'static>(
        &self,
        token: &CancelToken,
        f: impl FnMut(&CancelToken) -> Result<T, E>,
    ) -> Result<T, ResilienceError<E>> {
        self.call_with(token, |_| true, f)
    }

    /// The general form: `is_retryable` says which errors are worth another attempt.
    /// Others (a "not found", a validation error) end the call at once. What counts
    /// against the breaker is the breaker's own business: its
    /// [`is_failure`](crate::breaker::BreakerBuilder::is_failure) predicate.
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
    /// assert_eq!(lookup, Err(ResilienceError::Inner { error: "not found", attempts: 1 }));
    /// assert_eq!(attempts, 1); // not retried
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn call_with<T, E: 'static>(
        &self,
        token: &CancelToken,
        is_retryable: impl Fn(&E) -> bool,
        mut f: impl FnMut(&CancelToken) -> Result<T, E>,
    ) -> Result<T, ResilienceError<E>> {
        let attempt = |token: &CancelToken, _| Ran::Returned(f(token));
        match self.config.timeout {
            Some(timeout) => {
                let token = token.child_with_timeout(timeout);
                self.run(&token, &is_retryable, false, attempt)
            }
            None => self.run(token, &is_retryable, false, attempt),
        }
    }

    /// As [`call`](Resilience::call), each attempt on the stack's own pool
    /// ([`isolate`](ResilienceBuilder::isolate)) while the caller waits until the
    /// deadline at most: a callee that ignores its token is given up on
    /// ([`ResilienceError::DeadlineExceeded`], on time) and keeps running under the
    /// pool's ownership, counted in [`ResilienceStats::abandoned`] until it returns.
    /// An attempt still queued when its caller gives up never starts; when every
    /// worker is busy (with calls given up on too) the call is refused at once
    /// ([`ResilienceError::BulkheadFull`]). A call given up on at its deadline
    /// counts as a failure for the breaker. A panic in `f` is re-raised on the
    /// caller's thread. Without `isolate`, it runs as [`call`](Resilience::call).
    ///
    /// # Errors
    ///
    /// As [`call`](Resilience::call).
    ///
    /// # Example
    ///
    /// ```
    /// use corral::{Resilience, resilience::ResilienceError};
    /// use std::time::Duration;
    ///
    /// let stack = Resilience::builder()
    ///     .isolate(2)
    ///     .timeout(Duration::from_millis(20))
    ///     .build()?;
    /// let (release, hang) = crossbeam_channel::bounded::<()>(0);
    /// // A callee that ignores its token: the caller still gets its answer on time.
    /// let outcome = stack.call_isolated(move |_token| hang.recv().map_err(|_| "gone"));
    /// assert_eq!(outcome, Err(ResilienceError::DeadlineExceeded));
    /// assert_eq!(stack.stats().abandoned, 1);
    /// drop(release); // the abandoned call returns; dropping the stack joins its pool
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn call_isolated<T, E, F>(&self, f: F) -> Result<T, ResilienceError<E>>
    where
        F: FnMut(&CancelToken) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        self.call_isolated_with(&CancelToken::new(), |_| true, f)
    }

    /// [`call_isolated`](Resilience::call_isolated) under the caller's `token` and
    /// with a retry predicate, as [`call_with`](Resilience::call_with).
    ///
    /// # Errors
    ///
    /// As [`call`](Resilience::call).
    pub fn call_isolated_with<T, E, F>(
        &self,
        token: &CancelToken,
        is_retryable: impl Fn(&E) -> bool,
        f: F,
    ) -> Result<T, ResilienceError<E>>
    where
        F: FnMut(&CancelToken) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let mut f = Some(f);
        let attempt = |token: &CancelToken, worker: Option<OwnedPermit>| {
            let Some(mut call) = f.take() else {
                unreachable!("corral: no attempt follows one given up on")
            };
            match (&self.isolation, worker) {
                (Some(isolation), Some(slot)) => {
                    let (back, ran) = isolation.run(call, token, slot);
                    f = back;
                    ran
                }
                _ => {
                    let outcome = call(token);
                    f = Some(call);
                    Ran::Returned(outcome)
                }
            }
        };
        match self.config.timeout {
            Some(timeout) => {
                let token = token.child_with_timeout(timeout);
                self.run(&token, &is_retryable, true, attempt)
            }
            None => self.run(token, &is_retryable, true, attempt),
        }
    }

    /// The fallback layer: `outcome` as it is, or, when the stack produced no value,
    /// whatever `fallback` makes of the error (a cached or default answer); `None`
    /// keeps the error. A value it produces is counted in
    /// [`ResilienceStats::fallbacks`].
    ///
    /// # Errors
    ///
    /// The error of `outcome` when `fallback` gives `None`.
    ///
    /// # Example
    ///
    /// ```
    /// use corral::{CircuitBreaker, Resilience};
    /// use std::sync::Arc;
    ///
    /// let breaker = Arc::new(CircuitBreaker::new());
    /// breaker.trip();
    /// let stack = Resilience::builder().breaker(breaker).build()?;
    /// let cached = 41;
    /// let price = stack.or_fallback(stack.call(|_| Ok::<_, ()>(42)), |e| {
    ///     e.is_refused().then_some(cached) // stale but useful; a real error stays
    /// });
    /// assert_eq!(price, Ok(41));
    /// assert_eq!(stack.stats().fallbacks, 1);
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn or_fallback<T, E>(
        &self,
        outcome: Result<T, ResilienceError<E>>,
        fallback: impl FnOnce(&ResilienceError<E>) -> Option<T>,
    ) -> Result<T, ResilienceError<E>> {
        match outcome {
            Ok(value) => Ok(value),
            Err(error) => match fallback(&error) {
                Some(value) => {
                    self.counters.fallbacks.bump();
                    Ok(value)
                }
                None => Err(error),
            },
        }
    }

    /// The attempts of one call, under `token` (the call's deadline already in it).
    fn run<T, E: 'static>(
        &self,
        token: &CancelToken,
        is_retryable: &dyn Fn(&E) -> bool,
        isolated: bool,
        mut attempt: impl FnMut(&CancelToken, Option<OwnedPermit>) -> Ran<T, E>,
    ) -> Result<T, ResilienceError<E>> {
        if let Some(budget) = &self.config.budget {
            budget.deposit();
        }
        let mut last: Option<(E, u32)> = None;
        let mut attempts: u32 = 0;
        loop {
            let (admitted, worker) = match self.admit(token, isolated) {
                Ok(admitted) => admitted,
                Err(refusal) => return self.end(last, refusal),
            };
            attempts += 1;
            if attempts > 1 {
                self.counters.retries.bump();
                event::emit!(
                    debug,
                    KIND,
                    self.config.name.as_deref(),
                    "resilience retrying a call",
                    attempt = u64::from(attempts),
                );
            }
            let outcome = match attempt(token, worker) {
                Ran::Returned(outcome) => outcome,
                Ran::GaveUp { reason, started } => {
                    admitted.gave_up(started && reason == CancelReason::DeadlineExceeded);
                    return self.end(None, ResilienceError::from_reason(reason));
                }
                Ran::Closed => {
                    admitted.gave_up(false);
                    return self.end(last, ResilienceError::BulkheadClosed);
                }
            };
            admitted.finish(self.config.breaker.as_deref(), &outcome);
            match outcome {
                Ok(value) => {
                    self.counters.succeeded.bump();
                    return Ok(value);
                }
                Err(error) => {
                    if attempts > self.config.retries
                        || !is_retryable(&error)
                        || !self.budget_allows_retry()
                    {
                        return self.fail(error, attempts);
                    }
                    last = Some((error, attempts));
                }
            }
            if !self.back_off(attempts, token) {
                let (error, attempts) = last.expect("corral: a backoff follows a failure");
                return self.fail(error, attempts);
            }
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ResilienceStats {
        let c = &self.counters;
        let mut stats = ResilienceStats {
            succeeded: c.succeeded.get(),
            failed: c.failed.get(),
            bulkhead_refused: c.bulkhead_refused.get(),
            rate_limited: c.rate_limited.get(),
            limit_unavailable: c.limit_unavailable.get(),
            breaker_open: c.breaker_open.get(),
            deadline_exceeded: c.deadline_exceeded.get(),
            cancelled: c.cancelled.get(),
            retries: c.retries.get(),
            retries_denied: c.retries_denied.get(),
            fallbacks: c.fallbacks.get(),
            ..ResilienceStats::default()
        };
        // Every call ends in exactly one counter, so the sums need none of their own
        // (one shared write per call).
        stats.refused = stats.bulkhead_refused
            + stats.rate_limited
            + stats.limit_unavailable
            + stats.breaker_open
            + stats.deadline_exceeded
            + stats.cancelled;
        stats.calls = stats.succeeded + stats.failed + stats.refused;
        if let Some(isolation) = &self.isolation {
            let tally = &isolation.tally;
            // The finished count first, so a snapshot never shows more finished
            // calls than abandoned ones.
            stats.abandoned_finished = tally.abandoned_finished.load(Ordering::Acquire);
            stats.abandoned = tally.abandoned.load(Ordering::Acquire);
            stats.never_started = tally.never_started.load(Ordering::Relaxed);
        }
        stats
    }

    /// The stack's name, if [`name`](ResilienceBuilder::name) gave it one.
    pub fn name(&self) -> Option<&str> {
        self.config.name.as_deref()
    }

    /// Stops the stack's pool ([`isolate`](ResilienceBuilder::isolate)) if every call
    /// still on it returns within `timeout`; a stack without a pool stops at once.
    ///
    /// # Errors
    ///
    /// The stack itself, when a call given up on still runs after `timeout` (its
    /// thread is not detached: call again, or drop the stack to wait for it).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Result<(), Box<Resilience>> {
        let Some(isolation) = self.isolation.take() else {
            return Ok(());
        };
        isolation.shutdown_timeout(timeout).map_err(|isolation| {
            self.isolation = Some(isolation);
            Box::new(self)
        })
    }

    /// Takes a retry from the shared budget, if the stack has one.
    fn budget_allows_retry(&self) -> bool {
        let Some(budget) = &self.config.budget else {
            return true;
        };
        let allowed = budget.withdraw();
        if !allowed {
            self.counters.retries_denied.bump();
        }
        allowed
    }

    /// The call's own failure, counted.
    fn fail<T, E>(&self, error: E, attempts: u32) -> Result<T, ResilienceError<E>> {
        self.counters.failed.bump();
        Err(ResilienceError::Inner { error, attempts })
    }

    /// The call's result once no attempt follows: the last failure if one ran, else
    /// the refusal, counted under its layer.
    fn end<T, E>(
        &self,
        last: Option<(E, u32)>,
        refusal: ResilienceError<E>,
    ) -> Result<T, ResilienceError<E>> {
        if let Some((error, attempts)) = last {
            return self.fail(error, attempts);
        }
        let c = &self.counters;
        match &refusal {
            ResilienceError::RateLimited { .. } => &c.rate_limited,
            ResilienceError::BreakerOpen { .. } => &c.breaker_open,
            ResilienceError::DeadlineExceeded => &c.deadline_exceeded,
            ResilienceError::Cancelled(_) => &c.cancelled,
            ResilienceError::LimitUnavailable => &c.limit_unavailable,
            _ => &c.bulkhead_refused,
        }
        .bump();
        Err(refusal)
    }

    /// Passes the layers in order; what they grant is held for one attempt.
    /// Inlined into the attempt loop: returned through memory, its fresh stores
    /// stall the loads that copy them out.
    #[inline(always)]
    fn admit<E>(
        &self,
        token: &CancelToken,
        isolated: bool,
    ) -> Result<(Admitted<'_>, Option<OwnedPermit>), ResilienceError<E>> {
        // One look at the token up front (with a deadline it reads the clock); the
        // waits below look again only if they have to wait.
        if let Some(reason) = token.reason() {
            return Err(ResilienceError::from_reason(reason));
        }
        let permit = match &self.config.bulkhead {
            Some(bulkhead) => Some(match bulkhead.try_acquire() {
                Ok(permit) => permit,
                Err(_) => bulkhead.acquire_cancellable(token).map_err(|e| match e {
                    AcquireError::Cancelled(reason) => ResilienceError::from_reason(reason),
                    AcquireError::Timeout => ResilienceError::DeadlineExceeded,
                    _ => ResilienceError::BulkheadClosed,
                })?,
            }),
            None => None,
        };
        let worker = match (&self.isolation, isolated) {
            (Some(isolation), true) => Some(isolation.slot().ok_or(ResilienceError::BulkheadFull)?),
            _ => None,
        };
        let refused = |e| match e {
            LimitRefused::RateLimited { retry_after } => {
                ResilienceError::RateLimited { retry_after }
            }
            LimitRefused::Cancelled(reason) => ResilienceError::from_reason(reason),
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
        let admitted = Admitted {
            _permit: permit,
            _held: held,
            guard,
        };
        Ok((admitted, worker))
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
            .field("name", &self.config.name)
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish()
    }
}

/// The layers in the order an attempt passes them, then the call's policies:
/// `resilience "prices": bulkhead -> pool(4) -> rate limiter -> breaker -> call;
/// timeout 2s, retries 2 (budget)`.
impl fmt::Display for Resilience {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        f.write_str("resilience")?;
        if let Some(name) = &c.name {
            write!(f, " {name:?}")?;
        }
        f.write_str(": ")?;
        if c.bulkhead.is_some() {
            f.write_str("bulkhead -> ")?;
        }
        if let Some(isolation) = &self.isolation {
            write!(f, "pool({}) -> ", isolation.workers())?;
        }
        for _ in &c.limits {
            f.write_str("limit -> ")?;
        }
        if c.limiter.is_some() {
            f.write_str("rate limiter -> ")?;
        }
        if c.breaker.is_some() {
            f.write_str("breaker -> ")?;
        }
        f.write_str("call")?;
        let mut sep = "; ";
        if let Some(timeout) = c.timeout {
            write!(f, "{sep}timeout {timeout:?}")?;
            sep = ", ";
        }
        if c.retries > 0 {
            write!(f, "{sep}retries {}", c.retries)?;
            if c.budget.is_some() {
                f.write_str(" (budget)")?;
            }
        }
        Ok(())
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
    /// Records the attempt's outcome as the breaker's own predicate judges it.
    /// Inlined: passed by address, the struct's fresh stores stall the loads.
    #[inline(always)]
    fn finish<T, E: 'static>(self, breaker: Option<&CircuitBreaker>, outcome: &Result<T, E>) {
        let ok = match (outcome, breaker) {
            (Ok(_), _) | (Err(_), None) => true,
            (Err(error), Some(breaker)) => !breaker.counts_as_failure(error),
        };
        if let Some(guard) = self.guard {
            guard.record(ok);
        }
    }

    /// The caller stopped waiting: a call that overran its deadline is a failure
    /// for the breaker; one never started or cancelled by its caller says nothing.
    fn gave_up(self, timed_out: bool) {
        if let Some(guard) = self.guard {
            if timed_out {
                guard.failure();
            } else {
                guard.ignore();
            }
        }
    }
}
