//! What a full bounded queue does with a new item: one policy for the worker pool's
//! queue and for every pipeline stage.

/// What a full bounded queue does with a new item.
///
/// Every losing variant hands the losing item back to the caller or to an `on_drop`
/// callback, and counts it in the owner's stats: nothing vanishes.
///
/// # Example
///
/// ```
/// use corral::Overflow;
///
/// let policy = Overflow::default();
/// assert_eq!(policy, Overflow::Block);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Overflow {
    /// The producer waits for room: backpressure (the default).
    #[default]
    Block,
    /// The new item is refused and handed back: `Err(Full(item))`.
    Reject,
    /// The oldest queued item is evicted to make room and handed to the caller or to
    /// the `on_drop` callback.
    DropOldest,
    /// The new item is not queued; it goes to the `on_drop` callback.
    DropNewest,
    /// Worker pool only: the submitting thread runs the task itself.
    CallerRuns,
}
