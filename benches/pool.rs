//! Worker pool: 10,000 tiny tasks on 2 workers, submitted from one thread and waited
//! for, beside rayon (`scope` + `spawn`), the threadpool crate (`execute` + `join`)
//! and a hand-rolled pool of 2 threads on `crossbeam_channel::bounded(1024)` with a
//! WaitGroup (the floor). Then `map` over tiny items (half a nanosecond of work) and
//! small ones (about 30 ns) beside rayon's `par_iter` on a Range (the issue's
//! reference), `par_bridge` over an iterator and `par_iter` over a Vec collected in
//! order; corral's `map` is consumed both by a `for` loop and by `for_each`, and a
//! plain loop on one thread (`floor_*`, not a peer) shows what any work that stays on
//! the calling thread costs at best.
//! Criterion reports time per batch; divide by the element count for ns per task.

mod common;

use std::hint::black_box;
use std::thread;
use std::time::Duration;

use common::{Group, Role};
use corral::WorkerPool;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use crossbeam_utils::sync::WaitGroup;
use rayon::prelude::*;

const TASKS: u64 = 10_000;
const ITEMS: u64 = 100_000;
const WORKERS: usize = 2;
const QUEUE: usize = 1024;

type Job = Box<dyn FnOnce() + Send>;

/// The floor: two threads draining a bounded crossbeam channel of boxed closures.
struct Floor {
    tx: Option<crossbeam_channel::Sender<Job>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Floor {
    fn new() -> Self {
        let (tx, rx) = crossbeam_channel::bounded::<Job>(QUEUE);
        let threads = (0..WORKERS)
            .map(|_| {
                let rx = rx.clone();
                thread::spawn(move || {
                    for job in rx {
                        job();
                    }
                })
            })
            .collect();
        Floor {
            tx: Some(tx),
            threads,
        }
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        self.tx = None;
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
    }
}

fn tiny_tasks(c: &mut Criterion) {
    let mut g = Group::new(c, "pool/10k_tiny_tasks");
    g.throughput(Throughput::Elements(TASKS));

    // Each contender runs right after the one it is compared with, so load changes
    // on the shared machine skew the ratios less.
    let floor = Floor::new();
    g.bench("floor_crossbeam_bounded_waitgroup", Role::Floor, |b| {
        let tx = floor.tx.as_ref().unwrap();
        b.iter(|| {
            let wg = WaitGroup::new();
            for i in 0..TASKS {
                let wg = wg.clone();
                tx.send(Box::new(move || {
                    black_box(i);
                    drop(wg);
                }))
                .unwrap();
            }
            wg.wait();
        })
    });
    drop(floor);

    let pool = WorkerPool::builder()
        .workers(WORKERS)
        .queue_capacity(QUEUE)
        .build()
        .unwrap();
    // Every contender runs 10k tasks and waits for them all; `submit` also hands each
    // result back, work the others do not do.
    let vs = Role::Corral {
        vs: &[
            "floor_crossbeam_bounded_waitgroup",
            "threadpool_execute_join",
            "rayon_scope_spawn",
        ],
    };
    g.bench("corral_execute", vs, |b| {
        b.iter(|| {
            let wg = WaitGroup::new();
            for i in 0..TASKS {
                let wg = wg.clone();
                pool.execute(move || {
                    black_box(i);
                    drop(wg);
                })
                .unwrap();
            }
            wg.wait();
        })
    });

    // Fire and forget, then the pool's own wait: threadpool's `execute` + `join`,
    // without closing the pool and without a latch of the caller's.
    let vs = Role::Corral {
        vs: &[
            "threadpool_execute_join",
            "floor_crossbeam_bounded_waitgroup",
        ],
    };
    g.bench("corral_execute_wait_idle", vs, |b| {
        b.iter(|| {
            for i in 0..TASKS {
                pool.execute(move || {
                    black_box(i);
                })
                .unwrap();
            }
            pool.wait_idle().unwrap();
        })
    });

    let rayon = rayon::ThreadPoolBuilder::new()
        .num_threads(WORKERS)
        .build()
        .unwrap();
    g.bench("rayon_scope_spawn", Role::Peer, |b| {
        b.iter(|| {
            rayon.scope(|s| {
                for i in 0..TASKS {
                    s.spawn(move |_| {
                        black_box(i);
                    });
                }
            })
        })
    });
    drop(rayon);

    let mut handles = Vec::with_capacity(TASKS as usize);
    let vs = Role::Corral {
        vs: &["rayon_scope_spawn", "threadpool_execute_join"],
    };
    g.bench("corral_submit_handle", vs, |b| {
        b.iter(|| {
            for i in 0..TASKS {
                handles.push(pool.submit(move || black_box(i)).unwrap());
            }
            for h in handles.drain(..) {
                black_box(h.join().unwrap());
            }
        })
    });
    drop(pool);

    let tp = threadpool::ThreadPool::new(WORKERS);
    g.bench("threadpool_execute_join", Role::Peer, |b| {
        b.iter(|| {
            for i in 0..TASKS {
                tp.execute(move || {
                    black_box(i);
                });
            }
            tp.join();
        })
    });
    drop(tp);
    g.finish();
}

/// About half a nanosecond of work: the per-item cost of `map` itself dominates.
fn tiny_work(x: u64) -> u64 {
    x.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(7)
}

/// About 30 ns of work on this VM, so that rayon's Range `for_each` on 2 threads costs
/// about the 15 ns per item the issue measured for its reference.
fn small_work(x: u64) -> u64 {
    let mut h = x;
    for _ in 0..40 {
        h = (h ^ (h >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    }
    h
}

fn map_tiny_items(c: &mut Criterion) {
    map_group(c, "pool/map_100k_tiny_items", tiny_work);
}

fn map_small_items(c: &mut Criterion) {
    map_group(c, "pool/map_100k_small_items", small_work);
}

/// Generic over the work, so every contender gets it as a closure it can inline (as
/// user code passes it), not as an opaque function pointer: a call through one costs
/// about 2.5 ns here, more than the tiny item itself.
fn map_group<W>(c: &mut Criterion, name: &str, work: W)
where
    W: Fn(u64) -> u64 + Copy + Send + Sync + 'static,
{
    let mut g = Group::new(c, name);
    // Every rayon form is a peer; the one-thread loop is context (a parallel map can
    // beat it, so it is no floor).
    let vs = Role::Corral {
        vs: &[
            "rayon_par_iter_for_each",
            "rayon_par_iter_map_collect_ordered",
            "rayon_par_bridge_for_each",
            "rayon_vec_par_iter_map_collect_ordered",
        ],
    };
    g.throughput(Throughput::Elements(ITEMS));

    let pool = WorkerPool::builder()
        .workers(WORKERS)
        .queue_capacity(QUEUE)
        .build()
        .unwrap();
    g.bench("corral_map_ordered", vs, |b| {
        b.iter(|| {
            for r in pool.map(0..ITEMS, work) {
                black_box(r.unwrap());
            }
        })
    });
    // The same map consumed by internal iteration, as rayon's `for_each` is.
    g.bench("corral_map_ordered_for_each", vs, |b| {
        b.iter(|| {
            pool.map(0..ITEMS, work).for_each(|r| {
                black_box(r.unwrap());
            })
        })
    });
    drop(pool);

    // Not a peer: the calling thread alone, with no pool, no order to keep and nothing
    // yielded back. The floor for any `map` that keeps cheap items on the caller.
    g.bench("floor_plain_loop_one_thread", Role::Reference, |b| {
        b.iter(|| {
            for x in 0..ITEMS {
                black_box(work(x));
            }
        })
    });

    let rayon = rayon::ThreadPoolBuilder::new()
        .num_threads(WORKERS)
        .build()
        .unwrap();
    g.bench("rayon_par_iter_for_each", Role::Peer, |b| {
        b.iter(|| {
            rayon.install(|| {
                (0..ITEMS).into_par_iter().for_each(|x| {
                    black_box(work(x));
                })
            })
        })
    });
    g.bench("rayon_par_iter_map_collect_ordered", Role::Peer, |b| {
        b.iter(|| {
            let v: Vec<u64> = rayon.install(|| (0..ITEMS).into_par_iter().map(work).collect());
            black_box(v);
        })
    });
    // Fairer peers for `map`, which takes any iterator (pulled on the calling thread,
    // lazily) and yields ordered results within a bounded window. A `Range` lets rayon
    // split by index with no per-item hand-off at all; these two do not:
    // `par_bridge` pulls from a plain iterator as `map` does (but is unordered and
    // yields nothing back), and `par_iter` over a Vec collected in order needs the
    // whole input materialised up front (the Vec is built inside the timing).
    g.bench("rayon_par_bridge_for_each", Role::Peer, |b| {
        b.iter(|| {
            rayon.install(|| {
                (0..ITEMS).par_bridge().for_each(|x| {
                    black_box(work(x));
                })
            })
        })
    });
    g.bench("rayon_vec_par_iter_map_collect_ordered", Role::Peer, |b| {
        b.iter(|| {
            let input: Vec<u64> = (0..ITEMS).collect();
            let v: Vec<u64> = rayon.install(|| input.par_iter().map(|&x| work(x)).collect());
            black_box(v);
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! { name = benches; config = config(); targets = tiny_tasks, map_tiny_items, map_small_items }
criterion_main!(benches);
