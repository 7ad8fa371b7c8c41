//! What the `dlq` commands read from a dead letter ([`Letter`], defined in [`crate::deadletter`]): its
//! event type, age and redrive count, and what a redrive sends for it: the failure record removed,
//! the redrive counter added.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use aws_lambda_events::sqs::{SqsMessage, SqsMessageAttribute};
use aws_sdk_sqs::types::MessageAttributeValue;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::deadletter::Letter;
use crate::sqs::{MAX_ATTRIBUTES, sdk_attribute, text_attribute};

/// The attribute that counts how often a message was sent back by `opsrelay dlq`.
pub const REDRIVE_ATTRIBUTE: &str = "opsrelay-redrive-count";
/// SQS takes deduplication ids of at most this many characters.
const MAX_DEDUPLICATION_ID: usize = 128;

/// What a redrive sends for one letter.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub body: String,
    pub attributes: HashMap<String, MessageAttributeValue>,
    /// FIFO destinations only: the letter's group and a deduplication id unique to this redrive.
    pub fifo: Option<(String, String)>,
    /// `false` when SQS has no room for the counter: the message already has 10 attributes, or
    /// would be too large with it.
    pub counted: bool,
}

impl Outgoing {
    /// Its size as SQS counts it: the body, and each attribute's name, type and value.
    fn bytes(&self) -> usize {
        let attributes = self.attributes.iter().map(|(name, value)| {
            let data = value.string_value().map_or(0, str::len)
                + value.binary_value().map_or(0, |b| b.as_ref().len());
            name.len() + value.data_type().len() + data
        });
        self.body.len() + attributes.sum::<usize>()
    }

    /// Without the redrive counter when only the counter would make it larger than `max_bytes`
    /// (a message that SQS moved itself may be as large as the queue takes): sent as it was, rather
    /// than refused on every run.
    pub fn fit(mut self, max_bytes: Option<usize>) -> Self {
        if self.counted && max_bytes.is_some_and(|max| self.bytes() > max) {
            self.attributes.remove(REDRIVE_ATTRIBUTE);
            self.counted = false;
        }
        self
    }
}

impl Letter {
    /// The event type: from the failure record, else read from the message as the pipeline would.
    pub fn event_type(&self) -> Option<String> {
        if let Some(kind) = self.failure.as_ref().and_then(|f| f.event_type.clone()) {
            return Some(kind);
        }
        let mut record = SqsMessage::default();
        record.body = Some(self.body.clone());
        record.message_attributes = self.message_attributes.clone().into_iter().collect();
        crate::event::parse(&record)
            .ok()
            .map(|event| event.kind.as_str().to_string())
    }

    /// Time since it failed (since SQS accepted it, for a message without a failure record).
    pub fn age(&self, now: DateTime<Utc>) -> Option<Duration> {
        let since = self
            .failure
            .as_ref()
            .map(|f| f.failed_at)
            .or(self.sent_at)?;
        (now - since).to_std().ok().or(Some(Duration::ZERO))
    }

    /// How often `opsrelay dlq` already sent it back (the counter may have been kept inside the
    /// failure record when the message had no room for it).
    pub fn redrives(&self) -> u32 {
        self.original_attributes()
            .get(REDRIVE_ATTRIBUTE)
            .and_then(|a| a.string_value.as_deref())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// The message's attributes as it was sent, with the ones kept inside the failure record (when
    /// there was no room beside it) put back: from a record this version cannot read too, as long
    /// as it is JSON with `dropped_attributes`.
    fn original_attributes(&self) -> BTreeMap<String, SqsMessageAttribute> {
        let mut attributes = self.message_attributes.clone();
        let unread = self.unread_failure.as_deref().and_then(|json| {
            let mut record = serde_json::from_str::<serde_json::Value>(json).ok()?;
            serde_json::from_value(record.get_mut("dropped_attributes")?.take()).ok()
        });
        let dropped = self
            .failure
            .as_ref()
            .and_then(|f| f.dropped_attributes.clone())
            .or(unread);
        for (name, value) in dropped.into_iter().flatten() {
            if let Ok(value) = serde_json::from_value(value) {
                attributes.entry(name).or_insert(value);
            }
        }
        attributes
    }

    /// What a redrive sends: the body unchanged, the original attributes, the counter one higher
    /// (when SQS's 10 attributes leave room), and for a FIFO destination the group and a
    /// deduplication id that is the same on a rerun but new for the next redrive. `line`: its line
    /// number, when it was read from a file.
    pub fn outgoing(&self, fifo: bool, line: Option<&str>) -> Outgoing {
        let redrives = self.redrives() + 1;
        let mut attributes: HashMap<String, MessageAttributeValue> = self
            .original_attributes()
            .iter()
            .filter(|(name, _)| name.as_str() != REDRIVE_ATTRIBUTE)
            .filter_map(|(name, value)| Some((name.clone(), sdk_attribute(value)?)))
            .collect();
        let counted = attributes.len() < MAX_ATTRIBUTES;
        if counted {
            let counter = text_attribute("Number", &redrives.to_string());
            attributes.insert(REDRIVE_ATTRIBUTE.to_string(), counter);
        }
        let fifo = fifo.then(|| {
            let dedup = self.deduplication_id(redrives, line);
            (self.group().to_string(), dedup)
        });
        Outgoing {
            body: self.body.clone(),
            attributes,
            fifo,
            counted,
        }
    }

    /// The deduplication id of its `redrives`th redrive. Read from a queue: the message id and the
    /// count, when the id is one SQS takes (ASCII letters, digits and punctuation) with room for the
    /// count. Read from a file (`line`: its line number), or with an id SQS would not take: a SHA-256
    /// of the id and the body, the line number for a file, and the count. A file's ids are not unique
    /// (the local run's dead-letter file repeats the ids of its event files, and may have none), and
    /// an id is never cut or filtered: either would give two messages one id and have SQS drop all
    /// but the first.
    fn deduplication_id(&self, redrives: u32, line: Option<&str>) -> String {
        let id = format!("{}-{redrives}", self.message_id);
        if line.is_none()
            && !self.message_id.is_empty()
            && self.message_id.chars().all(|c| c.is_ascii_graphic())
            && id.len() <= MAX_DEDUPLICATION_ID
        {
            return id;
        }
        let digest = Sha256::new()
            .chain_update(&self.message_id)
            .chain_update([0u8])
            .chain_update(&self.body)
            .finalize();
        let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
        match line {
            Some(line) => format!("{hex}-{line}-{redrives}"),
            None => format!("{hex}-{redrives}"),
        }
    }
}

/// One line of `peek`, `redrive --dry-run` and the like.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub message_id: String,
    pub event_type: Option<String>,
    pub class: String,
    pub code: String,
    pub reason: String,
    pub age_seconds: Option<u64>,
    pub receive_count: Option<u32>,
    pub redrives: u32,
}

impl Summary {
    pub fn of(letter: &Letter, now: DateTime<Utc>) -> Self {
        Summary {
            message_id: letter.message_id.clone(),
            event_type: letter.event_type(),
            class: letter.class().to_string(),
            code: letter.code().to_string(),
            reason: letter.reason().to_string(),
            age_seconds: letter.age(now).map(|a| a.as_secs()),
            receive_count: letter
                .failure
                .as_ref()
                .map(|f| f.receive_count)
                .or(letter.receive_count),
            redrives: letter.redrives(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deadletter::FAILURE_ATTRIBUTE;
    use aws_sdk_sqs::types::Message;
    use serde_json::json;

    fn letter(attributes: usize, dropped: usize) -> Letter {
        let attribute = |i: usize| {
            (
                format!("a{i:02}"),
                json!({"dataType": "String", "stringValue": i.to_string()}),
            )
        };
        let message_attributes: serde_json::Map<String, serde_json::Value> =
            (0..attributes).map(attribute).collect();
        let dropped: serde_json::Map<String, serde_json::Value> =
            (attributes..attributes + dropped).map(attribute).collect();
        serde_json::from_value(json!({
            "message_id": "m-1",
            "body": "{\"type\":\"order.created\",\"id\":\"1\"}",
            "message_attributes": message_attributes,
            "failure": {
                "class": "permanent", "code": "slack_rejected", "reason": "no_service",
                "event_type": "order.created", "source_message_id": "m-0", "receive_count": 1,
                "first_failed_at": "2026-01-01T00:00:00Z", "failed_at": "2026-01-01T00:00:00Z",
                "dropped_attributes": if dropped.is_empty() { None } else { Some(dropped) }
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_redrive_adds_a_counter_beside_the_original_attributes() {
        let outgoing = letter(2, 0).outgoing(false, None);
        assert_eq!(outgoing.attributes.len(), 3);
        assert_eq!(
            outgoing.attributes[REDRIVE_ATTRIBUTE].string_value(),
            Some("1")
        );
        assert!(!outgoing.attributes.contains_key(FAILURE_ATTRIBUTE));
    }

    #[test]
    fn attributes_kept_inside_the_failure_record_are_put_back() {
        let outgoing = letter(9, 1).outgoing(false, None);
        assert!(outgoing.attributes.contains_key("a09"));
        assert!(
            !outgoing.counted,
            "ten attributes leave no room for the counter"
        );
        assert_eq!(outgoing.attributes.len(), 10);
    }

    #[test]
    fn a_message_that_only_the_counter_would_make_too_large_goes_back_without_it() {
        let outgoing = letter(2, 0).outgoing(false, None);
        let with_counter = outgoing.bytes();
        let without = outgoing.clone().fit(Some(with_counter - 1));
        assert!(!without.counted);
        assert!(!without.attributes.contains_key(REDRIVE_ATTRIBUTE));
        assert_eq!(without.attributes.len(), 2, "its own attributes stay");
        let fits = outgoing.fit(Some(with_counter));
        assert!(fits.counted && fits.attributes.contains_key(REDRIVE_ATTRIBUTE));
    }

    #[test]
    fn a_counter_kept_inside_the_failure_record_still_counts() {
        let mut letter = letter(9, 0);
        let counter = json!({"dataType": "Number", "stringValue": "2"});
        letter.failure.as_mut().unwrap().dropped_attributes = Some(serde_json::Map::from_iter([(
            REDRIVE_ATTRIBUTE.to_string(),
            counter,
        )]));
        assert_eq!(letter.redrives(), 2);
        assert_eq!(
            letter.outgoing(false, None).attributes[REDRIVE_ATTRIBUTE].string_value(),
            Some("3")
        );
    }

    #[test]
    fn a_failure_attribute_that_is_not_a_failure_record_is_not_sent_back() {
        let attribute = |value: &str| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .unwrap()
        };
        let message = Message::builder()
            .message_id("m-1")
            .body("{}")
            .message_attributes(
                FAILURE_ATTRIBUTE,
                attribute("{\"written by\": \"another tool\"}"),
            )
            .message_attributes("trace", attribute("t-1"))
            .build();
        let letter = Letter::from_sqs(&message);
        assert_eq!(letter.failure, None);
        let sent = letter.outgoing(false, None).attributes;
        assert!(!sent.contains_key(FAILURE_ATTRIBUTE), "{sent:?}");
        assert!(sent.contains_key("trace"), "its own attributes go back");
    }

    #[test]
    fn a_failure_record_this_version_cannot_read_is_exported_as_it_was_and_its_attributes_go_back()
    {
        let newer = json!({
            "class": "a class of a later version", "code": "x", "reason": "y",
            "dropped_attributes": {"a09": {"dataType": "String", "stringValue": "9"}}
        })
        .to_string();
        let failure = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(&newer)
            .build()
            .unwrap();
        let message = Message::builder()
            .message_id("m-1")
            .body("{}")
            .message_attributes(FAILURE_ATTRIBUTE, failure)
            .build();
        let letter = Letter::from_sqs(&message);
        assert_eq!(letter.failure, None);
        let line: serde_json::Value = serde_json::to_value(&letter).unwrap();
        assert_eq!(line["unread_failure"], newer.as_str(), "{line}");
        let read_back: Letter = serde_json::from_value(line).unwrap();
        assert_eq!(read_back.unread_failure.as_deref(), Some(newer.as_str()));
        let sent = letter.outgoing(false, None).attributes;
        assert_eq!(sent["a09"].string_value(), Some("9"));
        assert!(!sent.contains_key(FAILURE_ATTRIBUTE));
    }

    /// The deduplication id of `letter`'s next redrive to a FIFO queue, read from `line` of a file.
    fn deduplication_id(letter: &Letter, line: &str) -> String {
        letter.outgoing(true, Some(line)).fifo.unwrap().1
    }

    #[test]
    fn lines_without_a_message_id_get_deduplication_ids_of_their_own() {
        let without_id = |body: &str| Letter {
            message_id: String::new(),
            body: body.into(),
            ..letter(0, 0)
        };
        let (first, second) = (without_id("{\"id\":\"1\"}"), without_id("{\"id\":\"2\"}"));
        let ids = [
            deduplication_id(&first, "1"),
            deduplication_id(&second, "2"),
            deduplication_id(&first, "3"),
        ];
        assert_ne!(ids[0], ids[1], "different bodies");
        assert_ne!(ids[0], ids[2], "the same body on another line");
        assert_eq!(ids[0], deduplication_id(&first, "1"), "the same on a rerun");
    }

    #[test]
    fn lines_that_repeat_a_message_id_get_deduplication_ids_of_their_own() {
        let local = |body: &str| Letter {
            message_id: "local-3".into(),
            body: body.into(),
            ..letter(0, 0)
        };
        let ids = [
            deduplication_id(&local("{\"id\":\"1\"}"), "1"),
            deduplication_id(&local("{\"id\":\"2\"}"), "2"),
            deduplication_id(&local("{\"id\":\"1\"}"), "3"),
        ];
        assert_ne!(ids[0], ids[1], "different bodies");
        assert_ne!(ids[0], ids[2], "the same body on another line");
        assert_eq!(ids[0], deduplication_id(&local("{\"id\":\"1\"}"), "1"));
    }

    #[test]
    fn message_ids_too_long_for_a_deduplication_id_do_not_collide_when_cut() {
        let with_id = |id: String| Letter {
            message_id: id,
            ..letter(0, 0)
        };
        let long = "m".repeat(200);
        let ids = [
            deduplication_id(&with_id(long.clone() + "1"), "1"),
            deduplication_id(&with_id(long + "2"), "1"),
        ];
        assert_ne!(ids[0], ids[1]);
        for id in ids {
            assert!(
                id.len() <= 128 && id.chars().all(|c| c.is_ascii_graphic()),
                "{id}"
            );
        }
    }

    #[test]
    fn a_fifo_redrive_keeps_the_group_and_deduplicates_per_redrive() {
        let mut letter = letter(0, 0);
        letter.message_group_id = Some("g-7".into());
        let (group, dedup) = letter.outgoing(true, None).fifo.unwrap();
        assert_eq!((group.as_str(), dedup.as_str()), ("g-7", "m-1-1"));
    }
}
