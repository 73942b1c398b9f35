//! Every defence around one call to a dependency, composed: at most 4 calls in flight
//! (bulkhead), at most 20,000 calls a second (rate limiter), stop calling while it is
//! failing (circuit breaker), never wait more than 30 ms in all (deadline), and retry
//! transient errors twice with backoff. A "not found" is an answer, not a failure: it
//! is neither retried nor held against the breaker.
//!
//! The dependency (an inventory lookup) answers in place here; it honours the token
//! it is given, which is how the deadline reaches work already started. Eight
//! threads make 400 lookups each; the stack's counters and the callers' own tallies
//! must agree.
//!
//! Run: `cargo run --release --example resilient_call`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral::{
    resilience::ResilienceError, CancelToken, CircuitBreaker, RateLimiter, Resilience, Semaphore,
};

#[derive(Debug, PartialEq)]
enum LookupError {
    NotFound,
    Unavailable,
    TimedOut,
}

/// The inventory service: 5% transient errors (a retry usually succeeds), 2% "not
/// found", and an outage between 100 and 150 ms after start, during which some calls
/// hang until their token ends.
fn lookup(
    sku: u64,
    attempt: u64,
    token: &CancelToken,
    started: Instant,
) -> Result<u32, LookupError> {
    let at = started.elapsed().as_millis();
    if (100..150).contains(&at) {
        if sku % 3 == 0 {
            token.wait(); // hangs; the stack's deadline ends the wait
            return Err(LookupError::TimedOut);
        }
        return Err(LookupError::Unavailable);
    }
    if (sku * 31 + attempt * 17) % 100 < 5 {
        return Err(LookupError::Unavailable);
    }
    match sku % 50 {
        0 => Err(LookupError::NotFound),
        n => Ok(n as u32),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let stack = Resilience::builder()
        .bulkhead(Arc::new(Semaphore::new(4)))
        .rate_limiter(Arc::new(
            RateLimiter::per_second(20_000).burst(200).build()?,
        ))
        .breaker(Arc::new(
            CircuitBreaker::builder()
                .consecutive_failures(10)
                .open_for(Duration::from_millis(10))
                .build()?,
        ))
        .timeout(Duration::from_millis(30))
        .retries(2)
        .backoff(Duration::from_micros(500), Duration::from_millis(4))
        .build()?;

    let started = Instant::now();
    let [in_stock, not_found, failed, refused] = std::array::from_fn(|_| AtomicU64::new(0));
    corral::scope(|s| {
        for caller in 0..8u64 {
            let (stack, in_stock, not_found, failed, refused) =
                (&stack, &in_stock, &not_found, &failed, &refused);
            s.spawn_named(&format!("shop-{caller}"), move || {
                for i in 0..400u64 {
                    let sku = caller * 7919 + i * 31;
                    let mut attempt = 0;
                    let outcome = stack.call_with(
                        &CancelToken::new(),
                        |e| *e != LookupError::NotFound,
                        |token| {
                            attempt += 1;
                            lookup(sku, attempt, token, started)
                        },
                    );
                    let tally = match outcome {
                        Ok(_) => in_stock,
                        Err(ResilienceError::Failed {
                            error: LookupError::NotFound,
                            ..
                        }) => not_found,
                        Err(ResilienceError::Failed { .. }) => failed,
                        // Refused before any attempt: answer from a cache, show "unknown"...
                        Err(_) => refused,
                    };
                    tally.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });

    let stats = stack.stats();
    println!(
        "3200 lookups in {:.0?} through bulkhead 4, 20,000/s, breaker, 30 ms, 2 retries",
        started.elapsed()
    );
    println!(
        "  answered {} (in stock {}, not found {}), failed after retries {}, refused {}; {} retries",
        stats.succeeded + not_found.load(Ordering::Relaxed),
        in_stock.load(Ordering::Relaxed),
        not_found.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed) ,
        stats.refused,
        stats.retries
    );
    assert_eq!(stats.calls, 3200);
    assert_eq!(stats.calls, stats.succeeded + stats.failed + stats.refused);
    assert_eq!(stats.succeeded, in_stock.load(Ordering::Relaxed));
    assert_eq!(stats.refused, refused.load(Ordering::Relaxed));
    assert_eq!(
        stats.failed,
        not_found.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed)
    );
    Ok(())
}
