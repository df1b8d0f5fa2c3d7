//! The array-wise method: one step per memory array.

use cim_core::{Granularity, Method, Scheme};

/// Array-wise weights and array-wise partial sums, one stage.
pub struct ArrayWise;

impl Method for ArrayWise {
    fn name(&self) -> &'static str {
        "arraywise"
    }
    fn summary(&self) -> &'static str {
        "array-wise weights, array-wise partial sums, one-stage"
    }
    fn scheme(&self) -> Option<Scheme> {
        Some(Scheme::cim(Granularity::Array, Granularity::Array))
    }
}
