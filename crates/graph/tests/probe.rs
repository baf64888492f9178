//! The probe: its forward pass against `Plan::predict` and the f64
//! reference, its gradients against finite differences, class activation
//! maps of a model built by hand, and plane pruning by weight surgery.

mod common;

use common::{random_batch, reference_node};
use graph::{preset, probe, LayerSpec, ModelSpec, Plan, Shape};

const CIFAR: Shape = Shape { c: 3, h: 32, w: 32 };

/// A preset with He-random weights (seeded), for `n` images at once.
fn model(name: &str, n: usize) -> Plan {
    let mut plan = Plan::new(&preset(name).unwrap(), CIFAR, n).unwrap();
    plan.initialize(graph::Init::He, 7);
    plan
}

fn predict(plan: &mut Plan, x: &[f32]) -> Vec<f32> {
    let mut logits = vec![0.0; x.len() / plan.input_shape().len() * plan.classes()];
    plan.predict(x, &mut logits);
    logits
}

/// `|a - b| <= tol * (1 + max |b|)` element by element.
fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let scale = 1.0 + b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol * scale, "{what}[{i}]: {x} vs {y}");
    }
}

/// One image through nodes `from..` in f64 with the naive reference kernels,
/// starting from `a` (the output of node `from - 1`, or the image); returns
/// every node's output from `from` on.
fn reference_from(plan: &Plan, from: usize, mut a: Vec<f64>) -> Vec<Vec<f64>> {
    let params: Vec<f64> = plan.params().iter().map(|&v| v as f64).collect();
    let mut outs = Vec::new();
    for node in &plan.nodes()[from..] {
        a = reference_node(plan, node, &params, &a);
        outs.push(a.clone());
    }
    outs
}

#[test]
fn probe_logits_equal_predict_for_every_preset() {
    for name in ["seed-fc", "seed-gap", "seed-fc20", "wide-gap", "seed-gap-valid", "seed-fc-valid"] {
        let mut plan = model(name, 5);
        let (x, _) = random_batch(&plan, 5, 11);
        let trace = probe::forward(&plan, &x);
        assert_eq!(trace.images(), 5);
        let expected = predict(&mut plan, &x);
        assert!(expected.iter().any(|&v| v != 0.0), "{name}: all logits zero; the check proves nothing");
        assert_close(trace.logits(), &expected, 1e-5, name);
    }
}

#[test]
fn every_node_output_matches_the_f64_reference() {
    for name in ["seed-gap", "seed-fc-valid"] {
        let plan = model(name, 2);
        let (x, _) = random_batch(&plan, 2, 3);
        let trace = probe::forward(&plan, &x);
        let per = CIFAR.len();
        for i in 0..2 {
            let image: Vec<f64> = x[i * per..(i + 1) * per].iter().map(|&v| v as f64).collect();
            for (k, want) in reference_from(&plan, 0, image).iter().enumerate() {
                let len = want.len();
                let got = &trace.output(k)[i * len..(i + 1) * len];
                let want: Vec<f32> = want.iter().map(|&v| v as f32).collect();
                assert_close(got, &want, 1e-4, &format!("{name} image {i} {}", plan.nodes()[k].name));
            }
        }
    }
}

/// Central differences in f64 of logit `class` of one image with respect to
/// sampled elements of node `node`'s output, against `probe::gradient`.
fn check_gradient(name: &str, node_name: &str) {
    let plan = model(name, 2);
    let (x, _) = random_batch(&plan, 2, 21);
    let trace = probe::forward(&plan, &x);
    let node = plan.nodes().iter().position(|n| n.name == node_name).unwrap();
    let len = plan.nodes()[node].out_shape.len();
    let classes = [1, 0];
    let grad = probe::gradient(&plan, &trace, &classes, node);
    assert_eq!(grad.len(), 2 * len);
    let scale = grad.iter().fold(0.0f32, |m, g| m.max(g.abs())) as f64;
    assert!(scale > 0.0, "{name} {node_name}: the gradient is all zero; the check proves nothing");
    for (i, &class) in classes.iter().enumerate() {
        let a: Vec<f64> = trace.output(node)[i * len..(i + 1) * len].iter().map(|&v| v as f64).collect();
        let logit = |a: &[f64]| reference_from(&plan, node + 1, a.to_vec()).pop().unwrap()[class];
        for j in (0..len).step_by(len / 40 + 1) {
            let h = 1e-4;
            let (mut up, mut down) = (a.clone(), a.clone());
            up[j] += h;
            down[j] -= h;
            let numeric = (logit(&up) - logit(&down)) / (2.0 * h);
            let analytic = grad[i * len + j] as f64;
            let err = (numeric - analytic).abs() / numeric.abs().max(analytic.abs()).max(1e-3 * scale);
            assert!(err < 1e-3, "{name} {node_name} image {i} [{j}]: {analytic:e} vs numeric {numeric:e}");
        }
    }
}

#[test]
fn gradients_match_finite_differences() {
    check_gradient("seed-fc", "relu3"); // flatten, three dense layers and ReLUs
    check_gradient("seed-gap", "relu3"); // global average pool
    check_gradient("seed-gap", "conv2"); // back through conv3, relu2 and pool2
    check_gradient("seed-fc20-valid", "pool1"); // floor pooling, no padding
}

#[test]
fn head_finds_the_planes_before_global_pooling_or_the_first_dense_layer() {
    for (name, feature, planes, plane_len, columns, cam) in [
        ("seed-fc", "relu3", 20, 64, 64, false),
        ("seed-gap", "relu3", 20, 64, 1, true),
        ("seed-fc20", "relu3", 20, 64, 64, false),
        ("wide-gap", "relu4", 64, 64, 1, true),
        ("seed-fc-valid", "relu3", 20, 9, 9, false),
    ] {
        let plan = model(name, 1);
        let head = probe::head(&plan).unwrap();
        let nodes = plan.nodes();
        assert_eq!(nodes[head.feature].name, feature, "{name}");
        assert_eq!(
            (head.planes, head.plane_len, head.columns_per_plane, head.cam),
            (planes, plane_len, columns, cam)
        );
        assert_eq!(nodes[head.dense].name, "fc1", "{name}");
    }
    let flat = ModelSpec {
        name: "flat".into(),
        layers: vec![LayerSpec::Flatten, LayerSpec::Dense { units: 2, bias: true }],
    };
    let err = probe::head(&Plan::new(&flat, CIFAR, 1).unwrap()).unwrap_err();
    assert!(err.to_string().contains("model flat: no layer with planes before its head"), "{err}");
}

#[test]
fn class_map_cells_are_centred_where_their_receptive_fields_are() {
    // pad 1, ceil pools: 32 -> 16 -> 8, cell j centred on pixel 4j + 3
    for name in ["seed-gap", "seed-fc", "wide-gap"] {
        let plan = model(name, 1);
        assert_eq!(probe::receptive_centre(&plan, probe::head(&plan).unwrap().feature), (4.0, 3.0), "{name}");
    }
    // valid convs (+1 each) and floor pools: 32 -> 30 -> 14 -> 12 -> 5 -> 3, cells at 10, 14, 18
    let plan = model("seed-gap-valid", 1);
    assert_eq!(probe::receptive_centre(&plan, probe::head(&plan).unwrap().feature), (4.0, 10.0));
    assert_eq!(probe::receptive_centre(&plan, 0), (1.0, 1.0));
    // A stride-2 conv of kernel 4, pad 1: output i reads 2i-1 .. 2i+2, centred on 2i + 0.5.
    let spec = ModelSpec {
        name: "s2".into(),
        layers: vec![
            LayerSpec::Conv { filters: 1, size: 4, stride: 2, pad: 1, bias: false },
            LayerSpec::GlobalAvgPool,
            LayerSpec::Dense { units: 2, bias: false },
        ],
    };
    assert_eq!(probe::receptive_centre(&Plan::new(&spec, CIFAR, 1).unwrap(), 0), (2.0, 0.5));
}

/// 1 x 3 x 4 input, conv 1x1 with two filters (weights 1 and -0.5, no
/// bias), ReLU, then `head`, then dense 2 -> 3 with known weights.
fn hand_built(head: Vec<LayerSpec>) -> Plan {
    let mut layers =
        vec![LayerSpec::Conv { filters: 2, size: 1, stride: 1, pad: 0, bias: false }, LayerSpec::Relu];
    layers.extend(head);
    layers.push(LayerSpec::Dense { units: 3, bias: true });
    let mut plan = Plan::new(&ModelSpec { name: "hand".into(), layers }, Shape::new(1, 3, 4), 1).unwrap();
    // conv1.weight [2,1,1,1], fc1.weight [3,2], fc1.bias [3], in arena order
    plan.params_mut().copy_from_slice(&[1.0, -0.5, 2.0, -1.0, 0.5, 3.0, 0.0, 0.0, 0.1, -0.2, 0.3]);
    plan
}

const IMAGE: [f32; 12] = [-2.0, -1.0, 0.0, 1.0, 2.0, 3.0, -3.0, 4.0, -0.5, 0.5, 1.5, -1.5];

#[test]
fn cam_of_a_hand_built_model_is_the_weighted_sum_of_its_planes() {
    let plan = hand_built(vec![LayerSpec::GlobalAvgPool]);
    let head = probe::head(&plan).unwrap();
    assert!(head.cam && head.planes == 2 && head.plane_len == 12);
    let trace = probe::forward(&plan, &IMAGE);
    let maps = probe::class_maps(&plan, &head, &trace, &[0]);
    // By hand: plane 0 = relu(x), plane 1 = relu(-x / 2), class 0 weights (2, -1).
    let a0: Vec<f32> = IMAGE.iter().map(|&x| x.max(0.0)).collect();
    let a1: Vec<f32> = IMAGE.iter().map(|&x| (-0.5 * x).max(0.0)).collect();
    let expected: Vec<f32> = a0.iter().zip(&a1).map(|(p, q)| 2.0 * p - q).collect();
    assert_close(&maps.maps, &expected, 1e-6, "CAM class 0");
    // mean(a0) = 12/12 = 1, mean(a1) = (1 + 0.5 + 1.5 + 0.25 + 0.75) / 12 = 1/3
    assert_close(&maps.contributions, &[2.0, -1.0 / 3.0], 1e-6, "contributions");
    assert_eq!(maps.weights, vec![2.0, -1.0]);
    // The map's mean plus the bias is the logit.
    let mean = maps.maps.iter().sum::<f32>() / 12.0;
    assert!((mean + 0.1 - trace.logits()[0]).abs() < 1e-5, "{mean} + 0.1 vs {}", trace.logits()[0]);

    // Class 1 (weights 0.5, 3) and class 2 (all zero), as a batch of two.
    let two = [IMAGE, IMAGE].concat();
    let maps = probe::class_maps(&plan, &head, &probe::forward(&plan, &two), &[1, 2]);
    let expected1: Vec<f32> = a0.iter().zip(&a1).map(|(p, q)| 0.5 * p + 3.0 * q).collect();
    assert_close(&maps.maps[..12], &expected1, 1e-6, "CAM class 1");
    assert!(maps.maps[12..].iter().all(|&v| v == 0.0), "class 2 has zero weights");
}

#[test]
fn grad_cam_of_a_linear_head_is_relu_cam_over_the_plane_size() {
    // A ReLU after the pool keeps the function (both means are positive)
    // but makes the head "not CAM", so the gradient path is taken.
    let cam_plan = hand_built(vec![LayerSpec::GlobalAvgPool]);
    let grad_plan = hand_built(vec![LayerSpec::GlobalAvgPool, LayerSpec::Relu]);
    let (cam_head, grad_head) = (probe::head(&cam_plan).unwrap(), probe::head(&grad_plan).unwrap());
    assert!(!grad_head.cam);
    for class in 0..3 {
        let cam = probe::class_maps(&cam_plan, &cam_head, &probe::forward(&cam_plan, &IMAGE), &[class]);
        let grad = probe::class_maps(&grad_plan, &grad_head, &probe::forward(&grad_plan, &IMAGE), &[class]);
        let expected: Vec<f32> = cam.maps.iter().map(|v| v.max(0.0) / 12.0).collect();
        assert_close(&grad.maps, &expected, 1e-6, &format!("Grad-CAM class {class}"));
        assert_close(&grad.weights, &cam.weights, 1e-6, "weights");
        assert_close(&grad.contributions, &cam.contributions, 1e-6, "contributions");
    }
}

/// The parameters of `plan` with `planes` pruned by `probe::zero_planes`.
fn pruned(name: &str, plan: &Plan, planes: &[usize]) -> Plan {
    let mut copy = model(name, plan.max_batch());
    copy.params_mut().copy_from_slice(plan.params());
    let head = probe::head(&copy).unwrap();
    probe::zero_planes(&mut copy, &head, planes).unwrap();
    copy
}

#[test]
fn zeroing_gap_planes_subtracts_exactly_their_contribution_from_every_logit() {
    let mut plan = model("seed-gap", 4);
    let (x, _) = random_batch(&plan, 4, 5);
    let before = predict(&mut plan, &x);
    let head = probe::head(&plan).unwrap();
    let trace = probe::forward(&plan, &x);
    let mut after_plan = pruned("seed-gap", &plan, &[3, 7]);
    let after = predict(&mut after_plan, &x);
    // Independently: logit_c loses W[c,p] * mean(A_p) for each pruned plane.
    let fc1 = plan.tensors().iter().find(|t| t.name == "fc1.weight").unwrap().range.clone();
    let w = &plan.params()[fc1];
    let acts = trace.output(head.feature);
    let (planes, len) = (20, 64);
    let mut expected = before.clone();
    for i in 0..4 {
        for c in 0..2 {
            for p in [3, 7] {
                let plane = &acts[(i * planes + p) * len..(i * planes + p + 1) * len];
                expected[i * 2 + c] -= w[c * planes + p] * plane.iter().sum::<f32>() / len as f32;
            }
        }
    }
    assert_ne!(expected, before, "the pruned planes contribute nothing; the check proves nothing");
    assert_close(&after, &expected, 1e-5, "logits after pruning");
    // Only those two columns of fc1.weight changed, to zero.
    let fc1 = plan.tensors().iter().find(|t| t.name == "fc1.weight").unwrap().range.clone();
    for (i, (a, b)) in plan.params().iter().zip(after_plan.params()).enumerate() {
        match fc1.contains(&i).then(|| (i - fc1.start) % planes) {
            Some(3 | 7) => assert_eq!(*b, 0.0),
            _ => assert_eq!(a.to_bits(), b.to_bits(), "parameter {i} changed"),
        }
    }
}

#[test]
fn pruning_an_fc_head_equals_zeroing_the_planes_it_reads() {
    for name in ["seed-fc", "seed-fc20", "seed-fc-valid"] {
        let plan = model(name, 3);
        let (x, _) = random_batch(&plan, 3, 8);
        let head = probe::head(&plan).unwrap();
        let trace = probe::forward(&plan, &x);
        let mut acts = trace.output(head.feature).to_vec();
        for plane in acts.chunks_exact_mut(head.plane_len).skip(5).step_by(head.planes) {
            plane.fill(0.0);
        }
        let expected = probe::forward_from(&plan, head.feature, &acts);
        let mut after_plan = pruned(name, &plan, &[5]);
        let after = predict(&mut after_plan, &x);
        assert_close(&after, expected.logits(), 1e-5, name);
        assert!(
            after.iter().zip(trace.logits()).any(|(a, b)| (a - b).abs() > 1e-4),
            "{name}: pruning plane 5 changed nothing; the check proves nothing"
        );
        // The trunk is untouched.
        assert_eq!(probe::forward(&after_plan, &x).output(head.feature), trace.output(head.feature));
    }
}

#[test]
fn a_plane_out_of_range_is_refused() {
    let mut plan = model("seed-gap", 1);
    let head = probe::head(&plan).unwrap();
    let before = plan.params().to_vec();
    let err = probe::zero_planes(&mut plan, &head, &[2, 20]).unwrap_err();
    assert_eq!(err.to_string(), "plane 20 does not exist (planes 0..=19)");
    assert_eq!(plan.params(), &before[..], "nothing changes on error");
}
