//! The daemon harness: how every daemon of the suite starts, runs, is watched and stops
//! (SPEC §11). Read this module to know how any of them behaves.
//!
//! A daemon builds a [`Service`], adds its parts, and calls [`Service::run`]:
//! - **supervised tasks** ([`Service::spawn`]) — the Telegram sender, the HTTP listeners, the
//!   periodic jobs. Each has a name. A task that ends before shutdown (returns, fails or
//!   panics) stops the daemon with a non-zero exit and an error line naming it: a daemon that
//!   silently lost its sender would look healthy while the SOC hears nothing.
//! - **periodic jobs** ([`Service::periodic`]) — a tick every `interval`
//!   (`MissedTickBehavior::Skip`: a slow attempt never causes a burst), each attempt under a
//!   deadline, failures retried after a capped exponential backoff with jitter, and
//!   cancellation at every await: the wait between attempts ends at once on shutdown, an
//!   attempt in progress gets [`GRACE`] to finish and is then abandoned.
//! - **HTTP listeners** ([`Service::http`]) — [`crate::listener::serve`] (header-read and idle
//!   timeouts, a connection cap, a bounded drain) as a supervised task.
//! - **cleanup** ([`Service::on_stop`]) — releasing leases, closing the database; each step is
//!   bounded by [`CLEANUP_BOUND`].
//!
//! **One watchdog rule**: every half `WatchdogSec`, the harness pings systemd only while every
//! supervised task that declared a progress bound made progress within that bound
//! ([`Progress::beat`]). A periodic job beats at the end of every attempt (a failing
//! Cloudflare is reported by `/healthz` and Telegram, not by a restart that cannot fix it),
//! except a probe ([`Beat::OnSuccess`], e.g. the database ping), which beats only when it
//! succeeds. A listener beats while its accept loop runs below its connection cap. A task
//! without a bound only has to stay alive.
//!
//! **Bounded shutdown**: on SIGTERM/SIGINT (or when a task fails) the harness sends STOPPING,
//! cancels every task's `stop` token (listeners stop accepting and drain, jobs finish or are
//! abandoned after [`GRACE`]), waits at most `stop_bound` for them, aborts what is left, runs
//! the cleanup steps and returns: `Ok` (exit 0) after a requested shutdown with no task
//! failing, an error naming the task otherwise.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::task::{Id, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

pub use crate::shutdown::GRACE;

/// How long each cleanup step (lease release, database close) may take.
pub const CLEANUP_BOUND: Duration = Duration::from_secs(3);

/// How often the watchdog rule is evaluated when systemd's watchdog is off (only to log a
/// task that stopped making progress).
const CHECK_WITHOUT_WATCHDOG: Duration = Duration::from_secs(60);

/// A task's heartbeat: the instant it last made progress. Cheap to clone and to beat.
#[derive(Debug, Clone)]
pub struct Progress {
    origin: Instant,
    /// Milliseconds after `origin` of the last beat.
    last: Arc<AtomicU64>,
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress {
    /// A heartbeat that counts as having beaten now.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Records progress now.
    pub fn beat(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.fetch_max(ms, Ordering::Relaxed);
    }

    /// Time since the last beat.
    pub fn age(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.origin.elapsed().saturating_sub(last)
    }
}

/// What a supervised task is given.
#[derive(Debug, Clone)]
pub struct Task {
    /// Cancelled when the daemon stops: the task must return soon after (within [`GRACE`]).
    pub stop: CancellationToken,
    /// Beat it whenever the task makes progress (if it declared a bound).
    pub progress: Progress,
}

/// The outcome of one attempt of a periodic job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// It worked: the next attempt is at the next tick.
    Done,
    /// It failed (the job logged why): the next attempt is after the backoff, if any.
    Failed,
}

/// When a periodic job counts as having made progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// At the end of every attempt, even a failed or abandoned one: the loop is alive. For
    /// jobs whose failures come from outside (Cloudflare down) and that a restart cannot fix.
    AfterEveryAttempt,
    /// Only when an attempt succeeds: for probes of the daemon's own health (the database).
    OnSuccess,
}

/// Capped exponential backoff after failed attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay after the first failure.
    pub first: Duration,
    /// No delay is longer.
    pub cap: Duration,
}

impl Backoff {
    /// The delay after `failures` consecutive failures (≥ 1), given `unit` ∈ [0, 1) drawn at
    /// random: "equal jitter" — half the exponential delay plus a random part of the other
    /// half, so instances that failed together do not retry together, yet never retry sooner
    /// than half the nominal delay.
    pub fn delay(&self, failures: u32, unit: f64) -> Duration {
        let exponent = failures.saturating_sub(1).min(31);
        let nominal = self.first.saturating_mul(1u32 << exponent).min(self.cap);
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let half = nominal / 2;
        (half + half.mul_f64(unit)).min(self.cap)
    }
}

/// A periodic job's schedule.
#[derive(Debug, Clone, Copy)]
pub struct Every {
    /// Time between attempts (the first runs at once).
    pub interval: Duration,
    /// An attempt still running after this is abandoned and counts as failed.
    pub deadline: Duration,
    /// After a failure: the delay before the next attempt. `None`: the next tick.
    pub backoff: Option<Backoff>,
    /// When the job counts as making progress.
    pub beat: Beat,
}

impl Every {
    /// The progress bound that follows from the schedule: the longest a healthy job can go
    /// between two beats (the longer of a tick and a backoff, plus the deadline), plus slack.
    pub fn progress_bound(&self) -> Duration {
        let wait = self
            .backoff
            .map_or(self.interval, |b| b.cap.max(self.interval));
        wait + self.deadline + Duration::from_secs(30)
    }
}

/// A job run by [`Service::periodic`].
pub trait Job: Send + 'static {
    /// One attempt. It may be dropped at any await (deadline or shutdown): keep every step
    /// safe to abandon (commit before acting, as the daemons do).
    fn attempt(&mut self) -> impl Future<Output = Attempt> + Send;

    /// Called when an attempt was abandoned at its deadline (count it, say so).
    fn abandoned(&mut self, _deadline: Duration) {}
}

/// A [`Job`] made of a closure.
pub struct FnJob<F>(pub F);

impl<F> std::fmt::Debug for FnJob<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FnJob")
    }
}

impl<F, Fut> Job for FnJob<F>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Attempt> + Send,
{
    fn attempt(&mut self) -> impl Future<Output = Attempt> + Send {
        (self.0)()
    }
}

/// A fatal error that was already logged where it happened: the binary exits 1 without
/// logging it a second time ([`crate::runtime::exit_status`]).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Reported(pub String);

type Cleanup = Pin<Box<dyn Future<Output = ()> + Send>>;

struct Watched {
    name: &'static str,
    bound: Duration,
    progress: Progress,
}

/// A daemon's parts (see the module documentation).
pub struct Service {
    name: &'static str,
    shutdown: CancellationToken,
    stop: CancellationToken,
    tasks: JoinSet<anyhow::Result<()>>,
    names: HashMap<Id, &'static str>,
    watched: Vec<Watched>,
    cleanup: Vec<(&'static str, Cleanup)>,
    stop_bound: Duration,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.name)
            .field("tasks", &self.names.values().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// A supervised task's end, as the watchdog loop sees it.
fn describe(result: Result<anyhow::Result<()>, tokio::task::JoinError>) -> Option<String> {
    match result {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("failed: {e:#}")),
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            let text = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".to_owned());
            Some(format!("panicked: {text}"))
        }
        Err(_) => Some("was cancelled".to_owned()),
    }
}

/// The watchdog rule as a pure function: the tasks (name, time since progress, bound) that
/// made no progress within their bound. Ping only when it is empty.
pub fn stalled<'a>(
    tasks: impl IntoIterator<Item = (&'a str, Duration, Duration)>,
) -> Vec<(&'a str, Duration, Duration)> {
    tasks
        .into_iter()
        .filter(|(_, age, bound)| age > bound)
        .collect()
}

/// A number in [0, 1) that differs between calls and processes (backoff jitter; not for
/// secrets): the standard library's per-process random hash keys, advanced on every call.
pub fn jitter_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0x6d74_2d6a_6974_7472);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

impl Service {
    /// A service named `name` (for logs) that stops when `shutdown` is cancelled.
    /// `stop_bound`: how long its tasks may take to finish after that.
    pub fn new(name: &'static str, shutdown: CancellationToken, stop_bound: Duration) -> Self {
        Self {
            name,
            // Not a child of `shutdown`: the tasks stop only after `run` saw the signal, so a
            // task ending because of it is never mistaken for a failure.
            stop: CancellationToken::new(),
            shutdown,
            tasks: JoinSet::new(),
            names: HashMap::new(),
            watched: Vec::new(),
            cleanup: Vec::new(),
            stop_bound,
        }
    }

    /// The token that stops every task (cancelled on shutdown or when a task fails).
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Starts a supervised task. With `bound`, the watchdog also requires it to beat its
    /// [`Task::progress`] at least that often.
    pub fn spawn<F, Fut>(&mut self, name: &'static str, bound: Option<Duration>, task: F)
    where
        F: FnOnce(Task) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let progress = Progress::new();
        if let Some(bound) = bound {
            self.watched.push(Watched {
                name,
                bound,
                progress: progress.clone(),
            });
        }
        let future = task(Task {
            stop: self.stop.clone(),
            progress,
        });
        let handle = self.tasks.spawn(future);
        self.names.insert(handle.id(), name);
    }

    /// Runs `job` on `every`'s schedule as a supervised task (see the module documentation).
    pub fn periodic(&mut self, name: &'static str, every: Every, job: impl Job) {
        self.spawn(name, Some(every.progress_bound()), move |task| {
            run_periodic(name, every, job, task)
        });
    }

    /// Serves `app` on `listener` through the hardened listener, as a supervised task that
    /// must keep accepting: below its connection cap at least every `3 × header_read_timeout`.
    pub fn http(
        &mut self,
        name: &'static str,
        listener: tokio::net::TcpListener,
        app: axum::Router,
        limits: crate::listener::Limits,
        open: crate::listener::OpenConnections,
    ) {
        match listener.local_addr() {
            Ok(addr) => tracing::info!(%addr, listener = name, "listening"),
            Err(e) => tracing::warn!(error = %e, listener = name, "listening (address unknown)"),
        }
        let bound = limits.header_read_timeout.saturating_mul(3);
        self.spawn(name, Some(bound), move |task| async move {
            crate::listener::serve(listener, app, limits, open, task.progress, task.stop).await;
            Ok(())
        });
    }

    /// The `/metrics` + `/healthz` listener of a daemon without public routes
    /// ([`crate::listener::Limits::metrics`]), as the supervised task "metrics listener".
    pub fn serve_metrics(&mut self, listener: tokio::net::TcpListener, app: axum::Router) {
        self.http(
            "metrics listener",
            listener,
            app,
            crate::listener::Limits::metrics(),
            crate::listener::OpenConnections::default(),
        );
    }

    /// A cleanup step run after the tasks ended (each bounded by [`CLEANUP_BOUND`]).
    pub fn on_stop(&mut self, name: &'static str, step: impl Future<Output = ()> + Send + 'static) {
        self.cleanup.push((name, Box::pin(step)));
    }

    /// Sends READY with `status`, supervises until shutdown or a task's failure, then stops
    /// within the bounds (see the module documentation).
    pub async fn run(mut self, status: &str) -> anyhow::Result<()> {
        crate::systemd::ready(status);
        tracing::info!(service = self.name, status, "started");
        let watchdog = crate::systemd::watchdog_interval();
        let mut check = tokio::time::interval(
            watchdog
                .unwrap_or(CHECK_WITHOUT_WATCHDOG)
                .max(Duration::from_millis(100)),
        );
        check.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut failure: Option<String> = None;
        let mut reported: Vec<&'static str> = Vec::new();
        loop {
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break,
                joined = self.tasks.join_next_with_id() => {
                    let (id, end) = match joined {
                        Some(Ok((id, result))) => (id, describe(Ok(result))),
                        Some(Err(e)) => (e.id(), describe(Err(e))),
                        None => {
                            tracing::error!("no supervised task left to run; stopping the daemon");
                            failure = Some("no supervised task left to run".to_owned());
                            break;
                        }
                    };
                    let name = self.names.get(&id).copied().unwrap_or("unnamed task");
                    let why = end.unwrap_or_else(|| "returned".to_owned());
                    tracing::error!(task = name, "supervised task {name} ended unexpectedly ({why}); stopping the daemon");
                    failure = Some(format!("supervised task {name} ended unexpectedly ({why})"));
                    break;
                }
                _ = check.tick() => {
                    let stalled = stalled(
                        self.watched.iter().map(|w| (w.name, w.progress.age(), w.bound)),
                    );
                    if stalled.is_empty() {
                        if !reported.is_empty() {
                            tracing::info!("every task makes progress again");
                            reported.clear();
                        }
                        crate::systemd::watchdog();
                    } else {
                        for (name, age, bound) in &stalled {
                            if !reported.contains(name) {
                                tracing::warn!(task = *name, age_secs = age.as_secs(), bound_secs = bound.as_secs(), "no progress within its bound; not pinging the watchdog");
                                reported.push(name);
                            }
                        }
                    }
                }
            }
        }
        crate::systemd::stopping();
        self.stop.cancel();
        let drained = tokio::time::timeout(self.stop_bound, async {
            while let Some(joined) = self.tasks.join_next_with_id().await {
                let (id, end) = match joined {
                    Ok((id, result)) => (id, describe(Ok(result))),
                    Err(e) => (e.id(), describe(Err(e))),
                };
                if let Some(why) = end {
                    let name = self.names.get(&id).copied().unwrap_or("unnamed task");
                    tracing::error!(task = name, "task {name} {why} while stopping");
                    failure.get_or_insert_with(|| format!("task {name} {why} while stopping"));
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                left = self.tasks.len(),
                bound_secs = self.stop_bound.as_secs(),
                "tasks still running after the stop bound; aborted"
            );
            self.tasks.abort_all();
        }
        for (name, step) in self.cleanup.drain(..) {
            if tokio::time::timeout(CLEANUP_BOUND, step).await.is_err() {
                tracing::warn!(
                    step = name,
                    bound_secs = CLEANUP_BOUND.as_secs(),
                    "cleanup step did not finish in time; skipped"
                );
            }
        }
        tracing::info!(service = self.name, "stopped");
        match failure {
            None => Ok(()),
            Some(why) => Err(Reported(why).into()),
        }
    }
}

async fn run_periodic(
    name: &'static str,
    every: Every,
    mut job: impl Job,
    task: Task,
) -> anyhow::Result<()> {
    let mut ticker = tokio::time::interval(every.interval.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut failures = 0u32;
    loop {
        tokio::select! {
            () = task.stop.cancelled() => return Ok(()),
            _ = ticker.tick() => {}
        }
        let outcome = tokio::select! {
            outcome = tokio::time::timeout(every.deadline, job.attempt()) => outcome,
            () = crate::shutdown::grace_elapsed(&task.stop, GRACE) => {
                // Safe by the Job contract: every step commits before it acts.
                tracing::warn!(job = name, grace_secs = GRACE.as_secs(), "shutdown: the {name} attempt in progress was abandoned");
                return Ok(());
            }
        };
        let attempt = outcome.unwrap_or_else(|_| {
            tracing::error!(
                job = name,
                deadline_secs = every.deadline.as_secs(),
                "{name} attempt abandoned after its deadline"
            );
            job.abandoned(every.deadline);
            Attempt::Failed
        });
        if attempt == Attempt::Done || every.beat == Beat::AfterEveryAttempt {
            task.progress.beat();
        }
        match attempt {
            Attempt::Done => failures = 0,
            Attempt::Failed => {
                failures = failures.saturating_add(1);
                if let Some(backoff) = every.backoff {
                    let delay = backoff.delay(failures, jitter_unit());
                    tracing::info!(
                        job = name,
                        failures,
                        retry_in_secs = delay.as_secs(),
                        "{name}: retrying after a backoff"
                    );
                    ticker.reset_after(delay);
                }
            }
        }
    }
}
