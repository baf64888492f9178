//! Forward and backward over a [`Plan`]: one plain loop over the nodes per
//! chunk of images, inside one rayon task per lane.

use std::ops::Range;

use kernel::{
    conv2d_backward, conv2d_forward, dense_backward, dense_forward, dense_input_grad, gap_backward,
    gap_forward, maxpool_backward, maxpool_forward, reduce::sum_in_order, relu_backward, relu_forward,
    seed_quirk_weight_delta, softmax_loss_backward, softmax_loss_forward, Isa, Loss, LossSums,
};
use rayon::prelude::*;

use crate::plan::{Lane, Node, Op, Plan, LANES};

/// How per-image gradients combine over a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduction {
    /// Mean over the batch (the modern recipe).
    Mean,
    /// Sum over the batch (the original engine).
    Sum,
}

/// The images of lane `l` when `n` images are split over `lanes` lanes:
/// contiguous, sizes differing by at most one, the larger lanes first.
/// Depends on `n` and `lanes` only, never on the thread count.
pub fn lane_range(n: usize, lanes: usize, l: usize) -> Range<usize> {
    let (base, rem) = (n / lanes, n % lanes);
    let start = l * base + l.min(rem);
    start..start + base + usize::from(l < rem)
}

impl Plan {
    /// Images in `x`, checked against the plan. Panics on a malformed
    /// batch: that is a bug in the caller, not bad data.
    fn batch_len(&self, x: &[f32], labels: Option<&[u32]>) -> usize {
        let per = self.input.len();
        assert!(
            x.len().is_multiple_of(per),
            "batch of {} floats is not a whole number of {} inputs",
            x.len(),
            self.input
        );
        let n = x.len() / per;
        assert!(n >= 1 && n <= self.max_batch, "batch of {n} images, plan allows 1..={}", self.max_batch);
        if let Some(labels) = labels {
            assert_eq!(labels.len(), n, "{n} images but {} labels", labels.len());
        }
        n
    }

    /// Forward and backward over one batch `x[n, C, H, W]` with `labels[n]`
    /// (each below `classes()`). Leaves the gradients in [`Plan::grads`] and
    /// returns the loss sums over the batch.
    pub fn forward_backward(
        &mut self,
        x: &[f32],
        labels: &[u32],
        loss: Loss,
        reduction: Reduction,
    ) -> LossSums {
        let n = self.batch_len(x, Some(labels));
        let scale = match reduction {
            Reduction::Mean => 1.0 / n as f32,
            Reduction::Sum => 1.0,
        };
        let used = n.min(self.lanes.len());
        let Plan { nodes, params, lanes, chunk, classes, input, isa, .. } = self;
        let (chunk, k, per) = (*chunk, *classes, input.len());
        let total = lanes.len();
        lanes[..used].par_iter_mut().enumerate().for_each(|(l, lane)| {
            lane.sums = LossSums::default();
            let r = lane_range(n, total, l);
            for start in r.clone().step_by(chunk) {
                let m = chunk.min(r.end - start);
                let xs = &x[start * per..(start + m) * per];
                let ys = &labels[start..start + m];
                forward_chunk(*isa, nodes, params, lane, xs, m);
                let last = &nodes[nodes.len() - 1].act;
                let sums = softmax_loss_forward(loss, k, m, &lane.acts[last.clone()], ys, &mut lane.probs);
                lane.sums.add(&sums);
                softmax_loss_backward(loss, k, m, &lane.probs, ys, scale, &mut lane.dacts[last.clone()]);
                let quirk = loss.has_seed_quirk();
                if quirk {
                    seed_quirk_weight_delta(k, m, &lane.probs, ys, scale, &mut lane.wdelta);
                }
                backward_chunk(*isa, nodes, params, lane, xs, m, start != r.start, quirk);
            }
        });
        let lanes = &self.lanes;
        sum_in_order(&mut self.grads, used, |l| &lanes[l].grads);
        total_sums(&self.lanes[..used])
    }

    /// Forward only, with the loss sums (no gradients): evaluation.
    pub fn evaluate(&mut self, x: &[f32], labels: &[u32], loss: Loss) -> LossSums {
        let n = self.batch_len(x, Some(labels));
        let used = n.min(self.lanes.len());
        let Plan { nodes, params, lanes, chunk, classes, input, isa, .. } = self;
        let (chunk, k, per) = (*chunk, *classes, input.len());
        let total = lanes.len();
        lanes[..used].par_iter_mut().enumerate().for_each(|(l, lane)| {
            lane.sums = LossSums::default();
            let r = lane_range(n, total, l);
            for start in r.clone().step_by(chunk) {
                let m = chunk.min(r.end - start);
                forward_chunk(*isa, nodes, params, lane, &x[start * per..(start + m) * per], m);
                let last = &nodes[nodes.len() - 1].act;
                let ys = &labels[start..start + m];
                let sums = softmax_loss_forward(loss, k, m, &lane.acts[last.clone()], ys, &mut lane.probs);
                lane.sums.add(&sums);
            }
        });
        total_sums(&self.lanes[..used])
    }

    /// Forward only: writes the logits `[n, classes]` of `x[n, C, H, W]`.
    pub fn predict(&mut self, x: &[f32], logits: &mut [f32]) {
        let n = self.batch_len(x, None);
        let used = n.min(self.lanes.len());
        let Plan { nodes, params, lanes, chunk, classes, input, isa, .. } = self;
        let (chunk, k, per) = (*chunk, *classes, input.len());
        let total = lanes.len();
        assert_eq!(logits.len(), n * k, "logits buffer must hold {n} x {k} values");
        // Carve `logits` into one disjoint slice per lane, on the stack.
        let mut outs: [&mut [f32]; LANES] = Default::default();
        let mut rest = logits;
        for (l, out) in outs.iter_mut().enumerate().take(used) {
            let (head, tail) = rest.split_at_mut(lane_range(n, total, l).len() * k);
            *out = head;
            rest = tail;
        }
        lanes[..used].par_iter_mut().zip(outs[..used].par_iter_mut()).enumerate().for_each(
            |(l, (lane, out))| {
                let r = lane_range(n, total, l);
                for start in r.clone().step_by(chunk) {
                    let m = chunk.min(r.end - start);
                    forward_chunk(*isa, nodes, params, lane, &x[start * per..(start + m) * per], m);
                    let last = &nodes[nodes.len() - 1].act;
                    let o = (start - r.start) * k;
                    out[o..o + m * k].copy_from_slice(&lane.acts[last.start..last.start + m * k]);
                }
            },
        );
    }
}

fn total_sums(lanes: &[Lane]) -> LossSums {
    let mut total = LossSums::default();
    for lane in lanes {
        total.add(&lane.sums);
    }
    total
}

/// Bias range of a node, if any, as a slice of `arena`.
fn bias<'a>(node: &Node, arena: &'a [f32]) -> Option<&'a [f32]> {
    node.bias.as_ref().map(|b| &arena[b.clone()])
}

/// Run `m` images `x` through every node, leaving each node's output in
/// the lane's activation arena.
fn forward_chunk(isa: Isa, nodes: &[Node], params: &[f32], lane: &mut Lane, x: &[f32], m: usize) {
    let Lane { acts, argmax, cols, .. } = lane;
    for (i, node) in nodes.iter().enumerate() {
        let (before, rest) = acts.split_at_mut(node.act.start);
        let input: &[f32] = if i == 0 { x } else { &before[nodes[i - 1].act.start..] };
        let input = &input[..m * node.in_shape.len()];
        let out = &mut rest[..m * node.out_shape.len()];
        let w = node.weight.as_ref().map(|w| &params[w.clone()]);
        match node.op {
            Op::Conv(s) => conv2d_forward(isa, &s, m, input, w.unwrap(), bias(node, params), out, cols),
            Op::Relu => relu_forward(input, out),
            Op::MaxPool(s) => maxpool_forward(isa, &s, m, input, out, &mut argmax[node.argmax.clone()]),
            Op::GlobalAvgPool { c, hw } => gap_forward(c, hw, m, input, out),
            Op::Dense(s) => dense_forward(isa, &s, m, input, w.unwrap(), bias(node, params), out),
        }
    }
}

/// Backward through every node for `m` images, from the logit gradients
/// already in the last node's slot of `dacts`. Parameter gradients go to
/// the lane's own arena: overwritten, or added to when `accumulate`. With
/// `quirk`, the last (dense) node's weight gradient comes from the lane's
/// `wdelta` instead (`Loss::SeedSquaredError`); its input gradient does not.
#[allow(clippy::too_many_arguments)]
fn backward_chunk(
    isa: Isa,
    nodes: &[Node],
    params: &[f32],
    lane: &mut Lane,
    x: &[f32],
    m: usize,
    accumulate: bool,
    quirk: bool,
) {
    let Lane { acts, dacts, argmax, cols, grads, wdelta, .. } = lane;
    let last = nodes.len() - 1;
    for (i, node) in nodes.iter().enumerate().rev() {
        let (in_len, out_len) = (m * node.in_shape.len(), m * node.out_shape.len());
        let input: &[f32] = if i == 0 { x } else { &acts[nodes[i - 1].act.start..] };
        let input = &input[..in_len];
        let y = &acts[node.act.start..node.act.start + out_len];
        let (dbefore, drest) = dacts.split_at_mut(node.act.start);
        let dy = &drest[..out_len];
        let dx = if i == 0 { None } else { Some(&mut dbefore[nodes[i - 1].act.start..][..in_len]) };
        let w = node.weight.as_ref().map(|w| &params[w.clone()]);
        // Weight and bias gradients are adjacent in the arena.
        let (dw, db) = match (&node.weight, &node.bias) {
            (Some(w), b) => {
                let (dw, tail) = grads[w.start..].split_at_mut(w.len());
                (Some(dw), b.as_ref().map(|b| &mut tail[..b.len()]))
            }
            _ => (None, None),
        };
        match node.op {
            Op::Conv(s) => {
                conv2d_backward(isa, &s, m, input, w.unwrap(), dy, dx, dw.unwrap(), db, cols, accumulate)
            }
            Op::Dense(s) if quirk && i == last => {
                dense_backward(isa, &s, m, input, w.unwrap(), wdelta, None, dw.unwrap(), db, accumulate);
                if let Some(dx) = dx {
                    dense_input_grad(isa, &s, m, w.unwrap(), dy, dx);
                }
            }
            Op::Dense(s) => {
                dense_backward(isa, &s, m, input, w.unwrap(), dy, dx, dw.unwrap(), db, accumulate)
            }
            Op::Relu => {
                if let Some(dx) = dx {
                    relu_backward(y, dy, dx);
                }
            }
            Op::MaxPool(s) => {
                if let Some(dx) = dx {
                    maxpool_backward(&s, m, dy, &argmax[node.argmax.clone()], dx);
                }
            }
            Op::GlobalAvgPool { c, hw } => {
                if let Some(dx) = dx {
                    gap_backward(c, hw, m, dy, dx);
                }
            }
        }
    }
}
