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

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use serde_json::{Map, Value as Json};
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions, MySqlRow, MySqlSslMode};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow, PgSslMode};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteRow};
use sqlx::{
    AssertSqlSafe, Column, ColumnIndex, Decode, Executor, Row, SqlSafeStr, Type, TypeInfo, ValueRef,
};

use crate::event::RecordId;
use crate::name_check::{NameCheck, Protocol};
use crate::resolve::{AddressChain, DnsSettings, ResolverError};
use crate::rules::{IdType, Rule};
use crate::secret::Secret;

/// One row: column name → value, in column order.
pub type Record = Map<String, Json>;

/// Pool, query and address settings.
#[derive(Clone, Debug)]
pub struct DbSettings {
    pub max_connections: u32,
    /// How long to wait for a connection (including connecting) before the lookup counts as failed.
    pub acquire_timeout_ms: u64,
    /// How long one query may run.
    pub query_timeout_ms: u64,
    /// Connect by address through [`AddressChain`] (`OPSRELAY_DB_ADDRESS_PATH`, on by default).
    pub address_path: bool,
    /// Fallback addresses of the database host (`OPSRELAY_DB_HOST_ADDRS`).
    pub host_addrs: Vec<IpAddr>,
    /// The CA bundle the server's certificate chain is verified against (`OPSRELAY_DB_CA_FILE`).
    pub ca_file: Option<PathBuf>,
    pub dns: DnsSettings,
    /// How long an address that refused is set aside (`OPSRELAY_DB_SET_ASIDE_SECONDS`).
    pub set_aside_seconds: u64,
}

/// Why a lookup failed. [`crate::failure::classify`] decides what is retried.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error("the query of rule `{rule}` failed: {message}")]
    Query {
        rule: String,
        sqlstate: Option<String>,
        /// MySQL's and MariaDB's error number: their SQLSTATE (often `HY000`) is too coarse to tell a
        /// lock wait timeout from a syntax error.
        mysql_error: Option<u16>,
        message: String,
    },
    #[error(
        "column `{column}` has type {type_name}, which opsrelay cannot show: cast it in the query (for example CAST({column} AS TEXT))"
    )]
    UnsupportedColumn { column: String, type_name: String },
    #[error(
        "the id {id:?} is not {expected}, as rule `{rule}` requires (id_type); the event is wrong"
    )]
    BadId {
        rule: String,
        id: String,
        expected: &'static str,
    },
}

/// A database that is not usable as configured (stops start-up).
#[derive(Debug, thiserror::Error)]
pub enum DatabaseUrlError {
    #[error(
        "OPSRELAY_DATABASE_URL is not a usable database URL ({0}): use postgres://, mysql:// or sqlite: (the value is secret and not shown)"
    )]
    Url(String),
    #[error(
        "OPSRELAY_DATABASE_URL asks for {0}, which sqlx cannot check when it connects by address: set OPSRELAY_DB_CA_FILE to the CA bundle (sqlx then verifies the chain, and opsrelay the name at each new address), or OPSRELAY_DB_ADDRESS_PATH=off to connect by name"
    )]
    NameCheckByAddress(&'static str),
    #[error("{0}")]
    CaFile(String),
    #[error(transparent)]
    Resolver(#[from] ResolverError),
}

/// The read replica: a pool that connects on first use, so start-up never waits for it, reached by
/// address through the [`AddressChain`] when the address path is on.
#[derive(Debug)]
pub struct Database {
    pools: Pools,
    address: Option<AddressPath>,
}

#[derive(Clone, Debug)]
enum Pools {
    Postgres(PgPool),
    MySql(MySqlPool),
    Sqlite(SqlitePool),
}

/// The address chain, the address new connections go to now, and the check of the server's name
/// at a new address (with a CA bundle).
#[derive(Debug)]
struct AddressPath {
    chain: AddressChain,
    current: std::sync::Mutex<Option<IpAddr>>,
    name_check: Option<NameCheck>,
}

/// How long the handshake that checks the server's name at a new address may take.
const NAME_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// How many addresses one lookup tries before it gives up (the retry loop then tries again later).
const ADDRESSES_PER_LOOKUP: usize = 4;

/// The id, bound as the type the rule asks for.
enum BoundId {
    Text(String),
    Integer(i64),
    Uuid(uuid::Uuid),
}

impl Database {
    /// A lazily connecting pool for `url` (postgres://, mysql://, mariadb://, sqlite:).
    pub fn connect_lazy(
        url: &Secret<String>,
        settings: &DbSettings,
    ) -> Result<Self, DatabaseUrlError> {
        let url = url.expose();
        let acquire = Duration::from_millis(settings.acquire_timeout_ms);
        let scheme = url.split(':').next().unwrap_or_default();
        let invalid = |e: sqlx::Error| DatabaseUrlError::Url(scrub(&e.to_string(), url));
        let by_address = settings.address_path;
        let (pools, host, port) = match scheme {
            "postgres" | "postgresql" => {
                let mut options = PgConnectOptions::from_str(url)
                    .map_err(invalid)?
                    .application_name("opsrelay");
                match (&settings.ca_file, by_address) {
                    (Some(ca), true) => {
                        options = options.ssl_mode(PgSslMode::VerifyCa).ssl_root_cert(ca)
                    }
                    (Some(ca), false) => {
                        options = options.ssl_mode(PgSslMode::VerifyFull).ssl_root_cert(ca)
                    }
                    (None, true) if matches!(options.get_ssl_mode(), PgSslMode::VerifyFull) => {
                        return Err(DatabaseUrlError::NameCheckByAddress("sslmode=verify-full"));
                    }
                    (None, _) => {}
                }
                let (host, port) = (options.get_host().to_string(), options.get_port());
                let pool = PgPoolOptions::new()
                    .max_connections(settings.max_connections)
                    .acquire_timeout(acquire)
                    .connect_lazy_with(options);
                (Pools::Postgres(pool), Some(host), port)
            }
            "mysql" | "mariadb" => {
                let rewritten = url.replacen("mariadb:", "mysql:", 1);
                let mut options = MySqlConnectOptions::from_str(&rewritten).map_err(|e| {
                    DatabaseUrlError::Url(scrub(&scrub(&e.to_string(), &rewritten), url))
                })?;
                let identity = matches!(options.get_ssl_mode(), MySqlSslMode::VerifyIdentity);
                match (&settings.ca_file, by_address) {
                    (Some(ca), true) => {
                        options = options.ssl_mode(MySqlSslMode::VerifyCa).ssl_ca(ca)
                    }
                    (Some(ca), false) => {
                        options = options.ssl_mode(MySqlSslMode::VerifyIdentity).ssl_ca(ca)
                    }
                    (None, true) if identity => {
                        return Err(DatabaseUrlError::NameCheckByAddress(
                            "ssl-mode=VERIFY_IDENTITY",
                        ));
                    }
                    (None, _) => {}
                }
                let (host, port) = (options.get_host().to_string(), options.get_port());
                let pool = MySqlPoolOptions::new()
                    .max_connections(settings.max_connections)
                    .acquire_timeout(acquire)
                    .connect_lazy_with(options);
                (Pools::MySql(pool), Some(host), port)
            }
            "sqlite" => {
                let options = SqliteConnectOptions::from_str(url).map_err(invalid)?;
                let pool = SqlitePoolOptions::new()
                    .max_connections(settings.max_connections)
                    .acquire_timeout(acquire)
                    .connect_lazy_with(options);
                (Pools::Sqlite(pool), None, 0)
            }
            // The value is a secret: none of it is shown, not even what stands for a scheme (a
            // password alone, a key=value DSN).
            _ => {
                return Err(DatabaseUrlError::Url("no known scheme".into()));
            }
        };
        let protocol = match &pools {
            Pools::Postgres(_) => Some(Protocol::Postgres),
            Pools::MySql(_) => Some(Protocol::MySql),
            Pools::Sqlite(_) => None,
        };
        // A Unix socket path has no address to resolve.
        let address = match host.filter(|h| by_address && !h.starts_with('/')) {
            Some(host) => Some(AddressPath {
                chain: AddressChain::new(
                    &host,
                    port,
                    settings.host_addrs.clone(),
                    &settings.dns,
                    Duration::from_secs(settings.set_aside_seconds),
                )?,
                current: std::sync::Mutex::new(None),
                // A URL that names an address has no name to check: sqlx verifies the chain.
                name_check: match (&settings.ca_file, protocol) {
                    (Some(ca), Some(protocol)) if !is_address(&host) => Some(
                        NameCheck::new(&host, protocol, ca).map_err(DatabaseUrlError::CaFile)?,
                    ),
                    _ => None,
                },
            }),
            None => None,
        };
        Ok(Self { pools, address })
    }

    /// The address chain, when connecting by address.
    pub fn address_chain(&self) -> Option<&AddressChain> {
        self.address.as_ref().map(|a| &a.chain)
    }

    /// Points new connections at the chain's choice, trying the next address when one refuses.
    async fn route(&self) -> Result<Option<IpAddr>, LookupError> {
        let Some(path) = &self.address else {
            return Ok(None);
        };
        let mut refusals = Vec::new();
        for _ in 0..ADDRESSES_PER_LOOKUP {
            let chosen = path
                .chain
                .choose()
                .await
                .map_err(|e| LookupError::Unavailable(join(&refusals, e.to_string())))?;
            let current = *lock(&path.current);
            if current == Some(chosen.address) {
                return Ok(current);
            }
            let checked = match path.chain.probe(chosen.address).await {
                Ok(tcp) => check_name(path, chosen.address).await.map(|()| tcp),
                Err(refused) => Err(refused),
            };
            match checked {
                Ok(tcp) => {
                    tracing::info!(
                        host = path.chain.host(),
                        address = %chosen.address,
                        source = chosen.source.as_str(),
                        dns_ms = chosen.dns.as_secs_f64() * 1e3,
                        dns_error = chosen.dns_error.as_deref(),
                        tcp_ms = tcp.as_secs_f64() * 1e3,
                        "Chose the database address."
                    );
                    self.point_at(chosen.address);
                    *lock(&path.current) = Some(chosen.address);
                    return Ok(Some(chosen.address));
                }
                Err(refused) => {
                    tracing::warn!(
                        address = %chosen.address,
                        source = chosen.source.as_str(),
                        error = %refused,
                        "Set a database address aside; trying the next."
                    );
                    refusals.push(refused);
                }
            }
        }
        Err(LookupError::Unavailable(join(
            &refusals,
            "no address left to try".into(),
        )))
    }

    /// New connections of the pool go to `address`; the host name stays for TLS and logs.
    fn point_at(&self, address: IpAddr) {
        let host = address.to_string();
        match &self.pools {
            Pools::Postgres(pool) => {
                pool.set_connect_options((*pool.connect_options()).clone().host(&host))
            }
            Pools::MySql(pool) => {
                pool.set_connect_options((*pool.connect_options()).clone().host(&host))
            }
            Pools::Sqlite(_) => {}
        }
    }

    /// The check of the server's name at a new address, when connecting by address with a CA bundle.
    pub fn name_check(&self) -> Option<&NameCheck> {
        self.address.as_ref().and_then(|a| a.name_check.as_ref())
    }

    /// Records how a lookup through `address` went: a connection-level failure sets it aside.
    fn settle_address(&self, address: Option<IpAddr>, error: Option<&sqlx::Error>) {
        let (Some(path), Some(address)) = (&self.address, address) else {
            return;
        };
        match error {
            Some(sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut) => {
                path.chain.refused(address);
                let mut current = lock(&path.current);
                if *current == Some(address) {
                    *current = None;
                }
            }
            Some(_) => {}
            None => path.chain.connected(address),
        }
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
        result.map_err(|e| Failed::Sql(e).into_lookup("(check)"))
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
    ) -> Result<Option<Record>, LookupError> {
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
                result.map_err(|e| e.into_lookup(&rule.name))
            }
            Err(_) => Err(LookupError::Unavailable(format!(
                "the query of rule `{}` did not finish within {} ms",
                rule.name,
                query_timeout.as_millis()
            ))),
        }
    }

    /// Prepares (never runs) a query, to check it against the real schema.
    pub async fn prepare(&self, query: &Arc<str>) -> Result<Vec<String>, LookupError> {
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
        result.map_err(|e| Failed::Sql(e).into_lookup("(check)"))
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

/// A failed lookup before it is described for the rule.
enum Failed {
    Sql(sqlx::Error),
    Unsupported { column: String, type_name: String },
}

impl From<sqlx::Error> for Failed {
    fn from(e: sqlx::Error) -> Self {
        Failed::Sql(e)
    }
}

impl Failed {
    fn into_lookup(self, rule: &str) -> LookupError {
        let error = match self {
            Failed::Unsupported { column, type_name } => {
                return LookupError::UnsupportedColumn { column, type_name };
            }
            Failed::Sql(error) => error,
        };
        match &error {
            sqlx::Error::Database(db) => LookupError::Query {
                rule: rule.to_string(),
                sqlstate: db.code().map(|c| c.to_string()),
                mysql_error: db
                    .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                    .map(|e| e.number()),
                message: db.message().to_string(),
            },
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_) => LookupError::Unavailable(error.to_string()),
            other => LookupError::Query {
                rule: rule.to_string(),
                sqlstate: None,
                mysql_error: None,
                message: other.to_string(),
            },
        }
    }
}

/// Whether the URL's host is an IP address (IPv6 in brackets) rather than a name.
fn is_address(host: &str) -> bool {
    host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok()
}

/// Verifies the server's certificate name at `address` (when the path has a check); an address that
/// fails it is set aside.
async fn check_name(path: &AddressPath, address: IpAddr) -> Result<(), String> {
    let Some(check) = &path.name_check else {
        return Ok(());
    };
    let target = SocketAddr::new(address, path.chain.port());
    let checked = check.verify(target, NAME_CHECK_TIMEOUT).await;
    if checked.is_err() {
        path.chain.refused(address);
    }
    checked
}

fn bind_id(rule: &Rule, id: &RecordId, native_uuid: bool) -> Result<BoundId, LookupError> {
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

async fn fetch_first<DB>(
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
type ValueFn<R> = fn(&R, usize, &str) -> Result<Option<Json>, sqlx::Error>;

fn record<R>(row: &R, value: ValueFn<R>) -> Result<Record, Failed>
where
    R: Row,
    usize: ColumnIndex<R>,
{
    let mut out = Map::new();
    for (i, column) in row.columns().iter().enumerate() {
        let raw = row.try_get_raw(i)?;
        let json = if raw.is_null() {
            Json::Null
        } else {
            let type_name = raw.type_info().name().to_string();
            value(row, i, &type_name)?.ok_or_else(|| Failed::Unsupported {
                column: column.name().to_string(),
                type_name,
            })?
        };
        out.insert(column.name().to_string(), json);
    }
    Ok(out)
}

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

fn pg_value(row: &PgRow, i: usize, type_name: &str) -> Result<Option<Json>, sqlx::Error> {
    Ok(Some(match type_name {
        "BOOL" => Json::Bool(get(row, i)?),
        "INT2" => Json::from(get::<_, i16>(row, i)?),
        "INT4" => Json::from(get::<_, i32>(row, i)?),
        "INT8" => Json::from(get::<_, i64>(row, i)?),
        "FLOAT4" => Json::from(get::<_, f32>(row, i)?),
        "FLOAT8" => Json::from(get::<_, f64>(row, i)?),
        "NUMERIC" => text(get::<_, rust_decimal::Decimal>(row, i)?),
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

fn mysql_value(row: &MySqlRow, i: usize, type_name: &str) -> Result<Option<Json>, sqlx::Error> {
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

fn sqlite_value(row: &SqliteRow, i: usize, type_name: &str) -> Result<Option<Json>, sqlx::Error> {
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

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The refusals met so far, then the final problem.
fn join(refusals: &[String], last: String) -> String {
    refusals
        .iter()
        .cloned()
        .chain(std::iter::once(last))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Removes the URL (and so any password in it) from an error text.
fn scrub(message: &str, url: &str) -> String {
    message.replace(url, "[redacted]")
}

#[cfg(test)]
mod tests {
    use super::*;

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
