//! Leak patterns: the classic goroutine leaks, each done the corral way and checked.
//!
//! Each pattern is one short function below `main`, with the Go version it replaces in
//! its doc comment. `checked` (at the bottom) runs each under an OS-level `LeakCheck`:
//! if any thread the pattern started (by corral or anything else) were still alive
//! afterwards, the check would fail and name it.
//!
//! Run it with `cargo run --release --example leak_patterns`.

use std::time::{Duration, Instant};

use corral::{
    channel::{bounded, select},
    supervisor::Restart,
    CancelToken, Supervisor,
};

fn main() {
    checked("1. a sender nobody receives from", sender_without_receiver);
    checked("2. a receiver nobody sends to", receiver_without_sender);
    checked(
        "3. a slow call without a timeout",
        slow_call_without_timeout,
    );
    checked(
        "4. a WaitGroup whose Add and Done disagree",
        waitgroup_mismatch,
    );
    checked("5. a timer never stopped", timer_never_stopped);
    checked("6. a crash loop restarting forever", crash_loop);
}

/// Go: a worker sends its answer on an unbuffered channel, but the caller already
/// returned on a timeout, so the worker blocks on the send forever. corral: the
/// worker's send also watches the scope's token, and the scope joins the worker.
fn sender_without_receiver() -> String {
    let (answer_tx, _answer_rx) = bounded::<u64>(0); // open, but nobody will receive
    corral::scope(|s| {
        let token = s.token().clone();
        let worker = s.spawn(move || {
            select! {
                send(answer_tx, 42) -> _ => "sent its answer",
                recv(token.done()) -> _ => "stopped on cancel", // the caller gave up
            }
        });
        s.token().cancel(); // the caller gives up (a timeout, an error) without receiving
        format!("worker {}", worker.join().unwrap())
    })
}

/// Go: a consumer ranges over a channel that no producer will ever close. corral: the
/// consumer selects on the jobs and on its token; the owner cancels when done.
fn receiver_without_sender() -> String {
    let (_jobs_tx, jobs_rx) = bounded::<u32>(8); // a sender kept alive elsewhere
    let token = CancelToken::new();
    corral::scope(|s| {
        let consumer = s.spawn(|| {
            let mut handled = 0;
            loop {
                select! {
                    recv(jobs_rx) -> job => match job { Ok(_) => handled += 1, Err(_) => break },
                    recv(token.done()) -> _ => break,
                }
            }
            handled
        });
        token.cancel();
        format!(
            "consumer handled {} jobs and left on cancel",
            consumer.join().unwrap()
        )
    })
}

/// Go: an HTTP call with no deadline hangs, and so does everything waiting on it.
/// corral: the call takes a token with a deadline and stops waiting when it passes.
fn slow_call_without_timeout() -> String {
    fn slow_upstream(token: &CancelToken) -> Result<&'static str, &'static str> {
        // Stands in for a call that would take an hour: it waits on the token.
        match token.wait_timeout(Duration::from_secs(3600)) {
            Some(_) => Err("gave up at the deadline"),
            None => Ok("answer"),
        }
    }
    let started = Instant::now();
    let request = CancelToken::with_timeout(Duration::from_millis(50));
    let result = corral::scope(|s| s.spawn(|| slow_upstream(&request)).join().unwrap());
    format!("{result:?} after {:.0?}", started.elapsed())
}

/// Go: `wg.Add(n)` and the `Done()` calls disagree, so `Wait` returns early (threads
/// still running) or never. corral: there is no counter to get wrong; the scope joins
/// exactly the threads it spawned.
fn waitgroup_mismatch() -> String {
    let mut results = vec![0u64; 8];
    corral::scope(|s| {
        for (i, slot) in results.iter_mut().enumerate() {
            s.spawn(move || *slot = (i as u64 + 1) * 10);
        }
    });
    format!("all {} results in: {:?}", results.len(), results)
}

/// Go: `time.After` in a loop, or a `Ticker` never stopped, keeps timers alive. corral:
/// deadlines are computed lazily from the clock; a token with a deadline starts no
/// thread and holds nothing once dropped.
fn timer_never_stopped() -> String {
    let before = corral::leak::os_threads().map(|t| t.len());
    let tokens: Vec<_> = (0..10_000)
        .map(|i| CancelToken::with_timeout(Duration::from_millis(i % 100)))
        .collect();
    let after = corral::leak::os_threads().map(|t| t.len());
    let expired = tokens.iter().filter(|t| t.is_cancelled()).count();
    format!(
        "10000 deadline tokens ({expired} already expired), OS threads before/after: {before:?}/{after:?}"
    )
}

/// Go: a goroutine that restarts itself on every failure spins forever. corral: a
/// supervisor restarts within an intensity limit, then stops and joins everything.
fn crash_loop() -> String {
    let report = Supervisor::builder()
        .intensity(5, Duration::from_secs(60))
        .backoff(Duration::from_millis(1), Duration::from_millis(8))
        .child("always-fails", Restart::Permanent, |_| {
            Err("config missing")
        })
        .start()
        .expect("valid supervisor")
        .join();
    assert!(report.reason.is_intensity_exceeded(), "{:?}", report.reason);
    format!(
        "gave up after {} restarts ({:?})",
        report.total_restarts(),
        report.reason
    )
}

// --- helpers below: the leak check around each pattern ---

/// Runs one pattern under a leak check of every OS thread in the process, and prints
/// what it did. A thread left alive fails the check, which names it.
fn checked(title: &str, pattern: fn() -> String) {
    let check = corral::LeakCheck::builder()
        .os_threads()
        .grace(Duration::from_secs(2))
        .build();
    let outcome = pattern();
    match check.verify() {
        Ok(()) => println!("{title}: {outcome}; no thread left behind"),
        Err(report) => panic!("{title}: {report}"),
    }
}
