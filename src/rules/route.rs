//! A rule's routes (`[[rules."x".routes]]`): where an event goes by its record. Each route has a
//! `when` (a Jinja expression over `event` and the row's columns), and either destinations (the
//! rule's when it names none) with an optional mention, or `drop = true`. The first route whose
//! `when` holds wins, unless it says `continue`; with none, the rule's destinations.

use serde::Deserialize;

use super::{Checker, RulesError, check_destinations, place};

/// Mentions a route may add: `<!here>`, `<!channel>`, `<!everyone>`, a user group
/// (`<!subteam^S0123>`) or a user (`<@U0123>`), several separated by spaces.
const MENTION_FIX: &str =
    "use <!here>, <!channel>, <!everyone>, <!subteam^ID> or <@USER_ID>, separated by spaces";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RouteSpec {
    when: String,
    destinations: Option<Vec<String>>,
    mention: Option<String>,
    #[serde(default, rename = "continue")]
    continues: bool,
    #[serde(default)]
    drop: bool,
}

/// A checked route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Its place in the rules file, e.g. `rules."order.created".routes[0]`: in logs and errors.
    pub place: String,
    /// The name of its compiled test, a template that renders `1` when `when` holds.
    pub when: String,
    /// Where it sends; empty for a drop route.
    pub destinations: Vec<String>,
    /// Put in front of the message's text for this route's destinations only.
    pub mention: Option<String>,
    /// Also try the routes after it.
    pub continues: bool,
    /// Acknowledge the event without posting it.
    pub drop: bool,
}

impl Checker<'_> {
    /// The routes of the rule `name`, checked and their tests compiled; a route without
    /// destinations sends to `rule_destinations`.
    pub(super) fn routes(
        &mut self,
        name: &str,
        specs: Vec<RouteSpec>,
        rule_destinations: &[String],
    ) -> Result<Vec<Route>, RulesError> {
        specs
            .into_iter()
            .enumerate()
            .map(|(i, spec)| {
                self.route(
                    place(name, &format!("routes[{i}]")),
                    spec,
                    rule_destinations,
                )
            })
            .collect()
    }

    fn route(
        &mut self,
        at: String,
        spec: RouteSpec,
        rule_destinations: &[String],
    ) -> Result<Route, RulesError> {
        let key = |k: &str| format!("{at}.{k}");
        if spec.when.trim().is_empty() {
            return Err(self.fail(
                key("when"),
                "the condition is empty".into(),
                "write a Jinja expression, e.g. when = 'total > 1000 and currency == \"EUR\"'",
            ));
        }
        if spec.drop && (spec.destinations.is_some() || spec.mention.is_some() || spec.continues) {
            return Err(self.fail(
                at,
                "a route with drop = true posts nowhere, but it also sets destinations, mention or continue".into(),
                "remove drop, or remove destinations, mention and continue",
            ));
        }
        if let Some(mention) = &spec.mention
            && !is_mention(mention)
        {
            return Err(self.fail(
                key("mention"),
                format!("{mention:?} is not a Slack mention"),
                MENTION_FIX,
            ));
        }
        let destinations = match (spec.drop, spec.destinations) {
            (true, _) => Vec::new(),
            (false, Some(destinations)) => {
                check_destinations(&destinations)
                    .map_err(|(problem, fix)| self.fail(key("destinations"), problem, fix))?;
                destinations
            }
            (false, None) => rule_destinations.to_vec(),
        };
        // `when` is trusted text from the rules file; as a test it renders 1 when it holds.
        let test = format!("{{% if ({}) %}}1{{% endif %}}", spec.when);
        let when = self.compile(key("when"), test)?;
        Ok(Route {
            place: at,
            when,
            destinations,
            mention: spec.mention,
            continues: spec.continues,
            drop: spec.drop,
        })
    }
}

/// Whether `text` is one or more Slack mentions separated by spaces.
fn is_mention(text: &str) -> bool {
    let one = |m: &str| {
        let id = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric());
        matches!(m, "<!here>" | "<!channel>" | "<!everyone>")
            || m.strip_prefix("<!subteam^")
                .and_then(|r| r.strip_suffix('>'))
                .is_some_and(id)
            || m.strip_prefix("<@")
                .and_then(|r| r.strip_suffix('>'))
                .is_some_and(id)
    };
    !text.trim().is_empty() && text.split_whitespace().all(one)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Rules;

    fn parse(routes: &str) -> Result<Rules, RulesError> {
        Rules::parse(
            "rules.toml",
            &format!(
                "[rules.\"order.created\"]\nquery = \"SELECT total FROM orders WHERE id = $1\"\ntext = \"x\"\n{routes}"
            ),
        )
    }

    #[test]
    fn a_route_is_read_with_the_rules_destinations_when_it_names_none() {
        let rules = parse("[[rules.\"order.created\".routes]]\nwhen = \"total > 1000\"\nmention = \"<!here> <!subteam^S012>\"\ncontinue = true\n").unwrap();
        let route = &rules.get("order.created").unwrap().routes[0];
        assert_eq!(route.place, "rules.\"order.created\".routes[0]");
        assert_eq!(route.destinations, ["OPSRELAY_SLACK_WEBHOOK_URL"]);
        assert_eq!(route.mention.as_deref(), Some("<!here> <!subteam^S012>"));
        assert!(route.continues && !route.drop);
    }

    #[test]
    fn a_when_that_does_not_compile_names_the_rule_and_the_route() {
        let error = parse("[[rules.\"order.created\".routes]]\nwhen = \"total >\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("rules.\"order.created\".routes[0].when"),
            "{error}"
        );
    }

    #[test]
    fn a_mention_must_be_one_slack_knows() {
        let error =
            parse("[[rules.\"order.created\".routes]]\nwhen = \"true\"\nmention = \"@here\"\n")
                .unwrap_err()
                .to_string();
        assert!(
            error.contains("routes[0].mention") && error.contains("<!here>"),
            "{error}"
        );
    }

    #[test]
    fn a_drop_route_sends_nowhere() {
        let error = parse("[[rules.\"order.created\".routes]]\nwhen = \"true\"\ndrop = true\ndestinations = [\"A\"]\n").unwrap_err().to_string();
        assert!(error.contains("drop = true posts nowhere"), "{error}");
    }

    #[test]
    fn a_rule_without_a_query_routes_only_on_the_event() {
        let error = Rules::parse(
            "rules.toml",
            "[rules.\"order.created\"]\ntext = \"x\"\n[[rules.\"order.created\".routes]]\nwhen = \"total > 1\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("routes[0].when") && error.contains("reads total"),
            "{error}"
        );
        let ok = "[rules.\"order.created\"]\ntext = \"x\"\n[[rules.\"order.created\".routes]]\nwhen = \"event.id == '7'\"\n";
        assert!(Rules::parse("rules.toml", ok).is_ok());
    }
}
