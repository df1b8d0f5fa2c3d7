//! Bit slicing of quantized weights into cells (docs/SPEC.md section 1, "Bit slicing").
//!
//! With b_c bits per cell a B_w-bit weight code occupies S = B_w / b_c cells, most significant
//! digit first. For `twos` the code is offset to u = q - Qn >= 0, written in base 2^b_c, and the
//! top digit is made signed (d_0' = d_0 - 2^(b_c-1)) so that q = sum_s d_s' * 2^(b_c*(S-1-s)).
//! For `differential` the magnitudes of w+ and w- are written with unsigned digits on two sets of
//! arrays.

use burn::tensor::Tensor;
use serde::Serialize;

use crate::lsq::LsqRange;
use crate::settings::{CimConfigError, Encoding};

/// The digit layout of one weight code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BitSlicing {
    /// B_w.
    pub weight_bits: u32,
    /// b_c.
    pub cell_bits: u32,
    /// Weight encoding.
    pub encoding: Encoding,
}

impl BitSlicing {
    /// b_c must divide B_w.
    pub fn new(weight_bits: u32, cell_bits: u32, encoding: Encoding) -> Result<Self, CimConfigError> {
        if cell_bits == 0 || weight_bits == 0 || !weight_bits.is_multiple_of(cell_bits) {
            return Err(CimConfigError::CellBitsNotDividing { cell_bits, weight_bits });
        }
        Ok(Self { weight_bits, cell_bits, encoding })
    }

    /// S = B_w / b_c.
    pub fn slices(&self) -> usize {
        (self.weight_bits / self.cell_bits) as usize
    }

    /// 1 for `twos`, 2 for `differential` (w+ arrays, then w- arrays).
    pub fn polarities(&self) -> usize {
        match self.encoding {
            Encoding::Twos => 1,
            Encoding::Differential => 2,
        }
    }

    /// +1 for the positive arrays, -1 for the negative ones (subtracted after the ADCs).
    pub fn polarity_sign(&self, polarity: usize) -> f32 {
        if polarity == 0 { 1.0 } else { -1.0 }
    }

    /// The range of the weight code q: `twos` [-2^(B-1), 2^(B-1)-1]; `differential`
    /// [-(2^B-1), 2^B-1] (each polarity's magnitude is unsigned on B bits).
    pub fn weight_range(&self) -> LsqRange {
        let b = self.weight_bits;
        match self.encoding {
            Encoding::Twos => LsqRange::signed(b),
            Encoding::Differential => {
                let top = ((1i64 << b) - 1) as f32;
                LsqRange::new(-top, top)
            }
        }
    }

    /// 2^(b_c*(S-1-s)): the binary weight of slice `s` in the shift-and-add.
    pub fn place_value(&self, s: usize) -> f32 {
        (1u64 << (self.cell_bits as usize * (self.slices() - 1 - s))) as f32
    }

    /// Whether digits of slice `s` can be negative (only the top `twos` slice).
    pub fn slice_is_signed(&self, s: usize) -> bool {
        self.encoding == Encoding::Twos && s == 0
    }

    /// The ADC code range of slice `s` on a P-bit converter: signed [-2^(P-1), 2^(P-1)-1] when the
    /// slice's digits can be negative, unsigned [0, 2^P-1] otherwise.
    pub fn adc_range(&self, s: usize, psum_bits: u32) -> LsqRange {
        if self.slice_is_signed(s) { LsqRange::signed(psum_bits) } else { LsqRange::unsigned(psum_bits) }
    }

    /// Largest |digit| any cell holds.
    pub fn max_digit_magnitude(&self) -> u32 {
        (1u32 << self.cell_bits) - 1
    }

    /// d(d_s')/dq of the straight-through estimator: 2^(-b_c*(S-1-s)) / S. With an ideal ADC the
    /// slices' gradients then add up to exactly that of a plain conv with weights s_w * q.
    pub fn digit_ste(&self, s: usize) -> f32 {
        1.0 / (self.place_value(s) * self.slices() as f32)
    }

    /// The digits of integer code `q`, as `[polarity][slice]`, most significant slice first.
    pub fn digits(&self, q: i64) -> Vec<Vec<i64>> {
        let base = 1i64 << self.cell_bits;
        let to_digits = |mut u: i64| {
            let mut d = vec![0i64; self.slices()];
            for s in (0..self.slices()).rev() {
                d[s] = u % base;
                u /= base;
            }
            d
        };
        match self.encoding {
            Encoding::Twos => {
                let qn = -(1i64 << (self.weight_bits - 1));
                let mut d = to_digits(q - qn);
                d[0] -= base / 2;
                vec![d]
            }
            Encoding::Differential => vec![to_digits(q.max(0)), to_digits((-q).max(0))],
        }
    }

    /// Digit planes of integer-valued codes `q` [G, C, R]: [G, polarities * S, C, R] in the order
    /// (polarity, slice), with the straight-through gradient of [`Self::digit_ste`] (and, for
    /// `differential`, the gradient routed to the polarity that holds the weight; q = 0 counts
    /// as positive so that w+ - w- passes gradient everywhere).
    pub fn digit_planes(&self, q: Tensor<3>) -> Tensor<4> {
        let q_value = q.clone().detach();
        let base = (1u64 << self.cell_bits) as f32;
        let slice_digits = |u: Tensor<3>| -> Vec<Tensor<3>> {
            (0..self.slices())
                .map(|s| {
                    let place = self.place_value(s);
                    let upper = u.clone().div_scalar(place).floor();
                    let higher = u.clone().div_scalar(place * base).floor();
                    upper.sub(higher.mul_scalar(base))
                })
                .collect()
        };
        let (values, routes): (Vec<Tensor<3>>, Vec<Tensor<3>>) = match self.encoding {
            Encoding::Twos => {
                let qn = self.weight_range().low;
                let mut d = slice_digits(q_value.clone().sub_scalar(qn));
                d[0] = d[0].clone().sub_scalar(base / 2.0);
                let ones = q_value.ones_like();
                (d, vec![ones])
            }
            Encoding::Differential => {
                let positive = q_value.clone().greater_equal_elem(0.0).float();
                let negative = positive.clone().neg().add_scalar(1.0);
                let mut d = slice_digits(q_value.clone().clamp_min(0.0));
                d.extend(slice_digits(q_value.neg().clamp_min(0.0)));
                (d, vec![positive, negative.neg()])
            }
        };
        let ste: Vec<Tensor<3>> = routes
            .iter()
            .flat_map(|route| (0..self.slices()).map(|s| route.clone().mul_scalar(self.digit_ste(s))))
            .collect();
        let values = Tensor::stack::<4>(values, 1);
        let ste = Tensor::stack::<4>(ste, 1);
        // Forward: the exact digits. Backward: dq * ste.
        let dq = q.clone().sub(q.detach()).unsqueeze_dim::<4>(1);
        values.add(dq.mul(ste))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twos_digits_recompose_exactly() {
        for (b, bc) in [(4, 1), (4, 2), (4, 4), (6, 2), (6, 3), (8, 4)] {
            let sl = BitSlicing::new(b, bc, Encoding::Twos).unwrap();
            let r = sl.weight_range();
            for q in r.low as i64..=r.high as i64 {
                let d = &sl.digits(q)[0];
                let back: i64 = (0..sl.slices()).map(|s| d[s] * sl.place_value(s) as i64).sum();
                assert_eq!(back, q, "B={b} b_c={bc} q={q} digits={d:?}");
                assert!(d[0] >= -(1 << (bc - 1)) && d[0] < (1 << (bc - 1)));
                assert!(d[1..].iter().all(|&x| (0..1 << bc).contains(&x)));
            }
        }
    }

    #[test]
    fn design_example_b4_bc2() {
        let sl = BitSlicing::new(4, 2, Encoding::Twos).unwrap();
        assert_eq!(sl.digits(-8), vec![vec![-2, 0]]);
        assert_eq!(sl.digits(7), vec![vec![1, 3]]);
        assert_eq!(sl.digits(0), vec![vec![0, 0]]);
        assert_eq!(sl.adc_range(0, 3), LsqRange::new(-4.0, 3.0));
        assert_eq!(sl.adc_range(1, 3), LsqRange::new(0.0, 7.0));
    }

    #[test]
    fn differential_digits_are_unsigned_magnitudes() {
        let sl = BitSlicing::new(3, 1, Encoding::Differential).unwrap();
        assert_eq!(sl.digits(5), vec![vec![1, 0, 1], vec![0, 0, 0]]);
        assert_eq!(sl.digits(-6), vec![vec![0, 0, 0], vec![1, 1, 0]]);
        assert_eq!(sl.weight_range(), LsqRange::new(-7.0, 7.0));
        assert!(!sl.slice_is_signed(0));
    }

    #[test]
    fn rejects_non_dividing_cell_bits() {
        assert!(BitSlicing::new(4, 3, Encoding::Twos).is_err());
        assert!(BitSlicing::new(4, 0, Encoding::Twos).is_err());
    }
}
