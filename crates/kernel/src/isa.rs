//! [`Isa`]: which kernels run, as a value the caller passes to every kernel
//! that has SIMD versions.
//!
//! - [`Isa::Avx512`]: the SIMD kernels at 16 lanes (AVX-512F);
//! - [`Isa::Avx2`]: the same kernels at 8 lanes (AVX2 + FMA);
//! - [`Isa::Portable`]: the portable code (im2col + `matrixmultiply`, the
//!   scalar max pool), the same bits as before the SIMD kernels existed.
//!
//! The three round differently (the SIMD kernels sum in other orders, and
//! the lane count changes some of those orders), so a result reproduces bit
//! for bit only under the same ISA. Each is deterministic.
//!
//! [`Isa::detect`] picks the best one this CPU runs, unless the environment
//! says otherwise: `GAPNET_ISA=avx512|avx2|portable` ([`ISA_ENV`]) chooses
//! one, and `GAPNET_PORTABLE=1` ([`PORTABLE_ENV`], the older switch) is an
//! alias of `GAPNET_ISA=portable`. A choice this CPU cannot run, an unknown
//! name, or the two variables disagreeing, is an error ([`Isa::from_env`]),
//! never a silent fallback: a run would otherwise round differently from
//! what was asked.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

/// The environment variable that chooses the kernels: `avx512`, `avx2` or
/// `portable` (see [`Isa::from_env`]).
pub const ISA_ENV: &str = "GAPNET_ISA";

/// The older switch: set to anything but `0` or the empty string, it means
/// `GAPNET_ISA=portable` (to reproduce results computed with the portable
/// kernels).
pub const PORTABLE_ENV: &str = "GAPNET_PORTABLE";

/// An instruction set the kernels are compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    Avx512,
    Avx2,
    Portable,
}

impl Isa {
    /// Every ISA, best first.
    pub const ALL: [Isa; 3] = [Isa::Avx512, Isa::Avx2, Isa::Portable];

    /// The name `GAPNET_ISA` takes: `avx512`, `avx2`, `portable`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Portable => "portable",
        }
    }

    /// The name for people: `AVX-512`, `AVX2`, `portable`.
    pub fn label(self) -> &'static str {
        match self {
            Isa::Avx512 => "AVX-512",
            Isa::Avx2 => "AVX2",
            Isa::Portable => "portable",
        }
    }

    /// Whether this CPU runs this ISA's kernels (detected once per process).
    pub fn supported(self) -> bool {
        // [avx512, avx2]
        static CPU: OnceLock<[bool; 2]> = OnceLock::new();
        let cpu = CPU.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                use crate::simd::Vector;
                [crate::simd::Avx512::supported(), crate::simd::Avx2::supported()]
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                [false, false]
            }
        });
        match self {
            Isa::Avx512 => cpu[0],
            Isa::Avx2 => cpu[1],
            Isa::Portable => true,
        }
    }

    /// Panic, naming the ISA, unless this CPU runs it: the check every
    /// kernel taking an [`Isa`] makes before it runs SIMD code.
    pub fn require(self) {
        assert!(self.supported(), "the {} kernels cannot run on this CPU", self.label());
    }

    /// Every ISA this CPU runs, best first; always ends with `Portable`.
    pub fn available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.supported()).collect()
    }

    /// The best ISA this CPU runs, whatever the environment says.
    pub fn best() -> Isa {
        Isa::ALL.into_iter().find(|i| i.supported()).unwrap_or(Isa::Portable)
    }

    /// The ISA the environment asks for ([`ISA_ENV`], or [`PORTABLE_ENV`]
    /// as its alias), or [`Isa::best`] when it asks for none. Reads the
    /// environment on every call (it allocates: call it once, not per
    /// kernel). Errors name the variable and the problem: an unknown name,
    /// an ISA this CPU lacks, or `GAPNET_PORTABLE=1` with another ISA.
    pub fn from_env() -> Result<Isa, String> {
        let var = |name: &str| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
        Isa::from_vars(var(ISA_ENV).as_deref(), var(PORTABLE_ENV).as_deref())
    }

    /// [`Isa::from_env`] on given values of [`ISA_ENV`] and
    /// [`PORTABLE_ENV`] (`None`: unset).
    pub fn from_vars(isa: Option<&str>, portable: Option<&str>) -> Result<Isa, String> {
        let portable = portable.is_some_and(|v| !v.is_empty() && v != "0");
        let chosen = match isa.map(str::trim).filter(|v| !v.is_empty()) {
            Some(name) => {
                let isa = name.parse::<Isa>().map_err(|e| format!("{ISA_ENV}={name}: {e}"))?;
                if portable && isa != Isa::Portable {
                    return Err(format!("{ISA_ENV}={name} but {PORTABLE_ENV} asks for the portable kernels"));
                }
                isa
            }
            None if portable => Isa::Portable,
            None => return Ok(Isa::best()),
        };
        if !chosen.supported() {
            return Err(format!(
                "{ISA_ENV}={}: this CPU cannot run the {} kernels (it runs: {})",
                chosen.name(),
                chosen.label(),
                Isa::available().iter().map(|i| i.name()).collect::<Vec<_>>().join(", ")
            ));
        }
        Ok(chosen)
    }

    /// [`Isa::from_env`], panicking with its message on an error. A program
    /// that wants to report the error itself calls `from_env` first.
    pub fn detect() -> Isa {
        Isa::from_env().unwrap_or_else(|e| panic!("{e}"))
    }
}

/// [`Isa::detect`].
impl Default for Isa {
    fn default() -> Isa {
        Isa::detect()
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Isa {
    type Err = String;

    /// `avx512`, `avx2` or `portable`, in any case.
    fn from_str(s: &str) -> Result<Isa, String> {
        Isa::ALL
            .into_iter()
            .find(|i| i.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| "unknown ISA (expected one of: avx512, avx2, portable)".to_string())
    }
}

/// The environment variable naming ISAs (comma separated, e.g.
/// `avx512,avx2`) that test suites must run: if this CPU lacks one,
/// [`Isa::tested`] panics instead of letting the tests silently cover less.
/// CI sets it from /proc/cpuinfo.
pub const REQUIRE_ENV: &str = "GAPNET_REQUIRE_ISAS";

impl Isa {
    /// The ISAs a test suite runs: [`Isa::available`], after checking that
    /// it includes every ISA [`REQUIRE_ENV`] names (panics otherwise).
    pub fn tested() -> Vec<Isa> {
        let available = Isa::available();
        let required = std::env::var(REQUIRE_ENV).unwrap_or_default();
        for name in required.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let isa: Isa = name.parse().unwrap_or_else(|e| panic!("{REQUIRE_ENV}: {name}: {e}"));
            assert!(
                available.contains(&isa),
                "{REQUIRE_ENV} requires {isa}, but this CPU runs only {available:?}: its kernels would go untested"
            );
        }
        available
    }
}
