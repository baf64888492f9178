//! Fully connected layer over `n` flattened inputs: the SIMD kernels of
//! [`crate::dense_simd`] at a SIMD [`Isa`], SGEMM (`matrixmultiply`, which
//! picks its own kernel from the CPU) at [`Isa::Portable`].
//! Weights are `[outputs, inputs]` (PyTorch's `nn.Linear` layout).

use crate::gemm::{sgemm, Mat};
use crate::isa::Isa;

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

/// `y[n, out] = x[n, in] x Wᵀ + b`, at `isa` (panics if this CPU cannot
/// run it).
pub fn dense_forward(
    isa: Isa,
    s: &Dense,
    n: usize,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    if isa == Isa::Portable {
        return forward_sgemm(s, n, x, w, bias, y);
    }
    // SAFETY: `with_vector` checks that the CPU runs `isa`.
    with_vector!(isa, V => unsafe { crate::dense_simd::forward::<V>(s, n, x, w, bias, y) })
}

/// [`dense_forward`] through `matrixmultiply`.
fn forward_sgemm(s: &Dense, n: usize, x: &[f32], w: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
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

/// Backward at `isa`. `dw[out, in] = dyᵀ x x` summed over the `n` samples
/// (added to the old contents when `accumulate`), likewise `db`;
/// `dx[n, in] = dy x W` is overwritten when given.
#[allow(clippy::too_many_arguments)]
pub fn dense_backward(
    isa: Isa,
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
    if isa == Isa::Portable {
        return backward_sgemm(s, n, x, w, dy, dx, dw, db, accumulate);
    }
    isa.require();
    bias_grad(s, n, dy, db, accumulate);
    // SAFETY: `with_vector` checks that the CPU runs `isa`.
    with_vector!(isa, V => unsafe { crate::dense_simd::backward::<V>(s, n, x, w, dy, dx, dw, accumulate) })
}

/// [`dense_backward`] through `matrixmultiply`.
#[allow(clippy::too_many_arguments)]
fn backward_sgemm(
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
        input_grad_sgemm(s, n, w, dy, dx);
    }
}

/// `dx[n, in] = dy x W` alone: the input gradient of [`dense_backward`],
/// for a caller whose weight gradient comes from another delta (the
/// original engine's output layer, [`crate::loss::seed_quirk_weight_delta`]).
/// Same bits as the `dx` of [`dense_backward`] at the same `isa`.
pub fn dense_input_grad(isa: Isa, s: &Dense, n: usize, w: &[f32], dy: &[f32], dx: &mut [f32]) {
    if isa == Isa::Portable {
        return input_grad_sgemm(s, n, w, dy, dx);
    }
    // SAFETY: `with_vector` checks that the CPU runs `isa`.
    with_vector!(isa, V => unsafe { crate::dense_simd::input_grad::<V>(s, n, w, dy, dx) })
}

/// [`dense_input_grad`] through `matrixmultiply`.
fn input_grad_sgemm(s: &Dense, n: usize, w: &[f32], dy: &[f32], dx: &mut [f32]) {
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
