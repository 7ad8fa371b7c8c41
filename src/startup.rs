//! Builds the [`Relay`] once from the environment, for the Lambda and the worker: settings, rules,
//! secrets, database pool, HTTP client and DLQ client. Any mistake stops start-up with an error that
//! says what to fix.

use crate::config::{self, MissingWebhook, Settings};
use crate::dlq::DeadLetters;
use crate::lookup::Database;
use crate::pipeline::Relay;

/// The relay for a queue-driven process (Lambda or worker), with the SDK configuration it used.
pub async fn relay_from_env(sdk: &aws_config::SdkConfig) -> Result<Relay, anyhow::Error> {
    let settings = Settings::from_env()?;
    let rules = settings.load_rules()?;
    let dlq_url = settings.require_dlq_url()?.to_string();
    let resolved = config::resolve(
        &settings,
        &rules,
        |name| std::env::var(name).ok(),
        MissingWebhook::Fail,
        Some(sdk),
    )
    .await?;
    let database = resolved
        .database_url
        .as_ref()
        .map(|url| Database::connect_lazy(url, &settings.db))
        .transpose()?;
    let dead_letters = DeadLetters::Sqs {
        client: aws_sdk_sqs::Client::new(sdk),
        queue_url: dlq_url,
    };
    Relay::new(
        settings,
        rules,
        database,
        resolved.destinations,
        dead_letters,
    )
}
