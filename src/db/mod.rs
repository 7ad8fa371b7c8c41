//! The database side: one lazily connected pool (PostgreSQL, MySQL/MariaDB or SQLite, chosen by the
//! URL's scheme), and the one query per event, whose first row becomes template values.
//!
//! Column values map to template values as follows: text, UUIDs and enums are strings; integers and
//! floats are numbers; booleans are booleans; decimals are strings (exact, never rounded through a
//! float); dates, times and timestamps are ISO 8601 / RFC 3339 strings (timestamps with a time zone in
//! UTC); JSON is a nested value (MySQL and MariaDB return it as text: use the `fromjson` filter);
//! bytes are base64 (MySQL binary columns holding UTF-8 are text); NULL is `none`, which prints as nothing. A column of
//! any other type is an error that says how to cast it.
//!
//! With the address path on (the default), the pool connects to the address [`AddressChain`] picks.
//! A certificate names the host, not the address, so sqlx verifies only the chain against
//! `OPSRELAY_DB_CA_FILE` (verify-ca), and [`NameCheck`] verifies the name at each new address before
//! it is used. With the address path off, sqlx connects by name and the CA file means verify-full.
//!
//! Reading order: [`connect`] makes the pool, [`address`] is the chain of addresses, [`route`] points
//! the pool at one around each lookup (with [`name_check`]), [`decode`] turns a row into values, and
//! [`error`] says what failed.

pub mod address;
pub mod connect;
pub mod decode;
pub mod error;
pub mod name_check;
pub mod route;
pub mod text_rows;

pub use address::{AddressChain, AddressSource, DnsSettings, ResolverError};
pub use error::{DatabaseUrlError, LookupError};
pub use name_check::NameCheck;
pub use text_rows::{Param, TextRow};

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value as Json};
use sqlx::mysql::MySqlPool;
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;
use sqlx::{AssertSqlSafe, Executor, SqlSafeStr};

use crate::event::RecordId;
use crate::rules::Rule;
use decode::{bind_id, fetch_first, mysql_value, pg_value, record, sqlite_value};
use error::Failed;

/// One row: column name → value, in column order.
pub type Record = Map<String, Json>;

/// A row as fetched: its values, and which columns are decimals (exact text in a template, a
/// number in a route's `when`, so that `total > 1000` compares amounts, not text with a number).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Fetched {
    pub values: Record,
    pub decimals: Vec<String>,
}

/// Pool, query and address settings.
#[derive(Clone, Debug)]
pub struct DbSettings {
    pub max_connections: u32,
    /// How long to wait for a connection (including connecting) before the lookup counts as failed.
    pub acquire_timeout: Duration,
    /// How long one query may run.
    pub query_timeout: Duration,
    /// Connect by address through [`AddressChain`] (`OPSRELAY_DB_ADDRESS_PATH`, on by default).
    pub address_path: bool,
    /// Fallback addresses of the database host (`OPSRELAY_DB_HOST_ADDRS`).
    pub host_addrs: Vec<IpAddr>,
    /// The CA bundle the server's certificate chain is verified against (`OPSRELAY_DB_CA_FILE`).
    pub ca_file: Option<PathBuf>,
    pub dns: DnsSettings,
    /// How long an address that refused is set aside (`OPSRELAY_DB_SET_ASIDE_SECONDS`).
    pub set_aside: Duration,
}

/// The read replica: a pool that connects on first use, so start-up never waits for it, reached by
/// address through the [`AddressChain`] when the address path is on.
#[derive(Debug)]
pub struct Database {
    pools: Pools,
    address: Option<route::AddressPath>,
}

#[derive(Clone, Debug)]
enum Pools {
    Postgres(PgPool),
    MySql(MySqlPool),
    Sqlite(SqlitePool),
}

impl Database {
    /// The address chain, when connecting by address.
    pub fn address_chain(&self) -> Option<&AddressChain> {
        self.address.as_ref().map(|a| &a.chain)
    }

    /// The check of the server's name at a new address, when connecting by address with a CA bundle.
    pub fn name_check(&self) -> Option<&NameCheck> {
        self.address.as_ref().and_then(|a| a.name_check.as_ref())
    }

    /// Opens (or reuses) a connection: address, TLS and login.
    pub async fn ping(&self) -> Result<(), LookupError> {
        let address = self.route().await?;
        let result = match &self.pools {
            Pools::Postgres(pool) => pool.acquire().await.map(drop),
            Pools::MySql(pool) => pool.acquire().await.map(drop),
            Pools::Sqlite(pool) => pool.acquire().await.map(drop),
        };
        self.settle_address(address, result.as_ref().err());
        result.map_err(|e| Failed::Sql(e).into_lookup(None))
    }

    /// Which engine this is, for logs and checks.
    pub fn engine(&self) -> &'static str {
        match self.pools {
            Pools::Postgres(_) => "postgres",
            Pools::MySql(_) => "mysql",
            Pools::Sqlite(_) => "sqlite",
        }
    }

    /// Runs the rule's query with the event id and returns the first row, if any.
    pub async fn fetch_record(
        &self,
        rule: &Rule,
        query: &Arc<str>,
        id: &RecordId,
        query_timeout: Duration,
    ) -> Result<Option<Fetched>, LookupError> {
        let bound = bind_id(rule, id, matches!(self.pools, Pools::Postgres(_)))?;
        let address = self.route().await?;
        let sql = query.clone();
        let run = async {
            match &self.pools {
                Pools::Postgres(pool) => match fetch_first(pool, sql, bound).await? {
                    Some(row) => record(&row, pg_value).map(Some),
                    None => Ok(None),
                },
                Pools::MySql(pool) => match fetch_first(pool, sql, bound).await? {
                    Some(row) => record(&row, mysql_value).map(Some),
                    None => Ok(None),
                },
                Pools::Sqlite(pool) => match fetch_first(pool, sql, bound).await? {
                    Some(row) => record(&row, sqlite_value).map(Some),
                    None => Ok(None),
                },
            }
        };
        match tokio::time::timeout(query_timeout, run).await {
            Ok(result) => {
                let sql_error = match &result {
                    Err(Failed::Sql(e)) => Some(e),
                    _ => None,
                };
                self.settle_address(address, sql_error);
                result.map_err(|e| e.into_lookup(Some(format!("rule `{}`", rule.name))))
            }
            Err(_) => Err(LookupError::Unavailable(format!(
                "the query of rule `{}` did not finish within {} ms",
                rule.name,
                query_timeout.as_millis()
            ))),
        }
    }

    /// Prepares (never runs) the query of `rule`, to check it against the real schema; the names of
    /// the columns it returns.
    pub async fn prepare(&self, rule: &Rule, query: &Arc<str>) -> Result<Vec<String>, LookupError> {
        let address = self.route().await?;
        let sql = AssertSqlSafe(query.clone()).into_sql_str();
        fn names<S: sqlx::Statement>(statement: S) -> Vec<String> {
            use sqlx::Column;
            statement
                .columns()
                .iter()
                .map(|c| c.name().to_string())
                .collect()
        }
        let result = match &self.pools {
            Pools::Postgres(pool) => pool.prepare(sql).await.map(names),
            Pools::MySql(pool) => pool.prepare(sql).await.map(names),
            Pools::Sqlite(pool) => pool.prepare(sql).await.map(names),
        };
        self.settle_address(address, result.as_ref().err());
        result.map_err(|e| Failed::Sql(e).into_lookup(Some(format!("rule `{}`", rule.name))))
    }

    /// Runs statements without results (seed data for the local run and tests).
    pub async fn execute_script(&self, sql: &str) -> Result<(), anyhow::Error> {
        self.route().await?;
        let sql = AssertSqlSafe(sql.to_string());
        match &self.pools {
            Pools::Postgres(pool) => sqlx::raw_sql(sql).execute(pool).await.map(drop),
            Pools::MySql(pool) => sqlx::raw_sql(sql).execute(pool).await.map(drop),
            Pools::Sqlite(pool) => sqlx::raw_sql(sql).execute(pool).await.map(drop),
        }?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    #[test]
    fn a_database_url_that_is_not_one_is_refused_without_showing_any_of_it() {
        let settings = crate::config::Settings::from_lookup(|_| None).unwrap().db;
        for value in [
            "s3cret-password",
            "host=db user=ro password=s3cret dbname=app",
            "ftp://ro:s3cret@db/app",
        ] {
            let url = Secret::new(value.to_string());
            let error = Database::connect_lazy(&url, &settings)
                .map(|_| ())
                .unwrap_err()
                .to_string();
            assert!(!error.contains("s3cret"), "{error}");
            assert!(error.contains("use postgres://"), "{error}");
        }
    }
}
