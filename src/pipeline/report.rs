//! What a pipeline run did, per stage, and which stage limited it.

use std::fmt;
use std::time::Duration;

/// Counters and times of one stage of a finished run (the source and the sink are
/// stages too, named `"source"` and `"sink"`).
///
/// Every item offered to a stage ends in exactly one bucket:
/// `items_in == items_out + dropped + failed + not_processed`.
/// The items a stage puts out are the next stage's `items_in`.
///
/// # Example
///
/// ```
/// use corral::Pipeline;
///
/// let (_, report) = Pipeline::from_iter(0..10u32).stage("double", 2, |x| x * 2).collect()?;
/// let double = report.stage("double").unwrap();
/// assert_eq!((double.items_in, double.items_out), (10, 10));
/// assert_eq!(double.items_in, double.items_out + double.dropped + double.failed + double.not_processed);
/// # Ok::<(), corral::pipeline::PipelineError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StageStats {
    /// The stage's name (`"source"` and `"sink"` for the two ends).
    pub name: String,
    /// Worker threads of the stage (1 for the source, although under
    /// [`Overflow::Block`](crate::Overflow::Block) it has no thread of its own: the
    /// first stage's workers pull it; the sink runs on the caller).
    pub workers: usize,
    /// Items offered to the stage's queue (for the source: items pulled).
    pub items_in: u64,
    /// Items the stage finished successfully and passed on (for the sink: delivered).
    pub items_out: u64,
    /// Items the overflow policy dropped from (or refused at) the stage's queue.
    pub dropped: u64,
    /// Items whose stage function returned `Err` or panicked. Usually 0 or 1: the
    /// first failure stops the run, though other workers of the stage may fail on
    /// items they were already processing.
    pub failed: u64,
    /// Items that entered the stage but were not processed because the run stopped
    /// (still queued, in a worker's hands, or refused by a cancelled send).
    pub not_processed: u64,
    /// Time the stage's workers spent running (the stage function and bookkeeping),
    /// summed over workers. For the source: time inside its iterator.
    pub busy: Duration,
    /// Time spent blocked sending because the next queue was full, summed over
    /// workers. For the source: its time waiting for the next stage to take more
    /// (when the first stage pulls it directly, the time between pulls) and, in
    /// ordered mode, for the reorder window.
    pub blocked_send: Duration,
    /// Time spent waiting for input on an empty queue, summed over workers. For a
    /// first stage that pulls the source itself, the time spent pulling it.
    pub idle_recv: Duration,
}

impl StageStats {
    /// Share of the stage's worker time spent busy, in `0.0..=1.0`: busy time over
    /// busy + blocked + idle time.
    pub fn utilization(&self) -> f64 {
        // Saturating: the fields are public, so they may hold anything.
        let total = self
            .busy
            .saturating_add(self.blocked_send)
            .saturating_add(self.idle_recv);
        if total.is_zero() {
            0.0
        } else {
            self.busy.as_secs_f64() / total.as_secs_f64()
        }
    }

    /// Whether the books balance: `items_in == items_out + dropped + failed + not_processed`.
    pub fn balanced(&self) -> bool {
        // In u128: four `u64` counters cannot overflow it.
        let ended = [
            self.items_out,
            self.dropped,
            self.failed,
            self.not_processed,
        ]
        .iter()
        .map(|&n| u128::from(n))
        .sum::<u128>();
        u128::from(self.items_in) == ended
    }
}

/// What a pipeline run did: one [`StageStats`] per stage (source first, sink last)
/// and the wall time.
///
/// `Display` prints a compact table and names the bottleneck.
///
/// # Example
///
/// ```
/// use corral::Pipeline;
///
/// let report = Pipeline::from_iter(0..1000u64)
///     .stage("square", 2, |x| x * x)
///     .run(|_| {})?;
/// assert_eq!(report.stage("sink").unwrap().items_out, 1000);
/// println!("{report}");
/// # Ok::<(), corral::pipeline::PipelineError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PipelineReport {
    /// The pipeline's name, if it was given one ([`Pipeline::name`](super::Pipeline::name)).
    pub name: Option<String>,
    /// Per-stage statistics in flow order: `"source"`, the stages, `"sink"`.
    pub stages: Vec<StageStats>,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl PipelineReport {
    /// The statistics of the stage called `name`.
    pub fn stage(&self, name: &str) -> Option<&StageStats> {
        self.stages.iter().find(|s| s.name == name)
    }

    /// Items the sink received.
    pub fn delivered(&self) -> u64 {
        self.stages.last().map_or(0, |s| s.items_out)
    }

    /// Items dropped by overflow policies, over all stages (saturating at `u64::MAX`).
    pub fn dropped(&self) -> u64 {
        self.stages
            .iter()
            .fold(0u64, |sum, s| sum.saturating_add(s.dropped))
    }

    /// Items not processed because the run stopped early, over all stages
    /// (saturating at `u64::MAX`).
    pub fn not_processed(&self) -> u64 {
        self.stages
            .iter()
            .fold(0u64, |sum, s| sum.saturating_add(s.not_processed))
    }

    /// The stage that limited throughput: the one whose workers were busy the largest
    /// share of their time (ties go to the earlier stage). `None` for an empty report.
    ///
    /// A stage whose workers are busy all the time and whose upstream is blocked
    /// sending to it is where adding workers (or speed) helps.
    pub fn bottleneck(&self) -> Option<&StageStats> {
        self.stages
            .iter()
            .fold(None, |best: Option<&StageStats>, s| match best {
                Some(b) if b.utilization() >= s.utilization() => Some(b),
                _ => Some(s),
            })
    }
}

struct Dur(Duration);

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        let text = if d >= Duration::from_secs(10) {
            format!("{:.1}s", d.as_secs_f64())
        } else if d >= Duration::from_millis(10) {
            format!("{}ms", d.as_millis())
        } else if d >= Duration::from_micros(10) {
            format!("{}us", d.as_micros())
        } else {
            format!("{}ns", d.as_nanos())
        };
        f.pad(&text)
    }
}

impl fmt::Display for PipelineReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .stages
            .iter()
            .map(|s| s.name.len())
            .max()
            .unwrap_or(5)
            .max(5);
        writeln!(
            f,
            "{:<width$} {:>3} {:>9} {:>9} {:>7} {:>6} {:>7} {:>8} {:>8} {:>8} {:>5}",
            "stage",
            "w",
            "in",
            "out",
            "dropped",
            "failed",
            "unproc",
            "busy",
            "blocked",
            "idle",
            "util"
        )?;
        for s in &self.stages {
            writeln!(
                f,
                "{:<width$} {:>3} {:>9} {:>9} {:>7} {:>6} {:>7} {:>8} {:>8} {:>8} {:>4.0}%",
                s.name,
                s.workers,
                s.items_in,
                s.items_out,
                s.dropped,
                s.failed,
                s.not_processed,
                Dur(s.busy),
                Dur(s.blocked_send),
                Dur(s.idle_recv),
                s.utilization() * 100.0
            )?;
        }
        write!(f, "elapsed {}", Dur(self.elapsed))?;
        if let Some(b) = self.bottleneck() {
            write!(
                f,
                "; bottleneck: {} ({:.0}% busy)",
                b.name,
                b.utilization() * 100.0
            )?;
        }
        Ok(())
    }
}
