//! Bad-input rows for `rate`: `RateLimiter`, `KeyedRateLimiter` and the
//! `RedisRateLimiter` builder (whose rows need no server: they are decided before
//! any network call).

use std::thread;
use std::time::Duration;

use corral::leak::LeakCheck;
use corral::{
    cancel::CancelReason,
    clock::{Clock, ManualClock},
    rate::{CheckError, WaitError},
    CancelToken, ConfigError, KeyedRateLimiter, RateLimiter,
};

const SECOND: Duration = Duration::from_secs(1);

fn manual(per_second: u32, burst: u32) -> (ManualClock, RateLimiter<ManualClock>) {
    let clock = ManualClock::new();
    let limiter = RateLimiter::per_second(per_second)
        .burst(burst)
        .clock(clock.clone())
        .build()
        .unwrap();
    (clock, limiter)
}

fn keyed(per_second: u32, burst: u32) -> (ManualClock, KeyedRateLimiter<u32, ManualClock>) {
    let clock = ManualClock::new();
    let limiter = KeyedRateLimiter::per_second(per_second)
        .burst(burst)
        .clock(clock.clone())
        .build()
        .unwrap();
    (clock, limiter)
}

fn config_error<T: std::fmt::Debug>(built: Result<T, ConfigError>, field: &str, value: &str) {
    let err = built.unwrap_err();
    assert_eq!((err.field(), err.value()), (field, value), "{err}");
}

// --- RateLimiter builders --------------------------------------------------------

#[test]
fn rate_per_second_zero_is_a_config_error() {
    config_error(RateLimiter::per_second(0).build(), "per_second", "0");
}

#[test]
fn rate_per_second_u32_max_is_a_config_error() {
    // More than one cell per nanosecond.
    config_error(
        RateLimiter::per_second(u32::MAX).build(),
        "per_second",
        "4294967295",
    );
}

#[test]
fn rate_per_minute_zero_is_a_config_error() {
    config_error(RateLimiter::per_minute(0).build(), "per_minute", "0");
}

#[test]
fn rate_per_minute_u32_max_builds_at_13_ns_per_cell() {
    let limiter = RateLimiter::per_minute(u32::MAX).build().unwrap();
    assert_eq!(limiter.interval(), Duration::from_nanos(13));
    assert_eq!(limiter.burst(), u32::MAX);
}

#[test]
fn rate_with_period_zero_is_a_config_error() {
    config_error(
        RateLimiter::with_period(Duration::ZERO).build(),
        "with_period",
        "0ns",
    );
}

#[test]
fn rate_with_period_duration_max_is_a_config_error() {
    let err = RateLimiter::with_period(Duration::MAX).build().unwrap_err();
    assert_eq!(err.field(), "with_period");
}

#[test]
fn rate_with_period_one_nanosecond_builds() {
    let limiter = RateLimiter::with_period(Duration::from_nanos(1))
        .build()
        .unwrap();
    assert_eq!(limiter.interval(), Duration::from_nanos(1));
}

#[test]
fn rate_burst_zero_is_a_config_error() {
    config_error(RateLimiter::per_second(1).burst(0).build(), "burst", "0");
}

#[test]
fn rate_burst_u32_max_builds_when_its_span_fits() {
    // u32::MAX seconds is about 136 years, within the 2^62 ns span.
    let limiter = RateLimiter::per_second(1).burst(u32::MAX).build().unwrap();
    assert_eq!(limiter.burst(), u32::MAX);
    assert_eq!(limiter.available(), u32::MAX);
}

#[test]
fn rate_burst_u32_max_is_a_config_error_when_its_span_exceeds_146_years() {
    config_error(
        RateLimiter::per_minute(1).burst(u32::MAX).build(),
        "burst",
        "4294967295",
    );
}

// --- RateLimiter calls -------------------------------------------------------------

#[test]
fn rate_check_n_zero_passes_and_uses_nothing() {
    let (_clock, limiter) = manual(1, 1);
    assert_eq!(limiter.check_n(0), Ok(()));
    assert_eq!(limiter.available(), 1);
}

#[test]
fn rate_check_n_above_the_burst_is_insufficient_capacity() {
    let (_clock, limiter) = manual(1, 3);
    for cells in [4, u32::MAX] {
        match limiter.check_n(cells) {
            Err(CheckError::InsufficientCapacity(e)) => {
                assert_eq!((e.requested(), e.burst()), (cells, 3));
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(limiter.available(), 3);
}

#[test]
fn rate_wait_n_zero_returns_at_once() {
    let (_clock, limiter) = manual(1, 1);
    limiter.check().unwrap();
    assert_eq!(limiter.wait_n(0), Ok(()));
    let cancelled = CancelToken::new();
    cancelled.cancel();
    assert_eq!(limiter.wait_n_cancellable(0, &cancelled), Ok(()));
    assert_eq!(limiter.wait_n_timeout(0, Duration::ZERO), Ok(()));
}

#[test]
fn rate_wait_n_u32_max_is_insufficient_capacity_at_once() {
    let (_clock, limiter) = manual(1, 1);
    assert_eq!(limiter.wait_n(u32::MAX).unwrap_err().requested(), u32::MAX);
    assert!(matches!(
        limiter.wait_n_timeout(u32::MAX, Duration::MAX),
        Err(WaitError::InsufficientCapacity(_))
    ));
    assert!(matches!(
        limiter.wait_n_cancellable(u32::MAX, &CancelToken::new()),
        Err(WaitError::InsufficientCapacity(_))
    ));
}

#[test]
fn rate_wait_timeout_zero_passes_a_free_cell_and_times_out_otherwise() {
    let (_clock, limiter) = manual(1, 1);
    assert_eq!(limiter.wait_timeout(Duration::ZERO), Ok(()));
    assert!(matches!(
        limiter.wait_timeout(Duration::ZERO),
        Err(WaitError::Timeout(e)) if e.wait_time() == SECOND
    ));
}

#[test]
fn rate_wait_timeout_duration_max_waits_for_its_slot() {
    let _check = LeakCheck::new();
    let (clock, limiter) = manual(1, 1);
    assert_eq!(limiter.wait_timeout(Duration::MAX), Ok(()));
    thread::scope(|s| {
        let waiter = s.spawn(|| limiter.wait_timeout(Duration::MAX));
        while limiter.stats().slept == 0 {
            thread::yield_now();
        }
        clock.advance(SECOND);
        assert_eq!(waiter.join().unwrap(), Ok(()));
    });
}

#[test]
fn rate_wait_deadline_in_the_past_passes_a_free_cell_and_times_out_otherwise() {
    let (clock, limiter) = manual(1, 1);
    let past = clock.now();
    clock.advance(SECOND);
    assert_eq!(limiter.wait_deadline(past), Ok(()));
    assert!(matches!(
        limiter.wait_deadline(past),
        Err(WaitError::Timeout(_))
    ));
    assert_eq!(limiter.stats().slept, 0, "never slept");
}

#[test]
fn rate_wait_deadline_at_the_latest_instant_does_not_panic() {
    let (clock, limiter) = manual(1, 1);
    let far = clock
        .now()
        .checked_add(Duration::from_secs(1 << 40))
        .expect("an instant 35,000 years ahead");
    assert_eq!(limiter.wait_deadline(far), Ok(()));
    assert_eq!(limiter.wait_n_deadline(0, far), Ok(()));
}

#[test]
fn rate_token_with_a_past_deadline_is_cancelled_deadline_exceeded() {
    let (_clock, limiter) = manual(1, 1);
    limiter.check().unwrap();
    let token = CancelToken::with_timeout(Duration::ZERO);
    assert!(matches!(
        limiter.wait_cancellable(&token),
        Err(WaitError::Cancelled(CancelReason::DeadlineExceeded))
    ));
}

#[test]
fn rate_reserve_n_zero_is_an_empty_reservation_ready_now() {
    let (_clock, limiter) = manual(1, 1);
    let r = limiter.reserve_n(0).unwrap();
    assert!(r.is_ready());
    assert_eq!((r.cells(), r.delay()), (0, Duration::ZERO));
    assert!(!r.cancel(), "nothing was claimed");
    assert_eq!(limiter.available(), 1);
}

#[test]
fn rate_reserve_n_u32_max_is_insufficient_capacity() {
    let (_clock, limiter) = manual(1, 2);
    let err = limiter.reserve_n(u32::MAX).unwrap_err();
    assert_eq!((err.requested(), err.burst()), (u32::MAX, 2));
}

#[test]
fn rate_set_rate_zero_cells_is_a_config_error() {
    let (_clock, limiter) = manual(1, 1);
    config_error(limiter.set_rate(0, SECOND), "set_rate", "0");
    assert_eq!(limiter.interval(), SECOND, "unchanged");
}

#[test]
fn rate_set_rate_zero_period_is_a_config_error() {
    let (_clock, limiter) = manual(1, 1);
    config_error(limiter.set_rate(1, Duration::ZERO), "set_rate", "0ns");
}

#[test]
fn rate_set_rate_duration_max_is_a_config_error() {
    let (_clock, limiter) = manual(1, 1);
    let err = limiter.set_rate(1, Duration::MAX).unwrap_err();
    assert_eq!(err.field(), "set_rate", "{err}");
    assert_eq!(limiter.interval(), SECOND, "unchanged");
}

#[test]
fn rate_set_rate_u32_max_per_duration_max_is_exact_not_cut_short() {
    // u32::MAX cells per Duration::MAX is about 136 years per cell: valid, and
    // computed from the whole period (not from a period cut to u64 nanoseconds).
    let (_clock, limiter) = manual(1, 1);
    limiter.set_rate(u32::MAX, Duration::MAX).unwrap();
    let want = Duration::MAX.as_nanos() / u128::from(u32::MAX);
    assert_eq!(limiter.interval().as_nanos(), want);
}

#[test]
fn rate_set_rate_u32_max_per_nanosecond_is_a_config_error() {
    let (_clock, limiter) = manual(1, 1);
    config_error(
        limiter.set_rate(u32::MAX, Duration::from_nanos(1)),
        "set_rate",
        "4294967295",
    );
}

#[test]
fn rate_set_rate_whose_burst_span_exceeds_146_years_is_a_burst_config_error() {
    let (_clock, limiter) = manual(1, u32::MAX);
    config_error(
        limiter.set_rate(1, Duration::from_secs(60)),
        "burst",
        "4294967295",
    );
}

#[test]
fn rate_set_burst_zero_is_a_config_error() {
    let (_clock, limiter) = manual(1, 1);
    config_error(limiter.set_burst(0), "burst", "0");
    assert_eq!(limiter.burst(), 1);
}

#[test]
fn rate_set_burst_u32_max_follows_the_span_rule() {
    let (_clock, limiter) = manual(1, 1);
    assert_eq!(limiter.set_burst(u32::MAX), Ok(()));
    let (_clock, slow) = (
        ManualClock::new(),
        RateLimiter::per_minute(1).build().unwrap(),
    );
    config_error(slow.set_burst(u32::MAX), "burst", "4294967295");
}

#[test]
fn rate_clock_advanced_by_duration_max_keeps_limiting() {
    let (clock, limiter) = manual(1, 2);
    clock.advance(Duration::MAX);
    assert_eq!((0..10).filter(|_| limiter.check().is_ok()).count(), 2);
    let refused = limiter.check().unwrap_err();
    assert!(refused.is_never());
    assert_eq!(refused.wait_time(), Duration::MAX);
    assert!(limiter.reserve().is_never());
}

// --- KeyedRateLimiter --------------------------------------------------------------

#[test]
fn keyed_per_second_zero_is_a_config_error() {
    config_error(
        KeyedRateLimiter::<u32>::per_second(0).build(),
        "per_second",
        "0",
    );
}

#[test]
fn keyed_with_period_duration_max_is_a_config_error() {
    let err = KeyedRateLimiter::<u32>::with_period(Duration::MAX)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "with_period");
}

#[test]
fn keyed_burst_zero_is_a_config_error() {
    config_error(
        KeyedRateLimiter::<u32>::per_second(1).burst(0).build(),
        "burst",
        "0",
    );
}

#[test]
fn keyed_max_keys_zero_is_a_config_error() {
    config_error(
        KeyedRateLimiter::<u32>::per_second(1).max_keys(0).build(),
        "max_keys",
        "0",
    );
}

#[test]
fn keyed_max_keys_usize_max_is_a_config_error() {
    config_error(
        KeyedRateLimiter::<u32>::per_second(1)
            .max_keys(usize::MAX)
            .build(),
        "max_keys",
        &usize::MAX.to_string(),
    );
}

#[test]
fn keyed_max_keys_at_the_documented_maximum_builds() {
    let limiter = KeyedRateLimiter::<u32>::per_second(1)
        .max_keys(KeyedRateLimiter::<u32>::MAX_KEYS)
        .build()
        .unwrap();
    assert_eq!(limiter.stats().max_keys, 1 << 26);
}

#[test]
fn keyed_shards_zero_is_a_config_error() {
    config_error(
        KeyedRateLimiter::<u32>::per_second(1).shards(0).build(),
        "shards",
        "0",
    );
}

#[test]
fn keyed_shards_usize_max_is_capped() {
    let limiter = KeyedRateLimiter::<u32>::per_second(1)
        .shards(usize::MAX)
        .max_keys(4)
        .build()
        .unwrap();
    for key in 0..10 {
        assert!(limiter.check_key(&key).is_ok());
    }
    assert!(limiter.len() <= 4);
}

#[test]
fn keyed_check_key_n_zero_passes_and_uses_nothing() {
    let (_clock, limiter) = keyed(1, 1);
    assert_eq!(limiter.check_key_n(&7, 0), Ok(()));
    assert!(limiter.is_empty());
}

#[test]
fn keyed_check_key_n_above_the_burst_is_insufficient_capacity() {
    let (_clock, limiter) = keyed(1, 2);
    assert!(matches!(
        limiter.check_key_n(&7, u32::MAX),
        Err(CheckError::InsufficientCapacity(_))
    ));
    assert_eq!(limiter.wait_key_n(&7, u32::MAX).unwrap_err().burst(), 2);
    assert!(limiter.is_empty());
}

#[test]
fn keyed_wait_key_n_zero_returns_at_once() {
    let (_clock, limiter) = keyed(1, 1);
    assert_eq!(limiter.wait_key_n(&7, 0), Ok(()));
}

#[test]
fn keyed_wait_key_timeout_zero_and_duration_max_do_not_panic() {
    let (_clock, limiter) = keyed(1, 1);
    assert_eq!(limiter.wait_key_timeout(&7, Duration::MAX), Ok(()));
    assert!(matches!(
        limiter.wait_key_timeout(&7, Duration::ZERO),
        Err(WaitError::Timeout(_))
    ));
}

#[test]
fn keyed_wait_key_deadline_in_the_past_passes_a_free_cell_and_times_out_otherwise() {
    let (clock, limiter) = keyed(1, 1);
    let past = clock.now();
    clock.advance(SECOND);
    assert_eq!(limiter.wait_key_deadline(&7, past), Ok(()));
    assert!(matches!(
        limiter.wait_key_deadline(&7, past),
        Err(WaitError::Timeout(_))
    ));
}

#[test]
fn keyed_clock_advanced_by_duration_max_keeps_limiting() {
    let (clock, limiter) = keyed(1, 2);
    clock.advance(Duration::MAX);
    assert_eq!((0..10).filter(|_| limiter.check_key(&7).is_ok()).count(), 2);
    assert!(limiter.check_key(&7).unwrap_err().is_never());
}

// --- RedisRateLimiter builder and calls decided before the network ------------------ (feature `redis`)
#[cfg(feature = "redis")]
mod redis_builder {
    use super::*;
    use corral::{fleet::RedisRateError, RedisRateLimiter};

    fn redis() -> corral::fleet::RedisRateLimiterBuilder {
        RedisRateLimiter::builder("127.0.0.1:6379")
    }

    #[test]
    fn redis_rate_unset_is_a_config_error() {
        config_error(redis().build(), "rate", "\"unset\"");
    }

    #[test]
    fn redis_per_second_zero_is_a_config_error() {
        assert_eq!(redis().per_second(0).build().unwrap_err().field(), "rate");
    }

    #[test]
    fn redis_per_second_u32_max_is_a_config_error() {
        // Below one microsecond per cell.
        assert_eq!(
            redis().per_second(u32::MAX).build().unwrap_err().field(),
            "rate"
        );
    }

    #[test]
    fn redis_interval_zero_is_a_config_error() {
        assert_eq!(
            redis()
                .interval(Duration::ZERO)
                .build()
                .unwrap_err()
                .field(),
            "rate"
        );
    }

    #[test]
    fn redis_interval_duration_max_is_a_config_error() {
        assert_eq!(
            redis().interval(Duration::MAX).build().unwrap_err().field(),
            "rate"
        );
    }

    #[test]
    fn redis_burst_zero_is_a_config_error() {
        config_error(redis().per_second(1).burst(0).build(), "burst", "0");
    }

    #[test]
    fn redis_burst_u32_max_is_a_config_error_above_100_years() {
        config_error(
            redis().per_second(1).burst(u32::MAX).build(),
            "burst",
            "4294967295",
        );
    }

    #[test]
    fn redis_io_timeout_zero_is_a_config_error() {
        config_error(
            redis().per_second(1).io_timeout(Duration::ZERO).build(),
            "io_timeout",
            "0ns",
        );
    }

    #[test]
    fn redis_io_timeout_duration_max_builds() {
        // Accepted: every network operation is then bounded only by the OS.
        assert!(redis()
            .per_second(1)
            .io_timeout(Duration::MAX)
            .build()
            .is_ok());
    }

    #[test]
    fn redis_empty_or_nul_addr_is_a_config_error() {
        for addr in ["", "\0", "127.0.0.1\0:6379", "127.0.0.1:notaport"] {
            let err = RedisRateLimiter::builder(addr)
                .per_second(1)
                .build()
                .unwrap_err();
            assert_eq!(err.field(), "url", "{addr:?}");
        }
    }

    #[test]
    fn redis_empty_or_nul_key_prefix_builds() {
        // Redis keys are binary-safe: any prefix is a valid key prefix.
        assert!(redis().per_second(1).key_prefix("").build().is_ok());
        assert!(redis().per_second(1).key_prefix("a\0b").build().is_ok());
    }

    #[test]
    fn redis_check_n_zero_passes_without_the_network() {
        let limiter = redis().per_second(1).build().unwrap();
        assert!(limiter.check_n("k", 0).is_ok());
    }

    #[test]
    fn redis_check_n_above_the_burst_is_insufficient_capacity_without_the_network() {
        let limiter = redis().per_second(1).burst(2).build().unwrap();
        assert!(matches!(
            limiter.check_n("k", u32::MAX),
            Err(RedisRateError::InsufficientCapacity {
                requested: u32::MAX,
                burst: 2
            })
        ));
    }

    #[test]
    fn redis_wait_timeout_zero_and_past_deadline_time_out_without_the_network() {
        let limiter = redis().per_second(1).build().unwrap();
        assert!(matches!(
            limiter.wait_timeout("k", Duration::ZERO),
            Err(RedisRateError::Timeout)
        ));
        let past = std::time::Instant::now()
            .checked_sub(SECOND)
            .unwrap_or_else(std::time::Instant::now);
        assert!(matches!(
            limiter.wait_deadline("k", past),
            Err(RedisRateError::Timeout)
        ));
    }

    #[test]
    fn redis_wait_cancellable_with_a_cancelled_token_is_cancelled_without_the_network() {
        let limiter = redis().per_second(1).build().unwrap();
        let token = CancelToken::new();
        token.cancel();
        assert!(matches!(
            limiter.wait_cancellable("k", &token),
            Err(RedisRateError::Cancelled(CancelReason::Cancelled))
        ));
    }
}
