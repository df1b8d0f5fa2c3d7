//! Evaluation of a model, and of a finished (or checkpointed) run on any data set of the same
//! image shape.

use std::path::Path;
use std::sync::Arc;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device, Int, Tensor, TensorData};
use data::{BatchLoader, DataDir, ImageSet, Normalize};
use models::Model;
use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::config::{ResolvedRun, RunConfig};
use crate::run::{RunDir, write_json};
use crate::trainer::build_model;

/// Loss and accuracy on a set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    /// Mean cross-entropy.
    pub loss: f64,
    /// Fraction classified correctly.
    pub accuracy: f64,
    /// Images evaluated.
    pub images: usize,
}

/// Evaluates a model (in evaluation mode: running batch-norm statistics, no training noise) on
/// every image of `set`, on `device`.
pub fn evaluate(
    model: &Model,
    set: &Arc<ImageSet>,
    batch_size: usize,
    norm: &Normalize,
    device: &Device,
) -> EvalResult {
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    let indices: Vec<usize> = (0..set.len()).collect();
    let loader = BatchLoader::new(set.clone(), &indices, batch_size.max(1), false, false, None, norm.clone(), 0, 0);
    let (mut loss, mut correct, mut seen) = (0f64, 0i64, 0usize);
    for batch in loader {
        let b = batch.labels.len();
        let x = Tensor::<4>::from_data(TensorData::new(batch.images, batch.shape), device);
        let y = Tensor::<1, Int>::from_data(TensorData::new(batch.labels, [b]), device);
        let logits = model.forward(x);
        loss += loss_fn.forward(logits.clone(), y.clone()).into_scalar::<f32>() as f64 * b as f64;
        correct += logits.argmax(1).flatten::<1>(0, 1).equal(y).int().sum().into_scalar::<i64>();
        seen += b;
    }
    EvalResult { loss: loss / seen.max(1) as f64, accuracy: correct as f64 / seen.max(1) as f64, images: seen }
}

/// The trained model of a run folder (its newest checkpoint), in evaluation mode on Flex.
pub fn load_trained(run_dir: &Path, shape: [usize; 3], classes: usize) -> Result<(Model, ResolvedRun), TrainError> {
    let dir = RunDir::new(run_dir);
    let config = dir
        .read_config()?
        .ok_or_else(|| TrainError::io(dir.config_path(), "missing: not a run folder (train into it first)"))?;
    let run = config.resolve()?;
    let (_, ckpt) = dir
        .latest_checkpoint()?
        .ok_or_else(|| TrainError::io(dir.pointer_path(), "missing: the run has no checkpoint yet"))?;
    let device = Device::flex();
    let model = build_model(&run, shape, classes, &device)?;
    let path = ckpt.join("model.bpk");
    let bytes = std::fs::read(&path).map_err(|e| TrainError::io(&path, e))?;
    let record =
        ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes)).map_err(|e| TrainError::io(&path, format!("{e:?}")))?;
    let model = model.try_load_record(record).map_err(|e| TrainError::io(&path, format!("{e:?}")))?;
    Ok((model.valid(), run))
}

/// Evaluates the run in `run_dir` on the test split of `dataset` (default: the run's own, with
/// its `limit_test`); writes `eval-<dataset>.json` into the run folder.
pub fn evaluate_run(run_dir: &Path, dataset: Option<&str>, data_dir: &DataDir) -> Result<EvalResult, TrainError> {
    let config: RunConfig = RunDir::new(run_dir)
        .read_config()?
        .ok_or_else(|| TrainError::io(run_dir.join("config.toml"), "missing: not a run folder"))?;
    let own = dataset.is_none_or(|d| d == config.dataset);
    let spec = dataset.unwrap_or(&config.dataset);
    let loaded = data::load_dataset(spec, data_dir, config.folder_holdout)?;
    let test = match (own, config.limit_test) {
        (true, Some(n)) => loaded.test.select(&loaded.test.balanced_subset(n, config.seed.wrapping_add(1))?),
        _ => loaded.test.clone(),
    };
    let (model, _) = load_trained(run_dir, test.shape, test.classes.len())?;
    let result = evaluate(&model, &Arc::new(test), config.batch_size, &loaded.normalize, &Device::flex());
    let name: String =
        loaded.name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    write_json(&run_dir.join(format!("eval-{name}.json")), &result)?;
    Ok(result)
}
