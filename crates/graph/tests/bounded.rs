//! The bounded readers: regular files only, sizes checked before reading,
//! safetensors read by its framing, outputs only over regular files, and
//! TOML errors as a line with a caret.

use std::ffi::CString;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::time::{Duration, Instant};

use graph::bounded::{self, read_safetensors, SAFETENSORS_HEADER_LIMIT};
use graph::{preset, spec::toml_error, write_atomic, Arena, Init, Metadata, ModelSpec, Plan, Shape};

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo {}", path.display());
}

fn checkpoint() -> Vec<u8> {
    let mut p = Plan::new(&preset("seed-gap").unwrap(), Shape::new(3, 32, 32), 2).unwrap();
    p.initialize(Init::He, 1);
    p.to_safetensors(&[Arena::Params], Metadata::new())
}

fn err(path: &Path) -> String {
    read_safetensors(path, "f").unwrap_err().to_string()
}

#[test]
fn non_regular_files_are_refused_by_type_without_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    let lo = dir.path().join("loop");
    std::os::unix::fs::symlink(&lo, &lo).unwrap();
    let started = Instant::now();
    for (path, kind) in [
        (Path::new("/dev/zero"), "a character device, not a regular file"),
        (dir.path(), "a directory, not a regular file"),
        (&fifo, "a FIFO (named pipe), not a regular file"),
        (&lo, "a symlink loop"),
    ] {
        let e = bounded::open_regular(path).unwrap_err().to_string();
        assert!(e.contains(kind), "{}: {e}", path.display());
        let e = err(path);
        assert!(e.starts_with("f: cannot read the checkpoint: ") && e.contains(kind), "{e}");
        assert!(bounded::present(path));
    }
    assert!(started.elapsed() < Duration::from_secs(2), "a FIFO must not be waited on");
    let missing = dir.path().join("missing");
    assert!(!bounded::present(&missing));
    assert_eq!(bounded::open_regular(&missing).unwrap_err().kind(), std::io::ErrorKind::NotFound);
}

#[test]
fn capped_reads_refuse_a_file_by_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spec.toml");
    std::fs::write(&path, "x".repeat(2000)).unwrap();
    assert_eq!(bounded::read_text(&path, 2000, "spec").unwrap().len(), 2000);
    let e = bounded::read_text(&path, 1024, "model spec file").unwrap_err().to_string();
    assert_eq!(e, "2.0 KiB (2,000 bytes) is more than the 1 KiB a model spec file may hold");
    // Sparse: five gigabytes of nothing, refused by the size alone.
    let sparse = dir.path().join("sparse");
    File::create(&sparse).unwrap().set_len(5_000_000_001).unwrap();
    let e = bounded::read_capped(&sparse, 1 << 20, "model spec file").unwrap_err().to_string();
    assert!(e.starts_with("4.7 GiB (5,000,000,001 bytes) is more than the 1 MiB"), "{e}");
    std::fs::write(&path, b"ok\n\xff").unwrap();
    assert_eq!(
        bounded::read_text(&path, 100, "x").unwrap_err().to_string(),
        "not UTF-8 text (byte offset 3)"
    );
}

#[test]
fn safetensors_are_read_by_their_framing() {
    let dir = tempfile::tempdir().unwrap();
    let good = checkpoint();
    let path = dir.path().join("c.safetensors");
    std::fs::write(&path, &good).unwrap();
    assert_eq!(read_safetensors(&path, "f").unwrap(), good);

    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"short".to_vec(), "5 bytes is too short for the 8-byte header length"),
        (b"these are my notes".to_vec(), "more than the 16 MiB limit"),
        ([&(SAFETENSORS_HEADER_LIMIT + 1).to_le_bytes()[..], b"{}"].concat(), "more than the 16 MiB limit"),
        ([&100u64.to_le_bytes()[..], b"{}"].concat(), "header length is 100 bytes but only 2 follow it"),
        (good[..good.len() - 9].to_vec(), "follow it; truncated?)"),
        ([&good[..], b"extra"].concat(), "follow it)"),
        ([&2u64.to_le_bytes()[..], b"[]"].concat(), "its header is not a JSON object"),
        (
            [&33u64.to_le_bytes()[..], br#"{"a":{"dtype":"F32","shape":[1]}}"#].concat(),
            "tensor a has no data_offsets",
        ),
    ];
    for (bytes, needle) in cases {
        std::fs::write(&path, &bytes).unwrap();
        let e = err(&path);
        assert!(e.starts_with("f: not a readable safetensors file (") && e.contains(needle), "{needle}: {e}");
        assert!(e.len() < 200, "{e}");
    }
    // A sparse file behind a valid header: refused by its size, unread.
    let sparse = dir.path().join("sparse.safetensors");
    std::fs::write(&sparse, &good).unwrap();
    File::options().write(true).open(&sparse).unwrap().set_len(5_000_000_000).unwrap();
    let started = Instant::now();
    assert!(err(&sparse).contains("is more than the 4 GiB a checkpoint may hold"), "{}", err(&sparse));
    File::options().write(true).open(&sparse).unwrap().set_len(3_000_000_000).unwrap();
    assert!(err(&sparse).contains("follow it)"), "{}", err(&sparse));
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn outputs_replace_only_regular_files() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    let e = write_atomic(&fifo, b"x").unwrap_err().to_string();
    assert_eq!(e, "a FIFO (named pipe), not a regular file; refusing to replace it");
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo(), "the FIFO was replaced");
    let e = write_atomic(dir.path(), b"x").unwrap_err().to_string();
    assert!(e.starts_with("a directory, not a regular file"), "{e}");
    // Only the check on a device: nothing is written there.
    let e = bounded::check_output(Path::new("/dev/null")).unwrap_err().to_string();
    assert!(e.starts_with("a character device"), "{e}");
    let file = dir.path().join("file");
    write_atomic(&file, b"one").unwrap();
    write_atomic(&file, b"two").unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), b"two");
    let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(leftovers, 2, "only the FIFO and the file");
}

#[test]
fn toml_errors_show_the_line_and_a_caret() {
    let text = "name = \"x\"\n[[layers]]\ntype = \"lstm\"\n";
    let e = ModelSpec::from_toml(text).unwrap_err();
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(lines.len(), 3, "{e}");
    assert!(lines[0].starts_with("line 3, column 8: unknown variant `lstm`"), "{e}");
    assert_eq!(lines[1], " 3 | type = \"lstm\"");
    assert_eq!(lines[2], "   |        ^^^^^^");
    // A misspelt key: the caret is on the key, not on its table's header
    // (where toml reports it); a key of a later table is not taken.
    let typo =
        "name = \"x\"\n[[layers]]\ntype = \"conv\"\n  filtres = 4\nsize = 3\n[[layers]]\nfiltres = 1\n";
    let e = ModelSpec::from_toml(typo).unwrap_err();
    let lines: Vec<&str> = e.lines().collect();
    assert!(lines[0].starts_with("line 4, column 3: unknown field `filtres`"), "{e}");
    assert_eq!(lines[1], " 4 |   filtres = 4");
    assert_eq!(lines[2], "   |   ^^^^^^^");
    let header_only = toml_error("[[layers]]\n[[layers]]\nk = 1\n", "unknown field `k`", Some(0..10));
    assert!(header_only.starts_with("line 1, column 1"), "{header_only}");
    // A syntax error on a megabyte-long line: a window around the column.
    let long = format!("name = \"x\"\nlayers = [{}", "[".repeat(1 << 20));
    let e = ModelSpec::from_toml(&long).unwrap_err();
    assert!(e.len() < 600 && e.lines().count() == 3, "{} bytes: {}", e.len(), &e[..e.len().min(600)]);
    assert!(e.starts_with("line 2, column "), "{e}");
    let (shown, caret) = (e.lines().nth(1).unwrap(), e.lines().nth(2).unwrap());
    assert_eq!(shown.find(" | "), caret.find(" | "));
    // Byte offsets inside a multi-byte character, spans past the end: no panic.
    let e = toml_error("é\nx", "m", Some(1..99));
    assert!(e.starts_with("line 1, column 1: m"), "{e}");
    assert_eq!(toml_error("", "only the message", None), "only the message");
}
