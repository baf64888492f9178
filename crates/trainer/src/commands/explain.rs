//! `trainer explain`: which planes of the last convolution made the model's
//! decisions. Class activation maps (CAM) for a global-average-pooling head,
//! Grad-CAM otherwise (see `graph::probe::class_maps`), for the most
//! confidently misclassified and correctly classified test images, and
//! per-plane statistics over the whole test split.
//!
//! Files, in `--out`: `misclassified.png` and `correct.png` (one row per
//! image: the image, the map of the predicted class, the map of the true
//! class, or of the runner-up for a correct image, and bars for the planes
//! that decided between the two), `examples.csv` (every number behind those
//! rows) and `planes.csv` (per plane, over all test images).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use graph::{argmax, probe, Head};
use rayon::prelude::*;

use crate::commands::eval::{self, Loaded};
use crate::config::flags::ExplainArgs;
use crate::inspect::camgrid::{self, Row, TOP_PLANES};
use crate::inspect::heatmap::{image_colours, upsample};

/// Test images run through the probe at once.
const CHUNK: usize = 100;

/// Sums over the test split, per plane (see `planes.csv` in [`write_planes`]).
#[derive(Clone, Default)]
struct Sums {
    /// `[k, planes]`: mean activation of each plane, summed over the images of each true class.
    act: Vec<f64>,
    /// `[k]`: images per true class.
    count: Vec<usize>,
    /// `[planes]`: images on which the plane is zero everywhere.
    zero: Vec<usize>,
    /// `[k, planes]`: per class of logit, the plane's weight and contribution, summed over all images.
    weight: Vec<f64>,
    contribution: Vec<f64>,
}

impl Sums {
    fn new(k: usize, planes: usize) -> Sums {
        Sums {
            act: vec![0.0; k * planes],
            count: vec![0; k],
            zero: vec![0; planes],
            weight: vec![0.0; k * planes],
            contribution: vec![0.0; k * planes],
        }
    }

    fn add(mut self, other: &Sums) -> Sums {
        let add = |a: &mut [f64], b: &[f64]| a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        add(&mut self.act, &other.act);
        add(&mut self.weight, &other.weight);
        add(&mut self.contribution, &other.contribution);
        self.count.iter_mut().zip(&other.count).for_each(|(x, y)| *x += y);
        self.zero.iter_mut().zip(&other.zero).for_each(|(x, y)| *x += y);
        self
    }
}

/// Logits and plane sums of test images `idx`.
fn analyse(loaded: &Loaded, head: &Head, idx: &[usize]) -> (Vec<f32>, Sums) {
    let (plan, k, planes, len) = (&loaded.plan, loaded.classes.len(), head.planes, head.plane_len);
    let trace = probe::forward(plan, &loaded.inputs(idx));
    let mut sums = Sums::new(k, planes);
    for (&i, acts) in idx.iter().zip(trace.output(head.feature).chunks_exact(planes * len)) {
        let y = loaded.test.labels[i] as usize;
        sums.count[y] += 1;
        for (p, plane) in acts.chunks_exact(len).enumerate() {
            sums.act[y * planes + p] += plane.iter().sum::<f32>() as f64 / len as f64;
            sums.zero[p] += usize::from(plane.iter().all(|&v| v == 0.0));
        }
    }
    for c in 0..k {
        let maps = probe::class_maps(plan, head, &trace, &vec![c; idx.len()]);
        for (image_w, image_c) in
            maps.weights.chunks_exact(planes).zip(maps.contributions.chunks_exact(planes))
        {
            for p in 0..planes {
                sums.weight[c * planes + p] += image_w[p] as f64;
                sums.contribution[c * planes + p] += image_c[p] as f64;
            }
        }
    }
    (trace.logits().to_vec(), sums)
}

/// One explained test image.
struct Example {
    group: &'static str,
    rank: usize,
    index: usize,
    truth: usize,
    /// The predicted class, then the true class (misclassified) or the runner-up (correct).
    classes: [usize; 2],
    confidence: f32,
    logits: [f32; 2],
    /// Per class: the map at the image's size, per plane weight and contribution.
    maps: [Vec<f32>; 2],
    weights: [Vec<f32>; 2],
    contributions: [Vec<f32>; 2],
    /// Per plane: its mean activation on this image.
    mean_act: Vec<f32>,
}

fn softmax(z: &[f32]) -> Vec<f32> {
    let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = z.iter().map(|v| (v - m).exp()).collect();
    let total: f32 = e.iter().sum();
    e.iter().map(|v| v / total).collect()
}

fn explain_one(
    loaded: &Loaded,
    head: &Head,
    group: &'static str,
    rank: usize,
    index: usize,
    logits: &[f32],
) -> Example {
    let (plan, len) = (&loaded.plan, head.plane_len);
    let truth = loaded.test.labels[index] as usize;
    let pred = argmax(logits);
    let other = if pred != truth {
        truth
    } else {
        // The runner-up: the class the image was least far from.
        (0..logits.len())
            .filter(|&c| c != pred)
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
            .unwrap_or(pred)
    };
    // The same image twice, one class each.
    let trace = probe::forward(plan, &loaded.inputs(&[index, index]));
    let maps = probe::class_maps(plan, head, &trace, &[pred, other]);
    let [_, h, w] = loaded.test.shape;
    let shape = plan.nodes()[head.feature].out_shape;
    let centre = probe::receptive_centre(plan, head.feature);
    let part = |v: &[f32], i: usize, n: usize| v[i * n..(i + 1) * n].to_vec();
    let acts = &trace.output(head.feature)[..head.planes * len];
    Example {
        group,
        rank,
        index,
        truth,
        classes: [pred, other],
        confidence: softmax(logits)[pred],
        logits: [logits[pred], logits[other]],
        maps: [0, 1].map(|i| upsample(&maps.maps[i * len..(i + 1) * len], shape.h, shape.w, h, w, centre)),
        weights: [0, 1].map(|i| part(&maps.weights, i, head.planes)),
        contributions: [0, 1].map(|i| part(&maps.contributions, i, head.planes)),
        mean_act: acts.chunks_exact(len).map(|p| p.iter().sum::<f32>() / len as f32).collect(),
    }
}

/// The `top` test images of `pick` (misclassified or correct), most confident first.
fn select(logits: &[f32], labels: &[u32], k: usize, top: usize, wrong: bool) -> Vec<usize> {
    let mut found: Vec<(f32, usize)> = logits
        .chunks_exact(k)
        .enumerate()
        .filter(|&(i, row)| (argmax(row) != labels[i] as usize) == wrong)
        .map(|(i, row)| (softmax(row)[argmax(row)], i))
        .collect();
    found.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    found.into_iter().take(top).map(|(_, i)| i).collect()
}

pub fn run(args: &ExplainArgs) -> Result<()> {
    if args.top == 0 {
        bail!("--top 0: show at least one image of each kind");
    }
    let loaded = eval::load(&args.model)?;
    let head = probe::head(&loaded.plan).map_err(|e| anyhow!("{}: {e}", loaded.file))?;
    let out = args.out.clone().unwrap_or_else(|| default_out(&args.model.checkpoint));
    std::fs::create_dir_all(&out)
        .with_context(|| format!("--out {}: cannot create the folder", out.display()))?;

    let (k, n, planes) = (loaded.classes.len(), loaded.test.len(), head.planes);
    let all: Vec<usize> = (0..n).collect();
    // Chunks run in parallel; their sums are added in chunk order, so the
    // numbers do not depend on the thread count.
    let parts: Vec<(Vec<f32>, Sums)> =
        all.par_chunks(CHUNK).map(|idx| analyse(&loaded, &head, idx)).collect();
    let logits: Vec<f32> = parts.iter().flat_map(|p| p.0.iter().copied()).collect();
    let sums = parts.iter().fold(Sums::new(k, planes), |acc, p| acc.add(&p.1));

    let labels = &loaded.test.labels;
    let mut examples = Vec::new();
    for (group, wrong) in [("misclassified", true), ("correct", false)] {
        let picked = select(&logits, labels, k, args.top, wrong);
        examples.extend(
            picked.iter().enumerate().map(|(rank, &i)| {
                explain_one(&loaded, &head, group, rank + 1, i, &logits[i * k..(i + 1) * k])
            }),
        );
    }

    let node = &loaded.plan.nodes()[head.feature];
    let method = if head.cam { "CAM" } else { "Grad-CAM" };
    let what =
        format!("{method} of {} ({} planes of {}x{})", node.name, planes, node.out_shape.h, node.out_shape.w);
    let model = &loaded.plan.spec().name;
    let mut written = Vec::new();
    for group in ["misclassified", "correct"] {
        let rows: Vec<&Example> = examples.iter().filter(|e| e.group == group).collect();
        let title =
            format!("{model}: the {} most confidently {group} of {n} test images; {what}", rows.len());
        let path = out.join(format!("{group}.png"));
        write_grid(&loaded, &rows, &title, &path)?;
        written.push(format!("{} ({} rows)", path.display(), rows.len()));
    }
    let path = out.join("examples.csv");
    write(&path, &examples_csv(&loaded, &examples))?;
    written.push(path.display().to_string());
    let path = out.join("planes.csv");
    write(&path, &planes_csv(&loaded, &head, &sums))?;
    written.push(path.display().to_string());

    let correct = loaded.correct(&logits);
    println!("{} ({model}): {what} before {}", loaded.file, loaded.plan.nodes()[head.feature + 1].name);
    println!(
        "test accuracy {:.4} ({correct}/{n} images), {} misclassified",
        correct as f64 / n as f64,
        n - correct
    );
    println!("{}", summary(&loaded, &sums, planes));
    for file in written {
        println!("wrote {file}");
    }
    Ok(())
}

/// `explain` beside the checkpoint.
fn default_out(checkpoint: &Path) -> PathBuf {
    checkpoint.parent().unwrap_or(Path::new(".")).join("explain")
}

fn write(path: &Path, text: &str) -> Result<()> {
    crate::fsops::write_atomic(path, text.as_bytes())
        .with_context(|| format!("{}: cannot write", path.display()))
}

fn write_grid(loaded: &Loaded, rows: &[&Example], title: &str, path: &Path) -> Result<()> {
    let [c, h, w] = loaded.test.shape;
    let name = |c: usize| loaded.classes[c].as_str();
    let rows: Vec<Row> = rows
        .iter()
        .map(|e| {
            let [pred, other] = e.classes;
            let margin: Vec<f32> =
                e.contributions[0].iter().zip(&e.contributions[1]).map(|(a, b)| a - b).collect();
            let mut order: Vec<usize> = (0..margin.len()).collect();
            order.sort_by(|&a, &b| margin[b].abs().total_cmp(&margin[a].abs()).then(a.cmp(&b)));
            let second = if pred == e.truth { "2nd" } else { "true" };
            Row {
                image: image_colours(loaded.test.image(e.index), c),
                captions: [
                    format!("#{} true {}", e.index, name(e.truth)),
                    format!("pred {} {:.3}", name(pred), e.confidence),
                    format!("{second} {}", name(other)),
                ],
                maps: e.maps.clone(),
                bars_caption: format!("planes: share of logit {} - {}", name(pred), name(other)),
                bars: order
                    .iter()
                    .take(TOP_PLANES)
                    .map(|&p| (format!("p{p}"), margin[p], e.mean_act[p]))
                    .collect(),
            }
        })
        .collect();
    let legend = "= the row's max.  Bars: each plane's share of the logit margin; act: its mean activation";
    let canvas = camgrid::render(title, legend, &rows, h, w)?;
    let png = canvas.to_png().with_context(|| format!("{}: encoding the PNG", path.display()))?;
    crate::fsops::write_atomic(path, &png).with_context(|| format!("{}: cannot write", path.display()))
}

/// Long format, one line per example, class (predicted, then true or
/// runner-up) and plane. For a CAM head the contributions of an example's
/// class plus the dense bias add up to its logit.
fn examples_csv(loaded: &Loaded, examples: &[Example]) -> String {
    let mut s = String::from(
        "group,rank,image,true,predicted,confidence,class,logit,plane,mean_activation,weight,contribution\n",
    );
    for e in examples {
        for (j, &class) in e.classes.iter().enumerate() {
            for p in 0..e.mean_act.len() {
                let _ = writeln!(
                    s,
                    "{},{},{},{},{},{},{},{},{p},{},{},{}",
                    e.group,
                    e.rank,
                    e.index,
                    loaded.classes[e.truth],
                    loaded.classes[e.classes[0]],
                    e.confidence,
                    loaded.classes[class],
                    e.logits[j],
                    e.mean_act[p],
                    e.weights[j][p],
                    e.contributions[j][p]
                );
            }
        }
    }
    s
}

/// One line per plane of the head's input: its mean activation over all
/// test images and per true class; per class of logit, its weight (the
/// gradient of the logit summed over the plane, averaged over the images:
/// exactly the dense weight for a CAM head) and its mean contribution
/// (weight x mean activation for CAM, gradient x activation for Grad-CAM);
/// the fraction of images on which it is zero everywhere; and the mean
/// absolute weight of the first dense layer's columns that read it.
fn planes_csv(loaded: &Loaded, head: &Head, sums: &Sums) -> String {
    let (classes, planes) = (&loaded.classes, head.planes);
    let n = loaded.test.len() as f64;
    let mut s = String::from("plane,mean_activation");
    for prefix in ["mean_activation", "weight", "contribution"] {
        for c in classes {
            let _ = write!(s, ",{prefix}_{c}");
        }
    }
    s += ",zero_fraction,dense_abs_weight\n";
    let dense = &loaded.plan.nodes()[head.dense];
    let w = &loaded.plan.params()[dense.weight.clone().expect("dense has weights")];
    let inputs = w.len() / dense.out_shape.c;
    let per = head.columns_per_plane;
    for p in 0..planes {
        let total: f64 = (0..classes.len()).map(|c| sums.act[c * planes + p]).sum();
        let _ = write!(s, "{p},{}", total / n);
        for c in 0..classes.len() {
            let _ = write!(s, ",{}", sums.act[c * planes + p] / sums.count[c].max(1) as f64);
        }
        for v in [&sums.weight, &sums.contribution] {
            for c in 0..classes.len() {
                let _ = write!(s, ",{}", v[c * planes + p] / n);
            }
        }
        let abs: f64 =
            w.chunks_exact(inputs).flat_map(|row| &row[p * per..(p + 1) * per]).map(|v| v.abs() as f64).sum();
        let _ = writeln!(s, ",{},{}", sums.zero[p] as f64 / n, abs / (per * dense.out_shape.c) as f64);
    }
    s
}

/// The planes that separate the classes most: by the spread of their
/// weights over the classes, with their mean activation per class.
fn summary(loaded: &Loaded, sums: &Sums, planes: usize) -> String {
    let (k, n) = (loaded.classes.len(), loaded.test.len() as f64);
    let weight = |c: usize, p: usize| sums.weight[c * planes + p] / n;
    let spread = |p: usize| {
        let ws: Vec<f64> = (0..k).map(|c| weight(c, p)).collect();
        ws.iter().copied().fold(f64::NEG_INFINITY, f64::max)
            - ws.iter().copied().fold(f64::INFINITY, f64::min)
    };
    let mut order: Vec<usize> = (0..planes).collect();
    order.sort_by(|&a, &b| spread(b).total_cmp(&spread(a)).then(a.cmp(&b)));
    let mut s = String::from("planes with the largest spread of weights over the classes:");
    for &p in order.iter().take(5) {
        let _ = write!(s, "\n  plane {p:>3}: weight");
        for (c, name) in loaded.classes.iter().enumerate() {
            let _ = write!(s, " {name} {:+.4}", weight(c, p));
        }
        let _ = write!(s, "; mean activation");
        for (c, name) in loaded.classes.iter().enumerate() {
            let _ = write!(s, " {name} {:.4}", sums.act[c * planes + p] / sums.count[c].max(1) as f64);
        }
    }
    s
}
