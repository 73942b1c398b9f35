//! Foundation: scoped workers under a deadline token, and a cancellation tree.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use corral::{cancel::CancelReason, CancelToken};

pub fn run() {
    println!("\n[scope] 4 workers hash a shared buffer under a 300 ms deadline");
    let deadline = CancelToken::with_timeout(Duration::from_millis(300));
    let data: Vec<u64> = (0..1 << 16).collect();
    let rounds = AtomicU64::new(0);
    let started = Instant::now();
    let checksums: Vec<u64> = corral::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let (data, rounds, deadline) = (&data, &rounds, &deadline);
                s.spawn_named(&format!("hash-{w}"), move || {
                    let mut acc = 0u64;
                    // Work in rounds until the deadline: the token is the only stop signal.
                    while !deadline.is_cancelled() {
                        for x in data.iter().skip(w).step_by(4) {
                            acc = acc.rotate_left(5) ^ x.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                        }
                        rounds.fetch_add(1, Ordering::Relaxed);
                    }
                    acc
                })
            })
            .collect();
        workers.into_iter().map(|h| h.join().unwrap()).collect()
    });
    println!(
        "  {} rounds by {} workers, stopped by {:?} after {:.0?} (checksum {:x})",
        rounds.load(Ordering::Relaxed),
        checksums.len(),
        deadline.reason().unwrap_or(CancelReason::Cancelled),
        started.elapsed(),
        checksums.iter().fold(0, |a, b| a ^ b)
    );

    println!("\n[cancel] a server token, 3 requests, 100 steps each: cancel one request, then the server");
    let server = CancelToken::new();
    let requests: Vec<CancelToken> = (0..3).map(|_| server.child()).collect();
    let steps: Vec<CancelToken> = requests
        .iter()
        .flat_map(|r| (0..100).map(move |_| r.child()))
        .collect();
    requests[0].cancel();
    let after_one = steps.iter().filter(|t| t.is_cancelled()).count();
    server.cancel();
    let after_server = steps.iter().filter(|t| t.is_cancelled()).count();
    println!(
        "  steps cancelled: {after_one}/300 after one request, {after_server}/300 after the server; server reason {:?}",
        server.reason().expect("cancelled")
    );
}
