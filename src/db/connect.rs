//! Connecting: one lazily connected pool for the URL's engine (PostgreSQL, MySQL/MariaDB or SQLite),
//! its TLS mode set from the CA file and the address path, and the address path itself.

use std::str::FromStr;
use std::sync::Mutex;

use sqlx::mysql::{MySqlConnectOptions, MySqlSslMode};
use sqlx::pool::PoolOptions;
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::sqlite::SqliteConnectOptions;

use super::address::{AddressChain, is_ip_literal};
use super::error::{DatabaseUrlError, scrub};
use super::name_check::{NameCheck, Protocol};
use super::route::AddressPath;
use super::{Database, DbSettings, Pools};
use crate::secret::Secret;

/// A pool, and the host and port it connects to when it has an address to route.
struct Pool {
    pools: Pools,
    host: Option<String>,
    port: u16,
}

impl Database {
    /// A lazily connecting pool for `url` (postgres://, mysql://, mariadb://, sqlite:).
    pub fn connect_lazy(
        url: &Secret<String>,
        settings: &DbSettings,
    ) -> Result<Self, DatabaseUrlError> {
        let url = url.expose();
        let pool = match url.split(':').next().unwrap_or_default() {
            "postgres" | "postgresql" => postgres(url, settings)?,
            "mysql" | "mariadb" => mysql(url, settings)?,
            "sqlite" => sqlite(url, settings)?,
            // The value is a secret: none of it is shown, not even what stands for a scheme (a
            // password alone, a key=value DSN).
            _ => return Err(DatabaseUrlError::Url("no known scheme".into())),
        };
        let protocol = match &pool.pools {
            Pools::Postgres(_) => Some(Protocol::Postgres),
            Pools::MySql(_) => Some(Protocol::MySql),
            Pools::Sqlite(_) => None,
        };
        // A Unix socket path has no address to resolve.
        let address = match pool
            .host
            .filter(|h| settings.address_path && !h.starts_with('/'))
        {
            Some(host) => Some(address_path(&host, pool.port, protocol, settings)?),
            None => None,
        };
        Ok(Self {
            pools: pool.pools,
            address,
        })
    }
}

fn postgres(url: &str, settings: &DbSettings) -> Result<Pool, DatabaseUrlError> {
    let mut options = PgConnectOptions::from_str(url)
        .map_err(|e| DatabaseUrlError::Url(scrub(&e.to_string(), url)))?
        .application_name("opsrelay");
    match (&settings.ca_file, settings.address_path) {
        (Some(ca), true) => options = options.ssl_mode(PgSslMode::VerifyCa).ssl_root_cert(ca),
        (Some(ca), false) => options = options.ssl_mode(PgSslMode::VerifyFull).ssl_root_cert(ca),
        (None, true) if matches!(options.get_ssl_mode(), PgSslMode::VerifyFull) => {
            return Err(DatabaseUrlError::NameCheckByAddress("sslmode=verify-full"));
        }
        (None, _) => {}
    }
    let (host, port) = (options.get_host().to_string(), options.get_port());
    let pool = lazy_pool(options, settings);
    Ok(Pool {
        pools: Pools::Postgres(pool),
        host: Some(host),
        port,
    })
}

fn mysql(url: &str, settings: &DbSettings) -> Result<Pool, DatabaseUrlError> {
    let rewritten = url.replacen("mariadb:", "mysql:", 1);
    let mut options = MySqlConnectOptions::from_str(&rewritten)
        .map_err(|e| DatabaseUrlError::Url(scrub(&scrub(&e.to_string(), &rewritten), url)))?;
    let identity = matches!(options.get_ssl_mode(), MySqlSslMode::VerifyIdentity);
    match (&settings.ca_file, settings.address_path) {
        (Some(ca), true) => options = options.ssl_mode(MySqlSslMode::VerifyCa).ssl_ca(ca),
        (Some(ca), false) => options = options.ssl_mode(MySqlSslMode::VerifyIdentity).ssl_ca(ca),
        (None, true) if identity => {
            return Err(DatabaseUrlError::NameCheckByAddress(
                "ssl-mode=VERIFY_IDENTITY",
            ));
        }
        (None, _) => {}
    }
    let (host, port) = (options.get_host().to_string(), options.get_port());
    let pool = lazy_pool(options, settings);
    Ok(Pool {
        pools: Pools::MySql(pool),
        host: Some(host),
        port,
    })
}

fn sqlite(url: &str, settings: &DbSettings) -> Result<Pool, DatabaseUrlError> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|e| DatabaseUrlError::Url(scrub(&e.to_string(), url)))?;
    let pool = lazy_pool(options, settings);
    Ok(Pool {
        pools: Pools::Sqlite(pool),
        host: None,
        port: 0,
    })
}

/// A pool of `settings.max_connections` that connects on first use.
fn lazy_pool<DB: sqlx::Database>(
    options: <DB::Connection as sqlx::Connection>::Options,
    settings: &DbSettings,
) -> sqlx::Pool<DB> {
    PoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .connect_lazy_with(options)
}

/// The address chain for `host`, and the name check at each new address when there is a CA bundle
/// and a name to check (a URL that names an address has none: sqlx verifies the chain).
fn address_path(
    host: &str,
    port: u16,
    protocol: Option<Protocol>,
    settings: &DbSettings,
) -> Result<AddressPath, DatabaseUrlError> {
    let chain = AddressChain::new(
        host,
        port,
        settings.host_addrs.clone(),
        &settings.dns,
        settings.set_aside,
    )?;
    let name_check = match (&settings.ca_file, protocol) {
        (Some(ca), Some(protocol)) if !is_ip_literal(host) => {
            Some(NameCheck::new(host, protocol, ca).map_err(DatabaseUrlError::CaFile)?)
        }
        _ => None,
    };
    Ok(AddressPath {
        chain,
        current: Mutex::new(None),
        name_check,
    })
}
