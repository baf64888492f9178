//! The resolved settings of a run (`config.json`): the flags and the
//! recipe's defaults turned, once, into a complete [`RunConfig`], and the
//! checks a saved one passes before a run resumes from it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use graph::{preset, Init, Isa, Loss, ModelSpec, Reduction, Sgd, PRESETS};
use serde::{Deserialize, Serialize};

use super::conv_paths;
use super::flags::RunArgs;
use super::recipe::{Normalize, Recipe, Schedule};

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
    /// Write TensorBoard's events file into the run folder (off with
    /// `--no-tensorboard`); on in a run written before the trainer wrote one.
    #[serde(default = "on")]
    pub tensorboard: bool,
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
        self.recipe.defaults().loss
    }
    /// The optimiser for a 1-based epoch: SGD with the recipe's momentum and
    /// weight decay; the seed recipe clips every dense step as the original
    /// engine does ([`graph::clipped_lr`]).
    pub fn sgd_at(&self, epoch: usize) -> Sgd {
        Sgd {
            lr: self.lr_at(epoch) as f32,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            clip_dense: self.recipe.defaults().clip_dense,
        }
    }
    pub fn reduction(&self) -> Reduction {
        self.recipe.defaults().reduction
    }
    pub fn init(&self) -> Init {
        self.recipe.defaults().init
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

fn on() -> bool {
    true
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
    if data.to_str().is_none() {
        bail!(
            "{}: the data folder's path (from --data or {}) is not valid UTF-8, and a run records it in \
             config.json as text; rename the folder, or pass --data a symlink with a UTF-8 name",
            data.display(),
            crate::data::ENV_VAR
        );
    }
    let mut spec = resolve_model(model)?.with_classes(classes.len());
    let defaults = args.recipe.defaults();
    if !defaults.biases {
        spec = spec.without_bias();
    }
    let gap_head = spec.layers.iter().any(|l| matches!(l, graph::LayerSpec::GlobalAvgPool));
    let conv_paths = conv_paths::for_new_run(&spec)?;
    let config = RunConfig {
        model: model.to_string(),
        spec,
        recipe: args.recipe,
        epochs: args.epochs.unwrap_or(defaults.epochs),
        batch: args.batch.unwrap_or(defaults.batch),
        lr: args.lr.unwrap_or(if gap_head { defaults.lr_gap } else { defaults.lr }),
        momentum: defaults.momentum,
        weight_decay: defaults.weight_decay,
        schedule: args.schedule.unwrap_or(defaults.schedule),
        normalize: args.normalize.unwrap_or(defaults.normalize),
        augment: !args.no_augment,
        classes,
        limit_train: args.limit_train,
        limit_test: args.limit_test,
        seed: args.seed,
        // Absolute, so a resume finds it from any working directory.
        data: std::path::absolute(data).unwrap_or_else(|_| data.to_path_buf()),
        checkpoint_every: args.checkpoint_every,
        skip_nonfinite: args.skip_nonfinite,
        tensorboard: !args.no_tensorboard,
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
pub fn schedule_note(previous: &RunConfig, config: &RunConfig, next: usize) -> Option<String> {
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
