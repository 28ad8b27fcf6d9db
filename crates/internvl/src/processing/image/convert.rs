//! Pillow's `convert("RGB")` for the pixel layouts the `image` crate decodes to.

use std::io::Cursor;

use ::image::codecs::webp::WebPDecoder;
use ::image::{DynamicImage, ImageDecoder, Limits, RgbImage};

use super::{check_dimensions, corrupt, DecodeResult, Format, MAX_PIXELS};

/// Decodes a WebP file (first frame of an animation).
pub(super) fn decode_webp(bytes: &[u8]) -> DecodeResult<RgbImage> {
    let decoder = WebPDecoder::new(Cursor::new(bytes)).map_err(|e| corrupt(Format::WebP, e))?;
    Ok(pillow_rgb(decode_dynamic(decoder, Format::WebP)?))
}

/// Runs an `image` decoder after checking its dimensions, with a memory cap that fits
/// the largest accepted image at 16-bit RGBA (plus room for metadata chunks).
pub(super) fn decode_dynamic(
    mut decoder: impl ImageDecoder,
    format: Format,
) -> DecodeResult<DynamicImage> {
    let (width, height) = decoder.dimensions();
    check_dimensions(width.into(), height.into())?;
    let mut limits = Limits::no_limits();
    limits.max_alloc = Some(MAX_PIXELS * 8 + (64 << 20));
    decoder.set_limits(limits).map_err(|e| corrupt(format, e))?;
    DynamicImage::from_decoder(decoder).map_err(|e| corrupt(format, e))
}

/// Pillow's pixels for `convert("RGB")` of an image decoded by the `image` crate.
///
/// Alpha is dropped without compositing; grey is replicated; 16-bit samples keep their
/// high byte (Pillow's `;16B` raw modes). Only 16-bit greyscale PNGs differ (Pillow opens
/// them as `I;16` and clamps): the PNG module handles those with [`clamped_grey16_rgb`].
pub(super) fn pillow_rgb(image: DynamicImage) -> RgbImage {
    let (width, height) = (image.width(), image.height());
    match image {
        DynamicImage::ImageRgb8(rgb) => rgb,
        DynamicImage::ImageRgba8(img) => map_pixels(width, height, img.as_raw(), 4, rgb_of),
        DynamicImage::ImageLuma8(img) => map_pixels(width, height, img.as_raw(), 1, grey_of),
        DynamicImage::ImageLumaA8(img) => map_pixels(width, height, img.as_raw(), 2, grey_of),
        DynamicImage::ImageRgb16(img) => map_pixels(width, height, img.as_raw(), 3, rgb16_of),
        DynamicImage::ImageRgba16(img) => map_pixels(width, height, img.as_raw(), 4, rgb16_of),
        DynamicImage::ImageLuma16(img) => map_pixels(width, height, img.as_raw(), 1, grey16_of),
        DynamicImage::ImageLumaA16(img) => map_pixels(width, height, img.as_raw(), 2, grey16_of),
        other => other.to_rgb8(),
    }
}

/// Pillow's `I;16` -> RGB conversion: each grey value clamped to 255 (not scaled).
pub(super) fn clamped_grey16_rgb(image: DynamicImage) -> RgbImage {
    let (width, height) = (image.width(), image.height());
    let clamp = |p: &[u16]| [p[0].min(255) as u8; 3];
    match image {
        DynamicImage::ImageLuma16(img) => map_pixels(width, height, img.as_raw(), 1, clamp),
        // A tRNS chunk makes the decoder add alpha; Pillow ignores it.
        DynamicImage::ImageLumaA16(img) => map_pixels(width, height, img.as_raw(), 2, clamp),
        other => pillow_rgb(other),
    }
}

/// Builds an RGB image from interleaved samples, `channels` per pixel.
pub(super) fn map_pixels<T: Copy>(
    width: u32,
    height: u32,
    samples: &[T],
    channels: usize,
    to_rgb: impl Fn(&[T]) -> [u8; 3],
) -> RgbImage {
    let data: Vec<u8> = samples.chunks_exact(channels).flat_map(to_rgb).collect();
    RgbImage::from_raw(width, height, data).expect("one RGB triple per decoded pixel")
}

fn rgb_of(pixel: &[u8]) -> [u8; 3] {
    [pixel[0], pixel[1], pixel[2]]
}

fn grey_of(pixel: &[u8]) -> [u8; 3] {
    [pixel[0]; 3]
}

fn high_byte(sample: u16) -> u8 {
    (sample >> 8) as u8
}

fn rgb16_of(pixel: &[u16]) -> [u8; 3] {
    [
        high_byte(pixel[0]),
        high_byte(pixel[1]),
        high_byte(pixel[2]),
    ]
}

fn grey16_of(pixel: &[u16]) -> [u8; 3] {
    [high_byte(pixel[0]); 3]
}
