//! Time to the first successful query through flaky DNS, opsrelay's address chain next to a plain
//! connection through a resolver with default settings (5 s timeout, 2 retries), and the cost the
//! chain adds per invocation when DNS is healthy and cached. Prints a table.
//!
//! Needs the test services: `. tests/services.sh && cargo bench --bench first_query`.

#[path = "../tests/integration/common/dns.rs"]
mod dns;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use dns::{DnsMode, DnsServer};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use opsrelay::config::Settings;
use opsrelay::db::Database;
use opsrelay::db::DnsSettings;
use opsrelay::event::RecordId;
use opsrelay::rules::Rules;
use opsrelay::secret::Secret;
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use tokio::time::Instant;

const LOCALHOST: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const SAMPLES: usize = 15;

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run `. tests/services.sh` first"))
}

struct Bench {
    url: String,
    port: u16,
    rules: Rules,
}

impl Bench {
    fn database(&self, dns: &DnsServer, fallbacks: &[IpAddr]) -> Database {
        let mut settings = Settings::from_lookup(|_| None).unwrap();
        settings.db.ca_file = Some(env("OPSRELAY_TEST_CA_FILE").into());
        settings.db.host_addrs = fallbacks.to_vec();
        settings.db.dns = DnsSettings {
            servers: vec![dns.address],
            ..settings.db.dns
        };
        Database::connect_lazy(&Secret::new(self.url.clone()), &settings.db).unwrap()
    }

    async fn first_query(&self, database: &Database) -> Duration {
        let rule = self.rules.get("a.b").unwrap();
        let started = Instant::now();
        database
            .fetch_record(
                rule,
                rule.query.as_ref().unwrap(),
                &RecordId::parse("1").unwrap(),
                Duration::from_secs(30),
            )
            .await
            .expect("the query succeeds");
        started.elapsed()
    }

    /// A plain path: a resolver with default settings, then a TLS connection to the answer.
    async fn default_path(&self, dns: &DnsServer) -> Result<Duration, Duration> {
        let started = Instant::now();
        let mut connection = ConnectionConfig::udp();
        connection.port = dns.address.port();
        let config = ResolverConfig::from_name_servers(vec![NameServerConfig::new(
            dns.address.ip(),
            true,
            vec![connection],
        )]);
        let resolver = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(ResolverOpts::default())
            .build()
            .unwrap();
        let Ok(answer) = resolver.lookup_ip("db.opsrelay.test").await else {
            return Err(started.elapsed());
        };
        let address = answer.iter().next().unwrap();
        let options = self
            .url
            .parse::<PgConnectOptions>()
            .unwrap()
            .host(&address.to_string())
            .port(self.port)
            .ssl_mode(PgSslMode::VerifyCa)
            .ssl_root_cert(env("OPSRELAY_TEST_CA_FILE"));
        let pool = sqlx::PgPool::connect_with(options).await.unwrap();
        sqlx::query("SELECT 1").execute(&pool).await.unwrap();
        Ok(started.elapsed())
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

#[tokio::main]
async fn main() {
    let admin = env("OPSRELAY_TEST_POSTGRES_URL");
    let pool = sqlx::PgPool::connect(&admin).await.unwrap();
    sqlx::raw_sql("CREATE TABLE IF NOT EXISTS bench_first_query (id BIGINT PRIMARY KEY); INSERT INTO bench_first_query VALUES (1) ON CONFLICT DO NOTHING")
        .execute(&pool)
        .await
        .unwrap();
    let port: u16 = admin
        .rsplit(':')
        .next()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let bench = Bench {
        url: admin.replace("127.0.0.1", "db.opsrelay.test"),
        port,
        rules: Rules::parse("bench", "[rules.\"a.b\"]\nquery = \"SELECT id FROM bench_first_query WHERE id = $1\"\nid_type = \"integer\"\ntext = \"x\"\n").unwrap(),
    };
    let dns = DnsServer::start(DnsMode::Answer(vec![LOCALHOST])).await;

    let mut rows: Vec<(String, Duration)> = Vec::new();
    let mut samples = Vec::new();
    for _ in 0..SAMPLES {
        samples.push(bench.first_query(&bench.database(&dns, &[])).await);
    }
    rows.push(("opsrelay chain, healthy DNS".into(), median(samples)));

    dns.set(DnsMode::Drop);
    let mut samples = Vec::new();
    for _ in 0..SAMPLES {
        samples.push(
            bench
                .first_query(&bench.database(&dns, &[IpAddr::V4(LOCALHOST)]))
                .await,
        );
    }
    let chain_blackhole = median(samples);
    rows.push((
        "opsrelay chain, DNS black-holed, fallback address (cold start)".into(),
        chain_blackhole,
    ));

    let mut samples = Vec::new();
    for _ in 0..SAMPLES {
        dns.set(DnsMode::Answer(vec![LOCALHOST]));
        let database = bench.database(&dns, &[]);
        bench.first_query(&database).await;
        dns.set(DnsMode::Drop);
        samples.push(bench.first_query(&database).await);
    }
    rows.push((
        "opsrelay chain, DNS black-holed, last known good (warm process)".into(),
        median(samples),
    ));

    dns.set(DnsMode::Answer(vec![LOCALHOST]));
    let mut samples = Vec::new();
    for _ in 0..5 {
        samples.push(bench.default_path(&dns).await.expect("healthy DNS answers"));
    }
    rows.push((
        "default resolver (5 s, 2 retries), healthy DNS".into(),
        median(samples),
    ));

    dns.set(DnsMode::Drop);
    let mut samples = Vec::new();
    for _ in 0..3 {
        samples.push(
            bench
                .default_path(&dns)
                .await
                .expect_err("a black hole never answers"),
        );
    }
    let default_blackhole = median(samples);
    rows.push((
        "default resolver (5 s, 2 retries), DNS black-holed: fails after".into(),
        default_blackhole,
    ));

    // Per-invocation cost of the chain with healthy, cached DNS: a warm pool, the chain on vs off.
    dns.set(DnsMode::Cacheable(vec![LOCALHOST]));
    let on = bench.database(&dns, &[]);
    let mut off_settings = Settings::from_lookup(|_| None).unwrap();
    off_settings.db.address_path = false;
    let off = Database::connect_lazy(&Secret::new(admin.clone()), &off_settings.db).unwrap();
    bench.first_query(&on).await;
    bench.first_query(&off).await;
    let mut with_chain = Vec::new();
    let mut without = Vec::new();
    for _ in 0..300 {
        with_chain.push(bench.first_query(&on).await);
        without.push(bench.first_query(&off).await);
    }
    let (with_chain, without) = (median(with_chain), median(without));
    rows.push(("warm query, chain on (DNS cached)".into(), with_chain));
    rows.push(("warm query, chain off".into(), without));

    println!("\n| path | time |\n|---|---|");
    for (name, time) in &rows {
        println!("| {name} | {} |", ms(*time));
    }
    println!(
        "\nDNS black hole: opsrelay {} vs default {} → {:.0}× faster; chain cost per warm query: {:.3} ms",
        ms(chain_blackhole),
        ms(default_blackhole),
        default_blackhole.as_secs_f64() / chain_blackhole.as_secs_f64(),
        (with_chain.as_secs_f64() - without.as_secs_f64()) * 1e3
    );
}
