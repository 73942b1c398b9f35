//! Limits shared by every process that points at the same Redis (feature `redis`):
//! [`RedisRateLimiter`] (one GCRA per key) and [`RedisSemaphore`] (leases with fencing
//! tokens), over a bounded pool of connections, [`RedisPool`].
//!
//! # How it works
//!
//! The client is the `redis` crate's synchronous API. Every decision is one Lua script
//! (sent with `EVALSHA`, loaded again when the server lost it) that reads the
//! *server's* clock, so the machines of a fleet need not agree on the time and a
//! decision is atomic across every client. At most `max_connections` connections are
//! out at once, and the wait for one honours the caller's deadline and token like
//! every corral wait; every network operation is bounded by the smaller of
//! `io_timeout` and what is left of the caller's deadline. No thread is started.
//! Passwords are never shown: URLs appear redacted, and the text of every Redis error
//! is scrubbed of them before it becomes a [`BackendError`].
//!
//! The guarantees hold for a single Redis primary; the README's "One process or many"
//! section says what a failover can do, and what is out of scope.
//
// Layout: `conn.rs` lends connections (and is the only file that sees a password),
// `rate.rs` is the limiter, `semaphore.rs` the lease semaphore.

mod conn;
mod rate;
mod semaphore;

pub use conn::{BackendError, RedisPool, RedisPoolBuilder};
pub use rate::{
    Admission, FailurePolicy, RedisKeyLimit, RedisRateError, RedisRateLimiter,
    RedisRateLimiterBuilder, RedisRateStats,
};
pub use semaphore::{
    RedisAcquireError, RedisPermit, RedisSemaphore, RedisSemaphoreBuilder, RedisSemaphoreStats,
};
