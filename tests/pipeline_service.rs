//! A pipeline as a long-running service, through the public API: pushed input with
//! backpressure under each overflow policy, the running handle (live statistics,
//! drain and cancel with every item accounted for, bounded joins), stateful and
//! batched stages, and close racing send.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral::clock::ManualClock;
use corral::leak::LeakCheck;
use corral::pipeline::{PipelineError, PipelineReport, SendError};
use corral::{CancelToken, Overflow, Pipeline};

const PATIENCE: Duration = Duration::from_secs(20);

/// Polls `cond` until it holds; fails the test after a generous deadline.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

fn assert_books_balance(report: &PipelineReport) {
    for s in &report.stages {
        assert!(s.balanced(), "stage {} does not balance: {s:?}", s.name);
    }
    for pair in report.stages.windows(2) {
        assert_eq!(
            pair[0].items_out, pair[1].items_in,
            "{} put out {} but {} took in {}",
            pair[0].name, pair[0].items_out, pair[1].name, pair[1].items_in
        );
    }
}

/// Per stage only: a batched stage puts out one item per batch.
fn assert_each_stage_balances(report: &PipelineReport) {
    for s in &report.stages {
        assert!(s.balanced(), "stage {} does not balance: {s:?}", s.name);
    }
}

/// A stage function that holds every item until the gate opens (the sender dropped).
fn gated(gate: crossbeam_channel::Receiver<()>) -> impl Fn(u64) -> u64 + Send + Sync {
    move |x| {
        let _ = gate.recv();
        x
    }
}

#[test]
fn many_producers_push_through_three_stages_and_every_item_arrives() {
    let _check = LeakCheck::new();
    let (input, pipeline) = Pipeline::with_input();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let running = pipeline
        .stage("parse", 2, |x: u64| x + 1)
        .stage("enrich", 3, |x: u64| x * 2)
        .stage("write", 1, |x: u64| x)
        .capacity(4)
        .spawn(move |x| sink.lock().unwrap().push(x))
        .unwrap();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let input = input.clone();
            s.spawn(move || {
                for i in 0..500 {
                    input.send(t * 500 + i).unwrap();
                }
            });
        }
    });
    drop(input);
    let report = running.join().unwrap();
    assert_books_balance(&report);
    assert_eq!(report.stage("source").unwrap().items_in, 2000);
    assert_eq!(report.delivered(), 2000);
    let mut seen = seen.lock().unwrap().clone();
    seen.sort_unstable();
    assert_eq!(seen, (0..2000).map(|x| (x + 1) * 2).collect::<Vec<_>>());
}

#[test]
fn block_makes_producers_wait_and_every_bounded_send_hands_the_item_back() {
    let _check = LeakCheck::new();
    let (open, gate) = crossbeam_channel::bounded::<()>(0);
    let (input, pipeline) = Pipeline::with_input();
    let running = pipeline
        .stage("slow", 1, gated(gate))
        .capacity(2)
        .spawn(|_| {})
        .unwrap();
    // Declared after the pipeline, so dropped first: should the test fail, the gate
    // opens before the pipeline's drop joins the stage held by it.
    let open = open;
    // The worker holds one item, the queue two: then there is no room.
    let mut accepted = 0u64;
    eventually("a full input", || match input.try_send(accepted) {
        Ok(()) => {
            accepted += 1;
            false
        }
        // Full once the worker has taken its item (until then, there is room for one).
        Err(SendError::Full(item)) => item == accepted && accepted == 3,
        Err(other) => panic!("{other:?}"),
    });
    match input.send_timeout(100, Duration::from_millis(1)) {
        Err(SendError::Timeout(100)) => {}
        other => panic!("{other:?}"),
    }
    match input.send_deadline(101, Instant::now()) {
        Err(SendError::Timeout(101)) => {}
        other => panic!("{other:?}"),
    }
    let token = CancelToken::new();
    token.cancel();
    match input.send_cancellable(102, &token) {
        Err(SendError::Cancelled(102, _)) => {}
        other => panic!("{other:?}"),
    }
    // The queue is full, so this `send` waits; it goes through once the stage
    // moves again.
    std::thread::scope(|s| {
        let blocked = s.spawn(|| input.send(103));
        drop(open);
        blocked.join().unwrap().unwrap();
    });
    drop(input);
    let report = running.join().unwrap();
    assert_books_balance(&report);
    assert_eq!(report.delivered(), accepted + 1);
}

#[test]
fn the_drop_policies_never_block_a_producer_and_hand_each_lost_item_to_on_drop() {
    for policy in [Overflow::DropNewest, Overflow::DropOldest] {
        let _check = LeakCheck::new();
        let (open, gate) = crossbeam_channel::bounded::<()>(0);
        let lost = Arc::new(Mutex::new(Vec::new()));
        let noted = Arc::clone(&lost);
        let delivered = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&delivered);
        let (input, pipeline) = Pipeline::with_input();
        let running = pipeline
            .on_drop(move |x: u64| noted.lock().unwrap().push(x))
            .stage("slow", 1, gated(gate))
            .buffer(256) // the sink's queue: never full here
            .capacity(2)
            .overflow(policy)
            .spawn(move |x| sink.lock().unwrap().push(x))
            .unwrap();
        // Declared after the pipeline, so dropped first: should the test fail, the gate
        // opens before the pipeline's drop joins the stage held by it.
        let open = open;
        // The stage is stuck: a send never waits, it drops instead.
        for i in 0..50u64 {
            input.send(i).unwrap();
            input.try_send(1000 + i).unwrap();
        }
        drop(open);
        drop(input);
        let report = running.join().unwrap();
        assert_books_balance(&report);
        let (lost, delivered) = (lost.lock().unwrap(), delivered.lock().unwrap());
        assert_eq!(report.stage("source").unwrap().items_in, 100, "{policy:?}");
        assert_eq!(report.stage("slow").unwrap().dropped, lost.len() as u64);
        assert_eq!(lost.len() + delivered.len(), 100, "{policy:?} {report}");
        assert!(lost.len() >= 100 - 3, "{policy:?}: {} lost", lost.len());
        if policy == Overflow::DropOldest {
            // The newest items survive.
            assert!(delivered.contains(&1049), "{delivered:?}");
        }
    }
}

#[test]
fn stop_drains_what_is_inside_and_refuses_later_sends() {
    let _check = LeakCheck::new();
    let (open, gate) = crossbeam_channel::bounded::<()>(0);
    let (input, pipeline) = Pipeline::with_input();
    let running = pipeline
        .stage("slow", 1, gated(gate))
        .stage("after", 2, |x: u64| x)
        .capacity(4)
        .spawn(|_| {})
        .unwrap();
    // Declared after the pipeline, so dropped first: should the test fail, the gate
    // opens before the pipeline's drop joins the stage held by it.
    let open = open;
    for i in 0..4 {
        input.send(i).unwrap();
    }
    running.stop();
    assert!(input.is_closed());
    match input.send(9) {
        Err(SendError::Closed(9)) => {}
        other => panic!("{other:?}"),
    }
    drop(open);
    let report = running.join().unwrap();
    assert_books_balance(&report);
    assert_eq!(report.delivered(), 4);
}

#[test]
fn stop_now_counts_every_queued_item_as_not_processed() {
    let _check = LeakCheck::new();
    let (open, gate) = crossbeam_channel::bounded::<()>(0);
    let never = Arc::new(Mutex::new(Vec::new()));
    let noted = Arc::clone(&never);
    let (input, pipeline) = Pipeline::with_input();
    let running = pipeline
        .on_drop(move |x: u64| noted.lock().unwrap().push(x))
        .stage("slow", 1, gated(gate))
        .stage("after", 1, |x: u64| x)
        .capacity(8)
        .spawn(|_| {})
        .unwrap();
    // Declared after the pipeline, so dropped first: should the test fail, the gate
    // opens before the pipeline's drop joins the stage held by it.
    let open = open;
    for i in 0..6 {
        input.send(i).unwrap();
    }
    eventually("the worker to hold an item", || {
        running.stats().stage("slow").unwrap().idle_recv > Duration::ZERO
            || running.stats().stage("source").unwrap().items_in == 6
    });
    running.stop_now();
    drop(open);
    let err = running.join().unwrap_err();
    assert!(err.is_cancelled(), "{err:?}");
    let report = err.report().unwrap();
    assert_books_balance(report);
    let slow = report.stage("slow").unwrap();
    assert_eq!(slow.items_in, 6);
    // The item in the worker's hands went on (user code is not interrupted); the
    // rest never ran.
    assert_eq!(slow.items_out + slow.not_processed, 6, "{slow:?}");
    assert!(slow.not_processed >= 5, "{slow:?}");
    // Each of them went to the queue's `on_drop`, once: the newest ones.
    let mut never = never.lock().unwrap().clone();
    never.sort_unstable();
    assert_eq!(never, ((6 - slow.not_processed)..6).collect::<Vec<_>>());
    assert!(input.send(7).unwrap_err().is_closed());
}

#[test]
fn live_stats_show_progress_before_the_end() {
    let _check = LeakCheck::new();
    let (input, pipeline) = Pipeline::with_input();
    let running = pipeline.stage("id", 2, |x: u64| x).spawn(|_| {}).unwrap();
    for i in 0..100 {
        input.send(i).unwrap();
    }
    // Live numbers lag a little (each thread publishes its own), but they get there
    // while the run goes on: the input is still open.
    eventually("the live counts to reach 100", || {
        let live = running.stats();
        live.delivered() == 100
            && live.stage("source").unwrap().items_in == 100
            && live.stage("id").unwrap().items_out == 100
    });
    assert!(!running.is_finished());
    drop(input);
    let report = running.join().unwrap();
    assert_eq!(report.delivered(), 100);
}

#[test]
fn a_bounded_join_hands_the_handle_back_and_dropping_it_stops_and_joins() {
    let _check = LeakCheck::new();
    let (input, pipeline) = Pipeline::with_input();
    let running = pipeline.stage("id", 1, |x: u64| x).spawn(|_| {}).unwrap();
    input.send(1).unwrap();
    let running = running
        .join_timeout(Duration::from_millis(1))
        .expect_err("the input is still open");
    let token = CancelToken::new();
    token.cancel();
    let running = running
        .join_cancellable(&token)
        .expect_err("the token was cancelled");
    drop(running); // cancels and joins: LeakCheck proves it
    assert!(input.send(2).unwrap_err().is_closed());
}

#[test]
fn an_iterator_fed_pipeline_can_run_on_its_own_and_stop() {
    let _check = LeakCheck::new();
    let running = Pipeline::from_iter(0u64..)
        .stage("id", 2, |x| x)
        .spawn(|_| {})
        .unwrap();
    eventually("progress", || running.stats().delivered() >= 100);
    running.stop();
    let report = running.join().unwrap();
    assert_books_balance(&report);
    assert!(report.delivered() >= 100);
}

#[test]
fn dropping_the_last_input_ends_the_run_and_a_pipeline_never_run_refuses_sends() {
    let _check = LeakCheck::new();
    let (input, pipeline) = Pipeline::with_input();
    let running = pipeline.spawn(|_: u8| {}).unwrap();
    let second = input.clone();
    drop(input);
    second.send(1).unwrap();
    drop(second);
    assert_eq!(running.join().unwrap().delivered(), 1);

    let (input, pipeline) = Pipeline::<u8>::with_input();
    drop(pipeline);
    assert!(input.send(1).unwrap_err().is_closed());

    let (input, pipeline) = Pipeline::<u8>::with_input();
    let err = pipeline.ordered().spawn(|_| {}).unwrap_err();
    assert!(matches!(err, PipelineError::Config(_)), "{err:?}");
    assert!(input.try_send(1).unwrap_err().is_closed());
}

#[test]
fn each_worker_builds_its_state_once_and_drops_it_at_the_end() {
    let _check = LeakCheck::new();
    struct Conn(Arc<AtomicUsize>);
    impl Drop for Conn {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let built = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicUsize::new(0));
    let (b, d) = (Arc::clone(&built), Arc::clone(&dropped));
    let (input, pipeline) = Pipeline::with_input();
    let running = pipeline
        .stage_with_state(
            "enrich",
            3,
            move || {
                b.fetch_add(1, Ordering::SeqCst);
                (Conn(Arc::clone(&d)), 0u64)
            },
            |(_, uses): &mut (Conn, u64), x: u64| {
                *uses += 1;
                x
            },
        )
        .spawn(|_| {})
        .unwrap();
    for i in 0..300 {
        input.send(i).unwrap();
    }
    drop(input);
    let report = running.join().unwrap();
    assert_eq!(report.delivered(), 300);
    assert_eq!(built.load(Ordering::SeqCst), 3);
    assert_eq!(dropped.load(Ordering::SeqCst), 3);
}

#[test]
fn a_panicking_state_init_stops_the_run_without_hanging_the_senders() {
    let _check = LeakCheck::new();
    let (input, pipeline) = Pipeline::with_input();
    let running = pipeline
        .stage_with_state(
            "enrich",
            2,
            || -> u8 { panic!("no connection") },
            |_, x: u64| x,
        )
        .capacity(1)
        .spawn(|_| {})
        .unwrap();
    // Accepted or refused, never stuck.
    for i in 0..10 {
        let _ = input.send(i);
    }
    let err = running.join().unwrap_err();
    match &err {
        PipelineError::Panicked {
            stage,
            panic,
            report,
        } => {
            assert_eq!(stage, "enrich");
            assert_eq!(panic.message(), Some("no connection"));
            assert_books_balance(report);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn close_racing_send_loses_nothing() {
    let _check = LeakCheck::new();
    for round in 0..200u64 {
        let (input, pipeline) = Pipeline::with_input();
        let delivered = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&delivered);
        let running = pipeline
            .stage("id", 2, |x: u64| x)
            .capacity(2)
            .spawn(move |_| {
                count.fetch_add(1, Ordering::Relaxed);
            })
            .unwrap();
        let accepted = AtomicUsize::new(0);
        let refused = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..3 {
                let input = input.clone();
                let (accepted, refused) = (&accepted, &refused);
                s.spawn(move || {
                    for i in 0..50 {
                        match input.send(i) {
                            Ok(()) => accepted.fetch_add(1, Ordering::Relaxed),
                            Err(e) => {
                                assert_eq!(e.into_inner(), i);
                                refused.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                    }
                });
            }
            let closer = input.clone();
            s.spawn(move || {
                if round % 2 == 0 {
                    closer.close();
                } else {
                    running.stop();
                    let report = running.join().unwrap();
                    assert_books_balance(&report);
                    return;
                }
                let report = running.join().unwrap();
                assert_books_balance(&report);
            });
        });
        let accepted = accepted.load(Ordering::Relaxed);
        assert_eq!(accepted + refused.load(Ordering::Relaxed), 150);
        assert_eq!(delivered.load(Ordering::Relaxed), accepted, "round {round}");
    }
}

#[test]
fn one_queue_can_shed_while_the_others_keep_backpressure() {
    let _check = LeakCheck::new();
    let (open, gate) = crossbeam_channel::bounded::<()>(0);
    let lost = Arc::new(AtomicUsize::new(0));
    let noted = Arc::clone(&lost);
    let (input, pipeline) = Pipeline::with_input();
    let running = pipeline
        .stage("parse", 1, |x: u64| x)
        .on_drop(move |_| {
            noted.fetch_add(1, Ordering::SeqCst);
        })
        .buffer(2)
        .buffer_overflow(Overflow::DropNewest)
        .stage("best-effort", 1, gated(gate))
        .capacity(4)
        .spawn(|_| {})
        .unwrap();
    // Declared after the pipeline, so dropped first: should the test fail, the gate
    // opens before the pipeline's drop joins the stage held by it.
    let open = open;
    // "best-effort" is stuck, yet nothing upstream waits: its queue sheds.
    for i in 0..200 {
        input.send(i).unwrap();
    }
    drop(input);
    eventually("parse to pass everything on", || {
        running.stats().stage("parse").unwrap().items_out == 200
    });
    drop(open);
    let report = running.join().unwrap();
    assert_books_balance(&report);
    assert_eq!(report.stage("parse").unwrap().dropped, 0);
    let shed = report.stage("best-effort").unwrap().dropped;
    assert_eq!(shed, lost.load(Ordering::SeqCst) as u64);
    assert!(shed >= 200 - 3, "{shed}");
}

#[test]
fn a_pushed_input_can_have_its_own_policy_and_a_bad_one_is_named() {
    let _check = LeakCheck::new();
    let (open, gate) = crossbeam_channel::bounded::<()>(0);
    let (input, pipeline) = Pipeline::with_input();
    let running = pipeline
        .buffer(1)
        .buffer_overflow(Overflow::DropOldest)
        .stage("slow", 1, gated(gate))
        .spawn(|_| {})
        .unwrap();
    // Declared after the pipeline, so dropped first: should the test fail, the gate
    // opens before the pipeline's drop joins the stage held by it.
    let open = open;
    for i in 0..20u64 {
        input.send(i).unwrap(); // never waits
    }
    drop(open);
    drop(input);
    let report = running.join().unwrap();
    assert_books_balance(&report);
    let slow = report.stage("slow").unwrap();
    assert_eq!(slow.items_out + slow.dropped, 20);
    assert!(slow.dropped >= 18, "{slow:?}");

    let err = Pipeline::from_iter(0..3)
        .stage("a", 1, |x: i32| x)
        .buffer_overflow(Overflow::Reject)
        .run(|_| {})
        .unwrap_err();
    let PipelineError::Config(config) = &err else {
        panic!("{err:?}")
    };
    assert_eq!((config.field(), config.value()), ("overflow", "Reject"));
}

#[test]
fn ordered_output_survives_a_shedding_queue_in_the_middle() {
    let _check = LeakCheck::new();
    let (out, report) = Pipeline::from_iter(0..2000u64)
        .stage("a", 3, |x| x)
        .buffer(1)
        .buffer_overflow(Overflow::DropOldest)
        .stage("b", 2, |x| x)
        .ordered()
        .collect()
        .unwrap();
    assert_books_balance(&report);
    assert!(out.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(out.len() as u64 + report.dropped(), 2000);
}

#[test]
fn a_batched_stage_flushes_when_full_and_the_rest_when_the_input_ends() {
    let _check = LeakCheck::new();
    let clock = ManualClock::new(); // never advanced: no batch goes on time
    let batches = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&batches);
    let (input, pipeline) = Pipeline::with_input();
    let running = pipeline
        .batch_stage("write", 1, 4, Duration::from_millis(1), |rows: Vec<u64>| {
            rows
        })
        .clock(clock)
        .spawn(move |rows| sink.lock().unwrap().push(rows))
        .unwrap();
    for i in 0..8 {
        input.send(i).unwrap();
    }
    // Two full batches go while the input is still open.
    eventually("two full batches", || batches.lock().unwrap().len() == 2);
    input.send(8).unwrap();
    input.send(9).unwrap();
    drop(input);
    let report = running.join().unwrap();
    assert_each_stage_balances(&report);
    let batches = batches.lock().unwrap();
    assert_eq!(*batches, [vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]);
    let write = report.stage("write").unwrap();
    assert_eq!((write.items_in, write.items_out), (10, 10));
    assert_eq!(report.delivered(), 3);
}

#[test]
fn a_batched_stage_flushes_a_partial_batch_on_time() {
    let _check = LeakCheck::new();
    let clock = ManualClock::new();
    let batches = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&batches);
    let (input, pipeline) = Pipeline::with_input();
    let running = pipeline
        .batch_stage("write", 2, 100, Duration::from_secs(1), |rows: Vec<u64>| {
            rows
        })
        .clock(clock.clone())
        .spawn(move |rows| sink.lock().unwrap().push(rows))
        .unwrap();
    for round in 0..3u64 {
        input.send(round * 10).unwrap();
        input.send(round * 10 + 1).unwrap();
        // Only time can make these go: far below 100 items, input still open.
        eventually("a batch on time", || {
            clock.advance(Duration::from_secs(1));
            let got: usize = batches.lock().unwrap().iter().map(Vec::len).sum();
            got == 2 * (round as usize + 1)
        });
    }
    drop(input);
    let report = running.join().unwrap();
    assert_each_stage_balances(&report);
    let mut items: Vec<u64> = batches.lock().unwrap().concat();
    items.sort_unstable();
    assert_eq!(items, [0, 1, 10, 11, 20, 21]);
}

#[test]
fn a_failing_batch_stops_the_run_with_the_batch_accounted() {
    let _check = LeakCheck::new();
    let err = Pipeline::from_iter(0..100u32)
        .try_batch_stage("write", 1, 10, Duration::from_secs(60), |rows: Vec<u32>| {
            if rows.contains(&25) {
                Err("disk full")
            } else {
                Ok(rows.len())
            }
        })
        .run(|_| {})
        .unwrap_err();
    assert_eq!(err.stage(), Some("write"));
    let report = err.report().unwrap();
    assert_each_stage_balances(report);
    let write = report.stage("write").unwrap();
    assert_eq!(write.failed, 1);
    assert_eq!(write.items_out, 20);

    let err = Pipeline::from_iter(0..3u32)
        .batch_stage("write", 1, 0, Duration::from_secs(1), |rows: Vec<u32>| rows)
        .run(|_| {})
        .unwrap_err();
    let PipelineError::Config(config) = &err else {
        panic!("{err:?}")
    };
    assert_eq!((config.field(), config.value()), ("max_items", "0"));
    let err = Pipeline::from_iter(0..3u32)
        .batch_stage("write", 1, 2, Duration::from_secs(1), |rows: Vec<u32>| rows)
        .ordered()
        .run(|_| {})
        .unwrap_err();
    assert!(matches!(err, PipelineError::Config(_)), "{err:?}");
}

#[test]
fn sends_before_the_run_starts_wait_for_it_and_a_blocking_run_can_be_fed() {
    let _check = LeakCheck::new();
    let (input, pipeline) = Pipeline::with_input();
    // No run yet: no room, and the bounded forms give the item back.
    assert!(matches!(input.try_send(1u64), Err(SendError::Full(1))));
    assert!(matches!(
        input.send_timeout(2, Duration::from_millis(1)),
        Err(SendError::Timeout(2))
    ));
    let token = CancelToken::new();
    token.cancel();
    assert!(matches!(
        input.send_cancellable(3, &token),
        Err(SendError::Cancelled(3, _))
    ));
    let mut seen = Vec::new();
    let report = std::thread::scope(|s| {
        // This send waits for the run below to start.
        let early = input.clone();
        s.spawn(move || early.send(4).unwrap());
        let late = input.clone();
        s.spawn(move || (5..10).for_each(|i| late.send(i).unwrap()));
        drop(input);
        // The run blocks this thread until the last input is gone and all is drained.
        pipeline
            .stage("id", 2, |x: u64| x)
            .run(|x| seen.push(x))
            .unwrap()
    });
    assert_books_balance(&report);
    seen.sort_unstable();
    assert_eq!(seen, [4, 5, 6, 7, 8, 9]);
}

#[test]
fn a_deadline_join_returns_the_outcome_once_the_run_has_ended() {
    let _check = LeakCheck::new();
    let (input, pipeline) = Pipeline::with_input();
    let running = pipeline
        .try_stage(
            "check",
            1,
            |x: u64| if x == 3 { Err("three") } else { Ok(x) },
        )
        .spawn(|_| {})
        .unwrap();
    for i in 0..5 {
        let _ = input.send(i); // refused once the failure has closed the input
    }
    eventually("the run to end on the failure", || running.is_finished());
    let outcome = running
        .join_deadline(Instant::now() + PATIENCE)
        .expect("the run has ended");
    let err = outcome.unwrap_err();
    assert_eq!(err.stage(), Some("check"));
    assert_books_balance(err.report().unwrap());
    assert!(input.is_closed());
}

#[test]
fn bad_counts_and_extreme_durations_get_named_errors_or_saturate() {
    let _check = LeakCheck::new();
    let config = |err: PipelineError| match err {
        PipelineError::Config(c) => (c.field().to_owned(), c.value().to_owned()),
        other => panic!("{other:?}"),
    };
    let err = Pipeline::from_iter(0..3u32)
        .batch_stage("w", 1, usize::MAX, Duration::ZERO, |v: Vec<u32>| v)
        .run(|_| {})
        .unwrap_err();
    assert_eq!(config(err).0, "max_items");
    let err = Pipeline::from_iter(0..3u32)
        .stage_with_state("s", 0, || (), |_, x: u32| x)
        .run(|_| {})
        .unwrap_err();
    assert_eq!(config(err), ("workers".to_owned(), "0".to_owned()));
    let (_input, pipeline) = Pipeline::<u8>::with_input();
    let err = pipeline.batch(2).spawn(|_| {}).unwrap_err();
    assert_eq!(config(err), ("batch".to_owned(), "2".to_owned()));

    // A wait too long to represent never expires; a zero wait sends every batch at once.
    for wait in [Duration::MAX, Duration::ZERO] {
        let (out, report) = Pipeline::from_iter(0..10u32)
            .batch_stage("w", 2, 4, wait, |v: Vec<u32>| v.len())
            .collect()
            .unwrap();
        assert_eq!(out.iter().sum::<usize>(), 10, "{wait:?}");
        assert_eq!(report.stage("w").unwrap().items_out, 10);
    }
    let (input, pipeline) = Pipeline::with_input();
    let running = pipeline.stage("id", 1, |x: u64| x).spawn(|_| {}).unwrap();
    input.send_timeout(1, Duration::MAX).unwrap();
    input
        .send_deadline(2, Instant::now() + Duration::from_secs(3600))
        .unwrap();
    input.close();
    let report = running
        .join_timeout(Duration::MAX)
        .expect("the input is closed")
        .unwrap();
    assert_eq!(report.delivered(), 2);
}

#[test]
fn the_service_types_are_thread_safe() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<corral::pipeline::Input<u64>>();
    send_sync::<corral::pipeline::RunningPipeline>();
    send_sync::<SendError<u64>>();
}

#[test]
fn a_partial_batch_of_panicking_drops_left_at_a_cancel_is_panicked_not_an_abort() {
    let _check = LeakCheck::new();
    struct Bomb;
    impl Drop for Bomb {
        fn drop(&mut self) {
            panic!("bomb dropped");
        }
    }
    // Endless, and slow after 50 items (a source's own pace: each panicking drop costs).
    let source = (0u32..).map(|i| {
        if i >= 50 {
            std::thread::sleep(Duration::from_millis(1));
        }
        Bomb
    });
    let err = Pipeline::from_iter(source)
        .batch_stage(
            "w",
            1,
            1_000_000,
            Duration::from_secs(3600),
            |b: Vec<Bomb>| {
                std::mem::forget(b);
            },
        )
        .run_timeout(|()| {}, Duration::from_millis(20))
        .unwrap_err();
    match &err {
        PipelineError::Panicked {
            stage,
            panic,
            report,
        } => {
            assert_eq!(stage, "w");
            assert_eq!(panic.message(), Some("bomb dropped"));
            assert_each_stage_balances(report);
        }
        other => panic!("{other:?}"),
    }
}
