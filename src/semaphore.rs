//! A counting, weighted, FIFO-fair, resizable, closeable semaphore for OS threads.
//!
//! [`Semaphore`] bounds how many things happen at once. Every acquire comes in the
//! crate's five forms (plain, `try_`, `_timeout`, `_deadline`, `_cancellable`), for one
//! permit, for `n` at once ([`acquire_many`](Semaphore::acquire_many)) and as an
//! [`OwnedPermit`] that can move to another thread. Permits are RAII guards: dropping
//! one gives its permits back.
//!
//! # How it works
//!
//! Waiters queue in FIFO order; a release hands permits to the head of the queue, and
//! a thread arriving while others wait may barge ahead only within a bound (see
//! [`Semaphore`]). A request above the capacity fails at once with
//! [`AcquireError::AboveCapacity`] instead of waiting for ever. [`close`](Semaphore::close)
//! wakes every waiter with an error.
//
// Layout: this file is the public surface; the engine (one atomic permit word, the
// FIFO queue under a lock, the hand-off mode) is in `semaphore/engine.rs`, whose header
// describes the state machine. Every blocking form funnels into `acquire_until`.

mod engine;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cancel::{CancelReason, CancelToken};
use crate::config::ConfigError;
use crate::wait::Until;

use engine::{Engine, Refusal};

/// A counting semaphore: at most `capacity` permits are out at any time.
///
/// * **Weighted.** [`acquire_many(n)`](Semaphore::acquire_many) takes `n` permits at
///   once; the [`Permit`] gives all of them back when dropped (also while unwinding).
/// * **Bounded waits.** Every acquire has five forms: `acquire`, `try_acquire`,
///   `acquire_timeout`, `acquire_deadline`, `acquire_cancellable`, likewise for
///   `acquire_many` and for the owned forms (`acquire_owned`, ...) on an
///   `Arc<Semaphore>`, whose [`OwnedPermit`] is `'static`.
/// * **Capacity.** The total number of permits the semaphore manages: the initial
///   count, changed by [`add_permits`](Semaphore::add_permits),
///   [`set_capacity`](Semaphore::set_capacity) and [`Permit::forget`]. A request for
///   more than the capacity fails at once with
///   [`AcquireError::AboveCapacity`], never a hang; a queued request that no longer
///   fits after a shrink is woken with that error. `Semaphore::new(0)` is valid.
/// * **Resizable.** `set_capacity` grows (waking the waiters it can serve) or shrinks.
///   A shrink below the permits in use never revokes a held permit: it takes effect
///   as permits come back.
/// * **Closeable.** [`close`](Semaphore::close) fails every queued and every later
///   acquire with `Closed`; held permits are returned normally.
/// * **Zero, huge and past values.** `acquire_many(0)` (and every form with `n ==
///   0`) returns an empty permit at once unless the semaphore is closed; `n` above the
///   capacity is `AboveCapacity` at once, whatever its size. A zero timeout or a
///   deadline already past never queues: it takes the permits if they are free now
///   (as `try_acquire` would) and otherwise fails with `Timeout`; `Duration::MAX`
///   waits without limit (the deadline saturates, it never panics). A cancellable
///   form consults its token only when it would wait, so an already-cancelled token
///   still takes free permits. Capacities above [`Semaphore::MAX_PERMITS`] are a
///   [`ConfigError`] from [`try_new`](Semaphore::try_new),
///   [`add_permits`](Semaphore::add_permits) and
///   [`set_capacity`](Semaphore::set_capacity), never a wrap.
/// * **Accounting.** At every moment `in_use + available == capacity + debt`, where
///   `debt` is the part of a shrink not yet paid by releases (`available` is 0 while
///   there is debt); [`stats`](Semaphore::stats) reports `in_use`.
///
/// # Fairness
///
/// The guarantee, precisely:
///
/// 1. **Queued waiters are served in arrival order.** Only the waiter at the head of
///    the queue may take permits; a large request at the head holds back the smaller
///    ones behind it, so it is never starved by them.
/// 2. **Newcomers may barge for a bounded time.** An acquire that arrives while
///    enough permits are free takes them at once, even if someone is queued, as long
///    as the head of the queue has been the head for less than about 1 ms. This
///    avoids a sleep and a wake-up per release under contention (the reason a
///    strictly fair semaphore is slow), in the manner of parking_lot's eventual
///    fairness.
/// 3. **Then hand-off.** Once the head has waited 1 ms as the head without being
///    served, newcomers queue behind it (and `try_acquire` refuses) and released
///    permits are handed to the head directly, until it is served. The next head
///    starts its own 1 ms. So each queued waiter is overtaken by newcomers for at most
///    about 1 ms, plus the time for holders to release what it needs.
/// 4. **A head that gives up** (timeout, cancel) re-runs the serving step, so the
///    waiters behind it that now fit are woken at once.
///
/// # Performance
///
/// An uncontended `try_acquire` + drop is one load and one compare-and-swap each way,
/// on one atomic word. A blocked acquirer first spins briefly, then parks; a release
/// that finds waiters takes a lock and wakes the head only if its request fits.
///
/// # Example
///
/// ```
/// use corral::Semaphore;
/// use std::time::Duration;
///
/// let sem = Semaphore::new(3);
/// let a = sem.acquire().unwrap();
/// let b = sem.acquire_many(2).unwrap();
/// assert_eq!(sem.available(), 0);
/// assert!(sem.acquire_timeout(Duration::from_millis(1)).is_err());
/// drop(b);
/// assert_eq!(sem.available(), 2);
/// # drop(a);
/// ```
pub struct Semaphore {
    engine: Engine,
}

/// Permits held from a borrowed [`Semaphore`]; returned when dropped.
///
/// # Example
///
/// ```
/// let sem = corral::Semaphore::new(4);
/// {
///     let permit = sem.acquire_many(3).unwrap();
///     assert_eq!(permit.num_permits(), 3);
///     assert_eq!(sem.available(), 1);
/// } // dropped: the permits come back
/// assert_eq!(sem.available(), 4);
/// ```
#[must_use = "the permits are released as soon as the guard is dropped"]
pub struct Permit<'a> {
    sem: &'a Semaphore,
    permits: usize,
}

/// Permits held from an `Arc<Semaphore>`; `'static`, so it can move into another
/// thread. Returned when dropped.
///
/// # Example
///
/// ```
/// use corral::Semaphore;
/// use std::sync::Arc;
///
/// let sem = Arc::new(Semaphore::new(1));
/// let permit = sem.acquire_owned().unwrap();
/// std::thread::spawn(move || {
///     assert_eq!(permit.num_permits(), 1);
///     // dropped here, on another thread
/// })
/// .join()
/// .unwrap();
/// assert_eq!(sem.available(), 1);
/// ```
#[must_use = "the permits are released as soon as the guard is dropped"]
pub struct OwnedPermit {
    sem: Arc<Semaphore>,
    permits: usize,
}

/// Why a blocking acquire failed.
///
/// # Example
///
/// ```
/// use corral::{semaphore::AcquireError, Semaphore};
///
/// let sem = Semaphore::new(2);
/// let err = sem.acquire_many(5).unwrap_err();
/// assert_eq!(err, AcquireError::AboveCapacity { requested: 5, capacity: 2 });
/// assert_eq!(err.to_string(), "requested 5 permits but the semaphore's capacity is 2");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AcquireError {
    /// The semaphore is closed (before or while waiting).
    Closed,
    /// The request is larger than the semaphore's capacity, now or after a shrink
    /// that happened while it waited.
    AboveCapacity {
        /// Permits asked for.
        requested: usize,
        /// The capacity that refused them.
        capacity: usize,
    },
    /// The timeout or deadline passed first.
    Timeout,
    /// The token was cancelled first (or its own deadline passed).
    Cancelled(CancelReason),
}

/// Why a `try_acquire` failed.
///
/// # Example
///
/// ```
/// use corral::{Semaphore, semaphore::TryAcquireError};
///
/// let sem = Semaphore::new(1);
/// let _held = sem.acquire().unwrap();
/// assert_eq!(sem.try_acquire().unwrap_err(), TryAcquireError::NoPermits);
/// sem.close();
/// assert_eq!(sem.try_acquire().unwrap_err(), TryAcquireError::Closed);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TryAcquireError {
    /// Not enough permits are free now, or queued waiters have priority.
    NoPermits,
    /// The semaphore is closed.
    Closed,
    /// The request is larger than the semaphore's capacity.
    AboveCapacity {
        /// Permits asked for.
        requested: usize,
        /// The capacity that refused them.
        capacity: usize,
    },
}

/// A snapshot of a [`Semaphore`]'s gauges and counters (relaxed reads; cheap to poll).
///
/// Fast-path acquires and releases are not counted, so that counting costs nothing
/// there; the counters cover the waits and refusals.
///
/// # Example
///
/// ```
/// let sem = corral::Semaphore::new(5);
/// let _p = sem.acquire_many(2).unwrap();
/// let stats = sem.stats();
/// assert_eq!((stats.capacity, stats.available, stats.in_use), (5, 3, 2));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SemaphoreStats {
    /// Total permits managed now.
    pub capacity: usize,
    /// Permits free now.
    pub available: usize,
    /// Permits held now (can exceed `capacity` right after a shrink).
    pub in_use: usize,
    /// Threads queued now.
    pub waiting: usize,
    /// Whether [`Semaphore::close`] was called.
    pub closed: bool,
    /// Acquires so far that had to queue.
    pub waited: usize,
    /// Queued acquires that ran out of time.
    pub timed_out: usize,
    /// Queued acquires whose token was cancelled.
    pub cancelled: usize,
    /// Requests refused because they exceeded the capacity.
    pub above_capacity: usize,
    /// Times the fairness bound handed permits directly to a starved head waiter.
    pub handoffs: usize,
}

impl fmt::Display for AcquireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcquireError::Closed => f.write_str("semaphore closed"),
            AcquireError::AboveCapacity {
                requested,
                capacity,
            } => above_capacity(f, *requested, *capacity),
            AcquireError::Timeout => f.write_str("timed out waiting for permits"),
            AcquireError::Cancelled(reason) => {
                write!(f, "wait for permits stopped: {reason}")
            }
        }
    }
}

impl fmt::Display for TryAcquireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryAcquireError::NoPermits => f.write_str("no permits available"),
            TryAcquireError::Closed => f.write_str("semaphore closed"),
            TryAcquireError::AboveCapacity {
                requested,
                capacity,
            } => above_capacity(f, *requested, *capacity),
        }
    }
}

fn above_capacity(f: &mut fmt::Formatter<'_>, requested: usize, capacity: usize) -> fmt::Result {
    write!(
        f,
        "requested {requested} permits but the semaphore's capacity is {capacity}"
    )
}

impl std::error::Error for AcquireError {}
impl std::error::Error for TryAcquireError {}

impl From<Refusal> for AcquireError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            // `NoPermits` only comes from `try_acquire`; a blocking acquire never
            // reports it, but map it to the nearest meaning rather than panic.
            Refusal::TimedOut | Refusal::NoPermits => AcquireError::Timeout,
            Refusal::Closed => AcquireError::Closed,
            Refusal::TooMany {
                requested,
                capacity,
            } => AcquireError::AboveCapacity {
                requested,
                capacity,
            },
            Refusal::Cancelled(reason) => AcquireError::Cancelled(reason),
        }
    }
}

impl From<Refusal> for TryAcquireError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Closed => TryAcquireError::Closed,
            Refusal::TooMany {
                requested,
                capacity,
            } => TryAcquireError::AboveCapacity {
                requested,
                capacity,
            },
            Refusal::NoPermits | Refusal::TimedOut | Refusal::Cancelled(_) => {
                TryAcquireError::NoPermits
            }
        }
    }
}

impl Semaphore {
    /// The largest capacity a semaphore can have (`usize::MAX >> 5`).
    pub const MAX_PERMITS: usize = engine::MAX_PERMITS;

    /// A semaphore managing `permits` permits. `0` is valid: every acquire is
    /// refused with `AboveCapacity` until capacity is added.
    ///
    /// # Panics
    ///
    /// If `permits` exceeds [`Semaphore::MAX_PERMITS`]; use
    /// [`try_new`](Semaphore::try_new) to get an error instead.
    ///
    /// # Example
    ///
    /// ```
    /// let sem = corral::Semaphore::new(8);
    /// assert_eq!(sem.capacity(), 8);
    /// ```
    #[track_caller]
    pub fn new(permits: usize) -> Self {
        match Self::try_new(permits) {
            Ok(sem) => sem,
            Err(err) => panic!("{err}"),
        }
    }

    /// Like [`new`](Semaphore::new), but returns an error instead of panicking.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for field `permits` if it exceeds [`Semaphore::MAX_PERMITS`].
    ///
    /// # Example
    ///
    /// ```
    /// use corral::Semaphore;
    ///
    /// assert!(Semaphore::try_new(3).is_ok());
    /// let err = Semaphore::try_new(usize::MAX).unwrap_err();
    /// assert_eq!(err.field(), "permits");
    /// ```
    pub fn try_new(permits: usize) -> Result<Self, ConfigError> {
        Self::with_name(permits, None)
    }

    /// The checked constructor behind `try_new` and the builder: the engine is
    /// built with its name, so its metrics are registered once, under that name.
    fn with_name(permits: usize, name: Option<Arc<str>>) -> Result<Self, ConfigError> {
        if permits > Self::MAX_PERMITS {
            return Err(ConfigError::new(
                "permits",
                permits,
                "exceeds Semaphore::MAX_PERMITS",
            ));
        }
        Ok(Semaphore {
            engine: Engine::new(permits, name),
        })
    }

    /// A builder, for a semaphore with a [`name`](SemaphoreBuilder::name).
    ///
    /// # Example
    ///
    /// ```
    /// let sem = corral::Semaphore::builder(4).name("db").build()?;
    /// assert_eq!(sem.name(), Some("db"));
    /// assert!(format!("{sem:?}").contains("\"db\""));
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn builder(permits: usize) -> SemaphoreBuilder {
        SemaphoreBuilder {
            permits,
            name: None,
        }
    }

    /// The name given by [`SemaphoreBuilder::name`], if any.
    pub fn name(&self) -> Option<&str> {
        self.engine.name().map(|n| &**n)
    }

    /// Acquires one permit, waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// [`AcquireError::Closed`] if the semaphore is or becomes closed;
    /// [`AcquireError::AboveCapacity`] if the capacity is 0 (or shrinks to 0 while
    /// waiting).
    ///
    /// # Example
    ///
    /// ```
    /// let sem = corral::Semaphore::new(1);
    /// let permit = sem.acquire().unwrap();
    /// assert_eq!(sem.available(), 0);
    /// drop(permit);
    /// ```
    #[inline]
    #[track_caller]
    pub fn acquire(&self) -> Result<Permit<'_>, AcquireError> {
        self.acquire_until(1, &Until::FOREVER)
    }

    /// Takes one permit if one is free now; never blocks.
    ///
    /// # Errors
    ///
    /// [`TryAcquireError::NoPermits`] if none is free (or queued waiters have
    /// priority, see [Fairness](Semaphore#fairness)); `Closed`; `AboveCapacity` if the
    /// capacity is 0.
    ///
    /// # Example
    ///
    /// ```
    /// let sem = corral::Semaphore::new(1);
    /// let first = sem.try_acquire().unwrap();
    /// assert!(sem.try_acquire().is_err());
    /// drop(first);
    /// ```
    #[inline]
    pub fn try_acquire(&self) -> Result<Permit<'_>, TryAcquireError> {
        self.try_acquire_many(1)
    }

    /// Acquires one permit, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`AcquireError::Timeout`], `Closed`, `AboveCapacity` (capacity 0).
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let sem = corral::Semaphore::new(1);
    /// let _held = sem.acquire().unwrap();
    /// let err = sem.acquire_timeout(Duration::from_millis(5)).unwrap_err();
    /// assert_eq!(err, corral::semaphore::AcquireError::Timeout);
    /// ```
    #[track_caller]
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<Permit<'_>, AcquireError> {
        self.acquire_until(1, &Until::timeout(timeout))
    }

    /// Acquires one permit, waiting until `deadline` at the latest.
    ///
    /// # Errors
    ///
    /// [`AcquireError::Timeout`], `Closed`, `AboveCapacity` (capacity 0).
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    ///
    /// let sem = corral::Semaphore::new(1);
    /// let permit = sem.acquire_deadline(Instant::now() + Duration::from_secs(1)).unwrap();
    /// # drop(permit);
    /// ```
    #[track_caller]
    pub fn acquire_deadline(&self, deadline: Instant) -> Result<Permit<'_>, AcquireError> {
        self.acquire_until(1, &Until::deadline(deadline))
    }

    /// Acquires one permit, waiting until `token` is cancelled at the latest.
    ///
    /// # Errors
    ///
    /// [`AcquireError::Cancelled`] with the token's reason, `Closed`,
    /// `AboveCapacity` (capacity 0).
    ///
    /// # Example
    ///
    /// ```
    /// use corral::{semaphore::AcquireError, cancel::CancelReason, CancelToken, Semaphore};
    ///
    /// let sem = Semaphore::new(1);
    /// let _held = sem.acquire().unwrap();
    /// let token = CancelToken::new();
    /// token.cancel();
    /// let err = sem.acquire_cancellable(&token).unwrap_err();
    /// assert_eq!(err, AcquireError::Cancelled(CancelReason::Cancelled));
    /// ```
    #[track_caller]
    pub fn acquire_cancellable(&self, token: &CancelToken) -> Result<Permit<'_>, AcquireError> {
        self.acquire_until(1, &Until::cancellable(token))
    }

    /// Acquires `n` permits at once, waiting as long as it takes. `n == 0` succeeds
    /// at once unless the semaphore is closed.
    ///
    /// # Errors
    ///
    /// [`AcquireError::AboveCapacity`] at once if `n` exceeds the capacity, or when a
    /// shrink makes it so while waiting; [`AcquireError::Closed`].
    ///
    /// # Example
    ///
    /// ```
    /// let sem = corral::Semaphore::new(10);
    /// let batch = sem.acquire_many(4).unwrap();
    /// assert_eq!(sem.available(), 6);
    /// assert!(sem.acquire_many(11).is_err()); // above capacity: immediate error
    /// drop(batch);
    /// ```
    #[track_caller]
    pub fn acquire_many(&self, n: usize) -> Result<Permit<'_>, AcquireError> {
        self.acquire_until(n, &Until::FOREVER)
    }

    /// Takes `n` permits if they are free now; never blocks.
    ///
    /// # Errors
    ///
    /// [`TryAcquireError::NoPermits`], `Closed`, `AboveCapacity`.
    ///
    /// # Example
    ///
    /// ```
    /// let sem = corral::Semaphore::new(3);
    /// let two = sem.try_acquire_many(2).unwrap();
    /// assert!(sem.try_acquire_many(2).is_err());
    /// drop(two);
    /// ```
    #[inline]
    pub fn try_acquire_many(&self, n: usize) -> Result<Permit<'_>, TryAcquireError> {
        self.engine.try_acquire(n)?;
        Ok(Permit {
            sem: self,
            permits: n,
        })
    }

    /// Acquires `n` permits, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`AcquireError::Timeout`], `Closed`, `AboveCapacity`.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let sem = corral::Semaphore::new(3);
    /// let _one = sem.acquire().unwrap();
    /// assert!(sem.acquire_many_timeout(3, Duration::from_millis(5)).is_err());
    /// assert!(sem.acquire_many_timeout(2, Duration::from_millis(5)).is_ok());
    /// ```
    #[track_caller]
    pub fn acquire_many_timeout(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Permit<'_>, AcquireError> {
        self.acquire_until(n, &Until::timeout(timeout))
    }

    /// Acquires `n` permits, waiting until `deadline` at the latest.
    ///
    /// # Errors
    ///
    /// [`AcquireError::Timeout`], `Closed`, `AboveCapacity`.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    ///
    /// let sem = corral::Semaphore::new(3);
    /// let p = sem.acquire_many_deadline(3, Instant::now() + Duration::from_secs(1)).unwrap();
    /// assert_eq!(p.num_permits(), 3);
    /// ```
    #[track_caller]
    pub fn acquire_many_deadline(
        &self,
        n: usize,
        deadline: Instant,
    ) -> Result<Permit<'_>, AcquireError> {
        self.acquire_until(n, &Until::deadline(deadline))
    }

    /// Acquires `n` permits, waiting until `token` is cancelled at the latest.
    ///
    /// # Errors
    ///
    /// [`AcquireError::Cancelled`], `Closed`, `AboveCapacity`.
    ///
    /// # Example
    ///
    /// ```
    /// use corral::{CancelToken, Semaphore};
    /// use std::time::Duration;
    ///
    /// let sem = Semaphore::new(2);
    /// let _held = sem.acquire().unwrap();
    /// let token = CancelToken::with_timeout(Duration::from_millis(5));
    /// assert!(sem.acquire_many_cancellable(2, &token).is_err());
    /// ```
    #[track_caller]
    pub fn acquire_many_cancellable(
        &self,
        n: usize,
        token: &CancelToken,
    ) -> Result<Permit<'_>, AcquireError> {
        self.acquire_until(n, &Until::cancellable(token))
    }

    #[inline]
    #[track_caller]
    fn acquire_until(&self, n: usize, until: &Until<'_>) -> Result<Permit<'_>, AcquireError> {
        self.engine.acquire(n, until)?;
        Ok(Permit {
            sem: self,
            permits: n,
        })
    }

    /// Acquires one `'static` permit from an `Arc<Semaphore>`, waiting as long as it
    /// takes.
    ///
    /// # Errors
    ///
    /// As [`acquire`](Semaphore::acquire).
    ///
    /// # Example
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// let sem = Arc::new(corral::Semaphore::new(2));
    /// let permits: Vec<_> = (0..2).map(|_| sem.acquire_owned().unwrap()).collect();
    /// assert_eq!(sem.available(), 0);
    /// drop(permits);
    /// assert_eq!(sem.available(), 2);
    /// ```
    #[inline]
    #[track_caller]
    pub fn acquire_owned(self: &Arc<Self>) -> Result<OwnedPermit, AcquireError> {
        self.acquire_owned_until(1, &Until::FOREVER)
    }

    /// Takes one `'static` permit if one is free now; never blocks.
    ///
    /// # Errors
    ///
    /// As [`try_acquire`](Semaphore::try_acquire).
    ///
    /// # Example
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// let sem = Arc::new(corral::Semaphore::new(1));
    /// let permit = sem.try_acquire_owned().unwrap();
    /// assert!(sem.try_acquire_owned().is_err());
    /// drop(permit);
    /// ```
    #[inline]
    pub fn try_acquire_owned(self: &Arc<Self>) -> Result<OwnedPermit, TryAcquireError> {
        self.try_acquire_many_owned(1)
    }

    /// Acquires one `'static` permit, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`acquire_timeout`](Semaphore::acquire_timeout).
    ///
    /// # Example
    ///
    /// ```
    /// use std::{sync::Arc, time::Duration};
    ///
    /// let sem = Arc::new(corral::Semaphore::new(1));
    /// let permit = sem.acquire_owned_timeout(Duration::from_secs(1)).unwrap();
    /// # drop(permit);
    /// ```
    #[track_caller]
    pub fn acquire_owned_timeout(
        self: &Arc<Self>,
        timeout: Duration,
    ) -> Result<OwnedPermit, AcquireError> {
        self.acquire_owned_until(1, &Until::timeout(timeout))
    }

    /// Acquires one `'static` permit, waiting until `deadline` at the latest.
    ///
    /// # Errors
    ///
    /// As [`acquire_deadline`](Semaphore::acquire_deadline).
    ///
    /// # Example
    ///
    /// ```
    /// use std::{sync::Arc, time::{Duration, Instant}};
    ///
    /// let sem = Arc::new(corral::Semaphore::new(1));
    /// let permit = sem.acquire_owned_deadline(Instant::now() + Duration::from_secs(1)).unwrap();
    /// # drop(permit);
    /// ```
    #[track_caller]
    pub fn acquire_owned_deadline(
        self: &Arc<Self>,
        deadline: Instant,
    ) -> Result<OwnedPermit, AcquireError> {
        self.acquire_owned_until(1, &Until::deadline(deadline))
    }

    /// Acquires one `'static` permit, waiting until `token` is cancelled at the latest.
    ///
    /// # Errors
    ///
    /// As [`acquire_cancellable`](Semaphore::acquire_cancellable).
    ///
    /// # Example
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// let sem = Arc::new(corral::Semaphore::new(1));
    /// let token = corral::CancelToken::new();
    /// let permit = sem.acquire_owned_cancellable(&token).unwrap();
    /// # drop(permit);
    /// ```
    #[track_caller]
    pub fn acquire_owned_cancellable(
        self: &Arc<Self>,
        token: &CancelToken,
    ) -> Result<OwnedPermit, AcquireError> {
        self.acquire_owned_until(1, &Until::cancellable(token))
    }

    /// Acquires `n` `'static` permits, waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// As [`acquire_many`](Semaphore::acquire_many).
    ///
    /// # Example
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// let sem = Arc::new(corral::Semaphore::new(4));
    /// let permit = sem.acquire_many_owned(3).unwrap();
    /// assert_eq!(permit.num_permits(), 3);
    /// ```
    #[track_caller]
    pub fn acquire_many_owned(self: &Arc<Self>, n: usize) -> Result<OwnedPermit, AcquireError> {
        self.acquire_owned_until(n, &Until::FOREVER)
    }

    /// Takes `n` `'static` permits if they are free now; never blocks.
    ///
    /// # Errors
    ///
    /// As [`try_acquire_many`](Semaphore::try_acquire_many).
    ///
    /// # Example
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// let sem = Arc::new(corral::Semaphore::new(4));
    /// let permit = sem.try_acquire_many_owned(4).unwrap();
    /// assert!(sem.try_acquire_many_owned(1).is_err());
    /// drop(permit);
    /// ```
    #[inline]
    pub fn try_acquire_many_owned(
        self: &Arc<Self>,
        n: usize,
    ) -> Result<OwnedPermit, TryAcquireError> {
        self.engine.try_acquire(n)?;
        Ok(OwnedPermit {
            sem: Arc::clone(self),
            permits: n,
        })
    }

    /// Acquires `n` `'static` permits, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`acquire_many_timeout`](Semaphore::acquire_many_timeout).
    ///
    /// # Example
    ///
    /// ```
    /// use std::{sync::Arc, time::Duration};
    ///
    /// let sem = Arc::new(corral::Semaphore::new(4));
    /// let permit = sem.acquire_many_owned_timeout(2, Duration::from_secs(1)).unwrap();
    /// # drop(permit);
    /// ```
    #[track_caller]
    pub fn acquire_many_owned_timeout(
        self: &Arc<Self>,
        n: usize,
        timeout: Duration,
    ) -> Result<OwnedPermit, AcquireError> {
        self.acquire_owned_until(n, &Until::timeout(timeout))
    }

    /// Acquires `n` `'static` permits, waiting until `deadline` at the latest.
    ///
    /// # Errors
    ///
    /// As [`acquire_many_deadline`](Semaphore::acquire_many_deadline).
    ///
    /// # Example
    ///
    /// ```
    /// use std::{sync::Arc, time::{Duration, Instant}};
    ///
    /// let sem = Arc::new(corral::Semaphore::new(4));
    /// let deadline = Instant::now() + Duration::from_secs(1);
    /// let permit = sem.acquire_many_owned_deadline(2, deadline).unwrap();
    /// # drop(permit);
    /// ```
    #[track_caller]
    pub fn acquire_many_owned_deadline(
        self: &Arc<Self>,
        n: usize,
        deadline: Instant,
    ) -> Result<OwnedPermit, AcquireError> {
        self.acquire_owned_until(n, &Until::deadline(deadline))
    }

    /// Acquires `n` `'static` permits, waiting until `token` is cancelled at the
    /// latest.
    ///
    /// # Errors
    ///
    /// As [`acquire_many_cancellable`](Semaphore::acquire_many_cancellable).
    ///
    /// # Example
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// let sem = Arc::new(corral::Semaphore::new(4));
    /// let token = corral::CancelToken::new();
    /// let permit = sem.acquire_many_owned_cancellable(4, &token).unwrap();
    /// # drop(permit);
    /// ```
    #[track_caller]
    pub fn acquire_many_owned_cancellable(
        self: &Arc<Self>,
        n: usize,
        token: &CancelToken,
    ) -> Result<OwnedPermit, AcquireError> {
        self.acquire_owned_until(n, &Until::cancellable(token))
    }

    #[inline]
    #[track_caller]
    pub(crate) fn acquire_owned_until(
        self: &Arc<Self>,
        n: usize,
        until: &Until<'_>,
    ) -> Result<OwnedPermit, AcquireError> {
        self.engine.acquire(n, until)?;
        Ok(OwnedPermit {
            sem: Arc::clone(self),
            permits: n,
        })
    }

    /// Adds `n` permits to the capacity and wakes the waiters they can serve. If a
    /// shrink is still pending (more permits in use than the capacity), the new
    /// permits pay it off first.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for field `permits` if the capacity would exceed
    /// [`Semaphore::MAX_PERMITS`]; nothing changes then.
    ///
    /// # Example
    ///
    /// ```
    /// let sem = corral::Semaphore::new(0);
    /// assert!(sem.try_acquire().is_err());
    /// sem.add_permits(2).unwrap();
    /// assert_eq!(sem.capacity(), 2);
    /// assert!(sem.try_acquire().is_ok());
    /// ```
    pub fn add_permits(&self, n: usize) -> Result<(), ConfigError> {
        self.engine
            .add_permits(n)
            .map_err(|_| ConfigError::new("permits", n, "would take the capacity past MAX_PERMITS"))
    }

    /// Sets the capacity to `capacity` and returns the previous one.
    ///
    /// Growing makes the new permits available and wakes the waiters they can serve.
    /// Shrinking takes the difference out of the free permits; if fewer are free, the
    /// rest is taken from permits as they are released (a held permit is never
    /// revoked), so `available()` stays 0 until the permits in use fall below the new
    /// capacity. Queued requests larger than the new capacity fail with
    /// [`AcquireError::AboveCapacity`].
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for field `capacity` above [`Semaphore::MAX_PERMITS`];
    /// nothing changes then.
    ///
    /// # Example
    ///
    /// ```
    /// let sem = corral::Semaphore::new(4);
    /// let held = sem.acquire_many(3).unwrap();
    /// sem.set_capacity(2).unwrap(); // 3 in use: the shrink waits for releases
    /// assert_eq!(sem.available(), 0);
    /// drop(held);
    /// assert_eq!(sem.available(), 2);
    /// sem.set_capacity(6).unwrap();
    /// assert_eq!(sem.available(), 6);
    /// ```
    pub fn set_capacity(&self, capacity: usize) -> Result<usize, ConfigError> {
        if capacity > Self::MAX_PERMITS {
            return Err(ConfigError::new(
                "capacity",
                capacity,
                "exceeds Semaphore::MAX_PERMITS",
            ));
        }
        Ok(self.engine.set_capacity(capacity))
    }

    /// Permits free right now.
    ///
    /// # Example
    ///
    /// ```
    /// let sem = corral::Semaphore::new(3);
    /// let _p = sem.acquire().unwrap();
    /// assert_eq!(sem.available(), 2);
    /// ```
    #[inline]
    pub fn available(&self) -> usize {
        self.engine.available()
    }

    /// The total number of permits the semaphore manages now.
    ///
    /// # Example
    ///
    /// ```
    /// let sem = corral::Semaphore::new(3);
    /// sem.acquire().unwrap().forget();
    /// assert_eq!(sem.capacity(), 2);
    /// ```
    pub fn capacity(&self) -> usize {
        self.engine.capacity()
    }

    /// Closes the semaphore: every queued acquire wakes with `Closed`, and so does
    /// every later one (`try_acquire` too). Held permits stay valid and are returned
    /// normally. Returns `true` if this call closed it.
    ///
    /// # Example
    ///
    /// ```
    /// use corral::{semaphore::AcquireError, Semaphore};
    ///
    /// let sem = Semaphore::new(1);
    /// assert!(sem.close());
    /// assert!(!sem.close());
    /// assert_eq!(sem.acquire().unwrap_err(), AcquireError::Closed);
    /// ```
    pub fn close(&self) -> bool {
        self.engine.close()
    }

    /// Whether [`close`](Semaphore::close) has been called.
    ///
    /// # Example
    ///
    /// ```
    /// let sem = corral::Semaphore::new(1);
    /// sem.close();
    /// assert!(sem.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        self.engine.is_closed()
    }

    /// A snapshot of the gauges and counters.
    ///
    /// # Example
    ///
    /// ```
    /// let sem = corral::Semaphore::new(2);
    /// assert!(sem.acquire_many(3).is_err());
    /// assert_eq!(sem.stats().above_capacity, 1);
    /// ```
    pub fn stats(&self) -> SemaphoreStats {
        let s = self.engine.snapshot();
        SemaphoreStats {
            capacity: s.capacity,
            available: s.available,
            in_use: (s.capacity + s.debt).saturating_sub(s.available),
            waiting: s.waiting,
            closed: s.closed,
            waited: s.waited,
            timed_out: s.timed_out,
            cancelled: s.cancelled,
            above_capacity: s.too_many,
            handoffs: s.handoffs,
        }
    }
}

/// Configures a [`Semaphore`]: its permits and a name.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct SemaphoreBuilder {
    permits: usize,
    name: Option<Arc<str>>,
}

impl SemaphoreBuilder {
    /// A name for the semaphore, shown in its `Debug`, in the thread dump (as
    /// "waiting for a permit of "name""), and in events and metrics.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(Arc::from(name.into()));
        self
    }

    /// The semaphore.
    ///
    /// # Errors
    ///
    /// As [`Semaphore::try_new`].
    pub fn build(self) -> Result<Semaphore, ConfigError> {
        Semaphore::with_name(self.permits, self.name)
    }
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.stats();
        f.debug_struct("Semaphore")
            .field("name", &self.name())
            .field("capacity", &s.capacity)
            .field("available", &s.available)
            .field("waiting", &s.waiting)
            .field("closed", &s.closed)
            .finish()
    }
}

impl Permit<'_> {
    /// How many permits this guard holds.
    ///
    /// # Example
    ///
    /// ```
    /// let sem = corral::Semaphore::new(5);
    /// assert_eq!(sem.acquire_many(4).unwrap().num_permits(), 4);
    /// ```
    pub fn num_permits(&self) -> usize {
        self.permits
    }

    /// Keeps the permits out of the semaphore for good: the capacity shrinks by
    /// their number.
    ///
    /// # Example
    ///
    /// ```
    /// let sem = corral::Semaphore::new(5);
    /// sem.acquire_many(2).unwrap().forget();
    /// assert_eq!((sem.capacity(), sem.available()), (3, 3));
    /// ```
    pub fn forget(mut self) {
        self.sem.engine.forget(std::mem::take(&mut self.permits));
    }
}

impl Drop for Permit<'_> {
    #[inline]
    fn drop(&mut self) {
        self.sem.engine.release(self.permits);
    }
}

impl fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("permits", &self.permits)
            .finish()
    }
}

impl OwnedPermit {
    /// How many permits this guard holds.
    ///
    /// # Example
    ///
    /// ```
    /// let sem = std::sync::Arc::new(corral::Semaphore::new(5));
    /// assert_eq!(sem.acquire_many_owned(4).unwrap().num_permits(), 4);
    /// ```
    pub fn num_permits(&self) -> usize {
        self.permits
    }

    /// The semaphore the permits came from.
    ///
    /// # Example
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// let sem = Arc::new(corral::Semaphore::new(1));
    /// let permit = sem.acquire_owned().unwrap();
    /// assert!(Arc::ptr_eq(permit.semaphore(), &sem));
    /// ```
    pub fn semaphore(&self) -> &Arc<Semaphore> {
        &self.sem
    }

    /// Keeps the permits out of the semaphore for good: the capacity shrinks by
    /// their number.
    ///
    /// # Example
    ///
    /// ```
    /// let sem = std::sync::Arc::new(corral::Semaphore::new(5));
    /// sem.acquire_owned().unwrap().forget();
    /// assert_eq!(sem.capacity(), 4);
    /// ```
    pub fn forget(mut self) {
        self.sem.engine.forget(std::mem::take(&mut self.permits));
    }
}

impl Drop for OwnedPermit {
    #[inline]
    fn drop(&mut self) {
        self.sem.engine.release(self.permits);
    }
}

impl fmt::Debug for OwnedPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedPermit")
            .field("permits", &self.permits)
            .finish()
    }
}
