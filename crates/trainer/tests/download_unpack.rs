//! The unpacker's reader rules and the first-use path of `locate`, on small
//! archives in temporary folders. No network: the end-to-end downloads from
//! a loopback server are in `tests/download.rs`.

mod common;

use common::archive;

use std::path::Path;
use std::time::Duration;
use trainer::data::cache::{Target, ARCHIVE, FOLDER};
use trainer::data::download::{ensure, ensure_offline, Source};
use trainer::data::unpack::{unpack, unpack_into, Failure};
use trainer::data::*;

use anyhow::Result;
use tar::EntryType;
use tempfile::TempDir;

/// A source that must never be contacted (a loopback port nothing listens on,
/// should a bug try).
fn offline(md5: &str) -> Source {
    Source { url: "http://127.0.0.1:9/never".into(), md5: md5.into(), timeout: Duration::from_secs(1) }
}

/// Unpacks `bytes` into a fresh folder; the folder, and the error message if any.
fn try_unpack(bytes: &[u8]) -> (TempDir, std::result::Result<(), String>) {
    let dir = TempDir::new().unwrap();
    let to = dir.path().join("out");
    std::fs::create_dir(&to).unwrap();
    let r = unpack_into(bytes, Path::new("a.tar.gz"), &to).map_err(|f| match f {
        Failure::Archive(e) => e.to_string(),
        Failure::Write(p, e) => panic!("write error at {}: {e}", p.display()),
    });
    (dir, r)
}

fn err(bytes: &[u8]) -> String {
    let (_dir, r) = try_unpack(bytes);
    let m = r.expect_err("the archive should be refused");
    assert!(m.starts_with("a.tar.gz: ") && !m.contains('\n'), "{m}");
    m
}

fn file(name: &str, data: &[u8]) -> archive::Member {
    (name.to_string(), EntryType::Regular, data.to_vec())
}

#[test]
fn the_official_layout_unpacks_and_loads_with_every_class() {
    let (dir, r) = try_unpack(&archive::official(2));
    r.unwrap();
    let out = dir.path().join("out");
    assert_eq!(std::fs::metadata(out.join("data_batch_3.bin")).unwrap().len(), 20 * 3073);
    let all = load(&out, &[]).unwrap();
    assert_eq!(all.format, Format::CifarOfficial);
    assert_eq!(all.train.class_names, cifar::CIFAR10_NAMES.map(String::from).to_vec());
    assert_eq!((all.train.len(), all.test.len()), (100, 20));
    let two = load(&out, &["airplane".into(), "ship".into()]).unwrap();
    assert_eq!((two.train.len(), two.test.len()), (20, 4));
}

#[test]
fn members_outside_the_folder_are_refused() {
    let ok = archive::official_members(1);
    for (name, why) in [
        ("../evil.bin", "climbs out"),
        ("cifar-10-batches-bin/../../evil.bin", "climbs out"),
        ("/tmp/evil.bin", "absolute path"),
        ("other/data_batch_1.bin", "outside cifar-10-batches-bin/"),
        ("cifar-10-batches-bin/sub/data_batch_1.bin", "outside cifar-10-batches-bin/"),
        ("data_batch_1.bin", "outside cifar-10-batches-bin/"),
    ] {
        let mut members = ok.clone();
        members.insert(1, file(name, b"x"));
        let (dir, r) = try_unpack(&archive::raw(&members));
        let m = r.expect_err(name);
        assert!(m.contains(&format!("{name:?}")) && m.contains(why) && m.contains("refused"), "{name}: {m}");
        assert!(!dir.path().join("evil.bin").exists() && !dir.path().join("other").exists());
    }
}

#[test]
fn links_and_other_special_members_are_refused() {
    for kind in [EntryType::Symlink, EntryType::Link, EntryType::Fifo, EntryType::Char] {
        let mut members = archive::official_members(1);
        members[1] = ("cifar-10-batches-bin/data_batch_1.bin".into(), kind, Vec::new());
        let m = err(&archive::raw(&members));
        assert!(m.contains("data_batch_1.bin") && m.contains("not a regular file"), "{kind:?}: {m}");
    }
    // A folder inside the folder.
    let mut members = archive::official_members(1);
    members.push(("cifar-10-batches-bin/extra/".into(), EntryType::Directory, Vec::new()));
    assert!(err(&archive::raw(&members))
        .contains("\"cifar-10-batches-bin/extra/\" is a Directory, not a regular"));
}

#[test]
fn sizes_names_and_completeness_are_checked() {
    let base = archive::official_members(1);
    let with = |f: &dyn Fn(&mut Vec<archive::Member>)| {
        let mut m = base.clone();
        f(&mut m);
        err(&archive::raw(&m))
    };
    let m = with(&|m| m[7].2 = vec![b'a'; 5000]);
    assert!(m.contains("batches.meta.txt") && m.contains("5000 bytes, more than the 4096"), "{m}");
    let m = with(&|m| m[2].2.truncate(3073 * 3 + 5));
    assert!(m.contains("data_batch_2.bin has 9224 bytes, not a whole"), "{m}");
    let m = with(&|m| m[6].2.clear());
    assert!(m.contains("test_batch.bin has 0 bytes"), "{m}");
    let m = with(&|m| {
        m.remove(6);
    });
    assert!(m.contains("cifar-10-batches-bin/test_batch.bin is missing"), "{m}");
    let m = with(&|m| m.push(file("cifar-10-batches-bin/notes.txt", b"hi")));
    assert!(m.contains("unexpected member \"cifar-10-batches-bin/notes.txt\""), "{m}");
    let m = with(&|m| m.push(file("cifar-10-batches-bin/./data_batch_1.bin", b"hi")));
    assert!(m.contains("appears twice"), "{m}");
    // Cut short or not gzip at all.
    let whole = archive::official(1);
    assert!(err(&whole[..whole.len() / 2]).contains("corrupt archive"));
    assert!(err(b"plain text, not gzip").contains("corrupt archive"));
}

#[test]
fn unpacking_is_all_or_nothing() {
    let cache = TempDir::new().unwrap();
    let target = Target::cache(cache.path().to_path_buf());
    let partial = cache.path().join(format!(".{FOLDER}.partial"));
    let archive_path = cache.path().join(ARCHIVE);

    // A refused archive: no folder, no partial folder, and the archive is
    // moved aside (it may be the user's own file), never over an earlier one.
    let mut members = archive::official_members(1);
    members.remove(3);
    let refused_bytes = archive::raw(&members);
    let aside = cache.path().join(format!("{ARCHIVE}.refused"));
    for (round, moved_to) in [(1, aside.clone()), (2, cache.path().join(format!("{ARCHIVE}.refused-2")))] {
        std::fs::write(&archive_path, &refused_bytes).unwrap();
        let m = unpack(&archive_path, &target).unwrap_err().to_string();
        let said = format!("the archive was moved aside to {}", moved_to.display());
        assert!(m.contains("data_batch_3.bin is missing") && m.contains(&said), "round {round}: {m}");
        assert!(std::fs::read(&moved_to).unwrap() == refused_bytes, "round {round}");
        assert!(!archive_path.exists() && !partial.exists() && !target.folder().exists());
    }

    // A leftover of an interrupted unpack (every file, not yet renamed) is
    // not data to the search, and the next unpack replaces it.
    std::fs::create_dir(&partial).unwrap();
    for f in unpack::BATCHES {
        std::fs::write(partial.join(f), archive::batch(1, 0)).unwrap();
    }
    let no_download =
        FirstUse { download: false, cache: Ok(cache.path().to_path_buf()), source: || Ok(offline(MD5_ANY)) };
    let m = locate_in(None, None, &[], no_download).unwrap_err().to_string();
    assert!(m.contains(&format!("{} (missing)", target.folder().display())), "{m}");
    // A final folder emptied by hand is replaced too.
    std::fs::create_dir(target.folder()).unwrap();
    std::fs::write(target.folder().join("data_batch_2.bin"), b"old").unwrap();
    std::fs::write(&archive_path, archive::official(1)).unwrap();
    unpack(&archive_path, &target).unwrap();
    assert!(!partial.exists());
    assert_eq!(load(&target.folder(), &[]).unwrap().train.len(), 50);
}

const MD5_ANY: &str = "00000000000000000000000000000000";

#[test]
fn first_use_checks_a_hand_placed_archive_then_later_runs_find_the_cache() {
    let cache = TempDir::new().unwrap();
    let bytes = archive::official(1);
    let md5 = archive::md5_hex(&bytes);
    std::fs::write(cache.path().join(ARCHIVE), &bytes).unwrap();
    let missing = cache.path().join("nowhere");
    let first =
        FirstUse { download: true, cache: Ok(cache.path().to_path_buf()), source: || Ok(offline(&md5)) };
    let dir = locate_in(None, None, std::slice::from_ref(&missing), first).unwrap();
    assert_eq!(dir, cache.path().join(FOLDER));
    assert!(!cache.path().join(ARCHIVE).exists(), "the archive is removed once unpacked");
    // Later: found on the search path, with downloading off and no source read.
    let later = FirstUse {
        download: false,
        cache: Ok(cache.path().to_path_buf()),
        source: || -> Result<Source> { unreachable!("the cache is found first") },
    };
    let found = locate_in(None, None, &[missing], later).unwrap();
    assert_eq!(found, cache.path().join(FOLDER).canonicalize().unwrap());
    // The search path still comes first.
    let other = TempDir::new().unwrap();
    std::fs::write(other.path().join("train.bin"), b"").unwrap();
    let first_again =
        FirstUse { download: true, cache: Ok(cache.path().to_path_buf()), source: || unreachable!() };
    let found = locate_in(None, None, &[other.path().to_path_buf()], first_again).unwrap();
    assert_eq!(found, other.path().canonicalize().unwrap());
}

#[test]
fn a_hand_placed_archive_with_a_wrong_checksum_is_moved_aside_never_deleted() {
    let cache = TempDir::new().unwrap();
    let path = cache.path().join(ARCHIVE);
    let bytes = archive::official(1);
    let md5 = archive::md5_hex(&bytes);
    let aside = cache.path().join(format!("{ARCHIVE}.md5-{md5}"));
    let target = Target::cache(cache.path().to_path_buf());
    // Offline: the error says where it went and how to accept it.
    std::fs::write(&path, &bytes).unwrap();
    let m = ensure_offline(&target, &offline(MD5_ANY)).unwrap_err().to_string();
    let needles =
        [format!("expected {MD5_ANY}"), aside.display().to_string(), format!("GAPNET_CIFAR10_MD5={md5}")];
    for needle in &needles {
        assert!(m.contains(needle.as_str()), "{needle:?} not in {m}");
    }
    assert!(!path.exists() && std::fs::read(&aside).unwrap() == bytes && !target.folder().exists());
    // Online: moved aside, then the download is tried (and fails here).
    std::fs::rename(&aside, &path).unwrap();
    let m = ensure(&target, &offline(MD5_ANY)).unwrap_err().to_string();
    assert!(m.contains("http://127.0.0.1:9/never"), "{m}");
    assert!(!path.exists() && std::fs::read(&aside).unwrap() == bytes);
    // Accepted with its own checksum, it unpacks.
    std::fs::rename(&aside, &path).unwrap();
    assert_eq!(ensure_offline(&target, &offline(&md5)).unwrap(), target.folder());
}

#[test]
fn downloading_off_unpacks_an_archive_in_the_cache() {
    let cache = TempDir::new().unwrap();
    let bytes = archive::official(1);
    let md5 = archive::md5_hex(&bytes);
    std::fs::write(cache.path().join(ARCHIVE), &bytes).unwrap();
    let off =
        FirstUse { download: false, cache: Ok(cache.path().to_path_buf()), source: || Ok(offline(&md5)) };
    let dir = locate_in(None, None, &[], off).unwrap();
    assert_eq!(dir, cache.path().join(FOLDER));
    assert_eq!(load(&dir, &[]).unwrap().train.len(), 50);
}

#[test]
fn downloading_off_names_the_cache_and_the_ways_out() {
    let cache = TempDir::new().unwrap();
    let first =
        FirstUse { download: false, cache: Ok(cache.path().to_path_buf()), source: || unreachable!() };
    let m = locate_in(None, None, &[], first).unwrap_err().to_string();
    let missing = format!("{} (missing)", cache.path().join(FOLDER).display());
    let no_archive = format!("{} (no archive)", cache.path().join(ARCHIVE).display());
    for needle in [missing.as_str(), no_archive.as_str(), "--no-download", "trainer fetch"] {
        assert!(m.contains(needle), "{needle:?} not in {m}");
    }
    assert!(!cache.path().join(".cifar-10.lock").exists(), "nothing is written when downloading is off");
}

#[test]
fn a_cache_lock_that_is_a_fifo_is_refused_not_waited_on() {
    let cache = TempDir::new().unwrap();
    let lock = cache.path().join(".cifar-10.lock");
    let c = std::ffi::CString::new(lock.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) on a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let m = ensure(&Target::cache(cache.path().to_path_buf()), &offline(MD5_ANY)).unwrap_err().to_string();
    assert!(m.contains(&lock.display().to_string()) && m.contains("FIFO"), "{m}");
}
