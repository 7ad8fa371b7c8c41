//! Bursts become digests: the real binary behind Lambda's batching (the template's BatchSize and
//! window) posts one message for many events of a rule bound for one webhook, within Slack's rate;
//! in the pipeline, a digest delivers all its events, or fails each with the digest's reason.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;
use opsrelay::pipeline::Outcome;
use serde_json::Value;
use tokio::time::Instant;

use crate::common::esm::{EventSourceMapping, Invocation};
use crate::common::lambda::Lambda;
use crate::common::runtime::RuntimeApi;
use crate::common::slack::{Reply, SlackStandIn};
use crate::common::{Queues, drain, event, failure_of, publish, queues, record, settings};

/// Each event's own text names it; the default digest lists those texts.
const RULES: &str = r#"
[rules."order.created"]
text = "Order {{ event.id }} created"
[rules."order.created".digest]
list = 1000
"#;

/// The template's defaults (infra/template.yaml): two processes at 0.5 posts/s each, one at once;
/// batches of up to 100 gathered for up to 2 s.
const PROCESSES: usize = 2;
const BATCH_SIZE: usize = 100;
const WINDOW: Duration = Duration::from_secs(2);

/// The event ids a post delivered: its own, or each listed in a digest ("• Order 7 created").
fn ids_in(post: &Value) -> Vec<u64> {
    let mut texts = vec![post["text"].as_str().unwrap_or_default().to_string()];
    for block in post["blocks"].as_array().into_iter().flatten() {
        texts.extend(block["text"]["text"].as_str().map(str::to_string));
    }
    let is_digest = post["text"].as_str().is_some_and(|t| t.contains('×'));
    texts
        .iter()
        .skip(usize::from(is_digest))
        .flat_map(|t| t.lines())
        .filter_map(|line| {
            let rest = line.trim_start_matches("• ").strip_prefix("Order ")?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_to_one_webhook_arrives_as_a_few_digests_within_slacks_rate() {
    let n: u64 = 150;
    let queues = queues(5, 30).await;
    let (sns, topic) = queues.subscribed_topic(false).await;
    let slack = SlackStandIn::start(vec![]).await;
    slack.limit(3, 1.0);
    let env = vec![
        ("OPSRELAY_SLACK_WEBHOOK_URL", slack.url.clone()),
        ("OPSRELAY_DLQ_URL", queues.dlq.clone()),
        ("OPSRELAY_SLACK_RATE_PER_SECOND", "0.5".into()),
        ("OPSRELAY_SLACK_BURST", "1".into()),
    ];
    let published = Instant::now();
    let events = (1..=n).map(|i| (i, event("order.created", &i.to_string())));
    publish(&sns, &topic, events.collect()).await;
    let processes = (0..PROCESSES).map(|_| async {
        let api = RuntimeApi::start().await;
        let _lambda = Lambda::start(&api, RULES, &env).await;
        let mut esm = EventSourceMapping::new(
            queues.client.clone(),
            queues.source.clone(),
            queues.source_arn.clone(),
            api,
        )
        .batching(BATCH_SIZE, WINDOW);
        let mut invocations = Vec::new();
        loop {
            match esm.poll_once(Duration::from_secs(30), async || {}).await {
                Invocation::Empty => return invocations,
                other => invocations.push(other),
            }
        }
    });
    let invocations: Vec<Invocation> = join_all(processes).await.into_iter().flatten().collect();

    let requests = slack.requests();
    let limited = requests
        .iter()
        .filter(|r| matches!(r.reply, Reply::RateLimited(_)))
        .count();
    let mut delivered: BTreeMap<u64, usize> = BTreeMap::new();
    for post in slack.delivered() {
        for id in ids_in(&post) {
            *delivered.entry(id).or_default() += 1;
        }
    }
    let last = requests.iter().map(|r| r.at - published).max().unwrap();
    assert_eq!(limited, 0, "no 429 from Slack");
    assert!(
        drain(&queues.client, &queues.dlq).await.is_empty(),
        "nothing dead-lettered"
    );
    assert!(
        invocations
            .iter()
            .all(|i| matches!(i, Invocation::Answered { failed: 0, .. })),
        "every invocation delivered its whole batch: {invocations:?}"
    );
    assert_eq!(delivered.len() as u64, n, "every event delivered");
    assert!(
        delivered.values().all(|&posts| posts == 1),
        "each event in exactly one post"
    );
    assert!(
        requests.len() <= 6,
        "{} posts for {n} events",
        requests.len()
    );
    assert!(
        last < Duration::from_secs(20),
        "the last post came {last:?} after publishing"
    );
}

const DIGEST_RULES: &str = r#"
[rules."order.created"]
text = "Order {{ event.id }} created"
[rules."order.created".digest]
min_events = 2
text = "{{ count }} orders: {% for e in events %}{{ e.event.id }} {% endfor %}"
"#;

/// Five events of `rules` in one batch through the pipeline, to a Slack stand-in answering `reply`.
async fn five_events(
    rules: &str,
    reply: Reply,
    overrides: &[(&str, &str)],
) -> (Vec<Outcome>, SlackStandIn, Queues) {
    let slack = SlackStandIn::start(vec![]).await;
    slack.always(reply);
    let queues = queues(5, 30).await;
    let relay = crate::common::relay(
        settings(overrides),
        crate::common::rules(rules),
        None,
        &slack.url,
        queues.dead_letters(),
    )
    .await;
    let records: Vec<_> = (1..=5)
        .map(|i| record(&format!("m{i}"), &event("order.created", &i.to_string()), 1))
        .collect();
    let end = Instant::now() + Duration::from_secs(10);
    let outcomes = relay.run_batch(&records, end).await;
    let outcomes = outcomes.into_iter().map(|p| p.outcome).collect();
    (outcomes, slack, queues)
}

async fn digest_of_five(reply: Reply) -> (Vec<Outcome>, SlackStandIn, Queues) {
    five_events(DIGEST_RULES, reply, &[]).await
}

#[tokio::test]
async fn a_digest_is_one_post_through_its_own_template_and_delivers_every_event() {
    let (outcomes, slack, _queues) = digest_of_five(Reply::Ok).await;
    assert!(
        outcomes.iter().all(|o| *o == Outcome::Delivered),
        "{outcomes:?}"
    );
    let posts = slack.delivered();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0]["text"], "5 orders: 1 2 3 4 5");
}

#[tokio::test]
async fn a_digest_slack_refuses_dead_letters_each_of_its_events_with_that_reason() {
    let (outcomes, slack, queues) = digest_of_five(Reply::Status(404, "no_service")).await;
    assert_eq!(
        slack.requests().len(),
        1,
        "one digest tried, not five posts"
    );
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Outcome::DeadLettered(f) if f.code == "slack_rejected")),
        "{outcomes:?}"
    );
    let dead = drain(&queues.client, &queues.dlq).await;
    assert_eq!(dead.len(), 5);
    for message in &dead {
        let failure = failure_of(message);
        assert_eq!(failure["code"], "slack_rejected");
        assert!(
            failure["reason"].as_str().unwrap().contains("no_service"),
            "{failure}"
        );
    }
}

#[tokio::test]
async fn a_digest_that_fails_transiently_leaves_each_of_its_events_for_sqs() {
    let (outcomes, slack, _queues) = digest_of_five(Reply::Status(500, "rollup_error")).await;
    assert!(slack.requests().len() >= 2, "retried inside the invocation");
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Outcome::Retry { code, .. } if code == "slack_server_error")),
        "{outcomes:?}"
    );
}

#[tokio::test]
async fn events_a_route_mentions_for_are_digested_apart_with_the_mention() {
    let rules = r#"
[rules."order.created"]
text = "Order {{ event.id }} created"
[[rules."order.created".routes]]
when = "event.id | int > 3"
mention = "<!here>"
[rules."order.created".digest]
min_events = 2
"#;
    let (outcomes, slack, _queues) = five_events(rules, Reply::Ok, &[]).await;
    assert!(
        outcomes.iter().all(|o| *o == Outcome::Delivered),
        "{outcomes:?}"
    );
    let mut texts: Vec<String> = slack
        .delivered()
        .iter()
        .map(|p| p["text"].as_str().unwrap().to_string())
        .collect();
    texts.sort();
    assert_eq!(texts, ["3 × order.created", "<!here> 2 × order.created"]);
    let here = slack
        .delivered()
        .into_iter()
        .find(|p| p["text"] == "<!here> 2 × order.created")
        .unwrap();
    let listed = here["blocks"][1]["text"]["text"].as_str().unwrap();
    // Listed as they were looked up: the mention once, in front.
    assert!(listed.starts_with("<!here> • Order "), "{listed}");
    assert!(
        listed.contains("Order 4 created") && listed.contains("Order 5 created"),
        "{listed}"
    );
    assert_eq!(listed.matches("<!here>").count(), 1, "{listed}");
}

#[tokio::test]
async fn with_digests_off_a_burst_is_posted_event_by_event() {
    let off = [("OPSRELAY_DIGESTS", "off")];
    let (outcomes, slack, _queues) = five_events(DIGEST_RULES, Reply::Ok, &off).await;
    assert!(
        outcomes.iter().all(|o| *o == Outcome::Delivered),
        "{outcomes:?}"
    );
    assert_eq!(slack.delivered().len(), 5);
}
