//! `trainer prune` end to end: a pruned checkpoint that `eval` reads with
//! the accuracy prune printed, weight surgery that touches nothing but the
//! pruned planes' dense columns, the scan table, and one-line errors for
//! bad input to `prune` and `explain`.

mod common;

use std::path::Path;

use common::{make_data, one_line_error, run, s, tmp, train_briefly, trainer, Safetensors};

/// Two epochs on the generated data. The FC head diverges there at its
/// default learning rate (0.01 with batches of 10), so it gets 0.001.
fn train(model: &str, data: &Path, out: &Path) {
    train_briefly(model, data, out, Some(if model == "seed-fc" { "0.001" } else { "0.05" }));
}

fn stdout(args: &[&str]) -> String {
    String::from_utf8_lossy(&trainer(args).stdout).into_owned()
}

/// `(accuracy text, correct count)` of `... <marker> 0.9100 (91/100 ...`.
fn accuracy_after(text: &str, marker: &str) -> (String, usize) {
    let rest = text.split(marker).nth(1).unwrap_or_else(|| panic!("no {marker:?} in\n{text}"));
    accuracy(rest)
}

/// `(accuracy text, correct count)` of `0.9100 (91/100 ...`.
fn accuracy(rest: &str) -> (String, usize) {
    let acc = rest.split_whitespace().next().unwrap().to_string();
    let correct = rest.split('(').nth(1).unwrap().split('/').next().unwrap().parse().unwrap();
    (acc, correct)
}

#[test]
fn pruned_checkpoint_is_read_by_eval_with_the_accuracy_prune_printed() {
    let root = tmp("prune");
    let data = root.join("data");
    make_data(&data, 300, 100);
    for (model, columns) in [("seed-gap", 1), ("seed-fc", 64)] {
        let run_dir = root.join(model);
        train(model, &data, &run_dir);
        let original = run_dir.join("model.safetensors");
        let pruned = root.join(format!("{model}-pruned.safetensors"));
        let printed = stdout(&[
            "prune",
            "--checkpoint",
            s(&original),
            "--planes",
            "3, 0,3",
            "--data",
            s(&data),
            "--out",
            s(&pruned),
        ]);
        assert!(printed.contains("pruned planes 0, 3 of relu3 (their fc1 columns set to zero)"), "{printed}");
        let (_, before) = accuracy_after(&printed, "accuracy before ");
        let (after_acc, after) = accuracy_after(&printed, ", after ");
        let eval = stdout(&["eval", "--checkpoint", s(&pruned), "--data", s(&data)]);
        assert_eq!(accuracy_after(&eval, "test accuracy "), (after_acc, after), "{printed}\n{eval}");

        // The changed predictions add up to the change in accuracy.
        let changes: Vec<&str> = printed.lines().filter(|l| l.trim_start().starts_with("image ")).collect();
        let fixed = changes.iter().filter(|l| l.ends_with(", fixed)")).count();
        let broken = changes.iter().filter(|l| l.ends_with(", broken)")).count();
        let noun = if changes.len() == 1 { "prediction" } else { "predictions" };
        let said = format!("{} {noun} changed ({fixed} fixed, {broken} broken)", changes.len());
        assert!(printed.contains(&said), "{said:?} not in {printed}");
        assert_eq!(after as isize - before as isize, fixed as isize - broken as isize, "{printed}");

        // Surgery: fc1's columns of planes 0 and 3 are zero, every other number is the same bits.
        let (a, b) = (
            Safetensors::parse(&std::fs::read(&original).unwrap()),
            Safetensors::parse(&std::fs::read(&pruned).unwrap()),
        );
        let names: Vec<&String> =
            a.header.as_object().unwrap().keys().filter(|k| *k != "__metadata__").collect();
        for name in names {
            let (x, y) = (a.f32s(name), b.f32s(name));
            assert_eq!(x.len(), y.len());
            for (i, (u, v)) in x.iter().zip(&y).enumerate() {
                let column = i % (20 * columns);
                if name == "fc1.weight" && (column < columns || (3 * columns..4 * columns).contains(&column))
                {
                    assert_eq!(*v, 0.0, "{name}[{i}]");
                } else {
                    assert_eq!(u.to_bits(), v.to_bits(), "{name}[{i}] changed");
                }
            }
        }
        assert_eq!(b.gapnet()["pruned_planes"], "[0,3]");

        // Pruning a plane that is already gone changes nothing, and the record keeps both.
        let again = root.join(format!("{model}-again.safetensors"));
        let printed = stdout(&[
            "prune",
            "--checkpoint",
            s(&pruned),
            "--planes",
            "3",
            "--data",
            s(&data),
            "--out",
            s(&again),
        ]);
        assert!(printed.contains("0 predictions changed (0 fixed, 0 broken)"), "{printed}");
        assert_eq!(Safetensors::parse(&std::fs::read(&again).unwrap()).gapnet()["pruned_planes"], "[0,3]");

        // The scan: every plane once, best first; its row for plane 3 is `prune --planes 3`.
        let scan = stdout(&["prune", "--checkpoint", s(&original), "--scan", "--data", s(&data)]);
        let rows: Vec<Vec<&str>> = scan
            .lines()
            .filter(|l| l.starts_with("| ") && l[2..].starts_with(|c: char| c.is_ascii_digit()))
            .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
            .collect();
        assert_eq!(rows.len(), 20, "{scan}");
        let mut planes: Vec<usize> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
        let correct: Vec<usize> = rows.iter().map(|r| accuracy(r[1]).1).collect();
        assert!(correct.windows(2).all(|w| w[0] >= w[1]), "sorted by accuracy:\n{scan}");
        planes.sort_unstable();
        assert_eq!(planes, (0..20).collect::<Vec<_>>());
        let row3 = rows.iter().find(|r| r[0] == "3").unwrap();
        let single = stdout(&["prune", "--checkpoint", s(&original), "--planes", "3", "--data", s(&data)]);
        assert_eq!(accuracy(row3[1]).0, accuracy_after(&single, ", after ").0, "{scan}\n{single}");
    }
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn prune_and_explain_refuse_bad_input_in_one_line() {
    let root = tmp("prune-bad");
    let data = root.join("data");
    make_data(&data, 40, 10);
    let gap = root.join("gap");
    train("seed-gap", &data, &gap);
    // A model whose head reads the image itself: there are no planes to explain or prune.
    let flat = root.join("flat.toml");
    std::fs::write(
        &flat,
        "name = \"flat\"\n[[layers]]\ntype = \"flatten\"\n[[layers]]\ntype = \"dense\"\nunits = 2\n",
    )
    .unwrap();
    let flat_run = root.join("flat");
    train(s(&flat), &data, &flat_run);

    let model = gap.join("model.safetensors");
    let flat_model = flat_run.join("model.safetensors");
    let missing = root.join("nope.safetensors");
    let notes = root.join("notes.safetensors");
    std::fs::write(&notes, b"not a checkpoint").unwrap();
    let a_file = root.join("a-file");
    std::fs::write(&a_file, b"").unwrap();
    let no_dir = root.join("no/such/dir/pruned.safetensors");
    let prune = |file: &Path, extra: &[&str]| {
        let mut args = vec!["prune", "--checkpoint", s(file), "--data", s(&data)];
        args.extend(extra);
        run(&args)
    };
    let ex = root.join("ex");
    let explain = |file: &Path, extra: &[&str]| {
        let mut args = vec!["explain", "--checkpoint", s(file), "--data", s(&data), "--out", s(&ex)];
        args.extend(extra);
        run(&args)
    };
    let (m, n) = (s(&missing).to_string(), s(&notes).to_string());
    let flat_s = s(&flat_model).to_string();
    let cases = [
        ("empty list", prune(&model, &["--planes", ""]), vec!["--planes \"\"", "name at least one plane"]),
        (
            "only commas",
            prune(&model, &["--planes", ",,"]),
            vec!["--planes \",,\"", "name at least one plane"],
        ),
        (
            "not a number",
            prune(&model, &["--planes", "3,x"]),
            vec!["--planes 3,x", "\"x\" is not a plane number"],
        ),
        (
            "out of range",
            prune(&model, &["--planes", "19,20"]),
            vec!["--planes 19,20", "plane 20 does not exist", "model seed-gap has planes 0..=19", "relu3"],
        ),
        ("negative", prune(&model, &["--planes=-1"]), vec!["--planes -1", "\"-1\" is not a plane number"]),
        (
            "missing checkpoint",
            prune(&missing, &["--planes", "1"]),
            vec![m.as_str(), "cannot read the checkpoint"],
        ),
        ("not a checkpoint", prune(&notes, &["--scan"]), vec![n.as_str(), "not a readable safetensors file"]),
        (
            "unwritable --out",
            prune(&model, &["--planes", "1", "--out", s(&no_dir)]),
            vec!["--out", "cannot write the pruned checkpoint"],
        ),
        (
            "no planes to prune",
            prune(&flat_model, &["--scan"]),
            vec![flat_s.as_str(), "model flat: no layer with planes before its head"],
        ),
        (
            "explain: missing checkpoint",
            explain(&missing, &[]),
            vec![m.as_str(), "cannot read the checkpoint"],
        ),
        (
            "explain: not a checkpoint",
            explain(&notes, &[]),
            vec![n.as_str(), "not a readable safetensors file"],
        ),
        ("explain: --top 0", explain(&model, &["--top", "0"]), vec!["--top 0"]),
        (
            "explain: no planes",
            explain(&flat_model, &[]),
            vec![flat_s.as_str(), "no layer with planes before its head"],
        ),
        (
            "explain: --out is a file",
            run(&["explain", "--checkpoint", s(&model), "--data", s(&data), "--out", s(&a_file)]),
            vec!["--out", "cannot create the folder"],
        ),
        ("explain: --limit-test 0", explain(&model, &["--limit-test", "0"]), vec!["--limit-test 0"]),
    ];
    for (what, out, needles) in &cases {
        one_line_error(out, needles, what);
    }
    // Neither or both of --planes and --scan: clap's usage error (exit 2).
    for extra in [&[][..], &["--planes", "1", "--scan"][..], &["--scan", "--out", "x.safetensors"][..]] {
        let out = prune(&model, extra);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    std::fs::remove_dir_all(&root).unwrap();
}
