//! The real `opsrelay-lambda` binary, run through a local Lambda Runtime API: it builds its clients
//! once, answers each SQS batch with exactly the records to retry, dead-letters into the DLQ in moto,
//! logs JSON, and no secret reaches its logs.

use std::time::Duration;

use crate::common::lambda::Lambda;
use crate::common::runtime::{Posted, RuntimeApi};
use crate::common::slack::{Reply, SlackStandIn};
use crate::common::{Engine, drain, failure_of, fresh_database, queues, service};
use serde_json::json;

const RULES: &str = r#"
[rules."order.created"]
query = "SELECT id, customer FROM orders WHERE id = $1"
id_type = "integer"
text = "Order {{ id }} for {{ customer }}"

[rules."order.shipped"]
destinations = ["OPSRELAY_SLACK_WEBHOOK_URL_REVOKED"]
text = "Order {{ event.id }} shipped"
"#;

fn sqs_event(records: &[(&str, &str)]) -> serde_json::Value {
    let records: Vec<_> = records
        .iter()
        .map(|(id, body)| {
            json!({
                "messageId": id, "receiptHandle": format!("rh-{id}"), "body": body,
                "attributes": { "ApproximateReceiveCount": "1", "SentTimestamp": chrono::Utc::now().timestamp_millis().to_string() },
                "messageAttributes": {}, "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:ops-events", "awsRegion": "us-east-1"
            })
        })
        .collect();
    json!({ "Records": records })
}

#[tokio::test]
async fn the_lambda_binary_reports_exactly_the_records_to_retry_and_keeps_secrets_out_of_its_logs()
{
    let database_url = fresh_database(Engine::Postgres).await;
    let password = service("OPSRELAY_TEST_POSTGRES_PASSWORD");
    assert!(database_url.contains(&password));
    let slack = SlackStandIn::start(vec![]).await;
    let revoked = SlackStandIn::start(vec![]).await;
    revoked.always(Reply::Status(404, "no_service"));
    let queues = queues(5, 30).await;
    let api = RuntimeApi::start().await;
    let mut lambda = Lambda::start(
        &api,
        RULES,
        &[
            ("OPSRELAY_DATABASE_URL", database_url.clone()),
            ("OPSRELAY_SLACK_WEBHOOK_URL", slack.url.clone()),
            ("OPSRELAY_SLACK_WEBHOOK_URL_REVOKED", revoked.url.clone()),
            ("OPSRELAY_DLQ_URL", queues.dlq.clone()),
            ("OPSRELAY_REPLICA_LAG_GRACE_SECONDS", "600".into()),
        ],
    )
    .await;

    api.invoke(
        "req-1",
        sqs_event(&[
            ("m-1", r#"{"type":"order.created","id":"42"}"#),
            ("m-2", "this is not an event"),
            ("m-3", r#"{"type":"order.created","id":"999"}"#),
            ("m-4", r#"{"type":"order.shipped","id":"42"}"#),
        ]),
        Duration::from_secs(4),
    );
    api.invoke(
        "req-2",
        sqs_event(&[("m-5", r#"{"type":"order.created","id":"42"}"#)]),
        Duration::from_secs(4),
    );
    let posted = api.posted(2, Duration::from_secs(30)).await;
    let _ = lambda.child.start_kill();
    let log = lambda.log();

    let responses: Vec<_> = posted
        .iter()
        .map(|p| match p {
            Posted::Response { request_id, body } => (request_id.clone(), body.clone()),
            other => panic!("expected a response, got {other:?}\n{log}"),
        })
        .collect();
    assert_eq!(responses.len(), 2, "{log}");
    assert_eq!(responses[0].0, "req-1");
    assert_eq!(
        responses[0].1,
        json!({ "batchItemFailures": [{ "itemIdentifier": "m-3" }] })
    );
    assert_eq!(responses[1].1, json!({ "batchItemFailures": [] }));

    let texts: Vec<_> = slack
        .delivered()
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        texts,
        [
            "Order 42 for Ada &amp; Co &lt;!channel&gt;",
            "Order 42 for Ada &amp; Co &lt;!channel&gt;"
        ]
    );
    let mut dead: Vec<_> = drain(&queues.client, &queues.dlq)
        .await
        .iter()
        .map(failure_of)
        .collect();
    dead.sort_by_key(|f| f["source_message_id"].as_str().unwrap().to_string());
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0]["source_message_id"], "m-2");
    assert_eq!(dead[0]["code"], "malformed_event");
    assert_eq!(dead[1]["source_message_id"], "m-4");
    assert!(dead[1]["reason"].as_str().unwrap().contains("no_service"));

    assert!(
        log.lines()
            .filter(|l| !l.trim().is_empty())
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()),
        "every log line is JSON:\n{log}"
    );
    assert!(log.contains("Sent the message to the DLQ."), "{log}");
    for secret in [
        slack.url.as_str(),
        revoked.url.as_str(),
        "B0SECRET",
        password.as_str(),
    ] {
        assert!(!log.contains(secret), "a secret reached the log:\n{log}");
    }
}

#[tokio::test]
async fn a_bad_rules_file_stops_init_with_an_error_that_names_it_and_no_secret() {
    let password = "hunter2-very-secret";
    let api = RuntimeApi::start().await;
    let mut lambda = Lambda::start(
        &api,
        RULES,
        &[
            (
                "OPSRELAY_DATABASE_URL",
                format!("postgres://app:{password}@127.0.0.1:1/db"),
            ),
            (
                "OPSRELAY_SLACK_WEBHOOK_URL",
                "https://hooks.slack.com/services/T0/B0/SECRETTOKEN".into(),
            ),
            ("OPSRELAY_DLQ_URL", "http://127.0.0.1:1/dlq".into()),
            ("OPSRELAY_RULES", "/nonexistent/rules.toml".into()),
        ],
    )
    .await;
    let status = tokio::time::timeout(Duration::from_secs(20), lambda.child.wait())
        .await
        .expect("init ends")
        .unwrap();
    assert!(!status.success());
    let log = lambda.log();
    assert!(
        log.contains("/nonexistent/rules.toml") && log.contains("OPSRELAY_RULES"),
        "{log}"
    );
    assert!(
        !log.contains(password) && !log.contains("SECRETTOKEN"),
        "{log}"
    );
}

#[tokio::test]
async fn the_doctor_event_returns_the_report_from_inside_the_function() {
    let queues = queues(5, 30).await;
    let slack = SlackStandIn::start(vec![]).await;
    let api = RuntimeApi::start().await;
    let mut lambda = Lambda::start(
        &api,
        RULES,
        &[
            (
                "OPSRELAY_DATABASE_URL",
                fresh_database(Engine::Postgres).await,
            ),
            ("OPSRELAY_DB_CA_FILE", service("OPSRELAY_TEST_CA_FILE")),
            ("OPSRELAY_SLACK_WEBHOOK_URL", slack.url.clone()),
            ("OPSRELAY_SLACK_WEBHOOK_URL_REVOKED", slack.url.clone()),
            ("OPSRELAY_DLQ_URL", queues.dlq.clone()),
        ],
    )
    .await;
    api.invoke(
        "doctor-1",
        json!({ "opsrelay": "doctor" }),
        Duration::from_secs(10),
    );
    let posted = api.posted(1, Duration::from_secs(30)).await;
    let _ = lambda.child.start_kill();
    let Some(Posted::Response { body, .. }) = posted.first() else {
        panic!("{posted:?}\n{}", lambda.log())
    };
    assert_eq!(body["ok"], true, "{body:#}");
    let names: Vec<&str> = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"login (postgres)") && names.contains(&"dlq"),
        "{names:?}"
    );
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("query of rule order.created")),
        "{names:?}"
    );
}

/// A field of a JSON log line, at its top level or in its span.
fn log_field<'a>(line: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    line.get(name).or_else(|| line.get("span")?.get(name))
}

#[tokio::test]
async fn records_held_back_behind_a_fifo_retry_log_their_message_id_receive_count_and_event_type() {
    let slack = SlackStandIn::start(vec![]).await;
    slack.always(Reply::Status(503, "service_unavailable"));
    let queues = queues(5, 30).await;
    let api = RuntimeApi::start().await;
    let mut lambda = Lambda::start(
        &api,
        "[rules.\"order.created\"]\ntext = \"Order {{ event.id }}\"\n",
        &[
            ("OPSRELAY_SLACK_WEBHOOK_URL", slack.url.clone()),
            ("OPSRELAY_DLQ_URL", queues.dlq.clone()),
        ],
    )
    .await;
    // One FIFO group: m-1's post fails (503) until the deadline, m-2 and m-3 wait behind it.
    let mut event = sqs_event(&[
        ("m-1", r#"{"type":"order.created","id":"1"}"#),
        ("m-2", r#"{"type":"order.created","id":"2"}"#),
        ("m-3", r#"{"type":"order.created","id":"3"}"#),
    ]);
    for record in event["Records"].as_array_mut().unwrap() {
        record["eventSourceARN"] = json!("arn:aws:sqs:us-east-1:123456789012:ops-events.fifo");
        record["attributes"]["MessageGroupId"] = json!("orders");
    }
    api.invoke("req-fifo", event, Duration::from_secs(2));
    let result = api.result_of("req-fifo", Duration::from_secs(30)).await;
    let _ = lambda.child.start_kill();
    let log = lambda.log();
    assert!(
        matches!(result, Some(Posted::Response { .. })),
        "{result:?}\n{log}"
    );

    let blocked: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["code"] == "fifo_blocked")
        .collect();
    assert!(!blocked.is_empty(), "no fifo_blocked line in:\n{log}");
    let mut ids: Vec<String> = Vec::new();
    for line in &blocked {
        let id = log_field(line, "message_id").and_then(|v| v.as_str());
        let count = log_field(line, "receive_count").map(|v| v.to_string().replace('"', ""));
        let kind = log_field(line, "event_type").and_then(|v| v.as_str());
        assert!(
            matches!(id, Some("m-2" | "m-3"))
                && count.as_deref() == Some("1")
                && kind == Some("order.created"),
            "a held-back record's line lacks its message_id, receive_count or event_type: {line}"
        );
        ids.push(id.unwrap().to_string());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids, ["m-2", "m-3"], "{log}");
}

/// The CloudWatch metric lines (EMF) in a log: the JSON lines with an `_aws` block.
fn emf_lines(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l.get("_aws").is_some())
        .collect()
}

/// Checks `line` as CloudWatch reads an EMF document: a millisecond timestamp, and each directive's
/// namespace, dimension sets (each dimension a top-level string) and metrics (each with a unit and a
/// top-level number or array of numbers).
fn assert_emf(line: &serde_json::Value) {
    let aws = &line["_aws"];
    assert!(
        aws["Timestamp"].as_u64().unwrap() > 1_700_000_000_000,
        "{line}"
    );
    for directive in aws["CloudWatchMetrics"].as_array().unwrap() {
        assert_eq!(directive["Namespace"], "opsrelay", "{line}");
        for set in directive["Dimensions"].as_array().unwrap() {
            for name in set.as_array().unwrap() {
                assert!(line[name.as_str().unwrap()].is_string(), "{line}");
            }
        }
        let metrics = directive["Metrics"].as_array().unwrap();
        assert!(!metrics.is_empty() && metrics.len() <= 100, "{line}");
        for metric in metrics {
            let value = &line[metric["Name"].as_str().unwrap()];
            let numbers = value
                .as_array()
                .cloned()
                .unwrap_or_else(|| vec![value.clone()]);
            assert!(numbers.iter().all(|n| n.is_u64()), "{line}");
            assert!(
                matches!(metric["Unit"].as_str(), Some("Count" | "Milliseconds")),
                "{line}"
            );
        }
    }
}

#[tokio::test]
async fn each_batch_writes_its_metrics_per_rule_as_cloudwatch_embedded_metric_format() {
    let slack = SlackStandIn::start(vec![Reply::RateLimited(0)]).await;
    let queues = queues(5, 30).await;
    let api = RuntimeApi::start().await;
    let rules = "[rules.\"order.created\"]\ntext = \"Order {{ event.id }}\"\n[rules.\"order.paid\"]\ntext = \"Paid {{ event.id }}\"\n";
    let mut lambda = Lambda::start(
        &api,
        rules,
        &[
            ("OPSRELAY_SLACK_WEBHOOK_URL", slack.url.clone()),
            ("OPSRELAY_DLQ_URL", queues.dlq.clone()),
        ],
    )
    .await;
    let batch = [
        ("m-1", r#"{"type":"order.created","id":"1"}"#),
        ("m-2", r#"{"type":"order.created","id":"2"}"#),
        ("m-3", r#"{"type":"order.paid","id":"3"}"#),
        ("m-4", "this is not an event"),
        ("m-5", r#"{"type":"order.refunded","id":"5"}"#),
    ];
    api.invoke("req-emf", sqs_event(&batch), Duration::from_secs(10));
    let result = api.result_of("req-emf", Duration::from_secs(30)).await;
    let _ = lambda.child.start_kill();
    let log = lambda.log();
    assert!(
        matches!(result, Some(Posted::Response { .. })),
        "{result:?}\n{log}"
    );

    let lines = emf_lines(&log);
    lines.iter().for_each(assert_emf);
    let by_rule: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l.get("Code").is_none()).collect();
    let count = |rule: &str, metric: &str| {
        by_rule
            .iter()
            .find(|l| l["Rule"] == rule)
            .map_or(0, |l| l[metric].as_u64().unwrap())
    };
    assert_eq!(count("order.created", "Delivered"), 2, "{lines:?}");
    assert_eq!(count("order.created", "Posts"), 2, "{lines:?}");
    assert_eq!(
        count("order.created", "SlackRateLimited") + count("order.paid", "SlackRateLimited"),
        1,
        "{lines:?}"
    );
    assert_eq!(count("order.paid", "Delivered"), 1, "{lines:?}");
    assert_eq!(count("(none)", "DeadLettered"), 2, "{lines:?}");
    let outcomes: u64 = ["Delivered", "Dropped", "Retried", "DeadLettered"]
        .iter()
        .map(|m| by_rule.iter().map(|l| l[*m].as_u64().unwrap()).sum::<u64>())
        .sum();
    assert_eq!(
        outcomes,
        batch.len() as u64,
        "every record counted once: {lines:?}"
    );
    let ages = by_rule
        .iter()
        .filter_map(|l| l["EventAge"].as_array())
        .map(Vec::len)
        .sum::<usize>();
    assert_eq!(ages, 3, "one age per post: {lines:?}");
    let codes: Vec<(String, u64)> = lines
        .iter()
        .filter(|l| l.get("Code").is_some())
        .map(|l| {
            (
                l["Code"].as_str().unwrap().to_string(),
                l["DeadLettered"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        codes,
        [
            ("malformed_event".to_string(), 1),
            ("unknown_event_type".to_string(), 1)
        ],
        "dead letters by code: {lines:?}"
    );
}
