//! Bad-input rows for `breaker`.
