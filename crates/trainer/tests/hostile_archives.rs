//! Hostile archives, measured: header records that declare huge sizes (GNU
//! long names and links, pax headers) are refused before anything the size
//! says is read, and the unpacker's peak memory, counted by this binary's
//! allocator, does not grow with what an archive declares. One test, so
//! that no other test allocates while it measures.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::archive;
use proptest::prelude::*;
use tempfile::TempDir;
use trainer::data::unpack::{unpack_into, Failure};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed to the system allocator unchanged; only the
// counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
            PEAK.fetch_max(now, Ordering::SeqCst);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
    }
    unsafe fn realloc(&self, p: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, layout, size) };
        if !q.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
            let now = LIVE.fetch_add(size, Ordering::SeqCst) + size;
            PEAK.fetch_max(now, Ordering::SeqCst);
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The unpack of `gz` into a fresh folder, and the most memory it held at once.
fn unpack_measured(gz: &[u8]) -> (Result<(), Failure>, usize) {
    let dir = TempDir::new().unwrap();
    let base = LIVE.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let result = unpack_into(gz, Path::new("mirror.tar.gz"), dir.path());
    (result, PEAK.load(Ordering::SeqCst) - base)
}

/// Far above what the decoder and a 64 KiB copy buffer need, far below
/// any of the declared sizes.
const PEAK_BOUND: usize = 2 << 20;

#[test]
fn declared_record_sizes_are_refused_unread_and_memory_stays_flat() {
    // With the data there (a reader that took the size at its word would
    // hold it all), and declared far past the end.
    let cases =
        [(4097u64, true), (64 << 20, true), (1100 << 20, false), (2200 << 20, false), (1 << 40, false)];
    for kind in [b'L', b'K', b'x', b'g'] {
        for (size, data) in cases {
            let (result, peak) = unpack_measured(&archive::declaring(kind, size, data));
            let what = format!("type {:?}, {size} bytes declared (data: {data})", kind as char);
            let Err(Failure::Archive(e)) = result else { panic!("{what}: not refused: {result:?}") };
            let m = e.to_string();
            assert!(
                m.contains(&format!("record of {size} bytes, more than the 4096 accepted")),
                "{what}: {m}"
            );
            assert!(m.starts_with("mirror.tar.gz: ") && m.len() < 300, "{what}: {m}");
            assert!(peak < PEAK_BOUND, "{what}: {peak} bytes at once");
        }
    }
    // Any length up to the bound is read (and the archive judged on its
    // members); past it, refused: memory the same either way.
    let cases = proptest::test_runner::Config { cases: 64, failure_persistence: None, ..Default::default() };
    proptest!(cases, |(len in 0usize..=6000, kind in prop::sample::select(vec![b'L', b'K', b'x']))| {
        // The contents do not matter here (a pax header of a's is malformed
        // and refused for that): only whether the length is.
        let (result, peak) = unpack_measured(&archive::leading_record(kind, &vec![b'a'; len]));
        prop_assert!(peak < PEAK_BOUND, "{len} bytes: {peak} at once");
        let refused = matches!(&result, Err(Failure::Archive(e)) if e.to_string().contains("more than the 4096"));
        prop_assert_eq!(refused, len > 4096, "{} bytes: {:?}", len, result.err());
    });
}
