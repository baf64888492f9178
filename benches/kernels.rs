//! Each kernel with SIMD versions at every ISA this CPU runs, side by side
//! in the same run: `cargo bench --bench kernels` (~40 s per ISA; `--
//! --quick` for a smoke run).
//!
//! One thread, one lane's chunk of 8 images (what a lane runs at batch 64),
//! the layer shapes of `seed-fc` and `seed-fc-valid`, random inputs. Each
//! ISA runs what the engine runs at it: `portable` is im2col +
//! `matrixmultiply` SGEMM + col2im for the convolutions, SGEMM for the dense
//! layers and the scalar window loop for the 3x3/2 max pools; `avx2` and
//! `avx512` the direct convolutions, the SIMD dense kernels and the SIMD
//! pool. Every job is timed in interleaved rounds (see `common::timing`);
//! speedups over portable are taken within each round, then the median.
//! Prints Markdown on stdout.

mod common;

use std::hint::black_box;

use common::timing::{est, median, run, Cfg, Job};
use common::{describe, plan};
use graph::Op;
use kernel::gemm::{sgemm, Mat};
use kernel::{conv2d_backward, conv2d_forward, dense_backward, dense_forward, maxpool_forward, Isa};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Images per call: one lane's chunk at batch 64.
const CHUNK: usize = 8;

fn random(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// One row of the table: a kernel at every ISA.
struct Row {
    layer: String,
    op: String,
    pass: &'static str,
    /// Useful FLOP per call, for the convolutions' GFLOP/s.
    flops: Option<f64>,
    /// The job of each ISA of `isas`, in order.
    jobs: Vec<usize>,
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let cfg = if quick {
        Cfg { warm_secs: 0.02, block_secs: 0.01, rounds: 3 }
    } else {
        Cfg { warm_secs: 0.2, block_secs: 0.05, rounds: 15 }
    };
    // portable first: the other columns' speedups are over it
    let isas: Vec<Isa> = Isa::available().into_iter().rev().collect();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    // the single-thread SGEMM ceiling, for the convolutions' percentages
    let (a, b) = (random(&mut rng, 512 * 512), random(&mut rng, 512 * 512));
    let mut c = vec![0.0f32; 512 * 512];
    let mut jobs = vec![Job::new(|iters| {
        for _ in 0..iters {
            sgemm(1.0, Mat::rows(&a, 512, 512), Mat::rows(&b, 512, 512), 0.0, &mut c);
            black_box(&c);
        }
    })];
    let mut rows: Vec<Row> = Vec::new();
    for preset in ["seed-fc", "seed-fc-valid"] {
        let p = plan(preset, 64);
        let mut seen_dense = false;
        for node in p.nodes() {
            let name = format!("{preset} {}", node.name);
            let (n_in, n_out) = (CHUNK * node.in_shape.len(), CHUNK * node.out_shape.len());
            let x = random(&mut rng, n_in);
            let dy = random(&mut rng, n_out);
            let row = |pass: &'static str, flops: Option<f64>, jobs_before: usize| Row {
                layer: name.clone(),
                op: describe(node),
                pass,
                flops,
                jobs: (jobs_before..jobs_before + isas.len()).collect(),
            };
            match node.op {
                Op::Conv(s) => {
                    let w = random(&mut rng, s.weight_len());
                    let bias = random(&mut rng, s.c_out);
                    let first = node.name == "conv1";
                    let flops = 2.0 * (s.macs() * CHUNK) as f64;
                    for (pass, f) in
                        [("forward", flops), ("backward", if first { flops } else { 2.0 * flops })]
                    {
                        rows.push(row(pass, Some(f), jobs.len()));
                        for &isa in &isas {
                            let (x, w, bias, dy) = (x.clone(), w.clone(), bias.clone(), dy.clone());
                            let mut y = vec![0.0f32; n_out];
                            let mut dx = vec![0.0f32; n_in];
                            let (mut dw, mut db) = (vec![0.0f32; s.weight_len()], vec![0.0f32; s.c_out]);
                            let mut scratch = vec![0.0f32; s.scratch_len(CHUNK)];
                            jobs.push(Job::new(move |iters| {
                                for _ in 0..iters {
                                    if pass == "forward" {
                                        conv2d_forward(
                                            isa,
                                            &s,
                                            CHUNK,
                                            &x,
                                            &w,
                                            Some(&bias),
                                            &mut y,
                                            &mut scratch,
                                        );
                                    } else {
                                        let dx = (!first).then_some(&mut dx[..]);
                                        let (dw, db) = (&mut dw[..], Some(&mut db[..]));
                                        conv2d_backward(
                                            isa,
                                            &s,
                                            CHUNK,
                                            &x,
                                            &w,
                                            &dy,
                                            dx,
                                            dw,
                                            db,
                                            &mut scratch,
                                            false,
                                        );
                                    }
                                    black_box((&y, &dw));
                                }
                            }));
                        }
                    }
                }
                Op::MaxPool(s) if (s.size, s.stride) == (3, 2) => {
                    rows.push(row("forward", None, jobs.len()));
                    for &isa in &isas {
                        let x = x.clone();
                        let (mut y, mut arg) = (vec![0.0f32; n_out], vec![0u32; n_out]);
                        jobs.push(Job::new(move |iters| {
                            for _ in 0..iters {
                                maxpool_forward(isa, &s, CHUNK, &x, &mut y, &mut arg);
                                black_box((&y, &arg));
                            }
                        }));
                    }
                }
                // the first dense layer of the head: the others are tiny
                Op::Dense(s) if !seen_dense => {
                    seen_dense = true;
                    let w = random(&mut rng, s.weight_len());
                    let bias = random(&mut rng, s.outputs);
                    for pass in ["forward", "backward"] {
                        rows.push(row(pass, None, jobs.len()));
                        for &isa in &isas {
                            let (x, w, bias, dy) = (x.clone(), w.clone(), bias.clone(), dy.clone());
                            let (mut y, mut dx) = (vec![0.0f32; n_out], vec![0.0f32; n_in]);
                            let (mut dw, mut db) = (vec![0.0f32; s.weight_len()], vec![0.0f32; s.outputs]);
                            jobs.push(Job::new(move |iters| {
                                for _ in 0..iters {
                                    if pass == "forward" {
                                        dense_forward(isa, &s, CHUNK, &x, &w, Some(&bias), &mut y);
                                    } else {
                                        let (dx, db) = (Some(&mut dx[..]), Some(&mut db[..]));
                                        dense_backward(isa, &s, CHUNK, &x, &w, &dy, dx, &mut dw, db, false);
                                    }
                                    black_box((&y, &dx, &dw));
                                }
                            }));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    eprintln!("kernels: {} measurements x {} rounds", jobs.len(), cfg.rounds);
    run(&mut jobs, &cfg);

    let ceiling: Vec<f64> = jobs[0].secs.iter().map(|s| 2.0 * 512f64.powi(3) / s / 1e9).collect();
    let names: Vec<&str> = isas.iter().map(|i| i.label()).collect();
    let missing: Vec<&str> = Isa::ALL.iter().filter(|i| !i.supported()).map(|i| i.label()).collect();
    println!("## The kernels at every ISA: {}\n", names.join(", "));
    println!(
        "{}, 1 thread, one lane's chunk of {CHUNK} images per call; the median of {} interleaved \
         rounds, `±` half the interquartile range; speedups over portable and % of the SGEMM \
         ceiling taken within each round. SGEMM ceiling (single-threaded 512^3 `sgemm`): {:.1} \
         GFLOP/s.{}\n",
        cpu_name(),
        cfg.rounds,
        median(&ceiling),
        if missing.is_empty() {
            String::new()
        } else {
            format!(" This CPU cannot run {}.", missing.join(", "))
        }
    );
    println!("Each cell: µs per call, then (SIMD) the speedup over portable, then (convolutions) % of the ceiling.\n");
    println!("| layer | op | pass | {} |", names.join(" | "));
    println!("| --- | --- | --- |{}", " ---: |".repeat(isas.len()));
    for r in &rows {
        let base = &jobs[r.jobs[0]].secs;
        let cells: Vec<String> = r
            .jobs
            .iter()
            .enumerate()
            .map(|(k, &j)| {
                let t = &jobs[j].secs;
                let e = est(t);
                let mut cell = format!("{:.1} ±{:.0}%", e.median * 1e6, e.spread * 100.0);
                if k > 0 {
                    let speedup: Vec<f64> = base.iter().zip(t).map(|(b, f)| b / f).collect();
                    cell += &format!(" · {:.2}x", median(&speedup));
                }
                if let Some(fl) = r.flops {
                    let v: Vec<f64> = t.iter().zip(&ceiling).map(|(s, c)| fl / s / 1e9 / c * 100.0).collect();
                    cell += &format!(" · {:.0}%", median(&v));
                }
                cell
            })
            .collect();
        println!("| {} | {} | {} | {} |", r.layer, r.op, r.pass, cells.join(" | "));
    }
}

/// The CPU's model name from `/proc/cpuinfo`, or "this CPU".
fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| t.lines().find(|l| l.starts_with("model name")).map(|l| l.to_string()))
        .and_then(|l| l.split_once(':').map(|(_, v)| v.trim().to_string()))
        .unwrap_or_else(|| "this CPU".into())
}
