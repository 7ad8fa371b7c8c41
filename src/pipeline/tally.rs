//! What a batch did, counted per rule: the batch's log line, the worker's and the local run's
//! summaries, and on Lambda the batch's metrics ([`crate::metrics`]: delivered, digested, dropped, retried,
//! dead-lettered by code, posts, Slack's 429s, and the events' ages when posted).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::outcome::{Outcome, Processed};
use crate::human::Age;
use crate::metrics::{Emf, Unit};

/// CloudWatch takes at most this many values of one metric in one EMF line.
pub const MAX_VALUES: usize = 100;

/// The rule of records that have none (not parsed, or of a type no rule names).
pub const NO_RULE: &str = "(none)";

/// The counts of one rule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleTally {
    pub delivered: u64,
    /// Of those, delivered inside a digest.
    pub digested: u64,
    /// Acknowledged without posting, by a `drop` route.
    pub dropped: u64,
    pub retried: u64,
    /// By failure code.
    pub dead_lettered: BTreeMap<String, u64>,
    pub posts: u64,
    pub rate_limited: u64,
    /// The events' ages when posted, in milliseconds (kept for one batch's metrics only).
    pub ages_ms: Vec<u64>,
    /// The oldest of them, over everything counted.
    pub oldest_ms: u64,
}

/// The counts of a batch, or of every batch of a run, per rule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub delivered: u64,
    pub dropped: u64,
    pub retried: u64,
    pub dead_lettered: u64,
    pub rules: BTreeMap<String, RuleTally>,
}

impl Tally {
    pub fn of(results: &[Processed]) -> Self {
        let mut tally = Tally::default();
        for result in results {
            let rule = result.rule.as_deref().unwrap_or(NO_RULE);
            let counts = tally.rules.entry(rule.to_string()).or_default();
            match &result.outcome {
                Outcome::Delivered => {
                    tally.delivered += 1;
                    counts.delivered += 1;
                    counts.digested += u64::from(result.activity.digests > 0);
                }
                Outcome::Dropped { .. } => {
                    tally.dropped += 1;
                    counts.dropped += 1;
                }
                Outcome::Retry { .. } => {
                    tally.retried += 1;
                    counts.retried += 1;
                }
                Outcome::DeadLettered(failure) => {
                    tally.dead_lettered += 1;
                    *counts
                        .dead_lettered
                        .entry(failure.code.clone())
                        .or_default() += 1;
                }
            }
            let activity = &result.activity;
            counts.posts += u64::from(activity.posts);
            counts.rate_limited += u64::from(activity.rate_limited);
            for age in &activity.ages_at_post {
                let ms = age.as_millis() as u64;
                counts.ages_ms.push(ms);
                counts.oldest_ms = counts.oldest_ms.max(ms);
            }
        }
        tally
    }

    /// Adds `other`'s counts (not its ages: a run's summary keeps only the oldest).
    pub fn add(&mut self, other: &Tally) {
        self.delivered += other.delivered;
        self.dropped += other.dropped;
        self.retried += other.retried;
        self.dead_lettered += other.dead_lettered;
        for (rule, theirs) in &other.rules {
            let ours = self.rules.entry(rule.clone()).or_default();
            ours.delivered += theirs.delivered;
            ours.digested += theirs.digested;
            ours.dropped += theirs.dropped;
            ours.retried += theirs.retried;
            for (code, n) in &theirs.dead_lettered {
                *ours.dead_lettered.entry(code.clone()).or_default() += n;
            }
            ours.posts += theirs.posts;
            ours.rate_limited += theirs.rate_limited;
            ours.oldest_ms = ours.oldest_ms.max(theirs.oldest_ms);
        }
    }

    /// The batch's metrics, stamped `at`: one line per rule (its ages in further lines past
    /// [`MAX_VALUES`], CloudWatch's limit for one metric's values), and one per rule and failure
    /// code.
    pub fn emf_lines(&self, at: SystemTime) -> Vec<String> {
        let mut lines = Vec::new();
        for (rule, counts) in &self.rules {
            let mut ages = counts.ages_ms.chunks(MAX_VALUES);
            let dead_lettered = counts.dead_lettered.values().sum();
            let line = Emf::new(at)
                .dimension("Rule", rule)
                .rollup()
                .value("Delivered", Unit::Count, counts.delivered)
                .value("Digested", Unit::Count, counts.digested)
                .value("Dropped", Unit::Count, counts.dropped)
                .value("Retried", Unit::Count, counts.retried)
                .value("DeadLettered", Unit::Count, dead_lettered)
                .value("Posts", Unit::Count, counts.posts)
                .value("SlackRateLimited", Unit::Count, counts.rate_limited)
                .values(
                    "EventAge",
                    Unit::Milliseconds,
                    ages.next().unwrap_or_default(),
                );
            lines.push(line.line());
            for more in ages {
                let line = Emf::new(at).dimension("Rule", rule).rollup();
                lines.push(line.values("EventAge", Unit::Milliseconds, more).line());
            }
            for (code, n) in &counts.dead_lettered {
                let by_code = Emf::new(at)
                    .dimension("Rule", rule)
                    .dimension("Code", code)
                    .value("DeadLettered", Unit::Count, *n);
                lines.push(by_code.line());
            }
        }
        lines
    }

    /// A line per rule, for a person: what the local run and the worker print at the end.
    pub fn per_rule(&self) -> String {
        let mut out = String::new();
        for (rule, c) in &self.rules {
            let codes: Vec<String> = c
                .dead_lettered
                .iter()
                .map(|(code, n)| format!("{n} {code}"))
                .collect();
            let dead_lettered: u64 = c.dead_lettered.values().sum();
            let codes = if codes.is_empty() {
                String::new()
            } else {
                format!(" ({})", codes.join(", "))
            };
            let oldest = if c.posts > 0 {
                format!(
                    ", the oldest event {} old when posted",
                    Age(Duration::from_millis(c.oldest_ms))
                )
            } else {
                String::new()
            };
            out.push_str(&format!(
                "  {rule}: {} delivered ({} in digests), {} dropped, {} retried, {dead_lettered} dead-lettered{codes}; posts: {}, 429s: {}{oldest}\n",
                c.delivered, c.digested, c.dropped, c.retried, c.posts, c.rate_limited,
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::pipeline::Activity;

    fn delivered(rule: &str, ages: usize) -> Processed {
        Processed {
            message_id: "m".into(),
            outcome: Outcome::Delivered,
            rule: Some(rule.into()),
            activity: Activity {
                posts: ages as u32,
                digests: 0,
                rate_limited: 0,
                ages_at_post: vec![Duration::from_millis(5); ages],
            },
        }
    }

    #[test]
    fn ages_past_cloudwatchs_hundred_values_go_into_further_lines_and_counts_once() {
        let tally = Tally::of(&[delivered("r", 150), delivered("r", 100)]);
        let lines: Vec<serde_json::Value> = tally
            .emf_lines(SystemTime::now())
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let sizes: Vec<usize> = lines
            .iter()
            .map(|l| l["EventAge"].as_array().unwrap().len())
            .collect();
        assert_eq!(sizes, [100, 100, 50]);
        assert_eq!(lines[0]["Delivered"], 2);
        assert!(lines[1..].iter().all(|l| l.get("Delivered").is_none()));
    }
}
