//! The posts of a standard queue's batch: alone, or, when more events of one rule are bound for one
//! destination (with one route's mention) than the pacer can post promptly, or than the rule's
//! `digest.min_events`, gathered into one digest message. A digest delivers every one of its events
//! when Slack takes it, or fails every one with the same error (dead-lettered if permanent, retried
//! as today if transient). Destinations a warm process already served for a message are skipped.
//!
//! Records are admitted one by one as they are prepared ([`Gathering::admit`]): a record none of
//! whose groups can reach its digest threshold within the batch is posted at once (so that ordinary
//! traffic flows as before, and memory stays that of the records in flight); the others are held
//! until the batch is prepared, and of a group that becomes a digest only the events it lists keep
//! their message and row.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Mutex;

use futures::StreamExt;
use tokio::time::Instant;
use tracing::Instrument;

use super::Relay;
use super::budget::Budget;
use super::compose::{Composed, template_context};
use super::failure::ProcessError;
use super::isolate::isolate;
use super::outcome::Activity;
use super::record::{Prepared, Ready, Stage};
use super::retry::retry;
use super::route::Post;
use crate::event::OpsEvent;
use crate::lock::lock;
use crate::render::{DigestEntry, RenderError, SlackMessage};
use crate::rules::{Rule, Rules};
use crate::slack::SlackError;

/// One message to post: where, with which route's mention, for which records (one alone; several
/// for a digest).
struct Send<'a, 'r> {
    rule: &'r Rule,
    destination: &'r str,
    mention: Option<&'r str>,
    /// Borrowed for a record's own post (no allocation on the common path).
    members: Cow<'a, [Member<'a, 'r>]>,
    digest: bool,
}

/// A record with a post in a send, and what it is ready to post.
type Member<'a, 'r> = (&'a Prepared<'r>, &'a Ready<'r>);

/// The posts bound for one destination with one mention, of one rule.
type GroupKey<'r> = (&'r str, &'r str, Option<&'r str>);

/// The held records of one group.
struct Group<'r> {
    rule: &'r Rule,
    /// It becomes a digest when it holds more records than this.
    threshold: usize,
    /// Indexes into [`Gathering::held`].
    members: Vec<usize>,
    /// Members before this one were trimmed already (each is trimmed once).
    trimmed: usize,
}

/// How a standard queue's batch gathers into digests, as its records are prepared.
pub(super) struct Gathering<'r> {
    /// Records in the batch: a group that cannot outgrow its threshold with all of them posts at once.
    batch: usize,
    groups: Vec<(GroupKey<'r>, Group<'r>)>,
    index: HashMap<GroupKey<'r>, usize>,
    /// The held records, with their place in the batch.
    pub(super) held: Vec<(usize, Prepared<'r>)>,
}

impl<'r> Gathering<'r> {
    pub(super) fn new(batch: usize) -> Self {
        Self {
            batch,
            groups: Vec::new(),
            index: HashMap::new(),
            held: Vec::new(),
        }
    }

    /// Takes the prepared record at `place` in the batch: back, to be posted at once, or held for
    /// a digest (its destinations already served skipped either way).
    pub(super) fn admit(
        &mut self,
        relay: &'r Relay,
        place: usize,
        mut prepared: Prepared<'r>,
    ) -> Option<Prepared<'r>> {
        let Stage::Ready(ready) = &mut prepared.stage else {
            return Some(prepared);
        };
        ready.posts.retain(|post| {
            let served = relay.delivered.contains(&prepared.delivery.message_id, post.destination);
            if served {
                let _entered = prepared.span.enter();
                tracing::info!(destination = %post.destination, "Skipped a destination already served for this message.");
            }
            !served
        });
        let rule = ready.composed.rule;
        let key = |post: &Post<'r>| (rule.name.as_str(), post.destination, post.mention);
        // Checked before anything is collected: most records post at once.
        let at_once = ready.posts.iter().all(|post| {
            let g = self.group(relay, key(post), rule);
            self.groups[g].1.threshold >= self.batch
        });
        if at_once {
            return Some(prepared);
        }
        let groups: Vec<usize> = ready
            .posts
            .iter()
            .map(|post| self.group(relay, key(post), rule))
            .collect();
        let held = self.held.len();
        for &g in &groups {
            self.groups[g].1.members.push(held);
        }
        self.held.push((place, prepared));
        if let [g] = groups[..] {
            self.trim(g);
        }
        None
    }

    /// The group of `key`, made with its threshold on first use.
    fn group(&mut self, relay: &Relay, key: GroupKey<'r>, rule: &'r Rule) -> usize {
        if let Some(&g) = self.index.get(&key) {
            return g;
        }
        let threshold = relay.digest_threshold(rule, key.1);
        self.index.insert(key, self.groups.len());
        let group = Group {
            rule,
            threshold,
            members: Vec::new(),
            trimmed: 0,
        };
        self.groups.push((key, group));
        self.groups.len() - 1
    }

    /// Once group `g` is bound to be a digest, its members past those it lists keep no message or
    /// row (only records posting to it alone are trimmed).
    fn trim(&mut self, g: usize) {
        let group = &mut self.groups[g].1;
        if group.members.len() <= group.threshold {
            return;
        }
        let from = group.trimmed.max(group.rule.digest.list);
        for &member in group.members.iter().skip(from) {
            if let Stage::Ready(ready) = &mut self.held[member].1.stage
                && ready.posts.len() == 1
            {
                ready.trim();
            }
        }
        group.trimmed = group.members.len();
    }

    /// The sends of the held records: a digest per group past its threshold, else each alone.
    fn sends<'a>(&'a self) -> Vec<Send<'a, 'r>> {
        let mut sends = Vec::new();
        for ((_, destination, mention), group) in &self.groups {
            let members: Vec<Member<'a, 'r>> = group
                .members
                .iter()
                .filter_map(|&m| match &self.held[m].1.stage {
                    Stage::Ready(ready) => Some((&self.held[m].1, ready)),
                    _ => None,
                })
                .collect();
            let send = |members: Vec<Member<'a, 'r>>, digest| Send {
                rule: group.rule,
                destination,
                mention: *mention,
                members: Cow::Owned(members),
                digest,
            };
            if members.len() > group.threshold {
                sends.push(send(members, true));
            } else {
                sends.extend(members.into_iter().map(|member| send(vec![member], false)));
            }
        }
        sends
    }
}

impl Relay {
    /// How many events of `rule` one batch may post to `destination` one by one: past it, they are
    /// one digest. Unbounded with digests off (or off for the rule); else one less than the rule's
    /// `digest.min_events`, or what the pacer can post within `OPSRELAY_DIGEST_WITHIN_MS`.
    fn digest_threshold(&self, rule: &Rule, destination: &str) -> usize {
        let digest = &rule.digest;
        if !self.settings.digests || !digest.enabled {
            return usize::MAX;
        }
        match digest.min_events {
            Some(min) => min - 1,
            // Relay::new made sure that every destination a rule names has a webhook.
            None => self
                .slack
                .slots_within(&self.destinations[destination], self.settings.digest_within)
                .max(1),
        }
    }

    /// Makes every post of `prepared` alone (a record posted at once, or a FIFO group's).
    pub(super) async fn post_alone(&self, prepared: &Prepared<'_>, budget: Budget) {
        let Stage::Ready(ready) = &prepared.stage else {
            return;
        };
        let member = [(prepared, ready)];
        for post in &ready.posts {
            let send = Send {
                rule: ready.composed.rule,
                destination: post.destination,
                mention: post.mention,
                members: Cow::Borrowed(&member),
                digest: false,
            };
            self.post_send(send, budget).await;
        }
    }

    /// Makes the posts of the held records, alone or in digests, up to the concurrency bound.
    pub(super) async fn post_held(&self, gathering: &Gathering<'_>, budget: Budget) {
        futures::stream::iter(gathering.sends())
            .map(|send| self.post_send(send, budget))
            .buffer_unordered(self.settings.concurrency)
            .collect::<()>()
            .await;
    }

    /// Renders and posts one send (retrying transient failures until the deadline), then records
    /// what it did for each of its records.
    async fn post_send(&self, send: Send<'_, '_>, budget: Budget) {
        let deadline = budget.work_deadline();
        let (first, _) = send.members[0];
        let span = if send.digest {
            tracing::info_span!("digest", rule = %send.rule.name, destination = %send.destination, events = send.members.len())
        } else {
            first.span.clone()
        };
        // Boxed: the post's future is large, and each wrapper moved it by value.
        let work = Box::pin(async {
            let message = self.message_of(&send)?;
            let message = match send.mention {
                Some(mention) => Cow::Owned(message.with_mention(mention)),
                None => message,
            };
            self.post_retrying(send.destination, &message, deadline, &first.activity)
                .await
        });
        let posted = isolate(deadline, work).instrument(span.clone()).await;
        let _entered = span.enter();
        match posted {
            Ok(()) => {
                if send.digest {
                    tracing::info!("Posted a digest.");
                }
                self.posted(&send)
            }
            Err(error) => {
                if send.digest {
                    tracing::warn!(code = error.code(), error = %error, "The digest was not posted; each of its events settles with this error.");
                }
                for (record, _) in send.members.iter() {
                    lock(&record.failure).get_or_insert_with(|| error.clone());
                }
            }
        }
    }

    /// The send's message: the record's own, or the digest of its records.
    fn message_of<'s>(
        &self,
        send: &'s Send<'_, '_>,
    ) -> Result<Cow<'s, SlackMessage>, ProcessError> {
        if !send.digest {
            return Ok(Cow::Borrowed(&send.members[0].1.composed.message));
        }
        let events: Vec<(&OpsEvent, &Composed)> = send
            .members
            .iter()
            .map(|(_, ready)| (&ready.event, &ready.composed))
            .collect();
        Ok(Cow::Owned(digest_message(&self.rules, send.rule, &events)?))
    }

    /// One post, retried inside the invocation while its failure is transient; 429s are counted in
    /// `activity`.
    async fn post_retrying(
        &self,
        name: &str,
        message: &SlackMessage,
        deadline: Instant,
        activity: &Mutex<Activity>,
    ) -> Result<(), ProcessError> {
        // Relay::new made sure that every destination a rule names has a webhook.
        let destination = &self.destinations[name];
        retry(&self.settings.retry, deadline, "the Slack post", || async {
            let posted = self.slack.post(destination, message, deadline).await;
            if let Err(SlackError::RateLimited { .. }) = posted {
                lock(activity).rate_limited += 1;
            }
            posted.map_err(|source| ProcessError::Slack {
                destination: name.to_string(),
                source,
            })
        })
        .await
    }

    /// Slack took the send: one post (counted on its first record), each record's age at the post,
    /// and the destination remembered as served for each.
    fn posted(&self, send: &Send<'_, '_>) {
        let now = chrono::Utc::now();
        for (i, (record, ready)) in send.members.iter().enumerate() {
            let age = (now - ready.event.occurred_at).to_std().unwrap_or_default();
            let mut activity = lock(&record.activity);
            activity.posts += u32::from(i == 0);
            activity.digests += u32::from(send.digest);
            activity.ages_at_post.push(age);
            drop(activity);
            self.delivered
                .insert(&record.delivery.message_id, send.destination);
        }
    }
}

/// The digest of `events` of `rule`, each with its row and own message: the first as many as the
/// rule's digest lists, the rest counted.
pub fn digest_message(
    rules: &Rules,
    rule: &Rule,
    events: &[(&OpsEvent, &Composed<'_>)],
) -> Result<SlackMessage, RenderError> {
    let listed = &events[..events.len().min(rule.digest.list)];
    let contexts: Vec<minijinja::Value> = listed
        .iter()
        .map(|(event, composed)| template_context(event, &composed.row.values))
        .collect();
    let entries: Vec<DigestEntry> = listed
        .iter()
        .zip(&contexts)
        .map(|((_, composed), context)| DigestEntry {
            context,
            message: &composed.message,
        })
        .collect();
    let template = rule.digest.template.as_ref();
    rules
        .templates
        .render_digest(&rule.name, template, &entries, events.len())
}
