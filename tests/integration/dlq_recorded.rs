//! The SQS calls that moto does not implement or cannot fail on demand, against a recorded client:
//! the real SDK serializes each request, the recorder keeps its operation and JSON body and answers
//! it as SQS would. The message move tasks of native redrive (request shapes and errors), and the
//! batch answers moto does not give: entries that fail one by one (on a FIFO queue too), a delete
//! that fails and then succeeds, ids repeated or unknown, and more than ten entries refused.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::http::{HttpRequest, HttpResponse};
use aws_sdk_sqs::config::retry::RetryConfig;
use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_runtime_api::client::http::{
    HttpConnector, HttpConnectorFuture, SharedHttpConnector, http_client_fn,
};
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use opsrelay::redrive::Error;
use opsrelay::redrive::filter::Filter;
use opsrelay::redrive::mover::{self, Counts, Destination, Plan, Progress, Source};
use opsrelay::redrive::native;
use opsrelay::redrive::queue::Queue;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const DLQ: &str = "https://sqs.eu-west-1.amazonaws.com/123456789012/ops-dlq";
const DLQ_ARN: &str = "arn:aws:sqs:eu-west-1:123456789012:ops-dlq";
const SOURCE: &str = "https://sqs.eu-west-1.amazonaws.com/123456789012/ops";
const SOURCE_ARN: &str = "arn:aws:sqs:eu-west-1:123456789012:ops";

/// One call as the SDK sent it: the operation (`X-Amz-Target` without `AmazonSQS.`) and the body.
#[derive(Clone, Debug)]
struct Call {
    operation: String,
    body: Value,
}

/// How the recorded SQS answers a call: a status and a JSON body.
type Answer = dyn Fn(&Call, usize) -> (u16, Value) + Send + Sync;

/// Records every call and answers it with `answer` (given the call and how many calls came before).
#[derive(Clone)]
struct Recorder {
    calls: Arc<Mutex<Vec<Call>>>,
    answer: Arc<Answer>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Recorder")
    }
}

impl HttpConnector for Recorder {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let target = request.headers().get("x-amz-target").unwrap_or_default();
        let body = request.body().bytes().unwrap_or_default();
        let call = Call {
            operation: target.trim_start_matches("AmazonSQS.").to_string(),
            body: serde_json::from_slice(body).unwrap_or(Value::Null),
        };
        let before = {
            let mut calls = self.calls.lock().unwrap();
            calls.push(call.clone());
            calls.len() - 1
        };
        let (status, answer) = (self.answer)(&call, before);
        let mut response = HttpResponse::new(
            StatusCode::try_from(status).unwrap(),
            SdkBody::from(answer.to_string()),
        );
        response
            .headers_mut()
            .insert("content-type", "application/x-amz-json-1.0");
        HttpConnectorFuture::ready(Ok(response))
    }
}

/// A client whose calls go to a recorder answering with `answer`, and the calls it made.
fn recorded(
    answer: impl Fn(&Call, usize) -> (u16, Value) + Send + Sync + 'static,
) -> (Client, Arc<Mutex<Vec<Call>>>) {
    let recorder = Recorder {
        calls: Arc::default(),
        answer: Arc::new(answer),
    };
    let calls = recorder.calls.clone();
    let http = http_client_fn(move |_, _| SharedHttpConnector::new(recorder.clone()));
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("eu-west-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .retry_config(RetryConfig::disabled())
        .http_client(http)
        .build();
    (Client::from_conf(config), calls)
}

/// SQS's answer to a call it refuses with `code`.
fn refused(code: &str, message: &str) -> (u16, Value) {
    (
        400,
        json!({"__type": format!("com.amazonaws.sqs#{code}"), "message": message}),
    )
}

/// The operations of `calls`, in order.
fn operations(calls: &Mutex<Vec<Call>>) -> Vec<String> {
    calls
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.operation.clone())
        .collect()
}

fn queue(client: &Client, url: &str, arn: &str) -> Queue {
    Queue {
        client: client.clone(),
        url: url.into(),
        arn: arn.into(),
        fifo: false,
        max_message_bytes: None,
    }
}

fn task(handle: &str, status: &str) -> Value {
    json!({
        "TaskHandle": handle, "Status": status, "SourceArn": DLQ_ARN,
        "ApproximateNumberOfMessagesMoved": 40, "ApproximateNumberOfMessagesToMove": 100,
        "MaxNumberOfMessagesPerSecond": 50, "StartedTimestamp": 1_790_000_000_000_i64
    })
}

#[tokio::test]
async fn native_redrive_starts_a_move_task_from_the_dlq_to_the_destination_at_the_rate() {
    let (client, calls) = recorded(|_, _| (200, json!({"TaskHandle": "task-1"})));
    let handle = native::start(
        &queue(&client, DLQ, DLQ_ARN),
        Some(&queue(&client, SOURCE, SOURCE_ARN)),
        Some(50),
    )
    .await
    .unwrap();
    assert_eq!(handle, "task-1");
    let calls = calls.lock().unwrap();
    assert_eq!(calls[0].operation, "StartMessageMoveTask");
    assert_eq!(
        calls[0].body,
        json!({"SourceArn": DLQ_ARN, "DestinationArn": SOURCE_ARN, "MaxNumberOfMessagesPerSecond": 50})
    );
}

#[tokio::test]
async fn native_redrive_without_a_destination_leaves_it_to_sqs_to_send_messages_to_their_sources() {
    let (client, calls) = recorded(|_, _| (200, json!({"TaskHandle": "task-2"})));
    let handle = native::start(&queue(&client, DLQ, DLQ_ARN), None, None)
        .await
        .unwrap();
    assert_eq!(handle, "task-2");
    assert_eq!(calls.lock().unwrap()[0].body, json!({"SourceArn": DLQ_ARN}));
}

#[tokio::test]
async fn native_redrive_refuses_a_rate_over_500_before_calling_sqs() {
    let (client, calls) = recorded(|_, _| (200, json!({})));
    let error = native::start(&queue(&client, DLQ, DLQ_ARN), None, Some(501))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::NativeRate(501)), "{error}");
    assert!(calls.lock().unwrap().is_empty());
}

/// The error of a native redrive that SQS refuses with `code` and `message`.
async fn start_refused(code: &'static str, message: &'static str) -> String {
    let (client, _) = recorded(move |_, _| refused(code, message));
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
    let (client, calls) = recorded(|_, _| {
        let failed =
            json!({"Status": "FAILED", "FailureReason": "AWS.SimpleQueueService.NonExistentQueue"});
        (200, json!({"Results": [task("task-1", "RUNNING"), failed]}))
    });
    let tasks = native::tasks(&queue(&client, DLQ, DLQ_ARN)).await.unwrap();
    let call = calls.lock().unwrap()[0].clone();
    assert_eq!(call.operation, "ListMessageMoveTasks");
    assert_eq!(call.body, json!({"SourceArn": DLQ_ARN, "MaxResults": 10}));
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
    let (client, calls) = recorded(|call, _| match call.operation.as_str() {
        "ListMessageMoveTasks" => (
            200,
            json!({"Results": [task("task-old", "COMPLETED"), task("task-now", "RUNNING")]}),
        ),
        _ => (200, json!({"ApproximateNumberOfMessagesMoved": 40})),
    });
    let cancelled = native::cancel(&queue(&client, DLQ, DLQ_ARN), None)
        .await
        .unwrap();
    assert_eq!(cancelled, ("task-now".to_string(), 40));
    let calls = calls.lock().unwrap();
    assert_eq!(calls[1].operation, "CancelMessageMoveTask");
    assert_eq!(calls[1].body, json!({"TaskHandle": "task-now"}));
}

#[tokio::test]
async fn cancel_without_a_running_task_says_there_is_none() {
    let (client, calls) =
        recorded(|_, _| (200, json!({"Results": [task("task-old", "COMPLETED")]})));
    let error = native::cancel(&queue(&client, DLQ, DLQ_ARN), None)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::NoRunningTask(_)), "{error}");
    assert_eq!(operations(&calls), ["ListMessageMoveTasks"]);
}

#[tokio::test]
async fn cancelling_a_finished_task_says_only_a_running_one_can_be() {
    let (client, _) = recorded(|_, _| {
        refused(
            "UnsupportedOperation",
            "Only active tasks can be cancelled.",
        )
    });
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

/// SQS's answer to a receive of three messages: bodies `b0` to `b2`, receipt handles `r0` to `r2`,
/// message groups `g-a`, `g-a` and `g-b`.
fn three_messages() -> (u16, Value) {
    let message = |i: usize| {
        let group = if i < 2 { "g-a" } else { "g-b" };
        json!({
            "MessageId": format!("m{i}"), "ReceiptHandle": format!("r{i}"), "Body": format!("b{i}"),
            "MD5OfBody": "-", "Attributes": {"MessageGroupId": group}
        })
    };
    (
        200,
        json!({"Messages": [message(0), message(1), message(2)]}),
    )
}

/// SQS's answer to a delete or visibility batch whose every entry went through.
fn all_went_through(call: &Call) -> (u16, Value) {
    let ids: Vec<Value> = call.body["Entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| json!({"Id": e["Id"]}))
        .collect();
    (200, json!({"Successful": ids, "Failed": []}))
}

/// A DLQ holding [`three_messages`] that answers deletes and visibility changes with success, and
/// sends with `send`.
fn dlq_of_three(
    send: impl Fn(&Call) -> (u16, Value) + Send + Sync + 'static,
) -> (Client, Arc<Mutex<Vec<Call>>>) {
    recorded(move |call, before| match call.operation.as_str() {
        "ReceiveMessage" if before == 0 => three_messages(),
        "ReceiveMessage" => (200, json!({})),
        "DeleteMessageBatch" | "ChangeMessageVisibilityBatch" => all_went_through(call),
        _ => send(call),
    })
}

/// The receipt handles of the entries of every call to `operation`, sorted.
fn handles(calls: &Mutex<Vec<Call>>, operation: &str) -> Vec<String> {
    handles_of(calls, operation, |_| true)
}

/// The receipt handles of the messages given back (made visible at once), sorted.
fn given_back(calls: &Mutex<Vec<Call>>) -> Vec<String> {
    handles_of(calls, "ChangeMessageVisibilityBatch", |e| {
        e["VisibilityTimeout"] == 0
    })
}

/// The receipt handles of the entries that `keep` selects in every call to `operation`, sorted.
fn handles_of(
    calls: &Mutex<Vec<Call>>,
    operation: &str,
    keep: impl Fn(&Value) -> bool,
) -> Vec<String> {
    let mut handles: Vec<String> = calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.operation == operation)
        .flat_map(|c| c.body["Entries"].as_array().unwrap().clone())
        .filter(|e| keep(e))
        .map(|e| e["ReceiptHandle"].as_str().unwrap().to_string())
        .collect();
    handles.sort();
    handles
}

async fn redrive(client: &Client) -> mover::Report {
    redrive_to(client, queue(client, SOURCE, SOURCE_ARN)).await
}

async fn redrive_to(client: &Client, destination: Queue) -> mover::Report {
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
    let destination = Destination::Queue(destination);
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
    let (client, calls) = dlq_of_three(|call| match call.operation.as_str() {
        "SendMessageBatch" => {
            let failed =
                |id: &str| json!({"Id": id, "SenderFault": false, "Code": "InternalError"});
            let sent = json!({"Id": "0", "MessageId": "new-0", "MD5OfMessageBody": "-"});
            (
                200,
                json!({"Successful": [sent], "Failed": [failed("1"), failed("2")]}),
            )
        }
        _ if call.body["MessageBody"] == "b1" => {
            (200, json!({"MessageId": "new-1", "MD5OfMessageBody": "-"}))
        }
        _ => refused(
            "InvalidParameterValue",
            "Message must be shorter than 1024 bytes.",
        ),
    });
    let report = redrive(&client).await;
    assert_eq!((report.counts.moved, report.counts.failed), (2, 1));
    let alone: Vec<Value> = calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.operation == "SendMessage")
        .map(|c| c.body["MessageBody"].clone())
        .collect();
    assert_eq!(alone, ["b1", "b2"], "each failed entry was retried alone");
    assert_eq!(
        handles(&calls, "DeleteMessageBatch"),
        ["r0", "r1"],
        "deleted only once sent"
    );
    assert_eq!(given_back(&calls), ["r2"], "the unsent one is given back");
    assert!(
        report.failures[0].starts_with("m2: sqs:SendMessage"),
        "{:?}",
        report.failures
    );
}

#[tokio::test]
async fn on_a_fifo_queue_an_entry_that_fails_in_a_batch_holds_back_the_later_ones_of_its_group() {
    let (client, calls) = dlq_of_three(|call| match call.operation.as_str() {
        "SendMessageBatch" => {
            let failed = json!({"Id": "0", "SenderFault": false, "Code": "InternalError"});
            let sent = |id: &str| json!({"Id": id, "MessageId": "new", "MD5OfMessageBody": "-"});
            (
                200,
                json!({"Successful": [sent("1"), sent("2")], "Failed": [failed]}),
            )
        }
        _ => refused("InternalError", "We encountered an internal error."),
    });
    let fifo = Queue {
        url: format!("{SOURCE}.fifo"),
        fifo: true,
        ..queue(&client, SOURCE, SOURCE_ARN)
    };
    let report = redrive_to(&client, fifo).await;
    assert_eq!(
        (report.counts.moved, report.counts.failed),
        (1, 2),
        "{:?}",
        report.counts
    );
    assert_eq!(handles(&calls, "DeleteMessageBatch"), ["r2"], "only g-b's");
    assert_eq!(
        given_back(&calls),
        ["r0", "r1"],
        "m1 stays behind m0, for a rerun to send them in order"
    );
}

#[tokio::test]
async fn a_denied_send_stops_the_run_and_deletes_nothing() {
    let (client, calls) = dlq_of_three(|_| {
        refused(
            "AccessDenied",
            "User: arn:aws:iam::123456789012:user/oncall is not authorized to perform: sqs:sendmessage",
        )
    });
    let report = redrive(&client).await;
    let error = report.error.expect("the run stops").to_string();
    assert!(error.starts_with("sqs:SendMessage on"), "{error}");
    assert!(
        error.contains("missing permission: grant sqs:SendMessage"),
        "{error}"
    );
    assert_eq!(report.counts.moved, 0);
    assert!(handles(&calls, "DeleteMessageBatch").is_empty());
    assert_eq!(given_back(&calls), ["r0", "r1", "r2"], "all given back");
}

#[tokio::test]
async fn batch_answers_that_repeat_an_entry_or_name_one_never_sent_are_read_safely() {
    let (client, calls) = recorded(|call, before| match call.operation.as_str() {
        "ReceiveMessage" if before == 0 => three_messages(),
        "ReceiveMessage" => (200, json!({})),
        "SendMessageBatch" | "DeleteMessageBatch" => {
            let successful = ["0", "0", "1", "2", "7"]
                .map(|id| json!({"Id": id, "MessageId": "new", "MD5OfMessageBody": "-"}));
            (200, json!({"Successful": successful, "Failed": []}))
        }
        _ => all_went_through(call),
    });
    let report = redrive(&client).await;
    let counts = &report.counts;
    assert_eq!(
        (counts.moved, counts.failed, counts.not_removed),
        (3, 0, 0),
        "{counts:?}"
    );
    assert_eq!(handles(&calls, "DeleteMessageBatch"), ["r0", "r1", "r2"]);
    assert!(!operations(&calls).contains(&"SendMessage".to_string()));
}

#[tokio::test]
async fn a_delete_of_more_than_ten_messages_goes_ten_a_call() {
    let (client, calls) = recorded(|call, _| match call.body["Entries"].as_array() {
        Some(entries) if entries.len() > 10 => refused(
            "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
            "Maximum number of entries per request are 10.",
        ),
        _ => all_went_through(call),
    });
    let handles: Vec<String> = (0..25).map(|i| format!("r{i}")).collect();
    let handles: Vec<&str> = handles.iter().map(String::as_str).collect();
    let outcome = queue(&client, DLQ, DLQ_ARN).delete(&handles).await;
    assert_eq!(outcome.done, (0..25).collect());
    let sizes: Vec<usize> = calls
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.body["Entries"].as_array().map_or(1, Vec::len))
        .collect();
    assert_eq!(sizes, [10, 10, 5], "{:?}", operations(&calls));
}

#[tokio::test]
async fn a_message_not_deleted_at_first_but_deleted_when_it_comes_back_is_not_reported_as_left() {
    let receives = AtomicUsize::new(0);
    let (client, _) = recorded(move |call, _| match call.operation.as_str() {
        "ReceiveMessage" => {
            let handle = ["r0", "r0-again"].get(receives.fetch_add(1, Ordering::SeqCst));
            let messages: Vec<Value> = handle
                .map(|h| json!({"MessageId": "m0", "ReceiptHandle": h, "Body": "b0", "MD5OfBody": "-"}))
                .into_iter()
                .collect();
            (200, json!({"Messages": messages}))
        }
        "SendMessageBatch" => {
            let sent = json!({"Id": "0", "MessageId": "new-0", "MD5OfMessageBody": "-"});
            (200, json!({"Successful": [sent], "Failed": []}))
        }
        "DeleteMessageBatch" | "DeleteMessage" if call.body.to_string().contains("\"r0\"") => {
            refused(
                "InternalError",
                "We encountered an internal error. Please try again.",
            )
        }
        _ => all_went_through(call),
    });
    let counts = redrive(&client).await.counts;
    assert_eq!(
        (counts.moved, counts.removed_again, counts.not_removed),
        (1, 1, 0),
        "{counts:?}"
    );
}

#[tokio::test]
async fn giving_visibility_back_goes_on_past_a_call_that_got_no_answer() {
    let (client, calls) = recorded(|call, before| match before {
        0 => (500, json!({})),
        _ => all_went_through(call),
    });
    let handles: Vec<String> = (0..25).map(|i| format!("r{i:02}")).collect();
    queue(&client, DLQ, DLQ_ARN).release(&handles).await;
    let mut given = given_back(&calls);
    given.dedup();
    assert_eq!(given, handles, "every message, the first ten tried again");
    assert_eq!(operations(&calls).len(), 4);
}
