//! The limit layers of a [`Resilience`](super::Resilience) stack: the public
//! [`Limit`] trait and its implementations for the crate's in-process limiters (the
//! fleet-wide ones implement it beside their types).

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use crate::cancel::{CancelReason, CancelToken};
use crate::clock::{Clock, SystemClock};
use crate::rate::{KeyedRateLimiter, NotUntil, RateLimiter, WaitError};

/// A layer of a [`Resilience`](super::Resilience) stack that admits each attempt: a
/// rate limiter (one slot per attempt), a concurrency limit (a permit held for the
/// attempt), or any limit of your own, in-process or shared by a fleet. Waits must
/// end when `token` is cancelled (it carries the call's deadline).
///
/// Implemented by [`RateLimiter`], by one key of a [`KeyedRateLimiter`]
/// ([`KeyedRateLimiter::limit_for`]) and, with the `redis` feature, by the
/// fleet-wide semaphore and one key of the fleet-wide rate limiter.
///
/// # Example
///
/// ```
/// use corral::{CancelToken, resilience::{Limit, LimitHold, LimitRefused}, Resilience};
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicBool, Ordering};
///
/// /// Admits nothing while maintenance is on.
/// struct Maintenance(AtomicBool);
///
/// impl Limit for Maintenance {
///     fn admit(&self, _token: &CancelToken) -> Result<LimitHold<'_>, LimitRefused> {
///         if self.0.load(Ordering::Relaxed) {
///             Err(LimitRefused::Unavailable)
///         } else {
///             Ok(LimitHold::nothing())
///         }
///     }
/// }
///
/// let switch = Arc::new(Maintenance(AtomicBool::new(true)));
/// let stack = Resilience::builder().limit(switch.clone()).build()?;
/// assert!(stack.call(|_| Ok::<_, ()>(1)).is_err());
/// switch.0.store(false, Ordering::Relaxed);
/// assert_eq!(stack.call(|_| Ok::<_, ()>(1)), Ok(1));
/// # Ok::<(), corral::ConfigError>(())
/// ```
pub trait Limit: Send + Sync {
    /// Admits one attempt, waiting at most until `token` is cancelled; what it
    /// returns is held until the attempt ends, then dropped.
    ///
    /// # Errors
    ///
    /// [`LimitRefused`]: why the attempt may not start.
    fn admit(&self, token: &CancelToken) -> Result<LimitHold<'_>, LimitRefused>;
}

/// What a [`Limit`] holds for one attempt (a permit), released when dropped.
pub struct LimitHold<'a>(Option<Box<dyn Send + 'a>>);

impl<'a> LimitHold<'a> {
    /// Nothing to hold (a rate limiter's slot is used up once taken).
    pub fn nothing() -> Self {
        LimitHold(None)
    }

    /// Holds `held` (a permit) until the attempt ends.
    pub fn holding(held: impl Send + 'a) -> Self {
        LimitHold(Some(Box::new(held)))
    }
}

impl fmt::Debug for LimitHold<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("LimitHold").field(&self.0.is_some()).finish()
    }
}

/// Why a [`Limit`] did not admit an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimitRefused {
    /// No slot before the call's deadline; the call ends in
    /// [`ResilienceError::RateLimited`](super::ResilienceError::RateLimited).
    RateLimited {
        /// How long until a slot frees, when the limit knows.
        retry_after: Option<Duration>,
    },
    /// The token was cancelled (or its deadline passed) while waiting.
    Cancelled(CancelReason),
    /// The limit could not decide (its backend is down) and its policy refuses;
    /// the call ends in
    /// [`ResilienceError::LimitUnavailable`](super::ResilienceError::LimitUnavailable).
    Unavailable,
}

impl From<WaitError> for LimitRefused {
    fn from(e: WaitError) -> Self {
        match e {
            WaitError::Timeout(at) => LimitRefused::RateLimited {
                retry_after: Some(at.wait_time()),
            },
            // A token's deadline that ends a wait for a slot: no slot in time.
            WaitError::Cancelled(CancelReason::DeadlineExceeded) => {
                LimitRefused::RateLimited { retry_after: None }
            }
            WaitError::Cancelled(reason) => LimitRefused::Cancelled(reason),
            // One cell never exceeds a burst (at least 1): kept for completeness.
            _ => LimitRefused::RateLimited { retry_after: None },
        }
    }
}

/// After a refused check: refuses at once, with the wait, a slot that lies past the
/// token's deadline; otherwise waits for it.
fn wait_for_slot(
    refused: NotUntil,
    token: &CancelToken,
    wait: impl FnOnce() -> Result<(), WaitError>,
) -> Result<LimitHold<'static>, LimitRefused> {
    let retry_after = refused.wait_time();
    if token.remaining().is_some_and(|left| retry_after > left) {
        return Err(LimitRefused::RateLimited {
            retry_after: Some(retry_after),
        });
    }
    wait().map(|()| LimitHold::nothing()).map_err(Into::into)
}

impl<C: Clock> Limit for RateLimiter<C> {
    fn admit(&self, token: &CancelToken) -> Result<LimitHold<'_>, LimitRefused> {
        // A free slot needs no look at the token (whose deadline costs two clock
        // reads in a wait); a refused check records nothing, so the wait is exact.
        match self.check() {
            Ok(()) => Ok(LimitHold::nothing()),
            Err(refused) => wait_for_slot(refused, token, || self.wait_cancellable(token)),
        }
    }
}

/// One key of a [`KeyedRateLimiter`] as a [`Limit`]: every attempt takes a slot of
/// that key. Made by [`KeyedRateLimiter::limit_for`].
pub struct KeyedLimit<K, C: Clock = SystemClock> {
    limiter: Arc<KeyedRateLimiter<K, C>>,
    key: K,
}

impl<K: Hash + Eq + Clone, C: Clock> KeyedRateLimiter<K, C> {
    /// The [`Limit`] of one key, for a [`Resilience`](super::Resilience) stack.
    ///
    /// ```
    /// use corral::{KeyedRateLimiter, Resilience, resilience::ResilienceError};
    /// use std::sync::Arc;
    ///
    /// let per_tenant = Arc::new(KeyedRateLimiter::<String>::per_minute(1).build()?);
    /// let stack = Resilience::builder()
    ///     .rate_limiter(Arc::new(per_tenant.limit_for("acme".to_string())))
    ///     .timeout(std::time::Duration::from_millis(10))
    ///     .build()?;
    /// assert_eq!(stack.call(|_| Ok::<_, ()>(1)), Ok(1));
    /// let refused = stack.call(|_| Ok::<_, ()>(2)).unwrap_err();
    /// assert!(matches!(refused, ResilienceError::RateLimited { retry_after: Some(_) }));
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn limit_for(self: &Arc<Self>, key: K) -> KeyedLimit<K, C> {
        KeyedLimit {
            limiter: Arc::clone(self),
            key,
        }
    }
}

impl<K, C> Limit for KeyedLimit<K, C>
where
    K: Hash + Eq + Clone + Send + Sync,
    C: Clock,
    KeyedRateLimiter<K, C>: Send + Sync,
{
    fn admit(&self, token: &CancelToken) -> Result<LimitHold<'_>, LimitRefused> {
        match self.limiter.check_key(&self.key) {
            Ok(()) => Ok(LimitHold::nothing()),
            Err(refused) => wait_for_slot(refused, token, || {
                self.limiter.wait_key_cancellable(&self.key, token)
            }),
        }
    }
}

impl<K: fmt::Debug, C: Clock> fmt::Debug for KeyedLimit<K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedLimit")
            .field("key", &self.key)
            .finish()
    }
}
