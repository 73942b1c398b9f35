//! Bad-input rows for `cancel`.

use std::time::{Duration, Instant};

use corral::{cancel::CancelReason, CancelToken};

const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

fn past() -> Instant {
    Instant::now() - Duration::from_millis(1)
}

#[test]
fn cancel_with_timeout_zero_is_already_past_its_deadline() {
    let token = CancelToken::with_timeout(Duration::ZERO);
    assert_eq!(token.reason(), Some(CancelReason::DeadlineExceeded));
    assert_eq!(token.remaining(), Some(Duration::ZERO));
}

#[test]
fn cancel_with_timeout_duration_max_saturates_to_never() {
    let token = CancelToken::with_timeout(Duration::MAX);
    assert_eq!(token.reason(), None);
    assert!(token.deadline().unwrap() > Instant::now() + YEAR);
}

#[test]
fn cancel_with_deadline_in_the_past_is_deadline_exceeded() {
    let token = CancelToken::with_deadline(past());
    assert_eq!(token.reason(), Some(CancelReason::DeadlineExceeded));
    assert_eq!(token.wait(), CancelReason::DeadlineExceeded);
}

#[test]
fn cancel_child_with_timeout_duration_max_keeps_the_parents_earlier_deadline() {
    let parent = CancelToken::with_timeout(Duration::from_secs(60));
    let child = parent.child_with_timeout(Duration::MAX);
    assert_eq!(child.deadline(), parent.deadline());
}

#[test]
fn cancel_child_with_timeout_zero_is_already_past_its_deadline() {
    let parent = CancelToken::new();
    let child = parent.child_with_timeout(Duration::ZERO);
    assert_eq!(child.reason(), Some(CancelReason::DeadlineExceeded));
    assert_eq!(parent.reason(), None);
}

#[test]
fn cancel_child_with_deadline_in_the_past_is_deadline_exceeded() {
    let child = CancelToken::new().child_with_deadline(past());
    assert_eq!(child.reason(), Some(CancelReason::DeadlineExceeded));
}

#[test]
fn cancel_wait_timeout_zero_returns_none_at_once() {
    assert_eq!(CancelToken::new().wait_timeout(Duration::ZERO), None);
}

#[test]
fn cancel_wait_timeout_duration_max_returns_when_cancelled() {
    let token = CancelToken::new();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| token.wait_timeout(Duration::MAX));
        token.cancel();
        assert_eq!(waiter.join().unwrap(), Some(CancelReason::Cancelled));
    });
}

#[test]
fn cancel_wait_deadline_in_the_past_returns_none_at_once() {
    assert_eq!(CancelToken::new().wait_deadline(past()), None);
}

#[test]
fn cancel_expired_receiver_of_a_saturated_deadline_never_fires() {
    let token = CancelToken::with_timeout(Duration::MAX);
    assert!(token
        .expired()
        .recv_timeout(Duration::from_millis(1))
        .is_err());
}

#[test]
fn cancel_expired_receiver_of_a_past_deadline_fires_at_once() {
    let token = CancelToken::with_deadline(past());
    assert!(token
        .expired()
        .recv_timeout(Duration::from_secs(10))
        .is_ok());
}

#[test]
fn cancel_on_an_expired_token_keeps_deadline_exceeded() {
    let token = CancelToken::with_deadline(past());
    token.cancel();
    assert_eq!(token.reason(), Some(CancelReason::DeadlineExceeded));
}

#[test]
fn cancel_on_cancel_of_an_expired_token_runs_at_once() {
    let token = CancelToken::with_deadline(past());
    let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let r = ran.clone();
    let _guard = token.on_cancel(move || r.store(true, std::sync::atomic::Ordering::SeqCst));
    assert!(ran.load(std::sync::atomic::Ordering::SeqCst));
}
