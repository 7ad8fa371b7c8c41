//! Reaching the database through flaky DNS, against a DNS server that answers, drops, SERVFAILs or
//! NXDOMAINs on demand, and real PostgreSQL and MariaDB with TLS on (a test CA; the certificate names
//! db.opsrelay.test and no address, as RDS's do).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::common::dns::{DnsMode, DnsServer};
use crate::common::{Engine, fresh_database, record, service, settings};
use opsrelay::db::{AddressSource, DnsSettings};
use opsrelay::db::{Database, DbSettings, LookupError};
use opsrelay::deadletter::DeadLetters;
use opsrelay::event::RecordId;
use opsrelay::pipeline::Outcome;
use opsrelay::secret::Secret;
use tokio::time::Instant;

const LOCALHOST: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);

fn rules(engine: Engine) -> opsrelay::rules::Rules {
    crate::common::rules(&format!(
        "[rules.\"order.created\"]\nquery = \"SELECT customer FROM orders WHERE id = {}\"\nid_type = \"integer\"\ntext = \"{{{{ customer }}}}\"\n",
        engine.placeholder()
    ))
}

/// The database URL with its host replaced by the certificate's name, and TLS asked for.
async fn named_url(engine: Engine) -> String {
    let url = fresh_database(engine).await;
    let named = url.replace("127.0.0.1", &service("OPSRELAY_TEST_DB_NAME"));
    match engine {
        Engine::Postgres => format!("{named}?sslmode=require"),
        Engine::MariaDb => format!("{named}?ssl-mode=required"),
    }
}

fn db_settings(dns: &DnsServer, fallbacks: &[IpAddr], ca: &str) -> DbSettings {
    DbSettings {
        address_path: true,
        host_addrs: fallbacks.to_vec(),
        ca_file: Some(service(ca).into()),
        dns: DnsSettings {
            servers: vec![dns.address],
            timeout: Duration::from_millis(200),
            attempts: 1,
        },
        set_aside: Duration::from_secs(30),
        acquire_timeout: Duration::from_millis(2_000),
        ..settings(&[]).db
    }
}

async fn fetch(
    database: &Database,
    engine: Engine,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>, LookupError> {
    let rules = rules(engine);
    let rule = rules.get("order.created").unwrap();
    database
        .fetch_record(
            rule,
            rule.query.as_ref().unwrap(),
            &RecordId::parse("42").unwrap(),
            Duration::from_secs(5),
        )
        .await
        .map(|row| row.map(|row| row.values))
}

/// The engine's database by its TLS name, which a DNS stand-in answering `localhost`'s address
/// resolves, trusting the CA file named by the environment variable `ca_variable`.
async fn named_database(engine: Engine, ca_variable: &str) -> (DnsServer, Database) {
    let dns = DnsServer::start(DnsMode::Answer(vec![LOCALHOST])).await;
    let url = named_url(engine).await;
    let settings = db_settings(&dns, &[], ca_variable);
    let database = Database::connect_lazy(&Secret::new(url), &settings).unwrap();
    (dns, database)
}

async fn source_now(database: &Database) -> AddressSource {
    database
        .address_chain()
        .unwrap()
        .choose()
        .await
        .unwrap()
        .source
}

async fn healthy_dns_gives_the_address_and_tls_verifies_the_chain(engine: Engine) {
    let (dns, database) = named_database(engine, "OPSRELAY_TEST_CA_FILE").await;
    let row = fetch(&database, engine).await.unwrap().unwrap();
    assert_eq!(row["customer"], "Ada & Co <!channel>");
    assert!(
        dns.queries() > 0,
        "the name was resolved by the chain's resolver"
    );
    assert_eq!(source_now(&database).await, AddressSource::Fresh);
}

#[tokio::test]
async fn postgres_healthy_dns_gives_the_address_and_tls_verifies_the_chain() {
    healthy_dns_gives_the_address_and_tls_verifies_the_chain(Engine::Postgres).await;
}

#[tokio::test]
async fn mariadb_healthy_dns_gives_the_address_and_tls_verifies_the_chain() {
    healthy_dns_gives_the_address_and_tls_verifies_the_chain(Engine::MariaDb).await;
}

async fn a_certificate_from_another_ca_is_refused(engine: Engine) {
    let (_dns, database) = named_database(engine, "OPSRELAY_TEST_OTHER_CA_FILE").await;
    let error = fetch(&database, engine).await.unwrap_err().to_string();
    assert!(
        error.to_lowercase().contains("certificate") || error.contains("UnknownIssuer"),
        "{error}"
    );
}

#[tokio::test]
async fn postgres_refuses_a_certificate_from_another_ca() {
    a_certificate_from_another_ca_is_refused(Engine::Postgres).await;
}

#[tokio::test]
async fn mariadb_refuses_a_certificate_from_another_ca() {
    a_certificate_from_another_ca_is_refused(Engine::MariaDb).await;
}

#[tokio::test]
async fn verify_full_by_address_is_refused_at_start_up_with_the_fix() {
    let dns = DnsServer::start(DnsMode::Answer(vec![LOCALHOST])).await;
    let mut settings = db_settings(&dns, &[], "OPSRELAY_TEST_CA_FILE");
    settings.ca_file = None;
    for url in [
        "postgres://u:p@db.opsrelay.test/app?sslmode=verify-full",
        "mysql://u:p@db.opsrelay.test/app?ssl-mode=VERIFY_IDENTITY",
        "mysql://u:p@db.opsrelay.test/app?sslmode=verify_identity",
    ] {
        let error = Database::connect_lazy(&Secret::new(url.to_string()), &settings)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("OPSRELAY_DB_CA_FILE") && error.contains("OPSRELAY_DB_ADDRESS_PATH=off"),
            "{url}: {error}"
        );
    }
}

async fn a_dns_failure_serves_the_last_known_good_address(failure: DnsMode) {
    let (dns, database) = named_database(Engine::Postgres, "OPSRELAY_TEST_CA_FILE").await;
    fetch(&database, Engine::Postgres).await.unwrap().unwrap();
    dns.set(failure);
    let started = Instant::now();
    let chosen = database.address_chain().unwrap().choose().await.unwrap();
    assert_eq!(chosen.source, AddressSource::LastKnownGood);
    assert_eq!(chosen.address, IpAddr::V4(LOCALHOST));
    assert!(chosen.dns_error.is_some());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "DNS was waited on for {:?}",
        started.elapsed()
    );
    fetch(&database, Engine::Postgres).await.unwrap().unwrap();
}

#[tokio::test]
async fn dns_dropping_every_query_serves_the_last_known_good_address() {
    a_dns_failure_serves_the_last_known_good_address(DnsMode::Drop).await;
}

#[tokio::test]
async fn dns_answering_servfail_serves_the_last_known_good_address() {
    a_dns_failure_serves_the_last_known_good_address(DnsMode::ServFail).await;
}

#[tokio::test]
async fn dns_answering_nxdomain_serves_the_last_known_good_address() {
    a_dns_failure_serves_the_last_known_good_address(DnsMode::NxDomain).await;
}

#[tokio::test]
async fn dns_down_on_a_cold_start_uses_the_fallback_addresses() {
    let dns = DnsServer::start(DnsMode::Drop).await;
    let url = named_url(Engine::MariaDb).await;
    let fallbacks = [
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9)),
        IpAddr::V4(LOCALHOST),
    ];
    let database = Database::connect_lazy(
        &Secret::new(url),
        &db_settings(&dns, &fallbacks, "OPSRELAY_TEST_CA_FILE"),
    )
    .unwrap();
    let row = fetch(&database, Engine::MariaDb).await.unwrap().unwrap();
    assert_eq!(row["customer"], "Ada & Co <!channel>");
    assert_eq!(
        source_now(&database).await,
        AddressSource::LastKnownGood,
        "the fallback that worked (127.0.0.9 refused) is now the last known good"
    );
}

#[tokio::test]
async fn dns_down_and_no_address_known_leaves_the_message_for_sqs() {
    let dns = DnsServer::start(DnsMode::Drop).await;
    let url = named_url(Engine::Postgres).await;
    let mut settings = settings(&[]);
    settings.db = db_settings(&dns, &[], "OPSRELAY_TEST_CA_FILE");
    let slack = crate::common::slack::SlackStandIn::start(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let database = Database::connect_lazy(&Secret::new(url), &settings.db).unwrap();
    let relay = opsrelay::pipeline::Relay::new(
        settings.clone(),
        rules(Engine::Postgres),
        Some(database),
        opsrelay::config::resolve(
            &settings,
            &rules(Engine::Postgres),
            |_| Some(slack.url.clone()),
            opsrelay::config::MissingWebhook::Fail,
            None,
        )
        .await
        .destinations,
        DeadLetters::file(dir.path().join("dlq.jsonl")),
    )
    .unwrap();
    let results = relay
        .run_batch(
            &[record("m-1", r#"{"type":"order.created","id":"42"}"#, 1)],
            Instant::now() + Duration::from_secs(3),
        )
        .await;
    match &results[0].outcome {
        Outcome::Retry { code, reason } => {
            assert_eq!(code, "database_unavailable");
            assert!(reason.contains("OPSRELAY_DB_HOST_ADDRS"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        !dir.path().join("dlq.jsonl").exists(),
        "nothing was dead-lettered"
    );
}

/// Forwards TCP from `from` to `to` until dropped (then `from` refuses and open connections end).
struct Forwarder(tokio::task::JoinHandle<()>);

impl Forwarder {
    async fn start(from: SocketAddr, to: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind(from).await.unwrap();
        let handle = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self(handle)
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[tokio::test]
async fn the_database_moving_to_a_new_address_is_followed() {
    let url = named_url(Engine::Postgres).await;
    let port: u16 = url
        .split(':')
        .nth(3)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let old = Ipv4Addr::new(127, 0, 0, 3);
    let forwarder = Forwarder::start(
        SocketAddr::new(old.into(), port),
        SocketAddr::new(LOCALHOST.into(), port),
    )
    .await;
    let dns = DnsServer::start(DnsMode::Answer(vec![old])).await;
    let database = Database::connect_lazy(
        &Secret::new(url),
        &db_settings(&dns, &[], "OPSRELAY_TEST_CA_FILE"),
    )
    .unwrap();
    fetch(&database, Engine::Postgres).await.unwrap().unwrap();

    // Failover: the old address stops answering, DNS now gives the new one.
    drop(forwarder);
    tokio::time::sleep(Duration::from_millis(100)).await;
    dns.set(DnsMode::Answer(vec![LOCALHOST]));
    let mut tries = 0;
    let row = loop {
        tries += 1;
        match fetch(&database, Engine::Postgres).await {
            Ok(row) => break row.unwrap(),
            Err(e) if tries < 3 => eprintln!("try {tries}: {e}"),
            Err(e) => panic!("the new address was never used: {e}"),
        }
    };
    assert_eq!(row["customer"], "Ada & Co <!channel>");
    let chosen = database.address_chain().unwrap().choose().await.unwrap();
    assert_eq!(chosen.address, IpAddr::V4(LOCALHOST));
}

#[tokio::test]
async fn a_pool_busy_past_its_acquire_timeout_still_reaches_a_one_address_database() {
    // One connection, held by a slow query: a second lookup times out waiting for the pool, which
    // sets the address aside (a pool timeout may also be an address that swallows connections).
    // With no other address, the next lookup must still reach the database.
    let dns = DnsServer::start(DnsMode::Answer(vec![LOCALHOST])).await;
    let settings = DbSettings {
        max_connections: 1,
        acquire_timeout: Duration::from_millis(300),
        ..db_settings(&dns, &[], "OPSRELAY_TEST_CA_FILE")
    };
    let url = named_url(Engine::Postgres).await;
    let database = Database::connect_lazy(&Secret::new(url.clone()), &settings).unwrap();
    fetch(&database, Engine::Postgres).await.unwrap().unwrap();
    // Another way in, to see when the slow query holds the one connection.
    let by_address = url
        .replace(&service("OPSRELAY_TEST_DB_NAME"), "127.0.0.1")
        .replace("?sslmode=require", "");
    let watcher = sqlx::PgPool::connect(&by_address).await.unwrap();
    let slow = crate::common::rules(
        "[rules.\"slow\"]\nquery = \"SELECT pg_sleep(1.5)::text AS slept FROM orders WHERE id = $1\"\nid_type = \"integer\"\ntext = \"x\"\n",
    );
    let slow = slow.get("slow").unwrap();
    let id = RecordId::parse("42").unwrap();
    let holding = database.fetch_record(
        slow,
        slow.query.as_ref().unwrap(),
        &id,
        Duration::from_secs(5),
    );
    let waiting = async {
        let sleeping = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'";
        while sqlx::query_scalar::<_, i64>(sleeping)
            .fetch_one(&watcher)
            .await
            .unwrap()
            == 0
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        fetch(&database, Engine::Postgres).await
    };
    let (held, waited) = tokio::join!(holding, waiting);
    held.unwrap().unwrap();
    assert!(
        matches!(waited, Err(LookupError::Unavailable(_))),
        "{waited:?}"
    );
    let row = fetch(&database, Engine::Postgres).await.unwrap().unwrap();
    assert_eq!(row["customer"], "Ada & Co <!channel>");
}

async fn an_address_serving_a_certificate_for_another_name_is_refused(engine: Engine) {
    // The server's certificate names db.opsrelay.test, from the trusted CA: reached as
    // other.opsrelay.test (as when an address now belongs to another instance), the chain is good and
    // the name is not.
    let dns = DnsServer::start(DnsMode::Answer(vec![LOCALHOST])).await;
    let url = named_url(engine)
        .await
        .replace(&service("OPSRELAY_TEST_DB_NAME"), "other.opsrelay.test");
    let settings = db_settings(&dns, &[], "OPSRELAY_TEST_CA_FILE");
    let database = Database::connect_lazy(&Secret::new(url), &settings).unwrap();
    let error = fetch(&database, engine).await.unwrap_err();
    let LookupError::Unavailable(text) = &error else {
        panic!("expected the address to be refused, got {error:?}");
    };
    assert!(
        text.contains("no certificate valid for other.opsrelay.test"),
        "{text}"
    );
}

#[tokio::test]
async fn postgres_an_address_serving_a_certificate_for_another_name_is_refused() {
    an_address_serving_a_certificate_for_another_name_is_refused(Engine::Postgres).await;
}

#[tokio::test]
async fn mariadb_an_address_serving_a_certificate_for_another_name_is_refused() {
    an_address_serving_a_certificate_for_another_name_is_refused(Engine::MariaDb).await;
}
