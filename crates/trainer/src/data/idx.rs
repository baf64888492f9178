//! IDX files (MNIST, Fashion-MNIST, ...): a big-endian header (magic
//! `0x00000803` + count, rows, cols for images; `0x00000801` + count for
//! labels) followed by `u8` data. Each file may be gzipped (`.gz`, or any
//! file that starts with the gzip magic).

use super::{finish_classes, resolve_classes, Counts, Dataset, Format, Splits};
use anyhow::{anyhow, bail, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The four files of the layout: train images, train labels, test images, test labels.
pub const FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];
/// Magic of an IDX file of unsigned bytes with 3 dimensions (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic of an IDX file of unsigned bytes with 1 dimension (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// `dir/name` if it exists, else `dir/name.gz`.
fn find(dir: &Path, name: &str) -> Result<PathBuf> {
    let raw = dir.join(name);
    if raw.is_file() {
        return Ok(raw);
    }
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    bail!("{}[.gz]: missing (the IDX layout is {}, each optionally .gz)", raw.display(), FILES.join(", "))
}

/// The file's bytes, gunzipped if it is named `.gz` or starts with the gzip magic.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    decode_maybe_gz(path, bytes)
}

/// `bytes` (the contents of `path`), gunzipped if `path` is named `.gz` or
/// the bytes start with the gzip magic.
pub fn decode_maybe_gz(path: &Path, bytes: Vec<u8>) -> Result<Vec<u8>> {
    let named_gz = path.extension().is_some_and(|e| e == "gz");
    if bytes.is_empty() {
        bail!("{}: empty file", path.display());
    }
    if !named_gz && !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len().saturating_mul(4));
    flate2::read::MultiGzDecoder::new(&bytes[..])
        .read_to_end(&mut out)
        .map_err(|e| anyhow!("{}: corrupt gzip: {e}", path.display()))?;
    Ok(out)
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Checks the magic and the header length of an IDX file with `dims` dimensions.
fn check_header(path: &Path, bytes: &[u8], magic: u32, what: &str) -> Result<usize> {
    let dims = (magic & 0xff) as usize;
    let header = 4 + 4 * dims;
    if bytes.is_empty() {
        bail!("{}: empty file", path.display());
    }
    if bytes.len() < 4 {
        bail!("{}: {} bytes is too short for an IDX header", path.display(), bytes.len());
    }
    let found = be_u32(bytes, 0);
    if found != magic {
        bail!("{}: not an IDX file (magic 0x{found:08x}, expected 0x{magic:08x} for {what})", path.display());
    }
    if bytes.len() < header {
        bail!(
            "{}: {} bytes is too short for the {header}-byte IDX header of {what} (truncated?)",
            path.display(),
            bytes.len()
        );
    }
    Ok(header)
}

/// Parses an images file (already gunzipped): returns the pixels (header
/// removed, reusing the buffer), the count and `[rows, cols]`.
pub fn parse_images(path: &Path, mut bytes: Vec<u8>) -> Result<(Vec<u8>, usize, [usize; 2])> {
    let header = check_header(path, &bytes, IMAGES_MAGIC, "images")?;
    let [n, rows, cols] = [4, 8, 12].map(|at| be_u32(&bytes, at) as usize);
    if n == 0 || rows == 0 || cols == 0 {
        bail!("{}: IDX header says {n}x{rows}x{cols}: no images", path.display());
    }
    let data = bytes.len() - header;
    let size = n.checked_mul(rows).and_then(|v| v.checked_mul(cols));
    if size != Some(data) {
        let size = size.map_or_else(|| "too many".to_string(), |s| s.to_string());
        bail!(
            "{}: IDX header says {n}x{rows}x{cols} = {size} bytes but the file holds {data} bytes after the \
             {header}-byte header",
            path.display()
        );
    }
    bytes.drain(..header);
    Ok((bytes, n, [rows, cols]))
}

/// Parses a labels file (already gunzipped): returns the labels.
pub fn parse_labels(path: &Path, mut bytes: Vec<u8>) -> Result<Vec<u8>> {
    let header = check_header(path, &bytes, LABELS_MAGIC, "labels")?;
    let n = be_u32(&bytes, 4) as usize;
    let data = bytes.len() - header;
    if n != data {
        bail!(
            "{}: IDX header says {n} labels = {n} bytes but the file holds {data} bytes after the {header}-byte header",
            path.display()
        );
    }
    if n == 0 {
        bail!("{}: IDX header says 0 labels", path.display());
    }
    bytes.drain(..header);
    Ok(bytes)
}

/// One split, unfiltered: pixels, raw labels, `[rows, cols]`, and the images file's path.
struct RawSplit {
    pixels: Vec<u8>,
    labels: Vec<u8>,
    size: [usize; 2],
    images_path: PathBuf,
}

fn read_split(dir: &Path, images: &str, labels: &str) -> Result<RawSplit> {
    let images_path = find(dir, images)?;
    let labels_path = find(dir, labels)?;
    let (pixels, n, size) = parse_images(&images_path, read_maybe_gz(&images_path)?)?;
    let labels = parse_labels(&labels_path, read_maybe_gz(&labels_path)?)?;
    if labels.len() != n {
        bail!(
            "{}: {} labels but {} holds {n} images",
            labels_path.display(),
            labels.len(),
            images_path.display()
        );
    }
    Ok(RawSplit { pixels, labels, size, images_path })
}

fn counts(labels: &[u8]) -> Counts {
    let mut c = [0usize; 256];
    labels.iter().for_each(|&l| c[l as usize] += 1);
    c
}

/// Keeps (in place, preserving order) the records whose label is chosen in
/// `map` and maps their labels.
fn select(raw: RawSplit, map: &[u32; 256], class_names: &[String]) -> Dataset {
    let RawSplit { mut pixels, labels, size: [rows, cols], .. } = raw;
    let len = rows * cols;
    let mut out_labels = Vec::with_capacity(labels.len());
    for (i, &l) in labels.iter().enumerate() {
        let mapped = map[l as usize];
        if mapped != u32::MAX {
            let at = out_labels.len() * len;
            if at != i * len {
                pixels.copy_within(i * len..(i + 1) * len, at);
            }
            out_labels.push(mapped);
        }
    }
    pixels.truncate(out_labels.len() * len);
    Dataset { images: pixels, labels: out_labels, shape: [1, rows, cols], class_names: class_names.to_vec() }
}

/// Loads the IDX layout. Class names are the label values in decimal.
pub(crate) fn load(dir: &Path, classes: &[String]) -> Result<Splits> {
    let train = read_split(dir, FILES[0], FILES[1])?;
    let test = read_split(dir, FILES[2], FILES[3])?;
    if test.size != train.size {
        bail!(
            "{}: images are {}x{} but the training images are {}x{}",
            test.images_path.display(),
            test.size[0],
            test.size[1],
            train.size[0],
            train.size[1]
        );
    }
    let (train_counts, test_counts) = (counts(&train.labels), counts(&test.labels));
    let max_label = (0..256).rev().find(|&l| train_counts[l] + test_counts[l] > 0).unwrap_or(0);
    let table: Vec<String> = (0..=max_label.max(9)).map(|l| l.to_string()).collect();
    let raw = resolve_classes(dir, &table, classes, "the IDX label values")?;
    let train_desc = train.images_path.display().to_string();
    let test_desc = test.images_path.display().to_string();
    let (map, names) = finish_classes(
        dir,
        &table,
        raw.as_deref(),
        (&train_counts, &train_desc),
        (&test_counts, &test_desc),
    )?;
    Ok(Splits {
        train: select(train, &map, &names),
        test: select(test, &map, &names),
        dir: dir.to_path_buf(),
        format: Format::Idx,
    })
}
