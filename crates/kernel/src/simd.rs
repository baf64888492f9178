//! Run-time CPU feature checks shared by the kernels.
//!
//! A kernel with an AVX-512 version keeps a portable one beside it; the
//! public function picks the AVX-512 one when [`avx512`] says the CPU can
//! run it.

/// Whether the CPU has AVX-512F, all the AVX-512 kernels use (std checks
/// once and caches the answer).
#[cfg(target_arch = "x86_64")]
pub fn avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}
