//! From an event to the message for its rule: the rule found, its record fetched (retrying transient
//! failures until the deadline), and the templates rendered with the values a template sees.

use std::collections::BTreeMap;

use minijinja::Value;
use minijinja::value::Serde;
use tokio::time::Instant;

use super::failure::ProcessError;
use super::retry::retry;
use crate::config::Settings;
use crate::db::{Database, Record};
use crate::event::OpsEvent;
use crate::render::SlackMessage;
use crate::rules::{Rule, Rules};

/// Finds the event's rule, fetches its record (retrying transient failures until `deadline`) and
/// renders the message.
pub async fn compose<'r>(
    rules: &'r Rules,
    database: Option<&Database>,
    settings: &Settings,
    event: &OpsEvent,
    deadline: Instant,
) -> Result<(&'r Rule, SlackMessage), ProcessError> {
    let rule = rules
        .get(event.kind.as_str())
        .ok_or_else(|| ProcessError::UnknownEventType(event.kind.as_str().to_string()))?;
    let record = match (&rule.query, database) {
        (Some(query), Some(database)) => {
            retry(&settings.retry, deadline, "the database lookup", || async {
                match database
                    .fetch_record(rule, query, &event.id, settings.db.query_timeout)
                    .await?
                {
                    Some(record) => Ok(record),
                    None => Err(ProcessError::RecordNotFound {
                        rule: rule.name.clone(),
                        id: event.id.as_str().to_string(),
                        age: (chrono::Utc::now() - event.occurred_at)
                            .to_std()
                            .unwrap_or_default(),
                        grace: settings.replica_lag_grace,
                    }),
                }
            })
            .await?
        }
        _ => Record::new(),
    };
    let message = rules
        .templates
        .render(&rule.template, &template_context(event, &record))?;
    Ok((rule, message))
}

/// The values a template sees: each column by name, `row` (all columns) and `event` (`type`, `id`,
/// `occurred_at`).
pub fn template_context(event: &OpsEvent, record: &Record) -> Value {
    let mut values: BTreeMap<String, Value> = record
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(Serde(v))))
        .collect();
    values.insert("row".into(), Value::from(Serde(record)));
    values.insert(
        "event".into(),
        minijinja::context! {
            type => event.kind.as_str(),
            id => event.id.as_str(),
            occurred_at => event.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        },
    );
    Value::from(values)
}
