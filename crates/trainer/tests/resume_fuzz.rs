//! Fuzzing what `--resume` reads, inside `cargo test` on a bounded budget:
//! a run's `config.json` with any field replaced by an arbitrary JSON value,
//! and a state checkpoint with any header entry replaced by an arbitrary
//! string. Both go down the paths `trainer train --resume` takes
//! (`check_saved`, `checkpoint::read`). None may panic; a refused input gets
//! a one-line message naming the file.
//!
//! `GAPNET_FUZZ_CASES=N` sets the cases per harness; `PROPTEST_RNG_SEED=S`
//! explores other inputs (the default seed is fixed).

mod common;

use std::path::Path;

use graph::{preset, Arena, Init, Plan, Shape};
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::Value;

use trainer::config::{check_saved, RunConfig};
use trainer::config::{Normalize, Recipe, Schedule};
use trainer::data::Normalizer;
use trainer::run_folder::checkpoint;
use trainer::run_folder::metrics::EpochRow;
use trainer::run_folder::STATE;

fn budget(default: u32) -> Config {
    common::fuzz::budget(default, 0x7265_7375_6d65)
}

fn config(data: &Path) -> RunConfig {
    RunConfig {
        model: "seed-gap".into(),
        spec: preset("seed-gap").unwrap(),
        recipe: Recipe::Modern,
        epochs: 5,
        batch: 4,
        lr: 0.05,
        momentum: 0.9,
        weight_decay: 5e-4,
        schedule: Schedule::Cosine,
        normalize: Normalize::Meanstd,
        augment: true,
        classes: vec!["airplane".into(), "ship".into()],
        limit_train: None,
        limit_test: None,
        seed: 1,
        data: data.to_path_buf(),
        checkpoint_every: 1,
        skip_nonfinite: false,
        tensorboard: true,
        isa: None,
        conv_paths: None,
    }
}

fn row(epoch: usize) -> EpochRow {
    EpochRow {
        epoch,
        lr: 0.05,
        train_ce: 0.6,
        train_seed_error: 0.4,
        train_acc: 0.7,
        test_ce: 0.5,
        test_acc: 0.75,
        seconds: 1.0,
        images_per_s: 10.0,
        sample_seed_error: 0.35,
    }
}

/// Any JSON value: scalars of every kind, edge numbers, nesting.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop::sample::select(vec![0.0, -1.0, 1e300, -1e-300, f64::MAX, 0.5]).prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,6}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// One line, naming `file`.
fn one_line(e: &anyhow::Error, file: &str) -> Result<(), TestCaseError> {
    let text = format!("{e:#}");
    prop_assert!(!text.contains('\n'), "more than one line: {text}");
    prop_assert!(text.contains(file), "does not name {file}: {text}");
    Ok(())
}

proptest! {
    #![proptest_config(budget(96))]

    #[test]
    fn config_json_with_any_field_replaced_never_panics(field in 0usize..18, value in any_json()) {
        let dir = tempfile::tempdir().unwrap();
        let mut json = serde_json::to_value(config(dir.path())).unwrap();
        let key = json.as_object().unwrap().keys().nth(field).unwrap().clone();
        json[&key] = value;
        let path = dir.path().join("config.json");
        match serde_json::from_value::<RunConfig>(json) {
            Err(_) => {} // main reports serde's message naming the file
            Ok(c) => {
                if let Err(e) = check_saved(&c, &path) {
                    one_line(&e, "config.json")?;
                }
            }
        }
    }

    #[test]
    fn state_header_with_any_entry_replaced_never_panics(
        entry in prop::sample::select(vec![
            "epoch", "batches_done", "partial_epoch", "skipped_batches", "classes", "metrics", "batch", "norm_mean",
        ]),
        value in prop_oneof![
            ".{0,16}",
            any::<u64>().prop_map(|v| v.to_string()),
            any_json().prop_map(|v| v.to_string()),
            Just("18446744073709551615".to_string()),
            Just("[[1,0.05,0.6,0.4,0.7,0.5,0.75,0.35],[2,0.05,0.6,0.4,0.7,\"NaN\",0.75,0.35]]".to_string()),
        ],
    ) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let mut plan = Plan::new(&cfg.spec, Shape::new(3, 32, 32), 4).unwrap();
        plan.initialize(Init::He, 3);
        let at = checkpoint::Progress { epoch: 2, ..Default::default() };
        checkpoint::write(&plan, dir.path(), &at, &cfg, &Normalizer::identity(3), &[row(1), row(2)]).unwrap();
        let path = dir.path().join(STATE);
        let mut meta = graph::read_model(&std::fs::read(&path).unwrap(), "x").unwrap().2;
        meta.insert(entry.to_string(), value);
        std::fs::write(&path, plan.to_safetensors(&[Arena::Params, Arena::Velocity], meta)).unwrap();
        let mut fresh = Plan::new(&cfg.spec, Shape::new(3, 32, 32), 4).unwrap();
        match checkpoint::read(&mut fresh, dir.path(), &cfg, 3) {
            Ok(Some(loaded)) => {
                prop_assert!(loaded.progress.batches < 3);
                if let Some(rows) = loaded.rows {
                    prop_assert_eq!(rows.len(), loaded.progress.epoch);
                }
            }
            Ok(None) => prop_assert!(false, "the state is there"),
            Err(e) => one_line(&e, STATE)?,
        }
    }
}
