//! `opsrelay doctor` as an operator runs it, against the test DNS server, PostgreSQL with TLS, the
//! Slack stand-in and the DLQ in moto: one line per check, exit 0 when all pass, 1 with the failing
//! line otherwise.

use std::process::Output;

use crate::common::dns::{DnsMode, DnsServer};
use crate::common::slack::SlackStandIn;
use crate::common::{Engine, fresh_database, queues, service};
use opsrelay::deadletter::DeadLetters;

const RULES: &str = "[rules.\"order.created\"]\nquery = \"SELECT customer FROM orders WHERE id = $1\"\nid_type = \"integer\"\ntext = \"{{ customer }}\"\n";

/// What one run of `opsrelay doctor` gave, and the Slack stand-in it checked.
struct Doctor {
    output: Output,
    /// Standard output, then standard error.
    text: String,
    slack: SlackStandIn,
}

/// Runs `opsrelay doctor` with `rules`, the database reached through `dns`, TLS verified against
/// the CA file of the service variable `ca`.
async fn doctor(dns: &DnsServer, ca: &str, rules: &str) -> (Output, String) {
    let run = doctor_without(dns, ca, rules, &[]).await;
    (run.output, run.text)
}

/// [`doctor`], with the variables `unset` left out of its environment.
async fn doctor_without(dns: &DnsServer, ca: &str, rules: &str, unset: &[&str]) -> Doctor {
    let url = fresh_database(Engine::Postgres)
        .await
        .replace("127.0.0.1", &service("OPSRELAY_TEST_DB_NAME"))
        + "?sslmode=require";
    let slack = SlackStandIn::start(vec![]).await;
    let queues = queues(5, 30).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.toml"), rules).unwrap();
    let env = [
        (
            "OPSRELAY_RULES",
            dir.path().join("rules.toml").display().to_string(),
        ),
        ("OPSRELAY_DATABASE_URL", url.clone()),
        ("OPSRELAY_DNS_SERVERS", dns.address.to_string()),
        ("OPSRELAY_DB_CA_FILE", service(ca)),
        ("OPSRELAY_SLACK_WEBHOOK_URL", slack.url.clone()),
        ("OPSRELAY_DLQ_URL", queues.dlq.clone()),
        ("AWS_ENDPOINT_URL", service("OPSRELAY_TEST_AWS_ENDPOINT")),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("PATH", std::env::var("PATH").unwrap_or_default()),
    ];
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_opsrelay"))
        .arg("doctor")
        .env_clear()
        .envs(env.into_iter().filter(|(name, _)| !unset.contains(name)))
        .output()
        .await
        .unwrap();
    let all = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(
        !all.contains(&slack.url) && !all.contains(&service("OPSRELAY_TEST_POSTGRES_PASSWORD")),
        "a secret leaked:\n{all}"
    );
    Doctor {
        output,
        text: all,
        slack,
    }
}

#[tokio::test]
async fn doctor_passes_every_check_when_everything_is_reachable() {
    let dns = DnsServer::start(DnsMode::Answer(vec!["127.0.0.1".parse().unwrap()])).await;
    let (output, text) = doctor(&dns, "OPSRELAY_TEST_CA_FILE", RULES).await;
    assert!(output.status.success(), "{text}");
    for line in [
        &format!("ok    dns {}: db.opsrelay.test → 127.0.0.1", dns.address),
        "ok    database address: 127.0.0.1 from dns",
        "ok    tcp 127.0.0.1:",
        "ok    tls: handshake done; chain verified against",
        "ok    login (postgres): connected and authenticated",
        "ok    query of rule order.created: prepared (not run)",
        "ok    slack OPSRELAY_SLACK_WEBHOOK_URL (http://127.0.0.1:",
        "reachable over plain HTTP, answered",
        "ok    dlq: reachable (GetQueueAttributes), 0 messages",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    assert!(
        !text.contains("/services/"),
        "the webhook path is a secret:\n{text}"
    );
}

#[tokio::test]
async fn doctor_fails_and_names_the_failing_checks() {
    let dns = DnsServer::start(DnsMode::ServFail).await;
    let (output, text) = doctor(&dns, "OPSRELAY_TEST_OTHER_CA_FILE", RULES).await;
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("FAIL  dns {}:", dns.address)),
        "{text}"
    );
    assert!(
        text.contains("FAIL  database address: no address for the database host db.opsrelay.test"),
        "{text}"
    );
    assert!(text.contains("ok    dlq"), "{text}");
}

#[tokio::test]
async fn doctor_fails_a_template_that_reads_a_column_the_query_does_not_return() {
    let dns = DnsServer::start(DnsMode::Answer(vec!["127.0.0.1".parse().unwrap()])).await;
    let rules = RULES.replace(
        "{{ customer }}",
        "{{ customr }} {{ row.customer }} {{ event.id }} {{ range(2) | length }}",
    );
    let (output, text) = doctor(&dns, "OPSRELAY_TEST_CA_FILE", &rules).await;
    assert_eq!(output.status.code(), Some(1), "{text}");
    let line = "FAIL  query of rule order.created: rules.\"order.created\".text reads customr, \
                which the query does not return (it returns customer)";
    assert!(text.contains(line), "missing {line:?} in:\n{text}");
}

#[tokio::test]
async fn doctor_fails_the_tls_check_when_the_certificate_is_not_from_the_ca_bundle() {
    let dns = DnsServer::start(DnsMode::Answer(vec!["127.0.0.1".parse().unwrap()])).await;
    let (output, text) = doctor(&dns, "OPSRELAY_TEST_OTHER_CA_FILE", RULES).await;
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("ok    tcp 127.0.0.1:"), "{text}");
    assert!(text.contains("FAIL  tls:"), "{text}");
}

/// The checks that need only the database, each expected to pass.
const DATABASE_CHECKS: [&str; 6] = [
    "ok    dns ",
    "ok    database address: 127.0.0.1 from dns",
    "ok    tcp 127.0.0.1:",
    "ok    tls: handshake done",
    "ok    login (postgres): connected and authenticated",
    "ok    query of rule order.created: prepared (not run)",
];

/// The line of `text` that starts with `FAIL` and holds every one of `words`.
fn fail_line<'a>(text: &'a str, words: &[&str]) -> Option<&'a str> {
    text.lines()
        .find(|line| line.starts_with("FAIL") && words.iter().all(|w| line.contains(w)))
}

#[tokio::test]
async fn doctor_checks_slack_with_the_user_agent_the_poster_sends() {
    let dns = DnsServer::start(DnsMode::Answer(vec!["127.0.0.1".parse().unwrap()])).await;
    let run = doctor_without(&dns, "OPSRELAY_TEST_CA_FILE", RULES, &[]).await;
    assert!(run.output.status.success(), "{}", run.text);
    let probe = run.slack.requests();
    assert_eq!(
        probe.len(),
        1,
        "the doctor's probe, nothing posted: {probe:?}"
    );
    // The poster: a relay posting one message to the same stand-in.
    let dir = tempfile::tempdir().unwrap();
    let relay = crate::common::relay(
        crate::common::settings(&[]),
        crate::common::rules("[rules.\"order.created\"]\ntext = \"x\"\n"),
        None,
        &run.slack.url,
        DeadLetters::file(dir.path().join("dlq.jsonl")),
    )
    .await;
    let body = crate::common::event("order.created", "42");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    relay
        .run_batch(&[crate::common::record("m1", &body, 1)], deadline)
        .await;
    let requests = run.slack.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    let user_agent = |r: &crate::common::slack::Request| r.headers.get("user-agent").cloned();
    let poster = user_agent(&requests[1]);
    assert_eq!(
        poster.as_deref(),
        Some(concat!("opsrelay/", env!("CARGO_PKG_VERSION")))
    );
    assert_eq!(
        user_agent(&requests[0]),
        poster,
        "the doctor's probe ({} {}) is not made by the client that posts",
        requests[0].method,
        requests[0].path
    );
}

#[tokio::test]
async fn doctor_runs_every_other_check_and_fails_the_dlq_when_opsrelay_dlq_url_is_not_set() {
    let dns = DnsServer::start(DnsMode::Answer(vec!["127.0.0.1".parse().unwrap()])).await;
    let run = doctor_without(&dns, "OPSRELAY_TEST_CA_FILE", RULES, &["OPSRELAY_DLQ_URL"]).await;
    let text = &run.text;
    for line in DATABASE_CHECKS {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    assert!(
        text.contains("ok    slack OPSRELAY_SLACK_WEBHOOK_URL"),
        "{text}"
    );
    assert!(
        fail_line(text, &["OPSRELAY_DLQ_URL"]).is_some(),
        "no FAIL line names OPSRELAY_DLQ_URL:\n{text}"
    );
    assert_eq!(run.output.status.code(), Some(1), "{text}");
}

#[tokio::test]
async fn doctor_runs_every_other_check_and_fails_a_destination_whose_webhook_is_not_set() {
    let dns = DnsServer::start(DnsMode::Answer(vec!["127.0.0.1".parse().unwrap()])).await;
    let rules = RULES.replace(
        "id_type",
        "destinations = [\"OPSRELAY_SLACK_WEBHOOK_URL\", \"OPSRELAY_SLACK_WEBHOOK_URL_SALES\"]\nid_type",
    );
    let run = doctor_without(&dns, "OPSRELAY_TEST_CA_FILE", &rules, &[]).await;
    let text = &run.text;
    for line in DATABASE_CHECKS {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    assert!(
        text.contains("ok    slack OPSRELAY_SLACK_WEBHOOK_URL (") && text.contains("ok    dlq"),
        "{text}"
    );
    assert!(
        fail_line(text, &["OPSRELAY_SLACK_WEBHOOK_URL_SALES", "order.created"]).is_some(),
        "no FAIL line names OPSRELAY_SLACK_WEBHOOK_URL_SALES and rule order.created:\n{text}"
    );
    assert_eq!(run.output.status.code(), Some(1), "{text}");
}

#[tokio::test]
async fn doctor_names_the_rule_whose_query_the_database_rejects() {
    let dns = DnsServer::start(DnsMode::Answer(vec!["127.0.0.1".parse().unwrap()])).await;
    let rules = RULES.replace("FROM orders", "FROM no_such_table");
    let (output, text) = doctor(&dns, "OPSRELAY_TEST_CA_FILE", &rules).await;
    assert_eq!(output.status.code(), Some(1), "{text}");
    let line = fail_line(&text, &["query of rule order.created:", "no_such_table"])
        .unwrap_or_else(|| panic!("no FAIL line for the query in:\n{text}"));
    let detail = line.split_once(": ").unwrap().1;
    assert!(
        detail.contains("rule `order.created`") && !detail.contains("(check)"),
        "the error does not name its rule: {line}"
    );
}

/// `opsrelay doctor` where AWS is not: no region, no credentials, and no instance metadata service
/// (its endpoint a closed local port, so that the test means the same on an EC2 host), with a rule
/// that needs no database and a webhook that answers.
async fn doctor_outside_aws() -> (Output, String, String) {
    let slack = SlackStandIn::start(vec![]).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, "[rules.\"order.created\"]\ntext = \"x\"\n").unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_opsrelay"))
        .arg("doctor")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir.path())
        .env("OPSRELAY_RULES", &rules)
        .env("OPSRELAY_SLACK_WEBHOOK_URL", &slack.url)
        .env(
            "OPSRELAY_DLQ_URL",
            "https://sqs.us-east-1.amazonaws.com/123456789012/ops-events-dlq",
        )
        .env(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            format!("http://127.0.0.1:{closed}"),
        )
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    (output, stdout, stderr)
}

#[tokio::test]
async fn doctor_outside_aws_writes_no_sdk_warnings_or_debug_dumps_to_stderr() {
    let (output, stdout, stderr) = doctor_outside_aws().await;
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        !stderr.contains("IMDS") && !stderr.contains("source: ") && !stderr.contains(" { "),
        "SDK warnings or Debug dumps on stderr:\n{stderr}"
    );
}

#[tokio::test]
async fn doctor_outside_aws_reports_each_check_on_one_line_without_debug_dumps() {
    let (_, stdout, stderr) = doctor_outside_aws().await;
    assert!(stdout.contains("FAIL  dlq"), "{stdout}{stderr}");
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            (line.starts_with("ok    ") || line.starts_with("FAIL  "))
                && !line.contains("source: ")
                && !line.contains(" { "),
            "not one plain line per check:\n{stdout}"
        );
    }
}
