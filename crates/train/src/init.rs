//! Starting a run from the final weights of another finished run (a floating-point pretraining):
//! every check on the other run's folder comes before any work, and the weights are read through
//! the checksums its checkpoint recorded.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use models::Model;

use crate::TrainError;
use crate::config::RunConfig;
use crate::eval::load_model_record;
use crate::run::{Checkpoint, RunDir};
use crate::setup::build_model;

/// A finished run a new run may start from, checked.
#[derive(Debug, Clone)]
pub struct StartingPoint {
    /// Its folder.
    pub dir: PathBuf,
    /// Its configuration.
    pub config: RunConfig,
    /// Its final checkpoint (the weights after its last epoch).
    checkpoint: Checkpoint,
}

fn refuse(dir: &Path, why: impl std::fmt::Display) -> TrainError {
    TrainError::Config(format!("--init-from {}: {why}", dir.display()))
}

impl StartingPoint {
    /// Checks that `dir` holds a finished run that `config` may start from: its configuration
    /// has the hash `config.init_from` names, it finished every epoch, and it has the same
    /// architecture and data set. Its weights are verified against their checksum here too.
    pub fn check(config: &RunConfig, dir: &Path) -> Result<Self, TrainError> {
        let Some(want) = &config.init_from else {
            return Err(refuse(dir, "the run's configuration names no init_from"));
        };
        let run = RunDir::new(dir);
        let source = match run.read_config() {
            Ok(Some(c)) => c,
            Ok(None) => return Err(refuse(dir, "not a run folder (no config.toml)")),
            Err(e) => return Err(refuse(dir, format!("not a run folder this tool can read ({e})"))),
        };
        if source.hash() != *want {
            return Err(refuse(
                dir,
                format!("holds the run with config hash {}, this run starts from {want}", source.hash()),
            ));
        }
        if let Some(failure) = run.read_failure().map_err(|e| refuse(dir, e))? {
            return Err(refuse(dir, format!("the run failed ({}): not a starting point", failure.message)));
        }
        let summary = run
            .read_summary()
            .map_err(|e| refuse(dir, e))?
            .ok_or_else(|| refuse(dir, "not a finished run (no summary.json): train it to the end first"))?;
        if summary.config_hash != *want {
            return Err(refuse(
                dir,
                format!(
                    "summary.json belongs to config hash {}, the folder's config.toml to {want}",
                    summary.config_hash
                ),
            ));
        }
        let checkpoint = run
            .latest_checkpoint()
            .map_err(|e| refuse(dir, e))?
            .ok_or_else(|| refuse(dir, "holds no checkpoint with the run's final weights"))?;
        checkpoint.check_config(&source, &run.config_path()).map_err(|e| refuse(dir, e))?;
        if checkpoint.state.epochs_done != source.epochs {
            return Err(refuse(
                dir,
                format!(
                    "its newest checkpoint is after epoch {} of {}: not the final weights",
                    checkpoint.state.epochs_done, source.epochs
                ),
            ));
        }
        if source.model != config.model {
            return Err(refuse(dir, format!("a {} run, this run is a {}", source.model.name(), config.model.name())));
        }
        // a folder's identity is NAME@DIGEST: the same images under another name are the same data
        let content = |c: &RunConfig| c.data_key().rsplit('@').next().unwrap_or_default().to_string();
        if content(&source) != content(config) {
            return Err(refuse(
                dir,
                format!("trained on data set {}, this run on {}", source.data_key(), config.data_key()),
            ));
        }
        if config.dataset.starts_with(data::source::FOLDER_PREFIX) && source.folder_holdout != config.folder_holdout {
            return Err(refuse(
                dir,
                format!(
                    "held out {} images per class of the folder, this run {}: their test splits differ",
                    source.folder_holdout, config.folder_holdout
                ),
            ));
        }
        if let Some(why) = activation_mismatch(&source, config) {
            return Err(refuse(dir, why));
        }
        checkpoint.read_verified("model.bpk").map_err(|e| refuse(dir, e))?;
        Ok(Self { dir: dir.to_path_buf(), config: source, checkpoint })
    }

    /// `model` (this run's, freshly built) with the starting point's weights in every layer
    /// ([`Model::starting_from`]).
    pub fn apply(&self, model: Model, shape: [usize; 3], classes: usize, device: &Device) -> Result<Model, TrainError> {
        let source = self.config.resolve().map_err(|e| refuse(&self.dir, e))?;
        let pretrained = build_model(&source, shape, classes, device)?;
        let pretrained = load_model_record(pretrained, &self.checkpoint).map_err(|e| refuse(&self.dir, e))?;
        model.starting_from(&pretrained).map_err(|e| refuse(&self.dir, e))
    }
}

/// Why a run of `config` may not start from the finished run of `source`, as far as the input of
/// their float convs goes: a floating-point run must keep the network form it starts from (a
/// clamp network continued with `relu`, or the other way, is a different network); a run on
/// arrays always clamps, whatever its start.
pub fn activation_mismatch(source: &RunConfig, config: &RunConfig) -> Option<String> {
    (!config.uses_crossbar() && source.activation != config.activation).then(|| {
        format!(
            "its floating-point convs were trained with activation = {}, this run has activation = {}; give the \
             same value, so that the network keeps its form",
            source.activation, config.activation
        )
    })
}
