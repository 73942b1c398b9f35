//! A backpressure pipeline: source → typed stages with their own workers and bounded
//! queues → sink, with overflow policies, first-error cancellation, ordered output
//! and a report that names the bottleneck.
//!
//! A [`Pipeline`] is described first (stages plain, stateful or batched, queue sizes
//! and policies, ...) and nothing starts until a terminal call. A batch job runs
//! inside the call ([`run`](Pipeline::run), [`collect`](Pipeline::collect), ...):
//! every thread is scoped, so stages and the source may borrow. A service
//! [`spawn`](Pipeline::spawn)s it on threads of its own and gets a
//! [`RunningPipeline`] (live statistics, drain or cancel, bounded joins); its items may
//! be pushed from any thread through an [`Input`] ([`Pipeline::with_input`]). Either
//! way every thread has joined when the run's outcome is returned: a
//! [`PipelineReport`] of per-stage counts and times ([`StageStats`]), or a
//! [`PipelineError`] naming the stage that failed. Each stage's books balance: every
//! item that came in went out, was dropped by the overflow policy (and handed to
//! `on_drop`), failed, or was not processed because the run stopped.
//
// Layout: this file is the front (the builder, which only describes a run, and its
// errors); `input.rs` and `running.rs` are the fronts of a pushed input and of a
// spawned run; `run.rs` is the engine, which starts every thread of a run; `door.rs`
// is the pushed input's close protocol, `gate.rs` the reorder window and `report.rs`
// the public report types.

// `PipelineError` carries the run's report and a `Panic` inline, so it is large; a run
// returns it once, and boxing the fields would only make matching on it clumsier.
#![allow(clippy::result_large_err)]

mod door;
mod gate;
mod input;
mod report;
mod run;
mod running;

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cancel::{CancelReason, CancelToken};
use crate::clock::{Clock, SystemClock};
use crate::config::{check_name, ConfigError};
use crate::observe::event;
use crate::observe::{Owner, Slot, Stuck, Watchdog};
use crate::overflow::Overflow;
use crate::panic::{drop_caught, drop_quietly, Panic};
use crate::spawn::SpawnError;

pub use input::{Input, SendError};
pub use report::{PipelineReport, StageStats};
pub use running::RunningPipeline;

use run::{BoxError, Ctx, Failure, Head, OnDrop, Queue, Settings};

#[cfg(loom)]
#[doc(hidden)]
pub use door::LoomDoor;
#[cfg(loom)]
#[doc(hidden)]
pub use gate::LoomGate;

/// Default queue capacity, in items.
pub(crate) const DEFAULT_CAPACITY: usize = 64;

/// A watchdog's callback.
pub(crate) type OnStuck = Arc<dyn Fn(&Stuck) + Send + Sync>;

/// Most worker threads one stage may have (the worker pool's cap).
pub(crate) const MAX_STAGE_WORKERS: usize = crate::pool::WorkerPool::MAX_WORKERS;

/// Most worker threads one run may start, over all its stages.
pub(crate) const MAX_RUN_WORKERS: usize = crate::pool::WorkerPool::MAX_WORKERS;

/// Most items one queue may hold (the worker pool's queue cap). It also caps the
/// batch (never more than a queue) and the reorder window.
pub(crate) const MAX_CAPACITY: usize = crate::pool::WorkerPool::MAX_QUEUE_CAPACITY;

/// A backpressure pipeline under construction: a source, then stages, then a sink.
///
/// Each stage has its own worker threads and a bounded queue in front of it. When a
/// queue is full the [`Overflow`] policy decides: [`Overflow::Block`] (the default)
/// makes the sender wait, which slows everything upstream down to the pace of the
/// slowest stage (backpressure); [`Overflow::DropNewest`] / [`Overflow::DropOldest`]
/// drop an item instead, count it and hand it to the [`on_drop`](Pipeline::on_drop)
/// callback. ([`Overflow::Reject`] and [`Overflow::CallerRuns`] belong to the worker
/// pool: a run configured with them fails with a [`ConfigError`].) Under
/// `Block` the first stage needs no queue: its workers pull the source directly.
/// [`buffer`](Pipeline::buffer) and [`buffer_overflow`](Pipeline::buffer_overflow)
/// set one queue's capacity and policy apart from the others.
///
/// Stages come plain ([`stage`](Pipeline::stage), [`try_stage`](Pipeline::try_stage)),
/// with a state per worker ([`stage_with_state`](Pipeline::stage_with_state): a
/// connection, a buffer) or batched ([`batch_stage`](Pipeline::batch_stage): a `Vec`
/// of up to n items, flushed on size or time).
///
/// For a long-running service, [`spawn`](Pipeline::spawn) runs the pipeline on threads
/// of its own and returns a [`RunningPipeline`]; [`with_input`](Pipeline::with_input)
/// feeds it by pushing from any thread, with backpressure. What follows holds for
/// both ways of running.
///
/// Nothing runs until a terminal call: [`try_for_each`](Pipeline::try_for_each),
/// [`collect`](Pipeline::collect), or [`run`](Pipeline::run) with its bounded forms
/// [`run_timeout`](Pipeline::run_timeout), [`run_deadline`](Pipeline::run_deadline)
/// and [`run_cancellable`](Pipeline::run_cancellable). All threads are scoped: stage
/// closures and the source may borrow from the caller, and every thread has joined
/// when the call returns. The sink runs on the calling thread.
///
/// The first `Err` from a [`try_stage`](Pipeline::try_stage) (or a panic anywhere)
/// cancels the run: the source stops being pulled, queued items are counted as not
/// processed, and the error comes back with the [`PipelineReport`]. User code that is
/// running (an iterator's `next`, a stage function, the sink) is never interrupted:
/// the run ends when those calls return.
///
/// Output is unordered by default; [`ordered`](Pipeline::ordered) restores input
/// order with a bounded reorder window.
///
/// # Guarantees and limits
///
/// - Every thread a run starts has joined when the terminal call returns, whatever
///   the outcome. If the OS refuses a thread, the threads already started are
///   stopped and joined and the run returns [`PipelineError::Spawn`]. All threads are
///   scoped to the call, so no owner can be dropped on one of its own threads.
/// - Every item the source yields is accounted for: delivered to the sink, dropped
///   by the overflow policy (counted, and handed to `on_drop` if set), failed, or
///   counted as not processed; every stage's books balance
///   ([`StageStats::balanced`]).
/// - A panic in any user piece becomes [`PipelineError::Panicked`]: the source
///   iterator (`next`, or its `Drop`), a stage function (or its captures' `Drop`),
///   an item's `Drop` wherever the run discards the item, an `on_drop` callback, the
///   sink (or its `Drop`). A stage error's `Debug` is formatted inside
///   the boundary too. The first failure is the one reported; no worker dies and no
///   run hangs because of a panic.
/// - Limits: at most 4096 workers per stage and 4096 over all stages of a run;
///   capacities, buffers, the batch and the reorder window at most 2^24 items. Above
///   them (and for 0) the terminal call returns [`PipelineError::Config`] naming the
///   field and the value, before any thread starts. Stage names must be non-empty,
///   unique, not `"source"`/`"sink"`, and contain no NUL.
/// - Time: a timeout of [`Duration::MAX`] never expires (the deadline saturates); a
///   zero timeout or a deadline in the past stops the run before the source is
///   pulled, with [`PipelineError::Cancelled`] (reason `DeadlineExceeded`).
/// - Not kept by construction: user code that is running is never interrupted, so a
///   source `next()`, a stage function or a sink that blocks delays the end of the
///   run until it returns; and an item whose `Drop` panics while its own stage
///   function is already unwinding aborts the process, as Rust does for any second
///   panic during unwinding (the run drops what it discards only outside unwinding).
///
/// # Example
///
/// ```
/// use corral::{Overflow, Pipeline};
///
/// let lines = vec!["3", "1", "x", "4"];
/// let result = Pipeline::from_iter(&lines)
///     .stage("trim", 2, |s: &&str| s.trim())
///     .try_stage("parse", 2, |s: &str| s.parse::<u32>())
///     .capacity(16)
///     .overflow(Overflow::Block)
///     .ordered()
///     .collect();
/// let err = result.unwrap_err(); // "x" does not parse: the run stops
/// assert_eq!(err.stage(), Some("parse"));
///
/// let (squares, report) = Pipeline::from_iter(1..=4u64)
///     .stage("square", 2, |x| x * x)
///     .ordered()
///     .collect()?;
/// assert_eq!(squares, vec![1, 4, 9, 16]);
/// assert_eq!(report.stage("square").unwrap().items_out, 4);
/// # Ok::<(), corral::pipeline::PipelineError>(())
/// ```
///
/// A pipeline borrows what its closures borrow, so it cannot outlive them:
///
/// ```compile_fail
/// let pipeline;
/// {
///     let table = vec![10, 20, 30];
///     pipeline = corral::Pipeline::from_iter(0..3usize).stage("lookup", 2, |i| table[i]);
/// } // `table` dies here while the pipeline still borrows it
/// pipeline.run(|_| {}).unwrap();
/// ```
#[must_use = "a pipeline does nothing until it is run (`run`, `try_for_each`, `collect` or their bounded forms)"]
pub struct Pipeline<'env, T> {
    head: Head<'env, T>,
    /// Stage names and worker counts, source first.
    stages: Vec<(String, usize)>,
    /// Per producer (source first, as `stages`): the capacity of the queue after it,
    /// when [`buffer`](Pipeline::buffer) set one.
    buffers: Vec<Option<usize>>,
    /// Per producer, as `buffers`: the overflow policy of the queue after it, when
    /// [`buffer_overflow`](Pipeline::buffer_overflow) set one.
    overflows: Vec<Option<Overflow>>,
    on_drop: Option<OnDrop<'env, T>>,
    capacity: usize,
    overflow: Overflow,
    batch: usize,
    ordered: Option<Option<usize>>,
    /// Fed through an [`Input`] rather than an iterator.
    pushed: bool,
    /// Has a batched stage (whose output has no source order).
    batched: bool,
    /// The time batched stages flush by (and the watchdog measures by).
    clock: Arc<dyn Clock>,
    /// The pipeline's name, for thread names, the dump, events and metrics.
    name: Option<Arc<str>>,
    /// The stuck-item watchdog: its threshold and callback.
    watchdog: Option<(Duration, OnStuck)>,
    invalid: Option<ConfigError>,
    /// Unit tests: the (stage index, worker) whose thread fails to start.
    #[cfg(test)]
    fail_spawn_at: Option<(usize, usize)>,
}

impl<'env, T: Send + 'env> Pipeline<'env, T> {
    /// A pipeline whose items come from `source`, pulled on demand.
    ///
    /// With [`Overflow::Block`] (the default) the first stage's workers pull the
    /// source themselves, one batch at a time (never concurrently), only as fast as
    /// they process; with no stage the calling thread pulls it. With a drop policy it
    /// is pulled on its own thread (`corral-pipe-source`) as fast as the first queue
    /// accepts or drops the items, so that overload is dropped there.
    ///
    /// # Example
    ///
    /// ```
    /// let (out, _) = corral::Pipeline::from_iter(vec![1, 2, 3]).collect()?;
    /// assert_eq!(out.len(), 3);
    /// # Ok::<(), corral::pipeline::PipelineError>(())
    /// ```
    #[allow(clippy::should_implement_trait)] // a constructor, not `FromIterator`: nothing is collected
    pub fn from_iter<I>(source: I) -> Self
    where
        I: IntoIterator<Item = T>,
        I::IntoIter: Send + 'env,
    {
        Pipeline {
            head: Head::Source(run::pull_from(source.into_iter())),
            stages: vec![("source".to_owned(), 1)],
            buffers: vec![None],
            overflows: vec![None],
            on_drop: None,
            capacity: DEFAULT_CAPACITY,
            overflow: Overflow::Block,
            batch: 1,
            ordered: None,
            pushed: false,
            batched: false,
            clock: Arc::new(SystemClock),
            name: None,
            watchdog: None,
            invalid: None,
            #[cfg(test)]
            fail_spawn_at: None,
        }
    }

    /// Adds a stage named `name` with `workers` threads applying `f` to every item.
    ///
    /// Thread names are `corral-pipe-<name>-<n>`. A panic in `f` stops the run with
    /// [`PipelineError::Panicked`].
    ///
    /// # Errors
    ///
    /// None here: the terminal call returns [`PipelineError::Config`] if `workers` is
    /// 0 or more than 4096 (the stages of one run together may not exceed 4096
    /// workers either), or the name is empty, contains a NUL, is
    /// `"source"`/`"sink"`, or repeats.
    ///
    /// # Example
    ///
    /// ```
    /// let prefix = String::from("item-"); // borrowed by the stage's workers
    /// let (out, _) = corral::Pipeline::from_iter(0..3)
    ///     .stage("label", 2, |n| format!("{prefix}{n}"))
    ///     .ordered()
    ///     .collect()?;
    /// assert_eq!(out, ["item-0", "item-1", "item-2"]);
    /// # Ok::<(), corral::pipeline::PipelineError>(())
    /// ```
    pub fn stage<U, F>(self, name: impl Into<String>, workers: usize, f: F) -> Pipeline<'env, U>
    where
        U: Send + 'env,
        F: Fn(T) -> U + Send + Sync + 'env,
    {
        self.add_stage(
            name.into(),
            workers,
            || (),
            move |_: &mut (), item| Ok(f(item)),
        )
    }

    /// Adds a fallible stage: the first `Err` cancels the whole run and comes back as
    /// [`PipelineError::Failed`] naming this stage.
    ///
    /// # Errors
    ///
    /// As [`stage`](Pipeline::stage) for the configuration.
    ///
    /// # Example
    ///
    /// ```
    /// use std::error::Error;
    ///
    /// let err = corral::Pipeline::from_iter(["1", "2", "oops"])
    ///     .try_stage("parse", 1, |s| s.parse::<i32>())
    ///     .run(|_| {})
    ///     .unwrap_err();
    /// assert_eq!(err.stage(), Some("parse"));
    /// assert_eq!(err.to_string(), "stage parse failed");
    /// let cause = err.source().unwrap(); // the stage's own error
    /// assert_eq!(cause.to_string(), "invalid digit found in string");
    /// assert!(cause.is::<std::num::ParseIntError>());
    /// ```
    pub fn try_stage<U, E, F>(
        self,
        name: impl Into<String>,
        workers: usize,
        f: F,
    ) -> Pipeline<'env, U>
    where
        U: Send + 'env,
        E: Into<Box<dyn Error + Send + Sync>>,
        F: Fn(T) -> Result<U, E> + Send + Sync + 'env,
    {
        self.add_stage(
            name.into(),
            workers,
            || (),
            move |_: &mut (), item| f(item).map_err(Into::into),
        )
    }

    /// Adds a stage whose workers each keep a state of their own: a connection, a
    /// buffer, a cache. Each worker calls `init` once when it starts, passes the state
    /// to every call of `f`, and drops it when it ends (after the input ends or the
    /// run stops). `init`, `f` and the state's `Drop` run inside the panic boundary:
    /// a panic in any of them stops the run with [`PipelineError::Panicked`] naming
    /// this stage. The state never leaves its worker's thread, so it need not be
    /// `Send`.
    ///
    /// # Errors
    ///
    /// As [`stage`](Pipeline::stage) for the configuration.
    ///
    /// # Example
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    ///
    /// let connects = AtomicUsize::new(0);
    /// let (out, _) = corral::Pipeline::from_iter(0..100u32)
    ///     .stage_with_state(
    ///         "lookup",
    ///         2,
    ///         || {
    ///             connects.fetch_add(1, Ordering::Relaxed); // say, open a connection
    ///             Vec::<u32>::new()                          // and a per-worker buffer
    ///         },
    ///         |seen: &mut Vec<u32>, x| {
    ///             seen.push(x);
    ///             x * 2
    ///         },
    ///     )
    ///     .collect()?;
    /// assert_eq!(out.len(), 100);
    /// assert_eq!(connects.load(Ordering::Relaxed), 2); // once per worker
    /// # Ok::<(), corral::pipeline::PipelineError>(())
    /// ```
    pub fn stage_with_state<U, S, I, F>(
        self,
        name: impl Into<String>,
        workers: usize,
        init: I,
        f: F,
    ) -> Pipeline<'env, U>
    where
        U: Send + 'env,
        S: 'env,
        I: Fn() -> S + Send + Sync + 'env,
        F: Fn(&mut S, T) -> U + Send + Sync + 'env,
    {
        self.add_stage(name.into(), workers, init, move |state: &mut S, item| {
            Ok(f(state, item))
        })
    }

    /// [`stage_with_state`](Pipeline::stage_with_state) with a fallible function: the
    /// first `Err` cancels the run, as in [`try_stage`](Pipeline::try_stage).
    ///
    /// # Errors
    ///
    /// As [`stage`](Pipeline::stage) for the configuration.
    pub fn try_stage_with_state<U, E, S, I, F>(
        self,
        name: impl Into<String>,
        workers: usize,
        init: I,
        f: F,
    ) -> Pipeline<'env, U>
    where
        U: Send + 'env,
        E: Into<Box<dyn Error + Send + Sync>>,
        S: 'env,
        I: Fn() -> S + Send + Sync + 'env,
        F: Fn(&mut S, T) -> Result<U, E> + Send + Sync + 'env,
    {
        self.add_stage(name.into(), workers, init, move |state: &mut S, item| {
            f(state, item).map_err(Into::into)
        })
    }

    fn add_stage<U, S, I, F>(self, name: String, workers: usize, init: I, f: F) -> Pipeline<'env, U>
    where
        U: Send + 'env,
        S: 'env,
        I: Fn() -> S + Send + Sync + 'env,
        F: Fn(&mut S, T) -> Result<U, BoxError> + Send + Sync + 'env,
    {
        self.add_work(name, workers, run::stateful(init, f))
    }

    /// Adds a stage whose `workers` threads each run `work` (a worker loop).
    fn add_work<U, W>(mut self, name: String, workers: usize, work: W) -> Pipeline<'env, U>
    where
        U: Send + 'env,
        W: Fn(&Ctx<'env>, usize, run::Intake<'env, T>, run::Outbound<'env, U>) + Send + Sync + 'env,
    {
        if self.invalid.is_none() {
            self.invalid = check_stage(&self.stages, &name, workers).err();
        }
        let index = self.stages.len();
        let prev = self.head;
        let on_drop = self.on_drop;
        let stage_name = name.clone();
        self.stages.push((name, workers));
        self.buffers.push(None);
        self.overflows.push(None);
        Pipeline {
            head: run::stage(prev, on_drop, index, stage_name, workers, work),
            stages: self.stages,
            buffers: self.buffers,
            overflows: self.overflows,
            on_drop: None,
            capacity: self.capacity,
            overflow: self.overflow,
            batch: self.batch,
            ordered: self.ordered,
            pushed: self.pushed,
            batched: self.batched,
            clock: self.clock,
            name: self.name,
            watchdog: self.watchdog,
            invalid: self.invalid,
            #[cfg(test)]
            fail_spawn_at: self.fail_spawn_at,
        }
    }

    /// Adds a batched stage: each of its `workers` threads gathers items into a `Vec`
    /// of up to `max_items` and calls `f` with it, say for a bulk insert; what `f`
    /// returns goes on as one item. A batch goes when it is full, when `max_wait` has
    /// passed since its first item (on the pipeline's [`clock`](Pipeline::clock)), or
    /// when the input ends. No timer thread: a worker holding a partial batch waits
    /// for input only until the batch is due.
    ///
    /// In the report, the stage's `items_out` counts the items of the batches `f`
    /// took; the next stage's `items_in` counts what `f` returned. A failed batch
    /// (`Err` from [`try_batch_stage`](Pipeline::try_batch_stage), or a panic) counts
    /// one failed item and the rest as not processed, and stops the run. A batched
    /// stage has no source order: with [`ordered`](Pipeline::ordered) the terminal
    /// call returns a [`ConfigError`].
    ///
    /// # Errors
    ///
    /// As [`stage`](Pipeline::stage), and [`PipelineError::Config`] naming
    /// `max_items` for 0 or more than 16 777 216 (2^24).
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let (sizes, report) = corral::Pipeline::from_iter(0..10u32)
    ///     .batch_stage("insert", 1, 4, Duration::from_secs(1), |rows: Vec<u32>| rows.len())
    ///     .collect()?;
    /// assert_eq!(sizes, [4, 4, 2]); // the last batch went when the input ended
    /// assert_eq!(report.stage("insert").unwrap().items_out, 10);
    /// # Ok::<(), corral::pipeline::PipelineError>(())
    /// ```
    pub fn batch_stage<U, F>(
        self,
        name: impl Into<String>,
        workers: usize,
        max_items: usize,
        max_wait: Duration,
        f: F,
    ) -> Pipeline<'env, U>
    where
        U: Send + 'env,
        F: Fn(Vec<T>) -> U + Send + Sync + 'env,
    {
        self.add_batched(name.into(), workers, max_items, max_wait, move |batch| {
            Ok(f(batch))
        })
    }

    /// [`batch_stage`](Pipeline::batch_stage) with a fallible function: the first
    /// `Err` cancels the run, as in [`try_stage`](Pipeline::try_stage).
    ///
    /// # Errors
    ///
    /// As [`batch_stage`](Pipeline::batch_stage) for the configuration.
    pub fn try_batch_stage<U, E, F>(
        self,
        name: impl Into<String>,
        workers: usize,
        max_items: usize,
        max_wait: Duration,
        f: F,
    ) -> Pipeline<'env, U>
    where
        U: Send + 'env,
        E: Into<Box<dyn Error + Send + Sync>>,
        F: Fn(Vec<T>) -> Result<U, E> + Send + Sync + 'env,
    {
        self.add_batched(name.into(), workers, max_items, max_wait, move |batch| {
            f(batch).map_err(Into::into)
        })
    }

    fn add_batched<U, F>(
        mut self,
        name: String,
        workers: usize,
        max_items: usize,
        max_wait: Duration,
        f: F,
    ) -> Pipeline<'env, U>
    where
        U: Send + 'env,
        F: Fn(Vec<T>) -> Result<U, BoxError> + Send + Sync + 'env,
    {
        if self.invalid.is_none() {
            if max_items == 0 {
                self.invalid = Some(ConfigError::new("max_items", 0, "must be at least 1"));
            } else if max_items > MAX_CAPACITY {
                self.invalid = Some(ConfigError::new(
                    "max_items",
                    max_items,
                    "must be at most 16777216 (2^24) items",
                ));
            }
        }
        self.batched = true;
        self.add_work(name, workers, run::batched(max_items.max(1), max_wait, f))
    }

    /// The clock batched stages flush by and the [`watchdog`](Pipeline::watchdog)
    /// measures by (default [`SystemClock`]); tests pass a
    /// [`ManualClock`](crate::clock::ManualClock) to flush on time without waiting.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// A name for the pipeline: in its threads' names (`corral-<name>-<stage>-<n>`
    /// instead of `corral-pipe-<stage>-<n>`), its `Debug`, the thread dump
    /// ([`leak::dump`](crate::leak::dump)), and the `name` of its events and metrics
    /// (features `tracing`, `metrics`).
    ///
    /// # Errors
    ///
    /// The terminal call returns [`PipelineError::Config`] naming `name` for a name
    /// with a NUL byte.
    ///
    /// # Example
    ///
    /// ```
    /// let running = corral::Pipeline::from_iter(0..3u32)
    ///     .name("ingest")
    ///     .stage("parse", 1, |x| x + 1)
    ///     .spawn(|_| {})?;
    /// assert_eq!(running.name(), Some("ingest"));
    /// running.join()?;
    /// # Ok::<(), corral::pipeline::PipelineError>(())
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        if self.invalid.is_none() {
            self.invalid = check_name("name", &name).err();
        }
        self.name = Some(Arc::from(name));
        self
    }

    /// Reports an item running in a stage (or the sink of a spawned pipeline) for
    /// `threshold` or longer, once per item: `on_stuck` is called (inside the panic
    /// boundary), a `tracing` event is emitted (feature `tracing`) and the thread is
    /// marked `[STUCK]` in the dump. No timer thread: the run checks whenever one of
    /// its threads runs out of input, [`RunningPipeline::check_stuck`] checks on
    /// demand, and so does every [`leak::dump`](crate::leak::dump). An item's start
    /// is not time-stamped: it counts from the first check that sees it, on the
    /// pipeline's [`clock`](Pipeline::clock), so it is reported late rather than early.
    ///
    /// # Example
    ///
    /// ```
    /// use corral::clock::ManualClock;
    /// use std::time::Duration;
    ///
    /// let clock = ManualClock::new();
    /// let (release, hang) = crossbeam_channel::bounded::<()>(0);
    /// let running = corral::Pipeline::from_iter([1u32])
    ///     .stage("slow", 1, move |x| { let _ = hang.recv(); x })
    ///     .clock(clock.clone())
    ///     .watchdog(Duration::from_secs(30), |stuck| eprintln!("{stuck}"))
    ///     .spawn(|_| {})?;
    /// # while !corral::leak::dump().to_string().contains("running for") { std::thread::yield_now(); }
    /// let _ = running.check_stuck(); // first seen now
    /// clock.advance(Duration::from_secs(30));
    /// let stuck = running.check_stuck();
    /// assert!(stuck.iter().any(|s| s.thread == "corral-pipe-slow-0"));
    /// release.send(()).unwrap();
    /// running.join()?;
    /// # Ok::<(), corral::pipeline::PipelineError>(())
    /// ```
    pub fn watchdog(
        mut self,
        threshold: Duration,
        on_stuck: impl Fn(&Stuck) + Send + Sync + 'static,
    ) -> Self {
        self.watchdog = Some((threshold, Arc::new(on_stuck)));
        self
    }

    /// Capacity of every queue, in items (default 64). With batching, a queue holds
    /// `capacity / batch` batches.
    ///
    /// # Errors
    ///
    /// The terminal call returns [`PipelineError::Config`] for 0 or more than
    /// 16 777 216 (2^24, the worker pool's queue cap).
    ///
    /// # Example
    ///
    /// ```
    /// let (out, _) = corral::Pipeline::from_iter(0..100).capacity(4).collect()?;
    /// assert_eq!(out.len(), 100);
    /// # Ok::<(), corral::pipeline::PipelineError>(())
    /// ```
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// Capacity, in items, of the one queue after what was added last (the source or
    /// a stage), in place of [`capacity`](Pipeline::capacity): a bigger buffer in front
    /// of a slow or bursty stage, a smaller one where memory is tight. After the last
    /// stage it sizes the queue in front of the sink. Under [`Overflow::Block`] the
    /// first stage pulls the source directly, so a buffer set on the source alone has
    /// no queue to size.
    ///
    /// # Errors
    ///
    /// The terminal call returns [`PipelineError::Config`] naming `buffer` for 0, for
    /// less than the [`batch`](Pipeline::batch), or for more than 16 777 216 (2^24).
    ///
    /// # Example
    ///
    /// ```
    /// let (out, report) = corral::Pipeline::from_iter(0..1000u64)
    ///     .stage("parse", 2, |n| n * 2)
    ///     .buffer(256) // the queue between "parse" and "score" holds up to 256 items
    ///     .stage("score", 1, |n| n + 1)
    ///     .capacity(16) // every other queue
    ///     .ordered()
    ///     .collect()?;
    /// assert_eq!(out[999], 1999);
    /// assert_eq!(report.stages[1].items_out, 1000);
    /// # Ok::<(), corral::pipeline::PipelineError>(())
    /// ```
    pub fn buffer(mut self, items: usize) -> Self {
        if let Some(last) = self.buffers.last_mut() {
            *last = Some(items);
        }
        self
    }

    /// The overflow policy of the one queue after what was added last (the source or
    /// a stage), in place of [`overflow`](Pipeline::overflow): say, shed load in front
    /// of one best-effort stage while the rest of the run keeps backpressure. As with
    /// [`buffer`](Pipeline::buffer), a policy set on the source applies to the first
    /// stage's queue (for a pushed input: to the pushed items); under
    /// [`Overflow::Block`] an iterator source has no queue of its own.
    ///
    /// # Errors
    ///
    /// The terminal call returns [`PipelineError::Config`] naming `overflow` for
    /// [`Overflow::Reject`] and [`Overflow::CallerRuns`].
    ///
    /// # Example
    ///
    /// ```
    /// use corral::{Overflow, Pipeline};
    ///
    /// let report = Pipeline::from_iter(0..1000u64)
    ///     .stage("parse", 2, |n| n * 2)
    ///     .buffer(4)
    ///     .buffer_overflow(Overflow::DropNewest) // "score" may shed
    ///     .stage("score", 1, |n| n + 1)
    ///     .run(|_| {})?; // every other queue blocks (the default)
    /// let score = report.stage("score").unwrap();
    /// assert_eq!(score.items_in, 1000);
    /// assert_eq!(score.items_out + score.dropped, 1000);
    /// assert_eq!(report.stage("parse").unwrap().dropped, 0);
    /// # Ok::<(), corral::pipeline::PipelineError>(())
    /// ```
    pub fn buffer_overflow(mut self, overflow: Overflow) -> Self {
        if let Some(last) = self.overflows.last_mut() {
            *last = Some(overflow);
        }
        self
    }

    /// What a full queue does with a new item (default [`Overflow::Block`]).
    /// [`Overflow::DropNewest`] drops the item being sent, [`Overflow::DropOldest`]
    /// evicts the oldest queued one; either way the item is counted as `dropped` for
    /// the receiving stage and handed to [`on_drop`](Pipeline::on_drop) callbacks.
    /// With batching, whole batches are dropped.
    ///
    /// # Errors
    ///
    /// The terminal call returns [`PipelineError::Config`] for [`Overflow::Reject`]
    /// and [`Overflow::CallerRuns`], which only the worker pool supports.
    ///
    /// # Example
    ///
    /// ```
    /// use corral::{Overflow, Pipeline};
    ///
    /// let report = Pipeline::from_iter(0..1000)
    ///     .capacity(2)
    ///     .overflow(Overflow::DropNewest)
    ///     .run(|_| {})?;
    /// let sink = report.stage("sink").unwrap();
    /// assert_eq!(sink.items_out + sink.dropped, 1000);
    /// # Ok::<(), corral::pipeline::PipelineError>(())
    /// ```
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// Hands every item dropped from the queue after the current last stage (the
    /// queue that carries `T`) to `f`. Call it right after the stage whose output it
    /// concerns; the callback runs on the sending thread and must not block.
    ///
    /// After [`RunningPipeline::stop_now`], the items left in that queue (counted as
    /// not processed) go to `f` too, on the thread that drains the queue. A run
    /// stopped by a failure or a token only counts and drops them.
    ///
    /// A panic in `f` stops the run with [`PipelineError::Panicked`].
    ///
    /// # Example
    ///
    /// ```
    /// use corral::{Overflow, Pipeline};
    /// use std::sync::atomic::{AtomicU64, Ordering};
    ///
    /// let lost = AtomicU64::new(0);
    /// let report = Pipeline::from_iter(0..1000u64)
    ///     .stage("id", 1, |x| x)
    ///     .on_drop(|_x: u64| {
    ///         lost.fetch_add(1, Ordering::Relaxed);
    ///     })
    ///     .capacity(1)
    ///     .overflow(Overflow::DropOldest)
    ///     .run(|_| {})?;
    /// assert_eq!(report.stage("sink").unwrap().dropped, lost.load(Ordering::Relaxed));
    /// # Ok::<(), corral::pipeline::PipelineError>(())
    /// ```
    pub fn on_drop(mut self, f: impl Fn(T) + Send + Sync + 'env) -> Self {
        self.on_drop = Some(Arc::new(f));
        self
    }

    /// Moves items between threads in batches of up to `batch` (default 1) to cut the
    /// per-item hand-off cost. Capacities stay counted in items; a batch is only sent
    /// when full or when the source ends, so batching adds latency with a slow source.
    ///
    /// # Errors
    ///
    /// The terminal call returns [`PipelineError::Config`] for 0 or a batch larger
    /// than the capacity (so never more than 2^24).
    ///
    /// # Example
    ///
    /// ```
    /// let (out, _) = corral::Pipeline::from_iter(0..1000u32)
    ///     .stage("inc", 1, |x| x + 1)
    ///     .batch(32)
    ///     .ordered()
    ///     .collect()?;
    /// assert_eq!(out, (1..=1000).collect::<Vec<_>>());
    /// # Ok::<(), corral::pipeline::PipelineError>(())
    /// ```
    pub fn batch(mut self, batch: usize) -> Self {
        self.batch = batch;
        self
    }

    /// Delivers items to the sink in source order. The reorder window defaults to
    /// what the queues and workers can hold, so it never slows the run further.
    ///
    /// # Example
    ///
    /// ```
    /// let (out, _) = corral::Pipeline::from_iter(0..50)
    ///     .stage("work", 4, |x| x * 10)
    ///     .ordered()
    ///     .collect()?;
    /// assert!(out.windows(2).all(|w| w[0] < w[1]));
    /// # Ok::<(), corral::pipeline::PipelineError>(())
    /// ```
    pub fn ordered(mut self) -> Self {
        self.ordered = Some(None);
        self
    }

    /// Delivers items in source order, with the source never more than `window`
    /// items ahead of the sink: the sink's reorder buffer holds at most `window`
    /// items (rounded up to whole batches).
    ///
    /// # Errors
    ///
    /// The terminal call returns [`PipelineError::Config`] for 0 or more than
    /// 16 777 216 (2^24).
    ///
    /// # Example
    ///
    /// ```
    /// let (out, _) = corral::Pipeline::from_iter(0..20)
    ///     .stage("work", 3, |x| x + 1)
    ///     .ordered_window(4)
    ///     .collect()?;
    /// assert_eq!(out, (1..=20).collect::<Vec<_>>());
    /// # Ok::<(), corral::pipeline::PipelineError>(())
    /// ```
    pub fn ordered_window(mut self, window: usize) -> Self {
        self.ordered = Some(Some(window));
        self
    }

    /// Runs the pipeline with a fallible sink: the sink's first `Err` stops the run
    /// like a failing stage, as [`PipelineError::Failed`] with stage `"sink"`.
    ///
    /// # Errors
    ///
    /// See [`run`](Pipeline::run); also the sink's own error.
    ///
    /// # Example
    ///
    /// ```
    /// let err = corral::Pipeline::from_iter(0..10)
    ///     .try_for_each(|x| if x < 5 { Ok(()) } else { Err("full") })
    ///     .unwrap_err();
    /// assert_eq!(err.stage(), Some("sink"));
    /// ```
    #[track_caller]
    pub fn try_for_each<E>(
        self,
        mut sink: impl FnMut(T) -> Result<(), E>,
    ) -> Result<PipelineReport, PipelineError>
    where
        E: Into<Box<dyn Error + Send + Sync>>,
    {
        self.execute(CancelToken::new(), move |item| {
            sink(item).map_err(Into::into)
        })
    }

    /// Runs the pipeline and collects the output (in source order if
    /// [`ordered`](Pipeline::ordered)).
    ///
    /// # Errors
    ///
    /// See [`run`](Pipeline::run); the partial output is dropped on error.
    ///
    /// # Example
    ///
    /// ```
    /// let (out, report) = corral::Pipeline::from_iter(0..5).stage("neg", 1, |x: i32| -x).collect()?;
    /// assert_eq!(out, [0, -1, -2, -3, -4]); // one worker per stage keeps the order
    /// assert_eq!(report.delivered(), 5);
    /// # Ok::<(), corral::pipeline::PipelineError>(())
    /// ```
    #[track_caller]
    pub fn collect(self) -> Result<(Vec<T>, PipelineReport), PipelineError> {
        self.collect_with(CancelToken::new())
    }

    /// [`collect`](Pipeline::collect) under a bound: the run stops when `token` is
    /// cancelled.
    ///
    /// # Errors
    ///
    /// See [`run_cancellable`](Pipeline::run_cancellable).
    #[track_caller]
    pub fn collect_cancellable(
        self,
        token: &CancelToken,
    ) -> Result<(Vec<T>, PipelineReport), PipelineError> {
        self.collect_with(token.child())
    }

    /// [`collect`](Pipeline::collect) under a bound: the run stops at `deadline`.
    ///
    /// # Errors
    ///
    /// See [`run_deadline`](Pipeline::run_deadline).
    #[track_caller]
    pub fn collect_deadline(
        self,
        deadline: Instant,
    ) -> Result<(Vec<T>, PipelineReport), PipelineError> {
        self.collect_with(CancelToken::with_deadline(deadline))
    }

    /// [`collect`](Pipeline::collect) under a bound: the run stops after `timeout`.
    ///
    /// # Errors
    ///
    /// See [`run_timeout`](Pipeline::run_timeout).
    #[track_caller]
    pub fn collect_timeout(
        self,
        timeout: Duration,
    ) -> Result<(Vec<T>, PipelineReport), PipelineError> {
        self.collect_with(CancelToken::with_timeout(timeout))
    }

    #[track_caller]
    fn collect_with(self, token: CancelToken) -> Result<(Vec<T>, PipelineReport), PipelineError> {
        let mut out = Vec::new();
        let result = self.execute(token, |item| {
            out.push(item);
            Ok(())
        });
        match result {
            Ok(report) => Ok((out, report)),
            // The partial output is dropped here, item by item inside the boundary.
            Err(err) => Err(match run::drop_each(out) {
                Some(panic) => absorb(Err(err), "sink", panic).unwrap_err(),
                None => err,
            }),
        }
    }

    /// Runs the pipeline to the end of the source, handing every output item to
    /// `sink` on the calling thread, and returns the report. Every thread has joined
    /// when it returns, whatever the outcome.
    ///
    /// There is no `try_run`: a run is not a single step that could succeed at once.
    ///
    /// # Errors
    ///
    /// - [`PipelineError::Config`]: a builder value was rejected; nothing ran.
    /// - [`PipelineError::Failed`]: a `try_stage` (or `try_for_each` sink) returned
    ///   `Err`; the run was cancelled.
    /// - [`PipelineError::Panicked`]: user code (the source iterator, a stage, the
    ///   sink, an `on_drop` callback) panicked; the run was cancelled.
    /// - [`PipelineError::Spawn`]: the OS refused to start a thread.
    /// - [`PipelineError::Cancelled`]: only from the bounded forms.
    ///
    /// # Example
    ///
    /// ```
    /// let mut seen = Vec::new();
    /// let report = corral::Pipeline::from_iter(["a", "b"]).run(|s| seen.push(s))?;
    /// assert_eq!(report.delivered(), 2);
    /// # Ok::<(), corral::pipeline::PipelineError>(())
    /// ```
    #[track_caller]
    pub fn run(self, mut sink: impl FnMut(T)) -> Result<PipelineReport, PipelineError> {
        self.execute(CancelToken::new(), move |item| {
            sink(item);
            Ok(())
        })
    }

    /// [`run`](Pipeline::run), stopped when `token` is cancelled (or its deadline
    /// passes): the source stops being pulled, blocked sends wake up, and queued
    /// items are counted as not processed.
    ///
    /// # Errors
    ///
    /// As [`run`](Pipeline::run), and [`PipelineError::Cancelled`] if the token
    /// stopped the run before everything was processed.
    ///
    /// # Example
    ///
    /// ```
    /// use corral::{CancelToken, Pipeline, pipeline::PipelineError};
    ///
    /// let token = CancelToken::new();
    /// let result = Pipeline::from_iter(0..) // endless
    ///     .stage("id", 2, |x: u64| x)
    ///     .run_cancellable(|x| if x == 100 { token.cancel() }, &token);
    /// assert!(matches!(result, Err(PipelineError::Cancelled { .. })));
    /// ```
    #[track_caller]
    pub fn run_cancellable(
        self,
        mut sink: impl FnMut(T),
        token: &CancelToken,
    ) -> Result<PipelineReport, PipelineError> {
        self.execute(token.child(), move |item| {
            sink(item);
            Ok(())
        })
    }

    /// [`run`](Pipeline::run), stopped at `deadline`.
    ///
    /// # Errors
    ///
    /// As [`run_cancellable`](Pipeline::run_cancellable), with reason
    /// [`CancelReason::DeadlineExceeded`].
    #[track_caller]
    pub fn run_deadline(
        self,
        mut sink: impl FnMut(T),
        deadline: Instant,
    ) -> Result<PipelineReport, PipelineError> {
        self.execute(CancelToken::with_deadline(deadline), move |item| {
            sink(item);
            Ok(())
        })
    }

    /// [`run`](Pipeline::run), stopped after `timeout`.
    ///
    /// # Errors
    ///
    /// As [`run_deadline`](Pipeline::run_deadline).
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let err = corral::Pipeline::from_iter(std::iter::repeat(1u8)) // endless
    ///     .run_timeout(|_| {}, Duration::from_millis(20))
    ///     .unwrap_err();
    /// assert!(err.report().unwrap().delivered() > 0);
    /// ```
    #[track_caller]
    pub fn run_timeout(
        self,
        mut sink: impl FnMut(T),
        timeout: Duration,
    ) -> Result<PipelineReport, PipelineError> {
        self.execute(CancelToken::with_timeout(timeout), move |item| {
            sink(item);
            Ok(())
        })
    }

    /// The run's settings, and the capacity in items of the queue in front of each
    /// stage index (source first, the sink last; index 0 has no queue).
    ///
    /// Bounded memory: each queue holds at most its capacity in items (`capacity`, or
    /// the `buffer` set after the stage that feeds it), each worker (and the source
    /// thread, if any, and the sink) at most one batch, and in ordered mode the sink's
    /// reorder buffer at most the reorder window. With a batch of 1, no reordering and
    /// no `buffer`, the items alive inside a run never exceed
    /// `capacity × stages + stage workers + 1` with `Block` (no first queue, no source
    /// thread), and `capacity × (stages + 1) + stage workers + 2` with a drop policy;
    /// a `buffer` replaces one queue's `capacity` in that sum. The default reorder
    /// window is that sum's queue part plus one batch per holder, at most 2^24 items.
    /// Above the limits (4096 workers per stage and per run, 2^24 items per queue,
    /// batch and reorder window: the worker pool's caps) the terminal call returns a
    /// `ConfigError` before any thread starts.
    fn settings(&self) -> Result<(Settings, Vec<Queue>), ConfigError> {
        if let Some(invalid) = &self.invalid {
            return Err(invalid.clone());
        }
        if self.capacity == 0 {
            return Err(ConfigError::new(
                "capacity",
                self.capacity,
                "must be at least 1",
            ));
        }
        if self.capacity > MAX_CAPACITY {
            return Err(ConfigError::new(
                "capacity",
                self.capacity,
                "must be at most 16777216 (2^24) items",
            ));
        }
        // `stages` lists the source (1 "worker") first; each stage's count is checked.
        let workers = self.stages[1..]
            .iter()
            .fold(0usize, |sum, (_, w)| sum.saturating_add(*w));
        if workers > MAX_RUN_WORKERS {
            return Err(ConfigError::new(
                "workers",
                workers,
                "the stages of one run must not exceed 4096 workers together",
            ));
        }
        if self.batch == 0 {
            return Err(ConfigError::new("batch", self.batch, "must be at least 1"));
        }
        if self.pushed && self.batch > 1 {
            return Err(ConfigError::new(
                "batch",
                self.batch,
                "a pushed input sends items one at a time: use batch_stage",
            ));
        }
        if self.batched && self.ordered.is_some() {
            return Err(ConfigError::new(
                "ordered",
                "on",
                "a batched stage's output has no source order to restore",
            ));
        }
        if self.pushed && self.ordered.is_some() {
            return Err(ConfigError::new(
                "ordered",
                "on",
                "a pushed input has no source order to restore",
            ));
        }
        if self.batch > self.capacity {
            return Err(ConfigError::new(
                "batch",
                self.batch,
                "must not exceed the capacity, which is counted in items",
            ));
        }
        for items in self.buffers.iter().flatten() {
            if *items == 0 || *items < self.batch {
                return Err(ConfigError::new(
                    "buffer",
                    *items,
                    "must be at least 1 and at least the batch",
                ));
            }
            if *items > MAX_CAPACITY {
                return Err(ConfigError::new(
                    "buffer",
                    *items,
                    "must be at most 16777216 (2^24) items",
                ));
            }
        }
        let overflows = self.overflows.iter().flatten().copied();
        for overflow in std::iter::once(self.overflow).chain(overflows) {
            if matches!(overflow, Overflow::Reject | Overflow::CallerRuns) {
                return Err(ConfigError::new(
                    "overflow",
                    overflow,
                    "a pipeline stage supports block, drop-newest and drop-oldest only",
                ));
            }
        }
        let queues: Vec<Queue> = std::iter::once(Queue {
            capacity: self.capacity,
            overflow: self.overflow,
        })
        .chain(
            self.buffers
                .iter()
                .zip(&self.overflows)
                .map(|(b, o)| Queue {
                    capacity: b.unwrap_or(self.capacity),
                    overflow: o.unwrap_or(self.overflow),
                }),
        )
        .collect();
        let window = match self.ordered {
            None => None,
            Some(Some(0)) => {
                return Err(ConfigError::new("ordered_window", 0, "must be at least 1"))
            }
            Some(Some(items)) if items > MAX_CAPACITY => {
                return Err(ConfigError::new(
                    "ordered_window",
                    items,
                    "must be at most 16777216 (2^24) items",
                ))
            }
            Some(Some(items)) => Some(items),
            Some(None) => {
                // Holders: the stage workers (bounded above), the source thread unless
                // the first stage pulls the source itself (`Block`), and the sink.
                // With `Block` there is also one queue fewer. Capped like an explicit
                // window: a smaller window only paces the source, it cannot block.
                let fused = usize::from(queues[1].overflow == Overflow::Block);
                let holders = workers + 2 - fused;
                let queued = queues[1 + fused..]
                    .iter()
                    .fold(0usize, |sum, q| sum.saturating_add(q.capacity));
                let items = queued.saturating_add(holders.saturating_mul(self.batch));
                Some(items.min(MAX_CAPACITY))
            }
        };
        let settings = Settings {
            batch: self.batch,
            clock: Arc::clone(&self.clock),
            name: self.name.clone(),
            owner: None,
            watchdog: None,
            sink_slot: None,
            window: window.map(|items| items.div_ceil(self.batch) as u64),
            #[cfg(test)]
            fail_spawn_at: self.fail_spawn_at,
        };
        Ok((settings, queues))
    }

    /// Runs the pipeline into `sink`, which it owns: every user value (the source,
    /// the closures, the items, the sink itself) is dropped inside the panic boundary,
    /// and a panicking `Drop` becomes [`PipelineError::Panicked`].
    #[track_caller]
    fn execute<S>(self, token: CancelToken, sink: S) -> Result<PipelineReport, PipelineError>
    where
        S: FnMut(T) -> Result<(), BoxError>,
    {
        let owner = self.owner();
        self.execute_started(token, sink, &mut |_| {}, owner, None)
    }

    /// The run's owner in the thread dump, made at the caller's line.
    #[track_caller]
    fn owner(&self) -> Arc<Owner> {
        Owner::new("Pipeline", self.name.clone())
    }

    /// As `execute`, handing the run's context to `started` once every thread of
    /// the run has started.
    fn execute_started<S>(
        self,
        token: CancelToken,
        mut sink: S,
        started: &mut dyn FnMut(&Arc<Ctx<'env>>),
        owner: Arc<Owner>,
        sink_slot: Option<Arc<Slot>>,
    ) -> Result<PipelineReport, PipelineError>
    where
        S: FnMut(T) -> Result<(), BoxError>,
    {
        let (settings, queues) = match self.settings() {
            Ok((mut settings, queues)) => {
                settings.watchdog = self.watchdog.as_ref().map(|(threshold, on_stuck)| {
                    let on_stuck = Arc::clone(on_stuck);
                    Arc::new(
                        Watchdog::builder(*threshold)
                            .shared_clock(Arc::clone(&self.clock))
                            .on_stuck(move |stuck| on_stuck(stuck))
                            .build_for(&owner),
                    )
                });
                settings.owner = Some(owner);
                settings.sink_slot = sink_slot;
                (settings, queues)
            }
            Err(e) => {
                // Nothing ran; the configuration error is the report. The user values
                // are dropped inside the boundary, and a panic there is let go.
                drop_quietly(self);
                drop_quietly(sink);
                return Err(PipelineError::Config(e));
            }
        };
        let result = self.execute_with(token, settings, queues, &mut sink, started);
        match drop_caught(sink) {
            Some(panic) => absorb(result, "sink", panic),
            None => result,
        }
    }

    fn execute_with(
        self,
        token: CancelToken,
        settings: Settings,
        queues: Vec<Queue>,
        sink: &mut dyn FnMut(T) -> Result<(), BoxError>,
        on_start: &mut dyn FnMut(&Arc<Ctx<'env>>),
    ) -> Result<PipelineReport, PipelineError> {
        let started = Instant::now();
        let (head, on_drop) = (self.head, self.on_drop);
        let ran = run::run(
            head,
            on_drop,
            token,
            settings,
            &self.stages,
            queues,
            sink,
            on_start,
        );
        let (stages, failure, source_done, reason) = ran;
        let report = PipelineReport {
            name: self.name.as_deref().map(str::to_owned),
            stages,
            elapsed: started.elapsed(),
        };
        event::emit!(
            info,
            "Pipeline",
            self.name.as_deref(),
            "pipeline run ended",
            delivered = report.delivered(),
            not_processed = report.not_processed(),
            dropped = report.stages.iter().map(|s| s.dropped).sum::<u64>(),
            failed = report.stages.iter().map(|s| s.failed).sum::<u64>(),
            elapsed_s = report.elapsed.as_secs_f64(),
            outcome = match &failure {
                None if source_done && report.not_processed() == 0 => "completed",
                None => "cancelled",
                Some((_, Failure::Error(_))) => "failed",
                Some((_, Failure::Panic(_))) => "panicked",
                Some((_, Failure::Spawn(_))) => "spawn failed",
            },
        );
        let stage = |index: usize| {
            report
                .stages
                .get(index)
                .map_or_else(String::new, |s| s.name.clone())
        };
        match failure {
            Some((index, Failure::Error(error))) => Err(PipelineError::Failed {
                stage: stage(index),
                error,
                report,
            }),
            Some((index, Failure::Panic(panic))) => Err(PipelineError::Panicked {
                stage: stage(index),
                panic,
                report,
            }),
            Some((index, Failure::Spawn(error))) => Err(PipelineError::Spawn {
                stage: stage(index),
                error,
                report,
            }),
            None if source_done && report.not_processed() == 0 => Ok(report),
            None => Err(PipelineError::Cancelled {
                reason: reason.unwrap_or(CancelReason::Cancelled),
                report,
            }),
        }
    }
}

/// A panic raised after the run (dropping the sink or the collected output) joins
/// the outcome: it replaces success or cancellation, and is let go if the run already
/// failed (the first failure is the one reported).
fn absorb(
    result: Result<PipelineReport, PipelineError>,
    stage: &str,
    panic: Panic,
) -> Result<PipelineReport, PipelineError> {
    match result {
        Ok(report) | Err(PipelineError::Cancelled { report, .. }) => Err(PipelineError::Panicked {
            stage: stage.to_owned(),
            panic,
            report,
        }),
        other => {
            drop_quietly(panic);
            other
        }
    }
}

fn check_stage(stages: &[(String, usize)], name: &str, workers: usize) -> Result<(), ConfigError> {
    if workers == 0 {
        return Err(ConfigError::new("workers", workers, "must be at least 1"));
    }
    if workers > MAX_STAGE_WORKERS {
        return Err(ConfigError::new("workers", workers, "must be at most 4096"));
    }
    // The name becomes part of thread names.
    check_name("name", name)?;
    if name.is_empty() {
        return Err(ConfigError::new("name", name, "must be non-empty"));
    }
    if name == "source" || name == "sink" || stages.iter().any(|(n, _)| n == name) {
        return Err(ConfigError::new(
            "name",
            name,
            "must be unique and not \"source\" or \"sink\"",
        ));
    }
    Ok(())
}

impl<T> fmt::Debug for Pipeline<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("name", &self.name)
            .field("stages", &self.stages)
            .field("capacity", &self.capacity)
            .field("buffers", &self.buffers)
            .field("overflow", &self.overflow)
            .field("overflows", &self.overflows)
            .field("batch", &self.batch)
            .field("ordered", &self.ordered.is_some())
            .finish_non_exhaustive()
    }
}

/// Why a pipeline run did not complete. Every variant but `Config` carries the
/// [`PipelineReport`] of the run, which had stopped and joined all its threads.
///
/// # Example
///
/// ```
/// use corral::{Pipeline, pipeline::PipelineError};
///
/// let err = Pipeline::from_iter(0..10)
///     .stage("boom", 1, |x: i32| if x == 3 { panic!("three") } else { x })
///     .run(|_| {})
///     .unwrap_err();
/// match &err {
///     PipelineError::Panicked { stage, panic, .. } => {
///         assert_eq!(stage, "boom");
///         assert_eq!(panic.message(), Some("three"));
///     }
///     other => panic!("unexpected {other}"),
/// }
/// let report = err.report().unwrap();
/// assert!(report.stages.iter().all(|s| s.balanced()));
/// ```
#[non_exhaustive]
pub enum PipelineError {
    /// A builder value was rejected; nothing ran.
    Config(ConfigError),
    /// A fallible stage (or sink) returned `Err`; the run was cancelled.
    Failed {
        /// The stage that failed.
        stage: String,
        /// Its error (downcast it to the stage's error type).
        error: Box<dyn Error + Send + Sync>,
        /// What the run did until it stopped.
        report: PipelineReport,
    },
    /// User code panicked in a stage (or the source, the sink, an `on_drop`
    /// callback); the run was cancelled.
    Panicked {
        /// The stage that panicked.
        stage: String,
        /// The panic, with its original payload.
        panic: Panic,
        /// What the run did until it stopped.
        report: PipelineReport,
    },
    /// The run's token was cancelled or its deadline passed before it finished.
    Cancelled {
        /// Why the token stopped.
        reason: CancelReason,
        /// What the run did until it stopped.
        report: PipelineReport,
    },
    /// The OS refused to start a thread for a stage; the run was cancelled.
    Spawn {
        /// The stage whose thread did not start.
        stage: String,
        /// The thread and the OS error.
        error: SpawnError,
        /// What the run did until it stopped.
        report: PipelineReport,
    },
}

impl fmt::Debug for PipelineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PipelineError::Config(e) => f.debug_tuple("Config").field(e).finish(),
            PipelineError::Failed {
                stage,
                error,
                report,
            } => {
                // The stage's error is user code: formatted inside the panic boundary.
                let error = Panic::catch_any(|| format!("{error:?}"))
                    .unwrap_or_else(|_| "<its Debug panicked>".to_owned());
                f.debug_struct("Failed")
                    .field("stage", stage)
                    .field("error", &format_args!("{error}"))
                    .field("report", report)
                    .finish()
            }
            PipelineError::Panicked {
                stage,
                panic,
                report,
            } => f
                .debug_struct("Panicked")
                .field("stage", stage)
                .field("panic", panic)
                .field("report", report)
                .finish(),
            PipelineError::Cancelled { reason, report } => f
                .debug_struct("Cancelled")
                .field("reason", reason)
                .field("report", report)
                .finish(),
            PipelineError::Spawn {
                stage,
                error,
                report,
            } => f
                .debug_struct("Spawn")
                .field("stage", stage)
                .field("error", error)
                .field("report", report)
                .finish(),
        }
    }
}

impl PipelineError {
    /// The stage that failed, panicked or could not start, if one did.
    pub fn stage(&self) -> Option<&str> {
        match self {
            PipelineError::Failed { stage, .. }
            | PipelineError::Panicked { stage, .. }
            | PipelineError::Spawn { stage, .. } => Some(stage),
            _ => None,
        }
    }

    /// The report of the run (`None` for a configuration error: nothing ran).
    pub fn report(&self) -> Option<&PipelineReport> {
        match self {
            PipelineError::Config(_) => None,
            PipelineError::Failed { report, .. }
            | PipelineError::Panicked { report, .. }
            | PipelineError::Cancelled { report, .. }
            | PipelineError::Spawn { report, .. } => Some(report),
        }
    }

    /// Whether the run was stopped by its token or deadline.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, PipelineError::Cancelled { .. })
    }
}

/// Describes this error only: the [`ConfigError`], the stage's error, the [`Panic`] or
/// the OS error is its [`source`](Error::source). It never formats a user value, so it
/// cannot panic on a stage error whose `Display` does.
impl fmt::Display for PipelineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = self.report().and_then(|r| r.name.as_deref()) {
            write!(f, "pipeline {name}: ")?;
        }
        match self {
            PipelineError::Config(_) => f.write_str("pipeline not started"),
            PipelineError::Failed { stage, .. } => write!(f, "stage {stage} failed"),
            PipelineError::Panicked { stage, .. } => write!(f, "stage {stage} panicked"),
            PipelineError::Cancelled { reason, .. } => write!(f, "pipeline stopped: {reason}"),
            PipelineError::Spawn { stage, .. } => write!(f, "stage {stage} failed to start"),
        }
    }
}

impl Error for PipelineError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            PipelineError::Config(e) => Some(e),
            PipelineError::Failed { error, .. } => Some(&**error),
            PipelineError::Panicked { panic, .. } => Some(panic),
            PipelineError::Spawn { error, .. } => Some(error),
            PipelineError::Cancelled { .. } => None,
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::leak::LeakCheck;

    #[test]
    fn a_failed_spawn_mid_start_stops_and_joins_the_threads_already_started() {
        let _check = LeakCheck::new();
        let cases = [
            (Overflow::Block, (1, 0), "a"),
            (Overflow::Block, (1, 2), "a"),
            (Overflow::Block, (2, 0), "b"),
            (Overflow::Block, (2, 3), "b"),
            (Overflow::DropNewest, (0, 0), "source"),
            (Overflow::DropNewest, (1, 1), "a"),
            (Overflow::DropOldest, (2, 2), "b"),
        ];
        for (policy, at, name) in cases {
            // An endless source: only the failure can end the run.
            let mut pipeline = Pipeline::from_iter(0u64..)
                .stage("a", 3, |x| x)
                .stage("b", 4, |x| x)
                .capacity(2)
                .overflow(policy);
            pipeline.fail_spawn_at = Some(at);
            let err = pipeline.run(|_| {}).unwrap_err();
            let PipelineError::Spawn {
                stage,
                error,
                report,
            } = &err
            else {
                panic!("{policy:?} {at:?}: {err:?}")
            };
            assert_eq!(stage, name);
            assert_eq!(error.io_error().to_string(), "injected spawn failure");
            assert!(error.thread_name().starts_with("corral-pipe-"), "{error}");
            for s in &report.stages {
                assert!(s.balanced(), "{policy:?} {at:?}: {s:?}");
            }
        }
        // LeakCheck (on drop) proves every started thread was joined.
    }

    #[test]
    fn the_default_reorder_window_is_capped_like_an_explicit_one() {
        let pipeline = Pipeline::from_iter(0..1u8)
            .stage("a", 4000, |x| x)
            .buffer(MAX_CAPACITY)
            .stage("b", 96, |x| x)
            .buffer(MAX_CAPACITY)
            .capacity(MAX_CAPACITY)
            .overflow(Overflow::DropOldest)
            .ordered();
        let (settings, _) = pipeline.settings().unwrap();
        assert_eq!(settings.window, Some(MAX_CAPACITY as u64));
        // Just past the caps: a named error, before any arithmetic can overflow.
        let err = Pipeline::from_iter(0..1u8)
            .stage("a", 4000, |x| x)
            .stage("b", 97, |x| x)
            .ordered()
            .settings()
            .unwrap_err();
        assert_eq!((err.field(), err.value()), ("workers", "4097"));
    }
}
