//! `trainer predict`: classify your own pictures with a trained model.
//!
//! Each image (PNG, JPEG, GIF, BMP, TIFF, WebP; a folder stands for the
//! images in it) is decoded with bounded memory, converted to the model's
//! channels (grey, 16-bit and alpha images are converted, and the line says
//! so), resized the way torchvision's `Resize(32)` + `CenterCrop(32)` does
//! (shorter side to the model's size with a bilinear filter, then the
//! centre cut out; an image already of that size is used as is), and
//! normalised exactly as in training (the checkpoint's header holds the
//! mean and std). Only the checkpoint is read, never a data set.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use graph::{argmax, probe, Shape};
use image::{imageops, DynamicImage, ImageDecoder, ImageReader, Limits};

use crate::commands::eval::Checkpoint;
use crate::config::flags::PredictArgs;
use crate::data::augment::fill_batch;
use crate::data::Dataset;
use crate::inspect::camgrid::{self, Row};
use crate::inspect::heatmap::{image_colours, upsample};

/// Largest image side and decoded size accepted: a bounded decode.
const MAX_SIDE: u32 = 16_384;
const MAX_DECODED_BYTES: u64 = 512 << 20;

/// File name endings read when a folder is given.
const EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "gif", "bmp", "tif", "tiff", "webp"];

/// The images named on the command line, folders expanded (sorted, not recursive).
fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("{}: cannot list the folder", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && p.extension()
                            .and_then(|e| e.to_str())
                            .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
                })
                .collect();
            if found.is_empty() {
                bail!("{}: no images in this folder ({})", path.display(), EXTENSIONS.join(", "));
            }
            found.sort();
            out.extend(found);
        } else {
            out.push(path.clone());
        }
    }
    Ok(out)
}

/// Decode `path` with bounded memory; the error names the file.
fn decode(path: &Path) -> Result<DynamicImage> {
    let name = path.display();
    let meta = std::fs::metadata(path).with_context(|| format!("{name}: cannot read the image"))?;
    if !meta.is_file() {
        bail!("{name}: not a regular file");
    }
    let mut reader = ImageReader::open(path)
        .with_context(|| format!("{name}: cannot read the image"))?
        .with_guessed_format()
        .with_context(|| format!("{name}: cannot read the image"))?;
    if reader.format().is_none() {
        bail!("{name}: not an image this program reads (PNG, JPEG, GIF, BMP, TIFF, WebP)");
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    reader.limits(limits);
    let too_large = || {
        anyhow!(
            "{name}: too large to decode (at most {MAX_SIDE} pixels a side, and {} MiB for the decoded picture and \
             its 8-bit RGB copy together)",
            MAX_DECODED_BYTES >> 20
        )
    };
    let failed = |e: image::ImageError| match e {
        image::ImageError::Limits(_) => too_large(),
        e => anyhow!("{name}: cannot decode the image ({})", first_line(&e.to_string())),
    };
    let decoder = reader.into_decoder().map_err(failed)?;
    // The conversion to 8-bit RGB (`prepare`) allocates 3 bytes a pixel
    // beside the decoded picture: the limit bounds both, before decoding.
    let (w, h) = decoder.dimensions();
    let rgb = u64::from(w) * u64::from(h) * 3;
    if decoder.total_bytes().saturating_add(rgb) > MAX_DECODED_BYTES {
        return Err(too_large());
    }
    DynamicImage::from_decoder(decoder).map_err(failed)
}

fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or("");
    line.chars().take(200).collect()
}

/// The image as the model's `C x H x W` bytes, and what was converted.
fn prepare(img: DynamicImage, input: Shape) -> Result<(Vec<u8>, Vec<String>)> {
    let mut notes = Vec::new();
    let color = img.color();
    if color.has_alpha() {
        notes.push("alpha channel ignored".to_string());
    }
    if color.bytes_per_pixel() / color.channel_count() > 1 {
        notes.push(format!(
            "{}-bit samples scaled to 8-bit",
            8 * (color.bytes_per_pixel() / color.channel_count())
        ));
    }
    let grey = !color.has_color();
    let (w, h) = (img.width(), img.height());
    let (tw, th) = (input.w as u32, input.h as u32);
    let rgb = img.to_rgb8();
    let rgb = if (w, h) == (tw, th) {
        rgb
    } else {
        // Shorter side to the model's size, then the centre.
        let scale = f64::max(tw as f64 / w as f64, th as f64 / h as f64);
        let (sw, sh) =
            (((w as f64 * scale).round() as u32).max(tw), ((h as f64 * scale).round() as u32).max(th));
        let resized = imageops::resize(&rgb, sw, sh, imageops::FilterType::Triangle);
        notes.push(format!("{w}x{h} resized to {sw}x{sh}, centre {tw}x{th} kept"));
        imageops::crop_imm(&resized, (sw - tw) / 2, (sh - th) / 2, tw, th).to_image()
    };
    let plane = input.h * input.w;
    let mut chw = vec![0u8; input.c * plane];
    match input.c {
        3 => {
            if grey {
                notes.push("grey converted to RGB".to_string());
            }
            for (i, px) in rgb.pixels().enumerate() {
                for c in 0..3 {
                    chw[c * plane + i] = px.0[c];
                }
            }
        }
        1 => {
            if !grey {
                notes.push("colour converted to grey".to_string());
            }
            let luma = DynamicImage::ImageRgb8(rgb).to_luma8();
            chw.copy_from_slice(luma.as_raw());
        }
        c => bail!("the model takes {c}-channel images; predict reads 1- and 3-channel models"),
    }
    Ok((chw, notes))
}

fn softmax(z: &[f32]) -> Vec<f64> {
    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let e: Vec<f64> = z.iter().map(|&v| (v as f64 - max).exp()).collect();
    let total: f64 = e.iter().sum();
    e.iter().map(|v| v / total).collect()
}

/// A picture that was read: its path, its bytes at the model's shape and
/// what was converted.
struct Picture {
    path: PathBuf,
    chw: Vec<u8>,
    notes: Vec<String>,
}

/// Classify every picture that can be read; each one that cannot is
/// reported on stderr with the reason, and then the command fails.
pub fn run(args: &PredictArgs) -> Result<()> {
    if args.images.is_empty() {
        bail!("name at least one image or folder");
    }
    let ck = Checkpoint::read(&args.checkpoint)?;
    let images = expand(&args.images)?;
    let (pictures, mut errors) = read_all(&images, ck.input);
    let failed = errors.len();
    if pictures.is_empty() && failed == 1 {
        return Err(errors.remove(0));
    }
    for e in &errors {
        eprintln!("warning: skipped {e:#}");
    }
    if pictures.is_empty() {
        bail!("none of the {failed} pictures could be read (each is named above)");
    }
    let ds = Dataset {
        images: pictures.iter().flat_map(|p| p.chw.iter().copied()).collect(),
        labels: vec![0; pictures.len()],
        shape: [ck.input.c, ck.input.h, ck.input.w],
        class_names: ck.classes.clone(),
    };
    let (plan, logits) = classify(&ck, &ds)?;
    if let Some(dir) = &args.cam {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("--cam {}: cannot create the folder", dir.display()))?;
    }
    let k = ck.classes.len();
    let mut cam_names = Vec::new();
    for (i, picture) in pictures.iter().enumerate() {
        let z = &logits[i * k..(i + 1) * k];
        println!("{}", prediction_line(args.json, &ck.classes, picture, z));
        if let Some(dir) = &args.cam {
            let out = dir.join(cam_name(&picture.path, &mut cam_names));
            write_cam(&ck, &plan, &ds, i, z, &picture.path, &out)?;
            if !args.json {
                println!("  wrote {}", out.display());
            }
        }
    }
    if failed > 0 {
        bail!(
            "{failed} of the {} pictures could not be read (each is named above); the others were classified",
            images.len()
        );
    }
    Ok(())
}

/// Every picture of `images` that decodes, at the model's `input` shape,
/// and the error of each one that does not.
fn read_all(images: &[PathBuf], input: Shape) -> (Vec<Picture>, Vec<anyhow::Error>) {
    let (mut pictures, mut errors) = (Vec::with_capacity(images.len()), Vec::new());
    for path in images {
        match decode(path).and_then(|img| prepare(img, input).with_context(|| path.display().to_string())) {
            Ok((chw, notes)) => pictures.push(Picture { path: path.clone(), chw, notes }),
            Err(e) => errors.push(e),
        }
    }
    (pictures, errors)
}

/// The model's plan and the logits of every image of `ds`, in batches.
fn classify(ck: &Checkpoint, ds: &Dataset) -> Result<(graph::Plan, Vec<f32>)> {
    let batch = ck.batch().min(ds.len());
    let mut plan = ck.plan(batch)?;
    let (k, len) = (ck.classes.len(), ds.image_len());
    let mut logits = vec![0.0f32; ds.len() * k];
    let mut x = vec![0.0f32; batch * len];
    let all: Vec<usize> = (0..ds.len()).collect();
    for (idx, out) in all.chunks(batch).zip(logits.chunks_mut(batch * k)) {
        let xs = &mut x[..idx.len() * len];
        // The same normalisation code as training and `eval`.
        fill_batch(ds, idx, &ck.norm, None, 0, 0, xs);
        plan.predict(xs, out);
    }
    Ok((plan, logits))
}

/// One picture's line: the class, its probability and every class's, and
/// what was converted; or the same as a JSON object.
fn prediction_line(json: bool, classes: &[String], picture: &Picture, z: &[f32]) -> String {
    let (p, best) = (softmax(z), argmax(z));
    if json {
        let probs: serde_json::Map<String, serde_json::Value> =
            classes.iter().zip(&p).map(|(c, &v)| (c.clone(), v.into())).collect();
        let mut line = serde_json::json!({
            "image": picture.path.display().to_string(),
            "class": classes[best],
            "probabilities": probs,
            "notes": picture.notes,
        });
        // A name that is not UTF-8 shows with U+FFFD in "image": its bytes
        // too, so the line can be mapped back to the file.
        #[cfg(unix)]
        if picture.path.to_str().is_none() {
            use std::os::unix::ffi::OsStrExt;
            line["image_bytes"] = picture.path.as_os_str().as_bytes().into();
        }
        return line.to_string();
    }
    let mut line = format!("{}: {} {:.4}  (", picture.path.display(), classes[best], p[best]);
    for (j, (c, v)) in classes.iter().zip(&p).enumerate() {
        let _ = write!(line, "{}{c} {v:.4}", if j > 0 { ", " } else { "" });
    }
    line.push(')');
    if !picture.notes.is_empty() {
        let _ = write!(line, "  [{}]", picture.notes.join("; "));
    }
    line
}

/// The map's file name for `path`: its file name (extension kept, so
/// `x.png` and `x.jpg` differ) plus `.cam.png`, numbered when an earlier
/// picture of this run already took it (`x.png-2.cam.png`).
fn cam_name(path: &Path, taken: &mut Vec<String>) -> String {
    let base = path.file_name().map_or("image".into(), |s| s.to_string_lossy().into_owned());
    let name = (1..)
        .map(|n| if n == 1 { format!("{base}.cam.png") } else { format!("{base}-{n}.cam.png") })
        .find(|name| !taken.contains(name))
        .expect("some name is free");
    taken.push(name.clone());
    name
}

/// The image with the map of its predicted class (CAM for a GAP head,
/// Grad-CAM otherwise) and of the runner-up, drawn as `explain` draws a
/// row, written to `out`.
fn write_cam(
    ck: &Checkpoint,
    plan: &graph::Plan,
    ds: &Dataset,
    i: usize,
    z: &[f32],
    path: &Path,
    out: &Path,
) -> Result<()> {
    let head = probe::head(plan).map_err(|e| anyhow!("--cam: {}: {e}", ck.file))?;
    let mut norm = vec![0.0f32; 2 * ds.image_len()];
    fill_batch(ds, &[i, i], &ck.norm, None, 0, 0, &mut norm);
    let pred = argmax(z);
    let other = (0..z.len()).filter(|&c| c != pred).max_by(|&a, &b| z[a].total_cmp(&z[b])).unwrap_or(pred);
    let trace = probe::forward(plan, &norm);
    let maps = probe::class_maps(plan, &head, &trace, &[pred, other]);
    let [c, h, w] = ds.shape;
    let shape = plan.nodes()[head.feature].out_shape;
    let centre = probe::receptive_centre(plan, head.feature);
    let len = head.plane_len;
    let up = |j: usize| upsample(&maps.maps[j * len..(j + 1) * len], shape.h, shape.w, h, w, centre);
    let p = softmax(z);
    let margin: Vec<f32> =
        (0..head.planes).map(|q| maps.contributions[q] - maps.contributions[head.planes + q]).collect();
    let mut order: Vec<usize> = (0..head.planes).collect();
    order.sort_by(|&a, &b| margin[b].abs().total_cmp(&margin[a].abs()).then(a.cmp(&b)));
    let acts = trace.output(head.feature);
    let name = |j: usize| ck.classes[j].as_str();
    let row = Row {
        image: image_colours(ds.image(i), c),
        captions: [
            path.file_name().map_or(String::new(), |n| n.to_string_lossy().chars().take(24).collect()),
            format!("pred {} {:.3}", name(pred), p[pred]),
            format!("2nd {}", name(other)),
        ],
        maps: [up(0), up(1)],
        bars_caption: format!("planes: share of logit {} - {}", name(pred), name(other)),
        bars: order
            .iter()
            .take(camgrid::TOP_PLANES)
            .map(|&q| {
                let mean = acts[q * len..(q + 1) * len].iter().sum::<f32>() / len as f32;
                (format!("p{q}"), margin[q], mean)
            })
            .collect(),
    };
    let method = if head.cam { "CAM" } else { "Grad-CAM" };
    let title = format!("{}: {method} of {}", ck.spec.name, plan.nodes()[head.feature].name);
    let canvas = camgrid::render(&title, "= the row's max", &[row], h, w)?;
    crate::fsops::write_atomic(out, &canvas.to_png()?)
        .with_context(|| format!("{}: cannot write", out.display()))
}
