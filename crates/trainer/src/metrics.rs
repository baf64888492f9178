//! One row of metrics per epoch, written as CSV and JSON lines.

use serde::{Deserialize, Serialize};

/// Everything measured in one epoch. Field order is the CSV column order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRow {
    pub epoch: usize,
    pub lr: f64,
    /// Mean softmax cross-entropy over the epoch's training batches.
    pub train_ce: f64,
    /// The blog's error: mean over training samples of sum_k (p_k - onehot_k)^2.
    pub train_seed_error: f64,
    pub train_acc: f64,
    pub test_ce: f64,
    pub test_acc: f64,
    /// Wall time of the epoch (training and evaluation).
    pub seconds: f64,
    /// Training images per second (training only).
    pub images_per_s: f64,
}

use std::path::Path;

use anyhow::{Context, Result};

pub const CSV_FILE: &str = "metrics.csv";
pub const JSONL_FILE: &str = "metrics.jsonl";

/// The CSV header: the fields of [`EpochRow`] in order.
pub const CSV_HEADER: &str =
    "epoch,lr,train_ce,train_seed_error,train_acc,test_ce,test_acc,seconds,images_per_s";

impl EpochRow {
    fn csv(&self) -> String {
        format!(
            "{},{},{},{},{},{},{},{},{}",
            self.epoch,
            self.lr,
            self.train_ce,
            self.train_seed_error,
            self.train_acc,
            self.test_ce,
            self.test_acc,
            self.seconds,
            self.images_per_s
        )
    }
}

/// Rewrite `metrics.csv` and `metrics.jsonl` in `dir` with all rows so far,
/// each atomically: a crash never leaves half a line.
pub fn write_all(dir: &Path, rows: &[EpochRow]) -> Result<()> {
    let mut csv = String::from(CSV_HEADER);
    csv.push('\n');
    let mut jsonl = String::new();
    for row in rows {
        csv += &row.csv();
        csv.push('\n');
        jsonl += &serde_json::to_string(row)?;
        jsonl.push('\n');
    }
    for (name, text) in [(CSV_FILE, csv), (JSONL_FILE, jsonl)] {
        let path = dir.join(name);
        graph::write_atomic(&path, text.as_bytes())
            .with_context(|| format!("{}: cannot write", path.display()))?;
    }
    Ok(())
}

/// Read the rows of a `metrics.jsonl`; a missing file has none.
pub fn read_jsonl(path: &Path) -> Result<Vec<EpochRow>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("{}: cannot read", path.display())),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{}: line {}: not a metrics row", path.display(), i + 1))
        })
        .collect()
}
