//! Turns a rule's templates and one record into a Slack Block Kit message. Pure: no I/O.
//!
//! Templates are Jinja (minijinja). Every value printed by `{{ … }}` is escaped for Slack (`&`, `<`,
//! `>` become `&amp;`, `&lt;`, `&gt;`), so no value from the database can make a mention (`<!channel>`)
//! or a link; the template's own text is not escaped, so a template may write `<!here>` or
//! `<https://example.com/orders/{{ id }}|open>`. A value marked `|safe` is printed as it is. NULL prints
//! as nothing, booleans as `true` and `false`. Text is kept inside Slack's limits by cutting it with an ellipsis, never in the middle
//! of an escape or a `<…>` mention or link.

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
#[derive(Debug, thiserror::Error)]
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
