//! TensorBoard's view of a run: `events.out.tfevents.<secs>.<host>` in the
//! run folder, one event per epoch holding the columns of `metrics.csv` as
//! scalars (tag = column name, step = epoch), so that `tensorboard --logdir
//! runs` shows every run, and every model of a comparison as a run of its own.
//!
//! The format is TensorFlow's. A file is a sequence of records, each the
//! data's length (u64 little-endian), the masked CRC-32C of those 8 bytes
//! (u32 LE), the data, and the masked CRC-32C of the data, where masking is
//! `((crc >> 15) | (crc << 17)) + 0xa282ead8`. The data of a record is a
//! protobuf `Event`, written with the crate's own encoder
//! ([`crate::protobuf`]):
//!
//! ```text
//! Event      { double wall_time = 1; int64 step = 2; string file_version = 3;
//!              Summary summary = 5; SessionLog session_log = 7; }
//! Summary    { repeated Value value = 1; }
//! Value      { string tag = 1; float simple_value = 2; }
//! SessionLog { SessionStatus status = 1; }   // START = 1
//! ```
//!
//! (the numbers of TensorBoard's `event.proto` and `summary.proto`; Event's
//! field 6 is the deprecated `LogMessage`).
//!
//! A file holds the `file_version` event ("brain.Event:2"), a SessionLog
//! START at step 1, then one summary event per epoch, in order.
//!
//! Consistency with the checkpoint. Like `metrics.csv`, the file is written
//! as each epoch ends (one record appended and fsynced), so it may run ahead
//! of the committed checkpoint, and a crash may leave a torn record at its
//! end (TensorBoard stops reading there). On resume, [`Events::open`] makes
//! the folder hold one events file with exactly the committed epochs,
//! valued as the rows `metrics.csv` is rebuilt from: a file that already
//! does is kept and appended to; otherwise a rebuilt file is written
//! atomically under a new, later name, then every other file TensorBoard
//! would read (any with `tfevents` in its name) is emptied. So a reader
//! never sees an epoch twice, whatever it does with a repeated step. The
//! wall times of the epochs the old file holds are kept (read back from its
//! whole, CRC-valid records).
//!
//! A TensorBoard that watches the folder meanwhile is served too. It reads
//! a run's files in name order and follows the last one as it grows, so the
//! later name moves it on to the rebuilt file; there its Python loader drops
//! what it read from the old file at the START event, and its Rust loader
//! on seeing a step again. The old file is emptied rather than removed
//! because the Python loader stays stuck on a file removed under it. A
//! crash between the two steps leaves both files whole, which both loaders
//! read right for the same reasons; the next resume empties the old one.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use super::metrics::EpochRow;
use crate::fsops;
use crate::protobuf::Message;

/// How the name of every events file written here begins.
pub const PREFIX: &str = "events.out.tfevents.";

/// What makes a file an events file to TensorBoard: this in its name.
const MARK: &str = "tfevents";

/// The stem of the temporary file of a rebuilt events file: without
/// [`MARK`], so that no TensorBoard reads it (or one a crash left behind).
const TEMP_STEM: &str = "tensorboard-events";

const FILE_VERSION: &str = "brain.Event:2";

/// The most an events file of ours may hold when read back: an epoch's
/// record is about 230 bytes, so this is some 290,000 epochs.
const LIMIT: u64 = 64 << 20;

/// CRC-32C, the Castagnoli polynomial (iSCSI's), as TFRecord uses it.
const CASTAGNOLI: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// The masked CRC-32C of `bytes`: masked because a CRC of data that
/// contains CRCs is weak (TFRecord's definition).
pub fn masked_crc(bytes: &[u8]) -> u32 {
    // `(crc >> 15) | (crc << 17)`, as the definition writes it.
    CASTAGNOLI.checksum(bytes).rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One TFRecord: length, its masked CRC, the data, its masked CRC.
pub fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

/// The scalars of an epoch: the columns of `metrics.csv` after `epoch`,
/// named and ordered as there.
pub fn scalars(row: &EpochRow) -> [(&'static str, f64); 9] {
    [
        ("lr", row.lr),
        ("train_ce", row.train_ce),
        ("train_seed_error", row.train_seed_error),
        ("train_acc", row.train_acc),
        ("test_ce", row.test_ce),
        ("test_acc", row.test_acc),
        ("seconds", row.seconds),
        ("images_per_s", row.images_per_s),
        ("sample_seed_error", row.sample_seed_error),
    ]
}

/// An `Event` of `wall` seconds since 1970 and `step`, then `field` holding
/// `body`. Fields in number order; a zero step is left out, as protobuf
/// leaves out a default value.
fn event(wall: f64, step: u64, field: u32, body: &[u8]) -> Vec<u8> {
    let mut e = Message::new();
    e.double(1, wall);
    if step != 0 {
        e.int(2, step as i64);
    }
    e.bytes(field, body);
    e.into_bytes()
}

/// The first event of every events file: which format follows.
pub fn version_event(wall: f64) -> Vec<u8> {
    event(wall, 0, 3, FILE_VERSION.as_bytes())
}

/// SessionLog { status: START } at step 1: the run's steps start here.
pub fn start_event(wall: f64) -> Vec<u8> {
    let mut log = Message::new();
    log.int(1, 1);
    // Field 7: 6 is the deprecated LogMessage, which readers would take it for.
    event(wall, 1, 7, &log.into_bytes())
}

/// The event of one epoch: its scalars as `Summary.Value`s, f32 as
/// TensorBoard's `simple_value` is.
pub fn epoch_event(row: &EpochRow, wall: f64) -> Vec<u8> {
    let mut summary = Message::new();
    for (tag, v) in scalars(row) {
        let mut value = Message::new();
        value.string(1, tag).float(2, v as f32);
        summary.message(1, &value);
    }
    event(wall, row.epoch as u64, 5, &summary.into_bytes())
}

/// The wall times an events file already holds: of its first record and of
/// each epoch (indexed by epoch - 1; NaN for an epoch it lacks).
#[derive(Default)]
struct Walls {
    header: Option<f64>,
    epochs: Vec<f64>,
}

/// A whole events file: the header events, then one per row, each epoch at
/// its time in `walls`, else at `now`.
fn file_bytes(rows: &[EpochRow], walls: &Walls, now: f64) -> Vec<u8> {
    let header = walls.header.unwrap_or(now);
    let mut out = record(&version_event(header));
    out.extend(record(&start_event(header)));
    for row in rows {
        let wall = walls.epochs.get(row.epoch.wrapping_sub(1)).copied().filter(|w| !w.is_nan());
        out.extend(record(&epoch_event(row, wall.unwrap_or(now))));
    }
    out
}

/// The data of the whole, CRC-valid records at the start of `bytes`, up to
/// the first that is not (a torn end, or bytes that are no records at all).
fn valid_records(bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(head) = bytes.get(at..at + 12) {
        let (len, crc) = head.split_at(8);
        if u32::from_le_bytes(crc.try_into().unwrap()) != masked_crc(len) {
            break;
        }
        let n = u64::from_le_bytes(len.try_into().unwrap());
        let Some(end) = usize::try_from(n).ok().and_then(|n| (at + 12).checked_add(n)) else { break };
        let (Some(data), Some(crc)) = (bytes.get(at + 12..end), bytes.get(end..end + 4)) else { break };
        if u32::from_le_bytes(crc.try_into().unwrap()) != masked_crc(data) {
            break;
        }
        out.push(data);
        at = end + 4;
    }
    out
}

fn read_varint(data: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *data.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// An event's wall time, step, and whether it holds a summary; `None` for
/// data that is not an `Event` this reader can skip through.
fn event_fields(data: &[u8]) -> Option<(f64, u64, bool)> {
    let (mut at, mut wall, mut step, mut summary) = (0, None, 0, false);
    while at < data.len() {
        let k = read_varint(data, &mut at)?;
        let skip = match (k >> 3, k & 7) {
            (1, 1) => {
                wall = Some(f64::from_le_bytes(data.get(at..at + 8)?.try_into().ok()?));
                8
            }
            (2, 0) => {
                step = read_varint(data, &mut at)?;
                0
            }
            (field, 2) => {
                summary |= field == 5;
                usize::try_from(read_varint(data, &mut at)?).ok()?
            }
            (_, 0) => read_varint(data, &mut at).map(|_| 0)?,
            (_, 1) => 8,
            (_, 5) => 4,
            _ => return None,
        };
        at = at.checked_add(skip).filter(|&a| a <= data.len())?;
    }
    Some((wall?, step, summary))
}

/// The wall times in an events file's bytes (see [`Walls`]).
fn walls_of(bytes: &[u8]) -> Walls {
    let mut walls = Walls::default();
    for (i, fields) in valid_records(bytes).into_iter().map(event_fields).enumerate() {
        let Some((wall, step, summary)) = fields else { break };
        if i == 0 {
            walls.header = Some(wall);
        }
        // An epoch's number is bounded by the file's size: no huge resize.
        let Some(e) = usize::try_from(step).ok().filter(|&s| summary && s >= 1 && s <= bytes.len()) else {
            continue;
        };
        if walls.epochs.len() < e {
            walls.epochs.resize(e, f64::NAN);
        }
        if walls.epochs[e - 1].is_nan() {
            walls.epochs[e - 1] = wall;
        }
    }
    walls
}

/// Seconds since 1970, as TensorBoard's wall times are.
fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// This machine's name for a file name: TensorFlow's convention names the
/// writer's host.
fn host() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname(2) writes at most buf.len() bytes into buf.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name: String = String::from_utf8_lossy(&buf[..end])
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' })
        .collect();
    if ok && !name.is_empty() {
        name
    } else {
        "localhost".to_string()
    }
}

/// The seconds in an events file's name, 0 if it has none.
fn secs_of(path: &Path) -> u64 {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    name.strip_prefix(PREFIX).and_then(|r| r.split('.').next()?.parse().ok()).unwrap_or(0)
}

/// The files in `out` that TensorBoard reads as events files (regular files
/// only: it would take a folder for a run of its own), in name order.
fn existing(out: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(out).with_context(|| format!("{}: cannot list", out.display()))?;
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(MARK))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .collect();
    files.sort();
    Ok(files)
}

/// Write a whole events file (or empty one) atomically.
fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    fsops::write_atomic_as(path, TEMP_STEM, bytes)
        .with_context(|| format!("{}: cannot write", path.display()))
}

fn remove(path: &Path) -> Result<()> {
    fsops::remove_file(path).with_context(|| format!("{}: cannot remove", path.display()))
}

/// Remove the events files of `out` (a run with TensorBoard turned off,
/// whose files would no longer follow its metrics); returns their names.
pub fn remove_all(out: &Path) -> Result<Vec<String>> {
    let files = existing(out)?;
    for path in &files {
        remove(path)?;
    }
    Ok(files.iter().map(|p| p.file_name().unwrap_or_default().to_string_lossy().into_owned()).collect())
}

/// The events file of a run being trained, which every new epoch is
/// appended to.
pub struct Events {
    path: PathBuf,
    /// The epochs it holds.
    written: usize,
}

impl Events {
    /// Make `out` hold one events file with exactly `rows` (the committed
    /// epochs; none for a fresh run), as the module docs say. Returns it, and
    /// for a repair message why it was rebuilt (`None` when kept, or new in
    /// a folder that had none and no epochs to hold).
    pub fn open(out: &Path, rows: &[EpochRow]) -> Result<(Events, Option<String>)> {
        // Files emptied by an earlier rebuild hold nothing for any reader.
        let files: Vec<PathBuf> = existing(out)?
            .into_iter()
            .filter(|p| std::fs::metadata(p).map_or(true, |m| m.len() > 0))
            .collect();
        // The newest file, unless it is unreadable or too large: not one of ours to keep.
        let old =
            files.last().and_then(|p| Some((p, graph::bounded::read_capped(p, LIMIT, "events file").ok()?)));
        let now = now();
        let walls = old.as_ref().map(|(_, b)| walls_of(b)).unwrap_or_default();
        let want = file_bytes(rows, &walls, now);
        let keep = old.as_ref().filter(|(_, bytes)| *bytes == want).map(|(path, _)| path.to_path_buf());
        let path = match keep {
            Some(path) => path,
            None => {
                // Later than every file there, so that a watching TensorBoard moves on to it.
                let all = existing(out)?;
                let secs = (now as u64).max(all.iter().map(|p| secs_of(p) + 1).max().unwrap_or(0));
                let path = out.join(format!("{PREFIX}{secs}.{}", host()));
                write(&path, &want)?;
                path
            }
        };
        // Emptied, not removed: TensorBoard's Python loader stays on a file
        // that vanishes under it, and moves on from one that no longer grows.
        for stale in files.iter().filter(|f| **f != path) {
            write(stale, &[])?;
        }
        // Nothing to say of a file kept, or of the first one of a fresh run.
        let kept = files.len() == 1 && files[0] == path;
        let note = if kept || (files.is_empty() && rows.is_empty()) {
            None
        } else {
            let why = if files.is_empty() { "missing" } else { "stale: not the checkpoint's" };
            Some(format!("{PREFIX}* ({why})"))
        };
        Ok((Events { path, written: rows.len() }, note))
    }

    /// Append the epochs of `rows` not yet written (each row once, as
    /// `metrics.csv` gains it). A file removed meanwhile is written anew,
    /// whole.
    pub fn append(&mut self, rows: &[EpochRow]) -> Result<()> {
        let new = rows.get(self.written..).unwrap_or_default();
        if new.is_empty() {
            return Ok(());
        }
        let now = now();
        let bytes: Vec<u8> = new.iter().flat_map(|r| record(&epoch_event(r, now))).collect();
        let cannot = || format!("{}: cannot write", self.path.display());
        match fsops::append(&self.path, &bytes) {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                write(&self.path, &file_bytes(rows, &Walls::default(), now))?
            }
            other => other.with_context(cannot)?,
        }
        self.written = rows.len();
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(epoch: usize) -> EpochRow {
        EpochRow {
            epoch,
            lr: 0.05,
            train_ce: 0.6 / epoch as f64,
            train_seed_error: 0.4,
            train_acc: 0.7,
            test_ce: f64::INFINITY,
            test_acc: 0.75,
            seconds: 1.5,
            images_per_s: 1e4,
            sample_seed_error: f64::NAN,
        }
    }

    /// CRC-32C bit by bit from its definition (reflected polynomial
    /// 0x82F63B78, initial and final XOR 0xFFFFFFFF), independent of the crate.
    fn crc32c_bitwise(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
            }
        }
        !crc
    }

    /// TFRecord's mask, written as its definition writes it (not as the code under test does).
    #[allow(clippy::manual_rotate)]
    fn mask(c: u32) -> u32 {
        ((c >> 15) | (c << 17)).wrapping_add(0xa282_ead8)
    }

    #[test]
    fn the_crc_is_crc32c_and_masked_as_tfrecord_defines() {
        // The catalogue's check value of CRC-32C.
        assert_eq!(crc32c_bitwise(b"123456789"), 0xE306_9283);
        assert_eq!(CASTAGNOLI.checksum(b"123456789"), 0xE306_9283);
        for bytes in [&b""[..], b"a", b"brain.Event:2", &[0xff; 300]] {
            assert_eq!(masked_crc(bytes), mask(crc32c_bitwise(bytes)));
        }
    }

    #[test]
    fn the_version_record_is_byte_for_byte_the_format_s() {
        // Event { wall_time: 1.5, file_version: "brain.Event:2" }, assembled by hand.
        let mut data = vec![0x09];
        data.extend(1.5f64.to_le_bytes());
        data.extend([0x1a, 13]);
        data.extend(b"brain.Event:2");
        assert_eq!(version_event(1.5), data);
        let rec = record(&data);
        assert_eq!(rec.len(), 8 + 4 + data.len() + 4);
        assert_eq!(rec[..8], (data.len() as u64).to_le_bytes());
        assert_eq!(rec[8..12], mask(crc32c_bitwise(&rec[..8])).to_le_bytes());
        assert_eq!(rec[rec.len() - 4..], mask(crc32c_bitwise(&data)).to_le_bytes());
        // SessionLog { status: START } at step 1.
        let mut start = vec![0x09];
        start.extend(2.0f64.to_le_bytes());
        start.extend([0x10, 0x01, 0x3a, 0x02, 0x08, 0x01]);
        assert_eq!(start_event(2.0), start);
    }

    #[test]
    fn an_epoch_event_holds_every_column_as_a_simple_value() {
        let r = row(300);
        let data = epoch_event(&r, 7.0);
        // wall_time, then step 300 as a two-byte varint.
        assert_eq!(data[..12], [&[0x09][..], &7.0f64.to_le_bytes(), &[0x10, 0xac, 0x02]].concat()[..]);
        let summary_at = 12;
        assert_eq!(data[summary_at], 0x2a);
        let mut value = vec![0x0a, 8];
        value.extend(b"train_ce");
        value.push(0x15);
        value.extend((r.train_ce as f32).to_le_bytes());
        let needle = [&[0x0a, value.len() as u8][..], &value].concat();
        assert!(data.windows(needle.len()).any(|w| w == needle), "no train_ce value in {data:?}");
        assert_eq!(event_fields(&data), Some((7.0, 300, true)));
    }

    #[test]
    fn the_tags_are_the_csv_columns_after_epoch() {
        let header: Vec<&str> = super::super::metrics::CSV_HEADER.split(',').skip(1).collect();
        let tags: Vec<&str> = scalars(&row(1)).iter().map(|(t, _)| *t).collect();
        assert_eq!(tags, header);
    }

    #[test]
    fn reading_back_stops_at_a_torn_or_corrupt_record_and_keeps_the_wall_times() {
        let rows: Vec<EpochRow> = (1..=3).collect::<Vec<_>>().into_iter().map(row).collect();
        let walls = Walls { header: Some(10.0), epochs: vec![11.0, 12.0] };
        let bytes = file_bytes(&rows, &walls, 99.0);
        assert_eq!(valid_records(&bytes).len(), 5);
        let back = walls_of(&bytes);
        assert_eq!((back.header, back.epochs), (Some(10.0), vec![11.0, 12.0, 99.0]));
        // Any cut inside the last record leaves the four before it.
        let last = record(&epoch_event(&rows[2], 99.0)).len();
        for cut in 1..last {
            assert_eq!(valid_records(&bytes[..bytes.len() - cut]).len(), 4, "cut {cut}");
        }
        let mut flipped = bytes.clone();
        let n = flipped.len();
        flipped[n - 10] ^= 1;
        assert_eq!(valid_records(&flipped).len(), 4);
        assert!(valid_records(b"not an events file at all").is_empty());
    }

    #[test]
    fn open_keeps_a_file_that_matches_and_rebuilds_one_that_runs_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let rows: Vec<EpochRow> = (1..=3).map(row).collect();
        let (mut ev, note) = Events::open(dir.path(), &[]).unwrap();
        assert_eq!(note, None);
        ev.append(&rows[..1]).unwrap();
        ev.append(&rows[..3]).unwrap();
        let first = ev.path().to_path_buf();
        let bytes = std::fs::read(&first).unwrap();
        assert_eq!(valid_records(&bytes).len(), 5);
        // The checkpoint holds all three: kept as it is.
        let (ev, note) = Events::open(dir.path(), &rows).unwrap();
        assert_eq!((ev.path(), note), (first.as_path(), None));
        assert!(std::fs::read(&first).unwrap() == bytes);
        // It holds two: rebuilt under a later name, the old one removed, the wall times kept.
        let (ev, note) = Events::open(dir.path(), &rows[..2]).unwrap();
        assert_eq!(note.as_deref(), Some("events.out.tfevents.* (stale: not the checkpoint's)"));
        assert!(ev.path() > first.as_path());
        assert_eq!(std::fs::metadata(&first).unwrap().len(), 0, "the old file is emptied");
        let again = std::fs::read(ev.path()).unwrap();
        assert!(again[..] == bytes[..again.len()]);
        assert_eq!(existing(dir.path()).unwrap(), vec![first, ev.path().to_path_buf()]);
        // The emptied file is no reason to rebuild again.
        let (_, note) = Events::open(dir.path(), &rows[..2]).unwrap();
        assert_eq!(note, None);
        assert_eq!(remove_all(dir.path()).unwrap().len(), 2);
        assert!(existing(dir.path()).unwrap().is_empty());
    }
}
