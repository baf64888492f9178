//! The loss sums reported beside the loss: the blog's seed error, the count
//! of correct predictions, and numerical safety of cross-entropy.

mod common;

use common::*;
use kernel::{reference, softmax_loss_backward, softmax_loss_forward, Loss, LossSums};

/// Index of the largest value, first on ties, computed independently.
fn argmax64(z: &[f64]) -> usize {
    (0..z.len()).fold(0, |best, i| if z[i] > z[best] { i } else { best })
}

#[test]
fn seed_error_and_correct_match_reference() {
    let mut rng = rng(21);
    let n = 7;
    for loss in [Loss::CrossEntropy, Loss::SquaredError] {
        for k in [2usize, 5, 10] {
            let z: Vec<f32> = rand_vec(&mut rng, n * k).iter().map(|v| 3.0 * v).collect();
            // even rows are labelled with their argmax, odd rows with another class
            let labels: Vec<u32> = z
                .chunks_exact(k)
                .enumerate()
                .map(|(i, zi)| {
                    let best = argmax64(&to_f64(zi));
                    (if i % 2 == 0 { best } else { (best + 1 + i % (k - 1)) % k }) as u32
                })
                .collect();
            let mut probs = vec![f32::NAN; n * k];
            let sums = softmax_loss_forward(loss, k, n, &z, &labels, &mut probs);

            let mut want_seed = 0.0;
            let mut want_loss = 0.0;
            let mut want_ce = 0.0;
            let mut want_correct = 0;
            for (zi, &l) in z.chunks_exact(k).zip(&labels) {
                let zi = to_f64(zi);
                let l = l as usize;
                // the seed error from its definition: sum_k (p_k - onehot_k)^2
                let p = reference::softmax(&zi);
                let by_hand: f64 =
                    p.iter().enumerate().map(|(j, pj)| (pj - if j == l { 1.0 } else { 0.0 }).powi(2)).sum();
                assert!((by_hand - reference::seed_error(&zi, l)).abs() < 1e-12);
                want_seed += by_hand;
                want_loss += reference::softmax_loss(loss, &zi, l);
                want_ce += reference::softmax_loss(Loss::CrossEntropy, &zi, l);
                want_correct += usize::from(argmax64(&zi) == l);
            }
            let what = format!("{loss:?} k={k}");
            assert_eq!(want_correct, n.div_ceil(2), "{what}: test setup");
            assert_eq!(sums.correct, want_correct, "{what}: correct");
            assert!(
                (sums.seed_error - want_seed).abs() < 1e-5 * want_seed.max(1.0),
                "{what}: seed_error {} vs {want_seed}",
                sums.seed_error
            );
            assert!(
                (sums.loss - want_loss).abs() < 1e-5 * want_loss.max(1.0),
                "{what}: loss {} vs {want_loss}",
                sums.loss
            );
            assert!(
                (sums.cross_entropy - want_ce).abs() < 1e-5 * want_ce.max(1.0),
                "{what}: cross_entropy {} vs {want_ce}",
                sums.cross_entropy
            );
            if loss == Loss::SquaredError {
                assert!(
                    (sums.loss - 0.5 * sums.seed_error).abs() < 1e-12,
                    "{what}: loss is half the seed error"
                );
            }
        }
    }
}

#[test]
fn correct_counts_argmax_with_first_on_ties() {
    assert_eq!(kernel::argmax(&[1.0, 3.0, 3.0, -2.0]), 1);
    assert_eq!(kernel::argmax(&[5.0]), 0);
    assert_eq!(kernel::argmax(&[-1.0, -0.5, -3.0]), 1);
    let z = [2.0f32, 2.0, 0.0, 1.0, 1.0, 0.0, 1.0, 4.0, 4.0];
    let mut probs = [0.0; 9];
    let count = |labels: &[u32], probs: &mut [f32]| {
        softmax_loss_forward(Loss::CrossEntropy, 3, 3, &z, labels, probs).correct
    };
    assert_eq!(count(&[0, 0, 1], &mut probs), 3);
    assert_eq!(count(&[1, 0, 2], &mut probs), 1);
    assert_eq!(count(&[2, 1, 0], &mut probs), 0);
}

#[test]
fn cross_entropy_is_finite_for_huge_logits() {
    // rows: confident and right, confident and wrong (twice), k = 2 and 5
    let z2 = [1000.0f32, -1000.0, 1000.0, -1000.0, -1000.0, 1000.0];
    let l2 = [0u32, 1, 0];
    let mut probs = [f32::NAN; 6];
    let ce = softmax_loss_forward(Loss::CrossEntropy, 2, 3, &z2, &l2, &mut probs);
    assert!(probs.iter().all(|p| p.is_finite()), "probs {probs:?}");
    assert!(ce.loss.is_finite(), "loss {}", ce.loss);
    assert!((ce.loss - 4000.0).abs() < 1e-6 * 4000.0, "loss {} want 4000", ce.loss);
    assert!((ce.seed_error - 4.0).abs() < 1e-9, "seed error {}", ce.seed_error);
    assert_eq!(ce.correct, 1);
    let mut dz = [f32::NAN; 6];
    softmax_loss_backward(Loss::CrossEntropy, 2, 3, &probs, &l2, 1.0, &mut dz);
    assert_eq!(dz, [0.0, 0.0, 1.0, -1.0, -1.0, 1.0]);

    let z5 = [1000.0f32, -1000.0, 0.0, 500.0, -1000.0];
    let mut probs = [f32::NAN; 5];
    let ce = softmax_loss_forward(Loss::CrossEntropy, 5, 1, &z5, &[1], &mut probs);
    assert!(probs.iter().all(|p| p.is_finite()));
    assert!((ce.loss - 2000.0).abs() < 1e-6 * 2000.0, "loss {}", ce.loss);
    let se = softmax_loss_forward(Loss::SquaredError, 5, 1, &z5, &[1], &mut probs);
    assert!((se.loss - 1.0).abs() < 1e-9 && (se.seed_error - 2.0).abs() < 1e-9, "{se:?}");
    let mut dz = [f32::NAN; 5];
    softmax_loss_backward(Loss::SquaredError, 5, 1, &probs, &[1], 0.5, &mut dz);
    assert!(dz.iter().all(|d| d.is_finite()), "{dz:?}");
}

#[test]
fn loss_sums_add() {
    let mut a = LossSums { loss: 1.5, cross_entropy: 1.0, seed_error: 0.25, correct: 3 };
    a.add(&LossSums { loss: 2.0, cross_entropy: 0.5, seed_error: 0.5, correct: 4 });
    assert_eq!(a, LossSums { loss: 3.5, cross_entropy: 1.5, seed_error: 0.75, correct: 7 });
}

#[test]
#[should_panic(expected = "out of range")]
fn label_out_of_range_panics() {
    let mut probs = [0.0; 3];
    softmax_loss_forward(Loss::CrossEntropy, 3, 1, &[0.0, 1.0, 2.0], &[3], &mut probs);
}

/// The original engine's output-layer weight delta: the last class's term
/// of the Jacobian product, `e_last * p_j * (delta_j,last - p_last)`.
#[test]
fn seed_quirk_weight_delta_keeps_the_last_class_term() {
    use kernel::seed_quirk_weight_delta;
    // Three classes, two rows, labels 0 and 2.
    let z = [0.3f32, -1.2, 0.8, 2.0, 0.1, -0.5];
    let labels = [0u32, 2];
    let mut probs = [0.0f32; 6];
    softmax_loss_forward(Loss::SeedSquaredError, 3, 2, &z, &labels, &mut probs);
    let mut delta = [f32::NAN; 6];
    seed_quirk_weight_delta(3, 2, &probs, &labels, 0.5, &mut delta);
    for (i, &label) in labels.iter().enumerate() {
        let zi: Vec<f64> = z[i * 3..i * 3 + 3].iter().map(|&v| v as f64).collect();
        let p = reference::softmax(&zi);
        let e_last = p[2] - if label == 2 { 1.0 } else { 0.0 };
        for j in 0..3 {
            let want = 0.5 * e_last * p[j] * (if j == 2 { 1.0 } else { 0.0 } - p[2]);
            let got = delta[i * 3 + j] as f64;
            assert!((got - want).abs() < 1e-6, "row {i} class {j}: {got} vs {want}");
        }
    }
    // The gradient passed down is still the full product, and differs.
    let mut full = [0.0f32; 6];
    softmax_loss_backward(Loss::SeedSquaredError, 3, 2, &probs, &labels, 0.5, &mut full);
    let mut plain = [0.0f32; 6];
    softmax_loss_backward(Loss::SquaredError, 3, 2, &probs, &labels, 0.5, &mut plain);
    assert_eq!(full, plain);
    assert!(full.iter().zip(&delta).any(|(a, b)| (a - b).abs() > 1e-3), "{full:?} {delta:?}");

    // Two classes: exactly half the true gradient, up to rounding.
    let z2 = [0.7f32, -0.4, -1.5, 0.9];
    let l2 = [1u32, 0];
    let mut p2 = [0.0f32; 4];
    softmax_loss_forward(Loss::SeedSquaredError, 2, 2, &z2, &l2, &mut p2);
    let (mut d2, mut g2) = ([0.0f32; 4], [0.0f32; 4]);
    seed_quirk_weight_delta(2, 2, &p2, &l2, 1.0, &mut d2);
    softmax_loss_backward(Loss::SquaredError, 2, 2, &p2, &l2, 1.0, &mut g2);
    for (d, g) in d2.iter().zip(&g2) {
        assert!((d - 0.5 * g).abs() < 1e-7, "{d2:?} vs half of {g2:?}");
    }
    assert!(g2.iter().all(|g| g.abs() > 1e-3));
}
