//! Faults, end to end on the real `trainer`: divergence, a dead network,
//! Ctrl-C, `kill -9` at random moments, and a checkpoint that cannot be
//! written. Small generated data keeps each run well under a second.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::{command, make_data, one_line_error, records, run, s, text, tmp, trainer, write_data};
use graph::{read_model, Arena, Plan};

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn divergence_stops_naming_epoch_and_batch_and_keeps_the_last_checkpoint() {
    let root = tmp("diverge");
    let data = root.join("data");
    make_data(&data, 100, 20);
    let out = root.join("run");
    let args = ["--model", "seed-gap", "--batch", "10", "--schedule", "constant", "--data", s(&data)];
    let healthy =
        trainer(&[&["train", "--epochs", "1", "--lr", "0.01", "--out", s(&out)][..], &args].concat());
    assert!(!stderr(&healthy).contains("warning"), "a healthy run warns of nothing:\n{}", text(&healthy));
    let files = ["state.safetensors", "model.safetensors", "metrics.csv", "metrics.jsonl"];
    let before: Vec<Vec<u8>> = files.iter().map(|f| read(&out.join(f))).collect();

    // Epoch 2 at an absurd learning rate: the first update blows the weights up.
    let failed = run(&["train", "--resume", s(&out), "--epochs", "2", "--lr", "1e6"]);
    let line = one_line_error(
        &failed,
        &[
            "error: epoch 2, batch ",
            " of 10: the ",
            "at learning rate 1000000: training diverged and stopped before updating",
            &format!("the last good checkpoint (after epoch 1) is kept in {}", s(&out)),
            &format!("trainer train --resume {} --lr 100000", s(&out)),
            "--skip-nonfinite",
        ],
        "divergence on resume",
    );
    assert!(!line.contains("batch 1 of"), "the first batch of epoch 2 is still finite: {line}");
    for (f, bytes) in files.iter().zip(&before) {
        assert!(read(&out.join(f)) == *bytes, "{f} changed after the divergence");
    }

    // From scratch: nothing to keep.
    let fresh =
        run(&[&["train", "--epochs", "2", "--lr", "1e6", "--out", s(&root.join("fresh"))][..], &args]
            .concat());
    one_line_error(
        &fresh,
        &[
            "error: epoch 1, batch ",
            "no checkpoint had been written yet",
            "start again with a lower --lr than 1000000",
        ],
        "divergence from scratch",
    );
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn skip_nonfinite_skips_and_counts_bad_batches_then_stops_when_all_are_bad() {
    let root = tmp("skip");
    let data = root.join("data");
    make_data(&data, 100, 20);
    let out = run(&[
        "train",
        "--model",
        "seed-gap",
        "--batch",
        "10",
        "--epochs",
        "2",
        "--lr",
        "1e6",
        "--schedule",
        "constant",
        "--skip-nonfinite",
        "--data",
        s(&data),
        "--out",
        s(&root.join("run")),
    ]);
    // Epoch 1 trains its first batches, then skips the rest without updating.
    let line = stdout(&out).lines().find(|l| l.contains("epoch   1/2")).map(str::to_string);
    let line = line.unwrap_or_else(|| panic!("epoch 1 did not finish:\n{}", text(&out)));
    let skipped: usize = line
        .split("skipped ")
        .nth(1)
        .and_then(|r| r.strip_suffix(" of 10 batches (non-finite)"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no skipped count in {line:?}"));
    assert!((1..10).contains(&skipped), "{line}");
    // Epoch 2 has no finite batch left: the parameters themselves diverged.
    one_line_error(
        &out,
        &[
            "epoch 2: every one of the 10 batches had a non-finite loss or gradient",
            "lower --lr than 1000000",
        ],
        "skip-nonfinite",
    );
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_dead_network_is_reported_naming_the_layers_and_suggesting_a_lower_rate() {
    let root = tmp("dead");
    let data = root.join("data");
    // Every pixel equal: normalised inputs are all zero, so every ReLU of
    // the trunk outputs zero and the loss cannot leave chance.
    write_data(&data, records(40, 1, true), records(10, 2, true));
    let out = trainer(&[
        "train",
        "--model",
        "seed-gap",
        "--batch",
        "10",
        "--epochs",
        "4",
        "--data",
        s(&data),
        "--out",
        s(&root.join("run")),
    ]);
    let warnings = stderr(&out);
    assert!(
        warnings.contains(
            "warning: seed-gap epoch 1: relu1 (after conv1), relu2 (after conv2), relu3 (after conv3) output zero \
             for every image of the first batch: dead units that pass no gradient back; try a lower --lr than 0.05"
        ),
        "{warnings}"
    );
    assert!(
        warnings.contains("warning: seed-gap epoch 3: the training loss has stayed at chance (")
            && warnings.contains("ln 2 = 0.6931) for 3 epochs: the network is not learning")
            && warnings.matches("at chance").count() == 1
            && warnings.matches("output zero for every image").count() == 1,
        "each warning once:\n{warnings}"
    );
    std::fs::remove_dir_all(&root).unwrap();
}

/// Train arguments shared by an uninterrupted run and an interrupted one.
fn run_args<'a>(data: &'a Path, out: &'a Path, epochs: &'a str, batch: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--model",
        "seed-gap",
        "--data",
        s(data),
        "--out",
        s(out),
        "--epochs",
        epochs,
        "--batch",
        batch,
        "--seed",
        "5",
        "--checkpoint-every",
        "1",
    ]
}

/// The training columns of metrics.csv (not the timings).
fn train_columns(dir: &Path) -> Vec<String> {
    let csv = String::from_utf8(read(&dir.join("metrics.csv"))).unwrap();
    csv.lines().map(|l| l.split(',').take(7).collect::<Vec<_>>().join(",")).collect()
}

#[test]
fn ctrl_c_saves_mid_epoch_exits_130_and_the_resumed_run_is_bit_identical() {
    let root = tmp("sigint");
    let data = root.join("data");
    make_data(&data, 400, 20);
    let (straight, stopped) = (root.join("straight"), root.join("stopped"));
    trainer(&run_args(&data, &straight, "3", "4"));

    let mut child = command(&run_args(&data, &stopped, "3", "4"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once epoch 1 is reported the handler is surely installed. Its plot is
    // the last thing epoch 1 writes; a moment later epoch 2, 100 batches of
    // a few milliseconds, is under way, and the interrupt lands in its middle.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen += &line;
        seen.push('\n');
        if line.contains("epoch   1/3") {
            break;
        }
    }
    let waiting = Instant::now();
    while !stopped.join("curves.png").exists() && waiting.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(20));
    // SAFETY: a plain kill(2) of our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "stdout:\n{seen}{}\nstderr:\n{err}", rest.join("\n"));
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.starts_with("interrupted at epoch 2, batch ")
            && last.ends_with(&format!(
                " of 100: checkpoint saved in {0}; resume with: trainer train --resume {0}",
                s(&stopped)
            )),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(String::from_utf8_lossy(&read(&stopped.join("state.safetensors"))).contains("batches_done"));

    let resumed = trainer(&["train", "--resume", s(&stopped)]);
    assert!(
        stdout(&resumed).contains(&format!("resuming {}: epoch 2 of 3 from batch ", s(&stopped))),
        "{}",
        text(&resumed)
    );
    for file in ["state.safetensors", "model.safetensors"] {
        assert!(
            read(&straight.join(file)) == read(&stopped.join(file)),
            "{file} differs from the uninterrupted run"
        );
    }
    // The interrupted epoch's metrics were carried across the interruption.
    assert_eq!(train_columns(&straight), train_columns(&stopped));
    std::fs::remove_dir_all(&root).unwrap();
}

/// Every checkpoint file in `dir` is whole: it parses, and loads into its model.
fn assert_whole(dir: &Path, context: &str) {
    for (file, arenas) in [
        ("state.safetensors", &[Arena::Params, Arena::Velocity][..]),
        ("model.safetensors", &[Arena::Params][..]),
    ] {
        let Ok(bytes) = std::fs::read(dir.join(file)) else { continue };
        let (spec, input, _) =
            read_model(&bytes, file).unwrap_or_else(|e| panic!("{context}: torn {file}: {e}"));
        let mut plan = Plan::new(&spec, input, 10).unwrap();
        plan.load_safetensors(arenas, &bytes, file).unwrap_or_else(|e| panic!("{context}: torn {file}: {e}"));
    }
    for file in ["config.json", "metrics.jsonl"] {
        let Ok(text) = std::fs::read_to_string(dir.join(file)) else { continue };
        let whole = if file == "config.json" {
            serde_json::from_str::<serde_json::Value>(&text).is_ok()
        } else {
            text.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
        };
        assert!(whole, "{context}: torn {file}:\n{text}");
    }
}

/// SIGKILL `child` after `delay`, or as soon as `late()` (so that no run
/// finishes before it is killed, however fast the machine is at the time);
/// false if it exited first.
fn kill_after(mut child: Child, delay: Duration, late: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < delay && !late() {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    true
}

#[test]
fn kill_9_at_random_moments_leaves_whole_files_and_resumes_bit_identically() {
    let root = tmp("kill9");
    let data = root.join("data");
    make_data(&data, 200, 20);
    let (straight, killed) = (root.join("straight"), root.join("killed"));
    let started = Instant::now();
    trainer(&run_args(&data, &straight, "6", "10"));
    let whole_run = started.elapsed();

    // Random moments, from the clock; the seed is printed to replay a failure's timing.
    let seed = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as u64;
    println!("kill seed {seed}, uninterrupted run {whole_run:?}");
    let mut state = seed | 1;
    let mut random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 1000) as f64 / 1000.0
    };
    let fresh = run_args(&data, &killed, "6", "10");
    let resume = ["train", "--resume", s(&killed)];
    let mut kills = 0;
    for round in 0..12 {
        if kills == 4 {
            break;
        }
        // A kill before config.json exists leaves nothing to resume: start afresh.
        let args: &[&str] = if killed.join("config.json").exists() { &resume } else { &fresh };
        let child = command(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let delay = whole_run.mul_f64(0.4 * random());
        // Never past the start of the last epoch: four kills always fit.
        let late =
            || std::fs::read_to_string(killed.join("metrics.jsonl")).is_ok_and(|t| t.lines().count() >= 5);
        if kill_after(child, delay, late) {
            kills += 1;
            let epochs =
                std::fs::read_to_string(killed.join("metrics.jsonl")).map_or(0, |t| t.lines().count());
            println!("round {round}: {args:?} killed after {delay:?}, {epochs} epochs on record");
        }
        assert_whole(&killed, &format!("after round {round} (killed at {delay:?})"));
    }
    assert_eq!(kills, 4, "the runs finished before they could be killed");

    // And one kill that surely lands before the first checkpoint: config.json
    // without state.safetensors resumes from epoch 1.
    let early = root.join("early");
    std::fs::create_dir_all(&early).unwrap();
    std::fs::copy(killed.join("config.json"), early.join("config.json")).unwrap();
    let text = std::fs::read_to_string(early.join("config.json")).unwrap();
    std::fs::write(early.join("config.json"), text.replace(s(&killed), s(&early))).unwrap();
    let from_scratch = trainer(&["train", "--resume", s(&early)]);
    assert!(
        stdout(&from_scratch).contains("no checkpoint yet; starting from epoch 1"),
        "{}",
        text_of(&from_scratch)
    );

    let finish = if killed.join("config.json").exists() { trainer(&resume) } else { trainer(&fresh) };
    assert_whole(&killed, "at the end");
    for dir in [&killed, &early] {
        assert!(
            read(&straight.join("state.safetensors")) == read(&dir.join("state.safetensors")),
            "{}: final parameters differ from the uninterrupted run\n{}",
            dir.display(),
            text_of(&finish)
        );
    }
    assert_eq!(train_columns(&straight), train_columns(&killed));
    let leftovers: Vec<String> = std::fs::read_dir(&killed)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind: {leftovers:?}");
    std::fs::remove_dir_all(&root).unwrap();
}

fn text_of(out: &std::process::Output) -> String {
    text(out)
}

#[test]
fn a_checkpoint_that_cannot_be_written_is_an_error_naming_it_and_the_old_one_stays() {
    let root = tmp("nosave");
    let data = root.join("data");
    make_data(&data, 60, 10);
    let out = root.join("run");
    trainer(&[
        "train",
        "--model",
        "seed-gap",
        "--epochs",
        "1",
        "--batch",
        "10",
        "--data",
        s(&data),
        "--out",
        s(&out),
    ]);
    let before = read(&out.join("state.safetensors"));

    // The temporary file's name taken by a folder: the write fails as a full
    // disk or a permission problem would, at the same place.
    let child = command(&["train", "--resume", s(&out), "--epochs", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let blocker = out.join(format!(".state.safetensors.tmp-{}", child.id()));
    std::fs::create_dir(&blocker).unwrap();
    let failed = child.wait_with_output().unwrap();
    one_line_error(
        &failed,
        &[&format!("error: {}: cannot write the checkpoint: ", s(&out.join("state.safetensors")))],
        "blocked checkpoint",
    );
    assert!(read(&out.join("state.safetensors")) == before, "the previous checkpoint changed");
    assert_whole(&out, "after the failed save");

    // Once the obstacle is gone the run resumes from the intact checkpoint.
    std::fs::remove_dir(&blocker).unwrap();
    let ok = trainer(&["train", "--resume", s(&out), "--epochs", "2"]);
    assert!(stdout(&ok).contains("epoch   2/2"), "{}", text(&ok));

    // In-process: a missing folder, and an obstructed temporary file.
    let e = trainer::fsops::write_atomic(&root.join("no/such/folder/x.safetensors"), b"x").unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    let target = root.join("keep.bin");
    std::fs::write(&target, b"old contents").unwrap();
    std::fs::create_dir(root.join(format!(".keep.bin.tmp-{}", std::process::id()))).unwrap();
    assert!(trainer::fsops::write_atomic(&target, b"new contents").is_err());
    assert_eq!(read(&target), b"old contents");
    std::fs::remove_dir_all(&root).unwrap();
}
