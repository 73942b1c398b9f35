//! [`RedisSemaphore`]: a concurrency limit shared by every process on the same Redis,
//! made of leases.
//!
//! Each permit is a member of a sorted set scored by its expiry (µs of the server's
//! clock); acquire, renew and release are each one Lua script. Acquire first drops
//! expired members, so a crashed holder's permit comes back by itself once its TTL
//! has passed, then grants if fewer than `capacity` remain and increments the fencing
//! counter. Both keys share a hash tag (`{name}`). Waiting acquirers poll: they sleep
//! until the earliest lease would expire or `poll_interval`, whichever comes first,
//! and ask again (no fairness between processes). Renewal is on demand
//! ([`RedisPermit::renew`]), never by a background thread: a lease exists to be lost
//! by a holder that stopped making progress, which a thread renewing on its behalf
//! would hide.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ::redis::Script;

use super::conn::{BackendError, CallError, PoolSource, RedisPool, RoundTrips};
use crate::cancel::{CancelReason, CancelToken};
use crate::clock::{Clock, SystemClock};
use crate::config::ConfigError;
use crate::observe::event;
use crate::resilience::{Limit, LimitHold, LimitRefused};
use crate::sync::time;
use crate::wait::{Interrupted, Until};

/// KEYS: leases, fence. ARGV: capacity, ttl µs, lease id. Returns `{1, fence,
/// reclaimed}` when granted, `{0, µs until the earliest lease expires, reclaimed}`.
/// The leases key outlives its last lease by a minute, so an expired lease is
/// removed (and counted as reclaimed) by the next acquire rather than vanishing with
/// its key; an abandoned semaphore's key is still gone a minute after its last lease.
const ACQUIRE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local reclaimed = redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, tonumber(first[2]) - now, reclaimed}
end
redis.call('ZADD', KEYS[1], string.format('%d', now + tonumber(ARGV[2])), ARGV[3])
local fence = redis.call('INCR', KEYS[2])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[1], math.floor((tonumber(last[2]) - now) / 1000) + 60000)
return {1, fence, reclaimed}
";

/// KEYS: leases. ARGV: ttl µs, lease id. Returns 1 when renewed, 0 when the lease was
/// gone or had expired (it is then removed).
const RENEW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local score = redis.call('ZSCORE', KEYS[1], ARGV[2])
if (not score) or tonumber(score) <= now then
  redis.call('ZREM', KEYS[1], ARGV[2])
  return 0
end
redis.call('ZADD', KEYS[1], 'XX', string.format('%d', now + tonumber(ARGV[1])), ARGV[2])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[1], math.floor((tonumber(last[2]) - now) / 1000) + 60000)
return 1
";

/// KEYS: leases. ARGV: lease id. Returns 1 when the lease was still held.
const RELEASE: &str = "return redis.call('ZREM', KEYS[1], ARGV[1])";

/// Why a [`RedisSemaphore`] gave no permit (or a permit could not be renewed).
#[derive(Debug)]
#[non_exhaustive]
pub enum RedisAcquireError {
    /// Every permit is leased ([`try_acquire`](RedisSemaphore::try_acquire)); the
    /// earliest lease expires after this long unless renewed or released first.
    Full(Duration),
    /// The caller's deadline passed first.
    Timeout,
    /// The caller's token was cancelled.
    Cancelled(CancelReason),
    /// Redis could not decide.
    Backend(BackendError),
    /// The lease expired (or was reclaimed) before it was renewed: the permit is no
    /// longer held, and its fencing token may already be outdated.
    LeaseLost,
}

/// Describes this error only: the [`BackendError`] of
/// [`RedisAcquireError::Backend`] is its [`source`](std::error::Error::source).
impl fmt::Display for RedisAcquireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedisAcquireError::Full(wait) => {
                write!(f, "every permit is leased (earliest expiry in {wait:?})")
            }
            RedisAcquireError::Timeout => f.write_str("deadline passed before a permit was free"),
            RedisAcquireError::Cancelled(reason) => write!(f, "acquire cancelled: {reason}"),
            RedisAcquireError::Backend(_) => f.write_str("redis unavailable"),
            RedisAcquireError::LeaseLost => f.write_str("the lease expired before renewal"),
        }
    }
}

impl std::error::Error for RedisAcquireError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RedisAcquireError::Backend(e) => Some(e),
            _ => None,
        }
    }
}

/// Counters of a [`RedisSemaphore`] (relaxed snapshots, this process only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisSemaphoreStats {
    /// Permits granted.
    pub acquired: u64,
    /// Asks that found every permit leased.
    pub busy: u64,
    /// Expired leases (anyone's) this process's acquires removed.
    pub reclaimed: u64,
    /// Permits released while still held.
    pub released: u64,
    /// Renewals or releases that found the lease already gone.
    pub leases_lost: u64,
    /// Calls to Redis that failed.
    pub backend_errors: u64,
    /// Successful round trips to Redis.
    pub round_trips: u64,
    /// Mean round trip.
    pub rtt_mean: Option<Duration>,
    /// Slowest round trip.
    pub rtt_max: Option<Duration>,
}

#[derive(Default)]
struct Counters {
    acquired: AtomicU64,
    busy: AtomicU64,
    reclaimed: AtomicU64,
    released: AtomicU64,
    leases_lost: AtomicU64,
    backend_errors: AtomicU64,
    rtt: RoundTrips,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// A fleet-wide concurrency limit: at most `capacity` permits leased at once, across
/// every process using the same Redis and name.
///
/// A permit is a lease of `lease_ttl` (server clock), released when the
/// [`RedisPermit`] drops and renewed only when its holder calls
/// [`renew`](RedisPermit::renew). Every grant carries a **fencing token**, strictly
/// greater than every earlier grant's of this name: pass it to the resource you
/// protect and have it refuse tokens lower than the highest it has seen, so a holder
/// that paused past its lease (and whose permit went to someone else) is refused
/// there.
///
/// A waiting acquire polls: it sleeps until the earliest lease would expire or for
/// `poll_interval` (20 ms by default), whichever comes first, and asks again, within
/// its deadline or token. Waiters in different processes are not served in order.
/// Renewal is on demand, never by a background thread: a lease exists to be lost by a
/// holder that stopped making progress, which a thread renewing for it would hide.
///
/// Guarantees, honestly: they hold for a single Redis primary. Scripts run atomically
/// there, and leases and tokens are judged by its clock alone. With replication and
/// failover, a grant acknowledged by a primary that dies before replicating it can be
/// lost: the new primary may grant the same permit again (more than `capacity`
/// holders for up to one TTL) and may hand out a fencing token already used, unless
/// the fence key is replicated with `WAIT` or persisted. A holder whose process
/// pauses longer than the TTL holds a permit that is no longer counted; only the
/// fencing token (checked by the resource) stops it doing harm.
///
/// # Example
///
/// ```no_run
/// use corral::RedisSemaphore;
/// use std::time::Duration;
///
/// let exports = RedisSemaphore::builder("redis://127.0.0.1:6379", "exports")
///     .capacity(3)
///     .lease_ttl(Duration::from_secs(30))
///     .build()?;
/// if let Ok(permit) = exports.acquire_timeout(Duration::from_secs(5)) {
///     let token = permit.fencing_token(); // give it to the storage you write to
///     # let _ = token;
/// } // released here
/// # Ok::<(), corral::ConfigError>(())
/// ```
pub struct RedisSemaphore {
    pool: RedisPool,
    name: String,
    leases_key: String,
    fence_key: String,
    capacity: u32,
    ttl: Duration,
    poll_interval: Duration,
    acquire: Script,
    renew: Script,
    release: Script,
    counters: Counters,
    backend_errors: event::Counter,
}

/// One permit of a [`RedisSemaphore`]: released when dropped (within `io_timeout`;
/// if Redis cannot be reached then, the lease expires by itself after its TTL).
#[must_use = "a permit is released as soon as it is dropped"]
pub struct RedisPermit<'a> {
    sem: &'a RedisSemaphore,
    id: String,
    fence: u64,
    expires: Instant,
    released: bool,
}

impl RedisSemaphore {
    /// A builder for the semaphore `name` with a pool of its own on `url` (see
    /// [`RedisPool::builder`]).
    pub fn builder(url: impl Into<String>, name: impl Into<String>) -> RedisSemaphoreBuilder {
        RedisSemaphoreBuilder::new(PoolSource::Own(RedisPool::builder(url)), name.into())
    }

    /// A builder for the semaphore `name` on a shared `pool`.
    pub fn builder_on(pool: &RedisPool, name: impl Into<String>) -> RedisSemaphoreBuilder {
        RedisSemaphoreBuilder::new(PoolSource::Shared(pool.clone()), name.into())
    }

    /// Waits for a permit (each network call still bounded by `io_timeout`).
    ///
    /// # Errors
    ///
    /// [`RedisAcquireError::Backend`] when Redis cannot decide.
    pub fn acquire(&self) -> Result<RedisPermit<'_>, RedisAcquireError> {
        self.acquire_until(&Until::FOREVER)
    }

    /// A permit if one is free now.
    ///
    /// # Errors
    ///
    /// [`RedisAcquireError::Full`], or [`RedisAcquireError::Backend`].
    pub fn try_acquire(&self) -> Result<RedisPermit<'_>, RedisAcquireError> {
        self.ask(&Until::FOREVER)?.map_err(RedisAcquireError::Full)
    }

    /// Waits at most `timeout` for a permit (the network calls included).
    ///
    /// # Errors
    ///
    /// [`RedisAcquireError::Timeout`], or [`RedisAcquireError::Backend`].
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<RedisPermit<'_>, RedisAcquireError> {
        self.acquire_until(&Until::timeout(timeout))
    }

    /// Waits until `deadline` at most for a permit.
    ///
    /// # Errors
    ///
    /// [`RedisAcquireError::Timeout`], or [`RedisAcquireError::Backend`].
    pub fn acquire_deadline(
        &self,
        deadline: Instant,
    ) -> Result<RedisPermit<'_>, RedisAcquireError> {
        self.acquire_until(&Until::deadline(deadline))
    }

    /// Waits for a permit until `token` is cancelled (or its deadline).
    ///
    /// # Errors
    ///
    /// [`RedisAcquireError::Cancelled`], or [`RedisAcquireError::Backend`].
    pub fn acquire_cancellable(
        &self,
        token: &CancelToken,
    ) -> Result<RedisPermit<'_>, RedisAcquireError> {
        self.acquire_until(&Until::cancellable(token))
    }

    /// The most permits leased at once.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// How long a lease lasts unless renewed.
    pub fn lease_ttl(&self) -> Duration {
        self.ttl
    }

    /// The semaphore's name (its Redis keys are derived from it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A snapshot of this process's counters.
    pub fn stats(&self) -> RedisSemaphoreStats {
        let c = &self.counters;
        let (round_trips, times) = c.rtt.snapshot();
        RedisSemaphoreStats {
            acquired: c.acquired.load(Ordering::Relaxed),
            busy: c.busy.load(Ordering::Relaxed),
            reclaimed: c.reclaimed.load(Ordering::Relaxed),
            released: c.released.load(Ordering::Relaxed),
            leases_lost: c.leases_lost.load(Ordering::Relaxed),
            backend_errors: c.backend_errors.load(Ordering::Relaxed),
            round_trips,
            rtt_mean: times.map(|t| t[1]),
            rtt_max: times.map(|t| t[2]),
        }
    }

    fn acquire_until(&self, until: &Until<'_>) -> Result<RedisPermit<'_>, RedisAcquireError> {
        loop {
            until.check().map_err(interrupted)?;
            let wait = match self.ask(until)? {
                Ok(permit) => return Ok(permit),
                Err(wait) => wait.min(self.poll_interval),
            };
            let mut wake = time::deadline_after(time::now(), wait);
            if let Some(limit) = until.limit() {
                wake = wake.min(limit);
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

    /// One acquire script: a permit, or how long until the earliest lease expires.
    #[allow(clippy::type_complexity)]
    fn ask(
        &self,
        until: &Until<'_>,
    ) -> Result<Result<RedisPermit<'_>, Duration>, RedisAcquireError> {
        let id = lease_id();
        let sent = Instant::now();
        let (granted, value, reclaimed): (i64, i64, u64) = self.call(until, |conn| {
            self.acquire
                .key(&self.leases_key)
                .key(&self.fence_key)
                .arg(self.capacity)
                .arg(micros(self.ttl))
                .arg(&id)
                .invoke(conn)
        })?;
        add(&self.counters.reclaimed, reclaimed);
        if granted == 1 {
            add(&self.counters.acquired, 1);
            Ok(Ok(RedisPermit {
                sem: self,
                id,
                fence: u64::try_from(value).unwrap_or(0),
                // The server's clock read the request no earlier than it was sent.
                expires: time::deadline_after(sent, self.ttl),
                released: false,
            }))
        } else {
            add(&self.counters.busy, 1);
            Ok(Err(Duration::from_micros(
                u64::try_from(value).unwrap_or(0),
            )))
        }
    }

    fn call<T>(
        &self,
        until: &Until<'_>,
        f: impl FnOnce(&mut ::redis::Connection) -> ::redis::RedisResult<T>,
    ) -> Result<T, RedisAcquireError> {
        self.pool
            .run(until, &self.counters.rtt, f)
            .map_err(|e| match e {
                CallError::Interrupted(why) => interrupted(why),
                CallError::Backend(e) => {
                    add(&self.counters.backend_errors, 1);
                    self.backend_errors.add(1);
                    event::emit!(
                        warn,
                        "RedisSemaphore",
                        Some(self.name.as_str()),
                        "redis backend error",
                        error = e.to_string().as_str(),
                    );
                    RedisAcquireError::Backend(e)
                }
            })
    }
}

impl fmt::Debug for RedisSemaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSemaphore")
            .field("pool", &self.pool)
            .field("name", &self.name)
            .field("capacity", &self.capacity)
            .field("lease_ttl", &self.ttl)
            .field("stats", &self.stats())
            .finish()
    }
}

/// The semaphore as a bulkhead layer of a [`Resilience`](crate::Resilience) stack:
/// one permit per attempt, waited for within the call's deadline, released when the
/// attempt ends.
impl Limit for RedisSemaphore {
    fn admit(&self, token: &CancelToken) -> Result<LimitHold<'_>, LimitRefused> {
        match self.acquire_cancellable(token) {
            Ok(permit) => Ok(LimitHold::holding(permit)),
            Err(RedisAcquireError::Cancelled(reason)) => Err(LimitRefused::Cancelled(reason)),
            Err(RedisAcquireError::Timeout) => {
                Err(LimitRefused::Cancelled(CancelReason::DeadlineExceeded))
            }
            Err(_) => Err(LimitRefused::Unavailable),
        }
    }
}

impl RedisPermit<'_> {
    /// The fencing token of this grant: strictly greater than that of every earlier
    /// grant of the same semaphore name.
    pub fn fencing_token(&self) -> u64 {
        self.fence
    }

    /// A conservative local estimate of when the lease expires (the server's expiry
    /// is no earlier): renew before it.
    pub fn expires_at(&self) -> Instant {
        self.expires
    }

    /// Extends the lease to a full TTL from now (server clock).
    ///
    /// # Errors
    ///
    /// [`RedisAcquireError::LeaseLost`] when the lease had already expired: the
    /// permit is gone (and dropping it does nothing more);
    /// [`RedisAcquireError::Backend`] when Redis cannot be asked (the lease is
    /// unchanged and may still be renewed before it expires).
    pub fn renew(&mut self) -> Result<(), RedisAcquireError> {
        let sem = self.sem;
        let sent = Instant::now();
        let renewed: i64 = sem.call(&Until::FOREVER, |conn| {
            sem.renew
                .key(&sem.leases_key)
                .arg(micros(sem.ttl))
                .arg(&self.id)
                .invoke(conn)
        })?;
        if renewed == 1 {
            self.expires = time::deadline_after(sent, sem.ttl);
            Ok(())
        } else {
            self.released = true;
            add(&sem.counters.leases_lost, 1);
            Err(RedisAcquireError::LeaseLost)
        }
    }

    /// Releases the permit now, saying whether that worked (dropping it does the same
    /// silently).
    ///
    /// # Errors
    ///
    /// [`RedisAcquireError::LeaseLost`] when the lease had already expired;
    /// [`RedisAcquireError::Backend`] when Redis could not be reached (the lease then
    /// expires by itself after its TTL).
    pub fn release(mut self) -> Result<(), RedisAcquireError> {
        self.release_now()
    }

    fn release_now(&mut self) -> Result<(), RedisAcquireError> {
        if std::mem::replace(&mut self.released, true) {
            return Ok(());
        }
        let sem = self.sem;
        let held: i64 = sem.call(&Until::FOREVER, |conn| {
            sem.release.key(&sem.leases_key).arg(&self.id).invoke(conn)
        })?;
        if held == 1 {
            add(&sem.counters.released, 1);
            Ok(())
        } else {
            add(&sem.counters.leases_lost, 1);
            Err(RedisAcquireError::LeaseLost)
        }
    }
}

impl Drop for RedisPermit<'_> {
    fn drop(&mut self) {
        let _ = self.release_now();
    }
}

impl fmt::Debug for RedisPermit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPermit")
            .field("semaphore", &self.sem.name)
            .field("fencing_token", &self.fence)
            .field("expires_at", &self.expires)
            .finish()
    }
}

fn interrupted(why: Interrupted) -> RedisAcquireError {
    match why {
        Interrupted::TimedOut => RedisAcquireError::Timeout,
        Interrupted::Cancelled(reason) => RedisAcquireError::Cancelled(reason),
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A lease id unique across processes and machines: process id, a per-process
/// counter, and a randomly keyed hash.
fn lease_id() -> String {
    use std::hash::BuildHasher;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let salt = std::collections::hash_map::RandomState::new().hash_one(n);
    format!("{}:{n}:{salt:016x}", std::process::id())
}

/// Configures a [`RedisSemaphore`]. `Debug` never shows the password.
#[must_use = "a builder does nothing until `build` is called"]
pub struct RedisSemaphoreBuilder {
    pool: PoolSource,
    name: String,
    prefix: String,
    capacity: u32,
    ttl: Duration,
    poll_interval: Duration,
}

impl RedisSemaphoreBuilder {
    fn new(pool: PoolSource, name: String) -> Self {
        RedisSemaphoreBuilder {
            pool,
            name,
            prefix: "corral:sem:".to_owned(),
            capacity: 1,
            ttl: Duration::from_secs(30),
            poll_interval: Duration::from_millis(20),
        }
    }

    /// Permits leased at once, at most (default 1).
    pub fn capacity(mut self, capacity: u32) -> Self {
        self.capacity = capacity;
        self
    }

    /// How long a lease lasts unless renewed (default 30 s; at least 1 ms): how long
    /// a crashed holder's permit stays lost.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How often a waiting acquire asks again (default 20 ms).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Prefix of the Redis keys (default `corral:sem:`).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The connections' bound on each network operation (default 1 s); only for a
    /// semaphore with a pool of its own.
    pub fn io_timeout(mut self, timeout: Duration) -> Self {
        self.pool = self.pool.io_timeout(timeout);
        self
    }

    /// Checks the settings and builds the semaphore; it connects on first use.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field: `name` empty or with `{`/`}`, `capacity`
    /// of 0, `lease_ttl` below 1 ms or above 100 years, `poll_interval` of zero, or
    /// the pool's.
    pub fn build(self) -> Result<RedisSemaphore, ConfigError> {
        if self.name.is_empty() || self.name.contains(['{', '}']) {
            return Err(ConfigError::new(
                "name",
                self.name,
                "must be non-empty, without braces (it becomes a hash tag)",
            ));
        }
        if self.capacity == 0 {
            return Err(ConfigError::new("capacity", 0, "must be at least 1"));
        }
        if self.ttl < Duration::from_millis(1)
            || self.ttl > Duration::from_secs(100 * 365 * 24 * 3600)
        {
            return Err(ConfigError::new(
                "lease_ttl",
                self.ttl,
                "must be between 1 ms and 100 years",
            ));
        }
        if self.poll_interval.is_zero() {
            return Err(ConfigError::new(
                "poll_interval",
                self.poll_interval,
                "must be above zero",
            ));
        }
        let pool = self.pool.build()?;
        let tag = format!("{}{{{}}}", self.prefix, self.name);
        Ok(RedisSemaphore {
            pool,
            leases_key: format!("{tag}:leases"),
            fence_key: format!("{tag}:fence"),
            backend_errors: event::Counter::new(
                "corral_redis_backend_errors_total",
                "RedisSemaphore",
                Some(&self.name),
            ),
            name: self.name,
            capacity: self.capacity,
            ttl: self.ttl,
            poll_interval: self.poll_interval,
            acquire: Script::new(ACQUIRE),
            renew: Script::new(RENEW),
            release: Script::new(RELEASE),
            counters: Counters::default(),
        })
    }
}

impl fmt::Debug for RedisSemaphoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSemaphoreBuilder")
            .field("pool", &self.pool)
            .field("name", &self.name)
            .field("capacity", &self.capacity)
            .field("lease_ttl", &self.ttl)
            .field("poll_interval", &self.poll_interval)
            .finish()
    }
}
