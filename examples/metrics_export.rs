//! Metrics export: corral's counters and gauges through the `metrics` facade, rendered
//! as Prometheus text. Any exporter works; this one (`metrics-exporter-prometheus`,
//! without its HTTP server) renders the text itself, which a service would serve on
//! `/metrics`.
//!
//! The recorder is installed first: corral registers a primitive's metrics when it is
//! built. Every primitive is named: the name is the `name` label, beside `kind`.
//! Metric names and labels: docs/metrics.md.
//!
//! Run it with `cargo run --example metrics_export --features metrics`.

use std::sync::Arc;
use std::time::Duration;

use corral::{
    leak::LeakCheck, supervisor::Restart, CircuitBreaker, RateLimiter, Resilience, Semaphore,
    Supervisor,
};
use metrics_exporter_prometheus::PrometheusBuilder;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let check = LeakCheck::new(); // fails below if a corral thread outlives main
    let exporter = PrometheusBuilder::new().install_recorder()?;

    // A connection pool of 2, shared by 6 request threads.
    let db = Semaphore::builder(2).name("db").build()?;
    corral::scope(|s| {
        for i in 0..6 {
            let db = &db;
            s.spawn_named(&format!("request-{i}"), move || {
                let _conn = db.acquire().expect("the semaphore stays open");
            });
        }
    });

    // An API limited to a burst of 5: 12 calls at once, 7 refused.
    let api = RateLimiter::per_second(10).burst(5).name("api").build()?;
    let admitted = (0..12).filter(|_| api.check().is_ok()).count();

    // A breaker that opens after 3 failures in a row, behind a stack that retries.
    let payments = Arc::new(
        CircuitBreaker::builder()
            .name("payments")
            .consecutive_failures(3)
            .open_for(Duration::from_secs(30))
            .build()?,
    );
    let stack = Resilience::builder()
        .name("payments-client")
        .breaker(payments.clone())
        .retries(2)
        .backoff(Duration::ZERO, Duration::ZERO)
        .build()?;
    let _ = stack.call(|_| Ok::<_, &str>("paid"));
    let _ = stack.call(|_| Err::<&str, _>("gateway timeout")); // 3 attempts: opens
    let _ = stack.call(|_| Ok::<_, &str>("paid")); // refused by the open breaker

    // A supervised worker that fails twice before it finishes.
    let report = Supervisor::builder()
        .name("jobs")
        .backoff(Duration::from_millis(1), Duration::from_millis(4))
        .child("import", Restart::Transient, {
            let runs = std::sync::atomic::AtomicUsize::new(0);
            move |_| match runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed) {
                0 | 1 => Err("source not ready"),
                _ => Ok(()),
            }
        })
        .start()?
        .join();

    println!(
        "api admitted {admitted} of 12; breaker {:?}; supervisor restarted {} times",
        payments.state(),
        report.total_restarts()
    );
    println!("--- Prometheus text ---");
    print!("{}", exporter.render());
    check.verify().expect("every corral thread was joined");
    Ok(())
}
