//! CPU per event for the pure steps, to catch regressions: parsing an SQS record (raw delivery and an
//! SNS envelope) and rendering the Slack message of the bundled `order.created` rule from a record.
//! No services needed: `cargo bench --bench parse_render`.

use aws_lambda_events::sqs::SqsMessage;
use criterion::{Criterion, criterion_group, criterion_main};
use opsrelay::db::Record;
use opsrelay::event;
use opsrelay::pipeline::template_context;
use opsrelay::rules::Rules;
use serde_json::json;

fn record(body: String) -> SqsMessage {
    serde_json::from_value(json!({
        "messageId": "2e1424d4-f796-459a-8184-9c92662be6da",
        "receiptHandle": "AQEBzWwaftRI0KuVm4tP+/7q1rGgNqicHq",
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": "1", "SentTimestamp": "1764489600000",
            "SenderId": "AIDAIENQZJOLO23YVJ4VO", "ApproximateFirstReceiveTimestamp": "1764489600010"
        },
        "messageAttributes": {}, "md5OfBody": "7b270e59b47ff90a553787216d55d91d",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:ops-events",
        "awsRegion": "us-east-1"
    }))
    .unwrap()
}

fn raw() -> SqsMessage {
    record(r#"{"type":"order.created","id":"42","occurred_at":"2026-11-30T08:00:00Z"}"#.into())
}

fn enveloped() -> SqsMessage {
    let envelope = json!({
        "Type": "Notification",
        "MessageId": "82833b5c-8d5d-56d0-b0e1-7511f8253eb8",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:ops-events",
        "Message": r#"{"type":"order.created","id":"42"}"#,
        "Timestamp": "2026-11-30T08:00:00.111Z",
        "SignatureVersion": "1",
        "Signature": "e+khMfZriwAOTkF0OVm3tmdVq9eY6s5Bj6rXZty4B2TYssx7SSSBpvsDCiDuzgeHe++MNsGLDDT+5OpGEFBqCcd/K7iXhofz+KabMEtvM2Ku3aXcFixjOCAY1BF8hH6zU6nKzOy+m7K4UIoVqIOOhqsLWoXNFWgwQseBol1pFQ==",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-d6d679a1d18e95c2f9ffcf11f4f9e198.pem",
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=arn:aws:sns:us-east-1:123456789012:ops-events:228cc6c9",
        "MessageAttributes": { "team": { "Type": "String", "Value": "payments" } }
    });
    record(envelope.to_string())
}

/// The row the `order.created` rule's query returns, as the lookup hands it over.
fn row() -> Record {
    let row = json!({
        "id": 42, "customer": "Ada <Lovelace> & Co", "email": "ada@example.com", "total": "129.90",
        "currency": "EUR", "status": "paid", "placed_at": "2026-11-30T08:00:00Z",
        "notes": "Leave at the door"
    });
    row.as_object().unwrap().clone()
}

fn bench(c: &mut Criterion) {
    let raw = raw();
    let enveloped = enveloped();
    c.bench_function("parse raw record", |b| {
        b.iter(|| event::parse(std::hint::black_box(&raw)).unwrap())
    });
    c.bench_function("parse SNS-enveloped record", |b| {
        b.iter(|| event::parse(std::hint::black_box(&enveloped)).unwrap())
    });

    let rules = Rules::parse("rules.toml", include_str!("../src/defaults/rules.toml")).unwrap();
    let rule = rules.get("order.created").unwrap();
    let event = event::parse(&raw).unwrap();
    let row = row();
    c.bench_function("render order.created (context + templates)", |b| {
        b.iter(|| {
            let context = template_context(&event, std::hint::black_box(&row));
            rules.templates.render(&rule.template, &context).unwrap()
        })
    });
    c.bench_function("message to JSON (the request body)", |b| {
        let message = rules
            .templates
            .render(&rule.template, &template_context(&event, &row))
            .unwrap();
        b.iter(|| serde_json::to_vec(std::hint::black_box(&message.0)).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
