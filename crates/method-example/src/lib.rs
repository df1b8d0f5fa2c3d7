//! An example of a user's own method crate, registered like the built-in ones: array-wise
//! weight steps with column-wise ADC steps, trained in one stage. Copy this crate to add a
//! method; see the README's "Adding a method" (and `crates/method-saxena-roy` for a method
//! with a quantizer of its own).

use method_api::{Granularity, Method, Scheme};

/// Array-wise weights, column-wise partial sums, one stage.
pub static ARRAY_WEIGHTS_COLUMN_PSUMS: Method = Method::new(
    "array-column",
    "array-wise weights, column-wise partial sums, one-stage (example method crate)",
    Some(Scheme::cim(Granularity::Array, Granularity::Column)),
);
