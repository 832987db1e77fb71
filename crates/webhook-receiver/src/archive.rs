//! The raw-body archive (SPEC §6): `archive_dir/webhook_<UTC %Y%m%d_%H%M%S>_<id>.json`, the
//! format `mtctl import-webhooks` reads.
//!
//! A body is first written and fsync'd to `archive_dir/.incoming/` *before* the database write
//! lock is taken (so slow disks do not serialise webhooks), renamed to its final name once its
//! row is committed, and the directory is fsync'd before the webhook is acknowledged. So a final
//! file exists only for a committed row. A staged file that is never placed is removed when
//! dropped; leftovers from a crash were never acknowledged and are removed at start. A committed
//! row whose file is missing (a crash between commit and rename) is re-archived from the row's
//! stored payload ([`Archive::ensure`]) at start and when its retry arrives as a duplicate.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};

/// The archive directory.
#[derive(Debug)]
pub struct Archive {
    dir: PathBuf,
    incoming: PathBuf,
    seq: AtomicU64,
}

/// A body written to `.incoming/`, not yet placed.
#[derive(Debug)]
pub struct Staged {
    path: Option<PathBuf>,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Archive {
    /// Opens (creating) `dir`, checks it is writable and removes unacknowledged leftovers.
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
            tracing::info!(removed, "removed unacknowledged staged webhook bodies");
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

    /// Writes and fsyncs `body` under `.incoming/`.
    pub async fn stage(&self, body: &[u8]) -> std::io::Result<Staged> {
        let path = self.incoming.join(format!(
            "{}-{}-{}.json",
            std::process::id(),
            Utc::now().timestamp_nanos_opt().unwrap_or_default(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        ));
        let body = body.to_vec();
        let staged = Staged {
            path: Some(path.clone()),
        };
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&path)?;
            f.write_all(&body)?;
            f.sync_all()
        })
        .await
        .map_err(std::io::Error::other)??;
        Ok(staged)
    }

    /// The final file name of webhook `id` received at `at`.
    pub fn file_name(at: DateTime<Utc>, id: i64) -> String {
        format!("webhook_{}_{id}.json", at.format("%Y%m%d_%H%M%S"))
    }

    /// Renames a staged body to its final name (atomic, same directory tree).
    pub fn place(&self, mut staged: Staged, name: &str) -> std::io::Result<PathBuf> {
        let target = self.dir.join(name);
        let from = staged
            .path
            .take()
            .ok_or_else(|| std::io::Error::other("already placed"))?;
        if let Err(e) = std::fs::rename(&from, &target) {
            staged.path = Some(from);
            return Err(e);
        }
        Ok(target)
    }

    /// Writes webhook `id`'s file from its stored payload if it is missing. Returns whether a
    /// file was written.
    pub async fn ensure(&self, at: DateTime<Utc>, id: i64, payload: &str) -> std::io::Result<bool> {
        let target = self.dir.join(Self::file_name(at, id));
        if tokio::fs::try_exists(&target).await? {
            return Ok(false);
        }
        let staged = self.stage(payload.as_bytes()).await?;
        self.place(staged, &Self::file_name(at, id))?;
        self.sync_dir().await?;
        Ok(true)
    }

    /// Makes the renames durable.
    pub async fn sync_dir(&self) -> std::io::Result<()> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || std::fs::File::open(dir)?.sync_all())
            .await
            .map_err(std::io::Error::other)?
    }
}
