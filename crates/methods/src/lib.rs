//! The one place where methods are registered. A new method crate is added to `Cargo.toml` and
//! to [`REGISTRY`]; `cargo xtask train --method NAME`, `reproduce` and `report` then know it.

use cim_core::{Granularity, Method, Scheme};

/// Floating-point reference: no quantization at all.
pub struct Float;

impl Method for Float {
    fn name(&self) -> &'static str {
        "fp"
    }
    fn summary(&self) -> &'static str {
        "floating point (no quantization)"
    }
    fn scheme(&self) -> Option<Scheme> {
        None
    }
}

/// Weights (column-wise steps) and activations quantized, ideal ADC: the upper bound of every
/// partial-sum quantizer on the same arrays.
pub struct IdealAdc;

impl Method for IdealAdc {
    fn name(&self) -> &'static str {
        "ideal-adc"
    }
    fn summary(&self) -> &'static str {
        "W/A quantized (column-wise weights), ideal ADC"
    }
    fn scheme(&self) -> Option<Scheme> {
        Some(Scheme::ideal_adc(Granularity::Column))
    }
}

/// Every registered method, in report order (baselines first, the proposed method last).
pub static REGISTRY: &[&dyn Method] = &[
    &Float,
    &IdealAdc,
    &method_layerwise::LayerWise,
    &method_layerwise::LayerWeightsColumnPsumsTwoStage,
    &method_arraywise::ArrayWise,
    &method_example::ArrayWeightsColumnPsums,
    &method_columnwise::ColumnWise,
];

/// All registered methods.
pub fn all() -> &'static [&'static dyn Method] {
    REGISTRY
}

/// The method called `name`, or an error listing the known names.
pub fn find(name: &str) -> Result<&'static dyn Method, String> {
    REGISTRY.iter().copied().find(|m| m.name() == name).ok_or_else(|| {
        let known: Vec<&str> = REGISTRY.iter().map(|m| m.name()).collect();
        format!("unknown method `{name}`: expected one of {}", known.join(", "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cim_core::validate_method;

    #[test]
    fn registry_is_consistent() {
        let mut names = std::collections::HashSet::new();
        for m in all() {
            validate_method(*m).unwrap();
            assert!(names.insert(m.name()), "duplicate method name {}", m.name());
        }
        assert_eq!(find("columnwise").unwrap().scheme(), Some(Scheme::cim(Granularity::Column, Granularity::Column)));
        assert!(find("rowwise").err().unwrap().contains("columnwise"));
    }
}
