//! A pipeline running on its own threads: [`Pipeline::spawn`] and the
//! [`RunningPipeline`] handle (live statistics, drain or cancel, bounded joins).

use std::fmt;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::report::PipelineReport;
use super::run::{Body, Ctx};
use super::{Pipeline, PipelineError};
use crate::cancel::CancelToken;
use crate::observe::{Role, Stuck};
use crate::panic::{drop_quietly, Panic};
use crate::spawn::{start, ThreadSpec};
use crate::sync::time;

type Outcome = Result<PipelineReport, PipelineError>;

impl<T: Send + 'static> Pipeline<'static, T> {
    /// Starts the pipeline on threads of its own and returns at once with a handle to
    /// the running pipeline; `sink` runs on the run's own thread (`corral-pipe-run`),
    /// which also owns the stage threads. The pipeline's closures, source and sink
    /// must therefore be `'static` (share data through `Arc`s).
    ///
    /// The run is the same as [`run`](Pipeline::run)'s, with every guarantee: the
    /// handle's [`join`](RunningPipeline::join) returns what `run` would.
    ///
    /// # Errors
    ///
    /// [`PipelineError::Config`] for a rejected builder value and
    /// [`PipelineError::Spawn`] if the OS refused the run's thread; nothing runs.
    ///
    /// # Example
    ///
    /// ```
    /// let running = corral::Pipeline::from_iter(0..)          // endless
    ///     .stage("square", 2, |x: u64| x.wrapping_mul(x))
    ///     .spawn(|_| {})?;
    /// while running.stats().delivered() < 1000 {
    ///     std::thread::yield_now();
    /// }
    /// running.stop(); // drain: the source is not pulled again
    /// let report = running.join()?;
    /// assert!(report.stages.iter().all(|s| s.balanced()));
    /// # Ok::<(), corral::pipeline::PipelineError>(())
    /// ```
    #[track_caller]
    pub fn spawn(
        self,
        mut sink: impl FnMut(T) + Send + 'static,
    ) -> Result<RunningPipeline, PipelineError> {
        if let Err(e) = self.settings() {
            drop_quietly(self);
            drop_quietly(sink);
            return Err(PipelineError::Config(e));
        }
        let owner = self.owner();
        let name = self.name.clone();
        let spec = ThreadSpec::new(
            "Pipeline",
            format!("{}-run", name.as_deref().unwrap_or("pipe")),
        )
        .role(Role::Sink)
        .owned_by(&owner);
        let token = CancelToken::new();
        let (ctx_tx, ctx_rx) = crossbeam_channel::bounded::<Arc<Ctx<'static>>>(1);
        let (outcome_tx, outcome_rx) = crossbeam_channel::bounded::<Outcome>(1);
        let body = Body::new(move || {
            let sink = move |item| {
                sink(item);
                Ok(())
            };
            let started = &mut |ctx: &Arc<Ctx<'static>>| {
                let _ = ctx_tx.try_send(Arc::clone(ctx));
            };
            // This thread is the run's own: the sink's activity shows on it.
            let slot = crate::observe::current();
            let outcome = self.execute_started(token, sink, started, owner, slot);
            let _ = outcome_tx.send(outcome);
        });
        let driver = match start(&spec, move || body.run()) {
            Ok(driver) => driver,
            Err(error) => {
                return Err(PipelineError::Spawn {
                    stage: "sink".to_owned(),
                    error,
                    report: PipelineReport {
                        name: name.as_deref().map(str::to_owned),
                        stages: Vec::new(),
                        elapsed: Duration::ZERO,
                    },
                })
            }
        };
        let mut running = RunningPipeline {
            ctx: None,
            driver: Some(driver),
            outcome: outcome_rx,
            started: Instant::now(),
            name,
        };
        match ctx_rx.recv() {
            Ok(ctx) => {
                running.ctx = Some(ctx);
                Ok(running)
            }
            // The run ended before it started every thread: its outcome says why.
            Err(_) => {
                let name = running.name.as_deref().map(str::to_owned);
                Err(running
                    .finish()
                    .err()
                    .unwrap_or_else(|| PipelineError::Cancelled {
                        reason: crate::cancel::CancelReason::Cancelled,
                        report: PipelineReport {
                            name,
                            stages: Vec::new(),
                            elapsed: Duration::ZERO,
                        },
                    }))
            }
        }
    }
}

/// A pipeline running on its own threads ([`Pipeline::spawn`]).
///
/// - [`stats`](RunningPipeline::stats): live per-stage numbers while it runs
///   (published by each thread every few milliseconds and whenever it runs out of
///   input; final once it has ended).
/// - [`stop`](RunningPipeline::stop) drains: the input ends (a pushed input is closed,
///   a source is not pulled again) and what is inside goes through. The run then
///   ends with `Ok` if every item that came in was processed.
/// - [`stop_now`](RunningPipeline::stop_now) cancels: nothing more is processed, and
///   every queued item is counted as not processed and handed to `on_drop` where
///   set. `join` then returns
///   [`PipelineError::Cancelled`] (with the report), unless the run had already
///   ended.
/// - [`join`](RunningPipeline::join) waits for the end and returns what
///   [`Pipeline::run`] would; its bounded forms hand the handle back on timeout.
///
/// Dropping the handle stops the run as `stop_now` does and joins every thread, as
/// every corral owner does. Do not drop it (or join it) from inside one of the
/// pipeline's own stages or sink: the run would wait for itself.
#[must_use = "dropping a running pipeline cancels it; call `join` to wait for it"]
pub struct RunningPipeline {
    ctx: Option<Arc<Ctx<'static>>>,
    driver: Option<JoinHandle<()>>,
    outcome: Receiver<Outcome>,
    started: Instant,
    name: Option<Arc<str>>,
}

impl RunningPipeline {
    /// The pipeline's name, if it was given one ([`Pipeline::name`]).
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Runs the pipeline's [`watchdog`](Pipeline::watchdog) now: the items newly
    /// found running for its threshold or longer (each reported once, also to its
    /// callback). Empty without a watchdog, and once the run has ended.
    pub fn check_stuck(&self) -> Vec<Stuck> {
        self.ctx
            .as_ref()
            .map_or_else(Vec::new, |ctx| ctx.check_stuck())
    }
    /// The per-stage numbers so far (see [`PipelineReport`]); `elapsed` is the time
    /// since the pipeline was spawned. While the run goes on, counts lag the truth by
    /// a few milliseconds and the books of a stage need not balance yet.
    pub fn stats(&self) -> PipelineReport {
        PipelineReport {
            name: self.name.as_deref().map(str::to_owned),
            stages: self
                .ctx
                .as_ref()
                .map_or_else(Vec::new, |ctx| ctx.snapshot()),
            elapsed: self.started.elapsed(),
        }
    }

    /// Drains and ends the run: the input ends (a pushed input is closed for every
    /// sender; a source is not pulled again), and what is already inside goes through.
    /// Returns at once; [`join`](RunningPipeline::join) waits for the end.
    pub fn stop(&self) {
        if let Some(ctx) = &self.ctx {
            ctx.stop_input();
        }
    }

    /// Cancels the run: no item is processed any more (user code already running is
    /// not interrupted), senders are refused, and every queued item is counted as not
    /// processed and handed to its queue's [`on_drop`](Pipeline::on_drop) callback
    /// (dropped, where there is none). Returns at once.
    pub fn stop_now(&self) {
        if let Some(ctx) = &self.ctx {
            // The run's own token: no user callback is registered on it.
            ctx.stop_now();
        }
    }

    /// Whether the run has ended (its threads may still be finishing).
    pub fn is_finished(&self) -> bool {
        !self.outcome.is_empty() || self.driver.as_ref().map_or(true, JoinHandle::is_finished)
    }

    /// Waits for the run to end, joins its threads and returns its outcome: the
    /// report, or the error [`Pipeline::run`] would return.
    ///
    /// # Errors
    ///
    /// As [`Pipeline::run`]; [`PipelineError::Cancelled`] after
    /// [`stop_now`](RunningPipeline::stop_now).
    pub fn join(mut self) -> Result<PipelineReport, PipelineError> {
        self.finish()
    }

    /// As [`join`](RunningPipeline::join), waiting at most `timeout`; on timeout the
    /// handle comes back, the run still going. A timeout too large to represent
    /// waits as long as `join`.
    ///
    /// # Errors
    ///
    /// The outer `Err` is the handle, when the run had not ended in time.
    pub fn join_timeout(
        self,
        timeout: Duration,
    ) -> Result<Result<PipelineReport, PipelineError>, RunningPipeline> {
        self.join_deadline(time::deadline_after(time::now(), timeout))
    }

    /// As [`join`](RunningPipeline::join), waiting until `deadline` at most.
    ///
    /// # Errors
    ///
    /// The outer `Err` is the handle, when the run had not ended by `deadline`.
    pub fn join_deadline(
        mut self,
        deadline: Instant,
    ) -> Result<Result<PipelineReport, PipelineError>, RunningPipeline> {
        match self.outcome.recv_deadline(deadline) {
            Ok(outcome) => Ok(self.finish_with(Some(outcome))),
            Err(RecvTimeoutError::Timeout) => Err(self),
            Err(RecvTimeoutError::Disconnected) => Ok(self.finish()),
        }
    }

    /// As [`join`](RunningPipeline::join), until `token` is cancelled at most.
    ///
    /// # Errors
    ///
    /// The outer `Err` is the handle, when `token` was cancelled first.
    pub fn join_cancellable(
        mut self,
        token: &CancelToken,
    ) -> Result<Result<PipelineReport, PipelineError>, RunningPipeline> {
        crossbeam_channel::select! {
            recv(self.outcome) -> outcome => Ok(self.finish_with(outcome.ok())),
            recv(token.done()) -> _ => Err(self),
            recv(token.expired()) -> _ => Err(self),
        }
    }

    /// Joins the run's thread and returns its outcome.
    fn finish(&mut self) -> Outcome {
        let outcome = self.outcome.recv().ok();
        self.finish_with(outcome)
    }

    fn finish_with(&mut self, outcome: Option<Outcome>) -> Outcome {
        let joined = self.driver.take().map(JoinHandle::join);
        let outcome = outcome.or_else(|| self.outcome.try_recv().ok());
        match (outcome, joined) {
            (Some(outcome), _) => outcome,
            // The run's thread catches every panic of user code; this is a panic of
            // corral's own, kept as a value all the same.
            (None, Some(Err(payload))) => Err(PipelineError::Panicked {
                stage: "sink".to_owned(),
                panic: Panic::new(payload),
                report: self.stats(),
            }),
            (None, _) => Err(PipelineError::Cancelled {
                reason: crate::cancel::CancelReason::Cancelled,
                report: self.stats(),
            }),
        }
    }
}

impl Drop for RunningPipeline {
    /// As [`stop_now`](RunningPipeline::stop_now), then joins every thread; the
    /// outcome is dropped (inside the panic boundary: it may hold a stage's error).
    fn drop(&mut self) {
        if self.driver.is_some() {
            self.stop_now();
            let outcome = self.finish();
            drop_quietly(outcome);
        }
    }
}

impl fmt::Debug for RunningPipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunningPipeline")
            .field("name", &self.name)
            .field("finished", &self.is_finished())
            .finish_non_exhaustive()
    }
}
