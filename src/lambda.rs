//! The Lambda handler: a batch of SQS records in, the partial batch response out
//! (`ReportBatchItemFailures` must be on in the event source mapping), and the batch's metrics as EMF
//! lines on standard output. Invoked with
//! `{"opsrelay": "doctor"}` instead, it runs [`crate::doctor`] from inside the VPC and returns the
//! report; with `{"opsrelay": "poll"}` (an EventBridge Scheduler schedule), it polls the rules'
//! sources ([`crate::source`]) every `OPSRELAY_POLL_INTERVAL_MS` until its deadline draws near, and
//! returns the last poll's report.

use std::time::SystemTime;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsMessage};
use serde::Deserialize;
use tokio::time::Instant;

use crate::pipeline::{MissingMessageId, Relay, Tally, batch_response};

/// Handles one invocation. An `Err` fails the whole batch; it happens only when a record without a
/// message id could neither be delivered nor dead-lettered, the one case a partial response cannot
/// express.
pub async fn handle(
    relay: &Relay,
    records: &[SqsMessage],
    deadline: SystemTime,
    metrics: Metrics,
) -> Result<SqsBatchResponse, MissingMessageId> {
    let results = relay.run_batch(records, instant_at(deadline)).await;
    metrics.write(&Tally::of(&results));
    batch_response(&results)
}

/// Where a batch's metrics go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metrics {
    /// Standard output, as CloudWatch Embedded Metric Format, which Lambda's log stream turns into
    /// metrics (no API call); logs go to standard error.
    Stdout,
    /// Made and dropped (a benchmark that prints its own table on standard output).
    Discard,
}

impl Metrics {
    fn write(self, tally: &Tally) {
        self.write_lines(tally.emf_lines(SystemTime::now()));
    }

    fn write_lines(self, lines: Vec<String>) {
        use std::io::Write as _;
        if self == Metrics::Stdout {
            let mut out = std::io::stdout().lock();
            for line in lines {
                // A closed standard output is no reason to fail a batch.
                let _ = writeln!(out, "{line}");
            }
        }
    }
}

/// An invocation's payload, read straight into its types: a batch of 10,000 records is about 5 MB,
/// and a JSON tree of it first would more than double the memory it takes.
#[derive(Debug, Default, Deserialize)]
pub struct Invocation {
    /// An SQS batch.
    #[serde(rename = "Records")]
    pub records: Option<Vec<SqsMessage>>,
    /// `"doctor"` for the doctor event.
    pub opsrelay: Option<serde_json::Value>,
}

/// An invocation that is neither an SQS batch nor the doctor event.
#[derive(Debug, thiserror::Error)]
pub enum InvocationError {
    #[error(
        "the event is neither an SQS batch ({{\"Records\": [...]}}) nor {{\"opsrelay\": \"doctor\"}}"
    )]
    Unknown,
    #[error(
        "the poll event came, but the rules file has no [sources] (or the relay was built without them): add a source, or remove the schedule"
    )]
    NoSources,
    #[error("the response could not be written: {0}")]
    Response(#[from] serde_json::Error),
    #[error(transparent)]
    MissingMessageId(#[from] MissingMessageId),
}

/// Handles any invocation: an SQS batch, or the doctor event.
pub async fn handle_any(
    relay: &Relay,
    event: Invocation,
    deadline: SystemTime,
    metrics: Metrics,
) -> Result<serde_json::Value, InvocationError> {
    match event.opsrelay.as_ref().and_then(|v| v.as_str()) {
        Some("doctor") => {
            let report = crate::doctor::run(&crate::doctor::Subject::of_relay(relay)).await;
            tracing::info!(ok = report.ok, report = %report.text(), "Ran the doctor.");
            return Ok(serde_json::to_value(report)?);
        }
        Some("poll") => return poll(relay, deadline, metrics).await,
        _ => {}
    }
    let records = event.records.ok_or(InvocationError::Unknown)?;
    Ok(serde_json::to_value(
        handle(relay, &records, deadline, metrics).await?,
    )?)
}

/// The poll event: the sources polled every interval until the deadline less the margin; each
/// poll's metrics written.
async fn poll(
    relay: &Relay,
    deadline: SystemTime,
    metrics: Metrics,
) -> Result<serde_json::Value, InvocationError> {
    let (Some(poller), Some(database)) = (relay.poller(), relay.database()) else {
        return Err(InvocationError::NoSources);
    };
    let settings = relay.settings();
    let end = instant_at(deadline);
    let until = end.checked_sub(settings.deadline_margin).unwrap_or(end);
    let sources = &relay.rules().sources;
    let each = |report: &[crate::source::Polled]| {
        metrics.write_lines(crate::source::emf_lines(report, SystemTime::now()));
    };
    let report = poller
        .run(database, sources, settings.poll.interval, until, each)
        .await;
    Ok(serde_json::to_value(report)?)
}

/// The monotonic instant of a wall-clock deadline.
pub fn instant_at(deadline: SystemTime) -> Instant {
    let left = deadline
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    Instant::now() + left
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invocation_is_read_as_a_batch_the_doctor_or_neither() {
        let batch: Invocation =
            serde_json::from_str(r#"{"Records": [{"messageId": "m-1", "body": "42"}]}"#).unwrap();
        let records = batch.records.unwrap();
        assert_eq!(records[0].message_id.as_deref(), Some("m-1"));
        let doctor: Invocation = serde_json::from_str(r#"{"opsrelay": "doctor"}"#).unwrap();
        assert!(doctor.records.is_none());
        assert_eq!(doctor.opsrelay.unwrap(), "doctor");
        let other: Invocation =
            serde_json::from_str(r#"{"detail-type": "Scheduled Event"}"#).unwrap();
        assert!(other.records.is_none() && other.opsrelay.is_none());
    }
}
