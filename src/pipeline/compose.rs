//! From an event to the message for its rule: the rule found, its record fetched (retrying transient
//! failures until the deadline), and the templates rendered with the values a template sees.

use std::collections::BTreeMap;

use minijinja::Value;
use minijinja::value::Serde;
use tokio::time::Instant;

use super::failure::ProcessError;
use super::retry::retry;
use crate::config::Settings;
use crate::db::{Database, Fetched, Record};
use crate::event::OpsEvent;
use crate::render::SlackMessage;
use crate::rules::{Rule, Rules};

/// An event's rule, its row, and its message.
pub struct Composed<'r> {
    pub rule: &'r Rule,
    pub row: Fetched,
    pub message: SlackMessage,
}

/// Finds the event's rule, fetches its record (retrying transient failures until `deadline`) and
/// renders the message.
pub async fn compose<'r>(
    rules: &'r Rules,
    database: Option<&Database>,
    settings: &Settings,
    event: &OpsEvent,
    deadline: Instant,
) -> Result<Composed<'r>, ProcessError> {
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
        _ => Fetched::default(),
    };
    let context = template_context(event, &record.values);
    let message = rules.templates.render(&rule.template, &context)?;
    Ok(Composed {
        rule,
        row: record,
        message,
    })
}

/// The values a route's `when` sees: the template's, with each decimal column a number.
pub fn route_context(event: &OpsEvent, row: &Fetched) -> Value {
    if row.decimals.is_empty() {
        return template_context(event, &row.values);
    }
    let mut values = row.values.clone();
    for name in &row.decimals {
        let number = values
            .get(name)
            .and_then(|v| v.as_str())
            .and_then(|text| text.parse::<f64>().ok());
        if let Some(number) = number.and_then(serde_json::Number::from_f64) {
            values.insert(name.clone(), serde_json::Value::Number(number));
        }
    }
    template_context(event, &values)
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
