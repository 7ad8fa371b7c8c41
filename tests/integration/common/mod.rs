//! What the integration tests share: the real services started by `tests/run.sh` (PostgreSQL,
//! MariaDB, moto), a Slack stand-in that answers as Slack documents, and builders for relays and SQS
//! records. A test whose service is missing fails with the command to run; it never skips.

#![allow(dead_code)]

pub mod dns;
pub mod esm;
pub mod flaky_aws;
pub mod http;
pub mod lambda;
pub mod runtime;
pub mod slack;

use std::collections::{BTreeMap, HashMap};

use aws_lambda_events::sqs::SqsMessage;
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName, QueueAttributeName};
use opsrelay::config::{self, MissingWebhook, Settings};
use opsrelay::db::Database;
use opsrelay::deadletter::DeadLetters;
use opsrelay::pipeline::Relay;
use opsrelay::rules::Rules;
use opsrelay::secret::Secret;
use serde_json::json;
use sqlx::AssertSqlSafe;

/// A service's address from the environment `tests/run.sh` sets up.
pub fn service(variable: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| {
        panic!(
            "{variable} is not set: run the tests with `bash tests/run.sh`, which starts PostgreSQL, MariaDB and moto"
        )
    })
}

/// A name unique to this call, for databases and queues.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
        .chars()
        .take(40)
        .collect()
}

/// Which database a rule test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    MariaDb,
}

impl Engine {
    /// The parameter placeholder of this engine.
    pub fn placeholder(self) -> &'static str {
        match self {
            Engine::Postgres => "$1",
            Engine::MariaDb => "?",
        }
    }
}

/// A new, empty database on the engine's test server, seeded with `tests/fixtures/seed_*.sql`;
/// returns its URL.
pub async fn fresh_database(engine: Engine) -> String {
    let (admin, seed) = match engine {
        Engine::Postgres => (
            service("OPSRELAY_TEST_POSTGRES_URL"),
            include_str!("../../fixtures/seed_postgres.sql"),
        ),
        Engine::MariaDb => (
            service("OPSRELAY_TEST_MYSQL_URL"),
            include_str!("../../fixtures/seed_mysql.sql"),
        ),
    };
    let name = unique("t_");
    let base = admin.rsplit_once('/').expect("URL has a path").0;
    let url = format!("{base}/{name}");
    match engine {
        Engine::Postgres => {
            let pool = sqlx::PgPool::connect(&admin)
                .await
                .expect("connect to PostgreSQL");
            sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&pool)
                .await
                .expect("create database");
            pool.close().await;
        }
        Engine::MariaDb => {
            let pool = sqlx::MySqlPool::connect(&admin)
                .await
                .expect("connect to MariaDB");
            sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&pool)
                .await
                .expect("create database");
            pool.close().await;
        }
    }
    let database = Database::connect_lazy(&Secret::new(url.clone()), &settings(&[]).db).unwrap();
    database
        .execute_script(seed)
        .await
        .expect("seed the database");
    url
}

/// Settings as the environment would give them, with `overrides`; fast retries for tests.
pub fn settings(overrides: &[(&str, &str)]) -> Settings {
    let mut env: HashMap<&str, &str> = HashMap::from([
        ("OPSRELAY_RETRY_INITIAL_MS", "20"),
        ("OPSRELAY_RETRY_MAX_MS", "200"),
        ("OPSRELAY_SLACK_RATE_PER_SECOND", "1000"),
        ("OPSRELAY_SLACK_BURST", "100"),
        ("OPSRELAY_SLACK_TIMEOUT_MS", "1000"),
        ("OPSRELAY_DEADLINE_MARGIN_MS", "300"),
    ]);
    env.extend(overrides.iter().copied());
    Settings::from_lookup(|name| env.get(name).map(|v| v.to_string())).expect("valid test settings")
}

/// The SDK configured for moto.
pub async fn sdk() -> aws_config::SdkConfig {
    sdk_at(&service("OPSRELAY_TEST_AWS_ENDPOINT")).await
}

/// The SDK configured for an AWS endpoint at `url` (moto, or a proxy in front of it).
pub async fn sdk_at(url: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(url)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .load()
        .await
}

/// A source queue and its DLQ in moto.
pub struct Queues {
    pub client: aws_sdk_sqs::Client,
    pub source: String,
    pub source_arn: String,
    pub dlq: String,
}

/// Creates a DLQ and a source queue redriving to it after `max_receive_count` receives.
pub async fn queues(max_receive_count: u32, visibility_timeout_s: u32) -> Queues {
    make_queues(false, max_receive_count, visibility_timeout_s).await
}

/// Creates a FIFO DLQ and a FIFO source queue (names ending in `.fifo`, content-based
/// deduplication) redriving to it after `max_receive_count` receives.
pub async fn fifo_queues(max_receive_count: u32, visibility_timeout_s: u32) -> Queues {
    make_queues(true, max_receive_count, visibility_timeout_s).await
}

async fn make_queues(fifo: bool, max_receive_count: u32, visibility_timeout_s: u32) -> Queues {
    let client = aws_sdk_sqs::Client::new(&sdk().await);
    let name = unique("q");
    let suffix = if fifo { ".fifo" } else { "" };
    let create = |queue_name: String| {
        let request = client.create_queue().queue_name(queue_name);
        if fifo {
            request
                .attributes(QueueAttributeName::FifoQueue, "true")
                .attributes(QueueAttributeName::ContentBasedDeduplication, "true")
        } else {
            request
        }
    };
    let dlq = create(format!("{name}-dlq{suffix}"))
        .send()
        .await
        .expect("create DLQ")
        .queue_url
        .unwrap();
    let dlq_arn = queue_arn(&client, &dlq).await;
    let policy =
        json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count.to_string() });
    let source = create(format!("{name}{suffix}"))
        .attributes(QueueAttributeName::RedrivePolicy, policy.to_string())
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            visibility_timeout_s.to_string(),
        )
        .send()
        .await
        .expect("create queue")
        .queue_url
        .unwrap();
    let source_arn = queue_arn(&client, &source).await;
    Queues {
        client,
        source,
        source_arn,
        dlq,
    }
}

impl Queues {
    /// The relay's dead letters, into this DLQ.
    pub fn dead_letters(&self) -> DeadLetters {
        DeadLetters::Sqs {
            client: self.client.clone(),
            queue_url: self.dlq.clone(),
        }
    }

    /// A new SNS topic that this source queue subscribes to (raw delivery or the SNS envelope).
    pub async fn subscribed_topic(&self, raw: bool) -> (aws_sdk_sns::Client, String) {
        let sns = aws_sdk_sns::Client::new(&sdk().await);
        let topic = sns
            .create_topic()
            .name(unique("events"))
            .send()
            .await
            .unwrap()
            .topic_arn
            .unwrap();
        sns.subscribe()
            .topic_arn(&topic)
            .protocol("sqs")
            .endpoint(&self.source_arn)
            .attributes("RawMessageDelivery", raw.to_string())
            .send()
            .await
            .unwrap();
        (sns, topic)
    }
}

/// The `opsrelay` binary with `args`, its AWS SDK pointed at moto (the rest of the environment
/// inherited).
pub fn opsrelay_at_moto(args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_opsrelay"));
    command
        .args(args)
        .env("AWS_ENDPOINT_URL", service("OPSRELAY_TEST_AWS_ENDPOINT"))
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test");
    command
}

/// Publishes each `(id, message)` to `topic`, ten to a call.
pub async fn publish(sns: &aws_sdk_sns::Client, topic: &str, messages: Vec<(u64, String)>) {
    for chunk in messages.chunks(10) {
        let entries = chunk.iter().map(|(id, message)| {
            aws_sdk_sns::types::PublishBatchRequestEntry::builder()
                .id(id.to_string())
                .message(message)
                .build()
                .unwrap()
        });
        sns.publish_batch()
            .topic_arn(topic)
            .set_publish_batch_request_entries(Some(entries.collect()))
            .send()
            .await
            .unwrap();
    }
}

pub async fn queue_arn(client: &aws_sdk_sqs::Client, url: &str) -> String {
    client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&QueueAttributeName::QueueArn]
        .clone()
}

/// Every message now visible on `url` (received, so hidden for the visibility timeout).
pub async fn drain(client: &aws_sdk_sqs::Client, url: &str) -> Vec<Message> {
    let mut all = Vec::new();
    loop {
        let out = client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(0)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .unwrap();
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            return all;
        }
        all.extend(messages);
    }
}

/// The `opsrelay-failure` record of a dead-lettered message.
pub fn failure_of(message: &Message) -> serde_json::Value {
    let text = message
        .message_attributes()
        .and_then(|a| a.get("opsrelay-failure"))
        .and_then(|v| v.string_value())
        .expect("the message carries opsrelay-failure");
    serde_json::from_str(text).expect("opsrelay-failure is JSON")
}

/// Rules from TOML text.
pub fn rules(toml: &str) -> Rules {
    Rules::parse("test-rules.toml", toml).expect("valid test rules")
}

/// A relay for tests: `webhook` as the default destination, the DLQ given.
pub async fn relay(
    settings: Settings,
    rules: Rules,
    database_url: Option<&str>,
    webhook: &str,
    dead_letters: DeadLetters,
) -> Relay {
    let webhooks = [("OPSRELAY_SLACK_WEBHOOK_URL", webhook)];
    relay_to(settings, rules, database_url, &webhooks, dead_letters).await
}

/// A relay for tests with the destinations `webhooks` (variable, URL), the DLQ given.
pub async fn relay_to(
    settings: Settings,
    rules: Rules,
    database_url: Option<&str>,
    webhooks: &[(&str, &str)],
    dead_letters: DeadLetters,
) -> Relay {
    let env: BTreeMap<&str, String> = webhooks.iter().map(|(k, v)| (*k, v.to_string())).collect();
    let resolved = config::resolve(
        &settings,
        &rules,
        |n| env.get(n).cloned(),
        MissingWebhook::Fail,
        None,
    )
    .await;
    let database = database_url
        .map(|url| Database::connect_lazy(&Secret::new(url.to_string()), &settings.db).unwrap());
    Relay::new(
        settings,
        rules,
        database,
        resolved.destinations,
        dead_letters,
    )
    .expect("relay builds")
}

/// An SQS record as Lambda delivers it, with `body` and the receive count.
pub fn record(message_id: &str, body: &str, receive_count: u32) -> SqsMessage {
    serde_json::from_value(json!({
        "messageId": message_id,
        "receiptHandle": format!("handle-{message_id}"),
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": receive_count.to_string(),
            "SentTimestamp": chrono::Utc::now().timestamp_millis().to_string(),
            "ApproximateFirstReceiveTimestamp": chrono::Utc::now().timestamp_millis().to_string()
        },
        "messageAttributes": {},
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:ops-events",
        "awsRegion": "us-east-1"
    }))
    .unwrap()
}

/// An event body `{"type": …, "id": …}`.
pub fn event(kind: &str, id: &str) -> String {
    json!({ "type": kind, "id": id }).to_string()
}
