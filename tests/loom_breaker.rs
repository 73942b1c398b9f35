#![cfg(loom)]
//! Loom models of the breaker's half-open admission: never more than `k` trials run
//! at once, and the slots all come back.
//!
//! Run: `LOOM_MAX_PREEMPTIONS=3 RUSTFLAGS="--cfg loom" cargo test --release --target-dir target/loom --test loom_breaker`

use std::time::Duration;

use corral::{breaker::State, clock::ManualClock, CircuitBreaker};
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

/// A breaker that is half-open and admits `k` trials.
fn half_open(k: u32) -> CircuitBreaker {
    let clock = ManualClock::new();
    let breaker = CircuitBreaker::builder()
        .consecutive_failures(1)
        .open_for(Duration::from_secs(1))
        .half_open_calls(k)
        .clock(clock.clone())
        .build()
        .unwrap();
    breaker.trip();
    clock.advance(Duration::from_secs(1));
    breaker
}

/// Each thread tries one trial; while it holds one it bumps a shared count, which must
/// never exceed `k`. `fail` says whether trials report failure (reopening the breaker).
fn race(threads: usize, k: u32, fail: bool) {
    loom::model(move || {
        let breaker = Arc::new(half_open(k));
        let running = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (breaker, running) = (Arc::clone(&breaker), Arc::clone(&running));
                thread::spawn(move || {
                    if let Ok(guard) = breaker.try_acquire() {
                        if guard.is_trial() {
                            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                            assert!(now <= k as usize, "{now} trials running, limit {k}");
                            running.fetch_sub(1, Ordering::SeqCst);
                        } else {
                            // Only after k successful trials closed the breaker.
                            assert!(!fail);
                        }
                        if fail {
                            guard.failure();
                        } else {
                            guard.success();
                        }
                        true
                    } else {
                        false
                    }
                })
            })
            .collect();
        let admitted = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|&a| a)
            .count();
        assert!(admitted >= 1);
        let stats = breaker.stats();
        assert_eq!(stats.half_open_in_flight, 0);
        if fail {
            assert_eq!(stats.state, State::Open);
        } else if admitted >= k as usize {
            assert_eq!(stats.state, State::Closed);
        }
        assert_eq!(
            stats.successes + stats.failures + stats.rejected,
            threads as u64
        );
    });
}

#[test]
fn two_threads_one_trial_slot() {
    race(2, 1, false);
}

#[test]
fn three_threads_two_trial_slots() {
    race(3, 2, false);
}

#[test]
fn failing_trials_reopen_and_release_their_slots() {
    race(2, 1, true);
}
