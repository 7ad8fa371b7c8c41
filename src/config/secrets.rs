//! Secrets resolved once at start-up: a webhook URL or the database URL given as a Secrets Manager
//! ARN is fetched, RDS-style JSON becomes a URL, and each destination the rules name gets its webhook.
//! No secret value reaches an error text.

use std::collections::{BTreeMap, BTreeSet};

use super::{ConfigError, Problems, Settings};
use crate::aws;
use crate::rules::Rules;
use crate::secret::Secret;
use crate::slack::{Destination, Target};

/// What to do with a destination whose variable is not set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MissingWebhook {
    /// Leave it out: [`Problems`] reports it, which stops start-up (Lambda, worker) or fails a
    /// doctor's check.
    Fail,
    /// Print the messages instead (the local run).
    Print,
}

/// Secrets fetched from Secrets Manager, the webhook of every destination the rules name that could
/// be read, and what could not be.
pub struct Resolved {
    pub database_url: Option<Secret<String>>,
    pub destinations: BTreeMap<String, Destination>,
    /// Each secret or webhook that could not be read (its destination, or the database URL, left
    /// out).
    pub problems: Problems,
}

/// Fetches what the settings name by ARN and reads each destination's webhook variable. Nothing
/// fails here: each value that cannot be used is a problem in [`Resolved::problems`].
pub async fn resolve(
    settings: &Settings,
    rules: &Rules,
    lookup: impl Fn(&str) -> Option<String>,
    missing: MissingWebhook,
    sdk: Option<&aws_config::SdkConfig>,
) -> Resolved {
    let secrets = Secrets(sdk.map(aws_sdk_secretsmanager::Client::new));
    let mut problems = Problems::default();
    let mut destinations = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for name in rules.iter().flat_map(|r| r.all_destinations()) {
        // Once each, whether it works or not: a secret is fetched once, a problem said once.
        if !seen.insert(name) {
            continue;
        }
        let target = match lookup(name).filter(|v| !v.trim().is_empty()) {
            Some(value) => secrets
                .webhook(name, value.trim())
                .await
                .map(Target::Webhook),
            None if missing == MissingWebhook::Print => Ok(Target::Print),
            // Problems::of_rules names it, with the rules that send to it.
            None => continue,
        };
        match target {
            Ok(target) => {
                let destination = Destination {
                    name: name.clone(),
                    target,
                };
                destinations.insert(name.clone(), destination);
            }
            Err(problem) => problems.push(problem),
        }
    }
    let database_url = secrets
        .database_url(settings)
        .await
        .unwrap_or_else(|problem| {
            problems.push(problem);
            None
        });
    Resolved {
        database_url,
        destinations,
        problems,
    }
}

/// Secrets Manager, when AWS is configured here.
struct Secrets(Option<aws_sdk_secretsmanager::Client>);

impl Secrets {
    async fn fetch(&self, variable: &str, arn: &str) -> Result<Secret<String>, ConfigError> {
        let client = self.0.as_ref().ok_or_else(|| {
            ConfigError::new(
                variable,
                "names a secret, but AWS is not configured here",
                "give the value itself",
            )
        })?;
        aws::fetch_secret(client, arn).await.map_err(|e| {
            ConfigError::new(variable, e, "check the ARN and the function's permission")
        })
    }

    /// The webhook URL in `value`, or in the secret it names.
    async fn webhook(&self, variable: &str, value: &str) -> Result<Secret<String>, ConfigError> {
        let url = if aws::is_secret_arn(value) {
            let secret = self.fetch(variable, value).await?;
            secret_field(&secret, &["url", "webhook_url"])
        } else {
            Secret::new(value.to_string())
        };
        webhook_url(variable, url)
    }

    /// The database URL, fetched when it is a secret's ARN, with the credentials of
    /// `OPSRELAY_DATABASE_SECRET_ARN` when that is set.
    async fn database_url(
        &self,
        settings: &Settings,
    ) -> Result<Option<Secret<String>>, ConfigError> {
        let url = match &settings.database_url {
            Some(value) if aws::is_secret_arn(value.expose()) => {
                let secret = self.fetch("OPSRELAY_DATABASE_URL", value.expose()).await?;
                database_url_from_secret(&secret)?
            }
            Some(value) => value.clone(),
            None => return Ok(None),
        };
        match &settings.database_secret_arn {
            Some(arn) => {
                let secret = self.fetch("OPSRELAY_DATABASE_SECRET_ARN", arn).await?;
                Ok(Some(with_credentials(&url, &secret)?))
            }
            None => Ok(Some(url)),
        }
    }
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
    use super::*;

    #[tokio::test]
    async fn a_webhook_that_cannot_be_used_is_one_problem_however_many_rules_send_to_it() {
        let rules = Rules::parse(
            "rules.toml",
            "[rules.\"a\"]\ntext = \"x\"\n[rules.\"b\"]\ntext = \"y\"\n[rules.\"c\"]\ntext = \"z\"\n",
        )
        .unwrap();
        let settings = Settings::from_lookup(|_| None).unwrap();
        let plain_http = |_: &str| Some("http://hooks.slack.com/services/T/B/X".to_string());
        let resolved = resolve(&settings, &rules, plain_http, MissingWebhook::Fail, None).await;
        let texts: Vec<String> = resolved.problems.iter().map(ToString::to_string).collect();
        assert_eq!(texts.len(), 1, "{texts:?}");
        assert!(texts[0].contains("is not an https URL"), "{texts:?}");
        assert!(resolved.destinations.is_empty());
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
