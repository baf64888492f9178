//! Looking inside a trained model: every node's activation for a few
//! images, the gradient of a class logit with respect to any node's output,
//! class activation maps (CAM, Grad-CAM) of the planes that feed the head,
//! and pruning those planes by weight surgery.
//!
//! It runs the nodes' own forward and backward functions (`ops.rs`) on
//! buffers of its own, allocated on every call, over all the images at
//! once. It deliberately does not share the lanes and arenas of `exec.rs`:
//! those are laid out for the training hot path and change with it, while
//! explaining a prediction runs a few thousand images once and can afford
//! to allocate. Results agree with [`Plan::predict`] up to float summation
//! order.

use std::fmt;

use crate::ops::{Bwd, Fwd, Op};
use crate::plan::{Node, Plan};

/// What a forward pass of `n` images left behind: the output of every node
/// from some node on (all of them after [`forward`]).
pub struct Trace {
    n: usize,
    /// Index of the first node whose output is held; nodes before it are empty.
    from: usize,
    /// `outputs[i]`: node `i`'s output, `[n, out_len]`.
    outputs: Vec<Vec<f32>>,
    /// Max-pool argmax indices per node (empty for other nodes).
    argmax: Vec<Vec<u32>>,
}

impl Trace {
    /// Images in the trace.
    pub fn images(&self) -> usize {
        self.n
    }

    /// Node `node`'s output for all images, `[n, out_len]`. Panics for a
    /// node before the one a [`forward_from`] trace started at.
    pub fn output(&self, node: usize) -> &[f32] {
        assert!(node >= self.from, "node {node} is before this trace's start (node {})", self.from);
        &self.outputs[node]
    }

    /// The logits, `[n, classes]`.
    pub fn logits(&self) -> &[f32] {
        self.outputs.last().expect("a plan has at least one node")
    }
}

/// Every node's output for the images `x[n, C, H, W]` (any `n` >= 1; the
/// plan's `max_batch` does not apply).
pub fn forward(plan: &Plan, x: &[f32]) -> Trace {
    let per = plan.input_shape().len();
    assert!(!x.is_empty() && x.len().is_multiple_of(per), "{} floats are not whole {} images", x.len(), per);
    run(plan, 0, x, x.len() / per)
}

/// Run the nodes after `node` on a given output of `node` (`[n, out_len]`,
/// e.g. planes edited by hand): what the model would predict had `node`
/// produced `output`. The trace holds `node`'s output and every later one.
pub fn forward_from(plan: &Plan, node: usize, output: &[f32]) -> Trace {
    let per = plan.nodes()[node].out_shape.len();
    assert!(
        !output.is_empty() && output.len().is_multiple_of(per),
        "output of {} floats for node {node}",
        output.len()
    );
    let n = output.len() / per;
    let mut trace = run(plan, node + 1, output, n);
    trace.from = node;
    trace.outputs[node] = output.to_vec();
    trace
}

/// Nodes `from..` on `input` (the output of node `from - 1`, or the images).
fn run(plan: &Plan, from: usize, input: &[f32], n: usize) -> Trace {
    let nodes = plan.nodes();
    let mut outputs = vec![Vec::new(); nodes.len()];
    let mut argmax = vec![Vec::new(); nodes.len()];
    for i in from..nodes.len() {
        let node = &nodes[i];
        let mut y = vec![0.0f32; n * node.out_shape.len()];
        argmax[i] = vec![0u32; n * node.op.argmax_len()];
        node.op.forward(
            plan.isa(),
            node.conv_path,
            n,
            Fwd {
                stats: &plan.running_stats_of(node),
                x: if i == from { input } else { &outputs[i - 1] },
                y: &mut y,
                w: node.weight_of(plan.params()),
                b: node.bias_of(plan.params()),
                scratch: &mut vec![0.0f32; node.op.scratch_len(n)],
                argmax: &mut argmax[i],
            },
        );
        outputs[i] = y;
    }
    Trace { n, from, outputs, argmax }
}

/// Gradient of logit `classes[i]` of image `i` with respect to node
/// `node`'s output, for every image of `trace`: `[n, out_len]`. The images
/// do not interact, so each row is the gradient of its own image's logit.
pub fn gradient(plan: &Plan, trace: &Trace, classes: &[usize], node: usize) -> Vec<f32> {
    let nodes = plan.nodes();
    let (n, k) = (trace.n, plan.classes());
    assert_eq!(classes.len(), n, "one class per image");
    assert!(node >= trace.from && node < nodes.len(), "node {node} is not in the trace");
    let mut dy = vec![0.0f32; n * k];
    for (i, &c) in classes.iter().enumerate() {
        assert!(c < k, "class {c} of a {k}-class model");
        dy[i * k + c] = 1.0;
    }
    for i in (node + 1..nodes.len()).rev() {
        dy = backward_node(plan, &nodes[i], trace, i, &dy);
    }
    dy
}

/// The gradient with respect to node `i`'s input, from its output gradient.
fn backward_node(plan: &Plan, node: &Node, trace: &Trace, i: usize, dy: &[f32]) -> Vec<f32> {
    let n = trace.n;
    let mut dx = vec![0.0f32; n * node.in_shape.len()];
    node.op.backward(
        plan.isa(),
        node.conv_path,
        n,
        Bwd {
            x: &trace.outputs[i - 1],
            y: &trace.outputs[i],
            dy,
            dx: Some(&mut dx),
            w: node.weight_of(plan.params()),
            // Parameter gradients come for free with the kernels; they are thrown away.
            dw: &mut vec![0.0f32; node.weight.as_ref().map_or(0, |r| r.len())],
            db: None,
            accumulate: false,
            delta: None,
            scratch: &mut vec![0.0f32; node.op.scratch_len(n)],
            argmax: &trace.argmax[i],
            // Evaluation's batch norm is a fixed affine map per channel:
            // the training formula with no batch sums to subtract.
            stats: &plan.running_stats_of(node),
            totals: &vec![0.0; node.op.meets()],
            count: 1,
        },
    );
    dx
}

/// Where the planes enter the head: the node whose output (C planes of
/// H x W) feeds the first global average pool or dense layer, and the
/// first dense layer that reads them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// Index of the node whose planes feed the head (e.g. `relu3`).
    pub feature: usize,
    pub planes: usize,
    /// Elements of one plane, `H * W`.
    pub plane_len: usize,
    /// Index of the first dense node after `feature`.
    pub dense: usize,
    /// Columns of that dense layer reading one plane: 1 after a global
    /// average pool, `H * W` after a flatten.
    pub columns_per_plane: usize,
    /// The head is exactly a global average pool and the last (logit) dense
    /// layer, so the class activation map is exact (see [`class_maps`]).
    pub cam: bool,
}

/// A model whose head cannot be read as planes and their weights.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeError(pub String);

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProbeError {}

/// Find the planes before the head. The head starts at the first global
/// average pool or dense node; only ReLUs may sit between that pool and the
/// first dense layer (they map a zero plane to zero, so zeroing a plane is
/// the same as zeroing the dense columns that read it).
pub fn head(plan: &Plan) -> Result<Head, ProbeError> {
    let nodes = plan.nodes();
    let name = &plan.spec().name;
    let start = nodes
        .iter()
        .position(|n| matches!(n.op, Op::GlobalAvgPool { .. } | Op::Dense(_)))
        .expect("a plan ends in a dense layer");
    if start == 0 {
        return Err(ProbeError(format!(
            "model {name}: no layer with planes before its head ({})",
            nodes[0].name
        )));
    }
    let feature = start - 1;
    let shape = nodes[feature].out_shape;
    let dense = (start..nodes.len()).find(|&i| matches!(nodes[i].op, Op::Dense(_))).expect("a last dense");
    if let Some(mixer) = nodes.get(start + 1..dense).unwrap_or(&[]).iter().find(|n| !matches!(n.op, Op::Relu))
    {
        return Err(ProbeError(format!(
            "model {name}: {} between {} and {} mixes the planes; cannot attribute the head to planes",
            mixer.name, nodes[start].name, nodes[dense].name
        )));
    }
    let Op::Dense(d) = nodes[dense].op else { unreachable!("found as dense") };
    let gap = matches!(nodes[start].op, Op::GlobalAvgPool { .. });
    Ok(Head {
        feature,
        planes: shape.c,
        plane_len: shape.h * shape.w,
        dense,
        columns_per_plane: d.inputs / shape.c,
        cam: gap && dense == start + 1 && dense == nodes.len() - 1,
    })
}

/// Where the outputs of node `node` sit on the input image: output
/// element `i` (along either axis) is centred on input pixel `a * i + b`,
/// returned as `(a, b)`. Each conv or pool of kernel `k`, stride `s`, pad
/// `p` maps its output `i` to input `s * i - p + (k - 1) / 2`; composing them
/// places a class map on the image exactly, where a plain resize would be
/// off by a pixel or more (the seed network's 8x8 planes sit at
/// `4 i + 3`, not at the `4 i + 1.5` of a half-pixel resize). A ceil-mode
/// pool's clipped last window is treated as whole.
pub fn receptive_centre(plan: &Plan, node: usize) -> (f64, f64) {
    let (mut a, mut b) = (1.0, 0.0);
    for n in &plan.nodes()[..=node] {
        let Some((k, s, p)) = n.op.window() else { continue };
        b += a * ((k as f64 - 1.0) / 2.0 - p as f64);
        a *= s as f64;
    }
    (a, b)
}

/// Per image and class, how the planes of the head's input speak for it.
pub struct ClassMaps {
    /// `[n, plane_len]`: the map at the planes' resolution.
    pub maps: Vec<f32>,
    /// `[n, planes]`: each plane's contribution to the logit.
    pub contributions: Vec<f32>,
    /// `[n, planes]`: the logit's sensitivity to each plane, the gradient
    /// summed over the plane (what a uniform unit rise of the plane adds).
    pub weights: Vec<f32>,
}

/// Class activation maps of `classes[i]` for image `i` of `trace`.
///
/// With a CAM head (global average pool, then the logit layer `W`):
/// `map = sum_p W[c,p] A_p`, `contribution_p = W[c,p] mean(A_p)` and
/// `weight_p = W[c,p]`, so the map's mean plus the bias is the logit and the
/// contributions plus the bias sum to it. Otherwise Grad-CAM: with
/// `G_p = d logit_c / d A_p`, `map = ReLU(sum_p mean(G_p) A_p)`,
/// `contribution_p = sum_j G_p[j] A_p[j]` (gradient x activation) and
/// `weight_p = sum_j G_p[j]`. For a CAM head these weights and
/// contributions are the same numbers, and the Grad-CAM map is
/// `ReLU(CAM) / plane_len`.
pub fn class_maps(plan: &Plan, head: &Head, trace: &Trace, classes: &[usize]) -> ClassMaps {
    let (n, planes, len) = (trace.n, head.planes, head.plane_len);
    let acts = trace.output(head.feature);
    let (weights, grads) = if head.cam {
        let w = &plan.params()[plan.nodes()[head.dense].weight.clone().expect("dense has weights")];
        (classes.iter().flat_map(|&c| w[c * planes..(c + 1) * planes].to_vec()).collect(), None)
    } else {
        let g = gradient(plan, trace, classes, head.feature);
        (g.chunks_exact(len).map(|plane| plane.iter().sum::<f32>()).collect::<Vec<f32>>(), Some(g))
    };
    let mut maps = vec![0.0f32; n * len];
    let mut contributions = vec![0.0f32; n * planes];
    for i in 0..n {
        let map = &mut maps[i * len..(i + 1) * len];
        for p in 0..planes {
            let at = i * planes + p;
            let plane = &acts[at * len..(at + 1) * len];
            let wp = weights[at];
            // CAM weighs a plane by its dense weight, Grad-CAM by its mean gradient.
            let scale = if head.cam { wp } else { wp / len as f32 };
            map.iter_mut().zip(plane).for_each(|(m, v)| *m += scale * v);
            contributions[at] = match &grads {
                None => wp * plane.iter().sum::<f32>() / len as f32,
                // Gradient x activation: exact even where the gradient varies over the plane.
                Some(g) => g[at * len..(at + 1) * len].iter().zip(plane).map(|(x, y)| x * y).sum(),
            };
        }
        if !head.cam {
            map.iter_mut().for_each(|m| *m = m.max(0.0));
        }
    }
    ClassMaps { maps, contributions, weights }
}

/// Prune planes by weight surgery: zero the columns of the first dense
/// layer that read them. The model then computes exactly what it would
/// with those planes of `head.feature` set to zero, and can be saved as an
/// ordinary checkpoint.
pub fn zero_planes(plan: &mut Plan, head: &Head, planes: &[usize]) -> Result<(), ProbeError> {
    if let Some(&p) = planes.iter().find(|&&p| p >= head.planes) {
        return Err(ProbeError(format!("plane {p} does not exist (planes 0..={})", head.planes - 1)));
    }
    let node = &plan.nodes()[head.dense];
    let Op::Dense(d) = node.op else { unreachable!("head.dense is a dense node") };
    let w = node.weight.clone().expect("dense has weights");
    let per = head.columns_per_plane;
    let weights = &mut plan.params_mut()[w];
    for row in weights.chunks_exact_mut(d.inputs) {
        for &p in planes {
            row[p * per..(p + 1) * per].fill(0.0);
        }
    }
    Ok(())
}
