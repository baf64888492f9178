//! Whole-network gradients against f64 finite differences.

mod common;

use common::{check_gradients, isas, random_batch};
use graph::{preset, LayerSpec, Loss, ModelSpec, Plan, Reduction, Shape};

fn check_preset(name: &str, loss: Loss, red: Reduction) {
    check_preset_at(name, Shape::new(3, 32, 32), 3, loss, red, 6);
}

/// `n` images of `input`, `per_tensor` entries of every tensor checked.
fn check_preset_at(name: &str, input: Shape, n: usize, loss: Loss, red: Reduction, per_tensor: usize) {
    let spec = preset(name).unwrap();
    for isa in isas(name) {
        let mut plan = Plan::for_isa(&spec, input, n.max(4), isa).unwrap();
        let (x, y) = random_batch(&plan, n, 5);
        let worst = check_gradients(&mut plan, &x, &y, loss, red, per_tensor);
        println!("{name} {loss:?} {red:?} {isa}: worst relative error {worst:.2e}");
    }
}

#[test]
fn seed_fc_cross_entropy_mean() {
    check_preset("seed-fc", Loss::CrossEntropy, Reduction::Mean);
}

#[test]
fn seed_gap_cross_entropy_mean() {
    check_preset("seed-gap", Loss::CrossEntropy, Reduction::Mean);
}

#[test]
fn seed_gap_squared_error_sum() {
    check_preset("seed-gap", Loss::SquaredError, Reduction::Sum);
}

#[test]
fn seed_fc_valid_squared_error_sum() {
    check_preset("seed-fc-valid", Loss::SquaredError, Reduction::Sum);
}

/// A batch big enough that every lane runs several chunks, so gradients
/// are accumulated across chunks before lanes are summed.
#[test]
fn multi_chunk_lanes_accumulate() {
    let spec = ModelSpec {
        name: "tiny".into(),
        layers: vec![
            LayerSpec::Conv { filters: 4, size: 3, stride: 1, pad: 1, bias: true },
            LayerSpec::Relu,
            LayerSpec::MaxPool { size: 3, stride: 2, ceil: true },
            LayerSpec::Conv { filters: 5, size: 3, stride: 2, pad: 0, bias: false },
            LayerSpec::Relu,
            LayerSpec::GlobalAvgPool,
            LayerSpec::Dense { units: 3, bias: true },
        ],
    };
    for isa in isas("multi_chunk_lanes_accumulate") {
        let mut plan = Plan::for_isa(&spec, Shape::new(2, 9, 9), 150, isa).unwrap();
        let (x, y) = random_batch(&plan, 150, 11);
        let worst = check_gradients(&mut plan, &x, &y, Loss::CrossEntropy, Reduction::Mean, 8);
        println!("tiny, 150 images, {isa}: worst relative error {worst:.2e}");
    }
}

/// Batch norm in training mode: the whole batch's statistics, after a
/// convolution (per channel) and after a dense layer (per unit), over a
/// batch that fills several lanes unevenly.
#[test]
fn batch_norm_after_conv_and_dense() {
    let bn = LayerSpec::BatchNorm { eps: 1e-5, momentum: 0.1 };
    let spec = ModelSpec {
        name: "bn".into(),
        layers: vec![
            LayerSpec::Conv { filters: 4, size: 3, stride: 1, pad: 1, bias: false },
            bn.clone(),
            LayerSpec::Relu,
            LayerSpec::MaxPool { size: 3, stride: 2, ceil: true },
            LayerSpec::Conv { filters: 5, size: 3, stride: 1, pad: 1, bias: false },
            bn.clone(),
            LayerSpec::Relu,
            LayerSpec::Flatten,
            LayerSpec::Dense { units: 6, bias: true },
            bn,
            LayerSpec::Relu,
            LayerSpec::Dense { units: 3, bias: true },
        ],
    };
    for (loss, red) in [(Loss::CrossEntropy, Reduction::Mean), (Loss::SquaredError, Reduction::Sum)] {
        for isa in isas("batch_norm_after_conv_and_dense") {
            let mut plan = Plan::for_isa(&spec, Shape::new(2, 7, 7), 13, isa).unwrap();
            let (x, y) = random_batch(&plan, 13, 17);
            let worst = check_gradients(&mut plan, &x, &y, loss, red, 8);
            println!("batch norm, 13 images, {loss:?} {isa}: worst relative error {worst:.2e}");
        }
    }
}

#[test]
fn deep_gap_cross_entropy_mean() {
    check_preset_at("deep-gap", Shape::new(3, 8, 8), 5, Loss::CrossEntropy, Reduction::Mean, 4);
}

#[test]
fn deep_fc_cross_entropy_mean() {
    check_preset_at("deep-fc", Shape::new(3, 8, 8), 5, Loss::CrossEntropy, Reduction::Mean, 4);
}
