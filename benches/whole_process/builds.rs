//! Two builds side by side in one run (`OPSRELAY_PERF_ONLY=builds`, the other build's bootstrap in
//! `OPSRELAY_PERF_BASELINE_BOOTSTRAP`): what a change costs non-burst traffic at the defaults
//! (concurrency 4, 2 connections, digests on). The traffic is batches of `BATCH` events a second
//! apart, and the pacer takes 1,000 posts at once and 1,000 a second (its ceiling), so that it
//! never holds a post back and no digest forms (`OPSRELAY_DIGEST_WITHIN_MS` at its ceiling too).
//! Both builds run the real binary through the Runtime API, in interleaved rounds:
//! - natively: a warm-up batch of 100, then `BATCHES` timed batches (events/s while a batch runs,
//!   and the process's CPU per event from `/proc`);
//! - under valgrind's callgrind, whose instruction count barely moves with the machine's load: one
//!   process handles one batch, another `1 + BATCHES`, and the difference over `BATCHES × BATCH`
//!   events is what one more event costs, with init, connecting and the shutdown taken out. The
//!   callgrind files stay in `target/perf/callgrind/` for `callgrind_annotate` (a build with
//!   symbols: `CARGO_PROFILE_RELEASE_STRIP=false`).

use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use super::common::runtime::{Posted, RuntimeApi};
use super::{Setup, Sink, cpu_of, failures, sqs_event, wait_for};

pub const BATCH: usize = 1_000;
pub const BATCHES: usize = 10;
/// Rounds of both builds, interleaved (`OPSRELAY_PERF_ROUNDS` to change).
pub fn rounds() -> usize {
    std::env::var("OPSRELAY_PERF_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3)
}
/// Between two batches: the pacer's bucket fills again.
const PAUSE: Duration = Duration::from_millis(1_100);

/// One build's figures in one round.
#[derive(Clone, Copy, Debug)]
pub struct Figures {
    pub events_per_second: f64,
    pub cpu_per_event: Duration,
    pub instructions_per_event: f64,
}

/// A process of the real binary (wrapped in `wrapper`, if any) waiting for its first event.
async fn start(
    setup: &Setup,
    api: &RuntimeApi,
    sink: &Sink,
    wrapper: &[String],
    bootstrap: &str,
) -> tokio::process::Child {
    let mut env = setup.lambda_env(api, &sink.url);
    env.push(("OPSRELAY_SLACK_RATE_PER_SECOND", "1000".into()));
    env.push(("OPSRELAY_SLACK_BURST", "1000".into()));
    env.push(("OPSRELAY_DIGEST_WITHIN_MS", "600000".into()));
    let mut program = wrapper.to_vec();
    program.push(bootstrap.into());
    let child = setup.spawn(&program, &env);
    wait_for(Duration::from_secs(300), || {
        api.next_requested_at().first().copied()
    })
    .await
    .unwrap_or_else(|| panic!("{bootstrap} never asked for an event"));
    child
}

/// Hands the process behind `api` its `n`th batch (from 0), of `size` events; waits for the answer.
async fn batch(api: &RuntimeApi, n: usize, size: usize) {
    let hour = Duration::from_secs(3600);
    let id = format!("batch-{n}");
    api.invoke(&id, sqs_event(&id, size), hour);
    match api.posted(n + 1, hour).await.get(n) {
        Some(Posted::Response { body, .. }) => assert_eq!(failures(body), 0),
        other => panic!("batch of {size}: {other:?}"),
    }
}

/// Events/s and CPU per event of a warm process of `bootstrap` over `BATCHES` batches.
async fn native(setup: &Setup, bootstrap: &str) -> (f64, Duration) {
    let (sink, api) = (Sink::start(None), RuntimeApi::start().await);
    let mut child = start(setup, &api, &sink, &[], bootstrap).await;
    let stat = format!("/proc/{}/stat", child.id().expect("running"));
    batch(&api, 0, 100).await;
    let (cpu, mut busy) = (cpu_of(&stat), Duration::ZERO);
    for n in 1..=BATCHES {
        tokio::time::sleep(PAUSE).await;
        let started = Instant::now();
        batch(&api, n, BATCH).await;
        busy += started.elapsed();
    }
    let cpu = cpu_of(&stat) - cpu;
    child.kill().await.unwrap();
    let events = (BATCHES * BATCH) as u32;
    (f64::from(events) / busy.as_secs_f64(), cpu / events)
}

/// Instructions a process of `bootstrap` executes from its start to its end, handling `batches`
/// batches.
async fn instructions(setup: &Setup, bootstrap: &str, batches: usize, run: &str) -> u64 {
    let (sink, api) = (Sink::start(None), RuntimeApi::start().await);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/perf/callgrind");
    std::fs::create_dir_all(&dir).expect("a directory for callgrind's files");
    let out = dir.join(format!("callgrind.{run}"));
    let valgrind = [
        "valgrind".to_string(),
        "--tool=callgrind".into(),
        format!("--callgrind-out-file={}", out.display()),
    ];
    let mut child = start(setup, &api, &sink, &valgrind, bootstrap).await;
    for n in 0..batches {
        if n > 0 {
            tokio::time::sleep(PAUSE).await;
        }
        batch(&api, n, BATCH).await;
    }
    // On SIGTERM valgrind ends the program and writes the counts.
    let pid = child.id().expect("running").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    assert!(killed.is_ok_and(|s| s.success()), "kill -TERM {pid}");
    child.wait().await.expect("valgrind ends");
    totals(&out)
}

/// The `totals:` (or `summary:`) line of a callgrind output file.
fn totals(path: &Path) -> u64 {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("callgrind wrote no {}: {e}", path.display()));
    text.lines()
        .find_map(|line| {
            let value = line
                .strip_prefix("totals:")
                .or(line.strip_prefix("summary:"))?;
            value.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no totals in {}", path.display()))
}

/// The figures of `bootstrap` in round `round` (`label` names its callgrind files).
pub async fn figures(setup: &Setup, label: &str, bootstrap: &str, round: usize) -> Figures {
    let (events_per_second, cpu_per_event) = native(setup, bootstrap).await;
    let run = |batches| format!("{label}-{round}-{batches}");
    let one = instructions(setup, bootstrap, 1, &run(1)).await;
    let more = instructions(setup, bootstrap, 1 + BATCHES, &run(1 + BATCHES)).await;
    Figures {
        events_per_second,
        cpu_per_event,
        instructions_per_event: (more as f64 - one as f64) / (BATCHES * BATCH) as f64,
    }
}
