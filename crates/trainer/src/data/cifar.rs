//! CIFAR-10 binary records: 1 label byte (0..=9, CIFAR-10 numbering) then
//! 3,072 pixel bytes (R, G, B planes of 32x32, row-major). No header.

use super::dataset::{finish_classes, resolve_classes, Counts, Dataset, Format, Splits, DATA_FILE_LIMIT};
use anyhow::{anyhow, bail, Result};
use graph::bounded;
use std::path::{Path, PathBuf};

/// Pixel bytes per image.
pub const IMAGE_BYTES: usize = 3 * 32 * 32;
/// Bytes per record: the label byte and the pixels.
pub const RECORD_BYTES: usize = 1 + IMAGE_BYTES;
/// The standard CIFAR-10 class names, index = label.
pub const CIFAR10_NAMES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];
/// The class-name file of both CIFAR layouts.
pub const META_FILE: &str = "batches.meta.txt";
/// The most a class-name file may hold: labels are bytes, so at most 256
/// names are read from it.
const META_LIMIT: u64 = 1 << 20;

/// The train files and the test file of a layout.
fn files(dir: &Path, format: Format) -> (Vec<PathBuf>, PathBuf, &'static str) {
    match format {
        Format::CifarOfficial => (
            (1..=5).map(|i| dir.join(format!("data_batch_{i}.bin"))).collect(),
            dir.join("test_batch.bin"),
            "the official layout is data_batch_1.bin..data_batch_5.bin + test_batch.bin",
        ),
        _ => (
            vec![dir.join("train.bin")],
            dir.join("test.bin"),
            "the two-class layout is train.bin + test.bin",
        ),
    }
}

/// Class names from `batches.meta.txt` (one a line, line n = label n;
/// surrounding whitespace and trailing blank lines ignored), or the standard
/// CIFAR-10 names if the file is absent. Returns the names and where they came from.
pub fn read_meta(dir: &Path) -> Result<(Vec<String>, String)> {
    let path = dir.join(META_FILE);
    if !bounded::present(&path) {
        return Ok((
            CIFAR10_NAMES.iter().map(|s| s.to_string()).collect(),
            "the standard CIFAR-10 names".into(),
        ));
    }
    let text = bounded::read_text(&path, META_LIMIT, "class-name file")
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let mut names: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
    while names.last().is_some_and(|n| n.is_empty()) {
        names.pop();
    }
    if names.is_empty() {
        bail!("{}: no class names (expected one a line, line n = label n)", path.display());
    }
    Ok((names, path.display().to_string()))
}

/// Checks that `bytes` (the contents of `path`) is a whole, non-empty number
/// of records with labels 0..=9, and counts the labels.
pub fn check_records(path: &Path, bytes: &[u8]) -> Result<Counts> {
    if bytes.is_empty() {
        bail!("{}: empty file", path.display());
    }
    if !bytes.len().is_multiple_of(RECORD_BYTES) {
        bail!(
            "{}: {} bytes is not a whole number of {RECORD_BYTES}-byte CIFAR records (truncated download?)",
            path.display(),
            bytes.len()
        );
    }
    let mut counts = [0usize; 256];
    for (i, record) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
        let label = record[0];
        if label > 9 {
            bail!(
                "{}: record {i} (byte offset {}) has label {label}; CIFAR-10 labels are 0..=9",
                path.display(),
                i * RECORD_BYTES
            );
        }
        counts[label as usize] += 1;
    }
    Ok(counts)
}

/// Checks a records file by its size alone, before reading it: a size that
/// is not a whole number of records, or beyond [`DATA_FILE_LIMIT`], is
/// refused at once (a 50 GB sparse file costs nothing to refuse).
pub fn check_size(path: &Path, len: u64) -> Result<()> {
    if len == 0 {
        bail!("{}: empty file", path.display());
    }
    if !len.is_multiple_of(RECORD_BYTES as u64) {
        bail!(
            "{}: {len} bytes is not a whole number of {RECORD_BYTES}-byte CIFAR records (truncated download?)",
            path.display()
        );
    }
    if len > DATA_FILE_LIMIT {
        bail!(
            "{}: {} bytes ({} records) is more than the {} a data file may hold (the data set is held in memory)",
            path.display(),
            graph::brief::count(len),
            graph::brief::count(len / RECORD_BYTES as u64),
            bounded::size(DATA_FILE_LIMIT)
        );
    }
    Ok(())
}

/// The bytes of a records file, checked by size first ([`check_size`]).
pub fn read_records(path: &Path) -> Result<Vec<u8>> {
    let io = |e: std::io::Error| anyhow!("{}: {e}", path.display());
    let (file, len) = bounded::open_regular(path).map_err(io)?;
    check_size(path, len)?;
    bounded::read_len(file, len, DATA_FILE_LIMIT, "data file").map_err(io)
}

/// Reads and checks one file, appending the records whose label is in `keep`
/// (raw labels) to `ds`, and adds its label counts to `counts`.
fn read_file(path: &Path, keep: &[bool; 256], ds: &mut Dataset, counts: &mut Counts) -> Result<()> {
    let bytes = read_records(path)?;
    let file_counts = check_records(path, &bytes)?;
    let kept: usize = (0..256).filter(|&l| keep[l]).map(|l| file_counts[l]).sum();
    ds.images.reserve(kept * IMAGE_BYTES);
    ds.labels.reserve(kept);
    for record in bytes.chunks_exact(RECORD_BYTES) {
        if keep[record[0] as usize] {
            ds.labels.push(u32::from(record[0]));
            ds.images.extend_from_slice(&record[1..]);
        }
    }
    counts.iter_mut().zip(file_counts.iter()).for_each(|(a, b)| *a += b);
    Ok(())
}

/// Loads a CIFAR layout (`format` is `CifarTwoClass` or `CifarOfficial`).
pub(crate) fn load(dir: &Path, format: Format, classes: &[String]) -> Result<Splits> {
    let (train_files, test_file, layout) = files(dir, format);
    for f in train_files.iter().chain(std::iter::once(&test_file)) {
        if !bounded::present(f) {
            bail!("{}: missing ({layout})", f.display());
        }
    }
    let (table, table_desc) = read_meta(dir)?;
    let raw = resolve_classes(dir, &table, classes, &table_desc)?;
    let mut keep = [raw.is_none(); 256];
    for &l in raw.iter().flatten() {
        keep[l as usize] = true;
    }

    let empty =
        || Dataset { images: Vec::new(), labels: Vec::new(), shape: [3, 32, 32], class_names: Vec::new() };
    let (mut train, mut test) = (empty(), empty());
    let (mut train_counts, mut test_counts) = ([0usize; 256], [0usize; 256]);
    for f in &train_files {
        read_file(f, &keep, &mut train, &mut train_counts)?;
    }
    read_file(&test_file, &keep, &mut test, &mut test_counts)?;

    let train_desc = match format {
        Format::CifarOfficial => format!("{}/data_batch_1.bin..data_batch_5.bin", dir.display()),
        _ => train_files[0].display().to_string(),
    };
    let (map, names) = finish_classes(
        dir,
        &table,
        raw.as_deref(),
        (&train_counts, &train_desc),
        (&test_counts, &test_file.display().to_string()),
    )?;
    for ds in [&mut train, &mut test] {
        // Every kept label is a chosen class, so the map never yields u32::MAX here.
        ds.labels.iter_mut().for_each(|l| *l = map[*l as usize]);
        ds.class_names = names.clone();
    }
    Ok(Splits { train, test, dir: dir.to_path_buf(), format })
}
