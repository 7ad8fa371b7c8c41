//! The posts of records prepared together (a standard queue's batch): each post alone, or, when
//! more events of one rule are bound for one destination (with one mention) than the pacer can post
//! promptly, or than the rule's `digest.min_events`, gathered into one digest message. A digest
//! delivers every one of its events when Slack takes it, or fails every one with the same error
//! (dead-lettered if permanent, retried as today if transient); no event is in two digests of one
//! batch. Destinations a warm process already served for a message are skipped.

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
    members: Vec<Member<'a, 'r>>,
    digest: bool,
}

/// A record with a post in a send, and what it is ready to post.
type Member<'a, 'r> = (&'a Prepared<'r>, &'a Ready<'r>);

/// The posts bound for one destination with one mention, of one rule.
type GroupKey<'r> = (&'r str, &'r str, Option<&'r str>);

impl Relay {
    /// Makes every post of `prepared`, alone or in digests, up to the concurrency bound; what each
    /// record's posts did goes into its `activity` and `failure`.
    pub(super) async fn post_prepared(&self, prepared: &[Prepared<'_>], budget: Budget) {
        let sends = self.gather(prepared);
        futures::stream::iter(sends)
            .map(|send| self.post_send(send, budget))
            .buffer_unordered(self.settings.concurrency)
            .collect::<()>()
            .await;
    }

    /// Groups the posts by rule, destination and mention, in the batch's order, and decides for each
    /// group whether it becomes one digest.
    fn gather<'a, 'r>(&self, prepared: &'a [Prepared<'r>]) -> Vec<Send<'a, 'r>> {
        let mut groups: Vec<(GroupKey<'r>, &'r Rule, Vec<Member<'a, 'r>>)> = Vec::new();
        let mut index: HashMap<GroupKey<'r>, usize> = HashMap::new();
        for record in prepared {
            let Stage::Ready(ready) = &record.stage else {
                continue;
            };
            let rule = ready.composed.rule;
            for post in &ready.posts {
                if self
                    .delivered
                    .contains(&record.delivery.message_id, post.destination)
                {
                    let _entered = record.span.enter();
                    tracing::info!(destination = %post.destination, "Skipped a destination already served for this message.");
                    continue;
                }
                let key = (rule.name.as_str(), post.destination, post.mention);
                let at = *index.entry(key).or_insert_with(|| {
                    groups.push((key, rule, Vec::new()));
                    groups.len() - 1
                });
                groups[at].2.push((record, ready));
            }
        }
        // Posts already planned per destination, which the pacer's prompt slots must also cover.
        let mut planned: HashMap<&str, usize> = HashMap::new();
        let mut sends = Vec::new();
        for ((_, destination, mention), rule, members) in groups {
            let planned = planned.entry(destination).or_default();
            let send = |members, digest| Send {
                rule,
                destination,
                mention,
                members,
                digest,
            };
            if self.digests(rule, destination, members.len(), *planned) {
                *planned += 1;
                sends.push(send(members, true));
            } else {
                *planned += members.len();
                sends.extend(members.into_iter().map(|member| send(vec![member], false)));
            }
        }
        sends
    }

    /// Whether `events` events of `rule` bound for `destination` become one digest, with `planned`
    /// posts to it already taking the pacer's slots.
    fn digests(&self, rule: &Rule, destination: &str, events: usize, planned: usize) -> bool {
        let digest = &rule.digest;
        if !self.settings.digests || !digest.enabled || events < 2 {
            return false;
        }
        match digest.min_events {
            Some(min) => events >= min,
            None => {
                // Relay::new made sure that every destination a rule names has a webhook.
                let slots = self
                    .slack
                    .slots_within(&self.destinations[destination], self.settings.digest_within);
                events > slots.saturating_sub(planned)
            }
        }
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
        let work = async {
            let message = self.message_of(&send)?;
            let message = match send.mention {
                Some(mention) => Cow::Owned(message.with_mention(mention)),
                None => message,
            };
            self.post_retrying(send.destination, &message, deadline, &first.activity)
                .await
        };
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
                for (record, _) in &send.members {
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
