//! Helpers shared by the training tests.
#![allow(dead_code)] // each test binary uses its own share of the helpers

use std::path::Path;

use serde_json::Value;

/// metrics.jsonl without the fields that measure the machine's speed.
pub fn metrics_without_timing(run: &Path) -> Vec<Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| train::without_timing(serde_json::from_str(l).unwrap()))
        .collect()
}

/// summary.json without the fields that measure the machine's speed.
pub fn summary_without_timing(run: &Path) -> Value {
    train::without_timing(serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap())
}
