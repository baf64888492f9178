//! The file-system operations that write a run folder, and its lock.
//!
//! Every write of a run's files goes through [`write_atomic`],
//! [`remove_file`] and [`append`], which count each operation (create,
//! open, write, fsync, rename, fsync of the folder, unlink). The count is
//! what the crash tests aim at: with `GAPNET_FAULT_AFTER_OPS=k` in the
//! environment the process ends abruptly (`_exit`, no destructors, no
//! flush: as a `kill -9` would) right after its k-th operation; with
//! `GAPNET_SIGNAL_AFTER_OPS=k` it sends itself SIGTERM there instead (a
//! signal at a chosen instant), and with `GAPNET_TRACE_OPS=1` it prints each
//! operation to stderr (`op 12: rename .../state.safetensors`) so a test can
//! find the instant it wants. Test hooks, named here so nobody sets them by
//! accident; without them the counting costs one atomic add.
//!
//! [`RunLock`] holds an exclusive advisory lock on `<run>/.lock` for as long
//! as a process trains into the folder; the holder's pid is written into
//! the file, since the lock itself does not report it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Seek, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};

/// The test hook: end the process right after this many operations.
pub const FAULT_ENV: &str = "GAPNET_FAULT_AFTER_OPS";
/// The exit status of a process ended by [`FAULT_ENV`] (as `kill -9` reports).
pub const FAULT_EXIT: i32 = 137;

static OPS: AtomicU64 = AtomicU64::new(0);

/// The test hooks, read once.
struct Hooks {
    fault_after: Option<u64>,
    signal_after: Option<u64>,
    trace: bool,
}

fn hooks() -> &'static Hooks {
    static HOOKS: OnceLock<Hooks> = OnceLock::new();
    HOOKS.get_or_init(|| {
        let number = |name: &str| std::env::var(name).ok().and_then(|v| v.parse().ok());
        Hooks {
            fault_after: number(FAULT_ENV),
            signal_after: number("GAPNET_SIGNAL_AFTER_OPS"),
            trace: std::env::var_os("GAPNET_TRACE_OPS").is_some(),
        }
    })
}

/// Count one operation that just completed; the crash point of the hooks.
fn done(what: &str, path: &Path) {
    let n = OPS.fetch_add(1, Ordering::SeqCst) + 1;
    let hooks = hooks();
    if hooks.trace {
        eprintln!("op {n}: {what} {}", path.display());
    }
    if hooks.fault_after == Some(n) {
        // SAFETY: _exit ends the process at once; nothing is touched after.
        unsafe { libc::_exit(FAULT_EXIT) };
    }
    if hooks.signal_after == Some(n) {
        // SAFETY: raise(2) with a valid signal number.
        unsafe { libc::raise(libc::SIGTERM) };
    }
}

fn step<T>(r: io::Result<T>, what: &str, path: &Path) -> io::Result<T> {
    let v = r?;
    done(what, path);
    Ok(v)
}

/// The folder of `path`, `.` for a bare file name.
fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Make a rename or unlink in `dir` durable (best effort: not every
/// platform can open a folder).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    if let Ok(d) = File::open(dir) {
        step(d.sync_all(), "fsync", dir)?;
    }
    Ok(())
}

/// Write `bytes` to `path` so that a crash at any moment leaves the old file
/// or the new one, never a torn one: a temporary file in the same folder,
/// written and fsynced, renamed over `path`, then the folder fsynced.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path.file_name().ok_or_else(|| io::Error::new(ErrorKind::InvalidInput, "no file name"))?;
    write_atomic_as(path, &name.to_string_lossy(), bytes)
}

/// [`write_atomic`] with the temporary file named `.<stem>.tmp-<pid>` rather
/// than after the file: for a file whose readers would take the temporary
/// copy for one of theirs (TensorBoard reads every file with `tfevents` in
/// its name).
pub fn write_atomic_as(path: &Path, stem: &str, bytes: &[u8]) -> io::Result<()> {
    // Never rename over a device, FIFO or folder.
    graph::bounded::check_output(path)?;
    let dir = parent(path);
    let tmp = dir.join(format!(".{stem}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = step(File::create(&tmp), "create", &tmp)?;
        step(file.write_all(bytes), "write", &tmp)?;
        step(file.sync_all(), "fsync", &tmp)?;
        drop(file);
        step(fs::rename(&tmp, path), "rename", path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Append `bytes` to the existing file `path` and fsync it: a log that a
/// reader follows as it grows (TensorBoard's events file), for which a
/// crash mid-write leaves a torn last record rather than a torn file; its
/// readers stop there, and `--resume` rebuilds it. A missing file is an
/// error of kind `NotFound`, for the caller to write it whole.
pub fn append(path: &Path, bytes: &[u8]) -> io::Result<()> {
    graph::bounded::check_output(path)?;
    let mut file = step(OpenOptions::new().append(true).open(path), "open", path)?;
    step(file.write_all(bytes), "write", path)?;
    step(file.sync_data(), "fsync", path)
}

/// Remove `path` durably; a file that is already gone is fine.
pub fn remove_file(path: &Path) -> io::Result<()> {
    match step(fs::remove_file(path), "remove", path) {
        Ok(()) => sync_dir(parent(path)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Remove temporary files that a killed writer left in `dir`
/// (`.<name>.tmp-<pid>` of a process that no longer runs).
pub fn clean_temp_files(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((_, pid)) = name.strip_prefix('.').and_then(|n| n.rsplit_once(".tmp-")) else { continue };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        let alive = pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists();
        if !alive && entry.file_type().is_ok_and(|t| t.is_file()) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// The lock file of a run folder.
pub const LOCK: &str = ".lock";

/// An exclusive lock on a run folder, released when dropped (or when the
/// process ends, however it ends).
#[derive(Debug)]
pub struct RunLock {
    file: File,
}

impl Drop for RunLock {
    /// The file stays (removing it would race with the next process to
    /// lock it) but says nothing once released: a leftover is harmless.
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
    }
}

/// Refuse a lock path that exists as anything but a regular file: opening
/// a FIFO would wait forever, and a device or folder is not a lock file.
pub fn check_lock_path(path: &Path) -> Result<()> {
    match fs::metadata(path) {
        Ok(meta) if !meta.is_file() => bail!(
            "{}: is {}, not a lock file; remove it (a leftover regular file there is harmless)",
            path.display(),
            graph::bounded::describe(meta.file_type())
        ),
        _ => Ok(()),
    }
}

/// Open `path` as a lock file, creating it; see [`check_lock_path`].
fn open_lock_file(path: &Path) -> Result<File> {
    check_lock_path(path)?;
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("{}: cannot open the run folder's lock file", path.display()))
}

impl RunLock {
    /// Lock `dir` (which must exist) for this process, or fail naming the
    /// process that holds it.
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        let path = dir.join(LOCK);
        let mut file = open_lock_file(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = (&file).take(64).read_to_string(&mut text);
                let holder = match text.trim().parse::<u32>() {
                    Ok(pid) => format!("process {pid}"),
                    Err(_) => "another process".to_string(),
                };
                bail!(
                    "{}: {holder} is training into this folder (it holds {}); wait for it to finish or \
                     choose another --out",
                    dir.display(),
                    path.display()
                );
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("{}: cannot lock the run folder", path.display()))
            }
        }
        // Ours now: say who holds it.
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .with_context(|| format!("{}: cannot write the lock file", path.display()))?;
        Ok(RunLock { file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_folder_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path()).unwrap();
        let e = RunLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(e.contains(&format!("process {} is training into this folder", std::process::id())), "{e}");
        drop(first);
        // Released: the file stays, empty (no stale pid in it).
        let lock = dir.path().join(LOCK);
        assert_eq!(fs::read(&lock).unwrap(), b"");
        RunLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn a_lock_path_that_is_not_a_regular_file_is_refused_not_waited_on() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join(LOCK);
        let c = std::ffi::CString::new(lock.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo(3) on a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let e = RunLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(e.contains("a FIFO (named pipe), not a lock file"), "{e}");
        fs::remove_file(&lock).unwrap();
        fs::create_dir(&lock).unwrap();
        let e = RunLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not a lock file"), "{e}");
    }

    #[test]
    fn write_atomic_replaces_and_remove_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        remove_file(&p).unwrap();
        remove_file(&p).unwrap();
        assert!(!p.exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0, "no temporary file left");
    }
}
