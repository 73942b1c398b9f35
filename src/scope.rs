//! Scoped threads that may borrow from the caller, share a cancel token, and turn
//! panics into data.
//!
//! Built on [`std::thread::scope`]: every thread spawned in a [`Scope`] is joined
//! before [`scope`] returns. On top of std, corral names the threads (`corral-...`),
//! registers them for leak checks, gives the scope a [`CancelToken`] that a panicking
//! thread cancels (so its siblings can stop early), and keeps each panic's original
//! payload. A panic nobody collected with [`ScopedHandle::join`] is re-raised by
//! [`scope`] after every thread has joined, with its original payload (std re-raises a
//! generic one), or returned by [`try_scope`].
//!
//! A thread's value travels to its handle through corral's own slot, not std's, so a
//! value nobody joins is dropped inside the panic boundary (std aborts the process
//! when such a value panics on drop): a panicking `Drop` of it is one more collected
//! panic. So is a panicking [`on_cancel`](CancelToken::on_cancel) callback of the
//! scope's token, run when a thread's panic cancels it.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::ScopedJoinHandle;

use parking_lot::Mutex;

use crate::cancel::CancelToken;
use crate::panic::Panic;
use crate::spawn::{start_scoped, SpawnError, ThreadSpec};

/// Runs `f` with a [`Scope`] in which threads may borrow anything that outlives the
/// call, then joins every thread spawned in it and returns `f`'s value.
///
/// # Panics
///
/// After all threads have joined, re-raises (with its original payload) the first
/// panic that no [`ScopedHandle::join`] collected, or `f`'s own panic. Use
/// [`try_scope`] to get it as a value instead. Also panics if the OS refuses to start
/// a thread.
///
/// # Example
///
/// ```
/// let words = vec!["alpha", "beta", "gamma"];
/// let total: usize = corral::scope(|s| {
///     let handles: Vec<_> = words.iter().map(|w| s.spawn(move || w.len())).collect();
///     handles.into_iter().map(|h| h.join().unwrap()).sum()
/// });
/// assert_eq!(total, 14);
/// ```
pub fn scope<'env, F, T>(f: F) -> T
where
    F: for<'scope> FnOnce(&Scope<'scope, 'env>) -> T,
{
    match try_scope(f) {
        Ok(value) => value,
        Err(panic) => panic.resume(),
    }
}

/// Like [`scope`], but returns the first uncollected panic as `Err` instead of
/// re-raising it. Every thread has joined by the time it returns either way.
///
/// # Errors
///
/// The first [`Panic`] that no [`ScopedHandle::join`] collected, or `f`'s own.
///
/// # Example
///
/// ```
/// let result = corral::try_scope(|s| {
///     s.spawn(|| panic!("worker failed"));
///     s.spawn(|| 42);
/// });
/// assert_eq!(result.unwrap_err().message(), Some("worker failed"));
/// ```
pub fn try_scope<'env, F, T>(f: F) -> Result<T, Panic>
where
    F: for<'scope> FnOnce(&Scope<'scope, 'env>) -> T,
{
    let shared = Arc::new(Shared {
        token: CancelToken::new(),
        panics: Mutex::new(Vec::new()),
        spawned: AtomicUsize::new(0),
    });
    let outcome = std::thread::scope(|s| {
        let scope = Scope {
            inner: s,
            shared: Arc::clone(&shared),
        };
        Panic::catch_any(|| f(&scope))
    });
    let value = outcome?;
    let uncollected = shared
        .panics
        .lock()
        .iter()
        .find_map(|slot| slot.lock().take());
    match uncollected {
        Some(panic) => {
            // `f`'s value is not returned: dropped inside the panic boundary, so a
            // panicking `Drop` of it cannot replace the panic being reported.
            let _ = Panic::catch_any(move || drop(value));
            Err(panic)
        }
        None => Ok(value),
    }
}

/// A scope to spawn borrowing threads in. See [`scope`].
///
/// Cloning is cheap; clone it to spawn from inside a spawned thread.
///
/// Threads may borrow what outlives the scope, never a local of the scope's own
/// closure (it could be gone before the thread ends), so this does not compile:
///
/// ```compile_fail
/// corral::scope(|s| {
///     let short_lived = vec![1, 2, 3];
///     s.spawn(|| short_lived.len());
/// });
/// ```
pub struct Scope<'scope, 'env> {
    inner: &'scope std::thread::Scope<'scope, 'env>,
    shared: Arc<Shared>,
}

struct Shared {
    token: CancelToken,
    /// Slots of threads that panicked, in order; a slot is emptied by `join`.
    panics: Mutex<Vec<Arc<PanicSlot>>>,
    spawned: AtomicUsize,
}

type PanicSlot = Mutex<Option<Panic>>;

/// Where a thread leaves its value for its handle.
struct ValueSlot<T> {
    value: Option<T>,
    /// The handle is gone: the thread drops its value itself.
    abandoned: bool,
}

impl Shared {
    /// Records a panic nobody has collected yet and cancels the scope's token (a
    /// panicking `on_cancel` callback is recorded too, after it).
    fn record(&self, slot: Arc<PanicSlot>, panic: Panic) {
        *slot.lock() = Some(panic);
        self.panics.lock().push(slot);
        if let Err(panic) = Panic::catch_any(|| self.token.cancel()) {
            self.panics.lock().push(Arc::new(Mutex::new(Some(panic))));
        }
    }

    /// Drops a thread's value that no handle will take, inside the panic boundary.
    fn discard<T>(&self, value: T) {
        if let Err(panic) = Panic::catch_any(move || drop(value)) {
            self.record(Arc::new(Mutex::new(None)), panic);
        }
    }
}

impl<'scope, 'env> Scope<'scope, 'env> {
    /// Spawns a thread named `corral-scope-N` running `f`.
    ///
    /// # Panics
    ///
    /// If the OS refuses to start a thread.
    #[track_caller]
    pub fn spawn<F, T>(&self, f: F) -> ScopedHandle<'scope, T>
    where
        F: FnOnce() -> T + Send + 'scope,
        T: Send + 'scope,
    {
        let n = self.shared.spawned.fetch_add(1, Ordering::Relaxed);
        self.spawn_as(ThreadSpec::new("Scope", format!("scope-{n}")), f)
    }

    /// Spawns a thread named `corral-{name}` running `f`.
    ///
    /// A NUL byte, which a thread name cannot hold, is written as the two characters
    /// backslash and zero (the name `"a\0b"` gives the thread `r"corral-a\0b"`);
    /// [`try_spawn_named`](Scope::try_spawn_named) refuses such a name instead.
    ///
    /// # Panics
    ///
    /// If the OS refuses to start a thread.
    #[track_caller]
    pub fn spawn_named<F, T>(&self, name: &str, f: F) -> ScopedHandle<'scope, T>
    where
        F: FnOnce() -> T + Send + 'scope,
        T: Send + 'scope,
    {
        self.shared.spawned.fetch_add(1, Ordering::Relaxed);
        let name = if name.contains('\0') {
            name.replace('\0', "\\0")
        } else {
            name.to_owned()
        };
        self.spawn_as(ThreadSpec::new("Scope", name), f)
    }

    /// As [`spawn`](Scope::spawn), returning the OS's refusal to start a thread as an
    /// error instead of panicking.
    ///
    /// # Errors
    ///
    /// A [`SpawnError`] naming the thread, with the OS's [`io::Error`](std::io::Error) as its source
    /// (`?` converts it into an `io::Error`).
    #[track_caller]
    pub fn try_spawn<F, T>(&self, f: F) -> Result<ScopedHandle<'scope, T>, SpawnError>
    where
        F: FnOnce() -> T + Send + 'scope,
        T: Send + 'scope,
    {
        let n = self.shared.spawned.fetch_add(1, Ordering::Relaxed);
        self.start_as(ThreadSpec::new("Scope", format!("scope-{n}")), f)
    }

    /// As [`spawn_named`](Scope::spawn_named), returning errors instead of panicking
    /// or rewriting the name.
    ///
    /// # Errors
    ///
    /// A [`SpawnError`] whose source is of kind [`io::ErrorKind::InvalidInput`](std::io::ErrorKind::InvalidInput) for a
    /// name with a NUL byte (`f` is dropped, never run); otherwise the OS's refusal to
    /// start a thread.
    #[track_caller]
    pub fn try_spawn_named<F, T>(
        &self,
        name: &str,
        f: F,
    ) -> Result<ScopedHandle<'scope, T>, SpawnError>
    where
        F: FnOnce() -> T + Send + 'scope,
        T: Send + 'scope,
    {
        self.shared.spawned.fetch_add(1, Ordering::Relaxed);
        self.start_as(ThreadSpec::new("Scope", name), f)
    }

    /// Spawns with a given spec (used by the primitives that live in a scope).
    #[track_caller]
    pub(crate) fn spawn_as<F, T>(&self, spec: ThreadSpec, f: F) -> ScopedHandle<'scope, T>
    where
        F: FnOnce() -> T + Send + 'scope,
        T: Send + 'scope,
    {
        match self.start_as(spec, f) {
            Ok(handle) => handle,
            Err(e) => panic!("corral: {e}: {}", e.io_error()),
        }
    }

    /// Spawns with a given spec; `Err` if the thread does not start.
    #[track_caller]
    pub(crate) fn start_as<F, T>(
        &self,
        spec: ThreadSpec,
        f: F,
    ) -> Result<ScopedHandle<'scope, T>, SpawnError>
    where
        F: FnOnce() -> T + Send + 'scope,
        T: Send + 'scope,
    {
        let slot: Arc<PanicSlot> = Arc::new(Mutex::new(None));
        let value = Arc::new(Mutex::new(ValueSlot {
            value: None,
            abandoned: false,
        }));
        let thread_slot = Arc::clone(&slot);
        let thread_value = Arc::clone(&value);
        let shared = Arc::clone(&self.shared);
        let inner = start_scoped(self.inner, &spec, move || match Panic::catch_any(f) {
            Ok(result) => {
                let mut place = thread_value.lock();
                if place.abandoned {
                    drop(place);
                    shared.discard(result);
                } else {
                    place.value = Some(result);
                }
            }
            Err(panic) => shared.record(thread_slot, panic),
        })?;
        Ok(ScopedHandle {
            inner: Some(inner),
            slot,
            value,
            shared: Arc::clone(&self.shared),
        })
    }

    /// The scope's token: cancelled when any thread in the scope panics, and by anyone
    /// who calls [`CancelToken::cancel`] on it. Spawned threads check it to stop early.
    pub fn token(&self) -> &CancelToken {
        &self.shared.token
    }
}

impl Clone for Scope<'_, '_> {
    fn clone(&self) -> Self {
        Scope {
            inner: self.inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

impl fmt::Debug for Scope<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scope")
            .field("spawned", &self.shared.spawned.load(Ordering::Relaxed))
            .field("cancelled", &self.shared.token.is_cancelled())
            .finish()
    }
}

/// Handle to a thread spawned in a [`Scope`].
///
/// Dropping it does not detach anything: the scope still joins the thread. The
/// thread's value, which nobody will take then, is dropped inside the panic boundary
/// (by the thread, or here if it has already finished); a panic in its `Drop` is
/// collected by the scope like the thread's own.
pub struct ScopedHandle<'scope, T> {
    /// Always `Some` until `join` takes it.
    inner: Option<ScopedJoinHandle<'scope, ()>>,
    slot: Arc<PanicSlot>,
    value: Arc<Mutex<ValueSlot<T>>>,
    shared: Arc<Shared>,
}

impl<T> ScopedHandle<'_, T> {
    /// Waits for the thread and returns its value, or its panic. A panic collected
    /// here is handled: the scope will not re-raise it.
    ///
    /// Called on the thread itself (a handle passed to its own thread), it cannot
    /// wait for the thread to end: it returns at once with an error (a [`Panic`]
    /// whose message is `corral: a scoped thread cannot join its own handle`), and
    /// the thread's value is dropped when it returns; the scope still joins it.
    ///
    /// # Errors
    ///
    /// The [`Panic`] the thread raised, or the one described above.
    pub fn join(mut self) -> Result<T, Panic> {
        let inner = self.inner.take().expect("the handle is joined once");
        if inner.thread().id() == std::thread::current().id() {
            return Err(Panic::new(Box::new(
                "corral: a scoped thread cannot join its own handle",
            )));
        }
        // The thread's closure catches every panic, so this is always `Ok`.
        let _ = inner.join();
        let value = self.value.lock().value.take();
        match value {
            Some(value) => Ok(value),
            None => Err(self
                .slot
                .lock()
                .take()
                .expect("a thread that returned no value stored its panic")),
        }
    }

    fn inner(&self) -> &ScopedJoinHandle<'_, ()> {
        self.inner.as_ref().expect("present until joined")
    }

    /// Whether the thread has finished running.
    pub fn is_finished(&self) -> bool {
        self.inner().is_finished()
    }

    /// The underlying thread (for its name or id).
    pub fn thread(&self) -> &std::thread::Thread {
        self.inner().thread()
    }
}

impl<T> Drop for ScopedHandle<'_, T> {
    fn drop(&mut self) {
        let stored = {
            let mut place = self.value.lock();
            place.abandoned = true;
            place.value.take()
        };
        if let Some(value) = stored {
            self.shared.discard(value);
        }
    }
}

impl<T> fmt::Debug for ScopedHandle<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopedHandle")
            .field("thread", &self.thread().name())
            .field("finished", &self.is_finished())
            .finish()
    }
}
