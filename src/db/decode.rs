//! Binding the event's id as the rule's `id_type`, and decoding a row into template values per engine
//! (the mapping is in [`super`]'s documentation).

use std::sync::Arc;

use base64::Engine as _;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use serde_json::Value as Json;
use sqlx::mysql::MySqlRow;
use sqlx::postgres::{PgRow, PgValueFormat};
use sqlx::sqlite::SqliteRow;
use sqlx::{AssertSqlSafe, Column, ColumnIndex, Decode, Executor, Row, Type, TypeInfo, ValueRef};

use super::Fetched;
use super::error::{Failed, LookupError};
use crate::event::RecordId;
use crate::rules::{IdType, Rule};

/// The id, bound as the type the rule asks for.
pub(super) enum BoundId {
    Text(String),
    Integer(i64),
    Uuid(uuid::Uuid),
}

pub(super) fn bind_id(
    rule: &Rule,
    id: &RecordId,
    native_uuid: bool,
) -> Result<BoundId, LookupError> {
    let bad = |expected| LookupError::BadId {
        rule: rule.name.clone(),
        id: id.as_str().to_string(),
        expected,
    };
    Ok(match rule.id_type {
        IdType::Text => BoundId::Text(id.as_str().to_string()),
        IdType::Integer => BoundId::Integer(id.as_str().parse().map_err(|_| bad("an integer"))?),
        IdType::Uuid => {
            let uuid = uuid::Uuid::parse_str(id.as_str()).map_err(|_| bad("a UUID"))?;
            if native_uuid {
                BoundId::Uuid(uuid)
            } else {
                BoundId::Text(uuid.hyphenated().to_string())
            }
        }
    })
}

pub(super) async fn fetch_first<DB>(
    pool: &sqlx::Pool<DB>,
    sql: Arc<str>,
    id: BoundId,
) -> Result<Option<DB::Row>, sqlx::Error>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> String: sqlx::Encode<'q, DB> + Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + Type<DB>,
    for<'q> uuid::Uuid: sqlx::Encode<'q, DB> + Type<DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    let query = sqlx::query::<DB>(AssertSqlSafe(sql));
    let query = match id {
        BoundId::Text(s) => query.bind(s),
        BoundId::Integer(i) => query.bind(i),
        BoundId::Uuid(u) => query.bind(u),
    };
    query.fetch_optional(pool).await
}

/// One column's value, or `None` when its type is not one opsrelay knows.
pub(super) type ValueFn<R> = fn(&R, usize, &str) -> Result<Option<Json>, sqlx::Error>;

pub(super) fn record<R>(row: &R, value: ValueFn<R>) -> Result<Fetched, Failed>
where
    R: Row,
    usize: ColumnIndex<R>,
{
    let mut out = Fetched::default();
    for (i, column) in row.columns().iter().enumerate() {
        let raw = row.try_get_raw(i)?;
        let json = if raw.is_null() {
            Json::Null
        } else {
            let type_name = raw.type_info().name().to_string();
            if DECIMAL_TYPES.contains(&type_name.as_str()) {
                out.decimals.push(column.name().to_string());
            }
            value(row, i, &type_name)?.ok_or_else(|| Failed::Unsupported {
                column: column.name().to_string(),
                type_name,
            })?
        };
        out.values.insert(column.name().to_string(), json);
    }
    Ok(out)
}

/// The column types whose values are decimals, exact as text.
const DECIMAL_TYPES: [&str; 2] = ["NUMERIC", "DECIMAL"];

fn get<'r, R, T>(row: &'r R, i: usize) -> Result<T, sqlx::Error>
where
    R: Row,
    usize: ColumnIndex<R>,
    T: Decode<'r, R::Database> + Type<R::Database>,
{
    row.try_get(i)
}

fn get_unchecked<'r, R, T>(row: &'r R, i: usize) -> Result<T, sqlx::Error>
where
    R: Row,
    usize: ColumnIndex<R>,
    T: Decode<'r, R::Database>,
{
    row.try_get_unchecked(i)
}

fn text(s: impl ToString) -> Json {
    Json::String(s.to_string())
}

fn bytes(b: Vec<u8>) -> Json {
    text(base64::engine::general_purpose::STANDARD.encode(b))
}

fn utc(t: DateTime<Utc>) -> Json {
    text(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

pub(super) fn pg_value(
    row: &PgRow,
    i: usize,
    type_name: &str,
) -> Result<Option<Json>, sqlx::Error> {
    Ok(Some(match type_name {
        "BOOL" => Json::Bool(get(row, i)?),
        "INT2" => Json::from(get::<_, i16>(row, i)?),
        "INT4" => Json::from(get::<_, i32>(row, i)?),
        "INT8" => Json::from(get::<_, i64>(row, i)?),
        "FLOAT4" => Json::from(get::<_, f32>(row, i)?),
        "FLOAT8" => Json::from(get::<_, f64>(row, i)?),
        "NUMERIC" => text(pg_numeric(row, i)?),
        "TEXT" | "VARCHAR" | "BPCHAR" | "CHAR" | "NAME" | "CITEXT" | "UNKNOWN" => {
            text(get::<_, String>(row, i)?)
        }
        "UUID" => text(get::<_, uuid::Uuid>(row, i)?),
        "JSON" | "JSONB" => get::<_, Json>(row, i)?,
        "DATE" => text(get::<_, NaiveDate>(row, i)?),
        "TIME" => text(get::<_, NaiveTime>(row, i)?),
        "TIMESTAMP" => text(get::<_, NaiveDateTime>(row, i)?.format("%Y-%m-%dT%H:%M:%S%.f")),
        "TIMESTAMPTZ" => utc(get(row, i)?),
        "BYTEA" => bytes(get(row, i)?),
        "TEXT[]" | "VARCHAR[]" => Json::from(get::<_, Vec<String>>(row, i)?),
        "INT4[]" => Json::from(get::<_, Vec<i32>>(row, i)?),
        "INT8[]" => Json::from(get::<_, Vec<i64>>(row, i)?),
        _ => return Ok(None),
    }))
}

/// A PostgreSQL `numeric` with the scale the column gives it: sqlx reads a zero (which PostgreSQL
/// sends without digits) as a bare `0`, so the display scale is read from the value's header
/// (`ndigits`, `weight`, `sign`, `dscale`: four 16-bit words of the binary format) and applied. The
/// text format keeps the scale already.
fn pg_numeric(row: &PgRow, i: usize) -> Result<rust_decimal::Decimal, sqlx::Error> {
    let mut decimal: rust_decimal::Decimal = get(row, i)?;
    let raw = row.try_get_raw(i)?;
    let binary = raw.format() == PgValueFormat::Binary;
    let scale = binary
        .then(|| raw.as_bytes().ok())
        .flatten()
        .and_then(|bytes| bytes.get(6..8))
        .map(|dscale| u32::from(u16::from_be_bytes([dscale[0], dscale[1]])));
    if let Some(scale) = scale.filter(|scale| *scale > decimal.scale()) {
        decimal.rescale(scale);
    }
    Ok(decimal)
}

pub(super) fn mysql_value(
    row: &MySqlRow,
    i: usize,
    type_name: &str,
) -> Result<Option<Json>, sqlx::Error> {
    Ok(Some(match type_name {
        "BOOLEAN" => Json::Bool(get(row, i)?),
        "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" => {
            Json::from(get_unchecked::<_, i64>(row, i)?)
        }
        "TINYINT UNSIGNED" | "SMALLINT UNSIGNED" | "MEDIUMINT UNSIGNED" | "INT UNSIGNED"
        | "BIGINT UNSIGNED" => Json::from(get_unchecked::<_, u64>(row, i)?),
        "FLOAT" => Json::from(get::<_, f32>(row, i)?),
        "DOUBLE" => Json::from(get::<_, f64>(row, i)?),
        "DECIMAL" => text(get::<_, rust_decimal::Decimal>(row, i)?),
        "CHAR" | "VARCHAR" | "TINYTEXT" | "TEXT" | "MEDIUMTEXT" | "LONGTEXT" | "ENUM" | "SET" => {
            text(get_unchecked::<_, String>(row, i)?)
        }
        "JSON" => get::<_, Json>(row, i)?,
        "DATE" => text(get::<_, NaiveDate>(row, i)?),
        "TIME" => text(get::<_, NaiveTime>(row, i)?),
        "DATETIME" => text(get::<_, NaiveDateTime>(row, i)?.format("%Y-%m-%dT%H:%M:%S%.f")),
        "TIMESTAMP" => utc(get(row, i)?),
        // Text with a binary collation (MariaDB's JSON is LONGTEXT COLLATE utf8mb4_bin) arrives
        // flagged binary: keep it as text when it is UTF-8.
        "BINARY" | "VARBINARY" | "TINYBLOB" | "BLOB" | "MEDIUMBLOB" | "LONGBLOB" => {
            match String::from_utf8(get_unchecked(row, i)?) {
                Ok(s) => text(s),
                Err(e) => bytes(e.into_bytes()),
            }
        }
        _ => return Ok(None),
    }))
}

pub(super) fn sqlite_value(
    row: &SqliteRow,
    i: usize,
    type_name: &str,
) -> Result<Option<Json>, sqlx::Error> {
    Ok(Some(match type_name {
        "BOOLEAN" => Json::Bool(get_unchecked(row, i)?),
        "INTEGER" => Json::from(get_unchecked::<_, i64>(row, i)?),
        "REAL" => Json::from(get_unchecked::<_, f64>(row, i)?),
        "TEXT" | "DATE" | "TIME" | "DATETIME" => text(get_unchecked::<_, String>(row, i)?),
        "NUMERIC" => match get_unchecked::<_, i64>(row, i) {
            Ok(n) => Json::from(n),
            Err(_) => text(get_unchecked::<_, String>(row, i)?),
        },
        "BLOB" => bytes(get_unchecked(row, i)?),
        _ => return Ok(None),
    }))
}
