//! The Lambda handler: a batch of SQS records in, the partial batch response out
//! (`ReportBatchItemFailures` must be on in the event source mapping). Invoked with
//! `{"opsrelay": "doctor"}` instead, it runs [`crate::doctor`] from inside the VPC and returns the
//! report.

use std::time::SystemTime;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use tokio::time::Instant;

use crate::pipeline::{MissingMessageId, Relay, batch_response};

/// Handles one invocation. An `Err` fails the whole batch; it happens only when a record without a
/// message id could neither be delivered nor dead-lettered, the one case a partial response cannot
/// express.
pub async fn handle(
    relay: &Relay,
    event: SqsEvent,
    deadline: SystemTime,
) -> Result<SqsBatchResponse, MissingMessageId> {
    let results = relay.run_batch(&event.records, instant_at(deadline)).await;
    batch_response(&results)
}

/// An invocation that is neither an SQS batch nor the doctor event.
#[derive(Debug, thiserror::Error)]
pub enum InvocationError {
    #[error(
        "the event is neither an SQS batch ({{\"Records\": [...]}}) nor {{\"opsrelay\": \"doctor\"}}"
    )]
    Unknown,
    #[error("the SQS event is malformed: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error(transparent)]
    MissingMessageId(#[from] MissingMessageId),
}

/// Handles any invocation: an SQS batch, or the doctor event.
pub async fn handle_any(
    relay: &Relay,
    event: serde_json::Value,
    deadline: SystemTime,
) -> Result<serde_json::Value, InvocationError> {
    if event.get("opsrelay").and_then(|v| v.as_str()) == Some("doctor") {
        let report = crate::doctor::run(relay).await;
        tracing::info!(ok = report.ok, report = %report.text(), "Ran the doctor.");
        return Ok(serde_json::to_value(report)?);
    }
    if event.get("Records").is_none() {
        return Err(InvocationError::Unknown);
    }
    let batch: SqsEvent = serde_json::from_value(event)?;
    Ok(serde_json::to_value(handle(relay, batch, deadline).await?)?)
}

/// The monotonic instant of a wall-clock deadline.
pub fn instant_at(deadline: SystemTime) -> Instant {
    let left = deadline
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    Instant::now() + left
}
