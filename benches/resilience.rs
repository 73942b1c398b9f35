//! The price of the composed stack on the happy path: one successful call through
//! `Resilience` with every layer (bulkhead, rate limiter, breaker, deadline, retries
//! enabled but unused), and with the breaker alone, beside a direct call and the
//! closest peer composition: failsafe's breaker with a retry loop around it (failsafe
//! has no bulkhead, limiter or deadline). Also the full stack with a shared retry
//! budget, and a call on the stack's own pool (`call_isolated`: the hop to a worker
//! and back that lets a caller give up). One calling thread; the limiter's rate is
//! far above the call rate, so it never waits.

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use common::{Group, Role};
use corral::{resilience::RetryBudget, CircuitBreaker, RateLimiter, Resilience, Semaphore};
use criterion::{criterion_group, criterion_main, Criterion};
use failsafe::CircuitBreaker as _;

#[inline(never)]
fn upstream(x: u64) -> Result<u64, ()> {
    Ok(black_box(x))
}

fn breaker() -> Arc<CircuitBreaker> {
    Arc::new(
        CircuitBreaker::builder()
            .consecutive_failures(5)
            .build()
            .expect("valid breaker"),
    )
}

fn happy_path(c: &mut Criterion) {
    let mut g = Group::new(c, "resilience/happy_call");
    g.bench("direct", Role::Reference, |b| {
        let mut x = 0u64;
        b.iter(|| {
            x += 1;
            black_box(upstream(x))
        })
    });

    let full = Resilience::builder()
        .bulkhead(Arc::new(Semaphore::new(64)))
        .rate_limiter(Arc::new(
            RateLimiter::per_second(1_000_000_000)
                .burst(1_000_000)
                .build()
                .expect("valid limiter"),
        ))
        .breaker(breaker())
        .timeout(Duration::from_secs(10))
        .retries(2)
        .build()
        .expect("valid stack");
    // No peer composes a bulkhead, a limiter and a deadline: nothing to compare with.
    g.bench("corral_full_stack", Role::Corral { vs: &[] }, |b| {
        let mut x = 0u64;
        b.iter(|| {
            x += 1;
            black_box(full.call(|_| upstream(x)))
        })
    });

    let budgeted = Resilience::builder()
        .bulkhead(Arc::new(Semaphore::new(64)))
        .breaker(breaker())
        .timeout(Duration::from_secs(10))
        .retries(2)
        .retry_budget(Arc::new(
            RetryBudget::builder().build().expect("valid budget"),
        ))
        .build()
        .expect("valid stack");
    g.bench(
        "corral_stack_with_retry_budget",
        Role::Corral { vs: &[] },
        |b| {
            let mut x = 0u64;
            b.iter(|| {
                x += 1;
                black_box(budgeted.call(|_| upstream(x)))
            })
        },
    );

    let isolated = Resilience::builder()
        .isolate(2)
        .breaker(breaker())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("valid stack");
    g.bench("corral_isolated_call", Role::Corral { vs: &[] }, |b| {
        let mut x = 0u64;
        b.iter(|| {
            x += 1;
            let n = x;
            black_box(isolated.call_isolated(move |_| upstream(n)))
        })
    });

    let breaker_only = Resilience::builder()
        .breaker(breaker())
        .retries(2)
        .build()
        .expect("valid stack");
    let vs = Role::Corral {
        vs: &["failsafe_breaker_and_retry"],
    };
    g.bench("corral_breaker_and_retry", vs, |b| {
        let mut x = 0u64;
        b.iter(|| {
            x += 1;
            black_box(breaker_only.call(|_| upstream(x)))
        })
    });

    let failsafe = failsafe::Config::new()
        .failure_policy(failsafe::failure_policy::consecutive_failures(
            5,
            failsafe::backoff::constant(Duration::from_secs(30)),
        ))
        .build();
    g.bench("failsafe_breaker_and_retry", Role::Peer, |b| {
        let mut x = 0u64;
        b.iter(|| {
            x += 1;
            // The retry loop failsafe leaves to its user: up to 3 attempts.
            let mut outcome = failsafe.call(|| upstream(x));
            for _ in 0..2 {
                if outcome.is_ok() {
                    break;
                }
                outcome = failsafe.call(|| upstream(x));
            }
            black_box(outcome.is_ok())
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! { name = benches; config = config(); targets = happy_path }
criterion_main!(benches);
