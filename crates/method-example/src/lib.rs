//! An example of a user's own method crate, registered like the built-in ones: array-wise
//! weight steps with column-wise ADC steps, trained in one stage. Copy this crate to add a
//! method; see the README's "Adding a method".

use cim_core::{Granularity, Method, Scheme};

/// Array-wise weights, column-wise partial sums, one stage.
pub struct ArrayWeightsColumnPsums;

impl Method for ArrayWeightsColumnPsums {
    fn name(&self) -> &'static str {
        "array-column"
    }
    fn summary(&self) -> &'static str {
        "array-wise weights, column-wise partial sums, one-stage (example method crate)"
    }
    fn scheme(&self) -> Option<Scheme> {
        Some(Scheme::cim(Granularity::Array, Granularity::Column))
    }
}
