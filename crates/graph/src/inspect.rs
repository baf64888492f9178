//! Read-only looks at a model, for a trainer that watches its health:
//! which ReLUs output nothing but zeros ("dead" units that learn nothing),
//! and how much memory a spec would take before [`Plan::new`] allocates it.
//!
//! Nothing here changes a plan or runs a kernel.

use crate::plan::{Op, Plan, Shape, LANES, MAX_CHUNK};
use crate::spec::{LayerSpec, ModelSpec};

impl Plan {
    /// Names of the ReLU nodes (`relu1`, ...) whose every output still held
    /// in the plan's activation buffers is zero: for all the images of the
    /// last forward pass that the buffers hold, the layer passed nothing on,
    /// so the layers before it get no gradient through it.
    ///
    /// The buffers hold, per lane, the last chunk of images that lane ran
    /// (up to `LANES x chunk` images; all of a batch of at most
    /// `LANES x chunk` images). A lane that sat out the last pass still holds
    /// images of an earlier pass: that can only delay a report, never cause
    /// a false one for a layer that is alive on recent images. Meaningful
    /// after a forward pass (`forward_backward`, `evaluate`, `predict`); a
    /// plan that has never run reports every ReLU.
    pub fn dead_relus(&self) -> Vec<&str> {
        self.nodes
            .iter()
            .filter(|node| node.op == Op::Relu)
            .filter(|node| {
                self.lanes.iter().all(|lane| lane.acts[node.act.clone()].iter().all(|&v| v == 0.0))
            })
            .map(|node| node.name.as_str())
            .collect()
    }
}

/// An upper bound of the bytes that `Plan::new(spec, input, max_batch)`
/// allocates (parameter, gradient and momentum arenas plus every lane's
/// buffers), computed without allocating anything and without overflow.
///
/// It follows the shapes and the lane and chunk sizes as `Plan::new` does
/// (pools in ceil mode, the larger). Layers
/// that `Plan::new` would reject are counted as if they were valid; the
/// point is to refuse an absurd spec (a corrupt checkpoint header, a typo of
/// `filters = 2000000`) with a clear message before trying to allocate it.
pub fn footprint_bytes(spec: &ModelSpec, input: Shape, max_batch: usize) -> u128 {
    let (mut c, mut h, mut w) = (input.c as u128, input.h as u128, input.w as u128);
    // Floats per arena: parameters; activations (and their gradients) and
    // max-pool indices per image; convolution scratch (im2col or the direct
    // kernels' padded planes) per chunk of images.
    let (mut params, mut acts, mut argmax, mut cols) = (0u128, 0u128, 0u128, 0u128);
    for layer in &spec.layers {
        match *layer {
            LayerSpec::Conv { filters, size, stride, pad, bias } => {
                let (f, k, s, p) = (filters as u128, size as u128, stride.max(1) as u128, pad as u128);
                let ho = (h + 2 * p).saturating_sub(k) / s + 1;
                let wo = (w + 2 * p).saturating_sub(k) / s + 1;
                params = params.saturating_add(f.saturating_mul(c).saturating_mul(k).saturating_mul(k));
                if bias {
                    params = params.saturating_add(f);
                }
                let im2col = c.saturating_mul(k).saturating_mul(k).saturating_mul(ho).saturating_mul(wo);
                // the direct kernels' scratch, per image: the padded input,
                // dy padded and spread (two planes of at most (h + 2p + k) x
                // (w + 2p + k) per filter) and the weight table
                let (hp, wp) = (h.saturating_add(2 * p + k), w.saturating_add(2 * p + k));
                let direct = c
                    .saturating_add(f.saturating_mul(2))
                    .saturating_mul(hp)
                    .saturating_mul(wp)
                    .saturating_add(f.saturating_mul(k * k).saturating_mul(c.saturating_add(4)))
                    .saturating_add(64);
                cols = cols.max(im2col.max(direct));
                (c, h, w) = (f, ho, wo);
            }
            LayerSpec::Relu => {}
            LayerSpec::MaxPool { size, stride, .. } => {
                // Ceil mode's size, which is never below floor mode's.
                let (k, s) = (size as u128, stride.max(1) as u128);
                h = h.saturating_sub(k).div_ceil(s) + 1;
                w = w.saturating_sub(k).div_ceil(s) + 1;
                argmax = argmax.saturating_add(c.saturating_mul(h).saturating_mul(w));
            }
            LayerSpec::GlobalAvgPool => (h, w) = (1, 1),
            LayerSpec::Flatten => {
                (c, h, w) = (c.saturating_mul(h).saturating_mul(w), 1, 1);
                continue;
            }
            LayerSpec::Dense { units, bias } => {
                let u = units as u128;
                let inputs = c.saturating_mul(h).saturating_mul(w);
                params =
                    params.saturating_add(u.saturating_mul(inputs)).saturating_add(if bias { u } else { 0 });
                (c, h, w) = (u, 1, 1);
            }
        }
        acts = acts.saturating_add(c.saturating_mul(h).saturating_mul(w));
    }
    let batch = max_batch.max(1);
    let lanes = LANES.min(batch) as u128;
    let chunk = batch.div_ceil(LANES).min(MAX_CHUNK) as u128;
    // Scratch is counted per image of a chunk, generously: a lane may lay
    // out im2col for a whole chunk at once.
    let per_lane = acts
        .saturating_mul(2)
        .saturating_add(argmax)
        .saturating_add(cols)
        .saturating_add(c)
        .saturating_mul(chunk)
        .saturating_add(params);
    let floats = params.saturating_mul(3).saturating_add(lanes.saturating_mul(per_lane));
    // Plus the plan's bookkeeping: nodes, tensor names, the spec.
    let bookkeeping = 64 * 1024 + 1024 * spec.layers.len() as u128;
    floats.saturating_mul(4).saturating_add(bookkeeping)
}
