//! The one place corral starts OS threads: named `corral-...`, registered with the
//! leak registry for their whole life, attributed to the spawner's leak checks. A
//! thread that does not start is reported one way everywhere: a [`SpawnError`]
//! carrying the thread's name and the OS's `io::Error`.

use std::error::Error;
use std::fmt;
use std::io;
use std::panic::Location;
use std::thread::{Builder, JoinHandle, Scope, ScopedJoinHandle};

use crate::config::ConfigError;
use crate::leak::Tracker;
use crate::observe::{Owner, Role, Slot};
use std::sync::Arc;

/// A thread did not start: the OS refused it (or its name had a NUL byte).
///
/// Names the thread; the [`io::Error`] is its [`source`](Error::source). Every
/// primitive that starts threads reports this, on its own or inside its error
/// ([`StartError::Spawn`], `PipelineError::Spawn`, `GroupError::Spawn`).
///
/// # Example
///
/// ```
/// use std::error::Error;
///
/// let err = corral::scope(|s| s.try_spawn_named("bad\0name", || ()).unwrap_err());
/// assert_eq!(err.thread_name(), "corral-bad\0name");
/// assert_eq!(err.to_string(), "could not start thread \"corral-bad\\0name\"");
/// assert_eq!(err.io_error().kind(), std::io::ErrorKind::InvalidInput);
/// assert!(err.source().is_some());
/// ```
#[derive(Debug)]
pub struct SpawnError {
    thread: String,
    error: io::Error,
}

impl SpawnError {
    /// The failure to start the thread called `thread` (as the OS would see it, with
    /// the `corral-` prefix), for `error`.
    pub fn new(thread: impl Into<String>, error: io::Error) -> Self {
        SpawnError {
            thread: thread.into(),
            error,
        }
    }

    /// The name the thread would have had.
    pub fn thread_name(&self) -> &str {
        &self.thread
    }

    /// The OS's error.
    pub fn io_error(&self) -> &io::Error {
        &self.error
    }

    /// The OS's error, by value.
    pub fn into_io_error(self) -> io::Error {
        self.error
    }
}

/// Names the thread only: the OS's error is the [`source`](Error::source).
impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "could not start thread {:?}", self.thread)
    }
}

impl Error for SpawnError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.error)
    }
}

/// For `?` in functions returning `io::Result`: an error of the same kind, whose
/// `Display` is this one's and whose `source` is the OS's error.
impl From<SpawnError> for io::Error {
    fn from(e: SpawnError) -> Self {
        io::Error::new(e.error.kind(), e)
    }
}

/// Why a primitive that starts threads when it is built did not start: a builder
/// value was rejected, or the OS refused a thread. Returned by
/// [`PoolBuilder::build`](crate::pool::PoolBuilder::build) (and `build_scoped`) and
/// [`SupervisorBuilder::start`](crate::supervisor::SupervisorBuilder::start); the
/// threads already started are stopped and joined before it is returned.
///
/// Describes this error only: the [`ConfigError`] or [`SpawnError`] is its
/// [`source`](Error::source). `?` turns a `ConfigError` into it.
///
/// # Example
///
/// ```
/// use corral::{StartError, WorkerPool};
///
/// let err = WorkerPool::builder().workers(0).build().unwrap_err();
/// let StartError::Config(config) = &err else { panic!("{err:?}") };
/// assert_eq!(config.field(), "workers");
/// assert_eq!(err.config().map(|c| c.field()), Some("workers"));
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// A builder value was rejected.
    Config(ConfigError),
    /// The OS refused one of the threads.
    Spawn(SpawnError),
}

impl StartError {
    /// The rejected builder value, if that is the cause.
    pub fn config(&self) -> Option<&ConfigError> {
        match self {
            StartError::Config(e) => Some(e),
            StartError::Spawn(_) => None,
        }
    }

    /// The thread that did not start, if that is the cause.
    pub fn spawn_error(&self) -> Option<&SpawnError> {
        match self {
            StartError::Config(_) => None,
            StartError::Spawn(e) => Some(e),
        }
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StartError::Config(_) => "not started: invalid settings",
            StartError::Spawn(_) => "not started: a thread did not start",
        })
    }
}

impl Error for StartError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            StartError::Config(e) => Some(e),
            StartError::Spawn(e) => Some(e),
        }
    }
}

impl From<ConfigError> for StartError {
    fn from(e: ConfigError) -> Self {
        StartError::Config(e)
    }
}

impl From<SpawnError> for StartError {
    fn from(e: SpawnError) -> Self {
        StartError::Spawn(e)
    }
}

/// What a new thread is called and who owns it.
#[derive(Debug, Clone)]
pub(crate) struct ThreadSpec {
    /// The owning type, for leak reports (`"WorkerPool"`, `"Scope"`, ...).
    pub(crate) owner: &'static str,
    /// The name after the `corral-` prefix.
    pub(crate) name: String,
    /// Stack size in bytes; the platform default when `None`.
    pub(crate) stack_size: Option<usize>,
    /// What the thread is for, in the thread dump.
    pub(crate) role: Role,
    /// The owner instance (its name and the user's line that built it), if any.
    pub(crate) owned_by: Option<Arc<Owner>>,
}

impl ThreadSpec {
    pub(crate) fn new(owner: &'static str, name: impl Into<String>) -> Self {
        let role = match owner {
            "Scope" => Role::ScopeThread,
            "TaskGroup" => Role::GroupTask,
            _ => Role::Other,
        };
        ThreadSpec {
            owner,
            name: name.into(),
            stack_size: None,
            role,
            owned_by: None,
        }
    }

    /// Sets what the thread is for.
    pub(crate) fn role(mut self, role: Role) -> Self {
        self.role = role;
        self
    }

    /// Attributes the thread to an owner instance: the dump groups it there and shows
    /// the owner's name and creation site as its spawn site.
    pub(crate) fn owned_by(mut self, owner: &Arc<Owner>) -> Self {
        self.owned_by = Some(owner.clone());
        self
    }

    /// The builder, the leak registration and the full name of this thread. A name with a NUL byte
    /// (which std refuses with a panic) is an `InvalidInput` error instead; builders
    /// reject such names earlier, with a [`ConfigError`](crate::ConfigError), through
    /// [`check_name`](crate::config::check_name).
    fn prepare(
        &self,
        at: &'static Location<'static>,
    ) -> Result<(Builder, Tracker, String), SpawnError> {
        let name = format!("corral-{}", self.name);
        if self.name.contains('\0') {
            let error = io::Error::new(
                io::ErrorKind::InvalidInput,
                "a thread name may not contain a NUL byte",
            );
            return Err(SpawnError::new(name, error));
        }
        let mut builder = Builder::new().name(name.clone());
        if let Some(size) = self.stack_size {
            builder = builder.stack_size(size);
        }
        let slot = Slot::new(
            name.clone(),
            self.owner,
            self.owned_by.clone(),
            self.role,
            at,
        );
        let tracker = Tracker::register(self.owner, slot);
        Ok((builder, tracker, name))
    }
}

/// Spawns an owned thread; the caller must keep the handle and join it.
#[track_caller]
pub(crate) fn start<F, T>(spec: &ThreadSpec, f: F) -> Result<JoinHandle<T>, SpawnError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (builder, tracker, name) = spec.prepare(Location::caller())?;
    builder
        .spawn(move || {
            tracker.enter();
            let _tracker = tracker;
            f()
        })
        .map_err(|e| SpawnError::new(name, e))
}

/// Spawns a thread inside a std scope, which joins it.
#[track_caller]
pub(crate) fn start_scoped<'scope, 'env, F, T>(
    scope: &'scope Scope<'scope, 'env>,
    spec: &ThreadSpec,
    f: F,
) -> Result<ScopedJoinHandle<'scope, T>, SpawnError>
where
    F: FnOnce() -> T + Send + 'scope,
    T: Send + 'scope,
{
    let (builder, tracker, name) = spec.prepare(Location::caller())?;
    builder
        .spawn_scoped(scope, move || {
            tracker.enter();
            let _tracker = tracker;
            f()
        })
        .map_err(|e| SpawnError::new(name, e))
}
