//! Redrive throughput against moto: `opsrelay dlq redrive`'s mover (batches of ten, several in
//! flight) next to a one-message-at-a-time receive / send / delete loop, with the same SDK, in the same
//! run, on the same number of messages. Then both again with a network round trip added to every
//! call, as a client in the queue's region sees SQS (moto on loopback answers without one).
//!
//! `cargo run --release --example redrive_bench [-- MESSAGES]` (default 10,000). It starts moto
//! (`tests/fixtures/dlq_moto_server.py`, as the tests do) on a free loopback port, or uses the one at
//! `OPSRELAY_TEST_AWS_ENDPOINT` when set, and prints a table.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName,
    SendMessageBatchRequestEntry,
};
use futures::StreamExt;
use opsrelay::failure::FAILURE_ATTRIBUTE;
use opsrelay::redrive::filter::Filter;
use opsrelay::redrive::letter::Letter;
use opsrelay::redrive::mover::{self, Counts, Destination, Plan, Progress, Source};
use opsrelay::redrive::queue::Queue;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Batches in flight for the rows of the mover; the first, one, also gives the per-call costs.
const CONCURRENCY: [usize; 3] = [1, 4, 8];
/// The round trip added to every call in the second part.
const ROUND_TRIP: Duration = Duration::from_millis(5);
/// Messages of the one-at-a-time loop with the round trip (it is slow).
const LOOP_WITH_ROUND_TRIP: usize = 2_000;

#[tokio::main]
async fn main() {
    let messages: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("MESSAGES is a number"))
        .unwrap_or(10_000);
    let (endpoint, _moto) = match std::env::var("OPSRELAY_TEST_AWS_ENDPOINT") {
        Ok(endpoint) => (endpoint, None),
        Err(_) => {
            let (endpoint, child) = start_moto().await;
            (endpoint, Some(child))
        }
    };
    let direct = sdk(&endpoint).await;
    let mut rows = Vec::new();
    for concurrency in CONCURRENCY {
        let (dlq, source) = seeded(&direct, messages).await;
        let seconds = mover_run(&direct, &dlq, &source, concurrency, messages).await;
        let name = format!("opsrelay dlq redrive (10 a call, {concurrency} in flight)");
        rows.push((name, messages, seconds));
    }
    let (dlq, source) = seeded(&direct, messages).await;
    let seconds = one_at_a_time(&direct, &dlq, &source, messages).await;
    rows.push((
        "one at a time (receive, send, delete)".into(),
        messages,
        seconds,
    ));
    print_table("moto on loopback", &rows);
    print_call_costs(&rows[0], &rows[rows.len() - 1]);

    let distant = sdk(&delayed_proxy(&endpoint, ROUND_TRIP).await).await;
    let mut rows = Vec::new();
    let concurrency = CONCURRENCY[CONCURRENCY.len() - 1];
    let (dlq, source) = seeded(&direct, messages).await;
    let seconds = mover_run(&distant, &dlq, &source, concurrency, messages).await;
    let name = format!("opsrelay dlq redrive (10 a call, {concurrency} in flight)");
    rows.push((name, messages, seconds));
    let (dlq, source) = seeded(&direct, LOOP_WITH_ROUND_TRIP).await;
    let seconds = one_at_a_time(&distant, &dlq, &source, LOOP_WITH_ROUND_TRIP).await;
    let name = "one at a time (receive, send, delete)".into();
    rows.push((name, LOOP_WITH_ROUND_TRIP, seconds));
    let title = format!(
        "moto with {} ms added to every call",
        ROUND_TRIP.as_millis()
    );
    print_table(&title, &rows);
}

/// Prints the rows (name, messages, seconds) and how many times the last one (the loop) each of
/// the others is.
fn print_table(title: &str, rows: &[(String, usize, f64)]) {
    println!("\n{title}\n");
    println!(
        "| {:<46} | {:>8} | {:>9} | {:>8} |",
        "path", "messages", "seconds", "msgs/s"
    );
    println!("|{:-<48}|{:->10}|{:->11}|{:->10}|", "", "", "", "");
    let rate = |&(_, messages, seconds): &(String, usize, f64)| messages as f64 / seconds;
    for row in rows {
        let (name, messages, seconds) = row;
        println!(
            "| {name:<46} | {messages:>8} | {seconds:>9.1} | {:>8.0} |",
            rate(row)
        );
    }
    let slowest = rate(rows.last().expect("the loop ran"));
    for row in &rows[..rows.len() - 1] {
        println!(
            "{}: {:.1}x the one-at-a-time loop",
            row.0,
            rate(row) / slowest
        );
    }
}

/// What one call costs in each path, from the mover with one batch in flight (three calls per ten
/// messages) and the loop (three calls per message): the ratio batching alone can reach on this
/// server is ten times the cost of a one-message call over that of a ten-message call.
fn print_call_costs(mover: &(String, usize, f64), one_at_a_time: &(String, usize, f64)) {
    let per_call = |&(_, messages, seconds): &(String, usize, f64), per_message: f64| {
        seconds * 1000.0 / (messages as f64 * per_message)
    };
    let batch_call = per_call(mover, 0.3);
    let single_call = per_call(one_at_a_time, 3.0);
    println!(
        "one call: {batch_call:.2} ms with ten messages, {single_call:.2} ms with one; \
         batching alone can reach {:.1}x here, overlapping calls must give the rest",
        10.0 * single_call / batch_call
    );
}

async fn sdk(endpoint: &str) -> Client {
    Client::new(
        &aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "bench", "bench", None, None, "bench",
            ))
            .load()
            .await,
    )
}

/// A loopback address that forwards each connection to `endpoint` after `delay`. moto closes the
/// connection after each answer, so every call pays it once.
async fn delayed_proxy(endpoint: &str, delay: Duration) -> String {
    let upstream = endpoint.trim_start_matches("http://").to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let address = listener.local_addr().expect("a bound port");
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    format!("http://{address}")
}

/// A DLQ holding `count` dead letters as opsrelay writes them, and its source queue.
async fn seeded(client: &Client, count: usize) -> (String, String) {
    let name = format!("bench{}", uuid::Uuid::new_v4().simple());
    let dlq = create(client, &format!("{name}-dlq"), HashMap::new()).await;
    let arn = client
        .get_queue_attributes()
        .queue_url(&dlq)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("read the DLQ's ARN")
        .attributes
        .unwrap_or_default()
        .remove(&QueueAttributeName::QueueArn)
        .unwrap_or_default();
    let policy = json!({"deadLetterTargetArn": arn, "maxReceiveCount": "5"}).to_string();
    let source = create(
        client,
        &name,
        HashMap::from([(QueueAttributeName::RedrivePolicy, policy)]),
    )
    .await;
    let started = Instant::now();
    let batches = (0..count).collect::<Vec<_>>();
    let sends = batches.chunks(10).map(|chunk| {
        let entries = chunk.iter().map(|&i| dead_letter(i)).collect();
        let request = client.send_message_batch().queue_url(&dlq);
        async move {
            let output = request.set_entries(Some(entries)).send().await;
            assert!(output.expect("seed the DLQ").failed().is_empty());
        }
    });
    futures::stream::iter(sends)
        .buffer_unordered(8)
        .collect::<Vec<()>>()
        .await;
    eprintln!(
        "seeded {count} messages in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    (dlq, source)
}

async fn create(
    client: &Client,
    name: &str,
    attributes: HashMap<QueueAttributeName, String>,
) -> String {
    client
        .create_queue()
        .queue_name(name)
        .set_attributes(Some(attributes))
        .send()
        .await
        .expect("create a queue")
        .queue_url
        .unwrap_or_default()
}

fn text(value: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .expect("data_type is set")
}

fn dead_letter(i: usize) -> SendMessageBatchRequestEntry {
    let failure = json!({
        "class": "permanent", "code": "slack_rejected",
        "reason": "posting to destination `OPSRELAY_SLACK_WEBHOOK_URL` failed: Slack answered 404 `no_service`",
        "event_type": "order.created", "source_message_id": format!("source-{i}"), "receive_count": 1,
        "first_failed_at": "2026-11-30T08:00:00Z", "failed_at": "2026-11-30T08:00:00Z"
    });
    SendMessageBatchRequestEntry::builder()
        .id(i.to_string())
        .message_body(json!({"type": "order.created", "id": i.to_string()}).to_string())
        .message_attributes("trace", text(&format!("trace-{i}")))
        .message_attributes(FAILURE_ATTRIBUTE, text(&failure.to_string()))
        .build()
        .expect("id and body are set")
}

struct Quiet;

impl Progress for Quiet {
    fn update(&self, _: &Counts) {}
}

/// Seconds the mover takes to redrive the DLQ.
async fn mover_run(client: &Client, dlq: &str, to: &str, concurrency: usize, count: usize) -> f64 {
    let source = Source::Queue {
        queue: Queue::open(client, dlq).await.expect("open the DLQ"),
        visibility: Duration::from_secs(120),
        wait: Duration::ZERO,
    };
    let destination = Destination::Queue(Queue::open(client, to).await.expect("open the queue"));
    let plan = Plan {
        filter: Filter::default(),
        max: None,
        max_redrives: Some(3),
        rate: None,
        concurrency,
        remove: true,
    };
    let started = Instant::now();
    let report = mover::run(
        &source,
        &destination,
        &plan,
        &CancellationToken::new(),
        &Quiet,
    )
    .await;
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(report.counts.moved, count as u64, "{report:?}");
    seconds
}

/// Seconds a loop of one receive, one send and one delete per message takes for the same work.
async fn one_at_a_time(client: &Client, dlq: &str, to: &str, count: usize) -> f64 {
    let started = Instant::now();
    let mut moved = 0;
    loop {
        let received = client
            .receive_message()
            .queue_url(dlq)
            .max_number_of_messages(1)
            .visibility_timeout(120)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .expect("receive");
        let Some(message) = received.messages().first() else {
            break;
        };
        let outgoing = Letter::from_sqs(message).outgoing(false, None);
        client
            .send_message()
            .queue_url(to)
            .message_body(outgoing.body)
            .set_message_attributes(Some(outgoing.attributes))
            .send()
            .await
            .expect("send");
        client
            .delete_message()
            .queue_url(dlq)
            .receipt_handle(message.receipt_handle().unwrap_or_default())
            .send()
            .await
            .expect("delete");
        moved += 1;
    }
    assert_eq!(moved, count);
    started.elapsed().as_secs_f64()
}

/// moto on a free loopback port, stopped when the returned child is dropped.
async fn start_moto() -> (String, tokio::process::Child) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = tokio::process::Command::new("python3")
        .args(["tests/fixtures/dlq_moto_server.py", "-H", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect(
            "start moto: run from the repository, with moto installed (pip install 'moto[server]')",
        );
    let endpoint = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return (endpoint, child);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("moto did not start on {endpoint}");
}
