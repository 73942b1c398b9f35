//! RateLimiter and KeyedRateLimiter behaviour through the public API.
//!
//! Time-based logic runs on `ManualClock`, so nothing here sleeps: a waiter's progress
//! is observed through `stats()` and channels, and time moves only when a test says so.

use std::hash::{Hash, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use corral::leak::LeakCheck;
use corral::{
    cancel::CancelReason,
    clock::{Clock, ManualClock},
    rate::{CheckError, NotUntil, Reservation, WaitError},
    CancelToken, KeyedRateLimiter, RateLimiter,
};

const SECOND: Duration = Duration::from_secs(1);

fn manual(per_second: u32, burst: u32) -> (ManualClock, RateLimiter<ManualClock>) {
    let clock = ManualClock::new();
    let limiter = RateLimiter::per_second(per_second)
        .burst(burst)
        .clock(clock.clone())
        .build()
        .unwrap();
    (clock, limiter)
}

/// Polls `cond` until it holds, failing the test after a generous deadline.
fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now()
        .checked_add(Duration::from_secs(30))
        .expect("30 s from now is an instant");
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::yield_now();
    }
}

/// Runs `count` concurrent `check()` calls released together; returns how many passed.
fn concurrent_checks(limiter: &RateLimiter<ManualClock>, count: usize) -> usize {
    let admitted = AtomicUsize::new(0);
    let start = Barrier::new(count);
    thread::scope(|s| {
        for _ in 0..count {
            s.spawn(|| {
                start.wait();
                if limiter.check().is_ok() {
                    admitted.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    admitted.into_inner()
}

#[test]
fn builder_errors_name_the_field() {
    let cases = [
        (
            RateLimiter::per_second(0).build().unwrap_err(),
            "per_second",
        ),
        (
            RateLimiter::per_minute(0).build().unwrap_err(),
            "per_minute",
        ),
        (
            RateLimiter::with_period(Duration::ZERO)
                .build()
                .unwrap_err(),
            "with_period",
        ),
        (
            RateLimiter::per_second(5).burst(0).build().unwrap_err(),
            "burst",
        ),
        (
            RateLimiter::with_period(Duration::from_secs(3600 * 24 * 365))
                .burst(1000)
                .build()
                .unwrap_err(),
            "burst",
        ),
    ];
    for (err, field) in cases {
        assert_eq!(err.field(), field, "{err}");
    }
    assert_eq!(
        RateLimiter::per_second(0).build().unwrap_err().to_string(),
        "invalid per_second = 0: rate must be at least 1"
    );
    let keyed = KeyedRateLimiter::<u32>::per_second(1).max_keys(0).build();
    assert_eq!(keyed.unwrap_err().field(), "max_keys");
    let keyed = KeyedRateLimiter::<u32>::per_second(1).burst(0).build();
    assert_eq!(keyed.unwrap_err().field(), "burst");
    let keyed = KeyedRateLimiter::<u32>::per_second(1).shards(0).build();
    assert_eq!(keyed.unwrap_err().field(), "shards");
    let keyed = KeyedRateLimiter::<u32>::with_period(Duration::ZERO).build();
    assert_eq!(keyed.unwrap_err().field(), "with_period");
    let limiter = RateLimiter::per_second(1).build().unwrap();
    assert_eq!(limiter.set_rate(0, SECOND).unwrap_err().field(), "set_rate");
    assert_eq!(
        limiter.set_rate(1, Duration::ZERO).unwrap_err().field(),
        "set_rate"
    );
    assert_eq!(limiter.set_burst(0).unwrap_err().field(), "burst");
}

#[test]
fn fifteen_concurrent_checks_at_one_instant_admit_exactly_the_burst() {
    let _check = LeakCheck::new();
    let (clock, limiter) = manual(1, 5);
    assert_eq!(concurrent_checks(&limiter, 15), 5);
    clock.advance(SECOND);
    assert_eq!(concurrent_checks(&limiter, 15), 1);
    clock.advance(Duration::from_millis(999));
    assert_eq!(concurrent_checks(&limiter, 15), 0);
    clock.advance(Duration::from_millis(1));
    assert_eq!(concurrent_checks(&limiter, 15), 1);
}

#[test]
fn admitted_rate_matches_the_configured_rate_within_a_tenth_of_a_percent() {
    let (clock, limiter) = manual(50, 5);
    let step = Duration::from_millis(7); // not a multiple of the 20 ms interval
    let mut admitted = 0u64;
    for _ in 0..10_000 {
        if limiter.check().is_ok() {
            admitted += 1;
        }
        clock.advance(step);
    }
    let elapsed = clock.elapsed().as_secs_f64(); // 70 s of simulated time
    let bound = 5.0 + 50.0 * elapsed + 1.0;
    assert!(admitted as f64 <= bound, "{admitted} > {bound}");
    // The steady-state rate, after the initial burst.
    let rate = (admitted - 5) as f64 / elapsed;
    assert!((rate - 50.0).abs() / 50.0 <= 0.001, "rate {rate}/s");
}

#[test]
fn not_until_gives_the_earliest_passing_instant() {
    let (clock, limiter) = manual(4, 2);
    limiter.check_n(2).unwrap();
    let refused: NotUntil = limiter.check().unwrap_err();
    assert_eq!(refused.earliest(), clock.now() + Duration::from_millis(250));
    assert_eq!(refused.wait_time(), Duration::from_millis(250));
    clock.advance(Duration::from_millis(249));
    assert!(limiter.check().is_err());
    clock.advance(Duration::from_millis(1));
    assert_eq!(refused.wait_time_from(clock.now()), Duration::ZERO);
    assert!(limiter.check().is_ok());
    assert_eq!(
        refused.to_string(),
        "rate limit reached: next slot in 250ms"
    );
}

#[test]
fn more_than_the_burst_is_a_distinct_immediate_error() {
    let (_clock, limiter) = manual(10, 3);
    match limiter.check_n(4) {
        Err(CheckError::InsufficientCapacity(e)) => {
            assert_eq!((e.requested(), e.burst()), (4, 3));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(
        limiter.wait_n_timeout(4, SECOND),
        Err(WaitError::InsufficientCapacity(_))
    ));
    // Without a bound the call still returns at once (on a frozen clock it would
    // otherwise hang).
    assert_eq!(limiter.wait_n(4).unwrap_err().requested(), 4);
    assert!(limiter.reserve_n(4).is_err());
    assert_eq!(limiter.available(), 3, "refusals used no capacity");
    assert!(limiter.check_n(3).is_ok());
    assert!(matches!(limiter.check_n(1), Err(CheckError::NotUntil(_))));
    assert!(limiter.check_n(0).is_ok());
}

#[test]
fn wait_sleeps_on_the_clock_until_its_slot() {
    let _check = LeakCheck::new();
    let (clock, limiter) = manual(1, 1);
    limiter.check().unwrap();
    let (done_tx, done_rx) = mpsc::channel();
    thread::scope(|s| {
        s.spawn(|| {
            limiter.wait();
            done_tx.send(limiter.clock().now()).unwrap();
        });
        eventually("the waiter to sleep", || limiter.stats().slept == 1);
        // Time has not moved, so the waiter cannot have its slot yet.
        assert!(done_rx.try_recv().is_err());
        clock.advance(SECOND);
        let woke_at = done_rx.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(woke_at, clock.now());
    });
    // The waiter used the slot at 1 s: the next one is at 2 s.
    assert!(limiter.check().is_err());
}

#[test]
fn a_wait_whose_slot_lies_past_the_deadline_fails_at_once_and_uses_nothing() {
    let (clock, limiter) = manual(1, 1);
    limiter.check().unwrap();
    match limiter.wait_timeout(Duration::from_millis(999)) {
        Err(WaitError::Timeout(at)) => assert_eq!(at.wait_time(), SECOND),
        other => panic!("unexpected {other:?}"),
    }
    assert!(limiter
        .wait_deadline(clock.now() + Duration::from_millis(10))
        .is_err());
    assert_eq!(limiter.stats().refused_at_once, 2);
    assert_eq!(limiter.stats().slept, 0);
    clock.advance(SECOND);
    assert!(limiter.check().is_ok(), "the failed waits claimed nothing");
    assert!(limiter.check().is_err());
    // A slot exactly at the deadline is fine (it is ready now, so no sleep either).
    clock.advance(SECOND);
    assert!(limiter.wait_deadline(clock.now()).is_ok());
}

#[test]
fn a_token_deadline_before_the_slot_fails_at_once() {
    let (_clock, limiter) = manual(1, 1);
    limiter.check().unwrap();
    let token = CancelToken::with_timeout(Duration::from_millis(100));
    assert_eq!(
        limiter.wait_cancellable(&token),
        Err(WaitError::Cancelled(CancelReason::DeadlineExceeded))
    );
    let cancelled = CancelToken::new();
    cancelled.cancel();
    assert_eq!(
        limiter.wait_n_cancellable(1, &cancelled),
        Err(WaitError::Cancelled(CancelReason::Cancelled))
    );
    assert_eq!(limiter.stats().slept, 0);
}

#[test]
fn a_cancelled_wait_gives_its_slot_back() {
    let _check = LeakCheck::new();
    let (clock, limiter) = manual(1, 1);
    limiter.check().unwrap();
    let token = CancelToken::new();
    thread::scope(|s| {
        let waiter = s.spawn(|| limiter.wait_cancellable(&token));
        eventually("the waiter to sleep", || limiter.stats().slept == 1);
        token.cancel();
        assert_eq!(
            waiter.join().unwrap(),
            Err(WaitError::Cancelled(CancelReason::Cancelled))
        );
    });
    assert_eq!(limiter.stats().gave_back, 1);
    clock.advance(SECOND);
    assert!(limiter.check().is_ok(), "the cancelled slot came back");
    assert!(limiter.check().is_err());
}

#[test]
fn a_cancelled_wait_keeps_the_slot_a_later_waiter_built_on() {
    let _check = LeakCheck::new();
    let (clock, limiter) = manual(1, 1);
    limiter.check().unwrap();
    let first = CancelToken::new();
    thread::scope(|s| {
        let a = s.spawn(|| limiter.wait_cancellable(&first));
        eventually("the first waiter to sleep", || limiter.stats().slept == 1);
        let b = s.spawn(|| limiter.wait_timeout(Duration::from_secs(10)));
        eventually("the second waiter to sleep", || limiter.stats().slept == 2);
        first.cancel();
        assert!(matches!(a.join().unwrap(), Err(WaitError::Cancelled(_))));
        // b holds the slot at 2 s, built after a's at 1 s: a's cell cannot come back
        // without moving b's, so nothing is returned and 1 s stays unusable.
        assert_eq!(limiter.stats().gave_back, 0);
        clock.advance(SECOND);
        assert!(limiter.check().is_err());
        clock.advance(SECOND);
        assert_eq!(b.join().unwrap(), Ok(()));
    });
}

#[test]
fn reservations_say_how_long_to_wait_and_cancel_all_or_nothing() {
    let clock = ManualClock::new();
    let build = |per_second| {
        RateLimiter::per_second(per_second)
            .burst(1)
            .clock(clock.clone())
            .build()
            .unwrap()
    };
    let user = build(10);
    let global = build(1);
    global.check().unwrap();

    let take_both = || -> Option<(Reservation<'_, ManualClock>, Reservation<'_, ManualClock>)> {
        let a = user.reserve();
        let b = global.reserve();
        if b.delay() > Duration::from_millis(100) {
            assert!(b.cancel());
            assert!(a.cancel());
            return None;
        }
        Some((a, b))
    };
    assert!(take_both().is_none());
    assert_eq!(user.available(), 1, "the user's cell came back");
    assert!(
        global.check().is_err(),
        "the global cell did not come back early"
    );

    clock.advance(SECOND);
    let (a, b) = take_both().expect("both limits have room now");
    assert!(a.is_ready() && b.is_ready());
    assert_eq!(b.cells(), 1);
    a.wait();
    b.wait();
    assert_eq!(user.available(), 0);
}

#[test]
fn cancelling_a_reservation_keeps_cells_reserved_after_it() {
    let (clock, limiter) = manual(1, 2);
    limiter.check_n(2).unwrap();
    let a = limiter.reserve_n(2).unwrap();
    let b = limiter.reserve();
    assert_eq!(a.delay(), 2 * SECOND);
    assert_eq!(b.delay(), 3 * SECOND);
    // b's slot was placed after a's cells: freeing them would let a later claim
    // share b's slot, so nothing comes back while b stands.
    assert!(!a.cancel());
    let c = limiter.reserve();
    assert_eq!(
        c.delay(),
        4 * SECOND,
        "b keeps its slot, and c comes after it"
    );
    assert!(c.cancel(), "c is the last claim: undone exactly");
    assert!(b.cancel(), "then b is");
    clock.advance(3 * SECOND);
    assert!(limiter.check().is_ok(), "one cell refilled since a's slot");
    assert!(limiter.check().is_err(), "a's cells were not returned");
}

#[test]
fn cancelling_two_reservations_in_turn_never_lets_a_third_share_a_slot() {
    // The sequence the property tests found against x/time/rate's partial return
    // (the cells minus those reserved after): b gave back part of its cells, which
    // hid c from a's cancel; a later claim then shared c's slot.
    let clock = ManualClock::new();
    let t = Duration::from_nanos(1145);
    let limiter = RateLimiter::with_period(t)
        .burst(4)
        .clock(clock.clone())
        .build()
        .unwrap();
    let a = limiter.reserve_n(4).unwrap();
    let b = limiter.reserve_n(3).unwrap();
    let c = limiter.reserve_n(1).unwrap();
    assert_eq!(
        (a.delay(), b.delay(), c.delay()),
        (Duration::ZERO, t * 3, t * 4)
    );
    assert!(!b.cancel(), "c stands after b");
    assert!(!a.cancel(), "b and c stand after a");
    clock.advance(Duration::from_nanos(3680));
    // a's four cells are used at 0 and c's one at 4580 ns: within one burst window
    // of c's slot no more than four cells may pass.
    let admitted = (0..5).filter(|_| limiter.check().is_ok()).count();
    clock.advance(Duration::from_nanos(900));
    assert!(c.is_ready());
    let more = (0..5).filter(|_| limiter.check().is_ok()).count();
    assert!(
        admitted + more < 4, // c's own cell is the fourth
        "{admitted} + {more} + c's cell in 900 ns"
    );
}

#[test]
fn set_rate_and_set_burst_keep_the_capacity_in_use() {
    let (clock, limiter) = manual(1, 4);
    limiter.check_n(3).unwrap();
    assert_eq!(limiter.available(), 1);
    limiter.set_rate(2, SECOND).unwrap();
    assert_eq!(limiter.interval(), Duration::from_millis(500));
    assert_eq!(limiter.available(), 1, "the three used cells stay used");
    clock.advance(Duration::from_millis(500));
    assert_eq!(limiter.available(), 2, "and refill at the new rate");
    limiter.set_burst(8).unwrap();
    assert_eq!(limiter.available(), 2, "a larger burst fills up over time");
    clock.advance(3 * SECOND);
    assert_eq!(limiter.available(), 8);
    limiter.set_burst(3).unwrap();
    assert_eq!(limiter.available(), 3);
    assert_eq!(limiter.burst(), 3);
    assert!(limiter.check_n(4).is_err());
    assert!(limiter.check_n(3).is_ok());
}

#[test]
fn waits_are_served_in_claim_order_as_time_advances() {
    let _check = LeakCheck::new();
    let (clock, limiter) = manual(1, 1);
    limiter.check().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::scope(|s| {
        for i in 1..=3u32 {
            let tx = tx.clone();
            let limiter = &limiter;
            s.spawn(move || {
                limiter.wait_n(1).unwrap();
                tx.send((i, limiter.clock().now())).unwrap();
            });
        }
        eventually("three sleepers", || limiter.stats().slept == 3);
        let start = clock.now();
        let mut woke = Vec::new();
        for k in 1..=3u32 {
            clock.advance(SECOND);
            let (_, at) = rx.recv_timeout(Duration::from_secs(30)).unwrap();
            woke.push(at - start);
            assert_eq!(at - start, k * SECOND, "one waiter per second");
        }
        assert!(rx.try_recv().is_err());
        assert_eq!(woke.len(), 3);
    });
}

#[test]
fn stress_on_the_real_clock_never_admits_more_than_the_limit() {
    let _check = LeakCheck::new();
    const RATE: u32 = 20_000;
    const BURST: u32 = 50;
    let started = Instant::now();
    let limiter = RateLimiter::per_second(RATE).burst(BURST).build().unwrap();
    let admitted = AtomicUsize::new(0);
    let refused = AtomicUsize::new(0);
    // The token of the current cancellable waiter, for the canceller thread to fire.
    let current = std::sync::Mutex::new(None::<CancelToken>);
    let run_until = started + Duration::from_millis(300);
    thread::scope(|s| {
        for t in 0..8 {
            let (limiter, admitted, refused, current) = (&limiter, &admitted, &refused, &current);
            s.spawn(move || {
                while Instant::now() < run_until {
                    let passed = match t {
                        0 => limiter.check_n(3).is_ok().then_some(3),
                        1 | 2 => limiter
                            .wait_n_timeout(2, Duration::from_millis(1))
                            .is_ok()
                            .then_some(2),
                        3 => {
                            let r = limiter.reserve();
                            if r.delay() > Duration::from_micros(200) {
                                r.cancel();
                                None
                            } else {
                                r.wait();
                                Some(1)
                            }
                        }
                        4 | 5 => limiter.check().is_ok().then_some(1),
                        6 => {
                            // Waits that another thread cancels, often while asleep:
                            // their slots go back and must not be counted twice.
                            let token = CancelToken::new();
                            *current.lock().unwrap() = Some(token.clone());
                            limiter.wait_cancellable(&token).is_ok().then_some(1)
                        }
                        _ => {
                            if let Some(token) = current.lock().unwrap().take() {
                                token.cancel();
                            }
                            thread::yield_now();
                            continue;
                        }
                    };
                    match passed {
                        Some(n) => admitted.fetch_add(n, Ordering::Relaxed),
                        None => refused.fetch_add(1, Ordering::Relaxed),
                    };
                }
            });
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let admitted = admitted.into_inner() as f64;
    let bound = f64::from(BURST) + f64::from(RATE) * elapsed + 1.0;
    assert!(
        admitted <= bound,
        "admitted {admitted} > {bound} in {elapsed}s"
    );
    assert!(admitted > 0.0);
    assert!(refused.into_inner() > 0, "the limit was reached");
    assert!(
        limiter.stats().gave_back > 0,
        "cancellations gave slots back"
    );
}

#[test]
fn keyed_stress_on_the_real_clock_keeps_every_key_within_its_limit() {
    let _check = LeakCheck::new();
    const RATE: u32 = 5_000;
    const BURST: u32 = 20;
    const KEYS: usize = 4;
    let started = Instant::now();
    let limiter = KeyedRateLimiter::per_second(RATE)
        .burst(BURST)
        .build()
        .unwrap();
    let admitted: Vec<AtomicUsize> = (0..KEYS).map(|_| AtomicUsize::new(0)).collect();
    let run_until = started + Duration::from_millis(200);
    thread::scope(|s| {
        for t in 0..8usize {
            let (limiter, admitted) = (&limiter, &admitted);
            s.spawn(move || {
                let mut i = t;
                while Instant::now() < run_until {
                    let key = i % KEYS;
                    i += 1;
                    let passed = if t % 2 == 0 {
                        limiter.check_key(&key).is_ok()
                    } else {
                        limiter
                            .wait_key_timeout(&key, Duration::from_micros(500))
                            .is_ok()
                    };
                    if passed {
                        admitted[key].fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let bound = f64::from(BURST) + f64::from(RATE) * elapsed + 1.0;
    for (key, count) in admitted.iter().enumerate() {
        let count = count.load(Ordering::Relaxed) as f64;
        assert!(count <= bound, "key {key}: {count} > {bound}");
        assert!(count > 0.0);
    }
}

#[test]
fn keyed_limits_are_independent_per_key() {
    let clock = ManualClock::new();
    let limiter = KeyedRateLimiter::per_second(1)
        .burst(2)
        .clock(clock.clone())
        .build()
        .unwrap();
    assert!(limiter.check_key_n(&"a", 2).is_ok());
    let refused = limiter.check_key(&"a").unwrap_err();
    assert_eq!(refused.earliest(), clock.now() + SECOND);
    assert!(limiter.check_key_n(&"b", 2).is_ok());
    assert!(matches!(
        limiter.check_key_n(&"c", 3),
        Err(CheckError::InsufficientCapacity(_))
    ));
    assert_eq!(limiter.len(), 2, "refused fresh keys are not stored");
    clock.advance(SECOND);
    assert!(limiter.check_key(&"a").is_ok());
    assert!(limiter.check_key(&"a").is_err());
}

#[test]
fn keyed_limits_hold_under_concurrency() {
    let _check = LeakCheck::new();
    let clock = ManualClock::new();
    let limiter = KeyedRateLimiter::per_second(1)
        .burst(5)
        .clock(clock.clone())
        .build()
        .unwrap();
    let admitted: Vec<AtomicUsize> = (0..4).map(|_| AtomicUsize::new(0)).collect();
    let start = Barrier::new(8);
    thread::scope(|s| {
        for t in 0..8 {
            let (limiter, admitted, start) = (&limiter, &admitted, &start);
            s.spawn(move || {
                start.wait();
                for i in 0..40u32 {
                    let key = (i + t) % 4;
                    if limiter.check_key(&key).is_ok() {
                        admitted[key as usize].fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    for count in &admitted {
        assert_eq!(
            count.load(Ordering::Relaxed),
            5,
            "exactly the burst per key"
        );
    }
}

#[test]
fn a_million_keys_stay_within_the_bound_and_fresh_keys_are_never_refused() {
    const MAX_KEYS: usize = 4_096;
    let clock = ManualClock::new();
    // One cell per millisecond per key, burst 1: a key is active for 1 ms after use.
    let limiter = KeyedRateLimiter::per_second(1_000)
        .burst(1)
        .max_keys(MAX_KEYS)
        .clock(clock.clone())
        .build()
        .unwrap();
    for key in 0..1_000_000u64 {
        assert!(limiter.check_key(&key).is_ok(), "fresh key {key} refused");
        // About 1,000 keys are active at any time: well within the bound, so a
        // recent key's state is never forgotten and a repeat is refused.
        if key % 97 == 0 {
            assert!(limiter.check_key(&key).is_err(), "key {key} forgotten");
        }
        if key % 100_000 == 0 {
            assert!(limiter.len() <= MAX_KEYS);
        }
        clock.advance(Duration::from_micros(1));
    }
    let stats = limiter.stats();
    assert!(stats.keys <= MAX_KEYS, "{stats:?}");
    assert!(stats.evicted_idle > 0);
    assert_eq!(stats.evicted_active, 0, "only idle keys were evicted");

    // With time frozen every key stays active; the bound still holds, and new keys
    // are still admitted (some active keys are forgotten, and counted).
    for key in 1_000_000..1_020_000u64 {
        assert!(limiter.check_key(&key).is_ok());
    }
    let stats = limiter.stats();
    assert!(stats.keys <= MAX_KEYS, "{stats:?}");
    assert!(stats.evicted_active > 0);
    clock.advance(SECOND);
    assert!(limiter.retain_recent() > 0);
    assert!(limiter.is_empty());
}

#[test]
fn public_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<RateLimiter>();
    send_sync::<RateLimiter<ManualClock>>();
    send_sync::<KeyedRateLimiter<String>>();
    send_sync::<Reservation<'static>>();
    send_sync::<NotUntil>();
    send_sync::<WaitError>();
    send_sync::<CheckError>();
}

#[test]
fn errors_display_lowercase_without_a_period() {
    let (_clock, limiter) = manual(1, 1);
    let texts = [
        limiter.check_n(2).unwrap_err().to_string(),
        limiter.wait_n_timeout(2, SECOND).unwrap_err().to_string(),
        WaitError::Cancelled(CancelReason::Cancelled).to_string(),
        {
            limiter.check().unwrap();
            limiter
                .wait_timeout(Duration::ZERO)
                .unwrap_err()
                .to_string()
        },
    ];
    for text in texts {
        assert!(!text.ends_with('.'), "{text}");
        assert_eq!(text, text.to_lowercase(), "{text}");
    }
}

#[test]
fn a_free_cell_passes_even_a_deadline_already_gone() {
    let (clock, limiter) = manual(1, 1);
    let past = clock.now();
    clock.advance(SECOND);
    assert_eq!(limiter.wait_deadline(past), Ok(()), "no sleep was needed");
    assert!(matches!(
        limiter.wait_deadline(past),
        Err(WaitError::Timeout(_))
    ));
    clock.advance(SECOND);
    assert_eq!(limiter.wait_timeout(Duration::ZERO), Ok(()));
}

#[test]
fn a_reconfiguration_voids_give_backs_of_earlier_claims() {
    let (clock, limiter) = manual(1, 2);
    let r = limiter.reserve_n(2).unwrap();
    limiter.set_burst(3).unwrap();
    assert!(
        !r.cancel(),
        "cells claimed under the old burst are not returned"
    );
    assert_eq!(limiter.available(), 0, "a larger burst fills up over time");
    clock.advance(SECOND);
    assert_eq!(limiter.available(), 1);
}

#[test]
fn the_system_clock_limiter_sleeps_and_maps_onto_std_instants() {
    let limiter = RateLimiter::per_second(200).burst(1).build().unwrap();
    let before = Instant::now();
    limiter.check().unwrap();
    let refused = limiter.check().unwrap_err();
    let now = Instant::now();
    // The slot is about 5 ms away on the std timeline too (the TSC/std mapping is
    // live, so it does not drift with the age of the process).
    let slack = Duration::from_micros(100);
    assert!(
        refused.wait_time_from(now) <= Duration::from_millis(5) + slack,
        "{:?}",
        refused.wait_time_from(now)
    );
    assert!(refused.earliest() + slack >= before + Duration::from_millis(5));
    limiter.wait();
    limiter.wait();
    // The second wait's slot is two intervals after the first check: the waits slept
    // (never spun) until then, on the real clock.
    let elapsed = before.elapsed();
    assert!(elapsed >= Duration::from_millis(10) - slack, "{elapsed:?}");
}

#[test]
fn keyed_waits_sleep_per_key_fail_fast_and_give_back_on_cancel() {
    let _check = LeakCheck::new();
    let clock = ManualClock::new();
    let limiter = KeyedRateLimiter::per_second(1)
        .burst(1)
        .clock(clock.clone())
        .build()
        .unwrap();
    limiter.check_key(&"a").unwrap();
    // Past the deadline: refused at once, nothing claimed.
    assert!(matches!(
        limiter.wait_key_timeout(&"a", Duration::from_millis(500)),
        Err(WaitError::Timeout(_))
    ));
    // Another key is not held up by "a".
    assert_eq!(limiter.wait_key_timeout(&"b", Duration::ZERO), Ok(()));
    assert_eq!(
        limiter.wait_key_n(&"b", 2).unwrap_err().requested(),
        2,
        "more than the burst is refused at once"
    );

    let token = CancelToken::new();
    let (tx, rx) = mpsc::channel();
    thread::scope(|s| {
        let cancelled = s.spawn(|| limiter.wait_key_cancellable(&"a", &token));
        // The claim is visible as a refusal two intervals out for a later caller.
        eventually("the waiter to claim its slot", || {
            limiter
                .check_key(&"a")
                .is_err_and(|e| e.wait_time() == 2 * SECOND)
        });
        token.cancel();
        assert_eq!(
            cancelled.join().unwrap(),
            Err(WaitError::Cancelled(CancelReason::Cancelled))
        );
        // The slot at 1 s is free again: a sleeper for it wakes when time gets there.
        s.spawn(|| {
            limiter.wait_key(&"a");
            tx.send(limiter.clock().now()).unwrap();
        });
        eventually("the second waiter to claim", || {
            limiter
                .check_key(&"a")
                .is_err_and(|e| e.wait_time() == 2 * SECOND)
        });
        assert!(rx.try_recv().is_err());
        clock.advance(SECOND);
        let woke = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(woke, clock.now());
    });
}

// ---------------------------------------------------------------------------------
// The time horizon: exact arithmetic, and a limiter that keeps limiting past it.

/// A hundred years: about the longest period a limiter accepts.
const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

#[test]
fn a_limiter_past_its_time_horizon_keeps_limiting() {
    let (clock, limiter) = manual(1, 3);
    limiter.check_n(3).unwrap();
    clock.advance(Duration::MAX); // the clock's end of time: it stands still there
    let admitted = (0..100).filter(|_| limiter.check().is_ok()).count();
    assert_eq!(admitted, 3, "the refilled burst, and not one cell more");
    clock.advance(Duration::MAX);
    clock.advance(SECOND);
    assert!(limiter.check().is_err(), "time no longer moves");
    let refused = limiter.check().unwrap_err();
    assert!(refused.is_never());
    assert_eq!(refused.wait_time(), Duration::MAX);
    let _ = refused.earliest(); // a far instant, no panic
    let _ = refused.to_string();
    assert!(matches!(
        limiter.check_n(2),
        Err(CheckError::NotUntil(e)) if e.is_never()
    ));
    // Bounded waits are refused at once; reservations claim nothing.
    assert!(matches!(
        limiter.wait_timeout(Duration::MAX),
        Err(WaitError::Timeout(e)) if e.is_never()
    ));
    assert!(matches!(
        limiter.wait_deadline(clock.now()),
        Err(WaitError::Timeout(_))
    ));
    let r = limiter.reserve();
    assert!(r.is_never() && !r.is_ready());
    assert_eq!(r.delay(), Duration::MAX);
    let _ = r.ready_at();
    assert!(!r.cancel(), "it claimed nothing");
    assert_eq!(limiter.available(), 0);
    // Reconfiguring at the end of time does not reopen the gate either.
    limiter.set_rate(1_000, SECOND).unwrap();
    limiter.set_burst(5).unwrap();
    assert!(limiter.check().is_err());
}

#[test]
fn a_limiter_near_its_horizon_still_refills_at_its_rate() {
    let (clock, limiter) = manual(1, 2);
    limiter.check_n(2).unwrap();
    // Ten seconds before the end of the limiter's timeline, which stops one nanosecond
    // short of the clock's (the limiter was built at the clock's start).
    clock.advance(Duration::from_nanos(u64::MAX - 1) - 10 * SECOND);
    assert_eq!((0..10).filter(|_| limiter.check().is_ok()).count(), 2);
    let refused = limiter.check().unwrap_err();
    assert_eq!(refused.wait_time(), SECOND);
    assert_eq!(refused.earliest(), clock.now() + SECOND);
    for _ in 0..8 {
        clock.advance(SECOND);
        assert!(limiter.check().is_ok(), "one cell per second");
        assert!(limiter.check().is_err());
    }
    // The TAT has reached the end of the timeline: a cell in the last b·T (2 s)
    // would need a TAT past it, so it is refused for good (never more than the limit).
    clock.advance(Duration::MAX);
    assert_eq!((0..10).filter(|_| limiter.check().is_ok()).count(), 0);
    assert!(limiter.check().unwrap_err().is_never());
}

#[test]
fn reservations_past_the_horizon_claim_nothing_and_are_never_ready() {
    let _check = LeakCheck::new();
    let clock = ManualClock::new();
    let limiter = RateLimiter::with_period(CENTURY)
        .clock(clock.clone())
        .build()
        .unwrap();
    // Five centuries fit in the timeline's 584 years; the sixth slot does not.
    let fitting: Vec<_> = (0..5).map(|_| limiter.reserve()).collect();
    for (i, r) in (0u32..).zip(&fitting) {
        assert_eq!(r.delay(), CENTURY * i, "slots a century apart, exactly");
        assert!(!r.is_never());
    }
    let never = limiter.reserve();
    assert!(never.is_never());
    assert_eq!(never.delay(), Duration::MAX);
    assert!(limiter.reserve().is_never(), "and every claim after it");
    assert!(matches!(
        limiter.wait_timeout(Duration::MAX),
        Err(WaitError::Timeout(e)) if e.is_never()
    ));
    // A never-ready reservation waits until its token is cancelled, then says so.
    let token = CancelToken::new();
    thread::scope(|s| {
        let waiter = s.spawn(|| never.wait_cancellable(&token));
        clock.advance(Duration::MAX); // even the clock's end does not make it ready
        token.cancel();
        assert_eq!(
            waiter.join().unwrap(),
            Err(WaitError::Cancelled(CancelReason::Cancelled))
        );
    });
    for r in fitting {
        assert!(r.is_ready(), "the clock's end is past every fitting slot");
        r.wait();
    }
}

// ---------------------------------------------------------------------------------
// Giving back: x/time/rate's CancelAt, never cells a later grant relied on.

#[test]
fn cancelling_a_reservation_after_its_slot_passed_gives_nothing_back() {
    let (clock, limiter) = manual(1, 2);
    limiter.check_n(2).unwrap();
    let r = limiter.reserve_n(2).unwrap();
    assert_eq!(r.delay(), 2 * SECOND);
    // Its slot comes (its holder may use both cells then) and passes.
    clock.advance(2500 * Duration::from_millis(1));
    assert!(r.is_ready());
    assert!(!r.cancel(), "the slot passed: nothing comes back");
    assert_eq!(limiter.stats().gave_back, 0);
    assert_eq!(limiter.available(), 0);
    assert!(
        limiter.check_n(2).is_err(),
        "two more cells half a second after two were used would exceed the limit"
    );
    clock.advance(Duration::from_millis(500));
    assert!(limiter.check().is_ok());
    assert!(limiter.check().is_err());
}

#[test]
fn cancelling_a_ready_reservation_at_its_own_instant_gives_it_back() {
    // x/time/rate's CancelAt restores when the slot is exactly now (not yet passed).
    let (clock, limiter) = manual(1, 1);
    let r = limiter.reserve();
    assert!(r.is_ready());
    assert!(r.cancel());
    assert!(limiter.check().is_ok());
    clock.advance(SECOND);
    let r = limiter.reserve();
    assert!(r.is_ready());
    clock.advance(Duration::from_nanos(1));
    assert!(!r.cancel(), "one nanosecond later the slot has passed");
}

#[test]
fn a_wait_sleeping_through_set_rate_wakes_at_its_slot_and_gives_nothing_back_on_cancel() {
    let _check = LeakCheck::new();
    let (clock, limiter) = manual(1, 1);
    limiter.check().unwrap();
    let token = CancelToken::new();
    thread::scope(|s| {
        let first = s.spawn(|| limiter.wait_timeout(Duration::from_secs(5)));
        eventually("the first waiter to sleep", || limiter.stats().slept == 1);
        let second = s.spawn(|| limiter.wait_cancellable(&token));
        eventually("the second waiter to sleep", || limiter.stats().slept == 2);
        limiter.set_rate(10, SECOND).unwrap();
        token.cancel();
        assert!(matches!(
            second.join().unwrap(),
            Err(WaitError::Cancelled(_))
        ));
        assert_eq!(
            limiter.stats().gave_back,
            0,
            "a slot claimed under the old rate is not returned under the new"
        );
        clock.advance(SECOND);
        assert_eq!(first.join().unwrap(), Ok(()), "woken at its slot");
    });
}

#[test]
fn cancels_racing_sleeping_waits_never_over_admit() {
    let _check = LeakCheck::new();
    const WAITERS: usize = 6;
    let (clock, limiter) = manual(10, 2);
    let admitted = AtomicUsize::new(0);
    let tokens: Vec<CancelToken> = (0..WAITERS).map(|_| CancelToken::new()).collect();
    let done = AtomicBool::new(false);
    thread::scope(|s| {
        for token in &tokens {
            let (limiter, admitted, done) = (&limiter, &admitted, &done);
            s.spawn(move || {
                while !done.load(Ordering::Acquire) && !token.is_cancelled() {
                    if limiter.wait_cancellable(token).is_ok() {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        // Time moves in 100 ms steps (one cell each); every other step one waiter is
        // cancelled, racing its own sleep and the clock.
        for step in 0..40 {
            if step % 7 == 3 {
                tokens[(step / 7) % WAITERS].cancel();
            }
            clock.advance(Duration::from_millis(100));
            thread::yield_now();
        }
        done.store(true, Ordering::Release);
        for token in &tokens {
            token.cancel();
        }
    });
    // 4 s of 10 cells a second, plus the burst of 2.
    let admitted = admitted.into_inner();
    assert!(admitted <= 2 + 40, "admitted {admitted}");
}

// ---------------------------------------------------------------------------------
// The keyed limiter: forgotten keys, panicking keys, keys that call back.

#[test]
fn a_wait_cancelled_after_its_key_was_forgotten_gives_nothing_to_the_key_seen_again() {
    let _check = LeakCheck::new();
    let clock = ManualClock::new();
    let limiter = KeyedRateLimiter::per_second(1)
        .burst(1)
        .max_keys(1)
        .shards(1)
        .clock(clock.clone())
        .build()
        .unwrap();
    limiter.check_key(&"a").unwrap();
    let token = CancelToken::new();
    thread::scope(|s| {
        let waiter = s.spawn(|| limiter.wait_key_cancellable(&"a", &token));
        eventually("the waiter to claim its slot", || {
            limiter
                .check_key(&"a")
                .is_err_and(|e| e.wait_time() == 2 * SECOND)
        });
        limiter.check_key(&"b").unwrap(); // room is needed: "a" is forgotten
        limiter.check_key(&"a").unwrap(); // and seen again, fresh
        assert_eq!(limiter.stats().evicted_active, 2);
        token.cancel();
        assert!(matches!(
            waiter.join().unwrap(),
            Err(WaitError::Cancelled(_))
        ));
    });
    assert!(
        limiter.check_key(&"a").is_err(),
        "the old wait's slot is not given to the new entry"
    );
}

/// What a [`Touchy`] key does wrong.
const CALM: u8 = 0;
const PANIC_HASH: u8 = 1;
const PANIC_EQ: u8 = 2;
const PANIC_CLONE: u8 = 3;
const PANIC_DROP: u8 = 4;

/// A key whose `Hash`, `Eq`, `Clone` or `Drop` panics on demand.
#[derive(Debug)]
struct Touchy {
    id: u32,
    mode: Arc<AtomicU8>,
    drops: Arc<AtomicUsize>,
}

impl Touchy {
    fn new(id: u32, mode: &Arc<AtomicU8>, drops: &Arc<AtomicUsize>) -> Touchy {
        Touchy {
            id,
            mode: Arc::clone(mode),
            drops: Arc::clone(drops),
        }
    }

    fn fails(&self, what: u8) -> bool {
        self.mode.load(Ordering::SeqCst) == what
    }
}

impl Hash for Touchy {
    fn hash<H: Hasher>(&self, state: &mut H) {
        assert!(!self.fails(PANIC_HASH), "hash panics");
        self.id.hash(state);
    }
}

impl PartialEq for Touchy {
    fn eq(&self, other: &Touchy) -> bool {
        assert!(!self.fails(PANIC_EQ), "eq panics");
        self.id == other.id
    }
}

impl Eq for Touchy {}

impl Clone for Touchy {
    fn clone(&self) -> Touchy {
        assert!(!self.fails(PANIC_CLONE), "clone panics");
        Touchy::new(self.id, &self.mode, &self.drops)
    }
}

impl Drop for Touchy {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
        if self.fails(PANIC_DROP) && !thread::panicking() {
            panic!("drop panics");
        }
    }
}

fn touchy_limiter(max_keys: usize) -> (ManualClock, KeyedRateLimiter<Touchy, ManualClock>) {
    let clock = ManualClock::new();
    let limiter = KeyedRateLimiter::per_second(1)
        .burst(1)
        .max_keys(max_keys)
        .shards(1)
        .clock(clock.clone())
        .build()
        .unwrap();
    (clock, limiter)
}

#[test]
fn a_key_whose_hash_eq_or_clone_panics_leaves_its_shard_usable_and_counts_nothing() {
    let (clock, limiter) = touchy_limiter(16);
    let (mode, drops) = (Arc::new(AtomicU8::new(CALM)), Arc::new(AtomicUsize::new(0)));
    let one = Touchy::new(1, &mode, &drops);
    let two = Touchy::new(2, &mode, &drops);
    limiter.check_key(&one).unwrap();
    // (`Eq` runs only against a remembered key with the same hash: tried on `one`.)
    for what in [PANIC_HASH, PANIC_CLONE] {
        mode.store(what, Ordering::SeqCst);
        let caught = catch_unwind(AssertUnwindSafe(|| limiter.check_key(&two)));
        mode.store(CALM, Ordering::SeqCst);
        assert!(
            caught.is_err(),
            "mode {what}: the key's panic reaches its caller"
        );
        assert_eq!(
            limiter.len(),
            1,
            "mode {what}: the new key was not remembered"
        );
    }
    mode.store(PANIC_EQ, Ordering::SeqCst);
    assert!(catch_unwind(AssertUnwindSafe(|| limiter.check_key(&one))).is_err());
    mode.store(CALM, Ordering::SeqCst);
    // The shard is usable (the lock was released) and nothing was counted.
    assert!(limiter.check_key(&one).is_err(), "one's cell is still used");
    assert!(limiter.check_key(&two).is_ok(), "two was never charged");
    clock.advance(SECOND);
    assert!(limiter.check_key(&one).is_ok());
    assert_eq!(limiter.stats().key_drop_panics, 0);
}

#[test]
fn a_forgotten_key_whose_drop_panics_is_counted_and_the_limiter_carries_on() {
    let (clock, limiter) = touchy_limiter(1);
    let (mode, drops) = (Arc::new(AtomicU8::new(CALM)), Arc::new(AtomicUsize::new(0)));
    let one = Touchy::new(1, &mode, &drops);
    let two = Touchy::new(2, &mode, &drops);
    limiter.check_key(&one).unwrap();
    mode.store(PANIC_DROP, Ordering::SeqCst);
    // Room is needed: the limiter's copy of `one` is forgotten, and its drop panics.
    assert!(limiter.check_key(&two).is_ok());
    clock.advance(SECOND);
    assert_eq!(
        limiter.retain_recent(),
        1,
        "two is forgotten too, panicking"
    );
    mode.store(CALM, Ordering::SeqCst);
    let stats = limiter.stats();
    assert_eq!((stats.keys, stats.key_drop_panics), (0, 2));
    assert!(limiter.check_key(&one).is_ok());
}

#[test]
fn dropping_a_keyed_limiter_drops_every_key_even_when_their_drops_panic() {
    let (_clock, limiter) = touchy_limiter(16);
    let (mode, drops) = (Arc::new(AtomicU8::new(CALM)), Arc::new(AtomicUsize::new(0)));
    let keys: Vec<Touchy> = (0..5).map(|id| Touchy::new(id, &mode, &drops)).collect();
    for key in &keys {
        limiter.check_key(key).unwrap();
    }
    mode.store(PANIC_DROP, Ordering::SeqCst);
    drop(limiter); // must neither unwind nor leak the other keys
    mode.store(CALM, Ordering::SeqCst);
    assert_eq!(
        drops.load(Ordering::SeqCst),
        5,
        "every remembered copy was dropped"
    );
    drop(keys);
}

/// A key whose `Eq` calls back into the limiter that holds it (set in `REENTRANT`).
#[derive(Clone, Debug)]
struct CallsBack(u32);

impl Hash for CallsBack {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

static REENTRANT: OnceLock<KeyedRateLimiter<CallsBack, ManualClock>> = OnceLock::new();
static CALL_BACK: AtomicBool = AtomicBool::new(false);

impl PartialEq for CallsBack {
    fn eq(&self, other: &CallsBack) -> bool {
        if CALL_BACK.swap(false, Ordering::SeqCst) {
            let _ = REENTRANT.get().expect("set").check_key(&CallsBack(99));
        }
        self.0 == other.0
    }
}

impl Eq for CallsBack {}

#[test]
fn a_key_whose_eq_calls_back_into_its_own_shard_panics_instead_of_deadlocking() {
    let limiter = REENTRANT.get_or_init(|| {
        KeyedRateLimiter::per_second(1)
            .burst(1)
            .shards(1)
            .clock(ManualClock::new())
            .build()
            .unwrap()
    });
    limiter.check_key(&CallsBack(1)).unwrap();
    CALL_BACK.store(true, Ordering::SeqCst);
    let caught = catch_unwind(AssertUnwindSafe(|| limiter.check_key(&CallsBack(1))));
    let message = caught.unwrap_err();
    let message = message
        .downcast_ref::<&str>()
        .copied()
        .or(message.downcast_ref::<String>().map(String::as_str))
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("deadlock"), "{message}");
    // The shard was released and nothing was counted for the call.
    assert!(limiter.check_key(&CallsBack(1)).is_err());
    assert!(limiter.check_key(&CallsBack(2)).is_ok());
}

#[test]
fn a_keyed_limiter_past_its_time_horizon_keeps_limiting() {
    let clock = ManualClock::new();
    let limiter = KeyedRateLimiter::per_second(1)
        .burst(2)
        .clock(clock.clone())
        .build()
        .unwrap();
    limiter.check_key_n(&"a", 2).unwrap();
    clock.advance(Duration::MAX);
    assert_eq!(
        (0..50).filter(|_| limiter.check_key(&"a").is_ok()).count(),
        2
    );
    assert_eq!(
        (0..50).filter(|_| limiter.check_key(&"b").is_ok()).count(),
        2
    );
    assert!(limiter.check_key(&"a").unwrap_err().is_never());
    assert!(matches!(
        limiter.wait_key_timeout(&"a", Duration::MAX),
        Err(WaitError::Timeout(e)) if e.is_never()
    ));
    assert!(matches!(
        limiter.wait_key_deadline(&"a", clock.now()),
        Err(WaitError::Timeout(_))
    ));
}

/// A clock that can hand out an older reading on demand, as a thread that read the
/// time and was then preempted would use.
#[derive(Debug, Clone)]
struct StaleClock {
    real: ManualClock,
    stale: Arc<std::sync::Mutex<Option<Instant>>>,
}

impl Clock for StaleClock {
    fn now(&self) -> Instant {
        self.stale
            .lock()
            .unwrap()
            .unwrap_or_else(|| self.real.now())
    }

    fn sleep_until(&self, deadline: Instant, cancel: Option<&CancelToken>) -> bool {
        self.real.sleep_until(deadline, cancel)
    }
}

/// `retain_recent` forgot a key that was idle at the latest instant, and a check that
/// had read the clock earlier brought it back with a full burst as of that earlier
/// instant: over three seconds, nine cells passed a limit of three plus one a second.
#[test]
fn a_key_forgotten_as_idle_is_not_refilled_as_of_an_older_clock_reading() {
    let clock = StaleClock {
        real: ManualClock::new(),
        stale: Arc::default(),
    };
    let keyed = KeyedRateLimiter::per_second(1)
        .burst(3)
        .clock(clock.clone())
        .build()
        .unwrap();
    let start = clock.now();
    let mut admitted = 0;
    admitted += (0..3).filter(|_| keyed.check_key(&"k").is_ok()).count();
    clock.real.advance(Duration::from_secs(3));
    // Full again at the real time; forgotten as idle.
    assert_eq!(keyed.retain_recent(), 1);
    // A check that read the clock before the advance.
    *clock.stale.lock().unwrap() = Some(start);
    admitted += (0..3).filter(|_| keyed.check_key(&"k").is_ok()).count();
    *clock.stale.lock().unwrap() = None;
    admitted += (0..3).filter(|_| keyed.check_key(&"k").is_ok()).count();
    // Three at the start, then at most one a second for three seconds.
    assert!(admitted <= 6, "{admitted} cells passed a limit of 6");
}
