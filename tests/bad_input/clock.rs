//! Bad-input rows for `clock`.

use corral::clock::{Clock, ManualClock};
use std::time::Duration;

#[test]
fn manual_clock_advance_duration_max_saturates() {
    let clock = ManualClock::new();
    let start = clock.now();
    clock.advance(Duration::MAX);
    clock.advance(Duration::MAX);
    assert!(clock.now() > start);
    assert_eq!(clock.elapsed(), Duration::from_nanos(u64::MAX));
}

#[test]
fn manual_clock_advance_zero_does_not_move() {
    let clock = ManualClock::new();
    let start = clock.now();
    clock.advance(Duration::ZERO);
    assert_eq!(clock.now(), start);
}
