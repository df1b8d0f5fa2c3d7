//! Profiling helper: `cargo run --release -p cim-core --example profile_layer [fwd|both|compare]`
//! runs the ResNet-20 stage-3 CIM layer in a loop (for perf) or times it against plain and
//! grouped convolutions.
use std::time::Instant;

use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Tensor};
use cim_core::CimConvConfig;

fn time(name: &str, n: usize, mut f: impl FnMut()) {
    f();
    let mut v: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(f64::total_cmp);
    println!("{name:30} median {:8.2} ms  min {:8.2} ms", v[n / 2], v[0]);
}

fn main() {
    let device = Device::flex().autodiff();
    device.seed(0);
    let cfg = CimConvConfig::new(64, 64, 3).with_padding(1).with_psum_bits(Some(3));
    let mut layer = cfg.init(&device).unwrap();
    let x = Tensor::<4>::random([128, 64, 8, 8], Distribution::Uniform(0.0, 1.0), &device);
    layer.arm_psum_calibration();
    let _ = layer.forward(x.clone());
    layer.finish_psum_calibration();
    let step = || {
        let y = layer.forward(x.clone().require_grad());
        let g = y.sum().backward();
        std::hint::black_box(layer.weight.val().grad(&g));
    };
    match std::env::args().nth(1).as_deref() {
        Some("fwd") => (0..40).for_each(|_| {
            std::hint::black_box(layer.forward(x.clone().require_grad()));
        }),
        Some("both") => (0..30).for_each(|_| step()),
        _ => {
            let w = Tensor::<4>::random([64, 64, 3, 3], Distribution::Default, &device).require_grad();
            let plain = || {
                let y = conv2d(x.clone().require_grad(), w.clone(), None, ConvOptions::new([1, 1], [1, 1], [1, 1], 1));
                let g = y.sum().backward();
                std::hint::black_box(w.grad(&g));
            };
            time("cim fwd+bwd", 20, step);
            time("plain conv fwd+bwd", 20, plain);
            time("cim fwd", 20, || {
                std::hint::black_box(layer.forward(x.clone().require_grad()));
            });
        }
    }
}
