//! `--features mpi`: the ranks of an `mpirun` job train the model one
//! process trains, bit for bit, for any number of ranks; they resume each
//! other's checkpoints whatever the number; a signal stops all of them
//! after the same batch with one checkpoint; a dead rank, or a rank
//! without the same data, ends the job with a clear error.
//!
//! Every rank runs one thread (`--threads 1`) and jobs run one at a time,
//! so that 4 ranks on 2 cores (`--oversubscribe`) stay quick.
#![cfg(feature = "mpi")]

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{command, make_data, metrics_but_timings, s, text, tmp, write_data};

/// One job at a time: ranks of two jobs would compete for the 2 cores.
static JOBS: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    JOBS.lock().unwrap_or_else(|e| e.into_inner())
}

/// `mpirun -np N trainer args`, as root if need be (CI runs as root), with
/// `launcher` switches before the program.
fn mpirun(n: usize, launcher: &[&str], args: &[&str]) -> Command {
    let trainer = command(&[]);
    let mut cmd = Command::new("mpirun");
    cmd.args(["--allow-run-as-root", "--oversubscribe", "-np", &n.to_string()]);
    cmd.args(launcher).arg(trainer.get_program()).args(args);
    // The trainer's test environment (no network, no user cache), for every rank.
    for (k, v) in trainer.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd
}

fn ok(out: Output, what: &str) -> String {
    assert!(out.status.success(), "{what}:\n{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `train` on `data` into `out` in batches of 40 (5 images per lane), on
/// one thread, with a checkpoint every epoch, then `extra`.
fn train_args<'a>(
    model: &'a str,
    recipe: &'a str,
    data: &'a Path,
    out: &'a Path,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec!["train", "--model", model, "--recipe", recipe, "--batch", "40"];
    args.extend(["--threads", "1", "--checkpoint-every", "1", "--data", s(data), "--out", s(out)]);
    args.extend(extra);
    args
}

fn bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_number_of_ranks_trains_one_process_bits() {
    let _job = one_at_a_time();
    let dir = tmp("mpi-bits");
    let data = dir.join("data");
    make_data(&data, 200, 60);
    for (model, recipe) in [("seed-gap", "seed"), ("seed-fc", "modern")] {
        let alone = dir.join(format!("{model}-alone"));
        let train = train_args(model, recipe, &data, &alone, &["--epochs", "2"]);
        ok(command(&train).output().unwrap(), "one process");
        let want = bytes(&alone.join("state.safetensors"));
        for n in [1, 2, 3, 4] {
            let out = dir.join(format!("{model}-{n}"));
            let train = train_args(model, recipe, &data, &out, &["--epochs", "2"]);
            let stdout = ok(mpirun(n, &[], &train).output().unwrap(), &format!("{n} ranks"));
            let what = format!("{model} ({recipe}) on {n} ranks");
            assert!(stdout.contains(&format!("{n} MPI ranks")), "{what}: the engine line:\n{stdout}");
            // Rank 0 alone prints: one line per epoch.
            assert_eq!(
                stdout.matches(" epoch   2/2 ").count(),
                1,
                "{what}: printed by several ranks:\n{stdout}"
            );
            assert!(
                bytes(&out.join("state.safetensors")) == want,
                "{what}: the state differs from one process's"
            );
            assert_eq!(metrics_but_timings(&out), metrics_but_timings(&alone), "{what}: metrics differ");
        }
    }
    // `compare` too, against itself alone.
    let (alone, two) = (dir.join("compare-alone"), dir.join("compare-2"));
    let args = |out: &Path| {
        let v =
            ["compare", "--models", "seed-fc,seed-gap", "--epochs", "1", "--batch", "40", "--threads", "1"];
        let mut v: Vec<String> = v.iter().map(|a| a.to_string()).collect();
        v.extend(["--data".into(), s(&data).into(), "--out".into(), s(out).into()]);
        v
    };
    let a = args(&alone);
    ok(command(&a.iter().map(String::as_str).collect::<Vec<_>>()).output().unwrap(), "compare alone");
    let b = args(&two);
    ok(
        mpirun(2, &[], &b.iter().map(String::as_str).collect::<Vec<_>>()).output().unwrap(),
        "compare, 2 ranks",
    );
    for model in ["seed-fc", "seed-gap"] {
        let (x, y) = (alone.join(model).join("model.safetensors"), two.join(model).join("model.safetensors"));
        assert!(bytes(&x) == bytes(&y), "compare: {model} differs on 2 ranks");
    }
}

/// Batch norm: the ranks meet at each batch norm, forward and backward,
/// and pass the statistics' sums along in rank order; the state (with the
/// running statistics and step counts) has one process's bits.
#[test]
fn batch_norm_on_1_2_and_4_ranks_trains_one_process_bits() {
    let _job = one_at_a_time();
    let dir = tmp("mpi-bn");
    let data = dir.join("data");
    make_data(&data, 120, 40);
    let alone = dir.join("alone");
    ok(
        command(&train_args("deep-gap", "modern", &data, &alone, &["--epochs", "1"])).output().unwrap(),
        "alone",
    );
    let want = bytes(&alone.join("state.safetensors"));
    for n in [1, 2, 4] {
        let out = dir.join(format!("ranks-{n}"));
        let train = train_args("deep-gap", "modern", &data, &out, &["--epochs", "1"]);
        ok(mpirun(n, &[], &train).output().unwrap(), &format!("deep-gap on {n} ranks"));
        assert!(bytes(&out.join("state.safetensors")) == want, "deep-gap on {n} ranks: the state differs");
        assert_eq!(metrics_but_timings(&out), metrics_but_timings(&alone), "deep-gap on {n} ranks");
    }
}

#[test]
fn a_run_resumes_on_any_number_of_ranks() {
    let _job = one_at_a_time();
    let dir = tmp("mpi-resume");
    let data = dir.join("data");
    make_data(&data, 200, 60);
    let (whole, split) = (dir.join("whole"), dir.join("split"));
    let train = train_args("seed-fc", "modern", &data, &whole, &["--epochs", "3", "--schedule", "constant"]);
    ok(command(&train).output().unwrap(), "3 epochs alone");
    let train = train_args("seed-fc", "modern", &data, &split, &["--epochs", "1", "--schedule", "constant"]);
    ok(mpirun(4, &[], &train).output().unwrap(), "epoch 1 on 4 ranks");
    let resume = ["train", "--resume", s(&split), "--threads", "1", "--epochs"];
    let stdout = ok(mpirun(2, &[], &[&resume[..], &["2"]].concat()).output().unwrap(), "epoch 2 on 2 ranks");
    assert!(stdout.contains("resuming"), "{stdout}");
    ok(command(&[&resume[..], &["3"]].concat()).output().unwrap(), "epoch 3 alone");
    assert!(
        bytes(&split.join("state.safetensors")) == bytes(&whole.join("state.safetensors")),
        "state differs"
    );
    assert_eq!(metrics_but_timings(&split), metrics_but_timings(&whole));
}

/// The ranks `mpirun` (process `launcher`) started: (rank, pid).
fn ranks_of(launcher: u32) -> Vec<(usize, u32)> {
    let mut ranks = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // pid (comm) state ppid ...
        let after = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
        if after.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok()) != Some(launcher) {
            continue;
        }
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let rank = environ
            .split(|&b| b == 0)
            .find_map(|v| std::str::from_utf8(v).ok()?.strip_prefix("OMPI_COMM_WORLD_RANK=")?.parse().ok());
        if let Some(rank) = rank {
            ranks.push((rank, pid));
        }
    }
    ranks.sort_unstable();
    ranks
}

/// Start a long job (it would train for minutes) in the background and
/// wait until its first epoch is committed.
fn long_job(dir: &Path, n: usize, launcher: &[&str]) -> (Child, std::path::PathBuf) {
    let data = dir.join("data");
    make_data(&data, 400, 40);
    let out = dir.join("run");
    let train = train_args("seed-fc", "modern", &data, &out, &["--epochs", "500", "--schedule", "constant"]);
    let mut child =
        mpirun(n, launcher, &train).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let started = Instant::now();
    while !out.join("state.safetensors").exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the job ended ({status}) before its first checkpoint:\n{}",
                text(&child.wait_with_output().unwrap())
            );
        }
        assert!(started.elapsed() < Duration::from_secs(120), "no checkpoint after 2 minutes");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, out)
}

/// Wait at most `limit` for `child` to end.
fn ends_within(mut child: Child, limit: Duration, what: &str) -> Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("{what}: the job still runs after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// The run in `out` continued to `epochs` alone (the checkpoint must be whole).
fn finish_alone(out: &Path, epochs: &str) -> String {
    let resume = ["train", "--resume", s(out), "--threads", "1", "--epochs", epochs];
    ok(command(&resume).output().unwrap(), "resuming alone")
}

#[test]
fn sigterm_to_the_launcher_stops_every_rank_after_the_same_batch() {
    let _job = one_at_a_time();
    let dir = tmp("mpi-sigterm");
    // Open MPI 4's mpirun, on SIGTERM, sleeps this timeout, forwards SIGTERM,
    // sleeps it again and sends SIGKILL, reading none of the ranks' output
    // meanwhile. Rank 0's stdout is a pty that holds ~14 KB, ~85 epoch lines
    // of this job, after which its next line blocks until SIGKILL: 3 s keeps
    // that out of reach (epochs here take >= 0.05 s) and still gives the
    // ranks 3 s (not Open MPI's 1 s) to finish a batch and commit.
    let (child, out) = long_job(&dir, 2, &["--mca", "odls_base_sigkill_timeout", "3"]);
    // SAFETY: signalling a child process by its id.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let o = ends_within(child, Duration::from_secs(60), "SIGTERM");
    assert!(!o.status.success(), "{}", text(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("interrupted at") && stderr.contains("checkpoint saved"), "{}", text(&o));
    let names: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    assert!(!names.iter().any(|n| n.contains(".tmp")), "a temporary file is left: {names:?}");
    // The checkpoint (mid-epoch or not) continues, alone, to the bits of an
    // uninterrupted run alone.
    let epochs = committed_epochs(&out) + 2;
    finish_alone(&out, &epochs.to_string());
    let whole = dir.join("whole");
    let (data, e) = (dir.join("data"), epochs.to_string());
    let train = train_args("seed-fc", "modern", &data, &whole, &["--epochs", &e, "--schedule", "constant"]);
    ok(command(&train).output().unwrap(), "uninterrupted");
    assert_eq!(metrics_but_timings(&out), metrics_but_timings(&whole));
    assert!(
        bytes(&out.join("state.safetensors")) == bytes(&whole.join("state.safetensors")),
        "state differs"
    );
}

fn bytes_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Epochs in a run's `metrics.jsonl`.
fn committed_epochs(out: &Path) -> usize {
    bytes_text(&out.join("metrics.jsonl")).lines().count()
}

#[test]
fn a_killed_rank_ends_the_job_and_the_last_checkpoint_stays_whole() {
    let _job = one_at_a_time();
    let dir = tmp("mpi-kill");
    let (child, out) = long_job(&dir, 2, &[]);
    let ranks = ranks_of(child.id());
    assert_eq!(ranks.len(), 2, "ranks of mpirun: {ranks:?}");
    // SAFETY: signalling a process of this test's job.
    unsafe { libc::kill(ranks[1].1 as i32, libc::SIGKILL) };
    let o = ends_within(child, Duration::from_secs(60), "a rank killed");
    assert!(!o.status.success(), "{}", text(&o));
    let all = text(&o);
    assert!(
        all.contains("signal 9") || all.contains("Killed"),
        "the launcher should say which rank died:\n{all}"
    );
    let epochs = committed_epochs(&out) + 1;
    let stdout = finish_alone(&out, &epochs.to_string());
    assert!(stdout.contains(&format!("epoch {epochs:>3}/{epochs}")), "{stdout}");
}

#[test]
fn a_rank_without_the_same_data_ends_the_job_naming_it() {
    let _job = one_at_a_time();
    let dir = tmp("mpi-data");
    let (data, other, empty) = (dir.join("data"), dir.join("other"), dir.join("empty"));
    make_data(&data, 200, 60);
    // The same images but one label flipped.
    let mut train = std::fs::read(data.join("train.bin")).unwrap();
    train[0] = 8;
    write_data(&other, train, std::fs::read(data.join("test.bin")).unwrap());
    std::fs::create_dir_all(&empty).unwrap();
    for (shown, needle) in [(&other, "rank 1: its train data (train.bin in"), (&empty, "rank 1: ")] {
        let out = dir.join(format!("run-{}", shown.file_name().unwrap().to_string_lossy()));
        let train = train_args("seed-fc", "modern", &data, &out, &[]);
        // Rank 1 sees `shown` at the data's path (its own mount namespace),
        // as another machine with other files there would.
        let bind = format!("mount --bind {} {} && exec \"$0\" \"$@\"", s(shown), s(&data));
        let mut cmd = mpirun(1, &[], &train);
        cmd.arg(":").args(["-np", "1", "unshare", "-m", "sh", "-c", &bind]);
        cmd.arg(command(&[]).get_program()).args(&train);
        let started = Instant::now();
        let o = cmd.output().unwrap();
        assert!(!o.status.success(), "{}", text(&o));
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(stderr.contains(needle), "expected {needle:?}:\n{}", text(&o));
        if shown == &empty {
            assert!(stderr.contains("no CIFAR-10 or IDX files"), "{}", text(&o));
        } else {
            assert!(stderr.contains("differs from rank 0's"), "{}", text(&o));
        }
        assert!(started.elapsed() < Duration::from_secs(60), "took {:?}", started.elapsed());
        assert!(!out.join("state.safetensors").exists(), "nothing may be trained");
    }
}

#[test]
fn more_ranks_than_lanes_and_commands_that_run_alone_are_refused() {
    let _job = one_at_a_time();
    let dir = tmp("mpi-refused");
    let data = dir.join("data");
    make_data(&data, 40, 20);
    let run = dir.join("run");
    let train = train_args("seed-fc", "modern", &data, &run, &[]);
    let o = mpirun(9, &[], &train).output().unwrap();
    assert!(!o.status.success() && text(&o).contains("start at most 8"), "{}", text(&o));
    let o = mpirun(2, &[], &["eval", "--checkpoint", s(&dir.join("model.safetensors"))]).output().unwrap();
    assert!(
        !o.status.success() && text(&o).contains("only `train` and `compare` run as an MPI job"),
        "{}",
        text(&o)
    );
}
