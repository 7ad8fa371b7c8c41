//! What can stop a `dlq` command, each text saying what to do: the IAM action to grant, a queue that
//! does not exist, a queue that is not a dead-letter queue, a file that cannot be read or written.

use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};

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
    #[error(
        "writing {path} failed: {error}. The file is cut back to its last whole line, and nothing that waited on this write was done (no message deleted from a queue, no import line counted as sent): free disk space, fix the file's permissions or write to another file, then run again"
    )]
    Write { path: String, error: String },
    #[error(
        "{0} does not end with a newline: its last line is unfinished, most likely by a run killed while writing it. Removing that line loses nothing (a message is deleted from the DLQ, or an import line counted as sent, only once its line is whole on disk): remove it, or end it with a newline if it is whole, then run again; or write to another file"
    )]
    Unfinished(String),
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
        let hint = if code.contains("AccessDenied") {
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
                    || code.starts_with("Kms")
                    || code == "InvalidSecurity"
            }
        }
    }
}

impl Error {
    /// Writing to `path`, an [`AppendFile`](super::file::AppendFile), failed.
    pub(crate) fn write(path: &std::path::Path, error: impl std::fmt::Display) -> Self {
        Error::Write {
            path: path.display().to_string(),
            error: error.to_string(),
        }
    }

    /// Reading `path` failed.
    pub(crate) fn read(path: &std::path::Path, error: impl std::fmt::Display) -> Self {
        Error::Read {
            path: path.display().to_string(),
            error: error.to_string(),
        }
    }
}
