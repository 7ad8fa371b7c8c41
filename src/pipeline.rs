//! A batch of SQS records in, one outcome per record out: delivered, left for SQS to deliver again, or
//! dead-lettered with the reason. Records run concurrently up to a bound (FIFO groups one after the
//! other, in order), a panic fails only its own record, and nothing runs past the deadline.
//!
//! The outcome of a failure is decided here from [`classify`], the receive count and the deadline:
//! permanent → DLQ; transient → back to SQS, except on the last allowed receive → DLQ.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Mutex;
use std::time::Duration;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsMessage};
use futures::{FutureExt, StreamExt};
use minijinja::Value;
use minijinja::value::Serde;
use tokio::time::Instant;
use tracing::Instrument;

use crate::config::Settings;
use crate::dlq::DeadLetters;
use crate::event::{self, Delivery, OpsEvent};
use crate::failure::{FailureClass, FailureRecord, ProcessError, classify};
use crate::lookup::{Database, Record};
use crate::render::SlackMessage;
use crate::retry::retry;
use crate::rules::{Rule, Rules};
use crate::slack::{Destination, SlackClient};

/// Kept free before the invocation's deadline when dead-lettering: the answer to the batch still has
/// to be returned.
const DLQ_SEND_RESERVE: Duration = Duration::from_millis(100);
/// A DLQ send is not started with less time than this for it.
const MIN_DLQ_SEND: Duration = Duration::from_millis(100);

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

/// Everything made once at start-up and borrowed by every event.
pub struct Relay {
    rules: Rules,
    database: Option<Database>,
    slack: SlackClient,
    destinations: BTreeMap<String, Destination>,
    dead_letters: DeadLetters,
    settings: Settings,
    delivered: DeliveredMemory,
}

impl Relay {
    /// Assembles the relay; fails when a rule needs a database and none is configured.
    pub fn new(
        settings: Settings,
        rules: Rules,
        database: Option<Database>,
        destinations: BTreeMap<String, Destination>,
        dead_letters: DeadLetters,
    ) -> Result<Self, anyhow::Error> {
        if database.is_none()
            && let Some(rule) = rules.iter().find(|r| r.query.is_some())
        {
            anyhow::bail!(
                "OPSRELAY_DATABASE_URL: is not set, and rule `{}` has a query\n  fix: set it to the read replica's URL (postgres://, mysql:// or sqlite:), or the ARN of a secret holding it",
                rule.name
            );
        }
        if let Some((rule, name)) = rules
            .iter()
            .flat_map(|r| r.destinations.iter().map(move |d| (r, d)))
            .find(|(_, d)| !destinations.contains_key(*d))
        {
            anyhow::bail!(
                "{name}: rule `{}` sends to it, but it has no webhook",
                rule.name
            );
        }
        let slack = SlackClient::new(&settings.slack)?;
        Ok(Self {
            delivered: DeliveredMemory::new(settings.delivered_memory),
            rules,
            database,
            slack,
            destinations,
            dead_letters,
            settings,
        })
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    pub fn database(&self) -> Option<&Database> {
        self.database.as_ref()
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn destinations(&self) -> &BTreeMap<String, Destination> {
        &self.destinations
    }

    pub fn dead_letters(&self) -> &DeadLetters {
        &self.dead_letters
    }

    /// Processes a batch; every record gets an outcome, in the order given.
    pub async fn run_batch(&self, records: &[SqsMessage], deadline: Instant) -> Vec<Processed> {
        let margin = Duration::from_millis(self.settings.deadline_margin_ms);
        let work_deadline = deadline.checked_sub(margin).unwrap_or_else(Instant::now);
        let mut results: Vec<Option<Processed>> = vec![None; records.len()];
        let groups = ordering_groups(records);
        let mut done = futures::stream::iter(groups)
            .map(|group| self.run_group(records, group, work_deadline, deadline))
            .buffer_unordered(self.settings.concurrency);
        while let Some(group_results) = done.next().await {
            for (index, processed) in group_results {
                results[index] = Some(processed);
            }
        }
        drop(done);
        let results: Vec<Processed> = results.into_iter().flatten().collect();
        let count = |f: fn(&Outcome) -> bool| results.iter().filter(|r| f(&r.outcome)).count();
        tracing::info!(
            records = records.len(),
            delivered = count(|o| matches!(o, Outcome::Delivered)),
            retried = count(|o| matches!(o, Outcome::Retry { .. })),
            dead_lettered = count(|o| matches!(o, Outcome::DeadLettered(_))),
            "Processed a batch."
        );
        results
    }

    /// Runs one ordering group in order; after a record left for retry, the rest of a FIFO group is
    /// left too, so that order is kept (and dead-lettered with that reason on its last receive).
    async fn run_group(
        &self,
        records: &[SqsMessage],
        group: Vec<usize>,
        work_deadline: Instant,
        deadline: Instant,
    ) -> Vec<(usize, Processed)> {
        let mut out = Vec::with_capacity(group.len());
        let mut blocked_by: Option<String> = None;
        for index in group {
            let record = &records[index];
            let processed = match &blocked_by {
                Some(earlier) => {
                    let delivery = Delivery::of(record);
                    let event_type = event::parse(record)
                        .ok()
                        .map(|e| e.kind.as_str().to_string());
                    let error = ProcessError::FifoBlocked {
                        earlier: earlier.clone(),
                    };
                    let outcome = self
                        .settle(record, &delivery, event_type, error, deadline)
                        .await;
                    Processed {
                        message_id: delivery.message_id,
                        outcome,
                    }
                }
                None => self.handle(record, work_deadline, deadline).await,
            };
            if blocked_by.is_none() && matches!(processed.outcome, Outcome::Retry { .. }) {
                blocked_by = Some(processed.message_id.clone());
            }
            out.push((index, processed));
        }
        out
    }

    /// One record from start to outcome. Never panics, never returns early.
    async fn handle(
        &self,
        record: &SqsMessage,
        work_deadline: Instant,
        deadline: Instant,
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
            let work = async {
                let event = parsed?;
                self.deliver(&event, &delivery, work_deadline).await
            };
            let outcome = match isolate(work_deadline, work).await {
                Ok(()) => {
                    tracing::info!(
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "Delivered the message."
                    );
                    Outcome::Delivered
                }
                Err(error) => {
                    self.settle(record, &delivery, event_type, error, deadline)
                        .await
                }
            };
            Processed {
                message_id: delivery.message_id.clone(),
                outcome,
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
        deadline: Instant,
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
        let failure = FailureRecord::new(&error, event_type, delivery);
        // A send must end before the invocation does: one that ran past it would time the whole
        // invocation out, delivered records included.
        let left = deadline
            .saturating_duration_since(Instant::now())
            .saturating_sub(DLQ_SEND_RESERVE);
        if left < MIN_DLQ_SEND {
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

    /// Looks the record up, renders the message and posts it to every destination not yet served.
    async fn deliver(
        &self,
        event: &OpsEvent,
        delivery: &Delivery,
        deadline: Instant,
    ) -> Result<(), ProcessError> {
        let (rule, message) = compose(
            &self.rules,
            self.database.as_ref(),
            &self.settings,
            event,
            deadline,
        )
        .await?;
        for name in &rule.destinations {
            if self.delivered.contains(&delivery.message_id, name) {
                tracing::info!(destination = %name, "Skipped a destination already served for this message.");
                continue;
            }
            let destination = self
                .destinations
                .get(name)
                .ok_or_else(|| ProcessError::Slack {
                    destination: name.clone(),
                    source: crate::slack::SlackError::Connection(
                        "destination not configured".into(),
                    ),
                })?;
            retry(&self.settings.retry, deadline, "the Slack post", || async {
                self.slack
                    .post(destination, &message, deadline)
                    .await
                    .map_err(|source| ProcessError::Slack {
                        destination: name.clone(),
                        source,
                    })
            })
            .await?;
            self.delivered.insert(&delivery.message_id, name);
        }
        Ok(())
    }
}

/// Finds the event's rule, fetches its record (retrying transient failures until `deadline`) and
/// renders the message.
pub async fn compose<'r>(
    rules: &'r Rules,
    database: Option<&Database>,
    settings: &Settings,
    event: &OpsEvent,
    deadline: Instant,
) -> Result<(&'r Rule, SlackMessage), ProcessError> {
    let rule = rules
        .get(event.kind.as_str())
        .ok_or_else(|| ProcessError::UnknownEventType(event.kind.as_str().to_string()))?;
    let record = match (&rule.query, database) {
        (Some(query), Some(database)) => {
            let grace = Duration::from_secs(settings.replica_lag_grace_seconds);
            let query_timeout = Duration::from_millis(settings.db.query_timeout_ms);
            retry(&settings.retry, deadline, "the database lookup", || async {
                match database
                    .fetch_record(rule, query, &event.id, query_timeout)
                    .await?
                {
                    Some(record) => Ok(record),
                    None => Err(ProcessError::RecordNotFound {
                        rule: rule.name.clone(),
                        id: event.id.as_str().to_string(),
                        age: (chrono::Utc::now() - event.occurred_at)
                            .to_std()
                            .unwrap_or_default(),
                        grace,
                    }),
                }
            })
            .await?
        }
        _ => Record::new(),
    };
    let message = rules
        .templates
        .render(&rule.template, &template_context(event, &record))?;
    Ok((rule, message))
}

/// The values a template sees: each column by name, `row` (all columns) and `event` (`type`, `id`,
/// `occurred_at`).
pub fn template_context(event: &OpsEvent, record: &Record) -> Value {
    let mut values: BTreeMap<String, Value> = record
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(Serde(v))))
        .collect();
    values.insert("row".into(), Value::from(Serde(record)));
    values.insert(
        "event".into(),
        minijinja::context! {
            type => event.kind.as_str(),
            id => event.id.as_str(),
            occurred_at => event.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        },
    );
    Value::from(values)
}

/// Indexes of records grouped for ordering: a FIFO queue's group's records together in order; every
/// other record alone (a standard queue's records may carry a `MessageGroupId` too, for fair
/// queues, which promise no order).
fn ordering_groups(records: &[SqsMessage]) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut by_group: BTreeMap<&str, usize> = BTreeMap::new();
    for (index, record) in records.iter().enumerate() {
        let fifo = record
            .event_source_arn
            .as_deref()
            .is_some_and(|arn| arn.ends_with(".fifo"));
        match record.attributes.get("MessageGroupId").filter(|_| fifo) {
            Some(group) => match by_group.get(group.as_str()) {
                Some(&g) => groups[g].push(index),
                None => {
                    by_group.insert(group, groups.len());
                    groups.push(vec![index]);
                }
            },
            None => groups.push(vec![index]),
        }
    }
    groups
}

/// Runs one record's work so that a panic or the deadline fails only that record.
async fn isolate(
    deadline: Instant,
    work: impl std::future::Future<Output = Result<(), ProcessError>>,
) -> Result<(), ProcessError> {
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

/// The (message, destination) pairs already delivered by this process, so that a message SQS
/// delivers again (at-least-once) is not posted twice to the same place. Bounded; oldest forgotten.
struct DeliveredMemory {
    capacity: usize,
    seen: Mutex<Seen>,
}

/// A (message id, destination) pair.
type Delivered = (String, String);

/// The pairs for look-up, and in the order they came for forgetting.
#[derive(Default)]
struct Seen {
    set: HashSet<Delivered>,
    order: VecDeque<Delivered>,
}

impl DeliveredMemory {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            seen: Mutex::new(Seen::default()),
        }
    }

    fn contains(&self, message_id: &str, destination: &str) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.set
            .contains(&(message_id.to_string(), destination.to_string()))
    }

    fn insert(&self, message_id: &str, destination: &str) {
        if message_id.is_empty() || self.capacity == 0 {
            return;
        }
        let key = (message_id.to_string(), destination.to_string());
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let Seen { set, order } = &mut *seen;
        if set.insert(key.clone()) {
            order.push_back(key);
            while order.len() > self.capacity {
                if let Some(old) = order.pop_front() {
                    set.remove(&old);
                }
            }
        }
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

    #[tokio::test]
    async fn a_panic_becomes_this_records_failure() {
        let result = isolate(Instant::now() + Duration::from_secs(5), async {
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

    #[test]
    fn fifo_records_are_grouped_in_order_and_others_stand_alone() {
        let record = |queue: &str, group: Option<&str>| {
            let mut r = SqsMessage::default();
            r.event_source_arn = Some(format!("arn:aws:sqs:us-east-1:1:{queue}"));
            if let Some(g) = group {
                r.attributes.insert("MessageGroupId".into(), g.into());
            }
            r
        };
        let records = [
            record("q.fifo", Some("a")),
            record("q.fifo", None),
            record("q.fifo", Some("b")),
            record("q.fifo", Some("a")),
            record("fair", Some("a")),
        ];
        assert_eq!(
            ordering_groups(&records),
            vec![vec![0, 3], vec![1], vec![2], vec![4]]
        );
    }

    #[test]
    fn delivered_memory_forgets_the_oldest_beyond_its_capacity() {
        let memory = DeliveredMemory::new(2);
        memory.insert("m1", "d");
        memory.insert("m2", "d");
        memory.insert("m3", "d");
        assert!(!memory.contains("m1", "d"));
        assert!(memory.contains("m2", "d") && memory.contains("m3", "d"));
    }
}
