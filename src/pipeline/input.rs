//! A pipeline fed by pushing: [`Pipeline::with_input`] and its [`Input`] handle, with
//! the send forms and their error, [`SendError`].

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::run::{Port, PortOwner};
use super::{Head, Pipeline, DEFAULT_CAPACITY};
use crate::cancel::{CancelReason, CancelToken};
use crate::overflow::Overflow;
use crate::queue::Refused;
use crate::wait::Until;

impl<T: Send + 'static> Pipeline<'static, T> {
    /// A pipeline fed by pushing instead of pulling: items come in through the
    /// returned [`Input`] handle (clone it for every producer thread) while the
    /// pipeline runs, usually [`spawn`](Pipeline::spawn)ed.
    ///
    /// The first stage's queue takes the pushed items under its
    /// [`overflow`](Pipeline::overflow) policy, as it would take pulled ones:
    /// [`Overflow::Block`] makes [`send`](Input::send) wait for room (backpressure
    /// reaches the producers), the drop policies drop an item (counted and handed to
    /// [`on_drop`](Pipeline::on_drop), set right after this call). The input ends
    /// when the last `Input` is dropped, on [`Input::close`], or on
    /// [`RunningPipeline::stop`](super::RunningPipeline::stop); the run then drains
    /// what is inside and ends. In the report, stage `"source"` counts the accepted
    /// items and the time senders waited for room.
    ///
    /// Items travel one at a time and have no order to restore: a pushed pipeline
    /// with [`batch`](Pipeline::batch) above 1 or [`ordered`](Pipeline::ordered) is
    /// refused with a [`ConfigError`](crate::ConfigError).
    ///
    /// # Example
    ///
    /// ```
    /// use corral::Pipeline;
    ///
    /// let (input, pipeline) = Pipeline::with_input();
    /// let running = pipeline
    ///     .stage("double", 2, |x: u64| x * 2)
    ///     .capacity(8)
    ///     .spawn(|_| {})?;
    /// std::thread::scope(|s| {
    ///     for t in 0..4u64 {
    ///         let input = input.clone();
    ///         s.spawn(move || (0..100).for_each(|i| input.send(t * 100 + i).unwrap()));
    ///     }
    /// });
    /// drop(input); // the last handle: the input ends, the run drains
    /// let report = running.join()?;
    /// assert_eq!(report.delivered(), 400);
    /// # Ok::<(), corral::pipeline::PipelineError>(())
    /// ```
    pub fn with_input() -> (Input<T>, Self) {
        let port = Arc::new(Port::new());
        let input = Input {
            shared: Arc::new(Shared {
                port: Arc::clone(&port),
            }),
        };
        let pipeline = Pipeline {
            head: Head::Push(PortOwner::new(port)),
            stages: vec![("source".to_owned(), 1)],
            buffers: vec![None],
            overflows: vec![None],
            on_drop: None,
            capacity: DEFAULT_CAPACITY,
            overflow: Overflow::Block,
            batch: 1,
            ordered: None,
            pushed: true,
            batched: false,
            clock: Arc::new(crate::clock::SystemClock),
            name: None,
            watchdog: None,
            invalid: None,
            #[cfg(test)]
            fail_spawn_at: None,
        };
        (input, pipeline)
    }
}

/// The sending end of a pushed pipeline ([`Pipeline::with_input`]). `Clone + Send +
/// Sync`: give each producer thread a clone. The input ends when the last clone is
/// dropped or any clone calls [`close`](Input::close).
///
/// Every send form hands a refused item back inside its [`SendError`]; an accepted
/// item is in the pipeline's books (delivered, dropped by the overflow policy and
/// handed to `on_drop`, failed, or counted as not processed). Sends that come before
/// the run has started wait for it as for room.
pub struct Input<T> {
    shared: Arc<Shared<T>>,
}

/// Shared by the clones of one [`Input`]: the last one to go ends the input.
struct Shared<T> {
    port: Arc<Port<'static, T>>,
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        self.port.inlet.close();
    }
}

impl<T> Clone for Input<T> {
    fn clone(&self) -> Self {
        Input {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> fmt::Debug for Input<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Input")
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl<T> Input<T> {
    /// Sends `item`, waiting while the first queue is full (under
    /// [`Overflow::Block`]; a drop policy never waits).
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] once the input has ended or the run has stopped.
    #[track_caller]
    pub fn send(&self, item: T) -> Result<(), SendError<T>> {
        self.send_until(item, Some(&Until::FOREVER))
    }

    /// Sends `item` only if there is room now (a drop policy drops instead).
    ///
    /// # Errors
    ///
    /// [`SendError::Full`] with the item when the queue is full under
    /// [`Overflow::Block`] (or the run has not started yet); [`SendError::Closed`] as
    /// for [`send`](Input::send).
    pub fn try_send(&self, item: T) -> Result<(), SendError<T>> {
        self.send_until(item, None)
    }

    /// As [`send`](Input::send), waiting at most `timeout` for room. A timeout too
    /// large to represent waits as long as `send`.
    ///
    /// # Errors
    ///
    /// [`SendError::Timeout`] with the item when no room came in time; as `send`.
    #[track_caller]
    pub fn send_timeout(&self, item: T, timeout: Duration) -> Result<(), SendError<T>> {
        self.send_until(item, Some(&Until::timeout(timeout)))
    }

    /// As [`send`](Input::send), waiting until `deadline` at most.
    ///
    /// # Errors
    ///
    /// [`SendError::Timeout`] with the item when no room came in time; as `send`.
    #[track_caller]
    pub fn send_deadline(&self, item: T, deadline: Instant) -> Result<(), SendError<T>> {
        self.send_until(item, Some(&Until::deadline(deadline)))
    }

    /// As [`send`](Input::send), waiting until `token` is cancelled at most.
    ///
    /// # Errors
    ///
    /// [`SendError::Cancelled`] with the item when the token stopped the wait; as
    /// `send`.
    #[track_caller]
    pub fn send_cancellable(&self, item: T, token: &CancelToken) -> Result<(), SendError<T>> {
        self.send_until(item, Some(&Until::cancellable(token)))
    }

    #[track_caller]
    fn send_until(&self, item: T, until: Option<&Until<'_>>) -> Result<(), SendError<T>> {
        self.shared
            .port
            .send(item, until)
            .map_err(SendError::from_refused)
    }

    /// Ends the input for every clone: later sends are refused with
    /// [`SendError::Closed`], and the run drains what is already inside.
    pub fn close(&self) {
        self.shared.port.inlet.close();
    }

    /// Whether the input has ended (closed, or the run has stopped).
    pub fn is_closed(&self) -> bool {
        self.shared.port.inlet.is_closed()
    }
}

/// Why [`Input`] did not take an item; the item travels back inside.
#[non_exhaustive]
pub enum SendError<T> {
    /// The first queue is full and the call does not wait ([`Input::try_send`]).
    Full(T),
    /// The input has ended, or the run has stopped.
    Closed(T),
    /// The timeout or deadline passed while waiting for room.
    Timeout(T),
    /// The caller's token was cancelled while waiting for room.
    Cancelled(T, CancelReason),
}

impl<T> SendError<T> {
    fn from_refused(refused: Refused<T>) -> Self {
        match refused {
            Refused::Full(item) => SendError::Full(item),
            Refused::Closed(item) => SendError::Closed(item),
            Refused::TimedOut(item) => SendError::Timeout(item),
            Refused::Cancelled(item, reason) => SendError::Cancelled(item, reason),
        }
    }

    /// The item that was not taken.
    pub fn into_inner(self) -> T {
        match self {
            SendError::Full(item)
            | SendError::Closed(item)
            | SendError::Timeout(item)
            | SendError::Cancelled(item, _) => item,
        }
    }

    /// Whether there was no room.
    pub fn is_full(&self) -> bool {
        matches!(self, SendError::Full(_))
    }

    /// Whether the input had ended.
    pub fn is_closed(&self) -> bool {
        matches!(self, SendError::Closed(_))
    }

    /// Whether the wait timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, SendError::Timeout(_))
    }

    /// Whether the caller's token stopped the wait.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, SendError::Cancelled(..))
    }
}

impl<T> fmt::Debug for SendError<T> {
    /// Shows the variant and the cancel reason, never the item (`T` need not be
    /// `Debug`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Full(_) => f.write_str("Full(..)"),
            SendError::Closed(_) => f.write_str("Closed(..)"),
            SendError::Timeout(_) => f.write_str("Timeout(..)"),
            SendError::Cancelled(_, reason) => write!(f, "Cancelled(.., {reason:?})"),
        }
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Full(_) => f.write_str("no room in the pipeline's input"),
            SendError::Closed(_) => f.write_str("the pipeline's input has ended"),
            SendError::Timeout(_) => f.write_str("timed out waiting for room in the input"),
            SendError::Cancelled(_, reason) => {
                write!(f, "stopped waiting for room in the input: {reason}")
            }
        }
    }
}

impl<T> std::error::Error for SendError<T> {}
