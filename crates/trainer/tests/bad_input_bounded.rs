//! Bad input that is endless, huge or not a file at all, end to end (the
//! malformed-content cases are in bad_input.rs): every reader opens regular
//! files only and reads no more than its format allows, outputs never
//! replace anything but a regular file, and every error is one short line
//! naming the file or flag, with exit status 1 and no panic.

mod common;

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{caret_error, command, make_data, one_line_error, run, s, tmp, trainer, Safetensors};

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo {}", path.display());
}

/// Runs the trainer and returns its output, its peak resident memory in
/// bytes and its wall time; kills it (by its own pid) and fails if it has
/// not finished within `limit`: a FIFO must not hang a reader.
// The child is reaped by wait4 (for its resource usage), not Child::wait.
#[allow(clippy::zombie_processes)]
fn run_measured(args: &[&str], limit: Duration) -> (Output, u64, Duration) {
    let started = Instant::now();
    let mut child = command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let (mut status, mut usage) = (0, unsafe { std::mem::zeroed::<libc::rusage>() });
    loop {
        // SAFETY: waits for our own child, with valid out-pointers.
        let done = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        assert!(done >= 0, "wait4: {}", std::io::Error::last_os_error());
        if done == pid {
            break;
        }
        if started.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("trainer {args:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let elapsed = started.elapsed();
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    child.stdout.take().unwrap().read_to_end(&mut stdout).unwrap();
    child.stderr.take().unwrap().read_to_end(&mut stderr).unwrap();
    let out = Output { status: std::process::ExitStatus::from_raw(status), stdout, stderr };
    (out, usage.ru_maxrss as u64 * 1024, elapsed)
}

/// [`run_measured`]'s output, within ten seconds.
fn run_bounded(args: &[&str]) -> Output {
    run_measured(args, Duration::from_secs(10)).0
}

/// A copy of the data folder `data` in `root/name`, with `train.bin`
/// replaced by what `make` puts there.
fn with_train(root: &Path, data: &Path, name: &str, make: &dyn Fn(&Path)) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(data.join("test.bin"), dir.join("test.bin")).unwrap();
    make(&dir.join("train.bin"));
    dir
}

fn sparse(path: &Path, len: u64) {
    File::create(path).unwrap().set_len(len).unwrap();
}

#[test]
fn what_is_not_a_regular_file_is_refused_by_name() {
    let root = tmp("bounded-files");
    let data = root.join("data");
    make_data(&data, 10, 4);
    let out = root.join("o");
    let train = |data: &Path, model: &str| {
        run_bounded(&["train", "--model", model, "--data", s(data), "--out", s(&out), "--epochs", "1"])
    };
    let fifo = root.join("fifo.toml");
    mkfifo(&fifo);
    for (model, kind) in [
        ("/dev/zero", "a character device, not a regular file"),
        (s(&fifo), "a FIFO (named pipe), not a regular file"),
        (s(&root), "a directory, not a regular file"),
    ] {
        let needle = format!("{model}: cannot read the model spec file: {kind}");
        one_line_error(&train(&data, model), &[&needle], model);
    }
    let kinds =
        [("/dev/zero", "a character device"), (s(&fifo), "a FIFO (named pipe)"), (s(&root), "a directory")];
    for (checkpoint, kind) in kinds {
        let needle = format!("{checkpoint}: cannot read the checkpoint: {kind}, not a regular file");
        let eval = run_bounded(&["eval", "--checkpoint", checkpoint, "--data", s(&data)]);
        one_line_error(&eval, &[&needle], checkpoint);
    }
    let dir = with_train(&root, &data, "dir", &|p| std::fs::create_dir(p).unwrap());
    let fifo = with_train(&root, &data, "fifo", &|p| mkfifo(p));
    let cycle = with_train(&root, &data, "loop", &|p| std::os::unix::fs::symlink(p, p).unwrap());
    let dangling =
        with_train(&root, &data, "dangling", &|p| std::os::unix::fs::symlink("gone.bin", p).unwrap());
    for (folder, kind) in [
        (&dir, "a directory, not a regular file"),
        (&fifo, "a FIFO (named pipe), not a regular file"),
        (&cycle, "a symlink loop"),
        (&dangling, "a symlink to gone.bin, which does not exist"),
    ] {
        let needle = format!("{}: {kind}", s(&folder.join("train.bin")));
        one_line_error(&train(folder, "seed-gap"), &[&needle], kind);
    }
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn sizes_are_checked_before_anything_is_read() {
    let root = tmp("bounded-sizes");
    let data = root.join("data");
    make_data(&data, 10, 4);
    let out = root.join("o");
    let train = |data: &Path, model: &str| {
        run_measured(
            &["train", "--model", model, "--data", s(data), "--out", s(&out)],
            Duration::from_secs(10),
        )
    };
    // Sparse files: gigabytes that cost no disk, refused by their size.
    let odd = with_train(&root, &data, "odd", &|p| sparse(p, 5_000_000_001));
    let absurd = with_train(&root, &data, "absurd", &|p| sparse(p, 3073 * 1_500_000));
    let spec = root.join("big.toml");
    sparse(&spec, 2 << 20);
    let checkpoint = root.join("big.safetensors");
    sparse(&checkpoint, 5_000_000_000);
    let cases = [
        (train(&odd, "seed-gap"), "train.bin: 5000000001 bytes is not a whole number of 3073-byte CIFAR records"),
        (
            train(&absurd, "seed-gap"),
            "train.bin: 4,609,500,000 bytes (1,500,000 records) is more than the 4 GiB a data file may hold",
        ),
        (train(&data, s(&spec)), "big.toml: cannot read the model spec file: 2 MiB is more than the 1 MiB"),
        (
            run_measured(&["eval", "--checkpoint", s(&checkpoint), "--data", s(&data)], Duration::from_secs(10)),
            "big.safetensors: not a readable safetensors file (4.7 GiB (5,000,000,000 bytes) is more than the 4 GiB",
        ),
    ];
    for (i, ((out, peak, took), needle)) in cases.into_iter().enumerate() {
        one_line_error(&out, &[needle], needle);
        assert!(took < Duration::from_secs(3), "case {i} took {took:?}");
        assert!(peak < 200 << 20, "case {i} reached {} MiB", peak >> 20);
    }
    std::fs::remove_dir_all(&root).unwrap();
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// An IDX file of `n` 28x28 images, or of `n` labels.
fn idx(n: u32, images: bool) -> Vec<u8> {
    let mut b = if images { vec![0, 0, 8, 3] } else { vec![0, 0, 8, 1] };
    b.extend(n.to_be_bytes());
    let len = if images {
        b.extend([28u32, 28].iter().flat_map(|v| v.to_be_bytes()));
        n as usize * 784
    } else {
        n as usize
    };
    b.extend((0..len).map(|i| (i % 2) as u8));
    b
}

#[test]
fn a_gzip_bomb_stops_at_the_size_its_header_declares() {
    let root = tmp("bounded-bomb");
    let data = root.join("idx");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("train-labels-idx1-ubyte"), idx(10, false)).unwrap();
    std::fs::write(data.join("t10k-images-idx3-ubyte"), idx(4, true)).unwrap();
    std::fs::write(data.join("t10k-labels-idx1-ubyte"), idx(4, false)).unwrap();
    // The header says 10 images (7,840 bytes); 64 more gzip members of
    // 16 MiB of zeros follow: 1 GiB more once inflated, 1 MB on disk.
    let mut bomb = gzip(&idx(10, true));
    let member = gzip(&vec![0u8; 16 << 20]);
    for _ in 0..64 {
        bomb.extend_from_slice(&member);
    }
    let file = data.join("train-images-idx3-ubyte.gz");
    std::fs::write(&file, &bomb).unwrap();
    let out = root.join("o");
    let args = ["train", "--data", s(&data), "--classes", "0,1", "--out", s(&out)];
    let (out, peak, took) = run_measured(&args, Duration::from_secs(20));
    let needle =
        format!("{}: more data than its header declares (IDX header says 10x28x28 = 7840 bytes", s(&file));
    one_line_error(&out, &[&needle], "gzip bomb");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(peak < 200 << 20, "reached {} MiB", peak >> 20);
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn flags_beyond_their_range_are_refused_before_any_work() {
    let root = tmp("bounded-flags");
    let data = root.join("data");
    make_data(&data, 10, 4);
    let out = root.join("o");
    let train = |extra: &[&str]| {
        let mut args = vec!["train", "--data", s(&data), "--out", s(&out)];
        args.extend(extra);
        run_measured(&args, Duration::from_secs(10))
    };
    let name = "x".repeat(100_000);
    let classes = format!("airplane,{name}");
    for (extra, needles) in [
        (vec!["--threads", "10000000"], vec!["--threads 10000000: at most 1024 worker threads"]),
        (vec!["--lr", "1e-60"], vec!["--lr 1e-60: too small for f32", "(0 there"]),
        (vec!["--lr", "1e-40"], vec!["--lr 1e-40: too small for f32", "(subnormal there"]),
        (vec!["--lr", "1e300"], vec!["--lr 1e300: too large for f32"]),
        (vec!["--lr", "-0"], vec!["--lr -0: the learning rate must be a positive number"]),
        (vec!["--classes", &classes], vec!["unknown class 'xxxxxxxx", "(100,000 characters)"]),
    ] {
        let (out, _, took) = train(&extra);
        let line = one_line_error(&out, &needles, extra[0]);
        assert!(line.len() < 300, "{} bytes: {line}", line.len());
        assert!(took < Duration::from_secs(3), "{extra:?} took {took:?}");
    }
    std::fs::remove_dir_all(&root).unwrap();
}

/// A character device of our own with /dev/null's numbers where we may
/// make one (as root): then, were the check to fail, only it would be
/// replaced. Otherwise /dev/null itself, which only root could replace.
fn char_device(root: &Path) -> PathBuf {
    let path = root.join("null");
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    let made = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) } == 0;
    if made {
        path
    } else {
        PathBuf::from("/dev/null")
    }
}

#[test]
fn outputs_never_replace_a_device_fifo_or_folder_and_errors_stay_short() {
    let root = tmp("bounded-out");
    let data = root.join("data");
    make_data(&data, 10, 4);
    let run_dir = root.join("run");
    trainer(&["train", "--epochs", "1", "--batch", "5", "--data", s(&data), "--out", s(&run_dir)]);
    let model = run_dir.join("model.safetensors");
    let device = char_device(&root);
    let fifo = root.join("fifo.safetensors");
    mkfifo(&fifo);
    let folder = root.join("folder");
    std::fs::create_dir(&folder).unwrap();
    for (target, kind) in
        [(&device, "a character device"), (&fifo, "a FIFO (named pipe)"), (&folder, "a directory")]
    {
        let prune =
            ["prune", "--checkpoint", s(&model), "--data", s(&data), "--planes", "0", "--out", s(target)];
        let needle = format!("--out {}: {kind}, not a regular file; refusing to replace it", s(target));
        one_line_error(&run_bounded(&prune), &[&needle], kind);
    }
    assert!(std::fs::metadata(&device).unwrap().file_type().is_char_device(), "{} was replaced", s(&device));
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    assert!(std::fs::metadata(&folder).unwrap().is_dir());
    assert!(std::fs::metadata("/dev/null").unwrap().file_type().is_char_device());

    // A checkpoint with 20,000 tensors too many: the list is cut with a count.
    let mut st = Safetensors::parse(&std::fs::read(&model).unwrap());
    for i in 0..20_000 {
        let at = st.data.len();
        st.header[format!("extra{i:05}")] =
            serde_json::json!({"dtype": "F32", "shape": [1], "data_offsets": [at, at + 4]});
        st.data.extend(1f32.to_le_bytes());
    }
    let extra = root.join("extra.safetensors");
    std::fs::write(&extra, st.bytes()).unwrap();
    let out = run(&["eval", "--checkpoint", s(&extra), "--data", s(&data)]);
    let line = one_line_error(
        &out,
        &["unexpected tensors for model seed-gap: extra00000", "and 19,990 more"],
        "extra",
    );
    assert!(line.len() < 300, "{} bytes: {line}", line.len());

    // A TOML syntax error and a deeply nested one: the line and a caret, short.
    let spec = |name: &str, text: &str| {
        let path = root.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let syntax = spec("syntax.toml", "name = \"x\"\n[[layers]]\ntype = \"conv\"\nfilters = 4 4\nsize = 3\n");
    let nested = spec("nested.toml", &format!("name = \"x\"\nlayers = {}\n", "[".repeat(300_000)));
    let train =
        |spec: &Path| run(&["train", "--model", s(spec), "--data", s(&data), "--out", s(&root.join("o"))]);
    let lines = caret_error(&train(&syntax), &[&format!("{}: line 4, column 11: ", s(&syntax))], "syntax");
    assert_eq!(lines[1..], [" 4 | filters = 4 4", "   |           ^^^"]);
    caret_error(&train(&nested), &[&format!("{}: line 2, column ", s(&nested))], "nested");
    std::fs::remove_dir_all(&root).unwrap();
}
