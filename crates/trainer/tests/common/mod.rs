//! Helpers of the end-to-end tests: generated data, running the real
//! `trainer` binary, and editing safetensors files byte by byte.
#![allow(dead_code)]

pub mod archive;
pub mod fuzz;
pub mod tfevents;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const RECORD: usize = 3073;

/// `n` CIFAR records, learnable: airplanes (label 0) bright at the top,
/// ships (label 8) bright at the bottom, plus noise. With `constant`, every
/// pixel is 100 (normalised, every input is exactly zero).
pub fn records(n: usize, seed: u64, constant: bool) -> Vec<u8> {
    let mut state = seed;
    let mut noise = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 56) as u8 / 2
    };
    let mut bytes = Vec::with_capacity(n * RECORD);
    for i in 0..n {
        let label = if i % 2 == 0 { 0u8 } else { 8u8 };
        bytes.push(label);
        for _c in 0..3 {
            for row in 0..32 {
                for _col in 0..32 {
                    let bright = (row < 16) == (label == 0);
                    bytes.push(if constant { 100 } else { noise() + if bright { 120 } else { 0 } });
                }
            }
        }
    }
    bytes
}

pub const META: &str = "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n";

/// A two-class CIFAR folder: train.bin, test.bin, batches.meta.txt.
pub fn make_data(dir: &Path, train: usize, test: usize) {
    write_data(dir, records(train, 12345, false), records(test, 999, false));
}

pub fn write_data(dir: &Path, train: Vec<u8>, test: Vec<u8>) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("train.bin"), train).unwrap();
    std::fs::write(dir.join("test.bin"), test).unwrap();
    std::fs::write(dir.join("batches.meta.txt"), META).unwrap();
}

/// The variables that would make the trainer download from somewhere else
/// or through a proxy.
pub const NETWORK_VARS: [&str; 10] = [
    "GAPNET_CIFAR10_URL",
    "GAPNET_CIFAR10_MD5",
    "GAPNET_DOWNLOAD_TIMEOUT",
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
];

/// The `trainer` binary with `args`, without the data environment variable,
/// with first-use downloads off and a cache folder of its own (never the
/// user's): no test reaches the network unless it asks to (tests/download.rs).
pub fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_trainer"));
    cmd.args(args).env_remove("CIFAR10_DIR").env("RUST_BACKTRACE", "0");
    cmd.env("GAPNET_NO_DOWNLOAD", "1")
        .env("GAPNET_CACHE", std::env::temp_dir().join("gapnet-tests-no-cache"));
    for var in NETWORK_VARS {
        cmd.env_remove(var);
    }
    cmd
}

pub fn run(args: &[&str]) -> Output {
    command(args).output().unwrap()
}

/// Runs and asserts success.
pub fn trainer(args: &[&str]) -> Output {
    let out = run(args);
    assert!(out.status.success(), "trainer {args:?} failed:\n{}", text(&out));
    out
}

/// Stdout and stderr, for failure messages.
pub fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts that the run failed with exit status 1 and exactly one error
/// line that contains every one of `needles`, with no panic; returns it.
pub fn one_line_error(out: &Output, needles: &[&str], context: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{context}: expected exit 1\n{}", text(out));
    assert!(!stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"), "{context}: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{context}: expected one error line\n{stderr}");
    // Nothing but warnings beside it.
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            line.starts_with("error: ") || line.starts_with("warning: "),
            "{context}: stray line {line:?}"
        );
    }
    for needle in needles {
        assert!(errors[0].contains(needle), "{context}: {needle:?} not in\n{}", errors[0]);
    }
    errors[0].to_string()
}

/// Asserts that the run failed with exit status 1, no panic, and a parse
/// error in the compiler's form: one `error:` line that contains every one
/// of `needles`, then the offending line (` N | ...`) and a caret line
/// (`   | ^`) beneath it, each short. Returns the three lines.
pub fn caret_error(out: &Output, needles: &[&str], context: &str) -> Vec<String> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{context}: expected exit 1\n{}", text(out));
    assert!(!stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"), "{context}: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.starts_with("warning: ")).collect();
    assert_eq!(lines.len(), 3, "{context}: expected the error, the line and a caret\n{stderr}");
    assert!(lines[0].starts_with("error: "), "{context}: {stderr}");
    let (number, rest) =
        lines[1].trim_start().split_once(" | ").unwrap_or_else(|| panic!("{context}: {stderr}"));
    assert!(number.parse::<usize>().is_ok(), "{context}: {stderr}");
    assert!(lines[0].contains(&format!("line {number}, column ")), "{context}: {stderr}");
    let bar = lines[1].len() - rest.len();
    assert_eq!(&lines[2][bar - 3..bar], " | ", "{context}: the caret line is not aligned\n{stderr}");
    assert!(lines[2][bar..].trim_start().starts_with('^'), "{context}: no caret\n{stderr}");
    for line in &lines {
        assert!(line.len() < 400, "{context}: a line of {} bytes", line.len());
    }
    for needle in needles {
        assert!(lines[0].contains(needle), "{context}: {needle:?} not in\n{}", lines[0]);
    }
    lines.iter().map(|l| l.to_string()).collect()
}

/// A fresh, empty folder under the system's temporary folder.
/// Train `model` for 2 epochs in batches of 10 on `data` into `out`, at
/// learning rate `lr` (else the preset's default), on 2 threads.
pub fn train_briefly(model: &str, data: &Path, out: &Path, lr: Option<&str>) {
    let mut args = vec!["train", "--model", model, "--epochs", "2", "--batch", "10", "--threads", "2"];
    if let Some(lr) = lr {
        args.extend(["--lr", lr]);
    }
    args.extend(["--data", s(data), "--out", s(out)]);
    trainer(&args);
}

pub fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gapnet-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    remove_at_exit(&dir);
    dir
}

/// Folders [`tmp`] made, removed when the test process exits: after the
/// last test, passed or failed (a failed test's folder is kept while the
/// other tests run, for a look; `GAPNET_KEEP_TEST_DIRS=1` keeps them all).
static MADE: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

fn remove_at_exit(dir: &Path) {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| {
        extern "C" fn remove_made() {
            if std::env::var_os("GAPNET_KEEP_TEST_DIRS").is_some() {
                return;
            }
            if let Ok(made) = MADE.lock() {
                for dir in made.iter() {
                    let _ = std::fs::remove_dir_all(dir);
                }
            }
        }
        // SAFETY: atexit(3) with a function that never unwinds (it ignores every error).
        unsafe { libc::atexit(remove_made) };
    });
    if let Ok(mut made) = MADE.lock() {
        made.push(dir.to_path_buf());
    }
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `trainer train` arguments of a small run of `model` into `out` that a
/// later `--resume` with more `--epochs` extends bit for bit (a constant lr,
/// so that extending --epochs changes no earlier epoch); with `resume`, that
/// resume.
pub fn extendable_run<'a>(
    model: &'a str,
    data: &'a Path,
    out: &'a Path,
    epochs: &'a str,
    resume: bool,
) -> Vec<&'a str> {
    let mut args = vec!["train", "--epochs", epochs, "--threads", "2"];
    if resume {
        args.extend(["--resume", s(out)]);
    } else {
        let data = s(data);
        args.extend([
            "--model",
            model,
            "--batch",
            "10",
            "--schedule",
            "constant",
            "--data",
            data,
            "--out",
            s(out),
        ]);
    }
    args
}

/// A safetensors file split into its JSON header and its data bytes.
pub struct Safetensors {
    pub header: serde_json::Value,
    pub data: Vec<u8>,
}

impl Safetensors {
    pub fn parse(bytes: &[u8]) -> Safetensors {
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        Safetensors { header, data: bytes[8 + n..].to_vec() }
    }

    /// The file again (header padded with spaces to a multiple of 8 bytes).
    pub fn bytes(&self) -> Vec<u8> {
        let mut header = serde_json::to_vec(&self.header).unwrap();
        while !header.len().is_multiple_of(8) {
            header.push(b' ');
        }
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend(header);
        out.extend(&self.data);
        out
    }

    /// Our metadata: the JSON object under `__metadata__.gapnet`.
    pub fn gapnet(&self) -> serde_json::Value {
        serde_json::from_str(self.header["__metadata__"]["gapnet"].as_str().unwrap()).unwrap()
    }

    pub fn set_gapnet(&mut self, meta: &serde_json::Value) {
        self.header["__metadata__"]["gapnet"] = serde_json::Value::String(meta.to_string());
    }

    /// The f32 tensor `name`.
    pub fn f32s(&self, name: &str) -> Vec<f32> {
        let offsets = &self.header[name]["data_offsets"];
        let (a, b) = (offsets[0].as_u64().unwrap() as usize, offsets[1].as_u64().unwrap() as usize);
        self.data[a..b].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
    }

    /// Overwrite element `i` of f32 tensor `name`.
    pub fn set_f32(&mut self, name: &str, i: usize, v: f32) {
        let start = self.header[name]["data_offsets"][0].as_u64().unwrap() as usize + 4 * i;
        self.data[start..start + 4].copy_from_slice(&v.to_le_bytes());
    }
}

/// Every column of a run's `metrics.csv` but the timings (seconds,
/// images_per_s): what a run reproduces bit for bit.
pub fn metrics_but_timings(dir: &Path) -> Vec<String> {
    let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    csv.lines()
        .map(|l| {
            let v: Vec<&str> = l.split(',').collect();
            [&v[..7], &v[9..]].concat().join(",")
        })
        .collect()
}
