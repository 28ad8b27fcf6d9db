//! The loss curve of a run as a PNG: total loss (and each component) against the step, with
//! the learning rate as a faint line on its own scale.

use std::path::Path;

use ab_glyph::{FontRef, PxScale};
use image::{Rgb, RgbImage};

use super::trainer::StepRecord;
use crate::evaluation::confusion_png::{blit, rasterize, text_width, FONT_BYTES};
use crate::{Error, Result};

const WIDTH: u32 = 900;
const HEIGHT: u32 = 520;
const LEFT: u32 = 70;
const RIGHT: u32 = 170;
const TOP: u32 = 40;
const BOTTOM: u32 = 50;
const FONT_PX: f32 = 14.0;
const INK: Rgb<u8> = Rgb([25, 25, 25]);
const GRID: Rgb<u8> = Rgb([225, 225, 225]);
/// Line colours: the total loss first, then the components.
const PALETTE: [Rgb<u8>; 6] = [
    Rgb([31, 119, 180]),
    Rgb([255, 127, 14]),
    Rgb([44, 160, 44]),
    Rgb([214, 39, 40]),
    Rgb([148, 103, 189]),
    Rgb([140, 86, 75]),
];
const LR_COLOUR: Rgb<u8> = Rgb([180, 180, 180]);

/// Draws `records` to `path` (nothing to draw: no file).
pub fn save_loss_curve(records: &[StepRecord], path: &Path, title: &str) -> Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    render(records, title)
        .save(path)
        .map_err(|e| Error::InvalidArgument(format!("cannot write {}: {e}", path.display())))
}

/// The plot as an image.
pub fn render(records: &[StepRecord], title: &str) -> RgbImage {
    let font = FontRef::try_from_slice(FONT_BYTES).expect("the bundled font parses");
    let scale = PxScale::from(FONT_PX);
    let mut image = RgbImage::from_pixel(WIDTH, HEIGHT, Rgb([255, 255, 255]));
    let mut series: Vec<(String, Vec<f64>)> =
        vec![("loss".into(), records.iter().map(|r| r.loss).collect())];
    for name in records[0].components.keys() {
        let values = records
            .iter()
            .map(|r| r.components.get(name).copied().unwrap_or(f64::NAN))
            .collect();
        series.push((name.clone(), values));
    }
    let finite = series
        .iter()
        .flat_map(|s| &s.1)
        .copied()
        .filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    let (lo, hi) = if hi > lo {
        (lo.min(0.0), hi)
    } else {
        (0.0, lo.max(1.0))
    };
    let steps = (
        records.first().map_or(0, |r| r.step),
        records.last().map_or(1, |r| r.step),
    );
    let plot = Plot { steps, lo, hi };
    draw_axes(&mut image, &font, scale, &plot, title);
    let lr: Vec<f64> = records.iter().map(|r| r.lr).collect();
    let lr_max = lr.iter().copied().fold(0.0, f64::max);
    if lr_max > 0.0 {
        let scaled: Vec<f64> = lr.iter().map(|v| lo + (hi - lo) * v / lr_max).collect();
        draw_series(&mut image, records, &scaled, &plot, LR_COLOUR);
    }
    for (i, (name, values)) in series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        draw_series(&mut image, records, values, &plot, colour);
        let label = format!(
            "{name} (last {:.4})",
            values.last().copied().unwrap_or(f64::NAN)
        );
        let y = TOP + 10 + i as u32 * 22;
        fill(&mut image, WIDTH - RIGHT + 12, y + 6, 14, 3, colour);
        blit(
            &mut image,
            &rasterize(&font, scale, &label),
            WIDTH - RIGHT + 30,
            y,
            INK,
        );
    }
    let y = TOP + 10 + series.len() as u32 * 22;
    fill(&mut image, WIDTH - RIGHT + 12, y + 6, 14, 3, LR_COLOUR);
    let lr_label = format!("lr (peak {lr_max:.1e})");
    blit(
        &mut image,
        &rasterize(&font, scale, &lr_label),
        WIDTH - RIGHT + 30,
        y,
        INK,
    );
    image
}

/// The data ranges of the plot area.
struct Plot {
    steps: (u64, u64),
    lo: f64,
    hi: f64,
}

impl Plot {
    fn x(&self, step: u64) -> f64 {
        let span = (self.steps.1 - self.steps.0).max(1) as f64;
        LEFT as f64 + (step - self.steps.0) as f64 / span * (WIDTH - LEFT - RIGHT) as f64
    }

    fn y(&self, value: f64) -> f64 {
        let h = (HEIGHT - TOP - BOTTOM) as f64;
        TOP as f64 + (1.0 - (value - self.lo) / (self.hi - self.lo)) * h
    }
}

fn draw_axes(image: &mut RgbImage, font: &FontRef, scale: PxScale, plot: &Plot, title: &str) {
    let (x0, x1) = (LEFT, WIDTH - RIGHT);
    let (y0, y1) = (TOP, HEIGHT - BOTTOM);
    for i in 0..=4 {
        let value = plot.lo + (plot.hi - plot.lo) * i as f64 / 4.0;
        let y = plot.y(value).round() as u32;
        fill(image, x0, y, x1 - x0, 1, GRID);
        let label = format!("{value:.3}");
        let w = text_width(font, scale, &label).ceil() as u32;
        blit(
            image,
            &rasterize(font, scale, &label),
            x0.saturating_sub(w + 6),
            y.saturating_sub(8),
            INK,
        );
    }
    for i in 0..=4 {
        let step = plot.steps.0 + (plot.steps.1 - plot.steps.0) * i / 4;
        let x = plot.x(step).round() as u32;
        fill(image, x, y0, 1, y1 - y0, GRID);
        let label = step.to_string();
        let w = text_width(font, scale, &label).ceil() as u32;
        blit(
            image,
            &rasterize(font, scale, &label),
            x.saturating_sub(w / 2),
            y1 + 6,
            INK,
        );
    }
    fill(image, x0, y0, 1, y1 - y0, INK);
    fill(image, x0, y1, x1 - x0, 1, INK);
    blit(image, &rasterize(font, scale, title), x0, 12, INK);
    let axis = "step";
    let w = text_width(font, scale, axis).ceil() as u32;
    blit(
        image,
        &rasterize(font, scale, axis),
        (x0 + x1 - w) / 2,
        y1 + 26,
        INK,
    );
}

fn draw_series(
    image: &mut RgbImage,
    records: &[StepRecord],
    values: &[f64],
    plot: &Plot,
    colour: Rgb<u8>,
) {
    let points: Vec<(f64, f64)> = records
        .iter()
        .zip(values)
        .filter(|(_, v)| v.is_finite())
        .map(|(r, &v)| (plot.x(r.step), plot.y(v)))
        .collect();
    for pair in points.windows(2) {
        line(image, pair[0], pair[1], colour);
    }
    if let [only] = points.as_slice() {
        fill(image, only.0 as u32, only.1 as u32, 2, 2, colour);
    }
}

/// A 2-pixel-thick straight line (DDA).
fn line(image: &mut RgbImage, a: (f64, f64), b: (f64, f64), colour: Rgb<u8>) {
    let n = ((b.0 - a.0).abs().max((b.1 - a.1).abs()).ceil() as usize).max(1);
    for i in 0..=n {
        let t = i as f64 / n as f64;
        let (x, y) = (a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t);
        fill(image, x.round() as u32, y.round() as u32, 2, 2, colour);
    }
}

fn fill(image: &mut RgbImage, x: u32, y: u32, w: u32, h: u32, colour: Rgb<u8>) {
    for py in y..(y + h).min(image.height()) {
        for px in x..(x + w).min(image.width()) {
            image.put_pixel(px, py, colour);
        }
    }
}
