//! Resilience stack: six callers share one stack (bulkhead of 3, 2,000 calls/s, a
//! breaker, a 50 ms deadline, 2 retries) in front of an upstream that is flaky, then
//! down for a while, then slow. Then a callee that ignores its token, called on a
//! pool the stack owns, so its callers give up on time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral::{resilience::ResilienceError, CircuitBreaker, RateLimiter, Resilience, Semaphore};

/// The upstream: 10% transient errors; down from 80 to 160 ms; slow (and cooperative
/// with its token) from 200 to 240 ms.
fn upstream(started: Instant, roll: u64, token: &corral::CancelToken) -> Result<u64, &'static str> {
    let at = started.elapsed().as_millis();
    if (80..160).contains(&at) {
        return Err("connection refused");
    }
    if (200..240).contains(&at) && roll % 4 == 0 {
        // A hanging call that honours its token: the deadline ends it.
        return match token.wait_timeout(Duration::from_secs(5)) {
            Some(_) => Err("gave up at the deadline"),
            None => Ok(roll),
        };
    }
    if roll % 10 == 0 {
        Err("503 service unavailable")
    } else {
        Ok(roll)
    }
}

pub fn run() {
    println!("\n[resilience] 6 callers, one stack: bulkhead 3, 2000/s, breaker, 50 ms deadline, 2 retries");
    let started = Instant::now();
    let bulkhead = Arc::new(Semaphore::new(3));
    let breaker = Arc::new(
        CircuitBreaker::builder()
            .consecutive_failures(8)
            .open_for(Duration::from_millis(20))
            .build()
            .expect("valid breaker"),
    );
    let stack = Resilience::builder()
        .bulkhead(bulkhead.clone())
        .rate_limiter(Arc::new(
            RateLimiter::per_second(2000)
                .burst(20)
                .build()
                .expect("valid limiter"),
        ))
        .breaker(breaker.clone())
        .timeout(Duration::from_millis(50))
        .retries(2)
        .backoff(Duration::from_micros(200), Duration::from_millis(2))
        .build()
        .expect("valid stack");

    let (ok, failed, refused) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let (in_flight, high) = (AtomicU64::new(0), AtomicU64::new(0));
    corral::scope(|s| {
        for w in 0..6u64 {
            let (stack, ok, failed, refused) = (&stack, &ok, &failed, &refused);
            let (in_flight, high) = (&in_flight, &high);
            s.spawn_named(&format!("caller-{w}"), move || {
                let mut roll = 0x2545_F491_4F6C_DD1Du64 ^ (w + 1);
                while started.elapsed() < Duration::from_millis(300) {
                    roll ^= roll << 13;
                    roll ^= roll >> 7;
                    roll ^= roll << 17;
                    let call = |token: &corral::CancelToken| {
                        high.fetch_max(
                            in_flight.fetch_add(1, Ordering::SeqCst) + 1,
                            Ordering::SeqCst,
                        );
                        let outcome = upstream(started, roll, token);
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        outcome
                    };
                    match stack.call(call) {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(ResilienceError::Inner { .. }) => {
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(_) => refused.fetch_add(1, Ordering::Relaxed),
                    };
                }
            });
        }
    });
    let stats = stack.stats();
    println!(
        "  {} calls: {} ok, {} failed after retries, {} refused (breaker {}, rate limit {}, bulkhead or deadline {})",
        stats.calls,
        stats.succeeded,
        stats.failed,
        stats.refused,
        stats.breaker_open,
        stats.rate_limited,
        stats.bulkhead_refused + stats.deadline_exceeded
    );
    println!(
        "  {} retries; at most {} calls in flight (bulkhead 3); breaker opened {} time(s)",
        stats.retries,
        high.load(Ordering::SeqCst),
        breaker.stats().trips
    );
    assert!(high.into_inner() <= 3, "the bulkhead held");
    assert_eq!(stats.calls, stats.succeeded + stats.failed + stats.refused);
    assert_eq!(
        (ok.into_inner(), failed.into_inner(), refused.into_inner()),
        (stats.succeeded, stats.failed, stats.refused)
    );
    give_up_on_a_hanging_call();
}

/// A callee that hangs and ignores its token: `call_isolated` runs it on the stack's
/// two workers, and each caller is answered at the 20 ms deadline or refused at once.
fn give_up_on_a_hanging_call() {
    let stack = Resilience::builder()
        .name("hanging")
        .isolate(2)
        .timeout(Duration::from_millis(20))
        .build()
        .expect("valid stack");
    let (release, hang) = crossbeam_channel::bounded::<()>(0);
    let started = Instant::now();
    for _ in 0..10 {
        let hang = hang.clone();
        let outcome = stack.call_isolated(move |_token| hang.recv().map_err(|_| "released"));
        assert!(matches!(
            outcome,
            Err(ResilienceError::DeadlineExceeded | ResilienceError::BulkheadFull)
        ));
    }
    let stats = stack.stats();
    println!(
        "  {stack}: 10 calls answered in {:?}: {} given up on at the deadline, {} refused at once",
        started.elapsed(),
        stats.deadline_exceeded,
        stats.bulkhead_refused
    );
    drop(release); // the abandoned calls return; dropping the stack joins its workers
    drop(stack);
}
