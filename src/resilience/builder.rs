//! The builder of a [`Resilience`] stack: its layers and policies, validated by
//! [`build`](ResilienceBuilder::build).

use std::fmt;
use std::time::Duration;

use super::isolate::Isolation;
use super::{Limit, Resilience, RetryBudget};
use crate::breaker::CircuitBreaker;
use crate::clock::{Clock, SystemClock};
use crate::config::ConfigError;
use crate::semaphore::Semaphore;
use std::sync::Arc;

/// Configures a [`Resilience`] stack. Every layer is optional.
#[derive(Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct ResilienceBuilder {
    pub(super) name: Option<String>,
    pub(super) bulkhead: Option<Arc<Semaphore>>,
    pub(super) isolate: Option<usize>,
    pub(super) limits: Vec<Arc<dyn Limit>>,
    pub(super) limiter: Option<Arc<dyn Limit>>,
    pub(super) breaker: Option<Arc<CircuitBreaker>>,
    pub(super) timeout: Option<Duration>,
    pub(super) retries: u32,
    pub(super) budget: Option<Arc<RetryBudget>>,
    pub(super) backoff: (Duration, Duration),
    pub(super) jitter: bool,
    pub(super) clock: Arc<dyn Clock>,
}

impl Default for ResilienceBuilder {
    fn default() -> Self {
        ResilienceBuilder {
            name: None,
            bulkhead: None,
            isolate: None,
            limits: Vec::new(),
            limiter: None,
            breaker: None,
            timeout: None,
            retries: 0,
            budget: None,
            backoff: (Duration::from_millis(10), Duration::from_secs(1)),
            jitter: false,
            clock: Arc::new(SystemClock),
        }
    }
}

impl ResilienceBuilder {
    /// A name for the stack, shown by `Debug` and `Display` and given to its pool's
    /// threads (`corral-resilience-{name}-{index}`); a name with a NUL byte is refused
    /// by [`build`](ResilienceBuilder::build).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Limits concurrent attempts to the semaphore's permits (one per attempt, held
    /// during the call only). Waiting for a permit is bounded by the call's deadline.
    pub fn bulkhead(mut self, semaphore: Arc<Semaphore>) -> Self {
        self.bulkhead = Some(semaphore);
        self
    }

    /// Gives the stack a pool of `workers` threads of its own, on which
    /// [`call_isolated`](Resilience::call_isolated) runs each attempt so its caller
    /// can give up at the deadline. The pool is also a bulkhead: with every worker
    /// busy, a call is refused at once ([`ResilienceError::BulkheadFull`](super::ResilienceError::BulkheadFull)). From 1 to
    /// 4096 ([`build`](ResilienceBuilder::build) refuses others). The threads start
    /// with the stack and are joined when it is dropped.
    pub fn isolate(mut self, workers: usize) -> Self {
        self.isolate = Some(workers);
        self
    }

    /// The rate limit of the stack: one slot per attempt, waited for within the
    /// call's deadline (a slot that lies past it refuses at once, with
    /// [`ResilienceError::RateLimited`](super::ResilienceError::RateLimited)). Any [`Limit`]: a [`RateLimiter`], one key of
    /// a [`KeyedRateLimiter`](crate::KeyedRateLimiter)
    /// ([`limit_for`](crate::KeyedRateLimiter::limit_for)), one key of a fleet-wide
    /// `RedisRateLimiter` (feature `redis`).
    ///
    /// [`RateLimiter`]: crate::RateLimiter
    pub fn rate_limiter<L: Limit + 'static>(mut self, limiter: Arc<L>) -> Self {
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

    /// Records every attempt's outcome, judged by the breaker's own
    /// [`is_failure`](crate::breaker::BreakerBuilder::is_failure) predicate; an open
    /// breaker refuses without calling.
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

    /// Shares `budget` with the other stacks given it: a retry it refuses ends the
    /// call with its last error, so retries stay a bounded share of the load.
    pub fn retry_budget(mut self, budget: Arc<RetryBudget>) -> Self {
        self.budget = Some(budget);
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

    /// Builds the stack, and starts its pool's threads if it has one.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field: `timeout` of zero, `retries` above
    /// 1,000,000, `backoff` whose initial wait exceeds its cap, `workers` outside
    /// 1..=4096 ([`isolate`](ResilienceBuilder::isolate)), `thread_name` for a
    /// [`name`](ResilienceBuilder::name) with a NUL byte, `isolate` when the OS
    /// refuses a thread (those already started are joined first).
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
        let isolation = match self.isolate {
            Some(workers) => {
                let name = match &self.name {
                    Some(name) => format!("resilience-{name}"),
                    None => "resilience".to_owned(),
                };
                Some(Isolation::new(workers, &name)?)
            }
            None => None,
        };
        Ok(Resilience::new(self, isolation))
    }
}

impl fmt::Debug for ResilienceBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResilienceBuilder")
            .field("name", &self.name)
            .field("bulkhead", &self.bulkhead.is_some())
            .field("isolate", &self.isolate)
            .field("limits", &self.limits.len())
            .field("rate_limiter", &self.limiter.is_some())
            .field("breaker", &self.breaker.is_some())
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("retry_budget", &self.budget.is_some())
            .field("backoff", &self.backoff)
            .field("jitter", &self.jitter)
            .finish()
    }
}
