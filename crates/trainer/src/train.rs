//! The training loop: settings resolved once into a `RunConfig`, then
//! epochs of shuffled, augmented mini-batches, evaluation, metrics and
//! atomic checkpoints. Everything random derives from `(seed, epoch)`, so a
//! run resumed from its last checkpoint continues bit for bit.

use std::fs;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use graph::{preset, write_atomic, Arena, Init, Loss, ModelSpec, Plan, Reduction, Sgd, Shape, PRESETS};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::augment::{fill_batch, Augment};
use crate::cli::{Normalize, Recipe, RunArgs, Schedule};
use crate::data::{Dataset, Normalizer, Splits};
use crate::metrics::{self, EpochRow};
use crate::plot;

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
}

impl RunConfig {
    pub fn loss(&self) -> Loss {
        match self.recipe {
            Recipe::Modern => Loss::CrossEntropy,
            Recipe::Seed => Loss::SquaredError,
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

/// A preset by name, or a TOML spec file by path.
pub fn resolve_model(model: &str) -> Result<ModelSpec> {
    if let Some(spec) = preset(model) {
        return Ok(spec);
    }
    let path = Path::new(model);
    if path.exists() {
        let text =
            fs::read_to_string(path).with_context(|| format!("{model}: cannot read the model spec file"))?;
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
        spec = spec.without_conv_bias();
    }
    // He-init FC heads die at lr 0.05 on this data (design notes, section 5).
    let gap_head = spec.layers.iter().any(|l| matches!(l, graph::LayerSpec::GlobalAvgPool));
    let default_lr = if modern && gap_head { 0.05 } else { 0.01 };
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
        data: data.to_path_buf(),
        checkpoint_every: args.checkpoint_every,
    };
    validate(&config)?;
    Ok(config)
}

fn validate(c: &RunConfig) -> Result<()> {
    if c.epochs == 0 {
        bail!("--epochs 0: train for at least one epoch");
    }
    if c.batch == 0 {
        bail!("--batch 0: a batch needs at least one image");
    }
    if !(c.lr.is_finite() && c.lr > 0.0) {
        bail!("--lr {}: the learning rate must be a positive number", c.lr);
    }
    if c.checkpoint_every == 0 {
        bail!("--checkpoint-every 0: use 1 or more (epochs between checkpoints)");
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

/// Train `config` into `out`. With `resume`, continue from `out`'s last
/// checkpoint instead of starting afresh.
pub fn run(config: &RunConfig, out: &Path, splits: &Splits, resume: bool) -> Result<Outcome> {
    let (train, test) = (&splits.train, &splits.test);
    let [c, h, w] = train.shape;
    let mut plan = Plan::new(&config.spec, Shape::new(c, h, w), config.batch)
        .map_err(|e| anyhow::anyhow!("model {}: {e}", config.model))?;
    let norm = match config.normalize {
        Normalize::Meanstd => Normalizer::fit(train),
        Normalize::Unit => Normalizer::identity(c),
    };
    let mut rows = Vec::new();
    let mut start = 1;
    if resume {
        let state = out.join(STATE);
        let bytes =
            fs::read(&state).with_context(|| format!("{}: cannot read the checkpoint", state.display()))?;
        let meta = plan
            .load_safetensors(&[Arena::Params, Arena::Velocity], &bytes, &state.display().to_string())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let done: usize = meta
            .get("epoch")
            .and_then(|e| e.parse().ok())
            .with_context(|| format!("{}: no epoch in the checkpoint header", state.display()))?;
        rows = metrics::read_jsonl(&out.join(metrics::JSONL_FILE))?;
        rows.retain(|r| r.epoch <= done);
        start = done + 1;
        println!("resuming {} at epoch {start} of {}", out.display(), config.epochs);
    } else {
        plan.initialize(config.init(), config.seed);
        write_atomic(&out.join(CONFIG), serde_json::to_string_pretty(config)?.as_bytes())
            .with_context(|| format!("{}: cannot write", out.join(CONFIG).display()))?;
    }
    let mut x = vec![0.0f32; config.batch * train.image_len()];
    let mut y = vec![0u32; config.batch];
    let augment = config.augment.then_some(Augment { pad: 4, flip: true });
    for epoch in start..=config.epochs {
        let lr = config.lr_at(epoch);
        let sgd = Sgd { lr: lr as f32, momentum: config.momentum, weight_decay: config.weight_decay };
        let started = Instant::now();
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(config.seed, epoch as u64)));
        let bar = progress(train.len(), epoch, config.epochs);
        let mut sums = graph::LossSums::default();
        let mut data_secs = 0.0;
        for idx in order.chunks(config.batch) {
            let t = Instant::now();
            let (xs, ys) = (&mut x[..idx.len() * train.image_len()], &mut y[..idx.len()]);
            fill_batch(train, idx, &norm, augment, config.seed, epoch as u64, xs);
            for (label, &i) in ys.iter_mut().zip(idx) {
                *label = train.labels[i];
            }
            data_secs += t.elapsed().as_secs_f64();
            sums.add(&plan.train_step(xs, ys, config.loss(), config.reduction(), &sgd));
            if let Some(bar) = &bar {
                bar.inc(idx.len() as u64);
                let seen = bar.position() as f64;
                let rate = seen / started.elapsed().as_secs_f64();
                bar.set_message(format!("loss {:.4}  {rate:.0} img/s", sums.cross_entropy / seen));
            }
        }
        let train_secs = started.elapsed().as_secs_f64();
        let n = train.len() as f64;
        if !sums.loss.is_finite() {
            bail!("epoch {epoch}: the loss is not finite ({}); try a lower --lr than {lr}", sums.loss);
        }
        let (test_ce, test_acc) = evaluate(&mut plan, test, &norm, config.batch, &mut x, &mut y);
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let row = EpochRow {
            epoch,
            lr,
            train_ce: sums.cross_entropy / n,
            train_seed_error: sums.seed_error / n,
            train_acc: sums.correct as f64 / n,
            test_ce,
            test_acc,
            seconds: started.elapsed().as_secs_f64(),
            images_per_s: n / train_secs,
        };
        // Batch preparation (u8 -> normalised, augmented f32) runs between
        // steps; its share of the training time is printed so it can be watched.
        println!(
            "{}  data {:.1}%",
            describe(&config.model, &row, config.epochs),
            100.0 * data_secs / train_secs
        );
        rows.push(row);
        metrics::write_all(out, &rows)?;
        if epoch % config.checkpoint_every == 0 || epoch == config.epochs {
            checkpoint(&plan, out, epoch, config, &norm)?;
            plot::plot_curves(&out.join(CURVES), &[plot::Series { label: &config.model, rows: &rows }])?;
        }
    }
    Ok(Outcome { rows, out: out.to_path_buf(), params: plan.params().len() })
}

/// Mean cross-entropy and accuracy over a whole split, in batches.
pub fn evaluate(
    plan: &mut Plan,
    ds: &Dataset,
    norm: &Normalizer,
    batch: usize,
    x: &mut [f32],
    y: &mut [u32],
) -> (f64, f64) {
    let mut sums = graph::LossSums::default();
    let all: Vec<usize> = (0..ds.len()).collect();
    for idx in all.chunks(batch) {
        let (xs, ys) = (&mut x[..idx.len() * ds.image_len()], &mut y[..idx.len()]);
        fill_batch(ds, idx, norm, None, 0, 0, xs);
        ys.copy_from_slice(&ds.labels[idx[0]..idx[0] + idx.len()]);
        sums.add(&plan.evaluate(xs, ys, Loss::CrossEntropy));
    }
    let n = ds.len() as f64;
    (sums.cross_entropy / n, sums.correct as f64 / n)
}

/// Write the checkpoint files: `state.safetensors` (parameters and momentum,
/// the one file `--resume` reads) and `model.safetensors` (parameters only,
/// PyTorch names, plus what `eval` needs: classes and normalisation).
fn checkpoint(plan: &Plan, out: &Path, epoch: usize, config: &RunConfig, norm: &Normalizer) -> Result<()> {
    let meta = graph::Metadata::from([
        ("epoch".to_string(), epoch.to_string()),
        ("classes".to_string(), serde_json::to_string(&config.classes)?),
        ("norm_mean".to_string(), serde_json::to_string(&norm.mean)?),
        ("norm_std".to_string(), serde_json::to_string(&norm.std)?),
        ("batch".to_string(), config.batch.to_string()),
    ]);
    for (name, arenas) in [(STATE, &[Arena::Params, Arena::Velocity][..]), (MODEL, &[Arena::Params][..])] {
        let path = out.join(name);
        write_atomic(&path, &plan.to_safetensors(arenas, meta.clone()))
            .with_context(|| format!("{}: cannot write the checkpoint", path.display()))?;
    }
    Ok(())
}

/// One line per epoch, for logs and terminals alike.
pub fn describe(model: &str, r: &EpochRow, epochs: usize) -> String {
    format!(
        "{model} epoch {:>3}/{epochs}  lr {:.4}  train ce {:.4} err {:.4} acc {:.3}  test ce {:.4} acc {:.3}  {:.1}s {:.0} img/s",
        r.epoch, r.lr, r.train_ce, r.train_seed_error, r.train_acc, r.test_ce, r.test_acc, r.seconds, r.images_per_s
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
