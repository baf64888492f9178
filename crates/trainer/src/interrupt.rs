//! Stopping a run cleanly: Ctrl-C (SIGINT), and SIGTERM and SIGHUP, which
//! schedulers, `timeout`, `systemd` and a closed terminal send. The first
//! one asks the training loop to stop after the current batch: it commits a
//! checkpoint of exactly where it is (mid-epoch included) and the program
//! exits with status 128 + the signal's number (130 for Ctrl-C, 143 for
//! SIGTERM, 129 for SIGHUP) and the command that resumes the run. A signal
//! that arrives during the final checkpoint lets it complete, and the exit
//! status is still non-zero. A second signal stops at once; the last
//! committed checkpoint stays whole (see `checkpoint.rs`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, OnceLock};

use anyhow::{Context, Result};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// The first signal received, 0 while none.
static FIRST: AtomicI32 = AtomicI32::new(0);
/// The run folder being trained, for the message of a second signal.
static RUN: Mutex<Option<PathBuf>> = Mutex::new(None);

fn name(sig: i32) -> &'static str {
    match sig {
        SIGINT => "interrupt",
        SIGTERM => "SIGTERM",
        SIGHUP => "SIGHUP",
        _ => "signal",
    }
}

/// Route SIGINT, SIGTERM and SIGHUP to [`requested`] from now on (once per
/// process; later calls do nothing). A watcher thread reads them.
pub fn install() -> Result<()> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(|e| e.to_string())?;
            std::thread::Builder::new()
                .name("signals".into())
                .spawn(move || {
                    for sig in signals.forever() {
                        if FIRST.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                            eprintln!(
                                "\n{}: finishing the current batch, then saving a checkpoint (Ctrl-C again to stop at once)",
                                name(sig)
                            );
                            continue;
                        }
                        let resume = match RUN.lock().ok().and_then(|r| r.clone()) {
                            Some(dir) => format!("; resume with: trainer train --resume {}", shell_quote(&dir)),
                            None => String::new(),
                        };
                        eprintln!(
                            "\n{} again: stopping now without saving (the last committed checkpoint is kept{resume})",
                            name(sig)
                        );
                        std::process::exit(exit_code());
                    }
                })
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(anyhow::Error::msg)
        .context("cannot install the signal handlers")
}

/// Name the run folder that a second signal's message points to.
pub fn set_run_folder(dir: &Path) {
    if let Ok(mut run) = RUN.lock() {
        *run = Some(dir.to_path_buf());
    }
}

/// Whether a stop signal has been received.
pub fn requested() -> bool {
    FIRST.load(Ordering::SeqCst) != 0
}

/// 128 + the first signal's number (130 when none, as for Ctrl-C).
pub fn exit_code() -> i32 {
    128 + match FIRST.load(Ordering::SeqCst) {
        0 => SIGINT,
        sig => sig,
    }
}

/// After a run's last checkpoint: if a signal arrived meanwhile, the run is
/// complete but the program still stops with [`Interrupted`] (non-zero).
pub fn after_final_write(out: &Path) -> Result<()> {
    if requested() {
        return Err(Interrupted {
            at: "the final checkpoint, which was completed (the run is finished)".into(),
            out: out.to_path_buf(),
            note: None,
        }
        .into());
    }
    Ok(())
}

/// A run that stopped on a signal after committing its checkpoint. `main`
/// prints it and exits with [`exit_code`].
#[derive(Debug)]
pub struct Interrupted {
    /// Where the run stood, e.g. `epoch 3, batch 17 of 40`.
    pub at: String,
    /// The run's folder.
    pub out: PathBuf,
    /// Said after the resume command (e.g. that a comparison does not resume as a whole).
    pub note: Option<String>,
}

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "interrupted at {}: checkpoint saved in {}; resume with: trainer train --resume {}",
            self.at,
            self.out.display(),
            shell_quote(&self.out)
        )?;
        if let Some(note) = &self.note {
            write!(f, " ({note})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Interrupted {}

/// `path` as one shell word: unchanged if it is plain, else single-quoted.
pub fn shell_quote(path: &Path) -> String {
    let s = path.display().to_string();
    let plain = !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+:=@%,".contains(c));
    if plain {
        s
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_quoted_only_when_a_shell_would_split_them() {
        assert_eq!(shell_quote(Path::new("runs/seed-gap-2026")), "runs/seed-gap-2026");
        assert_eq!(shell_quote(Path::new("my runs/a")), "'my runs/a'");
        assert_eq!(shell_quote(Path::new("it's")), r"'it'\''s'");
    }

    #[test]
    fn the_message_names_the_place_and_the_resume_command() {
        let e = Interrupted { at: "epoch 2, batch 5 of 9".into(), out: "runs/x".into(), note: None };
        assert_eq!(
            e.to_string(),
            "interrupted at epoch 2, batch 5 of 9: checkpoint saved in runs/x; resume with: trainer train --resume runs/x"
        );
    }
}
