//! The reads of one poll, as SQL generated around the source's own query (which returns `id` and the
//! cursor columns), per cursor kind and engine: the rows after the cursor in the source's order (for
//! `xid`, below the horizon; for `timestamp`, behind the database's clock by `delay`; for `id`, up to
//! the highest id seen `delay` ago), the newest rows of the trailing window (for `timestamp` and
//! `id`), a NULL check, the highest id and the database's clock (for `id`), and PostgreSQL's
//! horizon. Every column is read as text, so that a cursor keeps the database's exact value.

use std::time::Duration;

use super::cursor::{Cursor, MAX_SENT};
use crate::db::{Database, LookupError, Param, TextRow};
use crate::rules::{CursorKind, Source};

/// A row a poll read: its id, and its cursor value (`xid`, or `ts` as the database prints it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceRow {
    pub id: i64,
    pub at: String,
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error(
        "source `{name}`: a row has NULL `{column}` (id {id}): it can never be read in order, so the poll stops here; give the column a value (xid8 DEFAULT pg_current_xact_id(), or a timestamp), or leave such rows out of the query"
    )]
    Null {
        name: String,
        column: &'static str,
        id: String,
    },
    #[error(
        "source `{name}`: `{column}` is {value:?}, not an integer: its query must return the rows' integer `id`"
    )]
    NotInteger {
        name: String,
        column: &'static str,
        value: String,
    },
    #[error(
        "source `{name}`: the database's clock read as {value:?}, not microseconds since the epoch, so its ids cannot be dated; report this with the engine's version"
    )]
    Clock { name: String, value: String },
    #[error(
        "source `{name}`: a cursor of kind {kind} needs {needs}, and the database is {engine}: {fix}"
    )]
    Engine {
        name: String,
        kind: &'static str,
        needs: &'static str,
        engine: &'static str,
        fix: &'static str,
    },
}

/// The engine's SQL pieces.
struct Dialect {
    text: &'static str,
    ts_text: &'static str,
    now_less_us: &'static str,
    ts_param: &'static str,
    interval_us: &'static str,
    /// The database's clock, in microseconds since the epoch.
    now_us: &'static str,
    placeholder: fn(usize) -> String,
}

fn dialect(database: &Database) -> Dialect {
    match database.engine() {
        "postgres" => Dialect {
            text: "TEXT",
            ts_text: "to_char(s.ts, 'YYYY-MM-DD HH24:MI:SS.US')",
            now_less_us: "clock_timestamp() - make_interval(secs => {} / 1000000.0)",
            ts_param: "CAST({} AS TIMESTAMP)",
            interval_us: "make_interval(secs => {} / 1000000.0)",
            now_us: "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)",
            placeholder: |n| format!("${n}"),
        },
        // SQLite (the local run) reads `id` cursors only ([`supports`]): no timestamp pieces.
        "sqlite" => Dialect {
            text: "TEXT",
            ts_text: "",
            now_less_us: "",
            ts_param: "",
            interval_us: "",
            now_us: "CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)",
            placeholder: |_| "?".into(),
        },
        _ => Dialect {
            text: "CHAR",
            ts_text: "DATE_FORMAT(s.ts, '%Y-%m-%d %H:%i:%s.%f')",
            now_less_us: "NOW(6) - INTERVAL {} MICROSECOND",
            ts_param: "CAST({} AS DATETIME(6))",
            interval_us: "INTERVAL {} MICROSECOND",
            now_us: "CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED)",
            placeholder: |_| "?".into(),
        },
    }
}

impl Dialect {
    /// The SQL of `template`, each `{}` replaced by the next placeholder.
    fn sql(&self, template: &str) -> String {
        let mut out = String::with_capacity(template.len() + 16);
        let mut n = 0;
        let mut parts = template.split("{}");
        out.push_str(parts.next().unwrap_or_default());
        for part in parts {
            n += 1;
            out.push_str(&(self.placeholder)(n));
            out.push_str(part);
        }
        out
    }
}

/// The columns of the rows selected: the id and the cursor value, both as text.
fn select(source: &Source, d: &Dialect) -> String {
    let at = match source.cursor {
        CursorKind::Xid => "CAST(s.xid AS TEXT)".to_string(),
        CursorKind::Timestamp => d.ts_text.to_string(),
        CursorKind::Id => format!("CAST(s.id AS {})", d.text),
    };
    format!(
        "SELECT CAST(s.id AS {}), {at} FROM ({}) AS s",
        d.text, source.query
    )
}

/// The rows after `cursor`, in order, at most the source's batch.
pub async fn after(
    database: &Database,
    source: &Source,
    cursor: &Cursor,
    timeout: Duration,
) -> Result<Vec<SourceRow>, ReadError> {
    supports(database, source)?;
    let d = dialect(database);
    let (condition, params) = match cursor {
        Cursor::Xid { xid, id } => {
            let condition = "(s.xid, s.id) > (CAST({} AS xid8), {}) \
                 AND s.xid < pg_snapshot_xmin(pg_current_snapshot()) ORDER BY s.xid, s.id";
            (
                condition.to_string(),
                vec![Param::Text(xid.clone()), Param::Int(*id)],
            )
        }
        Cursor::Timestamp { ts, id, .. } => {
            let condition = format!(
                "s.ts < {} AND (s.ts > {} OR (s.ts = {} AND s.id > {{}})) ORDER BY s.ts, s.id",
                d.now_less_us, d.ts_param, d.ts_param
            );
            let delay = Param::Int(source.delay.as_micros() as i64);
            let ts = Param::Text(ts.clone());
            (condition, vec![delay, ts.clone(), ts, Param::Int(*id)])
        }
        Cursor::Id { upto: None, .. } => return Ok(Vec::new()),
        Cursor::Id {
            id,
            upto: Some(upto),
            ..
        } => (
            "s.id > {} AND s.id <= {} ORDER BY s.id".to_string(),
            vec![Param::Int(*id), Param::Int(*upto)],
        ),
    };
    // Only the generated condition gets placeholders: the source's query may hold braces.
    let sql = format!(
        "{} WHERE {} LIMIT {}",
        select(source, &d),
        d.sql(&condition),
        source.batch
    );
    rows(database, source, &sql, &params, timeout).await
}

/// The newest rows of a cursor's trailing window (at most [`MAX_SENT`], as many as it remembers as
/// sent), in the source's order: for `timestamp`, from `window` before its `ts` up to it; for `id`,
/// above its floor up to its id.
pub async fn window(
    database: &Database,
    source: &Source,
    cursor: &Cursor,
    timeout: Duration,
) -> Result<Vec<SourceRow>, ReadError> {
    let d = dialect(database);
    let (condition, params) = match cursor {
        Cursor::Xid { .. } => return Ok(Vec::new()),
        Cursor::Timestamp { ts, id, .. } => {
            let condition = format!(
                "s.ts >= {} - {} AND (s.ts < {} OR (s.ts = {} AND s.id <= {{}})) ORDER BY s.ts DESC, s.id DESC",
                d.ts_param, d.interval_us, d.ts_param, d.ts_param
            );
            let ts = Param::Text(ts.clone());
            let window = Param::Int(source.window.as_micros() as i64);
            (
                condition,
                vec![ts.clone(), window, ts.clone(), ts, Param::Int(*id)],
            )
        }
        Cursor::Id { id, floor, .. } => (
            "s.id > {} AND s.id <= {} ORDER BY s.id DESC".to_string(),
            vec![Param::Int(*floor), Param::Int(*id)],
        ),
    };
    let sql = format!(
        "{} WHERE {} LIMIT {MAX_SENT}",
        select(source, &d),
        d.sql(&condition)
    );
    let mut newest_first = rows(database, source, &sql, &params, timeout).await?;
    newest_first.reverse();
    Ok(newest_first)
}

/// For an `id` cursor: the highest id its query returns now (`None`: no row), and the database's
/// clock (µs since the epoch), which dates it.
pub async fn highest(
    database: &Database,
    source: &Source,
    timeout: Duration,
) -> Result<(Option<i64>, i64), ReadError> {
    let d = dialect(database);
    let sql = format!(
        "SELECT CAST(MAX(s.id) AS {text}), CAST({} AS {text}) FROM ({}) AS s",
        d.now_us,
        source.query,
        text = d.text
    );
    let what = format!("source `{}`", source.name);
    let found = database.text_rows(&what, &sql, &[], timeout).await?;
    let mut row = found.into_iter().next().unwrap_or_default().into_iter();
    let integer = |value: String| {
        value.parse::<i64>().map_err(|_| ReadError::NotInteger {
            name: source.name.clone(),
            column: "id",
            value,
        })
    };
    let highest = row.next().flatten().map(integer).transpose()?;
    // A clock that cannot be read would date no id, and the source would silently read nothing.
    let now = row.next().flatten().unwrap_or_default();
    let now = now.parse().map_err(|_| ReadError::Clock {
        name: source.name.clone(),
        value: now,
    })?;
    Ok((highest, now))
}

/// Reads the source as a poll does, no row kept: fails when its query does not return its cursor
/// columns, or the engine cannot give its cursor.
pub async fn probe(
    database: &Database,
    source: &Source,
    timeout: Duration,
) -> Result<(), ReadError> {
    supports(database, source)?;
    let d = dialect(database);
    let sql = format!("{} LIMIT 0", select(source, &d));
    rows(database, source, &sql, &[], timeout).await.map(drop)
}

/// Fails on the first row whose id or cursor column is NULL (such a row would be skipped by every
/// comparison, silently).
pub async fn no_nulls(
    database: &Database,
    source: &Source,
    timeout: Duration,
) -> Result<(), ReadError> {
    let d = dialect(database);
    let column = cursor_column(source);
    let sql = format!(
        "SELECT CAST(s.id AS {}) FROM ({}) AS s WHERE s.id IS NULL OR s.{column} IS NULL LIMIT 1",
        d.text, source.query
    );
    let what = format!("source `{}`", source.name);
    let found = database.text_rows(&what, &sql, &[], timeout).await?;
    match found.into_iter().next() {
        None => Ok(()),
        Some(row) => {
            let id = row.into_iter().next().flatten();
            Err(ReadError::Null {
                name: source.name.clone(),
                column: if id.is_none() { "id" } else { column },
                id: id.unwrap_or_else(|| "NULL".into()),
            })
        }
    }
}

/// PostgreSQL's horizon: the oldest transaction still running, and the next one to start. Equal, no
/// transaction runs.
pub async fn horizon(
    database: &Database,
    source: &Source,
    timeout: Duration,
) -> Result<(String, String), ReadError> {
    supports(database, source)?;
    let sql = "SELECT CAST(pg_snapshot_xmin(s) AS TEXT), CAST(pg_snapshot_xmax(s) AS TEXT) \
               FROM pg_current_snapshot() AS s";
    let what = format!("source `{}`", source.name);
    let rows = database.text_rows(&what, sql, &[], timeout).await?;
    let mut row = rows.into_iter().next().unwrap_or_default().into_iter();
    let xmin = row.next().flatten().unwrap_or_default();
    let xmax = row.next().flatten().unwrap_or_default();
    Ok((xmin, xmax))
}

/// Whether the database can give the source's cursor: `xid` needs PostgreSQL, `timestamp` a
/// server's clock and types (PostgreSQL, MySQL, MariaDB), `id` any engine.
fn supports(database: &Database, source: &Source) -> Result<(), ReadError> {
    let (needs, fix) = match (source.cursor, database.engine()) {
        (CursorKind::Xid, "postgres")
        | (CursorKind::Timestamp, "postgres" | "mysql")
        | (CursorKind::Id, _) => return Ok(()),
        (CursorKind::Xid, _) => (
            "PostgreSQL's transaction ids",
            "choose cursor = \"timestamp\" or \"id\", or read from PostgreSQL",
        ),
        (CursorKind::Timestamp, _) => (
            "PostgreSQL, MySQL or MariaDB",
            "choose cursor = \"id\", or read from one of those",
        ),
    };
    Err(ReadError::Engine {
        name: source.name.clone(),
        kind: source.cursor.name(),
        needs,
        engine: database.engine(),
        fix,
    })
}

/// The column besides `id` that orders the source's rows (`id` itself for an `id` cursor).
fn cursor_column(source: &Source) -> &'static str {
    source.cursor.columns().last().copied().unwrap_or("id")
}

async fn rows(
    database: &Database,
    source: &Source,
    sql: &str,
    params: &[Param],
    timeout: Duration,
) -> Result<Vec<SourceRow>, ReadError> {
    let what = format!("source `{}`", source.name);
    let rows = database.text_rows(&what, sql, params, timeout).await?;
    rows.into_iter()
        .map(|row| source_row(source, row))
        .collect()
}

fn source_row(source: &Source, row: TextRow) -> Result<SourceRow, ReadError> {
    let mut columns = row.into_iter();
    let column = cursor_column(source);
    let (id, at) = (columns.next().flatten(), columns.next().flatten());
    let null = |column| ReadError::Null {
        name: source.name.clone(),
        column,
        id: "NULL".into(),
    };
    let id = id.ok_or_else(|| null("id"))?;
    let at = at.ok_or_else(|| null(column))?;
    let id = id.parse().map_err(|_| ReadError::NotInteger {
        name: source.name.clone(),
        column: "id",
        value: id,
    })?;
    Ok(SourceRow { id, at })
}
