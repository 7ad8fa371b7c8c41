//! A batch of SQS records in, one outcome per record out: delivered, left for SQS to deliver again, or
//! dead-lettered with the reason. Records run concurrently up to a bound (FIFO groups one after the
//! other, in order), a panic fails only its own record, and nothing runs past the deadline.
//!
//! Reading order: [`ordering`] groups a FIFO batch, [`record`] takes one record from start to its
//! posts and from them to its outcome (with [`compose`](mod@compose) for its message,
//! [`route`](mod@route) for where it goes and [`failure`]'s one classification), [`digest`] makes
//! the posts, alone or gathered into digests ([`retry`] inside the invocation, [`isolate`] around
//! each piece of work), [`budget`] is the invocation's time, [`delivered`] the memory that keeps a
//! redelivered message from being posted twice, [`outcome`] the answer for Lambda, and [`tally`]
//! the batch's counts per rule (its log line, summaries and metrics).

pub mod budget;
pub mod compose;
pub mod delivered;
pub mod digest;
pub mod failure;
pub mod isolate;
pub mod ordering;
pub mod outcome;
pub mod record;
pub mod retry;
pub mod route;
pub mod tally;

use std::collections::BTreeMap;
use std::sync::Mutex;

use aws_lambda_events::sqs::SqsMessage;
use futures::StreamExt;
use tokio::time::Instant;

pub use budget::Budget;
pub use compose::{compose, template_context};
pub use failure::{ProcessError, classify};
pub use outcome::{Activity, MissingMessageId, Outcome, Processed, batch_response};
pub use tally::Tally;

use crate::config::{self, Settings};
use crate::db::Database;
use crate::deadletter::DeadLetters;
use crate::lock::{into_inner, lock};
use crate::rules::Rules;
use crate::slack::{Destination, SlackClient};
use crate::source::Poller;
use crate::sqs::QueueKind;
use delivered::DeliveredMemory;
use digest::Gathering;
use ordering::ordering_groups;

/// Everything made once at start-up and borrowed by every event.
pub struct Relay {
    rules: Rules,
    database: Option<Database>,
    slack: SlackClient,
    destinations: BTreeMap<String, Destination>,
    dead_letters: DeadLetters,
    settings: Settings,
    delivered: DeliveredMemory,
    /// Polls the rules' sources (`{"opsrelay": "poll"}`), when they have any.
    poller: Option<Poller>,
}

impl Relay {
    /// Assembles the relay; fails when the rules need what is not configured
    /// ([`config::Problems`]): a database for a query, a webhook for a destination.
    pub fn new(
        settings: Settings,
        rules: Rules,
        database: Option<Database>,
        destinations: BTreeMap<String, Destination>,
        dead_letters: DeadLetters,
    ) -> Result<Self, anyhow::Error> {
        config::Problems::of_rules(&rules, database.is_some(), &destinations).into_result()?;
        let slack = SlackClient::new(&settings.slack)?;
        Ok(Self {
            delivered: DeliveredMemory::new(settings.delivered_memory),
            rules,
            database,
            slack,
            destinations,
            dead_letters,
            settings,
            poller: None,
        })
    }

    /// The relay that also polls the rules' sources with `poller`.
    pub fn with_poller(mut self, poller: Poller) -> Self {
        self.poller = Some(poller);
        self
    }

    pub fn poller(&self) -> Option<&Poller> {
        self.poller.as_ref()
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    pub fn database(&self) -> Option<&Database> {
        self.database.as_ref()
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn slack(&self) -> &SlackClient {
        &self.slack
    }

    pub fn destinations(&self) -> &BTreeMap<String, Destination> {
        &self.destinations
    }

    pub fn dead_letters(&self) -> &DeadLetters {
        &self.dead_letters
    }

    /// Processes a batch that must be answered by `end`; every record gets an outcome, in the order
    /// given. Whether the batch keeps order is decided once, from the queue its records came from.
    pub async fn run_batch(&self, records: &[SqsMessage], end: Instant) -> Vec<Processed> {
        let budget = Budget::new(end, self.settings.deadline_margin);
        let results = match QueueKind::of_batch(records) {
            QueueKind::Standard => self.run_together(records, budget).await,
            QueueKind::Fifo => self.run_in_order(records, budget).await,
        };
        let tally = Tally::of(&results);
        tracing::info!(
            records = records.len(),
            delivered = tally.delivered,
            retried = tally.retried,
            dead_lettered = tally.dead_lettered,
            "Processed a batch."
        );
        results
    }

    /// A standard queue's batch: each record prepared, admitted to the batch's [`Gathering`], and
    /// posted at once and settled, unless it is held for a digest (all up to the concurrency
    /// bound, as they come); then the held records' posts, alone or in digests, and their outcomes.
    async fn run_together(&self, records: &[SqsMessage], budget: Budget) -> Vec<Processed> {
        let concurrency = self.settings.concurrency;
        let mut results: Vec<Option<Processed>> = vec![None; records.len()];
        let gathering = Mutex::new(Gathering::new(records.len()));
        let mut done = futures::stream::iter(records.iter().enumerate())
            .map(|(place, record)| {
                let gathering = &gathering;
                async move {
                    let prepared = self.prepare(record, None, budget).await;
                    let prepared = lock(gathering).admit(self, place, prepared)?;
                    self.post_alone(&prepared, budget).await;
                    Some((place, self.finish(record, prepared, budget).await))
                }
            })
            .buffer_unordered(concurrency);
        while let Some(finished) = done.next().await {
            if let Some((place, processed)) = finished {
                results[place] = Some(processed);
            }
        }
        drop(done);
        let gathering = into_inner(gathering);
        self.post_held(&gathering, budget).await;
        let mut settled = futures::stream::iter(gathering.held)
            .map(|(place, prepared)| async move {
                (place, self.finish(&records[place], prepared, budget).await)
            })
            .buffer_unordered(concurrency);
        while let Some((place, processed)) = settled.next().await {
            results[place] = Some(processed);
        }
        drop(settled);
        results.into_iter().flatten().collect()
    }

    /// A FIFO queue's batch: its groups at once, up to the concurrency bound, each group's records
    /// one after the other (no digests: a digest would post a group's events out of their order).
    async fn run_in_order(&self, records: &[SqsMessage], budget: Budget) -> Vec<Processed> {
        let mut results: Vec<Option<Processed>> = vec![None; records.len()];
        let mut done = futures::stream::iter(ordering_groups(records, QueueKind::Fifo))
            .map(|group| self.run_group(records, group, budget))
            .buffer_unordered(self.settings.concurrency);
        while let Some(group_results) = done.next().await {
            for (index, processed) in group_results {
                results[index] = Some(processed);
            }
        }
        drop(done);
        results.into_iter().flatten().collect()
    }

    /// Runs one ordering group in order; after a record left for retry, the rest of a FIFO group is
    /// left too, so that order is kept (and dead-lettered with that reason on its last receive).
    async fn run_group(
        &self,
        records: &[SqsMessage],
        group: Vec<usize>,
        budget: Budget,
    ) -> Vec<(usize, Processed)> {
        let mut out = Vec::with_capacity(group.len());
        let mut blocked_by: Option<String> = None;
        for index in group {
            let record = &records[index];
            let prepared = self.prepare(record, blocked_by.as_deref(), budget).await;
            self.post_alone(&prepared, budget).await;
            let processed = self.finish(record, prepared, budget).await;
            if blocked_by.is_none() && matches!(processed.outcome, Outcome::Retry { .. }) {
                blocked_by = Some(processed.message_id.clone());
            }
            out.push((index, processed));
        }
        out
    }
}
