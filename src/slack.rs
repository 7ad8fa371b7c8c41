//! The Slack Incoming Webhook client: one HTTP client for the process, posts paced per webhook
//! ([`crate::pace`]), and Slack's answers turned into [`SlackError`]s. One call is one attempt; the
//! retries are [`crate::retry`]'s.
//!
//! Webhook URLs are secrets: they appear in no error, log line or failure record (reqwest's errors
//! are stripped of the URL).

use std::io::Write as _;
use std::time::Duration;

use reqwest::StatusCode;
use tokio::time::Instant;

use crate::pace::Pacer;
use crate::render::SlackMessage;
use crate::secret::Secret;

/// Retry-After values above this are taken as this (a webhook told to wait longer is better left to
/// SQS's redelivery).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(900);
/// An attempt needs at least this much time left to be worth making.
const MIN_ATTEMPT: Duration = Duration::from_millis(50);

/// Client settings.
#[derive(Clone, Debug)]
pub struct SlackSettings {
    /// One request's timeout.
    pub timeout_ms: u64,
    /// Posts per second per webhook, on average.
    pub rate_per_second: f64,
    /// Posts at once per webhook.
    pub burst: u32,
}

/// Where a message goes.
#[derive(Clone, Debug)]
pub enum Target {
    Webhook(Secret<String>),
    /// Print the message on standard output (the local run without a webhook).
    Print,
}

/// A named destination: the name is the environment variable that held the URL, safe to log.
#[derive(Clone, Debug)]
pub struct Destination {
    pub name: String,
    pub target: Target,
}

/// What went wrong with one attempt. [`crate::failure::classify`] decides what is retried.
#[derive(Debug, thiserror::Error)]
pub enum SlackError {
    #[error("Slack answered 429 (rate limited){}", match .retry_after { Some(d) => format!(", retry after {} s", d.as_secs()), None => String::new() })]
    RateLimited { retry_after: Option<Duration> },
    #[error("Slack answered {status} `{code}`")]
    Rejected { status: u16, code: String },
    #[error("Slack did not answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("Slack could not be reached: {0}")]
    Connection(String),
    #[error("the webhook's pace leaves no slot before the invocation's deadline ({} ms away)", .wait.as_millis())]
    NoSlotBeforeDeadline { wait: Duration },
}

/// Posts messages; made once per process.
#[derive(Debug)]
pub struct SlackClient {
    http: reqwest::Client,
    timeout: Duration,
    pacer: Pacer,
}

impl SlackClient {
    pub fn new(settings: &SlackSettings) -> Result<Self, reqwest::Error> {
        let mut http = reqwest::Client::builder()
            .user_agent(concat!("opsrelay/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_millis(settings.timeout_ms))
            .pool_idle_timeout(Duration::from_secs(50))
            // A redirect would send the message, and the webhook's URL as `Referer`, to another
            // host: it is refused instead (a permanent failure that names it).
            .redirect(reqwest::redirect::Policy::none())
            .referer(false);
        if std::env::var_os("SSL_CERT_FILE").is_none() && std::env::var_os("SSL_CERT_DIR").is_none()
        {
            http = http.tls_backend_preconfigured(built_in_roots_tls());
        }
        let http = http.build()?;
        Ok(Self {
            http,
            timeout: Duration::from_millis(settings.timeout_ms),
            pacer: Pacer::new(settings.rate_per_second, settings.burst),
        })
    }

    /// One attempt to post `message` to `destination`, finished before `deadline`.
    pub async fn post(
        &self,
        destination: &Destination,
        message: &SlackMessage,
        deadline: Instant,
    ) -> Result<(), SlackError> {
        let url = match &destination.target {
            Target::Print => {
                let mut out = std::io::stdout().lock();
                let text = serde_json::to_string_pretty(&message.0).unwrap_or_default();
                // Standard output closed is no reason to fail a message.
                let _ = writeln!(out, "── Slack message to {} ──\n{text}", destination.name);
                return Ok(());
            }
            Target::Webhook(url) => url.expose(),
        };
        if let Err(slot) = self.pacer.acquire(url, deadline).await {
            return Err(SlackError::NoSlotBeforeDeadline {
                wait: slot - Instant::now(),
            });
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left < MIN_ATTEMPT {
            return Err(SlackError::Timeout(left));
        }
        let timeout = self.timeout.min(left);
        let response = self
            .http
            .post(url)
            .json(&message.0)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| transport_error(e, timeout))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
            self.pacer.hold(
                url,
                Instant::now() + retry_after.unwrap_or(Duration::from_secs(1)),
            );
            return Err(SlackError::RateLimited { retry_after });
        }
        let code = if status.is_redirection() {
            "a redirect, which opsrelay does not follow (it would send the webhook's URL \
             elsewhere): check the webhook URL, and any proxy between opsrelay and Slack"
                .to_string()
        } else {
            error_code(&response.text().await.unwrap_or_default(), url)
        };
        Err(SlackError::Rejected {
            status: status.as_u16(),
            code,
        })
    }
}

/// TLS for the webhooks trusting the Mozilla root certificates built into the binary (`webpki-roots`):
/// nothing to read or parse at start-up, where loading the system's store was most of the init time
/// (README, Performance). With `SSL_CERT_FILE` or `SSL_CERT_DIR` set (a CA of your own) the system's
/// store is used instead.
fn built_in_roots_tls() -> rustls::ClientConfig {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports rustls' default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// Slack's error code (`invalid_payload`, `no_service`, …), or a short, cleaned excerpt of an
/// unexpected body.
fn error_code(body: &str, url: &str) -> String {
    let body = body.trim();
    let is_code = !body.is_empty()
        && body.len() <= 64
        && body
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if is_code {
        return redact(body, url);
    }
    let excerpt: String = redact(body, url)
        .chars()
        .filter(|c| !c.is_control())
        .take(80)
        .collect();
    format!("unexpected answer: {excerpt}")
}

/// `text` without the webhook `url`, its path (`/services/T…/B…/token`: the secret part) or its
/// last segment (the token), wherever an answer echoes them (a proxy's error page, say).
fn redact(text: &str, url: &str) -> String {
    let path = url
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or_default();
    let token = path.rsplit('/').next().unwrap_or_default();
    let mut text = text.replace(url, "[redacted]");
    for secret in [path, token] {
        if secret.len() >= 8 {
            text = text.replace(secret, "[redacted]");
        }
    }
    text
}

fn transport_error(error: reqwest::Error, timeout: Duration) -> SlackError {
    if error.is_timeout() {
        return SlackError::Timeout(timeout);
    }
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    SlackError::Connection(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_echoing_the_webhook_path_or_token_is_redacted() {
        let url = "https://hooks.slack.com/services/T000/B000/s3cr3tTokenValue";
        for body in [
            "<html>404 for https://hooks.slack.com/services/T000/B000/s3cr3tTokenValue</html>",
            "<html>no route to /services/T000/B000/s3cr3tTokenValue</html>",
            "<html>bad token s3cr3tTokenValue</html>",
        ] {
            let code = error_code(body, url);
            assert!(!code.contains("s3cr3t"), "{code}");
            assert!(code.contains("[redacted]"), "{code}");
        }
    }
}
