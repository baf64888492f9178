//! The picture `explain` writes: one row per test image with the image, the
//! class activation map of its predicted class and of a second class laid
//! over it, and bars for the planes that decided between the two.
//!
//! Tiles and bars are drawn straight into an RGB [`Canvas`]; only the text
//! goes through plotters, with the font embedded in the binary (as in
//! `plot.rs`), so no system fonts are needed.

use std::sync::OnceLock;

use anyhow::{bail, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::inspect::heatmap::{jet, overlay, Canvas};

/// Family name the embedded font is registered under (the same as plot.rs).
const FONT: &str = "sans-serif";
/// Each image pixel becomes a `SCALE x SCALE` block.
pub const SCALE: usize = 4;
const MARGIN: usize = 10;
const HEADER: usize = 58;
const CAPTION: usize = 20;
const ROW_GAP: usize = 14;
const BARS_WIDTH: usize = 380;
/// Planes shown as bars per row.
pub const TOP_PLANES: usize = 5;
const BAR_HALF: usize = 80;
const TOWARD: [u8; 3] = [214, 39, 40];
const AGAINST: [u8; 3] = [31, 119, 180];

/// One row of the grid.
pub struct Row {
    /// The image's colours, `[h, w]`.
    pub image: Vec<[u8; 3]>,
    /// Captions above the image and the two maps.
    pub captions: [String; 3],
    /// The two class maps at the image's size, in logit units.
    pub maps: [Vec<f32>; 2],
    /// Caption of the bars, then per plane: its label, its share of the
    /// logit margin between the two classes, its mean activation.
    pub bars_caption: String,
    pub bars: Vec<(String, f32, f32)>,
}

/// Pixel size of a grid of `rows` rows of `h x w` images.
pub fn size(rows: usize, h: usize, w: usize) -> (usize, usize) {
    let width = MARGIN + 3 * (w * SCALE + MARGIN) + MARGIN + BARS_WIDTH + MARGIN;
    let body = if rows == 0 { 30 } else { rows * (CAPTION + h * SCALE + ROW_GAP) };
    (width, HEADER + body + MARGIN)
}

fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, ttf_noto_sans::REGULAR).is_ok()
    });
    if !ok {
        bail!("the embedded font could not be loaded");
    }
    Ok(())
}

/// Text to draw after the pixels: position, size, anchor at the right?
type Label = (String, (usize, usize), u32, bool);

/// Render the grid: `title` and `legend` lines on top, then `rows`.
pub fn render(title: &str, legend: &str, rows: &[Row], h: usize, w: usize) -> Result<Canvas> {
    register_font()?;
    let (width, height) = size(rows.len(), h, w);
    let mut canvas = Canvas::new(width, height);
    let mut labels: Vec<Label> = vec![(title.to_string(), (MARGIN, 8), 16, false)];
    // The colour scale of the maps, with its ends named.
    let (bar_x, bar_y) = (MARGIN + 42, 36);
    for i in 0..200 {
        canvas.fill_rect(bar_x + i, bar_y, 1, 12, jet(i as f32 / 199.0));
    }
    labels.push(("heat 0".into(), (MARGIN, 34), 13, false));
    labels.push((legend.to_string(), (bar_x + 206, 34), 13, false));
    if rows.is_empty() {
        labels.push(("(no such test image)".into(), (MARGIN, HEADER + 6), 14, false));
    }
    let (tw, th) = (w * SCALE, h * SCALE);
    for (r, row) in rows.iter().enumerate() {
        let y = HEADER + r * (CAPTION + th + ROW_GAP);
        let ty = y + CAPTION;
        // One scale for both maps of a row, so their strengths compare;
        // values at or below zero (no evidence for the class) are dark blue.
        let top = row.maps.iter().flatten().fold(0.0f32, |m, &v| m.max(v));
        let heat = |map: &[f32]| -> Vec<f32> {
            map.iter().map(|&v| if top > 0.0 { v / top } else { 0.0 }).collect()
        };
        let tiles = [
            row.image.clone(),
            overlay(&row.image, &heat(&row.maps[0])),
            overlay(&row.image, &heat(&row.maps[1])),
        ];
        for (col, (tile, caption)) in tiles.iter().zip(&row.captions).enumerate() {
            let x = MARGIN + col * (tw + MARGIN);
            canvas.blit(x, ty, tile, w, SCALE);
            labels.push((caption.clone(), (x, y + 3), 13, false));
        }
        let bx = MARGIN + 3 * (tw + MARGIN) + MARGIN;
        labels.push((row.bars_caption.clone(), (bx, y + 3), 13, false));
        let scale = row.bars.iter().fold(0.0f32, |m, b| m.max(b.1.abs()));
        let line = th / TOP_PLANES.max(row.bars.len()).max(1);
        let centre = bx + 40 + BAR_HALF;
        canvas.fill_rect(centre, ty, 1, th, [160; 3]);
        for (i, (label, value, act)) in row.bars.iter().enumerate() {
            let ly = ty + i * line;
            let len = if scale > 0.0 { (value.abs() / scale * BAR_HALF as f32).round() as usize } else { 0 };
            let (x, colour) = if *value >= 0.0 { (centre, TOWARD) } else { (centre - len, AGAINST) };
            canvas.fill_rect(x, ly + 4, len.max(1), line.saturating_sub(8).max(2), colour);
            labels.push((label.clone(), (bx + 34, ly + line / 2 - 8), 13, true));
            labels.push((
                format!("{value:+.3}  act {act:.3}"),
                (centre + BAR_HALF + 8, ly + line / 2 - 8),
                13,
                false,
            ));
        }
    }
    draw_labels(&mut canvas, &labels)?;
    Ok(canvas)
}

fn draw_labels(canvas: &mut Canvas, labels: &[Label]) -> Result<()> {
    let (width, height) = (canvas.width as u32, canvas.height as u32);
    let root = BitMapBackend::with_buffer(&mut canvas.rgb, (width, height)).into_drawing_area();
    for (text, (x, y), size, right) in labels {
        let anchor = Pos::new(if *right { HPos::Right } else { HPos::Left }, VPos::Top);
        let style = TextStyle::from((FONT, *size as f64).into_font()).color(&BLACK).pos(anchor);
        root.draw_text(text, &style, (*x as i32, *y as i32))
            .map_err(|e| anyhow::anyhow!("drawing text {text:?}: {e}"))?;
    }
    root.present().map_err(|e| anyhow::anyhow!("drawing text: {e}"))?;
    Ok(())
}
