//! `--resume` trusts nothing: flags that would change what the run is, a
//! `config.json` or checkpoint header edited by hand, and the signals that
//! stop a run like Ctrl-C.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{command, make_data, one_line_error, s, text, tmp, trainer, Safetensors};

fn start<'a>(data: &'a Path, out: &'a Path, epochs: &'a str) -> Vec<&'a str> {
    vec!["train", "--model", "seed-gap", "--epochs", epochs, "--data", s(data), "--out", s(out)]
}

fn start_batch_20<'a>(data: &'a Path, out: &'a Path, epochs: &'a str) -> Vec<&'a str> {
    [start(data, out, epochs), vec!["--batch", "20"]].concat()
}

#[test]
fn flags_that_change_the_run_are_refused_on_resume_and_the_others_apply() {
    let root = tmp("resume-flags");
    let data = root.join("data");
    make_data(&data, 60, 20);
    let run = root.join("run");
    trainer(&start_batch_20(&data, &run, "1"));
    let config = std::fs::read(run.join("config.json")).unwrap();
    for (flag, value) in [
        ("--batch", Some("20")),
        ("--seed", Some("1")),
        ("--model", Some("seed-gap")),
        ("--data", Some(s(&data))),
        ("--classes", Some("airplane,ship")),
        ("--recipe", Some("modern")),
        ("--out", Some("elsewhere")),
        ("--schedule", Some("cosine")),
        ("--normalize", Some("meanstd")),
        ("--no-augment", None),
        ("--limit-train", Some("10")),
        ("--limit-test", Some("10")),
    ] {
        let mut args = vec!["train", "--resume", s(&run), flag];
        args.extend(value);
        // Even a value equal to the run's own is refused: it was given.
        one_line_error(&command(&args).output().unwrap(), &[&format!("{flag} with --resume")], flag);
    }
    assert!(
        std::fs::read(run.join("config.json")).unwrap() == config,
        "a refused resume changed config.json"
    );
    // --epochs extends the cosine schedule and says what that does to the lr.
    let out = trainer(&[
        "train",
        "--resume",
        s(&run),
        "--epochs",
        "3",
        "--checkpoint-every",
        "2",
        "--threads",
        "1",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("note: --epochs 1 -> 3: the cosine schedule is recomputed over 3 epochs"),
        "{stdout}"
    );
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("config.json")).unwrap()).unwrap();
    assert_eq!((saved["epochs"].as_u64(), saved["checkpoint_every"].as_u64()), (Some(3), Some(2)));
    std::fs::remove_dir_all(&root).unwrap();
}

/// Edit `config.json` of `run` with `edit`, resume, and expect one error line with `needles`.
fn edited_config(run: &Path, edit: impl Fn(&mut serde_json::Value), needles: &[&str]) {
    let path = run.join("config.json");
    let original = std::fs::read(&path).unwrap();
    let mut config: serde_json::Value = serde_json::from_slice(&original).unwrap();
    edit(&mut config);
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    one_line_error(&command(&["train", "--resume", s(run)]).output().unwrap(), needles, &needles.join(" "));
    std::fs::write(&path, original).unwrap();
}

/// Edit the `gapnet` header of `state.safetensors`, resume, expect one error line.
fn edited_state(run: &Path, edit: impl Fn(&mut serde_json::Value), needles: &[&str]) {
    let path = run.join("state.safetensors");
    let original = std::fs::read(&path).unwrap();
    let mut st = Safetensors::parse(&original);
    let mut meta = st.gapnet();
    edit(&mut meta);
    st.set_gapnet(&meta);
    std::fs::write(&path, st.bytes()).unwrap();
    one_line_error(&command(&["train", "--resume", s(run)]).output().unwrap(), needles, &needles.join(" "));
    std::fs::write(&path, original).unwrap();
}

#[test]
fn an_edited_config_or_checkpoint_header_is_an_error_naming_the_file_and_field() {
    let root = tmp("resume-edited");
    let data = root.join("data");
    make_data(&data, 60, 20);
    let run = root.join("run");
    trainer(&start_batch_20(&data, &run, "2"));
    edited_config(
        &run,
        |c| c["classes"] = serde_json::json!(["airplane", "ship", "cat"]),
        &["config.json: field \"classes\" names 3 classes but the model in field \"spec\" has 2 outputs"],
    );
    edited_config(
        &run,
        |c| c["classes"] = serde_json::json!(["airplane"]),
        &["field \"classes\" must name at least two"],
    );
    edited_config(
        &run,
        |c| c["data"] = serde_json::json!("relative/data"),
        &["config.json: field \"data\": relative/data is not a folder (a relative path"],
    );
    edited_config(
        &run,
        |c| c["batch"] = serde_json::json!(0),
        &["config.json: holds settings no run can have"],
    );
    edited_state(&run, |m| m["epoch"] = serde_json::json!(usize::MAX.to_string()), &[
        "state.safetensors: header says epoch 18446744073709551615 is done but holds the metrics of 2 epochs",
    ]);
    edited_state(
        &run,
        |m| {
            m["batches_done"] = serde_json::json!("1");
            m["partial_epoch"] = serde_json::json!(
                r#"{"loss":1e300,"cross_entropy":5.0,"seed_error":1.0,"correct":7,"images":500,"skipped":0,"train_secs":1.0,"data_secs":0.1}"#
            );
        },
        &["state.safetensors: the partial-epoch sums in the header cannot be those of 1 batches"],
    );
    edited_state(
        &run,
        |m| m["classes"] = serde_json::json!(r#"["cat","dog"]"#),
        &["trained on classes cat,dog"],
    );
    // Untouched, it still resumes (all epochs done) and changes nothing.
    let before = std::fs::read(run.join("state.safetensors")).unwrap();
    trainer(&["train", "--resume", s(&run)]);
    assert!(std::fs::read(run.join("state.safetensors")).unwrap() == before);
    std::fs::remove_dir_all(&root).unwrap();
}

/// Start a 3-epoch run, send `signal` once epoch 1 is reported, expect exit
/// 128 + signal with the resume command; resumed, the run must equal an
/// uninterrupted one.
fn stop_with(signal: i32, name: &str) {
    let root = tmp(&format!("signal-{name}"));
    let data = root.join("data");
    make_data(&data, 400, 20);
    let (straight, stopped) = (root.join("straight"), root.join("stopped"));
    let mut args = start(&data, &straight, "3");
    args.extend(["--batch", "4", "--threads", "1"]);
    trainer(&args);
    let mut args = start(&data, &stopped, "3");
    args.extend(["--batch", "4", "--threads", "1"]);
    let mut child = command(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap().contains("epoch   1/3") {
            break;
        }
    }
    let waiting = Instant::now();
    while !stopped.join("curves.png").exists() && waiting.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(1));
    }
    // SAFETY: a plain kill(2) of our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    let _rest: Vec<String> = lines.map(Result::unwrap).collect();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(128 + signal), "{name}: {}", text(&out));
    assert!(err.contains(&format!("{name}: finishing the current batch")), "{err}");
    assert!(err.contains(&format!("resume with: trainer train --resume {}", s(&stopped))), "{err}");
    trainer(&["train", "--resume", s(&stopped)]);
    for file in ["state.safetensors", "model.safetensors"] {
        assert!(
            std::fs::read(straight.join(file)).unwrap() == std::fs::read(stopped.join(file)).unwrap(),
            "{name}: {file} differs from the uninterrupted run"
        );
    }
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn sigterm_stops_like_ctrl_c_with_status_143_and_resumes_bit_identically() {
    stop_with(libc::SIGTERM, "SIGTERM");
}

#[test]
fn sighup_stops_like_ctrl_c_with_status_129() {
    stop_with(libc::SIGHUP, "SIGHUP");
}

#[test]
fn another_model_copied_over_model_safetensors_is_rebuilt_and_called_stale() {
    let root = tmp("resume-stale-model");
    let data = root.join("data");
    make_data(&data, 40, 10);
    let (gap, fc) = (root.join("gap"), root.join("fc"));
    trainer(&start(&data, &gap, "1"));
    trainer(&["train", "--model", "seed-fc", "--epochs", "1", "--data", s(&data), "--out", s(&fc)]);
    let committed = std::fs::read(gap.join("model.safetensors")).unwrap();
    // A larger file (the FC model) and a same-size edit are both stale.
    for wrong in [std::fs::read(fc.join("model.safetensors")).unwrap(), vec![0u8; committed.len()]] {
        std::fs::write(gap.join("model.safetensors"), &wrong).unwrap();
        let o = trainer(&["train", "--resume", s(&gap)]);
        let said = "rebuilt from the checkpoint: model.safetensors (stale: not the checkpoint's)";
        assert!(String::from_utf8_lossy(&o.stdout).contains(said), "{}", text(&o));
        assert!(std::fs::read(gap.join("model.safetensors")).unwrap() == committed);
    }
    std::fs::remove_dir_all(&root).unwrap();
}
