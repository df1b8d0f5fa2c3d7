//! A method's own ADC ([`PsumQuantizer`]) through the layer's generic path, against the naive
//! simulator with the same converter: calibrated windows, outputs, and the gradients of the
//! windows (for converters whose code passes the gradient straight through inside their code
//! range and none outside, the rule the simulator derives them by).

mod common;

use burn::tensor::{Device, Tensor};
use cim_core::calibration::GroupSamples;
use cim_core::lsq::round_ste;
use cim_core::{AdcWindow, CimConfigError, CimConvConfig, Encoding, Granularity, LsqRange, PsumQuantizer};
use common::{Dense, Naive, Rng, Windows};

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

fn assert_close(what: &str, got: &[f64], expected: &[f64], scale: f64, tol: f64) {
    assert_eq!(got.len(), expected.len(), "{what}: length");
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        assert!((g - e).abs() <= tol * scale, "{what}[{i}]: {g} vs naive {e} (scale {scale})");
    }
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
            let mut layer =
                cfg.init_with_adc(Some(q), &device).unwrap().with_weight(weight.tensor::<4>(&device)).unwrap();
            assert_eq!(layer.psum_quantizer().map(|q| q.name()), Some(q.name()));
            let naive = Naive::with_plugin(&cfg, q);
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
            assert_close(&format!("{what}: y"), &got, &expected, scale, 1e-5);

            let r = rng.dense(y.dims().to_vec(), -1.0, 1.0);
            let grads = y.mul(r.tensor::<4>(&device)).sum().backward();
            let got_step = Dense::from_tensor(layer.psum_scale.val().grad(&grads).unwrap()).data;
            let got_offset = layer.psum_offset.val().grad(&grads).map(|g| Dense::from_tensor(g).data);
            let (step_grad, offset_grad) = naive.psum_window_grads(&p, &ws, &windows, &r.data);
            let unit = Dense::from_tensor(layer.psum_scale_unit.val()).data;
            let in_units = |g: Vec<f64>| -> Vec<f64> { g.iter().zip(&unit).map(|(g, u)| g * u * u).collect() };
            let step_grad = in_units(step_grad);
            let scale = step_grad.iter().fold(1e-6f64, |m, x| m.max(x.abs()));
            assert_close(&format!("{what}: ds"), &got_step, &step_grad, scale, 1e-4);
            match q.window() {
                AdcWindow::Learned => {
                    let expected = in_units(offset_grad);
                    assert!(expected.iter().any(|&g| g != 0.0), "{what}: some ratios fall outside the codes");
                    let scale = expected.iter().fold(1e-6f64, |m, x| m.max(x.abs()));
                    assert_close(&format!("{what}: dz"), &got_offset.expect("a learned z"), &expected, scale, 1e-4);
                }
                AdcWindow::Zero => assert!(got_offset.is_none(), "{what}: a zero window's z is not trained"),
            }

            // hardware counts follow the converter's grouping and window
            assert_eq!(layer.counts(), cfg.counts(Some(q)).unwrap());
            let own =
                cfg.clone().with_psum_bits(Some(3)).with_psum_granularity(q.granularity()).with_adc_window(q.window());
            assert_eq!(layer.counts(), own.counts(None).unwrap(), "{what}");
        }
    }
}

#[test]
fn a_layer_has_one_adc() {
    let cfg = CimConvConfig::new(5, 11, 3).with_array_size(18).with_psum_bits(Some(3));
    let e = cfg.init_with_adc(Some(&Comparator), &Device::flex()).unwrap_err();
    assert!(matches!(e, CimConfigError::TwoAdcs { bits: 3, quantizer: "comparator" }), "{e}");
    assert!(e.to_string().contains("leave psum_bits unset"), "{e}");
}
