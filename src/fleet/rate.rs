//! [`RedisRateLimiter`]: one GCRA per key, shared by every process on the same Redis.
//!
//! The decision is the in-process limiter's GCRA (see `rate/gcra.rs`): one theoretical
//! arrival time (TAT) per key, in microseconds of the server's clock; a key expires
//! once its TAT has passed, so Redis memory stays bounded by the keys in active use.
//! When Redis cannot decide, the [`FailurePolicy`] does, and a [`CircuitBreaker`]
//! keeps later calls from waiting on a dead server: after a failure, Redis is asked
//! again (by one call) once `probe_interval` has passed, so the limiter recovers by
//! itself. Waits sleep until the instant the server (or the fallback) named, then ask
//! again; a slot past the caller's bound fails at once. A waiter holds no claim while
//! it sleeps, so another caller may take the slot first.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::Script;

use super::conn::{BackendError, CallError, PoolSource, RedisPool, RoundTrips};
use crate::breaker::CircuitBreaker;
use crate::cancel::{CancelReason, CancelToken};
use crate::clock::{Clock, SystemClock};
use crate::config::ConfigError;
use crate::observe::event;
use crate::rate::{CheckError, KeyedRateLimiter};
use crate::resilience::{Limit, LimitHold, LimitRefused};
use crate::sync::time;
use crate::wait::{Interrupted, Until};

/// The decision, atomic inside Redis. ARGV: interval µs, burst, cells. Returns
/// `{1, 0}` when admitted, `{0, µs until it would be}`.
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + n * interval
local ready = new_tat - burst * interval
if ready > now then return {0, ready - now} end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.floor((new_tat - now) / 1000) + 1)
return {1, 0}
";

/// What a check does when Redis cannot decide (unreachable, too slow, refusing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Refuse: [`RedisRateError::Backend`]. The default: an outage of the limiter
    /// never lets more through than the limit.
    #[default]
    FailClosed,
    /// Admit: [`Admission::FailOpen`]. For limits that protect less than availability.
    FailOpen,
    /// Decide locally, per key, with this process's share of the limit: the rate and
    /// the burst divided by `processes` (the burst at least 1):
    /// [`Admission::Fallback`] or [`RedisRateError::FallbackNotUntil`].
    LocalShare {
        /// How many processes share the limit.
        processes: u32,
    },
}

/// Who admitted a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Admission {
    /// Redis, by the shared limit.
    Redis,
    /// Nobody: Redis could not decide and the policy is [`FailurePolicy::FailOpen`].
    FailOpen,
    /// This process's share, while Redis cannot decide ([`FailurePolicy::LocalShare`]).
    Fallback,
}

/// Why a [`RedisRateLimiter`] did not admit a request.
///
/// # Example
///
/// ```no_run
/// use corral::{fleet::RedisRateError, RedisRateLimiter};
///
/// let limiter = RedisRateLimiter::builder("redis://127.0.0.1:6379").per_second(100).build()?;
/// match limiter.check("user:42") {
///     Ok(_admission) => { /* serve */ }
///     Err(RedisRateError::NotUntil(wait)) => println!("retry in {wait:?}"),
///     Err(other) => println!("refused: {other}"),
/// }
/// # Ok::<(), corral::ConfigError>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum RedisRateError {
    /// Not now: the request would conform after this long (by the server's clock).
    NotUntil(Duration),
    /// More cells than the burst: the request can never pass.
    InsufficientCapacity {
        /// Cells asked for.
        requested: u32,
        /// The burst.
        burst: u32,
    },
    /// The caller's deadline comes before the request would conform.
    Timeout,
    /// The caller's token was cancelled.
    Cancelled(CancelReason),
    /// Redis could not decide and the policy is [`FailurePolicy::FailClosed`].
    Backend(BackendError),
    /// Redis could not decide, and this process's share
    /// ([`FailurePolicy::LocalShare`]) admits the request only after this long.
    FallbackNotUntil(Duration),
}

/// Describes this error only: the [`BackendError`] of [`RedisRateError::Backend`] is
/// its [`source`](std::error::Error::source).
impl fmt::Display for RedisRateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedisRateError::NotUntil(wait) => write!(f, "rate limited for {wait:?}"),
            RedisRateError::InsufficientCapacity { requested, burst } => {
                write!(f, "{requested} cells exceed the burst of {burst}")
            }
            RedisRateError::Timeout => {
                f.write_str("deadline passes before the request would conform")
            }
            RedisRateError::Cancelled(reason) => write!(f, "wait cancelled: {reason}"),
            RedisRateError::Backend(_) => f.write_str("redis unavailable (failing closed)"),
            RedisRateError::FallbackNotUntil(wait) => {
                write!(f, "redis unavailable; local share limited for {wait:?}")
            }
        }
    }
}

impl std::error::Error for RedisRateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RedisRateError::Backend(e) => Some(e),
            _ => None,
        }
    }
}

/// Counters of a [`RedisRateLimiter`] (relaxed snapshots).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisRateStats {
    /// Decisions that admitted (by Redis or by the policy).
    pub admitted: u64,
    /// Decisions that refused (by Redis or by the policy). Waits count each ask.
    pub refused: u64,
    /// Calls to Redis that failed (unreachable, timed out, refused, confused).
    pub backend_errors: u64,
    /// Decisions the [`FailurePolicy`] took because Redis could not.
    pub fallbacks: u64,
    /// Successful round trips to Redis.
    pub round_trips: u64,
    /// Fastest round trip.
    pub rtt_min: Option<Duration>,
    /// Mean round trip.
    pub rtt_mean: Option<Duration>,
    /// Slowest round trip.
    pub rtt_max: Option<Duration>,
}

#[derive(Default)]
struct Counters {
    admitted: AtomicU64,
    refused: AtomicU64,
    backend_errors: AtomicU64,
    fallbacks: AtomicU64,
    rtt: RoundTrips,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A rate limiter shared by every process that points at the same Redis: per key,
/// `burst` cells at once and one more every `interval`. The [module notes](crate::fleet)
/// describe the algorithm, the failure policy and the bounds on every network wait.
///
/// # Example
///
/// ```no_run
/// use corral::{fleet::FailurePolicy, RedisRateLimiter};
/// use std::time::Duration;
///
/// // Every instance of the service, on every machine, shares these limits.
/// let limiter = RedisRateLimiter::builder("redis://:secret@redis.internal:6379/0")
///     .per_second(50)
///     .burst(10)
///     .key_prefix("api:")
///     .on_failure(FailurePolicy::LocalShare { processes: 4 })
///     .build()?;
/// if limiter.wait_timeout("tenant:7", Duration::from_millis(200)).is_ok() {
///     // call the upstream
/// }
/// # Ok::<(), corral::ConfigError>(())
/// ```
pub struct RedisRateLimiter {
    pool: RedisPool,
    prefix: String,
    interval_us: u64,
    burst: u32,
    script: Script,
    policy: FailurePolicy,
    fallback: Option<KeyedRateLimiter<String>>,
    health: CircuitBreaker,
    counters: Counters,
    name: Option<Arc<str>>,
    backend_errors: event::Counter,
}

/// One decision, before it is counted and turned into the public result.
enum Decision {
    Admit(Admission),
    Later(Duration, bool), // (wait, by the fallback)
    Stop(RedisRateError),
}

impl RedisRateLimiter {
    /// The name given by [`RedisRateLimiterBuilder::name`], if any.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// A builder for a limiter with a pool of its own on `url` (see
    /// [`RedisPool::builder`]); the rate must be set with
    /// [`per_second`](RedisRateLimiterBuilder::per_second),
    /// [`per_minute`](RedisRateLimiterBuilder::per_minute) or
    /// [`interval`](RedisRateLimiterBuilder::interval).
    pub fn builder(url: impl Into<String>) -> RedisRateLimiterBuilder {
        RedisRateLimiterBuilder::new(PoolSource::Own(RedisPool::builder(url)))
    }

    /// A builder for a limiter on a shared `pool`.
    pub fn builder_on(pool: &RedisPool) -> RedisRateLimiterBuilder {
        RedisRateLimiterBuilder::new(PoolSource::Shared(pool.clone()))
    }

    /// Admits one cell for `key` now, or says how long until it would be admitted.
    ///
    /// # Errors
    ///
    /// [`RedisRateError::NotUntil`]; when Redis cannot decide (after at most
    /// `io_timeout`), what the [`FailurePolicy`] says.
    pub fn check(&self, key: &str) -> Result<Admission, RedisRateError> {
        self.check_n(key, 1)
    }

    /// Admits `cells` for `key` at once (all or none).
    ///
    /// # Errors
    ///
    /// As [`check`](RedisRateLimiter::check), plus
    /// [`RedisRateError::InsufficientCapacity`] when `cells` exceeds the burst.
    pub fn check_n(&self, key: &str, cells: u32) -> Result<Admission, RedisRateError> {
        match self.decide(key, cells, &Until::FOREVER) {
            Decision::Admit(admission) => Ok(admission),
            Decision::Later(wait, false) => Err(RedisRateError::NotUntil(wait)),
            Decision::Later(wait, true) => Err(RedisRateError::FallbackNotUntil(wait)),
            Decision::Stop(e) => Err(e),
        }
    }

    /// Waits until one cell for `key` is admitted (each network call still bounded by
    /// `io_timeout`).
    ///
    /// # Errors
    ///
    /// What the [`FailurePolicy`] says when Redis cannot decide.
    pub fn wait(&self, key: &str) -> Result<Admission, RedisRateError> {
        self.wait_until(key, &Until::FOREVER)
    }

    /// Waits at most `timeout` for one cell for `key` (the network calls included);
    /// fails at once when the cell would come later than that.
    ///
    /// # Errors
    ///
    /// [`RedisRateError::Timeout`], or the policy's refusal.
    pub fn wait_timeout(&self, key: &str, timeout: Duration) -> Result<Admission, RedisRateError> {
        self.wait_until(key, &Until::timeout(timeout))
    }

    /// Waits until `deadline` at most for one cell for `key`.
    ///
    /// # Errors
    ///
    /// [`RedisRateError::Timeout`], or the policy's refusal.
    pub fn wait_deadline(&self, key: &str, deadline: Instant) -> Result<Admission, RedisRateError> {
        self.wait_until(key, &Until::deadline(deadline))
    }

    /// Waits for one cell for `key` until `token` is cancelled (or its deadline).
    ///
    /// # Errors
    ///
    /// [`RedisRateError::Cancelled`], or the policy's refusal.
    pub fn wait_cancellable(
        &self,
        key: &str,
        token: &CancelToken,
    ) -> Result<Admission, RedisRateError> {
        self.wait_until(key, &Until::cancellable(token))
    }

    /// This limiter for one `key`, as a layer of a [`Resilience`](crate::Resilience)
    /// stack (one cell per attempt; see [`ResilienceBuilder::limit`](crate::resilience::ResilienceBuilder::limit)).
    pub fn limit_for(self: &Arc<Self>, key: impl Into<String>) -> RedisKeyLimit {
        RedisKeyLimit {
            limiter: Arc::clone(self),
            key: key.into(),
        }
    }

    /// The burst, in cells.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// The time one cell is worth.
    pub fn interval(&self) -> Duration {
        Duration::from_micros(self.interval_us)
    }

    /// The policy for when Redis cannot decide.
    pub fn failure_policy(&self) -> FailurePolicy {
        self.policy
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> RedisRateStats {
        let c = &self.counters;
        let (round_trips, times) = c.rtt.snapshot();
        RedisRateStats {
            admitted: c.admitted.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            backend_errors: c.backend_errors.load(Ordering::Relaxed),
            fallbacks: c.fallbacks.load(Ordering::Relaxed),
            round_trips,
            rtt_min: times.map(|t| t[0]),
            rtt_mean: times.map(|t| t[1]),
            rtt_max: times.map(|t| t[2]),
        }
    }

    fn wait_until(&self, key: &str, until: &Until<'_>) -> Result<Admission, RedisRateError> {
        loop {
            until.check().map_err(interrupted)?;
            let wait = match self.decide(key, 1, until) {
                Decision::Admit(admission) => return Ok(admission),
                Decision::Stop(e) => return Err(e),
                Decision::Later(wait, _) => wait,
            };
            let wake = time::deadline_after(time::now(), wait);
            if until.limit().is_some_and(|limit| wake > limit) {
                // Past the caller's bound: fail now, not later.
                return Err(interrupted(until.check().err().unwrap_or(
                    match until.token() {
                        Some(_) => Interrupted::Cancelled(CancelReason::DeadlineExceeded),
                        None => Interrupted::TimedOut,
                    },
                )));
            }
            if !SystemClock.sleep_until(wake, until.token()) {
                return Err(interrupted(
                    until
                        .check()
                        .err()
                        .unwrap_or(Interrupted::Cancelled(CancelReason::Cancelled)),
                ));
            }
        }
    }

    /// Asks Redis (or, when it cannot answer, the policy) and counts the outcome.
    fn decide(&self, key: &str, cells: u32, until: &Until<'_>) -> Decision {
        if cells == 0 {
            return Decision::Admit(Admission::Redis);
        }
        if cells > self.burst {
            return Decision::Stop(RedisRateError::InsufficientCapacity {
                requested: cells,
                burst: self.burst,
            });
        }
        let decision = match self.health.try_acquire() {
            Ok(guard) => match self.ask(key, cells, until) {
                Ok(decision) => {
                    guard.success();
                    decision
                }
                Err(CallError::Interrupted(why)) => {
                    guard.ignore();
                    return Decision::Stop(interrupted(why));
                }
                Err(CallError::Backend(e)) => {
                    guard.failure();
                    bump(&self.counters.backend_errors);
                    self.backend_errors.add(1);
                    event::emit!(
                        warn,
                        "RedisRateLimiter",
                        self.name.as_deref(),
                        "redis backend error",
                        error = e.to_string().as_str(),
                    );
                    self.fall_back(key, cells, e)
                }
            },
            Err(open) => self.fall_back(
                key,
                cells,
                BackendError::new(
                    format!(
                        "redis failed recently; asked again in {:?}",
                        open.retry_after().unwrap_or_default()
                    ),
                    false,
                ),
            ),
        };
        match &decision {
            Decision::Admit(_) => bump(&self.counters.admitted),
            _ => bump(&self.counters.refused),
        }
        decision
    }

    fn ask(&self, key: &str, cells: u32, until: &Until<'_>) -> Result<Decision, CallError> {
        let (code, value): (i64, i64) = self.pool.run(until, &self.counters.rtt, |conn| {
            self.script
                .key(format!("{}{key}", self.prefix))
                .arg(self.interval_us)
                .arg(self.burst)
                .arg(cells)
                .invoke(conn)
        })?;
        match code {
            1 => Ok(Decision::Admit(Admission::Redis)),
            0 => Ok(Decision::Later(
                Duration::from_micros(u64::try_from(value).unwrap_or(0)),
                false,
            )),
            other => Err(CallError::Backend(BackendError::new(
                format!("unexpected decision {other} from the rate script"),
                false,
            ))),
        }
    }

    fn fall_back(&self, key: &str, cells: u32, error: BackendError) -> Decision {
        bump(&self.counters.fallbacks);
        match (&self.policy, &self.fallback) {
            (FailurePolicy::FailOpen, _) => Decision::Admit(Admission::FailOpen),
            (FailurePolicy::LocalShare { .. }, Some(local)) => {
                match local.check_key_n(&key.to_owned(), cells) {
                    Ok(()) => Decision::Admit(Admission::Fallback),
                    Err(CheckError::NotUntil(at)) => Decision::Later(at.wait_time(), true),
                    Err(_) => Decision::Stop(RedisRateError::InsufficientCapacity {
                        requested: cells,
                        burst: local.burst(),
                    }),
                }
            }
            _ => Decision::Stop(RedisRateError::Backend(error)),
        }
    }
}

impl fmt::Debug for RedisRateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRateLimiter")
            .field("name", &self.name)
            .field("pool", &self.pool)
            .field("prefix", &self.prefix)
            .field("interval", &self.interval())
            .field("burst", &self.burst)
            .field("policy", &self.policy)
            .field("stats", &self.stats())
            .finish()
    }
}

fn interrupted(why: Interrupted) -> RedisRateError {
    match why {
        Interrupted::TimedOut => RedisRateError::Timeout,
        Interrupted::Cancelled(reason) => RedisRateError::Cancelled(reason),
    }
}

/// A [`RedisRateLimiter`] bound to one key: a layer of a
/// [`Resilience`](crate::Resilience) stack, one cell per attempt, waiting within the
/// call's deadline. Made by [`RedisRateLimiter::limit_for`].
#[derive(Debug, Clone)]
pub struct RedisKeyLimit {
    limiter: Arc<RedisRateLimiter>,
    key: String,
}

impl Limit for RedisKeyLimit {
    fn admit(&self, token: &CancelToken) -> Result<LimitHold<'_>, LimitRefused> {
        match self.limiter.wait_cancellable(&self.key, token) {
            Ok(_) => Ok(LimitHold::nothing()),
            // A deadline that ends a wait for a slot: no slot in time.
            Err(
                RedisRateError::Timeout | RedisRateError::Cancelled(CancelReason::DeadlineExceeded),
            ) => Err(LimitRefused::RateLimited { retry_after: None }),
            Err(RedisRateError::Cancelled(reason)) => Err(LimitRefused::Cancelled(reason)),
            Err(RedisRateError::NotUntil(d) | RedisRateError::FallbackNotUntil(d)) => {
                Err(LimitRefused::RateLimited {
                    retry_after: Some(d),
                })
            }
            Err(_) => Err(LimitRefused::Unavailable),
        }
    }
}

/// Configures a [`RedisRateLimiter`]. `Debug` never shows the password.
#[must_use = "a builder does nothing until `build` is called"]
pub struct RedisRateLimiterBuilder {
    pool: PoolSource,
    prefix: String,
    interval: Option<Duration>,
    burst: u32,
    policy: FailurePolicy,
    probe_interval: Duration,
    name: Option<Arc<str>>,
}

impl RedisRateLimiterBuilder {
    /// A name for the limiter, shown in its `Debug` and as the `name` of its events
    /// and metrics (features `tracing`, `metrics`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(Arc::from(name.into()));
        self
    }

    fn new(pool: PoolSource) -> Self {
        RedisRateLimiterBuilder {
            name: None,
            pool,
            prefix: "corral:rate:".to_owned(),
            interval: None,
            burst: 1,
            policy: FailurePolicy::FailClosed,
            probe_interval: Duration::from_secs(1),
        }
    }

    /// `cells` per second per key.
    pub fn per_second(self, cells: u32) -> Self {
        self.per(cells, Duration::from_secs(1))
    }

    /// `cells` per minute per key.
    pub fn per_minute(self, cells: u32) -> Self {
        self.per(cells, Duration::from_secs(60))
    }

    /// One cell every `interval` per key (at least 1 µs).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = Some(interval);
        self
    }

    fn per(mut self, cells: u32, period: Duration) -> Self {
        self.interval = Some(if cells == 0 {
            Duration::ZERO // rejected by build, naming the rate
        } else {
            period / cells
        });
        self
    }

    /// Cells admitted at once per key (default 1).
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = burst;
        self
    }

    /// Prefix of every Redis key this limiter writes (default `corral:rate:`).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// What a check does when Redis cannot decide (default
    /// [`FailurePolicy::FailClosed`]).
    pub fn on_failure(mut self, policy: FailurePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// After Redis failed, the policy decides alone for this long; then one call asks
    /// Redis again (default 1 s).
    pub fn probe_interval(mut self, interval: Duration) -> Self {
        self.probe_interval = interval;
        self
    }

    /// The connections' bound on each network operation (default 1 s); only for a
    /// limiter with a pool of its own.
    pub fn io_timeout(mut self, timeout: Duration) -> Self {
        self.pool = self.pool.io_timeout(timeout);
        self
    }

    /// The most connections open at once (default 16); only for a limiter with a
    /// pool of its own.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.pool = self.pool.max_connections(n);
        self
    }

    /// Checks the settings and builds the limiter; it connects on first use.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field: `rate` missing, below one microsecond per
    /// cell or above 100 years per cell; `burst` of 0 or spanning over 100 years;
    /// `policy` sharing among 0 processes; `probe_interval` of zero; or the pool's
    /// (`url`, `max_connections`, `io_timeout`).
    pub fn build(self) -> Result<RedisRateLimiter, ConfigError> {
        let interval = self.interval.ok_or_else(|| {
            ConfigError::new("rate", "unset", "set per_second, per_minute or interval")
        })?;
        let interval_us = u64::try_from(interval.as_micros()).unwrap_or(u64::MAX);
        if interval_us == 0 {
            return Err(ConfigError::new(
                "rate",
                interval,
                "must allow at most one cell per microsecond",
            ));
        }
        const CENTURY_US: u64 = 100 * 365 * 24 * 3600 * 1_000_000;
        if interval_us > CENTURY_US {
            return Err(ConfigError::new(
                "rate",
                interval,
                "one cell must not be worth more than 100 years",
            ));
        }
        if self.burst == 0 || interval_us.saturating_mul(u64::from(self.burst)) > CENTURY_US {
            return Err(ConfigError::new(
                "burst",
                self.burst,
                "must be at least 1, with burst × interval at most 100 years",
            ));
        }
        let fallback = match self.policy {
            FailurePolicy::LocalShare { processes: 0 } => {
                return Err(ConfigError::new(
                    "policy",
                    self.policy,
                    "a local share needs at least 1 process",
                ))
            }
            FailurePolicy::LocalShare { processes } => Some(
                KeyedRateLimiter::with_period(interval.saturating_mul(processes))
                    .burst((self.burst / processes).max(1))
                    .max_keys(10_000)
                    .build()
                    .map_err(|_| {
                        ConfigError::new(
                            "policy",
                            self.policy,
                            "the local share is not a valid rate",
                        )
                    })?,
            ),
            _ => None,
        };
        if self.probe_interval.is_zero() {
            return Err(ConfigError::new(
                "probe_interval",
                self.probe_interval,
                "must be above zero",
            ));
        }
        let health = CircuitBreaker::builder()
            .consecutive_failures(1)
            .open_for(self.probe_interval)
            .half_open_calls(1)
            .build()?;
        let pool = self.pool.build()?;
        Ok(RedisRateLimiter {
            pool,
            prefix: self.prefix,
            interval_us,
            burst: self.burst,
            script: Script::new(SCRIPT),
            policy: self.policy,
            fallback,
            health,
            counters: Counters::default(),
            backend_errors: event::Counter::new(
                "corral_redis_backend_errors_total",
                "RedisRateLimiter",
                self.name.as_deref(),
            ),
            name: self.name,
        })
    }
}

impl fmt::Debug for RedisRateLimiterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRateLimiterBuilder")
            .field("pool", &self.pool)
            .field("prefix", &self.prefix)
            .field("interval", &self.interval)
            .field("burst", &self.burst)
            .field("policy", &self.policy)
            .field("probe_interval", &self.probe_interval)
            .field("name", &self.name)
            .finish()
    }
}
