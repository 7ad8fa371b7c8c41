//! Where one event goes: its rule's routes, tried in order against the event and its row (decimals
//! as numbers, NULL as `none`). The first route whose `when` holds wins, unless it says `continue`;
//! a matching `drop` route stops there and adds nowhere (Alertmanager's null receiver: what earlier
//! continuing routes chose is still posted); with no route matching, the rule's destinations.

use minijinja::Value;

use crate::render::{RenderError, Templates};
use crate::rules::Rule;

/// One destination to post to, with the mention of the route that chose it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Post<'r> {
    pub destination: &'r str,
    pub mention: Option<&'r str>,
}

/// What the routes decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Routed<'r> {
    /// Post to these, each once, in order.
    Post(Vec<Post<'r>>),
    /// Acknowledge without posting: the place of the `drop` route that matched.
    Dropped(&'r str),
}

/// Decides where the event whose values are `context` goes by `rule`'s routes.
pub fn route<'r>(
    rule: &'r Rule,
    templates: &Templates,
    context: &Value,
) -> Result<Routed<'r>, RenderError> {
    let mut sends: Vec<Post<'r>> = Vec::new();
    let mut matched = None;
    for route in &rule.routes {
        if !templates.holds(&route.when, context)? {
            continue;
        }
        matched = Some(route);
        if route.drop {
            break;
        }
        for destination in &route.destinations {
            if sends.iter().all(|s| s.destination != destination) {
                let mention = route.mention.as_deref();
                sends.push(Post {
                    destination,
                    mention,
                });
            }
        }
        if !route.continues {
            break;
        }
    }
    match matched {
        None => Ok(Routed::Post(
            rule.destinations
                .iter()
                .map(|destination| Post {
                    destination,
                    mention: None,
                })
                .collect(),
        )),
        Some(last) if last.drop && sends.is_empty() => Ok(Routed::Dropped(&last.place)),
        Some(_) => Ok(Routed::Post(sends)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Rules;

    const RULES: &str = r#"
[defaults]
destinations = ["ALL"]
[rules."order.created"]
query = "SELECT total, note FROM orders WHERE id = $1"
text = "x"
[[rules."order.created".routes]]
when = "total > 1000"
destinations = ["BIG"]
mention = "<!here>"
continue = true
[[rules."order.created".routes]]
when = "note is none"
drop = true
[[rules."order.created".routes]]
when = "total > 100"
destinations = ["MID"]
"#;

    fn routed(total: f64, note: Option<&str>) -> Routed<'static> {
        let rules: &'static Rules = Box::leak(Box::new(Rules::parse("rules.toml", RULES).unwrap()));
        let rule = rules.get("order.created").unwrap();
        let context = minijinja::context! { total => total, note => note };
        route(rule, &rules.templates, &context).unwrap()
    }

    fn send(destination: &'static str, mention: Option<&'static str>) -> Post<'static> {
        Post {
            destination,
            mention,
        }
    }

    #[test]
    fn the_first_matching_route_wins() {
        assert_eq!(
            routed(500.0, Some("n")),
            Routed::Post(vec![send("MID", None)])
        );
    }

    #[test]
    fn a_continuing_route_also_tries_the_next() {
        assert_eq!(
            routed(5_000.0, Some("n")),
            Routed::Post(vec![send("BIG", Some("<!here>")), send("MID", None)])
        );
    }

    #[test]
    fn with_no_route_matching_the_rules_destinations() {
        assert_eq!(
            routed(10.0, Some("n")),
            Routed::Post(vec![send("ALL", None)])
        );
    }

    #[test]
    fn a_drop_route_acknowledges_without_posting_unless_an_earlier_route_chose() {
        assert_eq!(
            routed(10.0, None),
            Routed::Dropped("rules.\"order.created\".routes[1]")
        );
        assert_eq!(
            routed(5_000.0, None),
            Routed::Post(vec![send("BIG", Some("<!here>"))])
        );
    }
}
