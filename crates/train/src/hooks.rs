//! What a CIM model does around the generic training loop ([`crate::trainer`]): at the start of
//! an epoch its ADCs are switched on or off by the recipe's schedule and calibrated on the epoch's
//! first batches where the schedule says so; before each step, variation-aware training draws
//! fresh cell noise. The loop calls these hooks and knows nothing of arrays or ADCs.

use burn::tensor::{Device, Tensor, TensorData};
use data::{Batch, BatchLoader};
use models::Model;

use crate::TrainError;
use crate::config::ResolvedRun;

/// The steps a model takes around the training loop's own.
pub trait TrainingHooks {
    /// Before the first step of `epoch` (0-based). `loader` starts a loader of the epoch's
    /// batches, in the order the loop will see them, for a model that reads some first (the
    /// ADC calibration does).
    fn start_epoch(
        &mut self,
        run: &ResolvedRun,
        epoch: usize,
        loader: &dyn Fn() -> BatchLoader,
        device: &Device,
    ) -> Result<(), TrainError>;

    /// Before training step `step` of `epoch`.
    fn before_step(&mut self, run: &ResolvedRun, epoch: usize, step: usize);
}

impl TrainingHooks for Model {
    fn start_epoch(
        &mut self,
        run: &ResolvedRun,
        epoch: usize,
        loader: &dyn Fn() -> BatchLoader,
        device: &Device,
    ) -> Result<(), TrainError> {
        for layer in self.cim_layers_mut() {
            layer.set_adc_enabled(run.adc_enabled(epoch))?;
        }
        if run.calibrates_at(epoch) {
            calibrate_adcs(self, loader().take(cim_core::calibration::CALIBRATION_BATCHES), device);
        }
        Ok(())
    }

    fn before_step(&mut self, run: &ResolvedRun, epoch: usize, step: usize) {
        let sigma = run.config.train_variation_sigma;
        if sigma > 0.0 {
            // fresh cell noise at every step, a function of (seed, epoch, step, layer)
            let step_seed = cim_core::variation::cell_seed(run.config.seed ^ ((epoch as u64) << 32), step);
            for (i, layer) in self.cim_layers_mut().into_iter().enumerate() {
                layer.set_training_variation(Some(sigma), cim_core::variation::cell_seed(step_seed, i));
            }
        }
    }
}

/// ADC calibration (docs/SPEC.md section 1): forward passes over the first training batches of the
/// stage, in training mode and without cell noise, record every ADC group's partial sums; each
/// layer then sets its windows from them. The batches are trained on afterwards as usual.
fn calibrate_adcs(model: &mut Model, batches: impl Iterator<Item = Batch>, device: &Device) {
    let inputs = batches.map(|batch| Tensor::<4>::from_data(TensorData::new(batch.images, batch.shape), device));
    calibrate_adcs_on(model, inputs);
}

/// Sets every ADC window of `model` from forward passes of `inputs` (without cell variation).
pub(crate) fn calibrate_adcs_on(model: &mut Model, inputs: impl Iterator<Item = Tensor<4>>) {
    for layer in model.cim_layers_mut() {
        layer.set_training_variation(None, 0);
        layer.arm_psum_calibration();
    }
    for x in inputs {
        let _ = model.forward(x);
    }
    for layer in model.cim_layers_mut() {
        layer.finish_psum_calibration();
    }
}
