//! The one place corral starts OS threads: named `corral-...`, registered with the
//! leak registry for their whole life, attributed to the spawner's leak checks.

use std::io;
use std::panic::Location;
use std::thread::{Builder, JoinHandle, Scope, ScopedJoinHandle};

use crate::leak::Tracker;

/// What a new thread is called and who owns it.
#[derive(Debug, Clone)]
pub(crate) struct ThreadSpec {
    /// The owning type, for leak reports (`"WorkerPool"`, `"Scope"`, ...).
    pub(crate) owner: &'static str,
    /// The name after the `corral-` prefix.
    pub(crate) name: String,
    /// Stack size in bytes; the platform default when `None`.
    pub(crate) stack_size: Option<usize>,
}

impl ThreadSpec {
    pub(crate) fn new(owner: &'static str, name: impl Into<String>) -> Self {
        ThreadSpec {
            owner,
            name: name.into(),
            stack_size: None,
        }
    }

    /// The builder and the leak registration for this thread. A name with a NUL byte
    /// (which std refuses with a panic) is an `InvalidInput` error instead; builders
    /// reject such names earlier, with a [`ConfigError`](crate::ConfigError), through
    /// [`check_name`](crate::config::check_name).
    fn prepare(&self, at: &'static Location<'static>) -> io::Result<(Builder, Tracker)> {
        if self.name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a thread name may not contain a NUL byte",
            ));
        }
        let name = format!("corral-{}", self.name);
        let mut builder = Builder::new().name(name.clone());
        if let Some(size) = self.stack_size {
            builder = builder.stack_size(size);
        }
        Ok((builder, Tracker::register(self.owner, name, at)))
    }
}

/// Spawns an owned thread; the caller must keep the handle and join it.
#[track_caller]
pub(crate) fn spawn<F, T>(spec: &ThreadSpec, f: F) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (builder, tracker) = spec.prepare(Location::caller())?;
    builder.spawn(move || {
        tracker.enter();
        let _tracker = tracker;
        f()
    })
}

/// Spawns a thread inside a std scope, which joins it.
#[track_caller]
pub(crate) fn spawn_scoped<'scope, 'env, F, T>(
    scope: &'scope Scope<'scope, 'env>,
    spec: &ThreadSpec,
    f: F,
) -> io::Result<ScopedJoinHandle<'scope, T>>
where
    F: FnOnce() -> T + Send + 'scope,
    T: Send + 'scope,
{
    let (builder, tracker) = spec.prepare(Location::caller())?;
    builder.spawn_scoped(scope, move || {
        tracker.enter();
        let _tracker = tracker;
        f()
    })
}
