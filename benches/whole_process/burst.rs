//! The burst figures: 1,000 events of one rule published at once through SNS and SQS (moto) to two
//! processes of the real binary, each fed by a stand-in for Lambda's SQS batching as the template
//! sets it (BatchSize 100, a 2 s window, MaximumConcurrency 2, a 30 s timeout, 0.5 posts/s and one
//! at once per process, MaxReceiveCount 5), posting to a Slack stand-in that limits like Slack
//! (1 post/s, 3 at once). Measured with digests on, then the same binary with `OPSRELAY_DIGESTS=off`,
//! then a lone event's latency from its publish to its post.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::future::join_all;
use tokio::time::Instant;

use super::Setup;
use super::common::esm::{EventSourceMapping, Invocation};
use super::common::runtime::RuntimeApi;
use super::common::slack::{Reply, SlackStandIn};
use super::common::{Queues, drain, publish, queues};

pub const EVENTS: u64 = 1_000;
/// How long the digests-off run is watched: it would need about 1,000 s to post every event.
pub const OFF_WATCH: Duration = Duration::from_secs(60);
const LONE_EVENTS: usize = 5;
const PROCESSES: usize = 2;
const TIMEOUT: Duration = Duration::from_secs(30);

/// What one burst run did.
pub struct BurstRun {
    /// Events whose post Slack took, with the time from their publish to it.
    pub visible: BTreeMap<u64, Duration>,
    pub posts: usize,
    pub limited: usize,
    pub dead_lettered: usize,
    /// The processes' invocations, and their time summed: what Lambda bills.
    pub invocations: usize,
    pub billed: Duration,
}

/// The processes of one run: the stand-ins they post to and read from, and what they did.
struct World {
    queues: Queues,
    slack: SlackStandIn,
    stop: AtomicBool,
    /// Each invocation's start and duration.
    billed: Mutex<Vec<(Instant, Duration)>>,
    rules: std::path::PathBuf,
}

impl World {
    async fn new(setup: &Setup) -> Self {
        let slack = SlackStandIn::start(vec![]).await;
        slack.limit(3, 1.0);
        // The bundled rules, their digest listing every event of a batch (so that each event's
        // visibility can be read off the posts).
        let rules = setup.dir.path().join("burst-rules.toml");
        let text = super::rules_text() + "\n[rules.\"order.created\".digest]\nlist = 100\n";
        std::fs::write(&rules, text).unwrap();
        Self {
            queues: queues(5, 182).await,
            slack,
            stop: AtomicBool::new(false),
            billed: Mutex::new(Vec::new()),
            rules,
        }
    }

    /// One process and its share of the event source mapping, until told to stop.
    async fn process(&self, setup: &Setup, digests: bool) {
        let api = RuntimeApi::start().await;
        let mut env = setup.lambda_env(&api, &self.slack.url);
        env.retain(|(name, _)| *name != "OPSRELAY_DLQ_URL" && *name != "OPSRELAY_RULES");
        env.extend([
            ("OPSRELAY_RULES", self.rules.display().to_string()),
            ("OPSRELAY_DLQ_URL", self.queues.dlq.clone()),
            ("OPSRELAY_SLACK_RATE_PER_SECOND", "0.5".into()),
            ("OPSRELAY_SLACK_BURST", "1".into()),
            ("OPSRELAY_MAX_RECEIVE_COUNT", "4".into()),
            (
                "OPSRELAY_DIGESTS",
                if digests { "on" } else { "off" }.into(),
            ),
        ]);
        let mut child = setup.spawn(std::slice::from_ref(&setup.bootstrap), &env);
        let client = self.queues.client.clone();
        let (source, arn) = (self.queues.source.clone(), self.queues.source_arn.clone());
        let mut esm =
            EventSourceMapping::new(client, source, arn, api).batching(100, Duration::from_secs(2));
        while !self.stop.load(Ordering::SeqCst) {
            let started = Instant::now();
            let billed = match esm.poll_once(TIMEOUT, async || {}).await {
                Invocation::Empty => continue,
                Invocation::Answered { billed, .. } => billed,
                Invocation::Failed { .. } => TIMEOUT,
            };
            self.billed.lock().unwrap().push((started, billed));
        }
        child.kill().await.unwrap();
    }

    /// Publishes events `ids`, stamped with when their publishing began.
    async fn publish(&self, ids: std::ops::RangeInclusive<u64>) -> BTreeMap<u64, Instant> {
        let (sns, topic) = self.queues.subscribed_topic(false).await;
        let mut published = BTreeMap::new();
        let ids: Vec<u64> = ids.collect();
        for chunk in ids.chunks(100) {
            let at = Instant::now();
            let events = chunk.iter().map(|&i| {
                published.insert(i, at);
                (i, format!(r#"{{"type":"order.created","id":"{i}"}}"#))
            });
            publish(&sns, &topic, events.collect()).await;
        }
        published
    }

    /// Each event of `published` Slack took a post of before `before`, with the time from its
    /// publish to its first such post.
    fn visible(
        &self,
        published: &BTreeMap<u64, Instant>,
        before: Instant,
    ) -> BTreeMap<u64, Duration> {
        let mut visible = BTreeMap::new();
        for request in self.slack.requests() {
            if !matches!(request.reply, Reply::Ok) || request.at >= before {
                continue;
            }
            for id in posted_ids(&request.body) {
                if let Some(at) = published.get(&id) {
                    visible.entry(id).or_insert(request.at - *at);
                }
            }
        }
        visible
    }

    /// Waits until every event of `published` is visible, or `until`.
    async fn wait_visible(&self, published: &BTreeMap<u64, Instant>, until: Instant) {
        let far = Instant::now() + Duration::from_secs(3_600);
        while Instant::now() < until && self.visible(published, far).len() < published.len() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What the run did before `before` (for the billing: what invocations that began before it
    /// took, to their end).
    async fn result(&self, published: &BTreeMap<u64, Instant>, before: Instant) -> BurstRun {
        let billed: Vec<Duration> = self
            .billed
            .lock()
            .unwrap()
            .iter()
            .filter(|(started, _)| *started < before)
            .map(|(_, billed)| *billed)
            .collect();
        let requests: Vec<_> = self
            .slack
            .requests()
            .into_iter()
            .filter(|r| r.at < before)
            .collect();
        BurstRun {
            visible: self.visible(published, before),
            posts: requests
                .iter()
                .filter(|r| matches!(r.reply, Reply::Ok))
                .count(),
            limited: requests
                .iter()
                .filter(|r| !matches!(r.reply, Reply::Ok))
                .count(),
            dead_lettered: drain(&self.queues.client, &self.queues.dlq).await.len(),
            invocations: billed.len(),
            billed: billed.iter().sum(),
        }
    }
}

/// The ids of the events a post holds: its own ("New order 42 from …"), or each line of a digest
/// ("• New order 42 from …").
fn posted_ids(post: &serde_json::Value) -> Vec<u64> {
    let id = |line: &str| {
        line.trim_start_matches("• ")
            .split_whitespace()
            .nth(2)?
            .parse()
            .ok()
    };
    let text = post["text"].as_str().unwrap_or_default();
    if !text.contains(" × ") {
        return id(text).into_iter().collect();
    }
    post["blocks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|block| block["type"] == "section")
        .filter_map(|block| block["text"]["text"].as_str())
        .flat_map(str::lines)
        .filter_map(id)
        .collect()
}

/// The burst with digests on or off, watched until every event is visible or `watch` has passed
/// (the invocations under way then run to their end and count); with digests on, then the latency
/// of lone events, one at a time.
pub async fn burst(setup: &Setup, digests: bool, watch: Duration) -> (BurstRun, Vec<Duration>) {
    let world = World::new(setup).await;
    let processes = join_all((0..PROCESSES).map(|_| world.process(setup, digests)));
    let measure = async {
        let published = world.publish(1..=EVENTS).await;
        world.wait_visible(&published, Instant::now() + watch).await;
        let burst_end = Instant::now();
        let mut lone = Vec::new();
        let lone_events = if digests { LONE_EVENTS as u64 } else { 0 };
        for i in 0..lone_events {
            // Quiet enough for the pacer to have a slot, as for an event outside a burst.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let one = world.publish(5_000 + i..=5_000 + i).await;
            world
                .wait_visible(&one, Instant::now() + Duration::from_secs(30))
                .await;
            lone.extend(world.visible(&one, Instant::now()).into_values());
        }
        world.stop.store(true, Ordering::SeqCst);
        let end = if digests {
            burst_end
        } else {
            Instant::now() + TIMEOUT * 2
        };
        (published, end, lone)
    };
    let (_, (published, end, lone)) = futures::join!(processes, measure);
    (world.result(&published, end).await, lone)
}
