//! Max pooling (any window size and stride, floor or ceil mode) and global
//! average pooling, forward and backward, over `n` NCHW images.

use crate::isa::Isa;

/// Shape of one max-pooling layer; `h`, `w` are the input plane size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxPool2d {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub size: usize,
    pub stride: usize,
    /// Ceil mode: the last window may hang over the edge and is cut off
    /// (PyTorch `ceil_mode=True`, padding 0). Floor mode drops it.
    pub ceil: bool,
}

impl MaxPool2d {
    /// Output height; `None` when the window is larger than the input or
    /// the stride or size is zero.
    pub fn checked_out_h(&self) -> Option<usize> {
        pool_out(self.h, self.size, self.stride, self.ceil)
    }
    pub fn checked_out_w(&self) -> Option<usize> {
        pool_out(self.w, self.size, self.stride, self.ceil)
    }
    pub fn out_h(&self) -> usize {
        self.checked_out_h().expect("impossible pool shape")
    }
    pub fn out_w(&self) -> usize {
        self.checked_out_w().expect("impossible pool shape")
    }
    pub fn in_len(&self) -> usize {
        self.c * self.h * self.w
    }
    pub fn out_len(&self) -> usize {
        self.c * self.out_h() * self.out_w()
    }
}

fn pool_out(n: usize, size: usize, stride: usize, ceil: bool) -> Option<usize> {
    if size == 0 || stride == 0 || n < size {
        return None;
    }
    let span = n - size;
    let mut out = if ceil { span.div_ceil(stride) + 1 } else { span / stride + 1 };
    // PyTorch's rule: the last window must start inside the input.
    if ceil && (out - 1) * stride >= n {
        out -= 1;
    }
    Some(out)
}

/// Forward: `y` gets each window's maximum, `argmax` the index of that
/// maximum inside its image (`c*H*W + iy*W + ix`), for the backward pass.
/// Ties go to the first element in row-major order, as in PyTorch. (NaN
/// is not propagated: a ReLU before the pool has already dropped it.)
///
/// At a SIMD `isa`, 3x3 stride-2 pools run [`crate::maxpool_simd`]; every
/// other pool, and every pool at [`Isa::Portable`], the portable code. All
/// give the same values and indices bit for bit on every input (a test
/// checks it). Panics if this CPU cannot run `isa`.
pub fn maxpool_forward(isa: Isa, s: &MaxPool2d, n: usize, x: &[f32], y: &mut [f32], argmax: &mut [u32]) {
    isa.require();
    if isa != Isa::Portable && (s.size, s.stride) == (3, 2) {
        // SAFETY: `with_vector` checks that the CPU runs `isa`; the window
        // is 3x3, stride 2.
        return with_vector!(isa, V => unsafe { crate::maxpool_simd::forward::<V>(s, n, x, y, argmax) });
    }
    forward_portable(s, n, x, y, argmax)
}

/// [`maxpool_forward`] in portable code.
fn forward_portable(s: &MaxPool2d, n: usize, x: &[f32], y: &mut [f32], argmax: &mut [u32]) {
    match (s.size, s.stride) {
        // The seed network's pools: a fixed window the compiler unrolls.
        (3, 2) => maxpool_forward_with::<3, 2>(s, n, x, y, argmax),
        (2, 2) => maxpool_forward_with::<2, 2>(s, n, x, y, argmax),
        _ => maxpool_forward_with::<0, 0>(s, n, x, y, argmax),
    }
}

/// `K`, `S` are the window size and stride when known at compile time, or
/// 0 for "read them from `s`".
fn maxpool_forward_with<const K: usize, const S: usize>(
    s: &MaxPool2d,
    n: usize,
    x: &[f32],
    y: &mut [f32],
    argmax: &mut [u32],
) {
    let (size, stride) = if K == 0 { (s.size, s.stride) } else { (K, S) };
    let (ho, wo) = (s.out_h(), s.out_w());
    let plane = s.h * s.w;
    // Windows 0..full lie wholly inside a row; the rest are clipped.
    let full = if s.w >= size { ((s.w - size) / stride + 1).min(wo) } else { 0 };
    let (in_len, out_len) = (s.in_len(), s.out_len());
    let planes = x[..n * in_len].chunks_exact(plane);
    let outs = y[..n * out_len].chunks_exact_mut(ho * wo);
    let args = argmax[..n * out_len].chunks_exact_mut(ho * wo);
    let mut split = Split3s2 {
        even: [[0.0; SPLIT_BLOCK + 1]; 3],
        odd: [[0.0; SPLIT_BLOCK]; 3],
        best: [0.0; SPLIT_BLOCK],
        index: [0; SPLIT_BLOCK],
    };
    for (p, ((src, yp), ap)) in planes.zip(outs).zip(args).enumerate() {
        let base = p % s.c * plane;
        for oy in 0..ho {
            let y0 = oy * stride;
            let y1 = (y0 + size).min(s.h);
            let yrow = &mut yp[oy * wo..(oy + 1) * wo];
            let arow = &mut ap[oy * wo..(oy + 1) * wo];
            if K == 3 && S == 2 && y1 - y0 == 3 {
                // Whole 3x3 windows: even/odd split, vectorised compare-and-keep.
                let rows = &src[y0 * s.w..(y0 + 3) * s.w];
                let at = (base + y0 * s.w) as u32;
                window_max_3s2(rows, s.w, full, at, &mut yrow[..full], &mut arow[..full], &mut split);
                edge_windows(s, src, base, y0, y1, full, yrow, arow);
                continue;
            }
            // Walk the window row by row, keeping the running maximum in the
            // output row itself; a later row wins only if strictly greater.
            for iy in y0..y1 {
                let row = &src[iy * s.w..(iy + 1) * s.w];
                let at = (base + iy * s.w) as u32;
                let first = iy == y0;
                if K == 3 && S == 2 {
                    row_max_3s2(row, full, first, at, &mut yrow[..full], &mut arow[..full]);
                } else {
                    let windows = row.windows(size).step_by(stride);
                    for (ox, ((win, out), arg)) in
                        windows.zip(yrow.iter_mut()).zip(arow.iter_mut()).enumerate()
                    {
                        let (mut bv, mut bi) = (win[0], 0);
                        for (k, &v) in win.iter().enumerate().skip(1) {
                            if v > bv {
                                (bv, bi) = (v, k);
                            }
                        }
                        if first || bv > *out {
                            *out = bv;
                            *arg = at + (ox * stride + bi) as u32;
                        }
                    }
                }
            }
            edge_windows(s, src, base, y0, y1, full, yrow, arow);
        }
    }
}

/// The windows `full..` of one output row, cut off by the right edge.
#[allow(clippy::too_many_arguments)]
fn edge_windows(
    s: &MaxPool2d,
    src: &[f32],
    base: usize,
    y0: usize,
    y1: usize,
    full: usize,
    yrow: &mut [f32],
    arow: &mut [u32],
) {
    for ox in full..yrow.len() {
        let x0 = ox * s.stride;
        let x1 = (x0 + s.size).min(s.w);
        let (mut bv, mut bi) = (src[y0 * s.w + x0], y0 * s.w + x0);
        for iy in y0..y1 {
            for ix in x0..x1 {
                let v = src[iy * s.w + ix];
                if v > bv {
                    (bv, bi) = (v, iy * s.w + ix);
                }
            }
        }
        yrow[ox] = bv;
        arow[ox] = (base + bi) as u32;
    }
}

/// A row of whole 3x3, stride-2 windows over `rows` (three input rows of
/// width `w`); `at` is the image index of `rows[0]`.
///
/// Each block of outputs first splits the three rows into their even and
/// odd columns, so that the nine candidates of every output are contiguous
/// slices; the compare-and-keep is then elementwise over the block (packed
/// compares, the index blended through a bit mask, which the compiler
/// vectorises where an `if` would stay scalar). Candidates go in row-major
/// window order with a strict `>`: the first maximum wins.
fn window_max_3s2(
    rows: &[f32],
    w: usize,
    full: usize,
    at: u32,
    out: &mut [f32],
    arg: &mut [u32],
    split: &mut Split3s2,
) {
    let Split3s2 { even, odd, best, index } = split;
    let mut ox0 = 0;
    while ox0 < full {
        let nb = SPLIT_BLOCK.min(full - ox0);
        for (r, (e, o)) in even.iter_mut().zip(odd.iter_mut()).enumerate() {
            let row = &rows[r * w + 2 * ox0..r * w + 2 * (ox0 + nb) + 1];
            let (e, o) = (&mut e[..nb + 1], &mut o[..nb]);
            for j in 0..nb {
                e[j] = row[2 * j];
                o[j] = row[2 * j + 1];
            }
            e[nb] = row[2 * nb];
        }
        // Whole vectors only: the lanes past `nb` work on stale values and
        // are dropped, which is cheaper than a scalar tail.
        let lanes = nb.next_multiple_of(SPLIT_LANES);
        let (e0, e1, e2) = (&even[0][..lanes + 1], &even[1][..lanes + 1], &even[2][..lanes + 1]);
        let (o0, o1, o2) = (&odd[0][..lanes], &odd[1][..lanes], &odd[2][..lanes]);
        let (bests, indices) = (&mut best[..lanes], &mut index[..lanes]);
        let w = w as u32;
        for j in 0..lanes {
            let i = at + 2 * (ox0 + j) as u32;
            let (mut bv, mut bi) = (e0[j], i);
            keep_greater(o0[j], i + 1, &mut bv, &mut bi);
            keep_greater(e0[j + 1], i + 2, &mut bv, &mut bi);
            keep_greater(e1[j], i + w, &mut bv, &mut bi);
            keep_greater(o1[j], i + w + 1, &mut bv, &mut bi);
            keep_greater(e1[j + 1], i + w + 2, &mut bv, &mut bi);
            keep_greater(e2[j], i + 2 * w, &mut bv, &mut bi);
            keep_greater(o2[j], i + 2 * w + 1, &mut bv, &mut bi);
            keep_greater(e2[j + 1], i + 2 * w + 2, &mut bv, &mut bi);
            bests[j] = bv;
            indices[j] = bi;
        }
        out[ox0..ox0 + nb].copy_from_slice(&bests[..nb]);
        arg[ox0..ox0 + nb].copy_from_slice(&indices[..nb]);
        ox0 += nb;
    }
}

/// Outputs per block of [`window_max_3s2`].
const SPLIT_BLOCK: usize = 64;

/// [`window_max_3s2`] computes whole multiples of this many outputs.
const SPLIT_LANES: usize = 8;

/// The even and odd columns of three input rows for one block of outputs,
/// and the block's results.
struct Split3s2 {
    even: [[f32; SPLIT_BLOCK + 1]; 3],
    odd: [[f32; SPLIT_BLOCK]; 3],
    best: [f32; SPLIT_BLOCK],
    index: [u32; SPLIT_BLOCK],
}

/// `(bv, bi) = (v, idx)` if `v > bv`, branch-free.
#[inline(always)]
fn keep_greater(v: f32, idx: u32, bv: &mut f32, bi: &mut u32) {
    let gt = v > *bv;
    let mask = (gt as u32).wrapping_neg();
    *bi = (idx & mask) | (*bi & !mask);
    *bv = if gt { v } else { *bv };
}

/// One input row's contribution to a row of 3-wide, stride-2 windows:
/// each candidate is compared with the running best in turn (the same
/// sequence as [`window_max_3s2`], so NaN inputs also give the same
/// result), written branch-free so the compiler can vectorise it.
fn row_max_3s2(row: &[f32], full: usize, first: bool, at: u32, out: &mut [f32], arg: &mut [u32]) {
    let row = &row[..2 * full + 1];
    for (ox, (o, g)) in out.iter_mut().zip(arg.iter_mut()).enumerate() {
        let i = 2 * ox;
        let i32 = at + i as u32;
        let (mut bv, mut bi) = if first { (row[i], i32) } else { (*o, *g) };
        if !first {
            keep_greater(row[i], i32, &mut bv, &mut bi);
        }
        keep_greater(row[i + 1], i32 + 1, &mut bv, &mut bi);
        keep_greater(row[i + 2], i32 + 2, &mut bv, &mut bi);
        *o = bv;
        *g = bi;
    }
}

/// Backward: `dx` is overwritten; each output's gradient is added to the
/// input element that won its window (windows may overlap), in output
/// order. `argmax` must come from [`maxpool_forward`] of the same shape:
/// every winner lies inside its window.
///
/// An input row is zeroed just before the first output row whose windows
/// reach it, not the whole of `dx` first: a separate pass over an 80 KB
/// plane set per image (the seed network's pool1) went to memory and back.
pub fn maxpool_backward(s: &MaxPool2d, n: usize, dy: &[f32], argmax: &[u32], dx: &mut [f32]) {
    backward_masked(s, n, dy, None, argmax, dx)
}

/// [`maxpool_backward`] of a max pool followed by a ReLU, from the ReLU's
/// output gradient `dy` and output `y`: each output's gradient is taken
/// where `y` is positive, else 0, as [`crate::relu_backward`] would give
/// it, then added to its window's winner. The same bits as the two passes
/// without the pass between them.
pub fn maxpool_relu_backward(s: &MaxPool2d, n: usize, dy: &[f32], y: &[f32], argmax: &[u32], dx: &mut [f32]) {
    assert!(y.len() >= n * s.out_len(), "maxpool_relu_backward: y too short");
    backward_masked(s, n, dy, Some(y), argmax, dx)
}

/// [`maxpool_backward`], each gradient masked by the ReLU output `relu`
/// when there is one.
fn backward_masked(
    s: &MaxPool2d,
    n: usize,
    dy: &[f32],
    relu: Option<&[f32]>,
    argmax: &[u32],
    dx: &mut [f32],
) {
    let (in_len, out_len, plane) = (s.in_len(), s.out_len(), s.h * s.w);
    let (ho, wo) = (s.out_h(), s.out_w());
    for i in 0..n {
        let dxi = &mut dx[i * in_len..(i + 1) * in_len];
        let dyi = &dy[i * out_len..(i + 1) * out_len];
        let ai = &argmax[i * out_len..(i + 1) * out_len];
        let yi = relu.map(|y| &y[i * out_len..(i + 1) * out_len]);
        for c in 0..s.c {
            // rows 0..zeroed of plane c are zero or hold gradients
            let mut zeroed = 0;
            for oy in 0..ho {
                let reach = (oy * s.stride + s.size).min(s.h);
                if reach > zeroed {
                    dxi[c * plane + zeroed * s.w..c * plane + reach * s.w].fill(0.0);
                    zeroed = reach;
                }
                let o = (c * ho + oy) * wo;
                let (grads, winners) = (&dyi[o..o + wo], &ai[o..o + wo]);
                match yi {
                    None => {
                        for (&g, &a) in grads.iter().zip(winners) {
                            dxi[a as usize] += g;
                        }
                    }
                    Some(yi) => {
                        for ((&g, &a), &v) in grads.iter().zip(winners).zip(&yi[o..o + wo]) {
                            dxi[a as usize] += if v > 0.0 { g } else { 0.0 };
                        }
                    }
                }
            }
            dxi[c * plane + zeroed * s.w..(c + 1) * plane].fill(0.0);
        }
    }
}

/// Global average pooling forward: `y[n, c] = mean of plane x[n, c, :]`,
/// where each plane has `hw` elements.
pub fn gap_forward(c: usize, hw: usize, n: usize, x: &[f32], y: &mut [f32]) {
    let inv = 1.0 / hw as f32;
    for (plane, out) in x[..n * c * hw].chunks_exact(hw).zip(&mut y[..n * c]) {
        *out = plane.iter().sum::<f32>() * inv;
    }
}

/// Global average pooling backward: every element of a plane receives the
/// plane's output gradient divided by `hw`. `dx` is overwritten.
pub fn gap_backward(c: usize, hw: usize, n: usize, dy: &[f32], dx: &mut [f32]) {
    let inv = 1.0 / hw as f32;
    for (plane, g) in dx[..n * c * hw].chunks_exact_mut(hw).zip(&dy[..n * c]) {
        plane.fill(g * inv);
    }
}
