//! `map`: ordered results over a bounded window of in-flight work.
//!
//! Implementation notes. Items are cut into chunks, one pool job per chunk, so the
//! per-task cost (an allocation, a channel send and receive, a result slot) is paid
//! once per chunk, not once per item. At most `window / chunk` chunks are in flight,
//! where `window = queue_capacity + workers`: the iterator never pulls more than
//! `window` input items ahead of what it has yielded, so an endless input runs in
//! bounded memory. Results come back in input order because chunks are joined in
//! submission order. A panic is caught per item, so one panicking
//! item yields `Err(TaskError::Panicked)` in its place and its neighbours still run.
//! One `catch_unwind` guards a whole chunk until something panics.
//!
//! The calling thread helps: when it needs the results of a chunk that no worker has
//! started yet, it takes the chunk's input back and runs it itself (the queued job
//! then finds nothing to do). A chunk's input is claimed once, by whichever comes
//! first, and goes with its job if the pool drops the job unrun (an eviction, a
//! `shutdown_now`): those items yield `Cancelled`, as the pool reported them. A chunk
//! that finds the queue full is not queued at all: the caller keeps it and runs it
//! when it is due. Without this the caller would wait for a worker to wake up (a few
//! microseconds per chunk on a busy machine, which dominated the cost of tiny items)
//! or for queue room; with it, `map` never waits for work that is merely queued and
//! never blocks on a full queue. The in-flight bound is unchanged: the caller runs
//! only chunks already counted in it.
//!
//! Cheap items stay on the caller. Handing a chunk to a worker has a price of its own
//! (the job, a wake-up, and the chunk's input and results crossing between cores),
//! about two microseconds here on each side; when a chunk computes in less than about
//! twice that, the caller finishes sooner running every chunk itself than handing
//! them off and waiting for their results. So each chunk is timed where it runs, and
//! `map` switches between handing chunks to the workers and running them on the
//! caller, with hysteresis ([`LOCAL_BELOW`], [`PARALLEL_ABOVE`]): items that turn
//! expensive go back to the workers at the next chunk, so only one chunk's worth of
//! work can run serially by mistake (on the caller, chunks are pulled one at a time:
//! nothing is gained by pulling ahead). Order, the in-flight bound and panic
//! isolation are the same either way.
//!
//! Counting: each queued chunk is one submitted task. One the caller ran leaves an
//! empty job in the queue, which a worker counts as completed when it reaches it (or
//! `shutdown_now` as never run: its items were run and yielded all the same). A chunk
//! kept on the caller because the queue was full, or because chunks were cheap, is not
//! counted at all.

use std::collections::VecDeque;
use std::fmt;
use std::iter::Fuse;
use std::time::{Duration, Instant};

use crate::panic::Panic;
use crate::pool::claim::{claim, Claim};
use crate::pool::core::Core;
use crate::pool::handle::{packet, TaskError, TaskHandle};
use crate::pool::task::{Cell, Job, Plain};
use std::sync::Arc;

/// Most items one chunk carries: big enough to amortise the per-job cost on tiny
/// items, small enough to keep both workers busy on uneven ones.
const MAX_CHUNK: usize = 1024;

/// A chunk that computes in less than this is cheaper to run on the caller than to
/// hand to a worker: `map` then keeps the following chunks on the caller.
const LOCAL_BELOW: Duration = Duration::from_micros(4);

/// A chunk run on the caller that takes longer than this goes back to the workers
/// with the chunks after it. Twice [`LOCAL_BELOW`], so a chunk timed near the line
/// does not flip the mode back and forth.
const PARALLEL_ABOVE: Duration = Duration::from_micros(8);

enum Pending<T, R> {
    /// `None` from the handle: the caller claimed the input first.
    Queued(
        TaskHandle<Option<(Chunk<R>, Duration)>>,
        Claim<Vec<T>>,
        usize,
    ),
    /// The queue was full, or chunks are cheap: the caller runs it when due.
    Local(Vec<T>),
    /// The pool is closed: the chunk's items yield `Cancelled`.
    Refused(usize),
}

/// A chunk's results: plain values unless an item panicked (the common case stays
/// compact: no `Result` per item to move around).
enum Chunk<R> {
    Clean(std::vec::IntoIter<R>),
    Mixed(std::vec::IntoIter<Result<R, TaskError>>),
}

impl<R> Chunk<R> {
    #[inline]
    fn next(&mut self) -> Option<Result<R, TaskError>> {
        match self {
            Chunk::Clean(values) => values.next().map(Ok),
            Chunk::Mixed(results) => results.next(),
        }
    }
}

/// Runs `f` over a batch. One `catch_unwind` covers the whole batch while nothing
/// panics (a per-item guard costs more than a tiny item); after a panic the rest of
/// the batch runs item by item, so the panicking item's neighbours still run.
fn run_chunk<T, R>(batch: Vec<T>, f: &impl Fn(T) -> R) -> Chunk<R> {
    let mut out = Vec::with_capacity(batch.len());
    let mut items = batch.into_iter();
    // `extend` over an exact-size source writes without a capacity check per item;
    // after a panic, `out` still holds every result written before it.
    match Panic::catch_any(|| out.extend((&mut items).map(f))) {
        Ok(()) => Chunk::Clean(out.into_iter()),
        Err(panic) => {
            // `out` holds the results before the panicking item, which was consumed.
            let mut mixed: Vec<Result<R, TaskError>> = out.into_iter().map(Ok).collect();
            mixed.push(Err(TaskError::Panicked(panic)));
            mixed.extend(
                items.map(|item| Panic::catch_any(|| f(item)).map_err(TaskError::Panicked)),
            );
            Chunk::Mixed(mixed.into_iter())
        }
    }
}

/// [`run_chunk`], and how long it took.
fn timed_chunk<T, R>(batch: Vec<T>, f: &impl Fn(T) -> R) -> (Chunk<R>, Duration) {
    let start = Instant::now();
    let chunk = run_chunk(batch, f);
    (chunk, start.elapsed())
}

/// Iterator returned by [`WorkerPool::map`](crate::WorkerPool::map) and
/// [`ScopedPool::map`](crate::ScopedPool::map): the results of `f` over the input, in
/// input order.
///
/// Input is pulled lazily, at most `queue_capacity + workers` items ahead of what has
/// been yielded. Dropping the iterator early stops submitting; chunks already queued
/// still run (their results are dropped).
#[must_use = "the map does nothing until it is iterated"]
pub struct PoolMap<'p, 'a, I: Iterator, F, R> {
    core: &'p Core<'a>,
    input: Fuse<I>,
    f: Arc<F>,
    pending: VecDeque<Pending<I::Item, R>>,
    current: Chunk<R>,
    cancelled_left: usize,
    chunk: usize,
    max_chunks: usize,
    /// Chunks are cheap: new ones stay on the caller instead of going to the queue.
    local: bool,
}

impl<'p, 'a, I, F, R> PoolMap<'p, 'a, I, F, R>
where
    I: Iterator,
    I::Item: Send + 'a,
    F: Fn(I::Item) -> R + Send + Sync + 'a,
    R: Send + 'a,
{
    pub(crate) fn new(core: &'p Core<'a>, input: I, f: F) -> Self {
        let workers = core.workers();
        let window = core.capacity() + workers;
        let chunk = (window / (workers + 1)).clamp(1, MAX_CHUNK);
        PoolMap {
            core,
            input: input.fuse(),
            f: Arc::new(f),
            pending: VecDeque::new(),
            current: Chunk::Clean(Vec::new().into_iter()),
            cancelled_left: 0,
            chunk,
            max_chunks: (window / chunk).max(1),
            local: false,
        }
    }

    fn fill(&mut self) {
        let ahead = if self.local { 1 } else { self.max_chunks };
        while self.pending.len() < ahead {
            let batch: Vec<I::Item> = self.input.by_ref().take(self.chunk).collect();
            let n = batch.len();
            if n == 0 {
                return;
            }
            // A closed pool's items yield `Cancelled` wherever they would have run.
            if self.local && !self.core.is_closed() {
                self.pending.push_back(Pending::Local(batch));
                continue;
            }
            let f = Arc::clone(&self.f);
            let (done, handle) = packet();
            let (claim, guard) = claim(batch);
            let work = move || {
                let batch = guard.take();
                batch.map(|batch| timed_chunk(batch, &*f))
            };
            let job = Job::new(Arc::new(Cell::new(Plain(work), done)));
            let pending = match self.core.offer(job) {
                Ok(()) => Pending::Queued(handle, claim, n),
                Err((job, closed)) => {
                    // Take the input back before the job goes (its guard would
                    // clear it): nothing was queued, so nothing is counted.
                    let batch = claim.take();
                    drop(job);
                    match batch {
                        Some(batch) if !closed => Pending::Local(batch),
                        _ => Pending::Refused(n),
                    }
                }
            };
            self.pending.push_back(pending);
        }
    }
}

impl<'a, I, F, R> Iterator for PoolMap<'_, 'a, I, F, R>
where
    I: Iterator,
    I::Item: Send + 'a,
    F: Fn(I::Item) -> R + Send + Sync + 'a,
    R: Send + 'a,
{
    type Item = Result<R, TaskError>;

    /// The per-item path (the next result of the current chunk) is small and
    /// inlined into the caller's loop; moving to the next chunk is out of line.
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match self.current.next() {
            Some(result) => Some(result),
            None => self.next_chunk(),
        }
    }
}

impl<'a, I, F, R> PoolMap<'_, 'a, I, F, R>
where
    I: Iterator,
    I::Item: Send + 'a,
    F: Fn(I::Item) -> R + Send + Sync + 'a,
    R: Send + 'a,
{
    /// The current chunk is exhausted: refill the window, then run the oldest chunk
    /// here if no worker has started it, or wait for it (or yield the `Cancelled`
    /// items of a refused one).
    #[inline(never)]
    fn next_chunk(&mut self) -> Option<Result<R, TaskError>> {
        loop {
            if let Some(result) = self.current.next() {
                return Some(result);
            }
            if self.cancelled_left > 0 {
                self.cancelled_left -= 1;
                return Some(Err(TaskError::Cancelled));
            }
            self.fill();
            let (handle, claim, n) = match self.pending.pop_front()? {
                Pending::Refused(n) => {
                    self.cancelled_left = n;
                    continue;
                }
                Pending::Local(batch) if self.core.token().is_cancelled() => {
                    self.cancelled_left = batch.len();
                    continue;
                }
                Pending::Local(batch) => {
                    self.run_here(batch);
                    continue;
                }
                Pending::Queued(handle, claim, n) => (handle, claim, n),
            };
            if !self.core.token().is_cancelled() {
                let unstarted = claim.take();
                if let Some(batch) = unstarted {
                    drop(handle); // its job will find the input gone
                    self.run_here(batch);
                    continue;
                }
            }
            match handle.join() {
                Ok(Some((chunk, took))) => {
                    self.observe(took);
                    self.current = chunk;
                }
                Err(TaskError::Panicked(panic)) => {
                    self.cancelled_left = n - 1;
                    return Some(Err(TaskError::Panicked(panic)));
                }
                // `Ok(None)` cannot happen (the caller never waits for a chunk it
                // claimed); like a job dropped unrun, it yields `Cancelled` items.
                Ok(None) | Err(_) => self.cancelled_left = n,
            }
        }
    }
}

impl<'a, I, F, R> PoolMap<'_, 'a, I, F, R>
where
    I: Iterator,
    F: Fn(I::Item) -> R,
{
    /// Runs a chunk on the calling thread; its results are yielded next.
    fn run_here(&mut self, batch: Vec<I::Item>) {
        let (chunk, took) = timed_chunk(batch, &*self.f);
        self.observe(took);
        self.current = chunk;
    }

    /// Decides where the next chunks run from how long the last one took.
    fn observe(&mut self, took: Duration) {
        self.local = if self.local {
            took <= PARALLEL_ABOVE
        } else {
            took < LOCAL_BELOW
        };
    }
}

impl<I: Iterator, F, R> fmt::Debug for PoolMap<'_, '_, I, F, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolMap")
            .field("chunk", &self.chunk)
            .field("chunks_in_flight", &self.pending.len())
            .field("on_caller", &self.local)
            .finish()
    }
}
