//! The composed resilience stack through the public API.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use corral::leak::LeakCheck;
use corral::{
    breaker::State,
    cancel::CancelReason,
    clock::{Clock, ManualClock},
    resilience::ResilienceError,
    CancelToken, CircuitBreaker, RateLimiter, Resilience, Semaphore,
};

const LONG: Duration = Duration::from_secs(30);

#[test]
fn a_failure_is_retried_until_it_succeeds() {
    let stack = Resilience::builder()
        .retries(3)
        .backoff(Duration::ZERO, Duration::ZERO)
        .build()
        .unwrap();
    let mut attempts = 0;
    let value = stack.call(|_| {
        attempts += 1;
        if attempts < 3 {
            Err("flaky")
        } else {
            Ok(attempts)
        }
    });
    assert_eq!(value, Ok(3));
    let stats = stack.stats();
    assert_eq!((stats.calls, stats.succeeded, stats.retries), (1, 1, 2));
}

#[test]
fn exhausted_retries_return_the_last_error_and_the_attempt_count() {
    let stack = Resilience::builder()
        .retries(2)
        .backoff(Duration::ZERO, Duration::ZERO)
        .build()
        .unwrap();
    let mut n = 0;
    let outcome = stack.call(|_| -> Result<(), u32> {
        n += 1;
        Err(n)
    });
    assert_eq!(
        outcome,
        Err(ResilienceError::Inner {
            error: 3,
            attempts: 3
        })
    );
    let stats = stack.stats();
    assert_eq!((stats.failed, stats.refused, stats.retries), (1, 0, 2));
}

#[test]
fn errors_the_retry_predicate_rejects_are_not_retried() {
    let stack = Resilience::builder().retries(5).build().unwrap();
    for _ in 0..10 {
        let mut calls = 0;
        let outcome = stack.call_with(
            &CancelToken::new(),
            |e: &&str| *e != "not found",
            |_| -> Result<(), &str> {
                calls += 1;
                Err("not found")
            },
        );
        assert_eq!(outcome.unwrap_err().into_inner(), Some("not found"));
        assert_eq!(calls, 1);
    }
    assert_eq!(stack.stats().retries, 0);
}

#[derive(Debug, PartialEq)]
enum ApiError {
    NotFound,
    Unavailable,
}

/// A breaker built with `.is_failure(...)` that keeps "not found" out of its count
/// used to open anyway when called through the stack, which judged errors with its
/// own predicate.
#[test]
fn regression_the_breakers_own_failure_predicate_decides_what_counts_for_it() {
    let breaker = Arc::new(
        CircuitBreaker::builder()
            .consecutive_failures(1)
            .is_failure(|e: &ApiError| *e == ApiError::Unavailable)
            .build()
            .unwrap(),
    );
    let stack = Resilience::builder()
        .breaker(breaker.clone())
        .build()
        .unwrap();
    for _ in 0..10 {
        let outcome = stack.call(|_| Err::<(), _>(ApiError::NotFound));
        assert_eq!(outcome.unwrap_err().into_inner(), Some(ApiError::NotFound));
    }
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(breaker.stats().failures, 0);
    let _ = stack.call(|_| Err::<(), _>(ApiError::Unavailable));
    assert_eq!(breaker.state(), State::Open);
}

#[test]
fn the_retry_predicate_and_the_breaker_predicate_decide_separately() {
    // The breaker counts every error; the stack retries only "unavailable".
    let breaker = Arc::new(
        CircuitBreaker::builder()
            .consecutive_failures(3)
            .build()
            .unwrap(),
    );
    let stack = Resilience::builder()
        .breaker(breaker.clone())
        .retries(5)
        .backoff(Duration::ZERO, Duration::ZERO)
        .build()
        .unwrap();
    let mut calls = 0;
    let outcome = stack.call_with(
        &CancelToken::new(),
        |e: &ApiError| *e == ApiError::Unavailable,
        |_| -> Result<(), ApiError> {
            calls += 1;
            Err(ApiError::NotFound)
        },
    );
    assert_eq!(
        outcome,
        Err(ResilienceError::Inner {
            error: ApiError::NotFound,
            attempts: 1
        })
    );
    assert_eq!((calls, breaker.stats().failures), (1, 1));
    let outcome = stack.call_with(
        &CancelToken::new(),
        |e: &ApiError| *e == ApiError::Unavailable,
        |_| -> Result<(), ApiError> { Err(ApiError::Unavailable) },
    );
    // Two more failures open the breaker, which ends the retries.
    assert_eq!(
        outcome,
        Err(ResilienceError::Inner {
            error: ApiError::Unavailable,
            attempts: 2
        })
    );
    assert_eq!(breaker.state(), State::Open);
}

#[test]
fn an_open_breaker_refuses_without_calling() {
    let breaker = Arc::new(
        CircuitBreaker::builder()
            .consecutive_failures(1)
            .build()
            .unwrap(),
    );
    breaker.trip();
    let stack = Resilience::builder()
        .breaker(breaker)
        .retries(3)
        .build()
        .unwrap();
    let called = AtomicBool::new(false);
    let outcome = stack.call(|_| -> Result<(), ()> {
        called.store(true, Ordering::SeqCst);
        Ok(())
    });
    match outcome {
        Err(ResilienceError::BreakerOpen { retry_after }) => assert!(retry_after.is_some()),
        other => panic!("expected BreakerOpen, got {other:?}"),
    }
    assert!(!called.load(Ordering::SeqCst));
    assert_eq!(stack.stats().refused, 1);
}

#[test]
fn a_breaker_that_opens_between_retries_ends_the_call_with_the_last_failure() {
    let breaker = Arc::new(
        CircuitBreaker::builder()
            .consecutive_failures(2)
            .build()
            .unwrap(),
    );
    let stack = Resilience::builder()
        .breaker(breaker.clone())
        .retries(10)
        .backoff(Duration::ZERO, Duration::ZERO)
        .build()
        .unwrap();
    let outcome = stack.call(|_| -> Result<(), &str> { Err("down") });
    assert_eq!(
        outcome,
        Err(ResilienceError::Inner {
            error: "down",
            attempts: 2
        })
    );
    assert_eq!(breaker.state(), State::Open);
}

#[test]
fn a_full_bulkhead_waits_only_until_the_deadline() {
    let bulkhead = Arc::new(Semaphore::new(1));
    let held = bulkhead.try_acquire().unwrap();
    let stack = Resilience::builder()
        .bulkhead(bulkhead.clone())
        .timeout(Duration::from_millis(20))
        .build()
        .unwrap();
    let outcome = stack.call(|_| -> Result<(), ()> { panic!("must not run") });
    assert_eq!(outcome, Err(ResilienceError::DeadlineExceeded));
    drop(held);
    bulkhead.close();
    let outcome = stack.call(|_| -> Result<(), ()> { panic!("must not run") });
    assert_eq!(outcome, Err(ResilienceError::BulkheadClosed));
}

#[test]
fn the_bulkhead_bounds_concurrent_attempts_and_the_counts_add_up() {
    let _check = LeakCheck::new();
    let stack = Resilience::builder()
        .bulkhead(Arc::new(Semaphore::new(2)))
        .retries(1)
        .backoff(Duration::ZERO, Duration::ZERO)
        .build()
        .unwrap();
    let in_flight = AtomicUsize::new(0);
    let high = AtomicUsize::new(0);
    let attempts = AtomicUsize::new(0);
    corral::scope(|s| {
        for t in 0..4 {
            let (stack, in_flight, high, attempts) = (&stack, &in_flight, &high, &attempts);
            s.spawn(move || {
                for i in 0..300 {
                    let mut first = true;
                    let outcome = stack.call(|_| {
                        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        high.fetch_max(now, Ordering::SeqCst);
                        attempts.fetch_add(1, Ordering::SeqCst);
                        thread::yield_now();
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        // Every 7th call fails once, then succeeds on its retry.
                        let fail = first && (t * 300 + i) % 7 == 0;
                        first = false;
                        if fail {
                            Err(())
                        } else {
                            Ok(())
                        }
                    });
                    assert_eq!(outcome, Ok(()));
                }
            });
        }
    });
    assert!(high.load(Ordering::SeqCst) <= 2, "bulkhead exceeded");
    let stats = stack.stats();
    let failed_once = (0..1200).filter(|n| n % 7 == 0).count() as u64;
    assert_eq!((stats.calls, stats.succeeded), (1200, 1200));
    assert_eq!(stats.retries, failed_once);
    assert_eq!(attempts.load(Ordering::SeqCst) as u64, 1200 + failed_once);
}

#[test]
fn the_closure_gets_the_deadline_and_a_late_backoff_is_not_slept() {
    let stack = Resilience::builder()
        .timeout(Duration::from_millis(30))
        .retries(3)
        .backoff(Duration::from_secs(60), Duration::from_secs(60))
        .build()
        .unwrap();
    let started = Instant::now();
    let outcome = stack.call(|token| -> Result<(), CancelReason> {
        // A cooperative call: it stops when its token does.
        Err(token
            .wait_timeout(LONG)
            .expect("the deadline cancels the token"))
    });
    assert_eq!(
        outcome,
        Err(ResilienceError::Inner {
            error: CancelReason::DeadlineExceeded,
            attempts: 1
        })
    );
    assert!(started.elapsed() < LONG, "the 60 s backoff was not slept");
}

#[test]
fn a_cancelled_caller_token_stops_the_call_before_it_starts() {
    let stack = Resilience::builder().build().unwrap();
    let token = CancelToken::new();
    token.cancel();
    let outcome = stack.call_cancellable(&token, |_| -> Result<(), ()> { panic!("must not run") });
    assert_eq!(
        outcome,
        Err(ResilienceError::Cancelled(CancelReason::Cancelled))
    );
}

/// A clock whose sleeps return at once, after moving its own time to the deadline:
/// it records every wait the stack asks for, with no thread and no race.
#[derive(Debug, Clone)]
struct RecordingClock {
    base: Instant,
    state: Arc<Mutex<(Duration, Vec<Duration>)>>,
}

impl RecordingClock {
    fn new() -> Self {
        RecordingClock {
            base: Instant::now(),
            state: Arc::new(Mutex::new((Duration::ZERO, Vec::new()))),
        }
    }

    fn waits(&self) -> Vec<Duration> {
        self.state.lock().unwrap().1.clone()
    }
}

impl Clock for RecordingClock {
    fn now(&self) -> Instant {
        self.base + self.state.lock().unwrap().0
    }

    fn sleep_until(&self, deadline: Instant, _cancel: Option<&CancelToken>) -> bool {
        let mut state = self.state.lock().unwrap();
        let now = self.base + state.0;
        state.1.push(deadline.saturating_duration_since(now));
        state.0 = deadline - self.base;
        true
    }
}

#[test]
fn backoffs_sleep_on_the_stacks_clock_and_double_up_to_the_cap() {
    let clock = RecordingClock::new();
    let stack = Resilience::builder()
        .retries(5)
        .backoff(Duration::from_secs(1), Duration::from_secs(5))
        .clock(clock.clone())
        .build()
        .unwrap();
    let outcome = stack.call(|_| -> Result<(), ()> { Err(()) });
    assert_eq!(outcome.unwrap_err().into_inner(), Some(()));
    let secs = [1, 2, 4, 5, 5].map(Duration::from_secs);
    assert_eq!(clock.waits(), secs);
}

#[test]
fn jittered_backoffs_stay_below_the_computed_wait() {
    let clock = RecordingClock::new();
    let stack = Resilience::builder()
        .retries(6)
        .backoff(Duration::from_secs(1), Duration::from_secs(4))
        .jitter(true)
        .clock(clock.clone())
        .build()
        .unwrap();
    assert!(stack.call(|_| -> Result<(), ()> { Err(()) }).is_err());
    let waits = clock.waits();
    assert_eq!(waits.len(), 6);
    for (wait, cap) in waits.iter().zip([1, 2, 4, 4, 4, 4]) {
        assert!(*wait <= Duration::from_secs(cap), "{waits:?}");
    }
    // Unjittered, the waits sum to 19 s; six uniform draws summing to 17 s or more
    // is vanishingly unlikely (the expected sum is 9.5 s).
    let total: Duration = waits.iter().sum();
    assert!(total < Duration::from_secs(17), "not jittered: {waits:?}");
}

#[test]
fn a_rate_limit_slot_past_the_deadline_refuses_at_once() {
    let clock = ManualClock::new();
    let limiter = Arc::new(
        RateLimiter::per_second(1)
            .burst(1)
            .clock(clock.clone())
            .build()
            .unwrap(),
    );
    let stack = Resilience::builder()
        .rate_limiter(limiter)
        .timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    assert_eq!(stack.call(|_| Ok::<_, ()>(1)), Ok(1));
    let outcome = stack.call(|_| -> Result<(), ()> { panic!("must not run") });
    assert_eq!(
        outcome,
        Err(ResilienceError::RateLimited {
            retry_after: Some(Duration::from_secs(1))
        })
    );
    assert_eq!(stack.stats().rate_limited, 1);
    clock.advance(Duration::from_secs(1));
    assert_eq!(stack.call(|_| Ok::<_, ()>(2)), Ok(2));
}

#[test]
fn bad_settings_name_the_field() {
    let err = Resilience::builder()
        .timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "timeout");
    let err = Resilience::builder().retries(u32::MAX).build().unwrap_err();
    assert_eq!((err.field(), err.value()), ("retries", "4294967295"));
    let err = Resilience::builder()
        .backoff(Duration::from_secs(2), Duration::from_secs(1))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "backoff");
}

#[test]
fn a_token_a_call_kept_or_cancelled_is_never_handed_to_the_next_call() {
    let stack = Resilience::builder().build().unwrap();
    let mut kept = None;
    stack
        .call(|token| {
            kept = Some(token.clone());
            Ok::<_, ()>(())
        })
        .unwrap();
    let kept = kept.unwrap();
    stack
        .call(|token| {
            assert!(!token.same_as(&kept), "a token someone holds was reused");
            token.cancel(); // the call cancels its own token
            Ok::<_, ()>(())
        })
        .unwrap();
    stack
        .call(|token| {
            assert!(!token.is_cancelled(), "a cancelled token was reused");
            Ok::<_, ()>(())
        })
        .unwrap();
    kept.cancel();
    stack
        .call(|token| {
            assert!(!token.is_cancelled());
            Ok::<_, ()>(())
        })
        .unwrap();
}

#[test]
fn the_stack_is_shared_across_threads() {
    fn both<T: Send + Sync>() {}
    both::<Resilience>();
    both::<corral::resilience::ResilienceBuilder>();
    both::<ResilienceError<String>>();
    both::<corral::resilience::ResilienceStats>();
}

#[test]
fn a_call_refused_by_every_layer_reports_the_first_refusal_and_never_runs() {
    let bulkhead = Arc::new(Semaphore::new(1));
    bulkhead.close();
    let limiter = Arc::new(
        RateLimiter::per_second(1)
            .burst(1)
            .clock(ManualClock::new())
            .build()
            .unwrap(),
    );
    assert!(limiter.check().is_ok()); // the only slot is used
    let breaker = Arc::new(CircuitBreaker::builder().build().unwrap());
    breaker.trip();
    let stack = Resilience::builder()
        .bulkhead(bulkhead)
        .rate_limiter(limiter)
        .breaker(breaker)
        .timeout(Duration::from_millis(20))
        .retries(3)
        .build()
        .unwrap();
    let outcome = stack.call(|_| -> Result<(), ()> { panic!("must not run") });
    assert_eq!(outcome, Err(ResilienceError::BulkheadClosed));
    let stats = stack.stats();
    assert_eq!((stats.calls, stats.refused, stats.retries), (1, 1, 0));
}

#[test]
fn a_panicking_retry_predicate_releases_the_permit_after_the_breaker_recorded_the_failure() {
    let bulkhead = Arc::new(Semaphore::new(1));
    let breaker = Arc::new(
        CircuitBreaker::builder()
            .consecutive_failures(1)
            .build()
            .unwrap(),
    );
    let stack = Resilience::builder()
        .bulkhead(bulkhead.clone())
        .breaker(breaker.clone())
        .retries(1)
        .build()
        .unwrap();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        stack.call_with(
            &CancelToken::new(),
            |_: &&str| panic!("predicate failed"),
            |_| Err::<(), _>("down"),
        )
    }));
    assert!(caught.is_err());
    assert_eq!(bulkhead.available(), 1);
    assert_eq!(breaker.state(), State::Open);
}

#[test]
fn a_stack_called_from_inside_its_own_closure_is_bounded_by_its_timeout() {
    let stack = Resilience::builder()
        .bulkhead(Arc::new(Semaphore::new(1)))
        .timeout(Duration::from_millis(20))
        .build()
        .unwrap();
    let outcome = stack.call(|_| {
        // The only permit is held by this attempt: the nested call waits for it until
        // the deadline, then is refused.
        Ok::<_, ()>(stack.call(|_| Ok::<_, ()>(1)))
    });
    assert_eq!(outcome, Ok(Err(ResilienceError::DeadlineExceeded)));
    // With a permit to spare, nesting works.
    let roomy = Resilience::builder()
        .bulkhead(Arc::new(Semaphore::new(2)))
        .build()
        .unwrap();
    assert_eq!(
        roomy.call(|_| Ok::<_, ()>(roomy.call(|_| Ok::<_, ()>(2)))),
        Ok(Ok(2))
    );
}
