//! Turns a rule's templates and one record into a Slack Block Kit message. Pure: no I/O.
//!
//! Templates are Jinja (minijinja). Every value printed by `{{ … }}` is escaped for Slack (`&`, `<`,
//! `>` become `&amp;`, `&lt;`, `&gt;`), so no value from the database can make a mention (`<!channel>`)
//! or a link; the template's own text is not escaped, so a template may write `<!here>` or
//! `<https://example.com/orders/{{ id }}|open>`. A value marked `|safe` is printed as it is. NULL prints
//! as nothing, booleans as `true` and `false`. Text is kept inside Slack's limits by cutting it with an ellipsis, never in the middle
//! of an escape or a `<…>` mention or link.

mod digest;

pub use digest::DigestEntry;

use minijinja::{Environment, UndefinedBehavior, Value};
use serde_json::{Value as Json, json};

/// Slack's limits (Block Kit reference; see FIELD-NOTES).
pub mod limits {
    pub const BLOCKS: usize = 50;
    pub const HEADER_CHARS: usize = 150;
    pub const SECTION_CHARS: usize = 3_000;
    pub const FIELDS: usize = 10;
    pub const FIELD_CHARS: usize = 2_000;
    pub const CONTEXT_ELEMENTS: usize = 10;
    pub const CONTEXT_CHARS: usize = 2_000;
    /// The notification text (`text`), shown in notifications and where blocks cannot be.
    pub const TEXT_CHARS: usize = 3_000;
    /// All block text together: Slack refused messages at about 13,200 (`msg_blocks_too_long`).
    pub const ALL_BLOCKS_CHARS: usize = 12_000;
}

const ELLIPSIS: char = '…';

/// Why a message could not be rendered. Permanent: the same record renders the same way.
#[derive(Clone, Debug, thiserror::Error)]
#[error(
    "template {template} failed: {message}; fix the template in the rules file and run `opsrelay render`"
)]
pub struct RenderError {
    pub template: String,
    pub message: String,
}

/// One rule's templates, by their names in [`Templates`].
#[derive(Clone, Debug)]
pub struct MessageTemplate {
    pub text: String,
    pub blocks: Vec<BlockTemplate>,
}

impl MessageTemplate {
    /// The names of its templates: the text's, then each block's.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.text).chain(self.blocks.iter().flat_map(|block| match block {
            BlockTemplate::Header(name) => vec![name],
            BlockTemplate::Section { text, fields } => text.iter().chain(fields).collect(),
            BlockTemplate::Context(names) => names.iter().collect(),
            BlockTemplate::Divider => vec![],
        }))
    }
}

/// One block of a message, each text a template name.
#[derive(Clone, Debug)]
pub enum BlockTemplate {
    Header(String),
    Section {
        text: Option<String>,
        fields: Vec<String>,
    },
    Context(Vec<String>),
    Divider,
}

/// A rendered message, ready to post.
#[derive(Clone, Debug, PartialEq)]
pub struct SlackMessage(pub Json);

impl SlackMessage {
    /// The message with `mention` (a route's, checked when the rules were read) in front of its
    /// notification text and of its first section's text, or as a section of its own before its
    /// blocks when none has text: Slack notifies on a mention in the blocks.
    pub fn with_mention(&self, mention: &str) -> SlackMessage {
        let mut message = self.0.clone();
        let prefixed = |text: &Json| format!("{mention} {}", text.as_str().unwrap_or_default());
        message["text"] = Json::String(clip(&prefixed(&message["text"]), limits::TEXT_CHARS));
        if let Some(blocks) = message.get_mut("blocks").and_then(Json::as_array_mut) {
            let section = blocks
                .iter_mut()
                .find(|b| b["type"] == "section" && b["text"]["text"].is_string());
            match section {
                Some(block) => {
                    let text = clip(&prefixed(&block["text"]["text"]), limits::SECTION_CHARS);
                    block["text"]["text"] = Json::String(text);
                }
                None => {
                    let own =
                        json!({"type": "section", "text": {"type": "mrkdwn", "text": mention}});
                    blocks.insert(0, own);
                    blocks.truncate(limits::BLOCKS);
                }
            }
        }
        SlackMessage(message)
    }
}

/// Slack's Block Kit Builder, which shows the blocks given in the URL's fragment.
const BLOCK_KIT_BUILDER: &str = "https://app.slack.com/block-kit-builder/#";

impl SlackMessage {
    /// A Block Kit Builder link that shows this message's blocks (its text as one section when it
    /// has none), so that an operator sees it before it is ever posted. Nothing is sent anywhere:
    /// the blocks travel in the URL's fragment, which a browser keeps to itself.
    pub fn block_kit_builder_url(&self) -> String {
        let blocks = match self.0.get("blocks") {
            Some(blocks) => blocks.clone(),
            None => json!([{
                "type": "section",
                "text": {"type": "mrkdwn", "text": self.0.get("text").cloned().unwrap_or_default()},
            }]),
        };
        let payload = json!({ "blocks": blocks }).to_string();
        BLOCK_KIT_BUILDER.to_string() + &uri_component(&payload)
    }
}

/// `text` percent-encoded as JavaScript's `encodeURIComponent` does, which the builder decodes.
fn uri_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// All compiled templates, made once at start-up.
pub struct Templates {
    env: Environment<'static>,
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl Templates {
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.add_filter("fromjson", from_json);
        env.set_formatter(|out, _state, value| {
            if value.is_none() {
                return Ok(());
            }
            let text = if value.kind() == minijinja::value::ValueKind::Bool {
                value.is_true().to_string()
            } else {
                value.to_string()
            };
            if value.is_safe() {
                out.write_str(&text)
            } else {
                out.write_str(&escape(&text))
            }
            .map_err(|_| minijinja::Error::new(minijinja::ErrorKind::WriteFailure, "cannot write"))
        });
        Self { env }
    }

    /// Compiles `source` under `name` (the key's place in the rules file, used in errors).
    pub fn add(&mut self, name: String, source: String) -> Result<(), String> {
        self.env
            .add_template_owned(name, source)
            .map_err(|e| describe(&e))
    }

    /// Each of the templates `names` that reads a name a record of `columns` does not give (nor
    /// `row`, `event` or a function of the environment), with those names. Rendering such a template
    /// fails on every event, unless it only reads the name where it checks for it (`is defined`).
    pub fn unknown_names<'n>(
        &self,
        names: impl Iterator<Item = &'n String>,
        columns: &[String],
    ) -> Vec<(String, Vec<String>)> {
        let known = |name: &String| {
            columns.contains(name)
                || name == "row"
                || name == "event"
                || self.env.globals().any(|(global, _)| global == name)
        };
        names
            .filter_map(|name| {
                let read = self
                    .env
                    .get_template(name)
                    .ok()?
                    .undeclared_variables(false);
                let mut unknown: Vec<String> = read.into_iter().filter(|n| !known(n)).collect();
                unknown.sort();
                (!unknown.is_empty()).then(|| (name.clone(), unknown))
            })
            .collect()
    }

    /// Whether the route test `name` (a template that renders `1` when its condition holds) holds
    /// for `context`.
    pub fn holds(&self, name: &str, context: &Value) -> Result<bool, RenderError> {
        self.env
            .get_template(name)
            .and_then(|t| t.render(context))
            .map(|rendered| rendered.trim() == "1")
            .map_err(|e| RenderError {
                template: name.to_string(),
                message: describe(&e),
            })
    }

    /// Renders a message for `context` (the record's columns, `row` and `event`).
    pub fn render(
        &self,
        template: &MessageTemplate,
        context: &Value,
    ) -> Result<SlackMessage, RenderError> {
        let text = |name: &String| -> Result<String, RenderError> {
            let rendered = self
                .env
                .get_template(name)
                .and_then(|t| t.render(context))
                .map_err(|e| RenderError {
                    template: name.clone(),
                    message: describe(&e),
                })?;
            Ok(rendered.trim().to_string())
        };
        let mut blocks = Vec::new();
        for block in &template.blocks {
            match block {
                BlockTemplate::Header(name) => {
                    let t = text(name)?;
                    if !t.is_empty() {
                        blocks.push(Block::Header(clip(&t, limits::HEADER_CHARS)));
                    }
                }
                BlockTemplate::Section { text: body, fields } => {
                    let body = match body {
                        Some(name) => clip(&text(name)?, limits::SECTION_CHARS),
                        None => String::new(),
                    };
                    let mut rendered_fields = Vec::new();
                    for name in fields.iter().take(limits::FIELDS) {
                        let t = text(name)?;
                        if !t.is_empty() {
                            rendered_fields.push(clip(&t, limits::FIELD_CHARS));
                        }
                    }
                    if !body.is_empty() || !rendered_fields.is_empty() {
                        blocks.push(Block::Section(body, rendered_fields));
                    }
                }
                BlockTemplate::Context(elements) => {
                    let mut rendered = Vec::new();
                    for name in elements.iter().take(limits::CONTEXT_ELEMENTS) {
                        let t = text(name)?;
                        if !t.is_empty() {
                            rendered.push(clip(&t, limits::CONTEXT_CHARS));
                        }
                    }
                    if !rendered.is_empty() {
                        blocks.push(Block::Context(rendered));
                    }
                }
                BlockTemplate::Divider => blocks.push(Block::Divider),
            }
        }
        blocks.truncate(limits::BLOCKS);
        fit_total(&mut blocks, limits::ALL_BLOCKS_CHARS);
        let mut notification = clip(&text(&template.text)?, limits::TEXT_CHARS);
        if notification.is_empty() {
            notification = "(empty message)".to_string();
        }
        let blocks: Vec<Json> = blocks.iter().map(Block::to_json).collect();
        let message = if blocks.is_empty() {
            json!({ "text": notification })
        } else {
            json!({ "text": notification, "blocks": blocks })
        };
        Ok(SlackMessage(message))
    }
}

/// `{{ (meta | fromjson).plan }}`: parses a JSON text column (MySQL and MariaDB return JSON as text);
/// a value that is not a string passes through.
fn from_json(value: Value) -> Result<Value, minijinja::Error> {
    match value.as_str() {
        Some(text) => serde_json::from_str::<Json>(text)
            .map(|json| Value::from(minijinja::value::Serde(json)))
            .map_err(|e| {
                minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    format!("fromjson: {e}"),
                )
            }),
        None => Ok(value),
    }
}

enum Block {
    Header(String),
    Section(String, Vec<String>),
    Context(Vec<String>),
    Divider,
}

impl Block {
    fn texts(&mut self) -> Vec<&mut String> {
        match self {
            Block::Header(t) => vec![t],
            Block::Section(t, fields) => std::iter::once(t).chain(fields.iter_mut()).collect(),
            Block::Context(elements) => elements.iter_mut().collect(),
            Block::Divider => Vec::new(),
        }
    }

    fn to_json(&self) -> Json {
        let mrkdwn = |t: &String| json!({ "type": "mrkdwn", "text": t });
        match self {
            Block::Header(t) => {
                json!({ "type": "header", "text": { "type": "plain_text", "text": t, "emoji": true } })
            }
            Block::Section(t, fields) => {
                let mut block = json!({ "type": "section" });
                if !t.is_empty() {
                    block["text"] = mrkdwn(t);
                }
                if !fields.is_empty() {
                    block["fields"] = fields.iter().map(mrkdwn).collect();
                }
                block
            }
            Block::Context(elements) => {
                json!({ "type": "context", "elements": elements.iter().map(mrkdwn).collect::<Vec<_>>() })
            }
            Block::Divider => json!({ "type": "divider" }),
        }
    }
}

/// Cuts the longest texts until all blocks together fit `budget` characters.
fn fit_total(blocks: &mut [Block], budget: usize) {
    let mut texts: Vec<&mut String> = blocks.iter_mut().flat_map(Block::texts).collect();
    loop {
        let total: usize = texts.iter().map(|t| t.chars().count()).sum();
        if total <= budget {
            return;
        }
        let Some(longest) = texts.iter_mut().max_by_key(|t| t.chars().count()) else {
            return;
        };
        let len = longest.chars().count();
        let target = len.saturating_sub(total - budget).max(len / 2).max(1);
        if target >= len {
            return;
        }
        **longest = clip(longest, target);
    }
}

/// Escapes text for Slack mrkdwn: `&`, `<` and `>` only (Slack's formatting reference).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// Cuts `text` to at most `max_chars` characters, ending with an ellipsis, without splitting an
/// escape (`&amp;`) or a `<…>` mention or link.
pub fn clip(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_string();
    }
    let keep = max_chars.saturating_sub(1);
    let mut cut: String = text.chars().take(keep).collect();
    if let Some(amp) = cut.rfind('&')
        && !cut[amp..].contains(';')
    {
        cut.truncate(amp);
    }
    if let Some(open) = cut.rfind('<')
        && !cut[open..].contains('>')
    {
        cut.truncate(open);
    }
    cut.push(ELLIPSIS);
    cut
}

/// minijinja's error kind, detail and line, without the template source.
fn describe(error: &minijinja::Error) -> String {
    let mut text = error.kind().to_string();
    if let Some(detail) = error.detail() {
        text = format!("{text}: {detail}");
    }
    if let Some(line) = error.line() {
        text = format!("{text} (line {line})");
    }
    text
}

#[cfg(test)]
mod tests {
    use minijinja::context;

    use super::*;
    use crate::rules::Rules;

    /// Renders the rule `order.created` of `rules_toml` for `ctx`, which gives the columns a query
    /// of the rule would return.
    fn render(rules_toml: &str, ctx: Value) -> Result<SlackMessage, RenderError> {
        let header = "[rules.\"order.created\"]\n";
        let with_query = rules_toml.replacen(
            header,
            &format!("{header}query = \"SELECT * FROM orders WHERE id = $1\"\n"),
            1,
        );
        let rules = Rules::parse("test.toml", &with_query).unwrap();
        let rule = rules.get("order.created").unwrap();
        rules.templates.render(&rule.template, &ctx)
    }

    const ORDER: &str = r#"
[rules."order.created"]
text = "New order {{ event.id }} from {{ customer }}"
[[rules."order.created".blocks]]
type = "header"
text = "Order #{{ event.id }}"
[[rules."order.created".blocks]]
type = "section"
text = "<!here> *{{ customer }}* ordered for {{ total }} ({{ paid }}); note: {{ note }}"
fields = ["*Status*\n{{ status }}", "*Link*\n<https://admin.example.com/orders/{{ event.id }}|open>"]
[[rules."order.created".blocks]]
type = "divider"
[[rules."order.created".blocks]]
type = "context"
elements = ["{{ trusted | safe }}", "plan {{ (meta | fromjson).plan }}"]
"#;

    fn order_context(customer: &str) -> Value {
        context! {
            customer => customer,
            total => "129.90",
            paid => true,
            note => Value::from(()),
            status => "paid",
            trusted => "<@U024BE7LH>",
            meta => "{\"plan\": \"pro\"}",
            event => context! { id => "42", type => "order.created" },
        }
    }

    #[test]
    fn renders_block_kit_from_the_templates() {
        let message = render(ORDER, order_context("Ada Lovelace")).unwrap();
        insta::assert_json_snapshot!("order_created", message.0);
    }

    #[test]
    fn values_cannot_mention_or_link_but_the_template_can() {
        let message = render(
            ORDER,
            order_context("<!channel> & <https://evil.example|click>"),
        )
        .unwrap();
        let section = message.0["blocks"][1]["text"]["text"].as_str().unwrap();
        assert_eq!(
            section,
            "<!here> *&lt;!channel&gt; &amp; &lt;https://evil.example|click&gt;* ordered for 129.90 (true); note:"
        );
        assert_eq!(
            message.0["blocks"][3]["elements"][0]["text"], "<@U024BE7LH>",
            "|safe is kept as is"
        );
    }

    #[test]
    fn long_values_are_clipped_to_slacks_limits() {
        let message = render(ORDER, order_context(&"A&B ".repeat(2_000))).unwrap();
        let header = message.0["blocks"][0]["text"]["text"].as_str().unwrap();
        assert!(header.chars().count() <= limits::HEADER_CHARS);
        let section = message.0["blocks"][1]["text"]["text"].as_str().unwrap();
        assert_eq!(section.chars().count(), limits::SECTION_CHARS);
        assert!(section.ends_with('…'));
        let text = message.0["text"].as_str().unwrap();
        assert!(text.chars().count() <= limits::TEXT_CHARS);
    }

    #[test]
    fn all_blocks_together_stay_under_the_message_budget() {
        let mut toml = String::from("[rules.\"order.created\"]\ntext = \"t\"\n");
        for _ in 0..10 {
            toml.push_str(
                "[[rules.\"order.created\".blocks]]\ntype = \"section\"\ntext = \"{{ long }}\"\n",
            );
        }
        let message = render(&toml, context! { long => "x".repeat(5_000) }).unwrap();
        let total: usize = message.0["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["text"]["text"].as_str().unwrap().chars().count())
            .sum();
        assert!(total <= limits::ALL_BLOCKS_CHARS, "{total}");
    }

    #[test]
    fn clipping_never_splits_an_escape_or_a_link() {
        assert_eq!(clip("abc &amp; def", 7), "abc …");
        assert_eq!(clip("see <https://x.example|x> now", 12), "see …");
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("ééééé", 3), "éé…");
    }

    #[test]
    fn empty_blocks_are_left_out() {
        let toml = "[rules.\"order.created\"]\ntext = \"t\"\n[[rules.\"order.created\".blocks]]\ntype = \"section\"\ntext = \"{% if note %}{{ note }}{% endif %}\"\n";
        let message = render(toml, context! { note => Value::from(()) }).unwrap();
        assert_eq!(message.0, serde_json::json!({ "text": "t" }));
    }

    #[test]
    fn an_unknown_value_fails_with_the_template_named() {
        let error = render(ORDER, context! { event => context! { id => "1" } }).unwrap_err();
        assert_eq!(error.template, "rules.\"order.created\".blocks[1].text");
        assert!(error.message.contains("undefined"), "{}", error.message);
    }

    /// The inverse of `uri_component`, as the builder's page decodes its fragment.
    fn decode(text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_block_kit_builder_link_carries_the_messages_blocks() {
        let message = SlackMessage(json!({
            "text": "100% done",
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "*Ünïcode* & <!here> 100% #1"}}],
        }));
        let url = message.block_kit_builder_url();
        let fragment = url.strip_prefix(BLOCK_KIT_BUILDER).unwrap();
        assert!(
            fragment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.!~*'()%".contains(&b)),
            "{url}"
        );
        let decoded: Json = serde_json::from_str(&decode(fragment)).unwrap();
        assert_eq!(decoded, json!({"blocks": message.0["blocks"]}));
    }

    #[test]
    fn a_message_without_blocks_is_shown_as_a_section_of_its_text() {
        let url = SlackMessage(json!({"text": "Order 42"})).block_kit_builder_url();
        let decoded: Json =
            serde_json::from_str(&decode(url.strip_prefix(BLOCK_KIT_BUILDER).unwrap())).unwrap();
        assert_eq!(decoded["blocks"][0]["text"]["text"], "Order 42");
    }
}
