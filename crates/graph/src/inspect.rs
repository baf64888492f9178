//! Read-only looks at a model, for a trainer that watches its health:
//! which ReLUs output nothing but zeros ("dead" units that learn nothing),
//! and how much memory a spec would take before [`Plan::new`] allocates it.
//!
//! Nothing here changes a plan or runs a kernel.

use crate::ops::{self, Op, Refusal, Resolved};
use crate::plan::{Plan, Shape, LANES};
use crate::spec::ModelSpec;

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
/// It resolves the layers with the same functions as `Plan::new` (the ops'
/// shapes, parameters and scratch) and sums what they need in `u128`: the
/// arenas exactly, plus a generous allowance for the plan's bookkeeping. A
/// layer that needs a buffer of more than 2^40 values makes it `u128::MAX`;
/// at a layer `Plan::new` refuses for another reason it stops counting,
/// since `Plan::new` allocates no arena then. The point is to refuse an
/// absurd spec (a corrupt checkpoint header, a typo of `filters = 2000000`)
/// with a clear message before trying to allocate it.
pub fn footprint_bytes(spec: &ModelSpec, input: Shape, max_batch: usize) -> u128 {
    let batch = max_batch.max(1);
    let lanes = LANES.min(batch) as u128;
    let chunk = crate::plan::chunk_for(spec, batch);
    if ops::bounded(&[input.c, input.h, input.w]).is_err() {
        return u128::MAX;
    }
    // Floats per arena: parameters; activations (and their gradients) and
    // max-pool indices per image; convolution scratch per chunk. Spec order:
    // the ReLU that runs after a max pool (see `Plan::new`) changes no size.
    let (mut params, mut acts, mut argmax, mut scratch, mut stats) = (0u128, 0u128, 0u128, 0u128, 0u128);
    let mut shape = input;
    for layer in &spec.layers {
        match ops::resolve(layer, shape) {
            Ok(Resolved::Node { op, out, bias }) => {
                if let Some(p) = op.params(bias) {
                    params += (p.weight_len() + p.bias) as u128;
                }
                acts += out.len() as u128;
                argmax += op.argmax_len() as u128;
                scratch = scratch.max(op.scratch_len(chunk) as u128);
                stats += op.meets() as u128;
                shape = out;
            }
            Ok(Resolved::Reshape(to)) => shape = to,
            Err(Refusal::TooLarge) => return u128::MAX,
            Err(_) => break,
        }
    }
    let chunk = chunk as u128;
    // Per lane: activations and their gradients, argmax, scratch, the
    // softmax probabilities and the seed loss's delta (one logit vector
    // each per image), and the lane's gradient arena.
    let per_lane = (2 * acts + argmax + 2 * shape.len() as u128) * chunk + scratch + params;
    // The batch norms' statistics: the step's and the running ones, plus
    // f64 sums per lane and one combined (counted generously, as floats x2).
    let floats = 3 * params + lanes * per_lane + 2 * stats + 2 * (lanes + 1) * stats;
    // Plus the plan's bookkeeping: nodes, tensor names, the spec.
    let bookkeeping = 64 * 1024 + 1024 * spec.layers.len() as u128;
    floats.saturating_mul(4).saturating_add(bookkeeping)
}
