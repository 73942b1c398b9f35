//! The limiter's timeline: the crate-wide one in `src/timeline.rs` (nanoseconds since a
//! base, read from the limiter's [`Clock`](crate::Clock), with a TSC fast path for
//! [`SystemClock`](crate::SystemClock) and live conversions to std instants).

pub(crate) use crate::timeline::{Anchor, Timeline};
