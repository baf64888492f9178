//! [`Fallback<N>`]: the [`Vector`] of plain arrays, for any CPU.
//!
//! It exists for the tests: `Fallback<16>` runs the AVX-512 tiling and
//! `Fallback<8>` the AVX2 one on a CPU without those extensions, and both
//! give the hardware versions' bits (same lanes, same fused multiply-add,
//! same addition tree in [`Vector::hsum`]), so a test can compare them bit
//! for bit. It is slow (`f32::mul_add` may be a library call) and is never
//! what [`crate::isa::Isa::Portable`] runs.

use super::{Tiles, Vector, TILES_16_REGS, TILES_32_REGS};

/// `N` lanes in an array. Its tiles are those of the hardware vector of the
/// same width: 16 lanes tile like AVX-512, fewer like AVX2.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fallback<const N: usize>(pub [f32; N]);

#[inline(never)]
fn outline_fallback<R>(f: impl FnOnce() -> R) -> R {
    f()
}

// SAFETY: every access below is lane by lane and touches only the lanes
// its mask names; there is nothing the CPU could lack.
unsafe impl<const N: usize> Vector for Fallback<N> {
    const LANES: usize = {
        assert!(N.is_power_of_two() && N <= super::MAX_LANES);
        N
    };
    const TILES: Tiles = if N >= 16 { TILES_32_REGS } else { TILES_16_REGS };
    type Mask = [bool; N];
    type Index = [u32; N];

    fn supported() -> bool {
        true
    }

    #[inline(always)]
    unsafe fn outline<R>(f: impl FnOnce() -> R) -> R {
        outline_fallback(f)
    }

    #[inline(always)]
    unsafe fn zero() -> Self {
        Fallback([0.0; N])
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        Fallback([v; N])
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Fallback(p.cast::<[f32; N]>().read_unaligned())
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self) {
        p.cast::<[f32; N]>().write_unaligned(v.0)
    }
    #[inline(always)]
    unsafe fn mask_range(from: usize, to: usize) -> [bool; N] {
        std::array::from_fn(|l| from <= l && l < to)
    }
    #[inline(always)]
    unsafe fn maskz_load(m: [bool; N], p: *const f32) -> Self {
        Self::mask_load_or(Self::zero(), m, p)
    }
    #[inline(always)]
    unsafe fn mask_load_or(fill: Self, m: [bool; N], p: *const f32) -> Self {
        let mut v = fill.0;
        for (l, (v, keep)) in v.iter_mut().zip(m).enumerate() {
            if keep {
                *v = p.wrapping_add(l).read();
            }
        }
        Fallback(v)
    }
    #[inline(always)]
    unsafe fn mask_store(p: *mut f32, m: [bool; N], v: Self) {
        for (l, (v, keep)) in v.0.into_iter().zip(m).enumerate() {
            if keep {
                p.wrapping_add(l).write(v);
            }
        }
    }
    #[inline(always)]
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
        Fallback(std::array::from_fn(|l| a.0[l].mul_add(b.0[l], c.0[l])))
    }
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        Fallback(std::array::from_fn(|l| a.0[l] + b.0[l]))
    }
    #[inline(always)]
    unsafe fn hsum(v: Self) -> f32 {
        let mut v = v.0;
        let mut half = N / 2;
        while half > 0 {
            for l in 0..half {
                v[l] += v[l + half];
            }
            half /= 2;
        }
        v[0]
    }

    #[inline(always)]
    unsafe fn even(lo: Self, hi: Self) -> Self {
        Fallback(std::array::from_fn(|j| if 2 * j < N { lo.0[2 * j] } else { hi.0[2 * j - N] }))
    }
    #[inline(always)]
    unsafe fn odd(lo: Self, hi: Self) -> Self {
        Fallback(std::array::from_fn(|j| if 2 * j + 1 < N { lo.0[2 * j + 1] } else { hi.0[2 * j + 1 - N] }))
    }
    #[inline(always)]
    unsafe fn index_splat(i: u32) -> [u32; N] {
        [i; N]
    }
    #[inline(always)]
    unsafe fn index_even() -> [u32; N] {
        std::array::from_fn(|j| 2 * j as u32)
    }
    #[inline(always)]
    unsafe fn index_add(a: [u32; N], b: [u32; N]) -> [u32; N] {
        std::array::from_fn(|l| a[l].wrapping_add(b[l]))
    }
    #[inline(always)]
    unsafe fn keep_greater(v: Self, i: [u32; N], bv: &mut Self, bi: &mut [u32; N]) {
        for (((v, i), bv), bi) in v.0.into_iter().zip(i).zip(&mut bv.0).zip(bi) {
            if v > *bv {
                (*bv, *bi) = (v, i);
            }
        }
    }
    #[inline(always)]
    unsafe fn store_index(p: *mut u32, i: [u32; N]) {
        p.cast::<[u32; N]>().write_unaligned(i)
    }
    #[inline(always)]
    unsafe fn mask_store_index(p: *mut u32, m: [bool; N], i: [u32; N]) {
        for (l, (i, keep)) in i.into_iter().zip(m).enumerate() {
            if keep {
                p.wrapping_add(l).write(i);
            }
        }
    }
}
