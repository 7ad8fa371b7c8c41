//! The Slack Incoming Webhook client: one HTTP client for the process, posts paced per webhook
//! ([`crate::pace`]), and Slack's answers turned into [`SlackError`]s. One call is one attempt; the
//! retries are the pipeline's. The doctor probes each webhook's host through this same client.
//!
//! Webhook URLs are secrets: they appear in no error, log line or failure record (reqwest's errors
//! are stripped of the URL).

pub mod reply;

use std::io::Write as _;
use std::time::Duration;

use reqwest::StatusCode;
use tokio::time::Instant;

use crate::pace::Pacer;
use crate::render::SlackMessage;
use crate::secret::Secret;
use reply::{error_code, transport_error};

/// Retry-After values above this are taken as this (a webhook told to wait longer is better left to
/// SQS's redelivery).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(900);
/// An attempt needs at least this much time left to be worth making.
const MIN_ATTEMPT: Duration = Duration::from_millis(50);

/// Client settings.
#[derive(Clone, Debug)]
pub struct SlackSettings {
    /// One request's timeout.
    pub timeout: Duration,
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

/// What went wrong with one attempt. The pipeline's `classify` decides what is retried.
#[derive(Clone, Debug, thiserror::Error)]
pub enum SlackError {
    #[error("Slack answered 429 (rate limited){}", match .retry_after { Some(d) => format!(", retry after {}", crate::human::Age(*d)), None => String::new() })]
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

impl Destination {
    /// The scheme, host and port of its webhook (not secret: the path holds the token); `None` when
    /// it prints instead.
    pub fn origin(&self) -> Option<String> {
        let Target::Webhook(url) = &self.target else {
            return None;
        };
        // A webhook is checked to be a URL when it is read (config::secrets).
        reqwest::Url::parse(url.expose())
            .ok()
            .map(|u| u.origin().ascii_serialization())
    }
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
            .connect_timeout(settings.timeout)
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
            timeout: settings.timeout,
            pacer: Pacer::new(settings.rate_per_second, settings.burst),
        })
    }

    /// Reaches the host of `destination`'s webhook the way a post does (this client: its TLS roots,
    /// no redirects), without posting: what answered, or why nothing did.
    pub async fn probe(
        &self,
        destination: &Destination,
        timeout: Duration,
    ) -> Result<String, String> {
        let Some(origin) = destination.origin() else {
            return Ok("printed on standard output (no webhook)".into());
        };
        let answer = self
            .http
            .get(&origin)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| match transport_error(e, timeout) {
                SlackError::Connection(text) => format!("could not be reached: {text}"),
                other => other.to_string(),
            })?;
        let over = if origin.starts_with("https:") {
            "over TLS"
        } else {
            "over plain HTTP"
        };
        Ok(format!(
            "reachable {over}, answered {} (nothing posted)",
            answer.status().as_u16()
        ))
    }

    /// How many posts `destination` can take within `within` at its pace (any number when it
    /// prints).
    pub fn slots_within(&self, destination: &Destination, within: Duration) -> usize {
        match &destination.target {
            Target::Print => usize::MAX,
            Target::Webhook(url) => self.pacer.slots_within(url.expose(), within),
        }
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
        // A turn must leave time for a whole attempt: one that does not is a post never made
        // (`slack_paced`), not one Slack failed to answer.
        let last_start = deadline
            .checked_sub(MIN_ATTEMPT)
            .unwrap_or_else(Instant::now);
        if let Err(slot) = self.pacer.acquire(url, last_start).await {
            return Err(SlackError::NoSlotBeforeDeadline {
                wait: slot.saturating_duration_since(Instant::now()),
            });
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left < MIN_ATTEMPT {
            // The turn came late (a busy process): still no request made.
            return Err(SlackError::NoSlotBeforeDeadline {
                wait: Duration::ZERO,
            });
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
            return Err(self.rate_limited(url, &response));
        }
        Err(rejected(url, response).await)
    }

    /// A 429: the webhook is held back for its `Retry-After` (1 s when it gives none).
    fn rate_limited(&self, url: &str, response: &reqwest::Response) -> SlackError {
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
        let wait = retry_after.unwrap_or(Duration::from_secs(1));
        self.pacer.hold(url, Instant::now() + wait);
        SlackError::RateLimited { retry_after }
    }
}

/// An answer that is neither success nor 429, with Slack's error code (or what a redirect means).
async fn rejected(url: &str, response: reqwest::Response) -> SlackError {
    let status = response.status();
    let code = if status.is_redirection() {
        "a redirect, which opsrelay does not follow (it would send the webhook's URL \
         elsewhere): check the webhook URL, and any proxy between opsrelay and Slack"
            .to_string()
    } else {
        error_code(&response.text().await.unwrap_or_default(), url)
    };
    SlackError::Rejected {
        status: status.as_u16(),
        code,
    }
}

/// TLS for the webhooks trusting the Mozilla root certificates built into the binary (`webpki-roots`):
/// nothing to read or parse at start-up, where loading the system's store was most of the init time
/// (README, Performance). With `SSL_CERT_FILE` or `SSL_CERT_DIR` set (a CA of your own) the system's
/// store is used instead.
fn built_in_roots_tls() -> rustls::ClientConfig {
    crate::tls::client_config(rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_post_whose_turn_leaves_too_little_time_is_paced_not_timed_out() {
        let settings = SlackSettings {
            timeout: Duration::from_secs(5),
            rate_per_second: 1.0,
            burst: 1,
        };
        let client = SlackClient::new(&settings).unwrap();
        let destination = Destination {
            name: "D".into(),
            target: Target::Webhook(Secret::new("http://127.0.0.1:9/services/T/B/x".into())),
        };
        let turn = Instant::now() + Duration::from_secs(1);
        client.pacer.hold("http://127.0.0.1:9/services/T/B/x", turn);
        let message = SlackMessage(serde_json::json!({"text": "x"}));
        let deadline = turn + MIN_ATTEMPT / 2;
        let error = client
            .post(&destination, &message, deadline)
            .await
            .unwrap_err();
        assert!(
            matches!(error, SlackError::NoSlotBeforeDeadline { .. }),
            "no request was sent, so it is paced: {error}"
        );
    }
}
