//! The SIMD kernels across instantiations: each hardware ISA gives the bits
//! of the portable vector of its width (AVX2 = `Fallback<8>`, AVX-512 =
//! `Fallback<16>`), and every instantiation's direct convolution agrees
//! with im2col on the presets' layer shapes.

mod common;

use common::*;
use kernel::{Conv2d, ConvPath, Dense, Isa, MaxPool2d};
use rand::Rng;

/// The fallback instantiation with the lanes and tiles of `isa`.
fn twin(isa: Isa) -> Kernels {
    match isa {
        Isa::Avx512 => Kernels::Fallback16,
        Isa::Avx2 => Kernels::Fallback8,
        Isa::Portable => unreachable!("the portable kernels have no vector twin"),
    }
}

/// The SIMD ISAs this CPU runs, each with its fallback twin.
fn pairs(test: &str) -> Vec<(Kernels, Kernels)> {
    let simd: Vec<Isa> = isas().into_iter().filter(|&i| i != Isa::Portable).collect();
    let pairs: Vec<(Kernels, Kernels)> = simd.iter().map(|&i| (Kernels::Isa(i), twin(i))).collect();
    let names: Vec<String> = pairs.iter().map(|(a, b)| format!("{a} = {b}")).collect();
    eprintln!(
        "{test}: {}",
        if names.is_empty() { "no SIMD ISA on this CPU".into() } else { names.join(", ") }
    );
    pairs
}

fn same_bits(what: &str, a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(x.to_bits(), y.to_bits(), "{what}[{i}]: {x} vs {y}");
    }
}

#[test]
fn conv_hardware_equals_its_fallback_twin_bit_for_bit() {
    let mut rng = rng(51);
    let pairs = pairs("conv fidelity");
    let mut cases: Vec<ConvCase> = CONV_CASES.iter().copied().filter(|c| c.s.direct_shape()).collect();
    // the presets' layers, at a chunk of 3 images
    for (c_in, hw, c_out, pad) in [(3, 32, 20, 1), (20, 16, 40, 1), (40, 8, 60, 0), (20, 14, 40, 0)] {
        let s = Conv2d { c_in, h: hw, w: hw, c_out, kh: 3, kw: 3, stride: 1, pad };
        cases.push(ConvCase { s, bias: true, n: 3 });
    }
    for case in cases {
        let (s, n) = (case.s, case.n);
        let x = rand_vec(&mut rng, n * s.in_len());
        let w = rand_vec(&mut rng, s.weight_len());
        let b = rand_vec(&mut rng, s.c_out);
        let dy = rand_vec(&mut rng, n * s.out_len());
        let (dw0, db0) = (rand_vec(&mut rng, s.weight_len()), rand_vec(&mut rng, s.c_out));
        let bias = case.bias.then_some(&b[..]);
        for &(hw, fb) in &pairs {
            let what = format!("{case:?} {hw} vs {fb}");
            let run = |k: Kernels| {
                let mut scratch = vec![f32::NAN; s.scratch_len(n)];
                let mut y = vec![f32::NAN; n * s.out_len()];
                k.conv_forward(ConvPath::Direct, &s, n, &x, &w, bias, &mut y, &mut scratch);
                let mut dx = vec![f32::NAN; n * s.in_len()];
                let (mut dw, mut db) = (vec![f32::NAN; s.weight_len()], vec![f32::NAN; s.c_out]);
                let (dx_, db_) = (Some(&mut dx[..]), Some(&mut db[..]));
                k.conv_backward(ConvPath::Direct, &s, n, &x, &w, &dy, dx_, &mut dw, db_, &mut scratch, false);
                let (mut dw_acc, mut db_acc) = (dw0.clone(), db0.clone());
                let db_ = Some(&mut db_acc[..]);
                k.conv_backward(
                    ConvPath::Direct,
                    &s,
                    n,
                    &x,
                    &w,
                    &dy,
                    None,
                    &mut dw_acc,
                    db_,
                    &mut scratch,
                    true,
                );
                [y, dx, dw, db, dw_acc, db_acc]
            };
            let (got, want) = (run(hw), run(fb));
            for (part, (g, w)) in
                ["y", "dx", "dw", "db", "dw accumulate", "db accumulate"].iter().zip(got.iter().zip(&want))
            {
                same_bits(&format!("{what} {part}"), g, w);
            }
        }
    }
}

#[test]
fn dense_hardware_equals_its_fallback_twin_bit_for_bit() {
    let mut rng = rng(52);
    let pairs = pairs("dense fidelity");
    let mut cases: Vec<(Dense, usize)> = DENSE_CASES.iter().map(|&(s, _, n)| (s, n)).collect();
    // the presets' first dense layers at a lane's chunk, and a tail of 7 columns
    cases.extend([(Dense { inputs: 1280, outputs: 120 }, 8), (Dense { inputs: 2160, outputs: 120 }, 5)]);
    cases.push((Dense { inputs: 103, outputs: 11 }, 9));
    for (s, n) in cases {
        let x = rand_vec(&mut rng, n * s.inputs);
        let w = rand_vec(&mut rng, s.weight_len());
        let b = rand_vec(&mut rng, s.outputs);
        let dy = rand_vec(&mut rng, n * s.outputs);
        let (dw0, db0) = (rand_vec(&mut rng, s.weight_len()), rand_vec(&mut rng, s.outputs));
        for &(hw, fb) in &pairs {
            let what = format!("{s:?} n={n} {hw} vs {fb}");
            let run = |k: Kernels| {
                let mut y = vec![f32::NAN; n * s.outputs];
                k.dense_forward(&s, n, &x, &w, Some(&b), &mut y);
                let mut dx = vec![f32::NAN; n * s.inputs];
                let (mut dw, mut db) = (vec![f32::NAN; s.weight_len()], vec![f32::NAN; s.outputs]);
                k.dense_backward(&s, n, &x, &w, &dy, Some(&mut dx), &mut dw, Some(&mut db), false);
                let (mut dw_acc, mut db_acc) = (dw0.clone(), db0.clone());
                k.dense_backward(&s, n, &x, &w, &dy, None, &mut dw_acc, Some(&mut db_acc), true);
                let mut alone = vec![f32::NAN; n * s.inputs];
                k.dense_input_grad(&s, n, &w, &dy, &mut alone);
                [y, dx, dw, db, dw_acc, db_acc, alone]
            };
            let (got, want) = (run(hw), run(fb));
            let parts = ["y", "dx", "dw", "db", "dw accumulate", "db accumulate", "input grad"];
            for (part, (g, w)) in parts.iter().zip(got.iter().zip(&want)) {
                same_bits(&format!("{what} {part}"), g, w);
            }
        }
    }
}

#[test]
fn maxpool_hardware_equals_its_fallback_twin_bit_for_bit() {
    let mut rng = rng(53);
    let pairs = pairs("maxpool fidelity");
    let specials = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 0.0, 1.0, -1.0];
    for case in POOL_CASES.iter().chain(WIDE_POOL_CASES).filter(|c| (c.s.size, c.s.stride) == (3, 2)) {
        let (s, n) = (case.s, case.n);
        let x: Vec<f32> =
            (0..n * s.in_len()).map(|_| specials[rng.random_range(0..specials.len())]).collect();
        for &(hw, fb) in &pairs {
            let run = |k: Kernels| {
                let (mut y, mut arg) = (vec![f32::NAN; n * s.out_len()], vec![u32::MAX; n * s.out_len()]);
                k.maxpool_forward(&s, n, &x, &mut y, &mut arg);
                (y, arg)
            };
            let (got, want) = (run(hw), run(fb));
            same_bits(&format!("{case:?} {hw} vs {fb}"), &got.0, &want.0);
            assert_eq!(got.1, want.1, "{case:?} {hw} vs {fb}: argmax");
        }
    }
}

/// Every direct instantiation against im2col (the portable path) on the
/// presets' convolutions: the same sums in other orders, so close but not
/// equal.
#[test]
fn direct_agrees_with_im2col_on_the_preset_layers() {
    let mut rng = rng(54);
    let sets: Vec<Kernels> =
        kernel_sets("direct vs im2col").into_iter().filter(|k| *k != Kernels::Isa(Isa::Portable)).collect();
    let n = 2;
    for (c_in, hw, c_out, pad) in [(3, 32, 20, 1), (20, 16, 40, 1), (40, 8, 60, 1), (20, 30, 40, 0)] {
        let s = Conv2d { c_in, h: hw, w: hw, c_out, kh: 3, kw: 3, stride: 1, pad };
        let x = rand_vec(&mut rng, n * s.in_len());
        let w = rand_vec(&mut rng, s.weight_len());
        let b = rand_vec(&mut rng, s.c_out);
        let dy = rand_vec(&mut rng, n * s.out_len());
        let run = |k: Kernels, path: ConvPath| forward_backward(k, path, &s, n, &x, &w, &b, &dy);
        let want = run(Kernels::Isa(Isa::Portable), ConvPath::Im2col);
        for &k in &sets {
            let got = run(k, ConvPath::Direct);
            for (part, (g, w)) in ["y", "dx", "dw", "db"].iter().zip(got.iter().zip(&want)) {
                // relative to the largest value: the sums have hundreds of terms
                let scale = w.iter().fold(1.0f32, |m, v| m.max(v.abs())) as f64;
                let worst = g.iter().zip(w).map(|(a, b)| (a - b).abs() as f64 / scale).fold(0.0, f64::max);
                assert!(worst < 1e-5, "{s:?} {k} {part}: direct vs im2col differ by {worst:e} of the scale");
            }
        }
    }
}

#[test]
fn pool_shapes_outside_3x3_stride_2_run_the_portable_code_at_every_isa() {
    // a 2x2/2 pool at a SIMD ISA: the same bits as the portable pool,
    // through the same code
    let s = MaxPool2d { c: 2, h: 9, w: 9, size: 2, stride: 2, ceil: true };
    let x = rand_vec(&mut rng(55), s.in_len());
    let mut want = (vec![0.0; s.out_len()], vec![0; s.out_len()]);
    kernel::maxpool_forward(Isa::Portable, &s, 1, &x, &mut want.0, &mut want.1);
    for isa in isas() {
        let mut got = (vec![1.0; s.out_len()], vec![1; s.out_len()]);
        kernel::maxpool_forward(isa, &s, 1, &x, &mut got.0, &mut got.1);
        same_bits(&format!("{isa}"), &got.0, &want.0);
        assert_eq!(got.1, want.1, "{isa}");
    }
}

/// `[y, dx, dw, db]` of one forward (with bias `b`) and one backward of
/// `k` on `path`, every buffer starting as NaN.
#[allow(clippy::too_many_arguments)]
fn forward_backward(
    k: Kernels,
    path: ConvPath,
    s: &Conv2d,
    n: usize,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    dy: &[f32],
) -> [Vec<f32>; 4] {
    let mut scratch = vec![f32::NAN; s.scratch_len(n)];
    let mut y = vec![f32::NAN; n * s.out_len()];
    k.conv_forward(path, s, n, x, w, Some(b), &mut y, &mut scratch);
    let mut dx = vec![f32::NAN; n * s.in_len()];
    let (mut dw, mut db) = (vec![f32::NAN; s.weight_len()], vec![f32::NAN; s.c_out]);
    k.conv_backward(path, s, n, x, w, dy, Some(&mut dx), &mut dw, Some(&mut db), &mut scratch, false);
    [y, dx, dw, db]
}

/// FNV-1a over the bits of every value: a short name for a buffer's bits.
fn bits_hash(bufs: &[&[f32]]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for v in bufs.iter().flat_map(|b| b.iter()) {
        for byte in v.to_bits().to_le_bytes() {
            h = (h ^ byte as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The fallback vectors' bits on the presets' convolutions, pinned: the
/// AVX-512 (`Fallback<16>`) and AVX2 (`Fallback<8>`) instantiations must
/// keep them through any change of tiles, blocking or stores, on any CPU,
/// since the hardware kernels equal their twins bit for bit. A change that
/// means to move bits updates the pins and says why.
#[test]
fn fallback_conv_bits_are_pinned() {
    let pins: [(Kernels, u64); 2] =
        [(Kernels::Fallback16, 0x7bc7431787e1f5f8), (Kernels::Fallback8, 0x3fccb907609c71b5)];
    for (k, want) in pins {
        let mut rng = rng(57);
        let mut bufs: Vec<Vec<f32>> = Vec::new();
        // seed-fc, seed-fc-valid and the input gradients of 16-, 32- and
        // 8-wide planes: whole vectors per row at both widths, and not
        for (c_in, hw, c_out, pad) in
            [(3, 32, 20, 1), (20, 16, 20, 1), (20, 8, 20, 1), (3, 32, 20, 0), (20, 15, 20, 0), (20, 7, 20, 0)]
        {
            let s = Conv2d { c_in, h: hw, w: hw, c_out, kh: 3, kw: 3, stride: 1, pad };
            let n = 2;
            let (x, w, b) = (
                rand_vec(&mut rng, n * s.in_len()),
                rand_vec(&mut rng, s.weight_len()),
                rand_vec(&mut rng, c_out),
            );
            let dy = rand_vec(&mut rng, n * s.out_len());
            bufs.extend(forward_backward(k, ConvPath::Direct, &s, n, &x, &w, &b, &dy));
        }
        let got = bits_hash(&bufs.iter().map(|b| &b[..]).collect::<Vec<_>>());
        eprintln!("{k}: {got:#018x}");
        assert_eq!(got, want, "{k}: the conv bits moved ({got:#018x}, pinned {want:#018x})");
    }
}
