//! One record from start to outcome, in its own span (so every line carries `message_id`,
//! `receive_count` and `event_type`), in two halves around its posts ([`super::digest`]):
//! [`prepare`](Relay::prepare) parses, looks up, renders and routes it, a panic or the deadline
//! failing only this record; [`finish`](Relay::finish) makes the one decision of what a failure
//! becomes: DLQ (permanent, or transient on the last allowed receive) or retry.

use std::sync::Mutex;

use aws_lambda_events::sqs::SqsMessage;
use tokio::time::Instant;
use tracing::Instrument;

use super::Relay;
use super::budget::Budget;
use super::compose::{Composed, compose, route_context};
use super::failure::{ProcessError, classify};
use super::isolate::isolate;
use super::outcome::{Activity, Outcome, Processed};
use super::route::{Post, Routed, route};
use crate::db::Fetched;
use crate::deadletter::{FailureClass, FailureRecord};
use crate::event::{self, OpsEvent};
use crate::lock::into_inner;
use crate::render::SlackMessage;
use crate::sqs::Delivery;

/// A record taken as far as its posts.
pub(super) struct Prepared<'r> {
    pub(super) delivery: Delivery,
    /// Its span, entered again for its posts and its outcome.
    pub(super) span: tracing::Span,
    event_type: Option<String>,
    rule: Option<String>,
    started: Instant,
    pub(super) stage: Stage<'r>,
    /// What its posts did at Slack.
    pub(super) activity: Mutex<Activity>,
    /// The first of its posts that failed.
    pub(super) failure: Mutex<Option<ProcessError>>,
}

/// Where a prepared record stands.
pub(super) enum Stage<'r> {
    /// Looked up and rendered; these posts remain.
    Ready(Ready<'r>),
    /// Acknowledged without posting, by this `drop` route.
    Dropped(String),
    /// Failed before any post.
    Failed(ProcessError),
}

/// A record ready to post: its event, its rule's row and message, and where its routes send it.
pub(super) struct Ready<'r> {
    pub(super) event: OpsEvent,
    pub(super) composed: Composed<'r>,
    pub(super) posts: Vec<Post<'r>>,
}

impl Ready<'_> {
    /// Drops its message and row: an event a digest counts but does not list needs neither.
    pub(super) fn trim(&mut self) {
        self.composed.message = SlackMessage(serde_json::Value::Null);
        self.composed.row = Fetched::default();
    }
}

impl Relay {
    /// Parses, looks up, renders and routes `record`. `blocked_by`: an earlier record of its FIFO
    /// group that is left for retry, so this one is left too (order is kept). Never panics.
    pub(super) async fn prepare(
        &self,
        record: &SqsMessage,
        blocked_by: Option<&str>,
        budget: Budget,
    ) -> Prepared<'_> {
        let delivery = Delivery::of(record);
        let span = tracing::info_span!(
            "message",
            message_id = %delivery.message_id,
            receive_count = delivery.receive_count,
            event_type = tracing::field::Empty,
        );
        let started = Instant::now();
        let parsed = event::parse(record);
        let event_type = parsed.as_ref().ok().map(|e| e.kind.as_str().to_string());
        if let Some(kind) = &event_type {
            span.record("event_type", kind.as_str());
        }
        let rule = event_type
            .as_deref()
            .and_then(|kind| self.rules.get(kind))
            .map(|rule| rule.name.clone());
        let stage = match (blocked_by, parsed) {
            (Some(earlier), _) => Stage::Failed(ProcessError::FifoBlocked {
                earlier: earlier.to_string(),
            }),
            (None, Err(error)) => Stage::Failed(error.into()),
            (None, Ok(event)) => {
                // Boxed: the lookup's future is large, and each wrapper moved it by value.
                let work = Box::pin(self.ready(event, budget));
                isolate(budget.work_deadline(), work)
                    .instrument(span.clone())
                    .await
                    .unwrap_or_else(Stage::Failed)
            }
        };
        Prepared {
            delivery,
            span,
            event_type,
            rule,
            started,
            stage,
            activity: Mutex::new(Activity::default()),
            failure: Mutex::new(None),
        }
    }

    /// Looks the event's record up, renders its message and asks its routes where it goes.
    async fn ready(&self, event: OpsEvent, budget: Budget) -> Result<Stage<'_>, ProcessError> {
        let deadline = budget.work_deadline();
        let database = self.database.as_ref();
        let composed = compose(&self.rules, database, &self.settings, &event, deadline).await?;
        let context = route_context(&event, &composed.row);
        Ok(
            match route(composed.rule, &self.rules.templates, &context)? {
                Routed::Dropped(place) => Stage::Dropped(place.to_string()),
                Routed::Post(posts) => Stage::Ready(Ready {
                    event,
                    composed,
                    posts,
                }),
            },
        )
    }

    /// The record's outcome, once its posts are done: delivered, dropped, or its failure settled.
    pub(super) async fn finish(
        &self,
        record: &SqsMessage,
        prepared: Prepared<'_>,
        budget: Budget,
    ) -> Processed {
        let activity = into_inner(prepared.activity);
        let result = match prepared.stage {
            Stage::Ready(_) => into_inner(prepared.failure).map_or(Ok(None), Err),
            Stage::Dropped(route) => Ok(Some(route)),
            Stage::Failed(error) => Err(error),
        };
        let (delivery, started) = (prepared.delivery, prepared.started);
        let outcome = async {
            let elapsed_ms = started.elapsed().as_millis() as u64;
            match result {
                Ok(None) => {
                    let digests = activity.digests;
                    tracing::info!(elapsed_ms, digests, "Delivered the message.");
                    Outcome::Delivered
                }
                Ok(Some(route)) => {
                    tracing::info!(elapsed_ms, route = %route, "Dropped the message by its route (drop = true).");
                    Outcome::Dropped { route }
                }
                Err(error) => {
                    self.settle(record, &delivery, prepared.event_type, error, budget)
                        .await
                }
            }
        }
        .instrument(prepared.span)
        .await;
        Processed {
            message_id: delivery.message_id,
            outcome,
            rule: prepared.rule,
            activity,
        }
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
}
