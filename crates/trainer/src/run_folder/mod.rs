//! A run folder: the names of its files, its creation and lock, the
//! checkpoint commit point ([`checkpoint`]), the metrics files and curves,
//! TensorBoard's events file ([`tensorboard`]), and the repair of derived
//! files on resume ([`repair`]). Every file is
//! written through [`crate::fsops`].

pub mod checkpoint;
mod folder;
pub mod metrics;
mod names;
pub mod plot;
pub mod repair;
pub mod tensorboard;

pub use names::{CONFIG, CURVES, MODEL, STATE};

pub use folder::RunFolder;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};

use crate::fsops;
use crate::interrupt::shell_quote;

/// `runs/<name>-<UTC timestamp>`.
pub fn default_out(name: &str) -> PathBuf {
    let stamp = humantime::format_rfc3339_seconds(SystemTime::now()).to_string().replace(':', "");
    let stem = Path::new(name).file_stem().map_or(name.into(), |s| s.to_string_lossy().into_owned());
    PathBuf::from("runs").join(format!("{stem}-{stamp}"))
}

/// Create a fresh output folder and lock it, refusing one that already
/// holds a run (checked again under the lock, so two processes started at
/// once cannot both take it).
pub fn fresh_out(out: &Path) -> Result<fsops::RunLock> {
    let refuse = || {
        anyhow::anyhow!(
            "{}: already holds a run; pass --resume {} to continue it, or choose another --out",
            out.display(),
            shell_quote(out)
        )
    };
    if out.join(CONFIG).exists() {
        return Err(refuse());
    }
    std::fs::create_dir_all(out)
        .with_context(|| format!("--out {}: cannot create the folder", out.display()))?;
    let lock = fsops::RunLock::acquire(out)?;
    if out.join(CONFIG).exists() {
        return Err(refuse());
    }
    Ok(lock)
}
