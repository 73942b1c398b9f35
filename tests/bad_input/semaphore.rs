//! Bad-input rows for `semaphore`: every count, capacity, duration and deadline
//! parameter with zero, maximum and past values.

use corral::leak::LeakCheck;
use corral::{
    cancel::CancelReason,
    semaphore::{AcquireError, TryAcquireError},
    CancelToken, Semaphore,
};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const MAX: usize = Semaphore::MAX_PERMITS;

/// Polls `cond` until it holds, failing after a generous bound (the machine is busy).
fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::yield_now();
    }
}

/// `in_use + available == capacity` (no shrink pending in these rows).
fn balanced(sem: &Semaphore) {
    let s = sem.stats();
    assert_eq!(s.in_use + s.available, s.capacity, "{s:?}");
}

// ---- new / try_new ----------------------------------------------------------------------

#[test]
fn semaphore_new_zero_refuses_every_acquire_with_above_capacity() {
    let sem = Semaphore::new(0);
    let above = AcquireError::AboveCapacity {
        requested: 1,
        capacity: 0,
    };
    assert_eq!(sem.acquire().unwrap_err(), above);
    assert_eq!(sem.acquire_timeout(Duration::MAX).unwrap_err(), above);
    assert_eq!(
        sem.try_acquire().unwrap_err(),
        TryAcquireError::AboveCapacity {
            requested: 1,
            capacity: 0
        }
    );
    assert_eq!(sem.stats().above_capacity, 3);
}

#[test]
fn semaphore_new_max_permits_is_accepted_and_lends_them_all() {
    let sem = Semaphore::new(MAX);
    let all = sem.try_acquire_many(MAX).unwrap();
    assert_eq!((sem.available(), all.num_permits()), (0, MAX));
    drop(all);
    assert_eq!(sem.available(), MAX);
}

#[test]
fn semaphore_try_new_usize_max_is_a_config_error() {
    let err = Semaphore::try_new(usize::MAX).unwrap_err();
    assert_eq!(
        (err.field(), err.value()),
        ("permits", &*usize::MAX.to_string())
    );
    let err = Semaphore::try_new(MAX + 1).unwrap_err();
    assert_eq!(err.field(), "permits");
}

#[test]
fn semaphore_new_usize_max_panics_as_documented() {
    // `new` documents this panic (`# Panics`); `try_new` is the non-panicking form.
    let panicked = std::panic::catch_unwind(|| Semaphore::new(usize::MAX));
    assert!(panicked.is_err());
}

// ---- acquire_many(n) ---------------------------------------------------------------------

#[test]
fn semaphore_acquire_many_zero_is_an_empty_permit_unless_closed() {
    let sem = Semaphore::new(0);
    assert_eq!(sem.acquire_many(0).unwrap().num_permits(), 0);
    assert_eq!(sem.try_acquire_many(0).unwrap().num_permits(), 0);
    let sem = Arc::new(sem);
    assert_eq!(sem.acquire_many_owned(0).unwrap().num_permits(), 0);
    sem.close();
    assert_eq!(sem.acquire_many(0).unwrap_err(), AcquireError::Closed);
    assert_eq!(
        sem.try_acquire_many(0).unwrap_err(),
        TryAcquireError::Closed
    );
}

#[test]
fn semaphore_acquire_many_usize_max_is_above_capacity_at_once() {
    let sem = Arc::new(Semaphore::new(MAX));
    let above = AcquireError::AboveCapacity {
        requested: usize::MAX,
        capacity: MAX,
    };
    assert_eq!(sem.acquire_many(usize::MAX).unwrap_err(), above);
    assert_eq!(sem.acquire_many_owned(usize::MAX).unwrap_err(), above);
    assert_eq!(
        sem.try_acquire_many(usize::MAX).unwrap_err(),
        TryAcquireError::AboveCapacity {
            requested: usize::MAX,
            capacity: MAX
        }
    );
    assert_eq!(sem.available(), MAX);
}

#[test]
fn semaphore_acquire_many_above_capacity_is_above_capacity_at_once() {
    let sem = Semaphore::new(3);
    let _held = sem.acquire_many(2).unwrap();
    assert_eq!(
        sem.acquire_many(4).unwrap_err(),
        AcquireError::AboveCapacity {
            requested: 4,
            capacity: 3
        }
    );
    balanced(&sem);
}

// ---- add_permits / set_capacity / forget ----------------------------------------------------

#[test]
fn semaphore_add_permits_zero_changes_nothing() {
    let sem = Semaphore::new(2);
    sem.add_permits(0).unwrap();
    assert_eq!((sem.capacity(), sem.available()), (2, 2));
}

#[test]
fn semaphore_add_permits_past_the_maximum_is_a_config_error_and_changes_nothing() {
    let sem = Semaphore::new(5);
    let err = sem.add_permits(usize::MAX).unwrap_err();
    assert_eq!(
        (err.field(), err.value()),
        ("permits", &*usize::MAX.to_string())
    );
    let err = sem.add_permits(MAX - 4).unwrap_err();
    assert_eq!(err.field(), "permits");
    assert_eq!((sem.capacity(), sem.available()), (5, 5));
    sem.add_permits(MAX - 5).unwrap(); // exactly the maximum
    assert_eq!((sem.capacity(), sem.available()), (MAX, MAX));
}

#[test]
fn semaphore_set_capacity_above_the_maximum_is_a_config_error_and_changes_nothing() {
    let sem = Semaphore::new(5);
    let err = sem.set_capacity(usize::MAX).unwrap_err();
    assert_eq!(
        (err.field(), err.value()),
        ("capacity", &*usize::MAX.to_string())
    );
    assert_eq!((sem.capacity(), sem.available()), (5, 5));
    assert_eq!(sem.set_capacity(MAX).unwrap(), 5);
    assert_eq!(sem.available(), MAX);
}

#[test]
fn semaphore_set_capacity_zero_wakes_queued_waiters_with_above_capacity() {
    let _leaks = LeakCheck::new();
    let sem = Semaphore::new(2);
    let held = sem.acquire_many(2).unwrap();
    thread::scope(|s| {
        let waiters: Vec<_> = (0..2)
            .map(|_| s.spawn(|| sem.acquire().map(|p| p.num_permits())))
            .collect();
        wait_for("both waiters to queue", || sem.stats().waiting == 2);
        assert_eq!(sem.set_capacity(0).unwrap(), 2);
        for waiter in waiters {
            assert_eq!(
                waiter.join().unwrap(),
                Err(AcquireError::AboveCapacity {
                    requested: 1,
                    capacity: 0
                })
            );
        }
    });
    // The shrink is debt until the held permits come back; then nothing is free.
    let s = sem.stats();
    assert_eq!((s.capacity, s.available, s.in_use, s.waiting), (0, 0, 2, 0));
    drop(held);
    let s = sem.stats();
    assert_eq!((s.capacity, s.available, s.in_use), (0, 0, 0));
}

#[test]
fn semaphore_forget_then_add_permits_restores_the_capacity() {
    let sem = Semaphore::new(4);
    sem.acquire_many(3).unwrap().forget();
    assert_eq!((sem.capacity(), sem.available()), (1, 1));
    sem.acquire_many(0).unwrap().forget(); // forgetting nothing changes nothing
    sem.add_permits(3).unwrap();
    assert_eq!((sem.capacity(), sem.available()), (4, 4));
    balanced(&sem);
}

#[test]
fn semaphore_forget_below_a_pending_shrink_pays_the_debt() {
    let sem = Semaphore::new(4);
    let held = sem.acquire_many(4).unwrap();
    sem.set_capacity(1).unwrap(); // 3 owed
    held.forget(); // 4 leave for good: the capacity goes to 0 and the debt is paid
    let s = sem.stats();
    assert_eq!((s.capacity, s.available, s.in_use), (0, 0, 0));
    sem.add_permits(2).unwrap();
    assert_eq!(sem.available(), 2);
}

// ---- timeouts, deadlines, tokens -------------------------------------------------------------

#[test]
fn semaphore_timeout_zero_takes_free_permits_or_times_out_at_once() {
    let sem = Semaphore::new(1);
    let first = sem.acquire_timeout(Duration::ZERO).unwrap();
    assert_eq!(
        sem.acquire_many_timeout(1, Duration::ZERO).unwrap_err(),
        AcquireError::Timeout
    );
    assert_eq!(sem.stats().timed_out, 1);
    drop(first);
}

#[test]
fn semaphore_timeout_duration_max_waits_without_panicking() {
    let _leaks = LeakCheck::new();
    let sem = Semaphore::new(1);
    let held = sem.acquire().unwrap();
    thread::scope(|s| {
        let waiter = s.spawn(|| sem.acquire_timeout(Duration::MAX).map(|p| p.num_permits()));
        wait_for("the waiter to queue", || sem.stats().waiting == 1);
        drop(held);
        assert_eq!(waiter.join().unwrap(), Ok(1));
    });
    let owned = Arc::new(Semaphore::new(1));
    assert!(owned.acquire_many_owned_timeout(1, Duration::MAX).is_ok());
}

#[test]
fn semaphore_deadline_in_the_past_takes_free_permits_or_times_out_at_once() {
    let sem = Semaphore::new(1);
    let past = Instant::now();
    thread::yield_now();
    let first = sem.acquire_deadline(past).unwrap();
    assert_eq!(
        sem.acquire_deadline(past).unwrap_err(),
        AcquireError::Timeout
    );
    assert_eq!(
        sem.acquire_many_deadline(1, past).unwrap_err(),
        AcquireError::Timeout
    );
    drop(first);
    balanced(&sem);
}

#[test]
fn semaphore_already_cancelled_token_takes_free_permits_or_reports_cancelled() {
    let sem = Semaphore::new(1);
    let token = CancelToken::new();
    token.cancel();
    let first = sem.acquire_cancellable(&token).unwrap();
    assert_eq!(
        sem.acquire_cancellable(&token).unwrap_err(),
        AcquireError::Cancelled(CancelReason::Cancelled)
    );
    assert_eq!(sem.stats().cancelled, 1);
    drop(first);
}

#[test]
fn semaphore_token_with_a_zero_timeout_reports_its_deadline() {
    let sem = Semaphore::new(1);
    let _held = sem.acquire().unwrap();
    let token = CancelToken::with_timeout(Duration::ZERO);
    let err = sem.acquire_many_cancellable(1, &token).unwrap_err();
    assert!(matches!(err, AcquireError::Cancelled(_)), "{err:?}");
}

// ---- close ----------------------------------------------------------------------------------

#[test]
fn semaphore_close_while_waiters_queue_wakes_them_with_closed() {
    let _leaks = LeakCheck::new();
    let sem = Semaphore::new(3);
    let held = sem.acquire_many(3).unwrap();
    thread::scope(|s| {
        let waiters: Vec<_> = (1..=3)
            .map(|n| {
                let sem = &sem;
                s.spawn(move || sem.acquire_many(n).map(|p| p.num_permits()))
            })
            .collect();
        wait_for("the waiters to queue", || sem.stats().waiting == 3);
        assert!(sem.close());
        for waiter in waiters {
            assert_eq!(waiter.join().unwrap(), Err(AcquireError::Closed));
        }
    });
    drop(held); // held permits come back normally after a close
    let s = sem.stats();
    assert_eq!(
        (s.available, s.in_use, s.waiting, s.closed),
        (3, 0, 0, true)
    );
}

#[test]
fn semaphore_set_capacity_max_while_waiters_queue_serves_them() {
    let _leaks = LeakCheck::new();
    let sem = Semaphore::new(2);
    let held = sem.acquire_many(2).unwrap();
    thread::scope(|s| {
        let first = s.spawn(|| sem.acquire_many(1).map(|p| p.num_permits()));
        wait_for("the first waiter to queue", || sem.stats().waiting == 1);
        let second = s.spawn(|| sem.acquire_many(2).map(|p| p.num_permits()));
        wait_for("both waiters to queue", || sem.stats().waiting == 2);
        assert_eq!(sem.set_capacity(MAX).unwrap(), 2);
        assert_eq!(first.join().unwrap(), Ok(1));
        assert_eq!(second.join().unwrap(), Ok(2));
    });
    drop(held);
    let s = sem.stats();
    assert_eq!(
        (s.capacity, s.available, s.in_use, s.waiting),
        (MAX, MAX, 0, 0)
    );
}
