//! Bad-input rows for `cancel`.
