//! Deterministic reduction of per-lane partial sums.
//!
//! Each worker lane accumulates parameter gradients into its own buffer.
//! Summing those buffers in lane order, element by element, gives the same
//! bits whatever the number of threads; the work is split over elements,
//! never over lanes.

use rayon::prelude::*;

/// Elements per parallel task: large enough to amortise rayon's fork/join,
/// small enough to balance two cores on ~10^5 parameters.
const SPAN: usize = 8192;

/// `out[i] = lane(0)[i] + lane(1)[i] + ... + lane(lanes-1)[i]`, summed in
/// that order. Every lane must be at least `out.len()` long; `lanes == 0`
/// writes zeros.
pub fn sum_in_order<'a, F>(out: &mut [f32], lanes: usize, lane: F)
where
    F: Fn(usize) -> &'a [f32] + Sync,
{
    reduce(out, 0..lanes, false, lane);
}

/// `out[i] = ((out[i] + lane(a)[i]) + lane(a+1)[i]) + ... + lane(b-1)[i]`
/// for `lanes = a..b`: continues, in lane order, a sum that lanes before
/// `a` began. Whoever sums lanes `0..a` and then calls this gets the bits of
/// one [`sum_in_order`] over `0..b`; this is how the ranks of a job, each
/// holding a run of lanes, pass one sum along (trainer's `team`).
pub fn add_in_order<'a, F>(out: &mut [f32], lanes: std::ops::Range<usize>, lane: F)
where
    F: Fn(usize) -> &'a [f32] + Sync,
{
    reduce(out, lanes, true, lane);
}

fn reduce<'a, F>(out: &mut [f32], lanes: std::ops::Range<usize>, onto: bool, lane: F)
where
    F: Fn(usize) -> &'a [f32] + Sync,
{
    out.par_chunks_mut(SPAN).enumerate().for_each(|(c, dst)| {
        let start = c * SPAN;
        let range = start..start + dst.len();
        let mut rest = lanes.clone();
        if !onto {
            match rest.next() {
                Some(first) => dst.copy_from_slice(&lane(first)[range.clone()]),
                None => return dst.fill(0.0),
            }
        }
        for l in rest {
            for (d, s) in dst.iter_mut().zip(&lane(l)[range.clone()]) {
                *d += s;
            }
        }
    });
}
