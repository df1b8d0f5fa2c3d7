//! Test-only helpers, by role: the golden-case reader ([`golden`]), a naive CIM simulator that
//! walks the arrays one by one, written from docs/SPEC.md section 1 with plain loops and integers
//! ([`naive`]), and the gradients of the layer against a plain convolution's ([`grads`]); here,
//! the device the suites run on and plain test data.
#![allow(dead_code, unused_imports)] // each suite uses its own share of the helpers

pub mod golden;
pub mod grads;
pub mod naive;

use burn::tensor::{Device, Tensor, TensorData};
use serde::Deserialize;

pub use golden::{GoldenCase, golden_dir, read_all_cases};
pub use grads::{Grads, layer_grads, plain_conv_grads};
pub use naive::{Naive, Psums, Windows};

/// The device the suites run on: Flex with its hand-written kernels, or with
/// `CIM_TEST_DEVICE=gpu` (and a build with `--features gpu`) burn's wgpu backend, where the layer
/// takes its generic tensor-op formulation. CI runs the golden, simulator and gradient suites
/// both ways (the GPU through Mesa's llvmpipe OpenGL).
pub fn test_device() -> Device {
    let choice = std::env::var("CIM_TEST_DEVICE").unwrap_or_else(|_| "cpu".into());
    let device: cim_core::ComputeDevice = choice.parse().unwrap_or_else(|e| panic!("CIM_TEST_DEVICE={choice}: {e}"));
    let opened = device.open().unwrap_or_else(|e| panic!("CIM_TEST_DEVICE={choice}: {e}"));
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| eprintln!("test device: {}", device.describe().unwrap_or_default()));
    opened
}

/// A dense row-major array of f64 values.
#[derive(Debug, Clone, Deserialize)]
pub struct Dense {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

impl Dense {
    pub fn tensor<const D: usize>(&self, device: &Device) -> Tensor<D> {
        let data: Vec<f32> = self.data.iter().map(|&x| x as f32).collect();
        Tensor::from_data(TensorData::new(data, self.shape.clone()), device)
    }

    /// All values as one flat tensor.
    pub fn flat(&self, device: &Device) -> Tensor<1> {
        let data: Vec<f32> = self.data.iter().map(|&x| x as f32).collect();
        Tensor::from_data(TensorData::new(data, [self.data.len()]), device)
    }

    pub fn from_tensor<const D: usize>(t: Tensor<D>) -> Self {
        let shape = t.dims().to_vec();
        let data = t.into_data().convert::<f64>().try_to_vec::<f64>().unwrap();
        Self { shape, data }
    }
}

/// SplitMix64: deterministic test data without extra dependencies.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn dense(&mut self, shape: Vec<usize>, lo: f64, hi: f64) -> Dense {
        let n = shape.iter().product();
        Dense { shape, data: (0..n).map(|_| self.uniform(lo, hi)).collect() }
    }
}
