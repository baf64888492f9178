//! Naive f64 versions of every forward kernel, one image at a time.
//!
//! They exist to be obviously right, not fast: the test oracle for the f32
//! kernels, and the function whose central finite differences (in f64)
//! check every backward pass, per layer and for whole networks.

use crate::conv::Conv2d;
use crate::dense::Dense;
use crate::loss::Loss;
use crate::pool::MaxPool2d;

/// Direct convolution of one image `x[C, H, W]` with `w[F, C, kh, kw]`.
pub fn conv2d(s: &Conv2d, x: &[f64], w: &[f64], b: Option<&[f64]>) -> Vec<f64> {
    let (ho, wo) = (s.out_h(), s.out_w());
    let mut y = vec![0.0; s.c_out * ho * wo];
    for f in 0..s.c_out {
        for oy in 0..ho {
            for ox in 0..wo {
                let mut acc = b.map_or(0.0, |b| b[f]);
                for c in 0..s.c_in {
                    for ki in 0..s.kh {
                        for kj in 0..s.kw {
                            let iy = (oy * s.stride + ki) as isize - s.pad as isize;
                            let ix = (ox * s.stride + kj) as isize - s.pad as isize;
                            if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize {
                                continue;
                            }
                            let xv = x[(c * s.h + iy as usize) * s.w + ix as usize];
                            acc += xv * w[((f * s.c_in + c) * s.kh + ki) * s.kw + kj];
                        }
                    }
                }
                y[(f * ho + oy) * wo + ox] = acc;
            }
        }
    }
    y
}

/// Max over each (possibly edge-clipped) window of one image.
pub fn maxpool(s: &MaxPool2d, x: &[f64]) -> Vec<f64> {
    let (ho, wo) = (s.out_h(), s.out_w());
    let mut y = Vec::with_capacity(s.c * ho * wo);
    for c in 0..s.c {
        for oy in 0..ho {
            for ox in 0..wo {
                let mut m = f64::NEG_INFINITY;
                for iy in oy * s.stride..(oy * s.stride + s.size).min(s.h) {
                    for ix in ox * s.stride..(ox * s.stride + s.size).min(s.w) {
                        m = m.max(x[(c * s.h + iy) * s.w + ix]);
                    }
                }
                y.push(m);
            }
        }
    }
    y
}

/// Mean of each of the `c` planes of `hw` elements.
pub fn gap(c: usize, hw: usize, x: &[f64]) -> Vec<f64> {
    (0..c).map(|i| x[i * hw..(i + 1) * hw].iter().sum::<f64>() / hw as f64).collect()
}

pub fn relu(x: &[f64]) -> Vec<f64> {
    x.iter().map(|v| v.max(0.0)).collect()
}

/// One sample: `y = W x + b`.
pub fn dense(s: &Dense, x: &[f64], w: &[f64], b: Option<&[f64]>) -> Vec<f64> {
    (0..s.outputs)
        .map(|o| {
            let row = &w[o * s.inputs..(o + 1) * s.inputs];
            let dot: f64 = row.iter().zip(x).map(|(a, b)| a * b).sum();
            dot + b.map_or(0.0, |b| b[o])
        })
        .collect()
}

pub fn softmax(z: &[f64]) -> Vec<f64> {
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|v| (v - max).exp()).collect();
    let total: f64 = e.iter().sum();
    e.iter().map(|v| v / total).collect()
}

/// The loss of one row of logits, as `loss::softmax_loss_forward` defines it.
pub fn softmax_loss(loss: Loss, z: &[f64], label: usize) -> f64 {
    let p = softmax(z);
    match loss {
        Loss::CrossEntropy => -p[label].ln(),
        Loss::SquaredError | Loss::SeedSquaredError => 0.5 * seed_error(z, label),
    }
}

/// The blog's error metric for one row: `sum_k (p_k - onehot_k)^2`.
pub fn seed_error(z: &[f64], label: usize) -> f64 {
    softmax(z).iter().enumerate().map(|(j, p)| (p - if j == label { 1.0 } else { 0.0 }).powi(2)).sum()
}

/// Batch normalisation in training mode over a whole batch of images, each
/// `[c, hw]`: per channel, the batch's mean and biased variance.
pub fn batch_norm_train(
    c: usize,
    hw: usize,
    eps: f64,
    batch: &[Vec<f64>],
    gamma: &[f64],
    beta: &[f64],
) -> Vec<Vec<f64>> {
    let count = (batch.len() * hw) as f64;
    let mut out: Vec<Vec<f64>> = batch.to_vec();
    for ch in 0..c {
        let values = || batch.iter().flat_map(|x| x[ch * hw..(ch + 1) * hw].iter().copied());
        let mean = values().sum::<f64>() / count;
        let var = values().map(|v| (v - mean) * (v - mean)).sum::<f64>() / count;
        let invstd = 1.0 / (var + eps).sqrt();
        for (x, y) in batch.iter().zip(&mut out) {
            for i in ch * hw..(ch + 1) * hw {
                y[i] = (x[i] - mean) * invstd * gamma[ch] + beta[ch];
            }
        }
    }
    out
}

/// Batch normalisation in evaluation mode of one image `[c, hw]`, with the
/// running statistics.
pub fn batch_norm_eval(
    c: usize,
    hw: usize,
    eps: f64,
    x: &[f64],
    running: &[f64],
    gamma: &[f64],
    beta: &[f64],
) -> Vec<f64> {
    let mut y = x.to_vec();
    for ch in 0..c {
        let invstd = 1.0 / (running[c + ch] + eps).sqrt();
        for v in &mut y[ch * hw..(ch + 1) * hw] {
            *v = (*v - running[ch]) * invstd * gamma[ch] + beta[ch];
        }
    }
    y
}
