//! Bad-input rows for `scope`.
