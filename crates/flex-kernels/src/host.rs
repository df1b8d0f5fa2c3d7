//! Host-side plumbing of the hand-written Flex passes: where they may run, their buffers (read,
//! zeroed in parallel, written without zeroing), cache hints, rounding and SIMD dispatch.

use std::borrow::Cow;

use burn::backend::DispatchDevice;
use burn::backend::flex::FlexTensor;
use burn::tensor::{Device, TensorData};

/// Whether the hand-written passes can run on this device (Flex, with or without autodiff).
/// Other backends take the reference paths made of generic tensor ops.
pub fn fused_available(device: &Device) -> bool {
    matches!(device.clone().inner().as_dispatch(), DispatchDevice::Flex(_))
}

/// The values of a float tensor in row-major order, copied only when not contiguous.
pub fn f32_slice(t: &FlexTensor) -> Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) if t.is_contiguous() => Cow::Borrowed(s),
        _ => Cow::Owned(t.to_contiguous().as_slice::<f32>().expect("an f32 tensor").to_vec()),
    }
}

/// `len` zeros, written by every thread: the process keeps freed memory
/// ([`crate::memory::reuse_freed_memory`]), so a large `vec![0.0; len]` is a memset of a reused
/// block on one thread while the other cores wait.
pub fn zeros(len: usize) -> Vec<f32> {
    use rayon::prelude::*;
    let mut v: Vec<f32> = Vec::with_capacity(len);
    v.spare_capacity_mut()[..len].par_chunks_mut(1 << 16).for_each(|chunk| chunk.fill(std::mem::MaybeUninit::new(0.0)));
    // SAFETY: the capacity is at least `len` and its first `len` values were all written above.
    unsafe { v.set_len(len) };
    v
}

/// `len` values written by `fill`, never zeroed first: for outputs of hundreds of megabytes per
/// step (the partial sums and their gradient) the zeroing alone was a memory pass of its own.
///
/// # Safety
/// `fill` must write every one of the `len` values it is given.
pub unsafe fn written_by<T>(len: usize, fill: impl FnOnce(&mut [std::mem::MaybeUninit<T>])) -> Vec<T> {
    let mut v: Vec<T> = Vec::with_capacity(len);
    fill(&mut v.spare_capacity_mut()[..len]);
    // SAFETY: the caller's `fill` wrote all `len` values.
    unsafe { v.set_len(len) };
    v
}

/// Asks the CPU to bring `values` into the cache ahead of their use (a hint; no-op off x86-64).
#[inline(always)]
pub fn prefetch<T>(values: &[T]) {
    #[cfg(target_arch = "x86_64")]
    for line in values.chunks((64 / size_of::<T>()).max(1)) {
        // SAFETY: a prefetch only hints at an address inside the slice; it never faults.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line.as_ptr().cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = values;
}

/// A contiguous Flex tensor from row-major values.
pub fn flex_tensor(data: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(data, shape))
}

/// Rounds half to even with the 1.5 * 2^23 trick, which vectorizes on baseline x86-64 (no
/// SSE4.1 `roundps`). Exact for |x| < 2^22; callers clamp to ADC ranges of at most 2^16.
#[inline(always)]
pub fn round_half_even(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
    (x + MAGIC) - MAGIC
}

/// Compiles a body that calls `#[inline(always)]` kernels once for AVX2 and once for the
/// baseline, and picks at run time. Without fast-math both give bit-identical results.
#[macro_export]
macro_rules! with_best_simd {
    (( $($arg:ident : $ty:ty),* ) -> $ret:ty $body:block) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        unsafe fn avx2($($arg: $ty),*) -> $ret $body
        fn baseline($($arg: $ty),*) -> $ret $body
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { avx2($($arg),*) };
        }
        return baseline($($arg),*);
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_rounding_is_half_to_even() {
        for x in [-4.5f32, -3.5, -2.5, -0.5, 0.5, 1.5, 2.5, 7.49, 65535.5, -32768.5, 3.0, -0.0] {
            assert_eq!(round_half_even(x), x.round_ties_even(), "{x}");
        }
    }
}
