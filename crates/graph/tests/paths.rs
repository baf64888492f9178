//! Each convolution's path: chosen by a fixed rule when the plan is built,
//! changed only when asked, refused where it cannot run, and what the
//! executor really runs.

mod common;

use common::{check_gradients, isas, random_batch};
use graph::{preset, ConvPath, Init, Isa, LayerSpec, Loss, ModelSpec, Plan, Reduction, Shape};

fn seed_fc(isa: Isa, batch: usize) -> Plan {
    Plan::for_isa(&preset("seed-fc").unwrap(), Shape::new(3, 32, 32), batch, isa).unwrap()
}

/// The parameter gradients of one batch, as bits.
fn grads(plan: &mut Plan) -> Vec<u32> {
    let (x, y) = random_batch(plan, 16, 3);
    plan.initialize(Init::He, 5);
    plan.forward_backward(&x, &y, Loss::CrossEntropy, Reduction::Mean);
    plan.grads().iter().map(|g| g.to_bits()).collect()
}

#[test]
fn plans_start_on_the_default_paths() {
    for isa in isas("plans_start_on_the_default_paths") {
        let plan = seed_fc(isa, 8);
        let paths = plan.conv_paths();
        assert_eq!(paths.iter().map(|p| p.0).collect::<Vec<_>>(), ["conv1", "conv2", "conv3"]);
        let want = if isa == Isa::Portable { ConvPath::Im2col } else { ConvPath::Direct };
        assert!(paths.iter().all(|p| p.1 == want), "{isa}: {paths:?}");
    }
}

/// Wide layers: at AVX2 the direct kernels are the default up to 64 output
/// planes (deep-gap's conv4 and conv5 have 128); AVX-512 keeps them
/// everywhere; portable has only im2col.
#[test]
fn wide_layers_default_to_im2col_at_avx2() {
    use ConvPath::{Direct, Im2col};
    for isa in isas("wide_layers_default_to_im2col_at_avx2") {
        let plan = Plan::for_isa(&preset("deep-gap").unwrap(), Shape::new(3, 32, 32), 8, isa).unwrap();
        let got: Vec<ConvPath> = plan.conv_paths().iter().map(|p| p.1).collect();
        let want = match isa {
            Isa::Portable => [Im2col; 5],
            Isa::Avx2 => [Direct, Direct, Direct, Im2col, Im2col],
            Isa::Avx512 => [Direct; 5],
        };
        assert_eq!(got, want, "{isa}");
    }
}

#[test]
fn a_chosen_path_is_the_one_that_runs() {
    for isa in isas("a_chosen_path_is_the_one_that_runs").into_iter().filter(|&i| i != Isa::Portable) {
        let mut plan = seed_fc(isa, 16);
        let default = grads(&mut plan);
        plan.set_conv_path("conv1", ConvPath::Im2col).unwrap();
        assert_eq!(plan.conv_paths()[0], ("conv1", ConvPath::Im2col));
        let im2col = grads(&mut plan);
        // conv1 is the first layer: its input gradient is never taken, so
        // only conv1's own weight and bias gradients change
        let conv1 = plan
            .tensors()
            .iter()
            .filter(|t| t.name.starts_with("conv1."))
            .fold(0..0, |r, t| r.start.min(t.range.start)..r.end.max(t.range.end));
        let moved: Vec<usize> = (0..default.len()).filter(|&i| default[i] != im2col[i]).collect();
        assert!(!moved.is_empty(), "{isa}: conv1 on im2col gave the direct path's bits");
        assert!(moved.iter().all(|i| conv1.contains(i)), "{isa}: bits moved outside conv1");
        // and back: the same bits as at first
        plan.set_conv_path("conv1", ConvPath::Direct).unwrap();
        assert_eq!(grads(&mut plan), default, "{isa}: back on the direct path");
        // set_isa starts over from the default paths
        plan.set_conv_path("conv2", ConvPath::Im2col).unwrap();
        plan.set_isa(isa);
        assert!(
            plan.conv_paths().iter().all(|p| p.1 == ConvPath::Direct),
            "{isa}: set_isa kept a chosen path"
        );
    }
}

#[test]
fn mixed_paths_give_the_true_gradients() {
    for isa in isas("mixed_paths_give_the_true_gradients").into_iter().filter(|&i| i != Isa::Portable) {
        for (name, conv) in [("seed-fc", "conv1"), ("seed-gap", "conv2")] {
            let mut plan = Plan::for_isa(&preset(name).unwrap(), Shape::new(3, 32, 32), 4, isa).unwrap();
            plan.set_conv_path(conv, ConvPath::Im2col).unwrap();
            let (x, y) = random_batch(&plan, 3, 5);
            let worst = check_gradients(&mut plan, &x, &y, Loss::CrossEntropy, Reduction::Mean, 6);
            println!("{name} {isa}, {conv} on im2col: worst relative error {worst:.2e}");
        }
    }
}

#[test]
fn a_path_that_cannot_run_is_refused() {
    let spec = ModelSpec {
        name: "five".into(),
        layers: vec![
            LayerSpec::Conv { filters: 4, size: 5, stride: 1, pad: 2, bias: true },
            LayerSpec::Conv { filters: 4, size: 3, stride: 1, pad: 1, bias: true },
            LayerSpec::GlobalAvgPool,
            LayerSpec::Dense { units: 2, bias: true },
        ],
    };
    for isa in isas("a_path_that_cannot_run_is_refused") {
        let mut plan = Plan::for_isa(&spec, Shape::new(3, 8, 8), 4, isa).unwrap();
        let e = plan.set_conv_path("conv1", ConvPath::Direct).unwrap_err();
        assert!(e.contains("conv1") && e.contains("direct") && e.contains("5x5"), "{e}");
        let e = plan.set_conv_path("conv3", ConvPath::Im2col).unwrap_err();
        assert!(e.contains("conv3") && e.contains("conv1, conv2"), "{e}");
        let e = plan.set_conv_path("fc1", ConvPath::Im2col).unwrap_err();
        assert!(e.contains("fc1"), "{e}");
        let direct = plan.set_conv_path("conv2", ConvPath::Direct);
        assert_eq!(direct.is_ok(), isa != Isa::Portable, "{isa}: {direct:?}");
        plan.set_conv_path("conv2", ConvPath::Im2col).unwrap();
    }
}
