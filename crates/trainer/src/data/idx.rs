//! IDX files (MNIST, Fashion-MNIST, ...): a big-endian header (magic
//! `0x00000803` + count, rows, cols for images; `0x00000801` + count for
//! labels) followed by `u8` data. Each file may be gzipped (`.gz`, or any
//! file that starts with the gzip magic). The header is read first and
//! bounds everything after it: exactly the data it declares is read, so a
//! wrong size or a gzip bomb is refused without reading more than that.

use super::dataset::{finish_classes, resolve_classes, Counts, Dataset, Format, Splits, DATA_FILE_LIMIT};
use anyhow::{anyhow, bail, Result};
use flate2::read::MultiGzDecoder;
use graph::bounded;
use std::io::{BufReader, Read};
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

/// `dir/name` if it is there, else `dir/name.gz` (anything at the name
/// counts: a directory or a FIFO there is refused by the reader, by name).
fn find(dir: &Path, name: &str) -> Result<PathBuf> {
    let raw = dir.join(name);
    if bounded::present(&raw) {
        return Ok(raw);
    }
    let gz = dir.join(format!("{name}.gz"));
    if bounded::present(&gz) {
        return Ok(gz);
    }
    bail!("{}[.gz]: missing (the IDX layout is {}, each optionally .gz)", raw.display(), FILES.join(", "))
}

/// The contents of an IDX file as a stream: gunzipped on the fly if the
/// file is named `.gz` or starts with the gzip magic. Nothing is read into
/// memory before the header says how much data to expect.
pub struct Stream<'a> {
    reader: Box<dyn Read + 'a>,
    /// The file's size when it is not compressed: a size that disagrees
    /// with the header is refused before the data is read.
    raw_len: Option<u64>,
}

impl Stream<'_> {
    fn error(&self, path: &Path, e: std::io::Error) -> anyhow::Error {
        if self.raw_len.is_none() {
            anyhow!("{}: corrupt gzip: {e}", path.display())
        } else {
            anyhow!("{}: {e}", path.display())
        }
    }

    /// Reads up to `limit` bytes, fewer only at the end of the stream.
    fn read_up_to(&mut self, path: &Path, limit: u64) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(limit.min(DATA_FILE_LIMIT) as usize);
        let result = (&mut self.reader).take(limit).read_to_end(&mut out);
        result.map_err(|e| self.error(path, e))?;
        Ok(out)
    }
}

/// A stream over `reader`, the `len` bytes of the file `path`.
pub fn stream<'a>(path: &Path, mut reader: impl Read + 'a, len: u64) -> Result<Stream<'a>> {
    if len == 0 {
        bail!("{}: empty file", path.display());
    }
    let mut magic = Vec::with_capacity(2);
    (&mut reader).take(2).read_to_end(&mut magic).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let named_gz = path.extension().is_some_and(|e| e == "gz");
    let gz = named_gz || magic == [0x1f, 0x8b];
    let whole = std::io::Cursor::new(magic).chain(reader);
    Ok(if gz {
        Stream { reader: Box::new(MultiGzDecoder::new(BufReader::new(whole))), raw_len: None }
    } else {
        Stream { reader: Box::new(whole), raw_len: Some(len) }
    })
}

/// A stream over a regular file (anything else is refused by its type).
pub fn open(path: &Path) -> Result<Stream<'static>> {
    let (file, len) = bounded::open_regular(path).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    stream(path, file, len)
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Reads and checks the header of an IDX file of `magic` (its low byte
/// is the number of dimensions): returns the header's bytes.
fn read_header(path: &Path, s: &mut Stream, magic: u32, what: &str) -> Result<Vec<u8>> {
    let dims = (magic & 0xff) as usize;
    let header = 4 + 4 * dims;
    let bytes = s.read_up_to(path, header as u64)?;
    if bytes.is_empty() {
        bail!("{}: empty file", path.display());
    }
    if bytes.len() < 4 {
        bail!("{}: {} bytes is too short for an IDX header", path.display(), bytes.len());
    }
    let found = be_u32(&bytes, 0);
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
    Ok(bytes)
}

/// Reads exactly the `size` bytes of data the header declares (`desc`
/// says how, e.g. `7x28x28`; `None` = more than a u64). At most one byte
/// more is read: a gzip stream that inflates beyond the declared size (a
/// gzip bomb) is refused there, with no more than `size` bytes in memory.
fn read_data(path: &Path, mut s: Stream, header: usize, size: Option<u64>, desc: &str) -> Result<Vec<u8>> {
    let says = format!(
        "IDX header says {desc} = {} bytes",
        size.map_or_else(|| "too many".to_string(), |v| v.to_string())
    );
    if let Some(len) = s.raw_len {
        let data = len.saturating_sub(header as u64);
        if size != Some(data) {
            bail!(
                "{}: {says} but the file holds {data} bytes after the {header}-byte header",
                path.display()
            );
        }
    }
    let size = match size {
        Some(size) if size <= DATA_FILE_LIMIT => size,
        _ => bail!(
            "{}: {says}, more than the {} a data file may hold",
            path.display(),
            bounded::size(DATA_FILE_LIMIT)
        ),
    };
    let data = s.read_up_to(path, size + 1)?;
    if data.len() as u64 > size {
        bail!(
            "{}: more data than its header declares ({says} after the {header}-byte header)",
            path.display()
        );
    }
    if (data.len() as u64) < size {
        bail!(
            "{}: {says} but the file holds {} bytes after the {header}-byte header",
            path.display(),
            data.len()
        );
    }
    Ok(data)
}

/// Reads an images file: returns the pixels, the count and `[rows, cols]`.
pub fn parse_images(path: &Path, mut s: Stream) -> Result<(Vec<u8>, usize, [usize; 2])> {
    let header = read_header(path, &mut s, IMAGES_MAGIC, "images")?;
    let [n, rows, cols] = [4, 8, 12].map(|at| u64::from(be_u32(&header, at)));
    if n == 0 || rows == 0 || cols == 0 {
        bail!("{}: IDX header says {n}x{rows}x{cols}: no images", path.display());
    }
    let size = n.checked_mul(rows).and_then(|v| v.checked_mul(cols));
    let pixels = read_data(path, s, header.len(), size, &format!("{n}x{rows}x{cols}"))?;
    Ok((pixels, n as usize, [rows as usize, cols as usize]))
}

/// Reads a labels file: returns the labels.
pub fn parse_labels(path: &Path, mut s: Stream) -> Result<Vec<u8>> {
    let header = read_header(path, &mut s, LABELS_MAGIC, "labels")?;
    let n = u64::from(be_u32(&header, 4));
    let labels = read_data(path, s, header.len(), Some(n), &format!("{n} labels"))?;
    if n == 0 {
        bail!("{}: IDX header says 0 labels", path.display());
    }
    Ok(labels)
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
    let (pixels, n, size) = parse_images(&images_path, open(&images_path)?)?;
    let labels = parse_labels(&labels_path, open(&labels_path)?)?;
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
