//! Cancel-token hot paths: polling `is_cancelled`, creating and dropping a child, and
//! registering a wake-up callback. No peer offers a blocking token tree; the floor is
//! an `AtomicBool` load.

mod common;

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Group, Role};
use corral::CancelToken;
use criterion::{criterion_group, criterion_main, Criterion};

fn is_cancelled(c: &mut Criterion) {
    let mut g = Group::new(c, "cancel/is_cancelled");
    let token = CancelToken::new();
    let vs_floor = Role::Corral {
        vs: &["atomic_bool_floor"],
    };
    g.bench("corral", vs_floor, |b| {
        b.iter(|| black_box(&token).is_cancelled())
    });
    let with_deadline = CancelToken::with_timeout(Duration::from_secs(3600));
    // Reads the clock on every poll: a different work from the flag load.
    g.bench("corral_with_deadline", Role::Corral { vs: &[] }, |b| {
        b.iter(|| black_box(&with_deadline).is_cancelled())
    });
    let flag = AtomicBool::new(false);
    g.bench("atomic_bool_floor", Role::Floor, |b| {
        b.iter(|| black_box(&flag).load(Ordering::Acquire))
    });
    g.finish();
}

fn child_lifecycle(c: &mut Criterion) {
    let mut g = Group::new(c, "cancel/child_create_drop");
    let parent = CancelToken::new();
    g.bench("corral", Role::Corral { vs: &[] }, |b| {
        b.iter(|| drop(black_box(&parent).child()))
    });
    g.bench("corral_on_cancel_register", Role::Corral { vs: &[] }, |b| {
        b.iter(|| drop(black_box(&parent).on_cancel(|| ())))
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! { name = benches; config = config(); targets = is_cancelled, child_lifecycle }
criterion_main!(benches);
