//! Polled rows into the source queue as raw events (`{"type", "id", "occurred_at", "source"}`), ten
//! to a `SendMessageBatch`, in order; what counts is how many from the first were sent, since the
//! cursor moves only past those (a row after a failed one is sent again by the next poll: at most a
//! duplicate). On a FIFO queue the group is the source and the deduplication id comes from the
//! source and the row's cursor, so that SQS drops a re-send within its 5 minutes. The local run's
//! queue is in memory: its events then go through the pipeline as SQS would deliver them.

use std::sync::{Arc, Mutex};

use aws_lambda_events::sqs::{SqsMessage, SqsMessageAttribute};
use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use sha2::{Digest, Sha256};

use super::read::SourceRow;
use crate::aws::describe;
use crate::lock::lock;
use crate::rules::{CursorKind, Source};
use crate::sqs::QueueKind;

/// The message attribute that says where an event's row was: `<xid or ts>/<id>`, or the id alone.
pub const CURSOR_ATTRIBUTE: &str = "opsrelay-cursor";

/// The queue polled rows go into: the one the relay reads.
#[derive(Clone, Debug)]
pub enum EventQueue {
    Sqs {
        client: aws_sdk_sqs::Client,
        url: String,
    },
    /// The local run's: the events as SQS would deliver them, until taken.
    Memory(Arc<Mutex<Vec<SqsMessage>>>),
}

/// How a send of rows ended: how many from the first went, and why the next did not.
#[derive(Debug, Default)]
pub struct Sent {
    pub count: usize,
    pub failure: Option<String>,
}

impl EventQueue {
    /// Sends the events of `rows`, in order, stopping at the first that SQS did not take.
    pub async fn send(&self, source: &Source, rows: &[SourceRow]) -> Sent {
        match self {
            EventQueue::Sqs { client, url } => send_sqs(client, url, source, rows).await,
            EventQueue::Memory(events) => {
                lock(events).extend(rows.iter().map(|row| message(source, row)));
                Sent {
                    count: rows.len(),
                    failure: None,
                }
            }
        }
    }
}

async fn send_sqs(
    client: &aws_sdk_sqs::Client,
    url: &str,
    source: &Source,
    rows: &[SourceRow],
) -> Sent {
    let fifo = QueueKind::of(url).is_fifo();
    let mut sent = Sent::default();
    for chunk in rows.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, row)| entry(source, row, i, fifo))
            .collect();
        let answer = client
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(e) => {
                sent.failure = Some(format!(
                    "sending to the source queue failed: {} (needs sqs:SendMessage on it)",
                    describe(&e)
                ));
                return sent;
            }
        };
        let first_failed = answer
            .failed
            .iter()
            .filter_map(|f| f.id.parse::<usize>().ok().map(|i| (i, f)))
            .min_by_key(|(i, _)| *i);
        if let Some((i, failed)) = first_failed {
            sent.count += i;
            sent.failure = Some(format!(
                "SQS refused row {} of source `{}`: {} {}",
                chunk[i].id,
                source.name,
                failed.code,
                failed.message.as_deref().unwrap_or_default()
            ));
            return sent;
        }
        sent.count += chunk.len();
    }
    sent
}

/// The raw event of `row`.
fn body(source: &Source, row: &SourceRow) -> String {
    let mut event = serde_json::json!({
        "type": source.event_type,
        "id": row.id.to_string(),
        "source": source.name,
    });
    if source.cursor == CursorKind::Timestamp {
        // The database prints `YYYY-MM-DD HH:MM:SS.ffffff` in its session's zone: UTC on RDS.
        event["occurred_at"] = format!("{}Z", row.at.replacen(' ', "T", 1)).into();
    }
    event.to_string()
}

/// Where the row was in the source's order: for an operator tracing an event to its row.
fn cursor_value(source: &Source, row: &SourceRow) -> String {
    match source.cursor {
        CursorKind::Id => row.id.to_string(),
        _ => format!("{}/{}", row.at, row.id),
    }
}

/// The event of `row` as the relay would receive it from SQS.
fn message(source: &Source, row: &SourceRow) -> SqsMessage {
    let value = cursor_value(source, row);
    let mut message = SqsMessage::default();
    message.message_id = Some(format!("{}-{value}", source.name));
    let mut cursor = SqsMessageAttribute::default();
    cursor.data_type = Some("String".into());
    cursor.string_value = Some(value);
    message.body = Some(body(source, row));
    message.message_attributes = [(CURSOR_ATTRIBUTE.to_string(), cursor)].into();
    message.event_source = Some("aws:sqs".into());
    message
}

/// The raw event of `row`, the `i`th of its call.
fn entry(source: &Source, row: &SourceRow, i: usize, fifo: bool) -> SendMessageBatchRequestEntry {
    let cursor = MessageAttributeValue::builder()
        .data_type("String")
        .string_value(cursor_value(source, row))
        .build()
        .expect("an attribute has a type");
    let mut entry = SendMessageBatchRequestEntry::builder()
        .id(i.to_string())
        .message_body(body(source, row))
        .message_attributes(CURSOR_ATTRIBUTE, cursor);
    if fifo {
        let key = format!("{}\n{}\n{}", source.name, row.at, row.id);
        let digest = Sha256::digest(key.as_bytes());
        let dedup: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        entry = entry
            .message_group_id(&source.name)
            .message_deduplication_id(dedup);
    }
    entry.build().expect("an entry has an id and a body")
}
