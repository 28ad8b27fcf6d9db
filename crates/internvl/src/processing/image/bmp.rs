//! BMP: the `image` crate's decoder, with Pillow's expansion of 16-bit pixels.

use std::io::Cursor;

use ::image::codecs::bmp::BmpDecoder;
use ::image::RgbImage;

use super::convert::{decode_dynamic, pillow_rgb};
use super::{corrupt, DecodeResult, Format};

pub(super) fn decode(bytes: &[u8]) -> DecodeResult<RgbImage> {
    let decoder = BmpDecoder::new(Cursor::new(bytes)).map_err(|e| corrupt(Format::Bmp, e))?;
    let mut rgb = pillow_rgb(decode_dynamic(decoder, Format::Bmp)?);
    if let Some(bits) = sixteen_bit_channel_bits(bytes) {
        repack_like_pillow(&mut rgb, bits);
    }
    Ok(rgb)
}

/// Bits per R, G, B channel of a 16-bit BMP in a layout Pillow reads ("BGR;15" or
/// "BGR;16"), or `None` for other files.
fn sixteen_bit_channel_bits(bytes: &[u8]) -> Option<[u32; 3]> {
    let u16_at = |at: usize| Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
    const BI_RGB: u32 = 0;
    const BI_BITFIELDS: u32 = 3;
    const BI_ALPHABITFIELDS: u32 = 6;
    // OS/2 core headers (12 bytes) have no 16-bit mode.
    if u32_at(14)? < 40 || u16_at(28)? != 16 {
        return None;
    }
    match u32_at(30)? {
        BI_RGB => Some([5, 5, 5]),
        BI_BITFIELDS | BI_ALPHABITFIELDS => match (u32_at(54)?, u32_at(58)?, u32_at(62)?) {
            (0x7C00, 0x3E0, 0x1F) => Some([5, 5, 5]),
            (0xF800, 0x7E0, 0x1F) => Some([5, 6, 5]),
            _ => None,
        },
        _ => None,
    }
}

/// The `image` crate expands an n-bit channel value v to round(v * 255 / max); Pillow
/// truncates (v * 255 / max). Recover v from the rounded value and expand it Pillow's way.
fn repack_like_pillow(rgb: &mut RgbImage, channel_bits: [u32; 3]) {
    for pixel in rgb.pixels_mut() {
        for (value, bits) in pixel.0.iter_mut().zip(channel_bits) {
            let max = (1u32 << bits) - 1;
            let code = (u32::from(*value) * max + 127) / 255;
            *value = (code * 255 / max) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_bit_values_are_expanded_with_truncation() {
        let rounded: Vec<u8> = (0..32u32).map(|v| ((v * 255 + 15) / 31) as u8).collect();
        let mut img = RgbImage::from_fn(32, 1, |x, _| ::image::Rgb([rounded[x as usize]; 3]));
        repack_like_pillow(&mut img, [5, 5, 5]);
        let expected: Vec<u8> = (0..32u32).map(|v| (v * 255 / 31) as u8).collect();
        let got: Vec<u8> = img.pixels().map(|p| p.0[0]).collect();
        assert_eq!(got, expected);
    }
}
