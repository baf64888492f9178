//! Reading a run folder back on resume: the committed metrics rows, and
//! the files derived from the committed state rebuilt where they are
//! missing or stale.

use std::path::Path;

use anyhow::{bail, Context, Result};
use graph::Plan;

use super::checkpoint::{self, Progress};
use super::metrics::{self, EpochRow};
use super::names::{CURVES, MODEL};
use super::plot;
use crate::config::{Recipe, RunConfig};
use crate::data::Normalizer;
use crate::fsops;

/// The metrics of the committed epochs, with the timings `metrics.jsonl`
/// logged for them (NaN for those it has lost, with a note).
pub fn resume_rows(out: &Path, loaded: checkpoint::Restored) -> Result<Vec<EpochRow>> {
    let jsonl = out.join(metrics::JSONL_FILE);
    let logged = match metrics::read_jsonl(&jsonl) {
        Ok(rows) => rows,
        Err(e) if loaded.rows.is_some() => {
            eprintln!("warning: {e:#}; rebuilding it from the checkpoint");
            Vec::new()
        }
        Err(e) => return Err(e),
    };
    let epoch = loaded.progress.epoch;
    let committed = match loaded.rows {
        Some(rows) => rows,
        // A state written before states carried their metrics.
        None => {
            let rows: Vec<EpochRow> = logged.iter().filter(|r| r.epoch <= epoch).cloned().collect();
            if rows.len() != epoch || rows.iter().enumerate().any(|(i, r)| r.epoch != i + 1) {
                bail!(
                    "{}: holds {} rows for the {epoch} epochs of the checkpoint, and this older checkpoint \
                     carries no copy of them; restore the file to resume",
                    jsonl.display(),
                    rows.len()
                );
            }
            return Ok(rows);
        }
    };
    let (rows, lost) = checkpoint::merge_timings(committed, &logged);
    if lost > 0 {
        eprintln!(
            "warning: {}: the timings of {lost} of the {epoch} committed epochs are lost (now NaN); every \
             other column comes from the checkpoint",
            jsonl.display()
        );
    }
    Ok(rows)
}

/// Rebuild the files derived from the committed state that are missing or
/// differ from it: `model.safetensors`, the metrics files, `curves.png`.
/// Returns what was rebuilt and why.
pub fn repair(
    plan: &Plan,
    out: &Path,
    at: &Progress,
    config: &RunConfig,
    norm: &Normalizer,
    rows: &[EpochRow],
) -> Result<Vec<String>> {
    let mut repaired = Vec::new();
    let check = |name: &str, want: &[u8], repaired: &mut Vec<String>| -> Result<bool> {
        let path = out.join(name);
        // A file there that is not the committed state's (larger than it,
        // or another model copied in) is stale; only an absent one is missing.
        let why = match graph::bounded::read_capped(&path, want.len() as u64 + 1, name) {
            Ok(have) if have == want => return Ok(false),
            _ if std::fs::symlink_metadata(&path).is_ok() => "stale: not the checkpoint's",
            _ => "missing",
        };
        fsops::write_atomic(&path, want).with_context(|| format!("{}: cannot write", path.display()))?;
        repaired.push(format!("{name} ({why})"));
        Ok(true)
    };
    check(MODEL, &checkpoint::model_bytes(plan, at, config, norm)?, &mut repaired)?;
    let (csv, jsonl) = metrics::render(rows)?;
    let mut changed = check(metrics::JSONL_FILE, jsonl.as_bytes(), &mut repaired)?;
    changed |= check(metrics::CSV_FILE, csv.as_bytes(), &mut repaired)?;
    let curves = out.join(CURVES);
    if !rows.is_empty() && (changed || !curves.exists()) {
        plot::plot_curves(
            &curves,
            &[plot::Series { label: &config.spec.name, rows, sample_error: config.recipe == Recipe::Seed }],
        )?;
        repaired.push(format!("{CURVES} ({})", if changed { "stale" } else { "missing" }));
    }
    Ok(repaired)
}
