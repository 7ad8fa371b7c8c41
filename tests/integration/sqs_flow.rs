//! Events enter as a user's application sends them, published to SNS in moto (enveloped and raw
//! delivery, type in the body, in the `event_type` attribute or in the Subject), and the worker
//! processes the queue with the Lambda's semantics: delivered messages are deleted, retryable ones
//! are left to come back, permanent failures land in the DLQ with their reason.

use std::time::Duration;

use crate::common::slack::{Reply, SlackStandIn};
use crate::common::{Queues, drain, failure_of, queues, settings};
use aws_sdk_sns::types::MessageAttributeValue;
use opsrelay::pipeline::Relay;
use opsrelay::worker::{self, WorkerOptions, WorkerStats};

const RULES: &str = r#"
[rules."order.created"]
text = "Order {{ event.id }} created at {{ event.occurred_at }}"
"#;

struct Flow {
    sns: aws_sdk_sns::Client,
    topic: String,
    queues: Queues,
    slack: SlackStandIn,
    relay: Relay,
}

/// A topic whose queue (redriving to a DLQ after `max_receives`) is subscribed with or without raw
/// delivery, and a relay reading it.
async fn flow(raw: bool, max_receives: u32, visibility_s: u32) -> Flow {
    let queues = queues(max_receives, visibility_s).await;
    let (sns, topic) = queues.subscribed_topic(raw).await;
    let slack = SlackStandIn::start(vec![]).await;
    let max = max_receives.to_string();
    // Retries stop half the visibility timeout before the batch's deadline: a dead letter's send
    // has that much time on a busy machine.
    let margin = (visibility_s * 500).to_string();
    let relay = crate::common::relay(
        settings(&[
            ("OPSRELAY_MAX_RECEIVE_COUNT", max.as_str()),
            ("OPSRELAY_DEADLINE_MARGIN_MS", margin.as_str()),
        ]),
        crate::common::rules(RULES),
        None,
        &slack.url,
        queues.dead_letters(),
    )
    .await;
    Flow {
        sns,
        topic,
        queues,
        slack,
        relay,
    }
}

impl Flow {
    async fn publish(&self, message: &str, subject: Option<&str>, event_type: Option<&str>) {
        let mut request = self
            .sns
            .publish()
            .topic_arn(&self.topic)
            .message(message)
            .set_subject(subject.map(str::to_string));
        if let Some(kind) = event_type {
            request = request.message_attributes(
                "event_type",
                MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value(kind)
                    .build()
                    .unwrap(),
            );
        }
        request.send().await.unwrap();
    }

    /// Works the queue until it is empty.
    async fn work(&self) -> WorkerStats {
        self.work_batches(None).await
    }

    /// Works the queue until it is empty or after `max` batches.
    async fn work_batches(&self, max: Option<u64>) -> WorkerStats {
        let options = WorkerOptions {
            queue_url: self.queues.source.clone(),
            wait_time_seconds: 1,
            until_empty: true,
            max_batches: max,
        };
        worker::run(
            &self.relay,
            &self.queues.client,
            &options,
            std::future::pending(),
        )
        .await
        .unwrap()
    }

    /// Everything still in the source queue, once hidden messages are visible again.
    async fn left_in_queue(&self, visibility: Duration) -> usize {
        tokio::time::sleep(visibility + Duration::from_millis(500)).await;
        drain(&self.queues.client, &self.queues.source).await.len()
    }
}

#[tokio::test]
async fn an_enveloped_event_is_delivered_and_deleted() {
    let flow = flow(false, 5, 1).await;
    flow.publish(
        r#"{"type":"order.created","id":"42","occurred_at":"2026-11-30T08:00:00Z"}"#,
        None,
        None,
    )
    .await;
    let stats = flow.work().await;
    assert_eq!(stats.tally.delivered, 1);
    assert_eq!(
        flow.slack.delivered()[0]["text"],
        "Order 42 created at 2026-11-30T08:00:00Z"
    );
    assert_eq!(
        flow.left_in_queue(Duration::from_secs(1)).await,
        0,
        "a delivered message is deleted"
    );
    assert!(
        drain(&flow.queues.client, &flow.queues.dlq)
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn a_raw_delivery_with_the_type_in_an_attribute_is_delivered() {
    let flow = flow(true, 5, 1).await;
    flow.publish("42", None, Some("order.created")).await;
    assert_eq!(flow.work().await.tally.delivered, 1);
    let text = flow.slack.delivered()[0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(text.starts_with("Order 42 created"), "{text}");
}

#[tokio::test]
async fn an_enveloped_id_with_the_type_in_the_subject_is_delivered() {
    let flow = flow(false, 5, 1).await;
    flow.publish("42", Some("order.created"), None).await;
    assert_eq!(flow.work().await.tally.delivered, 1);
}

#[tokio::test]
async fn an_enveloped_id_with_the_type_in_an_sns_attribute_is_delivered() {
    let flow = flow(false, 5, 1).await;
    flow.publish("42", None, Some("order.created")).await;
    assert_eq!(flow.work().await.tally.delivered, 1);
}

#[tokio::test]
async fn a_permanent_failure_lands_in_the_dlq_with_its_reason_and_leaves_the_queue() {
    let flow = flow(false, 5, 1).await;
    flow.publish(r#"{"type":"invoice.paid","id":"7"}"#, None, None)
        .await;
    let stats = flow.work().await;
    assert_eq!(stats.tally.dead_lettered, 1);
    assert_eq!(flow.left_in_queue(Duration::from_secs(1)).await, 0);
    let dead = drain(&flow.queues.client, &flow.queues.dlq).await;
    assert_eq!(dead.len(), 1);
    let failure = failure_of(&dead[0]);
    assert_eq!(failure["code"], "unknown_event_type");
    assert_eq!(failure["event_type"], "invoice.paid");
    let envelope: serde_json::Value = serde_json::from_str(dead[0].body().unwrap()).unwrap();
    assert_eq!(
        envelope["Message"], r#"{"type":"invoice.paid","id":"7"}"#,
        "the SNS envelope is kept unchanged"
    );
}

#[tokio::test]
async fn a_transient_failure_is_left_for_sqs_then_dead_lettered_with_its_reason_on_the_last_receive()
 {
    let flow = flow(false, 2, 3).await;
    flow.slack.always(Reply::Status(503, "service_unavailable"));
    flow.publish(r#"{"type":"order.created","id":"42"}"#, None, None)
        .await;
    // One batch: a second receive in the same call could get the message again once its
    // visibility ends.
    let received = std::time::Instant::now();
    let first = flow.work_batches(Some(1)).await;
    assert_eq!(
        first.tally.retried, 1,
        "the first receive leaves it for SQS"
    );
    assert!(
        drain(&flow.queues.client, &flow.queues.dlq)
            .await
            .is_empty()
    );
    // Visible again 3 s after it was received.
    tokio::time::sleep(Duration::from_millis(3_300).saturating_sub(received.elapsed())).await;
    let second = flow.work().await;
    assert_eq!(
        second.tally.dead_lettered, 1,
        "the last receive dead-letters it"
    );
    let dead = drain(&flow.queues.client, &flow.queues.dlq).await;
    assert_eq!(dead.len(), 1);
    let failure = failure_of(&dead[0]);
    assert_eq!(failure["class"], "transient");
    assert_eq!(failure["receive_count"], 2);
    assert!(
        failure["reason"].as_str().unwrap().contains("503"),
        "{failure}"
    );
    assert_eq!(flow.left_in_queue(Duration::from_secs(1)).await, 0);
}

/// Posts' texts, in the order Slack got them.
fn texts(requests: &[crate::common::slack::Request]) -> Vec<String> {
    requests
        .iter()
        .map(|r| r.body["text"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// A FIFO queue (and FIFO DLQ) holding orders 1, 2 and 3 in one message group, and a relay reading
/// it whose batches get `visibility_s` less 1 s to work.
async fn fifo_flow(visibility_s: u32) -> (Queues, SlackStandIn, Relay) {
    let queues = crate::common::fifo_queues(5, visibility_s).await;
    let slack = SlackStandIn::start(vec![]).await;
    let relay = crate::common::relay(
        settings(&[("OPSRELAY_DEADLINE_MARGIN_MS", "1000")]),
        crate::common::rules(RULES),
        None,
        &slack.url,
        queues.dead_letters(),
    )
    .await;
    for id in ["1", "2", "3"] {
        queues
            .client
            .send_message()
            .queue_url(&queues.source)
            .message_body(format!(r#"{{"type":"order.created","id":"{id}"}}"#))
            .message_group_id("orders")
            .send()
            .await
            .unwrap();
    }
    (queues, slack, relay)
}

/// One batch of the worker, waiting (long poll) until messages are visible.
async fn one_batch(relay: &Relay, queues: &Queues) -> WorkerStats {
    let options = WorkerOptions {
        queue_url: queues.source.clone(),
        wait_time_seconds: 1,
        until_empty: false,
        max_batches: Some(1),
    };
    let run = worker::run(relay, &queues.client, &options, std::future::pending());
    tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("a batch comes within 20 s")
        .unwrap()
}

#[tokio::test]
async fn the_worker_leaves_the_rest_of_a_fifo_group_behind_a_message_left_for_retry() {
    let (queues, slack, relay) = fifo_flow(2).await;
    // Order 2's post fails (503) on every try of the batch; the others would succeed.
    slack.answer_when("Order 2 ", Reply::Status(503, "service_unavailable"));
    let stats = one_batch(&relay, &queues).await;
    let posted = texts(&slack.requests());
    assert!(
        !posted.iter().any(|t| t.starts_with("Order 3 ")),
        "order 3 was posted while order 2, before it in its FIFO group, was left for retry: {posted:?}"
    );
    assert_eq!(
        (stats.tally.delivered, stats.tally.retried),
        (1, 2),
        "order 1 delivered; order 2 left for retry and order 3 behind it (fifo_blocked)"
    );
}

#[tokio::test]
async fn the_worker_keeps_a_fifo_groups_order_when_a_post_fails_transiently() {
    let (queues, slack, relay) = fifo_flow(5).await;
    // Order 2's first post fails (503) and is retried inside the batch; each answer takes 200 ms.
    slack.answer_once_when("Order 2 ", Reply::Status(503, "service_unavailable"));
    slack.hold(Duration::from_millis(200));
    let stats = one_batch(&relay, &queues).await;
    let order: Vec<String> = slack
        .delivered()
        .iter()
        .map(|m| {
            m["text"]
                .as_str()
                .unwrap()
                .split(" created")
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        order,
        ["Order 1", "Order 2", "Order 3"],
        "Slack saw the group's messages out of order"
    );
    assert_eq!(stats.tally.delivered, 3);
}
