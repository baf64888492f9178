//! Whole-network speed of `seed-fc` and `seed-gap`, and the SGEMM ceiling
//! measured in the same run.
//!
//! - `ceiling/sgemm_512`: single-threaded 512x512x512 `sgemm` products
//!   running on every rayon thread at once (the way the engine calls SGEMM:
//!   one product per thread, never a threaded product). Throughput in flops,
//!   so criterion's elem/s reads as FLOP/s.
//! - `train/<preset>/<batch>`: one training step (`Plan::train_step`:
//!   forward, softmax-CE, backward, gradient reduction, SGD with momentum)
//!   at batch 64 and 256; throughput in images.
//! - `infer/<preset>/<batch>`: forward only (`Plan::predict`), images.
//! - `threads/<preset>/<n>`: the batch-64 training step in a rayon pool of
//!   1 thread and of all threads: the scaling.
//!
//! Useful FLOPs of a training step = 3 x 2 x forward multiply-adds per image
//! (`Plan::forward_macs`): ~11.2 MFLOP for seed-fc, ~10.2 for seed-gap.
//! `cargo bench --bench summary` measures the same, interleaved round by
//! round so the comparisons survive a drifting machine, into one table.

mod common;

use std::hint::black_box;
use std::time::Duration;

use common::{batch, plan, Ceiling, LOSS, PRESETS, REDUCTION, SGD};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn ceiling(c: &mut Criterion) {
    let ceiling = Ceiling::new();
    let mut group = c.benchmark_group("ceiling");
    group.throughput(Throughput::Elements(ceiling.flops()));
    let id = format!("sgemm_512_x{}_threads", rayon::current_num_threads());
    group.bench_function(id, |bench| bench.iter(|| ceiling.run()));
    group.finish();
}

fn train(c: &mut Criterion) {
    let mut group = c.benchmark_group("train");
    for name in PRESETS {
        for n in [64, 256] {
            let mut plan = plan(name, n);
            let (x, y) = batch(n);
            group.throughput(Throughput::Elements(n as u64));
            group.bench_function(BenchmarkId::new(name, n), |bench| {
                bench.iter(|| black_box(plan.train_step(&x, &y, LOSS, REDUCTION, &SGD)))
            });
        }
    }
    group.finish();
}

fn infer(c: &mut Criterion) {
    let mut group = c.benchmark_group("infer");
    for name in PRESETS {
        for n in [64, 256] {
            let mut plan = plan(name, n);
            let (x, _) = batch(n);
            let mut logits = vec![0.0; n * plan.classes()];
            group.throughput(Throughput::Elements(n as u64));
            group.bench_function(BenchmarkId::new(name, n), |bench| {
                bench.iter(|| plan.predict(&x, black_box(&mut logits)))
            });
        }
    }
    group.finish();
}

fn threads(c: &mut Criterion) {
    let n = 64;
    let all = rayon::current_num_threads();
    let mut group = c.benchmark_group("threads");
    group.throughput(Throughput::Elements(n as u64));
    for name in PRESETS {
        let mut plan = plan(name, n);
        let (x, y) = batch(n);
        let mut counts = vec![1, all];
        counts.dedup();
        for t in counts {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build().expect("a rayon pool");
            group.bench_function(BenchmarkId::new(name, t), |bench| {
                bench.iter(|| pool.install(|| black_box(plan.train_step(&x, &y, LOSS, REDUCTION, &SGD))))
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = ceiling, train, infer, threads
}
criterion_main!(benches);
