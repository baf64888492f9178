//! `trainer train`: one model, from the command line or resumed from its
//! run folder. Rank 0 resolves the settings and claims the folder; every
//! rank of a job then trains the same run.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory};

use super::setup::{
    engine_line, load_data, load_data_recording_paths, set_threads, split_claim, with_all_classes,
};
use crate::config::flags::{Cli, TrainArgs};
use crate::config::{self, conv_paths, RunConfig};
use crate::data;
use crate::fsops;
use crate::interrupt;
use crate::run_folder::{default_out, fresh_out, CONFIG};
use crate::training;
use crate::training::team::Team;

/// The most a `config.json` may hold: a run's settings and model spec are
/// a few kilobytes.
const CONFIG_LIMIT: u64 = 1 << 20;

/// The ids of the `train` flags given on the command line (not defaults;
/// clap records where each value came from).
pub fn given_flags(m: &ArgMatches) -> Vec<String> {
    let cmd = Cli::command();
    let train = cmd.find_subcommand("train").expect("train is a subcommand");
    train
        .get_arguments()
        .map(|a| a.get_id().as_str())
        .filter(|id| m.value_source(id) == Some(ValueSource::CommandLine))
        .map(str::to_string)
        .collect()
}

/// Flags that may change when a run resumes; every other run flag is part
/// of what the run is and conflicts with `--resume`.
/// (`--no-download` changes nothing: a resumed run reads the data folder it
/// recorded; nor does `--no-tensorboard`: the events file is derived from the metrics.)
const RESUME_MAY_CHANGE: &[&str] = &[
    "epochs",
    "lr",
    "skip_nonfinite",
    "checkpoint_every",
    "threads",
    "resume",
    "no_download",
    "no_tensorboard",
];

/// `--flag-name` of a clap id.
fn flag(id: &str) -> String {
    format!("--{}", id.replace('_', "-"))
}

/// What every rank of a `train` job runs: the settings, the folder and,
/// when resuming, the run's saved settings.
#[derive(serde::Serialize, serde::Deserialize)]
struct TrainJob {
    config: RunConfig,
    out: PathBuf,
    previous: Option<RunConfig>,
}

/// Rank 0's part of `train` before anything is trained: the settings
/// (from the command line, or the run's `config.json` when resuming),
/// checked, the run folder, locked, and for a fresh run the data it
/// loaded for those checks.
fn claim_run(args: &TrainArgs, given: &[String]) -> Result<(TrainJob, fsops::RunLock, Option<data::Splits>)> {
    Ok(match &args.resume {
        Some(dir) => {
            if let Some(id) = given.iter().find(|id| !RESUME_MAY_CHANGE.contains(&id.as_str())) {
                bail!(
                    "{} with --resume: a resumed run keeps its own settings (config.json); only --epochs, \
                     --lr, --checkpoint-every, --skip-nonfinite, --no-tensorboard and --threads may \
                     change",
                    flag(id)
                );
            }
            if !dir.is_dir() {
                bail!("--resume {}: no run there (no such folder)", dir.display());
            }
            let lock = fsops::RunLock::acquire(dir)?;
            let path = dir.join(CONFIG);
            let text =
                graph::bounded::read_text(&path, CONFIG_LIMIT, "run configuration").with_context(|| {
                    format!(
                        "--resume {}: no run there ({} is missing){}",
                        dir.display(),
                        path.display(),
                        runs_inside(dir)
                    )
                })?;
            let saved: RunConfig = serde_json::from_str(&text)
                .with_context(|| format!("{}: not a run configuration", path.display()))?;
            config::check_saved(&saved, &path)?;
            // The run's own settings, except what may change on resuming.
            let mut config = saved.clone();
            config.epochs = args.run.epochs.unwrap_or(config.epochs);
            config.lr = args.run.lr.unwrap_or(config.lr);
            config.skip_nonfinite |= args.run.skip_nonfinite;
            config.tensorboard &= !args.run.no_tensorboard;
            if given.iter().any(|g| g == "checkpoint_every") {
                config.checkpoint_every = args.run.checkpoint_every;
            }
            config.isa = Some(config::resume_isa(&saved, &path)?.name().to_string());
            let same_isa = config.isa == saved.isa;
            config.conv_paths = conv_paths::for_resume(&config.spec, saved.conv_paths.as_ref(), same_isa)?;
            config::validate(&config)?;
            if config != saved {
                fsops::write_atomic(&path, serde_json::to_string_pretty(&config)?.as_bytes())
                    .with_context(|| format!("{}: cannot write", path.display()))?;
            }
            (TrainJob { config, out: dir.clone(), previous: Some(saved) }, lock, None)
        }
        None => {
            let dir = data::locate(args.run.data.as_deref(), args.run.no_download)?;
            let mut config = config::configure(&args.model, &with_all_classes(&args.run, &dir)?, &dir)?;
            // Everything is checked (data, classes, shapes) before the folder exists.
            let splits = load_data_recording_paths(std::slice::from_mut(&mut config), args.run.tune)?;
            let out = args.run.out.clone().unwrap_or_else(|| default_out(&config.spec.name));
            let lock = fresh_out(&out)?;
            (TrainJob { config, out, previous: None }, lock, Some(splits))
        }
    })
}

pub fn run(args: TrainArgs, given: &[String], team: &Team) -> Result<()> {
    set_threads(args.run.threads)?;
    // Rank 0 keeps the data a fresh run loaded to check its settings; the
    // others, and a resumed run, load it here.
    let mut loaded = None;
    let claim = team.is_root().then(|| {
        claim_run(&args, given).map(|(job, lock, splits)| {
            loaded = splits;
            (job, lock)
        })
    });
    let (job, _lock) = split_claim(claim);
    let TrainJob { config, out, previous } = team.share(job)?;
    // Only now: a first-use download before this point stops on Ctrl-C at once
    // (it leaves nothing the loader would take), rather than waiting for a batch.
    interrupt::install()?;
    let splits = team.check_data(loaded.map_or_else(|| load_data(std::slice::from_ref(&config)), Ok))?;
    println!(
        "training {} ({} recipe) on {} train / {} test images from {}; output in {}",
        config.spec.name,
        format!("{:?}", config.recipe).to_lowercase(),
        splits.train.len(),
        splits.test.len(),
        splits.dir.display(),
        out.display()
    );
    println!("{}{}", engine_line(config.kernels()), team.engine_note(graph::LANES.min(config.batch)));
    if let Some(line) = config.conv_paths.as_ref().and_then(conv_paths::line) {
        println!("{line}");
    }
    interrupt::set_run_folder(&out);
    let outcome = training::run(&config, &out, &splits, previous.as_ref(), team)?;
    interrupt::after_final_write(&out)?;
    let last = outcome.rows.last().with_context(|| {
        format!("{}: no epoch was trained (--epochs {} are all done)", out.display(), config.epochs)
    })?;
    println!(
        "done: test accuracy {:.4} (best {:.4}); files in {}",
        last.test_acc,
        outcome.best_test_acc(),
        outcome.out.display()
    );
    Ok(())
}

/// For a folder that is not a run but holds runs (a comparison's): the
/// `--resume` of each, as the end of a message; else nothing.
fn runs_inside(dir: &Path) -> String {
    let Ok(entries) = std::fs::read_dir(dir) else { return String::new() };
    let mut runs: Vec<PathBuf> =
        entries.flatten().map(|e| e.path()).filter(|p| p.join(CONFIG).is_file()).collect();
    if runs.is_empty() {
        return String::new();
    }
    runs.sort();
    let each: Vec<String> = runs.iter().map(|r| format!("--resume {}", interrupt::shell_quote(r))).collect();
    format!("; it holds the runs of a comparison, resume each on its own: {}", each.join(", "))
}
