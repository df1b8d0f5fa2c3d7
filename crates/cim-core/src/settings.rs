//! The vocabulary of the crossbar's settings: weight encodings, scale granularities, ADC windows
//! and calibrations, the bit-width limits, and why a setting is impossible. A leaf: every other
//! module of the crate may use it, and it uses none of them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How a signed weight is stored in cells (docs/SPEC.md section 1, "Weight quantization").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Encoding {
    /// Two's complement: one set of arrays, the top bit slice carries the sign.
    #[default]
    Twos,
    /// w+ and w- on separate arrays, subtracted after the ADCs.
    Differential,
}

/// Which elements share one LSQ step (weights) or one ADC step (partial sums).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Granularity {
    /// One step for the whole layer (per bit slice for partial sums).
    Layer,
    /// One step per array: row tile g x column tile t.
    Array,
    /// One step per column of every row tile: (g, c).
    #[default]
    Column,
}

/// The reference window of an ADC (docs/SPEC.md section 1, "ADC (partial-sum) quantization").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AdcWindow {
    /// z = 0 always: a zero-anchored reference.
    Zero,
    /// z calibrated, then trained like s_p (LSQ+).
    #[default]
    Learned,
}

/// How an ADC's (s_p, z) are initialised from calibration data (docs/SPEC.md section 1, "ADC
/// calibration").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AdcInit {
    /// Per group, the (s_p, z) - s_p alone for a zero window - that minimises the mean squared
    /// error between p and p_q (LSQ+'s MSE init).
    #[default]
    Mse,
    /// LSQ's rule s_p = 2 * mean|p| / sqrt(max(Pp, 1)), z = 0.
    Lsq,
}

/// `ALL`, `name()`, `Display` and `FromStr` of a setting enum: the names used in configs, on the
/// command line and in reports, defined once per variant.
macro_rules! named_enum {
    ($ty:ident, $what:literal, [$($variant:ident => $name:literal),+ $(,)?]) => {
        impl $ty {
            /// Every value, in a fixed order (for sweeps and tests).
            pub const ALL: [$ty; [$($name),+].len()] = [$($ty::$variant),+];

            /// The name used in configs and on the command line.
            pub fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl std::str::FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $ty::ALL.into_iter().find(|v| v.name() == s).ok_or_else(|| {
                    let names: Vec<String> = $ty::ALL.iter().map(|v| format!("`{}`", v.name())).collect();
                    format!("unknown {} `{s}`: expected one of {}", $what, names.join(", "))
                })
            }
        }
    };
}

named_enum!(Encoding, "encoding", [Twos => "twos", Differential => "differential"]);
named_enum!(Granularity, "granularity", [Layer => "layer", Array => "array", Column => "column"]);
named_enum!(AdcWindow, "ADC window", [Zero => "zero", Learned => "learned"]);
named_enum!(AdcInit, "ADC init", [Mse => "mse", Lsq => "lsq"]);

impl AdcWindow {
    /// Whether the offset z is a (calibrated, trained) parameter.
    pub fn is_learned(self) -> bool {
        self == AdcWindow::Learned
    }
}

/// Largest bit width accepted for weights, activations and ADCs. Beyond it the integer partial
/// sums of realistic layers no longer fit f32's exact integer range.
pub const MAX_BITS: u32 = 16;

/// Partial sums are computed in f32 by a convolution: they are exact only below 2^24.
pub const MAX_EXACT_PSUM: f64 = (1u64 << 24) as f64;

/// Why a CIM layer configuration is impossible.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CimConfigError {
    /// A bit width is zero or too large.
    #[error("{what} = {value} is out of range: expected 1..={MAX_BITS}")]
    BitsOutOfRange {
        /// Which setting (`weight_bits`, `cell_bits`, ...).
        what: &'static str,
        /// The value given.
        value: u32,
    },
    /// Cell bits must divide weight bits so that every slice holds the same number of bits.
    #[error("cell_bits = {cell_bits} does not divide weight_bits = {weight_bits}: expected a divisor of {weight_bits}")]
    CellBitsNotDividing {
        /// Bits per cell.
        cell_bits: u32,
        /// Weight bits.
        weight_bits: u32,
    },
    /// An array must hold at least one whole input channel (k x k rows).
    #[error("array_size = {array_size} is smaller than kernel^2 = {rows}: an array must hold one whole input channel")]
    ArrayTooSmall {
        /// N.
        array_size: usize,
        /// k * k.
        rows: usize,
    },
    /// A size is zero.
    #[error("{what} = 0: expected a positive value")]
    Zero {
        /// Which setting.
        what: &'static str,
    },
    /// Both a built-in ADC resolution and a plug-in partial-sum quantizer were given.
    #[error(
        "psum_bits = {bits} with the partial-sum quantizer `{quantizer}`: a column has one ADC; leave psum_bits unset (the quantizer sets the levels)"
    )]
    TwoAdcs {
        /// The built-in ADC's bits.
        bits: u32,
        /// The plug-in's name.
        quantizer: &'static str,
    },
    /// Partial-sum quantization was switched on for a layer without ADC bits.
    #[error("cannot enable partial-sum quantization: psum_bits is not set (ideal ADC)")]
    NoAdc,
    /// A tensor given to a layer does not have the layer's shape.
    #[error("{what} shape {got:?} does not match the layer's {expected:?}")]
    ShapeMismatch {
        /// Which tensor (`weight`, `cell gain`).
        what: &'static str,
        /// Its shape.
        got: Vec<usize>,
        /// The layer's.
        expected: Vec<usize>,
    },
    /// A layer's steps or offsets were given in another number than the layer has.
    #[error("{what} has {got} steps, expected {expected}")]
    StepCount {
        /// Which (`weight_scale`, `psum_scale`, `psum_offset`).
        what: &'static str,
        /// How many were given.
        got: usize,
        /// How many the layer has.
        expected: usize,
    },
    /// Non-zero ADC offsets were given to a layer whose ADC window is anchored at zero.
    #[error("psum_offset: a `zero` ADC window has z = 0; use adc_window = learned")]
    OffsetOnZeroWindow,
    /// The largest possible partial sum is not exactly representable in f32.
    #[error(
        "partial sums can reach {bound} (rows {rows} x max activation code {act_max} x max digit {digit_max}), above f32's exact integer range 2^24: use smaller arrays, fewer activation bits or fewer cell bits"
    )]
    PsumOverflow {
        /// The bound on |p|.
        bound: f64,
        /// Rows per array in use.
        rows: usize,
        /// 2^A - 1.
        act_max: u32,
        /// Largest digit magnitude.
        digit_max: u32,
    },
}
