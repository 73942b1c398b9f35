//! The run engine: it starts every thread of a run, inside one `std::thread::scope`
//! ([`run`], [`Head::start`], [`stage`]), and runs the loops of the source, the
//! stage workers and the sink.
//!
//! - Items travel in [`Packet`]s; a queue's capacity is counted in items, so batching
//!   keeps the same memory bound. Under `Overflow::Block` the first stage pulls the
//!   source through a [`Feed`] instead of a queue; under a drop policy the source has
//!   a thread of its own, so that overload is dropped at the first queue.
//! - Every send goes through the crate's one overflow dispatcher,
//!   `crate::queue::offer`; an empty queue is re-checked under the crate's
//!   spin-then-park policy ([`Backoff`]) before the receiver parks.
//! - Cancellation needs no wake-up channel: once the token is cancelled the source
//!   stops being pulled, and every worker and the sink keep receiving only to count
//!   and drop, until their upstream has gone; draining unblocks the senders upstream.
//! - Books are kept per thread and merged once ([`Counts`]); every user value is
//!   called and dropped inside the panic boundary ([`drop_each`]). Locks and atomics
//!   come from `crate::sync`; `Arc` is std's (the scope joins every holder).

use std::collections::BTreeMap;
use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use super::door::Door;
use super::gate::ReorderGate;
use super::report::StageStats;
use crate::cancel::{CancelReason, CancelToken};
use crate::clock::Clock;
use crate::observe::event::{self, Counter, Histogram};
use crate::observe::{Owner, Role, Slot, Watchdog};
use crate::overflow::Overflow;
use crate::panic::{drop_caught, drop_quietly, Panic};
use crate::queue::{offer, send_until, Offered, Refused};
use crate::spawn::{start_scoped, SpawnError, ThreadSpec};
use crate::sync::{AtomicBool, AtomicU64, Condvar, Mutex, Ordering};
use crate::timeline::tsc_nanos;
use crate::wait::{Backoff, Interrupted, Until};

pub(crate) type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// One item with its sequence number, or a batch of consecutive items. A queue's
/// capacity is counted in items (`capacity / batch` packets), so batching keeps the
/// same memory bound.
pub(crate) enum Packet<T> {
    One(u64, T),
    Many(u64, Vec<T>),
}

impl<T> Packet<T> {
    fn len(&self) -> u64 {
        match self {
            Packet::One(..) => 1,
            Packet::Many(_, items) => items.len() as u64,
        }
    }

    fn seq(&self) -> u64 {
        match self {
            Packet::One(seq, _) | Packet::Many(seq, _) => *seq,
        }
    }

    fn for_each(self, mut f: impl FnMut(T)) {
        match self {
            Packet::One(_, item) => f(item),
            Packet::Many(_, items) => items.into_iter().for_each(f),
        }
    }

    /// The one item of a packet a pushed input made (always `One`).
    fn into_one(self) -> T {
        match self {
            Packet::One(_, item) => item,
            // A pushed input sends single items only.
            Packet::Many(..) => unreachable!("a pushed item travels alone"),
        }
    }

    /// Hands the items to `on_drop` (or drops them without one), each inside the panic
    /// boundary: the first panic, if any.
    fn give(self, on_drop: Option<&OnDrop<'_, T>>) -> Option<Panic> {
        let Some(on_drop) = on_drop else {
            return self.discard();
        };
        let mut first = None;
        self.for_each(|item| {
            if let Err(panic) = Panic::catch_any(|| on_drop(item)) {
                match first {
                    None => first = Some(panic),
                    Some(_) => drop_quietly(panic),
                }
            }
        });
        first
    }

    /// Drops the items, each inside the panic boundary: the first panic, if any.
    fn discard(self) -> Option<Panic> {
        match self {
            Packet::One(_, item) => drop_caught(item),
            Packet::Many(_, items) => drop_each(items),
        }
    }
}

/// Drops the items one at a time, each inside the panic boundary, so that a panicking
/// `Drop` neither skips the others nor (as a second panic during unwinding would)
/// aborts the process. Returns the first panic; later ones are let go.
///
/// The panic boundary: every user value is called, formatted and dropped inside
/// `Panic::catch_any`: the source iterator (`next` and its drop), stage closures,
/// `on_drop` callbacks, the sink, a stage error's `Debug`, and every item
/// the run discards (shed, evicted, drained after a cancel, left in a queue, the rest
/// of a batch after a failure, a partial batch after the source panicked). Batches
/// are dropped item by item after the unwinding, never by it. The first failure is
/// the run's; later ones are dropped inside the boundary too ([`drop_quietly`]).
///
/// User values are dropped only through [`drop_caught`], this, [`drop_quietly`] and
/// `Ctx::discard`: a panicking `Drop` becomes the run's failure (charged to the stage
/// whose books hold the value), never a dead worker (whose queue would then stay full
/// and hang the run) or an escaped panic.
pub(crate) fn drop_each<V>(items: impl IntoIterator<Item = V>) -> Option<Panic> {
    let mut first = None;
    for item in items {
        if let Some(panic) = drop_caught(item) {
            match first {
                None => first = Some(panic),
                Some(_) => drop_quietly(panic),
            }
        }
    }
    first
}

/// A thread body. If the thread never starts, `std` drops the closure it was given;
/// this wrapper makes that drop (of the user values it captured) happen inside the
/// panic boundary. The spawn error is the run's failure, so a panic there is let go.
pub(crate) struct Body<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> Body<F> {
    pub(crate) fn new(f: F) -> Self {
        Body(Some(f))
    }

    pub(crate) fn run(mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

impl<F: FnOnce()> Drop for Body<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            drop_quietly(f);
        }
    }
}

/// Why an item did not make it through a stage function.
pub(crate) enum Failure {
    Error(BoxError),
    Panic(Panic),
    Spawn(SpawnError),
}

/// Per-stage counters, kept locally by each thread and merged on exit.
///
/// Counters are plain integers per worker, merged once when the worker exits; times
/// are read only around waits that actually block, and busy time is the worker's
/// lifetime minus those waits. Accounting: a stage's `items_in` are the items offered
/// to its queue (counted by the sender), and each ends in exactly one of `items_out`,
/// `dropped`, `failed` or `not_processed`. Items still queued when the run stops are
/// counted after every thread has joined, by draining the queues.
#[derive(Default, Clone, Copy, Debug)]
pub(crate) struct Counts {
    pub(crate) items_in: u64,
    pub(crate) out: u64,
    pub(crate) dropped: u64,
    pub(crate) failed: u64,
    pub(crate) not_processed: u64,
    pub(crate) busy: Duration,
    pub(crate) blocked: Duration,
    pub(crate) idle: Duration,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.items_in += o.items_in;
        self.out += o.out;
        self.dropped += o.dropped;
        self.failed += o.failed;
        self.not_processed += o.not_processed;
        self.busy = self.busy.saturating_add(o.busy);
        self.blocked = self.blocked.saturating_add(o.blocked);
        self.idle = self.idle.saturating_add(o.idle);
    }

    /// What these books hold beyond `before` (an earlier copy of them).
    fn since(&self, before: &Counts) -> Counts {
        Counts {
            items_in: self.items_in.saturating_sub(before.items_in),
            out: self.out.saturating_sub(before.out),
            dropped: self.dropped.saturating_sub(before.dropped),
            failed: self.failed.saturating_sub(before.failed),
            not_processed: self.not_processed.saturating_sub(before.not_processed),
            busy: self.busy.saturating_sub(before.busy),
            blocked: self.blocked.saturating_sub(before.blocked),
            idle: self.idle.saturating_sub(before.idle),
        }
    }

    /// A stage's public statistics from its merged books.
    fn stats(self, name: String, workers: usize) -> StageStats {
        StageStats {
            name,
            workers,
            items_in: self.items_in,
            items_out: self.out,
            dropped: self.dropped,
            failed: self.failed,
            not_processed: self.not_processed,
            busy: self.busy,
            blocked_send: self.blocked,
            idle_recv: self.idle,
        }
    }

    /// Closes a thread's books: busy is its lifetime minus the time spent waiting.
    fn finish(&mut self, started: Instant) {
        let waited = self.blocked.saturating_add(self.idle);
        self.busy = self
            .busy
            .saturating_add(started.elapsed().saturating_sub(waited));
    }
}

/// One stage's metrics (feature `metrics`; nothing without it), fed from the books
/// each thread publishes.
struct StageMetrics {
    items_in: Counter,
    out: Counter,
    dropped: Counter,
    failed: Counter,
    busy: Histogram,
}

impl StageMetrics {
    fn new(pipeline: Option<&str>, stage: &str) -> Self {
        let counter = |metric| Counter::labeled(metric, "Pipeline", pipeline, ("stage", stage));
        StageMetrics {
            items_in: counter("corral_pipeline_items_in_total"),
            out: counter("corral_pipeline_items_out_total"),
            dropped: counter("corral_pipeline_items_dropped_total"),
            failed: counter("corral_pipeline_items_failed_total"),
            busy: Histogram::labeled(
                "corral_pipeline_busy_seconds",
                "Pipeline",
                pipeline,
                ("stage", stage),
            ),
        }
    }

    /// Adds a thread's newly published books.
    fn add(&self, counts: &Counts) {
        self.items_in.add(counts.items_in);
        self.out.add(counts.out);
        self.dropped.add(counts.dropped);
        self.failed.add(counts.failed);
        if !counts.busy.is_zero() {
            self.busy.record(counts.busy);
        }
    }
}

impl Failure {
    /// What went wrong, for an event: the error's `Display`, formatted inside the
    /// panic boundary (it is user code), the panic's message, or the OS error.
    #[allow(dead_code)] // only with the `tracing` feature
    fn describe(&self) -> String {
        match self {
            Failure::Error(error) => Panic::catch_any(|| error.to_string()).unwrap_or_else(|p| {
                drop_quietly(p);
                "<its Display panicked>".to_owned()
            }),
            Failure::Panic(panic) => {
                format!("panicked: {}", panic.message().unwrap_or("(no message)"))
            }
            Failure::Spawn(error) => error.to_string(),
        }
    }
}

/// Run-wide settings, fixed before any thread starts.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) batch: usize,
    /// The time batched stages flush by.
    pub(crate) clock: Arc<dyn Clock>,
    /// The pipeline's name.
    pub(crate) name: Option<Arc<str>>,
    /// The run's owner in the thread dump (made by the terminal call, at the
    /// user's line).
    pub(crate) owner: Option<Arc<Owner>>,
    /// The stuck-item watchdog, if one was asked for.
    pub(crate) watchdog: Option<Arc<Watchdog>>,
    /// The slot of the thread the sink runs on, when the run owns it (`spawn`).
    pub(crate) sink_slot: Option<Arc<Slot>>,
    /// Reorder window in packets, in ordered mode.
    pub(crate) window: Option<u64>,
    /// Unit tests: the (stage index, worker) whose thread fails to start.
    #[cfg(test)]
    pub(crate) fail_spawn_at: Option<(usize, usize)>,
}

/// One queue's settings: its capacity in items and its overflow policy.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Queue {
    pub(crate) capacity: usize,
    pub(crate) overflow: Overflow,
}

impl Settings {
    /// Packets a queue of `capacity` items holds: never more than `capacity` items.
    fn packets(&self, capacity: usize) -> usize {
        (capacity / self.batch).max(1)
    }
}

/// Drops what is left in one queue after the run: the items it held, and the first
/// panic a `Drop` raised.
type Drainer<'env> = Box<dyn FnOnce(bool) -> (u64, Option<Panic>) + Send + 'env>;

/// Shared by every thread of one run.
pub(crate) struct Ctx<'env> {
    pub(crate) token: CancelToken,
    pub(crate) settings: Settings,
    names: Vec<String>,
    workers: Vec<usize>,
    /// The queue in front of each stage index (index 0, the source, has none).
    queues: Vec<Queue>,
    stats: Vec<Mutex<Counts>>,
    failure: Mutex<Option<(usize, Failure)>>,
    drainers: Mutex<Vec<(usize, Drainer<'env>)>>,
    gate: Option<ReorderGate>,
    /// Sequence numbers of dropped packets, for the sink's reorder buffer (ordered
    /// mode with a drop policy). Never more than `window` are outstanding.
    tombstones: Option<(Sender<u64>, Receiver<u64>)>,
    source_done: AtomicBool,
    /// A drain stop: the source is not pulled again, as if it had ended.
    input_stopped: AtomicBool,
    /// A cancel by `stop_now`: queued items go to their queue's `on_drop` callback.
    hand_over: AtomicBool,
    /// The pushed input, once linked.
    inlet: std::sync::OnceLock<Arc<Inlet>>,
    /// The run's owner in the thread dump.
    owner: Arc<Owner>,
    /// Each stage's name, as the name of the queue in front of it in the dump.
    queue_names: Vec<Arc<str>>,
    /// Per stage (feature `metrics`).
    metrics: Vec<StageMetrics>,
}

impl<'env> Ctx<'env> {
    pub(crate) fn new(
        token: CancelToken,
        settings: Settings,
        names: Vec<String>,
        workers: Vec<usize>,
        queues: Vec<Queue>,
    ) -> Self {
        let stats = names
            .iter()
            .map(|_| Mutex::new(Counts::default()))
            .collect();
        let gate = settings.window.map(ReorderGate::new);
        let owner = settings
            .owner
            .clone()
            .unwrap_or_else(|| Owner::new("Pipeline", settings.name.clone()));
        let queue_names = names.iter().map(|n| Arc::from(n.as_str())).collect();
        let metrics = names
            .iter()
            .map(|n| StageMetrics::new(settings.name.as_deref(), n))
            .collect();
        let drops = queues
            .iter()
            .skip(1)
            .any(|q| matches!(q.overflow, Overflow::DropNewest | Overflow::DropOldest));
        let tombstones = match settings.window {
            Some(w) if drops => Some(crossbeam_channel::bounded(w.min(1 << 20) as usize)),
            _ => None,
        };
        Ctx {
            token,
            settings,
            names,
            workers,
            queues,
            stats,
            failure: Mutex::new(None),
            drainers: Mutex::new(Vec::new()),
            gate,
            tombstones,
            source_done: AtomicBool::new(false),
            input_stopped: AtomicBool::new(false),
            hand_over: AtomicBool::new(false),
            inlet: std::sync::OnceLock::new(),
            owner,
            queue_names,
            metrics,
        }
    }

    /// The spec of one of the run's threads: `corral-<pipeline>-<what>` (`pipe` for
    /// an unnamed pipeline), owned by the run.
    fn thread(&self, what: std::fmt::Arguments<'_>, role: Role) -> ThreadSpec {
        let prefix = self.settings.name.as_deref().unwrap_or("pipe");
        ThreadSpec::new("Pipeline", format!("{prefix}-{what}"))
            .role(role)
            .owned_by(&self.owner)
    }

    /// The calling thread is about to park for input: idle in the thread dump, and a
    /// check of the watchdog, if the run has one.
    fn parking(&self, slot: Option<&Slot>) {
        if let Some(slot) = slot {
            slot.idle();
        }
        if let Some(watchdog) = &self.settings.watchdog {
            watchdog.check();
        }
    }

    /// Runs the watchdog, if the run has one.
    pub(crate) fn check_stuck(&self) -> Vec<crate::observe::Stuck> {
        self.settings
            .watchdog
            .as_ref()
            .map_or_else(Vec::new, |w| w.check())
    }

    /// Ends the input (a drain stop): the source is not pulled again, a pushed input
    /// is closed, and the run ends once what is inside has gone through.
    pub(crate) fn stop_input(&self) {
        self.input_stopped.store(true, Ordering::Release);
        if let Some(inlet) = self.inlet.get() {
            inlet.close();
        }
    }

    /// Cancels the run (`stop_now`): from now on, the items drained from a queue go
    /// to its `on_drop` callback, if it has one.
    pub(crate) fn stop_now(&self) {
        self.hand_over.store(true, Ordering::Release);
        self.token.cancel();
        self.stop_input();
    }

    /// The `on_drop` callback to hand an unprocessed item to, if it has to be.
    fn hand_over<'a, 'e, T>(
        &self,
        on_drop: Option<&'a OnDrop<'e, T>>,
    ) -> Option<&'a OnDrop<'e, T>> {
        on_drop.filter(|_| self.hand_over.load(Ordering::Acquire))
    }

    fn input_stopped(&self) -> bool {
        self.input_stopped.load(Ordering::Acquire)
    }

    /// The books so far: what every thread has published, and the pushed input's
    /// counters. Complete once every thread has joined.
    pub(crate) fn snapshot(&self) -> Vec<StageStats> {
        let mut counts: Vec<Counts> = self.stats.iter().map(|c| *c.lock()).collect();
        if let Some(inlet) = self.inlet.get() {
            inlet.add_to(&mut counts);
        }
        self.names
            .iter()
            .zip(&self.workers)
            .zip(counts)
            .map(|((name, workers), counts)| counts.stats(name.clone(), *workers))
            .collect()
    }

    /// Publishes a thread's books so far (what `done` has not yet published), for
    /// the live statistics: at most every [`PUBLISH_EVERY`], or whenever `now` says so.
    fn publish(&self, index: usize, own: &Counts, done: &mut Published, now: bool) {
        let at = tsc_nanos();
        if !now && at.saturating_sub(done.at) < PUBLISH_EVERY {
            return;
        }
        done.at = at;
        self.merge(index, &own.since(&done.counts));
        done.counts = *own;
    }

    /// The queue in front of stage `index`, registered for the final drain (which
    /// hands what is left to `on_drop` after a `stop_now`).
    pub(crate) fn queue<T: Send + 'env>(
        &self,
        index: usize,
        on_drop: Option<OnDrop<'env, T>>,
    ) -> (Sender<Packet<T>>, Receiver<Packet<T>>) {
        let (tx, rx) = crossbeam_channel::bounded::<Packet<T>>(
            self.settings.packets(self.queue_at(index).capacity),
        );
        let leftover = rx.clone();
        self.drainers.lock().push((
            index,
            Box::new(move |hand_over: bool| {
                let (mut items, mut first) = (0, None);
                let give = on_drop.as_ref().filter(|_| hand_over);
                for packet in leftover.try_iter() {
                    items += packet.len();
                    if let Some(panic) = packet.give(give) {
                        match first {
                            None => first = Some(panic),
                            Some(_) => drop_quietly(panic),
                        }
                    }
                }
                // The callback is user code: dropped inside the boundary.
                if let Some(panic) = drop_caught(on_drop) {
                    match first {
                        None => first = Some(panic),
                        Some(_) => drop_quietly(panic),
                    }
                }
                (items, first)
            }),
        ));
        (tx, rx)
    }

    /// The queue in front of stage `index`.
    fn queue_at(&self, index: usize) -> Queue {
        self.queues.get(index).copied().unwrap_or(Queue {
            capacity: 1,
            overflow: Overflow::Block,
        })
    }

    /// Records the first failure and cancels the run.
    pub(crate) fn fail(&self, index: usize, failure: Failure) {
        event::emit!(
            warn,
            "Pipeline",
            self.settings.name.as_deref(),
            "pipeline stage failed",
            stage = self.stage_name(index),
            error = failure.describe().as_str(),
        );
        let lost = {
            let mut slot = self.failure.lock();
            if slot.is_none() {
                *slot = Some((index, failure));
                None
            } else {
                Some(failure)
            }
        };
        self.token.cancel();
        // A later failure is not reported; its error (user code) is dropped here,
        // outside the lock and inside the panic boundary.
        if let Some(lost) = lost {
            drop_quietly(lost);
        }
    }

    /// Drops a user value inside the panic boundary; a panicking `Drop` fails the run,
    /// charged to stage `index`.
    pub(crate) fn discard<V>(&self, index: usize, value: V) {
        if let Some(panic) = drop_caught(value) {
            self.fail(index, Failure::Panic(panic));
        }
    }

    /// As [`discard`](Ctx::discard), item by item ([`drop_each`]).
    fn discard_each<V>(&self, index: usize, values: Vec<V>) {
        if let Some(panic) = drop_each(values) {
            self.fail(index, Failure::Panic(panic));
        }
    }

    /// As [`discard`](Ctx::discard), item by item.
    fn discard_packet<T>(&self, index: usize, packet: Packet<T>) {
        if let Some(panic) = packet.discard() {
            self.fail(index, Failure::Panic(panic));
        }
    }

    fn merge(&self, index: usize, counts: &Counts) {
        if let Some(cell) = self.stats.get(index) {
            cell.lock().add(counts);
        }
        if let Some(metrics) = self.metrics.get(index) {
            metrics.add(counts);
        }
    }

    /// Counts items a pushed input took (and dropped at its first queue), in the
    /// metrics of the source and of the first stage.
    #[allow(unused_variables)]
    fn pushed(&self, accepted: u64, dropped: u64) {
        #[cfg(feature = "metrics")]
        if let [source, first, ..] = &self.metrics[..] {
            source.items_in.add(accepted);
            source.out.add(accepted);
            first.items_in.add(accepted);
            first.dropped.add(dropped);
        }
    }

    /// The name of stage `index`.
    #[allow(dead_code)] // only with the `tracing` feature
    fn stage_name(&self, index: usize) -> &str {
        self.names.get(index).map_or("", String::as_str)
    }

    /// After every thread has joined: counts what was left in the queues and returns
    /// the per-stage statistics and the first failure. Takes `&self`: a pushed input
    /// may still hold the context (its senders are refused from now on).
    fn finish(&self) -> (Vec<StageStats>, Option<(usize, Failure)>, bool) {
        if let Some(inlet) = self.inlet.get() {
            inlet.close();
        }
        let drainers = std::mem::take(&mut *self.drainers.lock());
        let hand_over = self.hand_over.load(Ordering::Acquire);
        for (index, drain) in drainers {
            let (left, panic) = drain(hand_over);
            if let Some(cell) = self.stats.get(index) {
                cell.lock().not_processed += left;
            }
            if let Some(panic) = panic {
                self.fail(index, Failure::Panic(panic));
            }
        }
        let stats = self.snapshot();
        let source_done = self.source_done.load(Ordering::Acquire) || self.input_stopped();
        (stats, self.failure.lock().take(), source_done)
    }
}

/// How often a busy thread publishes its books for the live statistics (ns).
const PUBLISH_EVERY: u64 = 20_000_000;

/// What a thread has published of its books, and when (`tsc_nanos`).
#[derive(Default)]
struct Published {
    counts: Counts,
    at: u64,
}

type Launch<'env, T> = Box<
    dyn for<'s> FnOnce(&'s std::thread::Scope<'s, 'env>, &Arc<Ctx<'env>>, Outbound<'env, T>)
        + Send
        + 'env,
>;

/// Coerces a closure to a [`Launch`], giving it the higher-ranked signature.
fn launch<'env, T, F>(f: F) -> Launch<'env, T>
where
    F: for<'s> FnOnce(&'s std::thread::Scope<'s, 'env>, &Arc<Ctx<'env>>, Outbound<'env, T>)
        + Send
        + 'env,
{
    Box::new(f)
}

/// What feeds the next stage: the source itself, or the stages built so far.
pub(crate) enum Head<'env, T> {
    Source(Pull<'env, T>),
    Push(PortOwner<'env, T>),
    Stages(Launch<'env, T>),
}

impl<'env, T: Send + 'env> Head<'env, T> {
    /// Starts everything upstream of stage `index` and returns that stage's input.
    ///
    /// Straight after the source, with `Overflow::Block`, there is no thread and no
    /// queue: the stage's threads pull the source themselves, a packet at a time under
    /// one lock; with no stage at all the caller pulls it and runs the sink. A source
    /// thread would only hand items over at the pace the stage takes them, and costs a
    /// scheduler round trip per batch where threads outnumber cores. With a drop policy
    /// the source runs on its own thread (`corral-pipe-source`), ahead of the stage, so
    /// that overload is dropped at the stage's queue as those policies promise.
    fn start<'s>(
        self,
        scope: &'s std::thread::Scope<'s, 'env>,
        ctx: &Arc<Ctx<'env>>,
        on_drop: Option<OnDrop<'env, T>>,
        index: usize,
    ) -> Intake<'env, T> {
        match self {
            Head::Push(mut owner) => {
                let (tx, rx) = ctx.queue::<T>(index, on_drop.clone());
                let out = Outbound::new(ctx, tx, &rx, on_drop.clone(), index);
                let port = owner.0.take().expect("a port is linked by one run");
                port.link(ctx, out);
                Intake::Inlet(rx, Arc::clone(&port.inlet), on_drop)
            }
            Head::Source(pull) if ctx.queue_at(index).overflow == Overflow::Block => {
                // No queue, so nothing is ever dropped here: a callback for this
                // queue is never called. It is user code all the same.
                ctx.discard(index, on_drop);
                Intake::Feed(Arc::new(Feed::new(pull)))
            }
            head => {
                let (tx, rx) = ctx.queue::<T>(index, on_drop.clone());
                let out = Outbound::new(ctx, tx, &rx, on_drop.clone(), index);
                match head {
                    Head::Source(pull) => {
                        let spec = ctx.thread(format_args!("source"), Role::PipelineSource);
                        let shared = Arc::clone(ctx);
                        let body = Body::new(move || {
                            let ran = Panic::catch_any(|| run_source(&shared, pull, out));
                            if let Err(panic) = ran {
                                shared.fail(0, Failure::Panic(panic));
                            }
                        });
                        if let Err(e) = spawn_thread(scope, ctx, &spec, (0, 0), body) {
                            ctx.fail(0, Failure::Spawn(e));
                        }
                    }
                    Head::Stages(launch) => launch(scope, ctx, out),
                    Head::Push(_) => {}
                }
                Intake::Queue(rx, on_drop)
            }
        }
    }
}

/// Starts one of a run's threads. `at` is (stage index, worker number), for the
/// unit tests' injected spawn failure. If the thread does not start, `body` is
/// dropped inside the panic boundary (see [`Body`]).
fn spawn_thread<'s, 'env, F>(
    scope: &'s std::thread::Scope<'s, 'env>,
    ctx: &Ctx<'env>,
    spec: &ThreadSpec,
    at: (usize, usize),
    body: Body<F>,
) -> Result<(), SpawnError>
where
    F: FnOnce() + Send + 's,
{
    #[cfg(test)]
    if ctx.settings.fail_spawn_at == Some(at) {
        drop(body);
        let error = std::io::Error::other("injected spawn failure");
        return Err(SpawnError::new(format!("corral-{}", spec.name), error));
    }
    let _ = (ctx, at);
    start_scoped(scope, spec, move || body.run()).map(drop)
}

/// Stage `index` (`workers` threads named after `name`) after `prev`: what it starts
/// when the run launches it. Each thread runs `work` (the loop of one worker:
/// [`stateful`] or [`batched`]) on the stage's input and output.
pub(crate) fn stage<'env, T, U, W>(
    prev: Head<'env, T>,
    on_drop: Option<OnDrop<'env, T>>,
    index: usize,
    name: String,
    workers: usize,
    work: W,
) -> Head<'env, U>
where
    T: Send + 'env,
    U: Send + 'env,
    W: Fn(&Ctx<'env>, usize, Intake<'env, T>, Outbound<'env, U>) + Send + Sync + 'env,
{
    Head::Stages(launch(move |scope, ctx, out| {
        let input = prev.start(scope, ctx, on_drop, index);
        let work = Arc::new(work);
        let mut started = 0;
        for n in 0..workers {
            let spec = ctx.thread(format_args!("{name}-{n}"), Role::StageWorker);
            let (input, out, work) = (input.clone(), out.clone(), Arc::clone(&work));
            let shared = Arc::clone(ctx);
            let body = Body::new(move || {
                // Every user value the loop touches is called and dropped
                // inside the boundary; this catch is the last line only.
                let ran = Panic::catch_any(|| work(&shared, index, input, out));
                if let Err(panic) = ran {
                    shared.fail(index, Failure::Panic(panic));
                }
                // The stage closures, if this was their last reference.
                shared.discard(index, work);
            });
            match spawn_thread(scope, ctx, &spec, (index, n), body) {
                Ok(()) => started += 1,
                Err(e) => {
                    // The run is cancelled: the workers already started drain
                    // and stop, and the scope joins them.
                    ctx.fail(index, Failure::Spawn(e));
                    break;
                }
            }
        }
        if started == 0 {
            // No worker to drain this queue: the run is already cancelled, so
            // the caller drains it (counting, not processing) until the
            // upstream has gone; otherwise a blocked sender would wait forever.
            run_worker(ctx, index, input, out, &mut |_| {
                Err(BoxError::from("not started"))
            });
        } else {
            input.release(ctx, index);
            out.release(ctx);
        }
        ctx.discard(index, work);
    }))
}

/// The worker loop of a stage whose workers each build a state with `init` and
/// apply `f` to it and each item (`()` as the state for a stateless stage).
pub(crate) fn stateful<'env, T, U, S, I, F>(
    init: I,
    f: F,
) -> impl Fn(&Ctx<'env>, usize, Intake<'env, T>, Outbound<'env, U>) + Send + Sync + 'env
where
    T: 'env,
    U: 'env,
    I: Fn() -> S + Send + Sync + 'env,
    F: Fn(&mut S, T) -> Result<U, BoxError> + Send + Sync + 'env,
{
    move |ctx, index, input, out| run_stateful(ctx, index, input, out, (&init, &f))
}

/// One worker of a stage with per-worker state: builds the state, runs the loop,
/// drops the state, each inside the panic boundary. If `init` panics the run fails
/// and this worker only drains its input (so that no sender upstream waits forever).
fn run_stateful<T, U, S>(
    ctx: &Ctx<'_>,
    index: usize,
    input: Intake<'_, T>,
    out: Outbound<'_, U>,
    (init, f): (&impl Fn() -> S, &impl Fn(&mut S, T) -> Result<U, BoxError>),
) {
    let mut state = match Panic::catch_any(init) {
        Ok(state) => Some(state),
        Err(panic) => {
            ctx.fail(index, Failure::Panic(panic));
            None
        }
    };
    run_worker(ctx, index, input, out, &mut |item| match &mut state {
        Some(state) => f(state, item),
        // Not reached: the run is cancelled, so this worker only drains.
        None => Err(BoxError::from("the stage state was not built")),
    });
    ctx.discard(index, state);
}

/// Runs a pipeline of `stages` (names and worker counts, source first): starts every
/// thread inside one `std::thread::scope`, runs the sink (the last stage index) on the
/// calling thread, and once every thread has joined returns the per-stage statistics,
/// the first failure, whether the source was exhausted, and why the run's token
/// stopped, if it did. `started` is handed the run's context once every thread has
/// started (a running handle reads live statistics and stops the run through it).
#[allow(clippy::too_many_arguments)]
pub(crate) fn run<'env, T: Send + 'env>(
    head: Head<'env, T>,
    on_drop: Option<OnDrop<'env, T>>,
    token: CancelToken,
    settings: Settings,
    stages: &[(String, usize)],
    queues: Vec<Queue>,
    sink: &mut dyn FnMut(T) -> Result<(), BoxError>,
    started: &mut dyn FnMut(&Arc<Ctx<'env>>),
) -> Finished {
    let sink_index = stages.len();
    let (mut names, mut workers): (Vec<String>, Vec<usize>) = stages.iter().cloned().unzip();
    names.push("sink".to_owned());
    workers.push(1);
    let ctx = Arc::new(Ctx::new(token, settings, names, workers, queues));
    std::thread::scope(|scope| {
        let input = head.start(scope, &ctx, on_drop, sink_index);
        started(&ctx);
        run_sink(&ctx, sink_index, input, sink);
    });
    let reason = ctx.token.reason();
    let (stages, failure, source_done) = ctx.finish();
    (stages, failure, source_done, reason)
}

/// What [`run`] returns: the per-stage statistics, the first failure, whether the
/// source was exhausted, and why the run's token stopped.
pub(crate) type Finished = (
    Vec<StageStats>,
    Option<(usize, Failure)>,
    bool,
    Option<CancelReason>,
);

/// The sending side of a queue, with its overflow policy.
pub(crate) struct Outbound<'env, T> {
    tx: Sender<Packet<T>>,
    overflow: Overflow,
    evict: Option<Receiver<Packet<T>>>,
    on_drop: Option<OnDrop<'env, T>>,
    /// Index of the stage that owns the queue.
    stage: usize,
    /// The queue's name in the thread dump (the receiving stage's).
    name: Arc<str>,
}

pub(crate) type OnDrop<'env, T> = std::sync::Arc<dyn Fn(T) + Send + Sync + 'env>;

impl<T> Clone for Outbound<'_, T> {
    fn clone(&self) -> Self {
        Outbound {
            tx: self.tx.clone(),
            overflow: self.overflow,
            evict: self.evict.clone(),
            on_drop: self.on_drop.clone(),
            stage: self.stage,
            name: Arc::clone(&self.name),
        }
    }
}

impl<T> Outbound<'_, T> {
    /// Lets go of this sender once its thread is done with it: the `on_drop` callback,
    /// if this held its last reference, is user code and is dropped inside the panic
    /// boundary.
    pub(crate) fn release(self, ctx: &Ctx<'_>) {
        let stage = self.stage;
        ctx.discard(stage, self);
    }
}

/// The run stops: the sender was cancelled or the queue closed.
pub(crate) struct Stopped;

impl<'env, T> Outbound<'env, T> {
    pub(crate) fn new(
        ctx: &Ctx<'env>,
        tx: Sender<Packet<T>>,
        rx: &Receiver<Packet<T>>,
        on_drop: Option<OnDrop<'env, T>>,
        stage: usize,
    ) -> Self {
        let overflow = ctx.queue_at(stage).overflow;
        let evict = (overflow == Overflow::DropOldest).then(|| rx.clone());
        let name = ctx
            .queue_names
            .get(stage)
            .cloned()
            .unwrap_or_else(|| Arc::from("sink"));
        Outbound {
            tx,
            overflow,
            evict,
            on_drop,
            stage,
            name,
        }
    }

    /// Offers `packet` to the queue under the run's overflow policy, through the crate's
    /// one dispatcher (`crate::queue::offer`). Blocked time goes to `own`; the
    /// receiving stage's counters go to `next`.
    ///
    /// A blocked send waits without a bound and not on the run's token: a `select`
    /// over three channels on every full queue costs more than the hand-off;
    /// cancellation reaches a blocked sender through the draining of the stages
    /// downstream instead.
    fn send(
        &self,
        ctx: &Ctx<'_>,
        packet: Packet<T>,
        own: &mut Counts,
        next: &mut Counts,
    ) -> Result<(), Stopped> {
        next.items_in += packet.len();
        let offered = self.offer(packet, Some(&Until::FOREVER), |lost| {
            self.dropped(ctx, lost, next)
        });
        let packet = match offered {
            Ok(Offered::Done) => return Ok(()),
            Ok(Offered::Waited(waited)) => {
                own.blocked += waited;
                return Ok(());
            }
            // `CallerRuns` is refused when the run is configured.
            Ok(Offered::RunHere(packet)) => packet,
            Err(refused) => refused.into_item(),
        };
        next.not_processed += packet.len();
        ctx.discard_packet(self.stage, packet);
        Err(Stopped)
    }

    /// Offers `packet` through `crate::queue::offer`; a send that has to wait for
    /// room marks its thread blocked sending to this queue in the thread dump (a
    /// thread corral did not start shows there for as long as it waits). An unbounded
    /// send is marked only once it is about to park (`offer`'s `may_wait`), so a
    /// queue that drains within the spin costs nothing; a bounded one goes straight
    /// to a timed send and is marked if the queue is full when it starts.
    #[track_caller]
    fn offer(
        &self,
        packet: Packet<T>,
        until: Option<&Until<'_>>,
        dropped: impl FnMut(Packet<T>),
    ) -> Result<Offered<Packet<T>>, Refused<Packet<T>>> {
        let site = std::panic::Location::caller();
        let bounded_wait = self.overflow == Overflow::Block && until.is_some_and(Until::is_bounded);
        let mut blocked = (bounded_wait && self.tx.is_full())
            .then(|| crate::observe::sending_from(&self.name, site));
        let offered = offer(
            &self.tx,
            self.evict.as_ref(),
            packet,
            self.overflow,
            until,
            dropped,
            || {
                blocked = Some(crate::observe::sending_from(&self.name, site));
                true
            },
        );
        drop(blocked);
        offered
    }

    /// A packet lost to the overflow policy: counted, reported to the reorder buffer,
    /// and each item handed to `on_drop`.
    fn dropped(&self, ctx: &Ctx<'_>, packet: Packet<T>, next: &mut Counts) {
        next.dropped += packet.len();
        event::emit!(
            debug,
            "Pipeline",
            ctx.settings.name.as_deref(),
            "pipeline queue dropped items",
            stage = &*self.name,
            items = packet.len(),
        );
        if let Some((tombs, _)) = &ctx.tombstones {
            // Cannot stay full (at most `window` packets are outstanding); cancellable anyway.
            let _ = send_until(tombs, packet.seq(), &Until::cancellable(&ctx.token));
        }
        match &self.on_drop {
            Some(on_drop) => packet.for_each(|item| {
                if let Err(panic) = Panic::catch_any(|| on_drop(item)) {
                    ctx.fail(self.stage, Failure::Panic(panic));
                }
            }),
            None => ctx.discard_packet(self.stage, packet),
        }
    }
}

/// The worker loop of a batched stage: `f` gets `Vec`s of up to `max` items, and a
/// partial batch goes once `wait` has passed (on the run's clock) since its first item.
pub(crate) fn batched<'env, T, U, F>(
    max: usize,
    wait: Duration,
    f: F,
) -> impl Fn(&Ctx<'env>, usize, Intake<'env, T>, Outbound<'env, U>) + Send + Sync + 'env
where
    T: 'env,
    U: 'env,
    F: Fn(Vec<T>) -> Result<U, BoxError> + Send + Sync + 'env,
{
    move |ctx, index, input, out| run_batcher(ctx, index, input, out, (max, wait), &f)
}

/// How often a worker holding a partial batch re-reads the clock while it waits for
/// more input: the clock may be a test's `ManualClock`, which wakes nobody.
const FLUSH_TICK: Duration = Duration::from_millis(5);

/// The loop of one worker of a batched stage. No timer thread: while it holds a
/// partial batch, the worker waits for input only until the batch is due.
fn run_batcher<T, U>(
    ctx: &Ctx<'_>,
    index: usize,
    input: Intake<'_, T>,
    out: Outbound<'_, U>,
    (max, wait): (usize, Duration),
    f: &impl Fn(Vec<T>) -> Result<U, BoxError>,
) {
    let started = Instant::now();
    let clock = &*ctx.settings.clock;
    let mut own = Counts::default();
    let mut next = Counts::default();
    let (mut own_published, mut next_published) = (Published::default(), Published::default());
    let slot = crate::observe::current();
    let mut batch: Vec<T> = Vec::new();
    // When the batch held must go, on the run's clock.
    let mut due: Option<Instant> = None;
    let mut seq = 0u64;
    let mut discarding = false;
    loop {
        if discarding && matches!(input, Intake::Feed(_)) {
            break;
        }
        let got = match due {
            None => {
                let mut park = |own: &Counts| {
                    ctx.parking(slot.as_deref());
                    ctx.publish(index, own, &mut own_published, true);
                    ctx.publish(out.stage, &next, &mut next_published, true);
                };
                let got = input.recv(ctx, &mut own, &mut park);
                got.map_or(Recv::End, Recv::Packet)
            }
            Some(due) => match due.checked_duration_since(clock.now()) {
                Some(left) if !left.is_zero() => {
                    input.recv_timeout(ctx, &mut own, left.min(FLUSH_TICK))
                }
                _ => Recv::TimedOut,
            },
        };
        let packet = match got {
            Recv::End => break,
            Recv::TimedOut => None,
            Recv::Packet(packet) => Some(packet),
        };
        if let Some(packet) = packet {
            if discarding || ctx.token.is_cancelled() {
                discarding = true;
                own.not_processed += packet.len();
                input.discard(ctx, index, packet);
                continue;
            }
            packet.for_each(|item| batch.push(item));
            if due.is_none() {
                due = Some(crate::sync::time::deadline_after(clock.now(), wait));
            }
        }
        while batch.len() >= max || (!batch.is_empty() && due.is_some_and(|d| clock.now() >= d)) {
            let rest = if batch.len() > max {
                batch.split_off(max)
            } else {
                Vec::new()
            };
            let full = std::mem::replace(&mut batch, rest);
            due = (!batch.is_empty()).then(|| crate::sync::time::deadline_after(clock.now(), wait));
            if let Some(slot) = &slot {
                slot.running(slot.spawned_at());
            }
            if !flush(ctx, index, &out, f, full, &mut seq, (&mut own, &mut next)) {
                discarding = true;
                break;
            }
        }
        if discarding && !batch.is_empty() {
            own.not_processed += batch.len() as u64;
            ctx.discard_each(index, std::mem::take(&mut batch));
            due = None;
        }
        ctx.publish(index, &own, &mut own_published, false);
        ctx.publish(out.stage, &next, &mut next_published, false);
    }
    // The input has ended: what is held goes out, unless the run stopped.
    if !batch.is_empty() {
        if discarding || ctx.token.is_cancelled() {
            own.not_processed += batch.len() as u64;
            ctx.discard_each(index, batch);
        } else {
            flush(ctx, index, &out, f, batch, &mut seq, (&mut own, &mut next));
        }
    }
    own.finish(started);
    ctx.merge(index, &own.since(&own_published.counts));
    ctx.merge(out.stage, &next.since(&next_published.counts));
    input.release(ctx, index);
    out.release(ctx);
}

/// Hands one batch to `f` and sends what it returns; `false` once the run fails
/// or stops. A failed batch counts one failed item and the rest not processed, as
/// a failed packet does.
fn flush<T, U>(
    ctx: &Ctx<'_>,
    index: usize,
    out: &Outbound<'_, U>,
    f: &impl Fn(Vec<T>) -> Result<U, BoxError>,
    batch: Vec<T>,
    seq: &mut u64,
    (own, next): (&mut Counts, &mut Counts),
) -> bool {
    let n = batch.len() as u64;
    let failure = match Panic::catch_any(|| f(batch)) {
        Ok(Ok(made)) => {
            own.out += n;
            *seq += 1;
            return out
                .send(ctx, Packet::One(*seq - 1, made), own, next)
                .is_ok();
        }
        Ok(Err(error)) => Failure::Error(error),
        Err(panic) => Failure::Panic(panic),
    };
    own.failed += 1;
    own.not_processed += n - 1;
    ctx.fail(index, failure);
    false
}

/// Takes the next packet: `None` when the upstream is gone.
/// `park` is called (with the caller's books) before the thread parks: a worker
/// publishes its books then, so the live statistics do not wait for its next item.
fn recv<T>(
    rx: &Receiver<Packet<T>>,
    own: &mut Counts,
    park: &mut dyn FnMut(&Counts),
) -> Option<Packet<T>> {
    match rx.try_recv() {
        Ok(packet) => Some(packet),
        Err(TryRecvError::Disconnected) => None,
        Err(TryRecvError::Empty) => {
            let started = Instant::now();
            let mut packet = None;
            let mut backoff = Backoff::new();
            while backoff.snooze() {
                match rx.try_recv() {
                    Ok(p) => {
                        packet = Some(p);
                        break;
                    }
                    Err(TryRecvError::Disconnected) => break,
                    Err(TryRecvError::Empty) => {}
                }
            }
            let packet = match packet {
                Some(p) => Some(p),
                None => {
                    park(own);
                    rx.recv().ok()
                }
            };
            own.idle += started.elapsed();
            packet
        }
    }
}

/// Applies `f` to every item of a packet. On failure, also returns how many other
/// items of the packet were not processed.
fn map_packet<T, U>(
    packet: Packet<T>,
    f: &mut impl FnMut(T) -> Result<U, BoxError>,
) -> Result<Packet<U>, (Failure, u64)> {
    let mut apply = |item| match Panic::catch_any(|| f(item)) {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(error)) => Err(Failure::Error(error)),
        Err(panic) => Err(Failure::Panic(panic)),
    };
    match packet {
        Packet::One(seq, item) => apply(item)
            .map(|out| Packet::One(seq, out))
            .map_err(|f| (f, 0)),
        Packet::Many(seq, items) => {
            // One unwind boundary per batch keeps the loop tight. The closure owns no
            // item: what is left of the batch and what it already produced are
            // dropped below, item by item inside the boundary, never by the unwinding
            // (where a panicking `Drop` would abort the process).
            let n = items.len() as u64;
            let mut out = Vec::with_capacity(items.len());
            let mut rest = items.into_iter();
            let mapped = Panic::catch_any(|| {
                for item in rest.by_ref() {
                    out.push(f(item)?);
                }
                Ok(())
            });
            let failure = match mapped {
                Ok(Ok(())) => return Ok(Packet::Many(seq, out)),
                Ok(Err(error)) => Failure::Error(error),
                Err(panic) => Failure::Panic(panic),
            };
            // The run fails with `failure`; a panic dropping the rest is let go.
            if let Some(panic) = drop_each(rest) {
                drop_quietly(panic);
            }
            if let Some(panic) = drop_each(out) {
                drop_quietly(panic);
            }
            Err((failure, n - 1))
        }
    }
}

/// The loop of one worker of stage `index`.
pub(crate) fn run_worker<T, U>(
    ctx: &Ctx<'_>,
    index: usize,
    input: Intake<'_, T>,
    out: Outbound<'_, U>,
    f: &mut impl FnMut(T) -> Result<U, BoxError>,
) {
    let started = Instant::now();
    let mut own = Counts::default();
    let mut next = Counts::default();
    let (mut own_published, mut next_published) = (Published::default(), Published::default());
    let mut tick = 0u32;
    let slot = crate::observe::current();
    // Once the run is cancelled (or this worker failed), keep receiving but only to
    // count and drop: draining is what wakes the senders blocked upstream, and the
    // loop ends when the upstream has gone. (The source has no senders to wake: it is
    // not pulled again.)
    let mut discarding = false;
    loop {
        if discarding && matches!(input, Intake::Feed(_)) {
            break;
        }
        let mut park = |own: &Counts| {
            ctx.parking(slot.as_deref());
            ctx.publish(index, own, &mut own_published, true);
            ctx.publish(out.stage, &next, &mut next_published, true);
        };
        let Some(packet) = input.recv(ctx, &mut own, &mut park) else {
            break;
        };
        if discarding || ctx.token.is_cancelled() {
            discarding = true;
            own.not_processed += packet.len();
            input.discard(ctx, index, packet);
            continue;
        }
        let n = packet.len();
        if let Some(slot) = &slot {
            slot.running(slot.spawned_at());
        }
        match map_packet(packet, f) {
            Ok(mapped) => {
                own.out += n;
                if out.send(ctx, mapped, &mut own, &mut next).is_err() {
                    discarding = true;
                }
            }
            Err((failure, rest)) => {
                own.failed += 1;
                own.not_processed += rest;
                ctx.fail(index, failure);
                discarding = true;
            }
        }
        // Live statistics: now and then (and before the worker parks, above).
        tick = tick.wrapping_add(1);
        if tick % 16 == 0 || matches!(input, Intake::Feed(_)) {
            ctx.publish(index, &own, &mut own_published, false);
            ctx.publish(out.stage, &next, &mut next_published, false);
        }
    }
    own.finish(started);
    ctx.merge(index, &own.since(&own_published.counts));
    ctx.merge(out.stage, &next.since(&next_published.counts));
    input.release(ctx, index);
    out.release(ctx);
}

/// Pulls the source: `(seq, batch, partial)` to the next packet, `None` once it is
/// exhausted. A batch is gathered in `partial`, which the caller owns: if the
/// iterator panics halfway through a batch, the items already pulled stay there, to
/// be counted and dropped inside the panic boundary. Boxed where the iterator's type
/// is known, so the batching loop is compiled for it and the engine pays one indirect
/// call per packet.
pub(crate) type Pull<'env, T> =
    Box<dyn FnMut(u64, usize, &mut Vec<T>) -> Option<Packet<T>> + Send + 'env>;

/// The [`Pull`] of an iterator.
pub(crate) fn pull_from<'env, I>(mut iter: I) -> Pull<'env, I::Item>
where
    I: Iterator + Send + 'env,
{
    Box::new(move |seq, batch, partial| {
        if batch == 1 {
            iter.next().map(|item| Packet::One(seq, item))
        } else {
            let first = iter.next()?;
            partial.reserve_exact(batch);
            partial.push(first);
            partial.extend(iter.by_ref().take(batch - 1));
            Some(Packet::Many(seq, std::mem::take(partial)))
        }
    })
}

/// Books a source iterator that panicked with `partial` items of a batch pulled:
/// the panic counts as one failed item, the partial batch as pulled and not
/// processed, and those items are dropped inside the boundary.
fn source_panicked<T>(ctx: &Ctx<'_>, counts: &mut Counts, panic: Panic, partial: Vec<T>) {
    let n = partial.len() as u64;
    counts.items_in += n + 1;
    counts.failed += 1;
    counts.not_processed += n;
    ctx.fail(0, Failure::Panic(panic));
    if let Some(panic) = drop_each(partial) {
        drop_quietly(panic);
    }
}

/// The loop of the source thread (stage 0), used with the drop policies: pulls,
/// numbers and sends, as fast as the first queue takes them (or drops them).
pub(crate) fn run_source<T>(ctx: &Ctx<'_>, mut pull: Pull<'_, T>, out: Outbound<'_, T>) {
    let started = Instant::now();
    let mut own = Counts::default();
    let mut next = Counts::default();
    let (mut own_published, mut next_published) = (Published::default(), Published::default());
    let batch = ctx.settings.batch;
    let mut seq = 0u64;
    loop {
        if ctx.token.is_cancelled() || ctx.input_stopped() {
            break;
        }
        if let Some(gate) = &ctx.gate {
            let waited = Instant::now();
            let open = gate.wait_for(seq, &Until::cancellable(&ctx.token));
            own.blocked += waited.elapsed();
            if open.is_err() {
                break;
            }
        }
        let mut partial = Vec::new();
        match Panic::catch_any(|| pull(seq, batch, &mut partial)) {
            Ok(Some(packet)) => {
                own.items_in += packet.len();
                own.out += packet.len();
                seq += 1;
                if out.send(ctx, packet, &mut own, &mut next).is_err() {
                    break;
                }
                ctx.publish(0, &own, &mut own_published, false);
                ctx.publish(out.stage, &next, &mut next_published, false);
            }
            Ok(None) => {
                ctx.source_done.store(true, Ordering::Release);
                break;
            }
            Err(panic) => {
                source_panicked(ctx, &mut own, panic, partial);
                break;
            }
        }
    }
    own.finish(started);
    ctx.merge(0, &own.since(&own_published.counts));
    ctx.merge(out.stage, &next.since(&next_published.counts));
    ctx.discard(0, pull);
    out.release(ctx);
}

/// The source pulled directly by the threads of the first stage (or by the sink, if
/// there is no stage), used with `Overflow::Block`: one lock around the iterator,
/// taken once per packet, replaces the source thread and the first queue.
///
/// Packets are numbered under the lock (so ordered mode works unchanged), which is
/// also where a puller waits for the reorder window. Its books are stage 0's: pulled
/// items in and out, busy = time inside the iterator, blocked = the rest of its life
/// until its last pull (waiting for the stage to ask again, or for the window). For
/// the puller the whole call is idle time (waiting for input). Once the run stops the
/// source is not pulled again: a worker that would only discard stops instead.
pub(crate) struct Feed<'env, T> {
    state: Mutex<FeedState<'env, T>>,
}

struct FeedState<'env, T> {
    pull: Pull<'env, T>,
    seq: u64,
    /// Exhausted, panicked, or stopped by the run's token: never pulled again.
    done: bool,
    /// Stage 0's books: pulled items, time inside the iterator.
    counts: Counts,
    /// When the feed was made, and when the last pull returned (`tsc_nanos`).
    started: u64,
    last: u64,
    published: Published,
}

fn nanos(n: u64) -> Duration {
    Duration::from_nanos(n)
}

impl<'env, T> Feed<'env, T> {
    pub(crate) fn new(pull: Pull<'env, T>) -> Self {
        let now = tsc_nanos();
        Feed {
            state: Mutex::new(FeedState {
                pull,
                seq: 0,
                done: false,
                counts: Counts::default(),
                started: now,
                last: now,
                published: Published::default(),
            }),
        }
    }

    /// The next packet for the caller (a thread of stage `own`), or `None` once the
    /// source is exhausted, has panicked or the run is cancelled. The time spent
    /// waiting for the lock, the reorder window and the iterator goes to the caller's
    /// idle time; the time inside the iterator is also the source's busy time. Timed
    /// on the TSC (`crate::timeline::tsc_nanos`), cheaper than the std clock here.
    fn take(&self, ctx: &Ctx<'_>, own: &mut Counts) -> Option<Packet<T>> {
        let asked = tsc_nanos();
        let (mut state, mut started) = match self.state.try_lock() {
            Some(state) => (state, asked),
            None => {
                let state = self.state.lock();
                (state, tsc_nanos())
            }
        };
        let state = &mut *state;
        if state.done || ctx.token.is_cancelled() || ctx.input_stopped() {
            state.done = true;
            own.idle += nanos(tsc_nanos().saturating_sub(asked));
            return None;
        }
        if let Some(gate) = &ctx.gate {
            let open = gate.wait_for(state.seq, &Until::cancellable(&ctx.token));
            started = tsc_nanos();
            if open.is_err() {
                state.done = true;
                state.last = state.last.max(started);
                own.idle += nanos(started.saturating_sub(asked));
                return None;
            }
        }
        let (seq, batch) = (state.seq, ctx.settings.batch);
        let pull = &mut state.pull;
        let mut partial = Vec::new();
        let pulled = Panic::catch_any(|| pull(seq, batch, &mut partial));
        let now = tsc_nanos();
        state.counts.busy += nanos(now.saturating_sub(started));
        state.last = state.last.max(now);
        own.idle += nanos(now.saturating_sub(asked));
        match pulled {
            Ok(Some(packet)) => {
                let n = packet.len();
                state.seq += 1;
                state.counts.items_in += n;
                state.counts.out += n;
                own.items_in += n;
                ctx.publish(0, &state.counts, &mut state.published, false);
                Some(packet)
            }
            Ok(None) => {
                state.done = true;
                ctx.source_done.store(true, Ordering::Release);
                None
            }
            Err(panic) => {
                state.done = true;
                source_panicked(ctx, &mut state.counts, panic, partial);
                None
            }
        }
    }

    /// Closes the source's books: its lifetime runs until its last pull, and what of
    /// it was not spent in the iterator it spent waiting for the first stage to ask
    /// again (backpressure) or for the reorder window: its blocked time.
    fn finish(self, ctx: &Ctx<'_>) {
        let FeedState {
            pull,
            mut counts,
            started,
            last,
            published,
            ..
        } = self.state.into_inner();
        let life = nanos(last.saturating_sub(started));
        counts.blocked = counts
            .blocked
            .saturating_add(life.saturating_sub(counts.busy));
        ctx.merge(0, &counts.since(&published.counts));
        // The source iterator is user code.
        ctx.discard(0, pull);
    }
}

/// What a receive with a time limit got.
enum Recv<T> {
    Packet(Packet<T>),
    TimedOut,
    /// No more input: the upstream has gone, the source ended, or the run stopped.
    End,
}

/// Where a stage's threads (or the sink) take their packets from.
pub(crate) enum Intake<'env, T> {
    /// The queue in front of the stage, with its `on_drop` callback.
    Queue(Receiver<Packet<T>>, Option<OnDrop<'env, T>>),
    /// The source itself (first stage, `Overflow::Block`).
    Feed(std::sync::Arc<Feed<'env, T>>),
    /// The first queue of a pushed input, which ends when its door settles.
    Inlet(Receiver<Packet<T>>, Arc<Inlet>, Option<OnDrop<'env, T>>),
}

impl<T> Clone for Intake<'_, T> {
    fn clone(&self) -> Self {
        match self {
            Intake::Queue(rx, on_drop) => Intake::Queue(rx.clone(), on_drop.clone()),
            Intake::Feed(feed) => Intake::Feed(std::sync::Arc::clone(feed)),
            Intake::Inlet(rx, inlet, on_drop) => {
                Intake::Inlet(rx.clone(), Arc::clone(inlet), on_drop.clone())
            }
        }
    }
}

impl<'env, T> Intake<'env, T> {
    /// The next packet, or `None` when there is no more: the upstream has gone, or
    /// (for the source) it is exhausted or the run stopped.
    fn recv(
        &self,
        ctx: &Ctx<'_>,
        own: &mut Counts,
        park: &mut dyn FnMut(&Counts),
    ) -> Option<Packet<T>> {
        match self {
            Intake::Queue(rx, _) => recv(rx, own, park),
            Intake::Feed(feed) => feed.take(ctx, own),
            Intake::Inlet(rx, inlet, _) => match inlet.recv_within(ctx, rx, own, None, park) {
                Recv::Packet(packet) => Some(packet),
                Recv::TimedOut | Recv::End => None,
            },
        }
    }

    /// As `recv`, waiting at most `wait` for a packet (a source is pulled as usual).
    fn recv_timeout(&self, ctx: &Ctx<'_>, own: &mut Counts, wait: Duration) -> Recv<T> {
        match self {
            Intake::Queue(rx, _) => {
                let started = Instant::now();
                let got = rx.recv_timeout(wait);
                own.idle += started.elapsed();
                match got {
                    Ok(packet) => Recv::Packet(packet),
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => Recv::TimedOut,
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Recv::End,
                }
            }
            Intake::Feed(feed) => feed.take(ctx, own).map_or(Recv::End, Recv::Packet),
            Intake::Inlet(rx, inlet, _) => {
                let limit = crate::sync::time::deadline_after(Instant::now(), wait);
                inlet.recv_within(ctx, rx, own, Some(limit), &mut |_| {})
            }
        }
    }

    /// Counts a packet this stage (`index`) will not process and lets go of it: to
    /// the queue's `on_drop` callback after a `stop_now`, else dropped.
    fn discard(&self, ctx: &Ctx<'_>, index: usize, packet: Packet<T>) {
        let on_drop = match self {
            Intake::Queue(_, on_drop) | Intake::Inlet(_, _, on_drop) => on_drop.as_ref(),
            Intake::Feed(_) => None,
        };
        if let Some(panic) = packet.give(ctx.hand_over(on_drop)) {
            ctx.fail(index, Failure::Panic(panic));
        }
    }

    /// Lets go of the input of stage `index`; the last holder of the source closes its
    /// books. Every holder calls it, on its own thread, before the run's scope ends.
    /// The `on_drop` callback is user code: dropped inside the boundary.
    pub(crate) fn release(self, ctx: &Ctx<'_>, index: usize) {
        match self {
            Intake::Feed(feed) => {
                if let Some(feed) = std::sync::Arc::into_inner(feed) {
                    feed.finish(ctx);
                }
            }
            Intake::Queue(_, on_drop) | Intake::Inlet(_, _, on_drop) => {
                ctx.discard(index, on_drop);
            }
        }
    }
}

/// The untyped half of a pushed input, shared by its senders, the run and the first
/// stage's workers: the [`Door`] by which the senders and a close agree on the last
/// item, the wake-up of parked receivers, and the input's books (stage 0's, and the
/// first queue's `items_in` and `dropped`), kept in atomics because any thread sends.
pub(crate) struct Inlet {
    door: Door,
    /// Dropped on close: a receiver parked on `wake` then wakes up.
    signal: Mutex<Option<Sender<()>>>,
    wake: Receiver<()>,
    /// Set (under the lock) once the run has linked the input; senders that came
    /// earlier wait on `linked_cv`.
    linked: Mutex<bool>,
    linked_cv: Condvar,
    accepted: AtomicU64,
    dropped: AtomicU64,
    blocked_nanos: AtomicU64,
}

impl Inlet {
    pub(crate) fn new() -> Self {
        let (signal, wake) = crossbeam_channel::bounded(0);
        Inlet {
            door: Door::new(),
            signal: Mutex::new(Some(signal)),
            wake,
            linked: Mutex::new(false),
            linked_cv: Condvar::new(),
            accepted: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            blocked_nanos: AtomicU64::new(0),
        }
    }

    /// Ends the input: no send gets in any more, parked receivers and senders waiting
    /// for the run to start wake up. Idempotent.
    pub(crate) fn close(&self) {
        if self.door.close() {
            drop(self.signal.lock().take());
            let _guard = self.linked.lock();
            self.linked_cv.notify_all();
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.door.is_closed()
    }

    /// Adds the input's books to `counts` (stage 0 and the first queue, index 1).
    fn add_to(&self, counts: &mut [Counts]) {
        let accepted = self.accepted.load(Ordering::Relaxed);
        let dropped = self.dropped.load(Ordering::Relaxed);
        let blocked = nanos(self.blocked_nanos.load(Ordering::Relaxed));
        if let [source, first, ..] = counts {
            source.items_in += accepted;
            source.out += accepted;
            source.blocked = source.blocked.saturating_add(blocked);
            first.items_in += accepted;
            first.dropped += dropped;
        }
    }

    /// A receiver's next packet: `End` once the door has settled and the queue is
    /// empty; `TimedOut` at `limit`, if given. A cancelled run closes the door (its
    /// receivers only drain from then on).
    fn recv_within<T>(
        &self,
        ctx: &Ctx<'_>,
        rx: &Receiver<Packet<T>>,
        own: &mut Counts,
        limit: Option<Instant>,
        park: &mut dyn FnMut(&Counts),
    ) -> Recv<T> {
        if let Ok(packet) = rx.try_recv() {
            return Recv::Packet(packet);
        }
        let started = Instant::now();
        let mut backoff = Backoff::new();
        let got = loop {
            match rx.try_recv() {
                Ok(packet) => break Recv::Packet(packet),
                Err(TryRecvError::Disconnected) => break Recv::End,
                Err(TryRecvError::Empty) => {}
            }
            if ctx.token.is_cancelled() {
                self.close();
            }
            if self.door.is_closed() {
                if self.door.settled() {
                    // Every sender that got in has left: its item is queued.
                    break rx.try_recv().map_or(Recv::End, Recv::Packet);
                }
                // A sender is inside: its item is on its way (or it waits for room,
                // which the other receivers make).
                std::thread::yield_now();
                continue;
            }
            if backoff.snooze() {
                continue;
            }
            let left = match limit {
                None => None,
                Some(limit) => match limit.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => break Recv::TimedOut,
                },
            };
            if left.is_none() {
                park(own);
            }
            match left {
                None => crossbeam_channel::select! {
                    recv(rx) -> packet => break packet.map_or(Recv::End, Recv::Packet),
                    recv(self.wake) -> _ => {}
                },
                Some(left) => crossbeam_channel::select! {
                    recv(rx) -> packet => break packet.map_or(Recv::End, Recv::Packet),
                    recv(self.wake) -> _ => {}
                    default(left) => break Recv::TimedOut,
                },
            }
        };
        own.idle += started.elapsed();
        if matches!(got, Recv::End) && !ctx.token.is_cancelled() {
            ctx.source_done.store(true, Ordering::Release);
        }
        got
    }
}

/// A pushed input: its [`Inlet`], and the first queue's sending side once the run
/// has started. The public `Input` handles share one; the run links it.
pub(crate) struct Port<'env, T> {
    pub(crate) inlet: Arc<Inlet>,
    link: std::sync::OnceLock<Link<'env, T>>,
}

struct Link<'env, T> {
    ctx: Arc<Ctx<'env>>,
    out: Outbound<'env, T>,
}

impl<'env, T> Port<'env, T> {
    pub(crate) fn new() -> Self {
        Port {
            inlet: Arc::new(Inlet::new()),
            link: std::sync::OnceLock::new(),
        }
    }

    /// The run has made the first queue: senders may go.
    fn link(&self, ctx: &Arc<Ctx<'env>>, out: Outbound<'env, T>) {
        let _ = ctx.inlet.set(Arc::clone(&self.inlet));
        let link = Link {
            ctx: Arc::clone(ctx),
            out,
        };
        if let Err(unused) = self.link.set(link) {
            // A port is linked once (its owner is taken by the one run).
            ctx.discard(unused.out.stage, unused.out);
        }
        if ctx.input_stopped() {
            self.inlet.close();
        }
        let mut linked = self.inlet.linked.lock();
        *linked = true;
        self.inlet.linked_cv.notify_all();
    }

    /// Offers `item` to the first queue under its overflow policy (`crate::queue::offer`,
    /// as every queue of the run): `until` bounds a wait for room (`None`: do not
    /// wait). A refusal hands the item back. Before the run has started, a send waits
    /// for it as for room.
    #[track_caller]
    pub(crate) fn send(&self, item: T, until: Option<&Until<'_>>) -> Result<(), Refused<T>> {
        let link = match self.link.get() {
            Some(link) => link,
            None => match self.wait_linked(until) {
                Ok(link) => link,
                Err(refused) => return Err(refused.map(|()| item)),
            },
        };
        let Some(_pass) = self.inlet.door.enter() else {
            return Err(Refused::Closed(item));
        };
        let ctx = &*link.ctx;
        let mut next = Counts::default();
        let offered = link.out.offer(Packet::One(0, item), until, |lost| {
            link.out.dropped(ctx, lost, &mut next)
        });
        if next.dropped > 0 {
            self.inlet
                .dropped
                .fetch_add(next.dropped, Ordering::Relaxed);
        }
        let refused = match offered {
            Ok(Offered::Done | Offered::RunHere(_)) => None,
            Ok(Offered::Waited(waited)) => {
                let waited = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
                self.inlet
                    .blocked_nanos
                    .fetch_add(waited, Ordering::Relaxed);
                None
            }
            Err(refused) => Some(refused),
        };
        ctx.pushed(u64::from(refused.is_none()), next.dropped);
        match refused {
            None => {
                self.inlet.accepted.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Some(refused) => Err(refused.map(Packet::into_one)),
        }
    }

    /// Waits for the run to link the input, within `until` (`None`: not at all).
    fn wait_linked(&self, until: Option<&Until<'_>>) -> Result<&Link<'env, T>, Refused<()>> {
        let mut linked = self.inlet.linked.lock();
        loop {
            if let Some(link) = self.link.get() {
                return Ok(link);
            }
            if self.inlet.is_closed() {
                return Err(Refused::Closed(()));
            }
            let Some(until) = until else {
                return Err(Refused::Full(()));
            };
            match until.check() {
                Ok(()) => {}
                Err(Interrupted::TimedOut) => return Err(Refused::TimedOut(())),
                Err(Interrupted::Cancelled(reason)) => return Err(Refused::Cancelled((), reason)),
            }
            if !*linked {
                // Re-checked now and then: a token's cancel does not notify this.
                let slice = crate::sync::time::deadline_after(crate::sync::time::now(), LINK_POLL);
                let wake = until.limit().map_or(slice, |limit| limit.min(slice));
                let _ = self.inlet.linked_cv.wait_until(&mut linked, wake);
            }
        }
    }
}

/// How often a sender that waits for the run to start re-checks its own bound.
const LINK_POLL: Duration = Duration::from_millis(10);

impl<T> Drop for Port<'_, T> {
    fn drop(&mut self) {
        self.inlet.close();
        // The first queue's `on_drop` callback is user code.
        if let Some(link) = self.link.take() {
            drop_quietly(link.out);
        }
    }
}

/// The run's claim on a [`Port`]: a pipeline dropped without running closes it, so
/// that its senders are refused instead of waiting for a run that never comes.
pub(crate) struct PortOwner<'env, T>(Option<Arc<Port<'env, T>>>);

impl<'env, T> PortOwner<'env, T> {
    pub(crate) fn new(port: Arc<Port<'env, T>>) -> Self {
        PortOwner(Some(port))
    }
}

impl<T> Drop for PortOwner<'_, T> {
    fn drop(&mut self) {
        if let Some(port) = self.0.take() {
            port.inlet.close();
        }
    }
}

/// The sink's reorder buffer (ordered mode).
struct Reorder<T> {
    next: u64,
    /// Packets (or tombstones, `None`) that arrived ahead of `next`.
    ahead: BTreeMap<u64, Option<Packet<T>>>,
}

impl<T> Reorder<T> {
    /// Takes packet (or tombstone) `seq`; delivers everything now in order. `false`
    /// once a delivery fails.
    fn accept(
        &mut self,
        seq: u64,
        packet: Option<Packet<T>>,
        mut deliver: impl FnMut(Packet<T>) -> bool,
    ) -> bool {
        if seq != self.next {
            self.ahead.insert(seq, packet);
            return true;
        }
        let mut current = packet;
        loop {
            self.next += 1;
            if let Some(packet) = current.take() {
                if !deliver(packet) {
                    return false;
                }
            }
            match self.ahead.first_key_value() {
                Some((&seq, _)) if seq == self.next => {
                    current = self.ahead.pop_first().and_then(|(_, p)| p);
                }
                _ => return true,
            }
        }
    }
}

enum Arrival<T> {
    Packet(Packet<T>),
    Tombstone(u64),
}

fn recv_or_tombstone<T>(
    rx: &Receiver<Packet<T>>,
    tombs: &Receiver<u64>,
    own: &mut Counts,
    park: &mut dyn FnMut(&Counts),
) -> Option<Arrival<T>> {
    if let Ok(seq) = tombs.try_recv() {
        return Some(Arrival::Tombstone(seq));
    }
    match rx.try_recv() {
        Ok(packet) => return Some(Arrival::Packet(packet)),
        Err(TryRecvError::Disconnected) => return None,
        Err(TryRecvError::Empty) => {}
    }
    let started = Instant::now();
    park(own);
    let arrival = crossbeam_channel::select! {
        recv(rx) -> packet => packet.ok().map(Arrival::Packet),
        recv(tombs) -> seq => seq.ok().map(Arrival::Tombstone),
    };
    own.idle += started.elapsed();
    arrival
}

/// Hands a packet's items to the sink; `false` (and the run failed) if one fails.
fn deliver<T>(
    ctx: &Ctx<'_>,
    index: usize,
    packet: Packet<T>,
    sink: &mut dyn FnMut(T) -> Result<(), BoxError>,
    own: &mut Counts,
) -> bool {
    let n = packet.len();
    let mut done = 0;
    // One unwind boundary per packet, as in `map_packet` (and owning no item, for the
    // same reason): `done` says how far it got.
    let delivered = match packet {
        Packet::One(_, item) => {
            let delivered = Panic::catch_any(|| sink(item));
            if matches!(delivered, Ok(Ok(()))) {
                done = 1;
            }
            delivered
        }
        Packet::Many(_, items) => {
            let mut rest = items.into_iter();
            let delivered = Panic::catch_any(|| {
                for item in rest.by_ref() {
                    sink(item)?;
                    done += 1;
                }
                Ok(())
            });
            // Left only after a failure, which the run reports.
            if let Some(panic) = drop_each(rest) {
                drop_quietly(panic);
            }
            delivered
        }
    };
    own.out += done;
    let failure = match delivered {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some(Failure::Error(error)),
        Err(panic) => Some(Failure::Panic(panic)),
    };
    match failure {
        None => true,
        Some(failure) => {
            own.failed += 1;
            own.not_processed += n - done - 1;
            ctx.fail(index, failure);
            false
        }
    }
}

/// The sink loop, on the caller's thread (stage `index`, the last).
pub(crate) fn run_sink<T>(
    ctx: &Ctx<'_>,
    index: usize,
    input: Intake<'_, T>,
    sink: &mut dyn FnMut(T) -> Result<(), BoxError>,
) {
    let started = Instant::now();
    let mut own = Counts::default();
    let mut reorder = ctx.gate.as_ref().map(|_| Reorder {
        next: 0,
        ahead: BTreeMap::new(),
    });
    let tombs = ctx.tombstones.as_ref().map(|(_, rx)| rx);
    let (mut published, mut tick) = (Published::default(), 0u32);
    let mut failed = false;
    // The sink's thread is the run's own only for a spawned pipeline; a batch run's
    // caller may be another owner's thread, whose state is not ours to set.
    let slot = ctx.settings.sink_slot.clone();
    loop {
        if failed && matches!(input, Intake::Feed(_)) {
            break; // nothing upstream to drain (see `run_worker`)
        }
        let arrival = match (tombs, &input) {
            (Some(tombs), Intake::Queue(rx, _)) => {
                let mut park = |own: &Counts| {
                    ctx.parking(slot.as_deref());
                    ctx.publish(index, own, &mut published, true)
                };
                recv_or_tombstone(rx, tombs, &mut own, &mut park)
            }
            _ => {
                let mut park = |own: &Counts| {
                    ctx.parking(slot.as_deref());
                    ctx.publish(index, own, &mut published, true)
                };
                input.recv(ctx, &mut own, &mut park).map(Arrival::Packet)
            }
        };
        let Some(arrival) = arrival else { break };
        if failed || ctx.token.is_cancelled() {
            // Drain until the upstream has gone (see `run_worker`).
            failed = true;
            if let Arrival::Packet(packet) = arrival {
                own.not_processed += packet.len();
                input.discard(ctx, index, packet);
            }
            continue;
        }
        if let Some(slot) = &slot {
            slot.running(slot.spawned_at());
        }
        let ok = match (&mut reorder, arrival) {
            (None, Arrival::Packet(packet)) => deliver(ctx, index, packet, sink, &mut own),
            (None, Arrival::Tombstone(_)) => true,
            (Some(reorder), arrival) => {
                let (seq, packet) = match arrival {
                    Arrival::Packet(packet) => (packet.seq(), Some(packet)),
                    Arrival::Tombstone(seq) => (seq, None),
                };
                let ok = reorder.accept(seq, packet, |p| deliver(ctx, index, p, sink, &mut own));
                if let Some(gate) = &ctx.gate {
                    gate.release(reorder.next);
                }
                ok
            }
        };
        failed = !ok;
        tick = tick.wrapping_add(1);
        if tick % 16 == 0 || matches!(input, Intake::Feed(_)) {
            ctx.publish(index, &own, &mut published, false);
        }
    }
    if let Some(mut reorder) = reorder {
        // Upstream is gone: every tombstone is already queued. Whatever remains after
        // them is delivered in order if the run is still healthy, else counted.
        if let Some(tombs) = tombs {
            for seq in tombs.try_iter() {
                reorder.ahead.insert(seq, None);
            }
        }
        while let Some((_, packet)) = reorder.ahead.pop_first() {
            let Some(packet) = packet else { continue };
            if failed || ctx.token.is_cancelled() {
                own.not_processed += packet.len();
                input.discard(ctx, index, packet);
            } else if !deliver(ctx, index, packet, sink, &mut own) {
                failed = true;
            }
        }
    }
    own.finish(started);
    ctx.merge(index, &own.since(&published.counts));
    input.release(ctx, index);
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn reorder() -> Reorder<u32> {
        Reorder {
            next: 0,
            ahead: BTreeMap::new(),
        }
    }

    #[test]
    fn reorder_delivers_in_sequence_and_skips_tombstones() {
        let mut r = reorder();
        let mut out = Vec::new();
        let mut take = |p: Packet<u32>| {
            p.for_each(|x| out.push(x));
            true
        };
        assert!(r.accept(2, Some(Packet::One(2, 20)), &mut take));
        assert!(r.accept(1, None, &mut take)); // packet 1 was dropped
        assert!(r.accept(3, Some(Packet::Many(3, vec![30, 31])), &mut take));
        assert_eq!(r.ahead.len(), 3);
        assert!(r.accept(0, Some(Packet::One(0, 0)), &mut take));
        assert_eq!(r.next, 4);
        assert!(r.ahead.is_empty());
        assert_eq!(out, vec![0, 20, 30, 31]);
    }

    #[test]
    fn reorder_stops_at_a_failed_delivery() {
        let mut r = reorder();
        assert!(r.accept(1, Some(Packet::One(1, 1)), |_| true));
        assert!(!r.accept(0, Some(Packet::One(0, 0)), |_| false));
        assert_eq!(r.next, 1);
        assert_eq!(r.ahead.len(), 1, "undelivered packets stay to be counted");
    }

    #[test]
    fn a_failing_item_in_a_batch_reports_the_rest_as_not_processed() {
        let mut f = |x: u32| {
            if x == 2 {
                Err(BoxError::from("two"))
            } else {
                Ok(x)
            }
        };
        match map_packet(Packet::Many(0, vec![0, 1, 2, 3, 4]), &mut f) {
            Err((Failure::Error(e), rest)) => {
                assert_eq!(e.to_string(), "two");
                assert_eq!(rest, 4);
            }
            _ => panic!("expected the error"),
        }
        assert!(matches!(
            map_packet(Packet::One(7, 1), &mut f),
            Ok(Packet::One(7, 1))
        ));
        let mut g = |x: u32| -> Result<u32, BoxError> {
            assert!(x != 3, "three");
            Ok(x)
        };
        match map_packet(Packet::Many(0, vec![0, 1, 2, 3, 4, 5]), &mut g) {
            Err((Failure::Panic(p), rest)) => {
                assert_eq!(p.message(), Some("three"));
                assert_eq!(rest, 5);
            }
            _ => panic!("expected the panic"),
        }
    }

    #[test]
    fn a_failing_sink_inside_a_batch_counts_the_rest_as_not_processed() {
        let settings = Settings {
            batch: 8,
            clock: Arc::new(crate::clock::SystemClock),
            name: None,
            owner: None,
            watchdog: None,
            sink_slot: None,
            window: None,
            fail_spawn_at: None,
        };
        let ctx = Ctx::new(
            CancelToken::new(),
            settings,
            vec!["sink".into()],
            vec![1],
            vec![Queue {
                capacity: 8,
                overflow: Overflow::Block,
            }],
        );
        let mut own = Counts::default();
        let mut seen = Vec::new();
        let mut sink = |x: u32| -> Result<(), BoxError> {
            assert!(x != 5, "five");
            if x == 2 {
                return Err("two".into());
            }
            seen.push(x);
            Ok(())
        };
        assert!(deliver(
            &ctx,
            0,
            Packet::Many(0, vec![0, 1]),
            &mut sink,
            &mut own
        ));
        assert_eq!((own.out, own.failed, own.not_processed), (2, 0, 0));
        assert!(!deliver(
            &ctx,
            0,
            Packet::Many(1, vec![1, 2, 3, 4]),
            &mut sink,
            &mut own
        ));
        assert_eq!((own.out, own.failed, own.not_processed), (3, 1, 2));
        assert!(ctx.token.is_cancelled(), "a failure cancels the run");
        let mut own = Counts::default();
        assert!(!deliver(
            &ctx,
            0,
            Packet::Many(2, vec![4, 5, 6]),
            &mut sink,
            &mut own
        ));
        assert_eq!((own.out, own.failed, own.not_processed), (1, 1, 1));
        assert_eq!(seen, vec![0, 1, 1, 4]);
    }

    #[test]
    fn a_thread_body_that_never_runs_drops_its_captures_inside_the_boundary() {
        struct Loud;
        impl Drop for Loud {
            fn drop(&mut self) {
                panic!("captured value dropped");
            }
        }
        let loud = Loud;
        let body = Body::new(move || drop(loud));
        drop(body); // would unwind here without the boundary
    }

    #[test]
    fn queues_count_capacity_in_items() {
        let settings = |batch| Settings {
            batch,
            clock: Arc::new(crate::clock::SystemClock),
            name: None,
            owner: None,
            watchdog: None,
            sink_slot: None,
            window: None,
            fail_spawn_at: None,
        };
        assert_eq!(settings(1).packets(64), 64);
        assert_eq!(settings(16).packets(64), 4);
        assert_eq!(settings(4).packets(10), 2); // never more than 10 items
        assert_eq!(settings(4).packets(4), 1);
    }
}
