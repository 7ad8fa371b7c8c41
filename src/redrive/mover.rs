//! The one loop behind redrive, import, export, peek and stats: read ten dead letters at a time, take
//! those the plan selects, put them where they go (a queue, a file, or a listing), and only then
//! remove them from where they were read. A message that could not be put stays where it was; what a
//! run reads and leaves stays hidden until the run ends ([`HOLD`]) and gets its visibility back then;
//! a stop lets the batch in flight finish. Several batches run at once.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::error::Error;
use super::file::FileSource;
use super::filter::Filter;
use super::queue::{BATCH, Outcome, Queue};
use crate::deadletter::AppendFile;
use crate::deadletter::Letter;
use crate::pace::Pacer;

/// Where dead letters are read.
#[derive(Debug)]
pub enum Source {
    /// A queue: messages are received (hidden for `visibility`, and those left for [`HOLD`]); the
    /// run ends at the first receive that finds none after `wait`.
    Queue {
        queue: Queue,
        visibility: Duration,
        wait: Duration,
    },
    File(FileSource),
}

/// Where the letters a run takes go.
#[derive(Debug)]
pub enum Destination {
    /// Sent back: `opsrelay-failure` removed, the redrive counter added.
    Queue(Queue),
    /// Exported as JSON lines.
    File(AppendFile),
    /// Only listed, in [`Report::listed`] (dry run, peek, stats).
    List,
}

/// What a run takes and how.
#[derive(Clone, Debug)]
pub struct Plan {
    pub filter: Filter,
    /// Take at most this many.
    pub max: Option<u64>,
    /// Leave, with a warning, messages already sent back this many times.
    pub max_redrives: Option<u32>,
    /// Messages a second.
    pub rate: Option<u32>,
    /// Batches in flight at once; one when a file goes to a FIFO queue, so that each group arrives in
    /// the file's order.
    pub concurrency: usize,
    /// Remove what was put from where it was read (delete it from the queue, journal the line).
    /// Otherwise every message read gets its visibility back when the run ends.
    pub remove: bool,
}

/// What a run did so far.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub read: u64,
    /// Put where they go (and removed from where they were, when the plan removes).
    pub moved: u64,
    pub not_matching: u64,
    /// Matching, but beyond `--max`.
    pub over_max: u64,
    pub over_max_redrives: u64,
    /// Could not be put: left where they were.
    pub failed: u64,
    /// Put, but could not be removed, not even when they came back later in the run: they are in the
    /// DLQ again and a rerun sends them again.
    pub not_removed: u64,
    /// Put earlier in this run but came back (a delete that failed or came too late): removed
    /// without being put again.
    pub removed_again: u64,
    /// Sent without the redrive counter: the message has SQS's maximum of 10 attributes, or would
    /// be too large for the destination with it.
    pub without_counter: u64,
}

/// Told after each batch (the progress bar; tests use it to interrupt a run).
pub trait Progress: Sync {
    fn update(&self, counts: &Counts);
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Report {
    pub counts: Counts,
    /// The stop token was cancelled before the source was empty.
    pub stopped: bool,
    /// Why messages could not be put (the first few).
    pub failures: Vec<String>,
    /// The letters of a [`Destination::List`] run.
    pub listed: Vec<Letter>,
    /// What ended the run early (no permission, no queue, a file that cannot be written).
    pub error: Option<Error>,
}

/// Reasons why messages could not be put, kept for the report.
const KEPT_FAILURES: usize = 20;

/// How long a message read from a queue and left there (not matching, beyond `--max`, not put, or
/// only listed) is kept hidden, from when it is left and again whenever it is read anew: far longer
/// than a pass over a large DLQ takes, so that the run ends at the first receive that finds nothing
/// rather than reading the same messages again as their receive's visibility ends. The end of the run
/// gives them back at once; a run killed outright (SIGKILL, a crash) leaves them hidden at most this
/// long.
pub const HOLD: Duration = Duration::from_secs(600);

/// Runs `plan` from `source` to `destination` until the source is empty, `plan.max` is reached or
/// `stop` is cancelled.
pub async fn run(
    source: &Source,
    destination: &Destination,
    plan: &Plan,
    stop: &CancellationToken,
    progress: &dyn Progress,
) -> Report {
    let ordered = match source {
        Source::Queue { queue, .. } => queue.fifo,
        Source::File(_) => matches!(destination, Destination::Queue(queue) if queue.fifo),
    };
    // A FIFO DLQ gives none of a group's later messages while an earlier one is read and not
    // deleted, so its batches can go at once; a file's batches sent at once would reach a FIFO
    // queue in any order.
    let concurrency = match source {
        Source::File(_) if ordered => 1,
        _ => plan.concurrency.max(1),
    };
    let mover = Mover {
        source,
        destination,
        plan,
        ordered,
        halt: stop.child_token(),
        now: Utc::now(),
        budget: plan.max.map(AtomicU64::new),
        // Only what is put is paced: a listing (a dry run) goes at once.
        pacer: plan
            .rate
            .filter(|_| !matches!(destination, Destination::List))
            .map(|rate| Pacer::new(rate.into(), BATCH as u32)),
        progress,
        state: Mutex::default(),
    };
    let workers = (0..concurrency).map(|_| mover.worker());
    futures::future::join_all(workers).await;
    mover.settle_late().await;
    let state = crate::lock::into_inner(mover.state);
    if let Source::Queue { queue, .. } = source {
        let held: Vec<String> = state.letters.into_values().filter_map(|t| t.held).collect();
        queue.release(&held).await;
    }
    Report {
        counts: state.counts,
        stopped: stop.is_cancelled(),
        failures: state.failures,
        listed: state.listed,
        error: state.error,
    }
}

struct Mover<'a> {
    source: &'a Source,
    destination: &'a Destination,
    plan: &'a Plan,
    /// Each message group keeps its order: the source is a FIFO queue, or a file going to one.
    ordered: bool,
    /// Cancelled by the caller's stop, or by an error that ends the run.
    halt: CancellationToken,
    /// Ages are measured from the start of the run, so that a filter decides the same way on each
    /// batch.
    now: DateTime<Utc>,
    budget: Option<AtomicU64>,
    pacer: Option<Pacer>,
    progress: &'a dyn Progress,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    counts: Counts,
    /// What the run did with each letter it read, by [`Mover::key`].
    letters: HashMap<String, Tracked>,
    /// Copies of letters being put, received again meanwhile (SQS delivers at least once): settled
    /// when the run ends, by what became of the first copy.
    late: Vec<Letter>,
    listed: Vec<Letter>,
    failures: Vec<String>,
    error: Option<Error>,
    /// When the run keeps order: the groups of letters left, whose later letters are left too.
    blocked: HashSet<String>,
}

/// One letter in a run.
#[derive(Default)]
struct Tracked {
    /// Its receipt handle while it is held ([`Mover::hold`]), to be given back when the run ends.
    held: Option<String>,
    stage: Stage,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Stage {
    /// Read and left (or not put): held until the run ends.
    #[default]
    Left,
    /// Being put.
    InFlight,
    /// Put in this run; `not_removed` while removing it from where it was read has failed
    /// ([`Counts::not_removed`]).
    Put { not_removed: bool },
}

impl State {
    fn stage(&self, key: &str) -> Option<Stage> {
        self.letters.get(key).map(|t| t.stage)
    }

    fn set_stage(&mut self, key: String, stage: Stage) {
        let tracked = self.letters.entry(key).or_default();
        let was = std::mem::replace(&mut tracked.stage, stage);
        let counted = |s: Stage| u64::from(s == Stage::Put { not_removed: true });
        self.counts.not_removed = self.counts.not_removed + counted(stage) - counted(was);
    }
}

/// A batch just read, sorted by [`Mover::sort`].
#[derive(Default)]
struct Sorted {
    taken: Vec<Letter>,
    again: Vec<Letter>,
    left: Vec<Letter>,
}

/// Why a letter read is left where it is.
enum Leave {
    NotMatching,
    OverMaxRedrives,
    OverMax,
}

impl Mover<'_> {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        crate::lock::lock(&self.state)
    }

    /// Ends the run for every batch: what comes next would fail the same way.
    fn end(&self, error: Error) {
        self.state().error.get_or_insert(error);
        self.halt.cancel();
    }

    async fn worker(&self) {
        while !self.halt.is_cancelled() && !self.budget_spent() {
            let batch = match self.read().await {
                Ok(batch) if batch.is_empty() => break,
                Ok(batch) => batch,
                Err(error) => {
                    self.end(error);
                    break;
                }
            };
            self.batch(batch).await;
            let counts = self.state().counts.clone();
            self.progress.update(&counts);
        }
    }

    /// What tells a letter from the others: its message id on a queue (a message read again keeps
    /// it), its line in a file (a file may hold the same message twice).
    fn key(&self, letter: &Letter) -> String {
        match self.source {
            Source::Queue { .. } => letter.message_id.clone(),
            Source::File(_) => letter.handle.clone(),
        }
    }

    /// The letter's line number, when the source is a file.
    fn line<'l>(&self, letter: &'l Letter) -> Option<&'l str> {
        matches!(self.source, Source::File(_)).then_some(letter.handle.as_str())
    }

    fn budget_spent(&self) -> bool {
        self.budget
            .as_ref()
            .is_some_and(|b| b.load(Ordering::SeqCst) == 0)
    }

    async fn read(&self) -> Result<Vec<Letter>, Error> {
        match self.source {
            Source::Queue {
                queue,
                visibility,
                wait,
            } => queue.receive(*visibility, *wait).await,
            Source::File(file) => Ok(file.next()),
        }
    }

    async fn batch(&self, batch: Vec<Letter>) {
        let Sorted { taken, again, left } = self.sort(batch);
        self.hold(&left).await;
        if !again.is_empty() {
            self.settle(&again, true).await;
        }
        if taken.is_empty() {
            return;
        }
        // A batch still waiting for its turn under `--rate` is not in flight: a stop leaves it.
        let mut outcome = if self.paced(taken.len()).await {
            self.put(&taken).await
        } else {
            Outcome::default()
        };
        let fatal = outcome.fatal.take();
        let (done, not_put) = self.record_put(taken, &outcome);
        self.hold(&not_put).await;
        self.settle(&done, false).await;
        if let Some(error) = fatal {
            self.end(error);
        }
    }

    /// Sorts letters just read by what they are to this run: new ones taken (or left, and counted
    /// why), copies of letters already put (`again`), copies of letters being put (kept for
    /// [`Mover::settle_late`]), and letters back although held.
    fn sort(&self, batch: Vec<Letter>) -> Sorted {
        let mut sorted = Sorted::default();
        let mut state = self.state();
        for letter in batch {
            let key = self.key(&letter);
            match state.stage(&key) {
                Some(Stage::Put { .. }) => sorted.again.push(letter),
                Some(Stage::InFlight) => state.late.push(letter),
                // Back although held (hiding it failed): held again with its new receipt handle.
                Some(Stage::Left) => sorted.left.push(letter),
                None => {
                    state.counts.read += 1;
                    match self.choose(&mut state.blocked, &letter) {
                        None => {
                            state.set_stage(key, Stage::InFlight);
                            sorted.taken.push(letter);
                        }
                        Some(leave) => {
                            let counts = &mut state.counts;
                            match leave {
                                Leave::NotMatching => counts.not_matching += 1,
                                Leave::OverMaxRedrives => counts.over_max_redrives += 1,
                                Leave::OverMax => counts.over_max += 1,
                            }
                            sorted.left.push(letter);
                        }
                    }
                }
            }
        }
        sorted
    }

    /// Records what became of the letters taken: put (to be removed), or not put (to be held, its
    /// group blocked, its place under `--max` given back). Returns the two.
    fn record_put(&self, taken: Vec<Letter>, outcome: &Outcome) -> (Vec<Letter>, Vec<Letter>) {
        let mut done = Vec::with_capacity(outcome.done.len());
        let mut not_put = Vec::new();
        let mut state = self.state();
        for (i, why) in &outcome.failed {
            state.counts.failed += 1;
            if state.failures.len() < KEPT_FAILURES {
                let failure = format!("{}: {why}", taken[*i].message_id);
                state.failures.push(failure);
            }
        }
        for (i, letter) in taken.into_iter().enumerate() {
            let key = self.key(&letter);
            if outcome.done.contains(&i) {
                state.set_stage(key, Stage::Put { not_removed: false });
                done.push(letter);
            } else {
                state.set_stage(key, Stage::Left);
                self.block(&mut state.blocked, &letter);
                not_put.push(letter);
                if let Some(budget) = &self.budget {
                    // Not moved: another message may take its place under --max.
                    budget.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        state.counts.moved += done.len() as u64;
        (done, not_put)
    }

    /// Waits for `count` sends' turns under `--rate`; `false` when the run is stopped meanwhile.
    async fn paced(&self, count: usize) -> bool {
        let Some(pacer) = &self.pacer else {
            return true;
        };
        let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
        let turns = async {
            for _ in 0..count {
                let _ = pacer.acquire("dlq", far).await;
            }
        };
        tokio::select! {
            () = turns => true,
            () = self.halt.cancelled() => false,
        }
    }

    /// Second copies of letters that were being put: removed when the first copy was put, held
    /// (given back) otherwise.
    async fn settle_late(&self) {
        let late = std::mem::take(&mut self.state().late);
        let (put, not_put): (Vec<Letter>, Vec<Letter>) = {
            let state = self.state();
            late.into_iter().partition(|letter| {
                matches!(state.stage(&self.key(letter)), Some(Stage::Put { .. }))
            })
        };
        self.settle(&put, true).await;
        self.hold(&not_put).await;
    }

    /// Leaves these letters where they were read until the run ends, hidden for [`HOLD`] on a queue.
    async fn hold(&self, letters: &[Letter]) {
        if letters.is_empty() {
            return;
        }
        {
            let mut state = self.state();
            for letter in letters {
                let tracked = state.letters.entry(self.key(letter)).or_default();
                tracked.held = Some(letter.handle.clone());
            }
        }
        if let Source::Queue { queue, .. } = self.source {
            let handles: Vec<String> = letters.iter().map(|l| l.handle.clone()).collect();
            if let Err(error) = queue.hide(&handles, HOLD).await {
                self.end(error);
            }
        }
    }

    /// `None` when the plan takes the letter. When the run keeps order, a letter behind one left in its
    /// group is left too (as not matching), and a letter left blocks its group.
    fn choose(&self, blocked: &mut HashSet<String>, letter: &Letter) -> Option<Leave> {
        if self.ordered && blocked.contains(letter.group()) {
            return Some(Leave::NotMatching);
        }
        let leave = self.judge(letter);
        if leave.is_some() {
            self.block(blocked, letter);
        }
        leave
    }

    /// When the run keeps order, leaves the later letters of this letter's group: they cannot go
    /// before it.
    fn block(&self, blocked: &mut HashSet<String>, letter: &Letter) {
        if self.ordered {
            blocked.insert(letter.group().to_string());
        }
    }

    /// `None` when the plan takes the letter, judged on its own.
    fn judge(&self, letter: &Letter) -> Option<Leave> {
        if !self.plan.filter.matches(letter, self.now) {
            return Some(Leave::NotMatching);
        }
        if let Some(max) = self.plan.max_redrives
            && letter.redrives() >= max
        {
            tracing::warn!(
                message_id = %letter.message_id,
                redrives = letter.redrives(),
                "Left in the DLQ: already sent back {max} times (--max-redrives); look at why it keeps failing."
            );
            return Some(Leave::OverMaxRedrives);
        }
        if let Some(budget) = &self.budget
            && budget
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_err()
        {
            return Some(Leave::OverMax);
        }
        None
    }

    /// Puts the letters where they go; indexes into `letters`.
    async fn put(&self, letters: &[Letter]) -> Outcome {
        let all = || Outcome {
            done: (0..letters.len()).collect(),
            ..Outcome::default()
        };
        match self.destination {
            Destination::Queue(queue) => {
                let outgoing: Vec<_> = letters
                    .iter()
                    .map(|l| {
                        l.outgoing(queue.fifo, self.line(l))
                            .fit(queue.max_message_bytes)
                    })
                    .collect();
                let outcome = queue.send(&outgoing).await;
                let uncounted = outcome
                    .done
                    .iter()
                    .filter(|&&i| !outgoing[i].counted)
                    .count();
                self.state().counts.without_counter += uncounted as u64;
                outcome
            }
            Destination::File(file) => {
                match file.write(&letters.iter().collect::<Vec<_>>()).await {
                    Ok(()) => all(),
                    Err(error) => Outcome {
                        fatal: Some(error.into()),
                        ..Outcome::default()
                    },
                }
            }
            Destination::List => {
                self.state().listed.extend_from_slice(letters);
                all()
            }
        }
    }

    /// After letters were put: removes them from where they were read when the plan removes,
    /// holds them (visibility given back at the end) otherwise. `again`: they were put earlier in
    /// this run and came back.
    async fn settle(&self, letters: &[Letter], again: bool) {
        if letters.is_empty() {
            return;
        }
        if !self.plan.remove {
            self.hold(letters).await;
            return;
        }
        let (removed, fatal) = match self.source {
            Source::Queue { queue, .. } => {
                let handles: Vec<&str> = letters.iter().map(|l| l.handle.as_str()).collect();
                let outcome = queue.delete(&handles).await;
                for (i, why) in &outcome.failed {
                    tracing::warn!(message_id = %letters[*i].message_id, "Sent but not deleted: {why}");
                }
                (outcome.done, outcome.fatal)
            }
            Source::File(file) => match file.remove(&letters.iter().collect::<Vec<_>>()).await {
                Ok(()) => ((0..letters.len()).collect(), None),
                Err(error) => (BTreeSet::new(), Some(error)),
            },
        };
        {
            let mut state = self.state();
            for (i, letter) in letters.iter().enumerate() {
                let not_removed = !removed.contains(&i);
                state.counts.removed_again += u64::from(again && !not_removed);
                state.set_stage(self.key(letter), Stage::Put { not_removed });
            }
        }
        if let Some(error) = fatal {
            self.end(error);
        }
    }
}
