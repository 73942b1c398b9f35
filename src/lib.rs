//! # corral: bounded concurrency on OS threads, with no leaks
//!
//! corral gives services and tools the concurrency primitives they reach for —
//! a worker pool, a semaphore, a rate limiter, a circuit breaker, a backpressure
//! pipeline — built so the classic leaks cannot happen: **every thread it starts is
//! joined before its owner is gone, every queue and every wait is bounded, and
//! nothing handed to it is lost without a record.** It runs on plain OS threads, with
//! no async runtime.
//!
//! What each promise means exactly, the documented maxima, and what every extreme
//! input does are in [`guarantees`].
//!
//! The pieces they stand on are public too: [`CancelToken`] trees with deadlines,
//! [`scope`](scope())s whose threads may borrow and whose panics become data, an injectable
//! [`Clock`](clock::Clock), and [`leak::LeakCheck`], a goleak-style guard that fails a test when
//! threads outlive it.
//!
//! ## Quick start
//!
//! ```
//! use corral::{leak::LeakCheck, CancelToken};
//! use std::time::Duration;
//!
//! let _check = LeakCheck::new(); // fails on drop if a thread started below survives
//! let deadline = CancelToken::with_timeout(Duration::from_secs(5));
//! let data = vec![1u64, 2, 3, 4];
//!
//! let sum: u64 = corral::scope(|s| {
//!     let halves: Vec<_> = data
//!         .chunks(2)
//!         .map(|chunk| {
//!             let deadline = deadline.clone();
//!             s.spawn(move || chunk.iter().take_while(|_| !deadline.is_cancelled()).sum::<u64>())
//!         })
//!         .collect();
//!     halves.into_iter().map(|h| h.join().unwrap()).sum()
//! });
//! assert_eq!(sum, 10);
//! ```
//!
//! ## The bounded-wait convention
//!
//! Every blocking operation `op` comes in five forms with the same names across the
//! crate (the names follow std and crossbeam-channel): `op()`, `try_op()`,
//! `op_timeout(Duration)`, `op_deadline(Instant)` and `op_cancellable(&CancelToken)`.
//! A refused item always travels back inside the error. (The rate limiters' `try_`
//! form is named `check`, as in governor.)
//!
//! ## Cancellation
//!
//! A [`CancelToken`] is a clone-able stop signal. Children are cancelled with their
//! parent, never the reverse; deadlines need no timer thread; waiting is a blocking
//! [`wait`](CancelToken::wait), a bounded `wait_timeout`, or a receiver for
//! [`channel::select!`] (crossbeam-channel, re-exported as [`channel`]).
//!
//! ```
//! use corral::CancelToken;
//! use std::time::Duration;
//!
//! let server = CancelToken::new();
//! let request = server.child_with_timeout(Duration::from_millis(50));
//! assert_eq!(request.wait_timeout(Duration::from_millis(1)), None);
//! server.cancel();
//! assert!(request.is_cancelled());
//! ```
//!
//! ## Scopes
//!
//! [`scope`](scope()) wraps [`std::thread::scope`]: threads borrow from the caller, are named
//! `corral-...`, share a token that a panic cancels, and an uncollected panic is
//! re-raised with its original payload once every thread has joined ([`try_scope`]
//! returns it instead).
//!
//! ```
//! let result = corral::try_scope(|s| {
//!     s.spawn(|| panic!("disk on fire"));
//!     let sibling = s.token().clone();
//!     s.spawn(move || sibling.wait()); // stops when the panic cancels the scope
//! });
//! assert_eq!(result.unwrap_err().message(), Some("disk on fire"));
//! ```
//!
//! ## Time
//!
//! Everything that decides by time takes a [`Clock`](clock::Clock): [`SystemClock`](clock::SystemClock) by default,
//! [`ManualClock`](clock::ManualClock) in tests, so time-based logic is tested without sleeping.
//!
//! ## Semaphore
//!
//! [`Semaphore`] bounds how many things happen at once: weighted
//! ([`acquire_many`](Semaphore::acquire_many)), FIFO-fair with a documented bound on
//! barging, resizable at run time ([`set_capacity`](Semaphore::set_capacity)),
//! closeable, with RAII permits and the five forms of every acquire. A request above
//! the capacity is an immediate error, never a hang.
//!
//! ```
//! use corral::{semaphore::AcquireError, Semaphore};
//! use std::time::Duration;
//!
//! let downloads = Semaphore::new(4);
//! let batch = downloads.acquire_many(3).unwrap();
//! let one = downloads.acquire_timeout(Duration::from_secs(1)).unwrap();
//! assert!(downloads.try_acquire().is_err()); // all 4 are out
//! assert_eq!(
//!     downloads.acquire_many(5).unwrap_err(),
//!     AcquireError::AboveCapacity { requested: 5, capacity: 4 }
//! );
//! drop((batch, one));
//! downloads.set_capacity(8).unwrap(); // grow at run time
//! assert_eq!(downloads.available(), 8);
//! ```
//!
//! ## Worker pool
//!
//! A [`WorkerPool`] is a fixed set of workers fed by a bounded queue: `submit` waits
//! while it is full (backpressure), `try_submit` and the bounded forms hand the closure
//! back in a [`SubmitError`](pool::SubmitError), and an [`Overflow`] policy can shed or run work instead,
//! handing every displaced task to an `on_drop` callback and counting it. A panicking
//! task costs only its own [`TaskHandle`](pool::TaskHandle) result. `shutdown` joins every worker and
//! reports what ran; `map` gives ordered results with bounded in-flight work.
//! [`PoolBuilder::build_scoped`](pool::PoolBuilder::build_scoped) puts the workers in a [`scope`](scope()), so tasks may borrow.
//!
//! ```
//! use corral::{pool::SubmitError, WorkerPool};
//!
//! let pool = WorkerPool::builder().workers(2).queue_capacity(64).build()?;
//! let answer = pool.submit(|| 6 * 7).unwrap();
//! assert_eq!(answer.join().unwrap(), 42);
//! let lengths: Vec<usize> = pool
//!     .map(["a", "bb", "ccc"], str::len)
//!     .collect::<Result<_, _>>()
//!     .unwrap();
//! assert_eq!(lengths, [1, 2, 3]);
//! pool.close();
//! assert!(matches!(pool.submit(|| 0), Err(SubmitError::Closed(_))));
//! let report = pool.shutdown();
//! assert_eq!((report.panicked, report.never_ran), (0, 0)); // everything queued ran
//! # Ok::<(), corral::StartError>(())
//! ```
//!
//! ## Task groups
//!
//! A [`TaskGroup`] is Go's errgroup on scoped threads: fallible tasks that receive the
//! group token, an optional concurrency [`limit`](TaskGroup::limit), the first error
//! cancelling the rest, and every outcome keyed by [`TaskId`](group::TaskId). Panics are kept and
//! re-raised (or returned) once every task has joined.
//!
//! ```
//! use corral::TaskGroup;
//!
//! let shards = [3u32, 1, 4, 1, 5];
//! let total = corral::scope(|s| {
//!     let group = TaskGroup::<u32, String>::new(s).limit(2).unwrap();
//!     for shard in &shards {
//!         group.spawn(move |_token| Ok(shard * 10));
//!     }
//!     group.wait().map(|values| values.iter().sum::<u32>())
//! });
//! assert_eq!(total, Ok(140));
//! ```
//!
//! ## Rate limiting
//!
//! [`RateLimiter`] is a lock-free GCRA limiter: [`check`](RateLimiter::check) decides
//! with one atomic compare-and-swap and says when a refused call would pass;
//! [`wait`](RateLimiter::wait) and its bounded forms sleep on the limiter's clock (a
//! slot past the deadline fails at once, a cancelled wait gives its slot back);
//! [`reserve_n`](RateLimiter::reserve_n) claims cells that can be given back, for
//! all-or-nothing admission across limiters. [`KeyedRateLimiter`] keeps one limit per
//! key within a bound on remembered keys.
//!
//! ```
//! use corral::{KeyedRateLimiter, clock::ManualClock, RateLimiter};
//! use std::time::Duration;
//!
//! let clock = ManualClock::new();
//! let upstream = RateLimiter::per_second(1).burst(5).clock(clock.clone()).build()?;
//! assert_eq!((0..15).filter(|_| upstream.check().is_ok()).count(), 5);
//! assert!(upstream.wait_timeout(Duration::from_millis(100)).is_err()); // at once
//! clock.advance(Duration::from_secs(1));
//! assert!(upstream.check().is_ok());
//!
//! let per_user = KeyedRateLimiter::per_minute(60).max_keys(10_000).build()?;
//! assert!(per_user.check_key(&"alice").is_ok());
//! # Ok::<(), corral::ConfigError>(())
//! ```
//!
//! For limits shared by every process of a fleet, the `redis` feature adds
//! `RedisRateLimiter` (the same GCRA as one Lua script inside Redis, on the server's
//! clock) and `RedisSemaphore` (leases with fencing tokens), over a bounded pool of
//! connections with every wait bounded by the caller's deadline or token.
//!
//! ## Circuit breaker
//!
//! A [`CircuitBreaker`] stops calling a dependency that keeps failing: it opens on
//! consecutive failures or on a failure (or slow-call) rate over a count or time
//! [`Window`](breaker::Window), refuses calls at once while open ([`BreakerError::Open`](breaker::BreakerError::Open) says for how
//! long), then lets at most `half_open_calls` trials through to decide whether to
//! close. A closed-state call costs one atomic load and a per-thread counter.
//!
//! ```
//! use corral::{breaker::{BreakerError, State}, CircuitBreaker};
//! use std::time::Duration;
//!
//! let breaker = CircuitBreaker::builder()
//!     .consecutive_failures(2)
//!     .open_for(Duration::from_secs(30))
//!     .build()?;
//! let lookup = |up: bool| breaker.call(|| if up { Ok(7) } else { Err("timeout") });
//! assert_eq!(lookup(true), Ok(7));
//! let _ = (lookup(false), lookup(false));
//! assert_eq!(breaker.state(), State::Open);
//! let cached = match lookup(true) {
//!     Ok(fresh) => fresh,
//!     Err(BreakerError::Open { .. }) => 6, // the fallback, at once
//!     Err(other) => panic!("{other:?}"),
//! };
//! assert_eq!(cached, 6);
//! # Ok::<(), corral::ConfigError>(())
//! ```
//!
//! ## Resilience stack
//!
//! A [`Resilience`] stack puts one call behind every defence at once: a bulkhead
//! ([`Semaphore`]), a [`RateLimiter`], a [`CircuitBreaker`] and a deadline, with
//! retries and exponential backoff, all bounded by one [`CancelToken`] that the call
//! receives. `call` runs the call on the caller's thread; `call_isolated` runs it on a
//! small pool the stack owns, so a caller can give up on a callee that hangs.
//!
//! ```
//! use corral::{CircuitBreaker, Resilience, resilience::ResilienceError, Semaphore};
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! let stack = Resilience::builder()
//!     .bulkhead(Arc::new(Semaphore::new(4)))
//!     .breaker(Arc::new(CircuitBreaker::builder().consecutive_failures(3).build()?))
//!     .timeout(Duration::from_millis(200))
//!     .retries(2)
//!     .build()?;
//! let price = match stack.call(|token| fetch_price(token)) {
//!     Ok(price) => price,
//!     Err(ResilienceError::Inner { error, attempts }) => panic!("{error} after {attempts}"),
//!     Err(refused) => panic!("not even tried: {refused}"),
//! };
//! assert_eq!(price, 42);
//!
//! fn fetch_price(token: &corral::CancelToken) -> Result<u32, String> {
//!     assert!(token.remaining().is_some()); // the deadline travels with the call
//!     Ok(42)
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Pipelines
//!
//! A [`Pipeline`] runs source → typed stages → sink, each stage with its own worker
//! threads and a bounded queue in front of it. A full queue blocks the sender
//! (backpressure) or drops by policy ([`Overflow`]), counting and handing back every
//! dropped item; the first `Err` or panic cancels the run; output can keep source
//! order within a bounded reorder window; the [`PipelineReport`](pipeline::PipelineReport) shows per-stage
//! counts and times and names the bottleneck. All threads are scoped, so stages may
//! borrow.
//!
//! ```
//! use corral::{Overflow, Pipeline};
//!
//! let dictionary = ["zero", "one", "two", "three"];
//! let (words, report) = Pipeline::from_iter(0..8usize)
//!     .stage("lookup", 2, |n| dictionary[n % 4]) // borrows `dictionary`
//!     .try_stage("check", 2, |w: &str| if w.is_empty() { Err("empty") } else { Ok(w.len()) })
//!     .capacity(4)
//!     .overflow(Overflow::Block)
//!     .ordered()
//!     .collect()?;
//! assert_eq!(words, [4, 3, 3, 5, 4, 3, 3, 5]);
//! assert!(report.stages.iter().all(|s| s.balanced()));
//! println!("{report}"); // a table, ending with the bottleneck stage
//! # Ok::<(), corral::pipeline::PipelineError>(())
//! ```
//!
//! ## Supervisor
//!
//! A [`Supervisor`] keeps long-lived children running: each is restarted on error or
//! panic according to its [`Restart`](supervisor::Restart) type and the [`Strategy`](supervisor::Strategy), within an intensity
//! limit, with backoff; [`Supervisor::stop`] cancels and joins every child.
//!
//! ```
//! use corral::{supervisor::Restart, Supervisor};
//!
//! let supervisor = Supervisor::builder()
//!     .child("listener", Restart::Permanent, |token| {
//!         token.wait(); // serve until told to stop
//!         Ok::<(), String>(())
//!     })
//!     .start()
//!     .unwrap();
//! assert!(supervisor.stop().reason.is_stopped());
//! ```
//!
//! ## Leak checks
//!
//! [`leak::live_threads`] lists the corral threads alive now. [`leak::LeakCheck`]
//! fails a test when threads started under it outlive it; its OS mode catches threads
//! leaked by any library.
//!
//! [`leak::dump`] is the goroutine dump of corral: every live corral thread with its
//! owner, role, what it is doing or blocked on and since when, and the line of your
//! code that started it; a [`Watchdog`](observe::Watchdog) reports tasks running
//! past a threshold. Features `tracing` and `metrics` add events and metrics
//! (`docs/metrics.md` lists them).
#![deny(unsafe_code)]
#![warn(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    rust_2018_idioms
)]
#![doc(test(attr(deny(warnings))))]

/// The README's examples, compiled and run as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub mod breaker;
pub mod cancel;
pub mod clock;
mod config;
#[cfg(feature = "redis")]
pub mod fleet;
pub mod group;
pub mod guarantees;
pub mod leak;
pub mod observe;
mod overflow;
mod panic;
pub mod pipeline;
pub mod pool;
mod queue;
pub mod rate;
pub mod resilience;
pub mod scope;
pub mod semaphore;
mod spawn;
mod striped;
pub mod supervisor;
mod sync;
/// Nanoseconds since a base on a [`Clock`](clock::Clock), with a TSC fast path for
/// [`SystemClock`](clock::SystemClock) (shared by the rate limiter and the circuit
/// breaker).
mod timeline;
mod wait;

/// crossbeam-channel, re-exported: the channels behind [`CancelToken::done`] and
/// [`CancelToken::expired`], and its `select!`, without a dependency of your own.
pub use crossbeam_channel as channel;

// The main type of each primitive, and the few types every module shares. Everything
// else lives in its primitive's module (`corral::pool::SubmitError`,
// `corral::breaker::State`, ...).
pub use breaker::CircuitBreaker;
pub use cancel::CancelToken;
pub use config::ConfigError;
#[cfg(feature = "redis")]
pub use fleet::{RedisRateLimiter, RedisSemaphore};
pub use group::TaskGroup;
pub use leak::LeakCheck;
pub use overflow::Overflow;
pub use panic::Panic;
#[cfg(loom)]
#[doc(hidden)]
pub use pipeline::LoomDoor as __LoomInputDoor;
#[cfg(loom)]
#[doc(hidden)]
pub use pipeline::LoomGate as __LoomReorderGate;
pub use pipeline::Pipeline;
pub use pool::{ScopedPool, WorkerPool};
pub use rate::{KeyedRateLimiter, RateLimiter};
/// The `redis` crate, re-exported (feature `redis`): its `ConnectionInfo` for
/// [`RedisPool::builder_from_info`](fleet::RedisPool::builder_from_info), without a
/// dependency of your own.
#[cfg(feature = "redis")]
pub use redis;
pub use resilience::Resilience;
pub use scope::{scope, try_scope, Scope};
pub use semaphore::Semaphore;
pub use spawn::{SpawnError, StartError};
pub use supervisor::Supervisor;
/// Loom models that use the public API make their deadlines pass with this.
#[cfg(loom)]
#[doc(hidden)]
pub use sync::time::pass_every_deadline as __loom_pass_every_deadline;
