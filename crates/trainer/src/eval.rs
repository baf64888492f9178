//! `trainer eval`: a checkpoint on the test split: accuracy, per-class
//! accuracy and the confusion matrix.

use anyhow::{bail, Context, Result};
use graph::{argmax, read_model, Arena, Plan, Shape};

use crate::augment::fill_batch;
use crate::cli::EvalArgs;
use crate::data::{self, Normalizer};
use crate::health::check_memory;

fn meta_json<T: serde::de::DeserializeOwned>(meta: &graph::Metadata, key: &str, file: &str) -> Result<T> {
    let text = meta
        .get(key)
        .with_context(|| format!("{file}: the header has no {key:?} (not a trainer checkpoint?)"))?;
    serde_json::from_str(text).with_context(|| format!("{file}: unreadable {key:?} in the header"))
}

pub fn run(args: &EvalArgs) -> Result<()> {
    let file = args.checkpoint.display().to_string();
    let bytes =
        std::fs::read(&args.checkpoint).with_context(|| format!("{file}: cannot read the checkpoint"))?;
    let (spec, input, meta) = read_model(&bytes, &file)?;
    let classes: Vec<String> = meta_json(&meta, "classes", &file)?;
    let norm =
        Normalizer { mean: meta_json(&meta, "norm_mean", &file)?, std: meta_json(&meta, "norm_std", &file)? };
    if norm.mean.len() != input.c
        || norm.std.len() != input.c
        || !norm.mean.iter().chain(&norm.std).all(|v| v.is_finite())
        || !norm.std.iter().all(|&s| s > 0.0)
    {
        bail!(
            "{file}: the header's normalisation (mean {:?}, std {:?}) does not fit {}-channel images",
            norm.mean,
            norm.std,
            input.c
        );
    }
    check_memory(&spec, input, 256, &file)?;
    if args.limit_test == Some(0) {
        bail!("--limit-test 0: keep at least one image");
    }
    let dir = data::locate(args.data.as_deref())?;
    let mut test = data::load(&dir, &classes)?.test;
    if let Some(n) = args.limit_test {
        test.truncate(n.min(test.len()));
    }
    let [c, h, w] = test.shape;
    if Shape::new(c, h, w) != input {
        bail!("{file}: the model takes {input} images but {} holds {c}x{h}x{w} images", dir.display());
    }
    // The batch only sets how many images run at once.
    let batch =
        meta.get("batch").and_then(|b| b.parse().ok()).unwrap_or(64usize).clamp(1, 256).min(test.len());
    let mut plan = Plan::new(&spec, input, batch).map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
    if plan.classes() != classes.len() {
        bail!(
            "{file}: the model has {} outputs but the header names {} classes",
            plan.classes(),
            classes.len()
        );
    }
    // A model.safetensors, or a run's state.safetensors (its momentum is not needed).
    if let Err(e) = plan.load_safetensors(&[Arena::Params], &bytes, &file) {
        if plan.load_safetensors(&[Arena::Params, Arena::Velocity], &bytes, &file).is_err() {
            return Err(e.into());
        }
    }

    let k = classes.len();
    let mut confusion = vec![vec![0usize; k]; k];
    let mut x = vec![0.0f32; batch * test.image_len()];
    let mut logits = vec![0.0f32; batch * k];
    let all: Vec<usize> = (0..test.len()).collect();
    for idx in all.chunks(batch) {
        let xs = &mut x[..idx.len() * test.image_len()];
        fill_batch(&test, idx, &norm, None, 0, 0, xs);
        let out = &mut logits[..idx.len() * k];
        plan.predict(xs, out);
        for (row, &i) in out.chunks_exact(k).zip(idx) {
            confusion[test.labels[i] as usize][argmax(row)] += 1;
        }
    }
    let correct: usize = (0..k).map(|c| confusion[c][c]).sum();
    println!(
        "{} ({}): test accuracy {:.4} ({correct}/{} images)",
        file,
        spec.name,
        correct as f64 / test.len() as f64,
        test.len()
    );
    let width = classes.iter().map(String::len).max().unwrap_or(5).max(10);
    println!("\nper class:");
    for (c, name) in classes.iter().enumerate() {
        let total: usize = confusion[c].iter().sum();
        let acc = if total == 0 { 0.0 } else { confusion[c][c] as f64 / total as f64 };
        println!("  {name:<width$} {acc:.4} ({}/{total})", confusion[c][c]);
    }
    println!("\nconfusion matrix (rows: true class, columns: predicted):");
    print!("  {:<width$}", "");
    for name in &classes {
        print!(" {name:>width$}");
    }
    println!();
    for (c, name) in classes.iter().enumerate() {
        print!("  {name:<width$}");
        for count in &confusion[c] {
            print!(" {count:>width$}");
        }
        println!();
    }
    Ok(())
}
