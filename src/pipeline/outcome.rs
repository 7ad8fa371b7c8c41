//! What became of each record, and the partial batch response that tells Lambda (or the worker)
//! exactly which records SQS must deliver again.

use std::time::Duration;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse};

use crate::deadletter::FailureRecord;

/// What became of one record.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Posted to every destination of its rule (or its routes).
    Delivered,
    /// Acknowledged without posting, by this `drop` route.
    Dropped { route: String },
    /// Left in the queue: SQS delivers it again after the visibility timeout.
    Retry { code: String, reason: String },
    /// Sent to the DLQ with this record.
    DeadLettered(FailureRecord),
}

/// One record's outcome, and what it took.
#[derive(Clone, Debug, PartialEq)]
pub struct Processed {
    pub message_id: String,
    pub outcome: Outcome,
    /// The rule it went by, when its event was parsed that far and has one.
    pub rule: Option<String>,
    pub activity: Activity,
}

/// What one record's delivery did at Slack.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Activity {
    /// Posts Slack took (a digest's counted on its first event).
    pub posts: u32,
    /// Digests Slack took that delivered it.
    pub digests: u32,
    /// Posts Slack answered 429.
    pub rate_limited: u32,
    /// The event's age (from `occurred_at`, else its publication) when each post was taken.
    pub ages_at_post: Vec<Duration>,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn processed(id: &str, outcome: Outcome) -> Processed {
        Processed {
            message_id: id.into(),
            outcome,
            rule: None,
            activity: Activity::default(),
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
