//! Small CIFAR-10 archives in the official layout, built in memory: shared by
//! the end-to-end download tests and the unpacker's unit tests in
//! `src/data` (which include this file by path).

use flate2::write::GzEncoder;
use flate2::Compression;
use md5::{Digest, Md5};
use tar::EntryType;

const RECORD: usize = 3073;

/// An archive member: name as stored, type, contents.
pub type Member = (String, EntryType, Vec<u8>);

/// The official `batches.meta.txt` (names, then blank lines).
pub const OFFICIAL_META: &str = "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n";

/// One batch: `per_class` records of each of the ten classes, labels in
/// turn, pixels a pattern that differs between records and batches.
pub fn batch(per_class: usize, seed: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(10 * per_class * RECORD);
    for i in 0..10 * per_class {
        bytes.push((i % 10) as u8);
        bytes.extend((0..RECORD - 1).map(|k| ((k * 7 + i * 131 + seed * 17 + k / 97) % 256) as u8));
    }
    bytes
}

/// The members of the official archive, small: the folder, five training
/// batches, the test batch, the class names and a readme.
pub fn official_members(per_class: usize) -> Vec<Member> {
    let dir = "cifar-10-batches-bin";
    let mut m = vec![(format!("{dir}/"), EntryType::Directory, Vec::new())];
    for i in 1..=5 {
        m.push((format!("{dir}/data_batch_{i}.bin"), EntryType::Regular, batch(per_class, i)));
    }
    m.push((format!("{dir}/test_batch.bin"), EntryType::Regular, batch(per_class, 9)));
    m.push((format!("{dir}/batches.meta.txt"), EntryType::Regular, OFFICIAL_META.as_bytes().to_vec()));
    m.push((format!("{dir}/readme.html"), EntryType::Regular, b"<meta HTTP-EQUIV=\"REFRESH\">".to_vec()));
    m
}

/// The official layout with `per_class` records of each class per batch, gzipped.
pub fn official(per_class: usize) -> Vec<u8> {
    raw(&official_members(per_class))
}

/// A gzipped tar of `members` (name, type, data). Names are stored byte for
/// byte, unchecked (`tar::Builder` would refuse `..`), so tests can build
/// hostile archives; a link's target is `/etc/passwd`.
pub fn raw(members: &[Member]) -> Vec<u8> {
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    for (name, kind, data) in members {
        let mut header = tar::Header::new_old();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        if matches!(kind, EntryType::Symlink | EntryType::Link) {
            let target = b"/etc/passwd";
            header.as_old_mut().linkname[..target.len()].copy_from_slice(target);
        }
        header.set_entry_type(*kind);
        header.set_size(data.len() as u64);
        header.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
        header.set_cksum();
        builder.append(&header, data.as_slice()).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// Lowercase hex MD5, as `GAPNET_CIFAR10_MD5` takes it.
pub fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A gzipped tar of one header of type `kind` (a GNU long name, a pax
/// header...) that declares `size` bytes of data, then, with `data`, those
/// bytes (zeros: a gigabyte compresses to a megabyte, what a hostile mirror
/// can serve), else nothing (cut short). The header's checksum is right, so
/// a reader takes the size at its word.
pub fn declaring(kind: u8, size: u64, data: bool) -> Vec<u8> {
    use std::io::Write;
    let mut header = tar::Header::new_gnu();
    header.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
    header.set_entry_type(EntryType::new(kind));
    header.set_size(size);
    header.set_mode(0o644);
    header.set_cksum();
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(header.as_bytes()).unwrap();
    if data {
        let chunk = vec![0u8; 1 << 20];
        let mut left = size.div_ceil(512) * 512 + 1024;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            e.write_all(&chunk[..n]).unwrap();
            left -= n as u64;
        }
    }
    e.finish().unwrap()
}

/// A gzipped tar whose first member is a record of type `kind` holding
/// `data`, followed by the official archive's members.
pub fn leading_record(kind: u8, data: &[u8]) -> Vec<u8> {
    let mut header = tar::Header::new_gnu();
    header.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
    header.set_entry_type(EntryType::new(kind));
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    let mut tar = header.as_bytes().to_vec();
    tar.extend_from_slice(data);
    tar.resize(tar.len().div_ceil(512) * 512, 0);
    let official = raw(&official_members(1));
    let mut rest = flate2::read::GzDecoder::new(&official[..]);
    std::io::Read::read_to_end(&mut rest, &mut tar).unwrap();
    gzip(&tar)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}
