//! Layer-wise methods: one weight step per layer.

use cim_core::{Granularity, Method, Recipe, Scheme};

/// Layer-wise weights and layer-wise partial sums (one ADC step per layer and slice), one stage.
pub struct LayerWise;

impl Method for LayerWise {
    fn name(&self) -> &'static str {
        "layerwise"
    }
    fn summary(&self) -> &'static str {
        "layer-wise weights, layer-wise partial sums, one-stage"
    }
    fn scheme(&self) -> Option<Scheme> {
        Some(Scheme::cim(Granularity::Layer, Granularity::Layer))
    }
}

/// Prior-work style: layer-wise weights, column-wise partial sums, trained in two stages (ideal
/// ADC first, then partial-sum quantization fine-tuned).
pub struct LayerWeightsColumnPsumsTwoStage;

impl Method for LayerWeightsColumnPsumsTwoStage {
    fn name(&self) -> &'static str {
        "layercol-2stage"
    }
    fn summary(&self) -> &'static str {
        "layer-wise weights, column-wise partial sums, two-stage (prior work)"
    }
    fn scheme(&self) -> Option<Scheme> {
        Some(Scheme::cim(Granularity::Layer, Granularity::Column))
    }
    fn recipe(&self) -> Recipe {
        Recipe::TwoStage
    }
}
