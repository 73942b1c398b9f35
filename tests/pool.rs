//! WorkerPool and ScopedPool through the public API.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use corral::leak::LeakCheck;
use corral::{
    cancel::CancelReason,
    pool::{SubmitError, TaskError, TaskHandle},
    CancelToken, Overflow, ScopedPool, WorkerPool,
};

const LONG: Duration = Duration::from_secs(30);

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < LONG, "timed out waiting for {what}");
        thread::yield_now();
    }
}

/// A task that blocks its worker until the returned sender is used or dropped.
fn gate() -> (mpsc::Sender<()>, impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel::<()>();
    (tx, move || {
        let _ = rx.recv();
    })
}

/// A pool of two workers and a queue of `capacity`.
fn two_workers(capacity: usize) -> WorkerPool {
    WorkerPool::builder()
        .workers(2)
        .queue_capacity(capacity)
        .build()
        .unwrap()
}

/// A pool of one worker, blocked, with `capacity` free queue slots.
fn blocked_pool(builder: corral::pool::PoolBuilder) -> (WorkerPool, mpsc::Sender<()>) {
    let pool = builder.workers(1).build().unwrap();
    let (open, blocker) = gate();
    pool.execute(blocker).unwrap();
    wait_for("the worker to take the blocker", || pool.stats().busy == 1);
    (pool, open)
}

#[test]
fn public_types_are_send_and_sync() {
    fn both<T: Send + Sync>() {}
    both::<WorkerPool>();
    both::<ScopedPool<'static>>();
    both::<TaskHandle<String>>();
    both::<SubmitError<fn()>>();
    both::<TaskError>();
    both::<corral::pool::PoolStats>();
    both::<corral::pool::IdleError>();
}

#[test]
fn a_task_result_is_about_as_small_as_its_value() {
    // `map` hands out one of these per item: a caught panic stays behind a pointer.
    assert_eq!(
        std::mem::size_of::<corral::Panic>(),
        std::mem::size_of::<usize>()
    );
    assert!(std::mem::size_of::<Result<u64, TaskError>>() <= 16);
}

#[test]
fn builder_rejects_zero_and_absurd_values() {
    let cases = [
        (WorkerPool::builder().workers(0), "workers", "0"),
        (WorkerPool::builder().workers(100_000), "workers", "100000"),
        (
            WorkerPool::builder().queue_capacity(0),
            "queue_capacity",
            "0",
        ),
        (
            WorkerPool::builder().queue_capacity(1 << 30),
            "queue_capacity",
            "1073741824",
        ),
        (WorkerPool::builder().stack_size(10), "stack_size", "10"),
        (
            WorkerPool::builder().thread_name("a\0b"),
            "thread_name",
            "\"a\\0b\"",
        ),
    ];
    for (builder, field, value) in cases {
        let err = builder.build().unwrap_err();
        let config = err.config().expect("a ConfigError");
        assert_eq!((config.field(), config.value()), (field, value), "{err}");
    }
}

#[test]
fn submit_returns_values_and_names_threads() {
    let _check = LeakCheck::new();
    let pool = WorkerPool::builder()
        .workers(2)
        .thread_name("resize")
        .build()
        .unwrap();
    let handles: Vec<_> = (0..50u64)
        .map(|n| pool.submit(move || (n * 2, thread::current().name().map(str::to_owned))))
        .collect::<Result<_, _>>()
        .unwrap();
    for (n, handle) in handles.into_iter().enumerate() {
        let (value, name) = handle.join().unwrap();
        assert_eq!(value, 2 * n as u64);
        let name = name.unwrap();
        assert!(name.starts_with("corral-resize-"), "{name}");
    }
    let report = pool.shutdown();
    assert_eq!(
        (report.completed, report.panicked, report.never_ran),
        (50, 0, 0)
    );
}

#[test]
fn try_submit_hands_the_closure_back_when_full() {
    let _check = LeakCheck::new();
    let (pool, open) = blocked_pool(WorkerPool::builder().queue_capacity(1));
    let queued = pool.try_submit(|| 1).unwrap();
    match pool.try_submit(|| 2) {
        Err(SubmitError::Full(task)) => assert_eq!(task(), 2),
        other => panic!("expected Full, got {other:?}"),
    }
    assert!(pool.try_execute(|| ()).unwrap_err().is_full());
    assert_eq!(pool.stats().rejected, 2);
    assert_eq!(pool.stats().queued, 1);
    open.send(()).unwrap();
    assert_eq!(queued.join().unwrap(), 1);
}

#[test]
fn bounded_submits_wait_then_hand_the_task_back() {
    let _check = LeakCheck::new();
    let (pool, open) = blocked_pool(WorkerPool::builder().queue_capacity(1));
    pool.execute(|| ()).unwrap();

    let err = pool
        .submit_timeout(|| "late", Duration::from_millis(20))
        .unwrap_err();
    assert!(err.is_timeout());
    assert_eq!(err.into_inner()(), "late");

    let past = Instant::now();
    assert!(pool.submit_deadline(|| (), past).unwrap_err().is_timeout());
    assert!(pool.execute_deadline(|| (), past).unwrap_err().is_timeout());

    // A cancel from another thread stops a submitter waiting on a full queue (or
    // one about to wait: either way the task comes back).
    let token = CancelToken::new();
    thread::scope(|s| {
        let canceller = token.clone();
        s.spawn(move || canceller.cancel());
        match pool.submit_cancellable(|| 7, &token) {
            Err(SubmitError::Cancelled(task, CancelReason::Cancelled)) => assert_eq!(task(), 7),
            other => panic!("expected Cancelled, got {other:?}"),
        }
    });
    assert_eq!(pool.stats().rejected, 4);
    open.send(()).unwrap();
    let report = pool.shutdown();
    assert_eq!(report.completed, 2);
}

#[test]
fn submit_blocks_for_room_instead_of_failing() {
    let _check = LeakCheck::new();
    let (pool, open) = blocked_pool(WorkerPool::builder().queue_capacity(2));
    let order = Arc::new(Mutex::new(Vec::new()));
    thread::scope(|s| {
        let submitter = s.spawn(|| {
            (0..6)
                .map(|i| {
                    let order = order.clone();
                    pool.submit(move || order.lock().unwrap().push(i)).unwrap()
                })
                .collect::<Vec<_>>()
        });
        // The submitter fills the queue and must then wait (backpressure).
        wait_for("the queue to fill", || pool.stats().queued == 2);
        // Worker blocked, queue full: the submitter cannot have got further.
        assert_eq!(pool.stats().submitted, 3);
        assert!(!submitter.is_finished());
        open.send(()).unwrap();
        for handle in submitter.join().unwrap() {
            handle.join().unwrap();
        }
    });
    assert_eq!(*order.lock().unwrap(), (0..6).collect::<Vec<_>>());
}

#[test]
fn closed_pool_refuses_with_the_task() {
    let _check = LeakCheck::new();
    let pool = WorkerPool::builder().workers(1).build().unwrap();
    let before = pool.submit(|| 1).unwrap();
    pool.close();
    assert!(pool.is_closed());
    match pool.submit(|| 2) {
        Err(SubmitError::Closed(task)) => assert_eq!(task(), 2),
        other => panic!("expected Closed, got {other:?}"),
    }
    assert_eq!(before.join().unwrap(), 1);
    assert_eq!(pool.shutdown().rejected, 1);
}

#[test]
fn a_panicking_task_never_costs_a_worker() {
    let _check = LeakCheck::new();
    let pool = WorkerPool::builder().workers(1).build().unwrap();
    let bad = pool.submit(|| -> u32 { panic!("bad row 17") }).unwrap();
    let good = pool.submit(|| 5).unwrap();
    match bad.join() {
        Err(TaskError::Panicked(panic)) => {
            assert_eq!(panic.message(), Some("bad row 17"));
            assert!(panic.thread_name().unwrap().starts_with("corral-pool-"));
        }
        other => panic!("expected a panic, got {other:?}"),
    }
    assert_eq!(good.join().unwrap(), 5);
    pool.execute(|| panic!("fire and forget")).unwrap();
    let stats_wait = || pool.stats().panicked == 2;
    wait_for("the second panic", stats_wait);
    let report = pool.shutdown();
    assert_eq!((report.completed, report.panicked), (1, 2));
    assert_eq!(
        report
            .first_panic
            .and_then(|p| p.message().map(str::to_owned)),
        Some("fire and forget".to_owned())
    );
}

#[test]
fn shutdown_runs_everything_queued() {
    let _check = LeakCheck::new();
    let ran = Arc::new(AtomicUsize::new(0));
    let (pool, open) = blocked_pool(WorkerPool::builder().queue_capacity(100));
    for _ in 0..100 {
        let ran = ran.clone();
        pool.execute(move || {
            ran.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    }
    open.send(()).unwrap();
    let report = pool.shutdown();
    assert_eq!(ran.load(Ordering::SeqCst), 100);
    assert_eq!((report.completed, report.never_ran), (101, 0));
}

#[test]
fn drop_is_shutdown() {
    let _check = LeakCheck::new();
    let ran = Arc::new(AtomicUsize::new(0));
    {
        let pool = WorkerPool::builder().workers(2).build().unwrap();
        for _ in 0..20 {
            let ran = ran.clone();
            pool.execute(move || {
                ran.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        }
    }
    assert_eq!(ran.load(Ordering::SeqCst), 20);
}

#[test]
fn shutdown_now_runs_nothing_more_and_reports_it() {
    let _check = LeakCheck::new();
    let (pool, open) = blocked_pool(WorkerPool::builder().queue_capacity(10));
    let ran = Arc::new(AtomicBool::new(false));
    let queued: Vec<_> = (0..10)
        .map(|_| {
            let ran = ran.clone();
            pool.submit(move || ran.store(true, Ordering::SeqCst))
                .unwrap()
        })
        .collect();
    thread::scope(|s| {
        let stopper = s.spawn(move || pool.shutdown_now());
        // The cancelled pool drops queued tasks while the blocker still runs.
        wait_for("queued tasks to be cancelled", || {
            queued.iter().all(TaskHandle::is_finished)
        });
        open.send(()).unwrap();
        let report = stopper.join().unwrap();
        assert_eq!((report.completed, report.never_ran), (1, 10));
    });
    assert!(!ran.load(Ordering::SeqCst));
    for handle in queued {
        assert!(handle.join().unwrap_err().is_cancelled());
    }
}

#[test]
fn submit_with_token_sees_shutdown_now() {
    let _check = LeakCheck::new();
    let pool = WorkerPool::builder().workers(1).build().unwrap();
    let long = pool
        .submit_with_token(|token| token.wait_timeout(LONG))
        .unwrap();
    wait_for("the task to start", || pool.stats().busy == 1);
    let report = pool.shutdown_now();
    assert_eq!(long.join().unwrap(), Some(CancelReason::Cancelled));
    assert_eq!(report.completed, 1);
}

#[test]
fn shutdown_timeout_hands_the_pool_back_rather_than_detach() {
    let _check = LeakCheck::new();
    let idle = WorkerPool::builder().workers(2).build().unwrap();
    assert!(idle.shutdown_timeout(LONG).is_ok());

    let (pool, open) = blocked_pool(WorkerPool::builder().queue_capacity(4));
    let queued = pool.submit(|| 1).unwrap();
    let pool = match pool.shutdown_timeout(Duration::from_millis(20)) {
        Ok(report) => panic!("a blocked task cannot finish: {report:?}"),
        Err(pool) => pool,
    };
    // The deadline cancelled the token: the queued task will not run.
    assert!(pool.token().is_cancelled());
    assert!(pool.submit(|| 2).unwrap_err().is_closed());
    open.send(()).unwrap();
    let report = pool.shutdown();
    assert_eq!((report.completed, report.never_ran), (1, 1));
    assert!(queued.join().unwrap_err().is_cancelled());
}

#[test]
fn submit_with_token_has_every_bounded_form_and_hands_the_task_back() {
    let _check = LeakCheck::new();
    let (pool, open) = blocked_pool(WorkerPool::builder().queue_capacity(1));
    let queued = pool
        .try_submit_with_token(|token| token.is_cancelled())
        .unwrap();
    // The queue is full from here on: each bounded form gives the task back.
    let full = pool.try_submit_with_token(|_| 1).unwrap_err();
    assert!(full.is_full());
    assert_eq!(full.into_inner()(&CancelToken::new()), 1);
    let late = pool
        .submit_with_token_timeout(|_| 2, Duration::from_millis(5))
        .unwrap_err();
    assert!(late.is_timeout());
    assert!(pool
        .submit_with_token_deadline(|_| 3, Instant::now())
        .unwrap_err()
        .is_timeout());
    let stop = CancelToken::new();
    stop.cancel();
    assert!(pool
        .submit_with_token_cancellable(|_| 4, &stop)
        .unwrap_err()
        .is_cancelled());
    open.send(()).unwrap();
    assert!(
        !queued.join().unwrap(),
        "the pool token is live while the pool runs"
    );
    let report = pool.shutdown();
    assert_eq!((report.completed, report.rejected), (2, 4));
}

#[test]
fn handles_wait_with_bounds_and_come_back() {
    let _check = LeakCheck::new();
    let (pool, open) = blocked_pool(WorkerPool::builder());
    let handle = pool.submit(|| 3).unwrap();
    let handle = handle.try_join().unwrap_err();
    let handle = handle.join_timeout(Duration::from_millis(5)).unwrap_err();
    let handle = handle.join_deadline(Instant::now()).unwrap_err();
    let token = CancelToken::new();
    token.cancel();
    let handle = handle.join_cancellable(&token).unwrap_err();
    assert!(!handle.is_finished());
    open.send(()).unwrap();
    assert_eq!(handle.join_timeout(LONG).unwrap().unwrap(), 3);
}

#[test]
fn dropping_a_handle_drops_only_the_result() {
    let _check = LeakCheck::new();
    let pool = WorkerPool::builder().workers(1).build().unwrap();
    let ran = Arc::new(AtomicBool::new(false));
    let flag = ran.clone();
    drop(
        pool.submit(move || flag.store(true, Ordering::SeqCst))
            .unwrap(),
    );
    assert_eq!(pool.shutdown().completed, 1);
    assert!(ran.load(Ordering::SeqCst));
}

#[test]
fn reject_policy_refuses_even_blocking_submits() {
    let _check = LeakCheck::new();
    let (pool, open) = blocked_pool(
        WorkerPool::builder()
            .queue_capacity(1)
            .overflow(Overflow::Reject),
    );
    pool.execute(|| ()).unwrap();
    assert_eq!(pool.submit(|| 9).unwrap_err().into_inner()(), 9);
    open.send(()).unwrap();
}

#[test]
fn drop_oldest_evicts_to_on_drop_and_counts() {
    let _check = LeakCheck::new();
    let evicted = Arc::new(AtomicUsize::new(0));
    let seen = evicted.clone();
    let (pool, open) = blocked_pool(
        WorkerPool::builder()
            .queue_capacity(2)
            .overflow(Overflow::DropOldest)
            .on_drop(move |task| {
                seen.fetch_add(1, Ordering::SeqCst);
                drop(task);
            }),
    );
    let handles: Vec<_> = (0..5).map(|i| pool.submit(move || i).unwrap()).collect();
    assert_eq!(evicted.load(Ordering::SeqCst), 3);
    open.send(()).unwrap();
    let results: Vec<_> = handles.into_iter().map(TaskHandle::join).collect();
    for (i, result) in results.iter().enumerate() {
        match (i, result) {
            (0..=2, Err(e)) => assert!(e.is_cancelled()),
            (3 | 4, Ok(v)) => assert_eq!(*v, i),
            other => panic!("unexpected {other:?}"),
        }
    }
    let stats = pool.stats();
    assert_eq!((stats.submitted, stats.dropped), (6, 3));
    let report = pool.shutdown();
    assert_eq!(report.completed + report.dropped, 6);
}

#[test]
fn drop_newest_without_callback_resolves_the_handle() {
    let _check = LeakCheck::new();
    let (pool, open) = blocked_pool(
        WorkerPool::builder()
            .queue_capacity(1)
            .overflow(Overflow::DropNewest),
    );
    let kept = pool.submit(|| "kept").unwrap();
    let shed = pool.submit(|| "shed").unwrap();
    assert!(shed.join().unwrap_err().is_cancelled());
    open.send(()).unwrap();
    assert_eq!(kept.join().unwrap(), "kept");
    assert_eq!(pool.shutdown().dropped, 1);
}

/// Panics when dropped: a capture with a broken destructor.
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("a capture that panics when dropped");
    }
}

#[test]
fn a_displaced_task_that_panics_on_drop_costs_the_submitter_nothing() {
    let _check = LeakCheck::new();
    let (pool, open) = blocked_pool(
        WorkerPool::builder()
            .queue_capacity(1)
            .overflow(Overflow::DropOldest),
    );
    let bomb = PanicsOnDrop;
    let evicted = pool
        .submit(move || {
            let _keep = &bomb;
        })
        .unwrap();
    // Evicting (and dropping) the bomb must neither panic here nor lose this task.
    let kept = pool.submit(|| 42).unwrap();
    assert!(evicted.join().unwrap_err().is_cancelled());
    open.send(()).unwrap();
    assert_eq!(kept.join().unwrap(), 42);
    let report = pool.shutdown();
    assert_eq!((report.dropped, report.rejected), (1, 0));
    let panic = report.first_panic.expect("the destructor's panic is kept");
    assert_eq!(panic.message(), Some("a capture that panics when dropped"));
}

#[test]
fn a_panicking_on_drop_callback_is_reported_not_thrown_at_the_submitter() {
    let _check = LeakCheck::new();
    let (pool, open) = blocked_pool(
        WorkerPool::builder()
            .queue_capacity(1)
            .overflow(Overflow::DropNewest)
            .on_drop(|_task| panic!("on_drop failed")),
    );
    let kept = pool.submit(|| 1).unwrap();
    let shed = pool.submit(|| 2).unwrap();
    assert!(shed.join().unwrap_err().is_cancelled());
    open.send(()).unwrap();
    assert_eq!(kept.join().unwrap(), 1);
    let report = pool.shutdown();
    assert_eq!(report.dropped, 1);
    let panic = report.first_panic.expect("the callback's panic is kept");
    assert_eq!(panic.message(), Some("on_drop failed"));
}

#[test]
fn on_drop_may_run_the_displaced_task() {
    let _check = LeakCheck::new();
    let (pool, open) = blocked_pool(
        WorkerPool::builder()
            .queue_capacity(1)
            .overflow(Overflow::DropNewest)
            .on_drop(|task| task.run()),
    );
    pool.execute(|| ()).unwrap();
    let shed = pool.submit(|| thread::current().id()).unwrap();
    assert_eq!(shed.join().unwrap(), thread::current().id());
    open.send(()).unwrap();
}

#[test]
fn caller_runs_when_full() {
    let _check = LeakCheck::new();
    let (pool, open) = blocked_pool(
        WorkerPool::builder()
            .queue_capacity(1)
            .overflow(Overflow::CallerRuns),
    );
    let queued = pool.submit(|| thread::current().id()).unwrap();
    let inline = pool.submit(|| thread::current().id()).unwrap();
    assert!(inline.is_finished());
    assert_eq!(inline.join().unwrap(), thread::current().id());
    let panicked = pool.submit(|| -> u8 { panic!("inline") }).unwrap();
    assert!(panicked.join().unwrap_err().is_panicked());
    open.send(()).unwrap();
    assert_ne!(queued.join().unwrap(), thread::current().id());
    let report = pool.shutdown();
    assert_eq!(
        (report.caller_ran, report.completed, report.panicked),
        (2, 3, 1)
    );
}

#[test]
fn scoped_pool_tasks_borrow_and_workers_join_with_the_scope() {
    let _check = LeakCheck::new();
    let mut cells = vec![0u64; 64];
    let total = corral::scope(|s| {
        let pool = WorkerPool::builder()
            .workers(3)
            .queue_capacity(4)
            .build_scoped(s)
            .unwrap();
        let handles: Vec<_> = cells
            .iter_mut()
            .enumerate()
            .map(|(i, cell)| {
                pool.submit(move || {
                    *cell = i as u64;
                    *cell
                })
                .unwrap()
            })
            .collect();
        let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        let report = pool.shutdown();
        assert_eq!(report.completed, 64);
        total
    });
    assert_eq!(total, (0..64).sum());
    assert_eq!(cells[63], 63);
}

#[test]
fn scoped_pool_hands_borrowing_closures_back() {
    let _check = LeakCheck::new();
    let label = String::from("borrowed");
    let seen = AtomicUsize::new(0);
    corral::scope(|s| {
        let pool = WorkerPool::builder()
            .workers(1)
            .queue_capacity(1)
            .build_scoped(s)
            .unwrap();
        let (open, blocker) = gate();
        pool.execute(blocker).unwrap();
        wait_for("the blocker", || pool.stats().busy == 1);
        let queued = pool.submit(|| label.len()).unwrap();
        let refused = pool.try_submit(|| label.as_str()).unwrap_err();
        assert_eq!(refused.into_inner()(), "borrowed");
        let refused = pool
            .try_execute(|| seen.store(label.len(), Ordering::SeqCst))
            .unwrap_err();
        refused.into_inner()();
        assert_eq!(seen.load(Ordering::SeqCst), 8);
        let late = pool
            .execute_timeout(|| seen.store(0, Ordering::SeqCst), Duration::from_millis(5))
            .unwrap_err();
        assert!(late.is_timeout());
        assert!(pool
            .execute_deadline(|| (), Instant::now())
            .unwrap_err()
            .is_timeout());
        open.send(()).unwrap();
        assert_eq!(queued.join().unwrap(), 8);
    });
}

#[test]
fn scoped_pool_shutdown_timeout_hands_the_pool_back_rather_than_detach() {
    let _check = LeakCheck::new();
    let label = String::from("borrowed");
    corral::scope(|s| {
        let idle = WorkerPool::builder().workers(2).build_scoped(s).unwrap();
        assert_eq!(idle.submit(|| label.len()).unwrap().join().unwrap(), 8);
        assert_eq!(idle.shutdown_timeout(LONG).unwrap().completed, 1);

        let pool = WorkerPool::builder()
            .workers(1)
            .queue_capacity(4)
            .build_scoped(s)
            .unwrap();
        let (open, blocker) = gate();
        pool.execute(blocker).unwrap();
        wait_for("the blocker", || pool.stats().busy == 1);
        let queued = pool
            .submit_with_token(|token| (label.len(), token.is_cancelled()))
            .unwrap();
        let pool = match pool.shutdown_timeout(Duration::from_millis(20)) {
            Ok(report) => panic!("a blocked task cannot finish: {report:?}"),
            Err(pool) => pool,
        };
        assert!(pool.is_closed() && pool.token().is_cancelled());
        assert!(pool.submit(|| label.len()).unwrap_err().is_closed());
        open.send(()).unwrap();
        let report = pool.shutdown();
        assert_eq!((report.completed, report.never_ran), (1, 1));
        assert!(queued.join().unwrap_err().is_cancelled());
    });
}

#[test]
fn map_runs_unstarted_chunks_on_the_caller_when_workers_are_busy() {
    let _check = LeakCheck::new();
    let (pool, open) = blocked_pool(WorkerPool::builder().queue_capacity(8));
    let me = thread::current().id();
    // The only worker is blocked, so no chunk can start there: the caller runs each
    // one itself when it needs its results, instead of waiting for the worker or for
    // queue room. (A
    // watchdog frees the worker after LONG, so a regression fails instead of hanging.)
    let (finished, watch) = mpsc::channel::<()>();
    let results: Vec<(u64, thread::ThreadId)> = thread::scope(|s| {
        let open = open.clone();
        s.spawn(move || {
            if watch.recv_timeout(LONG).is_err() {
                let _ = open.send(());
            }
        });
        let results = pool
            .map(0..200u64, |n| (n * 3, thread::current().id()))
            .collect::<Result<_, _>>()
            .unwrap();
        finished.send(()).unwrap();
        results
    });
    assert_eq!(
        results.iter().map(|r| r.0).collect::<Vec<_>>(),
        (0..200).map(|n| n * 3).collect::<Vec<_>>()
    );
    // Far more chunks than queue slots: map never blocks on the full queue.
    assert!(results.iter().all(|r| r.1 == me));
    open.send(()).unwrap();
    let report = pool.shutdown();
    assert_eq!((report.panicked, report.never_ran), (0, 0));
}

#[test]
fn map_items_of_a_chunk_the_pool_evicted_yield_cancelled_and_never_run() {
    let _check = LeakCheck::new();
    let shed = Arc::new(AtomicUsize::new(0));
    let on_drop = Arc::clone(&shed);
    let (pool, open) = blocked_pool(
        WorkerPool::builder()
            .queue_capacity(2)
            .overflow(Overflow::DropOldest)
            .on_drop(move |task| {
                on_drop.fetch_add(1, Ordering::SeqCst);
                drop(task);
            }),
    );
    let ran = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&ran);
    // Window 3: one item per chunk, chunks 0 and 1 queued, chunk 2 kept on the caller.
    let mut map = pool.map(0..6u64, move |n| {
        log.lock().unwrap().push(n);
        n
    });
    assert_eq!(map.next().unwrap().unwrap(), 0); // chunk 0: run here, its job left empty
                                                 // Two submits evict the two oldest queued jobs: chunk 0's empty job, then chunk 1.
    let first = pool.submit(|| 10u64).unwrap();
    let second = pool.submit(|| 11u64).unwrap();
    let rest: Vec<_> = map.by_ref().collect();
    assert!(rest[0].as_ref().unwrap_err().is_cancelled(), "{rest:?}");
    assert_eq!(
        rest[1..]
            .iter()
            .map(|r| *r.as_ref().unwrap())
            .collect::<Vec<_>>(),
        vec![2, 3, 4, 5]
    );
    assert_eq!(*ran.lock().unwrap(), vec![0, 2, 3, 4, 5]);
    assert_eq!(shed.load(Ordering::SeqCst), 2);
    drop(map);
    open.send(()).unwrap();
    assert_eq!((first.join().unwrap(), second.join().unwrap()), (10, 11));
    assert_eq!(pool.shutdown().dropped, 2);
}

#[test]
fn a_big_closure_is_handed_back_whole_and_runs_whole() {
    let _check = LeakCheck::new();
    let (pool, open) = blocked_pool(WorkerPool::builder().queue_capacity(1));
    let big = [7u8; 4096];
    let queued = pool
        .submit(move || big.iter().map(|&b| u64::from(b)).sum::<u64>())
        .unwrap();
    let refused = pool.try_submit(move || big.len()).unwrap_err().into_inner();
    assert_eq!(refused(), 4096);
    open.send(()).unwrap();
    assert_eq!(queued.join().unwrap(), 7 * 4096);
}

#[test]
fn submitted_never_goes_back_never_runs_ahead_and_adds_up() {
    let _check = LeakCheck::new();
    let pool = Arc::new(two_workers(16));
    let attempted = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    // A snapshot between two submitters' bursts: `submitted` may lag while a task
    // moves from the queue to a worker, but it never exceeds what was handed in and
    // never goes back.
    let monitor = {
        let (pool, attempted, done) = (pool.clone(), attempted.clone(), done.clone());
        thread::spawn(move || {
            let (mut last, mut snapshots) = (0, 0u64);
            while !done.load(Ordering::SeqCst) || snapshots < 100 {
                let submitted = pool.stats().submitted;
                let ceiling = attempted.load(Ordering::SeqCst);
                assert!(submitted >= last, "went back from {last} to {submitted}");
                assert!(
                    submitted <= ceiling,
                    "{submitted} counted, {ceiling} handed in"
                );
                last = submitted;
                snapshots += 1;
            }
        })
    };
    let submitters: Vec<_> = (0..2)
        .map(|_| {
            let (pool, attempted) = (pool.clone(), attempted.clone());
            thread::spawn(move || {
                for i in 0..20_000u64 {
                    attempted.fetch_add(1, Ordering::SeqCst);
                    pool.execute(move || {
                        std::hint::black_box(i);
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for s in submitters {
        s.join().unwrap();
    }
    done.store(true, Ordering::SeqCst);
    monitor.join().unwrap();
    // Once every task has run, nothing is in transit: the count is exact.
    wait_for("every task to run", || pool.stats().completed == 40_000);
    assert_eq!(pool.stats().submitted, 40_000);
    let pool = Arc::try_unwrap(pool).unwrap_or_else(|_| panic!("pool still shared"));
    assert_eq!(pool.shutdown().completed, 40_000);
}

#[test]
fn map_yields_in_order_and_isolates_panics() {
    let _check = LeakCheck::new();
    let pool = two_workers(8);
    let results: Vec<_> = pool
        .map(0..1000u32, |n| {
            if n == 500 {
                panic!("item 500");
            }
            n + 1
        })
        .collect();
    assert_eq!(results.len(), 1000);
    for (i, result) in results.into_iter().enumerate() {
        match result {
            Ok(v) => assert_eq!(v as usize, i + 1),
            Err(TaskError::Panicked(p)) => {
                assert_eq!(i, 500);
                assert_eq!(p.message(), Some("item 500"));
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
}

#[test]
fn map_keeps_at_most_capacity_plus_workers_in_flight() {
    let _check = LeakCheck::new();
    for (workers, capacity) in [(1, 1), (2, 8), (3, 100), (2, 1024)] {
        let pool = WorkerPool::builder()
            .workers(workers)
            .queue_capacity(capacity)
            .build()
            .unwrap();
        let pulled = Arc::new(AtomicU64::new(0));
        let counter = pulled.clone();
        // An endless input: only the bound keeps this from running out of memory.
        let input = (0u64..).inspect(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        let window = (capacity + workers) as u64;
        let mut max_ahead = 0;
        for (yielded, result) in pool.map(input, |n| n * 3).take(5000).enumerate() {
            assert_eq!(result.unwrap(), yielded as u64 * 3);
            let ahead = pulled.load(Ordering::SeqCst) - yielded as u64;
            max_ahead = max_ahead.max(ahead);
            assert!(ahead <= window, "{ahead} in flight > {window}");
        }
        assert!(max_ahead >= 1);

        // The same bound when the map is consumed by internal iteration.
        let pulled = Arc::new(AtomicU64::new(0));
        let counter = pulled.clone();
        let input = (0u64..20_000).inspect(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        let mut yielded = 0u64;
        pool.map(input, |n| n * 3).for_each(|result| {
            assert_eq!(result.unwrap(), yielded * 3);
            yielded += 1;
            let ahead = pulled.load(Ordering::SeqCst) - yielded;
            assert!(ahead <= window, "{ahead} in flight > {window}");
        });
        assert_eq!(yielded, 20_000);
    }
}

#[test]
fn map_consumed_by_for_each_keeps_order_panics_and_where_items_run() {
    let _check = LeakCheck::new();
    let pool = two_workers(64);
    let me = thread::current().id();
    // Cheap items (the caller runs them), one of which panics, then expensive ones
    // (handed back to the workers), one of which panics too.
    let mut seen = Vec::new();
    pool.map(0..20_300u64, |n| {
        if n == 7_777 || n == 20_100 {
            panic!("item {n}");
        }
        if n >= 20_000 {
            compute_for(Duration::from_micros(20));
        }
        (n, thread::current().id())
    })
    .for_each(|result| seen.push(result));
    assert_eq!(seen.len(), 20_300);
    let mut on_caller = 0;
    let mut on_workers = 0;
    for (i, result) in seen.iter().enumerate() {
        match result {
            Ok((n, id)) => {
                assert_eq!(*n, i as u64);
                match (i < 20_000, *id == me) {
                    (true, true) => on_caller += 1,
                    (false, false) => on_workers += 1,
                    _ => {}
                }
            }
            Err(TaskError::Panicked(p)) => {
                assert!(i == 7_777 || i == 20_100, "item {i} panicked");
                assert_eq!(p.message(), Some(format!("item {i}").as_str()));
            }
            Err(e) => panic!("item {i}: unexpected {e}"),
        }
    }
    assert!(
        on_caller > 10_000,
        "only {on_caller} cheap items ran on the caller"
    );
    assert!(on_workers > 0, "every expensive item ran on the caller");
    assert_eq!(pool.shutdown().panicked, 0); // caught per item, not by the workers
}

#[test]
fn map_runs_later_chunks_on_the_caller_while_a_worker_runs_the_oldest() {
    let _check = LeakCheck::new();
    // One worker, window 9: chunks of 4 items, two in flight. The worker's first item
    // blocks until the caller runs an item from a later chunk than the worker's,
    // which the caller can only do by running that chunk early, while it waits for
    // the worker's (it would otherwise wait for it, and the gate would time out).
    let pool = WorkerPool::builder()
        .workers(1)
        .queue_capacity(8)
        .build()
        .unwrap();
    let me = thread::current().id();
    struct Scene {
        started: (Mutex<mpsc::Sender<()>>, Mutex<mpsc::Receiver<()>>),
        gate: (Mutex<Option<mpsc::Sender<()>>>, Mutex<mpsc::Receiver<()>>),
        blocked_at: AtomicU64,
        caller_items: AtomicU64,
        gate_opened: AtomicBool,
    }
    let (started_tx, started_rx) = mpsc::channel();
    let (gate_tx, gate_rx) = mpsc::channel();
    let scene = Arc::new(Scene {
        started: (Mutex::new(started_tx), Mutex::new(started_rx)),
        gate: (Mutex::new(Some(gate_tx)), Mutex::new(gate_rx)),
        blocked_at: AtomicU64::new(u64::MAX),
        caller_items: AtomicU64::new(0),
        gate_opened: AtomicBool::new(false),
    });
    let sc = Arc::clone(&scene);
    let results: Vec<(u64, thread::ThreadId)> = pool
        .map(0..16u64, move |n| {
            let patience = Duration::from_secs(30);
            if thread::current().id() == me {
                if sc.caller_items.fetch_add(1, Ordering::SeqCst) == 0 {
                    // Hold the first chunk until the worker is inside one.
                    let started = sc.started.1.lock().unwrap().recv_timeout(patience);
                    assert!(started.is_ok(), "the worker never started a chunk");
                }
                if n > sc.blocked_at.load(Ordering::SeqCst) {
                    if let Some(gate) = sc.gate.0.lock().unwrap().take() {
                        gate.send(()).unwrap();
                    }
                }
            } else if sc.blocked_at.load(Ordering::SeqCst) == u64::MAX {
                sc.blocked_at.store(n, Ordering::SeqCst);
                sc.started.0.lock().unwrap().send(()).unwrap();
                let opened = sc.gate.1.lock().unwrap().recv_timeout(patience);
                sc.gate_opened.store(opened.is_ok(), Ordering::SeqCst);
            }
            (n, thread::current().id())
        })
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        scene.gate_opened.load(Ordering::SeqCst),
        "the caller waited instead of helping"
    );
    assert!(results.iter().enumerate().all(|(i, r)| r.0 == i as u64));
    let blocked = scene.blocked_at.load(Ordering::SeqCst) as usize;
    assert_ne!(results[blocked].1, me, "the blocked item ran on a worker");
    assert_eq!(pool.shutdown().panicked, 0);
}

#[test]
fn map_knows_how_many_results_are_left() {
    let _check = LeakCheck::new();
    let pool = two_workers(8);
    let input: Vec<u64> = (0..1_000).collect();
    let mut map = pool.map(input, |n| {
        if n == 500 {
            panic!("item 500");
        }
        n
    });
    assert_eq!(map.len(), 1_000);
    // Exact at every step, whether the items in flight are queued, running, run
    // early by the caller or already yielded as results, and across a panic.
    for left in (0..1_000).rev() {
        assert!(map.next().is_some());
        assert_eq!(map.size_hint(), (left, Some(left)));
    }
    assert!(map.next().is_none());
    assert!(map.next().is_none());
    // An endless input: no upper bound, and a lower bound that does not overflow.
    let mut endless = pool.map(0u64.., |n| n);
    assert_eq!(endless.next().unwrap().unwrap(), 0);
    assert_eq!(endless.size_hint(), (usize::MAX, None));
    drop(endless);
    // A closed pool's items count too: each yields `Cancelled`.
    pool.close();
    let closed = pool.map(0..3u32, |n| n);
    assert_eq!(closed.len(), 3);
    assert_eq!(closed.count(), 3);
}

#[test]
fn map_stops_at_the_first_end_of_an_input_that_is_not_fused() {
    let _check = LeakCheck::new();
    /// Yields `0..end`, then `None`, then `end + 1`, `end + 2`, ... for ever.
    struct Gappy {
        next: u64,
        end: u64,
    }
    impl Iterator for Gappy {
        type Item = u64;
        fn next(&mut self) -> Option<u64> {
            let n = self.next;
            self.next += 1;
            (n != self.end).then_some(n)
        }
    }
    let pool = two_workers(8);
    // The end inside the first chunks (handed to the workers), and after the map has
    // moved to the caller (cheap items).
    for end in [5, 1_000] {
        let gappy = || Gappy { next: 0, end };
        // `take` bounds a map that reads past the end: it fails instead of running on.
        let by_next: Vec<u64> = pool
            .map(gappy(), |n| n)
            .take(end as usize + 10)
            .map(Result::unwrap)
            .collect();
        assert_eq!(by_next, (0..end).collect::<Vec<_>>());
        let mut map = pool.map(gappy(), |n| n);
        assert_eq!(map.by_ref().take(end as usize).count() as u64, end);
        assert!(map.next().is_none());
        let mut by_fold = Vec::new();
        let mut map = pool.map(gappy(), |n| n);
        map.by_ref()
            .take(end as usize / 2)
            .for_each(|r| by_fold.push(r.unwrap()));
        // Ends the first time the input does (an endless `for_each` would hang here).
        map.for_each(|r| {
            assert!(by_fold.len() < end as usize + 10, "read past the end");
            by_fold.push(r.unwrap());
        });
        assert_eq!(by_fold, (0..end).collect::<Vec<_>>());
    }
}

#[test]
fn map_on_a_scoped_pool_borrows() {
    let _check = LeakCheck::new();
    let words: Vec<String> = (0..300).map(|i| format!("w{i}")).collect();
    let suffix = String::from("!");
    let joined: Vec<String> = corral::scope(|s| {
        let pool = WorkerPool::builder().workers(2).build_scoped(s).unwrap();
        pool.map(&words, |w| format!("{w}{suffix}"))
            .collect::<Result<_, _>>()
            .unwrap()
    });
    assert_eq!(joined[299], "w299!");
}

/// Busy work of about `d` (not a wait for another thread: the item itself is slow).
fn compute_for(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

#[test]
fn map_keeps_cheap_items_on_the_caller() {
    let _check = LeakCheck::new();
    let pool = two_workers(256);
    // Tiny items: a hand-off costs more than a chunk's work, so after the first chunks
    // `map` stops queueing them and runs them itself. Chunks of 86 items (window 258
    // over three threads, well under a microsecond of work even in a debug build):
    // 117 chunks, each one a submitted task when queued, and the queue has room for
    // all of them. (Before, every chunk was queued.) A chunk the machine's load
    // stretches past the line sends the next one to the workers, hence "few".
    let results = pool.map(0..10_000u64, |n| n ^ 0x5a);
    for (i, result) in results.enumerate() {
        assert_eq!(result.unwrap(), i as u64 ^ 0x5a);
    }
    let queued = pool.stats().submitted;
    assert!(queued < 30, "{queued} of 117 cheap chunks were queued");
    assert_eq!(pool.shutdown().panicked, 0);
}

#[test]
fn map_hands_items_that_turn_expensive_back_to_the_workers() {
    let _check = LeakCheck::new();
    let pool = two_workers(64);
    let me = thread::current().id();
    // 20,000 cheap items (the caller runs them), then 1,000 of about 20 µs each: the
    // first slow chunk on the caller sends the following ones back to the workers.
    let results: Vec<(u64, thread::ThreadId)> = pool
        .map(0..21_000u64, |n| {
            if n >= 20_000 {
                compute_for(Duration::from_micros(20));
            }
            (n, thread::current().id())
        })
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(results.iter().enumerate().all(|(i, r)| r.0 == i as u64));
    let on_workers = results[20_000..].iter().filter(|r| r.1 != me).count();
    assert!(on_workers > 0, "every expensive item ran on the caller");
    assert_eq!(pool.shutdown().panicked, 0);
}

#[test]
fn map_items_pulled_after_close_yield_cancelled_on_the_caller_too() {
    let _check = LeakCheck::new();
    let pool = two_workers(8);
    let ran = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&ran);
    let mut map = pool.map(0..10_000u64, move |n| {
        counter.fetch_add(1, Ordering::SeqCst);
        n
    });
    for expected in 0..5_000 {
        assert_eq!(map.next().unwrap().unwrap(), expected);
    }
    pool.close();
    let rest: Vec<_> = map.collect();
    assert_eq!(rest.len(), 5_000);
    // What was pulled before the close may still run; nothing after the first
    // `Cancelled` does, and the window (8 + 2 items) bounds what was pulled.
    let ran_after = rest.iter().take_while(|r| r.is_ok()).count();
    assert!(ran_after <= 10, "{ran_after} items ran after close");
    assert!(rest[ran_after..]
        .iter()
        .all(|r| matches!(r, Err(TaskError::Cancelled))));
    assert_eq!(ran.load(Ordering::SeqCst), 5_000 + ran_after as u64);
}

#[test]
fn map_consumed_by_for_each_yields_cancelled_after_close() {
    let _check = LeakCheck::new();
    let pool = two_workers(8);
    let mut results = Vec::new();
    pool.map(0..10_000u64, |n| n).for_each(|result| {
        if results.len() == 5_000 {
            pool.close();
        }
        results.push(result);
    });
    assert_eq!(results.len(), 10_000);
    assert!(results[..5_000]
        .iter()
        .enumerate()
        .all(|(i, r)| *r.as_ref().unwrap() == i as u64));
    let ran_after = results[5_000..].iter().take_while(|r| r.is_ok()).count();
    assert!(ran_after <= 10, "{ran_after} items ran after close");
    assert!(results[5_000 + ran_after..]
        .iter()
        .all(|r| matches!(r, Err(TaskError::Cancelled))));
}

#[test]
fn map_on_a_closed_pool_yields_cancelled() {
    let _check = LeakCheck::new();
    let pool = WorkerPool::builder().workers(1).build().unwrap();
    pool.close();
    let results: Vec<_> = pool.map(0..3, |n| n).collect();
    assert_eq!(results.len(), 3);
    assert!(results
        .iter()
        .all(|r| matches!(r, Err(TaskError::Cancelled))));
}

/// 4 submitters x 50,000 tasks, 1% panicking, a mix of blocking submits, handles,
/// fire-and-forget and `try_submit` (refused when the small queue is full), then
/// `shutdown_now` while tasks are still queued. Every task ran exactly once, came back
/// to its submitter, or is reported as never run; the counts add up exactly.
#[test]
fn stress_every_task_is_accounted_for_exactly_once() {
    const SUBMITTERS: usize = 4;
    const PER: usize = 50_000;
    const TOTAL: usize = SUBMITTERS * PER;
    let _check = LeakCheck::new();
    let pool = WorkerPool::builder()
        .workers(3)
        .queue_capacity(64)
        .build()
        .unwrap();
    let runs: Arc<Vec<AtomicU64>> = Arc::new((0..TOTAL).map(|_| AtomicU64::new(0)).collect());
    let returned = AtomicUsize::new(0);
    let panics_planned = |id: usize| id % 100 == 37;
    let stop_at = TOTAL * 9 / 10;
    let accepted = AtomicUsize::new(0);

    let handles = thread::scope(|s| {
        let submitters: Vec<_> = (0..SUBMITTERS)
            .map(|k| {
                let (pool, runs, returned, accepted) = (&pool, &runs, &returned, &accepted);
                s.spawn(move || {
                    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ k as u64;
                    let mut handles = Vec::new();
                    for i in 0..PER {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        let id = k * PER + i;
                        let counts = Arc::clone(runs);
                        let task = move || {
                            counts[id].fetch_add(1, Ordering::SeqCst);
                            if panics_planned(id) {
                                panic!("planned panic {id}");
                            }
                        };
                        let outcome = match rng % 4 {
                            0 => pool.try_submit(task).map(Some),
                            1 => pool.submit(task).map(Some),
                            2 => pool.try_execute(task).map(|()| None),
                            _ => pool.execute(task).map(|()| None),
                        };
                        match outcome {
                            Ok(handle) => {
                                accepted.fetch_add(1, Ordering::SeqCst);
                                handles.extend(handle.map(|h| (id, h)));
                            }
                            Err(refused) => {
                                // Came back to its submitter, unrun.
                                assert!(refused.is_full() || refused.is_closed());
                                assert_eq!(runs[id].load(Ordering::SeqCst), 0);
                                returned.fetch_add(1, Ordering::SeqCst);
                                drop(refused.into_inner());
                            }
                        }
                    }
                    handles
                })
            })
            .collect();
        wait_for("most tasks to be submitted", || {
            accepted.load(Ordering::SeqCst) + returned.load(Ordering::SeqCst) >= stop_at
        });
        pool.close(); // the rest come back as `Closed`
        submitters
            .into_iter()
            .flat_map(|s| s.join().unwrap())
            .collect::<Vec<_>>()
    });
    // Whatever is still queued now never runs.
    let report = pool.shutdown_now();

    let (mut ok, mut panicked, mut cancelled) = (0u64, 0u64, 0u64);
    for (id, handle) in handles {
        match handle.join() {
            Ok(()) => ok += 1,
            Err(TaskError::Panicked(p)) => {
                assert!(panics_planned(id));
                assert_eq!(p.message(), Some(&*format!("planned panic {id}")));
                panicked += 1;
            }
            Err(_) => {
                assert_eq!(runs[id].load(Ordering::SeqCst), 0);
                cancelled += 1;
            }
        }
    }
    assert!(ok <= report.completed && panicked <= report.panicked);
    assert!(cancelled <= report.never_ran);
    let ran_once = runs
        .iter()
        .filter(|r| r.load(Ordering::SeqCst) == 1)
        .count();
    assert!(
        runs.iter().all(|r| r.load(Ordering::SeqCst) <= 1),
        "a task ran twice"
    );
    let panicked_ran = runs
        .iter()
        .enumerate()
        .filter(|(id, r)| panics_planned(*id) && r.load(Ordering::SeqCst) == 1)
        .count();
    let returned = returned.load(Ordering::SeqCst);
    let accepted = accepted.load(Ordering::SeqCst);
    assert_eq!(accepted + returned, TOTAL);
    assert_eq!(ran_once as u64, report.completed + report.panicked);
    assert_eq!(panicked_ran as u64, report.panicked);
    assert_eq!(
        accepted as u64,
        report.completed + report.panicked + report.never_ran
    );
    assert_eq!(ran_once + returned + report.never_ran as usize, TOTAL);
    assert_eq!(report.rejected as usize, returned);
    assert!(
        returned > 0,
        "the small queue should have refused some try_submits"
    );
    assert!(report.panicked > 0, "1% of the tasks panic");
}

#[test]
fn cancelling_the_pool_token_closes_the_pool() {
    let _check = LeakCheck::new();
    let pool = WorkerPool::builder().workers(1).build().unwrap();
    assert!(!pool.is_closed());
    pool.token().cancel();
    assert!(pool.is_closed());
    assert!(pool.submit(|| 1).unwrap_err().is_closed());
    assert!(pool.try_execute(|| ()).unwrap_err().is_closed());
    assert_eq!(pool.shutdown().rejected, 2);
}

// ---- The pool stopped from inside one of its own tasks (a thread cannot join itself).

/// A leak check that gives a worker left to finish its own task time to exit.
fn patient_check() -> LeakCheck {
    LeakCheck::builder().grace(LONG).build()
}

#[test]
fn dropping_the_last_arc_of_a_pool_inside_its_own_task_joins_the_others_and_runs_the_queue() {
    let _check = patient_check();
    for workers in [1, 3] {
        let pool = Arc::new(
            WorkerPool::builder()
                .workers(workers)
                .queue_capacity(64)
                .build()
                .unwrap(),
        );
        let ran = Arc::new(AtomicUsize::new(0));
        let (open, gate) = mpsc::channel::<()>();
        let last = Arc::clone(&pool);
        let dropper = pool
            .submit(move || {
                gate.recv().unwrap();
                drop(last); // the last reference: the pool shuts down on this worker
                "finished"
            })
            .unwrap();
        let counted: Vec<_> = (0..20)
            .map(|_| {
                let ran = Arc::clone(&ran);
                pool.submit(move || ran.fetch_add(1, Ordering::SeqCst))
                    .unwrap()
            })
            .collect();
        drop(pool);
        open.send(()).unwrap();
        // Without the fix std panics ("Resource deadlock avoided") inside the task.
        assert_eq!(dropper.join().unwrap(), "finished");
        for handle in counted {
            handle.join().unwrap();
        }
        assert_eq!(ran.load(Ordering::SeqCst), 20);
    }
}

/// Hands `pool` to a task already queued on it, which shuts it down with `stop`, and
/// returns what `stop` returned (sent back from inside the task).
fn stop_inside<R: Send + 'static>(
    workers: usize,
    queued: usize,
    stop: impl FnOnce(WorkerPool) -> R + Send + 'static,
) -> (R, Arc<AtomicUsize>) {
    let pool = WorkerPool::builder()
        .workers(workers)
        .queue_capacity(64)
        .build()
        .unwrap();
    let (give, take) = mpsc::channel::<WorkerPool>();
    let (back, out) = mpsc::channel::<R>();
    let stopper = pool
        .submit(move || {
            let pool = take.recv().unwrap();
            back.send(stop(pool)).unwrap();
        })
        .unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..queued {
        let ran = Arc::clone(&ran);
        pool.execute(move || {
            ran.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    }
    give.send(pool).unwrap();
    let result = out.recv_timeout(LONG).expect("the stopping task finished");
    stopper.join().unwrap();
    (result, ran)
}

#[test]
fn shutdown_called_inside_a_task_of_its_own_pool_runs_the_queue_and_reports() {
    let _check = patient_check();
    for workers in [1, 2] {
        let (report, ran) = stop_inside(workers, 10, WorkerPool::shutdown);
        assert_eq!(ran.load(Ordering::SeqCst), 10);
        // The task that shut the pool down was still running: not counted.
        assert_eq!((report.completed, report.never_ran), (10, 0));
    }
}

#[test]
fn shutdown_now_called_inside_a_task_of_its_own_pool_reports_what_never_ran() {
    let _check = patient_check();
    let (report, ran) = stop_inside(1, 10, WorkerPool::shutdown_now);
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert_eq!((report.completed, report.never_ran), (0, 10));
}

#[test]
fn shutdown_timeout_called_inside_a_task_of_its_own_pool_does_not_wait_for_itself() {
    let _check = patient_check();
    for workers in [1, 3] {
        let (report, ran) = stop_inside(workers, 5, |pool| {
            pool.shutdown_timeout(LONG)
                .map_err(|_| "handed back")
                .unwrap()
        });
        assert_eq!(ran.load(Ordering::SeqCst), 5);
        assert_eq!(report.completed, 5);
    }
}

#[test]
fn a_scoped_pool_dropped_inside_its_own_task_joins_the_others() {
    let _check = patient_check();
    let ran = AtomicUsize::new(0);
    corral::scope(|s| {
        let pool = WorkerPool::builder().workers(2).build_scoped(s).unwrap();
        let (give, take) = mpsc::channel::<ScopedPool<'_>>();
        let dropper = pool.submit(move || drop(take.recv().unwrap())).unwrap();
        for _ in 0..10 {
            pool.execute(|| {
                ran.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        }
        give.send(pool).unwrap();
        dropper.join().unwrap();
    });
    assert_eq!(ran.load(Ordering::SeqCst), 10);
}

// ---- Re-entrancy.

#[test]
fn a_blocking_submit_from_a_worker_to_its_own_full_pool_runs_the_task_instead_of_deadlocking() {
    let _check = LeakCheck::new();
    let pool = Arc::new(
        WorkerPool::builder()
            .workers(1)
            .queue_capacity(1)
            .build()
            .unwrap(),
    );
    let inner = Arc::clone(&pool);
    let outer = pool
        .submit(move || {
            // The only worker is here: the first fills the queue, the rest find it full.
            let handles: Vec<_> = (0..3)
                .map(|i| inner.submit(move || i * 10).unwrap())
                .collect();
            drop(inner);
            handles
        })
        .unwrap();
    let handles = outer.join_timeout(LONG).expect("no deadlock").unwrap();
    let values: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(values, vec![0, 10, 20]);
    let pool = Arc::try_unwrap(pool).unwrap();
    assert_eq!(pool.stats().caller_ran, 2);
    assert_eq!(pool.shutdown().completed, 4);
}

#[test]
fn caller_runs_recursion_is_refused_beyond_its_depth_instead_of_overflowing_the_stack() {
    let _check = LeakCheck::new();
    let (pool, open) = blocked_pool(
        WorkerPool::builder()
            .queue_capacity(1)
            .overflow(Overflow::CallerRuns),
    );
    pool.execute(|| ()).unwrap(); // fills the queue: every submit now runs on the caller
    fn nest(pool: &WorkerPool, level: u32, deepest: &AtomicU64, refused: &AtomicBool) {
        deepest.fetch_max(u64::from(level), Ordering::SeqCst);
        // Borrowing closures need a scoped pool; carry raw addresses instead.
        let (p, d, r) = (
            pool as *const WorkerPool as usize,
            deepest as *const AtomicU64 as usize,
            refused as *const AtomicBool as usize,
        );
        let submitted = pool.execute(move || {
            // SAFETY (test): the caller runs this inline, while the references live.
            let (pool, deepest, refused) = unsafe {
                (
                    &*(p as *const WorkerPool),
                    &*(d as *const AtomicU64),
                    &*(r as *const AtomicBool),
                )
            };
            nest(pool, level + 1, deepest, refused);
        });
        if let Err(e) = submitted {
            assert!(e.is_full());
            refused.store(true, Ordering::SeqCst);
        }
    }
    let deepest = AtomicU64::new(0);
    let refused = AtomicBool::new(false);
    nest(&pool, 0, &deepest, &refused);
    assert!(
        refused.load(Ordering::SeqCst),
        "a depth limit refused the deepest submit"
    );
    assert_eq!(deepest.load(Ordering::SeqCst), 64);
    open.send(()).unwrap();
    pool.shutdown();
}

// ---- User values that panic where the pool drops them.

/// A panic payload whose destructor panics too.
struct PayloadBomb;

impl Drop for PayloadBomb {
    fn drop(&mut self) {
        if !thread::panicking() {
            panic!("a panic payload that panics when dropped");
        }
    }
}

#[test]
fn a_panic_payload_that_panics_on_drop_does_not_cost_a_worker() {
    let _check = LeakCheck::new();
    let pool = WorkerPool::builder().workers(1).build().unwrap();
    for _ in 0..3 {
        pool.execute(|| std::panic::panic_any(PayloadBomb)).unwrap();
    }
    // The worker dropped the second and third payloads (the first is kept).
    let after = pool.submit(|| 5).unwrap();
    assert_eq!(
        after
            .join_timeout(LONG)
            .expect("the worker is alive")
            .unwrap(),
        5
    );
    let report = pool.shutdown();
    assert_eq!(report.panicked, 3);
    // The kept payload is the user's to drop.
    std::mem::forget(
        report
            .first_panic
            .expect("the first panic is kept")
            .into_payload(),
    );
}

// ---- Races of close / cancel against submit and map.

#[test]
fn cancelling_the_pool_token_while_submitters_race_loses_no_task() {
    let _check = LeakCheck::new();
    for round in 0..10 {
        let pool = Arc::new(two_workers(4));
        let refused = Arc::new(AtomicU64::new(0));
        let submitters: Vec<_> = (0..3)
            .map(|_| {
                let (pool, refused) = (Arc::clone(&pool), Arc::clone(&refused));
                thread::spawn(move || {
                    let mut handles = Vec::new();
                    for i in 0..200u64 {
                        match pool.submit(move || i) {
                            Ok(handle) => handles.push(handle),
                            Err(e) => {
                                assert!(e.is_closed());
                                refused.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                    handles
                })
            })
            .collect();
        wait_for("some tasks to run", || pool.stats().completed > 10 * round);
        if round % 2 == 0 {
            pool.token().cancel();
        } else {
            pool.close();
        }
        let handles: Vec<_> = submitters
            .into_iter()
            .flat_map(|s| s.join().unwrap())
            .collect();
        let accepted = handles.len() as u64;
        let (mut ok, mut cancelled) = (0, 0);
        for handle in handles {
            match handle.join() {
                Ok(_) => ok += 1,
                Err(e) => {
                    assert!(e.is_cancelled());
                    cancelled += 1;
                }
            }
        }
        let report = Arc::try_unwrap(pool).unwrap().shutdown();
        assert_eq!(accepted + refused.load(Ordering::SeqCst), 600);
        assert_eq!((report.completed, report.never_ran), (ok, cancelled));
        assert_eq!(report.rejected, refused.load(Ordering::SeqCst));
    }
}

#[test]
fn cancelling_the_pool_token_during_a_map_yields_one_result_per_item() {
    let _check = LeakCheck::new();
    let pool = two_workers(8);
    let token = pool.token().clone();
    let mut results = 0usize;
    let mut cancelled = 0usize;
    for (i, result) in pool
        .map(0..20_000u64, |n| {
            thread::yield_now();
            n
        })
        .enumerate()
    {
        if i == 500 {
            token.cancel();
        }
        results += 1;
        match result {
            Ok(n) => assert!(n < 20_000),
            Err(e) => {
                assert!(e.is_cancelled());
                cancelled += 1;
            }
        }
    }
    assert_eq!(results, 20_000);
    assert!(cancelled > 0);
    pool.shutdown();
}

#[test]
fn an_on_drop_callback_that_resubmits_to_its_full_pool_does_not_overflow_the_stack() {
    let _check = LeakCheck::new();
    let pool_slot: Arc<std::sync::OnceLock<std::sync::Weak<WorkerPool>>> = Arc::default();
    let calls = Arc::new(AtomicU64::new(0));
    let (slot, counter) = (Arc::clone(&pool_slot), Arc::clone(&calls));
    let pool = Arc::new(
        WorkerPool::builder()
            .workers(1)
            .queue_capacity(1)
            .overflow(Overflow::DropNewest)
            .on_drop(move |task| {
                counter.fetch_add(1, Ordering::SeqCst);
                drop(task);
                // Retry: the queue is still full, so this sheds again, re-entering here.
                if let Some(pool) = slot.get().and_then(std::sync::Weak::upgrade) {
                    pool.execute(|| ()).unwrap();
                }
            })
            .build()
            .unwrap(),
    );
    let (open, blocker) = gate();
    pool.execute(blocker).unwrap();
    wait_for("the worker to take the blocker", || pool.stats().busy == 1);
    pool.execute(|| ()).unwrap(); // fills the queue
    pool_slot.set(Arc::downgrade(&pool)).unwrap();
    pool.execute(|| ()).unwrap(); // shed: the callback re-submits, nested, until the cap
    let calls = calls.load(Ordering::SeqCst);
    assert_eq!(calls, 64, "nested callbacks stop at the depth limit");
    open.send(()).unwrap();
    let pool = Arc::try_unwrap(pool).unwrap_or_else(|_| panic!("pool still shared"));
    let report = pool.shutdown();
    assert_eq!(report.dropped, calls + 1);
}

#[test]
fn an_on_drop_callback_that_cancels_the_pool_loses_no_task() {
    let _check = LeakCheck::new();
    let token_slot: Arc<std::sync::OnceLock<CancelToken>> = Arc::default();
    let slot = Arc::clone(&token_slot);
    let (pool, open) = blocked_pool(
        WorkerPool::builder()
            .queue_capacity(2)
            .overflow(Overflow::DropOldest)
            .on_drop(move |task| {
                drop(task);
                slot.get().unwrap().cancel();
            }),
    );
    token_slot.set(pool.token().clone()).unwrap();
    let handles: Vec<_> = (0..2).map(|i| pool.submit(move || i).unwrap()).collect();
    // Evicts the oldest: the callback cancels the pool, which now refuses everything.
    let third = pool.submit(|| 2);
    assert!(pool.submit(|| 3).unwrap_err().is_closed());
    open.send(()).unwrap();
    let report = pool.shutdown();
    let mut resolved = 0;
    for handle in handles.into_iter().chain(third.ok()) {
        let _ = handle.join(); // resolves: a value or `Cancelled`, never a hang
        resolved += 1;
    }
    assert!(resolved >= 2);
    assert_eq!(
        report.completed + report.never_ran + report.dropped,
        1 + resolved,
        "{report:?}"
    );
}

/// A value whose destructor panics.
struct LoudDrop(u32);

impl Drop for LoudDrop {
    fn drop(&mut self) {
        if !thread::panicking() {
            panic!("a value that panics when dropped");
        }
    }
}

#[test]
fn a_result_that_panics_on_drop_behind_a_dropped_handle_does_not_cost_a_worker() {
    let _check = LeakCheck::new();
    let pool = WorkerPool::builder().workers(1).build().unwrap();
    let (open, gate) = mpsc::channel::<()>();
    let handle = pool
        .submit(move || {
            gate.recv().ok();
            LoudDrop(1)
        })
        .unwrap();
    drop(handle); // before the task ends: the worker drops the result
    open.send(()).unwrap();
    let after = pool.submit(|| 2).unwrap();
    assert_eq!(
        after
            .join_timeout(LONG)
            .expect("the worker is alive")
            .unwrap(),
        2
    );
    let report = pool.shutdown();
    assert_eq!(report.completed, 2);
    // Nobody could receive the destructor's panic: the report keeps it.
    let kept = report.first_panic.expect("the destructor's panic is kept");
    assert_eq!(kept.message(), Some("a value that panics when dropped"));
}

#[test]
fn map_items_that_panic_on_drop_yield_one_result_each() {
    let _check = LeakCheck::new();
    let pool = two_workers(4);
    let items: Vec<LoudDrop> = (0..500).map(LoudDrop).collect();
    let results: Vec<_> = pool.map(items, |item| item.0).collect();
    assert_eq!(results.len(), 500);
    // Each item is dropped inside the closure's call: its panic is that item's result.
    assert!(results
        .iter()
        .all(|r| r.as_ref().unwrap_err().is_panicked()));
    pool.shutdown();
}

#[test]
fn a_never_run_task_whose_capture_panics_on_drop_is_reported_not_lost() {
    let _check = LeakCheck::new();
    let (pool, open) = blocked_pool(WorkerPool::builder().queue_capacity(4));
    let loud = LoudDrop(3);
    let handle = pool
        .submit(move || {
            let _keep = &loud;
        })
        .unwrap();
    let stopper = thread::spawn(move || pool.shutdown_now());
    wait_for("the queued task to be dropped unrun", || {
        handle.is_finished()
    });
    open.send(()).unwrap();
    let report = stopper.join().unwrap();
    assert!(handle.join().unwrap_err().is_cancelled());
    assert_eq!(report.never_ran, 1);
    let kept = report.first_panic.expect("the capture's panic is kept");
    assert_eq!(kept.message(), Some("a value that panics when dropped"));
}

/// An input item whose `Drop` panics (when it is item 3) if `map` lets go of it
/// without running it: the mapped function forgets the items it runs.
struct LoudItem(u32);

impl Drop for LoudItem {
    fn drop(&mut self) {
        if self.0 == 3 && !thread::panicking() {
            panic!("item 3's drop");
        }
    }
}

fn forget_item(item: LoudItem) -> u32 {
    let id = item.0;
    std::mem::forget(item);
    id
}

/// On a closed pool, `map` dropped its unrun items outside the panic boundary: the
/// item's panic escaped from `next()`. Now each item yields `Cancelled` and the panic
/// is kept for the shutdown report.
#[test]
fn map_items_dropped_unrun_with_a_panicking_drop_yield_cancelled_and_the_panic_is_reported() {
    let _check = LeakCheck::new();
    let pool = WorkerPool::builder()
        .workers(1)
        .queue_capacity(1)
        .build()
        .unwrap();
    pool.close();
    let results: Vec<_> = pool.map((0..8).map(LoudItem), forget_item).collect();
    assert_eq!(results.len(), 8);
    assert!(results
        .iter()
        .all(|r| matches!(r, Err(TaskError::Cancelled))));
    let report = pool.shutdown();
    assert_eq!(
        report.first_panic.as_ref().and_then(|p| p.message()),
        Some("item 3's drop")
    );
}

/// A map dropped early lets go of the items it pulled but did not run inside the
/// panic boundary too.
#[test]
fn a_map_dropped_early_drops_its_unrun_items_inside_the_boundary() {
    let _check = LeakCheck::new();
    let pool = WorkerPool::builder()
        .workers(1)
        .queue_capacity(3)
        .build()
        .unwrap();
    let (started_tx, started_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    // Keep the only worker busy and its queue full: the map's chunks stay with the
    // map, and those it has not run are still there when it is dropped.
    let gate = pool
        .submit(move || {
            started_tx.send(()).unwrap();
            go_rx.recv().unwrap();
        })
        .unwrap();
    started_rx.recv().unwrap();
    let fillers: Vec<_> = (0..3).map(|_| pool.try_submit(|| ()).unwrap()).collect();
    let mut map = pool.map((0..16).map(LoudItem), forget_item);
    assert_eq!(map.next().unwrap().unwrap(), 0);
    drop(map); // must not panic
    go_tx.send(()).unwrap();
    gate.join().unwrap();
    fillers
        .into_iter()
        .for_each(|filler| filler.join().unwrap());
    let report = pool.shutdown();
    assert_eq!(
        report.first_panic.as_ref().and_then(|p| p.message()),
        Some("item 3's drop")
    );
}

/// `map` run on the pool's only worker joined a chunk still in the queue once the
/// pool's token was cancelled: no worker would ever take it, so the map, the task and
/// every shutdown hung. Now the map takes such a chunk back and yields `Cancelled`.
#[test]
fn map_on_its_own_pools_only_worker_ends_after_the_token_is_cancelled() {
    let _check = LeakCheck::new();
    let pool = Arc::new(
        WorkerPool::builder()
            .workers(1)
            .queue_capacity(8)
            .build()
            .unwrap(),
    );
    let (first_tx, first_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let me = Arc::downgrade(&pool);
    let handle = pool
        .submit(move || {
            let pool = me.upgrade().unwrap();
            let mut results = pool.map(0..100usize, |x| x);
            first_tx.send(results.next()).unwrap();
            go_rx.recv().unwrap();
            let rest: Vec<_> = results.collect();
            (rest.len(), rest.iter().any(Result::is_err))
        })
        .unwrap();
    assert!(matches!(first_rx.recv().unwrap(), Some(Ok(0))));
    pool.token().cancel();
    go_tx.send(()).unwrap();
    let (rest, some_cancelled) = handle
        .join_timeout(Duration::from_secs(60))
        .expect("the map on the pool's only worker ended")
        .unwrap();
    assert_eq!(rest, 99, "every item yields one result");
    assert!(some_cancelled);
    drop(pool); // whichever side lets go last shuts the pool down
}

/// A task that joined its own handle waited for itself for ever (it cannot finish
/// while it waits). Every join form now gives up at once with `JoinedFromItself`.
#[test]
fn a_task_joining_its_own_handle_gets_an_error_instead_of_waiting_for_ever() {
    let _check = LeakCheck::new();
    let pool = WorkerPool::builder().workers(1).build().unwrap();
    for bounded in [false, true] {
        let (handle_tx, handle_rx) = mpsc::channel::<TaskHandle<()>>();
        let (out_tx, out_rx) = mpsc::channel();
        let handle = pool
            .submit(move || {
                let me = handle_rx.recv().unwrap();
                let joined = if bounded {
                    me.join_timeout(Duration::MAX)
                        .expect("no waiting for itself")
                } else {
                    me.join()
                };
                out_tx.send(joined).unwrap();
            })
            .unwrap();
        handle_tx.send(handle).unwrap();
        let joined = out_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the task's join of itself returned");
        assert!(
            matches!(joined, Err(TaskError::JoinedFromItself)),
            "{joined:?}"
        );
    }
    let report = pool.shutdown();
    assert_eq!(report.completed, 2);
}

// ---------------------------------------------------------------------------------
// wait_idle
// ---------------------------------------------------------------------------------

use corral::pool::IdleError;

#[test]
fn wait_idle_returns_once_every_earlier_task_has_run_and_leaves_the_pool_open() {
    let _check = LeakCheck::new();
    let pool = two_workers(8);
    let ran = Arc::new(AtomicUsize::new(0));
    for round in 1..=3 {
        for _ in 0..200 {
            let ran = Arc::clone(&ran);
            pool.execute(move || {
                ran.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        }
        pool.wait_idle().unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), 200 * round);
        assert_eq!(pool.try_wait_idle(), Ok(()));
        assert!(!pool.is_closed());
    }
    assert_eq!(pool.shutdown().completed, 600);
}

#[test]
fn wait_idle_on_an_idle_pool_returns_at_once_whatever_the_bound() {
    let _check = LeakCheck::new();
    let pool = two_workers(4);
    let cancelled = CancelToken::new();
    cancelled.cancel();
    for _ in 0..2 {
        assert_eq!(pool.try_wait_idle(), Ok(()));
        assert_eq!(pool.wait_idle_timeout(Duration::ZERO), Ok(()));
        assert_eq!(pool.wait_idle_timeout(Duration::MAX), Ok(()));
        assert_eq!(pool.wait_idle_deadline(Instant::now()), Ok(()));
        assert_eq!(pool.wait_idle_cancellable(&cancelled), Ok(()));
        assert_eq!(pool.wait_idle(), Ok(()));
        pool.submit(|| ()).unwrap().join().unwrap();
        // A join returns once the result is in, a moment before the worker counts
        // the task finished: `wait_idle` covers that moment, `try_` may not.
        pool.wait_idle().unwrap();
    }
    pool.shutdown();
}

#[test]
fn wait_idle_waits_for_a_running_task_and_its_bounded_forms_give_up() {
    let _check = LeakCheck::new();
    let (pool, open) = blocked_pool(WorkerPool::builder());
    assert_eq!(pool.try_wait_idle(), Err(IdleError::Busy));
    assert_eq!(
        pool.wait_idle_timeout(Duration::from_millis(1)),
        Err(IdleError::Timeout)
    );
    assert_eq!(
        pool.wait_idle_deadline(Instant::now()),
        Err(IdleError::Timeout)
    );
    let token = CancelToken::new();
    token.cancel();
    assert_eq!(
        pool.wait_idle_cancellable(&token),
        Err(IdleError::Cancelled(CancelReason::Cancelled))
    );
    // A cancel from another thread wakes a waiter.
    let token = CancelToken::new();
    thread::scope(|s| {
        let waiter = s.spawn(|| pool.wait_idle_cancellable(&token));
        token.cancel();
        assert_eq!(
            waiter.join().unwrap(),
            Err(IdleError::Cancelled(CancelReason::Cancelled))
        );
    });
    // The unbounded wait returns once the task ends, and not before.
    let finished = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&finished);
    thread::scope(|s| {
        let waiter = s.spawn(|| {
            pool.wait_idle().unwrap();
            flag.load(Ordering::SeqCst)
        });
        // The queued task ends after the blocker, which the gate holds.
        let set = Arc::clone(&finished);
        pool.execute(move || set.store(true, Ordering::SeqCst))
            .unwrap();
        open.send(()).unwrap();
        // Whether or not the waiter counted the queued task, the blocker was before.
        waiter.join().unwrap();
    });
    pool.wait_idle().unwrap();
    assert!(finished.load(Ordering::SeqCst));
    assert_eq!(pool.shutdown().completed, 2);
}

#[test]
fn wait_idle_under_concurrent_submitters_waits_for_every_earlier_task_and_ends() {
    const SUBMITTERS: usize = 3;
    const MAX: usize = 1 << 20;
    let _check = LeakCheck::new();
    // `ran[s][i]`: task `i` of submitter `s` has run; `accepted[s]`: how many of
    // submitter `s`'s tasks were accepted (published after `execute` returned).
    let ran: Vec<Vec<AtomicBool>> = (0..SUBMITTERS)
        .map(|_| (0..MAX).map(|_| AtomicBool::new(false)).collect())
        .collect();
    let accepted: Vec<AtomicUsize> = (0..SUBMITTERS).map(|_| AtomicUsize::new(0)).collect();
    let stop = AtomicBool::new(false);
    // Newest first: the task most likely still pending is checked before time passes.
    let all_ran = |id: usize, n: usize| ran[id][..n].iter().rev().all(|r| r.load(Ordering::SeqCst));
    corral::scope(|s| {
        // A scoped pool: its tasks borrow `ran`.
        let pool = WorkerPool::builder()
            .workers(2)
            .queue_capacity(64)
            .build_scoped(s)
            .unwrap();
        thread::scope(|ts| {
            let (pool, ran, accepted, stop) = (&pool, &ran, &accepted, &stop);
            let submitters: Vec<_> = (0..SUBMITTERS)
                .map(|id| {
                    ts.spawn(move || {
                        let mut i = 0;
                        while !stop.load(Ordering::SeqCst) && i < MAX {
                            let flag = &ran[id][i];
                            pool.execute(move || {
                                // Some work, so that tasks are still queued and
                                // running when a wait returns early.
                                let mut x = i as u64;
                                for _ in 0..2_000 {
                                    x = std::hint::black_box(x.wrapping_mul(31).rotate_left(3));
                                }
                                std::hint::black_box(x);
                                flag.store(true, Ordering::SeqCst)
                            })
                            .unwrap();
                            i += 1;
                            accepted[id].store(i, Ordering::SeqCst);
                        }
                        i
                    })
                })
                .collect();
            // Stops the submitters on the way out, also when a check below fails.
            struct Stop<'a>(&'a AtomicBool);
            impl Drop for Stop<'_> {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::SeqCst);
                }
            }
            let stopper = Stop(stop);
            for _ in 0..20 {
                let before: Vec<usize> =
                    accepted.iter().map(|a| a.load(Ordering::SeqCst)).collect();
                pool.wait_idle().unwrap();
                for (id, &n) in before.iter().enumerate() {
                    assert!(
                        all_ran(id, n),
                        "a task of submitter {id} accepted before the wait had not run"
                    );
                }
            }
            // The waits ended while the submitters were still going.
            drop(stopper);
            for submitter in submitters {
                assert!(submitter.join().unwrap() < MAX);
            }
        });
        pool.wait_idle().unwrap();
        for (id, n) in accepted.iter().enumerate() {
            assert!(all_ran(id, n.load(Ordering::SeqCst)));
        }
    });
}

#[test]
fn wait_idle_counts_tasks_that_ended_without_running_on_a_worker() {
    let _check = LeakCheck::new();
    // Displaced by the overflow policy, and run by the submitter.
    for overflow in [
        Overflow::DropNewest,
        Overflow::DropOldest,
        Overflow::CallerRuns,
    ] {
        let (pool, open) = blocked_pool(WorkerPool::builder().queue_capacity(1).overflow(overflow));
        for _ in 0..5 {
            pool.execute(|| ()).unwrap();
        }
        assert_eq!(pool.try_wait_idle(), Err(IdleError::Busy), "{overflow:?}");
        open.send(()).unwrap();
        pool.wait_idle().unwrap();
        let stats = pool.stats();
        assert_eq!(
            stats.completed + stats.dropped,
            stats.submitted,
            "{overflow:?}: {stats:?}"
        );
        pool.shutdown();
    }
    // Dropped unrun by a cancelled pool token.
    let (pool, open) = blocked_pool(WorkerPool::builder().queue_capacity(4));
    let queued: Vec<_> = (0..4).map(|i| pool.submit(move || i).unwrap()).collect();
    pool.token().cancel();
    open.send(()).unwrap();
    pool.wait_idle().unwrap();
    assert!(queued
        .into_iter()
        .all(|h| h.join().unwrap_err().is_cancelled()));
    assert_eq!(pool.stats().cancelled, 4);
    pool.shutdown();
}

#[test]
fn wait_idle_from_inside_the_pools_own_task_is_refused_at_once() {
    let _check = LeakCheck::new();
    let pool = Arc::new(two_workers(4));
    let inner = Arc::clone(&pool);
    let on_worker = pool
        .submit(move || (inner.wait_idle(), inner.wait_idle_timeout(Duration::MAX)))
        .unwrap();
    assert_eq!(
        on_worker.join().unwrap(),
        (Err(IdleError::InsideOwnTask), Err(IdleError::InsideOwnTask))
    );
    // Run inline by its submitter (`CallerRuns` on a full queue).
    let (pool, open) = blocked_pool(
        WorkerPool::builder()
            .queue_capacity(1)
            .overflow(Overflow::CallerRuns),
    );
    let pool = Arc::new(pool);
    pool.execute(|| ()).unwrap(); // fills the queue
    let inner = Arc::clone(&pool);
    let inline = pool.submit(move || inner.try_wait_idle()).unwrap();
    assert_eq!(inline.join().unwrap(), Err(IdleError::InsideOwnTask));
    assert_eq!(pool.stats().caller_ran, 1);
    open.send(()).unwrap();
    pool.wait_idle().unwrap();
}

// ---------------------------------------------------------------------------------
// TaskHandle::cancel
// ---------------------------------------------------------------------------------

/// Counts drops of a capture.
struct Dropped(Arc<AtomicUsize>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn cancelling_a_queued_task_resolves_its_handle_at_once_and_it_never_runs() {
    let _check = LeakCheck::new();
    let (pool, open) = blocked_pool(WorkerPool::builder().queue_capacity(4));
    let ran = Arc::new(AtomicBool::new(false));
    let drops = Arc::new(AtomicUsize::new(0));
    let (flag, capture) = (Arc::clone(&ran), Dropped(Arc::clone(&drops)));
    let handle = pool
        .submit(move || {
            let _keep = &capture;
            flag.store(true, Ordering::SeqCst);
        })
        .unwrap();
    assert!(handle.cancel());
    assert!(!handle.cancel(), "a second cancel finds it decided");
    assert!(handle.is_finished());
    // The worker is still blocked: the join does not wait for it.
    assert!(matches!(handle.join(), Err(TaskError::Cancelled)));
    open.send(()).unwrap();
    pool.wait_idle().unwrap();
    assert!(!ran.load(Ordering::SeqCst));
    assert_eq!(drops.load(Ordering::SeqCst), 1, "dropped by the pool, once");
    let stats = pool.stats();
    assert_eq!((stats.cancelled, stats.completed), (1, 1));
    let report = pool.shutdown();
    assert_eq!(report.never_ran, 1);
}

#[test]
fn cancelling_a_running_task_cancels_its_own_token_only() {
    let _check = LeakCheck::new();
    let pool = two_workers(4);
    let (started_tx, started) = mpsc::channel();
    let (other_tx, other_started) = mpsc::channel();
    let running = pool
        .submit_with_token(move |token| {
            started_tx.send(()).unwrap();
            token.wait()
        })
        .unwrap();
    let (release, gate_rx) = mpsc::channel::<()>();
    let sibling = pool
        .submit_with_token(move |token| {
            other_tx.send(()).unwrap();
            let _ = gate_rx.recv();
            token.is_cancelled()
        })
        .unwrap();
    started.recv().unwrap();
    other_started.recv().unwrap();
    assert!(!running.cancel(), "it had started");
    assert_eq!(running.join().unwrap(), CancelReason::Cancelled);
    release.send(()).unwrap();
    assert!(!sibling.join().unwrap(), "a sibling's token is its own");
    assert!(!pool.token().is_cancelled());
    // A plain task that has started runs to its end.
    let (started_tx, started) = mpsc::channel();
    let (release, gate_rx) = mpsc::channel::<()>();
    let plain = pool
        .submit(move || {
            started_tx.send(()).unwrap();
            gate_rx.recv().unwrap();
            7
        })
        .unwrap();
    started.recv().unwrap();
    assert!(!plain.cancel());
    release.send(()).unwrap();
    assert_eq!(plain.join().unwrap(), 7);
    // A finished one keeps its value.
    let done = pool.submit(|| 8).unwrap();
    pool.wait_idle().unwrap();
    assert!(!done.cancel());
    assert_eq!(done.join().unwrap(), 8);
    let report = pool.shutdown();
    assert_eq!((report.completed, report.never_ran), (4, 0));
}

#[test]
fn shutdown_now_still_reaches_a_tasks_own_token() {
    let _check = LeakCheck::new();
    let pool = two_workers(4);
    let (started_tx, started) = mpsc::channel();
    let running = pool
        .submit_with_token(move |token| {
            started_tx.send(()).unwrap();
            token.wait()
        })
        .unwrap();
    started.recv().unwrap();
    pool.shutdown_now();
    assert_eq!(running.join().unwrap(), CancelReason::Cancelled);
}

#[test]
fn a_cancelled_task_whose_capture_panics_on_drop_is_recorded_not_lost() {
    struct Bomb;
    impl Drop for Bomb {
        fn drop(&mut self) {
            panic!("capture dropped");
        }
    }
    let _check = LeakCheck::new();
    let (pool, open) = blocked_pool(WorkerPool::builder().queue_capacity(4));
    let bomb = Bomb;
    let handle = pool
        .submit(move || {
            let _keep = &bomb;
        })
        .unwrap();
    assert!(handle.cancel());
    assert!(handle.join().unwrap_err().is_cancelled());
    open.send(()).unwrap();
    pool.wait_idle().unwrap();
    assert_eq!(pool.stats().cancelled, 1);
    let report = pool.shutdown();
    assert_eq!(
        report.first_panic.expect("kept for the report").message(),
        Some("capture dropped")
    );
}

#[test]
fn cancel_racing_the_start_either_runs_the_task_or_drops_it_never_both() {
    let _check = LeakCheck::new();
    let pool = two_workers(64);
    let runs = Arc::new(AtomicUsize::new(0));
    let drops = Arc::new(AtomicUsize::new(0));
    let big = [1u8; 512]; // also the path of a closure too big to share its cell
    let mut cancelled = 0;
    for i in 0..2_000u32 {
        let (runs, capture) = (Arc::clone(&runs), Dropped(Arc::clone(&drops)));
        let handle = if i % 2 == 0 {
            pool.submit(move || {
                let _keep = &capture;
                runs.fetch_add(1, Ordering::SeqCst);
                i
            })
            .unwrap()
        } else {
            pool.submit(move || {
                let _keep = (&capture, big);
                runs.fetch_add(1, Ordering::SeqCst);
                i
            })
            .unwrap()
        };
        let stopped = handle.cancel();
        match handle.join() {
            Ok(value) => {
                assert!(!stopped);
                assert_eq!(value, i);
            }
            Err(TaskError::Cancelled) => {
                assert!(stopped);
                cancelled += 1;
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    pool.wait_idle().unwrap();
    assert_eq!(runs.load(Ordering::SeqCst) + cancelled, 2_000);
    assert_eq!(
        drops.load(Ordering::SeqCst),
        2_000,
        "every closure dropped once"
    );
    let report = pool.shutdown();
    assert_eq!(report.never_ran, cancelled as u64);
    assert_eq!(report.completed + report.never_ran, 2_000);
}

#[test]
fn a_scoped_pools_task_can_be_cancelled_before_it_starts() {
    let _check = LeakCheck::new();
    let words = ["kept".to_string()];
    corral::scope(|s| {
        let pool = WorkerPool::builder().workers(1).build_scoped(s).unwrap();
        let (open, blocker) = gate();
        pool.execute(blocker).unwrap();
        let handle = pool.submit_with_token(|_| words[0].len()).unwrap();
        assert!(handle.cancel());
        assert!(handle.join().unwrap_err().is_cancelled());
        open.send(()).unwrap();
        pool.wait_idle().unwrap();
        assert_eq!(pool.stats().cancelled, 1);
    });
}
