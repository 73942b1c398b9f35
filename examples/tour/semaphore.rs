//! Semaphore: a connection budget shared by workers, resized at run time, with a large
//! batch job that is not starved by the small ones, and a busy 1-permit hot spot.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use corral::{semaphore::AcquireError, Semaphore};

pub fn run() {
    println!("\n[semaphore] 6 workers share a budget of 8 connections (1-3 per request); shrunk to 3, grown to 6");
    let budget = Semaphore::new(8);
    let in_use = AtomicUsize::new(0);
    let peak = [
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    ];
    let phase = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let served = AtomicUsize::new(0);
    let timed_out = AtomicUsize::new(0);
    corral::scope(|s| {
        for w in 0..6u64 {
            let (budget, in_use, peak, phase, stop, served, timed_out) =
                (&budget, &in_use, &peak, &phase, &stop, &served, &timed_out);
            s.spawn(move || {
                let mut x = w + 1;
                while !stop.load(Ordering::Relaxed) {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let n = 1 + (x >> 62) as usize % 3;
                    match budget.acquire_many_timeout(n, Duration::from_millis(20)) {
                        Ok(_conns) => {
                            let now = in_use.fetch_add(n, Ordering::SeqCst) + n;
                            peak[phase.load(Ordering::SeqCst)].fetch_max(now, Ordering::SeqCst);
                            std::thread::yield_now(); // "use" the connections
                            in_use.fetch_sub(n, Ordering::SeqCst);
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(AcquireError::Timeout) => {
                            timed_out.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(other) => panic!("unexpected: {other}"),
                    }
                }
            });
        }
        let wait = |d| std::thread::sleep(d);
        wait(Duration::from_millis(100));
        budget.set_capacity(3).unwrap();
        // The shrink takes effect as connections come back; then measure.
        while budget.stats().in_use > 3 {
            std::thread::yield_now();
        }
        phase.store(1, Ordering::SeqCst);
        wait(Duration::from_millis(100));
        phase.store(2, Ordering::SeqCst);
        budget.set_capacity(6).unwrap();
        wait(Duration::from_millis(100));
        stop.store(true, Ordering::Relaxed);
    });
    println!(
        "  {} requests served, {} timed out; peak in use: {} of 8, {} of 3 after the shrink, {} of 6 after growing",
        served.load(Ordering::Relaxed),
        timed_out.load(Ordering::Relaxed),
        peak[0].load(Ordering::SeqCst),
        peak[1].load(Ordering::SeqCst),
        peak[2].load(Ordering::SeqCst),
    );

    println!("\n[semaphore] a batch job needs all 4 permits while 3 workers stream 1-permit requests hand over hand");
    let sem = Semaphore::new(4);
    let stop = AtomicBool::new(false);
    let waited = corral::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                let mut mine = None;
                while !stop.load(Ordering::Relaxed) {
                    // Take the next permit before letting go of the current one.
                    mine = sem.acquire_timeout(Duration::from_millis(2)).ok();
                }
                drop(mine);
            });
        }
        std::thread::sleep(Duration::from_millis(20));
        let asked = Instant::now();
        let batch = sem.acquire_many_timeout(4, Duration::from_secs(5));
        let waited = asked.elapsed();
        stop.store(true, Ordering::Relaxed);
        assert!(batch.is_ok(), "the batch job was starved");
        waited
    });
    println!(
        "  batch job served after {waited:.1?} (barging allowed ~1 ms, then hand-off; hand-offs: {})",
        sem.stats().handoffs
    );

    println!("\n[semaphore] hot spot: 2 threads x 100,000 acquire/release on 1 permit");
    let hot = Semaphore::new(1);
    let started = Instant::now();
    corral::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..100_000 {
                    drop(hot.acquire().unwrap());
                }
            });
        }
    });
    let took = started.elapsed();
    println!(
        "  {:.1} ns per acquire/release, {} waits parked the thread",
        took.as_nanos() as f64 / 200_000.0,
        hot.stats().waited
    );
}
