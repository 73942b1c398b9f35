//! First result wins: ask three replicas, keep the first answer, cancel the rest.
//!
//! In Go the classic version leaks: the losers send their answers on a channel nobody
//! reads any more and block forever. Here the replicas run in a `TaskGroup`: the first
//! answer cancels the group's token, the slower replicas see it and return, and
//! `wait_all` joins every one of them before the function returns.
//!
//! Run it with `cargo run --release --example first_result`.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use corral::{
    group::{GroupError, TaskId},
    leak::LeakCheck,
    CancelToken, TaskGroup,
};

fn main() {
    let check = LeakCheck::new(); // fails below if a replica's thread outlives the request
    let started = Instant::now();
    let (first, outcomes) = first_answer(&REPLICAS);

    let first = first.expect("one replica answered");
    println!("first answer after {:.0?}: {first}", started.elapsed());
    print_outcomes(&outcomes);
    let answered = outcomes
        .iter()
        .filter(|(_, outcome)| outcome.is_ok())
        .count();
    assert_eq!(answered, 1, "the first answer cancels the other replicas");
    check.verify().expect("every replica was joined");
    println!("all replicas joined; no thread left behind");
}

/// Asks every replica at once and returns the first answer, and how each replica ended.
fn first_answer(replicas: &[Replica]) -> (Option<String>, Outcomes) {
    let first = OnceLock::new();
    let outcomes = corral::scope(|s| {
        let group = TaskGroup::<(), String>::new(s);
        for replica in replicas {
            let first = &first;
            group.spawn(move |token| {
                let answer = replica.query(token)?; // returns early once cancelled
                if first.set(answer).is_ok() {
                    token.cancel(); // we won: stop the others
                }
                Ok(())
            });
        }
        group.wait_all() // joins every replica, winners and losers alike
    });
    (first.into_inner(), outcomes)
}

// --- helpers below: the simulated replicas, printing ---

type Outcomes = Vec<(TaskId, Result<(), GroupError<String>>)>;

/// A replica that answers after its latency, unless it is cancelled first.
struct Replica {
    name: &'static str,
    latency: Duration,
}

const REPLICAS: [Replica; 3] = [
    Replica::new("replica-a", 300),
    Replica::new("replica-b", 20),
    Replica::new("replica-c", 900),
];

impl Replica {
    const fn new(name: &'static str, latency_ms: u64) -> Self {
        Replica {
            name,
            latency: Duration::from_millis(latency_ms),
        }
    }

    fn query(&self, token: &CancelToken) -> Result<String, String> {
        match token.wait_timeout(self.latency) {
            Some(reason) => Err(format!("{}: gave up ({reason})", self.name)),
            None => Ok(format!("{}: 42", self.name)),
        }
    }
}

fn print_outcomes(outcomes: &Outcomes) {
    for (id, outcome) in outcomes {
        match outcome {
            Ok(()) => println!("  {id}: answered"),
            // `GroupError`'s Display says only "task failed"; the reason is the error
            // inside (a `String` here, so not reachable through `source()`).
            Err(GroupError::Failed(why)) => println!("  {id}: {why}"),
            Err(other) => println!("  {id}: {other:?}"),
        }
    }
}
