//! Models as data: a list of layer specs, and the named presets.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One layer of a model. Shapes are inferred by [`crate::Plan`].
///
/// In a spec file (TOML) each layer is a table with a `type`:
/// `conv` (`filters`, `size`, optional `stride` = 1, `pad` = 0,
/// `bias` = true), `relu`, `max_pool` (`size`, `stride`, optional
/// `ceil` = false), `global_avg_pool`, `flatten`, `dense` (`units`,
/// optional `bias` = true), `batch_norm` (optional `eps` = 1e-5,
/// `momentum` = 0.1; after a conv, per channel, or a dense layer, per unit).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerSpec {
    /// 2-D convolution with `filters` output planes and a square kernel.
    Conv {
        filters: usize,
        size: usize,
        #[serde(default = "one")]
        stride: usize,
        #[serde(default)]
        pad: usize,
        #[serde(default = "yes")]
        bias: bool,
    },
    Relu,
    /// Max pooling; `ceil` keeps a clipped last window (PyTorch `ceil_mode`).
    MaxPool {
        size: usize,
        stride: usize,
        #[serde(default)]
        ceil: bool,
    },
    /// Mean of every plane: `[C, H, W] -> [C]`.
    GlobalAvgPool,
    /// `[C, H, W] -> [C*H*W]`; costs nothing at run time.
    Flatten,
    /// Fully connected layer on a flat input.
    Dense {
        units: usize,
        #[serde(default = "yes")]
        bias: bool,
    },
    /// Batch normalisation as PyTorch's `BatchNorm2d`/`BatchNorm1d`: the
    /// whole batch's statistics in training, the running ones in evaluation.
    BatchNorm {
        #[serde(default = "default_eps")]
        eps: f32,
        #[serde(default = "default_momentum")]
        momentum: f32,
    },
}

fn default_eps() -> f32 {
    1e-5
}

fn default_momentum() -> f32 {
    0.1
}

fn one() -> usize {
    1
}

fn yes() -> bool {
    true
}

impl fmt::Display for LayerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LayerSpec::Conv { filters, size, stride, pad, bias } => {
                write!(f, "conv {filters}@{size}x{size} stride {stride} pad {pad}")?;
                if !bias {
                    write!(f, " no bias")?;
                }
                Ok(())
            }
            LayerSpec::Relu => write!(f, "relu"),
            LayerSpec::MaxPool { size, stride, ceil } => {
                write!(f, "maxpool {size}x{size} stride {stride} {}", if ceil { "ceil" } else { "floor" })
            }
            LayerSpec::GlobalAvgPool => write!(f, "global average pool"),
            LayerSpec::Flatten => write!(f, "flatten"),
            LayerSpec::Dense { units, .. } => write!(f, "dense {units}"),
            LayerSpec::BatchNorm { eps, momentum } => write!(f, "batch_norm eps {eps} momentum {momentum}"),
        }
    }
}

/// A named model: the layers up to the logits. The loss (softmax with
/// cross-entropy or squared error) is chosen when training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub name: String,
    pub layers: Vec<LayerSpec>,
}

impl ModelSpec {
    /// Parse a model spec file (TOML): `name = "..."` and one
    /// `[[layers]]` table per layer (see [`LayerSpec`]). The error text
    /// starts `line L, column C: ` and the parser's message, then shows the
    /// offending line with a caret beneath the column (see [`toml_error`]).
    pub fn from_toml(text: &str) -> Result<ModelSpec, String> {
        toml::from_str(text).map_err(|e| toml_error(text, e.message(), e.span()))
    }

    /// The spec as TOML, the format [`ModelSpec::from_toml`] reads.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a spec always serialises")
    }

    /// The same model without biases in its convolutions.
    pub fn without_conv_bias(mut self) -> Self {
        for layer in &mut self.layers {
            if let LayerSpec::Conv { bias, .. } = layer {
                *bias = false;
            }
        }
        self
    }

    /// The same model without any bias, conv or dense (the original
    /// engine's layers have none).
    pub fn without_bias(self) -> Self {
        let mut spec = self.without_conv_bias();
        for layer in &mut spec.layers {
            if let LayerSpec::Dense { bias, .. } = layer {
                *bias = false;
            }
        }
        spec
    }

    /// The same model with `classes` outputs in its last dense layer.
    pub fn with_classes(mut self, classes: usize) -> Self {
        if let Some(LayerSpec::Dense { units, .. }) =
            self.layers.iter_mut().rev().find(|l| matches!(l, LayerSpec::Dense { .. }))
        {
            *units = classes;
        }
        self
    }
}

/// Characters of the offending line shown before and after the error's
/// column: a line of a megabyte (a deeply nested array) shows a window.
const CONTEXT_BEFORE: usize = 60;
const CONTEXT_AFTER: usize = 40;

/// A parse error of `text` as three short lines: `line L, column C:
/// message`, the line itself (cut to a window around the column) and a
/// caret beneath the column, as compilers show them. Without a span, the
/// message alone. The message is cut short too: it may quote a value.
pub fn toml_error(text: &str, message: &str, span: Option<std::ops::Range<usize>>) -> String {
    let span = span.map(|s| unknown_key_span(text, message, s.clone()).unwrap_or(s));
    let message = crate::brief::text(message.trim(), 200);
    let Some(span) = span else { return message };
    let mut start = span.start.min(text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let number = text[..start].matches('\n').count() + 1;
    let chars: Vec<char> = text[line_start..line_end].trim_end_matches('\r').chars().collect();
    let column = text[line_start..start].chars().count();
    let from = column.saturating_sub(CONTEXT_BEFORE);
    let to = chars.len().min(column + CONTEXT_AFTER).max(from);
    // Tabs and other control characters as spaces, so the caret lines up.
    let mut shown: String = chars[from..to].iter().map(|&c| if c.is_control() { ' ' } else { c }).collect();
    let mut pad = column - from;
    if from > 0 {
        shown.insert_str(0, "...");
        pad += 3;
    }
    if to < chars.len() {
        shown.push_str("...");
    }
    let width = text.get(start..span.end.min(text.len())).map_or(1, |s| s.chars().count());
    let carets = "^".repeat(width.clamp(1, (to.max(column + 1) - column).min(CONTEXT_AFTER)));
    let gutter = " ".repeat(number.to_string().len());
    format!(
        "line {number}, column {}: {message}\n {number} | {shown}\n {gutter} | {}{carets}",
        column + 1,
        " ".repeat(pad)
    )
}

/// The span of the key an "unknown field `k`" error is about: toml
/// reports such an error at the start of the table (`[[layers]]`), and the
/// misspelt key is a line of that table, up to the next header.
fn unknown_key_span(
    text: &str,
    message: &str,
    span: std::ops::Range<usize>,
) -> Option<std::ops::Range<usize>> {
    let key = message.split("unknown field `").nth(1)?.split('`').next()?;
    let mut at = text.get(..span.start)?.rfind('\n').map_or(0, |i| i + 1);
    for (i, line) in text[at..].split_inclusive('\n').enumerate() {
        let body = line.trim_start();
        if i > 0 && body.starts_with('[') {
            return None;
        }
        let indent = line.len() - body.len();
        let rest = body.strip_prefix(key).map(str::trim_start);
        if rest.is_some_and(|r| r.starts_with('=')) {
            return Some(at + indent..at + indent + key.len());
        }
        at += line.len();
    }
    None
}

/// Names accepted by [`preset`].
pub const PRESETS: &[&str] = &[
    "seed-fc",
    "seed-gap",
    "seed-fc20",
    "wide-gap",
    "wide-fc",
    "deep-gap",
    "deep-fc",
    "seed-fc-valid",
    "seed-gap-valid",
    "seed-fc20-valid",
];

/// Padding of the seed network's trunk. The blog does not state it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Padding {
    /// Conv pad 1, ceil-mode pooling: 32 -> 32 -> 16 -> 16 -> 8 -> 8.
    Same,
    /// No conv padding, floor pooling: 32 -> 30 -> 14 -> 12 -> 5 -> 3.
    Valid,
}

fn conv(filters: usize, padding: Padding) -> LayerSpec {
    let pad = if padding == Padding::Same { 1 } else { 0 };
    LayerSpec::Conv { filters, size: 3, stride: 1, pad, bias: true }
}

fn pool(padding: Padding) -> LayerSpec {
    LayerSpec::MaxPool { size: 3, stride: 2, ceil: padding == Padding::Same }
}

fn dense(units: usize) -> LayerSpec {
    LayerSpec::Dense { units, bias: true }
}

/// The episode's trunk: three 20-plane 3x3 convs, ReLUs, two 3x3/2 pools.
fn seed_trunk(p: Padding) -> Vec<LayerSpec> {
    use LayerSpec::Relu;
    vec![conv(20, p), Relu, pool(p), conv(20, p), Relu, pool(p), conv(20, p), Relu]
}

/// The wide trunk: 32, 64, 64, 64 planes, the fourth conv at 8x8.
fn wide_trunk() -> Vec<LayerSpec> {
    use LayerSpec::Relu;
    let p = Padding::Same;
    vec![conv(32, p), Relu, pool(p), conv(64, p), Relu, pool(p), conv(64, p), Relu, conv(64, p), Relu]
}

/// The deep trunk: five pad-1 3x3 convs without bias (batch norm's bias
/// takes its place), each with batch norm and ReLU: 32 planes at 32x32,
/// 64 and 64 at 16x16, 128 and 128 at 8x8.
fn deep_trunk() -> Vec<LayerSpec> {
    use LayerSpec::Relu;
    let bn = LayerSpec::BatchNorm { eps: default_eps(), momentum: default_momentum() };
    let block =
        |filters| [LayerSpec::Conv { filters, size: 3, stride: 1, pad: 1, bias: false }, bn.clone(), Relu];
    let p = Padding::Same;
    let mut layers = Vec::new();
    layers.extend(block(32));
    layers.push(pool(p));
    layers.extend(block(64));
    layers.extend(block(64));
    layers.push(pool(p));
    layers.extend(block(128));
    layers.extend(block(128));
    layers
}

/// A preset model by name (see [`PRESETS`]), with 2 classes.
///
/// - `seed-fc`: the trunk, then FC 120 (ReLU), FC 84 (ReLU), FC 2.
/// - `seed-gap`: the trunk, then global average pooling (20 values), FC 2.
/// - `seed-fc20`: the trunk, then FC 20 (ReLU), FC 2: an FC layer with as
///   many neurons as GAP has planes, the author's first open question.
/// - `wide-gap`: more planes and one more conv: 32, 64, 64, 64 planes
///   (the fourth conv at 8x8 without a pool before it), then GAP, FC 2;
///   about 3x the seed trunk's cost. The author's second question.
/// - `wide-fc`: the same trunk, then FC 256 (ReLU), FC 2.
/// - `deep-gap`: five convs with batch norm (32, 64, 64, 128, 128 planes,
///   see [`deep_trunk`]), then GAP, FC 2; ~29 M multiply-adds per image.
/// - `deep-fc`: the same trunk, then FC 256 (ReLU), FC 2 on 8,192 values.
/// - `*-valid`: the same heads on the valid-padding trunk.
pub fn preset(name: &str) -> Option<ModelSpec> {
    use LayerSpec::{Flatten, GlobalAvgPool, Relu};
    let (base, padding) = match name.strip_suffix("-valid") {
        Some(base) => (base, Padding::Valid),
        None => (name, Padding::Same),
    };
    let (width, head) = base.split_once('-')?;
    let mut layers = match (width, padding) {
        ("seed", _) => seed_trunk(padding),
        ("wide", Padding::Same) => wide_trunk(),
        ("deep", Padding::Same) => deep_trunk(),
        _ => return None,
    };
    match (width, head) {
        ("seed", "fc") => layers.extend([Flatten, dense(120), Relu, dense(84), Relu, dense(2)]),
        (_, "gap") => layers.extend([GlobalAvgPool, dense(2)]),
        ("seed", "fc20") => layers.extend([Flatten, dense(20), Relu, dense(2)]),
        ("wide" | "deep", "fc") => layers.extend([Flatten, dense(256), Relu, dense(2)]),
        _ => return None,
    }
    Some(ModelSpec { name: name.to_string(), layers })
}
