//! GIF: the first frame, composed the way Pillow's GifImagePlugin does.

use std::borrow::Cow;
use std::num::NonZeroU64;

use ::image::RgbImage;
use gif::{ColorOutput, DecodeOptions, MemoryLimit};

use super::convert::map_pixels;
use super::{check_dimensions, corrupt, DecodeResult, Format, MAX_PIXELS};

/// Byte offset of the logical screen descriptor's flags, and its "global colour table" bit.
const SCREEN_FLAGS: usize = 10;
const HAS_GLOBAL_PALETTE: u8 = 0x80;
/// Header (6) + logical screen descriptor (7).
const HEADER_LEN: usize = 13;

pub(super) fn decode(bytes: &[u8]) -> DecodeResult<RgbImage> {
    let bytes = with_grey_palette_if_missing(bytes);
    let mut options = DecodeOptions::new();
    options.set_color_output(ColorOutput::Indexed);
    options.set_memory_limit(MemoryLimit::Bytes(
        NonZeroU64::new(MAX_PIXELS).expect("MAX_PIXELS is not zero"),
    ));
    let mut decoder = options
        .read_info(bytes.as_ref())
        .map_err(|e| corrupt(Format::Gif, e))?;
    let screen = (u32::from(decoder.width()), u32::from(decoder.height()));
    let global_palette = decoder.global_palette().map(<[u8]>::to_vec);
    let frame = decoder
        .next_frame_info()
        .map_err(|e| corrupt(Format::Gif, e))?
        .ok_or_else(|| corrupt(Format::Gif, "no image frame"))?;
    let rect = FrameRect {
        left: u32::from(frame.left),
        top: u32::from(frame.top),
        width: u32::from(frame.width),
        height: u32::from(frame.height),
    };
    // Pillow fills the canvas with the transparency index (else 0) before decoding.
    let background = frame.transparent.unwrap_or(0);
    let colours = colour_table(frame.palette.as_deref().or(global_palette.as_deref()));

    // Pillow grows the canvas when the first frame extends past the screen.
    let canvas = (
        screen.0.max(rect.left + rect.width),
        screen.1.max(rect.top + rect.height),
    );
    check_dimensions(canvas.0.into(), canvas.1.into())?;
    let mut frame_indices = vec![0; rect.width as usize * rect.height as usize];
    decoder
        .read_into_buffer(&mut frame_indices)
        .map_err(|e| corrupt(Format::Gif, e))?;

    let indices = compose(canvas, background, &rect, &frame_indices);
    Ok(map_pixels(canvas.0, canvas.1, &indices, 1, |i| {
        colours[usize::from(i[0])]
    }))
}

/// Where the first frame sits on the canvas.
struct FrameRect {
    left: u32,
    top: u32,
    width: u32,
    height: u32,
}

/// The canvas's palette indices: `background` everywhere, the frame pasted at its offset.
fn compose(canvas: (u32, u32), background: u8, rect: &FrameRect, frame: &[u8]) -> Vec<u8> {
    let canvas_width = canvas.0 as usize;
    let mut indices = vec![background; canvas_width * canvas.1 as usize];
    if rect.width == 0 {
        return indices;
    }
    for (row, source) in frame.chunks_exact(rect.width as usize).enumerate() {
        let start = (rect.top as usize + row) * canvas_width + rect.left as usize;
        indices[start..start + source.len()].copy_from_slice(source);
    }
    indices
}

/// Index -> RGB as Pillow resolves it.
///
/// Pillow opens a GIF whose palette is an identity grey ramp (entry i == (i, i, i)), or
/// that has no palette, as mode "L": index i is grey i even past the palette's end.
/// Otherwise (mode "P") entries past the end of the palette are black.
fn colour_table(palette: Option<&[u8]>) -> [[u8; 3]; 256] {
    let palette = palette.unwrap_or_default();
    let mut table = [[0u8; 3]; 256];
    if is_grey_ramp(palette) {
        for (index, entry) in table.iter_mut().enumerate() {
            *entry = [index as u8; 3];
        }
    } else {
        for (entry, rgb) in table.iter_mut().zip(palette.chunks_exact(3)) {
            *entry = [rgb[0], rgb[1], rgb[2]];
        }
    }
    table
}

fn is_grey_ramp(palette: &[u8]) -> bool {
    palette
        .chunks(3)
        .enumerate()
        .all(|(index, rgb)| rgb.iter().all(|&v| usize::from(v) == index))
}

/// The gif crate refuses frames without any palette, which Pillow reads as greyscale.
/// Giving such files an identity grey global palette yields the same pixels.
fn with_grey_palette_if_missing(bytes: &[u8]) -> Cow<'_, [u8]> {
    match bytes.get(SCREEN_FLAGS) {
        Some(flags) if bytes.len() >= HEADER_LEN && flags & HAS_GLOBAL_PALETTE == 0 => {
            let mut patched = Vec::with_capacity(bytes.len() + 768);
            patched.extend_from_slice(&bytes[..HEADER_LEN]);
            // Global table present, 2^(7+1) = 256 entries.
            patched[SCREEN_FLAGS] |= HAS_GLOBAL_PALETTE | 0x07;
            patched.extend((0..=255u8).flat_map(|v| [v; 3]));
            patched.extend_from_slice(&bytes[HEADER_LEN..]);
            Cow::Owned(patched)
        }
        _ => Cow::Borrowed(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_palettes_pad_with_black_unless_they_are_a_grey_ramp() {
        let table = colour_table(Some(&[255, 0, 0, 0, 0, 255]));
        assert_eq!(
            (table[1], table[2], table[200]),
            ([0, 0, 255], [0; 3], [0; 3])
        );
        let ramp = colour_table(Some(&[0, 0, 0, 1, 1, 1]));
        assert_eq!(ramp[200], [200; 3]);
        assert_eq!(colour_table(None)[7], [7; 3]);
    }

    #[test]
    fn frame_is_pasted_at_its_offset() {
        let rect = FrameRect {
            left: 1,
            top: 1,
            width: 2,
            height: 1,
        };
        assert_eq!(compose((3, 2), 9, &rect, &[4, 5]), vec![9, 9, 9, 9, 4, 5]);
    }
}
