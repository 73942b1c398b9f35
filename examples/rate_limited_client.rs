//! A client throttled to an upstream quota, with per-user limits in front.
//!
//! Every request first passes its user's own limit (a `KeyedRateLimiter`: a user over
//! their limit gets a "429" with a retry-after, without touching the shared quota),
//! then waits for a slot in the upstream quota with `wait_timeout`: a request whose
//! slot lies further away than its latency budget is shed at once, without sleeping
//! and without using upstream capacity, so the upstream never sees more than its quota.
//!
//! Run it with `cargo run --release --example rate_limited_client`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use corral::{rate::WaitError, KeyedRateLimiter, RateLimiter};

/// What happened to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Sent,
    UserLimited,
    Shed,
}

/// The upstream: counts the calls it receives.
struct Upstream {
    calls: AtomicU64,
}

impl Upstream {
    fn call(&self, _user: &str) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The upstream allows 100 requests per second, in bursts of at most 10.
    let upstream_quota = RateLimiter::per_second(100).burst(10).build()?;
    // Each user may send 40 per second, in bursts of 5; at most 10,000 users remembered.
    let per_user = KeyedRateLimiter::per_second(40)
        .burst(5)
        .max_keys(10_000)
        .build()?;
    let upstream = Upstream {
        calls: AtomicU64::new(0),
    };
    let budget = Duration::from_millis(10); // the latency a request may spend waiting
    let run_for = Duration::from_millis(500);
    let outcomes: Mutex<BTreeMap<(String, Outcome), u64>> = Mutex::new(BTreeMap::new());

    let started = Instant::now();
    corral::scope(|s| {
        // Six users; "batch-job" sends as fast as it can, the others at a human pace.
        for user in ["alice", "bob", "carol", "dave", "erin", "batch-job"] {
            let (upstream_quota, per_user, upstream, outcomes) =
                (&upstream_quota, &per_user, &upstream, &outcomes);
            s.spawn_named(user, move || {
                let pause = if user == "batch-job" {
                    Duration::ZERO
                } else {
                    Duration::from_millis(25)
                };
                while started.elapsed() < run_for {
                    let outcome = match per_user.check_key(&user) {
                        Err(_retry_after) => Outcome::UserLimited,
                        Ok(()) => match upstream_quota.wait_timeout(budget) {
                            Ok(()) => {
                                upstream.call(user);
                                Outcome::Sent
                            }
                            Err(WaitError::Timeout(_)) => Outcome::Shed,
                            Err(other) => panic!("unexpected: {other}"),
                        },
                    };
                    *outcomes
                        .lock()
                        .unwrap()
                        .entry((user.to_string(), outcome))
                        .or_default() += 1;
                    if outcome == Outcome::UserLimited {
                        // A real client would sleep for the retry-after; a batch job
                        // backs off a little to avoid spinning on refusals.
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    std::thread::sleep(pause);
                }
            });
        }
    });
    let elapsed = started.elapsed();

    println!("user        sent  user-limited  shed");
    let outcomes = outcomes.into_inner().unwrap();
    for user in ["alice", "bob", "carol", "dave", "erin", "batch-job"] {
        let get = |o| outcomes.get(&(user.to_string(), o)).copied().unwrap_or(0);
        println!(
            "{user:<10} {:>5} {:>13} {:>5}",
            get(Outcome::Sent),
            get(Outcome::UserLimited),
            get(Outcome::Shed)
        );
    }
    let calls = upstream.calls.load(Ordering::Relaxed);
    let allowed = 10.0 + 100.0 * elapsed.as_secs_f64();
    println!(
        "upstream saw {calls} calls in {elapsed:.2?} (quota allows at most {allowed:.0}); users remembered: {}",
        per_user.len()
    );
    assert!(
        calls as f64 <= allowed + 1.0,
        "the upstream quota was exceeded"
    );
    Ok(())
}
