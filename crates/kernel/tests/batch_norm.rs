//! Batch normalisation: the kernels against the naive f64 reference, its
//! gradients against f64 finite differences, and its running statistics
//! against a direct computation. The batch is split into two "lanes" whose
//! partial sums are added, as the executor does. The kernels are one
//! source compiled for each ISA's vector width: every test runs at every
//! ISA this CPU has, and the bits must be the same at all of them.

mod common;

use common::{central_diff, check_grad, dot64, isas, rand_vec, rng, to_f64};
use kernel::reference::batch_norm_train;
use kernel::*;

const BN: BatchNorm = BatchNorm { c: 3, hw: 5, eps: 1e-5, momentum: 0.1 };
const N: usize = 6;
/// The images of the two lanes.
const LANES: [std::ops::Range<usize>; 2] = [0..4, 4..6];

fn images(x: &[f64]) -> Vec<Vec<f64>> {
    x.chunks(BN.len()).map(|v| v.to_vec()).collect()
}

/// The whole batch's sums from the lanes' partials, added in lane order.
fn met(bn: &BatchNorm, mut partial: impl FnMut(std::ops::Range<usize>, &mut [f64])) -> Vec<f64> {
    let mut total = vec![0.0; 2 * bn.c];
    for lane in LANES {
        let mut part = vec![0.0; 2 * bn.c];
        partial(lane, &mut part);
        total.iter_mut().zip(&part).for_each(|(t, p)| *t += p);
    }
    total
}

/// Training-mode forward of the whole batch: the outputs and the statistics.
fn forward(
    isa: Isa,
    bn: &BatchNorm,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    running: &mut [f32],
) -> (Vec<f32>, Vec<f32>) {
    let len = bn.len();
    let moments = met(bn, |l, out| batch_norm_moments(isa, bn, l.len(), &x[l.start * len..], out));
    let mut stats = vec![0.0; 2 * bn.c];
    batch_norm_stats(bn, N * bn.hw, &moments, &mut stats, running);
    let mut y = vec![0.0; N * len];
    for l in LANES {
        let r = l.start * len..l.end * len;
        batch_norm_forward(isa, bn, l.len(), &x[r.clone()], &stats, gamma, beta, &mut y[r]);
    }
    (y, stats)
}

/// The backward pass of the whole batch: `dx`, the weight and the bias
/// gradients.
fn backward(isa: Isa, bn: &BatchNorm, x: &[f32], dy: &[f32], stats: &[f32], gamma: &[f32]) -> [Vec<f32>; 3] {
    let len = bn.len();
    let (mut dw, mut db) = (vec![0.0f32; bn.c], vec![0.0f32; bn.c]);
    let mut first = true;
    let totals = met(bn, |l, out| {
        let rg = l.start * len..l.end * len;
        batch_norm_grad_sums(isa, bn, l.len(), &x[rg.clone()], &dy[rg], stats, out);
        batch_norm_param_grads(bn, out, &mut dw, &mut db, !first);
        first = false;
    });
    let mut dx = vec![0.0f32; N * len];
    for l in LANES {
        let rg = l.start * len..l.end * len;
        let (xs, dys) = (&x[rg.clone()], &dy[rg.clone()]);
        batch_norm_backward(isa, bn, l.len(), N * bn.hw, xs, dys, stats, gamma, &totals, &mut dx[rg]);
    }
    [dx, dw, db]
}

#[test]
fn forward_matches_the_reference_with_batch_statistics() {
    let mut r = rng(1);
    // An offset and a scale per value, so the mean and variance matter.
    let x: Vec<f32> = rand_vec(&mut r, N * BN.len()).iter().map(|v| 3.0 + 2.0 * v).collect();
    let (gamma, beta) = (rand_vec(&mut r, BN.c), rand_vec(&mut r, BN.c));
    let want: Vec<f64> =
        batch_norm_train(BN.c, BN.hw, BN.eps as f64, &images(&to_f64(&x)), &to_f64(&gamma), &to_f64(&beta))
            .concat();
    for isa in isas() {
        let mut running = vec![0.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        let (y, _) = forward(isa, &BN, &x, &gamma, &beta, &mut running);
        // A few f32 roundings of O(|xhat| |gamma| + |beta|) values, and the
        // statistics rounded once to f32: far inside 1e-5.
        common::assert_close(&format!("batch norm forward {isa}"), &y, &want, 1e-5);
    }
}

#[test]
fn running_statistics_follow_pytorch() {
    let mut r = rng(2);
    let mut running = vec![0.5, -1.0, 2.0, 1.0, 3.0, 0.25];
    let before = running.clone();
    let x = rand_vec(&mut r, N * BN.len());
    let (gamma, beta) = (vec![1.0; BN.c], vec![0.0; BN.c]);
    let (_, stats) = forward(Isa::Portable, &BN, &x, &gamma, &beta, &mut running);
    let count = (N * BN.hw) as f64;
    for ch in 0..BN.c {
        let values: Vec<f64> =
            (0..N).flat_map(|i| x[(i * BN.c + ch) * BN.hw..][..BN.hw].iter().map(|&v| v as f64)).collect();
        let mean = values.iter().sum::<f64>() / count;
        let ss = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>();
        let (biased, unbiased) = (ss / count, ss / (count - 1.0));
        let close = |what: &str, got: f32, want: f64| {
            assert!(
                (got as f64 - want).abs() <= 1e-6 * want.abs().max(1.0),
                "channel {ch} {what}: {got} vs {want}"
            );
        };
        close("mean", stats[ch], mean);
        close("1/std", stats[BN.c + ch], 1.0 / (biased + BN.eps as f64).sqrt());
        close("running mean", running[ch], 0.9 * before[ch] as f64 + 0.1 * mean);
        close("running var", running[BN.c + ch], 0.9 * before[BN.c + ch] as f64 + 0.1 * unbiased);
    }
    // Evaluation's statistics come from the running ones.
    let mut eval = vec![0.0; 2 * BN.c];
    batch_norm_running_stats(&BN, &running, &mut eval);
    assert_eq!(eval[..BN.c], running[..BN.c]);
    assert_eq!(eval[BN.c], (1.0 / (running[BN.c] as f64 + 1e-5f32 as f64).sqrt()) as f32);
}

#[test]
fn backward_matches_finite_differences_of_the_batch() {
    let mut r = rng(3);
    let len = BN.len();
    let x: Vec<f32> = rand_vec(&mut r, N * len).iter().map(|v| 1.0 + 2.0 * v).collect();
    let (gamma, beta) = (rand_vec(&mut r, BN.c), rand_vec(&mut r, BN.c));
    // The loss sum(dy * y): its gradient with respect to y is dy.
    let dy = rand_vec(&mut r, N * len);
    let (x64, g64, b64, dy64) = (to_f64(&x), to_f64(&gamma), to_f64(&beta), to_f64(&dy));
    let loss = |x: &[f64], g: &[f64], b: &[f64]| {
        dot64(&batch_norm_train(BN.c, BN.hw, BN.eps as f64, &images(x), g, b).concat(), &dy64)
    };
    let want = [
        central_diff(&x64, |x| loss(x, &g64, &b64)),
        central_diff(&g64, |g| loss(&x64, g, &b64)),
        central_diff(&b64, |b| loss(&x64, &g64, b)),
    ];
    for isa in isas() {
        let mut running = vec![0.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        let (_, stats) = forward(isa, &BN, &x, &gamma, &beta, &mut running);
        let [dx, dw, db] = backward(isa, &BN, &x, &dy, &stats, &gamma);
        check_grad(&format!("batch norm dx {isa}"), &dx, &want[0]);
        check_grad(&format!("batch norm dweight {isa}"), &dw, &want[1]);
        check_grad(&format!("batch norm dbias {isa}"), &db, &want[2]);
    }
}

/// The kernels are compiled for each ISA's vector width but do the same
/// operations in the same order: the same bits everywhere, on planes long
/// enough for whole vectors and a remainder.
#[test]
fn every_isa_gives_the_same_bits() {
    let bn = BatchNorm { c: 4, hw: 67, eps: 1e-5, momentum: 0.1 };
    let mut r = rng(4);
    let len = bn.len();
    let x: Vec<f32> = rand_vec(&mut r, N * len).iter().map(|v| 0.5 + 3.0 * v).collect();
    let (gamma, beta, dy) = (rand_vec(&mut r, bn.c), rand_vec(&mut r, bn.c), rand_vec(&mut r, N * len));
    let run = |isa: Isa| {
        let mut running = vec![0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0];
        let (y, stats) = forward(isa, &bn, &x, &gamma, &beta, &mut running);
        let [dx, dw, db] = backward(isa, &bn, &x, &dy, &stats, &gamma);
        [y, stats, running, dx, dw, db].map(|v| v.iter().map(|f| f.to_bits()).collect::<Vec<u32>>())
    };
    let want = run(Isa::Portable);
    for isa in isas() {
        assert_eq!(run(isa), want, "{isa}: batch norm's bits differ from portable's");
    }
}
