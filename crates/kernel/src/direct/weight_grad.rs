//! The direct convolution's weight gradient (and the bias gradient, summed
//! while `dy` is spread to the padded width): see the parent module's docs.

use super::Corr;
use crate::simd::Vector;
use std::mem::MaybeUninit;

/// Copy one plane `src[ho, wo]` to `dst` with rows `wp` apart, zeros in
/// the `wp - wo` columns after each row and after the last row up to the
/// end of `dst` (at least `ho * wp` floats); return the plane's sum (the
/// bias gradient's share), taken in the same pass in a fixed order.
pub(super) unsafe fn spread_rows<V: Vector>(
    src: &[f32],
    ho: usize,
    wo: usize,
    wp: usize,
    dst: &mut [f32],
) -> f32 {
    assert!(src.len() == ho * wo && dst.len() >= ho * wp && wp >= wo);
    V::outline(
        #[inline(always)]
        || {
            let lanes = V::LANES;
            let zero = V::zero();
            let (body, tail) = dst.split_at_mut(ho * wp);
            for chunk in tail.chunks_mut(lanes) {
                // the mask covers exactly `chunk`
                V::mask_store(chunk.as_mut_ptr(), V::mask_first(chunk.len()), zero);
            }
            // Every row has the same vector steps: whole vectors of the row,
            // then its last part and the gap, then gap only. One running sum
            // per row (in a register: an array of sums indexed at run time
            // would live on the stack and chain every add through a store
            // and a load).
            let steps = wp.div_ceil(lanes);
            let mut sum = zero;
            for r in 0..ho {
                let (row, out) = (&src[r * wo..(r + 1) * wo], &mut body[r * wp..(r + 1) * wp]);
                let mut row_sum = zero;
                for k in 0..steps {
                    let x0 = k * lanes;
                    // every access stays inside `row` and `out`; whole
                    // vectors go without masks (see `pad_planes`)
                    let (src, dst) = (row.as_ptr().wrapping_add(x0), out.as_mut_ptr().wrapping_add(x0));
                    let v = if x0 + lanes <= wo {
                        V::load(src)
                    } else {
                        V::maskz_load(V::mask_first(wo.saturating_sub(x0)), src)
                    };
                    row_sum = V::add(row_sum, v);
                    if x0 + lanes <= wp {
                        V::store(dst, v);
                    } else {
                        V::store_lanes(dst, 0, wp - x0, v);
                    }
                }
                sum = V::add(sum, row_sum);
            }
            V::hsum(sum)
        },
    )
}

/// `dw[f, c, tap] (+)= sum over the n images and q of dyq[f][q] *
/// xp[c][q + off(tap)]`, for 3x3 kernels; `xps` holds n padded inputs,
/// `dyqs` n blocks of `co` spread gradients.
pub(super) unsafe fn weight_grad<V: Vector>(
    g: &Corr,
    n: usize,
    xps: &[f32],
    dyqs: &[f32],
    dw: &mut [f32],
    accumulate: bool,
) {
    let dyq_len = g.dyq_len();
    assert!(g.kh == 3 && g.kw == 3);
    assert!(xps.len() >= n * g.padded_len() && dyqs.len() >= n * g.co * dyq_len);
    assert!(dw.len() >= g.co * g.ci * 9);
    const { assert!(V::TILES.conv_dw_f <= 3 && (V::TILES.conv_dw_taps == 3 || V::TILES.conv_dw_taps == 9)) };
    let mut f = 0;
    while f < g.co {
        let fb = (g.co - f).min(V::TILES.conv_dw_f);
        for t0 in (0..9).step_by(V::TILES.conv_dw_taps) {
            // conv_dw_taps is a constant: the arms of the other width go
            match (fb, V::TILES.conv_dw_taps) {
                (3, 9) => weight_grad_tile::<V, 3, 9>(g, n, xps, dyqs, f, t0, dw, accumulate),
                (2, 9) => weight_grad_tile::<V, 2, 9>(g, n, xps, dyqs, f, t0, dw, accumulate),
                (_, 9) => weight_grad_tile::<V, 1, 9>(g, n, xps, dyqs, f, t0, dw, accumulate),
                (3, _) => weight_grad_tile::<V, 3, 3>(g, n, xps, dyqs, f, t0, dw, accumulate),
                (2, _) => weight_grad_tile::<V, 2, 3>(g, n, xps, dyqs, f, t0, dw, accumulate),
                (_, _) => weight_grad_tile::<V, 1, 3>(g, n, xps, dyqs, f, t0, dw, accumulate),
            }
        }
        f += fb;
    }
}

/// [`weight_grad`] for output planes `f0..f0 + FB` and taps `t0..t0 + TT`,
/// every input plane: `FB x TT` accumulators, each a per-lane partial sum
/// reduced at the end.
#[allow(clippy::too_many_arguments)]
unsafe fn weight_grad_tile<V: Vector, const FB: usize, const TT: usize>(
    g: &Corr,
    n: usize,
    xps: &[f32],
    dyqs: &[f32],
    f0: usize,
    t0: usize,
    dw: &mut [f32],
    accumulate: bool,
) {
    V::outline(
        #[inline(always)]
        || {
            // read once: a captured value is memory to the outlined body
            let add_onto = accumulate;
            let (plane, wp, blocks, dyq_len) = (g.plane(), g.wp, g.blocks(V::LANES), g.dyq_len());
            let all = [0, 1, 2, wp, wp + 1, wp + 2, 2 * wp, 2 * wp + 1, 2 * wp + 2];
            let offs: [usize; TT] = std::array::from_fn(|t| all[t0 + t]);
            for c in 0..g.ci {
                let mut sums = MaybeUninit::<[[f32; TT]; FB]>::uninit();
                let x = xps.as_ptr().add(c * plane);
                let dyq = dyqs.as_ptr().add(f0 * dyq_len);
                let strides = (g.padded_len(), g.co * dyq_len);
                weight_grad_images::<V, FB, TT>(&mut sums, n, strides, x, dyq, dyq_len, blocks, &offs);
                // SAFETY: `weight_grad_images` wrote the whole array.
                let sums = sums.assume_init_ref();
                for (j, sums_j) in sums.iter().enumerate() {
                    let row = &mut dw[((f0 + j) * g.ci + c) * 9 + t0..][..TT];
                    for (r, &sum) in row.iter_mut().zip(sums_j) {
                        *r = if add_onto { *r + sum } else { sum };
                    }
                }
            }
        },
    )
}

/// The images' part of [`weight_grad_tile`]: for each of the `n` images in
/// order (image `i` at `x + i * strides.0` and `dyq + i * strides.1`),
/// `acc[j][t] += dyq[j][q] * x[q + offs[t]]` over the `blocks` vector
/// blocks of `q`, from zero, in a local array that LLVM keeps in registers;
/// `sums[j][t]` is then `acc[j][t]`'s [`Vector::hsum`]. Zeroed and reduced
/// here, in registers: a `memset` before the call, or vector sums stored
/// and read back by a wider `hsum` load after it, stalled on the stores. One call for all the images: a call
/// per image cost more than its FMAs on small planes (8x8: 10 blocks).
#[allow(clippy::needless_range_loop, clippy::too_many_arguments)] // constant indices keep the sums in registers
unsafe fn weight_grad_images<V: Vector, const FB: usize, const TT: usize>(
    sums: &mut MaybeUninit<[[f32; TT]; FB]>,
    n: usize,
    strides: (usize, usize),
    x: *const f32,
    dyq: *const f32,
    dyq_len: usize,
    blocks: usize,
    offs: &[usize; TT],
) {
    V::outline(
        #[inline(always)]
        || {
            let mut acc = [[V::zero(); TT]; FB];
            for i in 0..n {
                let (x, dyq) = (x.add(i * strides.0), dyq.add(i * strides.1));
                for b in 0..blocks {
                    let q = b * V::LANES;
                    let mut d = [V::zero(); FB];
                    for j in 0..FB {
                        d[j] = V::load(dyq.add(j * dyq_len + q));
                    }
                    for t in 0..TT {
                        let v = V::load(x.add(q + offs[t]));
                        for j in 0..FB {
                            acc[j][t] = V::fma(v, d[j], acc[j][t]);
                        }
                    }
                }
            }
            // constant indices (no closure over `acc`, whose address would
            // then escape and keep every accumulator in memory in the loop)
            let mut out = [[0.0f32; TT]; FB];
            for j in 0..FB {
                for t in 0..TT {
                    out[j][t] = V::hsum(acc[j][t]);
                }
            }
            sums.write(out);
        },
    )
}
