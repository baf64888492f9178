//! Fuzzing the loaders inside `cargo test`, on a bounded budget: arbitrary
//! bytes, and (far more productive) mutations of valid files: truncation,
//! flipped, inserted and removed bytes, header numbers overwritten with
//! edge values, gzip streams corrupted or rebuilt around mutated contents,
//! whole folders with one file mutated. Every input must give `Ok` with
//! consistent contents or a one-line `Err`, never a panic.
//!
//! `GAPNET_FUZZ_CASES=N` runs N cases per harness (default: a budget that
//! keeps the suite fast); `PROPTEST_RNG_SEED=S` explores other inputs (the
//! default seed is fixed, so CI is reproducible).

mod common;

use proptest::prelude::*;
use proptest::test_runner::Config;
use std::io::Write;
use std::path::Path;
use trainer::data::cifar::{self, RECORD_BYTES};
use trainer::data::idx::{self, IMAGES_MAGIC, LABELS_MAGIC};
use trainer::data::*;

use anyhow::Result;

fn budget(default: u32) -> Config {
    common::fuzz::budget(default, 0x006a_706e_6574)
}

/// A position in a file of any length, as a fraction of it (`u64::MAX` = the end).
#[derive(Clone, Copy, Debug)]
pub struct At(pub u64);

impl At {
    /// `frac` of the way in, `0.0..1.0`.
    pub fn fraction(frac: f64) -> At {
        At((frac * u64::MAX as f64) as u64)
    }
    /// The position in `0..len` (0 when `len` is 0).
    pub fn index(self, len: usize) -> usize {
        ((len as u128 * self.0 as u128) >> 64) as usize
    }
}

fn at() -> impl Strategy<Value = At> {
    any::<u64>().prop_map(At)
}

/// One edit of a file.
#[derive(Clone, Debug)]
pub enum Mutation {
    /// Keep only a prefix.
    Truncate(At),
    /// XOR one byte with a non-zero mask.
    Flip(At, u8),
    Insert(At, Vec<u8>),
    Remove(At, usize),
    /// Overwrite a big-endian u32: at one of the first four header fields
    /// (`field` 0..4) or anywhere (`field` 4), with an edge value.
    Number {
        field: usize,
        at: At,
        value: u32,
    },
    Append(Vec<u8>),
}

fn edge_u32() -> impl Strategy<Value = u32> {
    prop_oneof![
        prop::sample::select(vec![
            0u32,
            1,
            2,
            3,
            9,
            10,
            28,
            32,
            255,
            256,
            3072,
            3073,
            IMAGES_MAGIC,
            LABELS_MAGIC,
            0x0000_0802,
            0x0000_0d03,
            0x7fff_ffff,
            0x8000_0000,
            0xffff_ffff,
        ]),
        any::<u32>(),
    ]
}

pub fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        at().prop_map(Mutation::Truncate),
        (at(), 1u8..).prop_map(|(i, m)| Mutation::Flip(i, m)),
        (at(), prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(i, b)| Mutation::Insert(i, b)),
        (at(), 1usize..64).prop_map(|(i, n)| Mutation::Remove(i, n)),
        (0usize..5, at(), edge_u32()).prop_map(|(field, at, value)| Mutation::Number { field, at, value }),
        prop::collection::vec(any::<u8>(), 1..64).prop_map(Mutation::Append),
    ]
}

pub fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop::collection::vec(mutation(), 1..4)
}

pub fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let len = bytes.len();
    match m {
        Mutation::Truncate(i) => bytes.truncate(i.index(len)),
        Mutation::Flip(i, mask) if len > 0 => bytes[i.index(len)] ^= mask,
        Mutation::Insert(i, b) => {
            let at = i.index(len + 1);
            bytes.splice(at..at, b.iter().copied());
        }
        Mutation::Remove(i, n) if len > 0 => {
            let at = i.index(len);
            bytes.drain(at..(at + n).min(len));
        }
        Mutation::Number { field, at, value } if len >= 4 => {
            let pos = if *field < 4 { (4 * field).min(len - 4) } else { at.index(len - 3) };
            bytes[pos..pos + 4].copy_from_slice(&value.to_be_bytes());
        }
        Mutation::Append(b) => bytes.extend(b),
        _ => {}
    }
}

fn mutated(mut bytes: Vec<u8>, ms: &[Mutation]) -> Vec<u8> {
    for m in ms {
        apply(&mut bytes, m);
    }
    bytes
}

/// `n` CIFAR records with labels from `labels`, cycling.
fn cifar_records(n: usize, labels: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(n * RECORD_BYTES);
    for i in 0..n {
        b.push(labels[i % labels.len()]);
        b.extend((0..RECORD_BYTES - 1).map(|k| ((k * 3 + i * 17) % 256) as u8));
    }
    b
}

fn idx_images(n: u32, rows: u32, cols: u32) -> Vec<u8> {
    let mut b = IMAGES_MAGIC.to_be_bytes().to_vec();
    for v in [n, rows, cols] {
        b.extend(v.to_be_bytes());
    }
    b.extend((0..n * rows * cols).map(|k| (k % 251) as u8));
    b
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut b = LABELS_MAGIC.to_be_bytes().to_vec();
    b.extend((labels.len() as u32).to_be_bytes());
    b.extend(labels);
    b
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// An error is one line (the loaders' promise).
fn one_line<T>(r: &Result<T>) {
    if let Err(e) = r {
        let msg = format!("{e:#}");
        assert!(!msg.contains('\n') && !msg.is_empty(), "error is not one line: {msg:?}");
    }
}

/// Checks what `check_records` accepted.
fn check_cifar(bytes: &[u8]) {
    let r = cifar::check_records(Path::new("f.bin"), bytes);
    one_line(&r);
    if let Ok(counts) = r {
        assert_eq!(counts.iter().sum::<usize>() * RECORD_BYTES, bytes.len());
        assert!(counts[10..].iter().all(|&c| c == 0));
    }
}

/// The IDX stream of `bytes`, named `path` (gunzipped if that applies).
fn idx_stream<'a>(path: &Path, bytes: &'a [u8]) -> Result<idx::Stream<'a>> {
    idx::stream(path, bytes, bytes.len() as u64)
}

/// Checks what the IDX readers accepted (after gunzip, if it applies):
/// exactly the data the header declares, whatever the file holds.
fn check_idx(name: &str, bytes: Vec<u8>) {
    let path = Path::new(name);
    let images = idx_stream(path, &bytes).and_then(|s| idx::parse_images(path, s));
    one_line(&images);
    if let Ok((pixels, n, [rows, cols])) = images {
        assert_eq!(pixels.len(), n * rows * cols);
        assert!(n > 0 && rows > 0 && cols > 0);
    }
    let labels = idx_stream(path, &bytes).and_then(|s| idx::parse_labels(path, s));
    one_line(&labels);
    if let Ok(labels) = labels {
        assert!(!labels.is_empty());
    }
}

/// Checks a folder's load: `Ok` with consistent splits, or a one-line `Err`.
fn check_load(dir: &Path, classes: &[String]) {
    let r = load(dir, classes);
    one_line(&r);
    if let Ok(splits) = r {
        for ds in [&splits.train, &splits.test] {
            assert_eq!(ds.images.len(), ds.len() * ds.image_len());
            assert!(ds.labels.iter().all(|&l| (l as usize) < ds.class_names.len()));
            if !classes.is_empty() {
                assert_eq!(ds.class_names.len(), classes.len());
            }
        }
    }
}

fn classes(all: bool) -> Vec<String> {
    if all {
        Vec::new()
    } else {
        vec!["airplane".to_string(), "ship".to_string()]
    }
}

proptest! {
    #![proptest_config(budget(4000))]

    #[test]
    fn cifar_records_from_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..8000)) {
        check_cifar(&bytes);
    }

    #[test]
    fn cifar_records_mutated(n in 1usize..4, ms in mutations()) {
        check_cifar(&mutated(cifar_records(n, &[0, 8, 3]), &ms));
    }

    #[test]
    fn idx_from_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600), gz in any::<bool>()) {
        check_idx(if gz { "x-idx3-ubyte.gz" } else { "x-idx3-ubyte" }, bytes);
    }

    #[test]
    fn idx_mutated(n in 1u32..4, rows in 1u32..6, cols in 1u32..6, ms in mutations()) {
        check_idx("train-images-idx3-ubyte", mutated(idx_images(n, rows, cols), &ms));
        check_idx("train-labels-idx1-ubyte", mutated(idx_labels(&[1, 0, 7][..n as usize]), &ms));
    }

    #[test]
    fn idx_gzip_corrupted_or_wrapping_mutated_contents(n in 1u32..4, ms in mutations(), inside in any::<bool>()) {
        let images = idx_images(n, 4, 3);
        let bytes = if inside { gzip(&mutated(images, &ms)) } else { mutated(gzip(&images), &ms) };
        check_idx("train-images-idx3-ubyte.gz", bytes);
    }
}

proptest! {
    #![proptest_config(budget(500))]

    #[test]
    fn a_cifar_folder_with_one_file_mutated(which in 0usize..3, ms in mutations(), all in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let mut files = [
            ("train.bin", cifar_records(4, &[0, 8, 3])),
            ("test.bin", cifar_records(2, &[8, 0])),
            ("batches.meta.txt", cifar::CIFAR10_NAMES.join("\n").into_bytes()),
        ];
        files[which].1 = mutated(std::mem::take(&mut files[which].1), &ms);
        for (name, bytes) in &files {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
        check_load(dir.path(), &classes(all));
    }

    #[test]
    fn an_idx_folder_with_one_file_mutated(which in 0usize..4, ms in mutations(), gz in any::<bool>(), all in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let contents = [idx_images(3, 4, 4), idx_labels(&[0, 1, 1]), idx_images(2, 4, 4), idx_labels(&[1, 0])];
        for (k, (name, bytes)) in idx::FILES.iter().zip(contents).enumerate() {
            let bytes = if k == which { mutated(bytes, &ms) } else { bytes };
            if gz {
                std::fs::write(dir.path().join(format!("{name}.gz")), gzip(&bytes)).unwrap();
            } else {
                std::fs::write(dir.path().join(name), bytes).unwrap();
            }
        }
        let classes = if all { Vec::new() } else { vec!["0".to_string(), "1".to_string()] };
        check_load(dir.path(), &classes);
    }
}

#[test]
fn the_mutations_reach_every_kind_of_error() {
    // The harness is only as good as what it provokes: a few fixed
    // mutations of valid files must hit distinct checks.
    let rec = cifar_records(2, &[0, 8]);
    let errs = |bytes: Vec<u8>| format!("{:#}", cifar::check_records(Path::new("f"), &bytes).unwrap_err());
    assert!(
        errs(mutated(rec.clone(), &[Mutation::Truncate(At::fraction(0.3))])).contains("not a whole number")
    );
    assert!(errs(mutated(rec.clone(), &[Mutation::Flip(At::fraction(0.0), 0x40)])).contains("has label 64"));
    let img = idx_images(2, 3, 3);
    let parse = |bytes: Vec<u8>| {
        let i = Path::new("i");
        format!("{:#}", idx_stream(i, &bytes).and_then(|s| idx::parse_images(i, s)).unwrap_err())
    };
    let number = |field, value| Mutation::Number { field, at: At::fraction(0.0), value };
    assert!(parse(mutated(img.clone(), &[number(0, 0x0d03)])).contains("not an IDX file"));
    assert!(parse(mutated(img.clone(), &[number(1, 0xffff_ffff)])).contains("IDX header says 4294967295x3x3"));
    assert!(parse(mutated(img, &[number(2, 0)])).contains("no images"));
    let gz = mutated(gzip(&idx_images(2, 3, 3)), &[Mutation::Truncate(At::fraction(0.6))]);
    let i = Path::new("i.gz");
    let e = idx_stream(i, &gz).and_then(|s| idx::parse_images(i, s)).unwrap_err();
    assert!(format!("{e:#}").contains("corrupt gzip"), "{e:#}");
    // More data inflated than the header declares: refused after one byte more.
    let mut long = idx_images(2, 3, 3);
    long.push(7);
    let e = idx_stream(i, &gzip(&long)).and_then(|s| idx::parse_images(i, s)).unwrap_err();
    assert!(format!("{e:#}").contains("more data than its header declares"), "{e:#}");
}
