//! The door of a pushed input: how senders and a close agree on the last item.
//!
//! A sender [`enter`](Door::enter)s before it puts an item in the first queue and
//! leaves (drops its [`Pass`]) once the item is there; a closed door lets nobody in.
//! Once the door is [`settled`](Door::settled) (closed, and nobody inside), whatever
//! the queue holds is all it will ever get: the receivers drain it and stop. Both
//! sides use `SeqCst`, so a sender that enters after the close sees it, and a receiver
//! that finds the door settled saw every sender that got in (checked under loom).

use crate::sync::{AtomicBool, AtomicUsize, Ordering};

pub(crate) struct Door {
    closed: AtomicBool,
    inside: AtomicUsize,
}

/// A sender inside the door; it leaves when this is dropped.
pub(crate) struct Pass<'a>(&'a Door);

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        self.0.inside.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Door {
    pub(crate) fn new() -> Self {
        Door {
            closed: AtomicBool::new(false),
            inside: AtomicUsize::new(0),
        }
    }

    /// Lets a sender in, unless the door is closed.
    pub(crate) fn enter(&self) -> Option<Pass<'_>> {
        self.inside.fetch_add(1, Ordering::SeqCst);
        let pass = Pass(self);
        if self.closed.load(Ordering::SeqCst) {
            return None; // `pass` leaves again
        }
        Some(pass)
    }

    /// Closes the door; `true` for the call that closed it.
    pub(crate) fn close(&self) -> bool {
        !self.closed.swap(true, Ordering::SeqCst)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Closed with nobody inside: every item that got in is in the queue.
    pub(crate) fn settled(&self) -> bool {
        self.is_closed() && self.inside.load(Ordering::SeqCst) == 0
    }
}

/// The door, for the loom models in `tests/loom_pipeline.rs`.
#[cfg(loom)]
#[doc(hidden)]
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
