//! The integer partial sums on AVX2 (most laptops and many cloud CPUs): `vpmaddubsw` multiplies
//! 32 unsigned code bytes by 32 signed digit bytes and adds neighbouring pairs into 16-bit lanes,
//! `vpmaddwd` against ones adds those pairs into 32-bit lanes: 4 channels of one tap per lane, as
//! `vpdpbusd` does in one instruction. A pair of byte products must fit 16 bits
//! ([`super::packed`] checks it: 2 * 15 * 3 = 90 for 4-bit codes and 2-bit cells). A register
//! block is 4 planes x 16 pixels (8 of the 16 ymm registers accumulate).

use std::arch::x86_64::*;

use super::{BlockShape, Place, Sink};

/// 2 registers of 8 pixels, times 4 planes.
pub(super) const BLOCK: BlockShape = BlockShape { lanes: LANES, panels: PANELS, planes: PLANES };
const LANES: usize = 8;
const PANELS: usize = 2;
const PLANES: usize = 4;

/// One register block ([`super::BlockKernel`]).
///
/// # Safety
/// The CPU must have AVX2; `a` holds `steps * 4` words and `b` `steps * 16`; the sink's rows
/// `place.channel..+place.planes` hold `n` values, and the block's pixels belong to the caller's
/// task.
#[target_feature(enable = "avx2")]
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

/// Hands one register block's pixels to the sink, as [`super::vnni`]'s store does (the same
/// float operations in the same order: bit-identical).
#[target_feature(enable = "avx2")]
unsafe fn store(acc: &[[__m256i; PANELS]; PLANES], sink: Sink, at: Place, n: usize, outputs: &mut [f32]) {
    // 1.5 * 2^23: round half to even as flex_kernels::host::round_half_even does
    let magic = _mm256_set1_ps(12_582_912.0);
    let lane_index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let task_pixels = BLOCK.task_pixels();
    for (m, acc_m) in acc.iter().enumerate().take(at.planes) {
        let channel = at.channel + m;
        for (r, acc_mr) in acc_m.iter().enumerate() {
            let valid = at.pixels.saturating_sub(r * LANES).min(LANES);
            if valid == 0 {
                break;
            }
            // lanes below `valid`: all ones (the sign bit selects a lane of maskload/maskstore)
            let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(valid as i32), lane_index);
            let (at_pixel, sums) = (channel * n + at.pixel + r * LANES, _mm256_cvtepi32_ps(*acc_mr));
            match sink {
                // SAFETY (both arms): row `channel` of the caller's block, pixels r*8 .. r*8 +
                // valid (masked, or element by element), and the task's outputs of those pixels
                Sink::Floats(out) => unsafe { _mm256_maskstore_ps(out.0.add(at_pixel), mask, sums) },
                Sink::ThroughAdc { psums, adc, .. } => unsafe {
                    store_i16(psums.0.add(at_pixel), *acc_mr, valid);
                    let ratio = _mm256_div_ps(
                        _mm256_sub_ps(sums, _mm256_set1_ps(adc.offset[channel])),
                        _mm256_set1_ps(adc.step[channel]),
                    );
                    let clamped = _mm256_min_ps(
                        _mm256_max_ps(ratio, _mm256_set1_ps(adc.low[channel])),
                        _mm256_set1_ps(adc.high[channel]),
                    );
                    let code = _mm256_sub_ps(_mm256_add_ps(clamped, magic), magic);
                    let value = _mm256_add_ps(
                        _mm256_mul_ps(_mm256_set1_ps(adc.scale[channel]), code),
                        _mm256_set1_ps(adc.shift[channel]),
                    );
                    let o = outputs[(channel % adc.out_channels) * task_pixels + at.local + r * LANES..].as_mut_ptr();
                    _mm256_maskstore_ps(o, mask, _mm256_add_ps(_mm256_maskload_ps(o, mask), value));
                },
            }
        }
    }
}

/// The first `valid` of the 8 i32 lanes of `sums` as saturated i16 at `dst`.
///
/// # Safety
/// `dst` must be writable for `valid` values.
#[target_feature(enable = "avx2")]
unsafe fn store_i16(dst: *mut i16, sums: __m256i, valid: usize) {
    // packs works within 128-bit halves: [s0..s3 s0..s3 | s4..s7 s4..s7]; the 64-bit pieces 0
    // and 2 are s0..s7 in order
    let packed = _mm256_permute4x64_epi64(_mm256_packs_epi32(sums, sums), 0b11_01_10_00);
    let low = _mm256_castsi256_si128(packed);
    if valid == LANES {
        // SAFETY: 8 values at dst
        unsafe { _mm_storeu_si128(dst.cast(), low) };
    } else {
        let mut values = [0i16; LANES];
        // SAFETY: a local array of 8 i16
        unsafe { _mm_storeu_si128(values.as_mut_ptr().cast(), low) };
        // SAFETY: `valid` values at dst
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), dst, valid) };
    }
}

/// One register block: 4 planes x 16 pixels summed over every (tap, 4-channel word).
#[target_feature(enable = "avx2")]
#[inline]
fn register_block(a: &[i32], b: &[i32], steps: usize) -> [[__m256i; PANELS]; PLANES] {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_si256(); PANELS]; PLANES];
    for step in 0..steps {
        let mut codes = [_mm256_setzero_si256(); PANELS];
        for (r, c) in codes.iter_mut().enumerate() {
            // SAFETY: b holds steps * 16 words.
            *c = unsafe { _mm256_loadu_si256(b[(step * PANELS + r) * LANES..].as_ptr() as *const _) };
        }
        for (m, acc_m) in acc.iter_mut().enumerate() {
            let digits = _mm256_set1_epi32(a[step * PLANES + m]);
            for r in 0..PANELS {
                let pairs = _mm256_maddubs_epi16(codes[r], digits);
                acc_m[r] = _mm256_add_epi32(acc_m[r], _mm256_madd_epi16(pairs, ones));
            }
        }
    }
    acc
}
