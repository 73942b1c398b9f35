//! The fleet-wide limits' price against a local `redis-server` (feature `redis`):
//! `RedisRateLimiter::check` from 1, 2 and 4 threads (one round trip and one script
//! run each; the threads share one pool), beside the in-process `RateLimiter::check`
//! and a bare Redis `PING` round trip (the floor for anything remote), and a
//! `RedisSemaphore` acquire + release (two round trips). Starts its own
//! `redis-server` on a free port; without one on the PATH it prints why and measures
//! nothing.

mod common;

use std::hint::black_box;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use common::{Group, Role};
use corral::{fleet::RedisPool, RateLimiter, RedisRateLimiter, RedisSemaphore};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start() -> Option<(Server, String)> {
    let port = TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let server = Server(child);
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(&addr).is_err() {
        if Instant::now() > deadline {
            return None;
        }
        std::thread::yield_now();
    }
    Some((server, format!("redis://{addr}")))
}

/// `iters` calls of `f` spread over `threads` threads started together; the time
/// from the start signal to the last call's end.
fn spread(threads: u64, iters: u64, f: &(dyn Fn() + Sync)) -> Duration {
    let barrier = Barrier::new(threads as usize + 1);
    std::thread::scope(|s| {
        for t in 0..threads {
            let barrier = &barrier;
            let n = iters / threads + u64::from(t < iters % threads);
            s.spawn(move || {
                barrier.wait();
                for _ in 0..n {
                    f();
                }
            });
        }
        barrier.wait();
        Instant::now() // the scope ends once every thread has finished
    })
    .elapsed()
}

fn check(c: &mut Criterion) {
    let Some((_server, url)) = start() else {
        eprintln!("redis_rate bench skipped: redis-server is not available");
        return;
    };
    let pool = RedisPool::builder(&url)
        .max_connections(4)
        .build()
        .expect("pool");
    let mut g = Group::new(c, "redis_rate/check");
    // A rate far above the call rate: every check is admitted.
    let local = RateLimiter::per_second(1_000_000_000)
        .burst(1_000_000)
        .build()
        .expect("valid limiter");
    // A different kind of work (no network): context, never a ratio.
    g.bench("in_process_rate_limiter", Role::Reference, |b| {
        b.iter(|| black_box(local.check().is_ok()))
    });
    let fleet = RedisRateLimiter::builder_on(&pool)
        .interval(Duration::from_micros(1))
        .burst(1_000_000)
        .build()
        .expect("valid limiter");
    let mut ping = corral::redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection())
        .expect("connect");
    // No remote decision can take less than one round trip.
    g.bench("floor_redis_ping_round_trip", Role::Floor, |b| {
        b.iter(|| {
            let pong: String = corral::redis::cmd("PING").query(&mut ping).expect("PONG");
            black_box(pong)
        })
    });
    g.throughput(Throughput::Elements(1));
    for threads in [1u64, 2, 4] {
        let vs = Role::Corral {
            vs: &["floor_redis_ping_round_trip"],
        };
        g.bench_param(
            "corral_redis_check",
            format!("{threads}_threads"),
            vs,
            |b| {
                b.iter_custom(|iters| {
                    spread(threads, iters, &|| {
                        black_box(fleet.check("bench").is_ok());
                    })
                })
            },
        );
    }
    g.finish();

    let sem = RedisSemaphore::builder_on(&pool, "bench")
        .capacity(1_000)
        .build()
        .expect("valid semaphore");
    let mut g = Group::new(c, "redis_semaphore/acquire_release");
    // Two round trips (acquire, release); nothing else in the group to compare with.
    g.bench("corral_redis_semaphore", Role::Corral { vs: &[] }, |b| {
        b.iter(|| drop(black_box(sem.try_acquire().expect("free"))))
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! { name = benches; config = config(); targets = check }
criterion_main!(benches);
