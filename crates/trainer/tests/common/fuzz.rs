//! The budget of the fuzz harnesses run inside `cargo test`.

use proptest::test_runner::{Config, RngSeed};

/// `default` cases, or `GAPNET_FUZZ_CASES`; inputs from the fixed `seed`
/// (so CI is reproducible), or from `PROPTEST_RNG_SEED`'s when it is set.
pub fn budget(default: u32, seed: u64) -> Config {
    let cases = std::env::var("GAPNET_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let seeded = std::env::var_os("PROPTEST_RNG_SEED").is_some();
    Config {
        cases,
        failure_persistence: None,
        rng_seed: if seeded { Config::default().rng_seed } else { RngSeed::Fixed(seed) },
        ..Config::default()
    }
}
