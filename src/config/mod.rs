//! The settings, read once from the environment into one typed value. Durations carry their unit in
//! their name; secrets are [`Secret`]s. Every variable is listed in README.md (Configuration).
//!
//! A webhook URL or the database URL may be given as a Secrets Manager ARN instead; those are fetched
//! once at start-up ([`secrets`]). What the rules need of the settings is checked in one place
//! ([`problems`]).

pub mod parse;
pub mod problems;
pub mod secrets;

pub use problems::Problems;
pub use secrets::{MissingWebhook, Resolved, check_webhook_url, resolve};

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::db::{DbSettings, DnsSettings};
use crate::rules::Rules;
use crate::secret::Secret;
use crate::slack::SlackSettings;
use parse::{ca_file, list, name_server, parse_in_range, switch};

/// A setting that cannot be used: names the variable, the problem and the fix.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {problem}\n  fix: {fix}")]
pub struct ConfigError {
    pub variable: String,
    pub problem: String,
    pub fix: String,
}

impl ConfigError {
    pub fn new(variable: &str, problem: impl Into<String>, fix: impl Into<String>) -> Self {
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
    pub deadline_margin: Duration,
    /// `OPSRELAY_REPLICA_LAG_GRACE_SECONDS`: how long after the event a missing record is taken for
    /// replica lag (retried) rather than missing (dead-lettered).
    pub replica_lag_grace: Duration,
    /// `OPSRELAY_DELIVERED_MEMORY`: how many delivered (message, destination) pairs a warm process
    /// remembers, so a redelivered message is not posted twice.
    pub delivered_memory: usize,
    /// `OPSRELAY_DIGESTS` (on/off): whether bursts are posted as digests at all.
    pub digests: bool,
    /// `OPSRELAY_DIGEST_WITHIN_MS`: how soon the pacer must be able to post a burst's events one
    /// by one for them not to be digested (rules without `digest.min_events`).
    pub digest_within: Duration,
    pub db: DbSettings,
    pub slack: SlackSettings,
    pub retry: RetryPolicy,
    pub poll: PollSettings,
}

/// The database sources' polling (`opsrelay poll`, and the Lambda's `{"opsrelay": "poll"}`).
#[derive(Clone, Debug)]
pub struct PollSettings {
    /// `OPSRELAY_SOURCE_QUEUE_URL`: the queue polled rows are sent into (the one the relay reads).
    pub source_queue_url: Option<String>,
    /// `OPSRELAY_STATE_TABLE`: the DynamoDB table of the cursors.
    pub state_table: Option<String>,
    /// `OPSRELAY_STATE_FILE`: a JSON file of the cursors instead (a local run, a single poller).
    pub state_file: Option<PathBuf>,
    /// `OPSRELAY_POLL_INTERVAL_MS`: between the polls of one invocation (or of `opsrelay poll`).
    pub interval: Duration,
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
        let ms = |name: &str, default: u64, min: u64, max: u64| {
            number(name, default, min, max).map(Duration::from_millis)
        };
        let secs = |name: &str, default: u64, min: u64, max: u64| {
            number(name, default, min, max).map(Duration::from_secs)
        };
        Ok(Self {
            rules_path: get("OPSRELAY_RULES").map(PathBuf::from),
            database_url: get("OPSRELAY_DATABASE_URL").map(Secret::new),
            database_secret_arn: get("OPSRELAY_DATABASE_SECRET_ARN"),
            dlq_url: get("OPSRELAY_DLQ_URL"),
            max_receive_count: number("OPSRELAY_MAX_RECEIVE_COUNT", 5, 1, 1_000)? as u32,
            concurrency: number("OPSRELAY_CONCURRENCY", 4, 1, 1_000)? as usize,
            deadline_margin: ms("OPSRELAY_DEADLINE_MARGIN_MS", 2_000, 100, 60_000)?,
            replica_lag_grace: secs("OPSRELAY_REPLICA_LAG_GRACE_SECONDS", 120, 0, 86_400)?,
            delivered_memory: number("OPSRELAY_DELIVERED_MEMORY", 10_000, 0, 10_000_000)? as usize,
            digests: switch("OPSRELAY_DIGESTS", get("OPSRELAY_DIGESTS"), true)?,
            digest_within: ms("OPSRELAY_DIGEST_WITHIN_MS", 3_000, 0, 600_000)?,
            db: DbSettings {
                max_connections: number("OPSRELAY_DB_MAX_CONNECTIONS", 2, 1, 100)? as u32,
                acquire_timeout: ms("OPSRELAY_DB_CONNECT_TIMEOUT_MS", 3_000, 10, 60_000)?,
                query_timeout: ms("OPSRELAY_DB_QUERY_TIMEOUT_MS", 5_000, 10, 300_000)?,
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
                    timeout: ms("OPSRELAY_DNS_TIMEOUT_MS", 150, 10, 10_000)?,
                    attempts: number("OPSRELAY_DNS_ATTEMPTS", 1, 1, 5)? as usize,
                },
                set_aside: secs("OPSRELAY_DB_SET_ASIDE_SECONDS", 30, 0, 3_600)?,
            },
            slack: SlackSettings {
                timeout: ms("OPSRELAY_SLACK_TIMEOUT_MS", 5_000, 10, 60_000)?,
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
                initial_interval: ms("OPSRELAY_RETRY_INITIAL_MS", 200, 1, 60_000)?,
                max_interval: ms("OPSRELAY_RETRY_MAX_MS", 5_000, 1, 600_000)?,
            },
            poll: PollSettings {
                source_queue_url: get("OPSRELAY_SOURCE_QUEUE_URL"),
                state_table: get("OPSRELAY_STATE_TABLE"),
                state_file: get("OPSRELAY_STATE_FILE").map(PathBuf::from),
                interval: ms("OPSRELAY_POLL_INTERVAL_MS", 10_000, 100, 3_600_000)?,
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
}

/// The backoff between attempts inside one invocation (`OPSRELAY_RETRY_INITIAL_MS`,
/// `OPSRELAY_RETRY_MAX_MS`).
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub initial_interval: Duration,
    pub max_interval: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_interval: Duration::from_millis(200),
            max_interval: Duration::from_millis(5_000),
        }
    }
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
}
