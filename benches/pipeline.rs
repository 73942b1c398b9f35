//! Pipeline hand-off cost: 100,000 u64 through 3 one-worker stages with queues of 64,
//! corral beside a hand-rolled `crossbeam_channel::bounded` pipeline and a
//! `std::sync::mpsc::sync_channel` one (both in `std::thread::scope`: a source thread
//! feeding the first of 4 queues, 3 stage threads, the sink on the caller). corral
//! (with its default `Overflow::Block`) has no source thread and no first queue: the
//! first stage's worker pulls the source itself, so it runs 3 threads plus the
//! caller. Then corral with batching (same capacity in items), and 4-worker stages
//! on a CPU-heavy map beside rayon's `par_iter` (a reference: rayon has no queues, no
//! backpressure and no report). Last, a pushed input: 2 producer threads push the
//! same 100,000 items into a spawned pipeline of 3 one-worker stages (queues of 64),
//! beside the same threads and queues on hand-rolled crossbeam channels.

mod common;

use std::hint::black_box;
use std::time::Duration;

use common::{Group, Role};
use corral::Pipeline;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rayon::prelude::*;

const N: u64 = 100_000;
const CAP: usize = 64;

fn step(x: u64) -> u64 {
    x.wrapping_mul(3).wrapping_add(1)
}

fn corral_3x1(batch: usize) -> u64 {
    let mut sum = 0u64;
    Pipeline::from_iter(0..N)
        .stage("a", 1, step)
        .stage("b", 1, step)
        .stage("c", 1, step)
        .capacity(CAP)
        .batch(batch)
        .run(|x| sum = sum.wrapping_add(x))
        .expect("bench pipeline");
    sum
}

fn crossbeam_3x1() -> u64 {
    use crossbeam_channel::bounded;
    std::thread::scope(|s| {
        let (tx0, rx0) = bounded::<u64>(CAP);
        let (tx1, rx1) = bounded::<u64>(CAP);
        let (tx2, rx2) = bounded::<u64>(CAP);
        let (tx3, rx3) = bounded::<u64>(CAP);
        s.spawn(move || (0..N).for_each(|x| tx0.send(x).unwrap()));
        for (rx, tx) in [(rx0, tx1), (rx1, tx2), (rx2, tx3)] {
            s.spawn(move || rx.iter().for_each(|x| tx.send(step(x)).unwrap()));
        }
        rx3.iter().fold(0u64, u64::wrapping_add)
    })
}

fn std_3x1() -> u64 {
    use std::sync::mpsc::sync_channel;
    std::thread::scope(|s| {
        let (tx0, rx0) = sync_channel::<u64>(CAP);
        let (tx1, rx1) = sync_channel::<u64>(CAP);
        let (tx2, rx2) = sync_channel::<u64>(CAP);
        let (tx3, rx3) = sync_channel::<u64>(CAP);
        s.spawn(move || (0..N).for_each(|x| tx0.send(x).unwrap()));
        for (rx, tx) in [(rx0, tx1), (rx1, tx2), (rx2, tx3)] {
            s.spawn(move || rx.iter().for_each(|x| tx.send(step(x)).unwrap()));
        }
        rx3.iter().fold(0u64, u64::wrapping_add)
    })
}

fn handoff(c: &mut Criterion) {
    let expected = crossbeam_3x1();
    assert_eq!(corral_3x1(1), expected);
    assert_eq!(corral_3x1(16), expected);
    assert_eq!(std_3x1(), expected);
    let mut g = Group::new(c, "pipeline/3_stages_1_worker_cap64");
    let vs = Role::Corral {
        vs: &["crossbeam_bounded", "std_sync_channel"],
    };
    g.sample_size(10);
    g.throughput(Throughput::Elements(N));
    g.bench("corral", vs, |b| b.iter(|| black_box(corral_3x1(1))));
    g.bench("corral_batch16", vs, |b| {
        b.iter(|| black_box(corral_3x1(16)))
    });
    g.bench("corral_batch64", vs, |b| {
        b.iter(|| black_box(corral_3x1(64)))
    });
    g.bench("crossbeam_bounded", Role::Floor, |b| {
        b.iter(|| black_box(crossbeam_3x1()))
    });
    g.bench("std_sync_channel", Role::Peer, |b| {
        b.iter(|| black_box(std_3x1()))
    });
    g.finish();
}

const PRODUCERS: u64 = 2;

/// 2 producer threads push `N` items into a spawned pipeline of 3 one-worker stages;
/// the sink runs on the pipeline's own thread.
fn corral_push_3x1() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let sum = Arc::new(AtomicU64::new(0));
    let total = Arc::clone(&sum);
    let mut acc = 0u64;
    let (input, pipeline) = Pipeline::with_input();
    let running = pipeline
        .stage("a", 1, step)
        .stage("b", 1, step)
        .stage("c", 1, step)
        .capacity(CAP)
        .spawn(move |x| {
            acc = acc.wrapping_add(x);
            total.store(acc, Ordering::Relaxed);
        })
        .expect("bench pipeline");
    std::thread::scope(|s| {
        for p in 0..PRODUCERS {
            let input = input.clone();
            s.spawn(move || {
                (p..N)
                    .step_by(PRODUCERS as usize)
                    .for_each(|x| input.send(x).unwrap())
            });
        }
    });
    drop(input);
    running.join().expect("bench pipeline");
    sum.load(Ordering::Relaxed)
}

/// The same threads and queues by hand: 2 producers into the first of 4 crossbeam
/// queues, 3 stage threads, the sink on a thread of its own.
fn crossbeam_push_3x1() -> u64 {
    use crossbeam_channel::bounded;
    std::thread::scope(|s| {
        let (tx0, rx0) = bounded::<u64>(CAP);
        let (tx1, rx1) = bounded::<u64>(CAP);
        let (tx2, rx2) = bounded::<u64>(CAP);
        let (tx3, rx3) = bounded::<u64>(CAP);
        for (rx, tx) in [(rx0, tx1), (rx1, tx2), (rx2, tx3)] {
            s.spawn(move || rx.iter().for_each(|x| tx.send(step(x)).unwrap()));
        }
        let sink = s.spawn(move || rx3.iter().fold(0u64, u64::wrapping_add));
        std::thread::scope(|p| {
            for first in 0..PRODUCERS {
                let tx = tx0.clone();
                p.spawn(move || {
                    (first..N)
                        .step_by(PRODUCERS as usize)
                        .for_each(|x| tx.send(x).unwrap())
                });
            }
        });
        drop(tx0);
        sink.join().unwrap()
    })
}

fn push(c: &mut Criterion) {
    let expected = crossbeam_3x1();
    assert_eq!(crossbeam_push_3x1(), expected);
    assert_eq!(corral_push_3x1(), expected);
    let mut g = Group::new(c, "pipeline/push_2_producers_3_stages_cap64");
    g.sample_size(10);
    g.throughput(Throughput::Elements(N));
    g.bench(
        "corral_with_input",
        Role::Corral {
            vs: &["crossbeam_bounded"],
        },
        |b| b.iter(|| black_box(corral_push_3x1())),
    );
    g.bench("crossbeam_bounded", Role::Floor, |b| {
        b.iter(|| black_box(crossbeam_push_3x1()))
    });
    g.finish();
}

const HEAVY_N: u64 = 20_000;

/// About a microsecond of integer work.
fn heavy(x: u64) -> u64 {
    (0..400).fold(x, |acc, i| {
        acc.rotate_left(7) ^ acc.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(i)
    })
}

fn cpu_heavy(c: &mut Criterion) {
    let mut g = Group::new(c, "pipeline/cpu_heavy_2_stages_4_workers");
    let vs = Role::Corral { vs: &[] };
    g.sample_size(10);
    g.throughput(Throughput::Elements(HEAVY_N));
    g.bench("corral", vs, |b| {
        b.iter(|| {
            let mut acc = 0u64;
            Pipeline::from_iter(0..HEAVY_N)
                .stage("h1", 4, heavy)
                .stage("h2", 4, heavy)
                .capacity(CAP)
                .run(|x| acc ^= x)
                .expect("bench pipeline");
            black_box(acc)
        })
    });
    g.bench("corral_batch16", vs, |b| {
        b.iter(|| {
            let mut acc = 0u64;
            Pipeline::from_iter(0..HEAVY_N)
                .stage("h1", 4, heavy)
                .stage("h2", 4, heavy)
                .capacity(CAP)
                .batch(16)
                .run(|x| acc ^= x)
                .expect("bench pipeline");
            black_box(acc)
        })
    });
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .build()
        .unwrap();
    g.bench("rayon_par_iter", Role::Reference, |b| {
        b.iter(|| {
            pool.install(|| {
                black_box(
                    (0..HEAVY_N)
                        .into_par_iter()
                        .map(heavy)
                        .map(heavy)
                        .reduce(|| 0, |a, b| a ^ b),
                )
            })
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! { name = benches; config = config(); targets = handoff, cpu_heavy, push }
criterion_main!(benches);
