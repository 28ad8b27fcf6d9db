//! PNG: the `image` crate's decoder plus Pillow's mode rules.

use std::io::Cursor;

use ::image::codecs::png::PngDecoder;
use ::image::{Limits, RgbImage};

use super::convert::{clamped_grey16_rgb, decode_dynamic, pillow_rgb};
use super::{check_dimensions, corrupt, DecodeResult, Format};

/// PNG colour type 0: greyscale without alpha.
const COLOR_TYPE_GREY: u8 = 0;

pub(super) fn decode(bytes: &[u8]) -> DecodeResult<RgbImage> {
    let header = Ihdr::parse(bytes)
        .ok_or_else(|| corrupt(Format::Png, "missing or incomplete IHDR header"))?;
    // Checked here because the PNG decoder rejects zero sizes with a vaguer message.
    check_dimensions(header.width.into(), header.height.into())?;
    let decoder = PngDecoder::with_limits(Cursor::new(bytes), Limits::no_limits())
        .map_err(|e| corrupt(Format::Png, e))?;
    let image = decode_dynamic(decoder, Format::Png)?;
    // The decoder turns grey16 + tRNS into grey+alpha, so use the header to recognise
    // the files Pillow opens as `I;16`.
    Ok(if header.is_grey16() {
        clamped_grey16_rgb(image)
    } else {
        pillow_rgb(image)
    })
}

/// The fields of the IHDR chunk we need before decoding.
struct Ihdr {
    width: u32,
    height: u32,
    bit_depth: u8,
    color_type: u8,
}

impl Ihdr {
    /// Reads IHDR, which must directly follow the 8-byte signature.
    fn parse(bytes: &[u8]) -> Option<Ihdr> {
        let chunk = bytes.get(12..12 + 4 + 13)?;
        if &chunk[..4] != b"IHDR" {
            return None;
        }
        let be_u32 = |at: usize| {
            u32::from_be_bytes([chunk[at], chunk[at + 1], chunk[at + 2], chunk[at + 3]])
        };
        Some(Ihdr {
            width: be_u32(4),
            height: be_u32(8),
            bit_depth: chunk[12],
            color_type: chunk[13],
        })
    }

    fn is_grey16(&self) -> bool {
        self.bit_depth == 16 && self.color_type == COLOR_TYPE_GREY
    }
}
