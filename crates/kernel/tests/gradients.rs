//! Backward kernels against central finite differences taken in f64 of the
//! reference forward functions.
//!
//! For each layer the objective is `L = sum_i r_i * y_i` for a fixed random
//! `r`, computed with `kernel::reference`; its numeric gradient w.r.t. each
//! input, weight and bias is compared, element by element, with the f32
//! backward kernel run on `dy = r`. All random values are drawn as f32 so the
//! f32 kernel and the f64 oracle see exactly the same numbers.

mod common;

use common::*;
use kernel::{reference, Conv2d, ConvPath, Dense, Loss};

/// `sum_i <r_i, conv(x_i, w) + b>` over the images, in f64.
fn conv_objective(s: &Conv2d, x: &[f64], w: &[f64], b: Option<&[f64]>, r: &[f64]) -> f64 {
    x.chunks_exact(s.in_len())
        .zip(r.chunks_exact(s.out_len()))
        .map(|(xi, ri)| dot64(&reference::conv2d(s, xi, w, b), ri))
        .sum()
}

#[test]
fn conv2d_backward_matches_finite_differences() {
    let mut rng = rng(11);
    let sets = kernel_sets("conv2d_backward");
    let (mut worst_dx, mut worst_dw, mut worst_db) = (0.0f64, 0.0f64, 0.0f64);
    let mut direct = 0;
    for (case_no, case) in CONV_CASES.iter().enumerate() {
        let (s, n) = (case.s, case.n);
        let what = format!("conv case {case_no} {case:?}");
        let x = rand_vec(&mut rng, n * s.in_len());
        let w = rand_vec(&mut rng, s.weight_len());
        let b = rand_vec(&mut rng, s.c_out);
        let r = rand_vec(&mut rng, n * s.out_len());
        let (x64, w64, b64, r64) = (to_f64(&x), to_f64(&w), to_f64(&b), to_f64(&r));
        let b64 = case.bias.then_some(&b64[..]);

        let num_dx = central_diff(&x64, |xp| conv_objective(&s, xp, &w64, b64, &r64));
        let num_dw = central_diff(&w64, |wp| conv_objective(&s, &x64, wp, b64, &r64));
        let num_db =
            case.bias.then(|| central_diff(&to_f64(&b), |bp| conv_objective(&s, &x64, &w64, Some(bp), &r64)));
        for (k, path) in sets.iter().flat_map(|&k| k.conv_paths(&s).into_iter().map(move |p| (k, p))) {
            let what = format!("{what} {k}");
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

            worst_dx = worst_dx.max(check_grad(&format!("{what} {path:?} dx"), &dx, &num_dx));
            worst_dw = worst_dw.max(check_grad(&format!("{what} {path:?} dw"), &dw, &num_dw));
            if let Some(num_db) = &num_db {
                worst_db = worst_db.max(check_grad(&format!("{what} {path:?} db"), &db, num_db));
            }

            // dx = None, db = None: dw is the same computation, bit for bit
            let mut dw_only = vec![f32::NAN; s.weight_len()];
            backward(None, &mut dw_only, None, false);
            for (i, (a, b)) in dw_only.iter().zip(&dw).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "{what} {path:?}: dw[{i}] differs without dx/db");
            }

            // accumulate = true adds onto what is there
            let dw0 = rand_vec(&mut rng, s.weight_len());
            let db0 = rand_vec(&mut rng, s.c_out);
            let mut dw_acc = dw0.clone();
            let mut db_acc = db0.clone();
            backward(None, &mut dw_acc, Some(&mut db_acc), true);
            let sum = |base: &[f32], g: &[f32]| -> Vec<f64> {
                base.iter().zip(g).map(|(a, b)| *a as f64 + *b as f64).collect()
            };
            assert_close(&format!("{what} {path:?} dw accumulate"), &dw_acc, &sum(&dw0, &dw), 1e-5);
            let num_acc: Vec<f64> = dw0.iter().zip(&num_dw).map(|(a, g)| *a as f64 + g).collect();
            check_grad(&format!("{what} {path:?} dw0 + dw"), &dw_acc, &num_acc);
            // db accumulates from whatever it held (the row sums of dy)
            let db_sums: Vec<f64> = (0..s.c_out)
                .map(|f| {
                    r.chunks_exact(s.out_len())
                        .map(|ri| to_f64(&ri[f * s.col_cols()..][..s.col_cols()]).iter().sum::<f64>())
                        .sum()
                })
                .collect();
            let want_db: Vec<f64> = db0.iter().zip(&db_sums).map(|(a, g)| *a as f64 + g).collect();
            assert_close(&format!("{what} {path:?} db accumulate"), &db_acc, &want_db, 1e-5);
        }
    }
    eprintln!(
        "conv2d_backward worst rel err: dx {worst_dx:.3e}, dw {worst_dw:.3e}, db {worst_db:.3e}; \
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
    let mut rng = rng(15);
    let sets = kernel_sets("dense_backward");
    let (mut worst_dx, mut worst_dw, mut worst_db) = (0.0f64, 0.0f64, 0.0f64);
    for &(s, has_bias, n) in DENSE_CASES {
        let what = format!("dense {s:?} bias={has_bias} n={n}");
        let x = rand_vec(&mut rng, n * s.inputs);
        let w = rand_vec(&mut rng, s.weight_len());
        let b = rand_vec(&mut rng, s.outputs);
        let r = rand_vec(&mut rng, n * s.outputs);
        let (x64, w64, b64, r64) = (to_f64(&x), to_f64(&w), to_f64(&b), to_f64(&r));
        let bias = has_bias.then_some(&b64[..]);

        let num_dx = central_diff(&x64, |xp| dense_objective(&s, xp, &w64, bias, &r64));
        let num_dw = central_diff(&w64, |wp| dense_objective(&s, &x64, wp, bias, &r64));
        let num_db = central_diff(&b64, |bp| dense_objective(&s, &x64, &w64, Some(bp), &r64));
        for k in &sets {
            let mut dx = vec![f32::NAN; n * s.inputs];
            let mut dw = vec![f32::NAN; s.weight_len()];
            let mut db = vec![f32::NAN; s.outputs];
            let db_arg = has_bias.then_some(&mut db[..]);
            k.dense_backward(&s, n, &x, &w, &r, Some(&mut dx), &mut dw, db_arg, false);

            worst_dx = worst_dx.max(check_grad(&format!("{what} {k} dx"), &dx, &num_dx));
            worst_dw = worst_dw.max(check_grad(&format!("{what} {k} dw"), &dw, &num_dw));
            if has_bias {
                worst_db = worst_db.max(check_grad(&format!("{what} {k} db"), &db, &num_db));
            }

            // dx = None, db = None gives the same dw
            let mut dw_only = vec![f32::NAN; s.weight_len()];
            k.dense_backward(&s, n, &x, &w, &r, None, &mut dw_only, None, false);
            for (i, (a, b)) in dw_only.iter().zip(&dw).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "{what} {k}: dw[{i}] differs without dx/db");
            }

            // accumulate = true adds onto dw and db
            let dw0 = rand_vec(&mut rng, s.weight_len());
            let db0 = rand_vec(&mut rng, s.outputs);
            let (mut dw_acc, mut db_acc) = (dw0.clone(), db0.clone());
            k.dense_backward(&s, n, &x, &w, &r, None, &mut dw_acc, Some(&mut db_acc), true);
            let plus = |base: &[f32], g: &[f64]| -> Vec<f64> {
                base.iter().zip(g).map(|(a, b)| *a as f64 + b).collect()
            };
            check_grad(&format!("{what} {k} dw0 + dw"), &dw_acc, &plus(&dw0, &num_dw));
            check_grad(&format!("{what} {k} db0 + db"), &db_acc, &plus(&db0, &num_db));
            assert_close(&format!("{what} {k} dw accumulate"), &dw_acc, &plus(&dw0, &to_f64(&dw)), 1e-5);
        }
    }
    eprintln!("dense_backward worst rel err: dx {worst_dx:.3e}, dw {worst_dw:.3e}, db {worst_db:.3e}");
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
