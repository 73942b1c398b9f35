//! Bad-input rows for `pipeline`.
