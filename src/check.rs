//! `opsrelay check` and `opsrelay render`: what an operator runs before changing a rule. `check`
//! validates the settings, the rules file and the destinations without side effects; `render` shows
//! the Slack message an event would produce, and a Block Kit Builder link that previews it.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use aws_lambda_events::sqs::SqsMessage;
use tokio::time::Instant;

use crate::aws::is_secret_arn;
use crate::config::{self, Problems, Settings};
use crate::db::{Database, Record};
use crate::event;
use crate::local;
use crate::pipeline::{compose, template_context};

/// Checks everything that can be checked without touching AWS, the database or Slack.
pub async fn run() -> Result<ExitCode, anyhow::Error> {
    let settings = Settings::from_env()?;
    println!("ok    settings");
    let rules = local::rules_or_embedded(&settings)?;
    let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
    println!("ok    rules: {} ({})", names.len(), names.join(", "));
    let mut failed = 0;
    let mut set = BTreeMap::new();
    for name in rules.iter().flat_map(|r| r.all_destinations()) {
        let Some(value) = std::env::var(name).ok().filter(|v| !v.trim().is_empty()) else {
            continue;
        };
        if set.insert(name.clone(), ()).is_some() {
            continue;
        }
        if is_secret_arn(value.trim()) {
            println!("ok    destination {name}: a Secrets Manager secret (read at start-up)");
            continue;
        }
        match config::check_webhook_url(name, &value) {
            Ok(()) => println!("ok    destination {name}: a webhook URL"),
            Err(e) => {
                failed += 1;
                println!("FAIL  destination {e}");
            }
        }
    }
    match &settings.database_url {
        Some(url) if is_secret_arn(url.expose()) => {
            println!("ok    database: a Secrets Manager secret (read at start-up)")
        }
        Some(url) => match Database::connect_lazy(url, &settings.db) {
            Ok(db) => println!("ok    database: {} (not connected)", db.engine()),
            Err(e) => {
                failed += 1;
                println!("FAIL  database: {e}");
            }
        },
        None if rules.iter().all(|r| r.query.is_none()) => println!("ok    database: none needed"),
        None => {}
    }
    let mut problems = Problems::of_rules(&rules, settings.database_url.is_some(), &set);
    problems.extend(Problems::of_dlq_url(settings.dlq_url.as_deref()));
    if settings.dlq_url.is_some() {
        println!("ok    dead-letter queue set");
    }
    for problem in problems.iter() {
        failed += 1;
        println!(
            "FAIL  {}: {} (fix: {})",
            problem.variable, problem.problem, problem.fix
        );
    }
    if failed > 0 {
        println!("{failed} problem(s)");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the Slack message for the event in `event_file`, with the record from `row_file` or
/// from the database.
pub async fn render(event_file: &Path, row_file: Option<&Path>) -> Result<ExitCode, anyhow::Error> {
    let settings = Settings::from_env()?;
    let rules = local::rules_or_embedded(&settings)?;
    let text = std::fs::read_to_string(event_file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", event_file.display()))?;
    let record = record_from_file(&text);
    let event =
        event::parse(&record).map_err(|e| anyhow::anyhow!("{}: {e}", event_file.display()))?;
    let message = match row_file {
        Some(path) => {
            let row: Record =
                serde_json::from_str(&std::fs::read_to_string(path)?).map_err(|e| {
                    anyhow::anyhow!("{} is not a JSON object of columns: {e}", path.display())
                })?;
            let rule = rules.get(event.kind.as_str()).ok_or_else(|| {
                anyhow::anyhow!("no rule for event type `{}`", event.kind.as_str())
            })?;
            rules
                .templates
                .render(&rule.template, &template_context(&event, &row))?
        }
        None => {
            let url = match (&settings.database_url, &settings.rules_path) {
                (Some(url), _) => Some(url.clone()),
                (None, None) => None,
                (None, Some(_)) => anyhow::bail!(
                    "the rule needs its record: set OPSRELAY_DATABASE_URL or pass --row FILE with the columns as JSON"
                ),
            };
            let (_scratch, database) = local::database_or_seeded(&settings, url.as_ref()).await?;
            let deadline = Instant::now() + Duration::from_secs(30);
            compose(&rules, Some(&database), &settings, &event, deadline)
                .await?
                .message
        }
    };
    println!("{}", serde_json::to_string_pretty(&message.0)?);
    // Beside the payload, not in it: standard output stays the JSON a script reads.
    eprintln!(
        "Preview in Slack's Block Kit Builder (nothing is posted):\n{}",
        message.block_kit_builder_url()
    );
    Ok(ExitCode::SUCCESS)
}

/// An SQS event (first record), an SQS record, or a body alone.
fn record_from_file(text: &str) -> SqsMessage {
    let json: Option<serde_json::Value> = serde_json::from_str(text).ok();
    if let Some(first) = json
        .as_ref()
        .and_then(|j| j.get("Records"))
        .and_then(|r| r.get(0))
        && let Ok(record) = serde_json::from_value::<SqsMessage>(first.clone())
    {
        return record;
    }
    if json
        .as_ref()
        .is_some_and(|j| j.get("messageId").is_some() || j.get("body").is_some())
        && let Ok(record) = serde_json::from_value::<SqsMessage>(json.clone().unwrap_or_default())
    {
        return record;
    }
    let mut record = SqsMessage::default();
    record.body = Some(text.to_string());
    record
}
