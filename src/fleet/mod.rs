//! Limits shared by every process that points at the same Redis (feature `redis`):
//! [`RedisRateLimiter`] (one GCRA per key) and [`RedisSemaphore`] (leases with fencing
//! tokens), over a bounded pool of connections, [`RedisPool`].
//!
//! Implementation notes. The client is the `redis` crate's synchronous API. Every
//! decision is one Lua script run with `EVALSHA` (loaded again when the server lost
//! it) that reads the *server's* clock (`TIME`), so the machines of a fleet need not
//! agree on the time and a decision is atomic across every client. `conn.rs` lends
//! connections: at most `max_connections` are out at once (a corral
//! [`Semaphore`](crate::semaphore::Semaphore) bounds them, so the wait for one honours
//! the caller's deadline and token), and every network operation is bounded by the
//! smaller of `io_timeout` and what is left of the caller's deadline. No thread is
//! started. Passwords never leave `conn.rs`: URLs are shown redacted and the text of
//! every Redis error is scrubbed of them before it becomes a [`BackendError`].

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
