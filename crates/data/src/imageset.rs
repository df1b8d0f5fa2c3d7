//! An in-memory image set: 8-bit pixels in CHW order and class labels.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::{DataError, Result};

/// Decoded images of one split.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSet {
    /// [channels, height, width].
    pub shape: [usize; 3],
    /// Class names in label order.
    pub classes: Vec<String>,
    /// N * C * H * W pixels, image after image, each in CHW order.
    pub pixels: Vec<u8>,
    /// N labels.
    pub labels: Vec<u16>,
}

impl ImageSet {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels per image.
    pub fn image_len(&self) -> usize {
        self.shape.iter().product()
    }

    /// The pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// The same images labelled in the class order `classes` (a model's), each keeping its
    /// class: the class of label `l` here is `classes[l']` there, matched by name. A class of this
    /// set that `classes` lacks is an error naming it.
    pub fn relabel(&self, classes: &[String]) -> Result<ImageSet> {
        let map: Vec<u16> = self
            .classes
            .iter()
            .map(|c| {
                classes.iter().position(|x| x == c).map(|i| i as u16).ok_or_else(|| {
                    DataError::Invalid(format!("class `{c}` is not one of the {} classes given", classes.len()))
                })
            })
            .collect::<Result<_>>()?;
        Ok(ImageSet {
            shape: self.shape,
            classes: classes.to_vec(),
            pixels: self.pixels.clone(),
            labels: self.labels.iter().map(|&l| map[l as usize]).collect(),
        })
    }

    /// Images per class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }

    /// A new set holding the images at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> ImageSet {
        let mut pixels = Vec::with_capacity(indices.len() * self.image_len());
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
        }
        ImageSet {
            shape: self.shape,
            classes: self.classes.clone(),
            pixels,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
        }
    }

    /// A seeded, class-balanced random subset of `n` indices (never the first n in file order):
    /// n / classes per class, the remainder going to randomly chosen classes. Sorted.
    pub fn balanced_subset(&self, n: usize, seed: u64) -> Result<Vec<usize>> {
        if n > self.len() {
            return Err(DataError::Invalid(format!("a subset of {n} images was asked of a split of {}", self.len())));
        }
        let classes = self.classes.len();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut per_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
        for (i, &l) in self.labels.iter().enumerate() {
            per_class[l as usize].push(i);
        }
        for members in &mut per_class {
            members.shuffle(&mut rng);
        }
        let mut quota = vec![n / classes; classes];
        let mut order: Vec<usize> = (0..classes).collect();
        order.shuffle(&mut rng);
        for &c in order.iter().take(n % classes) {
            quota[c] += 1;
        }
        // a class with too few images passes its quota on to the others
        let mut missing = 0;
        for c in 0..classes {
            if quota[c] > per_class[c].len() {
                missing += quota[c] - per_class[c].len();
                quota[c] = per_class[c].len();
            }
        }
        for &c in order.iter().cycle().take(classes * (missing + 1)) {
            if missing == 0 {
                break;
            }
            if quota[c] < per_class[c].len() {
                quota[c] += 1;
                missing -= 1;
            }
        }
        let mut picked: Vec<usize> = per_class.iter().zip(&quota).flat_map(|(m, &q)| m[..q].iter().copied()).collect();
        picked.sort_unstable();
        Ok(picked)
    }

    /// Splits off the last `per_class` images of every class (in file order) as a validation set:
    /// returns (kept, held out) indices.
    pub fn holdout_tail(&self, per_class: usize) -> (Vec<usize>, Vec<usize>) {
        let counts = self.class_counts();
        let mut seen = vec![0; counts.len()];
        let (mut keep, mut held) = (Vec::new(), Vec::new());
        for (i, &l) in self.labels.iter().enumerate() {
            let l = l as usize;
            seen[l] += 1;
            if seen[l] > counts[l].saturating_sub(per_class) {
                held.push(i);
            } else {
                keep.push(i);
            }
        }
        (keep, held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(labels: Vec<u16>, classes: usize) -> ImageSet {
        ImageSet {
            shape: [1, 1, 1],
            classes: (0..classes).map(|c| c.to_string()).collect(),
            pixels: (0..labels.len()).map(|i| i as u8).collect(),
            labels,
        }
    }

    #[test]
    fn balanced_subsets_are_seeded_and_balanced() {
        let s = set((0..1000).map(|i| (i % 10) as u16).collect(), 10);
        let a = s.balanced_subset(105, 1).unwrap();
        assert_eq!(a, s.balanced_subset(105, 1).unwrap());
        assert_ne!(a, s.balanced_subset(105, 2).unwrap());
        assert_ne!(a, (0..105).collect::<Vec<_>>());
        let counts = s.select(&a).class_counts();
        assert!(counts.iter().all(|&c| c == 10 || c == 11), "{counts:?}");
        assert_eq!(counts.iter().sum::<usize>(), 105);
        assert!(s.balanced_subset(1001, 0).is_err());
    }

    #[test]
    fn small_classes_pass_their_quota_on() {
        let mut labels: Vec<u16> = (0..90).map(|i| (i % 9) as u16 + 1).collect();
        labels.push(0);
        let s = set(labels, 10);
        let a = s.balanced_subset(50, 3).unwrap();
        assert_eq!(a.len(), 50);
        assert_eq!(s.select(&a).class_counts()[0], 1);
    }

    #[test]
    fn holdout_takes_the_tail_of_every_class() {
        let s = set((0..40).map(|i| (i % 4) as u16).collect(), 4);
        let (keep, held) = s.holdout_tail(2);
        assert_eq!(held, vec![32, 33, 34, 35, 36, 37, 38, 39]);
        assert_eq!(keep.len(), 32);
    }
}
