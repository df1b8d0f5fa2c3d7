//! The fast path (one grouped convolution + fused ADC) against the naive simulator that walks the
//! arrays one by one: integer partial sums exactly, outputs to 1e-5 of the largest |output|.

mod common;

use burn::tensor::{Device, Tensor};
use cim_core::{CimConvConfig, Encoding, Granularity};
use common::{Dense, Naive, Rng};
use proptest::prelude::*;

/// Runs one configuration on random data; returns a description of the first mismatch.
fn compare(cfg: &CimConvConfig, batch: usize, size: usize, seed: u64) -> Result<(), String> {
    let device = Device::flex();
    let mut rng = Rng(seed);
    let input = rng.dense(vec![batch, cfg.in_channels, size, size], -0.2, 1.2);
    let weight = rng.dense(vec![cfg.out_channels, cfg.in_channels, cfg.kernel_size, cfg.kernel_size], -1.0, 1.0);
    let mut layer = cfg.init(&device).map_err(|e| e.to_string())?;
    layer = layer.with_weight(weight.tensor::<4>(&device))?;
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
    let psum_steps = if cfg.psum_bits.is_some() {
        layer.arm_psum_calibration();
        let _ = layer.forward(x.clone());
        layer.finish_psum_calibration();
        let steps: Vec<f32> = Dense::from_tensor(layer.psum_scale.val()).data.iter().map(|&v| v as f32).collect();
        for (a, b) in steps.iter().zip(naive.psum_steps_init(&expected)) {
            if (*a as f64 - b).abs() > 1e-5 * b.abs() {
                return Err(format!("psum step init {a} vs naive {b}"));
            }
        }
        Some(steps)
    } else {
        None
    };
    let y = Dense::from_tensor(layer.forward(x));
    let y_naive = naive.output(&expected, &ws, psum_steps.as_deref());
    let scale = y_naive.iter().fold(1e-12f64, |m, v| m.max(v.abs()));
    for (i, (a, b)) in y.data.iter().zip(&y_naive).enumerate() {
        if (a - b).abs() > 1e-5 * scale {
            return Err(format!("output[{i}] {a} vs naive {b} (max |y| {scale})"));
        }
    }
    Ok(())
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
        any::<u64>(),
    );
    (shape, bits).prop_map(
        |((k, stride, pad, cin, cout, units, extra, size), (bc, slices, act, psum, (e, wg, pg), seed))| {
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
                .with_psum_granularity(Granularity::ALL[pg]);
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
    let mut seed = 1;
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
                                .with_psum_granularity(pg);
                            let (tiling, _) = cfg.validate().unwrap();
                            assert!(cin % tiling.channels_per_array != 0 && cout > array_size);
                            seed += 1;
                            if let Err(e) = compare(&cfg, 2, 5, seed) {
                                panic!("{cfg:?}: {e}");
                            }
                        }
                    }
                }
            }
        }
    }
}
