//! The training objectives of the release, on a pre-built batch whose tensors carry the official
//! forward's argument names:
//!
//! * [`stage2`]: InternVL-G stage 2 (`internvl_stage2.InternVLModel.forward`): ITM + ITC + ITG;
//! * [`retrieval`]: retrieval fine-tuning (`internvl_stage2_retrieval`): ITM (B negatives, then
//!   B positives) + ITC with multi-positive targets from image ids, on the QLLaMA query path and
//!   on the `clip_projector` path;
//! * [`clip`]: the symmetric InfoNCE of InternVL-C's logits (the stage-1 formula; the release has
//!   no stage-1 code);
//! * [`sft`]: InternVL-Chat supervised fine-tuning (`InternVLChatModel.forward(..., labels)`).
//!
//! Quirks copied from the release (each changes the numbers): ITM uses the *negative* captions
//! for the first `B − ⌊B/2⌋` samples; rows are dropped by tokenizer-dependent length tests (ITM
//! label −100 where `mask.sum − 1 == 1`, ITC target −100 where `summarize_mask.sum − 1 == 4`);
//! `exp(logit_scale)` is not clamped; the ITG labels keep the prefix's last token as a target;
//! SFT image rows replace the `<IMG_CONTEXT>` embeddings and a count mismatch zeroes the loss.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, D};

use super::losses::{self, cross_entropy, cross_entropy_rows, l2_normalize, IGNORE_INDEX};
use crate::models::internvl_cg::InternVLCG;
use crate::models::internvl_chat::ChatVision;
use crate::models::llm::{KvCache, Llm};
use crate::models::qllama::build_mask;
use crate::{Error, Result};

/// A loss with its named components and intermediates (for checks against the official code).
#[derive(Debug, Clone)]
pub struct ObjectiveOutput {
    /// The scalar to minimise.
    pub loss: Tensor,
    /// Named parts of the loss (`itc`, `itm`, `itg`).
    pub components: Vec<(String, Tensor)>,
    /// Named intermediate tensors.
    pub intermediates: Vec<(String, Tensor)>,
}

/// Tensors of a batch by name.
#[derive(Debug, Clone)]
pub struct Batch {
    tensors: HashMap<String, Tensor>,
    prefix: String,
}

impl Batch {
    /// Wraps tensors; `prefix` (e.g. `"retrieval/"`) is put before every name looked up.
    pub fn new(tensors: HashMap<String, Tensor>, prefix: &str) -> Self {
        Self {
            tensors,
            prefix: prefix.to_string(),
        }
    }

    /// Reads a safetensors file (bool tensors, which candle has no dtype for, become u8).
    pub fn load(path: &std::path::Path, prefix: &str, device: &Device) -> Result<Self> {
        let bad = |reason: String| {
            Error::InvalidArgument(format!("cannot read batch {}: {reason}", path.display()))
        };
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let file = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
        let mut tensors = HashMap::new();
        for (name, view) in file.tensors() {
            use safetensors::Dtype as S;
            let dtype = match view.dtype() {
                // candle has no bool: masks become u8 (0 / 1).
                S::BOOL | S::U8 => DType::U8,
                S::U32 => DType::U32,
                S::I64 => DType::I64,
                S::F16 => DType::F16,
                S::BF16 => DType::BF16,
                S::F32 => DType::F32,
                S::F64 => DType::F64,
                other => {
                    return Err(bad(format!(
                        "tensor `{name}` has unsupported dtype {other:?}"
                    )))
                }
            };
            let tensor = Tensor::from_raw_buffer(view.data(), dtype, view.shape(), device)?;
            tensors.insert(name, tensor);
        }
        Ok(Self::new(tensors, prefix))
    }

    /// The same tensors looked up under another prefix.
    pub fn with_prefix(self, prefix: &str) -> Self {
        Self::new(self.tensors, prefix)
    }

    /// All tensors by full name.
    pub fn into_tensors(self) -> HashMap<String, Tensor> {
        self.tensors
    }

    /// Whether the batch holds a tensor with this full name (prefix included).
    pub fn contains(&self, full_name: &str) -> bool {
        self.tensors.contains_key(full_name)
    }

    /// The tensor `name`, or an error naming it.
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        let full = format!("{}{name}", self.prefix);
        self.tensors
            .get(&full)
            .ok_or_else(|| Error::InvalidArgument(format!("the batch has no tensor `{full}`")))
    }

    /// The tensor `name` if present.
    pub fn optional(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(&format!("{}{name}", self.prefix))
    }

    /// Integer (or bool) tensor `name` as rows of i64.
    pub fn rows(&self, name: &str) -> Result<Vec<Vec<i64>>> {
        as_rows(self.get(name)?, name)
    }

    /// Integer tensor `name` as a vector of i64.
    pub fn vector(&self, name: &str) -> Result<Vec<i64>> {
        let t = self.get(name)?;
        Ok(integer(t, name)?.flatten_all()?.to_vec1::<i64>()?)
    }
}

/// An integer or bool tensor as i64 (masks may come as int64 or bool).
fn integer(t: &Tensor, name: &str) -> Result<Tensor> {
    match t.dtype() {
        DType::I64 => Ok(t.clone()),
        DType::U8 | DType::U32 => Ok(t.to_dtype(DType::I64)?),
        other => Err(Error::InvalidArgument(format!(
            "batch tensor `{name}` is {other:?}; expected an integer or bool tensor"
        ))),
    }
}

fn as_rows(t: &Tensor, name: &str) -> Result<Vec<Vec<i64>>> {
    let t = integer(t, name)?;
    if t.rank() != 2 {
        return Err(Error::InvalidArgument(format!(
            "batch tensor `{name}` has shape {:?}; expected [batch, length]",
            t.dims()
        )));
    }
    Ok(t.to_vec2::<i64>()?)
}

/// What a chunk of QLLaMA rows is computed for; decides its attention mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Image-text matching: bidirectional over queries and text.
    Itm,
    /// Contrastive: queries see queries; text sees earlier text; nothing across.
    Itc,
    /// Generation: causal, with the query block opened.
    Itg,
}

/// A chunk of rows: its kind, token ids and attention masks (one row per sample).
type ChunkRows<'a> = (Chunk, &'a [Vec<i64>], &'a [Vec<i64>]);

/// Whether key `k` is visible to query `q` in a row of `kind` with `nq` queries before the text
/// (`real[j]` = text position `j` is not padding).
fn visible(kind: Chunk, nq: usize, real: &[bool], q: usize, k: usize) -> bool {
    let pad = k >= nq && !real[k - nq];
    match kind {
        Chunk::Itm => !pad,
        Chunk::Itc if q < nq => k < nq,
        Chunk::Itc => k >= nq && k <= q && !pad,
        Chunk::Itg if q < nq && k < nq => true,
        Chunk::Itg => k <= q && !pad,
    }
}

/// QLLaMA over `[queries ; text]` rows made of chunks of `B` rows, each chunk cross-attending
/// to the same ViT tokens (the release's `repeat_time`): returns the final-norm hidden states
/// `[chunks·B, Q + L, C]`.
fn qllama_rows(model: &InternVLCG, vision_tokens: &Tensor, chunks: &[ChunkRows]) -> Result<Tensor> {
    let qllama = model.qllama();
    let queries = model.query_tokens();
    let nq = queries.dim(1)?;
    let mut ids = Vec::new();
    let mut rules = Vec::new();
    for (kind, chunk_ids, masks) in chunks {
        for (row, mask) in chunk_ids.iter().zip(masks.iter()) {
            ids.push(row.clone());
            rules.push((*kind, mask.iter().map(|&m| m != 0).collect::<Vec<bool>>()));
        }
    }
    let rows = ids.len();
    let len = ids.first().map_or(0, Vec::len);
    let device = vision_tokens.device();
    let ids = Tensor::new(ids, device)?;
    let text = qllama.embed(&ids)?;
    let queries = queries
        .to_dtype(text.dtype())?
        .broadcast_as((rows, nq, text.dim(2)?))?;
    let embeds = Tensor::cat(&[&queries, &text], 1)?;
    let mask = build_mask(rows, nq + len, device, |b, q, k| {
        visible(rules[b].0, nq, &rules[b].1, q, k)
    })?;
    let vision = Tensor::cat(&vec![vision_tokens; chunks.len()], 0)?;
    qllama.forward(&embeds, Some(&vision), Some(&mask), None)
}

/// `sum(mask) − 1` of every row (the index of the last real token with right padding).
fn last_index(masks: &[Vec<i64>]) -> Vec<i64> {
    masks.iter().map(|m| m.iter().sum::<i64>() - 1).collect()
}

/// Rows `index[i]` of `[B, L, C]` hidden states → `[B, C]`.
fn pick_positions(hidden: &Tensor, index: &[i64]) -> Result<Tensor> {
    let rows = index
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            if p < 0 || p as usize >= hidden.dim(1)? {
                return Err(Error::InvalidArgument(format!(
                    "row {i}: attention mask selects position {p}"
                )));
            }
            Ok(hidden.get(i)?.get(p as usize)?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::stack(&rows, 0)?)
}

/// ITM logits `[N, 2]`: the mean over the query positions of `itm_head(query outputs)`.
fn itm_logits(model: &InternVLCG, query_outputs: &Tensor) -> Result<Tensor> {
    use candle_core::Module;
    Ok(model.itm_head().forward(query_outputs)?.mean(1)?)
}

/// Shifted next-token loss: position `t` of `hidden` `[B, L, C]` predicts `labels[:, t + 1]`;
/// returns (mean over the targets that are not ignored, per-position losses `[B, L − 1]`,
/// detached). The LM head (`head`) runs only on the positions that have a target: a
/// vocabulary-wide row per padded or masked position would dominate time and memory.
fn shifted_lm_loss(
    hidden: &Tensor,
    labels: &[Vec<i64>],
    head: &dyn Fn(&Tensor) -> Result<Tensor>,
) -> Result<(Tensor, Tensor)> {
    let (b, l, c) = hidden.dims3()?;
    if labels.len() != b || labels.iter().any(|r| r.len() != l) {
        return Err(Error::InvalidArgument(format!(
            "labels do not match the hidden states [{b}, {l}, {c}]"
        )));
    }
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for (i, row) in labels.iter().enumerate() {
        for t in 0..l - 1 {
            if row[t + 1] != IGNORE_INDEX {
                rows.push((i * l + t) as u32);
                targets.push(row[t + 1]);
            }
        }
    }
    let device = hidden.device();
    let mut token_loss = vec![0f32; b * (l - 1)];
    if rows.is_empty() {
        // PyTorch's mean over no target is NaN.
        let nan = Tensor::new(f32::NAN, device)?;
        return Ok((nan, Tensor::from_vec(token_loss, (b, l - 1), device)?));
    }
    let picked = hidden
        .reshape((b * l, c))?
        .index_select(&Tensor::new(rows.as_slice(), device)?, 0)?;
    let logits = head(&picked)?.to_dtype(DType::F32)?;
    let per_token = cross_entropy_rows(&logits, &targets, 0.0)?;
    let mean = (per_token.sum_all()? / targets.len() as f64)?;
    for (&row, value) in rows.iter().zip(per_token.to_vec1::<f32>()?) {
        let (i, t) = (row as usize / l, row as usize % l);
        token_loss[i * (l - 1) + t] = value;
    }
    Ok((mean, Tensor::from_vec(token_loss, (b, l - 1), device)?))
}

/// The ViT tokens of `pixel_values` (f32 input cast to the model dtype).
fn vision_tokens(model: &InternVLCG, batch: &Batch) -> Result<Tensor> {
    let pixels = batch.get("pixel_values")?;
    model.vision_tokens(&pixels.to_dtype(DType::F32)?)
}

/// The stage-2 objective: `L = L_itm + L_itc + L_itg` (spec training.md §3).
pub fn stage2(model: &InternVLCG, batch: &Batch) -> Result<ObjectiveOutput> {
    let vision = vision_tokens(model, batch)?;
    let b = vision.dim(0)?;
    let positives = b / 2;
    let neg = (
        batch.rows("negative_input_ids")?,
        batch.rows("negative_attention_mask")?,
    );
    let pos = (
        batch.rows("positive_input_ids")?,
        batch.rows("positive_attention_mask")?,
    );
    // ITM rows: negatives for the first B − P samples, positives for the last P.
    let itm_ids: Vec<Vec<i64>> = neg.0[..b - positives]
        .iter()
        .chain(&pos.0[b - positives..])
        .cloned()
        .collect();
    let itm_mask: Vec<Vec<i64>> = neg.1[..b - positives]
        .iter()
        .chain(&pos.1[b - positives..])
        .cloned()
        .collect();
    let summarize = (
        batch.rows("summarize_input_ids")?,
        batch.rows("summarize_attention_mask")?,
    );
    let itg = (batch.rows("input_ids")?, batch.rows("attention_mask")?);
    let hidden = qllama_rows(
        model,
        &vision,
        &[
            (Chunk::Itm, &itm_ids, &itm_mask),
            (Chunk::Itc, &summarize.0, &summarize.1),
            (Chunk::Itg, &itg.0, &itg.1),
        ],
    )?;
    let nq = model.query_tokens().dim(1)?;
    let queries = hidden.narrow(1, 0, nq)?;
    let text = hidden.narrow(1, nq, hidden.dim(1)? - nq)?;

    // ITM.
    let itm_logits = itm_logits(model, &queries.narrow(0, 0, b)?)?;
    let itm_labels: Vec<i64> = last_index(&itm_mask)
        .iter()
        .enumerate()
        .map(|(i, &last)| match (last, i < b - positives) {
            (1, _) => IGNORE_INDEX, // empty text: BOS + EOS
            (_, true) => 0,
            (_, false) => 1,
        })
        .collect();
    let loss_itm = cross_entropy(&itm_logits, &itm_labels, 0.0)?;

    // ITC.
    let image = l2_normalize(&model.pool_queries(&queries.narrow(0, b, b)?)?)?;
    let selected = last_index(&summarize.1);
    let pooled = pick_positions(&text.narrow(0, b, b)?, &selected)?;
    let text_embeds = l2_normalize(&pooled.matmul(model.text_projection())?)?;
    let targets: Vec<i64> = selected
        .iter()
        .enumerate()
        .map(|(i, &s)| if s == 4 { IGNORE_INDEX } else { i as i64 })
        .collect();
    let smoothing = model.config().label_smoothing;
    let (loss_itc, sim_i2t) = losses::clip_loss(
        &image,
        &text_embeds,
        model.logit_scale_param(),
        &targets,
        smoothing,
    )?;

    // ITG.
    let (loss_itg, token_loss) =
        shifted_lm_loss(&text.narrow(0, 2 * b, b)?, &batch.rows("labels")?, &|h| {
            model.qllama().logits(h)
        })?;

    let loss = ((&loss_itm + &loss_itc)? + &loss_itg)?;
    let device = vision.device();
    Ok(ObjectiveOutput {
        loss,
        components: vec![
            ("itc".into(), loss_itc),
            ("itm".into(), loss_itm),
            ("itg".into(), loss_itg),
        ],
        intermediates: vec![
            ("qllama/last_hidden_state".into(), hidden.clone()),
            ("itm/logits".into(), itm_logits),
            ("itm/labels".into(), Tensor::new(itm_labels, device)?),
            ("itc/image_embeds_normalized".into(), image),
            ("itc/text_embeds_normalized".into(), text_embeds),
            ("itc/sim_i2t".into(), sim_i2t),
            ("itc/targets".into(), Tensor::new(targets, device)?),
            ("itg/token_loss".into(), token_loss),
            (
                "backbone/clip_projector_embeds".into(),
                model.pool_vision(&vision)?,
            ),
        ],
    })
}

/// The retrieval fine-tuning objective: `L = L_itm + L_itc` (spec training.md §4).
pub fn retrieval(model: &InternVLCG, batch: &Batch) -> Result<ObjectiveOutput> {
    let vision = vision_tokens(model, batch)?;
    let b = vision.dim(0)?;
    let neg = (
        batch.rows("negative_input_ids")?,
        batch.rows("negative_attention_mask")?,
    );
    let pos = (
        batch.rows("positive_input_ids")?,
        batch.rows("positive_attention_mask")?,
    );
    let summarize = (
        batch.rows("summarize_input_ids")?,
        batch.rows("summarize_attention_mask")?,
    );
    let image_ids = batch.vector("image_ids")?;
    if image_ids.len() != b {
        return Err(Error::InvalidArgument(format!(
            "{} image_ids for a batch of {b}",
            image_ids.len()
        )));
    }
    let hidden = qllama_rows(
        model,
        &vision,
        &[
            (Chunk::Itm, &neg.0, &neg.1),
            (Chunk::Itm, &pos.0, &pos.1),
            (Chunk::Itc, &summarize.0, &summarize.1),
        ],
    )?;
    let nq = model.query_tokens().dim(1)?;
    let queries = hidden.narrow(1, 0, nq)?;
    let text = hidden.narrow(1, nq, hidden.dim(1)? - nq)?;

    let itm_logits = itm_logits(model, &queries.narrow(0, 0, 2 * b)?)?;
    let itm_labels: Vec<i64> = (0..2 * b).map(|i| i64::from(i >= b)).collect();
    let loss_itm = cross_entropy(&itm_logits, &itm_labels, 0.0)?;

    let backbone = l2_normalize(&model.pool_vision(&vision)?)?;
    let image = l2_normalize(&model.pool_queries(&queries.narrow(0, 2 * b, b)?)?)?;
    let pooled = pick_positions(&text.narrow(0, 2 * b, b)?, &last_index(&summarize.1))?;
    let text_embeds = l2_normalize(&pooled.matmul(model.text_projection())?)?;
    let scale = model.logit_scale_param().to_dtype(DType::F32)?.exp()?;
    // Soft targets: every column with the row's image id, equally.
    let targets: Vec<f32> = image_ids
        .iter()
        .flat_map(|&a| {
            let matches = image_ids.iter().filter(|&&c| c == a).count() as f32;
            image_ids
                .iter()
                .map(move |&c| if c == a { 1.0 / matches } else { 0.0 })
        })
        .collect();
    let targets = Tensor::from_vec(targets, (b, b), vision.device())?;
    let sim = |a: &Tensor, c: &Tensor| -> Result<Tensor> {
        Ok(a.matmul(&c.t()?)?.broadcast_mul(&scale)?)
    };
    let soft = |logits: Tensor| losses::soft_cross_entropy(&logits, &targets);
    let query_path =
        ((soft(sim(&text_embeds, &image)?)? + soft(sim(&image, &text_embeds)?)?)? / 2.0)?;
    let backbone_path =
        ((soft(sim(&text_embeds, &backbone)?)? + soft(sim(&backbone, &text_embeds)?)?)? / 2.0)?;
    let loss_itc = (query_path + backbone_path)?;
    let loss = (&loss_itm + &loss_itc)?;
    Ok(ObjectiveOutput {
        loss,
        components: vec![("itc".into(), loss_itc), ("itm".into(), loss_itm)],
        intermediates: vec![("itm_logits".into(), itm_logits)],
    })
}

/// InternVL-C's contrastive loss: `½ [CE(logits_per_image, arange) + CE(logits_per_text,
/// arange)]` over `pixel_values` and `text_ids` (clip_benchmark tokenisation, 0-padded).
pub fn clip(model: &InternVLCG, batch: &Batch) -> Result<ObjectiveOutput> {
    let vision = vision_tokens(model, batch)?;
    let ids = integer(batch.get("text_ids")?, "text_ids")?;
    let image_embeds = model.pool_vision(&vision)?;
    let text_embeds = model.text_embeds(&ids)?;
    let image = l2_normalize(&image_embeds)?;
    let text = l2_normalize(&text_embeds)?;
    let n = image.dim(0)?;
    if text.dim(0)? != n {
        return Err(Error::InvalidArgument(format!(
            "{n} images but {} texts: the contrastive loss pairs them one to one",
            text.dim(0)?
        )));
    }
    let targets: Vec<i64> = (0..n as i64).collect();
    let (loss, logits_per_image) =
        losses::clip_loss(&image, &text, model.logit_scale_param(), &targets, 0.0)?;
    Ok(ObjectiveOutput {
        loss,
        components: Vec::new(),
        intermediates: vec![
            ("image_embeds".into(), image_embeds),
            ("text_embeds".into(), text_embeds),
            ("logits_per_image".into(), logits_per_image),
        ],
    })
}

/// An InternVL-Chat model as the SFT objective needs it.
#[derive(Debug)]
pub struct ChatParts<'a> {
    /// ViT + pixel shuffle + `mlp1`.
    pub vision: &'a ChatVision,
    /// The language model.
    pub llm: &'a Llm,
    /// The `<IMG_CONTEXT>` id.
    pub image_context_id: u32,
}

/// SFT: shifted next-token cross-entropy over the assistant targets (`labels` ≠ −100) of an
/// InternVL-Chat forward whose `<IMG_CONTEXT>` embeddings are replaced by the image rows of the
/// tiles with `image_flags == 1`. `attention_mask` is used as given (the release's collator
/// sets it to `input_ids != 0`); when absent it is derived that way.
pub fn sft(parts: &ChatParts, batch: &Batch) -> Result<ObjectiveOutput> {
    let ids = integer(batch.get("input_ids")?, "input_ids")?;
    let (b, l) = ids.dims2()?;
    let device = ids.device().clone();
    let mask = match batch.optional("attention_mask") {
        Some(m) => integer(m, "attention_mask")?,
        None => ids.ne(0i64)?.to_dtype(DType::I64)?,
    };
    let positions = match batch.optional("position_ids") {
        Some(p) => integer(p, "position_ids")?,
        None => Tensor::arange(0i64, l as i64, &device)?
            .unsqueeze(0)?
            .broadcast_as((b, l))?
            .contiguous()?,
    };
    let labels = batch.rows("labels")?;
    let pixels = batch.get("pixel_values")?.to_dtype(DType::F32)?;
    let flags = match batch.optional("image_flags") {
        Some(f) => integer(f, "image_flags")?.flatten_all()?.to_vec1::<i64>()?,
        None => vec![1; pixels.dim(0)?],
    };
    let features = parts.vision.extract(&pixels)?.embeds;
    let kept: Vec<u32> = (0..flags.len() as u32)
        .filter(|&i| flags[i as usize] == 1)
        .collect();
    let image_rows = features
        .index_select(&Tensor::new(kept, &device)?, 0)?
        .flatten_to(1)?;
    let id_rows = ids.to_vec2::<i64>()?;
    let placeholders = id_rows
        .iter()
        .flatten()
        .filter(|&&t| t == i64::from(parts.image_context_id))
        .count();
    let available = image_rows.dim(0)?;
    // The release catches a count mismatch, uses the first rows and multiplies the loss by 0.
    let (image_rows, ignore) = match placeholders.cmp(&available) {
        std::cmp::Ordering::Equal => (image_rows, false),
        std::cmp::Ordering::Less => (image_rows.narrow(0, 0, placeholders)?, true),
        std::cmp::Ordering::Greater => {
            return Err(Error::InvalidArgument(format!(
                "{placeholders} <IMG_CONTEXT> tokens but only {available} image embeddings"
            )))
        }
    };
    let embeds = parts.llm.embed(&ids)?;
    let embeds = crate::models::llm::generate::scatter_image_embeds(
        &embeds,
        &ids,
        parts.image_context_id,
        &image_rows,
    )?;
    let hidden = parts
        .llm
        .hidden_states(&embeds, &positions, Some(&mask), &mut KvCache::new())?;
    let (mut loss, token_loss) = shifted_lm_loss(&hidden, &labels, &|h| parts.llm.logits(h))?;
    if ignore {
        tracing::warn!("image embeddings do not match the <IMG_CONTEXT> tokens: loss set to 0");
        loss = (loss * 0.0)?;
    }
    Ok(ObjectiveOutput {
        loss,
        components: Vec::new(),
        intermediates: vec![("token_loss".into(), token_loss)],
    })
}

/// `max|a − b| / max|b|` (the relative error measure the checks use).
pub fn relative_error(a: &Tensor, b: &Tensor) -> Result<f32> {
    let a = a.to_dtype(DType::F32)?;
    let b = b.to_dtype(DType::F32)?;
    let diff = (a - &b)?
        .abs()?
        .flatten_all()?
        .max(D::Minus1)?
        .to_scalar::<f32>()?;
    let scale = b.abs()?.flatten_all()?.max(D::Minus1)?.to_scalar::<f32>()?;
    Ok(if scale == 0.0 { diff } else { diff / scale })
}

/// The objectives `internvl train loss` evaluates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Objective {
    /// [`stage2`].
    Stage2,
    /// [`clip`].
    Clip,
    /// [`retrieval`].
    Retrieval,
    /// [`sft`].
    Sft,
}

impl std::str::FromStr for Objective {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "stage2" => Ok(Self::Stage2),
            "clip" => Ok(Self::Clip),
            "retrieval" => Ok(Self::Retrieval),
            "sft" => Ok(Self::Sft),
            other => Err(Error::InvalidArgument(format!(
                "unknown objective `{other}` (stage2, clip, retrieval, sft)"
            ))),
        }
    }
}

impl Objective {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Stage2 => "stage2",
            Self::Clip => "clip",
            Self::Retrieval => "retrieval",
            Self::Sft => "sft",
        }
    }
}

/// A loss and (when asked) the gradients of the selected parameters.
#[derive(Debug)]
pub struct Evaluation {
    /// The objective's output.
    pub output: ObjectiveOutput,
    /// `d loss / d parameter` by released name (empty unless gradients were asked for).
    pub gradients: std::collections::BTreeMap<String, Tensor>,
}

/// Loads the model of `folder` in f32 with the parameters `trainable` selects as variables,
/// evaluates `objective` on `batch` and, when `with_gradients`, back-propagates.
///
/// InternVL-C/G ties QLLaMA's input embedding to `lm_head.weight` (see `QLlama::load`), so, as
/// in PyTorch where both names are one tensor, `qllama.model.embed_tokens.weight` reports the
/// gradient of `qllama.lm_head.weight`.
pub fn evaluate(
    objective: Objective,
    folder: &crate::models::ModelFolder,
    batch: &Batch,
    trainable: super::params::NamePatterns,
    with_gradients: bool,
    device: &Device,
) -> Result<Evaluation> {
    use super::params::Parameters;
    let params = Parameters::attach(folder.checkpoint(), trainable);
    let loaded = load_and_run(objective, folder, batch, device);
    Parameters::detach(folder.checkpoint());
    let (output, tied) = loaded?;
    let mut gradients = std::collections::BTreeMap::new();
    if with_gradients {
        gradients = params.gradients(&output.loss.backward()?)?;
        if tied {
            if let Some(head) = gradients.get("qllama.lm_head.weight").cloned() {
                if gradients.contains_key("qllama.model.embed_tokens.weight") {
                    gradients.insert("qllama.model.embed_tokens.weight".into(), head);
                }
            }
        }
    }
    Ok(Evaluation { output, gradients })
}

/// Loads what `objective` needs and runs it; also says whether QLLaMA's embeddings are tied.
fn load_and_run(
    objective: Objective,
    folder: &crate::models::ModelFolder,
    batch: &Batch,
    device: &Device,
) -> Result<(ObjectiveOutput, bool)> {
    use crate::models::ModelKind;
    let expects_cg = objective != Objective::Sft;
    let is_cg = folder.kind() == ModelKind::InternVLCG;
    if expects_cg != is_cg {
        return Err(Error::InvalidArgument(format!(
            "objective `{}` needs {} model; {} is not one (it is {})",
            objective.name(),
            if expects_cg {
                "an InternVL-C/G (InternVL-14B)"
            } else {
                "an InternVL-Chat"
            },
            folder.dir().display(),
            folder.kind().name()
        )));
    }
    if objective == Objective::Sft {
        let vision = ChatVision::load(folder, DType::F32, device)?;
        let llm = Llm::load_chat(folder, DType::F32, device)?;
        let tokenizer = crate::processing::tokenizer::Tokenizer::from_folder(folder.dir())?;
        let image_context_id = tokenizer
            .token_to_id(crate::processing::templates::IMG_CONTEXT_TOKEN)
            .ok_or_else(|| {
                Error::InvalidArgument("the tokenizer has no <IMG_CONTEXT> token".into())
            })?;
        let parts = ChatParts {
            vision: &vision,
            llm: &llm,
            image_context_id,
        };
        return Ok((sft(&parts, batch)?, false));
    }
    let model = InternVLCG::load(folder, DType::F32, device)?;
    let tied = model.config().tie_word_embeddings;
    let output = match objective {
        Objective::Stage2 => stage2(&model, batch)?,
        Objective::Clip => clip(&model, batch)?,
        _ => retrieval(&model, batch)?,
    };
    Ok((output, tied))
}
