//! A trained model as an ONNX file, for the runtimes that read ONNX
//! (onnxruntime, OpenVINO, TensorRT, tract, onnxruntime-web).
//!
//! The graph takes `input`, float32 `N x C x H x W` with the batch `N`
//! free and pixels scaled to `[0, 1]`; the normalisation the model was
//! trained with is inside it (`Sub` and `Div` by per-channel constants), so
//! a user feeds `pixels / 255`, as the engine itself starts. It gives
//! `probabilities`, `N x classes`, after a softmax. Batch norms compute
//! with their running statistics, as `eval` and `predict` do.
//!
//! The layers are written in the spec's order, the k-th conv of the spec
//! from the plan's k-th conv node (`conv{k}`, its tensors `conv{k}.weight`
//! ...): the plan may run a ReLU after the max pool that follows it, which
//! gives the same values, but the file should read as the model was
//! specified, and only ReLUs and pools trade places, so each kind's own
//! order is the spec's. Every [`LayerSpec`] has an arm below and none is a
//! catch-all, so a new layer type does not compile until it can be
//! exported.

pub mod proto;

use anyhow::{anyhow, bail, Result};
use graph::{LayerSpec, Metadata, Node, Op, Plan, Shape};

use crate::data::Normalizer;
use crate::protobuf::Message;
use crate::run_folder::checkpoint::keys;
use proto::{node, tensor_f32, tensor_i64, value_info, Attr, Dim};

/// The operator set written. 13 is read by every current runtime
/// (onnxruntime since 1.6, TensorRT 8 and later, OpenVINO, tract,
/// onnxruntime-web), and each operator used here (Conv, Relu, MaxPool with
/// `ceil_mode`, GlobalAveragePool, Flatten, Gemm, BatchNormalization,
/// Softmax on one axis) has its present meaning there; a later set would
/// add nothing these models use and shut out older runtimes.
pub const OPSET: i64 = 13;
/// IR version 7 is the one that came with opset 13 (ONNX 1.8): a reader of
/// that opset reads it.
const IR_VERSION: i64 = 7;

/// Names of the graph's input and output, as users and the tests see them.
pub const INPUT: &str = "input";
pub const OUTPUT: &str = "probabilities";
/// The name of the free batch dimension.
const BATCH: &str = "N";

/// What the exported file is made of: the checkpoint's plan (parameters and
/// running statistics loaded), its class names, its input normalisation
/// and its header (for the provenance written into the file).
pub struct Source<'a> {
    pub plan: &'a Plan,
    pub classes: &'a [String],
    pub norm: &'a Normalizer,
    pub meta: &'a Metadata,
}

/// The ONNX model (`ModelProto` bytes) computing what `Plan::predict` then a
/// softmax compute.
pub fn to_onnx(src: &Source) -> Result<Vec<u8>> {
    let plan = src.plan;
    let input = plan.input_shape();
    let mut g = Builder::new(plan);
    if !is_identity(src.norm) {
        g.normalize(src.norm, input.c);
    }
    for (i, layer) in plan.spec().layers.iter().enumerate() {
        g.layer(layer).map_err(|e| anyhow!("layer {} ({layer}): {e}", i + 1))?;
    }
    g.make_2d("logits.flat");
    let last = g.current.clone();
    g.add(node("Softmax", "softmax", &[&last], &[OUTPUT], &[("axis", Attr::Int(1))]));
    if g.used.iter().sum::<usize>() != plan.nodes().len() {
        bail!(
            "the spec's layers took {} of the plan's {} nodes",
            g.used.iter().sum::<usize>(),
            plan.nodes().len()
        );
    }

    let mut graph = Message::new();
    for n in &g.nodes {
        graph.message(1, n);
    }
    graph.string(2, &plan.spec().name);
    for t in &g.initializers {
        graph.message(5, t);
    }
    graph.string(10, &doc(src, input));
    let dims = [Dim::Named(BATCH), Dim::Fixed(input.c), Dim::Fixed(input.h), Dim::Fixed(input.w)];
    graph.message(11, &value_info(INPUT, &dims));
    graph.message(12, &value_info(OUTPUT, &[Dim::Named(BATCH), Dim::Fixed(plan.classes())]));

    let mut model = Message::new();
    model
        .int(1, IR_VERSION)
        .string(2, "gapnet")
        .string(3, env!("CARGO_PKG_VERSION"))
        .string(6, &doc(src, input))
        .message(7, &graph)
        .message(8, &proto::opset(OPSET));
    for (key, value) in metadata(src)? {
        model.message(14, &proto::entry(&key, &value));
    }
    Ok(model.into_bytes())
}

fn is_identity(norm: &Normalizer) -> bool {
    norm.mean.iter().all(|&m| m == 0.0) && norm.std.iter().all(|&s| s == 1.0)
}

/// What a user of the file needs to feed it, in one paragraph.
fn doc(src: &Source, input: Shape) -> String {
    format!(
        "{} exported by gapnet {}. Input `{INPUT}`: float32 N x {} x {} x {}, pixel values / 255 (channels \
         in the training data's order); the training's normalisation is inside the graph. Output `{OUTPUT}`: \
         N x {}, softmax over the classes {}.",
        src.plan.spec().name,
        env!("CARGO_PKG_VERSION"),
        input.c,
        input.h,
        input.w,
        src.classes.len(),
        src.classes.join(", ")
    )
}

/// `metadata_props`: the class names in output order (a JSON list, as in
/// the checkpoint's header), the model and where it came from.
fn metadata(src: &Source) -> Result<Vec<(String, String)>> {
    let mut out = vec![
        (keys::CLASSES.to_string(), serde_json::to_string(src.classes)?),
        ("model".to_string(), src.plan.spec().name.clone()),
        ("spec".to_string(), serde_json::to_string(src.plan.spec())?),
        (keys::NORM_MEAN.to_string(), serde_json::to_string(&src.norm.mean)?),
        (keys::NORM_STD.to_string(), serde_json::to_string(&src.norm.std)?),
        ("input_scale".to_string(), "pixel values / 255".to_string()),
        ("gapnet_version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
    ];
    // Provenance the header may hold: the epoch it was saved after, and the
    // planes `prune` zeroed.
    for key in ["epoch", "pruned_planes"] {
        if let Some(v) = src.meta.get(key) {
            out.push((key.to_string(), v.clone()));
        }
    }
    Ok(out)
}

/// The kinds of plan node, indices into [`KINDS`].
const CONV: usize = 0;
const RELU: usize = 1;
const POOL: usize = 2;
const GAP: usize = 3;
const DENSE: usize = 4;
const BN: usize = 5;

fn kind(op: &Op) -> usize {
    match op {
        Op::Conv(_) => CONV,
        Op::Relu => RELU,
        Op::MaxPool(_) => POOL,
        Op::GlobalAvgPool { .. } => GAP,
        Op::Dense(_) => DENSE,
        Op::BatchNorm(_) => BN,
    }
}

/// The kinds of plan node, as errors name them.
const KINDS: [&str; 6] = ["conv", "relu", "max pool", "global average pool", "dense", "batch norm"];

/// The graph being written: its nodes, its constants, and the tensor the
/// next layer reads (4-D `N x C x H x W`, or 2-D `N x C` after a flatten,
/// a global average pool or a dense layer).
struct Builder<'a> {
    plan: &'a Plan,
    nodes: Vec<Message>,
    initializers: Vec<Message>,
    current: String,
    rank4: bool,
    /// Plan nodes of each kind taken so far.
    used: [usize; KINDS.len()],
    /// Tensor names given so far: each must be unique in the graph.
    names: Vec<String>,
}

impl<'a> Builder<'a> {
    fn new(plan: &'a Plan) -> Builder<'a> {
        Builder {
            plan,
            nodes: Vec::new(),
            initializers: Vec::new(),
            current: INPUT.to_string(),
            rank4: true,
            used: [0; KINDS.len()],
            names: vec![INPUT.to_string(), OUTPUT.to_string()],
        }
    }

    fn add(&mut self, n: Message) {
        self.nodes.push(n);
    }

    /// A node reading the current tensor (and `extra` inputs), whose one
    /// output, named `name` (or `name.2`, ... if taken), becomes the
    /// current tensor.
    fn op(&mut self, op_type: &str, name: &str, extra: &[&str], attrs: &[(&str, Attr)]) {
        let name = self.fresh(name);
        let mut inputs = vec![self.current.as_str()];
        inputs.extend_from_slice(extra);
        let n = node(op_type, &name, &inputs, &[&name], attrs);
        self.add(n);
        self.current = name;
    }

    /// `name`, or the first of `name.2`, `name.3`, ... not yet given (a
    /// second global average pool is named `gap` in the plan too).
    fn fresh(&mut self, name: &str) -> String {
        let taken = |n: &String| self.names.contains(n);
        let name = (1..).map(|k| if k == 1 { name.to_string() } else { format!("{name}.{k}") });
        let name = name.into_iter().find(|n| !taken(n)).expect("some name is free");
        self.names.push(name.clone());
        name
    }

    /// `(x - mean) / std` per channel, as the engine normalises its input,
    /// in the same f32 operations: the same values for the same `x`.
    fn normalize(&mut self, norm: &Normalizer, c: usize) {
        self.initializers.push(tensor_f32("norm_mean", &[1, c, 1, 1], &norm.mean));
        self.initializers.push(tensor_f32("norm_std", &[1, c, 1, 1], &norm.std));
        self.op("Sub", "centered", &["norm_mean"], &[]);
        self.op("Div", "normalized", &["norm_std"], &[]);
    }

    /// A parameter tensor of the plan as a constant of the graph, under its
    /// checkpoint (PyTorch) name and shape.
    fn param(&mut self, name: &str) -> Result<String> {
        let t = self.plan.tensors().iter().find(|t| t.name == name);
        let t = t.ok_or_else(|| anyhow!("the plan has no tensor {name}"))?;
        self.initializers.push(tensor_f32(name, &t.shape, &self.plan.params()[t.range.clone()]));
        Ok(name.to_string())
    }

    /// A batch norm's running mean or variance as a constant.
    fn buffer(&mut self, name: &str) -> Result<String> {
        let buffers = self.plan.buffers();
        let t = buffers.iter().find(|t| t.name == name);
        let t = t.ok_or_else(|| anyhow!("the plan has no running statistics {name}"))?;
        self.initializers.push(tensor_f32(name, &t.shape, &self.plan.running()[t.range.clone()]));
        Ok(name.to_string())
    }

    /// The plan's next node of a kind (`CONV`, ...), in spec order.
    fn take(&mut self, kind_of_layer: usize) -> Result<&'a Node> {
        let plan: &'a Plan = self.plan;
        let k = self.used[kind_of_layer];
        self.used[kind_of_layer] += 1;
        let mut of_kind = plan.nodes().iter().filter(|n| kind(&n.op) == kind_of_layer);
        of_kind
            .nth(k)
            .ok_or_else(|| anyhow!("the plan has no {} node number {}", KINDS[kind_of_layer], k + 1))
    }

    /// Make the current tensor `N x C x H x W` for an op that needs it; a
    /// flat `N x C` becomes `N x C x 1 x 1` (the plan's `C x 1 x 1`).
    fn make_4d(&mut self, shape: Shape, name: &str) {
        if self.rank4 {
            return;
        }
        let dims = [0, shape.c as i64, shape.h as i64, shape.w as i64];
        let target = format!("{name}.shape");
        // 0 keeps the input's size: the batch stays free.
        self.initializers.push(tensor_i64(&target, &[4], &dims));
        self.op("Reshape", name, &[&target], &[]);
        self.rank4 = true;
    }

    /// Make the current tensor `N x (C*H*W)`, in the engine's (row-major
    /// CHW) order.
    fn make_2d(&mut self, name: &str) {
        if self.rank4 {
            self.op("Flatten", name, &[], &[("axis", Attr::Int(1))]);
            self.rank4 = false;
        }
    }

    fn layer(&mut self, layer: &LayerSpec) -> Result<()> {
        match *layer {
            LayerSpec::Conv { .. } => self.conv(),
            LayerSpec::Relu => {
                let n = self.take(RELU)?;
                self.op("Relu", &n.name, &[], &[]);
                Ok(())
            }
            LayerSpec::MaxPool { .. } => self.max_pool(),
            LayerSpec::GlobalAvgPool => {
                let n = self.take(GAP)?;
                self.make_4d(n.in_shape, &format!("{}.in", n.name));
                self.op("GlobalAveragePool", &format!("{}.4d", n.name), &[], &[]);
                self.make_2d(&n.name);
                Ok(())
            }
            LayerSpec::Flatten => {
                self.make_2d("flatten");
                Ok(())
            }
            LayerSpec::Dense { .. } => self.dense(),
            LayerSpec::BatchNorm { .. } => self.batch_norm(),
        }
    }

    fn conv(&mut self) -> Result<()> {
        let n = self.take(CONV)?;
        let (name, Op::Conv(s)) = (&n.name, n.op) else { unreachable!("take(CONV) gives a conv") };
        self.make_4d(n.in_shape, &format!("{name}.in"));
        let mut inputs = vec![self.param(&format!("{name}.weight"))?];
        if n.bias.is_some() {
            inputs.push(self.param(&format!("{name}.bias"))?);
        }
        let (k, st, p) = (s.kh as i64, s.stride as i64, s.pad as i64);
        let attrs = [
            ("kernel_shape", Attr::Ints(vec![k, s.kw as i64])),
            ("strides", Attr::Ints(vec![st, st])),
            ("pads", Attr::Ints(vec![p, p, p, p])),
        ];
        let extra: Vec<&str> = inputs.iter().map(String::as_str).collect();
        self.op("Conv", name, &extra, &attrs);
        Ok(())
    }

    fn max_pool(&mut self) -> Result<()> {
        let n = self.take(POOL)?;
        let (name, Op::MaxPool(s)) = (&n.name, n.op) else { unreachable!("take(POOL) gives a max pool") };
        self.make_4d(n.in_shape, &format!("{name}.in"));
        let (size, stride) = (s.size as i64, s.stride as i64);
        let mut attrs = vec![
            ("kernel_shape", Attr::Ints(vec![size, size])),
            ("strides", Attr::Ints(vec![stride, stride])),
        ];
        let out = [(s.h, n.out_shape.h), (s.w, n.out_shape.w)];
        match pool_mode(s.size, s.stride, out) {
            PoolMode::Floor => {}
            PoolMode::Ceil => attrs.push(("ceil_mode", Attr::Int(1))),
            PoolMode::PadEnd(h, w) => attrs.push(("pads", Attr::Ints(vec![0, 0, h as i64, w as i64]))),
        }
        self.op("MaxPool", name, &[], &attrs);
        Ok(())
    }

    fn dense(&mut self) -> Result<()> {
        let n = self.take(DENSE)?;
        let name = &n.name;
        self.make_2d(&format!("{name}.in"));
        let mut inputs = vec![self.param(&format!("{name}.weight"))?];
        if n.bias.is_some() {
            inputs.push(self.param(&format!("{name}.bias"))?);
        }
        // The weight is stored `[outputs, inputs]`, as PyTorch's Linear.
        let extra: Vec<&str> = inputs.iter().map(String::as_str).collect();
        self.op("Gemm", name, &extra, &[("transB", Attr::Int(1))]);
        Ok(())
    }

    /// Evaluation-mode batch norm, per channel of a 4-D tensor or per unit
    /// of a 2-D one (BatchNormalization reads axis 1 either way).
    fn batch_norm(&mut self) -> Result<()> {
        let n = self.take(BN)?;
        let (name, Op::BatchNorm(s)) = (&n.name, n.op) else { unreachable!("take(BN) gives a batch norm") };
        let inputs = [
            self.param(&format!("{name}.weight"))?,
            self.param(&format!("{name}.bias"))?,
            self.buffer(&format!("{name}.running_mean"))?,
            self.buffer(&format!("{name}.running_var"))?,
        ];
        let extra: Vec<&str> = inputs.iter().map(String::as_str).collect();
        self.op("BatchNormalization", name, &extra, &[("epsilon", Attr::Float(s.eps))]);
        Ok(())
    }
}

/// How a max pool is written so that every runtime gives the engine's
/// windows.
#[derive(Debug, PartialEq, Eq)]
enum PoolMode {
    Floor,
    /// `ceil_mode = 1`: an extra, clipped window at the end.
    Ceil,
    /// Floor mode over the input padded at its far ends by this many rows
    /// and columns (padding never wins a max).
    PadEnd(usize, usize),
}

/// The mode giving `out` windows on each axis, as `(input size, the
/// engine's output size)`. Ceil mode drops a window that would start past
/// the input (PyTorch's rule, and the engine's), but ONNX wrote that rule
/// down only in opset 19 and older runtimes keep the window: `ceil_mode` is
/// written only where its plain formula gives the engine's count on both
/// axes, floor mode where that does, and explicit end padding in the rare
/// remaining case (a stride larger than the window, on a non-square input).
fn pool_mode(size: usize, stride: usize, out: [(usize, usize); 2]) -> PoolMode {
    let floor = |n: usize| (n - size) / stride + 1;
    let ceil = |n: usize| (n - size).div_ceil(stride) + 1;
    if out.iter().all(|&(n, o)| floor(n) == o) {
        PoolMode::Floor
    } else if out.iter().all(|&(n, o)| ceil(n) == o) {
        PoolMode::Ceil
    } else {
        let pad = |(n, o): (usize, usize)| ((o - 1) * stride + size).saturating_sub(n);
        PoolMode::PadEnd(pad(out[0]), pad(out[1]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceil_mode_is_written_only_where_it_adds_a_window() {
        // The seed presets' 3x3/2 pool on 32: ceil gives 16, floor 15.
        assert_eq!(pool_mode(3, 2, [(32, 16), (32, 16)]), PoolMode::Ceil);
        // 2x2/2 on an even size: ceil and floor agree.
        assert_eq!(pool_mode(2, 2, [(16, 8), (16, 8)]), PoolMode::Floor);
        // 2x2/3 on 6: ceil's plain formula gives 3, but its third window
        // would start at 6, past the input: the engine (as PyTorch) has 2,
        // as floor mode does.
        assert_eq!(pool_mode(2, 3, [(6, 2), (6, 2)]), PoolMode::Floor);
        // On 7 the third window starts at 6 and is clipped to one column.
        assert_eq!(pool_mode(2, 3, [(7, 3), (7, 3)]), PoolMode::Ceil);
        // Both on a 6x7 input: neither mode alone; floor mode with the
        // columns padded by one at their end gives the clipped window.
        assert_eq!(pool_mode(2, 3, [(6, 2), (7, 3)]), PoolMode::PadEnd(0, 1));
    }
}
