//! Dense layers in AVX-512 for the few images a lane runs at once.
//!
//! A lane passes a chunk of at most 8 images through a dense layer, so the
//! SGEMMs are `8 x 1280 x 120` (forward), `120 x 8 x 1280` (weight
//! gradient) and `8 x 120 x 1280` (input gradient): `matrixmultiply` pads
//! 8 rows to its 16-row tiles and packs the whole 614 KB weight matrix on
//! every call. Here every product reads its operands where they are, with
//! a register tile chosen for each:
//!
//! - forward: `y[i, o] = sum_k x[i, k] w[o, k]`, both rows contiguous in
//!   `k`: 8 images x 3 outputs of 16-lane partial dot products, reduced
//!   once at the end (24 accumulators);
//! - input gradient: `dx[i, k] = sum_o dy[i, o] w[o, k]`: 8 images x 48
//!   columns of `k`, `dy` broadcast;
//! - weight gradient: `dw[o, k] (+)= sum_i dy[i, o] x[i, k]`: 3 outputs x
//!   96 columns of `k`, summed over the images in registers.
//!
//! Sums run in a fixed order, so the results do not depend on the thread
//! count. Column tails use masked loads and stores.

use crate::dense::Dense;
use std::arch::x86_64::*;

const LANES: usize = 16;

/// `y[n, out] = x[n, in] x Wᵀ + b`; see [`crate::dense::dense_forward`].
///
/// # Safety
/// The CPU must support AVX-512F.
pub unsafe fn forward(s: &Dense, n: usize, x: &[f32], w: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    let (k, o) = (s.inputs, s.outputs);
    let (x, w, y) = (&x[..n * k], &w[..k * o], &mut y[..n * o]);
    let bias = bias.map(|b| &b[..o]);
    for o0 in (0..o).step_by(3) {
        let oj = (o - o0).min(3);
        let mut i0 = 0;
        while i0 < n {
            let mi = match n - i0 {
                8.. => 8,
                4..=7 => 4,
                2..=3 => 2,
                _ => 1,
            };
            let (xs, ws) = (&x[i0 * k..], &w[o0 * k..]);
            let mut sums = [[0.0f32; 3]; 8];
            match (mi, oj) {
                (8, 3) => dot_tile::<8, 3>(xs, ws, k, &mut sums),
                (8, 2) => dot_tile::<8, 2>(xs, ws, k, &mut sums),
                (8, _) => dot_tile::<8, 1>(xs, ws, k, &mut sums),
                (4, 3) => dot_tile::<4, 3>(xs, ws, k, &mut sums),
                (4, 2) => dot_tile::<4, 2>(xs, ws, k, &mut sums),
                (4, _) => dot_tile::<4, 1>(xs, ws, k, &mut sums),
                (2, 3) => dot_tile::<2, 3>(xs, ws, k, &mut sums),
                (2, 2) => dot_tile::<2, 2>(xs, ws, k, &mut sums),
                (2, _) => dot_tile::<2, 1>(xs, ws, k, &mut sums),
                (_, 3) => dot_tile::<1, 3>(xs, ws, k, &mut sums),
                (_, 2) => dot_tile::<1, 2>(xs, ws, k, &mut sums),
                (_, _) => dot_tile::<1, 1>(xs, ws, k, &mut sums),
            }
            for (i, row) in sums.iter().enumerate().take(mi) {
                for (j, &v) in row.iter().enumerate().take(oj) {
                    let b = bias.map_or(0.0, |b| b[o0 + j]);
                    y[(i0 + i) * o + o0 + j] = v + b;
                }
            }
            i0 += mi;
        }
    }
}

/// Backward; see [`crate::dense::dense_backward`] (the caller sums `db`).
///
/// # Safety
/// The CPU must support AVX-512F.
#[allow(clippy::too_many_arguments)]
pub unsafe fn backward(
    s: &Dense,
    n: usize,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    dx: Option<&mut [f32]>,
    dw: &mut [f32],
    accumulate: bool,
) {
    let (k, o) = (s.inputs, s.outputs);
    let (x, w, dy, dw) = (&x[..n * k], &w[..k * o], &dy[..n * o], &mut dw[..k * o]);
    for o0 in (0..o).step_by(3) {
        let oj = (o - o0).min(3);
        for k0 in (0..k).step_by(6 * LANES) {
            let (dws, masks) = (&mut dw[o0 * k + k0..], block_masks::<6>(k - k0));
            match oj {
                3 => weight_grad_tile::<3>(&x[k0..], dy, o0, n, k, o, &masks, dws, accumulate),
                2 => weight_grad_tile::<2>(&x[k0..], dy, o0, n, k, o, &masks, dws, accumulate),
                _ => weight_grad_tile::<1>(&x[k0..], dy, o0, n, k, o, &masks, dws, accumulate),
            }
        }
    }
    if let Some(dx) = dx {
        input_grad(s, n, w, dy, dx);
    }
}

/// `dx[n, in] = dy x W`; see [`crate::dense::dense_input_grad`].
///
/// # Safety
/// The CPU must support AVX-512F.
pub unsafe fn input_grad(s: &Dense, n: usize, w: &[f32], dy: &[f32], dx: &mut [f32]) {
    let (k, o) = (s.inputs, s.outputs);
    let (w, dy, dx) = (&w[..k * o], &dy[..n * o], &mut dx[..n * k]);
    let mut i0 = 0;
    while i0 < n {
        let mi = if n - i0 >= 8 { 8 } else { 1 };
        for k0 in (0..k).step_by(3 * LANES) {
            let (ws, masks) = (&w[k0..], block_masks::<3>(k - k0));
            let (dys, dxs) = (&dy[i0 * o..], &mut dx[i0 * k + k0..]);
            match mi {
                8 => input_grad_tile::<8>(dys, ws, k, o, &masks, dxs),
                _ => input_grad_tile::<1>(dys, ws, k, o, &masks, dxs),
            }
        }
        i0 += mi;
    }
}

/// Lane masks of `KB` consecutive vector blocks when `rem` columns remain:
/// full blocks, then a partial one, then empty ones.
fn block_masks<const KB: usize>(rem: usize) -> [__mmask16; KB] {
    let mut m = [0; KB];
    for (b, mb) in m.iter_mut().enumerate() {
        let k = rem.saturating_sub(b * LANES).min(LANES);
        *mb = ((1u32 << k) - 1) as __mmask16;
    }
    m
}

/// `sums[i][j] = sum_k x[i * k_len + k] * w[j * k_len + k]` for `MI` rows of
/// `x` and `OJ` rows of `w`.
#[target_feature(enable = "avx512f")]
#[inline(never)]
#[allow(clippy::needless_range_loop)] // constant indices keep the sums in registers
unsafe fn dot_tile<const MI: usize, const OJ: usize>(
    x: &[f32],
    w: &[f32],
    k_len: usize,
    sums: &mut [[f32; 3]; 8],
) {
    assert!(x.len() >= MI * k_len && w.len() >= OJ * k_len);
    let (x, w) = (x.as_ptr(), w.as_ptr());
    let mut acc = [[_mm512_setzero_ps(); OJ]; MI];
    let tail = ((1u32 << (k_len % LANES)) - 1) as __mmask16;
    for k in (0..k_len).step_by(LANES) {
        // a whole block, or the masked tail (the loads stay in the rows)
        let m = if k + LANES <= k_len { !0 } else { tail };
        let mut wv = [_mm512_setzero_ps(); OJ];
        for j in 0..OJ {
            wv[j] = _mm512_maskz_loadu_ps(m, w.wrapping_add(j * k_len + k));
        }
        for i in 0..MI {
            let xv = _mm512_maskz_loadu_ps(m, x.wrapping_add(i * k_len + k));
            for j in 0..OJ {
                acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
            }
        }
    }
    for i in 0..MI {
        for j in 0..OJ {
            sums[i][j] = _mm512_reduce_add_ps(acc[i][j]);
        }
    }
}

/// `dx[i * k_len + b * 16 + l] = sum_o dy[i * o_len + o] * w[o * k_len + b * 16 + l]`
/// for `MI` images and the lanes of `KB = masks.len()` column blocks.
#[target_feature(enable = "avx512f")]
#[inline(never)]
#[allow(clippy::needless_range_loop)] // constant indices keep the sums in registers
unsafe fn input_grad_tile<const MI: usize>(
    dy: &[f32],
    w: &[f32],
    k_len: usize,
    o_len: usize,
    masks: &[__mmask16; 3],
    dx: &mut [f32],
) {
    assert!(dy.len() >= MI * o_len && dx.len() >= (MI - 1) * k_len);
    assert!(w.len() > (o_len - 1) * k_len);
    let (dy, w) = (dy.as_ptr(), w.as_ptr());
    let mut acc = [[_mm512_setzero_ps(); 3]; MI];
    for o in 0..o_len {
        let mut wv = [_mm512_setzero_ps(); 3];
        for b in 0..3 {
            wv[b] = _mm512_maskz_loadu_ps(masks[b], w.wrapping_add(o * k_len + b * LANES));
        }
        for i in 0..MI {
            let d = _mm512_set1_ps(*dy.wrapping_add(i * o_len + o));
            for b in 0..3 {
                acc[i][b] = _mm512_fmadd_ps(wv[b], d, acc[i][b]);
            }
        }
    }
    let dx = dx.as_mut_ptr();
    for i in 0..MI {
        for b in 0..3 {
            _mm512_mask_storeu_ps(dx.wrapping_add(i * k_len + b * LANES), masks[b], acc[i][b]);
        }
    }
}

/// `dw[j * k_len + b * 16 + l] (+)= sum_i dy[i * o_len + o0 + j] * x[i * k_len + b * 16 + l]`
/// for `OJ` outputs and the lanes of six column blocks.
#[target_feature(enable = "avx512f")]
#[inline(never)]
#[allow(clippy::needless_range_loop, clippy::too_many_arguments)] // constant indices keep the sums in registers
unsafe fn weight_grad_tile<const OJ: usize>(
    x: &[f32],
    dy: &[f32],
    o0: usize,
    n: usize,
    k_len: usize,
    o_len: usize,
    masks: &[__mmask16; 6],
    dw: &mut [f32],
    accumulate: bool,
) {
    assert!(dy.len() >= n * o_len && o0 + OJ <= o_len && dw.len() >= (OJ - 1) * k_len);
    assert!(n == 0 || x.len() >= (n - 1) * k_len);
    let (x, dy, dwp) = (x.as_ptr(), dy.as_ptr(), dw.as_mut_ptr());
    let mut acc = [[_mm512_setzero_ps(); 6]; OJ];
    if accumulate {
        for j in 0..OJ {
            for b in 0..6 {
                acc[j][b] = _mm512_maskz_loadu_ps(masks[b], dwp.wrapping_add(j * k_len + b * LANES));
            }
        }
    }
    for i in 0..n {
        let mut xv = [_mm512_setzero_ps(); 6];
        for b in 0..6 {
            xv[b] = _mm512_maskz_loadu_ps(masks[b], x.wrapping_add(i * k_len + b * LANES));
        }
        for j in 0..OJ {
            let d = _mm512_set1_ps(*dy.wrapping_add(i * o_len + o0 + j));
            for b in 0..6 {
                acc[j][b] = _mm512_fmadd_ps(xv[b], d, acc[j][b]);
            }
        }
    }
    for j in 0..OJ {
        for b in 0..6 {
            _mm512_mask_storeu_ps(dwp.wrapping_add(j * k_len + b * LANES), masks[b], acc[j][b]);
        }
    }
}
