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
use crate::db::{Database, Fetched, Record};
use crate::event::{self, OpsEvent};
use crate::local;
use crate::pipeline::compose::Composed;
use crate::pipeline::digest::digest_message;
use crate::pipeline::{compose, template_context};
use crate::render::SlackMessage;
use crate::rules::{Rule, Rules};

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
    problems.extend(Problems::of_sources(&rules, &settings.poll));
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

/// Prints the Slack message for the event in `event_file`, with the record from `row_file` (the same
/// columns for every event) or from the database. An SQS event file with several records shows
/// what they become when they come as a burst: one digest per rule (an event alone, its own message).
pub async fn render(event_file: &Path, row_file: Option<&Path>) -> Result<ExitCode, anyhow::Error> {
    let settings = Settings::from_env()?;
    let rules = local::rules_or_embedded(&settings)?;
    let text = std::fs::read_to_string(event_file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", event_file.display()))?;
    let events = records_from_file(&text)
        .iter()
        .map(event::parse)
        .collect::<Result<Vec<OpsEvent>, _>>()
        .map_err(|e| anyhow::anyhow!("{}: {e}", event_file.display()))?;
    let composed = compose_each(&settings, &rules, &events, row_file).await?;
    for (title, message) in previews(&rules, &events, &composed)? {
        println!("{}", serde_json::to_string_pretty(&message.0)?);
        // Beside the payload, not in it: standard output stays the JSON a script reads.
        eprintln!(
            "{title}: preview in Slack's Block Kit Builder (nothing is posted):\n{}",
            message.block_kit_builder_url()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Each event's rule, row and message: the row from `row_file`, else from the database.
async fn compose_each<'r>(
    settings: &Settings,
    rules: &'r Rules,
    events: &[OpsEvent],
    row_file: Option<&Path>,
) -> Result<Vec<Composed<'r>>, anyhow::Error> {
    let Some(path) = row_file else {
        let url = match (&settings.database_url, &settings.rules_path) {
            (Some(url), _) => Some(url.clone()),
            (None, None) => None,
            (None, Some(_)) => anyhow::bail!(
                "the rule needs its record: set OPSRELAY_DATABASE_URL or pass --row FILE with the columns as JSON"
            ),
        };
        let (_scratch, database) = local::database_or_seeded(settings, url.as_ref()).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut composed = Vec::with_capacity(events.len());
        for event in events {
            composed.push(compose(rules, Some(&database), settings, event, deadline).await?);
        }
        return Ok(composed);
    };
    let row: Record = serde_json::from_str(&std::fs::read_to_string(path)?)
        .map_err(|e| anyhow::anyhow!("{} is not a JSON object of columns: {e}", path.display()))?;
    events
        .iter()
        .map(|event| {
            let rule = rules.get(event.kind.as_str()).ok_or_else(|| {
                anyhow::anyhow!("no rule for event type `{}`", event.kind.as_str())
            })?;
            let message = rules
                .templates
                .render(&rule.template, &template_context(event, &row))?;
            let row = Fetched {
                values: row.clone(),
                decimals: Vec::new(),
            };
            Ok(Composed { rule, row, message })
        })
        .collect()
}

/// What the events become together: per rule in the file's order, its event's own message when it
/// has one, else its digest.
fn previews(
    rules: &Rules,
    events: &[OpsEvent],
    composed: &[Composed<'_>],
) -> Result<Vec<(String, SlackMessage)>, anyhow::Error> {
    let mut by_rule: Vec<(&Rule, Vec<(&OpsEvent, &Composed)>)> = Vec::new();
    for (event, composed) in events.iter().zip(composed) {
        match by_rule
            .iter_mut()
            .find(|(rule, _)| rule.name == composed.rule.name)
        {
            Some((_, members)) => members.push((event, composed)),
            None => by_rule.push((composed.rule, vec![(event, composed)])),
        }
    }
    by_rule
        .into_iter()
        .map(|(rule, members)| match members.as_slice() {
            [(event, alone)] => Ok((
                format!("{} {}", rule.name, event.id.as_str()),
                alone.message.clone(),
            )),
            _ => Ok((
                format!("a digest of {} {} events", members.len(), rule.name),
                digest_message(rules, rule, &members)?,
            )),
        })
        .collect()
}

/// Every record of an SQS event, or an SQS record, or a body alone.
fn records_from_file(text: &str) -> Vec<SqsMessage> {
    let json: Option<serde_json::Value> = serde_json::from_str(text).ok();
    if let Some(records) = json
        .as_ref()
        .and_then(|j| j.get("Records"))
        .and_then(|r| r.as_array())
        .filter(|r| !r.is_empty())
        && let Ok(records) = serde_json::from_value::<Vec<SqsMessage>>(records.clone().into())
    {
        return records;
    }
    if json
        .as_ref()
        .is_some_and(|j| j.get("messageId").is_some() || j.get("body").is_some())
        && let Ok(record) = serde_json::from_value::<SqsMessage>(json.clone().unwrap_or_default())
    {
        return vec![record];
    }
    let mut record = SqsMessage::default();
    record.body = Some(text.to_string());
    vec![record]
}
