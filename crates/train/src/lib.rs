//! Training and evaluation of CIM models (docs/SPEC.md section 2): SGD with momentum and weight
//! decay, a cosine learning-rate schedule, one- and two-stage recipes, test accuracy after every
//! epoch, atomic checkpoints at every epoch, and bit-identical resume.

pub mod adc_bits;
pub mod claim;
pub mod config;
pub mod eval;
pub mod events;
pub mod hooks;
pub mod init;
pub mod inspect;
pub mod run;
pub mod setup;
pub mod speed;
pub mod trainer;
pub mod variation;

pub use adc_bits::{AdcBitsSearch, LayerBits, SearchOrder, evaluate_adc_bits, search_adc_bits};
pub use cim_core::{ComputeDevice, DeviceError};
pub use claim::{Claim, ClaimOutcome, Holder};
pub use config::{ResolvedRun, RunConfig, Uses};
pub use eval::{EvalResult, evaluate, evaluate_run};
pub use events::{Observer, TrainEvent};
pub use hooks::TrainingHooks;
pub use init::StartingPoint;
pub use inspect::{AdcQualityReport, AdcQualityRow, DEFAULT_INSPECT_BATCHES, inspect_run};
pub use run::{EpochRecord, RunDir, Summary, best_epoch, without_timing};
pub use trainer::{TrainOptions, train};
pub use variation::{VariationReport, variation_study};

/// The code version compiled into this binary (git commit, `-dirty` with uncommitted changes).
pub const CODE_VERSION: &str = env!("CIM_CODE_VERSION");

/// Why a run could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The configuration is invalid (names the field, the value and what was expected).
    #[error("{0}")]
    Config(String),
    /// Data could not be loaded.
    #[error(transparent)]
    Data(#[from] data::DataError),
    /// A CIM layer refused what it was given (a setting, a tensor of another shape).
    #[error(transparent)]
    Layer(#[from] cim_core::CimConfigError),
    /// The device asked for (`--device`) cannot be opened.
    #[error(transparent)]
    Device(#[from] cim_core::DeviceError),
    /// A file or folder could not be read or written: the operating system's error.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: std::path::PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A file of a run folder is not what it must be (missing, damaged, of another run).
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// Another process holds the claim of the run folder.
    #[error("--out {}: claimed by {holder}, which is working on this run; run the command again when it is done", .out.display())]
    ClaimHeld {
        /// The run folder.
        out: std::path::PathBuf,
        /// Who holds it.
        holder: Box<crate::claim::Holder>,
    },
    /// A loss, parameter or scale became NaN or infinite: the run stopped, is marked failed,
    /// and its last good checkpoint (if any) is kept.
    #[error("{message}")]
    NonFinite {
        /// What was not finite, where, and which checkpoint is kept.
        message: String,
        /// The failure record written into the run folder.
        marked: std::path::PathBuf,
    },
    /// The run folder holds a run that failed earlier.
    #[error("this run failed earlier: {message}. Remove {} to try again", .path.display())]
    Failed {
        /// Its `failed.json`.
        path: std::path::PathBuf,
        /// The recorded message.
        message: String,
    },
}

impl TrainError {
    pub(crate) fn io(path: impl Into<std::path::PathBuf>, source: std::io::Error) -> Self {
        TrainError::Io { path: path.into(), source }
    }

    pub(crate) fn file(path: impl Into<std::path::PathBuf>, message: impl std::fmt::Display) -> Self {
        TrainError::File { path: path.into(), message: message.to_string() }
    }
}
