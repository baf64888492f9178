//! A convolution, the max pool after it and optionally a ReLU after that,
//! forward, one image at a time: each image's convolution output is pooled
//! while it is still in cache (a 20-plane 32x32 output is 80 KiB; a lane's
//! chunk of 8 is 640 KiB, more than a core's L2), and neither the pool's
//! input nor its output before the ReLU goes to the caller's memory. The
//! same kernels run as when the layers run one after the other, so the
//! outputs and argmax indices are the same bits.

use crate::activation::relu_in_place;
use crate::conv::{conv2d_forward_via, Conv2d, ConvPath};
use crate::isa::Isa;
use crate::pool::{maxpool_forward, MaxPool2d};

/// Scratch floats [`conv2d_maxpool_forward`] needs: one image's
/// convolution output and the convolution's scratch for one image.
pub fn conv2d_maxpool_scratch_len(conv: &Conv2d) -> usize {
    conv.out_len() + conv.scratch_len(1)
}

/// `y[n, pool out]` and `argmax` = the max pool `pool` of the convolution
/// `conv` (on `path`) of `x[n, conv in]`, and with `relu` a ReLU of that:
/// what [`conv2d_forward_via`], [`maxpool_forward`] and
/// [`crate::relu_forward`] give, image by image. `pool` takes `conv`'s
/// output; `scratch` holds at least [`conv2d_maxpool_scratch_len`] floats.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_maxpool_forward(
    isa: Isa,
    path: ConvPath,
    conv: &Conv2d,
    pool: &MaxPool2d,
    n: usize,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    argmax: &mut [u32],
    scratch: &mut [f32],
    relu: bool,
) {
    let (c_in, c_out, p_out) = (conv.in_len(), conv.out_len(), pool.out_len());
    assert_eq!(
        (pool.c, pool.h, pool.w),
        (conv.c_out, conv.out_h(), conv.out_w()),
        "conv2d_maxpool_forward: the pool does not take the convolution's output"
    );
    assert!(x.len() >= n * c_in && y.len() >= n * p_out && argmax.len() >= n * p_out);
    let (out, scratch) = scratch.split_at_mut(c_out);
    for i in 0..n {
        conv2d_forward_via(isa, path, conv, 1, &x[i * c_in..(i + 1) * c_in], w, bias, out, scratch);
        let (yi, ai) = (&mut y[i * p_out..(i + 1) * p_out], &mut argmax[i * p_out..(i + 1) * p_out]);
        maxpool_forward(isa, pool, 1, out, yi, ai);
        if relu {
            relu_in_place(yi);
        }
    }
}
