//! InternVL-14B, the paper's model: InternViT + QLLaMA + attention-pooling heads, used as
//! InternVL-C (contrastive) and InternVL-G (generative). Spec: shared/spec/qllama_internvl_cg.md.

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::VarBuilder;

use crate::ops::Linear;
use serde::Deserialize;

use crate::models::folder::{ModelFolder, ModelKind};
use crate::models::intern_vit::{InternVisionModel, LayerNorm32};
use crate::models::qllama::{build_mask, QLlama, QLlamaCache, QLlamaConfig};
use crate::{Error, Result};

/// The top-level `config.json` keys of InternVL-14B besides the sub-configs.
#[derive(Debug, Clone, Deserialize)]
pub struct InternVLCGConfig {
    /// Joint embedding size (768 in the release).
    pub clip_embed_dim: usize,
    /// Heads of both attention-pooling blocks.
    pub attn_pool_num_heads: usize,
    /// Learnable query tokens (96).
    #[serde(default = "default_queries")]
    pub num_query_token: usize,
    /// Image size the model was fine-tuned at, when it differs from the ViT's.
    #[serde(default)]
    pub force_image_size: Option<usize>,
    /// The QLLaMA configuration.
    pub qllama_config: QLlamaConfig,
    /// transformers' top-level tie flag (absent in the release, so its default `true` applies).
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
    /// Label smoothing of the stage-2 ITC loss (training only).
    #[serde(default)]
    pub label_smoothing: f64,
}

fn default_true() -> bool {
    true
}

fn default_queries() -> usize {
    96
}

/// Which head produces the image embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// InternVL-C: attention pooling over the ViT tokens.
    C,
    /// InternVL-G: the sum of the unit C embedding and the unit pooled QLLaMA query embedding.
    G,
}

impl std::str::FromStr for Head {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "c" | "C" => Ok(Head::C),
            "g" | "G" => Ok(Head::G),
            other => Err(Error::InvalidArgument(format!(
                "unknown head `{other}` (expected c or g)"
            ))),
        }
    }
}

impl Head {
    /// `"c"` or `"g"`.
    pub fn name(self) -> &'static str {
        match self {
            Head::C => "c",
            Head::G => "g",
        }
    }
}

/// Attention pooling: one query (the mean token) cross-attending to all tokens, with three
/// separate LayerNorms (eps 1e-5) and q/k/v biases stored as separate parameters.
#[derive(Debug, Clone)]
struct AttentionPooling {
    norm_q: LayerNorm32,
    norm_k: LayerNorm32,
    norm_v: LayerNorm32,
    q: (Tensor, Tensor),
    k: (Tensor, Tensor),
    v: (Tensor, Tensor),
    proj: Linear,
    heads: usize,
}

impl AttentionPooling {
    fn load(dim: usize, out: usize, heads: usize, vb: VarBuilder) -> Result<Self> {
        let attn = vb.pp("cross_attn");
        let qkv = |name: &str| -> Result<(Tensor, Tensor)> {
            Ok((
                attn.get((dim, dim), &format!("{name}.weight"))?,
                attn.get(dim, &format!("{name}_bias"))?,
            ))
        };
        Ok(Self {
            norm_q: LayerNorm32::load(dim, 1e-5, vb.pp("norm1_q"))?,
            norm_k: LayerNorm32::load(dim, 1e-5, vb.pp("norm1_k"))?,
            norm_v: LayerNorm32::load(dim, 1e-5, vb.pp("norm1_v"))?,
            q: qkv("q")?,
            k: qkv("k")?,
            v: qkv("v")?,
            proj: crate::ops::linear_layer(dim, out, attn.pp("proj"))?,
            heads,
        })
    }

    /// `[B, N, d]` → `[B, out]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let project =
            |t: &Tensor, (w, b): &(Tensor, Tensor)| t.broadcast_matmul(&w.t()?)?.broadcast_add(b);
        let query = x.mean_keepdim(1)?;
        let q = project(&self.norm_q.forward(&query)?, &self.q)?;
        let k = project(&self.norm_k.forward(x)?, &self.k)?;
        let v = project(&self.norm_v.forward(x)?, &self.v)?;
        let d = q.dim(D::Minus1)? / self.heads;
        let heads = |t: &Tensor| -> candle_core::Result<Tensor> {
            let (b, n, _) = t.dims3()?;
            t.reshape((b, n, self.heads, d))?
                .transpose(1, 2)?
                .contiguous()
        };
        let scale = (d as f64).powf(-0.5);
        let scores = (heads(&q)? * scale)?.matmul(&heads(&k)?.t()?)?;
        let probs = crate::ops::softmax_last_dim(&scores)?;
        let pooled = probs
            .matmul(&heads(&v)?)?
            .transpose(1, 2)?
            .flatten_from(2)?;
        Ok(self.proj.forward(&pooled)?.squeeze(1)?)
    }
}

/// InternVL-C/G.
#[derive(Debug, Clone)]
pub struct InternVLCG {
    config: InternVLCGConfig,
    vision: InternVisionModel,
    qllama: QLlama,
    query_tokens: Tensor,
    clip_projector: AttentionPooling,
    clip_projector2: AttentionPooling,
    text_projection: Tensor,
    logit_scale: Tensor,
    /// Image-text matching head (training only: the release has no inference entry point).
    itm_head: Linear,
}

/// The greedy or beam-search settings of [`InternVLCG::caption`].
#[derive(Debug, Clone)]
pub struct CaptionOptions {
    /// Most tokens to generate.
    pub max_new_tokens: usize,
    /// EOS is forbidden until this many tokens were generated (the model card uses 8).
    pub min_new_tokens: usize,
    /// 1 = greedy.
    pub num_beams: usize,
    /// Stop token (default: the QLLaMA config's `eos_token_id`), like `generate(eos_token_id=…)`.
    pub eos_token_id: Option<u32>,
}

impl Default for CaptionOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 30,
            min_new_tokens: 8,
            num_beams: 1,
            eos_token_id: None,
        }
    }
}

/// A generated caption.
#[derive(Debug, Clone)]
pub struct Caption {
    /// Generated ids (without the BOS the release's `generate` puts first).
    pub token_ids: Vec<u32>,
    /// Raw logits of every step `[steps, vocab]` (greedy only).
    pub step_logits: Option<Tensor>,
}

impl InternVLCG {
    /// Loads every tensor of an InternVL-14B folder (all must be consumed).
    pub fn load(folder: &ModelFolder, dtype: DType, device: &Device) -> Result<Self> {
        if folder.kind() != ModelKind::InternVLCG {
            return Err(Error::InvalidArgument(format!(
                "{} is a {} model, not InternVL-C/G (InternVL-14B with QLLaMA): heads c and g need QLLaMA",
                folder.dir().display(),
                folder.kind().name()
            )));
        }
        let config: InternVLCGConfig =
            serde_json::from_value(folder.config().clone()).map_err(|e| Error::Config {
                path: folder.dir().join("config.json"),
                reason: e.to_string(),
            })?;
        let vision = folder.load_vision(dtype, device)?;
        let vb = folder.checkpoint().var_builder(dtype, device);
        let model =
            Self::load_heads(&config, vision, vb).map_err(|e| folder.checkpoint_error(e))?;
        folder.checkpoint().ensure_all_used("")?;
        Ok(model)
    }

    /// Builds the model from any `VarBuilder` (e.g. one that creates fresh variables) for a
    /// parsed configuration, with the vision encoder under `vision_model`.
    pub fn from_var_builder(
        config: &InternVLCGConfig,
        vision_config: &crate::models::intern_vit::InternVisionConfig,
        vb: VarBuilder,
    ) -> Result<Self> {
        let vision = InternVisionModel::load(vision_config, vb.pp("vision_model"))?;
        Self::load_heads(config, vision, vb)
    }

    fn load_heads(
        config: &InternVLCGConfig,
        vision: InternVisionModel,
        vb: VarBuilder,
    ) -> Result<Self> {
        let vision_width = vision.config().hidden_size;
        let q = &config.qllama_config;
        let (e, heads) = (config.clip_embed_dim, config.attn_pool_num_heads);
        let positions = crate::models::qllama::CROSS_ATTENTION_QUERY_POSITIONS;
        if config.num_query_token != positions {
            // Reproduced, not fixed: the official decoder layer does the same silently.
            tracing::warn!(
                "num_query_token is {} but the release's QLLaMA cross-attends only over the first \
                 {positions} positions of sequences at least that long: the queries will not see \
                 the image as trained",
                config.num_query_token
            );
        }
        Ok(Self {
            qllama: QLlama::load(q, vision_width, config.tie_word_embeddings, vb.pp("qllama"))?,
            query_tokens: vb.get((1, config.num_query_token, q.hidden_size), "query_tokens")?,
            clip_projector: AttentionPooling::load(
                vision_width,
                e,
                heads,
                vb.pp("clip_projector"),
            )?,
            clip_projector2: AttentionPooling::load(
                q.hidden_size,
                e,
                heads,
                vb.pp("clip_projector2"),
            )?,
            text_projection: vb.get((q.hidden_size, e), "text_projection")?,
            logit_scale: vb.get((), "logit_scale")?,
            itm_head: crate::ops::linear_layer(q.hidden_size, 2, vb.pp("itm_head"))?,
            vision,
            config: config.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &InternVLCGConfig {
        &self.config
    }

    /// The vision encoder.
    pub fn vision(&self) -> &InternVisionModel {
        &self.vision
    }

    /// The language middleware.
    pub fn qllama(&self) -> &QLlama {
        &self.qllama
    }

    /// The image-text matching head (`[C] → 2` logits), used by the training objectives.
    pub fn itm_head(&self) -> &Linear {
        &self.itm_head
    }

    /// The learnable query tokens `[1, Q, C]` (training objectives).
    pub fn query_tokens(&self) -> &Tensor {
        &self.query_tokens
    }

    /// `text_projection` `[C, E]` (training objectives).
    pub fn text_projection(&self) -> &Tensor {
        &self.text_projection
    }

    /// The stored `logit_scale` parameter (0-d, the log of the scale; training objectives).
    pub fn logit_scale_param(&self) -> &Tensor {
        &self.logit_scale
    }

    /// `clip_projector` (attention pooling) of ViT tokens `[B, N, Cv]` → `[B, E]`.
    pub fn pool_vision(&self, vision_tokens: &Tensor) -> Result<Tensor> {
        self.clip_projector.forward(vision_tokens)
    }

    /// `clip_projector2` (attention pooling) of QLLaMA query outputs `[B, Q, C]` → `[B, E]`.
    pub fn pool_queries(&self, query_outputs: &Tensor) -> Result<Tensor> {
        self.clip_projector2.forward(query_outputs)
    }

    /// The image size the release preprocesses to.
    pub fn image_size(&self) -> usize {
        self.config
            .force_image_size
            .unwrap_or(self.vision.config().image_size)
    }

    /// exp(logit_scale) as stored (no clamp at inference).
    pub fn logit_scale(&self) -> Result<f32> {
        Ok(self
            .logit_scale
            .to_dtype(DType::F32)?
            .exp()?
            .to_scalar::<f32>()?)
    }

    /// ViT `last_hidden_state` of pixels `[B, 3, S, S]`.
    pub fn vision_tokens(&self, pixels: &Tensor) -> Result<Tensor> {
        Ok(self.vision.forward(pixels, false)?.last_hidden_state)
    }

    /// QLLaMA query features `[B, 96, C]`: the queries alone (bidirectional), cross-attending to
    /// the ViT tokens, final norm applied.
    pub fn query_features(&self, vision_tokens: &Tensor) -> Result<Tensor> {
        let b = vision_tokens.dim(0)?;
        let queries = self.query_tokens.broadcast_as((
            b,
            self.query_tokens.dim(1)?,
            self.query_tokens.dim(2)?,
        ))?;
        self.qllama
            .forward(&queries.contiguous()?, Some(vision_tokens), None, None)
    }

    /// Unnormalised image embeddings `[B, E]` from the ViT tokens.
    pub fn image_embeds(&self, vision_tokens: &Tensor, head: Head) -> Result<Tensor> {
        let c = self.clip_projector.forward(vision_tokens)?;
        match head {
            Head::C => Ok(c),
            Head::G => {
                let g = self
                    .clip_projector2
                    .forward(&self.query_features(vision_tokens)?)?;
                Ok((l2_normalize(&c)? + l2_normalize(&g)?)?)
            }
        }
    }

    /// Final-norm QLLaMA hidden states `[N, T, C]` of text ids `[N, T]` (right-padded with 0;
    /// causal + padding mask where padding is `id == 0`).
    pub fn text_hidden_states(&self, ids: &Tensor) -> Result<Tensor> {
        let (n, t) = ids.dims2()?;
        let rows = ids.to_dtype(DType::U32)?.to_vec2::<u32>()?;
        let mask = build_mask(n, t, ids.device(), |b, q, k| k <= q && rows[b][k] > 0)?;
        let embeds = self.qllama.embed(ids)?;
        let mask = mask.to_dtype(DType::F32)?;
        self.qllama.forward(&embeds, None, Some(&mask), None)
    }

    /// Unnormalised text embeddings `[N, E]`: the hidden state at the last non-pad token (EOS)
    /// times `text_projection`.
    pub fn text_embeds(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(self.text_features(ids)?.matmul(&self.text_projection)?)
    }

    /// The QLLaMA hidden state `[N, C]` at the last non-pad token (EOS) of each text, before
    /// `text_projection`.
    pub fn text_features(&self, ids: &Tensor) -> Result<Tensor> {
        let hidden = self.text_hidden_states(ids)?;
        let rows = ids.to_dtype(DType::U32)?.to_vec2::<u32>()?;
        let pooled = rows
            .iter()
            .enumerate()
            .map(|(i, row)| {
                let real = row.iter().filter(|&&id| id > 0).count();
                if real == 0 {
                    return Err(Error::InvalidArgument(format!("text {i} has no tokens")));
                }
                Ok(hidden.get(i)?.get(real - 1)?)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::stack(&pooled, 0)?)
    }

    /// `exp(logit_scale) · norm(image) · norm(text)ᵀ`, `[images, texts]`.
    pub fn logits_per_image(&self, image_embeds: &Tensor, text_embeds: &Tensor) -> Result<Tensor> {
        let sim = l2_normalize(image_embeds)?.matmul(&l2_normalize(text_embeds)?.t()?)?;
        Ok((sim * self.logit_scale()? as f64)?)
    }

    /// Captions one image from its ViT tokens `[1, N, C]` and the prompt ids (BOS, no EOS),
    /// greedily or with beam search, as the release's `generate` does: the prefill is
    /// [96 queries (bidirectional, cross-attending) ; prompt (causal, sees all queries)], later steps
    /// use the self-attention cache only.
    pub fn caption(
        &self,
        vision_tokens: &Tensor,
        prompt: &[u32],
        options: &CaptionOptions,
    ) -> Result<Caption> {
        if options.num_beams > 1 {
            return self.caption_beam(vision_tokens, prompt, options);
        }
        let mut cache = QLlamaCache::default();
        let mut logits = self.prefill(vision_tokens, prompt, &mut cache)?;
        let eos = options
            .eos_token_id
            .unwrap_or(self.qllama.config().eos_token_id);
        let (mut ids, mut steps) = (Vec::new(), Vec::new());
        for step in 0..options.max_new_tokens {
            steps.push(logits.clone());
            let next = argmax(&suppress_eos(&logits, eos, step < options.min_new_tokens)?)?;
            ids.push(next);
            if next == eos || step + 1 == options.max_new_tokens {
                break;
            }
            logits = self.decode_step(next, &mut cache)?;
        }
        Ok(Caption {
            token_ids: ids,
            step_logits: Some(Tensor::stack(&steps, 0)?),
        })
    }

    /// Runs the prefill and returns the logits `[V]` at the last prompt position.
    fn prefill(
        &self,
        vision_tokens: &Tensor,
        prompt: &[u32],
        cache: &mut QLlamaCache,
    ) -> Result<Tensor> {
        let device = vision_tokens.device();
        let ids = Tensor::new(prompt, device)?.unsqueeze(0)?;
        let text = self.qllama.embed(&ids)?;
        let queries = self.query_tokens.to_dtype(text.dtype())?;
        let nq = queries.dim(1)?;
        let embeds = Tensor::cat(&[&queries, &text], 1)?;
        let t = embeds.dim(1)?;
        // Causal, with the query block opened (use_zero_attention_mask).
        let mask = build_mask(1, t, device, |_, q, k| k <= q || (q < nq && k < nq))?;
        let hidden = self
            .qllama
            .forward(&embeds, Some(vision_tokens), Some(&mask), Some(cache))?;
        Ok(self
            .qllama
            .logits(&hidden.narrow(1, t - 1, 1)?)?
            .flatten_all()?
            .to_dtype(DType::F32)?)
    }

    /// Feeds one token and returns the next logits `[V]`.
    fn decode_step(&self, token: u32, cache: &mut QLlamaCache) -> Result<Tensor> {
        let device = self.query_tokens.device();
        let embeds = self.qllama.embed(&Tensor::new(&[[token]], device)?)?;
        let hidden = self.qllama.forward(&embeds, None, None, Some(cache))?;
        Ok(self
            .qllama
            .logits(&hidden)?
            .flatten_all()?
            .to_dtype(DType::F32)?)
    }

    /// Beam search as transformers 4.37 `generate(num_beams=B)` with its defaults
    /// (length_penalty 1.0, early_stopping False): beams are ranked by summed log-probabilities
    /// (EOS masked after the log-softmax while fewer than `min_new_tokens` were generated), the
    /// top 2·B continuations are scanned in order, an EOS continuation ranked within the first B
    /// closes a hypothesis scored by sum / generated length, and the search stops when B
    /// hypotheses exist and none of the live beams can beat the worst of them.
    fn caption_beam(
        &self,
        vision_tokens: &Tensor,
        prompt: &[u32],
        options: &CaptionOptions,
    ) -> Result<Caption> {
        let eos = options
            .eos_token_id
            .unwrap_or(self.qllama.config().eos_token_id);
        let width = options.num_beams;
        let mut cache = QLlamaCache::default();
        let logits = self.prefill(vision_tokens, prompt, &mut cache)?;
        let mut live = vec![Beam {
            ids: Vec::new(),
            score: 0.0,
            cache,
            logits,
        }];
        let mut hypotheses = Hypotheses::new(width);
        for step in 0..options.max_new_tokens {
            let generated = (step + 1) as f32;
            let candidates =
                top_continuations(&live, eos, step < options.min_new_tokens, 2 * width)?;
            let mut next = Vec::new();
            for (rank, &(beam, token, score)) in candidates.iter().enumerate() {
                if token == eos {
                    if rank < width {
                        let ids = [live[beam].ids.as_slice(), &[eos]].concat();
                        hypotheses.add(ids, score / generated);
                    }
                } else {
                    next.push((beam, token, score));
                }
                if next.len() == width {
                    break;
                }
            }
            let best = candidates.first().map_or(f32::NEG_INFINITY, |c| c.2);
            if hypotheses.is_done(best / generated) {
                return Ok(Caption {
                    token_ids: hypotheses.best(),
                    step_logits: None,
                });
            }
            let last = step + 1 == options.max_new_tokens;
            live = next
                .into_iter()
                .map(|(beam, token, score)| {
                    let parent = &live[beam];
                    let mut cache = parent.cache.clone();
                    // The last step needs no further logits.
                    let logits = if last {
                        parent.logits.clone()
                    } else {
                        self.decode_step(token, &mut cache)?
                    };
                    let ids = [parent.ids.as_slice(), &[token]].concat();
                    Ok(Beam {
                        ids,
                        score,
                        cache,
                        logits,
                    })
                })
                .collect::<Result<_>>()?;
        }
        for beam in live {
            let len = beam.ids.len() as f32;
            hypotheses.add(beam.ids, beam.score / len);
        }
        Ok(Caption {
            token_ids: hypotheses.best(),
            step_logits: None,
        })
    }
}

/// A live beam: generated ids, summed log-probability, its cache and its next-token logits.
struct Beam {
    ids: Vec<u32>,
    score: f32,
    cache: QLlamaCache,
    logits: Tensor,
}

/// The best `k` (beam, token, total score) continuations of all beams, best first.
fn top_continuations(
    live: &[Beam],
    eos: u32,
    forbid_eos: bool,
    k: usize,
) -> Result<Vec<(usize, u32, f32)>> {
    let mut all = Vec::new();
    for (i, beam) in live.iter().enumerate() {
        let mut logprobs =
            candle_nn::ops::log_softmax(&beam.logits, D::Minus1)?.to_vec1::<f32>()?;
        if forbid_eos {
            if let Some(v) = logprobs.get_mut(eos as usize) {
                *v = f32::NEG_INFINITY;
            }
        }
        let mut order: Vec<usize> = (0..logprobs.len()).collect();
        order.sort_by(|&a, &b| logprobs[b].total_cmp(&logprobs[a]));
        all.extend(
            order
                .into_iter()
                .take(k)
                .map(|t| (i, t as u32, beam.score + logprobs[t])),
        );
    }
    all.sort_by(|a, b| b.2.total_cmp(&a.2));
    all.truncate(k);
    Ok(all)
}

/// Finished hypotheses, as transformers' `BeamHypotheses` keeps them.
struct Hypotheses {
    width: usize,
    entries: Vec<(f32, Vec<u32>)>,
    worst: f32,
}

impl Hypotheses {
    fn new(width: usize) -> Self {
        Self {
            width,
            entries: Vec::new(),
            worst: 1e9,
        }
    }

    fn add(&mut self, ids: Vec<u32>, score: f32) {
        if self.entries.len() < self.width || score > self.worst {
            self.entries.push((score, ids));
            if self.entries.len() > self.width {
                let (worst_index, _) = self
                    .entries
                    .iter()
                    .enumerate()
                    .min_by(|a, b| a.1 .0.total_cmp(&b.1 .0))
                    .expect("non-empty");
                self.entries.remove(worst_index);
                self.worst = self
                    .entries
                    .iter()
                    .map(|e| e.0)
                    .fold(f32::INFINITY, f32::min);
            } else {
                self.worst = self.worst.min(score);
            }
        }
    }

    /// Full, and no live beam can still reach the worst kept score.
    fn is_done(&self, best_attainable: f32) -> bool {
        self.entries.len() >= self.width && self.worst >= best_attainable
    }

    /// The highest-scoring hypothesis (the later one among equals, as Python's sort + pop).
    fn best(self) -> Vec<u32> {
        let mut entries = self.entries;
        entries.sort_by(|a, b| a.0.total_cmp(&b.0));
        entries.pop().map(|e| e.1).unwrap_or_default()
    }
}

fn suppress_eos(logits: &Tensor, eos: u32, suppress: bool) -> Result<Tensor> {
    if !suppress {
        return Ok(logits.clone());
    }
    let mut values = logits.to_vec1::<f32>()?;
    if let Some(v) = values.get_mut(eos as usize) {
        *v = f32::NEG_INFINITY;
    }
    Ok(Tensor::new(values, logits.device())?)
}

fn argmax(logits: &Tensor) -> Result<u32> {
    Ok(logits.argmax(D::Minus1)?.to_scalar::<u32>()?)
}

/// L2 normalisation over the last dimension (no epsilon, as the release).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    Ok(x.broadcast_div(&norm)?)
}
