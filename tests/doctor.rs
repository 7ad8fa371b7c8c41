//! `opsrelay doctor` as an operator runs it, against the test DNS server, PostgreSQL with TLS, the
//! Slack stand-in and the DLQ in moto: one line per check, exit 0 when all pass, 1 with the failing
//! line otherwise.

mod common;

use std::process::Output;

use common::dns::{DnsMode, DnsServer};
use common::slack::SlackStandIn;
use common::{Engine, fresh_database, queues, service};

const RULES: &str = "[rules.\"order.created\"]\nquery = \"SELECT customer FROM orders WHERE id = $1\"\nid_type = \"integer\"\ntext = \"{{ customer }}\"\n";

/// Runs `opsrelay doctor` with `rules`, the database reached through `dns`, TLS verified against
/// the CA file of the service variable `ca`.
async fn doctor(dns: &DnsServer, ca: &str, rules: &str) -> (Output, String) {
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
        .envs(env)
        .output()
        .await
        .unwrap();
    let all = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(
        !all.contains(&slack.url) && !all.contains(&service("OPSRELAY_TEST_POSTGRES_PASSWORD")),
        "a secret leaked:\n{all}"
    );
    (output, all)
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
