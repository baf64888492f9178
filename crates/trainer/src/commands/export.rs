//! `trainer export`: a checkpoint as an ONNX file that other runtimes run
//! (the graph itself is built in `crate::export`). Reads only the
//! checkpoint, never a data set.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use crate::commands::eval::Checkpoint;
use crate::config::flags::ExportArgs;
use crate::export::{self, Source, INPUT, OPSET, OUTPUT};

/// `--out`, else the checkpoint's path ending in `.onnx` (`model.onnx`
/// beside `model.safetensors`).
fn out_path(args: &ExportArgs) -> PathBuf {
    args.out.clone().unwrap_or_else(|| args.checkpoint.with_extension("onnx"))
}

/// Refuse an `--out` that is a folder, a device, in no folder or the
/// checkpoint itself, before any work: the rename that writes it would
/// replace a device with a regular file, and the checkpoint with its export.
fn check_out(out: &Path, checkpoint: &Path) -> Result<()> {
    graph::bounded::check_output(out).map_err(|e| anyhow!("--out {}: {e}", out.display()))?;
    let folder = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !folder.is_dir() {
        bail!("--out {}: the folder {} does not exist", out.display(), folder.display());
    }
    if let (Ok(a), Ok(b)) = (out.canonicalize(), checkpoint.canonicalize()) {
        if a == b {
            bail!("--out {}: this is the checkpoint being exported; name another file", out.display());
        }
    }
    Ok(())
}

/// A file's size for the summary line, as `ls -sh` would round it.
fn kib(bytes: usize) -> String {
    let k = bytes as f64 / 1024.0;
    if k < 1024.0 {
        format!("{k:.1} KiB")
    } else {
        format!("{:.1} MiB", k / 1024.0)
    }
}

pub fn run(args: &ExportArgs) -> Result<()> {
    let out = out_path(args);
    check_out(&out, &args.checkpoint)?;
    let ck = Checkpoint::read(&args.checkpoint)?;
    // One image at a time: the plan only holds the parameters here.
    let plan = ck.plan(1)?;
    let src = Source { plan: &plan, classes: &ck.classes, norm: &ck.norm, meta: &ck.meta };
    let bytes = export::to_onnx(&src).with_context(|| format!("{}: cannot export the model", ck.file))?;
    crate::fsops::write_atomic(&out, &bytes)
        .with_context(|| format!("--out {}: cannot write the ONNX file", out.display()))?;
    let input = plan.input_shape();
    println!(
        "wrote {} ({}, {} parameters, opset {OPSET}, {}): input `{INPUT}` float32 N x {} x {} x {}, pixel values / 255; \
         output `{OUTPUT}` N x {} ({})",
        out.display(),
        plan.spec().name,
        plan.params().len(),
        kib(bytes.len()),
        input.c,
        input.h,
        input.w,
        ck.classes.len(),
        ck.classes.join(", ")
    );
    Ok(())
}
