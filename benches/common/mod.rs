//! Shared by the bench targets: the presets, a synthetic batch, the SGEMM
//! ceiling, and [`Replica`], the engine's lane machinery rebuilt from the
//! public API so that one layer at a time can be run (and timed) exactly the
//! way `Plan::forward_backward` runs it.
//!
//! How the engine runs a batch of `n` images (graph's `exec.rs`): the batch
//! is cut into `min(LANES, max_batch)` contiguous lanes (`graph::lane_range`);
//! rayon runs the lanes; each lane walks its images in chunks of
//! `min(ceil(max_batch / LANES), MAX_CHUNK)` images through single-threaded
//! kernels, with its own activations, convolution scratch and gradient arena; the
//! lanes' gradients are then summed in lane order. `Replica` does the same,
//! node by node. `Replica::check` proves the copy faithful: its gradients
//! and loss must equal `Plan::forward_backward`'s bit for bit, otherwise the
//! benches refuse to run (exec.rs changed; update this file).

#![allow(dead_code)] // each bench target uses its own part of this module

pub mod timing;

use std::ops::Range;
use std::sync::Mutex;
use std::time::Instant;

use graph::{lane_range, preset, Init, Loss, LossSums, Node, Op, Plan, Reduction, Shape, LANES, MAX_CHUNK};
use kernel::gemm::{sgemm, Mat};
use kernel::reduce::sum_in_order;
use kernel::{
    conv2d_backward, conv2d_forward, dense_backward, dense_forward, gap_backward, gap_forward,
    maxpool_backward, maxpool_forward, relu_backward, relu_forward, softmax_loss_backward,
    softmax_loss_forward, Isa,
};
use rayon::prelude::*;

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
    let spec = preset(name).unwrap_or_else(|| panic!("unknown preset {name}"));
    let mut plan = Plan::new(&spec, INPUT, batch).expect("presets always plan");
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

/// A short description of a node, e.g. `conv 3->20 3x3 p1 @32x32`.
pub fn describe(node: &Node) -> String {
    match node.op {
        Op::Conv(c) => format!("conv {}->{} {}x{} p{} @{}x{}", c.c_in, c.c_out, c.kh, c.kw, c.pad, c.h, c.w),
        Op::Relu => format!("relu {}", node.out_shape),
        Op::MaxPool(p) => {
            format!("maxpool {}/{} {}x{}->{}x{}", p.size, p.stride, p.h, p.w, p.out_h(), p.out_w())
        }
        Op::GlobalAvgPool { c, hw } => format!("GAP {c}x{hw}->{c}"),
        Op::Dense(d) => format!("dense {}->{}", d.inputs, d.outputs),
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

/// The nodes, parameters and layout the lanes share (read-only).
pub struct Net {
    pub nodes: Vec<Node>,
    acts: Vec<Range<usize>>,
    argmax: Vec<Range<usize>>,
    params: Vec<f32>,
    pub chunk: usize,
    pub lanes: usize,
    pub classes: usize,
    in_len: usize,
    /// The plan's kernels.
    isa: Isa,
}

/// One lane's private memory, as in the engine, plus per-node timings.
pub struct LaneBuf {
    acts: Vec<f32>,
    dacts: Vec<f32>,
    argmax: Vec<u32>,
    cols: Vec<f32>,
    probs: Vec<f32>,
    grads: Vec<f32>,
    sums: LossSums,
    /// Nanoseconds spent per node (and, last, the loss): `[forward, backward]`.
    pub nanos: Vec<[u64; 2]>,
}

/// One chunk of a lane's images.
pub struct Chunk<'a> {
    pub x: &'a [f32],
    pub labels: &'a [u32],
    pub m: usize,
    /// The lane's first chunk: parameter gradients are overwritten, not added.
    pub first: bool,
}

impl Net {
    /// Forward through node `i` for the chunk's `m` images.
    pub fn forward(&self, i: usize, lane: &mut LaneBuf, x: &[f32], m: usize) {
        let node = &self.nodes[i];
        let LaneBuf { acts, argmax, cols, .. } = lane;
        let (before, rest) = acts.split_at_mut(self.acts[i].start);
        let input: &[f32] = if i == 0 { x } else { &before[self.acts[i - 1].start..] };
        let input = &input[..m * node.in_shape.len()];
        let out = &mut rest[..m * node.out_shape.len()];
        let w = node.weight.as_ref().map(|r| &self.params[r.clone()]);
        let b = node.bias.as_ref().map(|r| &self.params[r.clone()]);
        match node.op {
            Op::Conv(s) => conv2d_forward(self.isa, &s, m, input, w.unwrap(), b, out, cols),
            Op::Relu => relu_forward(input, out),
            Op::MaxPool(s) => {
                maxpool_forward(self.isa, &s, m, input, out, &mut argmax[self.argmax[i].clone()])
            }
            Op::GlobalAvgPool { c, hw } => gap_forward(c, hw, m, input, out),
            Op::Dense(s) => dense_forward(self.isa, &s, m, input, w.unwrap(), b, out),
        }
    }

    /// Backward through node `i`, from the output gradient already in the
    /// lane; parameter gradients overwritten, or added when `accumulate`.
    pub fn backward(&self, i: usize, lane: &mut LaneBuf, x: &[f32], m: usize, accumulate: bool) {
        let node = &self.nodes[i];
        let LaneBuf { acts, dacts, argmax, cols, grads, .. } = lane;
        let (in_len, out_len) = (m * node.in_shape.len(), m * node.out_shape.len());
        let input: &[f32] = if i == 0 { x } else { &acts[self.acts[i - 1].start..] };
        let input = &input[..in_len];
        let y = &acts[self.acts[i].start..self.acts[i].start + out_len];
        let (dbefore, drest) = dacts.split_at_mut(self.acts[i].start);
        let dy = &drest[..out_len];
        let dx = if i == 0 { None } else { Some(&mut dbefore[self.acts[i - 1].start..][..in_len]) };
        let w = node.weight.as_ref().map(|r| &self.params[r.clone()]);
        let (dw, db) = match (&node.weight, &node.bias) {
            (Some(w), b) => {
                let (dw, tail) = grads[w.start..].split_at_mut(w.len());
                (Some(dw), b.as_ref().map(|b| &mut tail[..b.len()]))
            }
            _ => (None, None),
        };
        match node.op {
            Op::Conv(s) => {
                conv2d_backward(self.isa, &s, m, input, w.unwrap(), dy, dx, dw.unwrap(), db, cols, accumulate)
            }
            Op::Dense(s) => {
                dense_backward(self.isa, &s, m, input, w.unwrap(), dy, dx, dw.unwrap(), db, accumulate)
            }
            Op::Relu => {
                if let Some(dx) = dx {
                    relu_backward(y, dy, dx)
                }
            }
            Op::MaxPool(s) => {
                if let Some(dx) = dx {
                    maxpool_backward(&s, m, dy, &argmax[self.argmax[i].clone()], dx)
                }
            }
            Op::GlobalAvgPool { c, hw } => {
                if let Some(dx) = dx {
                    gap_backward(c, hw, m, dy, dx)
                }
            }
        }
    }

    /// Softmax and loss over the logits of the chunk.
    pub fn loss_forward(&self, lane: &mut LaneBuf, labels: &[u32], m: usize) -> LossSums {
        let last = self.acts[self.nodes.len() - 1].clone();
        softmax_loss_forward(LOSS, self.classes, m, &lane.acts[last], labels, &mut lane.probs)
    }

    /// Logit gradients of the chunk, from the probabilities of the forward.
    pub fn loss_backward(&self, lane: &mut LaneBuf, labels: &[u32], m: usize, scale: f32) {
        let last = self.acts[self.nodes.len() - 1].clone();
        softmax_loss_backward(LOSS, self.classes, m, &lane.probs, labels, scale, &mut lane.dacts[last]);
    }

    /// Forward through a stage's nodes, then its loss.
    pub fn stage_forward(&self, stage: &Stage, lane: &mut LaneBuf, c: &Chunk) {
        for i in stage.nodes.clone() {
            self.forward(i, lane, c.x, c.m);
        }
        if stage.loss {
            std::hint::black_box(self.loss_forward(lane, c.labels, c.m));
        }
    }

    /// Backward through a stage: its loss, then its nodes in reverse.
    pub fn stage_backward(&self, stage: &Stage, lane: &mut LaneBuf, c: &Chunk, scale: f32) {
        if stage.loss {
            self.loss_backward(lane, c.labels, c.m, scale);
        }
        for i in stage.nodes.clone().rev() {
            self.backward(i, lane, c.x, c.m, !c.first);
        }
    }

    /// One chunk of a training step: forward, loss, backward, every node
    /// timed into `lane.nanos`.
    fn timed_chunk(&self, lane: &mut LaneBuf, c: &Chunk, scale: f32) {
        let k = self.nodes.len();
        for i in 0..k {
            let t = Instant::now();
            self.forward(i, lane, c.x, c.m);
            lane.nanos[i][0] += t.elapsed().as_nanos() as u64;
        }
        let t = Instant::now();
        let sums = self.loss_forward(lane, c.labels, c.m);
        lane.sums.add(&sums);
        lane.nanos[k][0] += t.elapsed().as_nanos() as u64;
        let t = Instant::now();
        self.loss_backward(lane, c.labels, c.m, scale);
        lane.nanos[k][1] += t.elapsed().as_nanos() as u64;
        for i in (0..k).rev() {
            let t = Instant::now();
            self.backward(i, lane, c.x, c.m, !c.first);
            lane.nanos[i][1] += t.elapsed().as_nanos() as u64;
        }
    }
}

/// Wall-clock nanoseconds of the phases of one replayed training step.
#[derive(Clone, Copy, Debug, Default)]
pub struct StepWall {
    /// The rayon region running the lanes (forward, loss, backward).
    pub lanes: u64,
    /// Summing the lanes' gradients in order.
    pub reduce: u64,
    /// The SGD update.
    pub sgd: u64,
}

/// The engine's lanes over a copy of a plan's parameters (see the module
/// docs). Built for batches of up to the plan's `max_batch`.
pub struct Replica {
    pub net: Net,
    lanes: Vec<LaneBuf>,
    grads: Vec<f32>,
    /// Scratch parameters and momentum the timed SGD update writes to, so
    /// the replica's own parameters never change.
    sgd_params: Vec<f32>,
    sgd_velocity: Vec<f32>,
}

impl Replica {
    pub fn new(plan: &Plan) -> Self {
        let max_batch = plan.max_batch();
        let chunk = max_batch.div_ceil(LANES).min(MAX_CHUNK);
        let nodes = plan.nodes().to_vec();
        let (mut n_acts, mut n_argmax, mut n_cols) = (0, 0, 0);
        let (mut acts, mut argmax) = (Vec::new(), Vec::new());
        for node in &nodes {
            let len = node.out_shape.len() * chunk;
            acts.push(n_acts..n_acts + len);
            n_acts += len;
            if matches!(node.op, Op::MaxPool(_)) {
                argmax.push(n_argmax..n_argmax + len);
                n_argmax += len;
            } else {
                argmax.push(0..0);
            }
            if let Op::Conv(s) = node.op {
                n_cols = n_cols.max(s.scratch_len(chunk));
            }
        }
        let n_params = plan.params().len();
        let classes = plan.classes();
        let lanes = (0..LANES.min(max_batch))
            .map(|_| LaneBuf {
                acts: vec![0.0; n_acts],
                dacts: vec![0.0; n_acts],
                argmax: vec![0; n_argmax],
                cols: vec![0.0; n_cols],
                probs: vec![0.0; classes * chunk],
                grads: vec![0.0; n_params],
                sums: LossSums::default(),
                nanos: vec![[0; 2]; nodes.len() + 1],
            })
            .collect::<Vec<_>>();
        let net = Net {
            nodes,
            acts,
            argmax,
            params: plan.params().to_vec(),
            chunk,
            lanes: lanes.len(),
            classes,
            in_len: plan.input_shape().len(),
            isa: plan.isa(),
        };
        Replica {
            net,
            lanes,
            grads: vec![0.0; n_params],
            sgd_params: plan.params().to_vec(),
            sgd_velocity: vec![0.0; n_params],
        }
    }

    /// Run `f` on every chunk of every lane of the batch, lanes in parallel
    /// exactly as the engine splits them.
    pub fn run<F>(&mut self, x: &[f32], labels: &[u32], f: F)
    where
        F: Fn(&Net, &mut LaneBuf, &Chunk) + Sync,
    {
        let n = labels.len();
        let used = n.min(self.lanes.len());
        let net = &self.net;
        let per = net.in_len;
        self.lanes[..used].par_iter_mut().enumerate().for_each(|(l, lane)| {
            let r = lane_range(n, net.lanes, l);
            for start in r.clone().step_by(net.chunk) {
                let m = net.chunk.min(r.end - start);
                let c = Chunk {
                    x: &x[start * per..(start + m) * per],
                    labels: &labels[start..start + m],
                    m,
                    first: start == r.start,
                };
                f(net, lane, &c);
            }
        });
    }

    /// One training step like `Plan::train_step`, every node timed: lane
    /// CPU time per node accumulates in the lanes (see [`Replica::nanos`]),
    /// the wall time of each phase is returned. The SGD update writes to
    /// scratch buffers, so repeated steps see the same parameters.
    pub fn timed_step(&mut self, x: &[f32], labels: &[u32]) -> (LossSums, StepWall) {
        let n = labels.len();
        let scale = match REDUCTION {
            Reduction::Mean => 1.0 / n as f32,
            Reduction::Sum => 1.0,
        };
        let used = n.min(self.lanes.len());
        for lane in &mut self.lanes[..used] {
            lane.sums = LossSums::default();
        }
        let t = Instant::now();
        self.run(x, labels, |net, lane, c| net.timed_chunk(lane, c, scale));
        let lanes_ns = t.elapsed().as_nanos() as u64;
        let t = Instant::now();
        let lanes = &self.lanes;
        sum_in_order(&mut self.grads, used, |l| &lanes[l].grads);
        let reduce = t.elapsed().as_nanos() as u64;
        let t = Instant::now();
        graph::sgd_update(&SGD, &mut self.sgd_params, &self.grads, &mut self.sgd_velocity);
        let sgd = t.elapsed().as_nanos() as u64;
        let mut sums = LossSums::default();
        for lane in &self.lanes[..used] {
            sums.add(&lane.sums);
        }
        (sums, StepWall { lanes: lanes_ns, reduce, sgd })
    }

    /// Lane CPU nanoseconds per node (the loss last), summed over lanes
    /// since the last [`Replica::reset_nanos`].
    pub fn nanos(&self) -> Vec<[u64; 2]> {
        let mut total = vec![[0u64; 2]; self.net.nodes.len() + 1];
        for lane in &self.lanes {
            for (t, l) in total.iter_mut().zip(&lane.nanos) {
                t[0] += l[0];
                t[1] += l[1];
            }
        }
        total
    }

    pub fn reset_nanos(&mut self) {
        for lane in &mut self.lanes {
            lane.nanos.iter_mut().for_each(|t| *t = [0; 2]);
        }
    }

    /// Fill every buffer with the values of a real step (so a single layer
    /// can then be run on realistic inputs), and check that this copy of
    /// the engine computes what the engine computes: same loss, same
    /// gradient bits. `plan` must be the plan this replica was built from.
    pub fn check(&mut self, plan: &mut Plan, x: &[f32], labels: &[u32]) {
        let (mine, _) = self.timed_step(x, labels);
        self.reset_nanos();
        let theirs = plan.forward_backward(x, labels, LOSS, REDUCTION);
        let same_grads = self.grads.iter().zip(plan.grads()).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(
            same_grads && mine.loss.to_bits() == theirs.loss.to_bits() && mine.correct == theirs.correct,
            "{}: the benches' copy of the engine's lanes (benches/common/mod.rs) no longer computes what \
             Plan::forward_backward computes (loss {} vs {}); graph/src/exec.rs changed: update the copy",
            plan.spec().name,
            mine.loss,
            theirs.loss,
        );
    }

    /// The stage forward, over the whole batch.
    pub fn stage_forward(&mut self, stage: &Stage, x: &[f32], labels: &[u32]) {
        self.run(x, labels, |net, lane, c| net.stage_forward(stage, lane, c));
    }

    /// The stage backward, over the whole batch (mean reduction).
    pub fn stage_backward(&mut self, stage: &Stage, x: &[f32], labels: &[u32]) {
        let scale = 1.0 / labels.len() as f32;
        self.run(x, labels, |net, lane, c| net.stage_backward(stage, lane, c, scale));
    }
}

/// A plan and its checked replica, for batches of exactly `n` images.
pub struct Setup {
    pub plan: Plan,
    pub replica: Replica,
    pub x: Vec<f32>,
    pub labels: Vec<u32>,
}

impl Setup {
    pub fn new(name: &str, n: usize) -> Self {
        let mut plan = plan(name, n);
        let (x, labels) = batch(n);
        let mut replica = Replica::new(&plan);
        replica.check(&mut plan, &x, &labels);
        Setup { plan, replica, x, labels }
    }
}
