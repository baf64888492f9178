//! `trainer compare` (and `trainer` alone): several models trained one
//! after another on the same data, then a side-by-side table and curves.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::setup::{
    engine_line, load_data, load_data_recording_paths, set_threads, split_claim, with_all_classes,
};
use crate::config::flags::CompareArgs;
use crate::config::{self, RunConfig};
use crate::data;
use crate::fsops;
use crate::interrupt;
use crate::run_folder::{default_out, fresh_out, plot, CURVES};
use crate::training::team::Team;
use crate::training::{self, Outcome};

/// What every rank of a `compare` job runs: the models' settings and the
/// comparison's folder.
#[derive(serde::Serialize, serde::Deserialize)]
struct CompareJob {
    configs: Vec<RunConfig>,
    root: PathBuf,
}

/// Rank 0's part of `compare` before anything is trained: the data found
/// (downloaded on first use) and loaded, every model's settings checked
/// against it, the comparison's folder made and locked.
fn claim_compare(args: &CompareArgs) -> Result<(CompareJob, fsops::RunLock, data::Splits)> {
    let models: Vec<&str> = args.models.split(',').map(str::trim).filter(|m| !m.is_empty()).collect();
    if models.is_empty() {
        bail!("--models: name at least one model");
    }
    let root = args.run.out.clone().unwrap_or_else(|| default_out("compare"));
    check_distinct_folders(&models, &root)?;
    let dir = data::locate(args.run.data.as_deref(), args.run.no_download)?;
    let run = with_all_classes(&args.run, &dir)?;
    let mut configs = models.iter().map(|m| config::configure(m, &run, &dir)).collect::<Result<Vec<_>>>()?;
    let splits = load_data_recording_paths(&mut configs, args.run.tune)?;
    std::fs::create_dir_all(&root)
        .with_context(|| format!("--out {}: cannot create the folder", root.display()))?;
    let lock = fsops::RunLock::acquire(&root)?;
    Ok((CompareJob { configs, root }, lock, splits))
}

pub fn run(args: CompareArgs, team: &Team) -> Result<()> {
    set_threads(args.run.threads)?;
    // Rank 0 keeps the data it loaded to check the settings; the others load their own.
    let mut loaded = None;
    let claim = team.is_root().then(|| {
        claim_compare(&args).map(|(job, lock, splits)| {
            loaded = Some(splits);
            (job, lock)
        })
    });
    let (job, _root_lock) = split_claim(claim);
    let CompareJob { configs, root } = team.share(job)?;
    // After any first-use download, as in `train`.
    interrupt::install()?;
    let splits = team.check_data(loaded.map_or_else(|| load_data(&configs), Ok))?;
    let models: Vec<&str> = configs.iter().map(|c| c.model.as_str()).collect();
    println!(
        "comparing {} on {} train / {} test images from {}, {} epochs each; output in {}",
        models.join(", "),
        splits.train.len(),
        splits.test.len(),
        splits.dir.display(),
        configs[0].epochs,
        root.display()
    );
    println!("{}{}", engine_line(graph::Isa::detect()), team.engine_note(graph::LANES.min(configs[0].batch)));
    let mut outcomes = Vec::new();
    for config in &configs {
        let out = root.join(model_folder(&config.model));
        let (claimed, _lock) = split_claim(team.is_root().then(|| fresh_out(&out).map(|lock| ((), lock))));
        team.share(claimed)?;
        interrupt::set_run_folder(&out);
        let outcome = training::run(config, &out, &splits, None, team).map_err(|e| match e.downcast() {
            Ok(stop) => anyhow::Error::new(interrupt::Interrupted {
                note: Some("the comparison itself does not resume; run it again for the table".into()),
                ..stop
            }),
            Err(e) => e,
        })?;
        outcomes.push((config, outcome));
        if team.any(interrupt::requested()) {
            return Err(interrupt::Interrupted {
                at: format!("the end of {}", config.model),
                out,
                note: Some("the comparison itself does not resume; run it again for the table".into()),
            }
            .into());
        }
    }
    if !team.is_root() {
        return Ok(());
    }
    let series: Vec<plot::Series> = outcomes
        .iter()
        .map(|(c, o)| plot::Series {
            label: c.spec.name.as_str(),
            rows: &o.rows,
            sample_error: c.recipe == config::Recipe::Seed,
        })
        .collect();
    plot::plot_curves(&root.join(CURVES), &series)?;
    let table = compare_table(&outcomes);
    fsops::write_atomic(&root.join("summary.md"), table.as_bytes())
        .with_context(|| format!("{}: cannot write", root.join("summary.md").display()))?;
    println!("\n{table}");
    println!("curves: {}  per-model runs: {}/<model>/", root.join(CURVES).display(), root.display());
    Ok(())
}

/// The side-by-side table of a comparison, as Markdown.
fn compare_table(outcomes: &[(&RunConfig, Outcome)]) -> String {
    let mut t = String::from(
        "| model | params | test acc | best test acc | train CE | seed error | sample error | seconds | images/s |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for (config, o) in outcomes {
        let last = o.rows.last().expect("every run trains at least one epoch");
        let seconds: f64 = o.rows.iter().map(|r| r.seconds).filter(|s| s.is_finite()).sum();
        let speed = o.rows.iter().map(|r| r.images_per_s).sum::<f64>() / o.rows.len() as f64;
        t += &format!(
            "| {} | {} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.1} | {:.0} |\n",
            config.spec.name,
            o.params,
            last.test_acc,
            o.best_test_acc(),
            last.train_ce,
            last.train_seed_error,
            last.sample_seed_error,
            seconds,
            speed
        );
    }
    t
}

/// The folder of a comparison's model: its preset name, or its spec file's stem.
fn model_folder(model: &str) -> &std::ffi::OsStr {
    Path::new(model).file_stem().unwrap_or_default()
}

/// Each model trains into a folder of its own under `root`: refuse, before
/// anything is trained, models that would share one.
fn check_distinct_folders(models: &[&str], root: &Path) -> Result<()> {
    for (i, a) in models.iter().enumerate() {
        if let Some(b) = models[..i].iter().find(|b| model_folder(b) == model_folder(a)) {
            let folder = root.join(model_folder(a));
            if a == b {
                bail!(
                    "--models: {a} is named twice; each model trains into its own folder ({})",
                    folder.display()
                );
            }
            bail!(
                "--models: {b} and {a} would both train into {}; rename one of the spec files",
                folder.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_that_would_share_a_folder_are_named() {
        let root = Path::new("runs/cmp");
        assert!(check_distinct_folders(&["seed-fc", "seed-gap", "specs/x.toml"], root).is_ok());
        let twice =
            check_distinct_folders(&["seed-gap", "seed-fc", "seed-gap"], root).unwrap_err().to_string();
        assert!(twice.contains("seed-gap is named twice") && twice.contains("runs/cmp/seed-gap"), "{twice}");
        let stems = check_distinct_folders(&["a/x.toml", "b/x.toml"], root).unwrap_err().to_string();
        assert!(stems.contains("a/x.toml and b/x.toml would both train into runs/cmp/x"), "{stems}");
    }
}
