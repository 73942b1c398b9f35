//! Bad-input rows for `semaphore`.
