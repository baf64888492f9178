//! A reader between the gzip decoder and the tar reader. The tar reader
//! reads some header records whole into memory before it yields the member
//! they describe: GNU long names and long link names, and pax extended
//! headers. An archive can declare such a record of any size (a 1 MB
//! archive can declare 1 GiB of name), so this reader follows the tar
//! blocks itself and refuses, before the tar reader asks for its data, any
//! such record longer than [`MAX_RECORD`]: memory stays bounded whatever
//! the archive declares.

use std::io::{self, Read};

/// The longest GNU long-name, long-link or pax record accepted. The
/// official archive has none; a real name is far shorter.
pub const MAX_RECORD: u64 = 4096;

const BLOCK: usize = 512;

pub struct HeaderGuard<R> {
    inner: R,
    /// Bytes of the current member's data, with its padding, still to pass.
    data_left: u64,
    /// The current header block, read whole before any of it is passed on.
    block: [u8; BLOCK],
    /// Bytes of `block` to pass on: `served..held`.
    served: usize,
    held: usize,
    /// The contents of a pax record being passed (read for its `size`),
    /// with the record's own length.
    pax: Option<(Vec<u8>, usize)>,
    /// The size a pax record set for the member after it.
    next_size: Option<u64>,
}

impl<R: Read> HeaderGuard<R> {
    pub fn new(inner: R) -> Self {
        HeaderGuard { inner, data_left: 0, block: [0; BLOCK], served: 0, held: 0, pax: None, next_size: None }
    }

    /// Read the next header block whole and check it; sets where its data ends.
    fn next_header(&mut self) -> io::Result<()> {
        let mut got = 0;
        while got < BLOCK {
            match self.inner.read(&mut self.block[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        (self.served, self.held) = (0, got);
        if got < BLOCK || self.block.iter().all(|&b| b == 0) {
            // The end, or a cut-short header: the tar reader says which.
            return Ok(());
        }
        let kind = self.block[156];
        let mut size =
            header_size(&self.block[124..136]).ok_or_else(|| invalid("a header with an unreadable size"))?;
        let record = match kind {
            b'L' => Some("GNU long name"),
            b'K' => Some("GNU long link name"),
            b'x' => Some("pax extended header"),
            b'g' => Some("pax global header"),
            _ => None,
        };
        match record {
            Some(what) if size > MAX_RECORD => {
                return Err(invalid(&format!(
                    "a {what} record of {size} bytes, more than the {MAX_RECORD} accepted (refused before reading it)"
                )))
            }
            Some(_) if kind == b'x' => self.pax = Some((Vec::with_capacity(size as usize), size as usize)),
            Some(_) => {}
            None if kind == b'S' => return Err(invalid("a GNU sparse member (refused)")),
            None => size = self.next_size.take().unwrap_or(size),
        }
        self.data_left = size.div_ceil(BLOCK as u64) * BLOCK as u64;
        Ok(())
    }

    /// A pax record passed whole: the `size` it sets applies to the next member.
    fn end_of_pax(&mut self) -> io::Result<()> {
        let Some((bytes, len)) = self.pax.take() else { return Ok(()) };
        let text = String::from_utf8_lossy(&bytes[..len.min(bytes.len())]);
        for record in text.split_terminator('\n') {
            if let Some(value) = record.split_once(' ').and_then(|(_, kv)| kv.strip_prefix("size=")) {
                let size =
                    value.trim().parse().map_err(|_| invalid("a pax record with an unreadable size"))?;
                self.next_size = Some(size);
            }
        }
        Ok(())
    }
}

impl<R: Read> Read for HeaderGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.served == self.held && self.data_left == 0 {
            if self.held == BLOCK || self.held == 0 {
                self.next_header()?;
            } else {
                return Ok(0); // after a cut-short header: the end
            }
        }
        if self.served < self.held {
            let n = (self.held - self.served).min(buf.len());
            buf[..n].copy_from_slice(&self.block[self.served..self.served + n]);
            self.served += n;
            return Ok(n);
        }
        let want = (buf.len() as u64).min(self.data_left) as usize;
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Ok(0); // cut short: the tar reader reports it
        }
        self.data_left -= n as u64;
        if let Some((bytes, len)) = &mut self.pax {
            let room = len.saturating_sub(bytes.len()).min(n);
            bytes.extend_from_slice(&buf[..room]);
        }
        if self.data_left == 0 {
            self.end_of_pax()?;
        }
        Ok(n)
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// A header's size field: octal digits (NUL- or space-terminated), or
/// base-256 (first byte's top bit set) for sizes that do not fit.
fn header_size(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    let digits = std::str::from_utf8(field).ok()?.trim_matches(|c: char| c == '\0' || c == ' ');
    if digits.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(digits, 8).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_octal_and_base_256() {
        assert_eq!(header_size(b"00000001750\0"), Some(1000));
        assert_eq!(header_size(b"        \0\0\0\0"), Some(0));
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[7] = 1; // 2^32
        assert_eq!(header_size(&big), Some(1 << 32));
        assert_eq!(header_size(b"0000000175x\0"), None);
    }
}
