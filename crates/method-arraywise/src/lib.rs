//! The array-wise method: one step per memory array.

use method_api::{Granularity, Method, Scheme};

/// Array-wise weights and array-wise partial sums, one stage.
pub static ARRAYWISE: Method = Method::new(
    "arraywise",
    "array-wise weights, array-wise partial sums, one-stage",
    Some(Scheme::cim(Granularity::Array, Granularity::Array)),
);
