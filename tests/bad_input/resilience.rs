//! Bad-input rows for `resilience`.

use std::time::{Duration, Instant};

use corral::{clock::ManualClock, resilience::ResilienceError, CancelToken, Resilience};

#[test]
fn resilience_timeout_zero_is_a_config_error() {
    let err = Resilience::builder()
        .timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "timeout");
}

#[test]
fn resilience_timeout_duration_max_saturates_to_never() {
    let stack = Resilience::builder()
        .timeout(Duration::MAX)
        .build()
        .unwrap();
    let deadline = stack.call(|token| Ok::<_, ()>(token.deadline()));
    let deadline = deadline.unwrap().expect("the token carries a deadline");
    assert!(deadline > Instant::now() + Duration::from_secs(365 * 24 * 3600));
}

#[test]
fn resilience_timeout_duration_max_in_call_cancellable_saturates() {
    let stack = Resilience::builder()
        .timeout(Duration::MAX)
        .build()
        .unwrap();
    assert_eq!(
        stack.call_cancellable(&CancelToken::new(), |_| Ok::<_, ()>(7)),
        Ok(7)
    );
}

#[test]
fn resilience_retries_zero_makes_a_single_attempt() {
    let stack = Resilience::builder().retries(0).build().unwrap();
    let mut runs = 0;
    let outcome = stack.call(|_| {
        runs += 1;
        Err::<(), _>("down")
    });
    assert_eq!(
        outcome,
        Err(ResilienceError::Inner {
            error: "down",
            attempts: 1
        })
    );
    assert_eq!(runs, 1);
}

#[test]
fn resilience_retries_u32_max_is_a_config_error() {
    let err = Resilience::builder().retries(u32::MAX).build().unwrap_err();
    assert_eq!(err.field(), "retries");
    assert_eq!(err.value(), u32::MAX.to_string());
}

#[test]
fn resilience_retries_one_million_is_accepted() {
    assert!(Resilience::builder().retries(1_000_000).build().is_ok());
}

#[test]
fn resilience_backoff_zero_retries_at_once() {
    let stack = Resilience::builder()
        .retries(3)
        .backoff(Duration::ZERO, Duration::ZERO)
        .build()
        .unwrap();
    let outcome = stack.call(|_| Err::<(), _>("down"));
    assert_eq!(
        outcome.unwrap_err(),
        ResilienceError::Inner {
            error: "down",
            attempts: 4
        }
    );
}

#[test]
fn resilience_backoff_initial_above_max_is_a_config_error() {
    let err = Resilience::builder()
        .backoff(Duration::MAX, Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "backoff");
}

#[test]
fn resilience_backoff_duration_max_saturates_and_the_token_ends_it() {
    let stack = Resilience::builder()
        .retries(1)
        .backoff(Duration::MAX, Duration::MAX)
        .build()
        .unwrap();
    let caller = CancelToken::new();
    let outcome = stack.call_cancellable(&caller, |token| {
        token.cancel(); // the backoff that follows must end at once
        Err::<(), _>("down")
    });
    assert_eq!(
        outcome.unwrap_err(),
        ResilienceError::Inner {
            error: "down",
            attempts: 1
        }
    );
}

#[test]
fn resilience_backoff_duration_max_with_jitter_saturates() {
    let stack = Resilience::builder()
        .retries(1)
        .backoff(Duration::MAX, Duration::MAX)
        .jitter(true)
        .build()
        .unwrap();
    let caller = CancelToken::new();
    let outcome = stack.call_cancellable(&caller, |token| {
        token.cancel();
        Err::<(), _>("down")
    });
    assert!(matches!(
        outcome,
        Err(ResilienceError::Inner { attempts: 1, .. })
    ));
}

#[test]
fn resilience_backoff_duration_max_on_a_manual_clock_past_its_range_saturates() {
    let clock = ManualClock::new();
    clock.advance(Duration::MAX);
    let stack = Resilience::builder()
        .retries(1)
        .backoff(Duration::MAX, Duration::MAX)
        .clock(clock)
        .build()
        .unwrap();
    let caller = CancelToken::new();
    let outcome = stack.call_cancellable(&caller, |token| {
        token.cancel();
        Err::<(), _>("down")
    });
    assert!(matches!(
        outcome,
        Err(ResilienceError::Inner { attempts: 1, .. })
    ));
}

#[test]
fn resilience_call_with_a_token_whose_deadline_passed_is_refused_before_any_attempt() {
    let stack = Resilience::builder().build().unwrap();
    let expired = CancelToken::with_deadline(Instant::now() - Duration::from_millis(1));
    let outcome =
        stack.call_cancellable(&expired, |_| -> Result<(), ()> { panic!("must not run") });
    assert_eq!(outcome, Err(ResilienceError::DeadlineExceeded));
    assert_eq!(stack.stats().refused, 1);
}

#[test]
fn resilience_call_with_a_zero_timeout_token_is_refused_before_any_attempt() {
    let stack = Resilience::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let expired = CancelToken::with_timeout(Duration::ZERO);
    let outcome = stack.call_with(
        &expired,
        |_: &()| true,
        |_| -> Result<(), ()> { panic!("must not run") },
    );
    assert_eq!(outcome, Err(ResilienceError::DeadlineExceeded));
}

#[test]
fn resilience_isolate_outside_1_to_4096_workers_names_the_field() {
    for workers in [0, 4097, usize::MAX] {
        let err = Resilience::builder().isolate(workers).build().unwrap_err();
        assert_eq!(err.field(), "workers", "{workers}");
    }
}

#[test]
fn retry_budget_settings_out_of_range_name_the_field() {
    use corral::resilience::RetryBudget;
    for ratio in [-0.1, 1000.5, f64::NAN, f64::INFINITY] {
        let err = RetryBudget::builder().ratio(ratio).build().unwrap_err();
        assert_eq!(err.field(), "ratio", "{ratio}");
    }
    for window in [
        Duration::ZERO,
        Duration::from_millis(9),
        Duration::from_secs(3601),
        Duration::MAX,
    ] {
        let err = RetryBudget::builder().window(window).build().unwrap_err();
        assert_eq!(err.field(), "window", "{window:?}");
    }
    assert!(RetryBudget::builder()
        .ratio(0.0)
        .min_per_second(u32::MAX)
        .build()
        .is_ok());
}
