//! The raw-body archive (SPEC §6): `archive_dir/webhook_<UTC %Y%m%d_%H%M%S>_<id>.json`, the
//! format `mtctl import-webhooks` reads, written from the database after the acknowledgement.
//!
//! A webhook is acknowledged once its row (with the raw body in `webhook_events.payload`) is
//! committed; no file-system fsync is on that path. The [`ArchiveWriter`], a supervised task of
//! the receiver, then copies every row whose `archived_at` is NULL, oldest first, in batches:
//! - each body is written to `archive_dir/.incoming/`, fsync'd and renamed to its final name,
//!   so a final name only ever holds a complete body;
//! - a final name that already exists is not written again (a crash after the rename and
//!   before the progress was recorded): no file is ever written twice;
//! - one directory fsync per batch makes the renames durable, then one transaction records the
//!   batch's `archived_at` (the progress; after a crash the writer resumes from the NULL rows);
//! - it wakes when the ingest writer commits, and at least every second; while the ingest
//!   writer is busy (a commit within [`QUIET`]) it pauses [`BUSY_PAUSE`] after each batch that
//!   emptied the backlog ([`pause_after`]), so the disk sees one burst of archive fsyncs and
//!   one progress transaction per pause instead of per commit (measured in BENCHMARKS.md:
//!   batches of 16 after every commit cost the acknowledgements 10–20 % of their rate).
//!
//! `/metrics` shows the backlog (rows, age of the oldest) and `/healthz` degrades when the
//! oldest unarchived webhook is older than [`HEALTHY_BACKLOG_AGE`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use mt_common::SharedClock;
use mt_common::service::{Backoff, Progress, Task};
use mt_store::{Store, Unarchived};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// `/healthz` answers 503 while a webhook waits longer than this for its archive copy.
pub const HEALTHY_BACKLOG_AGE: Duration = Duration::from_secs(60);

/// Rows archived per batch (one directory fsync and one transaction each).
pub const BATCH: u32 = 1024;

/// While webhooks arrive, the writer waits this long after a batch that emptied the backlog.
/// It still writes up to `BATCH` rows per pause (5,120 a second, more than the receiver takes),
/// and a full batch is followed at once by the next.
pub const BUSY_PAUSE: Duration = Duration::from_millis(200);

/// The writer looks at the backlog at least this often, even without a wake-up.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// Retry delays after a failed batch (a full or read-only disk): the acknowledgements go on
/// meanwhile, and `/healthz` reports the backlog.
const RETRY: Backoff = Backoff {
    first: Duration::from_secs(1),
    cap: Duration::from_secs(30),
};

/// The longest a healthy writer goes between two beats of its progress (the watchdog rule):
/// it beats at every look at the backlog, failed ones included.
pub const PROGRESS_BOUND: Duration = Duration::from_secs(90);

/// The archive directory.
#[derive(Debug)]
pub struct Archive {
    dir: PathBuf,
    incoming: PathBuf,
    seq: AtomicU64,
}

impl Archive {
    /// Opens (creating) `dir`, checks it is writable and removes the temporary files a crash
    /// left in `.incoming/` (their rows are still unarchived, so they are written again).
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        let incoming = dir.join(".incoming");
        std::fs::create_dir_all(&incoming)?;
        let mut removed = 0;
        for entry in std::fs::read_dir(&incoming)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                std::fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(removed, "removed unfinished archive files");
        }
        let probe = incoming.join(format!("probe-{}", std::process::id()));
        std::fs::write(&probe, b"")?;
        std::fs::remove_file(&probe)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            incoming,
            seq: AtomicU64::new(0),
        })
    }

    /// The final file name of webhook `id` received at `at`.
    pub fn file_name(at: DateTime<Utc>, id: i64) -> String {
        format!("webhook_{}_{id}.json", at.format("%Y%m%d_%H%M%S"))
    }

    /// Writes one batch of rows (blocking) and returns how many files it wrote:
    /// 1. every body whose final name does not exist yet is written to `.incoming/` (a final
    ///    name that exists was renamed before a crash: it is complete and not written again);
    /// 2. each is fsync'd (the first fsync flushes most of the batch; the others find little
    ///    left to write), so a rename never exposes an incomplete body;
    /// 3. each is renamed to its final name, and one directory fsync makes the renames durable.
    fn write_batch(&self, rows: &[Unarchived]) -> std::io::Result<usize> {
        let mut staged = Vec::with_capacity(rows.len());
        let result = self.stage_and_place(rows, &mut staged);
        for (temp, _) in &staged {
            // Left only when a step failed: never a final file.
            let _ = std::fs::remove_file(temp);
        }
        result
    }

    /// Makes the renames durable (blocking).
    fn sync_dir(&self) -> std::io::Result<()> {
        std::fs::File::open(&self.dir)?.sync_all()
    }

    fn stage_and_place(
        &self,
        rows: &[Unarchived],
        staged: &mut Vec<(PathBuf, PathBuf)>,
    ) -> std::io::Result<usize> {
        let mut files = Vec::with_capacity(rows.len());
        for row in rows {
            let Some(payload) = row.payload.as_deref() else {
                tracing::warn!(
                    id = row.id,
                    "stored webhook without a payload; nothing to archive"
                );
                continue;
            };
            // Our rows always carry a reception time; a legacy row without one is named by
            // its id alone.
            let name = match row
                .received_at
                .as_deref()
                .and_then(mt_common::timefmt::from_db)
            {
                Some(at) => Self::file_name(at, row.id),
                None => format!("webhook_{}.json", row.id),
            };
            let target = self.dir.join(name);
            if target.try_exists()? {
                continue;
            }
            let temp = self.incoming.join(format!(
                "{}-{}.json",
                std::process::id(),
                self.seq.fetch_add(1, Ordering::Relaxed)
            ));
            let mut f = std::fs::File::create(&temp)?;
            staged.push((temp, target));
            f.write_all(payload.as_bytes())?;
            files.push(f);
        }
        for f in &files {
            f.sync_all()?;
        }
        drop(files);
        let written = staged.len();
        while let Some((temp, target)) = staged.pop() {
            if let Err(e) = std::fs::rename(&temp, &target) {
                staged.push((temp, target));
                return Err(e);
            }
        }
        self.sync_dir()?;
        Ok(written)
    }
}

/// Copies stored webhooks to the archive (see the module documentation). Cheap to clone.
#[derive(Debug, Clone)]
pub struct ArchiveWriter {
    store: Store,
    archive: Arc<Archive>,
    clock: SharedClock,
    wake: Arc<Notify>,
    /// Milliseconds after `origin` of the last commit of the ingest writer.
    last_commit: Arc<AtomicU64>,
    origin: Instant,
}

/// The ingest writer counts as busy while it committed within this time.
pub const QUIET: Duration = Duration::from_millis(50);

/// The pause before the next batch, given how many rows the last one took and the time since
/// the ingest writer's last commit: none while a backlog remains (the last batch was full) or
/// once webhooks stop arriving (the rest is written at once); [`BUSY_PAUSE`] while they
/// arrive, so the archive's fsyncs come in one burst per pause instead of one per commit.
pub fn pause_after(rows: usize, since_commit: Duration) -> Option<Duration> {
    (rows < BATCH as usize && since_commit < QUIET).then_some(BUSY_PAUSE)
}

impl ArchiveWriter {
    /// A writer for `archive`, woken through [`ArchiveWriter::wake`].
    pub fn new(store: Store, archive: Arc<Archive>, clock: SharedClock) -> Self {
        Self {
            store,
            archive,
            clock,
            wake: Arc::new(Notify::new()),
            last_commit: Arc::new(AtomicU64::new(0)),
            origin: Instant::now(),
        }
    }

    /// Tells the writer new rows are committed.
    pub fn wake(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_commit.store(ms, Ordering::Relaxed);
        self.wake.notify_one();
    }

    fn since_commit(&self) -> Duration {
        self.origin.elapsed().saturating_sub(Duration::from_millis(
            self.last_commit.load(Ordering::Relaxed),
        ))
    }

    /// Writes one batch of rows and records it; returns how many files were written.
    async fn archive(&self, rows: Vec<Unarchived>) -> anyhow::Result<usize> {
        let archive = self.archive.clone();
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let files = tokio::task::spawn_blocking(move || archive.write_batch(&rows))
            .await
            .map_err(|e| anyhow::anyhow!("the archive task failed: {e}"))??;
        let mut tx = self.store.begin().await?;
        tx.mark_webhooks_archived(&ids, self.clock.now()).await?;
        tx.commit().await?;
        Ok(files)
    }

    /// Archives batches until the backlog is empty or `stop` is cancelled, without deferring;
    /// returns how many files were written. A failure leaves the failed batch unarchived.
    pub async fn drain(
        &self,
        stop: &CancellationToken,
        progress: &Progress,
    ) -> anyhow::Result<u64> {
        let mut written = 0u64;
        while !stop.is_cancelled() {
            let rows = self.store.unarchived_webhooks(BATCH).await?;
            if rows.is_empty() {
                break;
            }
            written += self.archive(rows).await? as u64;
            progress.beat();
        }
        Ok(written)
    }

    /// One look at the backlog: writes a batch if there is one; returns how many rows it
    /// took.
    async fn turn(&self) -> anyhow::Result<usize> {
        let rows = self.store.unarchived_webhooks(BATCH).await?;
        let taken = rows.len();
        if taken > 0 {
            self.archive(rows).await?;
        }
        Ok(taken)
    }

    /// The supervised task, until `task.stop`: writes batches (pausing as [`pause_after`]
    /// says) until the backlog is empty, then waits for a commit; retries a failed batch after a capped
    /// backoff.
    pub async fn run(self, task: Task) -> anyhow::Result<()> {
        let mut failures = 0u32;
        loop {
            task.progress.beat();
            let turn = tokio::select! {
                turn = self.turn() => turn,
                () = mt_common::shutdown::grace_elapsed(&task.stop, mt_common::shutdown::GRACE) => {
                    // Safe: the unfinished batch is still unarchived and written after the
                    // restart (a file already renamed is not written again).
                    return Ok(());
                }
            };
            let pause = match turn {
                Ok(taken) if taken > 0 => {
                    failures = 0;
                    if task.stop.is_cancelled() {
                        return Ok(());
                    }
                    if let Some(pause) = pause_after(taken, self.since_commit()) {
                        tokio::select! {
                            () = task.stop.cancelled() => return Ok(()),
                            () = tokio::time::sleep(pause) => {}
                        }
                    }
                    continue;
                }
                Ok(_) => {
                    failures = 0;
                    None
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let delay = RETRY.delay(failures, mt_common::service::jitter_unit());
                    tracing::warn!(error = %format!("{e:#}"), failures, retry_in_secs = delay.as_secs(), "archive copies not written; the webhooks are safe in the database");
                    // After a failure, new commits do not cut the backoff short.
                    Some(delay)
                }
            };
            match pause {
                Some(delay) => tokio::select! {
                    () = task.stop.cancelled() => return Ok(()),
                    () = tokio::time::sleep(delay) => {}
                },
                None => tokio::select! {
                    () = task.stop.cancelled() => return Ok(()),
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(IDLE_CHECK) => {}
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_pauses_only_while_webhooks_arrive_and_no_backlog_remains() {
        let busy = QUIET - Duration::from_millis(1);
        assert_eq!(pause_after(1, Duration::ZERO), Some(BUSY_PAUSE));
        assert_eq!(pause_after(BATCH as usize - 1, busy), Some(BUSY_PAUSE));
        assert_eq!(pause_after(BATCH as usize, busy), None, "a backlog remains");
        assert_eq!(pause_after(1, QUIET), None, "webhooks stopped: finish now");
    }
}
