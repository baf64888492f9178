//! `trainer prune`: remove planes of the last convolution by hand, the
//! episode's closing wish, and see what it does to the test accuracy.
//!
//! Zeroing plane `p` before the head is the same as zeroing the columns of
//! the first dense layer that read it (`graph::probe::zero_planes`), so a
//! pruned model is an ordinary checkpoint: `--out` saves it and `eval`
//! reads it. `--scan` removes each plane in turn, alone.

use std::fmt::Write as _;

use anyhow::{anyhow, bail, Context, Result};
use graph::{argmax, probe, Arena, Head};
use rayon::prelude::*;

use crate::commands::eval::{self, Loaded};
use crate::config::flags::PruneArgs;

pub fn run(args: &PruneArgs) -> Result<()> {
    // Before the work: `--out` may only replace a regular file.
    if let Some(out) = &args.out {
        graph::bounded::check_output(out).map_err(|e| anyhow!("--out {}: {e}", out.display()))?;
    }
    let mut loaded = eval::load(&args.model)?;
    let head = probe::head(&loaded.plan).map_err(|e| anyhow!("{}: {e}", loaded.file))?;
    match &args.planes {
        Some(text) => {
            let planes = parse_planes(text, &loaded, &head)?;
            prune(&mut loaded, &head, &planes, args)
        }
        None => scan(&mut loaded, &head),
    }
}

/// `3,7` as sorted, distinct plane numbers that the model has.
fn parse_planes(text: &str, loaded: &Loaded, head: &Head) -> Result<Vec<usize>> {
    let mut planes = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let p: usize = item
            .parse()
            .map_err(|_| anyhow!("--planes {text}: {item:?} is not a plane number (planes count from 0)"))?;
        if p >= head.planes {
            bail!(
                "--planes {text}: plane {p} does not exist; model {} has planes 0..={} (the {} planes of {} that \
                 feed its head)",
                loaded.plan.spec().name,
                head.planes - 1,
                head.planes,
                loaded.plan.nodes()[head.feature].name
            );
        }
        planes.push(p);
    }
    if planes.is_empty() {
        bail!("--planes {text:?}: name at least one plane, e.g. --planes 3,7");
    }
    planes.sort_unstable();
    planes.dedup();
    Ok(planes)
}

fn accuracy(correct: usize, n: usize) -> String {
    format!("{:.4} ({correct}/{n})", correct as f64 / n as f64)
}

fn prune(loaded: &mut Loaded, head: &Head, planes: &[usize], args: &PruneArgs) -> Result<()> {
    let before = loaded.predict_all();
    probe::zero_planes(&mut loaded.plan, head, planes)?;
    let after = loaded.predict_all();
    let (k, n) = (loaded.classes.len(), loaded.test.len());
    let (feature, dense) = (&loaded.plan.nodes()[head.feature].name, &loaded.plan.nodes()[head.dense].name);
    let list = planes.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ");
    let (planes_word, their) = if planes.len() == 1 { ("plane", "its") } else { ("planes", "their") };
    println!(
        "{} ({}): pruned {planes_word} {list} of {feature} ({their} {dense} columns set to zero)",
        loaded.file,
        loaded.plan.spec().name
    );
    let (c0, c1) = (loaded.correct(&before), loaded.correct(&after));
    println!(
        "test accuracy before {}, after {}, change {:+.4}",
        accuracy(c0, n),
        accuracy(c1, n),
        (c1 as f64 - c0 as f64) / n as f64
    );
    let changed: Vec<(usize, usize, usize)> = before
        .chunks_exact(k)
        .zip(after.chunks_exact(k))
        .enumerate()
        .map(|(i, (b, a))| (i, argmax(b), argmax(a)))
        .filter(|(_, b, a)| b != a)
        .collect();
    let labels = &loaded.test.labels;
    let fixed = changed.iter().filter(|&&(i, _, a)| a == labels[i] as usize).count();
    let broken = changed.iter().filter(|&&(i, b, _)| b == labels[i] as usize).count();
    let noun = if changed.len() == 1 { "prediction" } else { "predictions" };
    println!("{} {noun} changed ({fixed} fixed, {broken} broken):", changed.len());
    let name = |c: usize| loaded.classes[c].as_str();
    for &(i, b, a) in &changed {
        let y = labels[i] as usize;
        let verdict = if a == y {
            ", fixed"
        } else if b == y {
            ", broken"
        } else {
            ""
        };
        println!("  image {i:>5}: {} -> {} (true {}{verdict})", name(b), name(a), name(y));
    }
    if let Some(out) = &args.out {
        let mut meta = loaded.meta.clone();
        // A pruned model pruned again records every plane it has lost.
        let mut all: Vec<usize> =
            meta.get(PRUNED).and_then(|v| serde_json::from_str(v).ok()).unwrap_or_default();
        all.extend(planes);
        all.sort_unstable();
        all.dedup();
        meta.insert(PRUNED.to_string(), serde_json::to_string(&all)?);
        let bytes = loaded.plan.to_safetensors(&[Arena::Params], meta);
        crate::fsops::write_atomic(out, &bytes)
            .with_context(|| format!("--out {}: cannot write the pruned checkpoint", out.display()))?;
        println!("wrote {} (trainer eval --checkpoint {} reads it)", out.display(), out.display());
    }
    Ok(())
}

/// Header entry of a pruned checkpoint: the planes zeroed, as JSON.
const PRUNED: &str = "pruned_planes";

/// One row of the scan: plane, correct images without it, fixed, broken.
struct Ablation {
    plane: usize,
    correct: usize,
    fixed: usize,
    broken: usize,
}

/// Remove each plane alone and replay the head on the test split's
/// planes, computed once. (The trunk does not change, so only the head
/// runs again; the logits agree with `prune --planes P` up to summation
/// order.)
fn scan(loaded: &mut Loaded, head: &Head) -> Result<()> {
    let (n, planes, len) = (loaded.test.len(), head.planes, head.plane_len);
    let all: Vec<usize> = (0..n).collect();
    let features: Vec<f32> = all
        .par_chunks(100)
        .map(|idx| probe::forward(&loaded.plan, &loaded.inputs(idx)).output(head.feature).to_vec())
        .flatten_iter()
        .collect();
    let labels = &loaded.test.labels;
    let k = loaded.classes.len();
    let predictions = |plan: &graph::Plan| -> Vec<usize> {
        probe::forward_from(plan, head.feature, &features).logits().chunks_exact(k).map(argmax).collect()
    };
    let base = predictions(&loaded.plan);
    let correct = |pred: &[usize]| pred.iter().zip(labels).filter(|(p, &y)| **p == y as usize).count();
    let c0 = correct(&base);
    let original = loaded.plan.params().to_vec();
    let mut rows = Vec::with_capacity(planes);
    for plane in 0..planes {
        probe::zero_planes(&mut loaded.plan, head, &[plane])?;
        let pred = predictions(&loaded.plan);
        loaded.plan.params_mut().copy_from_slice(&original);
        let changed = || (0..n).filter(|&i| pred[i] != base[i]);
        let fixed = changed().filter(|&i| pred[i] == labels[i] as usize).count();
        let broken = changed().filter(|&i| base[i] == labels[i] as usize).count();
        rows.push(Ablation { plane, correct: correct(&pred), fixed, broken });
    }
    rows.sort_by(|a, b| b.correct.cmp(&a.correct).then(a.plane.cmp(&b.plane)));

    let mean_act = mean_activations(&features, planes, len);
    report_scan(loaded, head, &rows, c0, &mean_act);
    Ok(())
}

/// Each plane's mean activation over the `features` of every image.
fn mean_activations(features: &[f32], planes: usize, len: usize) -> Vec<f64> {
    let n = features.len() / (planes * len);
    (0..planes)
        .map(|p| {
            let sum: f64 = features
                .chunks_exact(len)
                .skip(p)
                .step_by(planes)
                .map(|v| v.iter().sum::<f32>() as f64)
                .sum();
            sum / (n * len) as f64
        })
        .collect()
}

/// The scan's table, best removal first, and what to do with the best.
fn report_scan(loaded: &Loaded, head: &Head, rows: &[Ablation], c0: usize, mean_act: &[f64]) {
    let (n, planes) = (loaded.test.len(), head.planes);
    let node = &loaded.plan.nodes()[head.feature];
    println!(
        "{} ({}): each of the {planes} planes of {} removed alone; test accuracy with all of them {}",
        loaded.file,
        loaded.plan.spec().name,
        node.name,
        accuracy(c0, n)
    );
    let mut t = String::from(
        "\n| plane | test accuracy without it | change | fixed | broken | mean activation |\n\
         | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for r in rows {
        let _ = writeln!(
            t,
            "| {} | {} | {:+.4} | {} | {} | {:.4} |",
            r.plane,
            accuracy(r.correct, n),
            (r.correct as f64 - c0 as f64) / n as f64,
            r.fixed,
            r.broken,
            mean_act[r.plane]
        );
    }
    print!("{t}");
    let best = &rows[0];
    let gain = (best.correct as f64 - c0 as f64) / n as f64;
    if gain > 0.0 {
        println!(
            "\nremoving plane {} alone raises the test accuracy most ({gain:+.4}); to keep that model: \
             trainer prune --checkpoint {} --planes {} --out pruned.safetensors",
            best.plane, loaded.file, best.plane
        );
    } else {
        println!(
            "\nno single plane's removal raises the test accuracy (the least harmful: plane {}, {gain:+.4})",
            best.plane
        );
    }
}
