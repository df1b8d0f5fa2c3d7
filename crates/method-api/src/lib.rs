//! What a quantization method is (docs/SPEC.md section 2): how its weights and partial sums are
//! quantized - the built-in LSQ quantizers of `cim-core` at a granularity, an ideal ADC, no CIM
//! arithmetic at all, or a partial-sum quantizer of the method crate's own - and how it trains.
//!
//! A method crate defines one `static` [`Method`] per method (and, for an ADC of its own, a
//! [`PsumQuantizer`]); the harness (models, trainer, reproduce, report) does the rest. A user's
//! own method is written the same way and registered in the `methods` crate:
//!
//! ```
//! use method_api::{Granularity, Method, Recipe, Scheme};
//!
//! /// Array-wise weights with column-wise partial sums, trained in two stages.
//! pub static ARRAY_COLUMN_2STAGE: Method = Method::new(
//!     "array-column-2stage",
//!     "array-wise weights, column-wise partial sums, two-stage",
//!     Some(Scheme::cim(Granularity::Array, Granularity::Column)),
//! )
//! .with_recipe(Recipe::TwoStage);
//!
//! assert!(ARRAY_COLUMN_2STAGE.validate().is_ok());
//! assert!(ARRAY_COLUMN_2STAGE.scheme().unwrap().psum.uses_adc());
//! ```

pub use cim_core::calibration::{GroupSamples, Window, search_window};
pub use cim_core::lsq::{round_ste, scale_grad};
pub use cim_core::{AdcWindow, Granularity, LsqRange, OwnQuantizers, PsumQuantizer, WeightQuantizer};
use serde::{Deserialize, Serialize};

/// How a method trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Recipe {
    /// Quantized weights, activations and partial sums from the first epoch (the paper).
    #[default]
    OneStage,
    /// Ideal ADC first, then partial-sum quantization switched on (windows calibrated from
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

/// The ADC of a method's CIM layers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Adc {
    /// Exact partial sums (an ideal ADC).
    Ideal,
    /// The built-in uniform ADC, one window per group of this granularity; its resolution P,
    /// window and calibration come from the run's setting.
    Uniform(Granularity),
    /// The method's own quantizer: it fixes the levels, grouping, calibration and gradient, so
    /// the setting's P, window and calibration do not apply.
    Own(&'static dyn PsumQuantizer),
}

impl Adc {
    /// Whether partial sums are quantized at all.
    pub fn uses_adc(self) -> bool {
        !matches!(self, Adc::Ideal)
    }

    /// The method's own quantizer, if it brings one.
    pub fn own(self) -> Option<&'static dyn PsumQuantizer> {
        match self {
            Adc::Own(q) => Some(q),
            _ => None,
        }
    }
}

/// The weight quantizer of a method's CIM layers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Weights {
    /// The built-in LSQ quantizer, one step per group of this granularity.
    Uniform(Granularity),
    /// The method's own: it fixes the codes, grouping, initial steps and gradient.
    Own(&'static dyn WeightQuantizer),
}

/// The quantizers of a method's CIM layers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scheme {
    /// How weights become cell codes.
    pub weight: Weights,
    /// The ADC.
    pub psum: Adc,
}

impl Scheme {
    /// Weights, activations and partial sums quantized with the built-in quantizers.
    pub const fn cim(weight: Granularity, psum: Granularity) -> Self {
        Self { weight: Weights::Uniform(weight), psum: Adc::Uniform(psum) }
    }

    /// Weights and activations quantized, partial sums exact.
    pub const fn ideal_adc(weight: Granularity) -> Self {
        Self { weight: Weights::Uniform(weight), psum: Adc::Ideal }
    }

    /// Built-in weight quantizer, the method's own ADC.
    pub const fn own_adc(weight: Granularity, psum: &'static dyn PsumQuantizer) -> Self {
        Self { weight: Weights::Uniform(weight), psum: Adc::Own(psum) }
    }

    /// The same scheme with the method's own weight quantizer.
    pub const fn with_own_weights(self, weight: &'static dyn WeightQuantizer) -> Self {
        Self { weight: Weights::Own(weight), ..self }
    }

    /// The granularity of the built-in weight quantizer (the own quantizer's otherwise).
    pub fn weight_granularity(&self) -> Granularity {
        match self.weight {
            Weights::Uniform(g) => g,
            Weights::Own(q) => q.granularity(),
        }
    }

    /// The quantizers of the method's own that replace the built-in ones.
    pub fn own(&self) -> OwnQuantizers {
        let weight = match self.weight {
            Weights::Own(q) => Some(q),
            Weights::Uniform(_) => None,
        };
        OwnQuantizers { weight, psum: self.psum.own() }
    }
}

/// A quantization method: what the harness trains, evaluates and reports as one row.
#[derive(Debug)]
pub struct Method {
    name: &'static str,
    summary: &'static str,
    scheme: Option<Scheme>,
    recipe: Recipe,
}

impl Method {
    /// A one-stage method; `scheme: None` keeps every conv in floating point.
    pub const fn new(name: &'static str, summary: &'static str, scheme: Option<Scheme>) -> Self {
        Self { name, summary, scheme, recipe: Recipe::OneStage }
    }

    /// The same method with another training recipe.
    pub const fn with_recipe(self, recipe: Recipe) -> Self {
        Self { recipe, ..self }
    }

    /// Unique name, used on the command line, in run folders and in reports.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// One line for tables and `--help`.
    pub fn summary(&self) -> &'static str {
        self.summary
    }

    /// The CIM arithmetic; `None` keeps every conv in floating point.
    pub fn scheme(&self) -> Option<Scheme> {
        self.scheme
    }

    /// The training recipe.
    pub fn recipe(&self) -> Recipe {
        self.recipe
    }

    /// Checks that the method is consistent: two-stage training needs an ADC to switch on, and
    /// names (the method's and its quantizer's) are lowercase words joined by `-`.
    pub fn validate(&self) -> Result<(), String> {
        let own = self.scheme.map(|s| s.own()).unwrap_or_default();
        let own_names = own.weight.map(|q| q.name()).into_iter().chain(own.psum.map(|q| q.name()));
        for name in std::iter::once(self.name).chain(own_names) {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
                return Err(format!("method name `{name}`: expected lowercase letters, digits and `-`"));
            }
        }
        if self.recipe == Recipe::TwoStage && !self.scheme.is_some_and(|s| s.psum.uses_adc()) {
            return Err(format!("method `{}`: two-stage training needs a partial-sum quantizer", self.name));
        }
        Ok(())
    }
}
