//! Closed-state call overhead: corral's `CircuitBreaker::call` beside failsafe and
//! recloser and a direct call, on one thread and on two threads sharing one breaker,
//! for each policy (consecutive failures, count window, time window).
//!
//! Peers have no exact match for every policy: failsafe offers consecutive failures
//! and a success rate over a time window (no count window: its consecutive policy
//! stands in); recloser has only a count ring buffer, measured in every group. Every
//! call succeeds, so every breaker stays closed: this is the price paid on the happy
//! path. Two-thread numbers are wall time per call while both threads call at once;
//! the `2t_cpu` groups report each thread's own CPU time per call instead (Linux
//! `/proc/thread-self/schedstat`, wall time elsewhere), which a machine busy with
//! other work inflates far less, while cache-line transfers between the two threads
//! still count in full.

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use corral::{CircuitBreaker, Window};
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

/// Nanoseconds the calling thread has run on a CPU, where the OS says.
fn thread_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

/// For `iters` calls made on each of `threads` threads at once: the wall time, or
/// (`cpu`) the mean CPU time the threads spent.
fn concurrent(threads: usize, iters: u64, call: &(dyn Fn(u64) + Sync), cpu: bool) -> Duration {
    let start = Barrier::new(threads + 1);
    let done = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    let began = thread_cpu_time();
                    for i in 0..iters {
                        call(i);
                    }
                    let spent = thread_cpu_time().zip(began).map(|(end, begin)| end - begin);
                    done.wait();
                    spent
                })
            })
            .collect();
        start.wait();
        let began = Instant::now();
        done.wait();
        let wall = began.elapsed();
        let cpu_times: Option<Vec<Duration>> =
            workers.into_iter().map(|w| w.join().unwrap()).collect();
        match cpu_times {
            Some(times) if cpu => times.iter().sum::<Duration>() / threads as u32,
            _ => wall,
        }
    })
}

fn closed_call(c: &mut Criterion) {
    for (threads, cpu) in [(1usize, false), (2, false), (2, true)] {
        for policy in [Policy::Consecutive, Policy::CountWindow, Policy::TimeWindow] {
            let suffix = if cpu { "_cpu" } else { "" };
            let name = format!("breaker/closed_call/{}/{threads}t{suffix}", policy.name());
            let mut g = c.benchmark_group(name);
            let corral = policy.corral();
            let failsafe = policy.failsafe();
            let recloser = Policy::recloser();
            let contenders: [(&str, Caller<'_>); 4] = [
                (
                    "direct",
                    Box::new(|x| {
                        let _ = black_box(upstream(x));
                    }),
                ),
                (
                    "corral",
                    Box::new(|x| drop(black_box(corral.call(|| upstream(x))))),
                ),
                (
                    "failsafe",
                    Box::new(|x| {
                        black_box(failsafe(x));
                    }),
                ),
                (
                    "recloser",
                    Box::new(|x| drop(black_box(recloser.call(|| upstream(x))))),
                ),
            ];
            for (peer, call) in &contenders {
                g.bench_function(*peer, |b| {
                    b.iter_custom(|iters| concurrent(threads, iters, call.as_ref(), cpu))
                });
            }
            g.finish();
            assert_eq!(corral.state(), corral::State::Closed);
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
