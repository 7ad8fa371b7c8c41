//! Builds what a queue-driven process (Lambda or worker) and the doctor use, once, from the
//! environment: settings, rules, secrets, database pool and DLQ client. [`parts_from_env`] keeps every
//! configuration problem for the doctor to report; [`relay_from_env`] stops on any, with a message
//! that says what to fix.

use std::collections::BTreeMap;

use crate::config::{self, MissingWebhook, Problems, Settings};
use crate::db::Database;
use crate::deadletter::DeadLetters;
use crate::pipeline::Relay;
use crate::rules::Rules;
use crate::slack::Destination;
use crate::source::Poller;

/// What the environment configures, and what it lacks.
pub struct Parts {
    pub settings: Settings,
    pub rules: Rules,
    pub database: Option<Database>,
    pub destinations: BTreeMap<String, Destination>,
    /// `None` when `OPSRELAY_DLQ_URL` is not set (a problem).
    pub dead_letters: Option<DeadLetters>,
    /// `None` when the rules have no sources, or its settings are missing (a problem).
    pub poller: Option<Poller>,
    pub problems: Problems,
}

/// Reads everything the relay needs; fails only on what no check can go without (a setting that is
/// not valid, a rules file that cannot be read). Every other problem is in [`Parts::problems`].
pub async fn parts_from_env(sdk: &aws_config::SdkConfig) -> Result<Parts, anyhow::Error> {
    let settings = Settings::from_env()?;
    let rules = settings.load_rules()?;
    let resolved = config::resolve(
        &settings,
        &rules,
        |name| std::env::var(name).ok(),
        MissingWebhook::Fail,
        Some(sdk),
    )
    .await;
    let mut problems = resolved.problems;
    let database = match &resolved.database_url {
        Some(url) => Some(Database::connect_lazy(url, &settings.db)?),
        None => None,
    };
    // A URL whose secret could not be read is a problem of its own already.
    let has_database = settings.database_url.is_some();
    problems.extend(Problems::of_rules(
        &rules,
        has_database,
        &resolved.destinations,
    ));
    problems.extend(Problems::of_dlq_url(settings.dlq_url.as_deref()));
    let dead_letters = settings.dlq_url.clone().map(|queue_url| DeadLetters::Sqs {
        client: aws_sdk_sqs::Client::new(sdk),
        queue_url,
    });
    problems.extend(Problems::of_sources(&rules, &settings.poll));
    let poller = match rules.sources.is_empty() {
        true => None,
        false => Poller::from_settings(&settings, sdk),
    };
    Ok(Parts {
        settings,
        rules,
        database,
        destinations: resolved.destinations,
        dead_letters,
        poller,
        problems,
    })
}

/// The relay for a queue-driven process (Lambda or worker), with its poller when the rules have
/// sources; any configuration problem stops it.
pub async fn relay_from_env(sdk: &aws_config::SdkConfig) -> Result<Relay, anyhow::Error> {
    let parts = parts_from_env(sdk).await?;
    parts.problems.into_result()?;
    let dead_letters = parts
        .dead_letters
        .expect("Problems::of_dlq_url reports a missing DLQ URL");
    let poller = parts.poller;
    let relay = Relay::new(
        parts.settings,
        parts.rules,
        parts.database,
        parts.destinations,
        dead_letters,
    )?;
    Ok(match poller {
        Some(poller) => relay.with_poller(poller),
        None => relay,
    })
}
