//! Unpacking the CIFAR-10 archive under the same rules as every reader of
//! this program: only the members the official archive holds, regular files
//! only (no links, devices or extra folders), each within its size bound, no
//! path outside the target folder; each batch a whole, non-empty number of
//! records. Anything else stops with one line naming the archive and the member.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use flate2::read::GzDecoder;
use tar::EntryType;

use super::cache::{Target, FOLDER};
use super::cifar::RECORD_BYTES;
use super::tar_guard::HeaderGuard;

/// The six batch files the loader needs.
pub const BATCHES: [&str; 6] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
    "test_batch.bin",
];

/// A batch holds 10,000 records in the official archive; a smaller whole
/// number is accepted (mirrors with fewer records, and the tests' archives).
const BATCH_MAX: u64 = 10_000 * RECORD_BYTES as u64;

/// Every member the official archive holds (under `cifar-10-batches-bin/`),
/// with the most bytes it may have.
const MEMBERS: [(&str, u64); 8] = [
    (BATCHES[0], BATCH_MAX),
    (BATCHES[1], BATCH_MAX),
    (BATCHES[2], BATCH_MAX),
    (BATCHES[3], BATCH_MAX),
    (BATCHES[4], BATCH_MAX),
    (BATCHES[5], BATCH_MAX),
    ("batches.meta.txt", 4 << 10),
    ("readme.html", 64 << 10),
];

/// Where an archive member would go: `None` for the `cifar-10-batches-bin/`
/// folder entry itself, `Some(name)` for a file in it. Anything else is an
/// error: an absolute path, a `..`, or any other place.
fn member(path: &[u8]) -> std::result::Result<Option<&str>, &'static str> {
    let path = std::str::from_utf8(path).map_err(|_| "a name that is not UTF-8")?;
    if path.starts_with('/') || path.starts_with('\\') || path.contains(':') {
        return Err("an absolute path");
    }
    // `./cifar-10-batches-bin/x` and a folder's trailing `/` are the same place.
    let parts: Vec<&str> = path.split(['/', '\\']).filter(|p| !p.is_empty() && *p != ".").collect();
    if parts.contains(&"..") {
        return Err("a path that climbs out with '..'");
    }
    match parts.as_slice() {
        [folder] if *folder == FOLDER => Ok(None),
        [folder, name] if *folder == FOLDER => Ok(Some(name)),
        _ => Err("a path outside cifar-10-batches-bin/"),
    }
}

/// Unpacks `archive` into `target`'s folder: first into a temporary
/// folder beside it (a leftover one from an interrupted run is removed first;
/// the caller holds the lock), renamed into place once whole.
pub fn unpack(archive: &Path, target: &Target) -> Result<()> {
    let partial = target.dir.join(format!(".{FOLDER}.partial"));
    if partial.exists() {
        fs::remove_dir_all(&partial).map_err(|e| target.write_error(&partial, e))?;
    }
    fs::create_dir(&partial).map_err(|e| target.write_error(&partial, e))?;
    let result = (|| {
        let file = File::open(archive).map_err(|e| anyhow!("{}: cannot read ({e})", archive.display()))?;
        match unpack_into(file, archive, &partial) {
            Ok(()) => {}
            Err(Failure::Archive(e)) => {
                // Checked by MD5 yet unreadable or not the official layout: only a mirror
                // with its own checksum gets here. Left in place it would fail every run;
                // it may be the user's own file, so it is moved aside, never deleted.
                let aside = refused_name(archive);
                match fs::rename(archive, &aside) {
                    Ok(()) => bail!(
                        "{e}; the archive was moved aside to {} (not the official CIFAR-10 layout: \
                         delete it, or unset {} to download the official archive)",
                        aside.display(),
                        super::cache::MD5_VAR
                    ),
                    Err(r) => bail!("{e}; and it cannot be moved aside ({r}): delete {}", archive.display()),
                }
            }
            Err(Failure::Write(path, e)) => return Err(target.write_error(&path, e)),
        }
        let _ = crate::fsops::sync_dir(&partial);
        let folder = target.folder();
        if folder.exists() {
            // Only an incomplete one gets here (a complete one is used as it is):
            // files deleted by hand. The rename cannot replace a folder that holds files.
            eprintln!("replacing the incomplete {}", folder.display());
            fs::remove_dir_all(&folder).map_err(|e| target.write_error(&folder, e))?;
        }
        fs::rename(&partial, &folder).map_err(|e| target.write_error(&folder, e))?;
        let _ = crate::fsops::sync_dir(&target.dir);
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&partial);
    }
    result
}

/// Why an unpack stopped: the archive breaks a rule (or is corrupt), or the
/// disk refused a write (the archive is fine; keep it).
#[derive(Debug)]
pub enum Failure {
    Archive(anyhow::Error),
    Write(PathBuf, io::Error),
}

/// Unpacks the gzipped tar `reader` (named `archive` in messages) into the
/// existing, empty folder `to`, under the rules above.
pub fn unpack_into(reader: impl Read, archive: &Path, to: &Path) -> std::result::Result<(), Failure> {
    let name = archive.display();
    let bad = |what: String| Failure::Archive(anyhow!("{name}: {what}"));
    let corrupt = |e: io::Error| bad(format!("corrupt archive ({e})"));
    // The guard bounds what the tar reader would read whole into memory.
    let mut tar = tar::Archive::new(HeaderGuard::new(GzDecoder::new(reader)));
    let mut seen: Vec<&str> = Vec::new();
    let mut sizes = [0u64; BATCHES.len()];
    for entry in tar.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let kind = entry.header().entry_type();
        if kind == EntryType::XGlobalHeader {
            continue; // pax metadata for the whole archive, not a file
        }
        let raw = entry.path_bytes().into_owned();
        // A name may be up to MAX_RECORD bytes: messages quote its start.
        let shown = graph::brief::text(&String::from_utf8_lossy(&raw), 120);
        let place = member(&raw).map_err(|why| bad(format!("member {shown:?} has {why} (refused)")))?;
        let Some(file) = place else {
            if kind.is_dir() {
                continue;
            }
            return Err(bad(format!("member {shown:?} is not the {FOLDER}/ folder it is named after")));
        };
        if !(kind.is_file() || kind == EntryType::Continuous) {
            return Err(bad(format!("member {shown:?} is a {kind:?}, not a regular file (refused)")));
        }
        let Some(&(file, max)) = MEMBERS.iter().find(|(m, _)| *m == file) else {
            let known: Vec<&str> = MEMBERS.iter().map(|m| m.0).collect();
            return Err(bad(format!(
                "unexpected member {shown:?} (the CIFAR-10 archive holds {FOLDER}/ with {})",
                known.join(", ")
            )));
        };
        if seen.contains(&file) {
            return Err(bad(format!("member {shown:?} appears twice")));
        }
        seen.push(file);
        let size = entry.header().size().map_err(corrupt)?;
        if size > max {
            return Err(bad(format!("member {shown:?} has {size} bytes, more than the {max} it may hold")));
        }
        let path = to.join(file);
        let mut out = File::create_new(&path).map_err(|e| Failure::Write(path.clone(), e))?;
        // The header's size is checked above; `take` bounds what is read whatever it says.
        let mut limited = (&mut entry).take(max + 1);
        let mut buf = vec![0u8; 1 << 16];
        let mut copied = 0u64;
        loop {
            let n = match limited.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(corrupt(e)),
            };
            out.write_all(&buf[..n]).map_err(|e| Failure::Write(path.clone(), e))?;
            copied += n as u64;
        }
        if copied != size {
            return Err(bad(format!("member {shown:?} holds {copied} bytes, its header says {size}")));
        }
        out.sync_all().map_err(|e| Failure::Write(path.clone(), e))?;
        if let Some(i) = BATCHES.iter().position(|b| *b == file) {
            sizes[i] = size;
        }
    }
    for (batch, size) in BATCHES.iter().zip(sizes) {
        if !seen.contains(batch) {
            return Err(bad(format!("{FOLDER}/{batch} is missing (the archive is incomplete)")));
        }
        if size == 0 || size % RECORD_BYTES as u64 != 0 {
            return Err(bad(format!(
                "{FOLDER}/{batch} has {size} bytes, not a whole, non-empty number of {RECORD_BYTES}-byte records"
            )));
        }
    }
    Ok(())
}

/// A free name beside `archive` for a refused copy: `<name>.refused`, then
/// `<name>.refused-2`, ... (an earlier refused copy is never replaced).
fn refused_name(archive: &Path) -> PathBuf {
    let name = archive.file_name().unwrap_or_default().to_string_lossy().into_owned();
    (1..)
        .map(|i| match i {
            1 => archive.with_file_name(format!("{name}.refused")),
            i => archive.with_file_name(format!("{name}.refused-{i}")),
        })
        .find(|p| fs::symlink_metadata(p).is_err())
        .expect("some name is free")
}
