//! One row of metrics per epoch, written as CSV and JSON lines.

use serde::{Deserialize, Serialize};

/// Everything measured in one epoch. Field order is the CSV column order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRow {
    pub epoch: usize,
    #[serde(deserialize_with = "nan_if_null")]
    pub lr: f64,
    /// Mean softmax cross-entropy over the epoch's training batches.
    #[serde(deserialize_with = "nan_if_null")]
    pub train_ce: f64,
    /// The blog's error: mean over training samples of sum_k (p_k - onehot_k)^2.
    #[serde(deserialize_with = "nan_if_null")]
    pub train_seed_error: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub train_acc: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub test_ce: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub test_acc: f64,
    /// Wall time of the epoch (training and evaluation).
    #[serde(deserialize_with = "nan_if_null")]
    pub seconds: f64,
    /// Training images per second (training only).
    #[serde(deserialize_with = "nan_if_null")]
    pub images_per_s: f64,
    /// The blog's error as its author measured it: after the epoch, the mean
    /// of sum_k (onehot_k - p_k)^2 over a fixed sample of min(1000, N)
    /// training images drawn once from the run's seed, forward pass only, no
    /// augmentation. NaN in rows written before this column existed.
    #[serde(default = "nan", deserialize_with = "nan_if_null")]
    pub sample_seed_error: f64,
}

fn nan() -> f64 {
    f64::NAN
}

use std::path::Path;

/// serde_json writes a NaN or infinite value as `null` (JSON has no such
/// numbers); read it back as NaN so that such a run still resumes.
fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

use anyhow::{Context, Result};

pub const CSV_FILE: &str = "metrics.csv";
pub const JSONL_FILE: &str = "metrics.jsonl";

/// The CSV header: the fields of [`EpochRow`] in order.
/// New columns are appended, so scripts that read columns by position keep working.
pub const CSV_HEADER: &str =
    "epoch,lr,train_ce,train_seed_error,train_acc,test_ce,test_acc,seconds,images_per_s,sample_seed_error";

impl EpochRow {
    fn csv(&self) -> String {
        format!(
            "{},{},{},{},{},{},{},{},{},{}",
            self.epoch,
            self.lr,
            self.train_ce,
            self.train_seed_error,
            self.train_acc,
            self.test_ce,
            self.test_acc,
            self.seconds,
            self.images_per_s,
            self.sample_seed_error
        )
    }
}

/// The text of `metrics.csv` and `metrics.jsonl` for `rows`.
pub fn render(rows: &[EpochRow]) -> Result<(String, String)> {
    let mut csv = String::from(CSV_HEADER);
    csv.push('\n');
    let mut jsonl = String::new();
    for row in rows {
        csv += &row.csv();
        csv.push('\n');
        jsonl += &serde_json::to_string(row)?;
        jsonl.push('\n');
    }
    Ok((csv, jsonl))
}

/// Rewrite `metrics.csv` and `metrics.jsonl` in `dir` with all rows so far,
/// each atomically: a crash never leaves half a line.
pub fn write_all(dir: &Path, rows: &[EpochRow]) -> Result<()> {
    let (csv, jsonl) = render(rows)?;
    for (name, text) in [(JSONL_FILE, jsonl), (CSV_FILE, csv)] {
        let path = dir.join(name);
        crate::fsops::write_atomic(&path, text.as_bytes())
            .with_context(|| format!("{}: cannot write", path.display()))?;
    }
    Ok(())
}

/// The most a `metrics.jsonl` may hold: a row is about 250 bytes, so this
/// is some 250,000 epochs.
const JSONL_LIMIT: u64 = 64 << 20;

/// Read the rows of a `metrics.jsonl`; a missing file has none.
pub fn read_jsonl(path: &Path) -> Result<Vec<EpochRow>> {
    let text = match graph::bounded::read_text(path, JSONL_LIMIT, "metrics file") {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_finite_value_survives_the_round_trip_as_nan() {
        let dir = tempfile::tempdir().unwrap();
        let row = EpochRow {
            epoch: 1,
            lr: 0.1,
            train_ce: 0.5,
            train_seed_error: 0.25,
            train_acc: 0.75,
            test_ce: f64::INFINITY,
            test_acc: 0.5,
            seconds: 1.0,
            images_per_s: 100.0,
            sample_seed_error: 0.3,
        };
        write_all(dir.path(), std::slice::from_ref(&row)).unwrap();
        let back = read_jsonl(&dir.path().join(JSONL_FILE)).unwrap();
        assert!(back[0].test_ce.is_nan());
        assert_eq!(EpochRow { test_ce: row.test_ce, ..back[0].clone() }, row);
    }

    #[test]
    fn a_row_written_before_sample_seed_error_reads_back_with_nan() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JSONL_FILE);
        let old = r#"{"epoch":1,"lr":0.01,"train_ce":0.6,"train_seed_error":0.45,"train_acc":0.6,"test_ce":0.5,"test_acc":0.7,"seconds":2.0,"images_per_s":5000.0}"#;
        std::fs::write(&path, format!("{old}\n")).unwrap();
        let rows = read_jsonl(&path).unwrap();
        assert_eq!(rows.len(), 1);
        assert!(rows[0].sample_seed_error.is_nan());
        assert_eq!(rows[0].train_seed_error, 0.45);
        write_all(dir.path(), &rows).unwrap();
        let csv = std::fs::read_to_string(dir.path().join(CSV_FILE)).unwrap();
        assert_eq!(csv.lines().nth(1).unwrap().rsplit(',').next().unwrap(), "NaN");
        assert!(csv.starts_with(
            "epoch,lr,train_ce,train_seed_error,train_acc,test_ce,test_acc,seconds,images_per_s,"
        ));
    }
}
