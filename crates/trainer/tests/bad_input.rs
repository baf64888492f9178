//! Bad input, end to end: every case runs the real `trainer` and must end
//! in exit status 1 with exactly one `error:` line that names the file (and
//! record or byte offset), the flag, the tensor or the layer, and no panic.

mod common;

use std::io::Write;
use std::path::Path;

use common::{
    caret_error, make_data, one_line_error, records, run, s, text, tmp, trainer, write_data, Safetensors,
    META,
};

/// An IDX folder (MNIST layout) of 10 training and 4 test images of 28x28.
fn make_idx(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (images, labels, n) in [
        ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 10),
        ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 4),
    ] {
        std::fs::write(dir.join(images), idx_images(n)).unwrap();
        let mut l = vec![0, 0, 8, 1];
        l.extend((n as u32).to_be_bytes());
        l.extend((0..n).map(|i| (i % 2) as u8));
        std::fs::write(dir.join(labels), l).unwrap();
    }
}

fn idx_images(n: usize) -> Vec<u8> {
    let mut b = vec![0, 0, 8, 3];
    for v in [n as u32, 28, 28] {
        b.extend(v.to_be_bytes());
    }
    b.extend((0..n * 784).map(|i| (i * 7 % 256) as u8));
    b
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// Runs every case: (what, arguments, needles of the error line).
fn check(cases: Vec<(&str, Vec<String>, Vec<String>)>) {
    for (what, args, needles) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        one_line_error(&run(&args), &needles, what);
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn bad_datasets_name_the_file_and_the_record() {
    let root = tmp("bad-data");
    let folder = |name: &str| root.join(name);
    let with_train = |name: &str, train: Vec<u8>| {
        write_data(&folder(name), train, records(4, 7, false));
        folder(name)
    };
    let empty = with_train("empty", Vec::new());
    let mut cut = records(10, 1, false);
    cut.truncate(cut.len() - 100);
    let truncated = with_train("truncated", cut);
    let mut labels = records(10, 1, false);
    labels[3 * 3073] = 10;
    let bad_label = with_train("label", labels);
    let good = folder("good");
    make_data(&good, 10, 4);
    let official = folder("official");
    std::fs::create_dir_all(&official).unwrap();
    for i in 1..=4 {
        std::fs::write(official.join(format!("data_batch_{i}.bin")), records(4, i, false)).unwrap();
    }
    std::fs::write(official.join("test_batch.bin"), records(4, 9, false)).unwrap();
    std::fs::write(official.join("batches.meta.txt"), META).unwrap();
    let nothing = folder("nothing");
    std::fs::create_dir_all(&nothing).unwrap();
    std::fs::write(nothing.join("readme.txt"), "not data").unwrap();

    let magic = folder("idx-magic");
    make_idx(&magic);
    let mut bytes = idx_images(10);
    bytes[3] = 4;
    std::fs::write(magic.join("train-images-idx3-ubyte"), bytes).unwrap();
    let dims = folder("idx-dims");
    make_idx(&dims);
    let mut bytes = idx_images(10);
    bytes[7] = 11;
    std::fs::write(dims.join("train-images-idx3-ubyte"), bytes).unwrap();
    let gz = folder("idx-gz");
    make_idx(&gz);
    std::fs::remove_file(gz.join("train-images-idx3-ubyte")).unwrap();
    let mut bytes = gzip(&idx_images(10));
    let mid = bytes.len() / 2;
    bytes[mid..mid + 16].fill(0xAB);
    std::fs::write(gz.join("train-images-idx3-ubyte.gz"), bytes).unwrap();

    let train = |data: &Path, extra: &[&str]| {
        let mut a = strings(&["train", "--epochs", "1", "--data", s(data), "--out", s(&root.join("out"))]);
        a.extend(strings(extra));
        a
    };
    let file = |dir: &Path, name: &str| dir.join(name).display().to_string();
    check(vec![
        (
            "missing folder",
            train(&folder("nope"), &[]),
            vec![format!("--data {}: no such directory", s(&folder("nope")))],
        ),
        ("empty file", train(&empty, &[]), vec![format!("{}: empty file", file(&empty, "train.bin"))]),
        (
            "truncated download",
            train(&truncated, &[]),
            vec![format!(
                "{}: 30630 bytes is not a whole number of 3073-byte CIFAR records (truncated download?)",
                file(&truncated, "train.bin")
            )],
        ),
        (
            "label out of range",
            train(&bad_label, &[]),
            vec![format!(
                "{}: record 3 (byte offset 9219) has label 10; CIFAR-10 labels are 0..=9",
                file(&bad_label, "train.bin")
            )],
        ),
        (
            "class not in the files",
            train(&good, &["--classes", "airplane,truck"]),
            strings(&["class 'truck' is not in these files (found: airplane, ship)"]),
        ),
        (
            "unknown class",
            train(&good, &["--classes", "airplane,unicorn"]),
            strings(&["unknown class 'unicorn'", "airplane, automobile"]),
        ),
        (
            "official layout with a batch missing",
            train(&official, &[]),
            vec![format!("{}: missing", file(&official, "data_batch_5.bin"))],
        ),
        ("no data files", train(&nothing, &[]), strings(&["no CIFAR-10 or IDX files found"])),
        (
            "IDX with a wrong magic",
            train(&magic, &["--classes", "0,1"]),
            vec![format!(
                "{}: not an IDX file (magic 0x00000804, expected 0x00000803 for images)",
                file(&magic, "train-images-idx3-ubyte")
            )],
        ),
        (
            "IDX dimensions that disagree with the size",
            train(&dims, &["--classes", "0,1"]),
            vec![format!(
                "{}: IDX header says 11x28x28 = 8624 bytes but the file holds 7840 bytes",
                file(&dims, "train-images-idx3-ubyte")
            )],
        ),
        (
            "corrupt gzip",
            train(&gz, &["--classes", "0,1"]),
            vec![format!("{}: corrupt gzip", file(&gz, "train-images-idx3-ubyte.gz"))],
        ),
    ]);
    // The same loaders serve `eval`.
    let run_dir = root.join("run");
    trainer(&["train", "--epochs", "1", "--batch", "5", "--data", s(&good), "--out", s(&run_dir)]);
    let model = run_dir.join("model.safetensors");
    check(vec![(
        "eval on a truncated download",
        strings(&["eval", "--checkpoint", s(&model), "--data", s(&truncated)]),
        strings(&["train.bin: 30630 bytes is not a whole number"]),
    )]);
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn bad_checkpoints_name_the_file_and_the_tensor() {
    let root = tmp("bad-ckpt");
    let data = root.join("data");
    make_data(&data, 20, 6);
    let (gap, fc20) = (root.join("gap"), root.join("fc20"));
    for (model, out) in [("seed-gap", &gap), ("seed-fc20", &fc20)] {
        trainer(&[
            "train",
            "--model",
            model,
            "--epochs",
            "1",
            "--batch",
            "10",
            "--data",
            s(&data),
            "--out",
            s(out),
        ]);
    }
    let good = std::fs::read(gap.join("model.safetensors")).unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let path = root.join(name);
        std::fs::write(&path, bytes).unwrap();
        path.display().to_string()
    };
    let edit = |f: &dyn Fn(&mut Safetensors)| {
        let mut st = Safetensors::parse(&good);
        f(&mut st);
        st.bytes()
    };
    let not_st = write("notes.safetensors", b"these are my notes, not a checkpoint");
    let truncated = write("truncated.safetensors", &good[..good.len() / 2]);
    let shape = write(
        "shape.safetensors",
        &edit(&|st| {
            let mut meta = st.gapnet();
            let mut spec: serde_json::Value = serde_json::from_str(meta["spec"].as_str().unwrap()).unwrap();
            spec["layers"][0]["filters"] = 16.into();
            meta["spec"] = spec.to_string().into();
            st.set_gapnet(&meta);
        }),
    );
    let renamed = write(
        "renamed.safetensors",
        &edit(&|st| {
            let t = st.header.as_object_mut().unwrap().remove("fc1.bias").unwrap();
            st.header["head.bias"] = t;
        }),
    );
    let nan = write("nan.safetensors", &edit(&|st| st.set_f32("conv1.weight", 0, f32::NAN)));
    let inf = write("inf.safetensors", &edit(&|st| st.set_f32("fc1.weight", 5, f32::INFINITY)));
    let foreign = write(
        "foreign.safetensors",
        &edit(&|st| {
            st.header.as_object_mut().unwrap().remove("__metadata__");
        }),
    );
    let missing = root.join("nope.safetensors").display().to_string();
    let eval = |file: &str| strings(&["eval", "--checkpoint", file, "--data", s(&data)]);
    let in_file = |file: &str, what: &str| vec![format!("{file}: {what}")];
    check(vec![
        ("missing", eval(&missing), in_file(&missing, "cannot read the checkpoint")),
        ("not safetensors", eval(&not_st), in_file(&not_st, "not a readable safetensors file")),
        ("truncated", eval(&truncated), in_file(&truncated, "not a readable safetensors file")),
        (
            "shape of another model",
            eval(&shape),
            in_file(
                &shape,
                "tensor conv1.weight has shape [20, 3, 3, 3] but model seed-gap expects [16, 3, 3, 3]",
            ),
        ),
        ("tensor names of another model", eval(&renamed), in_file(&renamed, "tensor fc1.bias is missing")),
        ("NaN inside", eval(&nan), in_file(&nan, "tensor conv1.weight holds NaN at element 0")),
        ("Inf inside", eval(&inf), in_file(&inf, "tensor fc1.weight holds inf at element 5")),
        ("no gapnet header", eval(&foreign), in_file(&foreign, "no model spec in the header")),
        (
            "eval --limit-test 0",
            [eval(&nan), strings(&["--limit-test", "0"])].concat(),
            strings(&["--limit-test 0"]),
        ),
    ]);

    // The same through `train --resume`, on copies of the run folder.
    let resume_case = |name: &str, f: &dyn Fn(&Path)| {
        let dir = root.join(name);
        copy_dir(&gap, &dir);
        f(&dir);
        (strings(&["train", "--resume", s(&dir)]), dir.join("state.safetensors").display().to_string())
    };
    let state = std::fs::read(gap.join("state.safetensors")).unwrap();
    let (cut, cut_file) = resume_case("r-cut", &|d| {
        std::fs::write(d.join("state.safetensors"), &state[..state.len() - 9]).unwrap()
    });
    let (other, other_file) = resume_case("r-other", &|d| {
        drop(std::fs::copy(fc20.join("state.safetensors"), d.join("state.safetensors")))
    });
    let (nan_v, nan_file) = resume_case("r-nan", &|d| {
        let mut st = Safetensors::parse(&state);
        st.set_f32("velocity.conv2.weight", 3, f32::NAN);
        std::fs::write(d.join("state.safetensors"), st.bytes()).unwrap();
    });
    let (config, _) =
        resume_case("r-config", &|d| std::fs::write(d.join("config.json"), "{\"model\": 3").unwrap());
    let (lr, _) = resume_case("r-lr", &|_| {});
    let nowhere = root.join("nowhere");
    check(vec![
        ("resume: truncated state", cut, in_file(&cut_file, "not a readable safetensors file")),
        (
            "resume: another model's state",
            other,
            in_file(&other_file, "tensor fc1.weight has shape [20, 1280] but model seed-gap expects [2, 20]"),
        ),
        (
            "resume: NaN in the momentum",
            nan_v,
            in_file(&nan_file, "tensor velocity.conv2.weight holds NaN at element 3"),
        ),
        ("resume: unreadable config", config, strings(&["config.json: not a run configuration"])),
        ("resume: bad --lr", [lr, strings(&["--lr", "-1"])].concat(), strings(&["--lr -1"])),
        (
            "resume: no run there",
            strings(&["train", "--resume", s(&nowhere)]),
            vec![format!("--resume {}: no run there", s(&nowhere))],
        ),
    ]);
    // Nothing was changed by a refused resume.
    assert_eq!(std::fs::read(root.join("r-lr/state.safetensors")).unwrap(), state);
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn bad_model_spec_files_name_the_layer() {
    let root = tmp("bad-spec");
    let data = root.join("data");
    make_data(&data, 10, 4);
    let spec = |name: &str, layers: &str| {
        let path = root.join(name);
        std::fs::write(&path, format!("name = \"{name}\"\n{layers}")).unwrap();
        path.display().to_string()
    };
    let conv = |filters: usize| format!("[[layers]]\ntype = \"conv\"\nfilters = {filters}\nsize = 3\n");
    let head = "[[layers]]\ntype = \"global_avg_pool\"\n[[layers]]\ntype = \"dense\"\nunits = 2\n";
    let unknown = spec("unknown.toml", "[[layers]]\ntype = \"lstm\"\nunits = 3\n");
    let pool = spec(
        "pool.toml",
        &format!(
            "{}[[layers]]\ntype = \"relu\"\n[[layers]]\ntype = \"max_pool\"\nsize = 64\nstride = 2\n{head}",
            conv(4)
        ),
    );
    let zero = spec("zero.toml", &format!("{}{head}", conv(0)));
    let huge = spec("huge.toml", &format!("{}{head}", conv(2_000_000)));
    let flat = spec("flat.toml", &format!("{}[[layers]]\ntype = \"dense\"\nunits = 2\n", conv(4)));
    let typo = spec("typo.toml", &format!("{}{head}", conv(4).replace("filters", "filter")));
    let train =
        |model: &str| strings(&["train", "--model", model, "--data", s(&data), "--out", s(&root.join("o"))]);
    check(vec![
        (
            "pool larger than its input",
            train(&pool),
            vec![format!("model {pool}: layer 3: maxpool 64x64 stride 2 floor: input 4x30x30 is smaller than the 64x64 window")],
        ),
        (
            "zero channels",
            train(&zero),
            vec![format!("model {zero}: layer 1: conv 0@3x3 stride 1 pad 0: filters, size and stride must be at least 1")],
        ),
        ("too big for memory", train(&huge), vec![format!("model {huge}: needs "), "GiB of memory for 3x32x32 images".into()]),
        ("dense on a plane", train(&flat), vec![format!("model {flat}: layer 2: dense 2: input 4x30x30 is not flat")]),
        ("neither preset nor file", train("seed-gapp"), strings(&["--model seed-gapp: not a preset"])),
    ]);
    // Parse errors show the line and a caret beneath the column.
    let out = |m: &str| run(&train(m).iter().map(String::as_str).collect::<Vec<_>>());
    let lines = caret_error(
        &out(&unknown),
        &[&format!("{unknown}: line 3, column 8: unknown variant `lstm`")],
        "unknown layer",
    );
    assert_eq!(lines[1], " 3 | type = \"lstm\"");
    let lines = caret_error(
        &out(&typo),
        &[&format!("{typo}: line 4, column 1: unknown field `filter`")],
        "misspelt key",
    );
    assert_eq!(lines[1], " 4 | filter = 4");
    // A broken second model is refused before the first one trains.
    let out = run(&[
        "compare",
        "--models",
        &format!("seed-gap,{zero}"),
        "--data",
        s(&data),
        "--out",
        s(&root.join("c")),
    ]);
    one_line_error(&out, &["layer 1"], "compare with a broken model");
    assert!(!root.join("c/seed-gap/config.json").exists(), "{}", text(&out));
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn bad_flags_name_the_flag() {
    let root = tmp("bad-flags");
    let data = root.join("data");
    make_data(&data, 10, 4);
    let blocker = root.join("a-file");
    std::fs::write(&blocker, "").unwrap();
    let train = |extra: &[&str]| {
        let mut a = strings(&["train", "--data", s(&data), "--out", s(&root.join("o"))]);
        a.extend(strings(extra));
        a
    };
    let under_file = blocker.join("run");
    check(vec![
        ("batch 0", train(&["--batch", "0"]), strings(&["--batch 0"])),
        ("negative lr", train(&["--lr", "-0.1"]), strings(&["--lr -0.1", "positive"])),
        ("NaN lr", train(&["--lr", "NaN"]), strings(&["--lr NaN"])),
        ("infinite lr", train(&["--lr", "inf"]), strings(&["--lr inf"])),
        ("threads 0", train(&["--threads", "0"]), strings(&["--threads 0"])),
        ("epochs 0", train(&["--epochs", "0"]), strings(&["--epochs 0"])),
        ("checkpoint-every 0", train(&["--checkpoint-every", "0"]), strings(&["--checkpoint-every 0"])),
        ("limit-train 0", train(&["--limit-train", "0"]), strings(&["--limit-train 0"])),
        (
            "output folder not writable",
            strings(&["train", "--data", s(&data), "--out", s(&under_file)]),
            vec![format!("--out {}: cannot create the folder", s(&under_file))],
        ),
        (
            "compare with no models",
            strings(&["compare", "--models", ",", "--data", s(&data)]),
            strings(&["--models"]),
        ),
        (
            "eval threads 0",
            strings(&["eval", "--checkpoint", "x", "--threads", "0"]),
            strings(&["--threads 0"]),
        ),
    ]);
    // Values clap cannot parse: its own message and usage, exit status 2.
    let out = run(&["train", "--batch", "ten"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("'--batch <BATCH>'"), "{}", text(&out));

    // --limit-train beyond the data: a warning, then every image is used.
    let args = train(&["--epochs", "1", "--limit-train", "1000", "--limit-test", "3"]);
    let out = trainer(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .contains("warning: --limit-train 1000 is more than the 10 images there are; using all of them"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("on 10 train / 3 test images"), "{}", text(&out));
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_data_path_that_config_json_cannot_hold_is_refused_before_training() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tmp("bad-utf8");
    let data = dir.join(std::ffi::OsStr::from_bytes(b"data-\xff"));
    make_data(&data, 20, 10);
    let out = dir.join("run");
    let o =
        common::command(&["train", "--epochs", "1", "--out", s(&out), "--data"]).arg(&data).output().unwrap();
    one_line_error(&o, &["data-\u{fffd}", "--data", "not valid UTF-8", "config.json"], "non-UTF-8 --data");
    assert!(!String::from_utf8_lossy(&o.stdout).contains("epoch"), "{}", text(&o));
    assert!(!out.join("config.json").exists(), "a run folder was started");
}

#[test]
fn a_model_named_twice_in_a_comparison_is_refused_before_training() {
    let dir = tmp("compare-twice");
    let data = dir.join("data");
    make_data(&data, 20, 10);
    let out = dir.join("cmp");
    let args = ["compare", "--models", "seed-gap,seed-fc,seed-gap", "--epochs", "1", "--data", s(&data)];
    let o = run(&[&args[..], &["--out", s(&out)]].concat());
    one_line_error(&o, &["--models", "seed-gap is named twice", s(&out.join("seed-gap"))], "compare twice");
    assert!(!out.join("seed-fc").exists() && !out.join("seed-gap").exists(), "a model was trained");
}
