//! Every error type of the crate composes: one value of every variant, built through
//! the public API (or the variant's public constructor where the API would need an
//! outside failure), has a chain that prints each cause once, a lowercase `Display`
//! with no trailing period, and a `Debug` that shows its cause.

use std::cell::Cell;
use std::error::Error;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use corral::leak::{LeakCheck, LeakReport};
use corral::{
    breaker::BreakerError,
    cancel::CancelReason,
    clock::ManualClock,
    group::GroupError,
    pipeline::PipelineError,
    pool::{SubmitError, SubmitErrorKind, TaskError},
    rate::{CheckError, InsufficientCapacity, NotUntil, WaitError},
    resilience::ResilienceError,
    semaphore::{AcquireError, TryAcquireError},
    CancelToken, CircuitBreaker, ConfigError, Overflow, Panic, Pipeline, RateLimiter, Resilience,
    Semaphore, SpawnError, StartError, Supervisor, TaskGroup, WorkerPool,
};
#[cfg(feature = "redis")]
use corral::{
    fleet::{RedisAcquireError, RedisRateError},
    RedisRateLimiter,
};

/// The `Display` text of every level of `error`'s chain, outermost first.
fn chain(error: &(dyn Error + 'static)) -> Vec<String> {
    let mut levels = Vec::new();
    let mut next = Some(error);
    while let Some(level) = next {
        levels.push(level.to_string());
        next = level.source();
        assert!(levels.len() < 16, "a cycle in the chain of {error:?}");
    }
    levels
}

/// Checks `error` and returns its chain's texts: this level's `Display` is lowercase
/// with no trailing period; printed as `a: b: c`, every level's text appears exactly
/// once (no level repeats a cause); every `Debug` shows the `Debug` of its source.
fn composes(error: &(dyn Error + 'static)) -> Vec<String> {
    let levels = chain(error);
    let top = &levels[0];
    assert!(!top.is_empty(), "{error:?} has an empty Display");
    assert!(
        !top.starts_with(|c: char| c.is_uppercase()),
        "{top:?} does not start lowercase"
    );
    assert!(!top.ends_with('.'), "{top:?} ends with a period");
    let printed = levels.join(": ");
    for (i, level) in levels.iter().enumerate() {
        assert_eq!(
            printed.matches(level.as_str()).count(),
            1,
            "level {i} ({level:?}) is not printed exactly once in {printed:?}"
        );
        for cause in &levels[i + 1..] {
            assert!(
                !level.contains(cause.as_str()),
                "{level:?} repeats its cause {cause:?}"
            );
        }
    }
    let mut next = Some(error);
    while let Some(level) = next {
        if let Some(source) = level.source() {
            assert!(
                format!("{level:?}").contains(&format!("{source:?}")),
                "Debug {level:?} hides its source {source:?}"
            );
        }
        next = level.source();
    }
    levels
}

/// A pool of one worker, busy until the returned sender is dropped or sent to, with its
/// one queue slot taken.
fn full_pool(overflow: Overflow) -> (WorkerPool, mpsc::Sender<()>) {
    let pool = WorkerPool::builder()
        .workers(1)
        .queue_capacity(1)
        .overflow(overflow)
        .build()
        .unwrap();
    let (gate, gated) = mpsc::channel::<()>();
    pool.execute(move || {
        let _ = gated.recv();
    })
    .unwrap();
    while pool.stats().busy == 0 {
        std::thread::yield_now();
    }
    pool.execute(|| {}).unwrap();
    (pool, gate)
}

fn cancelled_token() -> CancelToken {
    let token = CancelToken::new();
    token.cancel();
    token
}

#[test]
fn config_error() {
    let err = ConfigError::new("workers", 0usize, "must be at least 1");
    assert_eq!(composes(&err), ["invalid workers = 0: must be at least 1"]);
    let err = WorkerPool::builder().workers(0).build().unwrap_err();
    assert_eq!(
        composes(&err),
        [
            "not started: invalid settings",
            "invalid workers = 0: must be at least 1"
        ]
    );
}

#[test]
fn panic() {
    let panic: Panic = corral::try_scope(|s| {
        s.spawn(|| panic!("disk on fire"));
    })
    .unwrap_err();
    let levels = composes(&panic);
    assert_eq!(levels.len(), 1);
    assert!(levels[0].ends_with("panicked: disk on fire"), "{levels:?}");
}

#[test]
fn task_error() {
    let pool = WorkerPool::builder().workers(1).build().unwrap();
    let err = pool
        .submit(|| -> u32 { panic!("bad input") })
        .unwrap()
        .join()
        .unwrap_err();
    assert!(matches!(err, TaskError::Panicked(_)));
    let levels = composes(&err);
    assert_eq!(levels[0], "task panicked");
    assert_eq!(levels.len(), 2);
    assert!(levels[1].ends_with("panicked: bad input"), "{levels:?}");
    pool.shutdown();

    // A queued task displaced by the overflow policy never runs.
    let (pool, gate) = full_pool(Overflow::DropOldest);
    let displaced = pool.submit(|| 1).unwrap();
    let _newest = pool.submit(|| 2).unwrap(); // pushes `displaced` out
    let err = displaced.join().unwrap_err();
    assert!(matches!(err, TaskError::Cancelled));
    assert_eq!(composes(&err), ["task was cancelled before it ran"]);
    drop(gate);
    pool.shutdown();
}

#[test]
fn submit_error_and_its_kind() {
    let (pool, gate) = full_pool(Overflow::Block);
    type One = fn() -> u32;
    let one: One = || 1;
    let cases: Vec<(SubmitError<One>, SubmitErrorKind, &str)> = vec![
        (
            pool.try_submit(one).unwrap_err(),
            SubmitErrorKind::Full,
            "no room for the task",
        ),
        (
            pool.submit_timeout(one, Duration::from_millis(1))
                .unwrap_err(),
            SubmitErrorKind::Timeout,
            "timed out waiting for room for the task",
        ),
        (
            pool.submit_cancellable(one, &cancelled_token())
                .unwrap_err(),
            SubmitErrorKind::Cancelled(CancelReason::Cancelled),
            "stopped waiting for room for the task: cancelled",
        ),
    ];
    drop(gate);
    pool.close();
    let closed = pool.submit(one).unwrap_err();
    let cases = cases.into_iter().chain([(
        closed,
        SubmitErrorKind::Closed,
        "not accepting tasks: closed",
    )]);
    for (err, kind, text) in cases {
        assert_eq!(composes(&err), [text]);
        assert_eq!(err.kind(), kind);
        // Debug names the variant without needing the task to be `Debug`.
        let variant = format!("{kind:?}");
        let variant = variant.split('(').next().unwrap();
        assert!(format!("{err:?}").starts_with(variant), "{err:?}");
        let task = err.into_inner(); // the kind left the task in place
        assert_eq!(task(), 1);
        assert_eq!(composes(&kind), [text]);
    }
    pool.shutdown();
}

#[test]
fn without_task_drops_the_task_and_keeps_the_kind() {
    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let drops = Arc::new(AtomicUsize::new(0));
    let captured = Counted(drops.clone());
    let err = SubmitError::Timeout(move || drop(captured));
    assert_eq!(err.kind(), SubmitErrorKind::Timeout);
    assert_eq!(
        drops.load(Ordering::SeqCst),
        0,
        "kind() must not drop the task"
    );
    let kind = err.without_task();
    assert_eq!(
        drops.load(Ordering::SeqCst),
        1,
        "without_task drops the task once"
    );
    assert_eq!(kind, SubmitErrorKind::Timeout);

    let captured = Counted(drops.clone());
    let kind: SubmitErrorKind = SubmitError::Full(move || drop(captured)).into();
    assert_eq!(
        (kind, drops.load(Ordering::SeqCst)),
        (SubmitErrorKind::Full, 2)
    );
}

#[test]
fn submit_error_kind_goes_through_question_mark() {
    let pool = WorkerPool::builder().workers(1).build().unwrap();
    pool.close();

    // A task that is `Send` but not `Sync` makes `SubmitError<F>` not `Sync`; its kind
    // still boxes into `Box<dyn Error + Send + Sync>`.
    fn boxed(pool: &WorkerPool) -> Result<u32, Box<dyn Error + Send + Sync>> {
        let tally = Cell::new(1u32);
        let handle = pool
            .try_submit(move || tally.get())
            .map_err(SubmitError::without_task)?;
        Ok(handle.join()?)
    }
    let err = boxed(&pool).unwrap_err();
    assert_eq!(err.downcast_ref(), Some(&SubmitErrorKind::Closed));
    assert_eq!(err.to_string(), "not accepting tasks: closed");

    // `From<SubmitError<F>>` lets `?` drop the task into a kind directly.
    fn kind(pool: &WorkerPool) -> Result<(), SubmitErrorKind> {
        pool.try_execute(|| {})?;
        Ok(())
    }
    assert_eq!(kind(&pool), Err(SubmitErrorKind::Closed));

    // And into an error enum of the caller's, with its own source().
    #[derive(Debug)]
    enum AppError {
        Busy(SubmitErrorKind),
    }
    impl std::fmt::Display for AppError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("could not queue the job")
        }
    }
    impl Error for AppError {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            match self {
                AppError::Busy(kind) => Some(kind),
            }
        }
    }
    impl<F> From<SubmitError<F>> for AppError {
        fn from(e: SubmitError<F>) -> Self {
            AppError::Busy(e.without_task())
        }
    }
    fn app(pool: &WorkerPool) -> Result<(), AppError> {
        pool.try_execute(|| {})?;
        Ok(())
    }
    let err = app(&pool).unwrap_err();
    assert_eq!(
        composes(&err),
        ["could not queue the job", "not accepting tasks: closed"]
    );
    pool.shutdown();
}

#[test]
fn group_error() {
    let results = corral::scope(|s| {
        let group = TaskGroup::<(), io::Error>::new(s);
        group.spawn(|_| Err(io::Error::other("replica down")));
        group.spawn(|_| panic!("replica exploded"));
        group.wait_all()
    });
    let failed = results[0].1.as_ref().unwrap_err();
    assert!(matches!(failed, GroupError::Failed(_)));
    assert_eq!(composes(failed), ["task failed", "replica down"]);
    let panicked = results[1].1.as_ref().unwrap_err();
    assert!(panicked.is_panicked());
    let levels = composes(panicked);
    assert_eq!(levels[0], "task panicked");
    assert!(
        levels[1].ends_with("panicked: replica exploded"),
        "{levels:?}"
    );
}

#[test]
fn group_spawn_error() {
    let err = GroupError::<io::Error>::Spawn(no_more_threads("corral-group-0"));
    assert!(!err.is_panicked());
    assert_eq!(
        composes(&err),
        [
            "task not started",
            "could not start thread \"corral-group-0\"",
            "no more threads"
        ]
    );
}

#[test]
fn acquire_errors() {
    let sem = Semaphore::new(2);
    let held = sem.acquire_many(2).unwrap();
    let timeout = sem.acquire_timeout(Duration::from_millis(1)).unwrap_err();
    assert_eq!(timeout, AcquireError::Timeout);
    assert_eq!(composes(&timeout), ["timed out waiting for permits"]);
    let cancelled = sem.acquire_cancellable(&cancelled_token()).unwrap_err();
    assert_eq!(cancelled, AcquireError::Cancelled(CancelReason::Cancelled));
    assert_eq!(
        composes(&cancelled),
        ["wait for permits stopped: cancelled"]
    );
    let no_permits = sem.try_acquire().unwrap_err();
    assert_eq!(no_permits, TryAcquireError::NoPermits);
    assert_eq!(composes(&no_permits), ["no permits available"]);
    drop(held);

    let above = "requested 3 permits but the semaphore's capacity is 2";
    let err = sem.acquire_many(3).unwrap_err();
    assert!(matches!(err, AcquireError::AboveCapacity { .. }));
    assert_eq!(composes(&err), [above]);
    let err = sem.try_acquire_many(3).unwrap_err();
    assert!(matches!(err, TryAcquireError::AboveCapacity { .. }));
    assert_eq!(composes(&err), [above]);

    sem.close();
    let err = sem.acquire().unwrap_err();
    assert_eq!(err, AcquireError::Closed);
    assert_eq!(composes(&err), ["semaphore closed"]);
    let err = sem.try_acquire().unwrap_err();
    assert_eq!(err, TryAcquireError::Closed);
    assert_eq!(composes(&err), ["semaphore closed"]);
}

#[test]
fn rate_limiter_errors() {
    let clock = ManualClock::new();
    let limiter = RateLimiter::per_second(2)
        .burst(4)
        .clock(clock)
        .build()
        .unwrap();
    limiter.check_n(4).unwrap();
    let not_until = "rate limit reached: next slot in 500ms";
    let refused: NotUntil = limiter.check().unwrap_err();
    assert_eq!(composes(&refused), [not_until]);
    let never = "requested 5 cells but the burst is 4, so the request can never pass";
    let too_many: InsufficientCapacity = limiter.reserve_n(5).unwrap_err();
    assert_eq!(composes(&too_many), [never]);

    let err = limiter.check_n(1).unwrap_err();
    assert!(matches!(err, CheckError::NotUntil(_)));
    assert_eq!(composes(&err), ["request refused for now", not_until]);
    let err = limiter.check_n(5).unwrap_err();
    assert!(matches!(err, CheckError::InsufficientCapacity(_)));
    assert_eq!(composes(&err), ["request refused for good", never]);

    let err = limiter.wait_timeout(Duration::from_millis(10)).unwrap_err();
    assert!(matches!(err, WaitError::Timeout(_)));
    assert_eq!(composes(&err), ["wait timed out", not_until]);
    let err = limiter.wait_cancellable(&cancelled_token()).unwrap_err();
    assert_eq!(err, WaitError::Cancelled(CancelReason::Cancelled));
    assert_eq!(composes(&err), ["wait cancelled"]);
    let err = limiter.wait_n_timeout(5, Duration::ZERO).unwrap_err();
    assert!(matches!(err, WaitError::InsufficientCapacity(_)));
    assert_eq!(composes(&err), ["wait refused for good", never]);
}

#[cfg(feature = "redis")]
#[test]
fn redis_rate_error() {
    // Port 1 on loopback: nothing listens, so the connection is refused at once.
    let limiter = RedisRateLimiter::builder("127.0.0.1:1")
        .per_second(10)
        .io_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let err = limiter.check("user:42").unwrap_err();
    assert!(matches!(err, RedisRateError::Backend(_)), "{err:?}");
    let levels = composes(&err);
    assert_eq!(levels[0], "redis unavailable (failing closed)");
    assert_eq!(levels.len(), 2, "{levels:?}");
    assert!(levels[1].starts_with("redis call failed: "), "{levels:?}");

    // The decisions need a live Redis: built from their public variants.
    let cases = [
        (
            RedisRateError::NotUntil(Duration::from_millis(250)),
            "rate limited for 250ms",
        ),
        (
            RedisRateError::InsufficientCapacity {
                requested: 5,
                burst: 4,
            },
            "5 cells exceed the burst of 4",
        ),
        (
            RedisRateError::Timeout,
            "deadline passes before the request would conform",
        ),
        (
            RedisRateError::Cancelled(CancelReason::DeadlineExceeded),
            "wait cancelled: deadline exceeded",
        ),
        (
            RedisRateError::FallbackNotUntil(Duration::from_millis(20)),
            "redis unavailable; local share limited for 20ms",
        ),
    ];
    for (err, text) in cases {
        assert_eq!(composes(&err), [text]);
    }
    let cases = [
        (
            RedisAcquireError::Full(Duration::from_secs(3)),
            "every permit is leased (earliest expiry in 3s)",
        ),
        (
            RedisAcquireError::Timeout,
            "deadline passed before a permit was free",
        ),
        (
            RedisAcquireError::Cancelled(CancelReason::Cancelled),
            "acquire cancelled: cancelled",
        ),
        (
            RedisAcquireError::LeaseLost,
            "the lease expired before renewal",
        ),
    ];
    for (err, text) in cases {
        assert_eq!(composes(&err), [text]);
    }
}

#[test]
fn breaker_error() {
    let clock = ManualClock::new();
    let breaker = CircuitBreaker::builder()
        .consecutive_failures(1)
        .open_for(Duration::from_secs(1))
        .half_open_calls(1)
        .clock(clock.clone())
        .build()
        .unwrap();
    let err = breaker
        .call(|| Err::<(), _>(io::Error::other("connection reset")))
        .unwrap_err();
    assert!(matches!(err, BreakerError::Inner(_)));
    assert_eq!(
        composes(&err),
        ["the guarded call failed", "connection reset"]
    );

    let err = breaker.call(|| Ok::<_, io::Error>(())).unwrap_err();
    assert!(matches!(err, BreakerError::Open { .. }));
    assert_eq!(composes(&err), ["circuit breaker is open (retry after 1s)"]);

    clock.advance(Duration::from_secs(1));
    let trial = breaker.try_acquire().unwrap();
    let err: BreakerError = breaker.try_acquire().unwrap_err();
    assert_eq!(err, BreakerError::HalfOpenFull);
    assert_eq!(
        composes(&err),
        ["circuit breaker is half-open and its trial calls are taken"]
    );
    trial.success();

    breaker.force_open();
    let err: BreakerError = breaker.try_acquire().unwrap_err();
    assert_eq!(err, BreakerError::ForcedOpen);
    assert_eq!(composes(&err), ["circuit breaker is forced open"]);
}

#[test]
fn pipeline_error() {
    let err = Pipeline::from_iter(0..1)
        .capacity(0)
        .run(|_| {})
        .unwrap_err();
    assert!(matches!(err, PipelineError::Config(_)));
    assert_eq!(
        composes(&err),
        [
            "pipeline not started",
            "invalid capacity = 0: must be at least 1"
        ]
    );

    let err = Pipeline::from_iter(0..4)
        .try_stage("parse", 1, |x: i32| {
            if x == 2 {
                Err(io::Error::other("bad row 2"))
            } else {
                Ok(x)
            }
        })
        .run(|_| {})
        .unwrap_err();
    assert!(matches!(err, PipelineError::Failed { .. }));
    assert_eq!(composes(&err), ["stage parse failed", "bad row 2"]);

    let err = Pipeline::from_iter(0..4)
        .stage("boom", 1, |x: i32| if x == 2 { panic!("three") } else { x })
        .run(|_| {})
        .unwrap_err();
    assert!(matches!(err, PipelineError::Panicked { .. }));
    let levels = composes(&err);
    assert_eq!(levels[0], "stage boom panicked");
    assert!(levels[1].ends_with("panicked: three"), "{levels:?}");

    let err = Pipeline::from_iter(0..)
        .stage("id", 1, |x: u64| x)
        .run_cancellable(|_| {}, &cancelled_token())
        .unwrap_err();
    assert!(err.is_cancelled());
    assert_eq!(composes(&err), ["pipeline stopped: cancelled"]);

    // The OS refusing a thread cannot be provoked portably: the variant's public
    // constructor, with the report of a real run.
    let report = Pipeline::from_iter(0..1).run(|_| {}).unwrap();
    let err = PipelineError::Spawn {
        stage: "resize".to_string(),
        error: no_more_threads("corral-pipe-resize-0"),
        report,
    };
    assert_eq!(
        composes(&err),
        [
            "stage resize failed to start",
            "could not start thread \"corral-pipe-resize-0\"",
            "no more threads"
        ]
    );
}

fn no_more_threads(thread: &str) -> SpawnError {
    SpawnError::new(
        thread,
        io::Error::new(io::ErrorKind::WouldBlock, "no more threads"),
    )
}

#[test]
fn spawn_error() {
    // A name std cannot give a thread is a real refusal, through the public API.
    let err = corral::scope(|s| s.try_spawn_named("bad\0name", || ()).unwrap_err());
    assert_eq!(err.io_error().kind(), io::ErrorKind::InvalidInput);
    assert_eq!(
        composes(&err),
        [
            "could not start thread \"corral-bad\\0name\"",
            "a thread name may not contain a NUL byte"
        ]
    );
    // `?` into an `io::Error` keeps the kind and both texts, once each.
    fn io_result(err: SpawnError) -> io::Result<()> {
        Err(err)?;
        Ok(())
    }
    let io = io_result(no_more_threads("corral-x")).unwrap_err();
    assert_eq!(io.kind(), io::ErrorKind::WouldBlock);
    assert_eq!(
        composes(&io),
        ["could not start thread \"corral-x\"", "no more threads"]
    );
    assert_eq!(
        io.into_inner().unwrap().to_string(),
        "could not start thread \"corral-x\""
    );
}

#[test]
fn start_error() {
    let err = Supervisor::builder().start().unwrap_err();
    assert!(matches!(err, StartError::Config(_)));
    assert_eq!(
        composes(&err),
        [
            "not started: invalid settings",
            "invalid children = 0: a supervisor needs at least one child"
        ]
    );
    let err = StartError::Spawn(no_more_threads("corral-sup-monitor"));
    assert!(err.config().is_none());
    assert_eq!(
        err.spawn_error().map(|e| e.thread_name()),
        Some("corral-sup-monitor")
    );
    assert_eq!(
        composes(&err),
        [
            "not started: a thread did not start",
            "could not start thread \"corral-sup-monitor\"",
            "no more threads"
        ]
    );
}

#[test]
fn resilience_error() {
    let stack = Resilience::builder().retries(1).build().unwrap();
    let err = stack
        .call(|_| Err::<(), _>(io::Error::other("upstream down")))
        .unwrap_err();
    assert!(matches!(err, ResilienceError::Inner { attempts: 2, .. }));
    assert_eq!(
        composes(&err),
        ["call failed after 2 attempt(s)", "upstream down"]
    );

    let breaker = Arc::new(CircuitBreaker::new());
    breaker.force_open();
    let stack = Resilience::builder().breaker(breaker).build().unwrap();
    let err = stack.call(|_| Ok::<_, io::Error>(())).unwrap_err();
    assert!(matches!(err, ResilienceError::BreakerOpen { .. }));
    assert_eq!(composes(&err), ["circuit breaker refused the call"]);

    let bulkhead = Arc::new(Semaphore::new(1));
    bulkhead.close();
    let stack = Resilience::builder().bulkhead(bulkhead).build().unwrap();
    let err = stack.call(|_| Ok::<_, io::Error>(())).unwrap_err();
    assert!(matches!(err, ResilienceError::BulkheadClosed));
    assert_eq!(composes(&err), ["bulkhead admits no call"]);

    let bulkhead = Arc::new(Semaphore::new(1));
    let _held = bulkhead.acquire().unwrap();
    let stack = Resilience::builder()
        .bulkhead(bulkhead.clone())
        .build()
        .unwrap();
    let err = stack
        .call_cancellable(&cancelled_token(), |_| Ok::<_, io::Error>(()))
        .unwrap_err();
    assert!(matches!(
        err,
        ResilienceError::Cancelled(CancelReason::Cancelled)
    ));
    assert_eq!(composes(&err), ["call cancelled"]);

    for (err, says) in [
        (
            ResilienceError::<io::Error>::RateLimited {
                retry_after: Some(Duration::from_secs(1)),
            },
            "rate limited (retry after 1s)",
        ),
        (
            ResilienceError::RateLimited { retry_after: None },
            "rate limited",
        ),
        (ResilienceError::BulkheadFull, "bulkhead is full"),
        (ResilienceError::DeadlineExceeded, "deadline exceeded"),
    ] {
        assert_eq!(composes(&err), [says]);
    }

    let err = ResilienceError::<io::Error>::BreakerOpen {
        retry_after: Some(Duration::from_secs(3)),
    };
    assert_eq!(composes(&err), ["circuit breaker is open (retry after 3s)"]);
}

#[test]
fn leak_report() {
    let check = LeakCheck::builder()
        .grace(Duration::from_millis(20))
        .build();
    let pool = WorkerPool::builder()
        .workers(1)
        .thread_name("kept")
        .build()
        .unwrap();
    let report: LeakReport = check.verify().unwrap_err();
    let levels = composes(&report);
    assert!(levels[0].starts_with("1 thread(s) leaked:"), "{levels:?}");
    pool.shutdown();

    let report = LeakReport {
        corral: Vec::new(),
        os: Vec::new(),
        os_unsupported: true,
    };
    assert_eq!(
        composes(&report),
        ["leak check: this platform cannot list OS threads"]
    );
}

#[test]
fn errors_are_send_sync_and_static() {
    fn promised<T: Error + Send + Sync + 'static>() {}
    promised::<ConfigError>();
    promised::<Panic>();
    promised::<TaskError>();
    promised::<SubmitErrorKind>();
    promised::<SubmitError<fn() -> u32>>();
    promised::<SubmitError<Box<dyn FnOnce() + Send + Sync>>>();
    promised::<GroupError<io::Error>>();
    promised::<AcquireError>();
    promised::<TryAcquireError>();
    promised::<NotUntil>();
    promised::<InsufficientCapacity>();
    promised::<CheckError>();
    promised::<WaitError>();
    #[cfg(feature = "redis")]
    promised::<RedisRateError>();
    #[cfg(feature = "redis")]
    promised::<RedisAcquireError>();
    promised::<BreakerError>();
    promised::<BreakerError<io::Error>>();
    promised::<PipelineError>();
    promised::<SpawnError>();
    promised::<StartError>();
    promised::<ResilienceError<io::Error>>();
    promised::<LeakReport>();

    // Each converts into the usual boxed error with `?`.
    fn boxed<E: Error + Send + Sync + 'static>(e: E) -> Result<(), Box<dyn Error + Send + Sync>> {
        let refused: Result<(), E> = Err(e);
        refused?;
        Ok(())
    }
    let err = boxed(AcquireError::Closed).unwrap_err();
    assert_eq!(err.downcast_ref(), Some(&AcquireError::Closed));
    let err = boxed(SubmitErrorKind::Full).unwrap_err();
    assert_eq!(err.downcast_ref(), Some(&SubmitErrorKind::Full));
}
