//! Is training healthy? Three checks the loop runs:
//!
//! - before every update: a non-finite loss or gradient (divergence);
//! - after each epoch: a training loss stuck at chance, `ln k` for `k`
//!   classes, for [`CHANCE_EPOCHS`] epochs in a row without falling (a dead
//!   network; the original engine's recipe climbs out of chance slowly, and
//!   a loss that is still falling is not called dead);
//! - on each epoch's first batch: a ReLU layer that output zero for every
//!   image (dead units, which pass no gradient back).
//!
//! And one before building a model: that it fits in memory.

use anyhow::{bail, Result};
use graph::{LossSums, ModelSpec, Plan, Shape};

use crate::run_folder::metrics::EpochRow;

/// What is not finite after `forward_backward`, if anything: the loss, or
/// the first gradient tensor holding a NaN or an infinity.
pub fn nonfinite(plan: &Plan, sums: &LossSums) -> Option<String> {
    if !sums.loss.is_finite() {
        return Some(format!("the loss is {}", sums.loss));
    }
    if !sums.cross_entropy.is_finite() {
        return Some(format!("the cross-entropy is {}", sums.cross_entropy));
    }
    let grads = plan.grads();
    let at = grads.iter().position(|g| !g.is_finite())?;
    let tensor = plan.tensors().iter().find(|t| t.range.contains(&at));
    Some(match tensor {
        Some(t) => format!("the gradient of {} holds {} (element {})", t.name, grads[at], at - t.range.start),
        None => format!("the gradient holds {} (element {at})", grads[at]),
    })
}

/// Epochs at chance in a row that make a run "not learning".
pub const CHANCE_EPOCHS: usize = 3;

/// Whether a mean cross-entropy is at chance for `k` classes: within 1% of `ln k`.
pub fn at_chance(train_ce: f64, k: usize) -> bool {
    let chance = (k as f64).ln();
    (train_ce - chance).abs() <= 0.01 * chance
}

/// How many of the last rows in a row are at chance.
pub fn chance_streak(rows: &[EpochRow], k: usize) -> usize {
    rows.iter().rev().take_while(|r| at_chance(r.train_ce, k)).count()
}

/// Whether the run has just become stuck: its last [`CHANCE_EPOCHS`] rows
/// (and not one more) are at chance, and the training loss fell by less
/// than 0.1% of `ln k` over them. True at most once per streak.
pub fn stuck_at_chance(rows: &[EpochRow], k: usize) -> bool {
    if chance_streak(rows, k) != CHANCE_EPOCHS {
        return false;
    }
    let streak = &rows[rows.len() - CHANCE_EPOCHS..];
    let fall = streak[0].train_ce - streak[CHANCE_EPOCHS - 1].train_ce;
    fall < 0.001 * (k as f64).ln()
}

/// The dead ReLU layers of the last forward pass, each with the weighted
/// layer that feeds it (a max pool the plan runs in between is skipped):
/// `relu4 (after fc1)`.
pub fn dead_relus(plan: &Plan) -> Vec<String> {
    let nodes = plan.nodes();
    plan.dead_relus()
        .into_iter()
        .map(|name| {
            let at = nodes.iter().position(|n| n.name == name).unwrap_or(0);
            match nodes[..at].iter().rev().find(|n| n.weight.is_some()) {
                Some(feed) => format!("{name} (after {})", feed.name),
                None => name.to_string(),
            }
        })
        .collect()
}

/// This machine's memory in bytes (Linux's `MemTotal`), if it can be read.
fn total_memory() -> Option<u128> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u128 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn gib(bytes: u128) -> String {
    if bytes >= 1 << 60 {
        "more than an exbibyte".to_string()
    } else {
        format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
    }
}

/// Refuse a model that would not fit in memory before `Plan::new` tries to
/// allocate it (a typo like `filters = 2000000`, or a corrupt checkpoint
/// header): `what` names the spec's source.
pub fn check_memory(spec: &ModelSpec, input: Shape, batch: usize, what: &str) -> Result<()> {
    let need = graph::footprint_bytes(spec, input, batch);
    // Without /proc/meminfo, allow up to 64 GiB.
    let have = total_memory().unwrap_or(64 << 30);
    if need > have {
        bail!(
            "{what}: needs {} of memory for {input} images, more than this machine's {}; \
             use fewer filters or units",
            gib(need),
            gib(have)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use graph::{preset, LayerSpec, Loss, Reduction};

    fn row(epoch: usize, train_ce: f64) -> EpochRow {
        EpochRow {
            epoch,
            lr: 0.1,
            train_ce,
            train_seed_error: 0.5,
            train_acc: 0.5,
            test_ce: 0.7,
            test_acc: 0.5,
            seconds: 1.0,
            images_per_s: 1.0,
            sample_seed_error: 0.5,
        }
    }

    #[test]
    fn chance_is_within_one_percent_of_ln_k() {
        let ln2 = 2f64.ln();
        assert!(at_chance(ln2, 2) && at_chance(ln2 * 1.009, 2) && at_chance(ln2 * 0.991, 2));
        assert!(!at_chance(ln2 * 1.02, 2) && !at_chance(0.5, 2));
        assert!(at_chance(10f64.ln(), 10) && !at_chance(ln2, 10));
        let rows = [row(1, 0.5), row(2, ln2), row(3, 0.6935), row(4, 0.6929)];
        assert_eq!(chance_streak(&rows, 2), 3);
        assert_eq!(chance_streak(&rows[..1], 2), 0);
        assert_eq!(chance_streak(&[], 2), 0);
        // At chance but still falling (the seed recipe's slow start): not stuck.
        assert!(stuck_at_chance(&rows, 2));
        let falling = [row(1, ln2), row(2, ln2 - 0.0001), row(3, ln2 - 0.0013)];
        assert_eq!(chance_streak(&falling, 2), 3);
        assert!(!stuck_at_chance(&falling, 2));
        assert!(!stuck_at_chance(&rows[..3], 2));
    }

    #[test]
    fn a_nan_anywhere_is_caught_before_the_update_and_named() {
        let mut plan = Plan::new(&preset("seed-gap").unwrap(), Shape::new(3, 8, 8), 4).unwrap();
        let x = vec![0.5f32; 4 * 192];
        let y = [0, 1, 0, 1];
        let sums = plan.forward_backward(&x, &y, Loss::CrossEntropy, Reduction::Mean);
        assert_eq!(nonfinite(&plan, &sums), None);
        // One NaN pixel: max pooling drops it on the way forward, so the loss
        // is finite, but conv1's weight gradient is not.
        let mut bad = x.clone();
        bad[7] = f32::NAN;
        let sums = plan.forward_backward(&bad, &y, Loss::CrossEntropy, Reduction::Mean);
        assert!(sums.loss.is_finite());
        let what = nonfinite(&plan, &sums).unwrap();
        assert!(what.starts_with("the gradient of conv1.weight holds NaN"), "{what}");
        // An infinite weight: the loss itself is not finite.
        let fc1 = plan.tensors().iter().find(|t| t.name == "fc1.weight").unwrap().range.clone();
        plan.params_mut()[fc1.start + 3] = f32::INFINITY;
        let sums = plan.forward_backward(&x, &y, Loss::CrossEntropy, Reduction::Mean);
        let what = nonfinite(&plan, &sums).unwrap();
        assert!(what.starts_with("the loss is "), "{what}");
    }

    #[test]
    fn dead_relus_name_the_layer_that_feeds_them() {
        let mut plan = Plan::new(&preset("seed-fc20").unwrap(), Shape::new(3, 8, 8), 8).unwrap();
        let fc1 = plan.tensors().iter().find(|t| t.name == "fc1.bias").unwrap().range.clone();
        let w = plan.tensors().iter().find(|t| t.name == "fc1.weight").unwrap().range.clone();
        plan.params_mut()[w].fill(0.0);
        plan.params_mut()[fc1].fill(-1.0);
        let x = vec![0.5f32; 8 * 192];
        plan.evaluate(&x, &[0, 1, 0, 1, 0, 1, 0, 1], Loss::CrossEntropy);
        assert_eq!(dead_relus(&plan), ["relu4 (after fc1)"]);
    }

    #[test]
    fn an_absurd_model_is_refused_before_allocating() {
        let spec = ModelSpec {
            name: "huge".into(),
            layers: vec![
                LayerSpec::Conv { filters: 2_000_000, size: 3, stride: 1, pad: 1, bias: true },
                LayerSpec::GlobalAvgPool,
                LayerSpec::Dense { units: 2, bias: true },
            ],
        };
        let e = check_memory(&spec, Shape::new(3, 32, 32), 64, "huge.toml").unwrap_err().to_string();
        assert!(e.starts_with("huge.toml: needs ") && e.contains("GiB of memory for 3x32x32 images"), "{e}");
        check_memory(&preset("wide-gap").unwrap(), Shape::new(3, 32, 32), 64, "x").unwrap();
    }
}
