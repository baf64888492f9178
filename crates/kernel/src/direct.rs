//! Stride-1 convolution without im2col: AVX-512 kernels over zero-padded,
//! flattened planes.
//!
//! Pad every input plane to `hp x wp` and read it as one flat row. Output
//! pixel `(y, x)` then needs padded element `(y + ky) * wp + (x + kx)`, which
//! is `q + ky * wp + kx` for `q = y * wp + x`: a 1-D correlation over `q`
//! with `kh * kw` fixed offsets. Sixteen consecutive `q` are therefore one
//! unaligned vector load per tap, whatever the plane width, and a register
//! tile of 4 output planes x 96 pixels does 4 weight broadcasts, 6 loads
//! and 24 FMAs per tap: nothing is packed, and no `C*9`-times-larger im2col
//! matrix is written or read. The `wp - wo`
//! columns at the end of each padded row are not output pixels; their lanes
//! are computed and never stored (12% extra work at 16x16, 25% at 8x8).
//!
//! - forward: `y[f] = b[f] + sum_c sum_tap xp[c][q + off(tap)] * w[f, c, tap]`;
//! - input gradient: the same correlation run over `dy` padded by
//!   `k - 1 - pad`, with the weights transposed and flipped (a "full"
//!   convolution), written straight into `dx`: no col2im;
//! - weight gradient: `dw[f, c, tap] = sum_q dyq[f][q] * xp[c][q + off(tap)]`
//!   where `dyq` is `dy` spread to width `wp` with zeros in the extra
//!   columns (the bias gradient is summed in the same pass): tiles of 3
//!   filters x 9 taps (27 accumulators of 16-lane partial sums) run over
//!   every image of the chunk in registers and are reduced once.
//!
//! The two entries, [`forward`] and [`backward`], are `unsafe` only because
//! the CPU must have AVX-512F; each checks every slice length its pointer
//! arithmetic relies on first. [`crate::conv`] calls them when the CPU has
//! AVX-512F and the layer has a [`Conv2d::direct_shape`] (3x3, stride 1,
//! padding at most 2); everything else goes through im2col + SGEMM.

use crate::conv::Conv2d;
use std::arch::x86_64::*;
use std::mem::MaybeUninit;

/// Lanes of one AVX-512 vector of `f32`.
const LANES: usize = 16;
/// Zeros after the last padded plane, so that a vector load starting at the
/// last output pixel of the last channel stays inside the buffer.
const SLACK: usize = LANES;

/// A stride-1 correlation of `ci` zero-padded planes `hp x wp` with a
/// `kh x kw` kernel into `co` planes `(hp - kh + 1) x (wp - kw + 1)`.
#[derive(Clone, Copy, Debug)]
struct Corr {
    ci: usize,
    co: usize,
    hp: usize,
    wp: usize,
    kh: usize,
    kw: usize,
}

impl Corr {
    fn ho(&self) -> usize {
        self.hp + 1 - self.kh
    }
    fn wo(&self) -> usize {
        self.wp + 1 - self.kw
    }
    fn plane(&self) -> usize {
        self.hp * self.wp
    }
    /// Floats of the padded input: `ci` planes and the slack.
    fn padded_len(&self) -> usize {
        self.ci * self.plane() + SLACK
    }
    /// One past the flat index `q` of the last output pixel.
    fn q_len(&self) -> usize {
        (self.ho() - 1) * self.wp + self.wo()
    }
    /// Vector blocks covering `0..q_len`.
    fn blocks(&self) -> usize {
        self.q_len().div_ceil(LANES)
    }
    /// Floats of one spread gradient plane (see [`spread_rows`]): whole
    /// rows of `wp`, rounded up to whole vectors.
    fn dyq_len(&self) -> usize {
        (self.ho() * self.wp).next_multiple_of(LANES)
    }
    /// Output planes rounded up to whole tiles of 4.
    fn co_pad(&self) -> usize {
        self.co.next_multiple_of(4)
    }
    /// Floats of the weight table `[ci * kh * kw, co_pad]`.
    fn taps_len(&self) -> usize {
        self.ci * self.kh * self.kw * self.co_pad()
    }
}

/// The forward correlation of layer `s`.
fn forward_corr(s: &Conv2d) -> Corr {
    Corr { ci: s.c_in, co: s.c_out, hp: s.h + 2 * s.pad, wp: s.w + 2 * s.pad, kh: s.kh, kw: s.kw }
}

/// The input-gradient correlation: `dy` padded by `k - 1 - pad` on each
/// side, `c_out` planes in, `c_in` planes out.
fn input_grad_corr(s: &Conv2d) -> Corr {
    let (py, px) = (s.kh - 1 - s.pad, s.kw - 1 - s.pad);
    Corr { ci: s.c_out, co: s.c_in, hp: s.out_h() + 2 * py, wp: s.out_w() + 2 * px, kh: s.kh, kw: s.kw }
}

/// Scratch floats [`forward`] needs.
pub fn forward_scratch_len(s: &Conv2d) -> usize {
    let g = forward_corr(s);
    g.taps_len() + g.padded_len()
}

/// Scratch floats [`backward`] needs for `n` images.
pub fn backward_scratch_len(s: &Conv2d, n: usize) -> usize {
    let (g, d) = (forward_corr(s), input_grad_corr(s));
    let dyq = s.c_out * g.dyq_len();
    d.taps_len() + n * (g.padded_len() + dyq) + d.padded_len()
}

/// Copy `src[c, h, w]` into `dst[c, h + 2*py, w + 2*px]` with zero borders,
/// and zero the slack after it.
#[target_feature(enable = "avx512f")]
fn pad_planes(src: &[f32], c: usize, h: usize, w: usize, py: usize, px: usize, dst: &mut [f32]) {
    let (hp, wp) = (h + 2 * py, w + 2 * px);
    let (src, dst) = (&src[..c * h * w], &mut dst[..c * hp * wp + SLACK]);
    let zero = _mm512_setzero_ps();
    // Vector steps along a padded row: the lanes to store, and the lanes
    // that come from the source row (the rest are padding). Every row has
    // the same steps, so there is no call per row (a `fill` of one float
    // per row edge was a `memset` call, which cost more than the copy).
    let steps = wp.div_ceil(LANES);
    let step_masks = |k: usize| -> (__mmask16, __mmask16) {
        let x0 = k * LANES;
        let store = lane_mask(wp - x0);
        // lanes l with px <= x0 + l < px + w
        let from = px.saturating_sub(x0).min(LANES);
        let to = (px + w).saturating_sub(x0).min(LANES);
        (store, lane_mask(to) & !lane_mask(from))
    };
    let (planes, slack) = dst.split_at_mut(c * hp * wp);
    // SAFETY: `slack` holds SLACK = 16 floats.
    unsafe { _mm512_storeu_ps(slack.as_mut_ptr(), zero) };
    for (sp, dp) in src.chunks_exact(h * w).zip(planes.chunks_exact_mut(hp * wp)) {
        for (r, drow) in dp.chunks_exact_mut(wp).enumerate() {
            let inside = r >= py && r < py + h;
            for k in 0..steps {
                let (store, load) = step_masks(k);
                let x0 = k * LANES;
                // SAFETY: `store` keeps the store inside `drow`; `load` keeps
                // the load inside source row r - py (columns 0..w).
                unsafe {
                    let v = if inside {
                        let srow = sp.as_ptr().add((r - py) * w);
                        _mm512_maskz_loadu_ps(load, srow.wrapping_add(x0).wrapping_sub(px))
                    } else {
                        zero
                    };
                    _mm512_mask_storeu_ps(drow.as_mut_ptr().wrapping_add(x0), store, v);
                }
            }
        }
    }
}

/// Forward pass of `n` images (see the module docs). `scratch` holds at
/// least [`forward_scratch_len`] floats.
///
/// # Safety
/// The CPU must support AVX-512F and `s.direct_shape()` hold.
#[allow(clippy::too_many_arguments)]
pub unsafe fn forward(
    s: &Conv2d,
    n: usize,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    scratch: &mut [f32],
) {
    let g = forward_corr(s);
    assert!(x.len() >= n * s.in_len() && y.len() >= n * s.out_len(), "conv direct: x or y too short");
    assert!(w.len() >= s.weight_len(), "conv direct: w too short");
    assert!(bias.is_none_or(|b| b.len() >= s.c_out), "conv direct: bias too short");
    let (taps, rest) = scratch.split_at_mut(g.taps_len());
    let xp = &mut rest[..g.padded_len()];
    // taps[(c, tap), f] = w[f, c, tap]: the f values of one tap side by side
    let (k, cp) = (s.col_rows(), g.co_pad());
    taps.fill(0.0);
    for (f, wf) in w[..s.weight_len()].chunks_exact(k).enumerate() {
        for (t, &v) in wf.iter().enumerate() {
            taps[t * cp + f] = v;
        }
    }
    for i in 0..n {
        pad_planes(&x[i * s.in_len()..], s.c_in, s.h, s.w, s.pad, s.pad, xp);
        let yi = &mut y[i * s.out_len()..(i + 1) * s.out_len()];
        correlate(&g, xp, taps, bias, yi);
    }
}

/// Backward pass of `n` images, same contract as
/// [`crate::conv::conv2d_backward`]. `scratch` holds at least
/// [`backward_scratch_len`] floats.
///
/// # Safety
/// The CPU must support AVX-512F and `s.direct_shape()` hold.
#[allow(clippy::too_many_arguments)]
pub unsafe fn backward(
    s: &Conv2d,
    n: usize,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    dx: Option<&mut [f32]>,
    dw: &mut [f32],
    db: Option<&mut [f32]>,
    scratch: &mut [f32],
    accumulate: bool,
) {
    let (g, d) = (forward_corr(s), input_grad_corr(s));
    assert!(x.len() >= n * s.in_len() && dy.len() >= n * s.out_len(), "conv direct: x or dy too short");
    assert!(w.len() >= s.weight_len() && dw.len() >= s.weight_len(), "conv direct: w or dw too short");
    let (taps, rest) = scratch.split_at_mut(d.taps_len());
    let (xps, rest) = rest.split_at_mut(n * g.padded_len());
    let (dyqs, rest) = rest.split_at_mut(n * s.c_out * g.dyq_len());
    let dyp = &mut rest[..d.padded_len()];
    let (ho, wo, wp) = (s.out_h(), s.out_w(), g.wp);
    let dyq_len = g.dyq_len();
    let mut db = db.map(|db| &mut db[..s.c_out]);
    if !accumulate {
        if let Some(db) = db.as_deref_mut() {
            db.fill(0.0);
        }
    }
    for i in 0..n {
        pad_planes(&x[i * s.in_len()..], s.c_in, s.h, s.w, s.pad, s.pad, &mut xps[i * g.padded_len()..]);
        let dyi = &dy[i * s.out_len()..(i + 1) * s.out_len()];
        let dyq = &mut dyqs[i * s.c_out * dyq_len..(i + 1) * s.c_out * dyq_len];
        for (f, (src, dst)) in dyi.chunks_exact(ho * wo).zip(dyq.chunks_exact_mut(dyq_len)).enumerate() {
            let sum = spread_rows(src, ho, wo, wp, dst);
            if let Some(db) = db.as_deref_mut() {
                db[f] += sum;
            }
        }
    }
    weight_grad(&g, n, xps, dyqs, dw, accumulate);
    if let Some(dx) = dx {
        assert!(dx.len() >= n * s.in_len(), "conv direct: dx too short");
        // taps[(f, tap), c] = w[f, c, flipped tap]
        let (k, cp, kk) = (s.col_rows(), d.co_pad(), s.kh * s.kw);
        taps.fill(0.0);
        for (f, wf) in w[..s.weight_len()].chunks_exact(k).enumerate() {
            for (c, wfc) in wf.chunks_exact(kk).enumerate() {
                for (t, &v) in wfc.iter().enumerate() {
                    taps[(f * kk + kk - 1 - t) * cp + c] = v;
                }
            }
        }
        let (py, px) = (s.kh - 1 - s.pad, s.kw - 1 - s.pad);
        for i in 0..n {
            pad_planes(&dy[i * s.out_len()..], s.c_out, ho, wo, py, px, dyp);
            correlate(&d, dyp, taps, None, &mut dx[i * s.in_len()..(i + 1) * s.in_len()]);
        }
    }
}

/// `out[co, ho, wo] = correlation of xp (padded, see [`Corr`]) with the
/// weight table `taps[ci * kh * kw, co_pad]`, plus `bias`.
///
/// Register tiles of [`TILE_F`] output planes x up to [`TILE_Q`] vector
/// blocks of pixels; the pixel groups are the outer loop, so a group's
/// input stays in L1 while every filter tile reads it.
unsafe fn correlate(g: &Corr, xp: &[f32], taps: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
    assert!(xp.len() >= g.padded_len() && taps.len() >= g.taps_len() && out.len() >= g.co * g.ho() * g.wo());
    assert!(bias.is_none_or(|b| b.len() >= g.co));
    let mut offs = [0usize; 9];
    for (t, o) in offs.iter_mut().enumerate().take(g.kh * g.kw) {
        *o = t / g.kw * g.wp + t % g.kw;
    }
    let offs = &offs[..g.kh * g.kw];
    let blocks = g.blocks();
    let mut b0 = 0;
    while b0 < blocks {
        let qb = (blocks - b0).min(TILE_Q);
        for f0 in (0..g.co).step_by(TILE_F) {
            match qb {
                6 => correlate_tile::<6>(g, offs, xp, taps, f0, b0, bias, out),
                5 => correlate_tile::<5>(g, offs, xp, taps, f0, b0, bias, out),
                4 => correlate_tile::<4>(g, offs, xp, taps, f0, b0, bias, out),
                3 => correlate_tile::<3>(g, offs, xp, taps, f0, b0, bias, out),
                2 => correlate_tile::<2>(g, offs, xp, taps, f0, b0, bias, out),
                _ => correlate_tile::<1>(g, offs, xp, taps, f0, b0, bias, out),
            }
        }
        b0 += qb;
    }
}

/// Output planes per register tile of [`correlate`].
const TILE_F: usize = 4;
/// Vector blocks of 16 pixels per register tile: 4 x 6 = 24 accumulators,
/// and per tap 4 weight broadcasts and 6 input loads for 24 FMAs. (One
/// block x 20 filters with the weights as memory operands, one load per
/// FMA, ran into the load ports on a CPU with two FMA units.)
const TILE_Q: usize = 6;

/// Output planes `f0..f0 + 4` (those below `co`) at vector blocks
/// `b0..b0 + QB` of [`correlate`].
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn correlate_tile<const QB: usize>(
    g: &Corr,
    offs: &[usize],
    xp: &[f32],
    taps: &[f32],
    f0: usize,
    b0: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let mut init = [0.0f32; TILE_F];
    if let Some(b) = bias {
        for (j, v) in init.iter_mut().enumerate() {
            *v = if f0 + j < g.co { b[f0 + j] } else { 0.0 };
        }
    }
    // the stores index the tile with a run-time bound, so the sums come
    // from a function of their own: there the accumulators index with
    // constants only, and LLVM keeps all of them in registers
    // (not zeroed first: a `memset` of up to 1.5 KB per tile, 1.7% of a
    // training run's samples, for sums that are all overwritten)
    let mut acc = MaybeUninit::<[[__m512; TILE_F]; QB]>::uninit();
    correlate_block::<QB>(&xp[b0 * LANES..], g, offs, &taps[f0..], &init, &mut acc);
    // SAFETY: `correlate_block` wrote the whole array.
    let acc = acc.assume_init();
    for (b, sums) in acc.iter().enumerate() {
        store_block(g, sums, (b0 + b) * LANES, f0, out);
    }
}

/// Store the lanes of one vector block starting at flat index `q0` that
/// are output pixels, one row segment at a time, for planes `f0..f0 + 4`
/// below `co`.
#[target_feature(enable = "avx512f")]
fn store_block(g: &Corr, sums: &[__m512; TILE_F], q0: usize, f0: usize, out: &mut [f32]) {
    let (plane, wo, wp, q_len) = (g.ho() * g.wo(), g.wo(), g.wp, g.q_len());
    let planes = TILE_F.min(g.co - f0);
    let out = out.as_mut_ptr().wrapping_add(f0 * plane);
    let q_end = (q0 + LANES).min(q_len);
    // one division per block; then walk the row segments
    let (mut q, mut r, mut x) = (q0, q0 / wp, q0 % wp);
    while q < q_end {
        if x >= wo {
            q += wp - x;
            (r, x) = (r + 1, 0);
            continue;
        }
        let len = (wo - x).min(q_end - q);
        let lane = q - q0;
        let mask = (((1u32 << len) - 1) << lane) as __mmask16;
        // lane `lane` of the vector lands on out[f, r, x]; the masked lanes
        // are inside the output plane (the caller checked its length)
        let dst = out.wrapping_add(r * wo + x).wrapping_sub(lane);
        // SAFETY: see above.
        unsafe {
            if planes == TILE_F {
                for (j, a) in sums.iter().enumerate() {
                    _mm512_mask_storeu_ps(dst.wrapping_add(j * plane), mask, *a);
                }
            } else {
                for (j, a) in sums.iter().enumerate().take(planes) {
                    _mm512_mask_storeu_ps(dst.wrapping_add(j * plane), mask, *a);
                }
            }
        }
        q += len;
        x += len;
    }
}

/// One register tile of [`correlate_tile`]: `sums[b][j] = init[j] + sum over
/// the ci planes and the taps of xp[c * plane + off + 16 b] * taps[(c, tap),
/// j]`, where `xp` points at the tile's first pixel. Every load must lie
/// inside the padded buffer (see [`Corr::padded_len`]).
#[target_feature(enable = "avx512f")]
#[inline(never)]
#[allow(clippy::needless_range_loop)] // constant indices: see the comment inside
unsafe fn correlate_block<const QB: usize>(
    xp: &[f32],
    g: &Corr,
    offs: &[usize],
    taps: &[f32],
    init: &[f32; TILE_F],
    sums: &mut MaybeUninit<[[__m512; TILE_F]; QB]>,
) {
    // The sums live in a local array written to `sums` once at the end: an
    // array returned by value becomes the caller's memory, and LLVM then
    // stores every accumulator back after every FMA.
    let (xp, mut t) = (xp.as_ptr(), taps.as_ptr());
    let (plane, ci, cp) = (g.plane(), g.ci, g.co_pad());
    let mut acc = [[_mm512_setzero_ps(); TILE_F]; QB];
    for b in 0..QB {
        for j in 0..TILE_F {
            acc[b][j] = _mm512_set1_ps(init[j]);
        }
    }
    for c in 0..ci {
        let base = xp.add(c * plane);
        for &o in offs {
            let mut wv = [_mm512_setzero_ps(); TILE_F];
            for j in 0..TILE_F {
                wv[j] = _mm512_set1_ps(*t.add(j));
            }
            for b in 0..QB {
                let v = _mm512_loadu_ps(base.add(o + b * LANES));
                for j in 0..TILE_F {
                    acc[b][j] = _mm512_fmadd_ps(v, wv[j], acc[b][j]);
                }
            }
            t = t.add(cp);
        }
    }
    sums.write(acc);
}

/// Copy one plane `src[ho, wo]` to `dst` with rows `wp` apart, zeros in
/// the `wp - wo` columns after each row and after the last row up to the
/// end of `dst` (at least `ho * wp` floats); return the plane's sum (the
/// bias gradient's share), taken in the same pass in a fixed order.
#[target_feature(enable = "avx512f")]
fn spread_rows(src: &[f32], ho: usize, wo: usize, wp: usize, dst: &mut [f32]) -> f32 {
    assert!(src.len() == ho * wo && dst.len() >= ho * wp && wp >= wo);
    let zero = _mm512_setzero_ps();
    let (body, tail) = dst.split_at_mut(ho * wp);
    for chunk in tail.chunks_mut(LANES) {
        // SAFETY: the mask covers exactly `chunk`.
        unsafe { _mm512_mask_storeu_ps(chunk.as_mut_ptr(), lane_mask(chunk.len()), zero) };
    }
    // Every row has the same vector steps: whole vectors of the row, then
    // its last part and the gap, then gap only. One running sum per row
    // (in a register: an array of sums indexed at run time would live on
    // the stack and chain every add through a store and a load).
    let steps = wp.div_ceil(LANES);
    let mut sum = zero;
    for r in 0..ho {
        let (row, out) = (&src[r * wo..(r + 1) * wo], &mut body[r * wp..(r + 1) * wp]);
        let mut row_sum = zero;
        for k in 0..steps {
            let x0 = k * LANES;
            let (m_in, m_out) = (lane_mask(wo.saturating_sub(x0)), lane_mask(wp - x0));
            // SAFETY: the masks keep every access inside `row` and `out`.
            unsafe {
                let v = _mm512_maskz_loadu_ps(m_in, row.as_ptr().wrapping_add(x0));
                row_sum = _mm512_add_ps(row_sum, v);
                _mm512_mask_storeu_ps(out.as_mut_ptr().wrapping_add(x0), m_out, v);
            }
        }
        sum = _mm512_add_ps(sum, row_sum);
    }
    _mm512_reduce_add_ps(sum)
}

/// The first `min(k, 16)` lanes.
fn lane_mask(k: usize) -> __mmask16 {
    ((1u32 << k.min(LANES)) - 1) as __mmask16
}

/// `dw[f, c, tap] (+)= sum over the n images and q of dyq[f][q] *
/// xp[c][q + off(tap)]`, for 3x3 kernels; `xps` holds n padded inputs,
/// `dyqs` n blocks of `co` spread gradients.
unsafe fn weight_grad(g: &Corr, n: usize, xps: &[f32], dyqs: &[f32], dw: &mut [f32], accumulate: bool) {
    let dyq_len = g.dyq_len();
    assert!(g.kh == 3 && g.kw == 3);
    assert!(xps.len() >= n * g.padded_len() && dyqs.len() >= n * g.co * dyq_len);
    assert!(dw.len() >= g.co * g.ci * 9);
    let mut f = 0;
    while f < g.co {
        let fb = (g.co - f).min(3);
        match fb {
            3 => weight_grad_tile::<3>(g, n, xps, dyqs, f, dw, accumulate),
            2 => weight_grad_tile::<2>(g, n, xps, dyqs, f, dw, accumulate),
            _ => weight_grad_tile::<1>(g, n, xps, dyqs, f, dw, accumulate),
        }
        f += fb;
    }
}

/// [`weight_grad`] for output planes `f0..f0 + FB`, every input plane:
/// `FB x 9` accumulators, each a 16-lane partial sum reduced at the end.
#[target_feature(enable = "avx512f")]
unsafe fn weight_grad_tile<const FB: usize>(
    g: &Corr,
    n: usize,
    xps: &[f32],
    dyqs: &[f32],
    f0: usize,
    dw: &mut [f32],
    accumulate: bool,
) {
    let (plane, wp, blocks, dyq_len) = (g.plane(), g.wp, g.blocks(), g.dyq_len());
    let offs = [0, 1, 2, wp, wp + 1, wp + 2, 2 * wp, 2 * wp + 1, 2 * wp + 2];
    for c in 0..g.ci {
        let mut acc = [[_mm512_setzero_ps(); 9]; FB];
        for i in 0..n {
            let x = xps.as_ptr().add(i * g.padded_len() + c * plane);
            let dyq = dyqs.as_ptr().add((i * g.co + f0) * dyq_len);
            weight_grad_image::<FB>(&mut acc, x, dyq, dyq_len, blocks, &offs);
        }
        for (j, accj) in acc.iter().enumerate() {
            let row = &mut dw[((f0 + j) * g.ci + c) * 9..][..9];
            for (r, a) in row.iter_mut().zip(accj) {
                let sum = _mm512_reduce_add_ps(*a);
                *r = if accumulate { *r + sum } else { sum };
            }
        }
    }
}

/// One image's part of [`weight_grad_tile`]: `acc[j][t] += dyq[j][q] *
/// x[q + offs[t]]` over the `blocks` vector blocks of `q`, in a local copy
/// of `sums` that LLVM keeps in registers (see [`correlate_block`]).
#[target_feature(enable = "avx512f")]
#[inline(never)]
#[allow(clippy::needless_range_loop)] // constant indices keep the sums in registers
unsafe fn weight_grad_image<const FB: usize>(
    sums: &mut [[__m512; 9]; FB],
    x: *const f32,
    dyq: *const f32,
    dyq_len: usize,
    blocks: usize,
    offs: &[usize; 9],
) {
    let mut acc = *sums;
    for b in 0..blocks {
        let q = b * LANES;
        let mut d = [_mm512_setzero_ps(); FB];
        for j in 0..FB {
            d[j] = _mm512_loadu_ps(dyq.add(j * dyq_len + q));
        }
        for t in 0..9 {
            let v = _mm512_loadu_ps(x.add(q + offs[t]));
            for j in 0..FB {
                acc[j][t] = _mm512_fmadd_ps(v, d[j], acc[j][t]);
            }
        }
    }
    *sums = acc;
}
