//! Each kernel with an AVX-512 version against its portable version, in the
//! same run: `cargo bench --bench kernels` (~40 s; `-- --quick` for a smoke
//! run).
//!
//! One thread, one lane's chunk of 8 images (what a lane runs at batch 64),
//! the layer shapes of `seed-fc` and `seed-fc-valid`, random inputs. The
//! portable versions are im2col + `matrixmultiply` SGEMM + col2im for the
//! convolutions, SGEMM for the dense layers and the scalar window loop for
//! the 3x3/2 max pools. Every job is timed in interleaved rounds (see
//! `common::timing`); speedups are taken within each round, then the
//! median. Prints Markdown on stdout.

mod common;

use std::hint::black_box;

use common::timing::{est, median, run, Cfg, Job};
use common::{describe, plan};
use graph::Op;
use kernel::gemm::{sgemm, Mat};
use kernel::{
    conv2d_backward_via, conv2d_forward_via, dense_backward, dense_backward_portable, dense_forward,
    dense_forward_portable, maxpool_forward, maxpool_forward_portable, ConvPath, Dense,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

type DenseForward = fn(&Dense, usize, &[f32], &[f32], Option<&[f32]>, &mut [f32]);
type DenseBackward =
    fn(&Dense, usize, &[f32], &[f32], &[f32], Option<&mut [f32]>, &mut [f32], Option<&mut [f32]>, bool);

/// Images per call: one lane's chunk at batch 64.
const CHUNK: usize = 8;

fn random(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// One row of the table: a kernel's two versions.
struct Pair {
    layer: String,
    op: String,
    pass: &'static str,
    /// Useful FLOP per call, for the convolutions' GFLOP/s.
    flops: Option<f64>,
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let cfg = if quick {
        Cfg { warm_secs: 0.02, block_secs: 0.01, rounds: 3 }
    } else {
        Cfg { warm_secs: 0.2, block_secs: 0.05, rounds: 15 }
    };
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
    let mut pairs: Vec<Pair> = Vec::new();
    for preset in ["seed-fc", "seed-fc-valid"] {
        let p = plan(preset, 64);
        let mut seen_dense = false;
        for node in p.nodes() {
            let name = format!("{preset} {}", node.name);
            let (n_in, n_out) = (CHUNK * node.in_shape.len(), CHUNK * node.out_shape.len());
            let x = random(&mut rng, n_in);
            let dy = random(&mut rng, n_out);
            match node.op {
                Op::Conv(s) => {
                    let w = random(&mut rng, s.weight_len());
                    let bias = random(&mut rng, s.c_out);
                    let first = node.name == "conv1";
                    let flops = 2.0 * (s.macs() * CHUNK) as f64;
                    for (pass, f) in
                        [("forward", flops), ("backward", if first { flops } else { 2.0 * flops })]
                    {
                        for path in [ConvPath::Im2col, ConvPath::Direct] {
                            let (x, w, bias, dy) = (x.clone(), w.clone(), bias.clone(), dy.clone());
                            let mut y = vec![0.0f32; n_out];
                            let mut dx = vec![0.0f32; n_in];
                            let (mut dw, mut db) = (vec![0.0f32; s.weight_len()], vec![0.0f32; s.c_out]);
                            let mut scratch = vec![0.0f32; s.scratch_len(CHUNK)];
                            // without AVX-512 both columns run im2col
                            let path = if path.runs(&s) { path } else { ConvPath::Im2col };
                            jobs.push(Job::new(move |iters| {
                                for _ in 0..iters {
                                    if pass == "forward" {
                                        conv2d_forward_via(
                                            path,
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
                                        conv2d_backward_via(
                                            path,
                                            &s,
                                            CHUNK,
                                            &x,
                                            &w,
                                            &dy,
                                            dx,
                                            &mut dw,
                                            Some(&mut db),
                                            &mut scratch,
                                            false,
                                        );
                                    }
                                    black_box((&y, &dw));
                                }
                            }));
                        }
                        pairs.push(Pair { layer: name.clone(), op: describe(node), pass, flops: Some(f) });
                    }
                }
                Op::MaxPool(s) if (s.size, s.stride) == (3, 2) => {
                    for portable in [true, false] {
                        let x = x.clone();
                        let (mut y, mut arg) = (vec![0.0f32; n_out], vec![0u32; n_out]);
                        jobs.push(Job::new(move |iters| {
                            for _ in 0..iters {
                                if portable {
                                    maxpool_forward_portable(&s, CHUNK, &x, &mut y, &mut arg);
                                } else {
                                    maxpool_forward(&s, CHUNK, &x, &mut y, &mut arg);
                                }
                                black_box((&y, &arg));
                            }
                        }));
                    }
                    pairs.push(Pair { layer: name, op: describe(node), pass: "forward", flops: None });
                }
                // the first dense layer of the head: the others are tiny
                Op::Dense(s) if !seen_dense => {
                    seen_dense = true;
                    let w = random(&mut rng, s.weight_len());
                    let bias = random(&mut rng, s.outputs);
                    for pass in ["forward", "backward"] {
                        for portable in [true, false] {
                            let (x, w, bias, dy) = (x.clone(), w.clone(), bias.clone(), dy.clone());
                            let (mut y, mut dx) = (vec![0.0f32; n_out], vec![0.0f32; n_in]);
                            let (mut dw, mut db) = (vec![0.0f32; s.weight_len()], vec![0.0f32; s.outputs]);
                            jobs.push(Job::new(move |iters| {
                                for _ in 0..iters {
                                    let b = Some(&bias[..]);
                                    let (fwd, bwd) = if portable {
                                        (
                                            dense_forward_portable as DenseForward,
                                            dense_backward_portable as DenseBackward,
                                        )
                                    } else {
                                        (dense_forward as DenseForward, dense_backward as DenseBackward)
                                    };
                                    if pass == "forward" {
                                        fwd(&s, CHUNK, &x, &w, b, &mut y);
                                    } else {
                                        bwd(
                                            &s,
                                            CHUNK,
                                            &x,
                                            &w,
                                            &dy,
                                            Some(&mut dx),
                                            &mut dw,
                                            Some(&mut db),
                                            false,
                                        );
                                    }
                                    black_box((&y, &dx, &dw));
                                }
                            }));
                        }
                        pairs.push(Pair { layer: name.clone(), op: describe(node), pass, flops: None });
                    }
                }
                _ => {}
            }
        }
    }
    eprintln!("kernels: {} measurements x {} rounds", jobs.len(), cfg.rounds);
    run(&mut jobs, &cfg);

    let ceiling: Vec<f64> = jobs[0].secs.iter().map(|s| 2.0 * 512f64.powi(3) / s / 1e9).collect();
    let fast = kernel::simd::avx512();
    println!("## AVX-512 kernels against the portable ones\n");
    println!(
        "{}, 1 thread, one lane's chunk of {CHUNK} images per call; the median of {} interleaved \
         rounds, `±` half the interquartile range; speedups and % of the SGEMM ceiling taken within \
         each round. SGEMM ceiling (single-threaded 512^3 `sgemm`): {:.1} GFLOP/s.{}\n",
        cpu_name(),
        cfg.rounds,
        median(&ceiling),
        if fast { "" } else { " **This CPU has no AVX-512: both columns ran the portable code.**" }
    );
    println!("| layer | op | pass | portable µs | AVX-512 µs | speedup | portable % of ceiling | AVX-512 % of ceiling |");
    println!("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |");
    for (i, p) in pairs.iter().enumerate() {
        let (slow, fast) = (&jobs[1 + 2 * i].secs, &jobs[2 + 2 * i].secs);
        let speedup: Vec<f64> = slow.iter().zip(fast).map(|(s, f)| s / f).collect();
        let pct = |t: &[f64]| -> String {
            p.flops.map_or(String::new(), |fl| {
                let v: Vec<f64> = t.iter().zip(&ceiling).map(|(s, c)| fl / s / 1e9 / c * 100.0).collect();
                format!("{:.0}%", median(&v))
            })
        };
        let (es, ef) = (est(slow), est(fast));
        println!(
            "| {} | {} | {} | {:.1} ±{:.0}% | {:.1} ±{:.0}% | {:.2}x | {} | {} |",
            p.layer,
            p.op,
            p.pass,
            es.median * 1e6,
            es.spread * 100.0,
            ef.median * 1e6,
            ef.spread * 100.0,
            median(&speedup),
            pct(slow),
            pct(fast)
        );
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
