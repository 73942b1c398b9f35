//! Resilient call: every defence around one call to a dependency, composed. At most 4
//! calls in flight (bulkhead), at most 20,000 calls a second (rate limiter), stop
//! calling while it is failing (circuit breaker), never wait more than 30 ms in all
//! (deadline), and retry transient errors twice with backoff. A "not found" is an
//! answer, not a failure: the breaker's own predicate keeps it out of its count, and
//! the stack's retry predicate does not retry it.
//!
//! The simulated inventory service answers in place, honours the token it is given
//! (which is how the deadline reaches work already started), and has an outage 100 to
//! 150 ms after the start. Eight threads make 400 lookups each; the stack's counters
//! and the callers' own tallies must agree.
//!
//! Run it with `cargo run --release --example resilient_call`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral::{
    leak::LeakCheck, resilience::ResilienceError, CancelToken, CircuitBreaker, RateLimiter,
    Resilience, Semaphore,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let check = LeakCheck::new(); // fails below if a caller's thread outlives main
    let stack = Resilience::builder()
        .bulkhead(Arc::new(Semaphore::new(4))) // at most 4 calls in flight
        .rate_limiter(Arc::new(
            RateLimiter::per_second(20_000).burst(200).build()?, // 20,000 calls a second
        ))
        .breaker(Arc::new(
            CircuitBreaker::builder()
                .consecutive_failures(10) // stop calling after 10 failures in a row
                .is_failure(|e: &LookupError| *e != LookupError::NotFound) // an answer
                .open_for(Duration::from_millis(10))
                .build()?,
        ))
        .timeout(Duration::from_millis(30)) // for the whole call, retries included
        .retries(2) // retry failures twice, waiting 0.5 ms, then longer (up to 4 ms)
        .backoff(Duration::from_micros(500), Duration::from_millis(4))
        .name("inventory")
        .build()?;
    println!("{stack}"); // the layers, in the order a call passes them

    let inventory = Inventory::new(); // helper below
    let tally = Tally::default();
    run_callers(8, 400, |sku| tally.add(look_up(&stack, &inventory, sku))); // helper below
    tally.print_and_check(&stack);
    check.verify().expect("every caller's thread was joined");
    Ok(())
}

/// One lookup through every layer of the stack.
fn look_up(stack: &Resilience, inventory: &Inventory, sku: u64) -> Lookup {
    let outcome = stack.call_with(
        &CancelToken::new(), // no deadline of the caller's own: the stack's 30 ms applies
        |error| *error != LookupError::NotFound, // which errors are worth a retry
        |token| inventory.lookup(sku, token), // the token ends when the deadline passes
    );
    match outcome {
        Ok(count) => Lookup::InStock(count),
        Err(ResilienceError::Inner {
            error: LookupError::NotFound,
            ..
        }) => Lookup::NotFound,
        Err(ResilienceError::Inner { .. }) => Lookup::Failed, // after the retries
        // Breaker open, no rate-limit slot or bulkhead permit before the deadline...:
        // answer from a cache, "unknown"...
        Err(_refused) => Lookup::Refused,
    }
}

// --- helpers below: the simulated inventory and callers, tallies and printing ---

/// What a caller learns about one SKU.
enum Lookup {
    InStock(u32),
    NotFound,
    Failed,
    Refused,
}

#[derive(Debug, PartialEq)]
enum LookupError {
    NotFound,
    Unavailable,
    TimedOut,
}

/// The inventory service: 5% transient errors (a retry usually succeeds), 2% "not
/// found", and an outage between 100 and 150 ms after start, during which some calls
/// hang until their token ends.
struct Inventory {
    started: Instant,
    calls: AtomicU64,
}

impl Inventory {
    fn new() -> Self {
        Inventory {
            started: Instant::now(),
            calls: AtomicU64::new(0),
        }
    }

    fn lookup(&self, sku: u64, token: &CancelToken) -> Result<u32, LookupError> {
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        if (100..150).contains(&self.started.elapsed().as_millis()) {
            if sku % 3 == 0 {
                token.wait(); // hangs; the stack's deadline ends the wait
                return Err(LookupError::TimedOut);
            }
            return Err(LookupError::Unavailable);
        }
        if call * 19 % 100 < 5 {
            return Err(LookupError::Unavailable); // transient: the next call differs
        }
        match sku % 50 {
            0 => Err(LookupError::NotFound),
            n => Ok(n as u32),
        }
    }
}

/// Runs `callers` threads that each look up `lookups` SKUs, and joins them.
fn run_callers(callers: u64, lookups: u64, lookup: impl Fn(u64) + Sync) {
    corral::scope(|s| {
        for caller in 0..callers {
            let lookup = &lookup;
            s.spawn_named(&format!("shop-{caller}"), move || {
                for i in 0..lookups {
                    lookup(caller * 7919 + i * 31);
                }
            });
        }
    });
}

/// The callers' own count of each kind of answer.
#[derive(Default)]
struct Tally {
    in_stock: AtomicU64,
    units: AtomicU64,
    not_found: AtomicU64,
    failed: AtomicU64,
    refused: AtomicU64,
}

impl Tally {
    fn add(&self, lookup: Lookup) {
        let counter = match lookup {
            Lookup::InStock(units) => {
                self.units.fetch_add(u64::from(units), Ordering::Relaxed);
                &self.in_stock
            }
            Lookup::NotFound => &self.not_found,
            Lookup::Failed => &self.failed,
            Lookup::Refused => &self.refused,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Prints the tallies and checks them against the stack's own counters.
    fn print_and_check(&self, stack: &Resilience) {
        let [in_stock, not_found, failed, refused] =
            [&self.in_stock, &self.not_found, &self.failed, &self.refused]
                .map(|counter| counter.load(Ordering::Relaxed));
        let stats = stack.stats();
        println!(
            "{} lookups through bulkhead 4, 20,000/s, breaker, 30 ms, 2 retries",
            stats.calls
        );
        println!(
            "  answered {} (in stock {in_stock}: {} units, not found {not_found}), failed after retries {failed}, refused {refused}; {} retries",
            in_stock + not_found,
            self.units.load(Ordering::Relaxed),
            stats.retries
        );
        println!(
            "  refused by layer: bulkhead {}, rate limit {}, breaker {}, deadline {}",
            stats.bulkhead_refused, stats.rate_limited, stats.breaker_open, stats.deadline_exceeded
        );
        assert_eq!(stats.calls, 3200);
        assert_eq!(stats.calls, stats.succeeded + stats.failed + stats.refused);
        assert_eq!(stats.succeeded, in_stock);
        assert_eq!(stats.refused, refused);
        assert_eq!(stats.failed, not_found + failed); // the stack counts a "not found" as failed
    }
}
