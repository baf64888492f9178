//! [`Vector`] for x86-64: [`Avx512`] (AVX-512F) and [`Avx2`] (AVX2 + FMA).
//!
//! Each method is one intrinsic or a few; they inline into the kernel
//! bodies that [`Vector::outline`] compiles with the target features.
//! `is_x86_feature_detected!` caches its answer, so [`Vector::supported`]
//! is a load and a test.

use super::{Tiles, Vector, TILES_16_REGS, TILES_32_REGS};
use std::arch::x86_64::*;

/// 16 `f32` lanes in a `zmm` register; masks are `__mmask16`.
#[derive(Clone, Copy, Debug)]
pub struct Avx512(__m512);

/// 8 `f32` lanes in a `ymm` register; a mask is a vector of 8 `i32`, all
/// ones in the lanes it keeps.
#[derive(Clone, Copy, Debug)]
pub struct Avx2(__m256);

#[target_feature(enable = "avx512f")]
unsafe fn outline_avx512<R, F: FnOnce() -> R>(f: F) -> R {
    f()
}

#[target_feature(enable = "avx2,fma")]
unsafe fn outline_avx2<R, F: FnOnce() -> R>(f: F) -> R {
    f()
}

/// Call `function(f)` through a pointer the optimiser cannot see through.
///
/// `#[inline(never)]` on a `#[target_feature]` function is not enough: rustc
/// marks the call sites `noinline` only where the caller has the features,
/// and a call from a closure that is later inlined into an outlined body
/// does not, so LLVM inlined nested outlined bodies (a register tile's
/// loop into its caller). The indirect call costs a few cycles per tile.
#[inline(always)]
unsafe fn call_opaque<R, F: FnOnce() -> R>(function: unsafe fn(F) -> R, f: F) -> R {
    std::hint::black_box(function)(f)
}

// SAFETY: the masked loads and stores are the AVX-512 masked forms, which
// never touch a masked-off lane; `supported` checks AVX-512F, the only
// extension used.
unsafe impl Vector for Avx512 {
    const LANES: usize = 16;
    const TILES: Tiles = TILES_32_REGS;
    type Mask = __mmask16;
    type Index = __m512i;

    fn supported() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
    }

    #[inline(always)]
    unsafe fn outline<R>(f: impl FnOnce() -> R) -> R {
        call_opaque(outline_avx512, f)
    }

    #[inline(always)]
    unsafe fn zero() -> Self {
        Avx512(_mm512_setzero_ps())
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        Avx512(_mm512_set1_ps(v))
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Avx512(_mm512_loadu_ps(p))
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self) {
        _mm512_storeu_ps(p, v.0)
    }
    #[inline(always)]
    unsafe fn mask_range(from: usize, to: usize) -> __mmask16 {
        let first = |k: usize| ((1u32 << k.min(16)) - 1) as __mmask16;
        first(to) & !first(from)
    }
    #[inline(always)]
    unsafe fn maskz_load(m: __mmask16, p: *const f32) -> Self {
        Avx512(_mm512_maskz_loadu_ps(m, p))
    }
    #[inline(always)]
    unsafe fn mask_load_or(fill: Self, m: __mmask16, p: *const f32) -> Self {
        Avx512(_mm512_mask_loadu_ps(fill.0, m, p))
    }
    #[inline(always)]
    unsafe fn mask_store(p: *mut f32, m: __mmask16, v: Self) {
        _mm512_mask_storeu_ps(p, m, v.0)
    }
    #[inline(always)]
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
        Avx512(_mm512_fmadd_ps(a.0, b.0, c.0))
    }
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        Avx512(_mm512_add_ps(a.0, b.0))
    }
    #[inline(always)]
    unsafe fn hsum(v: Self) -> f32 {
        // The halving tree of `_mm512_reduce_add_ps`, its first step done at
        // 512 bits: LLVM lowers reduce_add's first step to a VEX-encoded ymm
        // add, which without AVX512VL can name only registers 0-15, so a
        // tile of 24 accumulators spilled around it (the dense forward).
        // Lanes 0..8 + 8..16, then AVX2's tree of the lower 8: the same
        // additions in the same order.
        let upper = _mm512_shuffle_f32x4::<0x4E>(v.0, v.0);
        let halves = _mm512_add_ps(v.0, upper);
        Avx2::hsum(Avx2(_mm512_castps512_ps256(halves)))
    }

    #[inline(always)]
    unsafe fn even(lo: Self, hi: Self) -> Self {
        Avx512(_mm512_permutex2var_ps(lo.0, Self::index_even(), hi.0))
    }
    #[inline(always)]
    unsafe fn odd(lo: Self, hi: Self) -> Self {
        let odd = _mm512_add_epi32(Self::index_even(), _mm512_set1_epi32(1));
        Avx512(_mm512_permutex2var_ps(lo.0, odd, hi.0))
    }
    #[inline(always)]
    unsafe fn index_splat(i: u32) -> __m512i {
        _mm512_set1_epi32(i as i32)
    }
    #[inline(always)]
    unsafe fn index_even() -> __m512i {
        _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30)
    }
    #[inline(always)]
    unsafe fn index_add(a: __m512i, b: __m512i) -> __m512i {
        _mm512_add_epi32(a, b)
    }
    #[inline(always)]
    unsafe fn keep_greater(v: Self, i: __m512i, bv: &mut Self, bi: &mut __m512i) {
        let gt = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v.0, bv.0);
        bv.0 = _mm512_mask_mov_ps(bv.0, gt, v.0);
        *bi = _mm512_mask_mov_epi32(*bi, gt, i);
    }
    #[inline(always)]
    unsafe fn store_index(p: *mut u32, i: __m512i) {
        _mm512_storeu_si512(p.cast(), i)
    }
    #[inline(always)]
    unsafe fn mask_store_index(p: *mut u32, m: __mmask16, i: __m512i) {
        _mm512_mask_storeu_epi32(p.cast(), m, i)
    }
}

// SAFETY: `vmaskmovps` / `vpmaskmovd` never touch a masked-off lane (nor
// fault on one); `supported` checks AVX2 and FMA, the extensions used.
unsafe impl Vector for Avx2 {
    const LANES: usize = 8;
    const TILES: Tiles = TILES_16_REGS;
    type Mask = __m256i;
    type Index = __m256i;

    fn supported() -> bool {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }

    #[inline(always)]
    unsafe fn outline<R>(f: impl FnOnce() -> R) -> R {
        call_opaque(outline_avx2, f)
    }

    #[inline(always)]
    unsafe fn zero() -> Self {
        Avx2(_mm256_setzero_ps())
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        Avx2(_mm256_set1_ps(v))
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Avx2(_mm256_loadu_ps(p))
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self) {
        _mm256_storeu_ps(p, v.0)
    }
    #[inline(always)]
    unsafe fn mask_range(from: usize, to: usize) -> __m256i {
        // lane l is kept when from <= l < to: two compares with 0..8
        let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let below_to = _mm256_cmpgt_epi32(_mm256_set1_epi32(to.min(8) as i32), lane);
        let below_from = _mm256_cmpgt_epi32(_mm256_set1_epi32(from.min(8) as i32), lane);
        _mm256_andnot_si256(below_from, below_to)
    }
    #[inline(always)]
    unsafe fn maskz_load(m: __m256i, p: *const f32) -> Self {
        Avx2(_mm256_maskload_ps(p, m))
    }
    #[inline(always)]
    unsafe fn mask_load_or(fill: Self, m: __m256i, p: *const f32) -> Self {
        let v = _mm256_maskload_ps(p, m);
        Avx2(_mm256_blendv_ps(fill.0, v, _mm256_castsi256_ps(m)))
    }
    #[inline(always)]
    unsafe fn mask_store(p: *mut f32, m: __m256i, v: Self) {
        _mm256_maskstore_ps(p, m, v.0)
    }
    #[inline(always)]
    unsafe fn store_lanes(p: *mut f32, from: usize, to: usize, v: Self) {
        // `vmaskmovps` to memory is microcoded on AMD (Zen 3: ~20 times a
        // plain store's cost); a few scalar stores from a copy are cheaper
        let mut lanes = [0.0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), v.0);
        for (l, &v) in lanes.iter().enumerate().take(to).skip(from) {
            p.wrapping_add(l).write(v);
        }
    }
    #[inline(always)]
    unsafe fn store_lanes_ahead(p: *mut f32, from: usize, to: usize, v: Self) {
        debug_assert!(from < to && to <= 8);
        // one plain store of the lanes moved down by `from` (`vpermps`
        // reads the low 3 bits of each index: the lanes moved past the end
        // are the garbage the caller allows)
        let shift =
            _mm256_add_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(from as i32));
        _mm256_storeu_ps(p.wrapping_add(from), _mm256_permutevar8x32_ps(v.0, shift))
    }
    #[inline(always)]
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
        Avx2(_mm256_fmadd_ps(a.0, b.0, c.0))
    }
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        Avx2(_mm256_add_ps(a.0, b.0))
    }
    #[inline(always)]
    unsafe fn hsum(v: Self) -> f32 {
        // the halving tree, as `_mm512_reduce_add_ps` from its second step:
        // lanes 0..4 + 4..8, then 0..2 + 2..4, then 0 + 1
        let a = _mm_add_ps(_mm256_castps256_ps128(v.0), _mm256_extractf128_ps::<1>(v.0));
        let a = _mm_add_ps(a, _mm_movehl_ps(a, a));
        _mm_cvtss_f32(a) + _mm_cvtss_f32(_mm_movehdup_ps(a))
    }

    #[inline(always)]
    unsafe fn even(lo: Self, hi: Self) -> Self {
        // per 128-bit half: lo 0 2, hi 0 2 | lo 4 6, hi 4 6; then put the
        // 64-bit pairs in order lo 0 2 4 6, hi 0 2 4 6
        let pairs = _mm256_shuffle_ps::<0x88>(lo.0, hi.0);
        Avx2(_mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(_mm256_castps_pd(pairs))))
    }
    #[inline(always)]
    unsafe fn odd(lo: Self, hi: Self) -> Self {
        let pairs = _mm256_shuffle_ps::<0xDD>(lo.0, hi.0);
        Avx2(_mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(_mm256_castps_pd(pairs))))
    }
    #[inline(always)]
    unsafe fn index_splat(i: u32) -> __m256i {
        _mm256_set1_epi32(i as i32)
    }
    #[inline(always)]
    unsafe fn index_even() -> __m256i {
        _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14)
    }
    #[inline(always)]
    unsafe fn index_add(a: __m256i, b: __m256i) -> __m256i {
        _mm256_add_epi32(a, b)
    }
    #[inline(always)]
    unsafe fn keep_greater(v: Self, i: __m256i, bv: &mut Self, bi: &mut __m256i) {
        // ordered compare: false when either side is NaN, as `>` on f32
        let gt = _mm256_cmp_ps::<_CMP_GT_OQ>(v.0, bv.0);
        bv.0 = _mm256_blendv_ps(bv.0, v.0, gt);
        *bi = _mm256_blendv_epi8(*bi, i, _mm256_castps_si256(gt));
    }
    #[inline(always)]
    unsafe fn store_index(p: *mut u32, i: __m256i) {
        _mm256_storeu_si256(p.cast(), i)
    }
    #[inline(always)]
    unsafe fn mask_store_index(p: *mut u32, m: __m256i, i: __m256i) {
        _mm256_maskstore_epi32(p.cast(), m, i)
    }
}
