//! Ask three replicas, keep the first answer, cancel the rest.
//!
//! In Go the classic version leaks: the losers send their answers on a channel nobody
//! reads any more and block forever. Here the replicas run in a `TaskGroup`: the first
//! answer cancels the group token, the slower replicas see it and return, and `wait_all`
//! joins every one of them before the function returns. No thread is left behind.
//!
//! Run it with `cargo run --release --example first_result`.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use corral::{group::GroupError, leak::LeakCheck, CancelToken, TaskGroup};

/// A replica that answers after `latency`, unless it is cancelled first.
fn query(replica: &str, latency: Duration, token: &CancelToken) -> Result<String, String> {
    match token.wait_timeout(latency) {
        Some(reason) => Err(format!("{replica}: gave up ({reason})")),
        None => Ok(format!("{replica}: 42")),
    }
}

fn main() {
    let check = LeakCheck::new();
    let replicas = [
        ("replica-a", Duration::from_millis(300)),
        ("replica-b", Duration::from_millis(20)),
        ("replica-c", Duration::from_millis(900)),
    ];
    let started = Instant::now();
    let first: OnceLock<String> = OnceLock::new();

    let outcomes = corral::scope(|s| {
        let group = TaskGroup::<(), String>::new(s);
        for (name, latency) in replicas {
            let first = &first;
            group.spawn(move |token| {
                let answer = query(name, latency, token)?;
                if first.set(answer).is_ok() {
                    token.cancel(); // we won: stop the others
                }
                Ok(())
            });
        }
        group.wait_all() // joins every replica, winners and losers alike
    });

    println!(
        "first answer after {:.0?}: {}",
        started.elapsed(),
        first.get().expect("one replica answered")
    );
    for (id, outcome) in &outcomes {
        match outcome {
            Ok(()) => println!("  {id}: answered"),
            // `GroupError`'s Display says only "task failed"; the reason is the error
            // inside (a `String` here, so not reachable through `source()`).
            Err(GroupError::Failed(why)) => println!("  {id}: {why}"),
            Err(other) => println!("  {id}: {other:?}"),
        }
    }
    check
        .verify()
        .expect("no replica thread outlives the request");
    println!("all replicas joined; no thread left behind");
}
