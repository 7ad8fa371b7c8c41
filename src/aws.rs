//! The AWS side shared by the binaries: the SDK configuration (loaded once; `AWS_ENDPOINT_URL` points
//! it at a local emulator), Secrets Manager look-ups, and error texts that say what to do.

use aws_config::BehaviorVersion;
use aws_sdk_sqs::error::DisplayErrorContext;

use crate::secret::Secret;

/// The SDK configuration from the environment (region, credentials, endpoint).
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

/// An SDK error with its whole chain, and the IAM action to grant when access was denied.
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let text = DisplayErrorContext(error).to_string();
    if text.contains("AccessDenied") || text.contains("not authorized") {
        format!("{text} (access denied: grant the IAM action named above)")
    } else if text.contains("NonExistentQueue") || text.contains("QueueDoesNotExist") {
        format!("{text} (the queue does not exist: check the queue URL and the region)")
    } else {
        text
    }
}

/// Whether a configured value names a Secrets Manager secret instead of holding the value.
pub fn is_secret_arn(value: &str) -> bool {
    value.starts_with("arn:aws:secretsmanager:")
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
