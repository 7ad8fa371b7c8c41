//! The invocation's time, in one type: when it ends, how much of it the records' work may use (the
//! rest is kept for dead-letter sends and the answer), and how long a dead-letter send may take now.

use std::time::Duration;

use tokio::time::Instant;

/// Kept free before the invocation's end when dead-lettering: the answer to the batch still has to be
/// returned.
const DLQ_SEND_RESERVE: Duration = Duration::from_millis(100);
/// A DLQ send is not started with less time than this for it.
const MIN_DLQ_SEND: Duration = Duration::from_millis(100);

/// One invocation's (or one worker batch's) time.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    end: Instant,
    work_end: Instant,
}

impl Budget {
    /// The time until `end`, of which the last `margin` (`OPSRELAY_DEADLINE_MARGIN_MS`) is kept back
    /// from the records' work.
    pub fn new(end: Instant, margin: Duration) -> Self {
        Self {
            end,
            work_end: end.checked_sub(margin).unwrap_or_else(Instant::now),
        }
    }

    /// Lookups, posts and their retries stop here.
    pub fn work_deadline(&self) -> Instant {
        self.work_end
    }

    /// How long a dead-letter send may take from now: `Err` with what is left when that is too
    /// little to start one (a send that ran past the end would time the whole invocation out,
    /// delivered records included).
    pub fn for_dead_letter(&self) -> Result<Duration, Duration> {
        let left = self
            .end
            .saturating_duration_since(Instant::now())
            .saturating_sub(DLQ_SEND_RESERVE);
        if left < MIN_DLQ_SEND {
            Err(left)
        } else {
            Ok(left)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_margin_is_kept_from_the_work_and_a_dead_letter_needs_time_of_its_own() {
        let budget = Budget::new(
            Instant::now() + Duration::from_secs(3),
            Duration::from_secs(2),
        );
        assert_eq!(
            budget.work_deadline(),
            Instant::now() + Duration::from_secs(1)
        );
        assert_eq!(budget.for_dead_letter(), Ok(Duration::from_millis(2_900)));
        tokio::time::advance(Duration::from_millis(2_850)).await;
        assert_eq!(budget.for_dead_letter(), Err(Duration::from_millis(50)));
    }
}
