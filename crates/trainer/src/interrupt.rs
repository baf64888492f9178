//! Ctrl-C (SIGINT). The first one asks the training loop to stop after the
//! current batch: it saves a checkpoint of exactly where it is (mid-epoch
//! included) and the program exits with status 130 and the command that
//! resumes the run. A second Ctrl-C stops at once; the last complete
//! checkpoint stays (every file is written atomically).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use anyhow::{Context, Result};

/// The exit status of a run stopped by Ctrl-C (128 + SIGINT, as shells report it).
pub const EXIT_CODE: i32 = 130;

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Route Ctrl-C to [`requested`] from now on (once per process; later calls
/// do nothing).
pub fn install() -> Result<()> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            ctrlc::set_handler(|| {
                if REQUESTED.swap(true, Ordering::SeqCst) {
                    eprintln!(
                        "\ninterrupted again: stopping now without saving (the last complete checkpoint is kept)"
                    );
                    std::process::exit(EXIT_CODE);
                }
                eprintln!(
                    "\ninterrupt: finishing the current batch, then saving a checkpoint (Ctrl-C again to stop at once)"
                );
            })
            .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(anyhow::Error::msg)
        .context("cannot install the Ctrl-C handler")
}

/// Whether Ctrl-C has been pressed.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// A run that stopped on Ctrl-C after saving its checkpoint. `main` prints
/// it and exits with [`EXIT_CODE`].
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
