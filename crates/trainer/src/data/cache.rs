//! The folder CIFAR-10 is downloaded and unpacked into: the user's cache
//! folder, or the one `trainer fetch --to` names.

use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};

/// The archive's file name in the cache (also where a hand-placed copy goes).
pub const ARCHIVE: &str = "cifar-10-binary.tar.gz";
/// The folder the archive unpacks to, inside the cache.
pub const FOLDER: &str = "cifar-10-batches-bin";

/// The MD5 a mirror's archive must have (the official one's by default).
pub const MD5_VAR: &str = "GAPNET_CIFAR10_MD5";

/// The environment variable that moves the cache folder.
pub const CACHE_VAR: &str = "GAPNET_CACHE";

/// The cache folder: `$GAPNET_CACHE`, else the platform's cache folder plus
/// `gapnet` (`$XDG_CACHE_HOME/gapnet` or `~/.cache/gapnet` on Linux,
/// `~/Library/Caches/gapnet` on macOS, `%LOCALAPPDATA%\gapnet` on Windows).
pub fn cache_dir() -> Result<PathBuf> {
    match std::env::var_os(CACHE_VAR).filter(|v| !v.is_empty()) {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => dirs::cache_dir().map(|d| d.join("gapnet")).ok_or_else(|| {
            anyhow!("no cache folder for CIFAR-10 (no home folder); set {CACHE_VAR}=DIR or pass --data DIR")
        }),
    }
}

/// A folder to download into, and how a user picks another one (for the
/// messages): `set GAPNET_CACHE=DIR` for the cache, `--to DIR` for `trainer fetch`.
#[derive(Clone, Debug)]
pub struct Target {
    pub dir: PathBuf,
    pub choose: &'static str,
}

impl Target {
    /// The cache folder.
    pub fn cache(dir: PathBuf) -> Target {
        Target { dir, choose: "set GAPNET_CACHE=DIR to another folder" }
    }

    /// The folder holding the unpacked batch files.
    pub fn folder(&self) -> PathBuf {
        self.dir.join(FOLDER)
    }

    /// A failed write in the target folder, said in terms of what to do.
    pub(crate) fn write_error(&self, path: &Path, e: io::Error) -> anyhow::Error {
        match e.kind() {
            ErrorKind::StorageFull | ErrorKind::QuotaExceeded => anyhow!(
                "{}: the disk is full ({e}); CIFAR-10 needs about 350 MB there while it unpacks (the 170 MB \
                 archive and 180 MB of batch files): free some space or {}",
                path.display(),
                self.choose
            ),
            ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem | ErrorKind::NotADirectory => {
                anyhow!(
                    "{}: cannot write there ({e}); {}, or pass --data DIR to a folder that holds the data",
                    path.display(),
                    self.choose
                )
            }
            _ => anyhow!("{}: cannot write ({e}); {}", path.display(), self.choose),
        }
    }
}
