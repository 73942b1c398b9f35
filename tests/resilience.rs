//! The composed resilience stack through the public API.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use corral::leak::LeakCheck;
use corral::{
    CancelReason, CancelToken, CircuitBreaker, ManualClock, RateLimiter, Resilience,
    ResilienceError, Semaphore, State,
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
        Err(ResilienceError::Failed {
            error: 3,
            attempts: 3
        })
    );
    let stats = stack.stats();
    assert_eq!((stats.failed, stats.refused, stats.retries), (1, 0, 2));
}

#[test]
fn errors_that_are_not_failures_are_neither_retried_nor_held_against_the_breaker() {
    let breaker = Arc::new(
        CircuitBreaker::builder()
            .consecutive_failures(1)
            .build()
            .unwrap(),
    );
    let stack = Resilience::builder()
        .breaker(breaker.clone())
        .retries(5)
        .build()
        .unwrap();
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
    assert_eq!(breaker.state(), State::Closed);
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
        Err(ResilienceError::Failed {
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
    assert_eq!(
        outcome,
        Err(ResilienceError::Cancelled(CancelReason::DeadlineExceeded))
    );
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
        Err(ResilienceError::Failed {
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

#[test]
fn backoffs_sleep_on_the_stacks_clock_and_double() {
    let _check = LeakCheck::new();
    let clock = ManualClock::new();
    let stack = Resilience::builder()
        .retries(2)
        .backoff(Duration::from_secs(1), Duration::from_secs(10))
        .clock(clock.clone())
        .build()
        .unwrap();
    let seen = Mutex::new(Vec::new());
    let done = AtomicBool::new(false);
    corral::scope(|s| {
        s.spawn(|| {
            let outcome = stack.call(|_| -> Result<(), ()> {
                seen.lock().unwrap().push(clock.elapsed());
                Err(())
            });
            assert!(outcome.is_err());
            done.store(true, Ordering::SeqCst);
        });
        let deadline = Instant::now() + LONG;
        while !done.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "the call did not finish");
            clock.advance(Duration::from_millis(100));
            thread::yield_now();
        }
    });
    let seen = seen.into_inner().unwrap();
    assert_eq!(seen.len(), 3);
    assert!(seen[1] - seen[0] >= Duration::from_secs(1), "{seen:?}");
    assert!(seen[2] - seen[1] >= Duration::from_secs(2), "{seen:?}");
}

#[test]
fn jittered_backoffs_stay_within_the_computed_wait() {
    let _check = LeakCheck::new();
    let clock = ManualClock::new();
    let stack = Resilience::builder()
        .retries(6)
        .backoff(Duration::from_secs(1), Duration::from_secs(4))
        .jitter(true)
        .clock(clock.clone())
        .build()
        .unwrap();
    let seen = Mutex::new(Vec::new());
    let done = AtomicBool::new(false);
    corral::scope(|s| {
        s.spawn(|| {
            let outcome = stack.call(|_| -> Result<(), ()> {
                seen.lock().unwrap().push(clock.elapsed());
                Err(())
            });
            assert!(outcome.is_err());
            done.store(true, Ordering::SeqCst);
        });
        let deadline = Instant::now() + LONG;
        while !done.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "the call did not finish");
            clock.advance(Duration::from_millis(10));
            thread::yield_now();
        }
    });
    let seen = seen.into_inner().unwrap();
    assert_eq!(seen.len(), 7);
    // Waits of 1, 2, 4, 4, 4, 4 s without jitter: 19 s in all. With full jitter each
    // wait is at most its computed length (plus the test's 10 ms advance steps).
    let total = seen[6] - seen[0];
    assert!(
        total <= Duration::from_millis(19_000 + 6 * 10 + 100),
        "{seen:?}"
    );
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
        Err(ResilienceError::Cancelled(CancelReason::DeadlineExceeded))
    );
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
