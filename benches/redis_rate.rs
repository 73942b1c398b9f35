//! The fleet-wide limiter's price: one `check` against a local `redis-server` (one
//! round trip and one script run) beside the in-process `RateLimiter::check` it
//! mirrors and a bare Redis `PING` round trip (the floor for anything remote). Starts
//! its own `redis-server` on a free port; without one on the PATH it prints why and
//! measures nothing.

mod common;

use std::hint::black_box;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Group, Role};
use corral::{RateLimiter, RedisRateLimiter};
use criterion::{criterion_group, criterion_main, Criterion};

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
    Some((server, addr))
}

fn check(c: &mut Criterion) {
    let Some((_server, addr)) = start() else {
        eprintln!("redis_rate bench skipped: redis-server is not available");
        return;
    };
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
    let fleet = RedisRateLimiter::builder(&addr)
        .interval(Duration::from_micros(1))
        .burst(1_000_000)
        .build()
        .expect("valid limiter");
    let vs = Role::Corral {
        vs: &["floor_redis_ping_round_trip"],
    };
    g.bench("corral_redis_check", vs, |b| {
        b.iter(|| black_box(fleet.check("bench").is_ok()))
    });
    let mut ping = TcpStream::connect(&addr).expect("connect");
    ping.set_nodelay(true).expect("nodelay");
    let mut reply = [0u8; 7];
    // No remote decision can take less than one round trip.
    g.bench("floor_redis_ping_round_trip", Role::Floor, |b| {
        b.iter(|| {
            ping.write_all(b"*1\r\n$4\r\nPING\r\n").expect("send");
            ping.read_exact(&mut reply).expect("+PONG\r\n");
            black_box(reply[1])
        })
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
