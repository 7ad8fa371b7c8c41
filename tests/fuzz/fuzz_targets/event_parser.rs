//! Fuzzes the SQS record / SNS envelope parser: any body and any `event_type` attribute, raw or
//! inside an SNS envelope, must parse or be refused with a reason, never panic.
#![no_main]

use aws_lambda_events::sqs::SqsMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (body, kind) = text.split_once('\u{0}').unwrap_or((&text, ""));
    let mut record = SqsMessage::default();
    record.body = Some(body.to_string());
    record.message_attributes.insert(
        "event_type".into(),
        serde_json::from_value(serde_json::json!({ "stringValue": kind, "dataType": "String" })).unwrap(),
    );
    let _ = opsrelay::event::parse(&record);
    let envelope = serde_json::json!({
        "Type": "Notification", "MessageId": "m", "TopicArn": "arn:aws:sns:us-east-1:1:t", "Message": body,
        "Subject": kind, "Timestamp": "2026-11-30T08:00:00Z", "SignatureVersion": "1", "Signature": "s",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/c.pem", "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/u"
    });
    record.body = Some(envelope.to_string());
    let _ = opsrelay::event::parse(&record);
});
