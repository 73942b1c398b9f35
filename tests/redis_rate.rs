//! The Redis-backed rate limiter (feature `redis`) against a real `redis-server`,
//! started by each test on an address of its own and stopped at the end; the
//! cross-process tests start this test binary again as child processes.

#![cfg(feature = "redis")]

mod redis_server;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use corral::leak::LeakCheck;
use corral::redis::Commands;
use corral::{
    cancel::CancelReason,
    fleet::{Admission, FailurePolicy, RedisPool, RedisRateError},
    resilience::ResilienceError,
    CancelToken, RedisRateLimiter, Resilience,
};
use redis_server::{env, results, spawn_child, Server, CHILD, LONG};

fn wall_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// Not a test of its own: the body of the child processes the tests below start.
#[test]
fn child_process() {
    let Ok(role) = std::env::var(CHILD) else {
        return;
    };
    assert_eq!(role, "rate");
    let limiter = RedisRateLimiter::builder(env("URL"))
        .interval(Duration::from_micros(env("INTERVAL_US").parse().unwrap()))
        .burst(env("BURST").parse().unwrap())
        .build()
        .unwrap();
    let start: u64 = env("START_US").parse().unwrap();
    let end: u64 = env("END_US").parse().unwrap();
    let checks: u32 = env("CHECKS").parse().unwrap();
    while wall_micros() < start {
        thread::sleep(Duration::from_millis(1)); // a shared start, by the wall clock
    }
    let (mut admitted, mut asked, mut first, mut last) = (0u32, 0u32, None, (0, 0));
    loop {
        let sent = wall_micros();
        if asked >= checks && sent >= end {
            break;
        }
        let outcome = limiter.check("shared");
        let received = wall_micros();
        first.get_or_insert((sent, received - sent));
        last = (received, received - sent);
        asked += 1;
        match outcome {
            Ok(admission) => {
                assert_eq!(admission, Admission::Redis);
                admitted += 1;
            }
            Err(RedisRateError::NotUntil(_)) => {}
            Err(other) => panic!("{other:?}"),
        }
    }
    let (first_sent, first_trip) = first.unwrap();
    println!(
        "RESULT {admitted} {first_sent} {first_trip} {} {}",
        last.0, last.1
    );
}

/// What processes checking one key saw, times in wall-clock µs.
struct Shared {
    admitted: u32,
    /// When the earliest check was sent, and its round trip.
    first_sent: u64,
    first_trip: u64,
    /// When the latest reply came, and its round trip.
    last_received: u64,
    last_trip: u64,
}

impl Shared {
    /// The time between the server's first and last decisions lies between these
    /// bounds, in seconds: at most from the first send to the last reply, at least
    /// that less both round trips.
    fn server_span(&self) -> (f64, f64) {
        let most = self.last_received - self.first_sent;
        let least = most.saturating_sub(self.first_trip + self.last_trip);
        (least as f64 / 1e6, most as f64 / 1e6)
    }
}

/// Starts `n` child processes hammering one key.
fn in_processes(
    server: &Server,
    n: usize,
    interval: Duration,
    burst: u32,
    run: Duration,
) -> Shared {
    let start = wall_micros() + 500_000; // time for the children to start
    let settings = [
        ("URL", server.url()),
        ("INTERVAL_US", interval.as_micros().to_string()),
        ("BURST", burst.to_string()),
        ("START_US", start.to_string()),
        ("END_US", (start + run.as_micros() as u64).to_string()),
        ("CHECKS", "40".to_owned()),
    ];
    let mut children: Vec<_> = (0..n)
        .map(|_| spawn_child("child_process", "rate", &settings))
        .collect();
    let mut shared = Shared {
        admitted: 0,
        first_sent: u64::MAX,
        first_trip: 0,
        last_received: 0,
        last_trip: 0,
    };
    for child in &mut children {
        let lines = results(child);
        let f: Vec<u64> = lines[0].split(' ').map(|f| f.parse().unwrap()).collect();
        shared.admitted += f[0] as u32;
        if f[1] < shared.first_sent {
            (shared.first_sent, shared.first_trip) = (f[1], f[2]);
        }
        if f[3] > shared.last_received {
            (shared.last_received, shared.last_trip) = (f[3], f[4]);
        }
    }
    shared
}

#[test]
fn two_processes_share_one_burst_exactly() {
    let Some(server) = Server::start() else {
        return;
    };
    // One cell a minute: nothing refills during the test, so the two processes
    // together admit exactly the burst, however their checks interleave.
    let shared = in_processes(&server, 2, Duration::from_secs(60), 25, Duration::ZERO);
    assert_eq!(shared.admitted, 25);
}

#[test]
fn two_processes_share_one_rate() {
    let Some(server) = Server::start() else {
        return;
    };
    // 20 cells a second, burst 10, for about 2 s, both processes checking without
    // pause: together they admit the burst plus one cell per interval that passed on
    // the server between its first and last decision, within one. The server's span
    // is bounded by what the clients saw (see `Shared::server_span`), so a slow
    // machine widens the bounds instead of failing the test.
    let shared = in_processes(
        &server,
        2,
        Duration::from_millis(50),
        10,
        Duration::from_secs(2),
    );
    let (least, most) = shared.server_span();
    let low = 10 + (20.0 * least).floor() as u32;
    let high = 10 + (20.0 * most).floor() as u32;
    assert!(
        (low.saturating_sub(1)..=high + 1).contains(&shared.admitted),
        "admitted {}, expected {low}..={high} (server span {least:.3}..{most:.3} s)",
        shared.admitted
    );
    assert!(
        most - least < 1.0,
        "round trips of a second: {least:.3}..{most:.3} s"
    );
}

#[test]
fn a_burst_passes_then_the_next_cell_waits_about_one_interval() {
    let Some(server) = Server::start() else {
        return;
    };
    // One cell per 10 s, burst 5: the test runs far inside one interval.
    let limiter = RedisRateLimiter::builder(&server.addr) // a bare host:port works too
        .interval(Duration::from_secs(10))
        .burst(5)
        .build()
        .unwrap();
    for _ in 0..5 {
        assert_eq!(limiter.check("burst").unwrap(), Admission::Redis);
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
    // Decisions are counted; zero cells and more than the burst need none.
    let stats = limiter.stats();
    assert_eq!((stats.admitted, stats.refused), (6, 1));
    assert_eq!((stats.backend_errors, stats.fallbacks), (0, 0));
    assert_eq!(stats.round_trips, 7);
    assert!(stats.rtt_min <= stats.rtt_mean && stats.rtt_mean <= stats.rtt_max);
}

#[test]
fn waits_sleep_until_the_server_admits_and_refuse_past_the_deadline_at_once() {
    let Some(server) = Server::start() else {
        return;
    };
    // One cell per 500 ms: wide enough that a loaded machine cannot let a slot pass
    // between two steps of the test.
    let limiter = RedisRateLimiter::builder(server.url())
        .per_second(2)
        .build()
        .unwrap();
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

/// Asserts that no text derived from `value` shows `secret`.
fn hides(secret: &str, value: &(impl std::fmt::Debug + ?Sized), display: Option<String>) {
    let debug = format!("{value:?}");
    assert!(!debug.contains(secret), "Debug shows the password: {debug}");
    if let Some(display) = display {
        assert!(
            !display.contains(secret),
            "Display shows the password: {display}"
        );
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = format!("{e} / {e:?}");
    let mut next = e.source();
    while let Some(level) = next {
        text.push_str(&format!(" / {level} / {level:?}"));
        next = level.source();
    }
    text
}

#[test]
fn passwords_reach_the_server_through_the_url_and_never_show() {
    const PASSWORD: &str = "pw-Secret-7781";
    let Some(server) = Server::start_with(&["--requirepass", PASSWORD]) else {
        return;
    };
    let url = format!("redis://:{PASSWORD}@{}/0", server.addr);
    let limiter = RedisRateLimiter::builder(&url)
        .per_second(100)
        .build()
        .unwrap();
    assert_eq!(limiter.check("k").unwrap(), Admission::Redis);
    hides(PASSWORD, &limiter, None);
    let builder = RedisRateLimiter::builder(&url).per_second(1);
    hides(PASSWORD, &builder, None);
    let pool = RedisPool::builder(&url).build().unwrap();
    hides(PASSWORD, &pool, None);

    // No password, and a wrong one: the server refuses; the errors do not show it.
    for url in [
        format!("redis://{}/0", server.addr),
        format!("redis://:{PASSWORD}-wrong@{}/0", server.addr),
    ] {
        let limiter = RedisRateLimiter::builder(&url)
            .per_second(100)
            .build()
            .unwrap();
        let err = limiter.check("k").unwrap_err();
        assert!(matches!(err, RedisRateError::Backend(_)), "{err:?}");
        hides(PASSWORD, &err, Some(error_chain(&err)));
    }
    // A URL that does not parse: the ConfigError shows it redacted.
    let err = RedisPool::builder(format!(
        "redis://:{PASSWORD}@{}:notaport/0",
        server.ip_only()
    ))
    .build()
    .unwrap_err();
    assert_eq!(err.field(), "url");
    hides(PASSWORD, &err, Some(err.to_string()));
    assert!(err.value().contains("***"), "{err}");
}

trait IpOnly {
    fn ip_only(&self) -> String;
}

impl IpOnly for Server {
    fn ip_only(&self) -> String {
        self.addr.rsplit_once(':').unwrap().0.to_owned()
    }
}

#[test]
fn an_acl_user_and_a_database_come_from_the_url() {
    const PASSWORD: &str = "alice-Pass-2291";
    let password = format!(">{PASSWORD}");
    let acl = [
        "--user", "alice", "on", &password, "~*", "&*", "+@all", "--user", "default", "off",
    ];
    let Some(server) = Server::start_with(&acl) else {
        return;
    };
    let url = format!("redis://alice:{PASSWORD}@{}/3", server.addr);
    let limiter = RedisRateLimiter::builder(&url)
        .interval(Duration::from_secs(60))
        .key_prefix("acl:")
        .build()
        .unwrap();
    assert_eq!(limiter.check("k").unwrap(), Admission::Redis);
    hides(PASSWORD, &limiter, None);
    // The key is in database 3, written as alice.
    let mut raw = corral::redis::Client::open(url.as_str())
        .unwrap()
        .get_connection_with_timeout(LONG)
        .unwrap();
    let exists: bool = raw.exists("acl:k").unwrap();
    assert!(exists);
    let err = RedisRateLimiter::builder(format!("redis://alice:wrong@{}/3", server.addr))
        .per_second(1)
        .build()
        .unwrap()
        .check("k")
        .unwrap_err();
    assert!(matches!(err, RedisRateError::Backend(_)), "{err:?}");
    hides(PASSWORD, &err, Some(error_chain(&err)));
}

/// Runs `call` and asserts it returned within `bound`.
fn within<T>(bound: Duration, call: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = call();
    assert!(
        started.elapsed() <= bound,
        "took {:?}, bound {bound:?}",
        started.elapsed()
    );
    out
}

fn policy_limiter(server: &Server, policy: FailurePolicy) -> RedisRateLimiter {
    RedisRateLimiter::builder(server.url())
        .per_second(1000)
        .burst(100)
        .io_timeout(Duration::from_millis(300))
        .probe_interval(Duration::from_millis(100))
        .on_failure(policy)
        .build()
        .unwrap()
}

/// Polls until the limiter asks Redis again and Redis admits.
fn recovers(limiter: &RedisRateLimiter) {
    let deadline = Instant::now() + LONG;
    loop {
        match limiter.check("k") {
            Ok(Admission::Redis) => return,
            _ if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            other => panic!("did not recover: {other:?}"),
        }
    }
}

#[test]
fn a_stopped_server_gets_the_policys_outcome_within_the_bound_and_recovery_follows() {
    let Some(mut server) = Server::start() else {
        return;
    };
    let closed = policy_limiter(&server, FailurePolicy::FailClosed);
    let open = policy_limiter(&server, FailurePolicy::FailOpen);
    // One cell a minute: the local share (a quarter) refills nothing during the test.
    let local = RedisRateLimiter::builder(server.url())
        .per_minute(1)
        .burst(100)
        .io_timeout(Duration::from_millis(300))
        .probe_interval(Duration::from_millis(100))
        .on_failure(FailurePolicy::LocalShare { processes: 4 })
        .build()
        .unwrap();
    for limiter in [&closed, &open, &local] {
        assert_eq!(limiter.check("k").unwrap(), Admission::Redis);
    }
    server.stop();
    // Bound: io_timeout (300 ms) plus scheduling slack on a loaded machine.
    let bound = Duration::from_secs(2);
    for _ in 0..30 {
        let err = within(bound, || closed.check("k")).unwrap_err();
        assert!(matches!(err, RedisRateError::Backend(_)), "{err:?}");
        assert_eq!(
            within(bound, || open.check("k")).unwrap(),
            Admission::FailOpen
        );
        let _ = within(bound, || open.wait_timeout("k", Duration::from_millis(50))).unwrap();
    }
    // The local share is a quarter of the limit: a burst of 25, then nothing more.
    let shared = (0..30)
        .filter(|_| match within(bound, || local.check("k")) {
            Ok(admission) => {
                assert_eq!(admission, Admission::Fallback);
                true
            }
            Err(RedisRateError::FallbackNotUntil(_)) => false,
            Err(other) => panic!("{other:?}"),
        })
        .count();
    assert_eq!(shared, 25);
    for limiter in [&closed, &open, &local] {
        let stats = limiter.stats();
        assert!(stats.backend_errors >= 1, "{stats:?}");
        assert!(stats.fallbacks >= 30, "{stats:?}");
    }
    server.restart();
    for limiter in [&closed, &open, &local] {
        recovers(limiter);
    }
}

#[test]
fn a_paused_server_cannot_hold_a_caller_past_its_bound() {
    let Some(server) = Server::start() else {
        return;
    };
    let limiter = RedisRateLimiter::builder(server.url())
        .per_second(1000)
        .io_timeout(Duration::from_secs(5))
        .probe_interval(Duration::from_millis(50))
        .build()
        .unwrap();
    limiter.check("k").unwrap();
    server.signal("STOP");
    // The caller's deadline (200 ms) is far shorter than io_timeout (5 s): it bounds
    // the round trip.
    let err = within(Duration::from_secs(2), || {
        limiter.wait_timeout("k", Duration::from_millis(200))
    })
    .unwrap_err();
    assert!(matches!(err, RedisRateError::Timeout), "{err:?}");
    let token = CancelToken::with_timeout(Duration::from_millis(200));
    let err = within(Duration::from_secs(2), || {
        limiter.wait_cancellable("k", &token)
    })
    .unwrap_err();
    assert!(
        matches!(
            err,
            RedisRateError::Cancelled(CancelReason::DeadlineExceeded) | RedisRateError::Backend(_)
        ),
        "{err:?}"
    );
    server.signal("CONT");
    recovers(&limiter);
}

#[test]
fn the_wait_for_a_connection_is_bounded_by_the_callers_deadline_and_token() {
    let Some(server) = Server::start() else {
        return;
    };
    let _check = LeakCheck::new();
    // One connection, held by a call stuck on a paused server for up to 3 s.
    let limiter = RedisRateLimiter::builder(server.url())
        .per_second(1000)
        .max_connections(1)
        .io_timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    limiter.check("k").unwrap();
    server.signal("STOP");
    thread::scope(|s| {
        let stuck = s.spawn(|| limiter.check("k"));
        // Until the stuck call has taken the only connection (the pool shows none idle).
        let deadline = Instant::now() + LONG;
        while format!("{limiter:?}").contains("idle: 1") {
            assert!(Instant::now() < deadline, "the call did not start");
            thread::yield_now();
        }
        let err = within(Duration::from_secs(2), || {
            limiter.wait_timeout("k", Duration::from_millis(200))
        })
        .unwrap_err();
        assert!(matches!(err, RedisRateError::Timeout), "{err:?}");
        let token = CancelToken::with_timeout(Duration::from_millis(200));
        let err = within(Duration::from_secs(2), || {
            limiter.wait_cancellable("k", &token)
        })
        .unwrap_err();
        assert!(
            matches!(
                err,
                RedisRateError::Cancelled(CancelReason::DeadlineExceeded)
            ),
            "{err:?}"
        );
        server.signal("CONT");
        let _ = stuck.join().unwrap();
    });
}

#[test]
fn threads_of_one_process_check_on_several_connections_at_once() {
    let Some(server) = Server::start() else {
        return;
    };
    let _check = LeakCheck::new();
    let limiter = RedisRateLimiter::builder(server.url())
        .interval(Duration::from_micros(1))
        .burst(1_000_000)
        .max_connections(4)
        .build()
        .unwrap();
    let before = connections_received(&server);
    let barrier = Barrier::new(4);
    thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                barrier.wait();
                for _ in 0..300 {
                    limiter.check("busy").unwrap();
                }
            });
        }
    });
    // The pool opens a connection only when every open one is in use: more than one
    // opened means calls were in flight at once, not queued behind one connection.
    let opened = connections_received(&server) - before - 1; // minus the probe's own
    assert!((2..=4).contains(&opened), "{opened} connections");
    assert_eq!(limiter.stats().round_trips, 1200);
}

fn connections_received(server: &Server) -> u64 {
    let info: String = corral::redis::cmd("INFO")
        .arg("stats")
        .query(&mut server.raw())
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn the_limiter_is_a_layer_of_the_resilience_stack() {
    let Some(mut server) = Server::start() else {
        return;
    };
    let limiter = Arc::new(
        RedisRateLimiter::builder(server.url())
            .interval(Duration::from_secs(60))
            .burst(2)
            .io_timeout(Duration::from_millis(300))
            .build()
            .unwrap(),
    );
    let stack = Resilience::builder()
        .limit(Arc::new(limiter.limit_for("stack")))
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let calls = AtomicU32::new(0);
    let call = || {
        stack.call(|_| {
            calls.fetch_add(1, Ordering::Relaxed);
            Ok::<_, ()>(())
        })
    };
    assert_eq!(call(), Ok(()));
    assert_eq!(call(), Ok(()));
    // The burst is used up and the next cell is a minute away: past the deadline.
    assert_eq!(
        call(),
        Err(ResilienceError::RateLimited { retry_after: None })
    );
    server.stop();
    assert_eq!(call(), Err(ResilienceError::LimitUnavailable));
    assert_eq!(calls.load(Ordering::Relaxed), 2);
}

#[test]
fn bad_settings_name_the_field() {
    let field = |b: corral::fleet::RedisRateLimiterBuilder| b.build().unwrap_err().field();
    let url = "redis://127.0.0.1:6379";
    assert_eq!(field(RedisRateLimiter::builder(url)), "rate");
    assert_eq!(field(RedisRateLimiter::builder(url).per_second(0)), "rate");
    assert_eq!(
        field(RedisRateLimiter::builder(url).per_second(1).burst(0)),
        "burst"
    );
    assert_eq!(
        field(
            RedisRateLimiter::builder(url)
                .per_second(1)
                .io_timeout(Duration::ZERO)
        ),
        "io_timeout"
    );
    assert_eq!(
        field(
            RedisRateLimiter::builder(url)
                .per_second(1)
                .max_connections(0)
        ),
        "max_connections"
    );
    assert_eq!(
        field(
            RedisRateLimiter::builder(url)
                .per_second(1)
                .on_failure(FailurePolicy::LocalShare { processes: 0 })
        ),
        "policy"
    );
    assert_eq!(
        field(
            RedisRateLimiter::builder(url)
                .per_second(1)
                .probe_interval(Duration::ZERO)
        ),
        "probe_interval"
    );
    assert_eq!(
        field(RedisRateLimiter::builder("not a url at all").per_second(1)),
        "url"
    );
    #[cfg(not(feature = "redis-tls"))]
    assert_eq!(
        field(RedisRateLimiter::builder("rediss://host:6380").per_second(1)),
        "url"
    );
}
