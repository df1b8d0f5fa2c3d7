//! The one place where methods are registered. A new method crate is added to `Cargo.toml` and
//! to [`REGISTRY`]; `cargo xtask train --method NAME`, `reproduce` and `report` then know it.

use method_api::{Granularity, Method, Scheme};

/// Floating-point reference: no quantization at all.
pub static FLOAT: Method = Method::new("fp", "floating point (no quantization)", None);

/// Weights (column-wise steps) and activations quantized, partial sums not quantized (an ideal
/// ADC). Not an upper bound of the methods with ADCs: their weights may have another granularity
/// (a layer-wise method with ADCs can beat it), and with them this is one more trained network.
pub static IDEAL_ADC: Method = Method::new(
    "ideal-adc",
    "column-wise W, A quantized; partial sums not quantized (ideal ADC)",
    Some(Scheme::ideal_adc(Granularity::Column)),
);

/// Layer-wise weight steps, activations quantized, partial sums not quantized: with
/// [`IDEAL_ADC`] and [`IDEAL_ADC_ARRAY`], the ideal-ADC run of each weight granularity, so that a
/// report can compare the methods with ADCs with the best of them.
pub static IDEAL_ADC_LAYER: Method = Method::new(
    "ideal-adc-layer",
    "layer-wise W, A quantized; partial sums not quantized (ideal ADC)",
    Some(Scheme::ideal_adc(Granularity::Layer)),
);

/// Array-wise weight steps, activations quantized, partial sums not quantized.
pub static IDEAL_ADC_ARRAY: Method = Method::new(
    "ideal-adc-array",
    "array-wise W, A quantized; partial sums not quantized (ideal ADC)",
    Some(Scheme::ideal_adc(Granularity::Array)),
);

/// Every registered method, in report order (baselines first, the proposed method last; methods
/// added later come after it, so that every earlier method keeps its colour in the figures).
pub static REGISTRY: &[&Method] = &[
    &FLOAT,
    &IDEAL_ADC,
    &method_layerwise::LAYERWISE,
    &method_layerwise::LAYER_WEIGHTS_COLUMN_PSUMS_TWO_STAGE,
    &method_arraywise::ARRAYWISE,
    &method_example::ARRAY_WEIGHTS_COLUMN_PSUMS,
    &method_saxena_roy::SAXENA_ROY_BINARY,
    &method_saxena_roy::SAXENA_ROY_TERNARY,
    &method_columnwise::COLUMNWISE,
    &IDEAL_ADC_LAYER,
    &IDEAL_ADC_ARRAY,
];

/// The method the paper proposes: the one the claim table compares against the best of the rest.
pub static PROPOSED: &Method = &method_columnwise::COLUMNWISE;

/// All registered methods.
pub fn all() -> &'static [&'static Method] {
    REGISTRY
}

/// The method called `name`, or an error listing the known names.
pub fn find(name: &str) -> Result<&'static Method, String> {
    REGISTRY.iter().copied().find(|m| m.name() == name).ok_or_else(|| {
        let known: Vec<&str> = REGISTRY.iter().map(|m| m.name()).collect();
        format!("unknown method `{name}`: expected one of {}", known.join(", "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_is_consistent() {
        let mut names = std::collections::HashSet::new();
        for m in all() {
            m.validate().unwrap();
            assert!(names.insert(m.name()), "duplicate method name {}", m.name());
        }
        assert!(all().iter().any(|m| std::ptr::eq(*m, PROPOSED)));
        assert_eq!(find("columnwise").unwrap().scheme(), Some(Scheme::cim(Granularity::Column, Granularity::Column)));
        assert!(find("rowwise").err().unwrap().contains("columnwise"));
    }
}
