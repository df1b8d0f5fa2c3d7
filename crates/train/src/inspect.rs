//! `inspect`: how well a trained run's ADCs and cells use their levels, per CIM layer,
//! polarity and slice, on test batches ([`cim_core::quality`]).

use std::path::Path;
use std::sync::Arc;

use burn::tensor::{Tensor, TensorData};
use cim_core::ComputeDevice;
use data::{BatchLoader, DataDir, EpochBatches};
use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::eval::load_trained;
use crate::run::{RunDir, read_json, write_atomic, write_json};
use crate::setup::load_run_data;

/// Test batches inspected when not told otherwise.
pub const DEFAULT_INSPECT_BATCHES: usize = 8;

/// One ADC (polarity, slice) of one CIM layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdcQualityRow {
    /// CIM layer, in forward order (0-based).
    pub layer: usize,
    /// Its shape, `C_in->C_out sS`.
    pub shape: String,
    /// 0, or 1 for the w- arrays of `differential`.
    pub polarity: usize,
    /// Bit slice (0 = most significant).
    pub slice: usize,
    /// ADC SQNR in dB (signal p, noise p - p_q); `None` when the ADC was exact.
    pub sqnr_db: Option<f64>,
    /// ADC SQNR of the spread in dB (signal p - its column's mean); `None` when exact (or in
    /// reports written before it existed).
    #[serde(default)]
    pub spread_sqnr_db: Option<f64>,
    /// Share of partial sums clipped below the window.
    pub clipped_low: f64,
    /// Share clipped above it.
    pub clipped_high: f64,
    /// Entropy of the ADC codes produced, in bits.
    pub code_entropy_bits: f64,
    /// Codes produced at least once, of `codes`.
    pub codes_used: usize,
    /// Codes of the ADC (2^P).
    pub codes: usize,
    /// Share of cells at each digit level, lowest level first.
    pub digit_shares: Vec<f64>,
    /// The lowest digit level.
    pub digit_low: i64,
}

/// What `inspect` measured for a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdcQualityReport {
    /// The run's method.
    pub method: String,
    /// Hash of the run's config (a stale report of another config is not used).
    pub config_hash: String,
    /// Test images the statistics cover.
    pub images: usize,
    /// One row per (layer, polarity, slice).
    pub rows: Vec<AdcQualityRow>,
}

impl AdcQualityReport {
    /// One SQNR of every ADC row, sorted ascending (exact ADCs count as +infinity).
    fn sorted(&self, sqnr: fn(&AdcQualityRow) -> Option<f64>) -> Vec<f64> {
        let mut v: Vec<f64> = self.rows.iter().map(|r| sqnr(r).unwrap_or(f64::INFINITY)).collect();
        v.sort_by(f64::total_cmp);
        v
    }

    /// Median ADC SQNR over every (layer, polarity, slice), in dB (lower middle for even counts).
    pub fn median_sqnr_db(&self) -> Option<f64> {
        median(&self.sorted(|r| r.sqnr_db))
    }

    /// The worst ADC SQNR, in dB.
    pub fn worst_sqnr_db(&self) -> Option<f64> {
        self.sorted(|r| r.sqnr_db).first().copied()
    }

    /// Median SQNR of the spread around each column's mean, in dB (`None` if not measured).
    pub fn median_spread_sqnr_db(&self) -> Option<f64> {
        let measured = self.rows.iter().all(|r| r.spread_sqnr_db.is_some() || r.sqnr_db.is_none());
        if measured { median(&self.sorted(|r| r.spread_sqnr_db)) } else { None }
    }

    /// The rows as CSV.
    pub fn csv(&self) -> String {
        let mut s = String::from(
            "layer,shape,polarity,slice,sqnr_db,spread_sqnr_db,clipped_low,clipped_high,code_entropy_bits,codes_used,codes,digit_low,digit_shares\n",
        );
        for r in &self.rows {
            let shares: Vec<String> = r.digit_shares.iter().map(|x| format!("{x:.6}")).collect();
            s += &format!(
                "{},{},{},{},{},{},{:.6},{:.6},{:.6},{},{},{},{}\n",
                r.layer,
                r.shape,
                r.polarity,
                r.slice,
                db(r.sqnr_db),
                db(r.spread_sqnr_db),
                r.clipped_low,
                r.clipped_high,
                r.code_entropy_bits,
                r.codes_used,
                r.codes,
                r.digit_low,
                shares.join(" ")
            );
        }
        s
    }
}

fn median(sorted: &[f64]) -> Option<f64> {
    (!sorted.is_empty()).then(|| sorted[(sorted.len() - 1) / 2])
}

fn db(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.4}")).unwrap_or_else(|| "inf".into())
}

/// Inspects the trained run in `run_dir` on `batches` test batches of its own test split; writes
/// `adc-quality.json` and `adc-quality.csv` into the run folder. Reuses a report of the same
/// config and image count.
pub fn inspect_run(
    run_dir: &Path,
    batches: usize,
    data_dir: &DataDir,
    device: ComputeDevice,
) -> Result<AdcQualityReport, TrainError> {
    if batches == 0 {
        return Err(TrainError::Config("--batches 0: expected at least 1 test batch".into()));
    }
    let dir = RunDir::new(run_dir);
    let config = dir.read_config()?.ok_or_else(|| TrainError::file(dir.config_path(), "missing: not a run folder"))?;
    if !config.uses_adc() {
        return Err(TrainError::Config(format!(
            "{}: method {} has no ADC to inspect (an ideal ADC or floating point)",
            run_dir.display(),
            config.method
        )));
    }
    let data = load_run_data(&config, data_dir)?;
    let images = (batches * config.batch_size).min(data.test.len());
    let path = run_dir.join("adc-quality.json");
    if let Some(existing) = read_json::<AdcQualityReport>(&path)?
        && existing.config_hash == config.hash()
        && existing.images == images
        && existing.rows.iter().all(|r| r.spread_sqnr_db.is_some() || r.sqnr_db.is_none())
    {
        return Ok(existing);
    }
    let test = Arc::new(data.test.select(&(0..images).collect::<Vec<_>>()));
    let device = device.open()?;
    let (model, _) = load_trained(run_dir, test.shape, test.classes.len(), &device)?;
    let layers = model.cim_layers();
    layers.iter().for_each(|l| l.arm_adc_inspection());
    let indices: Vec<usize> = (0..test.len()).collect();
    let loader = BatchLoader::new(
        test.clone(),
        &indices,
        EpochBatches::in_order(config.batch_size, data.data.normalize.clone()),
    );
    for batch in loader {
        let x = Tensor::<4>::from_data(TensorData::new(batch.images, batch.shape), &device);
        let _ = model.forward(x);
    }
    let mut rows = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let stats = layer.take_adc_quality().expect("armed above");
        let digits = layer.digit_shares();
        let cfg = layer.config();
        let shape = cfg.shape_label();
        for (st, d) in stats.iter().zip(&digits) {
            rows.push(AdcQualityRow {
                layer: i,
                shape: shape.clone(),
                polarity: st.polarity,
                slice: st.slice,
                sqnr_db: (st.noise > 0.0).then(|| st.sqnr_db()),
                spread_sqnr_db: (st.noise > 0.0).then(|| st.spread_sqnr_db()),
                clipped_low: st.clipped_low_share(),
                clipped_high: st.clipped_high_share(),
                code_entropy_bits: st.code_entropy_bits(),
                codes_used: st.codes_used(),
                codes: st.code_counts.len(),
                digit_shares: d.shares.clone(),
                digit_low: d.low_level,
            });
        }
    }
    let report = AdcQualityReport { method: config.method.clone(), config_hash: config.hash(), images, rows };
    write_atomic(&run_dir.join("adc-quality.csv"), report.csv().as_bytes())?;
    write_json(&path, &report)?;
    Ok(report)
}
