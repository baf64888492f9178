//! Helpers shared by the kernel integration tests: seeded random data,
//! f32/f64 comparison, central finite differences in f64, and the layer
//! shapes every test file sweeps over.
#![allow(dead_code)] // each test binary uses a different subset

pub mod kernels;

use kernel::{Conv2d, Dense, MaxPool2d};
#[allow(unused_imports)] // each test binary uses a different subset
pub use kernels::{isas, kernel_sets, Kernels};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// `len` values uniform in `[-1, 1)`.
pub fn rand_vec(rng: &mut ChaCha8Rng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// `len` values in `[-1, 1)` with `|v| >= margin` (kinks stay out of reach
/// of a finite-difference step).
pub fn rand_vec_away_from_zero(rng: &mut ChaCha8Rng, len: usize, margin: f32) -> Vec<f32> {
    (0..len)
        .map(|_| loop {
            let v = rng.random_range(-1.0f32..1.0);
            if v.abs() >= margin {
                break v;
            }
        })
        .collect()
}

/// `len` pairwise distinct values in `[-1, 1]`, spaced `2/len` apart and
/// shuffled: no ties for max pooling, and gaps far wider than an FD step.
pub fn distinct_vec(rng: &mut ChaCha8Rng, len: usize) -> Vec<f32> {
    let step = 2.0 / len.max(1) as f64;
    let mut v: Vec<f32> = (0..len).map(|i| (-1.0 + step * i as f64) as f32).collect();
    v.shuffle(rng);
    v
}

pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

pub fn dot64(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Forward agreement: `|a - b| <= tol * max(1, |b|)` for every element.
/// Returns the worst `|a - b| / max(1, |b|)`.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length {} vs {}", got.len(), want.len());
    let mut worst = 0.0f64;
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        let err = (a as f64 - b).abs() / b.abs().max(1.0);
        assert!(err <= tol, "{what}[{i}]: kernel {a} vs reference {b} (err {err:e} > {tol:e})");
        worst = worst.max(err);
    }
    worst
}

/// Relative error with a floor: `|a - b| / max(|a|, |b|, 1e-3)`.
pub fn rel_err(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-3)
}

/// Largest relative error any gradient element may have.
pub const GRAD_TOL: f64 = 1e-3;

/// Assert every analytic (f32) gradient element is within `GRAD_TOL` of
/// the numeric (f64) one; print and return the worst relative error. For
/// gradients that are no long sums (max pool, GAP, ReLU, softmax): a few
/// roundings each, far inside `GRAD_TOL` in any order. Sums of products use
/// [`check_sum_grad`].
pub fn check_grad(what: &str, analytic: &[f32], numeric: &[f64]) -> f64 {
    assert_eq!(analytic.len(), numeric.len(), "{what}: length {} vs {}", analytic.len(), numeric.len());
    assert!(!analytic.is_empty(), "{what}: empty gradient");
    let mut worst = 0.0f64;
    let mut worst_at = 0;
    for (i, (&a, &b)) in analytic.iter().zip(numeric).enumerate() {
        let e = rel_err(a as f64, b);
        assert!(e < GRAD_TOL, "{what}[{i}]: analytic {a} vs numeric {b} (rel err {e:e} >= {GRAD_TOL:e})");
        if e > worst {
            worst = e;
            worst_at = i;
        }
    }
    eprintln!(
        "grad {what}: worst rel err {worst:.3e} at [{worst_at}] (analytic {}, numeric {}) over {} elements",
        analytic[worst_at],
        numeric[worst_at],
        analytic.len()
    );
    worst
}

/// Central-difference step, in f64, for functions with kinks (max pool,
/// ReLU) or curvature (softmax): small, so truncation error is negligible.
pub const EPS: f64 = 1e-6;

/// Central-difference step for functions linear in the variable (conv and
/// dense in any one input, weight or bias): a linear function has no
/// truncation error at any step, and a large step divides the f64 rounding
/// of the two evaluations by a large number ([`SumBound`]).
pub const LINEAR_STEP: f64 = 1.0 / 16.0;

/// Gradient of `f` at `x` by central differences with step [`EPS`].
pub fn central_diff(x: &[f64], f: impl FnMut(&[f64]) -> f64) -> Vec<f64> {
    central_diff_step(x, EPS, f)
}

/// Gradient of `f` at `x` by central differences with step `h`. The divisor
/// is the step actually taken (`(x+h) - (x-h)` after rounding).
pub fn central_diff_step(x: &[f64], h: f64, mut f: impl FnMut(&[f64]) -> f64) -> Vec<f64> {
    let mut xp = x.to_vec();
    (0..x.len())
        .map(|i| {
            let v = x[i];
            let (hi, lo) = (v + h, v - h);
            xp[i] = hi;
            let fp = f(&xp);
            xp[i] = lo;
            let fm = f(&xp);
            xp[i] = v;
            (fp - fm) / (hi - lo)
        })
        .collect()
}

/// Unit roundoff of f32 (2^-24) and of f64 (2^-53).
pub const U32: f64 = f32::EPSILON as f64 / 2.0;
pub const U64: f64 = f64::EPSILON / 2.0;

/// `gamma_k = k u / (1 - k u)`: the relative error bound of a sum of `k`
/// rounded operations (Higham, *Accuracy and Stability of Numerical
/// Algorithms*, 2nd ed., lemma 3.1).
pub fn gamma(k: usize, u: f64) -> f64 {
    let ku = k as f64 * u;
    assert!(ku < 0.5, "gamma({k}): too many terms for the bound");
    ku / (1.0 - ku)
}

/// The error model of a gradient that a kernel computes, element by
/// element, as a sum of at most `terms` products of f32 values, in f32.
///
/// **The analytic side.** Whatever the order of the additions (a SIMD
/// kernel's partial sums per lane, SGEMM's blocking, a halving tree) and
/// with or without FMA, a computed sum of `k` products satisfies
/// `|computed - exact| <= gamma_k(f32) * sum |products|` (Higham, eq. 3.5;
/// an FMA rounds once where a multiply and an add round twice, so the bound
/// holds too). `abs[i]` is that sum of absolute products for element `i`:
/// the same gradient taken of the same objective with every input, weight
/// and output gradient replaced by its absolute value.
///
/// **The numeric side.** The objective is linear in the variable, so its
/// central difference has no truncation error; the f64 rounding of each of
/// the two evaluations is at most `gamma_M(f64) * S`, with `M` the number
/// of roundings in the objective and `S` the sum of the absolute values of
/// its terms at any point within one step (`fd_sum`), so the difference
/// quotient is off by at most `gamma_M(f64) * S / h` ([`LINEAR_STEP`] keeps
/// this small).
///
/// The tolerance of element `i` is the sum of the two bounds. It holds for
/// every summation order, so the same test passes on every CPU and ISA; it
/// is still far below what one wrong or missing term does
/// ([`check_sum_grad`] asserts that too).
pub struct SumBound {
    /// Most products summed into one element (plus one for an accumulated
    /// starting value).
    pub terms: usize,
    /// Sum of absolute products per element.
    pub abs: Vec<f64>,
    /// Roundings in one evaluation of the objective, in f64.
    pub fd_terms: usize,
    /// Sum of absolute terms of the objective, at any point within one step.
    pub fd_sum: f64,
}

impl SumBound {
    /// The same bound for `start + gradient` computed by accumulating onto
    /// `start`: one more term per element, `|start|` more in its sum.
    pub fn accumulated_onto(&self, start: &[f32]) -> SumBound {
        assert_eq!(start.len(), self.abs.len());
        SumBound {
            terms: self.terms + 1,
            abs: self.abs.iter().zip(start).map(|(a, s)| a + (*s as f64).abs()).collect(),
            fd_terms: self.fd_terms,
            fd_sum: self.fd_sum,
        }
    }

    fn fd_error(&self) -> f64 {
        // two evaluations, divided by the step taken (at least 2h(1 - u))
        2.0 * gamma(self.fd_terms, U64) * self.fd_sum / (2.0 * LINEAR_STEP * (1.0 - U64))
    }

    /// Tolerance of element `i` (the numeric value's own division and
    /// subtraction add a few f64 roundings of it).
    pub fn tolerance(&self, i: usize, numeric: f64) -> f64 {
        gamma(self.terms, U32) * self.abs[i] + self.fd_error() + 4.0 * U64 * numeric.abs()
    }
}

/// The first element whose analytic value is outside `bound`'s tolerance
/// of the numeric one: `(index, error, tolerance)`.
pub fn sum_grad_violation(analytic: &[f32], numeric: &[f64], bound: &SumBound) -> Option<(usize, f64, f64)> {
    analytic.iter().zip(numeric).enumerate().find_map(|(i, (&a, &n))| {
        let (err, tol) = ((a as f64 - n).abs(), bound.tolerance(i, n));
        (err > tol || err.is_nan()).then_some((i, err, tol))
    })
}

/// Assert every analytic (f32) gradient element is within `bound`'s
/// tolerance of the numeric (f64) one, and that the tolerance is tight
/// enough to see a mistake (below 1% of the largest gradient element).
/// Prints and returns the worst ratio of error to tolerance.
pub fn check_sum_grad(what: &str, analytic: &[f32], numeric: &[f64], bound: &SumBound) -> f64 {
    assert_eq!(analytic.len(), numeric.len(), "{what}: length {} vs {}", analytic.len(), numeric.len());
    assert_eq!(bound.abs.len(), numeric.len(), "{what}: bound length");
    assert!(!analytic.is_empty(), "{what}: empty gradient");
    let largest = numeric.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    if let Some((i, err, tol)) = sum_grad_violation(analytic, numeric, bound) {
        panic!(
            "{what}[{i}]: analytic {} vs numeric {}: error {err:e} > bound {tol:e} \
             ({} terms, sum of |terms| {:e})",
            analytic[i], numeric[i], bound.terms, bound.abs[i]
        );
    }
    let (mut worst, mut worst_at, mut loosest) = (0.0f64, 0, 0.0f64);
    for (i, (&a, &n)) in analytic.iter().zip(numeric).enumerate() {
        let (err, tol) = ((a as f64 - n).abs(), bound.tolerance(i, n));
        loosest = loosest.max(tol);
        if err / tol > worst {
            (worst, worst_at) = (err / tol, i);
        }
    }
    assert!(
        loosest < 0.01 * largest,
        "{what}: the error bound {loosest:e} is too loose to see a wrong term (largest gradient {largest:e})"
    );
    eprintln!(
        "grad {what}: worst error {worst:.3e} of the bound at [{worst_at}] (analytic {}, numeric {}); \
         loosest bound {loosest:.2e}, largest gradient {largest:.2e}, {} elements",
        analytic[worst_at],
        numeric[worst_at],
        analytic.len()
    );
    worst
}

/// Absolute values, in f64.
pub fn abs64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| (x as f64).abs()).collect()
}

/// Absolute values plus `h`, in f64: an upper bound of `|v|` at any point
/// within one step `h`.
pub fn abs64_plus(v: &[f32], h: f64) -> Vec<f64> {
    v.iter().map(|&x| (x as f64).abs() + h).collect()
}

/// The seeds a randomised kernel test runs: `GAPNET_TEST_SEEDS=N` runs `N`
/// seeds from `first` on (to try an error model on more data), one by default.
pub fn test_seeds(first: u64) -> std::ops::Range<u64> {
    let n = std::env::var("GAPNET_TEST_SEEDS").ok().and_then(|v| v.parse::<u64>().ok()).unwrap_or(1);
    first..first + n.max(1)
}

/// One conv test case: the layer shape, whether it has a bias, and the
/// number of images.
#[derive(Clone, Copy, Debug)]
pub struct ConvCase {
    pub s: Conv2d,
    pub bias: bool,
    pub n: usize,
}

#[allow(clippy::too_many_arguments)]
const fn conv(
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    pad: usize,
    bias: bool,
    n: usize,
) -> ConvCase {
    ConvCase { s: Conv2d { c_in, h, w, c_out, kh, kw, stride, pad }, bias, n }
}

/// Odd sizes, stride 1/2/3, pad 0/1/2, kernels 1x1, 3x3, 5x5 and
/// non-square, with and without bias, 1 and 3 images.
pub const CONV_CASES: &[ConvCase] = &[
    //   c_in h  w  c_out kh kw st pad bias   n
    conv(2, 7, 5, 3, 3, 3, 1, 1, true, 1),
    conv(2, 7, 5, 3, 3, 3, 2, 1, true, 3),
    conv(3, 8, 8, 4, 3, 3, 1, 0, false, 3),
    conv(3, 9, 7, 2, 3, 3, 2, 0, true, 1),
    conv(2, 8, 6, 3, 3, 3, 2, 0, false, 3),
    conv(2, 6, 5, 3, 1, 1, 1, 0, true, 3),
    conv(1, 6, 7, 2, 1, 1, 2, 0, false, 1),
    conv(2, 5, 4, 2, 1, 1, 1, 1, true, 1),
    conv(2, 7, 6, 2, 3, 2, 1, 1, true, 3),
    conv(2, 8, 7, 3, 2, 3, 2, 1, false, 1),
    conv(1, 7, 5, 2, 3, 2, 2, 0, true, 3),
    conv(2, 7, 5, 2, 5, 5, 1, 2, true, 3),
    conv(2, 9, 9, 2, 5, 5, 2, 2, false, 1),
    conv(1, 8, 7, 2, 2, 2, 3, 1, true, 3),
    conv(1, 3, 3, 2, 3, 3, 1, 0, true, 1),
    conv(2, 1, 1, 2, 3, 3, 1, 1, true, 3),
    conv(3, 12, 11, 4, 3, 3, 1, 1, true, 3),
    // more input channels, odd sizes, kernels larger than the input
    conv(8, 5, 6, 3, 3, 3, 1, 1, true, 2),
    conv(9, 4, 4, 2, 3, 3, 1, 0, false, 1),
    conv(8, 6, 5, 4, 5, 5, 1, 2, true, 1),
    conv(8, 3, 4, 2, 3, 2, 1, 1, false, 2),
    conv(8, 1, 1, 3, 3, 3, 1, 1, true, 1),
    conv(10, 5, 5, 2, 1, 1, 1, 0, true, 2),
    conv(8, 2, 2, 2, 3, 3, 1, 2, true, 1),
    conv(8, 6, 6, 2, 3, 3, 2, 1, true, 1),
    // the direct kernels' edges: rows wider than a vector, filter tiles of
    // 24 + 4 and 24 + 8, an odd filter count, pad 2, the seed's 8x8 layer
    conv(4, 5, 17, 25, 3, 3, 1, 1, true, 2),
    conv(3, 4, 20, 30, 3, 3, 1, 2, false, 2),
    conv(5, 6, 9, 7, 3, 3, 1, 0, true, 3),
    conv(12, 8, 8, 20, 3, 3, 1, 1, true, 1),
    // 32 filters and more (the deeper presets' widths), more images than a
    // lane's share of a batch of 64
    conv(2, 4, 4, 32, 3, 3, 1, 1, true, 10),
    conv(3, 5, 6, 33, 3, 3, 1, 0, false, 3),
];

/// One max-pool test case.
#[derive(Clone, Copy, Debug)]
pub struct PoolCase {
    pub s: MaxPool2d,
    pub n: usize,
}

const fn pool(c: usize, h: usize, w: usize, size: usize, stride: usize, ceil: bool, n: usize) -> PoolCase {
    PoolCase { s: MaxPool2d { c, h, w, size, stride, ceil }, n }
}

/// Size 3 stride 2 in both modes on sizes where ceil mode adds a clipped
/// edge window (8, 32) or not (7, 9); 2/2; 3/1; stride > size, where
/// PyTorch's "last window starts inside" rule kicks in.
pub const POOL_CASES: &[PoolCase] = &[
    pool(2, 32, 32, 3, 2, true, 1),
    pool(2, 32, 32, 3, 2, false, 1),
    pool(2, 7, 7, 3, 2, true, 2),
    pool(2, 7, 7, 3, 2, false, 2),
    pool(2, 8, 8, 3, 2, true, 2),
    pool(2, 8, 8, 3, 2, false, 2),
    pool(2, 9, 9, 3, 2, true, 2),
    pool(2, 9, 9, 3, 2, false, 2),
    pool(3, 8, 9, 3, 2, true, 2),
    pool(2, 8, 8, 2, 2, false, 2),
    pool(2, 7, 7, 2, 2, true, 2),
    pool(2, 7, 7, 2, 2, false, 1),
    pool(2, 7, 6, 3, 1, false, 2),
    pool(2, 7, 6, 3, 1, true, 1),
    pool(1, 7, 5, 2, 4, true, 2),
    pool(1, 5, 5, 1, 3, true, 1),
    pool(1, 3, 3, 3, 2, true, 1),
];

/// Wide rows, windows wider than the stride, a huge window: forward checks
/// only, too big for finite differences.
pub const WIDE_POOL_CASES: &[PoolCase] = &[
    pool(1, 5, 1000, 3, 2, true, 1),
    pool(1, 6, 530, 5, 3, false, 1),
    pool(1, 262, 300, 260, 7, true, 1),
    pool(2, 3, 1100, 3, 2, true, 1),
];

/// Dense test cases: `(shape, bias, n)`. The later ones reach the SIMD
/// kernels' edges: 8 + 4 + 1 images, output tiles of 3 + 3 + 1 and 3 + 2,
/// input columns past one and two register tiles with a partial block (and
/// AVX2's tiles of 4 images, 2 outputs, 16 and 24 columns).
pub const DENSE_CASES: &[(Dense, bool, usize)] = &[
    (Dense { inputs: 5, outputs: 3 }, true, 1),
    (Dense { inputs: 7, outputs: 4 }, false, 3),
    (Dense { inputs: 16, outputs: 10 }, true, 4),
    (Dense { inputs: 1, outputs: 1 }, true, 2),
    (Dense { inputs: 3, outputs: 6 }, true, 5),
    (Dense { inputs: 100, outputs: 7 }, true, 13),
    (Dense { inputs: 200, outputs: 5 }, false, 8),
    (Dense { inputs: 33, outputs: 2 }, true, 10),
];

/// GAP test cases: `(c, hw, n)`.
pub const GAP_CASES: &[(usize, usize, usize)] = &[(3, 35, 2), (4, 1, 3), (2, 64, 1), (5, 9, 4)];
