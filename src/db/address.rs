//! The database address chain. Inside a VPC, lookups of internal names fail often, and the system
//! resolver's defaults (5 s × 2 attempts) turn one failure into a lost invocation. So the database
//! host is resolved here with hickory-resolver and short timeouts, and when DNS fails the chain
//! falls back, in order, to the last address that worked (kept for the life of the process and used
//! even after its TTL: "serve stale"), then to configured addresses (`OPSRELAY_DB_HOST_ADDRS`).
//!
//! An address that refuses connections is set aside for a while (RDS moves to a new address on
//! failover), so the next choice is a fresh resolution and the other addresses. After a DNS failure
//! the chain does not wait on DNS again for a short while when it has an address to use.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
    ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use tokio::time::Instant;

use crate::lock::lock;

/// After DNS failed, it is not waited on again for this long while an address is at hand.
const DNS_RECHECK: Duration = Duration::from_secs(2);
/// How long a TCP probe of a new address may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// How the resolver asks.
#[derive(Clone, Debug, PartialEq)]
pub struct DnsSettings {
    /// Name servers (`OPSRELAY_DNS_SERVERS`); empty = the system's resolv.conf.
    pub servers: Vec<SocketAddr>,
    /// One query's timeout (`OPSRELAY_DNS_TIMEOUT_MS`).
    pub timeout: Duration,
    /// Tries per name server (`OPSRELAY_DNS_ATTEMPTS`); 1 = no retry.
    pub attempts: usize,
}

/// Where an address came from; logged with every choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressSource {
    /// The host is an address already.
    Literal,
    /// A DNS answer (from the resolver's cache while its TTL lasts).
    Fresh,
    /// The last address that worked, DNS having failed.
    LastKnownGood,
    /// A configured fallback address, DNS having failed.
    Fallback,
}

impl AddressSource {
    pub fn as_str(self) -> &'static str {
        match self {
            AddressSource::Literal => "literal",
            AddressSource::Fresh => "dns",
            AddressSource::LastKnownGood => "last-known-good",
            AddressSource::Fallback => "fallback",
        }
    }
}

/// The address to connect to, and how it was found.
#[derive(Clone, Debug, PartialEq)]
pub struct Chosen {
    pub address: IpAddr,
    pub source: AddressSource,
    /// Time spent waiting on DNS.
    pub dns: Duration,
    /// Why DNS gave no usable answer, when it did not.
    pub dns_error: Option<String>,
}

/// No address could be found: transient (DNS may come back).
#[derive(Debug, thiserror::Error)]
#[error(
    "no address for the database host {host}: DNS gave none ({dns_error}), no address has worked yet, and no fallback is configured or usable; set OPSRELAY_DB_HOST_ADDRS to the database's addresses"
)]
pub struct NoAddress {
    pub host: String,
    pub dns_error: String,
}

/// A resolver that cannot be built from the settings (stops start-up).
#[derive(Debug, thiserror::Error)]
#[error("OPSRELAY_DNS_SERVERS: the resolver cannot be built: {0}")]
pub struct ResolverError(String);

#[derive(Default)]
struct State {
    last_good: Option<IpAddr>,
    set_aside: HashMap<IpAddr, Instant>,
    dns_failed_at: Option<Instant>,
}

/// The chain for one host; made once, shared by every connection.
pub struct AddressChain {
    host: String,
    port: u16,
    resolver: Option<TokioResolver>,
    fallbacks: Vec<IpAddr>,
    set_aside_for: Duration,
    state: Mutex<State>,
}

impl std::fmt::Debug for AddressChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddressChain")
            .field("host", &self.host)
            .field("fallbacks", &self.fallbacks)
            .finish()
    }
}

/// Whether a URL's host is an IP address (IPv6 in brackets) rather than a name.
pub fn is_ip_literal(host: &str) -> bool {
    host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok()
}

/// A resolver with opsrelay's short timeouts, asking `servers` (or the system's when empty).
pub fn resolver(dns: &DnsSettings) -> Result<TokioResolver, ResolverError> {
    let mut options = ResolverOpts::default();
    options.timeout = dns.timeout;
    // hickory counts retries after the first try: 2 (its default) means three tries.
    options.attempts = dns.attempts.saturating_sub(1);
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    options.use_hosts_file = ResolveHosts::Always;
    options.cache_size = 64;
    let builder = if dns.servers.is_empty() {
        TokioResolver::builder_tokio()
            .map_err(|e| ResolverError(format!("reading resolv.conf: {e}")))?
    } else {
        let servers = dns
            .servers
            .iter()
            .map(|server| {
                let mut connection = ConnectionConfig::udp();
                connection.port = server.port();
                NameServerConfig::new(server.ip(), true, vec![connection])
            })
            .collect();
        TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
    };
    builder
        .with_options(options)
        .build()
        .map_err(|e| ResolverError(e.to_string()))
}

impl AddressChain {
    /// The chain for `host:port`, with `fallbacks` and refused addresses set aside for `set_aside_for`.
    pub fn new(
        host: &str,
        port: u16,
        fallbacks: Vec<IpAddr>,
        dns: &DnsSettings,
        set_aside_for: Duration,
    ) -> Result<Self, ResolverError> {
        Ok(Self {
            host: host.to_string(),
            port,
            resolver: if is_ip_literal(host) {
                None
            } else {
                Some(resolver(dns)?)
            },
            fallbacks,
            set_aside_for,
            state: Mutex::new(State::default()),
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// Whether the host is an address already (nothing to resolve).
    pub fn is_literal(&self) -> bool {
        self.resolver.is_none()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Picks the address to connect to: a fresh answer, else the last known good, else a fallback;
    /// never one set aside.
    pub async fn choose(&self) -> Result<Chosen, NoAddress> {
        let Some(resolver) = &self.resolver else {
            let address = self
                .host
                .trim_matches(['[', ']'])
                .parse()
                .expect("checked literal");
            return Ok(Chosen {
                address,
                source: AddressSource::Literal,
                dns: Duration::ZERO,
                dns_error: None,
            });
        };
        let started = Instant::now();
        let (skip_dns, last_good) = {
            let state = self.lock();
            let recently_failed = state
                .dns_failed_at
                .is_some_and(|t| t.elapsed() < DNS_RECHECK);
            let at_hand = self.stale_or_fallback(&state).is_some();
            (recently_failed && at_hand, state.last_good)
        };
        let mut dns_error = Some("not asked: DNS failed moments ago".to_string());
        if !skip_dns {
            match resolver.lookup_ip(self.host.as_str()).await {
                Ok(answer) => {
                    let addresses: Vec<IpAddr> = answer.iter().collect();
                    let mut state = self.lock();
                    state.dns_failed_at = None;
                    let usable: Vec<IpAddr> = addresses
                        .into_iter()
                        .filter(|a| !self.is_set_aside(&mut state, a))
                        .collect();
                    let pick = last_good
                        .filter(|g| usable.contains(g))
                        .or_else(|| usable.first().copied());
                    if let Some(address) = pick {
                        return Ok(Chosen {
                            address,
                            source: AddressSource::Fresh,
                            dns: started.elapsed(),
                            dns_error: None,
                        });
                    }
                    dns_error = Some("every address in the answer refused recently".into());
                }
                Err(e) => {
                    self.lock().dns_failed_at = Some(Instant::now());
                    dns_error = Some(e.to_string());
                }
            }
        }
        let dns = started.elapsed();
        let state = self.lock();
        match self.stale_or_fallback(&state) {
            Some((address, source)) => Ok(Chosen {
                address,
                source,
                dns,
                dns_error,
            }),
            None => Err(NoAddress {
                host: self.host.clone(),
                dns_error: dns_error.unwrap_or_default(),
            }),
        }
    }

    /// Checks that `chosen` accepts TCP connections; sets it aside when it does not.
    pub async fn probe(&self, address: IpAddr) -> Result<Duration, String> {
        let started = Instant::now();
        let target = SocketAddr::new(address, self.port);
        match tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(target)).await {
            Ok(Ok(_)) => Ok(started.elapsed()),
            Ok(Err(e)) => {
                self.refused(address);
                Err(format!("{target} refused: {e}"))
            }
            Err(_) => {
                self.refused(address);
                Err(format!(
                    "{target} did not answer within {} ms",
                    PROBE_TIMEOUT.as_millis()
                ))
            }
        }
    }

    /// `address` worked: it becomes the last known good.
    pub fn connected(&self, address: IpAddr) {
        let mut state = self.lock();
        state.last_good = Some(address);
        state.set_aside.remove(&address);
    }

    /// `address` refused: set it aside for a while.
    pub fn refused(&self, address: IpAddr) {
        let until = Instant::now() + self.set_aside_for;
        self.lock().set_aside.insert(address, until);
    }

    /// The last known good address, or else the first fallback not set aside.
    fn stale_or_fallback(&self, state: &State) -> Option<(IpAddr, AddressSource)> {
        let usable = |a: &IpAddr| {
            state
                .set_aside
                .get(a)
                .is_none_or(|until| *until <= Instant::now())
        };
        state
            .last_good
            .filter(usable)
            .map(|a| (a, AddressSource::LastKnownGood))
            .or_else(|| {
                self.fallbacks
                    .iter()
                    .copied()
                    .find(usable)
                    .map(|a| (a, AddressSource::Fallback))
            })
    }

    fn is_set_aside(&self, state: &mut State, address: &IpAddr) -> bool {
        match state.set_aside.get(address) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                state.set_aside.remove(address);
                false
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.state)
    }
}
