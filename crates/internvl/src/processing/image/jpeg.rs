//! JPEG through libjpeg-turbo (TurboJPEG), the library Pillow links.
//!
//! TurboJPEG's defaults are Pillow's: the accurate integer IDCT (ISLOW) and fancy
//! (smooth) chroma upsampling, so the pixels are identical.

use ::image::RgbImage;
use turbojpeg::{Colorspace, Decompressor, Image, PixelFormat};

use super::convert::map_pixels;
use super::{check_dimensions, corrupt, DecodeResult, Format};

pub(super) fn decode(bytes: &[u8]) -> DecodeResult<RgbImage> {
    let mut decompressor =
        Decompressor::new().map_err(|e| format!("cannot start libjpeg-turbo: {e}"))?;
    let header = decompressor
        .read_header(bytes)
        .map_err(|e| corrupt(Format::Jpeg, e))?;
    check_dimensions(header.width as u64, header.height as u64)?;
    // Both fit in u32: their product is at most MAX_PIXELS.
    let (width, height) = (header.width as u32, header.height as u32);
    match header.colorspace {
        Colorspace::CMYK | Colorspace::YCCK => {
            let cmyk = decompress(&mut decompressor, bytes, width, height, PixelFormat::CMYK)?;
            Ok(map_pixels(
                width,
                height,
                &cmyk,
                4,
                pillow_inverted_cmyk_to_rgb,
            ))
        }
        // Greyscale is replicated by libjpeg itself, as Pillow's L -> RGB does.
        _ => {
            let rgb = decompress(&mut decompressor, bytes, width, height, PixelFormat::RGB)?;
            Ok(RgbImage::from_raw(width, height, rgb).expect("3 bytes per decoded pixel"))
        }
    }
}

fn decompress(
    decompressor: &mut Decompressor,
    bytes: &[u8],
    width: u32,
    height: u32,
    format: PixelFormat,
) -> DecodeResult<Vec<u8>> {
    let (width, height) = (width as usize, height as usize);
    let pitch = width * format.size();
    let mut pixels = vec![0; pitch * height];
    let output = Image {
        pixels: pixels.as_mut_slice(),
        width,
        pitch,
        height,
        format,
    };
    decompressor
        .decompress(bytes, output)
        .map_err(|e| corrupt(Format::Jpeg, e))?;
    Ok(pixels)
}

/// Pillow's result for one CMYK sample as stored in the file.
///
/// Pillow always reads 4-channel JPEGs as Adobe-inverted CMYK (raw mode "CMYK;I"), then
/// converts to RGB without colour management: `nk = 255 - K`, `R = nk - nk * C / 255`
/// with its rounded integer division `MULDIV255`.
fn pillow_inverted_cmyk_to_rgb(stored: &[u8]) -> [u8; 3] {
    let [c, m, y, k] = [stored[0], stored[1], stored[2], stored[3]].map(|v| 255 - i32::from(v));
    let not_black = 255 - k;
    [c, m, y].map(|ink| (not_black - muldiv255(ink, not_black)).clamp(0, 255) as u8)
}

/// `a * b / 255` rounded, computed Pillow's way (`MULDIV255` in libImaging).
fn muldiv255(a: i32, b: i32) -> i32 {
    let t = a * b + 128;
    ((t >> 8) + t) >> 8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn muldiv255_matches_exact_rounding() {
        for a in 0..=255 {
            for b in 0..=255 {
                let exact = (f64::from(a * b) / 255.0).round() as i32;
                assert_eq!(muldiv255(a, b), exact, "{a} * {b}");
            }
        }
    }

    #[test]
    fn stored_cmyk_extremes() {
        // Stored values are inverted: 255 means no ink.
        assert_eq!(
            pillow_inverted_cmyk_to_rgb(&[255, 255, 255, 255]),
            [255, 255, 255]
        );
        assert_eq!(pillow_inverted_cmyk_to_rgb(&[255, 255, 255, 0]), [0, 0, 0]);
        assert_eq!(
            pillow_inverted_cmyk_to_rgb(&[0, 255, 255, 255]),
            [0, 255, 255]
        );
    }
}
