//! Numeric kernels of the engine: plain forward and backward functions over
//! flat `f32` slices in NCHW layout, with explicit shapes.
//!
//! Rules every kernel keeps: no heap allocation, no hidden state, scratch
//! passed in by the caller. Kernels work on `n` images one after another;
//! parallelism over the batch belongs to the caller (the graph crate runs
//! fixed lanes of images with rayon and reduces with [`reduce::sum_in_order`]
//! so results do not depend on the thread count).
//!
//! [`reference`] holds naive f64 versions of every forward kernel: the test
//! oracle and the function finite differences are taken of.
//!
//! On x86-64 CPUs with AVX-512F the convolutions ([`direct`]), the 3x3/2 max
//! pool ([`maxpool_avx512`]) and the dense layers ([`dense_avx512`]) run
//! hand-written `std::arch` kernels, picked at run time by the public
//! functions; every other CPU runs the portable code (im2col, matrixmultiply,
//! scalar loops). Tests run both wherever they can.

pub mod activation;
pub mod conv;
pub mod dense;
#[cfg(target_arch = "x86_64")]
pub mod dense_avx512;
#[cfg(target_arch = "x86_64")]
pub mod direct;
pub mod gemm;
pub mod loss;
#[cfg(target_arch = "x86_64")]
pub mod maxpool_avx512;
pub mod pool;
pub mod reduce;
pub mod reference;
pub mod simd;

pub use activation::{relu_backward, relu_forward};
pub use conv::{
    col2im, conv2d_backward, conv2d_backward_via, conv2d_forward, conv2d_forward_via, im2col, Conv2d,
    ConvPath,
};
pub use dense::{
    dense_backward, dense_backward_portable, dense_forward, dense_forward_portable, dense_input_grad,
    dense_input_grad_portable, Dense,
};
pub use loss::{
    argmax, seed_quirk_weight_delta, softmax_loss_backward, softmax_loss_forward, Loss, LossSums,
};
pub use pool::{
    gap_backward, gap_forward, maxpool_backward, maxpool_forward, maxpool_forward_portable, MaxPool2d,
};
