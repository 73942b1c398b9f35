//! Cancellation tokens: a tree of "stop now" signals with optional deadlines.
//!
//! A [`CancelToken`] is a clone-able signal. [`child`](CancelToken::child) tokens are
//! cancelled with their parent, never the reverse; a token with a deadline
//! ([`with_timeout`](CancelToken::with_timeout)) cancels itself when it passes, with
//! [`CancelReason::DeadlineExceeded`]. Waiting is [`wait`](CancelToken::wait), a bounded
//! [`wait_timeout`](CancelToken::wait_timeout), a callback
//! ([`on_cancel`](CancelToken::on_cancel), unregistered when its [`OnCancel`] drops), or
//! receivers for [`select!`](crate::channel::select) ([`done`](CancelToken::done) with
//! [`expired`](CancelToken::expired)). [`CancelOnDrop`] cancels a token when a scope
//! ends. [`cancel_with`](CancelToken::cancel_with) also says why, in an error that
//! descendants see ([`cause`](CancelToken::cause)).
//!
//! # How it works
//!
//! No thread fires deadlines: they are checked when a token is observed, and waiters
//! bound their sleeps by them. Observing a token never runs callbacks, so it is safe
//! under any lock; cancelling runs them on the cancelling thread, with no lock held. A
//! parent keeps a registration for a child only while some clone of the child (or a
//! descendant) lives, so a long-lived parent's memory stays bounded however many
//! children come and go; deep trees are cancelled iteratively, never by recursion.

use std::any::Any;
use std::error::Error;
use std::fmt;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::sync::{thread, time, Arc, AtomicBool, AtomicUsize, Mutex, Ordering};

/// Why a [`CancelToken`] is cancelled.
///
/// Every refusal a cancelled token causes carries this reason, so a cause given to
/// [`CancelToken::cancel_with`] reaches whoever the token stopped, inside the error
/// they got. Two `CancelledWith` reasons are equal when they hold the same cause
/// (the same `Arc`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum CancelReason {
    /// [`CancelToken::cancel`] was called on this token or an ancestor.
    Cancelled,
    /// The token's deadline (or an ancestor's) has passed.
    DeadlineExceeded,
    /// [`CancelToken::cancel_with`] was called on this token or an ancestor, with
    /// this cause.
    CancelledWith(CancelCause),
}

impl CancelReason {
    /// The cause given to [`CancelToken::cancel_with`], if this cancel had one.
    pub fn cause(&self) -> Option<&CancelCause> {
        match self {
            CancelReason::CancelledWith(cause) => Some(cause),
            _ => None,
        }
    }

    /// Whether a deadline (not a call to `cancel`) ended the wait.
    pub fn is_deadline(&self) -> bool {
        matches!(self, CancelReason::DeadlineExceeded)
    }

    fn cause_address(&self) -> Option<*const ()> {
        self.cause()
            .map(|cause| std::sync::Arc::as_ptr(cause) as *const ())
    }
}

impl PartialEq for CancelReason {
    fn eq(&self, other: &Self) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
            && self.cause_address() == other.cause_address()
    }
}

impl Eq for CancelReason {}

impl std::hash::Hash for CancelReason {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
        self.cause_address().hash(state);
    }
}

impl fmt::Display for CancelReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CancelReason::Cancelled => f.write_str("cancelled"),
            CancelReason::DeadlineExceeded => f.write_str("deadline exceeded"),
            CancelReason::CancelledWith(cause) => write!(f, "cancelled: {cause}"),
        }
    }
}

/// A clone-able "stop now" signal, arranged in a tree, with an optional deadline.
///
/// Cancelling a token cancels every descendant ([`child`](CancelToken::child)), never
/// its parent. A token with a deadline counts as cancelled, with
/// [`CancelReason::DeadlineExceeded`], from the moment the deadline passes; no
/// background thread is involved. Every blocking corral call has a `_cancellable` form
/// that returns promptly when its token is cancelled.
///
/// # Example
///
/// ```
/// use corral::{cancel::CancelReason, CancelToken};
/// use std::time::Duration;
///
/// let root = CancelToken::new();
/// let request = root.child_with_timeout(Duration::from_secs(30));
/// let step = request.child();
///
/// std::thread::scope(|s| {
///     let worker = s.spawn(|| step.wait());
///     root.cancel(); // reaches every descendant
///     assert_eq!(worker.join().unwrap(), CancelReason::Cancelled);
/// });
/// assert!(request.is_cancelled());
/// ```
#[derive(Clone)]
pub struct CancelToken {
    handle: Arc<Handle>,
}

struct Handle {
    node: Arc<Node>,
    /// The parent's handle (kept alive by us) and our slot in its registry.
    parent: Option<(Arc<Handle>, usize)>,
}

struct Node {
    /// `NONE`, `CANCELLED` or `DEADLINE`; written under `state`'s lock, read without it.
    reason: AtomicUsize,
    /// Set once this node and every descendant registered on it are flagged: a
    /// cancel reaching a settled node has nothing left to do below it.
    settled: AtomicBool,
    deadline: Option<Instant>,
    state: Mutex<State>,
}

const NONE: usize = 0;
const CANCELLED: usize = 1;
const DEADLINE: usize = 2;

#[derive(Default)]
struct State {
    slots: Vec<Option<Entry>>,
    free: Vec<usize>,
    /// Dropped on cancel, which disconnects every receiver handed out by `done()`.
    done: Option<(Sender<()>, Receiver<()>)>,
    /// What the cancel that flagged this node carried, if anything; written once,
    /// with the flag, under the lock.
    cause: Option<CancelCause>,
}

/// Why a token was cancelled, in the words of whoever cancelled it
/// ([`CancelToken::cancel_with`]). A std `Arc`, also under loom: it is plain data,
/// shared under the node's lock.
pub type CancelCause = std::sync::Arc<dyn Error + Send + Sync>;

enum Entry {
    Child(Arc<Node>),
    Callback(Box<dyn FnOnce() + Send>),
}

impl State {
    fn insert(&mut self, entry: Entry) -> usize {
        match self.free.pop() {
            Some(key) => {
                self.slots[key] = Some(entry);
                key
            }
            None => {
                self.slots.push(Some(entry));
                self.slots.len() - 1
            }
        }
    }

    /// Takes the entry out; the caller drops it after releasing the lock, since
    /// dropping a callback runs user code (which may re-enter the token or panic).
    #[must_use = "drop the entry after releasing the lock"]
    fn remove(&mut self, key: usize) -> Option<Entry> {
        let entry = self.slots.get_mut(key)?.take();
        if entry.is_some() {
            self.free.push(key);
        }
        entry
    }
}

const CAUSED: usize = 3;

fn encode(reason: &CancelReason) -> usize {
    match reason {
        CancelReason::Cancelled => CANCELLED,
        CancelReason::DeadlineExceeded => DEADLINE,
        CancelReason::CancelledWith(_) => CAUSED,
    }
}

impl Node {
    fn new(deadline: Option<Instant>) -> Arc<Node> {
        Arc::new(Node {
            reason: AtomicUsize::new(NONE),
            settled: AtomicBool::new(false),
            deadline,
            state: Mutex::new(State::default()),
        })
    }

    fn is_flagged(&self) -> bool {
        self.reason.load(Ordering::Acquire) != NONE
    }

    /// The reason this node was flagged with; takes the node's lock only to copy a
    /// cause, so never call it with that lock held.
    fn flagged(&self) -> Option<CancelReason> {
        match self.reason.load(Ordering::Acquire) {
            CANCELLED => Some(CancelReason::Cancelled),
            DEADLINE => Some(CancelReason::DeadlineExceeded),
            CAUSED => self
                .state
                .lock()
                .cause
                .clone()
                .map(CancelReason::CancelledWith),
            _ => None,
        }
    }

    /// Cancels this node and its subtree; runs callbacks with no lock held.
    ///
    /// Returns once every node of the subtree is flagged, also when another thread is
    /// cancelling an ancestor at the same time: a node that thread flagged first is
    /// walked too (its children stay registered for that reason), because its
    /// descendants may not be flagged yet. Each node's callbacks run once, on the
    /// thread that flagged it. The walk is iterative (a stack, children before their
    /// parent is marked settled), so depth never grows the call stack.
    fn cancel(this: &Arc<Node>, reason: CancelReason) {
        let mut pending = vec![(Arc::clone(this), false)];
        let mut first_panic: Option<Box<dyn Any + Send>> = None;
        while let Some((node, below_done)) = pending.pop() {
            if below_done {
                node.settled.store(true, Ordering::Release);
                continue;
            }
            if node.settled.load(Ordering::Acquire) {
                continue;
            }
            pending.push((Arc::clone(&node), true));
            let (callbacks, done) = {
                let mut state = node.state.lock();
                let mut callbacks = Vec::new();
                let first = !node.is_flagged();
                if first {
                    state.cause = reason.cause().cloned();
                    node.reason.store(encode(&reason), Ordering::Release);
                }
                for slot in &mut state.slots {
                    match slot {
                        Some(Entry::Child(child)) => pending.push((Arc::clone(child), false)),
                        Some(Entry::Callback(_)) if first => {
                            if let Some(Entry::Callback(callback)) = slot.take() {
                                callbacks.push(callback);
                            }
                        }
                        _ => {}
                    }
                }
                (callbacks, if first { state.done.take() } else { None })
            };
            drop(done);
            for callback in callbacks {
                if let Err(payload) = catch_unwind(AssertUnwindSafe(callback)) {
                    first_panic.get_or_insert(payload);
                }
            }
        }
        if let Some(payload) = first_panic {
            resume_unwind(payload);
        }
    }
}

impl Drop for Handle {
    /// Unregisters from the parent, then walks up the chain of parents this was the
    /// last handle to, one at a time: a chain of a million nested children is dropped
    /// in a loop, not a million nested drops.
    fn drop(&mut self) {
        let mut next = self.parent.take();
        while let Some((parent, key)) = next.take() {
            let entry = parent.node.state.lock().remove(key);
            drop(entry);
            // Only the last reference is unwrapped; its own parent is taken out before
            // it drops, so that drop does not recurse. Any other reference just goes.
            if let Ok(mut handle) = Arc::try_unwrap(parent) {
                next = handle.parent.take();
            }
        }
    }
}

impl CancelToken {
    /// A new root token: not cancelled, no deadline.
    pub fn new() -> Self {
        Self::root(None)
    }

    /// A new root token that cancels itself `timeout` from now.
    pub fn with_timeout(timeout: Duration) -> Self {
        Self::root(Some(deadline_after(timeout)))
    }

    /// A new root token that cancels itself at `deadline`.
    pub fn with_deadline(deadline: Instant) -> Self {
        Self::root(Some(deadline))
    }

    fn root(deadline: Option<Instant>) -> Self {
        CancelToken {
            handle: Arc::new(Handle {
                node: Node::new(deadline),
                parent: None,
            }),
        }
    }

    /// A child token: cancelled when this token is, but cancelling it leaves this one
    /// alone. The child inherits this token's deadline.
    ///
    /// A child created from an already cancelled token starts cancelled. Dropping the
    /// last clone of a child (and of its descendants) unregisters it from the parent.
    pub fn child(&self) -> CancelToken {
        self.child_inner(None)
    }

    /// A child token whose deadline is `timeout` from now (or the parent's, if earlier).
    pub fn child_with_timeout(&self, timeout: Duration) -> CancelToken {
        self.child_inner(Some(deadline_after(timeout)))
    }

    /// A child token whose deadline is `deadline` (or the parent's, if earlier).
    pub fn child_with_deadline(&self, deadline: Instant) -> CancelToken {
        self.child_inner(Some(deadline))
    }

    fn child_inner(&self, deadline: Option<Instant>) -> CancelToken {
        let parent = &self.handle.node;
        let deadline = match (parent.deadline, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let node = Node::new(deadline);
        let key = {
            let mut state = parent.state.lock();
            match parent.reason.load(Ordering::Acquire) {
                NONE => Some(state.insert(Entry::Child(Arc::clone(&node)))),
                raw => {
                    // Nobody else can see the new node yet: its lock is free.
                    node.state.lock().cause = state.cause.clone();
                    node.reason.store(raw, Ordering::Release);
                    None
                }
            }
        };
        CancelToken {
            handle: Arc::new(Handle {
                node,
                parent: key.map(|key| (Arc::clone(&self.handle), key)),
            }),
        }
    }

    /// Cancels this token and every descendant, waking everything waiting on them.
    /// Idempotent: the first reason sticks.
    ///
    /// # Panics
    ///
    /// If an [`on_cancel`](CancelToken::on_cancel) callback panics, the first such
    /// panic is re-raised here, after every other callback has run and every
    /// descendant is cancelled (the token is fully cancelled either way). corral's own
    /// primitives catch it where they cancel on a thread of theirs.
    pub fn cancel(&self) {
        self.cancel_inner(CancelReason::Cancelled);
    }

    /// Cancels this token and every descendant, as [`cancel`](CancelToken::cancel),
    /// and records why: `cause` (an error, or a message) becomes the
    /// [`cause`](CancelToken::cause) of this token and of every descendant this
    /// cancel reaches. The first cancel of a token wins, reason and cause alike: a
    /// token already cancelled (or a descendant cancelled earlier on its own) keeps
    /// what it had. [`reason`](CancelToken::reason) is
    /// [`CancelReason::CancelledWith`] holding the cause (or
    /// [`CancelReason::DeadlineExceeded`] if the deadline had passed first, and then
    /// the cause is dropped), and every refusal the token causes carries that reason.
    ///
    /// # Panics
    ///
    /// As [`cancel`](CancelToken::cancel): a panicking `on_cancel` callback is
    /// re-raised here once the token is fully cancelled.
    ///
    /// # Example
    ///
    /// ```
    /// use corral::{cancel::CancelReason, CancelToken};
    ///
    /// let request = CancelToken::new();
    /// let step = request.child();
    /// request.cancel_with("the client went away");
    /// let reason = step.reason().expect("cancelled");
    /// assert!(matches!(reason, CancelReason::CancelledWith(_)));
    /// assert_eq!(reason.to_string(), "cancelled: the client went away");
    /// assert_eq!(step.cause().unwrap().to_string(), "the client went away");
    ///
    /// request.cancel_with("too late: the first cause stays");
    /// assert_eq!(request.cause().unwrap().to_string(), "the client went away");
    /// ```
    pub fn cancel_with(&self, cause: impl Into<Box<dyn Error + Send + Sync>>) {
        let cause: CancelCause = cause.into().into();
        self.cancel_inner(CancelReason::CancelledWith(cause));
    }

    /// Flags the subtree with `reason`, unless the deadline has already passed: then
    /// the deadline was first, and the token is flagged with that.
    fn cancel_inner(&self, reason: CancelReason) {
        let reason = match self.deadline() {
            Some(deadline) if time::now() >= deadline => CancelReason::DeadlineExceeded,
            _ => reason,
        };
        Node::cancel(&self.handle.node, reason);
    }

    /// The cause given to [`cancel_with`](CancelToken::cancel_with) by the cancel
    /// that reached this token (on it, or on the ancestor it came from), or `None`:
    /// not cancelled, cancelled by [`cancel`](CancelToken::cancel), or only past its
    /// deadline.
    ///
    /// A refusal caused by the token carries the same cause inside its
    /// [`CancelReason`] ([`CancelReason::cause`]), so whoever the token stopped can
    /// read it from the error alone.
    ///
    /// ```
    /// use corral::{pool::SubmitError, CancelToken, WorkerPool};
    ///
    /// let pool = WorkerPool::builder().workers(1).build()?;
    /// let token = CancelToken::new();
    /// token.cancel_with(std::io::Error::other("shutting down"));
    /// let err = pool.submit_cancellable(|| 1, &token).unwrap_err();
    /// let SubmitError::Cancelled(_, reason) = err else { panic!("{err}") };
    /// let cause = reason.cause().expect("the refusal carries the cause");
    /// assert_eq!(cause.to_string(), "shutting down");
    /// assert!(cause.downcast_ref::<std::io::Error>().is_some());
    /// assert!(std::sync::Arc::ptr_eq(cause, &token.cause().unwrap()));
    /// # Ok::<(), corral::StartError>(())
    /// ```
    pub fn cause(&self) -> Option<CancelCause> {
        self.handle.node.flagged()?.cause().cloned()
    }

    /// Whether this token is cancelled, explicitly or by its deadline.
    pub fn is_cancelled(&self) -> bool {
        self.reason().is_some()
    }

    /// Why this token is cancelled, or `None` while it is not.
    ///
    /// Observing a token never runs callbacks: a passed deadline is reported here (as
    /// [`CancelReason::DeadlineExceeded`]) without cancelling anything, so this is safe
    /// to call while holding locks that [`on_cancel`](CancelToken::on_cancel)
    /// callbacks take.
    pub fn reason(&self) -> Option<CancelReason> {
        let node = &self.handle.node;
        if let Some(reason) = node.flagged() {
            return Some(reason);
        }
        match node.deadline {
            Some(deadline) if time::now() >= deadline => Some(CancelReason::DeadlineExceeded),
            _ => None,
        }
    }

    /// The instant at which this token cancels itself, if it has one (inherited
    /// deadlines included).
    pub fn deadline(&self) -> Option<Instant> {
        self.handle.node.deadline
    }

    /// Time left until the deadline (zero once passed), or `None` without a deadline.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline()
            .map(|d| d.saturating_duration_since(time::now()))
    }

    /// Blocks until the token is cancelled and returns why.
    ///
    /// A token with a deadline returns at the deadline at the latest.
    pub fn wait(&self) -> CancelReason {
        loop {
            if let Some(reason) = self.wait_inner(None) {
                return reason;
            }
        }
    }

    /// Blocks until the token is cancelled or `timeout` passes.
    /// Returns the reason, or `None` on timeout.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<CancelReason> {
        self.wait_inner(Some(deadline_after(timeout)))
    }

    /// Blocks until the token is cancelled or `deadline` passes.
    /// Returns the reason, or `None` if the deadline came first.
    pub fn wait_deadline(&self, deadline: Instant) -> Option<CancelReason> {
        self.wait_inner(Some(deadline))
    }

    fn wait_inner(&self, until: Option<Instant>) -> Option<CancelReason> {
        if let Some(reason) = self.reason() {
            return Some(reason);
        }
        let me = thread::current();
        let _wake = self.on_cancel(move || me.unpark());
        let limit = match (until, self.deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        loop {
            if let Some(reason) = self.reason() {
                return Some(reason);
            }
            if until.is_some_and(|u| time::now() >= u) {
                return None;
            }
            thread::park_until(limit);
        }
    }

    /// Runs `callback` once when this token is cancelled (on the cancelling thread), or
    /// right now if it already is. Dropping the returned guard unregisters the callback
    /// if it has not run yet.
    ///
    /// Callbacks should be short and must not block: they typically wake a thread.
    /// They run with no lock held, so a callback may use the token (cancel it again,
    /// register another callback, which then runs at once, make a child, drop its
    /// clone); a panicking callback is described under [`cancel`](CancelToken::cancel).
    /// A callback that never runs is dropped when its registration is, with no lock
    /// held either.
    /// A deadline passing does not run them (no thread watches the clock, and
    /// observers never run callbacks); a waiter bounds its wait by
    /// [`deadline`](CancelToken::deadline) instead, as every corral wait does. A
    /// callback registered after the deadline has passed runs at once.
    ///
    /// # Example
    ///
    /// ```
    /// use corral::CancelToken;
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use std::sync::Arc;
    ///
    /// let token = CancelToken::new();
    /// let fired = Arc::new(AtomicBool::new(false));
    /// let flag = fired.clone();
    /// let _registration = token.on_cancel(move || flag.store(true, Ordering::SeqCst));
    /// token.cancel();
    /// assert!(fired.load(Ordering::SeqCst));
    /// ```
    pub fn on_cancel<F>(&self, callback: F) -> OnCancel
    where
        F: FnOnce() + Send + 'static,
    {
        let node = &self.handle.node;
        if self.reason().is_none() {
            let mut state = node.state.lock();
            if !node.is_flagged() {
                let key = state.insert(Entry::Callback(Box::new(callback)));
                return OnCancel {
                    registration: Some((self.clone(), key)),
                };
            }
        }
        callback();
        OnCancel { registration: None }
    }

    /// A receiver that becomes ready (disconnected) when this token is cancelled, for
    /// use in [`select!`](crate::channel::select) beside other channels.
    ///
    /// The receiver does not see a deadline pass by itself (no thread fires it); select
    /// on [`expired`](CancelToken::expired) as well for tokens with deadlines. The
    /// channel types come from crossbeam-channel, re-exported as
    /// [`corral::channel`](crate::channel), so no other dependency is needed.
    ///
    /// # Example
    ///
    /// ```
    /// use corral::channel::{bounded, select};
    /// use corral::CancelToken;
    ///
    /// let token = CancelToken::new();
    /// let (_tx, jobs) = bounded::<u32>(1);
    /// token.cancel();
    /// select! {
    ///     recv(jobs) -> job => unreachable!("no job was sent: {job:?}"),
    ///     recv(token.done()) -> _ => println!("cancelled"),
    ///     recv(token.expired()) -> _ => println!("deadline passed"),
    /// }
    /// ```
    pub fn done(&self) -> Receiver<()> {
        let node = &self.handle.node;
        let mut state = node.state.lock();
        if self.reason().is_some() {
            let (tx, rx) = crossbeam_channel::bounded(0);
            drop(tx);
            return rx;
        }
        let (_, rx) = state
            .done
            .get_or_insert_with(|| crossbeam_channel::bounded(0));
        rx.clone()
    }

    /// A receiver that delivers once at this token's deadline, or never without one.
    /// Pair it with [`done`](CancelToken::done) in a
    /// [`select!`](crate::channel::select).
    ///
    /// # Example
    ///
    /// ```
    /// use corral::channel::select;
    /// use corral::CancelToken;
    /// use std::time::Duration;
    ///
    /// let token = CancelToken::with_timeout(Duration::from_millis(5));
    /// let why = select! {
    ///     recv(token.done()) -> _ => "cancelled",
    ///     recv(token.expired()) -> _ => "deadline passed",
    /// };
    /// assert_eq!(why, "deadline passed");
    /// ```
    pub fn expired(&self) -> Receiver<Instant> {
        match self.deadline() {
            Some(deadline) => crossbeam_channel::at(deadline),
            None => crossbeam_channel::never(),
        }
    }

    /// A guard that cancels this token when dropped (also while unwinding), unless
    /// [`disarm`](CancelOnDrop::disarm)ed: ties the token to a stack frame, so an early
    /// `return` or `?` still stops the work started under it.
    pub fn cancel_on_drop(&self) -> CancelOnDrop {
        CancelOnDrop {
            token: Some(self.clone()),
        }
    }

    /// How many children and callbacks are registered on this token right now.
    ///
    /// Dropped children and callback guards unregister themselves, so this stays as
    /// small as what is alive; it is zero once the token is cancelled.
    pub fn registered(&self) -> usize {
        self.handle.node.state.lock().slots.iter().flatten().count()
    }

    /// Whether this is the only handle to a root token without a deadline that is not
    /// cancelled and has nothing registered or handed out (no child, no callback, no
    /// `done()` receiver): such a token is indistinguishable from a new one, so it can
    /// be reused for a new call instead of allocating one.
    pub(crate) fn is_pristine(&self) -> bool {
        let node = &self.handle.node;
        Arc::strong_count(&self.handle) == 1
            && Arc::strong_count(node) == 1
            && self.handle.parent.is_none()
            && node.deadline.is_none()
            && !node.is_flagged()
            && {
                let state = node.state.lock();
                state.slots.iter().all(Option::is_none) && state.done.is_none()
            }
    }

    /// Whether two handles refer to the same token.
    pub fn same_as(&self, other: &CancelToken) -> bool {
        Arc::ptr_eq(&self.handle.node, &other.handle.node)
    }
}

fn deadline_after(timeout: Duration) -> Instant {
    time::deadline_after(time::now(), timeout)
}

impl Default for CancelToken {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelToken")
            .field("reason", &self.reason())
            .field("deadline", &self.deadline())
            .finish()
    }
}

/// Registration of an [`on_cancel`](CancelToken::on_cancel) callback; dropping it
/// unregisters the callback if it has not run.
#[must_use = "dropping the registration unregisters the callback"]
pub struct OnCancel {
    registration: Option<(CancelToken, usize)>,
}

impl Drop for OnCancel {
    fn drop(&mut self) {
        if let Some((token, key)) = self.registration.take() {
            // After a cancel the slab is emptied and never refilled, so a stale key
            // can never remove somebody else's entry. The callback is dropped with
            // no lock held: its captures may use the token or panic.
            let entry = token.handle.node.state.lock().remove(key);
            drop(entry);
        }
    }
}

impl fmt::Debug for OnCancel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnCancel")
            .field("registered", &self.registration.is_some())
            .finish()
    }
}

/// Cancels its token on drop unless disarmed. See [`CancelToken::cancel_on_drop`].
#[must_use = "the token is cancelled when this guard is dropped"]
#[derive(Debug)]
pub struct CancelOnDrop {
    token: Option<CancelToken>,
}

impl CancelOnDrop {
    /// Keeps the token alive and uncancelled; returns it.
    pub fn disarm(mut self) -> CancelToken {
        self.token
            .take()
            .expect("guard holds its token until dropped")
    }
}

impl Drop for CancelOnDrop {
    /// Cancels the token. While the thread is already unwinding, a panic from an
    /// [`on_cancel`](CancelToken::on_cancel) callback is not re-raised (a second panic
    /// would abort the process); the panic hook has reported it, and every callback
    /// and descendant was still reached.
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            if std::thread::panicking() {
                let _ = catch_unwind(AssertUnwindSafe(|| token.cancel()));
            } else {
                token.cancel();
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn registrations_are_reused_after_drop() {
        let parent = CancelToken::new();
        for _ in 0..1_000_000 {
            let child = parent.child();
            let _cb = child.on_cancel(|| {});
        }
        let state = parent.handle.node.state.lock();
        assert!(state.slots.len() <= 1, "slots: {}", state.slots.len());
    }

    #[test]
    fn dropping_a_middle_token_keeps_grandchildren_reachable() {
        let root = CancelToken::new();
        let grandchild = {
            let middle = root.child();
            middle.child()
        };
        root.cancel();
        assert_eq!(grandchild.reason(), Some(CancelReason::Cancelled));
    }
}
