//! A method's own ADC ([`PsumQuantizer`]) through the layer's generic path, against the naive
//! simulator with the same converter: calibrated windows, outputs, and the gradients of the
//! windows (for converters whose code passes the gradient straight through inside their code
//! range and none outside, the rule the simulator derives them by).

mod common;

use burn::tensor::{Device, Tensor};
use cim_core::calibration::GroupSamples;
use cim_core::lsq::round_ste;
use cim_core::{
    AdcWindow, CimConfigError, CimConvConfig, Encoding, Granularity, LsqRange, OwnQuantizers, PsumQuantizer,
    WeightQuantizer,
};
use common::{Dense, Naive, Rng, Windows, layer_grads, plain_conv_grads};
use flex_kernels::testing::assert_close;

/// One comparator: z + s * [p - z >= s / 2] (ties up, unlike rounding), one window per array.
struct Comparator;

impl PsumQuantizer for Comparator {
    fn name(&self) -> &'static str {
        "comparator"
    }
    fn resolution(&self) -> &'static str {
        "1"
    }
    fn granularity(&self) -> Granularity {
        Granularity::Array
    }
    fn window(&self) -> AdcWindow {
        AdcWindow::Learned
    }
    fn codes(&self) -> LsqRange {
        LsqRange::new(0.0, 1.0)
    }
    fn code(&self, ratio: f32) -> f32 {
        f32::from(u8::from(ratio >= 0.5))
    }
    fn code_tensor(&self, ratio: Tensor<4>) -> Tensor<4> {
        let above = ratio.clone().greater_equal_elem(0.5).float();
        let inside = ratio.clamp(0.0, 1.0);
        above.add(inside.clone().sub(inside.detach()))
    }
}

/// Five zero-anchored levels 0..4 per layer and slice (not a power of two).
struct FiveLevels;

impl PsumQuantizer for FiveLevels {
    fn name(&self) -> &'static str {
        "five-levels"
    }
    fn resolution(&self) -> &'static str {
        "2.3"
    }
    fn granularity(&self) -> Granularity {
        Granularity::Layer
    }
    fn window(&self) -> AdcWindow {
        AdcWindow::Zero
    }
    fn codes(&self) -> LsqRange {
        LsqRange::new(0.0, 4.0)
    }
    fn code(&self, ratio: f32) -> f32 {
        ratio.clamp(0.0, 4.0).round_ties_even()
    }
    fn code_tensor(&self, ratio: Tensor<4>) -> Tensor<4> {
        round_ste(ratio.clamp(0.0, 4.0))
    }
}

fn host(t: Tensor<1>) -> Vec<f32> {
    Dense::from_tensor(t).data.iter().map(|&v| v as f32).collect()
}

#[test]
fn plugin_adc_matches_the_naive_simulator() {
    let quantizers: [&'static dyn PsumQuantizer; 2] = [&Comparator, &FiveLevels];
    let configs = [
        CimConvConfig::new(5, 11, 3).with_array_size(18).with_encoding(Encoding::Differential),
        CimConvConfig::new(7, 6, 3).with_array_size(27).with_weight_granularity(Granularity::Layer),
        CimConvConfig::new(4, 9, 3).with_array_size(9).with_stride(2).with_padding(1).with_cell_bits(1),
    ];
    for (i, base) in configs.iter().enumerate() {
        for (j, &q) in quantizers.iter().enumerate() {
            let cfg = base.clone().with_psum_bits(None);
            let what = format!("{} on {cfg:?}", q.name());
            let device = Device::flex().autodiff();
            let mut rng = Rng(31 * i as u64 + j as u64);
            let input = rng.dense(vec![2, cfg.in_channels, 6, 6], -0.2, 1.2);
            let weight =
                rng.dense(vec![cfg.out_channels, cfg.in_channels, cfg.kernel_size, cfg.kernel_size], -1.0, 1.0);
            let mut layer = cfg
                .init_with(OwnQuantizers::psum(q), &device)
                .unwrap()
                .with_weight(weight.tensor::<4>(&device))
                .unwrap();
            assert_eq!(layer.own_quantizers().psum.map(|q| q.name()), Some(q.name()));
            let naive = Naive::with_own(&cfg, OwnQuantizers::psum(q));
            let ws = host(layer.weight_scale.val());
            let p = naive.psums(&input, &weight.data, &ws);

            // calibration: every group's window is the converter's own choice on its partial sums
            layer.arm_psum_calibration();
            let _ = layer.forward(input.tensor::<4>(&device));
            assert!(layer.finish_psum_calibration(), "{what}");
            let (steps, offsets) = (host(layer.psum_scale.val()), host(layer.psum_offset.val()));
            assert_eq!(steps.len(), naive.psum_groups(), "{what}: one window per group");
            let mut groups = vec![Vec::new(); naive.psum_groups()];
            p.for_each(|pol, s, g, _b, c, _pos, v| groups[naive.psum_key(pol, s, g, c)].push(v as f32));
            for (k, values) in groups.iter().enumerate().filter(|(_, v)| v.iter().any(|&x| x != 0.0)) {
                let w = q.calibrate(&GroupSamples::from_values(values));
                assert_eq!((steps[k], offsets[k]), (w.step as f32, w.offset as f32), "{what}: group {k}");
            }
            if !q.window().is_learned() {
                assert!(offsets.iter().all(|&z| z == 0.0), "{what}: a zero window keeps z = 0");
            }

            // windows that put partial sums on every side of every level
            let steps: Vec<f32> = steps.iter().map(|&s| s * rng.uniform(0.3, 1.0) as f32).collect();
            let offsets: Vec<f32> = match q.window() {
                AdcWindow::Learned => {
                    offsets.iter().zip(&steps).map(|(&z, &s)| z + s * rng.uniform(-2.0, 2.0) as f32).collect()
                }
                AdcWindow::Zero => offsets,
            };
            layer = layer.with_psum_scale(Tensor::from_floats(steps.as_slice(), &device)).unwrap();
            layer = layer.with_psum_offset(Tensor::from_floats(offsets.as_slice(), &device)).unwrap();
            let windows = Windows { steps, offsets };

            let y = layer.forward(input.tensor::<4>(&device));
            let got = Dense::from_tensor(y.clone()).data;
            let expected = naive.output(&p, &ws, Some(&windows));
            let magnitude = naive.output_magnitude(&p, &ws, Some(&windows));
            let scale = magnitude.iter().fold(1e-12f64, |m, v| m.max(*v));
            assert_close(&format!("{what}: y"), &got, &expected, 1e-5, scale);

            let r = rng.dense(y.dims().to_vec(), -1.0, 1.0);
            let grads = y.mul(r.tensor::<4>(&device)).sum().backward();
            let got_step = Dense::from_tensor(layer.psum_scale.val().grad(&grads).unwrap()).data;
            let got_offset = layer.psum_offset.val().grad(&grads).map(|g| Dense::from_tensor(g).data);
            let (step_grad, offset_grad) = naive.psum_window_grads(&p, &ws, &windows, &r.data);
            let unit = Dense::from_tensor(layer.psum_scale_unit.val()).data;
            let in_units = |g: Vec<f64>| -> Vec<f64> { g.iter().zip(&unit).map(|(g, u)| g * u * u).collect() };
            let step_grad = in_units(step_grad);
            let scale = step_grad.iter().fold(1e-6f64, |m, x| m.max(x.abs()));
            assert_close(&format!("{what}: ds"), &got_step, &step_grad, 1e-4, scale);
            match q.window() {
                AdcWindow::Learned => {
                    let expected = in_units(offset_grad);
                    assert!(expected.iter().any(|&g| g != 0.0), "{what}: some ratios fall outside the codes");
                    let scale = expected.iter().fold(1e-6f64, |m, x| m.max(x.abs()));
                    assert_close(&format!("{what}: dz"), &got_offset.expect("a learned z"), &expected, 1e-4, scale);
                }
                AdcWindow::Zero => assert!(got_offset.is_none(), "{what}: a zero window's z is not trained"),
            }

            // hardware counts follow the converter's grouping and window
            assert_eq!(layer.counts(), cfg.counts(OwnQuantizers::psum(q)).unwrap());
            let own =
                cfg.clone().with_psum_bits(Some(3)).with_psum_granularity(q.granularity()).with_adc_window(q.window());
            assert_eq!(layer.counts(), own.counts(OwnQuantizers::BUILT_IN).unwrap(), "{what}");
        }
    }
}

#[test]
fn a_layer_has_one_adc() {
    let cfg = CimConvConfig::new(5, 11, 3).with_array_size(18).with_psum_bits(Some(3));
    let e = cfg.init_with(OwnQuantizers::psum(&Comparator), &Device::flex()).unwrap_err();
    assert!(matches!(e, CimConfigError::TwoAdcs { bits: 3, quantizer: "comparator" }), "{e}");
    assert!(e.to_string().contains("leave psum_bits unset"), "{e}");
}

/// Ternary weights after TWN (Li et al. 2016): q in {-1, 0, 1}, zero below half a step, the step
/// initialised at 1.4 * mean|w| (TWN's threshold 0.7 * mean|w|), one step per column.
struct TernaryWeights;

impl WeightQuantizer for TernaryWeights {
    fn name(&self) -> &'static str {
        "ternary-weights"
    }
    fn granularity(&self) -> Granularity {
        Granularity::Column
    }
    fn code(&self, ratio: f32, range: LsqRange) -> f32 {
        ratio.clamp(range.low.max(-1.0), range.high.min(1.0)).round_ties_even()
    }
    fn code_tensor(&self, ratio: Tensor<3>, range: LsqRange) -> Tensor<3> {
        round_ste(ratio.clamp(range.low.max(-1.0), range.high.min(1.0)))
    }
    fn init_step(&self, mean_abs: f64, _range: LsqRange) -> f32 {
        if mean_abs == 0.0 { 1.0 } else { (1.4 * mean_abs) as f32 }
    }
}

/// A weight quantizer of one's own: its initial steps and codes reach the cells exactly as the
/// naive simulator programs them, and with an ideal ADC the layer's gradients are those of a
/// plain conv with weights s_w * code(w / s_w).
#[test]
fn own_weight_quantizer_matches_the_naive_simulator_and_the_plain_conv() {
    let own = OwnQuantizers::weight(&TernaryWeights);
    for (i, encoding) in Encoding::ALL.into_iter().enumerate() {
        for cell_bits in [1, 2] {
            let cfg = CimConvConfig::new(5, 11, 3)
                .with_padding(1)
                .with_array_size(18)
                .with_cell_bits(cell_bits)
                .with_encoding(encoding)
                .with_weight_granularity(Granularity::Layer)
                .with_psum_bits(Some(3));
            let what = format!("{cfg:?}");
            let device = Device::flex().autodiff();
            let mut rng = Rng(70 + i as u64 * 3 + cell_bits as u64);
            let x = rng.dense(vec![2, 5, 5, 5], -0.2, 1.2);
            let w = rng.dense(vec![11, 5, 3, 3], -1.0, 1.0);
            let r = rng.dense(vec![2, 11, 5, 5], -1.0, 1.0);
            let mut layer = cfg.init_with(own, &device).unwrap().with_weight(w.tensor::<4>(&device)).unwrap();
            assert_eq!(layer.weight_granularity(), Granularity::Column, "{what}");
            let naive = Naive::with_own(&cfg, own);
            let steps = host(layer.weight_scale.val());
            let init = naive.weight_steps_init(&w.data);
            assert_eq!(steps.len(), init.len(), "{what}: one step per column");
            for (a, b) in steps.iter().zip(&init) {
                assert!((*a as f64 - b).abs() <= 1e-5 * b.abs(), "{what}: step {a} vs naive {b}");
            }
            let expected = naive.psums(&x, &w.data, &steps);
            let got = Dense::from_tensor(layer.psums(x.tensor::<4>(&device)));
            assert!(got.data.iter().zip(&expected.data).all(|(a, b)| *a == *b as f64), "{what}: partial sums");
            // three levels: with differential encoding every magnitude is 0 or 1, so no cell
            // holds a digit above 1
            if encoding == Encoding::Differential {
                for shares in layer.digit_shares() {
                    assert_eq!(shares.shares.iter().skip(2).sum::<f64>(), 0.0, "{what}: {shares:?}");
                }
            }
            layer.set_adc_enabled(false).unwrap();
            let got = layer_grads(&layer, &x, &r);
            let expected = plain_conv_grads(&layer, &x, &r);
            let close = |name: &str, a: &[f64], b: &[f64], tol: f64| {
                let scale = b.iter().fold(1e-6f64, |m, v| m.max(v.abs()));
                assert_close(&format!("{what}: {name}"), a, b, tol, scale);
            };
            close("y", &got.y, &expected.y, 1e-5);
            close("dx", &got.x, &expected.x, 1e-5);
            close("dw", &got.w, &expected.w, 1e-5);
            close("ds_w", &got.s_w, &expected.s_w, 1e-4);
            let column_lsq = cfg.clone().with_weight_granularity(Granularity::Column);
            assert_eq!(layer.counts(), column_lsq.counts(OwnQuantizers::BUILT_IN).unwrap(), "{what}");
        }
    }
}
