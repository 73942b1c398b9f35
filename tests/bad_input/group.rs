//! Bad-input rows for `group`.
