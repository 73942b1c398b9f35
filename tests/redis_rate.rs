//! The Redis-backed rate limiter against a real `redis-server`, started by the test on
//! a free port and stopped at the end.
//!
//! Without `redis-server` on the PATH these tests print why and pass, so `cargo test`
//! stays set-up free; CI installs Redis and sets `CORRAL_REQUIRE_REDIS=1`, which turns
//! a missing server into a failure.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use corral::{cancel::CancelReason, rate::RedisRateError, CancelToken, RedisRateLimiter};

const LONG: Duration = Duration::from_secs(30);

/// A `redis-server` on a free port, killed when dropped.
///
/// Each server listens on a loopback address of its own (`127.x.y.z`, from this
/// process's id and a counter): tests run in parallel, and with one shared
/// `127.0.0.1` a port freed by one test (a server stopped on purpose, or the probe
/// listener below) could be picked by another, whose probe would then reach the
/// wrong server.
struct Server {
    child: Child,
    ip: String,
    port: u16,
    addr: String,
}

static SERVERS: AtomicU32 = AtomicU32::new(0);

impl Server {
    fn start() -> Option<Server> {
        let n = SERVERS.fetch_add(1, Ordering::Relaxed) + 1;
        let pid = std::process::id();
        let ip = format!("127.{}.{}.{}", (pid >> 8) & 0xff, pid & 0xff, n.min(254));
        let port = TcpListener::bind((ip.as_str(), 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let child = match spawn_redis(&ip, port) {
            Ok(child) => child,
            Err(e) => {
                assert!(
                    std::env::var_os("CORRAL_REQUIRE_REDIS").is_none(),
                    "CORRAL_REQUIRE_REDIS is set but redis-server cannot start: {e}"
                );
                eprintln!("skipped: redis-server is not available ({e})");
                return None;
            }
        };
        let mut server = Server {
            child,
            addr: format!("{ip}:{port}"),
            ip,
            port,
        };
        server.wait_until_listening();
        Some(server)
    }

    /// Starts a new server on this one's address, after the old one was stopped.
    fn restart(&mut self) {
        self.stop();
        self.child = spawn_redis(&self.ip, self.port).expect("redis-server restarts");
        self.wait_until_listening();
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + LONG;
        while std::net::TcpStream::connect(&self.addr).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("redis-server on {} exited: {status}", self.addr);
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            thread::yield_now();
        }
    }

    fn limiter(&self, per_second: u32, burst: u32) -> RedisRateLimiter {
        RedisRateLimiter::builder(&self.addr)
            .per_second(per_second)
            .burst(burst)
            .build()
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn_redis(ip: &str, port: u16) -> std::io::Result<Child> {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", ip])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

#[test]
fn a_burst_passes_then_the_next_cell_waits_about_one_interval() {
    let Some(server) = Server::start() else {
        return;
    };
    // One cell per 10 s, burst 5: the test runs far inside one interval.
    let limiter = RedisRateLimiter::builder(&server.addr)
        .interval(Duration::from_secs(10))
        .burst(5)
        .build()
        .unwrap();
    for _ in 0..5 {
        limiter.check("burst").unwrap();
    }
    match limiter.check("burst") {
        Err(RedisRateError::NotUntil(wait)) => {
            assert!(
                wait > Duration::from_secs(5) && wait <= Duration::from_secs(10),
                "{wait:?}"
            );
        }
        other => panic!("expected NotUntil, got {other:?}"),
    }
    // Keys are independent.
    limiter.check("another").unwrap();
    assert!(matches!(
        limiter.check_n("fresh", 6),
        Err(RedisRateError::InsufficientCapacity {
            requested: 6,
            burst: 5
        })
    ));
    assert!(limiter.check_n("fresh", 0).is_ok());
}

#[test]
fn limiters_in_different_processes_share_one_limit() {
    let Some(server) = Server::start() else {
        return;
    };
    // Four limiters (four connections, as four processes would have) on one key:
    // together they admit exactly the burst.
    let admitted = AtomicU32::new(0);
    thread::scope(|s| {
        for _ in 0..4 {
            let limiter = RedisRateLimiter::builder(&server.addr)
                .interval(Duration::from_secs(60))
                .burst(25)
                .build()
                .unwrap();
            let admitted = &admitted;
            s.spawn(move || {
                for _ in 0..20 {
                    if limiter.check("shared").is_ok() {
                        admitted.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    assert_eq!(admitted.load(Ordering::SeqCst), 25);
}

#[test]
fn waits_sleep_until_the_server_admits_and_refuse_past_the_deadline_at_once() {
    let Some(server) = Server::start() else {
        return;
    };
    // One cell per 500 ms: wide enough that a loaded machine cannot let a slot pass
    // between two steps of the test.
    let limiter = server.limiter(2, 1);
    limiter.check("w").unwrap();
    let started = Instant::now();
    limiter.wait_timeout("w", LONG).unwrap(); // sleeps about 500 ms, then admitted
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
    // The next slot is 500 ms away: a 1 ms budget fails at once, without sleeping.
    assert!(matches!(
        limiter.wait_timeout("w", Duration::from_millis(1)),
        Err(RedisRateError::Timeout)
    ));
    let token = CancelToken::new();
    token.cancel();
    assert!(matches!(
        limiter.wait_cancellable("w", &token),
        Err(RedisRateError::Cancelled(CancelReason::Cancelled))
    ));
    let token = CancelToken::with_timeout(Duration::from_millis(1));
    assert!(matches!(
        limiter.wait_cancellable("w", &token),
        Err(RedisRateError::Cancelled(CancelReason::DeadlineExceeded))
    ));
    limiter.wait("w").unwrap();
}

#[test]
fn a_server_that_goes_away_is_a_backend_error_and_a_new_one_is_used_again() {
    let Some(mut server) = Server::start() else {
        return;
    };
    let limiter = RedisRateLimiter::builder(&server.addr)
        .per_second(1000)
        .burst(10)
        .io_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    limiter.check("k").unwrap();
    server.stop();
    let started = Instant::now();
    assert!(matches!(
        limiter.check("k"),
        Err(RedisRateError::Backend(_))
    ));
    assert!(
        started.elapsed() < LONG,
        "a dead server must not hang the caller"
    );
    // A server back on the same address: the limiter reconnects and loads the script.
    server.restart();
    let deadline = Instant::now() + LONG;
    let outcome = loop {
        match limiter.check("k") {
            Err(RedisRateError::Backend(_)) if Instant::now() < deadline => thread::yield_now(),
            other => break other,
        }
    };
    outcome.unwrap();
}

#[test]
fn bad_settings_name_the_field() {
    let field = |b: corral::rate::RedisRateLimiterBuilder| b.build().unwrap_err().field();
    assert_eq!(field(RedisRateLimiter::builder("127.0.0.1:6379")), "rate");
    assert_eq!(
        field(RedisRateLimiter::builder("127.0.0.1:6379").per_second(0)),
        "rate"
    );
    assert_eq!(
        field(
            RedisRateLimiter::builder("127.0.0.1:6379")
                .per_second(1)
                .burst(0)
        ),
        "burst"
    );
    assert_eq!(
        field(
            RedisRateLimiter::builder("127.0.0.1:6379")
                .per_second(1)
                .io_timeout(Duration::ZERO)
        ),
        "io_timeout"
    );
    assert_eq!(
        field(RedisRateLimiter::builder("not an address").per_second(1)),
        "addr"
    );
}
