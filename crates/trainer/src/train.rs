//! The training loop: settings resolved once into a `RunConfig`, then
//! epochs of shuffled, augmented mini-batches, evaluation, metrics and
//! atomic checkpoints. Everything random derives from `(seed, epoch)`, so a
//! run resumed from its last checkpoint continues bit for bit, from the end
//! of an epoch or, after Ctrl-C, from the middle of one (`checkpoint.rs`).
//! Every update is checked first: a non-finite loss or gradient stops the
//! run (or skips the batch), and dead layers are reported (`health.rs`).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use graph::{preset, Init, Isa, Loss, ModelSpec, Plan, Reduction, Sgd, Shape, PRESETS};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::augment::{fill_batch, Augment};
use crate::checkpoint::{self, EpochSums, Progress};
use crate::cli::{Normalize, Recipe, RunArgs, Schedule};
use crate::conv_paths;
use crate::data::{Dataset, Normalizer, Splits};
use crate::fsops;
use crate::health;
use crate::interrupt::{self, Interrupted};
use crate::metrics::{self, EpochRow};
use crate::plot;
use crate::team::Team;

/// Everything that determines a run, saved as `config.json` in its folder.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunConfig {
    /// The preset name or spec file the user gave.
    pub model: String,
    /// The model actually trained (recipe and class count applied).
    pub spec: ModelSpec,
    pub recipe: Recipe,
    pub epochs: usize,
    pub batch: usize,
    pub lr: f64,
    pub momentum: f32,
    pub weight_decay: f32,
    pub schedule: Schedule,
    pub normalize: Normalize,
    pub augment: bool,
    pub classes: Vec<String>,
    pub limit_train: Option<usize>,
    pub limit_test: Option<usize>,
    pub seed: u64,
    pub data: PathBuf,
    pub checkpoint_every: usize,
    /// Skip batches with a non-finite loss or gradient instead of stopping.
    #[serde(default)]
    pub skip_nonfinite: bool,
    /// The kernels the run trains with (`avx512`, `avx2`, `portable`): its
    /// bits reproduce only under the same ones. `None` in a run written
    /// before the trainer recorded them.
    #[serde(default)]
    pub isa: Option<String>,
    /// Each convolution's path (`conv1` -> `direct`); bits depend on them
    /// too. `None`: the plan's defaults at `isa` (a run written before the
    /// trainer recorded paths, whose defaults have not changed since, or one
    /// resumed at another ISA).
    #[serde(default)]
    pub conv_paths: Option<conv_paths::Paths>,
}

impl RunConfig {
    /// The kernels to train with: the recorded ones ([`RunConfig::isa`],
    /// checked by [`resume_isa`] on resuming), else [`Isa::detect`].
    pub fn kernels(&self) -> Isa {
        self.isa
            .as_deref()
            .and_then(|n| n.parse::<Isa>().ok())
            .filter(|i| i.supported())
            .unwrap_or_else(Isa::detect)
    }
    pub fn loss(&self) -> Loss {
        match self.recipe {
            Recipe::Modern => Loss::CrossEntropy,
            Recipe::Seed => Loss::SeedSquaredError,
        }
    }
    /// The optimiser for a 1-based epoch: SGD with the recipe's momentum and
    /// weight decay; the seed recipe clips every dense step as the original
    /// engine does ([`graph::clipped_lr`]).
    pub fn sgd_at(&self, epoch: usize) -> Sgd {
        Sgd {
            lr: self.lr_at(epoch) as f32,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            clip_dense: self.recipe == Recipe::Seed,
        }
    }
    pub fn reduction(&self) -> Reduction {
        match self.recipe {
            Recipe::Modern => Reduction::Mean,
            Recipe::Seed => Reduction::Sum,
        }
    }
    pub fn init(&self) -> Init {
        match self.recipe {
            Recipe::Modern => Init::He,
            Recipe::Seed => Init::Seed,
        }
    }
    /// The learning rate of a 1-based epoch.
    pub fn lr_at(&self, epoch: usize) -> f64 {
        let done = (epoch - 1) as f64 / self.epochs.max(1) as f64;
        let factor = match self.schedule {
            Schedule::Constant => 1.0,
            Schedule::Step if done >= 0.75 => 0.01,
            Schedule::Step if done >= 0.5 => 0.1,
            Schedule::Step => 1.0,
            Schedule::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * done).cos()),
        };
        self.lr * factor
    }
}

/// The most a model spec file may hold: a spec of thousands of layers is a
/// few hundred kilobytes.
const SPEC_FILE_LIMIT: u64 = 1 << 20;

/// A preset by name, or a TOML spec file by path.
pub fn resolve_model(model: &str) -> Result<ModelSpec> {
    if let Some(spec) = preset(model) {
        return Ok(spec);
    }
    let path = Path::new(model);
    if graph::bounded::present(path) {
        let text = graph::bounded::read_text(path, SPEC_FILE_LIMIT, "model spec file")
            .with_context(|| format!("{model}: cannot read the model spec file"))?;
        return ModelSpec::from_toml(&text).map_err(|e| anyhow::anyhow!("{model}: {e}"));
    }
    bail!("--model {model}: not a preset ({}) and no such spec file", PRESETS.join(", "))
}

/// Turn the command line into a complete configuration.
pub fn configure(model: &str, args: &RunArgs, data: &Path) -> Result<RunConfig> {
    let classes: Vec<String> =
        args.classes.split(',').map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect();
    if classes.len() < 2 {
        bail!("--classes {:?}: name at least two classes, comma-separated", args.classes);
    }
    let mut spec = resolve_model(model)?.with_classes(classes.len());
    let modern = args.recipe == Recipe::Modern;
    if !modern {
        spec = spec.without_bias();
    }
    // He-init FC heads die at lr 0.05 on this data (design notes, section 5).
    let gap_head = spec.layers.iter().any(|l| matches!(l, graph::LayerSpec::GlobalAvgPool));
    let default_lr = if modern && gap_head { 0.05 } else { 0.01 };
    let conv_paths = conv_paths::for_new_run(&spec)?;
    let config = RunConfig {
        model: model.to_string(),
        spec,
        recipe: args.recipe,
        epochs: args.epochs.unwrap_or(35),
        batch: args.batch.unwrap_or(if modern { 64 } else { 200 }),
        lr: args.lr.unwrap_or(default_lr),
        momentum: if modern { 0.9 } else { 0.0 },
        weight_decay: if modern { 5e-4 } else { 0.0 },
        schedule: args.schedule.unwrap_or(if modern { Schedule::Cosine } else { Schedule::Constant }),
        normalize: args.normalize.unwrap_or(if modern { Normalize::Meanstd } else { Normalize::Unit }),
        augment: !args.no_augment,
        classes,
        limit_train: args.limit_train,
        limit_test: args.limit_test,
        seed: args.seed,
        // Absolute, so a resume finds it from any working directory.
        data: std::path::absolute(data).unwrap_or_else(|_| data.to_path_buf()),
        checkpoint_every: args.checkpoint_every,
        skip_nonfinite: args.skip_nonfinite,
        isa: Some(Isa::detect().name().to_string()),
        conv_paths,
    };
    validate(&config)?;
    Ok(config)
}

/// The kernels a resumed run continues with. `GAPNET_ISA` (or
/// `GAPNET_PORTABLE`) set: those, with a note when the run was trained with
/// others. Unset: the recorded ones, so that the run continues bit for bit,
/// unless this CPU cannot run them. Every departure is said: the run then
/// goes on, but its bits are no longer those of an uninterrupted run.
pub fn resume_isa(saved: &RunConfig, path: &Path) -> Result<Isa> {
    use graph::isa::{ISA_ENV, PORTABLE_ENV};
    let set = |v: &str| std::env::var_os(v).is_some_and(|v| !v.is_empty());
    let chosen = (set(ISA_ENV) || set(PORTABLE_ENV)).then(Isa::detect);
    let recorded = match saved.isa.as_deref() {
        Some(name) => Some(
            name.parse::<Isa>()
                .map_err(|e| anyhow::anyhow!("{}: \"isa\": \"{name}\": {e}", path.display()))?,
        ),
        None => None,
    };
    let not_bitwise = "the run continues, but not bit for bit as an uninterrupted run would";
    Ok(match (recorded, chosen) {
        (Some(r), Some(c)) if r != c => {
            println!(
                "note: this run was trained with the {} kernels; {ISA_ENV} chose {}: {not_bitwise}",
                r.label(),
                c.label()
            );
            c
        }
        (_, Some(c)) => c,
        (Some(r), None) if r.supported() => r,
        (Some(r), None) => {
            let best = Isa::detect();
            println!("note: this run was trained with the {} kernels, which this CPU cannot run; continuing with {}: {not_bitwise}", r.label(), best.label());
            best
        }
        (None, None) => {
            let best = Isa::detect();
            println!(
                "note: {} does not record which kernels trained this run (it predates that); continuing with {}. \
                 To continue bit for bit, set {ISA_ENV} to the original's ({ISA_ENV}=portable for a run made with {PORTABLE_ENV}=1)",
                path.display(),
                best.label()
            );
            best
        }
    })
}

pub fn validate(c: &RunConfig) -> Result<()> {
    if c.epochs == 0 {
        bail!("--epochs 0: train for at least one epoch");
    }
    if c.batch == 0 {
        bail!("--batch 0: a batch needs at least one image");
    }
    check_lr(c.lr)?;
    if c.checkpoint_every == 0 {
        bail!("--checkpoint-every 0: use 1 or more (epochs between checkpoints)");
    }
    Ok(())
}

/// A number for a message: at most a few significant digits.
pub fn short(v: f64) -> String {
    let s = format!("{v}");
    if s.len() <= 10 {
        s
    } else {
        format!("{v:.4e}")
    }
}

/// Check a run's saved `config.json` (at `path`) as untrusted input: its
/// values, its classes against its model's outputs, its data path.
pub fn check_saved(c: &RunConfig, path: &Path) -> Result<()> {
    let file = path.display();
    validate(c).with_context(|| format!("{file}: holds settings no run can have"))?;
    let mut names = c.classes.clone();
    names.sort_unstable();
    names.dedup();
    if c.classes.len() < 2 || names.len() != c.classes.len() || c.classes.iter().any(|n| n.trim().is_empty())
    {
        bail!("{file}: field \"classes\" must name at least two different classes, not {:?}", c.classes);
    }
    let outputs = c.spec.layers.iter().rev().find_map(|l| match l {
        graph::LayerSpec::Dense { units, .. } => Some(*units),
        _ => None,
    });
    if outputs != Some(c.classes.len()) {
        bail!(
            "{file}: field \"classes\" names {} classes but the model in field \"spec\" has {} outputs",
            c.classes.len(),
            outputs.map_or("no dense".to_string(), |o| o.to_string())
        );
    }
    if !c.data.is_dir() {
        let how = if c.data.is_relative() {
            " (a relative path, stored by an older trainer: it is read from the working directory, so \
             resume from the folder the run was started in)"
        } else {
            ""
        };
        bail!("{file}: field \"data\": {} is not a folder{how}", c.data.display());
    }
    Ok(())
}

/// What a changed `--epochs` does to a schedule that depends on the run's
/// length: the learning rate of epoch `next` before and after.
fn schedule_note(previous: &RunConfig, config: &RunConfig, next: usize) -> Option<String> {
    if previous.epochs == config.epochs || config.schedule == Schedule::Constant || previous.lr != config.lr {
        return None;
    }
    let (before, after) = (previous.lr_at(next.min(previous.epochs.max(1))), config.lr_at(next));
    Some(format!(
        "note: --epochs {} -> {}: the {} schedule is recomputed over {} epochs, so epoch {next}'s lr is {} \
         (it was {} in the {}-epoch run)",
        previous.epochs,
        config.epochs,
        format!("{:?}", config.schedule).to_lowercase(),
        config.epochs,
        short(after),
        short(before),
        previous.epochs
    ))
}

/// The engine computes in f32: a learning rate must be a positive, normal
/// f32 (1e-60 is 0 there and nothing would train; 1e300 is infinite).
pub fn check_lr(lr: f64) -> Result<()> {
    let shown = graph::brief::number(lr);
    if lr.is_nan() || lr <= 0.0 {
        bail!("--lr {shown}: the learning rate must be a positive number");
    }
    let single = lr as f32;
    if single.is_infinite() {
        bail!("--lr {shown}: too large for f32, the engine's precision (at most {:e})", f32::MAX);
    }
    if !single.is_normal() {
        bail!(
            "--lr {shown}: too small for f32, the engine's precision ({} there; at least {:e}); nothing would train",
            if single == 0.0 { "0" } else { "subnormal" },
            f32::MIN_POSITIVE
        );
    }
    Ok(())
}

/// What a finished (or resumed-and-finished) run leaves behind.
pub struct Outcome {
    pub rows: Vec<EpochRow>,
    pub out: PathBuf,
    pub params: usize,
}

impl Outcome {
    pub fn best_test_acc(&self) -> f64 {
        self.rows.iter().map(|r| r.test_acc).fold(0.0, f64::max)
    }
}

/// The data a run trains on, with its limits applied.
pub fn prepare_data(mut splits: Splits, config: &RunConfig) -> Result<Splits> {
    for (limit, ds, flag) in [
        (config.limit_train, &mut splits.train, "--limit-train"),
        (config.limit_test, &mut splits.test, "--limit-test"),
    ] {
        if let Some(n) = limit {
            if n == 0 {
                bail!("{flag} 0: keep at least one image");
            }
            if n > ds.len() {
                eprintln!(
                    "warning: {flag} {n} is more than the {} images there are; using all of them",
                    ds.len()
                );
            }
            ds.truncate(n.min(ds.len()));
        }
    }
    if splits.train.is_empty() || splits.test.is_empty() {
        bail!("{}: the training or test split is empty", splits.dir.display());
    }
    Ok(splits)
}

pub const CONFIG: &str = "config.json";
pub const STATE: &str = "state.safetensors";
pub const MODEL: &str = "model.safetensors";
pub const CURVES: &str = "curves.png";

/// Train `config` into `out`, whose lock the caller holds. With `previous`
/// (the run's saved settings, which `config` may change by `--epochs`,
/// `--lr`, ...), continue from `out`'s last committed checkpoint (mid-epoch
/// included) instead of starting afresh; a run with no checkpoint yet
/// starts from epoch 1.
///
/// Stops with an error, keeping the last checkpoint, when a batch's loss or
/// gradient is not finite (unless `skip_nonfinite`: then the batch makes no
/// update and is counted), and with [`Interrupted`] after saving a
/// checkpoint when Ctrl-C was pressed.
///
/// In an MPI job every rank calls this with the same arguments; `team`
/// splits each step and evaluation between them, and rank 0 alone reads and
/// writes `out` (its caller holds the lock).
pub fn run(
    config: &RunConfig,
    out: &Path,
    splits: &Splits,
    previous: Option<&RunConfig>,
    team: &Team,
) -> Result<Outcome> {
    let (train, test) = (&splits.train, &splits.test);
    let [c, h, w] = train.shape;
    let mut plan = build(config, Shape::new(c, h, w), config.batch)?;
    let norm = match config.normalize {
        Normalize::Meanstd => Normalizer::fit(train),
        Normalize::Unit => Normalizer::identity(c),
    };
    let batches = train.len().div_ceil(config.batch);
    let mut rows = Vec::new();
    // The last checkpoint on disk (kept if training diverges).
    let mut saved = None;
    // Where the run stands: rank 0 starts or reads the state, every rank gets it.
    let started = team
        .is_root()
        .then(|| start(&mut plan, out, config, previous, batches, &norm, &mut rows, &mut saved));
    let mut at = team.share_state(&mut plan, started)?;
    // A batch never holds more images than a split.
    let room = config.batch.min(train.len().max(test.len()));
    let mut x = vec![0.0f32; room * train.image_len()];
    let mut y = vec![0u32; room];
    let augment = config.augment.then_some(Augment { pad: 4, flip: true });
    if at.epoch >= config.epochs {
        println!(
            "{}: all {} epochs are done; pass --epochs N to train further",
            out.display(),
            config.epochs
        );
    }
    let k = config.classes.len();
    let error_sample = error_sample(train.len(), config.seed);
    let mut dead_reported: Vec<String> = Vec::new();
    let root = team.is_root();
    for epoch in at.epoch + 1..=config.epochs {
        let lr = config.lr_at(epoch);
        let sgd = config.sgd_at(epoch);
        let started = Instant::now();
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(config.seed, epoch as u64)));
        let bar = progress(train.len(), epoch, config.epochs);
        // A resumed epoch goes on from its recorded batch with its partial sums.
        let (first, mut sums) = (at.batches, at.partial);
        let secs_before = sums.train_secs;
        if let Some(bar) = &bar {
            bar.inc((first * config.batch).min(train.len()) as u64);
        }
        team.take_comm();
        for (b, idx) in order.chunks(config.batch).enumerate().skip(first) {
            let t = Instant::now();
            let (xs, ys) = (&mut x[..idx.len() * train.image_len()], &mut y[..idx.len()]);
            // Only this rank's images (all of them, alone).
            let mine = team.images(&plan, idx.len());
            let len = train.image_len();
            let xs_mine = &mut xs[mine.start * len..mine.end * len];
            fill_batch(train, &idx[mine], &norm, augment, config.seed, epoch as u64, xs_mine);
            for (label, &i) in ys.iter_mut().zip(idx) {
                *label = train.labels[i];
            }
            sums.data_secs += t.elapsed().as_secs_f64();
            let (step, stop) =
                team.step(&mut plan, xs, ys, config.loss(), config.reduction(), interrupt::requested());
            match health::nonfinite(&plan, &step) {
                None => {
                    plan.sgd_step(&sgd);
                    sums.add(&step, idx.len());
                }
                Some(_) if config.skip_nonfinite => {
                    sums.skipped += 1;
                    at.skipped_total += 1;
                }
                Some(what) => bail!("{}", diverged(config, out, epoch, b, batches, lr, &what, saved)),
            }
            if b == 0 && root {
                let dead: Vec<String> =
                    health::dead_relus(&plan).into_iter().filter(|d| !dead_reported.contains(d)).collect();
                if !dead.is_empty() {
                    eprintln!(
                        "warning: {} epoch {epoch}: {} output zero for every image of the first batch: \
                         dead units that pass no gradient back; try a lower --lr than {}",
                        config.model,
                        dead.join(", "),
                        config.lr
                    );
                    dead_reported.extend(dead);
                }
            }
            if let Some(bar) = &bar {
                bar.inc(idx.len() as u64);
                let seen = sums.images.max(1) as f64;
                let rate = bar.position() as f64 / (secs_before + started.elapsed().as_secs_f64());
                bar.set_message(format!("loss {:.4}  {rate:.0} img/s", sums.cross_entropy / seen));
            }
            if stop && b + 1 < batches {
                if let Some(bar) = &bar {
                    bar.finish_and_clear();
                }
                sums.train_secs = secs_before + started.elapsed().as_secs_f64();
                let here = Progress {
                    epoch: epoch - 1,
                    batches: b + 1,
                    partial: sums,
                    skipped_total: at.skipped_total,
                };
                if root {
                    checkpoint::write(&plan, out, &here, config, &norm, &rows)?;
                }
                let at = format!("epoch {epoch}, batch {} of {batches}", b + 1);
                return Err(Interrupted { at, out: out.to_path_buf(), note: None }.into());
            }
        }
        at = Progress { epoch, batches: 0, partial: EpochSums::default(), skipped_total: at.skipped_total };
        let train_secs = secs_before + started.elapsed().as_secs_f64();
        if sums.images == 0 {
            bail!(
                "epoch {epoch}: every one of the {batches} batches had a non-finite loss or gradient, so the \
                 parameters themselves have diverged; {}; start again with a lower --lr than {} (e.g. {})",
                last_good(out, saved),
                config.lr,
                config.lr / 10.0
            );
        }
        let comm = team.take_comm().as_secs_f64();
        let (test_ce, test_acc) = evaluate(&mut plan, test, &norm, config.batch, &mut x, &mut y, team);
        let sample = evaluate_on(&mut plan, train, &error_sample, &norm, config.batch, &mut x, &mut y, team);
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let n = sums.images as f64;
        let row = EpochRow {
            epoch,
            lr,
            train_ce: sums.cross_entropy / n,
            train_seed_error: sums.seed_error / n,
            train_acc: sums.correct as f64 / n,
            test_ce,
            test_acc,
            seconds: secs_before + started.elapsed().as_secs_f64(),
            images_per_s: train.len() as f64 / train_secs,
            sample_seed_error: sample.seed_error / error_sample.len() as f64,
        };
        // Batch preparation (u8 -> normalised, augmented f32) runs between
        // steps; its share of the training time is printed so it can be watched.
        let skipped = if sums.skipped > 0 {
            format!("  skipped {} of {batches} batches (non-finite)", sums.skipped)
        } else {
            String::new()
        };
        // In a job, the share of the training time spent passing the
        // gradients along (and waiting for the slowest rank).
        let comm = if team.ranks() > 1 {
            let steps = batches.saturating_sub(first).max(1) as f64;
            format!("  comm {:.1}% ({:.2} ms/step)", 100.0 * comm / train_secs, 1e3 * comm / steps)
        } else {
            String::new()
        };
        println!(
            "{}  data {:.1}%{comm}{skipped}",
            describe(&config.model, &row, config.epochs),
            100.0 * sums.data_secs / train_secs
        );
        rows.push(row);
        if root {
            metrics::write_all(out, &rows)?;
        }
        if health::stuck_at_chance(&rows, k) {
            eprintln!(
                "warning: {} epoch {epoch}: the training loss has stayed at chance ({:.4}, ln {k} = {:.4}) for \
                 {} epochs: the network is not learning (dead units?); try a lower --lr than {}",
                config.model,
                rows[rows.len() - 1].train_ce,
                (k as f64).ln(),
                health::CHANCE_EPOCHS,
                config.lr
            );
        }
        let due = epoch % config.checkpoint_every == 0 || epoch == config.epochs;
        let stop = team.any(interrupt::requested()) && epoch < config.epochs;
        if (due || stop) && root {
            checkpoint::write(&plan, out, &at, config, &norm, &rows)?;
            saved = Some(at);
            plot::plot_curves(
                &out.join(CURVES),
                &[plot::Series {
                    label: &config.model,
                    rows: &rows,
                    sample_error: config.recipe == Recipe::Seed,
                }],
            )?;
        }
        if stop {
            let at = format!("the end of epoch {epoch}");
            return Err(Interrupted { at, out: out.to_path_buf(), note: None }.into());
        }
    }
    if at.skipped_total > 0 {
        println!(
            "skipped {} batches with a non-finite loss or gradient (--skip-nonfinite); a lower --lr may avoid them",
            at.skipped_total
        );
    }
    Ok(Outcome { rows, out: out.to_path_buf(), params: plan.params().len() })
}

/// Rank 0's start of [`run`]: the state of a resumed run read back (and the
/// files derived from it repaired), or a fresh one initialised and its
/// `config.json` written. Returns where the run stands.
#[allow(clippy::too_many_arguments)]
fn start(
    plan: &mut Plan,
    out: &Path,
    config: &RunConfig,
    previous: Option<&RunConfig>,
    batches: usize,
    norm: &Normalizer,
    rows: &mut Vec<EpochRow>,
    saved: &mut Option<Progress>,
) -> Result<Progress> {
    let resume = previous.is_some();
    let mut at = Progress::default();
    let loaded = if resume { checkpoint::read(plan, out, config, batches)? } else { None };
    // This process holds the folder's lock: a temporary file is a leftover.
    fsops::clean_temp_files(out);
    match loaded {
        Some(loaded) => {
            (at, *saved) = (loaded.progress, Some(loaded.progress));
            *rows = resume_rows(out, loaded)?;
            let repaired = repair(plan, out, &at, config, norm, rows)?;
            if !repaired.is_empty() {
                println!("{}: rebuilt from the checkpoint: {}", out.display(), repaired.join(", "));
            }
            if at.epoch < config.epochs {
                let next = at.epoch + 1;
                let mid = if at.batches > 0 {
                    format!(" from batch {} of {batches}", at.batches + 1)
                } else {
                    String::new()
                };
                println!(
                    "resuming {}: epoch {next} of {}{mid}, lr {}",
                    out.display(),
                    config.epochs,
                    short(config.lr_at(next))
                );
                if let Some(note) = previous.and_then(|p| schedule_note(p, config, next)) {
                    println!("{note}");
                }
            }
        }
        None => {
            if resume {
                println!("{}: no checkpoint yet; starting from epoch 1", out.display());
                // Rows of an epoch that was never committed: it runs again.
                for name in [metrics::JSONL_FILE, metrics::CSV_FILE, CURVES] {
                    fsops::remove_file(&out.join(name))
                        .with_context(|| format!("{}: cannot remove", out.join(name).display()))?;
                }
            }
            plan.initialize(config.init(), config.seed);
            fsops::write_atomic(&out.join(CONFIG), serde_json::to_string_pretty(config)?.as_bytes())
                .with_context(|| format!("{}: cannot write", out.join(CONFIG).display()))?;
        }
    }
    Ok(at)
}

/// The metrics of the committed epochs, with the timings `metrics.jsonl`
/// logged for them (NaN for those it has lost, with a note).
fn resume_rows(out: &Path, loaded: checkpoint::Loaded) -> Result<Vec<EpochRow>> {
    let jsonl = out.join(metrics::JSONL_FILE);
    let logged = match metrics::read_jsonl(&jsonl) {
        Ok(rows) => rows,
        Err(e) if loaded.rows.is_some() => {
            eprintln!("warning: {e:#}; rebuilding it from the checkpoint");
            Vec::new()
        }
        Err(e) => return Err(e),
    };
    let epoch = loaded.progress.epoch;
    let committed = match loaded.rows {
        Some(rows) => rows,
        // A state written before states carried their metrics.
        None => {
            let rows: Vec<EpochRow> = logged.iter().filter(|r| r.epoch <= epoch).cloned().collect();
            if rows.len() != epoch || rows.iter().enumerate().any(|(i, r)| r.epoch != i + 1) {
                bail!(
                    "{}: holds {} rows for the {epoch} epochs of the checkpoint, and this older checkpoint \
                     carries no copy of them; restore the file to resume",
                    jsonl.display(),
                    rows.len()
                );
            }
            return Ok(rows);
        }
    };
    let (rows, lost) = checkpoint::merge_timings(committed, &logged);
    if lost > 0 {
        eprintln!(
            "warning: {}: the timings of {lost} of the {epoch} committed epochs are lost (now NaN); every \
             other column comes from the checkpoint",
            jsonl.display()
        );
    }
    Ok(rows)
}

/// Rebuild the files derived from the committed state that are missing or
/// differ from it: `model.safetensors`, the metrics files, `curves.png`.
/// Returns what was rebuilt and why.
fn repair(
    plan: &Plan,
    out: &Path,
    at: &Progress,
    config: &RunConfig,
    norm: &Normalizer,
    rows: &[EpochRow],
) -> Result<Vec<String>> {
    let mut repaired = Vec::new();
    let check = |name: &str, want: &[u8], repaired: &mut Vec<String>| -> Result<bool> {
        let path = out.join(name);
        let why = match graph::bounded::read_capped(&path, want.len() as u64 + 1, name) {
            Ok(have) if have == want => return Ok(false),
            Ok(_) => "stale",
            Err(_) => "missing",
        };
        fsops::write_atomic(&path, want).with_context(|| format!("{}: cannot write", path.display()))?;
        repaired.push(format!("{name} ({why})"));
        Ok(true)
    };
    check(MODEL, &checkpoint::model_bytes(plan, at, config, norm)?, &mut repaired)?;
    let (csv, jsonl) = metrics::render(rows)?;
    let mut changed = check(metrics::JSONL_FILE, jsonl.as_bytes(), &mut repaired)?;
    changed |= check(metrics::CSV_FILE, csv.as_bytes(), &mut repaired)?;
    let curves = out.join(CURVES);
    if !rows.is_empty() && (changed || !curves.exists()) {
        plot::plot_curves(
            &curves,
            &[plot::Series { label: &config.model, rows, sample_error: config.recipe == Recipe::Seed }],
        )?;
        repaired.push(format!("{CURVES} ({})", if changed { "stale" } else { "missing" }));
    }
    Ok(repaired)
}

/// Where the last good checkpoint is, for a message.
fn last_good(out: &Path, saved: Option<Progress>) -> String {
    match saved {
        Some(p) => format!("the last good checkpoint ({}) is kept in {}", p.describe(), out.display()),
        None => "no checkpoint had been written yet".to_string(),
    }
}

/// The one-line message of a run stopped by a non-finite loss or gradient.
#[allow(clippy::too_many_arguments)]
fn diverged(
    config: &RunConfig,
    out: &Path,
    epoch: usize,
    batch: usize,
    batches: usize,
    lr: f64,
    what: &str,
    saved: Option<Progress>,
) -> String {
    let lower = config.lr / 10.0;
    let advice = match saved {
        Some(_) => format!(
            "resume it with a lower learning rate (trainer train --resume {} --lr {lower}) or start again \
             with a lower --lr, or pass --skip-nonfinite to skip such batches",
            interrupt::shell_quote(out)
        ),
        None => format!(
            "start again with a lower --lr than {} (e.g. {lower}), or pass --skip-nonfinite to skip such batches",
            config.lr
        ),
    };
    format!(
        "epoch {epoch}, batch {} of {batches}: {what} at learning rate {lr}: training diverged and stopped \
         before updating; {}; {advice}",
        batch + 1,
        last_good(out, saved)
    )
}

/// The plan of `config`'s model for `input` images, or a one-line error
/// naming the model and the layer (or the memory it would need).
pub fn build(config: &RunConfig, input: Shape, batch: usize) -> Result<Plan> {
    let what = format!("model {}", config.model);
    health::check_memory(&config.spec, input, batch, &what)?;
    let mut plan = Plan::for_isa(&config.spec, input, batch, config.kernels())
        .map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    conv_paths::apply(&mut plan, config.conv_paths.as_ref()).map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    Ok(plan)
}

/// Mean cross-entropy and accuracy over a whole split, in batches.
pub fn evaluate(
    plan: &mut Plan,
    ds: &Dataset,
    norm: &Normalizer,
    batch: usize,
    x: &mut [f32],
    y: &mut [u32],
    team: &Team,
) -> (f64, f64) {
    let all: Vec<usize> = (0..ds.len()).collect();
    let sums = evaluate_on(plan, ds, &all, norm, batch, x, y, team);
    let n = ds.len() as f64;
    (sums.cross_entropy / n, sums.correct as f64 / n)
}

/// Loss sums of a forward pass over the images `idx` of `ds` (no
/// augmentation), in batches of `batch` taken in the order of `idx`, added
/// in that order. In a job each rank computes a share of the batches.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_on(
    plan: &mut Plan,
    ds: &Dataset,
    idx: &[usize],
    norm: &Normalizer,
    batch: usize,
    x: &mut [f32],
    y: &mut [u32],
    team: &Team,
) -> graph::LossSums {
    let chunks: Vec<&[usize]> = idx.chunks(batch).collect();
    let mut per_batch = vec![graph::LossSums::default(); chunks.len()];
    for b in team.batches(chunks.len()) {
        let idx = chunks[b];
        let (xs, ys) = (&mut x[..idx.len() * ds.image_len()], &mut y[..idx.len()]);
        fill_batch(ds, idx, norm, None, 0, 0, xs);
        for (label, &i) in ys.iter_mut().zip(idx) {
            *label = ds.labels[i];
        }
        per_batch[b] = plan.evaluate(xs, ys, Loss::CrossEntropy);
    }
    team.gather_batches(&mut per_batch);
    let mut sums = graph::LossSums::default();
    for s in &per_batch {
        sums.add(s);
    }
    sums
}

/// Images in the sample the blog's error is measured on (`sample_seed_error`).
pub const ERROR_SAMPLE: usize = 1000;

/// The training images `sample_seed_error` is measured on after every
/// epoch: min(1000, n) of them, drawn without replacement once from the
/// run's seed (a stream of its own, apart from the epochs' shuffles), in
/// index order.
pub fn error_sample(n: usize, seed: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, u64::MAX));
    let mut idx = rand::seq::index::sample(&mut rng, n, n.min(ERROR_SAMPLE)).into_vec();
    idx.sort_unstable();
    idx
}

/// One line per epoch, for logs and terminals alike. `sample err` is
/// `sample_seed_error`, the blog's error as its author measured it.
pub fn describe(model: &str, r: &EpochRow, epochs: usize) -> String {
    format!(
        "{model} epoch {:>3}/{epochs}  lr {:.4}  train ce {:.4} err {:.4} acc {:.3}  sample err {:.4}  test ce {:.4} acc {:.3}  {:.1}s {:.0} img/s",
        r.epoch, r.lr, r.train_ce, r.train_seed_error, r.train_acc, r.sample_seed_error, r.test_ce, r.test_acc, r.seconds, r.images_per_s
    )
}

/// A progress bar on a terminal; nothing otherwise (plain lines instead).
fn progress(len: usize, epoch: usize, epochs: usize) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(len as u64);
    let style = ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len}  {msg}")
        .expect("valid template")
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(format!("{epoch}/{epochs}"));
    Some(bar)
}

/// A well-mixed 64-bit seed from two numbers (splitmix64's finaliser).
pub fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_sample_is_fixed_by_the_seed_and_covers_small_sets() {
        assert_eq!(error_sample(300, 1), (0..300).collect::<Vec<_>>());
        let a = error_sample(10_000, 1);
        assert_eq!(a.len(), ERROR_SAMPLE);
        assert!(
            a.windows(2).all(|w| w[0] < w[1]) && *a.last().unwrap() < 10_000,
            "sorted, distinct, in range"
        );
        assert_eq!(a, error_sample(10_000, 1));
        assert_ne!(a, error_sample(10_000, 2));
        // Not simply the first images.
        assert!(*a.last().unwrap() > 9_000 && a[0] < 100, "{:?}..{:?}", &a[..3], &a[a.len() - 3..]);
    }
}
