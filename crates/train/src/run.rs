//! The run folder: `config.toml` (the resolved configuration), `checkpoint.json` pointing at the
//! newest `ckpt-NNNN/` (model, optimizer, history), `metrics.jsonl` (one line per epoch),
//! `summary.json` of a finished run and `failed.json` of a run stopped by non-finite values.
//! Every file is written to a temporary name and renamed into place. Nothing is trusted at read:
//! the pointer records the SHA-256 of the checkpoint's `state.json`, which records the SHA-256
//! of every tensor file and the hash of the configuration they belong to.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use cim_core::ComputeDevice;

use crate::config::RunConfig;
use crate::{CODE_VERSION, TrainError};

/// One epoch's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Training stage (2: fine-tuning of a two-stage recipe).
    pub stage: usize,
    /// Mean training loss.
    pub train_loss: f64,
    /// Training accuracy (on augmented images, as seen during the epoch).
    pub train_acc: f64,
    /// Test loss.
    pub test_loss: f64,
    /// Test accuracy.
    pub test_acc: f64,
    /// Learning rate of the epoch's last step.
    pub lr: f64,
    /// Training throughput.
    pub images_per_sec: f64,
    /// Seconds of the epoch (training and test).
    pub epoch_seconds: f64,
    /// Seconds since the run started (across resumes).
    pub wall_seconds: f64,
}

/// The test result of a run that starts from another run's weights (`init_from`), taken once
/// after the calibration that precedes its first step and before that step: the accuracy of
/// post-training quantization with the method's own calibration (for a two-stage recipe, with
/// its first stage's ideal ADC). Not an epoch: summaries and tables take the last epoch as final.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartRecord {
    /// The stage the run starts in (1; its ADCs are off there in a two-stage recipe).
    pub stage: usize,
    /// Whether partial sums were quantized (calibrated ADCs, or a method's own).
    pub adc: bool,
    /// Test loss.
    pub test_loss: f64,
    /// Test accuracy.
    pub test_acc: f64,
}

/// The test accuracy a run gained in its last epoch: over the epoch before it where that is of
/// the same stage, or, where the last epoch is the first of its stage, over the run's accuracy
/// before training in that stage ([`StartRecord`]); `None` where neither exists (the one
/// fine-tuning epoch of a two-stage run follows an ideal-ADC epoch, which measures another
/// network). A fraction, as accuracies are.
pub fn last_epoch_gain(history: &[EpochRecord], before_training: Option<&StartRecord>) -> Option<f64> {
    let last = history.last()?;
    match history.len().checked_sub(2).map(|i| &history[i]) {
        Some(previous) if previous.stage == last.stage => Some(last.test_acc - previous.test_acc),
        Some(_) => None,
        None => before_training.filter(|b| b.stage == last.stage).map(|b| last.test_acc - b.test_acc),
    }
}

/// The fields of a run's records (`metrics.jsonl` lines, `summary.json`) that measure the
/// machine's speed, not the computation.
pub const TIMING_FIELDS: [&str; 3] = ["images_per_sec", "epoch_seconds", "wall_seconds"];

/// A record of `metrics.jsonl` or `summary.json` without its [`TIMING_FIELDS`]: what two runs
/// of the same seed on the same machine agree on to the bit.
pub fn without_timing(mut record: serde_json::Value) -> serde_json::Value {
    if let Some(fields) = record.as_object_mut() {
        for f in TIMING_FIELDS {
            fields.remove(f);
        }
    }
    record
}

/// The outcome of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Method name.
    pub method: String,
    /// Data set.
    pub dataset: String,
    /// Hash of the configuration.
    pub config_hash: String,
    /// Best test accuracy over the epochs of the final stage (a two-stage run's ideal-ADC first
    /// stage does not count).
    pub best_test_acc: f64,
    /// Epoch (1-based) of the best test accuracy.
    pub best_epoch: usize,
    /// Test accuracy after the last epoch.
    pub final_test_acc: f64,
    /// Epochs trained.
    pub epochs: usize,
    /// Seed.
    pub seed: u64,
    /// Code version that produced the run.
    pub code_version: String,
    /// Training images per epoch and test images.
    pub train_images: usize,
    /// Test images.
    pub test_images: usize,
    /// Seconds of training and testing in all.
    pub wall_seconds: f64,
    /// Mean training throughput.
    pub images_per_sec: f64,
    /// The device of the invocation that finished the run, for reading its times (not part of the
    /// run's identity; `cpu` in summaries written before the choice existed).
    #[serde(default)]
    pub device: cim_core::ComputeDevice,
    /// The test result before the first step of a run that starts from another
    /// ([`StartRecord`]; absent in other runs and in summaries written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_training: Option<StartRecord>,
    /// The class names in the model's output order, so that `eval` on another tree matches
    /// classes by name (empty in summaries written before they were recorded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<String>,
    /// The shape [C, H, W] in which the run's images reached its model (after `resolution`):
    /// what its hardware is counted for. Absent in summaries written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_shape: Option<[usize; 3]>,
}

impl Summary {
    /// Fails, saying why, unless this summary is a result the run of `config` could have
    /// written with the epochs of `history` (its `metrics.jsonl`): the summary is the run's own
    /// (same config hash), its accuracies are accuracies (in [0, 1]), every epoch is recorded
    /// once and in order, and its final and best values are those of `history`.
    pub fn check_against(&self, config: &RunConfig, history: &[EpochRecord]) -> Result<(), String> {
        let hash = config.hash();
        if self.config_hash != hash {
            return Err(format!(
                "summary.json belongs to the run of config hash {}, this run has config hash {hash}",
                self.config_hash
            ));
        }
        let accuracies = [("final_test_acc", self.final_test_acc), ("best_test_acc", self.best_test_acc)];
        let history_accuracies = history.iter().map(|r| ("a test_acc of metrics.jsonl", r.test_acc));
        let start_accuracy = self.before_training.iter().map(|r| ("before_training.test_acc", r.test_acc));
        for (field, value) in accuracies.into_iter().chain(history_accuracies).chain(start_accuracy) {
            if !(0.0..=1.0).contains(&value) {
                return Err(format!("{field} = {value}: not an accuracy (expected a value in [0, 1])"));
            }
        }
        if self.epochs != config.epochs || history.len() != config.epochs {
            return Err(format!(
                "the run has {} epochs, summary.json records {} and metrics.jsonl {}: the result is incomplete",
                config.epochs,
                self.epochs,
                history.len()
            ));
        }
        if let Some((i, r)) = history.iter().enumerate().find(|(i, r)| r.epoch != i + 1) {
            return Err(format!("metrics.jsonl: line {} records epoch {}, expected epoch {}", i + 1, r.epoch, i + 1));
        }
        let last = history.last().expect("at least one epoch: config.epochs >= 1");
        if last.test_acc != self.final_test_acc {
            return Err(format!(
                "final_test_acc = {} but metrics.jsonl's last epoch has {}",
                self.final_test_acc, last.test_acc
            ));
        }
        let best = best_epoch(history).expect("at least one epoch");
        if (best.epoch, best.test_acc) != (self.best_epoch, self.best_test_acc) {
            return Err(format!(
                "best_test_acc = {} (epoch {}) but metrics.jsonl's best is {} (epoch {})",
                self.best_test_acc, self.best_epoch, best.test_acc, best.epoch
            ));
        }
        Ok(())
    }
}

/// What a checkpoint records besides the tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// Hash of the configuration the checkpoint belongs to.
    pub config_hash: String,
    /// Epochs completed.
    pub epochs_done: usize,
    /// One record per completed epoch.
    pub history: Vec<EpochRecord>,
    /// SHA-256 of every tensor file of the checkpoint, by file name, recorded at write time.
    /// (Empty in checkpoints of versions before checksums; those cannot be loaded.)
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    /// The test result before the first step ([`StartRecord`]), kept so that a resumed run
    /// still reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_training: Option<StartRecord>,
}

/// Why a run stopped without finishing: written as `failed.json` so that `reproduce` and
/// `report` can show the cell as failed (and nothing non-finite ever reaches a JSON file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureRecord {
    /// Hash of the configuration.
    pub config_hash: String,
    /// 1-based epoch in which the run failed.
    pub epoch: usize,
    /// What was not finite (`training loss at step 3`, `parameter layer1.0.conv1.weight`, ...).
    pub what: String,
    /// The value, as text (`NaN`, `inf`).
    pub value: String,
    /// The newest checkpoint that is really good, if any (relative to the run folder).
    pub last_good_checkpoint: Option<String>,
    /// The whole message.
    pub message: String,
}

impl FailureRecord {
    /// The `what` of a record that a report derived from a damaged or foreign file of the run
    /// folder (not a failure of the training itself).
    pub const FILE_CHECK: &str = "a file of the run folder";
}

/// A checkpoint whose `state.json` matched the pointer's checksum; its tensor files are checked
/// when read.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Its state.
    pub state: CheckpointState,
    /// Its folder.
    pub dir: PathBuf,
}

impl Checkpoint {
    /// The bytes of one tensor file, after checking them against the SHA-256 recorded when the
    /// checkpoint was written.
    pub fn read_verified(&self, name: &str) -> Result<Vec<u8>, TrainError> {
        let path = self.dir.join(name);
        let Some(expected) = self.state.files.get(name) else {
            return Err(TrainError::file(
                self.dir.join("state.json"),
                format!(
                    "records no checksum of {name} (written by an older version, or incomplete): \
                     the checkpoint cannot be verified; train the run again"
                ),
            ));
        };
        let bytes = std::fs::read(&path).map_err(|e| TrainError::io(&path, e))?;
        let actual = sha256_hex(&bytes);
        if &actual != expected {
            return Err(TrainError::file(
                &path,
                format!(
                    "SHA-256 mismatch: the checkpoint recorded {expected}, the file now has {actual} \
                     ({} bytes): it was changed or damaged after it was written; remove the run's \
                     checkpoint folders to train again",
                    bytes.len()
                ),
            ));
        }
        Ok(bytes)
    }

    /// Fails unless the checkpoint belongs to `config` (whose file is `config_path`).
    pub fn check_config(&self, config: &RunConfig, config_path: &Path) -> Result<(), TrainError> {
        if self.state.config_hash == config.hash() {
            return Ok(());
        }
        Err(TrainError::Config(format!(
            "{} has config hash {}, but the checkpoint {} was trained with config hash {}: the \
             configuration was edited after training; restore it, or train the new configuration \
             into another folder",
            config_path.display(),
            config.hash(),
            self.dir.display(),
            self.state.config_hash
        )))
    }
}

/// Lowercase hex SHA-256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Paths of a run folder.
#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// The folder.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The folder itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The resolved configuration.
    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.toml")
    }

    /// One line per epoch.
    pub fn metrics_path(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }

    /// The summary of a finished run.
    pub fn summary_path(&self) -> PathBuf {
        self.root.join("summary.json")
    }

    /// Why the run failed, if it did.
    pub fn failure_path(&self) -> PathBuf {
        self.root.join("failed.json")
    }

    /// The failure record, if the run failed. A record a report derived from the folder's files
    /// ([`FailureRecord::FILE_CHECK`]) is not one: it is worked out again from the files, so that
    /// a repaired file counts again.
    pub fn read_failure(&self) -> Result<Option<FailureRecord>, TrainError> {
        let record: Option<FailureRecord> = read_json(&self.failure_path())?;
        Ok(record.filter(|r| r.what != FailureRecord::FILE_CHECK))
    }

    /// Points at the newest checkpoint.
    pub fn pointer_path(&self) -> PathBuf {
        self.root.join("checkpoint.json")
    }

    /// A checkpoint folder.
    pub fn checkpoint_dir(&self, epochs_done: usize) -> PathBuf {
        self.root.join(format!("ckpt-{epochs_done:04}"))
    }

    /// The configuration stored in the folder, if any.
    pub fn read_config(&self) -> Result<Option<RunConfig>, TrainError> {
        let path = self.config_path();
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| TrainError::io(&path, e))?;
        RunConfig::from_stored_toml(&text, &path.display().to_string()).map(Some)
    }

    /// The summary, if the run finished.
    pub fn read_summary(&self) -> Result<Option<Summary>, TrainError> {
        read_json(&self.summary_path())
    }

    /// The epochs of `metrics.jsonl` (none if it is absent).
    pub fn read_history(&self) -> Result<Vec<EpochRecord>, TrainError> {
        let path = self.metrics_path();
        match std::fs::read_to_string(&path) {
            Ok(text) => text
                .lines()
                .enumerate()
                .map(|(i, l)| {
                    serde_json::from_str(l).map_err(|e| TrainError::file(&path, format!("line {}: {e}", i + 1)))
                })
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(TrainError::io(&path, e)),
        }
    }

    /// Removes the temporary files and folders an interrupted write left (in the run folder and
    /// its checkpoint folders); returns how many. Only the folder's claim holder may call it.
    pub fn remove_leftovers(&self) -> Result<usize, TrainError> {
        let mut removed = 0;
        let mut dirs = vec![self.root.clone()];
        for entry in std::fs::read_dir(&self.root).map_err(|e| TrainError::io(&self.root, e))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("ckpt-") && !name.contains(data::store::TEMPORARY_MARK) && entry.path().is_dir() {
                dirs.push(entry.path());
            }
        }
        for dir in dirs {
            for entry in std::fs::read_dir(&dir).map_err(|e| TrainError::io(&dir, e))?.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                // `*.tmp` of earlier versions, `*.tmp.<pid>.<n>` of this one
                if !(name.ends_with(".tmp") || name.contains(data::store::TEMPORARY_MARK)) {
                    continue;
                }
                let path = entry.path();
                let gone = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
                gone.map_err(|e| TrainError::io(&path, e))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The run's result: its summary, if it has one that is a result of `config`
    /// ([`Summary::check_against`] its `metrics.jsonl`); a summary that is not is an error that
    /// says why.
    pub fn read_result(&self, config: &RunConfig) -> Result<Option<Summary>, TrainError> {
        let Some(summary) = self.read_summary()? else { return Ok(None) };
        match self.read_config()? {
            Some(stored) if stored.hash() == config.hash() => {}
            Some(stored) => {
                return Err(TrainError::file(
                    self.config_path(),
                    format!(
                        "has config hash {}, the run {}: it was edited after training",
                        stored.hash(),
                        config.hash()
                    ),
                ));
            }
            None => {
                return Err(TrainError::file(self.config_path(), "missing beside summary.json: the run is incomplete"));
            }
        }
        let history = self.read_history()?;
        summary.check_against(config, &history).map_err(|why| TrainError::file(self.summary_path(), why))?;
        Ok(Some(summary))
    }

    /// The run as a finished one that a command may take as a trained model: its configuration
    /// and verified summary. A run that failed (`failed.json`) or has not finished (no summary)
    /// is refused, saying which; `command` names the taker in the message.
    pub fn finished(&self, command: &str) -> Result<(RunConfig, Summary), TrainError> {
        let config =
            self.read_config()?.ok_or_else(|| TrainError::file(self.config_path(), "missing: not a run folder"))?;
        if let Some(failure) = self.read_failure()? {
            return Err(TrainError::Config(format!(
                "{}: the run failed ({}); {command} takes only finished runs",
                self.root.display(),
                failure.message
            )));
        }
        match self.read_result(&config)? {
            Some(summary) => Ok((config, summary)),
            None => {
                let done = self.read_history()?.len();
                Err(TrainError::Config(format!(
                    "{}: the run has not finished ({done} of {} epochs, no summary.json); {command} takes only \
                     finished runs: train it to the end first",
                    self.root.display(),
                    config.epochs
                )))
            }
        }
    }

    /// The newest checkpoint, if any, after checking its `state.json` against the checksum the
    /// pointer recorded.
    pub fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, TrainError> {
        let Some(pointer): Option<Pointer> = read_json(&self.pointer_path())? else {
            return Ok(None);
        };
        if pointer.dir.contains(['/', '\\']) || !pointer.dir.starts_with("ckpt-") {
            return Err(TrainError::file(
                self.pointer_path(),
                format!("points at `{}`, expected a ckpt-NNNN folder of the run", pointer.dir),
            ));
        }
        let dir = self.root.join(&pointer.dir);
        let path = dir.join("state.json");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(TrainError::file(path, "missing: the checkpoint folder is incomplete"));
            }
            Err(e) => return Err(TrainError::io(path, e)),
        };
        match &pointer.state_sha256 {
            Some(expected) if *expected != sha256_hex(&bytes) => {
                return Err(TrainError::file(
                    &path,
                    format!(
                        "SHA-256 mismatch: {} recorded {expected}, the file has {}: it was changed or \
                         damaged after it was written",
                        self.pointer_path().display(),
                        sha256_hex(&bytes)
                    ),
                ));
            }
            Some(_) => {}
            None => {
                return Err(TrainError::file(
                    self.pointer_path(),
                    "records no checksum of the checkpoint (written by an older version): it cannot be \
                     verified; train the run again",
                ));
            }
        }
        let state = serde_json::from_slice(&bytes)
            .map_err(|e| TrainError::file(&path, format!("not valid JSON for this file: {e}")))?;
        Ok(Some(Checkpoint { state, dir }))
    }

    /// Writes a complete checkpoint folder (tensor files, then `state.json` with their
    /// checksums), makes it the newest and removes older ones.
    pub fn write_checkpoint(&self, mut state: CheckpointState, files: &[(&str, &[u8])]) -> Result<(), TrainError> {
        let done = state.epochs_done;
        let ckpt = self.checkpoint_dir(done);
        // written whole under a name of its own, then renamed into place: a checkpoint is
        // replaced, never deleted first
        let building = data::store::temporary_sibling(&ckpt);
        std::fs::create_dir_all(&building).map_err(|e| TrainError::io(&building, e))?;
        state.files.clear();
        for (name, bytes) in files {
            write_atomic(&building.join(name), bytes)?;
            state.files.insert(name.to_string(), sha256_hex(bytes));
        }
        let mut text = serde_json::to_string_pretty(&state).expect("serializable");
        text.push('\n');
        write_atomic(&building.join("state.json"), text.as_bytes())?;
        if ckpt.exists() {
            // a folder of that epoch from an interrupted run: moved aside, removed after
            let old = data::store::temporary_sibling(&ckpt);
            std::fs::rename(&ckpt, &old).map_err(|e| TrainError::io(&ckpt, e))?;
            std::fs::rename(&building, &ckpt).map_err(|e| TrainError::io(&ckpt, e))?;
            let _ = std::fs::remove_dir_all(&old);
        } else {
            std::fs::rename(&building, &ckpt).map_err(|e| TrainError::io(&ckpt, e))?;
        }
        self.commit_checkpoint(done, sha256_hex(text.as_bytes()))
    }

    /// The newest checkpoint reduced to the model (weights and quantizer state; no optimizer
    /// state), as files relative to the run folder: `checkpoint.json`, `ckpt-NNNN/state.json`
    /// and `ckpt-NNNN/model.bpk`, the model's bytes verified first. A folder holding them is a
    /// run that `eval`, `inspect`, `variation` and `--init-from` read like any other (it cannot
    /// be resumed: there is no optimizer state, and a finished run needs none). `None` without
    /// a checkpoint.
    pub fn model_only_checkpoint(&self) -> Result<Option<Vec<RunFile>>, TrainError> {
        self.checkpoint_files(Some("model.bpk"))
    }

    /// The newest checkpoint whole (weights, optimizer state, every file it recorded), as files
    /// relative to the run folder, each verified first: a folder holding them beside the run's
    /// `config.toml` and `metrics.jsonl` resumes where the run stopped, on any machine. `None`
    /// without a checkpoint.
    pub fn resumable_checkpoint(&self) -> Result<Option<Vec<RunFile>>, TrainError> {
        self.checkpoint_files(None)
    }

    /// The newest checkpoint's files (`only` one tensor file, or all), its state recording
    /// the checksums of those alone, and a pointer to it.
    fn checkpoint_files(&self, only: Option<&str>) -> Result<Option<Vec<RunFile>>, TrainError> {
        let Some(ckpt) = self.latest_checkpoint()? else { return Ok(None) };
        let names: Vec<String> = match only {
            Some(name) => vec![name.to_string()],
            None => ckpt.state.files.keys().cloned().collect(),
        };
        let name = format!("ckpt-{:04}", ckpt.state.epochs_done);
        let mut state = ckpt.state.clone();
        state.files.clear();
        let mut tensors = Vec::with_capacity(names.len());
        for file in &names {
            let bytes = ckpt.read_verified(file)?;
            state.files.insert(file.clone(), sha256_hex(&bytes));
            tensors.push((Path::new(&name).join(file), bytes));
        }
        let mut state_text = serde_json::to_string_pretty(&state).expect("serializable");
        state_text.push('\n');
        let pointer = Pointer { dir: name.clone(), state_sha256: Some(sha256_hex(state_text.as_bytes())) };
        let mut pointer_text = serde_json::to_string_pretty(&pointer).expect("serializable");
        pointer_text.push('\n');
        let mut files = vec![
            (PathBuf::from("checkpoint.json"), pointer_text.into_bytes()),
            (Path::new(&name).join("state.json"), state_text.into_bytes()),
        ];
        files.extend(tensors);
        Ok(Some(files))
    }

    /// Whether `root` may receive a run of `config`: it is absent or empty, or a run folder of
    /// the same configuration. Anything else belongs to someone else and is never written into.
    pub fn check_owner(&self, config: &RunConfig) -> Result<(), TrainError> {
        let root = &self.root;
        if !root.exists() {
            // a folder to be made under a file cannot be made
            if let Some(file) = root.ancestors().skip(1).find(|a| a.exists()).filter(|a| !a.is_dir()) {
                return Err(TrainError::Config(format!(
                    "--out {}: {} is a file, so the run folder cannot be made there",
                    root.display(),
                    file.display()
                )));
            }
            return Ok(());
        }
        if !root.is_dir() {
            return Err(TrainError::Config(format!("--out {}: is a file, expected a run folder", root.display())));
        }
        // the claim of the process that is about to train here, and the claim files other
        // workers are writing or setting aside (`claim.lock.tmp.<pid>.<n>`), do not make the
        // folder a run
        let empty = std::fs::read_dir(root)
            .map_err(|e| TrainError::io(root, e))?
            .flatten()
            .all(|e| crate::claim::is_claim_file(&e.file_name().to_string_lossy()));
        if empty {
            return Ok(());
        }
        match self.read_config() {
            // the same identity: a `folder:` data set may have moved since
            Ok(Some(existing)) if existing.hash() == config.hash() => Ok(()),
            Ok(Some(existing)) => Err(TrainError::Config(format!(
                "--out {} holds a run of another configuration (hash {}, this one {}): use another --out or remove it",
                root.display(),
                existing.hash(),
                config.hash()
            ))),
            Ok(None) => Err(TrainError::Config(format!(
                "--out {}: the folder is not empty and is not a run folder (no config.toml); train \
                 writes only into a new or empty folder or a run of the same configuration",
                root.display()
            ))),
            Err(e) => Err(TrainError::Config(format!(
                "--out {}: the folder is not a run folder this tool can read ({e}); use another --out",
                root.display()
            ))),
        }
    }
    /// Makes `dir` (already complete) the newest checkpoint, and removes older ones.
    fn commit_checkpoint(&self, epochs_done: usize, state_sha256: String) -> Result<(), TrainError> {
        let name = format!("ckpt-{epochs_done:04}");
        write_json(&self.pointer_path(), &Pointer { dir: name.clone(), state_sha256: Some(state_sha256) })?;
        for entry in std::fs::read_dir(&self.root).map_err(|e| TrainError::io(&self.root, e))? {
            let entry = entry.map_err(|e| TrainError::io(&self.root, e))?;
            let file = entry.file_name().to_string_lossy().to_string();
            if file.starts_with("ckpt-") && file != name {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        Ok(())
    }
}

/// A file of a run folder: its path relative to the folder, and its bytes.
pub type RunFile = (PathBuf, Vec<u8>);

#[derive(Serialize, Deserialize)]
struct Pointer {
    dir: String,
    /// SHA-256 of the checkpoint's state.json (absent in pointers of older versions).
    #[serde(default)]
    state_sha256: Option<String>,
}

/// Writes bytes through a temporary sibling and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    data::store::write_atomic(path, bytes).map_err(TrainError::from)
}

/// Writes a value as pretty JSON, atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), TrainError> {
    let mut text = serde_json::to_string_pretty(value).expect("serializable");
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// Reads a JSON file; `None` when it does not exist.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, TrainError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| TrainError::file(path, format!("not valid JSON for this file: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(TrainError::io(path, e)),
    }
}

/// `metrics.jsonl` text of a history: one JSON object per line.
pub fn metrics_lines(history: &[EpochRecord]) -> String {
    history.iter().map(|r| serde_json::to_string(r).expect("serializable") + "\n").collect()
}

/// An epoch record with `test_acc` and placeholder values elsewhere, for the crate's tests.
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

pub(crate) fn summarize(
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
        input_shape: None,
    }
}

#[cfg(test)]
pub(crate) fn test_record(epoch: usize, stage: usize, test_acc: f64) -> EpochRecord {
    EpochRecord {
        epoch,
        stage,
        train_loss: 1.0,
        train_acc: 0.5,
        test_loss: 1.0,
        test_acc,
        lr: 0.1,
        images_per_sec: 1.0,
        epoch_seconds: 1.0,
        wall_seconds: epoch as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(epoch: usize, stage: usize, test_acc: f64) -> EpochRecord {
        test_record(epoch, stage, test_acc)
    }

    #[test]
    fn the_last_epochs_gain_is_measured_within_its_stage() {
        let start = StartRecord { stage: 1, adc: true, test_loss: 2.0, test_acc: 0.25 };
        let gain = |h: &[EpochRecord], b: Option<&StartRecord>| last_epoch_gain(h, b).map(|g| (g * 1e6).round() / 1e6);
        assert_eq!(gain(&[epoch(1, 1, 0.5), epoch(2, 1, 0.6)], Some(&start)), Some(0.1));
        // one epoch: over the accuracy before training
        assert_eq!(gain(&[epoch(1, 1, 0.5)], Some(&start)), Some(0.25));
        assert_eq!(gain(&[epoch(1, 1, 0.5)], None), None);
        // a two-stage run's single fine-tuning epoch follows an ideal-ADC epoch: no gain
        assert_eq!(gain(&[epoch(1, 1, 0.8), epoch(2, 2, 0.7)], Some(&start)), None);
        assert_eq!(gain(&[epoch(1, 1, 0.8), epoch(2, 2, 0.7), epoch(3, 2, 0.72)], None), Some(0.02));
        assert_eq!(gain(&[], Some(&start)), None);
    }

    #[test]
    fn best_epoch_ignores_the_ideal_adc_stage_of_a_two_stage_run() {
        let two_stage = [epoch(1, 1, 0.6), epoch(2, 1, 0.8), epoch(3, 2, 0.5), epoch(4, 2, 0.55)];
        assert_eq!(best_epoch(&two_stage).unwrap().epoch, 4);
        let one_stage = [epoch(1, 1, 0.6), epoch(2, 1, 0.8), epoch(3, 1, 0.8), epoch(4, 1, 0.7)];
        assert_eq!(best_epoch(&one_stage).unwrap().epoch, 2, "earliest on a tie");
        assert!(best_epoch(&[]).is_none());
    }
}
