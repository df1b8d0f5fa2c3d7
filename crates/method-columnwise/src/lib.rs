//! The paper's method: weights and partial sums with the same column-wise granularity.

use method_api::{Granularity, Method, Scheme};

/// Column-wise weights and column-wise partial sums, one stage (Kim et al., DATE 2025).
pub static COLUMNWISE: Method = Method::new(
    "columnwise",
    "column-wise weights, column-wise partial sums, one-stage (proposed)",
    Some(Scheme::cim(Granularity::Column, Granularity::Column)),
);
