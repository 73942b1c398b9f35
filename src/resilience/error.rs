//! What a call through a [`Resilience`](super::Resilience) stack returns when it
//! produces no value: the layer that refused it, or the call's own error.

use std::fmt;
use std::time::Duration;

use crate::cancel::CancelReason;

/// Why a call through a [`Resilience`](super::Resilience) stack produced no value:
/// the call's own error ([`Inner`](ResilienceError::Inner)), or the layer that
/// ended it, each with its own variant so a caller can answer each differently
/// (retry later, shed load, report a timeout).
///
/// # Example
///
/// ```
/// use corral::{Resilience, resilience::ResilienceError};
///
/// let stack = Resilience::builder().retries(2).build()?;
/// let outcome: Result<u32, _> = stack.call(|_token| Err::<u32, _>("upstream down"));
/// match outcome {
///     Err(ResilienceError::Inner { error, attempts }) => {
///         assert_eq!((error, attempts), ("upstream down", 3));
///     }
///     other => unreachable!("{other:?}"),
/// }
/// # Ok::<(), corral::ConfigError>(())
/// ```
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResilienceError<E> {
    /// The call ran and failed: the error of the last attempt, and how many ran.
    Inner {
        /// The last attempt's error.
        error: E,
        /// Attempts that ran (1 plus the retries that happened).
        attempts: u32,
    },
    /// A rate limit has no slot before the call's deadline.
    RateLimited {
        /// How long until a slot frees, when the limiter says.
        retry_after: Option<Duration>,
    },
    /// Every worker of the stack's pool is busy (also with calls given up on):
    /// refused at once, never queued.
    BulkheadFull,
    /// The bulkhead admits no call: it is closed (or shrunk to zero permits).
    BulkheadClosed,
    /// The circuit breaker refused the attempt.
    BreakerOpen {
        /// When the breaker expects to admit a trial call, if it is open.
        retry_after: Option<Duration>,
    },
    /// The call's deadline passed: while waiting for a layer, or while the call ran
    /// on the stack's pool (the caller stopped waiting; the call is counted as
    /// abandoned).
    DeadlineExceeded,
    /// The caller's token was cancelled.
    Cancelled(CancelReason),
    /// A [`Limit`](super::Limit) could not decide (a fleet-wide limit whose backend
    /// is down) and its policy refuses.
    LimitUnavailable,
}

impl<E> ResilienceError<E> {
    /// The call's own error, if an attempt ran and failed.
    pub fn into_inner(self) -> Option<E> {
        match self {
            ResilienceError::Inner { error, .. } => Some(error),
            _ => None,
        }
    }

    /// Whether the stack ended the call itself (any variant but
    /// [`Inner`](ResilienceError::Inner)).
    pub fn is_refused(&self) -> bool {
        !matches!(self, ResilienceError::Inner { .. })
    }

    /// When to try again, for a refusal that says
    /// ([`RateLimited`](ResilienceError::RateLimited),
    /// [`BreakerOpen`](ResilienceError::BreakerOpen)).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ResilienceError::RateLimited { retry_after }
            | ResilienceError::BreakerOpen { retry_after } => *retry_after,
            _ => None,
        }
    }

    /// The refusal for a token that ended the call: its deadline, or a cancel.
    pub(super) fn from_reason(reason: CancelReason) -> Self {
        match reason {
            CancelReason::DeadlineExceeded => ResilienceError::DeadlineExceeded,
            reason => ResilienceError::Cancelled(reason),
        }
    }
}

/// Describes this error only: the last attempt's error is the
/// [`source`](std::error::Error::source) of [`ResilienceError::Inner`] (when `E` is not
/// an [`Error`](std::error::Error), reach it with
/// [`into_inner`](ResilienceError::into_inner) or by matching; `Debug` shows it).
impl<E> fmt::Display for ResilienceError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResilienceError::Inner { attempts, .. } => {
                write!(f, "call failed after {attempts} attempt(s)")
            }
            ResilienceError::RateLimited {
                retry_after: Some(d),
            } => write!(f, "rate limited (retry after {d:?})"),
            ResilienceError::RateLimited { retry_after: None } => f.write_str("rate limited"),
            ResilienceError::BulkheadFull => f.write_str("bulkhead is full"),
            ResilienceError::BulkheadClosed => f.write_str("bulkhead admits no call"),
            ResilienceError::BreakerOpen {
                retry_after: Some(d),
            } => write!(f, "circuit breaker is open (retry after {d:?})"),
            ResilienceError::BreakerOpen { retry_after: None } => {
                f.write_str("circuit breaker refused the call")
            }
            ResilienceError::DeadlineExceeded => f.write_str("deadline exceeded"),
            ResilienceError::Cancelled(reason) => write!(f, "call {reason}"),
            ResilienceError::LimitUnavailable => f.write_str("a limit could not decide"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for ResilienceError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ResilienceError::Inner { error, .. } => Some(error),
            _ => None,
        }
    }
}
