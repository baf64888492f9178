//! Shape inference, presets, parameter naming and the errors of bad specs.

use graph::{preset, LayerSpec, ModelSpec, Op, Plan, Shape, PRESETS};

fn plan(name: &str) -> Plan {
    Plan::new(&preset(name).unwrap(), Shape::new(3, 32, 32), 8).unwrap()
}

fn spatial(plan: &Plan) -> Vec<(usize, usize)> {
    plan.nodes()
        .iter()
        .filter(|n| matches!(n.op, Op::Conv(_) | Op::MaxPool(_)))
        .map(|n| (n.out_shape.h, n.out_shape.w))
        .collect()
}

#[test]
fn every_preset_builds_with_two_classes() {
    for name in PRESETS {
        let p = plan(name);
        assert_eq!(p.classes(), 2, "{name}");
        assert!(p.forward_macs() > 1_000_000, "{name}");
    }
    assert!(preset("nope").is_none());
    assert!(preset("wide-gap-valid").is_none());
}

#[test]
fn seed_trunk_shapes_follow_the_design_notes() {
    assert_eq!(spatial(&plan("seed-fc")), [(32, 32), (16, 16), (16, 16), (8, 8), (8, 8)]);
    assert_eq!(spatial(&plan("seed-gap-valid")), [(30, 30), (14, 14), (12, 12), (5, 5), (3, 3)]);
}

#[test]
fn parameter_counts_and_costs_match_the_design_notes() {
    let fc = plan("seed-fc");
    let gap = plan("seed-gap");
    // conv: 560 + 3620 + 3620; FC head 153720 + 10164 + 170; GAP head 42.
    assert_eq!(fc.params().len(), 171_854);
    assert_eq!(gap.params().len(), 7_842);
    let macs: Vec<usize> = fc.nodes().iter().map(|n| n.macs()).filter(|&m| m > 0).collect();
    assert_eq!(macs, [552_960, 921_600, 230_400, 153_600, 10_080, 168]);
    // The figures the README's preset table quotes.
    for (name, params, macs) in [
        ("seed-fc", 171_854, 1_868_808),
        ("seed-gap", 7_842, 1_705_000),
        ("seed-fc20", 33_462, 1_730_600),
        ("wide-gap", 93_378, 10_322_048),
    ] {
        let p = plan(name);
        assert_eq!((p.params().len(), p.forward_macs()), (params, macs), "{name}");
    }
}

#[test]
fn tensors_use_pytorch_names_and_shapes() {
    let p = plan("seed-fc");
    let names: Vec<(&str, &[usize])> =
        p.tensors().iter().map(|t| (t.name.as_str(), t.shape.as_slice())).collect();
    assert_eq!(names[0], ("conv1.weight", &[20, 3, 3, 3][..]));
    assert_eq!(names[1], ("conv1.bias", &[20][..]));
    assert_eq!(names[6], ("fc1.weight", &[120, 1280][..]));
    assert_eq!(names.last().unwrap(), &("fc3.bias", &[2][..]));
    // The arena is carved without gaps or overlaps.
    let mut end = 0;
    for t in p.tensors() {
        assert_eq!(t.range.start, end, "{}", t.name);
        assert_eq!(t.range.len(), t.shape.iter().product::<usize>(), "{}", t.name);
        end = t.range.end;
    }
    assert_eq!(end, p.params().len());
    let no_bias = preset("seed-gap").unwrap().without_conv_bias();
    let p = Plan::new(&no_bias, Shape::new(3, 32, 32), 1).unwrap();
    assert!(p.tensors().iter().all(|t| !t.name.starts_with("conv") || t.name.ends_with("weight")));
}

fn error_of(layers: Vec<LayerSpec>, input: Shape) -> String {
    let spec = ModelSpec { name: "bad".into(), layers };
    match Plan::new(&spec, input, 4) {
        Ok(_) => panic!("spec should have been rejected"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn impossible_specs_are_errors_naming_the_layer() {
    use LayerSpec::*;
    let dense = Dense { units: 2, bias: true };
    let e = error_of(
        vec![MaxPool { size: 5, stride: 2, ceil: false }, Flatten, dense.clone()],
        Shape::new(3, 4, 4),
    );
    assert!(e.starts_with("layer 1:") && e.contains("3x4x4") && e.contains("5x5"), "{e}");
    let e = error_of(
        vec![Conv { filters: 0, size: 3, stride: 1, pad: 1, bias: true }, Flatten, dense.clone()],
        Shape::new(3, 8, 8),
    );
    assert!(e.starts_with("layer 1:") && e.contains("at least 1"), "{e}");
    let e = error_of(
        vec![Conv { filters: 4, size: 9, stride: 1, pad: 0, bias: true }, Flatten, dense.clone()],
        Shape::new(3, 8, 8),
    );
    assert!(e.starts_with("layer 1:") && e.contains("smaller than the 9x9 kernel"), "{e}");
    let e = error_of(
        vec![Conv { filters: 4, size: 3, stride: 1, pad: 1, bias: true }, dense.clone()],
        Shape::new(3, 8, 8),
    );
    assert!(e.starts_with("layer 2:") && e.contains("not flat"), "{e}");
    let e = error_of(
        vec![Conv { filters: 4, size: 3, stride: 1, pad: 1, bias: true }, Relu],
        Shape::new(3, 8, 8),
    );
    assert!(e.contains("last layer must be a dense"), "{e}");
    let e = error_of(vec![Flatten, Dense { units: 0, bias: true }], Shape::new(3, 8, 8));
    assert!(e.starts_with("layer 2:"), "{e}");
    let spec = preset("seed-gap").unwrap();
    assert!(Plan::new(&spec, Shape::new(3, 32, 32), 0).err().unwrap().to_string().contains("batch"));
    assert!(Plan::new(&spec, Shape::new(3, 2, 2), 4).is_err());
}

/// A ReLU directly before a max pool runs after it (same values, a quarter
/// of the work); a ReLU not followed by a pool stays where the spec has it.
#[test]
fn relu_before_a_pool_runs_after_it() {
    let names: Vec<String> = plan("seed-fc").nodes().iter().map(|n| n.name.clone()).collect();
    let want = [
        "conv1", "pool1", "relu1", "conv2", "pool2", "relu2", "conv3", "relu3", "fc1", "relu4", "fc2",
        "relu5", "fc3",
    ];
    assert_eq!(names, want);
    let p = plan("seed-fc");
    let (pool1, relu1) = (&p.nodes()[1], &p.nodes()[2]);
    assert_eq!(relu1.in_shape, pool1.out_shape, "the moved ReLU works on the pooled planes");
    assert_eq!(relu1.out_shape, Shape::new(20, 16, 16));
}

#[test]
fn a_layer_too_large_to_address_is_an_error_not_an_overflow() {
    use LayerSpec::*;
    let dense = Dense { units: 2, bias: true };
    // 2^21 filters of 1024 x 1024 planes: 2^41 values.
    let huge = Conv { filters: 1 << 21, size: 3, stride: 1, pad: 1, bias: true };
    let e = error_of(vec![huge, Flatten, dense.clone()], Shape::new(1, 1024, 1024));
    assert!(e.starts_with("layer 1:") && e.contains("2^40"), "{e}");
    let e = error_of(vec![Flatten, Dense { units: usize::MAX, bias: true }], Shape::new(3, 8, 8));
    assert!(e.starts_with("layer 2:") && e.contains("2^40"), "{e}");
    let e = error_of(
        vec![Conv { filters: 1, size: 3, stride: 1, pad: usize::MAX, bias: true }, Flatten, dense.clone()],
        Shape::new(3, 8, 8),
    );
    assert!(e.starts_with("layer 1:") && e.contains("2^40"), "{e}");
    let e = error_of(vec![Flatten, dense], Shape::new(usize::MAX, 2, 1));
    assert!(e.starts_with("model:") && e.contains("2^40"), "{e}");
}
