//! `trainer predict` on pictures the test writes: the probabilities of a
//! CIFAR test record saved as PNG equal the model's on that record, folders
//! expand, odd formats are converted and said so, bad input is one clear line.

mod common;

use std::path::Path;

use common::{command, make_data, one_line_error, s, text, tmp, trainer, Safetensors, RECORD};
use graph::{ModelSpec, Plan, Shape};

/// Write a PNG of `w x h` pixels, `channels` samples each of `depth` bits.
fn write_png(path: &Path, w: u32, h: u32, color: png::ColorType, depth: png::BitDepth, data: &[u8]) {
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    enc.set_color(color);
    enc.set_depth(depth);
    enc.write_header().unwrap().write_image_data(data).unwrap();
}

/// Record `i` of a CIFAR file as interleaved RGB bytes, and its CHW bytes.
fn record(bytes: &[u8], i: usize) -> (Vec<u8>, Vec<u8>) {
    let chw = bytes[i * RECORD + 1..(i + 1) * RECORD].to_vec();
    let rgb = (0..1024).flat_map(|p| [chw[p], chw[1024 + p], chw[2048 + p]]).collect();
    (rgb, chw)
}

/// The model's probabilities for CHW images, from the checkpoint alone.
fn expected(model: &Path, chw: &[Vec<u8>]) -> Vec<[f64; 2]> {
    let st = Safetensors::parse(&std::fs::read(model).unwrap());
    let meta = st.gapnet();
    let spec: ModelSpec = serde_json::from_str(meta["spec"].as_str().unwrap()).unwrap();
    let mean: Vec<f32> = serde_json::from_str(meta["norm_mean"].as_str().unwrap()).unwrap();
    let std: Vec<f32> = serde_json::from_str(meta["norm_std"].as_str().unwrap()).unwrap();
    let mut plan = Plan::new(&spec, Shape::new(3, 32, 32), chw.len()).unwrap();
    for t in plan.tensors().to_vec() {
        plan.params_mut()[t.range].copy_from_slice(&st.f32s(&t.name));
    }
    let x: Vec<f32> = chw
        .iter()
        .flat_map(|im| {
            im.iter().enumerate().map(|(i, &v)| (v as f32 / 255.0 - mean[i / 1024]) / std[i / 1024])
        })
        .collect();
    let mut logits = vec![0.0f32; chw.len() * 2];
    plan.predict(&x, &mut logits);
    logits
        .chunks_exact(2)
        .map(|z| {
            let m = z[0].max(z[1]) as f64;
            let e = [(z[0] as f64 - m).exp(), (z[1] as f64 - m).exp()];
            [e[0] / (e[0] + e[1]), e[1] / (e[0] + e[1])]
        })
        .collect()
}

fn json_lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn predict_gives_the_models_probabilities_for_records_saved_as_png() {
    let root = tmp("predict");
    let (data, run, pics) = (root.join("data"), root.join("run"), root.join("pics"));
    make_data(&data, 120, 20);
    trainer(&[
        "train",
        "--model",
        "seed-gap",
        "--epochs",
        "2",
        "--batch",
        "20",
        "--data",
        s(&data),
        "--out",
        s(&run),
    ]);
    let model = run.join("model.safetensors");
    std::fs::create_dir_all(&pics).unwrap();
    let test = std::fs::read(data.join("test.bin")).unwrap();
    let mut chw = Vec::new();
    for i in 0..3 {
        let (rgb, c) = record(&test, i);
        write_png(&pics.join(format!("r{i}.png")), 32, 32, png::ColorType::Rgb, png::BitDepth::Eight, &rgb);
        chw.push(c);
    }
    std::fs::write(pics.join("notes.txt"), "not a picture, and not read: a folder expands to its images")
        .unwrap();
    let out = trainer(&["predict", "--checkpoint", s(&model), "--json", s(&pics)]);
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 3, "{}", text(&out));
    for (i, (line, want)) in lines.iter().zip(expected(&model, &chw)).enumerate() {
        assert!(line["image"].as_str().unwrap().ends_with(&format!("r{i}.png")), "sorted: {line}");
        for (c, name) in ["airplane", "ship"].iter().enumerate() {
            let got = line["probabilities"][name].as_f64().unwrap();
            assert!((got - want[c]).abs() < 1e-5, "record {i} {name}: {got} vs {want:?}");
        }
        let best = if want[1] > want[0] { "ship" } else { "airplane" };
        assert_eq!(line["class"], best);
        assert_eq!(line["notes"], serde_json::json!([]), "a 32x32 RGB picture is used as is");
    }
    // The plain form: one line per image with every class's probability.
    let plain = trainer(&[
        "predict",
        "--checkpoint",
        s(&model),
        s(&pics.join("r0.png")),
        "--cam",
        s(&root.join("cam")),
    ]);
    let stdout = String::from_utf8_lossy(&plain.stdout);
    assert!(
        stdout.contains("r0.png: ") && stdout.contains("(airplane 0.") && stdout.contains(", ship 0."),
        "{stdout}"
    );
    let cam = std::fs::read(root.join("cam/r0.png.cam.png")).unwrap();
    assert_eq!(&cam[..8], b"\x89PNG\r\n\x1a\n");

    // Grey, 16-bit, alpha and other sizes are converted, and the line says so.
    let odd = root.join("odd");
    std::fs::create_dir_all(&odd).unwrap();
    write_png(&odd.join("a-grey.png"), 32, 32, png::ColorType::Grayscale, png::BitDepth::Eight, &[90; 1024]);
    write_png(
        &odd.join("b-deep.png"),
        32,
        32,
        png::ColorType::Rgb,
        png::BitDepth::Sixteen,
        &[7; 32 * 32 * 6],
    );
    write_png(
        &odd.join("c-alpha.png"),
        32,
        32,
        png::ColorType::Rgba,
        png::BitDepth::Eight,
        &[200; 32 * 32 * 4],
    );
    write_png(&odd.join("d-wide.png"), 64, 40, png::ColorType::Rgb, png::BitDepth::Eight, &[50; 64 * 40 * 3]);
    let lines = json_lines(&trainer(&["predict", "--checkpoint", s(&model), "--json", s(&odd)]));
    let notes: Vec<String> = lines.iter().map(|l| l["notes"].to_string()).collect();
    assert!(notes[0].contains("grey converted to RGB"), "{notes:?}");
    assert!(notes[1].contains("16-bit samples scaled to 8-bit"), "{notes:?}");
    assert!(notes[2].contains("alpha channel ignored"), "{notes:?}");
    assert!(notes[3].contains("64x40 resized to 51x32, centre 32x32 kept"), "{notes:?}");

    // Bad input: one line naming the file, never a panic.
    let bad = root.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("text.png"), "hello").unwrap();
    std::fs::write(bad.join("text.dat"), "hello").unwrap();
    // A PNG header claiming 100000 x 100000 pixels: refused before decoding.
    let mut huge = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut huge, 100_000, 100_000);
        enc.set_color(png::ColorType::Grayscale);
        let _ = enc.write_header().unwrap();
    }
    std::fs::write(bad.join("huge.png"), &huge).unwrap();
    // Within the side limit, and 300 MB decoded (a 10000x10000 palette
    // BMP, expanded to RGB): under the 512 MiB decode limit, over it with
    // the RGB copy beside it. Refused from its header, never decoded.
    let mut wide = Vec::new();
    wide.extend(b"BM");
    for v in [54 + 1024 + 100_000_000u32, 0, 54 + 1024] {
        wide.extend(v.to_le_bytes());
    }
    for v in [40u32, 10_000, 10_000] {
        wide.extend(v.to_le_bytes());
    }
    wide.extend(1u16.to_le_bytes());
    wide.extend(8u16.to_le_bytes());
    for v in [0u32, 0, 2835, 2835, 256, 0] {
        wide.extend(v.to_le_bytes());
    }
    wide.extend((0..=255u8).flat_map(|g| [g, g, g, 0]));
    std::fs::write(bad.join("wide.bmp"), &wide).unwrap();
    let m = s(&model);
    for (file, needle) in [
        ("text.png", "cannot decode the image"),
        ("text.dat", "not an image this program reads"),
        ("huge.png", "too large to decode"),
        ("wide.bmp", "too large to decode (at most 16384 pixels a side, and 512 MiB for the decoded picture"),
    ] {
        let path = bad.join(file);
        let out = command(&["predict", "--checkpoint", m, s(&path)]).output().unwrap();
        one_line_error(&out, &[s(&path), needle], file);
    }
    // A folder with a bad file among good ones: the good ones are
    // classified, the bad one named with its reason, and the command fails.
    let mixed = root.join("mixed");
    std::fs::create_dir_all(&mixed).unwrap();
    std::fs::copy(pics.join("r0.png"), mixed.join("good.png")).unwrap();
    std::fs::write(mixed.join("text.png"), "hello").unwrap();
    let out = command(&["predict", "--checkpoint", m, s(&mixed)]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("{}: ", mixed.join("good.png").display())), "{}", text(&out));
    let skipped = format!("warning: skipped {}: cannot decode the image", mixed.join("text.png").display());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&skipped), "{}", text(&out));
    one_line_error(&out, &["1 of the 2 pictures could not be read", "the others were classified"], "mixed");

    // A name that is not UTF-8: --json gives its bytes beside the lossy text.
    {
        use std::os::unix::ffi::OsStrExt;
        let odd_name = root.join(std::ffi::OsStr::from_bytes(b"pic-\xff.png"));
        std::fs::copy(pics.join("r0.png"), &odd_name).unwrap();
        let out = command(&["predict", "--checkpoint", m, "--json"]).arg(&odd_name).output().unwrap();
        let lines = json_lines(&out);
        assert!(lines[0]["image"].as_str().unwrap().ends_with("pic-\u{fffd}.png"), "{}", text(&out));
        let bytes: Vec<u8> =
            lines[0]["image_bytes"].as_array().unwrap().iter().map(|b| b.as_u64().unwrap() as u8).collect();
        assert_eq!(bytes, odd_name.as_os_str().as_bytes());
        // A UTF-8 name needs none.
        assert!(json_lines(&trainer(&["predict", "--checkpoint", m, "--json", s(&pics.join("r0.png"))]))[0]
            .get("image_bytes")
            .is_none());
    }

    // Maps of pictures with the same stem, or the same name in two
    // folders, each get a file of their own, and the names printed exist.
    let same = root.join("same");
    for dir in ["a", "b"] {
        std::fs::create_dir_all(same.join(dir)).unwrap();
        std::fs::copy(pics.join("r0.png"), same.join(dir).join("x.png")).unwrap();
    }
    std::fs::copy(pics.join("r1.png"), same.join("a/x.jpg")).unwrap();
    let cams = root.join("cams");
    let names = ["a/x.jpg", "a/x.png", "b/x.png"].map(|n| same.join(n));
    let out = trainer(
        &[&["predict", "--checkpoint", m, "--cam", s(&cams)][..], &names.each_ref().map(|p| s(p))].concat(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    for file in ["x.jpg.cam.png", "x.png.cam.png", "x.png-2.cam.png"] {
        let path = cams.join(file);
        assert!(stdout.contains(&format!("wrote {}", path.display())), "{file} not said:\n{stdout}");
        assert_eq!(&std::fs::read(&path).unwrap()[..8], b"\x89PNG\r\n\x1a\n", "{file}");
    }
    assert_eq!(std::fs::read_dir(&cams).unwrap().count(), 3);

    // A checkpoint without its normalisation is refused, naming what is missing.
    let mut st = Safetensors::parse(&std::fs::read(&model).unwrap());
    let mut meta = st.gapnet();
    meta.as_object_mut().unwrap().remove("norm_mean");
    st.set_gapnet(&meta);
    let no_norm = root.join("no-norm.safetensors");
    std::fs::write(&no_norm, st.bytes()).unwrap();
    let out = command(&["predict", "--checkpoint", s(&no_norm), s(&pics)]).output().unwrap();
    one_line_error(&out, &["no-norm.safetensors", "norm_mean"], "no normalisation");
    std::fs::remove_dir_all(&root).unwrap();
}
