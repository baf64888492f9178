//! One table of where the time goes, conv against GAP: `cargo bench --bench
//! summary` (about a minute; `-- --quick` for a smoke run of a few seconds).
//!
//! A self-timing bench (no criterion): every measurement is calibrated to
//! blocks of ~0.25 s, then all blocks run round-robin for several rounds,
//! so a burst of background load hits every configuration alike; each
//! figure is the median over the rounds, with the spread (max - min) /
//! median beside the speeds. Measured in the same process:
//!
//! - the SGEMM ceiling (single-threaded 512^3 products on every rayon thread);
//! - `Plan::train_step` (batch 64, 256) and `Plan::predict` (64, 256) for
//!   `seed-fc` and `seed-gap`, and the batch-64 step in a 1-thread pool;
//! - a per-node timed replay of the batch-64 training step (the benches'
//!   copy of the engine's lanes, checked bit-identical to
//!   `Plan::forward_backward` first): the CPU time of every layer, forward
//!   and backward, as a share of the real step's time.
//!
//! Prints Markdown (README-ready) on stdout; progress on stderr.

mod common;

use std::hint::black_box;
use std::time::Instant;

use common::{
    describe, head_start, node_flops, node_params, plan, Ceiling, Setup, StepWall, LOSS, PRESETS, REDUCTION,
    SGD,
};

/// How long and how often to measure.
struct Cfg {
    warm_secs: f64,
    block_secs: f64,
    rounds: usize,
}

/// A measurement: `f(iters)` runs `iters` calls of the measured thing.
struct Job<'a> {
    f: Box<dyn FnMut(u64) + 'a>,
    iters: u64,
    /// Seconds per call, one entry per round.
    secs: Vec<f64>,
}

impl<'a> Job<'a> {
    fn new(f: impl FnMut(u64) + 'a) -> Self {
        Job { f: Box::new(f), iters: 1, secs: Vec::new() }
    }
}

/// Warm up and calibrate every job, then run the rounds.
fn run(jobs: &mut [Job], cfg: &Cfg) {
    for job in jobs.iter_mut() {
        let t = Instant::now();
        let mut calls = 0u64;
        while calls < 2 || t.elapsed().as_secs_f64() < cfg.warm_secs {
            (job.f)(1);
            calls += 1;
        }
        let per_call = t.elapsed().as_secs_f64() / calls as f64;
        job.iters = ((cfg.block_secs / per_call).round() as u64).max(1);
    }
    for round in 0..cfg.rounds {
        eprint!("\rsummary: round {}/{}", round + 1, cfg.rounds);
        for job in jobs.iter_mut() {
            let t = Instant::now();
            (job.f)(job.iters);
            job.secs.push(t.elapsed().as_secs_f64() / job.iters as f64);
        }
    }
    eprintln!();
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if !n.is_multiple_of(2) {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Median seconds per call and relative spread of a job.
fn stat(job: &Job) -> (f64, f64) {
    let m = median(&job.secs);
    let lo = job.secs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = job.secs.iter().copied().fold(0.0, f64::max);
    (m, (hi - lo) / m)
}

/// `12,345`.
fn thousands(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn bytes(b: usize) -> String {
    if b >= 1 << 20 {
        format!("{:.2} MiB", b as f64 / (1 << 20) as f64)
    } else {
        format!("{:.1} KiB", b as f64 / 1024.0)
    }
}

/// Per-node replay results of one preset: thread-microseconds per image.
struct Replay {
    /// Per node, then the loss last: `[forward, backward]`, median over rounds.
    us: Vec<[f64; 2]>,
    /// Reduction + SGD, wall x threads, per image.
    update_us: f64,
    /// Wall time of the replayed step (lanes + reduce + SGD), seconds.
    step_secs: f64,
}

fn first_line(path: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    Some(line.split(':').nth(1).unwrap_or(line).trim().to_string())
}

/// CPU clock ticks so far: (all CPUs busy, including steal; this process).
fn cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let v: Vec<u64> =
        stat.lines().next()?.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal
    let busy = v.iter().take(8).sum::<u64>() - v.get(3)? - v.get(4)?;
    let me = std::fs::read_to_string("/proc/self/stat").ok()?;
    // fields after the ")" closing the command name: utime and stime are 12th and 13th
    let f: Vec<&str> = me.rsplit(')').next()?.split_whitespace().collect();
    let (utime, stime): (u64, u64) = (f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?);
    Some((busy, utime + stime))
}

/// Share of all CPUs that other processes (and the hypervisor) used
/// between two [`cpu_ticks`] readings `secs` apart.
fn others_share(
    before: Option<(u64, u64)>,
    after: Option<(u64, u64)>,
    secs: f64,
    cpus: usize,
) -> Option<f64> {
    let ((b0, m0), (b1, m1)) = (before?, after?);
    let ticks_per_sec = 100.0; // USER_HZ on Linux
    let others = (b1 - b0).saturating_sub(m1 - m0) as f64;
    Some(others / (secs * ticks_per_sec * cpus as f64))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench -- <filter>` passes its filter to every bench target.
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if !filters.is_empty() && !filters.iter().any(|f| "summary".contains(f.as_str())) {
        return;
    }
    if args.iter().any(|a| a == "--list") {
        println!("summary: bench");
        return;
    }
    // Without `--bench` we run under `cargo test --benches`: just smoke-test.
    let quick = args.iter().any(|a| a == "--quick") || !args.iter().any(|a| a == "--bench");
    let cfg = if quick {
        Cfg { warm_secs: 0.0, block_secs: 0.0, rounds: 3 }
    } else {
        Cfg { warm_secs: 0.3, block_secs: 0.25, rounds: 9 }
    };
    let threads = rayon::current_num_threads();
    let ticks_before = cpu_ticks();
    let started = Instant::now();
    let n = 64;
    let big = 256;

    eprintln!("summary: checking the replay against Plan::forward_backward");
    let mut setups: Vec<Setup> = PRESETS.iter().map(|name| Setup::new(name, n)).collect();
    let ceiling = Ceiling::new();
    let (x, y) = common::batch(n);
    let (xb, yb) = common::batch(big);
    let mut train: Vec<_> = PRESETS.iter().map(|p| [plan(p, n), plan(p, big)]).collect();
    let mut infer: Vec<_> = PRESETS.iter().map(|p| [plan(p, n), plan(p, big)]).collect();
    let mut single: Vec<_> = PRESETS.iter().map(|p| plan(p, n)).collect();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("a rayon pool");
    let mut replay_nanos: Vec<Vec<Vec<[u64; 2]>>> = vec![Vec::new(); PRESETS.len()];
    let mut replay_walls: Vec<Vec<(u64, StepWall)>> = vec![Vec::new(); PRESETS.len()];

    // Jobs, in this order: ceiling, then per preset: train 64, train 256,
    // infer 64, infer 256, train 64 on 1 thread, replay 64.
    let mut jobs = vec![Job::new(|iters| {
        for _ in 0..iters {
            ceiling.run();
        }
    })];
    let per_preset = 6;
    let lists = train.iter_mut().zip(&mut infer).zip(&mut single).zip(&mut setups);
    for ((((t, i), s), setup), (nanos, walls)) in
        lists.zip(replay_nanos.iter_mut().zip(replay_walls.iter_mut()))
    {
        let [t64, t256] = t;
        let [i64, i256] = i;
        let (x, y, xb, yb) = (&x, &y, &xb, &yb);
        jobs.push(Job::new(move |iters| {
            for _ in 0..iters {
                black_box(t64.train_step(x, y, LOSS, REDUCTION, &SGD));
            }
        }));
        jobs.push(Job::new(move |iters| {
            for _ in 0..iters {
                black_box(t256.train_step(xb, yb, LOSS, REDUCTION, &SGD));
            }
        }));
        jobs.push(Job::new(move |iters| {
            let mut logits = vec![0.0f32; n * i64.classes()];
            for _ in 0..iters {
                i64.predict(x, black_box(&mut logits));
            }
        }));
        jobs.push(Job::new(move |iters| {
            let mut logits = vec![0.0f32; big * i256.classes()];
            for _ in 0..iters {
                i256.predict(xb, black_box(&mut logits));
            }
        }));
        let pool = &pool;
        jobs.push(Job::new(move |iters| {
            pool.install(|| {
                for _ in 0..iters {
                    black_box(s.train_step(x, y, LOSS, REDUCTION, &SGD));
                }
            })
        }));
        let Setup { replica, x: rx, labels: ry, .. } = setup;
        jobs.push(Job::new(move |iters| {
            replica.reset_nanos();
            let mut wall = StepWall::default();
            for _ in 0..iters {
                let (_, w) = replica.timed_step(rx, ry);
                wall.lanes += w.lanes;
                wall.reduce += w.reduce;
                wall.sgd += w.sgd;
            }
            nanos.push(replica.nanos());
            walls.push((iters, wall));
        }));
    }
    eprintln!("summary: {} measurements x {} rounds", jobs.len(), cfg.rounds);
    run(&mut jobs, &cfg);
    let results: Vec<(f64, f64)> = jobs.iter().map(stat).collect();
    drop(jobs);
    let cpus = std::thread::available_parallelism().map_or(threads, |n| n.get());
    let others = others_share(ticks_before, cpu_ticks(), started.elapsed().as_secs_f64(), cpus);

    // The replay jobs also recorded their calibration calls: use the rounds only.
    let rounds = cfg.rounds;
    let (ceil_secs, ceil_spread) = results[0];
    let ceil_gflops = ceiling.flops() as f64 / ceil_secs / 1e9;
    let per_thread_ceiling = ceil_gflops / threads as f64;
    let at = |p: usize, k: usize| results[1 + p * per_preset + k];
    let ips = |p: usize, k: usize, imgs: usize| imgs as f64 / at(p, k).0;

    let replays: Vec<Replay> = (0..PRESETS.len())
        .map(|p| {
            let nanos = &replay_nanos[p][replay_nanos[p].len() - rounds..];
            let walls = &replay_walls[p][replay_walls[p].len() - rounds..];
            let rows = nanos[0].len();
            let us = (0..rows)
                .map(|r| {
                    let per = |d: usize| {
                        let v: Vec<f64> = nanos
                            .iter()
                            .zip(walls)
                            .map(|(ns, (iters, _))| ns[r][d] as f64 / 1e3 / (*iters as f64 * n as f64))
                            .collect();
                        median(&v)
                    };
                    [per(0), per(1)]
                })
                .collect();
            let upd: Vec<f64> = walls
                .iter()
                .map(|(iters, w)| {
                    (w.reduce + w.sgd) as f64 / 1e3 * threads as f64 / (*iters as f64 * n as f64)
                })
                .collect();
            let step: Vec<f64> = walls
                .iter()
                .map(|(iters, w)| (w.lanes + w.reduce + w.sgd) as f64 / 1e9 / *iters as f64)
                .collect();
            Replay { us, update_us: median(&upd), step_secs: median(&step) }
        })
        .collect();

    let plans: Vec<&graph::Plan> = setups.iter().map(|s| &s.plan).collect();
    print_report(&Report {
        quick,
        threads,
        others,
        rounds,
        ceiling: (ceil_gflops, ceil_spread),
        per_thread_ceiling,
        plans: &plans,
        replays: &replays,
        speeds: &(0..PRESETS.len())
            .map(|p| Speeds {
                train: [(ips(p, 0, n), at(p, 0).1), (ips(p, 1, big), at(p, 1).1)],
                infer: [(ips(p, 2, n), at(p, 2).1), (ips(p, 3, big), at(p, 3).1)],
                single: (ips(p, 4, n), at(p, 4).1),
                step_secs: at(p, 0).0,
            })
            .collect::<Vec<_>>(),
        batch: (n, big),
    });
}

/// Images/s with spread, per preset.
struct Speeds {
    train: [(f64, f64); 2],
    infer: [(f64, f64); 2],
    single: (f64, f64),
    /// Median seconds of one batch-64 `Plan::train_step`.
    step_secs: f64,
}

struct Report<'a> {
    quick: bool,
    threads: usize,
    /// Share of the CPUs other processes used during the run.
    others: Option<f64>,
    rounds: usize,
    ceiling: (f64, f64),
    per_thread_ceiling: f64,
    plans: &'a [&'a graph::Plan],
    replays: &'a [Replay],
    speeds: &'a [Speeds],
    batch: (usize, usize),
}

fn print_report(r: &Report) {
    let (n, big) = r.batch;
    let [fc, gap] = [r.plans[0], r.plans[1]];
    let cpu = first_line("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown CPU".into());
    println!("## gapnet: where a training step's time goes (seed-fc vs seed-gap)\n");
    if r.quick {
        println!("**Quick smoke run: these numbers mean nothing.**\n");
    }
    println!(
        "{cpu}, {} rayon threads; other processes used {} of the CPU time during the run. Every figure is \
         the median of {} rounds that interleave all measurements; `±` is the spread (max - min) over the \
         rounds.\n",
        r.threads,
        r.others.map_or("an unknown share".into(), |o| format!("{:.1}%", o * 100.0)),
        r.rounds
    );
    if r.others.is_some_and(|o| o > 0.05) {
        println!("**Warning: the machine was not idle during the run; the speeds are too low.**\n");
    }
    println!(
        "SGEMM ceiling: single-threaded 512^3 `sgemm` on each of {} threads at once: **{:.1} GFLOP/s** \
         ({:.1} per thread, ±{:.0}%).\n",
        r.threads,
        r.ceiling.0,
        r.per_thread_ceiling,
        r.ceiling.1 * 100.0
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
    let speed_row = |label: &str, f: (f64, f64), g: (f64, f64)| {
        println!(
            "| {label} | {} ±{:.0}% | {} ±{:.0}% | {:+.1}% images/s, {:+.1}% time |",
            thousands(f.0 as u64),
            f.1 * 100.0,
            thousands(g.0 as u64),
            g.1 * 100.0,
            pct(f.0, g.0),
            pct(1.0 / f.0, 1.0 / g.0)
        )
    };
    let [sf, sg] = [&r.speeds[0], &r.speeds[1]];
    speed_row(&format!("training, batch {n} (images/s)"), sf.train[0], sg.train[0]);
    speed_row(&format!("training, batch {big} (images/s)"), sf.train[1], sg.train[1]);
    speed_row(&format!("inference, batch {n} (images/s)"), sf.infer[0], sg.infer[0]);
    speed_row(&format!("inference, batch {big} (images/s)"), sf.infer[1], sg.infer[1]);
    let gflops = |p: &graph::Plan, ips: f64| 6.0 * p.forward_macs() as f64 * ips / 1e9;
    let (gf, gg) = (gflops(fc, sf.train[0].0), gflops(gap, sg.train[0].0));
    println!("| training GFLOP/s, batch {n} (6 x forward MACs per image) | {gf:.1} | {gg:.1} | |");
    println!(
        "| % of the SGEMM ceiling ({:.0} GFLOP/s) | {:.1}% | {:.1}% | |",
        r.ceiling.0,
        gf / r.ceiling.0 * 100.0,
        gg / r.ceiling.0 * 100.0
    );
    speed_row(&format!("training, batch {n}, 1 thread (images/s)"), sf.single, sg.single);
    println!(
        "| scaling 1 -> {} threads, batch {n} | {:.2}x | {:.2}x | |",
        r.threads,
        sf.train[0].0 / sf.single.0,
        sg.train[0].0 / sg.single.0
    );
    println!();

    // ---- Per-layer shares of the step ----
    println!(
        "Where the time of a batch-{n} training step goes: thread-time per image (µs; CPU time of each \
         layer summed over the lanes, from a per-node timed replay of the step) and its share of the \
         measured `Plan::train_step` time x {} threads.\n",
        r.threads
    );
    println!("| layer | op | seed-fc µs/image, fwd + bwd | share | seed-gap µs/image, fwd + bwd | share |");
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    // thread-µs per image of the real step
    let budget: Vec<f64> = r.speeds.iter().map(|s| s.step_secs * 1e6 * r.threads as f64 / n as f64).collect();
    let trunk = head_start(fc.nodes());
    let share = |p: usize, us: f64| format!("{:.1}%", us / budget[p] * 100.0);
    // rows: node indices of each preset's replay
    let cell = |p: usize, rows: &[usize]| {
        let us = &r.replays[p].us;
        let (f, b): (f64, f64) = (rows.iter().map(|&i| us[i][0]).sum(), rows.iter().map(|&i| us[i][1]).sum());
        format!("{f:.1} + {b:.1} | {}", share(p, f + b))
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
    let upd = |p: usize| format!("{:.1} | {}", r.replays[p].update_us, share(p, r.replays[p].update_us));
    println!("| update | gradient reduction + SGD (wall x threads) | {} | {} |", upd(0), upd(1));
    let other = |p: usize| {
        let used: f64 = r.replays[p].us.iter().map(|u| u[0] + u[1]).sum::<f64>() + r.replays[p].update_us;
        let rest = budget[p] - used;
        format!("{rest:.1} | {}", share(p, rest))
    };
    println!("| other | idle threads, fork/join, imbalance, timer | {} | {} |", other(0), other(1));
    println!(
        "| step | `Plan::train_step` x {} threads | {:.1} | 100% | {:.1} | 100% |",
        r.threads, budget[0], budget[1]
    );
    println!();

    // ---- The heads, node by node ----
    println!("The heads node by node (µs of thread-time per image, share of the step):\n");
    println!("| preset | node | op | parameters | fwd | bwd | share |");
    println!("| --- | --- | --- | ---: | ---: | ---: | ---: |");
    for (p, plan) in r.plans.iter().enumerate() {
        let nodes = plan.nodes();
        for (i, node) in nodes.iter().enumerate().skip(head_start(nodes)) {
            let [f, b] = r.replays[p].us[i];
            println!(
                "| {} | {} | {} | {} | {f:.2} | {b:.2} | {:.2}% |",
                plan.spec().name,
                node.name,
                describe(node),
                thousands(node_params(node) as u64),
                (f + b) / budget[p] * 100.0
            );
        }
    }
    println!();

    // ---- Convolution efficiency ----
    println!(
        "The convolutions against the SGEMM ceiling of one thread ({:.1} GFLOP/s), mean of the two \
         presets' replays (same trunk):\n",
        r.per_thread_ceiling
    );
    println!("| layer | op | MFLOP/image fwd | fwd GFLOP/s | % | bwd GFLOP/s | % |");
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: |");
    for (i, node) in fc.nodes()[..trunk].iter().enumerate() {
        let (ff, fb) = node_flops(node, i == 0);
        if ff == 0 {
            continue;
        }
        let mean = |d: usize| (r.replays[0].us[i][d] + r.replays[1].us[i][d]) / 2.0;
        let (gf, gb) = (ff as f64 / mean(0) / 1e3, fb as f64 / mean(1) / 1e3);
        println!(
            "| {} | {} | {:.2} | {gf:.1} | {:.0}% | {gb:.1} | {:.0}% |",
            node.name,
            describe(node),
            ff as f64 / 1e6,
            gf / r.per_thread_ceiling * 100.0,
            gb / r.per_thread_ceiling * 100.0
        );
    }
    println!();
    let replay_ms: Vec<String> = r
        .replays
        .iter()
        .zip(r.speeds)
        .map(|(rp, s)| format!("{:.2} ms vs {:.2} ms", rp.step_secs * 1e3, s.step_secs * 1e3))
        .collect();
    println!(
        "Replay check: the per-node replay computes the same loss and gradient bits as \
         `Plan::forward_backward` (checked before timing); replayed step vs `Plan::train_step`, batch {n}: \
         seed-fc {}, seed-gap {}.",
        replay_ms[0], replay_ms[1]
    );
}
