//! Rate-limited client: every request passes its user's own limit, then waits a
//! bounded time for a slot in the shared upstream quota. A user over their limit gets a
//! "429" with a retry-after without touching the shared quota; a request whose slot
//! lies further away than its latency budget is shed at once, without sleeping and
//! without using upstream capacity, so the upstream never sees more than its quota.
//!
//! Six simulated users send for half a second; "batch-job" sends as fast as it can.
//!
//! Run it with `cargo run --release --example rate_limited_client`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use corral::{leak::LeakCheck, KeyedRateLimiter, RateLimiter};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = Client {
        // Each user may send 40 per second, in bursts of 5; at most 10,000 users remembered.
        per_user: KeyedRateLimiter::per_second(40)
            .burst(5)
            .max_keys(10_000)
            .build()?,
        // The upstream allows 100 requests per second, in bursts of at most 10.
        upstream_quota: RateLimiter::per_second(100).burst(10).build()?,
        upstream: Upstream::default(),
    };

    let check = LeakCheck::new(); // fails below if a user's thread outlives main
    let (outcomes, elapsed) = run_users(&client, Duration::from_millis(500)); // helper below
    print_and_check(&outcomes, &client, elapsed); // the upstream saw at most its quota
    check.verify().expect("every user's thread was joined");
    Ok(())
}

struct Client {
    per_user: KeyedRateLimiter<&'static str>,
    upstream_quota: RateLimiter,
    upstream: Upstream,
}

impl Client {
    /// One request: the user's own limit first, then a slot in the shared quota.
    fn request(&self, user: &'static str) -> Outcome {
        if let Err(_retry_after) = self.per_user.check_key(&user) {
            return Outcome::UserLimited; // a "429"; the shared quota is untouched
        }
        // Wait for a slot at most 10 ms, the request's latency budget. A slot further
        // away fails at once, without sleeping.
        match self.upstream_quota.wait_timeout(Duration::from_millis(10)) {
            Ok(()) => {
                self.upstream.call(user);
                Outcome::Sent
            }
            Err(_too_far) => Outcome::Shed,
        }
    }
}

// --- helpers below: the simulated upstream and users, printing ---

/// What happened to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Sent,
    UserLimited,
    Shed,
}

/// The upstream: counts the calls it receives.
#[derive(Default)]
struct Upstream {
    calls: AtomicU64,
}

impl Upstream {
    fn call(&self, _user: &str) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
}

const USERS: [&str; 6] = ["alice", "bob", "carol", "dave", "erin", "batch-job"];

type Outcomes = BTreeMap<(&'static str, Outcome), u64>;

/// Each user sends on a thread of its own for `run_for`: "batch-job" as fast as it can,
/// the others at a human pace. Returns how many requests of each user ended how, and
/// how long they ran.
fn run_users(client: &Client, run_for: Duration) -> (Outcomes, Duration) {
    let started = Instant::now();
    let outcomes = Mutex::new(Outcomes::new());
    corral::scope(|s| {
        for user in USERS {
            let outcomes = &outcomes;
            s.spawn_named(user, move || {
                let pause = if user == "batch-job" {
                    Duration::ZERO
                } else {
                    Duration::from_millis(25)
                };
                while started.elapsed() < run_for {
                    let outcome = client.request(user);
                    *outcomes.lock().unwrap().entry((user, outcome)).or_default() += 1;
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
    (outcomes.into_inner().unwrap(), started.elapsed())
}

/// Prints the outcomes, and checks that the upstream never saw more than its quota.
fn print_and_check(outcomes: &Outcomes, client: &Client, elapsed: Duration) {
    let calls = client.upstream.calls.load(Ordering::Relaxed);
    let allowed = 10.0 + 100.0 * elapsed.as_secs_f64(); // the burst, then 100 a second
    println!("user        sent  user-limited  shed");
    for user in USERS {
        let count = |outcome| outcomes.get(&(user, outcome)).copied().unwrap_or(0);
        println!(
            "{user:<10} {:>5} {:>13} {:>5}",
            count(Outcome::Sent),
            count(Outcome::UserLimited),
            count(Outcome::Shed)
        );
    }
    println!(
        "upstream saw {calls} calls in {elapsed:.2?} (quota allows at most {allowed:.0}); users remembered: {}",
        client.per_user.len()
    );
    assert!(
        calls as f64 <= allowed + 1.0,
        "the upstream quota was exceeded"
    );
}
