//! What can stop a `dlq` command, each text saying what to do: the IAM action to grant, a queue that
//! does not exist, a queue that is not a dead-letter queue, a file that cannot be read or written.

use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};

/// SQS's codes for a KMS key that throttled a call (with and without its query-compatible header):
/// the only KMS error that another try may get past.
const KMS_THROTTLED: [&str; 2] = ["KMS.ThrottlingException", "KmsThrottled"];

/// Whether SQS's error `code` is the queue's KMS key refusing: `KMS.DisabledException` and the like
/// (SQS's query-compatible codes, which the SDK reads), or `KmsDisabled` and the like (the JSON type
/// alone).
fn is_kms(code: &str) -> bool {
    code.starts_with("KMS.") || code.starts_with("Kms")
}

/// A `dlq` command that could not go on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An SQS call failed; `action` is the IAM action it needs.
    #[error("{action} on {target} failed: {detail}{hint}")]
    Aws {
        action: &'static str,
        target: String,
        detail: String,
        hint: String,
    },
    #[error(
        "{0} is not a dead-letter queue: no queue names it in its redrive policy. Pass --to URL to choose where its messages go"
    )]
    NotADlq(String),
    #[error(
        "{dlq} is the dead-letter queue of {} queues ({}): pass --to with the one to send to",
        .sources.len(),
        .sources.join(", ")
    )]
    SeveralSources { dlq: String, sources: Vec<String> },
    #[error("the destination is the dead-letter queue itself ({0}): pass another --to")]
    SameQueue(String),
    #[error(
        "native redrive moves at most 500 messages a second (--rate {0}): lower --rate, or drop --native"
    )]
    NativeRate(u32),
    #[error(
        "no running message move task on {0}: `opsrelay dlq tasks` lists them; a finished task cannot be cancelled"
    )]
    NoRunningTask(String),
    #[error("reading {path} failed: {error}. Check the path and its permissions")]
    Read { path: String, error: String },
    #[error(transparent)]
    File(#[from] crate::deadletter::FileError),
    #[error(
        "{path} line {line}: {error} (expected a JSON line from `opsrelay dlq export` or the local dead-letter file)"
    )]
    Line {
        path: String,
        line: usize,
        error: String,
    },
}

impl Error {
    /// The error of the SQS call `action` (its IAM action name, e.g. `sqs:ReceiveMessage`) on `target`.
    pub fn aws<E>(action: &'static str, target: &str, error: &SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let code = error.code().unwrap_or_default();
        let detail = match (error.code(), error.message()) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(code), None) => code.to_string(),
            _ => match error {
                SdkError::ServiceError(e) => {
                    format!("unexpected answer: HTTP {}", e.raw().status().as_u16())
                }
                _ => crate::aws::describe(error),
            },
        };
        let hint = if is_kms(code) {
            " (the queue's KMS key refused: the identity you run as needs kms:GenerateDataKey on it \
             to send and kms:Decrypt to receive, and the key must be enabled and exist)"
                .to_string()
        } else if code == "OverLimit" {
            " (SQS's limit of about 120,000 messages in flight on one queue: a run keeps each message \
             it reads and does not take hidden until it ends, so that it ends. What it moved stays \
             moved and the rest is given back. Narrow the filter, or move the DLQ to a file with \
             `opsrelay dlq export --delete` and `opsrelay dlq import` from it with the filter: a \
             file has no such limit)"
                .to_string()
        } else if code.contains("AccessDenied") {
            format!(" (missing permission: grant {action} on {target} to the identity you run as)")
        } else if code.contains("NonExistentQueue") || code.contains("QueueDoesNotExist") {
            " (queue not found: check the URL, and the region in AWS_REGION)".to_string()
        } else if action == "sqs:StartMessageMoveTask" && code == "InvalidParameterValue" {
            " (not a dead-letter queue of SQS queues, or a destination of another type: native \
             redrive moves only from a DLQ to its sources or to a queue of the same type)"
                .to_string()
        } else if action == "sqs:CancelMessageMoveTask" && code == "UnsupportedOperation" {
            " (only a running task can be cancelled: `opsrelay dlq tasks` shows its status)"
                .to_string()
        } else {
            String::new()
        };
        Error::Aws {
            action,
            target: target.to_string(),
            detail,
            hint,
        }
    }

    /// Whether every later call would fail the same way (no permission, no queue, no network), so the
    /// run stops instead of failing message after message.
    pub fn stops_the_run<E, R>(error: &SdkError<E, R>) -> bool
    where
        E: ProvideErrorMetadata,
    {
        match error.code() {
            None => true,
            Some(code) => {
                code.contains("AccessDenied")
                    || code.contains("NonExistentQueue")
                    || code.contains("QueueDoesNotExist")
                    || (is_kms(code) && !KMS_THROTTLED.contains(&code))
                    || code == "InvalidSecurity"
            }
        }
    }
}

impl Error {
    /// Reading `path` failed.
    pub(crate) fn read(path: &std::path::Path, error: impl std::fmt::Display) -> Self {
        Error::Read {
            path: path.display().to_string(),
            error: error.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sqs::error::ErrorMetadata;
    use aws_sdk_sqs::operation::send_message_batch::SendMessageBatchError;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;

    fn refused(code: &str) -> SdkError<SendMessageBatchError, HttpResponse> {
        let metadata = ErrorMetadata::builder()
            .code(code)
            .message("refused")
            .build();
        let response = HttpResponse::new(StatusCode::try_from(400).unwrap(), SdkBody::empty());
        SdkError::service_error(SendMessageBatchError::generic(metadata), response)
    }

    #[test]
    fn a_kms_key_that_refuses_stops_the_run_and_names_the_kms_actions() {
        for code in [
            "KMS.AccessDeniedException",
            "KMS.DisabledException",
            "KMS.NotFoundException",
            "KmsAccessDenied",
        ] {
            let error = refused(code);
            assert!(Error::stops_the_run(&error), "{code}");
            let text = Error::aws("sqs:SendMessage", "ops", &error).to_string();
            assert!(text.contains("kms:GenerateDataKey"), "{text}");
            assert!(!text.contains("grant sqs:SendMessage"), "{text}");
        }
    }

    #[test]
    fn a_kms_key_that_throttles_does_not_stop_the_run() {
        for code in ["KMS.ThrottlingException", "KmsThrottled"] {
            assert!(!Error::stops_the_run(&refused(code)), "{code}");
        }
    }

    #[test]
    fn a_dlq_too_large_for_the_filter_says_how_to_go_on() {
        let text = Error::aws("sqs:ReceiveMessage", "dlq", &refused("OverLimit")).to_string();
        assert!(text.contains("120,000 messages in flight"), "{text}");
        assert!(text.contains("export --delete"), "{text}");
    }

    #[test]
    fn a_denied_call_names_the_iam_action() {
        let text = Error::aws("sqs:SendMessage", "ops", &refused("AccessDenied")).to_string();
        assert!(text.contains("grant sqs:SendMessage on ops"), "{text}");
    }
}
