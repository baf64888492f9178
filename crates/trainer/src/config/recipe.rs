//! The two training recipes and their defaults, in one table: every
//! setting a flag leaves unset comes from [`Recipe::defaults`].

use clap::ValueEnum;
use graph::{Init, Loss, Reduction};

/// The two training recipes.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Recipe {
    /// Cross-entropy, SGD momentum 0.9, weight decay 5e-4 (on every parameter, batch norm's too, as torch.optim.SGD), cosine schedule, He init, batch 64
    Modern,
    /// The original engine: squared error on softmax (with its softmax-layer weight-gradient quirk), plain SGD lr 0.01, gradients summed over batch 200, every dense step clipped to min(lr, 0.05*sqrt(2/outputs)/max|g|), no biases, conv init N(0, 1/9), dense N(0, sqrt(2/fan_in)/10) (output layer /100), pixels in [0,1]; a batch_norm layer (not in the original engine) keeps its weight (init 1) and bias (init 0), batch statistics as in the modern recipe, and steps at lr without the clip
    Seed,
}

/// Learning-rate schedules, applied per epoch.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    Constant,
    /// x0.1 at 50% and again at 75% of the epochs
    Step,
    /// Half a cosine from lr down to 0 over the run
    Cosine,
}

/// How pixels become network inputs.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Normalize {
    /// Scale to [0,1], then per-channel mean/std of the training split
    Meanstd,
    /// Scale to [0,1] only
    Unit,
}

/// What a recipe sets: the defaults of the flags left unset, and what no
/// flag changes (the loss, its reduction, the initialisation, biases, the
/// seed recipe's clipped dense steps).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Defaults {
    pub epochs: usize,
    pub batch: usize,
    /// The learning rate of a model with a fully connected head.
    pub lr: f64,
    /// The learning rate of a model with a global-average-pool head.
    pub lr_gap: f64,
    pub momentum: f32,
    pub weight_decay: f32,
    pub schedule: Schedule,
    pub normalize: Normalize,
    pub init: Init,
    pub loss: Loss,
    pub reduction: Reduction,
    /// Whether layers have biases (the original engine has none).
    pub biases: bool,
    /// Clip every dense step as the original engine does ([`graph::clipped_lr`]).
    pub clip_dense: bool,
}

impl Recipe {
    pub fn defaults(self) -> Defaults {
        match self {
            Recipe::Modern => Defaults {
                epochs: 35,
                batch: 64,
                lr: 0.01,
                // He-init FC heads die at lr 0.05 on this data; GAP heads train there.
                lr_gap: 0.05,
                momentum: 0.9,
                weight_decay: 5e-4,
                schedule: Schedule::Cosine,
                normalize: Normalize::Meanstd,
                init: Init::He,
                loss: Loss::CrossEntropy,
                reduction: Reduction::Mean,
                biases: true,
                clip_dense: false,
            },
            Recipe::Seed => Defaults {
                epochs: 35,
                batch: 200,
                lr: 0.01,
                lr_gap: 0.01,
                momentum: 0.0,
                weight_decay: 0.0,
                schedule: Schedule::Constant,
                normalize: Normalize::Unit,
                init: Init::Seed,
                loss: Loss::SeedSquaredError,
                reduction: Reduction::Sum,
                biases: false,
                clip_dense: true,
            },
        }
    }
}
