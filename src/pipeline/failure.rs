//! Everything that can go wrong with one message, classified in one place ([`classify`]) as transient
//! (worth another try) or permanent (will fail the same way again).
//!
//! The retry loop ([`super::retry`]) and the outcome decision ([`super::record`]) both ask
//! [`classify`]; nothing else decides whether an error is retried.

use std::time::Duration;

use crate::db::LookupError;
use crate::deadletter::{Failure, FailureClass};
use crate::event::EventError;
use crate::human::Age;
use crate::render::RenderError;
use crate::slack::SlackError;

/// Why one message could not be delivered (cloned for each event of a digest that failed).
#[derive(Clone, Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("malformed event: {0}")]
    Event(#[from] EventError),
    #[error(
        "no rule for event type `{0}`: add a [rules.\"{0}\"] table to the rules file, or stop publishing this type"
    )]
    UnknownEventType(String),
    #[error(
        "record {id} of rule `{rule}` not found, {} after the event (replicas get {} to catch up): check that the id exists on the primary",
        Age(*age),
        Age(*grace)
    )]
    RecordNotFound {
        rule: String,
        id: String,
        age: Duration,
        grace: Duration,
    },
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error("posting to destination `{destination}` failed: {source}")]
    Slack {
        destination: String,
        #[source]
        source: SlackError,
    },
    #[error(
        "an earlier message of its FIFO group ({earlier}) is being retried, and order is kept: see that message's failure"
    )]
    FifoBlocked { earlier: String },
    #[error("the invocation's deadline came before the message was delivered")]
    Deadline,
    #[error("processing panicked: {0}")]
    Panicked(String),
}

impl ProcessError {
    /// A stable, short name for the failure, for filters and dashboards.
    pub fn code(&self) -> &'static str {
        match self {
            ProcessError::Event(_) => "malformed_event",
            ProcessError::UnknownEventType(_) => "unknown_event_type",
            ProcessError::RecordNotFound { .. } => "record_not_found",
            ProcessError::Lookup(LookupError::Unavailable(_)) => "database_unavailable",
            ProcessError::Lookup(LookupError::Query { .. }) => "query_failed",
            ProcessError::Lookup(LookupError::UnsupportedColumn { .. }) => "unsupported_column",
            ProcessError::Lookup(LookupError::BadId { .. }) => "bad_id",
            ProcessError::Render(_) => "template_failed",
            ProcessError::Slack { source, .. } => match source {
                SlackError::RateLimited { .. } => "slack_rate_limited",
                SlackError::Rejected { status, .. } if *status >= 500 => "slack_server_error",
                SlackError::Rejected { .. } => "slack_rejected",
                SlackError::Timeout(_) => "slack_timeout",
                SlackError::Connection(_) => "slack_unreachable",
                SlackError::NoSlotBeforeDeadline { .. } => "slack_paced",
            },
            ProcessError::FifoBlocked { .. } => "fifo_blocked",
            ProcessError::Deadline => "deadline",
            ProcessError::Panicked(_) => "panic",
        }
    }
}

/// The one classification of every error. Transient errors are retried (in the invocation, then by
/// SQS); permanent ones go to the DLQ at once.
pub fn classify(error: &ProcessError) -> FailureClass {
    use FailureClass::{Permanent, Transient};
    match error {
        ProcessError::Event(_) | ProcessError::UnknownEventType(_) | ProcessError::Render(_) => {
            Permanent
        }
        ProcessError::RecordNotFound { age, grace, .. } => {
            if age < grace {
                Transient
            } else {
                Permanent
            }
        }
        ProcessError::Lookup(lookup) => match lookup {
            LookupError::Unavailable(_) => Transient,
            LookupError::Query {
                sqlstate,
                mysql_error,
                ..
            } => {
                let by_state = sqlstate.as_deref().is_some_and(is_transient_sqlstate);
                if by_state || mysql_error.is_some_and(is_transient_mysql_error) {
                    Transient
                } else {
                    Permanent
                }
            }
            LookupError::UnsupportedColumn { .. } | LookupError::BadId { .. } => Permanent,
        },
        ProcessError::Slack { source, .. } => match source {
            SlackError::RateLimited { .. }
            | SlackError::Timeout(_)
            | SlackError::Connection(_)
            | SlackError::NoSlotBeforeDeadline { .. } => Transient,
            // 5xx (`rollup_error` and the like) and 408 pass; every other answer (400
            // `invalid_payload`, 403 `invalid_token`, 404 `no_service`, 410 `channel_is_archived`, …)
            // will be given again.
            SlackError::Rejected { status, .. } => {
                if *status >= 500 || *status == 408 {
                    Transient
                } else {
                    Permanent
                }
            }
        },
        // A panic may come from a passing state; SQS's retries bound it and the last receive
        // dead-letters it with this reason.
        // A blocked message waits for the one before it; on its last receive it is dead-lettered
        // with this reason rather than moved by SQS without one.
        ProcessError::FifoBlocked { .. } | ProcessError::Deadline | ProcessError::Panicked(_) => {
            Transient
        }
    }
}

/// How long before another attempt can succeed, when that is known: the wait Slack asked for
/// (`Retry-After`), or the time until the webhook's next free slot.
pub fn retry_after(error: &ProcessError) -> Option<Duration> {
    match error {
        ProcessError::Slack {
            source: SlackError::RateLimited { retry_after },
            ..
        } => *retry_after,
        ProcessError::Slack {
            source: SlackError::NoSlotBeforeDeadline { wait },
            ..
        } => Some(*wait),
        _ => None,
    }
}

/// SQLSTATE classes that say "try again": connection exceptions (08), transaction rollbacks such as
/// serialization failures, deadlocks and replica conflicts (40), insufficient resources (53),
/// operator intervention such as a shutdown or a cancelled query (57), system errors (58), and
/// authorization failures while credentials rotate (28).
fn is_transient_sqlstate(code: &str) -> bool {
    matches!(code.get(..2), Some("08" | "28" | "40" | "53" | "57" | "58"))
}

/// MySQL and MariaDB error numbers that say "try again" under a SQLSTATE that does not (`HY000`,
/// `70100`): lock wait timeout (1205), deadlock (1213), query interrupted (1317), server shutting
/// down (1053), too many connections (1040), connection killed (MariaDB 1927), statement time limit
/// reached (MariaDB `max_statement_time` 1969, MySQL `max_execution_time` 3024).
fn is_transient_mysql_error(number: u16) -> bool {
    matches!(
        number,
        1040 | 1053 | 1205 | 1213 | 1317 | 1927 | 1969 | 3024
    )
}

impl ProcessError {
    /// What the dead-letter record says of this error.
    pub fn failure(&self) -> Failure {
        Failure {
            class: classify(self),
            code: self.code(),
            reason: self.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slack(source: SlackError) -> ProcessError {
        ProcessError::Slack {
            destination: "D".into(),
            source,
        }
    }

    fn rejected(status: u16, code: &str) -> ProcessError {
        slack(SlackError::Rejected {
            status,
            code: code.into(),
        })
    }

    #[test]
    fn slack_errors_are_classified_as_slack_documents_them() {
        use FailureClass::{Permanent, Transient};
        let cases = [
            (rejected(400, "invalid_payload"), Permanent),
            (rejected(400, "no_text"), Permanent),
            (rejected(403, "invalid_token"), Permanent),
            (rejected(403, "action_prohibited"), Permanent),
            (rejected(404, "no_service"), Permanent),
            (rejected(404, "channel_not_found"), Permanent),
            (rejected(410, "channel_is_archived"), Permanent),
            (rejected(500, "rollup_error"), Transient),
            (rejected(502, "bad_gateway"), Transient),
            (rejected(408, "timeout"), Transient),
            (
                slack(SlackError::RateLimited { retry_after: None }),
                Transient,
            ),
            (
                slack(SlackError::Timeout(Duration::from_secs(1))),
                Transient,
            ),
            (slack(SlackError::Connection("reset".into())), Transient),
        ];
        for (error, class) in cases {
            assert_eq!(classify(&error), class, "{error}");
        }
    }

    #[test]
    fn a_missing_record_is_transient_only_within_the_grace_period() {
        let missing = |age| ProcessError::RecordNotFound {
            rule: "r".into(),
            id: "1".into(),
            age: Duration::from_secs(age),
            grace: Duration::from_secs(60),
        };
        assert_eq!(classify(&missing(10)), FailureClass::Transient);
        assert_eq!(classify(&missing(61)), FailureClass::Permanent);
    }

    #[test]
    fn a_missing_records_age_reads_as_a_duration_a_person_reads() {
        let text = |age_s: u64| {
            ProcessError::RecordNotFound {
                rule: "order.created".into(),
                id: "42".into(),
                age: Duration::from_secs(age_s),
                grace: Duration::from_secs(120),
            }
            .to_string()
        };
        for (age_s, expected) in [
            (30, "30 s after the event"),
            (110, "110 s after the event"),
            (45 * 60 + 59, "45 min after the event"),
            (5 * 3_600 + 10, "5 h after the event"),
            (9 * 86_400 + 3_600, "9 days after the event"),
            (817_841_687, "9465 days after the event"),
        ] {
            let text = text(age_s);
            assert!(text.contains(expected), "{age_s} s: {text}");
        }
    }

    #[test]
    fn mysql_errors_are_transient_by_number_when_their_sqlstate_is_generic() {
        let query = |number: u16| {
            ProcessError::Lookup(LookupError::Query {
                of: Some("rule `r`".into()),
                sqlstate: Some("HY000".into()),
                mysql_error: Some(number),
                message: "m".into(),
            })
        };
        assert_eq!(classify(&query(1205)), FailureClass::Transient, "lock wait");
        assert_eq!(
            classify(&query(3024)),
            FailureClass::Transient,
            "time limit"
        );
        assert_eq!(classify(&query(1146)), FailureClass::Permanent, "no table");
    }

    #[test]
    fn database_errors_are_transient_by_sqlstate_class() {
        let query = |code: &str| {
            ProcessError::Lookup(LookupError::Query {
                of: Some("rule `r`".into()),
                sqlstate: Some(code.into()),
                mysql_error: None,
                message: "m".into(),
            })
        };
        assert_eq!(
            classify(&query("40001")),
            FailureClass::Transient,
            "serialization failure"
        );
        assert_eq!(
            classify(&query("57014")),
            FailureClass::Transient,
            "query cancelled on a replica"
        );
        assert_eq!(
            classify(&query("08006")),
            FailureClass::Transient,
            "connection failure"
        );
        assert_eq!(
            classify(&query("42P01")),
            FailureClass::Permanent,
            "undefined table"
        );
        assert_eq!(
            classify(&query("42601")),
            FailureClass::Permanent,
            "syntax error"
        );
        assert_eq!(
            classify(&ProcessError::Lookup(LookupError::Unavailable("x".into()))),
            FailureClass::Transient
        );
    }
}
