//! Redrive throughput against moto: `opsrelay dlq redrive`'s mover (batches of ten, several in
//! flight) next to a one-message-at-a-time receive / send / delete loop, with the same SDK, in the same
//! run, on the same number of messages. Then both again with a network round trip (1, 2, 5, 20 ms)
//! added to every call, as a client sees SQS (moto on loopback answers without one; AWS's SQS guide
//! puts the average request latency from EC2 in the same region at about 20 ms).
//!
//! It reads its own CPU time around each row and, when it starts moto itself, moto's
//! (`/proc/PID/stat`): moto is one Python process, so the CPU it spends per message bounds what any
//! client can get from it, and the benchmark prints that bound next to what the mover reached.
//!
//! `cargo run --release --example redrive_bench [-- MESSAGES]` (default 10,000). It starts moto
//! (`tests/fixtures/dlq_moto_server.py`, as the tests do) on a free loopback port, or uses the one at
//! `OPSRELAY_TEST_AWS_ENDPOINT` when set, and prints a table.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName,
    SendMessageBatchRequestEntry,
};
use futures::StreamExt;
use opsrelay::deadletter::FAILURE_ATTRIBUTE;
use opsrelay::deadletter::Letter;
use opsrelay::redrive::filter::Filter;
use opsrelay::redrive::mover::{self, Counts, Destination, Plan, Progress, Source};
use opsrelay::redrive::queue::Queue;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Batches in flight for the rows of the mover.
const CONCURRENCY: [usize; 3] = [1, 4, 8];
/// The round trips added to every call in the second part, one table each: from where the loop starts
/// to wait on the network rather than on moto, up to SQS's average in its own region.
const ROUND_TRIPS_MS: [u64; 4] = [1, 2, 5, 20];
/// Messages of the one-at-a-time loop with the longer round trips (it is slow); with the first, it
/// moves as many as the mover.
const LOOP_WITH_ROUND_TRIP: usize = 2_000;
/// What the mover must reach, as a multiple of the loop.
const TARGET: f64 = 10.0;

/// One line of a table: a path, how many messages it moved, in how long, and the CPU time the
/// benchmark's own process (the client) and moto (when the benchmark started it) spent meanwhile.
struct Row {
    name: String,
    messages: usize,
    seconds: f64,
    client_cpu_seconds: f64,
    moto_cpu_seconds: Option<f64>,
}

impl Row {
    fn rate(&self) -> f64 {
        self.messages as f64 / self.seconds
    }

    /// CPU milliseconds per message moved.
    fn per_message_ms(&self, cpu_seconds: f64) -> f64 {
        cpu_seconds * 1000.0 / self.messages as f64
    }

    fn moto_cpu_ms(&self) -> Option<f64> {
        self.moto_cpu_seconds.map(|cpu| self.per_message_ms(cpu))
    }
}

/// moto's process, when the benchmark started it.
struct Moto {
    _child: tokio::process::Child,
    pid: u32,
}

/// Reads the CPU time of the benchmark's process and of moto's, from `/proc/PID/stat`.
struct Meter {
    ticks_per_second: f64,
    moto: Option<u32>,
}

impl Meter {
    fn new(moto: Option<&Moto>) -> Self {
        let output = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .expect("run getconf CLK_TCK");
        let ticks_per_second = String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .expect("getconf CLK_TCK prints a number");
        Meter {
            ticks_per_second,
            moto: moto.map(|m| m.pid),
        }
    }

    /// CPU seconds so far of this process and of moto's.
    fn read(&self) -> (f64, Option<f64>) {
        let client = self.cpu_seconds(std::process::id());
        (client, self.moto.map(|pid| self.cpu_seconds(pid)))
    }

    /// User and system CPU seconds of the whole process `pid` (every thread, live or ended).
    fn cpu_seconds(&self, pid: u32) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
        // Fields after the command name's closing parenthesis start at the state (field 3); utime
        // and stime are fields 14 and 15, in clock ticks.
        let fields: Vec<&str> = stat[stat.rfind(')').expect("a stat line") + 1..]
            .split_whitespace()
            .collect();
        let ticks = |i: usize| fields[i].parse::<f64>().expect("a tick count");
        (ticks(11) + ticks(12)) / self.ticks_per_second
    }

    /// Runs `work` (which returns how many messages it moved) and times it, with the CPU times.
    async fn row(&self, name: String, work: impl Future<Output = usize>) -> Row {
        let (client_before, moto_before) = self.read();
        let started = Instant::now();
        let messages = work.await;
        let seconds = started.elapsed().as_secs_f64();
        let (client_after, moto_after) = self.read();
        Row {
            name,
            messages,
            seconds,
            client_cpu_seconds: client_after - client_before,
            moto_cpu_seconds: moto_after.zip(moto_before).map(|(a, b)| a - b),
        }
    }
}

#[tokio::main]
async fn main() {
    let messages: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("MESSAGES is a number"))
        .unwrap_or(10_000);
    let (endpoint, moto) = match std::env::var("OPSRELAY_TEST_AWS_ENDPOINT") {
        Ok(endpoint) => (endpoint, None),
        Err(_) => {
            let (endpoint, moto) = start_moto().await;
            (endpoint, Some(moto))
        }
    };
    let meter = Meter::new(moto.as_ref());
    let direct = sdk(&endpoint).await;
    let mover_name =
        |concurrency| format!("opsrelay dlq redrive (10 a call, {concurrency} in flight)");
    let loop_name = || "one at a time (receive, send, delete)".to_string();
    let mut rows = Vec::new();
    for concurrency in CONCURRENCY {
        let (dlq, source) = seeded(&direct, messages).await;
        let work = mover_run(&direct, &dlq, &source, concurrency, messages);
        rows.push(meter.row(mover_name(concurrency), work).await);
    }
    let (dlq, source) = seeded(&direct, messages).await;
    let work = one_at_a_time(&direct, &dlq, &source, messages);
    rows.push(meter.row(loop_name(), work).await);
    print_table("moto on loopback", &rows);
    print_ceiling(&rows);

    let concurrency = CONCURRENCY[CONCURRENCY.len() - 1];
    for round_trip in ROUND_TRIPS_MS {
        let delay = Duration::from_millis(round_trip);
        let distant = sdk(&delayed_proxy(&endpoint, delay).await).await;
        let (dlq, source) = seeded(&direct, messages).await;
        let work = mover_run(&distant, &dlq, &source, concurrency, messages);
        let mut rows = vec![meter.row(mover_name(concurrency), work).await];
        let loop_messages = if round_trip == ROUND_TRIPS_MS[0] {
            messages
        } else {
            LOOP_WITH_ROUND_TRIP.min(messages)
        };
        let (dlq, source) = seeded(&direct, loop_messages).await;
        let work = one_at_a_time(&distant, &dlq, &source, loop_messages);
        rows.push(meter.row(loop_name(), work).await);
        print_table(
            &format!("moto with {round_trip} ms added to every call"),
            &rows,
        );
    }
}

/// Prints the rows, with the client's CPU per message, moto's and how busy it was when known, and
/// how many times the last row (the loop) each of the others is.
fn print_table(title: &str, rows: &[Row]) {
    println!("\n{title}\n");
    println!(
        "| {:<46} | {:>8} | {:>7} | {:>6} | {:>17} | {:>15} | {:>9} |",
        "path",
        "messages",
        "seconds",
        "msgs/s",
        "client CPU ms/msg",
        "moto CPU ms/msg",
        "moto busy"
    );
    println!(
        "|{:-<48}|{:->10}|{:->9}|{:->8}|{:->19}|{:->17}|{:->11}|",
        "", "", "", "", "", "", ""
    );
    for row in rows {
        let (cpu, busy) = match (row.moto_cpu_ms(), row.moto_cpu_seconds) {
            (Some(ms), Some(cpu)) => (
                format!("{ms:.2}"),
                format!("{:.0} %", 100.0 * cpu / row.seconds),
            ),
            _ => ("-".into(), "-".into()),
        };
        println!(
            "| {:<46} | {:>8} | {:>7.1} | {:>6.0} | {:>17.2} | {cpu:>15} | {busy:>9} |",
            row.name,
            row.messages,
            row.seconds,
            row.rate(),
            row.per_message_ms(row.client_cpu_seconds)
        );
    }
    let slowest = rows.last().expect("the loop ran").rate();
    for row in &rows[..rows.len() - 1] {
        let ratio = row.rate() / slowest;
        let verdict = if ratio >= TARGET { "meets" } else { "misses" };
        println!(
            "{}: {ratio:.1}x the one-at-a-time loop ({verdict} the {TARGET}x target)",
            row.name
        );
    }
}

/// moto is one Python process: it cannot serve more messages a second than one over the CPU it
/// spends on each. Prints that bound, from the mover row that cost moto least per message, as a
/// multiple of the loop, next to what the fastest mover row reached.
fn print_ceiling(rows: &[Row]) {
    let (one_at_a_time, movers) = rows.split_last().expect("the loop ran");
    let cheapest = movers
        .iter()
        .filter_map(Row::moto_cpu_ms)
        .min_by(f64::total_cmp);
    let fastest = movers.iter().map(Row::rate).max_by(f64::total_cmp);
    let (Some(mover_ms), Some(fastest), Some(loop_ms)) =
        (cheapest, fastest, one_at_a_time.moto_cpu_ms())
    else {
        return;
    };
    let ceiling = 1000.0 / mover_ms;
    println!(
        "moto spent {loop_ms:.2} ms of CPU per message on the loop and {mover_ms:.2} ms at least on \
         the mover's batches: with its core full, the mover could reach at most {ceiling:.0} msgs/s, \
         {:.1}x the loop; its fastest row reached {fastest:.0} msgs/s, {:.0} % of that",
        ceiling / one_at_a_time.rate(),
        100.0 * fastest / ceiling
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

/// Redrives the DLQ with the mover; returns how many messages it moved (all of them).
async fn mover_run(
    client: &Client,
    dlq: &str,
    to: &str,
    concurrency: usize,
    count: usize,
) -> usize {
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
    let report = mover::run(
        &source,
        &destination,
        &plan,
        &CancellationToken::new(),
        &Quiet,
    )
    .await;
    assert_eq!(report.counts.moved, count as u64, "{report:?}");
    count
}

/// The same work as a loop of one receive, one send and one delete per message; returns how many
/// messages it moved (all of them).
async fn one_at_a_time(client: &Client, dlq: &str, to: &str, count: usize) -> usize {
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
    moved
}

/// moto on a free loopback port, stopped when the returned `Moto` is dropped.
async fn start_moto() -> (String, Moto) {
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
            let pid = child.id().expect("moto is running");
            return (endpoint, Moto { _child: child, pid });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("moto did not start on {endpoint}");
}
