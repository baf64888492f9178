//! `trainer export`: the ONNX file run by a real runtime (tract) gives the
//! engine's own probabilities, for every kind of layer the engine trains;
//! the file says what it holds (read back by tract's own protobuf types);
//! bad checkpoints and outputs are refused in one line.

mod common;

use std::path::{Path, PathBuf};

use common::{make_data, one_line_error, run, s, tmp, trainer, Safetensors, RECORD};
use graph::{Arena, Init, Metadata, ModelSpec, Plan, Shape};
use tract_onnx::pb;
use tract_onnx::prelude::*;
use trainer::commands::eval::Checkpoint;

/// Test images the comparisons use.
const IMAGES: usize = 6;

/// A folder with a little generated data and room for runs.
fn workspace(name: &str) -> (PathBuf, PathBuf) {
    let root = tmp(name);
    let data = root.join("data");
    make_data(&data, 40, IMAGES);
    (root, data)
}

/// Train `model` for one epoch on `data` into `root/run`, with `extra` flags;
/// the model file.
fn train(model: &str, root: &Path, data: &Path, extra: &[&str]) -> PathBuf {
    let out = root.join("run");
    let mut args = vec!["train", "--model", model, "--epochs", "1", "--batch", "10", "--threads", "1"];
    args.extend_from_slice(extra);
    args.extend(["--data", s(data), "--out", s(&out)]);
    trainer(&args);
    out.join("model.safetensors")
}

/// `trainer export` of `model` into `onnx`; its summary line.
fn export(model: &Path, onnx: &Path) -> String {
    let out = trainer(&["export", "--checkpoint", s(model), "--out", s(onnx)]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The test records of `data` as raw CHW bytes.
fn test_images(data: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(data.join("test.bin")).unwrap();
    bytes.chunks_exact(RECORD).map(|r| r[1..].to_vec()).collect()
}

/// The engine's probabilities for `images`: the checkpoint's plan on the
/// normalised pixels (as `eval` and `predict` run it), then a softmax in f64.
fn engine(model: &Path, images: &[Vec<u8>]) -> Vec<Vec<f64>> {
    let ck = Checkpoint::read(model).unwrap();
    let mut plan = ck.plan(images.len()).unwrap();
    let plane = ck.input.h * ck.input.w;
    let x: Vec<f32> = images
        .iter()
        .flat_map(|im| im.iter().enumerate().map(|(i, &v)| ck.norm.pixel(i / plane, v)))
        .collect();
    let k = plan.classes();
    let mut logits = vec![0.0f32; images.len() * k];
    plan.predict(&x, &mut logits);
    logits
        .chunks_exact(k)
        .map(|z| {
            let m = z.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let e: Vec<f64> = z.iter().map(|&v| (v as f64 - m).exp()).collect();
            let sum: f64 = e.iter().sum();
            e.iter().map(|v| v / sum).collect()
        })
        .collect()
}

/// tract's probabilities for `images` (pixels / 255, nothing else), run as
/// one batch: the file's batch size is free.
fn tract(onnx: &Path, images: &[Vec<u8>], chw: [usize; 3]) -> Vec<Vec<f32>> {
    let model = tract_onnx::onnx()
        .model_for_path(onnx)
        .unwrap_or_else(|e| panic!("tract cannot read {}: {e:?}", onnx.display()))
        .into_optimized()
        .unwrap_or_else(|e| panic!("tract cannot optimise {}: {e:?}", onnx.display()))
        .into_runnable()
        .unwrap();
    let x: Vec<f32> = images.iter().flatten().map(|&v| f32::from(v) / 255.0).collect();
    let input = Tensor::from_shape(&[images.len(), chw[0], chw[1], chw[2]], &x).unwrap();
    let out = model.run(tvec!(input.into_tvalue())).unwrap();
    let probs = out[0].to_plain_array_view::<f32>().unwrap();
    assert_eq!(probs.shape()[0], images.len());
    probs.outer_iter().map(|row| row.iter().copied().collect()).collect()
}

/// Export `model` and check that tract gives the engine's probabilities on
/// the test images, as a batch and one image at a time; the file. To 1e-5,
/// and, so that a nearly saturated model proves something too, each
/// probability to 1e-4 of itself (f32 logits summed in other orders differ
/// by far less).
fn check_in_tract(model: &Path, images: &[Vec<u8>]) -> PathBuf {
    let onnx = model.with_file_name("exported.onnx");
    export(model, &onnx);
    let want = engine(model, images);
    let input = Checkpoint::read(model).unwrap().input;
    let got = tract(&onnx, images, [input.c, input.h, input.w]);
    let alone = tract(&onnx, &images[2..3], [input.c, input.h, input.w]);
    assert_eq!(alone[0], got[2], "{}: image 2 alone differs from image 2 in a batch", onnx.display());
    let (mut worst, mut worst_rel) = (0.0f64, 0.0f64);
    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
        assert_eq!(w.len(), g.len());
        for (&a, &b) in w.iter().zip(g) {
            let diff = (a - b as f64).abs();
            (worst, worst_rel) = (worst.max(diff), worst_rel.max(diff / a));
            assert!(
                diff <= 1e-5 && diff <= 1e-4 * a + 1e-9,
                "{}: image {i}: engine {w:?}, tract {g:?}",
                onnx.display()
            );
        }
    }
    // Probabilities all near 0.5 would prove little.
    let spread = want.iter().map(|p| (p[0] - 0.5).abs()).fold(0.0, f64::max);
    assert!(spread > 0.05, "{}: the model answers about 0.5 for everything: {want:?}", model.display());
    eprintln!(
        "{}: {} images, largest difference {worst:.1e} (relative {worst_rel:.1e})",
        model.display(),
        images.len()
    );
    onnx
}

fn proto(onnx: &Path) -> pb::ModelProto {
    tract_onnx::onnx().proto_model_for_path(onnx).unwrap()
}

fn ops(model: &pb::ModelProto) -> Vec<String> {
    model.graph.as_ref().unwrap().node.iter().map(|n| n.op_type.clone()).collect()
}

fn metadata(model: &pb::ModelProto, key: &str) -> Option<String> {
    model.metadata_props.iter().find(|e| e.key == key).map(|e| e.value.clone())
}

/// A node's integer attribute, if it has it.
fn int_attr(node: &pb::NodeProto, name: &str) -> Option<i64> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

#[test]
fn seed_fc_runs_in_tract_with_the_engines_probabilities() {
    let (root, data) = workspace("export-seed-fc");
    let model = train("seed-fc", &root, &data, &[]);
    let onnx = check_in_tract(&model, &test_images(&data));
    let m = proto(&onnx);
    // The spec's order (the plan runs each pool before its ReLU), and the
    // modern recipe's normalisation first.
    let want =
        "Sub Div Conv Relu MaxPool Conv Relu MaxPool Conv Relu Flatten Gemm Relu Gemm Relu Gemm Softmax";
    assert_eq!(ops(&m).join(" "), want);
    // Both 3x3/2 pools gain a clipped window from ceil mode (32 -> 16 -> 8).
    let graph = m.graph.as_ref().unwrap();
    let pools: Vec<&pb::NodeProto> = graph.node.iter().filter(|n| n.op_type == "MaxPool").collect();
    assert!(pools.iter().all(|p| int_attr(p, "ceil_mode") == Some(1)), "{pools:?}");
}

#[test]
fn the_file_says_what_it_holds() {
    let (root, data) = workspace("export-header");
    let model = train("seed-gap", &root, &data, &[]);
    let out = export(&model, &root.join("gap.onnx"));
    assert!(out.contains("opset 13") && out.contains("airplane, ship"), "{out}");
    let m = proto(&root.join("gap.onnx"));
    assert_eq!(m.ir_version, 7);
    assert_eq!(m.opset_import.len(), 1);
    assert_eq!((m.opset_import[0].domain.as_str(), m.opset_import[0].version), ("", 13));
    assert_eq!(m.producer_name, "gapnet");
    assert_eq!(metadata(&m, "classes").as_deref(), Some(r#"["airplane","ship"]"#));
    assert_eq!(metadata(&m, "model").as_deref(), Some("seed-gap"));
    assert_eq!(metadata(&m, "epoch").as_deref(), Some("1"));
    assert!(metadata(&m, "gapnet_version").is_some());
    let ck = Checkpoint::read(&model).unwrap();
    let mean: Vec<f32> = serde_json::from_str(&metadata(&m, "norm_mean").unwrap()).unwrap();
    assert_eq!(mean, ck.norm.mean);

    let graph = m.graph.as_ref().unwrap();
    let dims = |v: &pb::ValueInfoProto| -> Vec<String> {
        let Some(pb::type_proto::Value::TensorType(t)) = &v.r#type.as_ref().unwrap().value else { panic!() };
        assert_eq!(t.elem_type, 1, "float32");
        let shape = t.shape.as_ref().unwrap();
        shape
            .dim
            .iter()
            .map(|d| match d.value.as_ref().unwrap() {
                pb::tensor_shape_proto::dimension::Value::DimValue(n) => n.to_string(),
                pb::tensor_shape_proto::dimension::Value::DimParam(p) => p.clone(),
            })
            .collect()
    };
    assert_eq!(graph.input.len(), 1);
    assert_eq!(
        (graph.input[0].name.as_str(), dims(&graph.input[0])),
        ("input", vec!["N".into(), "3".into(), "32".into(), "32".into()])
    );
    assert_eq!(graph.output.len(), 1);
    assert_eq!(
        (graph.output[0].name.as_str(), dims(&graph.output[0])),
        ("probabilities", vec!["N".into(), "2".into()])
    );
    // Every parameter under its checkpoint name, with its values.
    let st = Safetensors::parse(&std::fs::read(&model).unwrap());
    for t in &graph.initializer {
        if t.name.starts_with("norm_") {
            continue;
        }
        let values: Vec<f32> =
            t.raw_data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(values, st.f32s(&t.name), "{}", t.name);
        let shape: Vec<i64> =
            st.header[&t.name]["shape"].as_array().unwrap().iter().map(|d| d.as_i64().unwrap()).collect();
        assert_eq!(t.dims, shape, "{}", t.name);
    }
    assert_eq!(
        graph.initializer.len(),
        2 + 6 + 2,
        "norm_mean, norm_std, 3 convs and the dense layer: {:?}",
        graph.initializer.iter().map(|t| &t.name).collect::<Vec<_>>()
    );

    // Without --out: beside the checkpoint. The run's state file holds the
    // same model (and momentum, left out): the same bytes.
    trainer(&["export", "--checkpoint", s(&model)]);
    let state = model.with_file_name("state.safetensors");
    export(&state, &root.join("state.onnx"));
    let from_model = std::fs::read(model.with_file_name("model.onnx")).unwrap();
    assert_eq!(from_model, std::fs::read(root.join("gap.onnx")).unwrap());
    assert_eq!(from_model, std::fs::read(root.join("state.onnx")).unwrap());
}

#[test]
fn seed_gap_without_biases_or_normalisation_and_pruned() {
    // The seed recipe: no bias anywhere, pixels only scaled to [0, 1] (the
    // graph then starts at the first convolution).
    let (root, data) = workspace("export-seed-gap");
    let model = train("seed-gap", &root, &data, &["--recipe", "seed"]);
    // Its output layer starts a hundred times smaller than He's, and after
    // a few steps every answer is 0.50 +- 0.01: scaled up, the comparison
    // sees more than rounding.
    let mut st = Safetensors::parse(&std::fs::read(&model).unwrap());
    for (i, v) in st.f32s("fc1.weight").into_iter().enumerate() {
        st.set_f32("fc1.weight", i, v * 300.0);
    }
    std::fs::write(&model, st.bytes()).unwrap();
    let onnx = check_in_tract(&model, &test_images(&data));
    let m = proto(&onnx);
    assert_eq!(
        ops(&m).join(" "),
        "Conv Relu MaxPool Conv Relu MaxPool Conv Relu GlobalAveragePool Flatten Gemm Softmax"
    );
    let graph = m.graph.as_ref().unwrap();
    assert!(graph.node.iter().all(|n| n.input.len() <= 2), "no bias inputs expected");

    // A pruned checkpoint is an ordinary one; its planes say so.
    let pruned = root.join("pruned.safetensors");
    let args =
        ["prune", "--checkpoint", s(&model), "--planes", "1,4", "--out", s(&pruned), "--data", s(&data)];
    trainer(&args);
    let onnx = check_in_tract(&pruned, &test_images(&data));
    assert_eq!(metadata(&proto(&onnx), "pruned_planes").as_deref(), Some("[1,4]"));
}

#[test]
fn seed_fc_valid_runs_in_tract_with_the_engines_probabilities() {
    let (root, data) = workspace("export-valid");
    let model = train("seed-fc-valid", &root, &data, &[]);
    let m = proto(&check_in_tract(&model, &test_images(&data)));
    let graph = m.graph.as_ref().unwrap();
    let pools: Vec<&pb::NodeProto> = graph.node.iter().filter(|n| n.op_type == "MaxPool").collect();
    assert_eq!(pools.len(), 2);
    assert!(pools.iter().all(|p| int_attr(p, "ceil_mode").is_none()), "floor pools: {pools:?}");
}

/// Every other layer form: stride-2 convolutions with and without bias, a
/// batch norm per channel and per unit, a ReLU the plan moves after its
/// pool, a ceil-mode pool that gains a window and one whose extra window
/// would start past the input, a 1x1 convolution on a flat input, and a
/// second global average pool (on a flat input, named `gap` in the plan too).
const MIXED: &str = r#"
name = "mixed"
[[layers]]
type = "conv"
filters = 6
size = 5
stride = 2
pad = 2
bias = false
[[layers]]
type = "batch_norm"
[[layers]]
type = "relu"
[[layers]]
type = "max_pool"
size = 2
stride = 3
ceil = true
[[layers]]
type = "conv"
filters = 8
size = 3
stride = 2
[[layers]]
type = "max_pool"
size = 1
stride = 3
ceil = true
[[layers]]
type = "relu"
[[layers]]
type = "flatten"
[[layers]]
type = "dense"
units = 12
bias = false
[[layers]]
type = "batch_norm"
eps = 0.001
[[layers]]
type = "relu"
[[layers]]
type = "conv"
filters = 4
size = 1
[[layers]]
type = "global_avg_pool"
[[layers]]
type = "global_avg_pool"
[[layers]]
type = "dense"
units = 2
"#;

#[test]
fn a_spec_with_every_layer_form_runs_in_tract() {
    let (root, data) = workspace("export-mixed");
    let spec = root.join("mixed.toml");
    std::fs::write(&spec, MIXED).unwrap();
    let model = train(s(&spec), &root, &data, &[]);
    let m = proto(&check_in_tract(&model, &test_images(&data)));
    let graph = m.graph.as_ref().unwrap();
    let pools: Vec<Option<i64>> =
        graph.node.iter().filter(|n| n.op_type == "MaxPool").map(|p| int_attr(p, "ceil_mode")).collect();
    // 16 -> 6 with ceil (floor: 5); 2 -> 1 either way (the third window
    // would start at 3, past the input), written as floor.
    assert_eq!(pools, [Some(1), None]);
    let want = "Sub Div Conv BatchNormalization Relu MaxPool Conv MaxPool Relu Flatten Gemm BatchNormalization Relu \
                Reshape Conv GlobalAveragePool Flatten Reshape GlobalAveragePool Flatten Gemm Softmax";
    assert_eq!(ops(&m).join(" "), want);
}

#[test]
fn deep_gap_batch_norms_run_on_their_running_statistics() {
    let (root, data) = workspace("export-deep-gap");
    let model = train("deep-gap", &root, &data, &[]);
    // A few steps move the running statistics only a little from 0 and 1:
    // spread them far, so that a runtime using anything else would differ.
    let mut st = Safetensors::parse(&std::fs::read(&model).unwrap());
    let names: Vec<String> = st
        .header
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.ends_with(".running_mean") || k.ends_with(".running_var"))
        .cloned()
        .collect();
    assert_eq!(names.len(), 10, "5 batch norms: {names:?}");
    for name in &names {
        let values = st.f32s(name);
        for (i, v) in values.iter().enumerate() {
            let wobble = ((i * 7 + name.len()) % 11) as f32 / 10.0;
            let new = if name.ends_with("mean") { v + wobble - 0.5 } else { v * (0.5 + wobble) };
            st.set_f32(name, i, new);
        }
    }
    std::fs::write(&model, st.bytes()).unwrap();
    let m = proto(&check_in_tract(&model, &test_images(&data)));
    let n = ops(&m).iter().filter(|o| *o == "BatchNormalization").count();
    assert_eq!(n, 5);
}

/// A pool that needs ceil mode across and floor mode down (the window
/// that ceil mode would add down starts past the input): only a non-square
/// input, which CIFAR never is, reaches it. The checkpoint is written from
/// a plan directly, as `train` writes one.
#[test]
fn a_pool_that_neither_mode_expresses_runs_in_tract() {
    let root = tmp("export-non-square");
    let spec = ModelSpec::from_toml(
        "name = \"odd\"\n[[layers]]\ntype = \"conv\"\nfilters = 3\nsize = 1\n\
         [[layers]]\ntype = \"max_pool\"\nsize = 2\nstride = 3\nceil = true\n\
         [[layers]]\ntype = \"flatten\"\n[[layers]]\ntype = \"dense\"\nunits = 2\n",
    )
    .unwrap();
    let mut plan = Plan::new(&spec, Shape::new(1, 6, 7), 4).unwrap();
    assert_eq!(plan.nodes()[1].out_shape, Shape::new(3, 2, 3), "6 -> 2 (floor), 7 -> 3 (ceil)");
    plan.initialize(Init::He, 7);
    for (i, v) in plan.params_mut().iter_mut().enumerate() {
        *v += (i % 5) as f32 * 0.3 - 0.6;
    }
    let meta = Metadata::from([
        ("classes".to_string(), r#"["left","right"]"#.to_string()),
        ("norm_mean".to_string(), "[0.4]".to_string()),
        ("norm_std".to_string(), "[0.2]".to_string()),
    ]);
    let model = root.join("odd.safetensors");
    std::fs::write(&model, plan.to_safetensors(&[Arena::Params], meta)).unwrap();
    let images: Vec<Vec<u8>> =
        (0..4u32).map(|k| (0..42u32).map(|i| ((i * 37 + k * 91) % 256) as u8).collect()).collect();
    let m = proto(&check_in_tract(&model, &images));
    let pool = m.graph.as_ref().unwrap().node.iter().find(|n| n.op_type == "MaxPool").unwrap();
    let pads = pool.attribute.iter().find(|a| a.name == "pads").map(|a| a.ints.clone());
    assert_eq!((int_attr(pool, "ceil_mode"), pads), (None, Some(vec![0, 0, 0, 1])));
}

/// A safetensors file with one tensor and no gapnet header.
fn foreign_safetensors(path: &Path) {
    let header = br#"{"weight":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}    "#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&1.0f32.to_le_bytes());
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn bad_checkpoints_and_outputs_are_refused_in_one_line() {
    let root = tmp("export-bad");
    let foreign = root.join("foreign.safetensors");
    foreign_safetensors(&foreign);
    let out = root.join("out.onnx");
    let err = run(&["export", "--checkpoint", s(&foreign), "--out", s(&out)]);
    one_line_error(
        &err,
        &["foreign.safetensors", "no model spec in the header"],
        "a foreign safetensors file",
    );
    let text = root.join("notes.safetensors");
    std::fs::write(&text, "hello, not a checkpoint").unwrap();
    let err = run(&["export", "--checkpoint", s(&text), "--out", s(&out)]);
    one_line_error(&err, &["notes.safetensors", "not a readable safetensors file"], "a text file");
    let err = run(&["export", "--checkpoint", s(&root.join("missing.safetensors")), "--out", s(&out)]);
    one_line_error(&err, &["missing.safetensors", "cannot read the checkpoint"], "a missing file");
    assert!(!out.exists());

    // The outputs are checked before the checkpoint is read.
    let folder = root.join("a-folder");
    std::fs::create_dir(&folder).unwrap();
    let err = run(&["export", "--checkpoint", s(&foreign), "--out", s(&folder)]);
    one_line_error(&err, &["--out", "a-folder", "a directory, not a regular file"], "a folder");
    assert!(std::fs::read_dir(&folder).unwrap().next().is_none(), "nothing written into the folder");
    #[cfg(unix)]
    {
        let err = run(&["export", "--checkpoint", s(&foreign), "--out", "/dev/null"]);
        one_line_error(&err, &["--out /dev/null", "a character device"], "a device");
    }
    let err = run(&["export", "--checkpoint", s(&foreign), "--out", s(&foreign)]);
    one_line_error(&err, &["--out", "the checkpoint being exported"], "the checkpoint itself");
    let err = run(&["export", "--checkpoint", s(&foreign), "--out", s(&root.join("no-such-folder/x.onnx"))]);
    one_line_error(&err, &["no-such-folder", "does not exist"], "a missing folder");
}
