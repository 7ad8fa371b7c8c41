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

/// Order 42 through a rule with `routes`, on the engine's database: its outcome, the Slack stand-in
/// of the rule's destination, and the one of `BIG_ORDERS`.
async fn route_order_42(engine: Engine, routes: &str) -> (Outcome, SlackStandIn, SlackStandIn) {
    let url = fresh_database(engine).await;
    let toml = format!(
        "[rules.\"order.created\"]\nquery = \"SELECT id, customer, total, quantity, note FROM orders WHERE id = {}\"\nid_type = \"integer\"\ntext = \"Order {{{{ id }}}} for {{{{ customer }}}}\"\n[[rules.\"order.created\".blocks]]\ntype = \"section\"\ntext = \"Order {{{{ id }}}} for {{{{ customer }}}}: {{{{ total }}}}\"\n{routes}",
        engine.placeholder()
    );
    let (default, big) = (
        SlackStandIn::start(vec![]).await,
        SlackStandIn::start(vec![]).await,
    );
    let dir = tempfile::tempdir().unwrap();
    let webhooks = [
        ("OPSRELAY_SLACK_WEBHOOK_URL", default.url.as_str()),
        ("BIG_ORDERS", big.url.as_str()),
    ];
    let relay = crate::common::relay_to(
        settings(&[]),
        crate::common::rules(&toml),
        Some(&url),
        &webhooks,
        DeadLetters::file(dir.path().join("dlq.jsonl")),
    )
    .await;
    let order_42 = crate::common::event("order.created", "42");
    let results = relay
        .run_batch(
            &[record("m1", &order_42, 1)],
            Instant::now() + Duration::from_secs(20),
        )
        .await;
    (results.into_iter().next().unwrap().outcome, default, big)
}

const TO_BIG_WITH_HERE: &str = "[[rules.\"order.created\".routes]]\nwhen = \"quantity >= 3\"\ndestinations = [\"BIG_ORDERS\"]\nmention = \"<!here>\"\n";

async fn a_decimal_column_is_compared_as_a_number(engine: Engine) {
    // Order 42's total is 129.90: as text it would be "greater" than any number.
    let routes = "[[rules.\"order.created\".routes]]\nwhen = \"total > 1000\"\ndestinations = [\"BIG_ORDERS\"]\n[[rules.\"order.created\".routes]]\nwhen = \"total > 100 and total < 130\"\n";
    let (outcome, default, big) = route_order_42(engine, routes).await;
    assert_eq!(outcome, Outcome::Delivered);
    assert!(big.delivered().is_empty(), "{:?}", big.delivered());
    assert_eq!(default.delivered().len(), 1);
}

#[tokio::test]
async fn postgres_a_routes_when_compares_a_decimal_column_as_a_number() {
    a_decimal_column_is_compared_as_a_number(Engine::Postgres).await;
}

#[tokio::test]
async fn mariadb_a_routes_when_compares_a_decimal_column_as_a_number() {
    a_decimal_column_is_compared_as_a_number(Engine::MariaDb).await;
}

async fn the_first_matching_route_wins_with_its_mention(engine: Engine) {
    let routes = format!("{TO_BIG_WITH_HERE}[[rules.\"order.created\".routes]]\nwhen = \"true\"\n");
    let (outcome, default, big) = route_order_42(engine, &routes).await;
    assert_eq!(outcome, Outcome::Delivered);
    assert!(default.delivered().is_empty(), "{:?}", default.delivered());
    let posted = big.delivered().pop().expect("posted to BIG_ORDERS");
    assert!(
        posted["text"]
            .as_str()
            .unwrap()
            .starts_with("<!here> Order 42"),
        "{posted}"
    );
    assert!(
        section_text(&posted).starts_with("<!here> Order 42"),
        "{posted}"
    );
}

#[tokio::test]
async fn postgres_the_first_matching_route_wins_with_its_mention() {
    the_first_matching_route_wins_with_its_mention(Engine::Postgres).await;
}

#[tokio::test]
async fn mariadb_the_first_matching_route_wins_with_its_mention() {
    the_first_matching_route_wins_with_its_mention(Engine::MariaDb).await;
}

async fn a_continuing_route_posts_and_the_next_posts_too(engine: Engine) {
    let routes = format!(
        "{}continue = true\n[[rules.\"order.created\".routes]]\nwhen = \"true\"\n",
        TO_BIG_WITH_HERE
    );
    let (outcome, default, big) = route_order_42(engine, &routes).await;
    assert_eq!(outcome, Outcome::Delivered);
    assert_eq!(big.delivered().len(), 1);
    let plain = default
        .delivered()
        .pop()
        .expect("posted to the rule's destination too");
    assert!(
        !plain.to_string().contains("<!here>"),
        "the mention is the route's only: {plain}"
    );
}

#[tokio::test]
async fn postgres_a_continuing_route_posts_and_the_next_posts_too() {
    a_continuing_route_posts_and_the_next_posts_too(Engine::Postgres).await;
}

#[tokio::test]
async fn mariadb_a_continuing_route_posts_and_the_next_posts_too() {
    a_continuing_route_posts_and_the_next_posts_too(Engine::MariaDb).await;
}

async fn with_no_route_matching_the_rules_destinations_get_it(engine: Engine) {
    let routes = "[[rules.\"order.created\".routes]]\nwhen = \"quantity > 100\"\ndestinations = [\"BIG_ORDERS\"]\n";
    let (outcome, default, big) = route_order_42(engine, routes).await;
    assert_eq!(outcome, Outcome::Delivered);
    assert!(big.delivered().is_empty());
    assert_eq!(default.delivered().len(), 1);
}

#[tokio::test]
async fn postgres_with_no_route_matching_the_rules_destinations_get_it() {
    with_no_route_matching_the_rules_destinations_get_it(Engine::Postgres).await;
}

#[tokio::test]
async fn mariadb_with_no_route_matching_the_rules_destinations_get_it() {
    with_no_route_matching_the_rules_destinations_get_it(Engine::MariaDb).await;
}

async fn a_when_on_a_null_column_sees_none_and_a_drop_route_posts_nothing(engine: Engine) {
    // Order 42's note is NULL: `note == "x"` does not hold, `note is none` does.
    let routes = "[[rules.\"order.created\".routes]]\nwhen = \"note == 'x'\"\ndestinations = [\"BIG_ORDERS\"]\n[[rules.\"order.created\".routes]]\nwhen = \"note is none\"\ndrop = true\n";
    let (outcome, default, big) = route_order_42(engine, routes).await;
    let route = "rules.\"order.created\".routes[1]".to_string();
    assert_eq!(outcome, Outcome::Dropped { route });
    assert!(default.requests().is_empty() && big.requests().is_empty());
}

#[tokio::test]
async fn postgres_a_when_on_a_null_column_sees_none_and_a_drop_route_posts_nothing() {
    a_when_on_a_null_column_sees_none_and_a_drop_route_posts_nothing(Engine::Postgres).await;
}

#[tokio::test]
async fn mariadb_a_when_on_a_null_column_sees_none_and_a_drop_route_posts_nothing() {
    a_when_on_a_null_column_sees_none_and_a_drop_route_posts_nothing(Engine::MariaDb).await;
}

async fn a_row_value_cannot_add_a_mention_to_a_routes_message(engine: Engine) {
    // Order 42's customer is "Ada & Co <!channel>".
    let (_, _, big) = route_order_42(engine, TO_BIG_WITH_HERE).await;
    let posted = big
        .delivered()
        .pop()
        .expect("posted to BIG_ORDERS")
        .to_string();
    assert_eq!(
        posted.matches("<!").count(),
        2,
        "the route's <!here>, in text and section: {posted}"
    );
    assert!(posted.contains("&lt;!channel&gt;"), "{posted}");
}

#[tokio::test]
async fn postgres_a_row_value_cannot_add_a_mention_to_a_routes_message() {
    a_row_value_cannot_add_a_mention_to_a_routes_message(Engine::Postgres).await;
}

#[tokio::test]
async fn mariadb_a_row_value_cannot_add_a_mention_to_a_routes_message() {
    a_row_value_cannot_add_a_mention_to_a_routes_message(Engine::MariaDb).await;
}
