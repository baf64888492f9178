//! A step computed in shares (runs of lanes, as the ranks of an MPI job
//! compute it) and summed along in lane order has the bits of one
//! process's `forward_backward`, for every split of the lanes.

mod common;

use common::{isas, random_batch};
use std::sync::mpsc::{channel, Receiver, Sender};

use graph::{lanes_images, preset, Alone, Init, Loss, LossSums, Meet, Plan, Reduction, Shape, LANES};

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Splits of the 8 lanes into consecutive shares: 1, 2, 3 (uneven), 4 and 8 ranks.
fn shares(ranks: usize) -> Vec<std::ops::Range<usize>> {
    (0..ranks).map(|r| graph::lane_range(LANES, ranks, r)).collect()
}

/// What one rank sees of a batch `x` of `n` images: its own images (those
/// of its lanes `part`), the rest NaN.
fn own_images(plan: &Plan, x: &[f32], n: usize, part: std::ops::Range<usize>) -> Vec<f32> {
    let mine = lanes_images(n, plan.lane_count(), part);
    let per = x.len() / n;
    let mut xs = vec![f32::NAN; x.len()];
    let own = mine.start * per..mine.end * per;
    xs[own.clone()].copy_from_slice(&x[own]);
    xs
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
                // One plan per rank; each sees only its own images.
                let mut grads: Vec<f32> = Vec::new();
                let mut sums = LossSums::default();
                for (r, part) in shares(ranks).into_iter().enumerate() {
                    let mut plan = new();
                    let xs = own_images(&plan, &x, n, part.clone());
                    let ran = plan.forward_backward_lanes(&xs, &y, loss, red, part, &Alone);
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
            let ran_b = b.forward_backward_lanes(&x, &y, loss, red, 4..8, &Alone);
            let ran_a = a.forward_backward_lanes(&x, &y, loss, red, 0..4, &Alone);
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

/// One rank's links to the others, as the trainer's MPI ranks are linked:
/// the sum passed along in rank order, then sent out by the last rank.
struct Link {
    prev: Option<Receiver<Vec<f64>>>,
    next: Option<Sender<Vec<f64>>>,
    from_last: Option<Receiver<Vec<f64>>>,
    to_all: Vec<Sender<Vec<f64>>>,
}

impl Meet for Link {
    fn before(&self, sums: &mut [f64]) -> bool {
        let Some(prev) = &self.prev else { return false };
        sums.copy_from_slice(&prev.recv().unwrap());
        true
    }
    fn after(&self, sums: &mut [f64]) {
        if let Some(next) = &self.next {
            next.send(sums.to_vec()).unwrap();
        }
        match &self.from_last {
            Some(rx) => sums.copy_from_slice(&rx.recv().unwrap()),
            None => self.to_all.iter().for_each(|tx| tx.send(sums.to_vec()).unwrap()),
        }
    }
}

fn links(ranks: usize) -> Vec<Link> {
    let mut links: Vec<Link> =
        (0..ranks).map(|_| Link { prev: None, next: None, from_last: None, to_all: Vec::new() }).collect();
    for r in 1..ranks {
        let (tx, rx) = channel();
        links[r - 1].next = Some(tx);
        links[r].prev = Some(rx);
        let (tx, rx) = channel();
        links[ranks - 1].to_all.push(tx);
        links[r - 1].from_last = Some(rx);
    }
    links
}

/// Batch norm: the ranks meet at every batch norm, forward and backward,
/// each rank a thread here. Gradients, loss and running statistics have the
/// bits of one process, for every split of the lanes.
#[test]
fn deep_gap_ranks_meet_at_every_batch_norm() {
    let (loss, red) = (Loss::CrossEntropy, Reduction::Mean);
    for isa in isas("deep_gap_ranks_meet_at_every_batch_norm") {
        let new = || {
            let mut plan =
                Plan::for_isa(&preset("deep-gap").unwrap(), Shape::new(3, 16, 16), 20, isa).unwrap();
            plan.initialize(Init::He, 11);
            plan
        };
        for n in [20, 5] {
            let (x, y) = random_batch(&new(), n, 3);
            let mut whole = new();
            let want = whole.forward_backward(&x, &y, loss, red);
            for ranks in [1, 2, 3, 4, 8] {
                let plans: Vec<(Plan, std::ops::Range<usize>)> = std::thread::scope(|s| {
                    let handles: Vec<_> = shares(ranks)
                        .into_iter()
                        .zip(links(ranks))
                        .map(|(part, link)| {
                            let (x, y) = (&x, &y);
                            s.spawn(move || {
                                let mut plan = new();
                                let xs = own_images(&plan, x, n, part.clone());
                                let ran = plan.forward_backward_lanes(&xs, y, loss, red, part, &link);
                                (plan, ran)
                            })
                        })
                        .collect();
                    handles.into_iter().map(|h| h.join().unwrap()).collect()
                });
                let mut grads: Vec<f32> = Vec::new();
                let mut sums = LossSums::default();
                for (r, (mut plan, ran)) in plans.into_iter().enumerate() {
                    let what = format!("deep-gap {isa}: {n} images, rank {r} of {ranks}");
                    assert_eq!(
                        bits(plan.running()),
                        bits(whole.running()),
                        "{what}: running statistics differ"
                    );
                    assert_eq!(plan.batches_tracked(), whole.batches_tracked(), "{what}");
                    if r > 0 {
                        plan.grads_mut().copy_from_slice(&grads);
                    }
                    plan.add_lanes(ran, r > 0, &mut sums);
                    grads = plan.grads().to_vec();
                }
                let what = format!("deep-gap {isa}: {n} images over {ranks} ranks");
                assert_eq!(bits(&grads), bits(whole.grads()), "{what}: gradients differ");
                assert_eq!(sums.loss.to_bits(), want.loss.to_bits(), "{what}: loss differs");
            }
        }
        // Guard: the running statistics moved, and the step was counted.
        assert_ne!(bits(new().running()), bits(whole_after_one_step(&new).running()));
    }
}

fn whole_after_one_step(new: &dyn Fn() -> Plan) -> Plan {
    let mut plan = new();
    let (x, y) = random_batch(&plan, 20, 3);
    plan.forward_backward(&x, &y, Loss::CrossEntropy, Reduction::Mean);
    assert_eq!(plan.batches_tracked().iter().map(|t| t.1).collect::<Vec<_>>(), vec![1; 5]);
    plan
}
