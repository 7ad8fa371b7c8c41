//! Runs outside Lambda with exactly the Lambda's semantics: long-polls an SQS queue, processes each
//! batch through the same [`Relay`], deletes what was delivered or dead-lettered, and leaves the rest
//! to come back after the visibility timeout.

use std::future::Future;
use std::time::Duration;

use aws_lambda_events::sqs::SqsMessage;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
};
use tokio::time::Instant;

use crate::aws::describe;
use crate::pipeline::{Outcome, Processed, Relay, Tally};
use crate::sqs::{lambda_record, queue_attributes};

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
    /// Every batch's counts, per rule (the Lambda's metrics).
    pub tally: Tally,
}

/// The queue's facts the worker needs: its ARN (each record's event source, as Lambda sets it,
/// which tells the pipeline whether the batch keeps order; its URL should SQS not say) and how long a
/// receive hides a batch.
struct QueueFacts {
    arn: String,
    visibility: Duration,
}

/// Polls until `shutdown` completes, the queue is empty (`until_empty`) or `max_batches` is reached.
pub async fn run(
    relay: &Relay,
    client: &aws_sdk_sqs::Client,
    options: &WorkerOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<WorkerStats, anyhow::Error> {
    let queue = queue_facts(client, &options.queue_url).await?;
    let mut stats = WorkerStats::default();
    tokio::pin!(shutdown);
    loop {
        if options.max_batches.is_some_and(|max| stats.batches >= max) {
            break;
        }
        let received = tokio::select! {
            _ = &mut shutdown => break,
            received = receive(client, options, &queue.arn) => received?,
        };
        if received.is_empty() {
            if options.until_empty {
                break;
            }
            continue;
        }
        let end = Instant::now() + queue.visibility;
        let results = relay.run_batch(&received, end).await;
        acknowledge(client, &options.queue_url, &received, &results).await;
        stats.batches += 1;
        stats.tally.add(&Tally::of(&results));
    }
    Ok(stats)
}

async fn queue_facts(
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
) -> Result<QueueFacts, anyhow::Error> {
    let names = [
        QueueAttributeName::QueueArn,
        QueueAttributeName::VisibilityTimeout,
    ];
    let attributes = queue_attributes(client, queue_url, &names)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "reading the queue's attributes failed: {} (needs sqs:GetQueueAttributes)",
                describe(&e)
            )
        })?;
    let seconds = attributes
        .get(&QueueAttributeName::VisibilityTimeout)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(30);
    Ok(QueueFacts {
        arn: attributes
            .get(&QueueAttributeName::QueueArn)
            .cloned()
            .unwrap_or_else(|| queue_url.to_string()),
        visibility: Duration::from_secs(seconds),
    })
}

async fn receive(
    client: &aws_sdk_sqs::Client,
    options: &WorkerOptions,
    queue_arn: &str,
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
    let records = output.messages().iter();
    Ok(records.map(|m| lambda_record(m, Some(queue_arn))).collect())
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
