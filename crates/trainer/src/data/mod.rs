//! The data layer: finding the data set, loading CIFAR-10 binary records or
//! IDX (MNIST family) files into memory as `u8` CHW images, picking classes
//! and mapping their labels onto `0..k`, and per-channel normalisation.
//!
//! Every error is a single line that names the file (or directory) and, where
//! it applies, the record index and byte offset. Bad bytes never panic.

pub mod augment;
pub mod cache;
pub mod cifar;
mod dataset;
pub mod download;
pub mod idx;
mod tar_guard;
pub mod unpack;

use anyhow::{bail, Result};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

pub use dataset::{Dataset, Format, Splits, DATA_FILE_LIMIT};

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
        // An archive placed in the cache by hand needs no network.
        if let Ok(dir) = &first_use.cache {
            let target = cache::Target::cache(dir.clone());
            if target.dir.join(cache::ARCHIVE).is_file() {
                return download::ensure_offline(&target, &(first_use.source)()?);
            }
        }
        let archive = match &first_use.cache {
            Ok(dir) => format!(", {} (no archive)", dir.join(cache::ARCHIVE).display()),
            Err(_) => String::new(),
        };
        bail!(
            "no data directory found; looked in: {looked}{archive}. Downloading is off (--no-download or \
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
