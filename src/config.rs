//! The settings, read once from the environment into one typed value. Durations carry their unit in
//! their name; secrets are [`Secret`]s. Every variable is listed in README.md (Configuration).
//!
//! A webhook URL or the database URL may be given as a Secrets Manager ARN instead; those are fetched
//! once at start-up ([`resolve`]).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

use crate::aws;
use crate::lookup::DbSettings;
use crate::resolve::DnsSettings;
use crate::retry::RetryPolicy;
use crate::rules::Rules;
use crate::secret::Secret;
use crate::slack::{Destination, SlackSettings, Target};

/// A setting that cannot be used: names the variable, the problem and the fix.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {problem}\n  fix: {fix}")]
pub struct ConfigError {
    pub variable: String,
    pub problem: String,
    pub fix: String,
}

impl ConfigError {
    fn new(variable: &str, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            variable: variable.to_string(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

/// Everything opsrelay reads from its environment.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `OPSRELAY_RULES`: the rules file.
    pub rules_path: Option<PathBuf>,
    /// `OPSRELAY_DATABASE_URL`: a URL, or the ARN of a secret holding one (or RDS-style JSON).
    pub database_url: Option<Secret<String>>,
    /// `OPSRELAY_DATABASE_SECRET_ARN`: a secret with `username` and `password` (an RDS-managed secret)
    /// that replace the URL's credentials.
    pub database_secret_arn: Option<String>,
    /// `OPSRELAY_DLQ_URL`.
    pub dlq_url: Option<String>,
    /// `OPSRELAY_MAX_RECEIVE_COUNT`: the source queue's `maxReceiveCount`. On that receive a transient
    /// failure is dead-lettered with its reason instead of being left for SQS to move without one.
    pub max_receive_count: u32,
    /// `OPSRELAY_CONCURRENCY`: messages of one batch processed at once.
    pub concurrency: usize,
    /// `OPSRELAY_DEADLINE_MARGIN_MS`: time kept back before the Lambda deadline for DLQ sends and the
    /// response.
    pub deadline_margin_ms: u64,
    /// `OPSRELAY_REPLICA_LAG_GRACE_SECONDS`: how long after the event a missing record is taken for
    /// replica lag (retried) rather than missing (dead-lettered).
    pub replica_lag_grace_seconds: u64,
    /// `OPSRELAY_DELIVERED_MEMORY`: how many delivered (message, destination) pairs a warm process
    /// remembers, so a redelivered message is not posted twice.
    pub delivered_memory: usize,
    pub db: DbSettings,
    pub slack: SlackSettings,
    pub retry: RetryPolicy,
}

impl Settings {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `lookup` (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let number = |name: &str, default: u64, min: u64, max: u64| -> Result<u64, ConfigError> {
            parse_in_range(name, get(name), default, min, max)
        };
        Ok(Self {
            rules_path: get("OPSRELAY_RULES").map(PathBuf::from),
            database_url: get("OPSRELAY_DATABASE_URL").map(Secret::new),
            database_secret_arn: get("OPSRELAY_DATABASE_SECRET_ARN"),
            dlq_url: get("OPSRELAY_DLQ_URL"),
            max_receive_count: number("OPSRELAY_MAX_RECEIVE_COUNT", 5, 1, 1_000)? as u32,
            concurrency: number("OPSRELAY_CONCURRENCY", 4, 1, 1_000)? as usize,
            deadline_margin_ms: number("OPSRELAY_DEADLINE_MARGIN_MS", 2_000, 100, 60_000)?,
            replica_lag_grace_seconds: number(
                "OPSRELAY_REPLICA_LAG_GRACE_SECONDS",
                120,
                0,
                86_400,
            )?,
            delivered_memory: number("OPSRELAY_DELIVERED_MEMORY", 10_000, 0, 10_000_000)? as usize,
            db: DbSettings {
                max_connections: number("OPSRELAY_DB_MAX_CONNECTIONS", 2, 1, 100)? as u32,
                acquire_timeout_ms: number("OPSRELAY_DB_CONNECT_TIMEOUT_MS", 3_000, 10, 60_000)?,
                query_timeout_ms: number("OPSRELAY_DB_QUERY_TIMEOUT_MS", 5_000, 10, 300_000)?,
                address_path: switch(
                    "OPSRELAY_DB_ADDRESS_PATH",
                    get("OPSRELAY_DB_ADDRESS_PATH"),
                    true,
                )?,
                host_addrs: list(
                    "OPSRELAY_DB_HOST_ADDRS",
                    get("OPSRELAY_DB_HOST_ADDRS"),
                    |item| item.parse::<IpAddr>().ok(),
                )?,
                ca_file: ca_file(get("OPSRELAY_DB_CA_FILE"))?,
                dns: DnsSettings {
                    servers: list(
                        "OPSRELAY_DNS_SERVERS",
                        get("OPSRELAY_DNS_SERVERS"),
                        name_server,
                    )?,
                    timeout_ms: number("OPSRELAY_DNS_TIMEOUT_MS", 150, 10, 10_000)?,
                    attempts: number("OPSRELAY_DNS_ATTEMPTS", 1, 1, 5)? as usize,
                },
                set_aside_seconds: number("OPSRELAY_DB_SET_ASIDE_SECONDS", 30, 0, 3_600)?,
            },
            slack: SlackSettings {
                timeout_ms: number("OPSRELAY_SLACK_TIMEOUT_MS", 5_000, 10, 60_000)?,
                rate_per_second: parse_in_range(
                    "OPSRELAY_SLACK_RATE_PER_SECOND",
                    get("OPSRELAY_SLACK_RATE_PER_SECOND"),
                    1.0,
                    0.01,
                    1_000.0,
                )?,
                burst: number("OPSRELAY_SLACK_BURST", 3, 1, 1_000)? as u32,
            },
            retry: RetryPolicy {
                initial_interval_ms: number("OPSRELAY_RETRY_INITIAL_MS", 200, 1, 60_000)?,
                max_interval_ms: number("OPSRELAY_RETRY_MAX_MS", 5_000, 1, 600_000)?,
            },
        })
    }

    /// The rules file, which the Lambda and the worker require.
    pub fn load_rules(&self) -> Result<Rules, anyhow::Error> {
        let path = self.rules_path.as_ref().ok_or_else(|| {
            ConfigError::new(
                "OPSRELAY_RULES",
                "is not set",
                "set it to the path of the rules file (in the Lambda: /var/task/rules.toml when packaged with the binary)",
            )
        })?;
        Ok(Rules::load(path)?)
    }

    /// The DLQ URL, which the Lambda and the worker require.
    pub fn require_dlq_url(&self) -> Result<&str, ConfigError> {
        self.dlq_url.as_deref().ok_or_else(|| {
            ConfigError::new(
                "OPSRELAY_DLQ_URL",
                "is not set",
                "set it to the URL of the dead-letter queue (the source queue's redrive target)",
            )
        })
    }
}

/// `on`/`off` (also `true`/`false`, `1`/`0`).
fn switch(name: &str, raw: Option<String>, default: bool) -> Result<bool, ConfigError> {
    match raw
        .as_deref()
        .map(str::trim)
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None => Ok(default),
        Some("on" | "true" | "1" | "yes") => Ok(true),
        Some("off" | "false" | "0" | "no") => Ok(false),
        Some(other) => Err(ConfigError::new(
            name,
            format!("{other:?} is neither on nor off"),
            "set on or off",
        )),
    }
}

/// A comma-separated list, each item parsed by `parse`.
fn list<T>(
    name: &str,
    raw: Option<String>,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Vec<T>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    raw.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            parse(item).ok_or_else(|| {
                ConfigError::new(
                    name,
                    format!("{item:?} is not an IP address (with an optional port for DNS servers)"),
                    "give addresses separated by commas, e.g. 10.0.0.2,10.0.0.3:5353,[fd00:ec2::253]:53",
                )
            })
        })
        .collect()
}

/// A name server: an address, port 53 unless given.
fn name_server(item: &str) -> Option<SocketAddr> {
    item.parse::<SocketAddr>().ok().or_else(|| {
        item.parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

fn ca_file(raw: Option<String>) -> Result<Option<PathBuf>, ConfigError> {
    let Some(path) = raw.map(PathBuf::from) else {
        return Ok(None);
    };
    if !path.is_file() {
        return Err(ConfigError::new(
            "OPSRELAY_DB_CA_FILE",
            format!("{} is not a readable file", path.display()),
            "package the CA bundle (for RDS: the region's bundle from the RDS documentation) with the function and give its path",
        ));
    }
    Ok(Some(path))
}

fn parse_in_range<T>(
    name: &str,
    raw: Option<String>,
    default: T,
    min: T,
    max: T,
) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let Some(raw) = raw else {
        return Ok(default);
    };
    match raw.trim().parse::<T>() {
        Ok(value) if value >= min && value <= max => Ok(value),
        _ => Err(ConfigError::new(
            name,
            format!("{raw:?} is not a number from {min} to {max}"),
            format!("set a number from {min} to {max}, or unset it for the default ({default})"),
        )),
    }
}

/// What to do with a destination whose variable is not set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MissingWebhook {
    /// Stop start-up (Lambda, worker).
    Fail,
    /// Print the messages instead (the local run).
    Print,
}

/// Secrets fetched from Secrets Manager, and the webhook of every destination the rules name.
pub struct Resolved {
    pub database_url: Option<Secret<String>>,
    pub destinations: BTreeMap<String, Destination>,
}

/// Fetches what the settings name by ARN and reads each destination's webhook variable.
pub async fn resolve(
    settings: &Settings,
    rules: &Rules,
    lookup: impl Fn(&str) -> Option<String>,
    missing: MissingWebhook,
    sdk: Option<&aws_config::SdkConfig>,
) -> Result<Resolved, anyhow::Error> {
    let secrets = sdk.map(aws_sdk_secretsmanager::Client::new);
    let fetch = async |variable: &str, arn: &str| -> Result<Secret<String>, ConfigError> {
        let client = secrets.as_ref().ok_or_else(|| {
            ConfigError::new(
                variable,
                "names a secret, but AWS is not configured here",
                "give the value itself",
            )
        })?;
        aws::fetch_secret(client, arn).await.map_err(|e| {
            ConfigError::new(variable, e, "check the ARN and the function's permission")
        })
    };

    let mut destinations = BTreeMap::new();
    for name in rules.iter().flat_map(|r| r.destinations.iter()) {
        if destinations.contains_key(name) {
            continue;
        }
        let target = match lookup(name).filter(|v| !v.trim().is_empty()) {
            Some(value) if aws::is_secret_arn(value.trim()) => {
                let secret = fetch(name, value.trim()).await?;
                Target::Webhook(webhook_url(
                    name,
                    secret_field(&secret, &["url", "webhook_url"]),
                )?)
            }
            Some(value) => {
                Target::Webhook(webhook_url(name, Secret::new(value.trim().to_string()))?)
            }
            None if missing == MissingWebhook::Print => Target::Print,
            None => {
                let used_by: Vec<&str> = rules
                    .iter()
                    .filter(|r| r.destinations.contains(name))
                    .map(|r| r.name.as_str())
                    .collect();
                return Err(ConfigError::new(
                    name,
                    format!("is not set, and rules {used_by:?} send to it"),
                    "set it to the Slack webhook URL (or the ARN of a secret holding it), or change the rules' destinations",
                )
                .into());
            }
        };
        destinations.insert(
            name.clone(),
            Destination {
                name: name.clone(),
                target,
            },
        );
    }

    let mut database_url = match &settings.database_url {
        Some(value) if aws::is_secret_arn(value.expose()) => {
            let secret = fetch("OPSRELAY_DATABASE_URL", value.expose()).await?;
            Some(database_url_from_secret(&secret)?)
        }
        other => other.clone(),
    };
    if let (Some(arn), Some(url)) = (&settings.database_secret_arn, &database_url) {
        let secret = fetch("OPSRELAY_DATABASE_SECRET_ARN", arn).await?;
        database_url = Some(with_credentials(url, &secret)?);
    }
    Ok(Resolved {
        database_url,
        destinations,
    })
}

/// A secret's value, or one of `keys` when it holds JSON.
fn secret_field(secret: &Secret<String>, keys: &[&str]) -> Secret<String> {
    let parsed: Option<serde_json::Value> = serde_json::from_str(secret.expose()).ok();
    let field = parsed.as_ref().and_then(|json| {
        keys.iter()
            .find_map(|k| json.get(k).and_then(|v| v.as_str()).map(str::to_string))
    });
    Secret::new(field.unwrap_or_else(|| secret.expose().trim().to_string()))
}

/// Checks that `value` is a usable webhook URL (https, or http to localhost).
pub fn check_webhook_url(variable: &str, value: &str) -> Result<(), ConfigError> {
    webhook_url(variable, Secret::new(value.trim().to_string())).map(drop)
}

fn webhook_url(variable: &str, url: Secret<String>) -> Result<Secret<String>, ConfigError> {
    let parsed = reqwest::Url::parse(url.expose()).map_err(|_| {
        ConfigError::new(
            variable,
            "is not a URL (the value is secret and not shown)",
            "set the webhook URL Slack gave you",
        )
    })?;
    let local = matches!(parsed.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    if parsed.scheme() != "https" && !(parsed.scheme() == "http" && local) {
        return Err(ConfigError::new(
            variable,
            "is not an https URL",
            "use the https:// webhook URL Slack gave you (plain http is allowed for localhost only)",
        ));
    }
    Ok(url)
}

/// A database URL from a secret: a URL as text, or JSON with `engine`, `host`, `port`, `dbname`,
/// `username` and `password` (the shape of RDS secrets).
fn database_url_from_secret(secret: &Secret<String>) -> Result<Secret<String>, ConfigError> {
    let Ok(json) = serde_json::from_str::<serde_json::Value>(secret.expose()) else {
        return Ok(Secret::new(secret.expose().trim().to_string()));
    };
    let field = |k: &str| {
        json.get(k).map(|v| {
            v.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string())
        })
    };
    let (Some(host), Some(engine)) = (field("host"), field("engine")) else {
        return Err(ConfigError::new(
            "OPSRELAY_DATABASE_URL",
            "names a secret whose JSON lacks `engine` or `host`",
            "store a database URL in the secret, or use OPSRELAY_DATABASE_SECRET_ARN for a secret with only username and password",
        ));
    };
    let scheme = if engine.contains("postgres") {
        "postgres"
    } else {
        "mysql"
    };
    let mut url = reqwest::Url::parse(&format!("{scheme}://{host}")).map_err(|_| {
        ConfigError::new(
            "OPSRELAY_DATABASE_URL",
            "the secret's host is not valid",
            "fix the secret's `host`",
        )
    })?;
    if let Some(port) = field("port").and_then(|p| p.parse().ok()) {
        let _ = url.set_port(Some(port));
    }
    if let Some(db) = field("dbname") {
        url.set_path(&db);
    }
    with_credentials(&Secret::new(url.to_string()), secret)
}

/// `url` with the `username` and `password` of a JSON secret.
fn with_credentials(
    url: &Secret<String>,
    secret: &Secret<String>,
) -> Result<Secret<String>, ConfigError> {
    let bad = |problem: &str| {
        ConfigError::new(
            "OPSRELAY_DATABASE_SECRET_ARN",
            problem,
            "store JSON with `username` and `password` (as RDS does)",
        )
    };
    let json: serde_json::Value =
        serde_json::from_str(secret.expose()).map_err(|_| bad("the secret is not JSON"))?;
    let mut parsed = reqwest::Url::parse(url.expose()).map_err(|_| {
        ConfigError::new(
            "OPSRELAY_DATABASE_URL",
            "is not a URL (the value is secret and not shown)",
            "set a postgres:// or mysql:// URL",
        )
    })?;
    if let Some(user) = json.get("username").and_then(|v| v.as_str()) {
        parsed
            .set_username(user)
            .map_err(|_| bad("the username cannot go in a URL"))?;
    }
    if let Some(password) = json.get("password").and_then(|v| v.as_str()) {
        parsed
            .set_password(Some(password))
            .map_err(|_| bad("the password cannot go in a URL"))?;
    }
    Ok(Secret::new(parsed.to_string()))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|name| env.get(name).cloned())
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.max_receive_count, 5);
        assert_eq!(s.concurrency, 4);
        assert_eq!(s.slack.rate_per_second, 1.0);
    }

    #[test]
    fn a_bad_number_names_the_variable_and_the_range() {
        let error = settings(&[("OPSRELAY_CONCURRENCY", "lots")])
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("OPSRELAY_CONCURRENCY:"), "{error}");
        assert!(error.contains("from 1 to 1000"), "{error}");
    }

    #[test]
    fn webhook_urls_must_be_https_except_on_localhost() {
        assert!(check_webhook_url("V", "https://hooks.slack.com/services/T/B/X").is_ok());
        assert!(check_webhook_url("V", "http://127.0.0.1:9000/hook").is_ok());
        let error = check_webhook_url("V", "http://hooks.slack.com/services/T/B/X")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("not an https URL") && !error.contains("services/T/B/X"),
            "{error}"
        );
        let error = check_webhook_url("V", "not a url SECRET")
            .unwrap_err()
            .to_string();
        assert!(!error.contains("SECRET"), "{error}");
    }

    #[test]
    fn an_rds_secret_becomes_a_url_with_encoded_credentials() {
        let secret = Secret::new(
            r#"{"engine":"postgres","host":"db.internal","port":5432,"dbname":"app","username":"ro","password":"p@ss/word"}"#.to_string(),
        );
        let url = database_url_from_secret(&secret).unwrap();
        assert_eq!(
            url.expose(),
            "postgres://ro:p%40ss%2Fword@db.internal:5432/app"
        );
    }

    #[test]
    fn an_rds_managed_secret_replaces_the_urls_credentials() {
        let url = Secret::new("postgres://placeholder@db.internal:5432/app".to_string());
        let secret = Secret::new(r#"{"username":"ro","password":"s3cret"}"#.to_string());
        assert_eq!(
            with_credentials(&url, &secret).unwrap().expose(),
            "postgres://ro:s3cret@db.internal:5432/app"
        );
    }

    #[test]
    fn a_webhook_secret_may_hold_json() {
        let secret = Secret::new(r#"{"url":"https://hooks.slack.com/services/T/B/X"}"#.to_string());
        assert_eq!(
            secret_field(&secret, &["url"]).expose(),
            "https://hooks.slack.com/services/T/B/X"
        );
        let plain = Secret::new("https://hooks.slack.com/services/T/B/Y\n".to_string());
        assert_eq!(
            secret_field(&plain, &["url"]).expose(),
            "https://hooks.slack.com/services/T/B/Y"
        );
    }
}
