//! A test-only reader of TensorBoard events files, written from the format's
//! definition and independent of the trainer's writer (its own bitwise
//! CRC-32C, its own protobuf parse), and the checks of a run folder's
//! events against its `metrics.csv`.

use std::path::{Path, PathBuf};

/// CRC-32C bit by bit: reflected polynomial 0x82F63B78, initial value and
/// final XOR 0xFFFFFFFF.
pub fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let low = crc & 1;
            crc >>= 1;
            if low == 1 {
                crc ^= 0x82F6_3B78;
            }
        }
    }
    crc ^ 0xFFFF_FFFF
}

/// TFRecord's masked CRC, as its definition writes it.
#[allow(clippy::manual_rotate)]
pub fn masked(bytes: &[u8]) -> u32 {
    let c = crc32c(bytes);
    ((c >> 15) | (c << 17)).wrapping_add(0xa282_ead8)
}

/// The records of a file: each record's data, or an error saying where the
/// framing breaks (a torn or corrupt record, trailing bytes).
pub fn records(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let at = bytes.len() - rest.len();
        if rest.len() < 12 {
            return Err(format!("{} trailing bytes at offset {at}", rest.len()));
        }
        let len_bytes = &rest[..8];
        let len_crc = u32::from_le_bytes([rest[8], rest[9], rest[10], rest[11]]);
        if len_crc != masked(len_bytes) {
            return Err(format!("bad length CRC at offset {at}"));
        }
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
        if rest.len() < 12 + len + 4 {
            return Err(format!("a record of {len} bytes at offset {at} is cut short"));
        }
        let data = &rest[12..12 + len];
        let crc = u32::from_le_bytes(rest[12 + len..16 + len].try_into().unwrap());
        if crc != masked(data) {
            return Err(format!("bad data CRC at offset {at}"));
        }
        out.push(data.to_vec());
        rest = &rest[16 + len..];
    }
    Ok(out)
}

/// One protobuf field's value.
#[derive(Debug)]
enum Wire {
    Varint(u64),
    Fixed64([u8; 8]),
    Bytes(Vec<u8>),
    Fixed32([u8; 4]),
}

/// A protobuf message as its (field number, value) pairs, strictly.
fn fields(mut msg: &[u8]) -> Vec<(u64, Wire)> {
    fn varint(msg: &mut &[u8]) -> u64 {
        let mut value = 0u64;
        let mut shift = 0;
        loop {
            let (&b, rest) = msg.split_first().expect("a varint runs past the message");
            *msg = rest;
            value += u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return value;
            }
            shift += 7;
            assert!(shift < 64, "a varint of more than 10 bytes");
        }
    }
    let mut out = Vec::new();
    while !msg.is_empty() {
        let key = varint(&mut msg);
        let take = |msg: &mut &[u8], n: usize| {
            assert!(msg.len() >= n, "field {} runs past the message", key >> 3);
            let (v, rest) = msg.split_at(n);
            *msg = rest;
            v.to_vec()
        };
        let value = match key & 7 {
            0 => Wire::Varint(varint(&mut msg)),
            1 => Wire::Fixed64(take(&mut msg, 8).try_into().unwrap()),
            2 => {
                let n = varint(&mut msg) as usize;
                Wire::Bytes(take(&mut msg, n))
            }
            5 => Wire::Fixed32(take(&mut msg, 4).try_into().unwrap()),
            t => panic!("wire type {t} in field {}", key >> 3),
        };
        out.push((key >> 3, value));
    }
    out
}

/// The fields of an `Event` that the trainer writes.
#[derive(Debug, Default)]
pub struct Event {
    pub wall_time: f64,
    pub step: i64,
    pub file_version: Option<String>,
    /// Summary.value: (tag, simple_value).
    pub values: Vec<(String, f32)>,
    /// SessionLog.status (START = 1).
    pub session_status: Option<u64>,
}

/// An `Event` parsed by the field numbers of TensorBoard's `event.proto`
/// (wall_time 1, step 2, file_version 3, summary 5, session_log 7) and
/// `summary.proto` (Summary.value 1; Value.tag 1, simple_value 2); any other
/// field is an error.
pub fn event(data: &[u8]) -> Event {
    let mut e = Event::default();
    for (field, value) in fields(data) {
        match (field, value) {
            (1, Wire::Fixed64(b)) => e.wall_time = f64::from_le_bytes(b),
            (2, Wire::Varint(v)) => e.step = v as i64,
            (3, Wire::Bytes(b)) => e.file_version = Some(String::from_utf8(b).unwrap()),
            (5, Wire::Bytes(summary)) => {
                for (f, v) in fields(&summary) {
                    let Wire::Bytes(value) = v else { panic!("Summary field {f} is not a message") };
                    assert_eq!(f, 1, "Summary holds field {f}");
                    let (mut tag, mut simple) = (None, None);
                    for (f, v) in fields(&value) {
                        match (f, v) {
                            (1, Wire::Bytes(t)) => tag = Some(String::from_utf8(t).unwrap()),
                            (2, Wire::Fixed32(b)) => simple = Some(f32::from_le_bytes(b)),
                            other => panic!("unexpected Summary.Value field {other:?}"),
                        }
                    }
                    e.values.push((tag.expect("a value without a tag"), simple.expect("no simple_value")));
                }
            }
            (7, Wire::Bytes(log)) => {
                for (f, v) in fields(&log) {
                    match (f, v) {
                        (1, Wire::Varint(s)) => e.session_status = Some(s),
                        other => panic!("unexpected SessionLog field {other:?}"),
                    }
                }
            }
            other => panic!("unexpected Event field {other:?}"),
        }
    }
    e
}

/// The events files in `dir`, in name order.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains("tfevents"))
        .collect();
    found.sort();
    found
}

/// The one events file of a run folder that holds anything (a rebuild
/// empties the files it replaces).
pub fn the_file(dir: &Path, context: &str) -> PathBuf {
    let found: Vec<PathBuf> =
        files(dir).into_iter().filter(|p| std::fs::metadata(p).unwrap().len() > 0).collect();
    assert_eq!(found.len(), 1, "{context}: expected one events file in {}: {found:?}", dir.display());
    let name = found[0].file_name().unwrap().to_string_lossy().into_owned();
    let rest = name.strip_prefix("events.out.tfevents.").unwrap_or_else(|| panic!("{context}: {name}"));
    let (secs, host) = rest.split_once('.').unwrap_or_else(|| panic!("{context}: {name}"));
    assert!(secs.len() >= 10 && secs.parse::<u64>().is_ok() && !host.is_empty(), "{context}: {name}");
    found[0].clone()
}

/// Every event of a file, which must be whole records.
pub fn read(path: &Path) -> Vec<Event> {
    let bytes = std::fs::read(path).unwrap();
    records(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display())).iter().map(|d| event(d)).collect()
}

/// `metrics.csv`: its header and its rows as numbers.
pub fn csv(dir: &Path) -> (Vec<String>, Vec<Vec<f64>>) {
    let text = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap().split(',').map(str::to_string).collect();
    let rows = lines.map(|l| l.split(',').map(|v| v.parse::<f64>().unwrap()).collect()).collect();
    (header, rows)
}

/// The events of `events` after the two header events: the version, then a
/// SessionLog START at step 1.
pub fn epochs<'a>(events: &'a [Event], context: &str) -> &'a [Event] {
    assert!(events.len() >= 2, "{context}: {} events", events.len());
    assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"), "{context}: first event");
    assert!(events[0].values.is_empty() && events[0].session_status.is_none(), "{context}");
    assert_eq!((events[1].session_status, events[1].step), (Some(1), 1), "{context}: second event");
    for e in &events[2..] {
        assert!(e.file_version.is_none() && e.session_status.is_none(), "{context}: {e:?}");
    }
    &events[2..]
}

/// The same number, as TensorBoard's f32 holds it (NaN equal to NaN).
fn same(event: f32, csv: f64) -> bool {
    (event.is_nan() && csv.is_nan()) || event.to_bits() == (csv as f32).to_bits()
}

/// The events of `dir`'s epochs agree with the first of its `metrics.csv`
/// rows, one event per epoch in order, each column a scalar named as in the
/// header; `whole` asks for every row. Returns the epochs' events' wall times.
pub fn assert_match_csv(dir: &Path, whole: bool, context: &str) -> Vec<f64> {
    let events = read(&the_file(dir, context));
    let epochs = epochs(&events, context);
    let (header, rows) = csv(dir);
    if whole {
        assert_eq!(epochs.len(), rows.len(), "{context}: {} epoch events, {} rows", epochs.len(), rows.len());
    }
    assert!(epochs.len() <= rows.len(), "{context}: events ahead of metrics.csv");
    let mut last = events[0].wall_time;
    for (i, (e, row)) in epochs.iter().zip(&rows).enumerate() {
        assert_eq!(e.step, (i + 1) as i64, "{context}: event {i} is for step {}", e.step);
        assert_eq!(row[0], (i + 1) as f64);
        let tags: Vec<&str> = e.values.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(tags, header[1..], "{context}: epoch {}", i + 1);
        for ((tag, v), want) in e.values.iter().zip(&row[1..]) {
            assert!(same(*v, *want), "{context}: epoch {} {tag}: event {v}, metrics.csv {want}", i + 1);
        }
        assert!(e.wall_time >= last && e.wall_time > 1e9, "{context}: epoch {} wall time", i + 1);
        last = e.wall_time;
    }
    epochs.iter().map(|e| e.wall_time).collect()
}
