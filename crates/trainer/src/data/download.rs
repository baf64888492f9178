//! First use of the official CIFAR-10: download, check, unpack, cache.
//!
//! When the search path holds no data, [`super::locate`] calls [`ensure`] on
//! the cache folder. Under an advisory lock on a file in that folder (a
//! second process waits, then reuses the first one's result), the archive is
//! streamed into a `.part` file while its MD5 is computed, renamed into
//! place only once the checksum matches, and unpacked (see [`super::unpack`])
//! into a temporary folder that becomes `cifar-10-batches-bin` by a single
//! rename once every batch file is whole. The loader only ever looks at that
//! final name, so a download or unpack cut short leaves nothing it would
//! accept, and the next run goes on from what is there: the checked archive,
//! or nothing.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, ErrorKind, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use md5::{Digest, Md5};

use super::cache::{Target, ARCHIVE};
use super::dataset::hex;
use super::unpack;

/// The official CIFAR-10 binary release, as on its home page
/// (https://www.cs.toronto.edu/~kriz/cifar.html). `trainer fetch` and
/// `scripts/fetch-cifar10.sh` use these too: the one place they are written.
pub const URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
/// The archive's MD5, published beside it.
pub const MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";
/// Environment variables: a mirror's URL and its MD5 (also how the tests
/// point at a loopback server), the cache folder, the off switch, and the
/// network timeout in seconds.
pub const URL_VAR: &str = "GAPNET_CIFAR10_URL";
pub use super::cache::MD5_VAR;
pub const NO_DOWNLOAD_VAR: &str = "GAPNET_NO_DOWNLOAD";
pub const TIMEOUT_VAR: &str = "GAPNET_DOWNLOAD_TIMEOUT";

/// Connecting, and each wait for more bytes, give up after this long: long
/// enough for a slow link, short enough that a dead one is reported.
const DEFAULT_TIMEOUT_SECS: u64 = 30;
/// The official archive is 170,052,171 bytes; a body much larger than that is
/// not it, and must not fill the disk before the checksum says so.
const MAX_ARCHIVE: u64 = 512 << 20;
/// The advisory lock (never removed: removing a lock file races with its next user).
const LOCK: &str = ".cifar-10.lock";

/// Where the archive comes from and how long to wait for it.
#[derive(Clone, Debug)]
pub struct Source {
    pub url: String,
    /// Lowercase hex.
    pub md5: String,
    pub timeout: Duration,
}

impl Source {
    /// The official URL and MD5 unless `GAPNET_CIFAR10_URL` / `GAPNET_CIFAR10_MD5`
    /// name others; the timeout from `GAPNET_DOWNLOAD_TIMEOUT`.
    pub fn from_env() -> Result<Source> {
        Source::from_vars(|name| std::env::var(name).ok())
    }

    /// [`Source::from_env`] with the variables looked up by `var` (blank = unset).
    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Source> {
        let var = |name: &str| var(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let url = var(URL_VAR).unwrap_or_else(|| URL.to_string());
        let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        if !matches!(scheme.as_deref(), Some("http" | "https")) {
            bail!(
                "{URL_VAR}={}: only http:// and https:// URLs are fetched; for a file on this machine, put it \
                 in the cache folder as {} (or unpack it and pass --data DIR)",
                graph::brief::text(&url, 120),
                super::cache::ARCHIVE
            );
        }
        let md5 = var(MD5_VAR).map_or_else(|| MD5.to_string(), |v| v.to_ascii_lowercase());
        if md5.len() != 32 || !md5.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("{MD5_VAR}={md5}: not an MD5 checksum (32 hexadecimal digits)");
        }
        let timeout = match var(TIMEOUT_VAR) {
            None => Duration::from_secs(DEFAULT_TIMEOUT_SECS),
            Some(v) => match v.parse::<f64>() {
                Ok(s) if (0.001..=86_400.0).contains(&s) => Duration::from_secs_f64(s),
                _ => bail!("{TIMEOUT_VAR}={v}: not a number of seconds from 0.001 to 86400"),
            },
        };
        Ok(Source { url, md5, timeout })
    }
}

/// Whether `GAPNET_NO_DOWNLOAD` is on (set to anything but empty or `0`).
pub fn disabled_by_env() -> bool {
    switched_off(std::env::var_os(NO_DOWNLOAD_VAR))
}

fn switched_off(value: Option<std::ffi::OsString>) -> bool {
    value.is_some_and(|v| !v.is_empty() && v != "0")
}

/// How to get the archive into `target` without this program's download,
/// for every message about a failed one.
fn by_hand(target: &Target, source: &Source) -> String {
    format!(
        "to work offline, fetch {} by other means and put it at {} (the next run checks and unpacks it), \
         or pass --data DIR",
        source.url,
        target.dir.join(ARCHIVE).display()
    )
}

/// Whether `folder` holds all six batch files (it only ever appears whole,
/// by a rename, but a user may have emptied it).
fn complete(folder: &Path) -> bool {
    unpack::BATCHES.iter().all(|f| folder.join(f).is_file())
}

/// Makes sure `target` holds the unpacked dataset and returns its folder:
/// at once if it is there, else from a checked archive already in `target`
/// (downloaded earlier, or placed by hand), else downloaded from `source`.
/// Says what it does on stderr, with a progress bar on a terminal.
pub fn ensure(target: &Target, source: &Source) -> Result<PathBuf> {
    ensure_with(target, source, true)
}

/// [`ensure`] without the network: an archive already in `target` is
/// checked and unpacked; none, or one that fails the check, is an error.
pub fn ensure_offline(target: &Target, source: &Source) -> Result<PathBuf> {
    ensure_with(target, source, false)
}

fn ensure_with(target: &Target, source: &Source, may_download: bool) -> Result<PathBuf> {
    let folder = target.folder();
    if complete(&folder) {
        return Ok(folder);
    }
    fs::create_dir_all(&target.dir).map_err(|e| target.write_error(&target.dir, e))?;
    let lock_path = target.dir.join(LOCK);
    crate::fsops::check_lock_path(&lock_path)?;
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| target.write_error(&lock_path, e))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            eprintln!("waiting for another trainer that is fetching CIFAR-10 into {}", target.dir.display());
            lock.lock().map_err(|e| anyhow!("{}: cannot lock ({e})", lock_path.display()))?;
        }
        Err(TryLockError::Error(e)) => bail!("{}: cannot lock ({e})", lock_path.display()),
    }
    // The process we waited for may have done it all.
    if complete(&folder) {
        return Ok(folder);
    }
    // A partial download of a killed run is of no use (no resumed transfers).
    let _ = fs::remove_file(target.dir.join(format!("{ARCHIVE}.part")));
    let archive = target.dir.join(ARCHIVE);
    let checked = archive.is_file() && check_file(&archive, source, may_download)?;
    if !checked {
        if !may_download {
            bail!("{}: no archive there, and downloading is off", archive.display());
        }
        download(target, source, &archive)?;
    }
    unpack::unpack(&archive, target)?;
    // The batch files hold everything the archive did (but readme.html, kept too).
    let _ = fs::remove_file(&archive);
    eprintln!("CIFAR-10 is ready in {}", folder.display());
    Ok(folder)
    // The lock is released when `lock` is dropped, or by the OS if we are killed.
}

/// Checks the MD5 of an archive found in the cache (a hand-placed copy, or
/// one whose unpacking was cut short). A copy that fails is never deleted:
/// it is moved aside, and then, when `may_download`, `Ok(false)` lets the
/// download replace it; otherwise the error says where it went and how to
/// accept it.
fn check_file(archive: &Path, source: &Source, may_download: bool) -> Result<bool> {
    eprintln!("checking {} (found in the cache)", archive.display());
    let mut file = File::open(archive).map_err(|e| anyhow!("{}: cannot read ({e})", archive.display()))?;
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => md5.update(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => bail!("{}: cannot read ({e})", archive.display()),
        }
    }
    let got = hex(&md5.finalize());
    if got == source.md5 {
        return Ok(true);
    }
    let aside = archive.with_file_name(format!("{ARCHIVE}.md5-{got}"));
    fs::rename(archive, &aside).map_err(|e| anyhow!("{}: cannot move it aside ({e})", archive.display()))?;
    let why = format!(
        "{}: MD5 {got}, expected {}: not the official archive, so it was moved aside to {} (to use that copy \
         anyway, move it back and set {MD5_VAR}={got})",
        archive.display(),
        source.md5,
        aside.display()
    );
    if !may_download {
        bail!("{why}");
    }
    eprintln!("warning: {why}; downloading the official one");
    Ok(false)
}

/// Removes a file when dropped, unless disarmed: no partial download
/// outlives an error.
struct RemoveOnDrop<'a>(Option<&'a Path>);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(path) = self.0 {
            let _ = fs::remove_file(path);
        }
    }
}

/// A byte count for messages: in bytes below a megabyte, else in MB.
fn mb(bytes: u64) -> String {
    if bytes < 1_000_000 {
        format!("{bytes} bytes")
    } else {
        format!("{:.1} MB", bytes as f64 / 1e6)
    }
}

/// Downloads `source` into `archive` (through `archive.part`), checking its
/// size and MD5 on the way; on any failure nothing is left behind.
fn download(target: &Target, source: &Source, archive: &Path) -> Result<()> {
    let url = &source.url;
    let by_hand = by_hand(target, source);
    let secs = source.timeout.as_secs_f64();
    let mut response = get(source, &by_hand)?;
    let expected = response.body().content_length();
    let size = expected.map_or_else(|| "size not given".to_string(), mb);
    eprintln!("downloading {url} ({size}) into {}", target.dir.display());
    if let Some(n) = expected.filter(|&n| n > MAX_ARCHIVE) {
        bail!("cannot download CIFAR-10: {url} offers {} bytes, not the ~170 MB archive; {by_hand}", n);
    }
    let part = target.dir.join(format!("{ARCHIVE}.part"));
    let mut file = File::create(&part).map_err(|e| target.write_error(&part, e))?;
    let mut guard = RemoveOnDrop(Some(&part));
    let bar = progress(expected);
    let mut reader = response.body_mut().with_config().limit(MAX_ARCHIVE).reader();
    let (mut md5, mut got) = (Md5::new(), 0u64);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                let of = expected.map_or(String::new(), |n| format!(" of {}", mb(n)));
                bail!(
                    "download of {url} broke off after {}{of}: {}; the partial file was removed; run again, \
                     or {by_hand}",
                    mb(got),
                    read_failure(&e, secs)
                );
            }
        };
        file.write_all(&buf[..n]).map_err(|e| target.write_error(&part, e))?;
        md5.update(&buf[..n]);
        got += n as u64;
        if let Some(bar) = &bar {
            bar.set_position(got);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if let Some(n) = expected.filter(|&n| n != got) {
        bail!(
            "download of {url} broke off after {} of {} (truncated transfer); the partial file was removed, \
             run again",
            mb(got),
            mb(n)
        );
    }
    let digest = hex(&md5.finalize());
    if digest != source.md5 {
        bail!(
            "download of {url}: MD5 {digest}, expected {} (corrupt transfer, or a mirror serving another file: \
             check {MD5_VAR}); the downloaded file was removed",
            source.md5
        );
    }
    file.sync_all().map_err(|e| target.write_error(&part, e))?;
    drop(file);
    fs::rename(&part, archive).map_err(|e| target.write_error(archive, e))?;
    guard.0 = None;
    let _ = crate::fsops::sync_dir(&target.dir);
    Ok(())
}

/// The response to `GET` of `source`'s URL, every wait for it limited to
/// `source.timeout`; a failure says what to do by hand (`by_hand`).
fn get(source: &Source, by_hand: &str) -> Result<ureq::http::Response<ureq::Body>> {
    let url = &source.url;
    let secs = source.timeout.as_secs_f64();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_resolve(Some(source.timeout))
        .timeout_connect(Some(source.timeout))
        .timeout_recv_response(Some(source.timeout))
        // A stall, not a slow link: the limit is on each wait for bytes.
        .timeout_per_read(Some(source.timeout))
        .user_agent(concat!("gapnet-trainer/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    agent.get(url).call().map_err(|e| match e {
        ureq::Error::StatusCode(code) => {
            anyhow!("cannot download CIFAR-10: {url} answered HTTP {code}; {by_hand}")
        }
        ureq::Error::HostNotFound => {
            anyhow!("cannot download CIFAR-10 from {url}: host not found (offline, or no DNS?); {by_hand}")
        }
        ureq::Error::Timeout(_) => anyhow!(
            "cannot download CIFAR-10 from {url}: no answer within {secs} s ({TIMEOUT_VAR} sets the limit); \
             {by_hand}"
        ),
        e => anyhow!("cannot download CIFAR-10 from {url}: {e} (offline?); {by_hand}"),
    })
}

/// Why reading the body failed: a stall of `secs` seconds, or the error.
fn read_failure(e: &io::Error, secs: f64) -> String {
    // ureq wraps its own timeout in an `io::Error` of kind `Other`.
    let timed_out = e.kind() == ErrorKind::TimedOut
        || e.get_ref()
            .and_then(|inner| inner.downcast_ref::<ureq::Error>())
            .is_some_and(|inner| matches!(inner, ureq::Error::Timeout(_)));
    if timed_out {
        format!("no data for {secs} s ({TIMEOUT_VAR} sets the limit)")
    } else {
        e.to_string()
    }
}

/// A byte progress bar on a terminal (none otherwise, so logs stay clean).
fn progress(len: Option<u64>) -> Option<ProgressBar> {
    if !io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(len.unwrap_or(0));
    let template = if len.is_some() {
        "[{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
    } else {
        "{spinner} {bytes} {bytes_per_sec}"
    };
    bar.set_style(ProgressStyle::with_template(template).expect("valid template").progress_chars("=> "));
    Some(bar)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_errors_say_what_to_do() {
        let t = Target::cache(PathBuf::from("/c"));
        let full = t.write_error(Path::new("/c/x"), io::Error::from(ErrorKind::StorageFull)).to_string();
        assert!(full.starts_with("/c/x: the disk is full") && full.contains("GAPNET_CACHE"), "{full}");
        let denied = t.write_error(Path::new("/c"), io::Error::from(ErrorKind::PermissionDenied)).to_string();
        assert!(denied.contains("cannot write there") && denied.contains("--data DIR"), "{denied}");
        let to = Target { dir: "/d".into(), choose: "choose another --to DIR" };
        let m = to.write_error(Path::new("/d"), io::Error::from(ErrorKind::ReadOnlyFilesystem)).to_string();
        assert!(m.contains("--to DIR") && !m.contains('\n'), "{m}");
    }

    #[test]
    fn the_hand_placed_archive_goes_in_the_target_folder() {
        let t = Target::cache(PathBuf::from("/c"));
        let s = Source { url: URL.into(), md5: MD5.into(), timeout: Duration::from_secs(1) };
        let m = by_hand(&t, &s);
        assert!(m.contains(URL) && m.contains(&format!("/c/{ARCHIVE}")), "{m}");
    }

    #[test]
    fn the_variables_override_and_bad_values_name_the_variable() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|p| p.0 == name).map(|p| p.1.to_string())
        };
        let official = Source::from_vars(vars(&[(URL_VAR, "  "), (TIMEOUT_VAR, "")])).unwrap();
        assert_eq!((official.url.as_str(), official.md5.as_str()), (URL, MD5));
        assert_eq!(official.timeout, Duration::from_secs(30));
        let mirror = Source::from_vars(vars(&[
            (URL_VAR, "http://127.0.0.1:1/a.tgz"),
            (MD5_VAR, "C32A1D4AB5D03F1284B67883E8D87530"),
            (TIMEOUT_VAR, "1.5"),
        ]))
        .unwrap();
        assert_eq!((mirror.url.as_str(), mirror.md5.as_str()), ("http://127.0.0.1:1/a.tgz", MD5));
        assert_eq!(mirror.timeout, Duration::from_millis(1500));
        for (pairs, message) in [
            (&[(MD5_VAR, "xyz")][..], "GAPNET_CIFAR10_MD5=xyz: not an MD5 checksum (32 hexadecimal digits)"),
            (&[(TIMEOUT_VAR, "0")][..], "GAPNET_DOWNLOAD_TIMEOUT=0: not a number of seconds from 0.001 to 86400"),
            (
                &[(TIMEOUT_VAR, "soon")][..],
                "GAPNET_DOWNLOAD_TIMEOUT=soon: not a number of seconds from 0.001 to 86400",
            ),
            // Positive, but zero once it is a duration.
            (
                &[(TIMEOUT_VAR, "1e-300")][..],
                "GAPNET_DOWNLOAD_TIMEOUT=1e-300: not a number of seconds from 0.001 to 86400",
            ),
            (
                &[(URL_VAR, "file:///srv/cifar-10-binary.tar.gz")][..],
                "GAPNET_CIFAR10_URL=file:///srv/cifar-10-binary.tar.gz: only http:// and https:// URLs are \
                 fetched; for a file on this machine, put it in the cache folder as cifar-10-binary.tar.gz (or \
                 unpack it and pass --data DIR)",
            ),
            (&[(URL_VAR, "ftp.example.org/x")][..], "GAPNET_CIFAR10_URL=ftp.example.org/x: only http://"),
        ] {
            let e = Source::from_vars(vars(pairs)).unwrap_err().to_string();
            assert!(e.starts_with(message), "{e:?} does not start with {message:?}");
        }
        assert!(!switched_off(None) && !switched_off(Some("".into())) && !switched_off(Some("0".into())));
        assert!(switched_off(Some("1".into())) && switched_off(Some("yes".into())));
    }

    #[test]
    fn hex_is_lowercase_and_padded() {
        assert_eq!(hex(&[0x00, 0xab, 0x0f]), "00ab0f");
        assert_eq!(hex(&Md5::digest(b"")), "d41d8cd98f00b204e9800998ecf8427e");
    }
}
