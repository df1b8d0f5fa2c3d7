//! What training reports while it works, for its caller to show: the library prints nothing and
//! draws no progress bar; the command line turns these events into both.

use std::sync::Arc;

use crate::run::{EpochRecord, StartRecord};

/// One thing a training (or an ADC-bits search) has to say.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TrainEvent<'a> {
    /// An epoch starts.
    EpochStart {
        /// The run's method.
        method: &'a str,
        /// The epoch, counted from 1.
        epoch: usize,
        /// The run's epochs in all.
        epochs: usize,
        /// Its training steps.
        steps: usize,
    },
    /// A training step is done: the epoch's running figures.
    Step {
        /// Mean training loss of the epoch so far.
        loss: f64,
        /// Training accuracy of the epoch so far (a fraction).
        accuracy: f64,
        /// Training images per second of the epoch so far.
        images_per_sec: f64,
    },
    /// A run that starts from another was tested once before its first step.
    BeforeTraining {
        /// The run's method.
        method: &'a str,
        /// What the test found.
        record: &'a StartRecord,
        /// Whether the network was tested with ideal ADCs (the first stage of a two-stage
        /// recipe) although its method has them.
        ideal_adc: bool,
    },
    /// An epoch is done, tested and saved.
    EpochEnd {
        /// The run's method.
        method: &'a str,
        /// The run's epochs in all.
        epochs: usize,
        /// The epoch's metrics.
        record: &'a EpochRecord,
    },
    /// A step of a search over ADC resolutions (what is being evaluated now).
    Searching {
        /// What is being evaluated.
        what: &'a str,
    },
    /// The training or search stopped: finished, paused, failed or refused.
    Stopped,
}

/// Receives the events of a training; shared, so that options holding it can be cloned.
pub type Observer = Arc<dyn Fn(&TrainEvent<'_>) + Send + Sync>;

/// An observer that ignores every event.
pub fn silent() -> Observer {
    Arc::new(|_| {})
}
