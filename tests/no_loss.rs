//! The no-loss run: N events published to SNS flow through the real Lambda binary (four processes,
//! each driven by an event source mapping stand-in) while faults are injected — Slack
//! 429/5xx/timeouts/dropped connections (~30 %), DLQ sends failing (~10 %), malformed events (5 %),
//! DNS black-holed for a while, the database restarted mid-run, the webhook revoked for a while (a
//! permanent error), invocations cut by a short deadline and processes killed mid-batch.
//! Every event is then accounted for: delivered to Slack, or in the DLQ with a reason; lost must be 0.
//! Then the faults stop, the DLQ is redriven with `opsrelay dlq redrive`, and every event that was not
//! malformed must be delivered. Last, a burst phase: N/2 more events at once, under the Slack faults
//! and the cut and killed invocations again, with the webhook paced at Slack's 1 post/s so that the
//! batches become digests; every one of those events must be in exactly the posts that delivered it
//! (alone, or listed in a digest that lists all it holds), or in the DLQ with its reason.
//!
//! CI runs N = 500. For the large run: `OPSRELAY_NO_LOSS_EVENTS=10000 bash tests/run.sh --test no_loss -- --nocapture`.

#[path = "integration/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use common::dns::{DnsMode, DnsServer};
use common::esm::{EventSourceMapping, Invocation};
use common::flaky_aws::FlakyAws;
use common::lambda::Lambda;
use common::runtime::RuntimeApi;
use common::slack::{Reply, SlackStandIn};
use common::{Engine, Queues, drain, fresh_database, publish, queues, service};
use futures::future::join_all;
use opsrelay::redrive::queue::Queue;
use tokio::time::Instant;

const LOCALHOST: std::net::Ipv4Addr = std::net::Ipv4Addr::LOCALHOST;

/// Lambda processes at once, each with its own Runtime API and share of the polling.
const WORKERS: usize = 4;

const RULES: &str = r#"
[rules."order.created"]
query = "SELECT id, customer FROM orders WHERE id = $1"
id_type = "integer"
text = "Order {{ id }} for {{ customer }}"
[rules."order.created".digest]
list = 100
"#;

/// What became of every event.
#[derive(Default, Debug)]
struct Tally {
    delivered: BTreeSet<u64>,
    posts: usize,
    /// The event of every post after its first.
    duplicates: Vec<u64>,
    dead: BTreeMap<u64, String>,
    dead_without_reason: usize,
}

fn event_number(body: &str) -> Option<u64> {
    let envelope: serde_json::Value = serde_json::from_str(body).ok()?;
    let event: serde_json::Value = serde_json::from_str(envelope["Message"].as_str()?).ok()?;
    event["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| event["ref"].as_u64())
}

async fn tally(slack: &SlackStandIn, client: &aws_sdk_sqs::Client, dlq: &str) -> Tally {
    let mut tally = Tally::default();
    for message in slack.delivered() {
        tally.posts += 1;
        for id in posted_events(&message).1 {
            if !tally.delivered.insert(id) {
                tally.duplicates.push(id);
            }
        }
    }
    let dead = drain(client, dlq).await;
    // Visible again at once, for the redrive.
    let handles: Vec<String> = dead
        .iter()
        .filter_map(|m| m.receipt_handle.clone())
        .collect();
    let queue = Queue::open(client, dlq).await.expect("open the DLQ");
    queue.release(&handles).await;
    for message in dead {
        let number = event_number(message.body().unwrap_or_default()).expect("a published event");
        match message
            .message_attributes()
            .and_then(|a| a.get("opsrelay-failure"))
            .and_then(|v| v.string_value())
        {
            Some(failure) => {
                let failure: serde_json::Value = serde_json::from_str(failure).unwrap();
                tally.dead.insert(
                    number,
                    failure["code"].as_str().unwrap_or_default().to_string(),
                );
            }
            None => {
                tally.dead_without_reason += 1;
                tally.dead.insert(number, "(no reason)".into());
            }
        }
    }
    tally
}

async fn queue_is_drained(client: &aws_sdk_sqs::Client, url: &str) -> bool {
    let attributes = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap_or_default();
    let count = |name| {
        attributes
            .get(&name)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(1)
    };
    count(QueueAttributeName::ApproximateNumberOfMessages)
        + count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        == 0
}

fn restart_postgres() {
    let dir = service("OPSRELAY_SERVICES_DIR");
    let status = std::process::Command::new("su")
        .args([
            "postgres",
            "-s",
            "/bin/sh",
            "-c",
            &format!("pg_ctl -D '{dir}/pg' -w -m fast restart >/dev/null"),
        ])
        .status()
        .unwrap();
    assert!(status.success(), "PostgreSQL restarted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_event_is_lost_under_faults_and_a_redrive_delivers_the_rest() {
    let n: u64 = std::env::var("OPSRELAY_NO_LOSS_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let started = Instant::now();

    // The record of every event exists; the database is reached by name through the test DNS.
    let url = fresh_database(Engine::Postgres).await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query("INSERT INTO orders (id, customer, total, paid, quantity) SELECT g, 'Customer ' || g, 1.00, TRUE, 1 FROM generate_series(1, $1) g ON CONFLICT DO NOTHING")
        .bind((n + n / 2) as i64)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let named = url.replace("127.0.0.1", &service("OPSRELAY_TEST_DB_NAME")) + "?sslmode=require";
    let dns = DnsServer::start(DnsMode::Answer(vec![LOCALHOST])).await;

    // SNS → SQS (enveloped) → DLQ after 6 receives; opsrelay dead-letters on its 5th, one receive
    // early, so that a process dying on that receive still leaves a reasoned dead letter.
    let queues = queues(6, 6).await;
    let (sns, topic) = queues.subscribed_topic(false).await;

    let slack = SlackStandIn::start(vec![]).await;
    slack.chaos(30, 7);
    let aws = FlakyAws::start(service("OPSRELAY_TEST_AWS_ENDPOINT"), 10).await;
    let apis = join_all((0..WORKERS).map(|_| RuntimeApi::start())).await;
    let env = vec![
        ("OPSRELAY_DATABASE_URL", named.clone()),
        ("OPSRELAY_DNS_SERVERS", dns.address.to_string()),
        ("OPSRELAY_DB_HOST_ADDRS", "127.0.0.1".into()),
        ("OPSRELAY_DB_CA_FILE", service("OPSRELAY_TEST_CA_FILE")),
        ("OPSRELAY_SLACK_WEBHOOK_URL", slack.url.clone()),
        ("OPSRELAY_DLQ_URL", queues.dlq.clone()),
        ("OPSRELAY_MAX_RECEIVE_COUNT", "5".into()),
        ("OPSRELAY_SLACK_RATE_PER_SECOND", "1000".into()),
        ("OPSRELAY_SLACK_BURST", "100".into()),
        ("OPSRELAY_SLACK_TIMEOUT_MS", "1000".into()),
        ("OPSRELAY_REPLICA_LAG_GRACE_SECONDS", "600".into()),
        ("OPSRELAY_LOG", "error".into()),
        ("AWS_ENDPOINT_URL", aws.url.clone()),
        ("AWS_MAX_ATTEMPTS", "1".into()),
    ];
    // Publish: 5 % malformed (no id; `ref` lets the tally find them).
    let mut malformed = BTreeSet::new();
    let messages = (1..=n).map(|i| {
        let message = if i % 20 == 0 {
            malformed.insert(i);
            format!(r#"{{"type":"order.created","ref":{i}}}"#)
        } else {
            format!(r#"{{"type":"order.created","id":"{i}"}}"#)
        };
        (i, message)
    });
    publish(&sns, &topic, messages.collect()).await;

    // Run under faults, WORKERS Lambda processes at once as the event source mapping scales out.
    let runs = Runs::default();
    let budget = Duration::from_secs(60 + n / 2);
    let faults = Faults {
        dns: &dns,
        slack: &slack,
    };
    let under_faults = |api| worker(api, &env, &queues, &runs, Some(&faults), started + budget);
    join_all(apis.iter().cloned().map(under_faults)).await;
    assert!(
        queue_is_drained(&queues.client, &queues.source).await,
        "the queue drained within {budget:?}"
    );
    let (invocations, cut, killed) = (
        runs.invocations.load(SeqCst),
        runs.cut.load(SeqCst),
        runs.killed.load(SeqCst),
    );

    let tally = tally(&slack, &queues.client, &queues.dlq).await;
    let lost: Vec<u64> = (1..=n)
        .filter(|i| !tally.delivered.contains(i) && !tally.dead.contains_key(i))
        .collect();
    let faults = slack.requests().len() - tally.posts;
    println!(
        "\n| events | delivered | in DLQ (with reason) | lost | duplicate posts | Slack faults | DLQ sends failed | invocations (cut, killed) |\n|---|---|---|---|---|---|---|---|\n| {n} | {} | {} ({}) | {} | {} ({:.2} %) | {faults} | {} | {invocations} ({cut}, {killed}) |",
        tally.delivered.len(),
        tally.dead.len(),
        tally.dead.len() - tally.dead_without_reason,
        lost.len(),
        tally.duplicates.len(),
        tally.duplicates.len() as f64 * 100.0 / n as f64,
        aws.failed.load(SeqCst),
    );
    assert!(lost.is_empty(), "lost events: {lost:?}");
    assert_eq!(
        tally.dead_without_reason, 0,
        "every DLQ message carries its reason"
    );
    for i in &malformed {
        assert_eq!(
            tally.dead.get(i).map(String::as_str),
            Some("malformed_event"),
            "malformed event {i}"
        );
    }
    let mut reasons = BTreeMap::<&str, usize>::new();
    for code in tally.dead.values() {
        *reasons.entry(code.as_str()).or_default() += 1;
    }
    println!("DLQ by reason: {reasons:?}");
    let killed_events = runs.killed_events.lock().unwrap().clone();
    println!(
        "Duplicate posts of an event whose batch was in a killed process: {} of {}",
        tally
            .duplicates
            .iter()
            .filter(|i| killed_events.contains(i))
            .count(),
        tally.duplicates.len()
    );
    assert!(
        reasons.keys().any(|&code| code != "malformed_event"),
        "the revoked webhook dead-lettered good events, for the redrive to bring back"
    );

    // Faults off; the DLQ goes back to the source queue; everything not malformed is delivered.
    slack.chaos(0, 1);
    slack.answer_normally();
    aws.set_percent(0);
    dns.set(DnsMode::Answer(vec![LOCALHOST]));
    let redrive = common::opsrelay_at_moto(&[
        "dlq",
        "redrive",
        "--dlq",
        &queues.dlq,
        "--to",
        &queues.source,
    ])
    .output()
    .await
    .unwrap();
    assert!(
        redrive.status.success(),
        "{}",
        String::from_utf8_lossy(&redrive.stderr)
    );
    let calm = |api| worker(api, &env, &queues, &runs, None, started + budget * 2);
    join_all(apis.iter().cloned().map(calm)).await;
    assert!(
        queue_is_drained(&queues.client, &queues.source).await,
        "the redriven messages drained within {:?}",
        budget * 2
    );
    let after = tally
        .delivered
        .union(&tally_delivered(&slack))
        .copied()
        .collect::<BTreeSet<u64>>();
    let undelivered: Vec<u64> = (1..=n)
        .filter(|i| !malformed.contains(i) && !after.contains(i))
        .collect();
    assert!(
        undelivered.is_empty(),
        "not delivered after the redrive: {undelivered:?}"
    );

    let burst = Burst {
        sns: &sns,
        topic: &topic,
        queues: &queues,
        slack: &slack,
        runs: &runs,
        faults: &Faults {
            dns: &dns,
            slack: &slack,
        },
    };
    burst.run(&apis, &env, n + 1..=n + n / 2, budget).await;
}

/// The burst phase's world: where events go in, and what watches them.
struct Burst<'a> {
    sns: &'a aws_sdk_sns::Client,
    topic: &'a str,
    queues: &'a Queues,
    slack: &'a SlackStandIn,
    runs: &'a Runs,
    faults: &'a Faults<'a>,
}

impl Burst<'_> {
    /// Publishes `ids` at once and runs the processes under faults with the webhook paced at
    /// 1 post/s, then accounts for every one of them.
    async fn run(
        &self,
        apis: &[RuntimeApi],
        env: &[(&str, String)],
        ids: std::ops::RangeInclusive<u64>,
        budget: Duration,
    ) {
        let before = self.slack.requests().len();
        self.slack.chaos(30, 11);
        let events = ids
            .clone()
            .map(|i| (i, format!(r#"{{"type":"order.created","id":"{i}"}}"#)));
        publish(self.sns, self.topic, events.collect()).await;
        let mut env = env.to_vec();
        env.retain(|(name, _)| {
            !name.starts_with("OPSRELAY_SLACK_RATE") && !name.starts_with("OPSRELAY_SLACK_BURST")
        });
        env.extend([
            ("OPSRELAY_SLACK_RATE_PER_SECOND", "1".to_string()),
            ("OPSRELAY_SLACK_BURST", "1".to_string()),
        ]);
        let until = Instant::now() + budget;
        let paced = |api| worker(api, &env, self.queues, self.runs, Some(self.faults), until);
        join_all(apis.iter().cloned().map(paced)).await;
        assert!(
            queue_is_drained(&self.queues.client, &self.queues.source).await,
            "the burst drained within {budget:?}"
        );
        self.account(ids, before).await;
    }

    /// Every event of `ids`: in the posts Slack took after request `before` (each post's events:
    /// its own, or all a digest lists, which must be all it holds), or in the DLQ with a reason.
    async fn account(&self, ids: std::ops::RangeInclusive<u64>, before: usize) {
        let mut posts_of: BTreeMap<u64, usize> = BTreeMap::new();
        let (mut digests, mut posts) = (0, 0);
        for request in &self.slack.requests()[before..] {
            if !matches!(request.reply, Reply::Ok) {
                continue;
            }
            posts += 1;
            let (held, listed) = posted_events(&request.body);
            assert_eq!(
                held,
                listed.len(),
                "a digest lists every event it delivers: {}",
                request.body
            );
            digests += usize::from(held > 1);
            for id in listed {
                *posts_of.entry(id).or_default() += 1;
            }
        }
        let dead = tally(self.slack, &self.queues.client, &self.queues.dlq)
            .await
            .dead;
        let killed = self.runs.killed_events.lock().unwrap().clone();
        let lost: Vec<u64> = ids
            .clone()
            .filter(|i| !posts_of.contains_key(i) && !dead.contains_key(i))
            .collect();
        let twice: Vec<u64> = posts_of
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(i, _)| *i)
            .collect();
        println!(
            "\n| burst events | posts Slack took (digests) | in DLQ | lost | delivered twice (of them, in a killed batch) |\n|---|---|---|---|---|\n| {} | {posts} ({digests}) | {} | {} | {} ({}) |",
            ids.clone().count(),
            dead.keys().filter(|i| ids.contains(i)).count(),
            lost.len(),
            twice.len(),
            twice.iter().filter(|i| killed.contains(i)).count(),
        );
        assert!(lost.is_empty(), "burst events lost: {lost:?}");
        assert!(digests > 0, "the burst was digested");
        assert!(posts < ids.count() / 2, "{posts} posts");
    }
}

impl Faults<'_> {
    /// Starts or stops what the `k`th poll's schedule says.
    async fn at(&self, k: u64) {
        match k {
            20 => self.dns.set(DnsMode::Drop),
            30 => tokio::task::spawn_blocking(restart_postgres).await.unwrap(),
            40 => self.dns.set(DnsMode::Answer(vec![LOCALHOST])),
            50 => self.slack.always(Reply::Status(404, "no_service")),
            60 => self.slack.answer_normally(),
            _ => {}
        }
    }
}

/// Invocations of all workers, and how many were cut short or had their process killed.
#[derive(Default)]
struct Runs {
    polls: AtomicU64,
    invocations: AtomicU64,
    cut: AtomicU64,
    killed: AtomicU64,
    /// The events of the batches whose process was killed: what such a process posted before it
    /// died, no memory of a warm process can know, so SQS delivers it again.
    killed_events: Mutex<BTreeSet<u64>>,
}

/// The faults a worker injects, scheduled by the poll count all workers share.
struct Faults<'a> {
    dns: &'a DnsServer,
    slack: &'a SlackStandIn,
}

/// One Lambda process and its share of the event source mapping: polls until the queue is drained or
/// `until`. With `faults`, the shared poll count schedules them: DNS black-holed from the 20th poll
/// to the 40th, PostgreSQL restarted at the 30th, the webhook revoked (Slack answers 404
/// `no_service`, a permanent error: dead-lettered, for the redrive to bring back) from the 50th to
/// the 60th, every 17th invocation cut to a 1.2 s deadline and every 23rd process killed 30 ms into
/// its batch (then started again, cold).
async fn worker(
    api: RuntimeApi,
    env: &[(&str, String)],
    queues: &Queues,
    runs: &Runs,
    faults: Option<&Faults<'_>>,
    until: Instant,
) {
    let mut lambda = Lambda::start(&api, RULES, env).await;
    let mut esm = EventSourceMapping::new(
        queues.client.clone(),
        queues.source.clone(),
        queues.source_arn.clone(),
        api.clone(),
    );
    let mut empties = 0;
    while Instant::now() < until {
        let k = runs.polls.fetch_add(1, SeqCst);
        let (short, kill) = match faults {
            Some(faults) => {
                faults.at(k).await;
                (k % 17 == 5, k % 23 == 11)
            }
            None => (false, false),
        };
        let timeout = Duration::from_millis(if short { 1_200 } else { 5_000 });
        let child = &mut lambda.child;
        let outcome = esm
            .poll_once(timeout, async || {
                if kill {
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    let _ = child.kill().await;
                }
            })
            .await;
        if let Invocation::Failed { bodies } = &outcome
            && kill
        {
            let numbers = bodies.iter().filter_map(|b| event_number(b));
            runs.killed_events.lock().unwrap().extend(numbers);
        }
        if outcome == Invocation::Empty {
            empties += 1;
            if empties >= 3 && queue_is_drained(&queues.client, &queues.source).await {
                return;
            }
            continue;
        }
        empties = 0;
        runs.invocations.fetch_add(1, SeqCst);
        runs.cut.fetch_add(u64::from(short), SeqCst);
        if kill {
            runs.killed.fetch_add(1, SeqCst);
            lambda = Lambda::start(&api, RULES, env).await;
        }
    }
}

fn tally_delivered(slack: &SlackStandIn) -> BTreeSet<u64> {
    slack
        .delivered()
        .iter()
        .flat_map(|post| posted_events(post).1)
        .collect()
}

/// How many events a post delivered, and those it names: its own ("Order {id} for …"), or a
/// digest's ("N × order.created", then a line "• Order {id} for …" per listed event).
fn posted_events(message: &serde_json::Value) -> (usize, Vec<u64>) {
    let text = message["text"].as_str().unwrap_or_default();
    let id = |line: &str| {
        line.trim_start_matches("• ")
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let Some((count, _)) = text.split_once(" × ") else {
        return (1, id(text).into_iter().collect());
    };
    let listed = message["blocks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|block| {
            block["text"]["text"]
                .as_str()
                .filter(|_| block["type"] == "section")
        })
        .flat_map(str::lines)
        .filter_map(id)
        .collect();
    (count.parse().unwrap_or(0), listed)
}
