//! Opening the database and the write transaction type.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions as _, Connection as _, SqlitePool};

use crate::migrate::{self, SchemaStatus};
use crate::writes::Writes;
use crate::{Error, Result};

/// How to open the database.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// The SQLite file; created (with its parent directory) if missing.
    pub path: PathBuf,
    /// How long a statement waits for another process's write lock before failing.
    pub busy_timeout: Duration,
    /// Pool size. SQLite serialises writers anyway; a few connections let reads proceed while
    /// one connection writes.
    pub max_connections: u32,
    /// The database's clock, which judges lease expiry (SPEC §7.9). `None` (production): the
    /// clock SQLite reads in the transaction. Tests set a manual clock here, standing for the
    /// database server's clock, independent of each host's.
    pub database_clock: Option<mt_common::SharedClock>,
}

impl OpenOptions {
    /// Options for `path` with the defaults every daemon uses.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            busy_timeout: Duration::from_secs(10),
            max_connections: 4,
            database_clock: None,
        }
    }

    /// Options from the `[database]` section of the config.
    pub fn from_config(config: &mt_common::config::DatabaseConfig) -> Self {
        Self {
            busy_timeout: config.busy_timeout,
            ..Self::new(&config.path)
        }
    }
}

/// The database, shared by every task of a daemon (cheap to clone).
#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    path: Arc<PathBuf>,
    schema: Arc<SchemaStatus>,
    /// Writers of this process queue here (FIFO) instead of inside SQLite: SQLite's busy
    /// handler waits by sleeping 1, 2, 5, 10… ms, which under contention between our own
    /// connections costs far more than the transactions themselves. The busy timeout then only
    /// arbitrates between processes.
    ///
    /// The slot holds the process's write connection, kept out of the pool: a pooled
    /// connection costs two more round trips to its SQLite thread per transaction (the pool's
    /// liveness pings on acquire and on release), which is a third of the receiver's group
    /// commit (issue #22). `None` until the first write, and again after a failure, so a
    /// connection in doubt is closed (SQLite then rolls back) and the next write opens anew.
    writer: Arc<tokio::sync::Mutex<Option<SqliteConnection>>>,
    database_clock: Option<mt_common::SharedClock>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("schema_version", &self.schema.version)
            .finish()
    }
}

impl Store {
    /// Opens (creating if needed) and migrates the database.
    ///
    /// WAL journal, `synchronous = FULL` (a committed webhook survives power loss, not only a
    /// process crash), foreign keys on, and `busy_timeout` so concurrent daemons wait for each
    /// other instead of failing with "database is locked".
    pub async fn open(options: &OpenOptions) -> Result<Self> {
        let path = options.path.clone();
        let open_err = |source| Error::Open {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
            && !parent.exists()
        {
            std::fs::create_dir_all(parent).map_err(|e| open_err(sqlx::Error::Io(e)))?;
        }
        create_group_writable(&path).map_err(|e| open_err(sqlx::Error::Io(e)))?;
        let connect = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(options.busy_timeout);
        let pool = pool_options(options)
            .connect_with(connect)
            .await
            .map_err(open_err)?;
        let schema = migrate::run(&pool, &path).await;
        Self::assemble(pool, path, schema, options).await
    }

    /// Opens an existing database for an operator's read command (SPEC §5, §9): never creates,
    /// never migrates, never changes the journal mode; read-write when this user may write
    /// (reading a WAL database writes its `-shm` file), else read-only. A database whose schema
    /// is older than this binary is refused with a message saying who may upgrade it.
    pub async fn open_for_reading(options: &OpenOptions) -> Result<Self> {
        let path = options.path.clone();
        match path.try_exists() {
            Ok(true) => {}
            Ok(false) => return Err(Error::Missing(path)),
            Err(e) => {
                return Err(Error::Open {
                    path,
                    source: sqlx::Error::Io(e),
                });
            }
        }
        let connect = |read_only: bool| {
            SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(false)
                .read_only(read_only)
                .foreign_keys(true)
                .busy_timeout(options.busy_timeout)
        };
        // Probe with a query, so a permission problem shows here, where the read-only fallback
        // answers it; any other failure (busy past the timeout, not a database) is reported
        // as it is.
        let read_write = match pool_options(options).connect_with(connect(false)).await {
            Ok(pool) => match sqlx::query("SELECT COUNT(*) FROM sqlite_master")
                .execute(&pool)
                .await
            {
                Ok(_) => Ok(pool),
                Err(e) => {
                    pool.close().await;
                    Err(e)
                }
            },
            Err(e) => Err(e),
        };
        let pool = match read_write {
            Ok(pool) => pool,
            Err(e) if is_permission(&e) => pool_options(options)
                .connect_with(connect(true))
                .await
                .map_err(|source| Error::Open {
                    path: path.clone(),
                    source,
                })?,
            Err(source) => {
                return Err(Error::Open {
                    path: path.clone(),
                    source,
                });
            }
        };
        let schema = migrate::current(&pool, &path).await;
        Self::assemble(pool, path, schema, options).await
    }

    /// The store over an open pool, once its schema is settled; a schema error closes the pool.
    async fn assemble(
        pool: SqlitePool,
        path: PathBuf,
        schema: Result<SchemaStatus>,
        options: &OpenOptions,
    ) -> Result<Self> {
        match schema {
            Ok(schema) => Ok(Self {
                pool,
                path: Arc::new(path),
                schema: Arc::new(schema),
                writer: Arc::new(tokio::sync::Mutex::new(None)),
                database_clock: options.database_clock.clone(),
            }),
            Err(e) => {
                pool.close().await;
                Err(e)
            }
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What opening did to the schema (version, migrations applied, legacy columns added).
    pub fn schema(&self) -> &SchemaStatus {
        &self.schema
    }

    /// Starts a write transaction with `BEGIN IMMEDIATE`: the write lock is taken up front, so a
    /// transaction that reads and then writes cannot fail half-way with `SQLITE_BUSY`.
    ///
    /// Only one `WriteTx` of a process exists at a time (they queue in FIFO order); a task
    /// holding one must not call `begin` again before committing or dropping it.
    pub async fn begin(&self) -> Result<WriteTx> {
        let mut slot = self.writer.clone().lock_owned().await;
        if self.pool.is_closed() {
            return Err(sqlx::Error::PoolClosed.into());
        }
        let mut conn = match slot.take() {
            Some(conn) => conn,
            None => self.pool.connect_options().connect().await?,
        };
        // On failure the connection is dropped: one that cannot begin is not trusted again.
        sqlx::query("BEGIN IMMEDIATE").execute(&mut conn).await?;
        Ok(WriteTx {
            open: Some(Open { conn, slot }),
            database_clock: self.database_clock.clone(),
        })
    }

    /// Checks that the database answers (for `/healthz`).
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Adds the harness's "database probe" to `service`: a ping every 10 s (5 s deadline)
    /// that counts as progress only when it answers, so a database that stops answering for
    /// longer than the probe's bound stops the watchdog pings (SPEC §11).
    pub fn supervise_probe(&self, service: &mut mt_common::service::Service) {
        use mt_common::service::{Attempt, Beat, Every, FnJob};
        let store = self.clone();
        service.periodic(
            "database probe",
            Every {
                interval: std::time::Duration::from_secs(10),
                deadline: std::time::Duration::from_secs(5),
                backoff: None,
                beat: Beat::OnSuccess,
            },
            FnJob(move || {
                let store = store.clone();
                async move {
                    match store.ping().await {
                        Ok(()) => Attempt::Done,
                        Err(e) => {
                            tracing::warn!(error = %e, "the database does not answer");
                            Attempt::Failed
                        }
                    }
                }
            }),
        );
    }

    /// Writes a consistent copy of the database to `target` while other processes keep
    /// writing (`VACUUM INTO`: one read transaction, so the copy is a single snapshot). Refuses
    /// to overwrite an existing file.
    pub async fn backup_to(&self, target: &Path) -> Result<()> {
        if target.exists() {
            return Err(Error::BackupTargetExists(target.to_path_buf()));
        }
        let target = target.to_str().ok_or_else(|| {
            Error::Invalid(format!("backup path {} is not UTF-8", target.display()))
        })?;
        sqlx::query("VACUUM INTO ?1")
            .bind(target)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Closes every connection (checkpointing the WAL when this was the last user).
    pub async fn close(&self) {
        self.pool.close().await;
        // A transaction still open keeps its connection until it ends; `begin` refuses from now.
        let idle = self.writer.try_lock().ok().and_then(|mut slot| slot.take());
        if let Some(conn) = idle {
            conn.close().await.ok();
        }
    }

    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// Whether opening read-write failed for lack of permission (the file, its `-shm`/`-wal`, or
/// the directory), so a read-only open may still work.
fn is_permission(e: &sqlx::Error) -> bool {
    if let sqlx::Error::Io(io) = e {
        return io.kind() == std::io::ErrorKind::PermissionDenied;
    }
    // SQLITE_PERM (3), SQLITE_READONLY (8), SQLITE_CANTOPEN (14), SQLITE_AUTH (23).
    e.as_database_error()
        .and_then(|d| d.code())
        .and_then(|c| c.parse::<i64>().ok())
        .is_some_and(|c| matches!(c & 0xff, 3 | 8 | 14 | 23))
}

/// The pool every open uses: a few connections, waiting a little longer than `busy_timeout`.
fn pool_options(options: &OpenOptions) -> SqlitePoolOptions {
    SqlitePoolOptions::new()
        .max_connections(options.max_connections.max(1))
        .acquire_timeout(options.busy_timeout + Duration::from_secs(5))
}

/// Creates a missing database file with mode 0660 (less the process umask: the units' `UMask=0007`
/// keeps it), so members of the suite's group can read it and write its `-wal`/`-shm` files,
/// which SQLite creates with the database file's mode (SPEC §11). SQLite alone would create it
/// 0644 less the umask. An existing file is left as it is.
fn create_group_writable(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o660)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// A write transaction (`BEGIN IMMEDIATE`) on the process's write connection. Dropped without
/// [`WriteTx::commit`], it rolls back.
pub struct WriteTx {
    /// `Some` from `begin` until `commit`, `rollback` or drop takes it.
    open: Option<Open>,
    database_clock: Option<mt_common::SharedClock>,
}

/// The write connection, out of its slot while the transaction is open. Whoever ends the
/// transaction puts it back, or drops it (closing it rolls back) if ending failed.
struct Open {
    conn: SqliteConnection,
    slot: tokio::sync::OwnedMutexGuard<Option<SqliteConnection>>,
}

impl Open {
    /// Runs `writes` then `last` (`COMMIT` or `ROLLBACK`), in one round trip. The connection
    /// goes back to its slot if that worked or if a `ROLLBACK` after the failure did (a failed
    /// statement stops the ones after it, `last` included); else it is closed.
    async fn end(mut self, writes: Writes, last: &'static str) -> Result<()> {
        let ended = match writes.finish(Some(last)) {
            Ok((sql, args)) => sqlx::query_with(sql, args)
                .execute(&mut self.conn)
                .await
                .map(drop)
                .map_err(Error::from),
            Err(e) => Err(e),
        };
        match ended {
            Ok(()) => {
                *self.slot = Some(self.conn);
                Ok(())
            }
            Err(e) => {
                if sqlx::query("ROLLBACK")
                    .execute(&mut self.conn)
                    .await
                    .is_ok()
                {
                    *self.slot = Some(self.conn);
                }
                Err(e)
            }
        }
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        let Some(open) = self.open.take() else {
            return;
        };
        // The slot stays locked until the rollback is done. Without a runtime the connection is
        // dropped instead: SQLite rolls back when it closes, and the next `begin` reconnects.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = open.end(Writes::new(), "ROLLBACK").await {
                    tracing::warn!(error = %e, "rolling back a dropped write transaction failed");
                }
            });
        }
    }
}

impl fmt::Debug for WriteTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WriteTx")
    }
}

impl WriteTx {
    /// Makes every write of this transaction durable.
    pub async fn commit(self) -> Result<()> {
        self.commit_with(Writes::new()).await
    }

    /// Runs `writes` and commits, in one round trip to SQLite's thread. If a statement
    /// fails, nothing of the transaction is kept and its error is returned.
    pub async fn commit_with(mut self, writes: Writes) -> Result<()> {
        match self.open.take() {
            Some(open) => open.end(writes, "COMMIT").await,
            None => Err(Error::Invalid("the write transaction has ended".into())),
        }
    }

    /// Discards every write of this transaction.
    pub async fn rollback(mut self) -> Result<()> {
        match self.open.take() {
            Some(open) => open.end(Writes::new(), "ROLLBACK").await,
            None => Err(Error::Invalid("the write transaction has ended".into())),
        }
    }

    // `open` is only taken by `commit`, `rollback` and `drop`, which consume the WriteTx: no
    // caller can see it empty.
    #[allow(clippy::expect_used)]
    pub(crate) fn conn(&mut self) -> &mut SqliteConnection {
        &mut self
            .open
            .as_mut()
            .expect("a WriteTx's connection is present until it ends")
            .conn
    }

    /// The database's clock, in Unix milliseconds (SPEC §7.9: it judges lease expiry).
    pub async fn database_now_ms(&mut self) -> Result<i64> {
        if let Some(clock) = &self.database_clock {
            return Ok(clock.now().timestamp_millis());
        }
        let (ms,): (i64,) = sqlx::query_as(
            "SELECT CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)",
        )
        .fetch_one(self.conn())
        .await?;
        Ok(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs one statement in `tx`.
    async fn run(tx: &mut WriteTx, sql: &'static str) {
        sqlx::query(sql).execute(tx.conn()).await.unwrap();
    }

    async fn count(store: &Store) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(store.pool())
            .await
            .unwrap()
    }

    /// A store in `dir` with a table `t` whose foreign key is checked at COMMIT, so a commit
    /// can be made to fail.
    async fn with_deferred_table(dir: &tempfile::TempDir) -> Store {
        let store = Store::open(&OpenOptions::new(dir.path().join("t.db")))
            .await
            .unwrap();
        let mut tx = store.begin().await.unwrap();
        sqlx::query(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, \
             parent INTEGER REFERENCES t(id) DEFERRABLE INITIALLY DEFERRED)",
        )
        .execute(tx.conn())
        .await
        .unwrap();
        tx.commit().await.unwrap();
        store
    }

    #[tokio::test]
    async fn a_failed_commit_rolls_back_and_the_next_transaction_begins() {
        let dir = tempfile::tempdir().unwrap();
        let store = with_deferred_table(&dir).await;
        let mut tx = store.begin().await.unwrap();
        run(&mut tx, "INSERT INTO t (id, parent) VALUES (1, 99)").await;
        let err = tx.commit().await.unwrap_err();
        assert!(err.to_string().contains("FOREIGN KEY"), "{err}");
        assert_eq!(count(&store).await, 0);
        let mut tx = store.begin().await.unwrap();
        run(&mut tx, "INSERT INTO t (id, parent) VALUES (1, NULL)").await;
        tx.commit().await.unwrap();
        assert_eq!(count(&store).await, 1);
    }

    #[tokio::test]
    async fn a_failed_write_with_the_commit_keeps_nothing_of_the_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let store = with_deferred_table(&dir).await;
        let mut tx = store.begin().await.unwrap();
        run(&mut tx, "INSERT INTO t (id) VALUES (1)").await;
        let mut writes = Writes::new();
        writes
            .rows("INSERT INTO t (id) VALUES ", "(?)", 1, "")
            .bind(2);
        writes
            .rows("INSERT INTO t (id) VALUES ", "(?)", 1, "")
            .bind(1);
        writes
            .rows("INSERT INTO t (id) VALUES ", "(?)", 1, "")
            .bind(3);
        let err = tx.commit_with(writes).await.unwrap_err();
        assert!(err.to_string().contains("UNIQUE"), "{err}");
        assert_eq!(count(&store).await, 0);
        let mut tx = store.begin().await.unwrap();
        let mut writes = Writes::new();
        writes
            .rows("INSERT INTO t (id) VALUES ", "(?)", 2, "")
            .bind(1)
            .bind(2);
        run(&mut tx, "INSERT INTO t (id) VALUES (3)").await;
        tx.commit_with(writes).await.unwrap();
        assert_eq!(count(&store).await, 3);
    }

    #[tokio::test]
    async fn a_dropped_transaction_releases_the_write_lock_to_other_processes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = with_deferred_table(&dir).await;
        let mut tx = store.begin().await.unwrap();
        run(&mut tx, "INSERT INTO t (id) VALUES (1)").await;
        drop(tx);
        // Another process's writer gets the lock once the rollback has run (it would time out
        // if the dropped transaction kept it).
        let other = Store::open(&OpenOptions {
            busy_timeout: Duration::from_secs(5),
            ..OpenOptions::new(&path)
        })
        .await
        .unwrap();
        let mut tx = other.begin().await.unwrap();
        run(&mut tx, "INSERT INTO t (id) VALUES (2)").await;
        tx.commit().await.unwrap();
        let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM t")
            .fetch_all(store.pool())
            .await
            .unwrap();
        assert_eq!(ids, vec![2]);
        // And this process writes again on its own connection.
        store.begin().await.unwrap().commit().await.unwrap();
    }

    #[tokio::test]
    async fn a_closed_store_begins_no_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&OpenOptions::new(dir.path().join("t.db")))
            .await
            .unwrap();
        store.begin().await.unwrap().commit().await.unwrap();
        store.close().await;
        let err = store.begin().await.unwrap_err();
        assert!(err.to_string().contains("closed"), "{err}");
    }
}
