//! Runs outside Lambda with exactly the Lambda's semantics: long-polls an SQS queue, processes each
//! batch through the same [`Relay`], deletes what was delivered or dead-lettered, and leaves the rest
//! to come back after the visibility timeout.

use std::future::Future;
use std::time::Duration;

use aws_lambda_events::encodings::Base64Data;
use aws_lambda_events::sqs::{SqsMessage, SqsMessageAttribute};
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName, QueueAttributeName,
};
use tokio::time::Instant;

use crate::aws::describe;
use crate::pipeline::{Outcome, Processed, Relay};

/// How the worker polls.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    pub queue_url: String,
    /// Long-poll wait (0–20 s).
    pub wait_time_seconds: i32,
    /// Stop after the first empty receive (for scripts and tests).
    pub until_empty: bool,
    /// Stop after this many batches.
    pub max_batches: Option<u64>,
}

/// What the worker did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerStats {
    pub batches: u64,
    pub delivered: u64,
    pub retried: u64,
    pub dead_lettered: u64,
}

/// Polls until `shutdown` completes, the queue is empty (`until_empty`) or `max_batches` is reached.
pub async fn run(
    relay: &Relay,
    client: &aws_sdk_sqs::Client,
    options: &WorkerOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<WorkerStats, anyhow::Error> {
    let visibility = visibility_timeout(client, &options.queue_url).await?;
    let mut stats = WorkerStats::default();
    tokio::pin!(shutdown);
    loop {
        if options.max_batches.is_some_and(|max| stats.batches >= max) {
            break;
        }
        let received = tokio::select! {
            _ = &mut shutdown => break,
            received = receive(client, options) => received?,
        };
        if received.is_empty() {
            if options.until_empty {
                break;
            }
            continue;
        }
        let deadline = Instant::now() + visibility;
        let results = relay.run_batch(&received, deadline).await;
        acknowledge(client, &options.queue_url, &received, &results).await;
        stats.batches += 1;
        for result in &results {
            match result.outcome {
                Outcome::Delivered => stats.delivered += 1,
                Outcome::Retry { .. } => stats.retried += 1,
                Outcome::DeadLettered(_) => stats.dead_lettered += 1,
            }
        }
    }
    Ok(stats)
}

async fn visibility_timeout(
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
) -> Result<Duration, anyhow::Error> {
    let attributes = client
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::VisibilityTimeout)
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "reading the queue's visibility timeout failed: {} (needs sqs:GetQueueAttributes)",
                describe(&e)
            )
        })?;
    let seconds = attributes
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::VisibilityTimeout))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(30);
    Ok(Duration::from_secs(seconds))
}

async fn receive(
    client: &aws_sdk_sqs::Client,
    options: &WorkerOptions,
) -> Result<Vec<SqsMessage>, anyhow::Error> {
    let output = client
        .receive_message()
        .queue_url(&options.queue_url)
        .max_number_of_messages(10)
        .wait_time_seconds(options.wait_time_seconds)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .message_attribute_names("All")
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "receiving from the queue failed: {} (needs sqs:ReceiveMessage)",
                describe(&e)
            )
        })?;
    Ok(output.messages().iter().map(lambda_record).collect())
}

/// Deletes the records that need no other delivery. A failed delete only means the record comes
/// back; the relay's delivered memory keeps it from being posted twice.
async fn acknowledge(
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
    records: &[SqsMessage],
    results: &[Processed],
) {
    let entries: Vec<DeleteMessageBatchRequestEntry> = records
        .iter()
        .zip(results)
        .filter(|(_, r)| !matches!(r.outcome, Outcome::Retry { .. }))
        .enumerate()
        .filter_map(|(i, (record, _))| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(record.receipt_handle.clone()?)
                .build()
                .ok()
        })
        .collect();
    if entries.is_empty() {
        return;
    }
    match client
        .delete_message_batch()
        .queue_url(queue_url)
        .set_entries(Some(entries))
        .send()
        .await
    {
        Ok(output) if output.failed().is_empty() => {}
        Ok(output) => tracing::warn!(
            failed = output.failed().len(),
            "Some deletes failed; those messages will come back."
        ),
        Err(e) => {
            tracing::warn!(error = %describe(&e), "Deleting the batch failed; its messages will come back.")
        }
    }
}

/// The Lambda form of an SDK message, so that both paths share one pipeline.
pub fn lambda_record(message: &Message) -> SqsMessage {
    let mut record = SqsMessage::default();
    record.message_id = message.message_id().map(str::to_string);
    record.receipt_handle = message.receipt_handle().map(str::to_string);
    record.body = message.body().map(str::to_string);
    record.md5_of_body = message.md5_of_body().map(str::to_string);
    record.event_source = Some("aws:sqs".into());
    if let Some(attributes) = message.attributes() {
        record.attributes = attributes
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.clone()))
            .collect();
    }
    if let Some(attributes) = message.message_attributes() {
        record.message_attributes = attributes
            .iter()
            .map(|(name, value)| {
                let mut attribute = SqsMessageAttribute::default();
                attribute.data_type = Some(value.data_type().to_string());
                attribute.string_value = value.string_value().map(str::to_string);
                attribute.binary_value = value.binary_value().map(|b| {
                    let mut data = Base64Data::default();
                    data.0 = b.as_ref().to_vec();
                    data
                });
                (name.clone(), attribute)
            })
            .collect();
    }
    record
}
