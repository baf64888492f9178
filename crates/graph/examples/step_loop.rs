//! Runs training steps of a preset in a loop: a target for perf/callgrind.
//! `cargo run -p graph --release --example step_loop -- seed-fc 200`
use graph::{preset, Init, Loss, Plan, Reduction, Sgd, Shape};
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "seed-fc".into());
    let steps: usize = args.next().map_or(200, |s| s.parse().expect("steps must be a number"));
    let batch = 64;
    let mut plan = Plan::new(&preset(&name).expect("unknown preset"), Shape::new(3, 32, 32), batch).unwrap();
    plan.initialize(Init::He, 1);
    let x: Vec<f32> = (0..batch * 3072).map(|i| (i * 7919 % 1000) as f32 / 1000.0).collect();
    let y: Vec<u32> = (0..batch as u32).map(|i| i % 2).collect();
    let sgd = Sgd { lr: 0.01, momentum: 0.9, weight_decay: 5e-4, clip_dense: false };
    let t = Instant::now();
    for _ in 0..steps {
        plan.train_step(&x, &y, Loss::CrossEntropy, Reduction::Mean, &sgd);
    }
    let secs = t.elapsed().as_secs_f64();
    println!("{name}: {:.0} images/s", (steps * batch) as f64 / secs);
}
