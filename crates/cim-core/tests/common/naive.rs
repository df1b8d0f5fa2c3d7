//! The naive simulator: docs/SPEC.md section 1 array by array, with plain loops and integers.
#![allow(dead_code)]
// indices written out as the specification writes them, not iterators
#![allow(clippy::needless_range_loop)]

use cim_core::{CimConvConfig, Encoding, Granularity, LsqRange, OwnQuantizers, PsumQuantizer, WeightQuantizer};

use super::Dense;

/// The naive simulator: one array at a time.
pub struct Naive {
    pub cfg: CimConvConfig,
    pub n_c: usize,
    pub g_tiles: usize,
    pub t_tiles: usize,
    pub slices: usize,
    pub pols: usize,
    /// A plug-in ADC in place of the uniform one of `psum_bits` (its granularity is
    /// `cfg.psum_granularity`).
    pub plugin: Option<&'static dyn PsumQuantizer>,
    /// A plug-in weight quantizer in place of LSQ (its granularity is `cfg.weight_granularity`).
    pub weight_plugin: Option<&'static dyn WeightQuantizer>,
}

fn signed_range(bits: u32) -> (i64, i64) {
    (-(1i64 << (bits - 1)), (1i64 << (bits - 1)) - 1)
}

impl Naive {
    pub fn new(cfg: &CimConvConfig) -> Self {
        let k2 = cfg.kernel_size * cfg.kernel_size;
        let n_c = cfg.in_channels.min(cfg.array_size / k2);
        Self {
            cfg: cfg.clone(),
            n_c,
            g_tiles: cfg.in_channels.div_ceil(n_c),
            t_tiles: cfg.out_channels.div_ceil(cfg.array_size),
            slices: (cfg.weight_bits / cfg.cell_bits) as usize,
            pols: if cfg.encoding == Encoding::Twos { 1 } else { 2 },
            plugin: None,
            weight_plugin: None,
        }
    }

    /// The simulator of a layer with these quantizers of its own (grouped by their
    /// granularities).
    pub fn with_own(cfg: &CimConvConfig, own: OwnQuantizers) -> Self {
        let mut cfg = cfg.clone();
        if let Some(q) = own.psum {
            cfg = cfg.with_psum_granularity(q.granularity());
        }
        if let Some(q) = own.weight {
            cfg = cfg.with_weight_granularity(q.granularity());
        }
        Self { plugin: own.psum, weight_plugin: own.weight, ..Self::new(&cfg) }
    }

    /// The weight code of w with step s (f32 arithmetic, as the layer's).
    fn weight_code(&self, w: f32, step: f32) -> i64 {
        let (qn, qp) = self.q_range();
        match self.weight_plugin {
            Some(q) => q.code(w / step, LsqRange::new(qn as f32, qp as f32)) as i64,
            None => (w / step).clamp(qn as f32, qp as f32).round_ties_even() as i64,
        }
    }

    fn key(&self, gran: Granularity, g: usize, c: usize) -> usize {
        match gran {
            Granularity::Layer => 0,
            Granularity::Array => g * self.t_tiles + c / self.cfg.array_size,
            Granularity::Column => g * self.cfg.out_channels + c,
        }
    }

    fn keys(&self, gran: Granularity) -> usize {
        match gran {
            Granularity::Layer => 1,
            Granularity::Array => self.g_tiles * self.t_tiles,
            Granularity::Column => self.g_tiles * self.cfg.out_channels,
        }
    }

    /// Weight code range (Qn, Qp).
    pub fn q_range(&self) -> (i64, i64) {
        match self.cfg.encoding {
            Encoding::Twos => signed_range(self.cfg.weight_bits),
            Encoding::Differential => {
                let top = (1i64 << self.cfg.weight_bits) - 1;
                (-top, top)
            }
        }
    }

    /// ADC code range of slice s.
    pub fn p_range(&self, s: usize) -> (i64, i64) {
        if let Some(q) = self.plugin {
            return (q.codes().low as i64, q.codes().high as i64);
        }
        let p = self.cfg.psum_bits.unwrap();
        if self.cfg.encoding == Encoding::Twos && s == 0 { signed_range(p) } else { (0, (1i64 << p) - 1) }
    }

    /// LSQ init of the weight steps, in f64.
    pub fn weight_steps_init(&self, weight: &[f64]) -> Vec<f64> {
        let k2 = self.cfg.kernel_size * self.cfg.kernel_size;
        let gran = self.cfg.weight_granularity;
        let mut sum = vec![0f64; self.keys(gran)];
        let mut n = vec![0usize; self.keys(gran)];
        for c in 0..self.cfg.out_channels {
            for ch in 0..self.cfg.in_channels {
                for i in 0..k2 {
                    let key = self.key(gran, ch / self.n_c, c);
                    sum[key] += weight[(c * self.cfg.in_channels + ch) * k2 + i].abs();
                    n[key] += 1;
                }
            }
        }
        let (qn, qp) = self.q_range();
        sum.iter()
            .zip(&n)
            .map(|(s, &n)| match self.weight_plugin {
                Some(q) => f64::from(q.init_step(s / n as f64, LsqRange::new(qn as f32, qp as f32))),
                None if *s == 0.0 => 1.0,
                None => 2.0 * s / n as f64 / (qp.max(1) as f64).sqrt(),
            })
            .collect()
    }

    /// Digits [pol][slice] of code q, built from scratch (no library code).
    fn digits(&self, q: i64) -> Vec<Vec<i64>> {
        let bc = self.cfg.cell_bits;
        let base = 1i64 << bc;
        let write = |u: i64| -> Vec<i64> {
            (0..self.slices).map(|s| (u >> (bc as usize * (self.slices - 1 - s))) & (base - 1)).collect()
        };
        match self.cfg.encoding {
            Encoding::Twos => {
                let mut d = write(q + (1i64 << (self.cfg.weight_bits - 1)));
                d[0] -= base / 2;
                vec![d]
            }
            Encoding::Differential => vec![write(q.max(0)), write((-q).max(0))],
        }
    }

    fn act_code(&self, x: f64) -> i64 {
        let levels = ((1u64 << self.cfg.act_bits) - 1) as f32;
        ((x as f32).clamp(0.0, 1.0) * levels).round_ties_even() as i64
    }

    pub fn out_size(&self, size: usize) -> usize {
        (size + 2 * self.cfg.padding - self.cfg.kernel_size) / self.cfg.stride + 1
    }

    /// Integer partial sums [pol, S, G, B, C_out, H', W'], walking every array. Weight codes use
    /// f32 arithmetic with the given steps, as the layer does.
    pub fn psums(&self, input: &Dense, weight: &[f64], weight_steps: &[f32]) -> Psums {
        let cfg = &self.cfg;
        let [b_n, c_in, h, w] = [input.shape[0], input.shape[1], input.shape[2], input.shape[3]];
        let (ho, wo) = (self.out_size(h), self.out_size(w));
        let k = cfg.kernel_size;
        let mut out = vec![0i64; self.pols * self.slices * self.g_tiles * b_n * cfg.out_channels * ho * wo];
        for g in 0..self.g_tiles {
            let channels = g * self.n_c..((g + 1) * self.n_c).min(c_in);
            for t in 0..self.t_tiles {
                let columns = t * cfg.array_size..((t + 1) * cfg.array_size).min(cfg.out_channels);
                // program the arrays of (g, t): cells[pol][s][row][col]
                let rows: Vec<(usize, usize, usize)> = channels
                    .clone()
                    .flat_map(|ch| (0..k).flat_map(move |kh| (0..k).map(move |kw| (ch, kh, kw))))
                    .collect();
                assert!(rows.len() <= cfg.array_size);
                let mut cells = vec![vec![vec![vec![0i64; columns.len()]; rows.len()]; self.slices]; self.pols];
                for (ci, c) in columns.clone().enumerate() {
                    let step = weight_steps[self.key(cfg.weight_granularity, g, c)];
                    for (ri, &(ch, kh, kw)) in rows.iter().enumerate() {
                        let wv = weight[((c * c_in + ch) * k + kh) * k + kw] as f32;
                        let q = self.weight_code(wv, step);
                        for (pol, d) in self.digits(q).iter().enumerate() {
                            for s in 0..self.slices {
                                cells[pol][s][ri][ci] = d[s];
                            }
                        }
                    }
                }
                // drive the word lines at every output position and read every bit line
                for b in 0..b_n {
                    for oy in 0..ho {
                        for ox in 0..wo {
                            let drive: Vec<i64> = rows
                                .iter()
                                .map(|&(ch, kh, kw)| {
                                    let y = (oy * cfg.stride + kh) as isize - cfg.padding as isize;
                                    let x = (ox * cfg.stride + kw) as isize - cfg.padding as isize;
                                    if y < 0 || x < 0 || y >= h as isize || x >= w as isize {
                                        0
                                    } else {
                                        self.act_code(input.data[((b * c_in + ch) * h + y as usize) * w + x as usize])
                                    }
                                })
                                .collect();
                            for pol in 0..self.pols {
                                for s in 0..self.slices {
                                    for (ci, c) in columns.clone().enumerate() {
                                        let p: i64 = (0..rows.len()).map(|ri| drive[ri] * cells[pol][s][ri][ci]).sum();
                                        let idx = (((((pol * self.slices + s) * self.g_tiles + g) * b_n + b)
                                            * cfg.out_channels
                                            + c)
                                            * ho
                                            + oy)
                                            * wo
                                            + ox;
                                        out[idx] = p;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        Psums {
            data: out,
            pols: self.pols,
            slices: self.slices,
            g_tiles: self.g_tiles,
            b: b_n,
            c: cfg.out_channels,
            ho,
            wo,
        }
    }

    /// The flat ADC group of (pol, s, g, c): [pol, S, keys].
    pub fn psum_key(&self, pol: usize, s: usize, g: usize, c: usize) -> usize {
        let gran = self.cfg.psum_granularity;
        (pol * self.slices + s) * self.keys(gran) + self.key(gran, g, c)
    }

    /// Number of ADC groups.
    pub fn psum_groups(&self) -> usize {
        self.pols * self.slices * self.keys(self.cfg.psum_granularity)
    }

    /// Sum of |p| and count of every ADC group.
    fn psum_abs_sums(&self, p: &Psums) -> (Vec<f64>, Vec<usize>) {
        let mut sum = vec![0f64; self.psum_groups()];
        let mut n = vec![0usize; sum.len()];
        p.for_each(|pol, s, g, _b, c, _pos, v| {
            let i = self.psum_key(pol, s, g, c);
            sum[i] += v.abs() as f64;
            n[i] += 1;
        });
        (sum, n)
    }

    /// Whether every partial sum of a group is 0.
    pub fn zero_groups(&self, p: &Psums) -> Vec<bool> {
        self.psum_abs_sums(p).0.iter().map(|&s| s == 0.0).collect()
    }

    /// LSQ init of the ADC steps from integer partial sums, in f64: [pol, S, keys]. A group whose
    /// partial sums are all 0 takes its layer's step: the LSQ rule over every partial sum of its
    /// polarity and slice (1.0 only if those are all 0 too).
    pub fn psum_steps_init(&self, p: &Psums) -> Vec<f64> {
        let (sum, n) = self.psum_abs_sums(p);
        let keys = self.keys(self.cfg.psum_granularity);
        let lsq = |s: usize, total: f64, count: usize| {
            let pp = self.p_range(s).1.max(1) as f64;
            let mean = total / count as f64;
            if mean == 0.0 { None } else { Some(2.0 * mean / pp.sqrt()) }
        };
        (0..sum.len())
            .map(|i| {
                let s = i / keys % self.slices;
                lsq(s, sum[i], n[i]).unwrap_or_else(|| {
                    let layer = i / keys * keys..(i / keys + 1) * keys;
                    let (total, count) = (sum[layer.clone()].iter().sum(), n[layer].iter().sum());
                    lsq(s, total, count).unwrap_or(1.0)
                })
            })
            .collect()
    }

    /// sign * 2^(b_c*(S-1-s)) * s_w / (2^A - 1) for column c of row tile g.
    fn coef(&self, pol: usize, s: usize, g: usize, c: usize, weight_steps: &[f32]) -> f64 {
        let sign = if pol == 0 { 1.0 } else { -1.0 };
        let place = (1u64 << (self.cfg.cell_bits as usize * (self.slices - 1 - s))) as f64;
        let levels = ((1u64 << self.cfg.act_bits) - 1) as f64;
        sign * place * weight_steps[self.key(self.cfg.weight_granularity, g, c)] as f64 / levels
    }

    /// The ADC of (pol, s, g, c) applied to v: (code, whether (v - z)/s lay inside the range,
    /// the ratio), with (v - z) / s in f32 as the layer computes it.
    fn adc(&self, pol: usize, s: usize, g: usize, c: usize, v: i64, windows: &Windows) -> (f64, bool, f64) {
        let i = self.psum_key(pol, s, g, c);
        let (step, z) = (windows.steps[i], windows.offsets[i]);
        let (lo, hi) = self.p_range(s);
        let ratio = (v as f32 - z) / step;
        let code = match self.plugin {
            Some(q) => q.code(ratio) as f64,
            None => ratio.clamp(lo as f32, hi as f32).round_ties_even() as f64,
        };
        (code, ratio >= lo as f32 && ratio <= hi as f32, ratio as f64)
    }

    /// ADC, dequantization and accumulation: y [B, C_out, H', W'] in f64. `windows: None` is an
    /// ideal ADC; otherwise `p_q = z + s_p * clamp(round((p - z) / s_p), Pn, Pp)`.
    pub fn output(&self, p: &Psums, weight_steps: &[f32], windows: Option<&Windows>) -> Vec<f64> {
        self.accumulate_terms(p, weight_steps, windows, |coef, z, stepped| coef * (z + stepped))
    }

    /// Sum of |coef * z| + |coef * s_p * code| per output: the size of the terms an output is
    /// accumulated from, the scale of f32 rounding error (a window's large offset and its codes
    /// can cancel to an output near 0).
    pub fn output_magnitude(&self, p: &Psums, weight_steps: &[f32], windows: Option<&Windows>) -> Vec<f64> {
        self.accumulate_terms(p, weight_steps, windows, |coef, z, stepped| (coef * z).abs() + (coef * stepped).abs())
    }

    /// Sums `term(coef, z, s_p * code)` over the partial sums of every output (`z = 0` and the
    /// exact partial sum for an ideal ADC).
    fn accumulate_terms(
        &self,
        p: &Psums,
        weight_steps: &[f32],
        windows: Option<&Windows>,
        term: fn(f64, f64, f64) -> f64,
    ) -> Vec<f64> {
        let c_n = self.cfg.out_channels;
        let mut y = vec![0f64; p.b * c_n * p.ho * p.wo];
        p.for_each(|pol, s, g, b, c, pos, v| {
            let (z, stepped) = match windows {
                None => (0.0, v as f64),
                Some(w) => {
                    let i = self.psum_key(pol, s, g, c);
                    let (code, _, _) = self.adc(pol, s, g, c, v, w);
                    (w.offsets[i] as f64, code * w.steps[i] as f64)
                }
            };
            y[(b * c_n + c) * p.ho * p.wo + pos] += term(self.coef(pol, s, g, c, weight_steps), z, stepped);
        });
        y
    }

    /// Sum of squared ADC errors (p - p_q)^2 of every group.
    pub fn window_errors(&self, p: &Psums, windows: &Windows) -> Vec<f64> {
        let mut err = vec![0f64; self.psum_groups()];
        p.for_each(|pol, s, g, _b, c, _pos, v| {
            let i = self.psum_key(pol, s, g, c);
            let (code, _, _) = self.adc(pol, s, g, c, v, windows);
            let q = windows.offsets[i] as f64 + code * windows.steps[i] as f64;
            err[i] += (v as f64 - q).powi(2);
        });
        err
    }

    /// Hand-derived LSQ+ gradients of L = sum(y * r) with respect to every ADC step and offset,
    /// including LSQ's gradient scale 1/sqrt(n * max(Pp, 1)): the step gets
    /// round((p-z)/s) - (p-z)/s inside and Pn or Pp outside, the offset 0 inside and 1 outside,
    /// both times dL/dy * coef.
    pub fn psum_window_grads(
        &self,
        p: &Psums,
        weight_steps: &[f32],
        windows: &Windows,
        r: &[f64],
    ) -> (Vec<f64>, Vec<f64>) {
        let c_n = self.cfg.out_channels;
        let mut step_grad = vec![0f64; self.psum_groups()];
        let mut offset_grad = vec![0f64; self.psum_groups()];
        let mut n = vec![0usize; self.psum_groups()];
        p.for_each(|pol, s, g, b, c, pos, v| {
            let i = self.psum_key(pol, s, g, c);
            let (code, inside, ratio) = self.adc(pol, s, g, c, v, windows);
            let upstream = r[(b * c_n + c) * p.ho * p.wo + pos] * self.coef(pol, s, g, c, weight_steps);
            step_grad[i] += upstream * if inside { code - ratio } else { code };
            offset_grad[i] += upstream * if inside { 0.0 } else { 1.0 };
            n[i] += 1;
        });
        let keys = self.keys(self.cfg.psum_granularity);
        let scale = |i: usize| {
            let pp = self.p_range(i / keys % self.slices).1.max(1) as f64;
            1.0 / (n[i] as f64 * pp).sqrt()
        };
        let step_grad = step_grad.iter().enumerate().map(|(i, g)| g * scale(i)).collect();
        let offset_grad = offset_grad.iter().enumerate().map(|(i, g)| g * scale(i)).collect();
        (step_grad, offset_grad)
    }
}

/// The ADC windows of a layer, flat over [pol, S, keys].
#[derive(Debug, Clone)]
pub struct Windows {
    pub steps: Vec<f32>,
    pub offsets: Vec<f32>,
}

impl Windows {
    /// Zero-anchored windows with these steps.
    pub fn zero(steps: Vec<f32>) -> Self {
        let offsets = vec![0.0; steps.len()];
        Self { steps, offsets }
    }
}

/// Integer partial sums [pol, S, G, B, C_out, H', W'].
#[derive(Debug, Clone, PartialEq)]
pub struct Psums {
    pub data: Vec<i64>,
    pub pols: usize,
    pub slices: usize,
    pub g_tiles: usize,
    pub b: usize,
    pub c: usize,
    pub ho: usize,
    pub wo: usize,
}

impl Psums {
    pub fn shape(&self) -> Vec<usize> {
        vec![self.pols, self.slices, self.g_tiles, self.b, self.c, self.ho, self.wo]
    }

    /// Calls f(pol, s, g, b, c, position, value) for every element, in storage order.
    pub fn for_each(&self, mut f: impl FnMut(usize, usize, usize, usize, usize, usize, i64)) {
        let hw = self.ho * self.wo;
        for (i, &v) in self.data.iter().enumerate() {
            let pos = i % hw;
            let c = i / hw % self.c;
            let b = i / hw / self.c % self.b;
            let g = i / hw / self.c / self.b % self.g_tiles;
            let s = i / hw / self.c / self.b / self.g_tiles % self.slices;
            let pol = i / hw / self.c / self.b / self.g_tiles / self.slices;
            f(pol, s, g, b, c, pos, v);
        }
    }
}
