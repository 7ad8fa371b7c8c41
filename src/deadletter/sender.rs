//! Where the pipeline sends the messages that cannot be delivered: the SQS dead-letter queue (Lambda
//! and worker), or a JSON-lines file (the local run). The body goes unchanged, the original message
//! attributes are kept, and one attribute, `opsrelay-failure`, says why ([`FailureRecord`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use aws_lambda_events::sqs::{SqsMessage, SqsMessageAttribute};

use super::{AppendFile, FAILURE_ATTRIBUTE, FailureRecord, FileError, Letter};
use crate::sqs::{DEFAULT_GROUP, MAX_ATTRIBUTES, QueueKind, sdk_attribute, text_attribute};

/// SQS refuses an empty body; a record without one is dead-lettered with this body instead.
const EMPTY_BODY: &str = "(opsrelay: the original message had no body)";

/// A dead-letter destination, made once per process.
#[derive(Debug)]
pub enum DeadLetters {
    Sqs {
        client: aws_sdk_sqs::Client,
        queue_url: String,
    },
    /// Each line appended whole or not at all ([`AppendFile`]).
    File(AppendFile),
}

/// The DLQ could not take the message; it is then handed back to SQS (`batchItemFailures`).
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("sending to the DLQ failed: {0}; check the DLQ URL and the sqs:SendMessage permission")]
    Send(String),
    #[error("sending to the DLQ took over {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("the dead-letter file: {0}")]
    File(#[from] FileError),
}

impl DeadLetters {
    pub fn file(path: PathBuf) -> Self {
        DeadLetters::File(AppendFile::new(&path))
    }

    /// Sends `record` with `failure` attached, within `timeout`.
    pub async fn send(
        &self,
        record: &SqsMessage,
        failure: &FailureRecord,
        timeout: Duration,
    ) -> Result<(), DlqError> {
        let body = record
            .body
            .as_deref()
            .filter(|b| !b.is_empty())
            .unwrap_or(EMPTY_BODY);
        let mut failure = failure.clone();
        let attributes = kept_attributes(record, &mut failure);
        match self {
            DeadLetters::Sqs { client, queue_url } => {
                let failure_json = serde_json::to_string(&failure).unwrap_or_default();
                let mut request = client
                    .send_message()
                    .queue_url(queue_url)
                    .message_body(body)
                    .message_attributes(FAILURE_ATTRIBUTE, text_attribute("String", &failure_json));
                for (name, value) in &attributes {
                    if let Some(value) = sdk_attribute(value) {
                        request = request.message_attributes(name, value);
                    }
                }
                if QueueKind::of(queue_url).is_fifo() {
                    let group = record
                        .attributes
                        .get("MessageGroupId")
                        .map(String::as_str)
                        .unwrap_or(DEFAULT_GROUP);
                    request = request
                        .message_group_id(group)
                        .message_deduplication_id(&failure.source_message_id);
                }
                match tokio::time::timeout(timeout, request.send()).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(DlqError::Send(crate::aws::describe(&e))),
                    Err(_) => Err(DlqError::Timeout(timeout)),
                }
            }
            DeadLetters::File(file) => {
                let letter = Letter {
                    message_id: failure.source_message_id.clone(),
                    body: body.to_string(),
                    message_attributes: attributes,
                    failure: Some(failure),
                    ..Letter::default()
                };
                Ok(file.write(&[&letter]).await?)
            }
        }
    }
}

/// The record's own attributes that go with it: all of them when they fit beside `opsrelay-failure`
/// in SQS's ten, else the first nine, the others kept inside `failure` (`dropped_attributes`).
fn kept_attributes(
    record: &SqsMessage,
    failure: &mut FailureRecord,
) -> BTreeMap<String, SqsMessageAttribute> {
    let mut attributes: BTreeMap<String, SqsMessageAttribute> = record
        .message_attributes
        .iter()
        .filter(|(name, _)| name.as_str() != FAILURE_ATTRIBUTE)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if attributes.len() >= MAX_ATTRIBUTES {
        let overflow: Vec<String> = attributes
            .keys()
            .skip(MAX_ATTRIBUTES - 1)
            .cloned()
            .collect();
        let mut dropped = serde_json::Map::new();
        for name in overflow {
            if let Some(value) = attributes.remove(&name) {
                dropped.insert(name, serde_json::to_value(value).unwrap_or_default());
            }
        }
        failure.dropped_attributes = Some(dropped);
    }
    attributes
}
