//! A run records each convolution's path in config.json; GAPNET_CONV_PATHS
//! chooses them, and `--resume` keeps the recorded ones (bit for bit)
//! unless it says otherwise.

mod common;

use std::path::Path;

use common::{command, extendable_run, make_data, s, text, tmp};

fn train(data: &Path, out: &Path, epochs: &str, paths: Option<&str>, resume: bool) -> std::process::Output {
    let args = extendable_run("seed-fc", data, out, epochs, resume);
    let mut cmd = command(&args);
    cmd.env_remove("GAPNET_ISA").env_remove("GAPNET_PORTABLE").env_remove("GAPNET_CONV_PATHS");
    if let Some(paths) = paths {
        cmd.env("GAPNET_CONV_PATHS", paths);
    }
    cmd.output().unwrap()
}

fn ok(o: std::process::Output) -> String {
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn recorded(out: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(out.join("config.json")).unwrap();
    serde_json::from_str::<serde_json::Value>(&text).unwrap()["conv_paths"].clone()
}

fn model(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("model.safetensors")).unwrap()
}

#[test]
fn runs_record_their_paths_and_resume_with_them() {
    if graph::Isa::best() == graph::Isa::Portable {
        eprintln!(
            "this CPU runs only the portable kernels, whose convolutions have one path: nothing to choose"
        );
        return;
    }
    let dir = tmp("conv-paths");
    let data = dir.join("data");
    make_data(&data, 40, 20);
    let (default, whole, split) = (dir.join("default"), dir.join("whole"), dir.join("split"));

    let stdout = ok(train(&data, &default, "2", None, false));
    assert!(stdout.contains("convolutions: conv1 direct, conv2 direct, conv3 direct"), "{stdout}");
    let all_direct = serde_json::json!({"conv1": "direct", "conv2": "direct", "conv3": "direct"});
    assert_eq!(recorded(&default), all_direct);

    let stdout = ok(train(&data, &whole, "2", Some("conv1=im2col"), false));
    assert!(
        stdout.contains("convolutions: conv1 im2col, conv2 direct")
            && stdout.contains("GAPNET_CONV_PATHS=conv1=im2col"),
        "{stdout}"
    );
    assert_eq!(
        recorded(&whole),
        serde_json::json!({"conv1": "im2col", "conv2": "direct", "conv3": "direct"})
    );
    assert!(
        model(&whole) != model(&default),
        "conv1 on im2col gave the direct path's bits: the path did not run"
    );

    // resumed without the variable: the recorded paths, bit for bit
    ok(train(&data, &split, "1", Some("conv1=im2col"), false));
    let stdout = ok(train(&data, &split, "2", None, true));
    assert!(!stdout.contains("not bit for bit"), "{stdout}");
    assert!(
        model(&split) == model(&whole),
        "resumed on the recorded paths, the model must equal the uninterrupted run's"
    );

    // the variable over a recorded path: a note, and the new path recorded
    let stdout = ok(train(&data, &split, "3", Some("direct"), true));
    assert!(stdout.contains("conv1 im2col -> direct") && stdout.contains("not bit for bit"), "{stdout}");
    assert_eq!(recorded(&split), all_direct);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_paths_are_refused_naming_the_variable() {
    let dir = tmp("conv-paths-bad");
    let data = dir.join("data");
    make_data(&data, 20, 10);
    for (value, needles) in [
        ("fast", &["GAPNET_CONV_PATHS=fast", "unknown convolution path", "im2col or direct"][..]),
        ("conv7=im2col", &["GAPNET_CONV_PATHS", "no convolution conv7", "conv1, conv2, conv3"][..]),
    ] {
        let o = train(&data, &dir.join(value), "1", Some(value), false);
        assert!(!o.status.success(), "{value}: accepted\n{}", text(&o));
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(needles.iter().all(|n| stderr.contains(n)), "{value}: {stderr}");
        assert!(!dir.join(value).exists(), "{value}: a run folder was made before the error");
    }
    // the direct kernels do not run at portable
    let mut cmd = command(&["train", "--epochs", "1", "--data", s(&data), "--out", s(&dir.join("portable"))]);
    let o = cmd.env("GAPNET_ISA", "portable").env("GAPNET_CONV_PATHS", "direct").output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && stderr.contains("direct path cannot run")
            && stderr.contains("GAPNET_CONV_PATHS"),
        "{}",
        text(&o)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tune_measures_each_path_and_records_the_fastest() {
    let root = tmp("conv-paths-tune");
    let data = root.join("data");
    make_data(&data, 40, 10);
    let out = root.join("tuned");
    let args =
        ["train", "--model", "seed-fc", "--epochs", "1", "--tune", "--data", s(&data), "--out", s(&out)];
    let mut cmd = command(&args);
    cmd.env_remove("GAPNET_ISA").env_remove("GAPNET_PORTABLE").env_remove("GAPNET_CONV_PATHS");
    let stdout = ok(cmd.output().unwrap());
    let line = stdout
        .lines()
        .find(|l| l.starts_with("tuned seed-fc convolutions"))
        .unwrap_or_else(|| panic!("{stdout}"));
    // Every convolution, its choice and the time of each path it can take.
    let paths = recorded(&out);
    let runs_direct = graph::Isa::detect() != graph::Isa::Portable;
    for conv in ["conv1", "conv2", "conv3"] {
        let chosen = paths[conv].as_str().unwrap_or_else(|| panic!("{conv} not recorded: {paths}"));
        assert!(line.contains(&format!("{conv} {chosen} (im2col ")), "{line}");
        assert_eq!(line.contains(" vs direct "), runs_direct, "{line}");
        assert!(chosen == "im2col" || (runs_direct && chosen == "direct"), "{conv}: {chosen}");
    }
    // A resumed run keeps its recorded paths: --tune is refused there.
    let mut again = command(&["train", "--resume", s(&out), "--tune"]);
    let o = again.output().unwrap();
    common::one_line_error(&o, &["--tune with --resume"], "tune on resume");
    // Two ways of choosing at once are refused.
    let mut both = command(&["train", "--model", "seed-fc", "--epochs", "1", "--tune", "--data", s(&data)]);
    let o = both.env("GAPNET_CONV_PATHS", "im2col").arg("--out").arg(root.join("both")).output().unwrap();
    common::one_line_error(&o, &["--tune and GAPNET_CONV_PATHS both choose"], "tune and the variable");
    std::fs::remove_dir_all(&root).unwrap();
}
