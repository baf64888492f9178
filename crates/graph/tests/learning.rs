//! The engine learns: a small synthetic two-class image set (horizontal vs
//! vertical bars in noise) is separated almost perfectly.

use graph::{preset, Init, Isa, Loss, Plan, Reduction, Sgd, Shape};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SIDE: usize = 16;

/// `n` images 3x16x16: class 0 has a bright horizontal bar, class 1 a
/// vertical one, at a random position, over uniform noise.
fn bars(n: usize, seed: u64) -> (Vec<f32>, Vec<u32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut x = Vec::with_capacity(n * 3 * SIDE * SIDE);
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        let label = (i % 2) as u32;
        let at = rng.random_range(2..SIDE - 2);
        for _c in 0..3 {
            for r in 0..SIDE {
                for col in 0..SIDE {
                    let on = if label == 0 { r == at } else { col == at };
                    let noise: f32 = rng.random_range(0.0..0.6);
                    x.push(if on { 0.4 + noise } else { noise });
                }
            }
        }
        y.push(label);
    }
    (x, y)
}

fn accuracy(plan: &mut Plan, x: &[f32], y: &[u32]) -> f64 {
    let per = 3 * SIDE * SIDE;
    let mut correct = 0;
    for (xs, ys) in x.chunks(per * 20).zip(y.chunks(20)) {
        correct += plan.evaluate(xs, ys, Loss::CrossEntropy).correct;
    }
    correct as f64 / y.len() as f64
}

#[test]
fn seed_gap_separates_bars() {
    let (train_x, train_y) = bars(400, 1);
    let (test_x, test_y) = bars(200, 2);
    for isa in Isa::tested() {
        let mut plan =
            Plan::for_isa(&preset("seed-gap").unwrap(), Shape::new(3, SIDE, SIDE), 20, isa).unwrap();
        plan.initialize(Init::He, 3);
        let sgd = Sgd { lr: 0.05, momentum: 0.9, weight_decay: 0.0, clip_dense: false };
        let per = 3 * SIDE * SIDE;
        let mut first = None;
        let mut last = 0.0;
        for _epoch in 0..15 {
            let mut total = 0.0;
            for (xs, ys) in train_x.chunks(per * 20).zip(train_y.chunks(20)) {
                total += plan.train_step(xs, ys, Loss::CrossEntropy, Reduction::Mean, &sgd).loss;
            }
            last = total / train_y.len() as f64;
            first.get_or_insert(last);
        }
        let first = first.unwrap();
        let acc = accuracy(&mut plan, &test_x, &test_y);
        println!("{isa}: loss {first:.4} -> {last:.4}, test accuracy {acc:.3}");
        assert!(last < 0.25 * first, "{isa}: loss fell only from {first} to {last}");
        assert!(acc > 0.95, "{isa}: test accuracy {acc}");
    }
}
