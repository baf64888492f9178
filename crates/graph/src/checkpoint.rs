//! Parameters (or optimizer state) to and from safetensors.
//!
//! Tensor names and shapes follow PyTorch (`conv1.weight [20, 3, 3, 3]`,
//! `fc1.weight [120, 1280]`), so `safetensors.torch.load_file` opens a
//! checkpoint directly. The header's metadata carries the model spec (JSON)
//! and input shape, so a checkpoint alone is enough to rebuild its `Plan`.
//!
//! All of our metadata sits under one header key, `gapnet`, as a JSON
//! object with sorted keys: safetensors stores its metadata map in hash
//! order, and one key keeps the file bytes identical for identical state.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::plan::{Plan, Shape, Tensor};
use crate::spec::ModelSpec;

/// The header key holding our metadata, and the entries this module adds.
pub const META_KEY: &str = "gapnet";
pub const META_SPEC: &str = "spec";
pub const META_INPUT: &str = "input";

/// The suffix of a batch norm's step count (an i64 scalar, as PyTorch's).
const TRACKED: &str = "num_batches_tracked";

/// Metadata stored with a checkpoint: sorted, so files are reproducible.
pub type Metadata = BTreeMap<String, String>;

/// A flat arena of the plan, as stored in a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arena {
    /// Stored under the tensor names themselves (`conv1.weight`).
    Params,
    /// SGD momentum buffers, stored as `velocity.conv1.weight`, ...
    Velocity,
}

impl Arena {
    fn prefix(self) -> &'static str {
        match self {
            Arena::Params => "",
            Arena::Velocity => "velocity.",
        }
    }
}

/// A checkpoint that cannot be used, with the reason in one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointError(pub String);

impl fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CheckpointError {}

fn fail<T>(message: String) -> Result<T, CheckpointError> {
    Err(CheckpointError(message))
}

impl Plan {
    fn arena(&self, arena: Arena) -> &[f32] {
        match arena {
            Arena::Params => &self.params,
            Arena::Velocity => &self.velocity,
        }
    }

    /// Serialise some arenas as one safetensors file. `metadata` is stored
    /// in the header beside the model spec and input shape. A file of
    /// `[Arena::Params]` alone is what PyTorch loads as a state dict.
    pub fn to_safetensors(&self, arenas: &[Arena], mut metadata: Metadata) -> Vec<u8> {
        metadata.insert(META_SPEC.into(), serde_json::to_string(&self.spec).expect("spec serialises"));
        let input = [self.input.c, self.input.h, self.input.w];
        metadata.insert(META_INPUT.into(), serde_json::to_string(&input).expect("shape serialises"));
        let tracked: Vec<(String, [u8; 8])> =
            self.batches_tracked().into_iter().map(|(n, t)| (n, t.to_le_bytes())).collect();
        let buffers = self.buffers();
        let mut views = Vec::new();
        for &arena in arenas {
            let data = self.arena(arena);
            for t in &self.tensors {
                let bytes: &[u8] = bytemuck::cast_slice(&data[t.range.clone()]);
                let view = TensorView::new(Dtype::F32, t.shape.clone(), bytes).expect("sizes agree");
                views.push((format!("{}{}", arena.prefix(), t.name), view));
            }
            if arena != Arena::Params {
                continue;
            }
            // A batch norm's buffers belong to the state dict, as PyTorch's do.
            for t in &buffers {
                let bytes: &[u8] = bytemuck::cast_slice(&self.running[t.range.clone()]);
                views.push((
                    t.name.clone(),
                    TensorView::new(Dtype::F32, t.shape.clone(), bytes).expect("sizes"),
                ));
            }
            for (node, bytes) in &tracked {
                let view = TensorView::new(Dtype::I64, vec![], bytes).expect("one i64");
                views.push((format!("{node}.{TRACKED}"), view));
            }
        }
        let header = HashMap::from([(
            META_KEY.to_string(),
            serde_json::to_string(&metadata).expect("strings serialise"),
        )]);
        safetensors::serialize(views, Some(header)).expect("well-formed tensors serialise")
    }

    /// Fill the given arenas from safetensors bytes (`source` names the
    /// file in errors). Every tensor they need must be present with the
    /// model's shape and hold only finite f32 values, and the file may hold
    /// nothing else; nothing is changed on error. Returns the metadata.
    pub fn load_safetensors(
        &mut self,
        arenas: &[Arena],
        bytes: &[u8],
        source: &str,
    ) -> Result<Metadata, CheckpointError> {
        let (file, metadata) = parse(bytes, source)?;
        let mut loaded = Vec::with_capacity(arenas.len());
        for &arena in arenas {
            let mut values = vec![0.0f32; self.params.len()];
            for t in &self.tensors {
                let name = format!("{}{}", arena.prefix(), t.name);
                read_f32(&file, &name, t, &self.spec.name, source, &mut values[t.range.clone()])?;
            }
            loaded.push((arena, values));
        }
        let with_buffers = arenas.contains(&Arena::Params);
        let (buffers, mut running, mut tracked) =
            (self.buffers(), self.running.clone(), self.batches_tracked());
        if with_buffers {
            for t in &buffers {
                read_f32(&file, &t.name, t, &self.spec.name, source, &mut running[t.range.clone()])?;
            }
            for (node, steps) in &mut tracked {
                *steps = read_i64(&file, &format!("{node}.{TRACKED}"), source)?;
            }
        }
        let expected =
            self.tensors.len() * arenas.len() + if with_buffers { buffers.len() + tracked.len() } else { 0 };
        if file.len() != expected {
            let known = |n: &str| {
                arenas.iter().any(|a| self.tensors.iter().any(|t| n == format!("{}{}", a.prefix(), t.name)))
                    || (with_buffers && buffers.iter().any(|t| n == t.name))
                    || (with_buffers && tracked.iter().any(|(node, _)| n == format!("{node}.{TRACKED}")))
            };
            let extra = sorted(file.names().into_iter().filter(|n| !known(n)));
            return fail(format!(
                "{source}: unexpected tensors for model {}: {}",
                self.spec.name,
                crate::brief::list(extra, crate::brief::LIST_ITEMS)
            ));
        }
        for (arena, values) in loaded {
            match arena {
                Arena::Params => self.params.copy_from_slice(&values),
                Arena::Velocity => self.velocity.copy_from_slice(&values),
            }
        }
        if with_buffers {
            self.running = running;
            for (node, steps) in tracked {
                self.set_batches_tracked(&node, steps).expect("a batch norm of this plan");
            }
        }
        Ok(metadata)
    }
}

/// Tensor `name` of `file` into `dst`: present, F32, of `t`'s shape, finite.
fn read_f32(
    file: &SafeTensors,
    name: &str,
    t: &Tensor,
    model: &str,
    source: &str,
    dst: &mut [f32],
) -> Result<(), CheckpointError> {
    let view = present(file, name, source)?;
    if view.dtype() != Dtype::F32 {
        return fail(format!("{source}: tensor {name} is {:?}, expected F32", view.dtype()));
    }
    if view.shape() != t.shape.as_slice() {
        return fail(format!(
            "{source}: tensor {name} has shape {} but model {model} expects {:?}",
            crate::brief::text(&format!("{:?}", view.shape()), 80),
            t.shape
        ));
    }
    for (i, (v, b)) in dst.iter_mut().zip(view.data().chunks_exact(4)).enumerate() {
        *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if !v.is_finite() {
            return fail(format!("{source}: tensor {name} holds {} at element {i}", *v));
        }
    }
    Ok(())
}

/// The i64 scalar `name` of `file` (a batch norm's step count), not negative.
fn read_i64(file: &SafeTensors, name: &str, source: &str) -> Result<i64, CheckpointError> {
    let view = present(file, name, source)?;
    if view.dtype() != Dtype::I64 || !view.shape().iter().all(|&d| d == 1) {
        return fail(format!(
            "{source}: tensor {name} is {:?} of shape {}, expected a scalar I64",
            view.dtype(),
            crate::brief::text(&format!("{:?}", view.shape()), 80)
        ));
    }
    let b = view.data();
    let steps = i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
    if steps < 0 {
        return fail(format!("{source}: tensor {name} holds {steps}, a negative step count"));
    }
    Ok(steps)
}

fn present<'a>(file: &'a SafeTensors, name: &str, source: &str) -> Result<TensorView<'a>, CheckpointError> {
    file.tensor(name).or_else(|_| {
        let found = crate::brief::list(sorted(file.names()), crate::brief::LIST_ITEMS);
        fail(format!("{source}: tensor {name} is missing (the file holds: {found})"))
    })
}

/// Names in a stable order (safetensors lists them in hash order), so the
/// first few shown of a long list are the same every time.
fn sorted<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut names: Vec<&str> = names.into_iter().collect();
    names.sort_unstable();
    names
}

/// A parser's message, which may quote a value from the file, cut short.
fn short(e: impl fmt::Display) -> String {
    crate::brief::text(&e.to_string(), 200)
}

fn parse<'a>(bytes: &'a [u8], source: &str) -> Result<(SafeTensors<'a>, Metadata), CheckpointError> {
    let file = SafeTensors::deserialize(bytes)
        .or_else(|e| fail(format!("{source}: not a readable safetensors file ({})", short(e))))?;
    let (_, header) = SafeTensors::read_metadata(bytes)
        .or_else(|e| fail(format!("{source}: not a readable safetensors file ({})", short(e))))?;
    let metadata = match header.metadata().as_ref().and_then(|m| m.get(META_KEY)) {
        Some(json) => serde_json::from_str(json).or_else(|e| {
            fail(format!("{source}: unreadable {META_KEY:?} metadata in the header ({})", short(e)))
        })?,
        None => Metadata::new(),
    };
    Ok((file, metadata))
}

/// The model spec, input shape and metadata stored in a checkpoint, enough
/// to build the `Plan` it belongs to.
pub fn read_model(bytes: &[u8], source: &str) -> Result<(ModelSpec, Shape, Metadata), CheckpointError> {
    let (_, metadata) = parse(bytes, source)?;
    let Some(spec) = metadata.get(META_SPEC) else {
        return fail(format!("{source}: no model spec in the header (not written by gapnet?)"));
    };
    let spec: ModelSpec = serde_json::from_str(spec)
        .or_else(|e| fail(format!("{source}: unreadable model spec in the header: {}", short(e))))?;
    let input = metadata.get(META_INPUT).map(|s| serde_json::from_str::<[usize; 3]>(s));
    let Some(Ok([c, h, w])) = input else {
        return fail(format!("{source}: no readable input shape in the header"));
    };
    Ok((spec, Shape::new(c, h, w), metadata))
}

/// Write `bytes` to `path` so that a crash at any moment leaves either the
/// old file or the new one, never a torn one: write a temporary file in the
/// same folder, fsync it, rename it over `path`, fsync the folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    // The rename would replace a device or FIFO with a regular file.
    crate::bounded::check_output(path)?;
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        // Make the rename itself durable (best effort: not every platform
        // can open a directory).
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
