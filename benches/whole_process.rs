//! Whole-process figures, measured the way Lambda runs opsrelay and bills it, printed as one table:
//! init time (process start to the first `next` request) beside a `lambda_runtime` hello world and a
//! Python handler; throughput and CPU per event through the whole pipeline (parse, PostgreSQL
//! lookup, render, post to a sink that answers at once); peak memory of the real binary over a batch
//! of 10 and of 10,000; pacing against a Slack-like bucket; a burst of 1,000 events with digests on
//! and off ([`burst`]); and the deployment sizes.
//!
//! Run by `bash benches/perf.sh`, which builds the binaries, starts the test services and passes the
//! paths in `OPSRELAY_PERF_*`.

// The tests' stand-ins and relay builder.
#[path = "whole_process/builds.rs"]
mod builds;
#[path = "whole_process/burst.rs"]
mod burst;
#[path = "../tests/integration/common/mod.rs"]
mod common;
#[path = "whole_process/sources.rs"]
mod sources;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::http::{read_request, respond};
use common::runtime::{Posted, RuntimeApi};
use opsrelay::config::Settings;
use opsrelay::deadletter::DeadLetters;
use opsrelay::lambda::{Invocation, Metrics};
use opsrelay::rules::Rules;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The bundled rules (their `order.created` rule is what every event goes through), with
/// PostgreSQL's placeholder.
fn rules_text() -> String {
    include_str!("../src/defaults/rules.toml").replace("= ?", "= $1")
}

/// Rows in `orders`; events cycle through them.
const ORDERS: usize = 10_000;
/// Init samples per program, interleaved so that load from elsewhere falls on all of them alike.
const INIT_ROUNDS: usize = 20;
/// The largest SQS batch (with a batching window).
const BIG_BATCH: usize = 10_000;
const SMALL_BATCH: usize = 10;
const THROUGHPUT_RUNS: usize = 3;
/// The pacing stand-in: Slack's one post a second with short bursts, scaled up 50 times.
const PACE_RATE: f64 = 50.0;
const PACE_BUCKET: f64 = 10.0;
const PACE_BURST: u32 = 5;
const PACE_EVENTS: usize = 500;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run `bash benches/perf.sh`"))
}

/// What the programs under test need: the database, a rules file and where they are.
struct Setup {
    postgres_url: String,
    rules: PathBuf,
    dir: tempfile::TempDir,
    bootstrap: String,
    hello: String,
    python: Vec<String>,
}

impl Setup {
    async fn new() -> Self {
        let postgres_url = env("OPSRELAY_TEST_POSTGRES_URL");
        let pool = sqlx::PgPool::connect(&postgres_url).await.unwrap();
        sqlx::raw_sql(
            "DROP TABLE IF EXISTS orders;
             CREATE TABLE orders (id BIGINT PRIMARY KEY, customer TEXT, email TEXT,
               total NUMERIC(10, 2), currency TEXT, status TEXT, placed_at TIMESTAMPTZ, notes TEXT);
             INSERT INTO orders SELECT g, 'Customer ' || g, 'c' || g || '@example.com',
               (g % 500) + 0.99, 'EUR', 'paid', now(), CASE WHEN g % 3 = 0 THEN 'Gift wrap' END
               FROM generate_series(1, 10000) g;",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("rules.toml");
        std::fs::write(&rules, rules_text()).unwrap();
        Self {
            postgres_url,
            rules,
            dir,
            bootstrap: env("OPSRELAY_PERF_BOOTSTRAP"),
            hello: env("OPSRELAY_PERF_HELLO"),
            python: vec![
                env("OPSRELAY_PERF_PYTHON"),
                env("OPSRELAY_PERF_PYTHON_HANDLER"),
            ],
        }
    }

    /// The environment Lambda gives a function, plus opsrelay's settings.
    fn lambda_env(&self, api: &RuntimeApi, webhook: &str) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_LAMBDA_RUNTIME_API", api.address.clone()),
            ("AWS_LAMBDA_FUNCTION_NAME", "opsrelay".into()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".into()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "perf".into()),
            ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/opsrelay".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_DEFAULT_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "perf".into()),
            ("AWS_SECRET_ACCESS_KEY", "perf".into()),
            // Nothing leaves this machine: a DLQ send would go to the local AWS emulator.
            ("AWS_ENDPOINT_URL", env("OPSRELAY_TEST_AWS_ENDPOINT")),
            ("OPSRELAY_RULES", self.rules.display().to_string()),
            ("OPSRELAY_DATABASE_URL", self.postgres_url.clone()),
            ("OPSRELAY_SLACK_WEBHOOK_URL", webhook.into()),
            (
                "OPSRELAY_DLQ_URL",
                format!(
                    "{}/123456789012/ops-events-dlq",
                    env("OPSRELAY_TEST_AWS_ENDPOINT")
                ),
            ),
        ]
    }

    /// Starts `program` as Lambda would, its output (the logs) to a file.
    fn spawn(&self, program: &[String], env: &[(&str, String)]) -> tokio::process::Child {
        let log = std::fs::File::create(self.dir.path().join("process.log")).unwrap();
        tokio::process::Command::new(&program[0])
            .args(&program[1..])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program[0]))
    }

    /// Process start to the first `next` request.
    async fn init_time(&self, program: &[String]) -> Duration {
        let api = RuntimeApi::start().await;
        let env = self.lambda_env(&api, "https://localhost:9/services/T0/B0/perf");
        let started = Instant::now();
        let mut child = self.spawn(program, &env);
        let first = wait_for(Duration::from_secs(30), || {
            api.next_requested_at().first().copied()
        })
        .await
        .unwrap_or_else(|| panic!("{} never asked for an event", program[0]));
        child.kill().await.unwrap();
        first - started
    }
}

/// Polls `check` until it gives a value or `wait` passes.
async fn wait_for<T>(wait: Duration, check: impl Fn() -> Option<T>) -> Option<T> {
    let until = Instant::now() + wait;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() > until {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// An SQS event of `count` raw-delivery records (as a 10,000-record batch must be to fit Lambda's
/// 6 MB payload), with message ids unique to `batch`.
fn sqs_event(batch: &str, count: usize) -> serde_json::Value {
    let now = chrono::Utc::now().timestamp_millis().to_string();
    let records: Vec<_> = (0..count)
        .map(|i| {
            json!({
                "messageId": format!("{batch}-{i}"),
                "receiptHandle": format!("AQEB{batch}{i:08}"),
                "body": format!(r#"{{"type":"order.created","id":"{}"}}"#, i % ORDERS + 1),
                "attributes": {
                    "ApproximateReceiveCount": "1", "SentTimestamp": now,
                    "SenderId": "AIDAIENQZJOLO23YVJ4VO", "ApproximateFirstReceiveTimestamp": now
                },
                "messageAttributes": {}, "md5OfBody": "7b270e59b47ff90a553787216d55d91d",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:ops-events",
                "awsRegion": "us-east-1"
            })
        })
        .collect();
    json!({ "Records": records })
}

/// The records a batch response hands back to SQS.
fn failures(response: &serde_json::Value) -> usize {
    response["batchItemFailures"]
        .as_array()
        .map_or(usize::MAX, Vec::len)
}

/// A token bucket like Slack's: `rate` posts a second, up to `capacity` at once.
struct Bucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self, now: Instant) -> bool {
        let refill = (now - self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.capacity);
        self.at = now;
        let allowed = self.tokens >= 1.0;
        if allowed {
            self.tokens -= 1.0;
        }
        allowed
    }
}

#[derive(Default)]
struct SinkState {
    bucket: Option<Bucket>,
    accepted: Vec<Instant>,
    limited: usize,
}

/// A webhook stand-in on its own thread (so that its CPU can be told apart): answers 200 `ok` at
/// once, or with a bucket, 429 and `Retry-After: 1` to a post the bucket has no token for.
struct Sink {
    url: String,
    state: Arc<Mutex<SinkState>>,
    thread_id: u32,
}

impl Sink {
    fn start(bucket: Option<Bucket>) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(SinkState {
            bucket,
            ..SinkState::default()
        }));
        let shared = state.clone();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            tid_tx.send(thread_id()).unwrap();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(serve(stream, shared.clone()));
                }
            });
        });
        Self {
            url: format!("http://127.0.0.1:{port}/services/T0PERF/B0PERF/perf"),
            state,
            thread_id: tid_rx.recv().unwrap(),
        }
    }

    fn accepted(&self) -> Vec<Instant> {
        self.state.lock().unwrap().accepted.clone()
    }

    fn limited(&self) -> usize {
        self.state.lock().unwrap().limited
    }

    /// CPU the sink's thread has used.
    fn cpu(&self) -> Duration {
        cpu_of(&format!("/proc/self/task/{}/stat", self.thread_id))
    }
}

async fn serve(mut stream: TcpStream, state: Arc<Mutex<SinkState>>) {
    while read_request(&mut stream).await.is_some() {
        let now = Instant::now();
        let allowed = {
            let mut state = state.lock().unwrap();
            let allowed = state.bucket.as_mut().is_none_or(|b| b.take(now));
            if allowed {
                state.accepted.push(now);
            } else {
                state.limited += 1;
            }
            allowed
        };
        let response = if allowed {
            respond(200, "OK", &[], "ok")
        } else {
            respond(
                429,
                "Too Many Requests",
                &[("Retry-After", "1".into())],
                "rate_limited",
            )
        };
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// The calling thread's id.
fn thread_id() -> u32 {
    std::fs::read_link("/proc/thread-self")
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .parse()
        .unwrap()
}

/// User + system CPU from a `/proc/…/stat` file (clock ticks of 10 ms).
fn cpu_of(stat: &str) -> Duration {
    let text = std::fs::read_to_string(stat).unwrap();
    let fields: Vec<u64> = text
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|f| f.parse().unwrap())
        .collect();
    Duration::from_millis((fields[0] + fields[1]) * 10)
}

/// Peak resident memory of a process so far, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// One throughput run's figures.
struct Throughput {
    events_per_second: f64,
    cpu_per_event: Duration,
}

/// The whole pipeline in this process, as the Lambda runs it (one thread; the event's JSON parsed, then
/// every record looked up, rendered and posted), with the pacer out of the way: the sink has no
/// limit. CPU is this process's less the sink's.
async fn throughput(setup: &Setup, concurrency: usize, connections: u32) -> Throughput {
    let sink = Sink::start(None);
    let rules = Rules::parse("rules.toml", &rules_text()).unwrap();
    let mut settings = Settings::from_lookup(|_| None).unwrap();
    settings.concurrency = concurrency;
    settings.db.max_connections = connections;
    settings.slack.rate_per_second = 1e9;
    settings.slack.burst = 1_000;
    let dead_letters = DeadLetters::file(setup.dir.path().join("dead-letters.jsonl"));
    let relay = common::relay(
        settings,
        rules,
        Some(&setup.postgres_url),
        &sink.url,
        dead_letters,
    )
    .await;
    let deadline = SystemTime::now() + Duration::from_secs(600);
    let warm_up = serde_json::from_value(sqs_event("warm", 100)).unwrap();
    let warm_up = opsrelay::lambda::handle_any(&relay, warm_up, deadline, Metrics::Discard).await;
    assert_eq!(failures(&warm_up.unwrap()), 0);
    let mut runs = Vec::new();
    for run in 0..THROUGHPUT_RUNS {
        let text = sqs_event(&format!("run{concurrency}-{run}"), BIG_BATCH).to_string();
        let cpu = cpu_of("/proc/self/stat") - sink.cpu();
        let started = Instant::now();
        let event: Invocation = serde_json::from_str(&text).unwrap();
        let response = opsrelay::lambda::handle_any(&relay, event, deadline, Metrics::Discard)
            .await
            .unwrap();
        let elapsed = started.elapsed();
        let cpu = cpu_of("/proc/self/stat") - sink.cpu() - cpu;
        assert_eq!(failures(&response), 0, "every event is delivered");
        runs.push(Throughput {
            events_per_second: BIG_BATCH as f64 / elapsed.as_secs_f64(),
            cpu_per_event: cpu / BIG_BATCH as u32,
        });
    }
    assert_eq!(sink.accepted().len(), 100 + THROUGHPUT_RUNS * BIG_BATCH);
    runs.sort_by(|a, b| a.events_per_second.total_cmp(&b.events_per_second));
    runs.swap_remove(THROUGHPUT_RUNS / 2)
}

/// Peak memory of the real binary.
struct Memory {
    after_init: u64,
    batch_small: u64,
    batch_big: u64,
}

/// Runs the real binary through a batch of 10, then one of 10,000, reading its peak RSS after each.
/// The pacer's ceiling (1,000 posts a second) sets the pace of the big batch, not the memory.
async fn memory(setup: &Setup, digests: &str) -> Memory {
    let sink = Sink::start(None);
    let api = RuntimeApi::start().await;
    let mut env = setup.lambda_env(&api, &sink.url);
    env.push(("OPSRELAY_SLACK_RATE_PER_SECOND", "1000".into()));
    env.push(("OPSRELAY_SLACK_BURST", "1000".into()));
    env.push(("OPSRELAY_DIGESTS", digests.into()));
    let mut child = setup.spawn(std::slice::from_ref(&setup.bootstrap), &env);
    let pid = child.id().unwrap();
    wait_for(Duration::from_secs(30), || {
        api.next_requested_at().first().copied()
    })
    .await
    .expect("the bootstrap starts");
    let after_init = peak_rss(pid);
    let mut peaks = Vec::new();
    for (n, size) in [SMALL_BATCH, BIG_BATCH].into_iter().enumerate() {
        api.invoke(
            &format!("mem-{n}"),
            sqs_event(&format!("mem{n}"), size),
            Duration::from_secs(120),
        );
        let posted = api.posted(n + 1, Duration::from_secs(120)).await;
        match posted.get(n) {
            Some(Posted::Response { body, .. }) => assert_eq!(failures(body), 0),
            other => panic!("batch of {size}: {other:?}"),
        }
        peaks.push(peak_rss(pid));
    }
    child.kill().await.unwrap();
    Memory {
        after_init,
        batch_small: peaks[0],
        batch_big: peaks[1],
    }
}

/// Pacing: the real binary posts a burst of events for one webhook to a Slack-like bucket.
struct Pacing {
    accepted: usize,
    limited: usize,
    window: Duration,
    rate_used: f64,
}

async fn pacing(setup: &Setup) -> Pacing {
    let sink = Sink::start(Some(Bucket {
        rate: PACE_RATE,
        capacity: PACE_BUCKET,
        tokens: PACE_BUCKET,
        at: Instant::now(),
    }));
    let api = RuntimeApi::start().await;
    let mut env = setup.lambda_env(&api, &sink.url);
    env.push(("OPSRELAY_SLACK_RATE_PER_SECOND", PACE_RATE.to_string()));
    env.push(("OPSRELAY_SLACK_BURST", PACE_BURST.to_string()));
    // The pacer's own figure: with digests, the burst would be one post.
    env.push(("OPSRELAY_DIGESTS", "off".into()));
    let mut child = setup.spawn(std::slice::from_ref(&setup.bootstrap), &env);
    api.invoke(
        "pace",
        sqs_event("pace", PACE_EVENTS),
        Duration::from_secs(60),
    );
    let posted = api.posted(1, Duration::from_secs(90)).await;
    child.kill().await.unwrap();
    match posted.first() {
        Some(Posted::Response { body, .. }) => assert_eq!(failures(body), 0),
        other => panic!("pacing batch: {other:?}"),
    }
    let accepted = sink.accepted();
    let window = *accepted.last().unwrap() - accepted[0];
    // After the opening burst, posts come at the steady rate: compare that with the bucket's.
    let steady = (accepted.len() - PACE_BURST as usize) as f64 / window.as_secs_f64();
    Pacing {
        accepted: accepted.len(),
        limited: sink.limited(),
        window,
        rate_used: steady / PACE_RATE,
    }
}

/// The burst rows: digests on against the same binary with them off, and a lone event's latency.
fn burst_rows(on: &burst::BurstRun, off: &burst::BurstRun, lone: &[Duration]) {
    let events = burst::EVENTS as usize;
    let last = on.visible.values().max().copied().unwrap_or(Duration::MAX);
    let within = |run: &burst::BurstRun| run.visible.values().filter(|d| d.as_secs() < 60).count();
    let secs = |d: Duration| format!("{:.1} s", d.as_secs_f64());
    println!(
        "| burst of {events} to one webhook (template defaults, Slack 1 post/s): events visible within 60 s of their publish, digests on | {} (the last after {}) | all {events} | {} |",
        within(on),
        secs(last),
        verdict(within(on) == events)
    );
    println!(
        "| burst: posts, digests on | {} | ≤ 30 | {} |",
        on.posts,
        verdict(on.posts <= 30)
    );
    println!(
        "| burst: 429s and other faults / dead-lettered, digests on | {} / {} | 0 / 0 | {} |",
        on.limited,
        on.dead_lettered,
        verdict(on.limited == 0 && on.dead_lettered == 0)
    );
    // Off, the burst needs about 1,000 s: it is watched for the first minute, and its billing per
    // event delivered then stands for the rest.
    let per_event = off.billed.as_secs_f64() / off.visible.len().max(1) as f64;
    let off_total = per_event * events as f64;
    let ratio = off_total / on.billed.as_secs_f64();
    println!(
        "| burst: invocation time (what Lambda bills), digests on | {} over {} invocations | | |",
        secs(on.billed),
        on.invocations
    );
    println!(
        "| burst: invocation time, digests off: {} over {} invocations for the {} events delivered in the first {} s ({} within 60 s, {} posts, {} faults), {per_event:.2} s an event, for {events} | {off_total:.0} s | on ≥ 20× lower ({ratio:.0}×) | {} |",
        secs(off.billed),
        off.invocations,
        off.visible.len(),
        burst::OFF_WATCH.as_secs(),
        within(off),
        off.posts,
        off.limited,
        verdict(ratio >= 20.0)
    );
    let worst = lone.iter().max().copied().unwrap_or(Duration::MAX);
    println!(
        "| lone event, publish to post (median / worst of {}) | {} / {} | ≤ 3 s | {} |",
        lone.len(),
        secs(median(lone.to_vec())),
        secs(worst),
        verdict(worst <= Duration::from_secs(3) && !lone.is_empty())
    );
}

/// The database sources' rows: into the queue beside the mover, and the lag at a steady rate.
fn source_rows(f: &sources::SourceFigures) {
    println!(
        "| sources: rows from the standby into the queue ({} rows, batches of 1,000) | {:.0} rows/s | ≥ the redrive mover on the same moto ({:.0} msgs/s) | {} |",
        sources::THROUGHPUT_ROWS,
        f.rows_per_second,
        f.mover_per_second,
        verdict(f.rows_per_second >= f.mover_per_second)
    );
    let p = |q: f64| f.lags[((f.lags.len() as f64 - 1.0) * q) as usize];
    let target = sources::INTERVAL + Duration::from_secs(2);
    println!(
        "| sources: commit → event in the queue at {} rows/s, polled every {} s (p50 / p99 / max of {}) | {} / {} / {} | p99 ≤ interval + delay (0) + 2 s | {} |",
        sources::LAG_RATE,
        sources::INTERVAL.as_secs(),
        f.lags.len(),
        ms(p(0.5)),
        ms(p(0.99)),
        ms(*f.lags.last().unwrap()),
        verdict(p(0.99) <= target)
    );
}

/// This build beside `OPSRELAY_PERF_BASELINE_BOOTSTRAP`, in interleaved rounds: each round's
/// figures, then the medians' ratios.
async fn build_rows(setup: &Setup) {
    let baseline = env("OPSRELAY_PERF_BASELINE_BOOTSTRAP");
    let builds = [
        ("baseline", baseline.as_str()),
        ("this build", &setup.bootstrap),
    ];
    let mut runs: Vec<Vec<builds::Figures>> = vec![Vec::new(); builds.len()];
    for round in 0..builds::rounds() {
        for (samples, (label, bootstrap)) in runs.iter_mut().zip(builds) {
            let label = label.replace(' ', "-");
            samples.push(builds::figures(setup, &label, bootstrap, round).await);
        }
    }
    println!(
        "\n| build (real binary, defaults, {} batches of {}) | events/s | CPU per event | instructions per event (callgrind) |\n|---|---|---|---|",
        builds::BATCHES,
        builds::BATCH
    );
    let mut medians = Vec::new();
    for ((label, bootstrap), samples) in builds.iter().zip(&runs) {
        let column = |of: &dyn Fn(&builds::Figures) -> f64| {
            let mut values: Vec<f64> = samples.iter().map(of).collect();
            values.sort_by(f64::total_cmp);
            (values.clone(), values[values.len() / 2])
        };
        let (rates, rate) = column(&|f| f.events_per_second);
        let (cpus, cpu) = column(&|f| f.cpu_per_event.as_secs_f64() * 1e6);
        let (counts, count) = column(&|f| f.instructions_per_event);
        let list = |values: &[f64]| {
            let cells: Vec<String> = values.iter().map(|v| format!("{v:.0}")).collect();
            cells.join(", ")
        };
        println!(
            "| {label} ({bootstrap}) | {rate:.0} ({}) | {cpu:.0} µs ({}) | {count:.0} ({}) |",
            list(&rates),
            list(&cpus),
            list(&counts)
        );
        medians.push((rate, cpu, count));
    }
    let ((r0, c0, i0), (r1, c1, i1)) = (medians[0], medians[1]);
    println!(
        "| this build / baseline (medians) | {:.3} | {:.3} | {:.3} |",
        r1 / r0,
        c1 / c0,
        i1 / i0
    );
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let memory = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:").map(|m| m.trim().to_string()))
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    format!("{cores} cores ({cpu}), {memory} memory, load average {load}")
}

// One thread, as opsrelay-lambda runs.
#[tokio::main(flavor = "current_thread")]
async fn main() {
    opsrelay::telemetry::init(opsrelay::telemetry::LogFormat::Json);
    println!("Machine: {}", machine());
    let setup = Setup::new().await;
    if std::env::var("OPSRELAY_PERF_ONLY").as_deref() == Ok("throughput") {
        // Beside another build's figures (README, Performance: what a change costs).
        for (label, concurrency, connections) in [("defaults", 4, 2), ("concurrency 16", 16, 4)] {
            let run = throughput(&setup, concurrency, connections).await;
            println!(
                "| throughput, {label} | {:.0} events/s | {:.0} µs an event |",
                run.events_per_second,
                run.cpu_per_event.as_secs_f64() * 1e6
            );
        }
        return;
    }
    if std::env::var("OPSRELAY_PERF_ONLY").as_deref() == Ok("builds") {
        build_rows(&setup).await;
        return;
    }
    if std::env::var("OPSRELAY_PERF_ONLY").as_deref() == Ok("sources") {
        source_rows(&sources::figures(setup.dir.path()).await);
        return;
    }

    let programs = [
        ("opsrelay-lambda", vec![setup.bootstrap.clone()]),
        ("lambda_runtime hello world", vec![setup.hello.clone()]),
        (
            "Python handler (json, urllib, boto3 + SQS client)",
            setup.python.clone(),
        ),
    ];
    let mut init: Vec<Vec<Duration>> = vec![Vec::new(); programs.len()];
    for _ in 0..INIT_ROUNDS {
        for (samples, (_, program)) in init.iter_mut().zip(&programs) {
            samples.push(setup.init_time(program).await);
        }
    }
    let init: Vec<Duration> = init.into_iter().map(median).collect();

    let default_run = throughput(&setup, 4, 2).await;
    let tuned_run = throughput(&setup, 16, 4).await;
    let digest_memory = memory(&setup, "on").await;
    let memory = memory(&setup, "off").await;
    let pacing = pacing(&setup).await;
    let (on, lone) = burst::burst(&setup, true, Duration::from_secs(120)).await;
    let (off, _) = burst::burst(&setup, false, burst::OFF_WATCH).await;
    let bootstrap_size = std::fs::metadata(&setup.bootstrap).unwrap().len();
    let zip_size = std::fs::metadata(env("OPSRELAY_PERF_ZIP")).unwrap().len();
    let hello_size = std::fs::metadata(&setup.hello).unwrap().len();

    println!("\n| figure | measured | target | |\n|---|---|---|---|");
    let (ours, hello, python) = (init[0], init[1], init[2]);
    println!(
        "| init, {} (median of {INIT_ROUNDS}) | {} | ≤ 20 ms | {} |",
        programs[0].0,
        ms(ours),
        verdict(ours <= Duration::from_millis(20))
    );
    println!(
        "| init, {} | {} | opsrelay ≤ 2× ({:.1}×) | {} |",
        programs[1].0,
        ms(hello),
        ours.as_secs_f64() / hello.as_secs_f64(),
        verdict(ours <= hello * 2)
    );
    println!(
        "| init, {} | {} | opsrelay ≤ 1/10 (1/{:.0}) | {} |",
        programs[2].0,
        ms(python),
        python.as_secs_f64() / ours.as_secs_f64(),
        verdict(ours * 10 <= python)
    );
    for (label, run) in [
        ("defaults: concurrency 4, 2 connections", &default_run),
        ("concurrency 16, 4 connections", &tuned_run),
    ] {
        println!(
            "| throughput, batch of {BIG_BATCH}, {label} (median of {THROUGHPUT_RUNS}) | {:.0} events/s | ≥ 5,000 events/s | {} |",
            run.events_per_second,
            verdict(run.events_per_second >= 5_000.0)
        );
        println!(
            "| CPU per event, {label} | {:.0} µs | ≤ 200 µs | {} |",
            run.cpu_per_event.as_secs_f64() * 1e6,
            verdict(run.cpu_per_event <= Duration::from_micros(200))
        );
    }
    println!(
        "| peak RSS after init (real binary) | {} | | |",
        mb(memory.after_init)
    );
    println!(
        "| peak RSS, batch of {SMALL_BATCH} | {} | | |",
        mb(memory.batch_small)
    );
    println!(
        "| peak RSS, batch of {BIG_BATCH}, each event posted (OPSRELAY_DIGESTS=off) | {} | ≤ 40 MB | {} |",
        mb(memory.batch_big),
        verdict(memory.batch_big <= 40_000_000)
    );
    println!(
        "| peak RSS, batch of {BIG_BATCH} as one digest | {} | ≤ 40 MB | {} |",
        mb(digest_memory.batch_big),
        verdict(digest_memory.batch_big <= 40_000_000)
    );
    println!(
        "| pacing: {PACE_EVENTS} events, bucket {PACE_RATE}/s (capacity {PACE_BUCKET}), opsrelay burst {PACE_BURST}: 429s | {} | 0 | {} |",
        pacing.limited,
        verdict(pacing.limited == 0)
    );
    println!(
        "| pacing: rate used ({} posts in {:.2} s after the burst) | {:.1} % | ≥ 95 % | {} |",
        pacing.accepted,
        pacing.window.as_secs_f64(),
        pacing.rate_used * 100.0,
        verdict(pacing.rate_used >= 0.95)
    );
    burst_rows(&on, &off, &lone);
    source_rows(&sources::figures(setup.dir.path()).await);
    println!(
        "| size, stripped bootstrap | {} | ≤ 15 MB | {} |",
        mb(bootstrap_size),
        verdict(bootstrap_size <= 15_000_000)
    );
    println!(
        "| size, deployment zip (bootstrap + rules.toml) | {} | ≤ 6 MB | {} |",
        mb(zip_size),
        verdict(zip_size <= 6_000_000)
    );
    println!(
        "| size, hello world (same profile) | {} | | |",
        mb(hello_size)
    );
    println!("\nMachine at the end: {}", machine());
}
