//! A pipeline in the thread dump and under its watchdog, through the public API: its
//! name and roles, the stage worker blocked sending to a full queue, the spawn site in
//! this file, a pushed input blocked on a full first queue, and the watchdog's
//! once-only report past its threshold (on the pipeline's ManualClock).

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use corral::clock::ManualClock;
use corral::leak::{self, LeakCheck};
use corral::observe::{Activity, Blocked, Role, ThreadInfo};
use corral::Pipeline;

mod common;

use common::dump::wait_for;

#[test]
fn a_stage_worker_blocked_on_a_full_queue_shows_the_queue_and_the_spawn_line() {
    let _check = LeakCheck::new();
    let (release, gate) = crossbeam_channel::bounded::<()>(0);
    let pipeline = Pipeline::from_iter(0..100u32)
        .name("obs-full")
        .stage("parse", 1, |x| x)
        .buffer(1) // the queue in front of "slow" holds one item
        .stage("slow", 1, move |x| {
            let _ = gate.recv(); // held until the test lets go
            x
        });
    let line = line!() + 1;
    let running = pipeline.spawn(|_| {}).unwrap();
    // Dropped before `running` if an assertion fails, so that the run can end.
    let release = release;
    let t = wait_for(|t| t.name == "corral-obs-full-parse-0" && t.blocked.is_some());
    assert_eq!(
        t.blocked.as_ref().map(|b| &b.0),
        Some(&Blocked::Sending {
            queue: "slow".into()
        })
    );
    assert_eq!(
        (t.owner, t.owner_name.as_deref()),
        ("Pipeline", Some("obs-full"))
    );
    assert_eq!(t.role, Role::StageWorker);
    assert_eq!(t.spawned_at.file(), file!());
    assert_eq!(t.spawned_at.line(), line);
    // The stage behind it is running an item, from the same line.
    let slow = wait_for(|t| t.name == "corral-obs-full-slow-0");
    assert!(
        matches!(slow.activity, Activity::Running { site: Some(site) } if site.line() == line),
        "{slow:?}"
    );
    let text = leak::dump().to_string();
    assert!(text.contains("Pipeline \"obs-full\""), "{text}");
    assert!(text.contains("blocked sending to queue \"slow\""), "{text}");
    assert_eq!(running.name(), Some("obs-full"));
    assert!(format!("{running:?}").contains("obs-full"));
    drop(release); // every later recv fails at once: the run goes through
    let report = running.join().unwrap();
    assert_eq!(report.delivered(), 100);
}

#[test]
fn the_roles_of_a_spawned_run_and_idle_workers_are_shown() {
    let _check = LeakCheck::new();
    let (input, pipeline) = Pipeline::<u32>::with_input();
    let running = pipeline.stage("a", 2, |x| x + 1).spawn(|_| {}).unwrap();
    // Nothing was pushed: the workers and the run's sink park for input, idle.
    for name in ["corral-pipe-a-0", "corral-pipe-a-1", "corral-pipe-run"] {
        let t = wait_for(|t| t.name == name && t.activity == Activity::Idle);
        assert_eq!(t.owner, "Pipeline");
        assert_eq!(t.owner_name, None);
        let role = if name.ends_with("run") {
            Role::Sink
        } else {
            Role::StageWorker
        };
        assert_eq!(t.role, role);
    }
    drop(input);
    running.join().unwrap();
}

#[test]
fn a_drop_policy_source_thread_is_the_pipeline_source() {
    let _check = LeakCheck::new();
    let (release, gate) = crossbeam_channel::bounded::<()>(0);
    let running = Pipeline::from_iter(0u64..)
        .name("obs-src")
        .buffer_overflow(corral::Overflow::DropNewest)
        .stage("hold", 1, move |x| {
            let _ = gate.recv();
            x
        })
        .spawn(|_| {})
        .unwrap();
    // Dropped before `running` if an assertion fails, so that the run can end.
    let release = release;
    let t = wait_for(|t| t.name == "corral-obs-src-source");
    assert_eq!(t.role, Role::PipelineSource);
    running.stop();
    drop(release);
    let report = running.join().unwrap();
    assert!(report.stages.iter().all(|s| s.balanced()));
}

#[test]
fn a_pushing_thread_blocked_on_the_full_first_queue_shows_at_its_send_line() {
    let _check = LeakCheck::new();
    let (release, gate) = crossbeam_channel::bounded::<()>(0);
    let (input, pipeline) = Pipeline::<u32>::with_input();
    let running = pipeline
        .buffer(1)
        .stage("hold", 1, move |x| {
            let _ = gate.recv();
            x
        })
        .spawn(|_| {})
        .unwrap();
    // Dropped before `running` if an assertion fails, so that the run can end.
    let release = release;
    let line = line!() + 5;
    thread::scope(|s| {
        let input = &input;
        let pusher = s.spawn(move || {
            for i in 0..3 {
                input.send(i).unwrap();
            }
        });
        let t = wait_for(|t| {
            t.role == Role::Waiter && t.spawned_at.line() == line && t.blocked.is_some()
        });
        assert_eq!(t.spawned_at.file(), file!());
        assert_eq!(
            t.blocked.map(|b| b.0),
            Some(Blocked::Sending {
                queue: "hold".into()
            })
        );
        drop(release);
        pusher.join().unwrap();
    });
    drop(input);
    assert_eq!(running.join().unwrap().delivered(), 3);
}

#[test]
fn the_watchdog_reports_a_stuck_item_once_and_only_past_its_threshold() {
    let _check = LeakCheck::new();
    let clock = ManualClock::new();
    let (release, gate) = crossbeam_channel::bounded::<()>(0);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let pipeline = Pipeline::from_iter([1u32, 2])
        .name("obs-watch")
        .stage("stuck", 1, move |x| {
            if x == 1 {
                let _ = gate.recv();
            }
            x
        })
        .clock(clock.clone())
        .watchdog(Duration::from_secs(10), {
            let seen = Arc::clone(&seen);
            move |stuck| seen.lock().unwrap().push(stuck.clone())
        });
    let line = line!() + 1;
    let running = pipeline.spawn(|_| {}).unwrap();
    // Dropped before `running` if an assertion fails, so that the run can end.
    let release = release;
    wait_for(|t| {
        t.name == "corral-obs-watch-stuck-0" && matches!(t.activity, Activity::Running { .. })
    });
    // The run's own thread (the sink) is idle once it waits for the first item.
    wait_for(|t| t.name == "corral-obs-watch-run" && t.activity == Activity::Idle);
    assert!(running.check_stuck().is_empty(), "first seen now");
    clock.advance(Duration::from_secs(9));
    assert!(running.check_stuck().is_empty(), "below the threshold");
    clock.advance(Duration::from_secs(1));
    let stuck = running.check_stuck();
    assert_eq!(stuck.len(), 1, "{stuck:?}");
    assert_eq!(stuck[0].thread, "corral-obs-watch-stuck-0");
    assert_eq!(stuck[0].owner_name.as_deref(), Some("obs-watch"));
    assert_eq!(
        stuck[0].site.map(|s| (s.file(), s.line())),
        Some((file!(), line))
    );
    assert!(stuck[0].running_for >= Duration::from_secs(10));
    clock.advance(Duration::from_secs(60));
    assert!(running.check_stuck().is_empty(), "reported once");
    let marked = wait_for(|t| t.name == "corral-obs-watch-stuck-0");
    assert!(marked.stuck, "{marked:?}");
    assert!(leak::dump().to_string().contains("[STUCK]"));
    assert_eq!(seen.lock().unwrap().len(), 1, "the callback ran once");
    drop(release);
    let report = running.join().unwrap();
    assert_eq!(report.delivered(), 2);
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[test]
fn a_batch_run_is_owned_at_its_terminal_call() {
    let _check = LeakCheck::new();
    let (tx, rx) = crossbeam_channel::bounded::<ThreadInfo>(1);
    let pipeline = Pipeline::from_iter(0..1u32)
        .name("obs-batch")
        .stage("look", 1, move |x| {
            let me = thread::current().name().unwrap().to_owned();
            let t = wait_for(|t| t.name == me);
            let _ = tx.send(t);
            x
        });
    let line = line!() + 1;
    let (out, _) = pipeline.collect().unwrap();
    assert_eq!(out, [0]);
    let t = rx.recv().unwrap();
    assert_eq!(t.name, "corral-obs-batch-look-0");
    assert_eq!((t.spawned_at.file(), t.spawned_at.line()), (file!(), line));
}

#[test]
fn a_name_with_a_nul_byte_is_a_config_error() {
    let err = Pipeline::from_iter(0..1u8)
        .name("a\0b")
        .run(|_| {})
        .unwrap_err();
    assert!(matches!(err, corral::pipeline::PipelineError::Config(ref e) if e.field() == "name"));
    let dbg = format!("{:?}", Pipeline::from_iter(0..1u8).name("shown"));
    assert!(dbg.contains("shown"), "{dbg}");
}

/// Events (feature `tracing`) and metrics (feature `metrics`) of a pipeline, through
/// a process-wide collecting subscriber and recorder: a pipeline's events and metric
/// updates come from its own threads. Each test names its pipeline apart.
#[cfg(all(feature = "tracing", feature = "metrics"))]
mod events {
    use super::common::telemetry::{Events, Recorder};

    use corral::leak::LeakCheck;
    use corral::observe::Activity;
    use corral::{Overflow, Pipeline};

    use super::wait_for;

    /// The process's collectors: pipeline threads emit and record, so both are the
    /// global ones, and each test reads its own pipeline's name.
    struct Collected {
        events: &'static Events,
        recorder: &'static Recorder,
    }

    fn collected() -> Collected {
        Collected {
            events: Events::global(),
            recorder: Recorder::global(),
        }
    }

    impl Collected {
        fn events(&self, needle: &str, name: &str) -> Vec<String> {
            let name = format!("name={name} ");
            let found = self.events.matching(&[needle]);
            found
                .into_iter()
                .filter(|e| format!("{e} ").contains(&name))
                .collect()
        }
        fn counter(&self, metric: &str, name: &str, stage: &str) -> u64 {
            let id = format!("{metric}{{kind=Pipeline,name={name},stage={stage}}}");
            self.recorder.counter(&id)
        }
        fn busy_samples(&self, name: &str, stage: &str) -> Vec<f64> {
            self.recorder.samples(&format!(
                "corral_pipeline_busy_seconds{{kind=Pipeline,name={name},stage={stage}}}"
            ))
        }
    }

    #[test]
    fn a_stage_failure_is_a_warning_with_its_error_and_the_run_end_is_reported() {
        let _check = LeakCheck::new();
        let c = collected();
        let err = Pipeline::from_iter(0..10u32)
            .name("ev-fail")
            .try_stage(
                "parse",
                1,
                |x| if x == 3 { Err("bad three") } else { Ok(x) },
            )
            .run(|_| {})
            .unwrap_err();
        assert_eq!(err.stage(), Some("parse"));
        let failed = c.events("pipeline stage failed", "ev-fail");
        assert_eq!(failed.len(), 1, "{failed:?}");
        for field in [
            "WARN corral",
            "kind=Pipeline",
            "stage=parse",
            "error=bad three",
        ] {
            assert!(failed[0].contains(field), "{} lacks {field}", failed[0]);
        }
        let ended = c.events("pipeline run ended", "ev-fail");
        assert_eq!(ended.len(), 1, "{ended:?}");
        assert!(ended[0].starts_with("INFO corral"), "{}", ended[0]);
        assert!(ended[0].contains("outcome=failed"), "{}", ended[0]);
        assert_eq!(
            c.counter("corral_pipeline_items_failed_total", "ev-fail", "parse"),
            1
        );
    }

    #[test]
    fn a_panic_is_reported_with_its_message() {
        let _check = LeakCheck::new();
        let c = collected();
        let err = Pipeline::from_iter(0..3u32)
            .name("ev-panic")
            .stage("boom", 1, |x| if x == 1 { panic!("kaboom") } else { x })
            .run(|_| {})
            .unwrap_err();
        assert_eq!(err.stage(), Some("boom"));
        let failed = c.events("pipeline stage failed", "ev-panic");
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert!(
            failed[0].contains("error=panicked: kaboom"),
            "{}",
            failed[0]
        );
    }

    #[test]
    fn per_stage_counts_and_busy_time_are_metrics() {
        let _check = LeakCheck::new();
        let c = collected();
        let report = Pipeline::from_iter(0..100u32)
            .name("ev-count")
            .stage("double", 2, |x| x * 2)
            .run(|_| {})
            .unwrap();
        assert_eq!(report.delivered(), 100);
        let count = |metric, stage| c.counter(metric, "ev-count", stage);
        assert_eq!(count("corral_pipeline_items_in_total", "double"), 100);
        assert_eq!(count("corral_pipeline_items_out_total", "double"), 100);
        assert_eq!(count("corral_pipeline_items_dropped_total", "double"), 0);
        assert_eq!(count("corral_pipeline_items_in_total", "sink"), 100);
        assert_eq!(count("corral_pipeline_items_out_total", "sink"), 100);
        let busy = c.busy_samples("ev-count", "double");
        assert!(
            !busy.is_empty() && busy.iter().all(|s| *s >= 0.0),
            "{busy:?}"
        );
        let ended = c.events("pipeline run ended", "ev-count");
        assert_eq!(ended.len(), 1, "{ended:?}");
        assert!(ended[0].contains("delivered=100"), "{}", ended[0]);
        assert!(ended[0].contains("outcome=completed"), "{}", ended[0]);
    }

    #[test]
    fn a_drop_at_a_full_queue_is_a_debug_event_and_counted() {
        let _check = LeakCheck::new();
        let c = collected();
        let (release, gate) = crossbeam_channel::bounded::<()>(0);
        let (input, pipeline) = Pipeline::<u32>::with_input();
        let running = pipeline
            .name("ev-drop")
            .buffer(1)
            .buffer_overflow(Overflow::DropNewest)
            .stage("hold", 1, move |x| {
                let _ = gate.recv();
                x
            })
            .spawn(|_| {})
            .unwrap();
        let release = release;
        // Parked for input first; running once it has taken item 0 off its queue.
        wait_for(|t| t.name == "corral-ev-drop-hold-0" && t.activity == Activity::Idle);
        input.send(0).unwrap();
        wait_for(|t| {
            t.name == "corral-ev-drop-hold-0" && matches!(t.activity, Activity::Running { .. })
        });
        input.send(1).unwrap(); // queued
        input.send(2).unwrap(); // dropped: the one-item queue is full
        drop(release);
        drop(input);
        let report = running.join().unwrap();
        let hold = report.stage("hold").unwrap();
        assert_eq!((hold.items_in, hold.dropped), (3, 1), "{hold:?}");
        let dropped = c.events("pipeline queue dropped items", "ev-drop");
        assert_eq!(dropped.len(), 1, "{dropped:?}");
        assert!(dropped[0].starts_with("DEBUG corral"), "{}", dropped[0]);
        assert!(dropped[0].contains("stage=hold"), "{}", dropped[0]);
        assert_eq!(
            c.counter("corral_pipeline_items_dropped_total", "ev-drop", "hold"),
            1
        );
        assert_eq!(
            c.counter("corral_pipeline_items_in_total", "ev-drop", "hold"),
            3
        );
        assert_eq!(
            c.counter("corral_pipeline_items_out_total", "ev-drop", "hold"),
            2
        );
    }
}
