//! The 3x3, stride-2 max pool forward in AVX-512: sixteen outputs of a row
//! at a time.
//!
//! For one input row, two vector loads hold 32 consecutive columns, and two
//! permutes split them into the even and the odd columns: lane `j` of the
//! three candidate vectors is then columns `2j`, `2j + 1` and `2j + 2` of
//! output `j`'s window. The nine candidates are compared with the running
//! best in row-major window order with a strict `>`, exactly as the
//! portable code in [`crate::pool`] does: the same value and index, ties
//! and NaN included.
//! Columns and rows past the input's edge (ceil mode's clipped windows) load
//! as -inf or are skipped, so they never win.

use crate::pool::MaxPool2d;
use std::arch::x86_64::*;

const LANES: usize = 16;

/// Forward pass of a 3x3, stride-2 pool over `n` images.
///
/// # Safety
/// The CPU must support AVX-512F; `s.size == 3 && s.stride == 2`.
pub unsafe fn forward(s: &MaxPool2d, n: usize, x: &[f32], y: &mut [f32], argmax: &mut [u32]) {
    assert!(s.size == 3 && s.stride == 2);
    let (ho, wo, plane) = (s.out_h(), s.out_w(), s.h * s.w);
    let x = &x[..n * s.in_len()];
    let y = &mut y[..n * s.out_len()];
    let argmax = &mut argmax[..n * s.out_len()];
    for p in 0..n * s.c {
        let base = p % s.c * plane;
        for oy in 0..ho {
            for xb in (0..wo).step_by(LANES) {
                let lanes = (wo - xb).min(LANES);
                let at = p * ho * wo + oy * wo + xb;
                window_block(
                    s,
                    &x[p * plane..(p + 1) * plane],
                    base,
                    oy,
                    xb,
                    lanes,
                    &mut y[at..],
                    &mut argmax[at..],
                );
            }
        }
    }
}

/// Outputs `xb..xb + lanes` of output row `oy` of one plane `src`, whose
/// first element has image index `base`.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn window_block(
    s: &MaxPool2d,
    src: &[f32],
    base: usize,
    oy: usize,
    xb: usize,
    lanes: usize,
    y: &mut [f32],
    argmax: &mut [u32],
) {
    assert!(src.len() == s.h * s.w && y.len() >= lanes && argmax.len() >= lanes);
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    let neg_inf = _mm512_set1_ps(f32::NEG_INFINITY);
    // columns of the block's first window onwards that lie inside the row
    let rem = s.w - 2 * xb;
    let inside = |from: usize| -> __mmask16 {
        let k = rem.saturating_sub(from).min(LANES);
        ((1u32 << k) - 1) as __mmask16
    };
    let (m0, m16, m2, m18) = (inside(0), inside(16), inside(2), inside(18));
    let (mut bv, mut bi) = (neg_inf, _mm512_setzero_si512());
    let y0 = 2 * oy;
    for iy in y0..(y0 + 3).min(s.h) {
        let row = src.as_ptr().add(iy * s.w + 2 * xb);
        // masked loads touch only the columns inside the row
        let a = _mm512_mask_loadu_ps(neg_inf, m0, row);
        let b = _mm512_mask_loadu_ps(neg_inf, m16, row.wrapping_add(16));
        let c = _mm512_mask_loadu_ps(neg_inf, m2, row.wrapping_add(2));
        let d = _mm512_mask_loadu_ps(neg_inf, m18, row.wrapping_add(18));
        let e0 = _mm512_permutex2var_ps(a, even, b);
        let o = _mm512_permutex2var_ps(a, odd, b);
        let e1 = _mm512_permutex2var_ps(c, even, d);
        let i0 = _mm512_add_epi32(_mm512_set1_epi32((base + iy * s.w + 2 * xb) as i32), even);
        let i1 = _mm512_add_epi32(i0, _mm512_set1_epi32(1));
        let i2 = _mm512_add_epi32(i0, _mm512_set1_epi32(2));
        if iy == y0 {
            (bv, bi) = (e0, i0);
        } else {
            keep_greater(e0, i0, &mut bv, &mut bi);
        }
        keep_greater(o, i1, &mut bv, &mut bi);
        keep_greater(e1, i2, &mut bv, &mut bi);
    }
    let out = ((1u32 << lanes) - 1) as __mmask16;
    _mm512_mask_storeu_ps(y.as_mut_ptr(), out, bv);
    _mm512_mask_storeu_epi32(argmax.as_mut_ptr().cast(), out, bi);
}

/// `(bv, bi) = (v, i)` in the lanes where `v > bv`.
#[target_feature(enable = "avx512f")]
fn keep_greater(v: __m512, i: __m512i, bv: &mut __m512, bi: &mut __m512i) {
    let gt = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, *bv);
    *bv = _mm512_mask_mov_ps(*bv, gt, v);
    *bi = _mm512_mask_mov_epi32(*bi, gt, i);
}
