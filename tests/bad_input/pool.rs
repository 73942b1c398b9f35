//! Bad-input rows for `pool`.
