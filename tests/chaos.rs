//! The chaos test: every primitive working together for a bounded time, driven by a
//! seeded PRNG, with panics injected into tasks, destructors, callbacks and `Display`,
//! cancellation storms, slow consumers, full queues under every overflow policy and
//! shutdowns from other threads while work is in flight.
//!
//! It asserts exact accounting, never timing: every task and item created is counted
//! exactly once as ran, handed back (inside an error) or reported dropped / never run
//! (`on_drop`, `ShutdownReport`, `PipelineReport`, `TaskError::Cancelled`), and every
//! one is dropped exactly once. A loss or a double count names the item. At the end no
//! corral thread is alive.
//!
//! * `CORRAL_CHAOS_SEED=<u64>` replays a run (the seed is printed at the start; the
//!   threads still interleave differently, but every random choice is the same).
//! * `CORRAL_CHAOS_SECS=<secs>` sets how long the actors keep starting new rounds
//!   (default 2 s; minutes for a soak run).
//! * `CORRAL_CHAOS_ONLY=pool,map,...` runs only the named actors (see `ACTORS`).
//! * `CORRAL_CHAOS_VERBOSE=1` prints the injected panics too (they are kept off
//!   stderr otherwise).
//! * `CORRAL_CHAOS_SELFTEST_HANG=1` makes one actor hang on purpose, to see the
//!   watchdog's report.
//!
//! A watchdog fails the test, with the seed and a snapshot of every live primitive's
//! `stats()`, instead of hanging.
//!
//! Each injection once found a bug (a hang, an escaped panic, an over-admission, a
//! lost record); the regression tests named after those bugs live beside each
//! primitive's own tests.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use corral::leak::{self, LeakCheck};
use corral::{
    breaker::{BreakerError, State},
    clock::{Clock, ManualClock},
    group::{GroupError, TaskId},
    pipeline::PipelineError,
    pool::{SubmitError, TaskError},
    rate::WaitError,
    resilience::ResilienceError,
    semaphore::{AcquireError, TryAcquireError},
    supervisor::{Exit, Restart, Strategy},
    CancelToken, CircuitBreaker, KeyedRateLimiter, Overflow, Pipeline, RateLimiter, Resilience,
    Semaphore, Supervisor, TaskGroup, WorkerPool,
};

/// Every injected panic carries this marker; the panic hook keeps them off stderr.
const MARK: &str = "chaos-injected";

// ---- the seeded generator -------------------------------------------------------------

/// SplitMix64: tiny, and every sequence is reproducible from its seed.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// A number in `0..n` (0 for `n == 0`).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    /// A number in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below((hi - lo + 1) as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len() as u64) as usize]
    }

    /// An independent generator for another thread.
    fn fork(&mut self) -> Rng {
        Rng(self.next())
    }
}

/// The SplitMix64 finaliser: a deterministic "random" choice from a counter.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

// ---- the ledger: per-id event counts ----------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ev {
    /// The item was created (pulled from a source).
    Created,
    /// The task's or item's body ran (on a worker, or on the caller under CallerRuns).
    Ran,
    /// The task ran because an `on_drop` callback ran it.
    RanViaDrop,
    /// The task or item came back to its submitter inside an error.
    HandedBack,
    /// Its guard was dropped (must happen exactly once).
    Dropped,
    /// The sink received it.
    Delivered,
    /// An `on_drop` callback received it.
    OnDrop,
    /// A stage (or the sink) failed on it, by `Err` or by panic.
    Failed,
    /// Its `on_cancel` callback fired.
    Fired,
    /// It ran on the submitting thread (`CallerRuns`).
    RanOnCaller,
}

const EVENTS: usize = 10;

/// Exact per-id tallies, so a loss or a double count names the id.
struct Ledger {
    what: String,
    seed: u64,
    cells: Vec<[AtomicU32; EVENTS]>,
}

impl Ledger {
    fn new(what: String, seed: u64, n: usize) -> Arc<Ledger> {
        Arc::new(Ledger {
            what,
            seed,
            cells: (0..n)
                .map(|_| std::array::from_fn(|_| AtomicU32::new(0)))
                .collect(),
        })
    }

    fn len(&self) -> usize {
        self.cells.len()
    }

    fn bump(&self, id: usize, ev: Ev) -> u32 {
        self.cells[id][ev as usize].fetch_add(1, SeqCst)
    }

    fn get(&self, id: usize, ev: Ev) -> u32 {
        self.cells[id][ev as usize].load(SeqCst)
    }

    fn sum(&self, ev: Ev) -> u64 {
        (0..self.len()).map(|id| u64::from(self.get(id, ev))).sum()
    }

    fn ids(&self, pred: impl Fn(usize) -> bool) -> Vec<usize> {
        (0..self.len()).filter(|&id| pred(id)).collect()
    }

    fn row(&self, id: usize) -> String {
        const NAMES: [Ev; EVENTS] = [
            Ev::Created,
            Ev::Ran,
            Ev::RanViaDrop,
            Ev::HandedBack,
            Ev::Dropped,
            Ev::Delivered,
            Ev::OnDrop,
            Ev::Failed,
            Ev::Fired,
            Ev::RanOnCaller,
        ];
        let parts: Vec<String> = NAMES
            .iter()
            .filter(|&&ev| self.get(id, ev) != 0)
            .map(|&ev| format!("{ev:?}={}", self.get(id, ev)))
            .collect();
        format!("#{id} [{}]", parts.join(" "))
    }

    /// Fails the test, naming the round and the seed.
    #[track_caller]
    fn fail(&self, msg: impl fmt::Display) -> ! {
        panic!(
            "chaos seed {}: {}: {msg}\n(replay: CORRAL_CHAOS_SEED={})",
            self.seed, self.what, self.seed
        )
    }

    #[track_caller]
    fn check(&self, ok: bool, msg: impl FnOnce() -> String) {
        if !ok {
            self.fail(msg());
        }
    }

    /// Every id matching `pred` has `ev` exactly `n` times.
    #[track_caller]
    fn expect_each(&self, pred: impl Fn(usize) -> bool, ev: Ev, n: u32) {
        let bad = self.ids(|id| pred(id) && self.get(id, ev) != n);
        if !bad.is_empty() {
            let rows: Vec<String> = bad.iter().take(8).map(|&id| self.row(id)).collect();
            self.fail(format!(
                "{} id(s) with {ev:?} != {n}: {}",
                bad.len(),
                rows.join(", ")
            ));
        }
    }
}

/// Owned by a task's captures or by an item: records its drop, and panics in it when
/// armed (unless the thread is already unwinding, which would abort).
struct Guard {
    id: usize,
    ledger: Arc<Ledger>,
    bomb: bool,
}

impl Guard {
    fn new(ledger: &Arc<Ledger>, id: usize, bomb: bool) -> Guard {
        Guard {
            id,
            ledger: Arc::clone(ledger),
            bomb,
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.ledger.bump(self.id, Ev::Dropped);
        if self.bomb && !std::thread::panicking() {
            panic!("{MARK}: drop of {} #{}", self.ledger.what, self.id);
        }
    }
}

/// A user error whose `Display` (or `Drop`) may panic.
#[derive(Debug)]
struct ChaosErr {
    id: usize,
    display_bomb: bool,
    drop_bomb: bool,
}

impl Drop for ChaosErr {
    fn drop(&mut self) {
        if self.drop_bomb && !std::thread::panicking() {
            panic!("{MARK}: drop of error #{}", self.id);
        }
    }
}

impl fmt::Display for ChaosErr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.display_bomb && !std::thread::panicking() {
            panic!("{MARK}: Display of error #{}", self.id);
        }
        write!(f, "chaos error #{}", self.id)
    }
}

impl std::error::Error for ChaosErr {}

/// Runs `f`, swallowing an injected panic; any other panic goes on.
fn quietly<T>(f: impl FnOnce() -> T) -> Option<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => Some(v),
        Err(payload) => {
            if message(&*payload).is_some_and(|m| m.starts_with(MARK)) {
                None
            } else {
                std::panic::resume_unwind(payload)
            }
        }
    }
}

fn message(payload: &(dyn std::any::Any + Send)) -> Option<String> {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
}

fn is_injected(p: &corral::Panic) -> bool {
    p.message().is_some_and(|m| m.starts_with(MARK))
}

/// Simulated slow work (a stand-in for I/O in a task, a stage or a consumer). It only
/// shapes the load: no check ever waits on it for another thread to reach a point.
fn work_for(duration: Duration) {
    std::thread::sleep(duration);
}

/// A short pause that does not depend on timing for correctness.
fn nap(rng_value: u64) {
    match rng_value % 4 {
        0 => std::thread::yield_now(),
        1 => work_for(Duration::from_micros(50)),
        2 => work_for(Duration::from_micros(300)),
        _ => {}
    }
}

// ---- the monitor: what the watchdog prints -----------------------------------------------

type Probe = Box<dyn Fn() -> Option<String> + Send + Sync>;

/// Latest notes per actor and probes of live primitives, for the watchdog's message.
#[derive(Default)]
struct Monitor {
    notes: Mutex<BTreeMap<String, String>>,
    probes: Mutex<Vec<(String, Probe)>>,
}

impl Monitor {
    fn note(&self, who: &str, what: impl Into<String>) {
        self.notes
            .lock()
            .unwrap()
            .insert(who.to_owned(), what.into());
    }

    /// Watches a primitive while it lives (the probe holds a `Weak`).
    fn watch<T: Send + Sync + 'static>(
        &self,
        name: impl Into<String>,
        target: &Arc<T>,
        show: impl Fn(&T) -> String + Send + Sync + 'static,
    ) {
        let weak: Weak<T> = Arc::downgrade(target);
        let mut probes = self.probes.lock().unwrap();
        probes.retain(|(_, p)| p().is_some());
        probes.push((
            name.into(),
            Box::new(move || weak.upgrade().map(|t| show(&t))),
        ));
    }

    fn dump(&self) -> String {
        let mut out = String::from("notes:\n");
        if let Ok(notes) = self.notes.try_lock() {
            for (who, what) in notes.iter() {
                out.push_str(&format!("  {who}: {what}\n"));
            }
        }
        out.push_str("live primitives:\n");
        if let Ok(probes) = self.probes.try_lock() {
            for (name, probe) in probes.iter() {
                if let Some(s) = probe() {
                    out.push_str(&format!("  {name}: {s}\n"));
                }
            }
        }
        out.push_str(&format!(
            "live corral threads: {:?}\n",
            leak::live_threads()
        ));
        out
    }
}

// ---- what every actor shares ------------------------------------------------------------

struct Shared {
    seed: u64,
    end: Instant,
    mon: Arc<Monitor>,
    /// The root of the cancellation storm: its children come and go.
    storm_root: CancelToken,
    storm: Mutex<Vec<CancelToken>>,
    storm_pick: AtomicU64,
    /// A stack every actor may call into, with its own tallies.
    bulkhead: Arc<Semaphore>,
    resilience: Arc<Resilience>,
    res_tally: ResTally,
}

#[derive(Default)]
struct ResTally {
    calls: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    refused: AtomicU64,
    retries: AtomicU64,
}

impl Shared {
    fn running(&self) -> bool {
        Instant::now() < self.end
    }

    /// A token from the storm: a child of a generation that may be cancelled any moment.
    fn storm_token(&self) -> CancelToken {
        let k = self.storm_pick.fetch_add(1, SeqCst);
        let storm = self.storm.lock().unwrap();
        if storm.is_empty() {
            return self.storm_root.child();
        }
        let parent = &storm[(mix(k) % storm.len() as u64) as usize];
        if k % 3 == 0 {
            parent.child_with_timeout(Duration::from_millis(1 + k % 5))
        } else {
            parent.child()
        }
    }

    /// One call through the shared resilience stack, tallied exactly.
    fn resilient_call(&self, key: u64, token: Option<&CancelToken>) {
        let attempts = Cell::new(0u32);
        let f = |_: &CancelToken| {
            let n = attempts.get();
            attempts.set(n + 1);
            match mix(key ^ u64::from(n)) % 4 {
                0 => Err(ChaosErr {
                    id: key as usize,
                    display_bomb: true,
                    drop_bomb: false,
                }),
                _ => Ok(key),
            }
        };
        let t = &self.res_tally;
        let result = match (token, key % 3) {
            (Some(token), 0) => self
                .resilience
                .call_with(token, |e: &ChaosErr| e.id % 2 == 0, f),
            (Some(token), _) => self.resilience.call_cancellable(token, f),
            (None, _) => self.resilience.call(f),
        };
        t.calls.fetch_add(1, SeqCst);
        let ran = attempts.get();
        match result {
            Ok(v) => {
                assert_eq!(
                    v, key,
                    "chaos seed {}: resilience returned another call's value",
                    self.seed
                );
                t.succeeded.fetch_add(1, SeqCst);
                t.retries.fetch_add(u64::from(ran - 1), SeqCst);
            }
            Err(ResilienceError::Inner { attempts, error }) => {
                assert_eq!(
                    (attempts, error.id),
                    (ran, key as usize),
                    "chaos seed {}: resilience Inner with the wrong attempts or error",
                    self.seed
                );
                t.failed.fetch_add(1, SeqCst);
                t.retries.fetch_add(u64::from(ran - 1), SeqCst);
            }
            Err(refused) => {
                assert!(refused.is_refused());
                // A refusal after attempts that failed comes back as `Inner`, so a
                // refused call ran nothing.
                assert_eq!(
                    ran, 0,
                    "chaos seed {}: refused call ran: {refused:?}",
                    self.seed
                );
                t.refused.fetch_add(1, SeqCst);
            }
        }
    }
}

thread_local! {
    /// Set while a pool's `on_drop` callback runs a displaced task.
    static VIA_DROP: Cell<bool> = const { Cell::new(false) };
}

struct ViaDrop;

impl ViaDrop {
    fn enter() -> ViaDrop {
        VIA_DROP.with(|f| f.set(true));
        ViaDrop
    }
}

impl Drop for ViaDrop {
    fn drop(&mut self) {
        VIA_DROP.with(|f| f.set(false));
    }
}

// ---- the worker pool -------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Act {
    Value,
    Panic,
    Slow,
    UntilCancelled,
    Resilient,
    /// Submits a child task to its own pool (ids `n..2n`).
    NestedSubmit,
    /// Runs a `map` on its own pool.
    NestedMap,
}

#[derive(Clone, Copy, Debug)]
enum Form {
    Submit,
    TrySubmit,
    Timeout,
    Cancellable,
    WithToken,
    WithTokenTimeout,
    Execute,
    TryExecute,
    ExecuteCancellable,
}

/// A pool round's plans, and its pool for tasks that re-enter it.
struct Plans {
    list: Vec<Plan>,
    pool: std::sync::OnceLock<Weak<WorkerPool>>,
}

struct Plan {
    act: Act,
    form: Form,
    bomb: bool,
    nap: u64,
}

thread_local! {
    /// Set while this thread is inside a pool's submit call: a task that runs then
    /// runs on the caller (`CallerRuns`), or from `on_drop`.
    static IN_SUBMIT: Cell<bool> = const { Cell::new(false) };
}

/// Runs a submit call with [`IN_SUBMIT`] set.
fn submitting<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            IN_SUBMIT.with(|s| s.set(self.0));
        }
    }
    let _restore = Restore(IN_SUBMIT.with(|s| s.replace(true)));
    f()
}

/// Records that task `id` runs, and how.
fn ran(ledger: &Ledger, id: usize) {
    if VIA_DROP.with(Cell::get) {
        ledger.bump(id, Ev::RanViaDrop);
    } else {
        ledger.bump(id, Ev::Ran);
        if IN_SUBMIT.with(Cell::get) {
            ledger.bump(id, Ev::RanOnCaller);
        }
    }
}

fn task_body(
    sh: &Shared,
    ledger: &Arc<Ledger>,
    id: usize,
    plans: &Plans,
    token: Option<&CancelToken>,
) -> usize {
    ran(ledger, id);
    let plan = &plans.list[id];
    match plan.act {
        Act::Value => {}
        Act::Panic => panic!("{MARK}: task {} #{id}", ledger.what),
        Act::Slow => nap(plan.nap),
        Act::UntilCancelled => {
            if let Some(token) = token {
                token.wait_timeout(Duration::from_millis(2));
            } else {
                nap(plan.nap);
            }
        }
        Act::Resilient => sh.resilient_call(id as u64 ^ plan.nap, token),
        Act::NestedSubmit => {
            // Re-entrant: a task submits to its own pool (never blocking: the queue
            // may be full of tasks waiting for this worker).
            let pool = plans.pool.get().and_then(Weak::upgrade);
            if let Some(pool) = pool {
                let child = plans.list.len() + id;
                ledger.bump(child, Ev::Created);
                let guard = Guard::new(ledger, child, false);
                let l = Arc::clone(ledger);
                let task = move || {
                    let _g = &guard;
                    ran(&l, child);
                };
                if let Err(e) = submitting(|| pool.try_execute(task)) {
                    hand_back(ledger, child, e);
                }
            }
        }
        Act::NestedMap => {
            let pool = plans.pool.get().and_then(Weak::upgrade);
            if let Some(pool) = pool {
                let k = (plan.nap % 40) as usize;
                let mut got = 0;
                // Not cheap, so that chunks go through the queue.
                let slow = |x: usize| {
                    work_for(Duration::from_micros(100));
                    x * 2
                };
                for (i, r) in pool.map(0..k, slow).enumerate() {
                    match r {
                        Ok(v) => assert_eq!(v, i * 2, "a nested map's result {i}"),
                        Err(TaskError::Cancelled) => {}
                        Err(e) => panic!("a nested map's item {i}: {e:?}"),
                    }
                    got += 1;
                }
                assert_eq!(got, k, "a nested map yielded {got} of {k} results");
            }
        }
    }
    id
}

fn pool_round(rng: &mut Rng, sh: &Shared, round: u64) {
    let n = rng.range(4, 80);
    let overflow = rng.pick(&[
        Overflow::Block,
        Overflow::Reject,
        Overflow::DropOldest,
        Overflow::DropNewest,
        Overflow::CallerRuns,
    ]);
    let workers = rng.range(1, 3);
    let capacity = rng.range(1, 6);
    let with_on_drop = rng.chance(60);
    let ending = rng.below(5);
    let ledger = Ledger::new(
        format!("pool round {round} ({n} tasks, {workers} workers, queue {capacity}, {overflow:?}, on_drop {with_on_drop}, ending {ending})"),
        sh.seed,
        2 * n,
    );
    // A nested `map` queues chunks the ledger does not see: the report's totals are
    // then checked against the ledger only in the other rounds.
    let disrupt = rng.below(4); // 0 close, 1 cancel the pool token, else nothing
    let disrupt_after = rng.below(n as u64 + 1) as usize;
    // A task may run a nested `map` on its own pool while the pool's token is
    // cancelled (endings 1 and 2 cancel it, and so does disruption 1).
    let map_round = rng.chance(15);
    sh.mon.note("pool", ledger.what.clone());
    let list = (0..n)
        .map(|_| Plan {
            act: match rng.pick(&[
                Act::Value,
                Act::Value,
                Act::Panic,
                Act::Slow,
                Act::UntilCancelled,
                Act::Resilient,
                Act::NestedSubmit,
                Act::NestedMap,
            ]) {
                Act::NestedMap if !map_round => Act::Value,
                act => act,
            },
            form: rng.pick(&[
                Form::Submit,
                Form::TrySubmit,
                Form::Timeout,
                Form::Cancellable,
                Form::WithToken,
                Form::WithTokenTimeout,
                Form::Execute,
                Form::TryExecute,
                Form::ExecuteCancellable,
            ]),
            bomb: rng.chance(10),
            nap: rng.next(),
        })
        .collect();
    let plans = Arc::new(Plans {
        list,
        pool: std::sync::OnceLock::new(),
    });
    let on_drop_calls = Arc::new(AtomicU64::new(0));
    let mut builder = WorkerPool::builder()
        .workers(workers)
        .queue_capacity(capacity)
        .overflow(overflow)
        .thread_name("chaos-pool");
    if with_on_drop {
        let calls = Arc::clone(&on_drop_calls);
        let choice = rng.next();
        builder = builder.on_drop(move |task| {
            let k = calls.fetch_add(1, SeqCst);
            match mix(choice ^ k) % 5 {
                0 | 1 => {
                    let _via = ViaDrop::enter();
                    task.run();
                }
                2 | 3 => drop(task),
                _ => {
                    drop(task);
                    panic!("{MARK}: pool on_drop");
                }
            }
        });
    }
    let pool = Arc::new(builder.build().expect("a valid pool"));
    let _ = plans.pool.set(Arc::downgrade(&pool));
    sh.mon.watch(format!("pool round {round}"), &pool, |p| {
        format!("{:?}", p.stats())
    });

    let handles: Mutex<Vec<(usize, corral::pool::TaskHandle<usize>)>> = Mutex::new(Vec::new());
    let submitters = rng.range(1, 3);
    let submitted = AtomicUsize::new(0);
    let mut srngs: Vec<Rng> = (0..submitters).map(|_| rng.fork()).collect();
    corral::scope(|s| {
        for (t, mut srng) in srngs.drain(..).enumerate() {
            let (pool, ledger, plans, handles, submitted) =
                (&pool, &ledger, &plans, &handles, &submitted);
            s.spawn(move || {
                for id in (t..n).step_by(submitters) {
                    submit_one(sh, pool, ledger, plans, id, &mut srng, handles);
                    submitted.fetch_add(1, SeqCst);
                }
            });
        }
        if disrupt < 2 {
            let (pool, submitted) = (&pool, &submitted);
            s.spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(5);
                while submitted.load(SeqCst) < disrupt_after && Instant::now() < deadline {
                    std::thread::yield_now();
                }
                if disrupt == 0 {
                    pool.close();
                } else {
                    pool.token().cancel();
                }
            });
        }
    });

    // Shut down while the handles are being joined on another thread.
    let handles = handles.into_inner().unwrap();
    let mut pool = Some(pool);
    let pool_ref = &mut pool;
    let report = corral::scope(|s| {
        let joiner = s.spawn(|| join_all(sh, &ledger, handles));
        if ending == 4 {
            // The last Arc goes on another thread while the handles are joined: the
            // drop is a shutdown, and nobody gets a report.
            let last = pool_ref.take().unwrap();
            s.spawn(move || drop(last));
            joiner.join().unwrap();
            return None;
        }
        let mut pool = loop {
            match Arc::try_unwrap(pool_ref.take().unwrap()) {
                Ok(pool) => break pool,
                // The watchdog's probe holds it for a moment.
                Err(again) => {
                    *pool_ref = Some(again);
                    std::thread::yield_now();
                }
            }
        };
        let report = match ending {
            0 => pool.shutdown(),
            1 => pool.shutdown_now(),
            2 => loop {
                match pool.shutdown_timeout(Duration::from_micros(200)) {
                    Ok(report) => break report,
                    Err(back) => pool = back,
                }
            },
            _ => s.spawn(move || pool.shutdown()).join().unwrap(),
        };
        joiner.join().unwrap();
        Some(report)
    });
    sh.mon
        .note("pool", format!("{}: checking {report:?}", ledger.what));
    // No thread of the pool outlives it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while leak::live_threads()
        .iter()
        .any(|t| t.name.starts_with("corral-chaos-pool"))
    {
        ledger.check(Instant::now() < deadline, || {
            format!("pool threads outlived the pool: {:?}", leak::live_threads())
        });
        std::thread::yield_now();
    }

    // Per id: dropped exactly once, and exactly one fate at most.
    let created = |id: usize| ledger.get(id, Ev::Created) == 1;
    ledger.expect_each(created, Ev::Dropped, 1);
    ledger.expect_each(|id| !created(id), Ev::Dropped, 0);
    ledger.expect_each(|id| !created(id), Ev::Ran, 0);
    let twice = ledger.ids(|id| ledger.get(id, Ev::Created) > 1);
    ledger.check(twice.is_empty(), || format!("ids created twice: {twice:?}"));
    let multi = ledger.ids(|id| {
        ledger.get(id, Ev::Ran) + ledger.get(id, Ev::RanViaDrop) + ledger.get(id, Ev::HandedBack)
            > 1
    });
    ledger.check(multi.is_empty(), || {
        format!(
            "tasks with two fates: {:?}",
            multi.iter().map(|&id| ledger.row(id)).collect::<Vec<_>>()
        )
    });
    let ran = ledger.sum(Ev::Ran);
    let ran_via_drop = ledger.sum(Ev::RanViaDrop);
    let handed_back = ledger.sum(Ev::HandedBack);
    let unran = ledger
        .ids(|id| {
            created(id)
                && ledger.get(id, Ev::Ran)
                    + ledger.get(id, Ev::RanViaDrop)
                    + ledger.get(id, Ev::HandedBack)
                    == 0
        })
        .len() as u64;
    let on_drop_calls = on_drop_calls.load(SeqCst);
    let Some(report) = report else {
        return; // dropped: the handles and the per-id books above are all there is
    };
    let caller_ran = ledger.sum(Ev::RanOnCaller);
    ledger.check(report.caller_ran == caller_ran, || {
        format!(
            "report says {} ran on the caller, but {caller_ran} did ({report:?})",
            report.caller_ran
        )
    });
    let nested_maps = (0..n).any(|id| {
        matches!(plans.list[id].act, Act::NestedMap)
            && ledger.get(id, Ev::Ran) + ledger.get(id, Ev::RanViaDrop) > 0
    });
    if nested_maps {
        return; // chunks the ledger does not see went through the pool
    }
    ledger.check(report.completed + report.panicked == ran, || {
        format!(
            "report says {} completed + {} panicked, but {ran} tasks ran on the pool ({report:?})",
            report.completed, report.panicked
        )
    });
    ledger.check(report.rejected == handed_back, || {
        format!(
            "report says {} rejected, but {handed_back} tasks were handed back ({report:?})",
            report.rejected
        )
    });
    if with_on_drop {
        ledger.check(report.dropped == on_drop_calls, || {
            format!(
                "report says {} dropped, but on_drop saw {on_drop_calls} ({report:?})",
                report.dropped
            )
        });
    }
    ledger.check(unran + ran_via_drop == report.never_ran + report.dropped, || {
        format!(
            "{unran} tasks never ran and {ran_via_drop} ran from on_drop, but the report says never_ran {} + dropped {} ({report:?}); unran: {:?}",
            report.never_ran,
            report.dropped,
            ledger.ids(|id| ledger.get(id, Ev::Ran) + ledger.get(id, Ev::RanViaDrop) + ledger.get(id, Ev::HandedBack) == 0)
        )
    });
}

fn submit_one(
    sh: &Shared,
    pool: &WorkerPool,
    ledger: &Arc<Ledger>,
    plans: &Arc<Plans>,
    id: usize,
    rng: &mut Rng,
    handles: &Mutex<Vec<(usize, corral::pool::TaskHandle<usize>)>>,
) {
    let plan = &plans.list[id];
    ledger.bump(id, Ev::Created);
    let shared = shared_static();
    let new_body = || {
        let guard = Guard::new(ledger, id, plan.bomb);
        let (l, p) = (Arc::clone(ledger), Arc::clone(plans));
        move || {
            let _g = &guard;
            task_body(shared, &l, id, &p, None)
        }
    };
    let new_tokened = || {
        let guard = Guard::new(ledger, id, plan.bomb);
        let (l, p) = (Arc::clone(ledger), Arc::clone(plans));
        move |token: &CancelToken| {
            let _g = &guard;
            task_body(shared, &l, id, &p, Some(token))
        }
    };
    let tick = Duration::from_micros(rng.below(500));
    macro_rules! handled {
        ($r:expr) => {
            match submitting(|| $r) {
                Ok(h) => handles.lock().unwrap().push((id, h)),
                Err(e) => hand_back(ledger, id, e),
            }
        };
    }
    macro_rules! fire {
        ($r:expr) => {
            if let Err(e) = submitting(|| $r) {
                hand_back(ledger, id, e)
            }
        };
    }
    match plan.form {
        Form::Submit => handled!(pool.submit(new_body())),
        Form::TrySubmit => handled!(pool.try_submit(new_body())),
        Form::Timeout => handled!(pool.submit_timeout(new_body(), tick)),
        Form::Cancellable => handled!(pool.submit_cancellable(new_body(), &sh.storm_token())),
        Form::WithToken => handled!(pool.submit_with_token(new_tokened())),
        Form::WithTokenTimeout => handled!(pool.submit_with_token_timeout(new_tokened(), tick)),
        Form::Execute => {
            let body = new_body();
            fire!(pool.execute(move || {
                body();
            }))
        }
        Form::TryExecute => {
            let body = new_body();
            fire!(pool.try_execute(move || {
                body();
            }))
        }
        Form::ExecuteCancellable => {
            let body = new_body();
            fire!(pool.execute_cancellable(
                move || {
                    body();
                },
                &sh.storm_token()
            ))
        }
    }
}

fn hand_back<F>(ledger: &Ledger, id: usize, e: SubmitError<F>) {
    ledger.bump(id, Ev::HandedBack);
    // The closure travels back inside; its captures may panic when dropped.
    quietly(move || drop(e.into_inner()));
}

fn join_all(sh: &Shared, ledger: &Ledger, handles: Vec<(usize, corral::pool::TaskHandle<usize>)>) {
    for (id, handle) in handles {
        let result = match handle.join_timeout(Duration::from_secs(30)) {
            Ok(result) => result,
            Err(_) => ledger.fail(format!(
                "the handle of task #{id} did not resolve within 30 s"
            )),
        };
        let ran = ledger.get(id, Ev::Ran) + ledger.get(id, Ev::RanViaDrop);
        match result {
            Ok(v) => ledger.check(v == id && ran == 1, || {
                format!("handle of #{id} returned {v}: {}", ledger.row(id))
            }),
            Err(TaskError::Panicked(p)) => ledger.check(ran == 1 && is_injected(&p), || {
                format!("handle of #{id} panicked ({p:?}): {}", ledger.row(id))
            }),
            Err(TaskError::Cancelled) => ledger.check(ran == 0, || {
                format!(
                    "handle of #{id} is Cancelled, but the task ran: {}",
                    ledger.row(id)
                )
            }),
            Err(other) => ledger.fail(format!("handle of #{id}: unexpected {other:?}")),
        }
    }
    let _ = sh;
}

static SHARED: std::sync::OnceLock<&'static Shared> = std::sync::OnceLock::new();

fn shared_static() -> &'static Shared {
    SHARED
        .get()
        .expect("the shared state is set before the actors start")
}

/// The last `Arc<WorkerPool>` is dropped inside one of its own tasks.
fn last_arc_in_own_task_round(rng: &mut Rng, sh: &Shared, round: u64) {
    let ledger = Ledger::new(format!("last-Arc round {round}"), sh.seed, 1);
    let pool = Arc::new(
        WorkerPool::builder()
            .workers(rng.range(1, 3))
            .thread_name("chaos-lastarc")
            .build()
            .unwrap(),
    );
    let (tx, rx) = mpsc::channel::<()>();
    let inner = Arc::clone(&pool);
    let l = Arc::clone(&ledger);
    let handle = pool
        .submit(move || {
            rx.recv().ok();
            l.bump(0, Ev::Ran);
            drop(inner); // the last one: the pool shuts down from its own worker
        })
        .unwrap();
    drop(pool);
    tx.send(()).unwrap();
    match handle.join_timeout(Duration::from_secs(30)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => ledger.fail(format!("the task that dropped the last Arc failed: {e:?}")),
        Err(_) => ledger.fail("the task that dropped the last Arc never finished"),
    }
    // Every corral thread of the pool must go; wait (bounded) for the worker itself.
    let deadline = Instant::now() + Duration::from_secs(30);
    while leak::live_threads()
        .iter()
        .any(|t| t.name.contains("chaos-lastarc"))
    {
        ledger.check(Instant::now() < deadline, || {
            "the pool's threads outlived it".into()
        });
        std::thread::yield_now();
    }
    ledger.expect_each(|_| true, Ev::Ran, 1);
}

// ---- map -----------------------------------------------------------------------------

struct Item {
    guard: Guard,
}

impl Item {
    fn id(&self) -> usize {
        self.guard.id
    }

    /// Drops the item without its bomb (for the test's own drops).
    fn defuse(mut self) {
        self.guard.bomb = false;
    }
}

fn map_round(rng: &mut Rng, sh: &Shared, round: u64) {
    let n = rng.range(0, 150);
    let scoped = rng.chance(50);
    let workers = rng.range(1, 3);
    let capacity = rng.range(1, 8);
    let stop_at = if rng.chance(30) {
        rng.below(n as u64 + 1) as usize
    } else {
        usize::MAX
    };
    let disrupt = rng.below(4); // 0 close, 1 cancel, else none
    let disrupt_at = rng.below(n as u64 + 1) as usize;
    let ledger = Ledger::new(
        format!("map round {round} ({n} items, scoped {scoped}, {workers} workers, queue {capacity}, stop at {stop_at}, disrupt {disrupt} at {disrupt_at})"),
        sh.seed,
        n,
    );
    sh.mon.note("map", ledger.what.clone());
    let acts: Arc<Vec<(Act, bool, u64)>> = Arc::new(
        (0..n)
            .map(|_| {
                (
                    rng.pick(&[Act::Value, Act::Value, Act::Value, Act::Panic, Act::Slow]),
                    rng.chance(5),
                    rng.next(),
                )
            })
            .collect(),
    );
    let slow_consumer = rng.chance(30);
    let (l, a) = (Arc::clone(&ledger), Arc::clone(&acts));
    let items = (0..n).map(move |id| {
        l.bump(id, Ev::Created);
        Item {
            guard: Guard::new(&l, id, a[id].1),
        }
    });
    let (l, a) = (Arc::clone(&ledger), Arc::clone(&acts));
    let f = move |item: Item| {
        let id = item.id();
        l.bump(id, Ev::Ran);
        match a[id].0 {
            Act::Panic => panic!("{MARK}: map item #{id}"),
            Act::Slow => nap(a[id].2),
            _ => {}
        }
        drop(item); // may panic: the item's result is then `Panicked`
        id
    };
    let consume = |results: &mut dyn Iterator<Item = Result<usize, TaskError>>,
                   close: &dyn Fn(),
                   cancel: &dyn Fn()| {
        let mut k = 0usize;
        for result in results {
            if k == disrupt_at {
                match disrupt {
                    0 => close(),
                    1 => cancel(),
                    _ => {}
                }
            }
            if k >= stop_at {
                break;
            }
            let ran = ledger.get(k, Ev::Ran);
            match result {
                Ok(v) => ledger.check(v == k && ran == 1, || {
                    format!("result {k} is Ok({v}): {}", ledger.row(k))
                }),
                Err(TaskError::Panicked(p)) => ledger.check(ran == 1 && is_injected(&p), || {
                    format!("result {k} panicked ({p:?}): {}", ledger.row(k))
                }),
                Err(TaskError::Cancelled) => ledger.check(ran == 0, || {
                    format!("result {k} is Cancelled but ran: {}", ledger.row(k))
                }),
                Err(other) => ledger.fail(format!("result {k}: {other:?}")),
            }
            if slow_consumer {
                nap(k as u64);
            }
            k += 1;
        }
        if stop_at == usize::MAX {
            ledger.check(k == n, || format!("map yielded {k} results for {n} items"));
        }
    };
    let ran: Vec<AtomicU32> = (0..rng.range(0, 20)).map(|_| AtomicU32::new(0)).collect();
    if scoped {
        corral::scope(|s| {
            let pool = WorkerPool::builder()
                .workers(workers)
                .queue_capacity(capacity)
                .thread_name("chaos-smap")
                .build_scoped(s)
                .unwrap();
            consume(&mut pool.map(items, f), &|| pool.close(), &|| {
                pool.token().cancel()
            });
            // Then tasks that borrow from this stack frame, through every form.
            let mut handles = Vec::new();
            let mut handed_back = 0;
            for (i, flag) in ran.iter().enumerate() {
                let task = move || {
                    flag.fetch_add(1, SeqCst);
                    if i % 7 == 3 {
                        panic!("{MARK}: scoped task {i}");
                    }
                    i
                };
                let submitted = match rng.below(3) {
                    0 => pool.submit(task),
                    1 => pool.try_submit(task),
                    _ => pool.submit_timeout(task, Duration::from_micros(rng.below(300))),
                };
                match submitted {
                    Ok(h) => handles.push((i, h)),
                    Err(e) => {
                        handed_back += 1;
                        let _ = e.into_inner();
                    }
                }
            }
            let report = if rng.chance(50) {
                pool.shutdown_now()
            } else {
                pool.shutdown()
            };
            let mut cancelled = 0;
            for (i, h) in handles {
                let n = ran[i].load(SeqCst);
                match h.join() {
                    Ok(v) => ledger.check(v == i && n == 1, || {
                        format!("scoped task {i}: Ok({v}), ran {n}")
                    }),
                    Err(TaskError::Panicked(p)) => ledger.check(is_injected(&p) && n == 1, || {
                        format!("scoped task {i}: {p:?}, ran {n}")
                    }),
                    Err(TaskError::Cancelled) => {
                        cancelled += 1;
                        ledger.check(n == 0, || format!("scoped task {i}: Cancelled but ran {n}"))
                    }
                    Err(e) => ledger.fail(format!("scoped task {i}: {e:?}")),
                }
            }
            // `never_ran` also counts the map's chunks that the pool dropped unrun.
            ledger.check(
                report.rejected == handed_back && report.never_ran >= cancelled,
                || format!("{handed_back} scoped tasks handed back and {cancelled} cancelled, but {report:?}"),
            );
            let twice = ran.iter().filter(|f| f.load(SeqCst) > 1).count();
            ledger.check(twice == 0, || format!("{twice} scoped tasks ran twice"));
        });
    } else {
        let pool = WorkerPool::builder()
            .workers(workers)
            .queue_capacity(capacity)
            .thread_name("chaos-map")
            .build()
            .unwrap();
        consume(&mut pool.map(items, f), &|| pool.close(), &|| {
            pool.token().cancel()
        });
        pool.shutdown();
    }
    let created = ledger.ids(|id| ledger.get(id, Ev::Created) == 1);
    ledger.expect_each(|id| ledger.get(id, Ev::Created) == 1, Ev::Dropped, 1);
    ledger.expect_each(|id| ledger.get(id, Ev::Created) == 0, Ev::Dropped, 0);
    let twice = ledger.ids(|id| ledger.get(id, Ev::Ran) > 1 || ledger.get(id, Ev::Created) > 1);
    ledger.check(twice.is_empty(), || {
        format!("items ran or were created twice: {twice:?}")
    });
    if stop_at == usize::MAX {
        ledger.check(created.len() == n, || {
            format!("only {} of {n} items were pulled", created.len())
        });
    }
}

// ---- task groups and scopes --------------------------------------------------------------

fn group_round(rng: &mut Rng, sh: &Shared, round: u64) {
    let n = rng.range(1, 30);
    let limit = if rng.chance(50) {
        Some(rng.range(1, 4))
    } else {
        None
    };
    let cancel_at = if rng.chance(40) {
        Some(rng.below(n as u64) as usize)
    } else {
        None
    };
    let ledger = Ledger::new(
        format!("group round {round} ({n} tasks, limit {limit:?}, cancel at {cancel_at:?})"),
        sh.seed,
        n,
    );
    sh.mon.note("group", ledger.what.clone());
    let plans: Vec<(u64, u64, u64)> = (0..n)
        .map(|_| (rng.below(6), rng.below(5), rng.next()))
        .collect();
    let outcomes = corral::scope(|s| {
        let mut group = TaskGroup::<usize, ChaosErr>::new(s);
        if let Some(k) = limit {
            group = group.limit(k).unwrap();
        }
        let group_token = group.token().clone();
        let mut ids: Vec<(TaskId, usize)> = Vec::new();
        for (id, &(act, form, r)) in plans.iter().enumerate() {
            if cancel_at == Some(id) {
                // A storm: cancel the group from another thread while spawning.
                let t = group_token.clone();
                s.spawn(move || t.cancel());
            }
            let guard = Guard::new(&ledger, id, false);
            let l = Arc::clone(&ledger);
            let task = move |token: &CancelToken| -> Result<usize, ChaosErr> {
                let _g = &guard;
                l.bump(id, Ev::Ran);
                match act {
                    0 => Err(ChaosErr {
                        id,
                        display_bomb: true,
                        drop_bomb: false,
                    }),
                    1 => panic!("{MARK}: group task #{id}"),
                    2 => {
                        token.wait_timeout(Duration::from_millis(2));
                        Ok(id)
                    }
                    3 => {
                        // Children created and waited on while the parent may be
                        // cancelled by a sibling's failure.
                        corral::scope(|inner| {
                            for k in 0..3u64 {
                                let child = token.child();
                                inner.spawn(move || {
                                    if mix(r ^ k) % 3 == 0 {
                                        child.cancel();
                                    }
                                    child.wait_timeout(Duration::from_millis(1));
                                    let was_cancelled = child.is_cancelled();
                                    let grandchild = child.child();
                                    assert!(!was_cancelled || grandchild.is_cancelled());
                                });
                            }
                        });
                        Ok(id)
                    }
                    _ => {
                        nap(r);
                        Ok(id)
                    }
                }
            };
            let spawned = match form {
                0 => Ok(group.spawn(task)),
                1 => group.try_spawn(task),
                2 => group.spawn_timeout(task, Duration::from_micros(r % 500)),
                3 => group.spawn_cancellable(task, &sh.storm_token()),
                _ => group.spawn_cancellable(task, &group_token),
            };
            match spawned {
                Ok(tid) => ids.push((tid, id)),
                Err(e) => {
                    ledger.bump(id, Ev::HandedBack);
                    drop(e.into_inner());
                }
            }
        }
        let outcomes = group.wait_all();
        (ids, outcomes)
    });
    let (ids, outcomes) = outcomes;
    let by_tid: BTreeMap<u64, usize> = ids.iter().map(|(t, id)| (t.index(), *id)).collect();
    ledger.check(outcomes.len() == ids.len(), || {
        format!(
            "wait_all returned {} outcomes for {} spawned tasks",
            outcomes.len(),
            ids.len()
        )
    });
    let mut seen = vec![0u32; n];
    for (tid, outcome) in outcomes {
        let Some(&id) = by_tid.get(&tid.index()) else {
            ledger.fail(format!("wait_all returned an unknown task id {tid:?}"));
        };
        seen[id] += 1;
        match outcome {
            Ok(v) => ledger.check(v == id, || format!("task #{id} returned {v}")),
            Err(GroupError::Failed(e)) => {
                ledger.check(e.id == id, || format!("task #{id} failed with #{}", e.id))
            }
            Err(GroupError::Panicked(p)) => {
                ledger.check(is_injected(&p), || format!("task #{id}: {p:?}"))
            }
            Err(other) => ledger.fail(format!("task #{id}: {other:?}")),
        }
    }
    let bad: Vec<usize> = (0..n)
        .filter(|&id| {
            let spawned = by_tid.values().any(|&v| v == id);
            let back = ledger.get(id, Ev::HandedBack);
            let ran = ledger.get(id, Ev::Ran);
            !(spawned && seen[id] == 1 && ran == 1 && back == 0
                || !spawned && seen[id] == 0 && ran == 0 && back == 1)
        })
        .collect();
    ledger.check(bad.is_empty(), || {
        format!(
            "tasks not accounted exactly once: {:?}",
            bad.iter()
                .map(|&id| (ledger.row(id), seen[id]))
                .collect::<Vec<_>>()
        )
    });
    ledger.expect_each(|_| true, Ev::Dropped, 1);

    // A scope whose thread panics: the others see the scope token and all join.
    let others = rng.range(0, 3);
    let result = corral::try_scope(|s| {
        for _ in 0..others {
            let token = s.token().clone();
            s.spawn(move || token.wait_timeout(Duration::from_secs(10)));
        }
        s.spawn(|| panic!("{MARK}: scope thread"));
    });
    let p = result.expect_err("the scope's panic comes back");
    ledger.check(is_injected(&p), || format!("try_scope returned {p:?}"));
}

// ---- semaphore ---------------------------------------------------------------------------

fn semaphore_round(rng: &mut Rng, sh: &Shared, round: u64) {
    let cap = rng.range(1, 6);
    let threads = rng.range(2, 4);
    let ops = rng.range(5, 40);
    let close_at = if rng.chance(25) {
        Some(rng.below((threads * ops) as u64) as usize)
    } else {
        None
    };
    let ledger = Ledger::new(
        format!("semaphore round {round} (capacity {cap}, {threads} threads x {ops}, close at {close_at:?})"),
        sh.seed,
        0,
    );
    sh.mon.note("semaphore", ledger.what.clone());
    let sem = Arc::new(Semaphore::new(cap));
    sh.mon.watch(format!("semaphore round {round}"), &sem, |s| {
        format!("{:?}", s.stats())
    });
    let capacity = AtomicUsize::new(cap);
    let held = AtomicUsize::new(0);
    let above = AtomicUsize::new(0);
    let done_ops = AtomicUsize::new(0);
    let mut rngs: Vec<Rng> = (0..threads).map(|_| rng.fork()).collect();
    corral::scope(|s| {
        for mut r in rngs.drain(..) {
            let (sem, capacity, held, above, done_ops, ledger) =
                (&sem, &capacity, &held, &above, &done_ops, &ledger);
            s.spawn(move || {
                for _ in 0..ops {
                    let k = done_ops.fetch_add(1, SeqCst);
                    if close_at == Some(k) {
                        sem.close();
                    }
                    if r.chance(5) {
                        let add = r.range(1, 2);
                        // Counted first, so that `capacity` is never below the truth.
                        capacity.fetch_add(add, SeqCst);
                        if sem.add_permits(add).is_err() {
                            capacity.fetch_sub(add, SeqCst);
                        }
                    }
                    let cap_now = capacity.load(SeqCst);
                    let want = if r.chance(5) {
                        cap_now + 5
                    } else {
                        r.range(1, cap_now.min(3))
                    };
                    let outcome: Result<Option<corral::semaphore::OwnedPermit>, String> = match r
                        .below(6)
                    {
                        0 => sem
                            .acquire_many_owned(want)
                            .map(Some)
                            .map_err(|e| format!("{e:?}")),
                        1 => match sem.try_acquire_many_owned(want) {
                            Ok(p) => Ok(Some(p)),
                            Err(TryAcquireError::NoPermits) => Ok(None),
                            Err(e) => Err(format!("{e:?}")),
                        },
                        2 => match sem
                            .acquire_many_owned_timeout(want, Duration::from_micros(r.below(300)))
                        {
                            Ok(p) => Ok(Some(p)),
                            Err(AcquireError::Timeout) => Ok(None),
                            Err(e) => Err(format!("{e:?}")),
                        },
                        _ => match sem.acquire_many_owned_cancellable(want, &sh.storm_token()) {
                            Ok(p) => Ok(Some(p)),
                            Err(AcquireError::Cancelled(_)) => Ok(None),
                            Err(e) => Err(format!("{e:?}")),
                        },
                    };
                    match outcome {
                        Ok(Some(permit)) => {
                            let now = held.fetch_add(want, SeqCst) + want;
                            let cap = capacity.load(SeqCst);
                            ledger.check(now <= cap, || {
                                format!("{now} permits held of capacity {cap}")
                            });
                            ledger.check(permit.num_permits() == want, || "permit count".into());
                            nap(r.next());
                            held.fetch_sub(want, SeqCst);
                            drop(permit);
                        }
                        Ok(None) => {}
                        Err(e) if e.starts_with("AboveCapacity") => {
                            ledger.check(
                                want > capacity.load(SeqCst) || e.contains("capacity"),
                                || e.clone(),
                            );
                            above.fetch_add(1, SeqCst);
                        }
                        Err(e) if e == "Closed" => {
                            ledger.check(sem.is_closed(), || "Closed while open".into())
                        }
                        Err(e) => ledger.fail(format!("unexpected acquire error {e}")),
                    }
                }
            });
        }
    });
    let stats = sem.stats();
    ledger.check(
        stats.in_use == 0
            && stats.waiting == 0
            && stats.available == stats.capacity
            && stats.capacity == capacity.load(SeqCst),
        || {
            format!(
                "after every permit came back: {stats:?} (capacity {})",
                capacity.load(SeqCst)
            )
        },
    );
    ledger.check(stats.above_capacity == above.load(SeqCst), || {
        format!(
            "stats.above_capacity {} but {} refusals seen ({stats:?})",
            stats.above_capacity,
            above.load(SeqCst)
        )
    });
}

// ---- rate limiters on a manual clock ----------------------------------------------------

fn rate_round(rng: &mut Rng, sh: &Shared, round: u64) {
    let per_sec = rng.range(1, 1000) as u32;
    let burst = rng.range(1, 10) as u32;
    let threads = rng.range(1, 3);
    let ops = rng.range(10, 60);
    let ledger = Ledger::new(
        format!("rate round {round} ({per_sec}/s, burst {burst}, {threads} threads x {ops})"),
        sh.seed,
        0,
    );
    sh.mon.note("rate", ledger.what.clone());
    let clock = ManualClock::new();
    let limiter = Arc::new(
        RateLimiter::per_second(per_sec)
            .burst(burst)
            .clock(clock.clone())
            .build()
            .unwrap(),
    );
    sh.mon.watch(format!("rate round {round}"), &limiter, |l| {
        format!("{:?}", l.stats())
    });
    let interval = limiter.interval();
    let admitted = AtomicU64::new(0);
    let t0 = clock.now();
    // The latest slot of a reservation that kept its cells.
    let horizon = Mutex::new(t0);
    // Held (shared) around a reserve-then-cancel, so the clock cannot pass the slot in
    // between (the cancel-after-the-slot case is its own arm below).
    let gate = std::sync::RwLock::new(());
    let workers_done = AtomicBool::new(false);
    let mut rngs: Vec<Rng> = (0..threads).map(|_| rng.fork()).collect();
    let mut tick_rng = rng.fork();
    corral::scope(|s| {
        let (clock_t, workers_done_t, gate_t) = (clock.clone(), &workers_done, &gate);
        s.spawn(move || {
            while !workers_done_t.load(SeqCst) {
                let _w = gate_t.write().unwrap();
                clock_t.advance(interval.mul_f64(tick_rng.below(3) as f64 * 0.5));
                drop(_w);
                std::thread::yield_now();
            }
        });
        let mut workers = Vec::new();
        for mut r in rngs.drain(..) {
            let (limiter, admitted, ledger, gate, horizon, clock) =
                (&limiter, &admitted, &ledger, &gate, &horizon, &clock);
            let keep = move |at: Instant, cells: u32| {
                let mut h = horizon.lock().unwrap();
                if at > *h {
                    *h = at;
                }
                admitted.fetch_add(u64::from(cells), SeqCst);
            };
            workers.push(s.spawn(move || {
                for _ in 0..ops {
                    match r.below(6) {
                        0 => {
                            if limiter.check().is_ok() {
                                admitted.fetch_add(1, SeqCst);
                            }
                        }
                        1 => {
                            let cells = r.range(1, burst as usize + 1) as u32;
                            match limiter.check_n(cells) {
                                Ok(()) => {
                                    admitted.fetch_add(u64::from(cells), SeqCst);
                                }
                                Err(corral::rate::CheckError::InsufficientCapacity(_)) => {
                                    ledger.check(cells > burst, || {
                                        format!("{cells} cells refused as above burst {burst}")
                                    });
                                }
                                Err(_) => {}
                            }
                        }
                        2 => match limiter.wait_timeout(interval.mul_f64(r.below(3) as f64)) {
                            Ok(()) => {
                                admitted.fetch_add(1, SeqCst);
                            }
                            Err(WaitError::Timeout(_)) => {}
                            Err(e) => ledger.fail(format!("wait_timeout: {e:?}")),
                        },
                        3 => {
                            let _r = gate.read().unwrap();
                            let res = limiter.reserve();
                            let at = res.ready_at();
                            if res.is_ready() || !res.cancel() {
                                keep(at, 1);
                            }
                        }
                        4 => {
                            // Cancel once the slot has passed: nothing may come back.
                            let res = limiter.reserve();
                            let at = res.ready_at();
                            while !res.is_ready() {
                                clock.advance(interval);
                            }
                            // Past the slot (x/time/rate's rule: a cancel at the very
                            // instant still gives back, one nanosecond later nothing does).
                            clock.advance(Duration::from_nanos(1));
                            ledger.check(!res.cancel(), || {
                                "a reservation cancelled after its slot gave cells back".into()
                            });
                            keep(at, 1);
                        }
                        _ => {
                            let res = limiter.reserve();
                            keep(res.ready_at(), 1);
                            drop(res); // dropping a reservation keeps its cells
                        }
                    }
                }
            }));
        }
        for w in workers {
            w.join().unwrap();
        }
        workers_done.store(true, SeqCst);
    });
    // GCRA: by instant `h`, at most `burst + (h - t0) / interval` cells conform.
    let end = clock.now().max(*horizon.lock().unwrap());
    let span = end - t0;
    let allowed = u64::from(burst) + (span.as_nanos() / interval.as_nanos().max(1)) as u64;
    let got = admitted.load(SeqCst);
    ledger.check(got <= allowed, || {
        format!(
            "admitted {got} cells, the limit allows {allowed} by {span:?} ({:?})",
            limiter.stats()
        )
    });

    // Keyed: one bound per key, with room for every key.
    let keys = rng.range(1, 6) as u64;
    let keyed = Arc::new(
        KeyedRateLimiter::<u64>::per_second(per_sec)
            .burst(burst)
            .max_keys(keys as usize + rng.range(0, 4))
            .clock(clock.clone())
            .build()
            .unwrap(),
    );
    sh.mon.watch(format!("keyed round {round}"), &keyed, |l| {
        format!("{:?}", l.stats())
    });
    let base = clock.elapsed();
    let per_key: Vec<AtomicU64> = (0..keys).map(|_| AtomicU64::new(0)).collect();
    let mut rngs: Vec<Rng> = (0..threads).map(|_| rng.fork()).collect();
    corral::scope(|s| {
        for mut r in rngs.drain(..) {
            let (keyed, per_key, clock) = (&keyed, &per_key, &clock);
            s.spawn(move || {
                for _ in 0..ops {
                    let key = r.below(keys);
                    if keyed.check_key(&key).is_ok() {
                        per_key[key as usize].fetch_add(1, SeqCst);
                    }
                    if r.chance(10) {
                        clock.advance(interval);
                    }
                    if r.chance(3) {
                        keyed.retain_recent();
                    }
                }
            });
        }
    });
    let elapsed = clock.elapsed() - base;
    let stats = keyed.stats();
    if stats.evicted_active == 0 {
        let allowed = u64::from(burst) + (elapsed.as_nanos() / interval.as_nanos().max(1)) as u64;
        for (key, count) in per_key.iter().enumerate() {
            let got = count.load(SeqCst);
            ledger.check(got <= allowed, || {
                format!("key {key} admitted {got}, its limit allows {allowed} in {elapsed:?} ({stats:?})")
            });
        }
    }

    // Keyed, crowded: far more keys than room; the bound on remembered keys holds.
    let max_keys = rng.range(1, 4);
    let crowded = Arc::new(
        KeyedRateLimiter::<u64>::per_second(per_sec)
            .burst(burst)
            .max_keys(max_keys)
            .clock(clock.clone())
            .build()
            .unwrap(),
    );
    sh.mon
        .watch(format!("crowded keyed round {round}"), &crowded, |l| {
            format!("{:?}", l.stats())
        });
    let mut rngs: Vec<Rng> = (0..threads).map(|_| rng.fork()).collect();
    corral::scope(|s| {
        for mut r in rngs.drain(..) {
            let (crowded, clock, ledger) = (&crowded, &clock, &ledger);
            s.spawn(move || {
                for _ in 0..ops {
                    let key = r.below(50);
                    let _ = crowded.check_key(&key);
                    if r.chance(5) {
                        clock.advance(interval);
                    }
                    if r.chance(3) {
                        crowded.retain_recent();
                    }
                    let len = crowded.len();
                    ledger.check(len <= max_keys, || {
                        format!(
                            "{len} keys remembered, max_keys {max_keys} ({:?})",
                            crowded.stats()
                        )
                    });
                }
            });
        }
    });
    let stats = crowded.stats();
    ledger.check(stats.keys <= max_keys && crowded.len() <= max_keys, || {
        format!(
            "{} keys remembered, max_keys {max_keys} ({stats:?})",
            crowded.len()
        )
    });
}

// ---- circuit breaker ---------------------------------------------------------------------

fn breaker_round(rng: &mut Rng, sh: &Shared, round: u64) {
    let threads = rng.range(1, 3);
    let ops = rng.range(10, 80);
    let consecutive = rng.range(1, 5) as u32;
    let half_open = rng.range(1, 3) as u32;
    let panicky = rng.chance(30);
    let ledger = Ledger::new(
        format!("breaker round {round} ({threads} threads x {ops}, {consecutive} consecutive, {half_open} trials, panicking callback {panicky})"),
        sh.seed,
        0,
    );
    sh.mon.note("breaker", ledger.what.clone());
    let clock = ManualClock::new();
    let trips = Arc::new(AtomicU64::new(0));
    let changes = Arc::new(AtomicU64::new(0));
    let (t, c) = (Arc::clone(&trips), Arc::clone(&changes));
    // The callback reads the breaker it belongs to (documented as allowed).
    let me: Arc<std::sync::OnceLock<Weak<CircuitBreaker>>> = Arc::default();
    let me_cb = Arc::clone(&me);
    let breaker = Arc::new(
        CircuitBreaker::builder()
            .consecutive_failures(consecutive)
            .half_open_calls(half_open)
            .open_for(Duration::from_millis(10))
            .clock(clock.clone())
            .on_state_change(move |_from, to| {
                let k = c.fetch_add(1, SeqCst);
                if to == State::Open {
                    t.fetch_add(1, SeqCst);
                }
                if let Some(b) = me_cb.get().and_then(Weak::upgrade) {
                    let _ = (b.state(), b.stats());
                }
                if panicky && k % 3 == 0 && !std::thread::panicking() {
                    panic!("{MARK}: on_state_change");
                }
            })
            .build()
            .unwrap(),
    );
    let _ = me.set(Arc::downgrade(&breaker));
    sh.mon
        .watch(format!("breaker round {round}"), &breaker, |b| {
            format!("{:?}", b.stats())
        });
    let ok = AtomicU64::new(0);
    let failed = AtomicU64::new(0);
    let rejected = AtomicU64::new(0);
    let escaped = AtomicU64::new(0);
    let mut rngs: Vec<Rng> = (0..threads).map(|_| rng.fork()).collect();
    corral::scope(|s| {
        for mut r in rngs.drain(..) {
            let (breaker, ok, failed, rejected, escaped, clock) =
                (&breaker, &ok, &failed, &rejected, &escaped, &clock);
            s.spawn(move || {
                for _ in 0..ops {
                    if r.chance(15) {
                        clock.advance(Duration::from_millis(r.below(12)));
                    }
                    let what = r.below(8);
                    let ran = Cell::new(false);
                    let result = catch_unwind(AssertUnwindSafe(|| match what {
                        0..=4 => breaker
                            .call(|| {
                                ran.set(true);
                                match what {
                                    0 | 1 => Ok(1u32),
                                    2 | 3 => Err("down"),
                                    _ => panic!("{MARK}: breaker call"),
                                }
                            })
                            .map(|_| ()),
                        _ => match breaker.try_acquire() {
                            Ok(guard) => {
                                ran.set(true);
                                match what {
                                    5 => guard.success(),
                                    6 => guard.failure(),
                                    _ => drop(guard), // counts as a failure
                                }
                                if what == 5 {
                                    Ok(())
                                } else {
                                    Err(BreakerError::Inner("down"))
                                }
                            }
                            Err(refusal) => Err(refusal.map_inner(|never| match never {})),
                        },
                    }));
                    match result {
                        Ok(Ok(())) => {
                            ok.fetch_add(1, SeqCst);
                        }
                        Ok(Err(BreakerError::Inner(_))) => {
                            failed.fetch_add(1, SeqCst);
                        }
                        Ok(Err(_refused)) => {
                            rejected.fetch_add(1, SeqCst);
                        }
                        Err(payload) => {
                            let msg = message(&*payload).unwrap_or_default();
                            if msg.contains("breaker call") {
                                failed.fetch_add(1, SeqCst); // a panic counts as a failure
                            } else if msg.contains("on_state_change") {
                                // The callback's panic reached the caller: whether this
                                // call was recorded is not known here.
                                escaped.fetch_add(1, SeqCst);
                            } else {
                                std::panic::resume_unwind(payload);
                            }
                        }
                    }
                    let _ = ran.get();
                }
            });
        }
    });
    let stats = breaker.stats();
    let (ok, failed, rejected, escaped) = (
        ok.into_inner(),
        failed.into_inner(),
        rejected.into_inner(),
        escaped.into_inner(),
    );
    let recorded = stats.successes + stats.failures + stats.rejected;
    ledger.check(recorded >= ok + failed + rejected && recorded <= ok + failed + rejected + escaped, || {
        format!("breaker counted {stats:?}; the callers saw {ok} ok, {failed} failed, {rejected} refused, {escaped} callback panics")
    });
    if escaped == 0 {
        ledger.check(stats.successes == ok && stats.failures == failed && stats.rejected == rejected, || {
            format!("breaker counted {stats:?}; the callers saw {ok} ok, {failed} failed, {rejected} refused")
        });
    }
    ledger.check(stats.trips == trips.load(SeqCst), || {
        format!(
            "stats.trips {} but on_state_change saw {} moves to Open",
            stats.trips,
            trips.load(SeqCst)
        )
    });
    ledger.check(stats.half_open_in_flight == 0, || {
        format!("trials still in flight: {stats:?}")
    });
}

// ---- supervisor --------------------------------------------------------------------------

#[derive(Default)]
struct ChildTally {
    runs: AtomicU64,
    ok: AtomicU64,
    err: AtomicU64,
    panicked: AtomicU64,
}

fn supervisor_round(rng: &mut Rng, sh: &Shared, round: u64) {
    let children = rng.range(1, 4);
    let strategy = rng.pick(&[
        Strategy::OneForOne,
        Strategy::OneForAll,
        Strategy::RestForOne,
    ]);
    let max_restarts = rng.range(0, 12);
    let ending = rng.below(4);
    let ledger = Ledger::new(
        format!("supervisor round {round} ({children} children, {strategy:?}, intensity {max_restarts}, ending {ending})"),
        sh.seed,
        0,
    );
    sh.mon.note("supervisor", ledger.what.clone());
    let tallies: Arc<Vec<ChildTally>> =
        Arc::new((0..children).map(|_| ChildTally::default()).collect());
    let mut builder = Supervisor::builder()
        .strategy(strategy)
        .intensity(max_restarts, Duration::from_secs(3600))
        .backoff(Duration::ZERO, Duration::ZERO);
    let mut restarts = Vec::new();
    for i in 0..children {
        let restart = rng.pick(&[Restart::Permanent, Restart::Transient, Restart::Temporary]);
        restarts.push(restart);
        let seed = rng.next();
        let tallies = Arc::clone(&tallies);
        builder = builder.child(&format!("c{i}"), restart, move |token: &CancelToken| {
            let t = &tallies[i];
            let k = t.runs.fetch_add(1, SeqCst);
            match mix(seed ^ k) % 7 {
                0 => {
                    let display_bomb = k % 2 == 0;
                    let drop_bomb = k % 3 == 1;
                    // The supervisor keeps the error object whole (never formats it):
                    // it comes back in the report, whose owner drops it.
                    t.err.fetch_add(1, SeqCst);
                    Err(ChaosErr {
                        id: i,
                        display_bomb,
                        drop_bomb,
                    })
                }
                1 => {
                    t.panicked.fetch_add(1, SeqCst);
                    panic!("{MARK}: child c{i}");
                }
                2 => {
                    t.ok.fetch_add(1, SeqCst);
                    Ok(())
                }
                5 => {
                    // A child that runs a pipeline until it is told to stop.
                    let stop = token.child_with_timeout(Duration::from_millis(20));
                    let result = Pipeline::from_iter(0u64..)
                        .stage("work", 2, |x| x.wrapping_mul(3))
                        .capacity(4)
                        .run_cancellable(|_| {}, &stop);
                    assert!(
                        matches!(result, Err(PipelineError::Cancelled { .. })),
                        "an endless pipeline ended without its token: {result:?}"
                    );
                    t.ok.fetch_add(1, SeqCst);
                    Ok(())
                }
                6 => {
                    // A child that owns a pool, dropped (joined) when it returns.
                    let pool = WorkerPool::builder()
                        .workers(2)
                        .thread_name("chaos-sup-pool")
                        .build()
                        .unwrap();
                    for _ in 0..4 {
                        let stop = token.clone();
                        let _ = pool.try_execute(move || {
                            stop.wait_timeout(Duration::from_millis(5));
                        });
                    }
                    token.wait_timeout(Duration::from_millis(10));
                    t.ok.fetch_add(1, SeqCst);
                    Ok(())
                }
                _ => {
                    token.wait_timeout(Duration::from_millis(20));
                    t.ok.fetch_add(1, SeqCst);
                    Ok(())
                }
            }
        });
    }
    let supervisor = builder.start().unwrap();
    let token = supervisor.token().clone();
    let report = corral::scope(|s| {
        s.spawn(move || match ending {
            0 => Some(supervisor.stop()),
            1 => {
                let mut sup = supervisor;
                loop {
                    match sup.stop_timeout(Duration::from_micros(300)) {
                        Ok(report) => break Some(report),
                        Err(back) => sup = back,
                    }
                }
            }
            2 => match supervisor.join_timeout(Duration::from_millis(5)) {
                Ok(report) => Some(report),
                Err(sup) => Some(sup.stop()),
            },
            _ => {
                drop(supervisor);
                None
            }
        })
        .join()
        .unwrap()
    });
    ledger.check(
        token.is_cancelled() || report.as_ref().is_some_and(|r| !r.reason.is_stopped()),
        || "the supervisor token is not cancelled after stop".into(),
    );
    let Some(report) = report else { return };
    sh.mon
        .note("supervisor", format!("{}: {report:?}", ledger.what));
    for (i, t) in tallies.iter().enumerate() {
        let name = format!("c{i}");
        // The exit that broke the restart intensity is in the reason, not the record.
        let breaking = match &report.reason {
            corral::supervisor::StopReason::IntensityExceeded { child, last_error } => {
                Some((child, last_error))
            }
            _ => None,
        };
        let exits: Vec<&Exit> = report
            .exits
            .iter()
            .map(|(n, e)| (n, e))
            .chain(breaking)
            .filter(|(n, _)| **n == name)
            .map(|(_, e)| e)
            .collect();
        let finished = exits.iter().filter(|e| matches!(e, Exit::Finished)).count() as u64;
        let failed = exits
            .iter()
            .filter(|e| matches!(e, Exit::Failed(_)))
            .count() as u64;
        let panicked = exits
            .iter()
            .filter(|e| matches!(e, Exit::Panicked(p) if is_injected(p)))
            .count() as u64;
        let runs = t.runs.load(SeqCst);
        ledger.check(exits.len() as u64 == runs, || {
            format!(
                "child {name} ran {runs} times but the report has {} exits: {report:?}",
                exits.len()
            )
        });
        ledger.check(
            (finished, failed, panicked) == (t.ok.load(SeqCst), t.err.load(SeqCst), t.panicked.load(SeqCst)),
            || format!("child {name}: report exits (ok {finished}, err {failed}, panic {panicked}) vs runs (ok {}, err {}, panic {}): {report:?}", t.ok.load(SeqCst), t.err.load(SeqCst), t.panicked.load(SeqCst)),
        );
        let restarted = report
            .restarts
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, k)| *k as u64);
        ledger.check(restarted == runs.saturating_sub(1), || {
            format!("child {name} ran {runs} times but the report counts {restarted} restarts: {report:?}")
        });
    }
    // The children's errors are back in the caller's hands; some panic on drop.
    quietly(move || drop(report));
}

// ---- pipeline ----------------------------------------------------------------------------

fn pipeline_round(rng: &mut Rng, sh: &Shared, round: u64) {
    let n = rng.range(0, 120);
    let stages = rng.range(1, 3);
    let overflow = rng.pick(&[
        Overflow::Block,
        Overflow::Block,
        Overflow::DropOldest,
        Overflow::DropNewest,
    ]);
    let capacity = rng.range(1, 8);
    let batch = if rng.chance(25) {
        rng.range(1, capacity)
    } else {
        1
    };
    let ordered = rng.chance(40);
    let with_on_drop = rng.chance(70);
    let terminal = rng.below(5);
    let slow_sink = rng.chance(30);
    let ledger = Ledger::new(
        format!("pipeline round {round} ({n} items, {stages} stages, {overflow:?}, capacity {capacity}, batch {batch}, ordered {ordered}, on_drop {with_on_drop}, terminal {terminal})"),
        sh.seed,
        n,
    );
    sh.mon.note("pipeline", ledger.what.clone());
    // Per item and stage: 0 pass, 1 err, 2 panic, 3 slow (mostly pass).
    let acts: Vec<Vec<u64>> = (0..n)
        .map(|_| {
            (0..=stages)
                .map(|_| match rng.below(100) {
                    0 => 1,
                    1 => 2,
                    2..=20 => 3,
                    _ => 0,
                })
                .collect()
        })
        .collect();
    let bombs: Vec<bool> = (0..n).map(|_| rng.chance(10)).collect();
    let drop_panic_at = if rng.chance(20) {
        Some(rng.below(8))
    } else {
        None
    };
    let on_drop_calls = AtomicU64::new(0);
    let last_delivered = Mutex::new(None::<usize>);
    let token = sh.storm_token();

    let l = Arc::clone(&ledger);
    let bombs_ref = &bombs;
    let source = (0..n).map(move |id| {
        l.bump(id, Ev::Created);
        Item {
            guard: Guard::new(&l, id, bombs_ref[id]),
        }
    });
    let on_drop = |item: Item| {
        ledger.bump(item.id(), Ev::OnDrop);
        let k = on_drop_calls.fetch_add(1, SeqCst);
        item.defuse();
        if drop_panic_at == Some(k) {
            panic!("{MARK}: pipeline on_drop");
        }
    };
    let mut p = Pipeline::from_iter(source)
        .capacity(capacity)
        .batch(batch)
        .overflow(overflow);
    if with_on_drop {
        p = p.on_drop(on_drop);
    }
    for stage in 0..stages {
        let (ledger, acts) = (&ledger, &acts);
        p = p.try_stage(
            format!("s{stage}"),
            1 + (stage + round as usize) % 3,
            move |item: Item| {
                let id = item.id();
                match acts[id][stage] {
                    1 => {
                        ledger.bump(id, Ev::Failed);
                        item.defuse();
                        Err(ChaosErr {
                            id,
                            display_bomb: true,
                            drop_bomb: true,
                        })
                    }
                    2 => {
                        ledger.bump(id, Ev::Failed);
                        item.defuse();
                        panic!("{MARK}: stage s{stage} on #{id}");
                    }
                    3 => {
                        nap(id as u64);
                        Ok(item)
                    }
                    _ => Ok(item),
                }
            },
        );
        if with_on_drop {
            p = p.on_drop(on_drop);
        }
        if rng.chance(20) {
            p = p.buffer(rng.range(batch, 2 * capacity));
        }
    }
    if ordered {
        p = match rng.below(3) {
            0 => p.ordered_window(rng.range(1, 16)),
            _ => p.ordered(),
        };
    }
    let deliver = |item: Item| {
        let id = item.id();
        ledger.bump(id, Ev::Delivered);
        if ordered {
            let mut last = last_delivered.lock().unwrap();
            let before = *last;
            ledger.check(before.map_or(true, |b| b < id), || {
                format!("ordered run delivered #{id} after #{before:?}")
            });
            *last = Some(id);
        }
        if slow_sink {
            nap(id as u64);
        }
        item.defuse();
    };
    let try_sink = |item: Item| -> Result<(), ChaosErr> {
        let id = item.id();
        if acts[id][stages] == 1 {
            ledger.bump(id, Ev::Failed);
            item.defuse();
            return Err(ChaosErr {
                id,
                display_bomb: true,
                drop_bomb: true,
            });
        }
        deliver(item);
        Ok(())
    };
    let result = match terminal {
        0 => p.try_for_each(try_sink),
        1 => p.run_cancellable(deliver, &token),
        2 => p.run_timeout(deliver, Duration::from_millis(rng.below(5))),
        3 => p.collect().map(|(items, report)| {
            items.into_iter().for_each(deliver);
            report
        }),
        _ => p.run(deliver),
    };
    let mut result = result;
    if let Err(PipelineError::Failed { error, .. }) = &mut result {
        if let Some(e) = error.downcast_mut::<ChaosErr>() {
            e.drop_bomb = false;
        }
    }
    let report = match &result {
        Ok(report) => report.clone(),
        Err(PipelineError::Config(e)) => ledger.fail(format!("config error: {e}")),
        Err(e) => {
            if let PipelineError::Panicked { panic, .. } = e {
                ledger.check(is_injected(panic), || {
                    format!("unexpected panic: {panic:?}")
                });
            }
            if let PipelineError::Failed { error, .. } = e {
                let err = error.downcast_ref::<ChaosErr>();
                ledger.check(
                    err.is_some_and(|e| ledger.get(e.id, Ev::Failed) == 1),
                    || format!("Failed with an error of no failed item: {error:?}"),
                );
            }
            e.report().expect("a run that started has a report").clone()
        }
    };
    sh.mon
        .note("pipeline", format!("{}: checking {report:?}", ledger.what));
    let outcome = match &result {
        Ok(_) => "Ok".to_owned(),
        Err(e) => format!("{e:?}").chars().take(200).collect(),
    };
    let created = ledger.ids(|id| ledger.get(id, Ev::Created) == 1).len() as u64;
    ledger.expect_each(|id| ledger.get(id, Ev::Created) == 1, Ev::Dropped, 1);
    ledger.expect_each(|id| ledger.get(id, Ev::Created) == 0, Ev::Dropped, 0);
    let fates = |id: usize| {
        ledger.get(id, Ev::Delivered) + ledger.get(id, Ev::OnDrop) + ledger.get(id, Ev::Failed)
    };
    let multi = ledger.ids(|id| fates(id) > 1);
    ledger.check(multi.is_empty(), || {
        format!(
            "items with two fates: {:?}",
            multi.iter().map(|&id| ledger.row(id)).collect::<Vec<_>>()
        )
    });
    let source = &report.stages[0];
    let sink_stats = report.stages.last().unwrap();
    ledger.check(source.items_in == created, || {
        format!(
            "the source pulled {created} items, the report says {} ({outcome}): {report:?}",
            source.items_in
        )
    });
    let delivered = ledger.sum(Ev::Delivered);
    // `collect` that fails drops what it had collected: those items reached the sink
    // (counted in its `items_out`) but never the caller.
    let collected_then_dropped = if terminal == 3 && result.is_err() {
        sink_stats.items_out
    } else {
        0
    };
    // `collect` hands items over after the run: the sink's count is of collected items.
    ledger.check(
        sink_stats.items_out == delivered + collected_then_dropped,
        || {
            format!(
                "the sink got {delivered} items, the report says {} ({outcome}): {report:?}",
                sink_stats.items_out
            )
        },
    );
    let failed: u64 = report.stages.iter().map(|s| s.failed).sum();
    ledger.check(failed == ledger.sum(Ev::Failed), || {
        format!(
            "{} items failed, the report says {failed} ({outcome}): {report:?}",
            ledger.sum(Ev::Failed)
        )
    });
    let unmarked = ledger.ids(|id| ledger.get(id, Ev::Created) == 1 && fates(id) == 0);
    let on_dropped = ledger.sum(Ev::OnDrop);
    if with_on_drop {
        ledger.check(on_dropped == report.dropped(), || {
            format!("on_drop got {on_dropped} items, the report says {} dropped ({outcome}): {report:?}", report.dropped())
        });
    }
    let silent_drops = if with_on_drop { 0 } else { report.dropped() };
    ledger.check(unmarked.len() as u64 == report.not_processed() + silent_drops + collected_then_dropped, || {
        format!(
            "{} items vanished without a fate ({:?}); the report says {} not processed + {silent_drops} dropped without a callback ({outcome}): {report:?}",
            unmarked.len(),
            unmarked.iter().take(10).collect::<Vec<_>>(),
            report.not_processed()
        )
    });
    if result.is_ok() {
        ledger.check(
            report.not_processed() == 0 && ledger.sum(Ev::Failed) == 0,
            || format!("an Ok run left work undone: {report:?}"),
        );
    }
}

// ---- cancellation trees ------------------------------------------------------------------

fn token_round(rng: &mut Rng, sh: &Shared, round: u64) {
    let callbacks = rng.range(0, 40);
    let storm_root = rng.chance(50);
    let threads = rng.range(2, 4);
    let ops = rng.range(10, 60);
    let ledger = Ledger::new(
        format!("token round {round} ({callbacks} callbacks, {threads} threads x {ops}, storm root {storm_root})"),
        sh.seed,
        callbacks,
    );
    sh.mon.note("tokens", ledger.what.clone());
    let root = if storm_root {
        sh.storm_token()
    } else {
        CancelToken::new()
    };
    let nodes: Mutex<Vec<CancelToken>> = Mutex::new(vec![root.clone()]);
    let next_cb = AtomicUsize::new(0);
    let kept: Mutex<Vec<(usize, corral::cancel::OnCancel)>> = Mutex::new(Vec::new());
    let mut rngs: Vec<Rng> = (0..threads).map(|_| rng.fork()).collect();
    corral::scope(|s| {
        for mut r in rngs.drain(..) {
            let (nodes, next_cb, kept, ledger) = (&nodes, &next_cb, &kept, &ledger);
            s.spawn(move || {
                for _ in 0..ops {
                    let node = {
                        let nodes = nodes.lock().unwrap();
                        nodes[r.below(nodes.len() as u64) as usize].clone()
                    };
                    match r.below(7) {
                        0 | 1 => {
                            let was_cancelled = node.is_cancelled();
                            let child = if r.chance(30) {
                                node.child_with_timeout(Duration::from_micros(r.below(2000)))
                            } else {
                                node.child()
                            };
                            // Children of a cancelled parent are born cancelled.
                            ledger.check(!was_cancelled || child.is_cancelled(), || {
                                "a child of a cancelled token is not cancelled".into()
                            });
                            nodes.lock().unwrap().push(child);
                        }
                        2 => {
                            let id = next_cb.fetch_add(1, SeqCst);
                            if id < ledger.len() {
                                let guard = Guard::new(ledger, id, false);
                                let l = Arc::clone(ledger);
                                let bomb = r.chance(20);
                                // Re-entrant: the callback cancels another token of
                                // the tree and makes a child of its own.
                                let me = node.clone();
                                let other = if r.chance(30) {
                                    let nodes = nodes.lock().unwrap();
                                    Some(nodes[r.below(nodes.len() as u64) as usize].clone())
                                } else {
                                    None
                                };
                                let born_cancelled = Arc::clone(ledger);
                                let reg = quietly(|| {
                                    node.on_cancel(move || {
                                        let _g = &guard;
                                        l.bump(id, Ev::Fired);
                                        if !me.child().is_cancelled() {
                                            born_cancelled.bump(id, Ev::Failed);
                                        }
                                        if let Some(other) = other {
                                            other.cancel();
                                        }
                                        if bomb {
                                            panic!("{MARK}: on_cancel #{id}");
                                        }
                                    })
                                });
                                match reg {
                                    Some(reg) if r.chance(70) => {
                                        kept.lock().unwrap().push((id, reg))
                                    }
                                    Some(reg) => drop(reg),
                                    // It ran at once (the token was cancelled) and panicked.
                                    None => {}
                                }
                            }
                        }
                        3 => {
                            quietly(|| node.cancel());
                            ledger.check(node.is_cancelled(), || "cancel did not cancel".into());
                        }
                        4 => {
                            node.wait_timeout(Duration::from_micros(r.below(500)));
                        }
                        5 => {
                            let guard = node.child().cancel_on_drop();
                            if r.chance(50) {
                                let _ = guard.disarm();
                            }
                        }
                        _ => {
                            // Create and wait on children while others cancel parents.
                            let child = node.child();
                            let was_cancelled = child.is_cancelled();
                            let waiter = child.child();
                            waiter.wait_timeout(Duration::from_micros(200));
                            ledger.check(!was_cancelled || waiter.is_cancelled(), || {
                                "a grandchild missed its parent's cancel".into()
                            });
                        }
                    }
                }
            });
        }
    });
    quietly(|| root.cancel());
    // `cancel()` returns once every descendant reads as cancelled, even while the
    // storm's thread is cancelling an ancestor at the same moment.
    for (i, node) in nodes.lock().unwrap().iter().enumerate() {
        ledger.check(node.is_cancelled(), || {
            format!(
                "node {i} ({node:?}), a descendant of the cancelled root ({root:?}), is not cancelled"
            )
        });
    }
    if storm_root {
        // A callback runs on the thread that flagged its token: one the storm's
        // thread flagged may still be about to run. Wait for it (bounded).
        let deadline = Instant::now() + Duration::from_secs(10);
        let kept_ids: Vec<usize> = kept.lock().unwrap().iter().map(|(id, _)| *id).collect();
        while kept_ids.iter().any(|&id| ledger.get(id, Ev::Fired) == 0) && Instant::now() < deadline
        {
            std::thread::yield_now();
        }
    }
    let made = next_cb.load(SeqCst).min(ledger.len());
    let kept_ids: Vec<usize> = kept.lock().unwrap().iter().map(|(id, _)| *id).collect();
    ledger.expect_each(|id| kept_ids.contains(&id), Ev::Fired, 1);
    // A callback runs once its token reads as cancelled: children made then are too.
    ledger.expect_each(|_| true, Ev::Failed, 0);
    let twice = ledger.ids(|id| ledger.get(id, Ev::Fired) > 1);
    ledger.check(twice.is_empty(), || {
        format!("callbacks fired twice: {twice:?}")
    });
    drop(kept.into_inner().unwrap());
    drop(nodes.into_inner().unwrap());
    drop(root);
    if storm_root {
        // A callback fired by the storm's thread may still be running (its captures
        // are dropped when it returns).
        let deadline = Instant::now() + Duration::from_secs(10);
        while (0..made).any(|id| ledger.get(id, Ev::Dropped) == 0) && Instant::now() < deadline {
            std::thread::yield_now();
        }
    }
    ledger.expect_each(|id| id < made, Ev::Dropped, 1);
    ledger.expect_each(|id| id >= made, Ev::Dropped, 0);

    if rng.chance(10) {
        let root = CancelToken::new();
        let mut tip = root.clone();
        for _ in 0..200_000 {
            tip = tip.child();
        }
        if rng.chance(50) {
            root.cancel();
        }
        drop(root);
        drop(tip);
    }
}

// ---- the storm, the stack, and the body --------------------------------------------------

fn storm(rng: &mut Rng, sh: &Shared) {
    if std::env::var_os("CORRAL_CHAOS_SELFTEST_HANG").is_some() {
        // Shows the watchdog at work: this actor never returns.
        sh.mon.note("storm", "self-test: hanging on purpose");
        loop {
            std::thread::park();
        }
    }
    while sh.running() {
        {
            let mut storm = sh.storm.lock().unwrap();
            if storm.len() < 6 {
                storm.push(sh.storm_root.child());
            } else {
                let at = rng.below(storm.len() as u64) as usize;
                let victim = storm.remove(at);
                drop(storm);
                quietly(|| victim.cancel());
            }
        }
        work_for(Duration::from_micros(rng.below(400)));
    }
}

fn resilience_round(rng: &mut Rng, sh: &Shared, round: u64) {
    sh.mon.note("resilience", format!("round {round}"));
    for _ in 0..rng.range(1, 30) {
        let key = rng.next();
        if rng.chance(50) {
            sh.resilient_call(key, Some(&sh.storm_token()));
        } else {
            sh.resilient_call(key, None);
        }
    }
}

type Round = fn(&mut Rng, &Shared, u64);

const ACTORS: &[(&str, Round)] = &[
    ("pool", pool_round),
    ("map", map_round),
    ("group", group_round),
    ("semaphore", semaphore_round),
    ("rate", rate_round),
    ("breaker", breaker_round),
    ("supervisor", supervisor_round),
    ("pipeline", pipeline_round),
    ("tokens", token_round),
    ("resilience", resilience_round),
];

fn body(seed: u64, secs: f64, mon: Arc<Monitor>) -> String {
    let bulkhead = Arc::new(Semaphore::new(3));
    let limiter = Arc::new(RateLimiter::per_second(50_000).burst(200).build().unwrap());
    let breaker = Arc::new(
        CircuitBreaker::builder()
            .consecutive_failures(4)
            .open_for(Duration::from_millis(2))
            .build()
            .unwrap(),
    );
    let resilience = Arc::new(
        Resilience::builder()
            .bulkhead(Arc::clone(&bulkhead))
            .rate_limiter(Arc::clone(&limiter))
            .breaker(Arc::clone(&breaker))
            .timeout(Duration::from_millis(50))
            .retries(2)
            .backoff(Duration::from_micros(10), Duration::from_micros(100))
            .build()
            .unwrap(),
    );
    mon.watch("shared bulkhead", &bulkhead, |s| format!("{:?}", s.stats()));
    mon.watch("shared limiter", &limiter, |l| format!("{:?}", l.stats()));
    mon.watch("shared breaker", &breaker, |b| format!("{:?}", b.stats()));
    mon.watch("shared resilience", &resilience, |r| {
        format!("{:?}", r.stats())
    });
    let shared: &'static Shared = Box::leak(Box::new(Shared {
        seed,
        end: Instant::now() + Duration::from_secs_f64(secs),
        mon: Arc::clone(&mon),
        storm_root: CancelToken::new(),
        storm: Mutex::new(Vec::new()),
        storm_pick: AtomicU64::new(seed),
        bulkhead: Arc::clone(&bulkhead),
        resilience,
        res_tally: ResTally::default(),
    }));
    if SHARED.set(shared).is_err() {
        panic!("one chaos body per process");
    }
    let sh = shared;
    let mut rng = Rng::new(seed);
    let rounds: Vec<AtomicU64> = ACTORS.iter().map(|_| AtomicU64::new(0)).collect();
    corral::scope(|s| {
        let mut storm_rng = rng.fork();
        s.spawn_named("chaos-storm", move || storm(&mut storm_rng, sh));
        let only = std::env::var("CORRAL_CHAOS_ONLY").unwrap_or_default();
        for (i, (name, round_fn)) in ACTORS.iter().enumerate() {
            let mut r = rng.fork();
            if !only.is_empty() && !only.split(',').any(|o| o == *name) {
                continue;
            }
            let rounds = &rounds;
            s.spawn_named(name, move || {
                let mut round = 0;
                while sh.running() {
                    round_fn(&mut r, sh, round);
                    if *name == "pool" && r.chance(20) {
                        last_arc_in_own_task_round(&mut r, sh, round);
                    }
                    round += 1;
                    rounds[i].store(round, SeqCst);
                }
            });
        }
    });
    // Every actor is done: the shared stack's books must balance exactly.
    let stats = sh.resilience.stats();
    let t = &sh.res_tally;
    let mine = (
        t.calls.load(SeqCst),
        t.succeeded.load(SeqCst),
        t.failed.load(SeqCst),
        t.refused.load(SeqCst),
        t.retries.load(SeqCst),
    );
    assert_eq!(
        (stats.calls, stats.succeeded, stats.failed, stats.refused, stats.retries),
        mine,
        "chaos seed {seed}: the resilience stack's counters (calls, ok, failed, refused, retries) differ from the callers' tallies"
    );
    let b = sh.bulkhead.stats();
    assert!(
        b.in_use == 0 && b.waiting == 0 && b.available == 3,
        "chaos seed {seed}: the shared bulkhead did not get every permit back: {b:?}"
    );
    sh.storm_root.cancel();
    sh.storm.lock().unwrap().clear();
    let summary: Vec<String> = ACTORS
        .iter()
        .zip(&rounds)
        .map(|((name, _), r)| format!("{name} {}", r.load(SeqCst)))
        .collect();
    format!(
        "rounds: {}; resilience calls {}",
        summary.join(", "),
        mine.0
    )
}

#[test]
fn chaos() {
    let seed = std::env::var("CORRAL_CHAOS_SEED")
        .ok()
        .map(|s| {
            s.trim()
                .parse::<u64>()
                .expect("CORRAL_CHAOS_SEED must be a u64")
        })
        .unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            mix(nanos ^ u64::from(std::process::id()))
        });
    let secs = std::env::var("CORRAL_CHAOS_SECS")
        .ok()
        .map(|s| {
            s.trim()
                .parse::<f64>()
                .expect("CORRAL_CHAOS_SECS must be a number of seconds")
        })
        .unwrap_or(2.0)
        .clamp(0.0, 24.0 * 3600.0);
    eprintln!("chaos seed = {seed} (replay: CORRAL_CHAOS_SEED={seed})");

    // Injected panics are expected by the thousand: keep them off stderr.
    let default_hook = std::panic::take_hook();
    let verbose = std::env::var_os("CORRAL_CHAOS_VERBOSE").is_some();
    std::panic::set_hook(Box::new(move |info| {
        if !verbose && message(info.payload()).is_some_and(|m| m.starts_with(MARK)) {
            return;
        }
        default_hook(info);
    }));

    let check = LeakCheck::builder().grace(Duration::from_secs(10)).build();
    let mon = Arc::new(Monitor::default());
    let (tx, rx) = mpsc::channel();
    let body_mon = Arc::clone(&mon);
    let body_thread = std::thread::Builder::new()
        .name("chaos-body".into())
        .spawn(move || {
            let outcome = catch_unwind(AssertUnwindSafe(|| body(seed, secs, body_mon)));
            let _ = tx.send(
                outcome.map_err(|p| message(&*p).unwrap_or_else(|| "a non-string panic".into())),
            );
        })
        .unwrap();
    let limit = Duration::from_secs_f64(60.0 + secs * 4.0);
    match rx.recv_timeout(limit) {
        Ok(Ok(summary)) => eprintln!("chaos seed {seed}: {summary}"),
        Ok(Err(msg)) => panic!("chaos seed {seed} failed (replay: CORRAL_CHAOS_SEED={seed}):\n{msg}\n{}", mon.dump()),
        Err(_) => panic!(
            "chaos seed {seed}: WATCHDOG: the run did not finish within {limit:?} (replay: CORRAL_CHAOS_SEED={seed})\n{}",
            mon.dump()
        ),
    }
    body_thread.join().unwrap();
    if let Err(report) = check.verify() {
        panic!("chaos seed {seed}: threads outlived the run: {report:?}");
    }
    let live = leak::live_threads();
    assert!(
        live.is_empty(),
        "chaos seed {seed}: live corral threads at the end: {live:?}"
    );
}
