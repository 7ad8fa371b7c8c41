//! The database as the source: a poll reads each source's new rows from the read replica
//! ([`read`]) and sends them into the source queue as raw events ([`send`]), so that retries,
//! pacing, digests and the DLQ apply unchanged; the application publishes nothing. A source's cursor
//! ([`cursor`]) moves only past the rows whose send succeeded, by a compare-and-set in the cursor
//! store ([`store`]): a poll killed midway, or beaten by an overlapping one, leaves at most its
//! rows sent twice, never a row missed.

pub mod cursor;
pub mod read;
pub mod send;
pub mod store;

use std::time::Duration;

use chrono::{NaiveDateTime, Utc};
use tokio::time::Instant;

use crate::config::Settings;
use crate::db::Database;
use crate::human::Age;
use crate::metrics::{Emf, Unit};
use crate::rules::{CursorKind, Source};
use cursor::Cursor;
use read::{ReadError, SourceRow};
use send::EventQueue;
use store::{CursorStore, StoreError};

/// What one poll of one source did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Polled {
    pub source: String,
    /// Rows sent as events, and of them, rows that committed late (found in the trailing window).
    pub sent: usize,
    pub late: usize,
    /// Since the source was last caught up (nothing left to read, the horizon not held back).
    pub cursor_age: Duration,
    /// Why it stopped short, if it did.
    pub problem: Option<String>,
}

impl Polled {
    /// `orders: 120 sent (3 late), caught up 2 s ago`, or why it stopped.
    pub fn line(&self) -> String {
        let status = match &self.problem {
            Some(problem) => format!("stopped: {problem}"),
            None => format!("caught up {} ago", Age(self.cursor_age)),
        };
        format!(
            "{}: {} sent ({} late), {status}",
            self.source, self.sent, self.late
        )
    }
}

/// Why a poll of a source stopped.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Send(String),
    #[error(
        "the cursor of source `{name}` in {place} is a {stored:?} cursor, but the source says cursor = {wanted:?}: reset it as runbooks/poller-behind.md says"
    )]
    OtherKind {
        name: String,
        place: String,
        stored: CursorKind,
        wanted: CursorKind,
    },
}

/// Whether a read left rows to read at once (it read a whole batch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum More {
    Rows,
    None,
}

/// Polls sources: built once, with the store and the queue it writes to.
#[derive(Clone, Debug)]
pub struct Poller {
    pub store: CursorStore,
    pub queue: EventQueue,
    pub query_timeout: Duration,
}

impl Poller {
    /// The poller `settings` configure, with its clients made from `sdk`; `None` when a setting it
    /// needs is missing ([`crate::config::Problems::of_sources`] says which).
    pub fn from_settings(settings: &Settings, sdk: &aws_config::SdkConfig) -> Option<Self> {
        let poll = &settings.poll;
        let url = poll.source_queue_url.clone()?;
        let store = match (&poll.state_table, &poll.state_file) {
            (Some(table), _) => CursorStore::Dynamo {
                client: aws_sdk_dynamodb::Client::new(sdk),
                table: table.clone(),
            },
            (None, Some(path)) => CursorStore::File(path.clone()),
            (None, None) => return None,
        };
        let client = aws_sdk_sqs::Client::new(sdk);
        Some(Self {
            store,
            queue: EventQueue::Sqs { client, url },
            query_timeout: settings.db.query_timeout,
        })
    }

    /// Polls every source every `interval` until `until` (no poll starts later than an interval
    /// before it), handing each poll's report to `each`: what one scheduled invocation does, since
    /// a schedule fires at most once a minute. The last poll's report.
    pub async fn run(
        &self,
        database: &Database,
        sources: &[Source],
        interval: Duration,
        until: Instant,
        mut each: impl FnMut(&[Polled]),
    ) -> Vec<Polled> {
        loop {
            let started = Instant::now();
            let report = self.poll(database, sources, until).await;
            each(&report);
            let next = started + interval;
            if next + interval > until {
                return report;
            }
            tokio::time::sleep_until(next).await;
        }
    }

    /// Polls every source once, each until it is caught up or `deadline` comes.
    pub async fn poll(
        &self,
        database: &Database,
        sources: &[Source],
        deadline: Instant,
    ) -> Vec<Polled> {
        let mut report = Vec::with_capacity(sources.len());
        for source in sources {
            let mut polled = Polled {
                source: source.name.clone(),
                sent: 0,
                late: 0,
                cursor_age: Duration::ZERO,
                problem: None,
            };
            loop {
                match self.poll_once(database, source, &mut polled).await {
                    Ok(More::Rows) if Instant::now() < deadline => continue,
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!(source = %source.name, error = %error, "The poll of a source stopped short.");
                        polled.problem = Some(error.to_string());
                        break;
                    }
                }
            }
            tracing::info!(source = %source.name, sent = polled.sent, late = polled.late, cursor_age_ms = polled.cursor_age.as_millis() as u64, "Polled a source.");
            report.push(polled);
        }
        report
    }

    /// One read of `source` and its send; whether rows are left to read now.
    async fn poll_once(
        &self,
        database: &Database,
        source: &Source,
        polled: &mut Polled,
    ) -> Result<More, PollError> {
        let stored = self.store.load(&source.name).await?;
        let mut state = stored.state.clone();
        let timeout = self.query_timeout;
        read::no_nulls(database, source, timeout).await?;
        let cursor = self.cursor(database, source, &state).await?;
        let rows = read::after(database, source, &cursor, timeout).await?;
        let late = self.late_rows(database, source, &cursor).await?;
        let sent_late = self.queue.send(source, &late).await;
        let sent = match sent_late.failure {
            None => self.queue.send(source, &rows).await,
            Some(_) => send::Sent::default(),
        };
        let moved = advance(
            source,
            cursor,
            &late[..sent_late.count],
            &rows[..sent.count],
        );
        let failure = sent_late.failure.or(sent.failure);
        let more = if rows.len() == source.batch {
            More::Rows
        } else {
            More::None
        };
        let mut caught_up = failure.is_none() && more == More::None;
        if source.cursor == CursorKind::Xid {
            let (xmin, xmax) = read::horizon(database, source, timeout).await?;
            let held = xmin != xmax && state.horizon.as_deref() == Some(xmin.as_str());
            caught_up &= !held;
            state.horizon = Some(xmin);
        }
        let now = Utc::now();
        if caught_up || state.caught_up_at.is_none() {
            state.caught_up_at = Some(now);
        }
        state.cursor = Some(moved);
        self.store
            .save(&source.name, &state, stored.version)
            .await?;
        polled.sent += sent_late.count + sent.count;
        polled.late += sent_late.count;
        polled.cursor_age = state
            .caught_up_at
            .map_or(Duration::ZERO, |at| (now - at).to_std().unwrap_or_default());
        match failure {
            Some(failure) => Err(PollError::Send(failure)),
            None => Ok(more),
        }
    }

    /// The cursor `state` holds for `source` (its start before the first row), of the source's kind;
    /// an `id` cursor with what this poll sees (the highest id, by the database's clock).
    async fn cursor(
        &self,
        database: &Database,
        source: &Source,
        state: &cursor::State,
    ) -> Result<Cursor, PollError> {
        let cursor = match &state.cursor {
            Some(cursor) if cursor.kind() != source.cursor => {
                return Err(PollError::OtherKind {
                    name: source.name.clone(),
                    place: self.store.place(),
                    stored: cursor.kind(),
                    wanted: source.cursor,
                });
            }
            Some(cursor) => cursor.clone(),
            None => Cursor::start(source.cursor),
        };
        if source.cursor != CursorKind::Id {
            return Ok(cursor);
        }
        let (highest, now) = read::highest(database, source, self.query_timeout).await?;
        let micros = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        Ok(cursor.marked(highest, now, micros(source.delay), micros(source.window)))
    }

    /// The rows of a cursor's trailing window it has not sent: those that committed late.
    async fn late_rows(
        &self,
        database: &Database,
        source: &Source,
        cursor: &Cursor,
    ) -> Result<Vec<SourceRow>, PollError> {
        let unsent = |row: &SourceRow| match cursor {
            Cursor::Xid { .. } => false,
            Cursor::Timestamp { sent, .. } => {
                !sent.iter().any(|(at, id)| *id == row.id && *at == row.at)
            }
            Cursor::Id { sent, .. } => !sent.contains(row.id),
        };
        let window = read::window(database, source, cursor, self.query_timeout).await?;
        Ok(window.into_iter().filter(unsent).collect())
    }
}

/// The cursor past `late` and `rows` (both sent): for `xid`, the last row; for `timestamp` and
/// `id`, the last row of the main read, and the newest rows sent within the window (at most
/// [`cursor::MAX_SENT`]) kept as sent.
fn advance(source: &Source, cursor: Cursor, late: &[SourceRow], rows: &[SourceRow]) -> Cursor {
    match cursor {
        Cursor::Xid { xid, id } => match rows.last() {
            Some(last) => Cursor::Xid {
                xid: last.at.clone(),
                id: last.id,
            },
            None => Cursor::Xid { xid, id },
        },
        Cursor::Timestamp { ts, id, mut sent } => {
            let (ts, id) = rows
                .last()
                .map_or((ts, id), |last| (last.at.clone(), last.id));
            sent.extend(late.iter().chain(rows).map(|row| (row.at.clone(), row.id)));
            let window =
                chrono::TimeDelta::from_std(source.window).unwrap_or(chrono::TimeDelta::MAX);
            let oldest = parse_ts(&ts).and_then(|t| t.checked_sub_signed(window));
            sent.retain(|(at, _)| match (parse_ts(at), oldest) {
                (Some(at), Some(oldest)) => at >= oldest,
                _ => true,
            });
            // The text sorts as the time it prints: `YYYY-MM-DD HH:MM:SS.ffffff`.
            sent.sort_unstable();
            sent.drain(..sent.len().saturating_sub(cursor::MAX_SENT));
            Cursor::Timestamp { ts, id, sent }
        }
        Cursor::Id {
            id,
            upto,
            floor,
            mut sent,
            marks,
        } => {
            for row in late.iter().chain(rows) {
                sent.insert(row.id);
            }
            sent.keep_highest(cursor::MAX_SENT as u64);
            Cursor::Id {
                id: rows.last().map_or(id, |last| last.id),
                upto,
                floor,
                sent,
                marks,
            }
        }
    }
}

fn parse_ts(text: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").ok()
}

/// A poll's metrics, one EMF line per source (dimension `Source`, and none: what `CursorAgeAlarm`
/// reads): rows sent, of them late, and the cursor's age.
pub fn emf_lines(report: &[Polled], at: std::time::SystemTime) -> Vec<String> {
    report
        .iter()
        .map(|polled| {
            Emf::new(at)
                .dimension("Source", &polled.source)
                .rollup()
                .value("PolledRows", Unit::Count, polled.sent as u64)
                .value("LateRows", Unit::Count, polled.late as u64)
                .value(
                    "CursorAge",
                    Unit::Milliseconds,
                    polled.cursor_age.as_millis() as u64,
                )
                .line()
        })
        .collect()
}
