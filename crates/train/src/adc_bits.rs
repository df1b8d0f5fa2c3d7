//! `adc-bits`: the fewest ADC bits per CIM layer of a trained run whose accuracy stays within a
//! tolerance of the run's own, without retraining.
//!
//! A configuration is a list of bits, one per CIM layer. Its model is the trained one with every
//! layer whose bits differ from the trained bits read out at the new resolution, and the ADC
//! windows of those layers calibrated again (by the run's own `adc_init`) on the first training
//! batches, as training calibrates them: all changed layers in the same forward passes, each
//! recording its partial sums and passing them on exact. The trained weights, weight steps and
//! the windows of unchanged layers are kept. So a configuration's accuracy is a function of the
//! bits alone, and [`evaluate_adc_bits`] reproduces any result of the search.
//!
//! The search (greedy, as an architect would do it by hand): every layer's sensitivity is the
//! accuracy lost when it alone loses one bit; from the most sensitive layer to the least (or the
//! other way round, [`SearchOrder`]), each layer then gives up one bit after another for as long
//! as the whole network stays within the tolerance. Accuracies are counts of correct test
//! images, so "within" is exact.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use burn::tensor::{Device, Tensor, TensorData};
use cim_core::ComputeDevice;
use data::{BatchLoader, DataDir, EpochBatches, ImageSet, Normalize};
use models::{Model, PsumBits};
use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::config::RunConfig;
use crate::eval::{evaluate, load_trained};
use crate::events::{Observer, TrainEvent};
use crate::run::RunDir;
use crate::setup::load_run_data;

/// The fewest bits a layer is given.
pub const MIN_ADC_BITS: u32 = 1;

/// The order in which the greedy search visits the layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum SearchOrder {
    /// The most sensitive layer first: the layers that matter most are settled while the whole
    /// tolerance is still there.
    #[default]
    MostSensitive,
    /// The least sensitive layer first: the cheapest bits go first, which tends to remove more.
    LeastSensitive,
}

impl SearchOrder {
    /// `most sensitive first` or `least sensitive first`.
    pub fn label(self) -> &'static str {
        match self {
            SearchOrder::MostSensitive => "most sensitive first",
            SearchOrder::LeastSensitive => "least sensitive first",
        }
    }
}

/// One CIM layer's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerBits {
    /// CIM layer, in forward order (0-based).
    pub layer: usize,
    /// Its shape, `C_in->C_out sS`.
    pub shape: String,
    /// The bits it was trained with.
    pub trained_bits: u32,
    /// The bits the search gives it.
    pub bits: u32,
    /// Test accuracy lost (points) when this layer alone has one bit fewer than trained (`None`
    /// when it was trained at [`MIN_ADC_BITS`]).
    pub sensitivity_points: Option<f64>,
}

/// The accuracies on the test images of the data set that the run's test subset left out: the
/// search chose on the run's own test images, these it has not seen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnseenCheck {
    /// Test images.
    pub images: usize,
    /// Accuracy of the run as trained (fraction).
    pub trained_accuracy: f64,
    /// Accuracy with the bits found (fraction).
    pub accuracy: f64,
}

/// What the search found for a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdcBitsSearch {
    /// The run's method.
    pub method: String,
    /// The run's config hash.
    pub config_hash: String,
    /// Test images every accuracy is measured on (the run's own test split).
    pub images: usize,
    /// The tolerance, in accuracy points.
    pub within_points: f64,
    /// The tolerance in test images: the most the network may get wrong beyond the run's own
    /// errors (the points rounded down to whole images).
    pub tolerance_images: usize,
    /// The order the layers were visited in.
    pub order: SearchOrder,
    /// Test accuracy of the run as trained (fraction).
    pub trained_accuracy: f64,
    /// Test accuracy with the bits found (fraction).
    pub accuracy: f64,
    /// One entry per CIM layer, forward order.
    pub layers: Vec<LayerBits>,
    /// The bits found, as a run setting (a single value where every layer has the same).
    pub psum_bits: PsumBits,
    /// Configurations evaluated.
    pub evaluations: usize,
    /// The same comparison on test images the search has not seen (`None` when the run tests on
    /// its whole test split).
    pub unseen: Option<UnseenCheck>,
}

impl AdcBitsSearch {
    /// The run configuration with the bits found (for its energy, or to train with).
    pub fn config(&self, trained: &RunConfig) -> RunConfig {
        RunConfig { psum_bits: self.psum_bits.clone(), ..trained.clone() }
    }
}

/// A trained run made ready to evaluate configurations of ADC bits.
struct Trial {
    trained: Model,
    trained_bits: Vec<u32>,
    calibration: Vec<Tensor<4>>,
    test: Arc<ImageSet>,
    unseen: Option<Arc<ImageSet>>,
    batch_size: usize,
    norm: Normalize,
    device: Device,
    /// Correct test images by configuration (a configuration is evaluated once).
    seen: HashMap<Vec<u32>, usize>,
}

impl Trial {
    fn open(run_dir: &Path, data_dir: &DataDir, device: ComputeDevice) -> Result<(Self, RunConfig), TrainError> {
        let (config, _) = RunDir::new(run_dir).finished("adc-bits")?;
        if !config.uses_adc_setting() {
            return Err(TrainError::Config(format!(
                "{}: a run of method {}, which has no built-in ADC whose bits could be chosen; give a run of a \
                 method with the built-in ADC (layerwise, layercol-2stage, arraywise, columnwise, ...)",
                run_dir.display(),
                config.method
            )));
        }
        let data = load_run_data(&config, data_dir)?;
        let device = device.open()?;
        let (trained, _) = load_trained(run_dir, data.test.shape, data.test.classes.len(), &device)?;
        let trained_bits: Vec<u32> = trained.cim_layers().iter().map(|l| l.config().psum_bits.unwrap_or(0)).collect();
        let batch_size = config.batch_size.min(data.train.len());
        let indices: Vec<usize> = (0..data.train.len()).collect();
        // the first batches of the first training epoch, without augmentation: the images the
        // deployed network sees
        let plan = EpochBatches::training(batch_size, None, data.data.normalize.clone(), config.seed, 0);
        let calibration = BatchLoader::new(data.train.clone(), &indices, plan)
            .take(cim_core::calibration::CALIBRATION_BATCHES)
            .map(|b| Tensor::<4>::from_data(TensorData::new(b.images, b.shape), &device))
            .collect();
        let trial = Trial {
            trained,
            trained_bits,
            calibration,
            test: data.test.clone(),
            unseen: data.unseen_test().map(Arc::new),
            batch_size: config.batch_size,
            norm: data.data.normalize.clone(),
            device,
            seen: HashMap::new(),
        };
        Ok((trial, config))
    }

    /// The trained model read out with `bits` (see the module's description).
    fn model(&self, bits: &[u32]) -> Result<Model, TrainError> {
        let mut model = self.trained.clone();
        let changed: Vec<usize> = (0..bits.len()).filter(|&i| bits[i] != self.trained_bits[i]).collect();
        if changed.is_empty() {
            return Ok(model);
        }
        let mut layers = model.cim_layers_mut();
        for &i in &changed {
            let layer = &mut *layers[i];
            *layer =
                layer.clone().with_psum_bits(bits[i]).map_err(|e| TrainError::Config(format!("CIM layer {i}: {e}")))?;
            layer.arm_psum_calibration();
        }
        for x in &self.calibration {
            let _ = model.forward(x.clone());
        }
        let mut layers = model.cim_layers_mut();
        for &i in &changed {
            layers[i].finish_psum_calibration();
        }
        Ok(model)
    }

    /// Correct test images with `bits`.
    fn correct(&mut self, bits: &[u32]) -> Result<usize, TrainError> {
        if let Some(&n) = self.seen.get(bits) {
            return Ok(n);
        }
        let model = self.model(bits)?;
        let result = evaluate(&model, &self.test, self.batch_size, &self.norm, &self.device);
        let correct = (result.accuracy * result.images as f64).round() as usize;
        self.seen.insert(bits.to_vec(), correct);
        Ok(correct)
    }

    /// Accuracy with `bits` on `set` (not remembered).
    fn accuracy_on(&self, bits: &[u32], set: &Arc<ImageSet>) -> Result<f64, TrainError> {
        Ok(evaluate(&self.model(bits)?, set, self.batch_size, &self.norm, &self.device).accuracy)
    }

    fn accuracy(&self, correct: usize) -> f64 {
        correct as f64 / self.test.len() as f64
    }
}

/// Checks `--within`: a finite, non-negative number of accuracy points.
pub fn check_within(within_points: f64) -> Result<(), TrainError> {
    // an accuracy is at most 100 points: a tolerance above that accepts any model, even one
    // that guesses, and is a mistake (a fraction given as points, or a typo)
    if within_points.is_finite() && (0.0..=100.0).contains(&within_points) {
        Ok(())
    } else {
        Err(TrainError::Config(format!(
            "--within {within_points}: expected accuracy points from 0 to 100 (e.g. 1.0: at most one point \
             below the trained run)"
        )))
    }
}

/// Per CIM layer, the accuracy points the model loses when that layer alone reads out one bit
/// fewer than trained (`None` for a layer at the fewest bits already).
fn sensitivities(trial: &mut Trial, reference: usize, say: &dyn Fn(String)) -> Result<Vec<Option<f64>>, TrainError> {
    let trained_bits = trial.trained_bits.clone();
    let images = trial.test.len();
    let mut sensitivity = vec![None; trained_bits.len()];
    for (i, &b) in trained_bits.iter().enumerate() {
        say(format!("sensitivity of layer {i} of {}", trained_bits.len()));
        if b > MIN_ADC_BITS {
            let mut bits = trained_bits.clone();
            bits[i] -= 1;
            let lost = reference as f64 - trial.correct(&bits)? as f64;
            sensitivity[i] = Some(100.0 * lost / images as f64);
        }
    }
    Ok(sensitivity)
}

/// The layers the search visits, by sensitivity in `order`; ties in forward order (layers that
/// cannot lose a bit are not visited).
fn visiting_order(sensitivity: &[Option<f64>], order: SearchOrder) -> Vec<usize> {
    let mut visits: Vec<usize> = (0..sensitivity.len()).filter(|&i| sensitivity[i].is_some()).collect();
    visits.sort_by(|&a, &b| {
        let (sa, sb) = (sensitivity[a].unwrap_or_default(), sensitivity[b].unwrap_or_default());
        match order {
            SearchOrder::MostSensitive => sb.total_cmp(&sa),
            SearchOrder::LeastSensitive => sa.total_cmp(&sb),
        }
        .then(a.cmp(&b))
    });
    visits
}

/// Finds the fewest ADC bits per CIM layer of the run in `run_dir` whose test accuracy stays
/// within `within_points` of the run's own (see the module's description); `on_event` hears
/// what is being tried ([`TrainEvent::Searching`]).
pub fn search_adc_bits(
    run_dir: &Path,
    within_points: f64,
    order: SearchOrder,
    data_dir: &DataDir,
    device: ComputeDevice,
    on_event: &Observer,
) -> Result<AdcBitsSearch, TrainError> {
    check_within(within_points)?;
    let (mut trial, config) = Trial::open(run_dir, data_dir, device)?;
    let say = |what: String| on_event(&TrainEvent::Searching { what: &what });
    let images = trial.test.len();
    let trained_bits = trial.trained_bits.clone();
    let reference = trial.correct(&trained_bits)?;
    // the tolerance as a number of images, rounded down: never a configuration outside it
    let tolerance_images = (within_points / 100.0 * images as f64 + 1e-9).floor() as usize;
    let good_enough = |correct: usize| correct + tolerance_images >= reference;

    let sensitivity = sensitivities(&mut trial, reference, &say)?;
    let visits = visiting_order(&sensitivity, order);
    let mut bits = trained_bits.clone();
    let mut correct = reference;
    for &i in &visits {
        while bits[i] > MIN_ADC_BITS {
            let mut candidate = bits.clone();
            candidate[i] -= 1;
            say(format!("layer {i} at {} bits ({} configurations so far)", candidate[i], trial.seen.len()));
            let c = trial.correct(&candidate)?;
            if !good_enough(c) {
                break;
            }
            (bits, correct) = (candidate, c);
        }
    }

    let unseen = match trial.unseen.clone() {
        Some(set) => {
            say(format!("both on the {} test images the search has not seen", set.len()));
            Some(UnseenCheck {
                images: set.len(),
                trained_accuracy: trial.accuracy_on(&trained_bits, &set)?,
                accuracy: trial.accuracy_on(&bits, &set)?,
            })
        }
        None => None,
    };
    on_event(&TrainEvent::Stopped);
    let layers = layer_rows(&trial.trained, &trained_bits, &bits, &sensitivity);
    let found = PsumBits::PerLayer(bits).canonical();
    Ok(AdcBitsSearch {
        method: config.method.clone(),
        config_hash: config.hash(),
        images,
        within_points,
        tolerance_images,
        order,
        trained_accuracy: trial.accuracy(reference),
        accuracy: trial.accuracy(correct),
        layers,
        psum_bits: found,
        evaluations: trial.seen.len(),
        unseen,
    })
}

/// The test accuracy of the run in `run_dir` read out with `bits` (one per CIM layer, or one
/// for all), the changed layers calibrated again as the search does it.
pub fn evaluate_adc_bits(
    run_dir: &Path,
    bits: &PsumBits,
    data_dir: &DataDir,
    device: ComputeDevice,
) -> Result<f64, TrainError> {
    let (mut trial, config) = Trial::open(run_dir, data_dir, device)?;
    let layers = trial.trained_bits.len();
    bits.check_layers(layers, config.model.name()).map_err(TrainError::Config)?;
    let correct = trial.correct(&bits.per_layer(layers))?;
    Ok(trial.accuracy(correct))
}

fn layer_rows(model: &Model, trained: &[u32], found: &[u32], sensitivity: &[Option<f64>]) -> Vec<LayerBits> {
    model
        .cim_layers()
        .iter()
        .enumerate()
        .map(|(i, l)| LayerBits {
            layer: i,
            shape: l.config().shape_label(),
            trained_bits: trained[i],
            bits: found[i],
            sensitivity_points: sensitivity[i],
        })
        .collect()
}
