//! `trainer eval`: a checkpoint on the test split: accuracy, per-class
//! accuracy and the confusion matrix; and the checkpoint loading that
//! `explain` and `prune` share with it.

use anyhow::{bail, Context, Result};
use graph::{argmax, read_model, Arena, Plan, Shape};

use crate::config::flags::EvalArgs;
use crate::data::augment::fill_batch;
use crate::data::{self, Dataset, Normalizer};
use crate::run_folder::checkpoint::keys;
use crate::training::health::check_memory;

fn meta_json<T: serde::de::DeserializeOwned>(meta: &graph::Metadata, key: &str, file: &str) -> Result<T> {
    let text = meta
        .get(key)
        .with_context(|| format!("{file}: the header has no {key:?} (not a trainer checkpoint?)"))?;
    serde_json::from_str(text).with_context(|| format!("{file}: unreadable {key:?} in the header"))
}

/// A checkpoint with everything needed to run it on its test split; what
/// `eval`, `explain` and `prune` share, so they load and check a file the
/// same way and report the same accuracy.
pub struct Loaded {
    /// The checkpoint's path, as errors name it.
    pub file: String,
    pub plan: Plan,
    pub classes: Vec<String>,
    pub norm: Normalizer,
    /// The header's metadata (spec, input, classes, normalisation, ...).
    pub meta: graph::Metadata,
    /// The test split, cut to `--limit-test`.
    pub test: Dataset,
    /// Images run at once: the run's batch, so every command that predicts
    /// splits the test set the same way.
    pub batch: usize,
}

/// A checkpoint read and checked, before its plan is built: what `predict`
/// needs (no data set), and the first half of [`load`].
pub struct Checkpoint {
    /// The path, as errors name it.
    pub file: String,
    bytes: Vec<u8>,
    pub spec: graph::ModelSpec,
    pub input: Shape,
    pub classes: Vec<String>,
    pub norm: Normalizer,
    pub meta: graph::Metadata,
}

impl Checkpoint {
    /// Read `path` and check its header: model, input shape, class names and
    /// the normalisation the model was trained with.
    pub fn read(path: &std::path::Path) -> Result<Checkpoint> {
        let file = path.display().to_string();
        let bytes = graph::bounded::read_safetensors(path, &file)?;
        let (spec, input, meta) = read_model(&bytes, &file)?;
        let classes: Vec<String> = meta_json(&meta, keys::CLASSES, &file)?;
        let norm = Normalizer {
            mean: meta_json(&meta, keys::NORM_MEAN, &file)?,
            std: meta_json(&meta, keys::NORM_STD, &file)?,
        };
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
        Ok(Checkpoint { file, bytes, spec, input, classes, norm, meta })
    }

    /// The model's plan for batches of up to `batch` images, with the
    /// checkpoint's parameters.
    pub fn plan(&self, batch: usize) -> Result<Plan> {
        let file = &self.file;
        let mut plan =
            Plan::new(&self.spec, self.input, batch).map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
        if plan.classes() != self.classes.len() {
            bail!(
                "{file}: the model has {} outputs but the header names {} classes",
                plan.classes(),
                self.classes.len()
            );
        }
        // A model.safetensors, or a run's state.safetensors (its momentum is not needed).
        if let Err(e) = plan.load_safetensors(&[Arena::Params], &self.bytes, file) {
            if plan.load_safetensors(&[Arena::Params, Arena::Velocity], &self.bytes, file).is_err() {
                return Err(e.into());
            }
        }
        Ok(plan)
    }

    /// The run's batch (header entry `batch`), else 64, within `1..=256`.
    pub fn batch(&self) -> usize {
        self.meta.get(keys::BATCH).and_then(|b| b.parse().ok()).unwrap_or(64usize).clamp(1, 256)
    }
}

/// Read and check the checkpoint, build its plan and load its test split
/// from `--data` (or the search path).
pub fn load(args: &EvalArgs) -> Result<Loaded> {
    let EvalArgs { checkpoint, limit_test, .. } = args;
    let (data, limit_test) = (args.data.as_deref(), *limit_test);
    let ck = Checkpoint::read(checkpoint)?;
    if limit_test == Some(0) {
        bail!("--limit-test 0: keep at least one image");
    }
    let dir = data::locate(data, args.no_download)?;
    let mut test = data::load(&dir, &ck.classes)?.test;
    if let Some(n) = limit_test {
        test.truncate(n.min(test.len()));
    }
    let [c, h, w] = test.shape;
    if Shape::new(c, h, w) != ck.input {
        bail!(
            "{}: the model takes {} images but {} holds {c}x{h}x{w} images",
            ck.file,
            ck.input,
            dir.display()
        );
    }
    // The batch only sets how many images run at once.
    let batch = ck.batch().min(test.len());
    let plan = ck.plan(batch)?;
    let Checkpoint { file, classes, norm, meta, .. } = ck;
    Ok(Loaded { file, plan, classes, norm, meta, test, batch })
}

impl Loaded {
    /// The logits `[n, classes]` of every test image, by `Plan::predict`.
    pub fn predict_all(&mut self) -> Vec<f32> {
        let (k, len) = (self.classes.len(), self.test.image_len());
        let mut logits = vec![0.0f32; self.test.len() * k];
        let mut x = vec![0.0f32; self.batch * len];
        let all: Vec<usize> = (0..self.test.len()).collect();
        for (idx, out) in all.chunks(self.batch).zip(logits.chunks_mut(self.batch * k)) {
            let xs = &mut x[..idx.len() * len];
            fill_batch(&self.test, idx, &self.norm, None, 0, 0, xs);
            self.plan.predict(xs, out);
        }
        logits
    }

    /// The normalised inputs of test images `idx`, `[idx.len(), C, H, W]`.
    pub fn inputs(&self, idx: &[usize]) -> Vec<f32> {
        let mut x = vec![0.0f32; idx.len() * self.test.image_len()];
        fill_batch(&self.test, idx, &self.norm, None, 0, 0, &mut x);
        x
    }

    /// Correctly predicted test images among `logits`.
    pub fn correct(&self, logits: &[f32]) -> usize {
        let k = self.classes.len();
        logits.chunks_exact(k).zip(&self.test.labels).filter(|(row, &y)| argmax(row) == y as usize).count()
    }
}

pub fn run(args: &EvalArgs) -> Result<()> {
    let mut loaded = load(args)?;
    let logits = loaded.predict_all();
    let Loaded { file, classes, test, plan, .. } = &loaded;
    let spec = plan.spec();
    let k = classes.len();
    let mut confusion = vec![vec![0usize; k]; k];
    for (row, &y) in logits.chunks_exact(k).zip(&test.labels) {
        confusion[y as usize][argmax(row)] += 1;
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
    for name in classes {
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
