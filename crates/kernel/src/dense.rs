//! Fully connected layer over `n` flattened inputs: AVX-512 kernels where
//! the CPU has them ([`crate::dense_avx512`]), else SGEMM.
//! Weights are `[outputs, inputs]` (PyTorch's `nn.Linear` layout).

use crate::gemm::{sgemm, Mat};

/// Shape of one dense layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dense {
    pub inputs: usize,
    pub outputs: usize,
}

impl Dense {
    pub fn weight_len(&self) -> usize {
        self.inputs * self.outputs
    }
    /// Multiply-adds of one sample's forward pass.
    pub fn macs(&self) -> usize {
        self.inputs * self.outputs
    }
}

/// `y[n, out] = x[n, in] x Wᵀ + b`.
pub fn dense_forward(s: &Dense, n: usize, x: &[f32], w: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx512() {
        // SAFETY: the CPU has AVX-512F.
        unsafe { crate::dense_avx512::forward(s, n, x, w, bias, y) };
        return;
    }
    dense_forward_portable(s, n, x, w, bias, y)
}

/// [`dense_forward`] through `matrixmultiply`, on any CPU.
pub fn dense_forward_portable(
    s: &Dense,
    n: usize,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let xm = Mat::rows(&x[..n * s.inputs], n, s.inputs);
    let wm = Mat::rows(&w[..s.weight_len()], s.outputs, s.inputs);
    let y = &mut y[..n * s.outputs];
    sgemm(1.0, xm, wm.t(), 0.0, y);
    if let Some(b) = bias {
        for row in y.chunks_exact_mut(s.outputs) {
            row.iter_mut().zip(b).for_each(|(v, bv)| *v += bv);
        }
    }
}

/// Backward. `dw[out, in] = dyᵀ x x` summed over the `n` samples (added to
/// the old contents when `accumulate`), likewise `db`; `dx[n, in] = dy x W`
/// is overwritten when given.
#[allow(clippy::too_many_arguments)]
pub fn dense_backward(
    s: &Dense,
    n: usize,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    dx: Option<&mut [f32]>,
    dw: &mut [f32],
    db: Option<&mut [f32]>,
    accumulate: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx512() {
        bias_grad(s, n, dy, db, accumulate);
        // SAFETY: the CPU has AVX-512F.
        unsafe { crate::dense_avx512::backward(s, n, x, w, dy, dx, dw, accumulate) };
        return;
    }
    dense_backward_portable(s, n, x, w, dy, dx, dw, db, accumulate)
}

/// [`dense_backward`] through `matrixmultiply`, on any CPU.
#[allow(clippy::too_many_arguments)]
pub fn dense_backward_portable(
    s: &Dense,
    n: usize,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    dx: Option<&mut [f32]>,
    dw: &mut [f32],
    db: Option<&mut [f32]>,
    accumulate: bool,
) {
    let beta = if accumulate { 1.0 } else { 0.0 };
    let xm = Mat::rows(&x[..n * s.inputs], n, s.inputs);
    let dym = Mat::rows(&dy[..n * s.outputs], n, s.outputs);
    sgemm(1.0, dym.t(), xm, beta, &mut dw[..s.weight_len()]);
    bias_grad(s, n, dy, db, accumulate);
    if let Some(dx) = dx {
        dense_input_grad_portable(s, n, w, dy, dx);
    }
}

/// `dx[n, in] = dy x W` alone: the input gradient of [`dense_backward`],
/// for a caller whose weight gradient comes from another delta (the
/// original engine's output layer, [`crate::loss::seed_quirk_weight_delta`]).
/// Same bits as the `dx` of [`dense_backward`].
pub fn dense_input_grad(s: &Dense, n: usize, w: &[f32], dy: &[f32], dx: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx512() {
        // SAFETY: the CPU has AVX-512F.
        unsafe { crate::dense_avx512::input_grad(s, n, w, dy, dx) };
        return;
    }
    dense_input_grad_portable(s, n, w, dy, dx)
}

/// [`dense_input_grad`] through `matrixmultiply`, on any CPU.
pub fn dense_input_grad_portable(s: &Dense, n: usize, w: &[f32], dy: &[f32], dx: &mut [f32]) {
    let dym = Mat::rows(&dy[..n * s.outputs], n, s.outputs);
    let wm = Mat::rows(&w[..s.weight_len()], s.outputs, s.inputs);
    sgemm(1.0, dym, wm, 0.0, &mut dx[..n * s.inputs]);
}

/// `db (+)= column sums of dy[n, out]`, image by image.
fn bias_grad(s: &Dense, n: usize, dy: &[f32], db: Option<&mut [f32]>, accumulate: bool) {
    if let Some(db) = db {
        let db = &mut db[..s.outputs];
        if !accumulate {
            db.fill(0.0);
        }
        for row in dy[..n * s.outputs].chunks_exact(s.outputs) {
            db.iter_mut().zip(row).for_each(|(g, v)| *g += v);
        }
    }
}
