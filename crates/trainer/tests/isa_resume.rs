//! A run records the kernels it trains with, and `--resume` continues with
//! them (bit for bit) unless `GAPNET_ISA` says otherwise, saying so.

mod common;

use std::path::Path;

use common::{command, extendable_run, make_data, text, tmp};

fn train(data: &Path, out: &Path, epochs: &str, isa: Option<&str>, resume: bool) -> String {
    let args = extendable_run("seed-gap", data, out, epochs, resume);
    let mut cmd = command(&args);
    cmd.env_remove("GAPNET_ISA").env_remove("GAPNET_PORTABLE");
    if let Some(isa) = isa {
        cmd.env("GAPNET_ISA", isa);
    }
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "trainer {args:?}:\n{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn recorded(out: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(out.join("config.json")).unwrap();
    serde_json::from_str::<serde_json::Value>(&text).unwrap()["isa"].clone()
}

#[test]
fn resume_keeps_the_recorded_kernels_and_says_when_it_cannot() {
    let dir = tmp("isa-resume");
    let data = dir.join("data");
    make_data(&data, 40, 20);
    let (whole, split) = (dir.join("whole"), dir.join("split"));
    // The portable kernels are never the default where a SIMD ISA exists,
    // so resuming without GAPNET_ISA must take them from config.json.
    train(&data, &whole, "2", Some("portable"), false);
    train(&data, &split, "1", Some("portable"), false);
    assert_eq!(recorded(&split), "portable");
    let stdout = train(&data, &split, "2", None, true);
    assert!(
        !stdout.contains("kernels;") && !stdout.contains("not bit for bit"),
        "an unexpected note:\n{stdout}"
    );
    assert!(stdout.contains("portable kernels"), "the engine line should name the run's kernels:\n{stdout}");
    let model = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert!(
        model(&whole) == model(&split),
        "resumed under the recorded kernels, the model must equal the uninterrupted run's"
    );

    // A run from before the kernels were recorded: the trainer says it
    // cannot know, and how to choose.
    let old = dir.join("old");
    train(&data, &old, "1", None, false);
    let path = old.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config.as_object_mut().unwrap().remove("isa");
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    let stdout = train(&data, &old, "2", None, true);
    assert!(stdout.contains("does not record which kernels") && stdout.contains("GAPNET_ISA"), "{stdout}");
    assert!(recorded(&old).is_string(), "the resumed run records its kernels from now on");

    // GAPNET_ISA differing from the recorded kernels: a note, then the chosen ones.
    let best = graph::Isa::best();
    if best != graph::Isa::Portable {
        let stdout = train(&data, &split, "3", Some(best.name()), true);
        assert!(
            stdout.contains("was trained with the portable kernels") && stdout.contains("not bit for bit"),
            "{stdout}"
        );
        assert_eq!(recorded(&split), best.name());
    } else {
        eprintln!("this CPU runs only the portable kernels: the change-of-kernels case is not reachable");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
