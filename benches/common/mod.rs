//! Shared by the bench targets: the presets, a synthetic batch, the SGEMM
//! ceiling, the stages of a network, and [`NodeTimes`], which times them
//! inside the engine's own training step (`Plan::forward_backward_observed`,
//! the plain step's code with a clock around every node).

#![allow(dead_code)] // each bench target uses its own part of this module

pub mod timing;

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use graph::{preset, Event, Init, Loss, Node, Observer, Op, Phase, Plan, Reduction, Shape};
use kernel::gemm::{sgemm, Mat};

/// The two models the blog compares.
pub const PRESETS: [&str; 2] = ["seed-fc", "seed-gap"];
/// CIFAR-10 images.
pub const INPUT: Shape = Shape { c: 3, h: 32, w: 32 };
/// The loss and reduction of the default (modern) recipe.
pub const LOSS: Loss = Loss::CrossEntropy;
pub const REDUCTION: Reduction = Reduction::Mean;
pub const SGD: graph::Sgd = graph::Sgd { lr: 0.01, momentum: 0.9, weight_decay: 5e-4, clip_dense: false };

/// A preset planned for batches of up to `batch` images (as the trainer
/// plans it for its batch size), He-initialised with seed 1.
pub fn plan(name: &str, batch: usize) -> Plan {
    plan_for(name, batch, graph::Isa::detect())
}

/// [`plan`] running the `isa` kernels.
pub fn plan_for(name: &str, batch: usize, isa: graph::Isa) -> Plan {
    let spec = preset(name).unwrap_or_else(|| panic!("unknown preset {name}"));
    let mut plan = Plan::for_isa(&spec, INPUT, batch, isa).expect("presets always plan");
    plan.initialize(Init::He, 1);
    plan
}

/// A deterministic synthetic batch: pixels spread over [-2, 2) like
/// mean/std-normalised CIFAR data, labels alternating 0, 1.
pub fn batch(n: usize) -> (Vec<f32>, Vec<u32>) {
    let x = (0..n * INPUT.len())
        .map(|i| {
            let mut z = (i as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
        })
        .collect();
    let y = (0..n as u32).map(|i| i % 2).collect();
    (x, y)
}

/// Side of the square SGEMM products of the ceiling.
pub const CEILING_N: usize = 512;

/// The SGEMM ceiling: one single-threaded `CEILING_N`^3 product on every
/// rayon thread at once, the way the engine calls SGEMM (one product per
/// thread, never a threaded product). `run()` does one round.
pub struct Ceiling {
    a: Vec<f32>,
    b: Vec<f32>,
    outs: Vec<Mutex<Vec<f32>>>,
}

impl Ceiling {
    pub fn new() -> Self {
        let n = CEILING_N;
        let threads = rayon::current_num_threads();
        Ceiling {
            a: (0..n * n).map(|i| (i % 7) as f32 * 0.1).collect(),
            b: (0..n * n).map(|i| (i % 5) as f32 * 0.1).collect(),
            outs: (0..threads).map(|_| Mutex::new(vec![0.0; n * n])).collect(),
        }
    }
    /// Floating-point operations of one round (all threads).
    pub fn flops(&self) -> u64 {
        (2 * CEILING_N.pow(3) * self.outs.len()) as u64
    }
    pub fn run(&self) {
        let n = CEILING_N;
        rayon::broadcast(|ctx| {
            let mut out = self.outs[ctx.index()].lock().unwrap();
            sgemm(1.0, Mat::rows(&self.a, n, n), Mat::rows(&self.b, n, n), 0.0, &mut out);
        });
    }
}

/// A short description of a node, e.g. `conv 20@3x3 s1 p1 on 3x32x32`.
pub fn describe(node: &Node) -> String {
    if node.in_shape.h == 1 && node.in_shape.w == 1 {
        node.op.to_string()
    } else {
        format!("{} on {}", node.op, node.in_shape)
    }
}

/// Parameters of a node (weight and bias).
pub fn node_params(node: &Node) -> usize {
    node.weight.as_ref().map_or(0, |r| r.len()) + node.bias.as_ref().map_or(0, |r| r.len())
}

/// Floating-point operations of one image through a node, forward and
/// backward as the engine computes them (`first`: node 0 skips its input
/// gradient). Elementwise nodes count 0.
pub fn node_flops(node: &Node, first: bool) -> (u64, u64) {
    let macs = node.macs() as u64;
    if macs == 0 {
        return (0, 0);
    }
    (2 * macs, if first { 2 * macs } else { 4 * macs })
}

/// Index of the first node of the head: everything after the conv trunk.
pub fn head_start(nodes: &[Node]) -> usize {
    nodes.iter().position(|n| matches!(n.op, Op::Dense(_) | Op::GlobalAvgPool { .. })).unwrap_or(nodes.len())
}

/// "gap_head" or "fc_head".
pub fn head_name(nodes: &[Node]) -> &'static str {
    if nodes.iter().any(|n| matches!(n.op, Op::GlobalAvgPool { .. })) {
        "gap_head"
    } else {
        "fc_head"
    }
}

/// A piece of the network benchmarked as a unit: consecutive nodes and/or
/// the softmax loss at the top.
#[derive(Clone, Debug)]
pub struct Stage {
    pub name: String,
    pub nodes: Range<usize>,
    pub loss: bool,
}

impl Stage {
    /// Nanoseconds of the stage's nodes (and loss) in one direction, out of
    /// [`NodeTimes::nanos`].
    pub fn sum(&self, nanos: &[[u64; 2]], backward: bool) -> u64 {
        let loss = self.loss.then_some(nanos.len() - 1);
        self.nodes.clone().chain(loss).map(|i| nanos[i][usize::from(backward)]).sum()
    }
}

/// The stages of a plan: every trunk node alone, the head (all its nodes),
/// the softmax-cross-entropy loss.
pub fn stages(nodes: &[Node]) -> Vec<Stage> {
    let head = head_start(nodes);
    let mut out: Vec<Stage> =
        (0..head).map(|i| Stage { name: nodes[i].name.clone(), nodes: i..i + 1, loss: false }).collect();
    out.push(Stage { name: head_name(nodes).into(), nodes: head..nodes.len(), loss: false });
    out.push(Stage { name: "softmax_ce".into(), nodes: 0..0, loss: true });
    out
}

/// An [`Observer`] of `Plan::forward_backward_observed`: the lane time of
/// every node (and, last, the loss), summed over lanes and chunks, and the
/// gradient reduction's wall time. Atomics, since the lanes report at once.
pub struct NodeTimes {
    nanos: Vec<[AtomicU64; 2]>,
    reduce: AtomicU64,
}

impl NodeTimes {
    pub fn new(plan: &Plan) -> Self {
        let nanos = (0..=plan.nodes().len()).map(|_| [AtomicU64::new(0), AtomicU64::new(0)]).collect();
        NodeTimes { nanos, reduce: AtomicU64::new(0) }
    }

    pub fn reset(&self) {
        self.nanos.iter().flatten().for_each(|t| t.store(0, Relaxed));
        self.reduce.store(0, Relaxed);
    }

    /// Nanoseconds per node (the loss last): `[forward, backward]`.
    pub fn nanos(&self) -> Vec<[u64; 2]> {
        self.nanos.iter().map(|[f, b]| [f.load(Relaxed), b.load(Relaxed)]).collect()
    }

    /// Wall nanoseconds of the gradient reductions.
    pub fn reduce_nanos(&self) -> u64 {
        self.reduce.load(Relaxed)
    }
}

impl Observer for NodeTimes {
    fn node(&self, e: Event) {
        let d = usize::from(e.phase == Phase::Backward);
        self.nanos[e.node][d].fetch_add(e.nanos, Relaxed);
    }
    fn reduced(&self, nanos: u64) {
        self.reduce.fetch_add(nanos, Relaxed);
    }
}
