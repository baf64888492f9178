//! Every layer's operation, defined once: what it makes of its input
//! (checked), its parameters and scratch, and its forward and backward pass
//! over explicit buffers. The planner ([`crate::Plan::new`]), the executor
//! (`exec.rs`), the probe, the memory bound ([`crate::footprint_bytes`]) and
//! the benches all go through these functions; this is also the one place
//! that calls the kernel crate's convolution, pooling and dense kernels.
//!
//! Adding a layer: a [`LayerSpec`] variant (`spec.rs`: its TOML name and
//! `Display`), an [`Op`] variant here, and an arm in each `match` of this
//! file (they have no catch-all arms, so the compiler lists every one).
//! Nothing else walks the nodes. Flatten is no op: planning reshapes.

use std::fmt;

use kernel::{
    batch_norm_backward, batch_norm_forward, batch_norm_grad_sums, batch_norm_moments,
    batch_norm_param_grads, batch_norm_running_stats, batch_norm_stats, conv2d_backward_via,
    conv2d_forward_via, conv2d_maxpool_forward, conv2d_maxpool_scratch_len, dense_backward, dense_forward,
    dense_input_grad, gap_backward, gap_forward, maxpool_backward, maxpool_forward, maxpool_relu_backward,
    relu_backward, relu_forward, BatchNorm, Conv2d, ConvPath, Dense, Isa, MaxPool2d,
};

use crate::plan::{Init, Shape};
use crate::spec::LayerSpec;

/// The most values any one buffer of a plan may hold, 2^40 (4 TiB of f32):
/// far beyond any machine this runs on, and small enough that the sizes
/// derived from such buffers (times a chunk, im2col's, the direct kernels'
/// padded planes) cannot overflow a `usize`.
pub const MAX_VALUES: usize = 1 << 40;

/// What a node computes, with its shapes resolved.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Op {
    Conv(Conv2d),
    Relu,
    MaxPool(MaxPool2d),
    GlobalAvgPool {
        c: usize,
        hw: usize,
    },
    Dense(Dense),
    /// Needs the whole batch's statistics in training: the executor's
    /// lanes meet before and after it (see [`Op::meets`]).
    BatchNorm(BatchNorm),
}

/// What a layer of a spec becomes on a given input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Resolved {
    /// A node computing `op`, producing `out` per image; `bias`: whether it
    /// has a bias tensor.
    Node { op: Op, out: Shape, bias: bool },
    /// No computation, the same values seen as another shape (flatten).
    Reshape(Shape),
}

/// Why a layer cannot take its input. Copy data, so that the memory bound
/// can resolve layers without allocating; [`Refusal::message`] words it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    ZeroConv,
    KernelTooLarge {
        pad: usize,
        size: usize,
    },
    WindowTooLarge {
        size: usize,
    },
    NotFlat,
    NoUnits,
    BadBatchNorm,
    /// Some buffer would hold more than [`MAX_VALUES`].
    TooLarge,
}

impl Refusal {
    /// The error `Plan::new` reports for `layer` on an input of `input`.
    pub(crate) fn message(self, layer: &LayerSpec, input: Shape) -> String {
        match self {
            Refusal::ZeroConv => format!("{layer}: filters, size and stride must be at least 1"),
            Refusal::KernelTooLarge { pad, size } => {
                format!("{layer}: input {input} padded by {pad} is smaller than the {size}x{size} kernel")
            }
            Refusal::WindowTooLarge { size } => {
                format!(
                    "{layer}: input {input} is smaller than the {size}x{size} window (or size/stride is 0)"
                )
            }
            Refusal::NotFlat => {
                format!("{layer}: input {input} is not flat; add a flatten or global average pool before it")
            }
            Refusal::NoUnits => format!("{layer}: needs at least 1 unit"),
            Refusal::BadBatchNorm => {
                format!("{layer}: eps must be positive and finite, momentum between 0 and 1")
            }
            Refusal::TooLarge => {
                format!("{layer}: on input {input} it needs a buffer of more than 2^40 values")
            }
        }
    }
}

/// The product of `dims` if it is at most [`MAX_VALUES`].
pub(crate) fn bounded(dims: &[usize]) -> Result<usize, Refusal> {
    dims.iter()
        .try_fold(1usize, |p, &d| p.checked_mul(d).filter(|&p| p <= MAX_VALUES))
        .ok_or(Refusal::TooLarge)
}

/// What `layer` makes of one input of `input` (whose size is at most
/// [`MAX_VALUES`]): checked, allocation-free.
pub(crate) fn resolve(layer: &LayerSpec, input: Shape) -> Result<Resolved, Refusal> {
    let Shape { c, h, w } = input;
    let node = |op, out, bias| Ok(Resolved::Node { op, out, bias });
    match *layer {
        LayerSpec::Conv { filters, size, stride, pad, bias } => {
            if filters == 0 || size == 0 || stride == 0 {
                return Err(Refusal::ZeroConv);
            }
            // The padded size must exist before the kernel's formula sees it.
            bounded(&[2, pad])?;
            let s = Conv2d { c_in: c, h, w, c_out: filters, kh: size, kw: size, stride, pad };
            let (Some(ho), Some(wo)) = (s.checked_out_h(), s.checked_out_w()) else {
                return Err(Refusal::KernelTooLarge { pad, size });
            };
            // output, weights, and im2col's matrix
            bounded(&[filters, ho, wo])?;
            bounded(&[filters, c, size, size])?;
            bounded(&[c, size, size, ho, wo])?;
            node(Op::Conv(s), Shape::new(filters, ho, wo), bias)
        }
        LayerSpec::Relu => node(Op::Relu, input, false),
        LayerSpec::MaxPool { size, stride, ceil } => {
            let s = MaxPool2d { c, h, w, size, stride, ceil };
            let (Some(ho), Some(wo)) = (s.checked_out_h(), s.checked_out_w()) else {
                return Err(Refusal::WindowTooLarge { size });
            };
            node(Op::MaxPool(s), Shape::new(c, ho, wo), false)
        }
        LayerSpec::GlobalAvgPool => node(Op::GlobalAvgPool { c, hw: h * w }, Shape::new(c, 1, 1), false),
        LayerSpec::Flatten => Ok(Resolved::Reshape(Shape::new(input.len(), 1, 1))),
        LayerSpec::Dense { units, bias } => {
            if h != 1 || w != 1 {
                return Err(Refusal::NotFlat);
            }
            if units == 0 {
                return Err(Refusal::NoUnits);
            }
            bounded(&[units, c])?;
            node(Op::Dense(Dense { inputs: c, outputs: units }), Shape::new(units, 1, 1), bias)
        }
        LayerSpec::BatchNorm { eps, momentum } => {
            if !(eps.is_finite() && eps > 0.0 && (0.0..=1.0).contains(&momentum)) {
                return Err(Refusal::BadBatchNorm);
            }
            node(Op::BatchNorm(BatchNorm { c, hw: h * w, eps, momentum }), input, true)
        }
    }
}

/// The parameter tensors of a node, in PyTorch's shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Params {
    /// The weight's dimensions: the first `rank` entries of `dims`.
    pub dims: [usize; 4],
    pub rank: usize,
    /// Length of the bias, if the layer has one.
    pub bias: usize,
}

impl Params {
    pub(crate) fn weight_dims(&self) -> &[usize] {
        &self.dims[..self.rank]
    }
    pub(crate) fn weight_len(&self) -> usize {
        self.weight_dims().iter().product()
    }
}

/// The buffers of one node's forward pass over `m` images.
pub(crate) struct Fwd<'a> {
    /// A batch norm's mean and 1/std per channel (the batch's in training,
    /// the running ones in evaluation); empty for other nodes.
    pub stats: &'a [f32],
    /// `[m, in_len]`.
    pub x: &'a [f32],
    /// `[m, out_len]`, overwritten.
    pub y: &'a mut [f32],
    /// The weight (empty for a node without one) and the bias.
    pub w: &'a [f32],
    pub b: Option<&'a [f32]>,
    /// At least `scratch_len(m)` floats.
    pub scratch: &'a mut [f32],
    /// At least `m * argmax_len()` indices, kept for the backward pass.
    pub argmax: &'a mut [u32],
}

/// The buffers of one node's backward pass over `m` images.
pub(crate) struct Bwd<'a> {
    /// The forward pass's input and output.
    pub x: &'a [f32],
    pub y: &'a [f32],
    pub dy: &'a [f32],
    /// Overwritten with the input gradient; `None` skips that work (the
    /// first node: nobody needs the gradient of the images).
    pub dx: Option<&'a mut [f32]>,
    pub w: &'a [f32],
    /// The parameter gradients, summed over the `m` images: overwritten,
    /// or added to when `accumulate`. `dw` is empty for a node without.
    pub dw: &'a mut [f32],
    pub db: Option<&'a mut [f32]>,
    pub accumulate: bool,
    /// The output gradient the parameter gradients are taken of when it is
    /// not `dy`: the original engine's output layer (`Loss::SeedSquaredError`).
    pub delta: Option<&'a [f32]>,
    pub scratch: &'a mut [f32],
    pub argmax: &'a [u32],
    /// A batch norm's forward statistics, and the whole batch's sums of
    /// its backward pass ([`Op::meet_backward`]) over `count` values per channel.
    pub stats: &'a [f32],
    pub totals: &'a [f64],
    pub count: usize,
}

impl Op {
    /// The weight and bias shapes, or `None` for a node without parameters.
    pub(crate) fn params(&self, bias: bool) -> Option<Params> {
        let (dims, rank, outputs) = match *self {
            Op::Conv(s) => ([s.c_out, s.c_in, s.kh, s.kw], 4, s.c_out),
            Op::Dense(s) => ([s.outputs, s.inputs, 0, 0], 2, s.outputs),
            Op::BatchNorm(s) => ([s.c, 0, 0, 0], 1, s.c),
            Op::Relu | Op::MaxPool(_) | Op::GlobalAvgPool { .. } => return None,
        };
        Some(Params { dims, rank, bias: if bias { outputs } else { 0 } })
    }

    /// Standard deviation of the initial weights (`last`: the logit layer).
    pub(crate) fn init_sd(&self, init: Init, last: bool) -> f64 {
        let (fan_in, conv) = match *self {
            Op::Conv(s) => (s.col_rows(), true),
            Op::Dense(s) => (s.inputs, false),
            Op::Relu | Op::MaxPool(_) | Op::GlobalAvgPool { .. } | Op::BatchNorm(_) => return 0.0,
        };
        let he = (2.0 / fan_in as f64).sqrt();
        match init {
            Init::He => he,
            Init::Seed if conv => 1.0 / 9.0,
            Init::Seed if last => he / 100.0,
            Init::Seed => he / 10.0,
        }
    }

    /// Scratch floats a forward or backward pass of `m` images needs
    /// (a convolution's, also with the max pool after it: [`ConvPool`]).
    pub(crate) fn scratch_len(&self, m: usize) -> usize {
        match *self {
            Op::Conv(s) => s.scratch_len(m).max(conv2d_maxpool_scratch_len(&s)),
            Op::Relu | Op::MaxPool(_) | Op::GlobalAvgPool { .. } | Op::Dense(_) | Op::BatchNorm(_) => 0,
        }
    }

    /// Whether the weights start at one (a batch norm's scale) rather
    /// than drawn at random.
    pub(crate) fn unit_weight(&self) -> bool {
        matches!(self, Op::BatchNorm(_))
    }

    /// Per-channel statistics the node keeps (a batch norm's mean and
    /// variance, or 1/std), 0 for other nodes: where the lanes meet.
    pub fn meets(&self) -> usize {
        match *self {
            Op::BatchNorm(s) => 2 * s.c,
            Op::Conv(_) | Op::Relu | Op::MaxPool(_) | Op::GlobalAvgPool { .. } | Op::Dense(_) => 0,
        }
    }

    /// A batch norm's values per channel per image.
    pub(crate) fn per_channel(&self) -> usize {
        match *self {
            Op::BatchNorm(s) => s.hw,
            _ => 0,
        }
    }

    /// Before the lanes meet in the forward pass: this lane's sums of its
    /// `m` inputs `x` per channel, into `out` (a batch norm's moments).
    pub(crate) fn meet_forward(&self, isa: Isa, m: usize, x: &[f32], out: &mut [f64]) {
        if let Op::BatchNorm(s) = self {
            batch_norm_moments(isa, s, m, x, out);
        }
    }

    /// Where the lanes met in the forward pass: from the whole batch's
    /// sums over `n` images, the batch's statistics into `stats` and the
    /// running ones moved towards them.
    pub(crate) fn meet_stats(&self, n: usize, totals: &[f64], stats: &mut [f32], running: &mut [f32]) {
        if let Op::BatchNorm(s) = self {
            batch_norm_stats(s, n * s.hw, totals, stats, running);
        }
    }

    /// Evaluation's statistics into `stats`, from the running ones.
    pub(crate) fn running_stats(&self, running: &[f32], stats: &mut [f32]) {
        if let Op::BatchNorm(s) = self {
            batch_norm_running_stats(s, running, stats);
        }
    }

    /// Before the lanes meet in the backward pass: this lane's sums of the
    /// output gradient `dy` per channel into `out`, and from them its
    /// parameter gradients (a batch norm's weight and bias).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn meet_backward(
        &self,
        isa: Isa,
        m: usize,
        x: &[f32],
        dy: &[f32],
        stats: &[f32],
        out: &mut [f64],
        dw: &mut [f32],
        db: Option<&mut [f32]>,
        accumulate: bool,
    ) {
        if let Op::BatchNorm(s) = self {
            batch_norm_grad_sums(isa, s, m, x, dy, stats, out);
            let db = db.expect("a batch norm has a bias");
            batch_norm_param_grads(s, out, dw, db, accumulate);
        }
    }

    /// Argmax indices the forward pass keeps for the backward, per image.
    pub(crate) fn argmax_len(&self) -> usize {
        match *self {
            Op::MaxPool(s) => s.out_len(),
            Op::Conv(_) | Op::Relu | Op::GlobalAvgPool { .. } | Op::Dense(_) | Op::BatchNorm(_) => 0,
        }
    }

    /// Multiply-adds of one image's forward pass.
    pub fn macs(&self) -> usize {
        match *self {
            Op::Conv(s) => s.macs(),
            Op::Dense(s) => s.macs(),
            Op::Relu | Op::MaxPool(_) | Op::GlobalAvgPool { .. } | Op::BatchNorm(_) => 0,
        }
    }

    /// Kernel size, stride and padding along either axis, for a node that
    /// slides a window over its input.
    pub fn window(&self) -> Option<(usize, usize, usize)> {
        match *self {
            Op::Conv(c) => Some((c.kh, c.stride, c.pad)),
            Op::MaxPool(m) => Some((m.size, m.stride, 0)),
            Op::Relu | Op::GlobalAvgPool { .. } | Op::Dense(_) | Op::BatchNorm(_) => None,
        }
    }

    /// The stem of the node's name (`conv` for `conv1`) and whether nodes
    /// of this kind are numbered.
    pub(crate) fn stem(&self) -> (&'static str, bool) {
        match *self {
            Op::Conv(_) => ("conv", true),
            Op::Relu => ("relu", true),
            Op::MaxPool(_) => ("pool", true),
            Op::GlobalAvgPool { .. } => ("gap", false),
            Op::Dense(_) => ("fc", true),
            Op::BatchNorm(_) => ("bn", true),
        }
    }

    /// Forward over `m` images; a convolution on `path`.
    pub(crate) fn forward(&self, isa: Isa, path: Option<ConvPath>, m: usize, f: Fwd) {
        match *self {
            Op::Conv(s) => conv2d_forward_via(isa, conv_path(path), &s, m, f.x, f.w, f.b, f.y, f.scratch),
            Op::Relu => relu_forward(f.x, f.y),
            Op::MaxPool(s) => maxpool_forward(isa, &s, m, f.x, f.y, f.argmax),
            Op::GlobalAvgPool { c, hw } => gap_forward(c, hw, m, f.x, f.y),
            Op::Dense(s) => dense_forward(isa, &s, m, f.x, f.w, f.b, f.y),
            Op::BatchNorm(s) => {
                let beta = f.b.expect("a batch norm has a bias");
                batch_norm_forward(isa, &s, m, f.x, f.stats, f.w, beta, f.y)
            }
        }
    }

    /// Backward over `m` images, from the output gradient `b.dy`; a
    /// convolution on `path`.
    pub(crate) fn backward(&self, isa: Isa, path: Option<ConvPath>, m: usize, b: Bwd) {
        match *self {
            Op::Conv(s) => {
                assert!(b.delta.is_none(), "only a dense layer takes another delta");
                let path = conv_path(path);
                conv2d_backward_via(
                    isa,
                    path,
                    &s,
                    m,
                    b.x,
                    b.w,
                    b.dy,
                    b.dx,
                    b.dw,
                    b.db,
                    b.scratch,
                    b.accumulate,
                )
            }
            Op::Dense(s) => match b.delta {
                None => dense_backward(isa, &s, m, b.x, b.w, b.dy, b.dx, b.dw, b.db, b.accumulate),
                Some(delta) => {
                    dense_backward(isa, &s, m, b.x, b.w, delta, None, b.dw, b.db, b.accumulate);
                    if let Some(dx) = b.dx {
                        dense_input_grad(isa, &s, m, b.w, b.dy, dx);
                    }
                }
            },
            Op::Relu => {
                if let Some(dx) = b.dx {
                    relu_backward(b.y, b.dy, dx);
                }
            }
            Op::MaxPool(s) => {
                if let Some(dx) = b.dx {
                    maxpool_backward(&s, m, b.dy, b.argmax, dx);
                }
            }
            Op::GlobalAvgPool { c, hw } => {
                if let Some(dx) = b.dx {
                    gap_backward(c, hw, m, b.dy, dx);
                }
            }
            // The parameter gradients came before the lanes met
            // ([`Op::meet_backward`]); only the input gradient is left.
            Op::BatchNorm(s) => {
                if let Some(dx) = b.dx {
                    batch_norm_backward(isa, &s, m, b.count, b.x, b.dy, b.stats, b.w, b.totals, dx);
                }
            }
        }
    }
}

/// Nodes whose forward passes run as one: a convolution, the max pool
/// after it, and the ReLU after that if there is one (the planner moves a
/// ReLU before a max pool after it). Each image's convolution output is
/// pooled while it is still in cache, and only the last node's output is
/// written: nothing else reads the others in training (the pool's backward
/// needs only its argmax, the ReLU's its own output). The same kernels, so
/// the same bits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConvPool {
    conv: Conv2d,
    pool: MaxPool2d,
    relu: bool,
}

impl ConvPool {
    /// The fusion that `ops` (a node's op and those after it) start with.
    pub(crate) fn starting<'a>(mut ops: impl Iterator<Item = &'a Op>) -> Option<ConvPool> {
        let (Some(Op::Conv(conv)), Some(Op::MaxPool(pool))) = (ops.next(), ops.next()) else { return None };
        let relu = ops.next() == Some(&Op::Relu);
        Some(ConvPool { conv: *conv, pool: *pool, relu })
    }

    /// Nodes it runs.
    pub(crate) fn nodes(&self) -> usize {
        2 + usize::from(self.relu)
    }

    /// Forward over `m` images, the convolution on `path`: `f.w`, `f.b`
    /// are the convolution's, `f.argmax` the pool's, `f.y` the last node's
    /// output.
    pub(crate) fn forward(&self, isa: Isa, path: Option<ConvPath>, m: usize, f: Fwd) {
        let (conv, pool, path) = (&self.conv, &self.pool, conv_path(path));
        conv2d_maxpool_forward(isa, path, conv, pool, m, f.x, f.w, f.b, f.y, f.argmax, f.scratch, self.relu);
    }
}

/// The max pool when `pool` is one and `relu` a ReLU right after it: their
/// backward passes run as one ([`pool_relu_backward`]).
pub(crate) fn pool_then_relu(pool: &Op, relu: &Op) -> Option<MaxPool2d> {
    match (*pool, *relu) {
        (Op::MaxPool(p), Op::Relu) => Some(p),
        _ => None,
    }
}

/// A max pool `pool` and the ReLU after it, backward over `m` images in one
/// pass: from the ReLU's output gradient `dy` and output `y`, the pool's
/// input gradient `dx`. The same bits as the two passes.
pub(crate) fn pool_relu_backward(
    pool: &MaxPool2d,
    m: usize,
    dy: &[f32],
    y: &[f32],
    argmax: &[u32],
    dx: &mut [f32],
) {
    maxpool_relu_backward(pool, m, dy, y, argmax, dx);
}

/// A convolution node's path (the plan gives every convolution one).
fn conv_path(path: Option<ConvPath>) -> ConvPath {
    path.expect("a convolution node has a path")
}

/// How [`crate::Plan::summary`] names the op: `conv 20@3x3 s1 p1`.
impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Op::Conv(c) => write!(f, "conv {}@{}x{} s{} p{}", c.c_out, c.kh, c.kw, c.stride, c.pad),
            Op::Relu => write!(f, "relu"),
            Op::MaxPool(p) => {
                let mode = if p.ceil { "ceil" } else { "floor" };
                write!(f, "maxpool {}x{} s{} {mode}", p.size, p.size, p.stride)
            }
            Op::GlobalAvgPool { .. } => write!(f, "global average pool"),
            Op::Dense(d) => write!(f, "dense {}->{}", d.inputs, d.outputs),
            Op::BatchNorm(b) => write!(f, "batch_norm {}", b.c),
        }
    }
}
