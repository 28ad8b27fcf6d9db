//! Pixel-value transforms: torchvision's ToTensor/Normalize, transformers'
//! `CLIPImageProcessor`, and InternVL-Chat's dynamic tiling.

mod clip;
mod py_set;
mod tiling;

use candle_core::{Device, Tensor};
use image::RgbImage;

use super::resize::resize_bicubic;
use crate::{Error, Result};

pub use clip::{ClipImageProcessor, CropSize, ResizeTarget};
pub use tiling::{candidate_grids, closest_grid, dynamic_preprocess};

/// ImageNet channel means, as used by InternVL's `build_transform`.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations, as used by InternVL's `build_transform`.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// torchvision `ToTensor()` then `Normalize(mean, std)`: a `[3, H, W]` f32 CPU tensor
/// with `(u8 / 255 - mean) / std`, every step in f32 as torch computes it.
pub fn to_normalized_tensor(img: &RgbImage, mean: [f32; 3], std: [f32; 3]) -> Tensor {
    planar_tensor(img, |value, channel| {
        (f32::from(value) / 255.0 - mean[channel]) / std[channel]
    })
}

/// torchvision `Resize((height, width), BICUBIC)` on a PIL image, `ToTensor()` and
/// ImageNet `Normalize`: InternVL's `build_transform` for one image or tile.
///
/// Fails with [`Error::InvalidArgument`] when the target or the image is empty.
pub fn resize_and_normalize(img: &RgbImage, height: u32, width: u32) -> Result<Tensor> {
    if height == 0 || width == 0 || img.width() == 0 || img.height() == 0 {
        return Err(Error::InvalidArgument(format!(
            "cannot resize a {}x{} image to {width}x{height} (width x height): sizes must be positive",
            img.width(),
            img.height()
        )));
    }
    let resized = resize_bicubic(img, width, height);
    Ok(to_normalized_tensor(&resized, IMAGENET_MEAN, IMAGENET_STD))
}

/// A `[3, H, W]` f32 CPU tensor whose values are `value_of(u8 sample, channel)`.
///
/// The 256 possible values of each channel are computed once, which is both faster and
/// guaranteed to give the same float for the same input.
fn planar_tensor(img: &RgbImage, value_of: impl Fn(u8, usize) -> f32) -> Tensor {
    let lookup: Vec<[f32; 256]> = (0..3)
        .map(|channel| std::array::from_fn(|value| value_of(value as u8, channel)))
        .collect();
    let (width, height) = (img.width() as usize, img.height() as usize);
    let plane = width * height;
    let mut data = vec![0f32; 3 * plane];
    for (index, pixel) in img.as_raw().chunks_exact(3).enumerate() {
        for (channel, &value) in pixel.iter().enumerate() {
            data[channel * plane + index] = lookup[channel][usize::from(value)];
        }
    }
    Tensor::from_vec(data, (3, height, width), &Device::Cpu)
        .expect("buffer length is 3 * height * width")
}
