//! Bad-input rows for `pipeline`.

use std::time::{Duration, Instant};

use corral::leak::LeakCheck;
use corral::{
    cancel::CancelReason,
    pipeline::{PipelineError, PipelineReport},
    CancelToken, Overflow, Pipeline,
};

/// The run's outcome must be a `ConfigError` naming `field` and `value`.
fn config_error(result: Result<PipelineReport, PipelineError>, field: &str, value: &str) {
    match result {
        Err(PipelineError::Config(e)) => assert_eq!((e.field(), e.value()), (field, value)),
        other => panic!("expected ConfigError({field}, {value}), got {other:?}"),
    }
}

fn balanced(report: &PipelineReport) {
    for s in &report.stages {
        assert!(s.balanced(), "{s:?}");
    }
}

const MAX: &str = "18446744073709551615";

#[test]
fn pipeline_stage_workers_zero_is_a_config_error() {
    let r = Pipeline::from_iter(0..3)
        .stage("s", 0, |x: i32| x)
        .run(|_| {});
    config_error(r, "workers", "0");
}

#[test]
fn pipeline_stage_workers_usize_max_is_a_config_error() {
    let r = Pipeline::from_iter(0..3)
        .stage("s", usize::MAX, |x: i32| x)
        .ordered()
        .run(|_| {});
    config_error(r, "workers", MAX);
}

#[test]
fn pipeline_stage_workers_4097_is_a_config_error() {
    let r = Pipeline::from_iter(0..3)
        .stage("s", 4097, |x: i32| x)
        .run(|_| {});
    config_error(r, "workers", "4097");
}

#[test]
fn pipeline_stage_workers_over_4096_in_all_stages_is_a_config_error() {
    let r = Pipeline::from_iter(0..3)
        .stage("a", 4096, |x: i32| x)
        .stage("b", 1, |x| x)
        .run(|_| {});
    config_error(r, "workers", "4097");
}

#[test]
fn pipeline_stage_workers_4096_runs_one_item() {
    let _check = LeakCheck::new();
    let (out, report) = Pipeline::from_iter([1u8])
        .stage("wide", 4096, |x| x + 1)
        .collect()
        .unwrap();
    assert_eq!(out, vec![2]);
    assert_eq!(report.stage("wide").unwrap().workers, 4096);
}

#[test]
fn pipeline_capacity_zero_is_a_config_error() {
    config_error(
        Pipeline::from_iter(0..3).capacity(0).run(|_| {}),
        "capacity",
        "0",
    );
}

#[test]
fn pipeline_capacity_usize_max_is_a_config_error() {
    let r = Pipeline::from_iter(0..3)
        .stage("s", 1, |x: i32| x)
        .capacity(usize::MAX)
        .run(|_| {});
    config_error(r, "capacity", MAX);
}

#[test]
fn pipeline_capacity_above_2_pow_24_is_a_config_error() {
    let r = Pipeline::from_iter(0..3)
        .capacity((1 << 24) + 1)
        .run(|_| {});
    config_error(r, "capacity", "16777217");
}

#[test]
fn pipeline_capacity_and_batch_at_2_pow_24_run() {
    // One queue of one batch: the maximum allocates one packet slot per queue.
    let _check = LeakCheck::new();
    let (out, _) = Pipeline::from_iter(0..3u8)
        .stage("s", 1, |x| x)
        .capacity(1 << 24)
        .batch(1 << 24)
        .collect()
        .unwrap();
    assert_eq!(out, vec![0, 1, 2]);
}

#[test]
fn pipeline_buffer_zero_is_a_config_error() {
    let r = Pipeline::from_iter(0..3)
        .stage("s", 1, |x: i32| x)
        .buffer(0)
        .run(|_| {});
    config_error(r, "buffer", "0");
}

#[test]
fn pipeline_buffer_usize_max_is_a_config_error() {
    let r = Pipeline::from_iter(0..3)
        .stage("s", 1, |x: i32| x)
        .buffer(usize::MAX)
        .run(|_| {});
    config_error(r, "buffer", MAX);
}

#[test]
fn pipeline_buffer_below_the_batch_is_a_config_error() {
    let r = Pipeline::from_iter(0..3)
        .stage("s", 1, |x: i32| x)
        .buffer(2)
        .batch(4)
        .run(|_| {});
    config_error(r, "buffer", "2");
}

#[test]
fn pipeline_batch_zero_is_a_config_error() {
    config_error(Pipeline::from_iter(0..3).batch(0).run(|_| {}), "batch", "0");
}

#[test]
fn pipeline_batch_usize_max_is_a_config_error() {
    let r = Pipeline::from_iter(0..3)
        .stage("s", 1, |x: i32| x)
        .batch(usize::MAX)
        .run(|_| {});
    config_error(r, "batch", MAX);
}

#[test]
fn pipeline_ordered_window_zero_is_a_config_error() {
    let r = Pipeline::from_iter(0..3).ordered_window(0).run(|_| {});
    config_error(r, "ordered_window", "0");
}

#[test]
fn pipeline_ordered_window_usize_max_is_a_config_error() {
    let r = Pipeline::from_iter(0..3)
        .stage("s", 2, |x: i32| x)
        .ordered_window(usize::MAX)
        .run(|_| {});
    config_error(r, "ordered_window", MAX);
}

#[test]
fn pipeline_ordered_window_2_pow_24_runs() {
    let _check = LeakCheck::new();
    let (out, _) = Pipeline::from_iter(0..100u32)
        .stage("s", 3, |x| x)
        .ordered_window(1 << 24)
        .collect()
        .unwrap();
    assert_eq!(out, (0..100).collect::<Vec<_>>());
}

#[test]
fn pipeline_stage_name_empty_is_a_config_error() {
    let r = Pipeline::from_iter(0..3)
        .stage("", 1, |x: i32| x)
        .run(|_| {});
    config_error(r, "name", "\"\"");
}

#[test]
fn pipeline_stage_name_with_nul_is_a_config_error() {
    let r = Pipeline::from_iter(0..3)
        .stage("a\0b", 1, |x: i32| x)
        .run(|_| {});
    config_error(r, "name", "\"a\\0b\"");
}

#[test]
fn pipeline_stage_name_source_or_sink_is_a_config_error() {
    for name in ["source", "sink"] {
        let r = Pipeline::from_iter(0..3)
            .stage(name, 1, |x: i32| x)
            .run(|_| {});
        config_error(r, "name", &format!("{name:?}"));
    }
}

#[test]
fn pipeline_stage_name_repeated_is_a_config_error() {
    let r = Pipeline::from_iter(0..3)
        .stage("a", 1, |x: i32| x)
        .stage("a", 1, |x| x)
        .run(|_| {});
    config_error(r, "name", "\"a\"");
}

#[test]
fn pipeline_stage_name_very_long_runs() {
    let _check = LeakCheck::new();
    let name = "n".repeat(1 << 16);
    let report = Pipeline::from_iter(0..3)
        .stage(name.as_str(), 1, |x: i32| x)
        .run(|_| {})
        .unwrap();
    assert_eq!(report.stage(&name).unwrap().items_out, 3);
}

#[test]
fn pipeline_overflow_reject_and_caller_runs_are_config_errors() {
    for (policy, value) in [
        (Overflow::Reject, "Reject"),
        (Overflow::CallerRuns, "CallerRuns"),
    ] {
        let r = Pipeline::from_iter(0..3).overflow(policy).run(|_| {});
        config_error(r, "overflow", value);
    }
}

#[test]
fn pipeline_zero_items_is_ok_with_an_empty_report() {
    let _check = LeakCheck::new();
    for policy in [Overflow::Block, Overflow::DropNewest, Overflow::DropOldest] {
        let (out, report) = Pipeline::from_iter(std::iter::empty::<u8>())
            .stage("s", 3, |x| x)
            .overflow(policy)
            .ordered()
            .collect()
            .unwrap();
        assert!(out.is_empty());
        assert!(report.stages.iter().all(|s| s.items_in == 0));
    }
}

#[test]
fn pipeline_run_timeout_zero_is_cancelled_deadline_exceeded() {
    let _check = LeakCheck::new();
    let err = Pipeline::from_iter(0u64..)
        .stage("s", 2, |x| x)
        .run_timeout(|_| {}, Duration::ZERO)
        .unwrap_err();
    let PipelineError::Cancelled { reason, report } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*reason, CancelReason::DeadlineExceeded);
    assert_eq!(report.stages[0].items_in, 0, "the source is not pulled");
    balanced(report);
}

#[test]
fn pipeline_run_timeout_duration_max_never_expires() {
    let _check = LeakCheck::new();
    let report = Pipeline::from_iter(0..100u32)
        .stage("s", 2, |x| x)
        .run_timeout(|_| {}, Duration::MAX)
        .unwrap();
    assert_eq!(report.delivered(), 100);
}

#[test]
fn pipeline_collect_timeout_duration_max_never_expires() {
    let _check = LeakCheck::new();
    let (out, _) = Pipeline::from_iter(0..100u32)
        .collect_timeout(Duration::MAX)
        .unwrap();
    assert_eq!(out.len(), 100);
}

#[test]
fn pipeline_run_deadline_in_the_past_is_cancelled_deadline_exceeded() {
    let _check = LeakCheck::new();
    let past = Instant::now()
        .checked_sub(Duration::from_secs(1))
        .unwrap_or_else(Instant::now);
    for overflow in [Overflow::Block, Overflow::DropNewest] {
        let err = Pipeline::from_iter(0u64..)
            .stage("s", 2, |x| x)
            .overflow(overflow)
            .run_deadline(|_| {}, past)
            .unwrap_err();
        let PipelineError::Cancelled { reason, report } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(*reason, CancelReason::DeadlineExceeded);
        assert_eq!(report.stages[0].items_in, 0, "the source is not pulled");
        balanced(report);
    }
}

#[test]
fn pipeline_collect_deadline_in_the_past_is_cancelled() {
    let _check = LeakCheck::new();
    let err = Pipeline::from_iter(0u64..)
        .collect_deadline(Instant::now())
        .unwrap_err();
    assert!(err.is_cancelled(), "{err:?}");
}

#[test]
fn pipeline_run_cancellable_with_a_cancelled_token_is_cancelled() {
    let _check = LeakCheck::new();
    let token = CancelToken::new();
    token.cancel();
    let err = Pipeline::from_iter(0u64..)
        .stage("s", 2, |x| x)
        .run_cancellable(|_| {}, &token)
        .unwrap_err();
    let PipelineError::Cancelled { reason, report } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*reason, CancelReason::Cancelled);
    assert_eq!(report.delivered(), 0);
    balanced(report);
}

#[test]
fn pipeline_report_with_maximal_counters_saturates() {
    // A report's fields are public: its methods and `Display` take any values.
    let _check = LeakCheck::new();
    let mut report = Pipeline::from_iter(0..3u8)
        .stage("s", 1, |x| x)
        .run(|_| {})
        .unwrap();
    for s in &mut report.stages {
        s.items_in = u64::MAX;
        s.items_out = u64::MAX;
        s.dropped = u64::MAX;
        s.failed = u64::MAX;
        s.not_processed = u64::MAX;
        s.busy = Duration::MAX;
        s.blocked_send = Duration::MAX;
        s.idle_recv = Duration::MAX;
        assert!(!s.balanced());
        assert!((0.0..=1.0).contains(&s.utilization()));
    }
    report.elapsed = Duration::MAX;
    assert_eq!(report.dropped(), u64::MAX);
    assert_eq!(report.not_processed(), u64::MAX);
    assert_eq!(report.delivered(), u64::MAX);
    assert!(report.bottleneck().is_some());
    assert!(report.to_string().contains("bottleneck"));
}
