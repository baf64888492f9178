//! The observed step is the plain step with a clock: same bits, and every
//! node of every chunk of every lane reported once per pass.

mod common;

use std::sync::Mutex;

use common::random_batch;
use graph::{lane_range, preset, Event, Init, Loss, Observer, Phase, Plan, Reduction, Shape, LANES};

#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<Event>>,
    reduced: Mutex<usize>,
}

impl Observer for Recorder {
    fn node(&self, event: Event) {
        self.events.lock().unwrap().push(event);
    }
    fn reduced(&self, _nanos: u64) {
        *self.reduced.lock().unwrap() += 1;
    }
}

fn check(name: &str, batch: usize, n: usize, loss: Loss, red: Reduction) {
    let new = || {
        let mut plan = Plan::new(&preset(name).unwrap(), Shape::new(3, 32, 32), batch).unwrap();
        plan.initialize(Init::He, 3);
        plan
    };
    let (mut plain, mut watched) = (new(), new());
    let (x, y) = random_batch(&plain, n, 5);
    let rec = Recorder::default();
    for _ in 0..2 {
        let a = plain.forward_backward(&x, &y, loss, red);
        let b = watched.forward_backward_observed(&x, &y, loss, red, &rec);
        assert_eq!((a.loss.to_bits(), a.correct), (b.loss.to_bits(), b.correct), "{name}: loss differs");
        let same = plain.grads().iter().zip(watched.grads()).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{name}: observing the step changed its gradients");
    }
    let mut logits = (vec![0.0; n * plain.classes()], vec![0.0; n * plain.classes()]);
    plain.predict(&x, &mut logits.0);
    watched.predict(&x, &mut logits.1);
    assert!(logits.0 == logits.1);

    // Per lane, node (the loss last) and pass: every image once per step.
    let events = rec.events.into_inner().unwrap();
    let nodes = plain.nodes().len();
    let lanes = LANES.min(batch);
    for lane in 0..lanes {
        let images = lane_range(n, lanes, lane).len();
        for node in 0..=nodes {
            for phase in [Phase::Forward, Phase::Backward] {
                let seen: usize = events
                    .iter()
                    .filter(|e| (e.lane, e.node, e.phase) == (lane, node, phase))
                    .map(|e| e.images)
                    .sum();
                assert_eq!(seen, 2 * images, "{name}: lane {lane} node {node} {phase:?}");
            }
        }
    }
    assert!(events.iter().all(|e| e.lane < lanes && e.node <= nodes));
    assert_eq!(rec.reduced.into_inner().unwrap(), 2);
}

#[test]
fn observing_a_step_changes_no_bit() {
    // 37 images over 8 lanes (max batch 64): uneven lanes.
    check("seed-fc", 64, 37, Loss::CrossEntropy, Reduction::Mean);
    check("seed-gap", 64, 64, Loss::CrossEntropy, Reduction::Mean);
    // Lanes of 18 or 19 images in chunks of 8; the seed loss takes the
    // output layer's weight gradient from another delta.
    check("seed-gap", 200, 150, Loss::SeedSquaredError, Reduction::Sum);
    // Fewer images than lanes.
    check("seed-fc", 3, 3, Loss::CrossEntropy, Reduction::Mean);
}
