//! Evaluation results: a serialisable record per (model, dataset) and a Markdown table.

use std::fmt;
use std::path::Path;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, Result};

/// Named metric values in a fixed order (the order of the report columns).
///
/// In JSON this is an object; NaN (for example top-5 accuracy with fewer than 5 classes)
/// is written as `null` and read back as NaN.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics(Vec<(String, f64)>);

impl Metrics {
    /// No metrics.
    pub fn new() -> Self {
        Metrics(Vec::new())
    }

    /// Appends a metric, or replaces the value of one with the same name.
    pub fn push(&mut self, name: impl Into<String>, value: f64) {
        let name = name.into();
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 = value,
            None => self.0.push((name, value)),
        }
    }

    /// The value of a metric.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    /// (name, value) pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, f64)> {
        self.0.iter().map(|(n, v)| (n.as_str(), *v))
    }

    /// Number of metrics.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no metrics.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Metrics {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            let value = (!value.is_nan()).then_some(*value);
            map.serialize_entry(name, &value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Metrics {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_map(MetricsVisitor)
    }
}

struct MetricsVisitor;

impl<'de> Visitor<'de> for MetricsVisitor {
    type Value = Metrics;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of metric names to numbers or null")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> std::result::Result<Metrics, A::Error> {
        let mut metrics = Metrics::new();
        while let Some((name, value)) = access.next_entry::<String, Option<f64>>()? {
            metrics.push(name, value.unwrap_or(f64::NAN));
        }
        Ok(metrics)
    }
}

/// The kind of evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvalTask {
    /// Zero-shot image classification.
    ZeroShotClassification,
    /// Zero-shot image–text retrieval.
    ZeroShotRetrieval,
    /// Image captioning.
    Captioning,
    /// Classification by asking a chat model about each image (the class its answer names).
    ChatClassification,
}

/// The result of evaluating one model on one dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    /// Model name or path.
    pub model: String,
    /// Dataset name.
    pub dataset: String,
    /// What was evaluated.
    pub task: EvalTask,
    /// Number of evaluated images.
    pub num_samples: usize,
    /// Metric values as fractions (0.8318, not 83.18), under the reference tools' names.
    pub metrics: Metrics,
}

impl EvalResult {
    /// Pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("results always serialise")
    }

    /// Parses [`EvalResult::to_json`]'s output.
    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str(text)
            .map_err(|e| Error::InvalidArgument(format!("evaluation result JSON: {e}")))
    }

    /// Writes the JSON to `path`.
    pub fn save_json(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        std::fs::write(path, self.to_json() + "\n").map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// A Markdown table with one row per result and one column per metric name (in order of
/// first appearance). Values are shown ×100 with two decimals, as the InternVL READMEs
/// report them (accuracy and recall in percent, CIDEr 1.2818 as 128.18); a missing or NaN
/// value is shown as `-`.
pub fn markdown_table(results: &[EvalResult]) -> String {
    let mut columns: Vec<&str> = Vec::new();
    for (name, _) in results.iter().flat_map(|r| r.metrics.iter()) {
        if !columns.contains(&name) {
            columns.push(name);
        }
    }
    let mut lines = vec![
        table_row(
            ["model", "dataset"]
                .into_iter()
                .chain(columns.iter().copied()),
        ),
        table_row(
            ["---", "---"]
                .into_iter()
                .chain(columns.iter().map(|_| "---:")),
        ),
    ];
    for result in results {
        let values: Vec<String> = columns
            .iter()
            .map(|c| format_percent(result.metrics.get(c)))
            .collect();
        let cells = [result.model.as_str(), result.dataset.as_str()];
        lines.push(table_row(
            cells.into_iter().chain(values.iter().map(String::as_str)),
        ));
    }
    lines.join("\n") + "\n"
}

fn table_row<'a>(cells: impl Iterator<Item = &'a str>) -> String {
    let cells: Vec<String> = cells.map(|c| c.replace('|', "\\|")).collect();
    format!("| {} |", cells.join(" | "))
}

fn format_percent(value: Option<f64>) -> String {
    match value {
        Some(v) if !v.is_nan() => format!("{:.2}", v * 100.0),
        _ => "-".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_keep_order_and_round_trip_nan() {
        let mut m = Metrics::new();
        m.push("b", 0.5);
        m.push("a", f64::NAN);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"b":0.5,"a":null}"#);
        let back: Metrics = serde_json::from_str(&json).unwrap();
        assert_eq!(back.iter().map(|(n, _)| n).collect::<Vec<_>>(), ["b", "a"]);
        assert!(back.get("a").unwrap().is_nan());
    }
}
