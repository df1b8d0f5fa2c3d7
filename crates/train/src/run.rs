//! The run folder: `config.toml` (the resolved configuration), `checkpoint.json` pointing at the
//! newest `ckpt-NNNN/` (model, optimizer, history), `metrics.jsonl` (one line per epoch) and
//! `summary.json`. Every file is written to a temporary name and renamed into place.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::config::RunConfig;

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

impl EpochRecord {
    /// Fields that depend on the machine's speed, not on the computation.
    pub const TIMING_FIELDS: [&'static str; 3] = ["images_per_sec", "epoch_seconds", "wall_seconds"];
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

    /// The newest checkpoint's state and folder, if any.
    pub fn latest_checkpoint(&self) -> Result<Option<(CheckpointState, PathBuf)>, TrainError> {
        let Some(pointer): Option<Pointer> = read_json(&self.pointer_path())? else {
            return Ok(None);
        };
        let dir = self.root.join(&pointer.dir);
        let state = read_json(&dir.join("state.json"))?
            .ok_or_else(|| TrainError::io(dir.join("state.json"), "missing: the checkpoint folder is incomplete"))?;
        Ok(Some((state, dir)))
    }

    /// Makes `dir` (already complete) the newest checkpoint, and removes older ones.
    pub fn commit_checkpoint(&self, epochs_done: usize) -> Result<(), TrainError> {
        let name = format!("ckpt-{epochs_done:04}");
        write_json(&self.pointer_path(), &Pointer { dir: name.clone() })?;
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

#[derive(Serialize, Deserialize)]
struct Pointer {
    dir: String,
}

/// Writes bytes through a temporary sibling and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    data::store::write_atomic(path, bytes).map_err(|e| TrainError::io(path, e))
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
            .map_err(|e| TrainError::io(path, format!("not valid JSON for this file: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(TrainError::io(path, e)),
    }
}

/// `metrics.jsonl` text of a history: one JSON object per line.
pub fn metrics_lines(history: &[EpochRecord]) -> String {
    history.iter().map(|r| serde_json::to_string(r).expect("serializable") + "\n").collect()
}
