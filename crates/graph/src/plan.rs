//! `Plan`: shape inference, checking, and the memory of a model, laid out
//! once. After `Plan::new` nothing in forward, backward or the SGD step
//! touches the heap.
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

use kernel::{Conv2d, Dense, Isa, LossSums, MaxPool2d};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

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

/// What a node computes, with its shapes resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Conv(Conv2d),
    Relu,
    MaxPool(MaxPool2d),
    GlobalAvgPool { c: usize, hw: usize },
    Dense(Dense),
}

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
}

impl Node {
    /// Multiply-adds of one image's forward pass through this node.
    pub fn macs(&self) -> usize {
        match self.op {
            Op::Conv(s) => s.macs(),
            Op::Dense(s) => s.macs(),
            _ => 0,
        }
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
    /// The kernels every node runs ([`Isa::detect`] at `Plan::new`).
    pub(crate) isa: Isa,
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

fn err(layer: usize, message: String) -> PlanError {
    PlanError { layer, message }
}

impl Plan {
    /// Infer and check every shape of `spec` for inputs of `input` and
    /// batches of up to `max_batch`, then allocate everything once.
    /// Weights start He-normal with seed 0; see [`Plan::initialize`].
    pub fn new(spec: &ModelSpec, input: Shape, max_batch: usize) -> Result<Plan, PlanError> {
        if max_batch == 0 {
            return Err(err(0, "the maximum batch size must be at least 1".into()));
        }
        if input.is_empty() {
            return Err(err(0, format!("input shape {input} has no elements")));
        }
        let chunk = max_batch.div_ceil(LANES).min(MAX_CHUNK);
        let mut nodes: Vec<Node> = Vec::new();
        let mut tensors: Vec<Tensor> = Vec::new();
        let (mut n_params, mut n_acts, mut n_argmax, mut n_cols) = (0, 0, 0, 0);
        let (mut convs, mut fcs, mut relus, mut pools) = (0, 0, 0, 0);
        let mut shape = input;
        let mut param = |name: String, dims: Vec<usize>, tensors: &mut Vec<Tensor>| {
            let len: usize = dims.iter().product();
            let range = n_params..n_params + len;
            n_params += len;
            tensors.push(Tensor { name, shape: dims, range: range.clone() });
            range
        };
        for i in execution_order(&spec.layers) {
            let (at, layer) = (i + 1, &spec.layers[i]);
            let (name, op, out, weight, bias) = match *layer {
                LayerSpec::Conv { filters, size, stride, pad, bias } => {
                    if filters == 0 || size == 0 || stride == 0 {
                        return Err(err(at, format!("{layer}: filters, size and stride must be at least 1")));
                    }
                    let s = Conv2d {
                        c_in: shape.c,
                        h: shape.h,
                        w: shape.w,
                        c_out: filters,
                        kh: size,
                        kw: size,
                        stride,
                        pad,
                    };
                    let (Some(ho), Some(wo)) = (s.checked_out_h(), s.checked_out_w()) else {
                        return Err(err(
                            at,
                            format!("{layer}: input {shape} padded by {pad} is smaller than the {size}x{size} kernel"),
                        ));
                    };
                    convs += 1;
                    let name = format!("conv{convs}");
                    let w = param(format!("{name}.weight"), vec![filters, shape.c, size, size], &mut tensors);
                    let b = bias.then(|| param(format!("{name}.bias"), vec![filters], &mut tensors));
                    n_cols = n_cols.max(s.scratch_len(chunk));
                    (name, Op::Conv(s), Shape::new(filters, ho, wo), Some(w), b)
                }
                LayerSpec::Relu => {
                    relus += 1;
                    (format!("relu{relus}"), Op::Relu, shape, None, None)
                }
                LayerSpec::MaxPool { size, stride, ceil } => {
                    let s = MaxPool2d { c: shape.c, h: shape.h, w: shape.w, size, stride, ceil };
                    let (Some(ho), Some(wo)) = (s.checked_out_h(), s.checked_out_w()) else {
                        return Err(err(
                            at,
                            format!("{layer}: input {shape} is smaller than the {size}x{size} window (or size/stride is 0)"),
                        ));
                    };
                    pools += 1;
                    (format!("pool{pools}"), Op::MaxPool(s), Shape::new(shape.c, ho, wo), None, None)
                }
                LayerSpec::GlobalAvgPool => {
                    let op = Op::GlobalAvgPool { c: shape.c, hw: shape.h * shape.w };
                    ("gap".to_string(), op, Shape::new(shape.c, 1, 1), None, None)
                }
                LayerSpec::Flatten => {
                    shape = Shape::new(shape.len(), 1, 1);
                    continue;
                }
                LayerSpec::Dense { units, bias } => {
                    if !shape.is_flat() {
                        return Err(err(
                            at,
                            format!("{layer}: input {shape} is not flat; add a flatten or global average pool before it"),
                        ));
                    }
                    if units == 0 {
                        return Err(err(at, format!("{layer}: needs at least 1 unit")));
                    }
                    fcs += 1;
                    let name = format!("fc{fcs}");
                    let s = Dense { inputs: shape.c, outputs: units };
                    let w = param(format!("{name}.weight"), vec![units, shape.c], &mut tensors);
                    let b = bias.then(|| param(format!("{name}.bias"), vec![units], &mut tensors));
                    (name, Op::Dense(s), Shape::new(units, 1, 1), Some(w), b)
                }
            };
            if out.is_empty() {
                return Err(err(at, format!("{layer}: output {out} has no elements")));
            }
            let act = n_acts..n_acts + out.len() * chunk;
            n_acts = act.end;
            let argmax = if matches!(op, Op::MaxPool(_)) {
                let r = n_argmax..n_argmax + out.len() * chunk;
                n_argmax = r.end;
                r
            } else {
                0..0
            };
            nodes.push(Node { name, op, in_shape: shape, out_shape: out, act, argmax, weight, bias });
            shape = out;
        }
        match nodes.last() {
            Some(Node { op: Op::Dense(_), .. }) => {}
            _ => {
                return Err(err(0, "the last layer must be a dense layer producing the class logits".into()))
            }
        }
        let classes = shape.c;
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
            })
            .collect();
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
            isa: Isa::detect(),
        };
        plan.initialize(Init::He, 0);
        Ok(plan)
    }

    /// Draw fresh weights (biases zero) from a ChaCha8 stream seeded with
    /// `seed`, tensor by tensor in layer order; clears optimizer state.
    pub fn initialize(&mut self, init: Init, seed: u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let last = self.nodes.len() - 1;
        for (i, node) in self.nodes.iter().enumerate() {
            if let Some(w) = &node.weight {
                let (fan_in, is_conv) = match node.op {
                    Op::Conv(s) => (s.col_rows(), true),
                    Op::Dense(s) => (s.inputs, false),
                    _ => unreachable!("only conv and dense nodes have weights"),
                };
                let he = (2.0 / fan_in as f64).sqrt();
                let sd = match init {
                    Init::He => he,
                    Init::Seed if is_conv => 1.0 / 9.0,
                    Init::Seed if i == last => he / 100.0,
                    Init::Seed => he / 10.0,
                };
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
            let op = match node.op {
                Op::Conv(c) => format!("conv {}@{}x{} s{} p{}", c.c_out, c.kh, c.kw, c.stride, c.pad),
                Op::Relu => "relu".into(),
                Op::MaxPool(p) => {
                    format!(
                        "maxpool {}x{} s{} {}",
                        p.size,
                        p.size,
                        p.stride,
                        if p.ceil { "ceil" } else { "floor" }
                    )
                }
                Op::GlobalAvgPool { .. } => "global average pool".into(),
                Op::Dense(d) => format!("dense {}->{}", d.inputs, d.outputs),
            };
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
