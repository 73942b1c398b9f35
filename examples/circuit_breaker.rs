//! Circuit breaker: a slow third-party call made safe with a deadline on every call, a
//! breaker in front of it, and a fallback. The breaker opens after three failures in a
//! row, or when half the calls of the last second were slower than 30 ms; while it is
//! open the caller answers from its cache at once instead of queueing behind a hung
//! upstream, and trial calls find out when the upstream is back.
//!
//! The simulated price service is healthy, then sick from 300 to 900 ms (it errors,
//! and some requests hang far past any sensible wait), then healthy again.
//!
//! Run it with `cargo run --release --example circuit_breaker`.

use std::time::{Duration, Instant};

use corral::{
    breaker::{BreakerError, Window},
    channel::{bounded, Receiver, RecvTimeoutError, Sender},
    leak::LeakCheck,
    CircuitBreaker,
};

const LAST_KNOWN_PRICE: u32 = 100; // the fallback

fn main() {
    let check = LeakCheck::new(); // fails below if the upstream's thread outlives main
    let started = Instant::now();
    let ms = move || started.elapsed().as_millis();
    let breaker = CircuitBreaker::builder()
        .consecutive_failures(3) // open after 3 failures in a row,
        .slow_call(Duration::from_millis(30), 0.5) // or when half the calls take > 30 ms
        .window(Window::Time(Duration::from_secs(1))) // over the last second,
        .minimum_calls(10) // once it has seen 10 calls;
        .open_for(Duration::from_millis(100)) // refuse calls for 100 ms,
        .backoff(2.0, Duration::from_millis(400)) // twice as long each time it reopens,
        .half_open_calls(2) // then let 2 trial calls decide
        .on_state_change(move |from, to| println!("{:>5} ms  breaker {from} -> {to}", ms()))
        .build()
        .expect("valid breaker config");

    let mut tally = Tally::new(started); // helper below: counts what the caller saw
    with_price_service(started, |upstream| {
        for item in 0..180 {
            let asked = Instant::now();
            let answer = breaker.call(|| fetch(upstream, item, Duration::from_millis(40)));
            tally.record(&answer, asked.elapsed());
            let price = match answer {
                Ok(fresh) => fresh,
                // It ran and failed (an error, or no answer in 40 ms): the breaker counted it.
                Err(BreakerError::Inner(_)) => LAST_KNOWN_PRICE,
                // Open (or its trial calls taken): refused at once, the upstream not called.
                Err(_refused) => LAST_KNOWN_PRICE,
            };
            assert!(price >= LAST_KNOWN_PRICE);
            std::thread::sleep(Duration::from_millis(7)); // the next request comes later
        }
    });

    tally.print(&breaker);
    assert_eq!(tally.refused, breaker.stats().rejected);
    check.verify().expect("the upstream's thread was joined");
}

// --- helpers below: the simulated upstream, a call with a deadline, printing ---

/// A request carries its deadline, so the upstream can skip work nobody waits for.
struct Request {
    item: u32,
    deadline: Instant,
    reply: Sender<Result<u32, String>>,
}

/// Runs the simulated price service on a thread of its own while `calls` runs, then
/// stops it and joins its thread.
fn with_price_service(started: Instant, calls: impl FnOnce(&Sender<Request>)) {
    corral::scope(|s| {
        let (upstream, requests) = bounded(16);
        s.spawn_named("upstream", move || serve(requests, started));
        calls(&upstream);
        drop(upstream); // the service's loop ends; the scope joins its thread
    });
}

/// The third party: answers in order, one at a time, and while sick it errors or hangs.
fn serve(requests: Receiver<Request>, started: Instant) {
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    for request in requests {
        if Instant::now() >= request.deadline {
            continue; // the caller has given up already
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let roll = rng % 100;
        let sick = (300..900).contains(&started.elapsed().as_millis());
        let answer = if sick && roll < 40 {
            std::thread::sleep(Duration::from_millis(150)); // hangs
            Ok(LAST_KNOWN_PRICE + request.item)
        } else if sick && roll < 70 {
            Err(format!("503 for item {}", request.item))
        } else {
            std::thread::sleep(Duration::from_millis(2));
            Ok(LAST_KNOWN_PRICE + request.item)
        };
        let _ = request.reply.send(answer); // the caller may have timed out
    }
}

#[derive(Debug)]
enum FetchError {
    Timeout,
    Upstream(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Timeout => f.write_str("no answer before the deadline"),
            FetchError::Upstream(message) => write!(f, "upstream error: {message}"),
        }
    }
}

/// One call with a deadline: the upstream cannot be interrupted, but we stop waiting.
fn fetch(upstream: &Sender<Request>, item: u32, wait: Duration) -> Result<u32, FetchError> {
    let deadline = Instant::now() + wait;
    let (reply, answer) = bounded(1);
    let request = Request {
        item,
        deadline,
        reply,
    };
    upstream
        .send_deadline(request, deadline)
        .map_err(|_| FetchError::Timeout)?;
    match answer.recv_deadline(deadline) {
        Ok(result) => result.map_err(FetchError::Upstream),
        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => Err(FetchError::Timeout),
    }
}

/// What the caller saw.
struct Tally {
    started: Instant,
    fresh: u64,
    failed: u64,
    refused: u64,
    slowest: Duration,
}

impl Tally {
    fn new(started: Instant) -> Self {
        Tally {
            started,
            fresh: 0,
            failed: 0,
            refused: 0,
            slowest: Duration::ZERO,
        }
    }

    fn record(&mut self, answer: &Result<u32, BreakerError<FetchError>>, took: Duration) {
        self.slowest = self.slowest.max(took);
        match answer {
            Ok(_) => self.fresh += 1,
            Err(BreakerError::Inner(error)) => {
                if self.failed == 0 {
                    let ms = self.started.elapsed().as_millis();
                    println!("{ms:>5} ms  first failure: {error}");
                }
                self.failed += 1;
            }
            Err(_refused) => self.refused += 1,
        }
    }

    fn print(&self, breaker: &CircuitBreaker) {
        let stats = breaker.stats();
        println!(
            "\n{} fresh answers, {} fallbacks after a failed call, {} answered from cache while open",
            self.fresh, self.failed, self.refused
        );
        println!(
            "breaker: {} trips, {} refused, {} slow calls, final state {}; slowest answer {:.0?}",
            stats.trips, stats.rejected, stats.slow_calls, stats.state, self.slowest
        );
    }
}
