//! Batch norm through the trainer: the same bits with 1 and 2 threads and
//! across a resume; PyTorch's state-dict names and dtypes in the
//! checkpoints (the running statistics, an i64 step count); evaluation
//! with the running statistics, as `eval` reproduces; a spec file with
//! batch norm before a dense layer.

mod common;

use std::path::Path;

use common::{command, make_data, metrics_but_timings, s, text, tmp};
use serde_json::Value;

fn ok(args: &[&str], what: &str) -> String {
    let out = command(args).output().unwrap();
    assert!(out.status.success(), "{what}:\n{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn train<'a>(model: &'a str, data: &'a Path, out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["train", "--model", model, "--batch", "20", "--data", s(data), "--out", s(out)];
    args.extend(extra);
    args
}

/// A safetensors file's header: tensor name -> (dtype, shape), and the
/// bytes of the i64 tensors as values.
fn header(path: &Path) -> (serde_json::Map<String, Value>, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let json: Value = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
    (json.as_object().unwrap().clone(), bytes[8 + len..].to_vec())
}

fn i64_of(map: &serde_json::Map<String, Value>, data: &[u8], name: &str) -> i64 {
    let t = &map[name];
    assert_eq!(t["dtype"], "I64", "{name}");
    assert_eq!(t["shape"], serde_json::json!([]), "{name}: a scalar, as PyTorch's");
    let at = t["data_offsets"][0].as_u64().unwrap() as usize;
    i64::from_le_bytes(data[at..at + 8].try_into().unwrap())
}

#[test]
fn deep_gap_trains_the_same_bits_on_any_threads_and_across_a_resume() {
    let dir = tmp("bn-bits");
    let data = dir.join("data");
    make_data(&data, 100, 40);
    let (one, two, split) = (dir.join("one"), dir.join("two"), dir.join("split"));
    ok(&train("deep-gap", &data, &one, &["--epochs", "2", "--threads", "1"]), "1 thread");
    ok(&train("deep-gap", &data, &two, &["--epochs", "2", "--threads", "2"]), "2 threads");
    let state = |d: &Path| std::fs::read(d.join("state.safetensors")).unwrap();
    assert!(state(&one) == state(&two), "1 and 2 threads give different states");
    ok(&train("deep-gap", &data, &split, &["--epochs", "1", "--threads", "2"]), "epoch 1");
    ok(&["train", "--resume", s(&split), "--epochs", "2"], "resume to epoch 2");
    assert!(state(&split) == state(&one), "the resumed run differs");
    assert_eq!(metrics_but_timings(&split), metrics_but_timings(&one));

    // PyTorch's names and dtypes: bnK.{weight,bias,running_mean,running_var}
    // f32 of [C], bnK.num_batches_tracked an i64 scalar; 2 epochs of 5 steps.
    let (map, data_bytes) = header(&one.join("model.safetensors"));
    for (k, c) in [(1, 32), (2, 64), (3, 64), (4, 128), (5, 128)] {
        for suffix in ["weight", "bias", "running_mean", "running_var"] {
            let t = &map[&format!("bn{k}.{suffix}")];
            assert_eq!(
                (&t["dtype"], &t["shape"]),
                (&Value::from("F32"), &serde_json::json!([c])),
                "bn{k}.{suffix}"
            );
        }
        assert_eq!(i64_of(&map, &data_bytes, &format!("bn{k}.num_batches_tracked")), 10, "bn{k}");
        assert!(!map.contains_key(&format!("conv{k}.bias")), "deep-gap's convolutions have no bias");
    }
    // state.safetensors carries them too, once, beside the momentum of the parameters alone.
    let (state_map, _) = header(&one.join("state.safetensors"));
    assert!(state_map.contains_key("bn3.running_var") && state_map.contains_key("velocity.bn3.weight"));
    assert!(!state_map.contains_key("velocity.bn3.running_var"));

    // Evaluation normalises with the running statistics: `eval` on the
    // saved model reproduces the run's last test accuracy exactly.
    let rows = std::fs::read_to_string(one.join("metrics.csv")).unwrap();
    let test_acc: f64 = rows.lines().last().unwrap().split(',').nth(6).unwrap().parse().unwrap();
    let eval = ok(&["eval", "--checkpoint", s(&one.join("model.safetensors")), "--data", s(&data)], "eval");
    assert!(eval.contains(&format!("test accuracy {test_acc:.4}")), "{eval}\n(run: {test_acc})");
}

#[test]
fn a_spec_with_batch_norm_before_a_dense_layer_trains_and_evaluates() {
    let dir = tmp("bn-spec");
    let data = dir.join("data");
    make_data(&data, 60, 20);
    let spec = dir.join("bn-dense.toml");
    std::fs::write(
        &spec,
        r#"name = "bn-dense"
[[layers]]
type = "conv"
filters = 8
size = 3
pad = 1
bias = false
[[layers]]
type = "batch_norm"
[[layers]]
type = "relu"
[[layers]]
type = "max_pool"
size = 4
stride = 4
[[layers]]
type = "flatten"
[[layers]]
type = "dense"
units = 16
[[layers]]
type = "batch_norm"
momentum = 0.5
eps = 1e-3
[[layers]]
type = "relu"
[[layers]]
type = "dense"
units = 2
"#,
    )
    .unwrap();
    let out = dir.join("run");
    let stdout = ok(&train(s(&spec), &data, &out, &["--epochs", "2"]), "spec with batch norm");
    assert!(stdout.contains("epoch   2/2"), "{stdout}");
    let (map, bytes) = header(&out.join("model.safetensors"));
    assert_eq!(map["bn2.running_mean"]["shape"], serde_json::json!([16]), "per unit after a dense layer");
    assert_eq!(i64_of(&map, &bytes, "bn2.num_batches_tracked"), 6);
    // A bad constant is refused with the layer named.
    std::fs::write(&spec, "name = \"x\"\n[[layers]]\ntype = \"batch_norm\"\neps = -1.0\n").unwrap();
    let out = command(&train(s(&spec), &data, &dir.join("bad"), &["--epochs", "1"])).output().unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("eps must be positive"), "{}", text(&out));
}
