//! Clock, SystemClock and ManualClock through the public API.

use std::time::{Duration, Instant};

use corral::leak::LeakCheck;
use corral::{
    clock::{Clock, ManualClock, SystemClock},
    CancelToken,
};
use crossbeam_channel::bounded;

#[test]
fn manual_clock_moves_only_when_advanced_and_clones_share_time() {
    let clock = ManualClock::new();
    let other = clock.clone();
    let t0 = clock.now();
    assert_eq!(clock.now(), t0);
    other.advance(Duration::from_secs(3));
    assert_eq!(clock.now() - t0, Duration::from_secs(3));
    assert_eq!(clock.elapsed(), Duration::from_secs(3));
}

#[test]
fn a_sleeper_wakes_only_once_time_reaches_its_deadline() {
    let _check = LeakCheck::new();
    let clock = ManualClock::new();
    let wake_at = clock.now() + Duration::from_secs(10);
    let (woke_tx, woke_rx) = bounded(1);
    corral::scope(|s| {
        s.spawn(|| woke_tx.send(clock.sleep_until(wake_at, None)).unwrap());
        clock.advance(Duration::from_secs(9));
        // Not yet: the clock says 9 s.
        assert!(woke_rx.recv_timeout(Duration::from_millis(20)).is_err());
        clock.advance(Duration::from_secs(1));
        assert_eq!(woke_rx.recv_timeout(Duration::from_secs(10)), Ok(true));
    });
}

#[test]
fn a_manual_sleeper_returns_false_when_cancelled() {
    let _check = LeakCheck::new();
    let clock = ManualClock::new();
    let token = CancelToken::new();
    corral::scope(|s| {
        let sleeper =
            s.spawn(|| clock.sleep_until(clock.now() + Duration::from_secs(60), Some(&token)));
        token.cancel();
        assert!(!sleeper.join().unwrap());
    });
}

#[test]
fn system_clock_sleeps_until_the_deadline_or_the_cancel() {
    let clock = SystemClock;
    let start = Instant::now();
    assert!(clock.sleep_until(start + Duration::from_millis(5), None));
    assert!(clock.now() >= start + Duration::from_millis(5));
    let token = CancelToken::new();
    token.cancel();
    assert!(!clock.sleep_until(Instant::now() + Duration::from_secs(60), Some(&token)));
}

#[test]
fn a_manual_sleeper_wakes_at_its_tokens_real_deadline() {
    let clock = ManualClock::new();
    let token = CancelToken::with_timeout(Duration::from_millis(20));
    // Nobody advances the clock or cancels: the token's own deadline ends the sleep.
    assert!(!clock.sleep_until(clock.now() + Duration::from_secs(60), Some(&token)));
    assert!(token.is_cancelled());
}

#[test]
fn manual_clock_advanced_by_duration_max_saturates_instead_of_wrapping() {
    let clock = ManualClock::new();
    let t0 = clock.now();
    clock.advance(Duration::MAX);
    let far = clock.now();
    assert!(far > t0);
    // A further nanosecond used to wrap the offset back to the start.
    clock.advance(Duration::from_nanos(1));
    assert_eq!(clock.now(), far);
    clock.advance(Duration::MAX);
    assert_eq!(clock.now(), far);
    assert_eq!(clock.elapsed(), Duration::from_nanos(u64::MAX));
}

#[test]
fn manual_clock_never_goes_backwards_under_racing_advances() {
    let _check = LeakCheck::new();
    let clock = ManualClock::new();
    corral::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..1_000 {
                    clock.advance(Duration::from_secs(u64::MAX / 1_000));
                }
            });
        }
        let mut last = clock.now();
        for _ in 0..1_000 {
            let now = clock.now();
            assert!(now >= last, "the clock went backwards");
            last = now;
        }
    });
    assert_eq!(clock.elapsed(), Duration::from_nanos(u64::MAX));
}

#[test]
fn a_cancel_token_with_timeout_duration_max_is_not_cancelled() {
    let token = CancelToken::with_timeout(Duration::MAX);
    assert!(!token.is_cancelled());
    assert!(token.deadline().is_some_and(|d| d > Instant::now()));
    let child = token.child_with_timeout(Duration::MAX);
    assert!(!child.is_cancelled());
    assert_eq!(token.wait_timeout(Duration::ZERO), None);
}
