//! Every layer of `seed-fc` and `seed-gap`, forward and backward
//! separately, at batch 1, 64 and 256, timed inside the engine's own
//! training step: `cargo bench --bench layers` (about half a minute;
//! `-- --quick` for a smoke run of a few seconds).
//!
//! Each measurement runs whole steps observed node by node
//! (`Plan::forward_backward_observed`: the plain step's code with a clock
//! around every node) and keeps every node's lane time, summed over lanes
//! and chunks. A stage's time per image is that sum divided by the lanes
//! that run at once (`min(threads, lanes)`) and by the batch: about its part
//! of the step's wall time, so the stages add up to about the step (the
//! rest is the gradient reduction and threads idle at the end of the lanes).
//!
//! Stages:
//! - `conv1`..`conv3`, `relu1`..`relu3`, `pool1`, `pool2`: the trunk, the
//!   same nodes in both presets (checked), measured in seed-fc's step;
//!   fused passes report under their first node: a convolution's forward
//!   includes the max pool's and ReLU's after it, a ReLU's backward the max
//!   pool's before it, so `pool1`/`pool2` and the ReLUs' forward show about
//!   0;
//! - `fc_head`: seed-fc's FC 1280->120, ReLU, FC 120->84, ReLU, FC 84->2;
//! - `gap_head`: seed-gap's global average pool and FC 20->2;
//! - `softmax_ce`: softmax and cross-entropy over the 2 logits.
//!
//! Self-timed like `summary` (interleaved rounds, see `common::timing`):
//! medians over the rounds, `±` half the interquartile range. Prints
//! Markdown on stdout.

mod common;

use std::hint::black_box;
use std::time::Instant;

use common::timing::{est, run, Cfg, Job};
use common::{batch, describe, plan, stages, NodeTimes, Stage, LOSS, PRESETS, REDUCTION};
use graph::{Plan, LANES};

const BATCHES: [usize; 3] = [1, 64, 256];

/// One preset at one batch size, and what its rounds measured.
struct Run {
    plan: Plan,
    n: usize,
    x: Vec<f32>,
    y: Vec<u32>,
    times: NodeTimes,
    /// Per round: steps run, node nanoseconds (the loss last), step wall
    /// nanoseconds.
    rounds: Vec<(u64, Vec<[u64; 2]>, u64)>,
}

impl Run {
    /// µs per image of `stage` per round (see the module docs).
    fn stage_us(&self, stage: &Stage, backward: bool) -> Vec<f64> {
        let at_once = rayon::current_num_threads().min(LANES.min(self.n)) as f64;
        let per = |ns: u64, iters: u64| ns as f64 / 1e3 / (iters as f64 * self.n as f64);
        self.rounds
            .iter()
            .map(|(iters, nanos, _)| per(stage.sum(nanos, backward), *iters) / at_once)
            .collect()
    }
    /// µs per image of the whole step, wall time, per round.
    fn step_us(&self) -> Vec<f64> {
        self.rounds
            .iter()
            .map(|&(iters, _, wall)| wall as f64 / 1e3 / (iters as f64 * self.n as f64))
            .collect()
    }
}

fn cell(v: &[f64]) -> String {
    let e = est(v);
    format!("{:.2} ±{:.0}%", e.median, e.spread * 100.0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench -- <filter>` passes its filter to every bench target.
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if !filters.is_empty() && !filters.iter().any(|f| "layers".contains(f.as_str())) {
        return;
    }
    if args.iter().any(|a| a == "--list") {
        println!("layers: bench");
        return;
    }
    // Without `--bench` we run under `cargo test --benches`: just smoke-test.
    let quick = args.iter().any(|a| a == "--quick") || !args.iter().any(|a| a == "--bench");
    let cfg = if quick {
        Cfg { warm_secs: 0.0, block_secs: 0.0, rounds: 3 }
    } else {
        Cfg { warm_secs: 0.2, block_secs: 0.1, rounds: 15 }
    };
    // runs[preset][batch]
    let mut runs: Vec<Vec<Run>> = PRESETS
        .iter()
        .map(|name| {
            BATCHES
                .iter()
                .map(|&n| {
                    let plan = plan(name, n);
                    let (x, y) = batch(n);
                    let times = NodeTimes::new(&plan);
                    Run { plan, n, x, y, times, rounds: Vec::new() }
                })
                .collect()
        })
        .collect();
    let trunk = common::head_start(runs[0][0].plan.nodes());
    for r in &runs[1..] {
        let (a, b) = (&runs[0][0].plan.nodes()[..trunk], &r[0].plan.nodes()[..trunk]);
        assert!(
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.op == b.op),
            "the presets' trunks differ; bench them separately"
        );
    }

    let mut jobs: Vec<Job> = Vec::new();
    for run in runs.iter_mut().flatten() {
        let Run { plan, x, y, times, rounds, .. } = run;
        jobs.push(Job::new(move |iters| {
            times.reset();
            let t = Instant::now();
            for _ in 0..iters {
                black_box(plan.forward_backward_observed(x, y, LOSS, REDUCTION, &*times));
            }
            rounds.push((iters, times.nanos(), t.elapsed().as_nanos() as u64));
        }));
    }
    eprintln!("layers: {} measurements x {} rounds", jobs.len(), cfg.rounds);
    run(&mut jobs, &cfg);
    drop(jobs);
    // Only the rounds (calibration pushed its own entries first).
    for r in runs.iter_mut().flatten() {
        r.rounds.drain(..r.rounds.len() - cfg.rounds);
    }

    println!("## gapnet: every layer, forward and backward, inside the training step\n");
    if quick {
        println!("**Quick smoke run: these numbers mean nothing.**\n");
    }
    println!(
        "{} rayon threads. µs per image: each stage's lane time in observed training steps, summed over \
         the lanes, divided by the lanes running at once (min(threads, lanes)) and by the batch; the \
         median of {} interleaved rounds, `±` half the interquartile range.\n",
        rayon::current_num_threads(),
        cfg.rounds
    );
    let mut head = "| stage | op |".to_string();
    let mut rule = "| --- | --- |".to_string();
    for n in BATCHES {
        head += &format!(" batch {n} fwd | batch {n} bwd |");
        rule += " ---: | ---: |";
    }
    println!("{head}\n{rule}");
    let row = |p: usize, stage: &Stage| {
        let nodes = runs[p][0].plan.nodes();
        let op = if stage.loss {
            "softmax + cross-entropy".to_string()
        } else {
            nodes[stage.nodes.clone()].iter().map(describe).collect::<Vec<_>>().join(", ")
        };
        let mut line = format!("| {} | {op} |", stage.name);
        for r in &runs[p] {
            line += &format!(" {} | {} |", cell(&r.stage_us(stage, false)), cell(&r.stage_us(stage, true)));
        }
        println!("{line}");
    };
    // The trunk and the loss from seed-fc, each head from its own preset.
    let all: Vec<Vec<Stage>> = runs.iter().map(|r| stages(r[0].plan.nodes())).collect();
    let shared = |s: &Stage| s.loss || s.nodes.end <= trunk;
    all[0].iter().filter(|s| !s.loss && shared(s)).for_each(|s| row(0, s));
    for (p, stages) in all.iter().enumerate() {
        stages.iter().filter(|s| !shared(s)).for_each(|s| row(p, s));
    }
    all[0].iter().filter(|s| s.loss).for_each(|s| row(0, s));
    for (p, name) in PRESETS.iter().enumerate() {
        let mut line = format!("| **{name} step** | wall time of `forward_backward_observed` |");
        for r in &runs[p] {
            line += &format!(" {} | |", cell(&r.step_us()));
        }
        println!("{line}");
    }
}
