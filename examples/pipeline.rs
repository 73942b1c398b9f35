//! Process with backpressure: lines of a generated access log are parsed in parallel
//! and aggregated, with memory bounded by the queues, a report that names the
//! bottleneck, and no thread left behind.
//!
//! Run it with `cargo run --release --example pipeline`.

use std::collections::HashMap;
use std::error::Error;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

use corral::leak::LeakCheck;
use corral::{Overflow, Pipeline};

const LINES: u64 = 300_000;
const ROUTES: [&str; 5] = [
    "/api/users",
    "/api/orders",
    "/api/search",
    "/health",
    "/static/app.js",
];

/// One access-log line, as a server would write it.
fn log_line(i: u64) -> String {
    let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16;
    let route = ROUTES[(x % ROUTES.len() as u64) as usize];
    let status = match x % 97 {
        0 => 500,
        1..=3 => 404,
        _ => 200,
    };
    let ms = 1 + (x >> 8) % 250;
    format!(
        "2026-11-25T12:{:02}:{:02}Z GET {route} {status} {ms}ms",
        (i / 60) % 60,
        i % 60
    )
}

#[derive(Debug)]
struct Entry {
    route: String,
    status: u16,
    millis: u32,
}

#[derive(Debug)]
struct BadLine(String);

impl fmt::Display for BadLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed log line: {:?}", self.0)
    }
}

impl Error for BadLine {}

fn parse(line: String) -> Result<Entry, BadLine> {
    let mut fields = line.split_whitespace();
    let (_time, _method) = (fields.next(), fields.next());
    let parsed = (|| {
        let route = fields.next()?.to_owned();
        let status = fields.next()?.parse().ok()?;
        let millis = fields.next()?.strip_suffix("ms")?.parse().ok()?;
        Some(Entry {
            route,
            status,
            millis,
        })
    })();
    parsed.ok_or(BadLine(line))
}

#[derive(Default)]
struct RouteStats {
    hits: u64,
    errors: u64,
    total_ms: u64,
    max_ms: u32,
}

fn main() -> Result<(), Box<dyn Error>> {
    let _check = LeakCheck::new(); // fails at the end if a pipeline thread survived

    // Lines are generated lazily and counted while alive, to show the memory bound.
    let in_flight = AtomicUsize::new(0);
    let max_in_flight = AtomicUsize::new(0);
    let lines = (0..LINES).map(|i| {
        let now = in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        max_in_flight.fetch_max(now, Ordering::Relaxed);
        log_line(i)
    });

    let mut by_route: HashMap<String, RouteStats> = HashMap::new();
    let (capacity, batch) = (256, 32);
    let report = Pipeline::from_iter(lines)
        .try_stage("parse", 3, parse)
        .stage("classify", 1, |e: Entry| (e.status >= 500, e))
        .capacity(capacity)
        .batch(batch)
        .overflow(Overflow::Block) // backpressure: the parsers pull the generator
        .run(|(server_error, entry)| {
            in_flight.fetch_sub(1, Ordering::Relaxed);
            let stats = by_route.entry(entry.route).or_default();
            stats.hits += 1;
            stats.errors += u64::from(server_error);
            stats.total_ms += u64::from(entry.millis);
            stats.max_ms = stats.max_ms.max(entry.millis);
        })?;

    let mut routes: Vec<_> = by_route.into_iter().collect();
    routes.sort_by_key(|(_, s)| std::cmp::Reverse(s.hits));
    println!("{LINES} log lines, parsed by 3 workers:\n");
    println!(
        "{:<16} {:>8} {:>7} {:>8} {:>7}",
        "route", "hits", "5xx", "avg ms", "max ms"
    );
    for (route, s) in &routes {
        println!(
            "{route:<16} {:>8} {:>7} {:>8.1} {:>7}",
            s.hits,
            s.errors,
            s.total_ms as f64 / s.hits as f64,
            s.max_ms
        );
    }
    // 2 queues of `capacity` (in front of "classify" and of the sink: under `Block`
    // the parsers pull the generator themselves); 4 workers and the sink hold a batch.
    let bound = 2 * capacity + (4 + 1) * batch;
    println!(
        "\nmax lines alive at once: {} (bound {bound}), of {LINES}",
        max_in_flight.load(Ordering::Relaxed)
    );
    println!("\n{report}\n");

    // The same pipeline with one corrupt line: the first error stops the whole run,
    // the generator is no longer pulled, and the report says what happened.
    let lines = (0..LINES).map(|i| {
        if i == 1000 {
            "garbage".to_owned()
        } else {
            log_line(i)
        }
    });
    let err = Pipeline::from_iter(lines)
        .try_stage("parse", 3, parse)
        .capacity(capacity)
        .run(drop)
        .unwrap_err();
    let report = err.report().expect("a run happened");
    // Display names the stage; the parse error itself is the source.
    let cause = std::error::Error::source(&err).map(|e| e.to_string());
    println!("strict run: {err}: {}", cause.unwrap_or_default());
    println!(
        "  pulled {} of {LINES} lines, parsed {}, not processed {}",
        report.stage("source").map_or(0, |s| s.items_out),
        report.stage("parse").map_or(0, |s| s.items_out),
        report.not_processed()
    );
    Ok(())
}
