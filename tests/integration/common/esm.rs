//! A stand-in for Lambda's SQS event source mapping: receives batches from the queue in moto, invokes
//! the real binary through the [`RuntimeApi`], deletes what the partial batch response acknowledges,
//! and leaves the rest to come back after the visibility timeout (moto's redrive policy then moves a
//! message to the DLQ after `maxReceiveCount` receives, as SQS does).

use std::time::Duration;

use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName};
use serde_json::{Value, json};

use super::runtime::{Posted, RuntimeApi};

/// How one invocation ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Invocation {
    /// The queue had nothing visible.
    Empty,
    /// The function answered after `billed` (what Lambda bills); this many records were
    /// acknowledged (deleted).
    Answered {
        acknowledged: usize,
        failed: usize,
        billed: Duration,
    },
    /// The function errored, timed out or died: nothing is deleted. The batch's message bodies.
    Failed { bodies: Vec<String> },
}

/// Polls one queue for one function.
pub struct EventSourceMapping {
    pub client: aws_sdk_sqs::Client,
    pub queue_url: String,
    pub queue_arn: String,
    pub api: RuntimeApi,
    /// `BatchSize`: most records per invocation.
    pub batch_size: usize,
    /// `MaximumBatchingWindowInSeconds`: how long after its first record a batch may wait to fill.
    pub window: Duration,
}

impl EventSourceMapping {
    pub fn new(
        client: aws_sdk_sqs::Client,
        queue_url: String,
        queue_arn: String,
        api: RuntimeApi,
    ) -> Self {
        Self {
            client,
            queue_url,
            queue_arn,
            api,
            batch_size: 10,
            window: Duration::ZERO,
        }
    }

    /// With Lambda's batching: up to `batch_size` records, gathered for up to `window`.
    pub fn batching(mut self, batch_size: usize, window: Duration) -> Self {
        self.batch_size = batch_size;
        self.window = window;
        self
    }

    /// One batch as Lambda's poller gathers it: a long poll for the first records, then more until
    /// the batch is full or the window has passed since the first came.
    async fn receive_batch(&self) -> Vec<Message> {
        let mut messages: Vec<Message> = Vec::new();
        let mut until = None;
        loop {
            let wait = if messages.is_empty() { 1 } else { 0 };
            let want = (self.batch_size - messages.len()).min(10) as i32;
            let received = self
                .client
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(want)
                .wait_time_seconds(wait)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send()
                .await
                .expect("receive from moto");
            let got = received.messages.unwrap_or_default();
            if messages.is_empty() && got.is_empty() {
                return messages;
            }
            let until = *until.get_or_insert_with(|| tokio::time::Instant::now() + self.window);
            let none_came = got.is_empty();
            messages.extend(got);
            if messages.len() >= self.batch_size || tokio::time::Instant::now() >= until {
                return messages;
            }
            if none_came {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// Receives one batch and invokes the function with `timeout` until its deadline. `before_answer`
    /// runs right after the invocation is handed over (to kill the process mid-batch, say).
    pub async fn poll_once(
        &mut self,
        timeout: Duration,
        before_answer: impl AsyncFnOnce(),
    ) -> Invocation {
        let messages = self.receive_batch().await;
        if messages.is_empty() {
            return Invocation::Empty;
        }
        // Unique across mappings sharing a Runtime API: a reused id would be answered by an old result.
        let request_id = format!("esm-{}", uuid::Uuid::new_v4().simple());
        let event =
            json!({ "Records": messages.iter().map(|m| self.record(m)).collect::<Vec<_>>() });
        let invoked = tokio::time::Instant::now();
        self.api.invoke(&request_id, event, timeout);
        before_answer().await;
        let answer = self
            .api
            .result_of(&request_id, timeout + Duration::from_secs(2))
            .await;
        let billed = invoked.elapsed();
        let Some(Posted::Response { body, .. }) = answer else {
            self.api.forget_pending();
            let bodies = messages.iter().filter_map(|m| m.body.clone()).collect();
            return Invocation::Failed { bodies };
        };
        let failed: Vec<String> = body["batchItemFailures"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| i["itemIdentifier"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let done: Vec<&Message> = messages
            .iter()
            .filter(|m| !failed.iter().any(|f| Some(f.as_str()) == m.message_id()))
            .collect();
        let entries: Vec<DeleteMessageBatchRequestEntry> = done
            .iter()
            .enumerate()
            .map(|(i, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle().unwrap())
                    .build()
                    .unwrap()
            })
            .collect();
        if !entries.is_empty() {
            self.client
                .delete_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .expect("delete from moto");
        }
        Invocation::Answered {
            acknowledged: done.len(),
            failed: failed.len(),
            billed,
        }
    }

    /// The Lambda form of a received message.
    fn record(&self, message: &Message) -> Value {
        let attributes: serde_json::Map<String, Value> = message
            .attributes()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.as_str().to_string(), Value::String(v.clone())))
            .collect();
        let message_attributes: serde_json::Map<String, Value> = message
            .message_attributes()
            .into_iter()
            .flatten()
            .map(|(k, v)| {
                (
                    k.clone(),
                    json!({ "stringValue": v.string_value(), "dataType": v.data_type() }),
                )
            })
            .collect();
        json!({
            "messageId": message.message_id(),
            "receiptHandle": message.receipt_handle(),
            "body": message.body(),
            "attributes": attributes,
            "messageAttributes": message_attributes,
            "md5OfBody": message.md5_of_body(),
            "eventSource": "aws:sqs",
            "eventSourceARN": self.queue_arn,
            "awsRegion": "us-east-1",
        })
    }
}
