//! Files from outside, read without trusting them: only regular files
//! (after following symlinks), never more bytes than their format allows,
//! and outputs written only over regular files.
//!
//! A directory, FIFO, device or socket named where a file belongs is
//! refused by its type before it is opened (opening a FIFO for reading waits
//! for a writer forever; `/dev/zero` never ends), and a file's size is
//! checked against the limit before a byte is allocated for it. Errors are
//! `io::Error`s whose text says what is wrong with the file; callers put the
//! path in front, as every message of the program names its file.

use std::fmt::Write as _;
use std::fs::{self, File, FileType, OpenOptions};
use std::io::{self, ErrorKind, Read};
use std::path::Path;

use crate::brief;
use crate::checkpoint::CheckpointError;

/// What a file type is, for messages: `a directory`, `a FIFO`, ...
pub fn describe(t: FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

fn not_regular(t: FileType) -> io::Error {
    io::Error::new(ErrorKind::InvalidInput, format!("{}, not a regular file", describe(t)))
}

/// The error of `metadata` or `open`, with a symlink loop said in words
/// (the OS text, "too many levels of symbolic links", reads like a limit).
fn explain(e: io::Error) -> io::Error {
    #[cfg(unix)]
    if e.raw_os_error() == Some(libc::ELOOP) {
        return io::Error::new(e.kind(), "a symlink loop (too many levels of symbolic links)");
    }
    e
}

/// A missing file that is a symlink's target says so: the link itself is there.
fn dangling(path: &Path, e: io::Error) -> io::Error {
    match fs::read_link(path) {
        Ok(target) if e.kind() == ErrorKind::NotFound => io::Error::new(
            ErrorKind::NotFound,
            format!("a symlink to {}, which does not exist", brief::text(&target.to_string_lossy(), 200)),
        ),
        _ => e,
    }
}

/// Whether something (a file, directory, device, dangling or looping
/// symlink, ...) sits at `path`: a layout's file that is there but wrong is
/// reported as wrong, not as missing.
pub fn present(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// Open `path` for reading if it is a regular file; returns it with its
/// length. Missing files keep `ErrorKind::NotFound`.
pub fn open_regular(path: &Path) -> io::Result<(File, u64)> {
    let meta = fs::metadata(path).map_err(|e| dangling(path, explain(e)))?;
    if !meta.is_file() {
        return Err(not_regular(meta.file_type()));
    }
    let mut options = OpenOptions::new();
    options.read(true);
    // The path may become a FIFO between the check and the open; without
    // O_NONBLOCK the open would then wait for a writer. Reads of a regular
    // file are not affected by it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(explain)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(not_regular(meta.file_type()));
    }
    Ok((file, meta.len()))
}

/// `5 bytes`, `1 MiB`, `4.7 GiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let (mut value, mut unit) = (bytes as f64 / 1024.0, 0);
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let mut out = String::new();
    if value.fract() == 0.0 {
        let _ = write!(out, "{value} {}", UNITS[unit]);
    } else {
        let _ = write!(out, "{value:.1} {} ({} bytes)", UNITS[unit], brief::count(bytes));
    }
    out
}

/// The error for a file of `len` bytes where a `what` may hold `limit`.
pub fn too_large(len: u64, limit: u64, what: &str) -> io::Error {
    io::Error::new(
        ErrorKind::InvalidData,
        format!("{} is more than the {} a {what} may hold", size(len), size(limit)),
    )
}

/// Read what remains of `reader`, which should be `len` bytes, refusing
/// more than `limit` (the file may have grown since it was measured).
pub fn read_len(reader: impl Read, len: u64, limit: u64, what: &str) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(len.min(limit) as usize);
    reader.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64, limit, what));
    }
    Ok(bytes)
}

/// The bytes of the regular file `path`, refused if it holds more than
/// `limit` bytes (`what` names the format in that message).
pub fn read_capped(path: &Path, limit: u64, what: &str) -> io::Result<Vec<u8>> {
    let (file, len) = open_regular(path)?;
    if len > limit {
        return Err(too_large(len, limit, what));
    }
    read_len(file, len, limit, what)
}

/// [`read_capped`] as UTF-8 text.
pub fn read_text(path: &Path, limit: u64, what: &str) -> io::Result<String> {
    String::from_utf8(read_capped(path, limit, what)?).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        io::Error::new(ErrorKind::InvalidData, format!("not UTF-8 text (byte offset {at})"))
    })
}

/// Refuse to write over `path` unless it is a regular file or absent: a
/// rename over a device, FIFO or socket would replace it with a regular
/// file (and a directory cannot be replaced at all).
pub fn check_output(path: &Path) -> io::Result<()> {
    match fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(meta) => Err(io::Error::new(
            ErrorKind::InvalidInput,
            format!("{}, not a regular file; refusing to replace it", describe(meta.file_type())),
        )),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(explain(e)),
    }
}

/// Safetensors header limit: the format allows 100 MB, but a gapnet
/// header (tensor table and model spec) is a few kilobytes.
pub const SAFETENSORS_HEADER_LIMIT: u64 = 16 << 20;
/// Checkpoint size limit: 4 GiB is a billion parameters, far beyond any
/// model this engine trains on a CPU.
pub const SAFETENSORS_LIMIT: u64 = 4 << 30;

/// The bytes of a safetensors file, read by its framing: the 8-byte header
/// length, the header (at most [`SAFETENSORS_HEADER_LIMIT`]), then exactly
/// the tensor data the header declares, which must end the file. A
/// device, a FIFO or a file of the wrong size is refused before its data
/// is read. `source` names the file in messages; a missing file is
/// `cannot read the checkpoint`, as for any read error.
pub fn read_safetensors(path: &Path, source: &str) -> Result<Vec<u8>, CheckpointError> {
    let unreadable = |e: io::Error| CheckpointError(format!("{source}: cannot read the checkpoint: {e}"));
    let bad = |why: String| CheckpointError(format!("{source}: not a readable safetensors file ({why})"));
    let (mut file, len) = open_regular(path).map_err(unreadable)?;
    if len > SAFETENSORS_LIMIT {
        return Err(bad(too_large(len, SAFETENSORS_LIMIT, "checkpoint").to_string()));
    }
    if len < 8 {
        return Err(bad(format!("{len} bytes is too short for the 8-byte header length")));
    }
    let mut prefix = [0u8; 8];
    file.read_exact(&mut prefix).map_err(unreadable)?;
    let n = u64::from_le_bytes(prefix);
    if n > SAFETENSORS_HEADER_LIMIT {
        return Err(bad(format!(
            "its header length {} is more than the {} limit",
            brief::count(n),
            size(SAFETENSORS_HEADER_LIMIT)
        )));
    }
    if 8 + n > len {
        return Err(bad(format!("its header length is {n} bytes but only {} follow it", len - 8)));
    }
    let mut bytes = Vec::with_capacity(8 + n as usize);
    bytes.extend_from_slice(&prefix);
    (&mut file).take(n).read_to_end(&mut bytes).map_err(unreadable)?;
    if bytes.len() as u64 != 8 + n {
        return Err(bad("the file shrank while it was read".into()));
    }
    let declared = declared_data(&bytes[8..]).map_err(bad)?;
    let follows = len - 8 - n;
    if declared != follows {
        let hint = if declared > follows { "; truncated?" } else { "" };
        return Err(bad(format!(
            "its header declares {declared} bytes of tensor data but {follows} follow it{hint}"
        )));
    }
    bytes.reserve_exact(declared as usize);
    file.take(declared + 1).read_to_end(&mut bytes).map_err(unreadable)?;
    if bytes.len() as u64 != len {
        return Err(bad("the file changed size while it was read".into()));
    }
    Ok(bytes)
}

/// The tensor data a safetensors header declares: the largest end offset.
fn declared_data(header: &[u8]) -> Result<u64, String> {
    let table: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(header)
        .map_err(|e| format!("its header is not a JSON object: {}", brief::text(&e.to_string(), 120)))?;
    let mut end = 0u64;
    for (name, info) in table.iter().filter(|(name, _)| *name != "__metadata__") {
        let offsets = info.get("data_offsets").and_then(|o| o.as_array());
        let Some([_, stop]) = offsets.map(Vec::as_slice) else {
            return Err(format!("tensor {} has no data_offsets pair", brief::text(name, 80)));
        };
        let Some(stop) = stop.as_u64() else {
            return Err(format!("tensor {} has an unreadable end offset", brief::text(name, 80)));
        };
        end = end.max(stop);
    }
    Ok(end)
}
