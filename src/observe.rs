//! What every corral thread is doing, and since when: the types of the live thread
//! dump ([`leak::dump`](crate::leak::dump)) and of the stuck-task watchdog.
//!
//! Each corral thread carries a small activity slot: its owner (kind, name, the line
//! of *your* code that built or spawned it), its [`Role`], what it is doing
//! ([`Activity`]) and what it is blocked on ([`Blocked`]). The owning thread updates
//! it with one relaxed store per transition; readers (the dump, a watchdog) compare
//! what they see across calls, so a task's running time is measured without a clock
//! read per task. A watchdog never starts a thread: it checks when its owner's threads
//! or the caller ask ([`leak::dump`](crate::leak::dump) runs every live watchdog).
//!
//! ```
//! let sem = corral::Semaphore::builder(1).name("db").build()?;
//! let held = sem.acquire().unwrap();
//! corral::scope(|s| {
//!     let waiter = s.spawn(|| sem.acquire().map(drop));
//!     # while !corral::leak::dump().to_string().contains("waiting for a permit") { std::thread::yield_now(); }
//!     println!("{}", corral::leak::dump()); // "... waiting for a permit of \"db\" for 0.0s"
//!     drop(held);
//!     waiter.join().unwrap().unwrap();
//! });
//! # Ok::<(), corral::ConfigError>(())
//! ```
//!
//! Metric names and labels (feature `metrics`) are listed in `docs/metrics.md`.

use std::collections::HashMap;
use std::fmt;
use std::panic::Location;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::clock::{Clock, SystemClock};

/// What a corral thread is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Role {
    /// A worker of a `WorkerPool` or `ScopedPool`.
    PoolWorker,
    /// The thread feeding a pipeline from its source.
    PipelineSource,
    /// A worker of a pipeline stage.
    StageWorker,
    /// The thread delivering a pipeline's output.
    Sink,
    /// A supervised child.
    SupervisorChild,
    /// A thread watching other threads (a supervisor's monitor).
    Monitor,
    /// A thread started by `Scope::spawn`.
    ScopeThread,
    /// A task of a `TaskGroup`.
    GroupTask,
    /// A thread corral did not start, shown while it waits on a corral primitive.
    Waiter,
    /// Any other corral thread.
    Other,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::PoolWorker => "pool worker",
            Role::PipelineSource => "pipeline source",
            Role::StageWorker => "stage worker",
            Role::Sink => "sink",
            Role::SupervisorChild => "supervisor child",
            Role::Monitor => "monitor",
            Role::ScopeThread => "scope thread",
            Role::GroupTask => "group task",
            Role::Waiter => "waiting thread",
            Role::Other => "thread",
        })
    }
}

/// What a corral thread's owner has it doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Activity {
    /// Waiting for work.
    Idle,
    /// Running user code: a task, an item, a child or a scoped closure.
    Running {
        /// Where the task was submitted (or the thread spawned), in the caller's code.
        site: Option<&'static Location<'static>>,
    },
    /// Waiting out a backoff before the next attempt.
    Backoff {
        /// When the backoff ends.
        until: Instant,
    },
    /// Winding down: finishing, draining or reporting before it exits.
    Stopping,
}

/// What a corral thread is blocked on inside a primitive, besides its [`Activity`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Blocked {
    /// Sending to a full queue.
    Sending {
        /// The queue's name (a pipeline stage, a pool).
        queue: String,
    },
    /// Waiting for permits of a semaphore.
    Permit {
        /// The semaphore's name (`"semaphore"` when it has none).
        semaphore: String,
    },
    /// Waiting for a rate limiter's slot.
    RateLimit {
        /// The limiter's name (`"rate limiter"` when it has none).
        limiter: String,
    },
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Blocked::Sending { queue } => write!(f, "blocked sending to queue {queue:?}"),
            Blocked::Permit { semaphore } => write!(f, "waiting for a permit of {semaphore:?}"),
            Blocked::RateLimit { limiter } => write!(f, "waiting for a slot of {limiter:?}"),
        }
    }
}

/// One live corral thread in a [`Dump`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ThreadInfo {
    /// The thread's name (`corral-...`).
    pub name: String,
    /// The owning type (`WorkerPool`, `Pipeline`, `Scope`, ...).
    pub owner: &'static str,
    /// The owner's name, if it was given one.
    pub owner_name: Option<String>,
    /// Where the owner was built or the thread spawned, in the caller's code; for a
    /// thread corral did not start ([`Role::Waiter`]), where it waits.
    pub spawned_at: &'static Location<'static>,
    /// What the thread is for.
    pub role: Role,
    /// What its owner has it doing.
    pub activity: Activity,
    /// Since when, as far as corral knows: a task's start is not stamped, so a task
    /// first seen by a dump or watchdog counts from that observation.
    pub since: Instant,
    /// What it is blocked on, and since when.
    pub blocked: Option<(Blocked, Instant)>,
    /// A watchdog reported its current task as stuck.
    pub stuck: bool,
    owner_id: u64,
}

impl ThreadInfo {
    /// How long the thread has been in its current state (blocked, or else its
    /// activity) at `now`.
    pub fn waiting_for(&self, now: Instant) -> Duration {
        let since = self.blocked.as_ref().map_or(self.since, |b| b.1);
        now.saturating_duration_since(since)
    }
}

/// Every live corral thread, from [`leak::dump`](crate::leak::dump). `Display` prints
/// a table grouped by owner, longest-waiting first.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Dump {
    /// When the dump was taken.
    pub taken_at: Instant,
    /// The threads, grouped by owner, longest-waiting first.
    pub threads: Vec<ThreadInfo>,
}

impl fmt::Display for Dump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "corral thread dump: {} thread(s)", self.threads.len())?;
        let now = self.taken_at;
        let mut last = None;
        for t in &self.threads {
            if last != Some(t.owner_id) {
                last = Some(t.owner_id);
                write!(f, "\n{}", t.owner)?;
                if let Some(name) = &t.owner_name {
                    write!(f, " {name:?}")?;
                }
                write!(f, " (at {})", t.spawned_at)?;
            }
            write!(f, "\n  {:<24} {:<16} ", t.name, t.role.to_string())?;
            let age = |at: Instant| secs(now.saturating_duration_since(at));
            match t.activity {
                Activity::Idle => write!(f, "idle for {}", age(t.since))?,
                Activity::Running { site } => {
                    write!(f, "running for {}", age(t.since))?;
                    if let Some(site) = site {
                        write!(f, " (from {site})")?;
                    }
                }
                Activity::Backoff { until } => write!(
                    f,
                    "parked in backoff, {} left",
                    secs(until.saturating_duration_since(now))
                )?,
                Activity::Stopping => write!(f, "stopping for {}", age(t.since))?,
            }
            if let Some((blocked, since)) = &t.blocked {
                write!(f, ", {blocked} for {}", age(*since))?;
            }
            if t.stuck {
                f.write_str("  [STUCK]")?;
            }
        }
        Ok(())
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// A task, item or child that a watchdog found running past its threshold.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Stuck {
    /// The thread running it.
    pub thread: String,
    /// The owning type.
    pub owner: &'static str,
    /// The owner's name, if any.
    pub owner_name: Option<String>,
    /// Where it was submitted (or its thread spawned), in the caller's code.
    pub site: Option<&'static Location<'static>>,
    /// How long it had been running, at least, when found.
    pub running_for: Duration,
}

impl fmt::Display for Stuck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.owner)?;
        if let Some(name) = &self.owner_name {
            write!(f, " {name:?}")?;
        }
        write!(
            f,
            ": {} running for {}",
            self.thread,
            secs(self.running_for)
        )?;
        if let Some(site) = self.site {
            write!(f, " (from {site})")?;
        }
        Ok(())
    }
}

// ---- crate-private: owners, slots, transitions ----

/// Who owns a set of threads: shared by the owner and every thread it starts.
#[derive(Debug)]
pub(crate) struct Owner {
    kind: &'static str,
    name: Option<Arc<str>>,
    site: &'static Location<'static>,
    id: u64,
    threads: Mutex<Vec<Weak<Slot>>>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);
/// Every live slot (the leak registry holds the strong references).
static ALL: Mutex<Vec<Weak<Slot>>> = Mutex::new(Vec::new());

fn all_threads() -> Vec<Arc<Slot>> {
    ALL.lock().iter().filter_map(Weak::upgrade).collect()
}

impl Owner {
    /// An owner built at the caller's location (`#[track_caller]` up to the user).
    #[track_caller]
    pub(crate) fn new(kind: &'static str, name: Option<Arc<str>>) -> Arc<Owner> {
        Owner::new_at(kind, name, Location::caller())
    }

    /// An owner built on behalf of the caller's code at `site` (a supervisor that a
    /// parent supervisor starts for a subtree declared there).
    pub(crate) fn new_at(
        kind: &'static str,
        name: Option<Arc<str>>,
        site: &'static Location<'static>,
    ) -> Arc<Owner> {
        Arc::new(Owner {
            kind,
            name,
            site,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            threads: Mutex::new(Vec::new()),
        })
    }

    /// The owner's name, if it was given one.
    pub(crate) fn name(&self) -> Option<&Arc<str>> {
        self.name.as_ref()
    }

    /// The owner's live threads.
    fn threads(&self) -> Vec<Arc<Slot>> {
        let mut threads = self.threads.lock();
        threads.retain(|t| t.strong_count() > 0);
        threads.iter().filter_map(Weak::upgrade).collect()
    }
}

// Activity kinds in the low bits of a slot's word, then a bit saying whether `stamp`
// belongs to this activity; the rest is a generation count, so every transition
// gives a new word and a reader can tell "still the same task".
const IDLE: u64 = 0;
const RUNNING: u64 = 1;
const BACKOFF: u64 = 2;
const STOPPING: u64 = 3;
const KIND_MASK: u64 = 0b11;
const STAMPED: u64 = 0b100;
const KIND_BITS: u64 = 3;
// Blocked kinds (0 = not blocked).
const NOT_BLOCKED: u64 = 0;
const SENDING: u64 = 1;
const PERMIT: u64 = 2;
const RATE: u64 = 3;

/// One corral thread: who it is (fixed at spawn) and what it is doing (written only
/// by that thread).
#[derive(Debug)]
pub(crate) struct Slot {
    id: u64,
    name: String,
    owner_kind: &'static str,
    owner: Option<Arc<Owner>>,
    role: Role,
    spawned_at: &'static Location<'static>,
    word: AtomicU64,
    /// The activity's start (or, in backoff, its end), as [`to_nanos`]; 0 when not
    /// stamped.
    stamp: AtomicU64,
    site: AtomicPtr<Location<'static>>,
    blocked: AtomicU64,
    blocked_stamp: AtomicU64,
    subject: Mutex<Option<Arc<str>>>,
    /// The address of `subject`'s text (0: none or unnamed), so a thread blocking on
    /// the same queue again skips the lock: only the slot's own thread writes either.
    subject_key: AtomicUsize,
    /// The word a watchdog reported stuck (0: none; a live word is never 0, since
    /// the generation starts at 1).
    stuck: AtomicU64,
}

impl Slot {
    /// The slot of a thread about to be spawned at `spawned_at` to run user code;
    /// registered with its owner, if any.
    pub(crate) fn new(
        name: String,
        owner_kind: &'static str,
        owner: Option<Arc<Owner>>,
        role: Role,
        spawned_at: &'static Location<'static>,
    ) -> Arc<Slot> {
        let site = owner.as_ref().map_or(spawned_at, |o| o.site);
        let slot = Arc::new(Slot {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            name,
            owner_kind,
            owner,
            role,
            spawned_at: site,
            word: AtomicU64::new((1 << KIND_BITS) | STAMPED | RUNNING),
            stamp: AtomicU64::new(to_nanos(Instant::now())),
            site: AtomicPtr::new(site as *const Location<'static> as *mut _),
            blocked: AtomicU64::new(NOT_BLOCKED),
            blocked_stamp: AtomicU64::new(0),
            subject: Mutex::new(None),
            subject_key: AtomicUsize::new(0),
            stuck: AtomicU64::new(0),
        });
        if let Some(owner) = &slot.owner {
            owner.threads.lock().push(Arc::downgrade(&slot));
        }
        let mut all = ALL.lock();
        all.retain(|t| t.strong_count() > 0);
        all.push(Arc::downgrade(&slot));
        slot
    }

    /// The thread's full name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Where the thread was spawned, in the caller's code (its owner's creation site
    /// for an owned thread).
    pub(crate) fn spawned_at(&self) -> &'static Location<'static> {
        self.spawned_at
    }

    #[inline]
    fn set(&self, kind: u64) {
        let word = self.word.load(Ordering::Relaxed);
        let next = ((word >> KIND_BITS).wrapping_add(1) << KIND_BITS) | kind;
        self.word.store(next, Ordering::Release);
    }

    /// Waiting for work. Reads the clock: call it before parking, not per task.
    pub(crate) fn idle(&self) {
        if self.word.load(Ordering::Relaxed) & (KIND_MASK | STAMPED) == STAMPED | IDLE {
            return; // still idle since the stamp: parking again changes nothing
        }
        self.stamp
            .store(to_nanos(Instant::now()), Ordering::Relaxed);
        self.set(STAMPED | IDLE);
    }

    /// Running a task submitted at `site`, unstamped (see [`ThreadInfo::since`]): one
    /// relaxed store when the site is the previous task's, two otherwise.
    #[inline]
    pub(crate) fn running(&self, site: &'static Location<'static>) {
        let ptr = site as *const Location<'static> as *mut _;
        if self.site.load(Ordering::Relaxed) != ptr {
            self.site.store(ptr, Ordering::Relaxed);
        }
        self.set(RUNNING);
    }

    /// Parked in backoff until `until`.
    pub(crate) fn backoff_until(&self, until: Instant) {
        self.stamp.store(to_nanos(until), Ordering::Relaxed);
        self.set(STAMPED | BACKOFF);
    }

    /// Winding down.
    pub(crate) fn stopping(&self) {
        self.stamp
            .store(to_nanos(Instant::now()), Ordering::Relaxed);
        self.set(STAMPED | STOPPING);
    }

    fn block(&self, kind: u64, key: usize, subject: impl FnOnce() -> Arc<str>) {
        // The subject held in the slot keeps its text alive, so an equal key is the
        // same subject, never a new one at a reused address.
        if key == 0 || self.subject_key.load(Ordering::Relaxed) != key {
            *self.subject.lock() = Some(subject());
            self.subject_key.store(key, Ordering::Relaxed);
        }
        self.blocked_stamp
            .store(to_nanos(Instant::now()), Ordering::Relaxed);
        self.blocked.store(kind, Ordering::Release);
    }

    fn site(&self) -> Option<&'static Location<'static>> {
        let ptr = self.site.load(Ordering::Relaxed);
        // SAFETY: `site` only ever holds a pointer made from a `&'static Location`.
        #[allow(unsafe_code)]
        unsafe {
            ptr.cast_const().as_ref()
        }
    }

    /// What the slot says at `now`; `seen` stands in for an unstamped start.
    fn read(&self, seen: &mut Observed, now: Instant) -> ThreadInfo {
        let word = self.word.load(Ordering::Acquire);
        let stamp = match word & STAMPED {
            0 => None,
            _ => from_nanos(self.stamp.load(Ordering::Relaxed)),
        };
        let first = seen.first_seen(self.id, word, now);
        let (activity, since) = match word & KIND_MASK {
            IDLE => (Activity::Idle, stamp.unwrap_or(first)),
            RUNNING => (
                Activity::Running { site: self.site() },
                stamp.unwrap_or(first),
            ),
            BACKOFF => (
                Activity::Backoff {
                    until: stamp.unwrap_or(now),
                },
                first,
            ),
            _ => (Activity::Stopping, stamp.unwrap_or(first)),
        };
        let blocked = match self.blocked.load(Ordering::Acquire) {
            NOT_BLOCKED => None,
            kind => {
                let at = from_nanos(self.blocked_stamp.load(Ordering::Relaxed)).unwrap_or(now);
                let name = self.subject.lock().as_deref().unwrap_or("").to_owned();
                let blocked = match kind {
                    SENDING => Blocked::Sending { queue: name },
                    PERMIT => Blocked::Permit { semaphore: name },
                    _ => Blocked::RateLimit { limiter: name },
                };
                Some((blocked, at))
            }
        };
        ThreadInfo {
            name: self.name.clone(),
            owner: self.owner.as_ref().map_or(self.owner_kind, |o| o.kind),
            owner_name: self
                .owner
                .as_ref()
                .and_then(|o| o.name.as_deref().map(str::to_owned)),
            spawned_at: self.spawned_at,
            role: self.role,
            activity,
            since,
            blocked,
            stuck: self.stuck.load(Ordering::Relaxed) == word,
            // Threads without an owner (scope threads) each form their own group.
            owner_id: self.owner.as_ref().map_or(u64::MAX - self.id, |o| o.id),
        }
    }
}

/// Marks the current thread blocked until dropped. A no-op on threads corral did
/// not start.
#[must_use]
pub(crate) struct BlockedGuard(Option<Arc<Slot>>);

impl Drop for BlockedGuard {
    fn drop(&mut self) {
        if let Some(slot) = &self.0 {
            slot.blocked.store(NOT_BLOCKED, Ordering::Release);
        }
    }
}

/// Marks the current thread blocked. A thread corral did not start gets a slot for
/// the length of the wait, so the dump shows it too, at the line that waits.
#[track_caller]
fn blocked(kind: u64, subject: Option<&Arc<str>>, unnamed: &'static str) -> BlockedGuard {
    blocked_at(kind, subject, unnamed, Location::caller())
}

/// As [`blocked`], waiting at `at`.
fn blocked_at(
    kind: u64,
    subject: Option<&Arc<str>>,
    unnamed: &'static str,
    at: &'static Location<'static>,
) -> BlockedGuard {
    if cfg!(loom) && current().is_none() {
        // Loom's model threads are not shown (and a slot would read the wall clock).
        return BlockedGuard(None);
    }
    let slot = current().unwrap_or_else(|| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed").to_owned();
        Slot::new(name, "thread", None, Role::Waiter, at)
    });
    let key = subject.map_or(0, |s| Arc::as_ptr(s) as *const u8 as usize);
    slot.block(kind, key, || {
        subject.cloned().unwrap_or_else(|| Arc::from(unnamed))
    });
    BlockedGuard(Some(slot))
}

/// The current thread is about to wait for permits of the semaphore `name`.
#[track_caller]
pub(crate) fn waiting_for_permit(name: Option<&Arc<str>>) -> BlockedGuard {
    blocked(PERMIT, name, "semaphore")
}

/// The current thread is about to wait for a rate limiter's slot.
#[track_caller]
pub(crate) fn waiting_for_rate(name: Option<&Arc<str>>) -> BlockedGuard {
    blocked(RATE, name, "rate limiter")
}

/// The current thread is about to block sending to the full queue `queue`, from
/// `at` in the caller's code (a pool's submit line).
pub(crate) fn sending_from(queue: &Arc<str>, at: &'static Location<'static>) -> BlockedGuard {
    blocked_at(SENDING, Some(queue), "queue", at)
}

thread_local! {
    static CURRENT: std::cell::RefCell<Option<Arc<Slot>>> =
        const { std::cell::RefCell::new(None) };
}

/// The current corral thread's slot (`None` on other threads). A worker takes it
/// once when it starts and keeps the `Arc` for its transitions.
pub(crate) fn current() -> Option<Arc<Slot>> {
    CURRENT.try_with(|c| c.borrow().clone()).ok().flatten()
}

/// Called first thing on a new corral thread.
pub(crate) fn enter(slot: Arc<Slot>) {
    CURRENT.with(|c| *c.borrow_mut() = Some(slot));
}

// ---- time stamps: nanoseconds from a process base ----

fn base() -> Instant {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

// Offset by 2^62 so that instants before the base (a ManualClock made early) still
// fit, and 0 stays free to mean "none".
const OFFSET: u64 = 1 << 62;

fn to_nanos(at: Instant) -> u64 {
    let b = base();
    let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let n = if at >= b {
        OFFSET.saturating_add(nanos(at - b))
    } else {
        OFFSET.saturating_sub(nanos(b - at))
    };
    n.max(1)
}

fn from_nanos(n: u64) -> Option<Instant> {
    let b = base();
    match n {
        0 => None,
        n if n >= OFFSET => b.checked_add(Duration::from_nanos(n - OFFSET)),
        n => b.checked_sub(Duration::from_nanos(OFFSET - n)),
    }
}

// ---- observations: when a reader first saw a slot's word ----

#[derive(Default)]
struct Observed(HashMap<u64, (u64, Instant)>);

impl Observed {
    fn first_seen(&mut self, id: u64, word: u64, now: Instant) -> Instant {
        let entry = self.0.entry(id).or_insert((word, now));
        if entry.0 != word {
            *entry = (word, now);
        }
        entry.1
    }

    fn keep(&mut self, live: &[Arc<Slot>]) {
        self.0.retain(|id, _| live.iter().any(|t| t.id == *id));
    }
}

static DUMP_SEEN: Mutex<Option<Observed>> = Mutex::new(None);

/// A dump of every live corral thread, and of every other thread waiting on a
/// corral primitive, taken after running every live watchdog.
pub(crate) fn dump() -> Dump {
    run_watchdogs();
    let threads = all_threads();
    let now = Instant::now();
    let mut out: Vec<ThreadInfo> = {
        let mut guard = DUMP_SEEN.lock();
        let seen = guard.get_or_insert_with(Observed::default);
        seen.keep(&threads);
        threads.iter().map(|t| t.read(seen, now)).collect()
    };
    // Longest-waiting owner first; within an owner, longest-waiting thread first.
    let mut oldest: HashMap<u64, Instant> = HashMap::new();
    for t in &out {
        let since = now - t.waiting_for(now);
        let e = oldest.entry(t.owner_id).or_insert(since);
        *e = (*e).min(since);
    }
    out.sort_by_key(|t| (oldest[&t.owner_id], t.owner_id, now - t.waiting_for(now)));
    Dump {
        taken_at: now,
        threads: out,
    }
}

// ---- the watchdog ----

type OnStuck = Box<dyn Fn(&Stuck) + Send + Sync>;

/// Reports tasks that run past a threshold, once each, with the line that submitted
/// them; marks them `[STUCK]` in the dump. It starts no thread: it looks when asked,
/// by [`check`](Watchdog::check), by [`leak::dump`](crate::leak::dump), or by the
/// threads of the primitive it watches.
///
/// A task's start is not time-stamped (that would cost a clock read per task): the
/// watchdog counts from the first check that sees it, so it reports late rather
/// than early, and a check at least every `threshold` bounds the delay.
///
/// ```
/// use corral::{clock::ManualClock, observe::Watchdog};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let watchdog = Watchdog::builder(Duration::from_secs(5)).clock(clock.clone()).build();
/// let (release, hang) = std::sync::mpsc::channel::<()>();
/// corral::scope(|s| {
///     s.spawn_named("hung-handler", move || hang.recv());
///     let mine = |w: &Watchdog| w.check().into_iter().filter(|s| s.thread == "corral-hung-handler").count();
///     assert_eq!(mine(&watchdog), 0); // first seen now
///     clock.advance(Duration::from_secs(5));
///     assert_eq!(mine(&watchdog), 1); // reported once...
///     assert_eq!(mine(&watchdog), 0); // ...and only once
///     release.send(()).unwrap();
/// });
/// ```
pub struct Watchdog {
    inner: Arc<WatchInner>,
}

/// Configures a [`Watchdog`].
#[must_use = "a builder does nothing until `build` is called"]
pub struct WatchdogBuilder {
    threshold: Duration,
    clock: Arc<dyn Clock>,
    on_stuck: OnStuck,
}

impl fmt::Debug for WatchdogBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchdogBuilder")
            .field("threshold", &self.threshold)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl WatchdogBuilder {
    /// The clock the watchdog measures with (default: [`SystemClock`]).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The clock, shared with its owner.
    pub(crate) fn shared_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Called once per stuck task, on the thread that runs the check, inside the
    /// panic boundary (a panic in it is caught and dropped).
    pub fn on_stuck(mut self, f: impl Fn(&Stuck) + Send + Sync + 'static) -> Self {
        self.on_stuck = Box::new(f);
        self
    }

    /// A watchdog over every corral thread running user code.
    pub fn build(self) -> Watchdog {
        Watchdog::new(None, self)
    }

    /// A watchdog over `owner`'s threads.
    pub(crate) fn build_for(self, owner: &Arc<Owner>) -> Watchdog {
        Watchdog::new(Some(owner.clone()), self)
    }
}

struct WatchInner {
    owner: Option<Arc<Owner>>,
    threshold: Duration,
    clock: Arc<dyn Clock>,
    on_stuck: OnStuck,
    state: Mutex<WatchState>,
}

#[derive(Default)]
struct WatchState {
    seen: Observed,
    /// Per thread id: the word already reported.
    reported: HashMap<u64, u64>,
}

impl fmt::Debug for Watchdog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watchdog")
            .field("threshold", &self.inner.threshold)
            .field("clock", &self.inner.clock)
            .finish_non_exhaustive()
    }
}

static WATCHDOGS: Mutex<Vec<Weak<WatchInner>>> = Mutex::new(Vec::new());

impl Watchdog {
    /// A watchdog that reports tasks running for `threshold` or longer.
    pub fn builder(threshold: Duration) -> WatchdogBuilder {
        WatchdogBuilder {
            threshold,
            clock: Arc::new(SystemClock),
            on_stuck: Box::new(|_| {}),
        }
    }

    fn new(owner: Option<Arc<Owner>>, b: WatchdogBuilder) -> Watchdog {
        let inner = Arc::new(WatchInner {
            owner,
            threshold: b.threshold,
            clock: b.clock,
            on_stuck: b.on_stuck,
            state: Mutex::new(WatchState::default()),
        });
        let mut all = WATCHDOGS.lock();
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(&inner));
        Watchdog { inner }
    }

    /// Looks at the threads now; returns the tasks newly found running for the
    /// threshold or longer (each task is reported once, also to the callback).
    pub fn check(&self) -> Vec<Stuck> {
        self.inner.check()
    }
}

impl WatchInner {
    fn check(&self) -> Vec<Stuck> {
        let threads = match &self.owner {
            Some(owner) => owner.threads(),
            None => all_threads(),
        };
        let now = self.clock.now();
        let mut found = Vec::new();
        {
            let mut state = self.state.lock();
            let state = &mut *state;
            state.seen.keep(&threads);
            state
                .reported
                .retain(|id, _| threads.iter().any(|t| t.id == *id));
            for t in &threads {
                let word = t.word.load(Ordering::Acquire);
                let first = state.seen.first_seen(t.id, word, now);
                let running_for = now.saturating_duration_since(first);
                if word & KIND_MASK != RUNNING
                    || t.role == Role::Waiter
                    || state.reported.get(&t.id) == Some(&word)
                    || running_for < self.threshold
                {
                    continue;
                }
                state.reported.insert(t.id, word);
                t.stuck.store(word, Ordering::Relaxed);
                let owner = t.owner.as_ref();
                found.push(Stuck {
                    thread: t.name.clone(),
                    owner: owner.map_or(t.owner_kind, |o| o.kind),
                    owner_name: owner.and_then(|o| o.name.as_deref().map(str::to_owned)),
                    site: t.site(),
                    running_for,
                });
            }
        }
        for stuck in &found {
            event::stuck(stuck);
            crate::panic::drop_quietly(crate::panic::Panic::catch_any(|| (self.on_stuck)(stuck)));
        }
        found
    }
}

fn run_watchdogs() {
    let all: Vec<Arc<WatchInner>> = WATCHDOGS.lock().iter().filter_map(Weak::upgrade).collect();
    for w in all {
        w.check();
    }
}

/// Events (feature `tracing`) and metrics (feature `metrics`): without the feature
/// every function here is empty and every handle a zero-sized no-op. Events are
/// emitted under the target `corral`, with the primitive's kind and name as fields.
/// Metric handles are registered when a primitive is built, so install the
/// recorder first.
pub(crate) mod event {
    use super::Stuck;

    /// The name label of an unnamed primitive.
    #[cfg(feature = "metrics")]
    fn label(name: Option<&str>) -> String {
        name.unwrap_or("").to_owned()
    }

    /// A counter handle (`metrics::Counter`), or nothing.
    #[derive(Clone)]
    pub(crate) struct Counter(#[cfg(feature = "metrics")] metrics::Counter);

    impl std::fmt::Debug for Counter {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Counter")
        }
    }

    impl Counter {
        /// Registers the counter `metric{kind, name}`.
        #[allow(unused_variables)]
        pub(crate) fn new(metric: &'static str, kind: &'static str, name: Option<&str>) -> Self {
            #[cfg(feature = "metrics")]
            return Counter(metrics::counter!(metric, "kind" => kind, "name" => label(name)));
            #[cfg(not(feature = "metrics"))]
            Counter()
        }

        /// Registers the counter `metric{kind, name, key=value}` (say, a pipeline
        /// stage's `stage`).
        #[allow(unused_variables, dead_code)] // used by the pipeline
        pub(crate) fn labeled(
            metric: &'static str,
            kind: &'static str,
            name: Option<&str>,
            (key, value): (&'static str, &str),
        ) -> Self {
            #[cfg(feature = "metrics")]
            return Counter(
                metrics::counter!(metric, "kind" => kind, "name" => label(name), key => value.to_owned()),
            );
            #[cfg(not(feature = "metrics"))]
            Counter()
        }

        /// Adds `n`.
        #[inline]
        #[allow(unused_variables)]
        pub(crate) fn add(&self, n: u64) {
            #[cfg(feature = "metrics")]
            self.0.increment(n);
        }
    }

    /// A gauge handle (`metrics::Gauge`), or nothing.
    #[derive(Clone)]
    pub(crate) struct Gauge(#[cfg(feature = "metrics")] metrics::Gauge);

    impl std::fmt::Debug for Gauge {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Gauge")
        }
    }

    impl Gauge {
        /// Registers the gauge `metric{kind, name}`.
        #[allow(unused_variables)]
        pub(crate) fn new(metric: &'static str, kind: &'static str, name: Option<&str>) -> Self {
            #[cfg(feature = "metrics")]
            return Gauge(metrics::gauge!(metric, "kind" => kind, "name" => label(name)));
            #[cfg(not(feature = "metrics"))]
            Gauge()
        }

        /// Sets the value.
        #[inline]
        #[allow(unused_variables)]
        pub(crate) fn set(&self, value: f64) {
            #[cfg(feature = "metrics")]
            self.0.set(value);
        }
    }

    /// A histogram handle (`metrics::Histogram`), or nothing.
    #[derive(Clone)]
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))] // built under `metrics` only
    pub(crate) struct Histogram(#[cfg(feature = "metrics")] metrics::Histogram);

    impl std::fmt::Debug for Histogram {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Histogram")
        }
    }

    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    impl Histogram {
        /// Registers the histogram `metric{kind, name}` (values in seconds).
        #[allow(unused_variables)]
        pub(crate) fn new(metric: &'static str, kind: &'static str, name: Option<&str>) -> Self {
            #[cfg(feature = "metrics")]
            return Histogram(metrics::histogram!(metric, "kind" => kind, "name" => label(name)));
            #[cfg(not(feature = "metrics"))]
            Histogram()
        }

        /// Registers the histogram `metric{kind, name, key=value}` (values in seconds).
        #[allow(unused_variables)]
        pub(crate) fn labeled(
            metric: &'static str,
            kind: &'static str,
            name: Option<&str>,
            (key, value): (&'static str, &str),
        ) -> Self {
            #[cfg(feature = "metrics")]
            return Histogram(
                metrics::histogram!(metric, "kind" => kind, "name" => label(name), key => value.to_owned()),
            );
            #[cfg(not(feature = "metrics"))]
            Histogram()
        }

        /// Records one duration.
        #[inline]
        #[allow(unused_variables)]
        pub(crate) fn record(&self, value: std::time::Duration) {
            #[cfg(feature = "metrics")]
            self.0.record(value.as_secs_f64());
        }
    }

    /// Emits an event at `$level` (`error`, `warn`, `info`, `debug`, `trace`) with
    /// the primitive's `kind` and `name` and further `field = value` pairs; nothing
    /// without the `tracing` feature (the arguments are not even evaluated).
    macro_rules! emit {
        ($level:ident, $kind:expr, $name:expr, $msg:literal $(, $field:ident = $value:expr)* $(,)?) => {{
            #[cfg(feature = "tracing")]
            ::tracing::$level!(
                target: "corral",
                kind = $kind,
                name = $name.unwrap_or(""),
                $($field = $value,)*
                $msg
            );
            // Without the feature the arguments count as used but never run.
            #[cfg(not(feature = "tracing"))]
            if false {
                let _ = ($kind, $name, $(&$value,)*);
            }
        }};
    }
    #[allow(unused_imports)] // used by the pool, pipeline and supervisor too
    pub(crate) use emit;

    /// A watchdog found a stuck task (warn).
    pub(crate) fn stuck(stuck: &Stuck) {
        emit!(
            warn,
            stuck.owner,
            stuck.owner_name.as_deref(),
            "task running past the watchdog's threshold",
            thread = stuck.thread.as_str(),
            site = stuck
                .site
                .map(|s| s.to_string())
                .unwrap_or_default()
                .as_str(),
            running_for_s = stuck.running_for.as_secs_f64(),
        );
    }

    /// A rate limiter refused a call (debug).
    #[inline]
    pub(crate) fn rate_refused(kind: &'static str, name: Option<&str>) {
        emit!(debug, kind, name, "rate limit refused a call");
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn an_owned_slot_reads_back_every_transition() {
        let owner = Owner::new("WorkerPool", Some(Arc::from("api")));
        let slot = Slot::new(
            "corral-api-0".into(),
            "WorkerPool",
            Some(owner.clone()),
            Role::PoolWorker,
            Location::caller(),
        );
        let mut seen = Observed::default();
        let t0 = Instant::now();
        slot.idle();
        let info = slot.read(&mut seen, t0);
        assert_eq!(info.activity, Activity::Idle);
        assert_eq!(info.owner_name.as_deref(), Some("api"));
        assert_eq!((info.role, info.owner), (Role::PoolWorker, "WorkerPool"));
        assert_eq!(info.spawned_at.file(), file!());
        assert!(info.since <= Instant::now());

        let here = Location::caller();
        slot.running(here);
        let later = t0 + Duration::from_secs(3);
        let info = slot.read(&mut seen, later);
        assert_eq!(info.activity, Activity::Running { site: Some(here) });
        assert_eq!(
            info.since, later,
            "an unstamped task counts from its first sighting"
        );
        let info = slot.read(&mut seen, later + Duration::from_secs(1));
        assert_eq!(info.since, later, "the same task keeps its first sighting");

        let until = t0 + Duration::from_secs(5);
        slot.backoff_until(until);
        assert_eq!(
            slot.read(&mut seen, t0).activity,
            Activity::Backoff { until }
        );
        slot.stopping();
        assert_eq!(slot.read(&mut seen, t0).activity, Activity::Stopping);
    }

    #[test]
    fn an_owner_watchdog_reports_each_task_once_past_its_threshold() {
        let owner = Owner::new("WorkerPool", None);
        let slot = Slot::new(
            "corral-pool-0".into(),
            "WorkerPool",
            Some(owner.clone()),
            Role::PoolWorker,
            Location::caller(),
        );
        let clock = ManualClock::new();
        let watchdog = Watchdog::builder(Duration::from_secs(1))
            .clock(clock.clone())
            .build_for(&owner);
        let submit = Location::caller();
        slot.running(submit);
        assert!(watchdog.check().is_empty());
        clock.advance(Duration::from_secs(1));
        let found = watchdog.check();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].site, Some(submit));
        assert!(watchdog.check().is_empty(), "once");
        // The next task is a new one: reported again once past its own threshold.
        slot.running(submit);
        assert!(watchdog.check().is_empty());
        clock.advance(Duration::from_secs(1));
        assert_eq!(watchdog.check().len(), 1);
        // Idle workers are never stuck.
        slot.idle();
        clock.advance(Duration::from_secs(60));
        assert!(watchdog.check().is_empty());
        drop(slot);
        assert!(owner.threads().is_empty());
    }
}
