//! A collecting `tracing` subscriber and a collecting `metrics` recorder, for the tests
//! of the `tracing` and `metrics` features.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Every event, as "LEVEL target field=value ...".
#[derive(Clone, Default)]
pub struct Events(Arc<Mutex<Vec<String>>>);

impl Events {
    /// The process's global subscriber, installed on first use. Events from threads
    /// corral starts reach only a global subscriber; tests run in parallel, so they
    /// filter by their primitive's name.
    pub fn global() -> &'static Events {
        static EVENTS: OnceLock<Events> = OnceLock::new();
        EVENTS.get_or_init(|| {
            let events = Events::default();
            tracing::subscriber::set_global_default(events.clone()).unwrap();
            events
        })
    }

    /// The events whose text contains every needle.
    pub fn matching(&self, needles: &[&str]) -> Vec<String> {
        let all = self.0.lock().unwrap();
        all.iter()
            .filter(|e| needles.iter().all(|n| e.contains(n)))
            .cloned()
            .collect()
    }

    /// Polls, up to `patience`, until `count` events match (for events another
    /// thread emits).
    pub fn wait_for(&self, needles: &[&str], count: usize, patience: Duration) -> Vec<String> {
        let deadline = Instant::now() + patience;
        loop {
            let found = self.matching(needles);
            if found.len() >= count {
                return found;
            }
            assert!(Instant::now() < deadline, "{needles:?}: {found:?}");
            std::thread::yield_now();
        }
    }
}

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
        let meta = event.metadata();
        let mut fields = Fields(format!("{} {}", meta.level(), meta.target()));
        event.record(&mut fields);
        self.0.lock().unwrap().push(fields.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Keeps every counter's and gauge's latest value, and every histogram's samples,
/// under "name{label=value,...}".
#[derive(Clone, Default)]
pub struct Recorder {
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

/// "name{label=value,...}".
fn id(key: &metrics::Key) -> String {
    let labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Recorder {
    /// The process's global recorder, installed on first use (for metrics registered
    /// where no local recorder is in scope).
    pub fn global() -> &'static Recorder {
        static RECORDER: OnceLock<Recorder> = OnceLock::new();
        RECORDER.get_or_init(|| {
            let recorder = Recorder::default();
            metrics::set_global_recorder(recorder.clone()).unwrap();
            recorder
        })
    }

    /// A counter's value.
    pub fn counter(&self, id: &str) -> u64 {
        let all = self.values.lock().unwrap();
        all.get(id)
            .unwrap_or_else(|| panic!("no {id} in {:?}", all.keys()))
            .load(Ordering::Relaxed)
    }

    /// A gauge's latest value.
    pub fn gauge(&self, id: &str) -> f64 {
        f64::from_bits(self.counter(id))
    }

    /// A histogram's samples.
    pub fn samples(&self, id: &str) -> Vec<f64> {
        let all = self.samples.lock().unwrap();
        let samples = all
            .get(id)
            .unwrap_or_else(|| panic!("no {id} in {:?}", all.keys()));
        let values = samples.0.lock().unwrap().clone();
        values
    }

    /// Every counter and gauge registered, by id.
    pub fn registered(&self) -> Vec<String> {
        self.values.lock().unwrap().keys().cloned().collect()
    }

    fn value(&self, key: &metrics::Key) -> Arc<AtomicU64> {
        let mut all = self.values.lock().unwrap();
        all.entry(id(key)).or_default().clone()
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
        metrics::Counter::from_arc(self.value(key))
    }
    fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::from_arc(self.value(key))
    }
    fn register_histogram(
        &self,
        key: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        let mut all = self.samples.lock().unwrap();
        metrics::Histogram::from_arc(all.entry(id(key)).or_default().clone())
    }
}
