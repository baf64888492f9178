//! One training step (forward + backward + SGD) of `seed-fc` and `seed-gap`
//! at batch 64, and the SGEMM ceiling measured in the same run.
//!
//! The ceiling is what the engine could reach if every flop ran at
//! matrixmultiply's best speed: single-threaded 512x512x512 `sgemm`
//! products running on every rayon thread at once (the way the engine
//! calls SGEMM: one product per thread, never a threaded product).
//! Criterion reports it as elements/s where one element is one flop.
//!
//! Useful step FLOPs per image = 3 x 2 x forward multiply-adds (forward,
//! input gradient, weight gradient), e.g. ~11.2 MFLOP for seed-fc.

use std::hint::black_box;
use std::sync::Mutex;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use graph::{preset, Init, Loss, Plan, Reduction, Sgd, Shape};
use kernel::gemm::{sgemm, Mat};

const N: usize = 512;

fn sgemm_ceiling(c: &mut Criterion) {
    let threads = rayon::current_num_threads();
    let a: Vec<f32> = (0..N * N).map(|i| (i % 7) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..N * N).map(|i| (i % 5) as f32 * 0.1).collect();
    let outs: Vec<Mutex<Vec<f32>>> = (0..threads).map(|_| Mutex::new(vec![0.0; N * N])).collect();
    let mut group = c.benchmark_group("ceiling");
    group.throughput(Throughput::Elements((2 * N * N * N * threads) as u64));
    group.bench_function(format!("sgemm_512_x{threads}_threads_flops"), |bench| {
        bench.iter(|| {
            rayon::broadcast(|ctx| {
                let mut out = outs[ctx.index()].lock().unwrap();
                sgemm(1.0, Mat::rows(&a, N, N), Mat::rows(&b, N, N), 0.0, &mut out);
            })
        })
    });
    group.finish();
}

fn train_step(c: &mut Criterion) {
    let batch = 64;
    let mut group = c.benchmark_group("train_step_batch64");
    group.throughput(Throughput::Elements(batch as u64));
    for name in ["seed-fc", "seed-gap"] {
        let mut plan = Plan::new(&preset(name).unwrap(), Shape::new(3, 32, 32), batch).unwrap();
        plan.initialize(Init::He, 1);
        let x: Vec<f32> = (0..batch * 3072).map(|i| (i * 7919 % 1000) as f32 / 1000.0).collect();
        let y: Vec<u32> = (0..batch as u32).map(|i| i % 2).collect();
        let sgd = Sgd { lr: 0.01, momentum: 0.9, weight_decay: 5e-4 };
        let flops = 6 * plan.forward_macs();
        eprintln!("{name}: {:.2} MFLOP per image per training step", flops as f64 / 1e6);
        group.bench_function(format!("{name}_images"), |bench| {
            bench.iter(|| black_box(plan.train_step(&x, &y, Loss::CrossEntropy, Reduction::Mean, &sgd)))
        });
    }
    group.finish();
}

criterion_group!(benches, sgemm_ceiling, train_step);
criterion_main!(benches);
