//! The one queue mechanism: bounded sends on crossbeam channels under a [`Until`]
//! bound, and [`offer`], the one dispatcher of an [`Overflow`] policy. Shared by the
//! worker pool and the pipeline, so the two apply overflow policies the same way; a
//! refused item comes back inside the one refusal type, [`Refused`].

use std::time::Duration;

use crossbeam_channel::{Receiver, Select, SendTimeoutError, Sender, TrySendError};

use crate::cancel::CancelReason;
use crate::overflow::Overflow;
use crate::sync::time;
use crate::wait::{Backoff, Until};

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

impl<T> Refused<T> {
    /// The refused item.
    pub(crate) fn into_item(self) -> T {
        match self {
            Refused::Full(t)
            | Refused::Closed(t)
            | Refused::TimedOut(t)
            | Refused::Cancelled(t, _) => t,
        }
    }

    /// The same refusal, for the item `f` makes of the refused one.
    pub(crate) fn map<U>(self, f: impl FnOnce(T) -> U) -> Refused<U> {
        match self {
            Refused::Full(t) => Refused::Full(f(t)),
            Refused::Closed(t) => Refused::Closed(f(t)),
            Refused::TimedOut(t) => Refused::TimedOut(f(t)),
            Refused::Cancelled(t, reason) => Refused::Cancelled(f(t), reason),
        }
    }
}

/// What became of an item [`offer`] took.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Offered<T> {
    /// Queued at once; or lost to a drop policy (every lost item went to `dropped`).
    Done,
    /// Queued after waiting this long for room (`Block`).
    Waited(Duration),
    /// Handed back for the caller to run itself: `CallerRuns`, or an unbounded `Block`
    /// wait that `may_wait` forbade.
    RunHere(T),
}

/// Offers `item` to the bounded queue `tx` under `policy`: the one overflow dispatcher.
///
/// - `until` bounds a `Block` wait; `None` is a try form, where `Block` refuses a full
///   queue with [`Refused::Full`] as `Reject` does. A bounded `Block` goes straight to
///   [`send_until`]; anything else tries first, and only a full queue takes the cold
///   path.
/// - An unbounded `Block` wait re-checks the queue under the crate's spin-then-park
///   policy ([`Backoff`]); only when the spin found no room does it ask `may_wait`,
///   whose `false` hands the item back as [`Offered::RunHere`], and then it blocks.
/// - `DropNewest` hands the new item to `dropped`; `DropOldest` evicts through `evict`
///   (the queue's own receiver; without one it refuses like `Reject`) and hands every
///   evicted item to `dropped`; `CallerRuns` hands it back as [`Offered::RunHere`].
/// - A closed queue refuses with [`Refused::Closed`]. Any refusal holds `item` itself.
#[inline(always)]
pub(crate) fn offer<T>(
    tx: &Sender<T>,
    evict: Option<&Receiver<T>>,
    item: T,
    policy: Overflow,
    until: Option<&Until<'_>>,
    dropped: impl FnMut(T),
    may_wait: impl FnOnce() -> bool,
) -> Result<Offered<T>, Refused<T>> {
    let sent = match until {
        Some(until) if policy == Overflow::Block && until.is_bounded() => {
            return send_until(tx, item, until).map(|()| Offered::Done);
        }
        _ => try_send(tx, item),
    };
    match sent {
        Ok(()) => Ok(Offered::Done),
        Err(Refused::Full(item)) => full(tx, evict, item, policy, until, dropped, may_wait),
        Err(refused) => Err(refused),
    }
}

/// [`offer`] found the queue full (and did not wait in `send_until`).
#[cold]
#[inline(never)]
fn full<T>(
    tx: &Sender<T>,
    evict: Option<&Receiver<T>>,
    mut item: T,
    policy: Overflow,
    until: Option<&Until<'_>>,
    mut dropped: impl FnMut(T),
    may_wait: impl FnOnce() -> bool,
) -> Result<Offered<T>, Refused<T>> {
    match (policy, until, evict) {
        (Overflow::Block, Some(until), _) => {
            let started = time::now();
            let waited = || time::now().saturating_duration_since(started);
            let mut backoff = Backoff::new();
            while backoff.snooze() {
                match try_send(tx, item) {
                    Ok(()) => return Ok(Offered::Waited(waited())),
                    Err(Refused::Full(back)) => item = back,
                    Err(other) => return Err(other),
                }
            }
            // Asked only now, when the spin found no room and the thread would park:
            // what it does (mark the thread blocked, or decline) costs nothing on a
            // queue that drains within the spin.
            if !may_wait() {
                return Ok(Offered::RunHere(item));
            }
            send_until(tx, item, until).map(|()| Offered::Waited(waited()))
        }
        (Overflow::DropNewest, ..) => {
            dropped(item);
            Ok(Offered::Done)
        }
        (Overflow::DropOldest, _, Some(rx)) => {
            send_evicting(tx, rx, item, dropped).map(|()| Offered::Done)
        }
        (Overflow::CallerRuns, ..) => Ok(Offered::RunHere(item)),
        // `Reject`, a try form of `Block`, `DropOldest` without a receiver.
        _ => Err(Refused::Full(item)),
    }
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

    #[test]
    fn offer_applies_each_policy() {
        let never = || -> bool { panic!("asked whether it may wait") };
        let (tx, rx) = crossbeam_channel::bounded(1);
        let forever = Some(&Until::FOREVER);
        let mut lost = Vec::new();
        let offer_as = |item, policy, until, lost: &mut Vec<i32>| {
            offer(&tx, Some(&rx), item, policy, until, |x| lost.push(x), never)
        };
        assert_eq!(
            offer_as(0, Overflow::Reject, None, &mut lost),
            Ok(Offered::Done)
        );
        assert_eq!(
            offer_as(1, Overflow::Reject, forever, &mut lost),
            Err(Refused::Full(1))
        );
        assert_eq!(
            offer_as(2, Overflow::Block, None, &mut lost),
            Err(Refused::Full(2))
        );
        let timeout = Until::timeout(Duration::from_millis(1));
        assert_eq!(
            offer_as(3, Overflow::Block, Some(&timeout), &mut lost),
            Err(Refused::TimedOut(3))
        );
        assert_eq!(
            offer_as(4, Overflow::DropNewest, None, &mut lost),
            Ok(Offered::Done)
        );
        assert_eq!(
            offer_as(5, Overflow::DropOldest, None, &mut lost),
            Ok(Offered::Done)
        );
        assert_eq!(lost, [4, 0]);
        assert_eq!(
            offer_as(6, Overflow::CallerRuns, forever, &mut lost),
            Ok(Offered::RunHere(6))
        );
        // An unbounded `Block` wait asks first, and only when the queue is full.
        let refused = offer(&tx, None, 7, Overflow::Block, forever, drop, || false);
        assert_eq!(refused, Ok(Offered::RunHere(7)));
        assert_eq!(rx.try_recv(), Ok(5));
        let sent = offer(&tx, None, 8, Overflow::Block, forever, drop, never);
        assert_eq!(sent, Ok(Offered::Done));
        drop(rx);
        assert_eq!(
            offer(&tx, None, 9, Overflow::Block, forever, drop, never),
            Err(Refused::Closed(9))
        );
    }

    #[test]
    fn a_blocked_offer_waits_for_room_and_reports_the_wait() {
        let (tx, rx) = crossbeam_channel::bounded(1);
        tx.send(0).unwrap();
        std::thread::scope(|s| {
            let taker = s.spawn(|| rx.recv());
            let sent = offer(
                &tx,
                None,
                1,
                Overflow::Block,
                Some(&Until::FOREVER),
                drop,
                || true,
            );
            assert!(
                matches!(sent, Ok(Offered::Waited(_) | Offered::Done)),
                "{sent:?}"
            );
            assert_eq!(taker.join().unwrap(), Ok(0));
        });
        assert_eq!(rx.try_recv(), Ok(1));
    }
}
