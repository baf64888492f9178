//! Softmax losses over `n` rows of `k` logits.
//!
//! Two losses share the softmax:
//! - cross-entropy, `-ln p[label]`, the modern choice;
//! - the original engine's squared error on the softmax outputs,
//!   `0.5 * sum_k (p_k - t_k)^2`, whose gradient `p - t` is pushed back
//!   through the full softmax Jacobian.
//!
//! Whatever the loss, the blog's "error" metric `sum_k (p_k - t_k)^2` and
//! the number of correct predictions are reported beside it.
//!
//! [`Loss::SeedSquaredError`] is the squared error as the original engine
//! trains it, with a quirk of its softmax layer: the output layer's *weight*
//! gradient keeps only the last class's term of the Jacobian product
//! ([`seed_quirk_weight_delta`]), while the gradient passed further down
//! ([`softmax_loss_backward`]) is the full product. Only `--recipe seed`
//! uses it.

/// Which loss the top of the network uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    CrossEntropy,
    SquaredError,
    /// [`Loss::SquaredError`] with the original engine's softmax-layer quirk
    /// (see the module docs): same value, same logit gradient, but the
    /// output layer's weight gradient comes from [`seed_quirk_weight_delta`].
    SeedSquaredError,
}

impl Loss {
    /// Whether the output layer's weight gradient uses
    /// [`seed_quirk_weight_delta`] instead of the logit gradient.
    pub fn has_seed_quirk(self) -> bool {
        self == Loss::SeedSquaredError
    }
}

/// Sums over a set of rows (not means): callers divide by their count.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LossSums {
    /// The chosen loss.
    pub loss: f64,
    /// Softmax cross-entropy, whatever the chosen loss.
    pub cross_entropy: f64,
    /// The blog's error, `sum_k (p_k - onehot_k)^2`, summed over rows.
    pub seed_error: f64,
    pub correct: usize,
}

impl LossSums {
    pub fn add(&mut self, other: &LossSums) {
        self.loss += other.loss;
        self.cross_entropy += other.cross_entropy;
        self.seed_error += other.seed_error;
        self.correct += other.correct;
    }
}

/// Forward: `probs = softmax(logits)` row by row, and the loss sums.
/// Panics if a label is not below `k` (loaders validate labels).
pub fn softmax_loss_forward(
    loss: Loss,
    k: usize,
    n: usize,
    logits: &[f32],
    labels: &[u32],
    probs: &mut [f32],
) -> LossSums {
    let mut sums = LossSums::default();
    for ((z, p), &label) in logits[..n * k].chunks_exact(k).zip(probs.chunks_exact_mut(k)).zip(labels) {
        let label = label as usize;
        assert!(label < k, "label {label} out of range for {k} classes");
        let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut total = 0.0f32;
        for (pj, &zj) in p.iter_mut().zip(z) {
            *pj = (zj - max).exp();
            total += *pj;
        }
        p.iter_mut().for_each(|pj| *pj /= total);
        let err: f64 = p
            .iter()
            .enumerate()
            .map(|(j, &pj)| {
                let e = pj as f64 - if j == label { 1.0 } else { 0.0 };
                e * e
            })
            .sum();
        // -ln p_y = ln(sum exp(z - max)) - (z_y - max), without ln(0)
        let ce = (total as f64).ln() - (z[label] - max) as f64;
        sums.seed_error += err;
        sums.cross_entropy += ce;
        sums.loss += match loss {
            Loss::CrossEntropy => ce,
            Loss::SquaredError | Loss::SeedSquaredError => 0.5 * err,
        };
        if argmax(z) == label {
            sums.correct += 1;
        }
    }
    sums
}

/// Backward: `dlogits = scale * dLoss/dlogits` from the forward's `probs`.
/// `scale` is `1/batch` for a mean over the batch, `1` for a sum.
pub fn softmax_loss_backward(
    loss: Loss,
    k: usize,
    n: usize,
    probs: &[f32],
    labels: &[u32],
    scale: f32,
    dlogits: &mut [f32],
) {
    for ((p, d), &label) in probs[..n * k].chunks_exact(k).zip(dlogits.chunks_exact_mut(k)).zip(labels) {
        let label = label as usize;
        let e = |j: usize| p[j] - if j == label { 1.0 } else { 0.0 };
        match loss {
            Loss::CrossEntropy => {
                for (j, dj) in d.iter_mut().enumerate() {
                    *dj = scale * e(j);
                }
            }
            Loss::SquaredError | Loss::SeedSquaredError => {
                // dz_j = p_j * (e_j - sum_i e_i p_i): the softmax Jacobian
                let dot: f32 = (0..k).map(|i| e(i) * p[i]).sum();
                for (j, dj) in d.iter_mut().enumerate() {
                    *dj = scale * p[j] * (e(j) - dot);
                }
            }
        }
    }
}

/// The original engine's delta for the output layer's weight gradient:
/// only the last class's term of the Jacobian product,
/// `delta_j = scale * e_last * J[j, last]` with `e = p - onehot` and
/// `J[j, m] = p_j (delta_jm - p_m)`. With two classes this is exactly half
/// of the true logit gradient (`p_0 + p_1 = 1` makes both terms equal); in
/// general it is not proportional to it. A quirk reproduced on purpose for
/// [`Loss::SeedSquaredError`]; the gradient passed down the network is
/// still [`softmax_loss_backward`]'s full product.
pub fn seed_quirk_weight_delta(
    k: usize,
    n: usize,
    probs: &[f32],
    labels: &[u32],
    scale: f32,
    delta: &mut [f32],
) {
    let last = k - 1;
    for ((p, d), &label) in probs[..n * k].chunks_exact(k).zip(delta.chunks_exact_mut(k)).zip(labels) {
        let e_last = p[last] - if label as usize == last { 1.0 } else { 0.0 };
        for (j, dj) in d.iter_mut().enumerate() {
            let jac = p[j] * (if j == last { 1.0 } else { 0.0 } - p[last]);
            *dj = scale * (e_last * jac);
        }
    }
}

/// Index of the largest value; ties go to the first.
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}
