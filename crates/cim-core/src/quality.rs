//! How well a layer's ADCs and cells use their levels: the statistics `cargo xtask inspect`
//! prints for every (polarity, slice) of a CIM layer.
//!
//! - ADC SQNR in dB: signal p, noise p - p_q, over every partial sum of the slice; and the same
//!   with the signal taken around each column's mean (the spread an ADC must resolve: partial
//!   sums share a large common offset, which the plain SQNR counts as signal);
//! - the share of partial sums clipped below the lowest and above the highest code;
//! - the codes used: the entropy of the code histogram in bits (at most P);
//! - for the weights, the share of cells holding each digit level.

use serde::Serialize;

/// ADC statistics of one (polarity, slice) of a layer, accumulated over batches.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SliceQuality {
    /// 0 (w+ or the only set of arrays) or 1 (w-).
    pub polarity: usize,
    /// Bit slice s (0 = most significant).
    pub slice: usize,
    /// The lowest ADC code (index 0 of `code_counts`).
    pub low_code: i64,
    /// Partial sums seen.
    pub samples: u64,
    /// Sum of p^2.
    pub signal: f64,
    /// Sum of (p - mean of its column over the batch)^2.
    pub spread: f64,
    /// Sum of (p - p_q)^2.
    pub noise: f64,
    /// Partial sums below the window ((p - z) / s_p < Pn).
    pub clipped_low: u64,
    /// Partial sums above the window ((p - z) / s_p > Pp).
    pub clipped_high: u64,
    /// How often each code (from `low_code` up) was produced.
    pub code_counts: Vec<u64>,
}

impl SliceQuality {
    /// Empty statistics for an ADC range [low, high].
    pub fn new(polarity: usize, slice: usize, low: i64, high: i64) -> Self {
        Self {
            polarity,
            slice,
            low_code: low,
            samples: 0,
            signal: 0.0,
            spread: 0.0,
            noise: 0.0,
            clipped_low: 0,
            clipped_high: 0,
            code_counts: vec![0; (high - low + 1) as usize],
        }
    }

    /// 10 log10(sum p^2 / sum (p - p_q)^2); infinite when the ADC was exact.
    pub fn sqnr_db(&self) -> f64 {
        10.0 * (self.signal / self.noise).log10()
    }

    /// 10 log10(sum (p - column mean)^2 / sum (p - p_q)^2): the SQNR of the spread around each
    /// column's offset.
    pub fn spread_sqnr_db(&self) -> f64 {
        10.0 * (self.spread / self.noise).log10()
    }

    /// Share of partial sums clipped low.
    pub fn clipped_low_share(&self) -> f64 {
        self.clipped_low as f64 / self.samples.max(1) as f64
    }

    /// Share of partial sums clipped high.
    pub fn clipped_high_share(&self) -> f64 {
        self.clipped_high as f64 / self.samples.max(1) as f64
    }

    /// Entropy of the codes produced, in bits.
    pub fn code_entropy_bits(&self) -> f64 {
        entropy_bits(&self.code_counts)
    }

    /// Codes produced at least once.
    pub fn codes_used(&self) -> usize {
        self.code_counts.iter().filter(|&&c| c > 0).count()
    }

    /// Adds another batch's statistics of the same ADCs.
    pub fn add(&mut self, other: &SliceQuality) {
        self.samples += other.samples;
        self.signal += other.signal;
        self.spread += other.spread;
        self.noise += other.noise;
        self.clipped_low += other.clipped_low;
        self.clipped_high += other.clipped_high;
        for (a, b) in self.code_counts.iter_mut().zip(&other.code_counts) {
            *a += b;
        }
    }
}

/// Entropy in bits of a histogram.
pub fn entropy_bits(counts: &[u64]) -> f64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0.0;
    }
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / total as f64;
            -p * p.log2()
        })
        .sum()
}

/// One ADC channel's window as the statistics need it.
#[derive(Debug, Clone, Copy)]
pub struct ChannelWindow {
    /// Index of the channel's (polarity, slice) in the statistics.
    pub slice_index: usize,
    /// s_p.
    pub step: f32,
    /// z.
    pub offset: f32,
    /// Pn.
    pub low: f32,
    /// Pp.
    pub high: f32,
}

/// The code of the built-in uniform ADC: `clamp(round(r), Pn, Pp)`, as the fused pass computes it.
pub fn uniform_code(ratio: f32, w: &ChannelWindow) -> f32 {
    ratio.clamp(w.low, w.high).round_ties_even()
}

/// Adds the partial sums `p` [K, n] of a batch (channel k quantized by `windows[k]`, its ratio
/// (p - z) / s_p turned into a code by `code`) to the per-(polarity, slice) statistics, with the
/// same arithmetic as the ADC pass.
pub fn accumulate(
    stats: &mut [SliceQuality],
    p: &[f32],
    windows: &[ChannelWindow],
    code: impl Fn(f32, &ChannelWindow) -> f32,
) {
    let n = p.len() / windows.len().max(1);
    for (row, w) in p.chunks_exact(n).zip(windows) {
        let st = &mut stats[w.slice_index];
        let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
        for &v in row {
            let ratio = (v - w.offset) / w.step;
            let code = code(ratio, w);
            let quantized = f64::from(w.offset) + f64::from(w.step) * f64::from(code);
            let exact = f64::from(v);
            st.signal += exact * exact;
            st.spread += (exact - mean) * (exact - mean);
            st.noise += (exact - quantized) * (exact - quantized);
            st.clipped_low += u64::from(ratio < w.low);
            st.clipped_high += u64::from(ratio > w.high);
            st.code_counts[(code as i64 - st.low_code) as usize] += 1;
        }
        st.samples += n as u64;
    }
}

/// The share of cells holding each digit level, for one (polarity, slice).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DigitShares {
    /// 0 or 1 (w-).
    pub polarity: usize,
    /// Bit slice s.
    pub slice: usize,
    /// The lowest digit level (index 0 of `shares`).
    pub low_level: i64,
    /// Share of the layer's programmed cells at each level.
    pub shares: Vec<f64>,
}

impl DigitShares {
    /// Entropy of the digit levels in bits (at most b_c).
    pub fn entropy_bits(&self) -> f64 {
        let counts: Vec<u64> = self.shares.iter().map(|s| (s * 1e12).round() as u64).collect();
        entropy_bits(&counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_of_a_known_batch() {
        let mut stats = vec![SliceQuality::new(0, 0, 0, 3)];
        let w = ChannelWindow { slice_index: 0, step: 2.0, offset: 10.0, low: 0.0, high: 3.0 };
        // codes: 4 -> clipped low (0), 10 -> 0, 13 -> 1.5 -> 2 (ties to even), 15 -> 2.5 -> 2, 30 -> high (3)
        accumulate(&mut stats, &[4.0, 10.0, 13.0, 15.0, 30.0], &[w], uniform_code);
        let s = &stats[0];
        assert_eq!(s.samples, 5);
        assert_eq!((s.clipped_low, s.clipped_high), (1, 1));
        assert_eq!(s.code_counts, vec![2, 0, 2, 1]);
        assert_eq!(s.codes_used(), 3);
        let noise = 36.0 + 0.0 + 1.0 + 1.0 + 196.0;
        assert!((s.noise - noise).abs() < 1e-9);
        let signal: f64 = [4.0f64, 10.0, 13.0, 15.0, 30.0].iter().map(|v| v * v).sum();
        assert!((s.sqnr_db() - 10.0 * (signal / noise).log10()).abs() < 1e-9);
        let spread: f64 = [4.0f64, 10.0, 13.0, 15.0, 30.0].iter().map(|v| (v - 14.4) * (v - 14.4)).sum();
        assert!((s.spread_sqnr_db() - 10.0 * (spread / noise).log10()).abs() < 1e-9);
        assert!((entropy_bits(&[2, 0, 2, 1]) - 1.5219280948873621).abs() < 1e-12);
        assert_eq!(entropy_bits(&[0, 7]), 0.0);
    }
}
