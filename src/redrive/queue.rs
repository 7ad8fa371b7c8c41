//! The SQS calls of the `dlq` commands, ten messages at a time: receive, keep hidden, give visibility
//! back, send (entries that fail in a batch are retried alone) and delete (the same). Each error names
//! the IAM action it needs.

use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::operation::change_message_visibility_batch::{
    ChangeMessageVisibilityBatchError, ChangeMessageVisibilityBatchOutput,
};
use aws_sdk_sqs::operation::delete_message_batch::DeleteMessageBatchOutput;
use aws_sdk_sqs::operation::send_message_batch::SendMessageBatchOutput;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry,
    MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};

use super::error::Error;
use super::letter::Outgoing;
use crate::deadletter::Letter;
use crate::sqs::{QueueKind, queue_attributes};

/// SQS takes at most this many entries per batch call.
pub const BATCH: usize = 10;

/// A queue, checked to exist.
#[derive(Clone, Debug)]
pub struct Queue {
    pub client: Client,
    pub url: String,
    pub arn: String,
    pub fifo: bool,
    /// The largest message it takes (`MaximumMessageSize`), in bytes, when SQS said.
    pub max_message_bytes: Option<usize>,
}

/// Messages on a queue, as SQS counts them (approximately).
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Depth {
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
}

/// What became of the entries of one send or delete.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Indexes of the entries that went through.
    pub done: BTreeSet<usize>,
    /// The others, with why.
    pub failed: Vec<(usize, String)>,
    /// A failure that every later call would share (no permission, no queue).
    pub fatal: Option<Error>,
}

impl Queue {
    /// The queue at `url`; fails when it does not exist or cannot be read.
    pub async fn open(client: &Client, url: &str) -> Result<Self, Error> {
        let names = [
            QueueAttributeName::QueueArn,
            QueueAttributeName::MaximumMessageSize,
        ];
        let attributes = queue_attributes(client, url, &names)
            .await
            .map_err(|e| Error::aws("sqs:GetQueueAttributes", url, &e))?;
        let arn = attributes
            .get(&QueueAttributeName::QueueArn)
            .cloned()
            .unwrap_or_default();
        Ok(Queue {
            client: client.clone(),
            url: url.to_string(),
            fifo: QueueKind::of(url).is_fifo() || QueueKind::of(&arn).is_fifo(),
            arn,
            max_message_bytes: attributes
                .get(&QueueAttributeName::MaximumMessageSize)
                .and_then(|size| size.parse().ok()),
        })
    }

    /// The queues whose redrive policy names this one as their DLQ.
    pub async fn sources(&self) -> Result<Vec<String>, Error> {
        let output = self
            .client
            .list_dead_letter_source_queues()
            .queue_url(&self.url)
            .send()
            .await
            .map_err(|e| Error::aws("sqs:ListDeadLetterSourceQueues", &self.url, &e))?;
        Ok(output.queue_urls().to_vec())
    }

    pub async fn depth(&self) -> Result<Depth, Error> {
        let names = [
            QueueAttributeName::ApproximateNumberOfMessages,
            QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
            QueueAttributeName::ApproximateNumberOfMessagesDelayed,
        ];
        let attributes = queue_attributes(&self.client, &self.url, &names)
            .await
            .map_err(|e| Error::aws("sqs:GetQueueAttributes", &self.url, &e))?;
        let count = |name: QueueAttributeName| {
            attributes
                .get(&name)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ok(Depth {
            visible: count(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            delayed: count(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        })
    }

    /// Up to ten messages, hidden from other readers for `visibility`; none when the queue has no
    /// visible message after `wait`.
    pub async fn receive(
        &self,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<Letter>, Error> {
        let output = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(BATCH as i32)
            .visibility_timeout(visibility.as_secs().max(1) as i32)
            .wait_time_seconds(wait.as_secs().min(20) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|e| Error::aws("sqs:ReceiveMessage", &self.url, &e))?;
        Ok(output.messages().iter().map(Letter::from_sqs).collect())
    }

    /// Keeps the messages of these receipt handles hidden for `hold` from now, ten a call. One that
    /// could not be hidden comes back when its receive's visibility ends, and is hidden again when
    /// read; an error that every later call would share is returned.
    pub async fn hide(&self, handles: &[String], hold: Duration) -> Result<(), Error> {
        let mut failed = 0;
        for chunk in handles.chunks(BATCH) {
            failed += match self.set_visibility(chunk, hold).await {
                Ok(failed) => failed,
                Err(e) if Error::stops_the_run(&e) => {
                    return Err(Error::aws("sqs:ChangeMessageVisibility", &self.url, &e));
                }
                Err(e) => {
                    tracing::debug!(error = %crate::aws::describe(&e), "Changing visibility failed.");
                    chunk.len()
                }
            };
        }
        if failed > 0 {
            tracing::warn!(
                queue = %self.url,
                failed,
                "Could not keep some messages hidden for the rest of the run; they are hidden again when read."
            );
        }
        Ok(())
    }

    /// Makes the messages of these receipt handles visible again at once, ten a call. A call that
    /// fails without an answer (the network) is tried once more, and the next ten are tried whatever
    /// happened to these; only an answer that every call would share (no permission, no queue) ends
    /// it. A failure only means that those messages come back when their visibility timeout ends.
    pub async fn release(&self, handles: &[String]) {
        let (mut failed, mut refused) = (0, None);
        for (i, chunk) in handles.chunks(BATCH).enumerate() {
            let mut result = self.set_visibility(chunk, Duration::ZERO).await;
            if result.as_ref().is_err_and(|e| e.code().is_none()) {
                result = self.set_visibility(chunk, Duration::ZERO).await;
            }
            match result {
                Ok(count) => failed += count,
                Err(e) if Error::stops_the_run(&e) && e.code().is_some() => {
                    failed += handles.len() - i * BATCH;
                    refused = Some(Error::aws("sqs:ChangeMessageVisibility", &self.url, &e));
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %crate::aws::describe(&e), "Giving visibility back failed.");
                    failed += chunk.len();
                }
            }
        }
        if failed > 0 {
            let why = refused.map_or_else(|| "the calls failed".to_string(), |e| e.to_string());
            tracing::warn!(
                queue = %self.url,
                failed,
                "Could not give some messages their visibility back ({why}); they come back when their visibility timeout ends."
            );
        }
    }

    /// Sets the visibility timeout of the messages of up to ten receipt handles to `timeout` from
    /// now, in one call; how many could not be changed, or the call's error.
    async fn set_visibility(
        &self,
        handles: &[String],
        timeout: Duration,
    ) -> Result<usize, SdkError<ChangeMessageVisibilityBatchError, HttpResponse>> {
        let entries = handles
            .iter()
            .enumerate()
            .filter_map(|(i, handle)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(handle)
                    .visibility_timeout(timeout.as_secs() as i32)
                    .build()
                    .ok()
            })
            .collect();
        let output = self
            .client
            .change_message_visibility_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await?;
        Ok(handles.len() - went_through(&output, handles.len()).len())
    }

    /// Sends up to ten messages in one call; entries that fail, or all of them when the call fails,
    /// are retried one by one, in order. On a FIFO queue an entry that is not sent holds back the
    /// later entries of its group.
    pub async fn send(&self, messages: &[Outgoing]) -> Outcome {
        let entries = messages
            .iter()
            .enumerate()
            .filter_map(|(i, message)| {
                let (group, dedup) = message.fifo.clone().unzip();
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(&message.body)
                    .set_message_attributes(Some(message.attributes.clone()))
                    .set_message_group_id(group)
                    .set_message_deduplication_id(dedup)
                    .build()
                    .ok()
            })
            .collect();
        let batch = self
            .client
            .send_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await;
        let group = |i: usize| messages[i].fifo.as_ref().map(|(group, _)| group.as_str());
        self.settle("sqs:SendMessage", messages.len(), batch, group, |i| {
            let message = &messages[i];
            let (group, dedup) = message.fifo.clone().unzip();
            self.client
                .send_message()
                .queue_url(&self.url)
                .message_body(&message.body)
                .set_message_attributes(Some(message.attributes.clone()))
                .set_message_group_id(group)
                .set_message_deduplication_id(dedup)
                .send()
        })
        .await
    }

    /// Deletes the messages of these receipt handles, ten a call whatever their number; entries that
    /// fail are retried one by one.
    pub async fn delete(&self, handles: &[&str]) -> Outcome {
        let mut outcome = Outcome::default();
        for (n, chunk) in handles.chunks(BATCH).enumerate() {
            let part = self.delete_batch(chunk).await;
            let offset = n * BATCH;
            outcome.done.extend(part.done.iter().map(|i| i + offset));
            let failed = part.failed.into_iter().map(|(i, why)| (i + offset, why));
            outcome.failed.extend(failed);
            if part.fatal.is_some() {
                outcome.fatal = part.fatal;
                break;
            }
        }
        outcome
    }

    /// Deletes up to ten messages in one call.
    async fn delete_batch(&self, handles: &[&str]) -> Outcome {
        let entries = handles
            .iter()
            .enumerate()
            .filter_map(|(i, handle)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(*handle)
                    .build()
                    .ok()
            })
            .collect();
        let batch = self
            .client
            .delete_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await;
        self.settle(
            "sqs:DeleteMessage",
            handles.len(),
            batch,
            |_| None,
            |i| {
                self.client
                    .delete_message()
                    .queue_url(&self.url)
                    .receipt_handle(handles[i])
                    .send()
            },
        )
        .await
    }

    /// The outcome of a batch call of `count` entries: those its answer reports as gone through, and
    /// each other one (all of them when the call failed) retried alone with `alone`, in order.
    ///
    /// `group_of` gives an entry's FIFO message group. Once an entry of a group could not be sent,
    /// or later entries of its group went through before it, the group's later entries are held
    /// back: reported failed, so that they stay where they were read (even when the batch sent them)
    /// and a rerun sends the group in order.
    async fn settle<'g, E, A, O, Fut>(
        &self,
        action: &'static str,
        count: usize,
        batch: Result<impl Entries, SdkError<E, HttpResponse>>,
        group_of: impl Fn(usize) -> Option<&'g str>,
        alone: impl Fn(usize) -> Fut,
    ) -> Outcome
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        A: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        Fut: Future<Output = Result<O, SdkError<A, HttpResponse>>>,
    {
        let mut outcome = Outcome::default();
        let went = match batch {
            Ok(output) => went_through(&output, count),
            Err(e) if Error::stops_the_run(&e) => {
                outcome.fatal = Some(Error::aws(action, &self.url, &e));
                return outcome;
            }
            Err(e) => {
                tracing::warn!(error = %crate::aws::describe(&e), "A batch call failed; retrying its entries one by one.");
                BTreeSet::new()
            }
        };
        let mut held_back = HashSet::new();
        for i in 0..count {
            let group = group_of(i);
            if let Some(group) = group
                && held_back.contains(group)
            {
                let why = format!(
                    "held back behind an earlier message of group `{group}` that was not sent first; a rerun sends the group in order"
                );
                outcome.failed.push((i, why));
                continue;
            }
            if went.contains(&i) {
                outcome.done.insert(i);
                continue;
            }
            if group.is_some() && went.range(i + 1..).any(|&later| group_of(later) == group) {
                held_back.extend(group);
            }
            match alone(i).await {
                Ok(_) => {
                    outcome.done.insert(i);
                }
                Err(e) => {
                    let error = Error::aws(action, &self.url, &e);
                    if Error::stops_the_run(&e) {
                        outcome.fatal = Some(error);
                        return outcome;
                    }
                    outcome.failed.push((i, error.to_string()));
                    held_back.extend(group);
                }
            }
        }
        outcome
    }
}

/// The answer of a batch call.
trait Entries {
    /// The ids of the entries it reports as gone through.
    fn successful_ids(&self) -> impl Iterator<Item = &str>;
}

impl Entries for SendMessageBatchOutput {
    fn successful_ids(&self) -> impl Iterator<Item = &str> {
        self.successful().iter().map(|e| e.id())
    }
}

impl Entries for DeleteMessageBatchOutput {
    fn successful_ids(&self) -> impl Iterator<Item = &str> {
        self.successful().iter().map(|e| e.id())
    }
}

impl Entries for ChangeMessageVisibilityBatchOutput {
    fn successful_ids(&self) -> impl Iterator<Item = &str> {
        self.successful().iter().map(|e| e.id())
    }
}

/// The entries of a batch of `count` (their ids are their indexes) that `output` reports as gone
/// through. An id that names no entry is ignored, and one given twice counts once: the answer cannot
/// make a caller index out of its entries or count an entry twice.
fn went_through(output: &impl Entries, count: usize) -> BTreeSet<usize> {
    output
        .successful_ids()
        .filter_map(|id| id.parse().ok())
        .filter(|&i| i < count)
        .collect()
}
