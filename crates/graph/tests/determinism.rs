//! Same seed, same bits, whatever the number of threads.

mod common;

use common::{isas, random_batch};
use graph::{preset, Init, Isa, Loss, Plan, Reduction, Sgd, Shape};

#[allow(clippy::too_many_arguments)]
fn train(
    isa: Isa,
    threads: usize,
    name: &str,
    batch: usize,
    loss: Loss,
    red: Reduction,
    sgd: Sgd,
) -> (Vec<u32>, Vec<u64>) {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    pool.install(|| {
        let mut plan = Plan::for_isa(&preset(name).unwrap(), Shape::new(3, 32, 32), batch, isa).unwrap();
        plan.initialize(Init::He, 7);
        let mut losses = Vec::new();
        for step in 0..3 {
            let (x, y) = random_batch(&plan, batch, step);
            losses.push(plan.train_step(&x, &y, loss, red, &sgd).loss.to_bits());
        }
        // The parameters, then the batch norms' running statistics.
        let running = plan.running().iter().map(|v| v.to_bits());
        (plan.params().iter().map(|v| v.to_bits()).chain(running).collect(), losses)
    })
}

fn check(name: &str, batch: usize, loss: Loss, red: Reduction, sgd: Sgd) {
    for isa in isas(name) {
        let one = train(isa, 1, name, batch, loss, red, sgd);
        for threads in [2, 3] {
            let many = train(isa, threads, name, batch, loss, red, sgd);
            assert!(one.1 == many.1, "{name} {isa}: losses differ between 1 and {threads} threads");
            let differ = one.0.iter().zip(&many.0).filter(|(a, b)| a != b).count();
            assert_eq!(differ, 0, "{name} {isa}: {differ} parameters differ between 1 and {threads} threads");
        }
        // Guard against a vacuous pass: training must have moved the weights.
        let mut fresh = Plan::for_isa(&preset(name).unwrap(), Shape::new(3, 32, 32), batch, isa).unwrap();
        fresh.initialize(Init::He, 7);
        let moved = fresh.params().iter().zip(&one.0).any(|(a, b)| a.to_bits() != *b);
        assert!(moved, "{name} {isa}: parameters never changed");
    }
}

#[test]
fn seed_fc_modern_batch_64() {
    check(
        "seed-fc",
        64,
        Loss::CrossEntropy,
        Reduction::Mean,
        Sgd { lr: 0.01, momentum: 0.9, weight_decay: 5e-4, clip_dense: false },
    );
}

#[test]
fn seed_gap_seed_recipe_batch_200() {
    check("seed-gap", 200, Loss::SeedSquaredError, Reduction::Sum, Sgd::seed(0.01));
}

#[test]
fn seed_fc_seed_recipe_batch_200() {
    check("seed-fc", 200, Loss::SeedSquaredError, Reduction::Sum, Sgd::seed(0.01));
}

/// Batch norm: every lane's sums meet in lane order, so the statistics,
/// and with them everything after, do not depend on the threads. 20 images
/// fill the 8 lanes unevenly.
#[test]
fn deep_gap_modern_batch_20() {
    check(
        "deep-gap",
        20,
        Loss::CrossEntropy,
        Reduction::Mean,
        Sgd { lr: 0.05, momentum: 0.9, weight_decay: 5e-4, clip_dense: false },
    );
}
