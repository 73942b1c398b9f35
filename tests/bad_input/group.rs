//! Bad-input rows for `group` (`TaskGroup`).

use std::sync::mpsc;
use std::time::{Duration, Instant};

use corral::leak::LeakCheck;
use corral::{cancel::CancelReason, pool::SubmitError, CancelToken, Semaphore, TaskGroup};

#[test]
fn group_limit_zero_is_a_config_error() {
    corral::scope(|s| {
        let err = TaskGroup::<(), ()>::new(s).limit(0).unwrap_err();
        assert_eq!((err.field(), err.value()), ("limit", "0"));
    });
}

#[test]
fn group_limit_usize_max_is_a_config_error() {
    corral::scope(|s| {
        let err = TaskGroup::<(), ()>::new(s).limit(usize::MAX).unwrap_err();
        assert_eq!(err.field(), "limit");
        assert_eq!(err.value(), usize::MAX.to_string());
    });
}

#[test]
fn group_limit_semaphore_max_permits_is_accepted() {
    let _check = LeakCheck::new();
    corral::scope(|s| {
        let group = TaskGroup::<u8, ()>::new(s)
            .limit(Semaphore::MAX_PERMITS)
            .unwrap();
        group.spawn(|_| Ok(1));
        assert_eq!(group.wait().unwrap(), vec![1]);
    });
}

/// Runs `f` with a group of limit 1 whose one slot is taken until `f` returns.
fn at_the_limit(f: impl FnOnce(&TaskGroup<'_, '_, u8, ()>)) {
    let _check = LeakCheck::new();
    corral::scope(|s| {
        let group = TaskGroup::<u8, ()>::new(s).limit(1).unwrap();
        let (open, gate) = mpsc::channel::<()>();
        group.spawn(move |_| {
            gate.recv().ok();
            Ok(0)
        });
        f(&group);
        open.send(()).unwrap();
        group.wait().unwrap();
    });
}

#[test]
fn group_spawn_timeout_zero_at_the_limit_is_a_timeout() {
    at_the_limit(|group| {
        let err = group.spawn_timeout(|_| Ok(1), Duration::ZERO).unwrap_err();
        assert!(err.is_timeout());
    });
}

#[test]
fn group_spawn_timeout_duration_max_with_a_free_slot_starts() {
    let _check = LeakCheck::new();
    corral::scope(|s| {
        let group = TaskGroup::<u8, ()>::new(s).limit(1).unwrap();
        group.spawn_timeout(|_| Ok(2), Duration::MAX).unwrap();
        assert_eq!(group.wait().unwrap(), vec![2]);
    });
}

#[test]
fn group_spawn_deadline_in_the_past_at_the_limit_is_a_timeout() {
    at_the_limit(|group| {
        let err = group.spawn_deadline(|_| Ok(3), Instant::now()).unwrap_err();
        assert!(err.is_timeout());
    });
}

#[test]
fn group_spawn_deadline_in_the_past_with_a_free_slot_starts() {
    let _check = LeakCheck::new();
    corral::scope(|s| {
        let group = TaskGroup::<u8, ()>::new(s).limit(1).unwrap();
        group.spawn_deadline(|_| Ok(4), Instant::now()).unwrap();
        assert_eq!(group.wait().unwrap(), vec![4]);
    });
}

#[test]
fn group_spawn_cancellable_with_a_cancelled_token_at_the_limit_is_cancelled() {
    at_the_limit(|group| {
        let token = CancelToken::new();
        token.cancel();
        assert!(matches!(
            group.spawn_cancellable(|_| Ok(5), &token),
            Err(SubmitError::Cancelled(_, CancelReason::Cancelled))
        ));
    });
}

#[test]
fn group_try_spawn_at_the_limit_is_full() {
    at_the_limit(|group| {
        assert!(group.try_spawn(|_| Ok(6)).unwrap_err().is_full());
    });
}
