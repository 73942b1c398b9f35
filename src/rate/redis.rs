//! A GCRA rate limiter whose state lives in Redis, so every process of a fleet shares
//! one limit per key.
//!
//! Implementation notes. The decision is the same generic cell rate algorithm as the
//! in-process [`RateLimiter`](super::RateLimiter) (see `gcra.rs`): one theoretical
//! arrival time (TAT) per key; a request for `n` cells at `now` moves it to
//! `max(TAT, now) + n·T` and conforms when that is at most `now + b·T`. It runs as one
//! Lua script inside Redis, so a decision is atomic across every client, and it reads
//! the *server's* clock (`TIME`), so the fleet's machines need not agree on the time.
//! Times are microseconds (a double holds them exactly for centuries); a key expires
//! once its TAT has passed, when it is indistinguishable from a fresh one, so Redis
//! memory stays bounded by the keys in active use.
//!
//! The client speaks the Redis protocol (RESP) over one connection per limiter
//! ([`Conn`]), with no dependency; no call waits on the network longer than
//! `io_timeout`.
//!
//! Waits sleep on [`SystemClock`] until the instant the server named (never spin),
//! then ask again; a slot that lies past the caller's deadline fails at once. Unlike
//! the in-process limiter, a wait does not hold a claim while it sleeps: another
//! caller may take the slot first, and the waiter then sleeps again.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::cancel::{CancelReason, CancelToken};
use crate::clock::{Clock, SystemClock};
use crate::config::ConfigError;
use crate::wait::{Interrupted, Until};

/// The decision, run atomically inside Redis. ARGV: interval µs, burst, cells.
/// Returns `{1, 0}` when admitted, `{0, µs until it would be}`, or `{-1, burst}` when
/// the request exceeds the burst.
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
if n > burst then return {-1, burst} end
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + n * interval
local ready = new_tat - burst * interval
if ready > now then return {0, ready - now} end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.floor((new_tat - now) / 1000) + 1)
return {1, 0}
";

/// The largest bulk string or array a reply may carry (the limiter's replies are
/// tiny; anything bigger is a protocol error, not a reason to allocate).
const MAX_REPLY: usize = 64 * 1024;

/// Why a [`RedisRateLimiter`] did not admit a request.
///
/// # Example
///
/// ```no_run
/// use corral::{rate::RedisRateError, RedisRateLimiter};
///
/// let limiter = RedisRateLimiter::builder("127.0.0.1:6379").per_second(100).build()?;
/// match limiter.check("user:42") {
///     Ok(()) => { /* serve */ }
///     Err(RedisRateError::NotUntil(wait)) => println!("retry in {wait:?}"),
///     Err(other) => println!("limiter unavailable: {other}"), // fail open or closed
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
    /// Redis could not be reached or answered unexpectedly; the limiter decided
    /// nothing. Whether to admit anyway is the caller's policy.
    Backend(io::Error),
}

/// Describes this error only: the `io::Error` of [`RedisRateError::Backend`] is its
/// [`source`](std::error::Error::source).
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
            RedisRateError::Backend(_) => f.write_str("redis unavailable"),
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

/// A rate limiter shared by every process that points at the same Redis: per key,
/// `burst` cells at once and one more every `interval`. See the module notes for the
/// algorithm and the bounds on every network wait.
///
/// # Example
///
/// ```no_run
/// use corral::RedisRateLimiter;
/// use std::time::Duration;
///
/// // Every instance of the service, on every machine, shares these limits.
/// let limiter = RedisRateLimiter::builder("redis.internal:6379")
///     .per_second(50)
///     .burst(10)
///     .key_prefix("api:")
///     .build()?;
/// if limiter.wait_timeout("tenant:7", Duration::from_millis(200)).is_ok() {
///     // call the upstream
/// }
/// # Ok::<(), corral::ConfigError>(())
/// ```
pub struct RedisRateLimiter {
    addrs: Vec<SocketAddr>,
    prefix: String,
    interval_us: u64,
    burst: u32,
    io_timeout: Duration,
    conn: Mutex<Option<Conn>>,
}

impl RedisRateLimiter {
    /// A builder for a limiter on the Redis at `addr` (`host:port`); the rate must be
    /// set with [`per_second`](RedisRateLimiterBuilder::per_second),
    /// [`per_minute`](RedisRateLimiterBuilder::per_minute) or
    /// [`interval`](RedisRateLimiterBuilder::interval).
    pub fn builder(addr: impl Into<String>) -> RedisRateLimiterBuilder {
        RedisRateLimiterBuilder {
            addr: addr.into(),
            prefix: "corral:rate:".to_owned(),
            interval: None,
            burst: 1,
            io_timeout: Duration::from_secs(1),
        }
    }

    /// Admits one cell for `key` now, or says how long until it would be admitted.
    ///
    /// # Errors
    ///
    /// [`RedisRateError::NotUntil`], or [`RedisRateError::Backend`] when Redis could
    /// not decide (after at most the builder's `io_timeout` per network operation).
    pub fn check(&self, key: &str) -> Result<(), RedisRateError> {
        self.check_n(key, 1)
    }

    /// Admits `cells` for `key` at once (all or none).
    ///
    /// # Errors
    ///
    /// As [`check`](RedisRateLimiter::check), plus
    /// [`RedisRateError::InsufficientCapacity`] when `cells` exceeds the burst.
    pub fn check_n(&self, key: &str, cells: u32) -> Result<(), RedisRateError> {
        if cells == 0 {
            return Ok(());
        }
        if cells > self.burst {
            return Err(RedisRateError::InsufficientCapacity {
                requested: cells,
                burst: self.burst,
            });
        }
        let reply = self.decide(key, cells).map_err(RedisRateError::Backend)?;
        match reply {
            (1, _) => Ok(()),
            (0, wait_us) => Err(RedisRateError::NotUntil(Duration::from_micros(
                u64::try_from(wait_us).unwrap_or(0),
            ))),
            (-1, burst) => Err(RedisRateError::InsufficientCapacity {
                requested: cells,
                burst: u32::try_from(burst).unwrap_or(u32::MAX),
            }),
            (code, _) => Err(RedisRateError::Backend(protocol(format!(
                "unexpected decision {code}"
            )))),
        }
    }

    /// Waits until one cell for `key` is admitted (each network call still bounded by
    /// `io_timeout`).
    ///
    /// # Errors
    ///
    /// [`RedisRateError::Backend`] when Redis cannot decide.
    pub fn wait(&self, key: &str) -> Result<(), RedisRateError> {
        self.wait_until(key, &Until::FOREVER)
    }

    /// Waits at most `timeout` for one cell for `key`; fails at once when the server
    /// says the cell would come later than that.
    ///
    /// # Errors
    ///
    /// [`RedisRateError::Timeout`], or [`RedisRateError::Backend`].
    pub fn wait_timeout(&self, key: &str, timeout: Duration) -> Result<(), RedisRateError> {
        self.wait_until(key, &Until::timeout(timeout))
    }

    /// Waits until `deadline` at most for one cell for `key`.
    ///
    /// # Errors
    ///
    /// [`RedisRateError::Timeout`], or [`RedisRateError::Backend`].
    pub fn wait_deadline(&self, key: &str, deadline: Instant) -> Result<(), RedisRateError> {
        self.wait_until(key, &Until::deadline(deadline))
    }

    /// Waits for one cell for `key` until `token` is cancelled (or its deadline).
    ///
    /// # Errors
    ///
    /// [`RedisRateError::Cancelled`], or [`RedisRateError::Backend`].
    pub fn wait_cancellable(&self, key: &str, token: &CancelToken) -> Result<(), RedisRateError> {
        self.wait_until(key, &Until::cancellable(token))
    }

    /// The burst, in cells.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// The time one cell is worth.
    pub fn interval(&self) -> Duration {
        Duration::from_micros(self.interval_us)
    }

    fn wait_until(&self, key: &str, until: &Until<'_>) -> Result<(), RedisRateError> {
        loop {
            until.check().map_err(interrupted)?;
            let wait = match self.check(key) {
                Err(RedisRateError::NotUntil(wait)) => wait,
                other => return other,
            };
            let wake = crate::sync::time::deadline_after(crate::sync::time::now(), wait);
            if until.limit().is_some_and(|limit| wake > limit) {
                // Past the caller's deadline (or the token's): fail now, not later.
                return Err(match until.token().and_then(CancelToken::reason) {
                    Some(reason) => RedisRateError::Cancelled(reason),
                    None if until.token().is_some() => {
                        RedisRateError::Cancelled(CancelReason::DeadlineExceeded)
                    }
                    None => RedisRateError::Timeout,
                });
            }
            if !SystemClock.sleep_until(wake, until.token()) {
                let reason = until
                    .token()
                    .and_then(CancelToken::reason)
                    .unwrap_or(CancelReason::Cancelled);
                return Err(RedisRateError::Cancelled(reason));
            }
        }
    }

    /// Runs the script for `key`, on a connection opened (again) if needed.
    fn decide(&self, key: &str, cells: u32) -> io::Result<(i64, i64)> {
        let mut slot = self.conn.lock();
        let result = (|| {
            if slot.is_none() {
                *slot = Some(Conn::open(&self.addrs, self.io_timeout)?);
            }
            let conn = slot.as_mut().expect("opened above");
            let key = format!("{}{key}", self.prefix);
            conn.run_script(
                &key,
                &[
                    self.interval_us.to_string(),
                    self.burst.to_string(),
                    cells.to_string(),
                ],
            )
        })();
        if result.is_err() {
            *slot = None; // a broken or confused connection is not reused
        }
        result
    }
}

impl fmt::Debug for RedisRateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRateLimiter")
            .field("addrs", &self.addrs)
            .field("prefix", &self.prefix)
            .field("interval", &self.interval())
            .field("burst", &self.burst)
            .field("io_timeout", &self.io_timeout)
            .finish()
    }
}

fn interrupted(why: Interrupted) -> RedisRateError {
    match why {
        Interrupted::TimedOut => RedisRateError::Timeout,
        Interrupted::Cancelled(reason) => RedisRateError::Cancelled(reason),
    }
}

fn protocol(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Configures a [`RedisRateLimiter`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct RedisRateLimiterBuilder {
    addr: String,
    prefix: String,
    interval: Option<Duration>,
    burst: u32,
    io_timeout: Duration,
}

impl RedisRateLimiterBuilder {
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

    /// The bound on each network operation: connect, send, receive (default 1 s).
    pub fn io_timeout(mut self, timeout: Duration) -> Self {
        self.io_timeout = timeout;
        self
    }

    /// Resolves the address and builds the limiter; it connects on first use.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field: `addr` that does not resolve, `rate`
    /// missing, below one microsecond per cell or above 100 years per cell, `burst` of
    /// 0 or a burst whose cells span over 100 years, `io_timeout` of zero.
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
        if self.io_timeout.is_zero() {
            return Err(ConfigError::new(
                "io_timeout",
                self.io_timeout,
                "must be above zero",
            ));
        }
        let addrs: Vec<SocketAddr> = self
            .addr
            .to_socket_addrs()
            .map(Iterator::collect)
            .unwrap_or_default();
        if addrs.is_empty() {
            return Err(ConfigError::new(
                "addr",
                self.addr,
                "does not resolve to an address",
            ));
        }
        Ok(RedisRateLimiter {
            addrs,
            prefix: self.prefix,
            interval_us,
            burst: self.burst,
            io_timeout: self.io_timeout,
            conn: Mutex::new(None),
        })
    }
}

/// One connection and the script's SHA on it.
///
/// One `TcpStream` per limiter, behind a mutex, with connect, read and write timeouts:
/// no call waits on the network longer than `io_timeout`, and a broken connection is
/// dropped and opened again by the next call. The script is loaded once per connection
/// (`SCRIPT LOAD`) and run with `EVALSHA`, loaded again if the server lost it. No
/// dependency: the few commands used need a small subset of RESP, and replies are
/// size-checked.
struct Conn {
    stream: BufReader<TcpStream>,
    sha: Option<String>,
}

/// A reply, as far as this client needs to understand one.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

impl Conn {
    fn open(addrs: &[SocketAddr], timeout: Duration) -> io::Result<Conn> {
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect_timeout(addr, timeout) {
                Ok(stream) => {
                    stream.set_read_timeout(Some(timeout))?;
                    stream.set_write_timeout(Some(timeout))?;
                    stream.set_nodelay(true)?;
                    return Ok(Conn {
                        stream: BufReader::new(stream),
                        sha: None,
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no address to connect to")))
    }

    fn run_script(&mut self, key: &str, args: &[String]) -> io::Result<(i64, i64)> {
        for _ in 0..2 {
            let sha = match &self.sha {
                Some(sha) => sha.clone(),
                None => {
                    let sha = match self.command(&["SCRIPT", "LOAD", SCRIPT])? {
                        Reply::Bulk(Some(sha)) => String::from_utf8(sha)
                            .map_err(|_| protocol("script sha is not text".into()))?,
                        other => return Err(protocol(format!("SCRIPT LOAD replied {other:?}"))),
                    };
                    self.sha = Some(sha.clone());
                    sha
                }
            };
            let mut command = vec!["EVALSHA", sha.as_str(), "1", key];
            command.extend(args.iter().map(String::as_str));
            match self.command(&command)? {
                Reply::Array(items) => match items.as_slice() {
                    [Reply::Int(code), Reply::Int(value)] => return Ok((*code, *value)),
                    _ => return Err(protocol(format!("script replied {items:?}"))),
                },
                Reply::Error(e) if e.starts_with("NOSCRIPT") => self.sha = None,
                other => return Err(protocol(format!("EVALSHA replied {other:?}"))),
            }
        }
        Err(protocol("the server keeps forgetting the script".into()))
    }

    fn command(&mut self, args: &[&str]) -> io::Result<Reply> {
        let mut out = Vec::with_capacity(64);
        write!(out, "*{}\r\n", args.len())?;
        for arg in args {
            write!(out, "${}\r\n", arg.len())?;
            out.extend_from_slice(arg.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        self.stream.get_mut().write_all(&out)?;
        read_reply(&mut self.stream, 0)
    }
}

/// Reads one RESP reply (nested at most one level: this client sends nothing whose
/// reply is deeper).
fn read_reply(input: &mut impl BufRead, depth: usize) -> io::Result<Reply> {
    let mut line = Vec::new();
    input
        .by_ref()
        .take(MAX_REPLY as u64)
        .read_until(b'\n', &mut line)?;
    if !line.ends_with(b"\r\n") {
        return Err(protocol("reply line is cut short or too long".into()));
    }
    line.truncate(line.len() - 2);
    let (kind, rest) = line
        .split_first()
        .ok_or_else(|| protocol("empty reply line".into()))?;
    let text = std::str::from_utf8(rest).map_err(|_| protocol("reply line is not text".into()))?;
    let number = || {
        text.parse::<i64>()
            .map_err(|_| protocol(format!("bad number {text:?}")))
    };
    match kind {
        b'+' => Ok(Reply::Status(text.to_owned())),
        b'-' => Ok(Reply::Error(text.to_owned())),
        b':' => Ok(Reply::Int(number()?)),
        b'$' => match number()? {
            -1 => Ok(Reply::Bulk(None)),
            len => match usize::try_from(len) {
                Ok(len) if len <= MAX_REPLY => {
                    let mut data = vec![0; len + 2];
                    input.read_exact(&mut data)?;
                    if !data.ends_with(b"\r\n") {
                        return Err(protocol("bulk string not terminated".into()));
                    }
                    data.truncate(len);
                    Ok(Reply::Bulk(Some(data)))
                }
                _ => Err(protocol(format!("bulk string of {len} bytes"))),
            },
        },
        b'*' if depth < 2 => match number()? {
            -1 => Ok(Reply::Array(Vec::new())),
            len if (0..=1024).contains(&len) => (0..len)
                .map(|_| read_reply(input, depth + 1))
                .collect::<io::Result<Vec<_>>>()
                .map(Reply::Array),
            len => Err(protocol(format!("array of {len} items"))),
        },
        other => Err(protocol(format!(
            "unexpected reply type {:?}",
            *other as char
        ))),
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> io::Result<Reply> {
        read_reply(&mut &bytes[..], 0)
    }

    #[test]
    fn replies_parse_and_malformed_ones_are_errors_not_panics() {
        assert_eq!(parse(b"+OK\r\n").unwrap(), Reply::Status("OK".into()));
        assert_eq!(parse(b":-12\r\n").unwrap(), Reply::Int(-12));
        assert_eq!(
            parse(b"$3\r\nabc\r\n").unwrap(),
            Reply::Bulk(Some(b"abc".to_vec()))
        );
        assert_eq!(parse(b"$-1\r\n").unwrap(), Reply::Bulk(None));
        assert_eq!(
            parse(b"*2\r\n:1\r\n:0\r\n").unwrap(),
            Reply::Array(vec![Reply::Int(1), Reply::Int(0)])
        );
        assert_eq!(
            parse(b"-NOSCRIPT No matching script\r\n").unwrap(),
            Reply::Error("NOSCRIPT No matching script".into())
        );
        for bad in [
            &b""[..],
            b"+OK",
            b":x\r\n",
            b"$5\r\nab\r\n",
            b"$99999999\r\n",
            b"*99999\r\n",
            b"*1\r\n*1\r\n*1\r\n:1\r\n",
            b"?\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
