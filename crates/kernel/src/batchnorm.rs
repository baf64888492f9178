//! Batch normalisation, per channel (after a convolution) or per unit
//! (after a dense layer, `hw = 1`), as PyTorch's `BatchNorm2d`/`BatchNorm1d`.
//!
//! In training the statistics are those of the whole mini-batch, which the
//! caller splits over lanes (and processes). So the kernels come in pieces:
//! each lane computes partial sums over its images ([`batch_norm_moments`],
//! [`batch_norm_grad_sums`]), the caller adds the partials of every lane in
//! a fixed order, then each lane normalises ([`batch_norm_forward`]) or
//! takes the input gradient ([`batch_norm_backward`]) with the totals.
//!
//! The partial sums are f64: the variance is `E[x^2] - E[x]^2`, one pass,
//! which loses about `log2(mean^2 / var)` of f64's 53 bits to cancellation,
//! harmless for activations; in f32 it would not be. They are summed over
//! four accumulators per plane in a fixed pattern, so the bits do not
//! depend on the ISA: the kernels are the same source at every ISA, only
//! compiled for its vector width (`at_isa`).

use crate::isa::Isa;
use crate::simd::Vector;

/// Run `f` compiled for `isa`'s vector width (plain code for portable).
/// The same operations in the same order, and Rust never fuses a multiply
/// and an add, so the bits are the same at every ISA; only the speed is not.
/// `f` and what it calls must be `#[inline(always)]`: code left out of line
/// is compiled for the baseline (SSE2) whatever the ISA.
#[inline(always)]
fn at_isa<R>(isa: Isa, f: impl FnOnce() -> R) -> R {
    if isa == Isa::Portable {
        return f();
    }
    // SAFETY: `with_vector!` checks that this CPU runs `isa`.
    with_vector!(isa, V => unsafe { <V as Vector>::outline(f) })
}

/// A batch-norm layer's shape and constants.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNorm {
    /// Channels (or units) normalised separately.
    pub c: usize,
    /// Values per channel per image: `H * W`, 1 after a dense layer.
    pub hw: usize,
    pub eps: f32,
    /// Weight of the new batch in the running statistics (PyTorch's).
    pub momentum: f32,
}

impl BatchNorm {
    /// Values per image.
    pub fn len(&self) -> usize {
        self.c * self.hw
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `(sum a, sum a*b)` of two equal-length planes in f64, over four
/// accumulators in a fixed pattern (so the compiler may vectorise it
/// without changing a bit). Inlined, so that it is compiled for the
/// caller's ISA (`at_isa`): a call leaves the baseline's SSE2 code.
#[inline(always)]
fn sums(a: &[f32], b: &[f32]) -> (f64, f64) {
    let (mut s, mut q) = ([0.0f64; 4], [0.0f64; 4]);
    let (ac, bc) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (a4, b4) in ac.zip(bc) {
        for k in 0..4 {
            let (x, y) = (a4[k] as f64, b4[k] as f64);
            s[k] += x;
            q[k] += x * y;
        }
    }
    for (k, (&x, &y)) in ar.iter().zip(br).enumerate() {
        s[k] += x as f64;
        q[k] += x as f64 * y as f64;
    }
    ((s[0] + s[1]) + (s[2] + s[3]), (q[0] + q[1]) + (q[2] + q[3]))
}

/// Partial sums of `x[m, c, hw]` per channel: `out[ch] = sum x`,
/// `out[c + ch] = sum x^2`, over the `m` images (overwritten).
pub fn batch_norm_moments(isa: Isa, bn: &BatchNorm, m: usize, x: &[f32], out: &mut [f64]) {
    let (c, hw) = (bn.c, bn.hw);
    let out = &mut out[..2 * c];
    out.fill(0.0);
    at_isa(
        isa,
        #[inline(always)]
        || {
            for image in x[..m * bn.len()].chunks_exact(bn.len()) {
                for (ch, plane) in image.chunks_exact(hw).enumerate() {
                    let (s, q) = sums(plane, plane);
                    out[ch] += s;
                    out[c + ch] += q;
                }
            }
        },
    )
}

/// The batch's statistics from the whole batch's [`batch_norm_moments`]
/// over `count` values per channel (`images * hw`): `stats[..c]` = mean,
/// `stats[c..]` = 1 / sqrt(biased variance + eps). The running statistics
/// `running[..c]` (mean) and `running[c..]` (variance) move towards the
/// batch's by `momentum`, with the unbiased variance, as PyTorch's do.
pub fn batch_norm_stats(
    bn: &BatchNorm,
    count: usize,
    moments: &[f64],
    stats: &mut [f32],
    running: &mut [f32],
) {
    let c = bn.c;
    let n = count as f64;
    let mom = bn.momentum as f64;
    for ch in 0..c {
        let mean = moments[ch] / n;
        let var = (moments[c + ch] / n - mean * mean).max(0.0);
        let unbiased = if count > 1 { var * n / (n - 1.0) } else { var };
        stats[ch] = mean as f32;
        stats[c + ch] = (1.0 / (var + bn.eps as f64).sqrt()) as f32;
        running[ch] = ((1.0 - mom) * running[ch] as f64 + mom * mean) as f32;
        running[c + ch] = ((1.0 - mom) * running[c + ch] as f64 + mom * unbiased) as f32;
    }
}

/// `y = (x - mean) * invstd * gamma + beta` per channel over `m` images,
/// with `stats` as [`batch_norm_stats`] leaves them (training), or built
/// by [`batch_norm_running_stats`] (evaluation).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_forward(
    isa: Isa,
    bn: &BatchNorm,
    m: usize,
    x: &[f32],
    stats: &[f32],
    gamma: &[f32],
    beta: &[f32],
    y: &mut [f32],
) {
    let (c, hw, len) = (bn.c, bn.hw, bn.len());
    at_isa(
        isa,
        #[inline(always)]
        || {
            for (image, out) in x[..m * len].chunks_exact(len).zip(y[..m * len].chunks_exact_mut(len)) {
                for ch in 0..c {
                    let scale = gamma[ch] * stats[c + ch];
                    let shift = beta[ch] - stats[ch] * scale;
                    let (plane, dst) = (&image[ch * hw..][..hw], &mut out[ch * hw..][..hw]);
                    for (d, &v) in dst.iter_mut().zip(plane) {
                        *d = v * scale + shift;
                    }
                }
            }
        },
    )
}

/// Evaluation's statistics, in [`batch_norm_forward`]'s layout, from the
/// running mean and variance: `stats[..c]` = mean, `stats[c..]` =
/// 1 / sqrt(var + eps).
pub fn batch_norm_running_stats(bn: &BatchNorm, running: &[f32], stats: &mut [f32]) {
    let c = bn.c;
    for ch in 0..c {
        stats[ch] = running[ch];
        stats[c + ch] = (1.0 / (running[c + ch] as f64 + bn.eps as f64).sqrt()) as f32;
    }
}

/// Partial sums of the backward pass over `m` images, per channel:
/// `out[ch] = sum dy`, `out[c + ch] = sum dy * xhat` (overwritten), where
/// `xhat = (x - mean) * invstd` with the forward pass's `stats`. Summed over
/// the whole batch they are the bias and weight gradients.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_grad_sums(
    isa: Isa,
    bn: &BatchNorm,
    m: usize,
    x: &[f32],
    dy: &[f32],
    stats: &[f32],
    out: &mut [f64],
) {
    let (c, hw, len) = (bn.c, bn.hw, bn.len());
    let out = &mut out[..2 * c];
    out.fill(0.0);
    at_isa(
        isa,
        #[inline(always)]
        || {
            for (image, grad) in x[..m * len].chunks_exact(len).zip(dy[..m * len].chunks_exact(len)) {
                for ch in 0..c {
                    let (plane, g) = (&image[ch * hw..][..hw], &grad[ch * hw..][..hw]);
                    // sum dy * (x - mean) = sum dy*x - mean * sum dy, then times invstd.
                    let (s, q) = sums(g, plane);
                    out[ch] += s;
                    out[c + ch] += q - stats[ch] as f64 * s;
                }
            }
        },
    );
    for ch in 0..c {
        out[c + ch] *= stats[c + ch] as f64;
    }
}

/// The input gradient over `m` images, from the whole batch's
/// [`batch_norm_grad_sums`] `totals` over `count` values per channel:
/// `dx = gamma * invstd * (dy - sum dy / count - xhat * sum(dy xhat) / count)`.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward(
    isa: Isa,
    bn: &BatchNorm,
    m: usize,
    count: usize,
    x: &[f32],
    dy: &[f32],
    stats: &[f32],
    gamma: &[f32],
    totals: &[f64],
    dx: &mut [f32],
) {
    let (c, hw, len) = (bn.c, bn.hw, bn.len());
    let n = count as f64;
    at_isa(
        isa,
        #[inline(always)]
        || {
            for ((image, grad), out) in x[..m * len]
                .chunks_exact(len)
                .zip(dy[..m * len].chunks_exact(len))
                .zip(dx[..m * len].chunks_exact_mut(len))
            {
                for ch in 0..c {
                    let (mean, invstd) = (stats[ch], stats[c + ch]);
                    let k = gamma[ch] * invstd;
                    let a = (totals[ch] / n) as f32;
                    let b = (totals[c + ch] / n) as f32;
                    let (plane, g, dst) =
                        (&image[ch * hw..][..hw], &grad[ch * hw..][..hw], &mut out[ch * hw..][..hw]);
                    for ((d, &v), &gy) in dst.iter_mut().zip(plane).zip(g) {
                        let xhat = (v - mean) * invstd;
                        *d = k * (gy - a - xhat * b);
                    }
                }
            }
        },
    )
}

/// A lane's weight and bias gradients from its [`batch_norm_grad_sums`]:
/// overwritten, or added to when `accumulate`.
pub fn batch_norm_param_grads(
    bn: &BatchNorm,
    sums: &[f64],
    dw: &mut [f32],
    db: &mut [f32],
    accumulate: bool,
) {
    let c = bn.c;
    for ch in 0..c {
        let (w, b) = (sums[c + ch] as f32, sums[ch] as f32);
        if accumulate {
            dw[ch] += w;
            db[ch] += b;
        } else {
            dw[ch] = w;
            db[ch] = b;
        }
    }
}
