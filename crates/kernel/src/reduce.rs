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
    out.par_chunks_mut(SPAN).enumerate().for_each(|(c, dst)| {
        let start = c * SPAN;
        let range = start..start + dst.len();
        if lanes == 0 {
            dst.fill(0.0);
            return;
        }
        dst.copy_from_slice(&lane(0)[range.clone()]);
        for l in 1..lanes {
            for (d, s) in dst.iter_mut().zip(&lane(l)[range.clone()]) {
                *d += s;
            }
        }
    });
}
