//! Gradients of the CIM layer against hand-derived values (docs/SPEC.md section 1, "Gradient through
//! bit slicing" and "LSQ details").

mod common;

use burn::tensor::{Device, Tensor};
use cim_core::{AdcWindow, CimConv2d, CimConvConfig, Encoding, Granularity};
use common::{Dense, Naive, Rng, Windows, layer_grads, plain_conv_grads};
use flex_kernels::testing::assert_close;

fn device() -> Device {
    common::test_device().autodiff()
}

fn setup(cfg: &CimConvConfig, seed: u64) -> (CimConv2d, Dense, Dense) {
    let d = device();
    let mut rng = Rng(seed);
    let x = rng.dense(vec![2, cfg.in_channels, 5, 5], -0.2, 1.2);
    let w = rng.dense(vec![cfg.out_channels, cfg.in_channels, cfg.kernel_size, cfg.kernel_size], -1.0, 1.0);
    let layer = cfg.init(&d).unwrap().with_weight(w.tensor::<4>(&d)).unwrap();
    let y_shape = vec![2, cfg.out_channels, cfg.output_size(5), cfg.output_size(5)];
    let r = rng.dense(y_shape, -1.0, 1.0);
    (layer, x, r)
}

fn configs() -> Vec<CimConvConfig> {
    let mut out = Vec::new();
    for encoding in Encoding::ALL {
        for wg in Granularity::ALL {
            for bc in [1, 2, 4] {
                out.push(
                    CimConvConfig::new(5, 11, 3)
                        .with_padding(1)
                        .with_array_size(18)
                        .with_weight_bits(4)
                        .with_cell_bits(bc)
                        .with_act_bits(3)
                        .with_encoding(encoding)
                        .with_weight_granularity(wg),
                );
            }
        }
    }
    out
}

/// With an ideal ADC the layer's gradient equals that of a plain conv with weights s_w * q, both
/// on the collapsed fast path and through the digit planes (cell gains of 1 force that path, so
/// the straight-through estimator d(d_s')/dq = 2^(-b_c*(S-1-s)) / S is what is tested).
#[test]
fn ideal_adc_gradient_is_the_plain_conv_gradient() {
    for (i, cfg) in configs().into_iter().enumerate() {
        let (mut layer, x, r) = setup(&cfg, 10 + i as u64);
        let expected = plain_conv_grads(&layer, &x, &r);
        let collapsed = layer_grads(&layer, &x, &r);
        let ones = Tensor::ones(layer.cell_shape(), &device());
        layer.set_cell_gain(Some(ones)).unwrap();
        let through_digits = layer_grads(&layer, &x, &r);
        for (name, got) in [("collapsed", &collapsed), ("digit planes", &through_digits)] {
            let what = |p: &str| format!("{cfg:?} {name} {p}");
            assert_close(&what("y"), &got.y, &expected.y, 1e-5, 1e-6);
            assert_close(&what("dx"), &got.x, &expected.x, 1e-5, 1e-6);
            assert_close(&what("dw"), &got.w, &expected.w, 1e-5, 1e-6);
            assert_close(&what("ds_w"), &got.s_w, &expected.s_w, 1e-4, 1e-6);
        }
    }
}

/// A real ADC whose range covers every partial sum and whose step is 1 quantizes nothing: its
/// path must then pass exactly the ideal-ADC gradients (each slice contributing its share).
#[test]
fn transparent_adc_passes_the_ideal_gradient() {
    for (i, cfg) in configs().into_iter().enumerate() {
        let cfg = cfg.with_psum_bits(Some(16));
        let (layer, x, r) = setup(&cfg, 50 + i as u64);
        let n = layer.psum_scale.val().dims()[0];
        let layer = layer.with_psum_scale(Tensor::ones([n], &device())).unwrap();
        let expected = plain_conv_grads(&layer, &x, &r);
        let got = layer_grads(&layer, &x, &r);
        let what = |p: &str| format!("{cfg:?} {p}");
        assert_close(&what("y"), &got.y, &expected.y, 1e-5, 1e-6);
        assert_close(&what("dx"), &got.x, &expected.x, 1e-5, 1e-6);
        assert_close(&what("dw"), &got.w, &expected.w, 1e-5, 1e-6);
        assert_close(&what("ds_w"), &got.s_w, &expected.s_w, 1e-4, 1e-6);
    }
}

/// The ADC steps and offsets get LSQ+'s gradients, computed by hand from the naive simulator's
/// partial sums: g * sum dL/dy * coef * (round((p-z)/s) - (p-z)/s inside, Pn or Pp outside) for
/// the step and g * sum dL/dy * coef * (0 inside, 1 outside) for a learned offset, times the
/// square of the window's unit (its calibrated step, see `CimConv2d::psum_scale_unit`). A zero
/// window's offsets get no gradient at all.
#[test]
fn adc_window_gradients_match_the_hand_derived_lsq_gradients() {
    for (i, cfg) in configs().into_iter().enumerate() {
        for pg in Granularity::ALL {
            let window = AdcWindow::ALL[i % 2];
            let cfg = cfg.clone().with_psum_bits(Some(3)).with_psum_granularity(pg).with_adc_window(window);
            let (mut layer, x, r) = setup(&cfg, 90 + i as u64);
            let d = device();
            layer.arm_psum_calibration();
            let _ = layer.forward(x.tensor::<4>(&d));
            assert!(layer.finish_psum_calibration());
            // shrink the steps and shift the windows both ways so that partial sums clip low and
            // high: every branch is exercised
            let steps = layer.psum_scale.val().detach();
            let n = steps.dims()[0];
            let shrunk = steps.clone().mul_scalar(0.7);
            let mut layer = layer.with_psum_scale(shrunk).unwrap();
            if window == AdcWindow::Learned {
                let shift: Vec<f32> = (0..n).map(|j| [-2.5f32, 1.5, 3.5][j % 3]).collect();
                let offsets =
                    layer.psum_offset.val().detach().add(steps.mul(Tensor::from_floats(shift.as_slice(), &d)));
                layer = layer.with_psum_offset(offsets).unwrap();
            }
            let x_t: Tensor<4> = x.tensor(&d);
            let y = layer.forward(x_t);
            let grads = y.mul(r.tensor::<4>(&d)).sum().backward();
            let got_step = Dense::from_tensor(layer.psum_scale.val().grad(&grads).unwrap()).data;
            let got_offset = layer.psum_offset.val().grad(&grads).map(|g| Dense::from_tensor(g).data);

            let naive = Naive::new(&cfg);
            let as_f32 = |t: Tensor<1>| -> Vec<f32> { Dense::from_tensor(t).data.iter().map(|&v| v as f32).collect() };
            let ws = as_f32(layer.weight_scale.val());
            let windows = Windows { steps: as_f32(layer.psum_scale.val()), offsets: as_f32(layer.psum_offset.val()) };
            let p = naive.psums(&x, &Dense::from_tensor(layer.weight.val()).data, &ws);
            let unit = Dense::from_tensor(layer.psum_scale_unit.val()).data;
            let (step_grad, offset_grad) = naive.psum_window_grads(&p, &ws, &windows, &r.data);
            let in_units = |g: Vec<f64>| -> Vec<f64> { g.iter().zip(&unit).map(|(g, u)| g * u * u).collect() };
            assert!(unit.iter().any(|&u| u != 1.0), "calibrated units: {unit:?}");
            assert_close(&format!("{cfg:?} ds_p"), &got_step, &in_units(step_grad), 1e-4, 1e-6);
            match window {
                AdcWindow::Learned => {
                    let got = got_offset.expect("a learned offset has a gradient");
                    let expected = in_units(offset_grad);
                    assert!(expected.iter().any(|&g| g != 0.0), "some partial sums clip");
                    assert_close(&format!("{cfg:?} dz"), &got, &expected, 1e-4, 1e-6);
                }
                AdcWindow::Zero => assert!(got_offset.is_none(), "a zero window's offset is not trained"),
            }
        }
    }
}

/// Partial-sum steps are not touched by an ideal-ADC forward, and calibrating twice from the
/// same batch gives the same steps.
#[test]
fn calibration_is_deterministic_and_skipped_with_an_ideal_adc() {
    let cfg = CimConvConfig::new(5, 11, 3).with_array_size(18).with_psum_bits(Some(3));
    let (mut layer, x, _) = setup(&cfg, 7);
    let d = device();
    layer.set_adc_enabled(false).unwrap();
    layer.arm_psum_calibration();
    let _ = layer.forward(x.tensor::<4>(&d));
    assert!(!layer.finish_psum_calibration());
    layer.set_adc_enabled(true).unwrap();
    let mut steps = Vec::new();
    for _ in 0..2 {
        layer.arm_psum_calibration();
        let _ = layer.forward(x.tensor::<4>(&d));
        assert!(layer.finish_psum_calibration());
        steps.push(Dense::from_tensor(layer.psum_scale.val()).data);
    }
    assert_eq!(steps[0], steps[1]);
    let mut ideal = CimConvConfig::new(5, 11, 3).with_array_size(18).init(&d).unwrap();
    assert!(ideal.set_adc_enabled(true).unwrap_err().to_string().contains("psum_bits"));
}

/// The variation hook: gains of 1 change nothing, a chip's gains stay fixed from batch to batch,
/// and the trained parameters are never touched.
#[test]
fn cell_gains_perturb_only_the_forward_pass() {
    let d = common::test_device();
    for psum in [None, Some(3)] {
        let cfg = CimConvConfig::new(5, 11, 3).with_padding(1).with_array_size(18).with_psum_bits(psum);
        let mut rng = Rng(3);
        let w = rng.dense(vec![11, 5, 3, 3], -1.0, 1.0);
        let (a, b) = (rng.dense(vec![2, 5, 6, 6], -0.2, 1.2), rng.dense(vec![2, 5, 6, 6], -0.2, 1.2));
        let mut layer = cfg.init(&d).unwrap().with_weight(w.tensor::<4>(&d)).unwrap();
        if psum.is_some() {
            layer.arm_psum_calibration();
            let _ = layer.forward(a.tensor::<4>(&d));
            layer.finish_psum_calibration();
        }
        let run = |l: &CimConv2d, x: &Dense| Dense::from_tensor(l.forward(x.tensor::<4>(&d))).data;
        let clean = run(&layer, &a);
        let params = Dense::from_tensor(layer.weight.val()).data;
        layer.set_cell_gain(Some(Tensor::ones(layer.cell_shape(), &d))).unwrap();
        let ones = run(&layer, &a);
        let scale = clean.iter().fold(1e-6f64, |m, v| m.max(v.abs()));
        assert!(clean.iter().zip(&ones).all(|(x, y)| (x - y).abs() <= 1e-5 * scale), "gain 1 is the identity");
        let chip = cim_core::variation::lognormal_gains(layer.cell_shape(), 0.2, 11, &d);
        layer.set_cell_gain(Some(chip)).unwrap();
        let first = run(&layer, &a);
        let _ = run(&layer, &b);
        assert_eq!(first, run(&layer, &a), "a chip stays the same from batch to batch");
        assert_ne!(first, clean, "variation changes the output");
        assert_eq!(Dense::from_tensor(layer.weight.val()).data, params, "parameters untouched");
        layer.set_cell_gain(None).unwrap();
        assert_eq!(run(&layer, &a), clean, "clearing the hook restores the exact arrays");
        assert!(
            layer
                .set_cell_gain(Some(Tensor::ones([1, 1, 1, 1], &d)))
                .unwrap_err()
                .to_string()
                .contains("cell gain shape")
        );
    }
}
