//! `opsrelay doctor` (and the Lambda's doctor event): checks, one line each with its timing and a
//! verdict, everything the relay needs to reach, from where it runs: each DNS server's answer for the
//! database host, the address chosen and its source, TCP, TLS, login, the rules' queries (prepared,
//! not run), each Slack webhook host over TLS (without posting), and the DLQ.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use serde::Serialize;
use tokio::time::Instant;

use crate::dlq::DeadLetters;
use crate::pipeline::Relay;
use crate::resolve::{self, DnsSettings};
use crate::slack::Target;

/// One check may take this long.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// One line of the report.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
    pub elapsed_ms: f64,
}

/// Every check, in order.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub ok: bool,
    pub checks: Vec<Check>,
}

impl Report {
    async fn run<F>(&mut self, name: impl Into<String>, check: F)
    where
        F: Future<Output = Result<String, String>>,
    {
        let started = Instant::now();
        let result = match tokio::time::timeout(CHECK_TIMEOUT, check).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())),
        };
        let (ok, detail) = match result {
            Ok(detail) => (true, detail),
            Err(detail) => (false, detail),
        };
        self.checks.push(Check {
            name: name.into(),
            ok,
            detail,
            elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
        });
    }

    /// One line per check: `ok`/`FAIL`, the name, the detail and the time.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for check in &self.checks {
            out.push_str(&format!(
                "{:<5} {}: {} ({:.1} ms)\n",
                if check.ok { "ok" } else { "FAIL" },
                check.name,
                check.detail,
                check.elapsed_ms
            ));
        }
        out
    }
}

/// Runs every check against what `relay` uses.
pub async fn run(relay: &Relay) -> Report {
    let mut report = Report::default();
    let settings = relay.settings();
    if let Some(database) = relay.database() {
        if let Some(chain) = database.address_chain() {
            let host = chain.host().to_string();
            let servers = if chain.is_literal() {
                Vec::new()
            } else {
                name_servers(&settings.db.dns)
            };
            for server in servers {
                let dns = DnsSettings {
                    servers: vec![server],
                    ..settings.db.dns.clone()
                };
                let host = host.clone();
                report
                    .run(format!("dns {server}"), async move {
                        let resolver = resolve::resolver(&dns).map_err(|e| e.to_string())?;
                        let answer = resolver
                            .lookup_ip(host.as_str())
                            .await
                            .map_err(|e| e.to_string())?;
                        let addresses: Vec<String> = answer.iter().map(|a| a.to_string()).collect();
                        Ok(format!("{host} → {}", addresses.join(", ")))
                    })
                    .await;
            }
            let mut chosen = None;
            report
                .run("database address", async {
                    let pick = chain.choose().await.map_err(|e| e.to_string())?;
                    chosen = Some(SocketAddr::new(pick.address, chain.port()));
                    Ok(format!("{} from {}", pick.address, pick.source.as_str()))
                })
                .await;
            if let Some(target) = chosen {
                report
                    .run(format!("tcp {target}"), async move {
                        tokio::net::TcpStream::connect(target)
                            .await
                            .map(|_| "connected".to_string())
                            .map_err(|e| e.to_string())
                    })
                    .await;
                let ca_file = settings.db.ca_file.is_some();
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
        let rules = relay.rules();
        for rule in rules.iter() {
            if let Some(query) = &rule.query {
                report
                    .run(format!("query of rule {}", rule.name), async {
                        let columns = database.prepare(query).await.map_err(|e| e.to_string())?;
                        let unknown = rules.templates.unknown_names(&rule.template, &columns);
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
    }
    let http = reqwest::Client::builder().timeout(CHECK_TIMEOUT).build();
    for destination in relay.destinations().values() {
        let Target::Webhook(url) = &destination.target else {
            continue;
        };
        let host = reqwest::Url::parse(url.expose())
            .ok()
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_default();
        let http = http.as_ref().map_err(|e| e.to_string());
        report
            .run(format!("slack {} ({host})", destination.name), async {
                let answer = http?
                    .get(&host)
                    .send()
                    .await
                    .map_err(|e| e.without_url().to_string())?;
                let over = if host.starts_with("https:") {
                    "over TLS"
                } else {
                    "over plain HTTP"
                };
                Ok(format!(
                    "reachable {over}, answered {} (nothing posted)",
                    answer.status().as_u16()
                ))
            })
            .await;
    }
    match relay.dead_letters() {
        DeadLetters::Sqs { client, queue_url } => {
            report
                .run("dlq", async {
                    let out = client
                        .get_queue_attributes()
                        .queue_url(queue_url)
                        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
                        .send()
                        .await
                        .map_err(|e| crate::aws::describe(&e))?;
                    let depth = out
                        .attributes()
                        .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages))
                        .cloned()
                        .unwrap_or_default();
                    Ok(format!("reachable (GetQueueAttributes), {depth} messages"))
                })
                .await;
        }
        DeadLetters::File(file) => {
            let path = file.path().to_path_buf();
            report
                .run("dead-letter file", async move {
                    let dir = path
                        .parent()
                        .filter(|p| !p.as_os_str().is_empty())
                        .unwrap_or(std::path::Path::new("."));
                    match std::fs::metadata(dir) {
                        Ok(meta) if !meta.permissions().readonly() => {
                            Ok(format!("{} is writable", path.display()))
                        }
                        _ => Err(format!("{} cannot be written", dir.display())),
                    }
                })
                .await;
        }
    }
    report.ok = report.checks.iter().all(|c| c.ok);
    report
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
