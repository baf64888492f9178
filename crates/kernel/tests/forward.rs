//! Forward oracle: every f32 kernel against the naive f64 functions in
//! `kernel::reference`, output-size formulas, and im2col/col2im adjointness.

mod common;

use common::*;
use kernel::{reference, Conv2d, ConvPath, Dense, Isa, Loss, MaxPool2d};
use rand::Rng;

const TOL: f64 = 1e-4;

#[test]
fn conv2d_forward_matches_reference() {
    let mut rng = rng(1);
    let sets = kernel_sets("conv2d_forward");
    let (mut worst, mut direct) = (0.0f64, 0);
    for (case_no, case) in CONV_CASES.iter().enumerate() {
        let (s, n) = (case.s, case.n);
        let x = rand_vec(&mut rng, n * s.in_len());
        let w = rand_vec(&mut rng, s.weight_len());
        let b = rand_vec(&mut rng, s.c_out);
        let bias = case.bias.then_some(&b[..]);
        // garbage in the output and the scratch must not leak through
        let (w64, b64) = (to_f64(&w), to_f64(&b));
        let want: Vec<f64> = x
            .chunks_exact(s.in_len())
            .flat_map(|xi| reference::conv2d(&s, &to_f64(xi), &w64, case.bias.then_some(&b64[..])))
            .collect();
        for (k, path) in sets.iter().flat_map(|&k| k.conv_paths(&s).into_iter().map(move |p| (k, p))) {
            let mut y = vec![f32::NAN; n * s.out_len()];
            let mut scratch = vec![f32::NAN; s.scratch_len(n)];
            k.conv_forward(path, &s, n, &x, &w, bias, &mut y, &mut scratch);
            let what = format!("conv case {case_no} {case:?} {k} {path:?}");
            worst = worst.max(assert_close(&what, &y, &want, TOL));
            if path == ConvPath::Direct {
                direct += 1;
            }
        }
    }
    eprintln!("conv2d_forward: worst err {worst:.3e}; {direct} runs on the direct path");
}

/// Every im2col entry is the input pixel its row/column names, or 0 when
/// that pixel lies in the padding.
#[test]
fn im2col_entries_are_the_receptive_fields() {
    let mut rng = rng(2);
    for case in CONV_CASES {
        let s = case.s;
        let x = rand_vec(&mut rng, s.in_len());
        let mut cols = vec![f32::NAN; s.cols_len()];
        kernel::im2col(&s, &x, &mut cols);
        let (ho, wo) = (s.out_h(), s.out_w());
        for c in 0..s.c_in {
            for ki in 0..s.kh {
                for kj in 0..s.kw {
                    let row = (c * s.kh + ki) * s.kw + kj;
                    for oy in 0..ho {
                        for ox in 0..wo {
                            let iy = (oy * s.stride + ki) as isize - s.pad as isize;
                            let ix = (ox * s.stride + kj) as isize - s.pad as isize;
                            let inside = (0..s.h as isize).contains(&iy) && (0..s.w as isize).contains(&ix);
                            let want =
                                if inside { x[(c * s.h + iy as usize) * s.w + ix as usize] } else { 0.0 };
                            let got = cols[row * ho * wo + oy * wo + ox];
                            assert_eq!(
                                got.to_bits(),
                                want.to_bits(),
                                "{s:?}: cols[row {row}, ({oy},{ox})] = {got}, want {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}

/// `<im2col(x), c> == <x, col2im(c)>`, and col2im adds onto `dx`.
#[test]
fn im2col_col2im_are_adjoint() {
    let mut rng = rng(3);
    for case in CONV_CASES {
        let s = case.s;
        for _ in 0..3 {
            let x = rand_vec(&mut rng, s.in_len());
            let c = rand_vec(&mut rng, s.cols_len());
            let mut cols = vec![f32::NAN; s.cols_len()];
            kernel::im2col(&s, &x, &mut cols);
            let mut back = vec![0.0f32; s.in_len()];
            kernel::col2im(&s, &c, &mut back);

            let lhs = dot64(&to_f64(&cols), &to_f64(&c));
            let rhs = dot64(&to_f64(&x), &to_f64(&back));
            // scale of the sums, for a relative bound
            let mag: f64 = cols.iter().zip(&c).map(|(a, b)| (a * b).abs() as f64).sum::<f64>() + 1.0;
            assert!(
                (lhs - rhs).abs() <= 1e-5 * mag,
                "{s:?}: <im2col(x), c> = {lhs} but <x, col2im(c)> = {rhs}"
            );

            // col2im accumulates into dx rather than overwriting it
            let base = rand_vec(&mut rng, s.in_len());
            let mut acc = base.clone();
            kernel::col2im(&s, &c, &mut acc);
            let want: Vec<f64> = base.iter().zip(&back).map(|(a, b)| *a as f64 + *b as f64).collect();
            assert_close(&format!("col2im accumulate {s:?}"), &acc, &want, 1e-5);
        }
    }
}

#[test]
fn maxpool_forward_matches_reference() {
    let mut rng = rng(4);
    for k in kernel_sets("maxpool_forward") {
        maxpool_forward_matches_reference_at(k, &mut rng);
    }
}

fn maxpool_forward_matches_reference_at(k: Kernels, rng: &mut rand_chacha::ChaCha8Rng) {
    for case in POOL_CASES.iter().chain(WIDE_POOL_CASES) {
        let (s, n) = (case.s, case.n);
        let x = rand_vec(rng, n * s.in_len());
        let mut y = vec![f32::NAN; n * s.out_len()];
        let mut arg = vec![u32::MAX; n * s.out_len()];
        k.maxpool_forward(&s, n, &x, &mut y, &mut arg);
        let (ho, wo) = (s.out_h(), s.out_w());
        for (i, xi) in x.chunks_exact(s.in_len()).enumerate() {
            let want = reference::maxpool(&s, &to_f64(xi));
            let yi = &y[i * s.out_len()..(i + 1) * s.out_len()];
            let ai = &arg[i * s.out_len()..(i + 1) * s.out_len()];
            for (o, (&got, &want)) in yi.iter().zip(&want).enumerate() {
                // a max is exact: the f32 kernel must agree bit for bit
                assert_eq!(got as f64, want, "{k} {case:?} image {i} output {o}");
                // the argmax points at that value, inside the output's window
                let a = ai[o] as usize;
                assert_eq!(xi[a], got, "{k} {case:?} image {i} output {o}: argmax {a}");
                let (c, oy, ox) = (o / (ho * wo), o / wo % ho, o % wo);
                let (ac, ay, ax) = (a / (s.h * s.w), a / s.w % s.h, a % s.w);
                assert_eq!(ac, c, "{k} {case:?}: argmax in another channel");
                assert!((oy * s.stride..oy * s.stride + s.size).contains(&ay), "{k} {case:?}: argmax row");
                assert!((ox * s.stride..ox * s.stride + s.size).contains(&ax), "{k} {case:?}: argmax col");
            }
        }
    }
}

/// Ties go to the first element of the window in row-major order: inputs
/// drawn from {-1, 0, 1} tie all the time, and the argmax must be the first
/// maximum a naive row-major scan of the (clipped) window finds.
#[test]
fn maxpool_ties_go_to_first_in_window() {
    let mut rng = rng(9);
    for k in kernel_sets("maxpool ties") {
        maxpool_ties_go_to_first_at(k, &mut rng);
    }
}

fn maxpool_ties_go_to_first_at(k: Kernels, rng: &mut rand_chacha::ChaCha8Rng) {
    for case in POOL_CASES.iter().chain(WIDE_POOL_CASES) {
        let (s, n) = (case.s, case.n);
        let x: Vec<f32> = (0..n * s.in_len()).map(|_| rng.random_range(-1i32..=1) as f32).collect();
        let mut y = vec![f32::NAN; n * s.out_len()];
        let mut arg = vec![u32::MAX; n * s.out_len()];
        k.maxpool_forward(&s, n, &x, &mut y, &mut arg);
        let (ho, wo) = (s.out_h(), s.out_w());
        for (i, xi) in x.chunks_exact(s.in_len()).enumerate() {
            for c in 0..s.c {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let mut best = None::<(f32, usize)>;
                        for iy in oy * s.stride..(oy * s.stride + s.size).min(s.h) {
                            for ix in ox * s.stride..(ox * s.stride + s.size).min(s.w) {
                                let at = (c * s.h + iy) * s.w + ix;
                                if best.is_none_or(|(v, _)| xi[at] > v) {
                                    best = Some((xi[at], at));
                                }
                            }
                        }
                        let (v, at) = best.expect("empty window");
                        let o = i * s.out_len() + (c * ho + oy) * wo + ox;
                        assert_eq!(y[o], v, "{k} {case:?} image {i} window ({c},{oy},{ox})");
                        assert_eq!(arg[o] as usize, at, "{k} {case:?} image {i} window ({c},{oy},{ox})");
                    }
                }
            }
        }
    }
    // all equal: every window's first element wins
    let s = MaxPool2d { c: 2, h: 8, w: 8, size: 3, stride: 2, ceil: true };
    let x = vec![0.5f32; s.in_len()];
    let mut y = vec![0.0; s.out_len()];
    let mut arg = vec![0; s.out_len()];
    k.maxpool_forward(&s, 1, &x, &mut y, &mut arg);
    let (ho, wo) = (s.out_h(), s.out_w());
    for c in 0..s.c {
        for oy in 0..ho {
            for ox in 0..wo {
                let o = (c * ho + oy) * wo + ox;
                assert_eq!(y[o], 0.5, "{k}");
                assert_eq!(arg[o] as usize, c * s.h * s.w + oy * s.stride * s.w + ox * s.stride, "{k}");
            }
        }
    }
}

fn conv_out(h: usize, k: usize, stride: usize, pad: usize) -> usize {
    let s = Conv2d { c_in: 1, h, w: h, c_out: 1, kh: k, kw: k, stride, pad };
    assert_eq!(s.out_h(), s.out_w());
    s.out_h()
}

fn pool_out(h: usize, size: usize, stride: usize, ceil: bool) -> usize {
    let s = MaxPool2d { c: 1, h, w: h, size, stride, ceil };
    assert_eq!(s.out_h(), s.out_w());
    s.out_h()
}

#[test]
fn output_sizes_follow_the_formulas() {
    // conv: floor((h + 2p - k) / s) + 1
    for h in 1..=20 {
        for k in 1..=5 {
            for stride in 1..=3 {
                for pad in 0..=2 {
                    let s = Conv2d { c_in: 1, h, w: h + 1, c_out: 1, kh: k, kw: k, stride, pad };
                    let want = |n: usize| (n + 2 * pad >= k).then(|| (n + 2 * pad - k) / stride + 1);
                    assert_eq!(s.checked_out_h(), want(h), "{s:?}");
                    assert_eq!(s.checked_out_w(), want(h + 1), "{s:?}");
                }
            }
        }
    }
    let zero_stride = Conv2d { c_in: 1, h: 5, w: 5, c_out: 1, kh: 3, kw: 3, stride: 0, pad: 0 };
    assert_eq!(zero_stride.checked_out_h(), None);

    // pool, floor: (h - size) / stride + 1; ceil: ceil((h - size) / stride) + 1,
    // minus one if the last window would start at or past the edge (PyTorch)
    for h in 1..=40usize {
        for size in 1..=5usize {
            for stride in 1..=5usize {
                for ceil in [false, true] {
                    let s = MaxPool2d { c: 1, h, w: h, size, stride, ceil };
                    let want = (h >= size).then(|| {
                        if ceil {
                            let out = ((h - size) as f64 / stride as f64).ceil() as usize + 1;
                            if (out - 1) * stride >= h {
                                out - 1
                            } else {
                                out
                            }
                        } else {
                            (h - size) / stride + 1
                        }
                    });
                    assert_eq!(s.checked_out_h(), want, "{s:?}");
                }
            }
        }
    }
    let zero = MaxPool2d { c: 1, h: 5, w: 5, size: 2, stride: 0, ceil: false };
    assert_eq!(zero.checked_out_h(), None);

    // worked values
    assert_eq!(pool_out(32, 3, 2, true), 16);
    assert_eq!(pool_out(16, 3, 2, true), 8);
    assert_eq!(pool_out(32, 3, 2, false), 15);
    assert_eq!(pool_out(8, 3, 2, true), 4);
    assert_eq!(pool_out(8, 3, 2, false), 3);
    assert_eq!(pool_out(7, 3, 2, true), 3);
    assert_eq!(pool_out(9, 3, 2, true), 4);
    assert_eq!(pool_out(7, 2, 4, true), 2); // the PyTorch "minus one" case
    assert_eq!(pool_out(5, 1, 3, true), 2);
    assert_eq!(pool_out(32, 2, 2, false), 16);

    // the valid-padding chain: conv 3x3 pad 0, pool 3/2 floor, ...
    let mut h = 32;
    let mut chain = vec![h];
    for step in 0..5 {
        h = if step % 2 == 0 { conv_out(h, 3, 1, 0) } else { pool_out(h, 3, 2, false) };
        chain.push(h);
    }
    assert_eq!(chain, [32, 30, 14, 12, 5, 3]);
    // and the same-padding chain in ceil mode
    assert_eq!(pool_out(conv_out(32, 3, 1, 1), 3, 2, true), 16);
    assert_eq!(pool_out(conv_out(16, 3, 1, 1), 3, 2, true), 8);
}

#[test]
fn gap_forward_matches_reference() {
    let mut rng = rng(5);
    for &(c, hw, n) in GAP_CASES {
        let x = rand_vec(&mut rng, n * c * hw);
        let mut y = vec![f32::NAN; n * c];
        kernel::gap_forward(c, hw, n, &x, &mut y);
        let want: Vec<f64> =
            x.chunks_exact(c * hw).flat_map(|xi| reference::gap(c, hw, &to_f64(xi))).collect();
        assert_close(&format!("gap c={c} hw={hw} n={n}"), &y, &want, TOL);
    }
}

#[test]
fn relu_forward_matches_reference() {
    let mut rng = rng(6);
    let mut x = rand_vec(&mut rng, 257);
    x[0] = 0.0;
    x[1] = -0.0;
    let mut y = vec![f32::NAN; x.len()];
    kernel::relu_forward(&x, &mut y);
    assert_close("relu", &y, &reference::relu(&to_f64(&x)), 0.0);
    assert!(y.iter().all(|&v| v >= 0.0));
}

#[test]
fn dense_forward_matches_reference() {
    let mut rng = rng(7);
    let sets = kernel_sets("dense_forward");
    for &(s, has_bias, n) in DENSE_CASES {
        let x = rand_vec(&mut rng, n * s.inputs);
        let w = rand_vec(&mut rng, s.weight_len());
        let b = rand_vec(&mut rng, s.outputs);
        let (w64, b64) = (to_f64(&w), to_f64(&b));
        let want: Vec<f64> = x
            .chunks_exact(s.inputs)
            .flat_map(|xi| reference::dense(&s, &to_f64(xi), &w64, has_bias.then_some(&b64[..])))
            .collect();
        for k in &sets {
            let mut y = vec![f32::NAN; n * s.outputs];
            k.dense_forward(&s, n, &x, &w, has_bias.then_some(&b[..]), &mut y);
            assert_close(&format!("dense {k} {s:?} bias={has_bias} n={n}"), &y, &want, TOL);
        }
    }
    // a known value: [1 2; 3 4] x [1, 1] + [10, 20] = [13, 27]
    let s = Dense { inputs: 2, outputs: 2 };
    for k in &sets {
        let mut y = [0.0; 2];
        k.dense_forward(&s, 1, &[1.0, 1.0], &[1.0, 2.0, 3.0, 4.0], Some(&[10.0, 20.0]), &mut y);
        assert_eq!(y, [13.0, 27.0], "{k}");
    }
}

#[test]
fn softmax_loss_forward_matches_reference() {
    let mut rng = rng(8);
    for loss in [Loss::CrossEntropy, Loss::SquaredError] {
        for k in [2usize, 5, 10] {
            let n = 6;
            let z: Vec<f32> = rand_vec(&mut rng, n * k).iter().map(|v| 4.0 * v).collect();
            let labels: Vec<u32> = (0..n).map(|i| (i * 7 % k) as u32).collect();
            let mut probs = vec![f32::NAN; n * k];
            let sums = kernel::softmax_loss_forward(loss, k, n, &z, &labels, &mut probs);
            let mut want_probs = Vec::new();
            let mut want_loss = 0.0;
            for (zi, &l) in z.chunks_exact(k).zip(&labels) {
                let zi = to_f64(zi);
                want_probs.extend(reference::softmax(&zi));
                want_loss += reference::softmax_loss(loss, &zi, l as usize);
            }
            assert_close(&format!("probs {loss:?} k={k}"), &probs, &want_probs, TOL);
            let err = (sums.loss - want_loss).abs() / want_loss.abs().max(1.0);
            assert!(err < TOL, "{loss:?} k={k}: loss {} vs reference {want_loss}", sums.loss);
        }
    }
}

/// The SIMD max pools (every ISA, both fallback widths) and the portable
/// code give the same values and indices bit for bit, on inputs full of
/// ties, infinities and NaN.
#[test]
fn maxpool_forward_equals_portable_bit_for_bit() {
    let mut rng = rng(10);
    let specials = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 0.0, 1.0, -1.0];
    let sets = kernel_sets("maxpool vs portable");
    for case in POOL_CASES.iter().chain(WIDE_POOL_CASES) {
        let (s, n) = (case.s, case.n);
        for round in 0..3 {
            let x: Vec<f32> = (0..n * s.in_len())
                .map(|_| match round {
                    0 => rng.random_range(-1.0f32..1.0),
                    1 => rng.random_range(-1i32..=1) as f32,
                    _ => specials[rng.random_range(0..specials.len())],
                })
                .collect();
            let mut want = (vec![1.0f32; n * s.out_len()], vec![1u32; n * s.out_len()]);
            kernel::maxpool_forward(Isa::Portable, &s, n, &x, &mut want.0, &mut want.1);
            for k in &sets {
                let mut got = (vec![0.0f32; n * s.out_len()], vec![0u32; n * s.out_len()]);
                k.maxpool_forward(&s, n, &x, &mut got.0, &mut got.1);
                for (o, (a, b)) in got.0.iter().zip(&want.0).enumerate() {
                    assert_eq!(a.to_bits(), b.to_bits(), "{k} {case:?} round {round} output {o}");
                }
                assert_eq!(got.1, want.1, "{k} {case:?} round {round}: argmax");
            }
        }
    }
}

/// The fused convolution + max pool (+ ReLU) gives the bits of the passes
/// run one after the other, outputs and argmax, at every ISA and path, for
/// a chunk of images (each image's convolution output lands in the same
/// scratch, so a pass that mixed images up would show).
#[test]
fn conv_then_maxpool_in_one_pass_equals_the_separate_passes() {
    let mut rng = rng(7);
    let layers = [
        // the seed network's conv1 + pool1, and a strided 5x5 conv with a 2x2 pool
        (Conv2d { c_in: 3, h: 32, w: 32, c_out: 20, kh: 3, kw: 3, stride: 1, pad: 1 }, 3, 2, true),
        (Conv2d { c_in: 4, h: 13, w: 11, c_out: 6, kh: 5, kw: 5, stride: 2, pad: 2 }, 2, 2, false),
    ];
    for (conv, size, stride, ceil) in layers {
        let pool = MaxPool2d { c: conv.c_out, h: conv.out_h(), w: conv.out_w(), size, stride, ceil };
        let n = 3;
        let x = rand_vec(&mut rng, n * conv.in_len());
        let w = rand_vec(&mut rng, conv.weight_len());
        let b = rand_vec(&mut rng, conv.c_out);
        for isa in isas() {
            for path in [ConvPath::Im2col, ConvPath::Direct].into_iter().filter(|p| p.runs(isa, &conv)) {
                let mut scratch = vec![f32::NAN; conv.scratch_len(n)];
                let mut conv_out = vec![f32::NAN; n * conv.out_len()];
                kernel::conv2d_forward_via(
                    isa,
                    path,
                    &conv,
                    n,
                    &x,
                    &w,
                    Some(&b),
                    &mut conv_out,
                    &mut scratch,
                );
                let (mut pooled, mut want_arg) =
                    (vec![f32::NAN; n * pool.out_len()], vec![0; n * pool.out_len()]);
                kernel::maxpool_forward(isa, &pool, n, &conv_out, &mut pooled, &mut want_arg);
                let mut relu = vec![f32::NAN; pooled.len()];
                kernel::relu_forward(&pooled, &mut relu);
                assert!(pooled.iter().any(|&v| v < 0.0), "the test needs negative pooled values");
                for (with_relu, want) in [(false, &pooled), (true, &relu)] {
                    let what = format!("{conv:?} {isa} {path:?} relu {with_relu}");
                    let mut scratch = vec![f32::NAN; kernel::conv2d_maxpool_scratch_len(&conv)];
                    let mut got = vec![f32::NAN; n * pool.out_len()];
                    let mut got_arg = vec![u32::MAX; n * pool.out_len()];
                    kernel::conv2d_maxpool_forward(
                        isa,
                        path,
                        &conv,
                        &pool,
                        n,
                        &x,
                        &w,
                        Some(&b),
                        &mut got,
                        &mut got_arg,
                        &mut scratch,
                        with_relu,
                    );
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&got), bits(want), "{what}: outputs");
                    assert_eq!(got_arg, want_arg, "{what}: argmax");
                }
            }
        }
    }
}
