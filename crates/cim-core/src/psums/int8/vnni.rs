//! The integer partial sums on AVX-512 VNNI: `vpdpbusd` multiplies 4 unsigned bytes by 4 signed
//! bytes and adds them to a 32-bit lane, 64 multiply-adds per instruction, four times the f32
//! FMA rate. A register block is 8 planes x 48 pixels (24 of the 32 zmm registers).

use std::arch::x86_64::*;

use super::{BlockShape, Place, Sink};

/// 3 registers of 16 pixels, times 8 planes.
pub(super) const BLOCK: BlockShape = BlockShape { lanes: LANES, panels: PANELS, planes: PLANES };
const LANES: usize = 16;
const PANELS: usize = 3;
const PLANES: usize = 8;

/// One register block ([`super::BlockKernel`]).
///
/// # Safety
/// The CPU must have AVX-512 F, BW and VNNI; `a` holds `steps * 8` words and `b` `steps * 48`;
/// the sink's rows `place.channel..+place.planes` hold `n` values, and the block's pixels belong
/// to the caller's task.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn block_kernel(
    a: &[i32],
    b: &[i32],
    steps: usize,
    sink: Sink,
    place: Place,
    n: usize,
    outputs: &mut [f32],
) {
    let acc = register_block(a, b, steps);
    // SAFETY: the caller's promises
    unsafe { store(&acc, sink, place, n, outputs) };
}

/// Hands one register block's pixels to the sink: with the ADC, each channel's dequantized code
/// `coef*step*clamp(round((p - offset)/step), low, high) + coef*offset` (the formula of
/// [`crate::adc`], operation for operation, so the sums are bit-identical) is added to the
/// task's `outputs` [C_out, task pixels] in channel order, as the ADC pass adds them.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn store(acc: &[[__m512i; PANELS]; PLANES], sink: Sink, at: Place, n: usize, outputs: &mut [f32]) {
    // 1.5 * 2^23: round half to even as flex_kernels::host::round_half_even does
    let magic = _mm512_set1_ps(12_582_912.0);
    let task_pixels = BLOCK.task_pixels();
    for (m, acc_m) in acc.iter().enumerate().take(at.planes) {
        let channel = at.channel + m;
        for (r, acc_mr) in acc_m.iter().enumerate() {
            let valid = at.pixels.saturating_sub(r * LANES).min(LANES);
            if valid == 0 {
                break;
            }
            let mask: __mmask16 = if valid == LANES { !0 } else { (1u16 << valid) - 1 };
            let (at_pixel, sums) = (channel * n + at.pixel + r * LANES, _mm512_cvtepi32_ps(*acc_mr));
            match sink {
                // SAFETY (both arms): row `channel` of the caller's block, pixels r*16 ..
                // r*16 + valid (masked), and the task's outputs of those pixels
                Sink::Floats(out) => unsafe { _mm512_mask_storeu_ps(out.0.add(at_pixel), mask, sums) },
                Sink::ThroughAdc { psums, adc, .. } => unsafe {
                    _mm512_mask_cvtsepi32_storeu_epi16(psums.0.add(at_pixel).cast(), mask, *acc_mr);
                    let ratio = _mm512_div_ps(
                        _mm512_sub_ps(sums, _mm512_set1_ps(adc.offset[channel])),
                        _mm512_set1_ps(adc.step[channel]),
                    );
                    let clamped = _mm512_min_ps(
                        _mm512_max_ps(ratio, _mm512_set1_ps(adc.low[channel])),
                        _mm512_set1_ps(adc.high[channel]),
                    );
                    let code = _mm512_sub_ps(_mm512_add_ps(clamped, magic), magic);
                    let value = _mm512_add_ps(
                        _mm512_mul_ps(_mm512_set1_ps(adc.scale[channel]), code),
                        _mm512_set1_ps(adc.shift[channel]),
                    );
                    let o = outputs[(channel % adc.out_channels) * task_pixels + at.local + r * LANES..].as_mut_ptr();
                    _mm512_mask_storeu_ps(o, mask, _mm512_add_ps(_mm512_maskz_loadu_ps(mask, o), value));
                },
            }
        }
    }
}

/// One register block: 8 planes x 48 pixels summed over every (tap, 4-channel word).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
fn register_block(a: &[i32], b: &[i32], steps: usize) -> [[__m512i; PANELS]; PLANES] {
    let mut acc = [[_mm512_setzero_si512(); PANELS]; PLANES];
    for step in 0..steps {
        let mut codes = [_mm512_setzero_si512(); PANELS];
        for (r, c) in codes.iter_mut().enumerate() {
            // SAFETY: b holds steps * 48 words.
            *c = unsafe { _mm512_loadu_si512(b[(step * PANELS + r) * LANES..].as_ptr() as *const _) };
        }
        for (m, acc_m) in acc.iter_mut().enumerate() {
            let digits = _mm512_set1_epi32(a[step * PLANES + m]);
            for r in 0..PANELS {
                acc_m[r] = _mm512_dpbusd_epi32(acc_m[r], codes[r], digits);
            }
        }
    }
    acc
}
