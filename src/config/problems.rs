//! What the configuration lacks for the rules, decided in one place for start-up, `opsrelay check`
//! and `opsrelay doctor`: a database for every rule with a query, a webhook for every destination,
//! the DLQ for a queue-driven process, the queue and cursor store of the sources, and each secret
//! or webhook that could not be read.

use std::collections::BTreeMap;

use super::{ConfigError, PollSettings};
use crate::rules::Rules;

/// Every problem found, in the order found. Start-up stops on any ([`Problems::into_result`]); the
/// doctor reports each as a failed check and goes on.
#[derive(Debug, Default)]
pub struct Problems(Vec<ConfigError>);

impl Problems {
    /// What `rules` need that is missing: a database (`has_database`) for a rule with a query, and
    /// a webhook among `webhooks` (the destinations that have one) for every destination.
    pub fn of_rules<T>(rules: &Rules, has_database: bool, webhooks: &BTreeMap<String, T>) -> Self {
        let mut problems = Problems::default();
        if !has_database && let Some(rule) = rules.iter().find(|r| r.query.is_some()) {
            problems.push(ConfigError::new(
                "OPSRELAY_DATABASE_URL",
                format!("is not set, and rule `{}` has a query", rule.name),
                "set it to the read replica's URL (postgres://, mysql:// or sqlite:), or the ARN of a secret holding it",
            ));
        }
        let mut missing: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for rule in rules.iter() {
            for name in rule
                .all_destinations()
                .filter(|d| !webhooks.contains_key(*d))
            {
                let used_by = missing.entry(name).or_default();
                if !used_by.contains(&rule.name.as_str()) {
                    used_by.push(&rule.name);
                }
            }
        }
        for (name, used_by) in missing {
            problems.push(ConfigError::new(
                name,
                format!("is not set, and rules {used_by:?} send to it"),
                "set it to the Slack webhook URL (or the ARN of a secret holding it), or change the rules' destinations",
            ));
        }
        problems
    }

    /// The DLQ URL, which the Lambda and the worker require.
    /// What the rules' sources need that is missing: the queue their rows go into, and where
    /// their cursors live.
    pub fn of_sources(rules: &Rules, poll: &PollSettings) -> Self {
        let mut problems = Problems::default();
        if rules.sources.is_empty() {
            return problems;
        }
        if poll.source_queue_url.is_none() {
            problems.push(ConfigError::new(
                "OPSRELAY_SOURCE_QUEUE_URL",
                "is not set, and the rules file has sources",
                "set it to the URL of the queue the relay reads: polled rows go there as events",
            ));
        }
        if poll.state_table.is_none() && poll.state_file.is_none() {
            problems.push(ConfigError::new(
                "OPSRELAY_STATE_TABLE",
                "is not set, and the rules file has sources",
                "set it to the DynamoDB table of the cursors (or OPSRELAY_STATE_FILE to a file, for a single poller)",
            ));
        }
        problems
    }

    pub fn of_dlq_url(dlq_url: Option<&str>) -> Self {
        let mut problems = Problems::default();
        if dlq_url.is_none() {
            problems.push(ConfigError::new(
                "OPSRELAY_DLQ_URL",
                "is not set",
                "set it to the URL of the dead-letter queue (the source queue's redrive target)",
            ));
        }
        problems
    }

    /// Adds `problem`, unless its variable has one already: the first found is the one to fix (a
    /// webhook that could not be read is not also "not set").
    pub fn push(&mut self, problem: ConfigError) {
        if self.0.iter().all(|p| p.variable != problem.variable) {
            self.0.push(problem);
        }
    }

    pub fn extend(&mut self, other: Problems) {
        for problem in other.0 {
            self.push(problem);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &ConfigError> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok` when there is none; else an error listing every problem, each with its fix.
    pub fn into_result(self) -> Result<(), ProblemsError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ProblemsError(self.0))
        }
    }
}

/// The configuration cannot serve the rules; each problem names the variable and the fix.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct ProblemsError(Vec<ConfigError>);

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules::parse(
            "rules.toml",
            "[rules.\"order.created\"]\nquery = \"SELECT 1 WHERE 1 = $1\"\ntext = \"x\"\ndestinations = [\"A\", \"B\"]\n[rules.\"order.paid\"]\ntext = \"y\"\ndestinations = [\"B\"]\n",
        )
        .unwrap()
    }

    #[test]
    fn a_variable_has_one_problem_the_first_found() {
        let mut problems = Problems::default();
        problems.push(ConfigError::new("B", "is not an https URL", "use https"));
        problems.extend(Problems::of_rules(
            &rules(),
            true,
            &BTreeMap::from([("A".to_string(), ())]),
        ));
        let texts: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(texts.len(), 1, "{texts:?}");
        assert!(texts[0].starts_with("B: is not an https URL"), "{texts:?}");
    }

    #[test]
    fn a_rule_with_a_query_needs_a_database_and_each_destination_a_webhook() {
        let webhooks = BTreeMap::from([("A".to_string(), ())]);
        let problems = Problems::of_rules(&rules(), false, &webhooks);
        let texts: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(texts.len(), 2, "{texts:?}");
        assert!(
            texts[0].starts_with(
                "OPSRELAY_DATABASE_URL: is not set, and rule `order.created` has a query"
            ),
            "{texts:?}"
        );
        assert!(
            texts[1].starts_with(
                "B: is not set, and rules [\"order.created\", \"order.paid\"] send to it"
            ),
            "{texts:?}"
        );
        let all = BTreeMap::from([("A".to_string(), ()), ("B".to_string(), ())]);
        assert!(Problems::of_rules(&rules(), true, &all).is_empty());
    }
}
