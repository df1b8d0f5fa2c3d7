//! Evaluation of a model, and of a run on any data set of the same image shape: a finished run's
//! final model, or the newest checkpoint of one still training (the caller says which it was);
//! a failed run is refused.

use std::path::Path;
use std::sync::Arc;

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device, Tensor, TensorData};
use cim_core::ComputeDevice;
use data::source::Holdout;
use data::{BatchLoader, DataDir, EpochBatches, ImageSet, Normalize};
use models::Model;
use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::config::{ResolvedRun, RunConfig};
use crate::run::{Checkpoint, RunDir, write_json};
use crate::setup::build_model;

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

/// The summed cross-entropy and the number of correct predictions of one batch, computed on the
/// host in f64 in sample order from the logits `[batch, classes]` (row-major): the logged losses
/// then never depend on the order of a backend's parallel reduction, so identical runs log
/// identical numbers. A non-finite logit gives a non-finite loss.
pub fn batch_loss(logits: &[f32], labels: &[i64]) -> (f64, usize) {
    let batch = labels.len();
    let classes = logits.len() / batch.max(1);
    let (mut loss, mut correct) = (0f64, 0usize);
    for (row, &label) in logits.chunks_exact(classes).zip(labels) {
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let log_sum = row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
        loss += log_sum - row[label as usize] as f64;
        if row.iter().any(|v| v.is_nan()) {
            loss = f64::NAN;
        }
        // the first of equal maxima, as argmax
        let best = row.iter().enumerate().fold(0, |b, (i, &v)| if v > row[b] { i } else { b });
        correct += usize::from(best == label as usize);
    }
    (loss, correct)
}

/// The model's classes in output order, as the data set `spec` names them (a folder tree's
/// class folders name the model's classes, `/` written `_`), after checking that `spec` has
/// exactly those classes: the run's recorded names, or, for a run from before they were
/// recorded, those of its own data set.
fn matched_classes(run_dir: &Path, config: &RunConfig, spec: &str) -> Result<Vec<String>, TrainError> {
    let recorded = RunDir::new(run_dir).read_summary()?.map(|s| s.classes).unwrap_or_default();
    let model_classes = if recorded.is_empty() {
        data::source::class_names(&config.dataset).map_err(|e| {
            TrainError::Config(format!(
                "{}: the run records no class names (trained before they were recorded) and its own data set \
                 {} cannot be listed to find them ({e}); evaluate it where that data set is",
                run_dir.display(),
                config.dataset
            ))
        })?
    } else {
        recorded
    };
    let tree = data::source::class_names(spec)?;
    let folder = spec.starts_with(data::source::FOLDER_PREFIX);
    let named: Vec<String> =
        model_classes.iter().map(|c| if folder { data::source::class_folder_name(c) } else { c.clone() }).collect();
    let missing: Vec<&str> = named.iter().filter(|c| !tree.contains(c)).map(String::as_str).collect();
    let unknown: Vec<&str> = tree.iter().filter(|c| !named.contains(c)).map(String::as_str).collect();
    if !missing.is_empty() || !unknown.is_empty() {
        let list = |v: &[&str]| if v.is_empty() { "none".to_string() } else { v.join(", ") };
        return Err(TrainError::Config(format!(
            "--dataset {spec}: its {} classes are not the model's {} (matched by name{}): missing {}; unknown {}",
            tree.len(),
            named.len(),
            if folder { ", a class's folder named as the class with '/' written '_'" } else { "" },
            list(&missing),
            list(&unknown)
        )));
    }
    Ok(named)
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
    let indices: Vec<usize> = (0..set.len()).collect();
    let loader = BatchLoader::new(set.clone(), &indices, EpochBatches::in_order(batch_size.max(1), norm.clone()));
    let (mut loss, mut correct, mut seen) = (0f64, 0usize, 0usize);
    for batch in loader {
        let x = Tensor::<4>::from_data(TensorData::new(batch.images, batch.shape), device);
        let logits = model.forward(x).into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 logits");
        let (l, c) = batch_loss(&logits, &batch.labels);
        loss += l;
        correct += c;
        seen += batch.labels.len();
    }
    EvalResult { loss: loss / seen.max(1) as f64, accuracy: correct as f64 / seen.max(1) as f64, images: seen }
}

/// The trained model of a run folder (its newest checkpoint, verified against its checksums and
/// against the folder's `config.toml`), in evaluation mode on `device`.
pub fn load_trained(
    run_dir: &Path,
    shape: [usize; 3],
    classes: usize,
    device: &Device,
) -> Result<(Model, ResolvedRun), TrainError> {
    let dir = RunDir::new(run_dir);
    let config = dir
        .read_config()?
        .ok_or_else(|| TrainError::file(dir.config_path(), "missing: not a run folder (train into it first)"))?;
    let run = config.resolve()?;
    let ckpt = dir
        .latest_checkpoint()?
        .ok_or_else(|| TrainError::file(dir.pointer_path(), "missing: the run has no checkpoint yet"))?;
    ckpt.check_config(&config, &dir.config_path())?;
    let model = build_model(&run, shape, classes, device)?;
    let model = load_model_record(model, &ckpt)?;
    Ok((model.valid(), run))
}

/// Loads the verified `model.bpk` of a checkpoint into `model`.
pub(crate) fn load_model_record(model: Model, ckpt: &Checkpoint) -> Result<Model, TrainError> {
    let path = ckpt.dir.join("model.bpk");
    let bytes = ckpt.read_verified("model.bpk")?;
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes))
        .map_err(|e| TrainError::file(&path, format!("{e:?}")))?;
    model.try_load_record(record).map_err(|e| TrainError::file(&path, format!("{e:?}")))
}

/// Refuses a data set `spec` whose images would reach the run's model in another shape than its
/// own data's (a ResNet-18 run at 64 pixels on 32 x 32 images, a grey tree for a colour run), when
/// the run's own data can still be read to tell; the run's `resolution` applies to both.
fn check_input_shape(run_dir: &Path, config: &RunConfig, spec: &str) -> Result<(), TrainError> {
    let other = data::source::input_shape(spec, config.resolution)?;
    let own = match data::source::input_shape(&config.dataset, config.resolution) {
        Ok(own) => own,
        // the run's own data is not here (a committed run): its resolution still says the size
        Err(_) => match config.resolution {
            Some(side) => [other[0], side as usize, side as usize],
            None => return Ok(()),
        },
    };
    if own != other {
        return Err(TrainError::Config(format!(
            "{}: the run was trained on images of {own:?} ([channels, height, width]); {spec} gives {other:?}",
            run_dir.display()
        )));
    }
    Ok(())
}

/// Which data an evaluation reads and how: the spec, whether it is the run's own data, the
/// test split's holdout, and (for another data set) the model's classes, by name, in the model's
/// order.
struct EvalSource {
    spec: String,
    own: bool,
    holdout: Holdout,
    classes: Option<Vec<String>>,
}

/// The [`EvalSource`] of an `eval` of the run in `run_dir` (configured as `config`), every check
/// made before any image is read.
fn eval_source(
    run_dir: &Path,
    config: &RunConfig,
    dataset: Option<&str>,
    folder_holdout: Option<Holdout>,
) -> Result<EvalSource, TrainError> {
    // the run's own data: no --dataset, the same spec, or a tree with the run's content identity
    // (a committed run names its tree by the study's input, the user by its path here)
    let same_tree = |d: &str| {
        d.starts_with(data::source::FOLDER_PREFIX)
            && config.dataset_id.as_deref().is_some_and(|id| data::source::check_folder_identity(d, id).is_ok())
    };
    let identified = dataset.is_some_and(|d| d != config.dataset && same_tree(d));
    let own = identified || dataset.is_none_or(|d| d == config.dataset);
    let holdout = folder_holdout.unwrap_or(Holdout::PerClass(config.folder_holdout));
    if own && holdout != Holdout::PerClass(config.folder_holdout) {
        return Err(TrainError::Config(format!(
            "--folder-holdout {}: the run's own data set is split with folder_holdout = {}; give \
             --dataset to evaluate on another split",
            match holdout {
                Holdout::PerClass(n) => n.to_string(),
                Holdout::All => "all".into(),
            },
            config.folder_holdout
        )));
    }
    if holdout == Holdout::PerClass(0) {
        return Err(TrainError::Config(
            "--folder-holdout 0: expected at least 1 image per class (or `all`: every image)".into(),
        ));
    }
    let spec = dataset.unwrap_or(&config.dataset);
    // a committed run names its data by the study's input, not by a path of the machine that
    // trained it
    if own && let Some((_, rest)) = spec.split_once('{') {
        let input = rest.split('}').next().unwrap_or(rest);
        return Err(TrainError::Config(format!(
            "{}: the run names its data by the study input `{input}` (content identity {}): give --dataset \
             folder:DIR, a tree of that data (its test split is held out as the run's was) or any tree with the \
             run's classes",
            run_dir.display(),
            config.dataset_id.as_deref().unwrap_or("unknown")
        )));
    }
    // (a tree taken as the run's own by its identity has just been hashed: not again)
    if let (true, false, Some(id)) = (own, identified, &config.dataset_id) {
        data::source::check_folder_identity(spec, id)?;
    }
    // another data set's classes are matched to the model's by name, checked before any image
    // is read
    let classes = if own { None } else { Some(matched_classes(run_dir, config, spec)?) };
    if !own {
        check_input_shape(run_dir, config, spec)?;
    }
    Ok(EvalSource { spec: spec.to_string(), own, holdout, classes })
}

/// The name of the record an `eval` on `spec` writes: a folder tree by its content, not by where
/// it lies on this machine; any other data set by its name.
fn record_name(spec: &str, loaded_name: &str) -> Result<String, TrainError> {
    let name = match spec.strip_prefix(data::source::FOLDER_PREFIX) {
        Some(root) => format!("folder-{}", data::source::folder_identity(Path::new(root), "tree")?),
        None => loaded_name.to_string(),
    };
    Ok(name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect())
}

/// How the records `eval` writes into a run folder begin (`eval-<data set>.json`): the user's
/// own outputs beside a run, which no report reads or archives.
pub const EVAL_RECORD_PREFIX: &str = "eval-";

/// Evaluates the run in `run_dir` on the test split of `dataset` (default: the run's own, with
/// its `limit_test`); writes `eval-<dataset>.json` into the run folder. `folder_holdout` is the
/// test split of another `folder:` data set without its own (default: the run's own setting;
/// [`data::source::Holdout::All`] for a tree of test images only). Another data set must give
/// images of the shape the run trained on (at the run's `resolution`, never enlarged), and its
/// classes are matched to the run's by name; both are checked before any image is decoded.
pub fn evaluate_run(
    run_dir: &Path,
    dataset: Option<&str>,
    folder_holdout: Option<Holdout>,
    data_dir: &DataDir,
    device: ComputeDevice,
) -> Result<EvalResult, TrainError> {
    let config: RunConfig = RunDir::new(run_dir)
        .read_config()?
        .ok_or_else(|| TrainError::file(run_dir.join("config.toml"), "missing: not a run folder"))?;
    // a run stopped by non-finite values has no model worth a number
    if let Some(failure) = RunDir::new(run_dir).read_failure()? {
        return Err(TrainError::Config(format!(
            "{}: the run failed ({}); eval takes finished runs, or the newest checkpoint of one still training",
            run_dir.display(),
            failure.message
        )));
    }
    let EvalSource { spec, own, holdout, classes } = eval_source(run_dir, &config, dataset, folder_holdout)?;
    let spec = spec.as_str();
    let folder = data::source::FolderOptions { holdout, resolution: config.resolution };
    let loaded = data::load_dataset(spec, data_dir, folder)?;
    let test = match (own, config.limit_test) {
        (true, Some(n)) => loaded.test.select(&loaded.test.balanced_subset(n, config.seed.wrapping_add(1))?),
        _ => loaded.test.clone(),
    };
    let test = match &classes {
        Some(classes) => test.relabel(classes)?,
        None => test,
    };
    let device = device.open()?;
    let (model, _) = load_trained(run_dir, test.shape, test.classes.len(), &device)?;
    let result = evaluate(&model, &Arc::new(test), config.batch_size, &loaded.normalize, &device);
    if !result.loss.is_finite() {
        return Err(TrainError::Config(format!(
            "{}: the model gives a non-finite test loss ({}) on {}; nothing was written",
            run_dir.display(),
            result.loss,
            loaded.name
        )));
    }
    write_json(&run_dir.join(format!("{EVAL_RECORD_PREFIX}{}.json", record_name(spec, &loaded.name)?)), &result)?;
    Ok(result)
}
