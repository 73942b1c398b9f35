//! Rate limiter hot paths beside governor and a hand-written floor.
//!
//! - `rate/clock`: what reading the time costs (`Instant::now` vs a TSC read through
//!   quanta), since it is most of a `check()`.
//! - `rate/check_admit` and `rate/check_refuse`: `check()` on 1 and 2 threads. The
//!   floor is a one-`AtomicU64` GCRA written inline (on `Instant` and on the TSC);
//!   `corral_std_clock` is corral with a user `Clock` that reads `Instant::now`
//!   (dynamic clock path, no TSC).
//! - `rate/keyed`: `check_key` over 1,000 `u64` keys, corral vs governor's keyed
//!   (DashMap) limiter, on 1 and 2 threads.
//!
//! Two-thread numbers are the time per call on the measured thread while a second
//! thread hammers the same limiter.

mod common;

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Group, Role};
use corral::{clock::Clock, CancelToken, KeyedRateLimiter, RateLimiter};
use criterion::{criterion_group, criterion_main, Criterion};

/// A user clock on `Instant::now`: corral without its TSC fast path.
#[derive(Debug, Clone, Copy)]
struct StdClock;

impl Clock for StdClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn sleep_until(&self, deadline: Instant, cancel: Option<&CancelToken>) -> bool {
        corral::clock::SystemClock.sleep_until(deadline, cancel)
    }
}

/// The floor: GCRA in one `AtomicU64`, inline, nothing else.
struct Floor<F> {
    now: F,
    tat: AtomicU64,
    interval: u64,
    tau: u64,
}

impl<F: Fn() -> u64> Floor<F> {
    fn new(now: F, interval: u64, burst: u64) -> Self {
        Floor {
            now,
            tat: AtomicU64::new(0),
            interval,
            tau: interval * burst,
        }
    }

    #[inline]
    fn check(&self) -> bool {
        let now = (self.now)();
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let new = tat.max(now) + self.interval;
            if new > now + self.tau {
                return false;
            }
            match self
                .tat
                .compare_exchange_weak(tat, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(actual) => tat = actual,
            }
        }
    }
}

fn std_nanos() -> impl Fn() -> u64 {
    let base = Instant::now();
    move || base.elapsed().as_nanos() as u64
}

fn tsc_nanos() -> impl Fn() -> u64 {
    let clock = quanta::Clock::new();
    let base = clock.raw();
    move || clock.delta_as_nanos(base, clock.raw())
}

/// Benchmarks `f` alone and with a second thread calling `f` at the same time.
fn one_and_two(g: &mut Group<'_>, name: &str, role: Role, f: &(dyn Fn() + Sync)) {
    g.bench_param(name, "1_thread", role, |b| b.iter(f));
    g.bench_param(name, "2_threads", role, |b| {
        b.iter_custom(|iters| {
            let stop = AtomicBool::new(false);
            std::thread::scope(|s| {
                s.spawn(|| {
                    while !stop.load(Ordering::Relaxed) {
                        f();
                    }
                });
                let start = Instant::now();
                for _ in 0..iters {
                    f();
                }
                let took = start.elapsed();
                stop.store(true, Ordering::Relaxed);
                took
            })
        })
    });
}

fn clock(c: &mut Criterion) {
    let mut g = Group::new(c, "rate/clock");
    g.bench("std_instant_now", Role::Reference, |b| b.iter(Instant::now));
    let q = quanta::Clock::new();
    g.bench("quanta_raw_scaled", Role::Reference, |b| {
        let base = q.raw();
        b.iter(|| q.delta_as_nanos(base, q.raw()))
    });
    g.finish();
}

const HUGE: u32 = 1_000_000_000; // one cell per nanosecond: every call is admitted

fn check(c: &mut Criterion, group: &str, rate: u32, burst: u32, drain: bool) {
    let mut g = Group::new(c, group);
    let corral = RateLimiter::per_second(rate).burst(burst).build().unwrap();
    let corral_std = RateLimiter::per_second(rate)
        .burst(burst)
        .clock(StdClock)
        .build()
        .unwrap();
    let quota = governor::Quota::per_second(NonZeroU32::new(rate).unwrap())
        .allow_burst(NonZeroU32::new(burst).unwrap());
    let governor = governor::RateLimiter::direct(quota);
    let interval = 1_000_000_000 / u64::from(rate);
    let floor_std = Floor::new(std_nanos(), interval, u64::from(burst));
    let floor_tsc = Floor::new(tsc_nanos(), interval, u64::from(burst));
    if drain {
        while corral.check().is_ok() {}
        while corral_std.check().is_ok() {}
        while governor.check().is_ok() {}
        while floor_std.check() {}
        while floor_tsc.check() {}
    }
    let vs = Role::Corral {
        vs: &["governor", "floor_tsc"],
    };
    one_and_two(&mut g, "corral", vs, &|| {
        let _ = black_box(black_box(&corral).check());
    });
    one_and_two(&mut g, "governor", Role::Peer, &|| {
        let _ = black_box(black_box(&governor).check());
    });
    one_and_two(&mut g, "floor_tsc", Role::Floor, &|| {
        black_box(black_box(&floor_tsc).check());
    });
    one_and_two(&mut g, "floor_std_instant", Role::Floor, &|| {
        black_box(black_box(&floor_std).check());
    });
    // corral on a user clock that reads `Instant::now`: compared with the floor on the
    // same clock only.
    let vs_std = Role::Corral {
        vs: &["floor_std_instant"],
    };
    one_and_two(&mut g, "corral_std_clock", vs_std, &|| {
        let _ = black_box(black_box(&corral_std).check());
    });
    g.finish();
}

fn check_admit(c: &mut Criterion) {
    check(c, "rate/check_admit", HUGE, 1_000_000, false);
}

fn check_refuse(c: &mut Criterion) {
    // One cell per second with the burst used up: every call is refused.
    check(c, "rate/check_refuse", 1, 1, true);
}

fn keyed(c: &mut Criterion) {
    const KEYS: u64 = 1_000;
    let mut g = Group::new(c, "rate/keyed");
    let corral = KeyedRateLimiter::per_second(HUGE)
        .burst(1_000_000)
        .build()
        .unwrap();
    let quota = governor::Quota::per_second(NonZeroU32::new(HUGE).unwrap())
        .allow_burst(NonZeroU32::new(1_000_000).unwrap());
    let governor = governor::RateLimiter::keyed(quota);
    for key in 0..KEYS {
        let _ = corral.check_key(&key);
        let _ = governor.check_key(&key);
    }
    // Thread-local key streams, so no shared key counter is measured.
    // Each thread starts at its own offset, so two threads touch different keys.
    static OFFSET: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static K: std::cell::Cell<u64> = std::cell::Cell::new(OFFSET.fetch_add(KEYS / 2, Ordering::Relaxed));
    }
    let local_key = || {
        K.with(|k| {
            let v = k.get().wrapping_add(7) % KEYS;
            k.set(v);
            v
        })
    };
    let vs = Role::Corral { vs: &["governor"] };
    one_and_two(&mut g, "corral", vs, &|| {
        let _ = black_box(corral.check_key(&local_key()));
    });
    one_and_two(&mut g, "governor", Role::Peer, &|| {
        let _ = black_box(governor.check_key(&local_key()));
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! { name = benches; config = config(); targets = clock, check_admit, check_refuse, keyed }
criterion_main!(benches);
