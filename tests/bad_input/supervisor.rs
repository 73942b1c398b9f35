//! Bad-input rows for `supervisor`.
