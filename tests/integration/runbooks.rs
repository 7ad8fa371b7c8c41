//! The runbooks (`runbooks/*.md`) cannot drift from the tool: every block marked ```` ```sh runnable ````
//! runs with `bash -euo pipefail` against a local stack — queues in moto with real dead letters in
//! the DLQ, a rules file, a PostgreSQL database, a Slack stand-in — with the built `opsrelay` first on
//! PATH. The alarms of `infra/template.yaml` name runbooks that exist, the index lists every runbook,
//! and every runbook has its six parts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::slack::{Reply, SlackStandIn};
use crate::common::{Engine, event, fresh_database, queues, record, service, settings};
use aws_sdk_sqs::types::QueueAttributeName;
use opsrelay::pipeline::Outcome;
use tokio::time::Instant;

const RULES: &str = r#"
[rules."order.created"]
query = "SELECT id, customer, total FROM orders WHERE id = $1"
id_type = "integer"
text = "Order {{ event.id }} from {{ customer }}"

[[rules."order.created".blocks]]
type = "section"
text = "*{{ customer }}* ordered for *{{ total | default(\"—\") }}*"
"#;

/// The six parts every runbook has, in this order.
const PARTS: [&str; 6] = [
    "## Symptom and alarm",
    "## What it means",
    "## Diagnosis",
    "## Fix",
    "## Verify",
    "## What not to do",
];

/// Variables a runnable block may read: the ones the test (and the operator) exports.
const VARIABLES: [&str; 5] = [
    "QUEUE_URL",
    "DLQ_URL",
    "OPSRELAY_RULES",
    "EVENT_FILE",
    "ROW_FILE",
];

/// One ```` ```sh runnable ```` block.
struct Block {
    file: String,
    line: usize,
    code: String,
}

impl std::fmt::Display for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "runbooks/{} (block at line {})", self.file, self.line)
    }
}

fn runbook_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("runbooks")
}

/// Every runbook's file name and text, sorted by name.
fn runbooks() -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = std::fs::read_dir(runbook_dir())
        .expect("runbooks/ exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .map(|path| {
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&path).unwrap(),
            )
        })
        .collect();
    all.sort();
    all
}

/// The runnable blocks of one Markdown text (every other fenced block is skipped).
fn runnable_blocks_of(file: &str, text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    // The block being read, and whether it is runnable.
    let mut open: Option<(Block, bool)> = None;
    for (index, line) in text.lines().enumerate() {
        let fence = line.trim_start().starts_with("```");
        match open.take() {
            Some((block, true)) if fence => blocks.push(block),
            Some((_, false)) if fence => {}
            Some((mut block, runnable)) => {
                block.code.push_str(line);
                block.code.push('\n');
                open = Some((block, runnable));
            }
            None if fence => {
                let info: Vec<&str> = line
                    .trim_start()
                    .trim_start_matches('`')
                    .split_whitespace()
                    .collect();
                let block = Block {
                    file: file.to_string(),
                    line: index + 1,
                    code: String::new(),
                };
                open = Some((block, info == ["sh", "runnable"]));
            }
            None => {}
        }
    }
    assert!(
        open.is_none(),
        "runbooks/{file}: a code block is not closed"
    );
    blocks
}

fn runnable_blocks() -> Vec<Block> {
    runbooks()
        .iter()
        .flat_map(|(file, text)| runnable_blocks_of(file, text))
        .collect()
}

/// The names a block reads as `$NAME` or `${NAME…}`.
fn variables_read(code: &str) -> Vec<String> {
    let bytes = code.as_bytes();
    let mut names = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' {
            let start = if bytes.get(i + 1) == Some(&b'{') {
                i + 2
            } else {
                i + 1
            };
            let end = code[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(code.len(), |n| start + n);
            let name = &code[start..end];
            if name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
                names.push(name.to_string());
            }
            i = end.max(i + 1);
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn every_alarm_in_the_template_names_a_runbook_that_exists_and_the_index_maps_it() {
    let template =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("infra/template.yaml"))
            .unwrap();
    let index = std::fs::read_to_string(runbook_dir().join("README.md")).unwrap();
    let mut alarms = 0;
    for (n, line) in template.lines().enumerate() {
        if line.trim() == "Type: AWS::CloudWatch::Alarm" {
            alarms += 1;
            let name = template
                .lines()
                .nth(n - 1)
                .unwrap()
                .trim()
                .trim_end_matches(':');
            // Within this alarm's own lines: up to the next resource (indented by two spaces).
            let runbook = template
                .lines()
                .skip(n)
                .take_while(|l| !l.starts_with("  ") || l.starts_with("   "))
                .find_map(|l| l.trim().strip_prefix("Runbook: runbooks/"))
                .unwrap_or_else(|| panic!("alarm {name} names no runbook"));
            assert!(
                runbook_dir().join(runbook).is_file(),
                "alarm {name} names runbooks/{runbook}, which does not exist"
            );
            assert!(
                index.contains(&format!("`{name}`")) && index.contains(&format!("]({runbook})")),
                "runbooks/README.md does not map alarm {name} to {runbook}"
            );
        }
    }
    assert_eq!(alarms, 7, "the template's alarms");
}

#[test]
fn every_runbook_has_its_six_parts_a_runnable_block_and_a_line_in_the_index() {
    let index = std::fs::read_to_string(runbook_dir().join("README.md")).unwrap();
    let all = runbooks();
    assert!(all.len() >= 13, "runbooks: {:?}", all.len());
    for (file, text) in all.iter().filter(|(file, _)| file != "README.md") {
        let mut from = 0;
        for part in PARTS {
            let at = text[from..].find(&format!("{part}\n")).unwrap_or_else(|| {
                panic!("runbooks/{file} lacks `{part}` (or has it out of order)")
            });
            from += at + part.len();
        }
        assert!(
            !runnable_blocks_of(file, text).is_empty(),
            "runbooks/{file} has no runnable block"
        );
        assert!(
            index.contains(&format!("]({file})")),
            "runbooks/README.md does not link {file}"
        );
    }
}

#[test]
fn runnable_blocks_read_only_the_variables_an_operator_exports() {
    for block in runnable_blocks() {
        for name in variables_read(&block.code) {
            let assigned = block.code.contains(&format!("{name}="));
            assert!(
                VARIABLES.contains(&name.as_str())
                    || name.starts_with("OPSRELAY_")
                    || name.starts_with("AWS_")
                    || assigned,
                "{block} reads ${name}: runnable blocks read only {VARIABLES:?}, OPSRELAY_* and AWS_*"
            );
        }
        for literal in ["http://", "https://", "amazonaws.com", "127.0.0.1"] {
            assert!(
                !block.code.contains(literal),
                "{block} writes an address ({literal}); name it by a variable"
            );
        }
    }
}

#[test]
fn no_runbook_holds_a_webhook_url() {
    for (file, text) in runbooks() {
        assert!(
            !text.contains("hooks.slack.com/services"),
            "runbooks/{file} holds a webhook URL: name the variable or the secret instead"
        );
    }
}

/// The local stack one block runs in: fresh queues with dead letters of several kinds, a waiting
/// event on the source queue, and the files and variables the runbooks name.
struct Stack {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

async fn stack(database_url: &str, slack: &SlackStandIn) -> Stack {
    let queues = queues(5, 30).await;
    // Real dead letters, made by the relay: a revoked webhook, a malformed body, an unknown type, a
    // record that is missing past the grace period.
    let revoked = SlackStandIn::start(vec![Reply::Status(404, "no_service")]).await;
    let relay = crate::common::relay(
        settings(&[]),
        crate::common::rules(RULES),
        Some(database_url),
        &revoked.url,
        queues.dead_letters(),
    )
    .await;
    let missing = r#"{"type": "order.created", "id": 999, "occurred_at": "2020-01-01T00:00:00Z"}"#;
    let results = relay
        .run_batch(
            &[
                record("m-1", &event("order.created", "42"), 1),
                record("m-2", "this is not an event", 1),
                record("m-3", &event("order.shipped", "7"), 1),
                record("m-4", missing, 1),
            ],
            Instant::now() + Duration::from_secs(20),
        )
        .await;
    for result in &results {
        assert!(
            matches!(result.outcome, Outcome::DeadLettered(_)),
            "setting up the DLQ: {} was {:?}",
            result.message_id,
            result.outcome
        );
    }
    // One that SQS moved without a reason, and one event waiting on the source queue.
    for (url, body) in [
        (&queues.dlq, event("order.created", "42")),
        (&queues.source, event("order.created", "42")),
    ] {
        queues
            .client
            .send_message()
            .queue_url(url)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }
    let depth = queues
        .client
        .get_queue_attributes()
        .queue_url(&queues.dlq)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&QueueAttributeName::ApproximateNumberOfMessages]
        .clone();
    assert_eq!(depth, "5", "dead letters in the local DLQ");

    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let rules = file("rules.toml", RULES);
    let event_file = file("event.json", &event("order.created", "42"));
    let row_file = file(
        "row.json",
        r#"{"id": 42, "customer": "Ada & Co", "total": "129.90"}"#,
    );
    let bin = Path::new(env!("CARGO_BIN_EXE_opsrelay")).parent().unwrap();
    let system_path = std::env::var("PATH").unwrap_or_default();
    // The local endpoint substituted for AWS's: this awscli (v1) does not read AWS_ENDPOINT_URL, so
    // `aws` is a shim that passes it as --endpoint-url.
    let real_aws = std::env::split_paths(&system_path)
        .map(|dir| dir.join("aws"))
        .find(|candidate| candidate.is_file())
        .expect("the aws CLI is installed (pip install awscli)");
    let shims = dir.path().join("shims");
    std::fs::create_dir(&shims).unwrap();
    let shim = shims.join("aws");
    std::fs::write(
        &shim,
        format!(
            "#!/bin/sh\nexec '{}' --endpoint-url \"$AWS_ENDPOINT_URL\" \"$@\"\n",
            real_aws.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&shim, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}:{system_path}", shims.display(), bin.display());
    let env = [
        ("PATH", path),
        ("HOME", dir.path().display().to_string()),
        ("QUEUE_URL", queues.source.clone()),
        ("DLQ_URL", queues.dlq.clone()),
        ("OPSRELAY_QUEUE_URL", queues.source.clone()),
        ("OPSRELAY_DLQ_URL", queues.dlq.clone()),
        ("OPSRELAY_RULES", rules),
        ("OPSRELAY_DATABASE_URL", database_url.to_string()),
        ("OPSRELAY_DB_CA_FILE", service("OPSRELAY_TEST_CA_FILE")),
        ("OPSRELAY_SLACK_WEBHOOK_URL", slack.url.clone()),
        ("EVENT_FILE", event_file),
        ("ROW_FILE", row_file),
        ("AWS_ENDPOINT_URL", service("OPSRELAY_TEST_AWS_ENDPOINT")),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_DEFAULT_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_PAGER", String::new()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Stack { dir, env }
}

/// Runs one block in a fresh stack; the failure, if any, with the block's output.
async fn run(block: &Block, database_url: &str, slack: &SlackStandIn) -> Option<String> {
    let stack = stack(database_url, slack).await;
    let child = tokio::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &block.code])
        .current_dir(stack.dir.path())
        .env_clear()
        .envs(stack.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .kill_on_drop(true)
        .output();
    let output = match tokio::time::timeout(Duration::from_secs(120), child).await {
        Ok(output) => output.expect("bash runs"),
        Err(_) => return Some(format!("{block} did not finish in 120 s:\n{}", block.code)),
    };
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(
        !text.contains(&slack.url),
        "{block} printed the webhook URL:\n{text}"
    );
    (!output.status.success()).then(|| {
        format!(
            "{block} exited with {}:\n{}\n--- output ---\n{text}",
            output.status, block.code
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_runnable_block_in_the_runbooks_succeeds_against_the_local_stack() {
    let blocks = runnable_blocks();
    assert!(
        blocks.len() >= 30,
        "runnable blocks found: {}",
        blocks.len()
    );
    let database_url = fresh_database(Engine::Postgres).await;
    let slack = SlackStandIn::start(vec![]).await;
    let mut failures = Vec::new();
    for block in &blocks {
        if let Some(failure) = run(block, &database_url, &slack).await {
            failures.push(failure);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} runnable blocks failed:\n\n{}",
        failures.len(),
        blocks.len(),
        failures.join("\n\n")
    );
}
