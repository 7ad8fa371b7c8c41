//! The `opsrelay-failure` record that travels with a dead-lettered message: why it failed (class,
//! code, reason for a person), what it was, and when.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::sqs::Delivery;

/// The name of the one message attribute added to a dead-lettered message.
pub const FAILURE_ATTRIBUTE: &str = "opsrelay-failure";
/// Reasons are cut to this many characters so that the attribute stays small.
const MAX_REASON_CHARS: usize = 1_000;

/// Whether trying again can help.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// Another try may succeed: rate limits, 5xx, timeouts, an unreachable database, a replica behind.
    Transient,
    /// Another try fails the same way: a malformed event, an unknown type, a revoked webhook.
    Permanent,
}

impl FailureClass {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Transient => "transient",
            FailureClass::Permanent => "permanent",
        }
    }
}

/// The `opsrelay-failure` attribute: why a message was dead-lettered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailureRecord {
    pub class: FailureClass,
    /// A stable short name (`ProcessError::code`).
    pub code: String,
    /// What failed and what to do, for a person.
    pub reason: String,
    /// The event type when the body could be parsed that far.
    pub event_type: Option<String>,
    pub source_message_id: String,
    pub receive_count: u32,
    /// The first failed receive (SQS's first receive time when this is not the first).
    pub first_failed_at: DateTime<Utc>,
    pub failed_at: DateTime<Utc>,
    /// Original message attributes that did not fit beside this one (SQS allows 10 per message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped_attributes: Option<serde_json::Map<String, serde_json::Value>>,
}

/// What failed, as the pipeline classified it.
#[derive(Clone, Debug)]
pub struct Failure {
    pub class: FailureClass,
    pub code: &'static str,
    pub reason: String,
}

impl FailureRecord {
    /// The record for `failure`, on the delivery described by `delivery`.
    pub fn new(failure: Failure, event_type: Option<String>, delivery: &Delivery) -> Self {
        let failed_at = Utc::now();
        let first_failed_at = match (delivery.receive_count, delivery.first_received_at) {
            (count, Some(first)) if count > 1 => first,
            _ => failed_at,
        };
        let mut reason = failure.reason;
        if reason.chars().count() > MAX_REASON_CHARS {
            reason = reason
                .chars()
                .take(MAX_REASON_CHARS - 1)
                .collect::<String>()
                + "…";
        }
        Self {
            class: failure.class,
            code: failure.code.to_string(),
            reason,
            event_type,
            source_message_id: delivery.message_id.clone(),
            receive_count: delivery.receive_count,
            first_failed_at,
            failed_at,
            dropped_attributes: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_reason_is_cut() {
        let failure = Failure {
            class: FailureClass::Permanent,
            code: "unknown_event_type",
            reason: "x".repeat(5_000),
        };
        let record = FailureRecord::new(failure, None, &Delivery::default());
        assert_eq!(record.reason.chars().count(), MAX_REASON_CHARS);
        assert!(record.reason.ends_with('…'));
    }
}
