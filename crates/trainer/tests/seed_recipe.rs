//! `--recipe seed`, the original engine, end to end: what its checkpoint
//! holds, the blog's error as its author measured it (`sample_seed_error`),
//! and the same bits whatever the thread count and across a resume.

mod common;

use std::path::Path;

use common::{make_data, metrics_but_timings as columns, s, tmp, trainer, Safetensors, RECORD};
use graph::{ModelSpec, Plan, Shape};

fn seed_args<'a>(model: &'a str, data: &'a Path, out: &'a Path, epochs: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--model",
        model,
        "--recipe",
        "seed",
        "--batch",
        "40",
        "--epochs",
        epochs,
        "--data",
        s(data),
        "--out",
        s(out),
        "--seed",
        "3",
    ]
}

/// The last metrics row as named columns.
fn last_row(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    serde_json::from_str(text.lines().last().unwrap()).unwrap()
}

#[test]
fn a_seed_checkpoint_has_no_biases_and_its_sample_error_is_recomputed_from_it() {
    let root = tmp("seed-sample");
    let (data, out) = (root.join("data"), root.join("run"));
    // 300 training images: the error sample is min(1000, 300), all of them.
    make_data(&data, 300, 60);
    trainer(&[&seed_args("seed-fc", &data, &out, "2")[..], &["--threads", "2"]].concat());

    let model = Safetensors::parse(&std::fs::read(out.join("model.safetensors")).unwrap());
    let mut names: Vec<&str> = model
        .header
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .filter(|k| *k != "__metadata__")
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["conv1.weight", "conv2.weight", "conv3.weight", "fc1.weight", "fc2.weight", "fc3.weight"]
    );
    assert_eq!(model.header["fc1.weight"]["shape"], serde_json::json!([120, 1280]), "PyTorch's [out, in]");

    // The model again, from the checkpoint alone, and its error on every
    // training image (pixels in [0, 1]: the seed recipe's `unit`), in f64.
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["normalize"], "unit");
    let spec: ModelSpec = serde_json::from_value(config["spec"].clone()).unwrap();
    let mut plan = Plan::new(&spec, Shape::new(3, 32, 32), 300).unwrap();
    for t in plan.tensors().to_vec() {
        plan.params_mut()[t.range].copy_from_slice(&model.f32s(&t.name));
    }
    let bytes = std::fs::read(data.join("train.bin")).unwrap();
    let x: Vec<f32> =
        bytes.chunks_exact(RECORD).flat_map(|r| r[1..].iter().map(|&v| f32::from(v) / 255.0)).collect();
    let labels: Vec<usize> = bytes.chunks_exact(RECORD).map(|r| usize::from(r[0] == 8)).collect();
    let mut logits = vec![0.0f32; 300 * 2];
    plan.predict(&x, &mut logits);
    let mut error = 0.0f64;
    for (z, &label) in logits.chunks_exact(2).zip(&labels) {
        let z: Vec<f64> = z.iter().map(|&v| v as f64).collect();
        let max = z[0].max(z[1]);
        let e: Vec<f64> = z.iter().map(|v| (v - max).exp()).collect();
        let p: Vec<f64> = e.iter().map(|v| v / (e[0] + e[1])).collect();
        error += (0..2).map(|k| (if k == label { 1.0 } else { 0.0 } - p[k]).powi(2)).sum::<f64>();
    }
    error /= 300.0;
    let row = last_row(&out);
    let logged = row["sample_seed_error"].as_f64().unwrap();
    assert!((logged - error).abs() < 1e-5, "logged {logged}, recomputed {error}");
    assert!(logged > 0.0 && logged < 1.0, "{logged}");
    // The error measured during the epoch (augmented, before each update) is another number.
    assert_ne!(row["train_seed_error"].as_f64().unwrap(), logged);

    // eval reads the bias-free checkpoint and gets the run's test accuracy.
    let eval = trainer(&["eval", "--checkpoint", s(&out.join("model.safetensors")), "--data", s(&data)]);
    let text = String::from_utf8_lossy(&eval.stdout);
    let acc: f64 =
        text.split("test accuracy ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert_eq!(format!("{acc:.4}"), format!("{:.4}", row["test_acc"].as_f64().unwrap()), "{text}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn the_seed_recipe_gives_the_same_bits_on_1_and_2_threads_and_across_a_resume() {
    let root = tmp("seed-bits");
    let data = root.join("data");
    make_data(&data, 200, 40);
    let (one, two, resumed) = (root.join("one"), root.join("two"), root.join("resumed"));
    trainer(&[&seed_args("seed-gap", &data, &one, "3")[..], &["--threads", "1"]].concat());
    trainer(&[&seed_args("seed-gap", &data, &two, "3")[..], &["--threads", "2"]].concat());
    trainer(&[&seed_args("seed-gap", &data, &resumed, "2")[..], &["--threads", "2"]].concat());
    trainer(&["train", "--resume", s(&resumed), "--epochs", "3", "--threads", "1"]);
    let state = |d: &Path| std::fs::read(d.join("state.safetensors")).unwrap();
    assert!(state(&one) == state(&two), "1 and 2 threads differ");
    assert!(state(&one) == state(&resumed), "the resumed run differs");
    assert_eq!(columns(&one), columns(&two));
    assert_eq!(columns(&one), columns(&resumed));
    assert_eq!(columns(&one).len(), 4);
    std::fs::remove_dir_all(&root).unwrap();
}
