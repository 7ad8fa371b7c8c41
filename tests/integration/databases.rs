//! The same rule tests against real PostgreSQL and MariaDB: column types become template values, the
//! id is bound as the rule says, and a missing record is retried only while the replica may lag.

use std::time::Duration;

use crate::common::slack::SlackStandIn;
use crate::common::{Engine, fresh_database, record, settings};
use opsrelay::deadletter::DeadLetters;
use opsrelay::pipeline::Outcome;
use tokio::time::Instant;

fn rules(engine: Engine, id_type: &str) -> String {
    format!(
        r#"
[rules."order.created"]
query = "SELECT id, customer, total, paid, quantity, weight, placed_on, placed_at, shipped_at, meta, ref, note FROM orders WHERE id = {}"
id_type = "{id_type}"
text = "order {{{{ id }}}}"
[[rules."order.created".blocks]]
type = "section"
text = "customer={{{{ customer }}}} total={{{{ total }}}} paid={{{{ paid }}}} quantity={{{{ quantity + 1 }}}} weight={{{{ weight }}}} placed_on={{{{ placed_on }}}} placed_at={{{{ placed_at }}}} shipped_at={{{{ shipped_at }}}} plan={{{{ (meta | fromjson).plan }}}} seats={{{{ (meta | fromjson).seats }}}} ref={{{{ ref }}}} note=[{{{{ note }}}}]"
"#,
        engine.placeholder()
    )
}

/// One record with `body` through a relay on the database at `url` with `rules_toml` and the
/// settings `overrides`, given `seconds`: its outcome and the Slack stand-in it posted to.
async fn run_one(
    url: &str,
    rules_toml: &str,
    overrides: &[(&str, &str)],
    body: &str,
    seconds: u64,
) -> (Outcome, SlackStandIn) {
    let slack = SlackStandIn::start(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let relay = crate::common::relay(
        settings(overrides),
        crate::common::rules(rules_toml),
        Some(url),
        &slack.url,
        DeadLetters::file(dir.path().join("dlq.jsonl")),
    )
    .await;
    let results = relay
        .run_batch(
            &[record("m1", body, 1)],
            Instant::now() + Duration::from_secs(seconds),
        )
        .await;
    (results.into_iter().next().unwrap().outcome, slack)
}

async fn deliver_order_42(engine: Engine) -> serde_json::Value {
    let url = fresh_database(engine).await;
    let order_42 = crate::common::event("order.created", "42");
    let (outcome, slack) = run_one(&url, &rules(engine, "integer"), &[], &order_42, 20).await;
    assert_eq!(outcome, Outcome::Delivered);
    slack.delivered().pop().expect("one message posted")
}

fn section_text(message: &serde_json::Value) -> String {
    message["blocks"][0]["text"]["text"]
        .as_str()
        .unwrap()
        .to_string()
}

const EXPECTED: &str = "customer=Ada &amp; Co &lt;!channel&gt; total=129.90 paid=true quantity=4 weight=1.5 placed_on=2026-11-30 placed_at=2026-11-30T08:00:00Z shipped_at=2026-11-30T09:30:00 plan=pro seats=12 ref=6f1c2a4e-8b1d-4c3e-9a7b-2d5e8f0a1b3c note=[]";

#[tokio::test]
async fn postgres_columns_become_typed_template_values() {
    let message = deliver_order_42(Engine::Postgres).await;
    assert_eq!(section_text(&message), EXPECTED);
}

#[tokio::test]
async fn mariadb_columns_become_typed_template_values() {
    let message = deliver_order_42(Engine::MariaDb).await;
    assert_eq!(section_text(&message), EXPECTED);
}

async fn outcome_for(engine: Engine, body: &str, id_type: &str, grace_s: &str) -> Outcome {
    let url = fresh_database(engine).await;
    let grace = [("OPSRELAY_REPLICA_LAG_GRACE_SECONDS", grace_s)];
    let (outcome, slack) = run_one(&url, &rules(engine, id_type), &grace, body, 2).await;
    assert!(
        slack.requests().is_empty(),
        "nothing is posted for a failed lookup"
    );
    outcome
}

async fn missing_record_within_grace_is_retried(engine: Engine) {
    let outcome = outcome_for(
        engine,
        &crate::common::event("order.created", "999"),
        "integer",
        "600",
    )
    .await;
    assert!(
        matches!(&outcome, Outcome::Retry { code, .. } if code == "record_not_found"),
        "{outcome:?}"
    );
}

async fn missing_record_after_grace_is_dead_lettered(engine: Engine) {
    let body = r#"{"type":"order.created","id":"999","occurred_at":"2026-01-01T00:00:00Z"}"#;
    let outcome = outcome_for(engine, body, "integer", "60").await;
    let Outcome::DeadLettered(failure) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(failure.code, "record_not_found");
    assert!(failure.reason.contains("record 999"), "{}", failure.reason);
}

async fn id_of_the_wrong_type_is_dead_lettered(engine: Engine) {
    let outcome = outcome_for(
        engine,
        &crate::common::event("order.created", "abc"),
        "integer",
        "60",
    )
    .await;
    let Outcome::DeadLettered(failure) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(failure.code, "bad_id");
    assert!(
        failure.reason.contains("not an integer"),
        "{}",
        failure.reason
    );
}

async fn a_broken_query_is_dead_lettered_with_the_database_error(engine: Engine) {
    let url = fresh_database(engine).await;
    let toml = format!(
        "[rules.\"order.created\"]\nquery = \"SELECT nope FROM orders WHERE id = {}\"\nid_type = \"integer\"\ntext = \"x\"\n",
        engine.placeholder()
    );
    let (outcome, _) = run_one(
        &url,
        &toml,
        &[],
        &crate::common::event("order.created", "42"),
        5,
    )
    .await;
    let Outcome::DeadLettered(failure) = &outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(failure.code, "query_failed");
    assert!(failure.reason.contains("nope"), "{}", failure.reason);
}

#[tokio::test]
async fn postgres_missing_record_within_grace_is_retried() {
    missing_record_within_grace_is_retried(Engine::Postgres).await;
}

#[tokio::test]
async fn mariadb_missing_record_within_grace_is_retried() {
    missing_record_within_grace_is_retried(Engine::MariaDb).await;
}

#[tokio::test]
async fn postgres_missing_record_after_grace_is_dead_lettered() {
    missing_record_after_grace_is_dead_lettered(Engine::Postgres).await;
}

#[tokio::test]
async fn mariadb_missing_record_after_grace_is_dead_lettered() {
    missing_record_after_grace_is_dead_lettered(Engine::MariaDb).await;
}

#[tokio::test]
async fn postgres_id_of_the_wrong_type_is_dead_lettered() {
    id_of_the_wrong_type_is_dead_lettered(Engine::Postgres).await;
}

#[tokio::test]
async fn mariadb_id_of_the_wrong_type_is_dead_lettered() {
    id_of_the_wrong_type_is_dead_lettered(Engine::MariaDb).await;
}

#[tokio::test]
async fn postgres_broken_query_is_dead_lettered_with_the_database_error() {
    a_broken_query_is_dead_lettered_with_the_database_error(Engine::Postgres).await;
}

#[tokio::test]
async fn mariadb_broken_query_is_dead_lettered_with_the_database_error() {
    a_broken_query_is_dead_lettered_with_the_database_error(Engine::MariaDb).await;
}

#[tokio::test]
async fn an_unreachable_database_is_retried_not_dead_lettered() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://postgres:secret@127.0.0.1:{port}/none");
    let timeout = [("OPSRELAY_DB_CONNECT_TIMEOUT_MS", "200")];
    let order_42 = crate::common::event("order.created", "42");
    let (outcome, _) = run_one(
        &url,
        &rules(Engine::Postgres, "integer"),
        &timeout,
        &order_42,
        2,
    )
    .await;
    assert!(
        matches!(&outcome, Outcome::Retry { code, .. } if code == "database_unavailable"),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn mariadb_a_query_stopped_by_its_time_limit_is_retried_not_dead_lettered() {
    // MariaDB reports it as error 1969 under SQLSTATE 70100, which says nothing by itself.
    let url = fresh_database(Engine::MariaDb).await;
    let rules = r#"
[rules."order.created"]
query = "SET STATEMENT max_statement_time = 0.2 FOR SELECT id, SLEEP(2) AS slept FROM orders WHERE id = ?"
id_type = "integer"
text = "order {{ id }}"
"#;
    let order_42 = crate::common::event("order.created", "42");
    let (outcome, _slack) = run_one(&url, rules, &[], &order_42, 3).await;
    assert!(
        matches!(&outcome, Outcome::Retry { code, .. } if code == "query_failed"),
        "{outcome:?}"
    );
}

/// The decimals 0.00, 0.10, 10.00 and 129.90 of type `decimal_type` (NUMERIC(10,2) or
/// DECIMAL(10,2)) as a template prints them.
async fn decimals_as_posted(engine: Engine, decimal_type: &str) -> String {
    let url = fresh_database(engine).await;
    let columns: Vec<String> = [
        ("zero", "0.00"),
        ("tenth", "0.10"),
        ("ten", "10.00"),
        ("total", "129.90"),
    ]
    .iter()
    .map(|(name, value)| format!("CAST({value} AS {decimal_type}) AS {name}"))
    .collect();
    let toml = format!(
        "[rules.\"order.created\"]\nquery = \"SELECT {} FROM orders WHERE id = {}\"\nid_type = \"integer\"\ntext = \"zero={{{{ zero }}}} tenth={{{{ tenth }}}} ten={{{{ ten }}}} total={{{{ total }}}}\"\n",
        columns.join(", "),
        engine.placeholder()
    );
    let order_42 = crate::common::event("order.created", "42");
    let (outcome, slack) = run_one(&url, &toml, &[], &order_42, 20).await;
    assert_eq!(outcome, Outcome::Delivered);
    slack.delivered().pop().expect("one message posted")["text"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn postgres_a_decimal_zero_keeps_its_scale() {
    let text = decimals_as_posted(Engine::Postgres, "NUMERIC(10,2)").await;
    assert_eq!(text, "zero=0.00 tenth=0.10 ten=10.00 total=129.90");
}

#[tokio::test]
async fn mariadb_a_decimal_zero_keeps_its_scale() {
    let text = decimals_as_posted(Engine::MariaDb, "DECIMAL(10,2)").await;
    assert_eq!(text, "zero=0.00 tenth=0.10 ten=10.00 total=129.90");
}
