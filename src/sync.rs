//! The one synchronisation facade every concurrency core imports from.
//!
//! Normal builds re-export std atomics, `parking_lot` locks and std thread parking.
//! Under `--cfg loom` the same names come from loom, so the cores (cancel token,
//! semaphore, rate limiter, breaker state) can be model-checked without a refactor.
//! The loom lock wrappers give loom's `Mutex`/`Condvar` the parking_lot shape
//! (`lock()` without `unwrap`, `wait(&mut guard)`), so callers do not change.
//!
//! Code that blocks on a crossbeam channel or spawns OS threads does not run under
//! loom; it imports std directly and is covered by stress tests instead.

//! (The facade exports the full set; not every build uses every name.)
#![allow(unused_imports)]

#[cfg(not(loom))]
pub(crate) use parking_lot::{Condvar, Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::Arc;

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::Arc;
#[cfg(loom)]
pub(crate) use loom_locks::{Condvar, Mutex, MutexGuard};

/// An `UnsafeCell` with loom's closure-based access, so code that hands data between
/// threads through one runs unchanged under loom, which then checks every access.
pub(crate) mod cell {
    #[cfg(loom)]
    pub(crate) use loom::cell::UnsafeCell;

    #[cfg(not(loom))]
    #[derive(Debug)]
    pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    #[cfg(not(loom))]
    impl<T> UnsafeCell<T> {
        pub(crate) fn new(value: T) -> Self {
            UnsafeCell(std::cell::UnsafeCell::new(value))
        }

        /// Calls `f` with a pointer to the value; the caller's protocol must make the
        /// access exclusive.
        #[inline]
        pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }
}

/// The time every corral wait reads, and the one way a deadline is computed from a
/// duration.
///
/// [`deadline_after`](time::deadline_after) never panics and never wraps: a duration
/// past what an `Instant` can hold (`Duration::MAX`, say) saturates to the latest
/// instant that can be represented, which every wait treats as "never". Normal builds
/// read the monotonic clock. Under loom a model must be deterministic,
/// so it never reads the wall clock: time stands still at a fixed base until some model
/// thread calls [`pass_every_deadline`](time::pass_every_deadline), after which every
/// deadline lies in the past. Because the switch is a loom atomic, loom explores a
/// timeout before, between and after every check a waiter makes.
pub(crate) mod time {
    use std::time::{Duration, Instant};

    /// `start + timeout`, saturating: where the sum does not fit in an `Instant`, the
    /// latest instant that does (found by halving the step), so a huge timeout means
    /// "never" instead of a panic.
    #[inline]
    pub(crate) fn deadline_after(start: Instant, timeout: Duration) -> Instant {
        match start.checked_add(timeout) {
            Some(deadline) => deadline,
            None => saturate(start, timeout),
        }
    }

    #[cold]
    fn saturate(start: Instant, timeout: Duration) -> Instant {
        let mut latest = start;
        let mut step = timeout;
        while !step.is_zero() {
            match latest.checked_add(step) {
                Some(later) => latest = later,
                None => step /= 2,
            }
        }
        latest
    }

    /// The current instant.
    #[cfg(not(loom))]
    #[inline]
    pub(crate) fn now() -> Instant {
        Instant::now()
    }

    #[cfg(loom)]
    loom::lazy_static! {
        static ref PASSED: loom::sync::atomic::AtomicBool =
            loom::sync::atomic::AtomicBool::new(false);
    }

    /// A fixed base, the same in every execution of every model (its value never
    /// decides anything: only comparisons between instants derived from it do).
    #[cfg(loom)]
    fn base() -> Instant {
        static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *BASE.get_or_init(Instant::now)
    }

    /// The model's current instant: the base until [`pass_every_deadline`] is called,
    /// then the latest instant there is, so that every deadline has passed, even one
    /// computed after the jump (a fixed jump would leave those in the future for
    /// ever, and a waiter on one would spin until loom gives up). Read with a
    /// read-modify-write, which always sees the latest value: loom lets a plain load
    /// read a stale `false` for ever (it models `SeqCst` as acquire/release), so a
    /// waiter polling the clock in a loop might never see its deadline pass.
    #[cfg(loom)]
    pub(crate) fn now() -> Instant {
        static LATEST: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        if PASSED.fetch_or(false, loom::sync::atomic::Ordering::SeqCst) {
            *LATEST.get_or_init(|| deadline_after(base(), Duration::MAX))
        } else {
            base()
        }
    }

    /// Makes every deadline of the current model pass (a model thread calls it, so
    /// loom decides where the timeout falls among the waiters' checks).
    #[cfg(loom)]
    pub fn pass_every_deadline() {
        PASSED.swap(true, loom::sync::atomic::Ordering::SeqCst);
    }
}

/// Thread parking: the one way a corral waiter sleeps.
pub(crate) mod thread {
    #[cfg(not(loom))]
    pub(crate) use std::thread::{current, yield_now, Thread};

    #[cfg(loom)]
    pub(crate) use loom::thread::yield_now;
    #[cfg(loom)]
    pub(crate) use parker::{current, Thread};

    /// Parks the current thread until it is unparked or `deadline` passes.
    /// May return spuriously: callers re-check their condition in a loop.
    #[cfg(not(loom))]
    pub(crate) fn park_until(deadline: Option<std::time::Instant>) {
        match deadline {
            None => std::thread::park(),
            Some(d) => {
                let now = std::time::Instant::now();
                if d > now {
                    std::thread::park_timeout(d - now);
                }
            }
        }
    }

    /// Loom has no time: a timed park is modelled as a park that may also wake
    /// at any point, which loom explores as a yield.
    #[cfg(loom)]
    pub(crate) fn park_until(deadline: Option<std::time::Instant>) {
        match deadline {
            None => parker::park(),
            Some(_) => loom::thread::yield_now(),
        }
    }

    /// Loom's own `unpark` makes a thread that is blocked acquiring a loom mutex
    /// runnable, which trips loom's "expected to be able to acquire lock" assertion
    /// when a waker unparks a waiter that is about to take the waker's lock. Under
    /// loom, park/unpark are therefore modelled with a per-thread token behind a loom
    /// `Mutex` + `Condvar`, which has std's semantics (an unpark before the park is
    /// kept; spurious wake-ups are allowed).
    #[cfg(loom)]
    mod parker {
        use super::super::{Arc, Condvar, Mutex};

        #[derive(Debug)]
        struct Parker {
            token: Mutex<bool>,
            cv: Condvar,
        }

        /// A handle to a thread, for unparking it.
        #[derive(Debug, Clone)]
        pub(crate) struct Thread(Arc<Parker>);

        loom::thread_local! {
            static PARKER: Arc<Parker> = Arc::new(Parker {
                token: Mutex::new(false),
                cv: Condvar::new(),
            });
        }

        pub(crate) fn current() -> Thread {
            PARKER.with(|p| Thread(p.clone()))
        }

        pub(crate) fn park() {
            PARKER.with(|p| {
                let mut token = p.token.lock();
                while !*token {
                    p.cv.wait(&mut token);
                }
                *token = false;
            })
        }

        impl Thread {
            pub(crate) fn unpark(&self) {
                *self.0.token.lock() = true;
                self.0.cv.notify_one();
            }
        }
    }
}

#[cfg(loom)]
#[allow(dead_code)] // the facade offers the full parking_lot shape
mod loom_locks {
    use std::ops::{Deref, DerefMut};

    /// `loom::sync::Mutex` with the parking_lot calling convention.
    #[derive(Debug)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    /// Guard of [`Mutex`]; the `Option` lets [`Condvar::wait`] take it by `&mut`.
    #[derive(Debug)]
    pub(crate) struct MutexGuard<'a, T> {
        lock: &'a loom::sync::Mutex<T>,
        guard: Option<loom::sync::MutexGuard<'a, T>>,
    }

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Mutex(loom::sync::Mutex::new(value))
        }
        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            MutexGuard {
                lock: &self.0,
                guard: Some(self.0.lock().unwrap()),
            }
        }
        /// As parking_lot's: the guard, or `None` if the lock is held.
        pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
            let guard = self.0.try_lock().ok()?;
            Some(MutexGuard {
                lock: &self.0,
                guard: Some(guard),
            })
        }
        /// As parking_lot's: the value, the lock consumed.
        pub(crate) fn into_inner(self) -> T {
            self.0.into_inner().unwrap()
        }
    }

    impl<T> Deref for MutexGuard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            self.guard.as_ref().unwrap()
        }
    }

    impl<T> DerefMut for MutexGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            self.guard.as_mut().unwrap()
        }
    }

    /// `loom::sync::Condvar` with the parking_lot calling convention.
    #[derive(Debug)]
    pub(crate) struct Condvar(loom::sync::Condvar);

    impl Condvar {
        pub(crate) fn new() -> Self {
            Condvar(loom::sync::Condvar::new())
        }
        pub(crate) fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
            let inner = guard.guard.take().unwrap();
            guard.guard = Some(self.0.wait(inner).unwrap());
        }
        /// Loom has no time: a timed wait is modelled as one that may time out at
        /// any point, so it releases the lock, yields and takes the lock again.
        pub(crate) fn wait_until<T>(
            &self,
            guard: &mut MutexGuard<'_, T>,
            _deadline: std::time::Instant,
        ) {
            drop(guard.guard.take());
            loom::thread::yield_now();
            guard.guard = Some(guard.lock.lock().unwrap());
        }
        pub(crate) fn notify_one(&self) {
            self.0.notify_one();
        }
        pub(crate) fn notify_all(&self) {
            self.0.notify_all();
        }
    }
}
