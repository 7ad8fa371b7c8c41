//! What `stats`, `peek` and `tasks` print: the counts by event type and failure, the list of messages,
//! the move tasks; each as a table for a person or as JSON for a script.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::letter::Summary;
use super::native::Task;
use super::queue::Depth;
use crate::deadletter::Letter;
use crate::human::Age;

/// How a command prints what it found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// What a DLQ (or a file) holds.
#[derive(Clone, Debug, Serialize)]
pub struct Stats {
    /// SQS's counts (a queue only).
    pub depth: Option<Depth>,
    /// Messages read to count the rest.
    pub scanned: usize,
    /// The longest time since a message failed (since it was sent, for one without a reason).
    pub oldest_age_seconds: Option<u64>,
    pub by_event_type: BTreeMap<String, u64>,
    /// Most frequent first.
    pub by_failure: Vec<FailureCount>,
}

/// Messages that failed the same way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FailureCount {
    pub class: String,
    pub code: String,
    pub count: u64,
    /// One of their reasons.
    pub example: String,
}

/// Shown for a message whose event type could not be read.
const UNKNOWN_TYPE: &str = "(unknown)";

impl Stats {
    pub fn of(depth: Option<Depth>, letters: &[Letter], now: DateTime<Utc>) -> Self {
        let mut by_event_type = BTreeMap::new();
        let mut by_failure: BTreeMap<(String, String), FailureCount> = BTreeMap::new();
        for letter in letters {
            let kind = letter.event_type().unwrap_or_else(|| UNKNOWN_TYPE.into());
            *by_event_type.entry(kind).or_insert(0) += 1;
            let key = (letter.class().to_string(), letter.code().to_string());
            by_failure
                .entry(key)
                .or_insert_with(|| FailureCount {
                    class: letter.class().to_string(),
                    code: letter.code().to_string(),
                    count: 0,
                    example: letter.reason().to_string(),
                })
                .count += 1;
        }
        let mut by_failure: Vec<FailureCount> = by_failure.into_values().collect();
        by_failure.sort_by(|a, b| b.count.cmp(&a.count).then(a.code.cmp(&b.code)));
        Stats {
            depth,
            scanned: letters.len(),
            oldest_age_seconds: letters
                .iter()
                .filter_map(|l| l.age(now))
                .max()
                .map(|a| a.as_secs()),
            by_event_type,
            by_failure,
        }
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        if let Some(depth) = self.depth {
            out += &format!(
                "Depth: {} visible, {} in flight, {} delayed\n",
                depth.visible, depth.in_flight, depth.delayed
            );
        }
        out += &format!(
            "Scanned: {} messages, oldest {}\n\nBy event type:\n",
            self.scanned,
            self.oldest_age_seconds
                .map_or("-".into(), |s| Age::from_secs(s).compact())
        );
        for (kind, count) in &self.by_event_type {
            out += &format!("  {count:>7}  {kind}\n");
        }
        out += "\nBy failure:\n";
        for failure in &self.by_failure {
            out += &format!(
                "  {:>7}  {:<10} {:<22} {}\n",
                failure.count,
                failure.class,
                failure.code,
                cut(&failure.example, 80)
            );
        }
        out
    }
}

/// The messages as a table.
pub fn messages(summaries: &[Summary]) -> String {
    let columns = [
        ("MESSAGE ID", 36),
        ("EVENT TYPE", 20),
        ("CLASS", 10),
        ("CODE", 22),
        ("AGE", -8),
        ("RECEIVES", -8),
        ("REASON", 0),
    ];
    let rows = summaries.iter().map(|s| {
        vec![
            s.message_id.clone(),
            cut(s.event_type.as_deref().unwrap_or(UNKNOWN_TYPE), 20),
            s.class.clone(),
            cut(&s.code, 22),
            s.age_seconds
                .map_or("-".into(), |s| Age::from_secs(s).compact()),
            s.receive_count.map_or("-".into(), |c| c.to_string()),
            cut(&s.reason, 80),
        ]
    });
    table(&columns, rows)
}

/// The move tasks as a table.
pub fn tasks(tasks: &[Task]) -> String {
    let columns = [
        ("STATUS", 11),
        ("MOVED", -9),
        ("TO MOVE", -9),
        ("RATE", -6),
        ("STARTED", 19),
        ("DESTINATION", 40),
        ("HANDLE", 0),
    ];
    let rows = tasks.iter().map(|t| {
        let started = t.started_at.map(|at| at.format("%Y-%m-%d %H:%M:%S"));
        let failure = t.failure_reason.as_deref();
        vec![
            t.status.clone(),
            t.moved.to_string(),
            t.to_move.map_or("-".into(), |n| n.to_string()),
            t.rate.map_or("-".into(), |r| r.to_string()),
            started.map_or("-".into(), |at| at.to_string()),
            t.destination_arn
                .as_deref()
                .unwrap_or("(its sources)")
                .into(),
            t.handle.as_deref().unwrap_or("-").to_string()
                + &failure.map_or(String::new(), |r| format!("  failed: {r}")),
        ]
    });
    table(&columns, rows)
}

/// Rows under a header; a column's width is left-aligned when positive, right-aligned when
/// negative, and not padded when 0 (the last column).
fn table(columns: &[(&str, isize)], rows: impl Iterator<Item = Vec<String>>) -> String {
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(columns)
            .map(|(cell, &(_, width))| match width {
                w if w > 0 => format!("{cell:<w$}", w = w as usize),
                w if w < 0 => format!("{cell:>w$}", w = (-w) as usize),
                _ => cell.clone(),
            })
            .collect();
        padded.join("  ").trim_end().to_string() + "\n"
    };
    let header = line(columns.iter().map(|(title, _)| title.to_string()).collect());
    rows.map(line).fold(header, |out, row| out + &row)
}

/// At most `max` characters, on one line.
fn cut(text: &str, max: usize) -> String {
    let line = text.replace(['\n', '\r'], " ");
    if line.chars().count() <= max {
        line
    } else {
        line.chars().take(max - 1).collect::<String>() + "…"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_reason_is_cut_to_one_line() {
        assert_eq!(cut("a\nb", 10), "a b");
        assert_eq!(cut("abcdef", 4), "abc…");
    }
}
