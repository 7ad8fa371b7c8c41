//! What can go wrong on the database side: a lookup that failed ([`LookupError`], for the pipeline to
//! classify), a URL that cannot be used (stops start-up), and the one classification of sqlx's errors
//! that both the address route and the lookup error follow.

use super::address::ResolverError;

/// Why a lookup failed. The pipeline's `classify` decides what is retried.
#[derive(Clone, Debug, thiserror::Error)]
pub enum LookupError {
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error("{} failed: {message}", match .of { Some(of) => format!("the query of {of}"), None => "logging in to the database".to_string() })]
    Query {
        /// What the query belongs to (``rule `order.created` ``, ``source `orders` ``); `None` for
        /// the login alone.
        of: Option<String>,
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

/// A failed lookup before it is described for the rule.
pub(super) enum Failed {
    Sql(sqlx::Error),
    Unsupported { column: String, type_name: String },
}

impl From<sqlx::Error> for Failed {
    fn from(e: sqlx::Error) -> Self {
        Failed::Sql(e)
    }
}

impl Failed {
    /// The lookup error of the query of `of` (``rule `x` ``, ``source `y` ``; `None`: the login).
    pub(super) fn into_lookup(self, of: Option<String>) -> LookupError {
        let error = match self {
            Failed::Unsupported { column, type_name } => {
                return LookupError::UnsupportedColumn { column, type_name };
            }
            Failed::Sql(error) => error,
        };
        match (&error, SqlFailure::of(&error)) {
            (sqlx::Error::Database(db), _) => LookupError::Query {
                of,
                sqlstate: db.code().map(|c| c.to_string()),
                mysql_error: db
                    .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                    .map(|e| e.number()),
                message: db.message().to_string(),
            },
            (_, SqlFailure::Address | SqlFailure::Connection) => {
                LookupError::Unavailable(error.to_string())
            }
            (other, SqlFailure::Query) => LookupError::Query {
                of,
                sqlstate: None,
                mysql_error: None,
                message: other.to_string(),
            },
        }
    }
}

/// The one classification of sqlx's errors: what failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SqlFailure {
    /// The address did not answer (I/O) or gave no connection in time: it is set aside, and the
    /// lookup is tried again elsewhere.
    Address,
    /// The connection failed in another way (TLS, the pool closed, its worker crashed, the protocol):
    /// the database is unavailable, the address kept.
    Connection,
    /// The database answered: the query (or the login) failed.
    Query,
}

impl SqlFailure {
    pub(super) fn of(error: &sqlx::Error) -> Self {
        match error {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => SqlFailure::Address,
            sqlx::Error::Tls(_)
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_) => SqlFailure::Connection,
            _ => SqlFailure::Query,
        }
    }
}

/// Removes the URL (and so any password in it) from an error text.
pub(super) fn scrub(message: &str, url: &str) -> String {
    message.replace(url, "[redacted]")
}
