//! The rules file's sources (`[sources."<name>"]`): which rows of the read replica become events of
//! which type, so that the application need not publish them. A source names its event type (whose
//! rule renders the events as any other), a query returning the rows' `id` (an integer) and cursor
//! columns, and the cursor kind:
//!
//! - `xid` (PostgreSQL): the query returns `xid` (a column `xid8 DEFAULT pg_current_xact_id()`); rows
//!   are read in `(xid, id)` order below the oldest running transaction, so none is ever missed,
//!   even on a standby and when transactions commit out of order.
//! - `timestamp` (any engine): the query returns `ts`; rows are read in `(ts, id)` order up to the
//!   database's clock less `delay`, and a trailing `window` is read again for rows committed late
//!   (sent then as late events, never twice).
//! - `id` (any engine): the query returns `id` alone, an increasing id; an id is dated by the
//!   database's clock when a poll first sees it as the highest, rows are read in id order up to the
//!   highest id seen `delay` ago, and ids of the trailing `window` are read again for rows
//!   committed late (an id taken by a transaction that commits after a higher one).

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{Checker, RulesError};
use crate::human::parse_duration;

/// Rows one poll of a source reads at most.
pub const DEFAULT_BATCH: usize = 500;
pub const MAX_BATCH: usize = 10_000;
/// A timestamp or id cursor's defaults: how far behind the database's clock it reads, and how far back it
/// reads again for rows committed late.
pub const DEFAULT_DELAY: Duration = Duration::from_secs(5);
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(600);

/// How a source remembers how far it has read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CursorKind {
    /// PostgreSQL's transaction horizon: `(xid, id)`.
    Xid,
    /// `(ts, id)` behind the database's clock, with a trailing window read again.
    Timestamp,
    /// An increasing `id`, dated by the database's clock when first seen, with the same delay and
    /// trailing window.
    Id,
}

impl CursorKind {
    /// The columns its query must return.
    pub fn columns(self) -> &'static [&'static str] {
        match self {
            CursorKind::Xid => &["id", "xid"],
            CursorKind::Timestamp => &["id", "ts"],
            CursorKind::Id => &["id"],
        }
    }

    /// Its name in the rules file.
    pub fn name(self) -> &'static str {
        match self {
            CursorKind::Xid => "xid",
            CursorKind::Timestamp => "timestamp",
            CursorKind::Id => "id",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SourceSpec {
    event_type: String,
    query: String,
    cursor: CursorKind,
    delay: Option<String>,
    window: Option<String>,
    batch: Option<u64>,
}

/// A checked source.
#[derive(Clone, Debug)]
pub struct Source {
    pub name: String,
    /// The type of the events it makes; a rule of the file renders them.
    pub event_type: String,
    /// Returns the rows' `id` and cursor columns; opsrelay reads it in cursor order.
    pub query: Arc<str>,
    pub cursor: CursorKind,
    pub delay: Duration,
    pub window: Duration,
    pub batch: usize,
}

impl Checker<'_> {
    /// The source `name`, checked against the rules (`has_rule` tells whether a rule renders its
    /// event type).
    pub(super) fn source(
        &self,
        name: String,
        spec: SourceSpec,
        has_rule: impl Fn(&str) -> bool,
    ) -> Result<Source, RulesError> {
        let key = |k: &str| format!("sources.\"{name}\".{k}");
        if !has_rule(&spec.event_type) {
            return Err(self.fail(
                key("event_type"),
                format!("no rule renders events of type `{}`", spec.event_type),
                "add a [rules.\"<that type>\"] table, or name the type of an existing rule",
            ));
        }
        if spec.query.trim().is_empty() {
            return Err(self.fail(
                key("query"),
                "the query is empty".into(),
                "write the SELECT that returns the rows' id and cursor columns, e.g. SELECT id, xid FROM orders",
            ));
        }
        let batch = spec.batch.unwrap_or(DEFAULT_BATCH as u64);
        if !(1..=MAX_BATCH as u64).contains(&batch) {
            return Err(self.fail(
                key("batch"),
                format!("{batch} rows a poll; a source reads 1 to {MAX_BATCH}"),
                "set how many rows one poll reads at most",
            ));
        }
        let duration = |k: &str, text: Option<String>, default: Duration| match text {
            None => Ok(default),
            Some(text) => parse_duration(&text).ok_or_else(|| {
                self.fail(
                    key(k),
                    format!("{text:?} is not a duration"),
                    "write a number and a unit: 500ms, 5s, 10m or 1h",
                )
            }),
        };
        Ok(Source {
            event_type: spec.event_type,
            query: Arc::from(spec.query.trim().trim_end_matches(';')),
            cursor: spec.cursor,
            delay: duration("delay", spec.delay, DEFAULT_DELAY)?,
            window: duration("window", spec.window, DEFAULT_WINDOW)?,
            batch: batch as usize,
            name,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::rules::Rules;

    const RULE: &str = "[rules.\"order.created\"]\ntext = \"x\"\n";

    fn error(source: &str) -> String {
        let text = format!("{RULE}[sources.\"orders\"]\n{source}");
        Rules::parse("rules.toml", &text).unwrap_err().to_string()
    }

    #[test]
    fn a_source_names_its_query_cursor_and_the_rule_that_renders_its_events() {
        let text = format!(
            "{RULE}[sources.\"orders\"]\nevent_type = \"order.created\"\nquery = \"SELECT id, xid FROM orders;\"\ncursor = \"xid\"\nbatch = 100\n"
        );
        let rules = Rules::parse("rules.toml", &text).unwrap();
        let source = &rules.sources[0];
        assert_eq!(&*source.query, "SELECT id, xid FROM orders");
        assert_eq!((source.batch, source.delay), (100, super::DEFAULT_DELAY));
    }

    #[test]
    fn a_source_of_a_type_no_rule_renders_is_refused_naming_the_file_source_and_key() {
        let e = error("event_type = \"order.paid\"\nquery = \"SELECT 1\"\ncursor = \"xid\"");
        assert!(
            e.starts_with("rules file rules.toml: sources.\"orders\".event_type"),
            "{e}"
        );
        assert!(e.contains("fix: add a [rules."), "{e}");
    }

    #[test]
    fn a_bad_duration_or_cursor_kind_is_refused_with_the_fix() {
        let e = error(
            "event_type = \"order.created\"\nquery = \"SELECT 1\"\ncursor = \"timestamp\"\ndelay = \"soon\"",
        );
        assert!(
            e.contains("sources.\"orders\".delay") && e.contains("500ms, 5s"),
            "{e}"
        );
        let e = error("event_type = \"order.created\"\nquery = \"SELECT 1\"\ncursor = \"lsn\"");
        assert!(e.contains("cursor"), "{e}");
    }
}
