//! The 3x3, stride-2 max pool forward in SIMD, written once over
//! [`Vector`]: `LANES` outputs of a row at a time.
//!
//! For one input row, two vector loads hold `2 * LANES` consecutive columns,
//! and [`Vector::even`] / [`Vector::odd`] split them into the even and the
//! odd columns (AVX-512: one `vpermt2ps` each; AVX2: `vshufps` with 0x88 or
//! 0xDD, which picks the even or odd elements of each 128-bit half of the
//! pair, then `vpermpd` 0xD8 to put the 64-bit pieces in order). Lane `j`
//! of the three candidate vectors is then columns `2j`, `2j + 1` and
//! `2j + 2` of output `j`'s window. The nine candidates are compared with
//! the running best in row-major window order with a strict `>` (an ordered
//! compare, false on NaN, then a masked move or a blend), exactly as the
//! portable code in [`crate::pool`] does: the same value and index, ties and
//! NaN included. Columns and rows past the input's edge (ceil mode's clipped
//! windows) load as -inf or are skipped, so they never win.

use crate::pool::MaxPool2d;
use crate::simd::Vector;

/// Forward pass of a 3x3, stride-2 pool over `n` images.
///
/// # Safety
/// The CPU must run `V`; `s.size == 3 && s.stride == 2`.
pub unsafe fn forward<V: Vector>(s: &MaxPool2d, n: usize, x: &[f32], y: &mut [f32], argmax: &mut [u32]) {
    assert!(s.size == 3 && s.stride == 2);
    let (ho, wo, plane) = (s.out_h(), s.out_w(), s.h * s.w);
    let x = &x[..n * s.in_len()];
    let y = &mut y[..n * s.out_len()];
    let argmax = &mut argmax[..n * s.out_len()];
    for p in 0..n * s.c {
        let base = p % s.c * plane;
        let src = &x[p * plane..(p + 1) * plane];
        let out = p * ho * wo..(p + 1) * ho * wo;
        // one outlined call per plane: a call per block of outputs cost
        // about as much as the block's compares
        V::outline(
            #[inline(always)]
            || {
                // V::LANES named here, not captured: a captured value is
                // memory to the outlined body, and the step becomes a
                // division per row
                let (y, argmax, lanes) = (&mut y[out.clone()], &mut argmax[out.clone()], V::LANES);
                for oy in 0..ho {
                    for xb in (0..wo).step_by(lanes) {
                        let count = (wo - xb).min(lanes);
                        let at = oy * wo + xb;
                        window_block::<V>(s, src, base, oy, xb, count, &mut y[at..], &mut argmax[at..]);
                    }
                }
            },
        )
    }
}

/// Outputs `xb..xb + count` of output row `oy` of one plane `src`, whose
/// first element has image index `base`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn window_block<V: Vector>(
    s: &MaxPool2d,
    src: &[f32],
    base: usize,
    oy: usize,
    xb: usize,
    count: usize,
    y: &mut [f32],
    argmax: &mut [u32],
) {
    assert!(src.len() == s.h * s.w && y.len() >= count && argmax.len() >= count);
    let lanes = V::LANES;
    let neg_inf = V::splat(f32::NEG_INFINITY);
    // columns of the block's first window onwards that lie inside the row
    let rem = s.w - 2 * xb;
    let (even, one) = (V::index_even(), V::index_splat(1));
    let (mut bv, mut bi) = (neg_inf, V::index_splat(0));
    let y0 = 2 * oy;
    for iy in y0..(y0 + 3).min(s.h) {
        let row = src.as_ptr().add(iy * s.w + 2 * xb);
        // the masked loads touch only the columns inside the row
        let a = load::<V>(rem, 0, row, neg_inf);
        let b = load::<V>(rem, lanes, row.wrapping_add(lanes), neg_inf);
        let c = load::<V>(rem, 2, row.wrapping_add(2), neg_inf);
        let d = load::<V>(rem, lanes + 2, row.wrapping_add(lanes + 2), neg_inf);
        let (e0, o, e1) = (V::even(a, b), V::odd(a, b), V::even(c, d));
        let i0 = V::index_add(V::index_splat((base + iy * s.w + 2 * xb) as u32), even);
        let i1 = V::index_add(i0, one);
        let i2 = V::index_add(i1, one);
        if iy == y0 {
            (bv, bi) = (e0, i0);
        } else {
            V::keep_greater(e0, i0, &mut bv, &mut bi);
        }
        V::keep_greater(o, i1, &mut bv, &mut bi);
        V::keep_greater(e1, i2, &mut bv, &mut bi);
    }
    if count == lanes {
        V::store(y.as_mut_ptr(), bv);
        V::store_index(argmax.as_mut_ptr(), bi);
    } else {
        let out = V::mask_first(count);
        V::mask_store(y.as_mut_ptr(), out, bv);
        V::mask_store_index(argmax.as_mut_ptr(), out, bi);
    }
}

/// `LANES` columns from `p`, which is `from` columns past the block's first
/// window, with `rem` columns of the row left from there: a whole vector
/// when the load stays in the row, else a masked one (-inf outside). Decided
/// per load: near a row's end only the last loads need the mask (AVX2's
/// masked load and blend cost more). A function, not a closure, to be
/// inlined by force: a closure compiled on its own would lack the target
/// features, and its intrinsics would become calls.
#[inline(always)]
unsafe fn load<V: Vector>(rem: usize, from: usize, p: *const f32, neg_inf: V) -> V {
    if rem >= from + V::LANES {
        V::load(p)
    } else {
        V::mask_load_or(neg_inf, V::mask_first(rem.saturating_sub(from)), p)
    }
}
