//! A caught panic, as data.
//!
//! Panics in user code are caught at corral's boundary and delivered to whoever waits,
//! as a [`Panic`] that keeps the original payload (so it can be re-raised unchanged)
//! and the name of the thread it happened on.

use std::any::Any;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe, UnwindSafe};

use parking_lot::Mutex;

/// A panic caught from user code: its payload and the thread it happened on.
///
/// # Example
///
/// ```
/// let result = corral::scope(|s| s.spawn(|| panic!("boom")).join());
/// let panic = result.unwrap_err();
/// assert_eq!(panic.message(), Some("boom"));
/// ```
pub struct Panic(Box<Caught>);

/// What a [`Panic`] keeps, behind one pointer: panics are rare, and a `Panic` one word
/// wide keeps every `Result<T, TaskError>` corral hands out (one per `map` item, one
/// per joined task) about as small as `T` itself.
struct Caught {
    /// Behind a lock only so that `Panic` is `Sync` (and so are the errors carrying it,
    /// which then convert into `Box<dyn Error + Send + Sync>` and friends). It is never
    /// locked after construction except to take the payload out.
    payload: Mutex<Box<dyn Any + Send + 'static>>,
    message: Option<String>,
    thread: Option<String>,
}

impl Panic {
    /// Wraps a payload caught on the current thread.
    pub(crate) fn new(payload: Box<dyn Any + Send + 'static>) -> Self {
        let message = if let Some(s) = payload.downcast_ref::<&'static str>() {
            Some((*s).to_owned())
        } else {
            payload.downcast_ref::<String>().cloned()
        };
        Panic(Box::new(Caught {
            payload: Mutex::new(payload),
            message,
            thread: std::thread::current().name().map(str::to_owned),
        }))
    }

    /// Runs `f`, turning a panic into `Err(Panic)`.
    pub(crate) fn catch<T>(f: impl FnOnce() -> T + UnwindSafe) -> Result<T, Panic> {
        catch_unwind(f).map_err(Panic::new)
    }

    /// Runs `f` (not required to be unwind-safe: corral never observes its state after
    /// a panic), turning a panic into `Err(Panic)`.
    pub(crate) fn catch_any<T>(f: impl FnOnce() -> T) -> Result<T, Panic> {
        Self::catch(AssertUnwindSafe(f))
    }

    /// The panic message, when the payload is a string (as `panic!` produces).
    pub fn message(&self) -> Option<&str> {
        self.0.message.as_deref()
    }

    /// Name of the thread that panicked, if it had one.
    pub fn thread_name(&self) -> Option<&str> {
        self.0.thread.as_deref()
    }

    /// The original payload, for `std::panic::resume_unwind` or downcasting.
    pub fn into_payload(self) -> Box<dyn Any + Send + 'static> {
        std::mem::replace(&mut *self.0.payload.lock(), Box::new(()))
    }

    /// Re-raises the panic on the current thread with its original payload.
    pub fn resume(self) -> ! {
        std::panic::resume_unwind(self.into_payload())
    }
}

/// Drops a user value inside the panic boundary; returns the panic its `Drop` raised,
/// if any. Dropping that panic in turn is safe (see `Caught`'s drop).
pub(crate) fn drop_caught<T>(value: T) -> Option<Panic> {
    Panic::catch_any(move || drop(value)).err()
}

/// Drops a user value whose panic nobody will read, inside the panic boundary.
pub(crate) fn drop_quietly<T>(value: T) {
    drop(drop_caught(value));
}

impl Drop for Caught {
    /// The payload is a user value too: a payload whose own `Drop` panics must not
    /// escape from wherever corral lets go of a caught panic (a report nobody reads, a
    /// handle dropped unjoined). Its drop runs inside the boundary; should it panic,
    /// that second payload is leaked rather than dropped, so the chain ends here.
    fn drop(&mut self) {
        let payload = std::mem::replace(self.payload.get_mut(), Box::new(()));
        if let Err(second) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
            std::mem::forget(second);
        }
    }
}

impl fmt::Debug for Panic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Panic")
            .field("message", &self.message())
            .field("thread", &self.thread_name())
            .finish()
    }
}

impl fmt::Display for Panic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.message(), self.thread_name()) {
            (Some(m), Some(t)) => write!(f, "thread '{t}' panicked: {m}"),
            (Some(m), None) => write!(f, "panicked: {m}"),
            (None, Some(t)) => write!(f, "thread '{t}' panicked"),
            (None, None) => f.write_str("panicked"),
        }
    }
}

impl std::error::Error for Panic {}
