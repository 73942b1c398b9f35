#![cfg(loom)]
//! Loom models of the GCRA engine behind `RateLimiter`: every interleaving of a few
//! concurrent decisions on the one atomic word of state.
//!
//! Run: `LOOM_MAX_PREEMPTIONS=3 RUSTFLAGS="--cfg loom" cargo test --release
//! --target-dir target/loom --test loom_rate`

use loom::sync::Arc;
use loom::thread;
use std::ops::RangeInclusive;
use std::time::Duration;

use corral::{clock::ManualClock, RateLimiter};

fn limiter(burst: u32) -> RateLimiter<ManualClock> {
    limiter_on(&ManualClock::new(), burst)
}

/// One cell per second with a burst of `burst`, on `clock`.
fn limiter_on(clock: &ManualClock, burst: u32) -> RateLimiter<ManualClock> {
    RateLimiter::per_second(1)
        .burst(burst)
        .clock(clock.clone())
        .build()
        .unwrap()
}

/// Cells admitted by `check` calls until one is refused (time is frozen).
fn drain(limiter: &RateLimiter<ManualClock>) -> u32 {
    let mut cells = 0;
    while limiter.check().is_ok() {
        cells += 1;
    }
    cells
}

#[test]
fn concurrent_check_n_never_admits_more_than_the_quota() {
    loom::model(|| {
        let limiter = Arc::new(limiter(3));
        let others: Vec<_> = (0..2)
            .map(|_| {
                let limiter = Arc::clone(&limiter);
                thread::spawn(move || if limiter.check_n(2).is_ok() { 2 } else { 0 })
            })
            .collect();
        let mine = if limiter.check().is_ok() { 1 } else { 0 };
        let total: u32 = mine + others.into_iter().map(|t| t.join().unwrap()).sum::<u32>();
        // Whatever the order, the one-cell check fits and exactly one pair fits.
        assert_eq!(total, 3);
        assert_eq!(drain(&limiter), 0);
    });
}

#[test]
fn a_cancelled_reservation_comes_back_exactly_once() {
    loom::model(|| {
        let limiter = Arc::new(limiter(2));
        let canceller = {
            let limiter = Arc::clone(&limiter);
            thread::spawn(move || {
                let r = limiter.reserve_n(2).unwrap();
                r.cancel();
            })
        };
        let checked = if limiter.check().is_ok() { 1 } else { 0 };
        canceller.join().unwrap();
        // The reservation's cells are back in full (no later claim could have built on
        // them except the check, whose cell stays counted): never more, never lost.
        assert_eq!(checked + drain(&limiter), 2);
    });
}

#[test]
fn cancelling_while_others_reserve_never_overbooks() {
    loom::model(|| {
        let limiter = Arc::new(limiter(2));
        let canceller = {
            let limiter = Arc::clone(&limiter);
            thread::spawn(move || {
                let r = limiter.reserve_n(2).unwrap();
                r.cancel();
            })
        };
        let kept = limiter.reserve();
        let kept_now = u32::from(kept.is_ready());
        canceller.join().unwrap();
        // Cells usable now: the kept reservation's (if ready) plus what checks admit.
        assert!(kept_now + drain(&limiter) <= 2);
    });
}

#[test]
fn a_waiter_cancelled_while_asleep_gives_its_slot_back() {
    use corral::{rate::WaitError, CancelToken};
    use std::time::Duration;

    loom::model(|| {
        let clock = ManualClock::new();
        let limiter = Arc::new(limiter_on(&clock, 1));
        limiter.check().unwrap(); // the next slot is 1 s away
        let token = CancelToken::new();
        let waiter = {
            let (limiter, token) = (Arc::clone(&limiter), token.clone());
            thread::spawn(move || limiter.wait_cancellable(&token))
        };
        token.cancel();
        let result = waiter.join().unwrap();
        assert!(matches!(result, Err(WaitError::Cancelled(_))));
        // Whether the waiter was cancelled before claiming, or claimed and then gave
        // the slot back, the slot at 1 s is free again, exactly once.
        clock.advance(Duration::from_secs(1));
        assert_eq!(drain(&limiter), 1);
    });
}

/// `check` racing `set_rate` or `set_burst` at one frozen instant: capacity is kept
/// in cells (and the cells available are kept by a burst change), so whatever the
/// interleaving, the calls admitted during the change and after it come to exactly
/// the cells that were available: 3 (`from_full` says what a full limiter may give:
/// a smaller burst caps it when the change comes first).
///
/// Three starts: a full limiter, one with a cell in use (a TAT ahead of now to
/// convert), and a full limiter still at the instant it was built. At that instant
/// alone a call may be charged by the old limit after the change (see `Gcra` in
/// src/rate/gcra.rs): never more than the burst, possibly one short.
fn racing_checks(change: fn(&RateLimiter<ManualClock>), from_full: RangeInclusive<u32>) {
    for (moved, in_use) in [(true, 0), (true, 1), (false, 0)] {
        let from_full = from_full.clone();
        loom::model(move || {
            let clock = ManualClock::new();
            let limiter = Arc::new(limiter_on(&clock, 3));
            if moved {
                clock.advance(Duration::from_secs(10));
            }
            for _ in 0..in_use {
                limiter.check().unwrap();
            }
            let checker = {
                let limiter = Arc::clone(&limiter);
                thread::spawn(move || drain(&limiter))
            };
            change(&limiter);
            let total = in_use + checker.join().unwrap() + drain(&limiter);
            if moved && in_use == 0 {
                assert!(from_full.contains(&total), "{total} admitted from full");
            } else if moved {
                assert_eq!(total, 3, "{in_use} in use before the change");
            } else {
                assert!(
                    (2..=3).contains(&total),
                    "{total} admitted at the base instant"
                );
            }
        });
    }
}

#[test]
fn a_faster_rate_set_while_checking_admits_exactly_the_burst() {
    racing_checks(|l| l.set_rate(2, Duration::from_secs(1)).unwrap(), 3..=3);
}

#[test]
fn a_slower_rate_set_while_checking_admits_exactly_the_burst() {
    racing_checks(|l| l.set_rate(1, Duration::from_secs(2)).unwrap(), 3..=3);
}

#[test]
fn a_larger_burst_set_while_checking_admits_exactly_the_cells_available() {
    // The cells available are kept; the extra burst fills up at the rate.
    racing_checks(|l| l.set_burst(5).unwrap(), 3..=3);
}

#[test]
fn a_smaller_burst_set_while_checking_admits_exactly_the_cells_available() {
    racing_checks(|l| l.set_burst(2).unwrap(), 2..=3);
}

#[test]
fn a_reservation_cancelled_across_a_rate_change_never_frees_anothers_cell() {
    loom::model(|| {
        let clock = ManualClock::new();
        let limiter = Arc::new(limiter_on(&clock, 3));
        clock.advance(Duration::from_secs(10));
        let reserver = {
            let limiter = Arc::clone(&limiter);
            thread::spawn(move || {
                let reservation = limiter.reserve();
                // Cells it still holds: none if the cancel gave them back.
                u32::from(!reservation.cancel())
            })
        };
        let checker = {
            let limiter = Arc::clone(&limiter);
            thread::spawn(move || u32::from(limiter.check().is_ok()))
        };
        limiter.set_rate(2, Duration::from_secs(1)).unwrap();
        let (reserved, checked) = (reserver.join().unwrap(), checker.join().unwrap());
        let drained = drain(&limiter);
        let total = reserved + checked + drained;
        assert!(
            total <= 3,
            "{total} cells of a burst of 3: {reserved} reserved, {checked} checked, {drained} after"
        );
    });
}
