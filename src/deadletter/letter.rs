//! One dead letter, the one JSON-line type of the local dead-letter file and of `opsrelay dlq export`:
//! body, the message's own attributes, and the `opsrelay-failure` record when it has one. Read from the
//! DLQ, the failure record is taken off the attributes.

use std::collections::BTreeMap;

use aws_lambda_events::sqs::SqsMessageAttribute;
use aws_sdk_sqs::types::Message;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{FAILURE_ATTRIBUTE, FailureRecord};
use crate::sqs::{DEFAULT_GROUP, Delivery, lambda_record};

/// How messages without a failure record (moved by SQS itself) are shown and filtered.
pub const NO_REASON: &str = "no reason";

/// One dead letter; serialized, one export line.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Letter {
    pub message_id: String,
    pub body: String,
    /// The message's own attributes (`opsrelay-failure` is in `failure`).
    #[serde(default)]
    pub message_attributes: BTreeMap<String, SqsMessageAttribute>,
    /// Why it failed; `None` for a message that SQS moved after `maxReceiveCount` receives.
    #[serde(default)]
    pub failure: Option<FailureRecord>,
    /// The `opsrelay-failure` attribute as it was, when it is not a record this version can read
    /// (written by a newer version, or another tool): kept in an export, never sent back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unread_failure: Option<String>,
    /// When SQS accepted it (a message moved by SQS keeps its original time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<DateTime<Utc>>,
    /// SQS's `ApproximateReceiveCount` when it was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive_count: Option<u32>,
    /// FIFO queues only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_group_id: Option<String>,
    /// What removes it from where it was read: the receipt handle, or the line number in a file.
    #[serde(skip)]
    pub handle: String,
}

impl Letter {
    /// A message received from the DLQ.
    pub fn from_sqs(message: &Message) -> Self {
        let mut record = lambda_record(message, None);
        let delivery = Delivery::of(&record);
        // Always taken off: it belongs to the dead letter, never to the message sent back, even when
        // it is not a record this version can read (then kept as it was, for an export).
        let (mut failure, mut unread_failure) = (None, None);
        if let Some(attribute) = record.message_attributes.remove(FAILURE_ATTRIBUTE) {
            let json = attribute.string_value.unwrap_or_default();
            match serde_json::from_str::<FailureRecord>(&json) {
                Ok(record) => failure = Some(record),
                Err(error) => {
                    tracing::warn!(
                        message_id = %delivery.message_id,
                        "{FAILURE_ATTRIBUTE} is not a failure record ({error}): shown as {NO_REASON:?}, kept as it is in an export, and not sent back."
                    );
                    unread_failure = Some(json);
                }
            }
        }
        Letter {
            message_id: delivery.message_id,
            body: record.body.unwrap_or_default(),
            message_attributes: record.message_attributes.into_iter().collect(),
            failure,
            unread_failure,
            sent_at: delivery.sent_at,
            receive_count: Some(delivery.receive_count),
            message_group_id: delivery.group_id,
            handle: record.receipt_handle.unwrap_or_default(),
        }
    }

    /// `transient`, `permanent`, or [`NO_REASON`].
    pub fn class(&self) -> &str {
        self.failure
            .as_ref()
            .map_or(NO_REASON, |f| f.class.as_str())
    }

    /// The failure's code, or [`NO_REASON`].
    pub fn code(&self) -> &str {
        self.failure.as_ref().map_or(NO_REASON, |f| f.code.as_str())
    }

    /// The failure's reason, or [`NO_REASON`].
    pub fn reason(&self) -> &str {
        self.failure
            .as_ref()
            .map_or(NO_REASON, |f| f.reason.as_str())
    }

    /// Its FIFO message group; for a letter without one (a line of the local dead-letter file), the
    /// group it is sent to.
    pub fn group(&self) -> &str {
        self.message_group_id.as_deref().unwrap_or(DEFAULT_GROUP)
    }
}
