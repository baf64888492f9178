//! Building a batch of normalised input images, with seeded on-the-fly
//! augmentation: random crop with zero padding, and horizontal flip.

use crate::data::{Dataset, Normalizer};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// Augmentation settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Augment {
    /// Random crop: pad every side by `pad` pixels, then cut a window of the
    /// original size at a uniformly random offset (0 = no crop).
    pub pad: usize,
    /// Mirror left-right with probability 1/2.
    pub flip: bool,
}

impl Default for Augment {
    /// The training default: pad 4, flip.
    fn default() -> Self {
        Augment { pad: 4, flip: true }
    }
}

/// SplitMix64's finaliser: a bijection on u64 with good avalanche.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The random generator of image `index` in `epoch` of a run seeded `seed`.
/// For a fixed seed and epoch, distinct indices get distinct seeds.
fn image_rng(seed: u64, epoch: u64, index: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(splitmix64(splitmix64(splitmix64(seed) ^ epoch) ^ index as u64))
}

/// The random choices for one image: crop offsets `dy, dx` in `0..=2*pad`
/// and whether to mirror. Both offsets are always drawn, then the flip, so
/// the stream does not depend on `flip` being enabled.
pub fn choices(aug: Augment, seed: u64, epoch: u64, index: usize) -> (usize, usize, bool) {
    let mut rng = image_rng(seed, epoch, index);
    let dy = rng.random_range(0..=2 * aug.pad);
    let dx = rng.random_range(0..=2 * aug.pad);
    let flip = rng.random_bool(0.5);
    (dy, dx, aug.flip && flip)
}

/// Writes images `indices` of `ds`, normalised by `norm`, into `out`
/// (`indices.len() * ds.image_len()` floats, NCHW). Runs in parallel over
/// images on the current rayon pool and allocates nothing.
///
/// With `augment`, each image is randomly cropped and flipped. The choices for
/// the image at `indices[j]` depend only on `(seed, epoch, indices[j])`
/// (a ChaCha8 generator per image seeded from a SplitMix64 mix of the three),
/// so the batch is identical whatever the thread count or batch composition.
///
/// Crop with padding `p`: offsets `dy, dx` uniform in `0..=2p`; output pixel
/// `(y, x)` is input pixel `(y + dy - p, x + dx - p)`, and where that falls
/// outside the image the output is `0.0`. Zero is the normalised value of the
/// channel mean (for `Normalizer::fit`, the training set's mean colour), so the
/// margin is "average colour", not black; with `Normalizer::identity` it is
/// black. Flip, applied after the crop: output `(y, x)` takes the cropped
/// pixel `(y, w - 1 - x)`.
///
/// Panics if `out` has the wrong length, an index is out of range, or `norm`
/// has a different number of channels than `ds`.
pub fn fill_batch(
    ds: &Dataset,
    indices: &[usize],
    norm: &Normalizer,
    augment: Option<Augment>,
    seed: u64,
    epoch: u64,
    out: &mut [f32],
) {
    let len = ds.image_len();
    let [c, h, w] = ds.shape;
    assert_eq!(out.len(), indices.len() * len, "fill_batch: output length != indices.len() * image_len");
    assert_eq!(norm.mean.len(), c, "fill_batch: normaliser channels != image channels");
    if len == 0 {
        return;
    }
    out.par_chunks_mut(len).zip(indices.par_iter()).for_each(|(dst, &i)| {
        let src = ds.image(i);
        let Some(aug) = augment else {
            norm.apply(src, dst);
            return;
        };
        let (dy, dx, flip) = choices(aug, seed, epoch, i);
        let p = aug.pad;
        for ch in 0..c {
            let plane_in = &src[ch * h * w..(ch + 1) * h * w];
            let plane_out = &mut dst[ch * h * w..(ch + 1) * h * w];
            for (y, row_out) in plane_out.chunks_exact_mut(w).enumerate() {
                // Source row y + dy - p, if inside the image.
                let sy = (y + dy).checked_sub(p).filter(|&sy| sy < h);
                let Some(sy) = sy else {
                    row_out.fill(0.0);
                    continue;
                };
                let row_in = &plane_in[sy * w..(sy + 1) * w];
                for (x, o) in row_out.iter_mut().enumerate() {
                    let cx = if flip { w - 1 - x } else { x };
                    *o = match (cx + dx).checked_sub(p).filter(|&sx| sx < w) {
                        Some(sx) => norm.pixel(ch, row_in[sx]),
                        None => 0.0,
                    };
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dataset of `n` images of shape `[c, h, w]` with distinct, non-zero-ish pixel patterns.
    fn dataset(n: usize, c: usize, h: usize, w: usize) -> Dataset {
        let len = c * h * w;
        let images = (0..n * len).map(|k| ((k * 37 + k / len * 11) % 251) as u8 + 3).collect();
        Dataset { images, labels: vec![0; n], shape: [c, h, w], class_names: vec!["a".into()] }
    }

    fn norm() -> Normalizer {
        Normalizer { mean: vec![0.4, 0.5, 0.6], std: vec![0.2, 0.25, 0.3] }
    }

    fn run(
        ds: &Dataset,
        idx: &[usize],
        aug: Option<Augment>,
        seed: u64,
        epoch: u64,
        threads: usize,
    ) -> Vec<f32> {
        let mut out = vec![f32::NAN; idx.len() * ds.image_len()];
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| fill_batch(ds, idx, &norm(), aug, seed, epoch, &mut out));
        out
    }

    #[test]
    fn without_augment_equals_apply() {
        let ds = dataset(5, 3, 6, 7);
        let idx = [4, 0, 2, 2];
        let out = run(&ds, &idx, None, 1, 1, 2);
        let mut want = vec![0.0f32; ds.image_len()];
        for (j, &i) in idx.iter().enumerate() {
            norm().apply(ds.image(i), &mut want);
            assert_eq!(&out[j * ds.image_len()..(j + 1) * ds.image_len()], &want[..]);
        }
    }

    #[test]
    fn deterministic_and_thread_count_independent() {
        let ds = dataset(40, 3, 8, 8);
        let idx: Vec<usize> = (0..40).rev().collect();
        let aug = Some(Augment::default());
        let a = run(&ds, &idx, aug, 7, 3, 1);
        let b = run(&ds, &idx, aug, 7, 3, 2);
        let c = run(&ds, &idx, aug, 7, 3, 2);
        assert!(a.iter().all(|v| v.is_finite()));
        assert_eq!(a, b);
        assert_eq!(b, c);
        // An image's crop depends on its index, not on its position in the batch.
        let single = run(&ds, &[5], aug, 7, 3, 1);
        let pos = idx.iter().position(|&i| i == 5).unwrap();
        assert_eq!(&a[pos * 192..(pos + 1) * 192], &single[..]);
        // A different seed gives a different batch.
        assert_ne!(a, run(&ds, &idx, aug, 8, 3, 1));
    }

    #[test]
    fn epochs_give_different_crops() {
        let aug = Augment::default();
        let per_epoch: Vec<Vec<(usize, usize, bool)>> =
            (0..3).map(|e| (0..32).map(|i| choices(aug, 11, e, i)).collect()).collect();
        assert_ne!(per_epoch[0], per_epoch[1]);
        assert_ne!(per_epoch[1], per_epoch[2]);
        let ds = dataset(32, 3, 8, 8);
        let idx: Vec<usize> = (0..32).collect();
        assert_ne!(run(&ds, &idx, Some(aug), 11, 0, 2), run(&ds, &idx, Some(aug), 11, 1, 2));
    }

    #[test]
    fn choices_cover_the_range_and_flip_half_the_time() {
        let aug = Augment { pad: 2, flip: true };
        let mut seen = [[false; 5]; 2];
        let mut flips = 0;
        for i in 0..1000 {
            let (dy, dx, f) = choices(aug, 5, 0, i);
            assert!(dy <= 4 && dx <= 4);
            seen[0][dy] = true;
            seen[1][dx] = true;
            flips += f as usize;
        }
        assert!(seen.iter().flatten().all(|&s| s), "every offset 0..=2p occurs: {seen:?}");
        assert!((400..600).contains(&flips), "{flips} flips out of 1000");
        // flip disabled: never mirrors, same offsets.
        let no = Augment { pad: 2, flip: false };
        for i in 0..100 {
            let (dy, dx, f) = choices(no, 5, 0, i);
            let (dy2, dx2, _) = choices(aug, 5, 0, i);
            assert_eq!((dy, dx, f), (dy2, dx2, false));
        }
    }

    /// Checks every output pixel against the definition: shifted (and maybe
    /// mirrored) copy of the normalised input, zeros in the margin.
    #[test]
    fn output_is_a_shifted_mirrored_copy_with_zero_margin() {
        let (c, h, w) = (3, 5, 7);
        let ds = dataset(24, c, h, w);
        let aug = Augment { pad: 3, flip: true };
        let idx: Vec<usize> = (0..24).collect();
        let out = run(&ds, &idx, Some(aug), 99, 4, 2);
        let n = norm();
        let (mut flipped, mut straight, mut shifted, mut margins) = (0, 0, 0, 0);
        for (j, &i) in idx.iter().enumerate() {
            let (dy, dx, flip) = choices(aug, 99, 4, i);
            if flip {
                flipped += 1;
            } else {
                straight += 1;
            }
            if (dy, dx) != (3, 3) {
                shifted += 1;
            }
            let img = ds.image(i);
            let o = &out[j * c * h * w..(j + 1) * c * h * w];
            for ch in 0..c {
                for y in 0..h {
                    for x in 0..w {
                        let cx = if flip { w - 1 - x } else { x };
                        let sy = y as isize + dy as isize - 3;
                        let sx = cx as isize + dx as isize - 3;
                        let got = o[ch * h * w + y * w + x];
                        if sy < 0 || sy >= h as isize || sx < 0 || sx >= w as isize {
                            margins += 1;
                            assert_eq!(got, 0.0, "image {i} ch {ch} ({y},{x}) should be margin");
                        } else {
                            let v = img[ch * h * w + sy as usize * w + sx as usize];
                            assert_eq!(got, n.pixel(ch, v), "image {i} ch {ch} ({y},{x})");
                        }
                    }
                }
            }
        }
        assert!(flipped > 0 && straight > 0, "flipped {flipped}, straight {straight}");
        assert!(shifted > 0 && margins > 0);
    }

    /// A hand-worked case: 1x2x3 image, pad 1, checked against literal values.
    #[test]
    fn literal_crop_and_flip() {
        let ds = Dataset {
            images: vec![10, 20, 30, 40, 50, 60],
            labels: vec![0],
            shape: [1, 2, 3],
            class_names: vec![],
        };
        let aug = Augment { pad: 1, flip: true };
        // Find seeds giving (dy, dx) = (0, 2) without and with flip.
        let find =
            |want_flip: bool| (0..10_000u64).find(|&s| choices(aug, s, 0, 0) == (0, 2, want_flip)).unwrap();
        let id = Normalizer::identity(1);
        let v = |x: u8| f32::from(x) / 255.0;
        let mut out = [f32::NAN; 6];
        fill_batch(&ds, &[0], &id, Some(aug), find(false), 0, &mut out);
        // dy = 0: row 0 is margin, row 1 is input row 0; dx = 2: shifted left by 1.
        assert_eq!(out, [0.0, 0.0, 0.0, v(20), v(30), 0.0]);
        fill_batch(&ds, &[0], &id, Some(aug), find(true), 0, &mut out);
        assert_eq!(out, [0.0, 0.0, 0.0, 0.0, v(30), v(20)]);
    }

    #[test]
    fn pad_zero_without_flip_is_plain_normalisation() {
        let ds = dataset(6, 3, 4, 4);
        let idx = [0, 1, 2, 3, 4, 5];
        let plain = run(&ds, &idx, None, 0, 0, 2);
        let aug = run(&ds, &idx, Some(Augment { pad: 0, flip: false }), 3, 9, 2);
        assert_eq!(plain, aug);
    }
}
