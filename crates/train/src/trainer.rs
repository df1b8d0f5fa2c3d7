//! The training loop: a run is claimed, checked and prepared (resumed from its checkpoint or
//! started from its starting point), trained one epoch at a time (each tested, checked for
//! non-finite values and saved), and finished with its summary.

use std::path::Path;
use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{GradientsParams, ModuleOptimizer, OptimizerRecord};
use burn::tensor::{Bytes, Device, Int, Tensor, TensorData};
use cim_core::ComputeDevice;
use data::{BatchLoader, DataDir, EpochBatches};
use models::Model;

use crate::TrainError;
use crate::claim::ClaimOutcome;
use crate::config::{ResolvedRun, RunConfig};
use crate::eval::{batch_loss, evaluate, load_model_record};
use crate::events::{Observer, TrainEvent};
use crate::hooks::TrainingHooks;
use crate::init::StartingPoint;
use crate::run::{
    CheckpointState, EpochRecord, FailureRecord, RunDir, StartRecord, Summary, metrics_lines, summarize, write_atomic,
    write_json,
};
use crate::setup::{RunData, build_model, load_run_data, non_finite_parameter, optimizer, training_device};

/// How to run.
#[derive(Clone)]
pub struct TrainOptions {
    /// Where data sets live.
    pub data_dir: DataDir,
    /// Receives what the training reports (epochs, steps, the test before the first step).
    pub on_event: Observer,
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

impl std::fmt::Debug for TrainOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainOptions")
            .field("data_dir", &self.data_dir)
            .field("stop_after", &self.stop_after)
            .field("device", &self.device)
            .field("init_from", &self.init_from)
            .finish_non_exhaustive()
    }
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
            return Err(TrainError::ClaimHeld { out: out.to_path_buf(), holder: Box::new(holder) });
        }
    };
    let result = train_claimed(&run, &dir, opts);
    (opts.on_event)(&TrainEvent::Stopped);
    drop(claim);
    if created && result.is_err() {
        // nothing was written: the folder made for the claim goes again (if it is empty)
        let _ = std::fs::remove_dir(out);
    }
    result
}

/// [`train`] once the run folder is claimed: prepare, one epoch at a time, finish.
fn train_claimed(run: &ResolvedRun, dir: &RunDir, opts: &TrainOptions) -> Result<Option<Summary>, TrainError> {
    if let Some(summary) = finished_run(run, dir)? {
        return Ok(Some(summary));
    }
    let (mut training, mut model) = Training::prepare(run, dir, opts)?;
    for epoch in training.start..run.config.epochs {
        if opts.stop_after.is_some_and(|n| epoch - training.start >= n) {
            return Ok(None);
        }
        model = training.epoch(model, epoch)?;
    }
    training.finish().map(Some)
}

/// The summary of the run in `dir` if it is finished; refused when the folder belongs to another
/// configuration, holds a failed run, or a summary that its files contradict.
fn finished_run(run: &ResolvedRun, dir: &RunDir) -> Result<Option<Summary>, TrainError> {
    let config = &run.config;
    dir.check_owner(config)?;
    if let Some(failure) = dir.read_failure()? {
        return Err(TrainError::Failed { path: dir.failure_path(), message: failure.message });
    }
    match dir.read_result(config) {
        Ok(found) => Ok(found),
        Err(e) => Err(TrainError::Config(format!(
            "{e}; the run is not finished: move summary.json aside to finish it from its last checkpoint"
        ))),
    }
}

/// Where a run that has not finished starts: its latest checkpoint, else the finished run its
/// `init_from` names (checked now), else fresh weights.
fn starting_point(config: &RunConfig, dir: &RunDir, opts: &TrainOptions) -> Result<Option<StartingPoint>, TrainError> {
    let resumes = dir.latest_checkpoint()?.is_some();
    match (&config.init_from, &opts.init_from, resumes) {
        (Some(_), Some(from), false) => Ok(Some(StartingPoint::check(config, from)?)),
        (Some(hash), None, false) => Err(TrainError::Config(format!(
            "init_from = {hash}: the run starts from the final weights of the run with that config \
             hash; give its folder (train --init-from RUN_DIR)"
        ))),
        (None, Some(from), _) => Err(TrainError::Config(format!(
            "--init-from {}: the run's configuration names no init_from (the hash of the run it starts from)",
            from.display()
        ))),
        _ => Ok(None),
    }
}

/// A run being trained: its optimizer, the epochs done, and what it needs for the next (the
/// model travels through the epochs by value, so that the optimizer updates it in place).
struct Training<'a> {
    run: &'a ResolvedRun,
    dir: &'a RunDir,
    opts: &'a TrainOptions,
    device: Device,
    data: RunData,
    optim: ModuleOptimizer,
    history: Vec<EpochRecord>,
    before_training: Option<StartRecord>,
    /// The first epoch this invocation trains.
    start: usize,
    /// Wall time of the epochs before this invocation.
    wall_before: f64,
    started: Instant,
}

impl<'a> Training<'a> {
    /// Loads the data, builds the model, resumes it from its latest checkpoint (or starts it from
    /// its starting point) and writes the run's config; nothing is written before every check.
    fn prepare(run: &'a ResolvedRun, dir: &'a RunDir, opts: &'a TrainOptions) -> Result<(Self, Model), TrainError> {
        let config = &run.config;
        if dir.root().is_dir() {
            dir.remove_leftovers()?;
        }
        let starting_point = starting_point(config, dir, opts)?;
        let resume = dir.latest_checkpoint()?;
        let device = training_device(opts.device)?;
        let data = load_run_data(config, &opts.data_dir)?;
        let mut model = build_model(run, data.train.shape, data.train.classes.len(), &device)?;
        if let Some(start) = &starting_point {
            model = start.apply(model, data.train.shape, data.train.classes.len(), &device)?;
        }
        let mut optim = optimizer(config);
        let (history, before_training, start) = match resume {
            Some(ckpt) => {
                ckpt.check_config(config, &dir.config_path())?;
                model = load_model_record(model, &ckpt)?;
                if let Some((param, value)) = non_finite_parameter(&model) {
                    return Err(TrainError::file(
                        ckpt.dir.join("model.bpk"),
                        format!("holds a non-finite value ({value}) in {param}: not a checkpoint to resume from"),
                    ));
                }
                let path = ckpt.dir.join("optim.bpk");
                let record = OptimizerRecord::from_bytes(Bytes::from_bytes_vec(ckpt.read_verified("optim.bpk")?))
                    .map_err(|e| TrainError::file(&path, format!("{e:?}")))?;
                optim = optim.load_record(record);
                (ckpt.state.history, ckpt.state.before_training, ckpt.state.epochs_done)
            }
            None => (Vec::new(), None, 0),
        };
        std::fs::create_dir_all(dir.root()).map_err(|e| TrainError::io(dir.root(), e))?;
        if !dir.config_path().exists() {
            write_atomic(&dir.config_path(), config.to_toml().as_bytes())?;
        }
        let wall_before = history.last().map(|r| r.wall_seconds).unwrap_or(0.0);
        let training = Training {
            run,
            dir,
            opts,
            device,
            data,
            optim,
            history,
            before_training,
            start,
            wall_before,
            started: Instant::now(),
        };
        Ok((training, model))
    }

    /// Trains, tests and saves one epoch (`epoch` counted from 0) of `model`.
    fn epoch(&mut self, mut model: Model, epoch: usize) -> Result<Model, TrainError> {
        let (run, config) = (self.run, &self.run.config);
        let epoch_start = Instant::now();
        if epoch == run.stage1_epochs && epoch > 0 && epoch != self.start {
            self.optim = optimizer(config); // the fine-tuning stage starts with fresh momentum
        }
        let train_indices: Vec<usize> = (0..self.data.train.len()).collect();
        let (train, augment, normalize) =
            (self.data.train.clone(), self.data.data.augment, self.data.data.normalize.clone());
        let loader = || {
            let batch_size = config.batch_size.min(train.len());
            let plan = EpochBatches::training(batch_size, augment, normalize.clone(), config.seed, epoch);
            BatchLoader::new(train.clone(), &train_indices, plan)
        };
        model.start_epoch(run, epoch, &loader, &self.device)?;
        if epoch == 0 && config.init_from.is_some() {
            self.test_before_training(&model)?;
        }
        let (model, sums) = self.train_steps(model, epoch, loader(), epoch_start)?;
        let train_seconds = epoch_start.elapsed().as_secs_f64();
        if let Some((param, value)) = non_finite_parameter(&model) {
            return Err(self.fail(epoch, &format!("parameter {param}"), value));
        }
        let test = self.test(&model);
        if !test.loss.is_finite() {
            return Err(self.fail(epoch, "the test loss", test.loss));
        }
        let record = EpochRecord {
            epoch: epoch + 1,
            stage: run.stage(epoch),
            train_loss: sums.loss / sums.seen.max(1) as f64,
            train_acc: sums.correct as f64 / sums.seen.max(1) as f64,
            test_loss: test.loss,
            test_acc: test.accuracy,
            lr: sums.last_lr,
            images_per_sec: sums.seen as f64 / train_seconds,
            epoch_seconds: epoch_start.elapsed().as_secs_f64(),
            wall_seconds: self.wall_before + self.started.elapsed().as_secs_f64(),
        };
        (self.opts.on_event)(&TrainEvent::EpochEnd { method: &config.method, epochs: config.epochs, record: &record });
        self.history.push(record);
        save_checkpoint(self.dir, config, &model, &self.optim, &self.history, &self.before_training)?;
        Ok(model)
    }

    /// The training steps of one epoch: the model after them, and what they add up to.
    fn train_steps(
        &mut self,
        mut model: Model,
        epoch: usize,
        loader: BatchLoader,
        epoch_start: Instant,
    ) -> Result<(Model, EpochSums), TrainError> {
        let (run, config) = (self.run, &self.run.config);
        let loss_fn = CrossEntropyLossConfig::new().init(&self.device);
        let steps = loader.len();
        let method = &config.method;
        (self.opts.on_event)(&TrainEvent::EpochStart { method, epoch: epoch + 1, epochs: config.epochs, steps });
        let mut sums = EpochSums::default();
        for (step, batch) in loader.enumerate() {
            let b = batch.labels.len();
            let labels = batch.labels.clone();
            let x = Tensor::<4>::from_data(TensorData::new(batch.images, batch.shape), &self.device);
            let y = Tensor::<1, Int>::from_data(TensorData::new(batch.labels, [b]), &self.device);
            model.before_step(run, epoch, step);
            let logits = model.forward(x);
            let loss = loss_fn.forward(logits.clone(), y);
            let host = logits.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 logits");
            let (batch_loss_sum, batch_correct) = batch_loss(&host, &labels);
            if !batch_loss_sum.is_finite() {
                let what = format!("the training loss at step {}", step + 1);
                return Err(self.fail(epoch, &what, batch_loss_sum / b as f64));
            }
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            sums.last_lr = run.learning_rate(epoch, step, steps);
            model = self.optim.step(sums.last_lr, model, grads);
            sums.loss += batch_loss_sum;
            sums.correct += batch_correct;
            sums.seen += b;
            (self.opts.on_event)(&TrainEvent::Step {
                loss: sums.loss / sums.seen as f64,
                accuracy: sums.correct as f64 / sums.seen as f64,
                images_per_sec: sums.seen as f64 / epoch_start.elapsed().as_secs_f64(),
            });
        }
        Ok((model, sums))
    }

    /// Where the run starts from: the network it was given, quantized and calibrated, tested
    /// once before the first step and recorded.
    fn test_before_training(&mut self, model: &Model) -> Result<(), TrainError> {
        let (run, config) = (self.run, &self.run.config);
        let test = self.test(model);
        if !test.loss.is_finite() {
            return Err(self.fail(0, "the test loss before the first step", test.loss));
        }
        let record =
            StartRecord { stage: run.stage(0), adc: run.adc_enabled(0), test_loss: test.loss, test_acc: test.accuracy };
        let ideal_adc = !run.adc_enabled(0) && config.uses_crossbar();
        (self.opts.on_event)(&TrainEvent::BeforeTraining { method: &config.method, record: &record, ideal_adc });
        self.before_training = Some(record);
        Ok(())
    }

    /// The model's loss and accuracy on the run's test images.
    fn test(&self, model: &Model) -> crate::EvalResult {
        let data = &self.data;
        evaluate(
            &model.valid(),
            &data.test,
            self.run.config.batch_size,
            &data.data.normalize,
            &self.device.clone().inner(),
        )
    }

    /// Records the run as failed: see [`fail`].
    fn fail(&self, epoch: usize, what: &str, value: f64) -> TrainError {
        fail(self.dir, &self.run.config, &self.history, epoch, what, value)
    }

    /// Writes the epochs and the summary of the finished run.
    fn finish(self) -> Result<Summary, TrainError> {
        let config = &self.run.config;
        // the epochs as the checkpoint has them (a run whose last metrics write failed gets them now)
        write_atomic(&self.dir.metrics_path(), metrics_lines(&self.history).as_bytes())?;
        let mut summary =
            summarize(config, &self.history, self.data.train.len(), self.data.test.len(), self.opts.device);
        summary.before_training = self.before_training;
        summary.classes = self.data.train.classes.clone();
        summary.input_shape = Some(self.data.train.shape);
        write_json(&self.dir.summary_path(), &summary)?;
        Ok(summary)
    }
}

/// What the training steps of one epoch add up to. Losses are summed on the host in a fixed
/// order (see `batch_loss`).
#[derive(Default)]
struct EpochSums {
    /// Summed training loss.
    loss: f64,
    /// Correct predictions.
    correct: usize,
    /// Images seen.
    seen: usize,
    /// The learning rate of the last step.
    last_lr: f64,
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
        .map_err(|e| TrainError::file(ckpt.join("model.bpk"), format!("{e:?}")))?;
    let optim_bytes = optim.into_bytes().map_err(|e| TrainError::file(ckpt.join("optim.bpk"), format!("{e:?}")))?;
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
}
