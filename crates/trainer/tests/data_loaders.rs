//! Tests of the data layer on small generated files in temporary folders,
//! plus one test on the real shared folder when it is there.

use flate2::write::GzEncoder;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use trainer::data::cifar::{CIFAR10_NAMES, IMAGE_BYTES, RECORD_BYTES};
use trainer::data::*;

use anyhow::Result;
use tempfile::TempDir;

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A distinct pixel pattern for image `id` (never all-equal, differs between ids).
fn pixels(id: usize, len: usize) -> Vec<u8> {
    (0..len).map(|k| ((k * 7 + id * 131 + k / 97) % 256) as u8).collect()
}

fn cifar_record(label: u8, id: usize) -> Vec<u8> {
    let mut r = vec![label];
    r.extend(pixels(id, IMAGE_BYTES));
    r
}

/// Writes records with `labels`, image ids starting at `first_id`; returns the ids.
fn write_cifar(path: &Path, labels: &[u8], first_id: usize) -> Vec<usize> {
    let mut bytes = Vec::new();
    for (k, &l) in labels.iter().enumerate() {
        bytes.extend(cifar_record(l, first_id + k));
    }
    std::fs::write(path, bytes).unwrap();
    (first_id..first_id + labels.len()).collect()
}

fn write_meta(dir: &Path) {
    std::fs::write(dir.join("batches.meta.txt"), CIFAR10_NAMES.join("\n") + "\n\n").unwrap();
}

const TRAIN_LABELS: [u8; 7] = [8, 0, 3, 8, 0, 0, 8];
const TEST_LABELS: [u8; 7] = [0, 8, 8, 3, 0, 8, 3];

/// Two-class layout: train.bin and test.bin with 7 records each (airplane, ship, cat).
fn two_class_dir() -> TempDir {
    let t = TempDir::new().unwrap();
    write_cifar(&t.path().join("train.bin"), &TRAIN_LABELS, 0);
    write_cifar(&t.path().join("test.bin"), &TEST_LABELS, 100);
    write_meta(t.path());
    t
}

/// The expected (image id, raw label) sequence after keeping `keep` raw labels.
fn expected(labels: &[u8], first_id: usize, keep: &[u8]) -> Vec<(usize, u8)> {
    labels.iter().enumerate().filter(|(_, l)| keep.contains(l)).map(|(k, &l)| (first_id + k, l)).collect()
}

/// Checks a loaded CIFAR split against the expected records and the raw->mapped table.
fn check_split(ds: &Dataset, want: &[(usize, u8)], mapped: &dyn Fn(u8) -> u32) {
    assert_eq!(ds.shape, [3, 32, 32]);
    assert_eq!(ds.image_len(), 3072);
    assert_eq!(ds.len(), want.len());
    assert_eq!(ds.images.len(), want.len() * 3072);
    for (i, &(id, raw)) in want.iter().enumerate() {
        assert_eq!(ds.image(i), &pixels(id, IMAGE_BYTES)[..], "record {i} (image id {id})");
        assert_eq!(ds.labels[i], mapped(raw), "record {i} label");
    }
}

fn err(r: Result<Splits>) -> String {
    match r {
        Ok(s) => panic!("expected an error, loaded {} train records", s.train.len()),
        Err(e) => {
            let msg = format!("{e:#}");
            assert!(!msg.contains('\n'), "error is not one line: {msg}");
            msg
        }
    }
}

fn show(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn two_class_round_trip_maps_requested_order() {
    let t = two_class_dir();
    let s = load(t.path(), &names(&["ship", "airplane"])).unwrap();
    assert_eq!(s.format, Format::CifarTwoClass);
    assert_eq!(s.dir, t.path());
    let map = |l: u8| match l {
        8 => 0,
        0 => 1,
        _ => panic!("label {l} should have been dropped"),
    };
    check_split(&s.train, &expected(&TRAIN_LABELS, 0, &[0, 8]), &map);
    check_split(&s.test, &expected(&TEST_LABELS, 100, &[0, 8]), &map);
    assert_eq!(s.train.labels, [0, 1, 0, 1, 1, 0]);
    assert_eq!(s.train.class_names, names(&["ship", "airplane"]));
    assert_eq!(s.test.class_names, names(&["ship", "airplane"]));
}

#[test]
fn empty_class_list_keeps_every_present_class_in_label_order() {
    let t = two_class_dir();
    let s = load(t.path(), &[]).unwrap();
    assert_eq!(s.train.class_names, names(&["airplane", "cat", "ship"]));
    let map = |l: u8| match l {
        0 => 0,
        3 => 1,
        8 => 2,
        _ => unreachable!(),
    };
    check_split(&s.train, &expected(&TRAIN_LABELS, 0, &[0, 3, 8]), &map);
    check_split(&s.test, &expected(&TEST_LABELS, 100, &[0, 3, 8]), &map);
}

#[test]
fn meta_names_crlf_case_and_custom_names() {
    let t = two_class_dir();
    // Custom names (the file, not the standard list, is authoritative), CRLF, trailing blanks.
    let custom = ["plane", "car", "bird", "kitty", "deer", "dog", "frog", "horse", "boat", "truck"];
    std::fs::write(t.path().join("batches.meta.txt"), custom.join("\r\n") + "\r\n\r\n").unwrap();
    let s = load(t.path(), &names(&[" Kitty", "BOAT "])).unwrap();
    assert_eq!(s.train.class_names, names(&["kitty", "boat"]));
    assert_eq!(s.train.labels, [1, 0, 1, 1]);
    // Without the meta file the standard names apply.
    std::fs::remove_file(t.path().join("batches.meta.txt")).unwrap();
    let s = load(t.path(), &names(&["cat"])).unwrap();
    assert_eq!(s.train.len(), 1);
    assert_eq!(s.test.len(), 2);
    assert_eq!(s.train.image(0), &pixels(2, IMAGE_BYTES)[..]);
}

#[test]
fn official_layout_round_trip_across_batches() {
    let t = TempDir::new().unwrap();
    let batch_labels: [[u8; 7]; 5] = [
        [0, 1, 2, 3, 4, 5, 6],
        [7, 8, 9, 0, 1, 2, 3],
        [3, 3, 3, 3, 3, 3, 3],
        [9, 8, 7, 6, 5, 4, 3],
        [0, 0, 0, 0, 0, 0, 0],
    ];
    for (b, labels) in batch_labels.iter().enumerate() {
        write_cifar(&t.path().join(format!("data_batch_{}.bin", b + 1)), labels, 10 * b);
    }
    write_cifar(&t.path().join("test_batch.bin"), &[3, 0, 9, 3, 1, 2, 8], 100);
    // No batches.meta.txt: the standard names apply.
    let s = load(t.path(), &names(&["cat", "airplane"])).unwrap();
    assert_eq!(s.format, Format::CifarOfficial);
    let mut want = Vec::new();
    for (b, labels) in batch_labels.iter().enumerate() {
        want.extend(expected(labels, 10 * b, &[3, 0]));
    }
    let map = |l: u8| if l == 3 { 0 } else { 1 };
    check_split(&s.train, &want, &map);
    check_split(&s.test, &expected(&[3, 0, 9, 3, 1, 2, 8], 100, &[3, 0]), &map);
    assert_eq!(s.train.len(), 1 + 2 + 7 + 1 + 7 + 1);
    assert_eq!(s.train.class_names, names(&["cat", "airplane"]));

    // All classes: the ten standard names, labels unchanged.
    let s = load(t.path(), &[]).unwrap();
    assert_eq!(s.train.class_names, names(&CIFAR10_NAMES));
    assert_eq!(s.train.len(), 35);
    let all: Vec<u32> = batch_labels.iter().flatten().map(|&l| l as u32).collect();
    assert_eq!(s.train.labels, all);
}

/// IDX bytes of images (`n` x rows x cols) and labels.
fn idx_images(n: usize, rows: usize, cols: usize, first_id: usize) -> Vec<u8> {
    let mut b = Vec::new();
    for v in [0x803u32, n as u32, rows as u32, cols as u32] {
        b.extend(v.to_be_bytes());
    }
    for k in 0..n {
        b.extend(pixels(first_id + k, rows * cols));
    }
    b
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(0x801u32.to_be_bytes());
    b.extend((labels.len() as u32).to_be_bytes());
    b.extend(labels);
    b
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

const IDX_TRAIN: [u8; 7] = [5, 0, 4, 1, 9, 2, 1];
const IDX_TEST: [u8; 7] = [7, 2, 1, 0, 4, 1, 4];

/// The four IDX files (4x5 images), each gzipped or not.
fn idx_dir(gz: [bool; 4]) -> TempDir {
    let t = TempDir::new().unwrap();
    let contents =
        [idx_images(7, 4, 5, 0), idx_labels(&IDX_TRAIN), idx_images(7, 4, 5, 100), idx_labels(&IDX_TEST)];
    for ((name, bytes), gz) in idx::FILES.iter().zip(contents).zip(gz) {
        if gz {
            std::fs::write(t.path().join(format!("{name}.gz")), gzip(&bytes)).unwrap();
        } else {
            std::fs::write(t.path().join(name), bytes).unwrap();
        }
    }
    t
}

#[test]
fn idx_round_trip_raw_and_gzipped() {
    for gz in [[false; 4], [true; 4], [true, false, false, true]] {
        let t = idx_dir(gz);
        let s = load(t.path(), &names(&["4", "1"])).unwrap();
        assert_eq!(s.format, Format::Idx);
        assert_eq!(s.train.shape, [1, 4, 5]);
        assert_eq!(s.train.class_names, names(&["4", "1"]));
        for (ds, raw, first) in [(&s.train, &IDX_TRAIN, 0), (&s.test, &IDX_TEST, 100)] {
            let want = expected(raw, first, &[4, 1]);
            assert_eq!(ds.len(), want.len(), "{gz:?}");
            assert_eq!(ds.images.len(), want.len() * 20);
            for (i, &(id, l)) in want.iter().enumerate() {
                assert_eq!(ds.image(i), &pixels(id, 20)[..], "{gz:?} record {i}");
                assert_eq!(ds.labels[i], if l == 4 { 0 } else { 1 });
            }
        }
        assert_eq!(s.train.labels, [0, 1, 1]);
        assert_eq!(s.test.labels, [1, 0, 1, 0]);

        // All classes: the label values present in either split, ascending.
        let s = load(t.path(), &[]).unwrap();
        assert_eq!(s.train.class_names, names(&["0", "1", "2", "4", "5", "7", "9"]));
        assert_eq!(s.train.labels, [4, 0, 3, 1, 6, 2, 1]);
        assert_eq!(s.train.images, (0..7).flat_map(|id| pixels(id, 20)).collect::<Vec<_>>());
    }
}

#[test]
fn dataset_accessors_and_truncate() {
    let t = two_class_dir();
    let mut ds = load(t.path(), &[]).unwrap().train;
    assert_eq!(ds.len(), 7);
    assert!(!ds.is_empty());
    ds.truncate(10);
    assert_eq!(ds.len(), 7);
    ds.truncate(3);
    assert_eq!(ds.len(), 3);
    assert_eq!(ds.images.len(), 3 * 3072);
    assert_eq!(ds.image(2), &pixels(2, IMAGE_BYTES)[..]);
    ds.truncate(0);
    assert!(ds.is_empty());
    assert!(ds.images.is_empty());
}

#[test]
fn class_selection_errors() {
    let t = two_class_dir();
    let dir = show(t.path());
    let m = err(load(t.path(), &names(&["ship", "kitten"])));
    assert!(
        m.contains(&dir) && m.contains("unknown class 'kitten'") && m.contains("airplane, automobile"),
        "{m}"
    );
    let m = err(load(t.path(), &names(&["ship", "dog"])));
    assert!(m.starts_with(&dir), "{m}");
    assert!(m.contains("class 'dog' is not in these files (found: airplane, cat, ship)"), "{m}");
    let m = err(load(t.path(), &names(&["ship", "Ship"])));
    assert!(m.contains("'Ship' is requested twice"), "{m}");

    // A class present in the training split only.
    write_cifar(&t.path().join("test.bin"), &[0, 8, 8], 100);
    let m = err(load(t.path(), &names(&["cat"])));
    assert!(m.contains(&show(&t.path().join("test.bin"))), "{m}");
    assert!(m.contains("class 'cat' has no record in the test split (found there: airplane, ship)"), "{m}");
    // ... and in the test split only.
    write_cifar(&t.path().join("train.bin"), &[0, 8], 0);
    write_cifar(&t.path().join("test.bin"), &[0, 8, 3], 100);
    let m = err(load(t.path(), &names(&["cat"])));
    assert!(m.contains(&show(&t.path().join("train.bin"))) && m.contains("training split"), "{m}");
}

#[test]
fn cifar_byte_errors_name_file_and_offset() {
    let t = two_class_dir();
    let train = t.path().join("train.bin");
    let mut bytes = std::fs::read(&train).unwrap();

    // Truncated: one byte short.
    std::fs::write(&train, &bytes[..bytes.len() - 1]).unwrap();
    let m = err(load(t.path(), &[]));
    assert_eq!(
        m,
        format!(
            "{}: 21510 bytes is not a whole number of 3073-byte CIFAR records (truncated download?)",
            show(&train)
        )
    );
    // Empty.
    std::fs::write(&train, b"").unwrap();
    assert_eq!(err(load(t.path(), &[])), format!("{}: empty file", show(&train)));
    // Bad label byte in record 5.
    bytes[5 * RECORD_BYTES] = 12;
    std::fs::write(&train, &bytes).unwrap();
    assert_eq!(
        err(load(t.path(), &names(&["ship"]))),
        format!("{}: record 5 (byte offset 15365) has label 12; CIFAR-10 labels are 0..=9", show(&train))
    );
    // Missing test file.
    std::fs::remove_file(t.path().join("test.bin")).unwrap();
    let m = err(load(t.path(), &[]));
    assert!(m.contains(&show(&t.path().join("test.bin"))) && m.contains("missing"), "{m}");
}

#[test]
fn official_layout_missing_batch_and_bad_meta() {
    let t = TempDir::new().unwrap();
    for b in [1, 2, 4, 5] {
        write_cifar(&t.path().join(format!("data_batch_{b}.bin")), &[0, 1], 0);
    }
    write_cifar(&t.path().join("test_batch.bin"), &[0, 1], 0);
    let m = err(load(t.path(), &[]));
    assert!(m.contains(&show(&t.path().join("data_batch_3.bin"))) && m.contains("missing"), "{m}");
    write_cifar(&t.path().join("data_batch_3.bin"), &[0, 1], 0);
    std::fs::write(t.path().join("batches.meta.txt"), b"\n\n").unwrap();
    let m = err(load(t.path(), &[]));
    assert!(m.contains("batches.meta.txt: no class names"), "{m}");
    std::fs::write(t.path().join("batches.meta.txt"), b"ok\n\xff\n").unwrap();
    let m = err(load(t.path(), &[]));
    assert!(m.contains("batches.meta.txt: not UTF-8 text (byte offset 3)"), "{m}");
}

#[test]
fn idx_errors_name_file_and_sizes() {
    // Bad magic (a labels file where images belong).
    let t = idx_dir([false; 4]);
    let images = t.path().join(idx::FILES[0]);
    std::fs::write(&images, idx_labels(&[1, 2, 3])).unwrap();
    assert_eq!(
        err(load(t.path(), &[])),
        format!("{}: not an IDX file (magic 0x00000801, expected 0x00000803 for images)", show(&images))
    );
    // Size mismatch: one pixel missing.
    let mut b = idx_images(7, 4, 5, 0);
    b.pop();
    std::fs::write(&images, &b).unwrap();
    assert_eq!(
        err(load(t.path(), &[])),
        format!(
            "{}: IDX header says 7x4x5 = 140 bytes but the file holds 139 bytes after the 16-byte header",
            show(&images)
        )
    );
    // Header cut short, empty file.
    std::fs::write(&images, &b[..10]).unwrap();
    assert!(err(load(t.path(), &[])).contains("10 bytes is too short for the 16-byte IDX header of images"));
    std::fs::write(&images, b"").unwrap();
    assert_eq!(err(load(t.path(), &[])), format!("{}: empty file", show(&images)));
    // Overflowing header dimensions.
    let mut huge = Vec::new();
    for v in [0x803u32, u32::MAX, u32::MAX, u32::MAX] {
        huge.extend(v.to_be_bytes());
    }
    std::fs::write(&images, &huge).unwrap();
    assert!(err(load(t.path(), &[])).contains("bytes but the file holds 0 bytes"));
    std::fs::write(&images, idx_images(7, 4, 5, 0)).unwrap();

    // Labels: count differs from images, and a labels size mismatch.
    let labels = t.path().join(idx::FILES[1]);
    std::fs::write(&labels, idx_labels(&[1, 2, 3, 4, 5, 6])).unwrap();
    assert_eq!(
        err(load(t.path(), &[])),
        format!("{}: 6 labels but {} holds 7 images", show(&labels), show(&images))
    );
    let mut l = idx_labels(&IDX_TRAIN);
    l.push(0);
    std::fs::write(&labels, &l).unwrap();
    let m = err(load(t.path(), &[]));
    assert!(
        m.starts_with(&show(&labels)) && m.contains("header says 7 labels") && m.contains("holds 8"),
        "{m}"
    );
    std::fs::write(&labels, idx_labels(&IDX_TRAIN)).unwrap();

    // Test images of another size.
    let test_images = t.path().join(idx::FILES[2]);
    std::fs::write(&test_images, idx_images(7, 5, 4, 0)).unwrap();
    let m = err(load(t.path(), &[]));
    assert!(m.contains(&show(&test_images)) && m.contains("5x4 but the training images are 4x5"), "{m}");

    // Unknown and absent classes.
    std::fs::write(&test_images, idx_images(7, 4, 5, 0)).unwrap();
    let m = err(load(t.path(), &names(&["cat"])));
    assert!(m.contains("unknown class 'cat'"), "{m}");
    let m = err(load(t.path(), &names(&["3"])));
    assert!(m.contains("class '3' is not in these files (found: 0, 1, 2, 4, 5, 7, 9)"), "{m}");
}

#[test]
fn idx_corrupt_gzip() {
    let t = idx_dir([true; 4]);
    let path = t.path().join(format!("{}.gz", idx::FILES[1]));
    let mut gz = std::fs::read(&path).unwrap();
    let mid = gz.len() / 2;
    gz.truncate(mid);
    std::fs::write(&path, &gz).unwrap();
    let m = err(load(t.path(), &[]));
    assert!(m.starts_with(&format!("{}: corrupt gzip: ", show(&path))), "{m}");
    // Not gzip at all despite the name.
    std::fs::write(&path, b"plain text").unwrap();
    let m = err(load(t.path(), &[]));
    assert!(m.starts_with(&format!("{}: corrupt gzip: ", show(&path))), "{m}");
}

#[test]
fn no_data_files() {
    let t = TempDir::new().unwrap();
    std::fs::write(t.path().join("notes.txt"), b"hi").unwrap();
    let m = err(load(t.path(), &[]));
    assert!(m.starts_with(&show(t.path())) && m.contains("no CIFAR-10 or IDX files found"), "{m}");
    assert!(m.contains("train.bin/test.bin") && m.contains("train-images-idx3-ubyte[.gz]"), "{m}");
    let missing = t.path().join("nope");
    assert_eq!(err(load(&missing, &[])), format!("{}: no such directory", show(&missing)));
}

#[test]
fn normalizer_fit_and_apply() {
    // Two images of 2 channels x 1x2. Channel 0 holds 0, 255, 51, 102 -> 0, 1, .2, .4:
    // mean .4, variance (.16 + .36 + .04 + 0) / 4 = .14. Channel 1 is constant 51 -> .2, std floored.
    let ds = Dataset {
        images: vec![0, 255, 51, 51, 51, 102, 51, 51],
        labels: vec![0, 0],
        shape: [2, 1, 2],
        class_names: names(&["a"]),
    };
    let n = Normalizer::fit(&ds);
    assert!((n.mean[0] - 0.4).abs() < 1e-7, "{:?}", n.mean);
    assert!((n.mean[1] - 0.2).abs() < 1e-7, "{:?}", n.mean);
    assert!((n.std[0] - 0.14f32.sqrt()).abs() < 1e-7, "{:?}", n.std);
    assert_eq!(n.std[1], 1e-6);

    let mut out = [0.0f32; 4];
    n.apply(&[255, 0, 51, 52], &mut out);
    let want = [(1.0 - 0.4) / 0.14f32.sqrt(), -0.4 / 0.14f32.sqrt(), 0.0, (52.0 / 255.0 - 0.2) / 1e-6];
    for (o, w) in out.iter().zip(want) {
        assert!((o - w).abs() <= 1e-5 * w.abs().max(1.0), "{out:?} vs {want:?}");
    }
    let id = Normalizer::identity(2);
    id.apply(&[255, 0, 51, 102], &mut out);
    assert_eq!(out, [1.0, 0.0, 0.2, 0.4]);
    // Empty data: identity.
    let mut empty = ds.clone();
    empty.truncate(0);
    assert_eq!(Normalizer::fit(&empty), Normalizer::identity(2));
}

/// The search alone: no cache folder, downloading off.
fn locate_with(flag: Option<&Path>, env: Option<OsString>, search: &[PathBuf]) -> Result<PathBuf> {
    let first_use =
        FirstUse { download: false, cache: Err(anyhow::anyhow!("no cache")), source: || unreachable!() };
    locate_in(flag, env, search, first_use)
}

#[test]
fn locate_flag_env_and_search_path() {
    let a = TempDir::new().unwrap();
    let b = TempDir::new().unwrap();
    let empty = TempDir::new().unwrap();
    std::fs::write(b.path().join("train.bin"), b"").unwrap();
    let missing = a.path().join("missing");
    let env = Some(OsString::from(b.path()));
    let search = [missing.clone(), empty.path().to_path_buf(), b.path().to_path_buf()];

    // The flag wins over the variable and the search path, the variable over the search path.
    assert_eq!(locate_with(Some(a.path()), env.clone(), &search).unwrap(), a.path());
    assert_eq!(locate_with(None, Some(OsString::from(a.path())), &search).unwrap(), a.path());
    // The search path skips missing folders and folders without data files.
    let b_real = b.path().canonicalize().unwrap();
    assert_eq!(locate_with(None, None, &search).unwrap(), b_real);
    assert_eq!(locate_with(None, Some(OsString::new()), &search).unwrap(), b_real);

    // A missing flag or variable directory is an error, not a fallback.
    let m = locate_with(Some(&missing), env, &search).unwrap_err().to_string();
    assert_eq!(m, format!("--data {}: no such directory", show(&missing)));
    let m = locate_with(None, Some(missing.clone().into()), &search).unwrap_err().to_string();
    assert_eq!(m, format!("CIFAR10_DIR={}: no such directory", show(&missing)));

    // Nothing found: every place is listed, with the way out.
    let m = locate_with(None, None, &search[..2]).unwrap_err().to_string();
    assert!(!m.contains('\n'), "{m}");
    assert!(m.contains(&format!("{} (missing)", show(&missing))), "{m}");
    assert!(m.contains(&format!("{} (no data files)", show(empty.path()))), "{m}");
    assert!(
        m.contains("trainer fetch")
            && m.contains("--no-download")
            && m.contains("--data DIR")
            && m.contains("CIFAR10_DIR"),
        "{m}"
    );

    // The default search path starts at the workspace root and ends with cwd-relative paths.
    let path = default_search_path();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap();
    assert_eq!(path[0], root.join("datasets/cifar10-airplane-ship"));
    assert_eq!(path[1], root.join("datasets/cifar-10-batches-bin"));
    assert!(path[2..].iter().all(|p| p.is_relative()), "{path:?}");
    assert!(path.iter().all(|p| !p.starts_with("..")), "nothing outside the repository: {path:?}");
}

/// The real two-class folder, named by `CIFAR10_DIR` or found through the
/// default search path. The only test that may skip: when the folder is
/// absent it prints a note and returns.
#[test]
fn real_shared_cifar_folder() {
    let named = std::env::var_os("CIFAR10_DIR").map(std::path::PathBuf::from);
    let found = named
        .into_iter()
        .chain(default_search_path())
        .find(|p| p.ends_with("cifar10-airplane-ship") && p.join("train.bin").is_file());
    let Some(dir) = found else {
        eprintln!("note: no cifar10-airplane-ship folder on the search path; real-data test skipped");
        return;
    };
    let start = std::time::Instant::now();
    let s = load(&dir, &names(&["airplane", "ship"])).unwrap();
    let took = start.elapsed();
    eprintln!("loaded {} in {took:?}", dir.display());
    assert_eq!(s.format, Format::CifarTwoClass);
    assert_eq!((s.train.len(), s.test.len()), (10_000, 2_000));
    assert_eq!(s.train.images.len(), 10_000 * 3072);
    assert_eq!(s.train.class_names, names(&["airplane", "ship"]));
    for (ds, each) in [(&s.train, 5_000), (&s.test, 1_000)] {
        assert_eq!(ds.labels.iter().filter(|&&l| l == 0).count(), each);
        assert_eq!(ds.labels.iter().filter(|&&l| l == 1).count(), each);
    }
    // Same records, raw: the first record's label byte and pixels.
    let raw = std::fs::read(dir.join("train.bin")).unwrap();
    assert_eq!(s.train.labels[0], if raw[0] == 0 { 0 } else { 1 });
    assert_eq!(s.train.image(0), &raw[1..RECORD_BYTES]);
    assert_eq!(s.train.image(9_999), &raw[raw.len() - IMAGE_BYTES..]);
    // Generous bound (parallel tests on 2 cores); the load takes tens of milliseconds alone.
    assert!(took.as_secs_f64() < 3.0, "loading took {took:?}");
    let n = Normalizer::fit(&s.train);
    assert!(n.mean.iter().all(|&m| (0.2..0.8).contains(&m)), "{:?}", n.mean);
    assert!(n.std.iter().all(|&d| (0.1..0.5).contains(&d)), "{:?}", n.std);
}
