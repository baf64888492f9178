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
//! The kernels with SIMD versions (the 3x3 convolutions in [`direct`], the
//! 3x3/2 max pool in [`maxpool_simd`], the dense layers in [`dense_simd`])
//! take an [`Isa`] first: their SIMD code is written once over the vector
//! trait [`simd::Vector`] and instantiated for AVX-512 and AVX2;
//! [`Isa::Portable`] runs the portable code (im2col, matrixmultiply, scalar
//! loops). [`Isa::detect`] picks the best one this CPU runs (or the one
//! `GAPNET_ISA` names). Tests run every ISA the CPU has, and the SIMD code
//! on a portable vector type too.

/// Run `$body` with the type `$V` set to the [`simd::Vector`] of `$isa`, a
/// SIMD ISA, after checking that this CPU runs it (panics otherwise, and on
/// [`Isa::Portable`], which has no vector type).
macro_rules! with_vector {
    ($isa:expr, $V:ident => $body:expr) => {{
        let isa: $crate::isa::Isa = $isa;
        isa.require();
        match isa {
            #[cfg(target_arch = "x86_64")]
            $crate::isa::Isa::Avx512 => {
                type $V = $crate::simd::Avx512;
                $body
            }
            #[cfg(target_arch = "x86_64")]
            $crate::isa::Isa::Avx2 => {
                type $V = $crate::simd::Avx2;
                $body
            }
            _ => unreachable!("no SIMD kernels for {isa}"),
        }
    }};
}

pub mod activation;
pub mod batchnorm;
pub mod conv;
pub mod dense;
pub mod dense_simd;
pub mod direct;
pub mod fused;
pub mod gemm;
pub mod isa;
pub mod loss;
pub mod maxpool_simd;
pub mod pool;
pub mod reduce;
pub mod reference;
pub mod simd;

pub use activation::{relu_backward, relu_forward};
pub use batchnorm::{
    batch_norm_backward, batch_norm_forward, batch_norm_grad_sums, batch_norm_moments,
    batch_norm_param_grads, batch_norm_running_stats, batch_norm_stats, BatchNorm,
};
pub use conv::{
    col2im, conv2d_backward, conv2d_backward_via, conv2d_forward, conv2d_forward_via, im2col, Conv2d,
    ConvPath,
};
pub use dense::{dense_backward, dense_forward, dense_input_grad, Dense};
pub use fused::{conv2d_maxpool_forward, conv2d_maxpool_scratch_len};
pub use isa::Isa;
pub use loss::{
    argmax, seed_quirk_weight_delta, softmax_loss_backward, softmax_loss_forward, Loss, LossSums,
};
pub use pool::{
    gap_backward, gap_forward, maxpool_backward, maxpool_forward, maxpool_relu_backward, MaxPool2d,
};
