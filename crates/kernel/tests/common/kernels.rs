//! The kernels under test: every ISA this CPU runs, and the SIMD kernels
//! instantiated on the portable vector type at 16 and 8 lanes, so that the
//! AVX-512 and AVX2 tilings run on any CPU.

use kernel::simd::{Fallback, Vector};
use kernel::{Conv2d, ConvPath, Dense, Isa, MaxPool2d};

/// The ISAs to test: every one this CPU runs, after checking
/// `GAPNET_REQUIRE_ISAS` ([`Isa::tested`]).
pub fn isas() -> Vec<Isa> {
    Isa::tested()
}

/// One set of kernels under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernels {
    /// The public kernels at an ISA.
    Isa(Isa),
    /// The SIMD kernels on `Fallback<16>` (AVX-512's lanes and tiles).
    Fallback16,
    /// The SIMD kernels on `Fallback<8>` (AVX2's lanes and tiles).
    Fallback8,
}

/// Every ISA of [`isas`], then the two fallback instantiations; prints
/// which, once per call.
pub fn kernel_sets(test: &str) -> Vec<Kernels> {
    let mut sets: Vec<Kernels> = isas().into_iter().map(Kernels::Isa).collect();
    sets.extend([Kernels::Fallback16, Kernels::Fallback8]);
    let names: Vec<String> = sets.iter().map(|k| k.to_string()).collect();
    eprintln!("{test}: kernels {}", names.join(", "));
    sets
}

impl std::fmt::Display for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kernels::Isa(isa) => write!(f, "{isa}"),
            Kernels::Fallback16 => f.write_str("fallback16"),
            Kernels::Fallback8 => f.write_str("fallback8"),
        }
    }
}

/// Run `$body` with `$V` the fallback vector type of `$k` (not an ISA).
macro_rules! with_fallback {
    ($k:expr, $V:ident => $body:expr) => {
        match $k {
            Kernels::Fallback16 => {
                type $V = Fallback<16>;
                $body
            }
            Kernels::Fallback8 => {
                type $V = Fallback<8>;
                $body
            }
            Kernels::Isa(_) => unreachable!(),
        }
    };
}

impl Kernels {
    /// The convolution paths these kernels have for `s`: at an ISA, the
    /// paths [`ConvPath::runs`] allows; on a fallback vector, the direct
    /// kernels for their shapes.
    pub fn conv_paths(self, s: &Conv2d) -> Vec<ConvPath> {
        match self {
            Kernels::Isa(isa) => {
                [ConvPath::Im2col, ConvPath::Direct].into_iter().filter(|p| p.runs(isa, s)).collect()
            }
            _ if s.direct_shape() => vec![ConvPath::Direct],
            _ => vec![],
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn conv_forward(
        self,
        path: ConvPath,
        s: &Conv2d,
        n: usize,
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        y: &mut [f32],
        scratch: &mut [f32],
    ) {
        match self {
            Kernels::Isa(isa) => kernel::conv2d_forward_via(isa, path, s, n, x, w, bias, y, scratch),
            // SAFETY: the fallback vectors run anywhere; `conv_paths` gave
            // Direct for a direct shape only.
            _ => with_fallback!(self, V => unsafe {
                assert!(path == ConvPath::Direct && s.direct_shape() && V::supported());
                kernel::direct::forward::<V>(s, n, x, w, bias, y, scratch)
            }),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn conv_backward(
        self,
        path: ConvPath,
        s: &Conv2d,
        n: usize,
        x: &[f32],
        w: &[f32],
        dy: &[f32],
        dx: Option<&mut [f32]>,
        dw: &mut [f32],
        db: Option<&mut [f32]>,
        scratch: &mut [f32],
        accumulate: bool,
    ) {
        match self {
            Kernels::Isa(isa) => {
                kernel::conv2d_backward_via(isa, path, s, n, x, w, dy, dx, dw, db, scratch, accumulate)
            }
            // SAFETY: as in `conv_forward`; n >= 1 (the direct kernels'
            // contract; the public function handles n = 0 before them).
            _ => with_fallback!(self, V => unsafe {
                assert!(path == ConvPath::Direct && s.direct_shape() && n >= 1);
                kernel::direct::backward::<V>(s, n, x, w, dy, dx, dw, db, scratch, accumulate)
            }),
        }
    }

    pub fn dense_forward(
        self,
        s: &Dense,
        n: usize,
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        y: &mut [f32],
    ) {
        match self {
            Kernels::Isa(isa) => kernel::dense_forward(isa, s, n, x, w, bias, y),
            // SAFETY: the fallback vectors run anywhere.
            _ => with_fallback!(self, V => unsafe { kernel::dense_simd::forward::<V>(s, n, x, w, bias, y) }),
        }
    }

    /// On a fallback vector `db` is summed here, image by image, as the
    /// public function does before it calls the SIMD kernel.
    #[allow(clippy::too_many_arguments)]
    pub fn dense_backward(
        self,
        s: &Dense,
        n: usize,
        x: &[f32],
        w: &[f32],
        dy: &[f32],
        dx: Option<&mut [f32]>,
        dw: &mut [f32],
        db: Option<&mut [f32]>,
        accumulate: bool,
    ) {
        if let Kernels::Isa(isa) = self {
            return kernel::dense_backward(isa, s, n, x, w, dy, dx, dw, db, accumulate);
        }
        if let Some(db) = db {
            let db = &mut db[..s.outputs];
            if !accumulate {
                db.fill(0.0);
            }
            for row in dy[..n * s.outputs].chunks_exact(s.outputs) {
                db.iter_mut().zip(row).for_each(|(g, v)| *g += v);
            }
        }
        // SAFETY: the fallback vectors run anywhere.
        with_fallback!(self, V => unsafe { kernel::dense_simd::backward::<V>(s, n, x, w, dy, dx, dw, accumulate) })
    }

    pub fn dense_input_grad(self, s: &Dense, n: usize, w: &[f32], dy: &[f32], dx: &mut [f32]) {
        match self {
            Kernels::Isa(isa) => kernel::dense_input_grad(isa, s, n, w, dy, dx),
            // SAFETY: the fallback vectors run anywhere.
            _ => with_fallback!(self, V => unsafe { kernel::dense_simd::input_grad::<V>(s, n, w, dy, dx) }),
        }
    }

    /// On a fallback vector, pools other than 3x3/2 run the portable code
    /// (as they do at every ISA).
    pub fn maxpool_forward(self, s: &MaxPool2d, n: usize, x: &[f32], y: &mut [f32], argmax: &mut [u32]) {
        match self {
            Kernels::Isa(isa) => kernel::maxpool_forward(isa, s, n, x, y, argmax),
            _ if (s.size, s.stride) != (3, 2) => kernel::maxpool_forward(Isa::Portable, s, n, x, y, argmax),
            // SAFETY: the fallback vectors run anywhere; the window is 3x3/2.
            _ => with_fallback!(self, V => unsafe { kernel::maxpool_simd::forward::<V>(s, n, x, y, argmax) }),
        }
    }
}
