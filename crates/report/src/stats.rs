//! Paired comparisons over seeds: the mean of per-seed differences with its 95% Student-t
//! interval, and the verdict the interval supports.

use statrs::distribution::{ContinuousCDF, StudentsT};

/// The 95% t-interval of the mean of paired differences (in the units given, e.g. points).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairedInterval {
    /// Pairs.
    pub n: usize,
    /// Mean difference.
    pub mean: f64,
    /// Lower end of the 95% interval.
    pub low: f64,
    /// Upper end of the 95% interval.
    pub high: f64,
}

/// What an interval says about a difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The whole interval lies above 0.
    Yes,
    /// The whole interval lies below 0.
    No,
    /// The interval contains 0.
    WithinNoise,
}

impl Verdict {
    /// As the tables print it.
    pub fn text(self) -> &'static str {
        match self {
            Verdict::Yes => "yes",
            Verdict::No => "no",
            Verdict::WithinNoise => "within noise",
        }
    }
}

impl PairedInterval {
    /// The interval of the mean of `differences` (one per pair); `None` with fewer than two
    /// pairs (no spread to judge by) or a non-finite value.
    pub fn of(differences: &[f64]) -> Option<Self> {
        let n = differences.len();
        if n < 2 || differences.iter().any(|d| !d.is_finite()) {
            return None;
        }
        let mean = differences.iter().sum::<f64>() / n as f64;
        let var = differences.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let t = StudentsT::new(0.0, 1.0, (n - 1) as f64).expect("n >= 2 degrees of freedom").inverse_cdf(0.975);
        let half = t * (var / n as f64).sqrt();
        Some(Self { n, mean, low: mean - half, high: mean + half })
    }

    /// Yes above 0, no below 0, else within noise.
    pub fn verdict(&self) -> Verdict {
        if self.low > 0.0 {
            Verdict::Yes
        } else if self.high < 0.0 {
            Verdict::No
        } else {
            Verdict::WithinNoise
        }
    }

    /// `+1.23 [+0.40, +2.06]`.
    pub fn text(&self) -> String {
        format!("{:+.2} [{:+.2}, {:+.2}]", self.mean, self.low, self.high)
    }
}

/// Pairs the values of `a` and `b` by key (e.g. seed) and returns `a - b` for every key both
/// have, in key order.
pub fn paired_differences<K: Ord + Copy>(a: &[(K, f64)], b: &[(K, f64)]) -> Vec<f64> {
    let b: std::collections::BTreeMap<K, f64> = b.iter().copied().collect();
    let mut out: Vec<(K, f64)> = a.iter().filter_map(|(k, x)| b.get(k).map(|y| (*k, x - y))).collect();
    out.sort_by(|x, y| x.0.cmp(&y.0));
    out.into_iter().map(|(_, d)| d).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against a hand computation: differences 1, 2, 3 have mean 2, sd 1, t(0.975, 2) =
    /// 4.302653, half-width 4.302653 / sqrt(3) = 2.484138.
    #[test]
    fn interval_of_three_pairs() {
        let i = PairedInterval::of(&[1.0, 2.0, 3.0]).unwrap();
        assert_eq!(i.n, 3);
        assert!((i.mean - 2.0).abs() < 1e-12);
        assert!((i.high - i.mean - 2.484138).abs() < 1e-5, "{i:?}");
        assert_eq!(i.verdict(), Verdict::WithinNoise);
        let clear = PairedInterval::of(&[1.0, 1.1, 0.9]).unwrap();
        assert_eq!(clear.verdict(), Verdict::Yes);
        let below = PairedInterval::of(&[-1.0, -1.1, -0.9]).unwrap();
        assert_eq!(below.verdict(), Verdict::No);
        assert!(PairedInterval::of(&[1.0]).is_none());
        assert!(PairedInterval::of(&[1.0, f64::NAN]).is_none());
        // two pairs: t(0.975, 1) = 12.7062
        let two = PairedInterval::of(&[0.0, 2.0]).unwrap();
        assert!((two.high - 1.0 - 12.7062).abs() < 1e-3, "{two:?}");
    }

    #[test]
    fn pairs_by_key_only() {
        let a = [(2u64, 5.0), (0, 3.0), (1, 4.0)];
        let b = [(0u64, 1.0), (2, 1.0)];
        assert_eq!(paired_differences(&a, &b), vec![2.0, 4.0]);
    }
}
