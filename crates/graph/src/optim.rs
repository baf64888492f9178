//! SGD with momentum and weight decay, PyTorch's formulation:
//! `g' = g + wd * w`, `v = momentum * v + g'`, `w -= lr * v`.
//! Elementwise, so splitting it over threads cannot change a bit.

use kernel::{Loss, LossSums};
use rayon::prelude::*;

use crate::exec::Reduction;
use crate::plan::Plan;

/// Optimiser settings for one step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sgd {
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
}

impl Sgd {
    /// Plain SGD: no momentum, no weight decay (the original engine).
    pub fn plain(lr: f32) -> Self {
        Sgd { lr, momentum: 0.0, weight_decay: 0.0 }
    }
}

const SPAN: usize = 8192;

/// One SGD update over flat arenas of equal length.
pub fn sgd_update(sgd: &Sgd, params: &mut [f32], grads: &[f32], velocity: &mut [f32]) {
    assert!(params.len() == grads.len() && grads.len() == velocity.len(), "arenas differ in length");
    let Sgd { lr, momentum, weight_decay } = *sgd;
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
        sgd_update(sgd, &mut self.params, &self.grads, &mut self.velocity);
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
