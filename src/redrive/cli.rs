//! The `opsrelay dlq` subcommands: their arguments, and each command from its arguments to what it
//! prints. A command that moves messages stops after the batch in flight on Ctrl-C.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::error::Error;
use super::file::FileSource;
use super::filter::Filter;
use super::inspect::{self, Output, Stats};
use super::letter::Summary;
use super::mover::{self, Destination, Plan, Report, Source};
use super::native;
use super::progress;
use super::queue::{BATCH, Queue};
use crate::deadletter::AppendFile;

/// A receive that finds nothing after this long ends a run.
const WAIT: Duration = Duration::from_secs(1);
/// How long a receive of `peek` hides messages, until the peek holds them ([`mover::HOLD`]); they are
/// given back as soon as it is done.
const PEEK_HOLD: Duration = Duration::from_secs(30);
/// How long a receive of the other commands hides messages, at least: long enough to send and delete
/// a batch (those left are then held for [`mover::HOLD`]).
const MIN_HOLD: Duration = Duration::from_secs(60);
/// The exit code of a run stopped by Ctrl-C.
const INTERRUPTED: u8 = 130;

/// `opsrelay dlq`: inspect, export, filter and redrive the dead-letter queue.
#[derive(Debug, clap::Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub command: DlqCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// Depth, the oldest message, and counts by event type and by failure.
    Stats {
        #[command(flatten)]
        origin: Origin,
        /// Read at most this many messages to count them.
        #[arg(long, default_value_t = 10_000)]
        max: u64,
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// List messages (id, event type, class, reason, age, receive count) without consuming them.
    Peek {
        #[command(flatten)]
        origin: Origin,
        #[command(flatten)]
        filter: Filter,
        /// List at most this many.
        #[arg(long, default_value_t = 10)]
        max: u64,
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Write messages to a file as JSON lines: body, attributes and failure record.
    Export {
        /// The dead-letter queue's URL.
        #[arg(long, env = "OPSRELAY_DLQ_URL")]
        dlq: String,
        /// The file; appended to when it exists.
        #[arg(long)]
        to: PathBuf,
        /// Delete each message from the DLQ once its line is on disk.
        #[arg(long)]
        delete: bool,
        #[command(flatten)]
        filter: Filter,
        /// Export at most this many.
        #[arg(long)]
        max: Option<u64>,
    },
    /// Send messages back to the queue that dead-lettered them (or to --to): sent first, deleted
    /// after.
    Redrive {
        /// The dead-letter queue's URL.
        #[arg(long, env = "OPSRELAY_DLQ_URL")]
        dlq: String,
        /// The destination; by default the one queue whose redrive policy names the DLQ.
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        moving: MoveArgs,
        /// Let SQS move everything instead (StartMessageMoveTask): no filter, no preview.
        #[arg(long, conflicts_with_all = [
            "dry_run", "max", "event_type", "class", "reason", "older_than", "newer_than"
        ])]
        native: bool,
    },
    /// Send an export, or the local dead-letter file, to a queue. A rerun skips the lines already
    /// sent (listed in FILE.imported).
    Import {
        #[arg(long)]
        from: PathBuf,
        /// The destination queue's URL.
        #[arg(long)]
        to: String,
        #[command(flatten)]
        moving: MoveArgs,
    },
    /// List the DLQ's message move tasks (native redrive).
    Tasks {
        /// The dead-letter queue's URL.
        #[arg(long, env = "OPSRELAY_DLQ_URL")]
        dlq: String,
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Cancel a running message move task; the messages it moved stay moved.
    Cancel {
        /// The dead-letter queue's URL.
        #[arg(long, env = "OPSRELAY_DLQ_URL")]
        dlq: String,
        /// The task's handle; by default the DLQ's running task.
        #[arg(long)]
        task: Option<String>,
    },
}

/// Where `stats` and `peek` read.
#[derive(Debug, clap::Args)]
pub struct Origin {
    /// The dead-letter queue's URL.
    #[arg(long, env = "OPSRELAY_DLQ_URL", required_unless_present = "file")]
    dlq: Option<String>,
    /// A file instead: an export, or the local dead-letter file.
    #[arg(long)]
    file: Option<PathBuf>,
}

/// How `redrive` and `import` move messages.
#[derive(Debug, clap::Args)]
pub struct MoveArgs {
    #[command(flatten)]
    filter: Filter,
    /// Move at most this many.
    #[arg(long)]
    max: Option<u64>,
    /// Print what would move; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Messages a second (`50` or `50/s`).
    #[arg(long, value_parser = parse_rate)]
    rate: Option<u32>,
    /// Leave (with a warning) messages already sent back this many times.
    #[arg(long, default_value_t = 3)]
    max_redrives: u32,
    /// Batches of ten in flight at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    concurrency: u16,
}

/// Runs one `opsrelay dlq` command.
pub async fn run(args: DlqArgs) -> Result<ExitCode, Error> {
    match args.command {
        DlqCommand::Stats {
            origin,
            max,
            output,
        } => stats(&origin, max, output).await,
        DlqCommand::Peek {
            origin,
            filter,
            max,
            output,
        } => peek(&origin, filter, max, output).await,
        DlqCommand::Export {
            dlq,
            to,
            delete,
            filter,
            max,
        } => export(&dlq, &to, delete, filter, max).await,
        DlqCommand::Redrive {
            dlq,
            to,
            moving,
            native,
        } => redrive(&dlq, to.as_deref(), &moving, native).await,
        DlqCommand::Import { from, to, moving } => import(&from, &to, &moving).await,
        DlqCommand::Tasks { dlq, output } => tasks(&dlq, output).await,
        DlqCommand::Cancel { dlq, task } => cancel(&dlq, task.as_deref()).await,
    }
}

/// `stats`: prints the depth and the counts of up to `max` messages read from `origin`.
async fn stats(origin: &Origin, max: u64, output: Output) -> Result<ExitCode, Error> {
    let source = origin.open(MIN_HOLD).await?;
    let depth = match &source {
        Source::Queue { queue, .. } => Some(queue.depth().await?),
        Source::File(_) => None,
    };
    let plan = look(Filter::default(), max);
    let report = list(&source, &plan).await?;
    let stats = Stats::of(depth, &report.listed, chrono::Utc::now());
    match output {
        Output::Table => print!("{}", stats.table()),
        Output::Json => println!("{}", json(&stats)),
    }
    warn(hidden_by_groups(
        &source,
        depth.map(|d| d.visible),
        &plan,
        &report,
    ));
    Ok(listed_exit(&report))
}

/// `peek`: lists up to `max` of the messages `filter` selects, without consuming them.
async fn peek(
    origin: &Origin,
    filter: Filter,
    max: u64,
    output: Output,
) -> Result<ExitCode, Error> {
    let source = origin.open(PEEK_HOLD).await?;
    let visible = match &source {
        Source::Queue { queue, .. } if queue.fifo => Some(queue.depth().await?.visible),
        _ => None,
    };
    let plan = Plan {
        concurrency: 1,
        ..look(filter, max)
    };
    let report = list(&source, &plan).await?;
    print_messages(&report, output);
    warn(hidden_by_groups(&source, visible, &plan, &report));
    Ok(listed_exit(&report))
}

/// `export`: appends the messages `filter` selects to the file `to`, deleting them with `delete`.
async fn export(
    dlq: &str,
    to: &Path,
    delete: bool,
    filter: Filter,
    max: Option<u64>,
) -> Result<ExitCode, Error> {
    let dlq = open(dlq).await?;
    let total = dlq.depth().await?.visible;
    let plan = Plan {
        filter,
        max,
        max_redrives: None,
        rate: None,
        concurrency: 4,
        remove: delete,
    };
    let source = Source::Queue {
        queue: dlq,
        visibility: MIN_HOLD,
        wait: WAIT,
    };
    let destination = Destination::File(AppendFile::new(to));
    let report = transfer(&source, &destination, &plan, Some(total)).await;
    let hidden = hidden_by_groups(&source, Some(total), &plan, &report);
    let code = finish(report, "exported", &to.display().to_string())?;
    Ok(match hidden {
        Some(warning) => {
            eprintln!("{warning} The file is not a copy of the whole queue.");
            ExitCode::FAILURE
        }
        None => code,
    })
}

/// `redrive`: moves messages from the DLQ to `to` (or its source), or starts a native move task.
async fn redrive(
    dlq: &str,
    to: Option<&str>,
    moving: &MoveArgs,
    native: bool,
) -> Result<ExitCode, Error> {
    let dlq = open(dlq).await?;
    if native {
        return start_native(&dlq, to, moving.rate).await;
    }
    let destination = destination_of(&dlq, to).await?;
    let total = dlq.depth().await?.visible;
    let source = Source::Queue {
        queue: dlq,
        visibility: moving.hold(),
        wait: WAIT,
    };
    moving.run(&source, destination, Some(total)).await
}

/// `import`: sends the lines of the file `from` not yet sent to the queue `to`.
async fn import(from: &Path, to: &str, moving: &MoveArgs) -> Result<ExitCode, Error> {
    let journal = journal_of(from);
    let file = FileSource::open(from, Some(&journal)).await?;
    if file.already_sent > 0 {
        eprintln!(
            "Skipping {} of {} lines sent by an earlier import (listed in {}; delete it to send them again).",
            file.already_sent,
            file.total,
            journal.display()
        );
    }
    let total = (file.total - file.already_sent) as u64;
    let destination = Queue::open(&client().await, to).await?;
    moving
        .run(&Source::File(file), destination, Some(total))
        .await
}

/// `tasks`: prints the DLQ's message move tasks.
async fn tasks(dlq: &str, output: Output) -> Result<ExitCode, Error> {
    let tasks = native::tasks(&open(dlq).await?).await?;
    match output {
        Output::Table => print!("{}", inspect::tasks(&tasks)),
        Output::Json => println!("{}", json(&tasks)),
    }
    Ok(ExitCode::SUCCESS)
}

/// `cancel`: cancels the message move task `task` (by default the DLQ's running one).
async fn cancel(dlq: &str, task: Option<&str>) -> Result<ExitCode, Error> {
    let (handle, moved) = native::cancel(&open(dlq).await?, task).await?;
    println!("Cancelled task {handle}; it had moved about {moved} messages (they stay moved).");
    Ok(ExitCode::SUCCESS)
}

impl Origin {
    /// The queue (messages hidden for `hold` while read) or the file.
    async fn open(&self, hold: Duration) -> Result<Source, Error> {
        Ok(match (&self.file, &self.dlq) {
            (Some(file), _) => Source::File(FileSource::open(file, None).await?),
            (None, Some(url)) => Source::Queue {
                queue: open(url).await?,
                visibility: hold,
                wait: WAIT,
            },
            (None, None) => unreachable!("clap requires --dlq or --file"),
        })
    }
}

impl MoveArgs {
    fn plan(&self) -> Plan {
        Plan {
            filter: self.filter.clone(),
            max: self.max,
            max_redrives: Some(self.max_redrives),
            rate: self.rate,
            concurrency: self.concurrency.into(),
            remove: !self.dry_run,
        }
    }

    /// How long a received message is hidden: long enough for the batches queued behind the rate.
    fn hold(&self) -> Duration {
        let queued = f64::from(self.concurrency) * BATCH as f64;
        let paced = self
            .rate
            .map_or(0.0, |rate| 2.0 * queued / f64::from(rate.max(1)));
        MIN_HOLD.max(Duration::from_secs_f64(paced))
    }

    /// Moves from `source` to `destination`, or lists what would move with `--dry-run`.
    async fn run(
        &self,
        source: &Source,
        destination: Queue,
        total: Option<u64>,
    ) -> Result<ExitCode, Error> {
        let plan = self.plan();
        if self.dry_run {
            let report = list(source, &plan).await?;
            print_messages(&report, Output::Table);
            println!(
                "Would move {} of {} messages read to {}; nothing was changed.",
                report.counts.moved, report.counts.read, destination.url
            );
            warn(hidden_by_groups(source, total, &plan, &report));
            return Ok(listed_exit(&report));
        }
        let to = destination.url.clone();
        let destination = Destination::Queue(destination);
        let total = match (total, self.max) {
            (Some(total), Some(max)) => Some(total.min(max)),
            (total, max) => total.or(max),
        };
        let report = transfer(source, &destination, &plan, total).await;
        finish(report, "moved", &to)
    }
}

/// The plan of a read-only look at up to `max` messages.
fn look(filter: Filter, max: u64) -> Plan {
    Plan {
        filter,
        max: Some(max),
        max_redrives: None,
        rate: None,
        concurrency: 4,
        remove: false,
    }
}

/// Lists what `plan` selects, changing nothing; every message read is given back at the end, also
/// when Ctrl-C stops the reading early (the messages read so far are listed).
async fn list(source: &Source, plan: &Plan) -> Result<Report, Error> {
    let (stop, watcher) = stop_on_ctrl_c(
        "Stopping: giving back the messages read (Ctrl-C again to stop at once)…",
        "Stopped at once: the messages read stay hidden until their visibility ends.",
    );
    let mut report = mover::run(source, &Destination::List, plan, &stop, &NoProgress).await;
    watcher.abort();
    match report.error.take() {
        Some(error) => Err(error),
        None => Ok(report),
    }
}

/// A FIFO queue gives no later message of a group while an earlier one is hidden, so a run that
/// leaves what it reads on the queue (a listing, a dry run, an export without `--delete`) sees only
/// the first messages of each group. When such a run read fewer than the `visible` messages the queue
/// held at its start, and neither `--max` nor Ctrl-C stopped it: what to tell the operator.
fn hidden_by_groups(
    source: &Source,
    visible: Option<u64>,
    plan: &Plan,
    report: &Report,
) -> Option<String> {
    let (Source::Queue { queue, .. }, Some(visible)) = (source, visible) else {
        return None;
    };
    let counts = &report.counts;
    let stopped_early =
        report.stopped || counts.over_max > 0 || plan.max.is_some_and(|max| counts.moved >= max);
    if !queue.fifo || plan.remove || stopped_early || counts.read >= visible {
        return None;
    }
    Some(format!(
        "Read {} of the {visible} messages on {}: it is a FIFO queue, and SQS gives no later message \
         of a group while an earlier one is being read, so only the first of each group were seen. \
         To see them all, move them to a file (`opsrelay dlq export --dlq URL --to FILE --delete`), \
         look at it with `--file FILE`, and send them on with `opsrelay dlq import --from FILE --to URL`.",
        counts.read, queue.url
    ))
}

/// Prints `warning`, when there is one, on standard error.
fn warn(warning: Option<String>) {
    if let Some(warning) = warning {
        eprintln!("{warning}");
    }
}

/// The exit code of a listing: [`INTERRUPTED`], saying that what it printed is partial, when Ctrl-C
/// stopped it.
fn listed_exit(report: &Report) -> ExitCode {
    if !report.stopped {
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "Stopped by Ctrl-C after reading {} messages: what is above is partial. Every message read was given back.",
        report.counts.read
    );
    ExitCode::from(INTERRUPTED)
}

struct NoProgress;

impl mover::Progress for NoProgress {
    fn update(&self, _: &mover::Counts) {}
}

/// A moving run with a progress display, stopped after the batch in flight by Ctrl-C.
async fn transfer(
    source: &Source,
    destination: &Destination,
    plan: &Plan,
    total: Option<u64>,
) -> Report {
    let (stop, watcher) = stop_on_ctrl_c(
        "Stopping after the batch in flight (Ctrl-C again to stop at once)…",
        "Stopped at once: messages sent but not yet deleted are sent again by the next run.",
    );
    let progress = progress::on_stderr(total);
    let report = mover::run(source, destination, plan, &stop, progress.as_ref()).await;
    drop(progress);
    watcher.abort();
    report
}

/// A stop that the first Ctrl-C cancels (saying `stopping`), while a second exits at once (saying
/// `stopped`); abort the watcher when the run ends.
fn stop_on_ctrl_c(
    stopping: &'static str,
    stopped: &'static str,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    let on_ctrl_c = stop.clone();
    let watcher = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("{stopping}");
            on_ctrl_c.cancel();
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("{stopped}");
                std::process::exit(INTERRUPTED.into());
            }
        }
    });
    (stop, watcher)
}

/// Prints what a moving run did; its exit code.
fn finish(report: Report, verb: &str, to: &str) -> Result<ExitCode, Error> {
    let counts = &report.counts;
    println!(
        "{} {} messages to {to}; of the {} read, {}.",
        capitalized(verb),
        counts.moved,
        counts.read,
        progress::describe(counts)
    );
    if !report.failures.is_empty() {
        eprintln!(
            "{} messages could not be {verb} and are still in the DLQ:",
            counts.failed
        );
        for failure in &report.failures {
            eprintln!("  {failure}");
        }
    }
    if counts.not_removed > 0 {
        eprintln!(
            "{} messages were {verb} but could not be removed from the DLQ: a rerun sends them again.",
            counts.not_removed
        );
    }
    if let Some(error) = report.error {
        return Err(error);
    }
    if report.stopped {
        println!(
            "Stopped by Ctrl-C after the batch in flight: run the same command again to continue."
        );
        return Ok(ExitCode::from(INTERRUPTED));
    }
    Ok(if counts.failed > 0 || counts.not_removed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn print_messages(report: &Report, output: Output) {
    let now = chrono::Utc::now();
    let summaries: Vec<Summary> = report.listed.iter().map(|l| Summary::of(l, now)).collect();
    match output {
        Output::Table => print!("{}", inspect::messages(&summaries)),
        Output::Json => println!("{}", json(&summaries)),
    }
}

async fn start_native(dlq: &Queue, to: Option<&str>, rate: Option<u32>) -> Result<ExitCode, Error> {
    let destination = native_destination(dlq, to).await?;
    let handle = native::start(dlq, destination.as_ref(), rate).await?;
    println!(
        "Started message move task {handle} from {} to {}{}. `opsrelay dlq tasks` shows its progress; `opsrelay dlq cancel` stops it.",
        dlq.url,
        destination
            .as_ref()
            .map_or("its source queues", |q| q.url.as_str()),
        rate.map_or(String::new(), |r| format!(" at {r} messages a second")),
    );
    Ok(ExitCode::SUCCESS)
}

/// The destination of a native redrive: `to`, or the one queue whose redrive policy names the DLQ,
/// named: SQS knows no source for the dead letters that opsrelay sends itself (or SNS does), which
/// a task without a destination would fail to move. `None` (each message back to its source, as SQS
/// knows it) only for a DLQ of several queues.
pub async fn native_destination(dlq: &Queue, to: Option<&str>) -> Result<Option<Queue>, Error> {
    if to.is_some() {
        return destination_of(dlq, to).await.map(Some);
    }
    match dlq.sources().await?.len() {
        0 => Err(Error::NotADlq(dlq.url.clone())),
        1 => destination_of(dlq, None).await.map(Some),
        _ => Ok(None),
    }
}

/// The destination of a redrive: `to`, or the one queue whose redrive policy names the DLQ; never the
/// DLQ itself.
pub async fn destination_of(dlq: &Queue, to: Option<&str>) -> Result<Queue, Error> {
    let url = match to {
        Some(url) => url.to_string(),
        None => {
            let mut sources = dlq.sources().await?;
            match sources.len() {
                0 => return Err(Error::NotADlq(dlq.url.clone())),
                1 => sources.remove(0),
                _ => {
                    return Err(Error::SeveralSources {
                        dlq: dlq.url.clone(),
                        sources,
                    });
                }
            }
        }
    };
    let queue = Queue::open(&dlq.client, &url).await?;
    if queue.url == dlq.url || (!queue.arn.is_empty() && queue.arn == dlq.arn) {
        return Err(Error::SameQueue(dlq.url.clone()));
    }
    Ok(queue)
}

/// Where an import lists the lines it sent.
pub fn journal_of(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".imported");
    PathBuf::from(name)
}

async fn client() -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&crate::aws::sdk_config().await)
}

async fn open(url: &str) -> Result<Queue, Error> {
    Queue::open(&client().await, url).await
}

/// `50` or `50/s`.
fn parse_rate(text: &str) -> Result<u32, String> {
    let number = text.trim().trim_end_matches("/s");
    match number.parse::<u32>() {
        Ok(rate) if rate > 0 => Ok(rate),
        _ => Err(format!(
            "`{text}` is not a rate: write messages a second, e.g. 50 or 50/s"
        )),
    }
}

fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}
