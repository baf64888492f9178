//! TensorBoard's events files, read back with the independent reader of
//! `common::tfevents`: every epoch exactly once with the values of
//! `metrics.csv`, across an interrupted run and its resume, a crash that left
//! the file ahead of the checkpoint with a torn record, and a compare; none
//! with `--no-tensorboard`.

mod common;

use std::path::{Path, PathBuf};

use common::tfevents::{self, assert_match_csv};
use common::{command, make_data, s, text, tmp, trainer};

/// A run of seed-gap on 64 training images in batches of 16 (4 batches an
/// epoch), with `extra` flags.
fn args(data: &Path, out: &Path, epochs: &str, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> =
        ["train", "--model", "seed-gap", "--batch", "16", "--threads", "1", "--seed", "3"]
            .map(String::from)
            .to_vec();
    a.extend(["--epochs", epochs, "--data", s(data), "--out", s(out)].map(String::from));
    a.extend(extra.iter().map(|e| e.to_string()));
    a
}

fn strs(a: &[String]) -> Vec<&str> {
    a.iter().map(String::as_str).collect()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The operations a run of `a` performs (`GAPNET_TRACE_OPS`): number, what, path.
fn trace(a: &[String]) -> Vec<(u64, String, String)> {
    let out = command(&strs(a)).env("GAPNET_TRACE_OPS", "1").output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| {
            let (n, rest) = l.strip_prefix("op ")?.split_once(": ")?;
            let (what, path) = rest.split_once(' ')?;
            Some((n.parse().ok()?, what.to_string(), path.to_string()))
        })
        .collect()
}

/// The number of the `nth` (from 1) operation `what` on a file whose name
/// contains `name`.
fn nth_op(ops: &[(u64, String, String)], what: &str, name: &str, nth: usize) -> u64 {
    ops.iter()
        .filter(|(_, w, p)| w == what && Path::new(p).file_name().unwrap().to_string_lossy().contains(name))
        .nth(nth - 1)
        .unwrap_or_else(|| panic!("no {what} #{nth} of {name} in {ops:?}"))
        .0
}

#[test]
fn a_run_writes_every_epoch_once_with_the_values_of_metrics_csv() {
    let root = tmp("tb-run");
    let (data, out) = (root.join("data"), root.join("run"));
    make_data(&data, 64, 32);
    trainer(&strs(&args(&data, &out, "3", &["--limit-test", "32"])));
    let walls = assert_match_csv(&out, true, "a run of 3 epochs");
    assert_eq!(walls.len(), 3);
    let (_, rows) = tfevents::csv(&out);
    assert!(rows.iter().all(|r| r.iter().all(|v| v.is_finite())), "{rows:?}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn an_interrupted_run_keeps_its_file_and_the_resume_appends_to_it() {
    let root = tmp("tb-stop");
    let data = root.join("data");
    make_data(&data, 64, 32);
    // SIGTERM right after epoch 2's checkpoint: epoch 3 stops after its
    // first batch with a mid-epoch checkpoint.
    let commit =
        nth_op(&trace(&args(&data, &root.join("traced"), "4", &[])), "rename", "state.safetensors", 2);
    let dir = root.join("run");
    let a = args(&data, &dir, "4", &[]);
    let out = command(&strs(&a)).env("GAPNET_SIGNAL_AFTER_OPS", commit.to_string()).output().unwrap();
    assert_eq!(out.status.code(), Some(143), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("interrupted at epoch 3, batch 1 of 4"),
        "{}",
        text(&out)
    );
    let file = tfevents::the_file(&dir, "stopped");
    let before = assert_match_csv(&dir, true, "stopped");
    assert_eq!(before.len(), 2);

    let resumed = trainer(&["train", "--resume", s(&dir)]);
    assert!(!stdout(&resumed).contains("tfevents"), "the file needed no repair:\n{}", text(&resumed));
    assert_eq!(tfevents::the_file(&dir, "resumed"), file, "the file was replaced");
    let after = assert_match_csv(&dir, true, "resumed");
    assert_eq!((after.len(), &after[..2]), (4, &before[..]));
    std::fs::remove_dir_all(&root).unwrap();
}

/// The bytes of `path` with the first half of its last record appended: a
/// record torn by a crash.
fn tear(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    let records = tfevents::records(&bytes).unwrap();
    let last = 16 + records.last().unwrap().len();
    let start = bytes.len() - last;
    let mut torn = bytes.clone();
    torn.extend_from_slice(&bytes[start..start + last / 2]);
    std::fs::write(path, torn).unwrap();
}

#[test]
fn a_crash_ahead_of_the_checkpoint_with_a_torn_record_is_rebuilt_on_resume() {
    let root = tmp("tb-crash");
    let data = root.join("data");
    make_data(&data, 64, 32);
    // Killed right after epoch 3's record is on disk, before its checkpoint
    // (one every 2 epochs): the file holds an epoch the checkpoint lacks.
    let extra = ["--checkpoint-every", "2"];
    let ops = trace(&args(&data, &root.join("traced"), "4", &extra));
    let crash = nth_op(&ops, "open", "tfevents", 3) + 2;
    assert_eq!(ops[crash as usize - 1].1, "fsync");
    let dir = root.join("run");
    let a = args(&data, &dir, "4", &extra);
    let out = command(&strs(&a)).env("GAPNET_FAULT_AFTER_OPS", crash.to_string()).output().unwrap();
    assert_eq!(out.status.code(), Some(137), "{}", text(&out));
    let file = tfevents::the_file(&dir, "crashed");
    let before = assert_match_csv(&dir, true, "crashed");
    assert_eq!(before.len(), 3);
    tear(&file);
    assert!(tfevents::records(&std::fs::read(&file).unwrap()).is_err());

    let resumed = trainer(&["train", "--resume", s(&dir)]);
    assert!(
        stdout(&resumed).contains("events.out.tfevents.* (stale: not the checkpoint's)"),
        "{}",
        text(&resumed)
    );
    let rebuilt = tfevents::the_file(&dir, "resumed");
    assert!(rebuilt > file, "rebuilt as {rebuilt:?}, not later than {file:?}");
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 0, "the old file is emptied, not removed");
    let after = assert_match_csv(&dir, true, "resumed");
    // The committed epochs kept their times; epoch 3 was trained again.
    assert_eq!((after.len(), &after[..2]), (4, &before[..2]));
    assert!(after[2] > before[2]);
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_finished_run_s_damaged_or_missing_file_is_rebuilt_by_resume() {
    let root = tmp("tb-repair");
    let data = root.join("data");
    make_data(&data, 64, 32);
    let dir = root.join("run");
    trainer(&strs(&args(&data, &dir, "2", &[])));
    let walls = assert_match_csv(&dir, true, "finished");
    let repair = |context: &str, why: &str| {
        let out = trainer(&["train", "--resume", s(&dir)]);
        let note = format!("events.out.tfevents.* ({why})");
        assert!(stdout(&out).contains(&note), "{context}: no {note:?} in\n{}", text(&out));
        assert_match_csv(&dir, true, context)
    };
    // A torn record after the last epoch.
    tear(&tfevents::the_file(&dir, "finished"));
    assert_eq!(repair("torn", "stale: not the checkpoint's"), walls);
    // A corrupt byte in epoch 2's record: its time is lost, its values are not.
    let file = tfevents::the_file(&dir, "repaired");
    let mut bytes = std::fs::read(&file).unwrap();
    let n = bytes.len();
    bytes[n - 8] ^= 0x40;
    std::fs::write(&file, bytes).unwrap();
    assert_eq!(repair("corrupt", "stale: not the checkpoint's")[0], walls[0]);
    // A second, older events file, as a crash mid-rebuild could leave: emptied.
    let older = dir.join("events.out.tfevents.1000000000.old");
    std::fs::copy(tfevents::the_file(&dir, "repaired"), &older).unwrap();
    repair("two files", "stale: not the checkpoint's");
    assert_eq!(std::fs::metadata(&older).unwrap().len(), 0);
    // No file at all.
    std::fs::remove_file(tfevents::the_file(&dir, "repaired")).unwrap();
    repair("removed", "missing");
    // A file that is whole and holds exactly the committed epochs is left alone.
    let file = tfevents::the_file(&dir, "repaired");
    let bytes = std::fs::read(&file).unwrap();
    let out = trainer(&["train", "--resume", s(&dir)]);
    assert!(!stdout(&out).contains("tfevents"), "{}", text(&out));
    assert!(std::fs::read(&file).unwrap() == bytes);
    std::fs::remove_dir_all(&root).unwrap();
}

fn config_says(dir: &Path) -> bool {
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    config["tensorboard"].as_bool().unwrap()
}

#[test]
fn no_tensorboard_writes_no_events_file_and_resume_keeps_or_takes_the_choice() {
    let root = tmp("tb-off");
    let data = root.join("data");
    make_data(&data, 64, 32);
    let off = root.join("off");
    trainer(&strs(&args(&data, &off, "1", &["--no-tensorboard"])));
    assert!(tfevents::files(&off).is_empty());
    assert!(!config_says(&off));
    // The resume command the trainer prints keeps the choice.
    trainer(&["train", "--resume", s(&off), "--epochs", "2"]);
    assert!(tfevents::files(&off).is_empty());

    let on = root.join("on");
    trainer(&strs(&args(&data, &on, "1", &[])));
    assert!(config_says(&on));
    tfevents::the_file(&on, "on");
    let out = trainer(&["train", "--resume", s(&on), "--epochs", "2", "--no-tensorboard"]);
    assert!(stdout(&out).contains("removed events.out.tfevents."), "{}", text(&out));
    assert!(tfevents::files(&on).is_empty());
    assert!(!config_says(&on));

    for sub in ["train", "compare"] {
        let help = trainer(&[sub, "--help"]);
        assert!(stdout(&help).contains("--no-tensorboard"), "{sub} --help:\n{}", text(&help));
    }
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn every_model_of_a_compare_is_a_run_of_its_own() {
    let root = tmp("tb-compare");
    let data = root.join("data");
    make_data(&data, 64, 32);
    let compare = |out: &PathBuf, extra: &[&str]| {
        let mut a = vec!["compare", "--models", "seed-gap,seed-fc", "--epochs", "2", "--batch", "16"];
        a.extend(["--threads", "1", "--data", s(&data), "--out", s(out)]);
        a.extend(extra);
        trainer(&a);
    };
    let with = root.join("with");
    compare(&with, &[]);
    assert!(tfevents::files(&with).is_empty(), "the comparison's own folder is no run");
    for model in ["seed-gap", "seed-fc"] {
        assert_eq!(assert_match_csv(&with.join(model), true, model).len(), 2);
    }
    let without = root.join("without");
    compare(&without, &["--no-tensorboard"]);
    for folder in [without.clone(), without.join("seed-gap"), without.join("seed-fc")] {
        assert!(tfevents::files(&folder).is_empty(), "{}", folder.display());
    }
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn the_reader_of_these_tests_knows_the_format() {
    // CRC-32C's check value, and a record assembled from the definition.
    assert_eq!(tfevents::crc32c(b"123456789"), 0xE306_9283);
    let data = b"\x09\0\0\0\0\0\0\xf8\x3f\x1a\x0dbrain.Event:2";
    let mut rec = (data.len() as u64).to_le_bytes().to_vec();
    rec.extend(tfevents::masked(&rec).to_le_bytes());
    rec.extend(data);
    rec.extend(tfevents::masked(data).to_le_bytes());
    let back = tfevents::records(&rec).unwrap();
    let e = tfevents::event(&back[0]);
    assert_eq!((e.wall_time, e.step, e.file_version.as_deref()), (1.5, 0, Some("brain.Event:2")));
    for cut in 1..rec.len() {
        assert!(tfevents::records(&rec[..cut]).is_err(), "cut at {cut}");
    }
    let mut flipped = rec.clone();
    flipped[20] ^= 1;
    assert!(tfevents::records(&flipped).unwrap_err().contains("bad data CRC"));
}
