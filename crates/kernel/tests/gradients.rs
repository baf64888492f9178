//! Backward kernels against central finite differences taken in f64 of the
//! reference forward functions.
//!
//! For each layer the objective is `L = sum_i r_i * y_i` for a fixed random
//! `r`, computed with `kernel::reference`; its numeric gradient w.r.t. each
//! input, weight and bias is compared, element by element, with the f32
//! backward kernel run on `dy = r`. All random values are drawn as f32 so the
//! f32 kernel and the f64 oracle see exactly the same numbers.
//!
//! Conv and dense gradients are sums of products, whose rounding depends on
//! the order the kernels add in: they are held to an error bound that holds
//! for every order ([`SumBound`]), so the tests pass on every CPU and ISA.
//! `GAPNET_TEST_SEEDS=N` runs them on `N` seeds' data.

mod common;

use common::*;
use kernel::{reference, Conv2d, ConvPath, Dense, Isa, Loss};

/// `sum_i <r_i, conv(x_i, w) + b>` over the images, in f64.
fn conv_objective(s: &Conv2d, x: &[f64], w: &[f64], b: Option<&[f64]>, r: &[f64]) -> f64 {
    x.chunks_exact(s.in_len())
        .zip(r.chunks_exact(s.out_len()))
        .map(|(xi, ri)| dot64(&reference::conv2d(s, xi, w, b), ri))
        .sum()
}

/// The f64 side of a conv case: the numeric gradients (central
/// differences with [`LINEAR_STEP`]: the objective is linear in each
/// variable) and the error bounds of each gradient ([`SumBound`]).
struct ConvOracle {
    dx: Vec<f64>,
    dw: Vec<f64>,
    db: Option<Vec<f64>>,
    dx_bound: SumBound,
    dw_bound: SumBound,
    db_bound: SumBound,
}

impl ConvOracle {
    fn new(case: &ConvCase, x: &[f32], w: &[f32], b: &[f32], r: &[f32]) -> ConvOracle {
        let (s, n, h) = (&case.s, case.n, LINEAR_STEP);
        let (x64, w64, b64, r64) = (to_f64(x), to_f64(w), to_f64(b), to_f64(r));
        let b64 = case.bias.then_some(&b64[..]);
        let objective = |x: &[f64], w: &[f64], b: Option<&[f64]>| conv_objective(s, x, w, b, &r64);
        let dx = central_diff_step(&x64, h, |xp| objective(xp, &w64, b64));
        let dw = central_diff_step(&w64, h, |wp| objective(&x64, wp, b64));
        let db = case.bias.then(|| central_diff_step(&to_f64(b), h, |bp| objective(&x64, &w64, Some(bp))));

        // sums of |products| per gradient element: the same gradients of the
        // objective over absolute values (exact: it is linear too)
        let (ax, aw, ar) = (abs64(x), abs64(w), abs64(r));
        let abs_objective = |x: &[f64], w: &[f64]| conv_objective(s, x, w, None, &ar);
        let abs_dx = central_diff_step(&ax, h, |xp| abs_objective(xp, &aw));
        let abs_dw = central_diff_step(&aw, h, |wp| abs_objective(&ax, wp));
        let abs_db: Vec<f64> = (0..s.c_out)
            .map(|f| {
                ar.chunks_exact(s.out_len())
                    .map(|ri| ri[f * s.col_cols()..][..s.col_cols()].iter().sum::<f64>())
                    .sum()
            })
            .collect();

        // the objective: n * out_len outputs of c_in*kh*kw products and a
        // bias, each times r, summed: at most 2 roundings per product
        let fd_terms = n * s.out_len() * (2 * s.c_in * s.kh * s.kw + 4);
        let bias_up = case.bias.then(|| abs64_plus(b, h));
        let fd_sum = conv_objective(s, &abs64_plus(x, h), &abs64_plus(w, h), bias_up.as_deref(), &ar);
        let pixels = n * s.col_cols();
        let bound = |terms, abs| SumBound { terms, abs, fd_terms, fd_sum };
        ConvOracle {
            dx,
            dw,
            db,
            dx_bound: bound(s.c_out * s.kh * s.kw, abs_dx),
            dw_bound: bound(pixels, abs_dw),
            db_bound: bound(pixels, abs_db),
        }
    }
}

#[test]
fn conv2d_backward_matches_finite_differences() {
    let sets = kernel_sets("conv2d_backward");
    let (mut worst_dx, mut worst_dw, mut worst_db) = (0.0f64, 0.0f64, 0.0f64);
    let mut direct = 0;
    for seed in test_seeds(11) {
        let mut rng = rng(seed);
        for (case_no, case) in CONV_CASES.iter().enumerate() {
            let (s, n) = (case.s, case.n);
            let what = format!("seed {seed} conv case {case_no} {case:?}");
            // every random value is drawn here, before the kernel sets: the
            // data do not depend on how many ISAs this CPU runs
            let x = rand_vec(&mut rng, n * s.in_len());
            let w = rand_vec(&mut rng, s.weight_len());
            let b = rand_vec(&mut rng, s.c_out);
            let r = rand_vec(&mut rng, n * s.out_len());
            let dw0 = rand_vec(&mut rng, s.weight_len());
            let db0 = rand_vec(&mut rng, s.c_out);
            let num = ConvOracle::new(case, &x, &w, &b, &r);
            for (k, path) in sets.iter().flat_map(|&k| k.conv_paths(&s).into_iter().map(move |p| (k, p))) {
                let what = format!("{what} {k} {path:?}");
                if path == ConvPath::Direct {
                    direct += 1;
                }
                // analytic: every output buffer starts as garbage and must be overwritten
                let mut dx = vec![f32::NAN; n * s.in_len()];
                let mut dw = vec![f32::NAN; s.weight_len()];
                let mut db = vec![f32::NAN; s.c_out];
                let mut scratch = vec![f32::NAN; s.scratch_len(n)];
                let mut backward =
                    |dx: Option<&mut [f32]>, dw: &mut [f32], db: Option<&mut [f32]>, accumulate| {
                        k.conv_backward(path, &s, n, &x, &w, &r, dx, dw, db, &mut scratch, accumulate)
                    };
                backward(Some(&mut dx), &mut dw, case.bias.then_some(&mut db[..]), false);

                worst_dx = worst_dx.max(check_sum_grad(&format!("{what} dx"), &dx, &num.dx, &num.dx_bound));
                worst_dw = worst_dw.max(check_sum_grad(&format!("{what} dw"), &dw, &num.dw, &num.dw_bound));
                if let Some(num_db) = &num.db {
                    worst_db =
                        worst_db.max(check_sum_grad(&format!("{what} db"), &db, num_db, &num.db_bound));
                }

                // dx = None, db = None: dw is the same computation, bit for bit
                let mut dw_only = vec![f32::NAN; s.weight_len()];
                backward(None, &mut dw_only, None, false);
                for (i, (a, b)) in dw_only.iter().zip(&dw).enumerate() {
                    assert_eq!(a.to_bits(), b.to_bits(), "{what}: dw[{i}] differs without dx/db");
                }

                // accumulate = true adds onto what is there
                let (mut dw_acc, mut db_acc) = (dw0.clone(), db0.clone());
                backward(None, &mut dw_acc, Some(&mut db_acc), true);
                let plus = |base: &[f32], g: &[f64]| -> Vec<f64> {
                    base.iter().zip(g).map(|(a, b)| *a as f64 + b).collect()
                };
                assert_close(&format!("{what} dw accumulate"), &dw_acc, &plus(&dw0, &to_f64(&dw)), 1e-5);
                let acc_bound = num.dw_bound.accumulated_onto(&dw0);
                check_sum_grad(&format!("{what} dw0 + dw"), &dw_acc, &plus(&dw0, &num.dw), &acc_bound);
                // db accumulates from whatever it held (the row sums of dy,
                // whether or not the layer has a bias)
                let db_sums: Vec<f64> = (0..s.c_out)
                    .map(|f| {
                        r.chunks_exact(s.out_len())
                            .map(|ri| to_f64(&ri[f * s.col_cols()..][..s.col_cols()]).iter().sum::<f64>())
                            .sum()
                    })
                    .collect();
                let db_bound = num.db_bound.accumulated_onto(&db0);
                check_sum_grad(&format!("{what} db0 + db"), &db_acc, &plus(&db0, &db_sums), &db_bound);
            }
        }
    }
    eprintln!(
        "conv2d_backward worst error over its bound: dx {worst_dx:.3e}, dw {worst_dw:.3e}, db {worst_db:.3e}; \
         {direct} runs on the direct path"
    );
}

#[test]
fn maxpool_backward_matches_finite_differences() {
    let mut rng = rng(12);
    let mut worst = 0.0f64;
    let sets = kernel_sets("maxpool_backward");
    for (k, case) in sets.iter().flat_map(|k| POOL_CASES.iter().map(move |c| (k, c))) {
        let (s, n) = (case.s, case.n);
        let x = distinct_vec(&mut rng, n * s.in_len());
        let r = rand_vec(&mut rng, n * s.out_len());
        let mut y = vec![0.0; n * s.out_len()];
        let mut arg = vec![0; n * s.out_len()];
        k.maxpool_forward(&s, n, &x, &mut y, &mut arg);
        let mut dx = vec![f32::NAN; n * s.in_len()];
        kernel::maxpool_backward(&s, n, &r, &arg, &mut dx);

        let r64 = to_f64(&r);
        let num = central_diff(&to_f64(&x), |xp| {
            xp.chunks_exact(s.in_len())
                .zip(r64.chunks_exact(s.out_len()))
                .map(|(xi, ri)| dot64(&reference::maxpool(&s, xi), ri))
                .sum()
        });
        worst = worst.max(check_grad(&format!("maxpool {k} {case:?} dx"), &dx, &num));
    }
    eprintln!("maxpool_backward worst rel err: dx {worst:.3e}");
}

/// A max pool followed by a ReLU, backward in one pass, gives the bits of
/// the ReLU's backward then the pool's (each checked against finite
/// differences above and below), with pooled values of both signs.
#[test]
fn maxpool_relu_backward_equals_the_two_passes() {
    let mut rng = rng(16);
    let (mut masked, mut passed) = (0, 0);
    for case in POOL_CASES {
        let (s, n) = (case.s, case.n);
        // shifted down, so that some windows' maxima are negative
        let x: Vec<f32> = distinct_vec(&mut rng, n * s.in_len()).iter().map(|v| v - 0.6).collect();
        let dy = rand_vec(&mut rng, n * s.out_len());
        let (mut pooled, mut arg) = (vec![0.0; n * s.out_len()], vec![0; n * s.out_len()]);
        kernel::maxpool_forward(Isa::Portable, &s, n, &x, &mut pooled, &mut arg);
        let mut y = vec![0.0; pooled.len()];
        kernel::relu_forward(&pooled, &mut y);
        let mut d_pooled = vec![f32::NAN; pooled.len()];
        kernel::relu_backward(&y, &dy, &mut d_pooled);
        let mut want = vec![f32::NAN; n * s.in_len()];
        kernel::maxpool_backward(&s, n, &d_pooled, &arg, &mut want);
        let mut got = vec![f32::NAN; n * s.in_len()];
        kernel::maxpool_relu_backward(&s, n, &dy, &y, &arg, &mut got);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want), "{case:?}");
        masked += y.iter().filter(|&&v| v <= 0.0).count();
        passed += y.iter().filter(|&&v| v > 0.0).count();
    }
    assert!(
        masked > 10 && passed > 10,
        "the ReLU must mask some outputs and pass others: {masked}, {passed}"
    );
}

#[test]
fn gap_backward_matches_finite_differences() {
    let mut rng = rng(13);
    let mut worst = 0.0f64;
    for &(c, hw, n) in GAP_CASES {
        let x = rand_vec(&mut rng, n * c * hw);
        let r = rand_vec(&mut rng, n * c);
        let mut dx = vec![f32::NAN; n * c * hw];
        kernel::gap_backward(c, hw, n, &r, &mut dx);
        let r64 = to_f64(&r);
        let num = central_diff(&to_f64(&x), |xp| {
            xp.chunks_exact(c * hw)
                .zip(r64.chunks_exact(c))
                .map(|(xi, ri)| dot64(&reference::gap(c, hw, xi), ri))
                .sum()
        });
        worst = worst.max(check_grad(&format!("gap c={c} hw={hw} n={n} dx"), &dx, &num));
    }
    eprintln!("gap_backward worst rel err: dx {worst:.3e}");
}

#[test]
fn relu_backward_matches_finite_differences() {
    let mut rng = rng(14);
    let x = rand_vec_away_from_zero(&mut rng, 300, 1e-3);
    let r = rand_vec(&mut rng, x.len());
    let mut y = vec![0.0; x.len()];
    kernel::relu_forward(&x, &mut y);
    let mut dx = vec![f32::NAN; x.len()];
    kernel::relu_backward(&y, &r, &mut dx);
    let r64 = to_f64(&r);
    let num = central_diff(&to_f64(&x), |xp| dot64(&reference::relu(xp), &r64));
    let worst = check_grad("relu dx", &dx, &num);
    // both branches were exercised
    assert!(x.iter().any(|&v| v > 0.0) && x.iter().any(|&v| v < 0.0));
    eprintln!("relu_backward worst rel err: dx {worst:.3e}");
}

/// `sum_i <r_i, W x_i + b>` over the samples, in f64.
fn dense_objective(s: &Dense, x: &[f64], w: &[f64], b: Option<&[f64]>, r: &[f64]) -> f64 {
    x.chunks_exact(s.inputs)
        .zip(r.chunks_exact(s.outputs))
        .map(|(xi, ri)| dot64(&reference::dense(s, xi, w, b), ri))
        .sum()
}

#[test]
fn dense_backward_matches_finite_differences() {
    let sets = kernel_sets("dense_backward");
    let (mut worst_dx, mut worst_dw, mut worst_db) = (0.0f64, 0.0f64, 0.0f64);
    for seed in test_seeds(15) {
        let mut rng = rng(seed);
        for &(s, has_bias, n) in DENSE_CASES {
            let what = format!("seed {seed} dense {s:?} bias={has_bias} n={n}");
            let x = rand_vec(&mut rng, n * s.inputs);
            let w = rand_vec(&mut rng, s.weight_len());
            let b = rand_vec(&mut rng, s.outputs);
            let r = rand_vec(&mut rng, n * s.outputs);
            let dw0 = rand_vec(&mut rng, s.weight_len());
            let db0 = rand_vec(&mut rng, s.outputs);
            let (x64, w64, b64, r64) = (to_f64(&x), to_f64(&w), to_f64(&b), to_f64(&r));
            let bias = has_bias.then_some(&b64[..]);

            let h = LINEAR_STEP;
            let num_dx = central_diff_step(&x64, h, |xp| dense_objective(&s, xp, &w64, bias, &r64));
            let num_dw = central_diff_step(&w64, h, |wp| dense_objective(&s, &x64, wp, bias, &r64));
            let num_db = central_diff_step(&b64, h, |bp| dense_objective(&s, &x64, &w64, Some(bp), &r64));

            // the error bounds (see `SumBound`): sums of |products| per
            // element are the gradients of the objective over absolute values
            let (ax, aw, ar) = (abs64(&x), abs64(&w), abs64(&r));
            let abs_dx = central_diff_step(&ax, h, |xp| dense_objective(&s, xp, &aw, None, &ar));
            let abs_dw = central_diff_step(&aw, h, |wp| dense_objective(&s, &ax, wp, None, &ar));
            let abs_db: Vec<f64> =
                (0..s.outputs).map(|o| ar.chunks_exact(s.outputs).map(|ri| ri[o]).sum()).collect();
            let fd_terms = n * s.outputs * (2 * s.inputs + 4);
            let fd_sum =
                dense_objective(&s, &abs64_plus(&x, h), &abs64_plus(&w, h), Some(&abs64_plus(&b, h)), &ar);
            let bound = |terms, abs| SumBound { terms, abs, fd_terms, fd_sum };
            let (dx_bound, dw_bound, db_bound) =
                (bound(s.outputs, abs_dx), bound(n, abs_dw), bound(n, abs_db));

            for k in &sets {
                let mut dx = vec![f32::NAN; n * s.inputs];
                let mut dw = vec![f32::NAN; s.weight_len()];
                let mut db = vec![f32::NAN; s.outputs];
                let db_arg = has_bias.then_some(&mut db[..]);
                k.dense_backward(&s, n, &x, &w, &r, Some(&mut dx), &mut dw, db_arg, false);

                worst_dx = worst_dx.max(check_sum_grad(&format!("{what} {k} dx"), &dx, &num_dx, &dx_bound));
                worst_dw = worst_dw.max(check_sum_grad(&format!("{what} {k} dw"), &dw, &num_dw, &dw_bound));
                if has_bias {
                    worst_db =
                        worst_db.max(check_sum_grad(&format!("{what} {k} db"), &db, &num_db, &db_bound));
                }

                // dx = None, db = None gives the same dw
                let mut dw_only = vec![f32::NAN; s.weight_len()];
                k.dense_backward(&s, n, &x, &w, &r, None, &mut dw_only, None, false);
                for (i, (a, b)) in dw_only.iter().zip(&dw).enumerate() {
                    assert_eq!(a.to_bits(), b.to_bits(), "{what} {k}: dw[{i}] differs without dx/db");
                }

                // accumulate = true adds onto dw and db
                let (mut dw_acc, mut db_acc) = (dw0.clone(), db0.clone());
                k.dense_backward(&s, n, &x, &w, &r, None, &mut dw_acc, Some(&mut db_acc), true);
                let plus = |base: &[f32], g: &[f64]| -> Vec<f64> {
                    base.iter().zip(g).map(|(a, b)| *a as f64 + b).collect()
                };
                let (dw_acc_bound, db_acc_bound) =
                    (dw_bound.accumulated_onto(&dw0), db_bound.accumulated_onto(&db0));
                check_sum_grad(&format!("{what} {k} dw0 + dw"), &dw_acc, &plus(&dw0, &num_dw), &dw_acc_bound);
                check_sum_grad(&format!("{what} {k} db0 + db"), &db_acc, &plus(&db0, &num_db), &db_acc_bound);
                assert_close(&format!("{what} {k} dw accumulate"), &dw_acc, &plus(&dw0, &to_f64(&dw)), 1e-5);
            }
        }
    }
    eprintln!(
        "dense_backward worst error over its bound: dx {worst_dx:.3e}, dw {worst_dw:.3e}, db {worst_db:.3e}"
    );
}

#[test]
fn softmax_loss_backward_matches_finite_differences() {
    let mut rng = rng(16);
    let n = 4;
    for loss in [Loss::CrossEntropy, Loss::SquaredError] {
        let mut worst = 0.0f64;
        for k in [2usize, 5] {
            for scale in [1.0f32, 1.0 / n as f32] {
                let z: Vec<f32> = rand_vec(&mut rng, n * k).iter().map(|v| 3.0 * v).collect();
                let labels: Vec<u32> = (0..n).map(|i| ((i * 3 + 1) % k) as u32).collect();
                let mut probs = vec![0.0; n * k];
                kernel::softmax_loss_forward(loss, k, n, &z, &labels, &mut probs);
                let mut dz = vec![f32::NAN; n * k];
                kernel::softmax_loss_backward(loss, k, n, &probs, &labels, scale, &mut dz);

                let num = central_diff(&to_f64(&z), |zp| {
                    let total: f64 = zp
                        .chunks_exact(k)
                        .zip(&labels)
                        .map(|(zi, &l)| reference::softmax_loss(loss, zi, l as usize))
                        .sum();
                    scale as f64 * total
                });
                let e = check_grad(&format!("softmax {loss:?} k={k} scale={scale} dlogits"), &dz, &num);
                worst = worst.max(e);
            }
        }
        eprintln!("softmax_loss_backward {loss:?} worst rel err: dlogits {worst:.3e}");
    }
}

/// The input gradient alone (the seed recipe's output layer) gives the same
/// bits as the `dx` of the full backward, with every set of kernels.
#[test]
fn dense_input_grad_matches_the_backward_dx_to_the_bit() {
    let mut r = rng(41);
    let sets = kernel_sets("dense_input_grad");
    for (n, inputs, outputs) in [(8, 1280, 120), (5, 84, 2), (1, 20, 3), (7, 33, 17)] {
        let s = Dense { inputs, outputs };
        let (x, w, dy) =
            (rand_vec(&mut r, n * inputs), rand_vec(&mut r, inputs * outputs), rand_vec(&mut r, n * outputs));
        for k in &sets {
            let mut dw = vec![0.0; inputs * outputs];
            let (mut dx, mut alone) = (vec![0.0; n * inputs], vec![f32::NAN; n * inputs]);
            k.dense_backward(&s, n, &x, &w, &dy, Some(&mut dx), &mut dw, None, false);
            k.dense_input_grad(&s, n, &w, &dy, &mut alone);
            assert!(
                dx.iter().zip(&alone).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{k} {n}x{inputs}x{outputs}"
            );
        }
    }
}

/// The error bound is tight enough to matter: leaving one product out of a
/// dense weight gradient element fails the check, for every element whose
/// missing product is larger than twice its bound (nearly all of them).
#[test]
fn the_error_bound_sees_one_missing_product() {
    let mut rng = rng(17);
    let (s, n) = (Dense { inputs: 100, outputs: 7 }, 13);
    let (x, w, r) = (
        rand_vec(&mut rng, n * s.inputs),
        rand_vec(&mut rng, s.weight_len()),
        rand_vec(&mut rng, n * s.outputs),
    );
    let (x64, w64, r64) = (to_f64(&x), to_f64(&w), to_f64(&r));
    let h = LINEAR_STEP;
    let num_dw = central_diff_step(&w64, h, |wp| dense_objective(&s, &x64, wp, None, &r64));
    let abs_dw = central_diff_step(&abs64(&w), h, |wp| dense_objective(&s, &abs64(&x), wp, None, &abs64(&r)));
    let fd_sum = dense_objective(&s, &abs64_plus(&x, h), &abs64_plus(&w, h), None, &abs64(&r));
    let bound = SumBound { terms: n, abs: abs_dw, fd_terms: n * s.outputs * (2 * s.inputs + 4), fd_sum };
    let mut dw = vec![0.0; s.weight_len()];
    kernel::dense_backward(Isa::Portable, &s, n, &x, &w, &r, None, &mut dw, None, false);
    check_sum_grad("dense dw, whole", &dw, &num_dw, &bound);
    let (mut caught, mut big) = (0, 0);
    for (o, i) in (0..s.outputs).flat_map(|o| (0..s.inputs).map(move |i| (o, i))) {
        let j = o * s.inputs + i;
        // sample 0's product left out of element j
        let product = r[o] * x[i];
        let mut wrong = dw.clone();
        wrong[j] -= product;
        if (product as f64).abs() > 2.0 * bound.tolerance(j, num_dw[j]) {
            big += 1;
            caught += sum_grad_violation(&wrong, &num_dw, &bound).is_some() as usize;
        }
    }
    eprintln!("one missing product: {caught} of {big} caught, out of {} elements", s.weight_len());
    assert_eq!(caught, big, "a missing product went unseen");
    assert!(big * 100 >= 95 * s.weight_len(), "the bound is loose: only {big} products exceed it");
}
