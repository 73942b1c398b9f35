//! Semaphore hot paths beside the peers, one criterion group per case:
//!
//! * `semaphore/uncontended_try_acquire`: `try_acquire` + drop on one thread.
//! * `semaphore/uncontended_acquire`: blocking `acquire` + drop on one thread.
//! * `semaphore/contended_2x100k`: 2 threads × 100,000 acquire/release on 1 permit;
//!   one iteration is the whole run (200,000 acquires), so ns/op = time / 200,000.
//!
//! Peers: `tokio::sync::Semaphore` (`try_acquire`, `blocking_acquire`), an
//! `AtomicUsize` compare-and-swap floor (what a semaphore's fast path cannot beat),
//! and a textbook parking_lot `Mutex` + `Condvar` counting semaphore written below.

mod common;

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{Group, Role};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use parking_lot::{Condvar, Mutex};

/// The classic counting semaphore: a count under a mutex, a condvar for waiters.
struct CondvarSemaphore {
    count: Mutex<usize>,
    freed: Condvar,
}

impl CondvarSemaphore {
    fn new(permits: usize) -> Self {
        CondvarSemaphore {
            count: Mutex::new(permits),
            freed: Condvar::new(),
        }
    }

    fn try_acquire(&self) -> bool {
        let mut count = self.count.lock();
        if *count > 0 {
            *count -= 1;
            true
        } else {
            false
        }
    }

    fn acquire(&self) {
        let mut count = self.count.lock();
        while *count == 0 {
            self.freed.wait(&mut count);
        }
        *count -= 1;
    }

    fn release(&self) {
        *self.count.lock() += 1;
        self.freed.notify_one();
    }
}

/// The floor: a bare CAS decrement and an atomic increment.
fn cas_acquire(permits: &AtomicUsize) -> bool {
    let mut current = permits.load(Ordering::Relaxed);
    while current > 0 {
        match permits.compare_exchange_weak(
            current,
            current - 1,
            Ordering::Acquire,
            Ordering::Relaxed,
        ) {
            Ok(_) => return true,
            Err(actual) => current = actual,
        }
    }
    false
}

fn cas_release(permits: &AtomicUsize) {
    permits.fetch_add(1, Ordering::Release);
}

fn uncontended_try_acquire(c: &mut Criterion) {
    let mut g = Group::new(c, "semaphore/uncontended_try_acquire");
    let sem = corral::Semaphore::new(1);
    let vs = Role::Corral {
        vs: &["tokio", "cas_floor", "mutex_condvar"],
    };
    g.bench("corral", vs, |b| {
        b.iter(|| drop(black_box(&sem).try_acquire().unwrap()))
    });
    let tokio_sem = tokio::sync::Semaphore::new(1);
    g.bench("tokio", Role::Peer, |b| {
        b.iter(|| drop(black_box(&tokio_sem).try_acquire().unwrap()))
    });
    let floor = AtomicUsize::new(1);
    g.bench("cas_floor", Role::Floor, |b| {
        b.iter(|| {
            assert!(cas_acquire(black_box(&floor)));
            cas_release(&floor);
        })
    });
    let cv = CondvarSemaphore::new(1);
    g.bench("mutex_condvar", Role::Peer, |b| {
        b.iter(|| {
            assert!(black_box(&cv).try_acquire());
            cv.release();
        })
    });
    g.finish();
}

fn uncontended_acquire(c: &mut Criterion) {
    let mut g = Group::new(c, "semaphore/uncontended_acquire");
    let sem = corral::Semaphore::new(1);
    let vs = Role::Corral {
        vs: &["tokio_blocking_acquire", "mutex_condvar"],
    };
    g.bench("corral", vs, |b| {
        b.iter(|| drop(black_box(&sem).acquire().unwrap()))
    });
    let tokio_sem = tokio::sync::Semaphore::new(1);
    g.bench("tokio_blocking_acquire", Role::Peer, |b| {
        b.iter(|| drop(black_box(&tokio_sem).blocking_acquire().unwrap()))
    });
    let cv = CondvarSemaphore::new(1);
    g.bench("mutex_condvar", Role::Peer, |b| {
        b.iter(|| {
            black_box(&cv).acquire();
            cv.release();
        })
    });
    g.finish();
}

const ROUNDS: usize = 100_000;

/// Runs `per_thread` on 2 threads at once, `iters` times; returns the total time.
fn two_threads(iters: u64, per_thread: impl Fn() + Sync) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let start = Instant::now();
        thread::scope(|s| {
            s.spawn(&per_thread);
            s.spawn(&per_thread);
        });
        total += start.elapsed();
    }
    total
}

fn contended(c: &mut Criterion) {
    let mut g = Group::new(c, "semaphore/contended_2x100k");
    g.sample_size(10);
    g.throughput(Throughput::Elements(2 * ROUNDS as u64));
    let sem = corral::Semaphore::new(1);
    let vs = Role::Corral {
        vs: &["mutex_condvar", "tokio_blocking_acquire"],
    };
    g.bench("corral", vs, |b| {
        b.iter_custom(|iters| {
            two_threads(iters, || {
                for _ in 0..ROUNDS {
                    drop(sem.acquire().unwrap());
                }
            })
        })
    });
    let cv = CondvarSemaphore::new(1);
    g.bench("mutex_condvar", Role::Peer, |b| {
        b.iter_custom(|iters| {
            two_threads(iters, || {
                for _ in 0..ROUNDS {
                    cv.acquire();
                    cv.release();
                }
            })
        })
    });
    let tokio_sem = tokio::sync::Semaphore::new(1);
    g.bench("tokio_blocking_acquire", Role::Peer, |b| {
        b.iter_custom(|iters| {
            two_threads(iters, || {
                for _ in 0..ROUNDS {
                    drop(tokio_sem.blocking_acquire().unwrap());
                }
            })
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = uncontended_try_acquire, uncontended_acquire, contended
}
criterion_main!(benches);
