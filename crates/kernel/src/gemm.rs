//! A bounds-checked, safe face for `matrixmultiply::sgemm`.
//!
//! Every matrix is described by its slice plus a row stride and a column
//! stride, so transposes cost nothing: `Aᵀ` of a row-major `A` is the same
//! slice with the two strides swapped.

/// A read-only matrix view: `rows x cols` elements of `data`, element
/// `(i, j)` at `data[i * rs + j * cs]`.
#[derive(Clone, Copy, Debug)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// A row-major `rows x cols` matrix.
    pub fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Mat { data, rows, cols, rs: cols, cs: 1 }
    }

    /// The transpose of this view (no data moves).
    pub fn t(self) -> Self {
        Mat { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }
}

/// Index one past the last element a strided view touches.
fn extent(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * rs + (cols - 1) * cs + 1
    }
}

/// `C = alpha * A x B + beta * C` where `C` is row-major `a.rows x b.cols`.
/// With `beta == 0` the old contents of `C` are ignored (may be garbage).
///
/// Panics if the shapes disagree or a view runs past its slice; these are
/// programming errors in the caller, never data errors.
pub fn sgemm(alpha: f32, a: Mat, b: Mat, beta: f32, c: &mut [f32]) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "sgemm: inner dimensions differ ({m}x{k} * {}x{n})", b.rows);
    assert!(a.data.len() >= extent(m, k, a.rs, a.cs), "sgemm: A view exceeds its slice");
    assert!(b.data.len() >= extent(k, n, b.rs, b.cs), "sgemm: B view exceeds its slice");
    assert!(c.len() >= m * n, "sgemm: C has {} elements, needs {}", c.len(), m * n);
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the asserts above prove every index the product reads or
    // writes lies inside its slice; C is exclusively borrowed and its
    // strides (n, 1) never alias.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.data.as_ptr(),
            a.rs as isize,
            a.cs as isize,
            b.data.as_ptr(),
            b.rs as isize,
            b.cs as isize,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}
