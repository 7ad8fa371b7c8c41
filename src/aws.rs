//! The AWS side shared by the binaries: the SDK configuration (loaded once; `AWS_ENDPOINT_URL` points
//! it at a local emulator), Secrets Manager look-ups, and error texts that say what to do.

use std::sync::OnceLock;

use aws_config::BehaviorVersion;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_http_client::{Builder, ConnectorBuilder};
use aws_smithy_runtime_api::client::http::{HttpClient, SharedHttpClient, http_client_fn};

use crate::secret::Secret;

/// The SDK configuration from the environment (region, credentials, endpoint).
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(https_client_on_first_use())
        .load()
        .await
}

/// The SDK's default HTTPS client (rustls with aws-lc, the proxy from the environment), made on the
/// first AWS call rather than at start-up. The SDK makes it at start-up by default, which loads and
/// parses the system's root certificates: most of opsrelay-lambda's init time (README,
/// Performance), for a client the Lambda uses only to dead-letter a message (or at start-up to read
/// a secret, which then pays for it).
fn https_client_on_first_use() -> SharedHttpClient {
    let client = OnceLock::new();
    http_client_fn(move |settings, components| {
        client
            .get_or_init(|| {
                Builder::new().build_with_connector_fn(|settings, components| {
                    let mut connector = ConnectorBuilder::default()
                        .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc));
                    connector.set_connector_settings(settings.cloned());
                    if let Some(components) = components {
                        connector.set_sleep_impl(components.sleep_impl());
                    }
                    connector.set_proxy_config(Some(ProxyConfig::from_env()));
                    connector.build()
                })
            })
            .http_connector(settings, components)
    })
}

/// An SDK error in one sentence a person reads: AWS's code and message when AWS answered, else what
/// failed on the way (each cause once, first lines only: no `Debug` dump, no list of every credential
/// provider tried), then what to do when that is known.
pub fn describe<E, R>(error: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    let text = match (error.code(), error.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_string(),
        _ => causes(error),
    };
    let hint = if text.contains("AccessDenied") || text.contains("not authorized") {
        "access denied: grant the IAM action named above"
    } else if text.contains("NonExistentQueue") || text.contains("QueueDoesNotExist") {
        "the queue does not exist: check the queue URL and the region"
    } else if text.contains("no credentials") || text.contains("credential provider") {
        "no AWS credentials were found: run with a role, or set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    } else if text.contains("Missing Region") {
        "no AWS region is set: set AWS_REGION"
    } else if matches!(
        error,
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_)
    ) {
        "AWS could not be reached: check the network, AWS_REGION and AWS_ENDPOINT_URL"
    } else {
        return text;
    };
    format!("{text} ({hint})")
}

/// The first line of each cause in `error`'s chain, each said once, joined by `: `.
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(cause) = next {
        let text = cause.to_string();
        let line = text.lines().next().unwrap_or_default().trim();
        let line = line
            .trim_end_matches("Attempted:")
            .trim_end_matches(['.', ' ']);
        if !line.is_empty() && !parts.iter().any(|p| p.contains(line)) {
            parts.push(line.to_string());
        }
        next = cause.source();
    }
    parts.join(": ")
}

/// Whether a configured value names a Secrets Manager secret instead of holding the value.
/// Every partition's (`aws`, `aws-cn`, `aws-us-gov`, …) ARN counts.
pub fn is_secret_arn(value: &str) -> bool {
    value
        .strip_prefix("arn:")
        .and_then(|rest| rest.split_once(':'))
        .is_some_and(|(partition, rest)| {
            partition.starts_with("aws") && rest.starts_with("secretsmanager:")
        })
}

/// The string value of a Secrets Manager secret.
pub async fn fetch_secret(
    client: &aws_sdk_secretsmanager::Client,
    arn: &str,
) -> Result<Secret<String>, String> {
    let output = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| {
            format!(
                "reading secret {arn} failed: {} (the function needs secretsmanager:GetSecretValue on it)",
                describe(&e)
            )
        })?;
    output
        .secret_string
        .map(Secret::new)
        .ok_or_else(|| format!("secret {arn} has no string value: store it as text or JSON"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_arns_of_every_partition_are_recognised() {
        for arn in [
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:hook-AbCdEf",
            "arn:aws-us-gov:secretsmanager:us-gov-west-1:123456789012:secret:hook-AbCdEf",
            "arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:hook-AbCdEf",
        ] {
            assert!(is_secret_arn(arn), "{arn}");
        }
        for value in [
            "arn:aws:sqs:eu-west-1:123456789012:ops",
            "https://hooks.slack.com/services/T/B/X",
            "postgres://db/app",
        ] {
            assert!(!is_secret_arn(value), "{value}");
        }
    }
}
