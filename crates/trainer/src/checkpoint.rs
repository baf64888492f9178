//! A run's checkpoint: `state.safetensors` (parameters and momentum, what
//! `--resume` reads) and `model.safetensors` (parameters only, what `eval`
//! and PyTorch read), both with where the run stands in their header.
//!
//! A checkpoint is written at the end of an epoch (every
//! `--checkpoint-every` epochs) or, on Ctrl-C, in the middle of one; then it
//! also records the batches of that epoch already trained and their partial
//! sums, so that the resumed epoch skips exactly those batches (the data
//! order is a pure function of seed and epoch) and reports the same metrics.
//! End-of-epoch headers hold no partial entries, so the final files of a run
//! are byte-identical however often it was interrupted.
//!
//! Each file is written atomically (`graph::write_atomic`): a crash or
//! `kill -9` at any moment leaves the previous complete file or the new one.

use std::fs;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use graph::{read_model, write_atomic, Arena, LossSums, Metadata, Plan};
use serde::{Deserialize, Serialize};

use crate::data::Normalizer;
use crate::train::{RunConfig, MODEL, STATE};

/// The sums of an epoch's training batches so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochSums {
    pub loss: f64,
    pub cross_entropy: f64,
    pub seed_error: f64,
    pub correct: usize,
    /// Images of the batches that counted (skipped batches do not).
    pub images: usize,
    /// Batches skipped for a non-finite loss or gradient (`--skip-nonfinite`).
    pub skipped: usize,
    /// Seconds spent training and preparing batches (timing only).
    pub train_secs: f64,
    pub data_secs: f64,
}

impl EpochSums {
    /// Count one batch of `images` images.
    pub fn add(&mut self, s: &LossSums, images: usize) {
        self.loss += s.loss;
        self.cross_entropy += s.cross_entropy;
        self.seed_error += s.seed_error;
        self.correct += s.correct;
        self.images += images;
    }
}

/// Where a run stands.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Progress {
    /// Epochs completed.
    pub epoch: usize,
    /// Batches of epoch `epoch + 1` already trained (0 at an epoch's end).
    pub batches: usize,
    /// Their sums (default when `batches` is 0).
    pub partial: EpochSums,
    /// Batches skipped over the whole run so far.
    pub skipped_total: usize,
}

impl Progress {
    /// `after epoch 3` or `after 17 batches of epoch 4`.
    pub fn describe(&self) -> String {
        if self.batches == 0 {
            format!("after epoch {}", self.epoch)
        } else {
            format!("after {} batches of epoch {}", self.batches, self.epoch + 1)
        }
    }
}

const EPOCH: &str = "epoch";
const BATCHES: &str = "batches_done";
const PARTIAL: &str = "partial_epoch";
const SKIPPED: &str = "skipped_batches";

/// Write `state.safetensors`, then `model.safetensors`, each atomically.
pub fn write(plan: &Plan, out: &Path, at: &Progress, config: &RunConfig, norm: &Normalizer) -> Result<()> {
    let mut meta = Metadata::from([
        (EPOCH.to_string(), at.epoch.to_string()),
        ("classes".to_string(), serde_json::to_string(&config.classes)?),
        ("norm_mean".to_string(), serde_json::to_string(&norm.mean)?),
        ("norm_std".to_string(), serde_json::to_string(&norm.std)?),
        ("batch".to_string(), config.batch.to_string()),
    ]);
    if at.batches > 0 {
        meta.insert(BATCHES.to_string(), at.batches.to_string());
        meta.insert(PARTIAL.to_string(), serde_json::to_string(&at.partial)?);
    }
    if at.skipped_total > 0 {
        meta.insert(SKIPPED.to_string(), at.skipped_total.to_string());
    }
    for (name, arenas) in [(STATE, &[Arena::Params, Arena::Velocity][..]), (MODEL, &[Arena::Params][..])] {
        let path = out.join(name);
        write_atomic(&path, &plan.to_safetensors(arenas, meta.clone()))
            .with_context(|| format!("{}: cannot write the checkpoint", path.display()))?;
    }
    Ok(())
}

/// Load `out/state.safetensors` into `plan` and say where the run stands;
/// `None` if the run has no checkpoint yet (it was stopped before its first
/// one: the caller starts from epoch 1). `batches_per_epoch` checks a
/// mid-epoch record against the data.
pub fn read(
    plan: &mut Plan,
    out: &Path,
    config: &RunConfig,
    batches_per_epoch: usize,
) -> Result<Option<Progress>> {
    let path = out.join(STATE);
    let file = path.display().to_string();
    if !graph::bounded::present(&path) {
        return Ok(None);
    }
    let bytes = graph::bounded::read_safetensors(&path, &file)?;
    // Tensors first: a mismatch there names the tensor and both shapes.
    let meta = plan.load_safetensors(&[Arena::Params, Arena::Velocity], &bytes, &file)?;
    let (spec, _, _) = read_model(&bytes, &file)?;
    if spec != config.spec {
        bail!(
            "{file}: holds model {} ({} layers) but {} says model {} ({} layers); not this run's checkpoint",
            spec.name,
            spec.layers.len(),
            out.join(crate::train::CONFIG).display(),
            config.spec.name,
            config.spec.layers.len()
        );
    }
    let number = |key: &str| -> Result<Option<usize>> {
        meta.get(key)
            .map(|v| v.parse().map_err(|_| anyhow!("{file}: header entry {key:?} is {v:?}, not a count")))
            .transpose()
    };
    let epoch = number(EPOCH)?.with_context(|| format!("{file}: no {EPOCH:?} in the checkpoint header"))?;
    let batches = number(BATCHES)?.unwrap_or(0);
    let partial = match meta.get(PARTIAL) {
        Some(json) if batches > 0 => serde_json::from_str(json)
            .map_err(|e| anyhow!("{file}: unreadable {PARTIAL:?} in the checkpoint header ({e})"))?,
        _ => EpochSums::default(),
    };
    if batches >= batches_per_epoch.max(1) {
        bail!(
            "{file}: records {batches} batches done in epoch {} but an epoch has only {batches_per_epoch}; \
             the data or --batch changed since",
            epoch + 1
        );
    }
    let skipped_total = number(SKIPPED)?.unwrap_or(0);
    Ok(Some(Progress { epoch, batches, partial, skipped_total }))
}

/// Remove temporary files that a killed writer left in `out`
/// (`.<name>.tmp-<pid>` of a process that no longer runs).
pub fn clean_temp_files(out: &Path) {
    let Ok(entries) = fs::read_dir(out) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((_, pid)) = name.strip_prefix('.').and_then(|n| n.rsplit_once(".tmp-")) else { continue };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        let alive = pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists();
        if !alive && entry.file_type().is_ok_and(|t| t.is_file()) {
            let _ = fs::remove_file(entry.path());
        }
    }
}
