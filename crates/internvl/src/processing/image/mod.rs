//! Decoding image files to 8-bit RGB exactly as Pillow's `Image.open(p).convert("RGB")`.
//!
//! The format is detected from the content (magic bytes), never from the file name.
//! Each format module returns Pillow's pixels for that format:
//!
//! * JPEG through libjpeg-turbo (the library Pillow links), ISLOW IDCT and fancy
//!   upsampling; CMYK/YCCK files are read Adobe-inverted and converted with Pillow's
//!   plain `cmyk2rgb` formula (no colour management).
//! * PNG, WebP and BMP through the `image` crate, followed by Pillow's mode conversions:
//!   alpha is dropped (never composited), grey is replicated, 16-bit samples keep their
//!   high byte, except 16-bit greyscale PNGs which Pillow opens as `I;16` and clamps to
//!   255; 16-bit BMPs are re-expanded with Pillow's truncating `v * 255 / 31`.
//! * GIF: the first frame on a canvas the size of the screen (grown to fit the frame),
//!   filled with the transparency index (else 0), looked up in the frame's palette;
//!   indices past the end of the palette are black, and a palette that is an identity
//!   grey ramp (or no palette at all) maps index `i` to grey `i`.

mod bmp;
mod convert;
mod gif;
mod jpeg;
mod png;

use std::path::Path;

use ::image::RgbImage;

use crate::{Error, Result};

/// Largest accepted image, in pixels: Pillow's decompression-bomb error threshold
/// (`2 * Image.MAX_IMAGE_PIXELS`). Larger headers are rejected before any pixel memory
/// is allocated.
pub const MAX_PIXELS: u64 = 2 * 89_478_485;

/// The message for files that are none of the supported formats.
const UNSUPPORTED: &str = "not a supported image format (PNG, JPEG, WebP, GIF, BMP)";

/// A decoding failure inside a format module; [`decode_rgb`] adds where the bytes came from.
type DecodeResult<T> = std::result::Result<T, String>;

/// Reads and decodes the image file at `path` to RGB (see [`decode_rgb`]).
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode_rgb(&bytes, &path.display().to_string())
}

/// Decodes an in-memory PNG, JPEG, WebP, GIF (first frame) or BMP image to RGB with
/// Pillow's pixel values. `origin` names the source in error messages (a path, a URL,
/// `<stdin>`...).
pub fn decode_rgb(bytes: &[u8], origin: &str) -> Result<RgbImage> {
    let format = Format::detect(bytes).ok_or_else(|| Error::image(origin, UNSUPPORTED))?;
    let decoded = match format {
        Format::Png => png::decode(bytes),
        Format::Jpeg => jpeg::decode(bytes),
        Format::Gif => gif::decode(bytes),
        Format::WebP => convert::decode_webp(bytes),
        Format::Bmp => bmp::decode(bytes),
    };
    decoded.map_err(|reason| Error::image(origin, reason))
}

/// The container formats we decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Png,
    Jpeg,
    Gif,
    WebP,
    Bmp,
}

impl Format {
    /// Recognises a format by its signature, with the same prefixes Pillow's plugins accept.
    fn detect(bytes: &[u8]) -> Option<Format> {
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(Format::Png)
        } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(Format::Jpeg)
        } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
            Some(Format::Gif)
        } else if bytes.len() >= 12 && bytes.starts_with(b"RIFF") && &bytes[8..12] == b"WEBP" {
            Some(Format::WebP)
        } else if bytes.starts_with(b"BM") {
            Some(Format::Bmp)
        } else {
            None
        }
    }

    /// The name used in error messages.
    fn name(self) -> &'static str {
        match self {
            Format::Png => "PNG",
            Format::Jpeg => "JPEG",
            Format::Gif => "GIF",
            Format::WebP => "WebP",
            Format::Bmp => "BMP",
        }
    }
}

/// Rejects empty and absurdly large images before their pixels are allocated.
fn check_dimensions(width: u64, height: u64) -> DecodeResult<()> {
    if width == 0 || height == 0 {
        return Err(format!("image has zero width or height ({width}x{height})"));
    }
    match width.checked_mul(height) {
        Some(pixels) if pixels <= MAX_PIXELS => Ok(()),
        _ => Err(format!(
            "image is too large ({width}x{height} pixels; the limit is {MAX_PIXELS} pixels)"
        )),
    }
}

/// The error for data a decoder rejected part-way.
fn corrupt(format: Format, detail: impl std::fmt::Display) -> String {
    format!("truncated or corrupt {} data: {detail}", format.name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_detected_by_content() {
        assert_eq!(Format::detect(b"\x89PNG\r\n\x1a\nrest"), Some(Format::Png));
        assert_eq!(
            Format::detect(&[0xFF, 0xD8, 0xFF, 0xE0]),
            Some(Format::Jpeg)
        );
        assert_eq!(Format::detect(b"GIF89a...."), Some(Format::Gif));
        assert_eq!(Format::detect(b"RIFF\0\0\0\0WEBPVP8 "), Some(Format::WebP));
        assert_eq!(Format::detect(b"BM\0\0"), Some(Format::Bmp));
        assert_eq!(Format::detect(b"hello world"), None);
        assert_eq!(Format::detect(b""), None);
    }

    #[test]
    fn dimension_limits() {
        assert!(check_dimensions(1, 1).is_ok());
        assert!(check_dimensions(20000, 1).is_ok());
        assert!(check_dimensions(0, 5)
            .unwrap_err()
            .contains("zero width or height"));
        assert!(check_dimensions(100_000, 100_000)
            .unwrap_err()
            .contains("too large"));
        assert!(check_dimensions(u64::MAX, 2)
            .unwrap_err()
            .contains("too large"));
    }
}
