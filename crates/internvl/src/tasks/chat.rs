//! Multimodal chat with InternVL-Chat models (and text-only chat with a GGUF LLaMA-family LLM):
//! images → tiles → vision embeddings scattered into the prompt, then greedy or sampled decoding
//! with a KV cache, streaming, stop tokens / strings and optional log-probabilities, as the
//! release's `chat()` does.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, D};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::models::internvl_chat::ChatVision;
use crate::models::llm::generate::scatter_image_embeds;
use crate::models::llm::{KvCache, Llm};
use crate::models::ModelFolder;
use crate::processing::image::load_rgb;
use crate::processing::templates::{PromptBuilder, IMG_CONTEXT_TOKEN};
use crate::processing::tokenizer::Tokenizer;
use crate::processing::transforms::{dynamic_preprocess, resize_and_normalize};
use crate::{Error, Result};
use image::RgbImage;

/// How tokens are chosen and when generation stops.
#[derive(Debug, Clone)]
pub struct GenerationOptions {
    /// Most tokens to generate.
    pub max_new_tokens: usize,
    /// 0 = greedy; otherwise sampling at this temperature.
    pub temperature: f64,
    /// Nucleus sampling threshold (1 = off).
    pub top_p: f64,
    /// Keep the k most likely tokens when sampling (0 = off; transformers' default is 50).
    pub top_k: usize,
    /// transformers' repetition penalty (1 = off) over the tokens generated so far (and the
    /// BOS that `generate(inputs_embeds=…)` starts from).
    pub repetition_penalty: f64,
    /// Sampling seed.
    pub seed: u64,
    /// Record the log-softmax of the raw logits of every step with its `k` best entries.
    pub top_logprobs: Option<usize>,
    /// Extra stop strings (the template's stop token always stops).
    pub stop_strings: Vec<String>,
}

impl Default for GenerationOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 512,
            temperature: 0.0,
            top_p: 1.0,
            top_k: 50,
            repetition_penalty: 1.0,
            seed: 0,
            top_logprobs: None,
            stop_strings: Vec::new(),
        }
    }
}

/// Log-probabilities of one generated token.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenLogprob {
    /// The chosen token.
    pub token_id: u32,
    /// Its log-probability under the raw logits.
    pub logprob: f32,
    /// The `k` best (token id, log-probability), best first.
    pub top: Vec<(u32, f32)>,
}

/// The result of [`ChatModel::generate`].
#[derive(Debug, Clone)]
pub struct Generation {
    /// Generated ids, including the stop token when generation stopped on one.
    pub token_ids: Vec<u32>,
    /// The answer as `chat()` returns it (decoded without special tokens, cut at the stop token
    /// or stop string, stripped).
    pub text: String,
    /// Per-step log-probabilities when requested.
    pub logprobs: Option<Vec<TokenLogprob>>,
    /// True when generation ended on the stop token or a stop string; false when it ran into
    /// `max_new_tokens` or was cancelled.
    pub stopped: bool,
    /// Whether the `cancelled` callback of [`ChatModel::generate_cancellable`] ended it.
    pub cancelled: bool,
}

/// A generation in progress (see [`ChatModel::start`]): the sequence's KV cache, the logits of
/// its next token and what was generated so far.
pub struct GenerationState {
    prompt_len: usize,
    cache: KvCache,
    logits: Tensor,
    sampler: Sampler,
    options: GenerationOptions,
    generated: Vec<u32>,
    logprobs: Option<Vec<TokenLogprob>>,
    streamed: String,
    stop_text: Option<String>,
    stopped: bool,
    cancelled: bool,
    done: bool,
}

impl std::fmt::Debug for GenerationState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenerationState")
            .field("prompt_len", &self.prompt_len)
            .field("generated", &self.generated)
            .field("done", &self.done)
            .finish()
    }
}

impl GenerationState {
    /// Tokens generated so far.
    pub fn token_ids(&self) -> &[u32] {
        &self.generated
    }

    /// Log-probabilities recorded so far (when requested).
    pub fn logprobs(&self) -> Option<&[TokenLogprob]> {
        self.logprobs.as_deref()
    }

    /// Marks the generation as cut short by the caller (reported in [`Generation::cancelled`]).
    pub fn cancel(&mut self) {
        self.cancelled = true;
        self.done = true;
    }

    /// Whether it has ended.
    pub fn is_done(&self) -> bool {
        self.done
    }
}

/// Images prepared for one prompt.
#[derive(Debug, Clone)]
pub struct PreparedImages {
    /// `[tiles, 3, S, S]` for all images, in order.
    pub pixels: Tensor,
    /// Tiles per image.
    pub num_patches_list: Vec<usize>,
}

/// A loaded chat model.
pub struct ChatModel {
    vision: Option<ChatVision>,
    llm: Llm,
    tokenizer: Tokenizer,
    prompts: PromptBuilder,
    eos: u32,
    bos: Option<u32>,
    device: Device,
}

impl std::fmt::Debug for ChatModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatModel")
            .field("vision", &self.vision.is_some())
            .field("template", &self.prompts.template().name)
            .finish()
    }
}

impl ChatModel {
    /// Loads an InternVL-Chat release folder, or a GGUF LLaMA-family chat LLM (text only) when
    /// `path` is a `.gguf` file. `template` / `system` override the configured ones.
    pub fn open(
        path: &Path,
        template: Option<&str>,
        system: Option<&str>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        if path.is_file()
            && path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        {
            return Self::open_gguf(path, template, system, dtype, device);
        }
        let folder = ModelFolder::open(path)?;
        let vision = ChatVision::load(&folder, dtype, device)?;
        let llm = Llm::load_chat(&folder, dtype, device)?;
        let tokenizer = Tokenizer::from_folder(path)?;
        let mut config = folder.config().clone();
        if let Some(name) = template {
            config["template"] = serde_json::Value::String(name.to_string());
        }
        let prompts = match system {
            Some(system) => {
                let base = PromptBuilder::from_config(&config)?;
                PromptBuilder::new(base.template().name, Some(system), base.num_image_token())?
            }
            None => PromptBuilder::from_config(&config)?,
        };
        let eos = prompts.eos_token_id(&tokenizer)?;
        let bos = llm.config().bos_token_id;
        Ok(Self {
            vision: Some(vision),
            llm,
            tokenizer,
            prompts,
            eos,
            bos,
            device: device.clone(),
        })
    }

    fn open_gguf(
        path: &Path,
        template: Option<&str>,
        system: Option<&str>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let llm = Llm::load_gguf(path, dtype, device)?;
        let tokenizer = Tokenizer::from_gguf(path)?;
        let prompts = PromptBuilder::new(template.unwrap_or("chatml"), system, 0)?;
        let eos = prompts.eos_token_id(&tokenizer)?;
        let bos = llm.config().bos_token_id;
        Ok(Self {
            vision: None,
            llm,
            tokenizer,
            prompts,
            eos,
            bos,
            device: device.clone(),
        })
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The prompt settings.
    pub fn prompts(&self) -> &PromptBuilder {
        &self.prompts
    }

    /// The id generation stops on (the template separator).
    pub fn eos_token_id(&self) -> u32 {
        self.eos
    }

    /// Tiles every image as the release's `load_image` does (dynamic tiling from the config, or one
    /// tile; `max_tiles` overrides `max_dynamic_patch`).
    pub fn prepare_images(
        &self,
        paths: &[PathBuf],
        max_tiles: Option<u32>,
    ) -> Result<Option<PreparedImages>> {
        let images = paths
            .iter()
            .map(|p| load_rgb(p))
            .collect::<Result<Vec<_>>>()?;
        self.prepare_decoded_images(&images, max_tiles)
    }

    /// Like [`ChatModel::prepare_images`] for images already decoded (e.g. with
    /// [`crate::processing::image::decode_rgb`] from in-memory bytes).
    pub fn prepare_decoded_images(
        &self,
        images: &[RgbImage],
        max_tiles: Option<u32>,
    ) -> Result<Option<PreparedImages>> {
        if images.is_empty() {
            return Ok(None);
        }
        let vision = self.vision.as_ref().ok_or_else(|| {
            Error::InvalidArgument(
                "this model is text-only (GGUF LLM): it cannot take images".into(),
            )
        })?;
        let config = vision.config();
        let size = vision.image_size() as u32;
        let mut tiles = Vec::new();
        let mut num_patches_list = Vec::new();
        for image in images {
            let crops = if config.dynamic_image_size {
                let max = max_tiles.unwrap_or(config.max_dynamic_patch).max(1);
                dynamic_preprocess(
                    image,
                    config.min_dynamic_patch.min(max),
                    max,
                    size,
                    config.use_thumbnail,
                )
            } else {
                vec![image.clone()]
            };
            num_patches_list.push(crops.len());
            for crop in &crops {
                tiles.push(resize_and_normalize(crop, size, size)?);
            }
        }
        Ok(Some(PreparedImages {
            pixels: Tensor::stack(&tiles, 0)?.to_device(&self.device)?,
            num_patches_list,
        }))
    }

    /// The prompt ids of `question` after `history` (pairs of user / assistant turns) with the
    /// images' tile counts, as `chat()` builds them; also returns the question as it enters the
    /// history (with the automatic `<image>\n` prefix where it applies).
    pub fn prompt_ids(
        &self,
        question: &str,
        history: Option<&[(String, String)]>,
        num_patches_list: &[usize],
    ) -> Result<(String, Vec<u32>)> {
        let prompt = self.prompts.chat(question, history, num_patches_list)?;
        let ids = prompt.input_ids(&self.tokenizer)?;
        Ok((prompt.question, ids))
    }

    /// Generates the answer to `prompt_ids` (images, if any, replace the `<IMG_CONTEXT>` tokens),
    /// calling `on_text` with each newly decoded piece of text as it is produced.
    pub fn generate(
        &self,
        prompt_ids: &[u32],
        images: Option<&PreparedImages>,
        options: &GenerationOptions,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Generation> {
        self.generate_cancellable(prompt_ids, images, options, on_text, &|| false)
    }

    /// The model's context length (prompt plus generated tokens), in tokens.
    pub fn context_length(&self) -> usize {
        self.llm.config().max_position_embeddings
    }

    /// [`ChatModel::generate`] that checks `cancelled` before every decoding step and stops
    /// early (returning what was generated so far, `stopped` false) once it returns true.
    pub fn generate_cancellable(
        &self,
        prompt_ids: &[u32],
        images: Option<&PreparedImages>,
        options: &GenerationOptions,
        on_text: &mut dyn FnMut(&str),
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Generation> {
        let mut state = self.start(prompt_ids, images, options)?;
        loop {
            if cancelled() {
                state.cancelled = true;
                break;
            }
            match self.choose_next(&mut state, on_text)? {
                Some(token) => self.decode_step(&mut [&mut state], &[token])?,
                None => break,
            }
        }
        self.finish(state, on_text)
    }

    /// Runs the prompt (prefill) and returns the state from which tokens are chosen with
    /// [`ChatModel::choose_next`] and fed back with [`ChatModel::decode_step`]; several states
    /// share one decode step (continuous batching).
    pub fn start(
        &self,
        prompt_ids: &[u32],
        images: Option<&PreparedImages>,
        options: &GenerationOptions,
    ) -> Result<GenerationState> {
        self.check_context(prompt_ids.len(), options.max_new_tokens)?;
        if options.max_new_tokens == 0 {
            return Err(Error::InvalidArgument(
                "max_new_tokens must be at least 1".into(),
            ));
        }
        let mut cache = KvCache::new();
        let embeds = self.prompt_embeds(prompt_ids, images)?;
        let positions =
            Tensor::arange(0i64, prompt_ids.len() as i64, &self.device)?.unsqueeze(0)?;
        let logits = self
            .llm
            .forward_last(&embeds, &positions, None, &mut cache)?
            .squeeze(0)?;
        Ok(GenerationState {
            prompt_len: prompt_ids.len(),
            cache,
            logits,
            sampler: Sampler::new(options),
            options: options.clone(),
            generated: Vec::new(),
            logprobs: options.top_logprobs.map(|_| Vec::new()),
            streamed: String::new(),
            stop_text: None,
            stopped: false,
            cancelled: false,
            done: false,
        })
    }

    /// Chooses the next token from the state's logits, records it and streams the text it
    /// completes through `on_text`. Returns the token when generation goes on (feed it to
    /// [`ChatModel::decode_step`]), `None` once it has ended (stop token, stop string or
    /// `max_new_tokens`).
    pub fn choose_next(
        &self,
        state: &mut GenerationState,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Option<u32>> {
        if state.done {
            return Ok(None);
        }
        let history: Vec<u32> = self
            .bos
            .into_iter()
            .chain(state.generated.iter().copied())
            .collect();
        let token = state.sampler.next(&state.logits, &history)?;
        if let (Some(k), Some(list)) = (state.options.top_logprobs, state.logprobs.as_mut()) {
            list.push(token_logprob(&state.logits, token, k)?);
        }
        state.generated.push(token);
        state.done = true;
        if token == self.eos {
            state.stopped = true;
            return Ok(None);
        }
        let text = self.tokenizer.decode(&state.generated, true)?;
        let stops = &state.options.stop_strings;
        if let Some(stop) = stops
            .iter()
            .find(|s| !s.is_empty() && text.contains(s.as_str()))
        {
            state.stop_text = Some(text[..text.find(stop.as_str()).expect("found")].to_string());
            state.stopped = true;
            return Ok(None);
        }
        // Stream only complete characters (a byte-level token may end mid-character), and hold
        // back a tail that could be the start of a stop string.
        let safe = text.len() - held_back(&text, stops);
        if !text.ends_with('\u{fffd}')
            && safe > state.streamed.len()
            && text.starts_with(&state.streamed)
        {
            on_text(&text[state.streamed.len()..safe]);
            state.streamed = text[..safe].to_string();
        }
        if state.generated.len() == state.options.max_new_tokens {
            return Ok(None);
        }
        state.done = false;
        Ok(Some(token))
    }

    /// Feeds `tokens[r]` (from [`ChatModel::choose_next`]) to `states[r]`, all rows in one
    /// batched decoder step, and leaves each state's logits for its next choice.
    pub fn decode_step(&self, states: &mut [&mut GenerationState], tokens: &[u32]) -> Result<()> {
        if states.len() != tokens.len() {
            return Err(Error::InvalidArgument(format!(
                "{} generation states but {} tokens",
                states.len(),
                tokens.len()
            )));
        }
        if states.is_empty() {
            return Ok(());
        }
        let ids = Tensor::new(tokens, &self.device)?.unsqueeze(1)?;
        let embeds = self.llm.embed(&ids)?;
        let positions: Vec<i64> = states
            .iter()
            .map(|s| (s.prompt_len + s.generated.len() - 1) as i64)
            .collect();
        let mut caches: Vec<&mut KvCache> = states.iter_mut().map(|s| &mut s.cache).collect();
        let logits = self.llm.forward_many(&embeds, &positions, &mut caches)?;
        for (row, state) in states.iter_mut().enumerate() {
            state.logits = logits.get(row)?;
        }
        Ok(())
    }

    /// Ends a generation: flushes the text held back from streaming through `on_text` and
    /// returns the answer as `chat()` does.
    pub fn finish(
        &self,
        state: GenerationState,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Generation> {
        let full = match state.stop_text {
            Some(t) => t,
            None => self.tokenizer.decode(&state.generated, true)?,
        };
        // Flush what was held back (a partial character, or text before a stop string).
        if full.len() > state.streamed.len() && full.starts_with(&state.streamed) {
            on_text(&full[state.streamed.len()..]);
        }
        let text = self.prompts.template().response(&full);
        Ok(Generation {
            token_ids: state.generated,
            text,
            logprobs: state.logprobs,
            stopped: state.stopped,
            cancelled: state.cancelled,
        })
    }

    fn prompt_embeds(&self, prompt_ids: &[u32], images: Option<&PreparedImages>) -> Result<Tensor> {
        let ids = Tensor::new(prompt_ids, &self.device)?.unsqueeze(0)?;
        let embeds = self.llm.embed(&ids)?;
        let context_id = self.tokenizer.token_to_id(IMG_CONTEXT_TOKEN);
        let placeholders =
            context_id.map_or(0, |id| prompt_ids.iter().filter(|&&t| t == id).count());
        match (images, self.vision.as_ref(), context_id) {
            (Some(images), Some(vision), Some(id)) => {
                let features = vision.extract(&images.pixels)?;
                scatter_image_embeds(&embeds, &ids, id, &features.embeds)
            }
            (None, _, _) if placeholders == 0 => Ok(embeds),
            (None, _, _) => Err(Error::InvalidArgument(format!(
                "the prompt holds {placeholders} {IMG_CONTEXT_TOKEN} tokens but no image was given"
            ))),
            (Some(_), _, _) => Err(Error::InvalidArgument(
                "images were given but the model or tokenizer has no image tokens".into(),
            )),
        }
    }

    fn check_context(&self, prompt: usize, new: usize) -> Result<()> {
        let limit = self.llm.config().max_position_embeddings;
        if prompt + new > limit {
            return Err(Error::InvalidArgument(format!(
                "prompt of {prompt} tokens + {new} new tokens exceeds the model's context length of {limit} tokens"
            )));
        }
        Ok(())
    }
}

/// The frame indices the release's video chat example (`get_index` without bounds) samples:
/// `num_segments` segments over frames `0..=last`, index `int(seg/2 + round(seg·k))` with
/// `seg = last / num_segments` and round half to even (numpy).
pub fn video_frame_indices(total_frames: usize, num_segments: usize) -> Result<Vec<usize>> {
    if total_frames == 0 || num_segments == 0 {
        return Err(Error::InvalidArgument(format!(
            "cannot sample {num_segments} frames from a video of {total_frames} frames"
        )));
    }
    let seg = (total_frames - 1) as f64 / num_segments as f64;
    Ok((0..num_segments)
        .map(|k| {
            let rounded = round_half_even(seg * k as f64);
            ((seg / 2.0 + rounded) as usize).min(total_frames - 1)
        })
        .collect())
}

fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    }
}

/// The frames of a video given as a folder of images (sorted by name) or a text file listing
/// image paths (relative to the list's folder), sampled with [`video_frame_indices`].
pub fn video_frames(source: &Path, num_segments: usize) -> Result<Vec<PathBuf>> {
    let frames: Vec<PathBuf> = if source.is_dir() {
        crate::tasks::contrastive::sorted_entries(source)?
            .into_iter()
            .filter(|p| p.is_file())
            .collect()
    } else {
        let text = std::fs::read_to_string(source).map_err(|e| Error::Io {
            path: source.to_path_buf(),
            source: e,
        })?;
        let base = source.parent().unwrap_or(Path::new("."));
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| base.join(l))
            .collect()
    };
    Ok(video_frame_indices(frames.len(), num_segments)?
        .into_iter()
        .map(|i| frames[i].clone())
        .collect())
}

/// Length of the longest tail of `text` that is a proper prefix of a stop string.
fn held_back(text: &str, stops: &[String]) -> usize {
    stops
        .iter()
        .flat_map(|stop| {
            (1..stop.len()).filter(|&n| stop.is_char_boundary(n) && text.ends_with(&stop[..n]))
        })
        .max()
        .unwrap_or(0)
}

fn token_logprob(logits: &Tensor, token: u32, k: usize) -> Result<TokenLogprob> {
    let lp =
        candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?.to_vec1::<f32>()?;
    let mut order: Vec<usize> = (0..lp.len()).collect();
    order.sort_by(|&a, &b| lp[b].total_cmp(&lp[a]));
    Ok(TokenLogprob {
        token_id: token,
        logprob: lp[token as usize],
        top: order
            .into_iter()
            .take(k)
            .map(|i| (i as u32, lp[i]))
            .collect(),
    })
}

/// transformers' logits processing for `generate`: repetition penalty, then (when sampling)
/// temperature, top-k and top-p, then a draw; greedy takes the first maximum.
struct Sampler {
    temperature: f64,
    top_k: usize,
    top_p: f64,
    penalty: f64,
    rng: StdRng,
}

impl Sampler {
    fn new(options: &GenerationOptions) -> Self {
        Self {
            temperature: options.temperature,
            top_k: options.top_k,
            top_p: options.top_p,
            penalty: options.repetition_penalty,
            rng: StdRng::seed_from_u64(options.seed),
        }
    }

    fn next(&mut self, logits: &Tensor, history: &[u32]) -> Result<u32> {
        let mut scores = logits.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        if self.penalty != 1.0 {
            apply_repetition_penalty(&mut scores, history, self.penalty as f32);
        }
        if self.temperature <= 0.0 {
            return Ok(argmax(&scores));
        }
        for s in scores.iter_mut() {
            *s /= self.temperature as f32;
        }
        let probs = filtered_probabilities(&scores, self.top_k, self.top_p);
        let mut draw = self.rng.random::<f64>();
        for &(token, p) in &probs {
            draw -= p;
            if draw <= 0.0 {
                return Ok(token);
            }
        }
        Ok(probs.last().map_or(0, |p| p.0))
    }
}

fn argmax(scores: &[f32]) -> u32 {
    let mut best = 0;
    for (i, s) in scores.iter().enumerate() {
        if *s > scores[best] {
            best = i;
        }
    }
    best as u32
}

/// `score < 0 ? score · p : score / p` for every token already present.
fn apply_repetition_penalty(scores: &mut [f32], history: &[u32], penalty: f32) {
    let mut seen = std::collections::HashSet::new();
    for &t in history {
        if seen.insert(t) {
            if let Some(s) = scores.get_mut(t as usize) {
                *s = if *s < 0.0 { *s * penalty } else { *s / penalty };
            }
        }
    }
}

/// Softmax over the scores kept by top-k and top-p (transformers' warpers: top-k keeps ties with
/// the k-th value; top-p keeps the smallest set whose mass reaches p, at least one token),
/// renormalised, sorted by probability.
fn filtered_probabilities(scores: &[f32], top_k: usize, top_p: f64) -> Vec<(u32, f64)> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    if top_k > 0 && top_k < order.len() {
        let kth = scores[order[top_k - 1]];
        order.retain(|&i| scores[i] >= kth);
    }
    let max = scores[order[0]] as f64;
    let weights: Vec<f64> = order
        .iter()
        .map(|&i| (scores[i] as f64 - max).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut kept = Vec::new();
    let mut mass = 0.0;
    for (&i, w) in order.iter().zip(&weights) {
        kept.push((i as u32, w / total));
        mass += w / total;
        if top_p < 1.0 && mass >= top_p {
            break;
        }
    }
    let norm: f64 = kept.iter().map(|k| k.1).sum();
    kept.into_iter().map(|(t, p)| (t, p / norm)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_frames_follow_get_index() {
        // numpy: [int(seg/2 + np.round(seg*k)) for k in range(8)] with seg = 99/8.
        assert_eq!(
            video_frame_indices(100, 8).unwrap(),
            vec![6, 18, 31, 43, 56, 68, 80, 93]
        );
        assert_eq!(video_frame_indices(5, 2).unwrap(), vec![1, 3]);
        assert!(video_frame_indices(0, 8).is_err());
    }

    #[test]
    fn stop_string_prefixes_are_held_back() {
        let stops = vec!["###".to_string()];
        assert_eq!(held_back("answer ##", &stops), 2);
        assert_eq!(held_back("answer", &stops), 0);
    }

    #[test]
    fn repetition_penalty_follows_transformers() {
        let mut scores = vec![2.0, -2.0, 1.0];
        apply_repetition_penalty(&mut scores, &[0, 1, 1], 2.0);
        assert_eq!(scores, vec![1.0, -4.0, 1.0]);
    }

    #[test]
    fn top_k_and_top_p_filter() {
        let scores = [3.0f32, 2.0, 1.0, 0.0];
        let k2 = filtered_probabilities(&scores, 2, 1.0);
        assert_eq!(k2.iter().map(|p| p.0).collect::<Vec<_>>(), vec![0, 1]);
        assert!((k2.iter().map(|p| p.1).sum::<f64>() - 1.0).abs() < 1e-12);
        let p = filtered_probabilities(&scores, 0, 0.5);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0], (0, 1.0));
    }

    #[test]
    fn sampling_is_reproducible_with_a_seed() {
        let logits = Tensor::new(&[0.1f32, 0.3, 0.2, 0.25], &Device::Cpu).unwrap();
        let options = GenerationOptions {
            temperature: 1.0,
            seed: 7,
            ..Default::default()
        };
        let draw = |o: &GenerationOptions| {
            let mut s = Sampler::new(o);
            (0..20)
                .map(|_| s.next(&logits, &[]).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(&options), draw(&options));
        let other = GenerationOptions {
            seed: 8,
            ..options.clone()
        };
        assert_ne!(draw(&options), draw(&other));
    }
}
