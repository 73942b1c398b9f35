//! Bad-input rows for `pool` (`WorkerPool`, `ScopedPool`, `TaskHandle`, `PoolMap`).

use std::sync::mpsc;
use std::time::{Duration, Instant};

use corral::leak::LeakCheck;
use corral::{cancel::CancelReason, pool::PoolBuilder, CancelToken, WorkerPool};

const LONG: Duration = Duration::from_secs(30);

fn config_error(builder: PoolBuilder) -> (&'static str, String) {
    let err = builder.build().unwrap_err();
    let config = err.config().expect("a ConfigError");
    (config.field(), config.value().to_owned())
}

/// A pool of one worker held by a gate, with its one queue slot taken: every submit
/// finds it full. Returns the pool and the gate's opener.
fn full_pool() -> (WorkerPool, mpsc::Sender<()>) {
    let pool = WorkerPool::builder()
        .workers(1)
        .queue_capacity(1)
        .build()
        .unwrap();
    let (open, gate) = mpsc::channel::<()>();
    pool.execute(move || {
        gate.recv().ok();
    })
    .unwrap();
    let start = Instant::now();
    while pool.stats().busy == 0 {
        assert!(start.elapsed() < LONG, "the worker never took the gate");
        std::thread::yield_now();
    }
    pool.execute(|| ()).unwrap();
    (pool, open)
}

/// A handle whose task waits for the returned sender.
fn unfinished(pool: &WorkerPool) -> (corral::pool::TaskHandle<u32>, mpsc::Sender<()>) {
    let (open, gate) = mpsc::channel::<()>();
    let handle = pool
        .submit(move || {
            gate.recv().ok();
            7
        })
        .unwrap();
    (handle, open)
}

// ---- Builder fields.

#[test]
fn pool_workers_zero_is_a_config_error() {
    let builder = WorkerPool::builder().workers(0);
    assert_eq!(config_error(builder), ("workers", "0".into()));
}

#[test]
fn pool_workers_usize_max_is_a_config_error() {
    let builder = WorkerPool::builder().workers(usize::MAX);
    assert_eq!(config_error(builder), ("workers", usize::MAX.to_string()));
}

#[test]
fn pool_workers_above_4096_is_a_config_error() {
    let builder = WorkerPool::builder().workers(4097);
    assert_eq!(config_error(builder), ("workers", "4097".into()));
}

#[test]
fn pool_queue_capacity_zero_is_a_config_error() {
    let builder = WorkerPool::builder().queue_capacity(0);
    assert_eq!(config_error(builder), ("queue_capacity", "0".into()));
}

#[test]
fn pool_queue_capacity_usize_max_is_a_config_error() {
    let builder = WorkerPool::builder().queue_capacity(usize::MAX);
    assert_eq!(
        config_error(builder),
        ("queue_capacity", usize::MAX.to_string())
    );
}

#[test]
fn pool_stack_size_zero_is_a_config_error() {
    let builder = WorkerPool::builder().stack_size(0);
    assert_eq!(config_error(builder), ("stack_size", "0".into()));
}

#[test]
fn pool_stack_size_usize_max_is_a_config_error() {
    let builder = WorkerPool::builder().stack_size(usize::MAX);
    assert_eq!(
        config_error(builder),
        ("stack_size", usize::MAX.to_string())
    );
}

#[test]
fn pool_thread_name_with_nul_is_a_config_error() {
    let builder = WorkerPool::builder().thread_name("bad\0name");
    assert_eq!(
        config_error(builder),
        ("thread_name", "\"bad\\0name\"".into())
    );
}

#[test]
fn pool_thread_name_with_nul_is_a_config_error_for_a_scoped_pool_too() {
    corral::scope(|s| {
        let err = WorkerPool::builder()
            .thread_name("\0")
            .build_scoped(s)
            .unwrap_err();
        assert_eq!(err.config().map(|c| c.field()), Some("thread_name"));
    });
}

#[test]
fn pool_thread_name_empty_names_threads_corral_dash_index() {
    let _check = LeakCheck::new();
    let pool = WorkerPool::builder()
        .workers(1)
        .thread_name("")
        .build()
        .unwrap();
    let name = pool
        .submit(|| std::thread::current().name().map(str::to_owned))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(name.as_deref(), Some("corral--0"));
    pool.shutdown();
}

// ---- Submit bounds.

#[test]
fn pool_submit_timeout_zero_on_a_full_queue_is_a_timeout() {
    let _check = LeakCheck::new();
    let (pool, open) = full_pool();
    let err = pool.submit_timeout(|| 1, Duration::ZERO).unwrap_err();
    assert!(err.is_timeout());
    assert_eq!(err.into_inner()(), 1);
    open.send(()).unwrap();
    pool.shutdown();
}

#[test]
fn pool_submit_timeout_duration_max_waits_for_room_without_overflowing() {
    let _check = LeakCheck::new();
    let pool = WorkerPool::builder().workers(1).build().unwrap();
    let handle = pool.submit_timeout(|| 2, Duration::MAX).unwrap();
    assert_eq!(handle.join().unwrap(), 2);
    assert!(pool.execute_timeout(|| (), Duration::MAX).is_ok());
    pool.shutdown();
}

#[test]
fn pool_submit_deadline_in_the_past_on_a_full_queue_is_a_timeout() {
    let _check = LeakCheck::new();
    let (pool, open) = full_pool();
    let past = Instant::now();
    assert!(pool.submit_deadline(|| 3, past).unwrap_err().is_timeout());
    assert!(pool.execute_deadline(|| (), past).unwrap_err().is_timeout());
    assert!(pool
        .submit_with_token_deadline(|_| 3, past)
        .unwrap_err()
        .is_timeout());
    open.send(()).unwrap();
    assert_eq!(pool.shutdown().rejected, 3);
}

#[test]
fn pool_submit_deadline_in_the_past_with_room_is_accepted() {
    let _check = LeakCheck::new();
    let pool = WorkerPool::builder().workers(1).build().unwrap();
    let handle = pool.submit_deadline(|| 4, Instant::now()).unwrap();
    assert_eq!(handle.join().unwrap(), 4);
    pool.shutdown();
}

#[test]
fn pool_submit_cancellable_with_a_cancelled_token_on_a_full_queue_is_cancelled() {
    let _check = LeakCheck::new();
    let (pool, open) = full_pool();
    let token = CancelToken::new();
    token.cancel();
    let err = pool.submit_cancellable(|| 5, &token).unwrap_err();
    assert!(matches!(
        err,
        corral::pool::SubmitError::Cancelled(_, CancelReason::Cancelled)
    ));
    open.send(()).unwrap();
    pool.shutdown();
}

#[test]
fn pool_submit_with_token_timeout_zero_on_a_full_queue_is_a_timeout() {
    let _check = LeakCheck::new();
    let (pool, open) = full_pool();
    let err = pool
        .submit_with_token_timeout(|_| 6, Duration::ZERO)
        .unwrap_err();
    assert!(err.is_timeout());
    assert!(pool
        .execute_timeout(|| (), Duration::ZERO)
        .unwrap_err()
        .is_timeout());
    open.send(()).unwrap();
    pool.shutdown();
}

// ---- Join bounds.

#[test]
fn pool_join_timeout_zero_on_an_unfinished_task_hands_the_handle_back() {
    let _check = LeakCheck::new();
    let pool = WorkerPool::builder().workers(1).build().unwrap();
    let (handle, open) = unfinished(&pool);
    let handle = handle.join_timeout(Duration::ZERO).unwrap_err();
    open.send(()).unwrap();
    assert_eq!(handle.join().unwrap(), 7);
    pool.shutdown();
}

#[test]
fn pool_join_timeout_duration_max_returns_the_result() {
    let _check = LeakCheck::new();
    let pool = WorkerPool::builder().workers(1).build().unwrap();
    let (handle, open) = unfinished(&pool);
    open.send(()).unwrap();
    let result = handle.join_timeout(Duration::MAX).unwrap();
    assert_eq!(result.unwrap(), 7);
    pool.shutdown();
}

#[test]
fn pool_join_deadline_in_the_past_hands_the_handle_back() {
    let _check = LeakCheck::new();
    let pool = WorkerPool::builder().workers(1).build().unwrap();
    let (handle, open) = unfinished(&pool);
    let handle = handle.join_deadline(Instant::now()).unwrap_err();
    open.send(()).unwrap();
    assert_eq!(handle.join().unwrap(), 7);
    pool.shutdown();
}

#[test]
fn pool_join_cancellable_with_a_cancelled_token_hands_the_handle_back() {
    let _check = LeakCheck::new();
    let pool = WorkerPool::builder().workers(1).build().unwrap();
    let (handle, open) = unfinished(&pool);
    let token = CancelToken::new();
    token.cancel();
    let handle = handle.join_cancellable(&token).unwrap_err();
    open.send(()).unwrap();
    assert_eq!(handle.join().unwrap(), 7);
    pool.shutdown();
}

// ---- Shutdown bounds.

#[test]
fn pool_shutdown_timeout_zero_with_a_busy_worker_hands_the_pool_back() {
    let _check = LeakCheck::new();
    let (pool, open) = full_pool();
    let pool = pool.shutdown_timeout(Duration::ZERO).unwrap_err();
    assert!(pool.token().is_cancelled());
    open.send(()).unwrap();
    let report = pool.shutdown();
    // The queued task was dropped unrun when the timeout cancelled the pool.
    assert_eq!((report.completed, report.never_ran), (1, 1));
}

#[test]
fn pool_shutdown_timeout_zero_with_idle_workers_reports() {
    let _check = LeakCheck::new();
    let pool = WorkerPool::builder().workers(2).build().unwrap();
    pool.submit(|| ()).unwrap().join().unwrap();
    let report = pool.shutdown_timeout(Duration::ZERO).unwrap();
    assert_eq!(report.completed, 1);
}

#[test]
fn pool_shutdown_timeout_duration_max_runs_the_queue_and_reports() {
    let _check = LeakCheck::new();
    let (pool, open) = full_pool();
    open.send(()).unwrap();
    let report = pool.shutdown_timeout(Duration::MAX).unwrap();
    assert_eq!((report.completed, report.never_ran), (2, 0));
}

// ---- map.

#[test]
fn pool_map_over_an_empty_input_yields_nothing() {
    let _check = LeakCheck::new();
    let pool = WorkerPool::builder().workers(1).build().unwrap();
    assert_eq!(pool.map(Vec::<u32>::new(), |x| x).count(), 0);
    pool.shutdown();
}

#[test]
fn pool_map_over_an_endless_input_pulls_a_bounded_window() {
    let _check = LeakCheck::new();
    let pool = WorkerPool::builder()
        .workers(2)
        .queue_capacity(4)
        .build()
        .unwrap();
    let pulled = std::sync::atomic::AtomicU64::new(0);
    let input = (0u64..).inspect(|_| {
        pulled.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    });
    let first: Vec<u64> = pool
        .map(input, |x| x * 2)
        .take(100)
        .map(Result::unwrap)
        .collect();
    assert_eq!(first[99], 198);
    // At most `queue_capacity + workers` items ahead of what was yielded.
    assert!(pulled.load(std::sync::atomic::Ordering::SeqCst) <= 100 + 6);
    pool.shutdown();
}

#[test]
fn pool_map_over_a_usize_max_range_has_an_exact_size_hint() {
    let _check = LeakCheck::new();
    let pool = WorkerPool::builder().workers(1).build().unwrap();
    let mut map = pool.map(0..usize::MAX, |x| x);
    assert_eq!(map.size_hint(), (usize::MAX, Some(usize::MAX)));
    assert_eq!(map.next().unwrap().unwrap(), 0);
    assert_eq!(map.size_hint().1, Some(usize::MAX - 1));
    drop(map);
    pool.shutdown();
}

/// A pool of one worker with a watchdog of `threshold` on a manual clock, running a
/// task that waits until released.
fn pool_with_a_watched_hanging_task(
    threshold: Duration,
) -> (corral::WorkerPool, std::sync::mpsc::Sender<()>) {
    let pool = WorkerPool::builder()
        .workers(1)
        .watchdog(threshold, |_| {})
        .clock(corral::clock::ManualClock::new())
        .build()
        .unwrap();
    let (release, hang) = std::sync::mpsc::channel::<()>();
    pool.execute(move || {
        let _ = hang.recv();
    })
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pool.stats().busy == 0 {
        assert!(Instant::now() < deadline, "the task never started");
        std::thread::yield_now();
    }
    (pool, release)
}

#[test]
fn pool_watchdog_zero_reports_a_running_task_once() {
    let _check = LeakCheck::new();
    let (pool, release) = pool_with_a_watched_hanging_task(Duration::ZERO);
    assert_eq!(pool.check_stuck().len(), 1);
    assert!(pool.check_stuck().is_empty(), "reported once");
    release.send(()).unwrap();
    pool.shutdown();
}

#[test]
fn pool_watchdog_duration_max_never_reports() {
    let _check = LeakCheck::new();
    let (pool, release) = pool_with_a_watched_hanging_task(Duration::MAX);
    assert!(pool.check_stuck().is_empty());
    release.send(()).unwrap();
    pool.shutdown();
}
