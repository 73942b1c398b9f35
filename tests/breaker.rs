//! CircuitBreaker behaviour through the public API. Time is a `ManualClock`; threads
//! meet on barriers and channels, never on sleeps.

mod common;
use common::XorShift;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, OnceLock, Weak};
use std::time::Duration;

use corral::leak::LeakCheck;
use corral::{
    breaker::{BreakerBuilder, BreakerError, BreakerStats, State, Window},
    clock::{Clock, ManualClock},
    CircuitBreaker,
};

const SEC: Duration = Duration::from_secs(1);

fn ok(b: &CircuitBreaker) -> Result<u32, BreakerError<&'static str>> {
    b.call(|| Ok(1))
}

fn fail(b: &CircuitBreaker) -> Result<u32, BreakerError<&'static str>> {
    b.call(|| Err("boom"))
}

/// A call that takes `took` on the manual clock.
fn timed(
    b: &CircuitBreaker,
    clock: &ManualClock,
    took: Duration,
    good: bool,
) -> Result<u32, BreakerError<&'static str>> {
    b.call(|| {
        clock.advance(took);
        if good {
            Ok(1)
        } else {
            Err("boom")
        }
    })
}

fn builder(clock: &ManualClock) -> BreakerBuilder {
    CircuitBreaker::builder()
        .open_for(10 * SEC)
        .clock(clock.clone())
}

#[test]
fn consecutive_failures_trip_only_in_a_row() {
    let clock = ManualClock::new();
    let b = builder(&clock).consecutive_failures(3).build().unwrap();
    // F F S F F stays closed.
    for step in [false, false, true, false, false] {
        let _ = if step { ok(&b) } else { fail(&b) };
        assert_eq!(b.state(), State::Closed);
    }
    assert_eq!(b.stats().consecutive_failures, 2);
    // The third in a row opens it.
    assert_eq!(fail(&b), Err(BreakerError::Inner("boom")));
    assert_eq!(b.state(), State::Open);
    // Refused with the time left.
    assert_eq!(
        ok(&b),
        Err(BreakerError::Open {
            retry_after: 10 * SEC
        })
    );
    clock.advance(4 * SEC);
    assert_eq!(
        ok(&b),
        Err(BreakerError::Open {
            retry_after: 6 * SEC
        })
    );
    let err = b.try_acquire().unwrap_err();
    assert_eq!(err.retry_after(), Some(6 * SEC));
    // After open_for, the next call is a half-open trial.
    clock.advance(6 * SEC);
    let trial = b.try_acquire().unwrap();
    assert!(trial.is_trial());
    assert_eq!(b.state(), State::HalfOpen);
    trial.success();
    assert_eq!(b.state(), State::Closed);
    let stats = b.stats();
    assert_eq!(stats.trips, 1);
    assert_eq!(stats.rejected, 3);
    assert_eq!(stats.consecutive_failures, 0);
    assert_eq!((stats.successes, stats.failures), (2, 5));
}

#[test]
fn half_open_needs_k_successes_and_backs_off_on_failure() {
    let clock = ManualClock::new();
    let b = builder(&clock)
        .consecutive_failures(1)
        .half_open_calls(2)
        .backoff(2.0, 25 * SEC)
        .build()
        .unwrap();
    let open_left = |b: &CircuitBreaker| b.try_acquire().unwrap_err().retry_after();

    fail(&b).unwrap_err();
    assert_eq!(open_left(&b), Some(10 * SEC));
    clock.advance(10 * SEC);
    // A half-open failure reopens for open_for * 2.
    assert!(ok(&b).is_ok());
    assert_eq!(b.state(), State::HalfOpen);
    fail(&b).unwrap_err();
    assert_eq!(b.state(), State::Open);
    assert_eq!(open_left(&b), Some(20 * SEC));
    clock.advance(20 * SEC);
    // Again: 40 s capped at 25 s.
    fail(&b).unwrap_err();
    assert_eq!(open_left(&b), Some(25 * SEC));
    assert_eq!(b.stats().open_for, 25 * SEC);
    clock.advance(25 * SEC);
    // Two successes close it.
    assert!(ok(&b).is_ok());
    assert_eq!(b.state(), State::HalfOpen);
    assert!(ok(&b).is_ok());
    assert_eq!(b.state(), State::Closed);
    // Closed resets the open time to its base.
    assert_eq!(b.stats().open_for, 10 * SEC);
    fail(&b).unwrap_err();
    assert_eq!(open_left(&b), Some(10 * SEC));
    assert_eq!(b.stats().trips, 4);
}

#[test]
fn half_open_refuses_beyond_k_outstanding_trials() {
    let clock = ManualClock::new();
    let b = builder(&clock)
        .consecutive_failures(1)
        .half_open_calls(2)
        .build()
        .unwrap();
    b.trip();
    clock.advance(10 * SEC);
    let first = b.try_acquire().unwrap();
    let second = b.try_acquire().unwrap();
    assert_eq!(b.try_acquire().unwrap_err(), BreakerError::HalfOpenFull);
    assert_eq!(b.stats().half_open_in_flight, 2);
    // An ignored trial frees its slot without deciding anything.
    first.ignore();
    assert_eq!(b.state(), State::HalfOpen);
    let third = b.try_acquire().unwrap();
    second.success();
    // One success so far and one trial running: no further slot.
    assert_eq!(b.try_acquire().unwrap_err(), BreakerError::HalfOpenFull);
    third.success();
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn half_open_admits_at_most_k_concurrent_trials() {
    let _check = LeakCheck::new();
    const THREADS: usize = 6;
    let clock = ManualClock::new();
    let b = builder(&clock)
        .consecutive_failures(1)
        .half_open_calls(2)
        .build()
        .unwrap();
    b.trip();
    clock.advance(10 * SEC);
    let tried = Barrier::new(THREADS + 1);
    let checked = Barrier::new(THREADS + 1);
    let admitted = AtomicUsize::new(0);
    let full = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                let attempt = b.try_acquire();
                match &attempt {
                    Ok(_) => admitted.fetch_add(1, Ordering::SeqCst),
                    Err(e) => {
                        assert_eq!(*e, BreakerError::HalfOpenFull);
                        full.fetch_add(1, Ordering::SeqCst)
                    }
                };
                // Every thread has tried before any trial reports.
                tried.wait();
                checked.wait();
                if let Ok(guard) = attempt {
                    guard.success();
                }
            });
        }
        tried.wait();
        assert_eq!(admitted.load(Ordering::SeqCst), 2);
        assert_eq!(full.load(Ordering::SeqCst), THREADS - 2);
        assert_eq!(b.stats().half_open_in_flight, 2);
        checked.wait();
    });
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn count_window_rate_waits_for_minimum_calls() {
    let clock = ManualClock::new();
    let b = builder(&clock)
        .failure_rate(0.5)
        .window(Window::Count(10))
        .minimum_calls(5)
        .build()
        .unwrap();
    for _ in 0..4 {
        fail(&b).unwrap_err();
        assert_eq!(b.state(), State::Closed, "minimum not met");
    }
    fail(&b).unwrap_err();
    assert_eq!(b.state(), State::Open);

    // A success that brings the window to its minimum can trip it too (4/5 failed).
    b.reset();
    for _ in 0..4 {
        fail(&b).unwrap_err();
    }
    assert_eq!(b.stats().window_failures, 4);
    ok(&b).unwrap();
    assert_eq!(b.state(), State::Open);

    // Below the threshold it stays closed: 4 failures in 10.
    b.reset();
    for i in 0..10 {
        let _ = if i % 3 == 0 { fail(&b) } else { ok(&b) };
    }
    let stats = b.stats();
    assert_eq!((stats.window_calls, stats.window_failures), (10, 4));
    assert_eq!(stats.failure_rate(), Some(0.4));
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn count_window_forgets_calls_older_than_n() {
    let clock = ManualClock::new();
    let b = builder(&clock)
        .failure_rate(0.5)
        .window(Window::Count(4))
        .minimum_calls(4)
        .build()
        .unwrap();
    fail(&b).unwrap_err();
    for _ in 0..4 {
        ok(&b).unwrap();
    }
    // The failure has left the window.
    assert_eq!(b.stats().window_failures, 0);
    assert_eq!(b.stats().window_calls, 4);
    fail(&b).unwrap_err();
    assert_eq!(b.state(), State::Closed, "1 of 4");
    fail(&b).unwrap_err();
    assert_eq!(b.state(), State::Open, "2 of 4");
}

#[test]
fn time_window_forgets_outcomes_older_than_the_window() {
    let clock = ManualClock::new();
    let b = builder(&clock)
        .failure_rate(0.5)
        .window(Window::Time(10 * SEC))
        .minimum_calls(5)
        .build()
        .unwrap();
    for _ in 0..4 {
        fail(&b).unwrap_err();
    }
    clock.advance(10 * SEC);
    assert_eq!(b.stats().window_calls, 0);
    fail(&b).unwrap_err();
    assert_eq!(b.state(), State::Closed, "the first four no longer count");
    for _ in 0..3 {
        fail(&b).unwrap_err();
    }
    clock.advance(9 * SEC);
    // All four still inside the window: the fifth call trips it.
    assert_eq!(b.stats().window_failures, 4);
    ok(&b).unwrap();
    assert_eq!(b.state(), State::Open);
}

#[test]
fn time_window_success_reaching_minimum_after_expiry_trips() {
    let clock = ManualClock::new();
    let b = builder(&clock)
        .failure_rate(0.5)
        .window(Window::Time(10 * SEC))
        .minimum_calls(4)
        .build()
        .unwrap();
    // Three successes early, then three failures later: 3/6 at the minimum -> open?
    // 0.5 >= 0.5 would trip, so use two failures: 2/5 stays closed.
    for _ in 0..3 {
        ok(&b).unwrap();
    }
    clock.advance(5 * SEC);
    fail(&b).unwrap_err();
    fail(&b).unwrap_err();
    assert_eq!(b.state(), State::Closed);
    // The early successes expire: 2 calls left, both failures, below the minimum.
    clock.advance(5 * SEC);
    assert_eq!(b.stats().window_calls, 2);
    ok(&b).unwrap();
    assert_eq!(b.state(), State::Closed, "3 calls, minimum is 4");
    ok(&b).unwrap();
    assert_eq!(b.state(), State::Open, "2 of 4 failed");
}

/// `SystemClock` and buckets far wider than the OS's coarse tick: the window's buckets
/// run on the coarse clock (on Linux), and the window still counts every outcome and
/// trips on the rate, from a failure and from a success reaching `minimum_calls`.
#[test]
fn system_clock_time_window_with_wide_buckets_counts_and_trips() {
    let wide = || {
        CircuitBreaker::builder()
            .failure_rate(0.5)
            .window(Window::Time(Duration::from_secs(600)))
            .minimum_calls(10)
            .open_for(Duration::from_secs(600))
    };

    // Tripped by a failure: 6 successes, then failures until half the calls failed.
    let b = wide().build().unwrap();
    for _ in 0..6 {
        ok(&b).unwrap();
    }
    let stats = b.stats();
    assert_eq!((stats.window_calls, stats.window_failures), (6, 0));
    assert_eq!(stats.successes, 6);
    for _ in 0..5 {
        fail(&b).unwrap_err();
    }
    let stats = b.stats();
    assert_eq!((stats.window_calls, stats.window_failures), (11, 5));
    assert_eq!(b.state(), State::Closed, "5 of 11 is under half");
    fail(&b).unwrap_err();
    assert_eq!(b.state(), State::Open, "6 of 12");
    assert!(matches!(ok(&b), Err(BreakerError::Open { .. })));

    // Tripped by a success: 5 failures wait for the minimum, which the 5th success
    // brings (5 of 10 failed).
    let b = wide().build().unwrap();
    for _ in 0..5 {
        fail(&b).unwrap_err();
    }
    for _ in 0..4 {
        ok(&b).unwrap();
    }
    assert_eq!(b.state(), State::Closed, "9 calls, minimum is 10");
    assert_eq!(b.stats().window_calls, 9);
    ok(&b).unwrap();
    assert_eq!(b.state(), State::Open, "5 of 10 failed");

    // Reset clears the window: old successes no longer count.
    b.reset();
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.stats().window_calls, 0);
    ok(&b).unwrap();
    assert_eq!(b.stats().window_calls, 1);
}

#[test]
fn slow_calls_open_it_past_their_rate() {
    let clock = ManualClock::new();
    let b = builder(&clock)
        .slow_call(SEC, 0.5)
        .window(Window::Count(4))
        .minimum_calls(4)
        .build()
        .unwrap();
    timed(&b, &clock, 2 * SEC, true).unwrap();
    timed(&b, &clock, SEC, true).unwrap(); // exactly the limit: not slow
    timed(&b, &clock, 3 * SEC, false).unwrap_err();
    assert_eq!(b.state(), State::Closed);
    let stats = b.stats();
    assert_eq!((stats.slow_calls, stats.window_slow_calls), (2, 2));
    ok(&b).unwrap();
    assert_eq!(b.state(), State::Open, "2 of 4 calls were slow");
    assert_eq!(b.stats().failures, 1);
}

#[test]
fn slow_half_open_trial_counts_as_failed() {
    let clock = ManualClock::new();
    let b = builder(&clock)
        .consecutive_failures(1)
        .slow_call(SEC, 1.0)
        .build()
        .unwrap();
    b.trip();
    clock.advance(10 * SEC);
    timed(&b, &clock, 2 * SEC, true).unwrap();
    assert_eq!(b.state(), State::Open);
}

#[test]
fn half_open_timeout_reopens_a_wedged_half_open_state() {
    let clock = ManualClock::new();
    let b = builder(&clock)
        .consecutive_failures(1)
        .half_open_timeout(5 * SEC)
        .backoff(2.0, 60 * SEC)
        .build()
        .unwrap();
    b.trip();
    clock.advance(10 * SEC);
    let stuck = b.try_acquire().unwrap();
    assert_eq!(b.try_acquire().unwrap_err(), BreakerError::HalfOpenFull);
    clock.advance(5 * SEC);
    assert_eq!(b.state(), State::Open);
    assert_eq!(b.try_acquire().unwrap_err().retry_after(), Some(20 * SEC));
    // The late trial belongs to the old half-open state: it changes nothing.
    stuck.success();
    assert_eq!(b.state(), State::Open);
    clock.advance(20 * SEC);
    ok(&b).unwrap();
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn dropped_guard_counts_as_failure_and_panics_too() {
    let clock = ManualClock::new();
    let b = builder(&clock).consecutive_failures(2).build().unwrap();
    drop(b.try_acquire().unwrap());
    assert_eq!(b.stats().failures, 1);
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = b.call(|| -> Result<(), ()> { panic!("upstream exploded") });
    }));
    assert!(panicked.is_err());
    assert_eq!(b.state(), State::Open);
    assert_eq!(b.stats().failures, 2);
}

#[test]
fn outcome_reported_after_a_state_change_is_ignored() {
    let clock = ManualClock::new();
    let b = builder(&clock).consecutive_failures(2).build().unwrap();
    let early = b.try_acquire().unwrap();
    fail(&b).unwrap_err();
    b.reset();
    // Admitted before the reset: counted in stats, not in the new failure run.
    early.failure();
    assert_eq!(b.stats().consecutive_failures, 0);
    assert_eq!(b.stats().failures, 2);
    fail(&b).unwrap_err();
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn is_failure_predicate_and_call_with() {
    #[derive(Debug, PartialEq)]
    enum ApiError {
        BadRequest,
        Unavailable,
    }
    let clock = ManualClock::new();
    let b = builder(&clock)
        .consecutive_failures(2)
        .is_failure(|e: &ApiError| *e == ApiError::Unavailable)
        .build()
        .unwrap();
    for _ in 0..5 {
        let r = b.call(|| Err::<(), _>(ApiError::BadRequest));
        assert_eq!(r, Err(BreakerError::Inner(ApiError::BadRequest)));
    }
    assert_eq!(b.stats().successes, 5);
    // A different error type is a failure.
    let _ = b.call(|| Err::<(), _>("io"));
    assert_eq!(b.stats().consecutive_failures, 1);
    let _ = b.call(|| Err::<(), _>(ApiError::Unavailable));
    assert_eq!(b.state(), State::Open);

    b.reset();
    for _ in 0..3 {
        let _ = b.call_with(|_: &u32| false, || Err::<(), u32>(404));
    }
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn state_change_callback_runs_outside_the_lock() {
    let clock = ManualClock::new();
    type Seen = Vec<(State, State, State, u64)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let me: Arc<OnceLock<Weak<CircuitBreaker>>> = Arc::default();
    let b = {
        let (seen, me) = (Arc::clone(&seen), Arc::clone(&me));
        Arc::new(
            builder(&clock)
                .consecutive_failures(1)
                .on_state_change(move |from, to| {
                    let b = me.get().and_then(Weak::upgrade).expect("breaker alive");
                    // Re-entering the breaker from the callback must not deadlock.
                    let (now, trips) = (b.state(), b.stats().trips);
                    seen.lock().unwrap().push((from, to, now, trips));
                })
                .build()
                .unwrap(),
        )
    };
    me.set(Arc::downgrade(&b)).unwrap();
    fail(&b).unwrap_err();
    clock.advance(10 * SEC);
    ok(&b).unwrap();
    b.force_open();
    b.disable();
    b.reset();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            (State::Closed, State::Open, State::Open, 1),
            (State::Open, State::HalfOpen, State::HalfOpen, 1),
            (State::HalfOpen, State::Closed, State::Closed, 1),
            (State::Closed, State::ForcedOpen, State::ForcedOpen, 1),
            (State::ForcedOpen, State::Disabled, State::Disabled, 1),
            (State::Disabled, State::Closed, State::Closed, 1),
        ]
    );
}

#[test]
fn manual_modes() {
    let clock = ManualClock::new();
    let b = builder(&clock).consecutive_failures(1).build().unwrap();
    b.force_open();
    assert_eq!(ok(&b), Err(BreakerError::ForcedOpen));
    clock.advance(3600 * SEC);
    assert_eq!(
        b.state(),
        State::ForcedOpen,
        "time does not end a forced open"
    );
    b.disable();
    for _ in 0..10 {
        fail(&b).unwrap_err();
    }
    ok(&b).unwrap();
    assert_eq!(b.state(), State::Disabled);
    let stats = b.stats();
    assert_eq!(
        (stats.failures, stats.successes, stats.rejected),
        (10, 1, 1)
    );
    b.reset();
    assert_eq!(b.state(), State::Closed);
    b.trip();
    assert_eq!(ok(&b).unwrap_err().retry_after(), Some(10 * SEC));
    b.reset();
    ok(&b).unwrap();
}

#[test]
fn builder_rejects_bad_values_by_name() {
    let cases: Vec<(BreakerBuilder, &str, &str)> = vec![
        (
            CircuitBreaker::builder().consecutive_failures(0),
            "consecutive_failures",
            "0",
        ),
        (
            CircuitBreaker::builder().failure_rate(0.0),
            "failure_rate",
            "0.0",
        ),
        (
            CircuitBreaker::builder().failure_rate(1.01),
            "failure_rate",
            "1.01",
        ),
        (
            CircuitBreaker::builder().failure_rate(f64::NAN),
            "failure_rate",
            "NaN",
        ),
        (
            CircuitBreaker::builder()
                .failure_rate(0.5)
                .window(Window::Count(0)),
            "window",
            "Count(0)",
        ),
        (
            CircuitBreaker::builder().window(Window::Time(Duration::ZERO)),
            "window",
            "Time(0ns)",
        ),
        (
            CircuitBreaker::builder().minimum_calls(0),
            "minimum_calls",
            "0",
        ),
        (
            CircuitBreaker::builder()
                .window(Window::Count(5))
                .minimum_calls(6),
            "minimum_calls",
            "6",
        ),
        (
            CircuitBreaker::builder().slow_call(SEC, -0.1),
            "slow_call.rate",
            "-0.1",
        ),
        (
            CircuitBreaker::builder().slow_call(Duration::ZERO, 0.5),
            "slow_call.duration",
            "0ns",
        ),
        (
            CircuitBreaker::builder().open_for(Duration::ZERO),
            "open_for",
            "0ns",
        ),
        (
            CircuitBreaker::builder().backoff(0.5, 60 * SEC),
            "backoff.multiplier",
            "0.5",
        ),
        (
            CircuitBreaker::builder().backoff(f64::INFINITY, 60 * SEC),
            "backoff.multiplier",
            "inf",
        ),
        (
            CircuitBreaker::builder().backoff(2.0, SEC),
            "backoff.max",
            "1s",
        ),
        (
            CircuitBreaker::builder().half_open_calls(0),
            "half_open_calls",
            "0",
        ),
        (
            CircuitBreaker::builder().half_open_timeout(Duration::ZERO),
            "half_open_timeout",
            "0ns",
        ),
    ];
    for (builder, field, value) in cases {
        let err = builder.build().unwrap_err();
        assert_eq!((err.field(), err.value()), (field, value), "{err}");
    }
}

#[test]
fn errors_and_states_display_lowercase() {
    let open: BreakerError<std::io::Error> = BreakerError::Open { retry_after: SEC };
    assert_eq!(open.to_string(), "circuit breaker is open (retry after 1s)");
    assert!(open.is_refused());
    let inner = BreakerError::Inner(std::io::Error::other("reset by peer"));
    // Display describes the breaker's error only; the inner error is the source.
    assert_eq!(inner.to_string(), "the guarded call failed");
    let source = std::error::Error::source(&inner).unwrap();
    assert_eq!(source.to_string(), "reset by peer");
    // Debug shows the inner error (a refusal has none to show).
    assert_eq!(
        format!("{inner:?}"),
        format!("Inner({:?})", std::io::Error::other("reset by peer"))
    );
    let refused: BreakerError = BreakerError::ForcedOpen;
    assert_eq!(format!("{refused:?}"), "ForcedOpen");
    assert_eq!(State::ForcedOpen.to_string(), "forced open");
}

#[test]
fn public_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CircuitBreaker>();
    assert_send_sync::<BreakerStats>();
    assert_send_sync::<BreakerError<std::io::Error>>();
    assert_send_sync::<corral::breaker::BreakerGuard<'static>>();
}

/// Many threads, random outcomes: every call is counted exactly once, and half-open
/// never has more than k trials running.
#[test]
fn stress_counts_add_up_and_trials_stay_bounded() {
    stress(Window::Count(20));
    stress(Window::Time(Duration::from_millis(20)));
}

fn stress(window: Window) {
    let _check = LeakCheck::new();
    const THREADS: u64 = 4;
    const CALLS: u64 = 5_000;
    const K: usize = 2;
    let clock = ManualClock::new();
    let b = builder(&clock)
        .failure_rate(0.5)
        .window(window)
        .minimum_calls(10)
        .half_open_calls(K as u32)
        .open_for(Duration::from_millis(1))
        .build()
        .unwrap();
    let trials = AtomicUsize::new(0);
    let max_trials = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (b, clock, trials, max_trials, failed) =
                (&b, &clock, &trials, &max_trials, &failed);
            s.spawn(move || {
                let mut rng = XorShift::new(t + 1);
                for _ in 0..CALLS {
                    if rng.below(50) == 0 {
                        clock.advance(Duration::from_millis(1));
                    }
                    let Ok(guard) = b.try_acquire() else { continue };
                    let trial = guard.is_trial();
                    if trial {
                        let now = trials.fetch_add(1, Ordering::SeqCst) + 1;
                        max_trials.fetch_max(now, Ordering::SeqCst);
                        std::thread::yield_now();
                    }
                    let good = rng.below(2) != 0;
                    if trial {
                        trials.fetch_sub(1, Ordering::SeqCst);
                    }
                    if good {
                        guard.success();
                    } else {
                        failed.fetch_add(1, Ordering::SeqCst);
                        guard.failure();
                    }
                }
            });
        }
    });
    let stats = b.stats();
    assert_eq!(
        stats.successes + stats.failures + stats.rejected,
        THREADS * CALLS
    );
    assert_eq!(stats.failures, failed.load(Ordering::SeqCst) as u64);
    assert!(max_trials.load(Ordering::SeqCst) <= K, "{window:?}");
    assert!(
        stats.trips > 2,
        "half the calls failing must trip it, often"
    );
}

/// More threads alive at once than the breaker has per-thread stripes, then a second
/// generation reusing the first one's slots: every success is still counted once.
#[test]
fn many_threads_and_reused_slots_count_exactly() {
    many_threads_count_exactly(Window::Count(1_000_000));
    // SystemClock with wide buckets: the coarse clock on Linux.
    many_threads_count_exactly(Window::Time(Duration::from_secs(600)));
}

fn many_threads_count_exactly(window: Window) {
    let _check = LeakCheck::new();
    const THREADS: u64 = 40;
    const CALLS: u64 = 500;
    let b = CircuitBreaker::builder()
        .failure_rate(0.5)
        .window(window)
        .minimum_calls(1)
        .build()
        .unwrap();
    for generation in 1..=2u64 {
        let all_alive = Barrier::new(THREADS as usize);
        std::thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| {
                    all_alive.wait();
                    for _ in 0..CALLS {
                        b.call(|| Ok::<_, ()>(())).unwrap();
                    }
                });
            }
        });
        let stats = b.stats();
        assert_eq!(stats.successes, generation * THREADS * CALLS);
        assert_eq!(stats.window_calls, generation * THREADS * CALLS);
    }
}

#[test]
fn regression_open_period_starts_at_the_trip_not_at_creation() {
    // The first cut measured a trip's open period from the breaker's creation when no
    // policy needed the clock, so an old breaker went half-open at once.
    let clock = ManualClock::new();
    let b = builder(&clock).consecutive_failures(1).build().unwrap();
    clock.advance(3600 * SEC);
    fail(&b).unwrap_err();
    assert_eq!(
        ok(&b),
        Err(BreakerError::Open {
            retry_after: 10 * SEC
        })
    );
}

#[test]
fn regression_trial_keeps_its_slot_across_a_reopen() {
    // A failed half-open state used to forget trials still running, so the next
    // half-open state admitted k more: over k probes at once.
    let clock = ManualClock::new();
    let b = builder(&clock)
        .consecutive_failures(1)
        .half_open_calls(2)
        .build()
        .unwrap();
    b.trip();
    clock.advance(10 * SEC);
    let slow_trial = b.try_acquire().unwrap();
    b.try_acquire().unwrap().failure();
    assert_eq!(b.state(), State::Open);
    clock.advance(10 * SEC);
    let fresh = b.try_acquire().unwrap();
    assert_eq!(b.try_acquire().unwrap_err(), BreakerError::HalfOpenFull);
    slow_trial.success(); // late: decides nothing, but frees its slot
    assert_eq!(b.state(), State::HalfOpen);
    let another = b.try_acquire().unwrap();
    fresh.success();
    another.success();
    assert_eq!(b.state(), State::Closed);
}

// ---- randomized model test ---------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum ModelWindow {
    Count(usize),
    Time { width: u64 },
}

#[derive(Clone, Copy, Debug)]
struct ModelConfig {
    consecutive: Option<u64>,
    rate: Option<f64>,
    slow: Option<(u64, f64)>,
    window: ModelWindow,
    minimum: usize,
    open_for: u64,
    backoff: Option<(f64, u64)>,
    k: u32,
    half_open_timeout: u64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum ModelRefusal {
    Open(u64),
    Full,
}

#[derive(Clone, Copy, Debug)]
struct ModelPermit {
    trial: bool,
    epoch: u64,
    start: u64,
    slots: u64,
}

/// The reference: the breaker's documented semantics written as plainly as possible
/// (every outcome kept in a list, every evaluation from scratch).
struct Model {
    cfg: ModelConfig,
    state: State,
    epoch: u64,
    open_for: u64,
    open_until: u64,
    half_open_since: u64,
    /// Trials running, across reopenings, until a timeout abandons them.
    in_flight: u32,
    slots: u64,
    trial_ok: u32,
    consecutive: u64,
    /// `(time, failed, slow)` since the breaker last closed.
    outcomes: Vec<(u64, bool, bool)>,
}

impl Model {
    fn new(cfg: ModelConfig) -> Self {
        Model {
            cfg,
            state: State::Closed,
            epoch: 0,
            open_for: cfg.open_for,
            open_until: 0,
            half_open_since: 0,
            in_flight: 0,
            slots: 0,
            trial_ok: 0,
            consecutive: 0,
            outcomes: Vec::new(),
        }
    }

    fn go(&mut self, to: State, now: u64) {
        self.state = to;
        self.epoch += 1;
        self.trial_ok = 0;
        if !matches!(to, State::Open | State::HalfOpen) {
            self.in_flight = 0;
            self.slots += 1;
        }
        match to {
            State::Open => self.open_until = now + self.open_for,
            State::HalfOpen => self.half_open_since = now,
            State::Closed => {
                self.open_for = self.cfg.open_for;
                self.consecutive = 0;
                self.outcomes.clear();
            }
            _ => {}
        }
    }

    fn reopen(&mut self, now: u64) {
        if let Some((m, max)) = self.cfg.backoff {
            self.open_for = ((self.open_for as f64 * m).min(max as f64)) as u64;
        }
        self.go(State::Open, now);
    }

    fn tick(&mut self, now: u64) {
        if self.state == State::Open && now >= self.open_until {
            self.go(State::HalfOpen, now);
        }
        if self.state == State::HalfOpen && now - self.half_open_since >= self.cfg.half_open_timeout
        {
            self.in_flight = 0;
            self.slots += 1;
            self.reopen(now);
        }
    }

    fn state(&mut self, now: u64) -> State {
        self.tick(now);
        self.state
    }

    fn acquire(&mut self, now: u64) -> Result<ModelPermit, ModelRefusal> {
        self.tick(now);
        let permit = |trial| ModelPermit {
            trial,
            epoch: 0,
            start: now,
            slots: self.slots,
        };
        let mut p = match self.state {
            State::Closed => permit(false),
            State::HalfOpen if self.in_flight + self.trial_ok < self.cfg.k => {
                self.in_flight += 1;
                permit(true)
            }
            State::HalfOpen => return Err(ModelRefusal::Full),
            _ => return Err(ModelRefusal::Open(self.open_until - now)),
        };
        p.epoch = self.epoch;
        Ok(p)
    }

    /// `outcome`: Some(true) success, Some(false) failure, None ignored.
    fn record(&mut self, p: ModelPermit, outcome: Option<bool>, now: u64) {
        let slow = self
            .cfg
            .slow
            .is_some_and(|(limit, _)| now - p.start > limit);
        if p.trial {
            self.tick(now);
            if p.slots == self.slots {
                self.in_flight -= 1;
            }
            if p.epoch != self.epoch {
                return;
            }
            match outcome {
                None => {}
                Some(true) if !slow => {
                    self.trial_ok += 1;
                    if self.trial_ok >= self.cfg.k {
                        self.go(State::Closed, now);
                    }
                }
                _ => self.reopen(now),
            }
            return;
        }
        let Some(good) = outcome else { return };
        if p.epoch != self.epoch {
            return;
        }
        if let Some(n) = self.cfg.consecutive {
            if good {
                self.consecutive = 0;
            } else {
                self.consecutive += 1;
                if self.consecutive >= n {
                    self.go(State::Open, now);
                    return;
                }
            }
        }
        if self.cfg.rate.is_none() && self.cfg.slow.is_none() {
            return;
        }
        self.outcomes.push((now, !good, slow));
        let (calls, failures, slows) = self.window(now);
        if calls >= self.cfg.minimum && calls > 0 {
            let c = calls as f64;
            let tripped = self.cfg.rate.is_some_and(|t| failures as f64 / c >= t)
                || self.cfg.slow.is_some_and(|(_, t)| slows as f64 / c >= t);
            if tripped {
                self.go(State::Open, now);
            }
        }
    }

    fn window(&self, now: u64) -> (usize, usize, usize) {
        let recent: Vec<_> = match self.cfg.window {
            ModelWindow::Count(n) => self.outcomes.iter().rev().take(n).collect(),
            ModelWindow::Time { width } => self
                .outcomes
                .iter()
                .filter(|(t, _, _)| now / width - t / width < 10)
                .collect(),
        };
        let failures = recent.iter().filter(|o| o.1).count();
        let slows = recent.iter().filter(|o| o.2).count();
        (recent.len(), failures, slows)
    }
}

fn run_model(cfg: ModelConfig, seed: u64, steps: usize) {
    let clock = ManualClock::new();
    let mut builder = CircuitBreaker::builder()
        .clock(clock.clone())
        .open_for(Duration::from_nanos(cfg.open_for))
        .half_open_calls(cfg.k)
        .half_open_timeout(Duration::from_nanos(cfg.half_open_timeout));
    if let Some(n) = cfg.consecutive {
        builder = builder.consecutive_failures(n as u32);
    }
    if let Some(t) = cfg.rate {
        builder = builder.failure_rate(t);
    }
    if let Some((d, t)) = cfg.slow {
        builder = builder.slow_call(Duration::from_nanos(d), t);
    }
    if let Some((m, max)) = cfg.backoff {
        builder = builder.backoff(m, Duration::from_nanos(max));
    }
    builder = builder
        .minimum_calls(cfg.minimum as u32)
        .window(match cfg.window {
            ModelWindow::Count(n) => Window::Count(n as u32),
            ModelWindow::Time { width } => Window::Time(Duration::from_nanos(width * 10)),
        });
    let real = builder.build().unwrap();
    let start = clock.now();
    let now = || (clock.now() - start).as_nanos() as u64;
    let mut model = Model::new(cfg);
    let mut rng = XorShift::new(seed);
    let mut held: Vec<(corral::breaker::BreakerGuard<'_>, ModelPermit)> = Vec::new();
    let mut log: Vec<String> = Vec::new();

    for step in 0..steps {
        let op = rng.below(100);
        let context = |log: &Vec<String>| {
            format!(
                "seed {seed}, step {step}, cfg {cfg:?}\nlast ops: {:?}",
                &log[log.len().saturating_sub(12)..]
            )
        };
        match op {
            // A call through `call`, maybe slow, maybe failing.
            0..=59 => {
                let good = rng.below(100) >= 45;
                let slow = rng.below(100) < 20;
                let took = if slow { 1_500 } else { 0 } * 1_000_000;
                log.push(format!("call good={good} took={took}"));
                let expected = model.acquire(now());
                let result = real.call(|| {
                    clock.advance(Duration::from_nanos(took));
                    if good {
                        Ok(())
                    } else {
                        Err(())
                    }
                });
                match (expected, result) {
                    (Ok(p), Ok(())) | (Ok(p), Err(BreakerError::Inner(()))) => {
                        model.record(p, Some(good), now())
                    }
                    (Err(ModelRefusal::Open(left)), Err(BreakerError::Open { retry_after })) => {
                        assert_eq!(retry_after.as_nanos() as u64, left, "{}", context(&log))
                    }
                    (Err(ModelRefusal::Full), Err(BreakerError::HalfOpenFull)) => {}
                    (e, r) => panic!("model {e:?} vs real {r:?}: {}", context(&log)),
                }
            }
            // Take a guard and hold it.
            60..=69 if held.len() < 3 => {
                log.push("hold".into());
                let expected = model.acquire(now());
                match (expected, real.try_acquire()) {
                    (Ok(p), Ok(g)) => {
                        assert_eq!(g.is_trial(), p.trial, "{}", context(&log));
                        held.push((g, p));
                    }
                    (Err(ModelRefusal::Open(left)), Err(BreakerError::Open { retry_after })) => {
                        assert_eq!(retry_after.as_nanos() as u64, left, "{}", context(&log))
                    }
                    (Err(ModelRefusal::Full), Err(BreakerError::HalfOpenFull)) => {}
                    (e, r) => panic!("model {e:?} vs real {:?}: {}", r.map(|_| ()), context(&log)),
                }
            }
            // Report a held guard.
            70..=79 if !held.is_empty() => {
                let (g, p) = held.remove(rng.below(held.len() as u64) as usize);
                let how = rng.below(4);
                log.push(format!("release how={how} trial={}", p.trial));
                match how {
                    0 => g.success(),
                    1 => g.failure(),
                    2 => g.ignore(),
                    _ => drop(g),
                }
                let outcome = [Some(true), Some(false), None, Some(false)][how as usize];
                model.record(p, outcome, now());
            }
            // Time passes.
            80..=96 => {
                let d = (rng.below(12) + 1) * 500_000_000;
                log.push(format!("advance {d}"));
                clock.advance(Duration::from_nanos(d));
            }
            97 => {
                log.push("trip".into());
                real.trip();
                let t = now();
                model.go(State::Open, t);
            }
            98 => {
                log.push("reset".into());
                real.reset();
                let t = now();
                model.go(State::Closed, t);
            }
            _ => continue,
        }
        let t = now();
        assert_eq!(real.state(), model.state(t), "{}", context(&log));
        if model.state == State::Closed && (cfg.rate.is_some() || cfg.slow.is_some()) {
            let (calls, failures, slows) = model.window(t);
            let s = real.stats();
            assert_eq!(
                (s.window_calls, s.window_failures, s.window_slow_calls),
                (calls as u64, failures as u64, slows as u64),
                "{}\nmodel outcomes {:?} at {t}",
                context(&log),
                model.outcomes
            );
        }
    }
}

#[test]
fn randomized_sequences_agree_with_the_reference_model() {
    const MS: u64 = 1_000_000;
    let base = ModelConfig {
        consecutive: None,
        rate: None,
        slow: None,
        window: ModelWindow::Count(6),
        minimum: 4,
        open_for: 3_000 * MS,
        backoff: Some((2.0, 10_000 * MS)),
        k: 2,
        half_open_timeout: 4_000 * MS,
    };
    let configs = [
        ModelConfig {
            consecutive: Some(3),
            ..base
        },
        ModelConfig {
            rate: Some(0.5),
            ..base
        },
        ModelConfig {
            rate: Some(0.5),
            slow: Some((1_000 * MS, 0.5)),
            minimum: 6,
            ..base
        },
        ModelConfig {
            rate: Some(0.6),
            window: ModelWindow::Time { width: 1_000 * MS },
            minimum: 3,
            k: 1,
            ..base
        },
        ModelConfig {
            consecutive: Some(4),
            slow: Some((1_000 * MS, 0.4)),
            window: ModelWindow::Time { width: 700 * MS },
            minimum: 5,
            backoff: None,
            k: 3,
            ..base
        },
    ];
    for (i, cfg) in configs.into_iter().enumerate() {
        for seed in 0..300 {
            run_model(cfg, (i as u64) << 32 | seed, 400);
        }
    }
}

// ---- hostile use: panics in every user piece, re-entrancy, the time horizon ----------

/// A value whose `Drop` panics.
struct PanicOnDrop;

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        panic!("drop exploded");
    }
}

/// The breaker behind a `OnceLock`, for callbacks that call back into it.
fn reentrant(
    clock: &ManualClock,
    build: impl FnOnce(BreakerBuilder, Arc<OnceLock<Weak<CircuitBreaker>>>) -> BreakerBuilder,
) -> Arc<CircuitBreaker> {
    let me: Arc<OnceLock<Weak<CircuitBreaker>>> = Arc::default();
    let b = Arc::new(build(builder(clock), Arc::clone(&me)).build().unwrap());
    me.set(Arc::downgrade(&b)).unwrap();
    b
}

#[test]
fn a_panicking_state_change_callback_is_counted_not_raised() {
    let clock = ManualClock::new();
    let fired = Arc::new(AtomicUsize::new(0));
    let b = {
        let fired = Arc::clone(&fired);
        builder(&clock)
            .consecutive_failures(1)
            .on_state_change(move |_, to| {
                fired.fetch_add(1, Ordering::SeqCst);
                if to == State::Open {
                    panic!("callback exploded");
                }
            })
            .build()
            .unwrap()
    };
    // Each of these fires the callback; none may see its panic.
    b.trip();
    assert_eq!(b.state(), State::Open);
    clock.advance(10 * SEC);
    assert_eq!(b.state(), State::HalfOpen);
    assert_eq!(fail(&b), Err(BreakerError::Inner("boom"))); // reopens: panics again
    b.reset();
    assert_eq!(fail(&b), Err(BreakerError::Inner("boom"))); // trips: panics again
    let stats = b.stats();
    assert_eq!(stats.state, State::Open);
    assert_eq!(stats.user_panics, 3);
    assert_eq!(fired.load(Ordering::SeqCst), 5);
}

#[test]
fn a_panicking_callback_fired_by_an_unwinding_call_does_not_abort() {
    // Before the callback ran inside the panic boundary, the guard's drop (recording
    // the panicking call as a failure) tripped the breaker while unwinding, the
    // callback panicked a second time and the process aborted.
    let clock = ManualClock::new();
    let b = builder(&clock)
        .consecutive_failures(1)
        .on_state_change(|_, _| panic!("callback exploded"))
        .build()
        .unwrap();
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = b.call(|| -> Result<(), ()> { panic!("upstream exploded") });
    }));
    let payload = unwound.unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"upstream exploded"));
    let stats = b.stats();
    assert_eq!(
        (stats.state, stats.failures, stats.user_panics),
        (State::Open, 1, 1)
    );
}

#[test]
fn a_callback_may_trip_reset_and_call_the_breaker_without_deadlock() {
    let clock = ManualClock::new();
    let seen: Arc<Mutex<Vec<(State, State)>>> = Arc::default();
    let b = {
        let seen = Arc::clone(&seen);
        reentrant(&clock, move |b, me| {
            b.consecutive_failures(1).on_state_change(move |from, to| {
                seen.lock().unwrap().push((from, to));
                let b = me.get().and_then(Weak::upgrade).expect("breaker alive");
                match to {
                    // Opening: refuse a call from inside, then close again at once.
                    State::Open => {
                        assert!(b.call(|| Ok::<_, ()>(())).unwrap_err().is_refused());
                        b.reset();
                    }
                    // Closed by the reset above: a call goes through, stats are readable.
                    State::Closed => {
                        assert_eq!(b.call(|| Ok::<_, ()>(7)), Ok(7));
                        let _ = b.stats();
                    }
                    _ => {}
                }
            })
        })
    };
    assert_eq!(fail(&b), Err(BreakerError::Inner("boom")));
    assert_eq!(b.state(), State::Closed);
    b.trip();
    assert_eq!(b.state(), State::Closed);
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            (State::Closed, State::Open),
            (State::Open, State::Closed),
            (State::Closed, State::Open),
            (State::Open, State::Closed),
        ]
    );
    let stats = b.stats();
    assert_eq!((stats.trips, stats.rejected, stats.user_panics), (2, 2, 0));
}

#[test]
fn a_callback_on_another_thread_reentering_the_breaker_does_not_deadlock() {
    let _leaks = LeakCheck::new();
    let clock = ManualClock::new();
    let b = reentrant(&clock, |b, me| {
        b.consecutive_failures(1).on_state_change(move |_, to| {
            let b = me.get().and_then(Weak::upgrade).expect("breaker alive");
            if to == State::Open {
                b.reset();
            }
            let _ = b.stats();
        })
    });
    let threads = 4;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (b, barrier) = (Arc::clone(&b), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..500 {
                    if i % 3 == 0 {
                        b.trip();
                    }
                    let _ = fail(&b);
                    let _ = ok(&b);
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn a_panicking_is_failure_predicate_counts_a_failure_and_returns_the_error() {
    let clock = ManualClock::new();
    let b = builder(&clock)
        .consecutive_failures(2)
        .is_failure(|e: &&str| -> bool { panic!("predicate exploded on {e}") })
        .build()
        .unwrap();
    assert_eq!(fail(&b), Err(BreakerError::Inner("boom")));
    assert_eq!(
        b.call_with(
            |_: &u8| -> bool { panic!("per-call predicate") },
            || Err::<(), u8>(3)
        ),
        Err(BreakerError::Inner(3))
    );
    let stats = b.stats();
    assert_eq!(
        (stats.state, stats.failures, stats.user_panics),
        (State::Open, 2, 2)
    );
}

#[test]
fn a_refused_closure_whose_drop_panics_is_counted_not_raised() {
    let clock = ManualClock::new();
    let b = builder(&clock).build().unwrap();
    b.force_open();
    let doomed = PanicOnDrop;
    let refused = b.call(move || {
        let _keep = &doomed;
        Ok::<_, ()>(())
    });
    assert_eq!(refused, Err(BreakerError::ForcedOpen));
    let doomed = PanicOnDrop;
    let refused = b.call_with(
        move |_: &()| {
            let _keep = &doomed;
            true
        },
        || Ok::<_, ()>(()),
    );
    assert_eq!(refused, Err(BreakerError::ForcedOpen));
    assert_eq!(b.stats().user_panics, 2);
    // Admitted, the same per-call predicate is dropped unused after a success.
    b.reset();
    let doomed = PanicOnDrop;
    let admitted = b.call_with(
        move |_: &()| {
            let _keep = &doomed;
            true
        },
        || Ok::<_, ()>(5),
    );
    assert_eq!(admitted, Ok(5));
    assert_eq!(b.stats().user_panics, 3);
}

#[test]
fn an_open_period_past_the_time_horizon_lasts_until_reset() {
    // Before: engine time saturates at the horizon, so an opening there ended at once
    // (`now >= open_until` with both at u64::MAX) and every call became a trial.
    let clock = ManualClock::new();
    let b = builder(&clock).consecutive_failures(1).build().unwrap();
    clock.advance(Duration::MAX);
    assert_eq!(fail(&b), Err(BreakerError::Inner("boom")));
    assert_eq!(b.state(), State::Open);
    assert_eq!(
        ok(&b),
        Err(BreakerError::Open {
            retry_after: Duration::MAX
        })
    );
    clock.advance(Duration::MAX);
    assert_eq!(b.state(), State::Open);
    b.reset();
    assert_eq!(ok(&b), Ok(1));
}

#[test]
fn open_for_duration_max_means_until_reset() {
    let clock = ManualClock::new();
    let b = builder(&clock)
        .open_for(Duration::MAX)
        .consecutive_failures(1)
        .build()
        .unwrap();
    assert_eq!(b.stats().open_for, Duration::from_nanos(u64::MAX));
    b.trip();
    clock.advance(Duration::from_secs(1 << 40));
    assert_eq!(b.state(), State::Open);
    assert_eq!(ok(&b).unwrap_err().retry_after(), Some(Duration::MAX));
}

#[test]
fn backoff_never_shortens_the_open_period_by_rounding() {
    // 2^53 + 1 ns is not a float: times 1.0 it used to round down by a nanosecond.
    let clock = ManualClock::new();
    let open_for = Duration::from_nanos((1 << 53) + 1);
    let b = builder(&clock)
        .open_for(open_for)
        .backoff(1.0, Duration::MAX)
        .consecutive_failures(1)
        .build()
        .unwrap();
    b.trip();
    clock.advance(open_for);
    assert_eq!(fail(&b), Err(BreakerError::Inner("boom"))); // failed trial: reopen
    assert_eq!(b.stats().open_for, open_for);
}

#[test]
fn breaker_error_display_never_formats_the_user_error() {
    // An error whose Display panics: the breaker's own Display describes itself only
    // (the inner error is its `source()`), so formatting it cannot reach user code.
    #[derive(Debug)]
    struct Hostile;
    impl std::fmt::Display for Hostile {
        fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            panic!("display exploded")
        }
    }
    impl std::error::Error for Hostile {}
    let b = CircuitBreaker::new();
    let err = b.call(|| Err::<(), _>(Hostile)).unwrap_err();
    assert_eq!(err.to_string(), "the guarded call failed");
    assert_eq!(format!("{err:?}"), "Inner(Hostile)"); // Debug shows the inner error
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn a_per_call_predicate_with_a_panicking_drop_does_not_abort_an_unwinding_call() {
    // `f` panics, so the predicate is dropped unused while unwinding; its panicking
    // drop used to be a second panic during the unwind: an abort.
    let clock = ManualClock::new();
    let b = builder(&clock).consecutive_failures(1).build().unwrap();
    let doomed = PanicOnDrop;
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = b.call_with(
            move |_: &()| {
                let _keep = &doomed;
                true
            },
            || -> Result<(), ()> { panic!("upstream exploded") },
        );
    }));
    assert_eq!(
        unwound.unwrap_err().downcast_ref::<&str>(),
        Some(&"upstream exploded")
    );
    let stats = b.stats();
    assert_eq!(
        (stats.state, stats.failures, stats.user_panics),
        (State::Open, 1, 1)
    );
}
