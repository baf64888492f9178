//! Pictures of class activation maps: bilinear upsampling of a map onto the
//! image, a colour scale, and an RGB canvas to compose tiles on.
//! Plain loops over RGB bytes: the pictures are small and drawn once.

/// Bilinear resize of `map[h, w]` to `[out_h, out_w]`, where map cell `i`
/// (along either axis) is centred on output pixel `a * i + b` for
/// `centre = (a, b)` (see `graph::probe::receptive_centre`); outside the
/// first and last cells' centres the edge values hold. With
/// `a = out / in`, `b = (a - 1) / 2` this is PyTorch's
/// `interpolate(mode="bilinear", align_corners=False)`.
pub fn upsample(map: &[f32], h: usize, w: usize, out_h: usize, out_w: usize, centre: (f64, f64)) -> Vec<f32> {
    assert_eq!(map.len(), h * w, "map of {} values is not {h}x{w}", map.len());
    let (a, b) = centre;
    let axis = |dst: usize, src: usize| {
        let pos = ((dst as f64 - b) / a).clamp(0.0, (src - 1) as f64);
        let lo = (pos.floor() as usize).min(src - 1);
        (lo, (lo + 1).min(src - 1), (pos - lo as f64) as f32)
    };
    let mut out = Vec::with_capacity(out_h * out_w);
    for y in 0..out_h {
        let (y0, y1, fy) = axis(y, h);
        for x in 0..out_w {
            let (x0, x1, fx) = axis(x, w);
            let top = map[y0 * w + x0] * (1.0 - fx) + map[y0 * w + x1] * fx;
            let bottom = map[y1 * w + x0] * (1.0 - fx) + map[y1 * w + x1] * fx;
            out.push(top * (1.0 - fy) + bottom * fy);
        }
    }
    out
}

/// The "jet" colour scale: dark blue at 0, through cyan, yellow, to dark
/// red at 1 (the usual CAM picture). `t` is clamped to `[0, 1]`.
pub fn jet(t: f32) -> [u8; 3] {
    const STOPS: [(f32, [f32; 3]); 6] = [
        (0.0, [0.0, 0.0, 143.0]),
        (0.125, [0.0, 0.0, 255.0]),
        (0.375, [0.0, 255.0, 255.0]),
        (0.625, [255.0, 255.0, 0.0]),
        (0.875, [255.0, 0.0, 0.0]),
        (1.0, [128.0, 0.0, 0.0]),
    ];
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
    let i = STOPS.iter().rposition(|&(at, _)| at <= t).unwrap_or(0).min(STOPS.len() - 2);
    let ((a, ca), (b, cb)) = (STOPS[i], STOPS[i + 1]);
    let f = (t - a) / (b - a);
    [0, 1, 2].map(|k| (ca[k] + (cb[k] - ca[k]) * f).round() as u8)
}

/// An RGB picture, row-major, 3 bytes per pixel.
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

impl Canvas {
    /// A white canvas.
    pub fn new(width: usize, height: usize) -> Canvas {
        Canvas { width, height, rgb: vec![255; width * height * 3] }
    }

    /// Set one pixel; pixels outside the canvas are ignored.
    pub fn put(&mut self, x: usize, y: usize, c: [u8; 3]) {
        if x < self.width && y < self.height {
            let at = (y * self.width + x) * 3;
            self.rgb[at..at + 3].copy_from_slice(&c);
        }
    }

    pub fn fill_rect(&mut self, x: usize, y: usize, w: usize, h: usize, c: [u8; 3]) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.put(xx, yy, c);
            }
        }
    }

    /// Draw `pixels` (`[h, w]` colours) at `(x, y)`, each pixel as a
    /// `scale x scale` block.
    pub fn blit(&mut self, x: usize, y: usize, pixels: &[[u8; 3]], w: usize, scale: usize) {
        for (i, &c) in pixels.iter().enumerate() {
            let (px, py) = (i % w, i / w);
            self.fill_rect(x + px * scale, y + py * scale, scale, scale, c);
        }
    }

    /// The canvas as PNG bytes.
    pub fn to_png(&self) -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, self.width as u32, self.height as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header()?;
        writer.write_image_data(&self.rgb)?;
        writer.finish()?;
        Ok(out)
    }
}

/// The colours of a CHW `u8` image (one channel is grey, three are RGB).
pub fn image_colours(image: &[u8], channels: usize) -> Vec<[u8; 3]> {
    let plane = image.len() / channels;
    (0..plane)
        .map(|i| {
            let at = |c: usize| image[c.min(channels - 1) * plane + i];
            if channels >= 3 {
                [at(0), at(1), at(2)]
            } else {
                [at(0); 3]
            }
        })
        .collect()
}

/// `image` with a heat map laid over it: half the image, half `jet(heat)`.
pub fn overlay(image: &[[u8; 3]], heat: &[f32]) -> Vec<[u8; 3]> {
    image
        .iter()
        .zip(heat)
        .map(|(px, &h)| {
            let c = jet(h);
            [0, 1, 2].map(|k| ((u16::from(px[k]) + u16::from(c[k])) / 2) as u8)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsampling_keeps_constants_and_matches_pytorch_on_a_2x2_map() {
        assert!(upsample(&[1.5; 12], 3, 4, 32, 32, (4.0, 3.0)).iter().all(|&v| (v - 1.5).abs() < 1e-6));
        let same: Vec<f32> = (0..12).map(|v| v as f32).collect();
        assert_eq!(
            upsample(&same, 3, 4, 3, 4, (1.0, 0.0)),
            same,
            "a resize to the same size is the identity"
        );
        // torch.nn.functional.interpolate(tensor([[[[0., 1.], [2., 3.]]]]), size=4,
        // mode="bilinear", align_corners=False), worked by hand: source
        // positions -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1).
        let expected = [
            0.0, 0.25, 0.75, 1.0, //
            0.5, 0.75, 1.25, 1.5, //
            1.5, 1.75, 2.25, 2.5, //
            2.0, 2.25, 2.75, 3.0,
        ];
        let got = upsample(&[0.0, 1.0, 2.0, 3.0], 2, 2, 4, 4, (2.0, 0.5));
        for (g, e) in got.iter().zip(expected) {
            assert!((g - e).abs() < 1e-6, "{got:?}");
        }
        // One cell: every pixel is that cell.
        assert_eq!(upsample(&[7.0], 1, 1, 2, 3, (1.0, 0.0)), vec![7.0; 6]);
        // Cells centred on pixels 3 and 7 of a 10-pixel row: constant up to 3,
        // linear from 3 to 7, constant after.
        let row = upsample(&[0.0, 4.0], 1, 2, 1, 10, (4.0, 3.0));
        assert_eq!(row, vec![0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 4.0, 4.0, 4.0]);
    }

    #[test]
    fn jet_runs_from_blue_to_red_and_clamps() {
        assert_eq!(jet(0.0), [0, 0, 143]);
        assert_eq!(jet(-3.0), [0, 0, 143]);
        assert_eq!(jet(f32::NAN), [0, 0, 143]);
        assert_eq!(jet(0.5), [128, 255, 128]);
        assert_eq!(jet(0.875), [255, 0, 0]);
        assert_eq!(jet(1.0), [128, 0, 0]);
        assert_eq!(jet(9.0), [128, 0, 0]);
    }

    #[test]
    fn overlay_averages_the_image_and_the_colour() {
        assert_eq!(overlay(&[[200, 100, 0]], &[0.875]), vec![[227, 50, 0]]);
        let grey = image_colours(&[10, 20, 30, 40], 1);
        assert_eq!(grey, vec![[10; 3], [20; 3], [30; 3], [40; 3]]);
        let rgb = image_colours(&[1, 2, 3, 4, 5, 6], 3);
        assert_eq!(rgb, vec![[1, 3, 5], [2, 4, 6]]);
    }
}
