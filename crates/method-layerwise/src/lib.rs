//! Layer-wise methods: one weight step per layer.

use method_api::{Granularity, Method, Recipe, Scheme};

/// Layer-wise weights and layer-wise partial sums (one ADC step per layer and slice), one stage.
pub static LAYERWISE: Method = Method::new(
    "layerwise",
    "layer-wise weights, layer-wise partial sums, one-stage",
    Some(Scheme::cim(Granularity::Layer, Granularity::Layer)),
);

/// Prior-work style: layer-wise weights, column-wise partial sums, trained in two stages (ideal
/// ADC first, then partial-sum quantization fine-tuned).
pub static LAYER_WEIGHTS_COLUMN_PSUMS_TWO_STAGE: Method = Method::new(
    "layercol-2stage",
    "layer-wise weights, column-wise partial sums, two-stage (prior work)",
    Some(Scheme::cim(Granularity::Layer, Granularity::Column)),
)
.with_recipe(Recipe::TwoStage);
