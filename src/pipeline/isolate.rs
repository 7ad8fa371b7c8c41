//! Runs a piece of one record's work (or one digest's post) so that a panic or the deadline fails
//! only that piece, as a [`ProcessError`], never the batch.

use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use tokio::time::Instant;

use super::failure::ProcessError;

/// Runs `work` so that a panic or the deadline fails only it.
pub(super) async fn isolate<T>(
    deadline: Instant,
    work: impl std::future::Future<Output = Result<T, ProcessError>>,
) -> Result<T, ProcessError> {
    match AssertUnwindSafe(tokio::time::timeout_at(deadline, work))
        .catch_unwind()
        .await
    {
        Ok(Ok(result)) => result,
        Ok(Err(_elapsed)) => Err(ProcessError::Deadline),
        Err(panic) => Err(ProcessError::Panicked(panic_text(&*panic))),
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_panic_becomes_this_records_failure() {
        let result: Result<(), _> = isolate(Instant::now() + Duration::from_secs(5), async {
            panic!("boom in a template helper")
        })
        .await;
        match result {
            Err(ProcessError::Panicked(text)) => assert_eq!(text, "boom in a template helper"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn work_past_the_deadline_is_cut() {
        let result = isolate(Instant::now() + Duration::from_secs(1), async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        })
        .await;
        assert!(matches!(result, Err(ProcessError::Deadline)));
    }
}
