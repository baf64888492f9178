//! `Isa`: names, the environment's choice (as values: the one test that
//! sets the real environment lives in `isa_env.rs`, a process of its own),
//! what this CPU runs, and the fallback vectors mirroring the hardware
//! tiles.

mod common;

use kernel::isa::{ISA_ENV, PORTABLE_ENV};
use kernel::simd::{Fallback, Vector};
use kernel::Isa;

/// Fails when `GAPNET_REQUIRE_ISAS` names an ISA this CPU lacks (every
/// other test using `common::isas` fails too; this one says only that).
#[test]
fn required_isas_are_available() {
    let isas = common::isas();
    eprintln!(
        "ISAs under test: {isas:?} ({} = {:?})",
        kernel::isa::REQUIRE_ENV,
        std::env::var(kernel::isa::REQUIRE_ENV).ok()
    );
}

#[test]
fn names_round_trip() {
    for isa in Isa::ALL {
        assert_eq!(isa.to_string().parse::<Isa>(), Ok(isa));
        assert_eq!(isa.name().to_uppercase().parse::<Isa>(), Ok(isa));
    }
    assert_eq!(["avx512", "avx2", "portable"], Isa::ALL.map(Isa::name));
    assert_eq!(["AVX-512", "AVX2", "portable"], Isa::ALL.map(Isa::label));
    let err = "sse4".parse::<Isa>().unwrap_err();
    assert!(err.contains("avx512, avx2, portable"), "{err}");
}

#[test]
fn available_is_best_first_and_ends_with_portable() {
    let available = Isa::available();
    assert_eq!(available.last(), Some(&Isa::Portable));
    assert_eq!(available[0], Isa::best());
    let order: Vec<usize> = available.iter().map(|i| Isa::ALL.iter().position(|a| a == i).unwrap()).collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{available:?}");
    for isa in Isa::ALL {
        assert_eq!(isa.supported(), available.contains(&isa), "{isa}");
    }
    #[cfg(target_arch = "x86_64")]
    {
        assert_eq!(Isa::Avx512.supported(), std::arch::is_x86_feature_detected!("avx512f"));
        let avx2 = std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
        assert_eq!(Isa::Avx2.supported(), avx2);
    }
}

#[test]
fn the_environment_chooses_or_fails_clearly() {
    let best = Isa::best();
    assert_eq!(Isa::from_vars(None, None), Ok(best));
    assert_eq!(Isa::from_vars(Some(""), Some("")), Ok(best));
    assert_eq!(Isa::from_vars(None, Some("0")), Ok(best));
    // GAPNET_PORTABLE is an alias of GAPNET_ISA=portable
    assert_eq!(Isa::from_vars(None, Some("1")), Ok(Isa::Portable));
    assert_eq!(Isa::from_vars(Some("portable"), Some("yes")), Ok(Isa::Portable));
    assert_eq!(Isa::from_vars(Some(" Portable "), None), Ok(Isa::Portable));
    for isa in Isa::ALL {
        match Isa::from_vars(Some(isa.name()), None) {
            Ok(got) => assert!(isa.supported() && got == isa, "{isa}"),
            Err(e) => {
                assert!(!isa.supported(), "{isa}: {e}");
                assert!(e.contains(ISA_ENV) && e.contains("cannot run"), "{e}");
            }
        }
    }
    let e = Isa::from_vars(Some("avx9"), None).unwrap_err();
    assert!(e.starts_with(&format!("{ISA_ENV}=avx9:")), "{e}");
    if best != Isa::Portable {
        let e = Isa::from_vars(Some(best.name()), Some("1")).unwrap_err();
        assert!(e.contains(PORTABLE_ENV), "{e}");
    }
}

#[test]
fn fallback_vectors_mirror_the_hardware_tiles() {
    assert_eq!(Fallback::<16>::LANES, 16);
    assert_eq!(Fallback::<8>::LANES, 8);
    assert_eq!(Fallback::<16>::TILES, kernel::simd::TILES_32_REGS);
    assert_eq!(Fallback::<8>::TILES, kernel::simd::TILES_16_REGS);
    #[cfg(target_arch = "x86_64")]
    {
        use kernel::simd::{Avx2, Avx512};
        assert_eq!((Avx512::LANES, Avx512::TILES), (Fallback::<16>::LANES, Fallback::<16>::TILES));
        assert_eq!((Avx2::LANES, Avx2::TILES), (Fallback::<8>::LANES, Fallback::<8>::TILES));
    }
}

/// A kernel asked for an ISA this CPU lacks refuses to run.
#[test]
fn kernels_refuse_an_isa_this_cpu_lacks() {
    let Some(&missing) = Isa::ALL.iter().find(|i| !i.supported()) else {
        eprintln!("this CPU runs every ISA: nothing to refuse");
        return;
    };
    let s = kernel::Dense { inputs: 3, outputs: 2 };
    let r = std::panic::catch_unwind(|| {
        kernel::dense_forward(missing, &s, 1, &[1.0; 3], &[1.0; 6], None, &mut [0.0; 2]);
    });
    assert!(r.is_err(), "{missing} ran on a CPU without it");
}
