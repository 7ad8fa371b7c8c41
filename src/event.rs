//! Parses one SQS record into an [`OpsEvent`]: an SNS envelope, a raw SNS delivery or a message sent to
//! the queue directly. Every parsing error is made here; past this module a malformed event cannot exist.
//!
//! Accepted bodies (inside the envelope's `Message` when there is one):
//! - `{"type": "order.created", "id": "42", "occurred_at": "2026-11-30T08:00:00Z"}` (`id` may be an
//!   integer; `occurred_at` is optional);
//! - a bare id (`42`, `"42"`, `ord_42`), the type then coming from the message attribute `event_type`
//!   or the SNS `Subject`.

use std::collections::HashMap;

use aws_lambda_events::sns::SnsMessage;
use aws_lambda_events::sqs::SqsMessage;
use base64::Engine as _;
use chrono::{DateTime, Utc};

use crate::sqs::Delivery;
use serde_json::Value;

/// The largest event opsrelay accepts. An event is a type, an id and a time: anything near SNS's
/// 256 KiB cap is not an event but a mistake, and is dead-lettered rather than parsed.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;
/// The longest record id accepted.
pub const MAX_ID_CHARS: usize = 512;
/// The longest event type accepted.
pub const MAX_TYPE_CHARS: usize = 128;
/// The message attribute (SNS or SQS) that may carry the event type.
pub const EVENT_TYPE_ATTRIBUTE: &str = "event_type";

/// An event type such as `order.created`: letters, digits and `. _ - : /`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EventType(String);

impl EventType {
    pub fn parse(raw: &str) -> Result<Self, EventError> {
        let valid = !raw.is_empty()
            && raw.chars().count() <= MAX_TYPE_CHARS
            && raw
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/'));
        if valid {
            Ok(Self(raw.to_string()))
        } else {
            Err(EventError::BadType(
                raw.chars().take(MAX_TYPE_CHARS).collect(),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The id of the record the event is about, as the application sent it (trimmed, non-empty).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RecordId(String);

impl RecordId {
    pub fn parse(raw: &str) -> Result<Self, EventError> {
        let id = raw.trim();
        if id.is_empty() {
            return Err(EventError::EmptyId);
        }
        let chars = id.chars().count();
        if chars > MAX_ID_CHARS {
            return Err(EventError::IdTooLong(chars));
        }
        if id.chars().any(char::is_control) {
            return Err(EventError::IdControlChars);
        }
        Ok(Self(id.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One operational event, parsed and checked.
#[derive(Clone, Debug, PartialEq)]
pub struct OpsEvent {
    pub kind: EventType,
    pub id: RecordId,
    /// When the event happened: `occurred_at` from the body, else the SNS `Timestamp`, else the time
    /// SQS accepted the message.
    pub occurred_at: DateTime<Utc>,
}

/// Why a record is not a valid event. Each text says what was wrong, for the DLQ's failure record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("the SQS record has no body")]
    MissingBody,
    #[error(
        "the event is {bytes} bytes; an opsrelay event (a type, an id and occurred_at) is at most {MAX_EVENT_BYTES} bytes"
    )]
    TooLarge { bytes: usize },
    #[error(
        "the body is an SNS {0} message, not a Notification: confirm the subscription, then ignore it"
    )]
    NotANotification(String),
    #[error("the SNS envelope is malformed: {0}")]
    BadEnvelope(String),
    #[error(
        "the body is neither JSON nor a bare id ({0}): send {{\"type\": \"order.created\", \"id\": \"42\"}} or an id alone"
    )]
    NotJson(String),
    #[error(
        "the body is a JSON {0}; expected an object {{\"type\": ..., \"id\": ...}} or a bare id"
    )]
    NotAnObject(&'static str),
    #[error("the event has no `id`")]
    MissingId,
    #[error("the event's `id` is empty")]
    EmptyId,
    #[error("the event's `id` must be a string or an integer, not a JSON {0}")]
    BadIdType(&'static str),
    #[error("the event's `id` is {0} characters long; at most {MAX_ID_CHARS} are accepted")]
    IdTooLong(usize),
    #[error("the event's `id` contains control characters")]
    IdControlChars,
    #[error(
        "the event has no type: set `type` in the body, the message attribute `event_type`, or the SNS Subject"
    )]
    MissingType,
    #[error("the event's `type` must be a string, not a JSON {0}")]
    BadTypeType(&'static str),
    #[error(
        "the event type {0:?} is not valid: use letters, digits and . _ - : / (at most {MAX_TYPE_CHARS} characters)"
    )]
    BadType(String),
    #[error("the message attribute `{0}` is not valid UTF-8")]
    AttributeNotUtf8(String),
    #[error("the message attribute `{0}` is not valid base64")]
    AttributeNotBase64(String),
    #[error("`occurred_at` must be an RFC 3339 timestamp such as 2026-11-30T08:00:00Z, got {0:?}")]
    BadOccurredAt(String),
}

/// Parses a record's body into an event.
pub fn parse(record: &SqsMessage) -> Result<OpsEvent, EventError> {
    let body = record.body.as_deref().ok_or(EventError::MissingBody)?;
    match sns_envelope(body)? {
        Some(sns) => {
            let attributes = sns
                .message_attributes
                .iter()
                .map(|(name, a)| (name.as_str(), Attribute::Sns(&a.data_type, &a.value)))
                .collect();
            let context = Context {
                attributes,
                subject: sns.subject.as_deref(),
                published_at: Some(sns.timestamp),
            };
            parse_message(&sns.message, &context)
        }
        None => {
            let attributes = record
                .message_attributes
                .iter()
                .map(|(name, a)| {
                    let value = match (&a.string_value, &a.binary_value) {
                        (Some(s), _) => Attribute::Text(s),
                        (None, Some(b)) => Attribute::Bytes(&b.0),
                        (None, None) => Attribute::Text(""),
                    };
                    (name.as_str(), value)
                })
                .collect();
            let context = Context {
                attributes,
                subject: None,
                published_at: Delivery::of(record).sent_at,
            };
            parse_message(body, &context)
        }
    }
}

/// A message attribute as it arrives: SNS envelopes carry `{Type, Value}` (base64 for Binary), SQS
/// records carry a string or decoded bytes.
enum Attribute<'a> {
    Sns(&'a str, &'a str),
    Text(&'a str),
    Bytes(&'a [u8]),
}

impl Attribute<'_> {
    fn text(&self, name: &str) -> Result<String, EventError> {
        let bytes = match self {
            Attribute::Text(s) => return Ok((*s).to_string()),
            Attribute::Sns(kind, value) if !kind.eq_ignore_ascii_case("Binary") => {
                return Ok((*value).to_string());
            }
            Attribute::Sns(_, value) => base64::engine::general_purpose::STANDARD
                .decode(value)
                .map_err(|_| EventError::AttributeNotBase64(name.to_string()))?,
            Attribute::Bytes(b) => b.to_vec(),
        };
        String::from_utf8(bytes).map_err(|_| EventError::AttributeNotUtf8(name.to_string()))
    }
}

struct Context<'a> {
    attributes: HashMap<&'a str, Attribute<'a>>,
    subject: Option<&'a str>,
    published_at: Option<DateTime<Utc>>,
}

/// Returns the SNS envelope when the body is one, `None` when it is not (raw delivery or direct send).
fn sns_envelope(body: &str) -> Result<Option<SnsMessage>, EventError> {
    let trimmed = body.trim_start();
    if !trimmed.starts_with('{') || !trimmed.contains("\"TopicArn\"") {
        return Ok(None);
    }
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(body) else {
        return Ok(None);
    };
    let (Some(Value::String(kind)), true) = (map.get("Type"), map.contains_key("TopicArn")) else {
        return Ok(None);
    };
    if kind != "Notification" {
        return Err(EventError::NotANotification(kind.clone()));
    }
    match map.get("Message") {
        Some(Value::String(_)) => {}
        Some(other) => {
            return Err(EventError::BadEnvelope(format!(
                "`Message` must be a string, not a JSON {}",
                json_kind(other)
            )));
        }
        None => return Err(EventError::BadEnvelope("`Message` is missing".into())),
    }
    serde_json::from_value(Value::Object(map))
        .map(Some)
        .map_err(|e| EventError::BadEnvelope(e.to_string()))
}

fn parse_message(message: &str, context: &Context<'_>) -> Result<OpsEvent, EventError> {
    if message.len() > MAX_EVENT_BYTES {
        return Err(EventError::TooLarge {
            bytes: message.len(),
        });
    }
    let (id, body_type, occurred_at) = match serde_json::from_str::<Value>(message) {
        Ok(Value::Object(map)) => {
            let id = match map.get("id") {
                None | Some(Value::Null) => return Err(EventError::MissingId),
                Some(value) => id_text(value)?,
            };
            let kind = match map.get("type") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(other) => return Err(EventError::BadTypeType(json_kind(other))),
            };
            let occurred_at = match map.get("occurred_at") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(
                    DateTime::parse_from_rfc3339(s)
                        .map_err(|_| EventError::BadOccurredAt(s.chars().take(64).collect()))?
                        .with_timezone(&Utc),
                ),
                Some(other) => return Err(EventError::BadOccurredAt(other.to_string())),
            };
            (id, kind, occurred_at)
        }
        Ok(value @ (Value::String(_) | Value::Number(_))) => (id_text(&value)?, None, None),
        Ok(other) => return Err(EventError::NotAnObject(json_kind(&other))),
        Err(_) if looks_like_bare_id(message) => (message.trim().to_string(), None, None),
        Err(e) => return Err(EventError::NotJson(e.to_string())),
    };
    let kind = match body_type {
        Some(kind) => kind,
        None => match context.attributes.get(EVENT_TYPE_ATTRIBUTE) {
            Some(attribute) => attribute.text(EVENT_TYPE_ATTRIBUTE)?,
            None => context
                .subject
                .map(str::to_string)
                .ok_or(EventError::MissingType)?,
        },
    };
    Ok(OpsEvent {
        kind: EventType::parse(kind.trim())?,
        id: RecordId::parse(&id)?,
        occurred_at: occurred_at
            .or(context.published_at)
            .unwrap_or_else(Utc::now),
    })
}

/// A bare id sent as plain text: one token of letters, digits and `. _ - :`.
fn looks_like_bare_id(message: &str) -> bool {
    let token = message.trim();
    !token.is_empty()
        && token.len() <= MAX_ID_CHARS
        && token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'))
}

fn id_text(value: &Value) -> Result<String, EventError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        other => Err(EventError::BadIdType(json_kind(other))),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use aws_lambda_events::sqs::SqsEvent;
    use serde_json::json;

    use super::*;

    fn record(body: &str) -> SqsMessage {
        let mut r = SqsMessage::default();
        r.body = Some(body.to_string());
        r.attributes
            .insert("SentTimestamp".into(), "1796025600000".into());
        r
    }

    fn with_attribute(mut r: SqsMessage, name: &str, value: &str) -> SqsMessage {
        r.message_attributes.insert(
            name.into(),
            serde_json::from_value(json!({ "stringValue": value, "dataType": "String" })).unwrap(),
        );
        r
    }

    fn envelope(message: &str, extra: serde_json::Value) -> String {
        let mut env = json!({
            "Type": "Notification", "MessageId": "m", "TopicArn": "arn:aws:sns:us-east-1:1:t",
            "Message": message, "Timestamp": "2026-11-30T08:00:00.000Z", "SignatureVersion": "1",
            "Signature": "s", "SigningCertURL": "https://sns.us-east-1.amazonaws.com/c.pem",
            "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/u"
        });
        env.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        env.to_string()
    }

    #[test]
    fn parses_a_direct_event_with_its_time() {
        let event = parse(&record(
            r#"{"type":"order.created","id":"42","occurred_at":"2026-11-30T09:00:00+01:00"}"#,
        ))
        .unwrap();
        assert_eq!(event.kind.as_str(), "order.created");
        assert_eq!(event.id.as_str(), "42");
        assert_eq!(event.occurred_at.to_rfc3339(), "2026-11-30T08:00:00+00:00");
    }

    #[test]
    fn takes_an_integer_id() {
        let event = parse(&record(r#"{"type":"order.created","id":42}"#)).unwrap();
        assert_eq!(event.id.as_str(), "42");
    }

    #[test]
    fn without_occurred_at_the_time_is_when_sqs_accepted_it() {
        let event = parse(&record(r#"{"type":"order.created","id":"42"}"#)).unwrap();
        assert_eq!(event.occurred_at.timestamp_millis(), 1_796_025_600_000);
    }

    #[test]
    fn a_bare_id_takes_its_type_from_the_event_type_attribute() {
        let event = parse(&with_attribute(
            record("42"),
            "event_type",
            "user.signed_up",
        ))
        .unwrap();
        assert_eq!(event.kind.as_str(), "user.signed_up");
        assert_eq!(event.id.as_str(), "42");
        let event = parse(&with_attribute(
            record("ord_42"),
            "event_type",
            "order.created",
        ))
        .unwrap();
        assert_eq!(event.id.as_str(), "ord_42");
    }

    #[test]
    fn the_body_type_wins_over_the_attribute() {
        let r = with_attribute(record(r#"{"type":"a.b","id":"1"}"#), "event_type", "c.d");
        assert_eq!(parse(&r).unwrap().kind.as_str(), "a.b");
    }

    #[test]
    fn an_sns_envelope_gives_its_message_subject_and_timestamp() {
        let event = parse(&record(&envelope(
            "42",
            json!({ "Subject": "payment.failed" }),
        )))
        .unwrap();
        assert_eq!(event.kind.as_str(), "payment.failed");
        assert_eq!(event.id.as_str(), "42");
        assert_eq!(event.occurred_at.to_rfc3339(), "2026-11-30T08:00:00+00:00");
    }

    #[test]
    fn an_sns_envelope_attribute_gives_the_type_and_beats_the_subject() {
        let body = envelope(
            "\"42\"",
            json!({ "Subject": "ignored", "MessageAttributes": { "event_type": { "Type": "String", "Value": "order.created" } } }),
        );
        assert_eq!(
            parse(&record(&body)).unwrap().kind.as_str(),
            "order.created"
        );
    }

    #[test]
    fn a_binary_sns_attribute_is_decoded() {
        let body = envelope(
            "42",
            json!({ "MessageAttributes": { "event_type": { "Type": "Binary", "Value": "b3JkZXIuY3JlYXRlZA==" } } }),
        );
        assert_eq!(
            parse(&record(&body)).unwrap().kind.as_str(),
            "order.created"
        );
    }

    #[test]
    fn a_json_object_with_a_topic_arn_but_no_sns_type_is_an_event() {
        let event = parse(&record(r#"{"type":"a.b","id":"1","TopicArn":"x"}"#)).unwrap();
        assert_eq!(event.kind.as_str(), "a.b");
    }

    #[test]
    fn the_sqs_fixture_of_aws_lambda_events_parses_and_its_body_is_refused_with_a_reason() {
        let event: SqsEvent = serde_json::from_str(include_str!(
            "../tests/fixtures/aws_lambda_events/example-sqs-event.json"
        ))
        .unwrap();
        let record = &event.records[0];
        let delivery = Delivery::of(record);
        assert_eq!(delivery.message_id, "MessageID_1");
        assert_eq!(delivery.receive_count, 2);
        assert_eq!(
            delivery.first_received_at.unwrap().timestamp_millis(),
            1_520_621_634_884
        );
        assert!(matches!(parse(record), Err(EventError::NotJson(_))));
    }

    #[test]
    fn the_sns_fixture_of_aws_lambda_events_parses_as_an_envelope() {
        let event: serde_json::Value = serde_json::from_str(include_str!(
            "../tests/fixtures/aws_lambda_events/example-sns-event.json"
        ))
        .unwrap();
        let envelope = event["Records"][0]["Sns"].to_string();
        // Its message ("Hello\r\nworld!") is not an event: refused with a reason, after the envelope parsed.
        assert!(matches!(
            parse(&record(&envelope)),
            Err(EventError::NotJson(_))
        ));
        let with_id = envelope.replace("Hello\\r\\nworld!", "42");
        let parsed = parse(&record(&with_id)).unwrap();
        assert_eq!(parsed.kind.as_str(), "Greetings");
    }
}
