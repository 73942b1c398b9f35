//! A minimal counting slot limiter for [`TaskGroup::limit`](crate::TaskGroup::limit).
//!
//! Implementation notes. One mutex guards `used`, `max` and the parked waiters. A
//! release wakes every waiter (they re-check and re-register), which cannot lose a
//! wake-up even when a woken waiter has meanwhile timed out; the herd is as large as
//! the number of blocked spawners, which is small. Deliberately not the crate's
//! `Semaphore` (no fairness, no weights): it only has to bound a group's concurrency.
//! Built on `crate::sync` and `Until` only, and model-checked under loom.

use crate::sync::{thread, Mutex};
use crate::wait::{Interrupted, Until};

#[derive(Debug)]
pub(crate) struct Slots {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    used: usize,
    max: usize,
    waiters: Vec<thread::Thread>,
}

impl Slots {
    pub(crate) fn new(max: usize) -> Self {
        Slots {
            state: Mutex::new(State {
                used: 0,
                max,
                waiters: Vec::new(),
            }),
        }
    }

    /// Takes a slot if one is free.
    pub(crate) fn try_acquire(&self) -> bool {
        let mut state = self.state.lock();
        if state.used < state.max {
            state.used += 1;
            true
        } else {
            false
        }
    }

    /// Takes a slot, waiting within `until`.
    pub(crate) fn acquire(&self, until: &Until<'_>) -> Result<(), Interrupted> {
        if self.try_acquire() {
            return Ok(());
        }
        let _wake = until.unpark_on_cancel();
        loop {
            {
                let mut state = self.state.lock();
                if state.used < state.max {
                    state.used += 1;
                    return Ok(());
                }
                state.waiters.push(thread::current());
            }
            until.park()?;
        }
    }

    /// Gives a slot back and wakes the waiters.
    pub(crate) fn release(&self) {
        let waiters = {
            let mut state = self.state.lock();
            state.used -= 1;
            std::mem::take(&mut state.waiters)
        };
        for waiter in waiters {
            waiter.unpark();
        }
    }

    /// Slots in use now.
    #[allow(dead_code)]
    pub(crate) fn used(&self) -> usize {
        self.state.lock().used
    }
}
