//! Monte-Carlo robustness to memory-cell variation (docs/SPEC.md section 3): every simulated chip
//! draws a log-normal conductance multiplier for every cell of every CIM layer, fixed for the
//! whole evaluation; the trained parameters are never touched.

use std::path::Path;
use std::sync::Arc;

use burn::tensor::Device;
use cim_core::ComputeDevice;
use cim_core::variation::{cell_seed, lognormal_gains};
use data::DataDir;
use models::Model;
use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::eval::{evaluate, load_trained};
use crate::run::{RunDir, read_json, write_json};
use crate::setup::load_run_data;

/// Accuracy statistics over chips at one sigma.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SigmaResult {
    /// Standard deviation of theta.
    pub sigma: f64,
    /// Accuracy of every chip, in chip order.
    pub accuracies: Vec<f64>,
    /// Mean over chips.
    pub mean: f64,
    /// Sample standard deviation over chips (0 for one chip).
    pub std: f64,
    /// Worst chip.
    pub min: f64,
    /// Best chip.
    pub max: f64,
}

/// A variation study of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariationReport {
    /// Method of the run.
    pub method: String,
    /// Hash of the run's configuration.
    pub config_hash: String,
    /// Chips per sigma.
    pub chips: usize,
    /// First chip seed (chips use base_seed, base_seed + 1, ...).
    pub base_seed: u64,
    /// Test images per chip.
    pub images: usize,
    /// Accuracy without any variation (the trained model as is).
    pub noiseless: f64,
    /// One entry per sigma.
    pub results: Vec<SigmaResult>,
}

impl VariationReport {
    /// Whether this is the study of the run `config_hash` with these sigmas, chips, first chip
    /// seed and (if given) test images: a study asked again with the same settings is this one.
    pub fn covers(
        &self,
        config_hash: &str,
        sigmas: &[f64],
        chips: usize,
        base_seed: u64,
        limit_test: Option<usize>,
    ) -> bool {
        self.config_hash == config_hash
            && self.chips == chips
            && self.base_seed == base_seed
            && self.results.iter().map(|r| r.sigma).eq(sigmas.iter().copied())
            && limit_test.is_none_or(|n| n == self.images)
    }
}

impl SigmaResult {
    fn from_accuracies(sigma: f64, accuracies: Vec<f64>) -> Self {
        let n = accuracies.len() as f64;
        let mean = accuracies.iter().sum::<f64>() / n;
        let var = if accuracies.len() > 1 {
            accuracies.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / (n - 1.0)
        } else {
            0.0
        };
        let min = accuracies.iter().copied().fold(f64::INFINITY, f64::min);
        let max = accuracies.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Self { sigma, accuracies, mean, std: var.sqrt(), min, max }
    }
}

/// Gives every CIM layer of `model` the cell multipliers of simulated chip `chip` at `sigma`
/// (`sigma == 0` clears them: the exact, noiseless arrays).
pub fn program_chip(model: &mut Model, sigma: f64, chip: u64, device: &Device) {
    for (i, layer) in model.cim_layers_mut().into_iter().enumerate() {
        let gain = (sigma > 0.0).then(|| lognormal_gains(layer.cell_shape(), sigma, cell_seed(chip, i), device));
        layer.set_cell_gain(gain).expect("gains of the layer's own cell shape");
    }
}

/// Evaluates the run in `run_dir` on its test set for every sigma and chip; writes
/// `variation.json` into the run folder (and returns it). A report of the same sigmas and chips
/// already there is returned as is.
/// `limit_test` evaluates on a seeded, class-balanced subset of the run's test set.
pub fn variation_study(
    run_dir: &Path,
    sigmas: &[f64],
    chips: usize,
    base_seed: u64,
    limit_test: Option<usize>,
    data_dir: &DataDir,
    device: ComputeDevice,
) -> Result<VariationReport, TrainError> {
    if chips == 0 {
        return Err(TrainError::Config("--chips 0: expected at least 1 chip per sigma".into()));
    }
    if limit_test == Some(0) {
        return Err(TrainError::Config("--limit-test 0: expected at least 1 test image (or no limit)".into()));
    }
    if let Some(s) = sigmas.iter().find(|s| !(s.is_finite() && **s >= 0.0)) {
        return Err(TrainError::Config(format!("--sigmas: {s} is not a non-negative number")));
    }
    let dir = RunDir::new(run_dir);
    let path = run_dir.join("variation.json");
    let config = dir.read_config()?.ok_or_else(|| TrainError::file(dir.config_path(), "missing: not a run folder"))?;
    // an edited configuration is named as such before anything else is said of it
    if let Some(ckpt) = dir.latest_checkpoint()? {
        ckpt.check_config(&config, &dir.config_path())?;
    }
    if !config.uses_crossbar() {
        return Err(TrainError::Config(format!(
            "{}: a run of method {}, which has no arrays whose cells could vary; give a run of a CIM method",
            run_dir.display(),
            config.method
        )));
    }
    if let Some(existing) = read_json::<VariationReport>(&path)?
        && existing.covers(&config.hash(), sigmas, chips, base_seed, limit_test)
    {
        return Ok(existing);
    }
    let data = load_run_data(&config, data_dir)?;
    let test = match limit_test {
        Some(n) if n < data.test.len() => Arc::new(data.test.select(&data.test.balanced_subset(n, base_seed)?)),
        _ => data.test.clone(),
    };
    let test = &test;
    let device = device.open()?;
    let (mut model, _) = load_trained(run_dir, test.shape, test.classes.len(), &device)?;
    let noiseless = evaluate(&model, test, config.batch_size, &data.data.normalize, &device).accuracy;
    let mut results = Vec::new();
    for &sigma in sigmas {
        let accuracies = (0..chips as u64)
            .map(|c| {
                program_chip(&mut model, sigma, base_seed + c, &device);
                evaluate(&model, test, config.batch_size, &data.data.normalize, &device).accuracy
            })
            .collect();
        results.push(SigmaResult::from_accuracies(sigma, accuracies));
    }
    program_chip(&mut model, 0.0, 0, &device);
    let report = VariationReport {
        method: config.method.clone(),
        config_hash: config.hash(),
        chips,
        base_seed,
        images: test.len(),
        noiseless,
        results,
    };
    write_json(&path, &report)?;
    Ok(report)
}
