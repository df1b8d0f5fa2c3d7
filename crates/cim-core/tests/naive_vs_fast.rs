//! The fast path (one grouped convolution + fused ADC) against the naive simulator that walks the
//! arrays one by one: integer partial sums exactly, outputs to 1e-5 of the largest sum of the
//! magnitudes of the terms they are accumulated from.

mod common;

use burn::tensor::Tensor;
use cim_core::{AdcInit, AdcWindow, CimConv2d, CimConvConfig, Encoding, Granularity};
use common::{Dense, Naive, Psums, Rng, Windows};
use proptest::prelude::*;

/// Runs one configuration on random data; returns a description of the first mismatch.
fn compare(cfg: &CimConvConfig, batch: usize, size: usize, seed: u64) -> Result<(), String> {
    let device = common::test_device();
    let mut rng = Rng(seed);
    let input = rng.dense(vec![batch, cfg.in_channels, size, size], -0.2, 1.2);
    let weight = rng.dense(vec![cfg.out_channels, cfg.in_channels, cfg.kernel_size, cfg.kernel_size], -1.0, 1.0);
    let mut layer = cfg.init(&device).map_err(|e| e.to_string())?;
    layer = layer.with_weight(weight.tensor::<4>(&device)).map_err(|e| e.to_string())?;
    let x: Tensor<4> = input.tensor(&device);
    let naive = Naive::new(cfg);

    let ws: Vec<f32> = Dense::from_tensor(layer.weight_scale.val()).data.iter().map(|&v| v as f32).collect();
    let init = naive.weight_steps_init(&weight.data);
    for (a, b) in ws.iter().zip(&init) {
        if (*a as f64 - b).abs() > 1e-5 * b.abs() {
            return Err(format!("weight step init {a} vs naive {b}"));
        }
    }
    let expected = naive.psums(&input, &weight.data, &ws);
    let got = Dense::from_tensor(layer.psums(x.clone()));
    if got.shape != expected.shape() {
        return Err(format!("psums shape {:?} vs naive {:?}", got.shape, expected.shape()));
    }
    if let Some(i) = (0..got.data.len()).find(|&i| got.data[i] != expected.data[i] as f64) {
        return Err(format!("psum[{i}] {} vs naive {}", got.data[i], expected.data[i]));
    }
    let windows = match cfg.psum_bits {
        None => None,
        Some(_) => Some(check_calibration(&mut layer, &naive, &x, &expected, &mut rng)?),
    };
    let y = Dense::from_tensor(layer.forward(x));
    let y_naive = naive.output(&expected, &ws, windows.as_ref());
    // f32 accumulation error scales with the terms summed, not with their (possibly cancelling) sum
    let magnitude = naive.output_magnitude(&expected, &ws, windows.as_ref());
    let scale = magnitude.iter().fold(1e-12f64, |m, v| m.max(*v));
    for (i, (a, b)) in y.data.iter().zip(&y_naive).enumerate() {
        if (a - b).abs() > 1e-5 * scale {
            return Err(format!("output[{i}] {a} vs naive {b} (largest sum of |terms| {scale})"));
        }
    }
    Ok(())
}

fn host(t: Tensor<1>) -> Vec<f32> {
    Dense::from_tensor(t).data.iter().map(|&v| v as f32).collect()
}

/// Calibrates the layer on `x` and checks the windows against the naive simulator's partial
/// sums: `lsq` gives LSQ's steps (all-zero groups their layer's) and z = 0; `mse` gives windows
/// whose squared error is no larger than that of LSQ's; a `zero` window keeps z = 0. Then
/// injects random windows (steps scaled, offsets shifted both ways, for a learned window) and
/// returns them, so that the output comparison covers windows that clip on either side.
fn check_calibration(
    layer: &mut CimConv2d,
    naive: &Naive,
    x: &Tensor<4>,
    psums: &Psums,
    rng: &mut Rng,
) -> Result<Windows, String> {
    let cfg = layer.config().clone();
    layer.arm_psum_calibration();
    let _ = layer.forward(x.clone());
    if !layer.finish_psum_calibration() {
        return Err("calibration did not run".into());
    }
    let calibrated = Windows { steps: host(layer.psum_scale.val()), offsets: host(layer.psum_offset.val()) };
    let lsq_steps = naive.psum_steps_init(psums);
    if !cfg.adc_window.is_learned() && calibrated.offsets.iter().any(|&z| z != 0.0) {
        return Err(format!("zero window with offsets {:?}", calibrated.offsets));
    }
    match cfg.adc_init {
        AdcInit::Lsq => {
            for (a, b) in calibrated.steps.iter().zip(&lsq_steps) {
                if (*a as f64 - b).abs() > 1e-5 * b.abs() {
                    return Err(format!("psum step init {a} vs naive {b}"));
                }
            }
            if calibrated.offsets.iter().any(|&z| z != 0.0) {
                return Err("lsq init with a non-zero offset".into());
            }
        }
        AdcInit::Mse => {
            let lsq = Windows::zero(lsq_steps.iter().map(|&v| v as f32).collect());
            let (mse_err, lsq_err) = (naive.window_errors(psums, &calibrated), naive.window_errors(psums, &lsq));
            let zero = naive.zero_groups(psums);
            for (i, (m, l)) in mse_err.iter().zip(&lsq_err).enumerate() {
                // the search runs in f64 and the layer holds f32 windows: allow one sample to
                // round to the neighbouring level
                let slack = (calibrated.steps[i] as f64).powi(2);
                if !zero[i] && *m > l * (1.0 + 1e-6) + slack {
                    return Err(format!("group {i}: MSE window error {m} above LSQ's {l} ({calibrated:?})"));
                }
            }
        }
    }
    let steps: Vec<f32> = calibrated.steps.iter().map(|&s| s * rng.uniform(0.5, 1.5) as f32).collect();
    let offsets: Vec<f32> = match cfg.adc_window {
        AdcWindow::Zero => vec![0.0; steps.len()],
        AdcWindow::Learned => steps.iter().map(|&s| (s as f64 * rng.uniform(-6.0, 6.0)).round() as f32).collect(),
    };
    let device = x.device();
    let mut injected =
        layer.clone().with_psum_scale(Tensor::from_floats(steps.as_slice(), &device)).map_err(|e| e.to_string())?;
    injected =
        injected.with_psum_offset(Tensor::from_floats(offsets.as_slice(), &device)).map_err(|e| e.to_string())?;
    *layer = injected;
    Ok(Windows { steps, offsets })
}

fn config_strategy() -> impl Strategy<Value = (CimConvConfig, usize, u64)> {
    let shape = (
        prop_oneof![Just(1usize), Just(3usize)],
        1usize..=2,  // stride
        0usize..=1,  // padding
        1usize..=9,  // in channels
        1usize..=12, // out channels
        1usize..=5,  // array size in units of k^2 (+ extra rows below)
        0usize..=2,  // extra rows
        4usize..=7,  // input size
    );
    let bits = (
        prop_oneof![Just(1u32), Just(2u32), Just(4u32)], // cell bits
        1u32..=2,                                        // slices
        1u32..=4,                                        // act bits
        prop_oneof![Just(None), (1u32..=5).prop_map(Some)],
        (0usize..2, 0usize..3, 0usize..3),
        (0usize..2, 0usize..2), // ADC window, ADC init
        any::<u64>(),
    );
    (shape, bits).prop_map(
        |((k, stride, pad, cin, cout, units, extra, size), (bc, slices, act, psum, (e, wg, pg), (win, init), seed))| {
            let cfg = CimConvConfig::new(cin, cout, k)
                .with_stride(stride)
                .with_padding(pad * (k / 2))
                .with_array_size(units * k * k + extra)
                .with_cell_bits(bc)
                .with_weight_bits(bc * slices)
                .with_act_bits(act)
                .with_psum_bits(psum)
                .with_encoding(Encoding::ALL[e])
                .with_weight_granularity(Granularity::ALL[wg])
                .with_psum_granularity(Granularity::ALL[pg])
                .with_adc_window(AdcWindow::ALL[win])
                .with_adc_init(AdcInit::ALL[init]);
            (cfg, size, seed)
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn fast_path_agrees_with_the_naive_simulator((cfg, size, seed) in config_strategy()) {
        prop_assert!(compare(&cfg, 2, size, seed).is_ok(), "{:?}: {:?}", cfg, compare(&cfg, 2, size, seed));
    }
}

/// Every encoding x granularity pair x cell bits x (ideal, real ADC), on a shape where C_in is
/// not a multiple of the channels per array and C_out > N, for k = 1 and 3 and both strides.
#[test]
fn every_setting_on_awkward_shapes() {
    let mut seed = 1usize;
    for (k, array_size, cin, cout, stride) in [(3, 18, 5, 20, 1), (1, 3, 7, 5, 2), (3, 27, 4, 30, 2), (1, 4, 6, 9, 1)] {
        for encoding in Encoding::ALL {
            for wg in Granularity::ALL {
                for pg in Granularity::ALL {
                    for bc in [1, 2, 4] {
                        for psum in [None, Some(3)] {
                            let cfg = CimConvConfig::new(cin, cout, k)
                                .with_stride(stride)
                                .with_padding(k / 2)
                                .with_array_size(array_size)
                                .with_weight_bits(4)
                                .with_cell_bits(bc)
                                .with_act_bits(3)
                                .with_psum_bits(psum)
                                .with_encoding(encoding)
                                .with_weight_granularity(wg)
                                .with_psum_granularity(pg)
                                .with_adc_window(AdcWindow::ALL[seed % 2])
                                .with_adc_init(AdcInit::ALL[seed / 2 % 2]);
                            let (tiling, _) = cfg.validate().unwrap();
                            assert!(cin % tiling.channels_per_array != 0 && cout > array_size);
                            seed += 1;
                            if let Err(e) = compare(&cfg, 2, 5, seed as u64) {
                                panic!("{cfg:?}: {e}");
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `inspect`'s statistics (per polarity and slice: signal, noise, clipping, code histogram) match
/// the naive simulator's walk over the same partial sums and windows.
#[test]
fn adc_inspection_matches_the_naive_simulator() {
    let device = common::test_device();
    for (i, (encoding, pg)) in
        Encoding::ALL.into_iter().flat_map(|e| Granularity::ALL.into_iter().map(move |g| (e, g))).enumerate()
    {
        let cfg = CimConvConfig::new(5, 11, 3)
            .with_padding(1)
            .with_array_size(18)
            .with_psum_bits(Some(3))
            .with_encoding(encoding)
            .with_psum_granularity(pg);
        let mut rng = Rng(500 + i as u64);
        let input = rng.dense(vec![2, 5, 6, 6], -0.2, 1.2);
        let weight = rng.dense(vec![11, 5, 3, 3], -1.0, 1.0);
        let mut layer = cfg.init(&device).unwrap().with_weight(weight.tensor::<4>(&device)).unwrap();
        let x: Tensor<4> = input.tensor(&device);
        let naive = Naive::new(&cfg);
        let ws = host(layer.weight_scale.val());
        let p = naive.psums(&input, &weight.data, &ws);
        let windows = check_calibration(&mut layer, &naive, &x, &p, &mut rng).unwrap();
        layer.arm_adc_inspection();
        let _ = layer.forward(x);
        let stats = layer.take_adc_quality().unwrap();
        assert!(layer.take_adc_quality().is_none(), "taking the statistics disarms");
        let slices = naive.slices;
        let (mut signal, mut noise) = (vec![0f64; stats.len()], vec![0f64; stats.len()]);
        // the mean of every (pol, s, g, c) column over the batch, for the spread
        let mut column_sum = std::collections::HashMap::<(usize, usize, usize, usize), (f64, f64)>::new();
        p.for_each(|pol, s, g, _b, c, _pos, v| {
            let e = column_sum.entry((pol, s, g, c)).or_default();
            e.0 += v as f64;
            e.1 += 1.0;
        });
        let mut spread = vec![0f64; stats.len()];
        let (mut low, mut high) = (vec![0u64; stats.len()], vec![0u64; stats.len()]);
        let mut codes = vec![std::collections::BTreeMap::<i64, u64>::new(); stats.len()];
        p.for_each(|pol, s, g, _b, c, _pos, v| {
            let j = pol * slices + s;
            let k = naive.psum_key(pol, s, g, c);
            let (step, z) = (windows.steps[k], windows.offsets[k]);
            let (lo, hi) = naive.p_range(s);
            let ratio = (v as f32 - z) / step;
            let code = ratio.clamp(lo as f32, hi as f32).round_ties_even();
            let q = z as f64 + step as f64 * code as f64;
            signal[j] += (v as f64).powi(2);
            let (sum, n) = column_sum[&(pol, s, g, c)];
            spread[j] += (v as f64 - sum / n).powi(2);
            noise[j] += (v as f64 - q).powi(2);
            low[j] += u64::from(ratio < lo as f32);
            high[j] += u64::from(ratio > hi as f32);
            *codes[j].entry(code as i64).or_default() += 1;
        });
        for (j, st) in stats.iter().enumerate() {
            assert_eq!((st.polarity, st.slice), (j / slices, j % slices));
            assert!((st.signal - signal[j]).abs() <= 1e-9 * signal[j].max(1.0), "signal {j}");
            assert!((st.spread - spread[j]).abs() <= 1e-6 * spread[j].max(1.0), "spread {j}");
            assert!((st.noise - noise[j]).abs() <= 1e-6 * noise[j].max(1.0), "noise {j}: {} vs {}", st.noise, noise[j]);
            assert_eq!((st.clipped_low, st.clipped_high), (low[j], high[j]), "clipping {j}");
            for (code, n) in &codes[j] {
                assert_eq!(st.code_counts[(code - st.low_code) as usize], *n, "code {code} of {j}");
            }
            assert_eq!(st.samples, codes[j].values().sum::<u64>());
        }
        // digit shares: every slice's shares sum to 1
        for d in layer.digit_shares() {
            assert!((d.shares.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        }
    }
}
