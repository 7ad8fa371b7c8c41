//! AWS's own redrive: a message move task (`StartMessageMoveTask`) moves everything from the DLQ to
//! its source queues, or to one queue of the same type, at a rate, inside SQS; and the tasks' listing
//! and cancelling. It cannot filter, preview or export: the other `dlq` commands do that.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::error::Error;
use super::queue::Queue;

/// SQS's limit for `MaxNumberOfMessagesPerSecond`.
const MAX_RATE: u32 = 500;

/// One message move task of a DLQ.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Task {
    pub handle: Option<String>,
    /// `RUNNING`, `COMPLETED`, `CANCELLING`, `CANCELLED` or `FAILED`.
    pub status: String,
    /// `None`: the original sources.
    pub destination_arn: Option<String>,
    pub rate: Option<i32>,
    pub moved: i64,
    pub to_move: Option<i64>,
    pub started_at: Option<DateTime<Utc>>,
    pub failure_reason: Option<String>,
}

/// Starts moving every message of `dlq` to `to` (its sources when `None`); returns the task handle.
pub async fn start(dlq: &Queue, to: Option<&Queue>, rate: Option<u32>) -> Result<String, Error> {
    if let Some(rate) = rate.filter(|&r| r > MAX_RATE) {
        return Err(Error::NativeRate(rate));
    }
    let output = dlq
        .client
        .start_message_move_task()
        .source_arn(&dlq.arn)
        .set_destination_arn(to.map(|q| q.arn.clone()))
        .set_max_number_of_messages_per_second(rate.map(|r| r as i32))
        .send()
        .await
        .map_err(|e| Error::aws("sqs:StartMessageMoveTask", &dlq.arn, &e))?;
    Ok(output.task_handle.unwrap_or_default())
}

/// The most recent tasks of `dlq` (SQS keeps ten).
pub async fn tasks(dlq: &Queue) -> Result<Vec<Task>, Error> {
    let output = dlq
        .client
        .list_message_move_tasks()
        .source_arn(&dlq.arn)
        .max_results(10)
        .send()
        .await
        .map_err(|e| Error::aws("sqs:ListMessageMoveTasks", &dlq.arn, &e))?;
    Ok(output
        .results()
        .iter()
        .map(|t| Task {
            handle: t.task_handle().map(str::to_string),
            status: t.status().unwrap_or("UNKNOWN").to_string(),
            destination_arn: t.destination_arn().map(str::to_string),
            rate: t.max_number_of_messages_per_second(),
            moved: t.approximate_number_of_messages_moved(),
            to_move: t.approximate_number_of_messages_to_move(),
            started_at: DateTime::from_timestamp_millis(t.started_timestamp()),
            failure_reason: t.failure_reason().map(str::to_string),
        })
        .collect())
}

/// Cancels the task `handle`, or the running task of `dlq`; returns the handle and how many
/// messages it had moved (they stay moved).
pub async fn cancel(dlq: &Queue, handle: Option<&str>) -> Result<(String, i64), Error> {
    let handle = match handle {
        Some(handle) => handle.to_string(),
        None => tasks(dlq)
            .await?
            .into_iter()
            .find(|t| t.status == "RUNNING")
            .and_then(|t| t.handle)
            .ok_or_else(|| Error::NoRunningTask(dlq.url.clone()))?,
    };
    let output = dlq
        .client
        .cancel_message_move_task()
        .task_handle(&handle)
        .send()
        .await
        .map_err(|e| Error::aws("sqs:CancelMessageMoveTask", &dlq.arn, &e))?;
    Ok((handle, output.approximate_number_of_messages_moved()))
}
