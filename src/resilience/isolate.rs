//! The pool a [`Resilience`](super::Resilience) stack owns to give up on a call.
//!
//! Each attempt takes a worker slot first (a semaphore with one permit per worker,
//! tried without waiting), so the pool's queue never holds more tasks than there are
//! free workers and a full pool refuses at once. The slot travels with the task and
//! is released when the task ends, not when its caller stops waiting: a call given
//! up on keeps its worker until it returns. An attempt's state moves from queued to
//! running to done; a caller that gives up first marks it abandoned, so a task still
//! queued never starts its call, and one already running is counted until it ends.

use std::sync::Arc;
use std::time::Duration;

use crate::cancel::{CancelReason, CancelToken};
use crate::config::ConfigError;
use crate::pool::WorkerPool;
use crate::semaphore::{OwnedPermit, Semaphore};
use crate::sync::{AtomicU64, AtomicU8, Ordering};

const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const DONE: u8 = 2;
const ABANDONED: u8 = 3;

/// What became of the calls given up on.
#[derive(Default)]
pub(super) struct Tally {
    /// Given up on while running.
    pub(super) abandoned: AtomicU64,
    /// Of those, returned since.
    pub(super) abandoned_finished: AtomicU64,
    /// Given up on while queued: never started.
    pub(super) never_started: AtomicU64,
}

/// How one attempt on the pool ended for its caller.
pub(super) enum Ran<T, E> {
    /// It returned (or panicked, re-raised before this is built).
    Returned(Result<T, E>),
    /// The caller's token ended the wait; `started` says whether the call had begun.
    GaveUp { reason: CancelReason, started: bool },
    /// The pool is shutting down: nothing ran.
    Closed,
}

pub(super) struct Isolation {
    pool: WorkerPool,
    slots: Arc<Semaphore>,
    pub(super) tally: Arc<Tally>,
}

/// Marks the attempt done when the task ends (also by a panic), counting a call
/// that had been given up on.
struct Finish {
    state: Arc<AtomicU8>,
    tally: Arc<Tally>,
}

impl Drop for Finish {
    fn drop(&mut self) {
        if self.state.swap(DONE, Ordering::AcqRel) == ABANDONED {
            self.tally
                .abandoned_finished
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Isolation {
    pub(super) fn new(workers: usize, name: &str) -> Result<Self, ConfigError> {
        let pool = WorkerPool::builder()
            .workers(workers)
            .queue_capacity(workers)
            .thread_name(name)
            .build()
            .map_err(|e| match e.config() {
                Some(config) => config.clone(),
                None => ConfigError::new("isolate", workers, "the OS refused a thread"),
            })?;
        Ok(Isolation {
            pool,
            slots: Arc::new(Semaphore::new(workers)),
            tally: Arc::default(),
        })
    }

    pub(super) fn workers(&self) -> usize {
        self.slots.capacity()
    }

    /// A free worker, or `None` at once.
    pub(super) fn slot(&self) -> Option<OwnedPermit> {
        self.slots.try_acquire_owned().ok()
    }

    /// Runs one attempt of `f` on the pool and waits for it until `token` ends; `f`
    /// comes back unless the attempt was given up on (then the task keeps it).
    pub(super) fn run<F, T, E>(
        &self,
        mut f: F,
        token: &CancelToken,
        slot: OwnedPermit,
    ) -> (Option<F>, Ran<T, E>)
    where
        F: FnMut(&CancelToken) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let state = Arc::new(AtomicU8::new(QUEUED));
        let (task_state, tally) = (Arc::clone(&state), Arc::clone(&self.tally));
        let call_token = token.clone();
        let task = move || {
            let _slot = slot;
            if task_state
                .compare_exchange(QUEUED, RUNNING, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                // Given up on while queued: the call never starts.
                return None;
            }
            let _finish = Finish {
                state: task_state,
                tally,
            };
            let outcome = f(&call_token);
            Some((f, outcome))
        };
        let handle = match self.pool.try_submit(task) {
            Ok(handle) => handle,
            // The slot bounds the queue, so only a closed pool refuses.
            Err(_) => return (None, Ran::Closed),
        };
        let result = match handle.join_cancellable(token) {
            Ok(result) => result,
            Err(handle) => {
                let reason = token.reason().unwrap_or(CancelReason::Cancelled);
                for (from, started, counter) in [
                    (QUEUED, false, &self.tally.never_started),
                    (RUNNING, true, &self.tally.abandoned),
                ] {
                    if state
                        .compare_exchange(from, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        counter.fetch_add(1, Ordering::Relaxed);
                        return (None, Ran::GaveUp { reason, started });
                    }
                }
                // Done just now: the result is on its way.
                handle.join()
            }
        };
        match result {
            Ok(Some((f, outcome))) => (Some(f), Ran::Returned(outcome)),
            Ok(None) => (None, Ran::Closed),
            Err(error) => match error.into_panic() {
                // The call's panic is its caller's, as on the caller's own thread.
                Some(panic) => panic.resume(),
                None => (None, Ran::Closed),
            },
        }
    }

    /// Stops the pool if every task ends within `timeout`; otherwise hands it back.
    pub(super) fn shutdown_timeout(self, timeout: Duration) -> Result<(), Self> {
        let Isolation { pool, slots, tally } = self;
        match pool.shutdown_timeout(timeout) {
            Ok(_) => Ok(()),
            Err(pool) => Err(Isolation { pool, slots, tally }),
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    use crate::leak::LeakCheck;
    use crate::sync::AtomicBool;

    /// A task still queued when its caller gives up never starts its call, and its
    /// worker slot comes back when the pool reaches it.
    #[test]
    fn a_call_still_queued_when_its_caller_gives_up_never_starts() {
        let check = LeakCheck::new();
        let isolation = Isolation::new(1, "resilience-queued").unwrap();
        // The only worker is busy with something the stack did not send (so a slot
        // is free but the call has to queue).
        let (release, gate) = crossbeam_channel::bounded::<()>(0);
        let (busy_tx, busy) = crossbeam_channel::bounded::<()>(1);
        isolation
            .pool
            .execute(move || {
                busy_tx.send(()).unwrap();
                gate.recv().ok();
            })
            .unwrap();
        busy.recv().unwrap();
        let ran = Arc::new(AtomicBool::new(false));
        let call_ran = Arc::clone(&ran);
        let token = CancelToken::with_timeout(Duration::from_millis(10));
        let slot = isolation.slot().unwrap();
        let (back, outcome) = isolation.run(
            move |_: &CancelToken| -> Result<(), ()> {
                call_ran.store(true, Ordering::SeqCst);
                Ok(())
            },
            &token,
            slot,
        );
        assert!(back.is_none());
        assert!(matches!(
            outcome,
            Ran::GaveUp {
                reason: CancelReason::DeadlineExceeded,
                started: false
            }
        ));
        assert_eq!(isolation.tally.never_started.load(Ordering::SeqCst), 1);
        assert_eq!(isolation.tally.abandoned.load(Ordering::SeqCst), 0);
        drop(release);
        assert!(isolation.shutdown_timeout(Duration::from_secs(30)).is_ok());
        assert!(!ran.load(Ordering::SeqCst), "the queued call started");
        check.verify().expect("joined");
    }
}
