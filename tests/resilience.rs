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

// ---- the slow-dependency story: a pool the stack owns, a caller that gives up ----

/// The corral threads of the stack named `name` alive now.
fn pool_threads(name: &str) -> usize {
    let prefix = format!("corral-resilience-{name}-");
    corral::leak::live_threads()
        .iter()
        .filter(|t| t.name.starts_with(&prefix))
        .count()
}

/// Polls until `done` or a generous limit (a bound for "does not hang", never a wait
/// for another thread to reach a point).
fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let limit = Instant::now() + LONG;
    while Instant::now() < limit {
        if done() {
            return true;
        }
        thread::yield_now();
    }
    done()
}

#[test]
fn a_thousand_calls_to_a_hanging_dependency_leave_at_most_the_pools_threads() {
    let check = LeakCheck::new();
    const WORKERS: usize = 4;
    let deadline = Duration::from_millis(50);
    let stack = Resilience::builder()
        .name("slow")
        .isolate(WORKERS)
        .timeout(deadline)
        .build()
        .unwrap();
    // The dependency ignores its token and hangs until released.
    let (release, gate) = crossbeam_channel::bounded::<()>(0);
    let peak = AtomicUsize::new(0);
    let (gave_up, full) = (AtomicUsize::new(0), AtomicUsize::new(0));
    // Eight plain std threads (not corral's) call it 125 times each.
    thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..125 {
                    let gate = gate.clone();
                    let asked = Instant::now();
                    let outcome = stack.call_isolated(move |_token| gate.recv().map_err(|_| ()));
                    let waited = asked.elapsed();
                    // An upper bound only: answered about at the deadline, never later
                    // than the deadline plus a generous allowance for a loaded box.
                    assert!(waited < deadline + LONG, "a caller waited {waited:?}");
                    match outcome {
                        Err(ResilienceError::DeadlineExceeded) => {
                            gave_up.fetch_add(1, Ordering::SeqCst)
                        }
                        Err(ResilienceError::BulkheadFull) => full.fetch_add(1, Ordering::SeqCst),
                        other => panic!("unexpected {other:?}"),
                    };
                    peak.fetch_max(pool_threads("slow"), Ordering::SeqCst);
                }
            });
        }
    });
    assert!(peak.load(Ordering::SeqCst) <= WORKERS, "threads piled up");
    let stats = stack.stats();
    let (gave_up, full) = (gave_up.into_inner() as u64, full.into_inner() as u64);
    assert_eq!(gave_up + full, 1000);
    assert_eq!(
        (stats.calls, stats.deadline_exceeded, stats.bulkhead_refused),
        (1000, gave_up, full)
    );
    // Nothing was released: each call given up on still holds its worker, so at most
    // WORKERS of them ever started, and the rest were refused at once.
    assert_eq!(stats.abandoned + stats.never_started, gave_up);
    assert!(
        stats.abandoned >= 1 && stats.abandoned <= WORKERS as u64,
        "{stats:?}"
    );
    assert_eq!(stats.abandoned_finished, 0);
    drop(release);
    assert!(
        eventually(|| stack.stats().abandoned_finished == stack.stats().abandoned),
        "every abandoned call accounted for: {:?}",
        stack.stats()
    );
    drop(stack);
    check.verify().expect("the stack joined its pool");
}

#[test]
fn a_cooperative_call_on_the_pool_is_answered_and_the_pool_reused() {
    let _check = LeakCheck::new();
    let stack = Resilience::builder()
        .isolate(1)
        .retries(2)
        .backoff(Duration::ZERO, Duration::ZERO)
        .build()
        .unwrap();
    let attempts = Arc::new(AtomicUsize::new(0));
    for round in 1..=3 {
        let attempts = attempts.clone();
        let outcome = stack.call_isolated(move |_| {
            if attempts.fetch_add(1, Ordering::SeqCst) % 2 == 0 {
                Err("flaky")
            } else {
                Ok(round)
            }
        });
        assert_eq!(outcome, Ok(round));
    }
    let stats = stack.stats();
    assert_eq!((stats.succeeded, stats.retries, stats.abandoned), (3, 3, 0));
}

#[test]
fn a_caller_that_cancels_gives_up_and_the_breaker_ignores_it_but_a_deadline_counts() {
    let _check = LeakCheck::new();
    let breaker = Arc::new(
        CircuitBreaker::builder()
            .consecutive_failures(2)
            .build()
            .unwrap(),
    );
    let stack = Resilience::builder()
        .isolate(2)
        .breaker(breaker.clone())
        .build()
        .unwrap();
    let (started_tx, started) = crossbeam_channel::bounded::<()>(1);
    let (release, gate) = crossbeam_channel::bounded::<()>(0);
    let token = CancelToken::new();
    let outcome = thread::scope(|s| {
        let caller = s.spawn(|| {
            let gate = gate.clone();
            stack.call_isolated_with(
                &token,
                |_| true,
                move |_| {
                    started_tx.send(()).unwrap();
                    gate.recv().map_err(|_| ())
                },
            )
        });
        started.recv().unwrap(); // the call runs on the pool
        token.cancel();
        caller.join().unwrap()
    });
    assert_eq!(
        outcome,
        Err(ResilienceError::Cancelled(CancelReason::Cancelled))
    );
    assert_eq!(
        breaker.stats().failures,
        0,
        "a cancel says nothing about the dependency"
    );
    // Given up on at its deadline: a failure for the breaker.
    let token = CancelToken::with_timeout(Duration::from_millis(10));
    let gate2 = gate.clone();
    let outcome = stack.call_isolated_with(&token, |_| true, move |_| gate2.recv().map_err(|_| ()));
    assert_eq!(outcome, Err(ResilienceError::DeadlineExceeded));
    assert_eq!(breaker.stats().failures, 1);
    let stats = stack.stats();
    assert_eq!(
        (stats.cancelled, stats.deadline_exceeded, stats.abandoned),
        (1, 1, 2)
    );
    drop(release);
    assert!(eventually(|| stack.stats().abandoned_finished == 2));
}

#[test]
fn a_panic_on_the_pool_is_the_callers() {
    let _check = LeakCheck::new();
    let stack = Resilience::builder().isolate(1).build().unwrap();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        stack.call_isolated(|_| -> Result<(), ()> { panic!("boom") })
    }));
    assert!(caught.is_err());
    // The worker survived and its slot came back.
    assert_eq!(stack.call_isolated(|_| Ok::<_, ()>(7)), Ok(7));
}

#[test]
fn shutdown_timeout_hands_the_stack_back_while_a_call_given_up_on_still_runs() {
    let check = LeakCheck::new();
    let stack = Resilience::builder()
        .isolate(1)
        .timeout(Duration::from_millis(10))
        .build()
        .unwrap();
    let (release, gate) = crossbeam_channel::bounded::<()>(0);
    let outcome = stack.call_isolated(move |_| gate.recv().map_err(|_| ()));
    assert_eq!(outcome, Err(ResilienceError::DeadlineExceeded));
    let stack = stack
        .shutdown_timeout(Duration::from_millis(10))
        .expect_err("the call still runs");
    assert_eq!(stack.stats().abandoned, 1);
    drop(release);
    assert!(stack.shutdown_timeout(LONG).is_ok());
    check.verify().expect("joined");
}

#[test]
fn call_isolated_without_a_pool_runs_on_the_callers_thread() {
    let stack = Resilience::builder().build().unwrap();
    let caller = thread::current().id();
    assert_eq!(
        stack.call_isolated(move |_| Ok::<_, ()>(thread::current().id() == caller)),
        Ok(true)
    );
}

// ---- limits, fallback, stats, budget, name ----

#[test]
fn one_key_of_a_keyed_limiter_is_a_rate_limit_of_the_stack() {
    let clock = ManualClock::new();
    let limiter = Arc::new(
        corral::KeyedRateLimiter::<&str>::per_second(1)
            .clock(clock.clone())
            .build()
            .unwrap(),
    );
    let stack_for = |key| {
        Resilience::builder()
            .rate_limiter(Arc::new(limiter.limit_for(key)))
            .timeout(Duration::from_millis(50))
            .build()
            .unwrap()
    };
    let (acme, globex) = (stack_for("acme"), stack_for("globex"));
    assert_eq!(acme.call(|_| Ok::<_, ()>(1)), Ok(1));
    assert_eq!(
        acme.call(|_| Ok::<_, ()>(2)),
        Err(ResilienceError::RateLimited {
            retry_after: Some(Duration::from_secs(1))
        })
    );
    assert_eq!(
        globex.call(|_| Ok::<_, ()>(3)),
        Ok(3),
        "keys are independent"
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(acme.call(|_| Ok::<_, ()>(4)), Ok(4));
}

#[test]
fn a_fallback_answers_for_a_refusal_and_is_counted() {
    let breaker = Arc::new(CircuitBreaker::new());
    breaker.trip();
    let stack = Resilience::builder().breaker(breaker).build().unwrap();
    let answer = stack.or_fallback(stack.call(|_| Ok::<_, ()>(1)), |e| {
        matches!(e, ResilienceError::BreakerOpen { .. }).then_some(0)
    });
    assert_eq!(answer, Ok(0));
    let kept = stack.or_fallback(stack.call(|_| Ok::<u32, ()>(1)), |_| None);
    assert!(matches!(kept, Err(ResilienceError::BreakerOpen { .. })));
    let stats = stack.stats();
    assert_eq!(
        (stats.fallbacks, stats.breaker_open, stats.refused),
        (1, 2, 2)
    );
}

#[test]
fn display_lists_the_layers_in_order_and_debug_names_the_stack() {
    let _check = LeakCheck::new();
    let stack = Resilience::builder()
        .name("payments")
        .breaker(Arc::new(CircuitBreaker::new()))
        .rate_limiter(Arc::new(RateLimiter::per_second(10).build().unwrap()))
        .limit(Arc::new(RateLimiter::per_second(10).build().unwrap()))
        .isolate(2)
        .bulkhead(Arc::new(Semaphore::new(4)))
        .timeout(Duration::from_secs(1))
        .retries(3)
        .retry_budget(Arc::new(
            corral::resilience::RetryBudget::builder().build().unwrap(),
        ))
        .build()
        .unwrap();
    assert_eq!(
        stack.to_string(),
        "resilience \"payments\": bulkhead -> pool(2) -> limit -> rate limiter -> breaker -> call; \
         timeout 1s, retries 3 (budget)"
    );
    assert!(format!("{stack:?}").contains("\"payments\""));
    assert_eq!(stack.name(), Some("payments"));
    assert_eq!(
        Resilience::builder().build().unwrap().to_string(),
        "resilience: call"
    );
}

#[test]
fn a_shared_retry_budget_caps_the_retries_of_every_stack_during_an_outage() {
    let clock = ManualClock::new();
    let budget = Arc::new(
        corral::resilience::RetryBudget::builder()
            .ratio(0.1)
            .min_per_second(1)
            .window(Duration::from_secs(10))
            .clock(clock.clone())
            .build()
            .unwrap(),
    );
    let stack = || {
        Resilience::builder()
            .retries(5)
            .backoff(Duration::ZERO, Duration::ZERO)
            .retry_budget(budget.clone())
            .build()
            .unwrap()
    };
    let (a, b) = (stack(), stack());
    let attempts = AtomicUsize::new(0);
    let down = |_: &CancelToken| -> Result<(), ()> {
        attempts.fetch_add(1, Ordering::SeqCst);
        Err(())
    };
    for _ in 0..100 {
        assert!(a.call(down).is_err());
        assert!(b.call(down).is_err());
    }
    // 200 calls: 10% of them plus 1 a second over the 10 s window = 30 retries, not
    // the 1000 that five retries each would make.
    let retries = a.stats().retries + b.stats().retries;
    assert_eq!(retries, 30);
    assert_eq!(attempts.load(Ordering::SeqCst), 230);
    // Every call but the first two (whose five retries the floor paid for) ended on a
    // refused retry.
    assert_eq!(a.stats().retries_denied + b.stats().retries_denied, 198);
    assert_eq!(budget.stats().retries, 30);
    // Once the window has passed, the old calls no longer pay for new retries.
    clock.advance(Duration::from_secs(10));
    assert_eq!(budget.stats().calls, 0);
    assert!(a.call(down).is_err());
    // One call: 0.1 of a retry plus the floor of 10 pay for all five.
    assert_eq!(budget.stats().retries, 5);
}

#[test]
fn bad_budget_and_pool_settings_name_the_field() {
    let budget = |b: corral::resilience::RetryBudgetBuilder| b.build().unwrap_err().field();
    assert_eq!(
        budget(corral::resilience::RetryBudget::builder().ratio(-1.0)),
        "ratio"
    );
    assert_eq!(
        budget(corral::resilience::RetryBudget::builder().ratio(f64::NAN)),
        "ratio"
    );
    assert_eq!(
        budget(corral::resilience::RetryBudget::builder().window(Duration::ZERO)),
        "window"
    );
    assert_eq!(
        Resilience::builder()
            .isolate(0)
            .build()
            .unwrap_err()
            .field(),
        "workers"
    );
    assert_eq!(
        Resilience::builder()
            .name("a\0b")
            .isolate(1)
            .build()
            .unwrap_err()
            .field(),
        "thread_name"
    );
}

#[test]
fn with_every_worker_busy_on_calls_given_up_on_a_call_without_deadline_is_refused_not_queued() {
    let check = LeakCheck::new();
    let stack = Resilience::builder().isolate(2).build().unwrap();
    let (release, gate) = crossbeam_channel::bounded::<()>(0);
    for _ in 0..2 {
        let gate = gate.clone();
        let token = CancelToken::with_timeout(Duration::from_millis(10));
        let outcome =
            stack.call_isolated_with(&token, |_| true, move |_| gate.recv().map_err(|_| ()));
        assert_eq!(outcome, Err(ResilienceError::DeadlineExceeded));
    }
    // No deadline at all: queued, this call would wait for ever; it is refused.
    let outcome = stack.call_isolated(|_| Ok::<_, ()>(1));
    assert_eq!(outcome, Err(ResilienceError::BulkheadFull));
    let stats = stack.stats();
    assert_eq!(
        (
            stats.abandoned + stats.never_started,
            stats.bulkhead_refused
        ),
        (2, 1)
    );
    drop(release);
    // The workers come back once the abandoned calls return.
    assert!(eventually(
        || stack.call_isolated(|_| Ok::<_, ()>(2)) == Ok(2)
    ));
    drop(stack);
    check.verify().expect("joined");
}
