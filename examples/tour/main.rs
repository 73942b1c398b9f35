//! The tour: every corral primitive on a realistic workload, with a short report.
//!
//! Run it with `cargo run --release --example tour`. Each section lives in its own
//! file beside this one and prints a few lines; the run ends by checking that no
//! corral thread is left alive.

use std::time::Instant;

mod foundation;
mod rate;

fn main() {
    let started = Instant::now();
    println!("corral tour\n===========");
    foundation::run();
    rate::run();
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
