//! The CIM convolution as a burn module: the fast path of docs/SPEC.md section 1.
//!
//! Every (slice, row tile, column) partial sum of the layer comes from ONE grouped convolution
//! ([`crate::psums`]): the activation codes are padded to G*n_c channels and viewed as G groups,
//! and the digit planes of all polarities and slices are stacked per row tile. The fused ADC pass
//! ([`crate::adc`]) then quantizes, dequantizes and accumulates.
//!
//! Every ADC group has a window: a step s_p and an offset z (docs/SPEC.md section 1, "ADC"). Both
//! are calibrated from the partial sums of the first training batches ([`crate::calibration`]);
//! a `learned` window then trains z like s_p, a `zero` window keeps z = 0.
//!
//! With an ideal ADC the layer is linear in the cells, so the same result is one plain
//! convolution with the dequantized weights s_w * q / (2^A - 1) (with cell gains folded in when a
//! variation hook is set); its gradient is the one the digit straight-through estimator defines.

use std::sync::{Arc, Mutex};

use burn::module::{Flag, Module, Param};
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};

use crate::activation::activation_codes;
use crate::adc::{AdcChannels, accumulate_reference, adc_accumulate};
use crate::calibration::{GroupSamples, calibrate, uniform_window};
use crate::config::CimConvConfig;
use crate::lsq::{LsqRange, scale_grad};
use crate::own::{OwnQuantizers, WeightQuantizer};
use crate::psums::{grouped_psums, grouped_psums_of_weight_codes, psums_through_adc};
use crate::quality::{ChannelWindow, DigitShares, SliceQuality, accumulate, uniform_code};
use crate::settings::{AdcWindow, CimConfigError, Granularity};
use crate::slicing::BitSlicing;
use crate::tiling::{LayerCounts, Tiling};
use flex_kernels::host::fused_available;
use flex_kernels::im2col::ConvGeometry;

/// Host-side constants of a layer's fast path, derived once from its configuration.
#[derive(Debug)]
struct Plan {
    tiling: Tiling,
    slicing: BitSlicing,
    /// Per (g, c): index into the flat weight steps.
    weight_step_gc: Vec<i64>,
    /// Per fast-path channel k = (g, polarity, slice, c): index into the flat weight steps.
    weight_step_k: Vec<i64>,
    /// Per k: index into the flat partial-sum steps.
    psum_step_k: Vec<i64>,
    /// Per k: sign * 2^(b_c*(S-1-s)) / (2^A - 1).
    coef_k: Vec<f32>,
    /// Per (polarity, slice): sign * 2^(b_c*(S-1-s)), to fold digit planes with an ideal ADC.
    plane_weight: Vec<f32>,
    /// LSQ gradient scale of every weight step.
    weight_grad_scale: Vec<f32>,
    /// Per flat partial-sum step: its ADC range.
    psum_range: Vec<LsqRange>,
    /// Per flat partial-sum step: (row tile, column) pairs sharing it.
    psum_columns: Vec<usize>,
    /// Per flat partial-sum step: its (polarity, slice) index, polarity * S + s (the groups a
    /// layer-granularity ADC would pool).
    psum_slice: Vec<usize>,
    /// Who shares an ADC window (the plug-in's granularity where there is one).
    psum_granularity: Granularity,
    /// How weights become codes: the method's own quantizer, or LSQ.
    weights: &'static dyn WeightQuantizer,
}

impl Plan {
    fn new(config: &CimConvConfig, own: OwnQuantizers) -> Result<Self, CimConfigError> {
        let (tiling, slicing) = config.validate()?;
        if let (Some(bits), Some(q)) = (config.psum_bits, own.psum) {
            return Err(CimConfigError::TwoAdcs { bits, quantizer: q.name() });
        }
        let (g_n, c_n) = (tiling.row_tiles, tiling.out_channels);
        let (pol_n, s_n) = (slicing.polarities(), slicing.slices());
        let weights = own.weights(config.weight_granularity);
        let wg = weights.granularity();
        let pg = own.psum.map_or(config.psum_granularity, |q| q.granularity());
        let p_groups = tiling.scale_groups(pg);
        let levels = config.act_levels();
        let mut weight_step_k = Vec::new();
        let mut psum_step_k = Vec::new();
        let mut coef_k = Vec::new();
        for g in 0..g_n {
            for pol in 0..pol_n {
                for s in 0..s_n {
                    for c in 0..c_n {
                        weight_step_k.push(tiling.scale_group(wg, g, c) as i64);
                        psum_step_k.push(((pol * s_n + s) * p_groups + tiling.scale_group(pg, g, c)) as i64);
                        coef_k.push(slicing.polarity_sign(pol) * slicing.place_value(s) / levels);
                    }
                }
            }
        }
        let weight_step_gc = (0..g_n)
            .flat_map(|g| (0..c_n).map(move |c| (g, c)))
            .map(|(g, c)| tiling.scale_group(wg, g, c) as i64)
            .collect();
        let plane_weight = (0..pol_n)
            .flat_map(|pol| (0..s_n).map(move |s| (pol, s)))
            .map(|(pol, s)| slicing.polarity_sign(pol) * slicing.place_value(s))
            .collect();
        let weight_range = slicing.weight_range();
        let weight_grad_scale =
            tiling.scale_group_members(wg).iter().map(|m| weights.grad_scale(m.weights, weight_range)).collect();
        let members = tiling.scale_group_members(pg);
        let mut psum_range = Vec::new();
        let mut psum_columns = Vec::new();
        let mut psum_slice = Vec::new();
        for pol in 0..pol_n {
            for s in 0..s_n {
                let range = match own.psum {
                    Some(q) => q.codes(),
                    None => slicing.adc_range(s, config.psum_bits.unwrap_or(1)),
                };
                for m in &members {
                    psum_range.push(range);
                    psum_columns.push(m.columns);
                    psum_slice.push(pol * s_n + s);
                }
            }
        }
        Ok(Self {
            tiling,
            slicing,
            weight_step_gc,
            weight_step_k,
            psum_step_k,
            coef_k,
            plane_weight,
            weight_grad_scale,
            psum_range,
            psum_columns,
            psum_slice,
            psum_granularity: pg,
            weights,
        })
    }

    fn channels(&self) -> usize {
        self.coef_k.len()
    }
}

/// What forwards record about the partial sums, on request.
#[derive(Debug, Default)]
enum Recording {
    /// Nothing.
    #[default]
    Off,
    /// Calibration forwards: every ADC group's partial sums, merged over batches.
    Calibration(Vec<GroupSamples>),
    /// Inspection: ADC statistics per (polarity, slice).
    Quality(Vec<SliceQuality>),
}

/// A convolution that runs on simulated N x N memory arrays (docs/SPEC.md section 1).
#[derive(Module, Debug)]
pub struct CimConv2d {
    /// Float weights W [C_out, C_in, k, k] (the latent weights LSQ quantizes).
    pub weight: Param<Tensor<4>>,
    /// Weight steps s_w, row-major over [`Tiling::scale_shape`] of the weight granularity.
    pub weight_scale: Param<Tensor<1>>,
    /// ADC steps s_p, row-major over [polarities, S, scale shape of the partial-sum granularity].
    pub psum_scale: Param<Tensor<1>>,
    /// ADC offsets z, one per step (integer partial-sum units). Trained for a `learned` window,
    /// fixed at 0 for a `zero` window.
    pub psum_offset: Param<Tensor<1>>,
    /// The data-driven initial ADC steps (not trained). s_p lives in integer partial-sum units,
    /// O(100), while its LSQ gradient comes through dequantization coefficients O(1e-2): plain
    /// SGD would leave it frozen. Its gradient is therefore multiplied by this unit squared,
    /// which makes SGD act on s_p / unit, a step of order 1, exactly as if the step had been
    /// parametrized relative to its initial value (weight decay is unaffected). The offset z,
    /// in the same units, gets the same treatment.
    pub psum_scale_unit: Param<Tensor<1>>,
    /// Whether to behave as during training (variation-aware noise). Cleared by `valid()`.
    pub training: Param<Flag>,
    #[module(skip)]
    config: CimConvConfig,
    #[module(skip)]
    plan: Arc<Plan>,
    /// Quantize partial sums (false: ideal ADC even if the config names P bits; the first
    /// stage of two-stage training).
    #[module(skip)]
    adc_enabled: bool,
    /// Conductance multiplier of every cell, [G, polarities * S, C_out, n_c * k * k]
    /// (the variation hook; never part of the trained parameters).
    #[module(skip)]
    cell_gain: Option<Tensor<4>>,
    /// Log-normal cell noise (sigma, seed) of the next training forwards (variation-aware
    /// training); the trainer gives every step and layer its own seed.
    #[module(skip)]
    training_variation: Option<(f64, u64)>,
    #[module(skip)]
    recording: Arc<Mutex<Recording>>,
    /// A method's own quantizers in place of the built-in ones (run through generic ops).
    #[module(skip)]
    own: OwnQuantizers,
}

impl CimConvConfig {
    /// Builds the layer: Kaiming-normal weights (fan-in, gain sqrt(2), as ResNets use) with
    /// LSQ-initialised weight steps; ADC windows are set from data by
    /// [`CimConv2d::arm_psum_calibration`] before the first training step.
    pub fn init(&self, device: &Device) -> Result<CimConv2d, CimConfigError> {
        self.init_with(OwnQuantizers::BUILT_IN, device)
    }

    /// Builds the layer with a method's own quantizers in place of the built-in ones
    /// ([`crate::own`]). An ADC of one's own sets its levels, granularity and window, so
    /// `psum_bits` must be unset (one ADC per column); a weight quantizer of one's own sets the
    /// weight granularity.
    pub fn init_with(&self, own: OwnQuantizers, device: &Device) -> Result<CimConv2d, CimConfigError> {
        let plan = Plan::new(self, own)?;
        let learned_window = own.psum.map_or(self.adc_window, |q| q.window()).is_learned();
        let fan_in = self.in_channels * self.kernel_size * self.kernel_size;
        let std = (2.0 / fan_in as f64).sqrt();
        let shape = [self.out_channels, self.in_channels, self.kernel_size, self.kernel_size];
        let weight = Tensor::<4>::random(shape, Distribution::Normal(0.0, std), device);
        let psum_steps = plan.psum_range.len();
        let mut layer = CimConv2d {
            weight: Param::from_tensor(weight),
            weight_scale: Param::from_tensor(Tensor::ones([plan.weight_grad_scale.len()], device)),
            psum_scale: Param::from_tensor(Tensor::ones([psum_steps], device)),
            psum_offset: Param::from_tensor(Tensor::zeros([psum_steps], device)).set_require_grad(learned_window),
            psum_scale_unit: Param::from_tensor(Tensor::ones([psum_steps], device)).set_require_grad(false),
            training: Param::from_bool(true),
            adc_enabled: self.psum_bits.is_some() || own.psum.is_some(),
            config: self.clone(),
            plan: Arc::new(plan),
            cell_gain: None,
            training_variation: None,
            recording: Arc::default(),
            own,
        };
        layer.init_weight_scale();
        Ok(layer)
    }
}

impl CimConv2d {
    /// The layer's configuration.
    pub fn config(&self) -> &CimConvConfig {
        &self.config
    }

    /// How the layer is cut into arrays.
    pub fn tiling(&self) -> &Tiling {
        &self.plan.tiling
    }

    /// How weight codes are cut into cells.
    pub fn slicing(&self) -> &BitSlicing {
        &self.plan.slicing
    }

    /// Hardware counts of the layer (docs/SPEC.md: arrays, ADC conversions, dequantization).
    pub fn counts(&self) -> LayerCounts {
        self.config.counts(self.own).expect("the configuration was validated when the layer was built")
    }

    /// The method's own quantizers the layer runs in place of the built-in ones.
    pub fn own_quantizers(&self) -> OwnQuantizers {
        self.own
    }

    /// The weight quantizer in effect: the method's own, or LSQ at the configured granularity.
    pub fn weight_quantizer(&self) -> &'static dyn WeightQuantizer {
        self.plan.weights
    }

    /// Who shares a weight step: the own weight quantizer's granularity, or the configured one.
    pub fn weight_granularity(&self) -> Granularity {
        self.plan.weights.granularity()
    }

    /// Whether the layer has an ADC at all (built-in `psum_bits` or a plug-in).
    fn has_adc(&self) -> bool {
        self.config.psum_bits.is_some() || self.own.psum.is_some()
    }

    /// The ADC's window kind: the plug-in's, or the configured one.
    fn adc_window(&self) -> AdcWindow {
        self.own.psum.map_or(self.config.adc_window, |q| q.window())
    }

    /// Shape of the weight steps: layer [1], array [G, T], column [G, C_out].
    pub fn weight_scale_shape(&self) -> Vec<usize> {
        self.plan.tiling.scale_shape(self.weight_granularity())
    }

    /// Shape of the ADC steps: layer [polarities, S], array [polarities, S, G, T], column
    /// [polarities, S, G, C_out].
    pub fn psum_scale_shape(&self) -> Vec<usize> {
        let mut shape = vec![self.plan.slicing.polarities(), self.plan.slicing.slices()];
        if self.plan.psum_granularity != Granularity::Layer {
            shape.extend(self.plan.tiling.scale_shape(self.plan.psum_granularity));
        }
        shape
    }

    /// Shape of the cell-gain tensor the variation hook takes: [G, polarities * S, C_out, n_c*k*k].
    pub fn cell_shape(&self) -> [usize; 4] {
        let t = &self.plan.tiling;
        let s = &self.plan.slicing;
        [t.row_tiles, s.polarities() * s.slices(), t.out_channels, t.rows_per_tile()]
    }

    /// Whether partial sums are quantized in the forward pass.
    pub fn adc_enabled(&self) -> bool {
        self.adc_enabled
    }

    /// Switches partial-sum quantization on or off (two-stage training starts with it off).
    /// Switching it on for a config without ADC bits is an error.
    pub fn set_adc_enabled(&mut self, enabled: bool) -> Result<(), CimConfigError> {
        if enabled && !self.has_adc() {
            return Err(CimConfigError::NoAdc);
        }
        self.adc_enabled = enabled;
        Ok(())
    }

    /// The same layer read out by ADCs of `bits` bits (trained weights and steps kept; the ADC
    /// windows, made for the old range, are to be calibrated again). Only for the built-in ADC.
    pub fn with_psum_bits(mut self, bits: u32) -> Result<Self, CimConfigError> {
        let config = self.config.clone().with_psum_bits(Some(bits));
        self.plan = Arc::new(Plan::new(&config, self.own)?);
        self.config = config;
        Ok(self)
    }

    /// Replaces the float weights (shape checked) and re-initializes the weight steps from them.
    pub fn with_weight(mut self, weight: Tensor<4>) -> Result<Self, CimConfigError> {
        let expected = self.weight.val().dims();
        if weight.dims() != expected {
            return Err(CimConfigError::ShapeMismatch {
                what: "weight",
                got: weight.dims().to_vec(),
                expected: expected.to_vec(),
            });
        }
        self.weight = Param::from_tensor(weight.detach());
        self.init_weight_scale();
        Ok(self)
    }

    /// Sets the weight steps (flat, row-major over [`Self::weight_scale_shape`]).
    pub fn with_weight_scale(mut self, steps: Tensor<1>) -> Result<Self, CimConfigError> {
        check_len("weight_scale", steps.dims()[0], self.plan.weight_grad_scale.len())?;
        self.weight_scale = Param::from_tensor(steps.detach());
        Ok(self)
    }

    /// Sets the ADC steps (flat, row-major over [`Self::psum_scale_shape`]).
    pub fn with_psum_scale(mut self, steps: Tensor<1>) -> Result<Self, CimConfigError> {
        check_len("psum_scale", steps.dims()[0], self.plan.psum_range.len())?;
        self.psum_scale = Param::from_tensor(steps.detach());
        Ok(self)
    }

    /// Sets the ADC offsets (same layout as the steps). A `zero` window accepts only zeros.
    pub fn with_psum_offset(mut self, offsets: Tensor<1>) -> Result<Self, CimConfigError> {
        check_len("psum_offset", offsets.dims()[0], self.plan.psum_range.len())?;
        let learned = self.adc_window().is_learned();
        if !learned && offsets.clone().abs().max().into_scalar::<f32>() != 0.0 {
            return Err(CimConfigError::OffsetOnZeroWindow);
        }
        self.psum_offset = Param::from_tensor(offsets.detach()).set_require_grad(learned);
        Ok(self)
    }

    /// LSQ init of the weight steps from the current weights: 2 * mean|w| / sqrt(max(Qp, 1)) over
    /// each group (for `differential`, over the magnitudes, one step for both polarities).
    pub fn init_weight_scale(&mut self) {
        let t = self.plan.tiling;
        let k2 = t.kernel_size * t.kernel_size;
        let w = self.weight.val().into_data().try_to_vec::<f32>().expect("f32 weights");
        let gran = self.weight_granularity();
        let mut sums = vec![0f64; t.scale_groups(gran)];
        for c in 0..t.out_channels {
            for g in 0..t.row_tiles {
                let rows = t.row_tile_channels(g);
                let start = (c * t.in_channels + rows.start) * k2;
                let end = (c * t.in_channels + rows.end) * k2;
                sums[t.scale_group(gran, g, c)] += w[start..end].iter().map(|x| f64::from(x.abs())).sum::<f64>();
            }
        }
        let range = self.plan.slicing.weight_range();
        let steps: Vec<f32> = sums
            .iter()
            .zip(t.scale_group_members(gran))
            .map(|(sum, m)| self.plan.weights.init_step(sum / m.weights as f64, range))
            .collect();
        replace_value(&mut self.weight_scale, steps, true);
    }

    /// Arms ADC calibration: the following forwards (the calibration batches) record every
    /// group's partial sums and pass them on unquantized (an ideal ADC), until
    /// [`Self::finish_psum_calibration`] turns the records into windows.
    pub fn arm_psum_calibration(&self) {
        *self.recorder() = Recording::Calibration(Vec::new());
    }

    /// Sets every ADC window from the partial sums recorded since arming, by the layer's
    /// `adc_init` (docs/SPEC.md section 1, "ADC calibration"). Returns whether the layer was
    /// calibrated (false: no forward ran since arming, or ideal ADC).
    pub fn finish_psum_calibration(&mut self) -> bool {
        let samples = match std::mem::take(&mut *self.recorder()) {
            Recording::Calibration(samples) if !samples.is_empty() => samples,
            _ => return false,
        };
        let (ranges, layer_of) = (&self.plan.psum_range, &self.plan.psum_slice);
        let windows = match self.own.psum {
            Some(q) => calibrate(&samples, ranges, layer_of, |s, _| q.calibrate(s)),
            None => {
                let (init, window) = (self.config.adc_init, self.config.adc_window);
                calibrate(&samples, ranges, layer_of, |s, range| uniform_window(s, range, init, window))
            }
        };
        let steps: Vec<f32> = windows.iter().map(|w| w.step as f32).collect();
        let offsets: Vec<f32> = windows.iter().map(|w| w.offset as f32).collect();
        replace_value(&mut self.psum_scale, steps.clone(), true);
        replace_value(&mut self.psum_scale_unit, steps, false);
        let learned = self.adc_window().is_learned();
        replace_value(&mut self.psum_offset, offsets, learned);
        true
    }

    /// Arms ADC inspection: the following forwards (with the ADC on) accumulate the statistics
    /// of [`crate::quality`] per (polarity, slice), until [`Self::take_adc_quality`].
    pub fn arm_adc_inspection(&self) {
        let s_n = self.plan.slicing.slices();
        let groups = self.plan.psum_range.len() / (self.plan.slicing.polarities() * s_n);
        // the flat ADC groups are [polarity, S, groups of the granularity]
        let stats = (0..self.plan.slicing.polarities() * s_n)
            .map(|i| {
                let range = self.plan.psum_range[i * groups];
                SliceQuality::new(i / s_n, i % s_n, range.low as i64, range.high as i64)
            })
            .collect();
        *self.recorder() = Recording::Quality(stats);
    }

    /// The ADC statistics recorded since [`Self::arm_adc_inspection`] (None if not armed).
    pub fn take_adc_quality(&self) -> Option<Vec<SliceQuality>> {
        match std::mem::take(&mut *self.recorder()) {
            Recording::Quality(stats) => Some(stats),
            _ => None,
        }
    }

    /// The share of programmed cells at each digit level, per (polarity, slice), from the
    /// current weights and steps (padding rows of the last row tile are not cells in use).
    pub fn digit_shares(&self) -> Vec<DigitShares> {
        let t = &self.plan.tiling;
        let sl = &self.plan.slicing;
        let k2 = t.kernel_size * t.kernel_size;
        let w = self.weight.val().into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 weights");
        let steps = self.weight_scale.val().into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 steps");
        let range = sl.weight_range();
        let base = 1i64 << sl.cell_bits;
        let low_level = |s: usize| if sl.slice_is_signed(s) { -base / 2 } else { 0 };
        let (pol_n, s_n) = (sl.polarities(), sl.slices());
        let mut counts = vec![vec![0u64; base as usize]; pol_n * s_n];
        for c in 0..t.out_channels {
            for ch in 0..t.in_channels {
                let step = steps[self.plan.weight_step_gc[(ch / t.channels_per_array) * t.out_channels + c] as usize];
                for &v in &w[(c * t.in_channels + ch) * k2..][..k2] {
                    let q = self.plan.weights.code(v / step, range) as i64;
                    for (pol, digits) in sl.digits(q).iter().enumerate() {
                        for (s, &d) in digits.iter().enumerate() {
                            counts[pol * s_n + s][(d - low_level(s)) as usize] += 1;
                        }
                    }
                }
            }
        }
        counts
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let total = c.iter().sum::<u64>().max(1) as f64;
                DigitShares {
                    polarity: i / s_n,
                    slice: i % s_n,
                    low_level: low_level(i % s_n),
                    shares: c.iter().map(|&n| n as f64 / total).collect(),
                }
            })
            .collect()
    }

    fn recorder(&self) -> std::sync::MutexGuard<'_, Recording> {
        self.recording.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The variation hook: a conductance multiplier for every cell ([`Self::cell_shape`]), applied
    /// in every forward until cleared with `None`. The trained parameters are not touched.
    pub fn set_cell_gain(&mut self, gain: Option<Tensor<4>>) -> Result<(), CimConfigError> {
        if let Some(g) = &gain
            && g.dims() != self.cell_shape()
        {
            return Err(CimConfigError::ShapeMismatch {
                what: "cell gain",
                got: g.dims().to_vec(),
                expected: self.cell_shape().to_vec(),
            });
        }
        self.cell_gain = gain;
        Ok(())
    }

    /// Log-normal cell noise of this sigma in training forwards (variation-aware training),
    /// drawn from `seed`: the trainer passes a new seed at every step. `None` or 0 turns it off;
    /// evaluation never draws it.
    pub fn set_training_variation(&mut self, sigma: Option<f64>, seed: u64) {
        self.training_variation = sigma.filter(|s| *s > 0.0).map(|s| (s, seed));
    }

    /// The forward pass: activation codes, weight codes, digit planes, partial sums, ADC,
    /// dequantization and accumulation.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let device = x.device();
        let a = activation_codes(x, self.config.act_bits);
        let weight_steps = self.weight_steps(&device);
        let q = self.weight_codes(&weight_steps, &device);
        let gain = self.effective_cell_gain(&device);
        if !self.adc_enabled {
            return self.forward_ideal(a, q, &weight_steps, gain, &device);
        }
        // Built-in ADC over integer digit planes: the partial sums and the ADC run as one op
        // (psums::psums_through_adc), and the partial sums exist here only to be recorded.
        let through_adc = gain.is_none() && self.own.psum.is_none() && fused_available(&device);
        let psums = (!through_adc).then(|| self.partial_sums(a.clone(), q.clone(), gain.clone()));
        let recorded = match (&psums, self.is_recording()) {
            (_, false) => None,
            (Some(psums), true) => Some(psums.clone()),
            (None, true) => Some(self.partial_sums(a.clone().detach(), q.clone().detach(), None)),
        };
        if let Some(recorded) = &recorded
            && self.record_calibration(recorded)
        {
            // calibration batches pass exact partial sums on: the windows being calibrated
            // do not exist yet
            return self.forward_ideal(a, q, &weight_steps, gain, &device);
        }
        let [b, _, h, w] = a.dims();
        let geometry = self.geometry();
        let (steps, offsets) = self.adc_windows(b * geometry.out_size(h) * geometry.out_size(w), &device);
        if let Some(recorded) = &recorded {
            self.record_quality(recorded, &steps, &offsets);
        }
        let coef = weight_steps
            .select(0, self.index(&self.plan.weight_step_k, &device))
            .mul(self.floats(&self.plan.coef_k, &device));
        let Some(psums) = psums else {
            let channels = self.built_in_adc_channels(steps, offsets, coef, &device);
            return psums_through_adc(a, q, &self.plan.slicing, geometry, channels, self.config.out_channels);
        };
        if let Some(plug_in) = self.own.psum {
            // a plug-in ADC: p_q = z + s * code((p - z) / s) with the plug-in's code and gradient
            let k = coef.dims()[0];
            let (s, z) = (steps.reshape([k, 1, 1, 1]), offsets.reshape([k, 1, 1, 1]));
            let codes = plug_in.code_tensor(psums.sub(z.clone()).div(s.clone()));
            return accumulate_reference(codes.mul(s).add(z), coef, self.config.out_channels);
        }
        let channels = self.built_in_adc_channels(steps, offsets, coef, &device);
        adc_accumulate(psums, channels, self.config.out_channels)
    }

    /// Every channel's built-in ADC: its window, dequantization coefficient and code range.
    fn built_in_adc_channels(
        &self,
        step: Tensor<1>,
        offset: Tensor<1>,
        coef: Tensor<1>,
        device: &Device,
    ) -> AdcChannels {
        let (low, high): (Vec<f32>, Vec<f32>) = self
            .plan
            .psum_step_k
            .iter()
            .map(|&i| (self.plan.psum_range[i as usize].low, self.plan.psum_range[i as usize].high))
            .unzip();
        AdcChannels { step, offset, coef, low: self.floats(&low, device), high: self.floats(&high, device) }
    }

    /// The integer partial sums of every array column before the ADC, laid out as the golden
    /// cases are: [polarities, S, G, B, C_out, H_out, W_out].
    pub fn psums(&self, x: Tensor<4>) -> Tensor<7> {
        let device = x.device();
        let a = activation_codes(x, self.config.act_bits);
        let steps = self.weight_steps(&device);
        let q = self.weight_codes(&steps, &device);
        let gain = self.effective_cell_gain(&device);
        let psums = self.partial_sums(a, q, gain);
        let [_, b, h, w] = psums.dims();
        let t = &self.plan.tiling;
        let s = &self.plan.slicing;
        psums.reshape([t.row_tiles, s.polarities(), s.slices(), t.out_channels, b, h, w]).permute([1, 2, 0, 4, 3, 5, 6])
    }

    fn is_training(&self, device: &Device) -> bool {
        self.training.is_enabled() && device.is_autodiff()
    }

    fn index(&self, idx: &[i64], device: &Device) -> Tensor<1, Int> {
        Tensor::from_data(TensorData::new(idx.to_vec(), [idx.len()]), device)
    }

    fn floats(&self, v: &[f32], device: &Device) -> Tensor<1> {
        Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), device)
    }

    /// The weight steps with LSQ's gradient scale.
    fn weight_steps(&self, device: &Device) -> Tensor<1> {
        scale_grad(self.weight_scale.val(), self.floats(&self.plan.weight_grad_scale, device))
    }

    /// Integer weight codes q laid out per array column: [G, C_out, n_c*k*k] (padded rows are 0).
    fn weight_codes(&self, weight_steps: &Tensor<1>, device: &Device) -> Tensor<3> {
        let t = &self.plan.tiling;
        let w = pad_channels(self.weight.val(), t.padded_in_channels());
        let w = w.reshape([t.out_channels, t.row_tiles, t.rows_per_tile()]).swap_dims(0, 1);
        let steps = weight_steps.clone().select(0, self.index(&self.plan.weight_step_gc, device)).reshape([
            t.row_tiles,
            t.out_channels,
            1,
        ]);
        self.plan.weights.code_tensor(w.div(steps), self.plan.slicing.weight_range())
    }

    /// The cell gains in effect: the variation hook's, or fresh noise while training with
    /// variation-aware training switched on.
    fn effective_cell_gain(&self, device: &Device) -> Option<Tensor<4>> {
        match self.training_variation {
            Some((sigma, seed)) if self.is_training(device) => {
                Some(crate::variation::lognormal_gains(self.cell_shape(), sigma, seed, device))
            }
            _ => self.cell_gain.clone().map(|g| g.to_device(device)),
        }
    }

    /// Digit planes [G, polarities * S, C_out, R], times the cell gains when set.
    fn planes(&self, q: Tensor<3>, gain: Option<Tensor<4>>) -> Tensor<4> {
        let planes = self.plan.slicing.digit_planes(q);
        match gain {
            Some(g) => planes.mul(g),
            None => planes,
        }
    }

    /// All partial sums from one grouped convolution: [G * polarities * S * C_out, B, H', W'].
    /// Without cell gains the digit planes are cut inside the pass (whose backward is then
    /// cheaper); with gains the planes are not integers and go in as they are.
    fn partial_sums(&self, a: Tensor<4>, q: Tensor<3>, gain: Option<Tensor<4>>) -> Tensor<4> {
        let t = &self.plan.tiling;
        let geometry = self.geometry();
        if gain.is_none() {
            return grouped_psums_of_weight_codes(a, q, &self.plan.slicing, geometry);
        }
        let planes = self.planes(q, gain);
        let planes = planes.reshape([t.row_tiles, self.plan.channels() / t.row_tiles, t.rows_per_tile()]);
        grouped_psums(a, planes, geometry)
    }

    /// The convolution's geometry on the arrays.
    fn geometry(&self) -> ConvGeometry {
        ConvGeometry { kernel: self.plan.tiling.kernel_size, stride: self.config.stride, padding: self.config.padding }
    }

    /// Ideal ADC: one plain conv with the dequantized weights (cell gains folded in).
    fn forward_ideal(
        &self,
        a: Tensor<4>,
        q: Tensor<3>,
        weight_steps: &Tensor<1>,
        gain: Option<Tensor<4>>,
        device: &Device,
    ) -> Tensor<4> {
        let t = &self.plan.tiling;
        let (g_n, c_n, r) = (t.row_tiles, t.out_channels, t.rows_per_tile());
        let cells = match gain {
            None => q,
            Some(gain) => {
                let n = self.plan.plane_weight.len();
                let plane_weight = self.floats(&self.plan.plane_weight, device).reshape([1, n, 1, 1]);
                self.planes(q, Some(gain)).mul(plane_weight).sum_dim(1).reshape([g_n, c_n, r])
            }
        };
        let steps =
            weight_steps.clone().select(0, self.index(&self.plan.weight_step_gc, device)).reshape([g_n, c_n, 1]);
        let k = t.kernel_size;
        let w = cells
            .mul(steps)
            .div_scalar(self.config.act_levels())
            .swap_dims(0, 1)
            .reshape([c_n, t.padded_in_channels(), k, k])
            .narrow(1, 0, t.in_channels);
        let (s, p) = (self.config.stride, self.config.padding);
        conv2d(a, w, None, ConvOptions::new([s, s], [p, p], [1, 1], 1))
    }

    /// ADC steps and offsets per fast-path channel [K], with LSQ's gradient scale (times the
    /// unit squared, see [`Self::psum_scale_unit`]); a `zero` window's offsets carry no gradient.
    fn adc_windows(&self, positions: usize, device: &Device) -> (Tensor<1>, Tensor<1>) {
        let scale: Vec<f32> = self
            .plan
            .psum_range
            .iter()
            .zip(&self.plan.psum_columns)
            .map(|(range, columns)| match self.own.psum {
                Some(q) => q.grad_scale(columns * positions),
                None => range.grad_scale(columns * positions),
            })
            .collect();
        let unit = self.psum_scale_unit.val().detach();
        let scale = self.floats(&scale, device).mul(unit.clone().mul(unit));
        let steps = scale_grad(self.psum_scale.val(), scale.clone());
        let offsets = match self.adc_window().is_learned() {
            true => scale_grad(self.psum_offset.val(), scale),
            false => self.psum_offset.val().detach(),
        };
        let index = self.index(&self.plan.psum_step_k, device);
        (steps.select(0, index.clone()), offsets.select(0, index))
    }

    /// Host copy of the partial sums [K, B*H'*W'].
    fn psum_values(psums: &Tensor<4>) -> Vec<f32> {
        psums.clone().detach().into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 partial sums")
    }

    /// Whether this forward's partial sums are being recorded (calibration or inspection).
    fn is_recording(&self) -> bool {
        !matches!(*self.recorder(), Recording::Off)
    }

    /// During calibration, adds this batch's partial sums to every group's samples; returns
    /// whether it did.
    fn record_calibration(&self, psums: &Tensor<4>) -> bool {
        let mut recorder = self.recorder();
        let Recording::Calibration(samples) = &mut *recorder else { return false };
        let values = Self::psum_values(psums);
        let per_channel = values.len() / self.plan.channels();
        let groups = self.plan.psum_range.len();
        let mut members: Vec<Vec<f32>> = vec![Vec::new(); groups];
        for (k, &i) in self.plan.psum_step_k.iter().enumerate() {
            members[i as usize].extend_from_slice(&values[k * per_channel..][..per_channel]);
        }
        let batch: Vec<GroupSamples> = {
            use rayon::prelude::*;
            members.par_iter().map(|v| GroupSamples::from_values(v)).collect()
        };
        if samples.is_empty() {
            *samples = batch;
        } else {
            samples.iter_mut().zip(&batch).for_each(|(all, new)| all.merge(new));
        }
        true
    }

    /// During inspection, adds this batch's ADC statistics.
    fn record_quality(&self, psums: &Tensor<4>, steps: &Tensor<1>, offsets: &Tensor<1>) {
        let mut recorder = self.recorder();
        let Recording::Quality(stats) = &mut *recorder else { return };
        let host = |t: &Tensor<1>| t.clone().detach().into_data().convert::<f32>().try_to_vec::<f32>().expect("f32");
        let (steps, offsets) = (host(steps), host(offsets));
        let windows: Vec<ChannelWindow> = (0..self.plan.channels())
            .map(|k| {
                let group = self.plan.psum_step_k[k] as usize;
                let range = self.plan.psum_range[group];
                let slice_index = self.plan.psum_slice[group];
                ChannelWindow { slice_index, step: steps[k], offset: offsets[k], low: range.low, high: range.high }
            })
            .collect();
        match self.own.psum {
            Some(q) => accumulate(stats, &Self::psum_values(psums), &windows, |r, _| q.code(r)),
            None => accumulate(stats, &Self::psum_values(psums), &windows, uniform_code),
        }
    }
}

/// Zero channels appended to reach `channels` (whole row tiles).
fn pad_channels(x: Tensor<4>, channels: usize) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    if c == channels {
        return x;
    }
    let zeros = Tensor::zeros([b, channels - c, h, w], &x.device());
    Tensor::cat(vec![x, zeros], 1)
}

/// Gives a parameter new values, keeping its id (optimizer state stays attached to it).
fn replace_value(param: &mut Param<Tensor<1>>, values: Vec<f32>, require_grad: bool) {
    let device = param.val().device();
    let n = values.len();
    let mut fresh =
        Param::from_tensor(Tensor::from_data(TensorData::new(values, [n]), &device)).set_require_grad(require_grad);
    fresh.id = param.id;
    *param = fresh;
}

fn check_len(what: &'static str, got: usize, expected: usize) -> Result<(), CimConfigError> {
    if got == expected { Ok(()) } else { Err(CimConfigError::StepCount { what, got, expected }) }
}
