//! `opsrelay dlq` against moto's SQS with the real aws-sdk-sqs client: a DLQ seeded with 1,000
//! messages of mixed event types, failure classes, reasons and ages; each filter moves exactly the
//! matching ones; a dry run changes nothing; export then import gives back the same bytes; an
//! interrupted or killed redrive loses nothing on its rerun; a send that fails deletes nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::common::{Queues, drain, queues};
use aws_sdk_sqs::primitives::Blob;
use aws_sdk_sqs::types::{
    Message, MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName,
    SendMessageBatchRequestEntry,
};
use chrono::Utc;
use futures::StreamExt;
use opsrelay::deadletter::{AppendFile, Letter};
use opsrelay::deadletter::{FAILURE_ATTRIBUTE, FailureClass, FailureRecord};
use opsrelay::redrive::Error;
use opsrelay::redrive::cli::{destination_of, native_destination};
use opsrelay::redrive::file::FileSource;
use opsrelay::redrive::filter::{Class, Filter};
use opsrelay::redrive::letter::REDRIVE_ATTRIBUTE;
use opsrelay::redrive::mover::{self, Counts, Destination, Plan, Progress, Report, Source};
use opsrelay::redrive::queue::Queue;
use opsrelay::sqs::DEFAULT_GROUP;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const SEEDED: usize = 1_000;
const TYPES: [&str; 4] = [
    "order.created",
    "order.paid",
    "user.signup",
    "invoice.failed",
];
const FAILURES: [(&str, FailureClass, &str); 5] = [
    (
        "slack_rejected",
        FailureClass::Permanent,
        "posting to destination `OPSRELAY_SLACK_WEBHOOK_URL` failed: Slack answered 404 `no_service`",
    ),
    (
        "record_not_found",
        FailureClass::Permanent,
        "record of rule `order.created` not found, 300 s after the event",
    ),
    (
        "slack_timeout",
        FailureClass::Transient,
        "posting to destination `OPSRELAY_SLACK_WEBHOOK_URL` failed: no answer within 5000 ms",
    ),
    (
        "template_failed",
        FailureClass::Permanent,
        "template `text` of rule `user.signup` failed: undefined value `plan`",
    ),
    (
        "database_unavailable",
        FailureClass::Transient,
        "the database is unreachable: connection refused",
    ),
];
/// The `--max-redrives` of the tests.
const MAX_REDRIVES: u32 = 3;
/// How long the tests' receives hide a message.
const VISIBILITY: Duration = Duration::from_secs(30);

/// What the test knows of seeded message `seq`.
#[derive(Clone, Debug)]
struct Seed {
    seq: usize,
    event_type: &'static str,
    /// `None`: moved by SQS without a reason.
    failure: Option<(&'static str, FailureClass, &'static str)>,
    /// It failed this many hours and a half ago (a message without a failure was just sent).
    hours: i64,
    redrives: u32,
}

fn seed(seq: usize) -> Seed {
    Seed {
        seq,
        event_type: TYPES[seq % TYPES.len()],
        failure: (seq % 10 != 9).then(|| FAILURES[(seq / 4) % FAILURES.len()]),
        hours: (seq % 48) as i64,
        redrives: if seq % 50 == 7 {
            MAX_REDRIVES
        } else {
            seq as u32 % 2
        },
    }
}

/// Every fifth body is a bare id with the type in an attribute; all carry characters that must
/// survive unchanged.
fn body(seq: usize) -> String {
    if seq % 5 == 4 {
        format!("ord_{seq}")
    } else {
        let kind = seed(seq).event_type;
        format!(
            "{{\"type\":\"{kind}\",\"id\":\"{seq}\",\"note\":\"Smith & Sons <!channel> \\\"ünïcødé\\\" ☃ 🦀\\n\\ttabbed\"}}\r\n"
        )
    }
}

fn string(data_type: &str, value: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type(data_type)
        .string_value(value)
        .build()
        .unwrap()
}

/// The message's own attributes (without `opsrelay-failure`).
fn own_attributes(seq: usize) -> HashMap<String, MessageAttributeValue> {
    let seed = seed(seq);
    let mut attributes = HashMap::from([("seq".to_string(), string("Number", &seq.to_string()))]);
    if seq.is_multiple_of(2) {
        attributes.insert(
            "trace".into(),
            string("String", &format!("trace-{seq} ☃ <&>")),
        );
    }
    if seq.is_multiple_of(3) {
        let blob = MessageAttributeValue::builder()
            .data_type("Binary.gzip")
            .binary_value(Blob::new(vec![0, 255, (seq % 256) as u8, 10, 13]))
            .build()
            .unwrap();
        attributes.insert("blob".into(), blob);
    }
    if seq % 5 == 4 {
        attributes.insert("event_type".into(), string("String", seed.event_type));
    }
    if seed.redrives > 0 {
        attributes.insert(
            REDRIVE_ATTRIBUTE.into(),
            string("Number", &seed.redrives.to_string()),
        );
    }
    attributes
}

fn failure_record(seq: usize) -> Option<FailureRecord> {
    let seed = seed(seq);
    let (code, class, reason) = seed.failure?;
    let failed_at = Utc::now() - chrono::Duration::minutes(seed.hours * 60 + 30);
    Some(FailureRecord {
        class,
        code: code.into(),
        reason: reason.into(),
        event_type: Some(seed.event_type.into()),
        source_message_id: format!("source-{seq}"),
        receive_count: 1,
        first_failed_at: failed_at,
        failed_at,
        dropped_attributes: None,
    })
}

/// Sends messages `seqs` to `url` as opsrelay's DLQ holds them, ten a call.
async fn seed_queue(client: &aws_sdk_sqs::Client, url: &str, seqs: impl Iterator<Item = usize>) {
    let seqs: Vec<usize> = seqs.collect();
    let calls = seqs.chunks(10).map(|chunk| {
        let entries = chunk
            .iter()
            .map(|&seq| {
                let mut attributes = own_attributes(seq);
                if let Some(failure) = failure_record(seq) {
                    let json = serde_json::to_string(&failure).unwrap();
                    attributes.insert(FAILURE_ATTRIBUTE.into(), string("String", &json));
                }
                SendMessageBatchRequestEntry::builder()
                    .id(seq.to_string())
                    .message_body(body(seq))
                    .set_message_attributes(Some(attributes))
                    .build()
                    .unwrap()
            })
            .collect();
        async move {
            let output = client
                .send_message_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await
                .expect("seed the DLQ");
            assert!(output.failed().is_empty(), "{:?}", output.failed());
        }
    });
    futures::stream::iter(calls)
        .buffer_unordered(10)
        .collect::<Vec<()>>()
        .await;
}

/// A DLQ with its source queue, holding the 1,000 seeded messages.
async fn seeded() -> Queues {
    let queues = queues(5, 30).await;
    seed_queue(&queues.client, &queues.dlq, 0..SEEDED).await;
    queues
}

fn seq_of(message: &Message) -> usize {
    message.message_attributes().unwrap()["seq"]
        .string_value()
        .unwrap()
        .parse()
        .unwrap()
}

/// The seqs of every message on `url`, sorted, duplicates kept.
async fn seqs_on(client: &aws_sdk_sqs::Client, url: &str) -> Vec<usize> {
    let mut seqs: Vec<usize> = drain(client, url).await.iter().map(seq_of).collect();
    seqs.sort_unstable();
    seqs
}

/// The seqs a redrive moves: those `selected` and not yet past `--max-redrives`.
fn movable(selected: impl Fn(&Seed) -> bool) -> Vec<usize> {
    (0..SEEDED)
        .map(seed)
        .filter(|s| selected(s) && s.redrives < MAX_REDRIVES)
        .map(|s| s.seq)
        .collect()
}

fn plan(filter: Filter) -> Plan {
    Plan {
        filter,
        max: None,
        max_redrives: Some(MAX_REDRIVES),
        rate: None,
        concurrency: 4,
        remove: true,
    }
}

fn dlq_source(queue: Queue, visibility: Duration) -> Source {
    Source::Queue {
        queue,
        visibility,
        wait: Duration::ZERO,
    }
}

struct Quiet;

impl Progress for Quiet {
    fn update(&self, _: &Counts) {}
}

/// Cancels `stop` once `at` messages moved (what Ctrl-C does in the CLI).
struct StopAfter {
    at: u64,
    stop: CancellationToken,
}

impl Progress for StopAfter {
    fn update(&self, counts: &Counts) {
        if counts.moved >= self.at {
            self.stop.cancel();
        }
    }
}

/// Redrives the DLQ of `queues` to its source queue with `plan`, then stops at `progress`'s word.
async fn redrive_with(
    queues: &Queues,
    plan: &Plan,
    visibility: Duration,
    stop: &CancellationToken,
    progress: &dyn Progress,
) -> Report {
    let dlq = Queue::open(&queues.client, &queues.dlq).await.unwrap();
    let to = destination_of(&dlq, None).await.unwrap();
    let source = dlq_source(dlq, visibility);
    mover::run(&source, &Destination::Queue(to), plan, stop, progress).await
}

async fn redrive(queues: &Queues, plan: &Plan) -> Report {
    redrive_with(queues, plan, VISIBILITY, &CancellationToken::new(), &Quiet).await
}

/// Redrives with `filter` and checks that exactly the `selected` messages moved and the others
/// stayed.
async fn assert_filter_moves_exactly(filter: Filter, selected: impl Fn(&Seed) -> bool) {
    let queues = seeded().await;
    let report = redrive(&queues, &plan(filter)).await;
    assert_moved_exactly(&queues, &report, selected).await;
}

/// Checks that the run of `report` moved exactly the `selected` messages, once each, and left the
/// others in the DLQ.
async fn assert_moved_exactly(queues: &Queues, report: &Report, selected: impl Fn(&Seed) -> bool) {
    assert!(report.error.is_none(), "{:?}", report.error);
    let expected = movable(&selected);
    assert!(!expected.is_empty() && expected.len() < SEEDED);
    assert_eq!(report.counts.moved, expected.len() as u64);
    let moved = seqs_on(&queues.client, &queues.source).await;
    assert_eq!(
        moved, expected,
        "moved exactly the matching messages, once each"
    );
    let left: BTreeSet<usize> = seqs_on(&queues.client, &queues.dlq)
        .await
        .into_iter()
        .collect();
    let all: BTreeSet<usize> = (0..SEEDED).collect();
    let expected_left: BTreeSet<usize> = all
        .difference(&expected.into_iter().collect())
        .copied()
        .collect();
    assert_eq!(left, expected_left, "the others are still in the DLQ");
}

#[tokio::test]
async fn an_event_type_filter_moves_exactly_the_messages_of_that_type() {
    let filter = Filter {
        event_type: Some("order.paid".into()),
        ..Filter::default()
    };
    assert_filter_moves_exactly(filter, |s| s.event_type == "order.paid").await;
}

#[tokio::test]
async fn a_class_filter_moves_exactly_the_messages_of_that_class() {
    let filter = Filter {
        class: Some(Class::Transient),
        ..Filter::default()
    };
    assert_filter_moves_exactly(filter, |s| {
        s.failure
            .is_some_and(|(_, class, _)| class == FailureClass::Transient)
    })
    .await;
}

#[tokio::test]
async fn class_none_moves_exactly_the_messages_that_sqs_moved_without_a_reason() {
    let filter = Filter {
        class: Some(Class::None),
        ..Filter::default()
    };
    assert_filter_moves_exactly(filter, |s| s.failure.is_none()).await;
}

#[tokio::test]
async fn a_reason_filter_moves_exactly_the_messages_whose_reason_contains_the_text() {
    let filter = Filter {
        reason: Some("NO_SERVICE".into()),
        ..Filter::default()
    };
    assert_filter_moves_exactly(filter, |s| {
        s.failure
            .is_some_and(|(_, _, reason)| reason.contains("no_service"))
    })
    .await;
}

#[tokio::test]
async fn older_than_moves_exactly_the_messages_that_failed_before() {
    let filter = Filter {
        older_than: Some(Duration::from_secs(24 * 3_600)),
        ..Filter::default()
    };
    assert_filter_moves_exactly(filter, |s| s.failure.is_some() && s.hours >= 24).await;
}

#[tokio::test]
async fn newer_than_moves_exactly_the_messages_that_failed_since() {
    let filter = Filter {
        newer_than: Some(Duration::from_secs(6 * 3_600)),
        ..Filter::default()
    };
    assert_filter_moves_exactly(filter, |s| s.failure.is_none() || s.hours < 6).await;
}

#[tokio::test]
async fn filters_combine_so_that_every_condition_must_hold() {
    let filter = Filter {
        event_type: Some("order.created".into()),
        class: Some(Class::Permanent),
        reason: Some("slack".into()),
        ..Filter::default()
    };
    assert_filter_moves_exactly(filter, |s| {
        s.event_type == "order.created"
            && s.failure.is_some_and(|(code, class, _)| {
                class == FailureClass::Permanent && code.contains("slack")
            })
    })
    .await;
}

/// Takes this long after each batch, as a reader far from its queue would: a pass over the seeded
/// DLQ then outlasts a short visibility timeout.
struct Slow(Duration);

impl Progress for Slow {
    fn update(&self, _: &Counts) {
        std::thread::sleep(self.0);
    }
}

#[tokio::test]
async fn a_narrow_filter_ends_even_when_a_pass_over_the_dlq_outlasts_the_receive_visibility() {
    let queues = seeded().await;
    let filter = Filter {
        event_type: Some("order.paid".into()),
        reason: Some("no_service".into()),
        ..Filter::default()
    };
    let (plan, stop, slow) = (
        plan(filter),
        CancellationToken::new(),
        Slow(Duration::from_millis(20)),
    );
    let run = redrive_with(&queues, &plan, Duration::from_secs(1), &stop, &slow);
    let report = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the run ends although the messages it leaves outlive the receive's visibility");
    assert_moved_exactly(&queues, &report, |s| {
        s.event_type == "order.paid"
            && s.failure
                .is_some_and(|(_, _, reason)| reason.contains("no_service"))
    })
    .await;
}

#[tokio::test]
async fn max_moves_that_many_matching_messages_and_no_more() {
    let queues = seeded().await;
    let filter = Filter {
        event_type: Some("user.signup".into()),
        ..Filter::default()
    };
    let report = redrive(
        &queues,
        &Plan {
            max: Some(25),
            ..plan(filter)
        },
    )
    .await;
    assert_eq!(report.counts.moved, 25);
    let moved = seqs_on(&queues.client, &queues.source).await;
    assert_eq!(moved.len(), 25);
    assert!(moved.iter().all(|&s| seed(s).event_type == "user.signup"));
    assert_eq!(drain(&queues.client, &queues.dlq).await.len(), SEEDED - 25);
}

#[tokio::test]
async fn messages_past_max_redrives_are_left_in_the_dlq() {
    let queues = seeded().await;
    let report = redrive(&queues, &plan(Filter::default())).await;
    let past: Vec<usize> = (0..SEEDED)
        .filter(|&s| seed(s).redrives >= MAX_REDRIVES)
        .collect();
    assert_eq!(report.counts.over_max_redrives, past.len() as u64);
    assert_eq!(seqs_on(&queues.client, &queues.dlq).await, past);
}

#[tokio::test]
async fn a_dry_run_lists_the_matching_messages_and_changes_nothing() {
    let queues = seeded().await;
    let filter = Filter {
        class: Some(Class::Permanent),
        ..Filter::default()
    };
    let dlq = Queue::open(&queues.client, &queues.dlq).await.unwrap();
    let dry_run = Plan {
        remove: false,
        ..plan(filter)
    };
    let report = mover::run(
        &dlq_source(dlq, VISIBILITY),
        &Destination::List,
        &dry_run,
        &CancellationToken::new(),
        &Quiet,
    )
    .await;
    let expected = movable(|s| {
        s.failure
            .is_some_and(|(_, class, _)| class == FailureClass::Permanent)
    });
    let mut listed: Vec<usize> = report
        .listed
        .iter()
        .map(|l| {
            l.message_attributes["seq"]
                .string_value
                .as_deref()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    listed.sort_unstable();
    assert_eq!(listed, expected, "lists what would move");
    assert!(
        drain(&queues.client, &queues.source).await.is_empty(),
        "nothing moved"
    );
    let left = drain(&queues.client, &queues.dlq).await;
    assert_eq!(left.len(), SEEDED, "every message is visible again at once");
    for message in &left {
        let seq = seq_of(message);
        assert_eq!(message.body(), Some(body(seq).as_str()));
        assert!(
            message
                .message_attributes()
                .unwrap()
                .contains_key(FAILURE_ATTRIBUTE)
                == failure_record(seq).is_some()
        );
    }
}

/// An attribute's type, text and bytes.
type AttributeValue = (String, Option<String>, Option<Vec<u8>>);

/// The attributes of a message as comparable values.
fn attribute_values(
    attributes: &HashMap<String, MessageAttributeValue>,
) -> BTreeMap<String, AttributeValue> {
    attributes
        .iter()
        .map(|(name, value)| {
            (
                name.clone(),
                (
                    value.data_type().to_string(),
                    value.string_value().map(str::to_string),
                    value.binary_value().map(|b| b.as_ref().to_vec()),
                ),
            )
        })
        .collect()
}

#[tokio::test]
async fn export_then_import_round_trips_bodies_and_attributes_byte_for_byte() {
    let queues = seeded().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dlq_export.jsonl");
    let dlq = Queue::open(&queues.client, &queues.dlq).await.unwrap();
    let export = Plan {
        max_redrives: None,
        ..plan(Filter::default())
    };
    let report = mover::run(
        &dlq_source(dlq, VISIBILITY),
        &Destination::File(AppendFile::new(&file)),
        &export,
        &CancellationToken::new(),
        &Quiet,
    )
    .await;
    assert_eq!(report.counts.moved, SEEDED as u64);
    assert!(
        drain(&queues.client, &queues.dlq).await.is_empty(),
        "exported with --delete"
    );

    let lines = FileSource::open(&file, None).await.unwrap();
    assert_eq!(lines.total, SEEDED);
    let mut failures = 0;
    for letter in std::iter::from_fn(|| Some(lines.next()))
        .take_while(|b| !b.is_empty())
        .flatten()
    {
        let seq: usize = letter.message_attributes["seq"]
            .string_value
            .as_deref()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(letter.body, body(seq));
        let exported = letter
            .failure
            .map(|f| (f.code, f.reason, f.source_message_id));
        let seeded = failure_record(seq).map(|f| (f.code, f.reason, f.source_message_id));
        assert_eq!(exported, seeded, "the failure record is exported");
        failures += usize::from(seeded.is_some());
    }
    assert!(failures > 0);

    let target = Queue::open(&queues.client, &queues.source).await.unwrap();
    let journal = dir.path().join("dlq_export.jsonl.imported");
    let import = Plan {
        max_redrives: None,
        ..plan(Filter::default())
    };
    let report = mover::run(
        &Source::File(FileSource::open(&file, Some(&journal)).await.unwrap()),
        &Destination::Queue(target),
        &import,
        &CancellationToken::new(),
        &Quiet,
    )
    .await;
    assert_eq!(report.counts.moved, SEEDED as u64);
    let imported = drain(&queues.client, &queues.source).await;
    assert_eq!(imported.len(), SEEDED);
    for message in &imported {
        let seq = seq_of(message);
        assert_eq!(message.body().unwrap().as_bytes(), body(seq).as_bytes());
        let mut expected = own_attributes(seq);
        let redrives = seed(seq).redrives + 1;
        expected.insert(
            REDRIVE_ATTRIBUTE.into(),
            string("Number", &redrives.to_string()),
        );
        assert_eq!(
            attribute_values(message.message_attributes().unwrap()),
            attribute_values(&expected),
            "message {seq}: its own attributes, the failure record removed, the redrive counted"
        );
    }
}

/// Every seeded message is in the DLQ or on the source queue; none in both. Returns how many
/// arrived more than once.
async fn assert_every_message_in_one_place(queues: &Queues) -> usize {
    let moved = seqs_on(&queues.client, &queues.source).await;
    let left = seqs_on(&queues.client, &queues.dlq).await;
    let distinct: BTreeSet<usize> = moved.iter().copied().collect();
    let left_set: BTreeSet<usize> = left.iter().copied().collect();
    assert_eq!(left.len(), left_set.len(), "no message twice in the DLQ");
    assert!(distinct.is_disjoint(&left_set), "no message in both places");
    let everywhere: BTreeSet<usize> = distinct.union(&left_set).copied().collect();
    assert_eq!(everywhere, (0..SEEDED).collect(), "no message lost");
    moved.len() - distinct.len()
}

#[tokio::test]
async fn an_interrupted_redrive_stops_after_the_batch_in_flight_and_a_rerun_moves_the_rest_once() {
    let queues = seeded().await;
    let all = plan(Filter::default());
    let stop = CancellationToken::new();
    let first = redrive_with(
        &queues,
        &all,
        VISIBILITY,
        &stop,
        &StopAfter {
            at: 300,
            stop: stop.clone(),
        },
    )
    .await;
    assert!(first.stopped, "the run says it was stopped");
    assert!(
        (300..SEEDED as u64 / 2).contains(&first.counts.moved),
        "stopped soon after 300: {:?}",
        first.counts
    );
    let second = redrive(&queues, &all).await;
    assert!(!second.stopped);
    assert_eq!(
        first.counts.moved + second.counts.moved,
        movable(|_| true).len() as u64
    );
    assert_eq!(
        assert_every_message_in_one_place(&queues).await,
        0,
        "no duplicate"
    );
}

/// Notifies once `at` messages moved.
struct KillAfter {
    at: u64,
    fired: AtomicBool,
    kill: Notify,
}

impl Progress for KillAfter {
    fn update(&self, counts: &Counts) {
        if counts.moved >= self.at && !self.fired.swap(true, Ordering::SeqCst) {
            self.kill.notify_one();
        }
    }
}

#[tokio::test]
async fn a_redrive_killed_mid_batch_then_rerun_loses_nothing_and_duplicates_at_most_the_batches_in_flight()
 {
    let queues = seeded().await;
    // Takes every message: what a run leaves (past --max-redrives) a killed run leaves hidden for
    // mover::HOLD, longer than this test waits for the rerun.
    let all = Plan {
        max_redrives: None,
        ..plan(Filter::default())
    };
    let visibility = Duration::from_secs(2);
    let kill = KillAfter {
        at: 200,
        fired: AtomicBool::new(false),
        kill: Notify::new(),
    };
    let stop = CancellationToken::new();
    tokio::select! {
        _ = redrive_with(&queues, &all, visibility, &stop, &kill) => panic!("the run ended before the kill"),
        _ = kill.kill.notified() => {}
    }
    // Dropped with other batches in flight, as a killed process: nothing given back, nothing
    // finished. What it had received comes back after its visibility timeout.
    tokio::time::sleep(visibility + Duration::from_secs(1)).await;
    let rerun = redrive(&queues, &all).await;
    assert!(rerun.error.is_none(), "{:?}", rerun.error);
    let duplicates = assert_every_message_in_one_place(&queues).await;
    eprintln!("duplicates after the kill: {duplicates}");
    assert!(
        duplicates <= all.concurrency * 10,
        "only batches in flight can be sent twice: {duplicates}"
    );
}

#[tokio::test]
async fn a_send_failure_mid_batch_deletes_nothing_unsent() {
    let queues = queues(5, 30).await;
    let small = queues
        .client
        .create_queue()
        .queue_name(crate::common::unique("small"))
        .attributes(QueueAttributeName::MaximumMessageSize, "1024")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let big: Vec<usize> = (0..100).filter(|s| s % 7 == 3).collect();
    let small_ones = (0..100).filter(|s| s % 7 != 3 && seed(*s).redrives < MAX_REDRIVES);
    seed_queue(&queues.client, &queues.dlq, small_ones).await;
    let entries = big.iter().map(|&seq| {
        SendMessageBatchRequestEntry::builder()
            .id(format!("big{seq}"))
            .message_body("x".repeat(2_000) + &seq.to_string())
            .message_attributes("seq", string("Number", &seq.to_string()))
            .build()
            .unwrap()
    });
    for chunk in entries.collect::<Vec<_>>().chunks(10) {
        queues
            .client
            .send_message_batch()
            .queue_url(&queues.dlq)
            .set_entries(Some(chunk.to_vec()))
            .send()
            .await
            .unwrap();
    }
    let dlq = Queue::open(&queues.client, &queues.dlq).await.unwrap();
    let to = Queue::open(&queues.client, &small).await.unwrap();
    let report = mover::run(
        &dlq_source(dlq, VISIBILITY),
        &Destination::Queue(to),
        &plan(Filter::default()),
        &CancellationToken::new(),
        &Quiet,
    )
    .await;
    assert_eq!(
        report.counts.failed,
        big.len() as u64,
        "{:?}",
        report.counts
    );
    assert!(
        report
            .failures
            .iter()
            .all(|f| f.contains("sqs:SendMessage")),
        "{:?}",
        report.failures
    );
    let left = seqs_on(&queues.client, &queues.dlq).await;
    assert_eq!(
        left, big,
        "exactly the messages that could not be sent stay in the DLQ"
    );
    let sent = seqs_on(&queues.client, &small).await;
    assert_eq!(sent.len() as u64, report.counts.moved);
    assert!(sent.iter().all(|s| !big.contains(s)));
}

/// Every message of a FIFO queue in the order it comes, deleting each batch (a group's next messages
/// come only then).
async fn consume(client: &aws_sdk_sqs::Client, url: &str) -> Vec<Message> {
    let mut all = Vec::new();
    loop {
        let batch = drain(client, url).await;
        if batch.is_empty() {
            return all;
        }
        for message in &batch {
            let handle = message.receipt_handle().unwrap();
            let delete = client
                .delete_message()
                .queue_url(url)
                .receipt_handle(handle);
            delete.send().await.unwrap();
        }
        all.extend(batch);
    }
}

/// A FIFO queue `{name}.fifo` with `attributes` besides; its URL.
async fn fifo_queue(
    client: &aws_sdk_sqs::Client,
    name: &str,
    attributes: &[(QueueAttributeName, &str)],
) -> String {
    let mut all = HashMap::from([(QueueAttributeName::FifoQueue, "true".to_string())]);
    all.extend(attributes.iter().map(|(k, v)| (k.clone(), v.to_string())));
    client
        .create_queue()
        .queue_name(format!("{name}.fifo"))
        .set_attributes(Some(all))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap()
}

/// A FIFO DLQ and the FIFO queue it is the DLQ of.
async fn fifo_queues() -> Queues {
    let client = aws_sdk_sqs::Client::new(&crate::common::sdk().await);
    let name = crate::common::unique("f");
    let dlq = fifo_queue(&client, &format!("{name}-dlq"), &[]).await;
    let dlq_arn = crate::common::queue_arn(&client, &dlq).await;
    let policy = serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"});
    let policy = policy.to_string();
    let source = fifo_queue(
        &client,
        &name,
        &[(QueueAttributeName::RedrivePolicy, &policy)],
    )
    .await;
    Queues {
        client,
        source,
        source_arn: String::new(),
        dlq,
    }
}

/// A FIFO queue that refuses messages over 1,024 bytes; its URL.
async fn small_fifo_queue(client: &aws_sdk_sqs::Client) -> String {
    let small = [(QueueAttributeName::MaximumMessageSize, "1024")];
    fifo_queue(client, &crate::common::unique("small"), &small).await
}

/// Sends message `seq` with `body` to the FIFO queue `url`, in `group`.
async fn send_fifo(client: &aws_sdk_sqs::Client, url: &str, seq: usize, body: &str, group: &str) {
    client
        .send_message()
        .queue_url(url)
        .message_body(body)
        .message_attributes("seq", string("Number", &seq.to_string()))
        .message_group_id(group)
        .message_deduplication_id(format!("dedup-{seq}"))
        .send()
        .await
        .unwrap();
}

/// The seqs of every message on the FIFO queue `url` by group, each group in the order it comes.
async fn groups_on(client: &aws_sdk_sqs::Client, url: &str) -> BTreeMap<String, Vec<usize>> {
    let mut by_group: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for message in consume(client, url).await {
        let group = &message.attributes().unwrap()[&MessageSystemAttributeName::MessageGroupId];
        by_group
            .entry(group.clone())
            .or_default()
            .push(seq_of(&message));
    }
    by_group
}

/// [`plan`] with one receive at a time. moto's receive of a FIFO queue is not atomic: two at once
/// can split a message group between them, which SQS never does, and the group's order with it.
fn fifo_plan(filter: Filter) -> Plan {
    Plan {
        concurrency: 1,
        ..plan(filter)
    }
}

#[tokio::test]
async fn a_fifo_redrive_keeps_each_message_group_in_order() {
    let queues = fifo_queues().await;
    let group = |seq: usize| format!("group-{}", seq % 3);
    for seq in 0..30 {
        send_fifo(&queues.client, &queues.dlq, seq, &body(seq), &group(seq)).await;
    }
    let report = redrive(&queues, &fifo_plan(Filter::default())).await;
    assert_eq!(report.counts.moved, 30, "{:?}", report);
    let expected: BTreeMap<String, Vec<usize>> = (0..3)
        .map(|g| (group(g), (g..30).step_by(3).collect()))
        .collect();
    assert_eq!(
        groups_on(&queues.client, &queues.source).await,
        expected,
        "each group whole and in its order"
    );
}

#[tokio::test]
async fn on_a_fifo_dlq_a_filter_stops_at_a_groups_first_message_that_it_does_not_take() {
    let queues = fifo_queues().await;
    // 0 is an order.created, the others order.paid.
    for (seq, group) in [(0, "g1"), (1, "g1"), (5, "g2"), (13, "g2")] {
        send_fifo(&queues.client, &queues.dlq, seq, &body(seq), group).await;
    }
    let filter = Filter {
        event_type: Some("order.paid".into()),
        ..Filter::default()
    };
    let report = redrive(&queues, &fifo_plan(filter)).await;
    assert_eq!(report.counts.moved, 2, "{:?}", report.counts);
    assert_eq!(
        groups_on(&queues.client, &queues.source).await,
        BTreeMap::from([("g2".to_string(), vec![5, 13])])
    );
    assert_eq!(
        seqs_on(&queues.client, &queues.dlq).await,
        [0, 1],
        "g1's order.paid waits behind the message before it"
    );
}

#[tokio::test]
async fn a_redrive_to_the_dlq_itself_is_refused() {
    let queues = queues(5, 30).await;
    let dlq = Queue::open(&queues.client, &queues.dlq).await.unwrap();
    let error = destination_of(&dlq, Some(&queues.dlq)).await.unwrap_err();
    assert!(matches!(error, Error::SameQueue(_)), "{error}");
}

#[tokio::test]
async fn a_queue_that_no_redrive_policy_names_is_not_a_dlq() {
    let queues = queues(5, 30).await;
    let source = Queue::open(&queues.client, &queues.source).await.unwrap();
    let error = destination_of(&source, None).await.unwrap_err();
    assert!(
        error.to_string().contains("is not a dead-letter queue"),
        "{error}"
    );
    assert!(error.to_string().contains("--to"), "{error}");
}

#[tokio::test]
async fn a_native_redrive_names_the_one_source_queue_so_that_opsrelays_own_dead_letters_move_too() {
    let queues = queues(5, 30).await;
    let dlq = Queue::open(&queues.client, &queues.dlq).await.unwrap();
    let destination = native_destination(&dlq, None).await.unwrap();
    assert_eq!(destination.map(|q| q.url), Some(queues.source.clone()));
    // A second queue with the same DLQ: each message goes back to its source, as SQS knows it.
    let policy = serde_json::json!({"deadLetterTargetArn": dlq.arn, "maxReceiveCount": "5"});
    queues
        .client
        .create_queue()
        .queue_name(crate::common::unique("second"))
        .attributes(QueueAttributeName::RedrivePolicy, policy.to_string())
        .send()
        .await
        .unwrap();
    assert!(native_destination(&dlq, None).await.unwrap().is_none());
    let source = Queue::open(&queues.client, &queues.source).await.unwrap();
    let error = native_destination(&source, None)
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(
        error.to_string().contains("is not a dead-letter queue"),
        "{error}"
    );
}

#[tokio::test]
async fn an_export_that_cannot_write_its_file_deletes_nothing() {
    let queues = queues(5, 30).await;
    seed_queue(&queues.client, &queues.dlq, 0..20).await;
    let dlq = Queue::open(&queues.client, &queues.dlq).await.unwrap();
    let unwritable = std::path::Path::new("/nonexistent-directory/dlq_export.jsonl");
    let report = mover::run(
        &dlq_source(dlq, VISIBILITY),
        &Destination::File(AppendFile::new(unwritable)),
        &Plan {
            max_redrives: None,
            ..plan(Filter::default())
        },
        &CancellationToken::new(),
        &Quiet,
    )
    .await;
    let error = report.error.expect("the run stops on the file error");
    assert!(
        error.to_string().contains("/nonexistent-directory"),
        "{error}"
    );
    assert_eq!(report.counts.moved, 0);
    assert_eq!(
        seqs_on(&queues.client, &queues.dlq).await,
        (0..20).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn on_a_fifo_queue_a_message_that_cannot_be_sent_holds_back_the_rest_of_its_group() {
    let queues = fifo_queues().await;
    let small = small_fifo_queue(&queues.client).await;
    let too_large = "x".repeat(2_000);
    send_fifo(&queues.client, &queues.dlq, 0, &too_large, "g1").await;
    send_fifo(&queues.client, &queues.dlq, 1, &body(1), "g1").await;
    send_fifo(&queues.client, &queues.dlq, 2, &body(2), "g2").await;
    let dlq = Queue::open(&queues.client, &queues.dlq).await.unwrap();
    let report = mover::run(
        &dlq_source(dlq, VISIBILITY),
        &Destination::Queue(Queue::open(&queues.client, &small).await.unwrap()),
        &plan(Filter::default()),
        &CancellationToken::new(),
        &Quiet,
    )
    .await;
    assert_eq!(
        (report.counts.moved, report.counts.failed),
        (1, 2),
        "{:?}",
        report.counts
    );
    assert!(
        report.failures[1].contains("held back behind an earlier message of group `g1`"),
        "{:?}",
        report.failures
    );
    assert_eq!(
        groups_on(&queues.client, &small).await,
        BTreeMap::from([("g2".to_string(), vec![2])])
    );
    assert_eq!(seqs_on(&queues.client, &queues.dlq).await, [0, 1]);
}

/// Line `seq` of an export, with `body`, in `group`: message id `m-{seq}`, the `seq` attribute, and
/// the seeded failure record.
fn export_line(seq: usize, body: String, group: Option<&str>) -> String {
    let letter = Letter {
        message_id: format!("m-{seq}"),
        body,
        message_attributes: BTreeMap::from([(
            "seq".to_string(),
            serde_json::from_value(
                serde_json::json!({"dataType": "Number", "stringValue": seq.to_string()}),
            )
            .unwrap(),
        )]),
        failure: failure_record(seq),
        unread_failure: None,
        sent_at: None,
        receive_count: None,
        message_group_id: group.map(str::to_string),
        handle: String::new(),
    };
    serde_json::to_string(&letter).unwrap() + "\n"
}

#[tokio::test]
async fn an_import_rerun_sends_only_the_lines_not_yet_sent() {
    let queues = queues(5, 30).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dlq_export.jsonl");
    let lines: String = (0..30)
        .map(|seq| export_line(seq, body(seq), None))
        .collect();
    std::fs::write(&file, lines).unwrap();
    let journal = dir.path().join("dlq_export.jsonl.imported");
    let target = Queue::open(&queues.client, &queues.source).await.unwrap();
    let import = |max| Plan {
        max,
        ..plan(Filter::default())
    };
    let open = || FileSource::open(&file, Some(&journal));
    let first = mover::run(
        &Source::File(open().await.unwrap()),
        &Destination::Queue(target.clone()),
        &import(Some(12)),
        &CancellationToken::new(),
        &Quiet,
    )
    .await;
    assert_eq!(first.counts.moved, 12);
    let rest = open().await.unwrap();
    assert_eq!((rest.already_sent, rest.total), (12, 30));
    let second = mover::run(
        &Source::File(rest),
        &Destination::Queue(target),
        &import(None),
        &CancellationToken::new(),
        &Quiet,
    )
    .await;
    assert_eq!(second.counts.moved, 18);
    assert_eq!(
        seqs_on(&queues.client, &queues.source).await,
        (0..30).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn an_import_to_a_fifo_queue_stops_a_group_at_its_first_line_that_cannot_be_sent() {
    let client = aws_sdk_sqs::Client::new(&crate::common::sdk().await);
    let small = small_fifo_queue(&client).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dlq_export.jsonl");
    // Even lines have no group (they go to the default one), odd lines are in group `h`; line 8 is
    // too large for the queue.
    let lines: String = (0..30)
        .map(|seq| {
            let body = if seq == 8 {
                "x".repeat(2_000)
            } else {
                body(seq)
            };
            export_line(seq, body, (seq % 2 == 1).then_some("h"))
        })
        .collect();
    std::fs::write(&file, lines).unwrap();
    let journal = dir.path().join("dlq_export.jsonl.imported");
    let report = mover::run(
        &Source::File(FileSource::open(&file, Some(&journal)).await.unwrap()),
        &Destination::Queue(Queue::open(&client, &small).await.unwrap()),
        &plan(Filter::default()),
        &CancellationToken::new(),
        &Quiet,
    )
    .await;
    assert_eq!(report.counts.failed, 1, "{:?}", report.counts);
    let expected = BTreeMap::from([
        (DEFAULT_GROUP.to_string(), vec![0, 2, 4, 6]),
        ("h".to_string(), (1..30).step_by(2).collect()),
    ]);
    assert_eq!(groups_on(&client, &small).await, expected);
}

#[tokio::test]
async fn an_import_to_a_fifo_queue_sends_every_line_when_lines_repeat_a_message_id() {
    let client = aws_sdk_sqs::Client::new(&crate::common::sdk().await);
    let to = fifo_queue(&client, &crate::common::unique("repeat"), &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dead-letters.jsonl");
    // As in the local run's dead-letter file, after several runs of event files with the same ids.
    let lines: String = (0..12)
        .map(|seq| {
            export_line(seq, body(seq), None).replace(&format!("\"m-{seq}\""), "\"local-1\"")
        })
        .collect();
    std::fs::write(&file, lines).unwrap();
    let report = mover::run(
        &Source::File(FileSource::open(&file, None).await.unwrap()),
        &Destination::Queue(Queue::open(&client, &to).await.unwrap()),
        &plan(Filter::default()),
        &CancellationToken::new(),
        &Quiet,
    )
    .await;
    assert_eq!(report.counts.moved, 12, "{:?}", report.counts);
    let expected = BTreeMap::from([(DEFAULT_GROUP.to_string(), (0..12).collect())]);
    assert_eq!(groups_on(&client, &to).await, expected);
}

/// A DLQ with its source queue, holding the first 30 seeded messages.
async fn thirty() -> Queues {
    let queues = queues(5, 30).await;
    seed_queue(&queues.client, &queues.dlq, 0..30).await;
    queues
}

/// Every message at once under `--rate 1/s`: ten go at once, the next ten wait ten seconds.
fn paced_at_one_a_second(remove: bool) -> Plan {
    Plan {
        rate: Some(1),
        concurrency: 2,
        max_redrives: None,
        remove,
        ..plan(Filter::default())
    }
}

#[tokio::test]
async fn a_dry_run_is_not_held_back_by_the_rate() {
    let queues = thirty().await;
    let dlq = dlq_source(
        Queue::open(&queues.client, &queues.dlq).await.unwrap(),
        VISIBILITY,
    );
    let dry_run = paced_at_one_a_second(false);
    let stop = CancellationToken::new();
    let listing = mover::run(&dlq, &Destination::List, &dry_run, &stop, &Quiet);
    // Paced, the thirty would take twenty seconds.
    let report = tokio::time::timeout(Duration::from_secs(10), listing)
        .await
        .expect("the listing goes at once");
    assert_eq!(report.listed.len(), 30);
}

#[tokio::test]
async fn ctrl_c_while_batches_wait_for_their_turn_under_the_rate_stops_without_sending_them() {
    let queues = thirty().await;
    let stop = CancellationToken::new();
    // Ctrl-C once both batches are read: the first ten turns went at once (to one batch, or half to
    // each), and the rest come a second apart.
    let ctrl_c = stop.clone();
    let dlq = Queue::open(&queues.client, &queues.dlq).await.unwrap();
    tokio::spawn(async move {
        while dlq.depth().await.unwrap().in_flight < 20 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        ctrl_c.cancel();
    });
    let paced = paced_at_one_a_second(true);
    let run = redrive_with(&queues, &paced, VISIBILITY, &stop, &Quiet);
    // Waiting for their turns, the batches would end the run nine seconds later.
    let report = tokio::time::timeout(Duration::from_secs(6), run)
        .await
        .expect("the stop does not wait for the rate");
    assert!(report.stopped);
    let counts = &report.counts;
    // The stop lands once 20 are read; on a loaded machine the third batch may be read first.
    assert!(counts.read >= 20, "{counts:?}");
    assert!(
        counts.moved <= 10,
        "a batch waiting for its turn was sent: {counts:?}"
    );
    let moved = seqs_on(&queues.client, &queues.source).await;
    assert_eq!(moved.len() as u64, counts.moved);
    let left = seqs_on(&queues.client, &queues.dlq).await;
    assert_eq!(left.len() + moved.len(), 30, "the rest given back at once");
}
