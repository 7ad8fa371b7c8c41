//! The doctor's checks of the database, in the order a lookup meets them: each DNS server's answer
//! for the host, the address the chain chooses, TCP, TLS (the name check), login, and each rule's
//! query prepared against the real schema.

use std::net::SocketAddr;

use super::{CHECK_TIMEOUT, Report, Subject};
use crate::db::{AddressChain, Database, DnsSettings, address};

/// Runs the database's checks into `report`.
pub(super) async fn check(report: &mut Report, subject: &Subject<'_>, database: &Database) {
    if let Some(chain) = database.address_chain() {
        dns(report, chain, &subject.settings.db.dns).await;
        if let Some(target) = chosen_address(report, chain).await {
            tcp_and_tls(report, subject, database, target).await;
        }
    }
    report
        .run(format!("login ({})", database.engine()), async {
            database
                .ping()
                .await
                .map(|()| "connected and authenticated (TLS as configured)".to_string())
                .map_err(|e| e.to_string())
        })
        .await;
    queries(report, subject, database).await;
}

/// Each name server's answer for the host (none to ask for an address).
async fn dns(report: &mut Report, chain: &AddressChain, settings: &DnsSettings) {
    if chain.is_literal() {
        return;
    }
    let host = chain.host().to_string();
    for server in name_servers(settings) {
        let dns = DnsSettings {
            servers: vec![server],
            ..settings.clone()
        };
        let host = host.clone();
        report
            .run(format!("dns {server}"), async move {
                let resolver = address::resolver(&dns).map_err(|e| e.to_string())?;
                let answer = resolver
                    .lookup_ip(host.as_str())
                    .await
                    .map_err(|e| e.to_string())?;
                let addresses: Vec<String> = answer.iter().map(|a| a.to_string()).collect();
                Ok(format!("{host} → {}", addresses.join(", ")))
            })
            .await;
    }
}

/// The address the chain chooses, and where it came from.
async fn chosen_address(report: &mut Report, chain: &AddressChain) -> Option<SocketAddr> {
    let mut chosen = None;
    report
        .run("database address", async {
            let pick = chain.choose().await.map_err(|e| e.to_string())?;
            chosen = Some(SocketAddr::new(pick.address, chain.port()));
            Ok(format!("{} from {}", pick.address, pick.source.as_str()))
        })
        .await;
    chosen
}

async fn tcp_and_tls(
    report: &mut Report,
    subject: &Subject<'_>,
    database: &Database,
    target: SocketAddr,
) {
    report
        .run(format!("tcp {target}"), async move {
            tokio::net::TcpStream::connect(target)
                .await
                .map(|_| "connected".to_string())
                .map_err(|e| e.to_string())
        })
        .await;
    let ca_file = subject.settings.db.ca_file.is_some();
    let tls = async {
        match database.name_check() {
            Some(check) => {
                check.verify(target, CHECK_TIMEOUT).await?;
                Ok(format!(
                    "handshake done; chain verified against the CA bundle, name {} checked",
                    check.host()
                ))
            }
            None if ca_file => Ok("the URL names an address: no name to check; the chain is verified against the CA bundle when connecting (login below)".to_string()),
            None => Err("not verified: set OPSRELAY_DB_CA_FILE to the CA bundle (the RDS bundle on RDS)".to_string()),
        }
    };
    report.run("tls", tls).await;
}

/// Each rule's query, prepared (not run), and the columns its templates read.
async fn queries(report: &mut Report, subject: &Subject<'_>, database: &Database) {
    let rules = subject.rules;
    for rule in rules.iter() {
        let Some(query) = &rule.query else {
            continue;
        };
        report
            .run(format!("query of rule {}", rule.name), async {
                let columns = database
                    .prepare(rule, query)
                    .await
                    .map_err(|e| e.to_string())?;
                let unknown = rules.templates.unknown_names(rule.template_names(), &columns);
                if unknown.is_empty() {
                    return Ok(format!(
                        "prepared (not run); its columns are all the templates read: {}",
                        columns.join(", ")
                    ));
                }
                let reads: Vec<String> = unknown
                    .iter()
                    .map(|(template, names)| format!("{template} reads {}", names.join(", ")))
                    .collect();
                Err(format!(
                    "{}, which the query does not return (it returns {}): every event of the rule would fail to render; fix the template or the query",
                    reads.join("; "),
                    columns.join(", ")
                ))
            })
            .await;
    }
}

/// The configured name servers, or the system's.
fn name_servers(dns: &DnsSettings) -> Vec<SocketAddr> {
    if !dns.servers.is_empty() {
        return dns.servers.clone();
    }
    hickory_resolver::system_conf::read_system_conf()
        .map(|(config, _)| {
            config
                .name_servers()
                .iter()
                .map(|ns| SocketAddr::new(ns.ip, ns.connections.first().map_or(53, |c| c.port)))
                .collect()
        })
        .unwrap_or_default()
}
