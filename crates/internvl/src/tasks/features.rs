//! Vision features: images → preprocessing → InternViT → `pixel_values`, `last_hidden_state`,
//! `pooler_output` (and optionally every hidden state), saved as safetensors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};

use crate::models::{InternVisionModel, ModelFolder};
use crate::processing::image::load_rgb;
use crate::processing::transforms::{resize_and_normalize, ClipImageProcessor};
use crate::{Error, Result};

/// How images become pixel tensors.
#[derive(Debug, Clone)]
pub enum Preprocess {
    /// The release's `preprocessor_config.json` (CLIPImageProcessor: shortest edge + center crop).
    Processor(ClipImageProcessor),
    /// PIL bicubic resize to exactly `height × width`, then ImageNet normalisation.
    Resize {
        /// Output height.
        height: usize,
        /// Output width.
        width: usize,
    },
}

impl Preprocess {
    /// The model's own preprocessing: `preprocessor_config.json` if the folder has one, else a
    /// resize to the encoder's native `image_size`.
    pub fn for_model(folder: &ModelFolder) -> Result<Self> {
        match folder.preprocessor_config() {
            Some(path) => Ok(Preprocess::Processor(ClipImageProcessor::from_file(&path)?)),
            None => {
                let s = folder.vision_config().image_size;
                Ok(Preprocess::Resize {
                    height: s,
                    width: s,
                })
            }
        }
    }

    /// Decodes and preprocesses one image file into `[3, H, W]`.
    pub fn apply(&self, path: &Path) -> Result<Tensor> {
        let image = load_rgb(path)?;
        match self {
            Preprocess::Processor(p) => p.preprocess(&image),
            Preprocess::Resize { height, width } => {
                resize_and_normalize(&image, *height as u32, *width as u32)
            }
        }
    }
}

/// Parses `HxW` (e.g. `448x448`) into (height, width).
pub fn parse_size(text: &str) -> Result<(usize, usize)> {
    let bad =
        || Error::InvalidArgument(format!("size `{text}` is not HEIGHTxWIDTH (e.g. 448x448)"));
    let (h, w) = text.split_once(['x', 'X']).ok_or_else(bad)?;
    let (h, w): (usize, usize) = (
        h.trim().parse().map_err(|_| bad())?,
        w.trim().parse().map_err(|_| bad())?,
    );
    if h == 0 || w == 0 {
        return Err(Error::InvalidArgument(format!(
            "size `{text}` must be positive"
        )));
    }
    Ok((h, w))
}

/// The tensors that `internvl features` writes.
#[derive(Debug, Clone)]
pub struct Features {
    /// `[N, 3, H, W]` f32.
    pub pixel_values: Tensor,
    /// `[N, T, C]` f32.
    pub last_hidden_state: Tensor,
    /// `[N, C]` f32.
    pub pooler_output: Tensor,
    /// `[L+1, N, T, C]` f32 when requested.
    pub hidden_states: Option<Tensor>,
}

impl Features {
    /// Writes the tensors (as f32) to a safetensors file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        tensors.insert(
            "pixel_values".into(),
            self.pixel_values.to_dtype(DType::F32)?,
        );
        tensors.insert(
            "last_hidden_state".into(),
            self.last_hidden_state.to_dtype(DType::F32)?,
        );
        tensors.insert(
            "pooler_output".into(),
            self.pooler_output.to_dtype(DType::F32)?,
        );
        if let Some(h) = &self.hidden_states {
            tensors.insert("hidden_states".into(), h.to_dtype(DType::F32)?);
        }
        candle_core::safetensors::save(&tensors, path).map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })
    }
}

/// Preprocesses every image (all must succeed: the error names the failing file) into `[N,3,H,W]`.
pub fn preprocess_all(
    preprocess: &Preprocess,
    images: &[PathBuf],
    device: &Device,
) -> Result<Tensor> {
    if images.is_empty() {
        return Err(Error::InvalidArgument("no images given".into()));
    }
    let tensors = images
        .iter()
        .map(|p| preprocess.apply(p))
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::stack(&tensors, 0)?.to_device(device)?)
}

/// Runs the encoder over `pixel_values` in chunks of `batch_size` images, with a progress bar on
/// stderr, and concatenates the outputs.
pub fn extract(
    model: &InternVisionModel,
    pixel_values: &Tensor,
    all_hidden_states: bool,
    batch_size: usize,
) -> Result<Features> {
    let n = pixel_values.dim(0)?;
    let batch_size = batch_size.max(1);
    let progress = ProgressBar::new(n as u64).with_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} images {elapsed}")
            .expect("valid progress template")
            .progress_chars("=> "),
    );
    progress.set_message("InternViT");
    let (mut last, mut pooled, mut states) = (Vec::new(), Vec::new(), Vec::new());
    for start in (0..n).step_by(batch_size) {
        let len = batch_size.min(n - start);
        let out = model.forward(&pixel_values.narrow(0, start, len)?, all_hidden_states)?;
        last.push(out.last_hidden_state.to_dtype(DType::F32)?);
        pooled.push(out.pooler_output.to_dtype(DType::F32)?);
        if let Some(h) = out.hidden_states {
            states.push(Tensor::stack(&h, 0)?.to_dtype(DType::F32)?);
        }
        progress.inc(len as u64);
    }
    progress.finish_and_clear();
    Ok(Features {
        pixel_values: pixel_values.to_dtype(DType::F32)?,
        last_hidden_state: Tensor::cat(&last, 0)?,
        pooler_output: Tensor::cat(&pooled, 0)?,
        hidden_states: if all_hidden_states {
            Some(Tensor::cat(&states, 1)?)
        } else {
            None
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("448x448").unwrap(), (448, 448));
        assert_eq!(parse_size("42X98").unwrap(), (42, 98));
        for bad in ["448", "0x4", "ax4", "4x"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
