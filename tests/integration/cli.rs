//! The operator CLI as an operator runs it: the local run on embedded defaults, `check` and `render`.

use std::process::{Command, Output};

use crate::common::slack::{Reply, SlackStandIn};

fn opsrelay(args: &[&str], env: &[(&str, &str)], dir: &std::path::Path) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_opsrelay"));
    command
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("run opsrelay")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

#[test]
fn the_local_run_polls_the_bundled_database_as_a_source_and_remembers_its_cursor_beside_the_dead_letters()
 {
    let dir = tempfile::tempdir().unwrap();
    let first = text(&opsrelay(&["local"], &[], dir.path()).stdout);
    assert!(
        first.contains("Source free_signups: 2 sent (0 late), caught up"),
        "{first}"
    );
    for name in ["Katherine Johnson", "Margaret Hamilton"] {
        let posted = format!("\"text\": \"{name} signed up on the free plan\"");
        assert!(first.contains(&posted), "{name} in {first}");
    }
    let cursors = std::fs::read_to_string(dir.path().join("opsrelay-cursors.json")).unwrap();
    assert!(cursors.contains("\"kind\": \"id\""), "{cursors}");
    let again = text(&opsrelay(&["local"], &[], dir.path()).stdout);
    assert!(again.contains("Source free_signups: 0 sent"), "{again}");
    assert!(again.contains("Summary: 4 delivered"), "{again}");
}

#[test]
fn a_local_source_whose_cursor_sqlite_cannot_give_stops_with_the_fix_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let rules = format!(
        "{}\n[sources.\"late\"]\nevent_type = \"order.created\"\nquery = \"SELECT id, placed_at AS ts FROM orders\"\ncursor = \"timestamp\"\n",
        opsrelay::local::EMBEDDED_RULES
    );
    std::fs::write(dir.path().join("rules.toml"), rules).unwrap();
    let out = opsrelay(&["local"], &[("OPSRELAY_RULES", "rules.toml")], dir.path());
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("Source late: 0 sent (0 late), stopped: source `late`: a cursor of kind timestamp needs PostgreSQL, MySQL or MariaDB, and the database is sqlite: choose cursor = \"id\""),
        "{stdout}"
    );
}

#[test]
fn the_local_run_delivers_the_samples_and_dead_letters_the_poison_ones_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let out = opsrelay(&["local"], &[], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("Summary: 6 delivered, 0 retried, 3 dead-lettered"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Smith &amp; Sons &lt;!channel&gt;"),
        "values are escaped: {stdout}"
    );
    let dead = std::fs::read_to_string(dir.path().join("opsrelay-dead-letters.jsonl")).unwrap();
    let codes: Vec<String> = dead
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["failure"]["code"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(codes.len(), 3);
    for code in ["malformed_event", "unknown_event_type", "record_not_found"] {
        assert!(
            codes.iter().any(|c| c == code),
            "{code} missing in {codes:?}"
        );
    }
}

#[test]
fn the_local_run_appends_no_dead_letter_after_an_unfinished_line_and_counts_them_undelivered() {
    let dir = tempfile::tempdir().unwrap();
    let unfinished = "{\"message_id\":\"killed while writi";
    let file = dir.path().join("opsrelay-dead-letters.jsonl");
    std::fs::write(&file, unfinished).unwrap();
    let out = opsrelay(&["local"], &[], dir.path());
    assert!(!out.status.success());
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("0 dead-lettered, 3 undelivered"),
        "{stdout}"
    );
    let stderr = text(&out.stderr);
    assert!(stderr.contains("does not end with a newline"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), unfinished);
}

#[tokio::test]
async fn the_local_run_posts_when_a_webhook_is_set_and_never_logs_it() {
    let slack = SlackStandIn::start(vec![Reply::Status(503, "service_unavailable")]).await;
    let dir = tempfile::tempdir().unwrap();
    let url = slack.url.clone();
    let path = dir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        opsrelay(
            &["local"],
            &[
                ("OPSRELAY_SLACK_WEBHOOK_URL", &url),
                ("OPSRELAY_LOG", "debug"),
            ],
            &path,
        )
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        slack.delivered().len(),
        6,
        "posted after one 503 (4 samples, 2 from the source)"
    );
    let all = text(&out.stdout) + &text(&out.stderr);
    assert!(all.contains("Retrying the Slack post."), "{all}");
    assert!(
        !all.contains(&slack.url) && !all.contains("B0SECRET"),
        "the webhook URL leaked: {all}"
    );
}

#[test]
fn check_names_the_file_the_rule_the_key_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.toml"),
        "[rules.\"order.created\"]\ntext = \"x\"\nquery = \"SELECT 1\"\n",
    )
    .unwrap();
    let out = opsrelay(&["check"], &[("OPSRELAY_RULES", "rules.toml")], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("rules file rules.toml: rules.\"order.created\".query"),
        "{stderr}"
    );
    assert!(stderr.contains("fix: use $1"), "{stderr}");
}

#[test]
fn check_passes_complete_settings_without_touching_anything() {
    let dir = tempfile::tempdir().unwrap();
    let out = opsrelay(
        &["check"],
        &[
            (
                "OPSRELAY_SLACK_WEBHOOK_URL",
                "https://hooks.slack.com/services/T0/B0/XXXX",
            ),
            (
                "OPSRELAY_DATABASE_URL",
                "postgres://ro:pw@db.invalid:5432/app",
            ),
            (
                "OPSRELAY_DLQ_URL",
                "https://sqs.us-east-1.amazonaws.com/123456789012/ops-dlq",
            ),
        ],
        dir.path(),
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("ok    database: postgres (not connected)"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("XXXX") && !stdout.contains(":pw@"),
        "{stdout}"
    );
}

#[test]
fn check_refuses_a_plain_http_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let out = opsrelay(
        &["check"],
        &[
            (
                "OPSRELAY_SLACK_WEBHOOK_URL",
                "http://hooks.slack.com/services/T0/B0/XXXX",
            ),
            ("OPSRELAY_DATABASE_URL", "sqlite::memory:"),
            (
                "OPSRELAY_DLQ_URL",
                "https://sqs.us-east-1.amazonaws.com/1/dlq",
            ),
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("not an https URL"));
}

/// `opsrelay render` of order 42 on the embedded defaults: the message, and what it said beside it.
fn render_order_42() -> (serde_json::Value, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("event.json"),
        r#"{"type": "order.created", "id": "42"}"#,
    )
    .unwrap();
    let out = opsrelay(&["render", "--event", "event.json"], &[], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    (
        serde_json::from_slice(&out.stdout).unwrap(),
        text(&out.stderr),
    )
}

#[test]
fn render_shows_the_message_an_event_would_produce() {
    let (message, _) = render_order_42();
    assert_eq!(
        message["text"],
        "New order 42 from Ada Lovelace: 129.90 EUR"
    );
}

#[test]
fn render_prints_a_block_kit_builder_link_to_the_messages_blocks() {
    let (message, said) = render_order_42();
    let link = said
        .lines()
        .find_map(|l| {
            l.strip_prefix("https://app.slack.com/block-kit-builder/#")
                .map(str::to_string)
        })
        .unwrap_or_else(|| panic!("no Block Kit Builder link in:\n{said}"));
    assert!(link.contains("%22blocks%22"), "{link}");
    let first_block = serde_json::to_string(&message["blocks"][0]["type"]).unwrap();
    assert!(link.contains(&first_block.replace('"', "%22")), "{link}");
}

#[test]
fn render_takes_the_record_from_a_row_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("event.json"),
        r#"{"type": "user.signed_up", "id": "1"}"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("row.json"),
        r#"{"name": "Linus <!here>", "plan": "free", "referrer": null}"#,
    )
    .unwrap();
    let out = opsrelay(
        &["render", "--event", "event.json", "--row", "row.json"],
        &[],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let message: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        message["blocks"][0]["text"]["text"],
        ":wave: *Linus &lt;!here&gt;* signed up on the *free* plan."
    );
}

#[test]
fn render_of_an_sqs_event_with_several_records_previews_the_digest_they_make() {
    let dir = tempfile::tempdir().unwrap();
    let record = |id: &str, body: &str| serde_json::json!({"messageId": id, "body": body, "eventSource": "aws:sqs"});
    let records: Vec<serde_json::Value> = (1..=3)
        .map(|i| {
            record(
                &format!("m{i}"),
                &format!(r#"{{"type": "user.signed_up", "id": "{i}"}}"#),
            )
        })
        .chain([record("m4", r#"{"type": "order.created", "id": "9"}"#)])
        .collect();
    let event = serde_json::json!({ "Records": records });
    std::fs::write(dir.path().join("burst.json"), event.to_string()).unwrap();
    std::fs::write(
        dir.path().join("row.json"),
        r#"{"name": "Ada", "plan": "pro", "referrer": null, "customer": "Bob", "total": "1.00", "currency": "EUR", "status": "paid", "placed_at": null, "email": "b@example.com", "notes": null}"#,
    )
    .unwrap();
    let out = opsrelay(
        &["render", "--event", "burst.json", "--row", "row.json"],
        &[],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let messages: Vec<serde_json::Value> = serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(messages.len(), 2, "a digest, and the lone order");
    assert_eq!(messages[0]["text"], "3 × user.signed_up");
    let listed = messages[0]["blocks"][1]["text"]["text"].as_str().unwrap();
    assert_eq!(listed.matches("• ").count(), 3, "{listed}");
    let said = text(&out.stderr);
    assert!(
        said.contains("a digest of 3 user.signed_up events"),
        "{said}"
    );
    assert_eq!(said.matches("block-kit-builder").count(), 2, "{said}");
}

#[test]
fn render_explains_a_malformed_event() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("event.json"),
        r#"{"type": "order.created"}"#,
    )
    .unwrap();
    let out = opsrelay(&["render", "--event", "event.json"], &[], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("event.json: the event has no `id`"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_local_runs_text_logs_carry_no_colour_codes_when_stderr_is_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let out = opsrelay(&["local"], &[], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("Delivered the message."), "{stderr}");
    assert!(
        !stderr.contains("\x1b["),
        "ANSI codes in logs written to a pipe:\n{}",
        stderr.escape_debug()
    );
}

// Passes on e91ae13 already (tracing-subscriber's default honours NO_COLOR): it guards the fix.
#[test]
fn the_local_runs_text_logs_carry_no_colour_codes_with_no_color_set() {
    let dir = tempfile::tempdir().unwrap();
    let out = opsrelay(&["local"], &[("NO_COLOR", "1")], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("Delivered the message."), "{stderr}");
    assert!(
        !stderr.contains("\x1b["),
        "ANSI codes in logs with NO_COLOR=1:\n{}",
        stderr.escape_debug()
    );
}
