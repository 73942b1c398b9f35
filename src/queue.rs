//! Bounded sends on crossbeam channels under a [`Until`] bound, and the eviction that
//! [`Overflow::DropOldest`](crate::Overflow::DropOldest) needs. Shared by the worker
//! pool and the pipeline, so the two apply overflow policies the same way.

use crossbeam_channel::{Receiver, Select, SendTimeoutError, Sender, TrySendError};

use crate::cancel::CancelReason;
use crate::wait::Until;

/// Why an item could not be queued; the item travels back inside.
///
/// The item inside is always the very one the caller passed, never another (an
/// evicted one goes to the eviction callback instead). The worker pool's `unsafe`
/// recovery of a refused job's type (`Core::push`) relies on this.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused<T> {
    /// The queue is full (non-blocking send).
    Full(T),
    /// Every receiver is gone.
    Closed(T),
    /// The caller's deadline passed while waiting for room.
    TimedOut(T),
    /// The caller's token was cancelled while waiting for room.
    Cancelled(T, CancelReason),
}

/// Sends without waiting.
pub(crate) fn try_send<T>(tx: &Sender<T>, item: T) -> Result<(), Refused<T>> {
    tx.try_send(item).map_err(|e| match e {
        TrySendError::Full(item) => Refused::Full(item),
        TrySendError::Disconnected(item) => Refused::Closed(item),
    })
}

/// Sends, waiting for room within `until`.
pub(crate) fn send_until<T>(tx: &Sender<T>, item: T, until: &Until<'_>) -> Result<(), Refused<T>> {
    let Some(token) = until.token() else {
        return match until.caller_deadline() {
            None => tx.send(item).map_err(|e| Refused::Closed(e.into_inner())),
            Some(deadline) => tx.send_deadline(item, deadline).map_err(|e| match e {
                SendTimeoutError::Timeout(item) => Refused::TimedOut(item),
                SendTimeoutError::Disconnected(item) => Refused::Closed(item),
            }),
        };
    };
    if let Some(reason) = token.reason() {
        return Err(Refused::Cancelled(item, reason));
    }
    let done = token.done();
    let expired = token.expired();
    let mut select = Select::new();
    let send = select.send(tx);
    let cancelled = select.recv(&done);
    let _expired = select.recv(&expired);
    let op = match until.caller_deadline() {
        None => select.select(),
        Some(deadline) => match select.select_deadline(deadline) {
            Ok(op) => op,
            Err(_) => return Err(Refused::TimedOut(item)),
        },
    };
    match op.index() {
        i if i == send => op
            .send(tx, item)
            .map_err(|e| Refused::Closed(e.into_inner())),
        i if i == cancelled => {
            let _ = op.recv(&done);
            let reason = token.reason().unwrap_or(CancelReason::Cancelled);
            Err(Refused::Cancelled(item, reason))
        }
        _ => {
            let _ = op.recv(&expired);
            Err(Refused::Cancelled(item, CancelReason::DeadlineExceeded))
        }
    }
}

/// Sends without waiting, evicting the oldest queued items (through `rx`) until the
/// new one fits. Each evicted item goes to `evicted`; with racing producers more than
/// one may be evicted, never silently. A refusal returns `item` itself (see
/// [`Refused`]).
pub(crate) fn send_evicting<T>(
    tx: &Sender<T>,
    rx: &Receiver<T>,
    mut item: T,
    mut evicted: impl FnMut(T),
) -> Result<(), Refused<T>> {
    loop {
        match try_send(tx, item) {
            Err(Refused::Full(back)) => {
                item = back;
                if let Ok(old) = rx.try_recv() {
                    evicted(old);
                }
            }
            other => return other,
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::cancel::CancelToken;
    use std::time::Duration;

    #[test]
    fn eviction_hands_back_the_oldest() {
        let (tx, rx) = crossbeam_channel::bounded(2);
        let mut lost = Vec::new();
        for i in 0..5 {
            send_evicting(&tx, &rx, i, |old| lost.push(old)).unwrap();
        }
        assert_eq!(lost, vec![0, 1, 2]);
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), vec![3, 4]);
    }

    #[test]
    fn bounded_send_returns_the_item() {
        let (tx, _rx) = crossbeam_channel::bounded(1);
        tx.send(0).unwrap();
        let timeout = Until::timeout(Duration::from_millis(5));
        assert_eq!(send_until(&tx, 1, &timeout), Err(Refused::TimedOut(1)));
        let token = CancelToken::new();
        token.cancel();
        assert_eq!(
            send_until(&tx, 2, &Until::cancellable(&token)),
            Err(Refused::Cancelled(2, CancelReason::Cancelled))
        );
        assert_eq!(try_send(&tx, 3), Err(Refused::Full(3)));
    }
}
