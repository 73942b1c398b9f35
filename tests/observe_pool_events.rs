//! The worker pool's events (feature `tracing`) and metrics (feature `metrics`),
//! recorded with a collecting subscriber and a collecting recorder. A task panics on
//! a worker thread, so the subscriber is the process's global one (this file's only
//! test installs it).
#![cfg(all(feature = "tracing", feature = "metrics"))]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use corral::leak::LeakCheck;
use corral::{Overflow, WorkerPool};

/// A subscriber that keeps every event as "LEVEL target field=value ...".
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<String>>>);

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={:?}", field.name(), value);
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        let _ = write!(self.0, " {}={}", field.name(), value);
    }
}

impl tracing::Subscriber for Events {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields(format!(
            "{} {}",
            event.metadata().level(),
            event.metadata().target()
        ));
        event.record(&mut fields);
        self.0.lock().unwrap().push(fields.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

impl Events {
    fn matching(&self, needle: &str) -> Vec<String> {
        let all = self.0.lock().unwrap();
        all.iter().filter(|e| e.contains(needle)).cloned().collect()
    }
}

/// A recorder that keeps every counter's and gauge's latest value, and every
/// histogram's samples, under "name{labels}".
#[derive(Clone, Default)]
struct Recorder {
    values: Arc<Mutex<BTreeMap<String, Arc<AtomicU64>>>>,
    samples: Arc<Mutex<BTreeMap<String, Arc<Samples>>>>,
}

#[derive(Default)]
struct Samples(Mutex<Vec<f64>>);

impl metrics::HistogramFn for Samples {
    fn record(&self, value: f64) {
        self.0.lock().unwrap().push(value);
    }
}

fn id(key: &metrics::Key) -> String {
    let labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Recorder {
    fn counter(&self, id: &str) -> u64 {
        let all = self.values.lock().unwrap();
        all.get(id)
            .unwrap_or_else(|| panic!("no {id} in {:?}", all.keys()))
            .load(Ordering::Relaxed)
    }
    fn gauge(&self, id: &str) -> f64 {
        f64::from_bits(self.counter(id))
    }
    fn samples(&self, id: &str) -> Vec<f64> {
        let all = self.samples.lock().unwrap();
        let samples = all
            .get(id)
            .unwrap_or_else(|| panic!("no {id} in {:?}", all.keys()));
        let values = samples.0.lock().unwrap();
        values.clone()
    }
}

impl metrics::Recorder for Recorder {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        let slot = self
            .values
            .lock()
            .unwrap()
            .entry(id(key))
            .or_default()
            .clone();
        metrics::Counter::from_arc(slot)
    }
    fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        let slot = self
            .values
            .lock()
            .unwrap()
            .entry(id(key))
            .or_default()
            .clone();
        metrics::Gauge::from_arc(slot)
    }
    fn register_histogram(
        &self,
        key: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        let slot = self
            .samples
            .lock()
            .unwrap()
            .entry(id(key))
            .or_default()
            .clone();
        metrics::Histogram::from_arc(slot)
    }
}

#[test]
fn pool_panics_drops_and_shutdown_are_events_and_its_tasks_are_measured() {
    let _check = LeakCheck::new();
    let events = Events::default();
    tracing::subscriber::set_global_default(events.clone()).unwrap();
    let recorder = Recorder::default();
    // Handles are registered at build: the workers record through them.
    let pool = metrics::with_local_recorder(&recorder, || {
        WorkerPool::builder()
            .workers(1)
            .queue_capacity(1)
            .overflow(Overflow::DropNewest)
            .name("evt-pool")
            .build()
            .unwrap()
    });
    let labels = "{kind=WorkerPool,name=evt-pool}";
    let metric = |name: &str| format!("{name}{labels}");

    let panicked_at = line!() + 1;
    let panicker = pool.submit(|| panic!("task failure")).unwrap();
    assert!(panicker.join().unwrap_err().is_panicked());

    let (release, hang) = mpsc::channel::<()>();
    let (started, running) = mpsc::channel::<()>();
    let blocker = pool
        .submit(move || {
            started.send(()).unwrap();
            hang.recv()
        })
        .unwrap();
    running.recv().unwrap();
    assert_eq!(recorder.gauge(&metric("corral_pool_busy")), 1.0);
    let queued = pool.submit(|| 1).unwrap();
    assert_eq!(recorder.gauge(&metric("corral_pool_queued")), 1.0);
    let dropped_at = line!() + 1;
    let shed = pool.submit(|| 2).unwrap(); // queue full: shed by DropNewest
    assert!(shed.join().unwrap_err().is_cancelled());
    release.send(()).unwrap();
    blocker.join().unwrap().unwrap();
    assert_eq!(queued.join().unwrap(), 1);
    let report = pool.shutdown();
    assert_eq!(
        (report.completed, report.panicked, report.dropped),
        (2, 1, 1)
    );

    assert_eq!(recorder.counter(&metric("corral_pool_completed_total")), 2);
    assert_eq!(recorder.counter(&metric("corral_pool_panicked_total")), 1);
    assert_eq!(recorder.counter(&metric("corral_pool_dropped_total")), 1);
    assert_eq!(recorder.gauge(&metric("corral_pool_busy")), 0.0);
    assert_eq!(recorder.gauge(&metric("corral_pool_queued")), 0.0);
    for histogram in ["corral_pool_queue_seconds", "corral_pool_run_seconds"] {
        let samples = recorder.samples(&metric(histogram));
        assert_eq!(samples.len(), 3, "{histogram}: {samples:?}");
        assert!(samples.iter().all(|s| *s >= 0.0), "{samples:?}");
    }

    let panics = events.matching("pool task panicked");
    assert_eq!(panics.len(), 1, "{panics:?}");
    assert!(panics[0].starts_with("WARN corral"), "{}", panics[0]);
    for field in [
        "kind=WorkerPool".to_owned(),
        "name=evt-pool".to_owned(),
        format!("site={}:{panicked_at}:", file!()),
    ] {
        assert!(panics[0].contains(&field), "{} lacks {field}", panics[0]);
    }
    let drops = events.matching("pool dropped a task");
    assert_eq!(drops.len(), 1, "{drops:?}");
    assert!(drops[0].starts_with("DEBUG corral"), "{}", drops[0]);
    assert!(
        drops[0].contains(&format!("site={}:{dropped_at}:", file!())),
        "{}",
        drops[0]
    );
    let shutdowns = events.matching("pool shut down");
    assert_eq!(shutdowns.len(), 1, "{shutdowns:?}");
    let shutdown = &shutdowns[0];
    assert!(shutdown.starts_with("INFO corral"), "{shutdown}");
    for field in [
        "name=evt-pool",
        "completed=2",
        "panicked=1",
        "never_ran=0",
        "dropped=1",
    ] {
        assert!(shutdown.contains(field), "{shutdown} lacks {field}");
    }
}
