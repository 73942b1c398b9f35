//! Behaviour of `Semaphore` through the public API: the five forms, capacity rules,
//! resizing in both directions under load, FIFO fairness and the starvation bound,
//! the cancelled-head wake-up, and a randomized stress test.

mod common;
use common::XorShift;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use corral::leak::LeakCheck;
use corral::{
    cancel::CancelReason,
    semaphore::{AcquireError, OwnedPermit, Permit, TryAcquireError},
    CancelToken, Semaphore,
};

/// "Should happen" bound: generous, the machine is loaded.
const PATIENCE: Duration = Duration::from_secs(30);

/// Polls `cond` until it holds, failing the test after `PATIENCE`.
fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::yield_now();
    }
}

#[test]
fn public_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Semaphore>();
    send_sync::<Permit<'static>>();
    send_sync::<OwnedPermit>();
    send_sync::<AcquireError>();
    send_sync::<TryAcquireError>();
}

#[test]
fn permits_come_back_on_drop() {
    let sem = Semaphore::new(3);
    let a = sem.acquire().unwrap();
    let b = sem.acquire_many(2).unwrap();
    assert_eq!((a.num_permits(), b.num_permits()), (1, 2));
    assert_eq!(sem.available(), 0);
    drop(b);
    assert_eq!(sem.available(), 2);
    drop(a);
    assert_eq!(sem.available(), 3);
    let stats = sem.stats();
    assert_eq!((stats.capacity, stats.in_use, stats.waiting), (3, 0, 0));
}

#[test]
fn permits_come_back_when_the_holder_panics() {
    let sem = Semaphore::new(2);
    let result = catch_unwind(AssertUnwindSafe(|| {
        let _permit = sem.acquire_many(2).unwrap();
        panic!("holder failed");
    }));
    assert!(result.is_err());
    assert_eq!(sem.available(), 2);
}

#[test]
fn try_acquire_reports_each_refusal() {
    let sem = Semaphore::new(2);
    let held = sem.try_acquire_many(2).unwrap();
    assert_eq!(sem.try_acquire().unwrap_err(), TryAcquireError::NoPermits);
    assert_eq!(
        sem.try_acquire_many(3).unwrap_err(),
        TryAcquireError::AboveCapacity {
            requested: 3,
            capacity: 2
        }
    );
    drop(held);
    sem.close();
    assert_eq!(sem.try_acquire().unwrap_err(), TryAcquireError::Closed);
    assert_eq!(
        TryAcquireError::NoPermits.to_string(),
        "no permits available"
    );
}

#[test]
fn request_above_capacity_fails_at_once_naming_both_numbers() {
    let sem = Semaphore::new(3);
    let started = Instant::now();
    let err = sem.acquire_many(4).unwrap_err();
    assert_eq!(
        err,
        AcquireError::AboveCapacity {
            requested: 4,
            capacity: 3
        }
    );
    let text = err.to_string();
    assert!(text.contains('4') && text.contains('3'), "{text}");
    assert!(started.elapsed() < PATIENCE);
    assert_eq!(sem.stats().above_capacity, 1);
}

#[test]
fn zero_capacity_refuses_until_permits_are_added() {
    let sem = Semaphore::new(0);
    assert_eq!(
        sem.acquire().unwrap_err(),
        AcquireError::AboveCapacity {
            requested: 1,
            capacity: 0
        }
    );
    let zero = sem.acquire_many(0).unwrap();
    assert_eq!(zero.num_permits(), 0);
    sem.add_permits(1).unwrap();
    let one = sem.acquire().unwrap();
    assert_eq!(sem.available(), 0);
    drop((zero, one));
    assert_eq!(sem.available(), 1);
}

#[test]
fn bounded_forms_time_out_or_report_the_cancel_reason() {
    let sem = Semaphore::new(1);
    let _held = sem.acquire().unwrap();
    assert_eq!(
        sem.acquire_timeout(Duration::from_millis(10)).unwrap_err(),
        AcquireError::Timeout
    );
    assert_eq!(
        sem.acquire_many_deadline(1, Instant::now() + Duration::from_millis(10))
            .unwrap_err(),
        AcquireError::Timeout
    );
    let expired = CancelToken::with_timeout(Duration::from_millis(10));
    assert_eq!(
        sem.acquire_cancellable(&expired).unwrap_err(),
        AcquireError::Cancelled(CancelReason::DeadlineExceeded)
    );
    let stats = sem.stats();
    assert_eq!((stats.timed_out, stats.cancelled, stats.waiting), (2, 1, 0));
}

#[test]
fn cancelling_the_token_wakes_a_waiter_promptly() {
    let _check = LeakCheck::new();
    let sem = Semaphore::new(1);
    let token = CancelToken::new();
    let _held = sem.acquire().unwrap();
    corral::scope(|s| {
        let waiter = s.spawn(|| sem.acquire_cancellable(&token).map(drop));
        wait_for("the waiter to queue", || sem.stats().waiting == 1);
        token.cancel();
        assert_eq!(
            waiter.join().unwrap(),
            Err(AcquireError::Cancelled(CancelReason::Cancelled))
        );
    });
    assert_eq!(sem.stats().waiting, 0);
}

#[test]
fn close_wakes_every_waiter_and_refuses_later_acquires() {
    let _check = LeakCheck::new();
    let sem = Semaphore::new(2);
    let held = sem.acquire_many(2).unwrap();
    corral::scope(|s| {
        let waiters: Vec<_> = (1..=2)
            .map(|n| {
                let sem = &sem;
                s.spawn(move || sem.acquire_many(n).map(drop))
            })
            .collect();
        wait_for("both waiters to queue", || sem.stats().waiting == 2);
        assert!(sem.close());
        for waiter in waiters {
            assert_eq!(waiter.join().unwrap(), Err(AcquireError::Closed));
        }
    });
    assert_eq!(sem.acquire().unwrap_err(), AcquireError::Closed);
    drop(held); // held permits are still returned
    assert_eq!(sem.available(), 2);
    assert!(sem.is_closed());
}

#[test]
fn forget_shrinks_the_capacity() {
    let sem = Semaphore::new(5);
    sem.acquire_many(2).unwrap().forget();
    assert_eq!((sem.capacity(), sem.available()), (3, 3));
    assert!(matches!(
        sem.acquire_many(4),
        Err(AcquireError::AboveCapacity {
            requested: 4,
            capacity: 3
        })
    ));
}

#[test]
fn owned_permits_move_to_other_threads() {
    let _check = LeakCheck::new();
    let sem = Arc::new(Semaphore::new(2));
    let permits: Vec<OwnedPermit> = (0..2).map(|_| sem.acquire_owned().unwrap()).collect();
    assert!(sem.try_acquire_owned().is_err());
    corral::scope(|s| {
        for permit in permits {
            s.spawn(move || drop(permit));
        }
    });
    assert_eq!(sem.available(), 2);
    let many = sem
        .acquire_many_owned_timeout(2, Duration::from_secs(1))
        .unwrap();
    assert!(Arc::ptr_eq(many.semaphore(), &sem));
    many.forget();
    assert_eq!(sem.capacity(), 0);
}

#[test]
fn growing_wakes_the_waiters_it_can_serve() {
    let _check = LeakCheck::new();
    let sem = Semaphore::new(2);
    let held = sem.acquire_many(2).unwrap();
    corral::scope(|s| {
        let waiter = s.spawn(|| {
            sem.acquire_many_timeout(2, PATIENCE)
                .map(|p| p.num_permits())
        });
        wait_for("the waiter to queue", || sem.stats().waiting == 1);
        assert_eq!(sem.set_capacity(4).unwrap(), 2);
        assert_eq!(waiter.join().unwrap(), Ok(2));
    });
    drop(held);
    assert_eq!(sem.available(), 4);
}

#[test]
fn shrinking_takes_effect_as_permits_are_released() {
    let sem = Semaphore::new(4);
    let mut held: Vec<_> = (0..4).map(|_| sem.acquire().unwrap()).collect();
    sem.set_capacity(2).unwrap();
    assert_eq!(sem.capacity(), 2);
    assert_eq!(sem.stats().in_use, 4, "a held permit is never revoked");
    held.pop();
    held.pop();
    assert_eq!(sem.available(), 0, "the first two releases pay the shrink");
    assert!(sem.try_acquire().is_err());
    held.pop();
    assert_eq!(sem.available(), 1);
    held.pop();
    assert_eq!(sem.available(), 2);
    // add_permits pays off debt first too.
    let both = sem.acquire_many(2).unwrap();
    sem.set_capacity(0).unwrap();
    sem.add_permits(1).unwrap();
    assert_eq!((sem.capacity(), sem.available()), (1, 0));
    drop(both);
    assert_eq!(sem.available(), 1);
}

#[test]
fn a_queued_waiter_that_no_longer_fits_is_woken_with_the_capacity_error() {
    let _check = LeakCheck::new();
    let sem = Semaphore::new(4);
    let held = sem.acquire_many(4).unwrap();
    corral::scope(|s| {
        let big = s.spawn(|| sem.acquire_many(4).map(drop));
        wait_for("the waiter to queue", || sem.stats().waiting == 1);
        sem.set_capacity(3).unwrap();
        assert_eq!(
            big.join().unwrap(),
            Err(AcquireError::AboveCapacity {
                requested: 4,
                capacity: 3
            })
        );
    });
    drop(held);
    assert_eq!(sem.available(), 3);
}

#[test]
fn large_head_waiter_is_served_before_the_small_ones_behind_it() {
    let _check = LeakCheck::new();
    let sem = Semaphore::new(4);
    let order = Mutex::new(Vec::new());
    let all = sem.acquire_many(4).unwrap();
    corral::scope(|s| {
        let (sem, order) = (&sem, &order);
        s.spawn(move || {
            let _p = sem.acquire_many(4).unwrap();
            order.lock().unwrap().push("large");
        });
        wait_for("the large waiter to queue", || sem.stats().waiting == 1);
        for i in 0..8 {
            s.spawn(move || {
                let _p = sem.acquire().unwrap();
                order.lock().unwrap().push("small");
            });
            wait_for("a small waiter to queue", || sem.stats().waiting == i + 2);
        }
        drop(all);
    });
    let order = order.into_inner().unwrap();
    assert_eq!(order.len(), 9);
    assert_eq!(order[0], "large", "{order:?}");
    assert_eq!(sem.available(), 4);
}

#[test]
fn large_request_is_not_starved_by_a_stream_of_small_ones() {
    let _check = LeakCheck::new();
    let sem = Semaphore::new(4);
    let stop = AtomicBool::new(false);
    let rounds = AtomicUsize::new(0);
    corral::scope(|s| {
        // Three streamers hand over hand: each takes its next permit before dropping
        // the one it holds, so without a fairness bound 4 permits are never free at
        // once. One whose next permit does not come within 2 ms lets go entirely.
        for _ in 0..3 {
            s.spawn(|| {
                let mut mine = None;
                while !stop.load(Ordering::Relaxed) {
                    let next = sem.acquire_timeout(Duration::from_millis(2)).ok();
                    rounds.fetch_add(next.is_some() as usize, Ordering::Relaxed);
                    mine = next;
                }
                drop(mine);
            });
        }
        wait_for("the small ones to get going", || {
            rounds.load(Ordering::Relaxed) > 1000
        });
        let big = sem.acquire_many_timeout(4, PATIENCE);
        stop.store(true, Ordering::Relaxed);
        assert_eq!(big.map(|p| p.num_permits()), Ok(4));
    });
    assert_eq!(sem.available(), 4);
}

#[test]
fn cancelled_head_waiter_wakes_the_waiters_behind_it() {
    let _check = LeakCheck::new();
    let sem = Semaphore::new(3);
    let token = CancelToken::new();
    let mut held: Vec<_> = (0..3).map(|_| sem.acquire().unwrap()).collect();
    corral::scope(|s| {
        let head = s.spawn(|| sem.acquire_many_cancellable(3, &token).map(drop));
        wait_for("the head to queue", || sem.stats().waiting == 1);
        let behind = s.spawn(|| sem.acquire_timeout(PATIENCE).map(|p| p.num_permits()));
        wait_for("the second waiter to queue", || sem.stats().waiting == 2);
        held.pop(); // one permit free: not enough for the head, which blocks the queue
        assert_eq!(sem.available(), 1);
        token.cancel();
        assert_eq!(
            head.join().unwrap(),
            Err(AcquireError::Cancelled(CancelReason::Cancelled))
        );
        // Only the head's departure can wake it before PATIENCE runs out.
        assert_eq!(behind.join().unwrap(), Ok(1));
    });
    drop(held);
    assert_eq!(sem.available(), 3);
}

#[test]
fn timed_out_head_waiter_wakes_the_waiters_behind_it() {
    let _check = LeakCheck::new();
    let sem = Semaphore::new(2);
    let mut held: Vec<_> = (0..2).map(|_| sem.acquire().unwrap()).collect();
    corral::scope(|s| {
        let head = s.spawn(|| {
            sem.acquire_many_timeout(2, Duration::from_millis(200))
                .map(drop)
        });
        wait_for("the head to queue", || sem.stats().waiting == 1);
        let behind = s.spawn(|| sem.acquire_timeout(PATIENCE).map(|p| p.num_permits()));
        wait_for("the second waiter to queue", || {
            sem.stats().waiting == 2 || head.is_finished()
        });
        held.pop();
        assert_eq!(head.join().unwrap(), Err(AcquireError::Timeout));
        assert_eq!(behind.join().unwrap(), Ok(1));
    });
    drop(held);
    assert_eq!(sem.available(), 2);
}

#[test]
fn resizing_in_both_directions_under_load_never_exceeds_the_capacity() {
    let _check = LeakCheck::new();
    let sem = Semaphore::new(6);
    // A bound on permits in use that holds while `generation` is unchanged.
    let ceiling = AtomicUsize::new(6);
    let generation = AtomicUsize::new(0);
    let in_use = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let acquired = AtomicUsize::new(0);
    corral::scope(|s| {
        for seed in 0..4 {
            let (sem, ceiling, generation, in_use, stop, acquired) =
                (&sem, &ceiling, &generation, &in_use, &stop, &acquired);
            s.spawn(move || {
                let mut rng = XorShift::new(seed + 1);
                while !stop.load(Ordering::SeqCst) {
                    let n = 1 + rng.below(2) as usize;
                    let gen_before = generation.load(Ordering::SeqCst);
                    let Ok(permit) = sem.acquire_many_timeout(n, Duration::from_millis(2)) else {
                        continue;
                    };
                    let now = in_use.fetch_add(n, Ordering::SeqCst) + n;
                    let bound = ceiling.load(Ordering::SeqCst);
                    if generation.load(Ordering::SeqCst) == gen_before {
                        assert!(now <= bound, "{now} permits in use, bound {bound}");
                    }
                    acquired.fetch_add(1, Ordering::Relaxed);
                    in_use.fetch_sub(n, Ordering::SeqCst);
                    drop(permit);
                }
            });
        }
        let change = |capacity: usize| {
            let old = sem.capacity();
            generation.fetch_add(1, Ordering::SeqCst);
            if capacity > old {
                ceiling.store(capacity, Ordering::SeqCst);
                sem.set_capacity(capacity).unwrap();
            } else {
                sem.set_capacity(capacity).unwrap();
                // The shrink is complete once the engine's in-use count fits.
                wait_for("the shrink to take effect", || {
                    sem.stats().in_use <= capacity
                });
                ceiling.store(capacity, Ordering::SeqCst);
            }
            generation.fetch_add(1, Ordering::SeqCst);
            let before = acquired.load(Ordering::Relaxed);
            wait_for("progress at the new capacity", || {
                acquired.load(Ordering::Relaxed) > before + 200
            });
        };
        for capacity in [2, 8, 3, 1, 5, 2, 6] {
            change(capacity);
        }
        stop.store(true, Ordering::SeqCst);
    });
    assert_eq!((sem.capacity(), sem.available()), (6, 6));
    assert_eq!(sem.stats().waiting, 0);
}

#[test]
fn stress_random_weighted_acquires_with_timeouts_and_cancels() {
    const THREADS: u64 = 8;
    const OPS: usize = 100_000;
    const CAPACITY: usize = 10;
    let _check = LeakCheck::new();
    let sem = Semaphore::new(CAPACITY);
    let in_use = AtomicUsize::new(0);
    let peak = AtomicUsize::new(0);
    let granted = AtomicUsize::new(0);
    let refused = AtomicUsize::new(0);
    // A token that a canceller thread keeps cancelling and replacing.
    let shared = Mutex::new(CancelToken::new());
    let done = AtomicUsize::new(0);
    corral::scope(|s| {
        s.spawn(|| {
            while done.load(Ordering::SeqCst) < THREADS as usize {
                let old = std::mem::take(&mut *shared.lock().unwrap());
                old.cancel();
                thread::yield_now();
            }
        });
        for seed in 0..THREADS {
            let (sem, in_use, peak, granted, refused, shared, done) =
                (&sem, &in_use, &peak, &granted, &refused, &shared, &done);
            s.spawn(move || {
                let mut rng = XorShift::new(seed + 100);
                for _ in 0..OPS {
                    let n = 1 + rng.below(4) as usize;
                    let micros = Duration::from_micros(rng.below(200));
                    let result = match rng.below(5) {
                        0 => sem.acquire_many(n),
                        1 => sem.try_acquire_many(n).map_err(|_| AcquireError::Timeout),
                        2 => sem.acquire_many_timeout(n, micros),
                        3 => sem.acquire_many_cancellable(n, &CancelToken::with_timeout(micros)),
                        _ => {
                            let token = shared.lock().unwrap().clone();
                            sem.acquire_many_cancellable(n, &token)
                        }
                    };
                    match result {
                        Ok(permit) => {
                            assert_eq!(permit.num_permits(), n);
                            let now = in_use.fetch_add(n, Ordering::SeqCst) + n;
                            assert!(now <= CAPACITY, "{now} permits in use");
                            peak.fetch_max(now, Ordering::Relaxed);
                            granted.fetch_add(1, Ordering::Relaxed);
                            // Hold for a while: sometimes a spin, sometimes a yield so
                            // that others queue up behind.
                            if rng.below(4) == 0 {
                                thread::yield_now();
                            } else {
                                for _ in 0..rng.below(50) {
                                    std::hint::spin_loop();
                                }
                            }
                            in_use.fetch_sub(n, Ordering::SeqCst);
                        }
                        Err(AcquireError::Timeout | AcquireError::Cancelled(_)) => {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(other) => panic!("unexpected error {other:?}"),
                    }
                }
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    let ops = THREADS as usize * OPS;
    assert_eq!(
        granted.load(Ordering::Relaxed) + refused.load(Ordering::Relaxed),
        ops
    );
    assert!(peak.load(Ordering::Relaxed) <= CAPACITY);
    assert!(granted.load(Ordering::Relaxed) > 0 && refused.load(Ordering::Relaxed) > 0);
    assert_eq!(sem.available(), CAPACITY);
    let stats = sem.stats();
    assert_eq!(
        (stats.capacity, stats.in_use, stats.waiting),
        (CAPACITY, 0, 0)
    );
}

/// Regression: a large waiter that became the head when a small one ahead of it was
/// served was never woken to start its fairness clock, so newcomers barging hand over
/// hand starved it until its timeout.
#[test]
fn regression_large_waiter_that_becomes_head_later_is_not_starved() {
    let _check = LeakCheck::new();
    let sem = Arc::new(Semaphore::new(4));
    let mut held: Vec<OwnedPermit> = (0..4).map(|_| sem.acquire_owned().unwrap()).collect();
    let stop = AtomicBool::new(false);
    corral::scope(|s| {
        let small = s.spawn(|| sem.acquire_timeout(PATIENCE).map(drop));
        wait_for("the small waiter to queue", || sem.stats().waiting == 1);
        let big = s.spawn(|| {
            sem.acquire_many_timeout(4, PATIENCE)
                .map(|p| p.num_permits())
        });
        wait_for("the large waiter to queue", || sem.stats().waiting == 2);
        // Three streamers start out holding a permit each and go hand over hand.
        for _ in 0..3 {
            let first = held.pop().unwrap();
            let (sem, stop) = (&sem, &stop);
            s.spawn(move || {
                let mut mine = Some(first);
                while !stop.load(Ordering::Relaxed) {
                    let next = sem.acquire_owned_timeout(Duration::from_millis(2)).ok();
                    mine = next;
                }
                drop(mine);
            });
        }
        held.clear(); // the 4th permit: the small waiter is served, the large one is head
        assert_eq!(small.join().unwrap(), Ok(()));
        let result = big.join().unwrap();
        stop.store(true, Ordering::Relaxed);
        assert_eq!(result, Ok(4));
    });
    assert_eq!(sem.available(), 4);
}

#[test]
fn a_bounded_acquire_takes_free_permits_even_past_its_deadline() {
    let sem = Semaphore::new(2);
    let past = Instant::now();
    let first = sem.acquire_deadline(past).unwrap();
    let second = sem.acquire_many_timeout(1, Duration::ZERO).unwrap();
    let cancelled = CancelToken::new();
    cancelled.cancel();
    // Nothing free now: the expired bound is reported instead of waiting.
    assert_eq!(
        sem.acquire_deadline(past).unwrap_err(),
        AcquireError::Timeout
    );
    assert_eq!(
        sem.acquire_cancellable(&cancelled).unwrap_err(),
        AcquireError::Cancelled(CancelReason::Cancelled)
    );
    drop((first, second));
}

#[test]
fn error_messages_are_lowercase_without_a_period() {
    let messages = [
        AcquireError::Closed.to_string(),
        AcquireError::Timeout.to_string(),
        AcquireError::Cancelled(CancelReason::DeadlineExceeded).to_string(),
        AcquireError::AboveCapacity {
            requested: 7,
            capacity: 5,
        }
        .to_string(),
        TryAcquireError::NoPermits.to_string(),
        TryAcquireError::Closed.to_string(),
    ];
    for message in messages {
        let first = message.chars().next().unwrap();
        assert!(first.is_lowercase(), "{message}");
        assert!(!message.ends_with('.'), "{message}");
    }
    let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(AcquireError::Timeout);
    assert_eq!(boxed.to_string(), "timed out waiting for permits");
}

#[test]
fn try_new_and_resizing_reject_capacities_above_the_maximum() {
    let err = Semaphore::try_new(Semaphore::MAX_PERMITS + 1).unwrap_err();
    assert_eq!(err.field(), "permits");
    let sem = Semaphore::new(1);
    let err = sem.set_capacity(usize::MAX).unwrap_err();
    assert_eq!(
        (err.field(), err.value()),
        ("capacity", &*usize::MAX.to_string())
    );
    assert!(sem.add_permits(Semaphore::MAX_PERMITS).is_err());
    assert_eq!(sem.capacity(), 1, "a refused change changes nothing");
    sem.add_permits(Semaphore::MAX_PERMITS - 1).unwrap();
    assert_eq!(sem.available(), Semaphore::MAX_PERMITS);
}

/// Hostile use: every acquire form (borrowed and owned, with timeouts and tokens)
/// racing `forget`, `add_permits`, `set_capacity` down to 0 and back, and a `close`
/// in the middle. Nothing may hang, every call ends in a permit or a named error,
/// permits in use never exceed the largest capacity set, and once everything is
/// returned the accounting balances with nobody left queued.
#[test]
fn close_and_resizes_racing_every_acquire_form_lose_no_permit() {
    const THREADS: u64 = 4;
    const OPS: usize = 20_000;
    const TOP: usize = 8;
    let _check = LeakCheck::new();
    let sem = Arc::new(Semaphore::new(TOP));
    let in_use = AtomicUsize::new(0);
    let ended = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    corral::scope(|s| {
        s.spawn(|| {
            let ended = &ended;
            let mut rng = XorShift::new(7);
            loop {
                // Read first: once every worker is done, this pass still closes.
                let finished = done.load(Ordering::SeqCst) == THREADS as usize;
                let _ = sem.set_capacity(rng.below(TOP as u64 + 1) as usize);
                // Close halfway through the calls (or, if the workers raced through
                // them all before this thread looked, right after).
                if ended.load(Ordering::Relaxed) >= THREADS as usize * OPS / 2 {
                    sem.close();
                }
                if finished {
                    break;
                }
                thread::yield_now();
            }
        });
        for seed in 0..THREADS {
            let (sem, in_use, ended, done) = (&sem, &in_use, &ended, &done);
            s.spawn(move || {
                let mut rng = XorShift::new(seed + 1_000);
                for _ in 0..OPS {
                    let n = rng.below(4) as usize;
                    let wait = Duration::from_micros(rng.below(100));
                    // Holds the permits while counting them in use.
                    let hold = |k: usize| {
                        let now = in_use.fetch_add(k, Ordering::SeqCst) + k;
                        // A forget put back by add_permits may briefly lift the
                        // capacity above TOP, by at most what the threads hold.
                        assert!(now <= TOP + 3 * THREADS as usize, "{now} permits in use");
                        in_use.fetch_sub(k, Ordering::SeqCst);
                    };
                    let result = match rng.below(6) {
                        0 => sem
                            .acquire_many_timeout(n, wait)
                            .map(|p| hold(p.num_permits())),
                        1 => sem
                            .try_acquire_many(n)
                            .map(|p| hold(p.num_permits()))
                            .map_err(|e| match e {
                                TryAcquireError::Closed => AcquireError::Closed,
                                _ => AcquireError::Timeout,
                            }),
                        2 => sem
                            .acquire_many_cancellable(n, &CancelToken::with_timeout(wait))
                            .map(|p| hold(p.num_permits())),
                        3 => sem
                            .acquire_many_owned_timeout(n, wait)
                            .map(|p| hold(p.num_permits())),
                        4 => sem.acquire_many_timeout(n, wait).map(|p| {
                            // Keep the permits out for good, then put them back.
                            let k = p.num_permits();
                            hold(k);
                            p.forget();
                            let _ = sem.add_permits(k);
                        }),
                        _ => sem
                            .acquire_many_deadline(n, Instant::now())
                            .map(|p| hold(p.num_permits())),
                    };
                    match result {
                        Ok(())
                        | Err(
                            AcquireError::Timeout
                            | AcquireError::Cancelled(_)
                            | AcquireError::Closed
                            | AcquireError::AboveCapacity { .. },
                        ) => {}
                        Err(other) => panic!("unexpected error {other:?}"),
                    }
                    ended.fetch_add(1, Ordering::Relaxed);
                }
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    assert_eq!(ended.load(Ordering::Relaxed), THREADS as usize * OPS);
    let stats = sem.stats();
    assert!(stats.closed);
    assert_eq!((stats.in_use, stats.waiting), (0, 0), "{stats:?}");
    assert_eq!(stats.available, stats.capacity, "{stats:?}");
}

/// Hostile use: a waiter's token cancelled at the same moment as a release (and a
/// hand-off) reaches it, many times over. The waiter ends with the permit or with
/// `Cancelled`, never both and never neither: afterwards every permit is back.
#[test]
fn a_cancel_racing_a_release_neither_loses_nor_duplicates_a_permit() {
    let _check = LeakCheck::new();
    let sem = Semaphore::new(1);
    let (mut granted, mut cancelled) = (0, 0);
    for round in 0..1_000 {
        let held = sem.acquire().unwrap();
        let token = CancelToken::new();
        let barrier = std::sync::Barrier::new(2);
        let outcome = thread::scope(|s| {
            let waiter = s.spawn(|| sem.acquire_cancellable(&token).map(|p| p.num_permits()));
            wait_for("the waiter to queue", || sem.stats().waiting == 1);
            let canceller = s.spawn(|| {
                barrier.wait();
                token.cancel();
            });
            barrier.wait();
            if round % 2 == 0 {
                drop(held);
            } else {
                // Give the head time to pass the fairness bound, so that the release
                // is a hand-off (when the waiter has run by then; either way is fine).
                let until = Instant::now() + Duration::from_millis(2);
                while Instant::now() < until {
                    thread::yield_now();
                }
                drop(held);
            }
            canceller.join().unwrap();
            waiter.join().unwrap()
        });
        match outcome {
            Ok(1) => granted += 1,
            Err(AcquireError::Cancelled(CancelReason::Cancelled)) => cancelled += 1,
            other => panic!("round {round}: {other:?}"),
        }
        let stats = sem.stats();
        assert_eq!(
            (stats.available, stats.in_use, stats.waiting),
            (1, 0, 0),
            "round {round}: {stats:?}"
        );
    }
    assert_eq!(granted + cancelled, 1_000);
}
