//! The rules file (TOML): for each event type, the query that fetches its record, the Slack message
//! templates and the destinations. Read and checked once at start-up; a mistake stops start-up with an
//! error that names the file, the rule, the key and the fix.
//!
//! ```toml
//! [defaults]
//! destinations = ["OPSRELAY_SLACK_WEBHOOK_URL"]   # environment variables holding webhook URLs
//!
//! [rules."order.created"]
//! query = "SELECT id, customer, total FROM orders WHERE id = $1"
//! id_type = "integer"                              # text (default) | integer | uuid
//! text = "New order {{ id }} from {{ customer }}"
//!
//! [[rules."order.created".blocks]]
//! type = "section"
//! text = "*New order* {{ id }} from {{ customer }}"
//! fields = ["*Total*\n{{ total }}"]
//!
//! [[rules."order.created".routes]]                # in order; the first that holds wins
//! when = 'total > 1000 and currency == "EUR"'
//! destinations = ["OPSRELAY_SLACK_WEBHOOK_URL_SALES"]
//! mention = "<!here>"
//! continue = true                                  # also try the routes after it
//!
//! [rules."order.created".digest]                   # a burst to one destination: one message
//! list = 10                                        # events listed; the rest are counted
//! text = "{{ count }} orders: {% for e in events %}{{ e.id }} {% endfor %}"
//! ```

mod digest;
mod route;
mod source;

pub use digest::Digest;
pub use route::Route;
pub use source::{CursorKind, Source};

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use crate::event::EventType;
use crate::render::{BlockTemplate, MessageTemplate, Templates, limits};

/// The default destination: the environment variable holding the default webhook URL.
pub const DEFAULT_DESTINATION: &str = "OPSRELAY_SLACK_WEBHOOK_URL";

/// How the event id is bound to the query's one parameter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdType {
    #[default]
    Text,
    Integer,
    Uuid,
}

/// A checked rule.
#[derive(Clone, Debug)]
pub struct Rule {
    pub name: String,
    /// The SQL; the event id is its one parameter (`$1` on PostgreSQL, `?` on MySQL and SQLite).
    pub query: Option<Arc<str>>,
    pub id_type: IdType,
    /// Names of environment variables that hold webhook URLs (or Secrets Manager ARNs): where the
    /// events go when no route says otherwise.
    pub destinations: Vec<String>,
    pub template: MessageTemplate,
    /// Where events go by their record, in order ([`route`]).
    pub routes: Vec<Route>,
    /// How a burst of its events to one destination becomes one message ([`digest`]).
    pub digest: Digest,
}

impl Rule {
    /// Every destination the rule may send to: its own and its routes'.
    pub fn all_destinations(&self) -> impl Iterator<Item = &String> {
        let routes = self.routes.iter().flat_map(|r| r.destinations.iter());
        self.destinations.iter().chain(routes)
    }

    /// The names of all its compiled templates: the message's, then each route's test.
    pub fn template_names(&self) -> impl Iterator<Item = &String> {
        self.template
            .names()
            .chain(self.routes.iter().map(|r| &r.when))
    }
}

/// All rules, with their compiled templates, and the sources that poll the database for events.
pub struct Rules {
    rules: HashMap<String, Rule>,
    pub templates: Templates,
    /// In name order.
    pub sources: Vec<Source>,
}

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rules")
            .field("rules", &self.rules.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A rules file that cannot be used. Its text names the file, where, what and the fix.
#[derive(Debug, thiserror::Error)]
#[error("rules file {file}: {place}: {problem}\n  fix: {fix}")]
pub struct RulesError {
    pub file: String,
    pub place: String,
    pub problem: String,
    pub fix: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    defaults: Defaults,
    #[serde(default)]
    rules: BTreeMap<String, RuleSpec>,
    #[serde(default)]
    sources: BTreeMap<String, source::SourceSpec>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Defaults {
    destinations: Option<Vec<String>>,
    id_type: Option<IdType>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    query: Option<String>,
    id_type: Option<IdType>,
    destinations: Option<Vec<String>>,
    text: String,
    #[serde(default)]
    blocks: Vec<BlockSpec>,
    #[serde(default)]
    routes: Vec<route::RouteSpec>,
    digest: Option<digest::DigestSpec>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum BlockSpec {
    Header {
        text: String,
    },
    Section {
        text: Option<String>,
        #[serde(default)]
        fields: Vec<String>,
    },
    Context {
        elements: Vec<String>,
    },
    Divider,
}

impl Rules {
    /// Reads and checks the rules file at `path`.
    pub fn load(path: &Path) -> Result<Self, RulesError> {
        let file = path.display().to_string();
        let source = std::fs::read_to_string(path).map_err(|e| RulesError {
            file: file.clone(),
            place: "the file".into(),
            problem: format!("cannot be read: {e}"),
            fix: "set OPSRELAY_RULES to the path of a readable rules file".into(),
        })?;
        Self::parse(&file, &source)
    }

    /// Checks rules given as text; `file` names them in errors.
    pub fn parse(file: &str, source: &str) -> Result<Self, RulesError> {
        let mut checker = Checker {
            file,
            templates: Templates::new(),
        };
        let parsed: RulesFile = toml::from_str(source).map_err(|e| {
            let place = e
                .span()
                .map_or_else(|| "the file".into(), |span| place_of(source, span.start));
            checker.fail(
                place,
                without_strings(e.message()),
                "correct the key or value named above (the format is in README.md, section Rules)",
            )
        })?;
        if parsed.rules.is_empty() {
            return Err(checker.fail(
                "[rules]".into(),
                "no rules are defined".into(),
                "add a table such as [rules.\"order.created\"] with a `text` template",
            ));
        }
        let (destinations, id_type) = checker.defaults(parsed.defaults)?;
        let mut rules = HashMap::new();
        for (name, spec) in parsed.rules {
            let rule = checker.rule(name, spec, &destinations, id_type)?;
            rules.insert(rule.name.clone(), rule);
        }
        let sources = parsed
            .sources
            .into_iter()
            .map(|(name, spec)| checker.source(name, spec, |kind| rules.contains_key(kind)))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            rules,
            templates: checker.templates,
            sources,
        })
    }

    /// The rule for an event type.
    pub fn get(&self, event_type: &str) -> Option<&Rule> {
        self.rules.get(event_type)
    }

    /// All rules, sorted by event type.
    pub fn iter(&self) -> impl Iterator<Item = &Rule> {
        let mut rules: Vec<&Rule> = self.rules.values().collect();
        rules.sort_by(|a, b| a.name.cmp(&b.name));
        rules.into_iter()
    }
}

/// The checking of one rules file: its name, for errors, and the templates compiled so far.
struct Checker<'a> {
    file: &'a str,
    templates: Templates,
}

impl Checker<'_> {
    /// The error at `place` in this file.
    fn fail(&self, place: String, problem: String, fix: &str) -> RulesError {
        RulesError {
            file: self.file.to_string(),
            place,
            problem,
            fix: fix.to_string(),
        }
    }

    /// The `[defaults]` table, checked, with its gaps filled: the destinations and the id type.
    fn defaults(&self, defaults: Defaults) -> Result<(Vec<String>, IdType), RulesError> {
        let destinations = defaults
            .destinations
            .unwrap_or_else(|| vec![DEFAULT_DESTINATION.to_string()]);
        let id_type = defaults.id_type.unwrap_or_default();
        check_destinations(&destinations)
            .map_err(|(problem, fix)| self.fail("[defaults].destinations".into(), problem, fix))?;
        Ok((destinations, id_type))
    }

    /// Checks the rule `name`, compiling its templates; the defaults fill what it leaves out.
    fn rule(
        &mut self,
        name: String,
        spec: RuleSpec,
        default_destinations: &[String],
        default_id_type: IdType,
    ) -> Result<Rule, RulesError> {
        EventType::parse(&name).map_err(|e| {
            self.fail(
                format!("rules.\"{name}\""),
                e.to_string(),
                "rename the rule to the event type it handles",
            )
        })?;
        let query = self.query(&name, spec.query)?;
        let destinations = spec
            .destinations
            .unwrap_or_else(|| default_destinations.to_vec());
        check_destinations(&destinations)
            .map_err(|(problem, fix)| self.fail(place(&name, "destinations"), problem, fix))?;
        let template = self.template(&format!("rules.\"{name}\""), spec.text, spec.blocks)?;
        let routes = self.routes(&name, spec.routes, &destinations)?;
        let digest = self.digest(&name, spec.digest)?;
        let names = || template.names().chain(routes.iter().map(|r| &r.when));
        if query.is_none()
            && let Some((key, names)) = self
                .templates
                .unknown_names(names(), &[])
                .into_iter()
                .next()
        {
            // Without a query there are no columns: such a name fails on every event.
            return Err(self.fail(
                key,
                format!(
                    "reads {}, but the rule has no query: its templates see only `event` (type, id, occurred_at)",
                    names.join(", ")
                ),
                "use event.id and the like, or add a query that returns those columns",
            ));
        }
        Ok(Rule {
            name,
            query,
            id_type: spec.id_type.unwrap_or(default_id_type),
            destinations,
            template,
            routes,
            digest,
        })
    }

    /// The query of the rule `name`, refused when it is empty or has no parameter for the event id.
    fn query(&self, name: &str, query: Option<String>) -> Result<Option<Arc<str>>, RulesError> {
        match query {
            Some(q) if q.trim().is_empty() => Err(self.fail(
                place(name, "query"),
                "the query is empty".into(),
                "write the SELECT that fetches the record, or remove `query`",
            )),
            Some(q) if !q.contains("$1") && !q.contains('?') => Err(self.fail(
                place(name, "query"),
                "the query has no parameter for the event id".into(),
                "use $1 (PostgreSQL) or ? (MySQL, SQLite) where the id goes, e.g. WHERE id = $1",
            )),
            q => Ok(q.map(Arc::from)),
        }
    }

    /// The message template at `at` (a rule's table, or its digest's): its text and its blocks,
    /// checked and compiled.
    fn template(
        &mut self,
        at: &str,
        text: String,
        blocks: Vec<BlockSpec>,
    ) -> Result<MessageTemplate, RulesError> {
        if text.trim().is_empty() {
            return Err(self.fail(
                format!("{at}.text"),
                "the notification text is empty".into(),
                "write the text shown in notifications, e.g. \"Order {{ id }} created\"",
            ));
        }
        let text = self.compile(format!("{at}.text"), text)?;
        if blocks.len() > limits::BLOCKS {
            return Err(self.fail(
                format!("{at}.blocks"),
                format!("{} blocks; Slack allows {}", blocks.len(), limits::BLOCKS),
                "merge or remove blocks",
            ));
        }
        let blocks = blocks
            .into_iter()
            .enumerate()
            .map(|(i, block)| self.block(format!("{at}.blocks[{i}]"), block))
            .collect::<Result<_, _>>()?;
        Ok(MessageTemplate { text, blocks })
    }

    /// The block at `at`, checked against Slack's limits and compiled.
    fn block(&mut self, at: String, block: BlockSpec) -> Result<BlockTemplate, RulesError> {
        let key = |k: &str| format!("{at}.{k}");
        Ok(match block {
            BlockSpec::Header { text } => BlockTemplate::Header(self.compile(key("text"), text)?),
            BlockSpec::Section { text, fields } => {
                if text.is_none() && fields.is_empty() {
                    return Err(self.fail(
                        at,
                        "a section needs `text` or `fields`".into(),
                        "add text = \"…\" or fields = [\"…\"]",
                    ));
                }
                if fields.len() > limits::FIELDS {
                    return Err(self.fail(
                        key("fields"),
                        format!("{} fields; Slack allows {}", fields.len(), limits::FIELDS),
                        "split the fields over two sections",
                    ));
                }
                let text = text.map(|t| self.compile(key("text"), t)).transpose()?;
                let fields = self.compile_all(&key("fields"), fields)?;
                BlockTemplate::Section { text, fields }
            }
            BlockSpec::Context { elements } => {
                if elements.is_empty() || elements.len() > limits::CONTEXT_ELEMENTS {
                    return Err(self.fail(
                        key("elements"),
                        format!(
                            "{} elements; a context holds 1 to {}",
                            elements.len(),
                            limits::CONTEXT_ELEMENTS
                        ),
                        "keep between 1 and 10 elements",
                    ));
                }
                BlockTemplate::Context(self.compile_all(&key("elements"), elements)?)
            }
            BlockSpec::Divider => BlockTemplate::Divider,
        })
    }

    /// Compiles the template `source` under the name `key` (its place in the file); returns `key`.
    fn compile(&mut self, key: String, source: String) -> Result<String, RulesError> {
        self.templates.add(key.clone(), source).map_err(|problem| {
            self.fail(
                key.clone(),
                problem,
                "correct the Jinja syntax (see the README, section Templates)",
            )
        })?;
        Ok(key)
    }

    /// Compiles each of the templates `sources`, named `key[0]`, `key[1]`, …; returns their names.
    fn compile_all(&mut self, key: &str, sources: Vec<String>) -> Result<Vec<String>, RulesError> {
        sources
            .into_iter()
            .enumerate()
            .map(|(j, source)| self.compile(format!("{key}[{j}]"), source))
            .collect()
    }
}

/// The place of `key` in the rule `name`, e.g. `rules."order.created".text`.
fn place(name: &str, key: &str) -> String {
    format!("rules.\"{name}\".{key}")
}

fn check_destinations(destinations: &[String]) -> Result<(), (String, &'static str)> {
    if destinations.is_empty() {
        return Err((
            "no destinations".into(),
            "name at least one environment variable that holds a webhook URL",
        ));
    }
    for (i, name) in destinations.iter().enumerate() {
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if valid {
            continue;
        }
        // A URL here is most likely the webhook itself: a secret, never repeated.
        let problem = if name.contains(':') || name.contains('/') {
            format!(
                "entry {} looks like a URL (not shown), not an environment variable name",
                i + 1
            )
        } else {
            format!("{name:?} is not an environment variable name")
        };
        return Err((
            problem,
            "put the webhook URL in an environment variable and name that variable here, e.g. OPSRELAY_SLACK_WEBHOOK_URL_SALES",
        ));
    }
    Ok(())
}

/// Where `offset` is in the rules file, for a TOML error: the key on its line (when it has one)
/// under the table above it, and the line number, e.g. `rules."order.created".text (line 4)`.
fn place_of(source: &str, offset: usize) -> String {
    let offset = offset.min(source.len());
    let number = source[..offset].matches('\n').count() + 1;
    let before = &source[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = source[line_start..]
        .lines()
        .next()
        .unwrap_or_default()
        .trim();
    let table = before[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|header| header.trim_matches(|c| c == '[' || c == ']').trim());
    if line.starts_with('[') {
        let header = line.trim_matches(|c| c == '[' || c == ']').trim();
        return format!("{header} (line {number})");
    }
    let key = line
        .split_once('=')
        .map(|(key, _)| key.trim())
        .filter(|key| !key.is_empty());
    match (table, key) {
        (Some(table), Some(key)) => format!("{table}.{key} (line {number})"),
        (None, Some(key)) => format!("{key} (line {number})"),
        _ => format!("line {number}"),
    }
}

/// A TOML or serde message without the string values it may quote (`invalid type: string "…",
/// expected …`): a value in the wrong place may be a webhook URL.
fn without_strings(message: &str) -> String {
    let mut out = String::new();
    let mut rest = message;
    while let Some(start) = rest.find("string \"") {
        out.push_str(&rest[..start]);
        out.push_str("a string");
        let value = &rest[start + "string \"".len()..];
        rest = match value.find("\", ") {
            Some(end) => &value[end + 1..],
            None => "",
        };
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(toml: &str) -> String {
        Rules::parse("rules.toml", toml).unwrap_err().to_string()
    }

    #[test]
    fn a_misspelt_key_names_the_file_the_line_and_the_key() {
        let text = error("[rules.\"order.created\"]\ntext = \"x\"\ntempalte = \"y\"\n");
        assert!(
            text.starts_with("rules file rules.toml: rules.\"order.created\".tempalte (line 3):"),
            "{text}"
        );
        assert!(text.contains("tempalte"), "{text}");
        assert!(text.contains("fix:"), "{text}");
    }

    #[test]
    fn a_template_syntax_error_names_the_rule_and_the_key() {
        let text = error(
            "[rules.\"order.created\"]\ntext = \"x\"\n[[rules.\"order.created\".blocks]]\ntype = \"section\"\ntext = \"{{ oops \"\n",
        );
        assert!(
            text.contains("rules.\"order.created\".blocks[0].text"),
            "{text}"
        );
        assert!(text.contains("syntax error"), "{text}");
    }

    #[test]
    fn a_query_without_a_parameter_is_refused_with_the_fix() {
        let text = error("[rules.\"a.b\"]\nquery = \"SELECT 1\"\ntext = \"x\"\n");
        assert!(text.contains("rules.\"a.b\".query"), "{text}");
        assert!(text.contains("$1 (PostgreSQL) or ?"), "{text}");
    }

    #[test]
    fn a_webhook_url_as_a_destination_is_refused_without_repeating_it() {
        let text = error(
            "[rules.\"a.b\"]\ndestinations = [\"https://hooks.slack.com/services/T0/B0/SECRET\"]\ntext = \"x\"\n",
        );
        assert!(text.contains("not an environment variable name"), "{text}");
        assert!(
            !text.contains("SECRET") && !text.contains("hooks.slack"),
            "{text}"
        );
        let text = error(
            "[rules.\"a.b\"]\ndestinations = \"https://hooks.slack.com/services/T0/B0/SECRET\"\ntext = \"x\"\n",
        );
        assert!(
            !text.contains("SECRET") && !text.contains("hooks.slack"),
            "{text}"
        );
        assert!(
            text.contains("rules.\"a.b\".destinations (line 2)"),
            "{text}"
        );
    }

    #[test]
    fn a_rule_without_a_query_cannot_read_columns() {
        let text = error("[rules.\"a.b\"]\ntext = \"{{ event.id }} {{ customer }}\"\n");
        assert!(
            text.contains("rules.\"a.b\".text: reads customer, but the rule has no query"),
            "{text}"
        );
        assert!(
            Rules::parse(
                "r.toml",
                "[rules.\"a.b\"]\ntext = \"{{ event.type }} {{ event.id }}\"\n"
            )
            .is_ok()
        );
    }

    #[test]
    fn a_value_of_the_wrong_type_names_its_key() {
        let text = error("[rules.\"a.b\"]\ntext = 5\n");
        assert!(text.contains("rules.\"a.b\".text (line 2)"), "{text}");
        assert!(text.contains("expected a string"), "{text}");
        let text = error("[rules.\"a.b\"]\nquery = \"SELECT 1 WHERE 1 = $1\"\n");
        assert!(text.contains("rules.\"a.b\" (line 1)"), "{text}");
        assert!(text.contains("missing field `text`"), "{text}");
    }

    #[test]
    fn an_invalid_rule_name_and_an_empty_file_are_refused() {
        assert!(error("[rules.\"order created\"]\ntext = \"x\"\n").contains("is not valid"));
        assert!(error("").contains("no rules are defined"));
        assert!(error("[rules.\"a.b\"]\ntext = \"  \"\n").contains("notification text is empty"));
    }

    #[test]
    fn an_unknown_block_type_is_refused() {
        let text =
            error("[rules.\"a.b\"]\ntext = \"x\"\n[[rules.\"a.b\".blocks]]\ntype = \"image\"\n");
        assert!(text.contains("image"), "{text}");
    }

    #[test]
    fn defaults_apply_to_rules_that_do_not_override_them() {
        let rules = Rules::parse(
            "r.toml",
            "[defaults]\ndestinations = [\"OPS_HOOK\"]\nid_type = \"integer\"\n[rules.\"a.b\"]\ntext = \"x\"\n[rules.\"c.d\"]\ntext = \"y\"\nid_type = \"uuid\"\ndestinations = [\"OTHER\"]\n",
        )
        .unwrap();
        let a = rules.get("a.b").unwrap();
        assert_eq!(
            (a.id_type, a.destinations.as_slice()),
            (IdType::Integer, &["OPS_HOOK".to_string()][..])
        );
        let c = rules.get("c.d").unwrap();
        assert_eq!(
            (c.id_type, c.destinations.as_slice()),
            (IdType::Uuid, &["OTHER".to_string()][..])
        );
    }

    #[test]
    fn the_embedded_rules_are_valid() {
        Rules::parse("embedded", crate::local::EMBEDDED_RULES).unwrap();
    }
}
