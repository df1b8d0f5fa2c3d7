//! The training-time input pipeline: per-epoch seeded shuffling, CIFAR-style augmentation
//! (random crop after 4-pixel zero padding, horizontal flip), per-channel normalization, and
//! batches assembled in parallel on a background thread so that the model never waits.
//!
//! Everything random is derived from (seed, epoch, position in the epoch), so a batch is the same
//! whatever the thread scheduling, and an epoch can be regenerated when a run resumes.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;

use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::imageset::ImageSet;
use crate::manifest::{AugmentKind, Manifest};

/// Per-channel normalization of pixels scaled to [0, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct Normalize {
    /// Channel means.
    pub mean: Vec<f32>,
    /// Channel standard deviations.
    pub std: Vec<f32>,
}

impl Normalize {
    /// The manifest's constants.
    pub fn of(manifest: &Manifest) -> Self {
        Self { mean: manifest.normalization.mean.clone(), std: manifest.normalization.std.clone() }
    }
}

/// Random crop with zero padding and horizontal flip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Augment {
    /// Zero padding on each side before the random crop.
    pub pad: usize,
    /// Flip horizontally with probability 1/2.
    pub flip: bool,
}

impl Augment {
    /// The manifest's training augmentation, if any.
    pub fn of(manifest: &Manifest) -> Option<Self> {
        match manifest.augment {
            AugmentKind::None => None,
            AugmentKind::CropFlip => Some(Self { pad: 4, flip: true }),
        }
    }
}

/// One batch, ready for a tensor: images [B, C, H, W] normalized, labels [B].
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Row-major float pixels.
    pub images: Vec<f32>,
    /// Class labels.
    pub labels: Vec<i64>,
    /// [B, C, H, W].
    pub shape: [usize; 4],
}

/// The order of `indices` in `epoch`: a seeded shuffle (or the given order).
pub fn epoch_order(indices: &[usize], seed: u64, epoch: usize, shuffle: bool) -> Vec<usize> {
    let mut order = indices.to_vec();
    if shuffle {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (epoch as u64).wrapping_mul(0xA24B_AED4_963E_E407));
        order.shuffle(&mut rng);
    }
    order
}

/// Writes image `src` (CHW bytes) into `dst` as normalized floats, cropped and flipped.
fn prepare_image(
    src: &[u8],
    shape: [usize; 3],
    norm: &Normalize,
    transform: Option<(isize, isize, bool)>,
    dst: &mut [f32],
) {
    let [c, h, w] = shape;
    for ch in 0..c {
        let (scale, shift) = (1.0 / (255.0 * norm.std[ch]), norm.mean[ch] / norm.std[ch]);
        let plane = &src[ch * h * w..(ch + 1) * h * w];
        let out = &mut dst[ch * h * w..(ch + 1) * h * w];
        match transform {
            None => {
                for (o, &p) in out.iter_mut().zip(plane) {
                    *o = p as f32 * scale - shift;
                }
            }
            Some((dy, dx, flip)) => {
                for y in 0..h {
                    let sy = y as isize + dy;
                    for x in 0..w {
                        let xx = if flip { w - 1 - x } else { x };
                        let sx = xx as isize + dx;
                        let p = if sy >= 0 && sy < h as isize && sx >= 0 && sx < w as isize {
                            plane[sy as usize * w + sx as usize] as f32
                        } else {
                            0.0 // zero padding (black), as torchvision's RandomCrop(padding=4)
                        };
                        out[y * w + x] = p * scale - shift;
                    }
                }
            }
        }
    }
}

/// How the batches of one epoch are cut and prepared.
#[derive(Debug, Clone)]
pub struct EpochBatches {
    /// Images per batch.
    pub batch_size: usize,
    /// Shuffle the images by (seed, epoch); else keep the order given.
    pub shuffle: bool,
    /// Drop a final partial batch (training); evaluation keeps it.
    pub drop_last: bool,
    /// Random crop and flip, drawn per image from (seed, epoch, position).
    pub augment: Option<Augment>,
    /// Per-channel normalization.
    pub norm: Normalize,
    /// The run's seed.
    pub seed: u64,
    /// The epoch (0-based).
    pub epoch: usize,
}

impl EpochBatches {
    /// A training epoch: shuffled, augmented as the data set says, the last partial batch dropped.
    pub fn training(batch_size: usize, augment: Option<Augment>, norm: Normalize, seed: u64, epoch: usize) -> Self {
        Self { batch_size, shuffle: true, drop_last: true, augment, norm, seed, epoch }
    }

    /// Every image once, in the order given, as it is (evaluation, inspection).
    pub fn in_order(batch_size: usize, norm: Normalize) -> Self {
        Self { batch_size, shuffle: false, drop_last: false, augment: None, norm, seed: 0, epoch: 0 }
    }
}

/// Builds batch `b` of an epoch order, images prepared in parallel.
pub fn make_batch(set: &ImageSet, order: &[usize], b: usize, plan: &EpochBatches) -> Batch {
    let EpochBatches { batch_size, augment, ref norm, seed, epoch, .. } = *plan;
    let items = &order[b * batch_size..((b + 1) * batch_size).min(order.len())];
    let n = set.image_len();
    let mut images = vec![0f32; items.len() * n];
    images.par_chunks_mut(n).zip(items.par_iter().enumerate()).for_each(|(dst, (pos, &i))| {
        let transform = augment.map(|a| {
            let position = (b * batch_size + pos) as u64;
            let mut rng = ChaCha8Rng::seed_from_u64(
                seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    ^ position.wrapping_mul(0xC2B2_AE3D_27D4_EB4F).rotate_left(17),
            );
            let p = a.pad as i64;
            let dy = rng.random_range(-p..=p) as isize;
            let dx = rng.random_range(-p..=p) as isize;
            (dy, dx, a.flip && rng.random_bool(0.5))
        });
        prepare_image(set.image(i), set.shape, norm, transform, dst);
    });
    let [c, h, w] = set.shape;
    Batch { images, labels: items.iter().map(|&i| set.labels[i] as i64).collect(), shape: [items.len(), c, h, w] }
}

/// The batches of one epoch, prepared ahead on a background thread (two in flight).
pub struct BatchLoader {
    rx: Receiver<Batch>,
    worker: Option<JoinHandle<()>>,
    len: usize,
}

impl BatchLoader {
    /// Starts preparing the batches of one epoch over `indices` of `set`, as `plan` cuts them.
    pub fn new(set: Arc<ImageSet>, indices: &[usize], plan: EpochBatches) -> Self {
        assert!(plan.batch_size > 0, "batch size must be positive");
        let order = epoch_order(indices, plan.seed, plan.epoch, plan.shuffle);
        let len = if plan.drop_last { order.len() / plan.batch_size } else { order.len().div_ceil(plan.batch_size) };
        let (tx, rx) = sync_channel(2);
        let worker = std::thread::spawn(move || {
            for b in 0..len {
                let batch = make_batch(&set, &order, b, &plan);
                if tx.send(batch).is_err() {
                    return; // the consumer stopped early
                }
            }
        });
        Self { rx, worker: Some(worker), len }
    }

    /// Number of batches in the epoch.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the epoch has no batch.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Iterator for BatchLoader {
    type Item = Batch;
    fn next(&mut self) -> Option<Batch> {
        self.rx.recv().ok()
    }
}

impl Drop for BatchLoader {
    fn drop(&mut self) {
        // unblock the worker, then wait for it
        let (_, dead) = sync_channel(0);
        self.rx = dead;
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> ImageSet {
        ImageSet {
            shape: [1, 4, 4],
            classes: vec!["a".into(), "b".into()],
            pixels: (0..8 * 16).map(|i| (i % 251) as u8).collect(),
            labels: (0..8).map(|i| (i % 2) as u16).collect(),
        }
    }

    #[test]
    fn batches_are_deterministic_and_cover_the_epoch() {
        let set = Arc::new(toy());
        let norm = Normalize { mean: vec![0.0], std: vec![1.0] };
        let aug = Some(Augment { pad: 1, flip: true });
        let run = |seed, epoch| -> Vec<Batch> {
            let plan = EpochBatches { drop_last: false, ..EpochBatches::training(3, aug, norm.clone(), seed, epoch) };
            BatchLoader::new(set.clone(), &(0..8).collect::<Vec<_>>(), plan).collect()
        };
        let a = run(5, 0);
        assert_eq!(a, run(5, 0));
        assert_ne!(a, run(5, 1));
        assert_eq!(a.len(), 3);
        assert_eq!(a[2].shape, [2, 1, 4, 4]);
        let mut labels: Vec<i64> = a.iter().flat_map(|b| b.labels.clone()).collect();
        labels.sort();
        assert_eq!(labels, vec![0, 0, 0, 0, 1, 1, 1, 1]);
        let dropped: Vec<Batch> =
            BatchLoader::new(set.clone(), &(0..8).collect::<Vec<_>>(), EpochBatches::training(3, None, norm, 5, 0))
                .collect();
        assert_eq!(dropped.len(), 2);
    }

    #[test]
    fn normalization_and_identity_transform() {
        let set = toy();
        let norm = Normalize { mean: vec![0.5], std: vec![0.25] };
        let b = make_batch(&set, &[1], 0, &EpochBatches::in_order(1, norm.clone()));
        let expected: Vec<f32> = set.image(1).iter().map(|&p| (p as f32 / 255.0 - 0.5) / 0.25).collect();
        for (x, y) in b.images.iter().zip(&expected) {
            assert!((x - y).abs() < 1e-5);
        }
        // zero shift, no flip: the same pixels
        let mut out = vec![0f32; 16];
        prepare_image(set.image(1), set.shape, &norm, Some((0, 0, false)), &mut out);
        assert_eq!(out, b.images);
        // a flip mirrors each row
        prepare_image(set.image(1), set.shape, &norm, Some((0, 0, true)), &mut out);
        assert_eq!(out[0], b.images[3]);
    }
}
