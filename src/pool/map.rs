//! `map`: ordered results over a bounded window of in-flight work.
//!
//! Implementation notes. Items are cut into chunks, one pool job per chunk, so the
//! per-task cost (an allocation, a channel send and receive, a result slot) is paid
//! once per chunk, not once per item. At most `window / chunk` chunks are in flight,
//! where `window = queue_capacity + workers`: the iterator never pulls more than
//! `window` input items ahead of what it has yielded, so an endless input runs in
//! bounded memory. Results come back in input order because chunks are joined in
//! submission order. A panic is caught per item, so one panicking item yields
//! `Err(TaskError::Panicked)` in its place and its neighbours still run.
//!
//! The calling thread helps: it runs a due chunk no worker has started, keeps a chunk
//! the full queue refused, and runs later chunks while a worker runs the one it needs
//! ([`PoolMap::next_chunk`], [`PoolMap::help_until_finished`]), so `map` never waits
//! for work that is merely queued and never blocks on a full queue. Cheap items stay on
//! the caller, pulled one by one as a plain `Iterator::map` would ([`LOCAL_BELOW`]).
//! Order, the in-flight bound and panic isolation are the same on either side.
//!
//! Counting: each queued chunk is one submitted task; chunks and items run on the
//! caller without being queued are not counted ([`PoolMap::fill`]).

use std::collections::VecDeque;
use std::fmt;
use std::panic::Location;
use std::time::{Duration, Instant};

use self::claim::{claim, Claim};
use crate::panic::Panic;
use crate::pool::core::Core;
use crate::pool::task::{with_own_slot, Job, Plain, TaskError, TaskHandle};
use std::sync::Arc;

mod claim;

/// Most items one chunk carries: big enough to amortise the per-job cost on tiny
/// items, small enough to keep both workers busy on uneven ones.
const MAX_CHUNK: usize = 1024;
/// Chunks per thread (the workers and the caller) that an input of known length is
/// cut into at least, so every thread gets work and a slow chunk can be balanced.
const CHUNKS_PER_THREAD: usize = 4;

/// Most items the caller runs between two looks at the clock, when chunks are cheap:
/// the items that turn expensive in the middle of a run still run there, serially.
const MAX_RUN: usize = 4096;

/// A chunk that computes in less than this is cheaper to run on the caller than to
/// hand to a worker: `map` then keeps the following chunks on the caller.
///
/// Handing a chunk to a worker has a price of its own (the job, a wake-up, and the
/// chunk's input and results crossing between cores) on each side; when a chunk
/// computes in less than about twice that, the caller finishes sooner running every
/// chunk itself than handing them off and waiting for their results. So each chunk is
/// timed where it runs, and `map` switches between handing chunks to the workers and
/// running them on the caller, with hysteresis ([`PARALLEL_ABOVE`]).
///
/// On the caller there are no chunks: each item is pulled and run when it is asked
/// for, as a plain `Iterator::map` would, so nothing is buffered and one item is in
/// flight. The clock is read once per run of up to [`MAX_RUN`] items (a window, if
/// smaller), and the run's time, scaled to a chunk, decides where the next items go
/// ([`PoolMap::observe`]): items that turn expensive go back to the workers after the
/// run they turn in, so at most one run's worth of work runs serially by mistake. The
/// run's time includes whatever the consumer does between items, which errs towards
/// the workers, where a slow consumer overlaps with the work.
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
    /// The queue was full (or the pool token is cancelled while items run on the
    /// caller, whose items then yield `Cancelled`): the caller runs it when due.
    Local(Vec<T>),
    /// The pool is closed: the chunk's items yield `Cancelled`.
    Refused(usize),
    /// The caller ran it early, while it waited for an older chunk.
    Ran(Chunk<R>),
}

impl<T, R> Pending<T, R> {
    /// The chunk's items, each of which will yield one result.
    fn len(&self) -> usize {
        match self {
            Pending::Queued(_, _, n) | Pending::Refused(n) => *n,
            Pending::Local(batch) => batch.len(),
            Pending::Ran(chunk) => chunk.len(),
        }
    }
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

    fn empty() -> Self {
        Chunk::Clean(Vec::new().into_iter())
    }

    /// Results not yet yielded.
    fn len(&self) -> usize {
        match self {
            Chunk::Clean(values) => values.len(),
            Chunk::Mixed(results) => results.len(),
        }
    }

    fn fold<B>(self, init: B, g: &mut impl FnMut(B, Result<R, TaskError>) -> B) -> B {
        match self {
            Chunk::Clean(values) => values.fold(init, |acc, value| g(acc, Ok(value))),
            Chunk::Mixed(results) => results.fold(init, g),
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

/// Runs `f` over one item on the caller, catching a panic in its place.
#[inline]
fn call_one<T, R>(f: &impl Fn(T) -> R, item: T) -> Result<R, TaskError> {
    Panic::catch_any(|| f(item)).map_err(TaskError::Panicked)
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
/// still run (their results are dropped). Every input item yields exactly one result,
/// so `size_hint` is exact when the input's is (`len()` over a `Vec`, a slice or a
/// small `Range`), and once `None` comes, nothing else does.
#[must_use = "the map does nothing until it is iterated"]
pub struct PoolMap<'p, 'a, I: Iterator, F, R> {
    core: &'p Core<'a>,
    /// `None` once the input is exhausted (or taken out for a run in `fold`).
    input: Option<I>,
    f: Arc<F>,
    pending: VecDeque<Pending<I::Item, R>>,
    current: Chunk<R>,
    cancelled_left: usize,
    chunk: usize,
    max_chunks: usize,
    /// Chunks are cheap: new ones stay on the caller instead of going to the queue.
    local: bool,
    /// Items the caller still runs one at a time, as they are asked for, before the
    /// current run on the caller is timed.
    inline_left: usize,
    /// When the current run on the caller began.
    inline_since: Option<Instant>,
    /// How many items one run on the caller takes.
    run: usize,
    /// The line that called `map`, for the chunks' jobs.
    site: &'static Location<'static>,
}

impl<'p, 'a, I, F, R> PoolMap<'p, 'a, I, F, R>
where
    I: Iterator,
    I::Item: Send + 'a,
    F: Fn(I::Item) -> R + Send + Sync + 'a,
    R: Send + 'a,
{
    pub(crate) fn new(
        core: &'p Core<'a>,
        input: I,
        f: F,
        site: &'static Location<'static>,
    ) -> Self {
        let workers = core.workers();
        let window = core.capacity() + workers;
        let chunk = (window / (workers + 1)).clamp(1, MAX_CHUNK);
        // When the input says how long it is, cut it into at least a few chunks per
        // thread: a short input of expensive items must not fit in one chunk, which
        // one thread would run alone.
        let chunk = match input.size_hint().0 {
            0 => chunk,
            known => chunk.min(known.div_ceil(CHUNKS_PER_THREAD * (workers + 1))),
        };
        PoolMap {
            core,
            input: Some(input),
            f: Arc::new(f),
            pending: VecDeque::new(),
            current: Chunk::empty(),
            cancelled_left: 0,
            chunk,
            max_chunks: (window / chunk).max(1),
            local: false,
            inline_left: 0,
            inline_since: None,
            run: window.min(MAX_RUN),
            site,
        }
    }

    /// Pulls input and queues chunks until the window is full (one chunk ahead while
    /// chunks are cheap and stay on the caller).
    ///
    /// Counting: each queued chunk is one submitted task. One the caller ran leaves an
    /// empty job in the queue, which a worker counts as completed when it reaches it
    /// (or `shutdown_now` as never run: its items were run and yielded all the same).
    /// A chunk kept on the caller because the queue was full is not counted at all,
    /// and neither are items run on the caller because chunks were cheap.
    fn fill(&mut self) {
        let ahead = if self.local { 1 } else { self.max_chunks };
        while self.pending.len() < ahead {
            let batch: Vec<I::Item> = match &mut self.input {
                Some(input) => input.take(self.chunk).collect(),
                None => Vec::new(),
            };
            let n = batch.len();
            if n < self.chunk {
                self.end_input(); // ran out: never ask it again
            }
            if n == 0 {
                return;
            }
            // A closed pool's items yield `Cancelled` wherever they would have run.
            if self.local && !self.core.is_closed() {
                self.pending.push_back(Pending::Local(batch));
                continue;
            }
            let f = Arc::clone(&self.f);
            let (claim, guard) = claim(batch);
            let work = move || {
                let batch = guard.take();
                batch.map(|batch| timed_chunk(batch, &*f))
            };
            let (task, handle) = with_own_slot(Plain(work), None);
            let job = Job::in_epoch(task, 2, self.site);
            let pending = match self.core.try_queue(job) {
                Ok(()) => Pending::Queued(handle, claim, n),
                Err((job, closed)) => {
                    // Take the input back before the job goes (its guard would
                    // clear it): nothing was queued, so nothing is counted.
                    let batch = claim.take();
                    self.core.drop_unused(job);
                    match batch {
                        Some(batch) if !closed => Pending::Local(batch),
                        batch => {
                            self.core.drop_unused(batch);
                            Pending::Refused(n)
                        }
                    }
                }
            };
            self.pending.push_back(pending);
        }
    }

    /// The current chunk is exhausted: refill the window, then run the oldest chunk
    /// here if no worker has started it, or wait for it (or yield the `Cancelled`
    /// items of a refused one).
    ///
    /// When the caller needs the results of a chunk that no worker has started yet, it
    /// takes the chunk's input back and runs it itself (the queued job then finds
    /// nothing to do). A chunk's input is claimed once, by whichever comes first, and
    /// goes with its job if the pool drops the job unrun (an eviction, a
    /// `shutdown_now`): those items yield `Cancelled`, as the pool reported them. A
    /// chunk that finds the queue full is not queued at all: the caller keeps it and
    /// runs it when it is due. Without this the caller would wait for a worker to wake
    /// up (which dominates the cost of tiny items on a busy machine) or for queue room.
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
            // One clock read ends a run on the caller and starts the next.
            let mut now = None;
            if let Some(since) = self.inline_since.take() {
                let end = Instant::now();
                self.observe(end.saturating_duration_since(since), self.run);
                now = Some(end);
            }
            if self.local
                && self.pending.is_empty()
                && !self.core.is_closed()
                && !self.core.token().is_cancelled()
            {
                let item = self.input.as_mut().and_then(Iterator::next);
                let Some(item) = item else {
                    self.end_input();
                    return None;
                };
                self.inline_left = self.run - 1;
                self.inline_since = Some(now.unwrap_or_else(Instant::now));
                return Some(call_one(&*self.f, item));
            }
            self.fill();
            let (handle, claim, n) = match self.pending.pop_front()? {
                Pending::Refused(n) => {
                    self.cancelled_left = n;
                    continue;
                }
                Pending::Local(batch) if self.core.token().is_cancelled() => {
                    self.cancelled_left = batch.len();
                    self.core.drop_unused(batch);
                    continue;
                }
                Pending::Local(batch) => {
                    self.run_here(batch);
                    continue;
                }
                Pending::Ran(chunk) => {
                    self.current = chunk;
                    continue;
                }
                Pending::Queued(handle, claim, n) => (handle, claim, n),
            };
            // A chunk no worker has started is taken back: run here, or, once the
            // pool's token is cancelled, yielded as `Cancelled` (no worker will start
            // it then, and when this map runs on the pool's own last free worker,
            // waiting for one would wait for ever).
            if let Some(batch) = claim.take() {
                drop(handle); // its job will find the input gone
                if self.core.token().is_cancelled() {
                    self.cancelled_left = n;
                    self.core.drop_unused(batch);
                } else {
                    self.run_here(batch);
                }
                continue;
            }
            if !self.core.token().is_cancelled() {
                self.help_until_finished(&handle);
            }
            match handle.join() {
                Ok(Some((chunk, took))) => {
                    self.observe(took, n);
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

    /// The input ran out in the middle of a run on the caller.
    fn end_inline_run(&mut self) {
        self.inline_left = 0;
        self.end_input();
    }

    /// Lets go of the input iterator (a user value) inside the panic boundary.
    fn end_input(&mut self) {
        if let Some(input) = self.input.take() {
            self.core.drop_unused(input);
        }
    }

    /// While a worker runs the oldest chunk, the caller runs later ones no worker has
    /// started, keeping their results until they are due, rather than wait idle:
    /// waiting would leave a worker idle for every refill of a small window. The
    /// soonest due first, since the window then refills sooner. Each is tried once.
    /// The in-flight bound is unchanged: the caller runs only chunks already counted
    /// in it.
    fn help_until_finished<T>(&mut self, oldest: &TaskHandle<T>) {
        for i in 0..self.pending.len() {
            if oldest.is_finished() {
                return;
            }
            let batch = match &mut self.pending[i] {
                Pending::Queued(_, claim, _) => claim.take(),
                Pending::Local(batch) => Some(std::mem::take(batch)),
                Pending::Refused(_) | Pending::Ran(_) => None,
            };
            if let Some(batch) = batch {
                let n = batch.len();
                let (chunk, took) = timed_chunk(batch, &*self.f);
                self.observe(took, n);
                // Drops a queued chunk's handle: its job will find the input gone.
                self.pending[i] = Pending::Ran(chunk);
            }
        }
    }

    /// Runs a chunk on the calling thread; its results are yielded next.
    fn run_here(&mut self, batch: Vec<I::Item>) {
        let n = batch.len();
        let (chunk, took) = timed_chunk(batch, &*self.f);
        self.observe(took, n);
        self.current = chunk;
    }

    /// Decides where the next chunks run from how long the last `items` took: what a
    /// whole chunk of such items costs.
    fn observe(&mut self, took: Duration, items: usize) {
        let per_chunk = took.as_nanos() * self.chunk as u128 / items.max(1) as u128;
        self.local = if self.local {
            per_chunk <= PARALLEL_ABOVE.as_nanos()
        } else {
            per_chunk < LOCAL_BELOW.as_nanos()
        };
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
        if self.inline_left > 0 {
            if let Some(item) = self.input.as_mut().and_then(Iterator::next) {
                self.inline_left -= 1;
                return Some(call_one(&*self.f, item));
            }
            self.end_inline_run();
        }
        match self.current.next() {
            Some(result) => Some(result),
            None => self.next_chunk(),
        }
    }

    /// Exact when the input's is: every item yields one result, and so does every
    /// item already pulled (in flight, run, or refused).
    fn size_hint(&self) -> (usize, Option<usize>) {
        let pulled = self.current.len()
            + self.cancelled_left
            + self.pending.iter().map(Pending::len).sum::<usize>();
        match &self.input {
            Some(input) => {
                let (lower, upper) = input.size_hint();
                (
                    lower.saturating_add(pulled),
                    upper.and_then(|upper| upper.checked_add(pulled)),
                )
            }
            None => (pulled, Some(pulled)),
        }
    }

    /// Internal iteration (`for_each`, `sum`, `count`, ...): a run on the caller
    /// loops over the input held in a local of its own, which the compiler keeps in
    /// registers; `next` keeps it in the iterator, in memory, between calls.
    fn fold<B, G>(mut self, init: B, mut g: G) -> B
    where
        G: FnMut(B, Self::Item) -> B,
    {
        let mut acc = init;
        loop {
            if self.inline_left > 0 {
                if let Some(mut input) = self.input.take() {
                    let f = &*self.f;
                    let mut exhausted = false;
                    for _ in 0..self.inline_left {
                        match input.next() {
                            Some(item) => acc = g(acc, call_one(f, item)),
                            None => {
                                exhausted = true;
                                break;
                            }
                        }
                    }
                    if exhausted {
                        self.core.drop_unused(input);
                    } else {
                        self.input = Some(input);
                    }
                }
                self.inline_left = 0;
            }
            acc = std::mem::replace(&mut self.current, Chunk::empty()).fold(acc, &mut g);
            match self.next_chunk() {
                Some(result) => acc = g(acc, result),
                None => return acc,
            }
        }
    }
}

/// `len()` when the input has one (a `Vec`, a slice, a `Range`).
impl<'a, I, F, R> ExactSizeIterator for PoolMap<'_, 'a, I, F, R>
where
    I: ExactSizeIterator,
    I::Item: Send + 'a,
    F: Fn(I::Item) -> R + Send + Sync + 'a,
    R: Send + 'a,
{
}

/// Once it has yielded `None` it yields nothing more, even over an input that is
/// not fused.
impl<'a, I, F, R> std::iter::FusedIterator for PoolMap<'_, 'a, I, F, R>
where
    I: Iterator,
    I::Item: Send + 'a,
    F: Fn(I::Item) -> R + Send + Sync + 'a,
    R: Send + 'a,
{
}

/// Dropping the map early lets go of every user value it still holds (input items
/// of chunks not yet run, results not yet yielded, the input iterator) inside the
/// panic boundary; a panic from one of their destructors is kept for the pool's
/// shutdown report. Chunks already queued still run, their results dropped.
impl<I: Iterator, F, R> Drop for PoolMap<'_, '_, I, F, R> {
    fn drop(&mut self) {
        for pending in std::mem::take(&mut self.pending) {
            self.core.drop_unused(pending);
        }
        self.core
            .drop_unused(std::mem::replace(&mut self.current, Chunk::empty()));
        self.core.drop_unused(self.input.take());
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

#[cfg(all(test, not(loom)))]
mod tests {
    use crate::WorkerPool;

    #[test]
    fn a_short_input_is_cut_into_chunks_for_every_thread() {
        let pool = WorkerPool::builder()
            .workers(2)
            .queue_capacity(1024)
            .build()
            .unwrap();
        // 200 items, 2 workers and the caller: 12 chunks of 17, not one of 200.
        assert_eq!(pool.map(0..200, |x| x).chunk, 17);
        // Long inputs keep the chunk the queue allows.
        assert_eq!(pool.map(0..1_000_000, |x| x).chunk, 342);
        // An input of unknown length keeps it too.
        assert_eq!(pool.map((0..200).filter(|_| true), |x| x).chunk, 342);
        // Never below one item.
        assert_eq!(pool.map(0..1, |x| x).chunk, 1);
        pool.shutdown();
    }
}
