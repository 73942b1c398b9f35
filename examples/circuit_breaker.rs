//! A slow third-party call without a timeout, made safe: a deadline on every call, a
//! circuit breaker in front of it, and a fallback.
//!
//! The upstream (a price service on its own thread) is healthy, then sick for a while
//! (it errors, and some requests hang far past any sensible wait), then healthy again.
//! Each call waits at most 40 ms for its answer. The breaker opens after three failures
//! in a row, or when half the calls in the last second were slower than 30 ms; while it
//! is open the caller answers from its cache at once instead of queueing behind a hung
//! upstream, and trial calls find out when the upstream is back.
//!
//! Run: `cargo run --release --example circuit_breaker`

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use corral::{
    breaker::{BreakerError, Window},
    CircuitBreaker,
};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};

/// A request carries its deadline, so the upstream can skip work nobody waits for.
struct Request {
    item: u32,
    deadline: Instant,
    reply: Sender<Result<u32, String>>,
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

/// The third party: answers in order, one at a time, and sometimes hangs.
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
            Ok(100 + request.item)
        } else if sick && roll < 70 {
            Err(format!("503 for item {}", request.item))
        } else {
            std::thread::sleep(Duration::from_millis(2));
            Ok(100 + request.item)
        };
        let _ = request.reply.send(answer); // the caller may have timed out
    }
}

/// One call with a deadline: the upstream cannot be interrupted, but we stop waiting.
fn fetch(upstream: &Sender<Request>, item: u32, wait: Duration) -> Result<u32, FetchError> {
    let deadline = Instant::now() + wait;
    let (reply, answer) = bounded(1);
    upstream
        .send_deadline(
            Request {
                item,
                deadline,
                reply,
            },
            deadline,
        )
        .map_err(|_| FetchError::Timeout)?;
    match answer.recv_deadline(deadline) {
        Ok(result) => result.map_err(FetchError::Upstream),
        Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
            Err(FetchError::Timeout)
        }
    }
}

fn main() {
    let started = Instant::now();
    let ms = move || started.elapsed().as_millis();
    let breaker = CircuitBreaker::builder()
        .consecutive_failures(3)
        .slow_call(Duration::from_millis(30), 0.5)
        .window(Window::Time(Duration::from_secs(1)))
        .minimum_calls(10)
        .open_for(Duration::from_millis(100))
        .backoff(2.0, Duration::from_millis(400))
        .half_open_calls(2)
        .on_state_change(move |from, to| println!("{:>5} ms  breaker {from} -> {to}", ms()))
        .build()
        .expect("valid breaker config");

    let (fresh, cached, failed_fallback, refused) = (
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
    );
    let mut slowest = Duration::ZERO;
    corral::scope(|s| {
        let (upstream, requests) = bounded::<Request>(16);
        s.spawn_named("upstream", move || serve(requests, started));

        for item in 0..180u32 {
            let asked = Instant::now();
            let price = match breaker.call(|| fetch(&upstream, item, Duration::from_millis(40))) {
                Ok(price) => {
                    fresh.fetch_add(1, Ordering::Relaxed);
                    price
                }
                Err(BreakerError::Inner(error)) => {
                    if failed_fallback.fetch_add(1, Ordering::Relaxed) == 0 {
                        println!("{:>5} ms  first failure: {error}", ms());
                    }
                    100 // fallback: last known price
                }
                Err(_) => {
                    refused.fetch_add(1, Ordering::Relaxed);
                    cached.fetch_add(1, Ordering::Relaxed);
                    100
                }
            };
            assert!(price >= 100);
            slowest = slowest.max(asked.elapsed());
            std::thread::sleep(Duration::from_millis(7));
        }
        drop(upstream); // the upstream thread ends; the scope joins it
    });

    let stats = breaker.stats();
    println!(
        "\n{} fresh answers, {} fallbacks after a failed call, {} answered from cache while open",
        fresh.into_inner(),
        failed_fallback.into_inner(),
        cached.into_inner()
    );
    println!(
        "breaker: {} trips, {} refused, {} slow calls, final state {}; slowest answer {:.0?}",
        stats.trips, stats.rejected, stats.slow_calls, stats.state, slowest
    );
    assert_eq!(refused.into_inner(), stats.rejected);
}
