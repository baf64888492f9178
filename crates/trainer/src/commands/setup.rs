//! What the commands share: the thread pool, the data every training
//! command loads and checks against its models, rank 0's claim passed to
//! the other ranks, and the engine line.

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::config::conv_paths;
use crate::config::flags::{RunArgs, MAX_THREADS};
use crate::config::RunConfig;
use crate::data;
use crate::fsops;
use crate::training::{build, prepare_data};

/// Checked before any thread starts: each worker is an OS thread with its
/// own stack, and far more of them than cores only slows a run down.
pub fn set_threads(threads: Option<usize>) -> Result<()> {
    match threads {
        Some(0) => bail!("--threads 0: use 1 or more (or leave it out to use every core)"),
        Some(n) if n > MAX_THREADS => bail!(
            "--threads {n}: at most {} worker threads (this machine has {} cores)",
            MAX_THREADS,
            std::thread::available_parallelism().map_or(1, |c| c.get())
        ),
        Some(n) => rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("--threads: cannot start the thread pool"),
        None => Ok(()),
    }
}

/// The data of a run, with every model checked against its image shape
/// before anything is trained or printed.
pub fn load_data(configs: &[RunConfig]) -> Result<data::Splits> {
    let splits = load_splits(&configs[0])?;
    for config in configs {
        build(config, image_shape(&splits), 1)?;
    }
    Ok(splits)
}

/// [`load_data`] for fresh runs, which record every convolution's path
/// from the plan built to check them (the defaults, and those
/// `GAPNET_CONV_PATHS` asked for), or, with `tune`, the fastest measured.
pub fn load_data_recording_paths(configs: &mut [RunConfig], tune: bool) -> Result<data::Splits> {
    let splits = load_splits(&configs[0])?;
    for config in configs {
        let plan = build(config, image_shape(&splits), 1)?;
        config.conv_paths = Some(if tune {
            let (paths, line) = crate::training::tune::tune(config, image_shape(&splits))?;
            println!("{line}");
            paths
        } else {
            conv_paths::record(&plan)
        });
    }
    Ok(splits)
}

pub fn load_splits(config: &RunConfig) -> Result<data::Splits> {
    prepare_data(data::load(&config.data, &config.classes)?, config)
}

pub fn image_shape(splits: &data::Splits) -> graph::Shape {
    let [c, h, w] = splits.train.shape;
    graph::Shape::new(c, h, w)
}

/// Rank 0's claim, split into what every rank is told (the job, or the
/// error that stops them all) and the lock rank 0 keeps.
pub fn split_claim<T>(
    claim: Option<Result<(T, fsops::RunLock)>>,
) -> (Option<Result<T>>, Option<fsops::RunLock>) {
    match claim {
        Some(Ok((job, lock))) => (Some(Ok(job)), Some(lock)),
        Some(Err(e)) => (Some(Err(e)), None),
        None => (None, None),
    }
}

/// `--classes all`: every class the data in `dir` holds, by name, in label
/// order (the run's configuration records the names, so `--resume` and
/// `eval` see the same classes). Other values are returned as they are.
pub fn with_all_classes(run: &RunArgs, dir: &Path) -> Result<RunArgs> {
    if !run.classes.trim().eq_ignore_ascii_case("all") {
        return Ok(run.clone());
    }
    // The loader already knows which classes either split holds; a second,
    // label-only reader would only repeat it.
    let names = data::load(dir, &[])?.train.class_names;
    Ok(RunArgs { classes: names.join(","), ..run.clone() })
}

/// Threads and kernels of this run, e.g. "engine: 2 threads, AVX2 kernels
/// (GAPNET_ISA=avx2|portable to choose)". `main` has checked the
/// environment, so `Isa::detect` does not fail here.
pub fn engine_line(isa: graph::Isa) -> String {
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
