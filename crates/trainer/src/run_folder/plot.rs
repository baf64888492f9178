//! Training curves as a PNG: loss / error on the left, accuracy on the right.
//!
//! Text is drawn with `ab_glyph` from a font compiled into the binary (Noto
//! Sans Regular, from the `ttf-noto-sans` crate), so rendering needs no
//! system fonts, fontconfig or freetype. The picture is rendered into memory,
//! encoded with `png` and written with [`crate::fsops::write_atomic`] (a temp file
//! beside `path`, renamed over it), so a reader never sees a half-written file.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;

use crate::run_folder::metrics::EpochRow;

/// One model's curve data.
pub struct Series<'a> {
    pub label: &'a str,
    pub rows: &'a [EpochRow],
    /// Also draw `sample_seed_error` (the seed recipe: the blog's own error).
    pub sample_error: bool,
}

/// Size of the picture in pixels.
pub const WIDTH: u32 = 1200;
pub const HEIGHT: u32 = 500;

/// The family name the embedded font is registered under; plotters' own
/// default text (if any is drawn) asks for it too. Font sizes are kept even:
/// plotters' ab_glyph text places each glyph at `size / 2 + top` truncated
/// to an integer, so an odd size makes letters jump up and down by a pixel.
const FONT: &str = "sans-serif";

/// One colour per series (matplotlib's tab10), cycled past ten.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// At most this many labelled ticks on a value axis.
const Y_TICKS: usize = 8;

/// Up to this many series the legend names every line; past it, one entry
/// per series plus one per line style.
const FULL_LEGEND_UP_TO: usize = 3;

/// Series with at most this many points also get a marker at each point
/// (and a one-epoch series is visible at all).
const MARKERS_UP_TO: usize = 15;

/// Write a PNG of `WIDTH` x `HEIGHT` with two panels side by side.
///
/// Left, "loss / error" against epoch: each series' training cross-entropy
/// (solid) and training seed error (dashed). Right, "accuracy" against epoch:
/// training accuracy (dashed, lighter) and test accuracy (solid). One colour
/// per series in both panels. Non-finite values are left out of the lines.
///
/// Errors if `series` is empty or any series has no rows, or on I/O failure.
pub fn plot_curves(path: &Path, series: &[Series]) -> Result<()> {
    if series.is_empty() {
        bail!("plot_curves: no series to plot");
    }
    if let Some(s) = series.iter().find(|s| s.rows.is_empty()) {
        bail!("plot_curves: series {:?} has no rows", s.label);
    }
    register_font()?;

    let mut rgb = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    render(&mut rgb, series).context("plot_curves: rendering")?;

    let png = encode_png(&rgb).context("plot_curves: encoding PNG")?;
    crate::fsops::write_atomic(path, &png)
        .with_context(|| format!("plot_curves: cannot write {}", path.display()))
}

fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, ttf_noto_sans::REGULAR).is_ok()
    });
    if !ok {
        bail!("plot_curves: the embedded font could not be loaded");
    }
    Ok(())
}

fn encode_png(rgb: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(rgb.len() / 8);
    let mut enc = png::Encoder::new(&mut out, WIDTH, HEIGHT);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()?;
    Ok(out)
}

/// Points `(epoch, value)` with a finite value.
fn points(rows: &[EpochRow], value: fn(&EpochRow) -> f64) -> Vec<(f64, f64)> {
    rows.iter().map(|r| (r.epoch as f64, value(r))).filter(|&(_, y)| y.is_finite()).collect()
}

/// Largest finite value of the given fields over all series.
fn finite_max(series: &[Series], fields: &[fn(&EpochRow) -> f64]) -> Option<f64> {
    series
        .iter()
        .flat_map(|s| s.rows.iter())
        .flat_map(|r| fields.iter().map(move |f| f(r)))
        .filter(|v| v.is_finite())
        .reduce(f64::max)
}

fn finite_min(series: &[Series], fields: &[fn(&EpochRow) -> f64]) -> Option<f64> {
    series
        .iter()
        .flat_map(|s| s.rows.iter())
        .flat_map(|r| fields.iter().map(move |f| f(r)))
        .filter(|v| v.is_finite())
        .reduce(f64::min)
}

/// Axis ranges shared by both panels (x) or per panel (y).
struct Ranges {
    x: (f64, f64),
    x_labels: usize,
    loss: (f64, f64),
    acc: (f64, f64),
}

fn ranges(series: &[Series]) -> Ranges {
    let epochs = series.iter().flat_map(|s| s.rows.iter()).map(|r| r.epoch);
    let (lo, hi) = epochs.fold((usize::MAX, 0), |(lo, hi), e| (lo.min(e), hi.max(e)));
    let span = (hi - lo) as f64;
    // A little room at both ends so end points are not drawn on the frame.
    let pad = if span == 0.0 { 0.5 } else { span * 0.02 };
    let x = (lo as f64 - pad, hi as f64 + pad);
    let x_labels = (hi - lo + 1).clamp(3, 10);

    let loss_fields: [fn(&EpochRow) -> f64; 3] =
        [|r| r.train_ce, |r| r.train_seed_error, |r| r.sample_seed_error];
    let loss_max = finite_max(series, &loss_fields).filter(|&m| m > 0.0).unwrap_or(1.0);
    let loss = (0.0, loss_max * 1.05);

    let acc_fields: [fn(&EpochRow) -> f64; 2] = [|r| r.train_acc, |r| r.test_acc];
    let acc_min = finite_min(series, &acc_fields).unwrap_or(0.0);
    let acc_max = finite_max(series, &acc_fields).unwrap_or(1.0);
    let acc_lo = ((acc_min * 10.0).floor() / 10.0).clamp(0.0, 0.9);
    // Accuracies are fractions; should one exceed 1 the axis still shows it.
    let acc_hi = if acc_max > 1.0 { acc_max * 1.02 } else { 1.0 };
    let acc = (acc_lo, acc_hi);

    Ranges { x, x_labels, loss, acc }
}

/// Label epochs only at whole numbers.
fn epoch_label(x: &f64) -> String {
    if (x - x.round()).abs() < 1e-6 && *x >= -0.5 {
        format!("{}", x.round() as i64)
    } else {
        String::new()
    }
}

/// Tick labels of a value axis with the decimals of its tick step (plotters
/// picks steps of 1, 2 or 5 times a power of ten), e.g. 0.0 0.5 1.0 1.5.
fn value_label(range: (f64, f64), ticks: usize) -> impl Fn(&f64) -> String {
    let decimals_of = |v: f64| (0..6).find(|&d| (v * 10f64.powi(d)).fract().abs() < 1e-6).unwrap_or(6);
    let decimals = RangedCoordf64::from(range.0..range.1)
        .key_points(ticks)
        .into_iter()
        .map(|v| decimals_of(v.abs()))
        .max()
        .unwrap_or(1) as usize;
    move |y: &f64| format!("{y:.decimals$}")
}

/// One line of a panel: how to read it off a row, how to draw it, its legend suffix.
struct Line {
    value: fn(&EpochRow) -> f64,
    dashed: bool,
    alpha: f64,
    suffix: &'static str,
    /// Drawn only for series with [`Series::sample_error`].
    sample: bool,
}

fn render(rgb: &mut [u8], series: &[Series]) -> Result<()> {
    let r = ranges(series);
    let root = BitMapBackend::with_buffer(rgb, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(WIDTH / 2);

    let loss_lines = [
        Line { value: |r| r.train_ce, dashed: false, alpha: 1.0, suffix: "CE", sample: false },
        Line { value: |r| r.train_seed_error, dashed: true, alpha: 1.0, suffix: "error", sample: false },
        Line {
            value: |r| r.sample_seed_error,
            dashed: false,
            alpha: 0.45,
            suffix: "sample error",
            sample: true,
        },
    ];
    let acc_lines = [
        Line { value: |r| r.train_acc, dashed: true, alpha: 0.6, suffix: "train acc", sample: false },
        Line { value: |r| r.test_acc, dashed: false, alpha: 1.0, suffix: "test acc", sample: false },
    ];
    let loss_desc = if series.iter().any(|s| s.sample_error) {
        "train CE (solid), seed error (dashed), sample error (pale)"
    } else {
        "train CE (solid), seed error (dashed)"
    };
    let loss = Panel {
        caption: "loss / error",
        y_desc: loss_desc,
        y: r.loss,
        lines: &loss_lines,
        legend_at: legend_corner(series, &loss_lines, r.x, r.loss),
    };
    panel(&left, series, &r, &loss)?;
    let acc = Panel {
        caption: "accuracy",
        y_desc: "accuracy: train (dashed), test (solid)",
        y: r.acc,
        lines: &acc_lines,
        legend_at: legend_corner(series, &acc_lines, r.x, r.acc),
    };
    panel(&right, series, &r, &acc)?;
    root.present()?;
    Ok(())
}

/// The corner of a panel whose legend box (about 45% of the width and a
/// third of the height) covers the fewest points of its lines, so the
/// legend hides no curve where it can be helped; ties keep the order
/// upper right, lower right, upper left, lower left.
fn legend_corner(series: &[Series], lines: &[Line], x: (f64, f64), y: (f64, f64)) -> SeriesLabelPosition {
    let corners = [
        (SeriesLabelPosition::UpperRight, true, true),
        (SeriesLabelPosition::LowerRight, true, false),
        (SeriesLabelPosition::UpperLeft, false, true),
        (SeriesLabelPosition::LowerLeft, false, false),
    ];
    let inside = |right: bool, upper: bool, (px, py): (f64, f64)| {
        let fx = (px - x.0) / (x.1 - x.0);
        let fy = (py - y.0) / (y.1 - y.0);
        (if right { fx >= 0.55 } else { fx <= 0.45 }) && (if upper { fy >= 0.66 } else { fy <= 0.34 })
    };
    let covered = |right: bool, upper: bool| -> usize {
        let mut n = 0;
        for s in series {
            for line in lines.iter().filter(|l| !l.sample || s.sample_error) {
                let pts = points(s.rows, line.value);
                // Segments count too: sample each one at a few points.
                for w in pts.windows(2) {
                    for t in [0.0, 0.25, 0.5, 0.75] {
                        let p = (w[0].0 + t * (w[1].0 - w[0].0), w[0].1 + t * (w[1].1 - w[0].1));
                        n += usize::from(inside(right, upper, p));
                    }
                }
                n += pts.iter().filter(|&&p| inside(right, upper, p)).count();
            }
        }
        n
    };
    corners
        .iter()
        .min_by_key(|(_, right, upper)| covered(*right, *upper))
        .map(|c| c.0.clone())
        .unwrap_or(SeriesLabelPosition::UpperRight)
}

/// One of the two panels: its titles, its y range, the lines each series
/// draws in it and the corner of its legend.
struct Panel<'a> {
    caption: &'a str,
    y_desc: &'a str,
    y: (f64, f64),
    lines: &'a [Line],
    legend_at: SeriesLabelPosition,
}

type Chart<'a, 'b> = ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

fn panel(area: &DrawingArea<BitMapBackend, Shift>, series: &[Series], r: &Ranges, p: &Panel) -> Result<()> {
    let mut chart = ChartBuilder::on(area)
        .caption(p.caption, (FONT, 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(r.x.0..r.x.1, p.y.0..p.y.1)?;

    let y_fmt = value_label(p.y, Y_TICKS);
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(p.y_desc)
        .x_labels(r.x_labels)
        .y_labels(Y_TICKS)
        .x_label_formatter(&epoch_label)
        .y_label_formatter(&y_fmt)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .max_light_lines(4)
        .light_line_style(RGBColor(238, 238, 238))
        .bold_line_style(RGBColor(205, 205, 205))
        .draw()?;
    draw_lines(&mut chart, series, p.lines)?;
    chart
        .configure_series_labels()
        .position(p.legend_at.clone())
        .margin(10)
        .legend_area_size(32)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(190, 190, 190))
        .draw()?;
    Ok(())
}

/// Every series' lines, with their legend entries.
fn draw_lines<'a>(chart: &mut Chart<'a, 'a>, series: &[Series], lines: &[Line]) -> Result<()> {
    // Few series: one legend entry per line ("seed-fc CE"). More: one entry
    // per series in its colour plus one grey entry per line style, so the
    // legend stays small enough to leave the curves visible.
    let full_legend = series.len() <= FULL_LEGEND_UP_TO;
    for (i, s) in series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        for (j, line) in lines.iter().enumerate() {
            if line.sample && !s.sample_error {
                continue;
            }
            let pts = points(s.rows, line.value);
            let style = colour.mix(line.alpha).stroke_width(2);
            let drawn = if line.dashed {
                chart.draw_series(DashedLineSeries::new(pts.iter().copied(), 7, 5, style))?
            } else {
                chart.draw_series(LineSeries::new(pts.iter().copied(), style))?
            };
            if full_legend {
                drawn.label(format!("{} {}", s.label, line.suffix)).legend(legend_sample(style, line.dashed));
            } else if j == 0 {
                drawn.label(s.label).legend(legend_sample(colour.stroke_width(2), false));
            }
            if pts.len() <= MARKERS_UP_TO {
                let marker = if line.dashed { style } else { style.filled() };
                chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, marker)))?;
            }
        }
    }
    if !full_legend {
        for line in lines.iter().filter(|l| !l.sample || series.iter().any(|s| s.sample_error)) {
            let style = RGBColor(90, 90, 90).mix(line.alpha).stroke_width(2);
            chart
                .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
                .label(line.suffix)
                .legend(legend_sample(style, line.dashed));
        }
    }
    Ok(())
}

/// The short line drawn in front of a legend entry.
fn legend_sample<DB: DrawingBackend>(
    style: ShapeStyle,
    dashed: bool,
) -> impl Fn((i32, i32)) -> DynElement<'static, DB, (i32, i32)> {
    move |(x, y)| {
        let seg = vec![(x, y), (x + 26, y)];
        if dashed {
            DashedPathElement::new(seg, 7, 5, style).into_dyn()
        } else {
            PathElement::new(seg, style).into_dyn()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// `n` epochs of plausible curves; `k` shifts them so series differ.
    fn rows(n: usize, k: f64) -> Vec<EpochRow> {
        (1..=n)
            .map(|e| {
                let t = e as f64;
                EpochRow {
                    epoch: e,
                    lr: 0.01,
                    train_ce: 2.3 / (1.0 + 0.3 * t * (1.0 + k)),
                    train_seed_error: 0.9 / (1.0 + 0.25 * t * (1.0 + k)),
                    train_acc: 1.0 - 0.85 / (1.0 + 0.3 * t * (1.0 + k)),
                    test_ce: 2.3 / (1.0 + 0.2 * t),
                    test_acc: 1.0 - 0.88 / (1.0 + 0.2 * t * (1.0 + k)),
                    seconds: 10.0,
                    images_per_s: 5000.0,
                    sample_seed_error: 0.5,
                }
            })
            .collect()
    }

    /// Decodes a PNG file: (width, height, RGB(A) bytes, bytes per pixel).
    fn decode(path: &Path) -> (u32, u32, Vec<u8>, usize) {
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
        let mut reader = png::Decoder::new(std::io::Cursor::new(bytes)).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf, info.color_type.samples())
    }

    fn colours(buf: &[u8], bpp: usize) -> HashSet<[u8; 3]> {
        buf.chunks_exact(bpp).map(|p| [p[0], p[1], p[2]]).collect()
    }

    /// Pixels that are close to a palette colour at full strength.
    fn count_near(buf: &[u8], bpp: usize, c: RGBColor) -> usize {
        buf.chunks_exact(bpp)
            .filter(|p| {
                (p[0] as i32 - c.0 as i32).abs() < 8
                    && (p[1] as i32 - c.1 as i32).abs() < 8
                    && (p[2] as i32 - c.2 as i32).abs() < 8
            })
            .count()
    }

    #[test]
    fn plot_two_series_writes_a_real_png() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curves.png");
        let (a, b) = (rows(10, 0.0), rows(10, 0.5));
        let series = [
            Series { label: "seed-fc", rows: &a, sample_error: false },
            Series { label: "seed-gap", rows: &b, sample_error: false },
        ];
        plot_curves(&path, &series).unwrap();

        let (w, h, buf, bpp) = decode(&path);
        assert_eq!((w, h), (WIDTH, HEIGHT));
        // Background, grid greys, anti-aliased text and two line colours.
        let distinct = colours(&buf, bpp);
        assert!(distinct.len() > 50, "only {} colours: blank image?", distinct.len());
        // Each series' colour is drawn (lines in both panels), a third is not.
        assert!(count_near(&buf, bpp, PALETTE[0]) > 500);
        assert!(count_near(&buf, bpp, PALETTE[1]) > 500);
        assert_eq!(count_near(&buf, bpp, PALETTE[2]), 0);
        // Mostly white background, but not entirely.
        let white = buf.chunks_exact(bpp).filter(|p| p[..3] == [255, 255, 255]).count();
        let total = (w * h) as usize;
        assert!(white > total / 2 && white < total * 99 / 100, "white {white} of {total}");
        // No temp file left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("curves.png")]);

        // Rendering again replaces the file atomically.
        plot_curves(&path, &series[..1]).unwrap();
        let (_, _, buf, bpp) = decode(&path);
        assert_eq!(count_near(&buf, bpp, PALETTE[1]), 0);
    }

    #[test]
    fn plot_text_is_drawn() {
        // Text is black, anti-aliased on white: it leaves many pixels in many
        // distinct grey levels. Grid, frame and legend border are a few flat greys.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.png");
        let a = rows(5, 0.0);
        plot_curves(&path, &[Series { label: "seed-fc", rows: &a, sample_error: false }]).unwrap();
        let (_, _, buf, bpp) = decode(&path);
        let greys: Vec<u8> = buf
            .chunks_exact(bpp)
            .filter(|p| p[0] == p[1] && p[1] == p[2] && p[0] > 0 && p[0] < 255)
            .map(|p| p[0])
            .collect();
        let levels = greys.iter().collect::<HashSet<_>>().len();
        assert!(levels > 100, "only {levels} grey levels: no anti-aliased text?");
        let dark = greys.iter().filter(|&&g| g < 128).count();
        assert!(dark > 1000, "only {dark} dark grey pixels: no text?");
    }

    #[test]
    fn plot_one_epoch_works() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("one.png");
        let a = rows(1, 0.0);
        plot_curves(&path, &[Series { label: "seed-gap", rows: &a, sample_error: false }]).unwrap();
        let (w, h, buf, bpp) = decode(&path);
        assert_eq!((w, h), (WIDTH, HEIGHT));
        // The single points are drawn as markers.
        assert!(count_near(&buf, bpp, PALETTE[0]) > 20);
    }

    #[test]
    fn plot_many_series_and_odd_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("many.png");
        let mut data: Vec<Vec<EpochRow>> = (0..6).map(|k| rows(40, k as f64 * 0.3)).collect();
        data[3][5].train_ce = f64::NAN;
        data[4][7].test_acc = f64::INFINITY;
        // A diverged run: nothing finite to draw, but the others still are.
        for r in &mut data[5] {
            r.train_ce = f64::NAN;
            r.train_seed_error = f64::NAN;
            r.train_acc = f64::NAN;
            r.test_acc = f64::NAN;
        }
        let labels = ["a", "b", "c", "d", "e", "f"];
        let series: Vec<Series> = data
            .iter()
            .zip(labels)
            .map(|(rows, label)| Series { label, rows, sample_error: false })
            .collect();
        plot_curves(&path, &series).unwrap();
        let (_, _, buf, bpp) = decode(&path);
        for c in &PALETTE[..5] {
            assert!(count_near(&buf, bpp, *c) > 100, "colour {c:?} missing");
        }
    }

    #[test]
    fn plot_empty_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.png");
        assert!(plot_curves(&path, &[]).is_err());
        let a = rows(3, 0.0);
        let err = plot_curves(
            &path,
            &[
                Series { label: "ok", rows: &a, sample_error: false },
                Series { label: "none", rows: &[], sample_error: false },
            ],
        )
        .unwrap_err();
        assert!(err.to_string().contains("none"), "{err}");
        assert!(!path.exists());
    }

    #[test]
    fn plot_into_missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no/such/dir/c.png");
        let a = rows(3, 0.0);
        assert!(plot_curves(&path, &[Series { label: "x", rows: &a, sample_error: false }]).is_err());
    }

    #[test]
    fn plot_ranges() {
        let a = rows(10, 0.0);
        let r = ranges(&[Series { label: "a", rows: &a, sample_error: false }]);
        assert_eq!(r.loss.0, 0.0);
        assert!(r.loss.1 >= a.iter().map(|r| r.train_ce).fold(0.0, f64::max));
        let min_acc = a.iter().map(|r| r.train_acc.min(r.test_acc)).fold(1.0, f64::min);
        assert_eq!(r.acc.1, 1.0);
        assert!(r.acc.0 <= min_acc && min_acc - r.acc.0 < 0.1 + 1e-9, "{:?} {min_acc}", r.acc);
        assert!(r.x.0 < 1.0 && r.x.1 > 10.0);
        let one = rows(1, 0.0);
        let r = ranges(&[Series { label: "a", rows: &one, sample_error: false }]);
        assert!(r.x.0 < 1.0 && r.x.1 > 1.0);
        assert_eq!(epoch_label(&3.0), "3");
        assert_eq!(epoch_label(&2.5), "");
        // Tick labels carry the decimals of the tick step, no float noise.
        assert_eq!(value_label((0.2, 1.0), Y_TICKS)(&0.4), "0.4");
        assert_eq!(value_label((0.2, 1.0), Y_TICKS)(&(0.1 + 0.2)), "0.3");
        assert_eq!(value_label((0.0, 1.86), Y_TICKS)(&1.0), "1.0");
        assert_eq!(value_label((0.9, 1.0), Y_TICKS)(&0.95), "0.95");
        assert_eq!(value_label((0.0, 40.0), Y_TICKS)(&10.0), "10");
    }
}
