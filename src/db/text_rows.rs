//! Rows of text: what a source's poll reads (its generated query selects every column as text, so
//! that a cursor keeps the database's own exact value) and the horizon it reads on PostgreSQL.

use std::time::Duration;

use sqlx::{AssertSqlSafe, Executor, Row, Type};

use super::error::{Failed, LookupError};
use super::{Database, Pools};

/// A parameter of a source's query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Param {
    Int(i64),
    Text(String),
}

/// One row, each column as text (`None` for NULL).
pub type TextRow = Vec<Option<String>>;

impl Database {
    /// Runs `sql` (whose every column is text) with `params`, within `timeout`; `what` names it in
    /// errors (`source "orders"`).
    pub async fn text_rows(
        &self,
        what: &str,
        sql: &str,
        params: &[Param],
        timeout: Duration,
    ) -> Result<Vec<TextRow>, LookupError> {
        let address = self.route().await?;
        let run = async {
            match &self.pools {
                Pools::Postgres(pool) => fetch_text(pool, sql, params).await,
                Pools::MySql(pool) => fetch_text(pool, sql, params).await,
                Pools::Sqlite(pool) => fetch_text(pool, sql, params).await,
            }
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(result) => {
                self.settle_address(address, result.as_ref().err());
                result.map_err(|e| Failed::Sql(e).into_lookup(Some(what.to_string())))
            }
            Err(_) => Err(LookupError::Unavailable(format!(
                "the query of {what} did not finish within {} ms",
                timeout.as_millis()
            ))),
        }
    }
}

async fn fetch_text<DB>(
    pool: &sqlx::Pool<DB>,
    sql: &str,
    params: &[Param],
) -> Result<Vec<TextRow>, sqlx::Error>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> String: sqlx::Encode<'q, DB> + Type<DB> + sqlx::Decode<'q, DB>,
    for<'q> Option<String>: sqlx::Decode<'q, DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + Type<DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let mut query = sqlx::query::<DB>(AssertSqlSafe(sql.to_string()));
    for param in params {
        query = match param {
            Param::Int(i) => query.bind(*i),
            Param::Text(s) => query.bind(s.clone()),
        };
    }
    let rows = query.fetch_all(pool).await?;
    rows.iter()
        .map(|row| {
            (0..row.len())
                .map(|i| row.try_get::<Option<String>, _>(i))
                .collect()
        })
        .collect()
}
