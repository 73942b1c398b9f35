//! # Guarantees and limits
//!
//! corral makes five promises. This page says exactly what each one means, where the
//! limits are, and the one place a promise cannot be kept by construction. Every row
//! of the bad-input table at the end is a test in `tests/bad_input/`.
//!
//! ## The promises
//!
//! 1. **Every thread corral starts is joined before its owner is gone.** Each thread
//!    belongs to one owner value ([`Scope`](crate::Scope), [`WorkerPool`](crate::WorkerPool),
//!    [`ScopedPool`](crate::ScopedPool), [`TaskGroup`](crate::TaskGroup), a
//!    [`Pipeline`](crate::Pipeline) run, a [`Supervisor`](crate::Supervisor)), and that
//!    owner's `drop`, `shutdown`, `stop` or `run` returns only after joining it. There
//!    are no detached, global or timer threads: time-based state is computed lazily
//!    from a [`Clock`](crate::clock::Clock). A partial start (a thread spawn failing half-way)
//!    stops and joins the threads already started and reports the failure as a
//!    [`SpawnError`](crate::SpawnError) naming the thread and keeping the `io::Error`:
//!    on its own (`Scope::try_spawn`) or inside the primitive's error
//!    (`StartError::Spawn` from a pool's build and a supervisor's start,
//!    `PipelineError::Spawn`, `GroupError::Spawn`; a supervisor that cannot restart a
//!    child stops with `StopReason::Failed` and the error in its report).
//!    [`leak::LeakCheck`](crate::leak::LeakCheck) measures it in tests and
//!    [`leak::live_threads`](crate::leak::live_threads) at any moment.
//! 2. **Every queue and every wait is bounded.** Every queue has a capacity with a
//!    documented maximum. Every blocking call has `try_`, `_timeout`, `_deadline` and
//!    `_cancellable` forms; a plain form waits only for something the caller controls
//!    (a permit it can release, a task it submitted). Deadline arithmetic saturates:
//!    a timeout of [`Duration::MAX`](std::time::Duration::MAX) means "no deadline",
//!    never a panic and never a wrapped instant. A deadline already in the past makes
//!    a bounded form behave as its `try_` form.
//! 3. **Nothing handed to corral is lost without a record.** A refused item or task
//!    comes back inside the error (`Full(item)`, `Closed(item)`, `Timeout(task)`...);
//!    an item displaced by an [`Overflow`](crate::Overflow) policy is counted in stats
//!    and handed to the `on_drop` callback when one is set; shutdown and pipeline
//!    reports count what ran, what panicked and what never ran. The counts balance:
//!    every item is counted exactly once.
//! 4. **A panic in user code becomes a value.** Every user-supplied value (task,
//!    closure, item, iterator, callback, error, result) is called, formatted and
//!    dropped inside corral's panic boundary. The panic is delivered to whoever waits
//!    ([`TaskError::Panicked`](crate::pool::TaskError::Panicked),
//!    [`PipelineError::Panicked`](crate::pipeline::PipelineError::Panicked), a scope's or group's
//!    result, a supervisor's report) with its original payload as a
//!    [`Panic`](crate::Panic). A worker thread never dies of a user panic and a waiter
//!    never hangs because of one. Where a callback panics while corral is already
//!    delivering an earlier panic (an `on_drop` callback that panics while a task is
//!    being discarded, say), the first panic is kept and the later ones are contained:
//!    counted where the primitive has a counter for them
//!    ([`BreakerStats::user_panics`](crate::breaker::BreakerStats::user_panics),
//!    [`KeyedStats::key_drop_panics`](crate::rate::KeyedStats::key_drop_panics)), dropped
//!    quietly otherwise. A panic nobody waits for (a fire-and-forget task's, a
//!    discarded item's destructor) is kept in the owner's report
//!    ([`ShutdownReport::first_panic`](crate::pool::ShutdownReport::first_panic),
//!    `SupervisorReport::panics`).
//! 5. **Bad input gets a named error, never a panic or a hang.** Builders reject bad
//!    configuration with a [`ConfigError`](crate::ConfigError) naming the field and the
//!    value; operations reject bad arguments with a documented error variant; a name
//!    that becomes a thread name may not contain a NUL byte (builders refuse it;
//!    [`Scope::spawn_named`](crate::Scope::spawn_named) escapes it and
//!    [`Scope::try_spawn_named`](crate::Scope::try_spawn_named) returns the error).
//!    The table below lists every
//!    parameter and what each extreme value does.
//!
//! ## Documented maxima
//!
//! | what | maximum | above it |
//! | --- | --- | --- |
//! | pool workers; pipeline workers per stage and per run | [`WorkerPool::MAX_WORKERS`](crate::WorkerPool::MAX_WORKERS) (4096) | `ConfigError` (`workers`) |
//! | pool queue; pipeline `capacity`, `buffer`, `batch`, reorder window | [`WorkerPool::MAX_QUEUE_CAPACITY`](crate::WorkerPool::MAX_QUEUE_CAPACITY) (2²⁴) | `ConfigError` naming the field |
//! | pool worker stack | 16 KiB to 1 GiB | `ConfigError` (`stack_size`) |
//! | tasks nested on a submitting thread (`CallerRuns`, a worker submitting to its own full pool, `on_drop` re-entry) | 64 deep | `SubmitError::Full(task)` |
//! | semaphore permits; task group `limit` | [`Semaphore::MAX_PERMITS`](crate::Semaphore::MAX_PERMITS) (`usize::MAX >> 5`) | `ConfigError` |
//! | rate limiter `burst × interval` | 2⁶² ns (about 146 years) | `ConfigError` (`burst` or the period) |
//! | keyed rate limiter keys | [`KeyedRateLimiter::MAX_KEYS`](crate::KeyedRateLimiter::MAX_KEYS) (2²⁶); 65,536 shards | `ConfigError` (`max_keys`); shards are capped |
//! | breaker count window | [`BreakerBuilder::MAX_COUNT_WINDOW`](crate::breaker::BreakerBuilder::MAX_COUNT_WINDOW) (2²⁰ calls) | `ConfigError` (`window`) |
//! | supervisor restarts per period; resilience retries | 1,000,000 | `ConfigError` (`max_restarts`, `retries`) |
//! | supervisor exit record | the last 10,000 exits and panics (`history`, at most 1,000,000) | older ones are counted (`exits_omitted`, `panics_omitted`) |
//! | time | `Duration::MAX` anywhere means "never"; a clock may move by `u64::MAX` ns (about 584 years) | saturates; limits keep holding (a rate limiter refuses a cell whose slot lies past the end, `NotUntil::is_never`; a breaker opened past it stays open until `reset`) |
//!
//! ## Where a promise cannot be kept by construction
//!
//! - **An owner stopped on one of its own threads cannot join that thread.** No thread
//!   can join itself. When the last `Arc<WorkerPool>` is dropped inside one of the
//!   pool's own tasks (or `shutdown` is called there, or a
//!   [`ScopedPool`](crate::ScopedPool), a [`TaskGroup`](crate::TaskGroup) or a
//!   [`Supervisor`](crate::Supervisor) is stopped or dropped from one of its own
//!   threads), corral joins every other thread, produces the report, and leaves the
//!   current thread to finish on its own: it returns from the user code it is running,
//!   finds its owner gone and exits. The thread stays visible to
//!   [`leak::live_threads`](crate::leak::live_threads) and to a `LeakCheck` until then,
//!   and its own task is not in the report (a supervisor stopped on its monitor thread
//!   returns an empty report). A group's and a scoped pool's threads are still joined
//!   by their enclosing [`scope`](crate::scope()). Joining a
//!   [`ScopedHandle`](crate::scope::ScopedHandle) from its own thread is an error. This is
//!   the one place the join promise is weaker; everywhere else the join is
//!   unconditional.
//! - **Code on the caller's own thread panics on the caller's thread.**
//!   [`CircuitBreaker::call`](crate::CircuitBreaker::call) and
//!   [`Resilience::call`](crate::Resilience::call) run the closure on the calling
//!   thread: a panic there is recorded (as a failure) and keeps unwinding unchanged,
//!   as the caller's own panic. [`Resilience::call_isolated`](crate::Resilience::call_isolated)
//!   runs it on the stack's pool and re-raises its panic on the caller's thread. Likewise a custom [`Clock`](crate::clock::Clock) that panics
//!   panics its caller (a supervisor turns it into `StopReason::Failed`).
//! - **A task waiting for work of its own pool.** A task that joins its *own* handle
//!   gets [`TaskError::JoinedFromItself`](crate::pool::TaskError::JoinedFromItself) at once.
//!   But a task that waits without a bound for *another* task of the same pool (a
//!   plain `join`) can wait for ever when every worker is busy waiting the same way:
//!   no pool can run queued work while all its workers are blocked. Use a bounded
//!   join, `map`, or a [`scope`](crate::scope()) for fork-join work inside a pool.
//! - **Running user code is never interrupted.** corral cancels through tokens; a
//!   task, stage or child that ignores its token runs until it returns. The bounded
//!   forms (`shutdown_timeout`, `stop_timeout`, ...) hand the owner back instead of
//!   waiting, and name what is still running.
//! - **A second panic while unwinding aborts, by Rust's rule.** A user value whose
//!   `Drop` panics while that same user's code is already unwinding (an item dropped
//!   by the panicking stage function that owns it, say) aborts the process before
//!   corral sees it. Values corral drops itself are dropped one at a time, never
//!   during an unwind.
//! - **A wait for a slot past the time horizon.** An unbounded `RateLimiter::wait`
//!   whose slot lies past the end of the limiter's 584-year timeline does not return;
//!   its bounded forms fail at once.
//!
//! ## Bad input
//!
//! | primitive | parameter | value | outcome |
//! | --- | --- | --- | --- |
//! | clock | `ManualClock::advance` | `Duration::ZERO` | the clock does not move |
//! | clock | `ManualClock::advance` | `Duration::MAX`, repeatedly | saturates at `u64::MAX` ns of movement; never wraps, never goes backwards |
//! | pool | `workers` | `0` | `ConfigError` (`workers`) |
//! | pool | `workers` | above 4096, `usize::MAX` | `ConfigError` (`workers`) |
//! | pool | `queue_capacity` | `0`, above 2²⁴, `usize::MAX` | `ConfigError` (`queue_capacity`) |
//! | pool | `stack_size` | `0`, below 16 KiB, above 1 GiB, `usize::MAX` | `ConfigError` (`stack_size`) |
//! | pool | `thread_name` | with a NUL byte | `ConfigError` (`thread_name`) |
//! | pool | `thread_name` | empty | accepted; threads are named `corral--N` |
//! | pool | `submit_timeout`, `execute_timeout`, `submit_with_token_timeout` | `Duration::ZERO` with a full queue | `Err(SubmitError::Timeout(task))` |
//! | pool | `submit_timeout`, `execute_timeout` | `Duration::MAX` | no deadline (saturates) |
//! | pool | `submit_deadline` and friends | in the past, full queue; in the past, room | `Err(SubmitError::Timeout(task))`; accepted |
//! | pool | `submit_cancellable` | a cancelled token, full queue | `Err(SubmitError::Cancelled(task, reason))` |
//! | pool | `TaskHandle::join_timeout`, `join_deadline`, `join_cancellable` | `ZERO`, a past deadline, a cancelled token, unfinished task | `Err(handle)`, to join again |
//! | pool | `TaskHandle::join_timeout` | `Duration::MAX` | `Ok(result)` |
//! | pool | `shutdown_timeout` | `Duration::ZERO` with a busy worker | `Err(pool)`, its token cancelled; queued tasks are reported as never run |
//! | pool | `shutdown_timeout` | `Duration::ZERO` idle; `Duration::MAX` | `Ok(report)` |
//! | pool | `map` items | empty; endless (`0..`) | yields nothing; at most `queue_capacity + workers` items pulled ahead |
//! | pool | tasks run on the submitting thread (`CallerRuns`, a worker submitting to its own full pool, `on_drop` re-entry) | nested deeper than 64 | `Err(SubmitError::Full(task))` (an `on_drop` callback is skipped and the task dropped, counted) |
//! | group | `limit` | `0`; above `Semaphore::MAX_PERMITS`, `usize::MAX` | `ConfigError` (`limit`) |
//! | group | `spawn_timeout`, `spawn_deadline` | `ZERO` or a past deadline at the limit | `Err(SubmitError::Timeout(task))` |
//! | group | `spawn_timeout`, `spawn_deadline` | `Duration::MAX` or a past deadline with a free slot | starts the task |
//! | group | `spawn_cancellable` | a cancelled token at the limit | `Err(SubmitError::Cancelled(task, reason))` |
//! | group | `try_spawn` | at the limit | `Err(SubmitError::Full(task))` |
//! | pipeline | stage `workers` | `0` | `ConfigError` (`workers`) |
//! | pipeline | stage `workers` | above 4096, `usize::MAX` (also ordered) | `ConfigError` (`workers`) |
//! | pipeline | workers over all stages | above 4096 | `ConfigError` (`workers`) |
//! | pipeline | stage `workers` | 4096 with one item | runs and delivers it |
//! | pipeline | `capacity`, `buffer` | `0`, above 2²⁴, `usize::MAX` | `ConfigError` (`capacity` / `buffer`) |
//! | pipeline | `buffer` | below the batch size | `ConfigError` (`buffer`) |
//! | pipeline | `batch` | `0`, above the capacity, `usize::MAX` | `ConfigError` (`batch`) |
//! | pipeline | `ordered_window` | `0`, `usize::MAX` | `ConfigError` (`ordered_window`) |
//! | pipeline | stage name | empty, with a NUL byte, `source`/`sink`, repeated | `ConfigError` (`name`) |
//! | pipeline | stage name | 64 KiB long | runs (the OS thread name is shortened) |
//! | pipeline | `overflow` | `Reject`, `CallerRuns` | `ConfigError` (`overflow`) |
//! | pipeline | source | no items | `Ok`; every stage's `items_in` is 0 |
//! | pipeline | `run_timeout` | `Duration::ZERO` | `Err(Cancelled { reason: DeadlineExceeded, .. })`; the source is never pulled |
//! | pipeline | `run_timeout`, `collect_timeout` | `Duration::MAX` | no deadline (saturates); `Ok` |
//! | pipeline | `run_deadline`, `collect_deadline` | now or in the past | `Err(Cancelled { reason: DeadlineExceeded, .. })`; the source is never pulled |
//! | pipeline | `run_cancellable` | a token already cancelled | `Err(Cancelled { reason: Cancelled, .. })`; nothing delivered |
//! | pipeline | `PipelineReport` fields | `u64::MAX`, `Duration::MAX` | every method saturates; `utilization` stays within 0..=1 |
//! | supervisor | children | none | `ConfigError` (`children`) |
//! | supervisor | child name | with a NUL byte | `ConfigError` (`child name`) |
//! | supervisor | child name | empty | allowed; the thread is `corral-sup-` |
//! | supervisor | `intensity` restarts | `0` | the first restart stops it with `StopReason::IntensityExceeded` |
//! | supervisor | `intensity` restarts | above 1,000,000, `usize::MAX` | `ConfigError` (`max_restarts`) |
//! | supervisor | `intensity` period | `Duration::ZERO` | `ConfigError` (`period`) |
//! | supervisor | `intensity` period | `Duration::MAX` | counts every restart ever made |
//! | supervisor | `backoff` | `(ZERO, ZERO)` | restarts at once |
//! | supervisor | `backoff` | `(MAX, MAX)`, also on a `ManualClock` advanced by `MAX` | saturates; `stop` interrupts it (`StopReason::Stopped`) |
//! | supervisor | `backoff` | base above max | `ConfigError` (`backoff max`) |
//! | supervisor | `stop_timeout` | `Duration::MAX` | waits like `stop`; `Ok(report)` |
//! | supervisor | `stop_timeout`, `stop_deadline` | `ZERO`, a past deadline | cancels; `Ok(report)` once joined, else `Err(supervisor)` to try again |
//! | supervisor | `join_timeout` | `Duration::MAX` | waits like `join` |
//! | supervisor | `join_timeout`, `join_deadline`, `join_cancellable` | `ZERO`, a past deadline, an expired token | `Err(supervisor)`, still running |
//! | supervisor | child name | used twice | `ConfigError` (`child name`); at run time `AddChildError::Duplicate` with the spec handed back |
//! | supervisor | `jitter` | outside `0.0..=1.0`, NaN | `ConfigError` (`jitter`) |
//! | supervisor | `history` | above 1,000,000 | `ConfigError` (`history`); `0` keeps no exit and counts them all |
//! | supervisor | `watchdog` | `ZERO` | `ConfigError` (`watchdog`) |
//! | pool | `watchdog` threshold | `ZERO` / `Duration::MAX` | every running task is reported once / none ever is |
//! | scope | `spawn_named` name | empty | the thread is `corral-` |
//! | scope | `spawn_named` name | with a NUL byte | the NUL is escaped: the thread is `corral-a\0b` (backslash, zero) |
//! | scope | `try_spawn_named` name | with a NUL byte | `Err(SpawnError)` whose `io::Error` is of kind `InvalidInput` |
//! | resilience | `timeout` | `Duration::ZERO` | `ConfigError` (`timeout`) |
//! | resilience | `timeout` | `Duration::MAX` | no deadline (saturates) |
//! | resilience | `retries` | `0` | one attempt: `Inner { attempts: 1, .. }` |
//! | resilience | `retries` | above 1,000,000, `u32::MAX` | `ConfigError` (`retries`) |
//! | resilience | `backoff` | `(ZERO, ZERO)` | retries at once |
//! | resilience | `backoff` | initial above max | `ConfigError` (`backoff`) |
//! | resilience | `backoff` | `(MAX, MAX)`, with jitter, on a `ManualClock` | saturates; the call's token ends the wait |
//! | resilience | caller token | deadline in the past, `with_timeout(ZERO)` | `Err(DeadlineExceeded)`, counted as refused |
//! | resilience | `isolate` | `0`, above 4096 | `ConfigError` (`workers`) |
//! | resilience | `name` (with `isolate`) | with a NUL byte | `ConfigError` (`thread_name`) |
//! | resilience | `RetryBudget` `ratio` | negative, above 1000, NaN | `ConfigError` (`ratio`) |
//! | resilience | `RetryBudget` `window` | below 10 ms, above 1 h | `ConfigError` (`window`) |
//! | cancel | `with_timeout`, `child_with_timeout` | `Duration::ZERO` | cancelled with `DeadlineExceeded` (a child's parent is untouched) |
//! | cancel | `with_timeout`, `child_with_timeout` | `Duration::MAX` | no deadline (saturates); a child keeps its parent's earlier deadline |
//! | cancel | `with_deadline`, `child_with_deadline` | in the past | cancelled with `DeadlineExceeded`; `wait` returns at once |
//! | cancel | `wait_timeout`, `wait_deadline` | `ZERO`, a past deadline | `None` at once |
//! | cancel | `wait_timeout` | `Duration::MAX` | returns the reason once cancelled |
//! | cancel | `expired()` | a saturated deadline; a past deadline | never fires; fires at once |
//! | cancel | `cancel()`, `on_cancel` | on a token already expired | keeps `DeadlineExceeded`; the callback runs at once |
//! | cancel | `child()` chain | 1,000,000 deep, dropped or cancelled | iterative: no stack overflow |
//! | leak | `LeakCheck` grace | `Duration::MAX` | saturates; waits as long as threads still run |
//! | leak | `LeakCheck` grace | `Duration::ZERO` | checks once, without waiting |
//! | rate | `per_second` | `0`, `u32::MAX` | `ConfigError` (`per_second`) |
//! | rate | `per_minute` | `0` | `ConfigError` (`per_minute`) |
//! | rate | `per_minute` | `u32::MAX` | builds (13 ns per cell) |
//! | rate | `with_period` | `Duration::ZERO`, `Duration::MAX` | `ConfigError` (`with_period`) |
//! | rate | `burst` | `0`; a burst whose span passes 2⁶² ns | `ConfigError` (`burst`) |
//! | rate | `check_n`, `wait_n` (every form), `reserve_n` | `0` | `Ok` at once; nothing used (an empty reservation) |
//! | rate | `check_n`, `wait_n` (every form), `reserve_n` | above the burst, `u32::MAX` | `Err(InsufficientCapacity)` at once |
//! | rate | `wait_timeout`, `wait_deadline` | `ZERO`, a past deadline | `Ok` if a cell is free, else `Err(WaitError::Timeout)` at once, never sleeps |
//! | rate | `wait_timeout` | `Duration::MAX` | no deadline (saturates); waits for its slot |
//! | rate | `wait_cancellable` | a token whose deadline passed | `Err(WaitError::Cancelled(DeadlineExceeded))` |
//! | rate | `set_rate` | `0` cells, a zero period, `(1, Duration::MAX)`, `(u32::MAX, 1 ns)` | `ConfigError` (`set_rate`); the limiter is unchanged |
//! | rate | `set_burst` | `0`, a span past 2⁶² ns | `ConfigError` (`burst`); the limiter is unchanged |
//! | rate | its clock | advanced by `Duration::MAX` | keeps limiting: at most a burst, then `NotUntil::is_never()`, and a reservation `is_never()` |
//! | rate | `Reservation::cancel` | after its slot has passed; while a later claim stands | gives nothing back (never over-admits) |
//! | keyed rate | `per_second`, `with_period`, `burst` | as for `RateLimiter` | `ConfigError` naming the field |
//! | keyed rate | `max_keys` | `0`, above `MAX_KEYS` (2²⁶), `usize::MAX` | `ConfigError` (`max_keys`) |
//! | keyed rate | `shards` | `0` | `ConfigError` (`shards`) |
//! | keyed rate | `shards` | `usize::MAX` | capped at 65,536 and at `max_keys` |
//! | keyed rate | `check_key_n`, `wait_key_n` | `0`; `u32::MAX` | `Ok` at once; `Err(InsufficientCapacity)` |
//! | keyed rate | `wait_key_timeout`, `wait_key_deadline` | `Duration::MAX`; `ZERO` or a past deadline | waits for its slot; `Err(Timeout)` at once unless a cell is free |
//! | keyed rate | its clock | advanced by `Duration::MAX` | keeps limiting per key |
//! | keyed rate | a key whose `Hash`, `Eq` or `Clone` panics | — | the panic reaches the caller; the shard stays usable and nothing is counted |
//! | keyed rate | a key whose `Drop` panics | — | caught when the key is forgotten or the limiter dropped; counted in `KeyedStats::key_drop_panics` |
//! | redis rate | rate | unset, `0`, a zero or `Duration::MAX` interval | `ConfigError` (`rate`) |
//! | redis rate | `burst` | `0`, `u32::MAX` at 1/s | `ConfigError` (`burst`) |
//! | redis rate | `io_timeout` | `Duration::ZERO` | `ConfigError` (`io_timeout`) |
//! | redis rate | `addr` | empty, with a NUL byte, a bad port | `ConfigError` (`addr`) |
//! | redis rate | `wait_timeout(ZERO)`, a past deadline, a cancelled token | — | `Timeout` / `Cancelled` at once, no network |
//! | breaker | `consecutive_failures` | `0` | `ConfigError` (`consecutive_failures`) |
//! | breaker | `consecutive_failures` | `u32::MAX` | accepted; counts without wrapping |
//! | breaker | `failure_rate` | NaN, negative, `0.0`, above `1`, infinite | `ConfigError` (`failure_rate`) |
//! | breaker | `failure_rate` | `1.0` | trips only when every call in the window fails |
//! | breaker | `failure_rate` | `f64::MIN_POSITIVE` | trips on the first failure once `minimum_calls` is reached |
//! | breaker | `window` | `Count(0)`, above `MAX_COUNT_WINDOW` (2²⁰), `Count(u32::MAX)` | `ConfigError` (`window`) |
//! | breaker | `window` | `Time` below 10 ns | `ConfigError` (`window`) |
//! | breaker | `window` | `Time(Duration::MAX)` | accepted; outcomes are kept until the breaker closes again |
//! | breaker | `minimum_calls` | `0`; `u32::MAX` with a count window | `ConfigError` (`minimum_calls`) |
//! | breaker | `minimum_calls` | `u32::MAX` with a time window | accepted; a rate is never evaluated |
//! | breaker | `slow_call` duration | `Duration::ZERO` | `ConfigError` (`slow_call.duration`) |
//! | breaker | `slow_call` duration | `Duration::MAX` | no call is slow |
//! | breaker | `slow_call` rate | NaN, `0`, negative, above `1` | `ConfigError` (`slow_call.rate`) |
//! | breaker | `open_for` | `Duration::ZERO` | `ConfigError` (`open_for`) |
//! | breaker | `open_for` | `Duration::MAX` | open until `reset`; `retry_after` is `Duration::MAX` |
//! | breaker | `backoff` multiplier | NaN, infinite, below `1`, `0`, negative | `ConfigError` (`backoff.multiplier`) |
//! | breaker | `backoff` multiplier | `1e300` with max `Duration::MAX` | saturates at the horizon (`u64::MAX` ns), then open until `reset` |
//! | breaker | `backoff` max | below `open_for`, `Duration::ZERO` | `ConfigError` (`backoff.max`) |
//! | breaker | `half_open_calls` | `0` | `ConfigError` (`half_open_calls`) |
//! | breaker | `half_open_calls` | `u32::MAX` | accepted; no overflow |
//! | breaker | `half_open_timeout` | `Duration::ZERO` | `ConfigError` (`half_open_timeout`) |
//! | breaker | `half_open_timeout` | `Duration::MAX` | never times out; the trials decide |
//! | breaker | its clock | advanced by `Duration::MAX` | an open breaker stays open until `reset` |
//! | semaphore | `new`, `try_new` | `0` | valid; every acquire is `Err(AboveCapacity { capacity: 0, .. })` |
//! | semaphore | `new` | `MAX_PERMITS` | accepted; every permit can be lent |
//! | semaphore | `try_new` | `usize::MAX`, `MAX_PERMITS + 1` | `ConfigError` (`permits`) |
//! | semaphore | `new` | `usize::MAX` | panics, as documented under `# Panics` (`try_new` returns the error) |
//! | semaphore | `acquire_many` (every form) | `0` | an empty permit at once (`Err(Closed)` once closed) |
//! | semaphore | `acquire_many` (every form) | above the capacity, `usize::MAX` | `Err(AboveCapacity { requested, capacity })` at once |
//! | semaphore | `add_permits` | `0` | no change |
//! | semaphore | `add_permits` | past `MAX_PERMITS`, `usize::MAX` | `ConfigError` (`permits`); nothing changes |
//! | semaphore | `set_capacity` | `usize::MAX` | `ConfigError` (`capacity`); nothing changes |
//! | semaphore | `set_capacity` | `0` while waiters queue | waiters get `Err(AboveCapacity { capacity: 0, .. })`; held permits become debt |
//! | semaphore | `forget` | then `add_permits`; `forget` of 0; during a shrink | capacity restored; no-op; pays the debt |
//! | semaphore | timeout | `Duration::ZERO` | takes free permits, else `Err(Timeout)` at once |
//! | semaphore | timeout | `Duration::MAX` | waits without limit (the deadline saturates) |
//! | semaphore | deadline | in the past | takes free permits, else `Err(Timeout)` at once |
//! | semaphore | token | already cancelled, or `with_timeout(ZERO)` | takes free permits, else `Err(Cancelled(_))` |
//! | semaphore | `close` | while waiters queue | every waiter gets `Err(Closed)`; held permits come back normally |
