//! What every contender of a benchmark group is, declared where it is benchmarked.
//!
//! A [`Group`] wraps criterion's group: each contender is registered with its
//! [`Role`], and a corral contender names the contenders in its group that do the same
//! work ([`Role::Corral`]'s `vs`), the only ones a ratio may be taken against.
//! `finish` checks those names and writes the group's roles as JSON into
//! `<criterion dir>/corral-roles/`, where `scripts/bench-report` reads them beside
//! criterion's own estimates. The report never infers a role from a name.
#![allow(dead_code)] // each bench target uses its own part of this module

use std::fmt::{Display, Write as _};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::measurement::WallTime;
use criterion::{Bencher, BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput};

/// What a contender is, for the reader of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// corral's own code. `vs` names the peers and floors of the same group that do
    /// the same work (at the same parameter); the report gives corral's ratio to
    /// those and to nothing else.
    Corral { vs: &'static [&'static str] },
    /// Another answer to the same problem: another crate's (rayon, threadpool, tokio,
    /// ...) or the textbook construction (a counting semaphore on a mutex and condvar).
    Peer,
    /// The least code that does the same work, written here (a bare channel and a
    /// wait group, an atomic): what no implementation can beat by much.
    Floor,
    /// Context, not a contender: a direct call, one thread's plain loop, a different
    /// kind of work. Never in a ratio.
    Reference,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Corral { .. } => "corral",
            Role::Peer => "peer",
            Role::Floor => "floor",
            Role::Reference => "reference",
        }
    }
}

/// How the report lays a group out beside others: the groups of one study that share
/// a `figure` are drawn as one chart, one panel per `panel`, the parameter on the x
/// axis and one line per contender.
#[derive(Debug, Clone)]
pub struct Layout {
    pub study: &'static str,
    pub figure: String,
    pub panel: String,
    /// What the parameter is (the x axis), e.g. "workers".
    pub x: &'static str,
    /// A baseline (one thread's plain loop, say) is drawn as a line across every panel
    /// of its figure rather than as a panel of its own.
    pub baseline: bool,
}

/// A criterion group whose contenders carry their roles.
pub struct Group<'a> {
    inner: BenchmarkGroup<'a, WallTime>,
    name: String,
    about: Option<String>,
    layout: Option<Layout>,
    contenders: Vec<(String, Role)>,
    /// When the group began, so the report can tell this run's results from older ones.
    started: f64,
    /// Its place among the bench's groups, the order the report lists them in.
    order: usize,
}

static GROUPS: AtomicUsize = AtomicUsize::new(0);

impl<'a> Group<'a> {
    pub fn new(c: &'a mut Criterion, name: impl Into<String>) -> Self {
        let name = name.into();
        Group {
            inner: c.benchmark_group(name.clone()),
            name,
            about: None,
            layout: None,
            contenders: Vec::new(),
            started: unix_now(),
            order: GROUPS.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// One or two sentences for the report: what one operation is.
    pub fn about(&mut self, text: impl Into<String>) -> &mut Self {
        self.about = Some(text.into());
        self
    }

    pub fn layout(&mut self, layout: Layout) -> &mut Self {
        self.layout = Some(layout);
        self
    }

    pub fn throughput(&mut self, t: Throughput) -> &mut Self {
        self.inner.throughput(t);
        self
    }

    pub fn sample_size(&mut self, n: usize) -> &mut Self {
        self.inner.sample_size(n);
        self
    }

    pub fn sampling_mode(&mut self, mode: SamplingMode) -> &mut Self {
        self.inner.sampling_mode(mode);
        self
    }

    pub fn warm_up_time(&mut self, d: Duration) -> &mut Self {
        self.inner.warm_up_time(d);
        self
    }

    pub fn measurement_time(&mut self, d: Duration) -> &mut Self {
        self.inner.measurement_time(d);
        self
    }

    /// Benchmarks contender `name` in its `role`.
    pub fn bench<F>(&mut self, name: &str, role: Role, f: F) -> &mut Self
    where
        F: FnMut(&mut Bencher<'_, WallTime>),
    {
        self.declare(name, role);
        self.inner.bench_function(name, f);
        self
    }

    /// Benchmarks contender `name` at one value of the group's parameter; the report
    /// compares contenders only at the same value.
    pub fn bench_param<F>(&mut self, name: &str, param: impl Display, role: Role, f: F) -> &mut Self
    where
        F: FnMut(&mut Bencher<'_, WallTime>),
    {
        self.declare(name, role);
        self.inner.bench_function(BenchmarkId::new(name, param), f);
        self
    }

    fn declare(&mut self, name: &str, role: Role) {
        match self.contenders.iter().find(|(n, _)| n == name) {
            Some((_, declared)) => assert_eq!(
                *declared, role,
                "{}: contender {name} declared with two roles",
                self.name
            ),
            None => self.contenders.push((name.to_owned(), role)),
        }
    }

    /// Checks the declared comparisons, writes the roles and ends the group.
    pub fn finish(self) {
        for (name, role) in &self.contenders {
            let Role::Corral { vs } = role else { continue };
            for other in *vs {
                let found = self.contenders.iter().find(|(n, _)| n == other);
                assert!(
                    matches!(found, Some((_, Role::Peer | Role::Floor))),
                    "{}: {name} is compared with {other}, which is not a peer or floor of the group",
                    self.name
                );
            }
        }
        if let Err(e) = self.write() {
            eprintln!("{}: could not write the roles manifest: {e}", self.name);
        }
        self.inner.finish();
    }

    fn write(&self) -> std::io::Result<()> {
        let dir = criterion_dir().join("corral-roles");
        std::fs::create_dir_all(&dir)?;
        let file: String = self
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let mut out = String::from("{\n");
        let _ = writeln!(out, "  \"group\": {},", json(&self.name));
        // The bench target this module is compiled into.
        let _ = writeln!(out, "  \"bench\": {},", json(env!("CARGO_CRATE_NAME")));
        let _ = writeln!(out, "  \"order\": {},", self.order);
        let _ = writeln!(out, "  \"started\": {},", self.started);
        let _ = writeln!(out, "  \"finished\": {},", unix_now());
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let _ = writeln!(out, "  \"available_parallelism\": {cores},");
        if let Some(about) = &self.about {
            let _ = writeln!(out, "  \"about\": {},", json(about));
        }
        if let Some(l) = &self.layout {
            let _ = writeln!(
                out,
                "  \"layout\": {{\"study\": {}, \"figure\": {}, \"panel\": {}, \"x\": {}, \"baseline\": {}}},",
                json(l.study),
                json(&l.figure),
                json(&l.panel),
                json(l.x),
                l.baseline
            );
        }
        out.push_str("  \"contenders\": [\n");
        for (i, (name, role)) in self.contenders.iter().enumerate() {
            let vs = match role {
                Role::Corral { vs } => vs.iter().map(|v| json(v)).collect::<Vec<_>>().join(", "),
                _ => String::new(),
            };
            let comma = if i + 1 < self.contenders.len() {
                ","
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "    {{\"name\": {}, \"role\": \"{}\", \"vs\": [{vs}]}}{comma}",
                json(name),
                role.name()
            );
        }
        out.push_str("  ]\n}\n");
        std::fs::write(dir.join(format!("{file}.json")), out)
    }
}

/// Where criterion writes its results, found as criterion finds it: `CRITERION_HOME`,
/// else `$CARGO_TARGET_DIR/criterion`, else the target directory this bench was built in.
pub fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent()
        .map_or(tmp.clone(), |t| t.to_path_buf())
        .join("criterion")
}

/// Seconds since the Unix epoch, with a fraction (file times are as fine).
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn json(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
