//! The extension points for a method's own quantizers, in place of the built-in LSQ ones
//! ([`OwnQuantizers`]): a [`WeightQuantizer`] says how weights become the integer codes the cells
//! store and how their steps are grouped and initialised (docs/SPEC.md section 1, "Weight
//! quantization"); a [`PsumQuantizer`] says how an ADC turns a partial sum into a code (its
//! levels), who shares a window (grouping), where windows start (calibration) and which gradient
//! training follows ("ADC (partial-sum) quantization"). The crossbar itself - tiling, bit slicing,
//! partial sums, dequantization and accumulation - stays the layer's.
//!
//! Weights: `q = code(w / s_w)`, an integer within the code range of the encoding (the codes the
//! cells can hold), with s_w shared per group of the quantizer's granularity; the layer slices q
//! into cells exactly as it slices LSQ's codes.
//!
//! Partial sums:
//! Every ADC here has a window per group, a step s and an offset z (the reference the
//! converter compares against), and outputs `p_q = z + s * code((p - z) / s)`. The built-in
//! uniform ADC of `psum_bits` bits is the code `clamp(round(r), Pn, Pp)` and has a fused kernel
//! ([`crate::adc`]); a plug-in's code is any integer-valued function of r, and the layer runs it
//! through generic tensor ops: slower, but every backend and autodiff come for free. Its window
//! parameters are the layer's `psum_scale` and `psum_offset`, laid out as for the built-in ADC.

use std::fmt;

use burn::tensor::Tensor;

use crate::calibration::{GroupSamples, Window, search_window};
use crate::lsq::{LsqRange, round_ste};
use crate::settings::{AdcWindow, Granularity};

/// A method's own quantizers; `None` keeps the built-in one (LSQ weights of the layer's
/// `weight_granularity`, the uniform ADC of its `psum_bits`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OwnQuantizers {
    /// In place of LSQ's weight codes.
    pub weight: Option<&'static dyn WeightQuantizer>,
    /// In place of the uniform ADC.
    pub psum: Option<&'static dyn PsumQuantizer>,
}

impl OwnQuantizers {
    /// The built-in quantizers.
    pub const BUILT_IN: Self = Self { weight: None, psum: None };

    /// Only an ADC of one's own.
    pub const fn psum(q: &'static dyn PsumQuantizer) -> Self {
        Self { weight: None, psum: Some(q) }
    }

    /// Only a weight quantizer of one's own.
    pub const fn weight(q: &'static dyn WeightQuantizer) -> Self {
        Self { weight: Some(q), psum: None }
    }

    /// The weight quantizer in effect: the own one, or LSQ with the configured granularity.
    pub fn weights(&self, configured: Granularity) -> &'static dyn WeightQuantizer {
        self.weight.unwrap_or_else(|| LsqWeights::of(configured))
    }
}

/// The built-in weight quantizer: LSQ's codes `round(clamp(w / s_w, Qn, Qp))` with the
/// straight-through gradient inside the range, LSQ's initial step and gradient scale, one step
/// per group of its granularity. The layer asks it exactly as it asks a method's own.
#[derive(Debug)]
pub struct LsqWeights(Granularity);

impl LsqWeights {
    /// LSQ with one step per group of `granularity`.
    pub fn of(granularity: Granularity) -> &'static dyn WeightQuantizer {
        static BY_GRANULARITY: [LsqWeights; 3] =
            [LsqWeights(Granularity::Layer), LsqWeights(Granularity::Array), LsqWeights(Granularity::Column)];
        &BY_GRANULARITY[Granularity::ALL.iter().position(|&g| g == granularity).expect("every granularity")]
    }
}

impl WeightQuantizer for LsqWeights {
    fn name(&self) -> &'static str {
        "lsq"
    }
    fn granularity(&self) -> Granularity {
        self.0
    }
    fn code(&self, ratio: f32, range: LsqRange) -> f32 {
        ratio.clamp(range.low, range.high).round_ties_even()
    }
    fn code_tensor(&self, ratio: Tensor<3>, range: LsqRange) -> Tensor<3> {
        round_ste(ratio.clamp(range.low, range.high))
    }
}

/// A weight quantizer supplied by a method crate (see the module docs). Implement it for a unit
/// struct, keep one instance in a `static`, and return it from the method's scheme.
pub trait WeightQuantizer: Send + Sync {
    /// Short name, used in reports (`ternary-weights`).
    fn name(&self) -> &'static str;

    /// Who shares one step s_w.
    fn granularity(&self) -> Granularity;

    /// The integer code of one ratio w / s_w, within `range` (the codes the encoding stores).
    fn code(&self, ratio: f32, range: LsqRange) -> f32;

    /// The codes of a tensor of ratios w / s_w, laid out [G, C_out, rows], equal to
    /// [`Self::code`] element by element, with the gradient training follows; w and s_w get
    /// theirs through `s_w * code(w / s_w)`.
    fn code_tensor(&self, ratio: Tensor<3>, range: LsqRange) -> Tensor<3>;

    /// The initial step of a group from its weights' mean |w|: by default LSQ's
    /// 2 * mean|w| / sqrt(max(Qp, 1)).
    fn init_step(&self, mean_abs: f64, range: LsqRange) -> f32 {
        range.init_step(mean_abs)
    }

    /// The gradient scale of a step shared by `n` weights: by default LSQ's.
    fn grad_scale(&self, n: usize, range: LsqRange) -> f32 {
        range.grad_scale(n)
    }
}

/// A partial-sum quantizer supplied by a method crate (see the module docs). Implement it for a
/// unit struct, keep one instance in a `static`, and return it from the method's scheme.
pub trait PsumQuantizer: Send + Sync {
    /// Short name, used in setting labels and reports (`binary`, `ternary`).
    fn name(&self) -> &'static str;

    /// The resolution as the literature states it, for hardware tables (`1` for a sense
    /// amplifier, `1.5` for a ternary converter).
    fn resolution(&self) -> &'static str;

    /// Who shares one window.
    fn granularity(&self) -> Granularity;

    /// Whether the offset z is calibrated and trained (`learned`) or fixed at 0 (`zero`).
    fn window(&self) -> AdcWindow;

    /// The lowest and highest code the converter outputs.
    fn codes(&self) -> LsqRange;

    /// The code of one ratio r = (p - z) / s: what the converter outputs, an integer within
    /// [`Self::codes`].
    fn code(&self, ratio: f32) -> f32;

    /// The codes of a tensor of ratios, equal to [`Self::code`] element by element, with the
    /// gradient training follows (a straight-through estimator of the quantizer's choice). The
    /// gradients of p, s and z follow from it through `z + s * code((p - z) / s)`.
    fn code_tensor(&self, ratio: Tensor<4>) -> Tensor<4>;

    /// The initial window of one group from the partial sums it saw in the calibration batches
    /// (never all zero: such groups take their layer's window). By default the window with the
    /// least squared error, found by [`search_window`].
    fn calibrate(&self, samples: &GroupSamples) -> Window {
        search_window(samples, self.window(), |r| self.code(r))
    }

    /// The gradient scale of a window shared by `n` partial sums: by default LSQ's
    /// 1 / sqrt(n * max(highest code, 1)).
    fn grad_scale(&self, n: usize) -> f32 {
        self.codes().grad_scale(n)
    }
}

/// Plug-ins are compared and printed by name: two quantizers with one name are one quantizer
/// (the registry checks that method names are unique; a quantizer belongs to its method crate).
macro_rules! compared_by_name {
    ($($tr:ident),+) => {$(
        impl PartialEq for dyn $tr + '_ {
            fn eq(&self, other: &Self) -> bool {
                self.name() == other.name()
            }
        }

        impl Eq for dyn $tr + '_ {}

        impl fmt::Debug for dyn $tr + '_ {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($tr), self.name())
            }
        }
    )+};
}

compared_by_name!(WeightQuantizer, PsumQuantizer);
