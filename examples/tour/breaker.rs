//! Circuit breaker: four workers share one breaker in front of an upstream that falls
//! sick for a while; the breaker opens, probes with a few trials, and closes again.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral::{
    breaker::{BreakerError, Window},
    CircuitBreaker,
};

/// The upstream: 2% errors, except between 100 and 250 ms when 80% of calls fail.
fn upstream(started: Instant, roll: u64) -> Result<u64, &'static str> {
    let sick = (100..250).contains(&started.elapsed().as_millis());
    if roll % 100 < if sick { 80 } else { 2 } {
        Err("503 service unavailable")
    } else {
        Ok(roll)
    }
}

pub fn run() {
    println!("\n[breaker] 4 workers, one breaker, an upstream sick from 100 to 250 ms");
    let started = Instant::now();
    let transitions = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&transitions);
    let breaker = CircuitBreaker::builder()
        .failure_rate(0.5)
        .window(Window::Time(Duration::from_millis(100)))
        .minimum_calls(20)
        .open_for(Duration::from_millis(20))
        .backoff(2.0, Duration::from_millis(80))
        .half_open_calls(3)
        .on_state_change(move |from, to| {
            let at = started.elapsed().as_millis();
            log.lock().unwrap().push(format!("{at}ms {from}->{to}"));
        })
        .build()
        .expect("valid breaker config");

    let (served, failed, refused) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    corral::scope(|s| {
        for w in 0..4u64 {
            let (breaker, served, failed, refused) = (&breaker, &served, &failed, &refused);
            s.spawn_named(&format!("caller-{w}"), move || {
                let mut roll = 0x9E37_79B9_7F4A_7C15u64 ^ w;
                while started.elapsed() < Duration::from_millis(400) {
                    roll ^= roll << 13;
                    roll ^= roll >> 7;
                    roll ^= roll << 17;
                    match breaker.call(|| upstream(started, roll)) {
                        Ok(_) => served.fetch_add(1, Ordering::Relaxed),
                        Err(BreakerError::Inner(_)) => failed.fetch_add(1, Ordering::Relaxed),
                        Err(_) => refused.fetch_add(1, Ordering::Relaxed),
                    };
                    std::thread::sleep(Duration::from_micros(200)); // pace the callers
                }
            });
        }
    });
    let stats = breaker.stats();
    println!(
        "  {} served, {} failed, {} refused without calling; {} trips, final state {}",
        served.into_inner(),
        failed.into_inner(),
        refused.into_inner(),
        stats.trips,
        stats.state
    );
    let transitions = transitions.lock().unwrap();
    println!("  transitions: {}", transitions.join(", "));

    // What the breaker costs when nothing is wrong: a closed-state call.
    let calm = CircuitBreaker::builder()
        .consecutive_failures(5)
        .build()
        .expect("valid breaker config");
    let n = 2_000_000u64;
    let t = Instant::now();
    for i in 0..n {
        let _ = black_box(calm.call(|| Ok::<_, ()>(black_box(i))));
    }
    println!(
        "  closed-state call overhead: {:.1} ns per call ({} calls)",
        t.elapsed().as_nanos() as f64 / n as f64,
        n
    );
}
