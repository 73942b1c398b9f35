//! The tour: every corral primitive on a realistic workload, with a short report.
//!
//! Run it with `cargo run --release --example tour`. Each section lives in its own
//! file beside this one and prints a few lines; the run ends by checking that no
//! corral thread is left alive.

use std::time::Instant;

mod breaker;
mod foundation;
mod pipeline;
mod pool;
mod rate;
mod resilience;
mod semaphore;
mod supervisor;

fn main() {
    // Panics in corral threads are caught and reported by the primitives themselves;
    // keep the default hook's output for everything else.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_corral = std::thread::current()
            .name()
            .is_some_and(|n| n.starts_with("corral-"));
        if !in_corral {
            default_hook(info);
        }
    }));
    let started = Instant::now();
    println!("corral tour\n===========");
    foundation::run();
    semaphore::run();
    pool::run();
    rate::run();
    breaker::run();
    resilience::run();
    pipeline::run();
    supervisor::run();
    let live = corral::leak::live_count();
    println!("\nfinished in {:.2?}", started.elapsed());
    println!("live corral threads: {live}");
    if live != 0 {
        for thread in corral::leak::live_threads() {
            eprintln!("  still alive: {thread}");
        }
        std::process::exit(1);
    }
}
