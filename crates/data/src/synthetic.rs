//! The embedded default data set: deterministic, seeded, learnable 32x32 RGB images of ten
//! classes (a shape or texture each, in a class colour family, at a random place and size, over a
//! random background, with pixel noise), plus a fraction of deliberately wrong labels so that no
//! model can reach 100%. Written as CIFAR binary batches and read back through the CIFAR reader.

use std::path::{Path, PathBuf};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::cifar::CIFAR_PIXELS;
use crate::store::write_atomic;
use crate::{DataError, Result};

/// Batch file names inside the data set's folder.
pub const TRAIN_FILE: &str = "data_batch_1.bin";
/// Test batch file name.
pub const TEST_FILE: &str = "test_batch.bin";

const SIZE: usize = 32;

/// One record (label byte + 3072 pixels) of image `index` of a split.
pub fn record(seed: u64, split: u64, index: u64, label_noise: f64) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(
        seed ^ split.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03),
    );
    let class = (index % 10) as usize;
    let mut img = [[0f32; SIZE * SIZE]; 3];
    // background: a random colour with a gentle gradient
    let bg: [f32; 3] = [rng.random_range(0.1..0.9), rng.random_range(0.1..0.9), rng.random_range(0.1..0.9)];
    let (gx, gy) = (rng.random_range(-0.2..0.2f32), rng.random_range(-0.2..0.2f32));
    // foreground: the class colour family (hues overlap between neighbours) with jitter
    let hue = class as f32 / 10.0 + rng.random_range(-0.07..0.07f32);
    let fg = hue_to_rgb(hue, rng.random_range(0.5..1.0), rng.random_range(0.45..0.95));
    let (cx, cy) = (rng.random_range(10.0..22.0f32), rng.random_range(10.0..22.0f32));
    let r = rng.random_range(5.0..10.0f32);
    let period = rng.random_range(3.0..6.0f32);
    for y in 0..SIZE {
        for x in 0..SIZE {
            let (fx, fy) = (x as f32 - cx, y as f32 - cy);
            let inside = shape(class, fx, fy, r, period, x as f32, y as f32);
            for ch in 0..3 {
                let base = bg[ch] + gx * (x as f32 / SIZE as f32 - 0.5) + gy * (y as f32 / SIZE as f32 - 0.5);
                img[ch][y * SIZE + x] = if inside { fg[ch] } else { base };
            }
        }
    }
    let mut out = Vec::with_capacity(1 + CIFAR_PIXELS);
    let noisy = rng.random_bool(label_noise);
    let label = if noisy { (class + rng.random_range(1..10)) % 10 } else { class };
    out.push(label as u8);
    for plane in &img {
        for &v in plane {
            let noise: f32 = (rng.random::<f32>() + rng.random::<f32>() + rng.random::<f32>() - 1.5) * 0.16;
            out.push(((v + noise).clamp(0.0, 1.0) * 255.0).round() as u8);
        }
    }
    out
}

fn shape(class: usize, fx: f32, fy: f32, r: f32, period: f32, x: f32, y: f32) -> bool {
    let d = (fx * fx + fy * fy).sqrt();
    match class {
        0 => d < r,                                                                        // disc
        1 => fx.abs() < r * 0.85 && fy.abs() < r * 0.85,                                   // square
        2 => fy < r * 0.8 && fy > -r && fx.abs() < (fy + r) * 0.55,                        // triangle
        3 => (fx.abs() < r * 0.3 && fy.abs() < r) || (fy.abs() < r * 0.3 && fx.abs() < r), // cross
        4 => d < r && d > r * 0.55,                                                        // ring
        5 => ((y / period).floor() as i64) % 2 == 0,                                       // horizontal stripes
        6 => ((x / period).floor() as i64) % 2 == 0,                                       // vertical stripes
        7 => (((x + y) / period).floor() as i64) % 2 == 0,                                 // diagonal stripes
        8 => (((x / period).floor() + (y / period).floor()) as i64) % 2 == 0,              // checker
        _ => {
            let d2 = ((fx - r * 0.6).powi(2) + fy * fy).sqrt();
            let d3 = ((fx + r * 0.6).powi(2) + fy * fy).sqrt();
            d2 < r * 0.4 || d3 < r * 0.4 // two dots
        }
    }
}

fn hue_to_rgb(h: f32, s: f32, v: f32) -> [f32; 3] {
    let h = h.rem_euclid(1.0) * 6.0;
    let c = v * s;
    let x = c * (1.0 - ((h % 2.0) - 1.0).abs());
    let (r, g, b) = match h as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = v - c;
    [r + m, g + m, b + m]
}

/// All records of a split, generated in parallel (each image has its own seed).
pub fn generate(seed: u64, split: u64, count: usize, label_noise: f64) -> Vec<u8> {
    (0..count as u64).into_par_iter().flat_map_iter(|i| record(seed, split, i, label_noise)).collect()
}

/// Writes the train and test batches into `folder` unless they are there already; returns their
/// paths. The files are a pure function of the seed, counts and noise.
pub fn ensure_written(folder: &Path, seed: u64, train: usize, test: usize, label_noise: f64) -> Result<[PathBuf; 2]> {
    if !(0.0..1.0).contains(&label_noise) {
        return Err(DataError::Invalid(format!("synthetic label_noise {label_noise} must lie in [0, 1)")));
    }
    let paths = [folder.join(TRAIN_FILE), folder.join(TEST_FILE)];
    for (split, (path, count)) in paths.iter().zip([train, test]).enumerate() {
        let expected = (count * (1 + CIFAR_PIXELS)) as u64;
        if std::fs::metadata(path).is_ok_and(|m| m.len() == expected) {
            continue;
        }
        write_atomic(path, &generate(seed, split as u64, count, label_noise))?;
    }
    Ok(paths)
}
