//! InternViT (InternViT-6B and InternViT-300M), the vision encoder of every InternVL model.
//!
//! Module prefixes equal the released tensor names (`embeddings.*`, `encoder.layers.{i}.*`);
//! spec: shared/spec/intern_vit.md. Position embeddings are re-interpolated on every forward to the
//! input's patch grid as the InternVL-Chat copy of the official code does (an identity at the native
//! size), so any input size works, square or not, multiple of the patch size or not.

use candle_core::{DType, Module, Tensor, D};
use candle_nn::VarBuilder;

use crate::ops::Linear;
use serde::{Deserialize, Deserializer};

use crate::ops::bicubic_resize_chw;
use crate::{Error, Result};

/// Normalisation used in the encoder blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NormType {
    /// RMSNorm (InternViT-6B; the only kind in the InternVL 1.0 code, which has no `norm_type` key).
    #[default]
    RmsNorm,
    /// LayerNorm with bias (InternViT-300M).
    LayerNorm,
}

/// `config.json` of an InternViT (`model_type = "intern_vit_6b"`), or the `vision_config` of an
/// InternVL model. Keys of the transformers "-hf" port are accepted as aliases.
#[derive(Debug, Clone, Deserialize)]
pub struct InternVisionConfig {
    /// Width C.
    pub hidden_size: usize,
    /// Number of attention heads H.
    pub num_attention_heads: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Number of encoder blocks L.
    pub num_hidden_layers: usize,
    /// Native resolution; defines the stored position-embedding grid.
    #[serde(deserialize_with = "square_size")]
    pub image_size: usize,
    /// Patch edge.
    #[serde(default = "default_patch_size", deserialize_with = "square_size")]
    pub patch_size: usize,
    /// Bias on the fused qkv projection.
    #[serde(default, alias = "attention_bias")]
    pub qkv_bias: bool,
    /// RMSNorm on q and k over the full width.
    #[serde(default = "default_true", alias = "use_qk_norm")]
    pub qk_normalization: bool,
    /// Block normalisation.
    #[serde(default)]
    pub norm_type: NormType,
    /// Epsilon of every norm in the encoder (block norms and q/k norms).
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// MLP activation; only the exact (erf) GELU, `"gelu"`, is used by the releases.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Input channels (the patch convolution is always RGB).
    #[serde(default = "default_channels")]
    pub num_channels: usize,
}

fn default_patch_size() -> usize {
    14
}
fn default_true() -> bool {
    true
}
fn default_eps() -> f64 {
    1e-6
}
fn default_act() -> String {
    "gelu".into()
}
fn default_channels() -> usize {
    3
}

/// Accepts `448` or the "-hf" form `[448, 448]` (square only: every release is square).
fn square_size<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<usize, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        One(usize),
        Two([usize; 2]),
    }
    match Size::deserialize(d)? {
        Size::One(s) => Ok(s),
        Size::Two([h, w]) if h == w => Ok(h),
        Size::Two([h, w]) => Err(serde::de::Error::custom(format!(
            "non-square size [{h}, {w}] is not supported"
        ))),
    }
}

impl InternVisionConfig {
    /// Checks the values the architecture depends on.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.hidden_size == 0 || self.num_attention_heads == 0 {
            return Err("hidden_size and num_attention_heads must be positive".into());
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.patch_size == 0 || self.image_size < self.patch_size {
            return Err(format!(
                "image_size {} must be at least patch_size {} (> 0)",
                self.image_size, self.patch_size
            ));
        }
        if self.hidden_act != "gelu" {
            return Err(format!(
                "hidden_act `{}` is not supported (InternViT uses \"gelu\")",
                self.hidden_act
            ));
        }
        if self.num_channels != 3 {
            return Err(format!(
                "num_channels {} is not supported (RGB: 3)",
                self.num_channels
            ));
        }
        Ok(())
    }

    /// Patches per side at the native resolution.
    pub fn native_grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Attention head width.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// Block normalisation, either kind.
#[derive(Debug, Clone)]
enum Norm {
    Rms(RmsNorm),
    Layer(LayerNorm32),
}

/// LayerNorm whose statistics and affine transform run in f32 whatever the compute dtype (as
/// PyTorch's LayerNorm does for half inputs), the result cast back.
#[derive(Debug, Clone)]
pub struct LayerNorm32 {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm32 {
    /// Loads `weight` and `bias` of length `size`, kept in f32.
    pub fn load(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get(size, "weight")?.to_dtype(DType::F32)?,
            bias: vb.get(size, "bias")?.to_dtype(DType::F32)?,
            eps,
        })
    }
}

impl Module for LayerNorm32 {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let dtype = x.dtype();
        crate::ops::layer_norm(&x.to_dtype(DType::F32)?, &self.weight, &self.bias, self.eps)?
            .to_dtype(dtype)
    }
}

impl Norm {
    fn load(kind: NormType, size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(match kind {
            NormType::RmsNorm => Norm::Rms(RmsNorm::load(size, eps, vb)?),
            NormType::LayerNorm => Norm::Layer(LayerNorm32::load(size, eps, vb)?),
        })
    }
}

impl Module for Norm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Norm::Rms(n) => n.forward(x),
            Norm::Layer(n) => n.forward(x),
        }
    }
}

/// RMSNorm as the official code computes it: statistic in f32, cast back to the input dtype, then
/// multiplied by the weight.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    /// Loads `weight` of length `size`.
    pub fn load(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get(size, "weight")?,
            eps,
        })
    }
}

impl Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if x.dtype() == DType::F32 && self.weight.dtype() == DType::F32 {
            return crate::ops::rms_norm(x, &self.weight, self.eps);
        }
        let dtype = x.dtype();
        let x32 = x.to_dtype(DType::F32)?;
        let inv_rms = (x32.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?
            .sqrt()?
            .recip()?;
        x32.broadcast_mul(&inv_rms)?
            .to_dtype(dtype)?
            .broadcast_mul(&self.weight.to_dtype(dtype)?)
    }
}

/// Patch convolution, class token and position table (`embeddings.*`).
#[derive(Debug, Clone)]
struct Embeddings {
    /// Convolution kernel flattened to `[C, 3·P·P]` so that the stride-P convolution is one matmul.
    patch_weight: Tensor,
    patch_bias: Tensor,
    class_embedding: Tensor,
    position_embedding: Tensor,
    patch_size: usize,
    native_grid: usize,
}

impl Embeddings {
    fn load(cfg: &InternVisionConfig, vb: VarBuilder) -> Result<Self> {
        let (c, p, g) = (cfg.hidden_size, cfg.patch_size, cfg.native_grid());
        let patch_weight = vb.get((c, 3, p, p), "patch_embedding.weight")?;
        Ok(Self {
            patch_weight: patch_weight.reshape((c, 3 * p * p))?,
            patch_bias: vb.get(c, "patch_embedding.bias")?,
            class_embedding: vb.get((1, 1, c), "class_embedding")?,
            position_embedding: vb.get((1, 1 + g * g, c), "position_embedding")?,
            patch_size: p,
            native_grid: g,
        })
    }

    /// `[B, 3, H, W]` → `[B, 1 + Gh·Gw, C]` with Gh = ⌊H/P⌋, Gw = ⌊W/P⌋ (remainder pixels are
    /// dropped, as by the stride-P convolution).
    fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let (b, _, h, w) = pixels.dims4()?;
        let p = self.patch_size;
        let (gh, gw) = (h / p, w / p);
        let pixels = pixels.to_dtype(self.patch_weight.dtype())?;
        let patches = pixels
            .narrow(2, 0, gh * p)?
            .narrow(3, 0, gw * p)?
            .reshape((b, 3, gh, p, gw, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .reshape((b * gh * gw, 3 * p * p))?;
        let tokens = patches
            .matmul(&self.patch_weight.t()?)?
            .broadcast_add(&self.patch_bias)?
            .reshape((b, gh * gw, ()))?;
        let class = self.class_embedding.broadcast_as((b, 1, tokens.dim(2)?))?;
        let x = Tensor::cat(&[&class.to_dtype(tokens.dtype())?, &tokens], 1)?;
        Ok(x.broadcast_add(&self.position_table(gh, gw)?.to_dtype(x.dtype())?)?)
    }

    /// The position table for a `gh × gw` grid: the class entry as stored, the patch entries
    /// interpolated bicubically in f32 from the native grid.
    fn position_table(&self, gh: usize, gw: usize) -> Result<Tensor> {
        let g = self.native_grid;
        if (gh, gw) == (g, g) {
            return Ok(self.position_embedding.clone());
        }
        let c = self.position_embedding.dim(2)?;
        let dtype = self.position_embedding.dtype();
        let class = self.position_embedding.narrow(1, 0, 1)?;
        let grid = self
            .position_embedding
            .narrow(1, 1, g * g)?
            .reshape((g, g, c))?
            .permute((2, 0, 1))?;
        let resized = bicubic_resize_chw(&grid, gh, gw)?
            .permute((1, 2, 0))?
            .reshape((1, gh * gw, c))?
            .to_dtype(dtype)?;
        Ok(Tensor::cat(&[&class, &resized], 1)?)
    }
}

/// Bidirectional multi-head self-attention with optional QK-RMSNorm over the full width.
#[derive(Debug, Clone)]
struct Attention {
    qkv: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    proj: Linear,
    num_heads: usize,
    scale: f64,
}

impl Attention {
    fn load(cfg: &InternVisionConfig, vb: VarBuilder) -> Result<Self> {
        let c = cfg.hidden_size;
        let qkv = if cfg.qkv_bias {
            crate::ops::linear_layer(c, 3 * c, vb.pp("qkv"))?
        } else {
            crate::ops::linear_layer_no_bias(c, 3 * c, vb.pp("qkv"))?
        };
        let (q_norm, k_norm) = if cfg.qk_normalization {
            // Always RMSNorm, even when the blocks use LayerNorm.
            (
                Some(RmsNorm::load(c, cfg.layer_norm_eps, vb.pp("q_norm"))?),
                Some(RmsNorm::load(c, cfg.layer_norm_eps, vb.pp("k_norm"))?),
            )
        } else {
            (None, None)
        };
        Ok(Self {
            qkv,
            q_norm,
            k_norm,
            proj: crate::ops::linear_layer(c, c, vb.pp("proj"))?,
            num_heads: cfg.num_attention_heads,
            scale: (cfg.head_dim() as f64).powf(-0.5),
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let c = x.dim(2)?;
        let qkv = self.qkv.forward(x)?;
        let mut q = qkv.narrow(2, 0, c)?;
        let mut k = qkv.narrow(2, c, c)?;
        let v = qkv.narrow(2, 2 * c, c)?;
        if let (Some(qn), Some(kn)) = (&self.q_norm, &self.k_norm) {
            q = qn.forward(&q)?;
            k = kn.forward(&k)?;
        }
        let out = crate::ops::attention(&q, &k, &v, self.num_heads, self.scale)?;
        self.proj.forward(&out)
    }
}

/// fc1 → exact GELU → fc2.
#[derive(Debug, Clone)]
struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    fn load(cfg: &InternVisionConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            fc1: crate::ops::linear_layer(cfg.hidden_size, cfg.intermediate_size, vb.pp("fc1"))?,
            fc2: crate::ops::linear_layer(cfg.intermediate_size, cfg.hidden_size, vb.pp("fc2"))?,
        })
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.fc2
            .forward(&crate::ops::gelu_erf(&self.fc1.forward(x)?)?)
    }
}

/// One pre-norm encoder block with layer scale (`encoder.layers.{i}.*`).
#[derive(Debug, Clone)]
struct EncoderLayer {
    norm1: Norm,
    attn: Attention,
    ls1: Tensor,
    norm2: Norm,
    mlp: Mlp,
    ls2: Tensor,
}

impl EncoderLayer {
    fn load(cfg: &InternVisionConfig, vb: VarBuilder) -> Result<Self> {
        let (c, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
        Ok(Self {
            norm1: Norm::load(cfg.norm_type, c, eps, vb.pp("norm1"))?,
            attn: Attention::load(cfg, vb.pp("attn"))?,
            ls1: vb.get(c, "ls1")?,
            norm2: Norm::load(cfg.norm_type, c, eps, vb.pp("norm2"))?,
            mlp: Mlp::load(cfg, vb.pp("mlp"))?,
            ls2: vb.get(c, "ls2")?,
        })
    }
}

impl Module for EncoderLayer {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let attn = self.attn.forward(&self.norm1.forward(x)?)?;
        let x = (x + attn.broadcast_mul(&self.ls1)?)?;
        let mlp = self.mlp.forward(&self.norm2.forward(&x)?)?;
        x + mlp.broadcast_mul(&self.ls2)?
    }
}

/// Outputs of [`InternVisionModel::forward`].
#[derive(Debug, Clone)]
pub struct VisionOutput {
    /// `[B, 1 + Gh·Gw, C]`: output of the last block that ran (no final norm exists).
    pub last_hidden_state: Tensor,
    /// `[B, C]`: the class token of `last_hidden_state`.
    pub pooler_output: Tensor,
    /// When requested: index 0 = embeddings, index k = output of block k−1.
    pub hidden_states: Option<Vec<Tensor>>,
}

/// The InternViT encoder.
#[derive(Debug, Clone)]
pub struct InternVisionModel {
    config: InternVisionConfig,
    embeddings: Embeddings,
    layers: Vec<EncoderLayer>,
}

impl InternVisionModel {
    /// Builds the encoder from tensors named as released (`vb` points at the encoder's prefix:
    /// the root of an InternViT checkpoint, `vision_model` inside InternVL models).
    pub fn load(config: &InternVisionConfig, vb: VarBuilder) -> Result<Self> {
        config.validate().map_err(Error::InvalidArgument)?;
        let embeddings = Embeddings::load(config, vb.pp("embeddings"))?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| EncoderLayer::load(config, vb.pp(format!("encoder.layers.{i}"))))
            .collect::<Result<_>>()?;
        Ok(Self {
            config: config.clone(),
            embeddings,
            layers,
        })
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &InternVisionConfig {
        &self.config
    }

    /// Runs all blocks on normalised pixels `[B, 3, H, W]` (H, W ≥ patch size).
    pub fn forward(&self, pixels: &Tensor, all_hidden_states: bool) -> Result<VisionOutput> {
        self.forward_to_layer(pixels, -1, all_hidden_states)
    }

    /// Runs the blocks up to `select_layer` (Python indexing into the L+1 hidden states: −1 = last
    /// block, −4 = three blocks fewer, 0 = embeddings) and returns that state as
    /// `last_hidden_state`; later blocks are skipped.
    pub fn forward_to_layer(
        &self,
        pixels: &Tensor,
        select_layer: i64,
        all_hidden_states: bool,
    ) -> Result<VisionOutput> {
        let stop = self.resolve_layer(select_layer)?;
        self.check_input(pixels)?;
        let mut x = self.embeddings.forward(pixels)?;
        let mut states = all_hidden_states.then(|| vec![x.clone()]);
        for layer in &self.layers[..stop] {
            x = layer.forward(&x)?;
            if let Some(states) = states.as_mut() {
                states.push(x.clone());
            }
        }
        Ok(VisionOutput {
            pooler_output: x.narrow(1, 0, 1)?.squeeze(1)?,
            last_hidden_state: x,
            hidden_states: states,
        })
    }

    /// Number of blocks to run for a Python-style `select_layer`.
    fn resolve_layer(&self, select_layer: i64) -> Result<usize> {
        let states = self.layers.len() as i64 + 1;
        let index = if select_layer < 0 {
            states + select_layer
        } else {
            select_layer
        };
        if !(0..states).contains(&index) {
            return Err(Error::InvalidArgument(format!(
                "select_layer {select_layer} is out of range for {} blocks ({} hidden states)",
                self.layers.len(),
                states
            )));
        }
        Ok(index as usize)
    }

    fn check_input(&self, pixels: &Tensor) -> Result<()> {
        let p = self.config.patch_size;
        match pixels.dims() {
            &[_, 3, h, w] if h >= p && w >= p => Ok(()),
            &[_, 3, h, w] => Err(Error::InvalidArgument(format!(
                "image of {h}x{w} pixels is smaller than one {p}x{p} patch"
            ))),
            dims => Err(Error::InvalidArgument(format!(
                "pixel_values must be [batch, 3, height, width], got {dims:?}"
            ))),
        }
    }
}
