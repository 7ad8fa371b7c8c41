//! Paces posts to each webhook at Slack's rate (about one message a second, short bursts allowed) so
//! that opsrelay does not earn 429s in the first place, and holds a webhook back when Slack asks for
//! it (`Retry-After`).
//!
//! It is the generic cell rate algorithm: each webhook has a theoretical arrival time; a post takes the
//! next slot in order, and a post whose slot would come after its deadline takes none.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Slots per webhook.
#[derive(Debug)]
pub struct Pacer {
    /// Time between two posts at the steady rate.
    interval: Duration,
    /// How far ahead of the steady rate a burst may run.
    tolerance: Duration,
    arrivals: Mutex<HashMap<String, Instant>>,
}

impl Pacer {
    /// `rate_per_second` posts a second on average, `burst` at once.
    pub fn new(rate_per_second: f64, burst: u32) -> Self {
        let interval = Duration::from_secs_f64(1.0 / rate_per_second.max(0.001));
        Self {
            interval,
            tolerance: interval * burst.saturating_sub(1),
            arrivals: Mutex::new(HashMap::new()),
        }
    }

    /// Reserves the next slot for `key` and waits for it. Returns `Err(slot)` without reserving when
    /// the slot would come after `deadline`.
    pub async fn acquire(&self, key: &str, deadline: Instant) -> Result<(), Instant> {
        let slot = {
            let mut arrivals = self.arrivals.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let tat = arrivals.get(key).copied().unwrap_or(now).max(now);
            let slot = tat.checked_sub(self.tolerance).unwrap_or(now).max(now);
            if slot > deadline {
                return Err(slot);
            }
            arrivals.insert(key.to_string(), tat + self.interval);
            slot
        };
        // A slot that has come needs no timer: sleeping until it would still wait for the timer's
        // next tick, up to a millisecond per post.
        if slot > Instant::now() {
            tokio::time::sleep_until(slot).await;
        }
        Ok(())
    }

    /// Holds `key` back until `until` (Slack said `Retry-After`).
    pub fn hold(&self, key: &str, until: Instant) {
        let mut arrivals = self.arrivals.lock().unwrap_or_else(|e| e.into_inner());
        let held = until + self.tolerance;
        let tat = arrivals.entry(key.to_string()).or_insert(held);
        *tat = (*tat).max(held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn lets_a_burst_through_then_keeps_the_rate() {
        let pacer = Pacer::new(1.0, 3);
        let start = Instant::now();
        let far = start + Duration::from_secs(60);
        for _ in 0..3 {
            pacer.acquire("hook", far).await.unwrap();
        }
        assert_eq!(Instant::now() - start, Duration::ZERO);
        pacer.acquire("hook", far).await.unwrap();
        assert_eq!(Instant::now() - start, Duration::from_secs(1));
        pacer.acquire("hook", far).await.unwrap();
        assert_eq!(Instant::now() - start, Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn refuses_a_slot_past_the_deadline_without_taking_it() {
        let pacer = Pacer::new(1.0, 1);
        let start = Instant::now();
        pacer.acquire("hook", start).await.unwrap();
        let refused = pacer
            .acquire("hook", start + Duration::from_millis(500))
            .await;
        assert_eq!(refused, Err(start + Duration::from_secs(1)));
        pacer
            .acquire("hook", start + Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(Instant::now() - start, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn webhooks_are_paced_apart() {
        let pacer = Pacer::new(1.0, 1);
        let start = Instant::now();
        let far = start + Duration::from_secs(60);
        pacer.acquire("a", far).await.unwrap();
        pacer.acquire("b", far).await.unwrap();
        assert_eq!(Instant::now() - start, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_delays_the_next_post() {
        let pacer = Pacer::new(10.0, 5);
        let start = Instant::now();
        pacer.hold("hook", start + Duration::from_secs(30));
        pacer
            .acquire("hook", start + Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(Instant::now() - start, Duration::from_secs(30));
    }
}
