//! Evaluation: the loss sums of forward passes over a split, in batches,
//! each rank of a job computing a share of the batches; and the fixed
//! sample of training images the blog's error is measured on.

use graph::{Loss, LossSums, Plan};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::team::Team;
use crate::data::augment::fill_batch;
use crate::data::{Dataset, Normalizer};

/// The inputs and labels of one batch, allocated once for the largest
/// batch a run makes.
pub struct BatchBuffers {
    x: Vec<f32>,
    y: Vec<u32>,
}

impl BatchBuffers {
    pub fn new(images: usize, image_len: usize) -> Self {
        BatchBuffers { x: vec![0.0; images * image_len], y: vec![0; images] }
    }

    /// The inputs and labels of the first `images` images.
    pub fn take(&mut self, images: usize, image_len: usize) -> (&mut [f32], &mut [u32]) {
        (&mut self.x[..images * image_len], &mut self.y[..images])
    }
}

/// Mean cross-entropy and accuracy over a whole split, in batches.
pub fn evaluate(
    plan: &mut Plan,
    ds: &Dataset,
    norm: &Normalizer,
    batch: usize,
    buffers: &mut BatchBuffers,
    team: &Team,
) -> (f64, f64) {
    let all: Vec<usize> = (0..ds.len()).collect();
    let sums = evaluate_on(plan, ds, &all, norm, batch, buffers, team);
    let n = ds.len() as f64;
    (sums.cross_entropy / n, sums.correct as f64 / n)
}

/// Loss sums of a forward pass over the images `idx` of `ds` (no
/// augmentation), in batches of `batch` taken in the order of `idx`, added
/// in that order. In a job each rank computes a share of the batches.
pub fn evaluate_on(
    plan: &mut Plan,
    ds: &Dataset,
    idx: &[usize],
    norm: &Normalizer,
    batch: usize,
    buffers: &mut BatchBuffers,
    team: &Team,
) -> LossSums {
    let chunks: Vec<&[usize]> = idx.chunks(batch).collect();
    let mut per_batch = vec![LossSums::default(); chunks.len()];
    for b in team.batches(chunks.len()) {
        let idx = chunks[b];
        let (xs, ys) = buffers.take(idx.len(), ds.image_len());
        fill_batch(ds, idx, norm, None, 0, 0, xs);
        for (label, &i) in ys.iter_mut().zip(idx) {
            *label = ds.labels[i];
        }
        per_batch[b] = plan.evaluate(xs, ys, Loss::CrossEntropy);
    }
    team.gather_batches(&mut per_batch);
    let mut sums = LossSums::default();
    for s in &per_batch {
        sums.add(s);
    }
    sums
}

/// Images in the sample the blog's error is measured on (`sample_seed_error`).
pub const ERROR_SAMPLE: usize = 1000;

/// The training images `sample_seed_error` is measured on after every
/// epoch: min(1000, n) of them, drawn without replacement once from the
/// run's seed (a stream of its own, apart from the epochs' shuffles), in
/// index order.
pub fn error_sample(n: usize, seed: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, u64::MAX));
    let mut idx = rand::seq::index::sample(&mut rng, n, n.min(ERROR_SAMPLE)).into_vec();
    idx.sort_unstable();
    idx
}

/// A well-mixed 64-bit seed from two numbers (splitmix64's finaliser).
pub fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_sample_is_fixed_by_the_seed_and_covers_small_sets() {
        assert_eq!(error_sample(300, 1), (0..300).collect::<Vec<_>>());
        let a = error_sample(10_000, 1);
        assert_eq!(a.len(), ERROR_SAMPLE);
        assert!(
            a.windows(2).all(|w| w[0] < w[1]) && *a.last().unwrap() < 10_000,
            "sorted, distinct, in range"
        );
        assert_eq!(a, error_sample(10_000, 1));
        assert_ne!(a, error_sample(10_000, 2));
        // Not simply the first images.
        assert!(*a.last().unwrap() > 9_000 && a[0] < 100, "{:?}..{:?}", &a[..3], &a[a.len() - 3..]);
    }
}
