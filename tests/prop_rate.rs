#![cfg(not(loom))]
//! Property tests of the rate limiter's GCRA core against a reference model.
//!
//! The limiter runs on a `ManualClock` through its public API (`check_n`,
//! `reserve_n`, `Reservation::cancel`, `set_rate`, `set_burst`, `available`) while a
//! model written here in the plainest form of the virtual scheduling algorithm, in
//! `u128` (so nothing it computes can wrap or saturate), makes the same decisions.
//! Every decision must be identical, and, independently of the model, the cells
//! actually admitted (checks, and reservations whose slot came without a cancel
//! before it) must never exceed `burst + window / T` over any window.

use std::time::Duration;

use corral::{
    clock::ManualClock,
    rate::{CheckError, Reservation},
    RateLimiter,
};
use proptest::prelude::*;

/// The last nanosecond offset a `u64` holds: the end of a `ManualClock`.
const END: u128 = u64::MAX as u128;
/// The last offset a TAT may hold: the limiter keeps the last `u64` for itself.
const TAT_END: u128 = END - 1;

#[derive(Clone, Debug)]
enum Op {
    /// Advance the clock by this many nanoseconds.
    Advance(u64),
    /// Jump to this many nanoseconds before the clock's end (near the horizon).
    NearEnd(u64),
    Check(u32),
    Reserve(u32),
    /// Cancel the pending reservation at this index (modulo their number).
    Cancel(usize),
    /// Drop the pending reservation at this index (the claim stands).
    Drop(usize),
    SetInterval(u64),
    SetBurst(u32),
}

fn op(interval: u64) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..interval.saturating_mul(3)).prop_map(Op::Advance),
        1 => Just(Op::Advance(0)),
        1 => (0..interval.saturating_mul(20)).prop_map(Op::NearEnd),
        6 => (0u32..6).prop_map(Op::Check),
        4 => (0u32..6).prop_map(Op::Reserve),
        3 => any::<usize>().prop_map(Op::Cancel),
        1 => any::<usize>().prop_map(Op::Drop),
        1 => (1..interval.saturating_mul(3)).prop_map(Op::SetInterval),
        1 => (1u32..6).prop_map(Op::SetBurst),
    ]
}

/// A reservation as the model keeps it.
#[derive(Clone, Debug)]
struct Claim {
    before: u128,
    after: u128,
    ready: u128,
    span: u128,
    epoch: u64,
    cells: u32,
    never: bool,
}

/// The reference GCRA: the theoretical arrival time, unbounded, and the rules of the
/// crate's documentation written out naively.
#[derive(Debug)]
struct Model {
    now: u128,
    tat: u128,
    interval: u128,
    burst: u128,
    epoch: u64,
}

#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Admit,
    TooMany,
    /// Wait this many nanoseconds (`None`: never).
    Later(Option<u128>),
}

impl Model {
    /// The limiter's time stops at the last instant a full burst still fits.
    fn judged(&self) -> u128 {
        self.now.min(TAT_END - self.burst * self.interval)
    }

    /// The new TAT and the ready offset of `n` cells now, or `None` past the end.
    fn step(&self, n: u32) -> Option<(u128, u128)> {
        let new_tat = self.tat.max(self.judged()) + u128::from(n) * self.interval;
        if new_tat > TAT_END {
            return None;
        }
        let ready = new_tat.saturating_sub(self.burst * self.interval);
        Some((new_tat, ready.max(self.now)))
    }

    fn check(&mut self, n: u32) -> Decision {
        if n == 0 {
            return Decision::Admit;
        }
        if u128::from(n) > self.burst {
            return Decision::TooMany;
        }
        match self.step(n) {
            None => Decision::Later(None),
            Some((_, ready)) if ready > self.now => Decision::Later(Some(ready - self.now)),
            Some((new_tat, _)) => {
                self.tat = new_tat;
                Decision::Admit
            }
        }
    }

    fn reserve(&mut self, n: u32) -> Option<Claim> {
        if u128::from(n) > self.burst {
            return None;
        }
        let span = u128::from(n) * self.interval;
        Some(match self.step(n) {
            None => Claim {
                before: self.tat,
                after: self.tat,
                ready: u128::MAX,
                span: 0,
                epoch: self.epoch,
                cells: n,
                never: true,
            },
            Some((new_tat, ready)) => {
                let before = std::mem::replace(&mut self.tat, new_tat);
                Claim {
                    before,
                    after: new_tat,
                    ready,
                    span,
                    epoch: self.epoch,
                    cells: n,
                    never: false,
                }
            }
        })
    }

    /// Nothing once the slot has passed, after a reconfiguration, or while a claim
    /// stands after this one; otherwise the claim is undone exactly.
    fn cancel(&mut self, claim: &Claim) -> bool {
        if claim.span == 0 || claim.epoch != self.epoch || claim.ready < self.now {
            return false;
        }
        if self.tat != claim.after {
            return false;
        }
        self.tat = claim.before;
        true
    }

    fn available(&self) -> u128 {
        let debt = self.tat.saturating_sub(self.judged());
        self.burst.saturating_sub(debt.div_ceil(self.interval))
    }

    /// Keeps the cells in use: the debt ahead of now, scaled to the new interval.
    fn set_interval(&mut self, interval: u128) {
        if interval == self.interval {
            return;
        }
        self.epoch += 1;
        let now = self.now;
        let debt = self.tat.saturating_sub(now);
        self.converted((now + debt * interval / self.interval).min(TAT_END));
        self.interval = interval;
    }

    /// Keeps the cells available now.
    fn set_burst(&mut self, burst: u128) {
        if burst == self.burst {
            return;
        }
        self.epoch += 1;
        let base = self.tat.max(self.now);
        self.converted(if burst > self.burst {
            (base + (burst - self.burst) * self.interval).min(TAT_END)
        } else {
            base.saturating_sub((self.burst - burst) * self.interval)
                .max(self.now)
                .min(TAT_END)
        });
        self.burst = burst;
    }

    /// A reconfiguration never puts back the TAT it took out: one nanosecond earlier
    /// when the capacity is full (it reads the same), one later otherwise.
    fn converted(&mut self, tat: u128) {
        self.tat = if tat != self.tat {
            tat
        } else if tat <= self.now {
            tat.saturating_sub(1)
        } else {
            (tat + 1).min(TAT_END)
        };
    }
}

/// Cells used at an instant, under one configuration.
#[derive(Clone, Copy, Debug)]
struct Used {
    at: u128,
    cells: u32,
}

/// Fails if more than `burst + window / interval` cells were used in any window.
fn assert_within_limit(used: &[Used], interval: u128, burst: u128) -> Result<(), TestCaseError> {
    let mut used = used.to_vec();
    used.sort_by_key(|u| u.at);
    for (i, first) in used.iter().enumerate() {
        let mut total = 0u128;
        for last in &used[i..] {
            total += u128::from(last.cells);
            let bound = burst + (last.at - first.at) / interval;
            prop_assert!(
                total <= bound,
                "{total} cells used in [{}, {}] with burst {burst} and interval {interval}: {used:?}",
                first.at,
                last.at
            );
        }
    }
    Ok(())
}

/// A claim as the test tracks it: the model's view and when (if) it was cancelled.
struct Record {
    claim: Claim,
    cancelled_at: Option<u128>,
}

impl Record {
    /// Whether its cells count as used by `now`: its slot has come and it was not
    /// cancelled at or before that slot (a cancel at the slot's instant may give back).
    fn used_by(&self, now: u128) -> bool {
        !self.claim.never
            && match self.cancelled_at {
                None => self.claim.ready <= now,
                Some(at) => at > self.claim.ready,
            }
    }
}

/// Runs `ops` on a limiter. With `model`, every decision is compared with the
/// reference model's; without, the test trusts only what the limiter reports (its
/// decisions, delays and cancels) and checks the window bound alone.
fn run(interval: u64, burst: u32, ops: Vec<Op>, compare: bool) -> Result<(), TestCaseError> {
    let clock = ManualClock::new();
    let limiter = RateLimiter::with_period(Duration::from_nanos(interval))
        .burst(burst)
        .clock(clock.clone())
        .build()
        .expect("a valid configuration");
    let mut model = Model {
        now: 0,
        tat: 0,
        interval: u128::from(interval),
        burst: u128::from(burst),
        epoch: 0,
    };
    // Live reservations, with the index of their record.
    let mut pending: Vec<(Reservation<'_, ManualClock>, usize)> = Vec::new();
    let mut records: Vec<Record> = Vec::new();
    // Cells admitted by checks, with the configuration epoch they were admitted under.
    let mut checked: Vec<(Used, u64)> = Vec::new();
    for op in ops {
        match op {
            Op::Advance(d) => {
                clock.advance(Duration::from_nanos(d));
                model.now = (model.now + u128::from(d)).min(END);
            }
            Op::NearEnd(before_end) => {
                let target = END - u128::from(before_end);
                if target > model.now {
                    let d = u64::try_from(target - model.now).expect("fits");
                    clock.advance(Duration::from_nanos(d));
                    model.now = target;
                }
            }
            Op::Check(n) => {
                let got = match limiter.check_n(n) {
                    Ok(()) => Decision::Admit,
                    Err(CheckError::InsufficientCapacity(_)) => Decision::TooMany,
                    Err(CheckError::NotUntil(e)) if e.is_never() => Decision::Later(None),
                    Err(CheckError::NotUntil(e)) => Decision::Later(Some(e.wait_time().as_nanos())),
                    Err(other) => return Err(TestCaseError::fail(format!("{other:?}"))),
                };
                let want = model.check(n);
                if compare {
                    prop_assert_eq!(&got, &want, "check_n({}) at {}", n, model.now);
                }
                if got == Decision::Admit && n > 0 {
                    checked.push((
                        Used {
                            at: model.now,
                            cells: n,
                        },
                        model.epoch,
                    ));
                }
            }
            Op::Reserve(n) => {
                let got = limiter.reserve_n(n);
                let mut want = model.reserve(n);
                if !compare {
                    // The limiter's own report stands in for the model.
                    want = got.as_ref().ok().map(|r| Claim {
                        before: 0,
                        after: 0,
                        ready: model.now + r.delay().as_nanos(),
                        span: 0,
                        epoch: model.epoch,
                        cells: n,
                        never: r.is_never(),
                    });
                }
                match (got, want) {
                    (Err(_), None) => {}
                    (Ok(r), Some(claim)) => {
                        prop_assert_eq!(r.is_never(), claim.never, "reserve_n({}) never", n);
                        if !claim.never {
                            prop_assert_eq!(
                                r.delay().as_nanos(),
                                claim.ready - model.now,
                                "reserve_n({}) at {}",
                                n,
                                model.now
                            );
                        }
                        records.push(Record {
                            claim,
                            cancelled_at: None,
                        });
                        pending.push((r, records.len() - 1));
                    }
                    (got, want) => {
                        return Err(TestCaseError::fail(format!(
                            "reserve_n({n}): limiter {:?}, model {want:?}",
                            got.map(|r| r.delay())
                        )))
                    }
                }
            }
            Op::Cancel(i) if !pending.is_empty() => {
                let (r, index) = pending.remove(i % pending.len());
                let got = r.cancel();
                let record = &mut records[index];
                let want = model.cancel(&record.claim);
                if compare {
                    prop_assert_eq!(got, want, "cancel of {:?} at {}", record.claim, model.now);
                }
                record.cancelled_at = Some(model.now);
            }
            Op::Drop(i) if !pending.is_empty() => {
                // Dropped, the claim stands: its cells are used when its slot comes.
                let (r, _) = pending.remove(i % pending.len());
                drop(r);
            }
            Op::Cancel(_) | Op::Drop(_) => {}
            Op::SetInterval(t) => {
                limiter
                    .set_rate(1, Duration::from_nanos(t))
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                model.set_interval(u128::from(t));
            }
            Op::SetBurst(b) => {
                limiter
                    .set_burst(b)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                model.set_burst(u128::from(b));
            }
        }
        if compare {
            prop_assert_eq!(
                u128::from(limiter.available()),
                model.available(),
                "available at {}",
                model.now
            );
        }
        // The cells used under the current configuration, over every window.
        let mut used: Vec<Used> = checked
            .iter()
            .filter(|(_, epoch)| *epoch == model.epoch)
            .map(|(used, _)| *used)
            .collect();
        used.extend(
            records
                .iter()
                .filter(|r| r.claim.epoch == model.epoch && r.used_by(model.now))
                .map(|r| Used {
                    at: r.claim.ready,
                    cells: r.claim.cells,
                }),
        );
        assert_within_limit(&used, model.interval, model.burst)?;
    }
    Ok(())
}

proptest! {
    // 512 cases by default; `PROPTEST_CASES` overrides it for a longer run.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|cases| cases.parse().ok())
            .unwrap_or(512),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_gcra_core_matches_the_reference_model_and_never_over_admits(
        (interval, burst, ops) in (1u64..2_000, 1u32..6).prop_flat_map(|(interval, burst)| {
            (Just(interval), Just(burst), prop::collection::vec(op(interval), 1..60))
        })
    ) {
        run(interval, burst, ops, true)?;
    }

    /// The same sequences judged only by the window bound: no model, so a rule the
    /// model shares with the limiter cannot hide an over-admission.
    #[test]
    fn admitted_cells_never_exceed_burst_plus_rate_times_window(
        (interval, burst, ops) in (1u64..2_000, 1u32..6).prop_flat_map(|(interval, burst)| {
            (Just(interval), Just(burst), prop::collection::vec(op(interval), 1..60))
        })
    ) {
        run(interval, burst, ops, false)?;
    }
}
