//! The summary bench's `deep-gap` section: the deeper trunk with batch
//! norm, measured in the same rounds as the seed presets (so its % of the
//! ceiling is taken within a round like theirs): the batch-64 step at every
//! ISA this CPU runs, and where the observed step goes, kind by kind of
//! layer. Its own section, so that the seed tables stay as they were.

use graph::{Isa, Op, Plan};

use crate::common::timing::{est, median, Job};
use crate::common::{describe, head_start, node_flops, plan, plan_for, NodeTimes};
use crate::{observed_job, thousands, train_job, Observed, StepWall};

pub const DEEP: &str = "deep-gap";
/// The share of a step batch norm (statistics, normalisation, their
/// backward, the lanes' sums before each meeting) is held to.
const BN_BOUND: f64 = 0.10;

/// `deep-gap`'s plans, and what its observed step recorded.
pub struct Deep {
    isas: Vec<Isa>,
    /// The plain step at each of `isas`.
    by_isa: Vec<Plan>,
    /// The observed step, at `Isa::detect` like the seed presets'.
    watched: Plan,
    times: NodeTimes,
    nanos: Vec<Vec<[u64; 2]>>,
    walls: Vec<(u64, StepWall)>,
}

/// What the section reads of the run.
pub struct Run<'a> {
    /// Seconds per call of [`Deep::jobs`], in their order, per round.
    pub secs: &'a [Vec<f64>],
    /// The SGEMM ceiling on all threads, GFLOP/s per round.
    pub ceiling: &'a [f64],
    pub rounds: usize,
    pub n: usize,
    pub threads: usize,
}

/// A part of the step: label, the nodes' names, node indices (the loss is
/// `nodes().len()`), directions (0 forward, 1 backward).
type Part = (&'static str, String, Vec<usize>, &'static [usize]);

impl Deep {
    /// Plans for batches of `n` images.
    pub fn new(n: usize) -> Self {
        let isas = Isa::available();
        let by_isa = isas.iter().map(|&i| plan_for(DEEP, n, i)).collect();
        let watched = plan(DEEP, n);
        let times = NodeTimes::new(&watched);
        Deep { isas, by_isa, watched, times, nanos: Vec::new(), walls: Vec::new() }
    }

    /// The plain step at every ISA, then the observed step. A step is ~15x
    /// seed-fc's (~1 s on 2 threads), so calibration gives each job one
    /// step per block: `--quick` costs about five steps per job.
    pub fn jobs<'a>(&'a mut self, x: &'a [f32], y: &'a [u32]) -> Vec<Job<'a>> {
        let Deep { by_isa, watched, times, nanos, walls, .. } = self;
        let mut jobs: Vec<Job> = by_isa.iter_mut().map(|p| train_job(p, x, y)).collect();
        jobs.push(observed_job(watched, times, (x, y), nanos, walls));
        jobs
    }

    /// Useful FLOPs of one image's training step, as for the seed presets:
    /// 3 x 2 x forward multiply-adds.
    fn step_flops(&self) -> f64 {
        6.0 * self.watched.forward_macs() as f64
    }

    pub fn print(&self, run: &Run) {
        let plan = &self.watched;
        let nodes = plan.nodes();
        let convs: Vec<usize> = (0..nodes.len()).filter(|&i| matches!(nodes[i].op, Op::Conv(_))).collect();
        let planes: Vec<String> = convs.iter().map(|&i| nodes[i].out_shape.c.to_string()).collect();
        println!(
            "\n### {DEEP}: a deeper trunk with batch norm (batch {}, {} threads, same rounds)\n",
            run.n, run.threads
        );
        println!(
            "`{DEEP}`: {} pad-1 3x3 convolutions ({} planes), each followed by batch norm and ReLU, \
             then GAP and dense: {:.1} forward MFLOP/image (2 x MACs), {} parameters. In training the \
             lanes meet at every batch norm (whole-batch statistics), so the step runs in segments \
             between them.\n",
            convs.len(),
            planes.join(", "),
            2.0 * plan.forward_macs() as f64 / 1e6,
            thousands(plan.params().len() as u64)
        );
        let step_pct = self.print_isas(run);
        let obs = Observed::new(&self.nanos, &self.walls, run.rounds, run.n, run.threads);
        self.print_split(&obs, run);
        self.print_convs(&obs, &convs, run, step_pct);
    }

    /// The plain step at every ISA; returns its % of the ceiling per round
    /// at `Isa::detect` (if among them), for the convolutions' comparison.
    fn print_isas(&self, run: &Run) -> Option<Vec<f64>> {
        let ips = |k: usize| run.secs[k].iter().map(|s| run.n as f64 / s).collect::<Vec<f64>>();
        let pct = |k: usize| -> Vec<f64> {
            ips(k).iter().zip(run.ceiling).map(|(i, c)| self.step_flops() * i / 1e9 / c * 100.0).collect()
        };
        let portable = self.isas.len() - 1; // `available` ends with Portable
        let detected = Isa::detect();
        println!("| ISA | training img/s | GFLOP/s | % of the SGEMM ceiling | vs portable |");
        println!("| --- | ---: | ---: | ---: | ---: |");
        for (k, isa) in self.isas.iter().enumerate() {
            let (mine, base) = (ips(k), ips(portable));
            let ratio: Vec<f64> = mine.iter().zip(&base).map(|(a, b)| a / b).collect();
            let (v, p) = (est(&mine), est(&pct(k)));
            println!(
                "| {}{} | {} ±{:.0}% | {:.1} | {:.1}% ±{:.0}% | {:.2}x |",
                isa.label(),
                if *isa == detected { " (`Isa::detect`)" } else { "" },
                thousands(v.median as u64),
                v.spread * 100.0,
                v.median * self.step_flops() / 1e9,
                p.median,
                p.spread * 100.0,
                median(&ratio)
            );
        }
        println!();
        self.isas.iter().position(|&i| i == detected).map(pct)
    }

    /// The parts of the step, by kind of node: everything the observer
    /// reports falls in exactly one (a trunk holds convs, batch norms,
    /// pools and ReLUs; the head starts at the first GAP or dense).
    fn parts(&self) -> Vec<Part> {
        let nodes = self.watched.nodes();
        let head = head_start(nodes);
        let names = |rows: &[usize]| -> String {
            let name = |&i: &usize| nodes.get(i).map_or("softmax_ce", |nd| nd.name.as_str());
            rows.iter().map(name).collect::<Vec<_>>().join(", ")
        };
        let kind = |f: fn(&Op) -> bool| -> Vec<usize> { (0..head).filter(|&i| f(&nodes[i].op)).collect() };
        let convs = kind(|op| matches!(op, Op::Conv(_)));
        let bns = kind(|op| matches!(op, Op::BatchNorm(_)));
        let pools = kind(|op| matches!(op, Op::MaxPool(_)));
        let relus = kind(|op| matches!(op, Op::Relu));
        let head: Vec<usize> = (head..=nodes.len()).collect();
        vec![
            ("convolutions, forward", names(&convs), convs.clone(), &[0]),
            ("convolutions, backward", names(&convs), convs, &[1]),
            ("**batch norm**, fwd + bwd (with each lane's sums for the meetings)", names(&bns), bns, &[0, 1]),
            (
                "max pools, fwd + bwd (a backward followed by a ReLU: in the ReLUs')",
                names(&pools),
                pools,
                &[0, 1],
            ),
            ("ReLUs, fwd + bwd (with the backward of a max pool before one)", names(&relus), relus, &[0, 1]),
            ("head: GAP + dense + softmax-CE, fwd + bwd", names(&head), head, &[0, 1]),
        ]
    }

    /// Where the observed step goes, as shares of its wall time x threads.
    fn print_split(&self, obs: &Observed, run: &Run) {
        println!(
            "Where its batch-{} step goes ({} kernels, observed node by node as above): µs of \
             thread-time per image and the share of the observed step's wall time x {} threads, taken \
             within each round.\n",
            run.n,
            Isa::detect().label(),
            run.threads
        );
        println!("| part | nodes | µs/image | share |");
        println!("| --- | --- | ---: | ---: |");
        let mut bn_share = 0.0;
        for (label, names, rows, dirs) in self.parts() {
            let (us, share) = obs.part(&rows, dirs);
            if label.contains("batch norm") {
                bn_share = share;
            }
            println!("| {label} | {names} | {us:.1} | {:.1}% |", share * 100.0);
        }
        let update = (obs.med(|i| obs.update_us[i]), obs.med(|i| obs.update_us[i] / obs.step_us[i]));
        println!(
            "| gradient reduction + SGD update | (wall x threads) | {:.1} | {:.1}% |",
            update.0,
            update.1 * 100.0
        );
        let (rest, share) = obs.other();
        println!(
            "| rest | threads idle at the ends of the segments (each batch norm waits for every lane), \
             fork/join, adding the lanes' sums at each meeting | {rest:.1} | {:.1}% |",
            share * 100.0
        );
        println!(
            "| step | the observed step, wall x {} threads | {:.1} | 100% |",
            run.threads,
            obs.med(|i| obs.step_us[i])
        );
        let verdict = if bn_share <= BN_BOUND { "within" } else { "**over**" };
        println!(
            "\n**Batch norm: {:.1}% of the step** ({verdict} the bound of {:.0}% it is held to).\n",
            bn_share * 100.0,
            BN_BOUND * 100.0
        );
    }

    /// The convolutions' own rate against the per-thread ceiling, layer by
    /// layer and together, beside the whole step's % (`step_pct`): whether
    /// the convolutions or the rest hold the step back.
    fn print_convs(&self, obs: &Observed, convs: &[usize], run: &Run, step_pct: Option<Vec<f64>>) {
        let nodes = self.watched.nodes();
        let rate = |rows: &[usize], dirs: &[usize], flops: u64| {
            let r = obs.rates(rows, dirs, flops as f64, run.ceiling, run.threads);
            (median(&r.iter().map(|g| g[0]).collect::<Vec<_>>()), r.iter().map(|g| g[1]).collect::<Vec<_>>())
        };
        println!(
            "Its convolutions against the SGEMM ceiling of one thread (while all {} run: {:.1} GFLOP/s), \
             FLOPs over lane time, the percentage taken within each round:\n",
            run.threads,
            median(run.ceiling) / run.threads as f64
        );
        println!("| layer | op | MFLOP/image fwd | fwd GFLOP/s | % | bwd GFLOP/s | % |");
        println!("| --- | --- | ---: | ---: | ---: | ---: | ---: |");
        let (mut all_f, mut all_b) = (0, 0);
        for &i in convs {
            let (ff, fb) = node_flops(&nodes[i], i == 0);
            (all_f, all_b) = (all_f + ff, all_b + fb);
            let ((gf, pf), (gb, pb)) = (rate(&[i], &[0], ff), rate(&[i], &[1], fb));
            let (name, op, mf) = (&nodes[i].name, describe(&nodes[i]), ff as f64 / 1e6);
            println!(
                "| {name} | {op} | {mf:.2} | {gf:.1} | {:.0}% | {gb:.1} | {:.0}% |",
                median(&pf),
                median(&pb)
            );
        }
        let ((gf, pf), (gb, pb)) = (rate(convs, &[0], all_f), rate(convs, &[1], all_b));
        println!(
            "| **all** | {} convolutions | {:.2} | {gf:.1} | {:.0}% | {gb:.1} | {:.0}% |",
            convs.len(),
            all_f as f64 / 1e6,
            median(&pf),
            median(&pb)
        );
        // The step's % is about the convolutions' % x their share of the
        // step: side by side, they show which of the two holds it back.
        let (g, both) = rate(convs, &[0, 1], all_f + all_b);
        let share = obs.part(convs, &[0, 1]).1;
        print!(
            "\nThe convolutions, forward and backward: {g:.1} GFLOP/s per thread, {:.0}% of the ceiling, in \
             {:.1}% of the observed step's time",
            median(&both),
            share * 100.0
        );
        match step_pct {
            Some(step) => println!("; the whole (plain) step: {:.1}% of the ceiling.", median(&step)),
            None => println!("."),
        }
        self.print_watching(obs, run);
    }

    /// The observed step against the plain one at the same ISA.
    fn print_watching(&self, obs: &Observed, run: &Run) {
        let Some(k) = self.isas.iter().position(|&i| i == Isa::detect()) else { return };
        let observed_ms = obs.med(|i| obs.step_us[i]) * run.n as f64 / run.threads as f64 / 1e3;
        println!(
            "\nThe cost of watching: the observed step {observed_ms:.1} ms vs the plain `Plan::train_step` \
             {:.1} ms.",
            median(&run.secs[k]) * 1e3
        );
    }
}
