//! A step computed in shares (runs of lanes, as the ranks of an MPI job
//! compute it) and summed along in lane order has the bits of one
//! process's `forward_backward`, for every split of the lanes.

mod common;

use common::{isas, random_batch};
use graph::{lanes_images, preset, Init, Loss, LossSums, Plan, Reduction, Shape, LANES};

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Splits of the 8 lanes into consecutive shares: 1, 2, 3 (uneven), 4 and 8 ranks.
fn shares(ranks: usize) -> Vec<std::ops::Range<usize>> {
    (0..ranks).map(|r| graph::lane_range(LANES, ranks, r)).collect()
}

fn check(name: &str, batch: usize, loss: Loss, red: Reduction, init: Init) {
    for isa in isas(name) {
        let new = || {
            let mut plan = Plan::for_isa(&preset(name).unwrap(), Shape::new(3, 32, 32), batch, isa).unwrap();
            plan.initialize(init, 11);
            plan
        };
        // a full batch, and a last batch with fewer images than lanes
        for n in [batch, 5] {
            let (x, y) = random_batch(&new(), n, 3);
            let mut whole = new();
            let want = whole.forward_backward(&x, &y, loss, red);
            for ranks in [1, 2, 3, 4, 8] {
                // One plan per rank; each sees only its own images (the rest NaN).
                let mut grads: Vec<f32> = Vec::new();
                let mut sums = LossSums::default();
                for (r, part) in shares(ranks).into_iter().enumerate() {
                    let mut plan = new();
                    let mine = lanes_images(n, plan.lane_count(), part.clone());
                    let per = x.len() / n;
                    let mut xs = vec![f32::NAN; x.len()];
                    let own = mine.start * per..mine.end * per;
                    xs[own.clone()].copy_from_slice(&x[own]);
                    let ran = plan.forward_backward_lanes(&xs, &y, loss, red, part);
                    if r > 0 {
                        plan.grads_mut().copy_from_slice(&grads);
                    }
                    plan.add_lanes(ran, r > 0, &mut sums);
                    grads = plan.grads().to_vec();
                }
                let what = format!("{name} {isa}: {n} images over {ranks} ranks");
                assert_eq!(bits(&grads), bits(whole.grads()), "{what}: gradients differ");
                assert_eq!(sums.loss.to_bits(), want.loss.to_bits(), "{what}: loss differs");
                assert_eq!(sums.seed_error.to_bits(), want.seed_error.to_bits(), "{what}");
                assert_eq!(sums.correct, want.correct, "{what}");
            }
            // Guard against a vacuous pass: the shares must matter. Summing
            // the two halves the other way round changes the bits.
            let (mut a, mut b) = (new(), new());
            let ran_b = b.forward_backward_lanes(&x, &y, loss, red, 4..8);
            let ran_a = a.forward_backward_lanes(&x, &y, loss, red, 0..4);
            let mut s = LossSums::default();
            b.add_lanes(ran_b, false, &mut s);
            a.grads_mut().copy_from_slice(b.grads());
            a.add_lanes(ran_a, true, &mut s);
            if n == batch {
                assert_ne!(bits(a.grads()), bits(whole.grads()), "{name} {isa}: order never mattered");
            }
        }
    }
}

#[test]
fn seed_fc_modern_in_shares() {
    check("seed-fc", 64, Loss::CrossEntropy, Reduction::Mean, Init::He);
}

#[test]
fn seed_gap_seed_recipe_in_shares() {
    check("seed-gap", 200, Loss::SeedSquaredError, Reduction::Sum, Init::Seed);
}
