//! Confusion matrix as a PNG: class names on both axes, counts in the cells, and cell
//! colour from white to dark blue by the fraction of the true class's samples (so that
//! small classes are as visible as large ones).
//!
//! Text is drawn with DejaVu Sans, bundled in the crate (`fonts/`, with its licence), so
//! rendering needs no system font. Up to 40 classes every cell shows its count; beyond
//! that the cells shrink to keep the image under about 1 600 px of grid, counts are drawn
//! only where they fit and labels only while they stay legible.

use std::io::Cursor;
use std::path::Path;

use ab_glyph::{point, Font, FontRef, PxScale, ScaleFont};
use image::imageops::rotate270;
use image::{GrayImage, ImageFormat, Luma, Rgb, RgbImage};

use super::classification::ConfusionMatrix;
use crate::{Error, Result};

/// DejaVu Sans (bundled, with its licence), shared with the training curves.
pub(crate) static FONT_BYTES: &[u8] = include_bytes!("fonts/DejaVuSans.ttf");

/// Text size of labels, counts and titles, in pixels.
const FONT_PX: f32 = 14.0;
/// Margin between blocks, in pixels.
const PAD: u32 = 8;
/// Classes up to which cells are sized for their counts.
const SMALL_MATRIX: usize = 40;
/// Target size of the cell grid for large matrices, in pixels.
const LARGE_GRID_PX: usize = 1600;
/// Longest class label drawn, in characters.
const MAX_LABEL_CHARS: usize = 32;

const BACKGROUND: Rgb<u8> = Rgb([255, 255, 255]);
const INK: Rgb<u8> = Rgb([25, 25, 25]);
const GRID: Rgb<u8> = Rgb([205, 205, 205]);
const EMPTY_CELL: [f32; 3] = [247.0, 251.0, 255.0];
const FULL_CELL: [f32; 3] = [8.0, 48.0, 107.0];

/// Renders the confusion matrix (rows: true class, columns: predicted class).
pub fn render_confusion_matrix(
    confusion: &ConfusionMatrix,
    class_names: &[String],
) -> Result<RgbImage> {
    let n = confusion.n_classes();
    if n == 0 {
        return Err(Error::InvalidArgument(
            "confusion matrix plot: no classes".into(),
        ));
    }
    if class_names.len() != n {
        return Err(Error::InvalidArgument(format!(
            "confusion matrix plot: {} class names for {n} classes",
            class_names.len()
        )));
    }
    let font = FontRef::try_from_slice(FONT_BYTES).expect("the bundled font parses");
    let layout = Layout::new(&font, confusion, class_names);
    let mut image = RgbImage::from_pixel(layout.width, layout.height, BACKGROUND);
    draw_titles(&mut image, &font, &layout);
    draw_labels(&mut image, &font, &layout, class_names);
    draw_cells(&mut image, &font, &layout, confusion);
    Ok(image)
}

/// Renders the confusion matrix and writes it to `path` as PNG.
pub fn save_confusion_matrix_png(
    confusion: &ConfusionMatrix,
    class_names: &[String],
    path: impl AsRef<Path>,
) -> Result<()> {
    let path = path.as_ref();
    let image = render_confusion_matrix(confusion, class_names)?;
    let mut png = Cursor::new(Vec::new());
    image
        .write_to(&mut png, ImageFormat::Png)
        .map_err(|e| Error::image(path.display(), e))?;
    std::fs::write(path, png.into_inner()).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Geometry of the picture.
struct Layout {
    cell: u32,
    /// Side of the cell grid, in pixels.
    grid: u32,
    label_scale: Option<PxScale>,
    show_counts: bool,
    /// Top-left corner of the cell grid.
    grid_x: u32,
    grid_y: u32,
    width: u32,
    height: u32,
}

const TITLE: &str = "Confusion matrix (colour: fraction of the true class)";
const ROW_AXIS: &str = "true class";
const COLUMN_AXIS: &str = "predicted class";

impl Layout {
    fn new(font: &FontRef, confusion: &ConfusionMatrix, names: &[String]) -> Self {
        let n = confusion.n_classes();
        let scale = PxScale::from(FONT_PX);
        let count_width = text_width(font, scale, &confusion.max_count().to_string()).ceil() as u32;
        let cell = if n <= SMALL_MATRIX {
            (count_width + 10).max(28)
        } else {
            (LARGE_GRID_PX / n).clamp(1, 28) as u32
        };
        let show_counts = count_width + 4 <= cell && FONT_PX as u32 + 4 <= cell;
        let label_px = FONT_PX.min(cell as f32 * 0.9);
        let label_scale = (label_px >= 7.0).then(|| PxScale::from(label_px));
        let label_width = label_scale.map_or(0, |s| {
            names
                .iter()
                .map(|name| text_width(font, s, &short_label(name)).ceil() as u32)
                .max()
                .unwrap_or(0)
        });
        let line = line_height(font, scale);
        let grid_x = PAD + line + PAD + label_width + PAD;
        let grid_y = PAD + line + PAD + label_width + PAD;
        let grid = cell * n as u32;
        let title_width = text_width(font, scale, TITLE).ceil() as u32 + 2 * PAD;
        Layout {
            cell,
            grid,
            label_scale,
            show_counts,
            grid_x,
            grid_y,
            width: (grid_x + grid + PAD).max(title_width),
            // Tall enough for the vertical row-axis title even with one or two classes.
            height: (grid_y + grid + PAD + line + PAD)
                .max(grid_y + text_width(font, scale, ROW_AXIS).ceil() as u32 + PAD),
        }
    }
}

fn draw_titles(image: &mut RgbImage, font: &FontRef, layout: &Layout) {
    let scale = PxScale::from(FONT_PX);
    blit(image, &rasterize(font, scale, TITLE), PAD, PAD, INK);
    // Axis titles centred on the grid: below it for columns, left of the labels for rows.
    let column_axis = rasterize(font, scale, COLUMN_AXIS);
    let x = layout.grid_x + layout.grid.saturating_sub(column_axis.width()) / 2;
    let y = layout.grid_y + layout.grid + PAD;
    blit(image, &column_axis, x, y, INK);
    let row_axis = rotate270(&rasterize(font, scale, ROW_AXIS));
    let y = layout.grid_y + layout.grid.saturating_sub(row_axis.height()) / 2;
    blit(image, &row_axis, PAD, y, INK);
}

fn draw_labels(image: &mut RgbImage, font: &FontRef, layout: &Layout, names: &[String]) {
    let Some(scale) = layout.label_scale else {
        return;
    };
    for (i, name) in names.iter().enumerate() {
        let text = rasterize(font, scale, &short_label(name));
        let offset = layout.cell * i as u32 + layout.cell.saturating_sub(text.height()) / 2;
        // Row label: right-aligned left of the grid.
        let x = layout.grid_x.saturating_sub(PAD + text.width());
        blit(image, &text, x, layout.grid_y + offset, INK);
        // Column label: vertical, reading upwards, ending just above the grid.
        let vertical = rotate270(&text);
        let x = layout.grid_x
            + layout.cell * i as u32
            + layout.cell.saturating_sub(vertical.width()) / 2;
        let y = layout.grid_y.saturating_sub(PAD + vertical.height());
        blit(image, &vertical, x, y, INK);
    }
}

fn draw_cells(image: &mut RgbImage, font: &FontRef, layout: &Layout, confusion: &ConfusionMatrix) {
    let n = confusion.n_classes();
    let scale = PxScale::from(FONT_PX);
    for truth in 0..n {
        let support = confusion.support(truth);
        for predicted in 0..n {
            let count = confusion.count(truth, predicted);
            let fraction = if support == 0 {
                0.0
            } else {
                count as f32 / support as f32
            };
            let x = layout.grid_x + layout.cell * predicted as u32;
            let y = layout.grid_y + layout.cell * truth as u32;
            fill_cell(image, x, y, layout.cell, cell_colour(fraction));
            if layout.show_counts {
                let text = rasterize(font, scale, &count.to_string());
                let ink = if fraction > 0.5 { BACKGROUND } else { INK };
                let tx = x + layout.cell.saturating_sub(text.width()) / 2;
                let ty = y + layout.cell.saturating_sub(text.height()) / 2;
                blit(image, &text, tx, ty, ink);
            }
        }
    }
}

/// A cell with a one-pixel grid line on its top and left (when cells are large enough).
fn fill_cell(image: &mut RgbImage, x: u32, y: u32, size: u32, colour: Rgb<u8>) {
    let lines = size >= 6;
    for dy in 0..size {
        for dx in 0..size {
            let on_line = lines && (dx == 0 || dy == 0);
            image.put_pixel(x + dx, y + dy, if on_line { GRID } else { colour });
        }
    }
}

fn cell_colour(fraction: f32) -> Rgb<u8> {
    let mix = |i: usize| (EMPTY_CELL[i] + (FULL_CELL[i] - EMPTY_CELL[i]) * fraction).round() as u8;
    Rgb([mix(0), mix(1), mix(2)])
}

/// Labels longer than [`MAX_LABEL_CHARS`] are cut with an ellipsis.
fn short_label(name: &str) -> String {
    if name.chars().count() <= MAX_LABEL_CHARS {
        name.to_string()
    } else {
        name.chars()
            .take(MAX_LABEL_CHARS - 1)
            .chain(['…'])
            .collect()
    }
}

fn line_height(font: &FontRef, scale: PxScale) -> u32 {
    let scaled = font.as_scaled(scale);
    (scaled.ascent() - scaled.descent()).ceil() as u32
}

pub(crate) fn text_width(font: &FontRef, scale: PxScale, text: &str) -> f32 {
    let scaled = font.as_scaled(scale);
    let mut width = 0.0;
    let mut previous = None;
    for c in text.chars() {
        let id = scaled.glyph_id(c);
        if let Some(prev) = previous {
            width += scaled.kern(prev, id);
        }
        width += scaled.h_advance(id);
        previous = Some(id);
    }
    width
}

/// Anti-aliased coverage of a line of text (255 = ink), one line high.
pub(crate) fn rasterize(font: &FontRef, scale: PxScale, text: &str) -> GrayImage {
    let scaled = font.as_scaled(scale);
    let width = text_width(font, scale, text).ceil().max(1.0) as u32;
    let mut coverage = GrayImage::new(width, line_height(font, scale).max(1));
    let mut caret = 0.0;
    let mut previous = None;
    for c in text.chars() {
        let id = scaled.glyph_id(c);
        if let Some(prev) = previous {
            caret += scaled.kern(prev, id);
        }
        let glyph = id.with_scale_and_position(scale, point(caret, scaled.ascent()));
        caret += scaled.h_advance(id);
        previous = Some(id);
        let Some(outline) = font.outline_glyph(glyph) else {
            continue;
        };
        let bounds = outline.px_bounds();
        outline.draw(|gx, gy, value| {
            let x = bounds.min.x as i32 + gx as i32;
            let y = bounds.min.y as i32 + gy as i32;
            if x >= 0 && y >= 0 && (x as u32) < coverage.width() && (y as u32) < coverage.height() {
                let pixel = coverage.get_pixel_mut(x as u32, y as u32);
                let ink = (value.clamp(0.0, 1.0) * 255.0).round() as u8;
                *pixel = Luma([pixel[0].max(ink)]);
            }
        });
    }
    coverage
}

/// Paints `colour` over `image` with the coverage as opacity, clipped to the image.
pub(crate) fn blit(image: &mut RgbImage, coverage: &GrayImage, x: u32, y: u32, colour: Rgb<u8>) {
    for (cx, cy, alpha) in coverage.enumerate_pixels() {
        let (px, py) = (x + cx, y + cy);
        if alpha[0] == 0 || px >= image.width() || py >= image.height() {
            continue;
        }
        let a = alpha[0] as f32 / 255.0;
        let pixel = image.get_pixel_mut(px, py);
        for (channel, ink) in pixel.0.iter_mut().zip(colour.0) {
            *channel = (*channel as f32 * (1.0 - a) + ink as f32 * a).round() as u8;
        }
    }
}
