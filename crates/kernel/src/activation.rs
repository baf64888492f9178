//! ReLU, elementwise over any flat buffer.

/// `y = max(x, 0)`.
pub fn relu_forward(x: &[f32], y: &mut [f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o = v.max(0.0);
    }
}

/// `y = max(y, 0)`, in place: [`relu_forward`]'s values.
pub fn relu_in_place(y: &mut [f32]) {
    for v in y {
        *v = v.max(0.0);
    }
}

/// `dx = dy` where the forward output `y` was positive, else 0. Using the
/// output (not the input) lets the graph keep only one buffer per layer.
pub fn relu_backward(y: &[f32], dy: &[f32], dx: &mut [f32]) {
    for ((d, &g), &v) in dx.iter_mut().zip(dy).zip(y) {
        *d = if v > 0.0 { g } else { 0.0 };
    }
}
