//! One record from start to outcome, in its own span (so every line carries `message_id`,
//! `receive_count` and `event_type`): parsed, looked up, rendered and posted to each destination not
//! yet served, a panic or the deadline failing only this record; then the one decision of what a
//! failure becomes: DLQ (permanent, or transient on the last allowed receive) or retry.

use std::borrow::Cow;
use std::panic::AssertUnwindSafe;
use std::sync::Mutex;

use aws_lambda_events::sqs::SqsMessage;
use futures::FutureExt;
use tokio::time::Instant;
use tracing::Instrument;

use super::Relay;
use super::budget::Budget;
use super::compose::{compose, route_context};
use super::failure::{ProcessError, classify};
use super::outcome::{Activity, Outcome, Processed};
use super::retry::retry;
use super::route::{Post, Routed, route};
use crate::deadletter::{FailureClass, FailureRecord};
use crate::event::{self, OpsEvent};
use crate::lock::{into_inner, lock};
use crate::slack::SlackError;
use crate::sqs::Delivery;

impl Relay {
    /// One record from start to outcome. `blocked_by`: an earlier record of its FIFO group that is
    /// left for retry, so this one is left too (order is kept). Never panics, never returns early.
    pub(super) async fn handle(
        &self,
        record: &SqsMessage,
        blocked_by: Option<&str>,
        budget: Budget,
    ) -> Processed {
        let delivery = Delivery::of(record);
        let span = tracing::info_span!(
            "message",
            message_id = %delivery.message_id,
            receive_count = delivery.receive_count,
            event_type = tracing::field::Empty,
        );
        async {
            let started = Instant::now();
            let parsed = event::parse(record);
            let event_type = parsed.as_ref().ok().map(|e| e.kind.as_str().to_string());
            if let Some(kind) = &event_type {
                tracing::Span::current().record("event_type", kind.as_str());
            }
            let rule = event_type
                .as_deref()
                .and_then(|kind| self.rules.get(kind))
                .map(|rule| rule.name.clone());
            let activity = Mutex::new(Activity::default());
            let result = match blocked_by {
                Some(earlier) => Err(ProcessError::FifoBlocked {
                    earlier: earlier.to_string(),
                }),
                None => {
                    let work = async { self.deliver(&parsed?, &delivery, budget, &activity).await };
                    isolate(budget.work_deadline(), work).await
                }
            };
            let elapsed_ms = started.elapsed().as_millis() as u64;
            let outcome = match result {
                Ok(Done::Posted) => {
                    tracing::info!(elapsed_ms, "Delivered the message.");
                    Outcome::Delivered
                }
                Ok(Done::Dropped(route)) => {
                    tracing::info!(elapsed_ms, route = %route, "Dropped the message by its route (drop = true).");
                    Outcome::Dropped { route }
                }
                Err(error) => {
                    self.settle(record, &delivery, event_type, error, budget)
                        .await
                }
            };
            Processed {
                message_id: delivery.message_id.clone(),
                outcome,
                rule,
                activity: into_inner(activity),
            }
        }
        .instrument(span)
        .await
    }

    /// Decides what a failure becomes: DLQ (permanent, or transient on the last receive) or retry.
    async fn settle(
        &self,
        record: &SqsMessage,
        delivery: &Delivery,
        event_type: Option<String>,
        error: ProcessError,
        budget: Budget,
    ) -> Outcome {
        let class = classify(&error);
        let last_receive = delivery.receive_count >= self.settings.max_receive_count;
        if class == FailureClass::Transient && !last_receive {
            tracing::warn!(
                code = error.code(),
                error = %error,
                "Left the message for SQS to deliver again."
            );
            return Outcome::Retry {
                code: error.code().to_string(),
                reason: error.to_string(),
            };
        }
        let failure = FailureRecord::new(error.failure(), event_type, delivery);
        self.dead_letter(record, failure, budget).await
    }

    /// Sends the record to the DLQ with `failure`, when there is time for it; else, or when the DLQ
    /// does not take it, leaves it for SQS.
    async fn dead_letter(
        &self,
        record: &SqsMessage,
        failure: FailureRecord,
        budget: Budget,
    ) -> Outcome {
        let left = match budget.for_dead_letter() {
            Ok(left) => left,
            Err(left) => {
                tracing::warn!(
                    code = %failure.code,
                    reason = %failure.reason,
                    left_ms = left.as_millis() as u64,
                    "No time left to dead-letter the message; SQS will deliver it again."
                );
                return Outcome::Retry {
                    code: "dlq_unavailable".into(),
                    reason: format!(
                        "{}; then no time was left before the invocation's deadline to dead-letter it",
                        failure.reason
                    ),
                };
            }
        };
        match self.dead_letters.send(record, &failure, left).await {
            Ok(()) => {
                tracing::error!(
                    class = failure.class.as_str(),
                    code = %failure.code,
                    reason = %failure.reason,
                    "Sent the message to the DLQ."
                );
                Outcome::DeadLettered(failure)
            }
            Err(dlq_error) => {
                tracing::warn!(
                    code = %failure.code,
                    reason = %failure.reason,
                    dlq_error = %dlq_error,
                    "Could not dead-letter the message; SQS will deliver it again."
                );
                Outcome::Retry {
                    code: "dlq_unavailable".into(),
                    reason: format!("{}; then {dlq_error}", failure.reason),
                }
            }
        }
    }

    /// Looks the record up, renders the message and posts it to every destination not yet served;
    /// what Slack took and refused goes into `activity`.
    async fn deliver(
        &self,
        event: &OpsEvent,
        delivery: &Delivery,
        budget: Budget,
        activity: &Mutex<Activity>,
    ) -> Result<Done, ProcessError> {
        let deadline = budget.work_deadline();
        let database = self.database.as_ref();
        let composed = compose(&self.rules, database, &self.settings, event, deadline).await?;
        let context = route_context(event, &composed.row);
        let sends = match route(composed.rule, &self.rules.templates, &context)? {
            Routed::Dropped(place) => return Ok(Done::Dropped(place.to_string())),
            Routed::Post(sends) => sends,
        };
        for Post {
            destination: name,
            mention,
        } in sends
        {
            if self.delivered.contains(&delivery.message_id, name) {
                tracing::info!(destination = %name, "Skipped a destination already served for this message.");
                continue;
            }
            // Relay::new made sure that every destination a rule names has a webhook.
            let destination = &self.destinations[name];
            let message = match mention {
                Some(mention) => Cow::Owned(composed.message.with_mention(mention)),
                None => Cow::Borrowed(&composed.message),
            };
            retry(&self.settings.retry, deadline, "the Slack post", || async {
                let posted = self.slack.post(destination, &message, deadline).await;
                if let Err(SlackError::RateLimited { .. }) = posted {
                    lock(activity).rate_limited += 1;
                }
                posted.map_err(|source| ProcessError::Slack {
                    destination: name.to_string(),
                    source,
                })
            })
            .await?;
            let age = (chrono::Utc::now() - event.occurred_at)
                .to_std()
                .unwrap_or_default();
            let mut activity = lock(activity);
            activity.posts += 1;
            activity.ages_at_post.push(age);
            drop(activity);
            self.delivered.insert(&delivery.message_id, name);
        }
        Ok(Done::Posted)
    }
}

/// How a record's work ended well.
enum Done {
    /// Posted to every destination its routes chose.
    Posted,
    /// Acknowledged without posting, by this `drop` route.
    Dropped(String),
}

/// Runs one record's work so that a panic or the deadline fails only that record.
async fn isolate<T>(
    deadline: Instant,
    work: impl std::future::Future<Output = Result<T, ProcessError>>,
) -> Result<T, ProcessError> {
    match AssertUnwindSafe(tokio::time::timeout_at(deadline, work))
        .catch_unwind()
        .await
    {
        Ok(Ok(result)) => result,
        Ok(Err(_elapsed)) => Err(ProcessError::Deadline),
        Err(panic) => Err(ProcessError::Panicked(panic_text(&*panic))),
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_panic_becomes_this_records_failure() {
        let result: Result<(), _> = isolate(Instant::now() + Duration::from_secs(5), async {
            panic!("boom in a template helper")
        })
        .await;
        match result {
            Err(ProcessError::Panicked(text)) => assert_eq!(text, "boom in a template helper"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn work_past_the_deadline_is_cut() {
        let result = isolate(Instant::now() + Duration::from_secs(1), async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        })
        .await;
        assert!(matches!(result, Err(ProcessError::Deadline)));
    }
}
