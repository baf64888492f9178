//! The summary bench's Markdown report: the tables `main` fills in.

use crate::common::timing::{est, median, Est};
use crate::common::{describe, head_start, node_flops, node_params};
use crate::{bytes, commit, first_line, thousands, Observed};

/// The speeds of one preset.
pub struct Speeds {
    /// Images/s per round: train 64, train 256, infer 64, infer 256, train
    /// 64 on 1 thread.
    pub series: [Vec<f64>; 5],
    /// Useful GFLOP/s of the batch-64 step, and as % of the ceiling.
    pub gflops: Est,
    pub pct_ceiling: Est,
    /// Batch-64 step, all threads over 1 thread.
    pub scaling: Est,
    /// Median seconds of one batch-64 `Plan::train_step`.
    pub step_secs: f64,
}

pub struct Report<'a> {
    pub quick: bool,
    pub threads: usize,
    /// Share of the CPUs other processes used during the run.
    pub others: Option<f64>,
    pub rounds: usize,
    /// GFLOP/s of the SGEMM ceiling on all threads and on one.
    pub ceiling: Est,
    /// The ceiling on all threads, per round.
    pub ceiling_series: Vec<f64>,
    pub ceiling_one: Est,
    pub plans: &'a [&'a graph::Plan],
    pub observed: &'a [Observed],
    pub speeds: &'a [Speeds],
    /// Images/s and % of the ceiling of the [`VALID`] presets, batch 64.
    pub valid: &'a [(Est, Est)],
    pub batch: (usize, usize),
}

/// The valid-padding variants of [`PRESETS`](crate::common::PRESETS), timed for the batch-64 step.
pub const VALID: [&str; 2] = ["seed-fc-valid", "seed-gap-valid"];

pub fn print_report(r: &Report) {
    let (n, big) = r.batch;
    let [fc, gap] = [r.plans[0], r.plans[1]];
    let cpu = first_line("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown CPU".into());
    println!("## gapnet: where a training step's time goes (seed-fc vs seed-gap)\n");
    if r.quick {
        println!("**Quick smoke run: these numbers mean nothing.**\n");
    }
    println!(
        "{cpu}, {} rayon threads, {}; other processes used {} of the CPU time during the run. Every \
         figure is the median of {} rounds that interleave all measurements, `±` half the interquartile \
         range over the rounds; ratios (GAP vs FC, % of the ceiling, scaling) are taken within each round.\n",
        r.threads,
        commit(),
        r.others.map_or("an unknown share".into(), |o| format!("{:.1}%", o * 100.0)),
        r.rounds
    );
    if r.others.is_some_and(|o| o > 0.05) {
        println!("**Warning: the machine was not idle during the run; the speeds are too low.**\n");
    }
    println!(
        "SGEMM ceiling: single-threaded 512^3 `sgemm` on each of {} threads at once: **{:.1} GFLOP/s** \
         ±{:.0}% ({:.1} per thread); on 1 thread alone: {:.1} GFLOP/s ±{:.0}%.\n",
        r.threads,
        r.ceiling.median,
        r.ceiling.spread * 100.0,
        r.ceiling.median / r.threads as f64,
        r.ceiling_one.median,
        r.ceiling_one.spread * 100.0
    );

    // ---- Parameters and speed, FC head vs GAP head ----
    let head_params = |p: &graph::Plan| -> usize {
        let nodes = p.nodes();
        nodes[head_start(nodes)..].iter().map(node_params).sum()
    };
    let total = |p: &graph::Plan| p.params().len();
    let pct = |a: f64, b: f64| (b - a) / a * 100.0;
    let (hf, hg) = (head_params(fc), head_params(gap));
    let (tf, tg) = (total(fc), total(gap));
    let lanes = graph::LANES;
    println!("| | seed-fc | seed-gap | GAP vs FC |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| head parameters | {} | {} | {} ({:+.2}%) |",
        thousands(hf as u64),
        thousands(hg as u64),
        thousands(hf as u64 - hg as u64),
        pct(hf as f64, hg as f64)
    );
    println!(
        "| all parameters | {} | {} | {} ({:+.1}%) |",
        thousands(tf as u64),
        thousands(tg as u64),
        thousands(tf as u64 - tg as u64),
        pct(tf as f64, tg as f64)
    );
    println!("| parameter bytes (f32) | {} | {} | |", bytes(4 * tf), bytes(4 * tg));
    println!(
        "| training copies (params, grads, momentum, {lanes} lane grads) | {} | {} | |",
        bytes(4 * tf * (3 + lanes)),
        bytes(4 * tg * (3 + lanes))
    );
    let (mf, mg) = (fc.forward_macs() as f64, gap.forward_macs() as f64);
    println!(
        "| forward MFLOP/image (2 x MACs) | {:.2} | {:.2} | {:+.1}% |",
        2.0 * mf / 1e6,
        2.0 * mg / 1e6,
        pct(mf, mg)
    );
    let [sf, sg] = [&r.speeds[0], &r.speeds[1]];
    // row k of the speeds: both presets, and GAP against FC round by round
    let speed_row = |label: &str, k: usize| {
        let (f, g) = (est(&sf.series[k]), est(&sg.series[k]));
        let ratio: Vec<f64> = sf.series[k].iter().zip(&sg.series[k]).map(|(f, g)| g / f).collect();
        let ratio = median(&ratio);
        println!(
            "| {label} | {} ±{:.0}% | {} ±{:.0}% | {:+.1}% images/s ({:+.1}% time) |",
            thousands(f.median as u64),
            f.spread * 100.0,
            thousands(g.median as u64),
            g.spread * 100.0,
            (ratio - 1.0) * 100.0,
            (1.0 / ratio - 1.0) * 100.0
        )
    };
    speed_row(&format!("training, batch {n} (images/s)"), 0);
    speed_row(&format!("training, batch {big} (images/s)"), 1);
    speed_row(&format!("inference, batch {n} (images/s)"), 2);
    speed_row(&format!("inference, batch {big} (images/s)"), 3);
    println!(
        "| training GFLOP/s, batch {n} (6 x forward MACs per image) | {:.1} | {:.1} | |",
        sf.gflops.median, sg.gflops.median
    );
    println!(
        "| % of the SGEMM ceiling | {:.1}% ±{:.0}% | {:.1}% ±{:.0}% | |",
        sf.pct_ceiling.median,
        sf.pct_ceiling.spread * 100.0,
        sg.pct_ceiling.median,
        sg.pct_ceiling.spread * 100.0
    );
    let [(fi, fp), (gi, gp)] = [r.valid[0], r.valid[1]];
    println!(
        "| valid-padding variants (`{}`, `{}`): training, batch {n} (images/s), % of the ceiling | \
         {} ±{:.0}%, {:.1}% | {} ±{:.0}%, {:.1}% | |",
        VALID[0],
        VALID[1],
        thousands(fi.median as u64),
        fi.spread * 100.0,
        fp.median,
        thousands(gi.median as u64),
        gi.spread * 100.0,
        gp.median
    );
    speed_row(&format!("training, batch {n}, 1 thread (images/s)"), 4);
    println!(
        "| scaling 1 -> {} threads, batch {n} (SGEMM alone: {:.2}x) | {:.2}x | {:.2}x | |",
        r.threads,
        r.ceiling.median / r.ceiling_one.median,
        sf.scaling.median,
        sg.scaling.median
    );
    println!();

    // ---- Per-layer shares of the step ----
    println!(
        "Where the time of a batch-{n} training step goes, from the engine's own step observed node by \
         node (`Plan::forward_backward_observed`: the plain step's code with a clock around every node, \
         same bits): each layer's time summed over the lanes, per image (µs of thread-time), and its share \
         of the observed step's wall time x {} threads, taken within each round. Fused passes report \
         their time under their first node: a convolution's forward includes the max pool's and ReLU's \
         after it, a ReLU's backward the max pool's before it (those show about 0).\n",
        r.threads
    );
    println!("| layer | op | seed-fc µs/image, fwd + bwd | share | seed-gap µs/image, fwd + bwd | share |");
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    let trunk = head_start(fc.nodes());
    // rows: node indices of a preset's observed step
    let cell = |p: usize, rows: &[usize]| {
        let (f, b, share) = r.observed[p].rows(rows);
        format!("{f:.1} + {b:.1} | {:.1}%", share * 100.0)
    };
    for (i, node) in fc.nodes()[..trunk].iter().enumerate() {
        println!("| {} | {} | {} | {} |", node.name, describe(node), cell(0, &[i]), cell(1, &[i]));
    }
    let convs: Vec<usize> = (0..trunk).filter(|&i| matches!(fc.nodes()[i].op, graph::Op::Conv(_))).collect();
    println!(
        "| **convs** | all {} convolutions | **{}** | **{}** |",
        convs.len(),
        cell(0, &convs).replace(" | ", "** | **"),
        cell(1, &convs).replace(" | ", "** | **")
    );
    let head_op = |p: &graph::Plan| {
        let nodes = p.nodes();
        let dense: Vec<String> = nodes[head_start(nodes)..]
            .iter()
            .filter_map(|nd| match nd.op {
                graph::Op::Dense(d) => Some(format!("{}->{}", d.inputs, d.outputs)),
                _ => None,
            })
            .collect();
        let gap = nodes.iter().any(|nd| matches!(nd.op, graph::Op::GlobalAvgPool { .. }));
        format!("{}dense {}", if gap { "GAP + " } else { "" }, dense.join(", "))
    };
    let (kf, kg) = (fc.nodes().len(), gap.nodes().len());
    let head_f: Vec<usize> = (trunk..kf).collect();
    let head_g: Vec<usize> = (head_start(gap.nodes())..kg).collect();
    println!(
        "| **head** | FC: {} / GAP: {} | **{}** | **{}** |",
        head_op(fc),
        head_op(gap),
        cell(0, &head_f).replace(" | ", "** | **"),
        cell(1, &head_g).replace(" | ", "** | **")
    );
    println!("| softmax_ce | softmax + cross-entropy | {} | {} |", cell(0, &[kf]), cell(1, &[kg]));
    let upd = |p: usize| {
        let rp = &r.observed[p];
        let (u, share) = (rp.med(|i| rp.update_us[i]), rp.med(|i| rp.update_us[i] / rp.step_us[i]));
        format!("{u:.1} | {:.1}%", share * 100.0)
    };
    println!("| update | gradient reduction + SGD (wall x threads) | {} | {} |", upd(0), upd(1));
    let other = |p: usize| {
        let (rest, share) = r.observed[p].other();
        format!("{rest:.1} | {:.1}%", share * 100.0)
    };
    println!("| other | threads idle at the end of the lanes, fork/join | {} | {} |", other(0), other(1));
    let step = |p: usize| {
        let rp = &r.observed[p];
        rp.med(|i| rp.step_us[i])
    };
    println!(
        "| step | the observed step, wall x {} threads | {:.1} | 100% | {:.1} | 100% |",
        r.threads,
        step(0),
        step(1)
    );
    println!();

    // ---- The heads, node by node ----
    println!("The heads node by node (µs of thread-time per image, share of the step):\n");
    println!("| preset | node | op | parameters | fwd | bwd | share |");
    println!("| --- | --- | --- | ---: | ---: | ---: | ---: |");
    for (p, plan) in r.plans.iter().enumerate() {
        let nodes = plan.nodes();
        for (i, node) in nodes.iter().enumerate().skip(head_start(nodes)) {
            let (f, b, share) = r.observed[p].rows(&[i]);
            println!(
                "| {} | {} | {} | {} | {f:.2} | {b:.2} | {:.2}% |",
                plan.spec().name,
                node.name,
                describe(node),
                thousands(node_params(node) as u64),
                share * 100.0
            );
        }
    }
    println!();

    // ---- Convolution efficiency ----
    println!(
        "The convolutions against the SGEMM ceiling of one thread (while all {} run: {:.1} GFLOP/s), from \
         both presets' observed steps (same trunk), the percentage taken within each round. A \
         convolution's forward time includes the max pool and ReLU fused after it (conv1, conv2), so \
         its rate is a lower bound:\n",
        r.threads,
        r.ceiling.median / r.threads as f64
    );
    println!("| layer | op | MFLOP/image fwd | fwd GFLOP/s | % | bwd GFLOP/s | % |");
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: |");
    for (i, node) in fc.nodes()[..trunk].iter().enumerate() {
        let (ff, fb) = node_flops(node, i == 0);
        if ff == 0 {
            continue;
        }
        // GFLOP/s and % of the per-thread ceiling, per round of both observed steps
        let series = |d: usize, flops: u64| {
            let rates: Vec<[f64; 2]> = r
                .observed
                .iter()
                .flat_map(|rp| rp.rates(&[i], &[d], flops as f64, &r.ceiling_series, r.threads))
                .collect();
            (
                median(&rates.iter().map(|g| g[0]).collect::<Vec<_>>()),
                median(&rates.iter().map(|g| g[1]).collect::<Vec<_>>()),
            )
        };
        let ((gf, pf), (gb, pb)) = (series(0, ff), series(1, fb));
        println!(
            "| {} | {} | {:.2} | {gf:.1} | {pf:.0}% | {gb:.1} | {pb:.0}% |",
            node.name,
            describe(node),
            ff as f64 / 1e6
        );
    }
    println!();
    let observed_ms: Vec<String> = r
        .observed
        .iter()
        .zip(r.speeds)
        .map(|(rp, s)| {
            let ms = rp.med(|i| rp.step_us[i]) * n as f64 / r.threads as f64 / 1e3;
            format!("{ms:.2} ms vs {:.2} ms", s.step_secs * 1e3)
        })
        .collect();
    println!(
        "The cost of watching: the observed step (clock reads and callbacks around every node) vs the \
         plain `Plan::train_step`, batch {n}: seed-fc {}, seed-gap {}.",
        observed_ms[0], observed_ms[1]
    );
}
