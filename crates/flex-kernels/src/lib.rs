//! Generic CPU kernels for burn's Flex backend, which know nothing of memory arrays: the
//! floating-point convolution ([`float_conv`]) and batch norm with its ReLU ([`batch_norm`]) of
//! the layers outside the arrays, the convolution-as-matrix-product pieces they share with the
//! CIM partial-sum pass ([`im2col`]), how a hand-written pass joins burn's autodiff
//! ([`autodiff`]), host buffers and SIMD dispatch ([`host`]), heap accounting for benchmarks
//! ([`memory`]) and the helpers that compare a fast path with its reference in tests
//! ([`testing`]).
//!
//! Every pass has a reference made of burn's generic tensor ops beside it: other backends run
//! the reference, and the tests compare the two.

pub mod autodiff;
pub mod batch_norm;
pub mod float_conv;
pub mod host;
pub mod im2col;
pub mod memory;
pub mod testing;

pub use im2col::ConvGeometry;
