//! Properties over hostile input: the event parser, the rules parser and the renderer never panic,
//! and no value from the database can make a Slack mention or link in a rendered message.

use aws_lambda_events::sqs::SqsMessage;
use minijinja::context;
use opsrelay::event;
use opsrelay::render::{clip, escape};
use opsrelay::rules::Rules;
use proptest::prelude::*;

fn record(body: &str, event_type: Option<&str>) -> SqsMessage {
    let mut r = SqsMessage::default();
    r.body = Some(body.to_string());
    if let Some(kind) = event_type {
        r.message_attributes.insert(
            "event_type".into(),
            serde_json::from_value(
                serde_json::json!({ "stringValue": kind, "dataType": "String" }),
            )
            .unwrap(),
        );
    }
    r
}

/// Strings made to hurt: Slack's control characters, mentions, links, escapes and any Unicode.
fn hostile() -> impl Strategy<Value = String> {
    let pieces = prop_oneof![
        Just("<!channel>".to_string()),
        Just("<!here>".to_string()),
        Just("<!everyone>".to_string()),
        Just("<@U024BE7LH>".to_string()),
        Just("<!subteam^S1>".to_string()),
        Just("<https://evil.example|click>".to_string()),
        Just("&amp;".to_string()),
        Just("&lt;".to_string()),
        Just("<".to_string()),
        Just(">".to_string()),
        Just("&".to_string()),
        Just("|".to_string()),
        Just("{{ x }}".to_string()),
        any::<String>(),
    ];
    prop::collection::vec(pieces, 0..12).prop_map(|v| v.concat())
}

/// Every `&` starts one of the three escapes, and no `<` or `>` is left.
fn only_escaped(text: &str) -> bool {
    !text.contains('<')
        && !text.contains('>')
        && text.match_indices('&').all(|(i, _)| {
            let rest = &text[i..];
            rest.starts_with("&amp;") || rest.starts_with("&lt;") || rest.starts_with("&gt;")
        })
}

const RULES: &str = r#"
[rules."order.created"]
query = "SELECT customer, note FROM orders WHERE id = $1"
text = "Order {{ event.id }}: {{ customer }}"
[[rules."order.created".blocks]]
type = "header"
text = "{{ customer }}"
[[rules."order.created".blocks]]
type = "section"
text = "*{{ customer }}* wrote {{ note }}"
fields = ["{{ note }}", "{{ row.customer }}"]
[[rules."order.created".blocks]]
type = "context"
elements = ["{{ note }} {{ customer }}"]
"#;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_event_parser_never_panics_on_any_body(body in any::<String>(), kind in proptest::option::of(any::<String>())) {
        let _ = event::parse(&record(&body, kind.as_deref()));
    }

    #[test]
    fn the_event_parser_never_panics_on_json_shaped_bodies(
        kind in prop_oneof![Just(serde_json::json!("order.created")), any::<i64>().prop_map(serde_json::Value::from), any::<String>().prop_map(serde_json::Value::from)],
        id in prop_oneof![any::<i64>().prop_map(serde_json::Value::from), any::<String>().prop_map(serde_json::Value::from), any::<f64>().prop_map(serde_json::Value::from), Just(serde_json::Value::Null)],
        occurred in proptest::option::of(any::<String>()),
    ) {
        let body = serde_json::json!({ "type": kind, "id": id, "occurred_at": occurred }).to_string();
        if let Ok(parsed) = event::parse(&record(&body, None)) {
            prop_assert!(!parsed.id.as_str().is_empty());
            prop_assert!(parsed.id.as_str().chars().all(|c| !c.is_control()));
        }
    }

    #[test]
    fn an_sns_envelope_with_any_message_never_panics(message in any::<String>(), subject in proptest::option::of(any::<String>())) {
        let body = serde_json::json!({
            "Type": "Notification", "MessageId": "m", "TopicArn": "arn:aws:sns:us-east-1:1:t", "Message": message,
            "Subject": subject, "Timestamp": "2026-11-30T08:00:00Z", "SignatureVersion": "1", "Signature": "s",
            "SigningCertURL": "https://sns.us-east-1.amazonaws.com/c.pem", "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/u"
        }).to_string();
        let _ = event::parse(&record(&body, None));
    }

    #[test]
    fn the_rules_parser_never_panics(source in any::<String>()) {
        let _ = Rules::parse("fuzz.toml", &source);
    }

    #[test]
    fn the_rules_parser_never_panics_on_toml_shaped_input(name in any::<String>(), query in any::<String>(), text in any::<String>(), block in any::<String>()) {
        let source = format!(
            "[rules.{name:?}]\nquery = {query:?}\ntext = {text:?}\n[[rules.{name:?}.blocks]]\ntype = \"section\"\ntext = {block:?}\n"
        );
        let _ = Rules::parse("fuzz.toml", &source);
    }

    #[test]
    fn no_database_value_can_mention_or_link(customer in hostile(), note in hostile()) {
        let rules = Rules::parse("props.toml", RULES).unwrap();
        let rule = rules.get("order.created").unwrap();
        let ctx = context! {
            customer => customer.clone(),
            note => note,
            row => context! { customer => customer },
            event => context! { id => "42" },
        };
        let message = rules.templates.render(&rule.template, &ctx).unwrap();
        let mut texts = vec![message.0["text"].as_str().unwrap().to_string()];
        for block in message.0["blocks"].as_array().into_iter().flatten() {
            texts.extend(block["text"]["text"].as_str().map(str::to_string));
            for part in block["fields"].as_array().into_iter().flatten().chain(block["elements"].as_array().into_iter().flatten()) {
                texts.extend(part["text"].as_str().map(str::to_string));
            }
        }
        for text in texts {
            prop_assert!(only_escaped(&text), "a value escaped its escaping: {text:?}");
        }
    }

    #[test]
    fn clipping_escaped_text_keeps_it_escaped_and_within_the_limit(text in hostile(), limit in 1usize..200) {
        let clipped = clip(&escape(&text), limit);
        prop_assert!(clipped.chars().count() <= limit.max(1));
        prop_assert!(only_escaped(&clipped), "{clipped:?}");
    }
}
