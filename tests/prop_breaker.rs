//! Property test: the breaker's state machine against a reference model.
//!
//! The model below is the breaker's documented semantics written as plainly as
//! possible (every outcome kept in a list, every rate computed from scratch, time as a
//! saturating `u64` of nanoseconds with `u64::MAX` as "never"). Random configurations
//! (consecutive failures, a failure rate over a count or a time window, optionally a
//! slow-call rate, backoff, several half-open trials) are driven by random sequences
//! of calls (good or failing, fast or slow), guards held and reported later (success,
//! failure, ignore, drop), `ManualClock` advances (up to past the time horizon),
//! `trip`, `reset`, `force_open` and `disable`. After every step the breaker and the
//! model must agree on the state, on every admit/refuse decision (with the same
//! `retry_after`), and on the counters.

use std::time::Duration;

use corral::{
    breaker::{BreakerError, BreakerGuard, State, Window},
    clock::{Clock, ManualClock},
    CircuitBreaker,
};
use proptest::prelude::*;

const MS: u64 = 1_000_000;

#[derive(Clone, Copy, Debug)]
enum Policy {
    Consecutive(u32),
    CountRate { rate: f64, size: u32 },
    TimeRate { rate: f64, width: u64 },
}

#[derive(Clone, Copy, Debug)]
struct Config {
    policy: Policy,
    minimum: u32,
    slow: Option<(u64, f64)>,
    open_for: u64,
    backoff: Option<(f64, u64)>,
    k: u32,
    half_open_timeout: u64,
}

fn rate() -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.25), Just(0.5), Just(0.75), Just(1.0)]
}

fn config() -> impl Strategy<Value = Config> {
    let policy = prop_oneof![
        (1u32..5).prop_map(Policy::Consecutive),
        (rate(), 1u32..8).prop_map(|(rate, size)| Policy::CountRate { rate, size }),
        (rate(), 1u64..4).prop_map(|(rate, w)| Policy::TimeRate {
            rate,
            width: w * 500 * MS
        }),
    ];
    (
        policy,
        1u32..8,
        prop::option::weighted(0.3, (1u64..3, rate())),
        1u64..5,
        prop::option::weighted(0.5, (prop_oneof![Just(1.0), Just(1.5), Just(2.0)], 1u64..4)),
        1u32..4,
        1u64..8,
    )
        .prop_map(|(policy, minimum, slow, open_s, backoff, k, timeout_s)| {
            let open_for = open_s * 1_000 * MS;
            let minimum = match policy {
                Policy::CountRate { size, .. } => minimum.min(size),
                _ => minimum,
            };
            Config {
                policy,
                minimum,
                slow: slow.map(|(s, t)| (s * 1_000 * MS, t)),
                open_for,
                backoff: backoff.map(|(m, times)| (m, open_for * times)),
                k,
                half_open_timeout: timeout_s * 1_000 * MS,
            }
        })
}

#[derive(Clone, Debug)]
enum Op {
    /// `call`, failing or not, taking this long.
    Call {
        good: bool,
        took: u64,
    },
    /// `try_acquire`, guard kept.
    Hold,
    /// Report a held guard: 0 success, 1 failure, 2 ignore, 3 drop.
    Report(prop::sample::Index, u8),
    Advance(u64),
    Trip,
    Reset,
    ForceOpen,
    Disable,
}

fn op() -> impl Strategy<Value = Op> {
    let took = prop_oneof![4 => Just(0u64), 1 => (1u64..4).prop_map(|s| s * 1_000 * MS)];
    let advance = prop_oneof![
        20 => (1u64..12).prop_map(|h| h * 500 * MS),
        1 => Just(u64::MAX),
    ];
    prop_oneof![
        30 => (any::<bool>(), took).prop_map(|(good, took)| Op::Call { good, took }),
        6 => Just(Op::Hold),
        6 => (any::<prop::sample::Index>(), 0u8..4).prop_map(|(i, how)| Op::Report(i, how)),
        12 => advance.prop_map(Op::Advance),
        2 => Just(Op::Trip),
        2 => Just(Op::Reset),
        1 => Just(Op::ForceOpen),
        1 => Just(Op::Disable),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Refusal {
    Open(Duration),
    Full,
    Forced,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Closed,
    Trial,
    Disabled,
}

#[derive(Clone, Copy, Debug)]
struct ModelPermit {
    kind: Kind,
    epoch: u64,
    start: u64,
    slots: u64,
}

#[derive(Debug, Default, PartialEq, Clone, Copy)]
struct Counts {
    successes: u64,
    failures: u64,
    slow: u64,
    rejected: u64,
    trips: u64,
}

struct Model {
    cfg: Config,
    state: State,
    epoch: u64,
    open_for: u64,
    open_until: u64,
    half_open_since: u64,
    in_flight: u32,
    slots: u64,
    trial_ok: u32,
    consecutive: u64,
    /// `(time, failed, slow)` since the breaker last closed.
    outcomes: Vec<(u64, bool, bool)>,
    counts: Counts,
}

impl Model {
    fn new(cfg: Config) -> Self {
        Model {
            cfg,
            state: State::Closed,
            epoch: 0,
            open_for: cfg.open_for,
            open_until: 0,
            half_open_since: 0,
            in_flight: 0,
            slots: 0,
            trial_ok: 0,
            consecutive: 0,
            outcomes: Vec::new(),
            counts: Counts::default(),
        }
    }

    fn rated(&self) -> bool {
        !matches!(self.cfg.policy, Policy::Consecutive(_)) || self.cfg.slow.is_some()
    }

    fn go(&mut self, to: State, now: u64) {
        self.state = to;
        self.epoch += 1;
        self.trial_ok = 0;
        if !matches!(to, State::Open | State::HalfOpen) {
            self.in_flight = 0;
            self.slots += 1;
        }
        match to {
            State::Open => {
                self.open_until = now.saturating_add(self.open_for);
                self.counts.trips += 1;
            }
            State::HalfOpen => self.half_open_since = now,
            State::Closed => {
                self.open_for = self.cfg.open_for;
                self.consecutive = 0;
                self.outcomes.clear();
            }
            _ => {}
        }
    }

    fn reopen(&mut self, now: u64) {
        if let Some((m, max)) = self.cfg.backoff {
            let longer = (self.open_for as f64 * m) as u64;
            self.open_for = longer.min(max).max(self.open_for);
        }
        self.go(State::Open, now);
    }

    fn tick(&mut self, now: u64) {
        // `u64::MAX`: an open period past the horizon, which only a reset ends.
        if self.state == State::Open && self.open_until != u64::MAX && now >= self.open_until {
            self.go(State::HalfOpen, now);
        }
        if self.state == State::HalfOpen
            && now.saturating_sub(self.half_open_since) >= self.cfg.half_open_timeout
        {
            self.in_flight = 0;
            self.slots += 1;
            self.reopen(now);
        }
    }

    fn state(&mut self, now: u64) -> State {
        self.tick(now);
        self.state
    }

    fn acquire(&mut self, now: u64) -> Result<ModelPermit, Refusal> {
        self.tick(now);
        let mut permit = ModelPermit {
            kind: Kind::Closed,
            epoch: self.epoch,
            start: now,
            slots: self.slots,
        };
        let refused = match self.state {
            State::Closed => return Ok(permit),
            State::Disabled => {
                permit.kind = Kind::Disabled;
                return Ok(permit);
            }
            State::HalfOpen if self.in_flight + self.trial_ok < self.cfg.k => {
                self.in_flight += 1;
                permit.kind = Kind::Trial;
                return Ok(permit);
            }
            State::HalfOpen => Refusal::Full,
            State::ForcedOpen => Refusal::Forced,
            _ if self.open_until == u64::MAX => Refusal::Open(Duration::MAX),
            _ => Refusal::Open(Duration::from_nanos(self.open_until - now)),
        };
        self.counts.rejected += 1;
        Err(refused)
    }

    /// `outcome`: Some(true) success, Some(false) failure, None ignored.
    fn record(&mut self, p: ModelPermit, outcome: Option<bool>, now: u64) {
        let slow = self
            .cfg
            .slow
            .is_some_and(|(limit, _)| now - p.start > limit);
        match outcome {
            Some(true) => self.counts.successes += 1,
            Some(false) => self.counts.failures += 1,
            None => {}
        }
        if outcome.is_some() && slow {
            self.counts.slow += 1;
        }
        match p.kind {
            Kind::Disabled => {}
            Kind::Trial => {
                self.tick(now);
                if p.slots == self.slots {
                    self.in_flight -= 1;
                }
                if p.epoch != self.epoch {
                    return;
                }
                match outcome {
                    None => {}
                    Some(true) if !slow => {
                        self.trial_ok += 1;
                        if self.trial_ok >= self.cfg.k {
                            self.go(State::Closed, now);
                        }
                    }
                    _ => self.reopen(now),
                }
            }
            Kind::Closed => {
                let Some(good) = outcome else { return };
                if p.epoch != self.epoch {
                    return;
                }
                if let Policy::Consecutive(n) = self.cfg.policy {
                    if good {
                        self.consecutive = 0;
                    } else {
                        self.consecutive += 1;
                        if self.consecutive >= u64::from(n) {
                            self.go(State::Open, now);
                            return;
                        }
                    }
                }
                if !self.rated() {
                    return;
                }
                self.outcomes.push((now, !good, slow));
                let (calls, failures, slows) = self.window(now);
                if calls >= self.cfg.minimum as usize && calls > 0 {
                    let c = calls as f64;
                    let rate = match self.cfg.policy {
                        Policy::CountRate { rate, .. } | Policy::TimeRate { rate, .. } => {
                            Some(rate)
                        }
                        Policy::Consecutive(_) => None,
                    };
                    let tripped = rate.is_some_and(|t| failures as f64 / c >= t)
                        || self.cfg.slow.is_some_and(|(_, t)| slows as f64 / c >= t);
                    if tripped {
                        self.go(State::Open, now);
                    }
                }
            }
        }
    }

    fn window(&self, now: u64) -> (usize, usize, usize) {
        let recent: Vec<_> = match self.cfg.policy {
            Policy::TimeRate { width, .. } => self
                .outcomes
                .iter()
                .filter(|(t, _, _)| now / width - t / width < 10)
                .collect(),
            Policy::CountRate { size, .. } => {
                self.outcomes.iter().rev().take(size as usize).collect()
            }
            // A slow-call policy alone: the default count window of 100.
            Policy::Consecutive(_) => self.outcomes.iter().rev().take(100).collect(),
        };
        let failures = recent.iter().filter(|o| o.1).count();
        let slows = recent.iter().filter(|o| o.2).count();
        (recent.len(), failures, slows)
    }
}

fn build(cfg: Config, clock: &ManualClock) -> CircuitBreaker {
    let mut b = CircuitBreaker::builder()
        .clock(clock.clone())
        .open_for(Duration::from_nanos(cfg.open_for))
        .half_open_calls(cfg.k)
        .half_open_timeout(Duration::from_nanos(cfg.half_open_timeout))
        .minimum_calls(cfg.minimum);
    match cfg.policy {
        Policy::Consecutive(n) => b = b.consecutive_failures(n),
        Policy::CountRate { rate, size } => b = b.failure_rate(rate).window(Window::Count(size)),
        Policy::TimeRate { rate, width } => {
            b = b
                .failure_rate(rate)
                .window(Window::Time(Duration::from_nanos(width * 10)))
        }
    }
    if let Some((d, t)) = cfg.slow {
        b = b.slow_call(Duration::from_nanos(d), t);
    }
    if let Some((m, max)) = cfg.backoff {
        b = b.backoff(m, Duration::from_nanos(max));
    }
    b.build().unwrap()
}

fn refusal<E>(e: BreakerError<E>) -> Option<Refusal> {
    match e {
        BreakerError::Open { retry_after } => Some(Refusal::Open(retry_after)),
        BreakerError::HalfOpenFull => Some(Refusal::Full),
        BreakerError::ForcedOpen => Some(Refusal::Forced),
        _ => None,
    }
}

fn run(cfg: Config, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let clock = ManualClock::new();
    let real = build(cfg, &clock);
    let start = clock.now();
    let now = || u64::try_from((clock.now() - start).as_nanos()).unwrap_or(u64::MAX);
    let mut model = Model::new(cfg);
    let mut held: Vec<(BreakerGuard<'_>, ModelPermit)> = Vec::new();
    for (step, op) in ops.iter().enumerate() {
        match *op {
            Op::Call { good, took } => {
                let expected = model.acquire(now());
                let result = real.call(|| {
                    clock.advance(Duration::from_nanos(took));
                    if good {
                        Ok(())
                    } else {
                        Err(())
                    }
                });
                match (expected, result) {
                    (Ok(p), Ok(())) | (Ok(p), Err(BreakerError::Inner(()))) => {
                        model.record(p, Some(good), now())
                    }
                    (Err(want), Err(e)) => {
                        prop_assert_eq!(Some(want), refusal(e), "step {} {:?}", step, op)
                    }
                    (want, got) => {
                        prop_assert!(false, "step {step} {op:?}: model {want:?}, real {got:?}")
                    }
                }
            }
            Op::Hold => {
                if held.len() >= 4 {
                    continue;
                }
                match (model.acquire(now()), real.try_acquire()) {
                    (Ok(p), Ok(g)) => {
                        prop_assert_eq!(g.is_trial(), p.kind == Kind::Trial, "step {}", step);
                        held.push((g, p));
                    }
                    (Err(want), Err(e)) => {
                        prop_assert_eq!(Some(want), refusal(e), "step {} {:?}", step, op)
                    }
                    (want, got) => prop_assert!(
                        false,
                        "step {step} {op:?}: model {want:?}, real {:?}",
                        got.map(|_| ())
                    ),
                }
            }
            Op::Report(i, how) => {
                if held.is_empty() {
                    continue;
                }
                let (g, p) = held.remove(i.index(held.len()));
                match how {
                    0 => g.success(),
                    1 => g.failure(),
                    2 => g.ignore(),
                    _ => drop(g),
                }
                let outcome = [Some(true), Some(false), None, Some(false)][how as usize];
                model.record(p, outcome, now());
            }
            Op::Advance(d) => clock.advance(Duration::from_nanos(d)),
            Op::Trip => {
                real.trip();
                model.go(State::Open, now());
            }
            Op::Reset => {
                real.reset();
                model.go(State::Closed, now());
            }
            Op::ForceOpen => {
                real.force_open();
                model.go(State::ForcedOpen, now());
            }
            Op::Disable => {
                real.disable();
                model.go(State::Disabled, now());
            }
        }
        let t = now();
        prop_assert_eq!(real.state(), model.state(t), "step {} {:?}", step, op);
        let s = real.stats();
        let counts = Counts {
            successes: s.successes,
            failures: s.failures,
            slow: s.slow_calls,
            rejected: s.rejected,
            trips: s.trips,
        };
        prop_assert_eq!(counts, model.counts, "step {} {:?}", step, op);
        prop_assert_eq!(
            s.open_for,
            Duration::from_nanos(model.open_for),
            "step {}",
            step
        );
        if matches!(model.state, State::Open | State::HalfOpen) {
            prop_assert_eq!(s.half_open_in_flight, model.in_flight, "step {}", step);
        }
        if model.state == State::Closed && model.rated() {
            let (calls, failures, slows) = model.window(t);
            prop_assert_eq!(
                (s.window_calls, s.window_failures, s.window_slow_calls),
                (calls as u64, failures as u64, slows as u64),
                "step {} {:?}",
                step,
                op
            );
        }
        if let Policy::Consecutive(_) = cfg.policy {
            prop_assert_eq!(s.consecutive_failures, model.consecutive, "step {}", step);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    #[test]
    fn breaker_state_machine_matches_the_reference_model(
        cfg in config(),
        ops in prop::collection::vec(op(), 1..150),
    ) {
        run(cfg, ops)?;
    }
}
