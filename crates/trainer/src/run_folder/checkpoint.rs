//! A run's checkpoint, and the one commit point of a run folder.
//!
//! `state.safetensors` (parameters, momentum, where the run stands, and the
//! metrics of every epoch so far but their timings) is everything a run
//! needs to go on, and its atomic rename is the commit point: after a crash
//! at any instant the folder holds the previous whole checkpoint or the new
//! whole one. Everything else is derived from it and rebuilt on `--resume`
//! when missing or stale: `model.safetensors` (parameters only, what `eval`
//! and PyTorch read), `metrics.jsonl`/`metrics.csv` (which also carry the
//! timings, and may run ahead of the checkpoint by the epochs since it) and
//! `curves.png`. `model.safetensors` is removed before a new state is
//! committed and written after, so it is never the model of an older state:
//! it is the committed model, or absent.
//!
//! A checkpoint is written at the end of an epoch (every
//! `--checkpoint-every` epochs) or, on Ctrl-C, in the middle of one; then it
//! also records the batches of that epoch already trained and their partial
//! sums, so that the resumed epoch skips exactly those batches (the data
//! order is a pure function of seed and epoch) and reports the same metrics.
//! End-of-epoch headers hold no partial entries and no timings, so the final
//! files of a run are byte-identical however often it was interrupted.
//!
//! Everything read back is checked as untrusted input: against the run's
//! `config.json`, the data, and itself.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use graph::{read_model, Arena, LossSums, Metadata, Plan};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::names::{CONFIG, MODEL, STATE};
use crate::config::RunConfig;
use crate::data::Normalizer;
use crate::fsops;
use crate::run_folder::metrics::EpochRow;

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

    /// Whether these sums can be those of `batches` batches of at most
    /// `batch` images (a header edited by hand, or corrupt, is refused).
    fn plausible(&self, batches: usize, batch: usize, classes: usize) -> bool {
        let n = self.images as f64;
        let finite_nonneg = |v: f64| v.is_finite() && v >= 0.0;
        self.images <= batches.saturating_mul(batch)
            && self.correct <= self.images
            && self.skipped <= batches
            && finite_nonneg(self.cross_entropy)
            && finite_nonneg(self.loss)
            && finite_nonneg(self.seed_error)
            && self.seed_error <= 2.0 * n + 1e-9
            && (classes > 0)
            && finite_nonneg(self.train_secs)
            && finite_nonneg(self.data_secs)
    }
}

/// Where a run stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
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
    pub fn after(&self) -> String {
        if self.batches == 0 {
            format!("after epoch {}", self.epoch)
        } else {
            format!("after {} batches of epoch {}", self.batches, self.epoch + 1)
        }
    }
}

/// The header entries of a checkpoint that `eval`, `explain`, `prune` and
/// `predict` read from `model.safetensors` too.
pub mod keys {
    /// The class names, in label order (a JSON list).
    pub const CLASSES: &str = "classes";
    /// The input normalisation: per-channel mean and std (JSON lists).
    pub const NORM_MEAN: &str = "norm_mean";
    pub const NORM_STD: &str = "norm_std";
    /// The training batch size.
    pub const BATCH: &str = "batch";
}

const EPOCH: &str = "epoch";
const BATCHES: &str = "batches_done";
const PARTIAL: &str = "partial_epoch";
const SKIPPED: &str = "skipped_batches";

/// The committed metrics in a state header: one array per epoch of the
/// columns a run reproduces bit for bit (all but the timings), in
/// [`ROW_COLUMNS`] order; a non-finite value as the string "NaN", "inf" or "-inf".
const ROWS: &str = "metrics";
const ROW_COLUMNS: usize = 8;

fn number(v: f64) -> Value {
    match serde_json::Number::from_f64(v) {
        Some(n) => Value::Number(n),
        None => Value::String(format!("{v}")),
    }
}

fn rows_json(rows: &[EpochRow]) -> String {
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            Value::Array(
                [
                    r.epoch as f64,
                    r.lr,
                    r.train_ce,
                    r.train_seed_error,
                    r.train_acc,
                    r.test_ce,
                    r.test_acc,
                    r.sample_seed_error,
                ]
                .into_iter()
                .map(number)
                .collect(),
            )
        })
        .collect();
    Value::Array(rows).to_string()
}

/// The rows of a state header; their timings are NaN (see [`merge_timings`]).
fn parse_rows(json: &str, file: &str) -> Result<Vec<EpochRow>> {
    let bad = |why: String| anyhow!("{file}: header entry {ROWS:?}: {why}");
    let rows: Vec<Vec<Value>> =
        serde_json::from_str(json).map_err(|e| bad(format!("not a list of rows ({e})")))?;
    rows.iter()
        .enumerate()
        .map(|(i, r)| {
            if r.len() != ROW_COLUMNS {
                return Err(bad(format!("row {} has {} values, expected {ROW_COLUMNS}", i + 1, r.len())));
            }
            let v: Vec<f64> = r
                .iter()
                .map(|x| match x {
                    Value::Number(n) => n.as_f64(),
                    Value::String(s) => s.parse::<f64>().ok().filter(|v| !v.is_finite()),
                    _ => None,
                })
                .collect::<Option<_>>()
                .ok_or_else(|| bad(format!("row {} holds a value that is not a number", i + 1)))?;
            if v[0] != (i + 1) as f64 {
                return Err(bad(format!("row {} is for epoch {}, expected {}", i + 1, v[0], i + 1)));
            }
            Ok(EpochRow {
                epoch: i + 1,
                lr: v[1],
                train_ce: v[2],
                train_seed_error: v[3],
                train_acc: v[4],
                test_ce: v[5],
                test_acc: v[6],
                seconds: f64::NAN,
                images_per_s: f64::NAN,
                sample_seed_error: v[7],
            })
        })
        .collect()
}

/// The committed rows with the timings of `logged` (what `metrics.jsonl`
/// holds) where an epoch's other columns agree to the bit; NaN otherwise.
/// Returns the rows and how many had no timing.
pub fn merge_timings(committed: Vec<EpochRow>, logged: &[EpochRow]) -> (Vec<EpochRow>, usize) {
    let same = |a: &EpochRow, b: &EpochRow| {
        let bits = |r: &EpochRow| {
            [r.lr, r.train_ce, r.train_seed_error, r.train_acc, r.test_ce, r.test_acc, r.sample_seed_error]
                .map(f64::to_bits)
        };
        a.epoch == b.epoch && bits(a) == bits(b)
    };
    let mut lost = 0;
    let rows = committed
        .into_iter()
        .map(|mut r| {
            match logged.iter().find(|l| same(l, &r)) {
                Some(l) => (r.seconds, r.images_per_s) = (l.seconds, l.images_per_s),
                None => lost += 1,
            }
            r
        })
        .collect();
    (rows, lost)
}

/// The header entries of a checkpoint `at` (not the metrics).
fn header(at: &Progress, config: &RunConfig, norm: &Normalizer) -> Result<Metadata> {
    let mut meta = Metadata::from([
        (EPOCH.to_string(), at.epoch.to_string()),
        (keys::CLASSES.to_string(), serde_json::to_string(&config.classes)?),
        (keys::NORM_MEAN.to_string(), serde_json::to_string(&norm.mean)?),
        (keys::NORM_STD.to_string(), serde_json::to_string(&norm.std)?),
        (keys::BATCH.to_string(), config.batch.to_string()),
    ]);
    if at.batches > 0 {
        meta.insert(BATCHES.to_string(), at.batches.to_string());
        meta.insert(PARTIAL.to_string(), serde_json::to_string(&at.partial)?);
    }
    if at.skipped_total > 0 {
        meta.insert(SKIPPED.to_string(), at.skipped_total.to_string());
    }
    Ok(meta)
}

/// The bytes of `model.safetensors` for the plan's parameters at `at`.
pub fn model_bytes(plan: &Plan, at: &Progress, config: &RunConfig, norm: &Normalizer) -> Result<Vec<u8>> {
    Ok(plan.to_safetensors(&[Arena::Params], header(at, config, norm)?))
}

/// Commit a checkpoint: remove `model.safetensors`, write
/// `state.safetensors` (with `rows`, the metrics of every epoch up to
/// `at.epoch`) atomically, then write the new `model.safetensors`.
pub fn write(
    plan: &Plan,
    out: &Path,
    at: &Progress,
    config: &RunConfig,
    norm: &Normalizer,
    rows: &[EpochRow],
) -> Result<()> {
    let committed = &rows[..at.epoch.min(rows.len())];
    debug_assert!(committed.iter().enumerate().all(|(i, r)| r.epoch == i + 1));
    let mut meta = header(at, config, norm)?;
    meta.insert(ROWS.to_string(), rows_json(committed));
    let (state, model) = (out.join(STATE), out.join(MODEL));
    let cannot = |p: &Path| format!("{}: cannot write the checkpoint", p.display());
    fsops::remove_file(&model).with_context(|| cannot(&model))?;
    fsops::write_atomic(&state, &plan.to_safetensors(&[Arena::Params, Arena::Velocity], meta))
        .with_context(|| cannot(&state))?;
    fsops::write_atomic(&model, &model_bytes(plan, at, config, norm)?).with_context(|| cannot(&model))?;
    Ok(())
}

/// A checkpoint read back: where the run stands and the committed metrics
/// (timings NaN), or `None` for rows when the state predates them.
pub struct Restored {
    pub progress: Progress,
    pub rows: Option<Vec<EpochRow>>,
}

/// Load `out/state.safetensors` into `plan` and say where the run stands;
/// `None` if the run has no checkpoint yet (it was stopped before its first
/// commit: the caller starts from epoch 1). Every header entry is checked
/// against `config` and `batches_per_epoch` (the data) and against itself.
pub fn read(
    plan: &mut Plan,
    out: &Path,
    config: &RunConfig,
    batches_per_epoch: usize,
) -> Result<Option<Restored>> {
    let path = out.join(STATE);
    let file = path.display().to_string();
    if !graph::bounded::present(&path) {
        // The model exists only after a commit: a state removed by hand
        // cannot be told from a run that never started.
        if out.join(MODEL).exists() {
            bail!(
                "{file} is missing but {} is there, so the run had been checkpointed: without its state \
                 (parameters and momentum) it cannot continue bit for bit; start a new run with another \
                 --out (the model file is kept)",
                out.join(MODEL).display()
            );
        }
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
            out.join(CONFIG).display(),
            config.spec.name,
            config.spec.layers.len()
        );
    }
    let progress = check_header(&meta, &file, out, config, batches_per_epoch)?;
    let rows = meta.get(ROWS).map(|json| parse_rows(json, &file)).transpose()?;
    let epoch = progress.epoch;
    match &rows {
        Some(rows) if rows.len() != epoch => bail!(
            "{file}: header says epoch {epoch} is done but holds the metrics of {} epochs; the file was edited",
            rows.len()
        ),
        // Older states hold no metrics; their epoch is bounded by what was trained.
        None if epoch > config.epochs.max(1).saturating_mul(1000) => {
            bail!("{file}: header entry \"epoch\" is {epoch}, not a number of epochs this run can have trained")
        }
        _ => {}
    }
    let (skipped_total, most_skipped) =
        (progress.skipped_total, epoch.saturating_add(1).saturating_mul(batches_per_epoch));
    if skipped_total > most_skipped {
        bail!("{file}: header says {skipped_total} batches were skipped, more than the run has had ({most_skipped})");
    }
    Ok(Some(Restored { progress, rows }))
}

/// Where the run stands, from the header `meta` of `file`, its entries
/// checked against `config`, the data's `batches_per_epoch` and each other
/// (the skipped count is checked by the caller, after the metrics).
fn check_header(
    meta: &Metadata,
    file: &str,
    out: &Path,
    config: &RunConfig,
    batches_per_epoch: usize,
) -> Result<Progress> {
    let number = |key: &str| -> Result<Option<usize>> {
        meta.get(key)
            .map(|v| v.parse().map_err(|_| anyhow!("{file}: header entry {key:?} is {v:?}, not a count")))
            .transpose()
    };
    let epoch = number(EPOCH)?.with_context(|| format!("{file}: no {EPOCH:?} in the checkpoint header"))?;
    if let Some(classes) = meta.get(keys::CLASSES) {
        let theirs: Vec<String> = serde_json::from_str(classes)
            .map_err(|_| anyhow!("{file}: header entry \"classes\" is not a list of names"))?;
        if theirs != config.classes {
            bail!(
                "{file}: trained on classes {} but {} says {}; not this run's checkpoint",
                theirs.join(","),
                out.join(CONFIG).display(),
                config.classes.join(",")
            );
        }
    }
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
            epoch.saturating_add(1)
        );
    }
    if !partial.plausible(batches, config.batch, config.classes.len()) {
        bail!(
            "{file}: the partial-epoch sums in the header cannot be those of {batches} batches of {} images",
            config.batch
        );
    }
    let skipped_total = number(SKIPPED)?.unwrap_or(0);
    Ok(Progress { epoch, batches, partial, skipped_total })
}
