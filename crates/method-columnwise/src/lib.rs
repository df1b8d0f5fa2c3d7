//! The paper's method: weights and partial sums with the same column-wise granularity.

use cim_core::{Granularity, Method, Scheme};

/// Column-wise weights and column-wise partial sums, one stage (Kim et al., DATE 2025).
pub struct ColumnWise;

impl Method for ColumnWise {
    fn name(&self) -> &'static str {
        "columnwise"
    }
    fn summary(&self) -> &'static str {
        "column-wise weights, column-wise partial sums, one-stage (proposed)"
    }
    fn scheme(&self) -> Option<Scheme> {
        Some(Scheme::cim(Granularity::Column, Granularity::Column))
    }
}
