//! InternVL-Chat (V1.2 … InternVL3): InternViT → drop CLS → pixel shuffle → `mlp1` → LLM.
//! This file holds the configuration and the vision side (`extract_feature`); the language models
//! are in [`crate::models::llm`]. Spec: shared/spec/internvl_chat.md §2–§4.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;

use crate::ops::Linear;
use serde::Deserialize;

use crate::models::folder::{ModelFolder, ModelKind};
use crate::models::intern_vit::{InternVisionModel, LayerNorm32};
use crate::{Error, Result};

/// Order of the pixel-shuffled tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum PixelShuffleVersion {
    /// InternVL-Chat-V1-1/V1-2: the grid stays transposed (column-major token order).
    #[serde(rename = "v1")]
    #[default]
    V1,
    /// InternVL2 / 2.5 / 3: row-major token order.
    #[serde(rename = "v2")]
    V2,
}

/// The top-level keys of an InternVL-Chat `config.json` (the sub-configs are read separately).
#[derive(Debug, Clone, Deserialize)]
pub struct InternVLChatConfig {
    /// Hidden state of the ViT fed to the projector (−1 = last block).
    #[serde(default = "default_select_layer")]
    pub select_layer: i64,
    /// Pixel-shuffle ratio (0.5: 2×2 tokens become one).
    #[serde(default = "default_ratio")]
    pub downsample_ratio: f64,
    /// Token order after pixel shuffle.
    #[serde(default)]
    pub ps_version: PixelShuffleVersion,
    /// Chat template name.
    #[serde(default)]
    pub template: Option<String>,
    /// Tile size (falls back to the ViT's image size).
    #[serde(default)]
    pub force_image_size: Option<usize>,
    /// Whether images are tiled (`dynamic_preprocess`).
    #[serde(default)]
    pub dynamic_image_size: bool,
    /// Fewest tiles.
    #[serde(default = "default_min_patch")]
    pub min_dynamic_patch: u32,
    /// Most tiles (before the thumbnail).
    #[serde(default = "default_max_patch")]
    pub max_dynamic_patch: u32,
    /// Append a whole-image thumbnail tile when there is more than one tile.
    #[serde(default)]
    pub use_thumbnail: bool,
}

fn default_select_layer() -> i64 {
    -1
}
fn default_ratio() -> f64 {
    0.5
}
fn default_min_patch() -> u32 {
    1
}
fn default_max_patch() -> u32 {
    12
}

/// `[N, G, G, C]` (patch rows, columns) → `[N, G/2 · G/2, 4C]`: each output token concatenates the
/// 2×2 block (top-left, top-right, bottom-left, bottom-right); tokens in row-major (v2) or
/// column-major (v1) order.
pub fn pixel_shuffle(x: &Tensor, version: PixelShuffleVersion) -> Result<Tensor> {
    let (n, rows, cols, c) = x.dims4()?;
    if rows % 2 != 0 || cols % 2 != 0 {
        return Err(Error::InvalidArgument(format!(
            "pixel shuffle needs an even patch grid, got {rows}x{cols} (tile size must be a multiple of 28)"
        )));
    }
    let (h, w) = (rows / 2, cols / 2);
    let blocks = x.reshape((n, h, 2, w, 2, c))?;
    let ordered = match version {
        PixelShuffleVersion::V2 => blocks.permute((0, 1, 3, 2, 4, 5))?,
        PixelShuffleVersion::V1 => blocks.permute((0, 3, 1, 2, 4, 5))?,
    };
    Ok(ordered.contiguous()?.reshape((n, h * w, 4 * c))?)
}

/// `mlp1`: LayerNorm (eps 1e-5) → Linear → exact GELU → Linear.
#[derive(Debug, Clone)]
pub struct Projector {
    norm: LayerNorm32,
    fc1: Linear,
    fc2: Linear,
}

impl Projector {
    /// Loads `mlp1.0`, `mlp1.1`, `mlp1.3` for `input` (4C) → `hidden` (LLM width).
    pub fn load(input: usize, hidden: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm: LayerNorm32::load(input, 1e-5, vb.pp("0"))?,
            fc1: crate::ops::linear_layer(input, hidden, vb.pp("1"))?,
            fc2: crate::ops::linear_layer(hidden, hidden, vb.pp("3"))?,
        })
    }
}

impl Module for Projector {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = crate::ops::gelu_erf(&self.fc1.forward(&self.norm.forward(x)?)?)?;
        self.fc2.forward(&h)
    }
}

/// The vision side of InternVL-Chat: ViT features of tiles → LLM input embeddings.
#[derive(Debug, Clone)]
pub struct ChatVision {
    config: InternVLChatConfig,
    vision: InternVisionModel,
    projector: Projector,
}

/// Intermediate and final outputs of [`ChatVision::extract`].
#[derive(Debug, Clone)]
pub struct ImageFeatures {
    /// `[tiles, 1 + G², C]` ViT hidden state at `select_layer`.
    pub vit: Tensor,
    /// `[tiles, G²/4, 4C]` pixel-shuffled tokens (input of `mlp1`).
    pub shuffled: Tensor,
    /// `[tiles, G²/4, H_llm]` image embeddings.
    pub embeds: Tensor,
}

impl ChatVision {
    /// Loads the ViT and `mlp1` of an InternVL-Chat folder; `llm_hidden` is the LLM width.
    pub fn load(folder: &ModelFolder, dtype: DType, device: &Device) -> Result<Self> {
        if folder.kind() != ModelKind::InternVLChat {
            return Err(Error::InvalidArgument(format!(
                "{} is a {} model, not InternVL-Chat",
                folder.dir().display(),
                folder.kind().name()
            )));
        }
        let config = chat_config(folder)?;
        let vision = folder.load_vision(dtype, device)?;
        let llm_hidden = folder
            .config()
            .pointer("/llm_config/hidden_size")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| Error::Config {
                path: folder.dir().join("config.json"),
                reason: "no llm_config.hidden_size".into(),
            })? as usize;
        let ratio = config.downsample_ratio;
        if (ratio - 0.5).abs() > 1e-9 {
            return Err(Error::Config {
                path: folder.dir().join("config.json"),
                reason: format!(
                    "downsample_ratio {ratio} is not supported (every release uses 0.5)"
                ),
            });
        }
        let input = vision.config().hidden_size * 4;
        let vb = folder.checkpoint().var_builder(dtype, device);
        let projector = Projector::load(input, llm_hidden, vb.pp("mlp1"))
            .map_err(|e| folder.checkpoint_error(e))?;
        folder.checkpoint().ensure_all_used("mlp1.")?;
        Ok(Self {
            config,
            vision,
            projector,
        })
    }

    /// The chat configuration.
    pub fn config(&self) -> &InternVLChatConfig {
        &self.config
    }

    /// The ViT.
    pub fn vision(&self) -> &InternVisionModel {
        &self.vision
    }

    /// The tile size.
    pub fn image_size(&self) -> usize {
        self.config
            .force_image_size
            .unwrap_or(self.vision.config().image_size)
    }

    /// Image tokens per tile: (S/14)² / 4.
    pub fn tokens_per_tile(&self) -> usize {
        let g = self.image_size() / self.vision.config().patch_size;
        g * g / 4
    }

    /// `extract_feature`: ViT (up to `select_layer`) → drop CLS → pixel shuffle → `mlp1`.
    pub fn extract(&self, pixels: &Tensor) -> Result<ImageFeatures> {
        let vit = self
            .vision
            .forward_to_layer(pixels, self.config.select_layer, false)?
            .last_hidden_state;
        let (n, t, c) = vit.dims3()?;
        let g = ((t - 1) as f64).sqrt() as usize;
        if g * g != t - 1 {
            return Err(Error::InvalidArgument(format!(
                "tiles must be square: {} patch tokens",
                t - 1
            )));
        }
        let grid = vit.narrow(1, 1, t - 1)?.reshape((n, g, g, c))?;
        let shuffled = pixel_shuffle(&grid, self.config.ps_version)?;
        let embeds = self.projector.forward(&shuffled)?;
        Ok(ImageFeatures {
            vit,
            shuffled,
            embeds,
        })
    }
}

/// Parses the chat keys of `config.json`.
pub fn chat_config(folder: &ModelFolder) -> Result<InternVLChatConfig> {
    serde_json::from_value(folder.config().clone()).map_err(|e| Error::Config {
        path: folder.dir().join("config.json"),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_layout_follows_the_spec() {
        // 4×4 grid, C = 1, value = 10·row + col.
        let data: Vec<f32> = (0..4)
            .flat_map(|r| (0..4).map(move |c| (10 * r + c) as f32))
            .collect();
        let x = Tensor::from_vec(data, (1, 4, 4, 1), &Device::Cpu).unwrap();
        let v2 = pixel_shuffle(&x, PixelShuffleVersion::V2)
            .unwrap()
            .to_vec3::<f32>()
            .unwrap();
        assert_eq!(v2[0][0], vec![0.0, 1.0, 10.0, 11.0]);
        assert_eq!(v2[0][1], vec![2.0, 3.0, 12.0, 13.0]);
        assert_eq!(v2[0][2], vec![20.0, 21.0, 30.0, 31.0]);
        let v1 = pixel_shuffle(&x, PixelShuffleVersion::V1)
            .unwrap()
            .to_vec3::<f32>()
            .unwrap();
        assert_eq!(v1[0][1], vec![20.0, 21.0, 30.0, 31.0]);
        let odd = Tensor::zeros((1, 5, 5, 1), DType::F32, &Device::Cpu).unwrap();
        assert!(pixel_shuffle(&odd, PixelShuffleVersion::V2)
            .unwrap_err()
            .to_string()
            .contains("even patch grid"));
    }
}
