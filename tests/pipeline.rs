//! Behaviour of `Pipeline` through the public API: typed stages, backpressure and the
//! memory bound, overflow accounting, first-error cancellation, ordering, the report.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral::leak::LeakCheck;
use corral::{
    cancel::CancelReason,
    pipeline::{PipelineError, PipelineReport},
    CancelToken, Overflow, Pipeline,
};

const PATIENCE: Duration = Duration::from_secs(20);

/// Polls `cond` until it holds; fails the test after a generous deadline.
fn eventually(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

/// Spins (without sleeping) for `d`: a stand-in for CPU work.
fn spin_for(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
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

#[test]
fn typed_stages_borrow_and_deliver_everything() {
    let _check = LeakCheck::new();
    let words = ["alpha", "beta", "gamma", "delta"];
    let lengths: HashMap<&str, usize> = words.iter().map(|w| (*w, w.len())).collect();
    let (mut out, report) = Pipeline::from_iter(0..4000usize)
        .stage("pick", 3, |i| words[i % words.len()])
        .stage("measure", 2, |w: &str| lengths[w])
        .stage("double", 1, |n: usize| n * 2)
        .capacity(8)
        .collect()
        .unwrap();
    assert_eq!(out.len(), 4000);
    out.sort_unstable();
    let expected: usize = (0..4000).map(|i| words[i % 4].len() * 2).sum();
    assert_eq!(out.iter().sum::<usize>(), expected);
    let names: Vec<&str> = report.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["source", "pick", "measure", "double", "sink"]);
    assert_eq!(report.stage("pick").unwrap().workers, 3);
    assert_eq!(report.delivered(), 4000);
    assert_eq!(report.not_processed(), 0);
    assert_books_balance(&report);
}

#[test]
fn threads_are_named_owned_and_joined() {
    let _check = LeakCheck::new();
    let seen = Mutex::new(Vec::new());
    let ours = |t: &corral::leak::LiveThread| t.name.starts_with("corral-pipe-named-check-");
    let report = Pipeline::from_iter(0..64u32)
        .stage("named-check", 2, |x| {
            let name = std::thread::current().name().unwrap().to_owned();
            let live = corral::leak::live_threads();
            let me = live
                .iter()
                .find(|t| t.name == name)
                .expect("registered for leak checks");
            assert_eq!(me.owner, "Pipeline");
            seen.lock().unwrap().push(name);
            x
        })
        .run(|_| {})
        .unwrap();
    assert_eq!(report.delivered(), 64);
    let seen = seen.into_inner().unwrap();
    assert!(
        seen.iter()
            .all(|n| n == "corral-pipe-named-check-0" || n == "corral-pipe-named-check-1"),
        "{seen:?}"
    );
    let still: Vec<_> = corral::leak::live_threads()
        .into_iter()
        .filter(|t| ours(t))
        .collect();
    assert!(still.is_empty(), "threads outlived the run: {still:?}");
}

#[test]
fn the_source_is_pulled_by_the_first_stage_unless_a_policy_drops() {
    let _check = LeakCheck::new();
    let puller = |overflow: Overflow, stages: usize| {
        let names = Mutex::new(Vec::new());
        let source = (0..200u32).inspect(|_| {
            let me = std::thread::current();
            names
                .lock()
                .unwrap()
                .push(me.name().unwrap_or("").to_owned());
        });
        let pipeline = Pipeline::from_iter(source).overflow(overflow);
        let report = match stages {
            0 => pipeline.run(|_| {}),
            _ => pipeline.stage("first", 2, |x| x).run(|_| {}),
        }
        .unwrap();
        assert_eq!(report.stage("source").unwrap().items_out, 200);
        assert_books_balance(&report);
        let mut names = names.into_inner().unwrap();
        names.sort_unstable();
        names.dedup();
        names
    };
    // Backpressure: the first stage's workers pull the source (no source thread).
    for name in puller(Overflow::Block, 1) {
        assert!(name.starts_with("corral-pipe-first-"), "{name}");
    }
    // No stage at all: the caller pulls the source and runs the sink.
    let caller = std::thread::current().name().map(str::to_owned);
    assert_eq!(puller(Overflow::Block, 0), [caller.unwrap_or_default()]);
    // A drop policy keeps a source thread running ahead, so overload is dropped.
    assert_eq!(puller(Overflow::DropNewest, 1), ["corral-pipe-source"]);
    assert_eq!(puller(Overflow::DropOldest, 0), ["corral-pipe-source"]);
}

#[test]
fn a_slow_source_pulled_by_the_first_stage_is_the_bottleneck() {
    let _check = LeakCheck::new();
    let source = (0..300u32).inspect(|_| spin_for(Duration::from_micros(200)));
    let report = Pipeline::from_iter(source)
        .stage("fast", 2, |x| x)
        .capacity(4)
        .run(|_| {})
        .unwrap();
    assert_books_balance(&report);
    assert_eq!(report.bottleneck().unwrap().name, "source", "{report}");
    let source = report.stage("source").unwrap();
    assert!(source.busy >= Duration::from_micros(200 * 300), "{report}");
    assert!(
        source.busy + source.blocked_send <= report.elapsed,
        "{report}"
    );
    // The first stage waited for input while it pulled: that is its idle time.
    assert!(
        report.stage("fast").unwrap().idle_recv >= source.busy,
        "{report}"
    );
}

/// A value that counts how many of its kind are alive, and the most ever alive.
struct Tracked<'a> {
    live: &'a AtomicUsize,
}

impl<'a> Tracked<'a> {
    fn new(live: &'a AtomicUsize, max: &AtomicUsize) -> Self {
        let now = live.fetch_add(1, Ordering::SeqCst) + 1;
        max.fetch_max(now, Ordering::SeqCst);
        Tracked { live }
    }
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs `pipeline` (whose source yields `Tracked` items counted in `live`) with a sink
/// that stays stuck until `bound` items are alive, then takes `delivered` items and
/// cancels. Returns the run's error after checking that it was the cancel, that no
/// item outlived the run and that the books balance.
fn run_with_a_stuck_sink<'a>(
    pipeline: Pipeline<'a, Tracked<'a>>,
    live: &AtomicUsize,
    bound: usize,
    delivered: u64,
) -> PipelineError {
    let token = CancelToken::new();
    let mut seen = 0u64;
    let result = pipeline.run_cancellable(
        |_item| {
            if seen == 0 {
                // Stuck until everything upstream is full and blocked.
                eventually("the pipeline to fill up", || {
                    live.load(Ordering::SeqCst) >= bound
                });
            }
            seen += 1;
            if seen == delivered {
                token.cancel();
            }
        },
        &token,
    );
    let err = result.unwrap_err();
    assert!(
        matches!(
            err,
            PipelineError::Cancelled {
                reason: CancelReason::Cancelled,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(live.load(Ordering::SeqCst), 0, "items outlived the run");
    let report = err.report().unwrap();
    assert_eq!(report.delivered(), delivered);
    assert_books_balance(report);
    err
}

#[test]
fn slow_sink_and_endless_source_stay_within_capacities_plus_workers() {
    let _check = LeakCheck::new();
    let (live, max) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let (capacity, workers) = (4usize, [2usize, 3]);
    // Each queue (2: in front of "b" and of the sink) holds `capacity`; each stage
    // worker and the sink hold one. ("a" pulls the source itself: no queue, no thread.)
    let bound = capacity * 2 + workers.iter().sum::<usize>() + 1;
    let pipeline = Pipeline::from_iter(std::iter::repeat_with(|| Tracked::new(&live, &max)))
        .stage("a", workers[0], |t| t)
        .stage("b", workers[1], |t| t)
        .capacity(capacity);
    let err = run_with_a_stuck_sink(pipeline, &live, bound, 500);
    assert_eq!(
        max.load(Ordering::SeqCst),
        bound,
        "items in flight exceeded the bound"
    );
    assert!(err.report().unwrap().not_processed() > 0);
}

#[test]
fn a_buffer_sizes_the_one_queue_after_the_stage_it_follows() {
    let _check = LeakCheck::new();
    let (live, max) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let (buffer, capacity, workers) = (9usize, 4usize, [2usize, 3]);
    // The queue after "a" holds `buffer`, the one after "b" (in front of the sink)
    // `capacity`; each stage worker and the sink hold one.
    let bound = buffer + capacity + workers.iter().sum::<usize>() + 1;
    let pipeline = Pipeline::from_iter(std::iter::repeat_with(|| Tracked::new(&live, &max)))
        .stage("a", workers[0], |t| t)
        .buffer(buffer)
        .stage("b", workers[1], |t| t)
        .capacity(capacity);
    run_with_a_stuck_sink(pipeline, &live, bound, 300);
    assert_eq!(
        max.load(Ordering::SeqCst),
        bound,
        "the buffer was not used as sized"
    );
}

#[test]
fn a_buffer_below_the_batch_or_zero_is_a_config_error() {
    for (buffer, batch) in [(0usize, 1usize), (4, 8)] {
        let err = Pipeline::from_iter(0..10)
            .stage("a", 1, |x| x)
            .buffer(buffer)
            .capacity(16)
            .batch(batch)
            .run(|_| {})
            .unwrap_err();
        match err {
            PipelineError::Config(config) => {
                assert_eq!(
                    (config.field(), config.value()),
                    ("buffer", &*buffer.to_string())
                );
            }
            other => panic!("expected a config error, got {other}"),
        }
    }
}

#[test]
fn batching_keeps_the_bound_counted_in_items() {
    let _check = LeakCheck::new();
    let live = AtomicUsize::new(0);
    let max = AtomicUsize::new(0);
    let token = CancelToken::new();
    let (capacity, batch, workers) = (16usize, 4usize, 2usize);
    // One queue of `capacity` items (in front of the sink; "a" pulls the source
    // itself); each worker and the sink hold a batch.
    let bound = capacity + (workers + 1) * batch;
    let mut delivered = 0u64;
    let err = Pipeline::from_iter(std::iter::repeat_with(|| Tracked::new(&live, &max)))
        .stage("a", workers, |t| t)
        .capacity(capacity)
        .batch(batch)
        .run_cancellable(
            |_| {
                if delivered == 0 {
                    eventually("the pipeline to fill up", || {
                        live.load(Ordering::SeqCst) >= bound - batch
                    });
                }
                delivered += 1;
                if delivered == 1000 {
                    token.cancel();
                }
            },
            &token,
        )
        .unwrap_err();
    assert!(err.is_cancelled());
    assert!(
        max.load(Ordering::SeqCst) <= bound,
        "{} > {bound}",
        max.load(Ordering::SeqCst)
    );
    assert_eq!(live.load(Ordering::SeqCst), 0);
    assert_books_balance(err.report().unwrap());
}

fn overflow_accounting(policy: Overflow) {
    let _check = LeakCheck::new();
    let dropped_at: Vec<Mutex<Vec<u64>>> = (0..3).map(|_| Mutex::new(Vec::new())).collect();
    let drops = AtomicU64::new(0);
    let note = |queue: usize| {
        let (dropped_at, drops) = (&dropped_at, &drops);
        move |x: u64| {
            dropped_at[queue].lock().unwrap().push(x);
            drops.fetch_add(1, Ordering::SeqCst);
        }
    };
    let mut delivered = Vec::new();
    let n = 20_000u64;
    let report = Pipeline::from_iter(0..n)
        .on_drop(note(0))
        .stage("a", 2, |x: u64| x)
        .on_drop(note(1))
        .stage("b", 2, |x: u64| x)
        .on_drop(note(2))
        .capacity(2)
        .overflow(policy)
        .run(|x| {
            if delivered.is_empty() {
                eventually("drops", || drops.load(Ordering::SeqCst) >= 10);
            }
            delivered.push(x);
        })
        .unwrap();
    assert_books_balance(&report);
    let stage_drops: Vec<u64> = ["a", "b", "sink"]
        .iter()
        .map(|s| report.stage(s).unwrap().dropped)
        .collect();
    for (queue, want) in stage_drops.iter().enumerate() {
        assert_eq!(
            dropped_at[queue].lock().unwrap().len() as u64,
            *want,
            "queue {queue}"
        );
    }
    assert!(report.dropped() >= 10);
    assert_eq!(report.dropped() + report.delivered(), n);
    // Every item is either delivered or handed to on_drop, exactly once.
    let mut all = delivered;
    for d in &dropped_at {
        all.extend(d.lock().unwrap().iter().copied());
    }
    all.sort_unstable();
    assert_eq!(all, (0..n).collect::<Vec<_>>());
}

#[test]
fn drop_newest_counts_and_hands_back_every_dropped_item() {
    overflow_accounting(Overflow::DropNewest);
}

#[test]
fn drop_oldest_counts_and_hands_back_every_evicted_item() {
    overflow_accounting(Overflow::DropOldest);
}

#[test]
fn a_named_pipeline_names_itself_in_its_errors_and_reports() {
    let _check = LeakCheck::new();
    let err = Pipeline::from_iter(0..10u32)
        .name("ingest")
        .try_stage("parse", 1, |x: u32| if x == 3 { Err("bad") } else { Ok(x) })
        .run(|_| {})
        .unwrap_err();
    assert_eq!(err.to_string(), "pipeline ingest: stage parse failed");
    assert_eq!(err.report().unwrap().name.as_deref(), Some("ingest"));
    let report = Pipeline::from_iter(0..3u32)
        .name("ingest")
        .run(|_| {})
        .unwrap();
    assert_eq!(report.name.as_deref(), Some("ingest"));
    let unnamed = Pipeline::from_iter(0..3u32).run(|_| {}).unwrap();
    assert_eq!(unnamed.name, None);
}

#[test]
fn first_error_cancels_an_endless_run_promptly() {
    let _check = LeakCheck::new();
    let pulled = AtomicU64::new(0);
    let source = std::iter::repeat_with(|| pulled.fetch_add(1, Ordering::SeqCst));
    let err = Pipeline::from_iter(source)
        .stage("parse", 3, |x: u64| x)
        .try_stage("enrich", 2, |x: u64| {
            if x == 100 {
                Err(format!("bad item {x}"))
            } else {
                Ok(x)
            }
        })
        .stage("after", 2, |x: u64| x)
        .capacity(8)
        .run(|_| {})
        .unwrap_err();
    assert_eq!(err.stage(), Some("enrich"));
    assert_eq!(err.to_string(), "stage enrich failed");
    assert_eq!(
        std::error::Error::source(&err).map(|e| e.to_string()),
        Some("bad item 100".to_string())
    );
    match &err {
        PipelineError::Failed { error, .. } => assert_eq!(error.to_string(), "bad item 100"),
        other => panic!("unexpected {other:?}"),
    }
    let report = err.report().unwrap();
    assert_books_balance(report);
    assert_eq!(report.stage("enrich").unwrap().failed, 1);
    // The source stopped: it pulled what fit in the pipeline, not an endless stream.
    let source = report.stage("source").unwrap();
    assert_eq!(source.items_in, pulled.load(Ordering::SeqCst));
    assert!(source.items_in < 1_000_000);
}

#[test]
fn typed_errors_can_be_downcast() {
    #[derive(Debug, PartialEq)]
    struct BadRecord(u32);
    impl std::fmt::Display for BadRecord {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "bad record {}", self.0)
        }
    }
    impl std::error::Error for BadRecord {}
    let _check = LeakCheck::new();
    let err = Pipeline::from_iter(0..10u32)
        .try_stage(
            "check",
            1,
            |x| if x == 7 { Err(BadRecord(x)) } else { Ok(x) },
        )
        .collect()
        .unwrap_err();
    let PipelineError::Failed { error, .. } = err else {
        panic!("expected Failed")
    };
    assert_eq!(error.downcast_ref::<BadRecord>(), Some(&BadRecord(7)));
}

#[test]
fn panics_anywhere_become_panicked_with_the_payload() {
    let _check = LeakCheck::new();
    let err = Pipeline::from_iter(0..1000u32)
        .stage("ok", 2, |x| x)
        .stage(
            "boom",
            2,
            |x: u32| if x == 500 { panic!("boom at {x}") } else { x },
        )
        .run(|_| {})
        .unwrap_err();
    let PipelineError::Panicked {
        stage,
        panic,
        report,
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(stage, "boom");
    assert_eq!(panic.message(), Some("boom at 500"));
    assert!(panic
        .thread_name()
        .unwrap()
        .starts_with("corral-pipe-boom-"));
    assert_books_balance(report);

    let sink_err = Pipeline::from_iter(0..10)
        .run(|x| assert!(x < 3, "sink saw {x}"))
        .unwrap_err();
    assert_eq!(sink_err.stage(), Some("sink"));
    assert_books_balance(sink_err.report().unwrap());

    let mut n = 0;
    let source = std::iter::from_fn(|| {
        n += 1;
        assert!(n < 5, "source ran dry");
        Some(n)
    });
    let source_err = Pipeline::from_iter(source)
        .stage("id", 1, |x| x)
        .run(|_| {})
        .unwrap_err();
    assert_eq!(source_err.stage(), Some("source"));
    assert_books_balance(source_err.report().unwrap());
}

#[test]
fn a_failing_sink_stops_the_run() {
    let _check = LeakCheck::new();
    let mut seen = 0;
    let err = Pipeline::from_iter(0..)
        .stage("id", 2, |x: u64| x)
        .try_for_each(|_| {
            seen += 1;
            if seen == 50 {
                Err("disk full")
            } else {
                Ok(())
            }
        })
        .unwrap_err();
    assert_eq!(err.to_string(), "stage sink failed");
    assert_eq!(
        std::error::Error::source(&err).map(|e| e.to_string()),
        Some("disk full".to_string())
    );
    let report = err.report().unwrap();
    assert_eq!(report.delivered(), 49);
    assert_books_balance(report);
}

#[test]
fn cancel_from_another_thread_wakes_a_blocked_run() {
    let _check = LeakCheck::new();
    let token = CancelToken::new();
    let release = AtomicBool::new(false);
    let entered = AtomicBool::new(false);
    std::thread::scope(|s| {
        let canceller = s.spawn(|| {
            eventually("the sink to start", || entered.load(Ordering::SeqCst));
            token.cancel();
            release.store(true, Ordering::SeqCst);
        });
        let err = Pipeline::from_iter(0..)
            .stage("id", 2, |x: u64| x)
            .capacity(4)
            .run_cancellable(
                |_| {
                    entered.store(true, Ordering::SeqCst);
                    eventually("the cancel", || release.load(Ordering::SeqCst));
                },
                &token,
            )
            .unwrap_err();
        canceller.join().unwrap();
        assert!(matches!(
            err,
            PipelineError::Cancelled {
                reason: CancelReason::Cancelled,
                ..
            }
        ));
        let report = err.report().unwrap();
        assert_eq!(report.delivered(), 1);
        assert!(
            report.not_processed() > 0,
            "queued items count as not processed"
        );
        assert_books_balance(report);
    });
}

#[test]
fn deadline_and_timeout_forms_stop_an_endless_run() {
    let _check = LeakCheck::new();
    let err = Pipeline::from_iter(0..)
        .stage("id", 2, |x: u64| x)
        .run_timeout(|_| {}, Duration::from_millis(30))
        .unwrap_err();
    assert!(
        matches!(
            err,
            PipelineError::Cancelled {
                reason: CancelReason::DeadlineExceeded,
                ..
            }
        ),
        "{err}"
    );
    assert_books_balance(err.report().unwrap());

    let err = Pipeline::from_iter(0..)
        .stage("id", 1, |x: u64| x)
        .collect_deadline(
            Instant::now()
                .checked_add(Duration::from_millis(30))
                .unwrap(),
        )
        .unwrap_err();
    assert_eq!(err.to_string(), "pipeline stopped: deadline exceeded");

    // A deadline that is not reached does not disturb a finite run.
    let (out, _) = Pipeline::from_iter(0..100)
        .collect_timeout(PATIENCE)
        .unwrap();
    assert_eq!(out.len(), 100);
    let token = CancelToken::new();
    let (out, _) = Pipeline::from_iter(0..100)
        .collect_cancellable(&token)
        .unwrap();
    assert_eq!(out.len(), 100);
}

#[test]
fn a_cancelled_token_stops_the_run_before_it_starts_pulling_much() {
    let _check = LeakCheck::new();
    let token = CancelToken::new();
    token.cancel();
    let err = Pipeline::from_iter(0..)
        .stage("id", 1, |x: u64| x)
        .run_cancellable(|_| {}, &token)
        .unwrap_err();
    assert!(err.is_cancelled());
    assert_eq!(err.report().unwrap().delivered(), 0);
}

#[test]
fn ordered_mode_restores_source_order_across_workers() {
    let _check = LeakCheck::new();
    let (out, report) = Pipeline::from_iter(0..3000u64)
        .stage("jitter", 4, |x| {
            // Uneven work so that workers overtake each other.
            spin_for(Duration::from_micros(x % 7 * 3));
            x
        })
        .stage("square", 3, |x| x * x)
        .capacity(8)
        .ordered()
        .collect()
        .unwrap();
    assert_eq!(out, (0..3000u64).map(|x| x * x).collect::<Vec<_>>());
    assert_books_balance(&report);
}

#[test]
fn ordered_window_bounds_how_far_the_source_runs_ahead() {
    let _check = LeakCheck::new();
    let window = 4u64;
    let pulled = AtomicU64::new(0);
    let delivered = AtomicU64::new(0);
    let processed = AtomicU64::new(0);
    let worst = AtomicU64::new(0);
    let source = (0..200u64).inspect(|_| {
        let ahead = pulled.fetch_add(1, Ordering::SeqCst) + 1 - delivered.load(Ordering::SeqCst);
        worst.fetch_max(ahead, Ordering::SeqCst);
    });
    let mut out = Vec::new();
    Pipeline::from_iter(source)
        .stage("slow-first", 4, |x| {
            if x == 0 {
                // Item 0 waits for later ones, so they arrive at the sink out of order.
                eventually("items 1..4 to pass", || {
                    processed.load(Ordering::SeqCst) >= 3
                });
            }
            processed.fetch_add(1, Ordering::SeqCst);
            x
        })
        .capacity(64)
        .ordered_window(window as usize)
        .run(|x| {
            out.push(x);
            delivered.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    assert_eq!(out, (0..200).collect::<Vec<_>>());
    assert_eq!(
        worst.load(Ordering::SeqCst),
        window,
        "the source ran more than the window ahead"
    );
}

#[test]
fn ordered_mode_with_drops_never_waits_for_a_dropped_item() {
    for policy in [Overflow::DropNewest, Overflow::DropOldest] {
        let _check = LeakCheck::new();
        let mut out = Vec::new();
        let report = Pipeline::from_iter(0..5000u64)
            .stage("a", 3, |x| x)
            .stage("b", 2, |x| x)
            .capacity(2)
            .overflow(policy)
            .ordered()
            .run(|x| out.push(x))
            .unwrap();
        assert!(
            out.windows(2).all(|w| w[0] < w[1]),
            "{policy:?}: out of order"
        );
        assert_eq!(report.delivered() + report.dropped(), 5000);
        assert_eq!(out.len() as u64, report.delivered());
        assert_books_balance(&report);
    }
}

#[test]
fn batching_gives_the_same_results() {
    let _check = LeakCheck::new();
    for batch in [1, 3, 16, 64] {
        let (out, report) = Pipeline::from_iter(0..1001u32)
            .stage("inc", 2, |x| x + 1)
            .stage("dbl", 3, |x| x * 2)
            .capacity(64)
            .batch(batch)
            .ordered()
            .collect()
            .unwrap();
        assert_eq!(
            out,
            (1..=1001).map(|x| x * 2).collect::<Vec<_>>(),
            "batch {batch}"
        );
        assert_books_balance(&report);
    }
}

#[test]
fn failure_inside_a_batch_balances_the_books() {
    let _check = LeakCheck::new();
    let err = Pipeline::from_iter(0..10_000u32)
        .try_stage("check", 2, |x| if x == 777 { Err("bad") } else { Ok(x) })
        .batch(10)
        .capacity(40)
        .run(|_| {})
        .unwrap_err();
    let report = err.report().unwrap();
    assert_eq!(report.stage("check").unwrap().failed, 1);
    assert_books_balance(report);
}

#[test]
fn report_names_the_bottleneck_and_prints_a_table() {
    let _check = LeakCheck::new();
    let report = Pipeline::from_iter(0..300u32)
        .stage("fast", 1, |x| x)
        .stage("slow", 1, |x| {
            spin_for(Duration::from_micros(200));
            x
        })
        .stage("fast2", 1, |x| x)
        .capacity(4)
        .run(|_| {})
        .unwrap();
    assert_eq!(report.bottleneck().unwrap().name, "slow", "{report}");
    let slow = report.stage("slow").unwrap();
    assert!(slow.busy >= Duration::from_micros(200 * 300));
    // A one-worker stage's busy, blocked and idle times are disjoint parts of its
    // thread's life inside the run. (Which waits dominate elsewhere depends on the
    // scheduler: on a loaded machine wake-ups alone can take milliseconds.)
    for s in &report.stages {
        let accounted = s.busy + s.blocked_send + s.idle_recv;
        assert!(
            accounted <= report.elapsed,
            "{}: {accounted:?} > {:?}",
            s.name,
            report.elapsed
        );
        if s.name != "slow" {
            assert!(s.utilization() < slow.utilization(), "{report}");
        }
    }
    let table = report.to_string();
    assert!(table.starts_with("stage"), "{table}");
    assert!(table.contains("bottleneck: slow"), "{table}");
    assert_eq!(table.lines().count(), 1 + 5 + 1, "{table}");
}

#[test]
fn bad_configuration_is_rejected_with_field_and_value() {
    let _check = LeakCheck::new();
    let cases: Vec<(Result<PipelineReport, PipelineError>, &str, &str)> = vec![
        (
            Pipeline::from_iter(0..1)
                .stage("w", 0, |x: i32| x)
                .run(|_| {}),
            "workers",
            "0",
        ),
        (
            Pipeline::from_iter(0..1).capacity(0).run(|_| {}),
            "capacity",
            "0",
        ),
        (Pipeline::from_iter(0..1).batch(0).run(|_| {}), "batch", "0"),
        (
            Pipeline::from_iter(0..1).capacity(4).batch(5).run(|_| {}),
            "batch",
            "5",
        ),
        (
            Pipeline::from_iter(0..1)
                .overflow(Overflow::Reject)
                .run(|_| {}),
            "overflow",
            "Reject",
        ),
        (
            Pipeline::from_iter(0..1)
                .overflow(Overflow::CallerRuns)
                .run(|_| {}),
            "overflow",
            "CallerRuns",
        ),
        (
            Pipeline::from_iter(0..1).ordered_window(0).run(|_| {}),
            "ordered_window",
            "0",
        ),
        (
            Pipeline::from_iter(0..1)
                .stage("sink", 1, |x: i32| x)
                .run(|_| {}),
            "name",
            "\"sink\"",
        ),
        (
            Pipeline::from_iter(0..1)
                .stage("", 1, |x: i32| x)
                .run(|_| {}),
            "name",
            "\"\"",
        ),
        (
            Pipeline::from_iter(0..1)
                .stage("a", 1, |x: i32| x)
                .stage("a", 1, |x| x)
                .run(|_| {}),
            "name",
            "\"a\"",
        ),
    ];
    for (result, field, value) in cases {
        match result {
            Err(PipelineError::Config(e)) => {
                assert_eq!((e.field(), e.value()), (field, value));
                assert!(e.to_string().starts_with(&format!("invalid {field}")));
            }
            other => panic!("expected a config error for {field}, got {other:?}"),
        }
    }
    let err = Pipeline::from_iter(0..1)
        .capacity(0)
        .run(|_| {})
        .unwrap_err();
    assert!(err.report().is_none());
    assert_eq!(err.to_string(), "pipeline not started");
    assert_eq!(
        std::error::Error::source(&err).map(|e| e.to_string()),
        Some("invalid capacity = 0: must be at least 1".to_string())
    );
}

#[test]
fn an_empty_source_finishes_cleanly() {
    let _check = LeakCheck::new();
    let (out, report) = Pipeline::from_iter(Vec::<u8>::new())
        .stage("id", 2, |x| x)
        .ordered()
        .collect()
        .unwrap();
    assert!(out.is_empty());
    assert_eq!(report.stages.iter().map(|s| s.items_in).sum::<u64>(), 0);
}

#[test]
fn public_types_are_thread_safe_where_promised() {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}
    send_sync::<PipelineReport>();
    send_sync::<corral::pipeline::StageStats>();
    send_sync::<PipelineError>();
    send::<Pipeline<'static, u64>>();
}

#[test]
fn stress_invariants_over_many_configurations() {
    let _check = LeakCheck::new();
    let policies = [Overflow::Block, Overflow::DropNewest, Overflow::DropOldest];
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for round in 0..24 {
        let policy = policies[round % 3];
        let ordered = round % 2 == 0;
        let capacity = 1 + next(8) as usize;
        let batch = 1 + next(capacity as u64) as usize;
        let workers = [1 + next(4) as usize, 1 + next(4) as usize];
        let fail_at = (round % 4 == 3).then(|| next(3000));
        let n = 3000u64;
        let dropped = Mutex::new(Vec::new());
        let mut out = Vec::new();
        let mut pipeline = Pipeline::from_iter(0..n)
            .on_drop(|x| dropped.lock().unwrap().push(x))
            .stage("a", workers[0], |x: u64| x)
            .on_drop(|x| dropped.lock().unwrap().push(x))
            .try_stage("b", workers[1], |x: u64| {
                if Some(x) == fail_at {
                    Err("injected")
                } else {
                    Ok(x)
                }
            })
            .on_drop(|x| dropped.lock().unwrap().push(x))
            .capacity(capacity)
            .batch(batch)
            .overflow(policy);
        if ordered {
            pipeline = pipeline.ordered();
        }
        let what = format!("round {round}: {policy:?} ordered={ordered} cap={capacity} batch={batch} workers={workers:?} fail_at={fail_at:?}");
        let result = pipeline.run(|x| out.push(x));
        let report = match (&result, fail_at) {
            (Ok(report), None) => report,
            (Err(e @ PipelineError::Failed { .. }), Some(_)) => e.report().unwrap(),
            (Ok(report), Some(_)) if policy != Overflow::Block => report, // the bad item was dropped
            (other, _) => panic!("{what}: {other:?}"),
        };
        assert_books_balance(report);
        if ordered {
            assert!(out.windows(2).all(|w| w[0] < w[1]), "{what}: out of order");
        }
        let mut seen = out.clone();
        seen.extend(dropped.lock().unwrap().iter().copied());
        seen.sort_unstable();
        let unique = seen.windows(2).all(|w| w[0] != w[1]);
        assert!(unique, "{what}: an item was delivered or dropped twice");
        assert_eq!(report.delivered(), out.len() as u64, "{what}");
        assert_eq!(
            report.dropped(),
            dropped.lock().unwrap().len() as u64,
            "{what}"
        );
        if result.is_ok() {
            assert_eq!(seen, (0..n).collect::<Vec<_>>(), "{what}: items lost");
        }
        if policy == Overflow::Block {
            assert_eq!(report.dropped(), 0, "{what}");
        }
    }
}

#[test]
fn stage_closures_can_share_state_through_arc_too() {
    let _check = LeakCheck::new();
    let hits = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&hits);
    let report = Pipeline::from_iter(0..100)
        .stage("count", 4, move |x: i32| {
            counter.fetch_add(1, Ordering::Relaxed);
            x
        })
        .run(drop)
        .unwrap();
    assert_eq!(hits.load(Ordering::Relaxed), 100);
    assert_eq!(report.stage("count").unwrap().items_out, 100);
}

// ---- Hostile use: panicking drops, odd sizes, races, re-entrancy ----

/// An item whose `Drop` panics while armed (and not already unwinding).
struct Bomb {
    n: u64,
    armed: bool,
}

impl Bomb {
    fn armed(n: u64) -> Self {
        Bomb { n, armed: true }
    }

    fn defuse(mut self) -> u64 {
        self.armed = false;
        self.n
    }
}

impl Drop for Bomb {
    fn drop(&mut self) {
        if self.armed && !std::thread::panicking() {
            panic!("bomb {} went off", self.n);
        }
    }
}

/// Runs `f` on a helper thread and fails (instead of hanging the test binary) if it
/// does not return within `PATIENCE`.
fn within_patience<R: Send + 'static>(what: &str, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = std::sync::mpsc::channel();
    let helper = std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(PATIENCE) {
        Ok(result) => {
            helper.join().unwrap();
            match result {
                Ok(r) => r,
                Err(p) => std::panic::resume_unwind(p),
            }
        }
        Err(_) => panic!("{what}: the run hung"),
    }
}

fn expect_panicked(err: &PipelineError, stage: &str, message_part: &str) {
    match err {
        PipelineError::Panicked {
            stage: s,
            panic,
            report,
        } => {
            assert_eq!(s, stage, "{err:?}");
            assert!(
                panic.message().unwrap_or("").contains(message_part),
                "{:?}",
                panic.message()
            );
            assert_books_balance(report);
        }
        other => panic!("expected Panicked in {stage}, got {other:?}"),
    }
}

#[test]
fn a_panicking_item_drop_does_not_hang_the_pipeline() {
    let _check = LeakCheck::new();
    let err = within_patience("discard on cancel", || {
        let token = CancelToken::new();
        Pipeline::from_iter((0..10_000).map(Bomb::armed))
            .stage("pass", 1, |b: Bomb| b)
            .stage("only", 1, |b: Bomb| b)
            .capacity(1)
            .run_cancellable(
                |b| {
                    b.defuse();
                    token.cancel();
                },
                &token,
            )
            .unwrap_err()
    });
    // Whoever discarded an item first after the cancel (a stage's only worker, or the
    // sink draining its queue) reports the panic; the run ends either way.
    assert!(
        matches!(err.stage(), Some("pass" | "only" | "sink")),
        "{err:?}"
    );
    expect_panicked(&err, err.stage().unwrap_or(""), "went off");
}

/// An armed item that raises `went_off` just before its `Drop` panics, so a test can
/// hold a consumer until the run has discarded one (instead of hoping it sheds).
struct FlagBomb<'a> {
    went_off: &'a AtomicBool,
    armed: bool,
}

impl<'a> FlagBomb<'a> {
    fn armed(went_off: &'a AtomicBool) -> Self {
        FlagBomb {
            went_off,
            armed: true,
        }
    }

    fn defuse(mut self) {
        self.armed = false;
    }
}

impl Drop for FlagBomb<'_> {
    fn drop(&mut self) {
        if self.armed && !std::thread::panicking() {
            self.went_off.store(true, Ordering::SeqCst);
            panic!("flag bomb went off");
        }
    }
}

#[test]
fn a_panicking_drop_of_a_shed_item_without_on_drop_is_panicked() {
    let _check = LeakCheck::new();
    for policy in [Overflow::DropNewest, Overflow::DropOldest] {
        let err = within_patience("shed", move || {
            let went_off = AtomicBool::new(false);
            Pipeline::from_iter(std::iter::repeat_with(|| FlagBomb::armed(&went_off)))
                .capacity(1)
                .overflow(policy)
                .run(|b| {
                    b.defuse();
                    // Hold the sink until the full queue in front of it shed an item.
                    eventually("an item to be shed", || went_off.load(Ordering::SeqCst));
                })
                .unwrap_err()
        });
        expect_panicked(&err, "sink", "flag bomb went off");
        assert!(err.report().unwrap().dropped() >= 1, "{policy:?}");
    }
}

#[test]
fn a_panicking_drop_of_an_evicted_item_with_on_drop_is_panicked() {
    let _check = LeakCheck::new();
    let err = within_patience("on_drop", || {
        let went_off = AtomicBool::new(false);
        Pipeline::from_iter(std::iter::repeat_with(|| FlagBomb::armed(&went_off)))
            .on_drop(|b: FlagBomb<'_>| drop(b))
            .capacity(1)
            .overflow(Overflow::DropOldest)
            .run(|b| {
                b.defuse();
                eventually("an item to be evicted", || went_off.load(Ordering::SeqCst));
            })
            .unwrap_err()
    });
    expect_panicked(&err, "sink", "flag bomb went off");
}

/// A value whose `Drop` panics: stands for a closure, an iterator or a callback that
/// captured one.
struct DropBomb(&'static str);

impl Drop for DropBomb {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("{} dropped", self.0);
        }
    }
}

#[test]
fn a_panicking_drop_of_the_source_iterator_is_panicked_in_source() {
    let _check = LeakCheck::new();
    for policy in [Overflow::Block, Overflow::DropNewest] {
        let err = within_patience("source drop", move || {
            let bomb = DropBomb("source");
            let source = (0..100u32).inspect(move |_| {
                let _ = &bomb;
            });
            Pipeline::from_iter(source)
                .stage("id", 2, |x| x)
                .overflow(policy)
                .run(|_| {})
                .unwrap_err()
        });
        expect_panicked(&err, "source", "source dropped");
        assert_eq!(err.report().unwrap().stages[0].items_out, 100, "{policy:?}");
    }
    // With no stage, the caller pulls the source.
    let bomb = DropBomb("source");
    let err = Pipeline::from_iter((0..3u32).inspect(move |_| {
        let _ = &bomb;
    }))
    .run(|_| {})
    .unwrap_err();
    expect_panicked(&err, "source", "source dropped");
}

#[test]
fn a_panicking_drop_of_a_stage_closure_is_panicked_in_that_stage() {
    let _check = LeakCheck::new();
    let err = within_patience("closure drop", || {
        let bomb = DropBomb("closure");
        Pipeline::from_iter(0..100u32)
            .stage("id", 1, |x| x)
            .stage("armed", 3, move |x| {
                let _ = &bomb;
                x
            })
            .run(|_| {})
            .unwrap_err()
    });
    expect_panicked(&err, "armed", "closure dropped");
    // The closure goes when the stage is done; the cancel may still catch items on
    // their way to the sink.
    let report = err.report().unwrap();
    assert_eq!(report.stage("armed").unwrap().items_out, 100);
    assert_eq!(report.delivered() + report.not_processed(), 100);
}

#[test]
fn a_panicking_drop_of_the_sink_is_panicked_in_sink() {
    let _check = LeakCheck::new();
    let bomb = DropBomb("sink");
    let err = Pipeline::from_iter(0..10u32)
        .stage("id", 1, |x| x)
        .run(move |_| {
            let _ = &bomb;
        })
        .unwrap_err();
    expect_panicked(&err, "sink", "sink dropped");
    assert_eq!(err.report().unwrap().delivered(), 10);
}

#[test]
fn a_panicking_drop_of_the_on_drop_callback_is_panicked() {
    let _check = LeakCheck::new();
    let err = within_patience("on_drop drop", || {
        let bomb = DropBomb("on_drop");
        Pipeline::from_iter(0..100u32)
            .stage("id", 1, |x| x)
            .on_drop(move |_| {
                let _ = &bomb;
            })
            .capacity(1)
            .overflow(Overflow::DropNewest)
            .run(|_| {})
            .unwrap_err()
    });
    expect_panicked(&err, "sink", "on_drop dropped");
}

#[test]
fn a_panicking_on_drop_callback_is_panicked_and_the_run_ends() {
    let _check = LeakCheck::new();
    let err = within_patience("on_drop panic", || {
        let called = AtomicBool::new(false);
        Pipeline::from_iter(0u32..)
            .on_drop(|x| {
                called.store(true, Ordering::SeqCst);
                panic!("on_drop got {x}")
            })
            .stage("id", 1, |x| {
                // Hold the stage until the full queue in front of it evicted an item.
                eventually("an eviction", || called.load(Ordering::SeqCst));
                x
            })
            .capacity(1)
            .overflow(Overflow::DropOldest)
            .run(|_| {})
            .unwrap_err()
    });
    expect_panicked(&err, "id", "on_drop got");
}

#[test]
fn a_panicking_drop_of_collected_output_after_a_cancel_is_panicked() {
    let _check = LeakCheck::new();
    let token = CancelToken::new();
    let seen = AtomicU64::new(0);
    let err = Pipeline::from_iter((0..1000).map(Bomb::armed))
        .stage("id", 1, |b: Bomb| {
            if seen.fetch_add(1, Ordering::SeqCst) == 5 {
                token.cancel();
            }
            b
        })
        .collect_cancellable(&token)
        .map(|(out, _)| out.into_iter().map(Bomb::defuse).count())
        .unwrap_err();
    // The items collected before the cancel are dropped with the partial output.
    expect_panicked(&err, "sink", "went off");
}

#[test]
fn failures_that_lose_the_race_are_dropped_inside_the_boundary() {
    /// An error whose `Drop` panics.
    #[derive(Debug)]
    struct Loud;
    impl std::fmt::Display for Loud {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("loud")
        }
    }
    impl std::error::Error for Loud {}
    impl Drop for Loud {
        fn drop(&mut self) {
            if !std::thread::panicking() {
                panic!("loud error dropped");
            }
        }
    }
    let _check = LeakCheck::new();
    let err = within_patience("error storm", || {
        Pipeline::from_iter(0..100_000u32)
            .try_stage("storm", 8, |_x| Err::<u32, _>(Loud))
            .capacity(4)
            .run(|_| {})
            .unwrap_err()
    });
    let PipelineError::Failed { stage, report, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(stage, "storm");
    assert_books_balance(report);
    let storm = report.stage("storm").unwrap();
    assert!((1..=8).contains(&storm.failed), "{storm:?}");
    // The reported error is the user's: dropping it is the user's business.
    std::mem::forget(err);
}

#[test]
fn a_source_panic_halfway_through_a_batch_counts_the_partial_batch() {
    let _check = LeakCheck::new();
    for policy in [Overflow::Block, Overflow::DropNewest] {
        let mut n = 0u32;
        let source = std::iter::from_fn(move || {
            n += 1;
            assert!(n != 11, "source broke at {n}");
            Some(n)
        });
        let err = Pipeline::from_iter(source)
            .stage("id", 1, |x| x)
            .batch(4)
            .capacity(64)
            .overflow(policy)
            .run(|_| {})
            .unwrap_err();
        expect_panicked(&err, "source", "source broke at 11");
        let source = &err.report().unwrap().stages[0];
        // 8 items in two batches went out; 9 and 10 were pulled, then `next` panicked.
        assert_eq!(
            (
                source.items_in,
                source.items_out,
                source.failed,
                source.not_processed
            ),
            (11, 8, 1, 2),
            "{policy:?}"
        );
    }
}

/// An item whose `Drop` panics even while the thread is unwinding (where a second
/// panic aborts the process): only a drop outside any unwinding survives it.
struct HardBomb(u64);

impl HardBomb {
    fn defuse(self) -> u64 {
        let n = self.0;
        std::mem::forget(self);
        n
    }
}

impl Drop for HardBomb {
    fn drop(&mut self) {
        panic!("hard bomb {} went off", self.0);
    }
}

#[test]
fn a_panicking_stage_amid_a_batch_of_panicking_drops_does_not_abort() {
    let _check = LeakCheck::new();
    let err = within_patience("batch", || {
        Pipeline::from_iter((0..64).map(HardBomb))
            .stage("boom", 1, |b: HardBomb| {
                let n = b.defuse();
                assert!(n != 2, "stage broke");
                n
            })
            .batch(8)
            .run(|_| {})
            .unwrap_err()
    });
    // Items 3..8 of the batch were dropped by the pipeline, after the unwinding.
    expect_panicked(&err, "boom", "stage broke");
}

#[test]
fn a_failing_sink_amid_a_batch_of_panicking_drops_does_not_abort() {
    let _check = LeakCheck::new();
    let err = within_patience("sink batch", || {
        Pipeline::from_iter((0..64).map(Bomb::armed))
            .stage("id", 1, |b: Bomb| b)
            .batch(8)
            .try_for_each(|b| {
                if b.n == 2 {
                    b.defuse();
                    return Err("sink full");
                }
                b.defuse();
                Ok(())
            })
            .unwrap_err()
    });
    let PipelineError::Failed { stage, report, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(stage, "sink");
    assert_books_balance(report);
}

#[test]
fn ordered_mode_with_panicking_drops_in_the_reorder_window_ends() {
    let _check = LeakCheck::new();
    let err = within_patience("ordered", || {
        let token = CancelToken::new();
        let stuck = AtomicBool::new(true);
        let (start, ahead) = (Instant::now(), AtomicU64::new(0));
        Pipeline::from_iter((0..1000).map(Bomb::armed))
            .stage("work", 4, |b: Bomb| {
                if b.n == 0 {
                    // Hold item 0 until the others piled up in the reorder window.
                    while stuck.load(Ordering::SeqCst) {
                        if ahead.load(Ordering::SeqCst) >= 8 || start.elapsed() > PATIENCE {
                            break;
                        }
                        std::thread::yield_now();
                    }
                    token.cancel();
                } else {
                    ahead.fetch_add(1, Ordering::SeqCst);
                }
                b
            })
            .ordered_window(16)
            .run_cancellable(
                |b| {
                    b.defuse();
                },
                &token,
            )
            .unwrap_err()
    });
    match &err {
        PipelineError::Panicked { panic, report, .. } => {
            assert!(panic.message().unwrap().contains("went off"));
            assert_books_balance(report);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_source_blocked_while_the_run_is_cancelled_ends_when_it_returns() {
    let _check = LeakCheck::new();
    let token = CancelToken::new();
    let (feed, items) = std::sync::mpsc::sync_channel::<u32>(0);
    std::thread::scope(|s| {
        let token2 = token.clone();
        let feeder = s.spawn(move || {
            feed.send(1).unwrap();
            // The source is now blocked in `next()` waiting for the second item.
            token2.cancel();
            let _ = feed.send(2);
        });
        let err = Pipeline::from_iter(std::iter::from_fn(move || items.recv().ok()))
            .stage("id", 2, |x| x)
            .run_cancellable(|_| {}, &token)
            .unwrap_err();
        feeder.join().unwrap();
        assert!(err.is_cancelled(), "{err:?}");
        let report = err.report().unwrap();
        assert_books_balance(report);
        assert!(report.stages[0].items_in <= 2);
    });
}

#[test]
fn cancellation_racing_the_end_of_the_source_keeps_exact_accounting() {
    let _check = LeakCheck::new();
    for round in 0..200u64 {
        let token = CancelToken::new();
        let policy =
            [Overflow::Block, Overflow::DropNewest, Overflow::DropOldest][round as usize % 3];
        let cancel_at = round % 12;
        let mut seen = 0u64;
        let result = Pipeline::from_iter(0..10u64)
            .stage("a", 2, |x| x)
            .stage("b", 1, |x| x)
            .capacity(2)
            .overflow(policy)
            .run_cancellable(
                |_| {
                    seen += 1;
                    if seen == cancel_at {
                        token.cancel();
                    }
                },
                &token,
            );
        let report = match &result {
            Ok(report) => report,
            Err(err) => {
                assert!(err.is_cancelled(), "{err:?}");
                err.report().unwrap()
            }
        };
        assert_books_balance(report);
        // Every item pulled was delivered, dropped with a count, or reported as not
        // processed.
        let source = &report.stages[0];
        assert_eq!(
            source.items_out,
            report.delivered()
                + report.dropped()
                + report
                    .stages
                    .iter()
                    .map(|s| s.failed + s.not_processed)
                    .sum::<u64>()
                - source.not_processed
                - source.failed,
            "round {round}: {report:?}"
        );
        if result.is_ok() {
            assert_eq!(report.delivered() + report.dropped(), 10);
        }
    }
}

#[test]
fn a_sink_slower_than_everything_sheds_with_exact_accounting() {
    let _check = LeakCheck::new();
    let dropped = AtomicU64::new(0);
    let count = |_| {
        dropped.fetch_add(1, Ordering::SeqCst);
    };
    let report = Pipeline::from_iter(0..2000u32)
        .on_drop(count)
        .stage("fast", 2, |x| x)
        .on_drop(count)
        .capacity(2)
        .overflow(Overflow::DropNewest)
        .run(|_| spin_for(Duration::from_micros(20)))
        .unwrap();
    assert_books_balance(&report);
    assert_eq!(report.delivered() + report.dropped(), 2000);
    assert_eq!(report.dropped(), dropped.load(Ordering::SeqCst));
}

#[test]
fn a_pipeline_can_run_inside_a_stage_of_another() {
    let _check = LeakCheck::new();
    let (out, report) = Pipeline::from_iter(1..=4u64)
        .stage("inner", 2, |n| {
            let (inner, _) = Pipeline::from_iter(0..n)
                .stage("square", 2, |x| x * x)
                .collect()
                .unwrap();
            inner.iter().sum::<u64>()
        })
        .ordered()
        .collect()
        .unwrap();
    assert_eq!(out, vec![0, 1, 5, 14]);
    assert_books_balance(&report);
}

#[test]
fn one_item_with_many_workers_per_stage_finishes() {
    let _check = LeakCheck::new();
    let (out, report) = Pipeline::from_iter([7u32])
        .stage("wide", 512, |x| x + 1)
        .stage("wider", 512, |x| x * 2)
        .ordered()
        .collect()
        .unwrap();
    assert_eq!(out, vec![16]);
    assert_books_balance(&report);
}

#[test]
fn a_panicking_drop_of_an_on_drop_callback_that_is_never_used_is_panicked() {
    // Under `Block` the first stage pulls the source: the source's queue, and so its
    // callback, does not exist.
    let _check = LeakCheck::new();
    let bomb = DropBomb("on_drop");
    let err = Pipeline::from_iter(0..10u32)
        .on_drop(move |_| {
            let _ = &bomb;
        })
        .stage("id", 1, |x| x)
        .run(|_| {})
        .unwrap_err();
    expect_panicked(&err, "id", "on_drop dropped");
}

#[test]
fn a_stage_error_whose_display_and_debug_panic_is_still_reported() {
    #[derive(Clone, Copy)]
    struct Rude;
    impl std::fmt::Display for Rude {
        fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            panic!("Display of the error")
        }
    }
    impl std::fmt::Debug for Rude {
        fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            panic!("Debug of the error")
        }
    }
    impl std::error::Error for Rude {}
    let _check = LeakCheck::new();
    let err = Pipeline::from_iter(0..10u32)
        .try_stage("rude", 2, |_| Err::<u32, _>(Rude))
        .run(|_| {})
        .unwrap_err();
    assert_eq!(err.stage(), Some("rude"));
    // Display describes the pipeline's error only (the stage's error is its source),
    // so it never runs the stage error's Display.
    assert_eq!(err.to_string(), "stage rude failed");
    assert!(format!("{err:?}").contains("<its Debug panicked>"));
}

/// An item counted while alive whose `Drop` panics when armed: the randomized run
/// below checks that every item is dropped exactly once (none leaked, none lost) even
/// when drops panic all over the pipeline.
struct Live<'a> {
    live: &'a AtomicUsize,
    armed: bool,
}

impl Drop for Live<'_> {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
        if self.armed && !std::thread::panicking() {
            panic!("live item went off");
        }
    }
}

#[test]
fn randomized_hostile_runs_end_and_account_for_every_item() {
    let _check = LeakCheck::new();
    let seed: u64 = std::env::var("CORRAL_PIPELINE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(7, |d| d.as_nanos() as u64)
        });
    println!("seed {seed} (replay with CORRAL_PIPELINE_SEED={seed})");
    let mut state = seed | 1;
    let mut next = move |n: u64| {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    };
    let start = Instant::now();
    for round in 0..60 {
        if start.elapsed() > Duration::from_secs(10) {
            break;
        }
        let live = AtomicUsize::new(0);
        let items = next(300);
        let arm_every = 1 + next(50); // every n-th item's drop panics (when dropped by the run)
        let policy =
            [Overflow::Block, Overflow::DropNewest, Overflow::DropOldest][next(3) as usize];
        let batch = 1 + next(4) as usize;
        let capacity = batch * (1 + next(3) as usize);
        let (w1, w2) = (1 + next(3) as usize, 1 + next(3) as usize);
        let ordered = next(2) == 0;
        let cancel_at = next(items + 10);
        let fail_at = next(items * 2 + 1);
        let token = CancelToken::new();
        let made = AtomicU64::new(0);
        let source = (0..items).map(|i| {
            live.fetch_add(1, Ordering::SeqCst);
            made.fetch_add(1, Ordering::SeqCst);
            Live {
                live: &live,
                armed: i % arm_every == 0,
            }
        });
        let mut pipeline = Pipeline::from_iter(source)
            .stage("a", w1, |item: Live<'_>| item)
            .try_stage("b", w2, |mut item: Live<'_>| {
                if made.load(Ordering::SeqCst) == fail_at {
                    item.armed = false;
                    return Err("b refused");
                }
                Ok(item)
            })
            .capacity(capacity)
            .batch(batch)
            .overflow(policy);
        if ordered {
            pipeline = pipeline.ordered();
        }
        let mut seen = 0u64;
        let result = pipeline.run_cancellable(
            |mut item| {
                item.armed = false; // the sink's own drop is user code: keep it quiet
                seen += 1;
                if seen == cancel_at {
                    token.cancel();
                }
            },
            &token,
        );
        let what = format!(
            "seed {seed} round {round}: {items} items, arm every {arm_every}, {policy:?}, \
             batch {batch}, capacity {capacity}, workers {w1}/{w2}, ordered {ordered}"
        );
        let report = match &result {
            Ok(report) => report,
            Err(err) => {
                assert!(
                    matches!(
                        err,
                        PipelineError::Panicked { .. }
                            | PipelineError::Cancelled { .. }
                            | PipelineError::Failed { .. }
                    ),
                    "{what}: {err:?}"
                );
                err.report().unwrap()
            }
        };
        assert_eq!(
            live.load(Ordering::SeqCst),
            0,
            "{what}: an item was not dropped"
        );
        assert_books_balance(report);
        assert_eq!(
            report.stages[0].items_in,
            made.load(Ordering::SeqCst),
            "{what}: every item pulled is on the books"
        );
    }
}

#[test]
fn panics_whose_payload_drop_panics_lose_the_race_quietly() {
    let _check = LeakCheck::new();
    let err = within_patience("payload storm", || {
        Pipeline::from_iter(0..10_000u32)
            .stage("p", 8, |_x| -> u32 {
                std::panic::panic_any(DropBomb("payload"))
            })
            .capacity(8)
            .run(|_| {})
            .unwrap_err()
    });
    let PipelineError::Panicked { stage, report, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(stage, "p");
    assert_books_balance(report);
    // The reported payload is the caller's to drop.
    std::mem::forget(err);
}

/// Batch size per stage (issue 19): `batch` is the run's transport unit, set where
/// items enter (packets keep their size from the source to the sink); the groups a
/// stage's function receives are set per stage by `batch_stage`, whatever the run's
/// batch, and a `buffer` after a stage stays counted in items.
#[test]
fn a_batch_stage_groups_by_its_own_size_whatever_the_run_batch() {
    let _check = LeakCheck::new();
    let sizes = Mutex::new(Vec::new());
    let (out, report) = Pipeline::from_iter(0..100u32)
        .batch(16)
        .stage("parse", 1, |x| x + 1)
        .buffer(32) // 2 packets of 16
        .batch_stage(
            "insert",
            1,
            5,
            Duration::from_secs(3600),
            |rows: Vec<u32>| {
                sizes.lock().unwrap().push(rows.len());
                rows.len()
            },
        )
        .collect()
        .unwrap();
    let sizes = sizes.into_inner().unwrap();
    assert_eq!(
        sizes,
        vec![5; 20],
        "groups of the stage's size, not the run's 16"
    );
    assert_eq!(out.iter().sum::<usize>(), 100);
    let insert = report.stage("insert").unwrap();
    assert_eq!((insert.items_in, insert.items_out), (100, 100));
}
