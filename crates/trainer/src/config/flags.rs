//! The command line: `trainer [train|compare|eval|explain|prune|predict|export|fetch] ...`. With no
//! subcommand the trainer runs `compare` with its defaults: the episode's
//! FC head against its GAP head.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use super::recipe::{Normalize, Recipe, Schedule};

#[derive(Parser, Debug)]
#[command(
    name = "trainer",
    version,
    about = "Train and compare small CNNs on CIFAR-10: a fully connected head against Global Average Pooling",
    long_about = "Train and compare small CNNs on CIFAR-10 (airplane vs ship by default).\n\n\
                  With no subcommand, runs `trainer compare` (and takes its flags): seed-fc against seed-gap, then prints a side-by-side table."
)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Without a subcommand, `compare`'s flags: `trainer --epochs 2` is
    /// `trainer compare --epochs 2`.
    #[command(flatten)]
    pub compare: CompareArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train one model and write metrics, plots and checkpoints
    Train(TrainArgs),
    /// Train several models with the same settings and compare them
    Compare(CompareArgs),
    /// Evaluate a checkpoint on the test split: accuracy, per class, confusion matrix
    Eval(EvalArgs),
    /// Class activation maps and per-plane statistics of a checkpoint on the test split
    #[command(
        long_about = "Look inside a checkpoint: class activation maps (CAM) of the planes that feed the head \
                        for a global-average-pooling model, Grad-CAM for any other, on the test images the model \
                        misclassifies most confidently and on the ones it gets right most confidently.\n\n\
                        Writes misclassified.png and correct.png (per row: the image, the map of the predicted \
                        class, the map of the true class or the runner-up, and the planes that decided between \
                        the two), examples.csv (the numbers behind every row) and planes.csv (per plane: mean \
                        activation per class, weight and contribution per class, over all test images)."
    )]
    Explain(ExplainArgs),
    /// Zero planes of the last convolution (before the head) and see what changes
    #[command(
        long_about = "Prune planes of the last convolution by hand: the named planes are set to zero before the \
                  global average pool or the first dense layer (by zeroing the dense columns that read them, so \
                  the pruned model is an ordinary checkpoint). Prints the test accuracy before and after and \
                  every changed prediction. Planes count from 0, as PyTorch counts channels; `trainer explain` \
                  shows what each plane does.\n\n\
                  --scan removes each plane alone in turn and prints a table sorted by the change in accuracy \
                  (it replays only the head, so its numbers agree with --planes P up to float summation order)."
    )]
    Prune(PruneArgs),
    /// Classify your own pictures with a trained model
    #[command(
        long_about = "Classify your own pictures with a trained model: one line per image with the predicted class \
                  and every class's probability.\n\n\
                  Reads PNG, JPEG, GIF, BMP, TIFF and WebP; a folder stands for the images in it. Each image is \
                  resized as torchvision's Resize + CenterCrop does (shorter side to the model's input size, \
                  bilinear, then the centre; an image already of that size is used as is), converted to the \
                  model's channels (grey, 16-bit and alpha images are converted, and the line says so) and \
                  normalised with the mean and std stored in the checkpoint. Reads no data set.\n\n\
                  A model always answers one of the classes it was trained on: an airplane/ship model calls \
                  any picture, a cat or plain noise too, an airplane or a ship, often with a high probability. \
                  A picture that cannot be read is skipped with a warning; the others are classified and the \
                  command then fails."
    )]
    Predict(PredictArgs),
    /// Write a trained model as an ONNX file, for onnxruntime, OpenVINO, TensorRT, tract and the like
    #[command(
        long_about = "Write a trained model as an ONNX file (opset 13), for the runtimes that read ONNX: \
                  onnxruntime, OpenVINO, TensorRT, tract, onnxruntime-web.\n\n\
                  The graph takes `input`, float32 N x C x H x W (N free), pixel values divided by 255; the \
                  normalisation the model was trained with is inside the graph. It gives `probabilities`, \
                  N x classes, after a softmax; batch norms use their running statistics, as `eval` does. The \
                  class names, in output order, are in the model's metadata (`classes`, a JSON list). \
                  Reads only the checkpoint."
    )]
    Export(ExportArgs),
    /// Download the official CIFAR-10 archive, check its MD5 and unpack it (what the other commands do on first use)
    // On the variant: its doc comment would override a long_about on FetchArgs.
    #[command(long_about = "Download the official CIFAR-10 binary archive, check its MD5 and unpack it as \
                  cifar-10-batches-bin/, ahead of time (train, compare, eval, explain and prune do the same on \
                  first use when they find no data). Prints where the data is.\n\n\
                  The cache folder is $GAPNET_CACHE, else the platform's cache folder plus gapnet \
                  ($XDG_CACHE_HOME/gapnet or ~/.cache/gapnet on Linux). GAPNET_CIFAR10_URL and GAPNET_CIFAR10_MD5 \
                  name a mirror; GAPNET_DOWNLOAD_TIMEOUT the seconds to wait for a connection or for more bytes \
                  (default 30). An archive already in the folder (placed by hand) is checked and unpacked without \
                  downloading. GAPNET_NO_DOWNLOAD does not apply: fetching is what this command is asked to do.")]
    Fetch(FetchArgs),
}

/// The ceiling of `--threads`: a fixed 1024, many times the cores of any
/// machine this engine runs on, so that a typo cannot spawn millions.
pub const MAX_THREADS: usize = 1024;

/// Settings shared by `train` and `compare`. Unset values take the
/// recipe's defaults.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Epochs to train (default: 35)
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Images per mini-batch (default: 64 modern, 200 seed)
    #[arg(long)]
    pub batch: Option<usize>,
    /// Learning rate (default: 0.01 for FC heads, 0.05 for GAP heads in the modern recipe; 0.01 seed)
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f64>,
    /// Training recipe
    #[arg(long, value_enum, default_value_t = Recipe::Modern)]
    pub recipe: Recipe,
    /// Learning-rate schedule (default: cosine modern, constant seed)
    #[arg(long, value_enum)]
    pub schedule: Option<Schedule>,
    /// Input normalisation (default: meanstd modern, unit seed)
    #[arg(long, value_enum)]
    pub normalize: Option<Normalize>,
    /// Dataset folder (else $CIFAR10_DIR, else the search path in the README, else the cache,
    /// downloading CIFAR-10 there on first use)
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Never download CIFAR-10 when no data is found (also: GAPNET_NO_DOWNLOAD=1)
    #[arg(long)]
    pub no_download: bool,
    /// Time every convolution on each path this CPU runs (a few steps at the run's batch) and train
    /// with the fastest; the choice is recorded in config.json. Measured, so two tuned runs may choose
    /// differently, and their bits then differ (without it, the paths follow a fixed rule)
    #[arg(long)]
    pub tune: bool,
    /// Classes to train on, by name, comma-separated; `all` for every class in the data
    #[arg(long, default_value = "airplane,ship")]
    pub classes: String,
    /// Use only the first N training images
    #[arg(long)]
    pub limit_train: Option<usize>,
    /// Use only the first N test images
    #[arg(long)]
    pub limit_test: Option<usize>,
    /// Seed for initialisation, shuffling and augmentation
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Worker threads, 1 to 1024 (default: all cores)
    #[arg(long)]
    pub threads: Option<usize>,
    /// Turn off random crops and flips
    #[arg(long)]
    pub no_augment: bool,
    /// Write a checkpoint every N epochs (and always at the end)
    #[arg(long, default_value_t = 1)]
    pub checkpoint_every: usize,
    /// Skip (no update) a batch whose loss or gradient is NaN or infinite, and
    /// count it, instead of stopping the run
    #[arg(long)]
    pub skip_nonfinite: bool,
    /// Output folder (default: runs/<model>-<timestamp>)
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write no TensorBoard events file. By default every run folder gets one
    /// (events.out.tfevents.*, each epoch's metrics as scalars, written as the epoch ends), so
    /// that `tensorboard --logdir runs` shows every run. A resumed run keeps its choice;
    /// --no-tensorboard with --resume turns it off and removes the run's events file
    #[arg(long)]
    pub no_tensorboard: bool,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// A preset (seed-fc, seed-gap, seed-fc20, wide-gap, wide-fc, deep-gap, deep-fc, seed-*-valid) or a model spec file (.toml)
    #[arg(long, default_value = "seed-gap")]
    pub model: String,
    /// Continue the run in this folder from its last committed checkpoint, bit-identically, and
    /// rebuild any file missing or stale. Its settings (config.json) are reused: --epochs, --lr,
    /// --checkpoint-every, --skip-nonfinite, --no-tensorboard, --threads and --no-download may
    /// change them, any other run flag is refused. The kernels recorded there are reused too, unless GAPNET_ISA chooses
    /// others (a note then says the bits change). A folder whose run has no checkpoint yet starts
    /// again from epoch 1
    #[arg(long)]
    pub resume: Option<PathBuf>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Models to compare, comma-separated presets or spec files
    #[arg(long, default_value = "seed-fc,seed-gap")]
    pub models: String,
    #[command(flatten)]
    pub run: RunArgs,
}

/// What `eval`, `explain` and `prune` read: a checkpoint and the test split.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A model.safetensors (or state.safetensors) written by `trainer train` or `trainer prune`
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Dataset folder (else $CIFAR10_DIR, else the search path, else the cache, downloading
    /// CIFAR-10 there on first use)
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Never download CIFAR-10 when no data is found (also: GAPNET_NO_DOWNLOAD=1)
    #[arg(long)]
    pub no_download: bool,
    /// Use only the first N test images
    #[arg(long)]
    pub limit_test: Option<usize>,
    /// Worker threads, 1 to 1024 (default: all cores)
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(Args, Debug)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub model: EvalArgs,
    /// Output folder (default: `explain` beside the checkpoint)
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Images of each kind (misclassified, correct) to show
    #[arg(long, default_value_t = 8)]
    pub top: usize,
}

#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["planes", "scan"]))]
pub struct PruneArgs {
    #[command(flatten)]
    pub model: EvalArgs,
    /// Planes to zero, comma-separated (e.g. 3,7)
    #[arg(long)]
    pub planes: Option<String>,
    /// Remove every plane alone in turn and print a table sorted by the change in accuracy
    #[arg(long, conflicts_with = "out")]
    pub scan: bool,
    /// Save the pruned model as a checkpoint here (atomically)
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// A model.safetensors (or state.safetensors) written by `trainer train`
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Images or folders of images
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// One JSON object per line (image, class, probabilities, notes)
    #[arg(long)]
    pub json: bool,
    /// Also write, per image, the class activation map (GAP head) or Grad-CAM (other heads) of the
    /// predicted class and the runner-up over it, as `explain` draws them, into this folder
    #[arg(long)]
    pub cam: Option<PathBuf>,
    /// Worker threads (default: all cores)
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// A model.safetensors (or state.safetensors) written by `trainer train` or `trainer prune`
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The ONNX file to write, atomically (default: the checkpoint's path ending in .onnx)
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct FetchArgs {
    /// Folder to put cifar-10-batches-bin/ in (default: the cache folder, where every command looks)
    #[arg(long)]
    pub to: Option<PathBuf>,
}
