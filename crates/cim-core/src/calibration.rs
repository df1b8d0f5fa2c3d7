//! ADC calibration (docs/SPEC.md section 1, "ADC calibration"): the initial step s_p and offset z
//! of every partial-sum group, from the partial sums it saw over the calibration batches.
//!
//! A group's samples are kept as sorted distinct values with counts (partial sums are integers,
//! so this is compact: a few thousand distinct values per group however many batches). With
//! prefix sums over them, the squared error of any window costs one binary search per ADC code,
//! which makes a thorough search affordable:
//! - `mse` with a learned window: the window's lowest and highest levels (m, M) start from every
//!   pair of a set of tail quantiles, and the best pair is refined by a shrinking pattern search;
//! - `mse` with a zero window: s_p over a geometric grid from "no value clipped" down by 2^10,
//!   refined the same way;
//! - `lsq`: LSQ's rule 2 * mean|p| / sqrt(max(Pp, 1)) over all samples, z = 0.
//!
//! A group whose samples are all 0 takes the values of its layer (the pooled samples of its
//! polarity and slice), never an arbitrary 1.0.

use crate::lsq::LsqRange;
use crate::settings::{AdcInit, AdcWindow};

/// Batches of training data the ADC windows are calibrated on. Four batches of 64-128 images
/// give every column group at least 16,384 partial sums even on the 8x8 maps of ResNet-20's last
/// stage, while the forward passes cost well under one training step each.
pub const CALIBRATION_BATCHES: usize = 4;

/// The partial sums one ADC group saw: sorted distinct values and how often each occurred.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupSamples {
    values: Vec<f64>,
    counts: Vec<u64>,
}

impl GroupSamples {
    /// The samples of a slice of partial sums.
    pub fn from_values(values: &[f32]) -> Self {
        Self::from_integers(values).unwrap_or_else(|| Self::by_sorting(values))
    }

    /// The samples by a sort.
    fn by_sorting(values: &[f32]) -> Self {
        let mut sorted: Vec<f32> = values.to_vec();
        sorted.sort_unstable_by(f32::total_cmp);
        let mut out = GroupSamples::default();
        for v in sorted {
            let v = f64::from(v);
            if out.values.last() == Some(&v) {
                *out.counts.last_mut().expect("a count per value") += 1;
            } else {
                out.values.push(v);
                out.counts.push(1);
            }
        }
        out
    }

    /// The same by a histogram, when every value is an integer and their span is at most a few
    /// times their number (partial sums without cell gains): O(n) instead of a sort of millions
    /// of values, with the same result. `None` otherwise.
    fn from_integers(values: &[f32]) -> Option<Self> {
        let (mut low, mut high) = (f32::INFINITY, f32::NEG_INFINITY);
        for &v in values {
            // a cast, not trunc(): a libm call per value on baseline x86-64 (no SSE4.1)
            if !v.is_finite() || (v as i64) as f32 != v {
                return None;
            }
            low = low.min(v);
            high = high.max(v);
        }
        let span = f64::from(high) - f64::from(low) + 1.0;
        if values.is_empty() || span > (4 * values.len() + 4096) as f64 {
            return None;
        }
        let mut counts = vec![0u64; span as usize];
        for &v in values {
            counts[(v - low) as usize] += 1;
        }
        let (values, counts) =
            counts.iter().enumerate().filter(|&(_, &n)| n > 0).map(|(i, &n)| ((f64::from(low) + i as f64), n)).unzip();
        Some(GroupSamples { values, counts })
    }

    /// Adds another group's samples (a merge of two sorted lists).
    pub fn merge(&mut self, other: &GroupSamples) {
        let (mut i, mut j) = (0, 0);
        let mut out = GroupSamples::default();
        while i < self.values.len() || j < other.values.len() {
            let take_self = j == other.values.len() || (i < self.values.len() && self.values[i] <= other.values[j]);
            let (v, n) = if take_self {
                i += 1;
                (self.values[i - 1], self.counts[i - 1])
            } else {
                j += 1;
                (other.values[j - 1], other.counts[j - 1])
            };
            if out.values.last() == Some(&v) {
                *out.counts.last_mut().expect("a count per value") += n;
            } else {
                out.values.push(v);
                out.counts.push(n);
            }
        }
        *self = out;
    }

    /// Number of samples.
    pub fn len(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Whether no sample was recorded.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Whether every sample is 0 (or there is none).
    pub fn all_zero(&self) -> bool {
        self.values.iter().all(|&v| v == 0.0)
    }

    /// Mean |p|.
    pub fn mean_abs(&self) -> f64 {
        let n = self.len();
        if n == 0 {
            return 0.0;
        }
        self.values.iter().zip(&self.counts).map(|(v, &c)| v.abs() * c as f64).sum::<f64>() / n as f64
    }

    /// The value below which a share `q` of the samples lies.
    fn quantile(&self, q: f64) -> f64 {
        let target = (q * self.len() as f64).floor() as u64;
        let mut seen = 0;
        for (v, &c) in self.values.iter().zip(&self.counts) {
            seen += c;
            if seen > target {
                return *v;
            }
        }
        *self.values.last().unwrap_or(&0.0)
    }
}

/// An ADC's window: `p_q = offset + step * clamp(round((p - offset) / step), low, high)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// s_p.
    pub step: f64,
    /// z.
    pub offset: f64,
}

/// Sum of squared quantization errors of a window over a group's samples, in O(codes * log n):
/// centred prefix sums of count, value and value^2 give each code's share in closed form.
struct ErrorOracle<'a> {
    samples: &'a GroupSamples,
    centre: f64,
    /// Prefix sums (length n + 1) of counts, centred values and their squares, times counts.
    n: Vec<f64>,
    s1: Vec<f64>,
    s2: Vec<f64>,
}

impl<'a> ErrorOracle<'a> {
    fn new(samples: &'a GroupSamples) -> Self {
        let centre = samples.quantile(0.5);
        let len = samples.values.len();
        let (mut n, mut s1, mut s2) = (vec![0.0; len + 1], vec![0.0; len + 1], vec![0.0; len + 1]);
        for (i, (v, &c)) in samples.values.iter().zip(&samples.counts).enumerate() {
            let (x, c) = (v - centre, c as f64);
            n[i + 1] = n[i] + c;
            s1[i + 1] = s1[i] + c * x;
            s2[i + 1] = s2[i] + c * x * x;
        }
        Self { samples, centre, n, s1, s2 }
    }

    /// Index of the first sample >= x.
    fn first_at_least(&self, x: f64) -> usize {
        self.samples.values.partition_point(|&v| v < x)
    }

    fn error(&self, w: Window, range: LsqRange) -> f64 {
        let (low, high) = (range.low as i64, range.high as i64);
        let mut total = 0.0;
        let mut start = 0;
        for code in low..=high {
            let end = if code == high {
                self.samples.values.len()
            } else {
                self.first_at_least(w.offset + w.step * (code as f64 + 0.5)).max(start)
            };
            if end > start {
                let level = w.offset + w.step * code as f64 - self.centre;
                let (n, s1, s2) =
                    (self.n[end] - self.n[start], self.s1[end] - self.s1[start], self.s2[end] - self.s2[start]);
                total += s2 - 2.0 * level * s1 + level * level * n;
            }
            start = end;
        }
        total.max(0.0)
    }
}

/// The window of a group whose samples are all one value `v`: exact for a learned window; for a
/// zero window, the step that puts v on the code nearest to it (any step when v is clipped).
fn constant_window(v: f64, range: LsqRange, window: AdcWindow) -> Window {
    let (low, high) = (f64::from(range.low), f64::from(range.high));
    match window {
        AdcWindow::Learned => Window { step: (v.abs() / (high - low).max(1.0)).max(1.0), offset: v },
        AdcWindow::Zero => {
            let step = if v > 0.0 && high > 0.0 {
                v / high
            } else if v < 0.0 && low < 0.0 {
                v / low
            } else {
                1.0
            };
            Window { step, offset: 0.0 }
        }
    }
}

/// Shrinking pattern search from `start` over the parameters `x`, keeping the best of the
/// moves ±step along each axis until the step falls below `tolerance`.
fn pattern_search<const D: usize>(
    mut x: [f64; D],
    mut step: f64,
    tolerance: f64,
    f: impl Fn(&[f64; D]) -> f64,
) -> [f64; D] {
    let mut best = f(&x);
    while step > tolerance {
        let mut improved = false;
        for axis in 0..D {
            for sign in [-1.0, 1.0] {
                let mut y = x;
                y[axis] += sign * step;
                let e = f(&y);
                if e < best {
                    (best, x, improved) = (e, y, true);
                }
            }
        }
        if !improved {
            step /= 2.0;
        }
    }
    x
}

/// LSQ's window: 2 * mean|p| / sqrt(max(Pp, 1)), z = 0 (for samples that are not all 0).
fn lsq_window(samples: &GroupSamples, range: LsqRange) -> Window {
    Window { step: f64::from(range.init_step(samples.mean_abs())), offset: 0.0 }
}

/// The MSE-optimal window of one group (see the module docs).
pub fn mse_window(samples: &GroupSamples, range: LsqRange, window: AdcWindow) -> Window {
    let (lo_v, hi_v) = (samples.values[0], *samples.values.last().expect("samples"));
    if lo_v == hi_v {
        return constant_window(lo_v, range, window);
    }
    let oracle = ErrorOracle::new(samples);
    let (low, high) = (f64::from(range.low), f64::from(range.high));
    let levels = (high - low).max(1.0);
    match window {
        AdcWindow::Learned => {
            // parametrize by the lowest and highest level (m, M); step = (M - m) / levels
            let to_window = |m: f64, big_m: f64| {
                let step = ((big_m - m) / levels).max(f64::MIN_POSITIVE);
                Window { step, offset: m - step * low }
            };
            let tails = [0.0, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4];
            let lows: Vec<f64> = tails.iter().map(|&a| samples.quantile(a)).collect();
            let highs: Vec<f64> = tails.iter().map(|&b| samples.quantile(1.0 - b)).collect();
            let mut best = (f64::INFINITY, lo_v, hi_v);
            for &m in &lows {
                for &high_q in &highs {
                    let big_m = high_q.max(m);
                    let big_m = if big_m > m { big_m } else { m + (hi_v - lo_v) / levels };
                    let e = oracle.error(to_window(m, big_m), range);
                    if e < best.0 {
                        best = (e, m, big_m);
                    }
                }
            }
            // LSQ's window and the best zero-anchored one compete too: the result is never worse
            for w in [lsq_window(samples, range), mse_window(samples, range, AdcWindow::Zero)] {
                let e = oracle.error(w, range);
                if e < best.0 {
                    best = (e, w.offset + w.step * low, w.offset + w.step * high);
                }
            }
            let (_, m, big_m) = best;
            let [m, big_m] = pattern_search([m, big_m], (big_m - m) / 8.0, (big_m - m) * 1e-4, |x| {
                if x[1] <= x[0] { f64::INFINITY } else { oracle.error(to_window(x[0], x[1]), range) }
            });
            to_window(m, big_m)
        }
        AdcWindow::Zero => {
            // the largest useful step: every sample inside the range
            let mut cover: f64 = 0.0;
            if high > 0.0 {
                cover = cover.max(hi_v / high);
            }
            if low < 0.0 {
                cover = cover.max(lo_v / low);
            }
            if cover <= 0.0 {
                // every sample lies where this ADC clips to 0: any step gives the same error
                return Window { step: 1.0, offset: 0.0 };
            }
            let at = |s: f64| oracle.error(Window { step: s, offset: 0.0 }, range);
            let mut best = (f64::INFINITY, cover);
            let grid = (0..=80).map(|t| cover * (-f64::from(t) / 8.0).exp2());
            for s in grid.chain([lsq_window(samples, range).step]) {
                let e = at(s);
                if e < best.0 {
                    best = (e, s);
                }
            }
            // refine in log2(step)
            let [log_s] = pattern_search([best.1.log2()], 1.0 / 16.0, 1e-4, |x| at(x[0].exp2()));
            Window { step: log_s.exp2(), offset: 0.0 }
        }
    }
}

/// The initial window of every built-in ADC group by `init` (see the module docs).
pub fn uniform_window(samples: &GroupSamples, range: LsqRange, init: AdcInit, window: AdcWindow) -> Window {
    match init {
        AdcInit::Lsq => lsq_window(samples, range),
        AdcInit::Mse => mse_window(samples, range, window),
    }
}

/// The window with the least squared error `sum (p - z - s * code((p - z) / s))^2` over a
/// group's samples, for any code function (a plug-in's levels, which [`mse_window`]'s closed
/// form does not know): offsets at quantiles of the samples (z = 0 for a zero window) times a
/// geometric grid of steps, then a pattern search in (z, log2 s).
///
/// # Panics
/// If `samples` holds no value: a group is calibrated on the partial sums its arrays produced,
/// of which every calibration batch gives at least one.
pub fn search_window(samples: &GroupSamples, window: AdcWindow, code: impl Fn(f32) -> f32) -> Window {
    let (lo_v, hi_v) = (samples.values[0], *samples.values.last().expect("samples"));
    let scale = (hi_v - lo_v).max(samples.quantile(0.5).abs()).max(1.0);
    let error = |w: Window| -> f64 {
        samples
            .values
            .iter()
            .zip(&samples.counts)
            .map(|(&v, &c)| {
                let ratio = ((v - w.offset) / w.step) as f32;
                let q = w.offset + w.step * f64::from(code(ratio));
                c as f64 * (v - q) * (v - q)
            })
            .sum()
    };
    let offsets: Vec<f64> = match window {
        AdcWindow::Learned => [0.1, 0.25, 0.5, 0.75, 0.9].iter().map(|&a| samples.quantile(a)).collect(),
        AdcWindow::Zero => vec![0.0],
    };
    let mut best = (f64::INFINITY, Window { step: scale, offset: 0.0 });
    for &offset in &offsets {
        for t in 0..=20 {
            let w = Window { step: scale * (-f64::from(t) / 2.0).exp2(), offset };
            let e = error(w);
            if e < best.0 {
                best = (e, w);
            }
        }
    }
    let start = best.1;
    // x = (z / scale, log2 s): both move in steps of order 1
    let at = |x: &[f64; 2]| Window { step: x[1].exp2(), offset: x[0] * scale };
    let x0 = [start.offset / scale, start.step.log2()];
    match window {
        AdcWindow::Learned => at(&pattern_search(x0, 0.25, 1e-3, |x| error(at(x)))),
        AdcWindow::Zero => {
            let [log_s] = pattern_search([x0[1]], 0.25, 1e-3, |x| error(at(&[0.0, x[0]])));
            at(&[0.0, log_s])
        }
    }
}

/// The initial window of every group: `own(samples[i], ranges[i])`; `layer_of[i]` names the
/// groups (same polarity and slice) whose pooled samples give the window of a group whose own
/// samples are all 0.
pub fn calibrate(
    samples: &[GroupSamples],
    ranges: &[LsqRange],
    layer_of: &[usize],
    own: impl Fn(&GroupSamples, LsqRange) -> Window + Sync,
) -> Vec<Window> {
    let own = |s: &GroupSamples, range: LsqRange| -> Option<Window> { (!s.all_zero()).then(|| own(s, range)) };
    let windows: Vec<Option<Window>> = {
        use rayon::prelude::*;
        samples.par_iter().zip(ranges.par_iter()).map(|(s, &r)| own(s, r)).collect()
    };
    let mut layer_windows: Vec<Option<Option<Window>>> = vec![None; samples.len()];
    windows
        .iter()
        .enumerate()
        .map(|(i, w)| {
            w.unwrap_or_else(|| {
                let key = layer_of[i];
                let layer = *layer_windows[key].get_or_insert_with(|| {
                    let mut pooled = GroupSamples::default();
                    for (s, _) in samples.iter().zip(layer_of).filter(|&(_, &k)| k == key) {
                        pooled.merge(s);
                    }
                    own(&pooled, ranges[i])
                });
                // a layer whose partial sums were all 0 too: nothing to calibrate on
                layer.unwrap_or(Window { step: 1.0, offset: 0.0 })
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute_error(values: &[f32], w: Window, range: LsqRange) -> f64 {
        values
            .iter()
            .map(|&v| {
                let v = f64::from(v);
                let code = ((v - w.offset) / w.step).clamp(f64::from(range.low), f64::from(range.high)).round();
                (v - (w.offset + w.step * code)).powi(2)
            })
            .sum()
    }

    fn offset_data() -> Vec<f32> {
        // differential-like partial sums: a large common offset with a spread around it
        (0..4000).map(|i| 300.0 + ((i * 37 % 101) as f32 - 50.0) + if i % 97 == 0 { 200.0 } else { 0.0 }).collect()
    }

    #[test]
    fn the_histogram_gives_what_the_sort_gives() {
        let ints: Vec<f32> = (0..5000).map(|i| ((i * 7919) % 301) as f32 - 150.0).collect();
        let by_histogram = GroupSamples::from_integers(&ints).expect("integers in a small span");
        assert_eq!(by_histogram, GroupSamples::by_sorting(&ints));
        assert_eq!(by_histogram.len(), 5000);
        assert!(GroupSamples::from_integers(&[0.5, 1.0]).is_none(), "not integers");
        assert!(GroupSamples::from_integers(&[0.0, 1e9]).is_none(), "span far beyond the count");
        assert!(GroupSamples::from_integers(&[f32::NAN]).is_none());
        assert_eq!(GroupSamples::from_values(&[2.5, -1.0, 2.5]), GroupSamples::by_sorting(&[2.5, -1.0, 2.5]));
    }

    #[test]
    fn samples_merge_and_count() {
        let mut a = GroupSamples::from_values(&[3.0, 1.0, 3.0, 0.0]);
        a.merge(&GroupSamples::from_values(&[2.0, 3.0]));
        assert_eq!(a.values, vec![0.0, 1.0, 2.0, 3.0]);
        assert_eq!(a.counts, vec![1, 1, 1, 3]);
        assert_eq!(a.len(), 6);
        assert!((a.mean_abs() - 12.0 / 6.0).abs() < 1e-12);
        assert!(GroupSamples::from_values(&[0.0, 0.0]).all_zero());
    }

    #[test]
    fn oracle_matches_brute_force() {
        let data = offset_data();
        let s = GroupSamples::from_values(&data);
        let oracle = ErrorOracle::new(&s);
        for (range, w) in [
            (LsqRange::unsigned(3), Window { step: 17.3, offset: 241.2 }),
            (LsqRange::unsigned(2), Window { step: 40.0, offset: 0.0 }),
            (LsqRange::signed(3), Window { step: 9.1, offset: 300.5 }),
        ] {
            let (a, b) = (oracle.error(w, range), brute_error(&data, w, range));
            assert!((a - b).abs() <= 1e-6 * b.max(1.0), "{a} vs {b}");
        }
    }

    #[test]
    fn learned_window_beats_zero_window_and_lsq_on_offset_data() {
        let data = offset_data();
        let s = GroupSamples::from_values(&data);
        let range = LsqRange::unsigned(3);
        let learned = mse_window(&s, range, AdcWindow::Learned);
        let zero = mse_window(&s, range, AdcWindow::Zero);
        let lsq = lsq_window(&s, range);
        let (el, ez, eq) =
            (brute_error(&data, learned, range), brute_error(&data, zero, range), brute_error(&data, lsq, range));
        assert!(el < ez && ez <= eq, "learned {el}, zero {ez}, lsq {eq}");
        // the learned window sits on the spread around the offset, not on [0, max]
        assert!(learned.offset > 150.0, "{learned:?}");
        // no window on a grid around the found one does better than 0.1 %
        for dm in [-2.0, -0.5, 0.5, 2.0] {
            for ds in [0.95, 1.05] {
                let w = Window { step: learned.step * ds, offset: learned.offset + dm };
                assert!(brute_error(&data, w, range) >= el * 0.999, "{w:?} beats {learned:?}");
            }
        }
        // a zero window can still not beat its own neighbours
        for f in [0.9, 1.1] {
            let w = Window { step: zero.step * f, offset: 0.0 };
            assert!(brute_error(&data, w, range) >= ez * 0.999);
        }
    }

    #[test]
    fn constant_and_zero_groups() {
        let range = LsqRange::unsigned(2);
        let c = GroupSamples::from_values(&[12.0; 10]);
        for window in AdcWindow::ALL {
            let w = mse_window(&c, range, window);
            assert_eq!(brute_error(&[12.0; 10], w, range), 0.0, "{window}: {w:?}");
        }
        // group 1 is all zero: it takes the window of its layer (groups 0 and 1 pooled)
        let samples = vec![GroupSamples::from_values(&offset_data()), GroupSamples::from_values(&[0.0; 50])];
        let ranges = [range, range];
        for init in AdcInit::ALL {
            let w = calibrate(&samples, &ranges, &[0, 0], |s, r| uniform_window(s, r, init, AdcWindow::Learned));
            let mut pooled = samples[0].clone();
            pooled.merge(&samples[1]);
            let layer = calibrate(&[pooled], &[range], &[0], |s, r| uniform_window(s, r, init, AdcWindow::Learned))[0];
            assert_eq!(w[1], layer, "{init}");
            assert_ne!(w[1].step, 1.0);
        }
        // a layer of zeros only: step 1, offset 0
        let zeros = vec![GroupSamples::from_values(&[0.0; 5])];
        assert_eq!(
            calibrate(&zeros, &[range], &[0], |s, r| uniform_window(s, r, AdcInit::Mse, AdcWindow::Learned))[0],
            Window { step: 1.0, offset: 0.0 }
        );
    }

    /// The generic search finds, for the uniform code, a window nearly as good as the closed-form
    /// MSE search, and for a ternary code a better one than a window sized for more levels.
    #[test]
    fn generic_search_approaches_the_closed_form() {
        let data = offset_data();
        let samples = GroupSamples::from_values(&data);
        let range = LsqRange::unsigned(2);
        for window in AdcWindow::ALL {
            let exact = mse_window(&samples, range, window);
            let searched = search_window(&samples, window, |r| r.clamp(range.low, range.high).round_ties_even());
            let (e, s) = (brute_error(&data, exact, range), brute_error(&data, searched, range));
            assert!(s <= e * 1.05 + 1e-9, "{window}: searched {searched:?} error {s} vs closed form {exact:?} {e}");
            if window == AdcWindow::Zero {
                assert_eq!(searched.offset, 0.0);
            }
        }
        let ternary = LsqRange::new(-1.0, 1.0);
        let searched = search_window(&samples, AdcWindow::Learned, |r| r.clamp(-1.0, 1.0).round_ties_even());
        let sized_for_four = mse_window(&samples, range, AdcWindow::Learned);
        assert!(brute_error(&data, searched, ternary) < brute_error(&data, sized_for_four, ternary));
    }
}
