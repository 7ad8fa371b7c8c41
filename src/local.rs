//! The local run: the main job on embedded defaults, with no AWS and no servers. Sample events (or
//! your own) go through the same pipeline as in Lambda, against an SQLite database made from seed
//! data (or `OPSRELAY_DATABASE_URL`); Slack messages are printed (or posted when a destination's
//! webhook variable is set); failures go to a local dead-letter file in JSON lines. The rules'
//! sources are polled first (the embedded rules get one on the bundled database), with their
//! cursors in a file beside the dead-letter file, and their events join the samples.
//!
//! Each event is "received" up to `OPSRELAY_MAX_RECEIVE_COUNT` times, as SQS would redeliver it, so
//! the retry and last-receive paths behave as they do in production.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use tokio::time::Instant;

use crate::config::{self, MissingWebhook, Settings};
use crate::db::Database;
use crate::deadletter::DeadLetters;
use crate::lock::lock;
use crate::pipeline::{Outcome, Relay, Tally};
use crate::rules::Rules;
use crate::secret::Secret;
use crate::source::send::EventQueue;
use crate::source::store::CursorStore;
use crate::source::{Polled, Poller};

/// The rules used when `OPSRELAY_RULES` is not set.
pub const EMBEDDED_RULES: &str = include_str!("defaults/rules.toml");
/// The seed data of the local SQLite database.
pub const EMBEDDED_SEED: &str = include_str!("defaults/seed.sql");
/// The sample events: an SQS batch as Lambda receives it, with a poison event among them.
pub const EMBEDDED_EVENTS: &str = include_str!("defaults/events.json");
/// The local run's source on the bundled database, added to the embedded rules.
pub const EMBEDDED_SOURCES: &str = include_str!("defaults/sources.toml");
/// The cursor file's name, beside the dead-letter file (unless `OPSRELAY_STATE_FILE` says where).
pub const CURSOR_FILE: &str = "opsrelay-cursors.json";

/// How long one local "invocation" may take.
const PASS_TIMEOUT: Duration = Duration::from_secs(60);

/// What the local run does.
#[derive(Clone, Debug)]
pub struct LocalOptions {
    /// An SQS event JSON file (`{"Records": [...]}`); the embedded samples when `None`.
    pub events: Option<PathBuf>,
    /// Where dead-lettered messages are written (JSON lines, appended).
    pub dead_letters: PathBuf,
}

/// The counts the local run ends with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub delivered: usize,
    /// Acknowledged without posting, by a `drop` route.
    pub dropped: usize,
    /// Redeliveries made after a transient failure.
    pub retried: usize,
    pub dead_lettered: usize,
    /// Still failing after the last receive without a dead-letter (the dead-letter file failed).
    pub undelivered: usize,
    /// Every pass's counts per rule (the Lambda's metrics).
    pub tally: Tally,
    /// What the poll of each source did.
    pub polled: Vec<Polled>,
}

/// The rules from `OPSRELAY_RULES`, or the embedded ones.
pub fn rules_or_embedded(settings: &Settings) -> Result<Rules, anyhow::Error> {
    rules_or(settings, EMBEDDED_RULES)
}

/// The rules from `OPSRELAY_RULES`, or `embedded`.
fn rules_or(settings: &Settings, embedded: &str) -> Result<Rules, anyhow::Error> {
    match &settings.rules_path {
        Some(_) => settings.load_rules(),
        None => Ok(Rules::parse("(embedded rules)", embedded)?),
    }
}

/// Runs the local job.
pub async fn run(options: &LocalOptions) -> Result<Summary, anyhow::Error> {
    let settings = Settings::from_env()?;
    let rules = rules_or(&settings, &format!("{EMBEDDED_RULES}\n{EMBEDDED_SOURCES}"))?;
    let resolved = config::resolve(
        &settings,
        &rules,
        |name| std::env::var(name).ok(),
        MissingWebhook::Print,
        None,
    )
    .await;
    resolved.problems.into_result()?;
    let (_scratch, database) =
        database_or_seeded(&settings, resolved.database_url.as_ref()).await?;
    let mut events = match &options.events {
        Some(path) => read_events(path)?,
        None => serde_json::from_str::<SqsEvent>(EMBEDDED_EVENTS)?.records,
    };
    let (polled, polled_events) =
        poll_sources(&settings, &rules, &database, &options.dead_letters).await;
    events.extend(polled_events);
    let max_receives = settings.max_receive_count;
    let relay = Relay::new(
        settings,
        rules,
        Some(database),
        resolved.destinations,
        DeadLetters::file(options.dead_letters.clone()),
    )?;
    let mut summary = Summary {
        polled,
        ..Summary::default()
    };
    let mut pending = events;
    for receive in 1..=max_receives {
        if pending.is_empty() {
            break;
        }
        for record in &mut pending {
            record
                .attributes
                .insert("ApproximateReceiveCount".into(), receive.to_string());
        }
        let results = relay
            .run_batch(&pending, Instant::now() + PASS_TIMEOUT)
            .await;
        summary.tally.add(&Tally::of(&results));
        let mut again = Vec::new();
        for (record, result) in pending.into_iter().zip(results) {
            match result.outcome {
                Outcome::Delivered => summary.delivered += 1,
                Outcome::Dropped { .. } => summary.dropped += 1,
                Outcome::DeadLettered(_) => summary.dead_lettered += 1,
                Outcome::Retry { .. } => again.push(record),
            }
        }
        if receive < max_receives {
            summary.retried += again.len();
        }
        pending = again;
    }
    summary.undelivered = pending.len();
    Ok(summary)
}

/// Polls the rules' sources once into a queue in memory, their cursors in `OPSRELAY_STATE_FILE` or
/// beside `dead_letters`: what each poll did, and the events it sent.
async fn poll_sources(
    settings: &Settings,
    rules: &Rules,
    database: &Database,
    dead_letters: &Path,
) -> (Vec<Polled>, Vec<SqsMessage>) {
    if rules.sources.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let file = settings.poll.state_file.clone();
    let file = file.unwrap_or_else(|| dead_letters.with_file_name(CURSOR_FILE));
    let events = Arc::new(Mutex::new(Vec::new()));
    let poller = Poller {
        store: CursorStore::File(file),
        queue: EventQueue::Memory(events.clone()),
        query_timeout: settings.db.query_timeout,
    };
    let until = Instant::now() + PASS_TIMEOUT;
    let report = poller.poll(database, &rules.sources, until).await;
    (report, std::mem::take(&mut *lock(&events)))
}

/// The configured database, or a scratch SQLite database seeded with the sample data (kept while
/// the returned guard lives).
pub async fn database_or_seeded(
    settings: &Settings,
    url: Option<&Secret<String>>,
) -> Result<(Option<ScratchDatabase>, Database), anyhow::Error> {
    if let Some(url) = url {
        return Ok((None, Database::connect_lazy(url, &settings.db)?));
    }
    let scratch = ScratchDatabase::new();
    let database = Database::connect_lazy(&scratch.url(), &settings.db)?;
    database.execute_script(EMBEDDED_SEED).await?;
    Ok((Some(scratch), database))
}

fn read_events(path: &Path) -> Result<Vec<SqsMessage>, anyhow::Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read the events file {}: {e}", path.display()))?;
    let event: SqsEvent = serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{} is not an SQS event ({e}): give {{\"Records\": [...]}} as Lambda receives it",
            path.display()
        )
    })?;
    Ok(event.records)
}

/// A throw-away SQLite file for the seeded local database, removed when dropped.
pub struct ScratchDatabase {
    path: PathBuf,
}

impl ScratchDatabase {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let path =
            std::env::temp_dir().join(format!("opsrelay-local-{}-{nanos}.db", std::process::id()));
        Self { path }
    }

    fn url(&self) -> Secret<String> {
        Secret::new(format!("sqlite://{}?mode=rwc", self.path.display()))
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.path.display()));
        }
    }
}
