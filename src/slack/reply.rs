//! Slack's answers and transport failures as [`SlackError`]s, with the webhook's URL, path and token
//! redacted from any text an answer echoes.

use std::time::Duration;

use super::SlackError;

/// Slack's error code (`invalid_payload`, `no_service`, …), or a short, cleaned excerpt of an
/// unexpected body.
pub(super) fn error_code(body: &str, url: &str) -> String {
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

pub(super) fn transport_error(error: reqwest::Error, timeout: Duration) -> SlackError {
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
