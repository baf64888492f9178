//! Stride-1 convolution without im2col: SIMD kernels over zero-padded,
//! flattened planes, written once over [`Vector`] and run at the ISA the
//! caller picks ([`crate::conv`] dispatches).
//!
//! Pad every input plane to `hp x wp` and read it as one flat row. Output
//! pixel `(y, x)` then needs padded element `(y + ky) * wp + (x + kx)`, which
//! is `q + ky * wp + kx` for `q = y * wp + x`: a 1-D correlation over `q`
//! with `kh * kw` fixed offsets. `LANES` consecutive `q` are therefore one
//! unaligned vector load per tap, whatever the plane width, and a register
//! tile of `F` output planes x `Q` vector blocks of pixels does `F` weight
//! broadcasts, `Q` loads and `F * Q` FMAs per tap (AVX-512: 4 x 6 = 24
//! accumulators; AVX2, with half the registers: 2 x 6): nothing is packed,
//! and no `C*9`-times-larger im2col matrix is written or read. The `wp - wo`
//! columns at the end of each padded row are not output pixels; their lanes
//! are computed and never stored (12% extra work at 16x16, 25% at 8x8).
//!
//! - forward: `y[f] = b[f] + sum_c sum_tap xp[c][q + off(tap)] * w[f, c, tap]`;
//! - input gradient: the same correlation run over `dy` padded by
//!   `k - 1 - pad`, with the weights transposed and flipped (a "full"
//!   convolution), written straight into `dx`: no col2im;
//! - weight gradient: `dw[f, c, tap] = sum_q dyq[f][q] * xp[c][q + off(tap)]`
//!   where `dyq` is `dy` spread to width `wp` with zeros in the extra
//!   columns (the bias gradient is summed in the same pass): tiles of
//!   filters x taps (AVX-512: 3 x 9 = 27 accumulators of per-lane partial
//!   sums; AVX2: 3 x 3) run over every image of the chunk in registers and
//!   are reduced once.
//!
//! Every output is the same chain of operations whatever the tile sizes:
//! the forward and input-gradient sums start from the bias (or zero) and
//! add one FMA per (channel, tap) in that order; a weight-gradient sum is a
//! per-lane FMA chain over the images and pixel blocks, reduced by
//! [`Vector::hsum`]. So the AVX-512 instantiation computes exactly what
//! `Fallback<16>` does and the AVX2 one exactly what `Fallback<8>` does
//! (tests compare them bit for bit); no hot loop of either ISA spills a
//! register.
//!
//! The two entries, [`forward`] and [`backward`], are `unsafe` only because
//! the CPU must run `V` ([`Vector::supported`]); each checks every slice
//! length its pointer arithmetic relies on first. [`crate::conv`] calls them
//! for a layer with a [`Conv2d::direct_shape`] (3x3, stride 1, padding at
//! most 2) at any ISA but the portable one; everything else goes through
//! im2col + SGEMM.

mod weight_grad;

use crate::conv::Conv2d;
use crate::simd::{Vector, MAX_LANES};
use std::mem::MaybeUninit;
use weight_grad::{spread_rows, weight_grad};

/// Zeros after the last padded plane, so that a vector load starting at the
/// last output pixel of the last channel stays inside the buffer: the widest
/// vector's lanes, so that the scratch size is the same at every ISA.
const SLACK: usize = MAX_LANES;
/// The weight table's output planes are padded to a multiple of this; every
/// ISA's `conv_f` divides it.
const F_ALIGN: usize = 4;

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
    /// Vector blocks of `lanes` covering `0..q_len`.
    fn blocks(&self, lanes: usize) -> usize {
        self.q_len().div_ceil(lanes)
    }
    /// Floats of one spread gradient plane (see [`spread_rows`]): whole
    /// rows of `wp`, rounded up to whole vectors of the widest ISA.
    fn dyq_len(&self) -> usize {
        (self.ho() * self.wp).next_multiple_of(MAX_LANES)
    }
    /// Output planes rounded up to a multiple of [`F_ALIGN`].
    fn co_pad(&self) -> usize {
        self.co.next_multiple_of(F_ALIGN)
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

/// Scratch floats [`forward`] needs, at every ISA.
pub fn forward_scratch_len(s: &Conv2d) -> usize {
    let g = forward_corr(s);
    g.taps_len() + g.padded_len()
}

/// Scratch floats [`backward`] needs for `n` images, at every ISA.
pub fn backward_scratch_len(s: &Conv2d, n: usize) -> usize {
    let (g, d) = (forward_corr(s), input_grad_corr(s));
    let dyq = s.c_out * g.dyq_len();
    d.taps_len() + n * (g.padded_len() + dyq) + d.padded_len()
}

/// Copy `src[c, h, w]` into `dst[c, h + 2*py, w + 2*px]` with zero borders,
/// and zero the slack after it.
unsafe fn pad_planes<V: Vector>(
    src: &[f32],
    c: usize,
    h: usize,
    w: usize,
    py: usize,
    px: usize,
    dst: &mut [f32],
) {
    V::outline(
        #[inline(always)]
        || {
            let lanes = V::LANES;
            let (hp, wp) = (h + 2 * py, w + 2 * px);
            let (src, dst) = (&src[..c * h * w], &mut dst[..c * hp * wp + SLACK]);
            let zero = V::zero();
            // Vector steps along a padded row, each storing its lanes inside
            // the row, some of them from the source row (the rest are
            // padding). Every row has the same steps, so there is no call
            // per row (a `fill` of one float per row edge was a `memset`
            // call, which cost more than the copy).
            let steps = wp.div_ceil(lanes);
            let (planes, slack) = dst.split_at_mut(c * hp * wp);
            for z in slack.chunks_exact_mut(lanes) {
                V::store(z.as_mut_ptr(), zero);
            }
            for (sp, dp) in src.chunks_exact(h * w).zip(planes.chunks_exact_mut(hp * wp)) {
                for (r, drow) in dp.chunks_exact_mut(wp).enumerate() {
                    let inside = r >= py && r < py + h;
                    for k in 0..steps {
                        let x0 = k * lanes;
                        // Loads stay inside source row r - py (columns
                        // 0..w), stores inside `drow`; whole vectors go
                        // without masks (AVX2's masked store is microcoded
                        // on AMD, many times a plain store's cost).
                        let v = if !inside {
                            zero
                        } else if x0 >= px && x0 + lanes <= px + w {
                            V::load(sp.as_ptr().add((r - py) * w + x0 - px))
                        } else {
                            // lanes l with px <= x0 + l < px + w
                            let load = V::mask_range(px.saturating_sub(x0), (px + w).saturating_sub(x0));
                            let srow = sp.as_ptr().add((r - py) * w);
                            V::maskz_load(load, srow.wrapping_add(x0).wrapping_sub(px))
                        };
                        let dst = drow.as_mut_ptr().wrapping_add(x0);
                        if x0 + lanes <= wp {
                            V::store(dst, v);
                        } else {
                            V::store_lanes(dst, 0, wp - x0, v);
                        }
                    }
                }
            }
        },
    )
}

/// Forward pass of `n` images (see the module docs). `scratch` holds at
/// least [`forward_scratch_len`] floats.
///
/// # Safety
/// The CPU must run `V` and `s.direct_shape()` hold.
#[allow(clippy::too_many_arguments)]
pub unsafe fn forward<V: Vector>(
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
        pad_planes::<V>(&x[i * s.in_len()..], s.c_in, s.h, s.w, s.pad, s.pad, xp);
        let yi = &mut y[i * s.out_len()..(i + 1) * s.out_len()];
        correlate::<V>(&g, xp, taps, bias, yi, filter_outer::<V>(&g));
    }
}

/// Backward pass of `n` images, same contract as
/// [`crate::conv::conv2d_backward`] for `n >= 1`. `scratch` holds at least
/// [`backward_scratch_len`] floats.
///
/// # Safety
/// The CPU must run `V` and `s.direct_shape()` hold.
#[allow(clippy::too_many_arguments)]
pub unsafe fn backward<V: Vector>(
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
        pad_planes::<V>(&x[i * s.in_len()..], s.c_in, s.h, s.w, s.pad, s.pad, &mut xps[i * g.padded_len()..]);
        let dyi = &dy[i * s.out_len()..(i + 1) * s.out_len()];
        let dyq = &mut dyqs[i * s.c_out * dyq_len..(i + 1) * s.c_out * dyq_len];
        for (f, (src, dst)) in dyi.chunks_exact(ho * wo).zip(dyq.chunks_exact_mut(dyq_len)).enumerate() {
            let sum = spread_rows::<V>(src, ho, wo, wp, dst);
            if let Some(db) = db.as_deref_mut() {
                db[f] += sum;
            }
        }
    }
    weight_grad::<V>(&g, n, xps, dyqs, dw, accumulate);
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
            pad_planes::<V>(&dy[i * s.out_len()..], s.c_out, ho, wo, py, px, dyp);
            let dxi = &mut dx[i * s.in_len()..(i + 1) * s.in_len()];
            correlate::<V>(&d, dyp, taps, None, dxi, filter_outer::<V>(&d));
        }
    }
}

/// `out[co, ho, wo] = correlation of xp (padded, see [`Corr`]) with the
/// weight table `taps[ci * kh * kw, co_pad]`, plus `bias`.
///
/// Register tiles of `conv_f` output planes x up to `conv_q` vector blocks
/// of pixels. The pixel groups are the outer loop, so a group's input stays
/// in L1 while every filter tile reads it; or, with `filter_outer`
/// ([`filter_outer`]), the filter tiles are. Where an output row is a whole
/// number of vectors (`wo` a multiple of `LANES`: the seed network's 32-,
/// 16- and 8-wide planes at AVX2), the blocks are those of the output rows
/// (`ROWS`): no lanes computed for the padding columns, and every store a
/// plain one of a whole vector. Elsewhere the blocks run along the padded
/// plane, and the stores skip the padding columns. Each output's sum is
/// the same chain of FMAs either way.
unsafe fn correlate<V: Vector>(
    g: &Corr,
    xp: &[f32],
    taps: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    filter_outer: bool,
) {
    assert!(xp.len() >= g.padded_len() && taps.len() >= g.taps_len() && out.len() >= g.co * g.ho() * g.wo());
    assert!(bias.is_none_or(|b| b.len() >= g.co));
    const { assert!((V::TILES.conv_f == 2 || V::TILES.conv_f == 4) && V::TILES.conv_q <= 6) };
    let mut offs = [0usize; 9];
    for (t, o) in offs.iter_mut().enumerate().take(g.kh * g.kw) {
        *o = t / g.kw * g.wp + t % g.kw;
    }
    let offs = &offs[..g.kh * g.kw];
    let rows = g.wo().is_multiple_of(V::LANES);
    let blocks = if rows { g.ho() * (g.wo() / V::LANES) } else { g.blocks(V::LANES) };
    // conv_f is a constant: the arms of the other tile widths go
    macro_rules! tile {
        ($rows:expr, $qb:expr, $f0:expr, $b0:expr) => {
            match (V::TILES.conv_f, $qb) {
                (4, 6) => correlate_tile::<V, 4, 6, $rows>(g, offs, xp, taps, $f0, $b0, bias, out),
                (4, 5) => correlate_tile::<V, 4, 5, $rows>(g, offs, xp, taps, $f0, $b0, bias, out),
                (4, 4) => correlate_tile::<V, 4, 4, $rows>(g, offs, xp, taps, $f0, $b0, bias, out),
                (4, 3) => correlate_tile::<V, 4, 3, $rows>(g, offs, xp, taps, $f0, $b0, bias, out),
                (4, 2) => correlate_tile::<V, 4, 2, $rows>(g, offs, xp, taps, $f0, $b0, bias, out),
                (4, _) => correlate_tile::<V, 4, 1, $rows>(g, offs, xp, taps, $f0, $b0, bias, out),
                (_, 6) => correlate_tile::<V, 2, 6, $rows>(g, offs, xp, taps, $f0, $b0, bias, out),
                (_, 5) => correlate_tile::<V, 2, 5, $rows>(g, offs, xp, taps, $f0, $b0, bias, out),
                (_, 4) => correlate_tile::<V, 2, 4, $rows>(g, offs, xp, taps, $f0, $b0, bias, out),
                (_, 3) => correlate_tile::<V, 2, 3, $rows>(g, offs, xp, taps, $f0, $b0, bias, out),
                (_, 2) => correlate_tile::<V, 2, 2, $rows>(g, offs, xp, taps, $f0, $b0, bias, out),
                (_, _) => correlate_tile::<V, 2, 1, $rows>(g, offs, xp, taps, $f0, $b0, bias, out),
            }
        };
    }
    let groups = || PixelGroups::new(blocks, V::TILES.conv_q, V::TILES.conv_even_q);
    let filter_tiles = || (0..g.co).step_by(V::TILES.conv_f);
    macro_rules! run {
        ($f0:expr, $group:expr) => {{
            let (b0, qb) = $group;
            if rows {
                tile!(true, qb, $f0, b0)
            } else {
                tile!(false, qb, $f0, b0)
            }
        }};
    }
    if filter_outer {
        for f0 in filter_tiles() {
            for group in groups() {
                run!(f0, group)
            }
        }
    } else {
        for group in groups() {
            for f0 in filter_tiles() {
                run!(f0, group)
            }
        }
    }
}

/// Whether [`correlate`] runs its filter tiles as the outer loop: when
/// the whole padded input fits the ISA's `conv_filter_outer_max_input` (a
/// first layer's 3 planes). The input then stays in L1 either way, and the
/// stores run along `conv_f` planes at a time rather than across all of
/// them at one offset, where planes of 4 KiB or more share L1 sets and
/// evict each other. The order never changes the bits.
fn filter_outer<V: Vector>(g: &Corr) -> bool {
    g.padded_len() * size_of::<f32>() <= V::TILES.conv_filter_outer_max_input
}

/// The pixel groups of [`correlate`]: `(first block, blocks)` runs over
/// `blocks` vector blocks, at most `q` each, in order; with `even`, the
/// blocks left are spread evenly over the groups left (8 blocks as 4 + 4
/// rather than 6 + 2).
struct PixelGroups {
    next: usize,
    blocks: usize,
    q: usize,
    groups_left: usize,
    even: bool,
}

impl PixelGroups {
    fn new(blocks: usize, q: usize, even: bool) -> Self {
        PixelGroups { next: 0, blocks, q, groups_left: blocks.div_ceil(q), even }
    }
}

impl Iterator for PixelGroups {
    type Item = (usize, usize);
    fn next(&mut self) -> Option<(usize, usize)> {
        let left = self.blocks - self.next;
        if left == 0 {
            return None;
        }
        let qb = if self.even { left.div_ceil(self.groups_left) } else { left.min(self.q) };
        let b0 = self.next;
        self.next += qb;
        self.groups_left -= 1;
        Some((b0, qb))
    }
}

/// Output planes `f0..f0 + F` (those below `co`) at vector blocks
/// `b0..b0 + QB` of [`correlate`]; with `ROWS`, blocks of the output rows.
#[allow(clippy::too_many_arguments)]
unsafe fn correlate_tile<V: Vector, const F: usize, const QB: usize, const ROWS: bool>(
    g: &Corr,
    offs: &[usize],
    xp: &[f32],
    taps: &[f32],
    f0: usize,
    b0: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    V::outline(
        #[inline(always)]
        || {
            let lanes = V::LANES;
            let mut init = [0.0f32; F];
            if let Some(b) = bias {
                for (j, v) in init.iter_mut().enumerate() {
                    *v = if f0 + j < g.co { b[f0 + j] } else { 0.0 };
                }
            }
            // Row blocks: block k is output row k / per_row, columns from
            // (k % per_row) * lanes, at flat index row * wp + column of the
            // padded plane. One division per tile, then steps along the row
            // or to the next row's start (a division per block was 12 per
            // tile, on the way to the first FMA).
            let (wo, wp) = (g.wo(), g.wp);
            let (r0, x0) = if ROWS { (b0 / (wo / lanes), b0 % (wo / lanes) * lanes) } else { (0, 0) };
            let q0 = if ROWS { r0 * wp + x0 } else { b0 * lanes };
            let mut pos = [(r0, x0); QB];
            for b in 1..QB {
                let (r, x) = pos[b - 1];
                pos[b] = if x + lanes < wo { (r, x + lanes) } else { (r + 1, 0) };
            }
            let qoffs: [usize; QB] =
                std::array::from_fn(|b| if ROWS { pos[b].0 * wp + pos[b].1 - q0 } else { b * lanes });
            // the stores index the tile with a run-time bound, so the sums
            // come from a function of their own: there the accumulators
            // index with constants only, and LLVM keeps all of them in
            // registers (not zeroed first: a `memset` of up to 1.5 KB per
            // tile, 1.7% of a training run's samples, for sums that are all
            // overwritten)
            let mut acc = MaybeUninit::<[[V; F]; QB]>::uninit();
            correlate_block::<V, F, QB, ROWS>(&xp[q0..], g, offs, &taps[f0..], &init, &qoffs, &mut acc);
            // SAFETY: `correlate_block` wrote the whole array. A reference,
            // not a move: `correlate_block` is called through an opaque
            // pointer, so LLVM cannot elide a move out of `acc`, and the copy
            // (1.5 KB per AVX-512 tile) then stalls the stores reading it.
            let acc = acc.assume_init_ref();
            if ROWS {
                let (plane, planes) = (g.ho() * g.wo(), F.min(g.co - f0));
                let out = out.as_mut_ptr().add(f0 * plane);
                for (sums, &(r, x)) in acc.iter().zip(&pos) {
                    let dst = out.add(r * wo + x);
                    if planes == F {
                        for (j, a) in sums.iter().enumerate() {
                            V::store(dst.add(j * plane), *a);
                        }
                    } else {
                        for (j, a) in sums.iter().enumerate().take(planes) {
                            V::store(dst.add(j * plane), *a);
                        }
                    }
                }
                return;
            }
            // the row and column of each block's first pixel: one division
            // per tile, then steps of `lanes`
            let (mut r, mut x) = (q0 / g.wp, q0 % g.wp);
            for (b, sums) in acc.iter().enumerate() {
                store_block::<V, F>(g, sums, (b0 + b) * lanes, (r, x), f0, out);
                x += lanes;
                while x >= g.wp {
                    (r, x) = (r + 1, x - g.wp);
                }
            }
        },
    )
}

/// Store the lanes of one vector block starting at flat index `q0` that
/// are output pixels, one row segment at a time, for planes `f0..f0 + F`
/// below `co`; `(r, x)` is `q0`'s row and column in the padded plane.
#[inline(always)]
unsafe fn store_block<V: Vector, const F: usize>(
    g: &Corr,
    sums: &[V; F],
    q0: usize,
    (r, x): (usize, usize),
    f0: usize,
    out: &mut [f32],
) {
    let (plane, wo, wp, q_len) = (g.ho() * g.wo(), g.wo(), g.wp, g.q_len());
    let planes = F.min(g.co - f0);
    // into registers once per block, not reloaded for every row segment
    let sums: [V; F] = *sums;
    let out = out.as_mut_ptr().wrapping_add(f0 * plane);
    let q_end = (q0 + V::LANES).min(q_len);
    // walk the row segments
    let (mut q, mut r, mut x) = (q0, r, x);
    while q < q_end {
        if x >= wo {
            q += wp - x;
            (r, x) = (r + 1, 0);
            continue;
        }
        let len = (wo - x).min(q_end - q);
        let lane = q - q0;
        // lane `lane` of the vector lands on out[f, r, x]; the masked lanes
        // are inside the output plane (the caller checked its length)
        let dst = out.wrapping_add(r * wo + x).wrapping_sub(lane);
        // each branch has a loop over all F planes, unrolled with constant
        // offsets, beside the one for a partial filter tile
        if len == V::LANES && planes == F {
            // a whole vector inside one row: a plain store (AVX2's masked
            // store is many times slower)
            for (j, a) in sums.iter().enumerate() {
                V::store(dst.wrapping_add(j * plane), *a);
            }
        } else if len == V::LANES {
            for (j, a) in sums.iter().enumerate().take(planes) {
                V::store(dst.wrapping_add(j * plane), *a);
            }
        } else if r * wo + x + V::LANES <= plane {
            // the lanes after the segment land on outputs of this plane
            // that come later in the order of the stores (this block's
            // next segment, the next blocks, the next pixel groups), which
            // write them again: they may take garbage first
            if planes == F {
                for (j, a) in sums.iter().enumerate() {
                    V::store_lanes_ahead(dst.wrapping_add(j * plane), lane, lane + len, *a);
                }
            } else {
                for (j, a) in sums.iter().enumerate().take(planes) {
                    V::store_lanes_ahead(dst.wrapping_add(j * plane), lane, lane + len, *a);
                }
            }
        } else if planes == F {
            for (j, a) in sums.iter().enumerate() {
                V::store_lanes(dst.wrapping_add(j * plane), lane, lane + len, *a);
            }
        } else {
            for (j, a) in sums.iter().enumerate().take(planes) {
                V::store_lanes(dst.wrapping_add(j * plane), lane, lane + len, *a);
            }
        }
        q += len;
        x += len;
    }
}

/// One register tile of [`correlate_tile`]: `sums[b][j] = init[j] + sum over
/// the ci planes and the taps of xp[c * plane + off + q_b] * taps[(c, tap),
/// j]`, where `xp` points at the tile's first pixel and `q_b` is `LANES * b`,
/// or `qoffs[b]` with `ROWS`. Every load must lie inside the padded buffer
/// (see [`Corr::padded_len`]).
#[allow(clippy::needless_range_loop)] // constant indices: see the comment inside
unsafe fn correlate_block<V: Vector, const F: usize, const QB: usize, const ROWS: bool>(
    xp: &[f32],
    g: &Corr,
    offs: &[usize],
    taps: &[f32],
    init: &[f32; F],
    qoffs: &[usize; QB],
    sums: &mut MaybeUninit<[[V; F]; QB]>,
) {
    V::outline(
        #[inline(always)]
        || {
            // The sums live in a local array written to `sums` once at the
            // end: an array returned by value becomes the caller's memory,
            // and LLVM then stores every accumulator back after every FMA.
            let (xp, mut t) = (xp.as_ptr(), taps.as_ptr());
            let (plane, ci, cp, lanes) = (g.plane(), g.ci, g.co_pad(), V::LANES);
            let mut acc = [[V::zero(); F]; QB];
            for b in 0..QB {
                for j in 0..F {
                    acc[b][j] = V::splat(init[j]);
                }
            }
            for c in 0..ci {
                let base = xp.add(c * plane);
                for &o in offs {
                    let mut wv = [V::zero(); F];
                    for j in 0..F {
                        wv[j] = V::splat(*t.add(j));
                    }
                    for b in 0..QB {
                        // without ROWS the blocks are consecutive: constant
                        // offsets, the addressing of the hand-written kernels
                        let q = if ROWS { qoffs[b] } else { b * lanes };
                        let v = V::load(base.add(o + q));
                        for j in 0..F {
                            acc[b][j] = V::fma(v, wv[j], acc[b][j]);
                        }
                    }
                    t = t.add(cp);
                }
            }
            sums.write(acc);
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::Fallback;

    /// Both loop orders of `correlate`, on a plane of whole rows of
    /// vectors and on one of padded-plane blocks, with a partial filter
    /// tile: the same bits.
    fn both_orders_agree<V: Vector>() {
        for (ci, co, hp, wp) in [(3, 7, 34, 34), (5, 9, 11, 13)] {
            let g = Corr { ci, co, hp, wp, kh: 3, kw: 3 };
            let value = |i: usize| ((i * 7919) % 1013) as f32 / 1013.0 - 0.5;
            let xp: Vec<f32> = (0..g.padded_len()).map(value).collect();
            let taps: Vec<f32> = (0..g.taps_len()).map(|i| value(i + 17)).collect();
            let bias: Vec<f32> = (0..co).map(|i| value(i + 5)).collect();
            let run = |outer| {
                let mut out = vec![f32::NAN; co * g.ho() * g.wo()];
                // SAFETY: the caller checked that the CPU runs V
                unsafe { correlate::<V>(&g, &xp, &taps, Some(&bias), &mut out, outer) };
                out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            };
            let (pixels, filters) = (run(false), run(true));
            assert!(pixels.iter().all(|&b| !f32::from_bits(b).is_nan()), "{g:?}: an output left unwritten");
            assert_eq!(pixels, filters, "{g:?} at {} lanes", V::LANES);
        }
    }

    #[test]
    fn the_loop_order_does_not_change_the_bits() {
        both_orders_agree::<Fallback<8>>();
        both_orders_agree::<Fallback<16>>();
        if crate::simd::Avx2::supported() {
            both_orders_agree::<crate::simd::Avx2>();
        }
        if crate::simd::Avx512::supported() {
            both_orders_agree::<crate::simd::Avx512>();
        }
    }
}
