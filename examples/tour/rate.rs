//! Rate limiting: GCRA semantics on a manual clock, blocking waits on the real one,
//! an all-or-nothing reservation, and a keyed limiter holding its memory bound.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use corral::{clock::ManualClock, KeyedRateLimiter, RateLimiter};

pub fn run() {
    println!("\n[rate] 1 cell/s, burst 5, on a ManualClock: 15 concurrent checks at one instant");
    let clock = ManualClock::new();
    let limiter = RateLimiter::per_second(1)
        .burst(5)
        .clock(clock.clone())
        .build()
        .expect("valid quota");
    let admitted = AtomicUsize::new(0);
    corral::scope(|s| {
        for _ in 0..15 {
            s.spawn(|| {
                if limiter.check().is_ok() {
                    admitted.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    clock.advance(Duration::from_secs(1));
    let next = (0..15).filter(|_| limiter.check().is_ok()).count();
    println!(
        "  admitted {} at once, then {} more one simulated second later",
        admitted.load(Ordering::Relaxed),
        next
    );

    println!("[rate] 4 threads x 25 blocking wait() calls at 1,000/s (burst 10), real clock");
    let limiter = RateLimiter::per_second(1_000)
        .burst(10)
        .build()
        .expect("valid quota");
    let started = Instant::now();
    corral::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..25 {
                    limiter.wait();
                }
            });
        }
    });
    println!(
        "  100 cells in {:.1?} (GCRA: 10 at once, then one per ms = 90 ms); {} waits slept, none spun",
        started.elapsed(),
        limiter.stats().slept
    );

    println!("[rate] all-or-nothing: one cell from a per-user and a global limiter, or none");
    let clock = ManualClock::new();
    let build = |per_second| {
        RateLimiter::per_second(per_second)
            .burst(1)
            .clock(clock.clone())
            .build()
            .expect("valid quota")
    };
    let (user, global) = (build(10), build(1));
    global.check().expect("fresh limiter");
    let mine = user.reserve();
    let shared = global.reserve();
    let delay = shared.delay();
    let gave_back = shared.cancel() && mine.cancel();
    println!(
        "  the global slot was {delay:?} away, so both were cancelled (given back: {gave_back}); the user's cell is free again: {}",
        user.check().is_ok()
    );

    println!("[rate] keyed: 200,000 distinct clients through max_keys = 1,000");
    let clock = ManualClock::new();
    let per_client = KeyedRateLimiter::per_second(1_000)
        .burst(1)
        .max_keys(1_000)
        .clock(clock.clone())
        .build()
        .expect("valid quota");
    let mut refused_fresh = 0;
    for client in 0..200_000u64 {
        if per_client.check_key(&client).is_err() {
            refused_fresh += 1;
        }
        clock.advance(Duration::from_micros(5));
    }
    let stats = per_client.stats();
    println!(
        "  remembered {} keys (bound {}), fresh clients refused: {refused_fresh}, idle keys evicted: {}, active keys evicted: {}",
        stats.keys, stats.max_keys, stats.evicted_idle, stats.evicted_active
    );
}
