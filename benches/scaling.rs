//! Scaling study: throughput of the pool (`execute`, `submit` + join, `map`) and of a
//! one-stage pipeline against the number of workers (1, 2, 4, 8) and the cost of one
//! task (empty, and about 1, 10 and 100 µs of busy work), corral beside rayon and the
//! threadpool crate (the pipeline beside a hand-built crossbeam-channel chain).
//!
//! The work is a spin of a mixing step whose rounds per microsecond are calibrated
//! when the bench starts (best of several timings, so a busy machine slows the
//! calibration less than it would a mean), never a sleep: a sleeping task would scale
//! with workers on any machine and show nothing of the pool. The item count per
//! iteration falls as the cost rises, so one iteration is about 10-20 ms of work on
//! one thread. Each group is one operation at one cost, the parameter is the worker
//! count; a baseline group per cost times one thread's plain loop over the same items.
//!
//! Run it alone with `cargo bench --bench scaling`: 180 benchmarks, about 5 minutes.

mod common;

use std::hint::black_box;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Group, Layout, Role};
use corral::{Pipeline, WorkerPool};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use crossbeam_utils::sync::WaitGroup;
use rayon::prelude::*;

const WORKERS: [usize; 4] = [1, 2, 4, 8];
/// The pool's queue, and the pipeline's queues, in every contender that has one.
const QUEUE: usize = 1024;
const PIPE_CAP: usize = 64;

/// One task's cost: its label (in group names), its title (in the report), the busy
/// time it stands for, and how many tasks one iteration runs.
struct Cost {
    label: &'static str,
    title: &'static str,
    nanos: u64,
    items: u64,
}

const COSTS: [Cost; 4] = [
    Cost {
        label: "empty",
        title: "an empty task",
        nanos: 0,
        items: 10_000,
    },
    Cost {
        label: "1us",
        title: "1 µs per task",
        nanos: 1_000,
        items: 10_000,
    },
    Cost {
        label: "10us",
        title: "10 µs per task",
        nanos: 10_000,
        items: 2_000,
    },
    Cost {
        label: "100us",
        title: "100 µs per task",
        nanos: 100_000,
        items: 200,
    },
];

/// `rounds` steps of a 64-bit mixing function: busy work the compiler cannot fold.
#[inline]
fn spin(x: u64, rounds: u32) -> u64 {
    let mut h = x;
    for _ in 0..rounds {
        h = (h ^ (h >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    }
    black_box(h)
}

/// Rounds of [`spin`] per microsecond on this machine: the best of several timings.
fn rounds_per_micro() -> f64 {
    const ROUNDS: u32 = 2_000_000;
    let best = (0..7)
        .map(|i| {
            let start = Instant::now();
            black_box(spin(black_box(i), black_box(ROUNDS)));
            start.elapsed()
        })
        .min()
        .expect("seven timings");
    f64::from(ROUNDS) / (best.as_secs_f64() * 1e6)
}

fn rounds_for(nanos: u64, per_micro: f64) -> u32 {
    (nanos as f64 / 1_000.0 * per_micro).round() as u32
}

/// The expected fold of every contender's results.
fn expected(items: u64, rounds: u32) -> u64 {
    (0..items).fold(0, |acc, x| acc ^ spin(x, rounds))
}

fn layout(cost: &Cost, panel: &str) -> Layout {
    Layout {
        study: "scaling",
        figure: cost.title.to_owned(),
        panel: panel.to_owned(),
        x: "workers",
        baseline: false,
    }
}

fn group<'a>(c: &'a mut Criterion, cost: &Cost, op: &str, about: String) -> Group<'a> {
    let mut g = Group::new(c, format!("scaling/{}/{op}", cost.label));
    g.about(about)
        .layout(layout(cost, op))
        .throughput(Throughput::Elements(cost.items))
        .sampling_mode(SamplingMode::Flat);
    g
}

fn baseline(c: &mut Criterion, cost: &Cost, rounds: u32, what: &str) {
    let mut g = group(
        c,
        cost,
        "one_thread",
        format!("{what}: one thread's plain loop, no pool"),
    );
    g.layout(Layout {
        baseline: true,
        ..layout(cost, "one_thread")
    });
    let items = cost.items;
    g.bench("plain_loop", Role::Reference, |b| {
        b.iter(|| black_box(expected(items, rounds)))
    });
    g.finish();
}

fn execute(c: &mut Criterion, cost: &Cost, rounds: u32, what: &str) {
    let items = cost.items;
    let about = format!(
        "{items} tasks of {what} each, submitted from one thread and all waited for: \
         corral `execute` + a WaitGroup, threadpool `execute` + `join`, rayon `scope` + `spawn`"
    );
    let mut g = group(c, cost, "execute", about);
    for w in WORKERS {
        let pool = WorkerPool::builder()
            .workers(w)
            .queue_capacity(QUEUE)
            .build()
            .expect("valid pool");
        g.bench_param(
            "corral_execute",
            w,
            Role::Corral {
                vs: &["threadpool_execute_join", "rayon_scope_spawn"],
            },
            |b| {
                b.iter(|| {
                    let wg = WaitGroup::new();
                    for i in 0..items {
                        let wg = wg.clone();
                        pool.execute(move || {
                            black_box(spin(i, rounds));
                            drop(wg);
                        })
                        .expect("pool running");
                    }
                    wg.wait();
                })
            },
        );
        drop(pool);
        let tp = threadpool::ThreadPool::new(w);
        g.bench_param("threadpool_execute_join", w, Role::Peer, |b| {
            b.iter(|| {
                for i in 0..items {
                    tp.execute(move || {
                        black_box(spin(i, rounds));
                    });
                }
                tp.join();
            })
        });
        drop(tp);
        let rayon = rayon_pool(w);
        g.bench_param("rayon_scope_spawn", w, Role::Peer, |b| {
            b.iter(|| {
                rayon.scope(|s| {
                    for i in 0..items {
                        s.spawn(move |_| {
                            black_box(spin(i, rounds));
                        });
                    }
                })
            })
        });
    }
    g.finish();
}

fn submit_join(c: &mut Criterion, cost: &Cost, rounds: u32, what: &str) {
    let items = cost.items;
    let want = expected(items, rounds);
    let about = format!(
        "{items} tasks of {what} each, whose results the submitter collects: corral \
         `submit` + `TaskHandle::join`, threadpool `execute` + an mpsc channel, rayon \
         `scope` + `spawn` writing into a slot per task"
    );
    let mut g = group(c, cost, "submit_join", about);
    let mut handles = Vec::with_capacity(items as usize);
    let mut slots = vec![0u64; items as usize];
    for w in WORKERS {
        let pool = WorkerPool::builder()
            .workers(w)
            .queue_capacity(QUEUE)
            .build()
            .expect("valid pool");
        g.bench_param(
            "corral_submit_join",
            w,
            Role::Corral {
                vs: &["threadpool_execute_channel", "rayon_scope_spawn_slots"],
            },
            |b| {
                b.iter(|| {
                    for i in 0..items {
                        handles.push(pool.submit(move || spin(i, rounds)).expect("pool running"));
                    }
                    let got = handles
                        .drain(..)
                        .fold(0, |acc, h| acc ^ h.join().expect("task ran"));
                    assert_eq!(got, want);
                })
            },
        );
        drop(pool);
        let tp = threadpool::ThreadPool::new(w);
        g.bench_param("threadpool_execute_channel", w, Role::Peer, |b| {
            b.iter(|| {
                let (tx, rx) = mpsc::channel();
                for i in 0..items {
                    let tx = tx.clone();
                    tp.execute(move || tx.send(spin(i, rounds)).expect("receiver alive"));
                }
                drop(tx);
                assert_eq!(rx.iter().fold(0, |acc, x| acc ^ x), want);
            })
        });
        drop(tp);
        let rayon = rayon_pool(w);
        g.bench_param("rayon_scope_spawn_slots", w, Role::Peer, |b| {
            b.iter(|| {
                rayon.scope(|s| {
                    for (i, slot) in (0..items).zip(slots.iter_mut()) {
                        s.spawn(move |_| *slot = spin(i, rounds));
                    }
                });
                assert_eq!(slots.iter().fold(0, |acc, x| acc ^ x), want);
            })
        });
    }
    g.finish();
}

fn map(c: &mut Criterion, cost: &Cost, rounds: u32, what: &str) {
    let items = cost.items;
    let want = expected(items, rounds);
    let about = format!(
        "an ordered map of {what} over {items} items: corral `WorkerPool::map` folded, \
         rayon `par_iter().map().collect()` on a Range (split by index) and \
         `par_bridge()` (pulls a plain iterator, as `map` does, but unordered)"
    );
    let mut g = group(c, cost, "map", about);
    let work = move |x: u64| spin(x, rounds);
    for w in WORKERS {
        let pool = WorkerPool::builder()
            .workers(w)
            .queue_capacity(QUEUE)
            .build()
            .expect("valid pool");
        g.bench_param(
            "corral_map",
            w,
            Role::Corral {
                vs: &["rayon_par_iter_collect", "rayon_par_bridge"],
            },
            |b| {
                b.iter(|| {
                    let got = pool
                        .map(0..items, work)
                        .fold(0, |acc, r| acc ^ r.expect("item ran"));
                    assert_eq!(got, want);
                })
            },
        );
        drop(pool);
        let rayon = rayon_pool(w);
        g.bench_param("rayon_par_iter_collect", w, Role::Peer, |b| {
            b.iter(|| {
                let v: Vec<u64> = rayon.install(|| (0..items).into_par_iter().map(work).collect());
                assert_eq!(v.iter().fold(0, |acc, x| acc ^ x), want);
            })
        });
        g.bench_param("rayon_par_bridge", w, Role::Peer, |b| {
            b.iter(|| {
                let got =
                    rayon.install(|| (0..items).par_bridge().map(work).reduce(|| 0, |a, b| a ^ b));
                assert_eq!(got, want);
            })
        });
    }
    g.finish();
}

fn pipeline(c: &mut Criterion, cost: &Cost, rounds: u32, what: &str) {
    let items = cost.items;
    let want = expected(items, rounds);
    let about = format!(
        "{items} items through one stage of N workers doing {what} each, queues of \
         {PIPE_CAP}, the sink on the caller: corral `Pipeline` (its stage pulls the \
         source itself) beside a hand-built chain (a source thread, a \
         `crossbeam_channel::bounded` queue, N workers, a second queue)"
    );
    let mut g = group(c, cost, "pipeline", about);
    let work = move |x: u64| spin(x, rounds);
    for w in WORKERS {
        g.bench_param(
            "corral_pipeline",
            w,
            Role::Corral {
                vs: &["crossbeam_chain"],
            },
            |b| {
                b.iter(|| {
                    let mut got = 0;
                    Pipeline::from_iter(0..items)
                        .stage("work", w, work)
                        .capacity(PIPE_CAP)
                        .run(|x| got ^= x)
                        .expect("bench pipeline");
                    assert_eq!(got, want);
                })
            },
        );
        g.bench_param("crossbeam_chain", w, Role::Floor, |b| {
            b.iter(|| assert_eq!(crossbeam_chain(items, w, work), want))
        });
    }
    g.finish();
}

/// The least a one-stage pipeline can be: a source thread, `workers` threads between
/// two bounded queues, the sink on the caller.
fn crossbeam_chain(items: u64, workers: usize, work: impl Fn(u64) -> u64 + Copy + Send) -> u64 {
    use crossbeam_channel::bounded;
    std::thread::scope(|s| {
        let (tx_in, rx_in) = bounded::<u64>(PIPE_CAP);
        let (tx_out, rx_out) = bounded::<u64>(PIPE_CAP);
        s.spawn(move || (0..items).for_each(|x| tx_in.send(x).expect("workers alive")));
        for _ in 0..workers {
            let (rx, tx) = (rx_in.clone(), tx_out.clone());
            s.spawn(move || {
                rx.iter()
                    .for_each(|x| tx.send(work(x)).expect("sink alive"))
            });
        }
        drop((rx_in, tx_out));
        rx_out.iter().fold(0, |acc, x| acc ^ x)
    })
}

fn rayon_pool(workers: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .build()
        .expect("rayon pool")
}

fn scaling(c: &mut Criterion) {
    let per_micro = rounds_per_micro();
    eprintln!("scaling: {per_micro:.0} rounds of the mixing step per microsecond");
    for cost in &COSTS {
        let rounds = rounds_for(cost.nanos, per_micro);
        let what = if cost.nanos == 0 {
            "no work".to_owned()
        } else {
            format!(
                "{} µs of busy work ({rounds} rounds of a mixing step, calibrated at start)",
                cost.nanos / 1_000
            )
        };
        baseline(c, cost, rounds, &what);
        execute(c, cost, rounds, &what);
        submit_join(c, cost, rounds, &what);
        map(c, cost, rounds, &what);
        pipeline(c, cost, rounds, &what);
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(10)
}

criterion_group! { name = benches; config = config(); targets = scaling }
criterion_main!(benches);
