//! Helpers shared by the training tests.

use std::path::Path;

use serde_json::Value;

/// metrics.jsonl without the fields that measure the machine's speed.
pub fn metrics_without_timing(run: &Path) -> Vec<Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            for f in train::EpochRecord::TIMING_FIELDS {
                v.as_object_mut().unwrap().remove(f);
            }
            v
        })
        .collect()
}
