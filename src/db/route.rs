//! The address route around each lookup: new connections go to the address the [`AddressChain`]
//! picks, once a TCP probe and (with a CA bundle) the [`NameCheck`] passed there; an address that
//! fails is set aside and the next one tried.

use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use super::address::AddressChain;
use super::error::{LookupError, SqlFailure};
use super::name_check::NameCheck;
use super::{Database, Pools};
use crate::lock::lock;

/// The address chain, the address new connections go to now, and the check of the server's name
/// at a new address (with a CA bundle).
#[derive(Debug)]
pub(super) struct AddressPath {
    pub(super) chain: AddressChain,
    pub(super) current: Mutex<Option<IpAddr>>,
    pub(super) name_check: Option<NameCheck>,
}

/// How long the handshake that checks the server's name at a new address may take.
const NAME_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// How many addresses one lookup tries before it gives up (the retry loop then tries again later).
const ADDRESSES_PER_LOOKUP: usize = 4;

impl Database {
    /// Points new connections at the chain's choice, trying the next address when one refuses.
    pub(super) async fn route(&self) -> Result<Option<IpAddr>, LookupError> {
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

    /// Records how a lookup through `address` went: a connection-level failure sets it aside.
    pub(super) fn settle_address(&self, address: Option<IpAddr>, error: Option<&sqlx::Error>) {
        let (Some(path), Some(address)) = (&self.address, address) else {
            return;
        };
        match error.map(SqlFailure::of) {
            Some(SqlFailure::Address) => {
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

/// The refusals met so far, then the final problem.
fn join(refusals: &[String], last: String) -> String {
    refusals
        .iter()
        .cloned()
        .chain(std::iter::once(last))
        .collect::<Vec<_>>()
        .join("; ")
}
