//! Malformed and hostile events (`tests/fixtures/malformed_events.json`): each ends in the DLQ in moto,
//! body unchanged, with a reason that says what was wrong, and no other message of its batch is
//! affected.

use std::time::Duration;

use crate::common::slack::SlackStandIn;
use crate::common::{drain, failure_of, queues, record, settings};
use aws_sdk_sqs::types::QueueAttributeName;
use opsrelay::pipeline::{Outcome, batch_response};
use serde::Deserialize;
use tokio::time::Instant;

#[derive(Deserialize)]
struct Case {
    name: String,
    body: Option<String>,
    message_attributes: serde_json::Value,
    reason: String,
}

#[tokio::test]
async fn every_malformed_event_is_dead_lettered_with_its_reason_and_the_rest_are_delivered() {
    let cases: Vec<Case> =
        serde_json::from_str(include_str!("../fixtures/malformed_events.json")).unwrap();
    assert!(cases.len() >= 40);
    let slack = SlackStandIn::start(vec![]).await;
    let queues = queues(5, 30).await;
    // SQS takes messages up to 1 MiB; the 256 KiB case plus its failure record needs more than 256 KiB.
    queues
        .client
        .set_queue_attributes()
        .queue_url(&queues.dlq)
        .attributes(QueueAttributeName::MaximumMessageSize, "1048576")
        .send()
        .await
        .unwrap();
    let relay = crate::common::relay(
        settings(&[]),
        crate::common::rules("[rules.\"order.created\"]\ntext = \"Order {{ event.id }}\"\n"),
        None,
        &slack.url,
        queues.dead_letters(),
    )
    .await;

    let mut records = vec![record(
        "good-first",
        r#"{"type":"order.created","id":"1"}"#,
        1,
    )];
    for (i, case) in cases.iter().enumerate() {
        let mut r = record(&format!("bad-{i}"), "", 1);
        r.body = case.body.clone();
        r.message_attributes = serde_json::from_value(case.message_attributes.clone()).unwrap();
        records.push(r);
    }
    records.push(record(
        "good-last",
        r#"{"type":"order.created","id":"2"}"#,
        1,
    ));

    let results = relay
        .run_batch(&records, Instant::now() + Duration::from_secs(30))
        .await;
    assert_eq!(results[0].outcome, Outcome::Delivered);
    assert_eq!(results.last().unwrap().outcome, Outcome::Delivered);
    assert_eq!(slack.delivered().len(), 2);
    assert!(
        batch_response(&results)
            .unwrap()
            .batch_item_failures
            .is_empty()
    );
    for (case, result) in cases.iter().zip(&results[1..]) {
        match &result.outcome {
            Outcome::DeadLettered(failure) => assert!(
                failure.reason.contains(&case.reason),
                "{}: the reason {:?} does not say {:?}",
                case.name,
                failure.reason,
                case.reason
            ),
            other => panic!("{}: expected the DLQ, got {other:?}", case.name),
        }
    }

    let dead = drain(&queues.client, &queues.dlq).await;
    assert_eq!(
        dead.len(),
        cases.len(),
        "every malformed event is in the DLQ"
    );
    for message in &dead {
        let failure = failure_of(message);
        let index: usize = failure["source_message_id"].as_str().unwrap()["bad-".len()..]
            .parse()
            .unwrap();
        let case = &cases[index];
        if let Some(body) = case.body.as_deref().filter(|b| !b.is_empty()) {
            assert_eq!(
                message.body(),
                Some(body),
                "{}: the body changed",
                case.name
            );
        }
        assert_eq!(failure["class"], "permanent", "{}", case.name);
    }
}
