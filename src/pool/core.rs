//! The pool engine: the queue, the worker loop, the overflow policies, the counters
//! and the shutdown paths, with the [`PoolStats`] and [`ShutdownReport`] they produce.
//!
//! Implementation notes. The queue is one `crossbeam_channel::bounded(capacity)` of
//! [`Job`]s; workers block in `recv` and exit when the last sender is gone and the
//! queue is empty, so graceful shutdown is "drop the sender, join". The engine owns
//! the only sender, behind `&mut` on the shutdown paths, so no lock guards it.
//! Overflow policies use `crate::queue` (`try_send`, `send_until`, `send_evicting`).
//! Counters are split so the hot path touches no shared cache line: submit-side
//! counters are written by submitters, each worker writes its own padded slot, and
//! `stats()` sums them (relaxed: a snapshot, not a barrier). A cancelled pool token
//! makes workers drop (not run) every job they receive, which resolves its handle to
//! `Cancelled` and counts it; they still drain, so a blocked submitter always
//! progresses. `alive` (under a mutex with a condvar, `exits.rs`) lets
//! `shutdown_timeout` wait for workers with a deadline, which `JoinHandle` cannot;
//! loom models that wait (tests/loom_pool.rs).

use std::cell::Cell;
use std::panic::Location;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use crate::cancel::{CancelToken, OnCancel};
use crate::observe::event::{emit, Counter};
#[cfg(feature = "metrics")]
use crate::observe::event::{Gauge, Histogram};
use crate::observe::{Owner, Slot, Stuck, Watchdog};
use crate::overflow::Overflow;
use crate::panic::{drop_quietly, Panic};
use crate::pool::exits;
use crate::pool::idle::Idle;
use crate::pool::task::{DroppedTask, Job, Outcome, Runnable, Tally};
use crate::queue::{offer, try_send, Offered, Refused};
use crate::sync::{time, Arc, AtomicBool, AtomicU64, Condvar, Mutex, Ordering};
use crate::wait::{Interrupted, Until};

/// A snapshot of a pool's counters and gauges (relaxed reads: cheap to poll, not a
/// consistent cut while tasks are moving).
///
/// Every accepted task ends exactly one way, so once the pool is shut down
/// `submitted == completed + panicked + cancelled + dropped`. Refused tasks went back
/// to their submitter and are counted in `rejected` only. `map` counts one task per
/// chunk it queues; chunks it runs on the calling thread without queueing them (cheap
/// ones, or ones that found the queue full) are not counted.
///
/// # Example
///
/// ```
/// let pool = corral::WorkerPool::builder().workers(2).build()?;
/// pool.submit(|| ()).unwrap().join().unwrap();
/// let stats = pool.stats();
/// assert_eq!((stats.workers, stats.submitted, stats.completed), (2, 1, 1));
/// # Ok::<(), corral::StartError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PoolStats {
    /// Worker threads.
    pub workers: usize,
    /// Workers running a task right now.
    pub busy: usize,
    /// Tasks waiting in the queue.
    pub queued: usize,
    /// The queue's capacity.
    pub capacity: usize,
    /// Tasks accepted (including those run by the caller or dropped by the policy).
    /// A queued task is counted by the worker that takes it, so the submit path stays
    /// free of shared counters: a snapshot may miss a task on its way from the queue to
    /// a worker (one per worker at most), never counts one twice, and never reports
    /// less than an earlier snapshot. Exact whenever nothing is in transit, and so
    /// after a shutdown.
    pub submitted: u64,
    /// Tasks that ran to completion.
    pub completed: u64,
    /// Tasks that panicked (the worker survived).
    pub panicked: u64,
    /// Submissions refused and handed back (`Full`, `Closed`, `Timeout`, `Cancelled`).
    pub rejected: u64,
    /// Tasks displaced by `DropOldest` / `DropNewest` (to `on_drop`, or discarded).
    pub dropped: u64,
    /// Tasks the submitting thread ran itself under `CallerRuns` (also counted in
    /// `completed` or `panicked`).
    pub caller_ran: u64,
    /// Accepted tasks that never ran (shutdown_now, cancelled pool token, cancelled
    /// through their handle).
    pub cancelled: u64,
}

/// What a shutdown found: how the pool's tasks ended.
///
/// A shutdown made inside one of the pool's own tasks reports every task but that
/// one, which is still running when the report is made.
///
/// # Example
///
/// ```
/// let pool = corral::WorkerPool::builder().workers(2).build()?;
/// for i in 0..10 {
///     pool.execute(move || assert!(i < 10)).unwrap();
/// }
/// let report = pool.shutdown(); // runs everything queued, joins every worker
/// assert_eq!(report.completed, 10);
/// assert_eq!(report.never_ran, 0);
/// # Ok::<(), corral::StartError>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Tasks that ran to completion.
    pub completed: u64,
    /// Tasks that panicked.
    pub panicked: u64,
    /// Accepted tasks that never ran (also those cancelled through their handle);
    /// their handles resolved to
    /// [`TaskError::Cancelled`](crate::pool::task::TaskError::Cancelled).
    pub never_ran: u64,
    /// Tasks displaced by the overflow policy.
    pub dropped: u64,
    /// Submissions refused and handed back.
    pub rejected: u64,
    /// Tasks run by their submitter under `CallerRuns`.
    pub caller_ran: u64,
    /// The first panic that had no handle to go to: a fire-and-forget task's
    /// ([`execute`](crate::pool::WorkerPool::execute)), the `on_drop` callback's, that of a
    /// displaced or never-run task's captures when dropped, or that of a result
    /// whose handle was dropped unjoined. Panics of tasks with handles went to the
    /// handles.
    pub first_panic: Option<Panic>,
}

pub(crate) type OnDropFn = dyn Fn(DroppedTask<'_>) + Send + Sync;

#[derive(Default)]
#[repr(align(128))]
struct WorkerSlot {
    busy: AtomicBool,
    /// Jobs this worker took from the queue, whatever became of them.
    received: AtomicU64,
    completed: AtomicU64,
    panicked: AtomicU64,
    /// Jobs of each `wait_idle` epoch this worker ended (ran or dropped).
    finished: [AtomicU64; 2],
}

#[derive(Default)]
#[repr(align(128))]
struct Front {
    /// Accepted tasks that never reach a worker: shed by `DropNewest`, run by the
    /// caller, evicted by `DropOldest` or drained from the queue unrun. A queued task
    /// is counted by the worker that takes it, so the submit path does no atomic
    /// read-modify-write of its own.
    unqueued: AtomicU64,
    rejected: AtomicU64,
    dropped: AtomicU64,
    caller_ran: AtomicU64,
    /// The largest `submitted` a snapshot has reported, so snapshots never go back.
    submitted_seen: AtomicU64,
    caller_completed: AtomicU64,
    caller_panicked: AtomicU64,
}

pub(crate) struct State {
    pub(crate) token: CancelToken,
    /// Set by `close`, by every shutdown, and (through an `on_cancel` callback) when
    /// the pool token is cancelled: one load decides whether a submit is accepted.
    closed: Arc<AtomicBool>,
    capacity: usize,
    slots: Box<[WorkerSlot]>,
    front: Front,
    cancelled: AtomicU64,
    idle: Idle,
    alive: Mutex<usize>,
    exited: Condvar,
    first_panic: Mutex<Option<Panic>>,
    pub(crate) seen: Seen,
}

/// How the pool is seen from outside: its owner record (kind, name, the line that
/// built it), its watchdog, and its metric handles (no-ops without the `metrics`
/// feature).
pub(crate) struct Seen {
    owner: std::sync::Arc<Owner>,
    kind: &'static str,
    /// The queue's name in the dump: the pool's name, or its kind.
    queue: std::sync::Arc<str>,
    watchdog: Option<Watchdog>,
    #[cfg(feature = "metrics")]
    queued: Gauge,
    #[cfg(feature = "metrics")]
    busy: Gauge,
    #[cfg(feature = "metrics")]
    busy_now: std::sync::atomic::AtomicUsize,
    completed: Counter,
    panicked: Counter,
    dropped: Counter,
    #[cfg(feature = "metrics")]
    queue_time: Histogram,
    #[cfg(feature = "metrics")]
    run_time: Histogram,
}

impl Seen {
    pub(crate) fn new(
        kind: &'static str,
        owner: std::sync::Arc<Owner>,
        watchdog: Option<Watchdog>,
    ) -> Self {
        let name = owner.name().map(|n| &**n);
        Seen {
            kind,
            queue: owner
                .name()
                .cloned()
                .unwrap_or_else(|| std::sync::Arc::from(kind)),
            #[cfg(feature = "metrics")]
            queued: Gauge::new("corral_pool_queued", kind, name),
            #[cfg(feature = "metrics")]
            busy: Gauge::new("corral_pool_busy", kind, name),
            #[cfg(feature = "metrics")]
            busy_now: std::sync::atomic::AtomicUsize::new(0),
            completed: Counter::new("corral_pool_completed_total", kind, name),
            panicked: Counter::new("corral_pool_panicked_total", kind, name),
            dropped: Counter::new("corral_pool_dropped_total", kind, name),
            #[cfg(feature = "metrics")]
            queue_time: Histogram::new("corral_pool_queue_seconds", kind, name),
            #[cfg(feature = "metrics")]
            run_time: Histogram::new("corral_pool_run_seconds", kind, name),
            owner,
            watchdog,
        }
    }

    pub(crate) fn name(&self) -> Option<&str> {
        self.owner.name().map(|n| &**n)
    }

    /// Runs the watchdog, if the pool has one: the tasks newly found stuck.
    pub(crate) fn check_stuck(&self) -> Vec<Stuck> {
        self.watchdog
            .as_ref()
            .map_or_else(Vec::new, Watchdog::check)
    }

    /// A worker takes a job: its time in the queue, one more busy worker.
    #[cfg(feature = "metrics")]
    fn started(&self, job: &Job<'_>) -> Instant {
        let now = Instant::now();
        self.queue_time
            .record(now.saturating_duration_since(job.made_at()));
        let busy = self.busy_now.fetch_add(1, Ordering::Relaxed) + 1;
        self.busy.set(busy as f64);
        now
    }

    /// The job that `started` at `started` has returned.
    #[cfg(feature = "metrics")]
    fn ended(&self, started: Instant) {
        self.run_time.record(started.elapsed());
        let busy = self.busy_now.fetch_sub(1, Ordering::Relaxed) - 1;
        self.busy.set(busy as f64);
    }

    /// The queue's length now (metrics only).
    #[inline(always)]
    #[allow(unused_variables)]
    fn queued<T>(&self, rx: &Receiver<T>) {
        #[cfg(feature = "metrics")]
        self.queued.set(rx.len() as f64);
    }

    /// What the dump calls the pool's queue: its name, or its kind.
    fn queue_name(&self) -> &std::sync::Arc<str> {
        &self.queue
    }

    /// The overflow policy displaced a task (debug).
    #[cold]
    fn dropped(&self, job: &Job<'_>) {
        self.dropped.add(1);
        emit!(
            debug,
            self.kind,
            self.name(),
            "pool dropped a task by its overflow policy",
            site = job.site().to_string().as_str(),
        );
    }

    /// A task panicked on a worker (warn).
    #[cold]
    fn panicked(&self, site: &'static Location<'static>) {
        self.panicked.add(1);
        emit!(
            warn,
            self.kind,
            self.name(),
            "pool task panicked",
            site = site.to_string().as_str(),
        );
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Counts an accepted task that will never reach a worker. Release, as a worker's
/// count: a snapshot that sees it also sees the task gone from the queue.
fn unqueued(front: &Front) {
    front.unqueued.fetch_add(1, Ordering::Release);
}

/// How deep tasks may nest when run on the submitting thread (under
/// [`Overflow::CallerRuns`], or a blocking submit from one of the pool's own workers):
/// a task that submits a task that submits ... to a full queue would otherwise grow
/// the stack with every level. Deeper submits are refused with `Full`.
pub(crate) const MAX_INLINE_DEPTH: u32 = 64;

thread_local! {
    /// The pool this thread is a worker of (its `State`'s address, 0 for none) and
    /// the worker's index, written once when the worker starts. A shutdown or a
    /// blocking submit made on one of the pool's own workers (from inside a task) must
    /// not wait for that worker, and only those cold paths read it.
    static WORKER_OF: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
    /// The mark of a submit waiting for room on this thread, from
    /// [`Core::may_wait`] until the push returns.
    static SUBMIT_BLOCKED: std::cell::RefCell<Option<crate::observe::BlockedGuard>> =
        const { std::cell::RefCell::new(None) };
    /// Tasks run inline on this thread, nested, right now.
    static INLINE_DEPTH: Cell<u32> = const { Cell::new(0) };
    /// The pool (its `State`'s address) whose task, or `on_drop` callback, this thread
    /// runs outside the workers right now (0 for none): `wait_idle` there would wait
    /// for the task it is called from.
    static INLINE_OF: Cell<usize> = const { Cell::new(0) };
}

impl State {
    fn keep_panic(&self, panic: Panic) {
        let mut first = self.first_panic.lock();
        if first.is_none() {
            *first = Some(panic);
        } else {
            drop(first);
            drop_quietly(panic);
        }
    }

    /// Records what a run left over: a panic no handle took, or a task its handle
    /// cancelled before it started (dropped unrun by the run).
    fn count(&self, outcome: Outcome) {
        match outcome {
            Outcome::Done | Outcome::Panicked(None) => {}
            Outcome::Panicked(Some(panic)) => self.keep_panic(panic),
            Outcome::Cancelled(panic) => {
                bump(&self.cancelled);
                if let Some(panic) = panic {
                    self.keep_panic(panic);
                }
            }
        }
    }

    /// Drops a job that will never run (its handle resolves to `Cancelled`).
    fn abandon(&self, job: Job<'_>) {
        // A capture's destructor may panic; that must not cost a worker. Its panic
        // has no handle to go to: it is kept for the report.
        if let Err(panic) = Panic::catch_any(move || drop(job)) {
            self.keep_panic(panic);
        }
        bump(&self.cancelled);
    }

    /// Tasks of `epoch` the workers ended.
    fn finished(&self, epoch: usize) -> u64 {
        self.slots
            .iter()
            .map(|s| s.finished[epoch].load(Ordering::Acquire))
            .sum()
    }

    fn busy(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.busy.load(Ordering::Relaxed))
            .count()
    }
}

/// Ends the mark [`Core::may_wait`] left, if any (only the paths that may have
/// waited call this).
#[cold]
fn unblocked() {
    drop(SUBMIT_BLOCKED.with(|b| b.borrow_mut().take()));
}

/// Decrements `alive` when a worker ends (or when its closure is dropped unstarted).
pub(crate) struct AliveGuard(Arc<State>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        exits::exit(&self.0.alive, &self.0.exited);
    }
}

/// The worker loop: run jobs until the queue is closed and empty. The thread's dump
/// slot says which task it runs (one store per task); only when the queue is empty
/// does it read the clock to say it is idle, and run the watchdog, before blocking.
pub(crate) fn work(rx: Receiver<Job<'_>>, guard: AliveGuard, index: usize) {
    let state = &*guard.0;
    WORKER_OF.with(|w| w.set((Arc::as_ptr(&guard.0) as usize, index)));
    let me = crate::observe::current();
    let me = me.as_deref();
    loop {
        let job = match rx.try_recv() {
            Ok(job) => job,
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) => {
                if let Some(me) = me {
                    me.idle();
                }
                // On the worker, outside any task: a panicking callback is caught
                // by the watchdog.
                drop(state.seen.check_stuck());
                match rx.recv() {
                    Ok(job) => job,
                    Err(_) => break,
                }
            }
        };
        state.seen.queued(&rx);
        take_job(state, index, job, me);
    }
    if let Some(me) = me {
        me.stopping();
    }
    WORKER_OF.with(|w| w.set((0, 0)));
    drop(guard);
}

/// Runs (or, once the pool token is cancelled, abandons) a job worker `index` took
/// from the queue, counting it in the worker's own slot.
#[inline(always)]
fn take_job(state: &State, index: usize, job: Job<'_>, me: Option<&Slot>) {
    let slot = &state.slots[index];
    let token = &state.token;
    let tally = Tally {
        completed: Some(&slot.completed),
        panicked: Some(&slot.panicked),
        exclusive: true,
    };
    // Only this worker writes its slot: a load and a store, no locked operation.
    let received = slot.received.load(Ordering::Relaxed);
    // Release: a snapshot that sees the count also sees the task gone from the queue.
    slot.received.store(received + 1, Ordering::Release);
    let epoch = job.epoch();
    if token.is_cancelled() {
        state.abandon(job);
    } else {
        let site = job.site();
        if let Some(me) = me {
            me.running(site);
        }
        #[cfg(feature = "metrics")]
        let started = state.seen.started(&job);
        slot.busy.store(true, Ordering::Relaxed);
        let outcome = job.run(token, tally);
        slot.busy.store(false, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        state.seen.ended(started);
        match outcome {
            Outcome::Done => state.seen.completed.add(1),
            Outcome::Panicked(_) => state.seen.panicked(site),
            Outcome::Cancelled(_) => {}
        }
        state.count(outcome);
    }
    if let Some(finished) = slot.finished.get(epoch) {
        // Release: `wait_idle` that sees the count also sees the task's entry.
        finished.store(finished.load(Ordering::Relaxed) + 1, Ordering::Release);
        state.idle.wake();
    }
}

pub(crate) struct Core<'a> {
    tx: Option<Sender<Job<'a>>>,
    rx: Receiver<Job<'a>>,
    pub(crate) state: Arc<State>,
    overflow: Overflow,
    on_drop: Option<std::sync::Arc<OnDropFn>>,
    _closed_on_cancel: OnCancel,
}

impl<'a> Core<'a> {
    pub(crate) fn new(
        workers: usize,
        capacity: usize,
        overflow: Overflow,
        on_drop: Option<std::sync::Arc<OnDropFn>>,
        seen: Seen,
    ) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let token = CancelToken::new();
        let closed = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&closed);
        let closed_on_cancel = token.on_cancel(move || flag.store(true, Ordering::Release));
        let state = Arc::new(State {
            token,
            closed,
            capacity,
            slots: (0..workers).map(|_| WorkerSlot::default()).collect(),
            front: Front::default(),
            cancelled: AtomicU64::new(0),
            idle: Idle::new(),
            alive: Mutex::new(0),
            exited: Condvar::new(),
            first_panic: Mutex::new(None),
            seen,
        });
        Core {
            tx: Some(tx),
            rx,
            state,
            overflow,
            on_drop,
            _closed_on_cancel: closed_on_cancel,
        }
    }

    /// What a new worker needs; counts it alive until the guard drops.
    pub(crate) fn worker_parts(&self) -> (Receiver<Job<'a>>, AliveGuard) {
        *self.state.alive.lock() += 1;
        (self.rx.clone(), AliveGuard(Arc::clone(&self.state)))
    }

    pub(crate) fn token(&self) -> &CancelToken {
        &self.state.token
    }

    /// The pool's owner record, for its threads.
    pub(crate) fn owner(&self) -> std::sync::Arc<Owner> {
        std::sync::Arc::clone(&self.state.seen.owner)
    }

    /// The pool's name, if it was given one.
    pub(crate) fn name(&self) -> Option<&str> {
        self.state.seen.name()
    }

    /// Drops a user value that will never be used (an item of a chunk that will not
    /// run, a result nobody will read), inside the panic boundary: a panic from its
    /// `Drop` is kept for the shutdown report.
    pub(crate) fn drop_unused<T>(&self, value: T) {
        if let Err(panic) = Panic::catch_any(move || drop(value)) {
            self.state.keep_panic(panic);
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.state.capacity
    }

    pub(crate) fn workers(&self) -> usize {
        self.state.slots.len()
    }

    #[inline(always)]
    fn accepting(&self) -> Option<&Sender<Job<'a>>> {
        if self.state.closed.load(Ordering::Acquire) {
            return None;
        }
        self.tx.as_ref()
    }

    /// Queues `job` under the overflow policy. `until` is `None` for `try_` forms; a
    /// `Block` pool then refuses instead of waiting.
    ///
    /// The accepted path is small and always inlined into each submit method; a full
    /// queue goes to the crate's one overflow dispatcher ([`offer`]), which hands a
    /// task back to run here under `CallerRuns`. A refusal returns the task itself.
    #[inline(always)]
    #[allow(unsafe_code)]
    pub(crate) fn push<R: Runnable + 'a>(
        &self,
        task: R,
        until: Option<&Until<'_>>,
        site: &'static Location<'static>,
    ) -> Result<(), Refused<R>> {
        let front = &self.state.front;
        let Some(tx) = self.accepting() else {
            bump(&front.rejected);
            return Err(Refused::Closed(task));
        };
        let idle = &self.state.idle;
        let epoch = idle.enter();
        let job = Job::in_epoch(task, epoch, site);
        let sent_job = job.addr();
        // sending to this pool's queue until the push returns. A bounded wait goes
        // straight to the queue's timed send, so it is marked here if the queue is
        // full now; an unbounded one on the slow path below.
        let offered = offer(
            tx,
            Some(&self.rx),
            job,
            self.overflow,
            until,
            |displaced| {
                unqueued(front);
                bump(&front.dropped);
                self.state.seen.dropped(&displaced);
                let displaced_epoch = displaced.epoch();
                self.discard(displaced);
                idle.leave(displaced_epoch);
            },
            // Called only before an unbounded wait for room (the slow path).
            || self.may_wait(site),
        );
        let refused = match offered {
            Ok(Offered::Done) => {
                self.state.seen.queued(&self.rx);
                return Ok(());
            }
            Ok(Offered::Waited(_)) => {
                unblocked();
                self.state.seen.queued(&self.rx);
                return Ok(());
            }
            Ok(Offered::RunHere(job)) => match self.run_inline(job) {
                Ok(()) => return Ok(()),
                Err(job) => Refused::Full(job),
            },
            Err(refused) => {
                unblocked();
                refused
            }
        };
        bump(&front.rejected);
        idle.leave(epoch);
        Err(refused.map(|job| {
            debug_assert_eq!(job.addr(), sent_job, "a refusal returned another job");
            // SAFETY: a refusal hands back the job it was given (crossbeam's errors
            // and `crate::queue::Refused` return the item passed in, as `Refused`
            // documents, and `run_inline` returns the one it got), and that job was
            // made from `R` above.
            unsafe { job.into_task::<R>() }
        }))
    }

    /// An unbounded submit (from `site`) found the queue full: whether it may wait
    /// for room. From one of the pool's own workers it may not: a wait for room only
    /// workers can make may never end (every worker may be waiting so), so the task
    /// runs there instead. Otherwise the thread is marked blocked sending to the
    /// pool's queue (until the push returns, see [`unblocked`]) and the watchdog runs
    /// (a full queue is when a stuck task shows).
    #[cold]
    #[inline(never)]
    fn may_wait(&self, site: &'static Location<'static>) -> bool {
        if self.own_worker().is_some() {
            return false;
        }
        let guard = self.blocked_submit(site);
        SUBMIT_BLOCKED.with(|b| *b.borrow_mut() = Some(guard));
        true
    }

    /// A bounded submit (from `site`) is about to wait for room if the queue is full:
    /// marks the thread blocked until the guard drops (the bounded forms go straight
    /// to the queue's timed send, which [`may_wait`](Self::may_wait) does not see).
    pub(crate) fn waiting_if_full(
        &self,
        site: &'static Location<'static>,
    ) -> Option<crate::observe::BlockedGuard> {
        let full =
            self.overflow == Overflow::Block && self.tx.as_ref().is_some_and(|tx| tx.is_full());
        full.then(|| self.blocked_submit(site))
    }

    /// Marks the thread blocked sending to the pool's queue and runs the watchdog.
    #[cold]
    #[inline(never)]
    fn blocked_submit(&self, site: &'static Location<'static>) -> crate::observe::BlockedGuard {
        let seen = &self.state.seen;
        let guard = crate::observe::sending_from(seen.queue_name(), site);
        drop(seen.check_stuck());
        guard
    }

    /// Runs a task the queue had no room for on the submitting thread, counted as run
    /// by the caller; refused with `Full` beyond [`MAX_INLINE_DEPTH`] nested runs.
    fn run_inline(&self, job: Job<'a>) -> Result<(), Job<'a>> {
        let depth = INLINE_DEPTH.with(Cell::get);
        if depth >= MAX_INLINE_DEPTH {
            return Err(job);
        }
        let front = &self.state.front;
        unqueued(front);
        bump(&front.caller_ran);
        let tally = Tally {
            completed: Some(&front.caller_completed),
            panicked: Some(&front.caller_panicked),
            exclusive: false,
        };
        let epoch = job.epoch();
        INLINE_DEPTH.with(|d| d.set(depth + 1));
        let outer = INLINE_OF.with(|p| p.replace(self.pool_id()));
        let outcome = job.run(&self.state.token, tally);
        INLINE_OF.with(|p| p.set(outer));
        INLINE_DEPTH.with(|d| d.set(depth));
        self.state.count(outcome);
        self.state.idle.leave(epoch);
        Ok(())
    }

    /// This pool, as the thread-locals name it.
    fn pool_id(&self) -> usize {
        Arc::as_ptr(&self.state) as usize
    }

    /// Whether the calling thread is running one of this pool's tasks (on a worker, or
    /// inline on a submitter or in an `on_drop` callback).
    pub(crate) fn inside_own_task(&self) -> bool {
        self.own_worker().is_some() || INLINE_OF.with(Cell::get) == self.pool_id()
    }

    /// Waits until every task accepted before the call has ended (see `idle.rs`).
    pub(crate) fn wait_idle(&self, until: &Until<'_>) -> Result<(), Interrupted> {
        let state = &self.state;
        let _wake = until.token().map(|token| {
            let state = Arc::clone(state);
            token.on_cancel(move || state.idle.wake_now())
        });
        state.idle.wait(until, &|epoch| state.finished(epoch))
    }

    /// Whether no accepted task is unfinished right now.
    pub(crate) fn is_idle(&self) -> bool {
        self.state.idle.is_idle(&|epoch| self.state.finished(epoch))
    }

    /// The index of the worker the calling thread is, if it is one of this pool's.
    pub(crate) fn own_worker(&self) -> Option<usize> {
        let (pool, index) = WORKER_OF.with(Cell::get);
        (pool == self.pool_id()).then_some(index)
    }

    /// Called on worker `index` of this pool, after every other worker was joined:
    /// runs (or abandons, once cancelled) what is still queued, as the worker would
    /// once its current task returns, so a shutdown from inside a task still runs
    /// everything queued before it reports.
    pub(crate) fn finish_here(&self, index: usize) {
        let me = crate::observe::current();
        for job in self.rx.try_iter() {
            take_job(&self.state, index, job, me.as_deref());
        }
    }

    /// Queues `job` if there is room now, whatever the overflow policy (used by
    /// `map`, which runs a refused chunk on the calling thread instead). `Err` hands
    /// the job back with whether the pool is closed.
    pub(crate) fn try_queue(&self, job: Job<'a>) -> Result<(), (Job<'a>, bool)> {
        let Some(tx) = self.accepting() else {
            return Err((job, true));
        };
        match try_send(tx, job) {
            Ok(()) => Ok(()),
            Err(Refused::Full(job)) => Err((job, false)),
            Err(Refused::Closed(job) | Refused::TimedOut(job) | Refused::Cancelled(job, _)) => {
                Err((job, true))
            }
        }
    }

    /// Hands a task an overflow policy displaced to `on_drop`, or drops it. A panic
    /// there (the callback's, or a capture's destructor) is kept for the shutdown
    /// report rather than thrown at the submitter, whose own task is still in hand.
    /// A callback that submits again (or runs the task, which submits) nests on this
    /// thread: beyond [`MAX_INLINE_DEPTH`] nested calls the task is dropped without
    /// the callback, so a callback that re-submits to a full queue cannot grow the
    /// stack without end.
    fn discard(&self, job: Job<'a>) {
        let depth = INLINE_DEPTH.with(Cell::get);
        let discarded = Panic::catch_any(|| match &self.on_drop {
            Some(on_drop) if depth < MAX_INLINE_DEPTH => {
                INLINE_DEPTH.with(|d| d.set(depth + 1));
                let outer = INLINE_OF.with(|p| p.replace(self.pool_id()));
                let called = Panic::catch_any(|| on_drop(DroppedTask::new(job)));
                INLINE_OF.with(|p| p.set(outer));
                INLINE_DEPTH.with(|d| d.set(depth));
                if let Err(panic) = called {
                    panic.resume();
                }
            }
            _ => drop(job),
        });
        if let Err(panic) = discarded {
            self.state.keep_panic(panic);
        }
    }

    /// Stops accepting new tasks; queued ones still run.
    pub(crate) fn close(&self) {
        self.state.closed.store(true, Ordering::Release);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_none() || self.state.closed.load(Ordering::Acquire)
    }

    /// Drops the only sender: workers finish the queue, then exit.
    pub(crate) fn disconnect(&mut self) {
        self.close();
        self.tx = None;
    }

    /// Whether a shutdown still has work to do.
    pub(crate) fn is_running(&self) -> bool {
        self.tx.is_some() || *self.state.alive.lock() > 0
    }

    /// Waits until at most `own` workers are alive (1 when called on one of the
    /// pool's workers, which cannot exit while it waits), or `deadline`. `true` if
    /// every other worker has exited.
    pub(crate) fn wait_exit(&self, deadline: Instant, own: usize) -> bool {
        exits::wait_exit(&self.state.alive, &self.state.exited, deadline, own)
    }

    /// After the token is cancelled: waits until every worker but `own` has exited
    /// (`true`) or every worker still alive is inside a task (`false`: those may never
    /// return).
    pub(crate) fn settle(&self, own: usize) -> bool {
        let mut alive = self.state.alive.lock();
        loop {
            if *alive <= own {
                return true;
            }
            if self.state.busy() >= *alive {
                return false;
            }
            // Idle workers are draining and exit soon; re-check the busy flags often.
            let tick = time::deadline_after(time::now(), Duration::from_millis(1));
            self.state.exited.wait_until(&mut alive, tick);
        }
    }

    /// Cancels the pool token and drops everything queued now, on this thread (the
    /// workers drop whatever still slips in), so queued handles resolve promptly.
    pub(crate) fn cancel(&self) {
        self.state.token.cancel();
        self.drain();
    }

    /// Drops whatever is queued (used after cancelling, and after the workers are gone).
    pub(crate) fn drain(&self) {
        for job in self.rx.try_iter() {
            unqueued(&self.state.front);
            let epoch = job.epoch();
            self.state.abandon(job);
            self.state.idle.leave(epoch);
        }
    }

    pub(crate) fn stats(&self) -> PoolStats {
        let s = &self.state;
        let (mut received, mut completed, mut panicked) = (0, 0, 0);
        for slot in s.slots.iter() {
            received += slot.received.load(Ordering::Acquire);
            completed += slot.completed.load(Ordering::Relaxed);
            panicked += slot.panicked.load(Ordering::Relaxed);
        }
        let f = &s.front;
        let unqueued = f.unqueued.load(Ordering::Acquire);
        // Read after the counts of tasks that left the queue: a task is counted once
        // at most, or (between leaving the queue and being counted) not yet.
        let queued = self.rx.len();
        let caller_ran = f.caller_ran.load(Ordering::Relaxed);
        // Never less than a snapshot taken before: the sum may briefly miss a task on
        // its way from the queue to a worker.
        let counted = received + unqueued + queued as u64;
        let submitted = f
            .submitted_seen
            .fetch_max(counted, Ordering::Relaxed)
            .max(counted);
        PoolStats {
            workers: s.slots.len(),
            busy: s.busy(),
            queued,
            capacity: s.capacity,
            submitted,
            completed: completed + f.caller_completed.load(Ordering::Relaxed),
            panicked: panicked + f.caller_panicked.load(Ordering::Relaxed),
            rejected: f.rejected.load(Ordering::Relaxed),
            dropped: f.dropped.load(Ordering::Relaxed),
            caller_ran,
            cancelled: s.cancelled.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn report(&self) -> ShutdownReport {
        let stats = self.stats();
        let seen = &self.state.seen;
        emit!(
            info,
            seen.kind,
            seen.name(),
            "pool shut down",
            completed = stats.completed,
            panicked = stats.panicked,
            never_ran = stats.cancelled,
            dropped = stats.dropped,
        );
        ShutdownReport {
            completed: stats.completed,
            panicked: stats.panicked,
            never_ran: stats.cancelled,
            dropped: stats.dropped,
            rejected: stats.rejected,
            caller_ran: stats.caller_ran,
            first_panic: self.state.first_panic.lock().take(),
        }
    }
}
