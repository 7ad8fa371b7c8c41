//! The operator CLI: the local run, rule checks and previews, and the queue worker.

// The async state machine of `main` is deep enough that release builds need more than the
// default query depth to lay it out.
#![recursion_limit = "256"]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use opsrelay::local::{self, LocalOptions};
use opsrelay::telemetry::{self, LogFormat};
use opsrelay::worker::{self, WorkerOptions};

#[derive(Parser)]
#[command(
    name = "opsrelay",
    version,
    about = "Operational events from SQS to Slack, losing none."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pipeline locally on sample events (no AWS, no servers); failures go to a local file.
    Local {
        /// An SQS event file ({"Records": [...]}); the embedded samples by default.
        #[arg(long)]
        events: Option<PathBuf>,
        /// The local dead-letter file (JSON lines).
        #[arg(long, default_value = "opsrelay-dead-letters.jsonl")]
        dead_letters: PathBuf,
    },
    /// Check the rules file and the settings, without side effects.
    Check,
    /// Show the Slack message an event would produce.
    Render {
        /// An event: a body ({"type": …, "id": …}), an SQS record, or an SQS event.
        #[arg(long)]
        event: PathBuf,
        /// The record's columns as a JSON object, instead of querying the database.
        #[arg(long)]
        row: Option<PathBuf>,
    },
    /// Check, one line each, everything the relay must reach: DNS, the database address, TCP, TLS,
    /// login, the rules' queries, the Slack hosts and the DLQ. Exit 1 when anything fails.
    Doctor {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Long-poll an SQS queue and process it with the Lambda's semantics.
    Worker {
        /// The source queue.
        #[arg(long, env = "OPSRELAY_QUEUE_URL")]
        queue_url: String,
        /// Long-poll wait in seconds (0–20).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(i32).range(0..=20))]
        wait_seconds: i32,
        /// Stop at the first empty receive.
        #[arg(long)]
        until_empty: bool,
        /// Stop after this many batches.
        #[arg(long)]
        max_batches: Option<u64>,
    },
    /// Poll the rules' sources: their new rows go into the source queue as events.
    Poll {
        /// Poll once, then exit (the default).
        #[arg(long, conflicts_with = "every")]
        once: bool,
        /// Poll every this long (500ms, 10s, 1m) until interrupted.
        #[arg(long, value_parser = every)]
        every: Option<std::time::Duration>,
    },
    /// Inspect, export, filter and redrive the dead-letter queue.
    Dlq(opsrelay::redrive::DlqArgs),
}

/// `--every`: a duration as a person writes it.
fn every(text: &str) -> Result<std::time::Duration, String> {
    opsrelay::human::parse_duration(text)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{text:?} is not a duration: write 500ms, 10s or 1m"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(LogFormat::Text);
    match run(cli.command).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<ExitCode, anyhow::Error> {
    match command {
        Command::Local {
            events,
            dead_letters,
        } => run_local(events, dead_letters).await,
        Command::Check => opsrelay::check::run().await,
        Command::Render { event, row } => opsrelay::check::render(&event, row.as_deref()).await,
        Command::Doctor { json } => run_doctor(json).await,
        Command::Worker {
            queue_url,
            wait_seconds,
            until_empty,
            max_batches,
        } => {
            let options = WorkerOptions {
                queue_url,
                wait_time_seconds: wait_seconds,
                until_empty,
                max_batches,
            };
            run_worker(&options).await
        }
        Command::Poll { once: _, every } => opsrelay::poll::run(every).await,
        Command::Dlq(args) => Ok(opsrelay::redrive::run(args).await?),
    }
}

/// `opsrelay local`: runs the pipeline on sample events and prints a summary.
async fn run_local(
    events: Option<PathBuf>,
    dead_letters: PathBuf,
) -> Result<ExitCode, anyhow::Error> {
    let summary = local::run(&LocalOptions {
        events,
        dead_letters: dead_letters.clone(),
    })
    .await?;
    for polled in &summary.polled {
        println!("Source {}", polled.line());
    }
    println!(
        "\nSummary: {} delivered, {} retried, {} dead-lettered{}{}",
        summary.delivered,
        summary.retried,
        summary.dead_lettered,
        if summary.dropped > 0 {
            format!(", {} dropped by a route", summary.dropped)
        } else {
            String::new()
        },
        if summary.undelivered > 0 {
            format!(", {} undelivered", summary.undelivered)
        } else {
            String::new()
        }
    );
    print!("{}", summary.tally.per_rule());
    if summary.dead_lettered > 0 {
        println!(
            "Dead letters (with their reasons): {}",
            dead_letters.display()
        );
    }
    let stopped = summary.polled.iter().any(|p| p.problem.is_some());
    Ok(if summary.undelivered > 0 || stopped {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `opsrelay doctor`: checks everything the relay must reach and prints the report.
async fn run_doctor(json: bool) -> Result<ExitCode, anyhow::Error> {
    let sdk = opsrelay::aws::sdk_config().await;
    let parts = opsrelay::startup::parts_from_env(&sdk).await?;
    let slack = opsrelay::slack::SlackClient::new(&parts.settings.slack)?;
    let subject = opsrelay::doctor::Subject::of_parts(&parts, &slack);
    let report = opsrelay::doctor::run(&subject).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.text());
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `opsrelay worker`: polls the queue until stopped and prints what it did.
async fn run_worker(options: &WorkerOptions) -> Result<ExitCode, anyhow::Error> {
    let sdk = opsrelay::aws::sdk_config().await;
    let relay = opsrelay::startup::relay_from_env(&sdk).await?;
    let client = aws_sdk_sqs::Client::new(&sdk);
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let stats = worker::run(&relay, &client, options, shutdown).await?;
    let tally = &stats.tally;
    println!(
        "{} batches: {} delivered, {} dropped, {} left for retry, {} dead-lettered\n{}",
        stats.batches,
        tally.delivered,
        tally.dropped,
        tally.retried,
        tally.dead_lettered,
        tally.per_rule()
    );
    Ok(ExitCode::SUCCESS)
}
