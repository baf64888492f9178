//! Run-time choice between the AVX-512 kernels and the portable ones.
//!
//! A kernel with an AVX-512 version keeps a portable one beside it; the
//! public function picks the AVX-512 one when [`avx512`] says so.

#[cfg(target_arch = "x86_64")]
use std::sync::OnceLock;

/// The environment variable that turns the AVX-512 kernels off: set it to
/// anything but `0` or the empty string to run the portable code everywhere
/// (to compare the two end to end, or to reproduce results computed before
/// the AVX-512 kernels existed).
pub const PORTABLE_ENV: &str = "GAPNET_PORTABLE";

/// Whether the AVX-512 kernels run: the CPU has AVX-512F, the only
/// extension they use, and [`PORTABLE_ENV`] does not say otherwise. Decided
/// once per process.
#[cfg(target_arch = "x86_64")]
pub fn avx512() -> bool {
    static USE: OnceLock<bool> = OnceLock::new();
    *USE.get_or_init(|| std::arch::is_x86_feature_detected!("avx512f") && !portable_requested())
}

/// No AVX-512 kernels exist for other architectures.
#[cfg(not(target_arch = "x86_64"))]
pub fn avx512() -> bool {
    false
}

/// Whether [`PORTABLE_ENV`] asks for the portable kernels.
pub fn portable_requested() -> bool {
    std::env::var_os(PORTABLE_ENV).is_some_and(|v| !v.is_empty() && v != "0")
}
