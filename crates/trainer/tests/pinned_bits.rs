//! Pinned bits: a tiny run of each seed preset under each recipe, at every
//! ISA this CPU runs, must give the model recorded below for that ISA.
//!
//! The other determinism tests compare two runs of the same build; these
//! compare with the bits the kernels gave when the pins were taken, on
//! every CPU. Portable bits are the same on every x86-64 CPU; a SIMD ISA's
//! bits are the same on every CPU that runs it. A change that moves bits
//! (a new summation order, a layer on another path) updates the pins of the
//! ISAs it moves in the same commit, and its message says why.
//!
//! The runs are those of the two-class CIFAR-10 folder (airplane, ship),
//! found in `CIFAR10_DIR`: `trainer train --model M --recipe R --epochs 2
//! --limit-train 600 --limit-test 200 --seed 1`. Without that variable the
//! test says so and checks nothing, except under CI (`CI` set), where the
//! data must be there.

mod common;

use std::path::{Path, PathBuf};

use common::{command, s, text, tmp, Safetensors};
use sha2::{Digest, Sha256};

/// SHA-256 of the two-class folder's files, as its SHA256SUMS lists them:
/// the pins hold for this data only.
const DATA: [(&str, &str); 2] = [
    ("train.bin", "2da73bdbdf07063194d70e49a5612ab001485c54df17d0deb41369525f625904"),
    ("test.bin", "62ddd798e3a5fc169c6eff0f85c5afb741e6e07658504ea61f71349bb9ed4744"),
];

/// `(isa, model, recipe, model hash)`; the hash is [`model_hash`]'s.
/// Portable and AVX-512 were taken on an Intel Xeon, AVX2 on an AMD EPYC
/// (the portable ones agree on both).
const PINS: &[(&str, &str, &str, &str)] = &[
    ("portable", "seed-fc", "modern", "3521ad3dbde6cba1"),
    ("portable", "seed-fc", "seed", "7b3f1095534b3fbc"),
    ("portable", "seed-gap", "modern", "fd3446a1711a6a76"),
    ("portable", "seed-gap", "seed", "f2ea1111d2b113fb"),
    ("avx2", "seed-fc", "modern", "ca37f3c94380d05f"),
    ("avx2", "seed-fc", "seed", "0dd545207e52487b"),
    ("avx2", "seed-gap", "modern", "9717e358a190d54d"),
    ("avx2", "seed-gap", "seed", "3748c66b04fd4faf"),
    ("avx512", "seed-fc", "modern", "ab6494b9b2a25e8d"),
    ("avx512", "seed-fc", "seed", "99344483cf4b31f3"),
    ("avx512", "seed-gap", "modern", "f219706e60a14701"),
    ("avx512", "seed-gap", "seed", "cb164e165fcb06ca"),
];

/// SHA-256 over each tensor's name then its little-endian bytes, tensors in
/// name order; the first 16 hex digits.
fn model_hash(path: &Path) -> String {
    let file = Safetensors::parse(&std::fs::read(path).unwrap());
    let tensors = file.header.as_object().unwrap();
    let mut names: Vec<&String> = tensors.keys().filter(|k| *k != "__metadata__").collect();
    names.sort();
    let mut sha = Sha256::new();
    for name in names {
        let offsets = &tensors[name.as_str()]["data_offsets"];
        let (a, b) = (offsets[0].as_u64().unwrap() as usize, offsets[1].as_u64().unwrap() as usize);
        sha.update(name.as_bytes());
        sha.update(&file.data[a..b]);
    }
    hex(&sha.finalize())[..16].to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The two-class folder from `CIFAR10_DIR`, after checking it is the data
/// the pins were taken on; `None` (outside CI) when the variable is unset.
fn pinned_data() -> Option<PathBuf> {
    let Some(dir) = std::env::var_os("CIFAR10_DIR").map(PathBuf::from) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must set CIFAR10_DIR to the two-class CIFAR-10 folder for the pinned-bits test"
        );
        eprintln!("pinned bits: CIFAR10_DIR is not set, so nothing was checked");
        return None;
    };
    for (file, want) in DATA {
        let path = dir.join(file);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let got = hex(&Sha256::digest(&bytes));
        assert_eq!(got, want, "{}: not the two-class folder the pins were taken on", path.display());
    }
    Some(dir)
}

#[test]
fn tiny_runs_give_the_pinned_models_at_every_isa() {
    let Some(data) = pinned_data() else { return };
    let out = tmp("pinned-bits");
    let isas = graph::Isa::tested();
    let mut checked = 0;
    let mut moved = Vec::new();
    for &(isa, model, recipe, want) in PINS.iter().filter(|p| isas.iter().any(|i| i.name() == p.0)) {
        let run = out.join(format!("{isa}-{model}-{recipe}"));
        let args = [
            "train",
            "--data",
            s(&data),
            "--model",
            model,
            "--recipe",
            recipe,
            "--epochs",
            "2",
            "--limit-train",
            "600",
            "--limit-test",
            "200",
            "--seed",
            "1",
            "--threads",
            "2",
            "--out",
            s(&run),
        ];
        let o = command(&args).env("GAPNET_ISA", isa).env_remove("GAPNET_PORTABLE").output().unwrap();
        assert!(o.status.success(), "trainer {args:?} at {isa}:\n{}", text(&o));
        let got = model_hash(&run.join("model.safetensors"));
        eprintln!("pinned bits: {isa} {model} {recipe}: {got} (pinned {want})");
        if got != want {
            moved.push(format!("{isa} {model} {recipe}: {got}, pinned {want}"));
        }
        checked += 1;
    }
    assert_eq!(checked, 4 * isas.len(), "every ISA this CPU runs has pins");
    assert!(
        moved.is_empty(),
        "the bits moved (update the pins only for a change that means to):\n{}",
        moved.join("\n")
    );
    std::fs::remove_dir_all(&out).ok();
}
