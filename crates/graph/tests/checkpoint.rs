//! Safetensors checkpoints and TOML spec files.

use graph::{preset, read_model, write_atomic, Arena, Init, Metadata, ModelSpec, Plan, Shape, PRESETS};

fn plan(name: &str, seed: u64) -> Plan {
    let mut p = Plan::new(&preset(name).unwrap(), Shape::new(3, 32, 32), 4).unwrap();
    p.initialize(Init::He, seed);
    p
}

#[test]
fn params_and_velocity_round_trip_with_the_model_spec() {
    let mut a = plan("seed-fc", 1);
    a.velocity_mut().iter_mut().enumerate().for_each(|(i, v)| *v = i as f32 * 1e-3);
    let meta = Metadata::from([("epoch".to_string(), "7".to_string())]);
    let params = a.to_safetensors(&[Arena::Params], meta.clone());
    let velocity = a.to_safetensors(&[Arena::Velocity], meta.clone());
    // Same state, same bytes (the header's metadata is sorted).
    assert_eq!(params, a.to_safetensors(&[Arena::Params], meta));

    let (spec, input, metadata) = read_model(&params, "model.safetensors").unwrap();
    assert_eq!(spec, *a.spec());
    assert_eq!(input, Shape::new(3, 32, 32));
    assert_eq!(metadata["epoch"], "7");

    let mut b = Plan::new(&spec, input, 4).unwrap();
    b.initialize(Init::He, 2);
    assert_ne!(a.params(), b.params());
    b.load_safetensors(&[Arena::Params], &params, "model.safetensors").unwrap();
    b.load_safetensors(&[Arena::Velocity], &velocity, "state.safetensors").unwrap();
    assert_eq!(a.params(), b.params());
    assert_eq!(a.velocity(), b.velocity());
}

#[test]
fn params_and_velocity_share_one_file_for_resuming() {
    let mut a = plan("seed-gap", 1);
    a.velocity_mut().iter_mut().enumerate().for_each(|(i, v)| *v = i as f32);
    let both = a.to_safetensors(&[Arena::Params, Arena::Velocity], Metadata::new());
    let mut b = plan("seed-gap", 2);
    b.load_safetensors(&[Arena::Params, Arena::Velocity], &both, "state").unwrap();
    assert_eq!((a.params(), a.velocity()), (b.params(), b.velocity()));
    // A params-only file is not a resumable state, and the reverse.
    let e = b.load_safetensors(
        &[Arena::Params, Arena::Velocity],
        &a.to_safetensors(&[Arena::Params], Metadata::new()),
        "m",
    );
    assert!(e.unwrap_err().to_string().contains("velocity.conv1.weight is missing"));
    let e = b.load_safetensors(&[Arena::Params], &both, "state").unwrap_err().to_string();
    assert!(e.contains("unexpected tensors") && e.contains("velocity.fc1.bias"), "{e}");
}

#[test]
fn a_checkpoint_of_another_model_is_refused_naming_the_tensor() {
    let fc = plan("seed-fc", 1).to_safetensors(&[Arena::Params], Metadata::new());
    let mut gap = plan("seed-gap", 1);
    let before = gap.params().to_vec();
    let e = gap.load_safetensors(&[Arena::Params], &fc, "fc.safetensors").unwrap_err().to_string();
    assert!(e.contains("fc.safetensors") && e.contains("fc1.weight") && e.contains("[2, 20]"), "{e}");
    assert!(e.contains("[120, 1280]"), "{e}");
    assert_eq!(gap.params(), before, "a refused load must change nothing");

    // Conv biases present in the file but not in the model, and the reverse.
    let with_bias = plan("seed-gap", 1).to_safetensors(&[Arena::Params], Metadata::new());
    let mut no_bias =
        Plan::new(&preset("seed-gap").unwrap().without_conv_bias(), Shape::new(3, 32, 32), 4).unwrap();
    let e = no_bias.load_safetensors(&[Arena::Params], &with_bias, "x").unwrap_err().to_string();
    assert!(e.contains("unexpected tensors") && e.contains("conv1.bias"), "{e}");
    let no_bias_bytes = no_bias.to_safetensors(&[Arena::Params], Metadata::new());
    let e =
        plan("seed-gap", 3).load_safetensors(&[Arena::Params], &no_bias_bytes, "nb").unwrap_err().to_string();
    assert!(e.contains("conv1.bias is missing"), "{e}");
}

#[test]
fn garbage_truncated_and_non_finite_files_are_errors() {
    let mut p = plan("seed-gap", 1);
    let good = p.to_safetensors(&[Arena::Params], Metadata::new());
    for bad in [&b"not a checkpoint at all"[..], &good[..good.len() / 2], &[][..]] {
        let e = p.load_safetensors(&[Arena::Params], bad, "bad.safetensors").unwrap_err().to_string();
        assert!(e.starts_with("bad.safetensors: not a readable safetensors file"), "{e}");
        assert!(read_model(bad, "bad.safetensors").is_err());
    }
    // Poison one weight with NaN: the last 4 bytes are the last tensor's last value.
    let mut nan = good.clone();
    let n = nan.len();
    nan[n - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
    let e = p.load_safetensors(&[Arena::Params], &nan, "nan.safetensors").unwrap_err().to_string();
    assert!(e.contains("NaN") && e.contains("nan.safetensors"), "{e}");
}

#[test]
fn write_atomic_replaces_the_file_and_leaves_no_temporary() {
    let dir = std::env::temp_dir().join(format!("gapnet-atomic-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    write_atomic(&path, b"first").unwrap();
    write_atomic(&path, b"second").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"second");
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(write_atomic(&dir.join("missing-folder/x"), b"x").is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn presets_round_trip_through_toml() {
    for name in PRESETS {
        let spec = preset(name).unwrap();
        assert_eq!(ModelSpec::from_toml(&spec.to_toml()).unwrap(), spec, "{name}");
    }
}

#[test]
fn toml_spec_files_use_defaults_and_report_mistakes() {
    let text = r#"
name = "mine"
[[layers]]
type = "conv"
filters = 8
size = 3
pad = 1
[[layers]]
type = "relu"
[[layers]]
type = "max_pool"
size = 2
stride = 2
[[layers]]
type = "global_avg_pool"
[[layers]]
type = "dense"
units = 10
"#;
    let spec = ModelSpec::from_toml(text).unwrap();
    let p = Plan::new(&spec, Shape::new(3, 32, 32), 2).unwrap();
    assert_eq!(p.classes(), 10);
    assert_eq!(p.tensors().len(), 4);
    let e = ModelSpec::from_toml(&text.replace("\"relu\"", "\"swish\"")).unwrap_err();
    assert!(e.contains("swish") && e.contains("line"), "{e}");
    let e = ModelSpec::from_toml(&text.replace("filters = 8\n", "")).unwrap_err();
    assert!(e.contains("filters"), "{e}");
    let e = ModelSpec::from_toml(&text.replace("units = 10", "units = 10\nunit = 3")).unwrap_err();
    assert!(e.contains("unit"), "{e}");
}
