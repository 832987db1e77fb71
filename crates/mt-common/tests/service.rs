//! The daemon harness (`mt_common::service`) on tokio's paused clock: supervised tasks that
//! end stop the daemon non-zero with their name, periodic jobs keep their schedule (skip, not
//! burst; capped backoff with jitter), shutdown is bounded whatever a job is doing, and the
//! watchdog rule names a task that stopped making progress.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure must panic

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mt_common::service::{Attempt, Backoff, Beat, Every, FnJob, GRACE, Service, stalled};
use proptest::prelude::*;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

fn service(shutdown: &CancellationToken) -> Service {
    Service::new("test", shutdown.clone(), Duration::from_secs(5))
}

#[tokio::test(start_paused = true)]
async fn a_task_that_panics_stops_the_daemon_non_zero_naming_it_and_the_others_stop_cleanly() {
    let shutdown = CancellationToken::new();
    let mut service = service(&shutdown);
    let steady_stopped = Arc::new(AtomicBool::new(false));
    let cleaned = Arc::new(AtomicBool::new(false));
    let flag = steady_stopped.clone();
    service.spawn("steady", None, move |task| async move {
        task.stop.cancelled().await;
        flag.store(true, Ordering::SeqCst);
        Ok(())
    });
    service.spawn("fragile", None, |_| async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        panic!("the queue is gone");
    });
    let flag = cleaned.clone();
    service.on_stop("cleanup", async move { flag.store(true, Ordering::SeqCst) });
    let started = Instant::now();
    let result = service.run("testing").await;
    let err = result.as_ref().unwrap_err().to_string();
    assert!(err.contains("fragile"), "{err}");
    assert!(err.contains("panicked: the queue is gone"), "{err}");
    assert_eq!(started.elapsed(), Duration::from_secs(10));
    assert!(steady_stopped.load(Ordering::SeqCst));
    assert!(cleaned.load(Ordering::SeqCst));
    assert_eq!(mt_common::runtime::exit_status(&result), 1);
}

#[tokio::test(start_paused = true)]
async fn a_task_that_returns_early_or_fails_stops_the_daemon_too() {
    for (name, fails) in [("returns", false), ("fails", true)] {
        let shutdown = CancellationToken::new();
        let mut service = service(&shutdown);
        service.spawn(name, None, move |_| async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if fails {
                anyhow::bail!("socket closed")
            }
            Ok(())
        });
        let err = service.run("testing").await.unwrap_err().to_string();
        assert!(err.contains(name), "{err}");
        if fails {
            assert!(err.contains("failed: socket closed"), "{err}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_exits_zero_within_the_grace_while_an_attempt_hangs() {
    let shutdown = CancellationToken::new();
    let mut service = service(&shutdown);
    service.periodic(
        "hanging",
        Every {
            interval: Duration::from_secs(60),
            deadline: Duration::from_secs(240),
            backoff: None,
            beat: Beat::AfterEveryAttempt,
        },
        FnJob(|| async {
            tokio::time::sleep(Duration::from_secs(1000)).await;
            Attempt::Done
        }),
    );
    let run = tokio::spawn(service.run("testing"));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let signalled = Instant::now();
    shutdown.cancel();
    run.await.unwrap().unwrap();
    assert_eq!(signalled.elapsed(), GRACE);
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_exponentially_with_jitter_up_to_the_cap_and_shutdown_cuts_the_wait() {
    let shutdown = CancellationToken::new();
    let mut service = service(&shutdown);
    let starts = Arc::new(Mutex::new(Vec::new()));
    let seen = starts.clone();
    service.periodic(
        "failing",
        Every {
            interval: Duration::from_secs(300),
            deadline: Duration::from_secs(10),
            backoff: Some(Backoff {
                first: Duration::from_secs(30),
                cap: Duration::from_secs(300),
            }),
            beat: Beat::AfterEveryAttempt,
        },
        FnJob(move || {
            seen.lock().unwrap().push(Instant::now());
            async { Attempt::Failed }
        }),
    );
    let origin = Instant::now();
    let run = tokio::spawn(service.run("testing"));
    tokio::time::sleep(Duration::from_secs(2000)).await;
    let signalled = Instant::now();
    shutdown.cancel();
    run.await.unwrap().unwrap();
    // Waiting in a backoff: nothing to abandon, the exit is immediate.
    assert_eq!(signalled.elapsed(), Duration::ZERO);
    let starts = starts.lock().unwrap();
    assert_eq!(starts[0], origin);
    let gaps: Vec<u64> = starts.windows(2).map(|w| (w[1] - w[0]).as_secs()).collect();
    assert!(gaps.len() >= 7, "{gaps:?}");
    for (i, gap) in gaps.iter().enumerate() {
        let nominal = (30u64 << i).min(300);
        assert!(
            (nominal / 2..=nominal).contains(gap),
            "gap {i} is {gap}s, nominal {nominal}s: {gaps:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_attempt_skips_the_missed_ticks_instead_of_bursting() {
    let shutdown = CancellationToken::new();
    let mut service = service(&shutdown);
    let starts = Arc::new(Mutex::new(Vec::new()));
    let seen = starts.clone();
    service.periodic(
        "slow",
        Every {
            interval: Duration::from_secs(100),
            deadline: Duration::from_secs(400),
            backoff: None,
            beat: Beat::AfterEveryAttempt,
        },
        FnJob(move || {
            let first = {
                let mut s = seen.lock().unwrap();
                s.push(Instant::now());
                s.len() == 1
            };
            async move {
                if first {
                    tokio::time::sleep(Duration::from_secs(250)).await;
                }
                Attempt::Done
            }
        }),
    );
    let origin = Instant::now();
    let run = tokio::spawn(service.run("testing"));
    tokio::time::sleep(Duration::from_secs(650)).await;
    shutdown.cancel();
    run.await.unwrap().unwrap();
    let offsets: Vec<u64> = starts
        .lock()
        .unwrap()
        .iter()
        .map(|t| (*t - origin).as_secs())
        .collect();
    // The ticks missed at 100 s and 200 s become one attempt at once, then the schedule
    // resumes: no burst of two.
    assert_eq!(offsets, vec![0, 250, 300, 400, 500, 600]);
}

/// Collects the log lines written while it is the thread's default subscriber.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test(start_paused = true)]
async fn the_watchdog_rule_names_the_task_without_progress_and_spares_the_others() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);

    let shutdown = CancellationToken::new();
    let mut service = service(&shutdown);
    let every = |beat| Every {
        interval: Duration::from_secs(10),
        deadline: Duration::from_secs(5),
        backoff: None,
        beat,
    };
    // Fails every time but is alive: a failing outside service is not a reason to restart.
    service.periodic(
        "failing job",
        every(Beat::AfterEveryAttempt),
        FnJob(|| async { Attempt::Failed }),
    );
    // A probe that fails every time: no progress.
    service.periodic(
        "failing probe",
        every(Beat::OnSuccess),
        FnJob(|| async { Attempt::Failed }),
    );
    service.periodic(
        "healthy probe",
        every(Beat::OnSuccess),
        FnJob(|| async { Attempt::Done }),
    );
    service.spawn("stuck", Some(Duration::from_secs(30)), |task| async move {
        task.stop.cancelled().await;
        Ok(())
    });
    let run = tokio::spawn(service.run("testing"));
    tokio::time::sleep(Duration::from_secs(130)).await;
    shutdown.cancel();
    run.await.unwrap().unwrap();
    let text = logs.text();
    let stalled_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("not pinging the watchdog"))
        .collect();
    assert_eq!(stalled_lines.len(), 2, "{text}");
    assert!(
        stalled_lines
            .iter()
            .any(|l| l.contains("task=\"failing probe\"")),
        "{text}"
    );
    assert!(
        stalled_lines.iter().any(|l| l.contains("task=\"stuck\"")),
        "{text}"
    );
}

#[test]
fn the_rule_is_every_bound_kept() {
    let s = |n| Duration::from_secs(n);
    assert!(stalled([("a", s(5), s(10)), ("b", s(10), s(10))]).is_empty());
    assert_eq!(
        stalled([("a", s(5), s(10)), ("b", s(11), s(10))]),
        vec![("b", s(11), s(10))]
    );
}

proptest! {
    #[test]
    fn backoff_stays_between_half_the_nominal_delay_and_the_cap(
        first_ms in 1u64..120_000,
        cap_ms in 1u64..3_600_000,
        failures in 1u32..100,
        unit in 0.0f64..1.0,
    ) {
        let backoff = Backoff { first: Duration::from_millis(first_ms), cap: Duration::from_millis(cap_ms) };
        let delay = backoff.delay(failures, unit);
        let nominal = Duration::from_millis(first_ms)
            .saturating_mul(1u32 << (failures - 1).min(31))
            .min(backoff.cap);
        prop_assert!(delay <= backoff.cap);
        prop_assert!(delay <= nominal);
        prop_assert!(delay >= nominal / 2);
        // More failures never shorten the lower bound.
        prop_assert!(backoff.delay(failures + 1, 0.0) >= backoff.delay(failures, 0.0));
    }
}

#[test]
fn jitter_units_differ_and_stay_in_range() {
    let units: Vec<f64> = (0..64).map(|_| mt_common::service::jitter_unit()).collect();
    assert!(units.iter().all(|u| (0.0..1.0).contains(u)));
    let mut distinct = units.clone();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup();
    assert!(distinct.len() > 60, "{units:?}");
}
