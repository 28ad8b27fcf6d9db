//! transformers' `CLIPImageProcessor` (v4.37), as configured by `preprocessor_config.json`.

use std::path::{Path, PathBuf};

use candle_core::Tensor;
use image::{Rgb, RgbImage};
use serde::Deserialize;

use super::planar_tensor;
use crate::processing::resize::resize_bicubic;
use crate::{Error, Result};

/// transformers' `PILImageResampling.BICUBIC`, the only filter implemented.
const BICUBIC: u32 = 3;
/// transformers' OPENAI_CLIP_MEAN / OPENAI_CLIP_STD: the defaults when a config omits them.
const OPENAI_CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
const OPENAI_CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

/// How `CLIPImageProcessor` resizes before cropping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeTarget {
    /// Scale so that the shorter side equals this many pixels, keeping the aspect ratio
    /// (the longer side becomes `int(size * long / short)`).
    ShortestEdge(u32),
    /// Resize to exactly this size, ignoring the aspect ratio.
    Exact {
        /// Output height.
        height: u32,
        /// Output width.
        width: u32,
    },
}

/// The size of the center crop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropSize {
    /// Crop height.
    pub height: u32,
    /// Crop width.
    pub width: u32,
}

/// transformers' `CLIPImageProcessor`: resize (PIL bicubic), center crop, rescale,
/// normalize, reproduced exactly (f64 rescale cast to f32, f32 normalisation).
#[derive(Debug, Clone, PartialEq)]
pub struct ClipImageProcessor {
    /// Whether to resize first.
    pub do_resize: bool,
    /// The resize rule.
    pub size: ResizeTarget,
    /// Whether to center-crop after resizing.
    pub do_center_crop: bool,
    /// The crop size.
    pub crop_size: CropSize,
    /// Whether to multiply pixel values by `rescale_factor`.
    pub do_rescale: bool,
    /// The rescale multiplier (default 1/255), applied in f64 like numpy.
    pub rescale_factor: f64,
    /// Whether to normalise with `image_mean` / `image_std`.
    pub do_normalize: bool,
    /// Per-channel means, as f32 (numpy casts them to the image's float32 dtype).
    pub image_mean: [f32; 3],
    /// Per-channel standard deviations, as f32.
    pub image_std: [f32; 3],
}

impl ClipImageProcessor {
    /// Reads a `preprocessor_config.json`. Keys other than the processor's own are ignored;
    /// missing keys take transformers' `CLIPImageProcessor` defaults. `resample` must be 3
    /// (bicubic).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&text, path)
    }

    /// Parses the JSON text of a `preprocessor_config.json`; `path` is used in errors.
    pub fn from_json(text: &str, path: &Path) -> Result<Self> {
        let config_error = |reason: String| Error::Config {
            path: PathBuf::from(path),
            reason,
        };
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| config_error(e.to_string()))?;
        raw.validate().map_err(config_error)
    }

    /// The `(height, width)` of every output when it does not depend on the input: the
    /// crop size, or the exact resize size when not cropping; `None` for shortest-edge
    /// resizing without a crop. (An image smaller than the crop can come out one pixel
    /// short: see [`Self::preprocess`].)
    pub fn output_size(&self) -> Option<(u32, u32)> {
        match (self.do_center_crop, self.do_resize, self.size) {
            (true, _, _) => Some((self.crop_size.height, self.crop_size.width)),
            (false, true, ResizeTarget::Exact { height, width }) => Some((height, width)),
            _ => None,
        }
    }

    /// Preprocesses one RGB image into a `[3, H, W]` f32 tensor.
    ///
    /// Like transformers, a crop larger than the resized image pads with zeros (before
    /// rescaling and normalising); when the size difference is odd, transformers' index
    /// arithmetic yields one row/column fewer than the crop size, and so does this.
    pub fn preprocess(&self, img: &RgbImage) -> Result<Tensor> {
        let resized = if self.do_resize {
            let (height, width) = self.resized_size(img.width(), img.height())?;
            resize_bicubic(img, width, height)
        } else {
            img.clone()
        };
        let cropped = if self.do_center_crop {
            center_crop_with_padding(&resized, self.crop_size)
        } else {
            resized
        };
        Ok(planar_tensor(&cropped, |value, channel| {
            self.pixel_value(value, channel)
        }))
    }

    /// Preprocesses several images into one `[B, 3, H, W]` tensor; they must come out the
    /// same size (always true with a center crop).
    pub fn preprocess_batch(&self, images: &[RgbImage]) -> Result<Tensor> {
        let tensors = images
            .iter()
            .map(|img| self.preprocess(img))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::stack(&tensors, 0)?)
    }

    /// transformers' `get_resize_output_image_size` as `(height, width)`.
    fn resized_size(&self, width: u32, height: u32) -> Result<(u32, u32)> {
        if width == 0 || height == 0 {
            return Err(Error::InvalidArgument(format!(
                "cannot resize an empty {width}x{height} image"
            )));
        }
        Ok(match self.size {
            ResizeTarget::Exact { height, width } => (height, width),
            ResizeTarget::ShortestEdge(size) => {
                let (short, long) = (width.min(height), width.max(height));
                // Python: int(size * long / short), a true (f64) division then truncation.
                let new_long = (u64::from(size) * u64::from(long)) as f64 / f64::from(short);
                let new_long = new_long as u32;
                if width <= height {
                    (new_long, size)
                } else {
                    (size, new_long)
                }
            }
        })
    }

    /// The final value of one 8-bit sample of `channel`.
    fn pixel_value(&self, value: u8, channel: usize) -> f32 {
        // numpy: uint8 * python float is float64, then `.astype(float32)`.
        let value = if self.do_rescale {
            (f64::from(value) * self.rescale_factor) as f32
        } else {
            f32::from(value)
        };
        if self.do_normalize {
            (value - self.image_mean[channel]) / self.image_std[channel]
        } else {
            value
        }
    }
}

/// transformers' `center_crop` on an 8-bit image: `top = (h - crop_h) // 2` (floor), and
/// zero padding when the image is smaller than the crop.
fn center_crop_with_padding(img: &RgbImage, crop: CropSize) -> RgbImage {
    let rows = crop_axis(img.height(), crop.height);
    let columns = crop_axis(img.width(), crop.width);
    RgbImage::from_fn(columns.len, rows.len, |x, y| {
        match (columns.source(x, img.width()), rows.source(y, img.height())) {
            (Some(sx), Some(sy)) => *img.get_pixel(sx, sy),
            _ => Rgb([0, 0, 0]),
        }
    })
}

/// The crop along one axis: output index `i` reads source index `first_source + i`.
struct CropAxis {
    first_source: i64,
    len: u32,
}

impl CropAxis {
    fn source(&self, index: u32, source_len: u32) -> Option<u32> {
        let source = self.first_source + i64::from(index);
        (0..i64::from(source_len))
            .contains(&source)
            .then_some(source as u32)
    }
}

/// transformers' crop-or-pad index arithmetic for one axis.
///
/// The image is conceptually padded to `max(crop, size)` with `(padded - size) // 2` zeros
/// before it, and `[top + pad, top + pad + crop)` is taken, clipped to the padded extent.
/// When the image is large enough this is the plain crop `[top, top + crop)`.
fn crop_axis(size: u32, crop: u32) -> CropAxis {
    let (size, crop) = (i64::from(size), i64::from(crop));
    let top = (size - crop).div_euclid(2);
    let padded = crop.max(size);
    let pad = (padded - size) / 2;
    let start = (top + pad).max(0);
    let end = (top + pad + crop).min(padded);
    CropAxis {
        first_source: start - pad,
        len: (end - start).max(0) as u32,
    }
}

/// `preprocessor_config.json` as written by transformers.
#[derive(Deserialize)]
struct RawConfig {
    #[serde(default = "yes")]
    do_resize: bool,
    #[serde(default)]
    size: Option<RawSize>,
    #[serde(default = "yes")]
    do_center_crop: bool,
    #[serde(default)]
    crop_size: Option<RawSize>,
    #[serde(default = "yes")]
    do_rescale: bool,
    #[serde(default)]
    rescale_factor: Option<f64>,
    #[serde(default = "yes")]
    do_normalize: bool,
    #[serde(default)]
    image_mean: Option<Vec<f64>>,
    #[serde(default)]
    image_std: Option<Vec<f64>>,
    #[serde(default)]
    resample: Option<u32>,
}

fn yes() -> bool {
    true
}

/// A size as transformers accepts it: an int, `[height, width]`, or a dict.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawSize {
    Square(u32),
    Pair([u32; 2]),
    Dict {
        shortest_edge: Option<u32>,
        height: Option<u32>,
        width: Option<u32>,
    },
}

impl RawConfig {
    fn validate(self) -> std::result::Result<ClipImageProcessor, String> {
        let resample = self.resample.unwrap_or(BICUBIC);
        if resample != BICUBIC {
            return Err(format!(
                "resample = {resample} is not supported (only 3, bicubic, is implemented)"
            ));
        }
        let size = resize_target(self.size.unwrap_or(RawSize::Dict {
            shortest_edge: Some(224),
            height: None,
            width: None,
        }))?;
        let crop_size = crop_size(self.crop_size.unwrap_or(RawSize::Square(224)))?;
        Ok(ClipImageProcessor {
            do_resize: self.do_resize,
            size,
            do_center_crop: self.do_center_crop,
            crop_size,
            do_rescale: self.do_rescale,
            rescale_factor: self.rescale_factor.unwrap_or(1.0 / 255.0),
            do_normalize: self.do_normalize,
            image_mean: channel_values("image_mean", self.image_mean, OPENAI_CLIP_MEAN)?,
            image_std: channel_values("image_std", self.image_std, OPENAI_CLIP_STD)?,
        })
    }
}

/// `size` follows `get_size_dict(size, default_to_square=False)`: an int means shortest edge.
fn resize_target(size: RawSize) -> std::result::Result<ResizeTarget, String> {
    let target = match size {
        RawSize::Square(edge) => ResizeTarget::ShortestEdge(edge),
        RawSize::Dict {
            shortest_edge: Some(edge),
            ..
        } => ResizeTarget::ShortestEdge(edge),
        RawSize::Pair([height, width])
        | RawSize::Dict {
            height: Some(height),
            width: Some(width),
            ..
        } => ResizeTarget::Exact { height, width },
        RawSize::Dict { .. } => {
            return Err(
                "size must be an int or have 'shortest_edge' or 'height' and 'width'".into(),
            )
        }
    };
    match target {
        ResizeTarget::ShortestEdge(0) | ResizeTarget::Exact { height: 0, .. } => {
            Err("size must be positive".into())
        }
        ResizeTarget::Exact { width: 0, .. } => Err("size must be positive".into()),
        _ => Ok(target),
    }
}

/// `crop_size` follows `get_size_dict(crop_size, default_to_square=True)`.
fn crop_size(size: RawSize) -> std::result::Result<CropSize, String> {
    let (height, width) = match size {
        RawSize::Square(edge) => (edge, edge),
        RawSize::Pair([height, width])
        | RawSize::Dict {
            height: Some(height),
            width: Some(width),
            ..
        } => (height, width),
        RawSize::Dict { .. } => {
            return Err("crop_size must be an int or have 'height' and 'width'".into())
        }
    };
    if height == 0 || width == 0 {
        return Err("crop_size must be positive".into());
    }
    Ok(CropSize { height, width })
}

/// Three per-channel values (mean or std), cast to f32 as numpy does for a float32 image.
fn channel_values(
    key: &str,
    values: Option<Vec<f64>>,
    default: [f64; 3],
) -> std::result::Result<[f32; 3], String> {
    let values = values.unwrap_or_else(|| default.to_vec());
    match values.as_slice() {
        [a, b, c] => Ok([*a as f32, *b as f32, *c as f32]),
        _ => Err(format!("{key} must have 3 values, got {}", values.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn axis(size: u32, crop: u32) -> (i64, u32) {
        let a = crop_axis(size, crop);
        (a.first_source, a.len)
    }

    #[test]
    fn crop_axis_matches_transformers_index_arithmetic() {
        assert_eq!(axis(100, 56), (22, 56));
        assert_eq!(axis(57, 56), (0, 56));
        assert_eq!(axis(56, 56), (0, 56));
        // Padding: even difference centres the image, odd difference loses one line.
        assert_eq!(axis(54, 56), (-1, 56));
        assert_eq!(axis(55, 56), (0, 55));
        assert_eq!(axis(30, 33), (-1, 32));
    }

    #[test]
    fn shortest_edge_truncates_like_python() {
        let processor = ClipImageProcessor::from_json(r#"{"size": 56}"#, Path::new("t")).unwrap();
        assert_eq!(processor.resized_size(130, 77).unwrap(), (56, 94));
        assert_eq!(processor.resized_size(66, 93).unwrap(), (78, 56));
    }

    #[test]
    fn config_errors_name_the_problem() {
        let err = |json: &str| {
            ClipImageProcessor::from_json(json, Path::new("cfg.json"))
                .unwrap_err()
                .to_string()
        };
        assert!(err(r#"{"resample": 2}"#).contains("resample = 2 is not supported"));
        assert!(err(r#"{"image_mean": [0.5]}"#).contains("image_mean must have 3 values"));
        assert!(err(r#"{"size": {"longest_edge": 3}}"#).contains("size must be"));
        assert!(err("{").contains("cfg.json"));
    }
}
