//! The decoder all families share once their weights are in one layout: pre-norm layers of
//! RMSNorm → attention (fused `[q | k | v]` projection, RoPE, grouped-query attention with an
//! additive causal + padding mask, f32 softmax) and RMSNorm → SwiGLU (fused `[gate | up]`).
//!
//! Family files only map their released tensor names and fused layouts onto [`DecoderLayer`].

use candle_core::{DType, Module, Tensor, D};
use candle_nn::VarBuilder;

use crate::ops::Linear;

use super::config::LlmConfig;
use super::rope::{self, Rope};
use crate::{Error, Result};

/// The additive value of a blocked attention entry. Finite (like the release's `finfo.min`), so
/// that a query whose keys are all blocked (a left pad) gets a uniform row instead of NaN.
const BLOCKED: f32 = f32::MIN;

/// RMSNorm as the releases compute it: statistic in f32, cast back to the activation dtype,
/// then multiplied by the weight.
#[derive(Debug, Clone)]
pub(super) struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub(super) fn load(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
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
            .to_dtype(dtype)?
            .broadcast_mul(&self.weight)
    }
}

/// Attention weights: one projection whose output rows are `[q (H·d) | k (H_kv·d) | v (H_kv·d)]`.
#[derive(Debug, Clone)]
pub(super) struct Attention {
    pub(super) qkv: Linear,
    pub(super) o_proj: Linear,
}

/// SwiGLU weights: one projection whose output rows are `[gate (I) | up (I)]`.
#[derive(Debug, Clone)]
pub(super) struct Mlp {
    pub(super) gate_up: Linear,
    pub(super) down: Linear,
}

/// One pre-norm decoder layer.
#[derive(Debug, Clone)]
pub(super) struct DecoderLayer {
    pub(super) attention_norm: RmsNorm,
    pub(super) attention: Attention,
    pub(super) mlp_norm: RmsNorm,
    pub(super) mlp: Mlp,
}

/// The whole network: embedding, layers, final norm, LM head.
#[derive(Debug, Clone)]
pub(super) struct DecoderWeights {
    pub(super) embed_tokens: Tensor,
    pub(super) layers: Vec<DecoderLayer>,
    pub(super) norm: RmsNorm,
    pub(super) lm_head: Tensor,
}

/// Keys and values of every layer for incremental decoding (`[B, H_kv, S, d]` each).
///
/// Works with left-padded batches: the caller passes the attention mask of the whole sequence
/// (cached + new positions) to every forward call.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
    batch: Option<usize>,
}

impl KvCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Positions already cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets everything (a new conversation).
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    fn check_batch(&mut self, batch: usize) -> Result<()> {
        match self.batch {
            Some(cached) if cached != batch => Err(Error::InvalidArgument(format!(
                "the KV cache holds a batch of {cached} rows, the input has {batch}"
            ))),
            _ => {
                self.batch = Some(batch);
                Ok(())
            }
        }
    }

    /// Appends this call's keys/values to layer `index` and returns the whole sequence's.
    fn append(&mut self, index: usize, k: Tensor, v: Tensor) -> Result<(Tensor, Tensor)> {
        if self.layers.len() <= index {
            self.layers.resize(index + 1, None);
        }
        let (k, v) = match &self.layers[index] {
            Some((past_k, past_v)) => (
                Tensor::cat(&[past_k, &k], 2)?,
                Tensor::cat(&[past_v, &v], 2)?,
            ),
            None => (k, v),
        };
        self.layers[index] = Some((k.clone(), v.clone()));
        Ok((k, v))
    }
}

/// What one forward call shares between the layers.
struct Step<'a> {
    rope: &'a (Tensor, Tensor),
    /// Additive mask `[B, 1, 1, T, S]`, f32.
    mask: &'a Tensor,
}

/// Shapes the attention needs.
#[derive(Debug, Clone, Copy)]
struct Heads {
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

/// The shared decoder.
#[derive(Debug, Clone)]
pub(super) struct Decoder {
    weights: DecoderWeights,
    rope: Rope,
    heads: Heads,
    intermediate: usize,
    sliding_window: Option<usize>,
}

impl Decoder {
    pub(super) fn new(config: &LlmConfig, weights: DecoderWeights) -> Self {
        Self {
            weights,
            rope: Rope::new(config),
            heads: Heads {
                heads: config.num_attention_heads,
                kv_heads: config.num_key_value_heads,
                head_dim: config.head_dim,
            },
            intermediate: config.intermediate_size,
            sliding_window: config.sliding_window,
        }
    }

    pub(super) fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let flat = ids.flatten_all()?;
        let rows = self.weights.embed_tokens.index_select(&flat, 0)?;
        Ok(rows.reshape((b, t, ()))?)
    }

    pub(super) fn embed_dtype(&self) -> DType {
        self.weights.embed_tokens.dtype()
    }

    /// Final-norm hidden states `[B, T, C]`; see `Llm::forward` for the arguments.
    pub(super) fn hidden_states(
        &self,
        embeds: &Tensor,
        position_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let (batch, len, _) = embeds.dims3()?;
        if len == 0 {
            return Err(Error::InvalidArgument("no positions to run".into()));
        }
        cache.check_batch(batch)?;
        let past = cache.len();
        let seq_len = past + len;
        self.check_length(seq_len)?;
        let positions = read_positions(position_ids, batch, len)?;
        let rope = self.rope.tables(&positions, seq_len, embeds.device())?;
        let mask = additive_mask(attention_mask, batch, past, len, embeds.device())?;
        let step = Step {
            rope: &rope,
            mask: &mask,
        };
        let mut x = embeds.clone();
        for (index, layer) in self.weights.layers.iter().enumerate() {
            x = self.layer_forward(layer, index, &x, &step, cache)?;
        }
        cache.len = seq_len;
        Ok(self.weights.norm.forward(&x)?)
    }

    /// One decoding step for independent sequences: row `r` of `embeds` `[N, 1, C]` is the next
    /// token of the sequence cached in `caches[r]` (a batch of one, no padding) at
    /// `positions[r]`. The linear layers run on all rows at once (the weights are read once per
    /// step, which is what makes continuous batching pay); attention runs per row against its
    /// own cache. Returns the final-norm hidden states `[N, 1, C]`.
    pub(super) fn hidden_states_many(
        &self,
        embeds: &Tensor,
        positions: &[i64],
        caches: &mut [&mut KvCache],
    ) -> Result<Tensor> {
        let (rows, len, _) = embeds.dims3()?;
        if len != 1 || rows != positions.len() || rows != caches.len() {
            return Err(Error::InvalidArgument(format!(
                "a multi-sequence step takes one token per sequence: embeddings {:?}, {} positions, {} caches",
                embeds.dims(),
                positions.len(),
                caches.len()
            )));
        }
        let mut cos = Vec::with_capacity(rows);
        let mut sin = Vec::with_capacity(rows);
        let mut masks = Vec::with_capacity(rows);
        for (cache, &position) in caches.iter_mut().zip(positions) {
            cache.check_batch(1)?;
            if position < 0 {
                return Err(Error::InvalidArgument(
                    "position_ids must not be negative".into(),
                ));
            }
            let seq_len = cache.len() + 1;
            self.check_length(seq_len)?;
            let (c, s) = self
                .rope
                .tables(&[vec![position]], seq_len, embeds.device())?;
            cos.push(c);
            sin.push(s);
            // One query at the end of an unpadded sequence sees every key.
            masks.push(Tensor::zeros(
                (1, 1, 1, 1, seq_len),
                DType::F32,
                embeds.device(),
            )?);
        }
        // The rows travel as the positions of one sequence `[1, N, C]`: every linear layer is
        // then a single `[N, C] × [C, K]` product (a batch of N would multiply N times).
        let rope = (Tensor::cat(&cos, 2)?, Tensor::cat(&sin, 2)?);
        let mut x = embeds.reshape((1, rows, ()))?;
        for (index, layer) in self.weights.layers.iter().enumerate() {
            let normed = layer.attention_norm.forward(&x)?;
            let attended =
                self.attention_many(&layer.attention, index, &normed, &rope, &masks, caches)?;
            x = (x + attended)?;
            let normed = layer.mlp_norm.forward(&x)?;
            x = (&x + self.mlp(&layer.mlp, &normed)?)?;
        }
        for cache in caches.iter_mut() {
            cache.len += 1;
        }
        Ok(self.weights.norm.forward(&x)?.reshape((rows, 1, ()))?)
    }

    /// LM-head logits in f32 of hidden states `[..., C]`.
    pub(super) fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let head = &self.weights.lm_head;
        let flat = hidden.flatten_to(D::Minus2)?;
        let logits = crate::ops::linear_few_rows(&flat, head, None)?.to_dtype(DType::F32)?;
        let mut dims = hidden.dims().to_vec();
        *dims
            .last_mut()
            .expect("hidden states have a last dimension") = head.dim(0)?;
        Ok(logits.reshape(dims)?)
    }

    fn check_length(&self, seq_len: usize) -> Result<()> {
        self.rope.check_length(seq_len)?;
        match self.sliding_window {
            Some(window) if seq_len > window => Err(Error::InvalidArgument(format!(
                "sequence of {seq_len} positions exceeds the sliding window of {window}, \
                 which is not implemented"
            ))),
            _ => Ok(()),
        }
    }

    fn layer_forward(
        &self,
        layer: &DecoderLayer,
        index: usize,
        x: &Tensor,
        step: &Step,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let normed = layer.attention_norm.forward(x)?;
        let attended = self.attention(&layer.attention, index, &normed, step, cache)?;
        let x = (x + attended)?;
        let normed = layer.mlp_norm.forward(&x)?;
        Ok((&x + self.mlp(&layer.mlp, &normed)?)?)
    }

    fn mlp(&self, mlp: &Mlp, x: &Tensor) -> Result<Tensor> {
        let i = self.intermediate;
        let gate_up = linear(&mlp.gate_up, x)?;
        let gate = gate_up.narrow(D::Minus1, 0, i)?.silu()?;
        let up = gate_up.narrow(D::Minus1, i, i)?;
        linear(&mlp.down, &(gate * up)?)
    }

    /// q, k, v `[B, heads, T, d]` of `x` `[B, T, C]`, rotated by `rope`.
    fn project_qkv(
        &self,
        attention: &Attention,
        x: &Tensor,
        rope: &(Tensor, Tensor),
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let Heads {
            heads,
            kv_heads,
            head_dim: d,
        } = self.heads;
        let (b, t, _) = x.dims3()?;
        let qkv = linear(&attention.qkv, x)?;
        let split = |start: usize, count: usize| -> Result<Tensor> {
            let part = qkv.narrow(D::Minus1, start * d, count * d)?;
            Ok(part.reshape((b, t, count, d))?.transpose(1, 2)?)
        };
        let (cos, sin) = rope;
        let q = rope::apply(&split(0, heads)?, cos, sin)?;
        let k = rope::apply(&split(heads, kv_heads)?, cos, sin)?.contiguous()?;
        let v = split(heads + kv_heads, kv_heads)?.contiguous()?;
        Ok((q, k, v))
    }

    /// `[B, H, T, d]` attention output → o_proj of `[B, T, H·d]`.
    fn merge_heads(&self, attention: &Attention, out: &Tensor) -> Result<Tensor> {
        let (b, h, t, d) = out.dims4()?;
        let merged = out.transpose(1, 2)?.reshape((b, t, h * d))?;
        linear(&attention.o_proj, &merged)
    }

    fn attention(
        &self,
        attention: &Attention,
        index: usize,
        x: &Tensor,
        step: &Step,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let (q, k, v) = self.project_qkv(attention, x, step.rope)?;
        let (k, v) = cache.append(index, k, v)?;
        let out = grouped_attention(&q, &k, &v, step.mask, self.heads)?;
        self.merge_heads(attention, &out)
    }

    /// Attention of one new token per row (`x` `[1, N, C]`: row r at "position" r), each row
    /// against its own cache.
    fn attention_many(
        &self,
        attention: &Attention,
        index: usize,
        x: &Tensor,
        rope: &(Tensor, Tensor),
        masks: &[Tensor],
        caches: &mut [&mut KvCache],
    ) -> Result<Tensor> {
        let (q, k, v) = self.project_qkv(attention, x, rope)?;
        let mut outs = Vec::with_capacity(caches.len());
        for (row, (cache, mask)) in caches.iter_mut().zip(masks).enumerate() {
            let row_k = k.narrow(2, row, 1)?.contiguous()?;
            let row_v = v.narrow(2, row, 1)?.contiguous()?;
            let (k, v) = cache.append(index, row_k, row_v)?;
            let q = q.narrow(2, row, 1)?;
            outs.push(grouped_attention(&q, &k, &v, mask, self.heads)?);
        }
        self.merge_heads(attention, &Tensor::cat(&outs, 2)?)
    }
}

/// A linear layer; decode-sized inputs (a few rows) take [`crate::ops::linear_few_rows`].
fn linear(layer: &Linear, x: &Tensor) -> Result<Tensor> {
    Ok(crate::ops::linear_few_rows(
        x,
        layer.weight(),
        layer.bias(),
    )?)
}

/// softmax(q·kᵀ/√d + mask)·v with scores and softmax in f32. The query heads sharing a KV head
/// are stacked along the rows (`[B, H_kv, g·T, d]`), so K and V are never repeated.
fn grouped_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    h: Heads,
) -> Result<Tensor> {
    let (b, _, t, d) = q.dims4()?;
    let s = k.dim(2)?;
    let groups = h.heads / h.kv_heads;
    let dtype = q.dtype();
    let q = q
        .contiguous()?
        .reshape((b, h.kv_heads, groups * t, d))?
        .to_dtype(DType::F32)?;
    let k = k.to_dtype(DType::F32)?;
    let scores = (q.matmul(&k.t()?)? / (d as f64).sqrt())?;
    let scores = scores
        .reshape((b, h.kv_heads, groups, t, s))?
        .broadcast_add(mask)?;
    let probs = crate::ops::softmax_last_dim(&scores)?
        .to_dtype(dtype)?
        .reshape((b, h.kv_heads, groups * t, s))?;
    let out = probs.matmul(v)?;
    Ok(out.reshape((b, h.heads, t, d))?)
}

/// Position ids `[B, T]` (any integer dtype) as rows of i64, checked against the input.
fn read_positions(position_ids: &Tensor, batch: usize, len: usize) -> Result<Vec<Vec<i64>>> {
    if position_ids.dims() != [batch, len] {
        return Err(Error::InvalidArgument(format!(
            "position_ids have shape {:?}, expected [{batch}, {len}]",
            position_ids.dims()
        )));
    }
    let rows = position_ids.to_dtype(DType::I64)?.to_vec2::<i64>()?;
    if rows.iter().flatten().any(|p| *p < 0) {
        return Err(Error::InvalidArgument(
            "position_ids must not be negative".into(),
        ));
    }
    Ok(rows)
}

/// The additive mask `[B, 1, 1, T, S]` for new positions `past..past + T`: key `j` is visible to
/// query `i` when `j ≤ past + i` (causal) and `attention_mask[b, j] = 1` (not padding).
fn additive_mask(
    attention_mask: Option<&Tensor>,
    batch: usize,
    past: usize,
    len: usize,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let total = past + len;
    let real = match attention_mask {
        Some(mask) => {
            if mask.dims() != [batch, total] {
                return Err(Error::InvalidArgument(format!(
                    "attention_mask has shape {:?}, expected [{batch}, {total}] (cached + new positions)",
                    mask.dims()
                )));
            }
            mask.to_dtype(DType::F32)?.to_vec2::<f32>()?
        }
        None => vec![vec![1.0; total]; batch],
    };
    let mut data = Vec::with_capacity(batch * len * total);
    for row in &real {
        for i in 0..len {
            data.extend(row.iter().enumerate().map(|(j, m)| {
                if j <= past + i && *m != 0.0 {
                    0.0
                } else {
                    BLOCKED
                }
            }));
        }
    }
    Ok(Tensor::from_vec(data, (batch, 1, 1, len, total), device)?)
}
