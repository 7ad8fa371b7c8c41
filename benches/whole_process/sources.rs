//! The database sources' figures, in one run against moto and the local hot standby: rows a second
//! from the standby into the queue (beside the redrive mover's messages a second on the same moto:
//! both are bound by `SendMessageBatch`), and the lag from a row's commit on the primary to its
//! event in the queue at 50 rows a second, polled every 10 s.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_sqs::types::{MessageSystemAttributeName, SendMessageBatchRequestEntry};
use opsrelay::db::Database;
use opsrelay::rules::Rules;
use opsrelay::secret::Secret;
use opsrelay::source::Poller;
use opsrelay::source::send::EventQueue;
use opsrelay::source::store::CursorStore;
use tokio::time::Instant;

use super::common::{opsrelay_at_moto, queues, settings, unique};
use super::env;

pub const THROUGHPUT_ROWS: i64 = 5_000;
pub const LAG_RATE: u64 = 50;
pub const LAG_SECONDS: u64 = 40;
pub const INTERVAL: Duration = Duration::from_secs(10);

/// What the run measured.
pub struct SourceFigures {
    pub rows_per_second: f64,
    pub mover_per_second: f64,
    /// Each row's lag, sorted.
    pub lags: Vec<Duration>,
}

fn rules(table: &str, batch: usize) -> Rules {
    let text = format!(
        "[rules.\"order.created\"]\ntext = \"x\"\n[sources.\"rows\"]\nevent_type = \"order.created\"\nquery = \"SELECT id, xid FROM {table}\"\ncursor = \"xid\"\nbatch = {batch}\n"
    );
    Rules::parse("bench.toml", &text).unwrap()
}

async fn table(primary: &sqlx::PgPool) -> String {
    let table = unique("bench").replace('-', "_");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {table} (id BIGSERIAL PRIMARY KEY, committed_at_us BIGINT,
           xid xid8 NOT NULL DEFAULT pg_current_xact_id())"
    )))
    .execute(primary)
    .await
    .unwrap();
    table
}

fn poller(client: aws_sdk_sqs::Client, url: &str, dir: &std::path::Path) -> Poller {
    Poller {
        store: CursorStore::File(dir.join(format!("{}.json", unique("cursors")))),
        queue: EventQueue::Sqs {
            client,
            url: url.to_string(),
        },
        query_timeout: Duration::from_secs(30),
    }
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// Polls until the source is caught up with `rows` rows sent.
async fn poll_until(poller: &Poller, standby: &Database, rules: &Rules, rows: usize) {
    let mut sent = 0;
    while sent < rows {
        let far = Instant::now() + Duration::from_secs(60);
        sent += poller.poll(standby, &rules.sources, far).await[0].sent;
    }
}

/// Rows a second from the standby into the queue: THROUGHPUT_ROWS rows, committed and replayed,
/// then polled in batches of 1,000.
async fn throughput(primary: &sqlx::PgPool, standby: &Database, dir: &std::path::Path) -> f64 {
    let table = table(primary).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {table} (committed_at_us) SELECT 0 FROM generate_series(1, {THROUGHPUT_ROWS})"
    )))
    .execute(primary)
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let queues = queues(5, 30).await;
    let poller = poller(queues.client.clone(), &queues.source, dir);
    let rules = rules(&table, 1_000);
    let started = Instant::now();
    poll_until(&poller, standby, &rules, THROUGHPUT_ROWS as usize).await;
    THROUGHPUT_ROWS as f64 / started.elapsed().as_secs_f64()
}

/// The redrive mover's messages a second on the same moto: THROUGHPUT_ROWS messages put in a DLQ,
/// then `opsrelay dlq redrive` (the release binary) moves them to the source queue.
async fn mover() -> f64 {
    let queues = queues(5, 30).await;
    for chunk in (0..THROUGHPUT_ROWS).collect::<Vec<_>>().chunks(10) {
        let entries = chunk.iter().map(|i| {
            SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(format!(r#"{{"type":"order.created","id":"{i}"}}"#))
                .build()
                .unwrap()
        });
        queues
            .client
            .send_message_batch()
            .queue_url(&queues.dlq)
            .set_entries(Some(entries.collect()))
            .send()
            .await
            .unwrap();
    }
    let started = Instant::now();
    let args = [
        "dlq",
        "redrive",
        "--dlq",
        &queues.dlq,
        "--to",
        &queues.source,
    ];
    let out = opsrelay_at_moto(&args).output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    THROUGHPUT_ROWS as f64 / started.elapsed().as_secs_f64()
}

/// The lag of each row: LAG_RATE rows a second committed on the primary (each stamped with its
/// commit's time) for LAG_SECONDS, polled on the standby every INTERVAL; a row's lag is from its
/// commit to when SQS took its event (`SentTimestamp`).
async fn lag(primary: &sqlx::PgPool, standby: &Database, dir: &std::path::Path) -> Vec<Duration> {
    let table = table(primary).await;
    let queues = queues(5, 30).await;
    let poller = poller(queues.client.clone(), &queues.source, dir);
    let rules = rules(&table, 500);
    let rows = (LAG_RATE * LAG_SECONDS) as usize;
    let writer = async {
        let every = Duration::from_micros(1_000_000 / LAG_RATE);
        let started = Instant::now();
        for n in 0..rows as u32 {
            tokio::time::sleep_until(started + every * n).await;
            // The stamp is taken just before the commit (an autocommit statement).
            let insert = format!(
                "INSERT INTO {table} (committed_at_us) VALUES ({})",
                now_us()
            );
            sqlx::query(sqlx::AssertSqlSafe(insert))
                .execute(primary)
                .await
                .unwrap();
        }
    };
    let polls = async {
        let until = Instant::now() + Duration::from_secs(LAG_SECONDS) + INTERVAL * 2;
        while Instant::now() < until {
            let started = Instant::now();
            poller
                .poll(standby, &rules.sources, started + INTERVAL)
                .await;
            tokio::time::sleep_until(started + INTERVAL).await;
        }
    };
    tokio::join!(writer, polls);
    let committed: Vec<(i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id, committed_at_us FROM {table}"
    )))
    .fetch_all(primary)
    .await
    .unwrap();
    let committed: std::collections::HashMap<i64, i64> = committed.into_iter().collect();
    let mut lags = Vec::with_capacity(rows);
    loop {
        let received = queues
            .client
            .receive_message()
            .queue_url(&queues.source)
            .max_number_of_messages(10)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .send()
            .await
            .unwrap();
        let messages = received.messages.unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        for message in &messages {
            let event: serde_json::Value = serde_json::from_str(message.body().unwrap()).unwrap();
            let id: i64 = event["id"].as_str().unwrap().parse().unwrap();
            let sent_ms: i64 = message.attributes().unwrap()
                [&MessageSystemAttributeName::SentTimestamp]
                .parse()
                .unwrap();
            let lag_us = (sent_ms * 1_000 - committed[&id]).max(0);
            lags.push(Duration::from_micros(lag_us as u64));
            queues
                .client
                .delete_message()
                .queue_url(&queues.source)
                .receipt_handle(message.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    assert_eq!(lags.len(), rows, "every row an event");
    lags.sort();
    lags
}

pub async fn figures(dir: &std::path::Path) -> SourceFigures {
    let primary = sqlx::PgPool::connect(&env("OPSRELAY_TEST_POSTGRES_URL"))
        .await
        .unwrap();
    let url = Secret::new(env("OPSRELAY_TEST_POSTGRES_STANDBY_URL"));
    let standby = Database::connect_lazy(&url, &settings(&[]).db).unwrap();
    let rows_per_second = throughput(&primary, &standby, dir).await;
    let mover_per_second = mover().await;
    let lags = lag(&primary, &standby, dir).await;
    SourceFigures {
        rows_per_second,
        mover_per_second,
        lags,
    }
}
