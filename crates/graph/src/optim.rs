//! SGD with momentum and weight decay, PyTorch's formulation:
//! `g' = g + wd * w`, `v = momentum * v + g'`, `w -= lr * v`.
//! Elementwise, so splitting it over threads cannot change a bit.
//!
//! With [`Sgd::clip_dense`] (the original engine) every dense layer takes a
//! step of its own size, [`clipped_lr`], per step; other layers use `lr`.

use kernel::{Loss, LossSums};
use rayon::prelude::*;

use crate::exec::Reduction;
use crate::ops::Op;
use crate::plan::Plan;

/// Optimiser settings for one step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sgd {
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    /// Clip each dense layer's step as the original engine does
    /// ([`clipped_lr`]); conv layers keep `lr`.
    pub clip_dense: bool,
}

impl Sgd {
    /// Plain SGD: no momentum, no weight decay, no clip.
    pub fn plain(lr: f32) -> Self {
        Sgd { lr, momentum: 0.0, weight_decay: 0.0, clip_dense: false }
    }

    /// The original engine: plain SGD with every dense step clipped.
    pub fn seed(lr: f32) -> Self {
        Sgd { clip_dense: true, ..Sgd::plain(lr) }
    }
}

/// The original engine's step size for one dense layer with `n_out` outputs
/// and weight gradient `g` (summed over the batch):
/// `min(lr, 0.05 * sqrt(2 / n_out) / max|g|)`, or `lr` when `max|g|` is 0.
/// `max|g|` is exact in f32; the bound and the `min` are computed in f64
/// (the original engine's type) and the result rounded once to f32, so
/// when `lr` binds the step is `lr` to the bit. It caps the largest single
/// weight change at `0.05 * sqrt(2 / n_out)`, which is what lets lr 0.01
/// with gradients summed over 200 images train the 153,600-weight FC layer.
pub fn clipped_lr(lr: f32, n_out: usize, g: &[f32]) -> f32 {
    let max = g.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if max == 0.0 {
        return lr;
    }
    let cap = 0.05 * (2.0 / n_out as f64).sqrt() / max as f64;
    (lr as f64).min(cap) as f32
}

const SPAN: usize = 8192;

/// One SGD update over flat arenas of equal length.
pub fn sgd_update(sgd: &Sgd, params: &mut [f32], grads: &[f32], velocity: &mut [f32]) {
    assert!(params.len() == grads.len() && grads.len() == velocity.len(), "arenas differ in length");
    let Sgd { lr, momentum, weight_decay, .. } = *sgd;
    params.par_chunks_mut(SPAN).zip(grads.par_chunks(SPAN)).zip(velocity.par_chunks_mut(SPAN)).for_each(
        |((w, g), v)| {
            for ((w, &g), v) in w.iter_mut().zip(g).zip(v.iter_mut()) {
                *v = momentum * *v + g + weight_decay * *w;
                *w -= lr * *v;
            }
        },
    );
}

impl Plan {
    /// Apply one SGD update from the gradients of the last `forward_backward`.
    pub fn sgd_step(&mut self, sgd: &Sgd) {
        if !sgd.clip_dense {
            sgd_update(sgd, &mut self.params, &self.grads, &mut self.velocity);
            return;
        }
        // Layer by layer: a node's weight and bias are adjacent in the arenas.
        for node in &self.nodes {
            let Some(w) = &node.weight else { continue };
            let end = node.bias.as_ref().map_or(w.end, |b| b.end);
            let lr = match node.op {
                Op::Dense(d) => clipped_lr(sgd.lr, d.outputs, &self.grads[w.clone()]),
                _ => sgd.lr,
            };
            let range = w.start..end;
            let (params, grads, velocity) =
                (&mut self.params[range.clone()], &self.grads[range.clone()], &mut self.velocity[range]);
            sgd_update(&Sgd { lr, ..*sgd }, params, grads, velocity);
        }
    }

    /// One training step: forward, backward, SGD update. Returns the loss
    /// sums of the batch (computed before the update).
    pub fn train_step(
        &mut self,
        x: &[f32],
        labels: &[u32],
        loss: Loss,
        reduction: Reduction,
        sgd: &Sgd,
    ) -> LossSums {
        let sums = self.forward_backward(x, labels, loss, reduction);
        self.sgd_step(sgd);
        sums
    }
}
