//! [`RunFolder`]: the run folder as the training loop sees it. Rank 0 opens
//! it (a resumed run's state read back, or a fresh one initialised), writes
//! the metrics after every epoch and commits checkpoints; on the other
//! ranks of a job every write is skipped.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use graph::Plan;

use super::checkpoint::{self, Progress};
use super::metrics::{self, EpochRow};
use super::names::{CONFIG, CURVES};
use super::plot;
use super::repair::{repair, resume_rows};
use super::tensorboard::{self, Events};
use crate::config::{schedule_note, short, Recipe, RunConfig};
use crate::data::Normalizer;
use crate::fsops;
use crate::interrupt::shell_quote;

pub struct RunFolder {
    out: PathBuf,
    /// Whether this process writes (rank 0, or a process alone).
    writes: bool,
    /// The last checkpoint on disk (kept if training diverges).
    saved: Option<Progress>,
    /// TensorBoard's events file, once opened (`None` when turned off).
    events: Option<Events>,
}

impl RunFolder {
    pub fn new(out: &Path, writes: bool) -> Self {
        RunFolder { out: out.to_path_buf(), writes, saved: None, events: None }
    }

    pub fn path(&self) -> &Path {
        &self.out
    }

    /// Rank 0's start of a run: the state of a resumed run (`previous` is
    /// its saved settings) read back into `plan` and `rows`, and the files
    /// derived from it repaired; or a fresh run initialised and its
    /// `config.json` written. Returns where the run stands.
    pub fn open(
        &mut self,
        plan: &mut Plan,
        config: &RunConfig,
        previous: Option<&RunConfig>,
        batches: usize,
        norm: &Normalizer,
        rows: &mut Vec<EpochRow>,
    ) -> Result<Progress> {
        // A copy: the events file is opened through `self` below.
        let out = &self.out.clone();
        let resume = previous.is_some();
        let loaded = if resume { checkpoint::read(plan, out, config, batches)? } else { None };
        // This process holds the folder's lock: a temporary file is a leftover.
        fsops::clean_temp_files(out);
        // The events file first, here and below: it then never holds an
        // epoch that metrics.csv lacks, even after a crash in between.
        let Some(loaded) = loaded else {
            self.open_events(config, &[])?;
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
            return Ok(Progress::default());
        };
        let at = loaded.progress;
        self.saved = Some(at);
        *rows = resume_rows(out, loaded)?;
        let events = self.open_events(config, rows)?;
        let mut repaired = repair(plan, out, &at, config, norm, rows)?;
        repaired.extend(events);
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
        Ok(at)
    }

    /// The events file made to hold exactly `rows` (the committed epochs),
    /// or, with TensorBoard turned off, the run's events files removed (they
    /// would no longer follow its metrics). Returns why it was rebuilt, for
    /// the repair message.
    fn open_events(&mut self, config: &RunConfig, rows: &[EpochRow]) -> Result<Option<String>> {
        if !config.tensorboard {
            for name in tensorboard::remove_all(&self.out)? {
                println!("{}: removed {name} (--no-tensorboard)", self.out.display());
            }
            return Ok(None);
        }
        let (events, rebuilt) = Events::open(&self.out, rows)?;
        self.events = Some(events);
        Ok(rebuilt)
    }

    /// Both metrics files, with every row so far, then the new rows appended
    /// to the events file (after `metrics.csv`, which it must never run ahead of).
    pub fn write_metrics(&mut self, rows: &[EpochRow]) -> Result<()> {
        if !self.writes {
            return Ok(());
        }
        metrics::write_all(&self.out, rows)?;
        match &mut self.events {
            Some(events) => events.append(rows),
            None => Ok(()),
        }
    }

    /// Commit the checkpoint of `at`, then, at the end of an epoch, redraw
    /// the curves (a run stopped mid-epoch has no new row to draw).
    pub fn commit(
        &mut self,
        plan: &Plan,
        at: &Progress,
        config: &RunConfig,
        norm: &Normalizer,
        rows: &[EpochRow],
    ) -> Result<()> {
        if !self.writes {
            return Ok(());
        }
        checkpoint::write(plan, &self.out, at, config, norm, rows)?;
        self.saved = Some(*at);
        if at.batches > 0 {
            return Ok(());
        }
        plot::plot_curves(
            &self.out.join(CURVES),
            &[plot::Series { label: &config.spec.name, rows, sample_error: config.recipe == Recipe::Seed }],
        )
    }

    /// Where the last good checkpoint is, for a message.
    pub fn last_good(&self) -> String {
        match self.saved {
            Some(p) => format!("the last good checkpoint ({}) is kept in {}", p.after(), self.out.display()),
            None => "no checkpoint had been written yet".to_string(),
        }
    }

    /// The one-line message of a run stopped at `place` (`epoch 3, batch 5
    /// of 9`) by a non-finite loss or gradient (`what`) at learning rate `lr`.
    pub fn diverged(&self, config: &RunConfig, place: &str, lr: f64, what: &str) -> String {
        let lower = config.lr / 10.0;
        let advice = match self.saved {
            Some(_) => format!(
                "resume it with a lower learning rate (trainer train --resume {} --lr {lower}) or start again \
                 with a lower --lr, or pass --skip-nonfinite to skip such batches",
                shell_quote(&self.out)
            ),
            None => format!(
                "start again with a lower --lr than {} (e.g. {lower}), or pass --skip-nonfinite to skip such batches",
                config.lr
            ),
        };
        format!(
            "{place}: {what} at learning rate {lr}: training diverged and stopped before updating; {}; {advice}",
            self.last_good()
        )
    }
}
