//! Closed-state call overhead: corral's `CircuitBreaker::call` beside failsafe and
//! recloser and a direct call, on one thread and on two threads sharing one breaker,
//! for each policy (consecutive failures, count window, time window).
//!
//! Peers have no exact match for every policy: failsafe offers consecutive failures
//! and a success rate over a time window (no count window: its consecutive policy
//! stands in); recloser has only a count ring buffer, measured in every group. Every
//! call succeeds, so every breaker stays closed: this is the price paid on the happy
//! path. Two-thread numbers are wall time per call while both threads call at once.

mod common;

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use common::{Group, Role};
use corral::{breaker::Window, CircuitBreaker};
use criterion::{criterion_group, criterion_main, Criterion};
use failsafe::CircuitBreaker as _;

#[inline(never)]
fn upstream(x: u64) -> Result<u64, ()> {
    Ok(black_box(x))
}

#[derive(Clone, Copy)]
enum Policy {
    Consecutive,
    CountWindow,
    TimeWindow,
}

impl Policy {
    fn name(self) -> &'static str {
        match self {
            Policy::Consecutive => "consecutive",
            Policy::CountWindow => "count_window",
            Policy::TimeWindow => "time_window",
        }
    }

    fn corral(self) -> CircuitBreaker {
        let b = CircuitBreaker::builder();
        let b = match self {
            Policy::Consecutive => b.consecutive_failures(5),
            Policy::CountWindow => b
                .failure_rate(0.5)
                .window(Window::Count(100))
                .minimum_calls(20),
            Policy::TimeWindow => b
                .failure_rate(0.5)
                .window(Window::Time(Duration::from_secs(10)))
                .minimum_calls(20),
        };
        b.build().expect("valid config")
    }

    fn failsafe(self) -> Box<dyn Fn(u64) -> bool + Send + Sync> {
        let backoff = failsafe::backoff::constant(Duration::from_secs(30));
        match self {
            Policy::Consecutive | Policy::CountWindow => {
                let policy = failsafe::failure_policy::consecutive_failures(5, backoff);
                let cb = failsafe::Config::new().failure_policy(policy).build();
                Box::new(move |x| cb.call(|| upstream(x)).is_ok())
            }
            Policy::TimeWindow => {
                let policy = failsafe::failure_policy::success_rate_over_time_window(
                    0.5,
                    20,
                    Duration::from_secs(10),
                    backoff,
                );
                let cb = failsafe::Config::new().failure_policy(policy).build();
                Box::new(move |x| cb.call(|| upstream(x)).is_ok())
            }
        }
    }

    fn recloser() -> recloser::Recloser {
        recloser::Recloser::custom()
            .error_rate(0.5)
            .closed_len(100)
            .open_wait(Duration::from_secs(30))
            .build()
    }
}

/// One contender's call, boxed so every contender pays the same indirection.
type Caller<'a> = Box<dyn Fn(u64) + Sync + 'a>;

/// Wall time for `iters` calls made on each of `threads` threads at once.
fn concurrent(threads: usize, iters: u64, call: &(dyn Fn(u64) + Sync)) -> Duration {
    let start = Barrier::new(threads + 1);
    let done = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                start.wait();
                for i in 0..iters {
                    call(i);
                }
                done.wait();
            });
        }
        start.wait();
        let began = Instant::now();
        done.wait();
        began.elapsed()
    })
}

fn closed_call(c: &mut Criterion) {
    for threads in [1usize, 2] {
        for policy in [Policy::Consecutive, Policy::CountWindow, Policy::TimeWindow] {
            let name = format!("breaker/closed_call/{}/{threads}t", policy.name());
            let mut g = Group::new(c, name);
            let corral = policy.corral();
            let failsafe = policy.failsafe();
            let recloser = Policy::recloser();
            // recloser keeps a count ring in every group: the closest it has to each policy.
            let corral_role = Role::Corral {
                vs: &["failsafe", "recloser"],
            };
            let contenders: [(&str, Role, Caller<'_>); 4] = [
                (
                    "direct",
                    Role::Reference,
                    Box::new(|x| {
                        let _ = black_box(upstream(x));
                    }),
                ),
                (
                    "corral",
                    corral_role,
                    Box::new(|x| drop(black_box(corral.call(|| upstream(x))))),
                ),
                (
                    "failsafe",
                    Role::Peer,
                    Box::new(|x| {
                        black_box(failsafe(x));
                    }),
                ),
                (
                    "recloser",
                    Role::Peer,
                    Box::new(|x| drop(black_box(recloser.call(|| upstream(x))))),
                ),
            ];
            for (peer, role, call) in &contenders {
                g.bench(peer, *role, |b| {
                    b.iter_custom(|iters| concurrent(threads, iters, call.as_ref()))
                });
            }
            g.finish();
            assert_eq!(corral.state(), corral::breaker::State::Closed);
        }
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! { name = benches; config = config(); targets = closed_call }
criterion_main!(benches);
