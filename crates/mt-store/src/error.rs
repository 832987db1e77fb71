//! The store's error type: sqlx errors are classified so callers (and operators) can tell a busy
//! or read-only database from a bug.

use std::path::PathBuf;

/// Result alias for store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong with the database.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be opened or created.
    #[error("cannot open database {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// The database was migrated by a newer binary.
    #[error(
        "database {path} has schema version {found}, newer than this binary supports ({supported}); \
         run the newer binary or restore a backup taken before the upgrade"
    )]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// Highest version recorded in the database.
        found: i64,
        /// Highest version embedded in this binary.
        supported: i64,
    },
    /// A read command found a database older than this binary: only a daemon or
    /// `mtctl migrate` upgrades it.
    #[error(
        "database {path} has schema version {found}, older than this binary's ({supported}); \
         read commands never upgrade it: start the daemons, or run `mtctl migrate` as the suite's \
         user (e.g. sudo -u magic-transit mtctl migrate)"
    )]
    SchemaTooOld {
        /// The database file.
        path: PathBuf,
        /// Highest version recorded in the database (0: none).
        found: i64,
        /// Highest version embedded in this binary.
        supported: i64,
    },
    /// A read command found no database file.
    #[error(
        "no database at {0}: it is created when a daemon starts or by `mtctl migrate` (check database.path)"
    )]
    Missing(PathBuf),
    /// An applied migration differs from the embedded one (a landed migration was edited).
    #[error(
        "database {path}: migration {version} ({description}) differs from the one applied to \
         this database; migrations are append-only"
    )]
    ChecksumMismatch {
        /// The database file.
        path: PathBuf,
        /// The migration's version.
        version: i64,
        /// The migration's description.
        description: String,
    },
    /// A migration failed; the transaction was rolled back and nothing changed.
    #[error("database {path}: migration {version} ({description}) failed: {source}")]
    Migration {
        /// The database file.
        path: PathBuf,
        /// The migration's version.
        version: i64,
        /// The migration's description.
        description: String,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// Another process held the write lock for longer than `busy_timeout`.
    #[error("database is busy: another process held the write lock longer than busy_timeout ({0})")]
    Busy(sqlx::Error),
    /// The file or its directory is not writable by this process.
    #[error("database is read-only for this process (check file and directory permissions): {0}")]
    ReadOnly(sqlx::Error),
    /// `backup` refuses to overwrite an existing file.
    #[error("backup target {0} already exists; choose a new file name")]
    BackupTargetExists(PathBuf),
    /// A fenced write by a process whose lease was taken over (SPEC §7.9): nothing was written.
    #[error(
        "lease {name} is now held by another instance (this one was too slow, paused or cut off); nothing was written"
    )]
    LeaseLost {
        /// The lease.
        name: String,
    },
    /// A caller passed a value the schema cannot hold.
    #[error("invalid value: {0}")]
    Invalid(String),
    /// Any other driver error.
    #[error("database error: {0}")]
    Sqlx(sqlx::Error),
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        match primary_code(&e) {
            Some(5 | 6) => Self::Busy(e),
            Some(8) => Self::ReadOnly(e),
            _ => Self::Sqlx(e),
        }
    }
}

impl Error {
    /// True when retrying later may succeed (lock contention), as opposed to a permanent fault.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Busy(_))
    }
}

/// The primary SQLite result code (`SQLITE_BUSY` = 5, `SQLITE_LOCKED` = 6, `SQLITE_READONLY` = 8)
/// of a database error; extended codes carry it in their low byte.
fn primary_code(e: &sqlx::Error) -> Option<i64> {
    let db = e.as_database_error()?;
    let code: i64 = db.code()?.parse().ok()?;
    Some(code & 0xff)
}
