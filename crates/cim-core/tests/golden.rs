//! Every golden case of `../shared/golden/` and its `adc-window/` subfolder (or of
//! `$CIM_GOLDEN_DIR`) against the fast path and against the naive simulator: tiling, both LSQ
//! inits, integer partial sums exactly, output to 1e-5 of the case's largest |output|, with our
//! own steps and with the case's steps (and ADC offsets) injected.

mod common;

use burn::tensor::{Device, Tensor};
use cim_core::CimConv2d;
use common::{Dense, GoldenCase, Naive, Windows, golden_dir, read_all_cases};

fn close_rel(name: &str, got: &[f64], expected: &[f64], tol: f64, errors: &mut Vec<String>) {
    if got.len() != expected.len() {
        errors.push(format!("{name}: {} values, expected {}", got.len(), expected.len()));
        return;
    }
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        if (g - e).abs() > tol * e.abs().max(1e-12) {
            errors.push(format!("{name}[{i}]: {g} vs expected {e}"));
            return;
        }
    }
}

fn close_abs(name: &str, got: &[f64], expected: &[f64], tol: f64, errors: &mut Vec<String>) {
    let scale = expected.iter().fold(0f64, |m, x| m.max(x.abs())).max(1e-12);
    if got.len() != expected.len() {
        errors.push(format!("{name}: {} values, expected {}", got.len(), expected.len()));
        return;
    }
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        if (g - e).abs() > tol * scale {
            errors.push(format!("{name}[{i}]: {g} vs expected {e} (max |expected| {scale})"));
            return;
        }
    }
}

fn exact(name: &str, got: &Dense, expected: &Dense, errors: &mut Vec<String>) {
    if got.shape != expected.shape {
        errors.push(format!("{name}: shape {:?}, expected {:?}", got.shape, expected.shape));
        return;
    }
    if let Some(i) = (0..got.data.len()).find(|&i| got.data[i] != expected.data[i]) {
        errors.push(format!("{name}[{i}]: {} vs expected {}", got.data[i], expected.data[i]));
    }
}

fn values(t: Tensor<1>) -> Vec<f64> {
    Dense::from_tensor(t).data
}

fn check_case(case: &GoldenCase, device: &Device) -> Vec<String> {
    let mut errors = Vec::new();
    let cfg = case.config.clone();
    let (tiling, slicing) = match cfg.validate() {
        Ok(v) => v,
        Err(e) => return vec![format!("config rejected: {e}")],
    };
    // tiling: the case's step and partial-sum shapes follow from G, T, S and the polarities
    let layer: CimConv2d = cfg.init(device).unwrap();
    if layer.weight_scale_shape() != case.weight_scale.shape {
        errors.push(format!("weight_scale shape {:?} vs {:?}", layer.weight_scale_shape(), case.weight_scale.shape));
    }
    let adc = case.config.psum_bits.is_some();
    if adc && layer.psum_scale_shape() != case.psum_scale.shape {
        errors.push(format!("psum_scale shape {:?} vs {:?}", layer.psum_scale_shape(), case.psum_scale.shape));
    }
    if let Some(z) = &case.psum_offset
        && z.shape != case.psum_scale.shape
    {
        errors.push(format!("psum_offset shape {:?} vs psum_scale {:?}", z.shape, case.psum_scale.shape));
    }
    let p_shape = &case.psums.shape;
    let tiling_dims = [slicing.polarities(), slicing.slices(), tiling.row_tiles];
    if p_shape[..3] != tiling_dims {
        errors.push(format!("(polarities, S, G) = {tiling_dims:?} vs psums shape {p_shape:?}"));
    }
    if !errors.is_empty() {
        return errors;
    }

    let input: Tensor<4> = case.input.tensor(device);
    let weight: Tensor<4> = case.weight.tensor(device);
    let mut layer = layer.with_weight(weight).unwrap();
    let naive = Naive::new(&cfg);
    let ws: Vec<f32> = case.weight_scale.data.iter().map(|&x| x as f32).collect();
    let p = naive.psums(&case.input, &case.weight.data, &ws);

    // LSQ init of the weight steps
    close_rel("weight_scale init", &values(layer.weight_scale.val()), &case.weight_scale.data, 1e-5, &mut errors);

    // integer partial sums, with our own weight steps
    exact("psums (own steps)", &Dense::from_tensor(layer.psums(input.clone())), &case.psums, &mut errors);
    if case.psum_offset.is_none() {
        // the data-driven ADC steps (LSQ's rule): equal to the case's wherever a group saw a
        // non-zero partial sum; all-zero groups take their layer's step (docs/SPEC.md), not 1.0
        if adc {
            layer.arm_psum_calibration();
            let _ = layer.forward(input.clone());
            assert!(layer.finish_psum_calibration());
            let got = values(layer.psum_scale.val());
            let zero = naive.zero_groups(&p);
            let pick = |v: &[f64]| -> Vec<f64> { v.iter().zip(&zero).filter(|(_, z)| !**z).map(|(x, _)| *x).collect() };
            close_rel("psum_scale init", &pick(&got), &pick(&case.psum_scale.data), 1e-5, &mut errors);
            close_rel("psum_scale init (zero groups)", &got, &naive.psum_steps_init(&p), 1e-5, &mut errors);
            if values(layer.psum_offset.val()).iter().any(|&z| z != 0.0) {
                errors.push("a zero window calibrated a non-zero offset".into());
            }
        }
        let out = Dense::from_tensor(layer.forward(input.clone()));
        close_abs("output (own steps)", &out.data, &case.expected_output.data, 1e-5, &mut errors);
    }

    // the case's steps (and offsets) injected: ADC and dequantization independent of our inits
    let mut injected = layer.with_weight_scale(case.weight_scale.flat(device)).unwrap();
    if adc {
        injected = injected.with_psum_scale(case.psum_scale.flat(device)).unwrap();
    }
    if let Some(z) = &case.psum_offset {
        injected = injected.with_psum_offset(z.flat(device)).unwrap();
    }
    exact("psums (injected steps)", &Dense::from_tensor(injected.psums(input.clone())), &case.psums, &mut errors);
    let out = Dense::from_tensor(injected.forward(input));
    close_abs("output (injected steps)", &out.data, &case.expected_output.data, 1e-5, &mut errors);

    // the test oracle itself agrees with the independent implementation
    close_rel(
        "naive weight_scale init",
        &naive.weight_steps_init(&case.weight.data),
        &case.weight_scale.data,
        1e-9,
        &mut errors,
    );
    let as_dense = Dense { shape: p.shape(), data: p.data.iter().map(|&x| x as f64).collect() };
    exact("naive psums", &as_dense, &case.psums, &mut errors);
    let windows = adc.then(|| {
        let as_f32 = |d: &Dense| -> Vec<f32> { d.data.iter().map(|&x| x as f32).collect() };
        match &case.psum_offset {
            Some(z) => Windows { steps: as_f32(&case.psum_scale), offsets: as_f32(z) },
            None => Windows::zero(as_f32(&case.psum_scale)),
        }
    });
    // (steps rounded to f32, as the layer holds them)
    close_abs("naive output", &naive.output(&p, &ws, windows.as_ref()), &case.expected_output.data, 1e-6, &mut errors);
    errors
}

#[test]
fn every_golden_case_matches() {
    let dir = golden_dir();
    let cases = read_all_cases(&dir);
    let windowed = cases.iter().filter(|(_, c)| c.psum_offset.is_some()).count();
    assert!(cases.len() > windowed, "no golden cases in {}", dir.display());
    assert!(windowed > 0, "no ADC-window cases in {}", dir.join("adc-window").display());
    let device = common::test_device();
    let mut failures = Vec::new();
    for (path, case) in &cases {
        if case.config.adc_window.is_learned() != case.psum_offset.is_some() {
            failures.push(format!("{}: adc_window and psum_offset disagree", path.display()));
            continue;
        }
        for e in check_case(case, &device) {
            failures.push(format!("{}: {e}", path.display()));
        }
    }
    eprintln!("checked {} golden cases ({} with ADC windows) in {}", cases.len(), windowed, dir.display());
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}
