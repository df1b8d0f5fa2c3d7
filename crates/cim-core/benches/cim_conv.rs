//! Forward + backward of the CIM layer against a plain burn conv2d of the same shape, in one run:
//! ResNet-20 stage 3 (batch 128, 64 -> 64, 8x8, 3x3), N 128, W4 A4, cell bits 2, P 3,
//! column/column, twos, a learned ADC window (the default). Target: CIM / plain <= 3.
//!
//! `cargo bench -p cim-core --bench cim_conv` prints criterion's estimates, then an interleaved
//! measurement of the CIM layer with a learned and with a zero window and of the plain conv, with
//! the ratios and the heap peak of each.

use std::time::{Duration, Instant};

use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Tensor};
use cim_core::{AdcWindow, CimConv2d, CimConvConfig, Encoding, Granularity};
use criterion::Criterion;
use flex_kernels::memory::{TrackingAllocator, mib, peak_bytes, peak_rss_bytes, reset_peak};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator;

const BATCH: usize = 128;

struct Setup {
    layer: CimConv2d,
    weight: Tensor<4>,
    x: Tensor<4>,
}

fn setup(window: AdcWindow) -> Setup {
    let device = Device::flex().autodiff();
    device.seed(0);
    let cfg = CimConvConfig::new(64, 64, 3)
        .with_padding(1)
        .with_array_size(128)
        .with_weight_bits(4)
        .with_act_bits(4)
        .with_cell_bits(2)
        .with_psum_bits(Some(3))
        .with_encoding(Encoding::Twos)
        .with_weight_granularity(Granularity::Column)
        .with_psum_granularity(Granularity::Column)
        .with_adc_window(window);
    let mut layer = cfg.init(&device).expect("valid config");
    let x = Tensor::<4>::random([BATCH, 64, 8, 8], Distribution::Uniform(0.0, 1.0), &device);
    layer.arm_psum_calibration();
    let _ = layer.forward(x.clone());
    assert!(layer.finish_psum_calibration());
    let weight = Tensor::<4>::random([64, 64, 3, 3], Distribution::Normal(0.0, 0.06), &device).require_grad();
    Setup { layer, weight, x }
}

fn cim_step(s: &Setup) {
    let y = s.layer.forward(s.x.clone().require_grad());
    let grads = y.sum().backward();
    std::hint::black_box(s.layer.weight.val().grad(&grads));
}

fn plain_step(s: &Setup) {
    let opts = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
    let y = conv2d(s.x.clone().require_grad(), s.weight.clone(), None, opts);
    let grads = y.sum().backward();
    std::hint::black_box(s.weight.grad(&grads));
}

fn criterion_benches(c: &mut Criterion) {
    let s = setup(AdcWindow::Learned);
    let mut group = c.benchmark_group("resnet20_stage3_fwd_bwd");
    group.sample_size(20).measurement_time(Duration::from_secs(8));
    group.bench_function("cim_column_column_P3", |b| b.iter(|| cim_step(&s)));
    group.bench_function("plain_conv2d", |b| b.iter(|| plain_step(&s)));
    group.finish();
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Alternates the steps so that all see the same machine state, then prints the ratios.
fn ratio_report() {
    let (learned, zero) = (setup(AdcWindow::Learned), setup(AdcWindow::Zero));
    for _ in 0..3 {
        cim_step(&learned);
        cim_step(&zero);
        plain_step(&learned);
    }
    let time = |f: &dyn Fn()| {
        let t = Instant::now();
        f();
        t.elapsed().as_secs_f64() * 1e3
    };
    let (mut cim, mut cim_zero, mut plain) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..15 {
        cim.push(time(&|| cim_step(&learned)));
        cim_zero.push(time(&|| cim_step(&zero)));
        plain.push(time(&|| plain_step(&learned)));
    }
    let peak = |f: &dyn Fn()| {
        reset_peak();
        let base = flex_kernels::memory::live_bytes();
        f();
        peak_bytes() - base
    };
    let (cim_peak, plain_peak) = (peak(&|| cim_step(&learned)), peak(&|| plain_step(&learned)));
    let (c, z, p) = (median(cim), median(cim_zero), median(plain));
    println!("\nResNet-20 stage 3, batch {BATCH}, fwd+bwd, medians of 15 interleaved runs:");
    println!("  CIM layer (column/column, P 3, learned window): {c:8.2} ms   heap peak {:7.1} MiB", mib(cim_peak));
    println!("  CIM layer (column/column, P 3, zero window):    {z:8.2} ms");
    println!("  plain conv2d:                                   {p:8.2} ms   heap peak {:7.1} MiB", mib(plain_peak));
    println!("  ratio CIM (learned) / plain: {:.2} (target <= 3)", c / p);
    println!("  ratio CIM (zero) / plain:    {:.2}", z / p);
    if let Some(rss) = peak_rss_bytes() {
        println!("  process peak RSS: {:.1} MiB", mib(rss));
    }
}

// criterion's macro writes a public function without documentation
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::criterion_benches);
}

fn main() {
    flex_kernels::memory::reuse_freed_memory();
    group::benches();
    ratio_report();
    Criterion::default().configure_from_args().final_summary();
}
