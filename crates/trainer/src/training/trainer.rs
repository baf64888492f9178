//! The training loop: epochs of shuffled, augmented mini-batches, then
//! evaluation, metrics and atomic checkpoints. Everything random derives
//! from `(seed, epoch)`, so a run resumed from its last checkpoint
//! continues bit for bit, from the end of an epoch or, after Ctrl-C, from
//! the middle of one. Every update is checked first: a non-finite loss or
//! gradient stops the run (or skips the batch), and dead layers are
//! reported.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};
use graph::{Plan, Sgd, Shape};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::evaluate::{error_sample, evaluate, evaluate_on, mix, BatchBuffers};
use super::health;
use super::team::Team;
use crate::config::{conv_paths, Normalize, RunConfig};
use crate::data::augment::{fill_batch, Augment};
use crate::data::{Normalizer, Splits};
use crate::interrupt::{self, Interrupted};
use crate::run_folder::checkpoint::{EpochSums, Progress};
use crate::run_folder::metrics::EpochRow;
use crate::run_folder::RunFolder;

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
    let mut trainer = Trainer::start(config, out, splits, previous, team)?;
    for epoch in trainer.at.epoch + 1..=config.epochs {
        let pass = trainer.train_epoch(epoch)?;
        let row = trainer.evaluate_epoch(epoch, pass)?;
        trainer.record(row)?;
        trainer.commit_or_stop(epoch)?;
    }
    Ok(trainer.finish())
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

/// A run being trained: what every rank holds, and where the run stands.
struct Trainer<'a> {
    config: &'a RunConfig,
    splits: &'a Splits,
    team: &'a Team,
    folder: RunFolder,
    plan: Plan,
    norm: Normalizer,
    /// Batches per epoch.
    batches: usize,
    at: Progress,
    rows: Vec<EpochRow>,
    buffers: BatchBuffers,
    augment: Option<Augment>,
    error_sample: Vec<usize>,
    dead_reported: Vec<String>,
}

/// An epoch's training pass: its sums and its clock.
struct EpochPass {
    sums: EpochSums,
    started: Instant,
    /// The first batch trained here (a resumed epoch starts past 0).
    first: usize,
    /// Training seconds before that batch.
    secs_before: f64,
    bar: Option<ProgressBar>,
}

impl<'a> Trainer<'a> {
    /// The plan built and, on rank 0, the run folder opened (resumed or
    /// initialised); every rank then holds the same parameters and progress.
    fn start(
        config: &'a RunConfig,
        out: &Path,
        splits: &'a Splits,
        previous: Option<&RunConfig>,
        team: &'a Team,
    ) -> Result<Self> {
        let (train, test) = (&splits.train, &splits.test);
        let [c, h, w] = train.shape;
        let mut plan = build(config, Shape::new(c, h, w), config.batch)?;
        let norm = match config.normalize {
            Normalize::Meanstd => Normalizer::fit(train),
            Normalize::Unit => Normalizer::identity(c),
        };
        let batches = train.len().div_ceil(config.batch);
        let mut rows = Vec::new();
        let mut folder = RunFolder::new(out, team.is_root());
        let opened =
            team.is_root().then(|| folder.open(&mut plan, config, previous, batches, &norm, &mut rows));
        let at = team.share_state(&mut plan, opened)?;
        // A batch never holds more images than a split.
        let room = config.batch.min(train.len().max(test.len()));
        if at.epoch >= config.epochs {
            println!(
                "{}: all {} epochs are done; pass --epochs N to train further",
                out.display(),
                config.epochs
            );
        }
        Ok(Trainer {
            config,
            splits,
            team,
            folder,
            plan,
            norm,
            batches,
            at,
            rows,
            buffers: BatchBuffers::new(room, train.image_len()),
            augment: config.augment.then_some(Augment { pad: 4, flip: true }),
            error_sample: error_sample(train.len(), config.seed),
            dead_reported: Vec::new(),
        })
    }

    /// The epoch's batches in its shuffled order, from the first one not yet
    /// trained. Stops with [`Interrupted`], after committing a mid-epoch
    /// checkpoint, when every rank was asked to stop.
    fn train_epoch(&mut self, epoch: usize) -> Result<EpochPass> {
        let (config, train) = (self.config, &self.splits.train);
        let sgd = config.sgd_at(epoch);
        let started = Instant::now();
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(config.seed, epoch as u64)));
        let bar = progress(train.len(), epoch, config.epochs);
        // A resumed epoch goes on from its recorded batch with its partial sums.
        let (first, mut sums) = (self.at.batches, self.at.partial);
        let secs_before = sums.train_secs;
        if let Some(bar) = &bar {
            bar.inc((first * config.batch).min(train.len()) as u64);
        }
        self.team.take_comm();
        for (b, idx) in order.chunks(config.batch).enumerate().skip(first) {
            let stop = self.train_batch(epoch, b, idx, &sgd, &mut sums)?;
            if let Some(bar) = &bar {
                bar.inc(idx.len() as u64);
                let seen = sums.images.max(1) as f64;
                let rate = bar.position() as f64 / (secs_before + started.elapsed().as_secs_f64());
                bar.set_message(format!("loss {:.4}  {rate:.0} img/s", sums.cross_entropy / seen));
            }
            if stop && b + 1 < self.batches {
                if let Some(bar) = &bar {
                    bar.finish_and_clear();
                }
                sums.train_secs = secs_before + started.elapsed().as_secs_f64();
                return Err(self.stop_mid_epoch(epoch, b + 1, sums));
            }
        }
        Ok(EpochPass { sums, started, first, secs_before, bar })
    }

    /// Batch `b` (the images `idx`): this rank's share of its images
    /// prepared, one step of the team, the update if the step is finite.
    /// Returns whether any rank asked to stop.
    fn train_batch(
        &mut self,
        epoch: usize,
        b: usize,
        idx: &[usize],
        sgd: &Sgd,
        sums: &mut EpochSums,
    ) -> Result<bool> {
        let (config, train) = (self.config, &self.splits.train);
        let t = Instant::now();
        let len = train.image_len();
        let (xs, ys) = self.buffers.take(idx.len(), len);
        // Only this rank's images (all of them, alone).
        let mine = self.team.images(&self.plan, idx.len());
        let xs_mine = &mut xs[mine.start * len..mine.end * len];
        fill_batch(train, &idx[mine], &self.norm, self.augment, config.seed, epoch as u64, xs_mine);
        for (label, &i) in ys.iter_mut().zip(idx) {
            *label = train.labels[i];
        }
        sums.data_secs += t.elapsed().as_secs_f64();
        let (step, stop) =
            self.team.step(&mut self.plan, xs, ys, config.loss(), config.reduction(), interrupt::requested());
        match health::nonfinite(&self.plan, &step) {
            None => {
                self.plan.sgd_step(sgd);
                sums.add(&step, idx.len());
            }
            Some(_) if config.skip_nonfinite => {
                self.plan.undo_running_stats();
                sums.skipped += 1;
                self.at.skipped_total += 1;
            }
            Some(what) => {
                let place = format!("epoch {epoch}, batch {} of {}", b + 1, self.batches);
                bail!("{}", self.folder.diverged(config, &place, config.lr_at(epoch), &what))
            }
        }
        if b == 0 && self.team.is_root() {
            self.warn_dead_relus(epoch);
        }
        Ok(stop)
    }

    /// Dead ReLU layers on the first batch of an epoch, each reported once.
    fn warn_dead_relus(&mut self, epoch: usize) {
        let dead: Vec<String> =
            health::dead_relus(&self.plan).into_iter().filter(|d| !self.dead_reported.contains(d)).collect();
        if !dead.is_empty() {
            eprintln!(
                "warning: {} epoch {epoch}: {} output zero for every image of the first batch: \
                 dead units that pass no gradient back; try a lower --lr than {}",
                self.config.spec.name,
                dead.join(", "),
                self.config.lr
            );
            self.dead_reported.extend(dead);
        }
    }

    /// Commit where the run stands after `done` batches of `epoch` (their
    /// sums in `partial`) and say so.
    fn stop_mid_epoch(&mut self, epoch: usize, done: usize, partial: EpochSums) -> anyhow::Error {
        let here =
            Progress { epoch: epoch - 1, batches: done, partial, skipped_total: self.at.skipped_total };
        if let Err(e) = self.folder.commit(&self.plan, &here, self.config, &self.norm, &self.rows) {
            return e;
        }
        let at = format!("epoch {epoch}, batch {done} of {}", self.batches);
        Interrupted { at, out: self.folder.path().to_path_buf(), note: None }.into()
    }

    /// The epoch's row: its training sums, then the test split and the
    /// error sample evaluated; its line printed.
    fn evaluate_epoch(&mut self, epoch: usize, pass: EpochPass) -> Result<EpochRow> {
        let EpochPass { sums, started, first, secs_before, bar } = pass;
        let (config, team) = (self.config, self.team);
        self.at = Progress {
            epoch,
            batches: 0,
            partial: EpochSums::default(),
            skipped_total: self.at.skipped_total,
        };
        let train_secs = secs_before + started.elapsed().as_secs_f64();
        if sums.images == 0 {
            bail!(
                "epoch {epoch}: every one of the {} batches had a non-finite loss or gradient, so the \
                 parameters themselves have diverged; {}; start again with a lower --lr than {} (e.g. {})",
                self.batches,
                self.folder.last_good(),
                config.lr,
                config.lr / 10.0
            );
        }
        let comm = team.take_comm().as_secs_f64();
        let (train, test) = (&self.splits.train, &self.splits.test);
        let (plan, norm, buffers) = (&mut self.plan, &self.norm, &mut self.buffers);
        let (test_ce, test_acc) = evaluate(plan, test, norm, config.batch, buffers, team);
        let sample = evaluate_on(plan, train, &self.error_sample, norm, config.batch, buffers, team);
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let n = sums.images as f64;
        let row = EpochRow {
            epoch,
            lr: config.lr_at(epoch),
            train_ce: sums.cross_entropy / n,
            train_seed_error: sums.seed_error / n,
            train_acc: sums.correct as f64 / n,
            test_ce,
            test_acc,
            seconds: secs_before + started.elapsed().as_secs_f64(),
            images_per_s: train.len() as f64 / train_secs,
            sample_seed_error: sample.seed_error / self.error_sample.len() as f64,
        };
        println!("{}", self.epoch_report(&row, &sums, first, train_secs, comm));
        Ok(row)
    }

    /// The printed line of an epoch: its row, the share of batch
    /// preparation and, in a job, of passing the gradients along.
    fn epoch_report(
        &self,
        row: &EpochRow,
        sums: &EpochSums,
        first: usize,
        train_secs: f64,
        comm: f64,
    ) -> String {
        let skipped = if sums.skipped > 0 {
            format!("  skipped {} of {} batches (non-finite)", sums.skipped, self.batches)
        } else {
            String::new()
        };
        // The share of the training time spent passing the gradients along
        // (and waiting for the slowest rank).
        let comm = if self.team.ranks() > 1 {
            let steps = self.batches.saturating_sub(first).max(1) as f64;
            format!("  comm {:.1}% ({:.2} ms/step)", 100.0 * comm / train_secs, 1e3 * comm / steps)
        } else {
            String::new()
        };
        format!(
            "{}  data {:.1}%{comm}{skipped}",
            epoch_line(&self.config.spec.name, row, self.config.epochs),
            100.0 * sums.data_secs / train_secs
        )
    }

    /// The epoch's row kept, the metrics files rewritten, a run stuck at
    /// chance warned about.
    fn record(&mut self, row: EpochRow) -> Result<()> {
        self.rows.push(row);
        self.folder.write_metrics(&self.rows)?;
        let k = self.config.classes.len();
        if health::stuck_at_chance(&self.rows, k) {
            eprintln!(
                "warning: {} epoch {}: the training loss has stayed at chance ({:.4}, ln {k} = {:.4}) for \
                 {} epochs: the network is not learning (dead units?); try a lower --lr than {}",
                self.config.spec.name,
                self.rows[self.rows.len() - 1].epoch,
                self.rows[self.rows.len() - 1].train_ce,
                (k as f64).ln(),
                health::CHANCE_EPOCHS,
                self.config.lr
            );
        }
        Ok(())
    }

    /// A checkpoint when one is due (or every rank was asked to stop, which
    /// then ends the run with [`Interrupted`]).
    fn commit_or_stop(&mut self, epoch: usize) -> Result<()> {
        let config = self.config;
        let due = epoch.is_multiple_of(config.checkpoint_every) || epoch == config.epochs;
        let stop = self.team.any(interrupt::requested()) && epoch < config.epochs;
        if due || stop {
            self.folder.commit(&self.plan, &self.at, config, &self.norm, &self.rows)?;
        }
        if stop {
            let at = format!("the end of epoch {epoch}");
            return Err(Interrupted { at, out: self.folder.path().to_path_buf(), note: None }.into());
        }
        Ok(())
    }

    fn finish(self) -> Outcome {
        if self.at.skipped_total > 0 {
            println!(
                "skipped {} batches with a non-finite loss or gradient (--skip-nonfinite); a lower --lr may avoid them",
                self.at.skipped_total
            );
        }
        Outcome { rows: self.rows, out: self.folder.path().to_path_buf(), params: self.plan.params().len() }
    }
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
    if config.batch > splits.train.len() {
        eprintln!(
            "warning: --batch {} is more than the {} training images: every epoch is one step over all of them",
            config.batch,
            splits.train.len()
        );
    }
    Ok(splits)
}

/// One line per epoch, for logs and terminals alike. `sample err` is
/// `sample_seed_error`, the blog's error as its author measured it.
pub fn epoch_line(model: &str, r: &EpochRow, epochs: usize) -> String {
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
