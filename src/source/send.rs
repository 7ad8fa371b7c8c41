//! Polled rows into the source queue as raw events (`{"type", "id", "occurred_at", "source"}`), ten
//! to a `SendMessageBatch`, in order; what counts is how many from the first were sent, since the
//! cursor moves only past those (a row after a failed one is sent again by the next poll: at most a
//! duplicate). On a FIFO queue the group is the source and the deduplication id comes from the
//! source and the row's cursor, so that SQS drops a re-send within its 5 minutes.

use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use sha2::{Digest, Sha256};

use super::read::SourceRow;
use crate::aws::describe;
use crate::rules::{CursorKind, Source};
use crate::sqs::QueueKind;

/// The message attribute that says where an event's row was: `<xid or ts>/<id>`.
pub const CURSOR_ATTRIBUTE: &str = "opsrelay-cursor";

/// The queue polled rows go into: the one the relay reads.
#[derive(Clone, Debug)]
pub struct EventQueue {
    pub client: aws_sdk_sqs::Client,
    pub url: String,
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
        let fifo = QueueKind::of(&self.url).is_fifo();
        let mut sent = Sent::default();
        for chunk in rows.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, row)| entry(source, row, i, fifo))
                .collect();
            let answer = self
                .client
                .send_message_batch()
                .queue_url(&self.url)
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
}

/// The raw event of `row`, the `i`th of its call.
fn entry(source: &Source, row: &SourceRow, i: usize, fifo: bool) -> SendMessageBatchRequestEntry {
    let mut event = serde_json::json!({
        "type": source.event_type,
        "id": row.id.to_string(),
        "source": source.name,
    });
    if source.cursor == CursorKind::Timestamp {
        // The database prints `YYYY-MM-DD HH:MM:SS.ffffff` in its session's zone: UTC on RDS.
        event["occurred_at"] = format!("{}Z", row.at.replacen(' ', "T", 1)).into();
    }
    // Where the row was in the source's order: for an operator tracing an event to its row.
    let cursor = MessageAttributeValue::builder()
        .data_type("String")
        .string_value(format!("{}/{}", row.at, row.id))
        .build()
        .expect("an attribute has a type");
    let mut entry = SendMessageBatchRequestEntry::builder()
        .id(i.to_string())
        .message_body(event.to_string())
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
