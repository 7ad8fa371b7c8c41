//! The SQS calls that moto does not implement or cannot fail on demand, against a recorded client
//! (aws-smithy-mocks): the message move tasks of native redrive (request shapes and errors), and a
//! batch whose entries fail one by one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::ErrorMetadata;
use aws_sdk_sqs::operation::cancel_message_move_task::{
    CancelMessageMoveTaskError, CancelMessageMoveTaskOutput,
};
use aws_sdk_sqs::operation::change_message_visibility_batch::ChangeMessageVisibilityBatchOutput;
use aws_sdk_sqs::operation::delete_message_batch::DeleteMessageBatchOutput;
use aws_sdk_sqs::operation::list_message_move_tasks::ListMessageMoveTasksOutput;
use aws_sdk_sqs::operation::receive_message::ReceiveMessageOutput;
use aws_sdk_sqs::operation::send_message::{SendMessageError, SendMessageOutput};
use aws_sdk_sqs::operation::send_message_batch::{SendMessageBatchError, SendMessageBatchOutput};
use aws_sdk_sqs::operation::start_message_move_task::{
    StartMessageMoveTaskError, StartMessageMoveTaskOutput,
};
use aws_sdk_sqs::types::{
    BatchResultErrorEntry, ChangeMessageVisibilityBatchResultEntry, DeleteMessageBatchResultEntry,
    ListMessageMoveTasksResultEntry, Message, SendMessageBatchResultEntry,
};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use opsrelay::redrive::Error;
use opsrelay::redrive::filter::Filter;
use opsrelay::redrive::mover::{self, Counts, Destination, Plan, Progress, Source};
use opsrelay::redrive::native;
use opsrelay::redrive::queue::Queue;
use tokio_util::sync::CancellationToken;

const DLQ: &str = "https://sqs.eu-west-1.amazonaws.com/123456789012/ops-dlq";
const DLQ_ARN: &str = "arn:aws:sqs:eu-west-1:123456789012:ops-dlq";
const SOURCE: &str = "https://sqs.eu-west-1.amazonaws.com/123456789012/ops";
const SOURCE_ARN: &str = "arn:aws:sqs:eu-west-1:123456789012:ops";

fn client(rules: &[&Rule]) -> Client {
    mock_client!(aws_sdk_sqs, RuleMode::MatchAny, rules)
}

fn queue(client: &Client, url: &str, arn: &str) -> Queue {
    Queue {
        client: client.clone(),
        url: url.into(),
        arn: arn.into(),
        fifo: false,
    }
}

/// A service error with this code, as SQS answers.
fn error(code: &str, message: &str) -> ErrorMetadata {
    ErrorMetadata::builder().code(code).message(message).build()
}

fn task(handle: &str, status: &str) -> ListMessageMoveTasksResultEntry {
    ListMessageMoveTasksResultEntry::builder()
        .task_handle(handle)
        .status(status)
        .source_arn(DLQ_ARN)
        .approximate_number_of_messages_moved(40)
        .approximate_number_of_messages_to_move(100)
        .max_number_of_messages_per_second(50)
        .started_timestamp(1_790_000_000_000)
        .build()
}

#[tokio::test]
async fn native_redrive_starts_a_move_task_from_the_dlq_to_the_destination_at_the_rate() {
    let start = mock!(Client::start_message_move_task)
        .match_requests(|r| {
            r.source_arn() == Some(DLQ_ARN)
                && r.destination_arn() == Some(SOURCE_ARN)
                && r.max_number_of_messages_per_second() == Some(50)
        })
        .then_output(|| {
            StartMessageMoveTaskOutput::builder()
                .task_handle("task-1")
                .build()
        });
    let client = client(&[&start]);
    let handle = native::start(
        &queue(&client, DLQ, DLQ_ARN),
        Some(&queue(&client, SOURCE, SOURCE_ARN)),
        Some(50),
    )
    .await
    .unwrap();
    assert_eq!(handle, "task-1");
    assert_eq!(start.num_calls(), 1);
}

#[tokio::test]
async fn native_redrive_without_a_destination_leaves_it_to_sqs_to_send_messages_to_their_sources() {
    let start = mock!(Client::start_message_move_task)
        .match_requests(|r| {
            r.destination_arn().is_none() && r.max_number_of_messages_per_second().is_none()
        })
        .then_output(|| {
            StartMessageMoveTaskOutput::builder()
                .task_handle("task-2")
                .build()
        });
    let client = client(&[&start]);
    let handle = native::start(&queue(&client, DLQ, DLQ_ARN), None, None)
        .await
        .unwrap();
    assert_eq!(handle, "task-2");
}

#[tokio::test]
async fn native_redrive_refuses_a_rate_over_500_before_calling_sqs() {
    let start = mock!(Client::start_message_move_task)
        .then_output(|| StartMessageMoveTaskOutput::builder().build());
    let client = client(&[&start]);
    let error = native::start(&queue(&client, DLQ, DLQ_ARN), None, Some(501))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::NativeRate(501)), "{error}");
    assert_eq!(start.num_calls(), 0);
}

/// The error of a native redrive that SQS answers with `code` and `message`.
async fn start_refused(code: &'static str, message: &'static str) -> String {
    let start = mock!(Client::start_message_move_task)
        .then_error(move || StartMessageMoveTaskError::generic(error(code, message)));
    let client = client(&[&start]);
    native::start(&queue(&client, DLQ, DLQ_ARN), None, None)
        .await
        .unwrap_err()
        .to_string()
}

#[tokio::test]
async fn a_denied_move_task_names_the_iam_action_to_grant() {
    let error = start_refused(
        "AccessDenied",
        "User: arn:aws:iam::123456789012:user/oncall is not authorized to perform: sqs:startmessagemovetask",
    )
    .await;
    assert!(error.contains("is not authorized"), "{error}");
    assert!(
        error.contains("missing permission: grant sqs:StartMessageMoveTask on arn:aws:sqs:"),
        "{error}"
    );
}

#[tokio::test]
async fn a_move_task_from_a_queue_that_is_not_a_dlq_says_so() {
    let error = start_refused(
        "InvalidParameterValue",
        "Source queue must be configured as a Dead Letter Queue.",
    )
    .await;
    assert!(error.contains("not a dead-letter queue"), "{error}");
}

#[tokio::test]
async fn tasks_lists_the_move_tasks_of_the_dlq() {
    let list = mock!(Client::list_message_move_tasks)
        .match_requests(|r| r.source_arn() == Some(DLQ_ARN) && r.max_results() == Some(10))
        .then_output(|| {
            ListMessageMoveTasksOutput::builder()
                .results(task("task-1", "RUNNING"))
                .results(
                    ListMessageMoveTasksResultEntry::builder()
                        .status("FAILED")
                        .failure_reason("AWS.SimpleQueueService.NonExistentQueue")
                        .build(),
                )
                .build()
        });
    let client = client(&[&list]);
    let tasks = native::tasks(&queue(&client, DLQ, DLQ_ARN)).await.unwrap();
    assert_eq!(tasks.len(), 2);
    let running = &tasks[0];
    assert_eq!(running.handle.as_deref(), Some("task-1"));
    assert_eq!(
        (running.moved, running.to_move, running.rate),
        (40, Some(100), Some(50))
    );
    assert!(running.started_at.is_some());
    assert_eq!(
        tasks[1].failure_reason.as_deref(),
        Some("AWS.SimpleQueueService.NonExistentQueue")
    );
}

#[tokio::test]
async fn cancel_without_a_handle_cancels_the_running_task() {
    let list = mock!(Client::list_message_move_tasks).then_output(|| {
        ListMessageMoveTasksOutput::builder()
            .results(task("task-old", "COMPLETED"))
            .results(task("task-now", "RUNNING"))
            .build()
    });
    let cancel = mock!(Client::cancel_message_move_task)
        .match_requests(|r| r.task_handle() == Some("task-now"))
        .then_output(|| {
            CancelMessageMoveTaskOutput::builder()
                .approximate_number_of_messages_moved(40)
                .build()
        });
    let client = client(&[&list, &cancel]);
    let cancelled = native::cancel(&queue(&client, DLQ, DLQ_ARN), None)
        .await
        .unwrap();
    assert_eq!(cancelled, ("task-now".to_string(), 40));
    assert_eq!(cancel.num_calls(), 1);
}

#[tokio::test]
async fn cancel_without_a_running_task_says_there_is_none() {
    let list = mock!(Client::list_message_move_tasks).then_output(|| {
        ListMessageMoveTasksOutput::builder()
            .results(task("task-old", "COMPLETED"))
            .build()
    });
    let client = client(&[&list]);
    let error = native::cancel(&queue(&client, DLQ, DLQ_ARN), None)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::NoRunningTask(_)), "{error}");
}

#[tokio::test]
async fn cancelling_a_finished_task_says_only_a_running_one_can_be() {
    let cancel = mock!(Client::cancel_message_move_task).then_error(|| {
        CancelMessageMoveTaskError::generic(error(
            "UnsupportedOperation",
            "Only active tasks can be cancelled.",
        ))
    });
    let client = client(&[&cancel]);
    let error = native::cancel(&queue(&client, DLQ, DLQ_ARN), Some("task-old"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("only a running task can be cancelled"),
        "{error}"
    );
}

struct Quiet;

impl Progress for Quiet {
    fn update(&self, _: &Counts) {}
}

/// What the recorded client was asked to delete and to give back.
#[derive(Default)]
struct Calls {
    deleted: Vec<String>,
    released: Vec<String>,
}

/// A DLQ that holds three messages (bodies `b0` to `b2`, receipt handles `r0` to `r2`), recording
/// deletes and visibility changes.
fn dlq_of_three(calls: &Arc<Mutex<Calls>>) -> Vec<Rule> {
    let receive = mock!(Client::receive_message)
        .sequence()
        .output(|| {
            let message = |i: usize| {
                Message::builder()
                    .message_id(format!("m{i}"))
                    .receipt_handle(format!("r{i}"))
                    .body(format!("b{i}"))
                    .build()
            };
            ReceiveMessageOutput::builder()
                .messages(message(0))
                .messages(message(1))
                .messages(message(2))
                .build()
        })
        .output(|| ReceiveMessageOutput::builder().build())
        .repeatedly()
        .build();
    let deletes = calls.clone();
    let delete = mock!(Client::delete_message_batch).then_compute_output(move |r| {
        let mut output = DeleteMessageBatchOutput::builder();
        for entry in r.entries() {
            deletes
                .lock()
                .unwrap()
                .deleted
                .push(entry.receipt_handle().to_string());
            output = output.successful(
                DeleteMessageBatchResultEntry::builder()
                    .id(entry.id())
                    .build()
                    .unwrap(),
            );
        }
        output.set_failed(Some(vec![])).build().unwrap()
    });
    let releases = calls.clone();
    let release = mock!(Client::change_message_visibility_batch).then_compute_output(move |r| {
        let mut output = ChangeMessageVisibilityBatchOutput::builder();
        for entry in r.entries() {
            releases
                .lock()
                .unwrap()
                .released
                .push(entry.receipt_handle().to_string());
            let done = ChangeMessageVisibilityBatchResultEntry::builder().id(entry.id());
            output = output.successful(done.build().unwrap());
        }
        output.set_failed(Some(vec![])).build().unwrap()
    });
    vec![receive, delete, release]
}

async fn redrive(client: &Client) -> mover::Report {
    let source = Source::Queue {
        queue: queue(client, DLQ, DLQ_ARN),
        visibility: Duration::from_secs(30),
        wait: Duration::ZERO,
    };
    let plan = Plan {
        filter: Filter::default(),
        max: None,
        max_redrives: Some(3),
        rate: None,
        concurrency: 1,
        remove: true,
    };
    let destination = Destination::Queue(queue(client, SOURCE, SOURCE_ARN));
    mover::run(
        &source,
        &destination,
        &plan,
        &CancellationToken::new(),
        &Quiet,
    )
    .await
}

#[tokio::test]
async fn entries_that_fail_in_a_batch_are_retried_alone_and_only_those_sent_are_deleted() {
    let calls = Arc::new(Mutex::new(Calls::default()));
    let batch = mock!(Client::send_message_batch).then_output(|| {
        let failed = |id: &str| {
            BatchResultErrorEntry::builder()
                .id(id)
                .sender_fault(false)
                .code("InternalError")
                .build()
                .unwrap()
        };
        let sent = SendMessageBatchResultEntry::builder()
            .id("0")
            .message_id("new-0")
            .md5_of_message_body("-")
            .build()
            .unwrap();
        SendMessageBatchOutput::builder()
            .successful(sent)
            .failed(failed("1"))
            .failed(failed("2"))
            .build()
            .unwrap()
    });
    let alone_ok = mock!(Client::send_message)
        .match_requests(|r| r.message_body() == Some("b1"))
        .then_output(|| SendMessageOutput::builder().message_id("new-1").build());
    let alone_fails = mock!(Client::send_message)
        .match_requests(|r| r.message_body() == Some("b2"))
        .then_error(|| {
            SendMessageError::generic(error("InvalidParameterValue", "Message must be shorter"))
        });
    let mut rules = dlq_of_three(&calls);
    rules.extend([batch, alone_ok.clone(), alone_fails.clone()]);
    let client = client(&rules.iter().collect::<Vec<_>>());
    let report = redrive(&client).await;
    assert_eq!((report.counts.moved, report.counts.failed), (2, 1));
    assert_eq!((alone_ok.num_calls(), alone_fails.num_calls()), (1, 1));
    let calls = calls.lock().unwrap();
    assert_eq!(calls.deleted, ["r0", "r1"], "deleted only once sent");
    assert_eq!(calls.released, ["r2"], "the unsent one is given back");
    assert!(
        report.failures[0].starts_with("m2: sqs:SendMessage"),
        "{:?}",
        report.failures
    );
}

#[tokio::test]
async fn a_denied_send_stops_the_run_and_deletes_nothing() {
    let calls = Arc::new(Mutex::new(Calls::default()));
    let batch = mock!(Client::send_message_batch).then_error(|| {
        SendMessageBatchError::generic(error(
            "AccessDenied",
            "User: arn:aws:iam::123456789012:user/oncall is not authorized to perform: sqs:sendmessage",
        ))
    });
    let mut rules = dlq_of_three(&calls);
    rules.push(batch);
    let client = client(&rules.iter().collect::<Vec<_>>());
    let report = redrive(&client).await;
    let error = report.error.expect("the run stops").to_string();
    assert!(error.starts_with("sqs:SendMessage on"), "{error}");
    assert!(
        error.contains("missing permission: grant sqs:SendMessage"),
        "{error}"
    );
    assert_eq!(report.counts.moved, 0);
    let mut calls = calls.lock().unwrap();
    assert!(calls.deleted.is_empty());
    calls.released.sort();
    assert_eq!(calls.released, ["r0", "r1", "r2"], "all given back");
}
