//! Shared test helpers: an f64 reference network built from a plan's own
//! node list, and seeded random batches.
#![allow(dead_code)]

use graph::{Isa, LayerSpec, Loss, Node, Op, Plan, Reduction};
use kernel::reference;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The loss of the whole network, computed image by image with the naive
/// f64 reference kernels and the parameters `params` (same layout as
/// `plan.params()`).
pub fn reference_loss(
    plan: &Plan,
    params: &[f64],
    x: &[f32],
    labels: &[u32],
    loss: Loss,
    red: Reduction,
) -> f64 {
    let per = plan.input_shape().len();
    let nodes = nodes_in_spec_order(plan);
    let mut batch: Vec<Vec<f64>> =
        (0..labels.len()).map(|i| x[i * per..(i + 1) * per].iter().map(|&v| v as f64).collect()).collect();
    for node in &nodes {
        batch = match node.op {
            // Training mode: the whole batch's statistics.
            Op::BatchNorm(s) => {
                let (gamma, beta) =
                    (&params[node.weight.clone().unwrap()], &params[node.bias.clone().unwrap()]);
                reference::batch_norm_train(s.c, s.hw, s.eps as f64, &batch, gamma, beta)
            }
            _ => batch.iter().map(|a| reference_node(plan, node, params, a)).collect(),
        };
    }
    let total: f64 =
        batch.iter().zip(labels).map(|(a, &label)| reference::softmax_loss(loss, a, label as usize)).sum();
    match red {
        Reduction::Mean => total / labels.len() as f64,
        Reduction::Sum => total,
    }
}

/// One image through one node in f64, with the naive reference kernels and
/// the parameters `params` (same layout as `plan.params()`); a batch norm
/// in evaluation mode, with the plan's running statistics.
pub fn reference_node(plan: &Plan, node: &Node, params: &[f64], a: &[f64]) -> Vec<f64> {
    let w = node.weight.clone().map(|r| &params[r]);
    let b = node.bias.clone().map(|r| &params[r]);
    match node.op {
        Op::Conv(s) => reference::conv2d(&s, a, w.unwrap(), b),
        Op::Relu => reference::relu(a),
        Op::MaxPool(s) => reference::maxpool(&s, a),
        Op::GlobalAvgPool { c, hw } => reference::gap(c, hw, a),
        Op::Dense(s) => reference::dense(&s, a, w.unwrap(), b),
        Op::BatchNorm(s) => {
            let t =
                plan.buffers().into_iter().find(|t| t.name == format!("{}.running_mean", node.name)).unwrap();
            let running: Vec<f64> =
                plan.running()[t.range.start..t.range.start + 2 * s.c].iter().map(|&v| v as f64).collect();
            reference::batch_norm_eval(s.c, s.hw, s.eps as f64, a, &running, w.unwrap(), b.unwrap())
        }
    }
}

/// The plan's nodes in the order the spec lists the layers (the plan may
/// run some in another order, e.g. a ReLU after the max pool it precedes in
/// the spec): the reference must compute what the spec says. Nodes of one
/// kind keep their relative order, so each spec layer takes the next
/// unused node of its kind.
fn nodes_in_spec_order(plan: &Plan) -> Vec<&Node> {
    let mut used = vec![false; plan.nodes().len()];
    let mut order = Vec::new();
    for layer in &plan.spec().layers {
        let want = match layer {
            LayerSpec::Flatten => continue,
            LayerSpec::Conv { .. } => "conv",
            LayerSpec::Relu => "relu",
            LayerSpec::MaxPool { .. } => "pool",
            LayerSpec::GlobalAvgPool => "gap",
            LayerSpec::Dense { .. } => "fc",
            LayerSpec::BatchNorm { .. } => "bn",
        };
        let i = (0..used.len())
            .find(|&i| !used[i] && plan.nodes()[i].name.starts_with(want))
            .unwrap_or_else(|| panic!("no node left for {layer}"));
        used[i] = true;
        order.push(&plan.nodes()[i]);
    }
    assert_eq!(order.len(), plan.nodes().len(), "every node belongs to one spec layer");
    order
}

/// `n` random images in [0, 1) and labels below `classes`.
pub fn random_batch(plan: &Plan, n: usize, seed: u64) -> (Vec<f32>, Vec<u32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let x = (0..n * plan.input_shape().len()).map(|_| rng.random::<f32>()).collect();
    let y = (0..n).map(|_| rng.random_range(0..plan.classes() as u32)).collect();
    (x, y)
}

/// Check `plan.grads()` (from the f32 engine) against central finite
/// differences of `reference_loss` in f64, on `per_tensor` sampled entries
/// of every parameter tensor. Returns the worst relative error.
pub fn check_gradients(
    plan: &mut Plan,
    x: &[f32],
    labels: &[u32],
    loss: Loss,
    red: Reduction,
    per_tensor: usize,
) -> f64 {
    plan.forward_backward(x, labels, loss, red);
    let grads = plan.grads().to_vec();
    let mut params: Vec<f64> = plan.params().iter().map(|&v| v as f64).collect();
    let scale = grads.iter().fold(0.0f64, |m, g| m.max(g.abs() as f64));
    assert!(scale > 0.0, "all gradients are zero: the check would prove nothing");
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let mut worst = 0.0f64;
    for t in plan.tensors().to_vec() {
        for _ in 0..per_tensor.min(t.range.len()) {
            let i = rng.random_range(t.range.clone());
            let h = 1e-6 * params[i].abs().max(1.0);
            let keep = params[i];
            params[i] = keep + h;
            let up = reference_loss(plan, &params, x, labels, loss, red);
            params[i] = keep - h;
            let down = reference_loss(plan, &params, x, labels, loss, red);
            params[i] = keep;
            let numeric = (up - down) / (2.0 * h);
            let analytic = grads[i] as f64;
            // Entries far below the largest gradient are compared in
            // absolute terms: f32 rounding dominates there.
            let rel = (numeric - analytic).abs() / numeric.abs().max(analytic.abs()).max(1e-3 * scale);
            assert!(
                rel < 1e-3,
                "{} [{}]: analytic {analytic:e} vs numeric {numeric:e} (relative error {rel:e})",
                t.name,
                i - t.range.start
            );
            worst = worst.max(rel);
        }
    }
    worst
}

/// The ISAs the whole-network tests run (every one this CPU has; see
/// `Isa::tested`), printed once per test so the log says which ran.
pub fn isas(test: &str) -> Vec<Isa> {
    let isas = Isa::tested();
    eprintln!("{test}: ISAs {}", isas.iter().map(|i| i.name()).collect::<Vec<_>>().join(", "));
    isas
}
