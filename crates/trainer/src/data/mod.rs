//! The data layer: finding the data set, loading CIFAR-10 binary records or
//! IDX (MNIST family) files into memory as `u8` CHW images, picking classes
//! and mapping their labels onto `0..k`, and per-channel normalisation.
//!
//! Every error is a single line that names the file (or directory) and, where
//! it applies, the record index and byte offset. Bad bytes never panic.

pub mod augment;
pub mod cache;
pub mod cifar;
pub mod download;
pub mod idx;
pub mod unpack;

use anyhow::{bail, Result};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

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
        download::hex(&md5.finalize())
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

/// The environment variable naming the data directory.
pub const ENV_VAR: &str = "CIFAR10_DIR";

/// Where the data is: `flag` (`--data`) if given, else the environment
/// variable `CIFAR10_DIR`, else the first directory of
/// [`default_search_path`] that holds data files, else the cache folder's
/// `cifar-10-batches-bin` (see [`download`]); and if that is missing too,
/// the official archive is downloaded into the cache, unless `no_download`
/// (`--no-download`) or `GAPNET_NO_DOWNLOAD` says not to.
///
/// A given flag or variable that is not a directory is an error (it is never
/// silently replaced by the search path). Finding nothing with downloading
/// off is an error that lists every place looked at and how to get the data.
pub fn locate(flag: Option<&Path>, no_download: bool) -> Result<PathBuf> {
    let first_use = FirstUse {
        download: !no_download && !download::disabled_by_env(),
        cache: cache::cache_dir(),
        source: download::Source::from_env,
    };
    locate_in(flag, std::env::var_os(ENV_VAR), &default_search_path(), first_use)
}

/// What [`locate_in`] does when the search finds nothing.
pub struct FirstUse<S: FnOnce() -> Result<download::Source>> {
    /// Whether to download (else: the error).
    pub download: bool,
    /// The cache folder (an error if there is none: no home folder and no `GAPNET_CACHE`).
    pub cache: Result<PathBuf>,
    /// Where to download from (read only when downloading, so a bad
    /// `GAPNET_CIFAR10_MD5` does not stop a run that has its data).
    pub source: S,
}

/// [`locate`] with the environment's values passed in: testable without
/// touching the process environment or the user's cache.
pub fn locate_in<S: FnOnce() -> Result<download::Source>>(
    flag: Option<&Path>,
    env: Option<OsString>,
    search: &[PathBuf],
    first_use: FirstUse<S>,
) -> Result<PathBuf> {
    let mut search = search.to_vec();
    if let Ok(cache) = &first_use.cache {
        search.push(cache.join(cache::FOLDER));
    }
    let looked = match search_in(flag, env, &search)? {
        Found::Dir(dir) => return Ok(dir),
        Found::Nothing(looked) => looked,
    };
    if !first_use.download {
        bail!(
            "no data directory found; looked in: {looked}. Downloading is off (--no-download or \
             {}): run `trainer fetch` (downloads the official CIFAR-10 archive into the cache) or pass \
             --data DIR / set {ENV_VAR}",
            download::NO_DOWNLOAD_VAR
        );
    }
    let target = cache::Target::cache(first_use.cache?);
    let source = (first_use.source)()?;
    eprintln!(
        "no data on the search path: fetching CIFAR-10 into the cache, once (--no-download or {}=1 turns \
         this off)",
        download::NO_DOWNLOAD_VAR
    );
    download::ensure(&target, &source)
}

/// What a search found.
enum Found {
    Dir(PathBuf),
    /// Every place looked at, for the message.
    Nothing(String),
}

/// The search of [`locate_in`]: the flag, the variable, the path.
fn search_in(flag: Option<&Path>, env: Option<OsString>, search: &[PathBuf]) -> Result<Found> {
    if let Some(dir) = flag {
        if !dir.is_dir() {
            bail!("--data {}: {}", dir.display(), not_a_directory(dir));
        }
        return Ok(Found::Dir(dir.to_path_buf()));
    }
    if let Some(value) = env.filter(|v| !v.is_empty()) {
        let dir = PathBuf::from(value);
        if !dir.is_dir() {
            bail!("{ENV_VAR}={}: {}", dir.display(), not_a_directory(&dir));
        }
        return Ok(Found::Dir(dir));
    }
    let mut looked = Vec::with_capacity(search.len());
    for dir in search {
        if !dir.is_dir() {
            looked.push(format!("{} (missing)", dir.display()));
        } else if has_data_files(dir) {
            // Resolved, so messages show the folder without `..` steps.
            return Ok(Found::Dir(dir.canonicalize().unwrap_or_else(|_| dir.clone())));
        } else {
            looked.push(format!("{} (no data files)", dir.display()));
        }
    }
    Ok(Found::Nothing(looked.join(", ")))
}

/// Why `path` is not a directory: `no such directory`, or what it is instead.
fn not_a_directory(path: &Path) -> String {
    match std::fs::metadata(path) {
        Ok(meta) => format!("{}, not a directory", graph::bounded::describe(meta.file_type())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "no such directory".to_string(),
        Err(e) => format!("not a readable directory ({e})"),
    }
}

/// The default places to look for data, in order: under the workspace root
/// (found from this crate's manifest directory), `datasets/cifar10-airplane-ship`
/// and `datasets/cifar-10-batches-bin`; then the same relative paths from the
/// current directory (skipping any that are the same place). Nothing outside
/// the repository: data elsewhere is named by `--data` or `CIFAR10_DIR`.
pub fn default_search_path() -> Vec<PathBuf> {
    const REL: [&str; 2] = ["datasets/cifar10-airplane-ship", "datasets/cifar-10-batches-bin"];
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let repo = manifest.canonicalize().unwrap_or(manifest);
    let mut out: Vec<PathBuf> = REL.iter().map(|r| repo.join(r)).collect();
    let cwd = std::env::current_dir().ok();
    for r in REL {
        let same = cwd.as_ref().is_some_and(|c| c.join(r) == repo.join(r));
        if !same {
            out.push(PathBuf::from(r));
        }
    }
    out
}

/// Whether `dir` holds any file that [`load`] recognises.
fn has_data_files(dir: &Path) -> bool {
    ["train.bin", "data_batch_1.bin", "train-images-idx3-ubyte", "train-images-idx3-ubyte.gz"]
        .iter()
        .any(|f| graph::bounded::present(&dir.join(f)))
}

/// Detects the layout in `dir` and loads both splits, keeping only `classes`
/// (names; an empty slice keeps every class that occurs in the files, in
/// label order). Layouts, tried in this order:
///
/// - `train.bin` + `test.bin` (+ `batches.meta.txt`): CIFAR-10 records;
/// - `data_batch_1.bin`..`data_batch_5.bin` + `test_batch.bin` (+ `batches.meta.txt`): the official release;
/// - `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`,
///   `t10k-labels-idx1-ubyte`, each optionally `.gz`: IDX, shape `[1, rows, cols]`.
///
/// CIFAR class names come from `batches.meta.txt` (line n = label n) or, if
/// it is missing, the standard CIFAR-10 names. IDX class names are the label
/// values in decimal (`"0"`..`"9"` for MNIST). Names match case-insensitively;
/// `class_names` holds them as spelled in the name table.
///
/// Errors: unknown layout, unreadable or malformed files (naming the file and
/// the record/byte offset), an unknown class name, a class requested twice,
/// and a requested class with no record in the training or the test split.
pub fn load(dir: &Path, classes: &[String]) -> Result<Splits> {
    // Anything at a layout's name counts (a directory or FIFO there is
    // then refused by name, not called missing).
    let exists = |f: &str| graph::bounded::present(&dir.join(f));
    if exists("train.bin") || exists("test.bin") {
        return cifar::load(dir, Format::CifarTwoClass, classes);
    }
    if exists("test_batch.bin") || (1..=5).any(|i| exists(&format!("data_batch_{i}.bin"))) {
        return cifar::load(dir, Format::CifarOfficial, classes);
    }
    if idx::FILES.iter().any(|f| exists(f) || exists(&format!("{f}.gz"))) {
        return idx::load(dir, classes);
    }
    if !dir.is_dir() {
        bail!("{}: no such directory", dir.display());
    }
    bail!(
        "{}: no CIFAR-10 or IDX files found (looked for train.bin/test.bin, \
         data_batch_1.bin..data_batch_5.bin/test_batch.bin, train-images-idx3-ubyte[.gz], \
         train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz])",
        dir.display()
    )
}

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

/// Per-channel normalisation: pixels scaled to `[0, 1]`, then
/// `(x - mean[c]) / std[c]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Normalizer {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalizer {
    /// Mean and (population) standard deviation of each channel over every
    /// pixel of `train`, on the `[0, 1]` scale. Pixel values are counted
    /// exactly (a histogram per channel), the moments are then computed in
    /// f64 with two passes over the histogram; the std is floored at 1e-6.
    /// An empty data set gives the identity.
    pub fn fit(train: &Dataset) -> Normalizer {
        let [c, h, w] = train.shape;
        let plane = h * w;
        if train.is_empty() || plane == 0 {
            return Normalizer::identity(c);
        }
        let mut hist = vec![[0u64; 256]; c];
        for image in train.images.chunks_exact(c * plane) {
            for (ch, pixels) in image.chunks_exact(plane).enumerate() {
                let hc = &mut hist[ch];
                for &p in pixels {
                    hc[p as usize] += 1;
                }
            }
        }
        let n = (train.len() * plane) as f64;
        let mut mean = Vec::with_capacity(c);
        let mut std = Vec::with_capacity(c);
        for hc in &hist {
            let m = hc.iter().enumerate().map(|(v, &k)| k as f64 * (v as f64 / 255.0)).sum::<f64>() / n;
            let var =
                hc.iter().enumerate().map(|(v, &k)| k as f64 * (v as f64 / 255.0 - m).powi(2)).sum::<f64>()
                    / n;
            mean.push(m as f32);
            std.push((var.sqrt() as f32).max(1e-6));
        }
        Normalizer { mean, std }
    }

    /// Mean 0, std 1: pixels are only scaled to `[0, 1]`.
    pub fn identity(channels: usize) -> Normalizer {
        Normalizer { mean: vec![0.0; channels], std: vec![1.0; channels] }
    }

    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.mean.len()
    }

    /// Normalises one pixel value of channel `c`: `(x / 255 - mean[c]) / std[c]`.
    #[inline]
    pub fn pixel(&self, c: usize, x: u8) -> f32 {
        (f32::from(x) / 255.0 - self.mean[c]) / self.std[c]
    }

    /// Normalises one CHW image into `out` (same length). The channel count
    /// is `mean.len()`; panics if the lengths don't fit.
    pub fn apply(&self, image: &[u8], out: &mut [f32]) {
        let c = self.channels();
        assert!(c > 0 && self.std.len() == c, "normaliser has {} means and {} stds", c, self.std.len());
        assert_eq!(image.len(), out.len(), "image and output lengths differ");
        assert_eq!(image.len() % c, 0, "image of {} bytes is not {c} equal planes", image.len());
        let plane = image.len() / c;
        if plane == 0 {
            return;
        }
        for (ch, (src, dst)) in image.chunks_exact(plane).zip(out.chunks_exact_mut(plane)).enumerate() {
            let (m, s) = (self.mean[ch], self.std[ch]);
            for (d, &x) in dst.iter_mut().zip(src) {
                *d = (f32::from(x) / 255.0 - m) / s;
            }
        }
    }
}
