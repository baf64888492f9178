//! The vector type the SIMD kernels are written against, once.
//!
//! [`crate::direct`] (the 3x3 convolutions), [`crate::dense_simd`] and
//! [`crate::maxpool_simd`] are generic over [`Vector`]; each ISA of
//! [`crate::isa::Isa`] that has kernels is one implementation:
//!
//! - [`Avx512`]: 16 lanes, `__mmask16` masks, 32 vector registers;
//! - [`Avx2`]: 8 lanes (AVX2 + FMA), masks held in vector registers, 16
//!   vector registers;
//! - [`Fallback<N>`]: plain arrays of `N` lanes, `f32::mul_add` for the
//!   FMA. No CPU feature needed: the tests run the 16- and 8-lane tilings
//!   with it on any machine, and check the hardware versions against it bit
//!   for bit. (A NEON implementation would be one more impl of this trait.)
//!
//! **Code generation.** Every method is `#[inline(always)]` and carries no
//! target feature itself. A kernel body runs inside [`Vector::outline`]: a
//! function that is never inlined and is compiled with the ISA's target
//! features (`avx512f`, or `avx2,fma`), so the methods and the intrinsics
//! under them inline into it and the body compiles as if written with the
//! intrinsics directly. The kernels put their outlined boundaries where the
//! hand-written AVX-512 kernels had their `#[target_feature]` functions.
//!
//! **Register tiles** depend on the register count, so they are associated
//! constants ([`Vector::TILES`]), not copies of the code. The
//! order of the floating-point operations that make one output never
//! depends on a tile size, only on the lane count (partial sums per lane)
//! and on [`Vector::hsum`]'s addition tree, which is the same halving tree
//! for every implementation.

pub mod fallback;
#[cfg(target_arch = "x86_64")]
pub mod x86;

pub use fallback::Fallback;
#[cfg(target_arch = "x86_64")]
pub use x86::{Avx2, Avx512};

/// The most lanes of any implementation. The direct convolution's scratch
/// layout rounds to it, so that its size does not depend on the ISA.
pub const MAX_LANES: usize = 16;

/// Register tile sizes of the kernels: how many accumulators fit the
/// vector registers (each tile also needs a few registers for operands);
/// and the choices of path that follow from them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tiles {
    /// Output planes per tile of the direct convolution; divides 4.
    pub conv_f: usize,
    /// Vector blocks of pixels per tile of the direct convolution (1 to 6):
    /// `conv_f * conv_q` accumulators.
    pub conv_q: usize,
    /// Whether the direct convolution spreads a plane's vector blocks
    /// evenly over its tiles (8 blocks as 4 + 4 rather than 6 + 2): a
    /// narrow last tile does few FMAs per load. Each output's chain of FMAs
    /// is the same either way, so only the speed depends on it.
    pub conv_even_q: bool,
    /// Filters per tile of the direct weight gradient (1 to 3).
    pub conv_dw_f: usize,
    /// Taps per tile of the direct weight gradient (3 or 9):
    /// `conv_dw_f * conv_dw_taps` accumulators.
    pub conv_dw_taps: usize,
    /// Images per tile of the dense forward (1, 2, 4 or 8).
    pub dot_i: usize,
    /// Outputs per tile of the dense forward (1 to 3).
    pub dot_o: usize,
    /// Images per tile of the dense input gradient (8, 4 or 1).
    pub dx_i: usize,
    /// Column blocks per tile of the dense input gradient (1 to 3).
    pub dx_k: usize,
    /// Outputs per tile of the dense weight gradient (1 to 3).
    pub dw_o: usize,
    /// Column blocks per tile of the dense weight gradient (1 to 6).
    pub dw_k: usize,
    /// Most output planes of a layer whose default path is the direct
    /// convolution ([`crate::ConvPath::default_for`]); a wider layer
    /// defaults to im2col + SGEMM. With few accumulators a tile covers few
    /// filters, so many filters reread the input many times, while SGEMM's
    /// blocking keeps it in cache.
    pub conv_direct_max_f: usize,
    /// Most bytes of a direct convolution's padded input for which its
    /// filter tiles, not its pixel groups, are the outer loop (see
    /// `direct::correlate`): the loop order changes the speed, never the
    /// bits.
    pub conv_filter_outer_max_input: usize,
}

/// Tiles for 32 vector registers (AVX-512): the hand-tuned AVX-512 kernels'
/// tiles, 24 to 27 accumulators each.
pub const TILES_32_REGS: Tiles = Tiles {
    conv_f: 4,
    conv_q: 6,
    conv_even_q: false,
    conv_dw_f: 3,
    conv_dw_taps: 9,
    dot_i: 8,
    dot_o: 3,
    dx_i: 8,
    dx_k: 3,
    dw_o: 3,
    dw_k: 6,
    // not measured against im2col on wide layers yet: direct everywhere
    conv_direct_max_f: usize::MAX,
    // not measured on an AVX-512 CPU yet: the pixel groups outer everywhere
    conv_filter_outer_max_input: 0,
};

/// Tiles for 16 vector registers (AVX2): 8 to 12 accumulators, enough
/// independent FMAs to cover their latency, and room for the operands.
pub const TILES_16_REGS: Tiles = Tiles {
    conv_f: 2,
    conv_q: 6,
    conv_even_q: true,
    conv_dw_f: 3,
    conv_dw_taps: 3,
    dot_i: 4,
    dot_o: 2,
    dx_i: 4,
    dx_k: 2,
    dw_o: 3,
    dw_k: 3,
    // AMD EPYC, 1 thread, forward + backward: direct 1.03-1.10x im2col's
    // speed up to 64 planes, 0.89-0.97x at 64->128 @8x8, 0.75x at
    // 128->128 @8x8 (`docs/benchmarks.md`)
    conv_direct_max_f: 64,
    // half of a 32 KiB L1d. AMD EPYC, 1 thread, 8 images, outputs not in
    // cache: 0.62x the time on 3->32 @32x32, 0.87x on 3->20 @32x32 and
    // 3->20 @64x64, the same (0.99-1.01x) on 8x8 and 16x16 planes
    conv_filter_outer_max_input: 16 << 10,
};

/// A vector of `LANES` `f32`, with lane masks and `u32` index vectors.
///
/// # Safety
/// Implementations must keep the contracts below: loads and stores touch
/// exactly the lanes they say (masked-off lanes never fault), `LANES` is the
/// lane count and at most [`MAX_LANES`], and [`Vector::supported`] is true
/// only where every method can run. Every method is `unsafe` to call
/// because it may need CPU features: call them only where `supported()`
/// holds.
#[allow(clippy::missing_safety_doc)] // the trait's `# Safety` covers every method
pub unsafe trait Vector: Copy {
    /// `f32` lanes per vector (a power of two).
    const LANES: usize;
    /// Register tile sizes for this ISA's register file.
    const TILES: Tiles;

    /// A lane mask.
    type Mask: Copy;
    /// `LANES` `u32` values (the max pool's argmax indices).
    type Index: Copy;

    /// Whether this CPU can run the methods.
    fn supported() -> bool;

    /// Run `f` in a function of its own, never inlined, compiled with this
    /// ISA's target features.
    unsafe fn outline<R>(f: impl FnOnce() -> R) -> R;

    unsafe fn zero() -> Self;
    unsafe fn splat(v: f32) -> Self;
    /// `LANES` floats from `p` (unaligned).
    unsafe fn load(p: *const f32) -> Self;
    unsafe fn store(p: *mut f32, v: Self);
    /// The lanes `l` with `from <= l < to` (both clamped to `LANES`).
    unsafe fn mask_range(from: usize, to: usize) -> Self::Mask;
    /// The first `min(k, LANES)` lanes.
    #[inline(always)]
    unsafe fn mask_first(k: usize) -> Self::Mask {
        Self::mask_range(0, k)
    }
    /// The lanes of `m` from `p`, zero elsewhere; only those lanes are read.
    unsafe fn maskz_load(m: Self::Mask, p: *const f32) -> Self;
    /// The lanes of `m` from `p`, `fill`'s elsewhere; only those lanes are read.
    unsafe fn mask_load_or(fill: Self, m: Self::Mask, p: *const f32) -> Self;
    /// Store the lanes of `m`; only those lanes are written.
    unsafe fn mask_store(p: *mut f32, m: Self::Mask, v: Self);
    /// Store lanes `from..to` of `v` to `p + from..p + to`; only those are
    /// written. (A masked store, unless the ISA has a faster way.)
    #[inline(always)]
    unsafe fn store_lanes(p: *mut f32, from: usize, to: usize, v: Self) {
        Self::mask_store(p, Self::mask_range(from, to), v)
    }
    /// [`Vector::store_lanes`] where the caller allows more: the `LANES`
    /// floats from `p + from` may all be written, those from `p + to` on
    /// with any values (the caller writes them again later). Lanes before
    /// `from` are never written.
    #[inline(always)]
    unsafe fn store_lanes_ahead(p: *mut f32, from: usize, to: usize, v: Self) {
        Self::store_lanes(p, from, to, v)
    }
    /// `a * b + c` with one rounding.
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self;
    unsafe fn add(a: Self, b: Self) -> Self;
    /// The sum of the lanes by the halving tree: add the upper half of the
    /// lanes to the lower half, lane by lane, until one lane is left (the
    /// order of `_mm512_reduce_add_ps`).
    unsafe fn hsum(v: Self) -> f32;

    /// Lane `j` is element `2j` of the `2 * LANES` elements `lo`, `hi`.
    unsafe fn even(lo: Self, hi: Self) -> Self;
    /// Lane `j` is element `2j + 1` of `lo`, `hi`.
    unsafe fn odd(lo: Self, hi: Self) -> Self;
    unsafe fn index_splat(i: u32) -> Self::Index;
    /// Lane `j` is `2j`.
    unsafe fn index_even() -> Self::Index;
    /// Lane-wise wrapping addition.
    unsafe fn index_add(a: Self::Index, b: Self::Index) -> Self::Index;
    /// `(bv, bi) = (v, i)` in the lanes where `v > bv` (false when either
    /// is NaN), as the portable max pool's `keep_greater`.
    unsafe fn keep_greater(v: Self, i: Self::Index, bv: &mut Self, bi: &mut Self::Index);
    /// Store `LANES` `u32` at `p` (unaligned).
    unsafe fn store_index(p: *mut u32, i: Self::Index);
    /// Store the lanes of `m` of `i`; only those lanes are written.
    unsafe fn mask_store_index(p: *mut u32, m: Self::Mask, i: Self::Index);
}
