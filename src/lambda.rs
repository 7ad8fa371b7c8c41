//! The Lambda handler: a batch of SQS records in, the partial batch response out
//! (`ReportBatchItemFailures` must be on in the event source mapping).

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

/// The monotonic instant of a wall-clock deadline.
pub fn instant_at(deadline: SystemTime) -> Instant {
    let left = deadline
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    Instant::now() + left
}
