//! Schema migration on open (SPEC §5).
//!
//! The SQL files in the top-level `migrations/` are embedded at build time. All pending steps of
//! one open run inside a single `BEGIN IMMEDIATE` transaction, so several daemons starting at
//! once serialise on SQLite's write lock: the first migrates, the others find nothing to do, and
//! nobody ever sees a half-migrated schema. Applied versions and checksums are recorded in
//! `mt_schema_migrations`.
//!
//! Before the files run, a guarded step adds the columns a legacy database may lack: SQLite has
//! no `ADD COLUMN IF NOT EXISTS`, and a hand-patched legacy file may already have them.

use std::path::Path;

use sqlx::migrate::Migrator;
use sqlx::{Row, SqlitePool};

use crate::{Error, Result};

static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

/// Columns the original suite's database may lack: `(table, column, statement adding it)`.
/// The statements are static text (DDL cannot take bound parameters).
const LEGACY_COLUMNS: &[(&str, &str, &str)] = &[
    (
        "network_analytics_events",
        "source_asn",
        "ALTER TABLE network_analytics_events ADD COLUMN source_asn INTEGER",
    ),
    (
        "network_analytics_events",
        "source_asn_name",
        "ALTER TABLE network_analytics_events ADD COLUMN source_asn_name TEXT",
    ),
    (
        "network_analytics_events",
        "source_country",
        "ALTER TABLE network_analytics_events ADD COLUMN source_country TEXT",
    ),
];

/// What an open did to the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaStatus {
    /// The schema version after the open.
    pub version: i64,
    /// Versions applied by this open (empty when the database was current).
    pub applied: Vec<i64>,
    /// `table.column` added to a legacy database by the guarded step.
    pub added_columns: Vec<String>,
}

/// The newest schema version this binary knows.
pub fn embedded_schema_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// The schema of the database at `path` without changing it (for read-only opens): refused
/// when older or newer than this binary's.
pub(crate) async fn current(pool: &SqlitePool, path: &Path) -> Result<SchemaStatus> {
    let has_table: Option<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'mt_schema_migrations'",
    )
    .fetch_optional(pool)
    .await?;
    let found: i64 = match has_table {
        Some(_) => {
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM mt_schema_migrations")
                .fetch_one(pool)
                .await?
        }
        None => 0,
    };
    let supported = embedded_schema_version();
    if found > supported {
        return Err(Error::SchemaTooNew {
            path: path.to_path_buf(),
            found,
            supported,
        });
    }
    if found < supported {
        return Err(Error::SchemaTooOld {
            path: path.to_path_buf(),
            found,
            supported,
        });
    }
    Ok(SchemaStatus {
        version: found,
        applied: Vec::new(),
        added_columns: Vec::new(),
    })
}

/// Brings the database at `path` (already opened as `pool`) to the embedded schema version.
pub(crate) async fn run(pool: &SqlitePool, path: &Path) -> Result<SchemaStatus> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS mt_schema_migrations (
            version INTEGER PRIMARY KEY,
            description TEXT NOT NULL,
            checksum TEXT NOT NULL,
            applied_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
        )",
    )
    .execute(&mut *tx)
    .await?;

    let applied: Vec<(i64, String)> =
        sqlx::query_as("SELECT version, checksum FROM mt_schema_migrations ORDER BY version")
            .fetch_all(&mut *tx)
            .await?;
    let supported = embedded_schema_version();
    if let Some(&(found, _)) = applied.last()
        && found > supported
    {
        return Err(Error::SchemaTooNew {
            path: path.to_path_buf(),
            found,
            supported,
        });
    }
    for (version, checksum) in &applied {
        if let Some(m) = MIGRATOR.iter().find(|m| m.version == *version)
            && hex::encode(&m.checksum) != *checksum
        {
            return Err(Error::ChecksumMismatch {
                path: path.to_path_buf(),
                version: *version,
                description: m.description.to_string(),
            });
        }
    }

    let mut added_columns = Vec::new();
    for (table, column, statement) in LEGACY_COLUMNS {
        let columns: Vec<String> = sqlx::query("SELECT name FROM pragma_table_info(?1)")
            .bind(table)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|row| row.get::<String, _>(0))
            .collect();
        // An absent table is created complete by the baseline; only patch existing ones.
        if !columns.is_empty() && !columns.iter().any(|c| c == column) {
            sqlx::query(*statement).execute(&mut *tx).await?;
            added_columns.push(format!("{table}.{column}"));
        }
    }

    let mut newly_applied = Vec::new();
    for m in MIGRATOR.iter() {
        if applied.iter().any(|(v, _)| *v == m.version) {
            continue;
        }
        let fail = |source| Error::Migration {
            path: path.to_path_buf(),
            version: m.version,
            description: m.description.to_string(),
            source,
        };
        sqlx::raw_sql(m.sql.clone())
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
        sqlx::query(
            "INSERT INTO mt_schema_migrations (version, description, checksum) VALUES (?1, ?2, ?3)",
        )
        .bind(m.version)
        .bind(m.description.as_ref())
        .bind(hex::encode(&m.checksum))
        .execute(&mut *tx)
        .await
        .map_err(fail)?;
        newly_applied.push(m.version);
    }
    tx.commit().await?;

    if !newly_applied.is_empty() || !added_columns.is_empty() {
        tracing::info!(
            path = %path.display(),
            version = supported,
            applied = ?newly_applied,
            added_columns = ?added_columns,
            "database schema migrated"
        );
    }
    Ok(SchemaStatus {
        version: supported,
        applied: newly_applied,
        added_columns,
    })
}
