//! `BreakerBuilder`: the breaker's configuration, validated by `build()`.

use std::any::Any;
use std::fmt;
use std::time::Duration;

use super::engine::{Config, Engine, FailurePredicate, Metrics, StateCallback};
use super::stripes::BUCKETS;
use super::window::WindowKind;
use super::{CircuitBreaker, State, Window};
use crate::clock::{Clock, SystemClock};
use crate::config::ConfigError;
use crate::timeline::Timeline;

/// Configures a [`CircuitBreaker`]; [`build`](BreakerBuilder::build) validates.
///
/// Defaults: trip after 5 consecutive failures, stay open 30 s (no backoff), admit 1
/// half-open trial, give up on a half-open state after 60 s, every `Err` is a
/// failure, [`SystemClock`]. Choosing [`failure_rate`](Self::failure_rate) or
/// [`slow_call`](Self::slow_call) replaces the consecutive default; both kinds of
/// trigger may be combined (whichever fires first trips the breaker). Rates are
/// computed over [`window`](Self::window) (default `Window::Count(100)`) once it
/// holds [`minimum_calls`](Self::minimum_calls) (default 10, or the count window's
/// size if smaller).
///
/// # Example
///
/// ```
/// use corral::{CircuitBreaker, breaker::Window};
/// use std::time::Duration;
///
/// let breaker = CircuitBreaker::builder()
///     .failure_rate(0.5)
///     .window(Window::Time(Duration::from_secs(10)))
///     .minimum_calls(20)
///     .slow_call(Duration::from_millis(500), 0.8)
///     .open_for(Duration::from_secs(5))
///     .backoff(2.0, Duration::from_secs(60))
///     .half_open_calls(3)
///     .build()?;
/// # let _ = breaker;
/// # Ok::<(), corral::ConfigError>(())
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct BreakerBuilder {
    consecutive: Option<u32>,
    failure_rate: Option<f64>,
    window: Window,
    minimum_calls: Option<u32>,
    slow: Option<(Duration, f64)>,
    open_for: Duration,
    backoff: Option<(f64, Duration)>,
    half_open_calls: u32,
    half_open_timeout: Duration,
    is_failure: Option<FailurePredicate>,
    on_state_change: Option<StateCallback>,
    /// `None`: [`SystemClock`]. The timeline is built where the clock's type is known,
    /// so a `SystemClock` passed to [`clock`](Self::clock) also gets the TSC path.
    timeline: Option<Box<Timeline<dyn Clock>>>,
    name: Option<std::sync::Arc<str>>,
}

impl fmt::Debug for BreakerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerBuilder")
            .field("consecutive_failures", &self.consecutive)
            .field("failure_rate", &self.failure_rate)
            .field("window", &self.window)
            .field("minimum_calls", &self.minimum_calls)
            .field("slow_call", &self.slow)
            .field("open_for", &self.open_for)
            .field("backoff", &self.backoff)
            .field("half_open_calls", &self.half_open_calls)
            .field("half_open_timeout", &self.half_open_timeout)
            .field("is_failure", &self.is_failure.is_some())
            .field("on_state_change", &self.on_state_change.is_some())
            .field("clock", &self.timeline.as_ref().map(|t| t.clock()))
            .field("name", &self.name)
            .finish()
    }
}

impl Default for BreakerBuilder {
    fn default() -> Self {
        BreakerBuilder {
            consecutive: None,
            failure_rate: None,
            window: Window::Count(100),
            minimum_calls: None,
            slow: None,
            open_for: Duration::from_secs(30),
            backoff: None,
            half_open_calls: 1,
            half_open_timeout: Duration::from_secs(60),
            is_failure: None,
            on_state_change: None,
            timeline: None,
            name: None,
        }
    }
}

fn check_fraction(field: &'static str, value: f64) -> Result<f64, ConfigError> {
    if value > 0.0 && value <= 1.0 {
        Ok(value)
    } else {
        Err(ConfigError::new(
            field,
            value,
            "must be greater than 0 and at most 1",
        ))
    }
}

/// The longest duration the breaker keeps: `u64::MAX` nanoseconds (about 584 years).
/// Longer durations given to the builder mean the same as this one.
const LONGEST: Duration = Duration::from_nanos(u64::MAX);

impl BreakerBuilder {
    /// The largest [`Window::Count`] size. A count window keeps the position of each
    /// failure and slow call it holds (up to 16 bytes per call of its size), so its
    /// size is bounded; rates over more calls than this are better taken over a
    /// [`Window::Time`], whose memory does not grow with the traffic.
    ///
    /// ```
    /// use corral::{breaker::{BreakerBuilder, Window}, CircuitBreaker};
    ///
    /// let too_big = Window::Count(BreakerBuilder::MAX_COUNT_WINDOW + 1);
    /// let err = CircuitBreaker::builder().failure_rate(0.5).window(too_big).build().unwrap_err();
    /// assert_eq!(err.field(), "window");
    /// ```
    pub const MAX_COUNT_WINDOW: u32 = 1 << 20;

    /// A builder with the defaults listed on the type.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trips after `n` failures in a row in the closed state; any success resets the
    /// run. `n` must be at least 1.
    ///
    /// ```
    /// let breaker = corral::CircuitBreaker::builder().consecutive_failures(3).build()?;
    /// for _ in 0..3 {
    ///     let _ = breaker.call(|| Err::<(), _>("down"));
    /// }
    /// assert_eq!(breaker.state(), corral::breaker::State::Open);
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.consecutive = Some(n);
        self
    }

    /// Trips when at least `threshold` (a fraction in `(0, 1]`) of the calls in the
    /// [`window`](Self::window) failed, once it holds
    /// [`minimum_calls`](Self::minimum_calls).
    pub fn failure_rate(mut self, threshold: f64) -> Self {
        self.failure_rate = Some(threshold);
        self
    }

    /// The window rates are computed over: the last `n` calls, or the calls of the
    /// last `d` (in ten buckets of `d / 10`: an outcome stops counting when its bucket
    /// leaves the window, never later than `d` after it was recorded). A count window
    /// holds at most [`MAX_COUNT_WINDOW`](Self::MAX_COUNT_WINDOW) calls; a time window
    /// longer than 584 years keeps its outcomes until the breaker closes again.
    pub fn window(mut self, window: Window) -> Self {
        self.window = window;
        self
    }

    /// Rates are not evaluated before the window holds `m` calls (at least 1, at most
    /// a count window's size).
    pub fn minimum_calls(mut self, m: u32) -> Self {
        self.minimum_calls = Some(m);
        self
    }

    /// A call taking longer than `duration` is slow (whatever its outcome); trips when
    /// at least `rate_threshold` (in `(0, 1]`) of the window's calls were slow. A slow
    /// half-open trial counts as a failed trial.
    pub fn slow_call(mut self, duration: Duration, rate_threshold: f64) -> Self {
        self.slow = Some((duration, rate_threshold));
        self
    }

    /// How long the breaker stays open before it admits half-open trials (positive).
    ///
    /// Durations are kept in nanoseconds, up to `u64::MAX` (about 584 years); a longer
    /// one means the same. An open period that would end past that horizon (counted
    /// from the breaker's build) lasts until [`reset`](CircuitBreaker::reset), and the
    /// refusal's `retry_after` is then `Duration::MAX`.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let breaker = corral::CircuitBreaker::builder().open_for(Duration::MAX).build()?;
    /// breaker.trip();
    /// let refused = breaker.call(|| Ok::<_, ()>(())).unwrap_err();
    /// assert_eq!(refused.retry_after(), Some(Duration::MAX)); // until reset
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn open_for(mut self, d: Duration) -> Self {
        self.open_for = d;
        self
    }

    /// Each time a half-open state fails, the next open period is the previous one
    /// times `multiplier` (at least 1), capped at `max` (at least
    /// [`open_for`](Self::open_for)). Closing resets it to `open_for`. The product
    /// saturates: it never wraps, never exceeds `max` (itself taken as at most 584
    /// years, like every duration here) and never shrinks the period.
    pub fn backoff(mut self, multiplier: f64, max: Duration) -> Self {
        self.backoff = Some((multiplier, max));
        self
    }

    /// At most `k` (at least 1) trial calls are in flight in the half-open state;
    /// `k` successful trials close the breaker, any failed one opens it again.
    pub fn half_open_calls(mut self, k: u32) -> Self {
        self.half_open_calls = k;
        self
    }

    /// A half-open state whose trials have not closed it within `d` (positive) opens
    /// again (with backoff), so trials that never report cannot wedge the breaker.
    /// Trials still out then give up their slots (their late reports are ignored), so
    /// keep `d` above the slowest call you expect, or more than `half_open_calls`
    /// probes may run at once.
    pub fn half_open_timeout(mut self, d: Duration) -> Self {
        self.half_open_timeout = d;
        self
    }

    /// Which errors count as failures; an error the predicate rejects counts as a
    /// success. [`CircuitBreaker::call`] applies it to errors of type `E`; errors of
    /// any other type count as failures. A panicking predicate counts the error as a
    /// failure (and the panic in
    /// [`BreakerStats::user_panics`](crate::breaker::BreakerStats::user_panics)).
    ///
    /// ```
    /// #[derive(Debug)]
    /// enum ApiError { NotFound, Unavailable }
    ///
    /// let breaker = corral::CircuitBreaker::builder()
    ///     .consecutive_failures(1)
    ///     .is_failure(|e: &ApiError| matches!(e, ApiError::Unavailable))
    ///     .build()?;
    /// let _ = breaker.call(|| Err::<(), _>(ApiError::NotFound)); // the caller's fault
    /// assert_eq!(breaker.state(), corral::breaker::State::Closed);
    /// let _ = breaker.call(|| Err::<(), _>(ApiError::Unavailable));
    /// assert_eq!(breaker.state(), corral::breaker::State::Open);
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn is_failure<E: 'static>(
        mut self,
        predicate: impl Fn(&E) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.is_failure = Some(Box::new(move |error: &dyn Any| {
            match error.downcast_ref::<E>() {
                Some(error) => predicate(error),
                None => true,
            }
        }));
        self
    }

    /// A name for the breaker, shown in its `Debug` and as the `name` of its events
    /// and metrics (features `tracing`, `metrics`).
    ///
    /// ```
    /// let breaker = corral::CircuitBreaker::builder().name("payments").build()?;
    /// assert_eq!(breaker.name(), Some("payments"));
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(std::sync::Arc::from(name.into()));
        self
    }

    /// Called with `(from, to)` after every state change, outside the breaker's lock:
    /// the callback may call back into the breaker ([`state`](CircuitBreaker::state),
    /// [`stats`](CircuitBreaker::stats), [`call`](CircuitBreaker::call),
    /// [`trip`](CircuitBreaker::trip), [`reset`](CircuitBreaker::reset)...) without
    /// deadlock; a change it makes fires the callback again, nested, on the same
    /// thread. It runs on the thread whose call caused the change. Time-based changes
    /// are noticed lazily, by the next call, `state()` or `stats()`.
    ///
    /// A panicking callback is caught, counted in
    /// [`BreakerStats::user_panics`](crate::breaker::BreakerStats::user_panics), and does not
    /// stop the state change or the callbacks for the changes after it.
    ///
    /// Changes made by different threads may reach the callback out of order (it runs
    /// after the lock is released); read [`state`](CircuitBreaker::state) for the
    /// current one.
    pub fn on_state_change(
        mut self,
        callback: impl Fn(State, State) + Send + Sync + 'static,
    ) -> Self {
        self.on_state_change = Some(Box::new(callback));
        self
    }

    /// The clock every time-based decision reads ([`ManualClock`](crate::clock::ManualClock)
    /// in tests).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.timeline = Some(Box::new(Timeline::new(clock)));
        self
    }

    /// Validates the configuration and builds the breaker.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field and the value: `consecutive_failures`,
    /// `minimum_calls` or `half_open_calls` of 0; `failure_rate` or `slow_call.rate`
    /// outside `(0, 1]` (or NaN); `window` of `Count(0)` or a time under 10 ns;
    /// `minimum_calls` above a count window's size; a count window above
    /// [`MAX_COUNT_WINDOW`](Self::MAX_COUNT_WINDOW); a zero `open_for`,
    /// `half_open_timeout` or `slow_call.duration`; `backoff.multiplier` below 1 or not
    /// finite; `backoff.max` below `open_for`.
    ///
    /// ```
    /// let err = corral::CircuitBreaker::builder().failure_rate(1.5).build().unwrap_err();
    /// assert_eq!(err.field(), "failure_rate");
    /// assert_eq!(err.value(), "1.5");
    /// ```
    pub fn build(self) -> Result<CircuitBreaker, ConfigError> {
        if self.consecutive == Some(0) {
            return Err(ConfigError::new(
                "consecutive_failures",
                0u32,
                "must be at least 1",
            ));
        }
        let failure_rate = self
            .failure_rate
            .map(|t| check_fraction("failure_rate", t))
            .transpose()?;
        let slow = match self.slow {
            None => None,
            Some((duration, rate)) => {
                if duration.is_zero() {
                    return Err(ConfigError::new(
                        "slow_call.duration",
                        duration,
                        "must be positive",
                    ));
                }
                Some((
                    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX),
                    check_fraction("slow_call.rate", rate)?,
                ))
            }
        };
        let window = match self.window {
            Window::Count(0) => {
                return Err(ConfigError::new(
                    "window",
                    self.window,
                    "count must be at least 1",
                ))
            }
            Window::Count(n) if n > Self::MAX_COUNT_WINDOW => {
                return Err(ConfigError::new(
                    "window",
                    self.window,
                    "count must be at most BreakerBuilder::MAX_COUNT_WINDOW",
                ))
            }
            Window::Count(n) => WindowKind::Count(u64::from(n)),
            Window::Time(d) if d.as_nanos() < BUCKETS as u128 => {
                return Err(ConfigError::new(
                    "window",
                    self.window,
                    "time must be at least 10 ns",
                ))
            }
            Window::Time(d) => WindowKind::Time {
                width: u64::try_from(d.as_nanos() / BUCKETS as u128).unwrap_or(u64::MAX),
            },
        };
        let minimum_calls = match (self.minimum_calls, self.window) {
            (Some(0), _) => {
                return Err(ConfigError::new(
                    "minimum_calls",
                    0u32,
                    "must be at least 1",
                ))
            }
            (Some(m), Window::Count(n)) if m > n => {
                return Err(ConfigError::new(
                    "minimum_calls",
                    m,
                    "must not exceed the count window",
                ))
            }
            (Some(m), _) => m,
            (None, Window::Count(n)) => n.min(10),
            (None, Window::Time(_)) => 10,
        };
        if self.open_for.is_zero() {
            return Err(ConfigError::new(
                "open_for",
                self.open_for,
                "must be positive",
            ));
        }
        if let Some((multiplier, max)) = self.backoff {
            if !(multiplier.is_finite() && multiplier >= 1.0) {
                return Err(ConfigError::new(
                    "backoff.multiplier",
                    multiplier,
                    "must be finite and at least 1",
                ));
            }
            if max < self.open_for {
                return Err(ConfigError::new(
                    "backoff.max",
                    max,
                    "must be at least open_for",
                ));
            }
        }
        if self.half_open_calls == 0 {
            return Err(ConfigError::new(
                "half_open_calls",
                0u32,
                "must be at least 1",
            ));
        }
        if self.half_open_timeout.is_zero() {
            return Err(ConfigError::new(
                "half_open_timeout",
                self.half_open_timeout,
                "must be positive",
            ));
        }
        let rated = failure_rate.is_some() || slow.is_some();
        let consecutive = match self.consecutive {
            Some(n) => Some(u64::from(n)),
            None if rated => None,
            None => Some(5),
        };
        let config = Config {
            consecutive,
            failure_rate,
            slow,
            window: if rated { window } else { WindowKind::None },
            minimum_calls: u64::from(minimum_calls),
            open_for: self.open_for.min(LONGEST),
            backoff: self
                .backoff
                .map(|(multiplier, max)| (multiplier, max.min(LONGEST))),
            half_open_calls: self.half_open_calls,
            half_open_timeout: u64::try_from(self.half_open_timeout.as_nanos()).unwrap_or(u64::MAX),
            is_failure: self.is_failure,
            on_state_change: self.on_state_change,
            timeline: self
                .timeline
                .unwrap_or_else(|| Box::new(Timeline::new(SystemClock))),
            metrics: Metrics::new(self.name.as_deref()),
            name: self.name,
        };
        Ok(CircuitBreaker {
            engine: Engine::new(config),
        })
    }
}
