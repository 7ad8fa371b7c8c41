//! A rule's digest (`[rules."x".digest]`): how a burst of its events bound for one destination
//! becomes one message instead of one each. When to digest (`min_events`, else whenever the pacer
//! cannot post them all promptly), how many events to list (`list`; the rest are counted), and
//! optionally its own `text`/`blocks` templates, which see `events` (each with `event` and the row's
//! columns), `count`, `not_listed` and `rule`; without them, the default digest lists each event's
//! own text.

use serde::Deserialize;

use super::{BlockSpec, Checker, RulesError, place};
use crate::render::MessageTemplate;

/// Events a digest lists unless its rule says otherwise.
pub const DEFAULT_LIST: usize = 20;
/// The most a digest may list: past it no message stays readable (nor within Slack's limits).
pub const MAX_LIST: usize = 1_000;
/// The names a digest's own templates see.
pub const DIGEST_NAMES: [&str; 4] = ["events", "count", "not_listed", "rule"];

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DigestSpec {
    enabled: Option<bool>,
    min_events: Option<u64>,
    list: Option<u64>,
    text: Option<String>,
    #[serde(default)]
    blocks: Vec<BlockSpec>,
}

/// A checked digest.
#[derive(Clone, Debug)]
pub struct Digest {
    /// Whether bursts of the rule are digested at all.
    pub enabled: bool,
    /// Digest when at least this many events go to one destination at once; `None`: when more go
    /// than the pacer can post promptly.
    pub min_events: Option<usize>,
    /// Events listed; the rest are counted.
    pub list: usize,
    /// Its own templates; `None`: the default digest.
    pub template: Option<MessageTemplate>,
}

impl Default for Digest {
    fn default() -> Self {
        Self {
            enabled: true,
            min_events: None,
            list: DEFAULT_LIST,
            template: None,
        }
    }
}

impl Checker<'_> {
    /// The digest of the rule `name`, checked and its templates compiled.
    pub(super) fn digest(
        &mut self,
        name: &str,
        spec: Option<DigestSpec>,
    ) -> Result<Digest, RulesError> {
        let spec = spec.unwrap_or_default();
        let key = |k: &str| place(name, &format!("digest.{k}"));
        if let Some(n) = spec.min_events.filter(|&n| n < 2) {
            return Err(self.fail(
                key("min_events"),
                format!("{n} events make no digest"),
                "set 2 or more, or leave it out to digest whenever the pacer cannot post the events promptly",
            ));
        }
        let list = spec.list.unwrap_or(DEFAULT_LIST as u64);
        if !(1..=MAX_LIST as u64).contains(&list) {
            return Err(self.fail(
                key("list"),
                format!("{list} events listed; a digest lists 1 to {MAX_LIST}"),
                "set how many events the digest lists; the rest are counted",
            ));
        }
        let template = match spec.text {
            Some(text) => Some(self.template(&place(name, "digest"), text, spec.blocks)?),
            None if !spec.blocks.is_empty() => {
                return Err(self.fail(
                    key("blocks"),
                    "a digest's blocks need its own `text`".into(),
                    "add text = \"{{ count }} events\" to the digest, or remove its blocks",
                ));
            }
            None => None,
        };
        if let Some(template) = &template {
            self.digest_names(template)?;
        }
        Ok(Digest {
            enabled: spec.enabled.unwrap_or(true),
            min_events: spec.min_events.map(|n| n as usize),
            list: list as usize,
            template,
        })
    }

    /// Refuses a digest template that reads a name a digest does not give.
    fn digest_names(&self, template: &MessageTemplate) -> Result<(), RulesError> {
        let known = DIGEST_NAMES.map(String::from);
        let unknown = self.templates.unknown_names(template.names(), &known);
        match unknown.into_iter().next() {
            None => Ok(()),
            Some((key, names)) => Err(self.fail(
                key,
                format!(
                    "reads {}, but a digest's templates see only events, count, not_listed and rule",
                    names.join(", ")
                ),
                "read the columns through each event, e.g. {% for e in events %}{{ e.id }} {% endfor %}",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::rules::Rules;

    fn rules(digest: &str) -> Result<Rules, String> {
        let source = format!(
            "[rules.\"order.created\"]\nquery = \"SELECT id FROM orders WHERE id = $1\"\ntext = \"x\"\n[rules.\"order.created\".digest]\n{digest}"
        );
        Rules::parse("rules.toml", &source).map_err(|e| e.to_string())
    }

    #[test]
    fn a_rule_without_a_digest_table_gets_the_default_digest() {
        let source = "[rules.\"a.b\"]\ntext = \"x\"\n";
        let rules = Rules::parse("rules.toml", source).unwrap();
        let digest = &rules.get("a.b").unwrap().digest;
        assert!(digest.enabled && digest.template.is_none() && digest.min_events.is_none());
        assert_eq!(digest.list, super::DEFAULT_LIST);
    }

    #[test]
    fn a_digest_template_reading_a_column_directly_is_refused_with_the_fix() {
        let error = rules("text = \"{{ customer }}\"").unwrap_err();
        assert!(
            error.contains("rules.\"order.created\".digest.text"),
            "{error}"
        );
        assert!(error.contains("reads customer"), "{error}");
        assert!(error.contains("for e in events"), "{error}");
    }

    #[test]
    fn a_digest_of_fewer_than_two_events_or_listing_none_is_refused() {
        let error = rules("min_events = 1").unwrap_err();
        assert!(error.contains("digest.min_events"), "{error}");
        let error = rules("list = 0").unwrap_err();
        assert!(error.contains("digest.list"), "{error}");
    }

    #[test]
    fn digest_blocks_without_a_digest_text_are_refused() {
        let error =
            rules("[[rules.\"order.created\".digest.blocks]]\ntype = \"divider\"").unwrap_err();
        assert!(error.contains("digest.blocks"), "{error}");
    }

    #[test]
    fn a_digest_template_sees_events_count_not_listed_and_rule() {
        let text = "text = \"{{ rule }}: {{ count }} ({{ not_listed }} more) {% for e in events %}{{ e.id }}{{ e.event.id }}{% endfor %}\"";
        let rules = rules(&format!("{text}\nlist = 5\nmin_events = 3")).unwrap();
        let digest = &rules.get("order.created").unwrap().digest;
        assert_eq!((digest.list, digest.min_events), (5, Some(3)));
        assert!(digest.template.is_some());
    }
}
