//! What a quantization method is (DESIGN.md section 4): a weight granularity, a partial-sum
//! granularity (or an ideal ADC, or no CIM arithmetic at all) and a training recipe.
//!
//! A method crate implements [`Method`] for a unit struct and nothing else; the harness
//! (models, trainer, reproduce, report) does the rest. A user's own method is written the same
//! way and registered in the `methods` crate:
//!
//! ```
//! use cim_core::{Granularity, Method, Recipe, Scheme};
//!
//! /// Array-wise weights with column-wise partial sums, trained in two stages.
//! pub struct ArrayWeightsColumnPsums;
//!
//! impl Method for ArrayWeightsColumnPsums {
//!     fn name(&self) -> &'static str {
//!         "array-column-2stage"
//!     }
//!     fn summary(&self) -> &'static str {
//!         "array-wise weights, column-wise partial sums, two-stage"
//!     }
//!     fn scheme(&self) -> Option<Scheme> {
//!         Some(Scheme::cim(Granularity::Array, Granularity::Column))
//!     }
//!     fn recipe(&self) -> Recipe {
//!         Recipe::TwoStage
//!     }
//! }
//!
//! let layer = ArrayWeightsColumnPsums.scheme().unwrap().apply(cim_core::CimConvConfig::new(16, 16, 3));
//! assert_eq!(layer.weight_granularity, Granularity::Array);
//! ```

use serde::{Deserialize, Serialize};

use crate::config::{CimConvConfig, Granularity};

/// How a method trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Recipe {
    /// Quantized weights, activations and partial sums from the first epoch (the paper).
    #[default]
    OneStage,
    /// Ideal ADC first, then partial-sum quantization switched on (steps initialised from
    /// data) and fine-tuned at a lower rate: the recipe of prior work.
    TwoStage,
}

impl Recipe {
    /// The name used in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Recipe::OneStage => "one-stage",
            Recipe::TwoStage => "two-stage",
        }
    }
}

impl std::str::FromStr for Recipe {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "one-stage" => Ok(Recipe::OneStage),
            "two-stage" => Ok(Recipe::TwoStage),
            _ => Err(format!("unknown recipe `{s}`: expected `one-stage` or `two-stage`")),
        }
    }
}

/// The arithmetic of a method's CIM layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Scheme {
    /// Who shares a weight step.
    pub weight: Granularity,
    /// Who shares an ADC step; `None` is an ideal ADC.
    pub psum: Option<Granularity>,
}

impl Scheme {
    /// Weights, activations and partial sums quantized.
    pub fn cim(weight: Granularity, psum: Granularity) -> Self {
        Self { weight, psum: Some(psum) }
    }

    /// Weights and activations quantized, partial sums exact.
    pub fn ideal_adc(weight: Granularity) -> Self {
        Self { weight, psum: None }
    }

    /// Sets the granularities of a layer configuration (and drops its ADC for an ideal ADC).
    pub fn apply(&self, layer: CimConvConfig) -> CimConvConfig {
        let psum_bits = self.psum.and(layer.psum_bits);
        layer
            .with_weight_granularity(self.weight)
            .with_psum_granularity(self.psum.unwrap_or(Granularity::Layer))
            .with_psum_bits(psum_bits)
    }
}

/// A quantization method: what the harness trains, evaluates and reports as one row.
pub trait Method: Send + Sync {
    /// Unique name, used on the command line, in run folders and in reports.
    fn name(&self) -> &'static str;
    /// One line for tables and `--help`.
    fn summary(&self) -> &'static str;
    /// The CIM arithmetic; `None` keeps every conv in floating point.
    fn scheme(&self) -> Option<Scheme>;
    /// The training recipe.
    fn recipe(&self) -> Recipe {
        Recipe::OneStage
    }
}

/// Checks that a method is consistent: two-stage training needs a partial-sum quantizer to
/// switch on, and names are lowercase words joined by `-`.
pub fn validate_method(method: &dyn Method) -> Result<(), String> {
    let name = method.name();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
        return Err(format!("method name `{name}`: expected lowercase letters, digits and `-`"));
    }
    if method.recipe() == Recipe::TwoStage && method.scheme().and_then(|s| s.psum).is_none() {
        return Err(format!("method `{name}`: two-stage training needs a partial-sum granularity"));
    }
    Ok(())
}
