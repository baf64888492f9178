//! Forward and backward over a [`Plan`]: one walk of a batch's lanes and
//! chunks (`run_lanes`), one loop over the nodes forward and one
//! backward, each node's work done by its [`Op`](crate::Op). The training
//! step, evaluation and prediction differ only in what they do per chunk.
//!
//! A step can be watched node by node with an [`Observer`]
//! ([`Plan::forward_backward_observed`]); the plain step is the same code
//! with an observer whose `TIMED` is a constant `false`, so it reads no
//! clock and computes the same bits.

use std::ops::Range;
use std::time::Instant;

use kernel::{
    reduce::{add_in_order, sum_in_order},
    seed_quirk_weight_delta, softmax_loss_backward, softmax_loss_forward, Isa, Loss, LossSums,
};
use rayon::prelude::*;

use crate::ops::{pool_relu_backward, pool_then_relu, Bwd, ConvPool, Fwd};
use crate::plan::{Lane, Node, Plan, LANES};

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

/// The images of lanes `part` (a run of lanes, e.g. one rank's share of a
/// step) when `n` images are split over `lanes` lanes; empty for no lanes.
pub fn lanes_images(n: usize, lanes: usize, part: Range<usize>) -> Range<usize> {
    if part.is_empty() {
        return 0..0;
    }
    lane_range(n, lanes, part.start).start..lane_range(n, lanes, part.end - 1).end
}

/// Which pass a timed piece of work belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Forward,
    Backward,
}

/// One node's work on one chunk of one lane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub lane: usize,
    /// Index into [`Plan::nodes`], or `nodes().len()` for the softmax loss
    /// (forward: probabilities and loss; backward: the logit gradients).
    pub node: usize,
    pub phase: Phase,
    /// Images in the chunk.
    pub images: usize,
    /// Wall time of the work, on the lane's thread.
    pub nanos: u64,
}

/// Watches a step node by node; called from the lanes' threads at once.
pub trait Observer: Sync {
    /// Whether to read the clock at all. The plain step's observer says
    /// `false`, a constant, so its step compiles to the unobserved code.
    const TIMED: bool = true;
    /// After every node (and the loss) on every chunk of every lane. Where
    /// nodes run as one pass, the first node reports the time of all: a
    /// convolution's forward with the max pool (and ReLU) after it, a
    /// ReLU's backward with the max pool before it. The others follow at
    /// once, with about 0 ns.
    fn node(&self, event: Event);
    /// After the lanes' gradients are summed (wall nanoseconds).
    fn reduced(&self, _nanos: u64) {}
}

/// The observer of the plain step: no clock, no calls.
struct Unobserved;

impl Observer for Unobserved {
    const TIMED: bool = false;
    fn node(&self, _: Event) {}
}

/// The clock, when `O` wants it.
#[inline(always)]
fn start<O: Observer>() -> Option<Instant> {
    O::TIMED.then(Instant::now)
}

/// Report the work begun at `t` (if timed) as `node`, `phase`.
#[inline(always)]
fn report<O: Observer>(obs: &O, t: Option<Instant>, lane: usize, node: usize, phase: Phase, images: usize) {
    if let Some(t) = t {
        obs.node(Event { lane, node, phase, images, nanos: t.elapsed().as_nanos() as u64 });
    }
}

/// A lane's chunk: images `start..start + m` of the batch.
#[derive(Clone, Copy)]
struct Chunk {
    lane: usize,
    start: usize,
    m: usize,
    /// The lane's first chunk: parameter gradients are overwritten.
    first: bool,
}

/// What every lane reads while it runs: the nodes and parameters, the
/// batch norms' statistics, and the sums the lanes last met with, of a
/// batch of `n` images.
#[derive(Clone, Copy)]
struct Shared<'a> {
    nodes: &'a [Node],
    params: &'a [f32],
    stats: &'a [f32],
    totals: &'a [f64],
    n: usize,
}

/// How the lanes of a batch meet at a batch norm when processes share
/// them (the ranks of an MPI job): each process adds its lanes' sums, in
/// lane order, onto the sum of the lanes before its own, and in the end
/// every process holds the whole batch's sum. So the bits are those of one
/// process adding every lane in order.
pub trait Meet {
    /// Before this process adds its lanes: write the sum of the lanes
    /// before them into `sums` and return `true`, or return `false` when
    /// this process holds the first lanes.
    fn before(&self, sums: &mut [f64]) -> bool;
    /// After: `sums` holds the sum up to this process's last lane; leave
    /// the whole batch's sum in it.
    fn after(&self, sums: &mut [f64]);
}

/// One process holding every lane: nothing to receive or pass on.
pub struct Alone;

impl Meet for Alone {
    fn before(&self, _: &mut [f64]) -> bool {
        false
    }
    fn after(&self, _: &mut [f64]) {}
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

    /// Lanes a batch of `n` images is split into: `n` or the plan's lane
    /// count ([`LANES`], fewer for a plan of smaller batches), whichever is less.
    pub fn lanes_used(&self, n: usize) -> usize {
        n.min(self.lanes.len())
    }

    /// The lanes a full batch is split into: [`LANES`], or the plan's
    /// largest batch if that is smaller.
    pub fn lane_count(&self) -> usize {
        self.lanes.len()
    }

    /// The one walk of a batch of `n` images: split into lanes by
    /// [`lane_range`], the lanes of `part` that hold images run by rayon,
    /// each walking its images in chunks of up to `chunk`, calling `each` on
    /// every chunk with the lane's memory and its entry of `per_lane` (e.g.
    /// its slice of the output). Returns the lanes that ran.
    fn run_lanes<S: Send>(
        &mut self,
        n: usize,
        part: Range<usize>,
        per_lane: &mut [S],
        each: impl Fn(Shared, &mut Lane, &mut S, Chunk) + Sync,
    ) -> Range<usize> {
        let used = self.lanes_used(n);
        let part = part.start.min(used)..part.end.min(used);
        let Plan { nodes, params, lanes, chunk, stats, meet, .. } = self;
        let shared = Shared { nodes, params, stats, totals: meet, n };
        let (total, chunk) = (lanes.len(), *chunk);
        let run = lanes[part.clone()].par_iter_mut().zip(&mut per_lane[part.clone()]);
        run.enumerate().for_each(|(i, (lane, s))| {
            let l = part.start + i;
            let r = lane_range(n, total, l);
            for start in r.clone().step_by(chunk) {
                let c = Chunk { lane: l, start, m: chunk.min(r.end - start), first: start == r.start };
                each(shared, lane, s, c);
            }
        });
        part
    }

    /// Add the lanes' sums at the meeting point `node` in lane order into
    /// the plan's, continuing the sum `meet` hands over (see [`Meet`]).
    fn meet_at<M: Meet + ?Sized>(&mut self, node: usize, ran: Range<usize>, meet: &M) {
        let len = self.nodes[node].op.meets();
        let Plan { meet: total, lanes, .. } = self;
        let total = &mut total[..len];
        let mut rest = ran;
        if !meet.before(total) {
            match rest.next() {
                Some(first) => total.copy_from_slice(&lanes[first].meet[..len]),
                None => total.fill(0.0),
            }
        }
        for l in rest {
            for (t, v) in total.iter_mut().zip(&lanes[l].meet[..len]) {
                *t += v;
            }
        }
        meet.after(total);
    }

    /// The forward meeting at `node`: the batch's statistics from the
    /// lanes' sums, and the running ones moved towards them.
    fn meet_forward_at<M: Meet + ?Sized>(&mut self, node: usize, n: usize, ran: Range<usize>, meet: &M) {
        self.meet_at(node, ran, meet);
        let Plan { nodes, meet: total, stats, running, tracked, .. } = self;
        let r = nodes[node].stats.clone().expect("a meeting point keeps statistics");
        nodes[node].op.meet_stats(n, total, &mut stats[r.clone()], &mut running[r]);
        tracked[node] += 1;
    }

    /// A node's evaluation statistics (empty for a node without): for
    /// code that runs nodes one by one (the probe; allocates).
    pub(crate) fn running_stats_of(&self, node: &Node) -> Vec<f32> {
        let Some(r) = node.stats.clone() else { return Vec::new() };
        let mut stats = vec![0.0; r.len()];
        node.op.running_stats(&self.running[r], &mut stats);
        stats
    }

    /// Every batch norm's statistics from its running mean and variance:
    /// what evaluation and prediction normalise with.
    pub(crate) fn use_running_stats(&mut self) {
        let Plan { nodes, stats, running, .. } = self;
        for node in nodes.iter() {
            if let Some(r) = node.stats.clone() {
                node.op.running_stats(&running[r.clone()], &mut stats[r]);
            }
        }
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
        self.forward_backward_observed(x, labels, loss, reduction, &Unobserved)
    }

    /// [`Plan::forward_backward`], telling `obs` how long every node (and
    /// the loss) took on every chunk. Same results to the bit.
    pub fn forward_backward_observed<O: Observer>(
        &mut self,
        x: &[f32],
        labels: &[u32],
        loss: Loss,
        reduction: Reduction,
        obs: &O,
    ) -> LossSums {
        let n = self.batch_len(x, Some(labels));
        let ran = self.lanes_of(x, labels, loss, reduction, 0..LANES, obs, &Alone);
        let t = start::<O>();
        let lanes = &self.lanes;
        sum_in_order(&mut self.grads, ran.len(), |l| &lanes[l].grads);
        if let Some(t) = t {
            obs.reduced(t.elapsed().as_nanos() as u64);
        }
        debug_assert_eq!(ran, 0..self.lanes_used(n));
        total_sums(&self.lanes[ran])
    }

    /// One share of a step, for a process that computes some of a batch's
    /// lanes while others compute the rest (the ranks of an MPI job):
    /// forward and backward through the lanes of `part` that hold images
    /// of `x[n, C, H, W]` (only their images are read), leaving each lane's
    /// gradients and loss sums in the lane. Nothing is summed: see
    /// [`Plan::add_lanes`]. At a batch norm the processes meet through
    /// `meet`, every one in the same order. Returns the lanes that ran.
    pub fn forward_backward_lanes(
        &mut self,
        x: &[f32],
        labels: &[u32],
        loss: Loss,
        reduction: Reduction,
        part: Range<usize>,
        meet: &impl Meet,
    ) -> Range<usize> {
        self.batch_len(x, Some(labels));
        self.lanes_of(x, labels, loss, reduction, part, &Unobserved, meet)
    }

    /// Sum the lanes of `ran` (from [`Plan::forward_backward_lanes`]) into
    /// [`Plan::grads`] and `sums`, in lane order. With `onto`, added to what
    /// `grads` and `sums` hold: the sum of the lanes before `ran`, received
    /// from whoever computed them; without, `grads` starts afresh from the
    /// first lane. Passed along so, the sum has the bits of
    /// [`Plan::forward_backward`]'s.
    pub fn add_lanes(&mut self, ran: Range<usize>, onto: bool, sums: &mut LossSums) {
        let lanes = &self.lanes;
        if onto {
            add_in_order(&mut self.grads, ran.clone(), |l| &lanes[l].grads);
        } else {
            sum_in_order(&mut self.grads, ran.len(), |l| &lanes[ran.start + l].grads);
        }
        for lane in &self.lanes[ran] {
            sums.add(&lane.sums);
        }
    }

    /// Forward and backward through the lanes of `part`; see
    /// [`Plan::forward_backward_lanes`]. Without a batch norm, one walk of
    /// the lanes does everything; with some, the lanes meet at each: the
    /// forward pass runs up to it, the lanes' sums are added ([`Meet`]),
    /// and the next walk goes on from it; the backward pass likewise.
    #[allow(clippy::too_many_arguments)]
    fn lanes_of<O: Observer, M: Meet + ?Sized>(
        &mut self,
        x: &[f32],
        labels: &[u32],
        loss: Loss,
        reduction: Reduction,
        part: Range<usize>,
        obs: &O,
        meet: &M,
    ) -> Range<usize> {
        let n = labels.len();
        let scale = match reduction {
            Reduction::Mean => 1.0 / n as f32,
            Reduction::Sum => 1.0,
        };
        let (k, per, len) = (self.classes, self.input.len(), self.nodes.len());
        let quirk = loss.has_seed_quirk();
        let isa = self.isa;
        let images = |c: Chunk| &x[c.start * per..(c.start + c.m) * per];
        // Taken for the walk (no allocation) so the closures may borrow the plan.
        let meets = std::mem::take(&mut self.meets);
        self.running_before.copy_from_slice(&self.running);
        self.tracked_before.copy_from_slice(&self.tracked);
        let mut from = 0;
        for &b in &meets {
            let ran = self.run_lanes(n, part.clone(), &mut [(); LANES], |sh, lane, _, c| {
                forward_nodes(isa, sh, from..b, lane, images(c), c, obs);
                meet_forward(isa, sh, b, lane, images(c), c, obs);
            });
            self.meet_forward_at(b, n, ran, meet);
            from = b;
        }
        let below = |b: Option<&usize>| b.map_or(0, |b| b + 1);
        let last = meets.last().copied();
        let mut ran = self.run_lanes(n, part.clone(), &mut [(); LANES], |sh, lane, _, c| {
            let (xs, ys) = (images(c), &labels[c.start..c.start + c.m]);
            forward_nodes(isa, sh, from..len, lane, xs, c, obs);
            let (logits, m, at) = (sh.nodes[len - 1].act.clone(), c.m, len);
            let t = start::<O>();
            if c.first {
                lane.sums = LossSums::default();
            }
            let sums = softmax_loss_forward(loss, k, m, &lane.acts[logits.clone()], ys, &mut lane.probs);
            lane.sums.add(&sums);
            report(obs, t, c.lane, at, Phase::Forward, m);
            let t = start::<O>();
            softmax_loss_backward(loss, k, m, &lane.probs, ys, scale, &mut lane.dacts[logits]);
            if quirk {
                seed_quirk_weight_delta(k, m, &lane.probs, ys, scale, &mut lane.wdelta);
            }
            report(obs, t, c.lane, at, Phase::Backward, m);
            backward_nodes(isa, sh, below(last.as_ref())..len, lane, xs, c, quirk, obs);
            if let Some(b) = last {
                meet_backward(isa, sh, b, lane, xs, c, obs);
            }
        });
        for (j, &b) in meets.iter().enumerate().rev() {
            self.meet_at(b, ran, meet);
            let next = j.checked_sub(1).map(|j| meets[j]);
            ran = self.run_lanes(n, part.clone(), &mut [(); LANES], |sh, lane, _, c| {
                backward_nodes(isa, sh, below(next.as_ref())..b + 1, lane, images(c), c, quirk, obs);
                if let Some(p) = next {
                    meet_backward(isa, sh, p, lane, images(c), c, obs);
                }
            });
        }
        self.meets = meets;
        ran
    }

    /// Forward only, with the loss sums (no gradients): evaluation.
    pub fn evaluate(&mut self, x: &[f32], labels: &[u32], loss: Loss) -> LossSums {
        let n = self.batch_len(x, Some(labels));
        let (k, per, len) = (self.classes, self.input.len(), self.nodes.len());
        let isa = self.isa;
        self.use_running_stats();
        let ran = self.run_lanes(n, 0..LANES, &mut [(); LANES], |sh, lane, _, c| {
            forward_nodes(isa, sh, 0..len, lane, &x[c.start * per..(c.start + c.m) * per], c, &Unobserved);
            let logits = &lane.acts[sh.nodes[len - 1].act.clone()];
            let ys = &labels[c.start..c.start + c.m];
            if c.first {
                lane.sums = LossSums::default();
            }
            let sums = softmax_loss_forward(loss, k, c.m, logits, ys, &mut lane.probs);
            lane.sums.add(&sums);
        });
        total_sums(&self.lanes[ran])
    }

    /// Forward only: writes the logits `[n, classes]` of `x[n, C, H, W]`.
    pub fn predict(&mut self, x: &[f32], logits: &mut [f32]) {
        let n = self.batch_len(x, None);
        let (k, per, lanes) = (self.classes, self.input.len(), self.lanes.len());
        assert_eq!(logits.len(), n * k, "logits buffer must hold {n} x {k} values");
        // Carve `logits` into one disjoint slice per lane, on the stack.
        let mut outs: [&mut [f32]; LANES] = Default::default();
        let mut rest = logits;
        for (l, out) in outs.iter_mut().enumerate().take(n.min(lanes)) {
            let (head, tail) = rest.split_at_mut(lane_range(n, lanes, l).len() * k);
            *out = head;
            rest = tail;
        }
        let (isa, len) = (self.isa, self.nodes.len());
        self.use_running_stats();
        self.run_lanes(n, 0..LANES, &mut outs, |sh, lane, out, c| {
            forward_nodes(isa, sh, 0..len, lane, &x[c.start * per..(c.start + c.m) * per], c, &Unobserved);
            let last = &sh.nodes[len - 1].act;
            let o = (c.start - lane_range(n, lanes, c.lane).start) * k;
            out[o..o + c.m * k].copy_from_slice(&lane.acts[last.start..last.start + c.m * k]);
        });
    }
}

fn total_sums(lanes: &[Lane]) -> LossSums {
    let mut total = LossSums::default();
    for lane in lanes {
        total.add(&lane.sums);
    }
    total
}

/// Run the chunk's images `x` through the nodes of `span`, leaving each
/// node's output in the lane's activation arena (the nodes before `span`
/// have left theirs there).
fn forward_nodes<O: Observer>(
    isa: Isa,
    sh: Shared,
    span: Range<usize>,
    lane: &mut Lane,
    x: &[f32],
    c: Chunk,
    obs: &O,
) {
    let Lane { acts, argmax, cols, .. } = lane;
    let (m, nodes) = (c.m, sh.nodes);
    let mut i = span.start;
    while i < span.end {
        let node = &nodes[i];
        let (before, rest) = acts.split_at_mut(node.act.start);
        let input: &[f32] = if i == 0 { x } else { &before[nodes[i - 1].act.start..] };
        // A convolution, the max pool after it (and a ReLU after that)
        // run as one pass (`ConvPool`), reported as the convolution's.
        let fused = ConvPool::starting(nodes[i..span.end].iter().map(|n| &n.op));
        let covers = fused.map_or(1, |f| f.nodes());
        // the node whose output this pass writes, and the one whose argmax
        let (out, arg) = (&nodes[i + covers - 1], &nodes[if fused.is_some() { i + 1 } else { i }]);
        let t = start::<O>();
        let f = Fwd {
            stats: node.stats.clone().map_or(&[], |r| &sh.stats[r]),
            x: &input[..m * node.in_shape.len()],
            y: &mut rest[out.act.start - node.act.start..][..m * out.out_shape.len()],
            w: node.weight_of(sh.params),
            b: node.bias_of(sh.params),
            scratch: cols,
            argmax: &mut argmax[arg.argmax.clone()],
        };
        match fused {
            Some(fused) => fused.forward(isa, node.conv_path, m, f),
            None => node.op.forward(isa, node.conv_path, m, f),
        }
        report(obs, t, c.lane, i, Phase::Forward, m);
        for j in i + 1..i + covers {
            report(obs, t.map(|_| Instant::now()), c.lane, j, Phase::Forward, m);
        }
        i += covers;
    }
}

/// The input of node `i` for the chunk: the images, or the previous node's output.
fn input_of<'a>(nodes: &[Node], i: usize, acts: &'a [f32], x: &'a [f32], m: usize) -> &'a [f32] {
    let len = m * nodes[i].in_shape.len();
    if i == 0 {
        &x[..len]
    } else {
        &acts[nodes[i - 1].act.start..][..len]
    }
}

/// Before the lanes meet at node `b` in the forward pass: the lane's sums
/// of its input (a lane holds one chunk when its plan has meetings).
fn meet_forward<O: Observer>(isa: Isa, sh: Shared, b: usize, lane: &mut Lane, x: &[f32], c: Chunk, obs: &O) {
    debug_assert!(c.first, "a lane meets with all its images in one chunk");
    let t = start::<O>();
    sh.nodes[b].op.meet_forward(isa, c.m, input_of(sh.nodes, b, &lane.acts, x, c.m), &mut lane.meet);
    report(obs, t, c.lane, b, Phase::Forward, c.m);
}

/// Before the lanes meet at node `b` in the backward pass: the lane's sums
/// of its output gradient, and from them its parameter gradients.
fn meet_backward<O: Observer>(isa: Isa, sh: Shared, b: usize, lane: &mut Lane, x: &[f32], c: Chunk, obs: &O) {
    let Lane { acts, dacts, grads, meet, .. } = lane;
    let node = &sh.nodes[b];
    let stats = &sh.stats[node.stats.clone().expect("a meeting point keeps statistics")];
    let dy = &dacts[node.act.start..][..c.m * node.out_shape.len()];
    let (dw, db) = node.grads_of(grads);
    let t = start::<O>();
    let input = input_of(sh.nodes, b, acts, x, c.m);
    node.op.meet_backward(isa, c.m, input, dy, stats, meet, dw, db, !c.first);
    report(obs, t, c.lane, b, Phase::Backward, c.m);
}

/// Backward through the nodes of `span`, last first, for the chunk, from
/// the output gradients of its last node already in `dacts`. Parameter
/// gradients go to the lane's own arena, overwritten on its first chunk and
/// added to after. With `quirk`, the last node's parameter gradients come
/// from the lane's `wdelta` instead (`Loss::SeedSquaredError`); its input
/// gradient does not.
#[allow(clippy::too_many_arguments)]
fn backward_nodes<O: Observer>(
    isa: Isa,
    sh: Shared,
    span: Range<usize>,
    lane: &mut Lane,
    x: &[f32],
    c: Chunk,
    quirk: bool,
    obs: &O,
) {
    let Lane { acts, dacts, argmax, cols, grads, wdelta, .. } = lane;
    let (m, nodes) = (c.m, sh.nodes);
    let last = nodes.len() - 1;
    let mut i = span.end;
    while i > span.start {
        i -= 1;
        let node = &nodes[i];
        let (in_len, out_len) = (m * node.in_shape.len(), m * node.out_shape.len());
        // A ReLU after a max pool: both backward in one pass, reported as the ReLU's.
        if let Some(pool) = (i > span.start).then(|| pool_then_relu(&nodes[i - 1].op, &node.op)).flatten() {
            let t = start::<O>();
            let pool_node = &nodes[i - 1];
            let (dbefore, drest) = dacts.split_at_mut(pool_node.act.start);
            if i > 1 {
                let dx = &mut dbefore[nodes[i - 2].act.start..][..m * pool_node.in_shape.len()];
                let dy = &drest[node.act.start - pool_node.act.start..][..out_len];
                let y = &acts[node.act.start..][..out_len];
                pool_relu_backward(&pool, m, dy, y, &argmax[pool_node.argmax.clone()], dx);
            }
            report(obs, t, c.lane, i, Phase::Backward, m);
            report(obs, t.map(|_| Instant::now()), c.lane, i - 1, Phase::Backward, m);
            i -= 1;
            continue;
        }
        let (dbefore, drest) = dacts.split_at_mut(node.act.start);
        let (dw, db) = node.grads_of(grads);
        let t = start::<O>();
        node.op.backward(
            isa,
            node.conv_path,
            m,
            Bwd {
                x: input_of(nodes, i, acts, x, m),
                y: &acts[node.act.start..node.act.start + out_len],
                dy: &drest[..out_len],
                dx: if i == 0 { None } else { Some(&mut dbefore[nodes[i - 1].act.start..][..in_len]) },
                w: node.weight_of(sh.params),
                dw,
                db,
                accumulate: !c.first,
                delta: (quirk && i == last).then_some(&wdelta[..]),
                scratch: cols,
                argmax: &argmax[node.argmax.clone()],
                stats: node.stats.clone().map_or(&[], |r| &sh.stats[r]),
                totals: sh.totals,
                count: sh.n * node.op.per_channel(),
            },
        );
        report(obs, t, c.lane, i, Phase::Backward, m);
    }
}
