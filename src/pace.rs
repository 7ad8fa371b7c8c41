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

/// Slots per webhook, keyed by the webhook's URL (a secret: `Debug` shows only how many there are).
pub struct Pacer {
    /// Time between two posts at the steady rate.
    interval: Duration,
    /// How far ahead of the steady rate a burst may run.
    tolerance: Duration,
    webhooks: Mutex<HashMap<String, Webhook>>,
}

/// One webhook's pace.
#[derive(Clone, Copy)]
struct Webhook {
    /// Theoretical arrival time of its next post.
    tat: Instant,
    /// Until when Slack asked to hear nothing (`Retry-After`).
    held_until: Option<Instant>,
}

impl std::fmt::Debug for Pacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pacer")
            .field("interval", &self.interval)
            .field("tolerance", &self.tolerance)
            .field("webhooks", &self.lock().len())
            .finish()
    }
}

impl Pacer {
    /// `rate_per_second` posts a second on average, `burst` at once.
    pub fn new(rate_per_second: f64, burst: u32) -> Self {
        let interval = Duration::from_secs_f64(1.0 / rate_per_second.max(0.001));
        Self {
            interval,
            tolerance: interval * burst.saturating_sub(1),
            webhooks: Mutex::new(HashMap::new()),
        }
    }

    /// Reserves the next slot for `key` and waits for it. Returns `Err(slot)` without reserving when
    /// the slot would come after `deadline`. A hold that came while the post waited (a 429 to an
    /// earlier post) voids its slot: it takes the next one after the hold.
    pub async fn acquire(&self, key: &str, deadline: Instant) -> Result<(), Instant> {
        loop {
            let slot = self.reserve(key, deadline)?;
            // A slot that has come needs no timer: sleeping until it would still wait for the
            // timer's next tick, up to a millisecond per post.
            if slot > Instant::now() {
                tokio::time::sleep_until(slot).await;
            }
            let held_until = self.lock().get(key).and_then(|w| w.held_until);
            if held_until.is_none_or(|until| until <= Instant::now()) {
                return Ok(());
            }
        }
    }

    fn reserve(&self, key: &str, deadline: Instant) -> Result<Instant, Instant> {
        let mut webhooks = self.lock();
        let now = Instant::now();
        let webhook = webhooks.get(key).copied();
        let tat = webhook.map_or(now, |w| w.tat).max(now);
        let slot = tat.checked_sub(self.tolerance).unwrap_or(now).max(now);
        if slot > deadline {
            return Err(slot);
        }
        let held_until = webhook.and_then(|w| w.held_until);
        let next = Webhook {
            tat: tat + self.interval,
            held_until,
        };
        webhooks.insert(key.to_string(), next);
        Ok(slot)
    }

    /// How many posts to `key` could start within `within` from now at its pace (none while Slack
    /// holds it back past then): what it can post promptly.
    pub fn slots_within(&self, key: &str, within: Duration) -> usize {
        let webhooks = self.lock();
        let now = Instant::now();
        let tat = webhooks.get(key).map_or(now, |w| w.tat).max(now);
        // Slot k comes at tat + k × interval - tolerance (or now, if that has passed).
        let Some(room) = (now + within + self.tolerance).checked_duration_since(tat) else {
            return 0;
        };
        let steps = room.as_nanos() / self.interval.as_nanos().max(1);
        usize::try_from(steps).map_or(usize::MAX, |s| s.saturating_add(1))
    }

    /// Holds `key` back until `until` (Slack said `Retry-After`).
    pub fn hold(&self, key: &str, until: Instant) {
        let mut webhooks = self.lock();
        let held = until + self.tolerance;
        let webhook = webhooks.entry(key.to_string()).or_insert(Webhook {
            tat: held,
            held_until: None,
        });
        webhook.tat = webhook.tat.max(held);
        webhook.held_until = webhook.held_until.max(Some(until));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Webhook>> {
        crate::lock::lock(&self.webhooks)
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

    #[tokio::test(start_paused = true)]
    async fn a_post_waiting_for_its_slot_waits_out_a_hold_that_came_meanwhile() {
        let pacer = std::sync::Arc::new(Pacer::new(1.0, 1));
        let start = Instant::now();
        let far = start + Duration::from_secs(120);
        pacer.acquire("hook", far).await.unwrap();
        let waiting = tokio::spawn({
            let pacer = pacer.clone();
            async move { pacer.acquire("hook", far).await.map(|()| Instant::now()) }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        pacer.hold("hook", Instant::now() + Duration::from_secs(30));
        let posted_at = waiting.await.unwrap().unwrap();
        assert_eq!(posted_at - start, Duration::from_millis(30_500));
    }

    #[tokio::test(start_paused = true)]
    async fn a_post_waiting_for_its_slot_gives_up_when_a_hold_outlasts_its_deadline() {
        let pacer = std::sync::Arc::new(Pacer::new(1.0, 1));
        let start = Instant::now();
        let deadline = start + Duration::from_secs(10);
        pacer.acquire("hook", deadline).await.unwrap();
        let waiting = tokio::spawn({
            let pacer = pacer.clone();
            async move { pacer.acquire("hook", deadline).await }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        pacer.hold("hook", Instant::now() + Duration::from_secs(30));
        assert!(waiting.await.unwrap().is_err());
        assert_eq!(Instant::now() - start, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn counts_the_posts_it_can_start_promptly() {
        let pacer = Pacer::new(0.5, 1);
        let within = Duration::from_secs(3);
        assert_eq!(pacer.slots_within("hook", within), 2, "now and in 2 s");
        let far = Instant::now() + Duration::from_secs(60);
        pacer.acquire("hook", far).await.unwrap();
        assert_eq!(
            pacer.slots_within("hook", within),
            1,
            "in 2 s (the next, in 4 s, is too late)"
        );
        let bursty = Pacer::new(1.0, 3);
        assert_eq!(
            bursty.slots_within("hook", within),
            6,
            "3 at once, then 1 a second"
        );
        bursty.hold("hook", Instant::now() + Duration::from_secs(10));
        assert_eq!(bursty.slots_within("hook", within), 0, "held back by a 429");
    }

    #[test]
    fn its_debug_output_holds_no_webhook_url() {
        let pacer = Pacer::new(1.0, 1);
        pacer.hold("https://hooks.example/services/T/B/secret", Instant::now());
        let shown = format!("{pacer:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("webhooks: 1"), "{shown}");
    }
}
