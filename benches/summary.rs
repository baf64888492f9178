//! One table of where the time goes, conv against GAP, and a section on the
//! deeper `deep-gap` with batch norm: `cargo bench --bench summary` (about
//! three minutes; `-- --quick` for a smoke run of ten seconds or so).
//!
//! A self-timing bench (no criterion): every measurement is calibrated to
//! blocks of ~0.2 s, then all blocks run round-robin for 21 rounds, so a
//! burst of background load, or a drift of the (virtual) machine's speed,
//! hits every configuration alike. Each figure is the median over the
//! rounds, with half the interquartile range beside it; ratios (GAP vs FC,
//! % of the ceiling, thread scaling) are taken within a round, then the
//! median. Measured in the same process:
//!
//! - the SGEMM ceiling (single-threaded 512^3 products on every rayon
//!   thread at once, and on one thread alone);
//! - `Plan::train_step` (batch 64, 256) and `Plan::predict` (64, 256) for
//!   `seed-fc` and `seed-gap`, and the batch-64 step in a 1-thread pool;
//! - the batch-64 step and inference at every ISA this CPU runs, side by
//!   side (the table's other figures use `Isa::detect`: the best, or
//!   `GAPNET_ISA`);
//! - the batch-64 training step observed node by node
//!   (`Plan::forward_backward_observed`, the plain step's code with a clock
//!   around every node, then `Plan::sgd_step`): the lane time of every
//!   layer, forward and backward, as a share of the observed step's time;
//! - in its own section (`summary/deep.rs`), `deep-gap` (five convs, each
//!   with batch norm and ReLU; a step ~15x seed-fc's, so one step per block):
//!   the batch-64 step at every ISA this CPU runs (images/s, % of the
//!   ceiling), and its observed step split into convolutions forward and
//!   backward, batch norm (its share printed against the 10% it is held to),
//!   pools, ReLUs, head, reduction + update, and the rest (lanes idle at the
//!   ends of the segments between batch norms, fork/join), with the
//!   convolutions' own rate against the ceiling beside the whole step's.
//!
//! Prints Markdown (README-ready) on stdout; progress on stderr.

mod common;
#[path = "summary/deep.rs"]
mod deep;
#[path = "summary/report.rs"]
mod report;

use std::hint::black_box;
use std::time::Instant;

use common::timing::{est, median, run, Cfg, Est, Job};
use common::{plan, plan_for, Ceiling, NodeTimes, LOSS, PRESETS, REDUCTION, SGD};
use deep::Deep;
use graph::{Isa, Plan};
use report::{print_report, Report, Speeds, VALID};

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

/// Wall-clock nanoseconds of the phases of observed training steps.
#[derive(Clone, Copy, Debug, Default)]
struct StepWall {
    /// `forward_backward_observed`: the lanes, then the gradient reduction.
    step: u64,
    /// The gradient reduction alone (reported by the observer).
    reduce: u64,
    /// `sgd_step`.
    sgd: u64,
}

/// Per-node results of one preset's observed steps: thread-microseconds
/// per image. Everything per round, so that shares are taken within a round.
struct Observed {
    /// Per round, per node (then the loss): `[forward, backward]`.
    us: Vec<Vec<[f64; 2]>>,
    /// Per round: gradient reduction + SGD, wall x threads, per image.
    update_us: Vec<f64>,
    /// Per round: the observed step (lanes + reduce + SGD), wall x threads,
    /// per image: what the shares are shares of.
    step_us: Vec<f64>,
}

impl Observed {
    /// Median over rounds of `f(round)`.
    fn med(&self, f: impl Fn(usize) -> f64) -> f64 {
        median(&(0..self.us.len()).map(f).collect::<Vec<_>>())
    }
    /// From an observed job's records, one per call: the last `rounds` are
    /// the rounds' (the ones before, its calibration calls); `n` images per
    /// step on `threads` threads.
    fn new(
        nanos: &[Vec<[u64; 2]>],
        walls: &[(u64, StepWall)],
        rounds: usize,
        n: usize,
        threads: usize,
    ) -> Self {
        let (nanos, walls) = (&nanos[nanos.len() - rounds..], &walls[walls.len() - rounds..]);
        let per_image = |ns: u64, iters: u64| ns as f64 / 1e3 / (iters as f64 * n as f64);
        let us = nanos
            .iter()
            .zip(walls)
            .map(|(ns, &(iters, _))| {
                ns.iter().map(|t| [per_image(t[0], iters), per_image(t[1], iters)]).collect()
            })
            .collect();
        let t = threads as u64;
        let update_us = walls.iter().map(|&(iters, w)| per_image((w.reduce + w.sgd) * t, iters)).collect();
        let step_us = walls.iter().map(|&(iters, w)| per_image((w.step + w.sgd) * t, iters)).collect();
        Observed { us, update_us, step_us }
    }
    /// Thread-µs per image of `rows` in round `r`, directions `dirs` (0
    /// forward, 1 backward).
    fn sum(&self, r: usize, rows: &[usize], dirs: &[usize]) -> f64 {
        rows.iter().flat_map(|&i| dirs.iter().map(move |&d| self.us[r][i][d])).sum()
    }
    /// Thread-µs per image of `rows` in the directions `dirs`, and the
    /// median share of the step.
    fn part(&self, rows: &[usize], dirs: &[usize]) -> (f64, f64) {
        (self.med(|r| self.sum(r, rows, dirs)), self.med(|r| self.sum(r, rows, dirs) / self.step_us[r]))
    }
    /// Thread-µs per image of `rows`: forward, backward, and the median
    /// share of the step.
    fn rows(&self, rows: &[usize]) -> (f64, f64, f64) {
        (self.part(rows, &[0]).0, self.part(rows, &[1]).0, self.part(rows, &[0, 1]).1)
    }
    /// Per round: the GFLOP/s per thread of `flops` per image done in the
    /// lane time of `rows` (directions `dirs`), and its % of that round's
    /// `ceiling` (all threads) per thread: the lane time is thread-time.
    fn rates(
        &self,
        rows: &[usize],
        dirs: &[usize],
        flops: f64,
        ceiling: &[f64],
        threads: usize,
    ) -> Vec<[f64; 2]> {
        (0..self.us.len())
            .zip(ceiling)
            .map(|(r, c)| {
                let gflops = flops / self.sum(r, rows, dirs) / 1e3;
                [gflops, gflops / (c / threads as f64) * 100.0]
            })
            .collect()
    }
    /// Time the nodes and the update do not account for (threads idle at
    /// the end of the lanes, fork/join, timers), per image, and its share.
    fn other(&self) -> (f64, f64) {
        let rest = |r: usize| {
            let nodes: f64 = self.us[r].iter().map(|u| u[0] + u[1]).sum();
            self.step_us[r] - nodes - self.update_us[r]
        };
        (self.med(rest), self.med(|r| rest(r) / self.step_us[r]))
    }
}

/// `Plan::train_step` on the batch `x`, `y`.
fn train_job<'a>(plan: &'a mut Plan, x: &'a [f32], y: &'a [u32]) -> Job<'a> {
    Job::new(move |iters| {
        for _ in 0..iters {
            black_box(plan.train_step(x, y, LOSS, REDUCTION, &SGD));
        }
    })
}

/// The training step observed node by node (`forward_backward_observed`,
/// then `sgd_step`): every call pushes the nodes' lane times (`times`) onto
/// `nanos` and its walls onto `walls`, for [`Observed::new`].
fn observed_job<'a>(
    plan: &'a mut Plan,
    times: &'a NodeTimes,
    (x, y): (&'a [f32], &'a [u32]),
    nanos: &'a mut Vec<Vec<[u64; 2]>>,
    walls: &'a mut Vec<(u64, StepWall)>,
) -> Job<'a> {
    Job::new(move |iters| {
        times.reset();
        let mut wall = StepWall::default();
        for _ in 0..iters {
            let t = Instant::now();
            black_box(plan.forward_backward_observed(x, y, LOSS, REDUCTION, times));
            wall.step += t.elapsed().as_nanos() as u64;
            let t = Instant::now();
            plan.sgd_step(&SGD);
            wall.sgd += t.elapsed().as_nanos() as u64;
        }
        wall.reduce = times.reduce_nanos();
        nanos.push(times.nanos());
        walls.push((iters, wall));
    })
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

/// `abc1234`, `abc1234 + local changes`, or `unknown commit`.
fn commit() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(hash) => match git(&["status", "--porcelain", "--untracked-files=no"]) {
            Some(changes) if !changes.is_empty() => format!("commit {hash} + local changes"),
            _ => format!("commit {hash}"),
        },
        None => "unknown commit".into(),
    }
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
        Cfg { warm_secs: 0.3, block_secs: 0.2, rounds: 21 }
    };
    let threads = rayon::current_num_threads();
    let ticks_before = cpu_ticks();
    let started = Instant::now();
    let n = 64;
    let big = 256;

    let mut watched: Vec<_> = PRESETS.iter().map(|p| plan(p, n)).collect();
    let times: Vec<NodeTimes> = watched.iter().map(NodeTimes::new).collect();
    let ceiling = Ceiling::new();
    let (x, y) = common::batch(n);
    let (xb, yb) = common::batch(big);
    let mut train: Vec<_> = PRESETS.iter().map(|p| [plan(p, n), plan(p, big)]).collect();
    let mut infer: Vec<_> = PRESETS.iter().map(|p| [plan(p, n), plan(p, big)]).collect();
    let mut single: Vec<_> = PRESETS.iter().map(|p| plan(p, n)).collect();
    let mut valid: Vec<_> = VALID.iter().map(|p| plan(p, n)).collect();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("a rayon pool");
    // Every ISA this CPU runs: the batch-64 step and inference of each preset.
    let isas = Isa::available();
    let mut by_isa: Vec<[graph::Plan; 2]> = PRESETS
        .iter()
        .flat_map(|p| isas.iter().map(move |&i| [plan_for(p, n, i), plan_for(p, n, i)]))
        .collect();
    let mut node_nanos: Vec<Vec<Vec<[u64; 2]>>> = vec![Vec::new(); PRESETS.len()];
    let mut step_walls: Vec<Vec<(u64, StepWall)>> = vec![Vec::new(); PRESETS.len()];
    let mut deep = Deep::new(n);

    // Jobs, in this order: ceiling on all threads, ceiling on 1 thread,
    // then for each preset: train 64, train 256, infer 64, infer 256,
    // train 64 on 1 thread, observed 64 (interleaved, see below).
    let mut jobs = vec![
        Job::new(|iters| {
            for _ in 0..iters {
                ceiling.run();
            }
        }),
        Job::new(|iters| {
            pool.install(|| {
                for _ in 0..iters {
                    ceiling.run();
                }
            })
        }),
    ];
    // Each preset's six jobs, then interleaved kind by kind (fc, gap, fc,
    // gap, ...) so that the two presets' figures of a round are measured
    // next to each other in time.
    let mut by_preset: Vec<Vec<Job>> = Vec::new();
    let lists = train.iter_mut().zip(&mut infer).zip(&mut single).zip(watched.iter_mut().zip(&times));
    for ((((t, i), s), (w, times)), (nanos, walls)) in
        lists.zip(node_nanos.iter_mut().zip(step_walls.iter_mut()))
    {
        let mut mine = Vec::new();
        let [t64, t256] = t;
        let [i64, i256] = i;
        let (x, y, xb, yb) = (&x, &y, &xb, &yb);
        mine.push(train_job(t64, x, y));
        mine.push(train_job(t256, xb, yb));
        mine.push(Job::new(move |iters| {
            let mut logits = vec![0.0f32; n * i64.classes()];
            for _ in 0..iters {
                i64.predict(x, black_box(&mut logits));
            }
        }));
        mine.push(Job::new(move |iters| {
            let mut logits = vec![0.0f32; big * i256.classes()];
            for _ in 0..iters {
                i256.predict(xb, black_box(&mut logits));
            }
        }));
        let pool = &pool;
        mine.push(Job::new(move |iters| {
            pool.install(|| {
                for _ in 0..iters {
                    black_box(s.train_step(x, y, LOSS, REDUCTION, &SGD));
                }
            })
        }));
        mine.push(observed_job(w, times, (x, y), nanos, walls));
        by_preset.push(mine);
    }
    let per_preset = by_preset[0].len();
    let mut iters: Vec<_> = by_preset.into_iter().map(Vec::into_iter).collect();
    for _ in 0..per_preset {
        for it in &mut iters {
            jobs.extend(it.next());
        }
    }
    drop(iters);
    // The valid-padding variants' batch-64 step, for their % of the ceiling.
    let first_valid = jobs.len();
    for v in &mut valid {
        jobs.push(train_job(v, &x, &y));
    }
    let first_isa = jobs.len();
    for [t, i] in &mut by_isa {
        jobs.push(train_job(t, &x, &y));
        let x = &x;
        jobs.push(Job::new(move |iters| {
            let mut logits = vec![0.0f32; n * i.classes()];
            for _ in 0..iters {
                i.predict(x, black_box(&mut logits));
            }
        }));
    }
    let first_deep = jobs.len();
    jobs.extend(deep.jobs(&x, &y));
    eprintln!("summary: {} measurements x {} rounds", jobs.len(), cfg.rounds);
    run(&mut jobs, &cfg);
    let secs: Vec<Vec<f64>> = jobs.iter().map(|j| j.secs.clone()).collect();
    drop(jobs);
    let cpus = std::thread::available_parallelism().map_or(threads, |n| n.get());
    let others = others_share(ticks_before, cpu_ticks(), started.elapsed().as_secs_f64(), cpus);

    // Everything below is computed round by round, then summarised: a
    // ratio of two figures of the same round cancels the machine's drift.
    let rounds = cfg.rounds;
    let per_round =
        |j: usize, f: &dyn Fn(f64) -> f64| -> Vec<f64> { secs[j].iter().map(|&s| f(s)).collect() };
    let ceiling_all = per_round(0, &|s| ceiling.flops() as f64 / s / 1e9);
    let ceiling_one = per_round(1, &|s| ceiling.flops() as f64 / threads as f64 / s / 1e9);
    let job = |p: usize, k: usize| 2 + k * PRESETS.len() + p;
    let ips = |p: usize, k: usize, imgs: usize| per_round(job(p, k), &|s| imgs as f64 / s);
    let speeds: Vec<Speeds> = (0..PRESETS.len())
        .map(|p| {
            let train64 = ips(p, 0, n);
            let single = ips(p, 4, n);
            let flops = 6.0 * watched[p].forward_macs() as f64;
            let pct: Vec<f64> =
                train64.iter().zip(&ceiling_all).map(|(i, c)| flops * i / 1e9 / c * 100.0).collect();
            let scaling: Vec<f64> = train64.iter().zip(&single).map(|(a, b)| a / b).collect();
            Speeds {
                series: [train64.clone(), ips(p, 1, big), ips(p, 2, n), ips(p, 3, big), single],
                gflops: est(&train64.iter().map(|i| flops * i / 1e9).collect::<Vec<_>>()),
                pct_ceiling: est(&pct),
                scaling: est(&scaling),
                step_secs: median(&secs[job(p, 0)]),
            }
        })
        .collect();

    let valid_speeds: Vec<(Est, Est)> = VALID
        .iter()
        .enumerate()
        .map(|(v, name)| {
            let train64 = per_round(first_valid + v, &|s| n as f64 / s);
            let flops = 6.0 * plan(name, 1).forward_macs() as f64;
            let pct: Vec<f64> =
                train64.iter().zip(&ceiling_all).map(|(i, c)| flops * i / 1e9 / c * 100.0).collect();
            (est(&train64), est(&pct))
        })
        .collect();

    let observed: Vec<Observed> = (0..PRESETS.len())
        .map(|p| Observed::new(&node_nanos[p], &step_walls[p], rounds, n, threads))
        .collect();

    // img/s per round of (preset p, ISA k, job 0 = train / 1 = predict).
    let isa_ips =
        |p: usize, k: usize, j: usize| per_round(first_isa + 2 * (p * isas.len() + k) + j, &|s| n as f64 / s);
    let mut isa_table =
        String::from("| preset | ISA | train img/s | vs portable | predict img/s | vs portable |\n");
    isa_table += "| --- | --- | ---: | ---: | ---: | ---: |\n";
    let portable = isas.len() - 1; // `available` ends with Portable
    for (p, preset) in PRESETS.iter().enumerate() {
        for (k, isa) in isas.iter().enumerate() {
            let cell = |j: usize| {
                let (mine, base) = (isa_ips(p, k, j), isa_ips(p, portable, j));
                let ratio: Vec<f64> = mine.iter().zip(&base).map(|(a, b)| a / b).collect();
                let (v, r) = (est(&mine), est(&ratio));
                format!("{} ±{:.0}% | {:.2}x", thousands(v.median as u64), v.spread * 100.0, r.median)
            };
            isa_table += &format!("| {preset} | {} | {} | {} |\n", isa.label(), cell(0), cell(1));
        }
    }

    let plans: Vec<&graph::Plan> = watched.iter().collect();
    print_report(&Report {
        quick,
        threads,
        others,
        rounds,
        ceiling: est(&ceiling_all),
        ceiling_series: ceiling_all.clone(),
        ceiling_one: est(&ceiling_one),
        plans: &plans,
        observed: &observed,
        speeds: &speeds,
        valid: &valid_speeds,
        batch: (n, big),
    });
    println!("\n### Every ISA this CPU runs (batch {n}, {threads} threads, same rounds)\n");
    print!("{isa_table}");
    println!(
        "\nOther tables use the {} kernels (`Isa::detect`; `GAPNET_ISA` chooses).",
        Isa::detect().label()
    );
    deep.print(&deep::Run { secs: &secs[first_deep..], ceiling: &ceiling_all, rounds, n, threads });
}
