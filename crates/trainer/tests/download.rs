//! The first-use download end to end: the real `trainer` binary fetching a
//! small archive in the official layout from a loopback HTTP server inside
//! the test (never an outside address), each test with a cache folder of its
//! own and a 1-second network timeout.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{archive, s, text};

/// How the loopback server answers every request.
#[derive(Clone)]
enum Reply {
    /// 200 with the bytes, after a pause before the body.
    Ok(Arc<Vec<u8>>, Duration),
    /// 200 announcing every byte, then the first `n` and a closed connection.
    Truncated(Arc<Vec<u8>>, usize),
    Status(u16, &'static str),
    /// 200 announcing the bytes, a few of them, then silence.
    Stall(Arc<Vec<u8>>),
}

/// A loopback HTTP/1.1 server on a free port, counting the requests it gets.
struct Server {
    url: String,
    requests: Arc<AtomicUsize>,
}

impl Server {
    fn start(reply: Reply) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/cifar-10-binary.tar.gz", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let count = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let reply = reply.clone();
                let count = count.clone();
                std::thread::spawn(move || answer(stream, &reply, &count));
            }
        });
        Server { url, requests }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn answer(mut stream: TcpStream, reply: &Reply, count: &AtomicUsize) {
    // The request's head, up to the blank line.
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    assert!(
        head.starts_with(b"GET /cifar-10-binary.tar.gz HTTP/1.1\r\n"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    count.fetch_add(1, Ordering::SeqCst);
    let ok = |len: usize| format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n");
    let _ = match reply {
        Reply::Ok(bytes, pause) => {
            std::thread::sleep(*pause);
            stream.write_all(ok(bytes.len()).as_bytes()).and_then(|_| stream.write_all(bytes))
        }
        Reply::Truncated(bytes, n) => {
            stream.write_all(ok(bytes.len()).as_bytes()).and_then(|_| stream.write_all(&bytes[..*n]))
        }
        Reply::Status(code, reason) => stream.write_all(
            format!("HTTP/1.1 {code} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
        ),
        Reply::Stall(bytes) => {
            let sent =
                stream.write_all(ok(bytes.len()).as_bytes()).and_then(|_| stream.write_all(&bytes[..100]));
            // Longer than the client waits; the test process ends this thread.
            std::thread::sleep(Duration::from_secs(60));
            sent
        }
    };
}

/// `trainer fetch` downloading from `url` (checksum `md5`) into `cache`.
fn fetch(cache: &Path, url: &str, md5: &str) -> Command {
    let mut cmd = common::command(&["fetch"]);
    cmd.env_remove("GAPNET_NO_DOWNLOAD")
        .env("GAPNET_CACHE", cache)
        .env("GAPNET_CIFAR10_URL", url)
        .env("GAPNET_CIFAR10_MD5", md5)
        .env("GAPNET_DOWNLOAD_TIMEOUT", "1");
    cmd
}

/// The single `error:` line of a failed run (notes before it are allowed).
fn error_line(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "expected exit 1\n{}", text(out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "expected one error line\n{stderr}");
    errors[0].to_string()
}

/// Asserts that `cache` holds no archive, no partial file and no dataset.
fn nothing_left(cache: &Path) {
    for name in ["cifar-10-binary.tar.gz", "cifar-10-binary.tar.gz.part", "cifar-10-batches-bin"] {
        assert!(!cache.join(name).exists(), "{name} was left in {}", cache.display());
    }
}

fn folder(cache: &Path) -> PathBuf {
    cache.join("cifar-10-batches-bin")
}

/// A byte count as the progress line gives it.
fn size_said(bytes: usize) -> String {
    if bytes < 1_000_000 {
        format!("{bytes} bytes")
    } else {
        format!("{:.1} MB", bytes as f64 / 1e6)
    }
}

#[test]
fn fetch_downloads_checks_and_unpacks_then_reuses_the_cache() {
    let cache = common::tmp("dl-fetch").join("cache");
    let bytes = archive::official(2);
    let server = Server::start(Reply::Ok(Arc::new(bytes.clone()), Duration::ZERO));
    let out = fetch(&cache, &server.url, &archive::md5_hex(&bytes)).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with(&format!("CIFAR-10 is in {}\n", folder(&cache).display())), "{stdout}");
    assert_eq!(server.requests(), 1);
    // The size said is the server's, not the official archive's.
    let said = format!("downloading {} ({}) into", server.url, size_said(bytes.len()));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&said), "{said:?} not in {}", text(&out));
    let files = ["data_batch_1.bin", "data_batch_5.bin", "test_batch.bin", "batches.meta.txt", "readme.html"];
    for f in files {
        assert!(folder(&cache).join(f).is_file(), "{f} missing");
    }
    // The archive and the partial files are gone; only the data (and the lock file) stay.
    assert!(
        !cache.join("cifar-10-binary.tar.gz").exists() && !cache.join("cifar-10-binary.tar.gz.part").exists()
    );
    assert!(!cache.join(".cifar-10-batches-bin.partial").exists());

    // Again: nothing is fetched and nothing is said on stderr.
    let again = fetch(&cache, &server.url, &archive::md5_hex(&bytes)).output().unwrap();
    assert!(again.status.success() && again.stderr.is_empty(), "{}", text(&again));
    assert_eq!(server.requests(), 1);

    // The loader takes it, and `--classes all` means the ten classes.
    let run = cache.parent().unwrap().join("run");
    let data = folder(&cache);
    let args = ["train", "--data", s(&data), "--classes", "all", "--epochs", "1", "--batch", "10"];
    common::trainer(&[&args[..], &["--threads", "1", "--out", s(&run)]].concat());
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    let classes: Vec<&str> =
        config["classes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert_eq!(
        classes,
        ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    );
}

#[test]
fn fetch_to_a_folder_says_how_to_use_it() {
    let dir = common::tmp("dl-to");
    let bytes = archive::official(1);
    let server = Server::start(Reply::Ok(Arc::new(bytes.clone()), Duration::ZERO));
    let mut cmd = fetch(&dir.join("unused-cache"), &server.url, &archive::md5_hex(&bytes));
    let out = cmd.args(["--to", s(&dir.join("data"))]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("--data {}", folder(&dir.join("data")).display())), "{stdout}");
    assert!(folder(&dir.join("data")).join("test_batch.bin").is_file() && !dir.join("unused-cache").exists());
}

#[test]
fn a_truncated_transfer_is_reported_and_leaves_nothing() {
    let cache = common::tmp("dl-trunc");
    let bytes = archive::official(2);
    let server = Server::start(Reply::Truncated(Arc::new(bytes.clone()), bytes.len() / 2));
    let out = fetch(&cache, &server.url, &archive::md5_hex(&bytes)).output().unwrap();
    let line = error_line(&out);
    assert!(line.contains(&format!("download of {} broke off after", server.url)), "{line}");
    assert!(line.contains("the partial file was removed"), "{line}");
    nothing_left(&cache);
}

#[test]
fn a_wrong_checksum_removes_the_download_and_says_so() {
    let cache = common::tmp("dl-md5");
    let bytes = archive::official(1);
    let server = Server::start(Reply::Ok(Arc::new(bytes.clone()), Duration::ZERO));
    let wrong = "0123456789abcdef0123456789abcdef";
    let line = error_line(&fetch(&cache, &server.url, wrong).output().unwrap());
    let expected = format!("MD5 {}, expected {wrong}", archive::md5_hex(&bytes));
    assert!(line.contains(&expected) && line.contains("the downloaded file was removed"), "{line}");
    nothing_left(&cache);
    // A checksum that is not one is refused before any request.
    let line = error_line(&fetch(&cache, &server.url, "abc").output().unwrap());
    assert_eq!(line, "error: GAPNET_CIFAR10_MD5=abc: not an MD5 checksum (32 hexadecimal digits)");
    assert_eq!(server.requests(), 1);
}

#[test]
fn http_errors_name_the_status_the_url_and_the_way_out() {
    let cache = common::tmp("dl-404");
    let server = Server::start(Reply::Status(404, "Not Found"));
    let line = error_line(&fetch(&cache, &server.url, &archive::md5_hex(b"")).output().unwrap());
    assert!(line.contains(&format!("{} answered HTTP 404", server.url)), "{line}");
    assert!(
        line.contains(&format!("put it at {}", cache.join("cifar-10-binary.tar.gz").display())),
        "{line}"
    );
    nothing_left(&cache);
}

#[test]
fn no_connection_names_the_url_the_cache_and_the_offline_way() {
    let cache = common::tmp("dl-refused");
    // A port that was free a moment ago: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/cifar-10-binary.tar.gz");
    let line = error_line(&fetch(&cache, &url, &archive::md5_hex(b"")).output().unwrap());
    assert!(line.contains(&format!("cannot download CIFAR-10 from {url}")), "{line}");
    assert!(line.contains("to work offline") && line.contains("--data DIR"), "{line}");
    assert!(line.contains(&cache.join("cifar-10-binary.tar.gz").display().to_string()), "{line}");
    nothing_left(&cache);
}

#[test]
fn a_stalled_server_times_out_within_bounds() {
    let cache = common::tmp("dl-stall");
    let bytes = archive::official(1);
    let server = Server::start(Reply::Stall(Arc::new(bytes.clone())));
    let start = Instant::now();
    let line = error_line(&fetch(&cache, &server.url, &archive::md5_hex(&bytes)).output().unwrap());
    let took = start.elapsed();
    assert!(line.contains("broke off after") && line.contains("no data for 1 s"), "{line}");
    assert!(took < Duration::from_secs(10), "took {took:?} with a 1 s timeout");
    nothing_left(&cache);
}

#[test]
fn a_killed_download_and_an_interrupted_unpack_leave_no_dataset_and_the_next_run_recovers() {
    let cache = common::tmp("dl-kill");
    let bytes = archive::official(1);
    let md5 = archive::md5_hex(&bytes);

    // Killed while the body is coming: the partial file is never taken for data.
    let stall = Server::start(Reply::Stall(Arc::new(bytes.clone())));
    let mut child = fetch(&cache, &stall.url, &md5)
        .env("GAPNET_DOWNLOAD_TIMEOUT", "30")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let part = cache.join("cifar-10-binary.tar.gz.part");
    let start = Instant::now();
    while !part.exists() {
        assert!(start.elapsed() < Duration::from_secs(10), "no partial download appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!folder(&cache).exists() && !cache.join("cifar-10-binary.tar.gz").exists());

    // What an unpack cut short leaves: the checked archive and a temporary
    // folder holding every batch file, not yet renamed. The next run unpacks
    // again from the archive, without a request.
    std::fs::write(cache.join("cifar-10-binary.tar.gz"), &bytes).unwrap();
    let partial = cache.join(".cifar-10-batches-bin.partial");
    std::fs::create_dir(&partial).unwrap();
    for f in
        ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"]
    {
        std::fs::write(partial.join(f), archive::batch(1, 0)).unwrap();
    }
    std::fs::write(partial.join("test_batch.bin"), &archive::batch(1, 0)[..100]).unwrap();
    let good = Server::start(Reply::Ok(Arc::new(bytes.clone()), Duration::ZERO));
    let out = fetch(&cache, &good.url, &md5).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(good.requests(), 0, "the checked archive is reused");
    assert!(!partial.exists() && !part.exists());
    let test = std::fs::read(folder(&cache).join("test_batch.bin")).unwrap();
    assert_eq!(test, archive::batch(1, 9), "the batch comes from the archive, not the leftover");
}

#[test]
fn two_first_runs_at_once_download_once_and_both_succeed() {
    let cache = common::tmp("dl-two");
    let bytes = archive::official(2);
    // The pause keeps the first download going while the second one starts.
    let server = Server::start(Reply::Ok(Arc::new(bytes.clone()), Duration::from_millis(300)));
    let md5 = archive::md5_hex(&bytes);
    let children: Vec<_> = (0..2)
        .map(|_| {
            fetch(&cache, &server.url, &md5).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    assert_eq!(server.requests(), 1);
    assert_eq!(std::fs::read(folder(&cache).join("data_batch_2.bin")).unwrap(), archive::batch(2, 2));
}

#[test]
fn an_unwritable_cache_says_which_variable_or_flag_to_use() {
    let dir = common::tmp("dl-unwritable");
    // A file where a folder should be: writing below it fails even for root.
    let blocker = dir.join("file");
    std::fs::write(&blocker, b"").unwrap();
    let url = "http://127.0.0.1:9/never";
    let line = error_line(&fetch(&blocker.join("cache"), url, &archive::md5_hex(b"")).output().unwrap());
    assert!(line.contains(&blocker.join("cache").display().to_string()), "{line}");
    assert!(line.contains("set GAPNET_CACHE=DIR to another folder"), "{line}");
    let mut cmd = fetch(&dir.join("cache"), url, &archive::md5_hex(b""));
    let line = error_line(&cmd.args(["--to", s(&blocker.join("data"))]).output().unwrap());
    assert!(line.contains("choose another --to DIR"), "{line}");
}

#[test]
fn a_mirror_archive_declaring_a_huge_name_is_refused_within_bounded_memory() {
    use std::os::unix::process::CommandExt;
    for (kind, what) in [(b'L', "GNU long name"), (b'x', "pax extended header")] {
        let cache = common::tmp(&format!("dl-hostile-{}", kind as char));
        // A 1,100 MiB record, which gzip serves in about a megabyte.
        let bytes = archive::declaring(kind, 1100 << 20, true);
        let server = Server::start(Reply::Ok(Arc::new(bytes.clone()), Duration::ZERO));
        let mut cmd = fetch(&cache, &server.url, &archive::md5_hex(&bytes));
        // SAFETY: setrlimit(2) in the child between fork and exec; no allocation.
        unsafe {
            cmd.pre_exec(|| {
                // 1 GiB of address space: less than the declared record alone.
                let limit = libc::rlimit { rlim_cur: 1 << 30, rlim_max: 1 << 30 };
                if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let line = error_line(&cmd.output().unwrap());
        let refused = cache.join("cifar-10-binary.tar.gz.refused");
        for needle in [
            format!("a {what} record of 1153433600 bytes, more than the 4096 accepted"),
            format!("moved aside to {}", refused.display()),
        ] {
            assert!(line.contains(&needle), "{needle:?} not in {line}");
        }
        // Not tried again by the next run: it is out of the way, the cache is clean.
        assert_eq!(std::fs::read(&refused).unwrap(), bytes);
        nothing_left(&cache);
        assert!(!cache.join(".cifar-10-batches-bin.partial").exists());
    }
}
