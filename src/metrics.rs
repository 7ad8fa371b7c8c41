//! Metrics of our own as CloudWatch Embedded Metric Format: one JSON line on standard output, which
//! Lambda's log stream turns into metrics with no API call. A line holds one value per dimension
//! (so one line per rule, and per rule and code), at most 100 metrics; an empty dimension set
//! publishes the same values without dimensions, which CloudWatch sums over the lines.

use std::time::SystemTime;

use serde_json::{Map, Value, json};

/// The namespace of every opsrelay metric.
pub const NAMESPACE: &str = "opsrelay";

/// A metric's unit, as CloudWatch names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

/// One EMF document: its dimensions and their values, then its metrics and their values.
#[derive(Clone, Debug)]
pub struct Emf {
    timestamp_ms: u64,
    dimensions: Vec<(String, String)>,
    metrics: Vec<(String, Unit, Value)>,
    /// Also published without dimensions (all rules together), for alarms and totals.
    rollup: bool,
}

impl Emf {
    /// A document stamped `at`.
    pub fn new(at: SystemTime) -> Self {
        let timestamp_ms = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Emf {
            timestamp_ms,
            dimensions: Vec::new(),
            metrics: Vec::new(),
            rollup: false,
        }
    }

    pub fn dimension(mut self, name: &str, value: &str) -> Self {
        self.dimensions.push((name.into(), value.into()));
        self
    }

    /// Publishes the metrics without dimensions too (an empty dimension set), summed over the values
    /// of every line: what an alarm on all rules reads.
    pub fn rollup(mut self) -> Self {
        self.rollup = true;
        self
    }

    /// A metric with one value.
    pub fn value(mut self, name: &str, unit: Unit, value: u64) -> Self {
        self.metrics.push((name.into(), unit, json!(value)));
        self
    }

    /// A metric with several values (CloudWatch keeps each, for percentiles); none is left out.
    pub fn values(mut self, name: &str, unit: Unit, values: &[u64]) -> Self {
        if !values.is_empty() {
            self.metrics.push((name.into(), unit, json!(values)));
        }
        self
    }

    /// The JSON line.
    pub fn line(&self) -> String {
        let names: Vec<&str> = self.dimensions.iter().map(|(n, _)| n.as_str()).collect();
        let mut sets = vec![names];
        if self.rollup {
            sets.push(Vec::new());
        }
        let definitions: Vec<Value> = self
            .metrics
            .iter()
            .map(|(name, unit, _)| json!({"Name": name, "Unit": unit.as_str()}))
            .collect();
        let mut document = Map::new();
        document.insert(
            "_aws".into(),
            json!({
                "Timestamp": self.timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": sets,
                    "Metrics": definitions,
                }],
            }),
        );
        for (name, value) in &self.dimensions {
            document.insert(name.clone(), json!(value));
        }
        for (name, _, value) in &self.metrics {
            document.insert(name.clone(), value.clone());
        }
        Value::Object(document).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_names_its_dimensions_and_metrics_and_holds_their_values() {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700);
        let line = Emf::new(at)
            .dimension("Rule", "order.created")
            .rollup()
            .value("Delivered", Unit::Count, 3)
            .values("EventAge", Unit::Milliseconds, &[120, 90])
            .values("Empty", Unit::Milliseconds, &[])
            .line();
        let document: Value = serde_json::from_str(&line).unwrap();
        let directive = &document["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(document["_aws"]["Timestamp"], 1_700);
        assert_eq!(directive["Namespace"], NAMESPACE);
        assert_eq!(directive["Dimensions"], json!([["Rule"], []]));
        assert_eq!(
            directive["Metrics"],
            json!([{"Name": "Delivered", "Unit": "Count"}, {"Name": "EventAge", "Unit": "Milliseconds"}])
        );
        assert_eq!(document["Rule"], "order.created");
        assert_eq!(document["Delivered"], 3);
        assert_eq!(document["EventAge"], json!([120, 90]));
        assert!(document.get("Empty").is_none());
    }
}
