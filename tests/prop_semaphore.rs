//! Property test: the semaphore's accounting against a counter model.
//!
//! Random sequences of `try_acquire_many`, zero-timeout `acquire_many_timeout`,
//! releases (drops), `forget`, `add_permits`, `set_capacity` and `close`, on one
//! thread, are applied both to a `Semaphore` and to a model that is nothing but the
//! documented arithmetic: capacity, available permits, the debt of a pending shrink,
//! the permits held. After every step `available()`, `capacity()`, the stats and every
//! refusal must match the model exactly, and `in_use + available == capacity + debt`.

use std::time::Duration;

use corral::{
    semaphore::{AcquireError, Permit, TryAcquireError},
    Semaphore,
};
use proptest::prelude::*;

const MAX: usize = Semaphore::MAX_PERMITS;

#[derive(Debug, Clone)]
enum Op {
    TryAcquire(usize),
    AcquireZeroTimeout(usize),
    Release(prop::sample::Index),
    Forget(prop::sample::Index),
    AddPermits(usize),
    SetCapacity(usize),
    Close,
}

/// Counts: mostly small, sometimes at or past the maximum.
fn count() -> impl Strategy<Value = usize> {
    prop_oneof![
        8 => 0usize..8,
        1 => Just(MAX),
        1 => prop_oneof![Just(MAX - 1), Just(MAX + 1), Just(usize::MAX)],
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => count().prop_map(Op::TryAcquire),
        2 => count().prop_map(Op::AcquireZeroTimeout),
        5 => any::<prop::sample::Index>().prop_map(Op::Release),
        1 => any::<prop::sample::Index>().prop_map(Op::Forget),
        2 => count().prop_map(Op::AddPermits),
        2 => count().prop_map(Op::SetCapacity),
        1 => Just(Op::Close),
    ]
}

#[derive(Debug, Default)]
struct Model {
    capacity: usize,
    available: usize,
    debt: usize,
    held: Vec<usize>,
    closed: bool,
    above_capacity: usize,
    timed_out: usize,
}

impl Model {
    /// What a non-queueing acquire of `n` decides, before the kind of refusal.
    fn take(&mut self, n: usize) -> Result<(), Refusal> {
        if n == 0 {
            return if self.closed {
                Err(Refusal::Closed)
            } else {
                Ok(())
            };
        }
        if self.closed {
            return Err(Refusal::Closed);
        }
        if self.available >= n {
            self.available -= n;
            return Ok(());
        }
        if n > self.capacity {
            self.above_capacity += 1;
            return Err(Refusal::Above(self.capacity));
        }
        Err(Refusal::Busy)
    }

    fn give_back(&mut self, n: usize) {
        let paid = n.min(self.debt);
        self.debt -= paid;
        self.available += n - paid;
    }

    fn forget(&mut self, n: usize) {
        let from_capacity = n.min(self.capacity);
        self.capacity -= from_capacity;
        self.debt = self.debt.saturating_sub(n - from_capacity);
    }

    fn add(&mut self, n: usize) -> bool {
        match self.capacity.checked_add(n).filter(|&c| c <= MAX) {
            None => false,
            Some(capacity) => {
                self.capacity = capacity;
                self.give_back(n);
                true
            }
        }
    }

    fn set_capacity(&mut self, capacity: usize) -> Option<usize> {
        if capacity > MAX {
            return None;
        }
        let old = self.capacity;
        if capacity >= old {
            self.give_back(capacity - old);
        } else {
            let shrink = old - capacity;
            let take = self.available.min(shrink);
            self.available -= take;
            self.debt += shrink - take;
        }
        self.capacity = capacity;
        Some(old)
    }
}

#[derive(Debug, PartialEq)]
enum Refusal {
    Closed,
    Above(usize),
    Busy,
}

fn run(initial: usize, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let sem = Semaphore::new(initial);
    let mut model = Model {
        capacity: initial,
        available: initial,
        ..Model::default()
    };
    let mut held: Vec<Permit<'_>> = Vec::new();
    for (step, op) in ops.into_iter().enumerate() {
        match &op {
            &Op::TryAcquire(n) => {
                let real = sem.try_acquire_many(n);
                let want = model.take(n);
                match (real, want) {
                    (Ok(p), Ok(())) => {
                        prop_assert_eq!(p.num_permits(), n);
                        model.held.push(n);
                        held.push(p);
                    }
                    (Err(TryAcquireError::Closed), Err(Refusal::Closed)) => {}
                    (Err(TryAcquireError::NoPermits), Err(Refusal::Busy)) => {}
                    (
                        Err(TryAcquireError::AboveCapacity {
                            requested,
                            capacity,
                        }),
                        Err(Refusal::Above(c)),
                    ) => prop_assert_eq!((requested, capacity), (n, c)),
                    (real, want) => {
                        prop_assert!(false, "step {step} {op:?}: real {real:?}, model {want:?}")
                    }
                }
            }
            &Op::AcquireZeroTimeout(n) => {
                let real = sem.acquire_many_timeout(n, Duration::ZERO);
                let mut want = model.take(n);
                if want == Err(Refusal::Busy) {
                    model.timed_out += 1;
                }
                match (real, want.as_mut()) {
                    (Ok(p), Ok(())) => {
                        prop_assert_eq!(p.num_permits(), n);
                        model.held.push(n);
                        held.push(p);
                    }
                    (Err(AcquireError::Closed), Err(Refusal::Closed)) => {}
                    (Err(AcquireError::Timeout), Err(Refusal::Busy)) => {}
                    (
                        Err(AcquireError::AboveCapacity {
                            requested,
                            capacity,
                        }),
                        Err(Refusal::Above(c)),
                    ) => prop_assert_eq!((requested, capacity), (n, *c)),
                    (real, want) => {
                        prop_assert!(false, "step {step} {op:?}: real {real:?}, model {want:?}")
                    }
                }
            }
            Op::Release(i) => {
                if !held.is_empty() {
                    let i = i.index(held.len());
                    drop(held.swap_remove(i));
                    let n = model.held.swap_remove(i);
                    model.give_back(n);
                }
            }
            Op::Forget(i) => {
                if !held.is_empty() {
                    let i = i.index(held.len());
                    held.swap_remove(i).forget();
                    let n = model.held.swap_remove(i);
                    model.forget(n);
                }
            }
            &Op::AddPermits(n) => {
                let real = sem.add_permits(n);
                let want = model.add(n);
                prop_assert_eq!(real.is_ok(), want, "step {} {:?}", step, op);
                if let Err(err) = real {
                    prop_assert_eq!(err.field(), "permits");
                }
            }
            &Op::SetCapacity(c) => {
                let real = sem.set_capacity(c);
                let want = model.set_capacity(c);
                prop_assert_eq!(real.as_ref().ok().copied(), want, "step {} {:?}", step, op);
                if let Err(err) = real {
                    prop_assert_eq!(err.field(), "capacity");
                }
            }
            Op::Close => {
                prop_assert_eq!(sem.close(), !model.closed);
                model.closed = true;
            }
        }
        let in_use: usize = model.held.iter().sum();
        prop_assert_eq!(in_use + model.available, model.capacity + model.debt);
        prop_assert!(model.debt == 0 || model.available == 0);
        prop_assert_eq!(sem.available(), model.available, "step {} {:?}", step, op);
        prop_assert_eq!(sem.capacity(), model.capacity, "step {} {:?}", step, op);
        let s = sem.stats();
        prop_assert_eq!(
            (s.capacity, s.available, s.in_use, s.waiting, s.closed),
            (model.capacity, model.available, in_use, 0, model.closed),
            "step {} {:?}",
            step,
            op
        );
        prop_assert_eq!(
            (
                s.above_capacity,
                s.timed_out,
                s.waited,
                s.cancelled,
                s.handoffs
            ),
            (model.above_capacity, model.timed_out, 0, 0, 0),
            "step {} {:?}",
            step,
            op
        );
    }
    // Every permit back: any shrink is paid off and all the capacity is free.
    drop(held);
    prop_assert_eq!(
        (sem.available(), sem.capacity()),
        (model.capacity, model.capacity)
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn semaphore_accounting_matches_the_counter_model(
        initial in prop_oneof![4 => 0usize..6, 1 => Just(MAX)],
        ops in prop::collection::vec(op(), 1..80),
    ) {
        run(initial, ops)?;
    }
}
