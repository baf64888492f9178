//! The original engine (`--recipe seed`): its dense initialisation, its
//! clipped dense step, and its softmax-layer weight-gradient quirk.

mod common;

use common::random_batch;
use graph::{clipped_lr, preset, probe, Init, LayerSpec, Loss, ModelSpec, Op, Plan, Reduction, Sgd, Shape};

fn spec(layers: Vec<LayerSpec>) -> ModelSpec {
    ModelSpec { name: "t".into(), layers }
}

/// conv -> relu -> flatten -> dense 6 (relu) -> dense `k`: a hidden dense
/// layer so the quirk's input gradient reaches a layer with weights.
fn small(k: usize) -> ModelSpec {
    spec(vec![
        LayerSpec::Conv { filters: 3, size: 3, stride: 1, pad: 1, bias: false },
        LayerSpec::Relu,
        LayerSpec::Flatten,
        LayerSpec::Dense { units: 6, bias: false },
        LayerSpec::Relu,
        LayerSpec::Dense { units: k, bias: false },
    ])
}

fn grads_of(plan: &mut Plan, x: &[f32], y: &[u32], loss: Loss) -> Vec<f32> {
    plan.forward_backward(x, y, loss, Reduction::Sum);
    plan.grads().to_vec()
}

/// The quirk's weight gradient of the last layer, in f64 from the plan's own
/// activations: `dW[j, :] = sum_i e_last p_j (delta_j,last - p_last) a_i`.
fn quirk_weight_grad(plan: &Plan, x: &[f32], y: &[u32]) -> Vec<f64> {
    let trace = probe::forward(plan, x);
    let last = plan.nodes().len() - 1;
    let Op::Dense(d) = plan.nodes()[last].op else { panic!("last node is dense") };
    let (k, inputs) = (d.outputs, d.inputs);
    let mut dw = vec![0.0f64; k * inputs];
    for (i, &label) in y.iter().enumerate() {
        let z: Vec<f64> = trace.logits()[i * k..(i + 1) * k].iter().map(|&v| v as f64).collect();
        let p = kernel::reference::softmax(&z);
        let a = &trace.output(last - 1)[i * inputs..(i + 1) * inputs];
        let e_last = p[k - 1] - if label as usize == k - 1 { 1.0 } else { 0.0 };
        for j in 0..k {
            let delta = e_last * p[j] * (if j == k - 1 { 1.0 } else { 0.0 } - p[k - 1]);
            for (c, &av) in a.iter().enumerate() {
                dw[j * inputs + c] += delta * av as f64;
            }
        }
    }
    dw
}

fn close(got: &[f32], want: &[f64], what: &str) {
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(scale > 0.0, "{what}: all zero, the check would prove nothing");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g as f64 - w).abs() <= 1e-5 * scale, "{what}[{i}]: {g:e} vs {w:e} (scale {scale:e})");
    }
}

fn check_quirk(k: usize) {
    let mut plan = Plan::new(&small(k), Shape::new(2, 5, 5), 20).unwrap();
    plan.initialize(Init::He, 3);
    let (x, y) = random_batch(&plan, 20, 4);
    let full = grads_of(&mut plan, &x, &y, Loss::SquaredError);
    let quirk = grads_of(&mut plan, &x, &y, Loss::SeedSquaredError);
    let out = plan.nodes().last().unwrap().weight.clone().unwrap();
    // Below the output layer, the gradient is the full Jacobian product:
    // the same bits as the plain squared error (checked against finite
    // differences in gradients.rs).
    assert_eq!(&quirk[..out.start], &full[..out.start], "k = {k}: layers below the output differ");
    assert_eq!(out.end, quirk.len(), "no bias after the output weight");
    close(
        &quirk[out.clone()],
        &quirk_weight_grad(&plan, &x, &y),
        &format!("k = {k}: output weight gradient"),
    );
    if k == 2 {
        let half: Vec<f64> = full[out.clone()].iter().map(|&g| 0.5 * g as f64).collect();
        close(&quirk[out], &half, "k = 2: half the true gradient");
    } else {
        // Not half the true gradient once there are more than two classes.
        let (q, f) = (&quirk[out.clone()], &full[out]);
        let off = q.iter().zip(f).map(|(&q, &f)| (q as f64 - 0.5 * f as f64).abs()).fold(0.0, f64::max);
        let scale = f.iter().fold(0.0f64, |m, &v| m.max(v.abs() as f64));
        assert!(off > 0.01 * scale, "k = {k}: the quirk should differ from half the true gradient");
    }
}

#[test]
fn quirk_keeps_the_last_class_term_for_three_classes() {
    check_quirk(3);
}

#[test]
fn quirk_is_half_the_true_gradient_for_two_classes() {
    check_quirk(2);
}

#[test]
fn clipped_lr_follows_the_formula_to_the_bit() {
    // max|g| = 4, n_out = 2: the bound 0.05 * 1 / 4 = 0.0125 is above lr.
    assert_eq!(clipped_lr(0.01, 2, &[1.0, -4.0, 2.5]).to_bits(), 0.01f32.to_bits());
    // max|g| = 10, n_out = 120: the bound 0.05 * sqrt(2/120) / 10 binds,
    // computed in f64 and rounded once to f32.
    let g = [3.0f32, -10.0, 0.5];
    let want = (0.05 * (2.0f64 / 120.0).sqrt() / 10.0) as f32;
    assert_eq!(clipped_lr(0.01, 120, &g).to_bits(), want.to_bits());
    assert!(want < 0.01);
    // A zero gradient steps by lr.
    assert_eq!(clipped_lr(0.01, 84, &[0.0, -0.0]).to_bits(), 0.01f32.to_bits());
}

#[test]
fn the_seed_step_clips_dense_layers_and_not_convolutions() {
    let spec = preset("seed-fc").unwrap().without_bias();
    let mut plan = Plan::new(&spec, Shape::new(3, 32, 32), 16).unwrap();
    // He-initialised dense layers give gradients large enough for the clip
    // to bind on some layers and not on others.
    plan.initialize(Init::He, 5);
    let (x, y) = random_batch(&plan, 16, 6);
    plan.forward_backward(&x, &y, Loss::SeedSquaredError, Reduction::Sum);
    let (before, g) = (plan.params().to_vec(), plan.grads().to_vec());
    let lr = 0.01f32;
    let mut bound = 0;
    let mut want = before.clone();
    for node in plan.nodes() {
        let Some(w) = node.weight.clone() else { continue };
        let step = match node.op {
            Op::Dense(d) => {
                let max = g[w.clone()].iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let cap = 0.05 * (2.0 / d.outputs as f64).sqrt() / max as f64;
                bound += usize::from(cap < lr as f64);
                (lr as f64).min(cap) as f32
            }
            _ => lr,
        };
        for i in w {
            want[i] = before[i] - step * g[i];
        }
    }
    assert!(bound > 0 && bound < 3, "the clip binds on {bound} of the 3 dense layers; want some, not all");
    plan.sgd_step(&Sgd::seed(lr));
    assert!(plan.params().iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "step differs");
}

#[test]
fn seed_init_draws_each_layer_at_its_scale() {
    for name in ["seed-fc", "seed-gap", "seed-fc20"] {
        let spec = preset(name).unwrap().without_bias();
        let mut plan = Plan::new(&spec, Shape::new(3, 32, 32), 2).unwrap();
        plan.initialize(Init::Seed, 1);
        assert!(plan.tensors().iter().all(|t| t.name.ends_with(".weight")), "{name}: a bias tensor");
        let last = plan.nodes().len() - 1;
        for (i, node) in plan.nodes().iter().enumerate() {
            let Some(w) = node.weight.clone() else { continue };
            let sd = match node.op {
                Op::Conv(_) => 1.0 / 9.0,
                Op::Dense(d) if i == last => (2.0 / d.inputs as f64).sqrt() / 100.0,
                Op::Dense(d) => (2.0 / d.inputs as f64).sqrt() / 10.0,
                _ => unreachable!(),
            };
            let v = &plan.params()[w];
            let n = v.len() as f64;
            let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
            let got = (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
            // The standard error of a normal sample's sd is about sd / sqrt(2 (n - 1)).
            let se = sd / (2.0 * (n - 1.0)).sqrt();
            assert!(
                (got - sd).abs() < 4.0 * se,
                "{name} {}: sd {got:e}, want {sd:e} +- {:e}",
                node.name,
                4.0 * se
            );
            assert!(mean.abs() < 4.0 * sd / n.sqrt(), "{name} {}: mean {mean:e}", node.name);
        }
    }
}
