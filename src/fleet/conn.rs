//! [`RedisPool`]: a bounded set of Redis connections shared by a process's threads.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::{
    Client, Connection, ConnectionInfo, ConnectionLike, IntoConnectionInfo, RedisError, RedisResult,
};
use parking_lot::Mutex;

use crate::cancel::CancelReason;
use crate::config::ConfigError;
use crate::observe::event;
use crate::semaphore::{OwnedPermit, Semaphore};
use crate::sync::time;
use crate::wait::{Interrupted, Until};

/// Redis could not decide: unreachable, too slow, refused the credentials, or
/// answered unexpectedly. Its text never contains the password it was given.
#[derive(Clone, PartialEq, Eq)]
pub struct BackendError {
    message: String,
    timed_out: bool,
}

impl BackendError {
    pub(crate) fn new(message: impl Into<String>, timed_out: bool) -> Self {
        BackendError {
            message: message.into(),
            timed_out,
        }
    }

    /// Whether the operation ran out of time (`io_timeout`, or no connection free
    /// within it) rather than failing outright.
    pub fn is_timeout(&self) -> bool {
        self.timed_out
    }
}

impl fmt::Debug for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendError")
            .field("message", &self.message)
            .field("timed_out", &self.timed_out)
            .finish()
    }
}

/// The (already scrubbed) text of the Redis error; there is no `source`, since the
/// client's own error may carry what was scrubbed.
impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BackendError {}

/// What a call on the pool ends with when it does not return Redis's answer.
pub(crate) enum CallError {
    /// The caller's deadline or token stopped it.
    Interrupted(Interrupted),
    Backend(BackendError),
}

/// A bounded pool of connections to one Redis, shared (it is an `Arc` inside) by the
/// limiters and semaphores built on it and by every thread that uses them.
///
/// At most `max_connections` are open at once; a call waits for a free one within
/// its own deadline or token (and at most `io_timeout`). Connections open lazily,
/// are reused, and one that failed is closed (with every idle one: they likely lead
/// to the same dead server). Every network operation is bounded by `io_timeout` and
/// by what is left of the caller's deadline. `Debug` shows the target with its
/// password replaced by `***`.
///
/// # Example
///
/// ```no_run
/// use corral::{fleet::RedisPool, RedisRateLimiter, RedisSemaphore};
/// use std::time::Duration;
///
/// let pool = RedisPool::builder("rediss://app:secret@redis.internal:6380/2")
///     .max_connections(8)
///     .io_timeout(Duration::from_millis(250))
///     .build()?;
/// let _limiter = RedisRateLimiter::builder_on(&pool).per_second(100).build()?;
/// let _uploads = RedisSemaphore::builder_on(&pool, "uploads").capacity(4).build()?;
/// # Ok::<(), corral::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct RedisPool {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    slots: Arc<Semaphore>,
    idle: Mutex<Vec<Conn>>,
    io_timeout: Duration,
    /// Host, port, database and user: what `Debug` may show.
    target: String,
    /// Every form of the password the user gave, for scrubbing error texts.
    secrets: Vec<String>,
    /// A broken connection was dropped: the next one opened is a reconnect.
    broken: AtomicBool,
    reconnects: event::Counter,
}

struct Conn {
    conn: Connection,
    /// The read and write timeout now set on the socket.
    timeout: Option<Duration>,
}

impl RedisPool {
    /// A builder for a pool on `url`: `redis://[user][:password@]host[:port][/db]`,
    /// `rediss://...` (feature `redis-tls`), `redis+unix:///path`, or a bare
    /// `host:port`.
    pub fn builder(url: impl Into<String>) -> RedisPoolBuilder {
        RedisPoolBuilder::new(Target::Url(url.into()))
    }

    /// A builder for a pool on the `redis` crate's [`ConnectionInfo`].
    pub fn builder_from_info(info: ConnectionInfo) -> RedisPoolBuilder {
        RedisPoolBuilder::new(Target::Info(Box::new(info)))
    }

    /// The bound on each network operation.
    pub fn io_timeout(&self) -> Duration {
        self.inner.io_timeout
    }

    /// Runs `f` on a connection, within `until` and `io_timeout`; the round trip is
    /// recorded in `rtt` when it succeeds.
    pub(crate) fn run<T>(
        &self,
        until: &Until<'_>,
        rtt: &RoundTrips,
        f: impl FnOnce(&mut Connection) -> RedisResult<T>,
    ) -> Result<T, CallError> {
        let inner = &*self.inner;
        let _permit = self.lease(until)?;
        let idle = inner.idle.lock().pop();
        let mut conn = match idle {
            Some(conn) => conn,
            None => {
                let budget = self.budget(until)?;
                let conn = inner
                    .client
                    .get_connection_with_timeout(budget)
                    .map_err(|e| self.failed(&e, until))?;
                if inner.broken.swap(false, Ordering::Relaxed) {
                    inner.reconnects.add(1);
                    event::emit!(
                        info,
                        "RedisPool",
                        Some(inner.target.as_str()),
                        "reconnected to redis"
                    );
                }
                Conn {
                    conn,
                    timeout: None,
                }
            }
        };
        let budget = match self.budget(until) {
            Ok(budget) => budget,
            Err(e) => {
                inner.idle.lock().push(conn);
                return Err(e);
            }
        };
        if conn.timeout != Some(budget) {
            let set = conn
                .conn
                .set_read_timeout(Some(budget))
                .and_then(|()| conn.conn.set_write_timeout(Some(budget)));
            if let Err(e) = set {
                return Err(self.failed(&e, until));
            }
            conn.timeout = Some(budget);
        }
        let started = Instant::now();
        match f(&mut conn.conn) {
            Ok(value) => {
                rtt.record(started.elapsed());
                inner.idle.lock().push(conn);
                Ok(value)
            }
            Err(e) => {
                if conn.conn.is_open()
                    && !(e.is_io_error() || e.is_timeout() || e.is_unrecoverable_error())
                {
                    inner.idle.lock().push(conn); // the server answered: still in step
                }
                Err(self.failed(&e, until))
            }
        }
    }

    /// A slot for one connection, waiting at most for `until` and `io_timeout`.
    fn lease(&self, until: &Until<'_>) -> Result<OwnedPermit, CallError> {
        let slots = &self.inner.slots;
        if let Ok(permit) = slots.try_acquire_owned() {
            return Ok(permit);
        }
        let cap = time::deadline_after(time::now(), self.inner.io_timeout);
        let bound = until.caller_deadline().map_or(cap, |d| d.min(cap));
        let waited = match until.token() {
            Some(token) => {
                let child = token.child_with_timeout(bound.saturating_duration_since(time::now()));
                slots.acquire_owned_until(1, &Until::cancellable(&child))
            }
            None => slots.acquire_owned_until(1, &Until::deadline(bound)),
        };
        waited.map_err(|_| match until.check() {
            Err(why) => CallError::Interrupted(why),
            Ok(()) => CallError::Backend(BackendError::new(
                "no Redis connection free within io_timeout",
                true,
            )),
        })
    }

    /// The bound on the next network operation, or why there is no time left.
    fn budget(&self, until: &Until<'_>) -> Result<Duration, CallError> {
        until.check().map_err(CallError::Interrupted)?;
        let Some(limit) = until.limit() else {
            return Ok(self.inner.io_timeout);
        };
        let left = limit.saturating_duration_since(time::now());
        if left < Duration::from_micros(1) {
            let why = until.check().err().unwrap_or(if until.token().is_some() {
                Interrupted::Cancelled(CancelReason::DeadlineExceeded)
            } else {
                Interrupted::TimedOut
            });
            return Err(CallError::Interrupted(why));
        }
        Ok(left.min(self.inner.io_timeout))
    }

    /// The error a failed operation becomes: the caller's, when its deadline is what
    /// cut the operation short; else Redis's, scrubbed. A broken connection takes
    /// every idle one with it.
    fn failed(&self, e: &RedisError, until: &Until<'_>) -> CallError {
        if e.is_timeout() {
            if let Err(why) = until.check() {
                return CallError::Interrupted(why);
            }
        }
        if e.is_io_error() || e.is_unrecoverable_error() {
            self.inner.idle.lock().clear();
            self.inner.broken.store(true, Ordering::Relaxed);
        }
        CallError::Backend(BackendError::new(
            format!(
                "redis call failed: {}",
                scrub(&e.to_string(), &self.inner.secrets)
            ),
            e.is_timeout(),
        ))
    }
}

impl fmt::Debug for RedisPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPool")
            .field("target", &self.inner.target)
            .field("max_connections", &self.inner.slots.capacity())
            .field("idle", &self.inner.idle.lock().len())
            .field("io_timeout", &self.inner.io_timeout)
            .finish()
    }
}

enum Target {
    Url(String),
    Info(Box<ConnectionInfo>),
}

/// Configures a [`RedisPool`]. `Debug` never shows the password.
#[must_use = "a builder does nothing until `build` is called"]
pub struct RedisPoolBuilder {
    target: Target,
    max_connections: usize,
    io_timeout: Duration,
}

impl RedisPoolBuilder {
    fn new(target: Target) -> Self {
        RedisPoolBuilder {
            target,
            max_connections: 16,
            io_timeout: Duration::from_secs(1),
        }
    }

    /// Connections open at once, at most (default 16). Callers beyond it wait for
    /// one within their own bound.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// The bound on each network operation: connect and handshake, send, receive,
    /// and the wait for a free connection (default 1 s).
    pub fn io_timeout(mut self, timeout: Duration) -> Self {
        self.io_timeout = timeout;
        self
    }

    /// Checks the settings; the pool connects on first use.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field: `url` that does not parse (shown with its
    /// password replaced by `***`) or that asks for TLS without the `redis-tls`
    /// feature, `max_connections` of 0 or above [`Semaphore::MAX_PERMITS`],
    /// `io_timeout` of zero.
    pub fn build(self) -> Result<RedisPool, ConfigError> {
        if self.max_connections == 0 || self.max_connections > Semaphore::MAX_PERMITS {
            return Err(ConfigError::new(
                "max_connections",
                self.max_connections,
                "must be at least 1 and at most Semaphore::MAX_PERMITS",
            ));
        }
        if self.io_timeout.is_zero() {
            return Err(ConfigError::new(
                "io_timeout",
                self.io_timeout,
                "must be above zero",
            ));
        }
        let mut secrets = Vec::new();
        let info = match self.target {
            Target::Info(info) => *info,
            Target::Url(url) => {
                let url = if url.contains("://") || url.starts_with("unix:") {
                    url
                } else {
                    format!("redis://{url}")
                };
                if let Some(raw) = url_password(&url) {
                    secrets.push(raw.to_owned());
                }
                let shown = redact_url(&url);
                if url.starts_with("rediss://") && !cfg!(feature = "redis-tls") {
                    return Err(ConfigError::new(
                        "url",
                        shown,
                        "rediss:// needs corral's `redis-tls` feature",
                    ));
                }
                url.as_str().into_connection_info().map_err(|_| {
                    ConfigError::new(
                        "url",
                        shown,
                        "is not a Redis URL (redis://[user][:password@]host[:port][/db])",
                    )
                })?
            }
        };
        if let Some(password) = &info.redis.password {
            secrets.push(password.clone());
        }
        secrets.retain(|s| !s.is_empty());
        let target = match &info.redis.username {
            Some(user) => format!("{user}@{}/{}", info.addr, info.redis.db),
            None => format!("{}/{}", info.addr, info.redis.db),
        };
        let client = Client::open(info)
            .map_err(|_| ConfigError::new("url", target.clone(), "is not a usable Redis target"))?;
        Ok(RedisPool {
            inner: Arc::new(Inner {
                client,
                slots: Arc::new(
                    Semaphore::builder(self.max_connections)
                        .name(format!("redis connections to {target}"))
                        .build()?,
                ),
                idle: Mutex::new(Vec::new()),
                io_timeout: self.io_timeout,
                reconnects: event::Counter::new(
                    "corral_redis_reconnects_total",
                    "RedisPool",
                    Some(&target),
                ),
                broken: AtomicBool::new(false),
                target,
                secrets,
            }),
        })
    }
}

impl fmt::Debug for RedisPoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = match &self.target {
            Target::Url(url) => redact_url(url),
            Target::Info(info) => format!("{}/{}", info.addr, info.redis.db),
        };
        f.debug_struct("RedisPoolBuilder")
            .field("target", &target)
            .field("max_connections", &self.max_connections)
            .field("io_timeout", &self.io_timeout)
            .finish()
    }
}

/// Where a limiter's or semaphore's connections come from: a pool of its own, still
/// to be built, or a shared one.
pub(crate) enum PoolSource {
    Own(RedisPoolBuilder),
    Shared(RedisPool),
}

impl PoolSource {
    pub(crate) fn io_timeout(self, timeout: Duration) -> Self {
        match self {
            PoolSource::Own(pool) => PoolSource::Own(pool.io_timeout(timeout)),
            shared => shared,
        }
    }

    pub(crate) fn max_connections(self, n: usize) -> Self {
        match self {
            PoolSource::Own(pool) => PoolSource::Own(pool.max_connections(n)),
            shared => shared,
        }
    }

    pub(crate) fn build(self) -> Result<RedisPool, ConfigError> {
        match self {
            PoolSource::Own(builder) => builder.build(),
            PoolSource::Shared(pool) => Ok(pool),
        }
    }
}

impl fmt::Debug for PoolSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolSource::Own(pool) => pool.fmt(f),
            PoolSource::Shared(pool) => pool.fmt(f),
        }
    }
}

/// The password part of a URL's user info, as written (percent-encoded or not).
fn url_password(url: &str) -> Option<&str> {
    let rest = &url[url.find("://")? + 3..];
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    Some(&userinfo[userinfo.find(':')? + 1..])
}

/// `url` with its password replaced by `***`.
pub(crate) fn redact_url(url: &str) -> String {
    match url_password(url) {
        Some(password) if !password.is_empty() => {
            let start = password.as_ptr() as usize - url.as_ptr() as usize;
            format!("{}***{}", &url[..start], &url[start + password.len()..])
        }
        _ => url.to_owned(),
    }
}

/// `text` with every secret replaced by `***`.
fn scrub(text: &str, secrets: &[String]) -> String {
    secrets.iter().fold(text.to_owned(), |text, secret| {
        text.replace(secret.as_str(), "***")
    })
}

/// Round-trip times: count, sum, min and max, lock-free.
#[derive(Default)]
pub(crate) struct RoundTrips {
    count: AtomicU64,
    sum_ns: AtomicU64,
    min_ns: AtomicU64,
    max_ns: AtomicU64,
}

impl RoundTrips {
    fn record(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.max_ns.fetch_max(ns, Ordering::Relaxed);
        // 0 means "none yet".
        let _ = self
            .min_ns
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |min| {
                (min == 0 || ns < min).then_some(ns)
            });
    }

    /// Count, min, mean and max (the times are `None` before the first round trip).
    pub(crate) fn snapshot(&self) -> (u64, Option<[Duration; 3]>) {
        let count = self.count.load(Ordering::Relaxed);
        if count == 0 {
            return (0, None);
        }
        let sum = self.sum_ns.load(Ordering::Relaxed);
        (
            count,
            Some([
                Duration::from_nanos(self.min_ns.load(Ordering::Relaxed)),
                Duration::from_nanos(sum / count),
                Duration::from_nanos(self.max_ns.load(Ordering::Relaxed)),
            ]),
        )
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_and_scrubbed() {
        assert_eq!(
            redact_url("redis://:s3cret@host:6379/0"),
            "redis://:***@host:6379/0"
        );
        assert_eq!(
            redact_url("rediss://app:p%40ss@host/2"),
            "rediss://app:***@host/2"
        );
        assert_eq!(redact_url("redis://app@host/2"), "redis://app@host/2");
        assert_eq!(redact_url("redis://host:1/x@y"), "redis://host:1/x@y");
        assert_eq!(scrub("bad s3cret here", &["s3cret".into()]), "bad *** here");
    }

    #[test]
    fn round_trips_keep_min_mean_max() {
        let rt = RoundTrips::default();
        assert_eq!(rt.snapshot(), (0, None));
        for ms in [3, 1, 2] {
            rt.record(Duration::from_millis(ms));
        }
        let (count, times) = rt.snapshot();
        assert_eq!(count, 3);
        let [min, mean, max] = times.unwrap();
        assert_eq!(
            (min, mean, max),
            (
                Duration::from_millis(1),
                Duration::from_millis(2),
                Duration::from_millis(3)
            )
        );
    }
}
