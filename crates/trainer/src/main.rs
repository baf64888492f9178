//! `trainer`: train, compare, evaluate and look inside the episode's CNNs
//! on CIFAR-10.
//! The program owns I/O, the command line and the loop; the numerics live
//! in the graph and kernel crates.

mod augment;
mod camgrid;
mod checkpoint;
mod cli;
mod conv_paths;
mod data;
mod eval;
mod explain;
mod fsops;
mod health;
mod heatmap;
mod interrupt;
mod metrics;
mod plot;
mod predict;
mod prune;
#[cfg(test)]
mod resume_fuzz;
mod team;
mod train;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};

use cli::{Cli, Command, CompareArgs, FetchArgs, RunArgs, TrainArgs};
use train::{RunConfig, CONFIG, CURVES};

fn main() {
    // A closed pipe (`trainer eval ... | head`) ends the program quietly, as
    // for any Unix tool, instead of a panic in `println!`.
    #[cfg(unix)]
    // SAFETY: restoring a signal's default disposition before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // Under `mpirun`, this process is one rank of a job (team.rs).
    let team = team::Team::join().unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        team::linger_alone();
        std::process::exit(1);
    });
    if let Err(e) = dispatch(cli, &matches, &team) {
        if let Some(stop) = e.downcast_ref::<interrupt::Interrupted>() {
            eprintln!("{stop}");
            // Every rank stops after the same batch: they finish MPI
            // together, rank 0 having written the checkpoint, then exit.
            team.finish();
            std::process::exit(interrupt::exit_code());
        }
        eprintln!("error: {e:#}");
        // Any other error may be this rank's alone, and the others may wait
        // for it in a step: `exit` without finishing MPI, and the launcher
        // ends the job. A rank other than 0 prints nothing, so it waits for
        // rank 0 (whose error names the rank at fault) to end the job first.
        team.linger();
        std::process::exit(1);
    }
    team.finish();
}

fn dispatch(cli: Cli, matches: &ArgMatches, team: &team::Team) -> Result<()> {
    // GAPNET_ISA / GAPNET_PORTABLE: an unknown or unsupported choice is an
    // error here rather than a panic in the first plan
    graph::Isa::from_env().map_err(anyhow::Error::msg)?;
    let alone = matches!(cli.command, Some(Command::Train(_)) | Some(Command::Compare(_)) | None);
    if team.ranks() > 1 && !alone {
        bail!(
            "{} MPI ranks: only `train` and `compare` run as an MPI job; run `trainer {}` as one process",
            team.ranks(),
            matches.subcommand_name().unwrap_or_default()
        );
    }
    match cli.command {
        Some(Command::Train(args)) => {
            let sub = matches.subcommand_matches("train").expect("the train subcommand was parsed");
            train_command(args, &given_flags(sub), team)
        }
        Some(Command::Compare(args)) => compare_command(args, team),
        Some(Command::Eval(args)) => {
            set_threads(args.threads)?;
            eval::run(&args)
        }
        Some(Command::Explain(args)) => {
            set_threads(args.model.threads)?;
            explain::run(&args)
        }
        Some(Command::Prune(args)) => {
            set_threads(args.model.threads)?;
            prune::run(&args)
        }
        Some(Command::Predict(args)) => {
            set_threads(args.threads)?;
            predict::run(&args)
        }
        Some(Command::Fetch(args)) => fetch_command(args),
        None => compare_command(cli.compare, team),
    }
}

/// The most a `config.json` may hold: a run's settings and model spec are
/// a few kilobytes.
const CONFIG_LIMIT: u64 = 1 << 20;

/// Checked before any thread starts: each worker is an OS thread with its
/// own stack, and far more of them than cores only slows a run down.
fn set_threads(threads: Option<usize>) -> Result<()> {
    match threads {
        Some(0) => bail!("--threads 0: use 1 or more (or leave it out to use every core)"),
        Some(n) if n > cli::MAX_THREADS => bail!(
            "--threads {n}: at most {} worker threads (this machine has {} cores)",
            cli::MAX_THREADS,
            std::thread::available_parallelism().map_or(1, |c| c.get())
        ),
        Some(n) => rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("--threads: cannot start the thread pool"),
        None => Ok(()),
    }
}

/// `runs/<name>-<UTC timestamp>`.
fn default_out(name: &str) -> PathBuf {
    let stamp = humantime::format_rfc3339_seconds(SystemTime::now()).to_string().replace(':', "");
    let stem = Path::new(name).file_stem().map_or(name.into(), |s| s.to_string_lossy().into_owned());
    PathBuf::from("runs").join(format!("{stem}-{stamp}"))
}

/// Create a fresh output folder and lock it, refusing one that already
/// holds a run (checked again under the lock, so two processes started at
/// once cannot both take it).
fn fresh_out(out: &Path) -> Result<fsops::RunLock> {
    let refuse = || {
        anyhow::anyhow!(
            "{}: already holds a run; pass --resume {} to continue it, or choose another --out",
            out.display(),
            interrupt::shell_quote(out)
        )
    };
    if out.join(CONFIG).exists() {
        return Err(refuse());
    }
    std::fs::create_dir_all(out)
        .with_context(|| format!("--out {}: cannot create the folder", out.display()))?;
    let lock = fsops::RunLock::acquire(out)?;
    if out.join(CONFIG).exists() {
        return Err(refuse());
    }
    Ok(lock)
}

/// The ids of the `train` flags given on the command line (not defaults;
/// clap records where each value came from).
fn given_flags(m: &ArgMatches) -> Vec<String> {
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
/// (`--no-download` changes nothing: a resumed run reads the data folder it recorded.)
const RESUME_MAY_CHANGE: &[&str] =
    &["epochs", "lr", "skip_nonfinite", "checkpoint_every", "threads", "resume", "no_download"];

/// `--flag-name` of a clap id.
fn flag(id: &str) -> String {
    format!("--{}", id.replace('_', "-"))
}

/// The data of a run, with every model checked against its image shape
/// before anything is trained or printed.
fn load_data(configs: &[RunConfig]) -> Result<data::Splits> {
    let splits = load_splits(&configs[0])?;
    for config in configs {
        train::build(config, image_shape(&splits), 1)?;
    }
    Ok(splits)
}

/// [`load_data`] for fresh runs, which record every convolution's path
/// from the plan built to check them (the defaults, and those
/// `GAPNET_CONV_PATHS` asked for).
fn load_data_recording_paths(configs: &mut [RunConfig]) -> Result<data::Splits> {
    let splits = load_splits(&configs[0])?;
    for config in configs {
        let plan = train::build(config, image_shape(&splits), 1)?;
        config.conv_paths = Some(conv_paths::record(&plan));
    }
    Ok(splits)
}

fn load_splits(config: &RunConfig) -> Result<data::Splits> {
    train::prepare_data(data::load(&config.data, &config.classes)?, config)
}

fn image_shape(splits: &data::Splits) -> graph::Shape {
    let [c, h, w] = splits.train.shape;
    graph::Shape::new(c, h, w)
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
/// checked, and the run folder, locked.
fn claim_run(args: &TrainArgs, given: &[String]) -> Result<(TrainJob, fsops::RunLock)> {
    Ok(match &args.resume {
        Some(dir) => {
            if let Some(id) = given.iter().find(|id| !RESUME_MAY_CHANGE.contains(&id.as_str())) {
                bail!(
                    "{} with --resume: a resumed run keeps its own settings (config.json); only --epochs, \
                     --lr, --checkpoint-every, --skip-nonfinite and --threads may change",
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
                    format!("--resume {}: no run there ({} is missing)", dir.display(), path.display())
                })?;
            let saved: RunConfig = serde_json::from_str(&text)
                .with_context(|| format!("{}: not a run configuration", path.display()))?;
            train::check_saved(&saved, &path)?;
            // The run's own settings, except what may change on resuming.
            let mut config = saved.clone();
            config.epochs = args.run.epochs.unwrap_or(config.epochs);
            config.lr = args.run.lr.unwrap_or(config.lr);
            config.skip_nonfinite |= args.run.skip_nonfinite;
            if given.iter().any(|g| g == "checkpoint_every") {
                config.checkpoint_every = args.run.checkpoint_every;
            }
            config.isa = Some(train::resume_isa(&saved, &path)?.name().to_string());
            let same_isa = config.isa == saved.isa;
            config.conv_paths = conv_paths::for_resume(&config.spec, saved.conv_paths.as_ref(), same_isa)?;
            train::validate(&config)?;
            if config != saved {
                fsops::write_atomic(&path, serde_json::to_string_pretty(&config)?.as_bytes())
                    .with_context(|| format!("{}: cannot write", path.display()))?;
            }
            (TrainJob { config, out: dir.clone(), previous: Some(saved) }, lock)
        }
        None => {
            let dir = data::locate(args.run.data.as_deref(), args.run.no_download)?;
            let mut config = train::configure(&args.model, &with_all_classes(&args.run, &dir)?, &dir)?;
            // Everything is checked (data, classes, shapes) before the folder exists.
            load_data_recording_paths(std::slice::from_mut(&mut config))?;
            let out = args.run.out.clone().unwrap_or_else(|| default_out(&config.spec.name));
            let lock = fresh_out(&out)?;
            (TrainJob { config, out, previous: None }, lock)
        }
    })
}

fn train_command(args: TrainArgs, given: &[String], team: &team::Team) -> Result<()> {
    set_threads(args.run.threads)?;
    let (job, _lock) = split_claim(team.is_root().then(|| claim_run(&args, given)));
    let TrainJob { config, out, previous } = team.share(job)?;
    // Only now: a first-use download before this point stops on Ctrl-C at once
    // (it leaves nothing the loader would take), rather than waiting for a batch.
    interrupt::install()?;
    let splits = team.check_data(load_data(std::slice::from_ref(&config)))?;
    println!(
        "training {} ({} recipe) on {} train / {} test images from {}; output in {}",
        config.spec.name,
        format!("{:?}", config.recipe).to_lowercase(),
        splits.train.len(),
        splits.test.len(),
        splits.dir.display(),
        out.display()
    );
    println!("{}{}", engine_line(config.kernels()), team.describe(graph::LANES.min(config.batch)));
    if let Some(line) = config.conv_paths.as_ref().and_then(conv_paths::describe) {
        println!("{line}");
    }
    interrupt::set_run_folder(&out);
    let outcome = train::run(&config, &out, &splits, previous.as_ref(), team)?;
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

/// Rank 0's claim, split into what every rank is told (the job, or the
/// error that stops them all) and the lock rank 0 keeps.
fn split_claim<T>(claim: Option<Result<(T, fsops::RunLock)>>) -> (Option<Result<T>>, Option<fsops::RunLock>) {
    match claim {
        Some(Ok((job, lock))) => (Some(Ok(job)), Some(lock)),
        Some(Err(e)) => (Some(Err(e)), None),
        None => (None, None),
    }
}

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
    let dir = data::locate(args.run.data.as_deref(), args.run.no_download)?;
    let run = with_all_classes(&args.run, &dir)?;
    let mut configs = models.iter().map(|m| train::configure(m, &run, &dir)).collect::<Result<Vec<_>>>()?;
    let root = args.run.out.clone().unwrap_or_else(|| default_out("compare"));
    let splits = load_data_recording_paths(&mut configs)?;
    std::fs::create_dir_all(&root)
        .with_context(|| format!("--out {}: cannot create the folder", root.display()))?;
    let lock = fsops::RunLock::acquire(&root)?;
    Ok((CompareJob { configs, root }, lock, splits))
}

fn compare_command(args: CompareArgs, team: &team::Team) -> Result<()> {
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
    println!("{}{}", engine_line(graph::Isa::detect()), team.describe(graph::LANES.min(configs[0].batch)));
    let mut outcomes = Vec::new();
    for config in &configs {
        let out = root.join(Path::new(&config.model).file_stem().unwrap_or_default());
        let (claimed, _lock) = split_claim(team.is_root().then(|| fresh_out(&out).map(|lock| ((), lock))));
        team.share(claimed)?;
        interrupt::set_run_folder(&out);
        let outcome = train::run(config, &out, &splits, None, team).map_err(|e| match e.downcast() {
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
            label: c.model.as_str(),
            rows: &o.rows,
            sample_error: c.recipe == cli::Recipe::Seed,
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

/// `--classes all`: every class the data in `dir` holds, by name, in label
/// order (the run's configuration records the names, so `--resume` and
/// `eval` see the same classes). Other values are returned as they are.
fn with_all_classes(run: &RunArgs, dir: &Path) -> Result<RunArgs> {
    if !run.classes.trim().eq_ignore_ascii_case("all") {
        return Ok(run.clone());
    }
    // The loader already knows which classes either split holds; a second,
    // label-only reader would only repeat it.
    let names = data::load(dir, &[])?.train.class_names;
    Ok(RunArgs { classes: names.join(","), ..run.clone() })
}

/// `trainer fetch [--to DIR]`: the first-use download, ahead of time.
fn fetch_command(args: FetchArgs) -> Result<()> {
    let to_given = args.to.is_some();
    let target = match args.to {
        Some(dir) => data::download::Target { dir, choose: "choose another --to DIR" },
        None => data::download::Target::cache(data::download::cache_dir()?),
    };
    let folder = data::download::ensure(&target, &data::download::Source::from_env()?)?;
    println!("CIFAR-10 is in {}", folder.display());
    if !to_given {
        println!("every command finds it there when --data, CIFAR10_DIR and datasets/ hold no data");
    } else {
        println!("use it with --data {}", interrupt::shell_quote(&folder));
    }
    println!("all ten classes: trainer train --classes all (default: airplane,ship)");
    Ok(())
}

/// The side-by-side table of a comparison, as Markdown.
fn compare_table(outcomes: &[(&RunConfig, train::Outcome)]) -> String {
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
            config.model,
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

/// Threads and kernels of this run, e.g. "engine: 2 threads, AVX2 kernels
/// (GAPNET_ISA=avx2|portable to choose)". [`dispatch`] has checked the
/// environment, so `Isa::detect` does not fail here.
fn engine_line(isa: graph::Isa) -> String {
    use graph::isa::{Isa, ISA_ENV, PORTABLE_ENV};
    let why = if isa != Isa::detect() {
        "the kernels the run was trained with".to_string()
    } else if std::env::var_os(ISA_ENV).is_some_and(|v| !v.is_empty()) {
        format!("{ISA_ENV}={isa}")
    } else if isa == Isa::Portable && Isa::best() != Isa::Portable {
        format!("{PORTABLE_ENV} is set")
    } else {
        let names: Vec<&str> = Isa::available().iter().map(|i| i.name()).collect();
        format!("{ISA_ENV}={} to choose", names.join("|"))
    };
    let n = rayon::current_num_threads();
    format!("engine: {n} thread{}, {} kernels ({why})", if n == 1 { "" } else { "s" }, isa.label())
}
