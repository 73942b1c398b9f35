//! Bad-input rows for `breaker`: every builder field and every duration the breaker
//! takes, with zero, maximum and malformed values.

use corral::{
    breaker::{BreakerBuilder, BreakerError, State, Window},
    clock::ManualClock,
    CircuitBreaker,
};
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);

fn builder(clock: &ManualClock) -> BreakerBuilder {
    CircuitBreaker::builder().clock(clock.clone())
}

/// `build()` fails naming `field` and the rejected `value`.
fn rejected(b: BreakerBuilder, field: &str, value: &str) {
    let err = b.build().unwrap_err();
    assert_eq!((err.field(), err.value()), (field, value), "{err}");
}

fn fail(b: &CircuitBreaker) -> Result<(), BreakerError<&'static str>> {
    b.call(|| Err("down"))
}

fn ok(b: &CircuitBreaker) -> Result<(), BreakerError<&'static str>> {
    b.call(|| Ok(()))
}

// ---- consecutive_failures --------------------------------------------------------------

#[test]
fn breaker_consecutive_failures_zero_is_a_config_error() {
    rejected(
        CircuitBreaker::builder().consecutive_failures(0),
        "consecutive_failures",
        "0",
    );
}

#[test]
fn breaker_consecutive_failures_u32_max_is_accepted_and_counts_without_wrapping() {
    let b = CircuitBreaker::builder()
        .consecutive_failures(u32::MAX)
        .build()
        .unwrap();
    for _ in 0..1_000 {
        let _ = fail(&b);
    }
    let stats = b.stats();
    assert_eq!(
        (stats.state, stats.consecutive_failures),
        (State::Closed, 1_000)
    );
}

// ---- failure_rate ------------------------------------------------------------------------

#[test]
fn breaker_failure_rate_nan_is_a_config_error() {
    rejected(
        CircuitBreaker::builder().failure_rate(f64::NAN),
        "failure_rate",
        "NaN",
    );
}

#[test]
fn breaker_failure_rate_negative_is_a_config_error() {
    rejected(
        CircuitBreaker::builder().failure_rate(-0.5),
        "failure_rate",
        "-0.5",
    );
}

#[test]
fn breaker_failure_rate_zero_is_a_config_error() {
    rejected(
        CircuitBreaker::builder().failure_rate(0.0),
        "failure_rate",
        "0.0",
    );
}

#[test]
fn breaker_failure_rate_above_one_is_a_config_error() {
    rejected(
        CircuitBreaker::builder().failure_rate(1.5),
        "failure_rate",
        "1.5",
    );
    rejected(
        CircuitBreaker::builder().failure_rate(f64::INFINITY),
        "failure_rate",
        "inf",
    );
}

#[test]
fn breaker_failure_rate_exactly_one_trips_only_when_every_call_fails() {
    let clock = ManualClock::new();
    let b = builder(&clock)
        .failure_rate(1.0)
        .window(Window::Count(4))
        .minimum_calls(4)
        .build()
        .unwrap();
    for _ in 0..3 {
        let _ = fail(&b);
    }
    ok(&b).unwrap();
    for _ in 0..3 {
        let _ = fail(&b);
    }
    assert_eq!(b.state(), State::Closed); // 3 of the last 4 failed
    let _ = fail(&b);
    assert_eq!(b.state(), State::Open);
}

#[test]
fn breaker_failure_rate_smallest_positive_trips_on_the_first_failure_past_the_minimum() {
    let clock = ManualClock::new();
    let b = builder(&clock)
        .failure_rate(f64::MIN_POSITIVE)
        .window(Window::Count(10))
        .minimum_calls(3)
        .build()
        .unwrap();
    ok(&b).unwrap();
    ok(&b).unwrap();
    let _ = fail(&b);
    assert_eq!(b.state(), State::Open);
}

// ---- window ------------------------------------------------------------------------------

#[test]
fn breaker_window_count_zero_is_a_config_error() {
    rejected(
        CircuitBreaker::builder()
            .failure_rate(0.5)
            .window(Window::Count(0)),
        "window",
        "Count(0)",
    );
}

#[test]
fn breaker_window_count_u32_max_is_a_config_error() {
    rejected(
        CircuitBreaker::builder()
            .failure_rate(0.5)
            .window(Window::Count(u32::MAX)),
        "window",
        "Count(4294967295)",
    );
    let above = BreakerBuilder::MAX_COUNT_WINDOW + 1;
    rejected(
        CircuitBreaker::builder()
            .failure_rate(0.5)
            .window(Window::Count(above)),
        "window",
        &format!("Count({above})"),
    );
}

#[test]
fn breaker_window_count_at_the_maximum_is_accepted() {
    let b = CircuitBreaker::builder()
        .failure_rate(0.5)
        .window(Window::Count(BreakerBuilder::MAX_COUNT_WINDOW))
        .build()
        .unwrap();
    let _ = fail(&b);
    assert_eq!(b.stats().window_failures, 1);
}

#[test]
fn breaker_window_time_zero_is_a_config_error() {
    rejected(
        CircuitBreaker::builder()
            .failure_rate(0.5)
            .window(Window::Time(Duration::ZERO)),
        "window",
        "Time(0ns)",
    );
    rejected(
        CircuitBreaker::builder()
            .failure_rate(0.5)
            .window(Window::Time(Duration::from_nanos(9))),
        "window",
        "Time(9ns)",
    );
}

#[test]
fn breaker_window_time_duration_max_keeps_outcomes_and_never_panics() {
    let clock = ManualClock::new();
    let b = builder(&clock)
        .failure_rate(0.5)
        .minimum_calls(4)
        .window(Window::Time(Duration::MAX))
        .build()
        .unwrap();
    ok(&b).unwrap();
    ok(&b).unwrap();
    let _ = fail(&b);
    clock.advance(Duration::from_secs(1 << 30));
    assert_eq!(b.stats().window_calls, 3);
    let _ = fail(&b);
    assert_eq!(b.state(), State::Open);
    clock.advance(Duration::MAX); // the horizon: no overflow anywhere
    let _ = b.stats();
}

// ---- minimum_calls ---------------------------------------------------------------------------

#[test]
fn breaker_minimum_calls_zero_is_a_config_error() {
    rejected(
        CircuitBreaker::builder().failure_rate(0.5).minimum_calls(0),
        "minimum_calls",
        "0",
    );
}

#[test]
fn breaker_minimum_calls_u32_max_above_a_count_window_is_a_config_error() {
    rejected(
        CircuitBreaker::builder()
            .failure_rate(0.5)
            .window(Window::Count(100))
            .minimum_calls(u32::MAX),
        "minimum_calls",
        "4294967295",
    );
}

#[test]
fn breaker_minimum_calls_u32_max_on_a_time_window_never_evaluates_a_rate() {
    let clock = ManualClock::new();
    let b = builder(&clock)
        .failure_rate(0.1)
        .window(Window::Time(10 * SEC))
        .minimum_calls(u32::MAX)
        .build()
        .unwrap();
    for _ in 0..100 {
        let _ = fail(&b);
    }
    assert_eq!(b.state(), State::Closed);
}

// ---- slow_call ---------------------------------------------------------------------------

#[test]
fn breaker_slow_call_duration_zero_is_a_config_error() {
    rejected(
        CircuitBreaker::builder().slow_call(Duration::ZERO, 0.5),
        "slow_call.duration",
        "0ns",
    );
}

#[test]
fn breaker_slow_call_duration_max_makes_no_call_slow() {
    let clock = ManualClock::new();
    let b = builder(&clock)
        .slow_call(Duration::MAX, 0.5)
        .window(Window::Count(2))
        .build()
        .unwrap();
    for _ in 0..4 {
        b.call(|| {
            clock.advance(Duration::MAX);
            Ok::<_, ()>(())
        })
        .unwrap();
    }
    assert_eq!(b.stats().slow_calls, 0);
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn breaker_slow_call_rate_nan_zero_negative_or_above_one_is_a_config_error() {
    for (rate, shown) in [
        (f64::NAN, "NaN"),
        (0.0, "0.0"),
        (-1.0, "-1.0"),
        (1.01, "1.01"),
    ] {
        rejected(
            CircuitBreaker::builder().slow_call(SEC, rate),
            "slow_call.rate",
            shown,
        );
    }
}

// ---- open_for and backoff ------------------------------------------------------------------

#[test]
fn breaker_open_for_zero_is_a_config_error() {
    rejected(
        CircuitBreaker::builder().open_for(Duration::ZERO),
        "open_for",
        "0ns",
    );
}

#[test]
fn breaker_open_for_duration_max_stays_open_until_reset() {
    let clock = ManualClock::new();
    let b = builder(&clock).open_for(Duration::MAX).build().unwrap();
    b.trip();
    clock.advance(Duration::MAX);
    assert_eq!(b.state(), State::Open);
    assert_eq!(ok(&b).unwrap_err().retry_after(), Some(Duration::MAX));
    b.reset();
    ok(&b).unwrap();
}

#[test]
fn breaker_backoff_multiplier_nan_infinite_or_below_one_is_a_config_error() {
    let cases = [
        (f64::NAN, "NaN"),
        (f64::INFINITY, "inf"),
        (0.5, "0.5"),
        (-2.0, "-2.0"),
        (0.0, "0.0"),
    ];
    for (multiplier, shown) in cases {
        rejected(
            CircuitBreaker::builder().backoff(multiplier, 60 * SEC),
            "backoff.multiplier",
            shown,
        );
    }
}

#[test]
fn breaker_backoff_max_below_open_for_is_a_config_error() {
    rejected(
        CircuitBreaker::builder()
            .open_for(10 * SEC)
            .backoff(2.0, SEC),
        "backoff.max",
        "1s",
    );
    rejected(
        CircuitBreaker::builder()
            .open_for(10 * SEC)
            .backoff(2.0, Duration::ZERO),
        "backoff.max",
        "0ns",
    );
}

#[test]
fn breaker_backoff_huge_multiplier_and_duration_max_saturates_at_the_horizon() {
    let clock = ManualClock::new();
    let b = builder(&clock)
        .consecutive_failures(1)
        .open_for(SEC)
        .backoff(1e300, Duration::MAX)
        .build()
        .unwrap();
    b.trip();
    clock.advance(SEC);
    let _ = fail(&b); // the trial fails: reopen, for 1e300 s capped at the horizon
    let stats = b.stats();
    assert_eq!(stats.state, State::Open);
    assert_eq!(stats.open_for, Duration::from_nanos(u64::MAX));
    assert_eq!(ok(&b).unwrap_err().retry_after(), Some(Duration::MAX));
}

#[test]
fn breaker_backoff_multiplier_one_keeps_the_period() {
    let clock = ManualClock::new();
    let b = builder(&clock)
        .open_for(3 * SEC)
        .backoff(1.0, 3 * SEC)
        .build()
        .unwrap();
    b.trip();
    clock.advance(3 * SEC);
    let _ = fail(&b);
    assert_eq!(b.stats().open_for, 3 * SEC);
}

// ---- half-open -----------------------------------------------------------------------------

#[test]
fn breaker_half_open_calls_zero_is_a_config_error() {
    rejected(
        CircuitBreaker::builder().half_open_calls(0),
        "half_open_calls",
        "0",
    );
}

#[test]
fn breaker_half_open_calls_u32_max_admits_trials_without_overflow() {
    let clock = ManualClock::new();
    let b = builder(&clock)
        .open_for(SEC)
        .half_open_calls(u32::MAX)
        .build()
        .unwrap();
    b.trip();
    clock.advance(SEC);
    let guards: Vec<_> = (0..1_000).map(|_| b.try_acquire().unwrap()).collect();
    assert!(guards.iter().all(|g| g.is_trial()));
    assert_eq!(b.stats().half_open_in_flight, 1_000);
    for g in guards {
        g.success();
    }
    assert_eq!(b.state(), State::HalfOpen); // needs u32::MAX successes to close
}

#[test]
fn breaker_half_open_timeout_zero_is_a_config_error() {
    rejected(
        CircuitBreaker::builder().half_open_timeout(Duration::ZERO),
        "half_open_timeout",
        "0ns",
    );
}

#[test]
fn breaker_half_open_timeout_duration_max_never_times_out() {
    let clock = ManualClock::new();
    let b = builder(&clock)
        .open_for(SEC)
        .half_open_timeout(Duration::MAX)
        .build()
        .unwrap();
    b.trip();
    clock.advance(SEC);
    assert_eq!(b.state(), State::HalfOpen);
    let trial = b.try_acquire().unwrap();
    clock.advance(Duration::from_secs(1 << 40));
    assert_eq!(b.state(), State::HalfOpen);
    trial.success();
    assert_eq!(b.state(), State::Closed);
}

// ---- the clock -----------------------------------------------------------------------------

#[test]
fn breaker_clock_past_the_horizon_keeps_an_open_breaker_open() {
    let clock = ManualClock::new();
    let b = builder(&clock).consecutive_failures(1).build().unwrap();
    clock.advance(Duration::MAX);
    let _ = fail(&b);
    assert_eq!(b.state(), State::Open);
    assert_eq!(
        ok(&b),
        Err(BreakerError::Open {
            retry_after: Duration::MAX
        })
    );
}
