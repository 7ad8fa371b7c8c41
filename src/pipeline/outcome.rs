//! What became of each record, and the partial batch response that tells Lambda (or the worker)
//! exactly which records SQS must deliver again.

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse};

use crate::deadletter::FailureRecord;

/// What became of one record.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Posted to every destination of its rule.
    Delivered,
    /// Left in the queue: SQS delivers it again after the visibility timeout.
    Retry { code: String, reason: String },
    /// Sent to the DLQ with this record.
    DeadLettered(FailureRecord),
}

/// One record's outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct Processed {
    pub message_id: String,
    pub outcome: Outcome,
}

/// A record to retry has no message id, so it cannot be reported on its own.
#[derive(Debug, thiserror::Error)]
#[error(
    "a record without a messageId failed and could not be dead-lettered; failing the whole batch so that SQS delivers it again"
)]
pub struct MissingMessageId;

/// The partial batch response for Lambda: exactly the records left for SQS.
pub fn batch_response(results: &[Processed]) -> Result<SqsBatchResponse, MissingMessageId> {
    let mut response = SqsBatchResponse::default();
    for result in results {
        if let Outcome::Retry { .. } = result.outcome {
            if result.message_id.is_empty() {
                return Err(MissingMessageId);
            }
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = result.message_id.clone();
            response.batch_item_failures.push(failure);
        }
    }
    Ok(response)
}

/// How many records of a batch ended each way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub delivered: u64,
    pub retried: u64,
    pub dead_lettered: u64,
}

impl Tally {
    pub fn of(results: &[Processed]) -> Self {
        let mut tally = Tally::default();
        for result in results {
            match result.outcome {
                Outcome::Delivered => tally.delivered += 1,
                Outcome::Retry { .. } => tally.retried += 1,
                Outcome::DeadLettered(_) => tally.dead_lettered += 1,
            }
        }
        tally
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn processed(id: &str, outcome: Outcome) -> Processed {
        Processed {
            message_id: id.into(),
            outcome,
        }
    }

    fn retry() -> Outcome {
        Outcome::Retry {
            code: "x".into(),
            reason: "x".into(),
        }
    }

    #[test]
    fn the_batch_response_lists_only_retries() {
        let response = batch_response(&[
            processed("a", Outcome::Delivered),
            processed("b", retry()),
            processed("c", retry()),
        ])
        .unwrap();
        let ids: Vec<_> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!(ids, ["b", "c"]);
    }

    #[test]
    fn a_retry_without_a_message_id_fails_the_whole_batch_rather_than_an_empty_identifier() {
        assert!(batch_response(&[processed("", retry())]).is_err());
        assert!(batch_response(&[processed("", Outcome::Delivered)]).is_ok());
    }
}
