//! QLLaMA, the language middleware of InternVL-14B (InternVL-C/G): a LLaMA decoder with 96
//! learnable query tokens and cross-attention to the InternViT tokens in every
//! `cross_attention_frequency`-th layer. Spec: shared/spec/qllama_internvl_cg.md §2.
//!
//! Module prefixes equal the released names under `qllama.` (`model.layers.{i}.self_attn.*`,
//! `model.layers.{i}.cross_attn.*`, `model.norm`, `lm_head`).

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Embedding, VarBuilder};

use crate::ops::Linear;
use serde::Deserialize;

use crate::{Error, Result};

/// The official decoder layer hard-codes 96 query positions: cross-attention runs only when the
/// sequence has at least 96 positions, and only on the first 96 (so cached decode steps of
/// length 1 skip it, and any other `num_query_token` silently disables it).
pub const CROSS_ATTENTION_QUERY_POSITIONS: usize = 96;

/// The `qllama_config` of an InternVL-14B `config.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct QLlamaConfig {
    /// Width.
    pub hidden_size: usize,
    /// SwiGLU width.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Key/value heads (LLaMA-7B: equal to the heads).
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// RMSNorm epsilon.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Layers `i` with `i % cross_attention_frequency == 0` cross-attend to the image.
    #[serde(default = "default_frequency")]
    pub cross_attention_frequency: usize,
    /// Learnable query tokens.
    #[serde(default = "default_queries")]
    pub num_query_token: usize,
    /// MLP activation (`silu`).
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Beginning-of-sequence id.
    #[serde(default = "default_bos")]
    pub bos_token_id: u32,
    /// End-of-sequence id.
    #[serde(default = "default_eos")]
    pub eos_token_id: u32,
    /// Padding id.
    #[serde(default)]
    pub pad_token_id: Option<u32>,
}

fn default_eps() -> f64 {
    1e-6
}
fn default_frequency() -> usize {
    2
}
fn default_queries() -> usize {
    96
}
fn default_act() -> String {
    "silu".into()
}
fn default_bos() -> u32 {
    1
}
fn default_eos() -> u32 {
    2
}

impl QLlamaConfig {
    /// Checks the values the architecture depends on.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let kv = self.kv_heads();
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(format!(
                "qllama hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if kv == 0 || !self.num_attention_heads.is_multiple_of(kv) {
            return Err(format!(
                "qllama num_attention_heads {} is not a multiple of num_key_value_heads {kv}",
                self.num_attention_heads
            ));
        }
        if self.hidden_act != "silu" {
            return Err(format!(
                "qllama hidden_act `{}` is not supported (silu)",
                self.hidden_act
            ));
        }
        if self.cross_attention_frequency == 0 {
            return Err("qllama cross_attention_frequency must be positive".into());
        }
        Ok(())
    }

    fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// QLLaMA's RMSNorm: statistic in f32, product with the weight in f32, then cast.
#[derive(Debug, Clone)]
struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn load(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get(size, "weight")?,
            eps,
        })
    }
}

impl Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let dtype = x.dtype();
        let x32 = x.to_dtype(DType::F32)?;
        let inv_rms = (x32.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?
            .sqrt()?
            .recip()?;
        x32.broadcast_mul(&inv_rms)?
            .broadcast_mul(&self.weight.to_dtype(DType::F32)?)?
            .to_dtype(dtype)
    }
}

/// Rotary embedding tables (rotate-half convention). QLLaMA ignores `rope_theta`: base 10000.
#[derive(Debug, Clone)]
struct Rotary {
    inv_freq: Vec<f32>,
}

impl Rotary {
    fn new(head_dim: usize) -> Self {
        let inv_freq = (0..head_dim / 2)
            .map(|j| 1.0 / 10000f32.powf(2.0 * j as f32 / head_dim as f32))
            .collect();
        Self { inv_freq }
    }

    /// cos/sin `[T, head_dim]` for positions `start..start + len`, in f32.
    fn tables(&self, start: usize, len: usize, device: &Device) -> Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let mut angles = Vec::with_capacity(len * half * 2);
        for p in start..start + len {
            let row: Vec<f32> = self.inv_freq.iter().map(|f| p as f32 * f).collect();
            angles.extend_from_slice(&row);
            angles.extend_from_slice(&row);
        }
        let angles = Tensor::from_vec(angles, (len, half * 2), device)?;
        Ok((angles.cos()?, angles.sin()?))
    }
}

/// `x·cos + rotate_half(x)·sin` on `[B, H, T, D]`.
fn apply_rotary(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let (a, b) = (
        x.narrow(D::Minus1, 0, d / 2)?,
        x.narrow(D::Minus1, d / 2, d / 2)?,
    );
    let rotated = Tensor::cat(&[&b.neg()?, &a], D::Minus1)?;
    let dtype = x.dtype();
    x.broadcast_mul(&cos.to_dtype(dtype)?)? + rotated.broadcast_mul(&sin.to_dtype(dtype)?)?
}

/// Softmax(q·kᵀ·scale + mask)·v with scores and softmax in f32. q `[B,H,T,D]`, k/v `[B,H,S,D]`,
/// mask broadcastable to `[B,H,T,S]` (0 allowed, −∞ blocked).
fn attend(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, scale: f64) -> Result<Tensor> {
    let dtype = q.dtype();
    let q = q.to_dtype(DType::F32)?.contiguous()?;
    let k = k.to_dtype(DType::F32)?.contiguous()?;
    let mut scores = (q.matmul(&k.t()?)? * scale)?;
    if let Some(mask) = mask {
        scores = scores.broadcast_add(mask)?;
    }
    let probs = crate::ops::softmax_last_dim(&scores)?.to_dtype(dtype)?;
    Ok(probs.matmul(&v.contiguous()?)?)
}

fn split_heads(x: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (b, t, c) = x.dims3()?;
    x.reshape((b, t, heads, c / heads))?.transpose(1, 2)
}

fn merge_heads(x: &Tensor) -> candle_core::Result<Tensor> {
    let (b, h, t, d) = x.dims4()?;
    x.transpose(1, 2)?.reshape((b, t, h * d))
}

fn repeat_kv(x: Tensor, times: usize) -> candle_core::Result<Tensor> {
    if times == 1 {
        return Ok(x);
    }
    let (b, h, s, d) = x.dims4()?;
    x.unsqueeze(2)?
        .expand((b, h, times, s, d))?
        .reshape((b, h * times, s, d))
}

/// Cached keys and values of one layer's self-attention (`[B, H_kv, S, D]`).
#[derive(Debug, Clone, Default)]
pub struct LayerCache {
    kv: Option<(Tensor, Tensor)>,
}

#[derive(Debug, Clone)]
struct SelfAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    heads: usize,
    kv_heads: usize,
    scale: f64,
}

impl SelfAttention {
    fn load(cfg: &QLlamaConfig, vb: VarBuilder) -> Result<Self> {
        let (c, d) = (cfg.hidden_size, cfg.head_dim());
        let kv = cfg.kv_heads() * d;
        Ok(Self {
            q_proj: crate::ops::linear_layer_no_bias(c, c, vb.pp("q_proj"))?,
            k_proj: crate::ops::linear_layer_no_bias(c, kv, vb.pp("k_proj"))?,
            v_proj: crate::ops::linear_layer_no_bias(c, kv, vb.pp("v_proj"))?,
            o_proj: crate::ops::linear_layer_no_bias(c, c, vb.pp("o_proj"))?,
            heads: cfg.num_attention_heads,
            kv_heads: cfg.kv_heads(),
            scale: (d as f64).powf(-0.5),
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        rope: &(Tensor, Tensor),
        mask: Option<&Tensor>,
        cache: Option<&mut LayerCache>,
    ) -> Result<Tensor> {
        let q = apply_rotary(
            &split_heads(&self.q_proj.forward(x)?, self.heads)?,
            &rope.0,
            &rope.1,
        )?;
        let mut k = apply_rotary(
            &split_heads(&self.k_proj.forward(x)?, self.kv_heads)?,
            &rope.0,
            &rope.1,
        )?;
        let mut v = split_heads(&self.v_proj.forward(x)?, self.kv_heads)?;
        if let Some(cache) = cache {
            if let Some((past_k, past_v)) = &cache.kv {
                k = Tensor::cat(&[past_k, &k], 2)?;
                v = Tensor::cat(&[past_v, &v], 2)?;
            }
            cache.kv = Some((k.clone(), v.clone()));
        }
        let groups = self.heads / self.kv_heads;
        let out = attend(
            &q,
            &repeat_kv(k, groups)?,
            &repeat_kv(v, groups)?,
            mask,
            self.scale,
        )?;
        Ok(self.o_proj.forward(&merge_heads(&out)?)?)
    }
}

/// Cross-attention from the query positions to the (RMS-normalised) ViT tokens.
#[derive(Debug, Clone)]
struct CrossAttention {
    norm1: RmsNorm,
    norm2: RmsNorm,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    heads: usize,
    scale: f64,
}

impl CrossAttention {
    fn load(cfg: &QLlamaConfig, vision_width: usize, vb: VarBuilder) -> Result<Self> {
        let c = cfg.hidden_size;
        Ok(Self {
            norm1: RmsNorm::load(c, cfg.rms_norm_eps, vb.pp("norm1"))?,
            // The release hard-codes 3200 (InternViT-6B) here; the ViT width is the general form.
            norm2: RmsNorm::load(vision_width, cfg.rms_norm_eps, vb.pp("norm2"))?,
            q_proj: crate::ops::linear_layer_no_bias(c, c, vb.pp("q_proj"))?,
            k_proj: crate::ops::linear_layer_no_bias(vision_width, c, vb.pp("k_proj"))?,
            v_proj: crate::ops::linear_layer_no_bias(vision_width, c, vb.pp("v_proj"))?,
            o_proj: crate::ops::linear_layer_no_bias(c, c, vb.pp("o_proj"))?,
            heads: cfg.num_attention_heads,
            scale: (cfg.head_dim() as f64).powf(-0.5),
        })
    }

    /// `queries + o_proj(attention(norm1(queries), norm2(vision)))`.
    fn forward(&self, queries: &Tensor, vision: &Tensor) -> Result<Tensor> {
        let q = split_heads(
            &self.q_proj.forward(&self.norm1.forward(queries)?)?,
            self.heads,
        )?;
        let vn = self.norm2.forward(vision)?;
        let k = split_heads(&self.k_proj.forward(&vn)?, self.heads)?;
        let v = split_heads(&self.v_proj.forward(&vn)?, self.heads)?;
        let out = attend(&q, &k, &v, None, self.scale)?;
        Ok((queries + self.o_proj.forward(&merge_heads(&out)?)?)?)
    }
}

#[derive(Debug, Clone)]
struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    fn load(cfg: &QLlamaConfig, vb: VarBuilder) -> Result<Self> {
        let (c, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            gate_proj: crate::ops::linear_layer_no_bias(c, i, vb.pp("gate_proj"))?,
            up_proj: crate::ops::linear_layer_no_bias(c, i, vb.pp("up_proj"))?,
            down_proj: crate::ops::linear_layer_no_bias(i, c, vb.pp("down_proj"))?,
        })
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let gate = self.gate_proj.forward(x)?.silu()?;
        self.down_proj.forward(&(gate * self.up_proj.forward(x)?)?)
    }
}

#[derive(Debug, Clone)]
struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: SelfAttention,
    cross_attn: Option<CrossAttention>,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

impl DecoderLayer {
    fn load(cfg: &QLlamaConfig, index: usize, vision_width: usize, vb: VarBuilder) -> Result<Self> {
        let cross_attn = index
            .is_multiple_of(cfg.cross_attention_frequency)
            .then(|| CrossAttention::load(cfg, vision_width, vb.pp("cross_attn")))
            .transpose()?;
        Ok(Self {
            input_layernorm: RmsNorm::load(
                cfg.hidden_size,
                cfg.rms_norm_eps,
                vb.pp("input_layernorm"),
            )?,
            self_attn: SelfAttention::load(cfg, vb.pp("self_attn"))?,
            cross_attn,
            post_attention_layernorm: RmsNorm::load(
                cfg.hidden_size,
                cfg.rms_norm_eps,
                vb.pp("post_attention_layernorm"),
            )?,
            mlp: Mlp::load(cfg, vb.pp("mlp"))?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        vision: Option<&Tensor>,
        rope: &(Tensor, Tensor),
        mask: Option<&Tensor>,
        cache: Option<&mut LayerCache>,
    ) -> Result<Tensor> {
        let attn = self
            .self_attn
            .forward(&self.input_layernorm.forward(x)?, rope, mask, cache)?;
        let mut x = (x + attn)?;
        let n = CROSS_ATTENTION_QUERY_POSITIONS;
        if let (Some(cross), Some(vision)) = (&self.cross_attn, vision) {
            let t = x.dim(1)?;
            if t >= n {
                let queries = cross.forward(&x.narrow(1, 0, n)?, vision)?;
                x = if t > n {
                    Tensor::cat(&[&queries, &x.narrow(1, n, t - n)?], 1)?
                } else {
                    queries
                };
            }
        }
        let mlp = self
            .mlp
            .forward(&self.post_attention_layernorm.forward(&x)?)?;
        Ok((x + mlp)?)
    }
}

/// Per-layer self-attention caches for incremental decoding.
#[derive(Debug, Clone, Default)]
pub struct QLlamaCache {
    layers: Vec<LayerCache>,
    /// Positions already in the cache.
    pub seen: usize,
}

/// The QLLaMA decoder with its query tokens live in the InternVL model; this is the LLaMA part.
#[derive(Debug, Clone)]
pub struct QLlama {
    config: QLlamaConfig,
    embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Linear,
    rotary: Rotary,
}

impl QLlama {
    /// Loads from `vb` at the `qllama` prefix; `vision_width` is the InternViT width.
    ///
    /// `tied`: the official `InternVLModel` leaves transformers' top-level `tie_word_embeddings`
    /// at its default (true), so `post_init` makes `embed_tokens` and `lm_head` one parameter, and
    /// loading the checkpoint writes `lm_head.weight` into it last (module order). The input
    /// embeddings the official code computes with are therefore the stored `lm_head.weight`;
    /// `embed_tokens.weight` is read (it must exist with its shape) but not used.
    pub fn load(
        config: &QLlamaConfig,
        vision_width: usize,
        tied: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        config.validate().map_err(Error::InvalidArgument)?;
        let model = vb.pp("model");
        let c = config.hidden_size;
        let stored_embeddings = model
            .pp("embed_tokens")
            .get((config.vocab_size, c), "weight")?;
        let lm_head_weight = vb.pp("lm_head").get((config.vocab_size, c), "weight")?;
        let table = if tied {
            lm_head_weight.clone()
        } else {
            stored_embeddings
        };
        let embed_tokens = Embedding::new(table, c);
        let layers = (0..config.num_hidden_layers)
            .map(|i| DecoderLayer::load(config, i, vision_width, model.pp(format!("layers.{i}"))))
            .collect::<Result<_>>()?;
        Ok(Self {
            config: config.clone(),
            embed_tokens,
            layers,
            norm: RmsNorm::load(c, config.rms_norm_eps, model.pp("norm"))?,
            lm_head: Linear::new(lm_head_weight, None),
            rotary: Rotary::new(config.head_dim()),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &QLlamaConfig {
        &self.config
    }

    /// Token embeddings `[B, T, C]` of ids `[B, T]`.
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(self.embed_tokens.forward(ids)?)
    }

    /// Runs the decoder on input embeddings `[B, T, C]` and returns the final-norm hidden states.
    /// `mask` is additive (0 / −∞), broadcastable to `[B, 1, T, S]`; positions continue from
    /// `cache.seen` when a cache is given, else start at 0.
    pub fn forward(
        &self,
        embeds: &Tensor,
        vision: Option<&Tensor>,
        mask: Option<&Tensor>,
        mut cache: Option<&mut QLlamaCache>,
    ) -> Result<Tensor> {
        let t = embeds.dim(1)?;
        let start = cache.as_ref().map_or(0, |c| c.seen);
        let rope = self.rotary.tables(start, t, embeds.device())?;
        if let Some(cache) = cache.as_deref_mut() {
            cache
                .layers
                .resize_with(self.layers.len(), LayerCache::default);
        }
        let mut x = embeds.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            let layer_cache = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            x = layer.forward(&x, vision, &rope, mask, layer_cache)?;
        }
        if let Some(cache) = cache {
            cache.seen += t;
        }
        Ok(self.norm.forward(&x)?)
    }

    /// LM-head logits of hidden states.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(self.lm_head.forward(hidden)?)
    }
}

/// Builds an additive attention mask `[B, 1, T, T]` (0 allowed, −∞ blocked) from a rule
/// `allowed(batch, query, key)`.
pub fn build_mask(
    batch: usize,
    len: usize,
    device: &Device,
    allowed: impl Fn(usize, usize, usize) -> bool,
) -> Result<Tensor> {
    let mut data = Vec::with_capacity(batch * len * len);
    for b in 0..batch {
        for q in 0..len {
            for k in 0..len {
                data.push(if allowed(b, q, k) {
                    0f32
                } else {
                    f32::NEG_INFINITY
                });
            }
        }
    }
    Ok(Tensor::from_vec(data, (batch, 1, len, len), device)?)
}
