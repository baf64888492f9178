//! Crash consistency, proved the way databases do: the same short run is
//! stopped abruptly (`_exit`, as `kill -9`) right after its k-th
//! file-system operation, for every k until the run completes. After each
//! crash the folder must hold the previous whole checkpoint or the new one
//! (never a mix: `model.safetensors` is absent or the committed state's
//! model), and `--resume` must end with `state.safetensors`,
//! `model.safetensors`, `config.json` and every metrics column but the
//! timings byte-identical to an uninterrupted run, and TensorBoard's events
//! file holding each epoch once with the values of `metrics.csv`.

mod common;

use std::path::Path;

use common::{
    command, make_data, metrics_but_timings as columns, s, text, tfevents, tmp, trainer, Safetensors,
};

fn args<'a>(data: &'a Path, out: &'a Path) -> Vec<&'a str> {
    vec![
        "train",
        "--model",
        "seed-gap",
        "--epochs",
        "2",
        "--batch",
        "40",
        "--threads",
        "1",
        "--seed",
        "4",
        "--data",
        s(data),
        "--out",
        s(out),
    ]
}

const PARAMS: [&str; 4] = ["conv1.weight", "conv2.weight", "conv3.weight", "fc1.weight"];

/// The invariant after a crash: a committed state or none; a model only
/// with a state, and then exactly its parameters and epoch.
fn check_whole(dir: &Path, k: u64) {
    let (state, model) = (dir.join("state.safetensors"), dir.join("model.safetensors"));
    if !state.exists() {
        assert!(!model.exists(), "crash point {k}: a model without a committed state");
        return;
    }
    let st = Safetensors::parse(&std::fs::read(&state).unwrap());
    let epoch = st.gapnet()["epoch"].as_str().unwrap().to_string();
    if model.exists() {
        let m = Safetensors::parse(&std::fs::read(&model).unwrap());
        assert_eq!(m.gapnet()["epoch"].as_str().unwrap(), epoch, "crash point {k}: model of another epoch");
        for name in PARAMS {
            assert_eq!(m.f32s(name), st.f32s(name), "crash point {k}: {name} differs from the state's");
        }
    }
    // The logged metrics never fall behind the committed state.
    let rows = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap_or_default();
    assert!(
        rows.lines().count() >= epoch.parse::<usize>().unwrap(),
        "crash point {k}: metrics behind the state"
    );
    check_events(dir, k);
}

/// TensorBoard's events file after a crash: none, or one of whole records
/// whose epochs metrics.csv holds with the same values (never ahead of it).
fn check_events(dir: &Path, k: u64) {
    let context = format!("crash point {k}");
    if tfevents::files(dir).is_empty() {
        return;
    }
    if dir.join("metrics.csv").exists() {
        tfevents::assert_match_csv(dir, false, &context);
    } else {
        let events = tfevents::read(&tfevents::the_file(dir, &context));
        assert!(tfevents::epochs(&events, &context).is_empty(), "{context}: events without metrics.csv");
    }
}

#[test]
fn a_crash_after_any_file_operation_leaves_a_whole_checkpoint_and_resumes_bit_identically() {
    let root = tmp("crash-points");
    let data = root.join("data");
    make_data(&data, 160, 30);
    let straight = root.join("straight");
    trainer(&args(&data, &straight));
    let want = |name: &str| std::fs::read(straight.join(name)).unwrap();

    let mut crashes = 0u64;
    for k in 1.. {
        let dir = root.join(format!("k{k}"));
        let out = command(&args(&data, &dir)).env("GAPNET_FAULT_AFTER_OPS", k.to_string()).output().unwrap();
        if out.status.success() {
            break;
        }
        assert_eq!(out.status.code(), Some(137), "crash point {k}:\n{}", text(&out));
        assert!(k < 500, "the run never completed");
        crashes += 1;
        check_whole(&dir, k);
        if dir.join("config.json").exists() {
            trainer(&["train", "--resume", s(&dir)]);
        } else {
            // Stopped before the run's settings were written: nothing to
            // resume, and the same command starts it again.
            trainer(&args(&data, &dir));
        }
        for name in ["state.safetensors", "model.safetensors", "config.json"] {
            assert!(std::fs::read(dir.join(name)).unwrap() == want(name), "crash point {k}: {name} differs");
        }
        assert_eq!(columns(&dir), columns(&straight), "crash point {k}: metrics differ");
        tfevents::assert_match_csv(&dir, true, &format!("crash point {k}, resumed"));
        assert!(dir.join("curves.png").exists(), "crash point {k}: no curves.png");
        std::fs::remove_dir_all(&dir).unwrap();
    }
    println!("{crashes} crash points exercised");
    assert!(crashes > 40, "only {crashes} crash points: is every operation counted?");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn resuming_a_finished_run_repairs_what_is_missing_and_says_so() {
    let root = tmp("repair");
    let data = root.join("data");
    make_data(&data, 80, 20);
    let dir = root.join("run");
    trainer(&args(&data, &dir));
    let model = std::fs::read(dir.join("model.safetensors")).unwrap();
    let csv = std::fs::read(dir.join("metrics.csv")).unwrap();
    for name in ["model.safetensors", "metrics.jsonl", "metrics.csv", "curves.png"] {
        std::fs::remove_file(dir.join(name)).unwrap();
    }
    let out = trainer(&["train", "--resume", s(&dir)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("rebuilt from the checkpoint: model.safetensors (missing), metrics.jsonl (missing)"),
        "{stdout}"
    );
    assert!(std::fs::read(dir.join("model.safetensors")).unwrap() == model);
    assert!(dir.join("curves.png").exists());
    // The timings were only in the removed files: every other column is back.
    let back = String::from_utf8(std::fs::read(dir.join("metrics.csv")).unwrap()).unwrap();
    let old = String::from_utf8(csv).unwrap();
    let strip = |t: &str| -> Vec<String> {
        t.lines()
            .map(|l| {
                l.split(',')
                    .enumerate()
                    .filter(|(i, _)| *i != 7 && *i != 8)
                    .map(|(_, v)| v)
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect()
    };
    assert_eq!(strip(&back), strip(&old));
    assert!(back.lines().nth(1).unwrap().contains(",NaN,NaN,"), "{back}");

    // A state removed by hand while its model remains is not a fresh start.
    std::fs::remove_file(dir.join("state.safetensors")).unwrap();
    let out = command(&["train", "--resume", s(&dir)]).output().unwrap();
    common::one_line_error(
        &out,
        &["state.safetensors is missing but", "start a new run with another --out"],
        "no state",
    );
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn two_trainings_into_one_folder_the_second_is_refused_naming_the_first() {
    let root = tmp("lock");
    let data = root.join("data");
    make_data(&data, 400, 20);
    let dir = root.join("run");
    let mut first = command(&[
        "train",
        "--model",
        "seed-fc",
        "--epochs",
        "30",
        "--batch",
        "10",
        "--threads",
        "1",
        "--data",
        s(&data),
        "--out",
        s(&dir),
    ])
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    let started = std::time::Instant::now();
    while !dir.join("config.json").exists() && started.elapsed() < std::time::Duration::from_secs(20) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    for second in [args(&data, &dir), vec!["train", "--resume", s(&dir)]] {
        let out = command(&second).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{}", text(&out));
        assert!(
            err.contains(&format!("process {} is training into this folder", first.id()))
                || err.contains("already holds a run"),
            "{err}"
        );
    }
    // Resuming names the holder (the fresh one may stop at "already holds a run").
    let out = command(&["train", "--resume", s(&dir)]).output().unwrap();
    common::one_line_error(&out, &[&format!("process {} is training into this folder", first.id())], "lock");
    let _ = first.kill();
    let _ = first.wait();
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_signal_during_the_final_checkpoint_lets_it_complete_and_still_exits_non_zero() {
    let root = tmp("final-signal");
    let data = root.join("data");
    make_data(&data, 80, 20);
    let straight = root.join("straight");
    let traced = command(&args(&data, &straight)).env("GAPNET_TRACE_OPS", "1").output().unwrap();
    assert!(traced.status.success(), "{}", text(&traced));
    // The instant of the last commit: the final rename of state.safetensors.
    let trace = String::from_utf8_lossy(&traced.stderr);
    let commit = trace
        .lines()
        .rfind(|l| l.contains(": rename ") && l.ends_with("state.safetensors"))
        .and_then(|l| l.strip_prefix("op ")?.split(':').next()?.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no commit in the trace:\n{trace}"));
    let dir = root.join("signalled");
    let out =
        command(&args(&data, &dir)).env("GAPNET_SIGNAL_AFTER_OPS", commit.to_string()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{}", text(&out));
    assert!(err.contains("interrupted at the final checkpoint, which was completed"), "{err}");
    for name in ["state.safetensors", "model.safetensors", "config.json"] {
        assert!(
            std::fs::read(dir.join(name)).unwrap() == std::fs::read(straight.join(name)).unwrap(),
            "{name}"
        );
    }
    assert_eq!(columns(&dir), columns(&straight));
    std::fs::remove_dir_all(&root).unwrap();
}
