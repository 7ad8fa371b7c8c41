//! `opsrelay dlq` as an on-call engineer runs it, against moto: what each command prints, its exit
//! code, and what it leaves on the queues.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use crate::common::{Queues, drain, queues};
use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use serde_json::{Value, json};

/// The `opsrelay` binary with the SDK pointed at moto.
fn command(args: &[&str], dir: &Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_opsrelay"));
    command.args(args);
    pointed_at_moto(command, dir)
}

/// [`command`] on a full disk, as RLIMIT_FSIZE makes one: a write past `kib` KiB (bash's unit)
/// fails with EFBIG. SIGXFSZ is ignored so that the write fails instead of the signal killing the
/// process; an ignored signal stays ignored across exec.
fn on_a_full_disk(args: &[&str], dir: &Path, kib: u32) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("/bin/bash");
    command
        .arg("-c")
        .arg(format!("trap '' XFSZ; ulimit -f {kib}; exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_opsrelay"))
        .args(args);
    pointed_at_moto(command, dir)
}

/// `command` run in `dir` with no environment but the SDK's settings for moto.
fn pointed_at_moto(mut command: tokio::process::Command, dir: &Path) -> tokio::process::Command {
    command
        .current_dir(dir)
        .env_clear()
        .env(
            "AWS_ENDPOINT_URL",
            crate::common::service("OPSRELAY_TEST_AWS_ENDPOINT"),
        )
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test");
    command
}

/// `dlq export --delete` of `dlq` to `dlq_export.jsonl`.
fn export_and_delete(dlq: &str) -> [&str; 7] {
    [
        "dlq",
        "export",
        "--dlq",
        dlq,
        "--to",
        "dlq_export.jsonl",
        "--delete",
    ]
}

/// Runs the `opsrelay` binary with the SDK pointed at moto.
async fn opsrelay(args: &[&str], dir: &Path) -> Output {
    command(args, dir).output().await.expect("run opsrelay")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).to_string()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

/// Dead-letters `count` messages as opsrelay does: type `order.created`, a permanent Slack failure.
async fn dead_letter(queues: &Queues, count: usize) {
    for first in (0..count).step_by(10) {
        let entries = (first..count.min(first + 10)).map(dead_letter_entry);
        let sent = queues
            .client
            .send_message_batch()
            .queue_url(&queues.dlq)
            .set_entries(Some(entries.collect()))
            .send()
            .await
            .unwrap();
        assert!(sent.failed().is_empty(), "{:?}", sent.failed());
    }
}

/// The `i`th dead letter of [`dead_letter`].
fn dead_letter_entry(i: usize) -> SendMessageBatchRequestEntry {
    let failure = json!({
        "class": "permanent", "code": "slack_rejected",
        "reason": "posting to destination `OPSRELAY_SLACK_WEBHOOK_URL` failed: Slack answered 404 `no_service`",
        "event_type": "order.created", "source_message_id": format!("source-{i}"),
        "receive_count": 1, "first_failed_at": "2026-11-30T08:00:00Z",
        "failed_at": "2026-11-30T08:00:00Z"
    });
    let attribute = MessageAttributeValue::builder()
        .data_type("String")
        .string_value(failure.to_string())
        .build()
        .unwrap();
    SendMessageBatchRequestEntry::builder()
        .id(i.to_string())
        .message_body(json!({"type": "order.created", "id": i.to_string()}).to_string())
        .message_attributes("opsrelay-failure", attribute)
        .build()
        .unwrap()
}

/// Has SQS itself move `count` messages of type `user.signup` to the DLQ, after their one allowed
/// receive: they carry no reason.
async fn let_sqs_dead_letter(queues: &Queues, count: usize) {
    for i in 0..count {
        let body = json!({"type": "user.signup", "id": i.to_string()}).to_string();
        let send = queues.client.send_message().queue_url(&queues.source);
        send.message_body(body).send().await.unwrap();
    }
    for _ in 0..2 {
        let receive = queues.client.receive_message().queue_url(&queues.source);
        let receive = receive.max_number_of_messages(10).visibility_timeout(0);
        receive.send().await.unwrap();
    }
}

#[tokio::test]
async fn peek_lists_messages_without_consuming_them() {
    let queues = queues(1, 30).await;
    dead_letter(&queues, 15).await;
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "dlq",
        "peek",
        "--dlq",
        &queues.dlq,
        "--max",
        "5",
        "--output",
        "json",
    ];
    let out = opsrelay(&args, dir.path()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let listed: Vec<Value> = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(listed.len(), 5);
    for message in &listed {
        assert_eq!(message["event_type"], "order.created");
        assert_eq!(message["class"], "permanent");
        assert_eq!(message["code"], "slack_rejected");
        assert!(message["reason"].as_str().unwrap().contains("no_service"));
        assert!(message["age_seconds"].is_u64() && message["receive_count"] == 1);
    }
    assert_eq!(
        drain(&queues.client, &queues.dlq).await.len(),
        15,
        "every message is visible again at once, none deleted"
    );
}

#[tokio::test]
async fn ctrl_c_stops_a_peek_which_gives_back_every_message_it_read() {
    let queues = queues(1, 30).await;
    dead_letter(&queues, 2_000).await;
    let dir = tempfile::tempdir().unwrap();
    let args = ["dlq", "peek", "--dlq", &queues.dlq, "--max", "2000"];
    let child = command(&args, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupted mid-way: once it holds some of the messages, not before it reads (the Ctrl-C
    // handler is set up by then) and not after it read them all.
    let dlq = opsrelay::redrive::queue::Queue::open(&queues.client, &queues.dlq)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        let in_flight = dlq.depth().await.unwrap().in_flight;
        if in_flight > 0 {
            assert!(in_flight < 2_000, "the peek read everything before Ctrl-C");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the peek read nothing"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = child.id().expect("peek still runs").to_string();
    let interrupted = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(stderr(&out).contains("partial"), "{}", stderr(&out));
    assert_eq!(
        drain(&queues.client, &queues.dlq).await.len(),
        2_000,
        "every message is visible again at once"
    );
}

#[tokio::test]
async fn stats_count_by_event_type_and_failure_and_show_sqs_moves_as_no_reason() {
    let queues = queues(1, 30).await;
    dead_letter(&queues, 4).await;
    let_sqs_dead_letter(&queues, 3).await;
    let dir = tempfile::tempdir().unwrap();
    let args = ["dlq", "stats", "--dlq", &queues.dlq, "--output", "json"];
    let out = opsrelay(&args, dir.path()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let stats: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(stats["depth"]["visible"], 7);
    assert_eq!(stats["scanned"], 7);
    assert!(stats["oldest_age_seconds"].as_u64().unwrap() > 0);
    assert_eq!(
        stats["by_event_type"],
        json!({"order.created": 4, "user.signup": 3})
    );
    let failures: Vec<(String, String, u64)> = stats["by_failure"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let text = |k: &str| f[k].as_str().unwrap().to_string();
            (text("class"), text("code"), f["count"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(
        failures,
        [
            ("permanent".into(), "slack_rejected".into(), 4),
            ("no reason".into(), "no reason".into(), 3)
        ]
    );
}

#[tokio::test]
async fn redrive_off_a_terminal_prints_plain_progress_lines_then_what_moved() {
    let queues = queues(5, 30).await;
    dead_letter(&queues, 12).await;
    let dir = tempfile::tempdir().unwrap();
    let out = opsrelay(&["dlq", "redrive", "--dlq", &queues.dlq], dir.path()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    assert!(
        printed.contains(&format!(
            "Moved 12 messages to {}; of the 12 read, 0 not matching, 0 failed.",
            queues.source
        )),
        "{printed}"
    );
    let progress = stderr(&out);
    assert!(
        progress
            .lines()
            .any(|l| l.starts_with("moved ") && l.ends_with("not matching, 0 failed")),
        "{progress}"
    );
    assert_eq!(drain(&queues.client, &queues.source).await.len(), 12);
}

#[tokio::test]
async fn a_dry_run_prints_what_would_move_and_moves_nothing() {
    let queues = queues(5, 30).await;
    dead_letter(&queues, 3).await;
    let dir = tempfile::tempdir().unwrap();
    let args = ["dlq", "redrive", "--dlq", &queues.dlq, "--dry-run"];
    let out = opsrelay(&args, dir.path()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    assert!(printed.contains("slack_rejected"), "{printed}");
    assert!(
        printed.contains("Would move 3 of 3 messages read"),
        "{printed}"
    );
    assert!(drain(&queues.client, &queues.source).await.is_empty());
}

#[tokio::test]
async fn export_with_delete_writes_one_line_a_message_and_empties_the_dlq() {
    let queues = queues(5, 30).await;
    dead_letter(&queues, 12).await;
    let dir = tempfile::tempdir().unwrap();
    let out = opsrelay(&export_and_delete(&queues.dlq), dir.path()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = std::fs::read_to_string(dir.path().join("dlq_export.jsonl")).unwrap();
    let lines: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 12);
    assert!(
        lines
            .iter()
            .all(|l| l["failure"]["code"] == "slack_rejected")
    );
    assert!(drain(&queues.client, &queues.dlq).await.is_empty());
}

#[tokio::test]
async fn an_export_that_fills_the_disk_cuts_its_half_line_off_and_deletes_nothing() {
    let queues = queues(5, 30).await;
    dead_letter(&queues, 12).await;
    let dir = tempfile::tempdir().unwrap();
    let earlier = "{\"body\":\"an earlier export's line\"}\n";
    std::fs::write(dir.path().join("dlq_export.jsonl"), earlier).unwrap();
    let args = export_and_delete(&queues.dlq);
    // Past 1 KiB: part way through the first batch's lines.
    let out = on_a_full_disk(&args, dir.path(), 1).output().await.unwrap();

    assert!(!out.status.success(), "{}", stdout(&out));
    let said = stderr(&out);
    assert!(said.contains("writing dlq_export.jsonl failed"), "{said}");
    assert!(said.contains("free disk space"), "{said}");
    let file = std::fs::read_to_string(dir.path().join("dlq_export.jsonl")).unwrap();
    assert_eq!(file, earlier, "the part of a line written was not cut off");
    assert_eq!(drain(&queues.client, &queues.dlq).await.len(), 12);
}

#[tokio::test]
async fn the_local_dead_letter_file_imports_into_a_queue_once() {
    let queues = queues(5, 30).await;
    let dir = tempfile::tempdir().unwrap();
    let local = opsrelay(&["local", "--dead-letters", "dead.jsonl"], dir.path()).await;
    assert!(local.status.success(), "{}", stderr(&local));
    let file = std::fs::read_to_string(dir.path().join("dead.jsonl")).unwrap();
    let mut bodies: Vec<String> = file
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["body"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    bodies.sort();

    let import = [
        "dlq",
        "import",
        "--from",
        "dead.jsonl",
        "--to",
        &queues.source,
    ];
    let out = opsrelay(&import, dir.path()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let mut imported: Vec<String> = drain(&queues.client, &queues.source)
        .await
        .iter()
        .map(|m| m.body().unwrap().to_string())
        .collect();
    imported.sort();
    assert_eq!(imported, bodies);

    let again = opsrelay(&import, dir.path()).await;
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("Skipping 3 of 3 lines"),
        "{}",
        stderr(&again)
    );
    assert!(
        stdout(&again).contains("Moved 0 messages"),
        "{}",
        stdout(&again)
    );
}

#[tokio::test]
async fn a_queue_that_does_not_exist_is_reported_as_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let missing = format!(
        "{}/123456789012/{}",
        crate::common::service("OPSRELAY_TEST_AWS_ENDPOINT"),
        crate::common::unique("missing")
    );
    let out = opsrelay(&["dlq", "stats", "--dlq", &missing], dir.path()).await;
    assert_eq!(out.status.code(), Some(1));
    let printed = stderr(&out);
    assert!(printed.contains("sqs:GetQueueAttributes on"), "{printed}");
    assert!(printed.contains("queue not found"), "{printed}");
}

#[tokio::test]
async fn an_import_from_a_missing_file_names_it_and_says_what_to_check() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "dlq",
        "import",
        "--from",
        "dlq_export.jsonl",
        "--to",
        "https://sqs.example/1/q",
    ];
    let out = opsrelay(&args, dir.path()).await;
    assert_eq!(out.status.code(), Some(1));
    let printed = stderr(&out);
    assert!(
        printed.contains("reading dlq_export.jsonl failed"),
        "{printed}"
    );
    assert!(printed.contains("Check the path"), "{printed}");
}

#[tokio::test]
async fn native_redrive_refuses_the_filters_it_cannot_apply() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "dlq",
        "redrive",
        "--dlq",
        "https://sqs.example/1/q",
        "--native",
        "--reason",
        "x",
    ];
    let out = opsrelay(&args, dir.path()).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot be used with"),
        "{}",
        stderr(&out)
    );
}

/// A FIFO queue holding 25 messages in one group; its URL.
async fn fifo_queue_of_one_group() -> String {
    let client = aws_sdk_sqs::Client::new(&crate::common::sdk().await);
    let url = client
        .create_queue()
        .queue_name(format!("{}.fifo", crate::common::unique("fifo-dlq")))
        .attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    for seq in 0..25 {
        client
            .send_message()
            .queue_url(&url)
            .message_body(json!({"type": "order.created", "id": seq.to_string()}).to_string())
            .message_group_id("orders")
            .message_deduplication_id(format!("d-{seq}"))
            .send()
            .await
            .unwrap();
    }
    url
}

#[tokio::test]
async fn stats_of_a_fifo_dlq_say_that_its_groups_hid_messages_and_how_to_see_them() {
    let dlq = fifo_queue_of_one_group().await;
    let dir = tempfile::tempdir().unwrap();
    let out = opsrelay(&["dlq", "stats", "--dlq", &dlq], dir.path()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let warning = stderr(&out);
    assert!(
        warning.contains("Read 10 of the 25 messages") && warning.contains("--delete"),
        "{warning}"
    );
}

#[tokio::test]
async fn an_export_of_a_fifo_dlq_that_keeps_its_messages_fails_as_not_a_whole_copy() {
    let dlq = fifo_queue_of_one_group().await;
    let dir = tempfile::tempdir().unwrap();
    let copy = ["dlq", "export", "--dlq", &dlq, "--to", "dlq_export.jsonl"];
    let out = opsrelay(&copy, dir.path()).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("not a copy of the whole queue"));
    let out = opsrelay(&export_and_delete(&dlq), dir.path()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = std::fs::read_to_string(dir.path().join("dlq_export.jsonl")).unwrap();
    assert_eq!(
        lines.lines().count(),
        10 + 25,
        "the partial copy, then every message"
    );
}
