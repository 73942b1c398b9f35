//! The door of a pushed input: how senders and a close agree on the last item.
//!
//! A sender [`enter`](Door::enter)s before it puts an item in the first queue and
//! leaves (drops its [`Pass`]) once the item is there; a closed door lets nobody in.
//! Once the door is [`settled`](Door::settled) (closed, and nobody inside), whatever
//! the queue holds is all it will ever get: the receivers drain it and stop. The
//! closed bit and the count of senders inside share one atomic word, so every enter,
//! leave and close is a read-modify-write of it, in one order all threads agree on
//! (checked under loom).

use crate::sync::{AtomicUsize, Ordering};

/// The closed bit; the rest of the word counts the senders inside, in steps of 2.
const CLOSED: usize = 1;
const ONE_INSIDE: usize = 2;

pub(crate) struct Door {
    state: AtomicUsize,
}

/// A sender inside the door; it leaves when this is dropped.
pub(crate) struct Pass<'a>(&'a Door);

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        // Release: a receiver that sees the door settled sees this sender's item.
        self.0.state.fetch_sub(ONE_INSIDE, Ordering::Release);
    }
}

impl Door {
    pub(crate) fn new() -> Self {
        Door {
            state: AtomicUsize::new(0),
        }
    }

    /// Lets a sender in, unless the door is closed.
    pub(crate) fn enter(&self) -> Option<Pass<'_>> {
        let before = self.state.fetch_add(ONE_INSIDE, Ordering::Acquire);
        let pass = Pass(self);
        if before & CLOSED != 0 {
            return None; // `pass` leaves again
        }
        Some(pass)
    }

    /// Closes the door; `true` for the call that closed it.
    pub(crate) fn close(&self) -> bool {
        self.state.fetch_or(CLOSED, Ordering::AcqRel) & CLOSED == 0
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state.load(Ordering::Acquire) & CLOSED != 0
    }

    /// Closed with nobody inside: every item that got in is in the queue.
    pub(crate) fn settled(&self) -> bool {
        self.state.load(Ordering::Acquire) == CLOSED
    }
}

/// The door, for the loom models in `tests/loom_pipeline.rs`.
#[cfg(loom)]
#[doc(hidden)]
#[allow(missing_debug_implementations)]
pub struct LoomDoor(Door);

#[cfg(loom)]
impl LoomDoor {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        LoomDoor(Door::new())
    }

    /// Runs `send` inside the door: `false` (and `send` not run) if it is closed.
    pub fn send_with(&self, send: impl FnOnce()) -> bool {
        match self.0.enter() {
            Some(_pass) => {
                send();
                true
            }
            None => false,
        }
    }

    pub fn close(&self) -> bool {
        self.0.close()
    }

    pub fn settled(&self) -> bool {
        self.0.settled()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_closed_door_lets_nobody_in_and_settles_once_everybody_has_left() {
        let door = Door::new();
        let inside = door.enter().expect("open");
        assert!(!door.is_closed());
        assert!(door.close());
        assert!(!door.close(), "closed once");
        assert!(door.is_closed());
        assert!(!door.settled(), "a sender is still inside");
        assert!(door.enter().is_none());
        assert!(!door.settled());
        drop(inside);
        assert!(door.settled());
    }
}
