//! The training loop.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, ModuleOptimizer, OptimizerRecord, SgdConfig};
use burn::tensor::{Bytes, Device, Int, Tensor, TensorData};
use cim_core::ComputeDevice;
use data::{BatchLoader, DataDir, EpochBatches, ImageSet, LoadedData};
use indicatif::{ProgressBar, ProgressStyle};
use models::Model;

use crate::claim::ClaimOutcome;
use crate::config::{ResolvedRun, RunConfig};
use crate::eval::{batch_loss, evaluate, load_model_record};
use crate::hooks::TrainingHooks;
use crate::init::StartingPoint;
use crate::run::{
    CheckpointState, EpochRecord, FailureRecord, RunDir, StartRecord, Summary, metrics_lines, write_atomic, write_json,
};
use crate::{CODE_VERSION, TrainError};

/// How to run.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Where data sets live.
    pub data_dir: DataDir,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Stop after this many epochs in this invocation (the run stays resumable); for tests and for
    /// splitting long runs.
    pub stop_after: Option<usize>,
    /// Where to train: not part of the run's identity (the same cell on either device is the same
    /// experiment), so it lives here and not in the run's configuration.
    pub device: ComputeDevice,
    /// The folder of the finished run whose final weights the run starts from: the run's
    /// `init_from` names its config hash, and the folder is checked against it (where the run
    /// lives is not part of its identity, so it is given here).
    pub init_from: Option<std::path::PathBuf>,
}

/// The training data of a run: both splits after the configured limits.
pub struct RunData {
    /// Loaded data set.
    pub data: LoadedData,
    /// Training images.
    pub train: Arc<ImageSet>,
    /// Test images.
    pub test: Arc<ImageSet>,
    /// Where `test` lies in the data set's test split, when `limit_test` took a subset.
    pub test_indices: Option<Vec<usize>>,
}

impl RunData {
    /// The test images of the data set that the run's test subset left out (`None` when the
    /// run tests on all of them): images no choice made on the run's own test images has seen.
    pub fn unseen_test(&self) -> Option<ImageSet> {
        let taken: std::collections::HashSet<usize> = self.test_indices.as_ref()?.iter().copied().collect();
        let rest: Vec<usize> = (0..self.data.test.len()).filter(|i| !taken.contains(i)).collect();
        (!rest.is_empty()).then(|| self.data.test.select(&rest))
    }
}

/// Loads the data of a configuration, applying `limit_train` and `limit_test` as seeded,
/// class-balanced subsets.
pub fn load_run_data(config: &RunConfig, dir: &DataDir) -> Result<RunData, TrainError> {
    if let Some(id) = &config.dataset_id {
        data::source::check_folder_identity(&config.dataset, id)?;
    }
    let folder = data::source::FolderOptions {
        holdout: data::source::Holdout::PerClass(config.folder_holdout),
        resolution: config.resolution,
    };
    let data = data::load_dataset(&config.dataset, dir, folder)?;
    let subset =
        |set: &ImageSet, limit: Option<usize>, seed: u64, field: &str| -> Result<Option<Vec<usize>>, TrainError> {
            match limit {
                Some(n) if n > set.len() => Err(TrainError::Config(format!(
                    "{field} = {n} (--{}): the {} split of {} has only {} images",
                    field.replace('_', "-"),
                    if field == "limit_train" { "training" } else { "test" },
                    data.name,
                    set.len()
                ))),
                Some(n) => Ok(Some(set.balanced_subset(n, seed)?)),
                None => Ok(None),
            }
        };
    let select = |set: &ImageSet, indices: &Option<Vec<usize>>| match indices {
        Some(i) => set.select(i),
        None => set.clone(),
    };
    let train = Arc::new(select(&data.train, &subset(&data.train, config.limit_train, config.seed, "limit_train")?));
    let test_indices = subset(&data.test, config.limit_test, config.seed.wrapping_add(1), "limit_test")?;
    let test = Arc::new(select(&data.test, &test_indices));
    Ok(RunData { data, train, test, test_indices })
}

/// The device runs train on, with autodiff.
pub fn training_device(device: ComputeDevice) -> Result<Device, TrainError> {
    Ok(device.open()?.autodiff())
}

/// Builds the model of a resolved run for a data set's images.
pub fn build_model(run: &ResolvedRun, shape: [usize; 3], classes: usize, device: &Device) -> Result<Model, TrainError> {
    let [c, h, w] = shape;
    if h < 8 || w < 8 {
        return Err(TrainError::Config(format!(
            "images of {h}x{w} pixels are too small for {}: at least 8x8",
            run.config.model.name()
        )));
    }
    Model::new(run.config.model, c, classes, &run.conv, run.config.seed, device)
        .map_err(|e| TrainError::Config(e.to_string()))
}

/// SGD with momentum (no dampening, as PyTorch) and weight decay, as the run configures it.
pub fn optimizer(config: &RunConfig) -> ModuleOptimizer {
    SgdConfig::new()
        .with_momentum(Some(MomentumConfig::new().with_momentum(config.momentum).with_dampening(0.0)))
        .with_weight_decay((config.weight_decay > 0.0).then(|| WeightDecayConfig::new(config.weight_decay as f32)))
        .init()
}

/// Trains (or resumes, or just reports) the run of `config` in `out`. Returns the summary, or
/// `None` when `stop_after` ended this invocation first. Everything is checked before anything is
/// written: the folder is new, empty or a run of the same configuration, the data loads and fits
/// the model, and a checkpoint to resume matches its checksums and the configuration.
pub fn train(config: &RunConfig, out: &Path, opts: &TrainOptions) -> Result<Option<Summary>, TrainError> {
    let run = config.resolve()?;
    if opts.stop_after == Some(0) {
        return Err(TrainError::Config(
            "--stop-after 0: expected at least 1 epoch (leave it out to train to the end)".into(),
        ));
    }
    let dir = RunDir::new(out);
    let created = !out.exists();
    if created {
        dir.check_owner(config)?; // a path where no folder can be made, said before one is tried
    }
    // the folder is claimed before anything in it is read or written: two processes never
    // train one run at once (`reproduce` holds the claim already; this is the same claim)
    let claim = match crate::claim::claim(out, crate::claim::DEFAULT_STALE_AFTER)? {
        ClaimOutcome::Held(c) => c,
        ClaimOutcome::Busy(holder) => {
            return Err(TrainError::Config(format!(
                "--out {}: claimed by {holder}, which is working on this run; run the command again when it is done",
                out.display()
            )));
        }
    };
    let result = train_claimed(&run, config, &dir, opts);
    drop(claim);
    if created && result.is_err() {
        // nothing was written: the folder made for the claim goes again (if it is empty)
        let _ = std::fs::remove_dir(out);
    }
    result
}

/// [`train`] once the run folder is claimed.
fn train_claimed(
    run: &ResolvedRun,
    config: &RunConfig,
    dir: &RunDir,
    opts: &TrainOptions,
) -> Result<Option<Summary>, TrainError> {
    let out = dir.root();
    dir.check_owner(config)?;
    if let Some(failure) = dir.read_failure()? {
        return Err(TrainError::Failed { path: dir.failure_path(), message: failure.message });
    }
    match dir.read_result(config) {
        Ok(Some(summary)) => return Ok(Some(summary)),
        Ok(None) => {}
        Err(e) => {
            return Err(TrainError::Config(format!(
                "{e}; the run is not finished: move summary.json aside to finish it from its last checkpoint"
            )));
        }
    }
    if out.is_dir() {
        dir.remove_leftovers()?;
    }
    let resume = dir.latest_checkpoint()?;
    // a run that resumes has its weights; one that starts needs its starting point, checked now
    let starting_point = match (&config.init_from, &opts.init_from, &resume) {
        (Some(_), Some(from), None) => Some(StartingPoint::check(config, from)?),
        (Some(hash), None, None) => {
            return Err(TrainError::Config(format!(
                "init_from = {hash}: the run starts from the final weights of the run with that config \
                 hash; give its folder (train --init-from RUN_DIR)"
            )));
        }
        (None, Some(from), _) => {
            return Err(TrainError::Config(format!(
                "--init-from {}: the run's configuration names no init_from (the hash of the run it starts from)",
                from.display()
            )));
        }
        _ => None,
    };

    let device = training_device(opts.device)?;
    let data = load_run_data(config, &opts.data_dir)?;
    let mut model = build_model(run, data.train.shape, data.train.classes.len(), &device)?;
    if let Some(start) = &starting_point {
        model = start.apply(model, data.train.shape, data.train.classes.len(), &device)?;
    }
    let mut optim = optimizer(config);
    let (mut history, mut before_training, start) = match resume {
        Some(ckpt) => {
            ckpt.check_config(config, &dir.config_path())?;
            model = load_model_record(model, &ckpt)?;
            if let Some((param, value)) = non_finite_parameter(&model) {
                return Err(TrainError::io(
                    ckpt.dir.join("model.bpk"),
                    format!("holds a non-finite value ({value}) in {param}: not a checkpoint to resume from"),
                ));
            }
            let path = ckpt.dir.join("optim.bpk");
            let record = OptimizerRecord::from_bytes(Bytes::from_bytes_vec(ckpt.read_verified("optim.bpk")?))
                .map_err(|e| TrainError::io(&path, format!("{e:?}")))?;
            optim = optim.load_record(record);
            (ckpt.state.history, ckpt.state.before_training, ckpt.state.epochs_done)
        }
        None => (Vec::new(), None, 0),
    };
    std::fs::create_dir_all(out).map_err(|e| TrainError::io(out, e))?;
    if !dir.config_path().exists() {
        write_atomic(&dir.config_path(), config.to_toml().as_bytes())?;
    }
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let train_indices: Vec<usize> = (0..data.train.len()).collect();
    let wall_before = history.last().map(|r| r.wall_seconds).unwrap_or(0.0);
    let started = Instant::now();
    let bar = if opts.progress { ProgressBar::new(0) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:25}] {pos}/{len} {msg} ETA {eta}")
            .expect("template")
            .progress_chars("=> "),
    );

    for epoch in start..config.epochs {
        if opts.stop_after.is_some_and(|n| epoch - start >= n) {
            bar.finish_and_clear();
            return Ok(None);
        }
        let epoch_start = Instant::now();
        if epoch == run.stage1_epochs && epoch > 0 && epoch != start {
            optim = optimizer(config); // the fine-tuning stage starts with fresh momentum
        }
        let loader = || {
            let batch_size = config.batch_size.min(data.train.len());
            let plan =
                EpochBatches::training(batch_size, data.data.augment, data.data.normalize.clone(), config.seed, epoch);
            BatchLoader::new(data.train.clone(), &train_indices, plan)
        };
        model.start_epoch(run, epoch, &loader, &device)?;
        if epoch == 0 && config.init_from.is_some() {
            // where the run starts from: the network it was given, quantized and calibrated
            let test =
                evaluate(&model.valid(), &data.test, config.batch_size, &data.data.normalize, &device.clone().inner());
            if !test.loss.is_finite() {
                bar.abandon();
                return Err(fail(dir, config, &history, epoch, "the test loss before the first step", test.loss));
            }
            if opts.progress {
                bar.println(format!(
                    "{} before training: test loss {:.4} acc {:.2}%{}",
                    config.method,
                    test.loss,
                    100.0 * test.accuracy,
                    if run.adc_enabled(0) || !config.uses_crossbar() { "" } else { " (ideal ADC)" }
                ));
            }
            before_training = Some(StartRecord {
                stage: run.stage(0),
                adc: run.adc_enabled(0),
                test_loss: test.loss,
                test_acc: test.accuracy,
            });
        }
        let loader = loader();
        let steps = loader.len();
        bar.set_length(steps as u64);
        bar.set_position(0);
        bar.set_prefix(format!("{} epoch {}/{}", config.method, epoch + 1, config.epochs));
        // losses summed on the host in a fixed order (see `batch_loss`)
        let (mut loss_sum, mut correct, mut seen, mut lr) = (0f64, 0usize, 0usize, 0f64);
        for (step, batch) in loader.enumerate() {
            let b = batch.labels.len();
            let labels = batch.labels.clone();
            let x = Tensor::<4>::from_data(TensorData::new(batch.images, batch.shape), &device);
            let y = Tensor::<1, Int>::from_data(TensorData::new(batch.labels, [b]), &device);
            model.before_step(run, epoch, step);
            let logits = model.forward(x);
            let loss = loss_fn.forward(logits.clone(), y);
            let host = logits.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 logits");
            let (batch_loss_sum, batch_correct) = batch_loss(&host, &labels);
            if !batch_loss_sum.is_finite() {
                bar.abandon();
                let what = format!("the training loss at step {}", step + 1);
                return Err(fail(dir, config, &history, epoch, &what, batch_loss_sum / b as f64));
            }
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            lr = run.learning_rate(epoch, step, steps);
            model = optim.step(lr, model, grads);
            loss_sum += batch_loss_sum;
            correct += batch_correct;
            seen += b;
            bar.inc(1);
            bar.set_message(format!(
                "loss {:.3} acc {:.1}% {:.0} img/s",
                loss_sum / seen as f64,
                100.0 * correct as f64 / seen as f64,
                seen as f64 / epoch_start.elapsed().as_secs_f64()
            ));
        }
        let train_seconds = epoch_start.elapsed().as_secs_f64();
        if let Some(param) = non_finite_parameter(&model) {
            bar.abandon();
            return Err(fail(dir, config, &history, epoch, &format!("parameter {}", param.0), param.1));
        }
        let test =
            evaluate(&model.valid(), &data.test, config.batch_size, &data.data.normalize, &device.clone().inner());
        if !test.loss.is_finite() {
            bar.abandon();
            return Err(fail(dir, config, &history, epoch, "the test loss", test.loss));
        }
        let record = EpochRecord {
            epoch: epoch + 1,
            stage: run.stage(epoch),
            train_loss: loss_sum / seen.max(1) as f64,
            train_acc: correct as f64 / seen.max(1) as f64,
            test_loss: test.loss,
            test_acc: test.accuracy,
            lr,
            images_per_sec: seen as f64 / train_seconds,
            epoch_seconds: epoch_start.elapsed().as_secs_f64(),
            wall_seconds: wall_before + started.elapsed().as_secs_f64(),
        };
        if opts.progress {
            bar.println(format!(
                "{} epoch {}/{}: train loss {:.4} acc {:.2}% | test loss {:.4} acc {:.2}% | {:.0} img/s",
                config.method,
                record.epoch,
                config.epochs,
                record.train_loss,
                100.0 * record.train_acc,
                record.test_loss,
                100.0 * record.test_acc,
                record.images_per_sec
            ));
        }
        history.push(record);
        save_checkpoint(dir, config, &model, &optim, &history, &before_training)?;
    }
    bar.finish_and_clear();
    // the epochs as the checkpoint has them (a run whose last metrics write failed gets them now)
    write_atomic(&dir.metrics_path(), metrics_lines(&history).as_bytes())?;
    let mut summary = summarize(config, &history, data.train.len(), data.test.len(), opts.device);
    summary.before_training = before_training;
    summary.classes = data.train.classes.clone();
    write_json(&dir.summary_path(), &summary)?;
    Ok(Some(summary))
}

/// Marks the run failed (`failed.json`) and returns the error that says what was not finite and
/// which checkpoint is the last good one. Nothing of the failed epoch is saved.
fn fail(dir: &RunDir, config: &RunConfig, history: &[EpochRecord], epoch: usize, what: &str, value: f64) -> TrainError {
    // every saved checkpoint passed these checks; the newest holds the epochs of `history`
    let last_good = match dir.latest_checkpoint() {
        Ok(Some(ckpt)) if ckpt.state.epochs_done == history.len() && !history.is_empty() => {
            Some(ckpt.dir.file_name().unwrap_or_default().to_string_lossy().to_string())
        }
        _ => None,
    };
    let kept = match &last_good {
        Some(name) => format!(
            "the last good checkpoint, {} (after epoch {}), is kept",
            dir.root().join(name).display(),
            history.len()
        ),
        None => "no checkpoint was written (no epoch finished with finite values)".to_string(),
    };
    let message = format!(
        "epoch {}: {what} is {value} (not finite); the run stopped and {kept}. Lower --lr or check the data",
        epoch + 1
    );
    let record = FailureRecord {
        config_hash: config.hash(),
        epoch: epoch + 1,
        what: what.to_string(),
        value: value.to_string(),
        last_good_checkpoint: last_good,
        message: message.clone(),
    };
    match write_json(&dir.failure_path(), &record) {
        Ok(()) => TrainError::NonFinite { message, marked: dir.failure_path() },
        Err(e) => TrainError::Config(format!("{message}; and the failure could not be recorded: {e}")),
    }
}

/// The first parameter or running statistic of `model` (by module path) holding a value that
/// is not finite, with one such value.
pub fn non_finite_parameter(model: &Model) -> Option<(String, f64)> {
    struct Finder {
        path: Vec<String>,
        found: Option<(String, f64)>,
    }
    impl ModuleVisitor for Finder {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if self.found.is_some() {
                return;
            }
            let values = param.val().into_data().convert::<f32>().try_to_vec::<f32>().unwrap_or_default();
            if let Some(v) = values.iter().find(|v| !v.is_finite()) {
                let path = self.path.iter().filter(|p| !p.is_empty()).cloned().collect::<Vec<_>>().join(".");
                self.found = Some((format!("{path} ({:?})", param.id), *v as f64));
            }
        }
    }
    let mut finder = Finder { path: Vec::new(), found: None };
    model.visit(&mut finder);
    finder.found
}

fn save_checkpoint(
    dir: &RunDir,
    config: &RunConfig,
    model: &Model,
    optim: &ModuleOptimizer,
    history: &[EpochRecord],
    before_training: &Option<StartRecord>,
) -> Result<(), TrainError> {
    let done = history.len();
    let ckpt = dir.checkpoint_dir(done);
    let model_bytes = model
        .clone()
        .into_record()
        .into_bytes()
        .map_err(|e| TrainError::io(ckpt.join("model.bpk"), format!("{e:?}")))?;
    let optim_bytes = optim.into_bytes().map_err(|e| TrainError::io(ckpt.join("optim.bpk"), format!("{e:?}")))?;
    let state = CheckpointState {
        config_hash: config.hash(),
        epochs_done: done,
        history: history.to_vec(),
        files: Default::default(),
        before_training: before_training.clone(),
    };
    dir.write_checkpoint(state, &[("model.bpk", &model_bytes[..]), ("optim.bpk", &optim_bytes[..])])?;
    write_atomic(&dir.metrics_path(), metrics_lines(history).as_bytes())
}

/// The epoch with the best test accuracy among those of the final stage (the earliest on a tie).
/// The first stage of a two-stage recipe tests with an ideal ADC, so its accuracy is not the
/// method's and must not count as its best.
pub fn best_epoch(history: &[EpochRecord]) -> Option<&EpochRecord> {
    let last = history.last()?;
    history
        .iter()
        .filter(|r| r.stage == last.stage)
        .max_by(|a, b| a.test_acc.total_cmp(&b.test_acc).then(b.epoch.cmp(&a.epoch)))
}

fn summarize(
    config: &RunConfig,
    history: &[EpochRecord],
    train_images: usize,
    test_images: usize,
    device: ComputeDevice,
) -> Summary {
    let best = best_epoch(history).expect("at least one epoch");
    let last = history.last().expect("at least one epoch");
    Summary {
        method: config.method.clone(),
        dataset: config.dataset.clone(),
        config_hash: config.hash(),
        best_test_acc: best.test_acc,
        best_epoch: best.epoch,
        final_test_acc: last.test_acc,
        epochs: history.len(),
        seed: config.seed,
        code_version: CODE_VERSION.to_string(),
        train_images,
        test_images,
        wall_seconds: last.wall_seconds,
        images_per_sec: history.iter().map(|r| r.images_per_sec).sum::<f64>() / history.len() as f64,
        device,
        before_training: None,
        classes: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(epoch: usize, stage: usize, test_acc: f64) -> EpochRecord {
        crate::run::test_record(epoch, stage, test_acc)
    }

    #[test]
    fn a_failure_after_a_saved_epoch_names_that_checkpoint_and_no_other() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RunDir::new(tmp.path());
        let config = RunConfig::default();
        let history = vec![record(1, 1, 0.5)];
        let state = CheckpointState {
            config_hash: config.hash(),
            epochs_done: 1,
            history: history.clone(),
            files: Default::default(),
            before_training: None,
        };
        dir.write_checkpoint(state, &[("model.bpk", b"weights")]).unwrap();
        let e = fail(&dir, &config, &history, 1, "the test loss", f64::NAN);
        let text = e.to_string();
        assert!(text.contains("epoch 2: the test loss is NaN"), "{text}");
        assert!(
            text.contains(&format!("{} (after epoch 1), is kept", tmp.path().join("ckpt-0001").display())),
            "{text}"
        );
        let record = dir.read_failure().unwrap().unwrap();
        assert_eq!(record.last_good_checkpoint.as_deref(), Some("ckpt-0001"));
        assert_eq!((record.epoch, record.value.as_str()), (2, "NaN"));
        // the kept checkpoint is intact and verifies
        let ckpt = dir.latest_checkpoint().unwrap().unwrap();
        assert_eq!(ckpt.read_verified("model.bpk").unwrap(), b"weights");
    }

    #[test]
    fn best_epoch_ignores_the_ideal_adc_stage_of_a_two_stage_run() {
        let two_stage = [record(1, 1, 0.6), record(2, 1, 0.8), record(3, 2, 0.5), record(4, 2, 0.55)];
        assert_eq!(best_epoch(&two_stage).unwrap().epoch, 4);
        let one_stage = [record(1, 1, 0.6), record(2, 1, 0.8), record(3, 1, 0.8), record(4, 1, 0.7)];
        assert_eq!(best_epoch(&one_stage).unwrap().epoch, 2, "earliest on a tie");
        assert!(best_epoch(&[]).is_none());
    }
}
