//! Every outcome of the core contract, with the real pipeline, a Slack stand-in that answers as
//! Slack does, and the DLQ in moto through the real SQS client: delivered, retried inside the
//! invocation, left for SQS, dead-lettered with its reason, and the batch response AWS expects.

use std::time::Duration;

use crate::common::slack::{Reply, SlackStandIn};
use crate::common::{Queues, drain, event, failure_of, queues, record, settings};
use aws_lambda_events::sqs::SqsMessage;
use opsrelay::deadletter::DeadLetters;
use opsrelay::pipeline::{Outcome, Processed, Relay, batch_response};
use tokio::time::Instant;

const RULES: &str = r#"
[rules."order.created"]
text = "Order {{ event.id }} created"
[[rules."order.created".blocks]]
type = "section"
text = "*Order {{ event.id }}* was created"
"#;

struct Run {
    relay: Relay,
    slack: SlackStandIn,
    queues: Queues,
}

async fn setup(script: Vec<Reply>, overrides: &[(&str, &str)]) -> Run {
    let slack = SlackStandIn::start(script).await;
    let queues = queues(5, 30).await;
    let relay = crate::common::relay(
        settings(overrides),
        crate::common::rules(RULES),
        None,
        &slack.url,
        queues.dead_letters(),
    )
    .await;
    Run {
        relay,
        slack,
        queues,
    }
}

impl Run {
    async fn batch(&self, records: &[SqsMessage], seconds: u64) -> Vec<Processed> {
        self.relay
            .run_batch(records, Instant::now() + Duration::from_secs(seconds))
            .await
    }

    async fn one(&self, receive_count: u32, seconds: u64) -> Outcome {
        let results = self
            .batch(
                &[record("m-1", &event("order.created", "42"), receive_count)],
                seconds,
            )
            .await;
        results.into_iter().next().unwrap().outcome
    }
}

fn assert_retry(outcome: &Outcome, code: &str) {
    assert!(
        matches!(outcome, Outcome::Retry { code: c, .. } if c == code),
        "expected a retry with {code}, got {outcome:?}"
    );
}

#[tokio::test]
async fn delivers_a_message_and_acknowledges_it() {
    let run = setup(vec![Reply::Ok], &[]).await;
    let results = run
        .batch(&[record("m-1", &event("order.created", "42"), 1)], 10)
        .await;
    assert_eq!(results[0].outcome, Outcome::Delivered);
    assert!(
        batch_response(&results)
            .unwrap()
            .batch_item_failures
            .is_empty()
    );
    let posted = run.slack.delivered();
    assert_eq!(posted.len(), 1);
    assert_eq!(posted[0]["text"], "Order 42 created");
    assert!(drain(&run.queues.client, &run.queues.dlq).await.is_empty());
}

#[tokio::test]
async fn delivers_after_two_503s() {
    let run = setup(
        vec![
            Reply::Status(503, "service_unavailable"),
            Reply::Status(503, "service_unavailable"),
        ],
        &[],
    )
    .await;
    assert_eq!(run.one(1, 10).await, Outcome::Delivered);
    assert_eq!(run.slack.requests().len(), 3);
}

#[tokio::test]
async fn delivers_after_a_500_rollup_error() {
    let run = setup(vec![Reply::Status(500, "rollup_error")], &[]).await;
    assert_eq!(run.one(1, 10).await, Outcome::Delivered);
    assert_eq!(run.slack.requests().len(), 2);
}

#[tokio::test]
async fn waits_as_long_as_retry_after_says_after_a_429() {
    let run = setup(vec![Reply::RateLimited(1)], &[]).await;
    assert_eq!(run.one(1, 10).await, Outcome::Delivered);
    let requests = run.slack.requests();
    assert_eq!(requests.len(), 2);
    assert!(
        requests[1].at - requests[0].at >= Duration::from_secs(1),
        "the retry came before Retry-After"
    );
}

#[tokio::test]
async fn leaves_the_message_for_sqs_when_retry_after_outlasts_the_invocation() {
    let run = setup(vec![Reply::RateLimited(30)], &[]).await;
    assert_retry(&run.one(1, 5).await, "slack_rate_limited");
    assert_eq!(
        run.slack.requests().len(),
        1,
        "no post while Slack asked to wait"
    );
    assert!(drain(&run.queues.client, &run.queues.dlq).await.is_empty());
}

#[tokio::test]
async fn retries_after_an_answer_slower_than_the_timeout() {
    let run = setup(
        vec![Reply::Slow(Duration::from_secs(3))],
        &[("OPSRELAY_SLACK_TIMEOUT_MS", "300")],
    )
    .await;
    assert_eq!(run.one(1, 10).await, Outcome::Delivered);
    assert_eq!(run.slack.requests().len(), 2);
}

#[tokio::test]
async fn retries_after_a_dropped_connection() {
    let run = setup(vec![Reply::Drop], &[]).await;
    assert_eq!(run.one(1, 10).await, Outcome::Delivered);
    assert_eq!(run.slack.requests().len(), 2);
}

#[tokio::test]
async fn leaves_the_message_for_sqs_when_slack_keeps_failing() {
    let run = setup(vec![], &[]).await;
    run.slack.always(Reply::Status(503, "service_unavailable"));
    let results = run
        .batch(&[record("m-1", &event("order.created", "42"), 1)], 2)
        .await;
    assert_retry(&results[0].outcome, "slack_server_error");
    let response = batch_response(&results).unwrap();
    assert_eq!(response.batch_item_failures.len(), 1);
    assert_eq!(response.batch_item_failures[0].item_identifier, "m-1");
    assert!(
        run.slack.requests().len() > 2,
        "retried inside the invocation first"
    );
    assert!(drain(&run.queues.client, &run.queues.dlq).await.is_empty());
}

#[tokio::test]
async fn dead_letters_permanent_slack_errors_at_once_with_the_reason() {
    for (status, code) in [
        (400, "invalid_payload"),
        (403, "invalid_token"),
        (403, "action_prohibited"),
        (404, "no_service"),
        (404, "channel_not_found"),
        (410, "channel_is_archived"),
    ] {
        let run = setup(vec![Reply::Status(status, code)], &[]).await;
        let Outcome::DeadLettered(failure) = run.one(1, 10).await else {
            panic!("{code} was not dead-lettered")
        };
        assert_eq!(failure.code, "slack_rejected");
        assert!(failure.reason.contains(code), "{}", failure.reason);
        assert_eq!(run.slack.requests().len(), 1, "{code} was retried");
        let dead = drain(&run.queues.client, &run.queues.dlq).await;
        assert_eq!(dead.len(), 1);
        assert_eq!(failure_of(&dead[0])["reason"], failure.reason.as_str());
    }
}

#[tokio::test]
async fn dead_letters_a_redirect_without_following_it() {
    let elsewhere = SlackStandIn::start(vec![]).await;
    let run = setup(vec![Reply::Redirect(elsewhere.url.clone())], &[]).await;
    let Outcome::DeadLettered(failure) = run.one(1, 10).await else {
        panic!("a redirect was not dead-lettered")
    };
    assert_eq!(failure.code, "slack_rejected");
    assert!(failure.reason.contains("redirect"), "{}", failure.reason);
    assert!(
        elsewhere.requests().is_empty(),
        "neither the message nor the webhook's URL (as Referer) went to another host"
    );
}

#[tokio::test]
async fn a_dead_letter_keeps_the_body_and_attributes_and_says_why() {
    let run = setup(vec![Reply::Status(404, "no_service")], &[]).await;
    let mut message = record("m-7", &event("order.created", "42"), 2);
    message.message_attributes.insert(
        "trace_id".into(),
        serde_json::from_value(serde_json::json!({"stringValue": "abc-123", "dataType": "String"}))
            .unwrap(),
    );
    run.batch(&[message.clone()], 10).await;
    let dead = drain(&run.queues.client, &run.queues.dlq).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].body(),
        message.body.as_deref(),
        "the body is unchanged"
    );
    let attributes = dead[0].message_attributes().unwrap();
    assert_eq!(attributes["trace_id"].string_value(), Some("abc-123"));
    let failure = failure_of(&dead[0]);
    assert_eq!(failure["class"], "permanent");
    assert_eq!(failure["event_type"], "order.created");
    assert_eq!(failure["source_message_id"], "m-7");
    assert_eq!(failure["receive_count"], 2);
    for key in ["reason", "first_failed_at", "failed_at"] {
        assert!(failure[key].is_string(), "{key} missing: {failure}");
    }
    assert!(
        !failure.to_string().contains(&run.slack.url),
        "the webhook URL leaked into the DLQ"
    );
}

#[tokio::test]
async fn dead_letters_a_transient_failure_on_the_last_receive() {
    // Retries stop 1.5 s before the deadline: the dead letter's send has time to spare.
    let run = setup(
        vec![],
        &[
            ("OPSRELAY_MAX_RECEIVE_COUNT", "5"),
            ("OPSRELAY_DEADLINE_MARGIN_MS", "1500"),
        ],
    )
    .await;
    run.slack.always(Reply::Status(503, "service_unavailable"));
    let Outcome::DeadLettered(failure) = run.one(5, 3).await else {
        panic!("not dead-lettered")
    };
    assert_eq!(failure.class, opsrelay::deadletter::FailureClass::Transient);
    assert_eq!(failure.code, "slack_server_error");
    let dead = drain(&run.queues.client, &run.queues.dlq).await;
    assert_eq!(failure_of(&dead[0])["class"], "transient");
}

#[tokio::test]
async fn starts_no_dlq_send_that_would_outlast_the_invocation() {
    let run = setup(vec![], &[]).await;
    let last_receive = record("m-1", &event("order.created", "42"), 5);
    let results = run
        .relay
        .run_batch(&[last_receive], Instant::now() + Duration::from_millis(150))
        .await;
    assert_retry(&results[0].outcome, "dlq_unavailable");
    assert!(drain(&run.queues.client, &run.queues.dlq).await.is_empty());
}

#[tokio::test]
async fn leaves_the_message_for_sqs_when_the_dlq_cannot_take_it() {
    let slack = SlackStandIn::start(vec![Reply::Status(410, "channel_is_archived")]).await;
    let queues = queues(5, 30).await;
    let relay = crate::common::relay(
        settings(&[]),
        crate::common::rules(RULES),
        None,
        &slack.url,
        DeadLetters::Sqs {
            client: queues.client.clone(),
            queue_url: format!("{}-missing", queues.dlq),
        },
    )
    .await;
    let results = relay
        .run_batch(
            &[record("m-1", &event("order.created", "42"), 1)],
            Instant::now() + Duration::from_secs(10),
        )
        .await;
    assert_retry(&results[0].outcome, "dlq_unavailable");
    assert_eq!(
        batch_response(&results).unwrap().batch_item_failures[0].item_identifier,
        "m-1"
    );
}

#[tokio::test]
async fn one_bad_message_never_fails_the_batch() {
    let run = setup(vec![], &[]).await;
    let records = vec![
        record("good-1", &event("order.created", "1"), 1),
        record("poison", "{not json", 1),
        record("unknown", &event("invoice.paid", "2"), 1),
        record("good-2", &event("order.created", "3"), 1),
    ];
    let results = run.batch(&records, 10).await;
    let ids: Vec<&str> = results.iter().map(|r| r.message_id.as_str()).collect();
    assert_eq!(
        ids,
        ["good-1", "poison", "unknown", "good-2"],
        "one outcome per record, in order"
    );
    assert_eq!(results[0].outcome, Outcome::Delivered);
    assert_eq!(results[3].outcome, Outcome::Delivered);
    assert!(matches!(&results[1].outcome, Outcome::DeadLettered(f) if f.code == "malformed_event"));
    assert!(
        matches!(&results[2].outcome, Outcome::DeadLettered(f) if f.code == "unknown_event_type")
    );
    assert!(
        batch_response(&results)
            .unwrap()
            .batch_item_failures
            .is_empty()
    );
    assert_eq!(drain(&run.queues.client, &run.queues.dlq).await.len(), 2);
}

#[tokio::test]
async fn the_batch_response_names_exactly_the_records_to_retry() {
    let run = setup(
        vec![Reply::Ok, Reply::Status(503, "x")],
        &[("OPSRELAY_CONCURRENCY", "1")],
    )
    .await;
    run.slack.always(Reply::Status(503, "service_unavailable"));
    let records = vec![
        record("a", &event("order.created", "1"), 1),
        record("c", "[]", 1),
        record("b", &event("order.created", "2"), 1),
    ];
    let results = run.batch(&records, 3).await;
    let response = batch_response(&results).unwrap();
    let ids: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(ids, ["b"]);
    let json = serde_json::to_value(&response).unwrap();
    assert_eq!(
        json,
        serde_json::json!({ "batchItemFailures": [{ "itemIdentifier": "b" }] })
    );
}

#[tokio::test]
async fn runs_messages_concurrently_up_to_the_bound() {
    let run = setup(vec![], &[("OPSRELAY_CONCURRENCY", "3")]).await;
    // Long enough for three posts to overlap on a busy machine.
    run.slack.hold(Duration::from_millis(300));
    let records: Vec<_> = (0..12)
        .map(|i| {
            record(
                &format!("m-{i}"),
                &event("order.created", &i.to_string()),
                1,
            )
        })
        .collect();
    let results = run.batch(&records, 20).await;
    assert!(results.iter().all(|r| r.outcome == Outcome::Delivered));
    assert_eq!(run.slack.max_in_flight(), 3);
}

#[tokio::test]
async fn paces_posts_to_one_webhook() {
    let run = setup(
        vec![],
        &[
            ("OPSRELAY_SLACK_RATE_PER_SECOND", "10"),
            ("OPSRELAY_SLACK_BURST", "1"),
            ("OPSRELAY_CONCURRENCY", "5"),
        ],
    )
    .await;
    let records: Vec<_> = (0..5)
        .map(|i| {
            record(
                &format!("m-{i}"),
                &event("order.created", &i.to_string()),
                1,
            )
        })
        .collect();
    let started = Instant::now();
    run.batch(&records, 20).await;
    let requests = run.slack.requests();
    assert_eq!(requests.len(), 5);
    // The i-th post takes the slot i x 100 ms after the first; a late post does not move the next
    // slot, so only this lower bound holds whatever the machine's load.
    for (i, request) in requests.iter().enumerate() {
        assert!(
            request.at >= started + Duration::from_millis(100) * i as u32,
            "post {i} came {:?} after the start: sooner than the pace allows",
            request.at - started
        );
    }
}

/// The Slack pacing the deployment template gives each process at its default
/// `MaximumConcurrency`: that many processes, and the `OPSRELAY_SLACK_RATE_PER_SECOND` and
/// `OPSRELAY_SLACK_BURST` of its `SlackRate` mapping.
fn template_pacing() -> (usize, String, String) {
    let template =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/infra/template.yaml"))
            .unwrap();
    let section = |name: &str| template.split(&format!("\n  {name}:\n")).nth(1).unwrap();
    let processes = section("MaximumConcurrency")
        .lines()
        .find_map(|l| l.trim().strip_prefix("Default: "))
        .unwrap()
        .to_string();
    let row = section("SlackRate")
        .lines()
        .find(|l| l.trim().starts_with(&format!("\"{processes}\":")))
        .unwrap();
    let value = |key: &str| {
        let rest = row.split(&format!("{key}: \"")).nth(1).unwrap();
        rest.split('"').next().unwrap().to_string()
    };
    (
        processes.parse().unwrap(),
        value("PerSecond"),
        value("Burst"),
    )
}

#[tokio::test]
async fn the_templates_processes_open_a_cold_burst_within_the_burst_slack_takes() {
    // Slack documents about 1 post a second with short bursts; the stand-in takes 3 at once.
    let slack = SlackStandIn::start(vec![]).await;
    slack.limit(3, 1.0);
    let (processes, rate, burst) = template_pacing();
    let overrides = [
        ("OPSRELAY_SLACK_RATE_PER_SECOND", rate.as_str()),
        ("OPSRELAY_SLACK_BURST", burst.as_str()),
    ];
    let queues = queues(5, 30).await;
    let mut relays = Vec::new();
    for _ in 0..processes {
        let rules = crate::common::rules(RULES);
        let dead_letters = queues.dead_letters();
        relays.push(
            crate::common::relay(settings(&overrides), rules, None, &slack.url, dead_letters).await,
        );
    }
    let batches = relays.iter().enumerate().map(|(p, relay)| {
        let records: Vec<_> = (0..2)
            .map(|i| {
                record(
                    &format!("m-{p}-{i}"),
                    &event("order.created", &format!("{p}{i}")),
                    1,
                )
            })
            .collect();
        async move {
            relay
                .run_batch(&records, Instant::now() + Duration::from_secs(15))
                .await
        }
    });
    let results = futures::future::join_all(batches).await;
    let limited = slack
        .requests()
        .iter()
        .filter(|r| matches!(r.reply, Reply::RateLimited(_)))
        .count();
    assert_eq!(
        limited, 0,
        "{processes} processes at {rate}/s, burst {burst} each"
    );
    assert!(
        results
            .iter()
            .flatten()
            .all(|r| r.outcome == Outcome::Delivered)
    );
}

#[tokio::test]
async fn does_not_post_a_redelivered_message_twice() {
    let run = setup(vec![], &[]).await;
    let message = record("m-1", &event("order.created", "42"), 1);
    assert_eq!(
        run.batch(std::slice::from_ref(&message), 10).await[0].outcome,
        Outcome::Delivered
    );
    assert_eq!(
        run.batch(&[message], 10).await[0].outcome,
        Outcome::Delivered
    );
    assert_eq!(run.slack.requests().len(), 1);
}

/// A relay whose `a.failing` events go to a webhook that answers 503 and whose `b.healthy` events go
/// to one that accepts them, dead-lettering to `queues`; and that healthy webhook.
async fn failing_and_healthy(queues: &Queues) -> (Relay, SlackStandIn, SlackStandIn) {
    let failing = SlackStandIn::start(vec![]).await;
    failing.always(Reply::Status(503, "service_unavailable"));
    let healthy = SlackStandIn::start(vec![]).await;
    let rules = crate::common::rules(
        r#"
[rules."a.failing"]
destinations = ["OPSRELAY_SLACK_WEBHOOK_URL"]
text = "a"
[rules."b.healthy"]
destinations = ["HEALTHY_WEBHOOK"]
text = "b {{ event.id }}"
"#,
    );
    // Retries stop 1.5 s before the batch's deadline, which leaves a dead letter's send time to
    // spare on a busy machine.
    let settings = settings(&[("OPSRELAY_DEADLINE_MARGIN_MS", "1500")]);
    let env = std::collections::BTreeMap::from([
        ("OPSRELAY_SLACK_WEBHOOK_URL", failing.url.clone()),
        ("HEALTHY_WEBHOOK", healthy.url.clone()),
    ]);
    let resolved = opsrelay::config::resolve(
        &settings,
        &rules,
        |n| env.get(n).cloned(),
        opsrelay::config::MissingWebhook::Fail,
        None,
    )
    .await;
    let relay = Relay::new(
        settings,
        rules,
        None,
        resolved.destinations,
        queues.dead_letters(),
    )
    .unwrap();
    (relay, failing, healthy)
}

/// A record of event `kind` with id `id` in message group `group` of the queue `queue` (a FIFO
/// queue's name ends in `.fifo`), on its `receive_count`th receive.
fn grouped(id: &str, kind: &str, group: &str, queue: &str, receive_count: u32) -> SqsMessage {
    let mut r = record(id, &event(kind, id), receive_count);
    r.attributes.insert("MessageGroupId".into(), group.into());
    r.event_source_arn = Some(format!("arn:aws:sqs:us-east-1:123456789012:{queue}"));
    r
}

/// The texts the webhook received, in order.
fn posted(slack: &SlackStandIn) -> Vec<String> {
    slack
        .delivered()
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_fifo_group_stops_at_its_first_retry_and_other_groups_go_on() {
    let queues = queues(5, 30).await;
    let (relay, _failing, healthy) = failing_and_healthy(&queues).await;
    let records = vec![
        grouped("g1", "a.failing", "g", "ops.fifo", 1),
        grouped("g2", "b.healthy", "g", "ops.fifo", 1),
        grouped("h1", "b.healthy", "h", "ops.fifo", 1),
    ];
    let results = relay
        .run_batch(&records, Instant::now() + Duration::from_secs(3))
        .await;
    assert_retry(&results[0].outcome, "slack_server_error");
    assert_retry(&results[1].outcome, "fifo_blocked");
    assert_eq!(results[2].outcome, Outcome::Delivered);
    assert_eq!(posted(&healthy), ["b h1"], "g2 must wait for g1");
}

#[tokio::test]
async fn a_blocked_fifo_message_on_its_last_receive_is_dead_lettered_naming_the_one_before_it() {
    let queues = queues(5, 30).await;
    let (relay, _failing, healthy) = failing_and_healthy(&queues).await;
    let records = vec![
        grouped("g1", "a.failing", "g", "ops.fifo", 1),
        grouped("g2", "b.healthy", "g", "ops.fifo", 5),
    ];
    let results = relay
        .run_batch(&records, Instant::now() + Duration::from_secs(3))
        .await;
    assert_retry(&results[0].outcome, "slack_server_error");
    let Outcome::DeadLettered(failure) = &results[1].outcome else {
        panic!("expected a dead letter, got {:?}", results[1].outcome);
    };
    assert_eq!(failure.code, "fifo_blocked");
    assert!(failure.reason.contains("g1"), "{}", failure.reason);
    let dead = drain(&queues.client, &queues.dlq).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(failure_of(&dead[0])["code"], "fifo_blocked");
    assert!(posted(&healthy).is_empty());
}

#[tokio::test]
async fn a_standard_queue_holds_no_message_group_behind_a_failing_message() {
    // Fair queues: standard queues whose messages carry a MessageGroupId, with no order promised.
    let queues = queues(5, 30).await;
    let (relay, _failing, healthy) = failing_and_healthy(&queues).await;
    let records = vec![
        grouped("g1", "a.failing", "g", "ops", 1),
        grouped("g2", "b.healthy", "g", "ops", 1),
    ];
    let results = relay
        .run_batch(&records, Instant::now() + Duration::from_secs(3))
        .await;
    assert_retry(&results[0].outcome, "slack_server_error");
    assert_eq!(results[1].outcome, Outcome::Delivered);
    assert_eq!(posted(&healthy), ["b g2"]);
}
