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
    /// Standard error of the mean.
    pub se: f64,
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
        let se = (var / n as f64).sqrt();
        let half = t * se;
        Some(Self { n, mean, low: mean - half, high: mean + half, se })
    }

    /// The two-sided p-value of the paired t-test of a zero mean difference (0 where every
    /// difference is the same non-zero value, 1 where all are 0).
    pub fn p_value(&self) -> f64 {
        if self.se == 0.0 {
            return if self.mean == 0.0 { 1.0 } else { 0.0 };
        }
        let t = StudentsT::new(0.0, 1.0, (self.n - 1) as f64).expect("n >= 2 degrees of freedom");
        (2.0 * (1.0 - t.cdf((self.mean / self.se).abs()))).clamp(0.0, 1.0)
    }

    /// The verdict at the 5% level with the p-value `adjusted` in place of the interval's own
    /// (e.g. Holm-adjusted over a table's comparisons): the sign of the mean where it is below
    /// 0.05, within noise otherwise.
    pub fn verdict_at(&self, adjusted: f64) -> Verdict {
        match (adjusted < 0.05, self.mean > 0.0) {
            (false, _) => Verdict::WithinNoise,
            (true, true) => Verdict::Yes,
            (true, false) => Verdict::No,
        }
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

/// Holm's step-down adjustment of the p-values of a family of comparisons (Holm 1979): the
/// i-th smallest of m becomes max over j <= i of min(1, (m - j + 1) p_(j)); the family-wise error
/// rate stays at the level whatever the dependence between the tests. In the order given.
pub fn holm_adjust(p_values: &[f64]) -> Vec<f64> {
    let m = p_values.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p_values[a].total_cmp(&p_values[b]));
    let mut adjusted = vec![0.0; m];
    let mut running = 0.0f64;
    for (rank, &i) in order.iter().enumerate() {
        running = running.max(((m - rank) as f64 * p_values[i]).min(1.0));
        adjusted[i] = running;
    }
    adjusted
}

/// Pairs the values of `a` and `b` by key (e.g. seed) and returns `a - b` for every key both
/// have, in key order.
pub fn paired_differences<K: Ord + Copy>(a: &[(K, f64)], b: &[(K, f64)]) -> Vec<f64> {
    let b: std::collections::BTreeMap<K, f64> = b.iter().copied().collect();
    let mut out: Vec<(K, f64)> = a.iter().filter_map(|(k, x)| b.get(k).map(|y| (*k, x - y))).collect();
    out.sort_by_key(|x| x.0);
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

    /// p-values against a hand computation, and Holm on a textbook example: p = 0.01, 0.04,
    /// 0.03, 0.005 (m = 4) become 0.03, 0.06, 0.06, 0.02.
    #[test]
    fn p_values_and_holm() {
        // differences 1, 2, 3: t = 2 / (1 / sqrt 3) = 3.4641 with 2 degrees of freedom, p = 0.07418
        let i = PairedInterval::of(&[1.0, 2.0, 3.0]).unwrap();
        assert!((i.p_value() - 0.074180).abs() < 1e-5, "{}", i.p_value());
        assert_eq!(i.verdict_at(i.p_value()), Verdict::WithinNoise);
        let constant = PairedInterval::of(&[1.0, 1.0]).unwrap();
        assert_eq!((constant.p_value(), constant.verdict_at(0.0)), (0.0, Verdict::Yes));
        assert_eq!(PairedInterval::of(&[0.0, 0.0]).unwrap().p_value(), 1.0);
        let adjusted = holm_adjust(&[0.01, 0.04, 0.03, 0.005]);
        for (a, want) in adjusted.iter().zip([0.03, 0.06, 0.06, 0.02]) {
            assert!((a - want).abs() < 1e-12, "{adjusted:?}");
        }
        assert_eq!(holm_adjust(&[0.5, 0.9]), vec![1.0, 1.0]);
        assert!(holm_adjust(&[]).is_empty());
    }

    #[test]
    fn pairs_by_key_only() {
        let a = [(2u64, 5.0), (0, 3.0), (1, 4.0)];
        let b = [(0u64, 1.0), (2, 1.0)];
        assert_eq!(paired_differences(&a, &b), vec![2.0, 4.0]);
    }
}
