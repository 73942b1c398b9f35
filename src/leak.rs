//! Thread-leak checks: which corral threads are alive, and a test guard that fails
//! when threads outlive it.
//!
//! Every thread corral starts is registered here from the moment it is spawned until
//! its closure has returned (or unwound). [`live_threads`] lists them with their
//! owner and name. [`LeakCheck`] is the goleak of Rust tests: create it at the start
//! of a test, and when it drops it waits (up to a grace period) for the threads
//! started under it to end, and panics naming those that did not.
//!
//! Threads are attributed to a check, not counted globally: a thread belongs to every
//! `LeakCheck` alive on the thread that spawned it, and threads spawned by corral
//! threads inherit that attribution. So tests running in parallel in one binary never
//! trip each other's checks. The second mode, [`LeakCheckBuilder::os_threads`], diffs
//! every OS thread of the process (Linux: `/proc/self/task`) and so also catches
//! threads leaked by other libraries; it is meant for serial tests or the end of a
//! test binary.
//!
//! # Example
//!
//! ```
//! use corral::leak::LeakCheck;
//!
//! let _check = LeakCheck::new();
//! corral::scope(|s| {
//!     s.spawn(|| 2 + 2);
//! });
//! // `_check` drops here: every corral thread started above has been joined.
//! ```

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::marker::PhantomData;
use std::panic::Location;
use std::sync::Arc;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::observe::{Dump, Slot};

/// A corral thread that is alive now.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LiveThread {
    /// The thread's name (always starts with `corral-`).
    pub name: String,
    /// The type that owns the thread and joins it (`Scope`, `WorkerPool`, ...).
    pub owner: &'static str,
    /// Where the thread was spawned in the caller's code: the line that built its
    /// owner (pool, pipeline, supervisor) or called `Scope::spawn`.
    pub spawned_at: &'static Location<'static>,
}

impl fmt::Display for LiveThread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (owner {}, spawned at {})",
            self.name, self.owner, self.spawned_at
        )
    }
}

struct Entry {
    thread: LiveThread,
    checks: Vec<u64>,
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    threads: BTreeMap<u64, Entry>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    next_id: 0,
    threads: BTreeMap::new(),
});
static EXITED: Condvar = Condvar::new();

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

thread_local! {
    /// The `LeakCheck`s this thread's spawns are attributed to.
    static CHECKS: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// The corral threads alive right now, in spawn order.
pub fn live_threads() -> Vec<LiveThread> {
    registry()
        .threads
        .values()
        .map(|e| e.thread.clone())
        .collect()
}

/// What every live corral thread is doing, and since when: its owner (kind, name and
/// the line of your code that built it), its role, its activity, what it is blocked
/// on, and whether a watchdog found its task stuck; also any other thread while it
/// waits on a corral semaphore or rate limiter. Runs every live watchdog first.
/// `Display` prints a table grouped by owner, longest-waiting first.
///
/// See [`observe`](crate::observe) for the types and an example.
pub fn dump() -> Dump {
    crate::observe::dump()
}

/// How many corral threads are alive right now.
pub fn live_count() -> usize {
    registry().threads.len()
}

/// A registration held by a corral thread for as long as it runs.
pub(crate) struct Tracker {
    id: u64,
    checks: Vec<u64>,
    slot: Arc<Slot>,
}

impl Tracker {
    /// Registers a thread about to be spawned from the current thread.
    pub(crate) fn register(owner: &'static str, slot: Arc<Slot>) -> Tracker {
        let checks = CHECKS.with(|c| c.borrow().clone());
        let mut reg = registry();
        reg.next_id += 1;
        let id = reg.next_id;
        reg.threads.insert(
            id,
            Entry {
                thread: LiveThread {
                    name: slot.name().to_owned(),
                    owner,
                    spawned_at: slot.spawned_at(),
                },
                checks: checks.clone(),
            },
        );
        Tracker { id, checks, slot }
    }

    /// Called first thing on the new thread: its own spawns inherit the attribution.
    pub(crate) fn enter(&self) {
        CHECKS.with(|c| *c.borrow_mut() = self.checks.clone());
        crate::observe::enter(self.slot.clone());
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        registry().threads.remove(&self.id);
        EXITED.notify_all();
    }
}

/// An OS thread of this process.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub struct OsThread {
    /// The kernel's thread id.
    pub tid: u64,
    /// The thread's name as the OS knows it (truncated to 15 bytes on Linux).
    pub name: String,
}

/// Every OS thread of this process, where the platform can tell (Linux, via
/// `/proc/self/task`); `None` elsewhere.
pub fn os_threads() -> Option<Vec<OsThread>> {
    let dir = std::fs::read_dir("/proc/self/task").ok()?;
    let mut threads = Vec::new();
    for entry in dir.flatten() {
        let Ok(tid) = entry.file_name().to_string_lossy().parse::<u64>() else {
            continue;
        };
        // A thread may exit between the listing and this read: skip it.
        if let Ok(name) = std::fs::read_to_string(entry.path().join("comm")) {
            threads.push(OsThread {
                tid,
                name: name.trim_end().to_owned(),
            });
        }
    }
    threads.sort();
    Some(threads)
}

/// Fails a test (by panicking on drop) if threads started during its life outlive it.
///
/// Default mode: corral threads spawned from this thread (and, transitively, from the
/// corral threads it started) while the check was alive. On drop it waits up to the
/// grace period (default 1 s) for them to end; threads that are still running are
/// named in the panic message with their owner and spawn site. If the test is already
/// panicking, the check reports to stderr instead of panicking again.
///
/// Create it and drop it on the same thread (it is `!Send`).
///
/// # Example
///
/// ```
/// use corral::leak::LeakCheck;
/// use std::time::Duration;
///
/// let check = LeakCheck::builder().grace(Duration::from_millis(200)).build();
/// corral::scope(|s| {
///     s.spawn(|| ());
/// });
/// assert!(check.verify().is_ok());
/// ```
#[must_use = "a LeakCheck checks when dropped; bind it to a variable like `_check`"]
pub struct LeakCheck {
    id: u64,
    grace: Duration,
    os: Option<OsMode>,
    done: bool,
    _not_send: PhantomData<*const ()>,
}

struct OsMode {
    before: BTreeSet<u64>,
    ignore_prefixes: Vec<String>,
}

/// Configures a [`LeakCheck`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct LeakCheckBuilder {
    grace: Duration,
    os: bool,
    ignore_prefixes: Vec<String>,
}

impl LeakCheckBuilder {
    /// How long the check waits for threads to end before failing (default 1 s).
    ///
    /// Zero checks once, without waiting. A grace too large to represent
    /// (`Duration::MAX`) waits for as long as the threads run. Threads started during
    /// the grace period by threads the check covers are covered too, and waited for.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Check every OS thread of the process instead of corral's own: a thread that
    /// was not alive when the check was created and is alive at its end is a leak.
    /// Linux only (`/proc/self/task`); elsewhere [`build`](Self::build) still succeeds
    /// and the check reports that it cannot see OS threads. Other tests running in
    /// parallel in the same binary are seen too: use it in serial tests.
    pub fn os_threads(mut self) -> Self {
        self.os = true;
        self
    }

    /// In OS mode, ignore threads whose name starts with `prefix`.
    pub fn ignore_name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.ignore_prefixes.push(prefix.into());
        self
    }

    /// Starts the check.
    pub fn build(self) -> LeakCheck {
        let id = {
            let mut reg = registry();
            reg.next_id += 1;
            reg.next_id
        };
        CHECKS.with(|c| c.borrow_mut().push(id));
        let os = self.os.then(|| OsMode {
            before: os_threads()
                .unwrap_or_default()
                .into_iter()
                .map(|t| t.tid)
                .collect(),
            ignore_prefixes: self.ignore_prefixes,
        });
        LeakCheck {
            id,
            grace: self.grace,
            os,
            done: false,
            _not_send: PhantomData,
        }
    }
}

/// The threads a [`LeakCheck`] found still alive after its grace period.
#[derive(Debug, Clone)]
pub struct LeakReport {
    /// Leaked corral threads (default mode).
    pub corral: Vec<LiveThread>,
    /// Leaked OS threads (OS mode).
    pub os: Vec<OsThread>,
    /// OS mode was asked for but this platform cannot list threads.
    pub os_unsupported: bool,
}

impl fmt::Display for LeakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.os_unsupported {
            return f.write_str("leak check: this platform cannot list OS threads");
        }
        let n = self.corral.len() + self.os.len();
        write!(f, "{n} thread(s) leaked:")?;
        for t in &self.corral {
            write!(f, "\n  - {t}")?;
        }
        for t in &self.os {
            write!(f, "\n  - OS thread {} '{}'", t.tid, t.name)?;
        }
        Ok(())
    }
}

impl std::error::Error for LeakReport {}

impl LeakCheck {
    /// A check of corral threads with the default 1 s grace period.
    pub fn new() -> LeakCheck {
        Self::builder().build()
    }

    /// Configure the grace period or OS mode.
    pub fn builder() -> LeakCheckBuilder {
        LeakCheckBuilder {
            grace: Duration::from_secs(1),
            os: false,
            ignore_prefixes: Vec::new(),
        }
    }

    /// Runs the check now (waiting up to the grace period) instead of on drop, and
    /// returns what leaked rather than panicking.
    ///
    /// # Errors
    ///
    /// A [`LeakReport`] naming the threads still alive after the grace period.
    pub fn verify(mut self) -> Result<(), LeakReport> {
        self.done = true;
        self.run()
    }

    fn run(&self) -> Result<(), LeakReport> {
        CHECKS.with(|c| c.borrow_mut().retain(|&id| id != self.id));
        let deadline = crate::sync::time::deadline_after(Instant::now(), self.grace);
        match &self.os {
            None => self.wait_corral(deadline),
            Some(os) => os.wait(deadline),
        }
    }

    fn wait_corral(&self, deadline: Instant) -> Result<(), LeakReport> {
        let mut reg = registry();
        loop {
            let leaked: Vec<LiveThread> = reg
                .threads
                .values()
                .filter(|e| e.checks.contains(&self.id))
                .map(|e| e.thread.clone())
                .collect();
            let now = Instant::now();
            if leaked.is_empty() {
                return Ok(());
            }
            if now >= deadline {
                return Err(LeakReport {
                    corral: leaked,
                    os: Vec::new(),
                    os_unsupported: false,
                });
            }
            reg = EXITED
                .wait_timeout(reg, deadline - now)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }
}

impl OsMode {
    fn leaked(&self) -> Option<Vec<OsThread>> {
        let now = os_threads()?;
        Some(
            now.into_iter()
                .filter(|t| !self.before.contains(&t.tid))
                .filter(|t| !self.ignore_prefixes.iter().any(|p| t.name.starts_with(p)))
                .collect(),
        )
    }

    /// No event tells us when a foreign thread exits: poll with backoff.
    fn wait(&self, deadline: Instant) -> Result<(), LeakReport> {
        let mut pause = Duration::from_millis(1);
        loop {
            let Some(leaked) = self.leaked() else {
                return Err(LeakReport {
                    corral: Vec::new(),
                    os: Vec::new(),
                    os_unsupported: true,
                });
            };
            if leaked.is_empty() {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(LeakReport {
                    corral: Vec::new(),
                    os: leaked,
                    os_unsupported: false,
                });
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
}

impl Default for LeakCheck {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for LeakCheck {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Err(report) = self.run() {
            if std::thread::panicking() {
                eprintln!("{report}");
            } else {
                panic!("{report}");
            }
        }
    }
}

impl fmt::Debug for LeakCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeakCheck")
            .field("grace", &self.grace)
            .field("os_threads", &self.os.is_some())
            .finish()
    }
}
