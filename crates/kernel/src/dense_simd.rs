//! Dense layers in SIMD for the few images a lane runs at once, written
//! once over [`Vector`].
//!
//! A lane passes a chunk of at most 8 images through a dense layer, so the
//! SGEMMs are `8 x 1280 x 120` (forward), `120 x 8 x 1280` (weight
//! gradient) and `8 x 120 x 1280` (input gradient): `matrixmultiply` pads
//! 8 rows to its 16-row tiles and packs the whole 614 KB weight matrix on
//! every call. Here every product reads its operands where they are, with
//! a register tile chosen for each (sizes from [`Vector::TILES`]; AVX-512's
//! in brackets):
//!
//! - forward: `y[i, o] = sum_k x[i, k] w[o, k]`, both rows contiguous in
//!   `k`: images x outputs (8 x 3) of per-lane partial dot products, reduced
//!   once at the end by [`Vector::hsum`];
//! - input gradient: `dx[i, k] = sum_o dy[i, o] w[o, k]`: images x column
//!   blocks of `k` (8 x 3), `dy` broadcast;
//! - weight gradient: `dw[o, k] (+)= sum_i dy[i, o] x[i, k]`: outputs x
//!   column blocks of `k` (3 x 6), summed over the images in registers.
//!
//! Sums run in a fixed order, so the results do not depend on the thread
//! count; and the order of one output's operations does not depend on the
//! tile sizes (only the forward's depends on the lane count). A tile whose
//! columns run past the row's end uses masked loads and stores, which read
//! zeros: the same FMAs as a whole tile, on zeros.

use crate::dense::Dense;
use crate::simd::Vector;

/// `y[n, out] = x[n, in] x Wᵀ + b`; see [`crate::dense::dense_forward`].
///
/// # Safety
/// The CPU must run `V`.
pub unsafe fn forward<V: Vector>(
    s: &Dense,
    n: usize,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    const { assert!(V::TILES.dot_o <= 3 && V::TILES.dot_i <= 8) };
    let (k, o) = (s.inputs, s.outputs);
    let (x, w, y) = (&x[..n * k], &w[..k * o], &mut y[..n * o]);
    let bias = bias.map(|b| &b[..o]);
    for o0 in (0..o).step_by(V::TILES.dot_o) {
        let oj = (o - o0).min(V::TILES.dot_o);
        let mut i0 = 0;
        while i0 < n {
            let mi = match (n - i0).min(V::TILES.dot_i) {
                8.. => 8,
                4..=7 => 4,
                2..=3 => 2,
                _ => 1,
            };
            let (xs, ws) = (&x[i0 * k..], &w[o0 * k..]);
            let mut sums = [[0.0f32; 3]; 8];
            match (mi, oj) {
                (8, 3) => dot_tile::<V, 8, 3>(xs, ws, k, &mut sums),
                (8, 2) => dot_tile::<V, 8, 2>(xs, ws, k, &mut sums),
                (8, _) => dot_tile::<V, 8, 1>(xs, ws, k, &mut sums),
                (4, 3) => dot_tile::<V, 4, 3>(xs, ws, k, &mut sums),
                (4, 2) => dot_tile::<V, 4, 2>(xs, ws, k, &mut sums),
                (4, _) => dot_tile::<V, 4, 1>(xs, ws, k, &mut sums),
                (2, 3) => dot_tile::<V, 2, 3>(xs, ws, k, &mut sums),
                (2, 2) => dot_tile::<V, 2, 2>(xs, ws, k, &mut sums),
                (2, _) => dot_tile::<V, 2, 1>(xs, ws, k, &mut sums),
                (_, 3) => dot_tile::<V, 1, 3>(xs, ws, k, &mut sums),
                (_, 2) => dot_tile::<V, 1, 2>(xs, ws, k, &mut sums),
                (_, _) => dot_tile::<V, 1, 1>(xs, ws, k, &mut sums),
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
/// The CPU must run `V`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn backward<V: Vector>(
    s: &Dense,
    n: usize,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    dx: Option<&mut [f32]>,
    dw: &mut [f32],
    accumulate: bool,
) {
    const { assert!(V::TILES.dw_o <= 3 && (V::TILES.dw_k == 6 || V::TILES.dw_k == 3)) };
    let (k, o) = (s.inputs, s.outputs);
    let (x, w, dy, dw) = (&x[..n * k], &w[..k * o], &dy[..n * o], &mut dw[..k * o]);
    for o0 in (0..o).step_by(V::TILES.dw_o) {
        let oj = (o - o0).min(V::TILES.dw_o);
        for k0 in (0..k).step_by(V::TILES.dw_k * V::LANES) {
            let (xs, dws, rem) = (&x[k0..], &mut dw[o0 * k + k0..], k - k0);
            // dw_k is a constant: the arms of the other width go
            match (oj, V::TILES.dw_k) {
                (3, 6) => weight_grad_tile::<V, 3, 6>(xs, dy, o0, n, k, o, rem, dws, accumulate),
                (2, 6) => weight_grad_tile::<V, 2, 6>(xs, dy, o0, n, k, o, rem, dws, accumulate),
                (_, 6) => weight_grad_tile::<V, 1, 6>(xs, dy, o0, n, k, o, rem, dws, accumulate),
                (3, _) => weight_grad_tile::<V, 3, 3>(xs, dy, o0, n, k, o, rem, dws, accumulate),
                (2, _) => weight_grad_tile::<V, 2, 3>(xs, dy, o0, n, k, o, rem, dws, accumulate),
                (_, _) => weight_grad_tile::<V, 1, 3>(xs, dy, o0, n, k, o, rem, dws, accumulate),
            }
        }
    }
    if let Some(dx) = dx {
        input_grad::<V>(s, n, w, dy, dx);
    }
}

/// `dx[n, in] = dy x W`; see [`crate::dense::dense_input_grad`].
///
/// # Safety
/// The CPU must run `V`.
pub unsafe fn input_grad<V: Vector>(s: &Dense, n: usize, w: &[f32], dy: &[f32], dx: &mut [f32]) {
    const { assert!(matches!(V::TILES.dx_i, 8 | 4) && matches!(V::TILES.dx_k, 3 | 2)) };
    let (k, o) = (s.inputs, s.outputs);
    let (w, dy, dx) = (&w[..k * o], &dy[..n * o], &mut dx[..n * k]);
    let mut i0 = 0;
    while i0 < n {
        let mi = if n - i0 >= V::TILES.dx_i { V::TILES.dx_i } else { 1 };
        for k0 in (0..k).step_by(V::TILES.dx_k * V::LANES) {
            let (ws, rem) = (&w[k0..], k - k0);
            let (dys, dxs) = (&dy[i0 * o..], &mut dx[i0 * k + k0..]);
            match (mi, V::TILES.dx_k) {
                (8, 3) => input_grad_tile::<V, 8, 3>(dys, ws, k, o, rem, dxs),
                (1, 3) => input_grad_tile::<V, 1, 3>(dys, ws, k, o, rem, dxs),
                (8, _) => input_grad_tile::<V, 8, 2>(dys, ws, k, o, rem, dxs),
                (4, 3) => input_grad_tile::<V, 4, 3>(dys, ws, k, o, rem, dxs),
                (4, _) => input_grad_tile::<V, 4, 2>(dys, ws, k, o, rem, dxs),
                (_, _) => input_grad_tile::<V, 1, 2>(dys, ws, k, o, rem, dxs),
            }
        }
        i0 += mi;
    }
}

/// The lane masks of `KB` consecutive vector blocks when `rem` columns
/// remain: full blocks, then a partial one, then empty ones.
#[inline(always)]
unsafe fn block_masks<V: Vector, const KB: usize>(rem: usize) -> [V::Mask; KB] {
    std::array::from_fn(|b| V::mask_first(rem.saturating_sub(b * V::LANES)))
}

/// Block `b` at `p`: a plain load, or, when `MASKED`, the lanes of `m[b]`
/// and zeros.
#[inline(always)]
unsafe fn load<V: Vector, const MASKED: bool, const KB: usize>(
    m: &[V::Mask; KB],
    b: usize,
    p: *const f32,
) -> V {
    if MASKED {
        V::maskz_load(m[b], p)
    } else {
        V::load(p)
    }
}

/// Store block `b` at `p`: all lanes, or, when `MASKED`, the lanes of `m[b]`.
#[inline(always)]
unsafe fn store<V: Vector, const MASKED: bool, const KB: usize>(
    m: &[V::Mask; KB],
    b: usize,
    p: *mut f32,
    v: V,
) {
    if MASKED {
        V::mask_store(p, m[b], v)
    } else {
        V::store(p, v)
    }
}

/// `sums[i][j] = sum_k x[i * k_len + k] * w[j * k_len + k]` for `MI` rows of
/// `x` and `OJ` rows of `w`.
unsafe fn dot_tile<V: Vector, const MI: usize, const OJ: usize>(
    x: &[f32],
    w: &[f32],
    k_len: usize,
    sums: &mut [[f32; 3]; 8],
) {
    assert!(x.len() >= MI * k_len && w.len() >= OJ * k_len);
    let (x, w) = (x.as_ptr(), w.as_ptr());
    V::outline(
        #[inline(always)]
        || {
            let lanes = V::LANES;
            let mut acc = [[V::zero(); OJ]; MI];
            // whole blocks, then the tail with masked loads (they stay in
            // the rows and read zeros past them)
            let whole = k_len - k_len % lanes;
            for k in (0..whole).step_by(lanes) {
                dot_step::<V, MI, OJ, false>(&mut acc, x, w, k_len, k);
            }
            if whole < k_len {
                dot_step::<V, MI, OJ, true>(&mut acc, x, w, k_len, whole);
            }
            for (s, a) in sums.iter_mut().zip(&acc) {
                for (s, a) in s.iter_mut().zip(a) {
                    *s = V::hsum(*a);
                }
            }
        },
    )
}

/// One vector block of columns `k..` of [`dot_tile`]: whole, or (`MASKED`)
/// the row's last `k_len - k` columns and zeros.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // constant indices keep the sums in registers
unsafe fn dot_step<V: Vector, const MI: usize, const OJ: usize, const MASKED: bool>(
    acc: &mut [[V; OJ]; MI],
    x: *const f32,
    w: *const f32,
    k_len: usize,
    k: usize,
) {
    let m = [V::mask_first(k_len - k)];
    let mut wv = [V::zero(); OJ];
    for j in 0..OJ {
        wv[j] = load::<V, MASKED, 1>(&m, 0, w.wrapping_add(j * k_len + k));
    }
    for i in 0..MI {
        let xv = load::<V, MASKED, 1>(&m, 0, x.wrapping_add(i * k_len + k));
        for j in 0..OJ {
            acc[i][j] = V::fma(xv, wv[j], acc[i][j]);
        }
    }
}

/// `dx[i * k_len + b * LANES + l] = sum_o dy[i * o_len + o] * w[o * k_len +
/// b * LANES + l]` for `MI` images and the lanes of `KB` column blocks, of
/// which the first `rem` columns are in the row.
unsafe fn input_grad_tile<V: Vector, const MI: usize, const KB: usize>(
    dy: &[f32],
    w: &[f32],
    k_len: usize,
    o_len: usize,
    rem: usize,
    dx: &mut [f32],
) {
    assert!(dy.len() >= MI * o_len && dx.len() >= (MI - 1) * k_len);
    assert!(w.len() > (o_len - 1) * k_len);
    V::outline(
        #[inline(always)]
        || {
            if rem >= KB * V::LANES {
                input_grad_body::<V, MI, KB, false>(dy, w, k_len, o_len, rem, dx)
            } else {
                input_grad_body::<V, MI, KB, true>(dy, w, k_len, o_len, rem, dx)
            }
        },
    )
}

/// [`input_grad_tile`] with plain loads and stores, or masked ones.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // constant indices keep the sums in registers
unsafe fn input_grad_body<V: Vector, const MI: usize, const KB: usize, const MASKED: bool>(
    dy: &[f32],
    w: &[f32],
    k_len: usize,
    o_len: usize,
    rem: usize,
    dx: &mut [f32],
) {
    let (dy, w, lanes) = (dy.as_ptr(), w.as_ptr(), V::LANES);
    let masks = block_masks::<V, KB>(rem);
    let mut acc = [[V::zero(); KB]; MI];
    for o in 0..o_len {
        let mut wv = [V::zero(); KB];
        for b in 0..KB {
            wv[b] = load::<V, MASKED, KB>(&masks, b, w.wrapping_add(o * k_len + b * lanes));
        }
        for i in 0..MI {
            let d = V::splat(*dy.wrapping_add(i * o_len + o));
            for b in 0..KB {
                acc[i][b] = V::fma(wv[b], d, acc[i][b]);
            }
        }
    }
    let dx = dx.as_mut_ptr();
    for i in 0..MI {
        for b in 0..KB {
            store::<V, MASKED, KB>(&masks, b, dx.wrapping_add(i * k_len + b * lanes), acc[i][b]);
        }
    }
}

/// `dw[j * k_len + b * LANES + l] (+)= sum_i dy[i * o_len + o0 + j] *
/// x[i * k_len + b * LANES + l]` for `OJ` outputs and the lanes of `KB`
/// column blocks, of which the first `rem` columns are in the row.
#[allow(clippy::too_many_arguments)]
unsafe fn weight_grad_tile<V: Vector, const OJ: usize, const KB: usize>(
    x: &[f32],
    dy: &[f32],
    o0: usize,
    n: usize,
    k_len: usize,
    o_len: usize,
    rem: usize,
    dw: &mut [f32],
    accumulate: bool,
) {
    assert!(dy.len() >= n * o_len && o0 + OJ <= o_len && dw.len() >= (OJ - 1) * k_len);
    assert!(n == 0 || x.len() >= (n - 1) * k_len);
    V::outline(
        #[inline(always)]
        || {
            if rem >= KB * V::LANES {
                weight_grad_body::<V, OJ, KB, false>(x, dy, o0, n, k_len, o_len, rem, dw, accumulate)
            } else {
                weight_grad_body::<V, OJ, KB, true>(x, dy, o0, n, k_len, o_len, rem, dw, accumulate)
            }
        },
    )
}

/// [`weight_grad_tile`] with plain loads and stores, or masked ones.
#[inline(always)]
#[allow(clippy::needless_range_loop, clippy::too_many_arguments)] // constant indices keep the sums in registers
unsafe fn weight_grad_body<V: Vector, const OJ: usize, const KB: usize, const MASKED: bool>(
    x: &[f32],
    dy: &[f32],
    o0: usize,
    n: usize,
    k_len: usize,
    o_len: usize,
    rem: usize,
    dw: &mut [f32],
    accumulate: bool,
) {
    let (x, dy, dwp, lanes) = (x.as_ptr(), dy.as_ptr(), dw.as_mut_ptr(), V::LANES);
    let masks = block_masks::<V, KB>(rem);
    let mut acc = [[V::zero(); KB]; OJ];
    if accumulate {
        for j in 0..OJ {
            for b in 0..KB {
                acc[j][b] = load::<V, MASKED, KB>(&masks, b, dwp.wrapping_add(j * k_len + b * lanes));
            }
        }
    }
    for i in 0..n {
        let mut xv = [V::zero(); KB];
        for b in 0..KB {
            xv[b] = load::<V, MASKED, KB>(&masks, b, x.wrapping_add(i * k_len + b * lanes));
        }
        for j in 0..OJ {
            let d = V::splat(*dy.wrapping_add(i * o_len + o0 + j));
            for b in 0..KB {
                acc[j][b] = V::fma(xv[b], d, acc[j][b]);
            }
        }
    }
    for j in 0..OJ {
        for b in 0..KB {
            store::<V, MASKED, KB>(&masks, b, dwp.wrapping_add(j * k_len + b * lanes), acc[j][b]);
        }
    }
}
