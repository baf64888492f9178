//! A loaded data set: its splits as bytes, and the class selection every
//! loader shares (requested names resolved against the file's label table,
//! checked against both splits, mapped onto `0..k`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// Images and labels of one split, held as bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dataset {
    /// `len() * image_len()` bytes, CHW per image (CIFAR: the R plane, then G, then B).
    pub images: Vec<u8>,
    /// Mapped labels, `0..k` in the order of the requested classes.
    pub labels: Vec<u32>,
    /// `[c, h, w]`.
    pub shape: [usize; 3],
    /// The `k` class names; index = mapped label.
    pub class_names: Vec<String>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes (and, normalised, floats) per image: `c * h * w`.
    pub fn image_len(&self) -> usize {
        self.shape.iter().product()
    }

    /// The CHW bytes of record `i`. Panics if `i >= len()`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.images[i * n..(i + 1) * n]
    }

    /// MD5 of the images, then the labels (little-endian), then the shape
    /// and class names: whether two processes hold the same split.
    pub fn checksum(&self) -> String {
        use md5::{Digest, Md5};
        let mut md5 = Md5::new();
        md5.update(&self.images);
        for l in &self.labels {
            md5.update(l.to_le_bytes());
        }
        for d in self.shape {
            md5.update((d as u64).to_le_bytes());
        }
        md5.update(self.class_names.join("\n").as_bytes());
        hex(&md5.finalize())
    }

    /// Keeps the first `n` records (no-op if there are no more than `n`).
    pub fn truncate(&mut self, n: usize) {
        if n < self.len() {
            self.labels.truncate(n);
            self.images.truncate(n * self.image_len());
        }
    }
}

/// The train and test splits of one directory.
#[derive(Clone, Debug)]
pub struct Splits {
    pub train: Dataset,
    pub test: Dataset,
    pub dir: PathBuf,
    pub format: Format,
}

impl Splits {
    /// The files the training (`train`) or test split was read from, for a message.
    pub fn files(&self, train: bool) -> String {
        let names = match (self.format, train) {
            (Format::CifarTwoClass, true) => "train.bin",
            (Format::CifarTwoClass, false) => "test.bin",
            (Format::CifarOfficial, true) => "data_batch_1.bin..data_batch_5.bin",
            (Format::CifarOfficial, false) => "test_batch.bin",
            (Format::Idx, true) => "train-images-idx3-ubyte, train-labels-idx1-ubyte",
            (Format::Idx, false) => "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte",
        };
        format!("{} in {}", names, self.dir.display())
    }
}

/// The on-disk layout a directory was read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `train.bin` + `test.bin` (CIFAR-10 binary records, any subset of classes).
    CifarTwoClass,
    /// The official `cifar-10-batches-bin`: `data_batch_1.bin`..`data_batch_5.bin` + `test_batch.bin`.
    CifarOfficial,
    /// MNIST-family IDX files, optionally gzipped.
    Idx,
}

/// The most one data file may hold (or, gzipped, inflate to): the whole
/// data set is held in memory, and 4 GiB is 1.4 million CIFAR records,
/// 28 times CIFAR-10. A larger file is refused by its size or header,
/// before it is read.
pub const DATA_FILE_LIMIT: u64 = 4 << 30;

/// Label counts per raw label value (CIFAR and IDX labels are bytes).
pub(crate) type Counts = [usize; 256];

/// Resolves requested class names against `table` (index = raw label value).
/// `None` means "every class present". `table_desc` says where the names come
/// from, for the error message.
pub(crate) fn resolve_classes(
    dir: &Path,
    table: &[String],
    requested: &[String],
    table_desc: &str,
) -> Result<Option<Vec<u8>>> {
    if requested.is_empty() {
        return Ok(None);
    }
    let mut raw = Vec::with_capacity(requested.len());
    for name in requested {
        let wanted = name.trim();
        let Some(label) = table.iter().position(|t| t.eq_ignore_ascii_case(wanted)) else {
            let wanted = graph::brief::text(wanted, graph::brief::ITEM_CHARS);
            bail!(
                "{}: unknown class '{wanted}' (known classes, from {table_desc}: {})",
                dir.display(),
                graph::brief::list(table, 20)
            );
        };
        let Ok(label) = u8::try_from(label) else {
            bail!(
                "{}: class '{wanted}' is label {label}, beyond the one-byte labels of these files",
                dir.display()
            );
        };
        if raw.contains(&label) {
            bail!("{}: class '{wanted}' is requested twice", dir.display());
        }
        raw.push(label);
    }
    Ok(Some(raw))
}

/// The name of raw label `label`: from the table, or the number itself.
pub(crate) fn class_name(table: &[String], label: usize) -> String {
    table.get(label).cloned().unwrap_or_else(|| label.to_string())
}

/// Checks that every requested class has records in both splits and builds
/// the raw-label -> mapped-label table (`u32::MAX` = not kept) and the class
/// names. With `raw = None` the classes are those present in either split.
pub(crate) fn finish_classes(
    dir: &Path,
    table: &[String],
    raw: Option<&[u8]>,
    train: (&Counts, &str),
    test: (&Counts, &str),
) -> Result<([u32; 256], Vec<String>)> {
    let present = |c: &Counts| -> String {
        graph::brief::list((0..256).filter(|&l| c[l] > 0).map(|l| class_name(table, l)), 20)
    };
    let chosen: Vec<u8> = match raw {
        Some(r) => r.to_vec(),
        None => (0..=255u8).filter(|&l| train.0[l as usize] + test.0[l as usize] > 0).collect(),
    };
    // Every explicitly requested class must be in both splits; "all classes"
    // takes whatever either split has.
    for &l in raw.unwrap_or(&[]) {
        let l = l as usize;
        let name = class_name(table, l);
        match (train.0[l] > 0, test.0[l] > 0) {
            (true, true) => {}
            (false, false) => {
                let mut all = *train.0;
                all.iter_mut().zip(test.0.iter()).for_each(|(a, b)| *a += b);
                bail!("{}: class '{name}' is not in these files (found: {})", dir.display(), present(&all));
            }
            (false, true) => bail!(
                "{}: class '{name}' has no record in the training split (found there: {})",
                train.1,
                present(train.0)
            ),
            (true, false) => bail!(
                "{}: class '{name}' has no record in the test split (found there: {})",
                test.1,
                present(test.0)
            ),
        }
    }
    let mut map = [u32::MAX; 256];
    for (mapped, &l) in chosen.iter().enumerate() {
        map[l as usize] = mapped as u32;
    }
    let names = chosen.iter().map(|&l| class_name(table, l as usize)).collect();
    Ok((map, names))
}

/// Hex digits of an MD5 digest.
pub fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
