//! The database as the source: sources polled from a real PostgreSQL hot standby (the `xid` cursor)
//! and MariaDB (the `timestamp` and `id` cursors) while writers commit transactions of random length, into
//! a queue in moto, with the cursors in moto's DynamoDB or a file. Every row written must become an
//! event; duplicates are counted and bounded.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use opsrelay::db::Database;
use opsrelay::rules::Rules;
use opsrelay::secret::Secret;
use opsrelay::source::cursor::{Cursor, State};
use opsrelay::source::send::{CURSOR_ATTRIBUTE, EventQueue};
use opsrelay::source::store::{CursorStore, StoreError};
use opsrelay::source::{Polled, Poller};
use tokio::time::Instant;

use crate::common::flaky_aws::FlakyAws;
use crate::common::{drain, opsrelay_at_moto, queues, sdk, sdk_at, service, settings, unique};

/// A small random generator (xorshift), seeded per writer.
struct Random(u64);

impl Random {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Rules whose source `rows` reads `query` with cursor `kind`.
fn rules(query: &str, kind: &str, extra: &str) -> Rules {
    let text = format!(
        "[rules.\"order.created\"]\ntext = \"Order {{{{ event.id }}}}\"\n[sources.\"rows\"]\nevent_type = \"order.created\"\nquery = \"{query}\"\ncursor = \"{kind}\"\n{extra}"
    );
    Rules::parse("sources.toml", &text).expect("valid source rules")
}

/// A DynamoDB table of cursors in moto.
async fn state_table() -> (aws_sdk_dynamodb::Client, String) {
    let client = aws_sdk_dynamodb::Client::new(&sdk().await);
    let table = unique("cursors");
    client
        .create_table()
        .table_name(&table)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("source")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("source")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("create the cursor table in moto");
    (client, table)
}

fn poller(store: CursorStore, client: aws_sdk_sqs::Client, url: &str) -> Poller {
    Poller {
        store,
        queue: EventQueue::Sqs {
            client,
            url: url.to_string(),
        },
        query_timeout: Duration::from_secs(10),
    }
}

/// A poller into `queues`' source queue with its cursors in a file of `dir`.
fn file_poller(queues: &crate::common::Queues, dir: &tempfile::TempDir) -> Poller {
    let store = CursorStore::File(dir.path().join("cursors.json"));
    poller(store, queues.client.clone(), &queues.source)
}

/// One poll of `rules`' source on `url` that is bound to stop short: why, and how many rows it
/// sent first.
async fn stopped(poller: &Poller, url: &str, rules: &Rules) -> (String, usize) {
    let far = Instant::now() + Duration::from_secs(10);
    let polled = poller.poll(&database(url), &rules.sources, far).await;
    (
        polled[0].problem.clone().unwrap_or_default(),
        polled[0].sent,
    )
}

fn database(url: &str) -> Database {
    Database::connect_lazy(&Secret::new(url.to_string()), &settings(&[]).db).unwrap()
}

/// Every event in `queue`, as `(id, cursor value)` from its cursor attribute (the value empty for an
/// `id` cursor, whose attribute is the id alone), with duplicates.
async fn events(client: &aws_sdk_sqs::Client, queue: &str) -> Vec<(i64, String)> {
    drain(client, queue)
        .await
        .iter()
        .map(|message| {
            let cursor = message.message_attributes().unwrap()[CURSOR_ATTRIBUTE]
                .string_value()
                .unwrap();
            let (at, id) = cursor.rsplit_once('/').unwrap_or(("", cursor));
            (id.parse().unwrap(), at.to_string())
        })
        .collect()
}

/// Each write committed, as `(id, cursor value)`.
type Written = Arc<Mutex<BTreeSet<(i64, String)>>>;

/// Writes to `table` on the primary for `run`: transactions of 1 to 3 inserts and updates, most
/// short, one in ten held open 2.5 s (longer than any poll interval or delay).
async fn pg_writer(url: String, table: String, seed: u64, run: Duration, written: Written) {
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let mut random = Random(seed);
    let until = Instant::now() + run;
    while Instant::now() < until {
        let mut tx = pool.begin().await.unwrap();
        let mut mine = Vec::new();
        for _ in 0..1 + random.below(3) {
            let sql = if random.below(3) == 0 {
                format!(
                    "UPDATE {table} SET note = 'updated' WHERE id = (SELECT max(id) FROM {table}) RETURNING id, xid::text"
                )
            } else {
                format!("INSERT INTO {table} (note) VALUES ('new') RETURNING id, xid::text")
            };
            let row: Option<(i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .fetch_optional(&mut *tx)
                .await
                .unwrap();
            mine.extend(row);
        }
        let hold = if random.below(10) == 0 {
            2_500
        } else {
            random.below(50)
        };
        tokio::time::sleep(Duration::from_millis(hold)).await;
        tx.commit().await.unwrap();
        written.lock().unwrap().extend(mine);
    }
}

/// `opsrelay poll --every 200ms` as a process, with the source's environment.
fn poll_process(env: &[(&str, String)]) -> tokio::process::Child {
    opsrelay_at_moto(&["poll", "--every", "200ms"])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("OPSRELAY_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_xid_cursor_on_a_standby_misses_no_row_of_concurrent_transactions_even_when_killed() {
    let primary = service("OPSRELAY_TEST_POSTGRES_URL");
    let standby = service("OPSRELAY_TEST_POSTGRES_STANDBY_URL");
    let table = unique("polled").replace('-', "_");
    let pool = sqlx::PgPool::connect(&primary).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {table} (id BIGSERIAL PRIMARY KEY, note TEXT,
           xid xid8 NOT NULL DEFAULT pg_current_xact_id());
         CREATE FUNCTION {table}_xid() RETURNS trigger AS $$
           BEGIN NEW.xid := pg_current_xact_id(); RETURN NEW; END $$ LANGUAGE plpgsql;
         CREATE TRIGGER {table}_xid BEFORE UPDATE ON {table}
           FOR EACH ROW EXECUTE FUNCTION {table}_xid();"
    )))
    .execute(&pool)
    .await
    .unwrap();
    let queues = queues(5, 30).await;
    let (_, cursors) = state_table().await;
    let dir = tempfile::tempdir().unwrap();
    let rules_file = dir.path().join("rules.toml");
    std::fs::write(
        &rules_file,
        format!("[rules.\"order.created\"]\ntext = \"x\"\n[sources.\"rows\"]\nevent_type = \"order.created\"\nquery = \"SELECT id, xid FROM {table}\"\ncursor = \"xid\"\nbatch = 20\n"),
    )
    .unwrap();
    let env = [
        ("OPSRELAY_RULES", rules_file.display().to_string()),
        ("OPSRELAY_DATABASE_URL", standby.clone()),
        ("OPSRELAY_SOURCE_QUEUE_URL", queues.source.clone()),
        ("OPSRELAY_STATE_TABLE", cursors.clone()),
    ];

    let written: Written = Arc::default();
    let writers = futures::future::join_all((1..=4).map(|seed| {
        let run = Duration::from_secs(6);
        tokio::spawn(pg_writer(
            primary.clone(),
            table.clone(),
            seed,
            run,
            written.clone(),
        ))
    }));
    let killer = async {
        let mut kills = 0;
        for pause in [1_300, 1_700, 1_100] {
            let mut poll = poll_process(&env);
            tokio::time::sleep(Duration::from_millis(pause)).await;
            poll.kill().await.unwrap();
            kills += 1;
        }
        kills
    };
    let (_, kills) = tokio::join!(writers, killer);
    // The writers are done and the standby has replayed them: two polls read the rest.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for _ in 0..2 {
        let once = opsrelay_at_moto(&["poll"])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .await
            .unwrap();
        assert!(
            once.status.success(),
            "{}",
            String::from_utf8_lossy(&once.stdout)
        );
    }

    // A row written twice between two polls is one event of its last write (the relay reads the
    // row as it is then): what must be seen is every row's last write.
    let written = written.lock().unwrap().clone();
    let mut last: std::collections::BTreeMap<i64, (u64, String)> = Default::default();
    for (id, xid) in &written {
        let n: u64 = xid.parse().unwrap();
        if last.get(id).is_none_or(|(m, _)| n > *m) {
            last.insert(*id, (n, xid.clone()));
        }
    }
    let events = events(&queues.client, &queues.source).await;
    let seen: BTreeSet<(i64, String)> = events.iter().cloned().collect();
    let missed: Vec<_> = last
        .iter()
        .filter(|(id, (_, xid))| !seen.contains(&(**id, xid.clone())))
        .collect();
    let duplicates = events.len() - seen.len();
    println!(
        "xid cursor on the standby: {} writes to {} rows, {} events, missed {}, duplicates {duplicates} ({kills} kills, batch 20)",
        written.len(),
        last.len(),
        events.len(),
        missed.len()
    );
    assert!(written.len() > 100, "the writers wrote: {}", written.len());
    assert!(missed.is_empty(), "missed: {missed:?}");
    assert!(duplicates <= kills * 20, "{duplicates} duplicates");
}

/// Writes to `table` on MariaDB for `run`: transactions of 1 to 2 inserts, one in six held open
/// 3 s (longer than the sources' delays: such rows commit late).
async fn mariadb_writer(url: String, table: String, seed: u64, run: Duration, written: Written) {
    let pool = sqlx::MySqlPool::connect(&url).await.unwrap();
    let mut random = Random(seed);
    let until = Instant::now() + run;
    while Instant::now() < until {
        let mut tx = pool.begin().await.unwrap();
        let mut mine = Vec::new();
        for _ in 0..1 + random.below(2) {
            let insert = format!("INSERT INTO {table} (note) VALUES ('new')");
            let done = sqlx::query(sqlx::AssertSqlSafe(insert))
                .execute(&mut *tx)
                .await
                .unwrap();
            let id = done.last_insert_id() as i64;
            let select = format!(
                "SELECT DATE_FORMAT(ts, '%Y-%m-%d %H:%i:%s.%f') FROM {table} WHERE id = {id}"
            );
            let (ts,): (String,) = sqlx::query_as(sqlx::AssertSqlSafe(select))
                .fetch_one(&mut *tx)
                .await
                .unwrap();
            mine.push((id, ts));
        }
        let hold = if random.below(6) == 0 {
            3_000
        } else {
            random.below(50)
        };
        tokio::time::sleep(Duration::from_millis(hold)).await;
        tx.commit().await.unwrap();
        written.lock().unwrap().extend(mine);
    }
}

async fn mariadb_table() -> (String, String) {
    let url = service("OPSRELAY_TEST_MYSQL_URL");
    let table = unique("polled").replace('-', "_");
    let pool = sqlx::MySqlPool::connect(&url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {table} (id BIGINT AUTO_INCREMENT PRIMARY KEY, note TEXT,
           ts DATETIME(6) NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6))"
    )))
    .execute(&pool)
    .await
    .unwrap();
    (url, table)
}

fn total(polls: &[Vec<Polled>], of: impl Fn(&Polled) -> usize) -> usize {
    polls.iter().flatten().map(of).sum()
}

/// Three MariaDB writers on a fresh table for 5 s while `kind`'s source (`delay`, 30 s window)
/// is polled every 200 ms, then twice more once they are done: the rows written, every event in
/// the queue, and the polls' reports.
async fn polled_while_mariadb_writes(
    kind: &str,
    columns: &str,
    delay: &str,
) -> (
    BTreeSet<(i64, String)>,
    Vec<(i64, String)>,
    Vec<Vec<Polled>>,
) {
    let (url, table) = mariadb_table().await;
    let queues = queues(5, 30).await;
    let dir = tempfile::tempdir().unwrap();
    let poller = file_poller(&queues, &dir);
    let rules = rules(
        &format!("SELECT {columns} FROM {table}"),
        kind,
        &format!("delay = \"{delay}\"\nwindow = \"30s\"\n"),
    );
    let database = database(&url);
    let written: Written = Arc::default();
    let writers = futures::future::join_all((7..=9).map(|seed| {
        let run = Duration::from_secs(5);
        tokio::spawn(mariadb_writer(
            url.clone(),
            table.clone(),
            seed,
            run,
            written.clone(),
        ))
    }));
    let polls = async {
        let mut polls = Vec::new();
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            polls.push(poller.poll(&database, &rules.sources, until).await);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        polls
    };
    let (_, mut polls) = tokio::join!(writers, polls);
    for _ in 0..2 {
        // Past the delay, so that the last rows are due.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let far = Instant::now() + Duration::from_secs(30);
        polls.push(poller.poll(&database, &rules.sources, far).await);
    }
    let written = written.lock().unwrap().clone();
    (written, events(&queues.client, &queues.source).await, polls)
}

/// Checks that every row `written` is among `events` once, that no poll stopped, and that some
/// rows came late; prints the counts under `label`.
fn every_row_once_some_late<K: Ord + Clone + std::fmt::Debug>(
    label: &str,
    written: &BTreeSet<K>,
    events: &[K],
    polls: &[Vec<Polled>],
) {
    let seen: BTreeSet<K> = events.iter().cloned().collect();
    let missed: Vec<_> = written.difference(&seen).collect();
    let late = total(polls, |p| p.late);
    println!(
        "{label}: {} rows, {} events, late {late}, missed {}, duplicates {}",
        written.len(),
        events.len(),
        missed.len(),
        events.len() - seen.len()
    );
    assert!(
        polls.iter().flatten().all(|p| p.problem.is_none()),
        "{polls:?}"
    );
    assert!(missed.is_empty(), "missed: {missed:?}");
    assert_eq!(events.len(), seen.len(), "a late row is sent once");
    assert!(late > 0, "rows held longer than the delay commit late");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_timestamp_cursor_sends_rows_that_commit_late_as_late_events_and_misses_none_within_the_window()
 {
    let (written, events, polls) = polled_while_mariadb_writes("timestamp", "id, ts", "1s").await;
    every_row_once_some_late("timestamp cursor on MariaDB", &written, &events, &polls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_id_cursor_sends_ids_that_commit_after_higher_ones_as_late_events_and_misses_none() {
    let (written, events, polls) = polled_while_mariadb_writes("id", "id", "200ms").await;
    let written: BTreeSet<i64> = written.iter().map(|(id, _)| *id).collect();
    let ids: Vec<i64> = events.iter().map(|(id, _)| *id).collect();
    every_row_once_some_late("id cursor on MariaDB", &written, &ids, &polls);
}

/// A PostgreSQL table with a sequence's ids, for an `id` source.
async fn serial_table(pool: &sqlx::PgPool) -> String {
    let table = unique("serial").replace('-', "_");
    let create = format!("CREATE TABLE {table} (id BIGSERIAL PRIMARY KEY, note TEXT)");
    sqlx::query(sqlx::AssertSqlSafe(create))
        .execute(pool)
        .await
        .unwrap();
    table
}

/// Inserts a row into `table` within `tx` (open) or at once; its id.
async fn insert_serial<'c, E: sqlx::PgExecutor<'c>>(executor: E, table: &str) -> i64 {
    let insert = format!("INSERT INTO {table} (note) VALUES ('x') RETURNING id");
    let (id,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(insert))
        .fetch_one(executor)
        .await
        .unwrap();
    id
}

/// On PostgreSQL: an id taken by a transaction still open while a higher one commits and is sent;
/// what each of three polls sends (and of it, late) when the transaction commits after the second.
async fn an_id_committed_after_a_higher_one(window: &str, wait: Duration) -> Vec<(usize, usize)> {
    let url = service("OPSRELAY_TEST_POSTGRES_URL");
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let table = serial_table(&pool).await;
    let queues = queues(5, 30).await;
    let dir = tempfile::tempdir().unwrap();
    let poller = file_poller(&queues, &dir);
    let extra = format!("delay = \"0s\"\nwindow = \"{window}\"\n");
    let rules = rules(&format!("SELECT id FROM {table}"), "id", &extra);
    let database = database(&url);
    let far = || Instant::now() + Duration::from_secs(30);
    let mut open = pool.begin().await.unwrap();
    let held = insert_serial(&mut *open, &table).await;
    assert!(insert_serial(&pool, &table).await > held);
    let mut polls = Vec::new();
    let poll = async || {
        let polled = poller.poll(&database, &rules.sources, far()).await;
        assert_eq!(polled[0].problem, None);
        (polled[0].sent, polled[0].late)
    };
    polls.push(poll().await);
    tokio::time::sleep(wait).await;
    polls.push(poll().await);
    open.commit().await.unwrap();
    polls.push(poll().await);
    polls
}

#[tokio::test]
async fn an_id_committed_after_a_higher_one_is_sent_late_within_the_window() {
    let polls = an_id_committed_after_a_higher_one("30s", Duration::ZERO).await;
    assert_eq!(polls, [(1, 0), (0, 0), (1, 1)]);
}

#[tokio::test]
async fn an_id_committed_later_than_the_trailing_window_is_missed_as_documented() {
    let polls = an_id_committed_after_a_higher_one("1s", Duration::from_millis(1_200)).await;
    assert_eq!(polls, [(1, 0), (0, 0), (0, 0)]);
}

#[tokio::test]
async fn a_row_committed_later_than_the_trailing_window_is_missed_as_documented() {
    let (url, table) = mariadb_table().await;
    let queues = queues(5, 30).await;
    let dir = tempfile::tempdir().unwrap();
    let poller = file_poller(&queues, &dir);
    let rules = rules(
        &format!("SELECT id, ts FROM {table}"),
        "timestamp",
        "delay = \"0s\"\nwindow = \"2s\"\n",
    );
    let database = database(&url);
    let pool = sqlx::MySqlPool::connect(&url).await.unwrap();
    let insert = |ts: &str| format!("INSERT INTO {table} (note, ts) VALUES ('x', {ts})");
    sqlx::query(sqlx::AssertSqlSafe(insert("NOW(6)")))
        .execute(&pool)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let far = Instant::now() + Duration::from_secs(30);
    assert_eq!(poller.poll(&database, &rules.sources, far).await[0].sent, 1);
    // Stamped 3 s before the cursor and committed only now: older than the 2 s window.
    sqlx::query(sqlx::AssertSqlSafe(insert("NOW(6) - INTERVAL 3 SECOND")))
        .execute(&pool)
        .await
        .unwrap();
    // Stamped 1 s before the cursor: within the window, a late event.
    sqlx::query(sqlx::AssertSqlSafe(insert("NOW(6) - INTERVAL 1 SECOND")))
        .execute(&pool)
        .await
        .unwrap();
    let polled = poller.poll(&database, &rules.sources, far).await;
    assert_eq!((polled[0].sent, polled[0].late), (1, 1), "{polled:?}");
    assert_eq!(events(&queues.client, &queues.source).await.len(), 2);
}

#[tokio::test]
async fn of_two_writes_from_one_version_of_a_cursor_only_the_first_moves_it() {
    let (client, table) = state_table().await;
    let dir = tempfile::tempdir().unwrap();
    let stores = [
        CursorStore::Dynamo { client, table },
        CursorStore::File(dir.path().join("cursors.json")),
    ];
    for store in stores {
        let state = |id| State {
            cursor: Some(Cursor::Xid {
                xid: "100".into(),
                id,
            }),
            ..State::default()
        };
        store.save("rows", &state(1), None).await.unwrap();
        let first = store.load("rows").await.unwrap();
        let second = store.load("rows").await.unwrap();
        store.save("rows", &state(2), first.version).await.unwrap();
        let raced = store.save("rows", &state(3), second.version).await;
        assert!(
            matches!(raced, Err(StoreError::Raced(_))),
            "{}: {raced:?}",
            store.place()
        );
        assert_eq!(
            store.load("rows").await.unwrap().state,
            state(2),
            "{}",
            store.place()
        );
    }
}

#[tokio::test]
async fn two_polls_racing_for_one_cursor_send_every_row_and_leave_the_cursor_at_the_end() {
    let primary = service("OPSRELAY_TEST_POSTGRES_URL");
    let table = xid_table(&primary, 60).await;
    let queues = queues(5, 30).await;
    let (client, cursors) = state_table().await;
    let store = CursorStore::Dynamo {
        client,
        table: cursors,
    };
    let poller = poller(store.clone(), queues.client.clone(), &queues.source);
    let rules = rules(
        &format!("SELECT id, xid FROM {table}"),
        "xid",
        "batch = 10\n",
    );
    let database = database(&primary);
    let far = Instant::now() + Duration::from_secs(30);
    let (a, b) = tokio::join!(
        poller.poll(&database, &rules.sources, far),
        poller.poll(&database, &rules.sources, far)
    );
    let raced = [&a, &b].iter().filter(|p| p[0].problem.is_some()).count();
    // Whichever lost a race stopped short; one more poll finishes its share.
    poller.poll(&database, &rules.sources, far).await;
    let events = events(&queues.client, &queues.source).await;
    let ids: BTreeSet<i64> = events.iter().map(|(id, _)| *id).collect();
    println!(
        "two racing polls: {raced} lost a race; {} events for 60 rows",
        events.len()
    );
    assert_eq!(ids, (1..=60).collect());
    let stored = store.load("rows").await.unwrap().state.cursor;
    assert!(
        matches!(stored, Some(Cursor::Xid { id: 60, .. })),
        "{stored:?}"
    );
}

/// A table on `url` with an `xid` column and `rows` rows, committed.
async fn xid_table(url: &str, rows: i64) -> String {
    let table = unique("polled").replace('-', "_");
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {table} (id BIGSERIAL PRIMARY KEY, xid xid8 NOT NULL DEFAULT pg_current_xact_id());
         INSERT INTO {table} SELECT FROM generate_series(1, {rows});"
    )))
    .execute(&pool)
    .await
    .unwrap();
    // Other tests hold transactions open on this server: wait until these rows are below the
    // horizon, as a poll sees them.
    let below = format!("SELECT max(xid) < pg_snapshot_xmin(pg_current_snapshot()) FROM {table}");
    let until = Instant::now() + Duration::from_secs(30);
    while !sqlx::query_scalar::<_, bool>(sqlx::AssertSqlSafe(below.clone()))
        .fetch_one(&pool)
        .await
        .unwrap()
    {
        assert!(
            Instant::now() < until,
            "the horizon passed the rows within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    table
}

#[tokio::test]
async fn a_send_failing_midway_moves_the_cursor_only_past_the_rows_sent() {
    let primary = service("OPSRELAY_TEST_POSTGRES_URL");
    let table = xid_table(&primary, 25).await;
    let queues = queues(5, 30).await;
    let flaky = FlakyAws::start(service("OPSRELAY_TEST_AWS_ENDPOINT"), 0).await;
    flaky.fail_batch_calls_from(2);
    let flaky_sqs = aws_sdk_sqs::Client::new(&sdk_at(&flaky.url).await);
    let dir = tempfile::tempdir().unwrap();
    let store = CursorStore::File(dir.path().join("cursors.json"));
    let poller = poller(store.clone(), flaky_sqs, &queues.source);
    let rules = rules(&format!("SELECT id, xid FROM {table}"), "xid", "");
    let database = database(&primary);
    let far = Instant::now() + Duration::from_secs(30);

    let first = poller.poll(&database, &rules.sources, far).await;
    assert_eq!(first[0].sent, 10, "{first:?}");
    assert!(
        first[0]
            .problem
            .as_deref()
            .unwrap()
            .contains("sending to the source queue failed")
    );
    let stored = store.load("rows").await.unwrap().state.cursor;
    assert!(
        matches!(stored, Some(Cursor::Xid { id: 10, .. })),
        "{stored:?}"
    );
    flaky.fail_batch_calls_from(0);
    let second = poller.poll(&database, &rules.sources, far).await;
    assert_eq!(second[0].sent, 15, "{second:?}");
    let ids: Vec<i64> = events(&queues.client, &queues.source)
        .await
        .iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(ids.len(), 25, "each row once: {ids:?}");
}

#[tokio::test]
async fn a_source_whose_query_does_not_return_its_cursor_column_stops_with_a_clear_error() {
    let primary = service("OPSRELAY_TEST_POSTGRES_URL");
    let table = xid_table(&primary, 3).await;
    let queues = queues(5, 30).await;
    let dir = tempfile::tempdir().unwrap();
    let poller = file_poller(&queues, &dir);
    let rules = rules(&format!("SELECT id FROM {table}"), "xid", "");
    let (problem, sent) = stopped(&poller, &primary, &rules).await;
    assert!(
        problem.starts_with("the query of source `rows` failed:") && problem.contains("xid"),
        "{problem}"
    );
    assert_eq!(sent, 0);
}

#[tokio::test]
async fn a_cursor_item_of_another_shape_stops_the_poll_and_says_how_to_reset_it() {
    let primary = service("OPSRELAY_TEST_POSTGRES_URL");
    let table = xid_table(&primary, 3).await;
    let queues = queues(5, 30).await;
    let (client, cursors) = state_table().await;
    client
        .put_item()
        .table_name(&cursors)
        .item("source", AttributeValue::S("rows".into()))
        .item("state", AttributeValue::S(r#"{"position": 7}"#.into()))
        .item("version", AttributeValue::N("1".into()))
        .send()
        .await
        .unwrap();
    let store = CursorStore::Dynamo {
        client,
        table: cursors,
    };
    let poller = poller(store, queues.client.clone(), &queues.source);
    let rules = rules(&format!("SELECT id, xid FROM {table}"), "xid", "");
    let (problem, sent) = stopped(&poller, &primary, &rules).await;
    assert!(problem.contains("is not one opsrelay wrote"), "{problem}");
    assert!(problem.contains("runbooks/poller-behind.md"), "{problem}");
    assert_eq!(sent, 0);
}

#[tokio::test]
async fn a_row_with_a_null_cursor_column_stops_the_poll_naming_the_row() {
    let (url, table) = mariadb_table().await;
    let pool = sqlx::MySqlPool::connect(&url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {table} (note) VALUES ('a'); INSERT INTO {table} (note, ts) VALUES ('b', NULL);"
    )))
    .execute(&pool)
    .await
    .unwrap();
    let queues = queues(5, 30).await;
    let dir = tempfile::tempdir().unwrap();
    let poller = file_poller(&queues, &dir);
    let rules = rules(
        &format!("SELECT id, ts FROM {table}"),
        "timestamp",
        "delay = \"0s\"\n",
    );
    let (problem, sent) = stopped(&poller, &url, &rules).await;
    assert!(problem.contains("NULL `ts` (id 2)"), "{problem}");
    assert_eq!(sent, 0, "nothing is sent past a row that cannot be ordered");
}

#[tokio::test]
async fn the_lambda_polls_its_sources_on_the_schedules_event_and_writes_their_metrics() {
    use crate::common::lambda::Lambda;
    use crate::common::runtime::{Posted, RuntimeApi};
    let primary = service("OPSRELAY_TEST_POSTGRES_URL");
    let table = xid_table(&primary, 12).await;
    let queues = queues(5, 30).await;
    let (_, cursors) = state_table().await;
    let slack = crate::common::slack::SlackStandIn::start(vec![]).await;
    let api = RuntimeApi::start().await;
    let rules = format!(
        "[rules.\"order.created\"]\ntext = \"x\"\n[sources.\"rows\"]\nevent_type = \"order.created\"\nquery = \"SELECT id, xid FROM {table}\"\ncursor = \"xid\"\n"
    );
    let env = [
        ("OPSRELAY_DATABASE_URL", primary.clone()),
        ("OPSRELAY_SLACK_WEBHOOK_URL", slack.url.clone()),
        ("OPSRELAY_DLQ_URL", queues.dlq.clone()),
        ("OPSRELAY_SOURCE_QUEUE_URL", queues.source.clone()),
        ("OPSRELAY_STATE_TABLE", cursors),
        ("OPSRELAY_POLL_INTERVAL_MS", "300".into()),
    ];
    let lambda = Lambda::start(&api, &rules, &env).await;
    api.invoke(
        "poll-1",
        serde_json::json!({"opsrelay": "poll"}),
        Duration::from_secs(3),
    );
    let answer = api.result_of("poll-1", Duration::from_secs(10)).await;
    let Some(Posted::Response { body, .. }) = answer else {
        panic!("{answer:?}\n{}", lambda.log());
    };
    assert_eq!(body[0]["source"], "rows", "{body}");
    assert!(body[0]["problem"].is_null(), "{body}");
    assert_eq!(events(&queues.client, &queues.source).await.len(), 12);
    let log = lambda.log();
    let metrics: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| l.contains("\"CursorAge\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        metrics.len() >= 2,
        "a line per poll of the invocation:\n{log}"
    );
    assert_eq!(metrics[0]["PolledRows"], 12);
    assert_eq!(
        metrics[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0][0],
        "Source"
    );
}

#[tokio::test]
async fn doctor_reads_each_source_as_a_poll_does_and_reports_its_cursor() {
    let primary = service("OPSRELAY_TEST_POSTGRES_URL");
    let table = xid_table(&primary, 2).await;
    let queues = queues(5, 30).await;
    let (_, cursors) = state_table().await;
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        format!(
            "[rules.\"order.created\"]\ntext = \"x\"\n\
             [sources.\"good\"]\nevent_type = \"order.created\"\nquery = \"SELECT id, xid FROM {table}\"\ncursor = \"xid\"\n\
             [sources.\"bad\"]\nevent_type = \"order.created\"\nquery = \"SELECT id FROM {table}\"\ncursor = \"xid\"\n"
        ),
    )
    .unwrap();
    let out = opsrelay_at_moto(&["doctor"])
        .env("OPSRELAY_RULES", &rules)
        .env("OPSRELAY_DATABASE_URL", &primary)
        .env("OPSRELAY_SOURCE_QUEUE_URL", &queues.source)
        .env("OPSRELAY_STATE_TABLE", &cursors)
        .output()
        .await
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let line = |name: &str| {
        report
            .lines()
            .find(|l| l.contains(&format!("source {name}:")))
            .unwrap_or_else(|| panic!("no line for source {name}:\n{report}"))
            .to_string()
    };
    assert!(line("good").starts_with("ok"), "{report}");
    assert!(line("good").contains("returns id and xid"), "{report}");
    assert!(
        line("good").contains(&format!("no cursor in DynamoDB table {cursors} yet")),
        "{report}"
    );
    assert!(line("bad").starts_with("FAIL"), "{report}");
    assert!(line("bad").contains("xid"), "{report}");
}
