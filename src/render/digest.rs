//! One message for many events of a rule bound for one destination: the rule's own digest
//! templates (seeing `events`, `count`, `not_listed` and `rule`), or the default digest, which
//! lists each event's own text and counts the rest ("…and N more"). Either way within Slack's
//! limits, however many events there are: what does not fit is counted, never cut mid-entry.

use minijinja::Value;
use serde_json::{Value as Json, json};

use super::{MessageTemplate, RenderError, SlackMessage, Templates, clip, escape, limits};

/// One event of a digest: the values its rule's templates saw, and its own message.
pub struct DigestEntry<'a> {
    pub context: &'a Value,
    pub message: &'a SlackMessage,
}

/// Characters of the default digest's blocks kept for its header and its count.
const FRAME_CHARS: usize = 300;
/// The longest line one event takes in the default digest.
const ENTRY_CHARS: usize = 500;

impl Templates {
    /// The digest of `count` events of `rule`, listing `listed` (the first of them, as many as the
    /// rule's digest lists), by `template` or, without one, the default digest.
    pub fn render_digest(
        &self,
        rule: &str,
        template: Option<&MessageTemplate>,
        listed: &[DigestEntry<'_>],
        count: usize,
    ) -> Result<SlackMessage, RenderError> {
        match template {
            Some(template) => {
                let events: Vec<Value> = listed.iter().map(|e| e.context.clone()).collect();
                let context = minijinja::context! {
                    events => events,
                    count => count,
                    not_listed => count - listed.len(),
                    rule => rule,
                };
                self.render(template, &context)
            }
            None => Ok(default_digest(rule, listed, count)),
        }
    }
}

/// A header naming the rule and the count, a line per listed event (its own notification text) as
/// many as fit, and "…and N more" for the rest.
fn default_digest(rule: &str, listed: &[DigestEntry<'_>], count: usize) -> SlackMessage {
    // Each section with its length in characters.
    let mut sections: Vec<(String, usize)> = Vec::new();
    let mut used = 0;
    let mut shown = 0;
    for entry in listed {
        let text = entry.message.0["text"].as_str().unwrap_or_default();
        let line = format!("• {}", clip(text, ENTRY_CHARS));
        let len = line.chars().count() + 1;
        let fits_last = sections
            .last()
            .is_some_and(|(_, chars)| chars + len <= limits::SECTION_CHARS);
        let no_room = !fits_last && sections.len() >= limits::BLOCKS - 2;
        if used + len > limits::ALL_BLOCKS_CHARS - FRAME_CHARS || no_room {
            break;
        }
        match sections.last_mut() {
            Some((section, chars)) if fits_last => {
                section.push('\n');
                section.push_str(&line);
                *chars += len;
            }
            _ => sections.push((line, len - 1)),
        }
        used += len;
        shown += 1;
    }
    let title = clip(&format!("{count} × {rule}"), limits::HEADER_CHARS);
    let mut blocks: Vec<Json> = vec![json!({
        "type": "header",
        "text": {"type": "plain_text", "text": title, "emoji": true},
    })];
    blocks.extend(
        sections
            .into_iter()
            .map(|(text, _)| json!({"type": "section", "text": {"type": "mrkdwn", "text": text}})),
    );
    if count > shown {
        let more = format!("…and {} more", count - shown);
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": more}]}));
    }
    let text = clip(&format!("{count} × {}", escape(rule)), limits::TEXT_CHARS);
    SlackMessage(json!({ "text": text, "blocks": blocks }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default digest of `count` events, listing one with each of `texts`.
    fn digest_of(texts: &[String], count: usize) -> SlackMessage {
        let messages: Vec<SlackMessage> = texts
            .iter()
            .map(|text| SlackMessage(json!({ "text": text })))
            .collect();
        let context = Value::from(());
        let entries: Vec<DigestEntry> = messages
            .iter()
            .map(|message| DigestEntry {
                context: &context,
                message,
            })
            .collect();
        Templates::new()
            .render_digest("order.created", None, &entries, count)
            .unwrap()
    }

    fn total_block_chars(message: &SlackMessage) -> usize {
        let mut total = 0;
        for block in message.0["blocks"].as_array().unwrap() {
            total += block["text"]["text"]
                .as_str()
                .map_or(0, |t| t.chars().count());
            for element in block["elements"].as_array().into_iter().flatten() {
                total += element["text"].as_str().map_or(0, |t| t.chars().count());
            }
        }
        total
    }

    #[test]
    fn the_default_digest_lists_each_events_text_and_counts_the_rest() {
        let texts: Vec<String> = (1..=3).map(|i| format!("Order {i}")).collect();
        let digest = digest_of(&texts, 5);
        assert_eq!(digest.0["text"], "5 × order.created");
        let blocks = digest.0["blocks"].as_array().unwrap();
        assert_eq!(blocks[1]["text"]["text"], "• Order 1\n• Order 2\n• Order 3");
        assert_eq!(blocks[2]["elements"][0]["text"], "…and 2 more");
        insta::assert_json_snapshot!("default_digest", digest.0);
    }

    #[test]
    fn a_digest_of_five_thousand_long_events_stays_within_slacks_limits() {
        let digest = digest_of(&vec!["x".repeat(2_000); 5_000], 5_000);
        let blocks = digest.0["blocks"].as_array().unwrap();
        assert!(blocks.len() <= limits::BLOCKS);
        assert!(total_block_chars(&digest) <= limits::ALL_BLOCKS_CHARS);
        for block in blocks.iter().filter(|b| b["type"] == "section") {
            assert!(
                block["text"]["text"].as_str().unwrap().chars().count() <= limits::SECTION_CHARS
            );
        }
        let more = blocks.last().unwrap()["elements"][0]["text"]
            .as_str()
            .unwrap();
        let listed = blocks
            .iter()
            .filter_map(|b| b["text"]["text"].as_str())
            .map(|t| t.matches('•').count())
            .sum::<usize>();
        assert_eq!(more, format!("…and {} more", 5_000 - listed));
    }
}
