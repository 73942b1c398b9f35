//! A retry budget shared by several stacks: retries allowed as a fraction of the
//! calls seen over a recent window, plus a small floor per second, so that retries
//! cannot multiply the load on a dependency that is down (the scheme of Finagle's
//! and gRPC's retry budgets). Calls and retries are counted in ten buckets that
//! cover the window, read from the budget's clock when asked (no timer thread).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clock::{Clock, SystemClock};
use crate::config::ConfigError;
use crate::sync::{AtomicU64, Mutex, Ordering};

const BUCKETS: usize = 10;

/// Retries allowed as a ratio of recent calls, with a floor per second, shared by
/// every [`Resilience`](super::Resilience) stack given it
/// ([`ResilienceBuilder::retry_budget`](super::ResilienceBuilder::retry_budget)).
///
/// Over the last `window`, a retry is allowed while the retries made are fewer than
/// `ratio × calls + min_per_second × window`; a retry refused by the budget ends the
/// call with its last error, and is counted
/// ([`ResilienceStats::retries_denied`](super::ResilienceStats::retries_denied)).
///
/// # Example
///
/// ```
/// use corral::{Resilience, resilience::RetryBudget};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// // One retry per ten calls, no floor.
/// let budget = Arc::new(RetryBudget::builder().ratio(0.1).min_per_second(0).build()?);
/// let stack = Resilience::builder()
///     .retries(3)
///     .backoff(Duration::ZERO, Duration::ZERO)
///     .retry_budget(budget.clone())
///     .build()?;
/// for _ in 0..10 {
///     let _ = stack.call(|_| Err::<(), _>("down"));
/// }
/// assert_eq!(stack.stats().retries, 1); // not 30
/// # Ok::<(), corral::ConfigError>(())
/// ```
pub struct RetryBudget {
    ratio: f64,
    min_per_second: u32,
    bucket: Duration,
    clock: Arc<dyn Clock>,
    start: Instant,
    /// Per bucket: (bucket number, calls, retries).
    buckets: Mutex<[(u64, u64, u64); BUCKETS]>,
    denied: AtomicU64,
}

/// Counters of a [`RetryBudget`] (relaxed snapshots).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryBudgetStats {
    /// Calls recorded over the current window.
    pub calls: u64,
    /// Retries allowed over the current window.
    pub retries: u64,
    /// Retries refused since the budget was built.
    pub denied: u64,
}

impl RetryBudget {
    /// A builder: ratio 0.2, 10 retries per second as a floor, a 10 s window.
    pub fn builder() -> RetryBudgetBuilder {
        RetryBudgetBuilder {
            ratio: 0.2,
            min_per_second: 10,
            window: Duration::from_secs(10),
            clock: Arc::new(SystemClock),
        }
    }

    /// Records one call.
    pub(super) fn deposit(&self) {
        let now = self.bucket_now();
        let mut buckets = self.buckets.lock();
        Self::current(&mut buckets, now).1 += 1;
    }

    /// Takes one retry if the budget allows it.
    pub(super) fn withdraw(&self) -> bool {
        let now = self.bucket_now();
        let mut buckets = self.buckets.lock();
        let (calls, retries) = Self::sum(&buckets, now);
        let floor = f64::from(self.min_per_second) * self.bucket.as_secs_f64() * BUCKETS as f64;
        // Float arithmetic on counts far below 2^52 is exact enough.
        #[allow(clippy::cast_precision_loss)]
        let allowed = self.ratio * calls as f64 + floor;
        #[allow(clippy::cast_precision_loss)]
        let fits = (retries as f64) + 1.0 <= allowed;
        if fits {
            Self::current(&mut buckets, now).2 += 1;
        } else {
            drop(buckets);
            self.denied.fetch_add(1, Ordering::Relaxed);
        }
        fits
    }

    /// A snapshot of the window's counts.
    pub fn stats(&self) -> RetryBudgetStats {
        let now = self.bucket_now();
        let (calls, retries) = Self::sum(&self.buckets.lock(), now);
        RetryBudgetStats {
            calls,
            retries,
            denied: self.denied.load(Ordering::Relaxed),
        }
    }

    fn bucket_now(&self) -> u64 {
        let elapsed = self.clock.now().saturating_duration_since(self.start);
        u64::try_from(elapsed.as_nanos() / self.bucket.as_nanos()).unwrap_or(u64::MAX)
    }

    fn current(buckets: &mut [(u64, u64, u64); BUCKETS], now: u64) -> &mut (u64, u64, u64) {
        #[allow(clippy::cast_possible_truncation)]
        let slot = &mut buckets[(now % BUCKETS as u64) as usize];
        if slot.0 != now {
            *slot = (now, 0, 0);
        }
        slot
    }

    fn sum(buckets: &[(u64, u64, u64); BUCKETS], now: u64) -> (u64, u64) {
        buckets
            .iter()
            .filter(|(at, _, _)| now.saturating_sub(*at) < BUCKETS as u64 && *at <= now)
            .fold((0, 0), |(c, r), (_, calls, retries)| {
                (c + calls, r + retries)
            })
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("ratio", &self.ratio)
            .field("min_per_second", &self.min_per_second)
            .field("window", &(self.bucket * BUCKETS as u32))
            .field("stats", &self.stats())
            .finish()
    }
}

/// Configures a [`RetryBudget`].
#[must_use = "a builder does nothing until `build` is called"]
pub struct RetryBudgetBuilder {
    ratio: f64,
    min_per_second: u32,
    window: Duration,
    clock: Arc<dyn Clock>,
}

impl RetryBudgetBuilder {
    /// Retries allowed per call over the window (default 0.2: one in five calls may
    /// be retried), from 0 to 1000.
    pub fn ratio(mut self, ratio: f64) -> Self {
        self.ratio = ratio;
        self
    }

    /// Retries allowed per second whatever the traffic (default 10), so a quiet
    /// service can still retry.
    pub fn min_per_second(mut self, n: u32) -> Self {
        self.min_per_second = n;
        self
    }

    /// How far back calls and retries count (default 10 s), from 10 ms to an hour.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// The clock the window is read from ([`ManualClock`](crate::clock::ManualClock)
    /// in tests).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Builds the budget.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `ratio` (negative, above 1000 or not a number) or
    /// `window` (outside 10 ms..=1 h).
    pub fn build(self) -> Result<RetryBudget, ConfigError> {
        if !(0.0..=1000.0).contains(&self.ratio) {
            return Err(ConfigError::new(
                "ratio",
                self.ratio,
                "must be within 0..=1000",
            ));
        }
        if !(Duration::from_millis(10)..=Duration::from_secs(3600)).contains(&self.window) {
            return Err(ConfigError::new(
                "window",
                self.window,
                "must be within 10 ms..=1 h",
            ));
        }
        Ok(RetryBudget {
            ratio: self.ratio,
            min_per_second: self.min_per_second,
            bucket: self.window / BUCKETS as u32,
            start: self.clock.now(),
            clock: self.clock,
            buckets: Mutex::new([(u64::MAX, 0, 0); BUCKETS]),
            denied: AtomicU64::new(0),
        })
    }
}

impl fmt::Debug for RetryBudgetBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudgetBuilder")
            .field("ratio", &self.ratio)
            .field("min_per_second", &self.min_per_second)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}
