//! Injected time: every decision corral makes by time asks a [`Clock`].
//!
//! Production code uses [`SystemClock`] (the default everywhere). Tests use
//! [`ManualClock`], whose time moves only when the test calls
//! [`advance`](ManualClock::advance), so time-based logic is tested without sleeping.
//! No clock ever starts a thread: time-based state is computed lazily from `now()`.

use std::fmt;
use std::time::{Duration, Instant};

use crate::cancel::CancelToken;
use crate::sync::{time, Arc, AtomicU64, Condvar, Mutex, Ordering};

/// A monotonic source of time that blocking waits can also sleep on.
///
/// Times are [`Instant`]s, so deadlines computed from any clock compare with each other
/// and with the deadlines users pass to `*_deadline` methods.
///
/// # Example
///
/// ```
/// use corral::clock::{Clock, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let start = clock.now();
/// clock.advance(Duration::from_secs(5));
/// assert_eq!(clock.now() - start, Duration::from_secs(5));
/// ```
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time. Never goes backwards.
    fn now(&self) -> Instant;

    /// Blocks the calling thread until `now() >= deadline`, or until `cancel` is
    /// cancelled. Returns `true` when the deadline was reached, `false` when cancelled.
    fn sleep_until(&self, deadline: Instant, cancel: Option<&CancelToken>) -> bool;
}

/// The operating system's monotonic clock ([`Instant::now`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        time::now()
    }

    fn sleep_until(&self, deadline: Instant, cancel: Option<&CancelToken>) -> bool {
        match cancel {
            Some(token) => token.wait_deadline(deadline).is_none(),
            None => loop {
                let now = time::now();
                if now >= deadline {
                    return true;
                }
                std::thread::sleep(deadline - now);
            },
        }
    }
}

/// A clock that moves only when told to: for deterministic tests of time-based logic.
///
/// Clones share the same time. Threads sleeping on it (for example in a rate limiter's
/// `wait`) wake when [`advance`](ManualClock::advance) moves time past their deadline,
/// or when their cancel token is cancelled or reaches its own (real-time) deadline.
///
/// # Example
///
/// ```
/// use corral::clock::{Clock, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let wake_at = clock.now() + Duration::from_millis(10);
/// std::thread::scope(|s| {
///     let sleeper = s.spawn(|| clock.sleep_until(wake_at, None));
///     clock.advance(Duration::from_millis(10));
///     assert!(sleeper.join().unwrap());
/// });
/// ```
#[derive(Clone)]
pub struct ManualClock {
    inner: Arc<ManualInner>,
}

struct ManualInner {
    base: Instant,
    offset_nanos: AtomicU64,
    sleepers: Mutex<()>,
    moved: Condvar,
}

impl ManualClock {
    /// A clock starting at the real current instant, frozen there until advanced.
    pub fn new() -> Self {
        ManualClock {
            inner: Arc::new(ManualInner {
                base: time::now(),
                offset_nanos: AtomicU64::new(0),
                sleepers: Mutex::new(()),
                moved: Condvar::new(),
            }),
        }
    }

    /// Moves time forward by `by` and wakes every sleeper whose deadline has come.
    ///
    /// Time saturates: it never wraps and never goes backwards. A clock can be
    /// advanced by at most `u64::MAX` nanoseconds in all (about 584 years), and
    /// advancing past that leaves it there.
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let _ =
            self.inner
                .offset_nanos
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |offset| {
                    Some(offset.saturating_add(nanos))
                });
        let _guard = self.inner.sleepers.lock();
        self.inner.moved.notify_all();
    }

    /// How far this clock has been advanced since it was created.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.inner.offset_nanos.load(Ordering::Acquire))
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("elapsed", &self.elapsed())
            .finish()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        time::deadline_after(self.inner.base, self.elapsed())
    }

    fn sleep_until(&self, deadline: Instant, cancel: Option<&CancelToken>) -> bool {
        let inner = Arc::clone(&self.inner);
        let _wake = cancel.map(|token| {
            token.on_cancel(move || {
                let _guard = inner.sleepers.lock();
                inner.moved.notify_all();
            })
        });
        let mut guard = self.inner.sleepers.lock();
        loop {
            if self.now() >= deadline {
                return true;
            }
            if cancel.is_some_and(CancelToken::is_cancelled) {
                return false;
            }
            // A token's own deadline is in real time: wake for it too.
            match cancel.and_then(CancelToken::deadline) {
                Some(real_deadline) => {
                    self.inner.moved.wait_until(&mut guard, real_deadline);
                }
                None => self.inner.moved.wait(&mut guard),
            }
        }
    }
}
