//! How a transient failure is retried inside one invocation: exponential backoff with jitter, Slack's
//! `Retry-After` honoured, and never a wait that ends past the deadline. The `backoff` crate is the
//! scheduler (kept behind this module: it is flagged unmaintained, RUSTSEC-2025-0012); whether an
//! error is retried at all is [`super::failure::classify`]'s decision, not this module's.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use backoff::ExponentialBackoff;
use backoff::backoff::Backoff;
use tokio::time::Instant;

use super::failure::{ProcessError, classify, retry_after};
use crate::config::RetryPolicy;
use crate::deadletter::FailureClass;
use crate::lock::lock;

/// A retry is only worth scheduling when at least this much time is left after its wait.
const MIN_ATTEMPT: Duration = Duration::from_millis(250);

/// Exponential backoff that gives up instead of sleeping past the deadline.
struct DeadlineBackoff {
    inner: ExponentialBackoff,
    deadline: Instant,
}

impl Backoff for DeadlineBackoff {
    fn reset(&mut self) {
        self.inner.reset();
    }

    fn next_backoff(&mut self) -> Option<Duration> {
        self.inner
            .next_backoff()
            .filter(|wait| Instant::now() + *wait + MIN_ATTEMPT < self.deadline)
    }
}

/// Runs `attempt` until it succeeds, fails permanently, or no retry fits before `deadline`; returns
/// the last error then. Each retry is logged at WARN with what is retried (`what`) and why.
pub async fn retry<T, F, Fut>(
    policy: &RetryPolicy,
    deadline: Instant,
    what: &'static str,
    mut attempt: F,
) -> Result<T, ProcessError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ProcessError>>,
{
    let backoff = DeadlineBackoff {
        inner: ExponentialBackoff {
            initial_interval: policy.initial_interval,
            current_interval: policy.initial_interval,
            max_interval: policy.max_interval,
            max_elapsed_time: None,
            ..ExponentialBackoff::default()
        },
        deadline,
    };
    // The error a retry was scheduled for, reported if the next attempt is cut by the deadline.
    let last = Mutex::new(None);
    backoff::future::retry_notify(
        backoff,
        || {
            let next = tokio::time::timeout_at(deadline, attempt());
            let last = &last;
            async move {
                match next.await {
                    Ok(result) => result.map_err(|error| schedule(error, deadline)),
                    Err(_elapsed) => Err(backoff::Error::permanent(
                        lock(last).take().unwrap_or(ProcessError::Deadline),
                    )),
                }
            }
        },
        |error: ProcessError, wait: Duration| {
            tracing::warn!(
                code = error.code(),
                error = %error,
                retry_in_ms = wait.as_millis() as u64,
                "Retrying {what}."
            );
            *lock(&last) = Some(error);
        },
    )
    .await
}

/// Tells the scheduler what to do with a failed attempt.
fn schedule(error: ProcessError, deadline: Instant) -> backoff::Error<ProcessError> {
    if classify(&error) == FailureClass::Permanent {
        return backoff::Error::permanent(error);
    }
    match retry_after(&error) {
        Some(wait) if Instant::now() + wait + MIN_ATTEMPT < deadline => {
            backoff::Error::retry_after(error, wait)
        }
        // The wait asked for outlasts the invocation: stop here and leave it to SQS. The error keeps
        // its transient class for the outcome.
        Some(_) => backoff::Error::permanent(error),
        None => backoff::Error::transient(error),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::slack::SlackError;

    fn server_error() -> ProcessError {
        ProcessError::Slack {
            destination: "D".into(),
            source: SlackError::Rejected {
                status: 503,
                code: "service_unavailable".into(),
            },
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_a_transient_error_until_it_passes() {
        let calls = AtomicU32::new(0);
        let deadline = Instant::now() + Duration::from_secs(30);
        let result = retry(&RetryPolicy::default(), deadline, "post", || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(server_error())
            } else {
                Ok(())
            }
        })
        .await;
        assert!(result.is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn never_retries_a_permanent_error() {
        let calls = AtomicU32::new(0);
        let deadline = Instant::now() + Duration::from_secs(30);
        let result: Result<(), _> = retry(&RetryPolicy::default(), deadline, "post", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(ProcessError::UnknownEventType("x".into()))
        })
        .await;
        assert!(matches!(result, Err(ProcessError::UnknownEventType(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn stops_before_the_deadline() {
        let start = Instant::now();
        let deadline = start + Duration::from_secs(3);
        let result: Result<(), _> = retry(&RetryPolicy::default(), deadline, "post", || async {
            Err(server_error())
        })
        .await;
        assert!(result.is_err());
        assert!(Instant::now() < deadline);
    }

    #[tokio::test(start_paused = true)]
    async fn waits_as_long_as_retry_after_says() {
        let calls = AtomicU32::new(0);
        let start = Instant::now();
        let deadline = start + Duration::from_secs(30);
        retry(&RetryPolicy::default(), deadline, "post", || async {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                Err(ProcessError::Slack {
                    destination: "D".into(),
                    source: SlackError::RateLimited {
                        retry_after: Some(Duration::from_secs(7)),
                    },
                })
            } else {
                Ok(())
            }
        })
        .await
        .unwrap();
        assert_eq!(Instant::now() - start, Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_at_once_when_retry_after_outlasts_the_deadline() {
        let start = Instant::now();
        let deadline = start + Duration::from_secs(5);
        let result: Result<(), _> = retry(&RetryPolicy::default(), deadline, "post", || async {
            Err(ProcessError::Slack {
                destination: "D".into(),
                source: SlackError::RateLimited {
                    retry_after: Some(Duration::from_secs(60)),
                },
            })
        })
        .await;
        let error = result.unwrap_err();
        assert_eq!(classify(&error), FailureClass::Transient);
        assert_eq!(Instant::now(), start);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_at_once_when_the_webhook_has_no_slot_before_the_deadline() {
        let calls = AtomicU32::new(0);
        let start = Instant::now();
        let deadline = start + Duration::from_secs(20);
        let result: Result<(), _> = retry(&RetryPolicy::default(), deadline, "post", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(ProcessError::Slack {
                destination: "D".into(),
                source: SlackError::NoSlotBeforeDeadline {
                    wait: Duration::from_secs(60),
                },
            })
        })
        .await;
        let error = result.unwrap_err();
        assert_eq!(classify(&error), FailureClass::Transient, "left to SQS");
        assert_eq!(calls.load(Ordering::SeqCst), 1, "no attempt can get a slot");
        assert_eq!(Instant::now(), start);
    }
}
