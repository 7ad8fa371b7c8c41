//! `opsrelay doctor` (and the Lambda's doctor event): checks, one line each with its timing and a
//! verdict, everything the relay needs to reach, from where it runs: each configuration problem,
//! each DNS server's answer for the database host, the address chosen and its source, TCP, TLS,
//! login, the rules' queries (prepared, not run), the sources (their queries read as a poll reads
//! them, their cursors), each Slack webhook host through the client that posts (without posting),
//! and the DLQ. A configuration that is incomplete is reported, never a
//! reason to stop: every check that can run, runs.

mod database;
mod reach;
mod sources;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::config::{ConfigError, Settings};
use crate::db::Database;
use crate::deadletter::DeadLetters;
use crate::human::Age;
use crate::pipeline::Relay;
use crate::rules::Rules;
use crate::slack::{Destination, SlackClient};
use crate::source::Poller;
use crate::startup::Parts;

/// One check may take this long.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// One line of the report.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
    pub elapsed_ms: f64,
}

/// Every check, in order.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub ok: bool,
    pub checks: Vec<Check>,
}

impl Report {
    async fn run<F>(&mut self, name: impl Into<String>, check: F)
    where
        F: Future<Output = Result<String, String>>,
    {
        let started = Instant::now();
        let result = match tokio::time::timeout(CHECK_TIMEOUT, check).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {}", Age(CHECK_TIMEOUT))),
        };
        let (ok, detail) = match result {
            Ok(detail) => (true, detail),
            Err(detail) => (false, detail),
        };
        self.checks.push(Check {
            name: name.into(),
            ok,
            detail,
            elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
        });
    }

    /// One line per check: `ok`/`FAIL`, the name, the detail and the time.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for check in &self.checks {
            out.push_str(&format!(
                "{:<5} {}: {} ({:.1} ms)\n",
                if check.ok { "ok" } else { "FAIL" },
                check.name,
                check.detail,
                check.elapsed_ms
            ));
        }
        out
    }
}

/// What the doctor looks at: the parts of a relay, borrowed from a running one or read leniently
/// from the environment, and the configuration's problems.
pub struct Subject<'a> {
    pub settings: &'a Settings,
    pub rules: &'a Rules,
    pub database: Option<&'a Database>,
    pub slack: &'a SlackClient,
    pub destinations: &'a BTreeMap<String, Destination>,
    /// `None` when no DLQ is configured (one of the problems).
    pub dead_letters: Option<&'a DeadLetters>,
    /// `None` when the rules have no sources (or its settings are one of the problems).
    pub poller: Option<&'a Poller>,
    pub problems: Vec<&'a ConfigError>,
}

impl<'a> Subject<'a> {
    /// A running relay: its configuration was complete, or it would not have started.
    pub fn of_relay(relay: &'a Relay) -> Self {
        Subject {
            settings: relay.settings(),
            rules: relay.rules(),
            database: relay.database(),
            slack: relay.slack(),
            destinations: relay.destinations(),
            dead_letters: Some(relay.dead_letters()),
            poller: relay.poller(),
            problems: Vec::new(),
        }
    }

    /// What the environment configures, problems included; `slack` made from its settings as the
    /// relay makes its own.
    pub fn of_parts(parts: &'a Parts, slack: &'a SlackClient) -> Self {
        Subject {
            settings: &parts.settings,
            rules: &parts.rules,
            database: parts.database.as_ref(),
            slack,
            destinations: &parts.destinations,
            dead_letters: parts.dead_letters.as_ref(),
            poller: parts.poller.as_ref(),
            problems: parts.problems.iter().collect(),
        }
    }
}

/// Runs every check against what `subject` uses.
pub async fn run(subject: &Subject<'_>) -> Report {
    let mut report = Report::default();
    for problem in &subject.problems {
        let text = format!("{}; fix: {}", problem.problem, problem.fix);
        report
            .run(format!("config {}", problem.variable), async { Err(text) })
            .await;
    }
    if let Some(database) = subject.database {
        database::check(&mut report, subject, database).await;
        sources::check(&mut report, subject, database).await;
    }
    reach::slack(&mut report, subject).await;
    reach::dead_letters(&mut report, subject.dead_letters).await;
    report.ok = report.checks.iter().all(|c| c.ok);
    report
}
