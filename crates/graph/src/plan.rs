//! `Plan`: shape inference, checking, and the memory of a model, laid out
//! once. After `Plan::new` nothing in forward, backward or the SGD step
//! touches the heap. What each layer makes of its input, its parameters
//! and its scratch come from its op (`ops.rs`); this file names the nodes
//! and lays their memory out.
//!
//! Memory, llm.c style:
//! - `params`, `grads`, `velocity`: one flat arena each, carved into named
//!   tensors (`conv1.weight`, `fc1.bias`, ...) in layer order;
//! - one [`Lane`] per unit of parallel work: activations and their
//!   gradients for `chunk` images, max-pool argmax indices, convolution scratch,
//!   softmax probabilities, and a private parameter-gradient arena.
//!
//! A batch of `n` images is split into `LANES` contiguous lanes by a rule
//! that depends on `n` only; each lane walks its images in chunks and
//! accumulates its own gradients; lanes are then summed in lane order. So
//! the same seed gives the same bits with 1 or N threads.

use std::fmt;
use std::ops::Range;

use kernel::{ConvPath, Isa, LossSums};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::ops::{self, Op, Resolved};
use crate::spec::{LayerSpec, ModelSpec};

/// Fixed number of lanes a batch is split into. Fixed, not the thread
/// count, so results do not depend on the machine; 8 keeps 2-16 threads
/// busy.
pub const LANES: usize = 8;
/// Most images a lane runs through the network at once: enough to give the
/// dense layers' SGEMMs some rows, few enough to stay in L2.
pub const MAX_CHUNK: usize = 8;

/// One image's (or sample's) shape, `C x H x W`; a flat vector is `N x 1 x 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl Shape {
    pub fn new(c: usize, h: usize, w: usize) -> Self {
        Shape { c, h, w }
    }
    pub fn len(&self) -> usize {
        self.c * self.h * self.w
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn is_flat(&self) -> bool {
        self.h == 1 && self.w == 1
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_flat() {
            write!(f, "{}", self.c)
        } else {
            write!(f, "{}x{}x{}", self.c, self.h, self.w)
        }
    }
}

/// A spec that cannot be built, naming the layer and the shapes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanError {
    /// 1-based position in the spec; 0 for the model as a whole.
    pub layer: usize,
    pub message: String,
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.layer == 0 {
            write!(f, "model: {}", self.message)
        } else {
            write!(f, "layer {}: {}", self.layer, self.message)
        }
    }
}

impl std::error::Error for PlanError {}

/// One executable layer. Offsets index a lane's arenas for `chunk` images.
#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub op: Op,
    pub in_shape: Shape,
    pub out_shape: Shape,
    /// Where this node's outputs (and their gradients) live in a lane.
    pub(crate) act: Range<usize>,
    /// Where a max pool's argmax indices live in a lane.
    pub(crate) argmax: Range<usize>,
    /// Weight and bias in the parameter arena.
    pub weight: Option<Range<usize>>,
    pub bias: Option<Range<usize>>,
    /// A convolution's path: [`ConvPath::default_for`] the plan's ISA
    /// unless [`Plan::set_conv_path`] chose another. `None` for other ops.
    pub conv_path: Option<ConvPath>,
    /// A batch norm's statistics: where its mean and 1/std live in the
    /// plan's `stats`, and its running mean and variance in `running`.
    pub(crate) stats: Option<Range<usize>>,
}

impl Node {
    /// Multiply-adds of one image's forward pass through this node.
    pub fn macs(&self) -> usize {
        self.op.macs()
    }

    /// This node's weight in a parameter-shaped `arena` (empty if none).
    pub(crate) fn weight_of<'a>(&self, arena: &'a [f32]) -> &'a [f32] {
        self.weight.as_ref().map_or(&[], |w| &arena[w.clone()])
    }

    pub(crate) fn bias_of<'a>(&self, arena: &'a [f32]) -> Option<&'a [f32]> {
        self.bias.as_ref().map(|b| &arena[b.clone()])
    }

    /// This node's weight and bias in a gradient `arena`, both at once
    /// (they are adjacent).
    pub(crate) fn grads_of<'a>(&self, arena: &'a mut [f32]) -> (&'a mut [f32], Option<&'a mut [f32]>) {
        let Some(w) = &self.weight else { return (&mut [], None) };
        let (dw, tail) = arena[w.start..].split_at_mut(w.len());
        (dw, self.bias.as_ref().map(|b| &mut tail[..b.len()]))
    }
}

/// A named parameter tensor in the arena, with PyTorch's shape convention.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub range: Range<usize>,
}

/// How weights are drawn; biases always start at zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    /// He-normal: `N(0, 2 / fan_in)` for every weight.
    He,
    /// The original engine: conv weights `N(0, sd = 1/9)`; hidden dense
    /// layers `N(0, sd = sqrt(2 / fan_in) / 10)`, the output (last) dense
    /// layer `N(0, sd = sqrt(2 / fan_in) / 100)`.
    Seed,
}

/// One lane's private memory (see the module docs).
pub(crate) struct Lane {
    pub(crate) acts: Vec<f32>,
    pub(crate) dacts: Vec<f32>,
    pub(crate) argmax: Vec<u32>,
    pub(crate) cols: Vec<f32>,
    pub(crate) probs: Vec<f32>,
    /// The output layer's weight-gradient delta when it is not the logit
    /// gradient (the original engine's quirk, `Loss::SeedSquaredError`).
    pub(crate) wdelta: Vec<f32>,
    pub(crate) grads: Vec<f32>,
    pub(crate) sums: LossSums,
    /// This lane's per-channel sums at a meeting point (a batch norm).
    pub(crate) meet: Vec<f64>,
}

/// A model ready to run: shapes checked, every buffer allocated.
pub struct Plan {
    pub(crate) spec: ModelSpec,
    pub(crate) input: Shape,
    pub(crate) classes: usize,
    pub(crate) max_batch: usize,
    pub(crate) chunk: usize,
    pub(crate) nodes: Vec<Node>,
    pub(crate) tensors: Vec<Tensor>,
    pub(crate) params: Vec<f32>,
    pub(crate) grads: Vec<f32>,
    pub(crate) velocity: Vec<f32>,
    pub(crate) lanes: Vec<Lane>,
    /// The kernels every node runs.
    pub(crate) isa: Isa,
    /// The nodes where the lanes meet (batch norms), in execution order.
    pub(crate) meets: Vec<usize>,
    /// The lanes' sums at a meeting point, added in lane order.
    pub(crate) meet: Vec<f64>,
    /// Every batch norm's mean and 1/std for the pass at hand (see
    /// [`Node::stats`]), and its running mean and variance (state that is
    /// checkpointed but not trained, PyTorch's buffers).
    pub(crate) stats: Vec<f32>,
    pub(crate) running: Vec<f32>,
    /// Per node, the training steps its running statistics have seen
    /// (PyTorch's `num_batches_tracked`; 0 for nodes without).
    pub(crate) tracked: Vec<i64>,
    /// `running` and `tracked` as they were before the last training step
    /// (see [`Plan::undo_running_stats`]).
    pub(crate) running_before: Vec<f32>,
    pub(crate) tracked_before: Vec<i64>,
}

/// The order the layers of a spec run in: the spec's, except that a ReLU
/// directly followed by a max pool runs after it. Max commutes with the
/// monotone ReLU, so `relu(maxpool(x)) == maxpool(relu(x))` value for value,
/// and the gradients agree too (a window's winner gets `dy` only where it is
/// positive either way); but the ReLU then touches a quarter of the values
/// (3x3/2 pooling), forward and backward.
fn execution_order(layers: &[LayerSpec]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..layers.len()).collect();
    let mut i = 0;
    while i + 1 < layers.len() {
        if layers[i] == LayerSpec::Relu && matches!(layers[i + 1], LayerSpec::MaxPool { .. }) {
            order.swap(i, i + 1);
            i += 2;
        } else {
            i += 1;
        }
    }
    order
}

/// Images a lane runs through the network at once for batches of up to
/// `max_batch`. Lanes meet at a batch norm with every image's activations
/// in hand, so with one a lane holds all its images at once.
pub(crate) fn chunk_for(spec: &ModelSpec, max_batch: usize) -> usize {
    let share = max_batch.div_ceil(LANES);
    if spec.layers.iter().any(|l| matches!(l, LayerSpec::BatchNorm { .. })) {
        share
    } else {
        share.min(MAX_CHUNK)
    }
}

/// The path a node runs at `isa` unless a plan is told otherwise.
fn default_path(op: &Op, isa: Isa) -> Option<ConvPath> {
    match op {
        Op::Conv(s) => Some(ConvPath::default_for(isa, s)),
        _ => None,
    }
}

fn err(layer: usize, message: String) -> PlanError {
    PlanError { layer, message }
}

impl Plan {
    /// Infer and check every shape of `spec` for inputs of `input` and
    /// batches of up to `max_batch`, then allocate everything once.
    /// Weights start He-normal with seed 0; see [`Plan::initialize`]. The
    /// plan runs the kernels [`Isa::detect`] picks (the best this CPU has,
    /// or `GAPNET_ISA`); [`Plan::for_isa`] chooses.
    pub fn new(spec: &ModelSpec, input: Shape, max_batch: usize) -> Result<Plan, PlanError> {
        Plan::for_isa(spec, input, max_batch, Isa::detect())
    }

    /// [`Plan::new`] running the `isa` kernels. Panics if this CPU cannot
    /// run them (see [`Isa::available`]).
    pub fn for_isa(spec: &ModelSpec, input: Shape, max_batch: usize, isa: Isa) -> Result<Plan, PlanError> {
        isa.require();
        if max_batch == 0 {
            return Err(err(0, "the maximum batch size must be at least 1".into()));
        }
        if input.is_empty() {
            return Err(err(0, format!("input shape {input} has no elements")));
        }
        if ops::bounded(&[input.c, input.h, input.w]).is_err() {
            return Err(err(0, format!("input shape {input} has more than 2^40 elements")));
        }
        let chunk = chunk_for(spec, max_batch);
        let mut nodes: Vec<Node> = Vec::new();
        let mut tensors: Vec<Tensor> = Vec::new();
        let (mut n_params, mut n_acts, mut n_argmax, mut n_cols, mut n_stats) = (0, 0, 0, 0, 0);
        let mut shape = input;
        for i in execution_order(&spec.layers) {
            let (at, layer) = (i + 1, &spec.layers[i]);
            let (op, out, bias) = match ops::resolve(layer, shape) {
                Ok(Resolved::Node { op, out, bias }) => (op, out, bias),
                Ok(Resolved::Reshape(to)) => {
                    shape = to;
                    continue;
                }
                Err(why) => return Err(err(at, why.message(layer, shape))),
            };
            if out.is_empty() {
                return Err(err(at, format!("{layer}: output {out} has no elements")));
            }
            let name = match op.stem() {
                (stem, true) => {
                    format!("{stem}{}", 1 + nodes.iter().filter(|n| n.op.stem().0 == stem).count())
                }
                (stem, false) => stem.to_string(),
            };
            // Sums of bounded sizes overflow only for absurdly many layers.
            let too_large = || err(at, ops::Refusal::TooLarge.message(layer, shape));
            let grow = |total: &mut usize, len: usize| {
                let end = total.checked_add(len).ok_or_else(too_large)?;
                Ok::<_, PlanError>(std::mem::replace(total, end)..end)
            };
            let mut tensor = |suffix: &str, dims: &[usize]| {
                let range = grow(&mut n_params, dims.iter().product())?;
                tensors.push(Tensor {
                    name: format!("{name}.{suffix}"),
                    shape: dims.to_vec(),
                    range: range.clone(),
                });
                Ok::<_, PlanError>(range)
            };
            let params = op.params(bias);
            let weight = params.map(|p| tensor("weight", p.weight_dims())).transpose()?;
            let bias = params.filter(|p| p.bias > 0).map(|p| tensor("bias", &[p.bias])).transpose()?;
            let act = grow(&mut n_acts, out.len() * chunk)?;
            let argmax = grow(&mut n_argmax, op.argmax_len() * chunk)?;
            n_cols = n_cols.max(op.scratch_len(chunk));
            let conv_path = default_path(&op, isa);
            let stats = (op.meets() > 0).then(|| grow(&mut n_stats, op.meets())).transpose()?;
            nodes.push(Node {
                name,
                op,
                in_shape: shape,
                out_shape: out,
                act,
                argmax,
                weight,
                bias,
                conv_path,
                stats,
            });
            shape = out;
        }
        match nodes.last() {
            Some(Node { op: Op::Dense(_), .. }) => {}
            _ => {
                return Err(err(0, "the last layer must be a dense layer producing the class logits".into()))
            }
        }
        let classes = shape.c;
        let widest = nodes.iter().map(|n| n.op.meets()).max().unwrap_or(0);
        let lanes = (0..LANES.min(max_batch))
            .map(|_| Lane {
                acts: vec![0.0; n_acts],
                dacts: vec![0.0; n_acts],
                argmax: vec![0; n_argmax],
                cols: vec![0.0; n_cols],
                probs: vec![0.0; classes * chunk],
                wdelta: vec![0.0; classes * chunk],
                grads: vec![0.0; n_params],
                sums: LossSums::default(),
                meet: vec![0.0; widest],
            })
            .collect();
        let meets = (0..nodes.len()).filter(|&i| nodes[i].stats.is_some()).collect();
        let tracked = vec![0; nodes.len()];
        let mut plan = Plan {
            spec: spec.clone(),
            input,
            classes,
            max_batch,
            chunk,
            nodes,
            tensors,
            params: vec![0.0; n_params],
            grads: vec![0.0; n_params],
            velocity: vec![0.0; n_params],
            lanes,
            isa,
            meets,
            meet: vec![0.0; widest],
            stats: vec![0.0; n_stats],
            running: vec![0.0; n_stats],
            running_before: vec![0.0; n_stats],
            tracked_before: tracked.clone(),
            tracked,
        };
        plan.initialize(Init::He, 0);
        Ok(plan)
    }

    /// Draw fresh weights (biases zero; a batch norm's weights one) from a
    /// ChaCha8 stream seeded with `seed`, tensor by tensor in layer order;
    /// clears optimizer state and running statistics (mean 0, variance 1).
    pub fn initialize(&mut self, init: Init, seed: u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let last = self.nodes.len() - 1;
        for (i, node) in self.nodes.iter().enumerate() {
            if let Some(r) = &node.stats {
                let (mean, var) = self.running[r.clone()].split_at_mut(r.len() / 2);
                mean.fill(0.0);
                var.fill(1.0);
            }
            if let (Some(w), true) = (&node.weight, node.op.unit_weight()) {
                self.params[w.clone()].fill(1.0);
            } else if let Some(w) = &node.weight {
                let sd = node.op.init_sd(init, i == last);
                let normal = Normal::new(0.0, sd).expect("finite, positive standard deviation");
                for v in &mut self.params[w.clone()] {
                    *v = normal.sample(&mut rng) as f32;
                }
            }
            if let Some(b) = &node.bias {
                self.params[b.clone()].fill(0.0);
            }
        }
        self.velocity.fill(0.0);
        self.grads.fill(0.0);
        self.tracked.fill(0);
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }
    pub fn input_shape(&self) -> Shape {
        self.input
    }
    pub fn classes(&self) -> usize {
        self.classes
    }
    /// The kernels this plan runs.
    pub fn isa(&self) -> Isa {
        self.isa
    }
    /// Run the `isa` kernels from now on, every convolution on its default
    /// path at that ISA ([`ConvPath::default_for`]). Every buffer fits every
    /// ISA and path (the scratch sizes do not depend on them), so nothing is
    /// reallocated. Panics if this CPU cannot run them.
    pub fn set_isa(&mut self, isa: Isa) {
        isa.require();
        self.isa = isa;
        for node in &mut self.nodes {
            node.conv_path = default_path(&node.op, isa);
        }
    }

    /// Each convolution's name and path, in execution order.
    pub fn conv_paths(&self) -> Vec<(&str, ConvPath)> {
        self.nodes.iter().filter_map(|n| Some((n.name.as_str(), n.conv_path?))).collect()
    }

    /// Run the convolution named `node` (`conv2`) on `path` from now on.
    /// The bits of a training run depend on it. Errors name the node: no
    /// such convolution, or a path that cannot run its shape at this ISA
    /// (the direct kernels take 3x3 stride 1 only, and no portable ISA).
    pub fn set_conv_path(&mut self, node: &str, path: ConvPath) -> Result<(), String> {
        let isa = self.isa;
        let Some(at) = self.nodes.iter().position(|n| n.name == node && n.conv_path.is_some()) else {
            let convs: Vec<&str> = self.conv_paths().into_iter().map(|(n, _)| n).collect();
            return Err(format!("{node}: no convolution of that name (this model has {})", convs.join(", ")));
        };
        let n = &mut self.nodes[at];
        let Op::Conv(s) = n.op else { unreachable!("only convolutions have a path") };
        if !path.runs(isa, &s) {
            return Err(format!("{node}: the {path} path cannot run {} at {}", n.op, isa.label()));
        }
        n.conv_path = Some(path);
        Ok(())
    }

    /// The batch norms' running mean and variance (PyTorch's buffers
    /// `bnK.running_mean`, `bnK.running_var`), each `[c]`, as tensors of
    /// [`Plan::running`].
    pub fn buffers(&self) -> Vec<Tensor> {
        let mut out = Vec::new();
        for node in &self.nodes {
            let Some(r) = &node.stats else { continue };
            let c = r.len() / 2;
            for (suffix, at) in [("running_mean", r.start), ("running_var", r.start + c)] {
                out.push(Tensor {
                    name: format!("{}.{suffix}", node.name),
                    shape: vec![c],
                    range: at..at + c,
                });
            }
        }
        out
    }
    /// The running statistics, laid out as [`Plan::buffers`] says.
    pub fn running(&self) -> &[f32] {
        &self.running
    }
    pub fn running_mut(&mut self) -> &mut [f32] {
        &mut self.running
    }
    /// Each batch norm's name and the training steps its running
    /// statistics have seen (PyTorch's `bnK.num_batches_tracked`).
    pub fn batches_tracked(&self) -> Vec<(String, i64)> {
        let bn = self.nodes.iter().zip(&self.tracked).filter(|(n, _)| n.stats.is_some());
        bn.map(|(n, &t)| (n.name.clone(), t)).collect()
    }
    /// Set the count of [`Plan::batches_tracked`] of the batch norm `node`.
    pub fn set_batches_tracked(&mut self, node: &str, steps: i64) -> Result<(), String> {
        let at = self.nodes.iter().position(|n| n.name == node && n.stats.is_some());
        let at = at.ok_or_else(|| format!("{node}: no batch norm of that name"))?;
        self.tracked[at] = steps;
        Ok(())
    }
    /// Put the running statistics back as they were before the last
    /// training step: for a step whose update is skipped (a non-finite
    /// loss), which must leave no trace.
    pub fn undo_running_stats(&mut self) {
        self.running.copy_from_slice(&self.running_before);
        self.tracked.copy_from_slice(&self.tracked_before);
    }
    /// Whether the model has a node whose lanes meet (a batch norm): its
    /// training step depends on the whole batch at once.
    pub fn has_meets(&self) -> bool {
        !self.meets.is_empty()
    }

    pub fn max_batch(&self) -> usize {
        self.max_batch
    }
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }
    /// The named parameter tensors, in arena order.
    pub fn tensors(&self) -> &[Tensor] {
        &self.tensors
    }
    /// All parameters, one flat arena (see [`Plan::tensors`]).
    pub fn params(&self) -> &[f32] {
        &self.params
    }
    pub fn params_mut(&mut self) -> &mut [f32] {
        &mut self.params
    }
    /// Gradients of the last `forward_backward`, same layout as `params`.
    pub fn grads(&self) -> &[f32] {
        &self.grads
    }
    /// The summed gradients, to be overwritten with a partial sum received
    /// from another process before [`Plan::add_lanes`] continues it.
    pub fn grads_mut(&mut self) -> &mut [f32] {
        &mut self.grads
    }
    /// SGD momentum buffers, same layout as `params`.
    pub fn velocity(&self) -> &[f32] {
        &self.velocity
    }
    pub fn velocity_mut(&mut self) -> &mut [f32] {
        &mut self.velocity
    }
    /// Multiply-adds of one image's forward pass.
    pub fn forward_macs(&self) -> usize {
        self.nodes.iter().map(Node::macs).sum()
    }

    /// A table of the model: layer, output shape, parameters, forward MACs.
    pub fn summary(&self) -> String {
        let mut s =
            format!("{:<8} {:<34} {:>10} {:>10} {:>12}\n", "node", "op", "output", "params", "MACs/image");
        for node in &self.nodes {
            let params =
                node.weight.as_ref().map_or(0, |r| r.len()) + node.bias.as_ref().map_or(0, |r| r.len());
            let op = node.op.to_string();
            let out = node.out_shape.to_string();
            s += &format!("{:<8} {:<34} {:>10} {:>10} {:>12}\n", node.name, op, out, params, node.macs());
        }
        s += &format!(
            "{:<8} {:<34} {:>10} {:>10} {:>12}\n",
            "total",
            self.spec.name,
            "",
            self.params.len(),
            self.forward_macs()
        );
        s
    }
}
