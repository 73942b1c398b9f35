//! The Redis lease semaphore (feature `redis`) against a real `redis-server`: across
//! processes (this test binary started again), after a holder is killed, and as a
//! layer of the resilience stack.

#![cfg(feature = "redis")]

mod redis_server;

use std::io::{BufRead, BufReader};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use corral::redis::Commands;
use corral::{
    cancel::CancelReason, fleet::RedisAcquireError, resilience::ResilienceError, CancelToken,
    RedisSemaphore, Resilience,
};
use redis_server::{env, results, spawn_child, Server, CHILD, LONG};

fn semaphore(url: &str, capacity: u32, ttl: Duration) -> RedisSemaphore {
    RedisSemaphore::builder(url, "jobs")
        .capacity(capacity)
        .lease_ttl(ttl)
        .poll_interval(Duration::from_millis(5))
        .build()
        .unwrap()
}

/// Not a test of its own: the body of the child processes the tests below start.
#[test]
fn child_process() {
    let Ok(role) = std::env::var(CHILD) else {
        return;
    };
    let url = env("URL");
    let sem = semaphore(
        &url,
        env("CAPACITY").parse().unwrap(),
        Duration::from_secs(env("TTL_S").parse().unwrap()),
    );
    match role.as_str() {
        "hold" => {
            let permit = sem.acquire_timeout(LONG).unwrap();
            println!("RESULT {}", permit.fencing_token());
            // Holds until killed.
            loop {
                thread::park();
            }
        }
        "work" => {
            // Each holder records its entry and exit in Redis; the counter's value
            // on entry is the number of holders at that moment.
            let mut raw = corral::redis::Client::open(url.as_str())
                .unwrap()
                .get_connection_with_timeout(LONG)
                .unwrap();
            let (mut most, mut tokens) = (0i64, Vec::new());
            for _ in 0..15 {
                let permit = sem.acquire_timeout(LONG).unwrap();
                let holders: i64 = raw.incr("holders", 1).unwrap();
                most = most.max(holders);
                tokens.push(permit.fencing_token().to_string());
                thread::sleep(Duration::from_millis(2)); // the work, while holding
                let _: i64 = raw.decr("holders", 1).unwrap();
                permit.release().unwrap();
            }
            println!("RESULT {most} {}", tokens.join(","));
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn processes_never_hold_more_than_the_capacity_and_tokens_increase() {
    let Some(server) = Server::start() else {
        return;
    };
    let settings = [
        ("URL", server.url()),
        ("CAPACITY", "2".to_owned()),
        ("TTL_S", "30".to_owned()),
    ];
    let mut children: Vec<_> = (0..4)
        .map(|_| spawn_child("child_process", "work", &settings))
        .collect();
    let mut all = Vec::new();
    for child in &mut children {
        let lines = results(child);
        let (most, tokens) = lines[0].split_once(' ').unwrap();
        let most: i64 = most.parse().unwrap();
        assert!((1..=2).contains(&most), "{most} holders at once");
        let tokens: Vec<u64> = tokens.split(',').map(|t| t.parse().unwrap()).collect();
        assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
        all.extend(tokens);
    }
    // Every grant got its own token, from one counter: exactly 1..=60.
    all.sort_unstable();
    assert_eq!(all, (1..=60).collect::<Vec<u64>>());
}

#[test]
fn a_killed_holder_gives_its_permit_back_after_the_ttl() {
    let Some(server) = Server::start() else {
        return;
    };
    let settings = [
        ("URL", server.url()),
        ("CAPACITY", "1".to_owned()),
        ("TTL_S", "1".to_owned()),
    ];
    let mut holder = spawn_child("child_process", "hold", &settings);
    let mut out = BufReader::new(holder.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("RESULT ") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "the holder exited");
    }
    let held_token: u64 = line
        .split_once("RESULT ")
        .unwrap()
        .1
        .trim()
        .parse()
        .unwrap();
    let sem = semaphore(&server.url(), 1, Duration::from_secs(1));
    assert!(matches!(sem.try_acquire(), Err(RedisAcquireError::Full(_))));
    holder.kill().unwrap(); // SIGKILL: no release
    holder.wait().unwrap();
    let killed = Instant::now();
    let permit = sem.acquire_timeout(LONG).unwrap();
    // The lease lasted 1 s from its grant, which came before the kill.
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "{:?}",
        killed.elapsed()
    );
    assert!(permit.fencing_token() > held_token);
    assert!(sem.stats().reclaimed >= 1, "{:?}", sem.stats());
}

#[test]
fn acquire_forms_renew_and_release() {
    let Some(server) = Server::start() else {
        return;
    };
    // Two handles on one semaphore: leases of 30 s (never expire during the test) and
    // of 100 ms (expire at once), so nothing below depends on how fast this runs.
    let sem = semaphore(&server.url(), 2, LONG);
    let brief = semaphore(&server.url(), 2, Duration::from_millis(100));
    let mut a = sem.acquire().unwrap();
    let b = brief.try_acquire().unwrap();
    assert!(b.fencing_token() > a.fencing_token());
    assert!(matches!(sem.try_acquire(), Err(RedisAcquireError::Full(_))));
    assert!(matches!(
        sem.acquire_timeout(Duration::from_millis(20)),
        Err(RedisAcquireError::Timeout)
    ));
    assert!(matches!(
        sem.acquire_deadline(Instant::now() + Duration::from_millis(20)),
        Err(RedisAcquireError::Timeout)
    ));
    let token = CancelToken::with_timeout(Duration::from_millis(20));
    assert!(matches!(
        sem.acquire_cancellable(&token),
        Err(RedisAcquireError::Cancelled(CancelReason::DeadlineExceeded))
    ));
    // `b`'s lease expires on its own; the next acquire reclaims it.
    let mut c = sem.acquire_timeout(LONG).unwrap();
    assert!(matches!(b.release(), Err(RedisAcquireError::LeaseLost)));
    a.renew().unwrap();
    c.renew().unwrap();
    drop(a); // released by Drop
    let d = sem.try_acquire().unwrap();
    assert!(d.fencing_token() > c.fencing_token());
    let stats = sem.stats();
    assert_eq!(stats.acquired, 3);
    assert!(stats.reclaimed >= 1, "{stats:?}");
    assert!(brief.stats().leases_lost >= 1, "{:?}", brief.stats());
}

#[test]
fn the_semaphore_is_a_bulkhead_of_the_resilience_stack() {
    let Some(mut server) = Server::start() else {
        return;
    };
    let sem = Arc::new(
        RedisSemaphore::builder(server.url(), "stack")
            .capacity(1)
            .io_timeout(Duration::from_millis(300))
            .build()
            .unwrap(),
    );
    let stack = Resilience::builder()
        .limit(Arc::clone(&sem))
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    // Inside the call the permit is held; after it, released.
    let inside =
        stack.call(|_| Ok::<_, ()>(matches!(sem.try_acquire(), Err(RedisAcquireError::Full(_)))));
    assert_eq!(inside, Ok(true));
    let held = sem.try_acquire().unwrap();
    assert_eq!(
        stack.call(|_| Ok::<_, ()>(())),
        Err(ResilienceError::DeadlineExceeded)
    );
    drop(held);
    server.stop();
    assert_eq!(
        stack.call(|_| Ok::<_, ()>(())),
        Err(ResilienceError::LimitUnavailable)
    );
}

#[test]
fn bad_settings_name_the_field() {
    let url = "redis://127.0.0.1:6379";
    let field = |b: corral::fleet::RedisSemaphoreBuilder| b.build().unwrap_err().field();
    assert_eq!(field(RedisSemaphore::builder(url, "")), "name");
    assert_eq!(field(RedisSemaphore::builder(url, "a{b}")), "name");
    assert_eq!(
        field(RedisSemaphore::builder(url, "x").capacity(0)),
        "capacity"
    );
    assert_eq!(
        field(RedisSemaphore::builder(url, "x").lease_ttl(Duration::ZERO)),
        "lease_ttl"
    );
    assert_eq!(
        field(RedisSemaphore::builder(url, "x").poll_interval(Duration::ZERO)),
        "poll_interval"
    );
    assert_eq!(field(RedisSemaphore::builder("::", "x")), "url");
}
