//! `trainer explain` end to end on a tiny model trained on generated CIFAR
//! files: the pictures decode and show the chosen test images, and the
//! numbers in the CSV files are the model's own (CAM weights are the dense
//! weights; contributions plus the bias give the logits).

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::{make_data, records, s, tmp, train_briefly, trainer, Safetensors, RECORD};

/// The correct count `C` of a line `... (C/N images)` after `marker`.
fn correct_count(stdout: &str, marker: &str) -> usize {
    let rest = stdout.split(marker).nth(1).unwrap_or_else(|| panic!("no {marker:?} in\n{stdout}"));
    rest.split('(').nth(1).unwrap().split('/').next().unwrap().parse().unwrap()
}

/// Width, height and RGB bytes of a PNG file.
fn decode(path: &Path) -> (usize, usize, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.color_type, info.bit_depth), (png::ColorType::Rgb, png::BitDepth::Eight), "{path:?}");
    buf.truncate(info.buffer_size());
    (info.width as usize, info.height as usize, buf)
}

/// Does the picture hold test image `chw` (3x32x32 bytes) scaled up 4x somewhere?
fn shows_image(png: &(usize, usize, Vec<u8>), chw: &[u8]) -> bool {
    let (w, h, rgb) = png;
    let px = |x: usize, y: usize| &rgb[(y * w + x) * 3..(y * w + x) * 3 + 3];
    let want = |x: usize, y: usize| [chw[y * 32 + x], chw[1024 + y * 32 + x], chw[2048 + y * 32 + x]];
    (0..h.saturating_sub(127)).any(|y0| {
        (0..w.saturating_sub(127)).any(|x0| {
            px(x0, y0) == want(0, 0)
                && (0..128).all(|dy| (0..128).all(|dx| px(x0 + dx, y0 + dy) == want(dx / 4, dy / 4)))
        })
    })
}

/// A CSV file as rows of column name -> value.
fn csv(path: &Path) -> Vec<HashMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    lines.map(|l| header.iter().cloned().zip(l.split(',').map(String::from)).collect()).collect()
}

fn num(row: &HashMap<String, String>, key: &str) -> f64 {
    row.get(key).unwrap_or_else(|| panic!("no column {key}")).parse().unwrap()
}

#[test]
fn explain_writes_pictures_and_plane_tables_for_cam_and_grad_cam_models() {
    let root = tmp("explain");
    let data = root.join("data");
    make_data(&data, 300, 100);
    let test_records = records(100, 999, false);
    let image = |i: usize| &test_records[i * RECORD + 1..(i + 1) * RECORD];
    for (model, method) in [("seed-gap", "CAM of relu3"), ("seed-fc20", "Grad-CAM of relu3")] {
        let run = root.join(model);
        train_briefly(model, &data, &run, None);
        let checkpoint = run.join("model.safetensors");
        let eval = trainer(&["eval", "--checkpoint", s(&checkpoint), "--data", s(&data)]);
        let correct = correct_count(&String::from_utf8_lossy(&eval.stdout), "test accuracy");
        let explain = |top: &str, out: &Path| {
            let args = [
                "explain",
                "--checkpoint",
                s(&checkpoint),
                "--data",
                s(&data),
                "--top",
                top,
                "--out",
                s(out),
            ];
            String::from_utf8_lossy(&trainer(&args).stdout).into_owned()
        };
        let (out, small) = (root.join(format!("{model}-explain")), root.join(format!("{model}-top1")));
        let stdout = explain("3", &out);
        explain("1", &small);
        assert!(stdout.contains(method), "{stdout}");
        assert_eq!(correct_count(&stdout, "test accuracy"), correct, "explain and eval disagree:\n{stdout}");
        let wrong = 100 - correct;
        assert!(correct >= 3, "{model} learnt too little for this test: {correct}/100");

        // Pictures: one row per image; a row is at least a 4x tile high.
        let (good, good1, bad) = (
            decode(&out.join("correct.png")),
            decode(&small.join("correct.png")),
            decode(&out.join("misclassified.png")),
        );
        assert_eq!(good.0, bad.0, "both pictures have the same width");
        assert!(good.0 >= 3 * 128, "three 128-pixel tiles side by side: width {}", good.0);
        let row = (good.1 - good1.1) / 2;
        assert!(row >= 128 && good.1 == good1.1 + 2 * row, "3 rows vs 1: heights {} and {}", good.1, good1.1);
        match wrong.min(3) {
            0 => assert!(bad.1 < good1.1, "no misclassified image: a header only"),
            m => assert_eq!(bad.1, good1.1 + (m - 1) * row, "{m} misclassified rows"),
        }

        // examples.csv: every shown image, its two classes and every plane.
        let examples = csv(&out.join("examples.csv"));
        assert_eq!(examples.len(), (3 + wrong.min(3)) * 2 * 20);
        let st = Safetensors::parse(&std::fs::read(&checkpoint).unwrap());
        let (w, bias) = (st.f32s("fc1.weight"), st.f32s("fc1.bias"));
        let mut last_confidence: HashMap<String, f64> = HashMap::new();
        for group in examples.chunks(20) {
            let first = &group[0];
            let (kind, index) = (&first["group"], first["image"].parse::<usize>().unwrap());
            assert_eq!(kind == "correct", first["true"] == first["predicted"], "{first:?}");
            let expected_label = if index % 2 == 0 { "airplane" } else { "ship" };
            assert_eq!(first["true"], expected_label, "image {index}");
            let confidence = num(first, "confidence");
            assert!(confidence <= *last_confidence.get(kind).unwrap_or(&1.0) + 1e-6, "most confident first");
            last_confidence.insert(kind.clone(), confidence);
            let class = usize::from(first["class"] == "ship");
            if first["rank"] == "1" {
                let png = if kind == "correct" { &good } else { &bad };
                assert!(
                    shows_image(png, image(index)),
                    "{model}: {kind} picture does not show image {index}"
                );
            }
            for (p, row) in group.iter().enumerate() {
                assert_eq!(num(row, "plane"), p as f64);
                assert!(num(row, "mean_activation") >= 0.0, "after a ReLU: {row:?}");
            }
            if method.starts_with("CAM") {
                // CAM weights are fc1's weights; the contributions and the bias add up to the logit.
                let total: f64 = group.iter().map(|r| num(r, "contribution")).sum();
                assert!((total + bias[class] as f64 - num(first, "logit")).abs() < 1e-4, "{first:?}");
                for (p, row) in group.iter().enumerate() {
                    assert_eq!(num(row, "weight") as f32, w[class * 20 + p], "{row:?}");
                }
            }
        }

        // planes.csv: one row per plane of relu3.
        let planes = csv(&out.join("planes.csv"));
        assert_eq!(planes.len(), 20);
        for (p, row) in planes.iter().enumerate() {
            assert_eq!(num(row, "plane"), p as f64);
            for key in
                ["mean_activation", "mean_activation_airplane", "mean_activation_ship", "dense_abs_weight"]
            {
                assert!(num(row, key) >= 0.0, "{key}: {row:?}");
            }
            // Half the test images are airplanes: the overall mean is the mean of the two.
            let mean = (num(row, "mean_activation_airplane") + num(row, "mean_activation_ship")) / 2.0;
            assert!((num(row, "mean_activation") - mean).abs() < 1e-6 * (1.0 + mean), "{row:?}");
            assert!((0.0..=1.0).contains(&num(row, "zero_fraction")));
            if method.starts_with("CAM") {
                assert_eq!(num(row, "weight_airplane") as f32, w[p]);
                assert_eq!(num(row, "weight_ship") as f32, w[20 + p]);
                let abs = (w[p].abs() + w[20 + p].abs()) as f64 / 2.0;
                assert!((num(row, "dense_abs_weight") - abs).abs() < 1e-6, "{row:?}");
            }
            for key in ["weight_airplane", "weight_ship", "contribution_airplane", "contribution_ship"] {
                assert!(num(row, key).is_finite(), "{key}: {row:?}");
            }
        }
    }
    std::fs::remove_dir_all(&root).unwrap();
}
