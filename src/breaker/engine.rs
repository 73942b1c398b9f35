//! The breaker's state machine; [`CircuitBreaker`](super::CircuitBreaker) is a thin
//! wrapper over it.
//!
//! Implementation notes.
//!
//! - **One word of state.** `Hot::word` packs the mode (low 3 bits) and an epoch that
//!   every transition increments. Admission in the closed state is one acquire load
//!   of it. A permit remembers the word it was admitted under; an outcome reported
//!   after the word changed belongs to an older state and only reaches the stats.
//! - **Closed successes write nothing shared** (`Engine::record_closed`); failures,
//!   slow calls, half-open trials and transitions take the `core` mutex. Windows
//!   (`window.rs`) keep failures and slow calls under the lock and add the striped
//!   successes (`stripes.rs`) when they are looked at.
//! - **Time** is a `u64` of nanoseconds since the build, read from the crate's
//!   timeline (`Engine::now`); a time window's buckets may run on the OS's coarse
//!   clock instead (`Engine::window_now`). Only durations are reported, so no
//!   conversion to `Instant` is needed.
//! - **Lazy time.** No thread runs timers: Open -> HalfOpen (after `open_for`) and
//!   HalfOpen -> Open (after `half_open_timeout`) happen in whichever call, `state()`
//!   or `stats()` first sees that the time has come.
//! - **Callbacks outside the lock** ([`Events`]), so a callback may call back in.

use std::any::Any;
use std::fmt;
use std::time::Duration;

use super::stripes::Stripes;
use super::window::{Totals, WindowKind, WindowState};
use crate::clock::Clock;
use crate::observe::event;
use crate::panic::Panic;
use crate::striped::bump;
use crate::sync::{AtomicU64, Mutex, MutexGuard, Ordering};
use crate::timeline::{Coarse, Timeline};

/// The state of a [`CircuitBreaker`](super::CircuitBreaker).
///
/// `Closed` admits every call and watches outcomes; `Open` refuses calls until its
/// open period ends; `HalfOpen` admits a bounded number of trial calls whose outcomes
/// decide between `Closed` and `Open`. `ForcedOpen` and `Disabled` are the manual
/// modes set by [`CircuitBreaker::force_open`](super::CircuitBreaker::force_open) and [`CircuitBreaker::disable`](super::CircuitBreaker::disable).
///
/// ```
/// assert_eq!(corral::breaker::State::HalfOpen.to_string(), "half-open");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// Calls go through; failures are counted.
    Closed,
    /// Calls are refused until the open period ends.
    Open,
    /// A few trial calls go through; the rest are refused.
    HalfOpen,
    /// Manually opened: every call is refused until [`CircuitBreaker::reset`](super::CircuitBreaker::reset).
    ForcedOpen,
    /// Manually disabled: every call goes through and is counted in the stats, and
    /// the state never changes until [`CircuitBreaker::reset`](super::CircuitBreaker::reset).
    Disabled,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half-open",
            State::ForcedOpen => "forced open",
            State::Disabled => "disabled",
        })
    }
}

/// A time window's buckets run on the coarse clock only when a bucket is at least this
/// many coarse ticks wide (see `window_clock`).
const COARSE_TICKS_PER_BUCKET: u64 = 64;

const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;
const FORCED_OPEN: u64 = 3;
const DISABLED: u64 = 4;
const MODE_BITS: u32 = 3;
const MODE_MASK: u64 = (1 << MODE_BITS) - 1;

fn mode_of(state: State) -> u64 {
    match state {
        State::Closed => CLOSED,
        State::Open => OPEN,
        State::HalfOpen => HALF_OPEN,
        State::ForcedOpen => FORCED_OPEN,
        State::Disabled => DISABLED,
    }
}

fn state_of(word: u64) -> State {
    match word & MODE_MASK {
        CLOSED => State::Closed,
        OPEN => State::Open,
        HALF_OPEN => State::HalfOpen,
        FORCED_OPEN => State::ForcedOpen,
        _ => State::Disabled,
    }
}

pub(super) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// An open period ending at engine time `until` (`u64::MAX`: never, see the notes).
fn open_ended(now: u64, until: u64) -> bool {
    until != u64::MAX && now >= until
}

/// Time left of an open period ending at `until`: `Duration::MAX` for one that never
/// ends by itself.
fn time_left(now: u64, until: u64) -> Duration {
    if until == u64::MAX {
        Duration::MAX
    } else {
        Duration::from_nanos(until.saturating_sub(now))
    }
}

pub(super) type FailurePredicate = Box<dyn Fn(&dyn Any) -> bool + Send + Sync>;
pub(super) type StateCallback = Box<dyn Fn(State, State) + Send + Sync>;

/// Validated configuration (built by `BreakerBuilder`).
pub(super) struct Config {
    pub(super) consecutive: Option<u64>,
    pub(super) failure_rate: Option<f64>,
    pub(super) slow: Option<(u64, f64)>,
    pub(super) window: WindowKind,
    pub(super) minimum_calls: u64,
    pub(super) open_for: Duration,
    pub(super) backoff: Option<(f64, Duration)>,
    pub(super) half_open_calls: u32,
    pub(super) half_open_timeout: u64,
    pub(super) is_failure: Option<FailurePredicate>,
    pub(super) on_state_change: Option<StateCallback>,
    pub(super) timeline: Box<Timeline<dyn Clock>>,
    pub(super) name: Option<std::sync::Arc<str>>,
    pub(super) metrics: Metrics,
}

/// The breaker's metric handles (feature `metrics`; zero-sized otherwise).
pub(super) struct Metrics {
    state: event::Gauge,
    calls: event::Counter,
    failures: event::Counter,
    slow: event::Counter,
    rejected: event::Counter,
}

impl Metrics {
    pub(super) fn new(name: Option<&str>) -> Self {
        let kind = "CircuitBreaker";
        let metrics = Metrics {
            state: event::Gauge::new("corral_breaker_state", kind, name),
            calls: event::Counter::new("corral_breaker_calls_total", kind, name),
            failures: event::Counter::new("corral_breaker_failures_total", kind, name),
            slow: event::Counter::new("corral_breaker_slow_calls_total", kind, name),
            rejected: event::Counter::new("corral_breaker_rejected_total", kind, name),
        };
        metrics.state.set(gauge_of(State::Closed));
        metrics
    }
}

/// The state gauge's value: 0 closed, 1 half-open, 2 open, 3 forced open, 4 disabled.
fn gauge_of(state: State) -> f64 {
    match state {
        State::Closed => 0.0,
        State::HalfOpen => 1.0,
        State::Open => 2.0,
        State::ForcedOpen => 3.0,
        State::Disabled => 4.0,
    }
}

/// How a permitted call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Success,
    Failure,
    /// Release the permit without counting anything.
    Ignore,
}

/// Why a call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    Open(Duration),
    HalfOpenFull,
    ForcedOpen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Closed,
    Trial,
    Disabled,
}

/// An admission: what state it was granted in and when it started.
#[derive(Debug, Clone, Copy)]
pub(super) struct Permit {
    pub(super) kind: Kind,
    word: u64,
    start: u64,
    /// For a trial: the slot generation it holds a slot of.
    slots: u64,
}

/// Transitions made under the lock, reported once it is released.
///
/// They are collected here while the lock is held and handed to `on_state_change`
/// after it is released, so a callback may call back into the breaker. Each callback
/// runs inside the panic boundary: a panicking one is counted (`user_panics`) and the
/// remaining events still fire, so a guard dropped while its call unwinds never meets
/// a second panic.
struct Events {
    list: [(State, State); 4],
    len: usize,
}

impl Events {
    fn new() -> Self {
        Events {
            list: [(State::Closed, State::Closed); 4],
            len: 0,
        }
    }
    fn push(&mut self, from: State, to: State) {
        if self.len < self.list.len() {
            self.list[self.len] = (from, to);
            self.len += 1;
        }
    }
}

/// The fields a closed-state call reads, on their own cache line.
#[repr(align(128))]
struct Hot {
    word: AtomicU64,
    open_until: AtomicU64,
    /// A closed success at window time `>= eval_after` must re-evaluate the window.
    eval_after: AtomicU64,
    consecutive: AtomicU64,
}

struct Core {
    state: State,
    epoch: u64,
    open_for: Duration,
    /// When the open period ends, in engine time. Engine time saturates at `u64::MAX`
    /// nanoseconds (about 584 years after the build), and an open period whose end
    /// saturates there never ends by itself: `u64::MAX` means "until reset", so a
    /// clock run past the horizon keeps the breaker open instead of making every open
    /// period zero long.
    open_until: u64,
    half_open_since: u64,
    /// Trials running now, whichever half-open state admitted them: a trial keeps its
    /// slot until it reports, so at most `half_open_calls` run at once even across a
    /// reopen. Only a half-open timeout (or leaving for closed or a manual mode)
    /// abandons the slots, bumping `slots`.
    in_flight: u32,
    slots: u64,
    trial_successes: u32,
    window: WindowState,
    failures: u64,
    locked_successes: u64,
    slow: u64,
    trips: u64,
}

/// Snapshot handed to `BreakerStats`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Snapshot {
    pub(super) state: State,
    pub(super) successes: u64,
    pub(super) failures: u64,
    pub(super) slow: u64,
    pub(super) rejected: u64,
    pub(super) trips: u64,
    pub(super) consecutive: u64,
    pub(super) in_flight: u32,
    pub(super) window: Totals,
    pub(super) open_for: Duration,
    pub(super) user_panics: u64,
}

pub(super) struct Engine {
    hot: Hot,
    stripes: Stripes,
    core: Mutex<Core>,
    cfg: Config,
    /// The timeline's offset when the breaker was built: engine time zero.
    origin: u64,
    /// `Some` when the time window's buckets run on the coarse clock (window time);
    /// `None` when window time is engine time.
    coarse: Option<Coarse>,
    /// Panics caught in user code the breaker ran for itself (callbacks, predicates,
    /// drops of refused closures).
    user_panics: AtomicU64,
    /// Whether a closed call's outcome needs the precise end time: for a slow-call
    /// policy, or for a time window on engine time (decided once, read per call).
    timed: bool,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("state", &state_of(self.hot.word.load(Ordering::Relaxed)))
            .finish_non_exhaustive()
    }
}

impl Engine {
    pub(super) fn new(cfg: Config) -> Self {
        let origin = cfg.timeline.now();
        let coarse = window_clock(&cfg);
        let timed = cfg.slow.is_some()
            || (matches!(cfg.window, WindowKind::Time { .. }) && coarse.is_none());
        Engine {
            hot: Hot {
                word: AtomicU64::new(CLOSED),
                open_until: AtomicU64::new(0),
                eval_after: AtomicU64::new(u64::MAX),
                consecutive: AtomicU64::new(0),
            },
            stripes: Stripes::new(),
            core: Mutex::new(Core {
                state: State::Closed,
                epoch: 0,
                open_for: cfg.open_for,
                open_until: 0,
                half_open_since: 0,
                in_flight: 0,
                slots: 0,
                trial_successes: 0,
                window: WindowState::new(cfg.window),
                failures: 0,
                locked_successes: 0,
                slow: 0,
                trips: 0,
            }),
            cfg,
            origin,
            coarse,
            timed,
            user_panics: AtomicU64::new(0),
        }
    }

    /// Engine time: nanoseconds since the breaker was built, on the crate's timeline
    /// (`src/timeline.rs`): the TSC for [`SystemClock`](crate::clock::SystemClock), so a
    /// time-window success does not pay for an `Instant::now()`; exactly
    /// `clock.now() - build time` for any other clock. The breaker reports only
    /// durations (`retry_after`, `open_for`), differences of engine times.
    #[inline]
    fn now(&self) -> u64 {
        self.cfg.timeline.now().saturating_sub(self.origin)
    }

    /// Window time: what the time window's buckets are counted in. Engine time (`now`
    /// itself) unless the window runs on the coarse clock, whose readings are
    /// nanoseconds on the OS's own base, compared only with each other (bucket ids,
    /// `eval_after`).
    ///
    /// The coarse clock (`Coarse` in `src/timeline.rs`, cheaper to read than the TSC;
    /// BENCHMARKS.md has the figures) serves a `SystemClock` breaker whose buckets are
    /// at least [`COARSE_TICKS_PER_BUCKET`] ticks wide and that has no slow-call policy
    /// ([`window_clock`]). Open deadlines, half-open timeouts, slow-call durations and
    /// `retry_after` stay on engine time. With a slow-call policy every call reads the
    /// precise clock anyway, so its window uses that reading rather than pay for a
    /// second clock.
    #[inline]
    fn window_now(&self, now: u64) -> u64 {
        match self.coarse {
            Some(coarse) => coarse.now(),
            None => now,
        }
    }

    /// Whether the time window's buckets run on the coarse clock.
    #[cfg(test)]
    pub(super) fn window_on_coarse_clock(&self) -> bool {
        self.coarse.is_some()
    }

    /// Counts a panic caught in user code (see `user_panics`).
    pub(super) fn user_panic(&self) {
        self.user_panics.fetch_add(1, Ordering::Relaxed);
    }

    /// Panics caught in user code so far.
    pub(super) fn user_panics(&self) -> u64 {
        self.user_panics.load(Ordering::Relaxed)
    }

    pub(super) fn is_failure<E: 'static>(&self, error: &E) -> bool {
        match &self.cfg.is_failure {
            None => true,
            Some(predicate) => predicate(error),
        }
    }

    // ---- admission ------------------------------------------------------------------

    /// Admission in the closed state: one load of the state word.
    #[inline]
    pub(super) fn closed_permit(&self) -> Option<Permit> {
        let word = self.hot.word.load(Ordering::Acquire);
        if word & MODE_MASK == CLOSED {
            Some(Permit {
                kind: Kind::Closed,
                word,
                start: self.start_time(),
                slots: 0,
            })
        } else {
            None
        }
    }

    /// Admission in any state.
    pub(super) fn acquire(&self) -> Result<Permit, Refusal> {
        let word = self.hot.word.load(Ordering::Acquire);
        match word & MODE_MASK {
            CLOSED => Ok(Permit {
                kind: Kind::Closed,
                word,
                start: self.start_time(),
                slots: 0,
            }),
            DISABLED => Ok(Permit {
                kind: Kind::Disabled,
                word,
                start: self.start_time(),
                slots: 0,
            }),
            FORCED_OPEN => {
                self.refused();
                Err(Refusal::ForcedOpen)
            }
            OPEN => {
                let now = self.now();
                let until = self.hot.open_until.load(Ordering::Acquire);
                if !open_ended(now, until) {
                    self.refused();
                    Err(Refusal::Open(time_left(now, until)))
                } else {
                    self.acquire_locked(now)
                }
            }
            _ => self.acquire_locked(self.now()),
        }
    }

    #[inline]
    fn start_time(&self) -> u64 {
        if self.cfg.slow.is_some() {
            self.now()
        } else {
            0
        }
    }

    fn refused(&self) {
        let (stripe, owned) = self.stripes.mine();
        bump(&stripe.rejected, owned);
        self.cfg.metrics.rejected.add(1);
    }

    #[cold]
    fn acquire_locked(&self, now: u64) -> Result<Permit, Refusal> {
        let mut events = Events::new();
        let result = {
            let mut core = self.core.lock();
            self.advance_time(&mut core, now, &mut events);
            let word = self.word_of(&core);
            match core.state {
                State::Closed => Ok(Permit {
                    kind: Kind::Closed,
                    word,
                    start: now,
                    slots: 0,
                }),
                State::Disabled => Ok(Permit {
                    kind: Kind::Disabled,
                    word,
                    start: now,
                    slots: 0,
                }),
                State::HalfOpen => {
                    if core.in_flight + core.trial_successes < self.cfg.half_open_calls {
                        core.in_flight += 1;
                        Ok(Permit {
                            kind: Kind::Trial,
                            word,
                            start: now,
                            slots: core.slots,
                        })
                    } else {
                        Err(Refusal::HalfOpenFull)
                    }
                }
                State::Open => Err(Refusal::Open(time_left(now, core.open_until))),
                State::ForcedOpen => Err(Refusal::ForcedOpen),
            }
        };
        if result.is_err() {
            self.refused();
        }
        self.fire(&events);
        result
    }

    // ---- outcomes -------------------------------------------------------------------

    #[inline(always)]
    pub(super) fn record(&self, permit: &Permit, outcome: Outcome) {
        match outcome {
            Outcome::Ignore => {}
            Outcome::Success => self.cfg.metrics.calls.add(1),
            Outcome::Failure => {
                self.cfg.metrics.calls.add(1);
                self.cfg.metrics.failures.add(1);
            }
        }
        match permit.kind {
            Kind::Closed => self.record_closed(permit, outcome),
            Kind::Trial => self.record_trial(permit, outcome),
            Kind::Disabled => self.record_disabled(permit, outcome),
        }
    }

    #[inline]
    fn is_slow(&self, permit: &Permit, end: u64) -> bool {
        match self.cfg.slow {
            Some((limit, _)) => end.saturating_sub(permit.start) > limit,
            None => false,
        }
    }

    /// Records a closed-state outcome. A success writes nothing shared: it bumps the
    /// caller's stripe (`stripes.rs`), resets the consecutive-failure count only when
    /// it is non-zero, and reads `eval_after` to learn whether a success could trip the
    /// breaker at all (when it brings a window holding failures up to
    /// `minimum_calls`, or when expired successes have left the failures over a
    /// threshold). Everything else takes the `core` mutex.
    #[inline(always)]
    fn record_closed(&self, permit: &Permit, outcome: Outcome) {
        if outcome == Outcome::Ignore {
            return;
        }
        // The precise end time serves slow-call durations, and the time window unless
        // its buckets run on the coarse clock.
        let timed = self.timed;
        let end = if timed { self.now() } else { 0 };
        let slow = self.is_slow(permit, end);
        if outcome == Outcome::Failure || slow {
            let now = if timed { end } else { self.now() };
            return self.record_closed_locked(permit, outcome == Outcome::Failure, slow, now);
        }
        // The fast path: a plain success. `wend` is its window time.
        let wend = match self.coarse {
            Some(coarse) => coarse.now(),
            None => end,
        };
        let (stripe, owned) = self.stripes.mine();
        if self.hot.word.load(Ordering::Relaxed) != permit.word {
            bump(&stripe.plain, owned);
            return;
        }
        bump(&stripe.successes, owned);
        if let WindowKind::Time { width } = self.cfg.window {
            stripe.add_at(wend, width, owned);
        }
        if self.cfg.consecutive.is_some() && self.hot.consecutive.load(Ordering::Relaxed) != 0 {
            self.hot.consecutive.store(0, Ordering::Relaxed);
        }
        if self.cfg.window != WindowKind::None
            && self.hot.eval_after.load(Ordering::Relaxed) <= wend
        {
            self.evaluate_after_success(permit, if timed { end } else { self.now() });
        }
    }

    #[cold]
    fn evaluate_after_success(&self, permit: &Permit, now: u64) {
        let mut events = Events::new();
        {
            let mut core = self.core.lock();
            if self.word_of(&core) == permit.word {
                let wnow = self.window_now(now);
                self.evaluate(&mut core, now, wnow, &mut events);
            }
        }
        self.fire(&events);
    }

    #[cold]
    fn record_closed_locked(&self, permit: &Permit, failure: bool, slow: bool, now: u64) {
        let mut events = Events::new();
        {
            let mut core = self.core.lock();
            if failure {
                core.failures += 1;
            } else {
                core.locked_successes += 1;
            }
            if slow {
                core.slow += 1;
                self.cfg.metrics.slow.add(1);
            }
            if self.word_of(&core) == permit.word {
                self.closed_outcome(&mut core, failure, slow, now, &mut events);
            }
        }
        self.fire(&events);
    }

    /// A failure or slow call in the current closed state: update the policies.
    fn closed_outcome(
        &self,
        core: &mut MutexGuard<'_, Core>,
        failure: bool,
        slow: bool,
        now: u64,
        events: &mut Events,
    ) {
        if let Some(limit) = self.cfg.consecutive {
            if failure {
                let run = self.hot.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
                if run >= limit {
                    self.transition(core, State::Open, now, events);
                    return;
                }
            } else if self.hot.consecutive.load(Ordering::Relaxed) != 0 {
                self.hot.consecutive.store(0, Ordering::Relaxed);
            }
        }
        if self.cfg.window == WindowKind::None {
            return;
        }
        let wnow = self.window_now(now);
        core.window.record(&self.stripes, wnow, failure, slow);
        self.evaluate(core, now, wnow, events);
    }

    /// Recomputes the window at window time `wnow`; trips (at engine time `now`) when a
    /// rate reaches its threshold, otherwise says from which window time on a success
    /// must evaluate again.
    fn evaluate(&self, core: &mut MutexGuard<'_, Core>, now: u64, wnow: u64, events: &mut Events) {
        let (totals, eval_after) = self.window_totals(core, wnow);
        if totals.calls >= self.cfg.minimum_calls && totals.calls > 0 {
            let calls = totals.calls as f64;
            let failing = self
                .cfg
                .failure_rate
                .is_some_and(|t| totals.failures as f64 / calls >= t);
            let slow = self
                .cfg
                .slow
                .is_some_and(|(_, t)| totals.slow as f64 / calls >= t);
            if failing || slow {
                self.transition(core, State::Open, now, events);
                return;
            }
        }
        self.hot.eval_after.store(eval_after, Ordering::Relaxed);
    }

    /// Window totals at window time `wnow`, and the window time from which a plain
    /// success could trip the breaker.
    fn window_totals(&self, core: &mut MutexGuard<'_, Core>, wnow: u64) -> (Totals, u64) {
        let minimum = self.cfg.minimum_calls;
        core.window
            .totals(&self.stripes, wnow, minimum, |t| self.could_trip(t))
    }

    /// Whether the fewest further successes that reach `minimum_calls` (at least one)
    /// would leave a window with these totals over a threshold.
    fn could_trip(&self, totals: Totals) -> bool {
        let calls = totals.calls + self.cfg.minimum_calls.saturating_sub(totals.calls).max(1);
        let calls = calls as f64;
        self.cfg
            .failure_rate
            .is_some_and(|t| totals.failures as f64 / calls >= t)
            || self
                .cfg
                .slow
                .is_some_and(|(_, t)| totals.slow as f64 / calls >= t)
    }

    #[cold]
    fn record_trial(&self, permit: &Permit, outcome: Outcome) {
        let now = self.now();
        let slow = self.is_slow(permit, now);
        let mut events = Events::new();
        {
            let mut core = self.core.lock();
            self.count_stats(&mut core, outcome, slow);
            self.advance_time(&mut core, now, &mut events);
            if core.slots == permit.slots {
                core.in_flight -= 1;
            }
            if self.word_of(&core) == permit.word {
                match outcome {
                    Outcome::Ignore => {}
                    Outcome::Success if !slow => {
                        core.trial_successes += 1;
                        if core.trial_successes >= self.cfg.half_open_calls {
                            self.transition(&mut core, State::Closed, now, &mut events);
                        }
                    }
                    _ => self.reopen(&mut core, now, &mut events),
                }
            }
        }
        self.fire(&events);
    }

    #[cold]
    fn record_disabled(&self, permit: &Permit, outcome: Outcome) {
        let end = if self.cfg.slow.is_some() {
            self.now()
        } else {
            0
        };
        let slow = self.is_slow(permit, end);
        if outcome == Outcome::Success && !slow {
            let (stripe, owned) = self.stripes.mine();
            bump(&stripe.plain, owned);
        } else {
            let mut core = self.core.lock();
            self.count_stats(&mut core, outcome, slow);
        }
    }

    fn count_stats(&self, core: &mut Core, outcome: Outcome, slow: bool) {
        match outcome {
            Outcome::Ignore => return,
            Outcome::Success => core.locked_successes += 1,
            Outcome::Failure => core.failures += 1,
        }
        if slow {
            core.slow += 1;
            self.cfg.metrics.slow.add(1);
        }
    }

    // ---- transitions ----------------------------------------------------------------

    fn word_of(&self, core: &Core) -> u64 {
        core.epoch << MODE_BITS | mode_of(core.state)
    }

    /// Applies the transitions that time alone makes due.
    fn advance_time(&self, core: &mut MutexGuard<'_, Core>, now: u64, events: &mut Events) {
        if core.state == State::Open && open_ended(now, core.open_until) {
            self.transition(core, State::HalfOpen, now, events);
        }
        if core.state == State::HalfOpen
            && now.saturating_sub(core.half_open_since) >= self.cfg.half_open_timeout
        {
            self.abandon_trials(core);
            self.reopen(core, now, events);
        }
    }

    /// Trials still out no longer hold slots; their reports are ignored.
    fn abandon_trials(&self, core: &mut Core) {
        core.in_flight = 0;
        core.slots += 1;
    }

    /// A failed (or timed-out) half-open state opens again, for longer.
    fn reopen(&self, core: &mut MutexGuard<'_, Core>, now: u64, events: &mut Events) {
        if let Some((multiplier, max)) = self.cfg.backoff {
            // In nanoseconds: the float product saturates in the cast (the multiplier
            // is finite and at least 1, so never NaN), and is kept between the current
            // period and `max`, so rounding never shortens it.
            let now_for = nanos(core.open_for);
            let longer = (now_for as f64 * multiplier) as u64;
            let next = longer.min(nanos(max)).max(now_for);
            core.open_for = Duration::from_nanos(next);
        }
        self.transition(core, State::Open, now, events);
    }

    fn transition(
        &self,
        core: &mut MutexGuard<'_, Core>,
        to: State,
        now: u64,
        events: &mut Events,
    ) {
        let from = core.state;
        core.state = to;
        core.epoch += 1;
        core.trial_successes = 0;
        if !matches!(to, State::Open | State::HalfOpen) {
            self.abandon_trials(core);
        }
        match to {
            State::Open => {
                core.open_until = now.saturating_add(nanos(core.open_for));
                core.trips += 1;
                self.hot
                    .open_until
                    .store(core.open_until, Ordering::Release);
            }
            State::HalfOpen => core.half_open_since = now,
            State::Closed => {
                core.open_for = self.cfg.open_for;
                self.clear_window(core, now);
            }
            State::ForcedOpen | State::Disabled => {}
        }
        self.hot.word.store(self.word_of(core), Ordering::Release);
        if from != to {
            events.push(from, to);
        }
    }

    fn clear_window(&self, core: &mut MutexGuard<'_, Core>, now: u64) {
        self.hot.consecutive.store(0, Ordering::Relaxed);
        self.hot.eval_after.store(u64::MAX, Ordering::Relaxed);
        core.window.clear(&self.stripes, self.window_now(now));
    }

    /// Hands the collected transitions to `on_state_change`, each call inside the panic
    /// boundary: a panicking callback is counted and the next event still fires.
    fn fire(&self, events: &Events) {
        for &(from, to) in &events.list[..events.len] {
            self.cfg.metrics.state.set(gauge_of(to));
            event::emit!(
                info,
                "CircuitBreaker",
                self.cfg.name.as_deref(),
                "circuit breaker changed state",
                from = from.to_string().as_str(),
                to = to.to_string().as_str(),
            );
        }
        if let Some(callback) = &self.cfg.on_state_change {
            for &(from, to) in &events.list[..events.len] {
                if Panic::catch_any(|| callback(from, to)).is_err() {
                    self.user_panic();
                }
            }
        }
    }

    // ---- manual control and inspection ------------------------------------------------

    /// Moves to `to` now (manual control). `Closed` also clears the window.
    pub(super) fn force(&self, to: State) {
        let mut events = Events::new();
        // The clock is read before the lock: no user code runs under it.
        let now = self.now();
        {
            let mut core = self.core.lock();
            self.transition(&mut core, to, now, &mut events);
        }
        self.fire(&events);
    }

    /// The breaker's name, if it has one.
    pub(super) fn name(&self) -> Option<&str> {
        self.cfg.name.as_deref()
    }

    /// The stored state, without applying due time-based transitions.
    pub(super) fn current_state(&self) -> State {
        state_of(self.hot.word.load(Ordering::Acquire))
    }

    pub(super) fn state(&self) -> State {
        let word = self.hot.word.load(Ordering::Acquire);
        match word & MODE_MASK {
            OPEN | HALF_OPEN => {}
            _ => return state_of(word),
        }
        let now = self.now();
        if word & MODE_MASK == OPEN && !open_ended(now, self.hot.open_until.load(Ordering::Acquire))
        {
            return State::Open;
        }
        let mut events = Events::new();
        let state = {
            let mut core = self.core.lock();
            self.advance_time(&mut core, now, &mut events);
            core.state
        };
        self.fire(&events);
        state
    }

    pub(super) fn snapshot(&self) -> Snapshot {
        let now = self.now();
        let mut events = Events::new();
        let snapshot = {
            let mut core = self.core.lock();
            self.advance_time(&mut core, now, &mut events);
            let window = if core.state == State::Closed {
                let wnow = self.window_now(now);
                self.window_totals(&mut core, wnow).0
            } else {
                Totals::default()
            };
            Snapshot {
                state: core.state,
                successes: self.stripes.successes() + self.stripes.plain() + core.locked_successes,
                failures: core.failures,
                slow: core.slow,
                rejected: self.stripes.rejected(),
                trips: core.trips,
                consecutive: self.hot.consecutive.load(Ordering::Relaxed),
                in_flight: core.in_flight,
                window,
                open_for: core.open_for,
                user_panics: self.user_panics(),
            }
        };
        self.fire(&events);
        snapshot
    }
}

/// The coarse clock for a time window's buckets, when the breaker's clock is
/// [`SystemClock`](crate::clock::SystemClock), the window's buckets are at least
/// [`COARSE_TICKS_PER_BUCKET`] coarse ticks wide, and no slow-call policy needs the
/// precise end time of every call anyway (reading both clocks would cost more than
/// the TSC alone). A coarse reading is up to about one tick late, so an outcome may be
/// counted in the bucket before its own for at most 1/64 of a bucket's width: a
/// sixty-fourth of the window's own quantisation (it already expires a whole bucket,
/// a tenth of the window, at a time). A 4 ms tick (`clock_getres`), for instance,
/// admits windows of 2.56 s and more.
fn window_clock(cfg: &Config) -> Option<Coarse> {
    let WindowKind::Time { width } = cfg.window else {
        return None;
    };
    let tick = Coarse::tick()?;
    let wide = width / COARSE_TICKS_PER_BUCKET >= tick;
    (wide && cfg.slow.is_none() && cfg.timeline.is_system())
        .then(Coarse::get)
        .flatten()
}
