//! Bad-input rows for `rate`.
