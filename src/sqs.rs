//! SQS facts that every part shares, each defined once: the attribute limit, the group of a message
//! without one, whether a queue is FIFO, what SQS says about a record's delivery, one read of a
//! queue's attributes, and the conversion between the SDK's messages and Lambda's records (so that
//! the Lambda, the worker and the operator tool see one record type).

use std::collections::HashMap;

use aws_lambda_events::encodings::Base64Data;
use aws_lambda_events::sqs::{SqsMessage, SqsMessageAttribute};
use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::SdkError;
use aws_sdk_sqs::operation::get_queue_attributes::GetQueueAttributesError;
use aws_sdk_sqs::primitives::Blob;
use aws_sdk_sqs::types::{Message, MessageAttributeValue, QueueAttributeName};
use chrono::{DateTime, TimeZone, Utc};

/// SQS allows this many message attributes: a dead letter needs one for `opsrelay-failure`, a redrive
/// one for its counter.
pub const MAX_ATTRIBUTES: usize = 10;
/// The FIFO group of a message whose group is unknown: a record without one, dead-lettered to a FIFO
/// DLQ, and a line of the local dead-letter file sent to a FIFO queue by `opsrelay dlq import`.
pub const DEFAULT_GROUP: &str = "opsrelay";

/// Whether a queue keeps order. Decided once per batch (or per queue opened), from the queue's URL or
/// ARN: a FIFO queue's name ends with `.fifo`, and both its URL and its ARN end with its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueKind {
    Standard,
    Fifo,
}

impl QueueKind {
    /// The kind of the queue at `url_or_arn`.
    pub fn of(url_or_arn: &str) -> Self {
        if url_or_arn.ends_with(".fifo") {
            QueueKind::Fifo
        } else {
            QueueKind::Standard
        }
    }

    /// The kind of the queue a Lambda batch came from (its records' event source ARN; every record
    /// of one batch comes from one queue).
    pub fn of_batch(records: &[SqsMessage]) -> Self {
        records
            .iter()
            .find_map(|r| r.event_source_arn.as_deref())
            .map_or(QueueKind::Standard, QueueKind::of)
    }

    pub fn is_fifo(self) -> bool {
        self == QueueKind::Fifo
    }
}

/// What SQS says about the delivery of a record. Read leniently, so it is known even when the body is
/// malformed: the failure record and the retry decision need it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Delivery {
    /// The SQS message id; empty only if the record had none (never reported as an item identifier).
    pub message_id: String,
    /// `ApproximateReceiveCount`: 1 on the first delivery.
    pub receive_count: u32,
    pub first_received_at: Option<DateTime<Utc>>,
    pub sent_at: Option<DateTime<Utc>>,
    /// FIFO queues only: the ordering group.
    pub group_id: Option<String>,
}

impl Delivery {
    pub fn of(record: &SqsMessage) -> Self {
        let attr = |name: &str| record.attributes.get(name).map(String::as_str);
        let millis = |name: &str| {
            attr(name)
                .and_then(|v| v.parse::<i64>().ok())
                .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
        };
        Self {
            message_id: record.message_id.clone().unwrap_or_default(),
            receive_count: attr("ApproximateReceiveCount")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1),
            first_received_at: millis("ApproximateFirstReceiveTimestamp"),
            sent_at: millis("SentTimestamp"),
            group_id: attr("MessageGroupId").map(str::to_string),
        }
    }
}

/// Reads `names` of the queue at `url` (`sqs:GetQueueAttributes`); an attribute SQS did not return
/// is absent from the map.
pub async fn queue_attributes(
    client: &aws_sdk_sqs::Client,
    url: &str,
    names: &[QueueAttributeName],
) -> Result<HashMap<QueueAttributeName, String>, SdkError<GetQueueAttributesError, HttpResponse>> {
    let output = client
        .get_queue_attributes()
        .queue_url(url)
        .set_attribute_names(Some(names.to_vec()))
        .send()
        .await?;
    Ok(output.attributes().cloned().unwrap_or_default())
}

/// A message attribute of `data_type` (`String`, `Number`) holding `value`.
pub fn text_attribute(data_type: &str, value: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type(data_type)
        .string_value(value)
        .build()
        .expect("data_type is set")
}

/// The SDK form of an attribute from a Lambda record; `None` for one without a type.
pub fn sdk_attribute(attribute: &SqsMessageAttribute) -> Option<MessageAttributeValue> {
    let data_type = attribute.data_type.as_deref()?;
    let mut value = MessageAttributeValue::builder().data_type(data_type);
    if let Some(s) = &attribute.string_value {
        value = value.string_value(s);
    }
    if let Some(b) = &attribute.binary_value {
        value = value.binary_value(Blob::new(b.0.clone()));
    }
    value.build().ok()
}

/// The Lambda form of an SDK message, so that every path shares one pipeline. `queue_arn`, when
/// known, becomes the record's event source, as Lambda sets it.
pub fn lambda_record(message: &Message, queue_arn: Option<&str>) -> SqsMessage {
    let mut record = SqsMessage::default();
    record.message_id = message.message_id().map(str::to_string);
    record.receipt_handle = message.receipt_handle().map(str::to_string);
    record.body = message.body().map(str::to_string);
    record.md5_of_body = message.md5_of_body().map(str::to_string);
    record.event_source = Some("aws:sqs".into());
    record.event_source_arn = queue_arn.map(str::to_string);
    if let Some(attributes) = message.attributes() {
        record.attributes = attributes
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.clone()))
            .collect();
    }
    if let Some(attributes) = message.message_attributes() {
        record.message_attributes = attributes
            .iter()
            .map(|(name, value)| (name.clone(), lambda_attribute(value)))
            .collect();
    }
    record
}

fn lambda_attribute(value: &MessageAttributeValue) -> SqsMessageAttribute {
    let mut attribute = SqsMessageAttribute::default();
    attribute.data_type = Some(value.data_type().to_string());
    attribute.string_value = value.string_value().map(str::to_string);
    attribute.binary_value = value.binary_value().map(|b| {
        let mut data = Base64Data::default();
        data.0 = b.as_ref().to_vec();
        data
    });
    attribute
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_is_fifo_by_its_url_or_arn() {
        for fifo in [
            "https://sqs.us-east-1.amazonaws.com/1/orders.fifo",
            "arn:aws:sqs:us-east-1:1:orders.fifo",
        ] {
            assert_eq!(QueueKind::of(fifo), QueueKind::Fifo, "{fifo}");
        }
        assert_eq!(
            QueueKind::of("https://sqs.us-east-1.amazonaws.com/1/fifo-orders"),
            QueueKind::Standard
        );
    }

    #[test]
    fn a_batch_is_fifo_when_its_records_come_from_a_fifo_queue() {
        let mut record = SqsMessage::default();
        assert_eq!(QueueKind::of_batch(&[record.clone()]), QueueKind::Standard);
        record.event_source_arn = Some("arn:aws:sqs:us-east-1:1:q.fifo".into());
        assert_eq!(QueueKind::of_batch(&[record]), QueueKind::Fifo);
    }

    #[test]
    fn a_message_from_the_sdk_becomes_the_record_lambda_would_give() {
        let message = Message::builder()
            .message_id("m-1")
            .body("42")
            .message_attributes("event_type", text_attribute("String", "order.created"))
            .build();
        let record = lambda_record(&message, Some("arn:aws:sqs:us-east-1:1:q.fifo"));
        assert_eq!(record.message_id.as_deref(), Some("m-1"));
        assert_eq!(
            QueueKind::of_batch(std::slice::from_ref(&record)),
            QueueKind::Fifo
        );
        let attribute = &record.message_attributes["event_type"];
        assert_eq!(attribute.string_value.as_deref(), Some("order.created"));
        assert_eq!(
            sdk_attribute(attribute),
            Some(text_attribute("String", "order.created"))
        );
    }
}
