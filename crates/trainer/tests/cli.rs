//! End to end: the real `trainer` binary on small generated CIFAR files.

mod common;

use std::process::Command;

use common::{make_data, s, text, tmp, trainer};

#[test]
fn train_writes_every_output_and_eval_reproduces_the_accuracy() {
    let root = tmp("cli-train");
    let (data, out) = (root.join("data"), root.join("run"));
    make_data(&data, 300, 100);
    let args =
        ["--model", "seed-gap", "--epochs", "2", "--batch", "10", "--data", s(&data), "--out", s(&out)];
    let run = trainer(&[&["train", "--threads", "2"][..], &args].concat());
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("epoch   2/2"), "{stdout}");

    for file in [
        "config.json",
        "metrics.csv",
        "metrics.jsonl",
        "curves.png",
        "model.safetensors",
        "state.safetensors",
    ] {
        let len = std::fs::metadata(out.join(file)).map(|m| m.len()).unwrap_or(0);
        assert!(len > 0, "{file} missing or empty");
    }
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "epoch,lr,train_ce,train_seed_error,train_acc,test_ce,test_acc,seconds,images_per_s,sample_seed_error"
    );
    assert_eq!(lines.len(), 3, "{csv}");
    let last: Vec<f64> = lines[2].split(',').map(|v| v.parse().unwrap()).collect();
    assert_eq!(last.len(), 10);
    assert_eq!(last[0], 2.0);
    for (i, v) in last.iter().enumerate() {
        assert!(v.is_finite() && *v >= 0.0, "column {i} = {v}");
    }
    assert!(last[4] > 0.6 && last[6] > 0.6, "the easy generated task should be learnt: {}", lines[2]);
    assert_eq!(std::fs::read_to_string(out.join("metrics.jsonl")).unwrap().lines().count(), 2);
    let png = std::fs::read(out.join("curves.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");

    // eval on the saved checkpoint gives exactly the final test accuracy
    let eval = trainer(&["eval", "--checkpoint", s(&out.join("model.safetensors")), "--data", s(&data)]);
    let text = String::from_utf8_lossy(&eval.stdout);
    let acc: f64 =
        text.split("test accuracy ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert_eq!(format!("{acc:.4}"), format!("{:.4}", last[6]), "{text}");
    let correct = (last[6] * 100.0).round() as usize;
    assert!(text.contains(&format!("({correct}/100 images)")), "{text}");
    assert!(
        text.contains("confusion matrix") && text.contains("airplane") && text.contains("ship"),
        "{text}"
    );

    // a second run into the same folder is refused rather than overwriting it
    let again = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(["train", "--epochs", "1", "--data", s(&data), "--out", s(&out)])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a run"));
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn resume_continues_bit_identically() {
    let root = tmp("cli-resume");
    let data = root.join("data");
    make_data(&data, 200, 40);
    let (straight, resumed) = (root.join("straight"), root.join("resumed"));
    let common =
        ["--model", "seed-fc", "--data", s(&data), "--batch", "32", "--schedule", "constant", "--seed", "9"];
    trainer(&[&["train", "--epochs", "3", "--out", s(&straight)][..], &common].concat());
    trainer(&[&["train", "--epochs", "2", "--out", s(&resumed)][..], &common].concat());
    let before = std::fs::read(resumed.join("model.safetensors")).unwrap();
    let run = trainer(&["train", "--resume", s(&resumed), "--epochs", "3"]);
    assert!(String::from_utf8_lossy(&run.stdout).contains("resuming"));
    let a = std::fs::read(straight.join("state.safetensors")).unwrap();
    let b = std::fs::read(resumed.join("state.safetensors")).unwrap();
    assert!(a == b, "resumed parameters and momentum differ from the uninterrupted run");
    assert_ne!(before, std::fs::read(resumed.join("model.safetensors")).unwrap(), "resume trained nothing");
    let rows = std::fs::read_to_string(resumed.join("metrics.csv")).unwrap();
    assert_eq!(rows.lines().count(), 4, "{rows}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn compare_prints_a_table_and_one_plot_for_all_models() {
    let root = tmp("cli-compare");
    let data = root.join("data");
    make_data(&data, 120, 40);
    let out = root.join("cmp");
    let run = trainer(&[
        "compare",
        "--models",
        "seed-gap,seed-fc20",
        "--epochs",
        "1",
        "--data",
        s(&data),
        "--out",
        s(&out),
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.contains("| model |") && stdout.contains("| seed-gap |") && stdout.contains("| seed-fc20 |"),
        "{stdout}"
    );
    for file in ["curves.png", "summary.md", "seed-gap/model.safetensors", "seed-fc20/metrics.csv"] {
        assert!(out.join(file).exists(), "{file}");
    }
    // The comparison's folder is not a run: resuming it names the runs in it.
    let o = common::run(&["train", "--resume", s(&out)]);
    let each = format!("--resume {}, --resume {}", s(&out.join("seed-fc20")), s(&out.join("seed-gap")));
    common::one_line_error(&o, &["holds the runs of a comparison", &each], "resume a comparison");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn bare_trainer_takes_compare_flags_and_a_refused_run_leaves_no_folder() {
    let root = tmp("cli-bare");
    let data = root.join("data");
    make_data(&data, 40, 20);
    let out = root.join("cmp");
    let run = trainer(&[
        "--models",
        "seed-gap",
        "--epochs",
        "1",
        "--threads",
        "1",
        "--data",
        s(&data),
        "--out",
        s(&out),
    ]);
    assert!(String::from_utf8_lossy(&run.stdout).contains("| seed-gap |"));
    assert!(out.join("summary.md").exists());
    // Validation (here an unknown class) happens before any folder is made.
    for args in [
        vec!["train", "--classes", "airplane,unicorn", "--data", s(&data), "--out", s(&root.join("t"))],
        vec!["compare", "--classes", "airplane,unicorn", "--data", s(&data), "--out", s(&root.join("c"))],
    ] {
        let failed = common::run(&args);
        assert!(!failed.status.success(), "{}", common::text(&failed));
        assert!(!root.join("t").exists() && !root.join("c").exists(), "a refused run left a folder behind");
    }
    std::fs::remove_dir_all(&root).unwrap();
}

/// A trainer built without `--features mpi`, started by a launcher as one
/// of several processes, refuses to train N copies of the same run and
/// says how to build it (tests/mpi.rs covers the feature itself).
#[cfg(not(feature = "mpi"))]
#[test]
fn a_build_without_mpi_refuses_to_run_as_one_of_several_ranks() {
    for var in ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"] {
        let out = common::command(&["train", "--epochs", "1"]).env(var, "2").output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{var}: {err}");
        assert!(err.contains(&format!("{var}=2")) && err.contains("--features mpi"), "{var}: {err}");
    }
    // One process of one is simply a run (here: no data, so it fails later, for that reason).
    let out = common::command(&["train", "--epochs", "1", "--data", "/nonexistent"])
        .env("OMPI_COMM_WORLD_SIZE", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("--features mpi") && err.contains("/nonexistent"), "{err}");
}

#[test]
fn a_warning_about_the_settings_is_printed_once() {
    let root = tmp("cli-warn-once");
    let data = root.join("data");
    make_data(&data, 30, 10);
    let args = ["train", "--data", s(&data), "--epochs", "1", "--threads", "1"];
    for (flags, warning) in [
        (["--limit-train", "99999"], "warning: --limit-train 99999 is more than the 30 images there are"),
        (["--batch", "100000"], "warning: --batch 100000 is more than the 30 training images"),
    ] {
        let out = root.join(flags[0].trim_start_matches('-'));
        let o = trainer(&[&args[..], &flags, &["--out", s(&out)]].concat());
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(stderr.matches(warning).count(), 1, "{warning:?} once:\n{}", text(&o));
    }
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_spec_files_runs_are_named_by_its_name_not_its_path() {
    let root = tmp("cli-spec-name");
    let data = root.join("data");
    make_data(&data, 20, 10);
    let spec = root.join("nets/tiny.toml");
    std::fs::create_dir_all(spec.parent().unwrap()).unwrap();
    let layers =
        "[[layers]]\ntype = \"conv\"\nfilters = 4\nsize = 3\n[[layers]]\ntype = \"global_avg_pool\"\n\
                  [[layers]]\ntype = \"dense\"\nunits = 2\n";
    std::fs::write(&spec, format!("name = \"my-net\"\n{layers}")).unwrap();
    let out = root.join("cmp");
    let args = ["compare", "--models", s(&spec), "--data", s(&data), "--epochs", "1", "--out", s(&out)];
    let o = trainer(&args);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("\nmy-net epoch   1/1 ") && stdout.contains("| my-net | "), "{}", text(&o));
    assert!(!stdout.contains(&format!("{} epoch", s(&spec))), "{stdout}");
    // Its folder is still named after the file.
    assert!(out.join("tiny/config.json").is_file());
    std::fs::remove_dir_all(&root).unwrap();
}
