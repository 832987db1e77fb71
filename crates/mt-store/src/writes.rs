//! Statements sent to SQLite together, in one round trip (the receiver's group commit).

use sqlx::sqlite::SqliteArguments;
use sqlx::{Arguments as _, Encode, Sqlite, Type};

use crate::{Error, Result, WriteTx};

/// Writes whose results nobody reads, queued to run in order in one query, for
/// [`crate::WriteTx::commit_with`]. Each statement goes to SQLite's thread with the others
/// and the `COMMIT`, instead of a round trip each (issue #22). Inside the crate it also
/// builds each multi-row INSERT that runs at once, so a table has one INSERT text for both.
///
/// Only placeholders are interpolated: every value is bound. sqlx binds a statement's
/// anonymous `?` from the argument after the last one the previous statement took, so the
/// values are added in the order of the placeholders, statement after statement.
#[derive(Debug, Default)]
pub struct Writes {
    sql: String,
    args: SqliteArguments,
    /// The first value that failed to encode: the query is refused, nothing runs.
    error: Option<String>,
}

impl Writes {
    /// No statements yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether no statement was queued.
    pub fn is_empty(&self) -> bool {
        self.sql.is_empty()
    }

    /// Appends one statement: `head`, then `rows` copies of the placeholder tuple `tuple`
    /// separated by commas, then `tail`. Its values follow with [`Writes::bind`].
    pub(crate) fn rows(&mut self, head: &str, tuple: &str, rows: usize, tail: &str) -> &mut Self {
        self.sql.push_str(head);
        for i in 0..rows {
            if i > 0 {
                self.sql.push(',');
            }
            self.sql.push_str(tuple);
        }
        self.sql.push_str(tail);
        self.sql.push_str(";\n");
        self
    }

    /// Binds the next placeholder.
    pub(crate) fn bind<'t, T: Encode<'t, Sqlite> + Type<Sqlite>>(&mut self, value: T) -> &mut Self {
        if let Err(e) = self.args.add(value) {
            self.error.get_or_insert_with(|| e.to_string());
        }
        self
    }

    /// The query text and its values, `last` (e.g. `COMMIT`) appended if given.
    pub(crate) fn finish(
        mut self,
        last: Option<&str>,
    ) -> Result<(sqlx::AssertSqlSafe<String>, SqliteArguments)> {
        if let Some(error) = self.error {
            return Err(Error::Invalid(format!(
                "a value could not be bound: {error}"
            )));
        }
        if let Some(last) = last {
            self.sql.push_str(last);
        }
        Ok((sqlx::AssertSqlSafe(self.sql), self.args))
    }
}

impl WriteTx {
    /// Inserts `rows` now, `per_statement` at a time, each statement built by `statement`
    /// with `RETURNING id`; returns the new ids in the order of `rows`.
    pub(crate) async fn insert_returning_ids<T>(
        &mut self,
        rows: &[T],
        per_statement: usize,
        statement: impl Fn(&mut Writes, &[T], &str),
    ) -> Result<Vec<i64>> {
        let mut ids = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(per_statement) {
            let mut writes = Writes::new();
            statement(&mut writes, chunk, " RETURNING id");
            let (sql, args) = writes.finish(None)?;
            let mut chunk_ids: Vec<i64> = sqlx::query_scalar_with(sql, args)
                .fetch_all(self.conn())
                .await?;
            // RETURNING's order is unspecified; the rows take increasing ids in VALUES order.
            chunk_ids.sort_unstable();
            ids.extend(chunk_ids);
        }
        Ok(ids)
    }
}
