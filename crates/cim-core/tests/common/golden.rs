//! The golden cases of an independent implementation of docs/SPEC.md section 1: their format
//! (../shared/golden/README.md) read into the layer configuration they describe.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use cim_core::{AdcInit, AdcWindow, CimConvConfig};
use serde::Deserialize;

use super::Dense;

/// One golden case (format in ../shared/golden/README.md).
#[derive(Debug, Clone, Deserialize)]
pub struct GoldenCase {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(deserialize_with = "golden_config")]
    pub config: CimConvConfig,
    pub input: Dense,
    pub weight: Dense,
    pub weight_scale: Dense,
    pub psum_scale: Dense,
    /// Given ADC offsets (the `adc-window/` cases).
    #[serde(default)]
    pub psum_offset: Option<Dense>,
    pub psums: Dense,
    pub expected_output: Dense,
}

/// A golden case's `config`, read as the layer configuration it describes: the format names
/// the kernel size `kernel` and marks a learned ADC window with `adc_window: true` (the
/// `adc-window/` cases, which give offsets); the cases' steps follow LSQ's init rule, so
/// `adc_init = lsq`. Every other field has the layer configuration's name and meaning.
fn golden_config<'de, D: serde::Deserializer<'de>>(d: D) -> Result<CimConvConfig, D::Error> {
    use serde::de::Error;
    let mut map = serde_json::Map::deserialize(d)?;
    let kernel = map.remove("kernel").ok_or_else(|| D::Error::missing_field("kernel"))?;
    map.insert("kernel_size".into(), kernel);
    let learned = map.remove("adc_window").and_then(|v| v.as_bool()).unwrap_or(false);
    let window = if learned { AdcWindow::Learned } else { AdcWindow::Zero };
    map.insert("adc_window".into(), window.name().into());
    map.insert("adc_init".into(), AdcInit::Lsq.name().into());
    serde_json::from_value(serde_json::Value::Object(map)).map_err(D::Error::custom)
}

/// The golden folder: `CIM_GOLDEN_DIR` when set, else ../shared/golden beside the checkout.
/// Its `adc-window/` subfolder holds the cases with given ADC windows.
pub fn golden_dir() -> PathBuf {
    match std::env::var_os("CIM_GOLDEN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/golden"),
    }
}

/// Every `*.json` case of the golden folder and of its `adc-window/` subfolder (which must
/// exist: a missing subfolder would silently skip the window cases).
pub fn read_all_cases(dir: &Path) -> Vec<(PathBuf, GoldenCase)> {
    let mut cases = read_cases(dir);
    cases.extend(read_cases(&dir.join("adc-window")));
    cases
}

/// Every `*.json` case of a folder, sorted by file name.
pub fn read_cases(dir: &Path) -> Vec<(PathBuf, GoldenCase)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read golden folder {}: {e} (set CIM_GOLDEN_DIR)", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let case: GoldenCase =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not a golden case: {e}", p.display()));
            (p, case)
        })
        .collect()
}
