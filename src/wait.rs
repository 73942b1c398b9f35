//! The bound on a blocking call, shared by every primitive.
//!
//! Each blocking operation `op` comes as `op`, `try_op`, `op_timeout(Duration)`,
//! `op_deadline(Instant)` and `op_cancellable(&CancelToken)`. All but `try_op` funnel
//! into one private `op_until(Until)`, so the waiting logic (deadline arithmetic,
//! cancel wake-ups, which error a stop maps to) is written once, here. So is how long
//! a waiter re-checks its condition before it parks ([`Backoff`]).

use std::time::{Duration, Instant};

use crate::cancel::{CancelReason, CancelToken, OnCancel};
use crate::sync::{thread, time};

/// How long a blocking call may wait.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Until<'a> {
    deadline: Option<Instant>,
    token: Option<&'a CancelToken>,
}

/// Why a bounded wait stopped before its condition held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Interrupted {
    /// The caller's deadline or timeout passed.
    TimedOut,
    /// The caller's token was cancelled (explicitly or by its own deadline).
    Cancelled(CancelReason),
}

impl Until<'static> {
    /// No bound: wait as long as it takes.
    pub(crate) const FOREVER: Until<'static> = Until {
        deadline: None,
        token: None,
    };

    /// Wait at most `timeout` from now.
    pub(crate) fn timeout(timeout: Duration) -> Self {
        Until {
            deadline: Some(time::deadline_after(time::now(), timeout)),
            token: None,
        }
    }

    /// Wait until `deadline`.
    pub(crate) fn deadline(deadline: Instant) -> Self {
        Until {
            deadline: Some(deadline),
            token: None,
        }
    }
}

impl<'a> Until<'a> {
    /// Wait until `token` is cancelled (which includes its own deadline).
    pub(crate) fn cancellable(token: &'a CancelToken) -> Self {
        Until {
            deadline: None,
            token: Some(token),
        }
    }

    /// The caller's own deadline, if any (not the token's).
    pub(crate) fn caller_deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Whether the wait has a bound (a deadline or a token): not [`Until::FOREVER`].
    pub(crate) fn is_bounded(&self) -> bool {
        self.deadline.is_some() || self.token.is_some()
    }

    /// The token, if any.
    pub(crate) fn token(&self) -> Option<&'a CancelToken> {
        self.token
    }

    /// The earliest instant at which this wait must end: the caller's deadline or the
    /// token's, whichever comes first.
    pub(crate) fn limit(&self) -> Option<Instant> {
        match (self.deadline, self.token.and_then(CancelToken::deadline)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// `Err` once the wait must stop: the token is cancelled or the deadline passed.
    pub(crate) fn check(&self) -> Result<(), Interrupted> {
        self.check_at(time::now())
    }

    /// As [`check`](Until::check), with the current time supplied by the caller.
    pub(crate) fn check_at(&self, now: Instant) -> Result<(), Interrupted> {
        if let Some(reason) = self.token.and_then(CancelToken::reason) {
            return Err(Interrupted::Cancelled(reason));
        }
        match self.deadline {
            Some(deadline) if now >= deadline => Err(Interrupted::TimedOut),
            _ => Ok(()),
        }
    }

    /// Arranges for the current thread to be unparked when the token is cancelled.
    /// Keep the returned registration alive for as long as the thread may park.
    pub(crate) fn unpark_on_cancel(&self) -> Option<OnCancel> {
        self.token.map(|token| {
            let me = thread::current();
            token.on_cancel(move || me.unpark())
        })
    }

    /// Parks the current thread once (until unparked, spuriously woken, or the limit)
    /// and then reports whether the wait must stop. Callers loop, re-checking their own
    /// condition, with an [`unpark_on_cancel`](Until::unpark_on_cancel) registration held.
    pub(crate) fn park(&self) -> Result<(), Interrupted> {
        self.check()?;
        thread::park_until(self.limit());
        self.check()
    }
}

/// Spin-then-park: the one policy by which a waiter re-checks its condition before it
/// parks. Each [`snooze`](Backoff::snooze) yields the CPU once, so that on a machine
/// with fewer cores than busy threads the other side (a releaser, a sender, a task
/// about to finish) can run on this one; a park and wake-up cost microseconds and are
/// usually avoided. It never spins on CPU hints: a spinning waiter keeps its core from
/// the thread it waits for. Bounded: an idle waiter parks after [`YIELDS`] rounds
/// (some tens of microseconds). Under loom it says "park" at once: a model explores
/// the park path, and yielding would only multiply its states.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    round: u32,
}

/// Rounds a waiter yields before it parks.
const YIELDS: u32 = 128;

impl Backoff {
    pub(crate) const fn new() -> Self {
        Backoff { round: 0 }
    }

    /// Waits one round; `false` (without waiting) once the caller should park.
    #[inline]
    pub(crate) fn snooze(&mut self) -> bool {
        if cfg!(loom) || self.round >= YIELDS {
            return false;
        }
        self.round += 1;
        std::thread::yield_now();
        true
    }
}
