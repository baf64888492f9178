//! Read-only health checks: dead ReLUs after a pass, and the memory bound
//! that lets a caller refuse an absurd spec before `Plan::new` allocates it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use graph::{footprint_bytes, preset, LayerSpec, Loss, ModelSpec, Plan, Reduction, Shape, PRESETS};

/// Counts the bytes this thread allocates while `COUNTING` is on, so the
/// bound can be checked against what `Plan::new` really takes (other tests
/// of this binary run on other threads and are not counted).
struct PerThread;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static BYTES: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: the thread-locals may be gone while a thread shuts down.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = BYTES.try_with(|b| b.set(b.get() + size));
        }
    });
}

unsafe impl GlobalAlloc for PerThread {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOC: PerThread = PerThread;

/// Bytes allocated (never subtracting frees) by `Plan::new`.
fn measured(spec: &ModelSpec, input: Shape, batch: usize) -> usize {
    BYTES.with(|b| b.set(0));
    COUNTING.with(|c| c.set(true));
    let plan = Plan::new(spec, input, batch);
    COUNTING.with(|c| c.set(false));
    assert!(plan.is_ok(), "{}: {:?}", spec.name, plan.err());
    BYTES.with(Cell::get)
}

/// conv 2@3x3 pad 1 -> relu1 -> conv 2@3x3 pad 1 -> relu2 -> GAP -> dense 2,
/// on 1x5x5 inputs.
fn tiny() -> Plan {
    let conv = LayerSpec::Conv { filters: 2, size: 3, stride: 1, pad: 1, bias: true };
    let spec = ModelSpec {
        name: "tiny".into(),
        layers: vec![
            conv.clone(),
            LayerSpec::Relu,
            conv,
            LayerSpec::Relu,
            LayerSpec::GlobalAvgPool,
            LayerSpec::Dense { units: 2, bias: true },
        ],
    };
    Plan::new(&spec, Shape::new(1, 5, 5), 16).unwrap()
}

/// Sets every weight of `tensor` to `w` (and its bias, if any, to `b`).
fn set(plan: &mut Plan, layer: &str, w: f32, b: f32) {
    let tensors = plan.tensors().to_vec();
    for t in tensors {
        if t.name == format!("{layer}.weight") {
            plan.params_mut()[t.range].fill(w);
        } else if t.name == format!("{layer}.bias") {
            plan.params_mut()[t.range].fill(b);
        }
    }
}

/// `n` positive images of 1x5x5.
fn positive(n: usize) -> (Vec<f32>, Vec<u32>) {
    let x = (0..n * 25).map(|i| 0.1 + (i % 7) as f32 * 0.1).collect();
    (x, (0..n as u32).map(|i| i % 2).collect())
}

#[test]
fn a_relu_fed_only_negative_values_is_reported_dead_by_name() {
    let mut plan = tiny();
    assert_eq!(plan.dead_relus(), ["relu1", "relu2"], "a plan that never ran holds only zeros");

    // Negative weights on positive inputs with a negative bias: relu1 passes
    // nothing. conv2 then sees zeros and outputs its positive bias: alive.
    set(&mut plan, "conv1", -0.5, -0.1);
    set(&mut plan, "conv2", 0.25, 0.3);
    let (x, y) = positive(16);
    plan.forward_backward(&x, &y, Loss::CrossEntropy, Reduction::Mean);
    assert_eq!(plan.dead_relus(), ["relu1"]);
    // A dead ReLU passes no gradient back: conv1 learns nothing.
    let conv1 = plan.tensors()[0].range.clone();
    assert!(plan.grads()[conv1].iter().all(|&g| g == 0.0));

    // Both dead: conv2 with a negative bias on all-zero input.
    set(&mut plan, "conv2", 0.25, -0.3);
    plan.evaluate(&x, &y, Loss::CrossEntropy);
    assert_eq!(plan.dead_relus(), ["relu1", "relu2"]);

    // Alive again, through every kind of forward pass.
    set(&mut plan, "conv1", 0.5, 0.0);
    set(&mut plan, "conv2", 0.25, 0.3);
    plan.forward_backward(&x, &y, Loss::CrossEntropy, Reduction::Mean);
    assert!(plan.dead_relus().is_empty(), "{:?}", plan.dead_relus());
    set(&mut plan, "conv1", -0.5, -0.1);
    let mut logits = vec![0.0; 16 * 2];
    plan.predict(&x, &mut logits);
    assert_eq!(plan.dead_relus(), ["relu1"]);
}

#[test]
fn lanes_that_sat_out_the_last_pass_never_make_a_live_relu_look_dead() {
    let mut plan = tiny();
    set(&mut plan, "conv1", -0.5, -0.1);
    set(&mut plan, "conv2", 0.25, 0.3);
    let (x, y) = positive(16);
    plan.forward_backward(&x, &y, Loss::CrossEntropy, Reduction::Mean);
    assert_eq!(plan.dead_relus(), ["relu1"]);
    // One image alive: only lane 0 runs, the other lanes still hold the dead
    // pass. The layer is alive on the newest image, so it is not reported.
    set(&mut plan, "conv1", 0.5, 0.0);
    plan.forward_backward(&x[..25], &y[..1], Loss::CrossEntropy, Reduction::Mean);
    assert!(plan.dead_relus().is_empty(), "{:?}", plan.dead_relus());
}

#[test]
fn the_memory_bound_covers_what_plan_new_allocates() {
    for name in PRESETS {
        let spec = preset(name).unwrap();
        for (input, batch) in
            [(Shape::new(3, 32, 32), 64), (Shape::new(3, 32, 32), 3), (Shape::new(1, 28, 28), 200)]
        {
            let bound = footprint_bytes(&spec, input, batch);
            let real = measured(&spec, input, batch);
            assert!(bound >= real as u128, "{name} {input} batch {batch}: bound {bound} < allocated {real}");
            assert!(bound < 4 * real as u128 + (1 << 20), "{name}: bound {bound} is far above {real}");
        }
    }
}

#[test]
fn an_absurd_spec_is_measured_without_overflow_or_allocation() {
    let huge = ModelSpec {
        name: "huge".into(),
        layers: vec![
            LayerSpec::Conv { filters: 2_000_000_000, size: 3, stride: 1, pad: 1, bias: true },
            LayerSpec::Relu,
            LayerSpec::Flatten,
            LayerSpec::Dense { units: usize::MAX, bias: true },
        ],
    };
    assert!(footprint_bytes(&huge, Shape::new(3, 32, 32), 64) > 1 << 60);
    let wide = ModelSpec {
        name: "wide".into(),
        layers: vec![
            LayerSpec::Conv { filters: usize::MAX, size: usize::MAX, stride: 0, pad: usize::MAX, bias: true },
            LayerSpec::MaxPool { size: 0, stride: 0, ceil: true },
            LayerSpec::GlobalAvgPool,
            LayerSpec::Dense { units: 1, bias: false },
        ],
    };
    assert_eq!(footprint_bytes(&wide, Shape::new(usize::MAX, usize::MAX, 1), usize::MAX), u128::MAX);
}

#[test]
fn the_bound_stops_at_a_layer_plan_new_refuses() {
    // Plan::new stops at the dense layer on a plane, before allocating
    // any arena, so what follows it costs nothing.
    let spec = ModelSpec {
        name: "refused".into(),
        layers: vec![
            LayerSpec::Conv { filters: 4, size: 3, stride: 1, pad: 1, bias: true },
            LayerSpec::Dense { units: 2, bias: true },
            LayerSpec::Flatten,
            LayerSpec::Dense { units: 1 << 30, bias: true },
        ],
    };
    let input = Shape::new(3, 32, 32);
    assert!(Plan::new(&spec, input, 64).is_err());
    assert!(footprint_bytes(&spec, input, 64) < 1 << 30);
}
