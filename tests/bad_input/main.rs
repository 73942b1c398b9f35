//! The bad-input table (`corral::guarantees`), one test per row: every builder field
//! and every count, duration and instant parameter tried with zero, maximum, past and
//! malformed values. Each row ends in a named `ConfigError`, a documented error
//! variant, or documented behaviour; never a panic from std, a hang or a wrapped value.
//!
//! One file per primitive; a test's name is the row it checks.

mod breaker;
mod cancel;
mod clock;
mod group;
mod pipeline;
mod pool;
mod rate;
mod resilience;
mod scope;
mod semaphore;
mod supervisor;
