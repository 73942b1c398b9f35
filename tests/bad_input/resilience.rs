//! Bad-input rows for `resilience`.
