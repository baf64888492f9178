//! 2-D convolution, on one of two paths ([`ConvPath`]).
//!
//! **im2col + SGEMM** (Darknet style), for every shape and CPU. Forward,
//! per image: `im2col` unrolls every receptive field into a column of
//! `cols[C*kh*kw, Ho*Wo]`, then one SGEMM `W[F, C*kh*kw] x cols` gives the
//! output planes `[F, Ho*Wo]` directly in NCHW order. Backward, per image:
//! `dW += dY x colsᵀ`, `dB += row sums of dY`, `dcols = Wᵀ x dY`, then
//! `col2im` scatters `dcols` back onto `dX`.
//!
//! **Direct** ([`crate::direct`]): SIMD kernels for 3x3, stride-1 layers
//! (every convolution of the presets), at the ISA the caller passes
//! (AVX-512 or AVX2; 2-3x faster than im2col with AVX-512 on this project's
//! first machine): no im2col matrix, no packing, the filters in registers.
//! [`conv2d_forward`] and [`conv2d_backward`] take the path
//! [`ConvPath::default_for`] gives (the direct kernels for those shapes at
//! every ISA but [`Isa::Portable`], up to the ISA's filter count); the
//! `_via` versions choose. The paths sum in different orders (and the direct kernels'
//! weight gradient in per-lane partial sums), so their results differ in
//! the last bits.
//!
//! The im2col path is the same code at every ISA: `matrixmultiply` picks
//! its own SGEMM kernel (AVX + FMA, AVX, SSE2 or scalar) at run time from
//! the CPU, whatever [`Isa`] says. So `Isa::Portable` gives the bits it
//! always gave on a given CPU, and the direct kernels are the only ones
//! [`Isa`] switches.

use crate::gemm::{sgemm, Mat};
use crate::isa::Isa;
use std::fmt;
use std::str::FromStr;

/// Shape of one convolution layer. `h`, `w` are the input plane size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
}

impl Conv2d {
    /// Output height; `None` when the padded input is smaller than the
    /// kernel or the stride is zero (the layer is impossible).
    pub fn checked_out_h(&self) -> Option<usize> {
        out_len(self.h, self.kh, self.stride, self.pad)
    }
    pub fn checked_out_w(&self) -> Option<usize> {
        out_len(self.w, self.kw, self.stride, self.pad)
    }
    /// Output height; panics if the shape is impossible (check first).
    pub fn out_h(&self) -> usize {
        self.checked_out_h().expect("impossible conv shape")
    }
    pub fn out_w(&self) -> usize {
        self.checked_out_w().expect("impossible conv shape")
    }
    /// Floats in one input image.
    pub fn in_len(&self) -> usize {
        self.c_in * self.h * self.w
    }
    /// Floats in one output image.
    pub fn out_len(&self) -> usize {
        self.c_out * self.out_h() * self.out_w()
    }
    /// Rows of the im2col matrix: the length of one unrolled receptive field.
    pub fn col_rows(&self) -> usize {
        self.c_in * self.kh * self.kw
    }
    /// Columns of the im2col matrix: one per output pixel.
    pub fn col_cols(&self) -> usize {
        self.out_h() * self.out_w()
    }
    /// Scratch floats `conv2d_forward` / `conv2d_backward` need.
    pub fn cols_len(&self) -> usize {
        self.col_rows() * self.col_cols()
    }
    /// Weight floats, laid out `[c_out, c_in, kh, kw]` (PyTorch order).
    pub fn weight_len(&self) -> usize {
        self.c_out * self.col_rows()
    }
    /// Multiply-adds of one image's forward pass.
    pub fn macs(&self) -> usize {
        self.c_out * self.col_rows() * self.col_cols()
    }
}

fn out_len(n: usize, k: usize, stride: usize, pad: usize) -> Option<usize> {
    let padded = n + 2 * pad;
    if stride == 0 || k == 0 || padded < k {
        None
    } else {
        Some((padded - k) / stride + 1)
    }
}

/// The output columns `ox` whose input column `ox*stride + k - pad` lies in
/// `0..w`, as a half-open range (possibly empty).
fn valid_range(out: usize, w: usize, stride: usize, k: usize, pad: usize) -> (usize, usize) {
    // first ox with ox*stride + k >= pad
    let lo = if k >= pad { 0 } else { (pad - k).div_ceil(stride) };
    // first ox with ox*stride + k >= pad + w
    let hi = (pad + w).saturating_sub(k).div_ceil(stride);
    let lo = lo.min(out);
    (lo, hi.clamp(lo, out))
}

/// Unroll one image `x[C, H, W]` into `cols[C*kh*kw, Ho*Wo]`; padding reads
/// as zero.
pub fn im2col(s: &Conv2d, x: &[f32], cols: &mut [f32]) {
    let (ho, wo) = (s.out_h(), s.out_w());
    let x = &x[..s.in_len()];
    let cols = &mut cols[..s.cols_len()];
    let plane = s.h * s.w;
    for (row, dst) in cols.chunks_exact_mut(ho * wo).enumerate() {
        let c = row / (s.kh * s.kw);
        let ki = row / s.kw % s.kh;
        let kj = row % s.kw;
        let src = &x[c * plane..(c + 1) * plane];
        let (lo, hi) = valid_range(wo, s.w, s.stride, kj, s.pad);
        if s.stride == 1 && wo == s.w && lo < hi {
            im2col_row_same(s, src, ki, kj, lo, hi, dst);
            continue;
        }
        for (oy, out_row) in dst.chunks_exact_mut(wo).enumerate() {
            let iy = (oy * s.stride + ki).wrapping_sub(s.pad);
            if iy >= s.h {
                out_row.fill(0.0);
                continue;
            }
            out_row[..lo].fill(0.0);
            out_row[hi..].fill(0.0);
            if lo == hi {
                continue;
            }
            let in_row = &src[iy * s.w..(iy + 1) * s.w];
            let x0 = lo * s.stride + kj - s.pad;
            if s.stride == 1 {
                out_row[lo..hi].copy_from_slice(&in_row[x0..x0 + hi - lo]);
            } else {
                for (o, v) in out_row[lo..hi].iter_mut().zip(in_row[x0..].iter().step_by(s.stride)) {
                    *o = *v;
                }
            }
        }
    }
}

/// One row `(c, ki, kj)` of `im2col` when the stride is 1 and the output is
/// as wide as the input ("same" padding, e.g. 3x3 pad 1): then the valid
/// part of the row is the input plane shifted by a constant offset, so one
/// block copy does every output row at once, and only the `pad` columns that
/// wrapped around from the neighbouring row are zeroed afterwards.
fn im2col_row_same(s: &Conv2d, src: &[f32], ki: usize, kj: usize, lo: usize, hi: usize, dst: &mut [f32]) {
    let w = s.w;
    // output rows whose input row oy + ki - pad lies inside the plane
    let oy_lo = s.pad.saturating_sub(ki);
    let oy_hi = (s.h + s.pad).saturating_sub(ki).min(s.out_h());
    if oy_lo >= oy_hi {
        dst.fill(0.0);
        return;
    }
    let (start, end) = (oy_lo * w + lo, (oy_hi - 1) * w + hi);
    // dst[t] = src[t + shift] for every t in start..end
    let from = (oy_lo + ki - s.pad) * w + lo + kj - s.pad;
    dst[..start].fill(0.0);
    dst[start..end].copy_from_slice(&src[from..from + end - start]);
    dst[end..].fill(0.0);
    for row in dst[oy_lo * w..oy_hi * w].chunks_exact_mut(w) {
        row[..lo].fill(0.0);
        row[hi..].fill(0.0);
    }
}

/// Sum of a slice in eight interleaved partial sums (a fixed order, so the
/// same bits every time): a plain `iter().sum()` is one long chain of
/// dependent adds that the compiler may not reorder or vectorise.
fn sum_lanes8(v: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = v.chunks_exact(8);
    let rest: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + rest
}

/// The adjoint of `im2col`: add every entry of `cols[C*kh*kw, Ho*Wo]` onto
/// the input pixel it was read from. `dx[C, H, W]` is accumulated into, not
/// overwritten; entries that came from padding are dropped.
pub fn col2im(s: &Conv2d, cols: &[f32], dx: &mut [f32]) {
    let (ho, wo) = (s.out_h(), s.out_w());
    let cols = &cols[..s.cols_len()];
    let plane = s.h * s.w;
    let dx = &mut dx[..s.in_len()];
    for (row, src) in cols.chunks_exact(ho * wo).enumerate() {
        let c = row / (s.kh * s.kw);
        let ki = row / s.kw % s.kh;
        let kj = row % s.kw;
        let dst = &mut dx[c * plane..(c + 1) * plane];
        let (lo, hi) = valid_range(wo, s.w, s.stride, kj, s.pad);
        for (oy, col_row) in src.chunks_exact(wo).enumerate() {
            let iy = (oy * s.stride + ki).wrapping_sub(s.pad);
            if iy >= s.h || lo == hi {
                continue;
            }
            let x0 = lo * s.stride + kj - s.pad;
            let in_row = &mut dst[iy * s.w..(iy + 1) * s.w];
            if s.stride == 1 {
                for (d, v) in in_row[x0..x0 + hi - lo].iter_mut().zip(&col_row[lo..hi]) {
                    *d += *v;
                }
            } else {
                for (d, v) in in_row[x0..].iter_mut().step_by(s.stride).zip(&col_row[lo..hi]) {
                    *d += *v;
                }
            }
        }
    }
}

/// Which implementation runs a convolution. The two round differently (they
/// sum in other orders), so a run's bits depend on each layer's path; both
/// are deterministic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvPath {
    /// `im2col` + SGEMM (`matrixmultiply`), backward by SGEMM + `col2im`:
    /// any shape, any ISA.
    Im2col,
    /// The SIMD kernels of [`crate::direct`] at the given ISA: 3x3, stride
    /// 1, padding at most 2, any ISA but [`Isa::Portable`].
    Direct,
}

impl ConvPath {
    /// Every path.
    pub const ALL: [ConvPath; 2] = [ConvPath::Im2col, ConvPath::Direct];

    /// The path a plan gives `s` at `isa` unless told otherwise: a fixed
    /// rule, never a measurement, so that two runs with the same seed give
    /// the same bits. The direct kernels wherever they run, up to the
    /// ISA's `conv_direct_max_f` output planes ([`crate::simd::Tiles`]);
    /// im2col + SGEMM beyond. On an AMD EPYC (AVX2) the direct kernels beat
    /// im2col on every layer of the seed presets (1.6-1.9x forward and
    /// backward, conv1's 3 input channels included) and tie it at 32-64
    /// planes, but lose at 128 (0.75-0.9x); on an Intel Xeon, AVX2's conv1
    /// forward is the one seed layer where im2col wins (1.27x), too little
    /// to give up the bits of every AVX2 run for one CPU family
    /// (`docs/benchmarks.md`).
    pub fn default_for(isa: Isa, s: &Conv2d) -> ConvPath {
        if ConvPath::Direct.runs(isa, s)
            && s.c_out <= with_vector!(isa, V => <V as crate::simd::Vector>::TILES.conv_direct_max_f)
        {
            ConvPath::Direct
        } else {
            ConvPath::Im2col
        }
    }

    /// Whether this path can run `s` at `isa` on this CPU.
    pub fn runs(self, isa: Isa, s: &Conv2d) -> bool {
        isa.supported()
            && match self {
                ConvPath::Im2col => true,
                ConvPath::Direct => isa != Isa::Portable && s.direct_shape(),
            }
    }

    /// `im2col` or `direct`.
    pub fn name(self) -> &'static str {
        match self {
            ConvPath::Im2col => "im2col",
            ConvPath::Direct => "direct",
        }
    }
}

impl fmt::Display for ConvPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ConvPath {
    type Err = String;

    /// `im2col` or `direct`, in any case.
    fn from_str(s: &str) -> Result<ConvPath, String> {
        ConvPath::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown convolution path `{s}` (expected im2col or direct)"))
    }
}

impl Conv2d {
    /// Scratch floats [`conv2d_forward`] and [`conv2d_backward`] need for
    /// `n` images, whichever path and ISA run. It depends on the shape only,
    /// never on the CPU.
    pub fn scratch_len(&self, n: usize) -> usize {
        self.cols_len().max(self.direct_scratch_len(n))
    }

    /// Whether the direct kernels handle this shape: 3x3, stride 1,
    /// padding at most 2 (the input gradient pads `dy` by `2 - pad`).
    pub fn direct_shape(&self) -> bool {
        self.stride == 1 && self.kh == 3 && self.kw == 3 && self.pad <= 2
    }

    fn direct_scratch_len(&self, n: usize) -> usize {
        if !self.direct_shape() {
            return 0;
        }
        crate::direct::forward_scratch_len(self).max(crate::direct::backward_scratch_len(self, n))
    }
}

/// Forward pass of `n` images: `y[n, F, Ho, Wo] = conv(x[n, C, H, W], w) + b`,
/// at `isa` (panics if this CPU cannot run it). `w` is `[F, C, kh, kw]`;
/// `scratch` holds at least `s.scratch_len(n)` floats.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward(
    isa: Isa,
    s: &Conv2d,
    n: usize,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    scratch: &mut [f32],
) {
    conv2d_forward_via(isa, ConvPath::default_for(isa, s), s, n, x, w, bias, y, scratch)
}

/// [`conv2d_forward`] on a chosen path. Panics if `path` cannot run `s` at
/// `isa` here.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward_via(
    isa: Isa,
    path: ConvPath,
    s: &Conv2d,
    n: usize,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    scratch: &mut [f32],
) {
    assert!(path.runs(isa, s), "conv2d_forward: {path:?} cannot run {s:?} at {isa} on this CPU");
    if path == ConvPath::Direct {
        // SAFETY: `runs` checked the CPU and the shape.
        with_vector!(isa, V => unsafe { crate::direct::forward::<V>(s, n, x, w, bias, y, scratch) });
        return;
    }
    let cols = scratch;
    let (k, p) = (s.col_rows(), s.col_cols());
    let wm = Mat::rows(&w[..s.weight_len()], s.c_out, k);
    for i in 0..n {
        let xi = &x[i * s.in_len()..(i + 1) * s.in_len()];
        let yi = &mut y[i * s.out_len()..(i + 1) * s.out_len()];
        im2col(s, xi, cols);
        sgemm(1.0, wm, Mat::rows(&cols[..k * p], k, p), 0.0, yi);
        if let Some(b) = bias {
            for (plane, &bf) in yi.chunks_exact_mut(p).zip(b) {
                plane.iter_mut().for_each(|v| *v += bf);
            }
        }
    }
}

/// Backward pass of `n` images at `isa` (panics if this CPU cannot run it).
///
/// Parameter gradients are summed over the `n` images and written to `dw`
/// (and `db`), or added to what is there when `accumulate` is true. `dx`,
/// when given, is overwritten with the input gradient; the first layer of a
/// network passes `None` and skips that work. `scratch` holds at least
/// `s.scratch_len(n)` floats.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward(
    isa: Isa,
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
    conv2d_backward_via(isa, ConvPath::default_for(isa, s), s, n, x, w, dy, dx, dw, db, scratch, accumulate)
}

/// [`conv2d_backward`] on a chosen path. Panics if `path` cannot run `s`
/// at `isa` here.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_via(
    isa: Isa,
    path: ConvPath,
    s: &Conv2d,
    n: usize,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    mut dx: Option<&mut [f32]>,
    dw: &mut [f32],
    mut db: Option<&mut [f32]>,
    scratch: &mut [f32],
    accumulate: bool,
) {
    assert!(path.runs(isa, s), "conv2d_backward: {path:?} cannot run {s:?} at {isa} on this CPU");
    let dw = &mut dw[..s.weight_len()];
    if n == 0 && !accumulate {
        // an empty sum is zero
        dw.fill(0.0);
        if let Some(db) = db.as_deref_mut() {
            db.fill(0.0);
        }
    }
    if n == 0 {
        return;
    }
    if path == ConvPath::Direct {
        // SAFETY: `runs` checked the CPU and the shape.
        with_vector!(isa, V => unsafe {
            crate::direct::backward::<V>(s, n, x, w, dy, dx, dw, db, scratch, accumulate)
        });
        return;
    }
    let cols = scratch;
    let (k, p) = (s.col_rows(), s.col_cols());
    let wm = Mat::rows(&w[..s.weight_len()], s.c_out, k);
    for i in 0..n {
        let beta = if accumulate || i > 0 { 1.0 } else { 0.0 };
        let xi = &x[i * s.in_len()..(i + 1) * s.in_len()];
        let dyi = &dy[i * s.out_len()..(i + 1) * s.out_len()];
        let dym = Mat::rows(dyi, s.c_out, p);
        im2col(s, xi, cols);
        // dW[F, K] (+)= dY[F, P] x colsᵀ[P, K]
        sgemm(1.0, dym, Mat::rows(&cols[..k * p], k, p).t(), beta, dw);
        if let Some(db) = db.as_deref_mut() {
            for (g, plane) in db.iter_mut().zip(dyi.chunks_exact(p)) {
                let sum = sum_lanes8(plane);
                *g = if beta == 0.0 { sum } else { *g + sum };
            }
        }
        if let Some(dx) = dx.as_deref_mut() {
            // cols is free again: reuse it for dcols[K, P] = Wᵀ[K, F] x dY[F, P]
            sgemm(1.0, wm.t(), dym, 0.0, &mut cols[..k * p]);
            let dxi = &mut dx[i * s.in_len()..(i + 1) * s.in_len()];
            dxi.fill(0.0);
            col2im(s, cols, dxi);
        }
    }
}
